//! Scan + aggregate over flushed blocks in RocksDB, in values per second, through the same
//! per-shard query path the server uses:
//! - `sum_min_max_one_field_flushed`: sum, min, max of one field, every row in blocks;
//! - `mean_where_other_field_flushed`: mean of one field over the rows where another field
//!   passes a filter (`velocity > 1`), reading both;
//! - `sum_min_max_merge_memtable_over_blocks`: the first, after a tenth of the range was written
//!   again into the memtable, so the merge reader merges overlapping sources (newest wins).
//!
//! Run: cargo bench -p hotlake-node --bench scan

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hotlake_engine::applied::EntryId;
use hotlake_engine::batch::ShardCommand;
use hotlake_engine::shard::{ShardData, ShardOptions};
use hotlake_ingest::line_protocol::{parse_body, LineLimits, Precision};
use hotlake_ingest::BatchBuilder;
use hotlake_query::exec::run_on_shard;
use hotlake_query::filter::{CmpOp, FieldFilter};
use hotlake_query::{AggKind, Fill, Query};
use hotlake_storage::ShardId;
use hotlake_storage_rocks::{RocksEngine, RocksOptions};
use hotlake_tsbs::{TsbsConfig, TsbsGenerator};
use hotlake_types::limits::Limits;
use hotlake_types::ring::Ring;

const TRUCKS: usize = 100;
const EPOCHS: usize = 20_000;

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(RocksEngine::open(dir.path(), &RocksOptions::default()).unwrap());
    let shard = ShardData::open(engine, ShardId(0), ShardOptions::default()).unwrap();
    let mut generator = TsbsGenerator::new(TsbsConfig { trucks: TRUCKS, ..Default::default() });
    let mut index = 0u64;
    let mut apply = |generator: &mut TsbsGenerator, epochs: usize| {
        let mut body = String::new();
        generator.fill_lines(TRUCKS * 2 * epochs, &mut body);
        let mut builder = BatchBuilder::new(Ring::new(1), "bench", "name");
        parse_body(&body, Precision::Nanoseconds, &LineLimits::default(), |_, l| {
            builder.add_point(&l.measurement, &l.tags, &l.fields, l.timestamp_ns.unwrap()).unwrap();
        });
        for (_, w) in builder.finish() {
            index += 1;
            shard.apply(EntryId { term: 1, leader: 1, index }, ShardCommand::Write(w)).unwrap();
        }
    };
    for _ in 0..EPOCHS / 500 {
        apply(&mut generator, 500);
        let cut = shard.freeze();
        shard.flush(cut).unwrap();
    }
    let q = Query {
        tenant: "bench".into(),
        measurement: "readings".into(),
        fields: vec!["velocity".into()],
        predicates: vec![],
        filters: vec![],
        start_ns: i64::MIN + 1,
        end_ns: i64::MAX,
        aggregates: vec![AggKind::Sum, AggKind::Min, AggKind::Max],
        percentile: 50.0,
        bucket_ns: 0,
        group_by: vec![],
        fill: Fill::None,
        descending: false,
        allow_partial: false,
        limit: 0,
    };
    let limits = Limits::default();
    let values = run_on_shard(&shard, &q, &limits, u64::MAX).unwrap().points_scanned;
    assert_eq!(values, (TRUCKS * EPOCHS) as u64, "every velocity value is scanned");
    let mut g = c.benchmark_group("scan");
    g.throughput(Throughput::Elements(values));
    g.sample_size(20);
    g.bench_function("sum_min_max_one_field_flushed", |b| {
        b.iter(|| run_on_shard(&shard, &q, &limits, u64::MAX).unwrap())
    });
    let filtered = Query {
        fields: vec!["fuel_consumption".into()],
        filters: vec![FieldFilter::number("velocity", CmpOp::Gt, 1.0)],
        aggregates: vec![AggKind::Mean],
        ..q.clone()
    };
    // Throughput counts the rows tested (one velocity value each), not the values read.
    g.bench_function("mean_where_other_field_flushed", |b| {
        b.iter(|| run_on_shard(&shard, &filtered, &limits, u64::MAX).unwrap())
    });
    // The same series again from their first epoch: a tenth of the range now has a newer
    // version in the memtable, overlapping the oldest blocks.
    let mut again = TsbsGenerator::new(TsbsConfig { trucks: TRUCKS, ..Default::default() });
    apply(&mut again, EPOCHS / 10);
    g.bench_function("sum_min_max_merge_memtable_over_blocks", |b| {
        b.iter(|| run_on_shard(&shard, &q, &limits, u64::MAX).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
