//! A shard's change feed: what each applied write entry wrote, addressed by its log index.
//!
//! ```text
//!  apply ──► active feed ──freeze──► frozen feed ──flush──► feed entries + a flush mark
//!            (in memory, beside                              (index space, same batch as the
//!             the active memtable)                            blocks and the flushed state)
//!  read(after) ──► stored entries (after, first in memory) ++ in-memory entries
//! ```
//!
//! Invariants:
//! - an entry holds exactly what apply accepted (rejected series and fields left out), so every
//!   replica's entry at an index is the same;
//! - entries are persisted in the batch of the flush that persists their effects, so after a
//!   restart the replayed log rebuilds exactly the in-memory part;
//! - `feed_start` is the first index this replica holds in full: trimming raises it (in memory
//!   before the deletes are written, so a reader never takes a trimmed range for an empty one),
//!   and a snapshot install sets it past the snapshot (feed entries travel in no snapshot);
//! - a read that could miss entries below `feed_start` fails with [`FeedError::Trimmed`]
//!   instead of returning less.

use std::collections::VecDeque;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::batch::{ColumnWrite, SeriesWrite, ShardWrite, Values};
use hotlake_storage::{keys, Space, StorageError, WriteBatch};
use hotlake_types::filter::FieldFilter;
use hotlake_types::model::{parse_series_key, FieldValue, TimestampNs};

/// One feed entry: the accepted part of the write applied at `index`.
#[derive(Clone, Debug, PartialEq)]
pub struct FeedEntry {
    /// Log index of the entry.
    pub index: u64,
    /// What it wrote.
    pub write: Arc<ShardWrite>,
}

/// How long and how much feed a replica keeps (per shard).
#[derive(Clone, Debug)]
pub struct FeedRetention {
    /// Flushed entries older than this are dropped.
    pub age_ms: u64,
    /// Flushed entries beyond this many bytes (oldest first) are dropped.
    pub bytes_max: u64,
}

impl Default for FeedRetention {
    fn default() -> Self {
        FeedRetention { age_ms: 24 * 3600 * 1000, bytes_max: 1 << 30 }
    }
}

/// What a read returns.
#[derive(Clone, Debug, Default)]
pub struct FeedRead {
    /// Matching entries after the cursor, ascending.
    pub entries: Vec<FeedEntry>,
    /// The cursor after this read: every entry up to it has been considered.
    pub through: u64,
}

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// The entries after the cursor are no longer (or not yet) held here.
    #[error("the feed here begins after index {oldest_cursor}; a cursor below it has expired")]
    Trimmed {
        /// The oldest cursor this replica can serve.
        oldest_cursor: u64,
    },
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// What a subscription selects from a feed entry.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FeedFilter {
    /// The tenant.
    pub tenant: String,
    /// Only this measurement (`None`: all).
    pub measurement: Option<String>,
    /// Only series carrying every one of these tags with these values.
    pub tags: Vec<(String, String)>,
    /// Only these fields (empty: all); a series with none of them is left out.
    pub fields: Vec<String>,
    /// Only the rows whose values pass every one of these field filters (tested before the
    /// fields are selected, so a filter may test a field that is not delivered).
    #[serde(default)]
    pub filters: Vec<FieldFilter>,
}

impl FeedFilter {
    /// The fields a read for this filter needs: the ones it delivers and the ones its field
    /// filters test (`None`: every field).
    pub fn read_fields(&self) -> Option<Vec<String>> {
        if self.fields.is_empty() {
            return None;
        }
        let mut fields = self.fields.clone();
        for f in &self.filters {
            if !fields.contains(&f.field) {
                fields.push(f.field.clone());
            }
        }
        Some(fields)
    }

    /// The part of `write` the filter selects, or `None` when nothing matches.
    pub fn select(&self, write: &ShardWrite) -> Option<ShardWrite> {
        if write.tenant != self.tenant {
            return None;
        }
        let series: Vec<SeriesWrite> = write.series.iter().filter_map(|s| self.select_series(s)).collect();
        (!series.is_empty()).then(|| ShardWrite { tenant: write.tenant.clone(), series })
    }

