//! The payload of a shard's Raft log entries: whole client batches in columnar form, encoded
//! compactly with bincode.

use serde::{Deserialize, Serialize};

use hotlake_types::model::{FieldType, FieldValue, TimestampNs};

/// Values of one column, only for rows where the field is present. The same type the block
/// codec stores, so a batch column becomes a block column without conversion.
pub use super::codec::ColumnValues as Values;

impl Values {
    /// An empty column of `ty`.
    pub fn empty(ty: FieldType) -> Values {
        match ty {
            FieldType::F64 => Values::F64(Vec::new()),
            FieldType::I64 => Values::I64(Vec::new()),
            FieldType::U64 => Values::U64(Vec::new()),
            FieldType::Bool => Values::Bool(Vec::new()),
            FieldType::Str => Values::Str(Vec::new()),
        }
    }

    /// The `i`-th value (an index into present values).
    pub fn get(&self, i: usize) -> FieldValue {
        match self {
            Values::F64(v) => FieldValue::F64(v[i]),
            Values::I64(v) => FieldValue::I64(v[i]),
            Values::U64(v) => FieldValue::U64(v[i]),
            Values::Bool(v) => FieldValue::Bool(v[i]),
            Values::Str(v) => FieldValue::Str(v[i].clone()),
        }
    }

    /// Appends a value of the column's type; returns false (and appends nothing) on a type
    /// mismatch.
    pub fn push(&mut self, value: FieldValue) -> bool {
        match (self, value) {
            (Values::F64(v), FieldValue::F64(x)) => v.push(x),
            (Values::I64(v), FieldValue::I64(x)) => v.push(x),
            (Values::U64(v), FieldValue::U64(x)) => v.push(x),
            (Values::Bool(v), FieldValue::Bool(x)) => v.push(x),
            (Values::Str(v), FieldValue::Str(x)) => v.push(x),
            _ => return false,
        }
        true
    }
}

/// One field of a series in a batch. `absent_rows` lists (ascending) the rows without a value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ColumnWrite {
    /// Field name.
    pub field: String,
    /// Rows (indexes into the series' timestamps) where the field is absent, ascending.
    pub absent_rows: Vec<u32>,
    /// Values of the present rows, in row order.
    pub values: Values,
}

impl ColumnWrite {
    /// Calls `f(row, value index)` for each row that has a value, in row order.
    pub fn for_each_present(&self, rows: usize, mut f: impl FnMut(usize, usize)) {
        let mut absent = self.absent_rows.iter().peekable();
        let mut vi = 0;
        for row in 0..rows {
            if absent.next_if(|&&a| a as usize == row).is_some() {
                continue;
            }
            f(row, vi);
            vi += 1;
        }
    }
}

/// Points of one series in a batch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeriesWrite {
    /// Canonical series key (`measurement,tag=value,...`).
    pub key: String,
    /// The device key the series belongs to.
    pub device: String,
    /// One timestamp per row; any order, duplicates allowed (last row wins per field).
    pub timestamps: Vec<TimestampNs>,
    /// The fields.
    pub columns: Vec<ColumnWrite>,
}

impl SeriesWrite {
    /// The rows whose `keep` is set, with the same fields (a field left without values is
    /// dropped).
    pub fn select_rows(&self, keep: &[bool]) -> SeriesWrite {
        let mut new_row = vec![u32::MAX; keep.len()];
        let mut timestamps = Vec::new();
        for (row, &k) in keep.iter().enumerate() {
            if k {
                new_row[row] = timestamps.len() as u32;
                timestamps.push(self.timestamps[row]);
            }
        }
        let mut columns = Vec::with_capacity(self.columns.len());
        for c in &self.columns {
            let mut values = Values::empty(c.values.field_type());
            let mut kept = vec![false; timestamps.len()];
            c.for_each_present(self.timestamps.len(), |row, vi| {
                if keep[row] {
                    kept[new_row[row] as usize] = true;
                    values.push(c.values.get(vi));
                }
            });
            if values.is_empty() {
                continue;
            }
            let absent_rows = kept.iter().enumerate().filter(|(_, k)| !**k).map(|(r, _)| r as u32).collect();
            columns.push(ColumnWrite { field: c.field.clone(), absent_rows, values });
        }
        SeriesWrite { key: self.key.clone(), device: self.device.clone(), timestamps, columns }
    }
}

impl SeriesWrite {
    /// Checks what applying the series relies on, so that a malformed series is refused where
    /// it enters (a public or forwarded write) and, should one reach the log anyway, rejected
    /// alike by every replica's apply instead of panicking it: a key and field names without
    /// NUL bytes (keys are split on them), and per column absent rows ascending below the row
    /// count and exactly one value for every other row.
    pub fn check(&self) -> Result<(), String> {
        if self.key.is_empty() || self.key.contains('\0') || self.device.contains('\0') {
            return Err("the series key is empty or contains a NUL byte".into());
        }
        let rows = self.timestamps.len();
        for c in &self.columns {
            let field = shown(&c.field);
            if c.field.is_empty() || c.field.contains('\0') {
                return Err(format!("field name {field:?} is empty or contains a NUL byte"));
            }
            if c.absent_rows.windows(2).any(|w| w[0] >= w[1])
                || c.absent_rows.last().is_some_and(|&r| r as usize >= rows)
            {
                return Err(format!("field {field:?}: absent rows must be ascending row indexes below {rows}"));
            }
            if c.values.len() + c.absent_rows.len() != rows {
                return Err(format!(
                    "field {field:?}: {} values and {} absent rows do not make {rows} rows",
                    c.values.len(),
                    c.absent_rows.len()
                ));
            }
        }
        Ok(())
    }

    /// Field values carried.
    pub fn value_count(&self) -> usize {
        self.columns.iter().map(|c| c.values.len()).sum()
    }
}

/// A client batch for one shard and tenant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShardWrite {
    /// The tenant (database / bucket).
    pub tenant: String,
    /// Series with their points.
    pub series: Vec<SeriesWrite>,
}

impl ShardWrite {
    /// Field values carried.
    pub fn value_count(&self) -> usize {
        self.series.iter().map(|s| s.value_count()).sum()
    }
}

/// At most this many bytes of a key or name go into an error message.
const SHOWN_BYTES_MAX: usize = 200;

/// `text` cut to [`SHOWN_BYTES_MAX`] bytes (on a character boundary) for an error message, so
/// that an oversized key cannot make the error itself oversized.
pub fn shown(text: &str) -> &str {
    if text.len() <= SHOWN_BYTES_MAX {
        return text;
    }
    let mut end = SHOWN_BYTES_MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// A command in a shard's Raft log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ShardCommand {
    /// Insert points.
    Write(ShardWrite),
    /// Drop every block (and memtable point) of `tenant` whose time window ends at or before
    /// `before_ns`. Applied identically on every replica so replicas stay equal.
    Retain {
        /// The tenant whose retention is enforced.
        tenant: String,
        /// Points before this time are dropped, whole windows at a time.
        before_ns: TimestampNs,
    },
}

/// What applying a command did; returned to the writer when the entry commits.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ApplyOutcome {
    /// Points applied.
    pub points: u64,
    /// Field values applied.
    pub values: u64,
    /// Values rejected at apply, with the reason (a field's type conflicted with an earlier
    /// write that committed first).
    pub rejected: Vec<String>,
}
