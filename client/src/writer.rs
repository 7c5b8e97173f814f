//! Batching writes with bounded memory: points are buffered per writer, sent in batches by
//! size or after a linger time, with a fixed number of batches in flight.
//!
//! Memory: every buffered or in-flight series holds its encoded size from a byte budget
//! ([`BatchConfig::buffer_bytes_max`]); a write that does not fit waits until a batch is
//! acknowledged ([`WhenFull::Wait`]) or fails with `ClientError::BufferFull`
//! ([`WhenFull::Error`]). Nothing grows without bound.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hotlake_proto::v1 as pb;
use prost::Message;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use crate::{Client, ClientError};

/// What a write into a full buffer does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhenFull {
    /// Wait until there is room (backpressure).
    Wait,
    /// Fail at once with `ClientError::BufferFull`.
    Error,
}

/// Settings of a [`BatchWriter`].
#[derive(Clone, Debug)]
pub struct BatchConfig {
    /// A batch is sent once it holds this many points.
    pub batch_points_max: usize,
    /// ... or this many bytes (encoded).
    pub batch_bytes_max: usize,
    /// ... or when its first point has waited this long.
    pub linger: Duration,
    /// Bytes buffered and in flight, at most.
    pub buffer_bytes_max: usize,
    /// Batches in flight at once.
    pub in_flight_max: usize,
    /// What a write into a full buffer does.
    pub when_full: WhenFull,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            batch_points_max: 5_000,
            batch_bytes_max: 1 << 20,
            linger: Duration::from_millis(20),
            buffer_bytes_max: 64 << 20,
            in_flight_max: 4,
            when_full: WhenFull::Wait,
        }
    }
}

/// Counters of a [`BatchWriter`] since it started.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BatchStats {
    /// Points acknowledged.
    pub points_written: u64,
    /// Batches acknowledged.
    pub batches_written: u64,
    /// Batches that failed after their retries (their points may or may not be stored).
    pub batches_failed: u64,
    /// Points in failed batches.
    pub points_failed: u64,
}

enum Msg {
    Series(pb::SeriesPoints, OwnedSemaphorePermit),
    Flush(oneshot::Sender<()>),
}

struct Shared {
    stats: BatchStats,
    /// Errors of failed batches not yet reported by `flush`.
    errors: Vec<ClientError>,
}

/// Buffers series of one tenant and writes them in batches through a [`Client`] (which splits
/// each batch by shard and retries it). Create one with [`Client::batch_writer`].
pub struct BatchWriter {
    tx: mpsc::UnboundedSender<Msg>,
    budget: Arc<Semaphore>,
    config: BatchConfig,
    shared: Arc<Mutex<Shared>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Client {
    /// A batching writer for `tenant`.
    pub fn batch_writer(&self, tenant: &str, config: BatchConfig) -> BatchWriter {
        BatchWriter::start(self.clone(), tenant.to_string(), config)
    }
}

/// Bytes a series holds from the budget (its encoded size, at least 1).
fn cost(series: &pb::SeriesPoints, budget_max: usize) -> u32 {
    series.encoded_len().clamp(1, budget_max).min(u32::MAX as usize) as u32
}

impl BatchWriter {
    fn start(client: Client, tenant: String, config: BatchConfig) -> BatchWriter {
        let budget = Arc::new(Semaphore::new(config.buffer_bytes_max.max(1)));
        let shared = Arc::new(Mutex::new(Shared { stats: BatchStats::default(), errors: Vec::new() }));
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(client, tenant, config.clone(), rx, shared.clone()));
        BatchWriter { tx, budget, config, shared, task: Some(task) }
    }

    /// Queues one series' points. Waits for room when the buffer is full (or fails, with
    /// [`WhenFull::Error`]). Returns once queued, not once written: [`BatchWriter::flush`]
    /// waits for the writes and reports their errors.
    pub async fn write(&self, series: pb::SeriesPoints) -> Result<(), ClientError> {
        let max = self.config.buffer_bytes_max.max(1);
        let bytes = cost(&series, max);
        let permit = match self.config.when_full {
            WhenFull::Wait => self.budget.clone().acquire_many_owned(bytes).await.map_err(|_| ClientError::Closed)?,
            WhenFull::Error => self.budget.clone().try_acquire_many_owned(bytes).map_err(|_| {
                ClientError::BufferFull { buffered_bytes: max - self.budget.available_permits(), limit_bytes: max }
            })?,
        };
        self.tx.send(Msg::Series(series, permit)).map_err(|_| ClientError::Closed)
    }

