//! t50: swarm testing. Each seed draws a fault plan (crashes, power loss, pauses, partitions,
//! one-way and two-way link cuts, deposed leaders, membership changes, packet loss, latency),
//! runs writers, readers (range, last and aggregate reads), a subscriber and a consumer group of
//! two members against a cluster of 3 nodes
//! (up to 5 as nodes are added) while the faults happen, heals, and runs every checker. A failure prints the seed, the plan
//! and the fault log; `MADSIM_TEST_SEED=<seed>` replays it exactly.
#![cfg(madsim)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hotlake_sim_tests::checkers::{self, convergence, delivery, durability, liveness, model, read_after_ack};
use hotlake_sim_tests::faults::{self, FaultPlan};
use hotlake_sim_tests::harness::SimCluster;
use hotlake_sim_tests::observe;
use hotlake_sim_tests::subscriber::Subscriber;
use hotlake_sim_tests::workload::{aggregates_of, History, Outcome, Targets, Workload, DEVICES};

/// Simulated seconds of faults per seed.
const FAULT_SECONDS: u64 = 20;

#[madsim::test]
async fn t50_swarm_keeps_every_checker_green() {
    hotlake_sim_tests::harness::init_logging();
    let seed = madsim::runtime::Handle::current().seed();
    let plan = FaultPlan::swarm();
    println!("seed {seed}: {plan:?}");
    let mut cluster = SimCluster::start(3);
    let addrs = cluster.addrs();
    let handle = madsim::runtime::Handle::current();
    let client = handle.create_node().name("client").ip("10.0.1.1".parse().unwrap()).build();
    let a = addrs.clone();
    client
        .spawn(async move { observe::wait_converged(&observe::peers(), &a, 3, Duration::from_secs(60)).await })
        .await
        .unwrap();
    let workload = Arc::new(Workload::new());
    let targets: Targets = Arc::new(Mutex::new(addrs));
    // The subscriber and the group's members start before the first write, so every write is
    // after their start.
    let subscriber = Arc::new(Subscriber::new());
    let (s, t) = (subscriber.clone(), targets.clone());
    let subscribing = client.spawn(async move { s.run(t).await });
    let members = [Arc::new(Subscriber::member("swarm")), Arc::new(Subscriber::member("swarm"))];
    let mut reading = Vec::new();
    for m in &members {
        let (m, t) = (m.clone(), targets.clone());
        reading.push(client.spawn(async move { m.run(t).await }));
    }
    while !subscriber.seen.lock().unwrap().started || !members.iter().all(|m| m.seen.lock().unwrap().started) {
        madsim::time::sleep(Duration::from_millis(50)).await;
    }
    let (w, t) = (workload.clone(), targets.clone());
    let running = client.spawn(async move { w.run(t, 3, 2).await });
    faults::run(&mut cluster, &plan, Duration::from_secs(FAULT_SECONDS), &targets).await;
    workload.stop();
    running.await.unwrap();
    let history = workload.history.clone();
    let every_node = cluster.addrs();
    let sub = subscriber.clone();
    let group = members.clone();
    client
        .spawn(async move {
            // Drains and moves finish and the cluster settles before anything is compared.
            let peers = observe::peers();
            observe::wait_converged(&peers, &every_node, 3, Duration::from_secs(60)).await;
            let a = observe::members(&peers, &every_node).await;
            let probe = 1_000_000;
            if let Err(e) = liveness::check(&a, probe, Duration::from_secs(60)).await {
                panic!("liveness: {e}");
            }
            {
                let mut h = history.lock().unwrap();
                for i in 0..a.len() as u64 {
                    h.writes.insert(probe + i, Outcome::Acked);
                }
                let acked = h.acked().len();
                let unknown = h.writes.values().filter(|o| **o == Outcome::Unknown).count();
                println!(
                    "{} batches: {acked} acknowledged, {unknown} unknown; {} range, {} last and {} aggregate reads, {} reads failed; members {a:?}",
                    h.writes.len(),
                    h.range_reads.len(),
                    h.last_reads.len(),
                    h.aggregate_reads.len(),
                    h.reads_failed
                );
            }
            convergence::check(&a, 3, Duration::from_secs(60)).await;
            let state = checkers::read_final(&a[0]).await.expect("final read");
            {
                let h = history.lock().unwrap();
                durability::check(&h, &state).unwrap_or_else(|e| panic!("durability: {e}"));
                model::check(&h, &state).unwrap_or_else(|e| panic!("model: {e}"));
                model::check_aggregate_reads(&h).unwrap_or_else(|e| panic!("model: {e}"));
                read_after_ack::check(&h).unwrap_or_else(|e| panic!("read-after-ack: {e}"));
            }
            for d in 0..DEVICES {
                let answer = aggregates_of(&a[(d as usize) % a.len()], d).await.expect("aggregate query");
                model::check_aggregate(d, &state[&d], answer).unwrap_or_else(|e| panic!("model: {e}"));
            }
            check_subscriptions(&history, &sub, &group).await;
        })
        .await
        .unwrap();
    subscribing.await.unwrap();
    for r in reading {
        r.await.unwrap();
    }
}

/// Waits until the subscriber and the group's members have been given every acknowledged
/// batch (or a minute has passed), stops them, and checks what each was given.
async fn check_subscriptions(history: &Mutex<History>, sub: &Subscriber, group: &[Arc<Subscriber>]) {
    let deadline = madsim::time::Instant::now() + Duration::from_secs(60);
    let group_caught_up = || {
        let seen: Vec<_> = group.iter().map(|m| m.seen.lock().unwrap()).collect();
        let union = delivery::union_of(&seen.iter().map(|s| &**s).collect::<Vec<_>>());
        delivery::caught_up(&history.lock().unwrap(), &union)
    };
    while !(delivery::caught_up(&history.lock().unwrap(), &sub.seen.lock().unwrap()) && group_caught_up())
        && madsim::time::Instant::now() < deadline
    {
        madsim::time::sleep(Duration::from_millis(200)).await;
    }
    sub.stop();
    for m in group {
        m.stop();
    }
    let h = history.lock().unwrap();
    let seen = sub.seen.lock().unwrap();
    println!("subscriber: {} points in {} streams", seen.points.len(), seen.streams);
    delivery::check(&h, &seen).unwrap_or_else(|e| panic!("delivery: {e}"));
    let given: Vec<_> = group.iter().map(|m| m.seen.lock().unwrap()).collect();
    let given: Vec<&_> = given.iter().map(|g| &**g).collect();
    println!(
        "group: {} and {} points in {} and {} streams",
        given[0].points.len(),
        given[1].points.len(),
        given[0].streams,
        given[1].streams
    );
    delivery::check_group(&h, &given).unwrap_or_else(|e| panic!("group delivery: {e}"));
}
