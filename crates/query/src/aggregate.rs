//! Partial aggregates: computed by each shard next to its data, merged by the coordinator.
//! Mean travels as sum + count, standard deviation as Welford's (count, mean, M2), percentiles
//! as a mergeable DDSketch. Pure: no I/O.

use std::collections::BTreeMap;

use sketches_ddsketch::{Config as SketchConfig, DDSketch};

use super::{AggKind, Fill, Query, ResultGroup};
use hotlake_engine::codec::{Block, ColumnValues};
use hotlake_engine::read::value_at;
use hotlake_types::error::Error;
use hotlake_types::model::{FieldValue, TimestampNs};

/// Running aggregate of one field in one (group, bucket).
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct FieldAgg {
    count: u64,
    numeric: u64,
    sum: f64,
    mean: f64,
    m2: f64,
    min: f64,
    max: f64,
    first: Option<(TimestampNs, FieldValue)>,
    last: Option<(TimestampNs, FieldValue)>,
    sketch: Option<Box<DDSketch>>,
}

impl std::fmt::Debug for FieldAgg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FieldAgg")
            .field("count", &self.count)
            .field("sum", &self.sum)
            .field("min", &self.min)
            .field("max", &self.max)
            .field("sketch", &self.sketch.is_some())
            .finish()
    }
}

impl FieldAgg {
    fn new(with_sketch: bool) -> Self {
        FieldAgg {
            count: 0,
            numeric: 0,
            sum: 0.0,
            mean: 0.0,
            m2: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            first: None,
            last: None,
            sketch: with_sketch.then(|| Box::new(DDSketch::new(SketchConfig::defaults()))),
        }
    }

    #[inline]
    fn add_f64(&mut self, v: f64) {
        self.numeric += 1;
        self.sum += v;
        let delta = v - self.mean;
        self.mean += delta / self.numeric as f64;
        self.m2 += delta * (v - self.mean);
        if v < self.min {
            self.min = v;
        }
        if v > self.max {
            self.max = v;
        }
        if let Some(s) = &mut self.sketch {
            s.add(v);
        }
    }

    /// Adds a run of floats: sum, min and max in one vectorizable pass, M2 in a second, then
    /// merged with Chan's parallel formula (no division per value).
    fn add_f64_slice(&mut self, values: &[f64]) {
        if values.is_empty() {
            return;
        }
        let n = values.len() as u64;
        let (mut sum, mut min, mut max) = (0.0f64, f64::INFINITY, f64::NEG_INFINITY);
        for &v in values {
            sum += v;
            min = min.min(v);
            max = max.max(v);
        }
        let mean = sum / n as f64;
        let m2: f64 = values.iter().map(|&v| (v - mean) * (v - mean)).sum();
        let total = self.numeric + n;
        let delta = mean - self.mean;
        self.m2 += m2 + delta * delta * (self.numeric as f64 * n as f64) / total as f64;
        self.mean += delta * n as f64 / total as f64;
        self.numeric = total;
        self.sum += sum;
        self.min = self.min.min(min);
        self.max = self.max.max(max);
        if let Some(s) = &mut self.sketch {
            for &v in values {
                s.add(v);
            }
        }
    }

    /// Adds a run of numeric values whose first and last (by time) are given; their
    /// `FieldValue`s are built only when they become the aggregate's first or last.
    fn add_run(
        &mut self,
        values: &[f64],
        first: (TimestampNs, impl FnOnce() -> FieldValue),
        last: (TimestampNs, impl FnOnce() -> FieldValue),
    ) {
        self.count += values.len() as u64;
        self.add_f64_slice(values);
        if self.first.as_ref().is_none_or(|(t, _)| first.0 < *t) {
            self.first = Some((first.0, (first.1)()));
        }
        if self.last.as_ref().is_none_or(|(t, _)| last.0 >= *t) {
            self.last = Some((last.0, (last.1)()));
        }
    }

