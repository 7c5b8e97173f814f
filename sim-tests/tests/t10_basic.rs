//! t10: a node under simulation takes writes over gRPC, answers queries, and keeps every
//! acknowledged point across a crash that loses unsynced writes.
#![cfg(madsim)]

use std::time::Duration;

use hotlake_proto::v1 as pb;
use hotlake_proto::v1::hotlake_client::HotlakeClient;
use hotlake_sim_tests::harness::{SimNode, NODE_ADDR};
use hotlake_storage::MemEngine;

fn batch(first: i64, n: i64) -> pb::WriteRequest {
    let series = (0..4)
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

async fn connect() -> HotlakeClient<tonic::transport::Channel> {
    loop {
        match HotlakeClient::connect(format!("http://{NODE_ADDR}")).await {
            Ok(c) => return c,
            Err(_) => madsim::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn count_points(client: &mut HotlakeClient<tonic::transport::Channel>) -> Vec<(String, Vec<i64>)> {
    let resp = client
        .query(pb::QueryRequest {
            tenant: "sim".into(),
            measurement: "m".into(),
            fields: vec!["v".into()],
            start_ns: 0,
            end_ns: 1_000_000_000_000_000,
            ..Default::default()
        })
        .await
        .expect("query succeeds")
        .into_inner();
    resp.groups
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
        .collect()
}

#[madsim::test]
async fn t10_acknowledged_writes_survive_a_crash() {
    println!("seed {}", madsim::runtime::Handle::current().seed());
    let engine = MemEngine::new();
    let node = SimNode::start(engine.clone());
    let handle = madsim::runtime::Handle::current();
    let client_host = handle.create_node().name("client").ip("10.0.1.1".parse().unwrap()).build();
    let acked = client_host
        .spawn(async move {
            let mut c = connect().await;
            let mut acked = 0i64;
            for i in 0..30 {
                c.write(batch(i * 20, 20)).await.expect("write acknowledged");
                acked = (i + 1) * 20;
            }
            acked
        })
        .await
        .unwrap();
    // Power loss: every unsynced write is lost, then the node comes back on the same "disk".
    handle.kill(node.host.id());
    let lost = engine.crash();
    println!("crash dropped {lost} unsynced batches");
    handle.restart(node.host.id());
    let result = client_host
        .spawn(async move {
            let mut c = connect().await;
            loop {
                match c.health(pb::HealthRequest {}).await {
                    Ok(h) if h.get_ref().shards_with_leader == h.get_ref().shards => break,
                    _ => madsim::time::sleep(Duration::from_millis(100)).await,
                }
            }
            count_points(&mut c).await
        })
        .await
        .unwrap();
    assert_eq!(result.len(), 4);
    for (device, values) in result {
        let d: i64 = device.trim_start_matches('d').parse().unwrap();
        let expected: Vec<i64> = (0..acked).map(|t| t * 10 + d).collect();
        assert_eq!(values, expected, "device {device}");
    }
}
