//! Memtable insert speed in field values per second: 1,000 series, batches of 100 rows with 7
//! float fields (TSBS `readings` shape).
//! Run: cargo bench -p hotlake-node --bench memtable

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use hotlake_engine::batch::{ColumnWrite, SeriesWrite, Values};
use hotlake_engine::memtable::Memtable;

const SERIES: u32 = 1000;
const ROWS: usize = 100;
const FIELDS: usize = 7;

fn batches() -> Vec<SeriesWrite> {
    (0..SERIES)
        .map(|s| SeriesWrite {
            key: format!("readings,name=truck_{s}"),
            device: format!("truck_{s}"),
            timestamps: (0..ROWS as i64).map(|r| r * 10_000_000_000).collect(),
            columns: (0..FIELDS)
                .map(|f| ColumnWrite {
                    field: format!("f{f}"),
                    absent_rows: vec![],
                    values: Values::F64((0..ROWS).map(|r| (r * f) as f64 * 0.5).collect()),
                })
                .collect(),
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let writes = batches();
    let ids: Vec<Option<u32>> = (0..FIELDS as u32).map(Some).collect();
    let mut g = c.benchmark_group("memtable");
    g.throughput(Throughput::Elements((SERIES as usize * ROWS * FIELDS) as u64));
    g.bench_function("insert_values", |b| {
        b.iter_batched(
            Memtable::new,
            |mut m| {
                for (s, w) in writes.iter().enumerate() {
                    m.insert(s as u32, w, &ids);
                }
                m
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
