//! Writes a minute of readings for a few trucks through a `BatchWriter`, then reads them back:
//! a per-truck average, and the latest position of each truck.
//!
//! Start a local cluster first (`scripts/run`), then:
//!   cargo run -p hotlake-client --example quickstart [-- 127.0.0.1:7101,127.0.0.1:7102]
//! The seed list defaults to `HOTLAKE_CLUSTER`, else the three nodes of `scripts/run`; the token
//! comes from `HOTLAKE_TOKEN` (a token with read and write on the tenant `quickstart`).

use std::time::{SystemTime, UNIX_EPOCH};

use hotlake_client::{Aggregate, BatchConfig, Client, LastBuilder, QueryBuilder, SeriesBuilder};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let seeds = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("HOTLAKE_CLUSTER").ok())
        .unwrap_or_else(|| "127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103".into());
    let mut builder = Client::builder().seeds(seeds.split(','));
    if let Ok(token) = std::env::var("HOTLAKE_TOKEN") {
        builder = builder.token(token);
    }
    let client = builder.connect().await?;
    let view = client.cluster_view();
    println!("connected: {} nodes, {} shards, map version {}", view.nodes.len(), view.shards.len(), view.version);

    let now_s = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() as i64;
    let start_ns = (now_s - 60) * 1_000_000_000;
    let writer = client.batch_writer("quickstart", BatchConfig::default());
    for truck in 0..5 {
        let mut s = SeriesBuilder::new("readings").tag("device_id", &format!("truck_{truck}")).tag("fleet", "East");
        for second in 0..60 {
            s.push_f64(start_ns + second * 1_000_000_000, "velocity", (truck * 10 + second % 7) as f64);
        }
        writer.write(s.build()).await?;
    }
    let stats = writer.close().await?;
    println!("written: {} points in {} batches", stats.points_written, stats.batches_written);

    let averages = client
        .query(
            QueryBuilder::new("readings")
                .tenant("quickstart")
                .field("velocity")
                .range(start_ns, start_ns + 60_000_000_000)
                .aggregate(Aggregate::Mean)
                .group_by("device_id"),
        )
        .await?;
    for g in &averages.groups {
        println!("{}: mean velocity {}", g.tag("device_id").unwrap_or("?"), g.rows[0].values[0]);
    }
    for row in client.last(LastBuilder::new("readings").tenant("quickstart").field("velocity")).await? {
        let (field, ts, value) = &row.values[0];
        println!("{}: last {field} = {value} at {ts}", row.device);
    }
    Ok(())
}
