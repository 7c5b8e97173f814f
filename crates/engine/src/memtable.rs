//! The memtable: the live tail of a shard, per series columnar buffers of applied points.
//!
//! Rows are appended in apply order, whatever their timestamps. Readers and the flush get a
//! sorted, de-duplicated view ([`SeriesBuffer::to_block`]) where, for each (timestamp, field), the
//! last applied row that has the field wins.
//!
//! Invariant: the memtable is written only from Raft apply.

use super::batch::{SeriesWrite, Values};
use super::codec::{Block, Column, ColumnValues};
use hotlake_types::hash::FastMap;
use hotlake_types::model::{FieldType, TimestampNs};

/// Interned field name id, per shard.
pub type FieldId = u32;

/// Dense values of one column: absent rows hold a default value.
#[derive(Clone, Debug)]
enum Dense {
    F64(Vec<f64>),
    I64(Vec<i64>),
    U64(Vec<u64>),
    Bool(Vec<bool>),
    Str(Vec<String>),
}

impl Dense {
    fn new(ty: FieldType, rows: usize) -> Dense {
        match ty {
            FieldType::F64 => Dense::F64(vec![0.0; rows]),
            FieldType::I64 => Dense::I64(vec![0; rows]),
            FieldType::U64 => Dense::U64(vec![0; rows]),
            FieldType::Bool => Dense::Bool(vec![false; rows]),
            FieldType::Str => Dense::Str(vec![String::new(); rows]),
        }
    }

    fn field_type(&self) -> FieldType {
        match self {
            Dense::F64(_) => FieldType::F64,
            Dense::I64(_) => FieldType::I64,
            Dense::U64(_) => FieldType::U64,
            Dense::Bool(_) => FieldType::Bool,
            Dense::Str(_) => FieldType::Str,
        }
    }

    /// The values of rows `keep`, in that order.
    fn select(&self, keep: &[usize]) -> Dense {
        match self {
            Dense::F64(v) => Dense::F64(keep.iter().map(|&r| v[r]).collect()),
            Dense::I64(v) => Dense::I64(keep.iter().map(|&r| v[r]).collect()),
            Dense::U64(v) => Dense::U64(keep.iter().map(|&r| v[r]).collect()),
            Dense::Bool(v) => Dense::Bool(keep.iter().map(|&r| v[r]).collect()),
            Dense::Str(v) => Dense::Str(keep.iter().map(|&r| v[r].clone()).collect()),
        }
    }

    fn pad(&mut self, rows: usize) {
        match self {
            Dense::F64(v) => v.resize(v.len() + rows, 0.0),
            Dense::I64(v) => v.resize(v.len() + rows, 0),
            Dense::U64(v) => v.resize(v.len() + rows, 0),
            Dense::Bool(v) => v.resize(v.len() + rows, false),
            Dense::Str(v) => v.resize(v.len() + rows, String::new()),
        }
    }

    /// Appends `rows` rows whose present values come from `values` (absent rows get defaults).
    /// Returns heap bytes added by strings.
    fn extend(&mut self, rows: usize, absent: &[u32], values: &Values) -> usize {
        fn spread<T: Clone>(dst: &mut Vec<T>, rows: usize, absent: &[u32], src: &[T], default: T) {
            if absent.is_empty() {
                dst.extend_from_slice(src);
                return;
            }
            let mut next_absent = absent.iter().peekable();
            let mut src_i = 0;
            for row in 0..rows as u32 {
                if next_absent.peek() == Some(&&row) {
                    next_absent.next();
                    dst.push(default.clone());
                } else {
                    dst.push(src[src_i].clone());
                    src_i += 1;
                }
            }
        }
        match (self, values) {
            (Dense::F64(d), Values::F64(s)) => spread(d, rows, absent, s, 0.0),
            (Dense::I64(d), Values::I64(s)) => spread(d, rows, absent, s, 0),
            (Dense::U64(d), Values::U64(s)) => spread(d, rows, absent, s, 0),
            (Dense::Bool(d), Values::Bool(s)) => spread(d, rows, absent, s, false),
            (Dense::Str(d), Values::Str(s)) => {
                spread(d, rows, absent, s, String::new());
                return s.iter().map(|x| x.len()).sum();
            }
            _ => unreachable!("column type checked before extend"),
        }
        0
    }
}

