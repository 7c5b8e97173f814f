//! t50: swarm testing. Each seed draws a fault plan (crashes, power loss, pauses, partitions,
//! one-way links, packet loss, latency), runs writers and readers against a 3-node cluster
//! while the faults happen, heals, and runs every checker. A failure prints the seed, the plan
//! and the fault log; `MADSIM_TEST_SEED=<seed>` replays it exactly.
#![cfg(madsim)]

use std::sync::Arc;
use std::time::Duration;

use hotlake_proto::v1 as pb;
use hotlake_proto::v1::hotlake_client::HotlakeClient;
use hotlake_sim_tests::checkers::{self, convergence, durability, liveness, model, read_after_ack};
use hotlake_sim_tests::faults::{self, FaultPlan};
use hotlake_sim_tests::harness::SimCluster;
use hotlake_sim_tests::observe;
use hotlake_sim_tests::workload::{device_query, Outcome, Workload, DEVICES};

/// Simulated seconds of faults per seed.
const FAULT_SECONDS: u64 = 20;

fn number(v: &pb::Value) -> f64 {
    match v.kind {
        Some(pb::value::Kind::F64(x)) => x,
        Some(pb::value::Kind::I64(x)) => x as f64,
        Some(pb::value::Kind::U64(x)) => x as f64,
        ref other => panic!("not a number: {other:?}"),
    }
}

/// count, sum, min and max of device `d`'s field through `addr`.
async fn aggregates(addr: &str, d: i64) -> (u64, f64, f64, f64) {
    let mut c = HotlakeClient::connect(format!("http://{addr}")).await.expect("connect");
    let req = pb::QueryRequest {
        aggregates: vec![
            pb::Aggregate::Count as i32,
            pb::Aggregate::Sum as i32,
            pb::Aggregate::Min as i32,
            pb::Aggregate::Max as i32,
        ],
        ..device_query(d)
    };
    let resp = c.query(req).await.expect("aggregate query").into_inner();
    let Some(row) = resp.groups.first().and_then(|g| g.rows.first()) else { return (0, 0.0, f64::NAN, f64::NAN) };
    let v: Vec<f64> = row.values.iter().map(number).collect();
    (v[0] as u64, v[1], v[2], v[3])
}

#[madsim::test]
async fn t50_swarm_keeps_every_checker_green() {
    let seed = madsim::runtime::Handle::current().seed();
    let plan = FaultPlan::swarm();
    println!("seed {seed}: {plan:?}");
    let cluster = SimCluster::start(3);
    let addrs = cluster.addrs();
    let handle = madsim::runtime::Handle::current();
    let client = handle.create_node().name("client").ip("10.0.1.1".parse().unwrap()).build();
    let a = addrs.clone();
    client
        .spawn(async move { observe::wait_converged(&observe::peers(), &a, 3, Duration::from_secs(60)).await })
        .await
        .unwrap();
    let workload = Arc::new(Workload::new());
    let (w, a) = (workload.clone(), addrs.clone());
    let running = client.spawn(async move { w.run(a, 3, 2).await });
    faults::run(&cluster, &plan, Duration::from_secs(FAULT_SECONDS)).await;
    workload.stop();
    running.await.unwrap();
    let history = workload.history.clone();
    let a = addrs.clone();
    client
        .spawn(async move {
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
                    "{} batches: {acked} acknowledged, {unknown} unknown; {} range reads, {} last reads, {} reads failed",
                    h.writes.len(),
                    h.range_reads.len(),
                    h.last_reads.len(),
                    h.reads_failed
                );
            }
            convergence::check(&a, 3, Duration::from_secs(60)).await;
            let state = checkers::read_final(&a[0]).await.expect("final read");
            {
                let h = history.lock().unwrap();
                durability::check(&h, &state).unwrap_or_else(|e| panic!("durability: {e}"));
                model::check(&h, &state).unwrap_or_else(|e| panic!("model: {e}"));
                read_after_ack::check(&h).unwrap_or_else(|e| panic!("read-after-ack: {e}"));
            }
            for d in 0..DEVICES {
                let (count, sum, min, max) = aggregates(&a[(d as usize) % a.len()], d).await;
                model::check_aggregate(d, &state[&d], count, sum, min, max).unwrap_or_else(|e| panic!("model: {e}"));
            }
        })
        .await
        .unwrap();
}
