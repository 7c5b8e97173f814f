//! Workloads for a simulated cluster, recording a history for the checkers.
//!
//! Batch `b` writes timestamps `[b·P, b·P + P)` (P = [`POINTS_PER_BATCH`], in seconds) for every
//! device `d`, with value `t·10 + d`: every point names its batch and its value is known. A
//! write ends acknowledged (the batch must be stored), failed (definitely not applied) or unknown
//! (timed out or unavailable: it may or may not be stored).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hotlake_proto::v1 as pb;
use hotlake_proto::v1::hotlake_client::HotlakeClient;
use madsim::rand::{thread_rng, Rng};
use tonic::transport::Channel;

/// Devices written by every batch.
pub const DEVICES: i64 = 6;
/// Timestamps per device per batch.
pub const POINTS_PER_BATCH: i64 = 5;
const NS: i64 = 1_000_000_000;

/// How a write ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged: it must be stored.
    Acked,
    /// Rejected: it must not be stored.
    Failed,
    /// No answer or unavailable: it may or may not be stored.
    Unknown,
}

/// One read that started after some writes were acknowledged.
#[derive(Clone, Debug)]
pub struct RangeRead {
    /// The device read.
    pub device: i64,
    /// Batches acknowledged before the read started.
    pub acked_before: Vec<u64>,
    /// Timestamps (seconds) returned.
    pub seen: BTreeSet<i64>,
    /// The node asked, and when the read began and ended (simulated ms since the workload began).
    pub via: String,
    /// When the read began.
    pub began_ms: u64,
    /// When its answer arrived.
    pub ended_ms: u64,
}

/// One `Last` read.
#[derive(Clone, Debug)]
pub struct LastRead {
    /// The device read.
    pub device: i64,
    /// Greatest timestamp (seconds) acknowledged for the device before the read started.
    pub acked_max: Option<i64>,
    /// Timestamp (seconds) returned, if any.
    pub seen: Option<i64>,
}

/// One aggregate read (count, sum, min and max of one device's field).
#[derive(Clone, Debug)]
pub struct AggregateRead {
    /// The device read.
    pub device: i64,
    /// Batches acknowledged before the read started.
    pub acked_before: Vec<u64>,
    /// The answer; `None` when the device had no points.
    pub answer: Option<Aggregates>,
}

/// count, sum, min and max of a device's values.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Aggregates {
    /// Points counted.
    pub count: u64,
    /// Sum of their values.
    pub sum: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
}

/// Everything the workload saw.
#[derive(Default, Debug)]
pub struct History {
    /// Outcome per batch sent.
    pub writes: BTreeMap<u64, Outcome>,
    /// Per batch: the node it was sent to and when it ended (simulated ms since the workload
    /// began), for failure reports.
    pub write_trace: BTreeMap<u64, (String, u64)>,
    /// Successful range reads.
    pub range_reads: Vec<RangeRead>,
    /// Successful `Last` reads.
    pub last_reads: Vec<LastRead>,
    /// Successful aggregate reads.
    pub aggregate_reads: Vec<AggregateRead>,
    /// Reads that failed (allowed while faults are on).
    pub reads_failed: u64,
}

impl History {
    /// Batches acknowledged.
    pub fn acked(&self) -> BTreeSet<u64> {
        self.writes.iter().filter(|(_, o)| **o == Outcome::Acked).map(|(b, _)| *b).collect()
    }

    /// Batches that may be stored: acknowledged or unknown.
    pub fn maybe(&self) -> BTreeSet<u64> {
        self.writes.iter().filter(|(_, o)| **o != Outcome::Failed).map(|(b, _)| *b).collect()
    }
}

/// The batch a timestamp (seconds) belongs to.
pub fn batch_of(t: i64) -> u64 {
    (t / POINTS_PER_BATCH) as u64
}

/// The value written for device `d` at `t` (seconds).
pub fn value_of(d: i64, t: i64) -> i64 {
    t * 10 + d
}

/// The write request of batch `b`.
pub fn batch(b: u64) -> pb::WriteRequest {
    let first = b as i64 * POINTS_PER_BATCH;
    let series = (0..DEVICES)
        .map(|d| pb::SeriesPoints {
            measurement: "m".into(),
            tags: vec![pb::Tag { key: "device_id".into(), value: format!("d{d}") }],
            timestamps_ns: (first..first + POINTS_PER_BATCH).map(|t| t * NS).collect(),
            fields: vec![pb::FieldColumn {
                name: "v".into(),
                values: Some(pb::field_column::Values::I64(pb::Int64Values {
                    values: (first..first + POINTS_PER_BATCH).map(|t| value_of(d, t)).collect(),
                })),
                absent_rows: vec![],
            }],
        })
        .collect();
    pb::WriteRequest { tenant: "sim".into(), series, ..Default::default() }
}

