//! The many-device load: a fleet of devices, one series each, six fields of mixed types (three
//! floats, an integer, a boolean and a short string), with about 1% duplicate lines and 3% late
//! ones, in large line-protocol batches, from concurrent writers that keep going for a set time.
//! It measures what a cluster does when pushed past what it can take: how many values it
//! acknowledges, how fast it answers the requests it refuses, and whether every acknowledged
//! point is readable afterwards.
//!
//! ```text
//!   DeviceFleet (seeded) ──round r──► batch (lines, values) ──writer──► POST /write
//!                                              204 → acknowledged (kept for the check)
//!                                              429/503 → refused (retried after Retry-After)
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::percentile;

/// Options of the many-device load.
#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// HTTP addresses of the nodes; every batch goes to the first unless --spread is given.
    #[arg(long, default_value = "127.0.0.1:7181", value_delimiter = ',')]
    pub http: Vec<String>,
    /// Send batch i to node i mod N instead of all to the first node.
    #[arg(long)]
    pub spread: bool,
    /// Tenant (database) to write into.
    #[arg(long, default_value = "devices")]
    pub db: String,
    /// Concurrent writers.
    #[arg(long, default_value_t = 8)]
    pub writers: usize,
    /// Devices in the fleet (one series each).
    #[arg(long, default_value_t = 20_000)]
    pub devices: usize,
    /// Lines per request.
    #[arg(long, default_value_t = 5000)]
    pub batch_lines: usize,
    /// Requests to send; with --duration-s, the load stops at whichever comes first.
    #[arg(long, default_value_t = 41)]
    pub batches: usize,
    /// Keep sending for this many seconds (0: send --batches and stop).
    #[arg(long, default_value_t = 0)]
    pub duration_s: u64,
    /// Seconds a refused or failed batch keeps being retried before it counts as lost to the
    /// writer (it was never acknowledged, so nothing is lost to the database).
    #[arg(long, default_value_t = 60)]
    pub retry_s: u64,
    /// Read every acknowledged point back afterwards (a `last` of each device) and fail if one
    /// is missing.
    #[arg(long)]
    pub check: bool,
    /// Generator seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// A fleet of devices whose readings are generated round by round.
struct DeviceFleet {
    devices: usize,
    rng: ChaCha8Rng,
    /// Next device to report, cycling through the fleet.
    cursor: usize,
    /// Time of the current round, nanoseconds.
    now_ns: i64,
    recent: Vec<(u32, i64, String)>,
}

const ROUND_NS: i64 = 10_000_000_000;
const ERROR_CODES: [&str; 4] = ["E_NONE", "E_DECODER", "E_SIGNAL", "E_POWER"];

impl DeviceFleet {
    fn new(devices: usize, seed: u64) -> Self {
        DeviceFleet {
            devices,
            rng: ChaCha8Rng::seed_from_u64(seed),
            cursor: 0,
            now_ns: 1_700_000_000_000_000_000,
            recent: Vec::new(),
        }
    }

    /// One batch of `lines` lines.
    fn batch(&mut self, lines: usize) -> Batch {
        let mut body = String::with_capacity(lines * 120);
        let mut values = 0;
        let mut newest: BTreeMap<u32, i64> = BTreeMap::new();
        for _ in 0..lines {
            let roll: f64 = self.rng.gen();
            if roll < 0.01 && !self.recent.is_empty() {
                // A duplicate of a recent line (an agent that resent).
                let (device, ts, line) = &self.recent[self.rng.gen_range(0..self.recent.len())];
                body.push_str(line);
                values += 6;
                let n = newest.entry(*device).or_insert(*ts);
                *n = (*n).max(*ts);
                continue;
            }
            let device = self.cursor;
            self.cursor += 1;
            if self.cursor == self.devices {
                self.cursor = 0;
                self.now_ns += ROUND_NS;
            }
            // A late line: a reading from a few rounds back.
            let late = if roll < 0.04 { ROUND_NS * self.rng.gen_range(1..=6) } else { 0 };
            let ts = self.now_ns - late + device as i64;
            let n = newest.entry(device as u32).or_insert(ts);
            *n = (*n).max(ts);
            let mut line = String::with_capacity(128);
            let _ = writeln!(
                line,
                "stb,device_id=d{device:07},region=r{} signal={:.2},temp={:.1},load={:.3},reboots={}i,online={},error=\"{}\" {ts}",
                device % 16,
                -40.0 - self.rng.gen::<f64>() * 50.0,
                30.0 + self.rng.gen::<f64>() * 40.0,
                self.rng.gen::<f64>(),
                self.rng.gen_range(0..5),
                self.rng.gen_bool(0.97),
                ERROR_CODES[self.rng.gen_range(0..ERROR_CODES.len())],
            );
            body.push_str(&line);
            values += 6;
            if self.recent.len() < 1024 {
                self.recent.push((device as u32, ts, line));
            } else {
                let i = self.rng.gen_range(0..self.recent.len());
                self.recent[i] = (device as u32, ts, line);
            }
        }
        Batch { body, values, newest: newest.into_iter().collect() }
    }
}

