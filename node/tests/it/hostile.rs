//! Hostile requests against a real node: each gets the answer a careful database gives (a clear
//! 4xx or gRPC status naming the problem), and afterwards the node still serves and the stored
//! data is what it was. Every case here once hurt the node (a panic, a reset connection, a
//! silently dropped write, a key indexed wrongly).

use std::io::Write;

use serde_json::{json, Value};

use hotlake_client::proto as pb;
use hotlake_client::{ClientError, SeriesBuilder};

use crate::support::{client, NodeProcess};

const T0: i64 = 1_451_606_400_000_000_000; // 2016-01-01T00:00:00Z

fn gzip(text: &str) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(text.as_bytes()).unwrap();
    e.finish().unwrap()
}

/// Points of measurement `m` in tenant `db`.
fn count(node: &NodeProcess, db: &str) -> i64 {
    let (status, v) = node.query(json!({
        "tenant": db, "measurement": "m", "start": T0, "end": T0 + 1_000_000_000_000i64,
        "aggregates": ["count"],
    }));
    assert_eq!(status, 200, "{v}");
    v["groups"].as_array().into_iter().flatten().map(|g| g["rows"][0][1].as_i64().unwrap_or(0)).sum()
}

/// The node answers health and still holds exactly `expected` points in `db`.
fn unharmed(node: &NodeProcess, expected: i64) {
    let h: Value = client().get(format!("http://{}/health", node.http)).send().unwrap().json().unwrap();
    assert_eq!(h["status"], "ok", "{h}");
    assert_eq!(count(node, "hostile"), expected);
}

/// Asserts a 400 whose body names `reason`.
#[track_caller]
fn refused(r: reqwest::blocking::Response, reason: &str) {
    let status = r.status().as_u16();
    let body = r.text().unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(body.contains(reason), "{body} lacks {reason:?}");
}

#[test]
fn hostile_requests_are_refused_clearly_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path(), &["--shard-count", "4"]);
    let c = client();
    let url = |q: &str| format!("http://{}/write?{q}", node.http);

    // A body of two gzip members (pigz, `cat a.gz b.gz`): every member is written.
    let mut body = gzip(&format!("m,device_id=a v=1 {T0}\n"));
    body.extend(gzip(&format!("m,device_id=a v=2 {}\n", T0 + 1)));
    let r = c.post(url("db=hostile")).header("content-encoding", "gzip").body(body).send().unwrap();
    assert_eq!(r.status().as_u16(), 204);
    unharmed(&node, 2);

    // A multi-byte character inside a query's time zone: 400, not a reset connection.
    let (status, v) = node.query(json!({
        "tenant": "hostile", "measurement": "m", "start": "2016-01-01T00:00:00+0é00", "end": T0 + 10,
    }));
    assert_eq!(status, 400, "{v}");
    assert!(v.to_string().contains("invalid time"), "{v}");
    unharmed(&node, 2);

    // A 20,000-byte tenant name.
    refused(c.post(url(&format!("db={}", "x".repeat(20_000)))).body("m v=1 1\n").send().unwrap(), "tenant name");
    // Control characters in a tenant name.
    refused(c.post(url("db=a%00b")).body("m v=1 1\n").send().unwrap(), "tenant name");
    // A NUL byte in a tag key, a tag value, a field key and the measurement.
    for line in ["m,de\0vice=a v=1 1", "m,device_id=a\0b v=1 1", "m,device_id=a v\0=1 1", "m\0n,device_id=a v=1 1"] {
        refused(c.post(url("db=hostile")).body(format!("{line}\n")).send().unwrap(), "NUL byte");
    }
    // A point in 2255: it would never expire and would stay the device's latest value.
    refused(
        c.post(url("db=hostile")).body("m,device_id=a v=9 9000000000000000000\n").send().unwrap(),
        "limits.future_s_max",
    );
    unharmed(&node, 2);

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let client = crate::support::connect([node.grpc.as_str()]).await;
        let rejected = |r: Result<hotlake_client::WriteSummary, ClientError>, reason: &str| match r {
            Err(ClientError::Rejected { kind, message }) => {
                assert_eq!(kind, "invalid_argument", "{message}");
                assert!(message.contains(reason), "{message} lacks {reason:?}");
            }
            other => panic!("expected a rejection naming {reason:?}, got {other:?}"),
        };
        // Columns that do not match the timestamps.
        let mut s = SeriesBuilder::new("m").tag("device_id", "a");
        s.push_f64(T0 + 5, "v", 5.0);
        let mut short = s.clone().build();
        short.timestamps_ns.push(T0 + 6);
        rejected(client.write("hostile", vec![short]).await, "absent rows");
        // A NUL byte in a tag key, which the series key is split on.
        let nul = SeriesBuilder::new("m").tag("dev\0ice", "a");
        let mut nul = nul;
        nul.push_f64(T0 + 7, "v", 7.0);
        rejected(client.write("hostile", vec![nul.build()]).await, "NUL byte");
        // A point far in the future.
        let mut future = SeriesBuilder::new("m").tag("device_id", "a");
        future.push_f64(9_000_000_000_000_000_000, "v", 9.0);
        rejected(client.write("hostile", vec![future.build()]).await, "limits.future_s_max");
        // A tenant name too long.
        rejected(client.write(&"t".repeat(300), vec![s.build()]).await, "tenant name");
        // Raw requests with absent rows out of range.
        let bad = pb::SeriesPoints {
            measurement: "m".into(),
            tags: vec![pb::Tag { key: "device_id".into(), value: "a".into() }],
            timestamps_ns: vec![T0 + 8],
            fields: vec![pb::FieldColumn {
                name: "v".into(),
                values: Some(pb::field_column::Values::F64(pb::DoubleValues { values: vec![] })),
                absent_rows: vec![7],
            }],
        };
        rejected(client.write("hostile", vec![bad]).await, "absent_rows");
    });
    unharmed(&node, 2);
}