async fn connect(addr: &str) -> Option<HotlakeClient<Channel>> {
    HotlakeClient::connect(format!("http://{addr}")).await.ok()
}

/// The tag filter selecting device `d`.
pub fn device_filter(d: i64) -> Vec<pb::TagPredicate> {
    vec![pb::TagPredicate {
        key: "device_id".into(),
        op: pb::tag_predicate::Op::Eq as i32,
        values: vec![format!("d{d}")],
    }]
}

/// A query of field `v` of device `d` over every timestamp the workload writes.
pub fn device_query(d: i64) -> pb::QueryRequest {
    pb::QueryRequest {
        tenant: "sim".into(),
        measurement: "m".into(),
        fields: vec!["v".into()],
        predicates: device_filter(d),
        start_ns: 0,
        end_ns: 100_000_000 * NS,
        ..Default::default()
    }
}

/// (timestamp seconds, value) of every point of device `d`, read through `addr`.
pub async fn read_device(addr: &str, d: i64) -> Result<Vec<(i64, i64)>, String> {
    let mut c = connect(addr).await.ok_or("connect failed")?;
    let resp = tokio::time::timeout(Duration::from_secs(20), c.query(device_query(d)))
        .await
        .map_err(|_| "timeout".to_string())?
        .map_err(|e| e.to_string())?
        .into_inner();
    let mut out = Vec::new();
    for g in resp.groups {
        for r in g.rows {
            let v = match r.values.first().and_then(|v| v.kind.clone()) {
                Some(pb::value::Kind::I64(v)) => v,
                other => return Err(format!("unexpected value {other:?}")),
            };
            out.push((r.timestamp_ns / NS, v));
        }
    }
    Ok(out)
}

/// Latest timestamp (seconds) and value of device `d`'s field `v`, through `addr`.
pub async fn last_of(addr: &str, d: i64) -> Result<Option<(i64, i64)>, String> {
    let mut c = connect(addr).await.ok_or("connect failed")?;
    let req = pb::LastRequest {
        tenant: "sim".into(),
        measurement: "m".into(),
        fields: vec!["v".into()],
        predicates: device_filter(d),
    };
    let resp = tokio::time::timeout(Duration::from_secs(20), c.last(req))
        .await
        .map_err(|_| "timeout".to_string())?
        .map_err(|e| e.to_string())?
        .into_inner();
    let Some(row) = resp.rows.into_iter().next() else { return Ok(None) };
    let Some(fv) = row.values.into_iter().next() else { return Ok(None) };
    match fv.value.and_then(|v| v.kind) {
        Some(pb::value::Kind::I64(v)) => Ok(Some((fv.timestamp_ns / NS, v))),
        other => Err(format!("unexpected last value {other:?}")),
    }
}

fn number(v: &pb::Value) -> Result<f64, String> {
    match v.kind {
        Some(pb::value::Kind::F64(x)) => Ok(x),
        Some(pb::value::Kind::I64(x)) => Ok(x as f64),
        Some(pb::value::Kind::U64(x)) => Ok(x as f64),
        ref other => Err(format!("not a number: {other:?}")),
    }
}

/// count, sum, min and max of device `d`'s field over all time, through `addr`.
pub async fn aggregates_of(addr: &str, d: i64) -> Result<Option<Aggregates>, String> {
    let mut c = connect(addr).await.ok_or("connect failed")?;
    let req = pb::QueryRequest {
        aggregates: [pb::Aggregate::Count, pb::Aggregate::Sum, pb::Aggregate::Min, pb::Aggregate::Max]
            .into_iter()
            .map(|a| a as i32)
            .collect(),
        ..device_query(d)
    };
    let resp = tokio::time::timeout(Duration::from_secs(20), c.query(req))
        .await
        .map_err(|_| "timeout".to_string())?
        .map_err(|e| e.to_string())?
        .into_inner();
    let Some(row) = resp.groups.first().and_then(|g| g.rows.first()) else { return Ok(None) };
    let v = row.values.iter().map(number).collect::<Result<Vec<f64>, String>>()?;
    let [count, sum, min, max] = v[..] else { return Err(format!("expected 4 aggregates, got {v:?}")) };
    Ok(Some(Aggregates { count: count as u64, sum, min, max }))
}