/// One request's body, with what it writes.
struct Batch {
    body: String,
    values: usize,
    /// Newest timestamp of each device in the batch.
    newest: Vec<(u32, i64)>,
}

/// What the writers saw.
#[derive(Default)]
struct Tally {
    acknowledged_batches: usize,
    acknowledged_values: usize,
    ack_latency: Vec<Duration>,
    refused: BTreeMap<u16, usize>,
    refusal_latency: Vec<Duration>,
    transport_errors: usize,
    given_up: usize,
    /// Newest acknowledged timestamp per device (`i64::MIN`: none).
    acknowledged_newest: Vec<i64>,
}

/// Runs the load and prints what it measured.
pub fn run(args: &Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.writers > 0 && args.batch_lines > 0 && args.devices > 0 && args.batches > 0,
        "--writers, --batch-lines, --devices and --batches must be positive"
    );
    anyhow::ensure!(!args.http.is_empty(), "give at least one --http address");
    let client = crate::token::http_client(Duration::from_secs(120))?;
    for h in &args.http {
        client.get(format!("http://{h}/health")).send().with_context(|| format!("node at {h} is not reachable"))?;
    }
    // Generated before the clock starts: enough distinct batches for the run, reused in order
    // (a later pass over the same batch rewrites the same points, as a resending agent would).
    let mut fleet = DeviceFleet::new(args.devices, args.seed);
    let batches: Arc<Vec<Batch>> = Arc::new((0..args.batches).map(|_| fleet.batch(args.batch_lines)).collect());
    let deadline = (args.duration_s > 0).then(|| Instant::now() + Duration::from_secs(args.duration_s));
    let tally = Arc::new(Mutex::new(Tally { acknowledged_newest: vec![i64::MIN; args.devices], ..Tally::default() }));
    let next = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let handles: Vec<_> = (0..args.writers)
        .map(|_| {
            let (client, batches, tally, next, stop, args) =
                (client.clone(), batches.clone(), tally.clone(), next.clone(), stop.clone(), args.clone());
            std::thread::spawn(move || writer(&client, &args, &batches, &tally, &next, &stop, deadline))
        })
        .collect();
    for h in handles {
        h.join().map_err(|_| anyhow::anyhow!("writer thread panicked"))?;
    }
    let secs = started.elapsed().as_secs_f64();
    let mut t = std::mem::take(&mut *tally.lock().unwrap_or_else(|p| p.into_inner()));
    t.ack_latency.sort();
    t.refusal_latency.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let target = if args.spread {
        format!("spread over {} node(s)", args.http.len())
    } else {
        format!("all to {}", args.http[0])
    };
    println!(
        "devices: {} writers, {} devices, {}-line batches, {target}",
        args.writers, args.devices, args.batch_lines
    );
    println!("  elapsed              {secs:.2} s");
    println!(
        "  acknowledged         {} batches, {:.0} values/s",
        t.acknowledged_batches,
        t.acknowledged_values as f64 / secs
    );
    println!(
        "  ack latency          p50 {:.1} ms, p99 {:.1} ms",
        ms(percentile(&t.ack_latency, 0.5)),
        ms(percentile(&t.ack_latency, 0.99))
    );
    let refused: usize = t.refused.values().sum();
    let attempts = t.acknowledged_batches + refused + t.transport_errors;
    println!(
        "  refused              {refused} of {attempts} requests ({:.1}%) {:?}",
        100.0 * refused as f64 / attempts.max(1) as f64,
        t.refused
    );
    println!(
        "  refusal latency      p50 {:.1} ms, p99 {:.1} ms",
        ms(percentile(&t.refusal_latency, 0.5)),
        ms(percentile(&t.refusal_latency, 0.99))
    );
    println!("  transport errors     {}", t.transport_errors);
    println!("  given up (unacked)   {}", t.given_up);
    if args.check {
        check_acknowledged(&client, args, &t.acknowledged_newest)?;
    }
    Ok(())
}

