//! History reads: the stored points a feed filter selects (from a time on, or the latest
//! value of each field), exactly as of one applied log index, so that a subscription can
//! deliver them and then the feed from the next index on with no gap and no duplicate.
//!
//! Why the cut is exact: apply holds the shard's state lock for a whole entry, and the
//! memtable parts are copied under that lock, at the index read with them; flushed blocks are
//! read afterwards but only up to the flush sequence of the same cut (a later flush writes its
//! blocks under a higher sequence). What a later retention entry deletes before the blocks are
//! read is left out: it was due to expire.

use hotlake_types::filter::FieldTest;
use hotlake_types::model::{parse_series_key, TimestampNs};

use crate::batch::{ColumnWrite, SeriesWrite, ShardWrite, Values};
use crate::codec::Block;
use crate::feed::FeedFilter;
use crate::index::LastValue;
use crate::memtable::FieldId;
use crate::read::{flushed_parts, merge};
use crate::shard::{ShardData, ShardInner};
use hotlake_storage::StorageError;

/// The stored points of a history read.
#[derive(Debug)]
pub struct History {
    /// The log index the points are as of: the feed goes on after it.
    pub index: u64,
    /// The points, series by series (`None`: no stored point matches).
    pub write: Option<ShardWrite>,
}

/// Why a history read failed.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// More points match than the read may hold.
    #[error("more than {limit} stored points match")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// Reading storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// One selected series with its memtable parts, copied at the cut.
struct Selected {
    id: u32,
    key: String,
    device: String,
    in_memory: Vec<Block>,
}

impl ShardData {
    /// The points the series `filter` selects hold at `from_ns` or later, as of the applied
    /// index returned, with only the fields the filter names (all when it names none). More
    /// than `max_points` is refused rather than held.
    pub fn read_history(
        &self,
        filter: &FeedFilter,
        from_ns: TimestampNs,
        max_points: usize,
    ) -> Result<History, HistoryError> {
        let read_fields = filter.read_fields();
        let (index, flush_seq_max, selected, mut points) = {
            let inner = self.read();
            let index = inner.applied.map_or(0, |a| a.index);
            let view = inner.view();
            let field_ids = field_ids(&inner, read_fields.as_deref());
            let name_of = |f: FieldId| inner.index.field_name(f).to_string();
            let mut selected = Vec::new();
            let mut points = 0usize;
            for id in selected_series(&inner, filter) {
                let info = inner.index.get(id);
                let mut in_memory = Vec::new();
                for m in &view.memtables {
                    let m = m.read().unwrap_or_else(|p| p.into_inner());
                    if let Some(buf) = m.series(id) {
                        let b = buf.to_block(from_ns, TimestampNs::MAX, field_ids.as_deref(), &name_of);
                        points += b.timestamps.len();
                        if !b.timestamps.is_empty() {
                            in_memory.push(b);
                        }
                    }
                }
                if points > max_points {
                    return Err(HistoryError::TooLarge { limit: max_points });
                }
                selected.push(Selected { id, key: info.key.to_string(), device: info.device.to_string(), in_memory });
            }
            (index, view.flush_seq_max, selected, points)
        };
        let mut series = Vec::new();
        for s in selected {
            let mut parts =
                flushed_parts(self, flush_seq_max, s.id, from_ns, TimestampNs::MAX, read_fields.as_deref())?;
            points += parts.iter().map(|b| b.timestamps.len()).sum::<usize>();
            if points > max_points {
                return Err(HistoryError::TooLarge { limit: max_points });
            }
            parts.extend(s.in_memory);
            let block = merge(parts);
            if block.timestamps.is_empty() || block.columns.is_empty() {
                continue;
            }
            if let Some(write) = filter.narrow(&series_write(s.key, s.device, block)) {
                series.push(write);
            }
        }
        let write = (!series.is_empty()).then(|| ShardWrite { tenant: filter.tenant.clone(), series });
        Ok(History { index, write })
    }
}