/// Whether `stream` was closed by the node: end of stream or a reset, or at most a 408 before
/// the end.
fn closed_by_node(stream: &mut std::net::TcpStream) -> bool {
    use std::io::Read;
    let mut answer = Vec::new();
    match stream.read_to_end(&mut answer) {
        Ok(_) => answer.is_empty() || answer.starts_with(b"HTTP/1.1 408"),
        Err(e) => matches!(e.kind(), std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe),
    }
}

/// Slow and idle clients cannot hold every socket: a client that sends half its headers is
/// closed after `limits.http_header_read_timeout_ms`, and one over
/// `limits.http_connections_max` is closed as soon as it connects; the node serves again once
/// the slow ones are gone.
#[test]
fn slow_clients_cannot_hold_every_http_connection() {
    use std::io::Write;
    use std::net::TcpStream;
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("limits.toml");
    std::fs::write(&config, "[limits]\nhttp_connections_max = 4\nhttp_header_read_timeout_ms = 2000\n").unwrap();
    let node =
        NodeProcess::start(&dir.path().join("data"), &["--shard-count", "4", "--config", config.to_str().unwrap()]);
    let half = |addr: &str| {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n").unwrap();
        s
    };
    let started = Instant::now();
    let mut slow: Vec<TcpStream> = (0..4).map(|_| half(&node.http)).collect();
    // A fifth client, with a whole request, is over the limit: closed, not answered.
    let mut fifth = TcpStream::connect(&node.http).unwrap();
    fifth.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let _ = fifth.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(closed_by_node(&mut fifth), "a connection over limits.http_connections_max was served");
    for s in &mut slow {
        assert!(closed_by_node(s), "a client that never finished its headers kept its connection");
    }
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(1500) && waited < Duration::from_secs(20), "closed after {waited:?}");
    // The slots are free again.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if client().get(format!("http://{}/health", node.http)).send().is_ok_and(|r| r.status().is_success()) {
            break;
        }
        assert!(Instant::now() < deadline, "the node does not serve HTTP again after the slow clients left");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A `WriteStream` that goes silent is ended after `limits.write_stream_idle_ms` with
