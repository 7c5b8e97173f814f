//! The merge reader: one series' points in a time range, merged from flushed blocks and
//! memtables, newest write winning per (timestamp, field), in time order.
//!
//! Sources are ordered oldest first: blocks by flush sequence, then frozen memtables, then the
//! active memtable. When the sources' time ranges do not overlap (the common case: in-order
//! writes flushed window by window) they are concatenated without a merge.

use std::collections::HashMap;

use super::codec::{self, Block, Column, ColumnValues};
use super::memtable::FieldId;
use super::shard::{window_start, ReadView, ShardData};
use hotlake_storage::{keys, Space, StorageError};
use hotlake_types::model::{FieldValue, TimestampNs};

/// Rows `[start, end)` of a block.
pub fn slice_rows(block: &Block, start: usize, end: usize) -> Block {
    let timestamps = block.timestamps[start..end].to_vec();
    let mut columns = Vec::with_capacity(block.columns.len());
    for col in &block.columns {
        // Index of the first value at or after row `start`, and after row `end`.
        let (vs, ve, present) = match &col.present {
            None => (start, end, None),
            Some(p) => {
                let vs = p[..start].iter().filter(|&&x| x).count();
                let n = p[start..end].iter().filter(|&&x| x).count();
                let sub = p[start..end].to_vec();
                let all = sub.iter().all(|&x| x);
                (vs, vs + n, if all { None } else { Some(sub) })
            }
        };
        if vs == ve {
            continue;
        }
        let values = match &col.values {
            ColumnValues::F64(v) => ColumnValues::F64(v[vs..ve].to_vec()),
            ColumnValues::I64(v) => ColumnValues::I64(v[vs..ve].to_vec()),
            ColumnValues::U64(v) => ColumnValues::U64(v[vs..ve].to_vec()),
            ColumnValues::Bool(v) => ColumnValues::Bool(v[vs..ve].to_vec()),
            ColumnValues::Str(v) => ColumnValues::Str(v[vs..ve].to_vec()),
        };
        columns.push(Column { name: col.name.clone(), present, values });
    }
    Block { timestamps, columns }
}

/// Rows of `block` with timestamps in `[start, end)`.
pub fn clip(block: Block, start: TimestampNs, end: TimestampNs) -> Block {
    let a = block.timestamps.partition_point(|&t| t < start);
    let b = block.timestamps.partition_point(|&t| t < end);
    if a == 0 && b == block.timestamps.len() {
        return block;
    }
    slice_rows(&block, a, b)
}

/// Reads one series' merged points in `[start, end)`. `fields` limits the columns read
/// (`None` = all).
pub fn read_series(
    shard: &ShardData,
    view: &ReadView,
    series: u32,
    start: TimestampNs,
    end: TimestampNs,
    fields: Option<&[String]>,
) -> Result<Block, StorageError> {
    Ok(concat(read_series_parts(shard, view, series, start, end, fields)?))
}

/// Like [`read_series`], but returns the merged points as time-ordered, non-overlapping parts
/// without copying them into one block (aggregation does not need one).
pub fn read_series_parts(
    shard: &ShardData,
    view: &ReadView,
    series: u32,
    start: TimestampNs,
    end: TimestampNs,
    fields: Option<&[String]>,
) -> Result<Vec<Block>, StorageError> {
    if start >= end {
        return Ok(Vec::new());
    }
    let mut ordered = flushed_parts(shard, view.flush_seq_max, series, start, end, fields)?;
    {
        let inner = shard.read();
        let field_ids: Option<Vec<FieldId>> =
            fields.map(|f| f.iter().filter_map(|n| inner.index.find_field(n)).collect());
        let name_of = |f: FieldId| inner.index.field_name(f).to_string();
        for m in &view.memtables {
            let m = m.read().unwrap_or_else(|p| p.into_inner());
            if let Some(buf) = m.series(series) {
                let b = buf.to_block(start, end, field_ids.as_deref(), &name_of);
                if !b.timestamps.is_empty() {
                    ordered.push(b);
                }
            }
        }
    }
    Ok(merge_parts(ordered))
}