    fn add(&mut self, ts: TimestampNs, v: FieldValue) {
        self.count += 1;
        // Booleans count as 0/1: `sum` is the number of trues, `mean` the share of them.
        if let Some(x) = v.as_f64() {
            self.add_f64(x);
        }
        if self.first.as_ref().is_none_or(|(t, _)| ts < *t) {
            self.first = Some((ts, v.clone()));
        }
        if self.last.as_ref().is_none_or(|(t, _)| ts >= *t) {
            self.last = Some((ts, v));
        }
    }

    /// Merges another partial of the same field and bucket.
    pub fn merge(&mut self, o: FieldAgg) {
        if o.numeric > 0 {
            let n = self.numeric + o.numeric;
            let delta = o.mean - self.mean;
            self.m2 += o.m2 + delta * delta * (self.numeric as f64 * o.numeric as f64) / n as f64;
            self.mean += delta * o.numeric as f64 / n as f64;
            self.numeric = n;
            self.sum += o.sum;
            self.min = self.min.min(o.min);
            self.max = self.max.max(o.max);
        }
        self.count += o.count;
        if let Some((t, v)) = o.first {
            if self.first.as_ref().is_none_or(|(st, _)| t < *st) {
                self.first = Some((t, v));
            }
        }
        if let Some((t, v)) = o.last {
            if self.last.as_ref().is_none_or(|(st, _)| t > *st) {
                self.last = Some((t, v));
            }
        }
        if let (Some(a), Some(b)) = (&mut self.sketch, o.sketch) {
            // Sketches built with the same config always merge.
            let _ = a.merge(&b);
        }
    }

    /// The final value of one aggregate.
    pub fn finish(&self, kind: AggKind, percentile: f64) -> Option<FieldValue> {
        let numeric = self.numeric > 0;
        match kind {
            AggKind::Count => Some(FieldValue::I64(self.count as i64)),
            AggKind::Sum => numeric.then_some(FieldValue::F64(self.sum)),
            AggKind::Min => numeric.then_some(FieldValue::F64(self.min)),
            AggKind::Max => numeric.then_some(FieldValue::F64(self.max)),
            AggKind::Mean => numeric.then(|| FieldValue::F64(self.sum / self.numeric as f64)),
            AggKind::First => self.first.as_ref().map(|(_, v)| v.clone()),
            AggKind::Last => self.last.as_ref().map(|(_, v)| v.clone()),
            AggKind::Stddev => {
                (self.numeric > 1).then(|| FieldValue::F64((self.m2 / (self.numeric - 1) as f64).sqrt()))
            }
            AggKind::Percentile => {
                let s = self.sketch.as_ref()?;
                s.quantile(percentile / 100.0).ok().flatten().map(FieldValue::F64)
            }
        }
    }
}

/// A shard's (or the merged) partial aggregates: group → bucket start → one slot per field.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct PartialAggregates {
    /// Fields, in column order.
    pub fields: Vec<String>,
    /// Group-by tag values → bucket start → per-field aggregate.
    pub groups: BTreeMap<Vec<String>, BTreeMap<TimestampNs, Vec<Option<FieldAgg>>>>,
    with_sketch: bool,
}

/// Bucket start of `ts`: epoch-aligned buckets of `bucket_ns`, or the query start for a single
/// bucket.
#[inline]
pub fn bucket_of(ts: TimestampNs, bucket_ns: i64, start_ns: TimestampNs) -> TimestampNs {
    if bucket_ns == 0 {
        start_ns
    } else {
        hotlake_engine::shard::window_start(ts, bucket_ns)
    }
}

/// The bucket of row `i` and the end (exclusive) of the run of rows from `i` in that bucket.
#[inline]
fn bucket_run(timestamps: &[TimestampNs], i: usize, q: &Query) -> (TimestampNs, usize) {
    let b = bucket_of(timestamps[i], q.bucket_ns, q.start_ns);
    if q.bucket_ns == 0 {
        return (b, timestamps.len());
    }
    let end = b.saturating_add(q.bucket_ns);
    (b, i + timestamps[i..].partition_point(|&t| t < end))
}

