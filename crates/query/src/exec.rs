//! Query execution on one shard (next to the data) and the coordinator's merge of shard
//! answers.

use super::aggregate::PartialAggregates;
use super::filter;
use super::plan::select_series;
use super::{LastQuery, LastRow, Query, QueryResult, ResultGroup};
use hotlake_engine::read::{read_series, read_series_parts, value_at};
use hotlake_engine::shard::{window_start, ShardData};
use hotlake_types::error::{Error, Result};
use hotlake_types::limits::Limits;
use hotlake_types::model::FieldValue;

/// What a shard returns for a query.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub enum ShardAnswer {
    /// Raw rows, one group per series.
    Raw(Vec<ResultGroup>),
    /// Partial aggregates.
    Aggregates(PartialAggregates),
}

/// A shard's answer and how many points it read.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct ShardResult {
    /// The answer.
    pub answer: ShardAnswer,
    /// Points read.
    pub points_scanned: u64,
}

/// A series a query reads: its id, its tags and its newest timestamp, if any.
type SelectedSeries = (u32, Vec<(String, String)>, Option<i64>);

/// Runs `q` on one shard. `points_budget` is what is left of `limits.query_points_max`.
// tidy: long (the per-shard scan loop with its fast paths side by side, so they stay consistent).
pub fn run_on_shard(shard: &ShardData, q: &Query, limits: &Limits, points_budget: u64) -> Result<ShardResult> {
    // Take the view before reading the index so every series the view can see is selected.
    let view = shard.read_view();
    let (series, cutoff, all_fields) = {
        let inner = shard.read();
        let ids = select_series(&inner.index, &q.tenant, &q.measurement, &q.predicates);
        // Each selected series with its tags and its newest timestamp (from the index's latest
        // values), which bounds a newest-first read.
        let series: Vec<SelectedSeries> = ids
            .iter()
            .map(|&id| {
                let s = inner.index.get(id);
                (id, s.tags(), s.last.iter().map(|l| l.timestamp_ns).max())
            })
            .collect();
        let mut all_fields: Vec<String> = Vec::new();
        if q.fields.is_empty() {
            for &id in &ids {
                for (f, _) in &inner.index.get(id).types {
                    let name = inner.index.field_name(*f);
                    if !all_fields.iter().any(|x| x == name) {
                        all_fields.push(name.to_string());
                    }
                }
            }
            all_fields.sort();
        }
        (series, inner.retention_cutoff(&q.tenant), all_fields)
    };
    let fields: Vec<String> = if q.fields.is_empty() { all_fields } else { q.fields.clone() };
    // Filters may test fields the query does not return: read those too.
    let mut read_fields = fields.clone();
    for f in &q.filters {
        if !read_fields.contains(&f.field) {
            read_fields.push(f.field.clone());
        }
    }
    let start = q.start_ns.max(cutoff);
    let mut scanned = 0u64;
    let check_budget = |scanned: u64| -> Result<()> {
        if scanned > points_budget {
            return Err(Error::LimitExceeded {
                limit: "limits.query_points_max",
                message: format!("query reads more than {} points", limits.query_points_max),
            });
        }
        Ok(())
    };
    if q.aggregates.is_empty() {
        let mut groups = Vec::new();
        let mut rows_total = 0usize;
        for (sid, tags, _) in series {
            let block = read_series(shard, &view, sid, start, q.end_ns, Some(&read_fields))?;
            scanned += block.timestamps.len() as u64 * block.columns.len().max(1) as u64;
            check_budget(scanned)?;
            let block = filter::apply(block, &q.filters);
            if block.timestamps.is_empty() {
                continue;
            }
            let columns: Vec<String> =
                fields.iter().filter(|f| block.columns.iter().any(|c| &c.name == *f)).cloned().collect();
            let mut rows: Vec<(i64, Vec<Option<FieldValue>>)> =
                block.timestamps.iter().map(|&t| (t, Vec::with_capacity(columns.len()))).collect();
            for name in &columns {
                let col = block.columns.iter().find(|c| &c.name == name).expect("filtered above");
                let mut vi = 0;
                for (row, r) in rows.iter_mut().enumerate() {
                    if col.present.as_ref().is_none_or(|p| p[row]) {
                        r.1.push(Some(value_at(&col.values, vi)));
                        vi += 1;
                    } else {
                        r.1.push(None);
                    }
                }
            }
            if q.descending {
                rows.reverse();
            }
            if q.limit > 0 {
                rows.truncate(q.limit);
            }
            rows_total += rows.len();
            if rows_total as u64 > limits.query_rows_max {
                return Err(Error::LimitExceeded {
                    limit: "limits.query_rows_max",
                    message: format!(
                        "query returns more than {} rows; add a limit or aggregate",
                        limits.query_rows_max
                    ),
                });
            }
            groups.push(ResultGroup { tags, columns, rows });
        }
        return Ok(ShardResult { answer: ShardAnswer::Raw(groups), points_scanned: scanned });
    }
    let with_sketch = q.aggregates.contains(&super::AggKind::Percentile);
    let mut partial = PartialAggregates::new(fields.clone(), with_sketch);
    // Only `last` over one bucket: read each series newest first and stop once every field
    // has a value that passed the filters ("the latest reading with low fuel").
    let newest_first = q.bucket_ns == 0 && q.aggregates.iter().all(|a| *a == super::AggKind::Last);
    let window = shard.options().block_window_ns;
    for (sid, tags, newest) in series {
        let group: Vec<String> = q
            .group_by
            .iter()
            .map(|k| tags.iter().find(|(tk, _)| tk == k).map(|(_, v)| v.clone()).unwrap_or_default())
            .collect();
        let mut seen: Vec<&String> = Vec::new();
        // Start at the series' newest point, not at the end of the range: a range reaching far
        // past the data would otherwise spend the doubling chunks on empty windows.
        let mut chunk_end = match newest {
            Some(t) if newest_first => q.end_ns.min(t.saturating_add(1)),
            _ => q.end_ns,
        };
        // Chunks of 1, 2, 4, ... block windows, so a match far back costs a few reads (each
        // read also walks the memtables) rather than one per window.
        let mut chunk_windows = 1i64;
        while chunk_end > start {
            let chunk_start = if newest_first {
                let back = window.saturating_mul(chunk_windows);
                start.max(window_start(chunk_end.saturating_sub(1), window).saturating_sub(back - window))
            } else {
                start
            };
            let parts = read_series_parts(shard, &view, sid, chunk_start, chunk_end, Some(&read_fields))?;
            for block in parts {
                scanned += block.columns.iter().map(|c| c.values.len() as u64).sum::<u64>();
                check_budget(scanned)?;
                let block = filter::apply(block, &q.filters);
                if newest_first {
                    for c in &block.columns {
                        if let Some(f) = fields.iter().find(|f| **f == c.name) {
                            if !seen.contains(&f) {
                                seen.push(f);
                            }
                        }
                    }
                }
                partial.add_block(&group, &block, q);
            }
            if !newest_first || seen.len() == fields.len() {
                break;
            }
            chunk_end = chunk_start;
            chunk_windows = chunk_windows.saturating_mul(2);
        }
    }
    Ok(ShardResult { answer: ShardAnswer::Aggregates(partial), points_scanned: scanned })
}