/// One series' flushed blocks in `[start, end)` with a flush sequence up to `flush_seq_max`,
/// clipped, oldest flush first (so that merging lets later flushes win on duplicates).
pub fn flushed_parts(
    shard: &ShardData,
    flush_seq_max: u64,
    series: u32,
    start: TimestampNs,
    end: TimestampNs,
    fields: Option<&[String]>,
) -> Result<Vec<Block>, StorageError> {
    let window = shard.options().block_window_ns;
    let mut sources: Vec<(u64, Block)> = Vec::new();
    let from = keys::block_from(series, window_start(start, window));
    let to = keys::block_from(series, end);
    let names: Option<Vec<&str>> = fields.map(|f| f.iter().map(|s| s.as_str()).collect());
    let mut failure = None;
    shard.engine().scan(Space::Data(shard.id), &from, &to, &mut |k, v| {
        let Some((_, _, seq)) = keys::parse_block(k) else {
            failure =
                Some(StorageError::Corrupt { space: Space::Data(shard.id).name(), reason: "bad block key".into() });
            return false;
        };
        if seq > flush_seq_max {
            return true;
        }
        let decoded = match &names {
            Some(n) => codec::decode_block_columns(v, n),
            None => codec::decode_block(v),
        };
        match decoded {
            Ok(b) => {
                let b = clip(b, start, end);
                if !b.timestamps.is_empty() {
                    sources.push((seq, b));
                }
                true
            }
            Err(e) => {
                failure = Some(StorageError::Corrupt { space: Space::Data(shard.id).name(), reason: e.to_string() });
                false
            }
        }
    })?;
    if let Some(e) = failure {
        return Err(e);
    }
    // Blocks of one window come in flush order; across windows order does not matter for
    // correctness because windows do not overlap in time. Sort by sequence so that later
    // flushes win on duplicates.
    sources.sort_by_key(|(seq, _)| *seq);
    Ok(sources.into_iter().map(|(_, b)| b).collect())
}

/// Merges blocks given oldest first: the result is sorted by time with, per (timestamp,
/// field), the value from the newest block that has it.
pub fn merge(blocks: Vec<Block>) -> Block {
    concat(merge_parts(blocks))
}

/// Merges blocks given oldest first into time-ordered, non-overlapping parts: each run of
/// blocks whose time ranges overlap becomes one merged block, every other block is passed on
/// as it is.
fn merge_parts(mut blocks: Vec<Block>) -> Vec<Block> {
    blocks.retain(|b| !b.timestamps.is_empty());
    if blocks.len() <= 1 {
        return blocks;
    }
    let mut by_start: Vec<usize> = (0..blocks.len()).collect();
    by_start.sort_by_key(|&i| blocks[i].timestamps[0]);
    // Runs of sources whose time ranges overlap (transitively): only those need the general
    // merge; a run of one is passed on as it is. Runs are disjoint and come out in time order.
    let mut runs: Vec<Vec<usize>> = Vec::new();
    let mut run_end = TimestampNs::MIN;
    for &i in &by_start {
        let (first, last) = (blocks[i].timestamps[0], *blocks[i].timestamps.last().expect("non-empty"));
        match runs.last_mut() {
            Some(run) if first <= run_end => {
                run.push(i);
                run_end = run_end.max(last);
            }
            _ => {
                runs.push(vec![i]);
                run_end = last;
            }
        }
    }
    let mut slots: Vec<Option<Block>> = blocks.into_iter().map(Some).collect();
    runs.into_iter()
        .map(|mut run| {
            if run.len() == 1 {
                return slots[run[0]].take().expect("each once");
            }
            // The general merge wants its sources oldest first, their order in `blocks`.
            run.sort_unstable();
            full_merge(run.iter().map(|&i| slots[i].take().expect("each once")).collect())
        })
        .collect()
}