/// One writer: takes the next batch, sends it until it is acknowledged or its retry time runs
/// out, and records every answer.
fn writer(
    client: &reqwest::blocking::Client,
    args: &Args,
    batches: &[Batch],
    tally: &Mutex<Tally>,
    next: &AtomicUsize,
    stop: &AtomicBool,
    deadline: Option<Instant>,
) {
    let record = |f: &mut dyn FnMut(&mut Tally)| f(&mut tally.lock().unwrap_or_else(|p| p.into_inner()));
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let done = match deadline {
            Some(d) => Instant::now() >= d,
            None => i >= batches.len(),
        };
        if done || stop.load(Ordering::Relaxed) {
            return;
        }
        let batch = &batches[i % batches.len()];
        let url =
            format!("http://{}/write?db={}", args.http[if args.spread { i % args.http.len() } else { 0 }], args.db);
        let give_up = Instant::now() + Duration::from_secs(args.retry_s);
        loop {
            let sent = Instant::now();
            match client.post(&url).body(batch.body.clone()).send() {
                Ok(r) if r.status().is_success() => {
                    record(&mut |t| {
                        t.acknowledged_batches += 1;
                        t.acknowledged_values += batch.values;
                        t.ack_latency.push(sent.elapsed());
                        for &(device, ts) in &batch.newest {
                            let n = &mut t.acknowledged_newest[device as usize];
                            *n = (*n).max(ts);
                        }
                    });
                    break;
                }
                Ok(r) => {
                    let status = r.status().as_u16();
                    let retry_after = r
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<f64>().ok())
                        .map_or(Duration::from_millis(200), Duration::from_secs_f64);
                    record(&mut |t| {
                        *t.refused.entry(status).or_default() += 1;
                        t.refusal_latency.push(sent.elapsed());
                    });
                    if status == 400 || Instant::now() + retry_after > give_up {
                        record(&mut |t| t.given_up += 1);
                        break;
                    }
                    std::thread::sleep(retry_after.min(Duration::from_secs(5)));
                }
                Err(_) => {
                    record(&mut |t| t.transport_errors += 1);
                    if Instant::now() > give_up {
                        record(&mut |t| t.given_up += 1);
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
    }
}

/// Every acknowledged point is readable: each device's last value is at least as new as the
/// newest point of it that was acknowledged (newer points may come from batches sent but not
/// acknowledged, which are allowed to have been written).
fn check_acknowledged(client: &reqwest::blocking::Client, args: &Args, acknowledged: &[i64]) -> anyhow::Result<()> {
    let url = format!("http://{}/api/v1/last", args.http[0]);
    let body = serde_json::json!({ "tenant": args.db, "measurement": "stb", "fields": ["signal"] });
    let reply: serde_json::Value =
        client.post(&url).json(&body).send()?.error_for_status()?.json().context("read the last values")?;
    let mut visible = vec![i64::MIN; acknowledged.len()];
    for row in reply["rows"].as_array().context("no rows in the answer")? {
        let device = row["tags"]["device_id"].as_str().and_then(|d| d.strip_prefix('d')).and_then(|d| d.parse().ok());
        if let (Some(d), Some(ts)) = (device, row["values"]["signal"]["time"].as_i64()) {
            let d: usize = d;
            if d < visible.len() {
                visible[d] = ts;
            }
        }
    }
    let acked_devices = acknowledged.iter().filter(|t| **t != i64::MIN).count();
    let missing: Vec<usize> = (0..acknowledged.len()).filter(|&d| visible[d] < acknowledged[d]).collect();
    println!(
        "  read back            {} of {acked_devices} acknowledged devices up to date",
        acked_devices - missing.len()
    );
    anyhow::ensure!(
        missing.is_empty(),
        "{} devices lack acknowledged points, first d{:07}: newest visible {}, acknowledged {}",
        missing.len(),
        missing[0],
        visible[missing[0]],
        acknowledged[missing[0]]
    );
    Ok(())
}
