//! t30: a burst of large writes over slow links, all sent to one node, then quiet. This is the
//! shape that once put a 3-node cluster into a replication livelock (appends that never
//! completed within their timeout and were sent again whole, leaders that churned). Entries are
//! a sizeable part of the append bound here, memtables flush and logs purge all the time, so
//! lagging followers need snapshots in small chunks over the slow links, which stay slow
//! throughout. The simulator models latency, not bandwidth or CPU time: this checks that the
//! cluster settles by itself after a burst over links slower than the heartbeat interval, not
//! how much load a node takes.
//!
//! The liveness checker: after the burst the cluster converges by itself (every shard with its
//! voters and a leader), its leaders then stay put, and a small write through every node is
//! acknowledged promptly. The checked workload running alongside keeps every acknowledged
//! point and nothing else.
#![cfg(madsim)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hotlake_proto::v1 as pb;
use hotlake_proto::v1::hotlake_client::HotlakeClient;
use hotlake_sim_tests::checkers::{self, durability, model};
use hotlake_sim_tests::harness::SimCluster;
use hotlake_sim_tests::observe;
use hotlake_sim_tests::workload::{write, Outcome, Workload};
use madsim::net::NetSim;

const BURST: Duration = Duration::from_secs(10);
const BURST_WRITERS: u64 = 4;
const RECOVER: Duration = Duration::from_secs(60);
const STABLE: Duration = Duration::from_secs(10);
const PROMPT: Duration = Duration::from_secs(5);

/// One large batch of the burst: 20 devices × 100 points × a float and an integer field.
fn large_batch(writer: u64, n: u64) -> pb::WriteRequest {
    let first = (n * 100) as i64;
    let series = (0..20)
        .map(|d| pb::SeriesPoints {
            measurement: "burst".into(),
            tags: vec![pb::Tag { key: "device_id".into(), value: format!("w{writer}-d{d}") }],
            timestamps_ns: (first..first + 100).map(|t| t * 1_000_000).collect(),
            fields: vec![
                pb::FieldColumn {
                    name: "f".into(),
                    values: Some(pb::field_column::Values::F64(pb::DoubleValues {
                        values: (first..first + 100).map(|t| t as f64 * 0.5).collect(),
                    })),
                    absent_rows: vec![],
                },
                pb::FieldColumn {
                    name: "i".into(),
                    values: Some(pb::field_column::Values::I64(pb::Int64Values {
                        values: (first..first + 100).map(|t| t * 3 + d).collect(),
                    })),
                    absent_rows: vec![],
                },
            ],
        })
        .collect();
    pb::WriteRequest { tenant: "burst".into(), series, ..Default::default() }
}

/// Writes large batches to `addr` as fast as they are answered until `stop`; counts the
/// acknowledged ones.
async fn burst_writer(addr: String, writer: u64, stop: Arc<AtomicBool>, acked: Arc<AtomicU64>) {
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut c) = HotlakeClient::connect(format!("http://{addr}")).await else {
            madsim::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            match madsim::time::timeout(Duration::from_secs(20), c.write(large_batch(writer, n))).await {
                Ok(Ok(_)) => {
                    acked.fetch_add(1, Ordering::Relaxed);
                }
                // Refused (overloaded) or failed: back off a little, as a client would.
                _ => madsim::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
}

/// Every shard's leader, by asking every node.
async fn leaders(addrs: &[String]) -> Vec<(u32, u64)> {
    let peers = observe::peers();
    let mut out = Vec::new();
    for addr in addrs {
        if let Some(s) = observe::status(&peers, addr).await {
            out.extend(s.replicas.iter().filter(|r| r.role == "leader").map(|r| (r.shard.0, s.node)));
        }
    }
    out.sort_unstable();
    out
}

#[madsim::test]
async fn t30_a_burst_of_large_writes_over_slow_links_is_survived() {
    hotlake_sim_tests::harness::init_logging();
    println!("seed {}", madsim::runtime::Handle::current().seed());
    // Appends bounded near the size of one entry and snapshots sent in small chunks, so the
    // burst exercises both bounds.
    let cluster = SimCluster::start_with(
        3,
        Arc::new(|c| {
            c.cluster.raft_append_bytes_max = 64 << 10;
            c.cluster.snapshot_chunk_bytes_max = 16 << 10;
        }),
    );
    let addrs = cluster.addrs();
    let handle = madsim::runtime::Handle::current();
    let client = handle.create_node().name("client").ip("10.0.1.1".parse().unwrap()).build();
    let a = addrs.clone();
    client.spawn(async move { observe::wait_converged(&observe::peers(), &a, 3, RECOVER).await }).await.unwrap();

    // The checked workload writes and reads through every node for the whole run.
    let workload = Arc::new(Workload::new());
    let w = workload.clone();
    let targets = Arc::new(Mutex::new(addrs.clone()));
    let checked = client.spawn(async move { w.run(targets, 2, 1).await });

    // The burst, all to node 1, over links of 20 to 250 ms: one-way delays past the heartbeat
    // interval (200 ms), which appends (and the heartbeats that confirm a leader for a read)
    // were once given to complete. The links stay that slow for the recovery too.
    NetSim::current().update_config(|c| c.send_latency = Duration::from_millis(20)..Duration::from_millis(250));
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let burst: Vec<_> = (0..BURST_WRITERS)
        .map(|writer| client.spawn(burst_writer(addrs[0].clone(), writer, stop.clone(), acked.clone())))
        .collect();
    madsim::time::sleep(BURST).await;
    stop.store(true, Ordering::Relaxed);
    for b in burst {
        b.await.unwrap();
    }
    let burst_acked = acked.load(Ordering::Relaxed);
    println!("burst: {burst_acked} large batches acknowledged");
    assert!(burst_acked > 0, "the burst got nothing acknowledged");

    // Liveness: converged, leaders that stay, prompt writes through every node.
    workload.stop();
    checked.await.unwrap();
    let mut history = std::mem::take(&mut *workload.history.lock().unwrap());
    let a = addrs.clone();
    let probes = client
        .spawn(async move {
            let peers = observe::peers();
            observe::wait_converged(&peers, &a, 3, RECOVER).await;
            let before = leaders(&a).await;
            madsim::time::sleep(STABLE).await;
            assert_eq!(leaders(&a).await, before, "leaders changed in a quiet cluster after the burst");
            let mut probes = Vec::new();
            for (i, addr) in a.iter().enumerate() {
                // Batches of the checked workload's key space, far past what it wrote.
                let b = 1_000_000 + i as u64;
                let outcome = madsim::time::timeout(PROMPT, write(addr, b)).await.unwrap_or(Outcome::Unknown);
                probes.push((b, outcome));
                assert_eq!(outcome, Outcome::Acked, "a write through {addr} was not acknowledged promptly");
            }
            probes
        })
        .await
        .unwrap();
    history.writes.extend(probes);
    let first = addrs[0].clone();
    client
        .spawn(async move {
            let state = checkers::read_final(&first).await.expect("final read");
            durability::check(&history, &state).unwrap_or_else(|e| panic!("durability: {e}"));
            model::check(&history, &state).unwrap_or_else(|e| panic!("model: {e}"));
        })
        .await
        .unwrap();
}