/// `DEADLINE_EXCEEDED` naming the limit; what it wrote before stays written.
/// Clients that open gRPC connections and leave them idle take at most
/// `limits.grpc_connections_max` sockets: one more is closed at once, and once they leave the
/// node serves gRPC again.
#[test]
fn idle_clients_cannot_hold_every_grpc_connection() {
    use std::io::Read;
    use std::net::TcpStream;
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("limits.toml");
    std::fs::write(&config, "[limits]\ngrpc_connections_max = 16\n").unwrap();
    let node =
        NodeProcess::start(&dir.path().join("data"), &["--shard-count", "4", "--config", config.to_str().unwrap()]);
    let idle: Vec<TcpStream> = (0..16).map(|_| TcpStream::connect(&node.grpc).unwrap()).collect();
    let mut over = TcpStream::connect(&node.grpc).unwrap();
    over.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut byte = [0u8; 1];
    let closed = match over.read(&mut byte) {
        Ok(n) => n == 0,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    };
    assert!(closed, "a connection over limits.grpc_connections_max was kept");
    drop(idle);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let mut s = SeriesBuilder::new("m").tag("device_id", "a");
            s.push_f64(T0 + 100, "v", 1.0);
            let client = hotlake_client::Client::builder()
                .seeds([node.grpc.clone()])
                .token(crate::support::TEST_TOKEN)
                .connect()
                .await;
            match client {
                Ok(c) if c.write("hostile", vec![s.build()]).await.is_ok() => break,
                _ => assert!(
                    std::time::Instant::now() < deadline,
                    "gRPC did not serve again after the idle clients left"
                ),
            }
            // tidy: sleep (the node frees a slot when it notices a closed socket; bounded above).
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}

#[test]
fn a_silent_write_stream_is_ended() {
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("limits.toml");
    std::fs::write(&config, "[limits]\nwrite_stream_idle_ms = 1000\n").unwrap();
    let node =
        NodeProcess::start(&dir.path().join("data"), &["--shard-count", "4", "--config", config.to_str().unwrap()]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (status, waited) = rt.block_on(async {
        let mut raw = pb::hotlake_client::HotlakeClient::connect(format!("http://{}", node.grpc)).await.unwrap();
        let mut s = SeriesBuilder::new("m").tag("device_id", "a");
        s.push_f64(T0, "v", 1.0);
        let first = pb::WriteRequest { tenant: "hostile".into(), series: vec![s.build()], ..Default::default() };
        // One batch, then silence for longer than the limit.
        let batches = futures::stream::unfold(0, move |step| {
            let first = first.clone();
            async move {
                match step {
                    0 => Some((first, 1)),
                    _ => {
                        // tidy: sleep (the stream's silence is what is tested).
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        None
                    }
                }
            }
        });
        let started = Instant::now();
        let status = raw.write_stream(crate::support::authorized(batches)).await.expect_err("a silent stream is ended");
        (status, started.elapsed())
    });
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    assert!(status.message().contains("limits.write_stream_idle_ms"), "{status:?}");
    assert!(waited < Duration::from_secs(4), "ended after {waited:?}");
    unharmed(&node, 1);
}

/// The peer listener (node-to-node) answers malformed calls with a status naming the problem:
/// undecodable payloads, unknown RPC kinds, another cluster's Raft traffic, groups the node does
/// not host, broken snapshot streams, and a forwarded write whose columns do not match its
/// timestamps (refused where it enters, so it never reaches a log). The node serves and its data
/// is unchanged afterwards.
#[test]
fn the_peer_listener_refuses_malformed_calls_and_changes_nothing() {
    use hotlake_cluster::transport::{PeerCall, Peers, TransportOptions};
    use hotlake_engine::batch::{ColumnWrite, SeriesWrite, ShardWrite, Values};
    use hotlake_proto::internal::v1 as internal;
    use tonic::Code;

    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path(), &["--shard-count", "4"]);
    assert_eq!(node.write("hostile", &format!("m,device_id=a v=1 {T0}\nm,device_id=b v=2 {T0}\n")).status(), 204);
    unharmed(&node, 2);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut peer = internal::peer_client::PeerClient::connect(format!("http://{}", node.peer)).await.unwrap();
        let raft = raft_request;
        peer_status(
            peer.call(internal::Payload { payload: vec![0xff; 9], wire_version: 0 }).await,
            Code::InvalidArgument,
            "decode",
        );
        // A sender of a wire format from a release this one cannot read: refused before decoding.
        let newer = hotlake_cluster::transport::WIRE_VERSION + 1;
        let from_newer = internal::Payload { payload: vec![0xff; 9], wire_version: newer };
        peer_status(peer.call(from_newer).await, Code::FailedPrecondition, "newer release: upgrade this node");
        let raft_from_newer = internal::RaftRequest { wire_version: newer, ..raft(0, 1, vec![], 0) };
        peer_status(peer.raft(raft_from_newer).await, Code::FailedPrecondition, &format!("wire format {newer}"));
        peer_status(peer.raft(raft(0, 99, vec![], 0)).await, Code::InvalidArgument, "unknown raft rpc kind 99");
        peer_status(peer.raft(raft(0, 1, vec![0xff; 3], 0)).await, Code::InvalidArgument, "undecodable");
        peer_status(peer.raft(raft(0, 1, vec![], 0xdead_beef)).await, Code::FailedPrecondition, "from cluster");
        peer_status(peer.raft(raft(77, 1, vec![], 0)).await, Code::Unavailable, "no replica of group 77");
        peer_status(peer.raft(raft(u64::MAX - 1, 1, vec![], 0)).await, Code::InvalidArgument, "bad group id");
        broken_snapshot_streams_are_refused(&mut peer).await;
        malformed_raft_batches_are_answered_one_by_one(&mut peer).await;

        // A forwarded write with two timestamps and one value: refused, never proposed.
        let peers = Peers::new(TransportOptions {
            call_timeout: std::time::Duration::from_secs(5),
            snapshot_chunk_bytes_max: 1 << 20,
            snapshot_bytes_per_s_max: 0,
            message_bytes_max: 64 << 20,
        });
        let short = SeriesWrite {
            key: "m,device_id=a".into(),
            device: "a".into(),
            timestamps: vec![T0 + 1, T0 + 2],
            columns: vec![ColumnWrite { field: "v".into(), absent_rows: vec![], values: Values::F64(vec![3.0]) }],
        };
        for shard in 0..4 {
            let write = ShardWrite { tenant: "hostile".into(), series: vec![short.clone()] };
            let call = PeerCall::Write { shard: hotlake_storage::ShardId(shard), write };
            let refused = peers.call(&node.peer, &call, std::time::Duration::from_secs(5)).await;
            let e = refused.expect_err("a malformed forwarded write was accepted");
            assert!(e.to_string().contains("absent rows"), "{e}");
        }
    });
    unharmed(&node, 2);
}