    fn select_series(&self, s: &SeriesWrite) -> Option<SeriesWrite> {
        if self.measurement.is_some() || !self.tags.is_empty() {
            let (measurement, tags) = parse_series_key(&s.key);
            if self.measurement.as_ref().is_some_and(|m| *m != measurement) {
                return None;
            }
            if !self.tags.iter().all(|wanted| tags.contains(wanted)) {
                return None;
            }
        }
        self.narrow(s)
    }

    /// The rows of a selected series that pass the field filters, with the fields the filter
    /// names; `None` when nothing is left.
    pub(crate) fn narrow(&self, s: &SeriesWrite) -> Option<SeriesWrite> {
        let passing;
        let s = match rows_passing(s, &self.filters) {
            None => s,
            Some(keep) if !keep.contains(&true) => return None,
            Some(keep) => {
                passing = s.select_rows(&keep);
                &passing
            }
        };
        if self.fields.is_empty() {
            return Some(s.clone());
        }
        let columns: Vec<ColumnWrite> = s.columns.iter().filter(|c| self.fields.contains(&c.field)).cloned().collect();
        (!columns.is_empty()).then(|| SeriesWrite {
            key: s.key.clone(),
            device: s.device.clone(),
            timestamps: s.timestamps.clone(),
            columns,
        })
    }
}

/// Which rows of `s` pass every filter (a row without a tested field fails), or `None` when
/// all of them do.
pub fn rows_passing(s: &SeriesWrite, filters: &[FieldFilter]) -> Option<Vec<bool>> {
    if filters.is_empty() {
        return None;
    }
    let rows = s.timestamps.len();
    let mut keep = vec![true; rows];
    for f in filters {
        let Some(c) = s.columns.iter().find(|c| c.field == f.field) else { return Some(vec![false; rows]) };
        let mut passed = vec![false; rows];
        let t = &f.test;
        // Tested in place: no value is copied out of its column.
        match &c.values {
            Values::F64(v) => c.for_each_present(rows, |row, vi| passed[row] = t.number(v[vi])),
            Values::I64(v) => c.for_each_present(rows, |row, vi| passed[row] = t.number(v[vi] as f64)),
            Values::U64(v) => c.for_each_present(rows, |row, vi| passed[row] = t.number(v[vi] as f64)),
            Values::Bool(v) => c.for_each_present(rows, |row, vi| passed[row] = t.boolean(v[vi])),
            Values::Str(v) => c.for_each_present(rows, |row, vi| passed[row] = t.string(&v[vi])),
        }
        for (k, p) in keep.iter_mut().zip(passed) {
            *k &= p;
        }
    }
    (!keep.iter().all(|&k| k)).then_some(keep)
}

/// One flush's worth of stored entries.
#[derive(Clone, Copy, Debug)]
struct Mark {
    flushed_at_ms: u64,
    last_index: u64,
    bytes: u64,
}

/// The stored part of a feed, as this replica knows it.
#[derive(Debug, Default)]
pub(crate) struct StoredFeed {
    /// First index held in full.
    pub(crate) start: u64,
    marks: VecDeque<Mark>,
    bytes: u64,
}

impl StoredFeed {
    /// Loads the start and the flush marks of `space`.
    pub(crate) fn load(engine: &hotlake_storage::Engine, space: Space) -> Result<Self, StorageError> {
        let start = match engine.get(space, keys::FEED_START)? {
            Some(v) => u64::from_be_bytes(v.as_slice().try_into().map_err(|_| corrupt(space, "feed start"))?),
            None => 0,
        };
        let mut feed = StoredFeed { start, ..Default::default() };
        let mut bad = None;
        engine.scan(space, &[keys::FEED_MARK], &[keys::FEED_MARK + 1], &mut |k, v| match (
            keys::parse_feed_mark(k),
            <[u8; 8]>::try_from(v),
        ) {
            (Some((flushed_at_ms, last_index)), Ok(b)) => {
                let bytes = u64::from_be_bytes(b);
                feed.bytes += bytes;
                feed.marks.push_back(Mark { flushed_at_ms, last_index, bytes });
                true
            }
            _ => {
                bad = Some(corrupt(space, format!("feed mark {k:?}")));
                false
            }
        })?;
        // Marks sort by time; a clock that went back leaves them out of index order.
        feed.marks.make_contiguous().sort_by_key(|m| m.last_index);
        bad.map_or(Ok(feed), Err)
    }