impl PartialAggregates {
    /// Empty partials for `fields`.
    pub fn new(fields: Vec<String>, with_sketch: bool) -> Self {
        PartialAggregates { fields, groups: BTreeMap::new(), with_sketch }
    }

    /// Adds a series' merged block to `group`.
    pub fn add_block(&mut self, group: &[String], block: &Block, q: &Query) {
        // A group appears only with rows: a block the filters emptied adds nothing.
        if block.timestamps.is_empty() {
            return;
        }
        let nfields = self.fields.len();
        let with_sketch = self.with_sketch;
        let buckets = match self.groups.get_mut(group) {
            Some(b) => b,
            None => self.groups.entry(group.to_vec()).or_default(),
        };
        for col in &block.columns {
            let Some(fi) = self.fields.iter().position(|f| *f == col.name) else { continue };
            // Fast path: a float column with every row present, the common telemetry shape; the
            // run's values are added straight from the column.
            if let (ColumnValues::F64(values), None) = (&col.values, &col.present) {
                let mut i = 0;
                while i < values.len() {
                    let (b, j) = bucket_run(&block.timestamps, i, q);
                    let slots = buckets.entry(b).or_insert_with(|| vec![None; nfields]);
                    let agg = slots[fi].get_or_insert_with(|| FieldAgg::new(with_sketch));
                    let (t0, tn) = (block.timestamps[i], block.timestamps[j - 1]);
                    agg.add_run(
                        &values[i..j],
                        (t0, || FieldValue::F64(values[i])),
                        (tn, || FieldValue::F64(values[j - 1])),
                    );
                    i = j;
                }
                continue;
            }
            // Numeric columns with absent rows (or integers): per bucket run, gather the present
            // values as f64 and add them at once, as above.
            if matches!(col.values, ColumnValues::F64(_) | ColumnValues::I64(_) | ColumnValues::U64(_)) {
                let mut scratch: Vec<f64> = Vec::new();
                let (mut i, mut vi) = (0, 0);
                while i < block.timestamps.len() {
                    let (b, j) = bucket_run(&block.timestamps, i, q);
                    scratch.clear();
                    // (row, value index) of the first and last present rows of the run.
                    let (mut first, mut last) = (None, None);
                    for row in i..j {
                        if col.present.as_ref().is_some_and(|p| !p[row]) {
                            continue;
                        }
                        scratch.push(match &col.values {
                            ColumnValues::F64(v) => v[vi],
                            ColumnValues::I64(v) => v[vi] as f64,
                            ColumnValues::U64(v) => v[vi] as f64,
                            _ => unreachable!("numeric columns only"),
                        });
                        first.get_or_insert((row, vi));
                        last = Some((row, vi));
                        vi += 1;
                    }
                    if let (Some((r0, v0)), Some((rn, vn))) = (first, last) {
                        let slots = buckets.entry(b).or_insert_with(|| vec![None; nfields]);
                        let agg = slots[fi].get_or_insert_with(|| FieldAgg::new(with_sketch));
                        agg.add_run(
                            &scratch,
                            (block.timestamps[r0], || value_at(&col.values, v0)),
                            (block.timestamps[rn], || value_at(&col.values, vn)),
                        );
                    }
                    i = j;
                }
                continue;
            }
            let mut vi = 0;
            for (row, &ts) in block.timestamps.iter().enumerate() {
                if col.present.as_ref().is_some_and(|p| !p[row]) {
                    continue;
                }
                let v = value_at(&col.values, vi);
                vi += 1;
                let b = bucket_of(ts, q.bucket_ns, q.start_ns);
                let slots = buckets.entry(b).or_insert_with(|| vec![None; nfields]);
                slots[fi].get_or_insert_with(|| FieldAgg::new(with_sketch)).add(ts, v);
            }
        }
    }