    /// Sends everything buffered, waits until every batch is acknowledged or has failed, and
    /// returns the first error of a failed batch since the last flush.
    pub async fn flush(&self) -> Result<BatchStats, ClientError> {
        let (done, wait) = oneshot::channel();
        self.tx.send(Msg::Flush(done)).map_err(|_| ClientError::Closed)?;
        wait.await.map_err(|_| ClientError::Closed)?;
        let mut s = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        let first = s.errors.drain(..).next();
        match first {
            Some(e) => Err(e),
            None => Ok(s.stats.clone()),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> BatchStats {
        self.shared.lock().unwrap_or_else(|p| p.into_inner()).stats.clone()
    }

    /// Bytes buffered or in flight.
    pub fn buffered_bytes(&self) -> usize {
        self.config.buffer_bytes_max.max(1) - self.budget.available_permits()
    }

    /// Flushes and stops the writer.
    pub async fn close(mut self) -> Result<BatchStats, ClientError> {
        let result = self.flush().await;
        if let Some(task) = self.task.take() {
            task.abort();
        }
        result
    }
}

impl Drop for BatchWriter {
    fn drop(&mut self) {
        // Dropping without `close` abandons what was not flushed, like dropping a channel.
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// One batch being filled.
#[derive(Default)]
struct Batch {
    series: Vec<pb::SeriesPoints>,
    permits: Vec<OwnedSemaphorePermit>,
    points: usize,
    bytes: usize,
}

async fn run(
    client: Client,
    tenant: String,
    config: BatchConfig,
    mut rx: mpsc::UnboundedReceiver<Msg>,
    shared: Arc<Mutex<Shared>>,
) {
    let in_flight = Arc::new(Semaphore::new(config.in_flight_max.max(1)));
    let mut batch = Batch::default();
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        let msg = match deadline {
            Some(d) => match tokio::time::timeout_at(d, rx.recv()).await {
                Ok(m) => m,
                Err(_) => {
                    send(&client, &tenant, std::mem::take(&mut batch), &in_flight, &shared).await;
                    deadline = None;
                    continue;
                }
            },
            None => rx.recv().await,
        };
        match msg {
            Some(Msg::Series(s, permit)) => {
                batch.points += s.timestamps_ns.len();
                batch.bytes += permit.num_permits();
                batch.series.push(s);
                batch.permits.push(permit);
                deadline.get_or_insert_with(|| tokio::time::Instant::now() + config.linger);
                if batch.points >= config.batch_points_max || batch.bytes >= config.batch_bytes_max {
                    send(&client, &tenant, std::mem::take(&mut batch), &in_flight, &shared).await;
                    deadline = None;
                }
            }
            Some(Msg::Flush(done)) => {
                send(&client, &tenant, std::mem::take(&mut batch), &in_flight, &shared).await;
                deadline = None;
                // Every batch in flight has ended once all in-flight slots are free again.
                let all = config.in_flight_max.max(1) as u32;
                if let Ok(slots) = in_flight.acquire_many(all).await {
                    drop(slots);
                }
                let _ = done.send(());
            }
            None => return,
        }
    }
}

/// Starts writing `batch` once an in-flight slot is free; its byte permits are released when
/// the write ends.
async fn send(client: &Client, tenant: &str, batch: Batch, in_flight: &Arc<Semaphore>, shared: &Arc<Mutex<Shared>>) {
    if batch.series.is_empty() {
        return;
    }
    let Ok(slot) = in_flight.clone().acquire_owned().await else { return };
    let (client, tenant, shared) = (client.clone(), tenant.to_string(), shared.clone());
    tokio::spawn(async move {
        let points = batch.points as u64;
        let result = client.write(&tenant, batch.series).await;
        let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(w) => {
                s.stats.points_written += w.points_written;
                s.stats.batches_written += 1;
            }
            Err(e) => {
                s.stats.batches_failed += 1;
                s.stats.points_failed += points;
                if s.errors.len() < 100 {
                    s.errors.push(e);
                }
            }
        }
        drop(batch.permits);
        drop(slot);
    });
}