/// The call refused with `code`, its message naming `reason`.
#[track_caller]
fn peer_status<T: std::fmt::Debug>(r: Result<T, tonic::Status>, code: tonic::Code, reason: &str) {
    let s = r.expect_err("a malformed peer call was accepted");
    assert_eq!(s.code(), code, "{s:?}");
    assert!(s.message().contains(reason), "{:?} lacks {reason:?}", s.message());
}

/// A Raft request of `group` as a peer of the release before wire formats sends it.
fn raft_request(group: u64, kind: u32, payload: Vec<u8>, cluster_id: u64) -> hotlake_proto::internal::v1::RaftRequest {
    hotlake_proto::internal::v1::RaftRequest { group, kind, payload, cluster_id, wire_version: 0 }
}

/// A batch of Raft requests is answered request by request: each malformed one with its own
/// reason, in the order sent; a batch far past what a peer sends is refused whole.
async fn malformed_raft_batches_are_answered_one_by_one(
    peer: &mut hotlake_proto::internal::v1::peer_client::PeerClient<tonic::transport::Channel>,
) {
    use hotlake_proto::internal::v1 as internal;
    let raft = raft_request;
    let requests = vec![
        raft(0, 99, vec![], 0),
        raft(0, 1, vec![0xff; 3], 0),
        raft(0, 1, vec![], 0xdead_beef),
        raft(77, 1, vec![], 0),
    ];
    let reply =
        peer.raft_batch(internal::RaftBatchRequest { requests }).await.expect("a batch is answered").into_inner();
    let reasons: Vec<&str> = reply.replies.iter().map(|r| r.error.as_str()).collect();
    let expected = ["unknown raft rpc kind 99", "undecodable", "from cluster", "no replica of group 77"];
    assert_eq!(reasons.len(), expected.len(), "{reasons:?}");
    for (reason, expected) in reasons.iter().zip(expected) {
        assert!(reason.contains(expected), "{reason:?} lacks {expected:?}");
    }
    assert!(reply.replies.iter().all(|r| r.payload.is_empty()));
    let flood = internal::RaftBatchRequest { requests: vec![raft(77, 1, vec![], 0); 1025] };
    peer_status(peer.raft_batch(flood).await, tonic::Code::InvalidArgument, "at most 1024");
}

