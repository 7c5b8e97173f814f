//! `hotlake-bench fanout`: subscriptions under load. For each subscriber count, that many
//! subscriptions of a fresh tenant follow line-protocol writes; prints points delivered per
//! second (all subscribers together), and the delay from a batch's acknowledgement to the moment
//! a subscriber holds all of it (p50/p99). Then ingest alone against ingest with one subscriber
//! that reads nothing, and how fast that subscriber catches up once it reads.
//!
//! Each batch is `batch_lines` points of `fan,device_id=dN v=<float>,b=<batch>i`: the `b` field
//! tells a subscriber which batch a point belongs to.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hotlake_client::proto::field_column::Values;
use hotlake_client::{SubscribeBuilder, SubscriptionMessage};

use crate::{percentile, post_all, post_all_timed, token};

/// What `fanout` is asked to do.
#[derive(clap::Args)]
pub struct FanoutArgs {
    /// HTTP address of the node written to.
    #[arg(long, default_value = "127.0.0.1:7181")]
    http: String,
    /// gRPC address the subscribers connect to.
    #[arg(long, default_value = "127.0.0.1:7101")]
    grpc: String,
    /// Subscriber counts to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
    subscribers: Vec<usize>,
    /// Concurrent writers.
    #[arg(long, default_value_t = 4)]
    writers: usize,
    /// Points per batch.
    #[arg(long, default_value_t = 5000)]
    batch_lines: usize,
    /// Batches per measurement.
    #[arg(long, default_value_t = 200)]
    batches: usize,
    /// Devices the points are spread over.
    #[arg(long, default_value_t = 1000)]
    devices: usize,
    /// Batches per second while latency is measured (0: as fast as acknowledgements come).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
}

/// Line-protocol bodies of `batches` batches.
fn bodies(a: &FanoutArgs) -> Arc<Vec<String>> {
    let t0: i64 = 1_700_000_000_000_000_000;
    Arc::new(
        (0..a.batches)
            .map(|b| {
                let mut s = String::with_capacity(a.batch_lines * 48);
                for i in 0..a.batch_lines {
                    let n = b * a.batch_lines + i;
                    s.push_str(&format!(
                        "fan,device_id=d{} v={}.25,b={b}i {}\n",
                        n % a.devices,
                        n % 977,
                        t0 + n as i64
                    ));
                }
                s
            })
            .collect(),
    )
}

/// Points per batch a subscriber holds, and when each batch became whole.
#[derive(Default)]
struct Received {
    per_batch: HashMap<i64, usize>,
    whole_at: HashMap<i64, Instant>,
    points: usize,
}

impl Received {
    fn take(&mut self, m: &SubscriptionMessage, batch_lines: usize) {
        for s in &m.series {
            for f in &s.fields {
                if let (true, Some(Values::I64(v))) = (f.name == "b", &f.values) {
                    for b in &v.values {
                        let n = self.per_batch.entry(*b).or_default();
                        *n += 1;
                        if *n == batch_lines {
                            self.whole_at.insert(*b, Instant::now());
                        }
                    }
                    self.points += v.values.len();
                }
            }
        }
    }
}

/// Starts `n` subscriptions of `tenant`, each filling its [`Received`]; returns once each has
/// its start cursor. With `stalled`, the first one reads nothing until the gate opens.
async fn subscribe(
    a: &FanoutArgs,
    tenant: &str,
    n: usize,
    stalled: Option<Arc<tokio::sync::Notify>>,
) -> anyhow::Result<Vec<Arc<Mutex<Received>>>> {
    let client = token::grpc_with(vec![a.grpc.clone()], token::get()).connect().await?;
    let mut out = Vec::new();
    for i in 0..n {
        let mut sub = client.subscribe(SubscribeBuilder::new(tenant).measurement("fan"));
        match tokio::time::timeout(Duration::from_secs(30), sub.recv()).await {
            Ok(Some(Ok(_))) => {}
            other => anyhow::bail!("subscription {i} did not start: {other:?}"),
        }
        let received = Arc::new(Mutex::new(Received::default()));
        let (r, lines, gate) = (received.clone(), a.batch_lines, stalled.clone().filter(|_| i == 0));
        tokio::spawn(async move {
            if let Some(g) = gate {
                g.notified().await;
            }
            while let Some(Ok(m)) = sub.recv().await {
                r.lock().unwrap_or_else(|p| p.into_inner()).take(&m, lines);
            }
        });
        out.push(received);
    }
    Ok(out)
}