/// Concatenates time-disjoint blocks already in time order.
fn concat(mut blocks: Vec<Block>) -> Block {
    match blocks.len() {
        0 => return Block { timestamps: Vec::new(), columns: Vec::new() },
        1 => return blocks.pop().expect("one block"),
        _ => {}
    }
    let total: usize = blocks.iter().map(|b| b.timestamps.len()).sum();
    let mut names: Vec<String> = Vec::new();
    for b in &blocks {
        for c in &b.columns {
            if !names.contains(&c.name) {
                names.push(c.name.clone());
            }
        }
    }
    let mut timestamps = Vec::with_capacity(total);
    let mut cols: Vec<(Vec<bool>, Option<ColumnValues>)> =
        names.iter().map(|_| (Vec::with_capacity(total), None)).collect();
    for b in blocks {
        let rows = b.timestamps.len();
        timestamps.extend_from_slice(&b.timestamps);
        let mut by_name: HashMap<String, Column> = b.columns.into_iter().map(|c| (c.name.clone(), c)).collect();
        for (i, name) in names.iter().enumerate() {
            let (present, values) = &mut cols[i];
            match by_name.remove(name) {
                Some(c) => {
                    match c.present {
                        None => present.extend(std::iter::repeat_n(true, rows)),
                        Some(p) => present.extend(p),
                    }
                    match values {
                        None => *values = Some(c.values),
                        Some(v) => append_values(v, c.values),
                    }
                }
                None => present.extend(std::iter::repeat_n(false, rows)),
            }
        }
    }
    let columns = names
        .into_iter()
        .zip(cols)
        .filter_map(|(name, (present, values))| {
            let values = values?;
            let all = present.iter().all(|&p| p);
            Some(Column { name, present: if all { None } else { Some(present) }, values })
        })
        .collect();
    Block { timestamps, columns }
}

fn append_values(dst: &mut ColumnValues, src: ColumnValues) {
    match (dst, src) {
        (ColumnValues::F64(a), ColumnValues::F64(b)) => a.extend(b),
        (ColumnValues::I64(a), ColumnValues::I64(b)) => a.extend(b),
        (ColumnValues::U64(a), ColumnValues::U64(b)) => a.extend(b),
        (ColumnValues::Bool(a), ColumnValues::Bool(b)) => a.extend(b),
        (ColumnValues::Str(a), ColumnValues::Str(b)) => a.extend(b),
        // A field keeps one type per series (checked at apply), so blocks agree.
        _ => unreachable!("column type differs between blocks of one series"),
    }
}

/// Expands a column into (row → value) for the merge.
fn column_cells(block: &Block, col: &Column) -> Vec<Option<FieldValue>> {
    let mut out = Vec::with_capacity(block.timestamps.len());
    let mut vi = 0;
    for row in 0..block.timestamps.len() {
        let present = col.present.as_ref().is_none_or(|p| p[row]);
        if present {
            out.push(Some(value_at(&col.values, vi)));
            vi += 1;
        } else {
            out.push(None);
        }
    }
    out
}

/// The `i`-th value of a column.
pub fn value_at(values: &ColumnValues, i: usize) -> FieldValue {
    values.get(i)
}

/// General merge for overlapping sources.
fn full_merge(blocks: Vec<Block>) -> Block {
    use std::collections::BTreeMap;
    let mut names: Vec<String> = Vec::new();
    for b in &blocks {
        for c in &b.columns {
            if !names.contains(&c.name) {
                names.push(c.name.clone());
            }
        }
    }
    // timestamp → per column newest value; later blocks overwrite earlier ones.
    let mut rows: BTreeMap<TimestampNs, Vec<Option<FieldValue>>> = BTreeMap::new();
    for b in &blocks {
        let cells: Vec<(usize, Vec<Option<FieldValue>>)> = b
            .columns
            .iter()
            .map(|c| (names.iter().position(|n| n == &c.name).expect("name collected"), column_cells(b, c)))
            .collect();
        for (row, &t) in b.timestamps.iter().enumerate() {
            let slot = rows.entry(t).or_insert_with(|| vec![None; names.len()]);
            for (ci, cells) in &cells {
                if let Some(v) = &cells[row] {
                    slot[*ci] = Some(v.clone());
                }
            }
        }
    }
    let timestamps: Vec<TimestampNs> = rows.keys().copied().collect();
    let mut columns = Vec::new();
    for (ci, name) in names.into_iter().enumerate() {
        let mut present = Vec::with_capacity(timestamps.len());
        let mut values: Option<ColumnValues> = None;
        for slot in rows.values() {
            match &slot[ci] {
                Some(v) => {
                    present.push(true);
                    let vals = values.get_or_insert_with(|| ColumnValues::empty(v.field_type()));
                    let pushed = vals.push(v.clone());
                    // A field keeps one type per series (checked at apply), so blocks agree.
                    assert!(pushed, "column type differs between blocks of one series");
                }
                None => present.push(false),
            }
        }
        if let Some(values) = values {
            let all = present.iter().all(|&p| p);
            columns.push(Column { name, present: if all { None } else { Some(present) }, values });
        }
    }
    Block { timestamps, columns }
}