/// Snapshot streams the peer listener refuses, installing nothing of them: empty, two groups in
/// one stream, cut short, marked and unmarked chunks mixed, undecodable data or header.
async fn broken_snapshot_streams_are_refused(
    peer: &mut hotlake_proto::internal::v1::peer_client::PeerClient<tonic::transport::Channel>,
) {
    use hotlake_proto::internal::v1 as internal;
    use tonic::Code;
    let chunk = |group: u64, header: Vec<u8>| internal::SnapshotChunk {
        group,
        header,
        data: Vec::new(),
        cluster_id: 0,
        wire_version: 0,
        last: Some(false),
    };
    peer_status(
        peer.install_snapshot(futures::stream::iter(Vec::new())).await,
        Code::InvalidArgument,
        "empty snapshot",
    );
    let header = hotlake_cluster::transport::SnapshotHeader {
        vote: openraft::Vote::new(1, 1),
        meta: openraft::SnapshotMeta::default(),
    };
    let header = bincode::serialize(&header).unwrap();
    let two_groups = vec![chunk(0, header.clone()), chunk(1, vec![])];
    peer_status(peer.install_snapshot(futures::stream::iter(two_groups)).await, Code::InvalidArgument, "two groups");
    // A stream cut short (no message marked last) and one whose data is not pairs: nothing
    // of either is installed.
    let cut_short = vec![chunk(0, header.clone()), chunk(0, vec![])];
    peer_status(peer.install_snapshot(futures::stream::iter(cut_short)).await, Code::Aborted, "before its last chunk");
    let mixed = vec![chunk(0, header.clone()), internal::SnapshotChunk { last: None, ..chunk(0, vec![]) }];
    peer_status(
        peer.install_snapshot(futures::stream::iter(mixed)).await,
        Code::InvalidArgument,
        "without an end mark",
    );
    // From a release before the end mark, a stream ends where it ends: garbage data is
    // decoded (and refused) instead of the stream being refused as cut short.
    let unmarked = vec![internal::SnapshotChunk { data: vec![1, 2], last: None, ..chunk(0, header.clone()) }];
    peer_status(peer.install_snapshot(futures::stream::iter(unmarked)).await, Code::InvalidArgument, "undecodable");
    let garbage_data = vec![internal::SnapshotChunk { data: vec![1, 2], last: Some(true), ..chunk(0, header.clone()) }];
    peer_status(peer.install_snapshot(futures::stream::iter(garbage_data)).await, Code::InvalidArgument, "undecodable");
    let garbage_header = vec![chunk(0, vec![0xff; 5])];
    peer_status(
        peer.install_snapshot(futures::stream::iter(garbage_header)).await,
        Code::InvalidArgument,
        "undecodable",
    );
}