#[derive(Clone, Debug)]
struct ColumnBuffer {
    field: FieldId,
    /// Bit per row: set when the row has a value.
    present: Vec<u64>,
    values: Dense,
}

impl ColumnBuffer {
    fn is_present(&self, row: usize) -> bool {
        self.present[row / 64] & (1 << (row % 64)) != 0
    }

    fn set_present(&mut self, row: usize) {
        let word = row / 64;
        if word >= self.present.len() {
            self.present.resize(word + 1, 0);
        }
        self.present[word] |= 1 << (row % 64);
    }

    fn grow_bitmap(&mut self, rows: usize) {
        let words = rows.div_ceil(64);
        if words > self.present.len() {
            self.present.resize(words, 0);
        }
    }
}

/// Buffered points of one series.
#[derive(Clone, Debug, Default)]
pub struct SeriesBuffer {
    timestamps: Vec<TimestampNs>,
    columns: Vec<ColumnBuffer>,
    /// True while rows are in strictly ascending time order (the common case), which lets
    /// readers skip sorting.
    ascending: bool,
}

impl SeriesBuffer {
    /// Rows buffered (before de-duplication).
    pub fn rows(&self) -> usize {
        self.timestamps.len()
    }

    /// Smallest and largest timestamp buffered.
    pub fn time_range(&self) -> Option<(TimestampNs, TimestampNs)> {
        if self.ascending {
            Some((*self.timestamps.first()?, *self.timestamps.last()?))
        } else {
            let min = *self.timestamps.iter().min()?;
            let max = *self.timestamps.iter().max()?;
            Some((min, max))
        }
    }

    /// The sorted, de-duplicated view of the rows with timestamps in `[start, end)`, with only
    /// the requested fields (`None` = all). Field ids are mapped to names by `name_of`.
    pub fn to_block(
        &self,
        start: TimestampNs,
        end: TimestampNs,
        fields: Option<&[FieldId]>,
        name_of: &dyn Fn(FieldId) -> String,
    ) -> Block {
        let wanted: Vec<&ColumnBuffer> =
            self.columns.iter().filter(|c| fields.is_none_or(|f| f.contains(&c.field))).collect();
        // Row order: by timestamp, then apply order, so the last applied row of a timestamp
        // comes last in its run.
        let mut order: Vec<u32> = (0..self.timestamps.len() as u32)
            .filter(|&r| {
                let t = self.timestamps[r as usize];
                t >= start && t < end
            })
            .collect();
        if !self.ascending {
            // Keys are unique (the row number breaks ties), so an unstable sort gives the same
            // order, faster.
            order.sort_unstable_by_key(|&r| (self.timestamps[r as usize], r));
        }
        // Runs of equal timestamps: [run_start, run_end) in `order`.
        let mut timestamps = Vec::with_capacity(order.len());
        let mut runs: Vec<(usize, usize)> = Vec::with_capacity(order.len());
        let mut i = 0;
        while i < order.len() {
            let t = self.timestamps[order[i] as usize];
            let mut j = i + 1;
            while j < order.len() && self.timestamps[order[j] as usize] == t {
                j += 1;
            }
            timestamps.push(t);
            runs.push((i, j));
            i = j;
        }
        let mut columns = Vec::with_capacity(wanted.len());
        for col in wanted {
            let mut present = Vec::with_capacity(runs.len());
            let mut rows = Vec::with_capacity(runs.len());
            for &(a, b) in &runs {
                // Last row of the run that has the field.
                let winner = order[a..b].iter().rev().find(|&&r| col.is_present(r as usize));
                match winner {
                    Some(&r) => {
                        present.push(true);
                        rows.push(r as usize);
                    }
                    None => present.push(false),
                }
            }
            if rows.is_empty() {
                continue;
            }
            let values = match &col.values {
                Dense::F64(v) => ColumnValues::F64(rows.iter().map(|&r| v[r]).collect()),
                Dense::I64(v) => ColumnValues::I64(rows.iter().map(|&r| v[r]).collect()),
                Dense::U64(v) => ColumnValues::U64(rows.iter().map(|&r| v[r]).collect()),
                Dense::Bool(v) => ColumnValues::Bool(rows.iter().map(|&r| v[r]).collect()),
                Dense::Str(v) => ColumnValues::Str(rows.iter().map(|&r| v[r].clone()).collect()),
            };
            let all = present.iter().all(|&p| p);
            columns.push(Column { name: name_of(col.field), present: if all { None } else { Some(present) }, values });
        }
        Block { timestamps, columns }
    }
}