/// Sends batch `b` through `addr` and classifies the outcome.
pub async fn write(addr: &str, b: u64) -> Outcome {
    let Some(mut c) = connect(addr).await else { return Outcome::Failed };
    match tokio::time::timeout(Duration::from_secs(20), c.write(batch(b))).await {
        Ok(Ok(_)) => Outcome::Acked,
        Ok(Err(s)) if s.code() == tonic::Code::InvalidArgument => Outcome::Failed,
        // Unavailable, deadline, cancelled, internal: the write may have been applied.
        Ok(Err(s)) => {
            tracing::debug!(addr, batch = b, status = %s, "write failed");
            Outcome::Unknown
        }
        Err(_) => Outcome::Unknown,
    }
}

/// The nodes the workload sends to; faults that start nodes add theirs.
pub type Targets = Arc<Mutex<Vec<String>>>;

fn pick(targets: &Targets) -> String {
    let t = targets.lock().unwrap();
    t[thread_rng().gen_range(0..t.len())].clone()
}

/// What a reader asks next.
enum ReadKind {
    Range,
    Last,
    Aggregate,
}

/// Concurrent writers and readers until `stop`.
pub struct Workload {
    /// What happened.
    pub history: Arc<Mutex<History>>,
    stop: Arc<AtomicBool>,
    next_batch: Arc<AtomicU64>,
}

impl Workload {
    /// An empty workload.
    pub fn new() -> Workload {
        Workload {
            history: Arc::new(Mutex::new(History::default())),
            stop: Arc::new(AtomicBool::new(false)),
            next_batch: Arc::new(AtomicU64::new(0)),
        }
    }

    /// An empty workload whose first batch is `first` (to follow batches written earlier).
    pub fn starting_at(first: u64) -> Workload {
        Workload { next_batch: Arc::new(AtomicU64::new(first)), ..Workload::new() }
    }

    /// Tells the writers and readers to finish.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Runs `writers` writers and `readers` readers against `targets` until stopped.
    pub async fn run(&self, targets: Targets, writers: usize, readers: usize) {
        let started = madsim::time::Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..writers {
            let (history, stop, next, targets) =
                (self.history.clone(), self.stop.clone(), self.next_batch.clone(), targets.clone());
            tasks.push(madsim::task::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let b = next.fetch_add(1, Ordering::Relaxed);
                    let addr = pick(&targets);
                    let outcome = write(&addr, b).await;
                    {
                        let mut h = history.lock().unwrap();
                        h.writes.insert(b, outcome);
                        h.write_trace.insert(b, (addr, started.elapsed().as_millis() as u64));
                    }
                    if outcome != Outcome::Acked {
                        madsim::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }));
        }
        for _ in 0..readers {
            let (history, stop, targets) = (self.history.clone(), self.stop.clone(), targets.clone());
            tasks.push(madsim::task::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let (d, kind) = {
                        let mut rng = thread_rng();
                        let kind = match rng.gen_range(0..4) {
                            0 => ReadKind::Last,
                            1 => ReadKind::Aggregate,
                            _ => ReadKind::Range,
                        };
                        (rng.gen_range(0..DEVICES), kind)
                    };
                    let addr = pick(&targets);
                    let acked_before: Vec<u64> = history.lock().unwrap().acked().into_iter().collect();
                    let began_ms = started.elapsed().as_millis() as u64;
                    match kind {
                        ReadKind::Last => {
                            let acked_max =
                                acked_before.last().map(|b| *b as i64 * POINTS_PER_BATCH + POINTS_PER_BATCH - 1);
                            match last_of(&addr, d).await {
                                Ok(seen) => history.lock().unwrap().last_reads.push(LastRead {
                                    device: d,
                                    acked_max,
                                    seen: seen.map(|(t, _)| t),
                                }),
                                Err(_) => history.lock().unwrap().reads_failed += 1,
                            }
                        }
                        ReadKind::Aggregate => match aggregates_of(&addr, d).await {
                            Ok(answer) => history.lock().unwrap().aggregate_reads.push(AggregateRead {
                                device: d,
                                acked_before,
                                answer,
                            }),
                            Err(_) => history.lock().unwrap().reads_failed += 1,
                        },
                        ReadKind::Range => match read_device(&addr, d).await {
                            Ok(points) => history.lock().unwrap().range_reads.push(RangeRead {
                                device: d,
                                acked_before,
                                seen: points.iter().map(|(t, _)| *t).collect(),
                                via: addr.clone(),
                                began_ms,
                                ended_ms: started.elapsed().as_millis() as u64,
                            }),
                            Err(_) => history.lock().unwrap().reads_failed += 1,
                        },
                    }
                    madsim::time::sleep(Duration::from_millis(200)).await;
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    }
}

impl Default for Workload {
    fn default() -> Self {
        Self::new()
    }
}
