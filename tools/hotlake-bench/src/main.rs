//! `hotlake-bench`: load generators that print throughput and latency figures.
//!
//! ```text
//! hotlake-bench ingest --http 127.0.0.1:7181 --writers 8 --batch-lines 5000 --batches 200
//! hotlake-bench ingest --http 127.0.0.1:7181,127.0.0.1:7182 --rate 50      # paced, for latency
//! hotlake-bench devices --http A --duration-s 60 --check                    # many devices, mixed types, overload
//! hotlake-bench failover --http A,B,C --pids 1=PID,2=PID,3=PID             # kill leaders, time recovery
//! hotlake-bench move --http A --node 4                                     # time replica moves to node 4
//! hotlake-bench client --http A,B,C --grpc A,B,C                           # hotlake-client vs line protocol
//! hotlake-bench compare [--quick]                                          # against InfluxDB and VictoriaMetrics
//! ```
//!
//! Data is TSBS-IoT-shaped (see `hotlake-tsbs`) or, for `devices`, a fleet with mixed field types;
//! it is generated before the clock starts so
//! that only the server is measured.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use hotlake_tsbs::{TsbsConfig, TsbsGenerator};

mod compare;
mod devices;
mod fanout;
mod token;

/// Load generators for Hotlake.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Token sent with every request of `ingest`, `devices`, `failover`, `move` and `client`
    /// (a cluster created with authentication on refuses requests without one; `compare` uses
    /// the token of the nodes it starts).
    #[arg(long, global = true, env = "HOTLAKE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Hotlake side by side with InfluxDB 1.x and VictoriaMetrics on this machine: the same
    /// TSBS-IoT data loaded into each system alone (values/s, rows/s, batch latency, CPU, peak
    /// RSS, bytes on disk per value), then the twelve TSBS IoT query types against each, with
    /// every answer cross-checked against Hotlake's. Prints a table of ratios and writes JSON.
    ///
    /// Example: hotlake-bench compare --quick --json target/bench-compare.json
    Compare(compare::Args),
    /// Write TSBS-IoT line protocol over HTTP with concurrent writers and report values/s.
    ///
    /// Example: hotlake-bench ingest --writers 8 --batch-lines 5000 --batches 200
    Ingest {
        /// HTTP addresses of the nodes to write to, comma-separated; writers use them in turn.
        #[arg(long, default_value = "127.0.0.1:7181", value_delimiter = ',')]
        http: Vec<String>,
        /// Batches per second across all writers; 0 sends as fast as acknowledgements come.
        #[arg(long, default_value_t = 0.0)]
        rate: f64,
        /// Tenant (database) to write into.
        #[arg(long, default_value = "bench")]
        db: String,
        /// Concurrent writers.
        #[arg(long, default_value_t = 8)]
        writers: usize,
        /// Lines per request.
        #[arg(long, default_value_t = 5000)]
        batch_lines: usize,
        /// Requests in total.
        #[arg(long, default_value_t = 200)]
        batches: usize,
        /// Trucks (each gives two series: readings and diagnostics).
        #[arg(long, default_value_t = 1000)]
        trucks: usize,
        /// Generator seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// The many-device load: a fleet of devices with six fields of mixed types, about 1%
    /// duplicate and 3% late lines, in large batches from concurrent writers, for a count of
    /// batches or a time; prints acknowledged values/s, refusals (429/503) and how fast they
    /// came, and with --check reads every acknowledged point back.
    ///
    /// Example: hotlake-bench devices --http 127.0.0.1:7181 --duration-s 60 --check
    Devices(devices::Args),
    /// Kill the node leading the most shards while writing, and time until writes are
    /// acknowledged again; then restart nothing (the caller restarts the node).
    ///
    /// Example: hotlake-bench failover --http 127.0.0.1:7181,127.0.0.1:7182,127.0.0.1:7183 --pids 1=4711,2=4712,3=4713
    Failover {
        /// HTTP addresses of every node, comma-separated.
        #[arg(long, value_delimiter = ',')]
        http: Vec<String>,
        /// `node_id=pid` of every node, comma-separated.
        #[arg(long, value_delimiter = ',')]
        pids: Vec<String>,
        /// Tenant (database) to write into.
        #[arg(long, default_value = "bench")]
        db: String,
    },
    /// Write the same TSBS-IoT rows two ways, alternating twice: as line protocol over HTTP
    /// (batches spread over the nodes, which route them) and through `hotlake-client` (gRPC,
    /// split by shard and sent to the leaders). Each way writes its own tenant.
    ///
    /// Example: hotlake-bench client --http 127.0.0.1:7181,127.0.0.1:7182 --grpc 127.0.0.1:7101,127.0.0.1:7102
    Client {
        /// HTTP addresses of the nodes, comma-separated.
        #[arg(long, value_delimiter = ',')]
        http: Vec<String>,
        /// gRPC addresses (seeds for the client), comma-separated.
        #[arg(long, value_delimiter = ',')]
        grpc: Vec<String>,
        /// Concurrent writers on each side.
        #[arg(long, default_value_t = 8)]
        writers: usize,
        /// Rows (points) per batch.
        #[arg(long, default_value_t = 5000)]
        batch_rows: usize,
        /// Batches per round.
        #[arg(long, default_value_t = 100)]
        batches: usize,
        /// Trucks.
        #[arg(long, default_value_t = 1000)]
        trucks: usize,
        /// Generator seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Subscriptions under load: points/s delivered to 1, 4 and 16 subscribers of the whole
    /// stream, the delay from a write's acknowledgement to its delivery (p50/p99), and ingest
    /// with one subscriber that reads nothing against ingest alone, then its catch-up rate.
    ///
    /// Example: hotlake-bench fanout --http 127.0.0.1:7181 --grpc 127.0.0.1:7101 --subscribers 1,4,16
    Fanout(fanout::FanoutArgs),
    /// Watch replicas move onto a node that just joined and print how long each shard's move
    /// took (placement change → the new replica is a voter).
    ///
    /// Example: hotlake-bench move --http 127.0.0.1:7181 --node 4
    Move {
        /// HTTP address of any member.
        #[arg(long, default_value = "127.0.0.1:7181")]
        http: String,
        /// The new node's id.
        #[arg(long)]
        node: u64,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout_s: u64,
    },
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

#[allow(clippy::too_many_arguments)]
fn ingest(
    http: &[String],
    rate: f64,
    db: &str,
    writers: usize,
    batch_lines: usize,
    batches: usize,
    trucks: usize,
    seed: u64,
) -> anyhow::Result<()> {
    anyhow::ensure!(writers > 0 && batch_lines > 0 && batches > 0 && trucks > 0, "every count must be positive");
    eprintln!("generating {batches} batches of {batch_lines} lines ({trucks} trucks, seed {seed})...");
    let mut generator = TsbsGenerator::new(TsbsConfig { trucks, seed, ..Default::default() });
    let mut pending = String::new();
    let mut bodies: Vec<(String, usize)> = Vec::with_capacity(batches);
    let mut values_total = 0usize;
    let mut lines_buf: Vec<(String, usize)> = Vec::new();
    while bodies.len() < batches {
        if lines_buf.is_empty() {
            pending.clear();
            generator.fill_lines(batch_lines.max(2 * trucks), &mut pending);
            // Split into single lines with their value counts so batches are exact.
            lines_buf = pending
                .lines()
                .map(|l| {
                    let fields = l.split(' ').nth(1).map(|f| f.split(',').count()).unwrap_or(0);
                    (format!("{l}\n"), fields)
                })
                .rev()
                .collect();
        }
        let mut body = String::with_capacity(batch_lines * 256);
        let mut values = 0;
        for _ in 0..batch_lines {
            let Some((line, v)) = lines_buf.pop() else { break };
            body.push_str(&line);
            values += v;
        }
        values_total += values;
        bodies.push((body, values));
    }
    let bodies: Arc<Vec<String>> = Arc::new(bodies.into_iter().map(|(b, _)| b).collect());
    anyhow::ensure!(!http.is_empty(), "give at least one --http address");
    anyhow::ensure!(rate >= 0.0 && rate.is_finite(), "--rate must be a non-negative number");
    let urls: Arc<Vec<String>> = Arc::new(http.iter().map(|h| format!("http://{h}/write?db={db}")).collect());
    let client = token::http_client(Duration::from_secs(120))?;
    // Fail early with a clear message if a node is not there.
    for h in http {
        client.get(format!("http://{h}/health")).send().with_context(|| format!("node at {h} is not reachable"))?;
    }
    let (secs, mut lat) = post_all(&client, bodies, urls, writers, rate)?;
    lat.sort();
    let lines = batches * batch_lines;
    let pacing = if rate > 0.0 { format!(", paced at {rate} batches/s") } else { String::new() };
    println!(
        "ingest: {writers} writers, {batches} batches x {batch_lines} lines, {trucks} trucks, {} node(s){pacing}",
        http.len()
    );
    println!("  elapsed          {secs:.2} s");
    println!("  batches/s        {:.1}", batches as f64 / secs);
    println!("  lines/s          {:.0}", lines as f64 / secs);
    println!("  field values/s   {:.0}", values_total as f64 / secs);
    println!(
        "  batch latency    p50 {:.1} ms, p99 {:.1} ms",
        percentile(&lat, 0.5).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3
    );
    Ok(())
}

/// Posts every body with `writers` threads (batch i to `urls[i % len]`, paced at `rate`
/// batches/s when positive); returns the elapsed seconds and each batch's latency.
fn post_all(
    client: &reqwest::blocking::Client,
    bodies: Arc<Vec<String>>,
    urls: Arc<Vec<String>>,
    writers: usize,
    rate: f64,
) -> anyhow::Result<(f64, Vec<Duration>)> {
    let (secs, acks) = post_all_timed(client, bodies, urls, writers, rate)?;
    Ok((secs, acks.into_iter().map(|(_, _, latency)| latency).collect()))
}

/// One acknowledged batch: its index, when the acknowledgement came, and its latency.
type Acked = (usize, Instant, Duration);

/// [`post_all`], answering every batch's [`Acked`].
fn post_all_timed(
    client: &reqwest::blocking::Client,
    bodies: Arc<Vec<String>>,
    urls: Arc<Vec<String>>,
    writers: usize,
    rate: f64,
) -> anyhow::Result<(f64, Vec<Acked>)> {
    let next = Arc::new(AtomicUsize::new(0));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(bodies.len())));
    let started = Instant::now();
    let handles: Vec<_> = (0..writers)
        .map(|_| {
            let (bodies, next, latencies, urls, client) =
                (bodies.clone(), next.clone(), latencies.clone(), urls.clone(), client.clone());
            std::thread::spawn(move || -> anyhow::Result<()> {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(body) = bodies.get(i) else { return Ok(()) };
                    if rate > 0.0 {
                        // Batch i is due at i / rate seconds: a fixed schedule, so latency is
                        // measured at the offered load, not at whatever the server sustains.
                        let due = started + Duration::from_secs_f64(i as f64 / rate);
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                    }
                    let t = Instant::now();
                    let resp = client.post(&urls[i % urls.len()]).body(body.clone()).send()?;
                    let status = resp.status();
                    if !status.is_success() {
                        anyhow::bail!("batch {i} failed with {status}: {}", resp.text().unwrap_or_default());
                    }
                    latencies.lock().unwrap_or_else(|p| p.into_inner()).push((i, Instant::now(), t.elapsed()));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().map_err(|_| anyhow::anyhow!("writer thread panicked"))??;
    }
    let secs = started.elapsed().as_secs_f64();
    let lat = latencies.lock().unwrap_or_else(|p| p.into_inner()).clone();
    Ok((secs, lat))
}

/// One batch in both forms.
struct DualBatch {
    line_protocol: String,
    series: Vec<hotlake_client::proto::SeriesPoints>,
}

/// Writes every batch through `hotlake-client` with `writers` tasks; returns the elapsed
/// seconds and each batch's latency.
fn write_with_client(
    grpc: &[String],
    tenant: &str,
    batches: &Arc<Vec<DualBatch>>,
    writers: usize,
) -> anyhow::Result<(f64, Vec<Duration>)> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let client = token::grpc_with(grpc.to_vec(), token::get()).connect().await?;
        let next = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let tasks: Vec<_> = (0..writers)
            .map(|_| {
                let (client, next, batches, tenant) =
                    (client.clone(), next.clone(), batches.clone(), tenant.to_string());
                tokio::spawn(async move {
                    let mut lat = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(b) = batches.get(i) else { return Ok::<_, hotlake_client::ClientError>(lat) };
                        let t = Instant::now();
                        client.write(&tenant, b.series.clone()).await?;
                        lat.push(t.elapsed());
                    }
                })
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await??);
        }
        Ok((started.elapsed().as_secs_f64(), all))
    })
}