/// A catalogue of malformed and unauthenticated HTTP requests, each answered with the status a
/// careful database gives and a message naming the problem; the node serves and its data is
/// unchanged after all of them.
#[test]
// tidy: long (a table of cases against one node, since starting it dominates the test time).
fn malformed_http_requests_get_a_clear_answer_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(dir.path(), &["--shard-count", "4"]);
    assert_eq!(node.write("hostile", &format!("m,device_id=a v=1 {T0}\nm,device_id=b v=2 {T0}\n")).status(), 204);
    unharmed(&node, 2);
    let (c, anonymous) = (client(), crate::support::anonymous_client());
    let url = |path: &str| format!("http://{}{path}", node.http);
    let query = |body: Value| c.post(url("/api/v1/query")).json(&body).send().unwrap();
    let range = json!({ "tenant": "hostile", "measurement": "m", "start": T0, "end": T0 + 10 });
    let with = |extra: Value| {
        let mut q = range.clone();
        for (k, v) in extra.as_object().unwrap() {
            q[k] = v.clone();
        }
        q
    };
    let bomb = {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(&vec![b'm'; 80 << 20]).unwrap();
        e.finish().unwrap()
    };
    let cases: Vec<(&str, reqwest::blocking::Response, u16, &str)> = vec![
        (
            "unknown precision",
            c.post(url("/write?db=hostile&precision=xs")).body("m v=1 1\n").send().unwrap(),
            400,
            "precision",
        ),
        (
            "gzip header, plain body",
            c.post(url("/write?db=hostile")).header("content-encoding", "gzip").body("m v=1 1\n").send().unwrap(),
            400,
            "not valid gzip",
        ),
        (
            "gzip bomb",
            c.post(url("/write?db=hostile")).header("content-encoding", "gzip").body(bomb).send().unwrap(),
            422,
            "limits.body_bytes_max",
        ),
        (
            "body not UTF-8",
            c.post(url("/write?db=hostile")).body(vec![b'm', b' ', 0xff, 0xfe]).send().unwrap(),
            400,
            "not UTF-8",
        ),
        (
            "line without a field",
            c.post(url("/write?db=hostile")).body("m,device_id=a 1\n").send().unwrap(),
            400,
            "lines_rejected",
        ),
        (
            "field of another type",
            c.post(url("/write?db=hostile")).body(format!("m,device_id=a v=\"text\" {}\n", T0 + 1)).send().unwrap(),
            400,
            "\\\"v\\\"",
        ),
        ("query not JSON", c.post(url("/api/v1/query")).body("{").send().unwrap(), 400, "not a valid query"),
        (
            "unknown tag operator",
            query(with(json!({ "where": [{ "tag": "device_id", "op": "~~", "value": "a" }] }))),
            400,
            "unknown operator",
        ),
        (
            "bad regex",
            query(with(json!({ "where": [{ "tag": "device_id", "op": "=~", "value": "(" }] }))),
            400,
            "bad regex",
        ),
        (
            "unknown fill",
            query(with(json!({ "aggregates": ["mean"], "bucket": "1s", "fill": "sometimes" }))),
            400,
            "fill must be",
        ),
        ("unknown order", query(with(json!({ "order": "sideways" }))), 400, "order must be"),
        (
            "duration without unit",
            query(with(json!({ "aggregates": ["mean"], "bucket": "10" }))),
            400,
            "invalid duration",
        ),
        ("invalid time", query(with(json!({ "start": "yesterday" }))), 400, "invalid time"),
        ("last not JSON", c.post(url("/api/v1/last")).body("[").send().unwrap(), 400, "not a valid query"),
        ("GET on a write route", c.get(url("/write?db=hostile")).send().unwrap(), 405, ""),
        ("unknown route", c.get(url("/api/v1/nothing-here")).send().unwrap(), 404, ""),
        (
            "unknown node action",
            c.post(url("/api/v1/cluster/nodes/1/explode")).send().unwrap(),
            400,
            "unknown node action",
        ),
        ("add node: not JSON", c.post(url("/api/v1/cluster/nodes")).body("{").send().unwrap(), 400, "bad JSON body"),
        (
            "add node: id 0",
            c.post(url("/api/v1/cluster/nodes"))
                .body(r#"{"id":0,"grpc_addr":"h:1","http_addr":"h:2","peer_addr":"h:3"}"#)
                .send()
                .unwrap(),
            400,
            "node id must be greater than 0",
        ),
        (
            "add node: address with spaces",
            c.post(url("/api/v1/cluster/nodes"))
                .body(r#"{"id":5,"grpc_addr":"h 1","http_addr":"h:2","peer_addr":"h:3"}"#)
                .send()
                .unwrap(),
            400,
            "grpc_addr",
        ),
        ("no token", anonymous.post(url("/write?db=hostile")).body("m v=1 1\n").send().unwrap(), 401, "token"),
        (
            "unknown token",
            anonymous
                .post(url("/api/v1/query"))
                .header("authorization", "Token hlk_not_a_token")
                .json(&range)
                .send()
                .unwrap(),
            401,
            "token",
        ),
        (
            "Basic credentials not base64",
            anonymous.get(url("/metrics")).header("authorization", "Basic %%%").send().unwrap(),
            401,
            "",
        ),
        ("metrics without token", anonymous.get(url("/metrics")).send().unwrap(), 401, "token"),
    ];
    let mut wrong = Vec::new();
    for (name, response, want, reason) in cases {
        let status = response.status().as_u16();
        let body = response.text().unwrap_or_default();
        if status != want || !body.contains(reason) {
            wrong.push(format!("{name}: expected {want} naming {reason:?}, got {status}: {body}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    unharmed(&node, 2);
}
