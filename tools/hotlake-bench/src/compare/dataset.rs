//! The data set every system loads: TSBS-IoT rows cut into batches, held both as line protocol
//! and as the gRPC API's columnar series, generated once before any clock starts.

use hotlake_client::proto::SeriesPoints;
use hotlake_tsbs::{rows_to_series, Disorder, Row, TsbsConfig, TsbsGenerator};

/// Parameters of the data set.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DatasetSpec {
    /// Trucks.
    pub trucks: usize,
    /// Hours of data.
    pub hours: u32,
    /// Generator seed.
    pub seed: u64,
    /// Rows per batch.
    pub batch_rows: usize,
    /// Whether the TSBS disorder (drops, late rows, null fields and tags) is applied.
    pub disorder: bool,
}

/// One batch in both encodings.
pub struct Batch {
    /// Line protocol, nanosecond timestamps; shared, so a request does not copy it.
    pub lines: bytes::Bytes,
    /// The same rows as columnar series.
    pub series: Vec<SeriesPoints>,
}

/// The generated data.
pub struct Dataset {
    /// What was generated.
    pub spec: DatasetSpec,
    /// The batches, in the order every system receives them.
    pub batches: Vec<Batch>,
    /// Rows (points of line protocol) in all batches.
    pub rows: u64,
    /// Field values in all batches.
    pub values: u64,
    /// Start of the data's time range (inclusive), nanoseconds.
    pub start_ns: i64,
    /// End of the data's time range (exclusive), nanoseconds.
    pub end_ns: i64,
}

/// 2016-01-01T00:00:00Z, where TSBS data sets start.
pub const START_S: i64 = 1_451_606_400;
/// Seconds between a truck's rows.
pub const INTERVAL_S: i64 = 10;

impl Dataset {
    /// Generates the data set. Deterministic in `spec`.
    pub fn generate(spec: DatasetSpec) -> Dataset {
        let disorder = if spec.disorder { Disorder::Tsbs } else { Disorder::None };
        let config =
            TsbsConfig { trucks: spec.trucks, seed: spec.seed, start_s: START_S, interval_s: INTERVAL_S, disorder };
        let epochs = i64::from(spec.hours) * 3600 / INTERVAL_S;
        let mut generator = TsbsGenerator::new(config);
        let mut pending: Vec<Row> = Vec::with_capacity(spec.batch_rows * 2);
        let mut batches = Vec::new();
        let (mut rows, mut values) = (0u64, 0u64);
        let cut = |chunk: &[Row], batches: &mut Vec<Batch>| {
            let mut lines = String::with_capacity(chunk.len() * 240);
            for row in chunk {
                row.write_line(&mut lines);
            }
            batches.push(Batch { lines: bytes::Bytes::from(lines), series: rows_to_series(chunk) });
        };
        let start_ns = START_S * 1_000_000_000;
        let end_ns = start_ns + epochs * INTERVAL_S * 1_000_000_000;
        while generator.epochs_generated() < epochs && spec.trucks > 0 {
            // Under disorder one call may run past the last epoch while rows are held back;
            // rows beyond the range are left out so every system holds exactly [start, end).
            for row in generator.next_epoch().into_iter().filter(|r| r.timestamp_ns < end_ns) {
                rows += 1;
                values += row.fields.len() as u64;
                pending.push(row);
            }
            while pending.len() >= spec.batch_rows {
                let rest = pending.split_off(spec.batch_rows);
                cut(&pending, &mut batches);
                pending = rest;
            }
        }
        if !pending.is_empty() {
            cut(&pending, &mut batches);
        }
        Dataset { spec, batches, rows, values, start_ns, end_ns }
    }

    /// Bytes of line protocol in all batches.
    pub fn line_bytes(&self) -> u64 {
        self.batches.iter().map(|b| b.lines.len() as u64).sum()
    }
}