fn client_vs_http(
    http: &[String],
    grpc: &[String],
    writers: usize,
    batch_rows: usize,
    batches: usize,
    trucks: usize,
    seed: u64,
) -> anyhow::Result<()> {
    anyhow::ensure!(!http.is_empty() && !grpc.is_empty(), "give --http and --grpc addresses");
    anyhow::ensure!(writers > 0 && batch_rows > 0 && batches > 0 && trucks > 0, "every count must be positive");
    eprintln!("generating {batches} batches of {batch_rows} rows ({trucks} trucks, seed {seed})...");
    let mut generator = TsbsGenerator::new(TsbsConfig { trucks, seed, ..Default::default() });
    let mut rows = Vec::new();
    let mut dual = Vec::with_capacity(batches);
    let mut values = 0usize;
    while dual.len() < batches {
        while rows.len() < batch_rows {
            rows.extend(generator.next_epoch());
        }
        let batch: Vec<_> = rows.drain(..batch_rows).collect();
        let mut line_protocol = String::with_capacity(batch_rows * 256);
        for r in &batch {
            r.write_line(&mut line_protocol);
            values += r.fields.len();
        }
        dual.push(DualBatch { line_protocol, series: hotlake_tsbs::rows_to_series(&batch) });
    }
    let dual = Arc::new(dual);
    let http_client = token::http_client(Duration::from_secs(120))?;
    let bodies: Arc<Vec<String>> = Arc::new(dual.iter().map(|b| b.line_protocol.clone()).collect());
    println!("client vs line protocol: {writers} writers each, {batches} batches x {batch_rows} rows, {trucks} trucks");
    let report = |name: &str, secs: f64, lat: &mut Vec<Duration>| {
        lat.sort();
        println!(
            "  {name:<28} {:>10.0} values/s  {:>9.0} rows/s  p50 {:>6.1} ms  p99 {:>6.1} ms",
            values as f64 / secs,
            (batches * batch_rows) as f64 / secs,
            percentile(lat, 0.5).as_secs_f64() * 1e3,
            percentile(lat, 0.99).as_secs_f64() * 1e3
        );
        values as f64 / secs
    };
    let mut ratios = Vec::new();
    for round in 1..=2 {
        let urls: Arc<Vec<String>> =
            Arc::new(http.iter().map(|h| format!("http://{h}/write?db=bench_http_{round}")).collect());
        let (secs, mut lat) = post_all(&http_client, bodies.clone(), urls, writers, 0.0)?;
        let lp = report(&format!("round {round}: HTTP line protocol"), secs, &mut lat);
        let (secs, mut lat) = write_with_client(grpc, &format!("bench_grpc_{round}"), &dual, writers)?;
        let cl = report(&format!("round {round}: hotlake-client"), secs, &mut lat);
        ratios.push(cl / lp);
    }
    println!("  client / line protocol: {}", ratios.iter().map(|r| format!("{r:.2}x")).collect::<Vec<_>>().join(", "));
    Ok(())
}