    /// The same partials with slots moved to match `fields` (a superset of the current ones).
    pub fn realign(self, fields: &[String]) -> PartialAggregates {
        let positions: Vec<usize> =
            self.fields.iter().map(|f| fields.iter().position(|x| x == f).expect("realign to a superset")).collect();
        let mut groups = BTreeMap::new();
        for (g, buckets) in self.groups {
            let mut nb = BTreeMap::new();
            for (b, slots) in buckets {
                let mut aligned: Vec<Option<FieldAgg>> = vec![None; fields.len()];
                for (i, slot) in slots.into_iter().enumerate() {
                    aligned[positions[i]] = slot;
                }
                nb.insert(b, aligned);
            }
            groups.insert(g, nb);
        }
        PartialAggregates { fields: fields.to_vec(), groups, with_sketch: self.with_sketch }
    }

    /// Merges another shard's partials (same fields).
    pub fn merge(&mut self, other: PartialAggregates) {
        debug_assert_eq!(self.fields, other.fields);
        for (group, buckets) in other.groups {
            let mine = self.groups.entry(group).or_default();
            for (b, slots) in buckets {
                match mine.get_mut(&b) {
                    None => {
                        mine.insert(b, slots);
                    }
                    Some(existing) => {
                        for (e, s) in existing.iter_mut().zip(slots) {
                            match (e.as_mut(), s) {
                                (Some(e), Some(s)) => e.merge(s),
                                (None, Some(s)) => *e = Some(s),
                                (_, None) => {}
                            }
                        }
                    }
                }
            }
        }
    }

    /// Rows [`PartialAggregates::finish`] would return: per group its buckets (every bucket
    /// of the range when filling), cut by the query's limit. Counted before anything is built,
    /// so that many groups times many filled buckets cannot take the node's memory.
    pub fn rows_after_finish(&self, q: &Query) -> u128 {
        let filled = if q.fill == Fill::None || q.bucket_ns == 0 {
            None
        } else {
            let first = bucket_of(q.start_ns, q.bucket_ns, q.start_ns) as i128;
            Some(((q.end_ns as i128 - first).max(0) + q.bucket_ns as i128 - 1) / q.bucket_ns as i128)
        };
        self.groups
            .values()
            .map(|buckets| {
                let n = filled.unwrap_or(buckets.len() as i128).max(0) as u128;
                if q.limit > 0 {
                    n.min(q.limit as u128)
                } else {
                    n
                }
            })
            .sum()
    }

