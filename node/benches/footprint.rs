//! Footprint figures, printed (not timed):
//! 1. bytes on disk per field value for TSBS-IoT data after flush and compaction;
//! 2. resident memory per active series with many series (default 1,000,000).
//!
//! Run: cargo bench -p hotlake-node --bench footprint [-- --series N --trucks N --epochs N]

use std::sync::Arc;

use hotlake_engine::batch::{ColumnWrite, SeriesWrite, ShardWrite, Values};
use hotlake_ingest::line_protocol::Precision;
use hotlake_node::config::Config;
use hotlake_node::node::Node;
use hotlake_storage::KvEngine;
use hotlake_storage_rocks::{RocksEngine, RocksOptions};
use hotlake_tsbs::{TsbsConfig, TsbsGenerator};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

async fn disk_per_value(trucks: usize, epochs: usize) {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(RocksEngine::open(dir.path(), &RocksOptions::default()).unwrap());
    let mut config = Config { device_tag: "name".into(), ..Config::default() };
    config.storage.shard_memtable_bytes_max = 256 << 20;
    let node = Node::open(config, engine.clone()).await.unwrap();
    let mut generator = TsbsGenerator::new(TsbsConfig { trucks, ..Default::default() });
    let mut values = 0usize;
    let mut done = 0;
    while done < epochs {
        let step = 360.min(epochs - done);
        let mut body = String::new();
        let (_, v) = generator.fill_lines(trucks * 2 * step, &mut body);
        let (summary, errors) = node.write_lines("bench", body, Precision::Nanoseconds, 0).await.unwrap();
        assert!(errors.is_empty() && summary.rejected.is_empty());
        values += v;
        done += step;
    }
    node.flush_all().await.unwrap();
    node.shutdown().await.unwrap();
    drop(node);
    engine.compact().unwrap();
    let bytes = engine.size_bytes();
    println!("disk: {trucks} trucks x {epochs} epochs (10 s), {values} field values");
    println!("  bytes on disk          {bytes}");
    println!("  bytes per field value  {:.3}", bytes as f64 / values as f64);
}

async fn memory_per_series(series: usize) {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(RocksEngine::open(dir.path(), &RocksOptions::default()).unwrap());
    let mut config = Config::default();
    config.storage.shard_memtable_bytes_max = 1 << 40;
    config.storage.node_memtable_bytes_max = 1 << 40;
    config.storage.node_memtable_bytes_hard_max = 1 << 40;
    config.storage.memtable_age_ms_max = u64::MAX / 2;
    let node = Node::open(config, engine).await.unwrap();
    let before = rss_bytes();
    let ring = node.ring().unwrap();
    let chunk = 20_000;
    let mut written = 0;
    while written < series {
        let mut by_shard: std::collections::BTreeMap<_, ShardWrite> = Default::default();
        for i in written..(written + chunk).min(series) {
            let device = format!("meter_{i:08}");
            let shard = ring.shard_of("default", &device);
            let w = by_shard.entry(shard).or_insert_with(|| ShardWrite { tenant: "default".into(), series: vec![] });
            // One point with 3 fields per series: an active series with a live tail.
            w.series.push(SeriesWrite {
                key: format!("power,device_id={device},region=r{}", i % 50),
                device,
                timestamps: vec![1_700_000_000_000_000_000 + i as i64],
                columns: vec![
                    ColumnWrite { field: "watts".into(), absent_rows: vec![], values: Values::F64(vec![i as f64]) },
                    ColumnWrite { field: "volts".into(), absent_rows: vec![], values: Values::F64(vec![230.0]) },
                    ColumnWrite { field: "state".into(), absent_rows: vec![], values: Values::I64(vec![1]) },
                ],
            });
        }
        node.write_batches(by_shard.into_iter().collect()).await.unwrap();
        written = (written + chunk).min(series);
    }
    let after = rss_bytes();
    println!("memory: {series} active series, one point of 3 fields each, in memtables");
    println!("  RSS before {} MiB, after {} MiB", before >> 20, after >> 20);
    println!("  RSS per active series  {:.0} bytes", (after.saturating_sub(before)) as f64 / series as f64);
    let started = std::time::Instant::now();
    node.flush_all().await.unwrap();
    println!("  flushing every memtable took {:.1} s", started.elapsed().as_secs_f64());
    let flushed = rss_bytes();
    println!(
        "  after flushing memtables: RSS {} MiB, {:.0} bytes per series (allocator may keep freed pages)",
        flushed >> 20,
        (flushed.saturating_sub(before)) as f64 / series as f64
    );
    node.shutdown().await.unwrap();
}

fn main() {
    tracing_subscriber::fmt().with_env_filter("warn").with_writer(std::io::stderr).init();
    // `cargo bench` passes --bench; ignore it.
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(disk_per_value(arg("--trucks", 100), arg("--epochs", 8640)));
    rt.block_on(memory_per_series(arg("--series", 1_000_000)));
}
