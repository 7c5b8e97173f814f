//! Line-protocol parsing speed on TSBS-IoT-shaped lines (8 tags, 7 or 3 fields).
//! Run: cargo bench -p hotlake-node --bench line_protocol

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hotlake_ingest::line_protocol::{parse_body, LineLimits, Precision};
use hotlake_tsbs::{TsbsConfig, TsbsGenerator};

fn bench(c: &mut Criterion) {
    let mut body = String::new();
    let (lines, _) =
        TsbsGenerator::new(TsbsConfig { trucks: 1000, ..Default::default() }).fill_lines(20_000, &mut body);
    let limits = LineLimits::default();
    let mut g = c.benchmark_group("line_protocol");
    g.throughput(Throughput::Elements(lines as u64));
    g.bench_function("parse_tsbs_iot_lines", |b| {
        b.iter(|| {
            let mut fields = 0usize;
            let errors = parse_body(&body, Precision::Nanoseconds, &limits, |_, l| fields += l.fields.len());
            assert!(errors.is_empty());
            fields
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