    /// Final result groups, with fill, order and limit applied; refused when they would hold
    /// more than `rows_max` rows (checked before they are built).
    pub fn finish(self, q: &Query, rows_max: u64) -> Result<Vec<ResultGroup>, Error> {
        let rows = self.rows_after_finish(q);
        if rows > u128::from(rows_max) {
            return Err(Error::LimitExceeded {
                limit: "limits.query_rows_max",
                message: format!(
                    "query would return {rows} rows ({} groups); add a limit, fewer groups, a wider bucket or no fill",
                    self.groups.len()
                ),
            });
        }
        let columns: Vec<String> =
            self.fields.iter().flat_map(|f| q.aggregates.iter().map(move |a| format!("{}({f})", a.name()))).collect();
        let mut out = Vec::with_capacity(self.groups.len());
        for (group, buckets) in self.groups {
            let finish_slots = |slots: &Vec<Option<FieldAgg>>| -> Vec<Option<FieldValue>> {
                slots
                    .iter()
                    .flat_map(|s| {
                        q.aggregates.iter().map(move |a| s.as_ref().and_then(|agg| agg.finish(*a, q.percentile)))
                    })
                    .collect()
            };
            let mut rows: Vec<(TimestampNs, Vec<Option<FieldValue>>)> = Vec::new();
            if q.fill == Fill::None || q.bucket_ns == 0 {
                for (b, slots) in &buckets {
                    rows.push((*b, finish_slots(slots)));
                }
            } else {
                let mut b = bucket_of(q.start_ns, q.bucket_ns, q.start_ns);
                let mut previous: Option<Vec<Option<FieldValue>>> = None;
                while b < q.end_ns {
                    let row = match buckets.get(&b) {
                        Some(slots) => finish_slots(slots),
                        None => match q.fill {
                            Fill::Previous => previous.clone().unwrap_or_else(|| vec![None; columns.len()]),
                            Fill::Value(v) => vec![Some(FieldValue::F64(v)); columns.len()],
                            _ => vec![None; columns.len()],
                        },
                    };
                    previous = Some(row.clone());
                    rows.push((b, row));
                    b = match b.checked_add(q.bucket_ns) {
                        Some(n) => n,
                        None => break,
                    };
                }
            }
            if q.descending {
                rows.reverse();
            }
            if q.limit > 0 {
                rows.truncate(q.limit);
            }
            let tags = q.group_by.iter().cloned().zip(group).collect();
            out.push(ResultGroup { tags, columns: columns.clone(), rows });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hotlake_engine::codec::Column;

    fn query(bucket_ns: i64) -> Query {
        Query {
            tenant: "t".into(),
            measurement: "m".into(),
            fields: vec![],
            predicates: vec![],
            filters: vec![],
            start_ns: 0,
            end_ns: 1_000,
            aggregates: vec![AggKind::Count],
            percentile: 50.0,
            bucket_ns,
            group_by: vec![],
            fill: Fill::None,
            descending: false,
            limit: 0,
            allow_partial: false,
        }
    }

    /// `fill` with `group_by` built every group × bucket before the row limit was checked, so
    /// one request could take the node's memory. The rows are counted first now.
    #[test]
    fn filled_groups_are_counted_before_they_are_built() {
        let block = Block {
            timestamps: vec![5],
            columns: vec![Column { name: "v".into(), present: None, values: ColumnValues::F64(vec![1.0]) }],
        };
        let q = Query { bucket_ns: 10, fill: Fill::Value(0.0), ..query(10) };
        let mut p = PartialAggregates::new(vec!["v".into()], false);
        for g in 0..1000 {
            p.add_block(&[g.to_string()], &block, &q);
        }
        // 1000 groups × 100 buckets of 10 ns over [0, 1000).
        assert_eq!(p.rows_after_finish(&q), 100_000);
        assert_eq!(p.rows_after_finish(&Query { limit: 3, ..q.clone() }), 3_000);
        assert_eq!(p.rows_after_finish(&Query { fill: Fill::None, ..q.clone() }), 1_000);
        match p.clone().finish(&q, 99_999) {
            Err(Error::LimitExceeded { limit, .. }) => assert_eq!(limit, "limits.query_rows_max"),
            other => panic!("expected the row limit, got {other:?}"),
        }
        let groups = p.finish(&q, 100_000).unwrap();
        assert_eq!(groups.iter().map(|g| g.rows.len()).sum::<usize>(), 100_000);
    }

    #[test]
    fn run_paths_equal_row_by_row_aggregation_for_every_column_shape() {
        // Rows every 7 ns; every third row lacks the integer, every fifth lacks the float.
        let timestamps: Vec<i64> = (0..100).map(|i| i * 7).collect();
        let ints_present: Vec<bool> = (0..100).map(|i| i % 3 != 0).collect();
        let floats_present: Vec<bool> = (0..100).map(|i| i % 5 != 0).collect();
        let ints: Vec<i64> = (0..100).filter(|i| i % 3 != 0).map(|i| (i * 37) % 11 - 5).collect();
        let floats: Vec<f64> = (0..100).filter(|i| i % 5 != 0).map(|i| ((i * 13) % 17) as f64 / 4.0).collect();
        let dense: Vec<f64> = (0..100).map(|i| i as f64).collect();
        let block = Block {
            timestamps: timestamps.clone(),
            columns: vec![
                Column {
                    name: "i".into(),
                    present: Some(ints_present.clone()),
                    values: ColumnValues::I64(ints.clone()),
                },
                Column {
                    name: "f".into(),
                    present: Some(floats_present.clone()),
                    values: ColumnValues::F64(floats.clone()),
                },
                Column { name: "d".into(), present: None, values: ColumnValues::F64(dense.clone()) },
            ],
        };
        for bucket_ns in [0, 50] {
            let q = query(bucket_ns);
            let mut fast = PartialAggregates::new(vec!["i".into(), "f".into(), "d".into()], false);
            fast.add_block(&[], &block, &q);
            // Reference: one value at a time.
            let mut reference: BTreeMap<(usize, i64), FieldAgg> = BTreeMap::new();
            let mut add = |fi: usize, present: &[bool], value: &dyn Fn(usize) -> FieldValue| {
                let mut vi = 0;
                for (row, &ts) in timestamps.iter().enumerate() {
                    if present[row] {
                        let b = bucket_of(ts, bucket_ns, 0);
                        reference.entry((fi, b)).or_insert_with(|| FieldAgg::new(false)).add(ts, value(vi));
                        vi += 1;
                    }
                }
            };
            add(0, &ints_present, &|vi| FieldValue::I64(ints[vi]));
            add(1, &floats_present, &|vi| FieldValue::F64(floats[vi]));
            add(2, &[true; 100], &|vi| FieldValue::F64(dense[vi]));
            let buckets = &fast.groups[&Vec::<String>::new()];
            for ((fi, b), want) in &reference {
                let got = buckets[b][*fi].as_ref().expect("bucket present");
                for kind in [AggKind::Count, AggKind::Min, AggKind::Max, AggKind::First, AggKind::Last] {
                    assert_eq!(got.finish(kind, 50.0), want.finish(kind, 50.0), "{kind:?} field {fi} bucket {b}");
                }
                for kind in [AggKind::Sum, AggKind::Mean, AggKind::Stddev] {
                    let (Some(FieldValue::F64(a)), Some(FieldValue::F64(w))) =
                        (got.finish(kind, 50.0), want.finish(kind, 50.0))
                    else {
                        assert_eq!(got.finish(kind, 50.0), want.finish(kind, 50.0));
                        continue;
                    };
                    assert!((a - w).abs() < 1e-9 * w.abs().max(1.0), "{kind:?} field {fi} bucket {b}: {a} vs {w}");
                }
            }
        }
    }

    #[test]
    fn merged_partials_equal_one_pass_over_all_values() {
        let values: Vec<f64> = (0..1000).map(|i| ((i * 7919) % 1000) as f64 / 10.0).collect();
        let mut whole = FieldAgg::new(true);
        for (i, &v) in values.iter().enumerate() {
            whole.add(i as i64, FieldValue::F64(v));
        }
        let mut parts = FieldAgg::new(true);
        for chunk in values.chunks(137).enumerate() {
            let mut p = FieldAgg::new(true);
            for (j, &v) in chunk.1.iter().enumerate() {
                p.add((chunk.0 * 137 + j) as i64, FieldValue::F64(v));
            }
            parts.merge(p);
        }
        for kind in [AggKind::Count, AggKind::Sum, AggKind::Min, AggKind::Max, AggKind::First, AggKind::Last] {
            assert_eq!(whole.finish(kind, 50.0), parts.finish(kind, 50.0), "{kind:?}");
        }
        let (Some(FieldValue::F64(a)), Some(FieldValue::F64(b))) =
            (whole.finish(AggKind::Stddev, 0.0), parts.finish(AggKind::Stddev, 0.0))
        else {
            panic!("stddev missing")
        };
        assert!((a - b).abs() < 1e-9, "{a} vs {b}");
        let Some(FieldValue::F64(p50)) = parts.finish(AggKind::Percentile, 50.0) else { panic!() };
        assert!((p50 - 50.0).abs() < 1.0, "p50 {p50}");
    }
}
