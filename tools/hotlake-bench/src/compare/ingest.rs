//! Loading the data set into one system with concurrent writers: line protocol over HTTP (any
//! endpoint that speaks it) or Hotlake's gRPC API through `hotlake-client`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::dataset::Dataset;

/// What one load measured.
#[derive(Clone, Debug, serde::Serialize)]
pub struct IngestReport {
    /// Wall-clock seconds from the first request to the last acknowledgement.
    pub seconds: f64,
    /// Field values per second.
    pub values_per_s: f64,
    /// Rows (line-protocol points) per second.
    pub rows_per_s: f64,
    /// Median time to acknowledge a batch, milliseconds (retries included).
    pub batch_p50_ms: f64,
    /// 99th percentile of the same.
    pub batch_p99_ms: f64,
    /// Requests that failed with a retryable error and were sent again.
    pub retries: u64,
}

/// Attempts per batch before the load is declared failed.
const ATTEMPTS_MAX: u32 = 8;

fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e3
}

fn report(data: &Dataset, seconds: f64, mut latencies: Vec<Duration>, retries: u64) -> IngestReport {
    latencies.sort();
    IngestReport {
        seconds,
        values_per_s: data.values as f64 / seconds,
        rows_per_s: data.rows as f64 / seconds,
        batch_p50_ms: percentile_ms(&latencies, 0.5),
        batch_p99_ms: percentile_ms(&latencies, 0.99),
        retries,
    }
}

/// Posts every batch as line protocol with `writers` threads, writer `k` to `urls[k % n]`.
/// 5xx, 429 and connection errors are retried with a growing pause; any other refusal stops
/// the load.
/// `token` goes with every request as `Authorization: Token <token>`.
pub fn line_protocol(
    urls: &[String],
    token: Option<&str>,
    data: &Arc<Dataset>,
    writers: usize,
) -> anyhow::Result<IngestReport> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let threads: Vec<_> = (0..writers.max(1))
        .map(|k| {
            let (next, data, url) = (next.clone(), data.clone(), urls[k % urls.len()].clone());
            let token = token.map(str::to_string);
            std::thread::spawn(move || -> anyhow::Result<(Vec<Duration>, u64)> {
                let http = crate::token::http_client_with(Duration::from_secs(300), token.as_deref())?;
                let (mut latencies, mut retries) = (Vec::new(), 0u64);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(batch) = data.batches.get(i) else { return Ok((latencies, retries)) };
                    let t = Instant::now();
                    let mut attempt = 0;
                    loop {
                        attempt += 1;
                        let outcome = http.post(&url).body(batch.lines.clone()).send();
                        let retryable = match outcome {
                            Ok(r) if r.status().is_success() => break,
                            Ok(r) if r.status().is_server_error() || r.status().as_u16() == 429 => {
                                format!("{}: {}", r.status(), r.text().unwrap_or_default())
                            }
                            Ok(r) => bail!("{url} refused batch {i}: {}: {}", r.status(), r.text().unwrap_or_default()),
                            Err(e) => e.to_string(),
                        };
                        if attempt >= ATTEMPTS_MAX {
                            bail!("{url}: batch {i} failed {attempt} times, last: {retryable}");
                        }
                        retries += 1;
                        std::thread::sleep(Duration::from_millis(100 << attempt.min(5)));
                    }
                    latencies.push(t.elapsed());
                }
            })
        })
        .collect();
    let (mut latencies, mut retries) = (Vec::new(), 0);
    for t in threads {
        let (l, r) = t.join().map_err(|_| anyhow::anyhow!("a writer thread panicked"))??;
        latencies.extend(l);
        retries += r;
    }
    Ok(report(data, started.elapsed().as_secs_f64(), latencies, retries))
}

/// Writes every batch through `hotlake-client` (gRPC, split by shard, sent to the leaders)
/// with `writers` concurrent tasks. The client retries retryable errors itself.
pub fn grpc(
    seed: &str,
    token: Option<&str>,
    tenant: &str,
    data: &Arc<Dataset>,
    writers: usize,
) -> anyhow::Result<IngestReport> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let client =
            crate::token::grpc_with(vec![seed.to_string()], token).connect().await.context("connect over gRPC")?;
        let next = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let tasks: Vec<_> = (0..writers.max(1))
            .map(|_| {
                let (client, next, data, tenant) = (client.clone(), next.clone(), data.clone(), tenant.to_string());
                tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(batch) = data.batches.get(i) else { return Ok::<_, anyhow::Error>(latencies) };
                        let t = Instant::now();
                        client.write(&tenant, batch.series.clone()).await.with_context(|| format!("batch {i}"))?;
                        latencies.push(t.elapsed());
                    }
                })
            })
            .collect();
        let mut latencies = Vec::new();
        for t in tasks {
            latencies.extend(t.await??);
        }
        Ok(report(data, started.elapsed().as_secs_f64(), latencies, 0))
    })
}