fn get_json(client: &reqwest::blocking::Client, url: &str) -> anyhow::Result<serde_json::Value> {
    let resp = client.get(url).send().with_context(|| format!("GET {url}"))?;
    anyhow::ensure!(resp.status().is_success(), "GET {url}: {}", resp.status());
    Ok(resp.json()?)
}

/// The node leading the most shards, per `GET /api/v1/cluster`.
fn busiest_leader(status: &serde_json::Value) -> Option<u64> {
    let mut best: Option<(usize, u64)> = None;
    for m in status["members"].as_array()? {
        let Some(replicas) = m["status"]["replicas"].as_array() else { continue };
        let leads = replicas.iter().filter(|r| r["role"] == "leader").count();
        let id = m["info"]["id"].as_u64()?;
        if best.is_none_or(|(l, _)| leads > l) {
            best = Some((leads, id));
        }
    }
    best.map(|(_, id)| id)
}

fn failover(http: &[String], pids: &[String], db: &str) -> anyhow::Result<()> {
    let pids: std::collections::BTreeMap<u64, u32> = pids
        .iter()
        .map(|p| {
            let (id, pid) = p.split_once('=').with_context(|| format!("--pids entry {p:?} is not node=pid"))?;
            Ok((id.parse()?, pid.parse()?))
        })
        .collect::<anyhow::Result<_>>()?;
    let client = token::http_client(Duration::from_secs(60))?;
    let status = get_json(&client, &format!("http://{}/api/v1/cluster", http[0]))?;
    let victim = busiest_leader(&status).context("no leader found")?;
    let victim_http = status["members"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["info"]["id"] == victim))
        .and_then(|m| m["info"]["http_addr"].as_str())
        .context("victim not in the map")?
        .to_string();
    let survivors: Vec<&String> = http.iter().filter(|h| **h != victim_http).collect();
    anyhow::ensure!(!survivors.is_empty(), "no node would survive");
    let pid = *pids.get(&victim).with_context(|| format!("no pid given for node {victim}"))?;
    // One line per device on 256 devices: every batch touches (nearly) every shard.
    let body: String = (0..256)
        .map(|d| {
            format!(
                "failover,device_id=dev{d} v={d}i
"
            )
        })
        .collect();
    let url = |h: &str| format!("http://{h}/write?db={db}");
    for _ in 0..20 {
        let r = client.post(url(survivors[0])).body(body.clone()).send()?;
        anyhow::ensure!(r.status().is_success(), "warm-up write failed: {}", r.status());
    }
    let killed = Instant::now();
    let ok = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status()?;
    anyhow::ensure!(ok.success(), "kill -9 {pid} failed");
    let mut attempts = 0;
    loop {
        attempts += 1;
        let r = client.post(url(survivors[attempts % survivors.len()])).body(body.clone()).send();
        if matches!(&r, Ok(resp) if resp.status().is_success()) {
            break;
        }
        anyhow::ensure!(killed.elapsed() < Duration::from_secs(60), "writes did not recover within 60 s");
    }
    println!("failover: killed node {victim} (pid {pid}), the leader of the most shards");
    println!(
        "  writes touching every shard acknowledged again after {:.0} ms ({attempts} attempts)",
        killed.elapsed().as_secs_f64() * 1e3
    );
    Ok(())
}

