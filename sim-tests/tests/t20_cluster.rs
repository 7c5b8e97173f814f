//! t20: a simulated 3-node cluster forms (bootstrap + two joins), takes writes through every
//! node while the node leading the most shards crashes (losing unsynced writes) and comes back,
//! and ends with every acknowledged point readable and all replicas identical.
#![cfg(madsim)]

use std::time::Duration;

use hotlake_proto::v1 as pb;
use hotlake_proto::v1::hotlake_client::HotlakeClient;
use hotlake_sim_tests::harness::SimCluster;
use hotlake_sim_tests::observe;

const DEVICES: i64 = 8;

fn batch(first: i64, n: i64) -> pb::WriteRequest {
    let series = (0..DEVICES)
        .map(|d| pb::SeriesPoints {
            measurement: "m".into(),
            tags: vec![pb::Tag { key: "device_id".into(), value: format!("d{d}") }],
            timestamps_ns: (first..first + n).map(|t| t * 1_000_000_000).collect(),
            fields: vec![pb::FieldColumn {
                name: "v".into(),
                values: Some(pb::field_column::Values::I64(pb::Int64Values {
                    values: (first..first + n).map(|t| t * 10 + d).collect(),
                })),
                absent_rows: vec![],
            }],
        })
        .collect();
    pb::WriteRequest { tenant: "sim".into(), series, ..Default::default() }
}

async fn client(addr: &str) -> Option<HotlakeClient<tonic::transport::Channel>> {
    HotlakeClient::connect(format!("http://{addr}")).await.ok()
}

/// Device → values of every stored point, read through `addr`.
async fn read_all(addr: &str) -> Result<Vec<(String, Vec<i64>)>, String> {
    let mut c = client(addr).await.ok_or("connect")?;
    let resp = c
        .query(pb::QueryRequest {
            tenant: "sim".into(),
            measurement: "m".into(),
            fields: vec!["v".into()],
            start_ns: 0,
            end_ns: 1_000_000_000_000_000,
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    Ok(resp
        .groups
        .into_iter()
        .map(|g| {
            let values = g
                .rows
                .iter()
                .map(|r| match r.values[0].kind {
                    Some(pb::value::Kind::I64(v)) => v,
                    ref other => panic!("unexpected value {other:?}"),
                })
                .collect();
            (g.tags[0].value.clone(), values)
        })
        .collect())
}

#[madsim::test]
async fn t20_cluster_keeps_acknowledged_writes_through_a_leader_crash() {
    println!("seed {}", madsim::runtime::Handle::current().seed());
    let cluster = SimCluster::start(3);
    let addrs = cluster.addrs();
    let handle = madsim::runtime::Handle::current();
    let client_host = handle.create_node().name("client").ip("10.0.1.1".parse().unwrap()).build();
    let a = addrs.clone();
    client_host
        .spawn(async move {
            let peers = observe::peers();
            observe::wait_converged(&peers, &a, 3, Duration::from_secs(60)).await;
        })
        .await
        .unwrap();
    // Writers: batch i holds timestamps [i*10, i*10+10) for every device, sent to node i % 3.
    let a = addrs.clone();
    let writer = client_host.spawn(async move {
        let mut acked: Vec<i64> = Vec::new();
        for i in 0..120i64 {
            let addr = &a[(i % 3) as usize];
            if let Some(mut c) = client(addr).await {
                if c.write(batch(i * 10, 10)).await.is_ok() {
                    acked.push(i);
                }
            }
            madsim::time::sleep(Duration::from_millis(50)).await;
        }
        acked
    });
    madsim::time::sleep(Duration::from_secs(2)).await;
    let a = addrs.clone();
    let victim = client_host
        .spawn(async move {
            let peers = observe::peers();
            let mut best = (0, 1u64);
            for (i, addr) in a.iter().enumerate() {
                if let Some(s) = observe::status(&peers, addr).await {
                    let leads = s.replicas.iter().filter(|r| r.role == "leader").count();
                    if leads > best.0 {
                        best = (leads, i as u64 + 1);
                    }
                }
            }
            best.1
        })
        .await
        .unwrap();
    let lost = cluster.power_loss(victim);
    println!("node {victim} lost power ({lost} unsynced batches dropped)");
    madsim::time::sleep(Duration::from_secs(3)).await;
    cluster.restart(victim);
    let acked = writer.await.unwrap();
    println!("{} of 120 batches acknowledged", acked.len());
    assert!(acked.len() > 60, "too few writes succeeded: {}", acked.len());
    let a = addrs.clone();
    client_host
        .spawn(async move {
            let peers = observe::peers();
            observe::wait_converged(&peers, &a, 3, Duration::from_secs(60)).await;
            observe::assert_replicas_identical(&peers, &a, Duration::from_secs(60)).await;
            for addr in &a {
                let stored = read_all(addr).await.expect("query succeeds");
                for (device, values) in stored {
                    let d: i64 = device.trim_start_matches('d').parse().unwrap();
                    let present: std::collections::BTreeSet<i64> = values.iter().map(|v| (v - d) / 10).collect();
                    for &i in &acked {
                        for t in i * 10..i * 10 + 10 {
                            assert!(present.contains(&t), "acknowledged point {device}@{t} missing via {addr}");
                        }
                    }
                    for v in values {
                        assert_eq!((v - d) % 10, 0, "a value that was never written: {v}");
                    }
                }
            }
        })
        .await
        .unwrap();
}
