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