impl ShardData {
    /// The latest value of each field of the series `filter` selects (the fields it names, all
    /// when it names none), as of the applied index returned: what `Last` answers, as a
    /// write with one row per distinct timestamp of a series' latest values. With field
    /// filters, a series is there when the latest value of each tested field passes ("the
    /// devices whose latest status is an error").
    pub fn read_latest(&self, filter: &FeedFilter, max_points: usize) -> Result<History, HistoryError> {
        let inner = self.read();
        let index = inner.applied.map_or(0, |a| a.index);
        let field_ids = field_ids(&inner, (!filter.fields.is_empty()).then_some(filter.fields.as_slice()));
        let tested: Option<Vec<_>> =
            filter.filters.iter().map(|f| inner.index.find_field(&f.field).map(|id| (id, &f.test))).collect();
        // A tested field no series has: none passes.
        let Some(tested) = tested else { return Ok(History { index, write: None }) };
        let mut series = Vec::new();
        let mut points = 0usize;
        for id in selected_series(&inner, filter) {
            let info = inner.index.get(id);
            let passes = |(field, test): &(FieldId, &FieldTest)| {
                info.last.iter().find(|l| l.field == *field).is_some_and(|l| test.value(&l.value))
            };
            if !tested.iter().all(passes) {
                continue;
            }
            let mut latest: Vec<&LastValue> =
                info.last.iter().filter(|l| field_ids.as_ref().is_none_or(|f| f.contains(&l.field))).collect();
            if latest.is_empty() {
                continue;
            }
            latest.sort_by_key(|l| l.timestamp_ns);
            let mut timestamps: Vec<TimestampNs> = latest.iter().map(|l| l.timestamp_ns).collect();
            timestamps.dedup();
            points += timestamps.len();
            if points > max_points {
                return Err(HistoryError::TooLarge { limit: max_points });
            }
            // One column per field, present only in the row of its own latest timestamp.
            let columns = latest
                .iter()
                .map(|l| {
                    let row = timestamps.binary_search(&l.timestamp_ns).expect("a timestamp of the rows") as u32;
                    let mut values = Values::empty(l.value.field_type());
                    values.push(l.value.clone());
                    ColumnWrite {
                        field: inner.index.field_name(l.field).to_string(),
                        absent_rows: (0..timestamps.len() as u32).filter(|r| *r != row).collect(),
                        values,
                    }
                })
                .collect();
            series.push(SeriesWrite {
                key: info.key.to_string(),
                device: info.device.to_string(),
                timestamps,
                columns,
            });
        }
        let write = (!series.is_empty()).then(|| ShardWrite { tenant: filter.tenant.clone(), series });
        Ok(History { index, write })
    }
}

/// The series of the filter's tenant that carry its measurement and every one of its tags.
fn selected_series(inner: &ShardInner, filter: &FeedFilter) -> Vec<u32> {
    let ids: Vec<u32> = match &filter.measurement {
        Some(m) => inner.index.measurement_series(&filter.tenant, m).to_vec(),
        None => (0..inner.index.len() as u32).filter(|id| *inner.index.get(*id).tenant == *filter.tenant).collect(),
    };
    if filter.tags.is_empty() {
        return ids;
    }
    ids.into_iter()
        .filter(|id| {
            let (_, tags) = parse_series_key(&inner.index.get(*id).key);
            filter.tags.iter().all(|wanted| tags.contains(wanted))
        })
        .collect()
}

/// The ids of `fields` (`None`: every field).
fn field_ids(inner: &ShardInner, fields: Option<&[String]>) -> Option<Vec<FieldId>> {
    fields.map(|fields| fields.iter().filter_map(|n| inner.index.find_field(n)).collect())
}

/// A merged block as the rows of a write.
fn series_write(key: String, device: String, block: Block) -> SeriesWrite {
    let columns = block
        .columns
        .into_iter()
        .map(|c| ColumnWrite {
            field: c.name,
            absent_rows: c
                .present
                .map(|p| p.iter().enumerate().filter(|(_, here)| !**here).map(|(row, _)| row as u32).collect())
                .unwrap_or_default(),
            values: c.values,
        })
        .collect();
    SeriesWrite { key, device, timestamps: block.timestamps, columns }
}