/// Merges shard answers into the final result, refusing one of more than `rows_max` rows (each
/// shard keeps to the limit itself; together they may not).
pub fn merge_answers(q: &Query, answers: Vec<ShardResult>, rows_max: u64) -> Result<QueryResult, Error> {
    let points_scanned = answers.iter().map(|a| a.points_scanned).sum();
    if q.aggregates.is_empty() {
        let mut groups: Vec<ResultGroup> = Vec::new();
        let mut rows = 0u64;
        for a in answers {
            if let ShardAnswer::Raw(g) = a.answer {
                rows += g.iter().map(|g| g.rows.len() as u64).sum::<u64>();
                if rows > rows_max {
                    return Err(Error::LimitExceeded {
                        limit: "limits.query_rows_max",
                        message: format!("query returns more than {rows_max} rows; add a limit or aggregate"),
                    });
                }
                groups.extend(g);
            }
        }
        groups.sort_by(|a, b| a.tags.cmp(&b.tags));
        return Ok(QueryResult { groups, points_scanned, missing_shards: Vec::new() });
    }
    let mut merged: Option<PartialAggregates> = None;
    for a in answers {
        if let ShardAnswer::Aggregates(p) = a.answer {
            match &mut merged {
                None => merged = Some(p),
                Some(m) if m.fields == p.fields => m.merge(p),
                Some(m) => {
                    // Shards derived different field lists (a query without explicit fields):
                    // align both on the union, by name.
                    let mut union = m.fields.clone();
                    for f in &p.fields {
                        if !union.contains(f) {
                            union.push(f.clone());
                        }
                    }
                    union.sort();
                    let mine = std::mem::take(m).realign(&union);
                    *m = mine;
                    m.merge(p.realign(&union));
                }
            }
        }
    }
    let groups = match merged {
        Some(m) => m.finish(q, rows_max)?,
        None => Vec::new(),
    };
    Ok(QueryResult { groups, points_scanned, missing_shards: Vec::new() })
}

