//! The gRPC API end to end through `hotlake-client`: unary and streaming writes, queries,
//! `Last`, health, the cluster map, and clear `InvalidArgument` errors that
//! change nothing.

use hotlake_client::proto as pb;
use hotlake_client::{ClientError, LastBuilder, SeriesBuilder, Value};

use crate::support::NodeProcess;

const T0: i64 = 1_451_606_400_000_000_000;

fn series(device: &str, first: i64, n: i64) -> pb::SeriesPoints {
    let mut s = SeriesBuilder::new("meter").tag("device_id", device).tag("site", "north");
    for i in first..first + n {
        s.push_f64(T0 + i * 1_000_000_000, "kw", i as f64);
    }
    s.build()
}

fn query(device: &str) -> pb::QueryRequest {
    pb::QueryRequest {
        tenant: "grid".into(),
        measurement: "meter".into(),
        fields: vec!["kw".into()],
        predicates: vec![pb::TagPredicate {
            key: "device_id".into(),
            op: pb::tag_predicate::Op::Eq as i32,
            values: vec![device.into()],
        }],
        start_ns: T0,
        end_ns: T0 + 3_600_000_000_000,
        ..Default::default()
    }
}

#[test]
fn grpc_writes_queries_and_rejects_bad_batches() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path(), &["--shard-count", "4"]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let c = crate::support::connect([node.grpc.as_str()]).await;
        let health = c.health().await;
        let h = health.values().next().unwrap().as_ref().unwrap();
        assert_eq!(h.shards, 4);
        assert_eq!(h.shards_with_leader, 4);
        let view = c.cluster_view();
        assert_eq!((view.shards.len(), view.nodes.len()), (4, 1));
        assert!(view.shards.iter().all(|s| s.leader == Some(1)), "{view:?}");

        // Unary write, routed by the client.
        let r = c.write("grid", vec![series("m1", 0, 10), series("m2", 0, 5)]).await.unwrap();
        assert_eq!((r.points_written, r.attempts), (15, 1));

        // Client-streaming write: acknowledged as a whole at the end.
        let batches = (0..3).map(|k| pb::WriteRequest {
            tenant: "grid".into(),
            series: vec![series("m1", 10 + k * 10, 10)],
            ..Default::default()
        });
        let r = c.write_stream(futures_stream(batches.collect())).await.unwrap();
        assert_eq!(r.points_written, 30);

        let resp = c.query(query("m1")).await.unwrap();
        assert_eq!(resp.groups.len(), 1);
        let kw: Vec<f64> = resp.groups[0].column("kw").unwrap().map(|v| v.as_f64().unwrap()).collect();
        assert_eq!(kw, (0..40).map(|i| i as f64).collect::<Vec<_>>());

        let last = c.last(LastBuilder::new("meter").tenant("grid")).await.unwrap();
        assert_eq!(last.len(), 2);
        assert_eq!(last[0].device, "m1");
        assert_eq!(last[0].values[0].1, T0 + 39 * 1_000_000_000);
        assert_eq!(last[0].values[0].2, Value::F64(39.0));

        // A bad batch (values and timestamps disagree) is rejected whole with details.
        let mut bad = series("m3", 0, 3);
        bad.timestamps_ns.push(T0 + 99);
        let err = c.write("grid", vec![series("m4", 0, 2), bad]).await.unwrap_err();
        match err {
            ClientError::Rejected { kind, message } => {
                assert_eq!(kind, "invalid_argument");
                assert!(message.contains("3 values + 0 absent rows != 4 timestamps"), "{message}");
            }
            other => panic!("expected a rejection, got {other:?}"),
        }
        let resp = c.query(query("m4")).await.unwrap();
        assert!(resp.groups.is_empty(), "nothing of a rejected batch is written");

        // Bad query: clear error.
        let mut q = query("m1");
        q.end_ns = q.start_ns;
        let err = c.query(q).await.unwrap_err();
        assert!(err.to_string().contains("time range is empty"), "{err}");
    });
}

fn futures_stream(items: Vec<pb::WriteRequest>) -> impl tonic::codegen::tokio_stream::Stream<Item = pb::WriteRequest> {
    tonic::codegen::tokio_stream::iter(items)
}