/// The memtable of one shard.
#[derive(Debug, Default)]
pub struct Memtable {
    series: FastMap<u32, SeriesBuffer>,
    bytes: usize,
    values: u64,
}

impl Memtable {
    /// An empty memtable.
    pub fn new() -> Self {
        Self::default()
    }

    /// Approximate heap bytes used by buffered points.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Field values buffered.
    pub fn values(&self) -> u64 {
        self.values
    }

    /// True when nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// Series with buffered points.
    pub fn series_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.series.keys().copied()
    }

    /// The buffer of one series.
    pub fn series(&self, id: u32) -> Option<&SeriesBuffer> {
        self.series.get(&id)
    }

    /// Appends a series' rows. `field_ids` maps each of `write.columns` to its interned id and
    /// type-checked column type; a column whose entry is `None` was rejected and is skipped.
    /// Returns the number of values inserted.
    pub fn insert(&mut self, series: u32, write: &SeriesWrite, field_ids: &[Option<FieldId>]) -> u64 {
        debug_assert_eq!(field_ids.len(), write.columns.len());
        let n = write.timestamps.len();
        if n == 0 {
            return 0;
        }
        let buf = self.series.entry(series).or_insert_with(|| SeriesBuffer { ascending: true, ..Default::default() });
        let old_rows = buf.timestamps.len();
        if buf.ascending {
            let mut prev = buf.timestamps.last().copied();
            for &t in &write.timestamps {
                if prev.is_some_and(|p| t <= p) {
                    buf.ascending = false;
                    break;
                }
                prev = Some(t);
            }
        }
        buf.timestamps.extend_from_slice(&write.timestamps);
        let mut added_bytes = n * 8;
        let mut inserted = 0u64;
        let mut touched = vec![false; buf.columns.len()];
        for (col_write, id) in write.columns.iter().zip(field_ids) {
            let Some(id) = *id else { continue };
            let idx = match buf.columns.iter().position(|c| c.field == id) {
                Some(i) => i,
                None => {
                    buf.columns.push(ColumnBuffer {
                        field: id,
                        present: Vec::new(),
                        values: Dense::new(col_write.values.field_type(), old_rows),
                    });
                    touched.push(false);
                    buf.columns.len() - 1
                }
            };
            let col = &mut buf.columns[idx];
            debug_assert_eq!(col.values.field_type(), col_write.values.field_type());
            if touched[idx] {
                // The same field twice in one series write: treat the later column as later
                // rows would be wrong; it is rejected upstream, so this is a bug.
                unreachable!("duplicate column {id} in one series write");
            }
            touched[idx] = true;
            added_bytes += col.values.extend(n, &col_write.absent_rows, &col_write.values);
            added_bytes += n * 8;
            col.grow_bitmap(old_rows + n);
            let mut absent = col_write.absent_rows.iter().peekable();
            for row in 0..n as u32 {
                if absent.peek() == Some(&&row) {
                    absent.next();
                } else {
                    col.set_present(old_rows + row as usize);
                }
            }
            inserted += col_write.values.len() as u64;
        }
        for (idx, t) in touched.iter().enumerate() {
            if !t {
                let col = &mut buf.columns[idx];
                col.values.pad(n);
                col.grow_bitmap(old_rows + n);
                added_bytes += n * 8;
            }
        }
        self.bytes += added_bytes;
        self.values += inserted;
        inserted
    }

    /// Drops every buffered row of `series` with a timestamp before `before_ns`.
    pub fn drop_before(&mut self, series: u32, before_ns: TimestampNs) {
        let Some(buf) = self.series.get_mut(&series) else { return };
        if buf.time_range().is_none_or(|(min, _)| min >= before_ns) {
            return;
        }
        let keep: Vec<usize> = (0..buf.timestamps.len()).filter(|&r| buf.timestamps[r] >= before_ns).collect();
        // A subsequence keeps the apply order and, when it was ascending, stays ascending.
        buf.timestamps = keep.iter().map(|&r| buf.timestamps[r]).collect();
        for col in &mut buf.columns {
            let mut present = vec![0u64; keep.len().div_ceil(64)];
            for (i, &r) in keep.iter().enumerate() {
                if col.is_present(r) {
                    present[i / 64] |= 1 << (i % 64);
                }
            }
            col.present = present;
            col.values = col.values.select(&keep);
        }
    }
}