/// Waits until every subscriber holds `points` points (or a minute passes); returns when the
/// last one got there.
async fn wait_delivered(subs: &[Arc<Mutex<Received>>], points: usize) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let least = subs.iter().map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).points).min().unwrap_or(points);
        if least >= points {
            return Ok(Instant::now());
        }
        anyhow::ensure!(Instant::now() < deadline, "subscribers got {least} of {points} points within a minute");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Writes every body from the blocking pool; returns the seconds it took.
async fn write_all(a: &FanoutArgs, tenant: &str, bodies: Arc<Vec<String>>, rate: f64) -> anyhow::Result<f64> {
    let client = token::http_client(Duration::from_secs(120))?;
    let urls = Arc::new(vec![format!("{}://{}/write?db={tenant}", token::scheme(), a.http)]);
    let writers = a.writers;
    let (secs, _) = tokio::task::spawn_blocking(move || post_all(&client, bodies, urls, writers, rate)).await??;
    Ok(secs)
}

/// Runs the whole measurement.
pub fn run(a: &FanoutArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.batches > 0 && a.batch_lines > 0 && a.writers > 0 && a.devices > 0, "counts must be positive");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let bodies = bodies(a);
        let points = a.batches * a.batch_lines;
        let run_id = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
        println!("fan-out: {} batches x {} points, {} writers, {} devices", a.batches, a.batch_lines, a.writers, a.devices);
        for &n in &a.subscribers {
            let tenant = format!("fanout_{run_id}_{n}");
            let subs = subscribe(a, &tenant, n, None).await?;
            let started = Instant::now();
            let acks = ack_times(a, &tenant, bodies.clone()).await?;
            let done = wait_delivered(&subs, points).await?;
            let secs = done.duration_since(started).as_secs_f64();
            let mut delays: Vec<Duration> = Vec::new();
            for s in &subs {
                let s = s.lock().unwrap_or_else(|p| p.into_inner());
                for (b, at) in &acks {
                    if let Some(whole) = s.whole_at.get(&(*b as i64)) {
                        delays.push(whole.saturating_duration_since(*at));
                    }
                }
            }
            delays.sort();
            println!(
                "  {n:>2} subscribers: {:>10.0} points/s delivered in all ({:>9.0} per subscriber); ack to delivery p50 {:>6.1} ms  p99 {:>6.1} ms",
                (points * n) as f64 / secs,
                points as f64 / secs,
                percentile(&delays, 0.5).as_secs_f64() * 1e3,
                percentile(&delays, 0.99).as_secs_f64() * 1e3,
            );
        }
        // Ingest alone, then with one subscriber that reads nothing until ingest is done.
        let alone = write_all(a, &format!("fanout_{run_id}_alone"), bodies.clone(), 0.0).await?;
        let gate = Arc::new(tokio::sync::Notify::new());
        let tenant = format!("fanout_{run_id}_stalled");
        let subs = subscribe(a, &tenant, 1, Some(gate.clone())).await?;
        let stalled = write_all(a, &tenant, bodies.clone(), 0.0).await?;
        let opened = Instant::now();
        gate.notify_one();
        let caught_up = wait_delivered(&subs, points).await?.duration_since(opened).as_secs_f64();
        println!(
            "  ingest alone {:>10.0} points/s; with a stalled subscriber {:>10.0} points/s ({:+.1}%); its catch-up {:>10.0} points/s ({:.1}x ingest)",
            points as f64 / alone,
            points as f64 / stalled,
            (alone / stalled - 1.0) * 100.0,
            points as f64 / caught_up,
            (points as f64 / caught_up) / (points as f64 / stalled),
        );
        Ok(())
    })
}

/// Writes every batch, recording when each was acknowledged.
async fn ack_times(a: &FanoutArgs, tenant: &str, bodies: Arc<Vec<String>>) -> anyhow::Result<Vec<(usize, Instant)>> {
    let client = token::http_client(Duration::from_secs(120))?;
    let urls = Arc::new(vec![format!("{}://{}/write?db={tenant}", token::scheme(), a.http)]);
    let (writers, rate) = (a.writers, a.rate);
    let (_, acks) = tokio::task::spawn_blocking(move || post_all_timed(&client, bodies, urls, writers, rate)).await??;
    Ok(acks.into_iter().map(|(i, at, _)| (i, at)).collect())
}
