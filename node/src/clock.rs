//! Time sources. Everything goes through tokio's clock so that the simulator controls it.

use hotlake_types::model::TimestampNs;

/// Measures elapsed time for metrics.
pub struct Stopwatch(tokio::time::Instant);

impl Stopwatch {
    /// Starts now.
    pub fn start() -> Self {
        Stopwatch(tokio::time::Instant::now())
    }

    /// Seconds since start.
    pub fn elapsed_secs(&self) -> f64 {
        self.0.elapsed().as_secs_f64()
    }
}

/// Wall-clock time in nanoseconds since the Unix epoch, for points written without a timestamp
/// and for retention cutoffs.
pub fn now_ns() -> TimestampNs {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    d.as_nanos().min(i64::MAX as u128) as i64
}