    /// Bytes of stored entries.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Adds `entries` (one flush's, encoded, ascending) to `batch` with their mark, then the
    /// trimming that `retention` asks for at `now_ms`. Updates this record, start first (see
    /// the invariants).
    pub(crate) fn persist(
        &mut self,
        space: Space,
        entries: Vec<(u64, Vec<u8>)>,
        now_ms: u64,
        retention: &FeedRetention,
        batch: &mut WriteBatch,
    ) {
        if let Some(&(last_index, _)) = entries.last() {
            let mut bytes = 0;
            for (index, value) in entries {
                bytes += value.len() as u64 + 9;
                batch.put(space, keys::feed_entry(index).to_vec(), value);
            }
            batch.put(space, keys::feed_mark(now_ms, last_index).to_vec(), bytes.to_be_bytes().to_vec());
            self.marks.push_back(Mark { flushed_at_ms: now_ms, last_index, bytes });
            self.bytes += bytes;
        }
        let mut new_start = None;
        while let Some(m) = self.marks.front().copied() {
            let too_old = now_ms.saturating_sub(m.flushed_at_ms) > retention.age_ms;
            if !too_old && self.bytes <= retention.bytes_max {
                break;
            }
            self.marks.pop_front();
            self.bytes -= m.bytes;
            batch.delete(space, keys::feed_mark(m.flushed_at_ms, m.last_index).to_vec());
            new_start = Some(m.last_index + 1);
        }
        if let Some(start) = new_start {
            batch.delete_range(space, keys::feed_entry(0).to_vec(), keys::feed_entry(start).to_vec());
            batch.put(space, keys::FEED_START.to_vec(), start.to_be_bytes().to_vec());
            self.start = self.start.max(start);
        }
    }

    /// After a snapshot install at `applied`: nothing held before it.
    pub(crate) fn restart_after(applied: u64) -> Self {
        StoredFeed { start: applied.saturating_add(1), ..Default::default() }
    }
}

/// Encodes entries for [`StoredFeed::persist`].
pub(crate) fn encode(entries: &[FeedEntry]) -> Vec<(u64, Vec<u8>)> {
    entries.iter().map(|e| (e.index, bincode::serialize(&*e.write).expect("a shard write serializes"))).collect()
}

/// Reads stored entries with index in `[from, to)`, appending the matches to `out`, until their
/// points reach `max_points`. Returns the last index read (if any) and the points taken.
pub(crate) fn read_stored(
    engine: &hotlake_storage::Engine,
    space: Space,
    from: u64,
    to: u64,
    filter: &FeedFilter,
    max_points: usize,
    out: &mut Vec<FeedEntry>,
) -> Result<(Option<u64>, usize), StorageError> {
    let mut points = 0;
    let mut last = None;
    let mut bad = None;
    engine.scan(space, &keys::feed_entry(from), &keys::feed_entry(to), &mut |k, v| {
        let Some(index) = keys::feed_entry_index(k) else {
            bad = Some(corrupt(space, format!("feed key {k:?}")));
            return false;
        };
        match bincode::deserialize::<ShardWrite>(v) {
            Ok(w) => {
                last = Some(index);
                if let Some(selected) = filter.select(&w) {
                    points += points_of(&selected);
                    out.push(FeedEntry { index, write: Arc::new(selected) });
                }
                points < max_points
            }
            Err(e) => {
                bad = Some(corrupt(space, format!("feed entry {index}: {e}")));
                false
            }
        }
    })?;
    bad.map_or(Ok((last, points)), Err)
}

/// One point of a feed entry, as a subscriber sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct FeedPoint {
    /// Measurement.
    pub measurement: String,
    /// Tags, as in the series key.
    pub tags: Vec<(String, String)>,
    /// Timestamp (ns since the epoch).
    pub timestamp_ns: TimestampNs,
    /// The fields present in this row.
    pub fields: Vec<(String, FieldValue)>,
}

