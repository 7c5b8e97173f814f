//! Property test: the shard engine (apply, freeze, flush, restart with log replay, merge
//! reader, last values) equals a plain model under random out-of-order writes with duplicates.

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;

use super::batch::{ColumnWrite, SeriesWrite, ShardCommand, ShardWrite, Values};
use super::read::{read_series, value_at};
use super::shard::{ShardData, ShardOptions};
use hotlake_storage::{Engine, MemEngine, ShardId};
use hotlake_types::model::{FieldValue, TimestampNs};

#[derive(Clone, Debug)]
enum Op {
    /// (series, [(ts, field a value?, field b value?)])
    Write(u8, Vec<(i64, Option<i64>, Option<u8>)>),
    Flush,
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..3, prop::collection::vec((0i64..40, prop::option::of(-5i64..5), prop::option::of(0u8..4)), 1..8))
            .prop_map(|(s, rows)| Op::Write(s, rows)),
        1 => Just(Op::Flush),
        1 => Just(Op::Restart),
    ]
}

type Model = BTreeMap<(u8, i64, &'static str), FieldValue>;

fn to_command(series: u8, rows: &[(i64, Option<i64>, Option<u8>)]) -> Option<ShardCommand> {
    let rows: Vec<_> = rows.iter().filter(|(_, a, b)| a.is_some() || b.is_some()).cloned().collect();
    if rows.is_empty() {
        return None;
    }
    let timestamps: Vec<TimestampNs> = rows.iter().map(|r| r.0 * 1_000_000_000).collect();
    let mut a = ColumnWrite { field: "a".into(), absent_rows: vec![], values: Values::I64(vec![]) };
    let mut b = ColumnWrite { field: "b".into(), absent_rows: vec![], values: Values::F64(vec![]) };
    for (i, (_, va, vb)) in rows.iter().enumerate() {
        match va {
            Some(v) => {
                a.values.push(FieldValue::I64(*v));
            }
            None => a.absent_rows.push(i as u32),
        }
        match vb {
            Some(v) => {
                b.values.push(FieldValue::F64(*v as f64 / 4.0));
            }
            None => b.absent_rows.push(i as u32),
        }
    }
    let columns = [a, b].into_iter().filter(|c| !c.values.is_empty()).collect();
    Some(ShardCommand::Write(ShardWrite {
        tenant: "t".into(),
        series: vec![SeriesWrite {
            key: format!("m,device_id=d{series}"),
            device: format!("d{series}"),
            timestamps,
            columns,
        }],
    }))
}

fn log_id(index: u64) -> crate::applied::EntryId {
    crate::applied::EntryId { term: 1, leader: 1, index }
}

fn check(shard: &ShardData, model: &Model) {
    let view = shard.read_view();
    for s in 0u8..3 {
        let sid = shard.read().index.lookup("t", &format!("m,device_id=d{s}"));
        let expected: Vec<(i64, &str, FieldValue)> = model
            .iter()
            .filter(|((ms, _, _), _)| *ms == s)
            .map(|((_, t, f), v)| (*t * 1_000_000_000, *f, v.clone()))
            .collect();
        let Some(sid) = sid else {
            assert!(expected.is_empty(), "series d{s} missing");
            continue;
        };
        let block = read_series(shard, &view, sid, i64::MIN, i64::MAX, None).unwrap();
        assert!(block.timestamps.windows(2).all(|w| w[0] < w[1]), "merged timestamps sorted and unique");
        let mut got = Vec::new();
        for col in &block.columns {
            let name: &'static str = if col.name == "a" { "a" } else { "b" };
            let mut vi = 0;
            for (row, &t) in block.timestamps.iter().enumerate() {
                if col.present.as_ref().is_none_or(|p| p[row]) {
                    got.push((t, name, value_at(&col.values, vi)));
                    vi += 1;
                }
            }
        }
        got.sort_by(|x, y| (x.0, x.1).cmp(&(y.0, y.1)));
        assert_eq!(got, expected, "series d{s}");
        // Last value per field: greatest timestamp.
        let inner = shard.read();
        let info = inner.index.get(sid);
        for f in ["a", "b"] {
            let want = expected.iter().filter(|e| e.1 == f).max_by_key(|e| e.0).map(|e| (e.0, e.2.clone()));
            let fid = inner.index.find_field(f);
            let have = fid
                .and_then(|fid| info.last.iter().find(|l| l.field == fid))
                .map(|l| (l.timestamp_ns, l.value.clone()));
            assert_eq!(have, want, "last of d{s}.{f}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Every read after random writes, flushes and restarts equals the model.
    #[test]
    fn engine_equals_model(ops in prop::collection::vec(op(), 1..40)) {
        let engine: Engine = Arc::new(MemEngine::new());
        let options = ShardOptions { block_window_ns: 10 * 1_000_000_000, ..ShardOptions::default() };
        let mut shard = ShardData::open(engine.clone(), ShardId(0), options.clone()).unwrap();
        let mut model: Model = BTreeMap::new();
        // The Raft log: every committed command, replayed above the flushed index on restart.
        let mut log: Vec<ShardCommand> = Vec::new();
        for op in ops {
            match op {
                Op::Write(s, rows) => {
                    let Some(cmd) = to_command(s, &rows) else { continue };
                    log.push(cmd.clone());
                    let outcome = shard.apply(log_id(log.len() as u64), cmd).unwrap();
                    prop_assert!(outcome.rejected.is_empty());
                    for (t, a, b) in rows {
                        if let Some(v) = a { model.insert((s, t, "a"), FieldValue::I64(v)); }
                        if let Some(v) = b { model.insert((s, t, "b"), FieldValue::F64(v as f64 / 4.0)); }
                    }
                }
                Op::Flush => {
                    let cut = shard.freeze();
                    shard.flush(cut).unwrap();
                }
                Op::Restart => {
                    drop(shard);
                    shard = ShardData::open(engine.clone(), ShardId(0), options.clone()).unwrap();
                    let from = shard.read().applied.map(|l| l.index).unwrap_or(0) as usize;
                    for (i, cmd) in log.iter().enumerate().skip(from) {
                        shard.apply(log_id(i as u64 + 1), cmd.clone()).unwrap();
                    }
                }
            }
            check(&shard, &model);
            check_feed(&shard, &log);
            check_history(&shard, &model, log.len() as u64);
        }
    }
}

/// The feed holds every logged write at its index, across flushes and restarts, and a read
/// from any cursor continues exactly after it.
fn check_feed(shard: &ShardData, log: &[ShardCommand]) {
    let expected: Vec<(u64, &ShardWrite)> = log
        .iter()
        .enumerate()
        .filter_map(|(i, c)| match c {
            ShardCommand::Write(w) => Some((i as u64 + 1, w)),
            _ => None,
        })
        .collect();
    let Some(&(_, first)) = expected.first() else { return };
    let all = crate::feed::FeedFilter { tenant: first.tenant.clone(), ..Default::default() };
    let read = shard.read_feed(0, &all, usize::MAX).unwrap();
    assert_eq!(read.through, log.len() as u64);
    let got: Vec<(u64, &ShardWrite)> = read.entries.iter().map(|e| (e.index, &*e.write)).collect();
    assert_eq!(got, expected);
    let middle = expected.len() as u64 / 2;
    let rest = shard.read_feed(middle, &all, usize::MAX).unwrap();
    assert!(rest.entries.iter().map(|e| e.index).eq(expected.iter().map(|e| e.0).filter(|&i| i > middle)));
    let one = shard.read_feed(0, &all, 1).unwrap();
    assert_eq!((one.entries.len(), one.through), (1, expected[0].0), "a read stops at its limit");
}

/// A history read from the middle of the range holds exactly the model's points there, as of
/// the last applied index, and one that would hold more than its limit is refused.
fn check_history(shard: &ShardData, model: &Model, applied: u64) {
    let from_s = 20;
    let all = crate::feed::FeedFilter { tenant: "t".into(), ..Default::default() };
    let h = shard.read_history(&all, from_s * 1_000_000_000, usize::MAX).unwrap();
    assert_eq!(h.index, applied);
    let mut got: Vec<(u8, i64, &str, FieldValue)> = Vec::new();
    for s in h.write.iter().flat_map(|w| &w.series) {
        let series: u8 = s.device[1..].parse().unwrap();
        for c in &s.columns {
            let name: &'static str = if c.field == "a" { "a" } else { "b" };
            let mut vi = 0;
            for (row, t) in s.timestamps.iter().enumerate() {
                if !c.absent_rows.contains(&(row as u32)) {
                    got.push((series, t / 1_000_000_000, name, c.values.get(vi)));
                    vi += 1;
                }
            }
        }
    }
    got.sort_by(|x, y| (x.0, x.1, x.2).cmp(&(y.0, y.1, y.2)));
    let expected: Vec<(u8, i64, &str, FieldValue)> =
        model.iter().filter(|((_, t, _), _)| *t >= from_s).map(|((s, t, f), v)| (*s, *t, *f, v.clone())).collect();
    assert_eq!(got, expected, "history from {from_s} s");
    // The latest value of each field per series, as `Last` answers.
    let latest = shard.read_latest(&all, usize::MAX).unwrap();
    assert_eq!(latest.index, applied);
    let mut got: Vec<(u8, &str, i64, FieldValue)> = Vec::new();
    for s in latest.write.iter().flat_map(|w| &w.series) {
        let series: u8 = s.device[1..].parse().unwrap();
        for c in &s.columns {
            let row = (0..s.timestamps.len() as u32).find(|r| !c.absent_rows.contains(r)).unwrap();
            let name: &'static str = if c.field == "a" { "a" } else { "b" };
            got.push((series, name, s.timestamps[row as usize] / 1_000_000_000, c.values.get(0)));
        }
    }
    got.sort_by(|x, y| (x.0, x.1).cmp(&(y.0, y.1)));
    let mut newest: BTreeMap<(u8, &str), (i64, FieldValue)> = BTreeMap::new();
    for ((s, t, f), v) in model {
        newest.insert((*s, *f), (*t, v.clone()));
    }
    let want: Vec<(u8, &str, i64, FieldValue)> = newest.into_iter().map(|((s, f), (t, v))| (s, f, t, v)).collect();
    assert_eq!(got, want, "latest values");
    check_filtered_history(shard, model, from_s);
    let rows = expected.iter().map(|e| (e.0, e.1)).collect::<std::collections::BTreeSet<_>>().len();
    if rows > 1 {
        let refused = shard.read_history(&all, from_s * 1_000_000_000, rows - 1);
        assert!(matches!(refused, Err(crate::history::HistoryError::TooLarge { .. })), "a history over its limit");
    }
}

/// A history read with a field filter on `a` that delivers only `b` holds the model's `b`
/// values of exactly the rows whose `a` passes.
fn check_filtered_history(shard: &ShardData, model: &Model, from_s: i64) {
    use hotlake_types::filter::{CmpOp, FieldFilter};
    let threshold = 0.0;
    let filter = crate::feed::FeedFilter {
        tenant: "t".into(),
        fields: vec!["b".into()],
        filters: vec![FieldFilter::number("a", CmpOp::Gt, threshold)],
        ..Default::default()
    };
    let h = shard.read_history(&filter, from_s * 1_000_000_000, usize::MAX).unwrap();
    let mut got: Vec<(u8, i64, FieldValue)> = Vec::new();
    for s in h.write.iter().flat_map(|w| &w.series) {
        let series: u8 = s.device[1..].parse().unwrap();
        for c in &s.columns {
            assert_eq!(c.field, "b", "the tested field is not delivered");
            c.for_each_present(s.timestamps.len(), |row, vi| {
                got.push((series, s.timestamps[row] / 1_000_000_000, c.values.get(vi)))
            });
        }
    }
    got.sort_by_key(|x| (x.0, x.1));
    let passes = |s: u8, t: i64| model.get(&(s, t, "a")).and_then(FieldValue::as_f64).is_some_and(|a| a > threshold);
    let expected: Vec<(u8, i64, FieldValue)> = model
        .iter()
        .filter(|((s, t, f), _)| *f == "b" && *t >= from_s && passes(*s, *t))
        .map(|((s, t, _), v)| (*s, *t, v.clone()))
        .collect();
    assert_eq!(got, expected, "history of b where a > {threshold}");
}
