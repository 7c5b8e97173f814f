//! Node metrics in Prometheus text format (`GET /metrics`).
//!
//! Plain atomics: recording is a relaxed add on the hot path, rendering walks a fixed list.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// A monotonically increasing counter.
#[derive(Default, Debug)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// Current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Upper bounds (seconds) of the latency histogram buckets.
const BUCKETS_SECONDS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// A latency histogram with fixed buckets.
#[derive(Default, Debug)]
pub struct Histogram {
    counts: [AtomicU64; 15],
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one observation in seconds.
    pub fn observe(&self, seconds: f64) {
        let i = BUCKETS_SECONDS.iter().position(|&b| seconds <= b).unwrap_or(BUCKETS_SECONDS.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, b) in BUCKETS_SECONDS.iter().enumerate() {
            cumulative += self.counts[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
        }
        cumulative += self.counts[BUCKETS_SECONDS.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {cumulative}");
    }
}

/// Every metric of a node.
#[derive(Default, Debug)]
pub struct Metrics {
    /// Points acknowledged to writers.
    pub points_written: Counter,
    /// Field values acknowledged to writers.
    pub values_written: Counter,
    /// Write batches acknowledged.
    pub batches_written: Counter,
    /// Points applied by shard state machines.
    pub points_applied: Counter,
    /// Memtable flushes completed.
    pub flushes: Counter,
    /// Flush duration.
    pub flush_seconds: Histogram,
    /// Query latency.
    pub query_seconds: Histogram,
    /// Write latency (request to acknowledgement).
    pub write_seconds: Histogram,
    /// Errors by kind.
    errors: Mutex<Vec<(String, u64)>>,
    /// Memtable bytes, refreshed by the flush scheduler.
    pub memtable_bytes: AtomicU64,
    /// Series on this node, refreshed by the flush scheduler.
    pub series: AtomicU64,
    /// Subscriptions open on this node.
    pub subscriptions: AtomicU64,
    /// Bytes of change-feed entries stored by this node's replicas, refreshed by the flush
    /// scheduler.
    pub feed_stored_bytes: AtomicU64,
    /// Points delivered to subscribers.
    pub feed_points_delivered: Counter,
    /// Bytes of shard snapshots received into stage spaces.
    pub snapshot_bytes_received: Counter,
    /// Shard snapshots received whole and handed to Raft to install.
    pub snapshots_received: Counter,
    /// Bytes of snapshots peers have taken from this node, copied from the transport when
    /// rendered.
    pub snapshot_bytes_sent: AtomicU64,
    /// Raft heartbeats sent to peers, copied from the transport when rendered.
    pub heartbeats_sent: AtomicU64,
    /// The requests that carried them (heartbeats bound for one peer go together).
    pub heartbeat_requests_sent: AtomicU64,
}

impl Metrics {
    /// Counts one error of `kind` (a stable snake_case name).
    pub fn error(&self, kind: &str) {
        let mut e = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        match e.iter_mut().find(|(k, _)| k == kind) {
            Some((_, n)) => *n += 1,
            None => e.push((kind.to_string(), 1)),
        }
    }

    /// Renders every metric in Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        let gauge = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        counter(&mut out, "hotlake_points_written_total", "Points acknowledged to writers.", self.points_written.get());
        counter(
            &mut out,
            "hotlake_values_written_total",
            "Field values acknowledged to writers.",
            self.values_written.get(),
        );
        counter(&mut out, "hotlake_batches_written_total", "Write batches acknowledged.", self.batches_written.get());
        counter(
            &mut out,
            "hotlake_points_applied_total",
            "Points applied by shard state machines.",
            self.points_applied.get(),
        );
        counter(&mut out, "hotlake_flushes_total", "Memtable flushes completed.", self.flushes.get());
        gauge(
            &mut out,
            "hotlake_memtable_bytes",
            "Bytes buffered in memtables.",
            self.memtable_bytes.load(Ordering::Relaxed),
        );
        gauge(&mut out, "hotlake_series", "Series on this node.", self.series.load(Ordering::Relaxed));
        gauge(
            &mut out,
            "hotlake_subscriptions",
            "Subscriptions open on this node.",
            self.subscriptions.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "hotlake_feed_stored_bytes",
            "Bytes of change-feed entries stored by this node's replicas.",
            self.feed_stored_bytes.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "hotlake_feed_points_delivered_total",
            "Points delivered to subscribers.",
            self.feed_points_delivered.get(),
        );
        counter(
            &mut out,
            "hotlake_snapshot_bytes_sent_total",
            "Bytes of snapshot streams peers took from this node (progress of replicas moving off it).",
            self.snapshot_bytes_sent.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "hotlake_raft_heartbeats_sent_total",
            "Raft heartbeats sent to peers, every group's.",
            self.heartbeats_sent.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "hotlake_raft_heartbeat_requests_total",
            "Requests that carried those heartbeats (the heartbeats bound for one peer go together).",
            self.heartbeat_requests_sent.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "hotlake_snapshot_bytes_received_total",
            "Bytes of shard snapshots received (progress of replicas moving onto this node).",
            self.snapshot_bytes_received.get(),
        );
        counter(
            &mut out,
            "hotlake_snapshots_received_total",
            "Shard snapshots received whole and installed or offered to Raft.",
            self.snapshots_received.get(),
        );
        self.flush_seconds.render("hotlake_flush_seconds", "Flush duration.", &mut out);
        self.write_seconds.render("hotlake_write_seconds", "Write latency from request to acknowledgement.", &mut out);
        self.query_seconds.render("hotlake_query_seconds", "Query latency.", &mut out);
        let _ = writeln!(out, "# HELP hotlake_errors_total Errors by kind.\n# TYPE hotlake_errors_total counter");
        for (kind, n) in self.errors.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = writeln!(out, "hotlake_errors_total{{kind=\"{kind}\"}} {n}");
        }
        out
    }
}

impl hotlake_raft::state_machine::ApplyObserver for Metrics {
    fn points_applied(&self, points: u64) {
        self.points_applied.add(points);
    }

    fn flushed(&self, seconds: f64) {
        self.flushes.inc();
        self.flush_seconds.observe(seconds);
    }
}