/// The points of a write, series by series and row by row, in the order they were written.
pub fn points(w: &ShardWrite) -> Vec<FeedPoint> {
    let mut out = Vec::with_capacity(points_of(w));
    for s in &w.series {
        let (measurement, tags) = parse_series_key(&s.key);
        // Per column: the next absent row and the next value to take.
        let mut at: Vec<(usize, usize)> = vec![(0, 0); s.columns.len()];
        for (row, &timestamp_ns) in s.timestamps.iter().enumerate() {
            let mut fields = Vec::with_capacity(s.columns.len());
            for (c, (absent_i, value_i)) in s.columns.iter().zip(at.iter_mut()) {
                if c.absent_rows.get(*absent_i) == Some(&(row as u32)) {
                    *absent_i += 1;
                } else if *value_i < c.values.len() {
                    fields.push((c.field.clone(), c.values.get(*value_i)));
                    *value_i += 1;
                }
            }
            out.push(FeedPoint { measurement: measurement.clone(), tags: tags.clone(), timestamp_ns, fields });
        }
    }
    out
}

/// Bytes a write holds in memory, roughly (what a feed entry adds to a shard's memtables).
pub fn approx_bytes(w: &ShardWrite) -> usize {
    w.series
        .iter()
        .map(|s| {
            let columns: usize = s
                .columns
                .iter()
                .map(|c| {
                    let values = match &c.values {
                        super::batch::Values::Str(v) => v.iter().map(|x| x.len() + 24).sum(),
                        other => other.len() * 8,
                    };
                    c.field.len() + 48 + c.absent_rows.len() * 4 + values
                })
                .sum();
            s.key.len() + s.device.len() + 80 + s.timestamps.len() * 8 + columns
        })
        .sum()
}

/// Points (rows) in a write.
pub fn points_of(w: &ShardWrite) -> usize {
    w.series.iter().map(|s| s.timestamps.len()).sum()
}

fn corrupt(space: Space, reason: impl std::fmt::Display) -> StorageError {
    StorageError::Corrupt { space: space.name(), reason: reason.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hotlake_types::filter::{FilterOp, Operand};

    /// Device d1's rows at 1..=4: `error` at every row but 3, `temp` at every row.
    fn write() -> ShardWrite {
        ShardWrite {
            tenant: "t".into(),
            series: vec![SeriesWrite {
                key: "m,device_id=d1".into(),
                device: "d1".into(),
                timestamps: vec![1, 2, 3, 4],
                columns: vec![
                    ColumnWrite {
                        field: "error".into(),
                        absent_rows: vec![2],
                        values: Values::Str(vec!["E_1".into(), "OK".into(), "E_2".into()]),
                    },
                    ColumnWrite {
                        field: "temp".into(),
                        absent_rows: vec![],
                        values: Values::F64(vec![1.0, 2.0, 3.0, 4.0]),
                    },
                ],
            }],
        }
    }

    fn filter(fields: &[&str], field: &str, op: &str, operand: Operand) -> FeedFilter {
        FeedFilter {
            tenant: "t".into(),
            fields: fields.iter().map(|f| f.to_string()).collect(),
            filters: vec![FieldFilter::new(field, FilterOp::parse(op).unwrap(), operand).unwrap()],
            ..Default::default()
        }
    }

    #[test]
    fn field_filters_keep_the_passing_rows_before_the_fields_are_selected() {
        let f = filter(&["temp"], "error", "prefix", Operand::Str("E_".into()));
        let got = f.select(&write()).unwrap();
        let s = &got.series[0];
        assert_eq!(s.timestamps, vec![1, 4]);
        assert_eq!(s.columns.len(), 1, "error is tested, not delivered");
        assert_eq!(s.columns[0].values, Values::F64(vec![1.0, 4.0]));

        // All fields: the kept rows keep their absent values absent.
        let f = filter(&[], "temp", ">=", Operand::Number(2.0));
        let s = &f.select(&write()).unwrap().series[0];
        assert_eq!(s.timestamps, vec![2, 3, 4]);
        assert_eq!(s.columns[0].absent_rows, vec![1]);
        assert_eq!(s.columns[0].values, Values::Str(vec!["OK".into(), "E_2".into()]));

        // Nothing passes: nothing is delivered; everything passes: the write as it is.
        assert!(filter(&[], "error", "=", Operand::Str("none".into())).select(&write()).is_none());
        assert!(filter(&[], "missing", "=", Operand::Bool(true)).select(&write()).is_none());
        assert_eq!(filter(&[], "temp", ">", Operand::Number(0.0)).select(&write()).unwrap(), write());
    }
}