/// Answers `Last` on one shard from the series index (no history is read).
pub fn last_on_shard(shard: &ShardData, q: &LastQuery) -> Vec<LastRow> {
    let inner = shard.read();
    let ids = select_series(&inner.index, &q.tenant, &q.measurement, &q.predicates);
    let mut rows = Vec::with_capacity(ids.len());
    for id in ids {
        let s = inner.index.get(id);
        let mut values: Vec<(String, i64, FieldValue)> = s
            .last
            .iter()
            .map(|l| (inner.index.field_name(l.field).to_string(), l.timestamp_ns, l.value.clone()))
            .filter(|(name, _, _)| q.fields.is_empty() || q.fields.contains(name))
            .collect();
        values.sort_by(|a, b| a.0.cmp(&b.0));
        if values.is_empty() {
            continue;
        }
        rows.push(LastRow { device: s.device.to_string(), tags: s.tags(), values });
    }
    rows
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::filter::{CmpOp, FieldFilter, FilterOp, Operand};
    use crate::{AggKind, Fill};
    use hotlake_engine::applied::EntryId;
    use hotlake_engine::batch::{ColumnWrite, SeriesWrite, ShardCommand, ShardWrite, Values};
    use hotlake_engine::shard::ShardOptions;
    use hotlake_storage::{MemEngine, ShardId};

    const HOUR: i64 = 3600 * 1_000_000_000;

    /// One row per hour `0..hours` of device `d1`: `v` is the hour, `s` is 1 at `flagged`
    /// hours and 0 elsewhere, `w` only at hour 0.
    fn write(hours: i64, flagged: &[i64]) -> ShardCommand {
        ShardCommand::Write(ShardWrite {
            tenant: "t".into(),
            series: vec![SeriesWrite {
                key: "m,device_id=d1".into(),
                device: "d1".into(),
                timestamps: (0..hours).map(|h| h * HOUR).collect(),
                columns: vec![
                    ColumnWrite {
                        field: "v".into(),
                        absent_rows: vec![],
                        values: Values::F64((0..hours).map(|h| h as f64).collect()),
                    },
                    ColumnWrite {
                        field: "s".into(),
                        absent_rows: vec![],
                        values: Values::F64((0..hours).map(|h| f64::from(u8::from(flagged.contains(&h)))).collect()),
                    },
                    ColumnWrite {
                        field: "w".into(),
                        absent_rows: (1..hours as u32).collect(),
                        values: Values::F64(vec![42.0]),
                    },
                ],
            }],
        })
    }

    fn last(fields: &[&str], filters: Vec<FieldFilter>) -> Query {
        Query {
            tenant: "t".into(),
            measurement: "m".into(),
            fields: fields.iter().map(|f| f.to_string()).collect(),
            predicates: vec![],
            filters,
            start_ns: 0,
            end_ns: 100 * HOUR,
            aggregates: vec![AggKind::Last],
            percentile: 50.0,
            bucket_ns: 0,
            group_by: vec![],
            fill: Fill::None,
            descending: false,
            limit: 0,
            allow_partial: false,
        }
    }

    fn answer(shard: &ShardData, q: &Query) -> (Vec<Option<FieldValue>>, u64) {
        let r = run_on_shard(shard, q, &Limits::default(), u64::MAX).unwrap();
        let points = r.points_scanned;
        let groups = merge_answers(q, vec![r], u64::MAX).unwrap().groups;
        (groups.first().map(|g| g.rows[0].1.clone()).unwrap_or_default(), points)
    }

    /// `last` reads newest first over block windows (flushed and in the memtable) and stops at
    /// the first window with a passing row; fields found in different windows each get their
    /// own latest value.
    #[test]
    fn last_only_queries_read_newest_first_and_stop_at_the_first_match() {
        let options = ShardOptions { block_window_ns: HOUR, ..ShardOptions::default() };
        let shard = ShardData::open(Arc::new(MemEngine::new()), ShardId(0), options).unwrap();
        shard.apply(EntryId { term: 1, leader: 1, index: 1 }, write(40, &[3, 30])).unwrap();
        let cut = shard.freeze();
        shard.flush(cut).unwrap();
        let gt = |field: &str, value: f64| FieldFilter::number(field, CmpOp::Gt, value);

        // The newest flagged row is hour 30: found after reading a few windows, not all 40.
        let (values, scanned) = answer(&shard, &last(&["v"], vec![gt("s", 0.5)]));
        assert_eq!(values, vec![Some(FieldValue::F64(30.0))]);
        assert!(scanned < 40, "read {scanned} points for a match 10 windows back");
        // Only hour 3 passes: every older window is read until it is found.
        let (values, _) = answer(&shard, &last(&["v"], vec![gt("v", 2.5), FieldFilter::number("v", CmpOp::Lt, 3.5)]));
        assert_eq!(values, vec![Some(FieldValue::F64(3.0))]);
        // `w` exists only at hour 0: reading goes on past the window that gave `v`.
        let (values, _) = answer(&shard, &last(&["v", "w"], vec![]));
        assert_eq!(values, vec![Some(FieldValue::F64(39.0)), Some(FieldValue::F64(42.0))]);
        // Nothing passes: no group at all.
        let (values, _) = answer(&shard, &last(&["v"], vec![gt("s", 2.0)]));
        assert!(values.is_empty());
    }

    /// A series with a string field `error` and a boolean field `reboot`, one row per hour.
    fn events(errors: &[&str], reboots: &[bool]) -> ShardCommand {
        ShardCommand::Write(ShardWrite {
            tenant: "t".into(),
            series: vec![SeriesWrite {
                key: "m,device_id=d1".into(),
                device: "d1".into(),
                timestamps: (0..errors.len() as i64).map(|h| h * HOUR).collect(),
                columns: vec![
                    ColumnWrite {
                        field: "error".into(),
                        absent_rows: vec![],
                        values: Values::Str(errors.iter().map(|e| e.to_string()).collect()),
                    },
                    ColumnWrite { field: "reboot".into(), absent_rows: vec![], values: Values::Bool(reboots.to_vec()) },
                ],
            }],
        })
    }

    /// Filters on strings and booleans select rows on the shard, and booleans aggregate as 0/1.
    #[test]
    fn string_and_boolean_filters_select_rows_and_booleans_sum_as_zero_or_one() {
        let shard = ShardData::open(Arc::new(MemEngine::new()), ShardId(0), ShardOptions::default()).unwrap();
        let errors = ["OK", "E_DECODER", "E_TUNER", "E_DECODER", "OK"];
        let reboots = [false, true, true, false, true];
        shard.apply(EntryId { term: 1, leader: 1, index: 1 }, events(&errors, &reboots)).unwrap();
        let with = |aggregates: Vec<AggKind>, field: &str, filters: Vec<FieldFilter>| Query {
            fields: vec![field.into()],
            aggregates,
            ..last(&[], filters)
        };
        let text =
            |op: &str, operand: Operand| FieldFilter::new("error", FilterOp::parse(op).unwrap(), operand).unwrap();
        let decoder = text("=", Operand::Str("E_DECODER".into()));
        let (values, _) = answer(&shard, &with(vec![AggKind::Count], "error", vec![decoder.clone()]));
        assert_eq!(values, vec![Some(FieldValue::I64(2))]);
        let (values, _) =
            answer(&shard, &with(vec![AggKind::Count], "error", vec![text("prefix", Operand::Str("E_".into()))]));
        assert_eq!(values, vec![Some(FieldValue::I64(3))]);
        let rebooted = FieldFilter::new("reboot", FilterOp::Eq, Operand::Bool(true)).unwrap();
        let (values, _) = answer(&shard, &with(vec![AggKind::Count], "error", vec![rebooted.clone(), decoder]));
        assert_eq!(values, vec![Some(FieldValue::I64(1))]);
        let (values, _) = answer(&shard, &with(vec![AggKind::Last], "error", vec![rebooted]));
        assert_eq!(values, vec![Some(FieldValue::Str("OK".into()))]);
        // Three reboots out of five rows: sum 3, mean 0.6, max 1.
        let (values, _) = answer(&shard, &with(vec![AggKind::Sum, AggKind::Mean, AggKind::Max], "reboot", vec![]));
        assert_eq!(values, vec![Some(FieldValue::F64(3.0)), Some(FieldValue::F64(0.6)), Some(FieldValue::F64(1.0))]);
    }
}