fn watch_move(http: &str, node: u64, timeout_s: u64) -> anyhow::Result<()> {
    let client = token::http_client(Duration::from_secs(10))?;
    let started = Instant::now();
    let mut placed_at: std::collections::BTreeMap<u64, Instant> = Default::default();
    let mut done_at: std::collections::BTreeMap<u64, Instant> = Default::default();
    loop {
        anyhow::ensure!(started.elapsed() < Duration::from_secs(timeout_s), "moves did not finish in {timeout_s} s");
        let status = get_json(&client, &format!("http://{http}/api/v1/cluster"))?;
        let now = Instant::now();
        let shards = status["map"]["shards"].as_array().cloned().unwrap_or_default();
        for (i, p) in shards.iter().enumerate() {
            if p["replicas"].as_array().is_some_and(|r| r.contains(&serde_json::json!(node))) {
                placed_at.entry(i as u64).or_insert(now);
            }
        }
        let replicas = status["members"]
            .as_array()
            .and_then(|m| m.iter().find(|m| m["info"]["id"] == node))
            .and_then(|m| m["status"]["replicas"].as_array().cloned())
            .unwrap_or_default();
        for r in &replicas {
            let shard = r["shard"].as_u64().unwrap_or(u64::MAX);
            let voter = (r["role"] == "follower" || r["role"] == "leader") && r["joint"] == false;
            let placed = shards.get(shard as usize).map(|p| &p["replicas"]);
            if voter && placed == Some(&r["voters"]) && placed_at.contains_key(&shard) {
                done_at.entry(shard).or_insert(now);
            }
        }
        // Done when the new node holds its balanced share (replicas ÷ members, rounded down)
        // and every move onto it has finished.
        let members = status["members"].as_array().map(|m| m.len()).unwrap_or(1).max(1);
        let replicas_total: usize = shards.iter().map(|p| p["replicas"].as_array().map(|r| r.len()).unwrap_or(0)).sum();
        let share = replicas_total / members;
        let on_node = shards
            .iter()
            .filter(|p| p["replicas"].as_array().is_some_and(|r| r.contains(&serde_json::json!(node))))
            .count();
        let settled = on_node >= share.max(1) && placed_at.keys().all(|s| done_at.contains_key(s));
        if settled {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut took: Vec<Duration> = placed_at.iter().map(|(s, t)| done_at[s].duration_since(*t)).collect();
    took.sort();
    println!("move: {} shards moved onto node {node} in {:.1} s", took.len(), started.elapsed().as_secs_f64());
    println!(
        "  per shard (placement change → voter): p50 {:.0} ms, max {:.0} ms",
        percentile(&took, 0.5).as_secs_f64() * 1e3,
        took.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    token::set(cli.token);
    match cli.command {
        Command::Compare(args) => compare::run(args),
        Command::Ingest { http, rate, db, writers, batch_lines, batches, trucks, seed } => {
            ingest(&http, rate, &db, writers, batch_lines, batches, trucks, seed)
        }
        Command::Devices(args) => devices::run(&args),
        Command::Fanout(args) => fanout::run(&args),
        Command::Failover { http, pids, db } => failover(&http, &pids, &db),
        Command::Move { http, node, timeout_s } => watch_move(&http, node, timeout_s),
        Command::Client { http, grpc, writers, batch_rows, batches, trucks, seed } => {
            client_vs_http(&http, &grpc, writers, batch_rows, batches, trucks, seed)
        }
    }
}
