//! t90: regressions for known Raft pitfalls.
//! - restart after purge: every node restarts after flushes purged the logs; the cluster comes
//!   back from flushed state plus the log tail, with every acknowledged point and identical
//!   replicas.
#![cfg(madsim)]

use std::time::Duration;

use hotlake_sim_tests::checkers::{self, durability, model};
use hotlake_sim_tests::harness::SimCluster;
use hotlake_sim_tests::observe;
use hotlake_sim_tests::workload::{write, History, Outcome};

#[madsim::test]
async fn t90_restart_after_purge_keeps_everything() {
    println!("seed {}", madsim::runtime::Handle::current().seed());
    let cluster = SimCluster::start(3);
    let addrs = cluster.addrs();
    let handle = madsim::runtime::Handle::current();
    let client = handle.create_node().name("client").ip("10.0.1.1".parse().unwrap()).build();
    let a = addrs.clone();
    let history = client
        .spawn(async move {
            observe::wait_converged(&observe::peers(), &a, 3, Duration::from_secs(60)).await;
            let mut h = History::default();
            // Enough batches that 16 KiB memtables flush several times and purge their logs.
            for b in 0..300u64 {
                let outcome = write(&a[(b % 3) as usize], b).await;
                h.writes.insert(b, outcome);
            }
            h
        })
        .await
        .unwrap();
    let acked = history.writes.values().filter(|o| **o == Outcome::Acked).count();
    assert!(acked > 250, "only {acked} of 300 writes were acknowledged without faults");
    let a = addrs.clone();
    let purged = client
        .spawn(async move {
            let peers = observe::peers();
            let mut purged = 0;
            for addr in &a {
                if let Some(s) = observe::status(&peers, addr).await {
                    purged += s.replicas.iter().filter(|r| r.flushed > 0).count();
                }
            }
            purged
        })
        .await
        .unwrap();
    assert!(purged >= 6, "only {purged} replicas flushed (and purged their log); the test needs more writes");
    for id in 1..=3 {
        cluster.kill(id);
    }
    madsim::time::sleep(Duration::from_secs(1)).await;
    for id in 1..=3 {
        cluster.restart(id);
    }
    let a = addrs.clone();
    client
        .spawn(async move {
            observe::wait_converged(&observe::peers(), &a, 3, Duration::from_secs(60)).await;
            observe::assert_replicas_identical(&observe::peers(), &a, Duration::from_secs(60)).await;
            let state = checkers::read_final(&a[1]).await.expect("final read");
            durability::check(&history, &state).unwrap_or_else(|e| panic!("durability: {e}"));
            model::check(&history, &state).unwrap_or_else(|e| panic!("model: {e}"));
        })
        .await
        .unwrap();
}
