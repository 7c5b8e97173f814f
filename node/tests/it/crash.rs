//! kill -9 during continuous writes: after every restart, each acknowledged point is there with
//! its value, and nothing appears that was never written.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{client, NodeProcess};

const DEVICES: u64 = 40;
const LINES_PER_BATCH: u64 = 250;
const BASE_TS: i64 = 1_600_000_000_000_000_000;

/// The point numbered `n`: device, timestamp and value are all derived from `n`.
fn point(n: u64) -> (String, i64, i64) {
    (format!("d{}", n % DEVICES), BASE_TS + (n as i64) * 1000, (n as i64) * 7 - 3)
}

/// Reads every point of measurement `crash` back as (device, ts) → value.
fn read_all(node: &NodeProcess) -> BTreeMap<(String, i64), i64> {
    let (status, v) = node.query(json!({
        "tenant": "crash", "measurement": "crash", "fields": ["v"],
        "start": BASE_TS, "end": BASE_TS + 1_000_000_000_000_000,
    }));
    assert_eq!(status, 200, "query failed: {v}");
    let mut out = BTreeMap::new();
    for g in v["groups"].as_array().unwrap() {
        let device = g["tags"]["device_id"].as_str().unwrap().to_string();
        for r in g["rows"].as_array().unwrap() {
            let prev = out.insert((device.clone(), r[0].as_i64().unwrap()), r[1].as_i64().unwrap());
            assert!(prev.is_none(), "duplicate point in query result");
        }
    }
    out
}

#[test]
fn kill9_during_writes_loses_no_acknowledged_point() {
    let dir = tempfile::tempdir().unwrap();
    // Small memtables so flushes, log purges and log replay all happen during the run.
    let mut node = NodeProcess::start(dir.path(), &["--shard-count", "8", "--shard-memtable-bytes-max", "65536"]);
    let next = Arc::new(AtomicU64::new(0));
    let acked: Arc<Mutex<Vec<(u64, u64)>>> = Arc::new(Mutex::new(Vec::new()));
    for round in 0..3 {
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..3)
            .map(|_| {
                let (next, acked, stop, http) = (next.clone(), acked.clone(), stop.clone(), node.http.clone());
                std::thread::spawn(move || {
                    let c = client();
                    while !stop.load(Ordering::Relaxed) {
                        let first = next.fetch_add(LINES_PER_BATCH, Ordering::SeqCst);
                        let mut body = String::new();
                        for n in first..first + LINES_PER_BATCH {
                            let (d, ts, v) = point(n);
                            body.push_str(&format!("crash,device_id={d} v={v}i {ts}\n"));
                        }
                        match c.post(format!("http://{http}/write?db=crash")).body(body).send() {
                            Ok(r) if r.status().as_u16() == 204 => {
                                acked.lock().unwrap().push((first, first + LINES_PER_BATCH))
                            }
                            _ => return,
                        }
                    }
                })
            })
            .collect();
        // Kill once enough batches of this round are acknowledged (bounded by count).
        let target = (round + 1) * 40;
        let deadline = Instant::now() + Duration::from_secs(120);
        while acked.lock().unwrap().len() < target {
            assert!(Instant::now() < deadline, "writes stalled in round {round}");
            std::thread::sleep(Duration::from_millis(5));
        }
        node.kill9();
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.join().unwrap();
        }
        let sent_max = next.load(Ordering::SeqCst);
        node.restart();
        let stored = read_all(&node);
        let acked_ranges = acked.lock().unwrap().clone();
        let mut acked_points = 0;
        for (a, b) in &acked_ranges {
            for n in *a..*b {
                let (d, ts, v) = point(n);
                assert_eq!(
                    stored.get(&(d.clone(), ts)),
                    Some(&v),
                    "round {round}: acknowledged point {n} ({d}, {ts}) lost"
                );
                acked_points += 1;
            }
        }
        // Nothing that was never sent, and every stored value is the one written for its key.
        for ((d, ts), v) in &stored {
            let n = ((ts - BASE_TS) / 1000) as u64;
            assert!(n < sent_max, "point {n} was never sent");
            assert_eq!(point(n), (d.clone(), *ts, *v), "stored point {n} differs from what was written");
        }
        assert!(stored.len() >= acked_points);
    }
    // A clean stop flushes; the data survives a final restart unchanged.
    let before = read_all(&node);
    node.stop();
    node.restart();
    assert_eq!(read_all(&node), before, "a clean restart changed the data");
}
