//! `hotlake-bench`: load generators that print throughput and latency figures.
//!
//! ```text
//! hotlake-bench ingest --http 127.0.0.1:7181 --writers 8 --batch-lines 5000 --batches 200
//! ```
//!
//! Data is TSBS-IoT-shaped (see `hotlake_client::tsbs`), generated before the clock starts so
//! that only the server is measured.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use hotlake_client::tsbs::{TsbsConfig, TsbsGenerator};

/// Load generators for Hotlake.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write TSBS-IoT line protocol over HTTP with concurrent writers and report values/s.
    ///
    /// Example: hotlake-bench ingest --writers 8 --batch-lines 5000 --batches 200
    Ingest {
        /// The node's HTTP address.
        #[arg(long, default_value = "127.0.0.1:7181")]
        http: String,
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
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn ingest(
    http: &str,
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
    let bodies = Arc::new(bodies);
    let next = Arc::new(AtomicUsize::new(0));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(batches)));
    let url = format!("http://{http}/write?db={db}");
    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(120)).build()?;
    // Fail early with a clear message if the node is not there.
    client.get(format!("http://{http}/health")).send().with_context(|| format!("node at {http} is not reachable"))?;
    let started = Instant::now();
    let handles: Vec<_> = (0..writers)
        .map(|_| {
            let (bodies, next, latencies, url, client) =
                (bodies.clone(), next.clone(), latencies.clone(), url.clone(), client.clone());
            std::thread::spawn(move || -> anyhow::Result<()> {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((body, _)) = bodies.get(i) else { return Ok(()) };
                    let t = Instant::now();
                    let resp = client.post(&url).body(body.clone()).send()?;
                    let status = resp.status();
                    if !status.is_success() {
                        anyhow::bail!("batch {i} failed with {status}: {}", resp.text().unwrap_or_default());
                    }
                    latencies.lock().unwrap_or_else(|p| p.into_inner()).push(t.elapsed());
                }
            })
        })
        .collect();
    for h in handles {
        h.join().map_err(|_| anyhow::anyhow!("writer thread panicked"))??;
    }
    let secs = started.elapsed().as_secs_f64();
    let mut lat = latencies.lock().unwrap_or_else(|p| p.into_inner()).clone();
    lat.sort();
    let lines = batches * batch_lines;
    println!("ingest: {writers} writers, {batches} batches x {batch_lines} lines, {trucks} trucks");
    println!("  elapsed          {secs:.2} s");
    println!("  lines/s          {:.0}", lines as f64 / secs);
    println!("  field values/s   {:.0}", values_total as f64 / secs);
    println!(
        "  batch latency    p50 {:.1} ms, p99 {:.1} ms",
        percentile(&lat, 0.5).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Ingest { http, db, writers, batch_lines, batches, trucks, seed } => {
            ingest(&http, &db, writers, batch_lines, batches, trucks, seed)
        }
    }
}
