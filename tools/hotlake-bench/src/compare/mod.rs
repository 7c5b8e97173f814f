//! `hotlake-bench compare`: Hotlake side by side with InfluxDB and VictoriaMetrics on the same
//! machine, the same TSBS-IoT data and the same queries, in one run.
//!
//! ```text
//! generate the data set once (seeded)
//! for each system, alone on the machine:
//!     start it on loopback with a fresh data directory
//!     load every batch with N writers          → values/s, rows/s, batch p50/p99
//!     run every query type K times             → latency p50/p99, answers kept
//!     read CPU seconds and peak RSS from /proc
//!     flush, stop, measure the data directory  → bytes per value
//! cross-check every answer against Hotlake's; print the table and write the JSON
//! ```
//!
//! Each system runs alone so its CPU and memory figures are its own; the harness itself (data
//! set, writers) shares the machine with it in every case.

mod dataset;
mod ingest;
mod queries;
mod report;
mod systems;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use dataset::{Dataset, DatasetSpec};
use queries::{Answer, QueryType};
use report::{QueryFigures, Report, SystemFigures};
use systems::{Server, PORTS};

/// Arguments of `compare`.
#[derive(clap::Args)]
pub struct Args {
    /// Smoke-test size: 20 trucks, 24 hours, 3 iterations per query type (a few minutes; CI
    /// runs it). Flags given explicitly override it.
    #[arg(long)]
    quick: bool,
    /// Trucks (each has a `readings` and a `diagnostics` series).
    #[arg(long)]
    trucks: Option<usize>,
    /// Hours of data, one row per truck and measurement every 10 s.
    #[arg(long)]
    hours: Option<u32>,
    /// Generator and query-parameter seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Rows per write request.
    #[arg(long, default_value_t = 5000)]
    batch_rows: usize,
    /// Concurrent writers.
    #[arg(long, default_value_t = 8)]
    writers: usize,
    /// Iterations per query type (each with its own fleet, truck and window).
    #[arg(long)]
    queries: Option<usize>,
    /// Generate rows in order, without the TSBS disorder (drops, late rows, null fields/tags).
    #[arg(long)]
    in_order: bool,
    /// Systems to run, comma-separated: hotlake (one node, line protocol, then queries),
    /// hotlake-grpc (one node, the same rows through hotlake-client), hotlake-3 (three nodes,
    /// replication factor 3, line protocol spread over the nodes, then queries), influxdb,
    /// victoriametrics.
    #[arg(long, value_delimiter = ',', default_value = "hotlake,hotlake-grpc,hotlake-3,influxdb,victoriametrics")]
    systems: Vec<String>,
    /// The `hotlake` binary (default: next to this program).
    #[arg(long)]
    hotlake_bin: Option<PathBuf>,
    /// The InfluxDB 1.x server (Debian package `influxdb`).
    #[arg(long, default_value = "influxd")]
    influxd_bin: String,
    /// The VictoriaMetrics single-node server (Debian package `victoria-metrics`).
    #[arg(long, default_value = "victoria-metrics")]
    victoria_bin: String,
    /// Run Hotlake without authentication (`--insecure-no-auth`), to measure what checking a
    /// token on every request costs. By default Hotlake runs as a new cluster does: with it.
    #[arg(long)]
    no_auth: bool,
    /// Run Hotlake with TLS on every listener and mutual TLS between its nodes (certificates
    /// from `hotlake cert`, made for the run), to measure what TLS costs.
    #[arg(long)]
    tls: bool,
    /// Exit with status 1 when any peer's answer differs from Hotlake's (after the report is
    /// written). CI's smoke test sets it: the answers are deterministic for a seed.
    #[arg(long)]
    fail_on_difference: bool,
    /// Also load the data set into another line-protocol endpoint, given as `NAME=URL` with the
    /// whole write URL (repeatable), e.g. `telegraf=http://127.0.0.1:8186/write?db=bench`.
    /// Only ingest is measured there: the process is not the harness's to watch or query.
    #[arg(long = "endpoint", value_name = "NAME=URL")]
    endpoints: Vec<String>,
    /// Where to write the JSON report.
    #[arg(long, default_value = "target/bench-compare.json")]
    json: PathBuf,
}

/// The systems a run can include, in run order.
const SYSTEMS: [&str; 5] = ["hotlake", "hotlake-grpc", "hotlake-3", "influxdb", "victoriametrics"];

struct Plan {
    /// Whether Hotlake runs with authentication on (the default) or `--insecure-no-auth`.
    auth: bool,
    spec: DatasetSpec,
    iterations: usize,
    writers: usize,
    systems: Vec<String>,
    hotlake_bin: PathBuf,
    hotlakectl_bin: PathBuf,
    endpoints: Vec<(String, String)>,
    influxd: Option<(PathBuf, String)>,
    victoria: Option<(PathBuf, String)>,
}

fn plan(args: &Args) -> anyhow::Result<Plan> {
    for s in &args.systems {
        if !SYSTEMS.contains(&s.as_str()) {
            bail!("unknown system {s:?}: choose from {}", SYSTEMS.join(", "));
        }
    }
    if args.batch_rows == 0 || args.writers == 0 {
        bail!("--batch-rows and --writers must be at least 1");
    }
    let (trucks, hours, iterations) = if args.quick { (20, 24, 3) } else { (100, 72, 20) };
    let spec = DatasetSpec {
        trucks: args.trucks.unwrap_or(trucks),
        hours: args.hours.unwrap_or(hours),
        seed: args.seed,
        batch_rows: args.batch_rows,
        disorder: !args.in_order,
    };
    if spec.trucks == 0 || spec.hours == 0 {
        bail!("--trucks and --hours must be at least 1");
    }
    // The data set is held in memory twice (line protocol and gRPC series), about 500 bytes
    // per row in all; refuse one that would take more than half of the memory available.
    let epochs = u64::from(spec.hours) * 3600 / dataset::INTERVAL_S as u64;
    let rows = (spec.trucks as u64).saturating_mul(2).saturating_mul(epochs);
    let needed = rows.saturating_mul(500);
    if let Some(available) = memory_available_bytes() {
        if needed > available / 2 {
            bail!(
                "{} trucks over {} h is {rows} rows, about {} MiB in memory; only {} MiB is available: \
                 lower --trucks or --hours",
                spec.trucks,
                spec.hours,
                needed >> 20,
                available >> 20
            );
        }
    }
    let hotlake_bin = match &args.hotlake_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("hotlake"),
    };
    let hotlakectl_bin = std::env::current_exe()?.with_file_name("hotlakectl");
    let mut endpoints = Vec::new();
    for e in &args.endpoints {
        match e.split_once('=') {
            Some((name, url)) if !name.is_empty() && url.starts_with("http") => {
                endpoints.push((name.to_string(), url.to_string()))
            }
            _ => bail!("--endpoint {e:?} must look like NAME=http://HOST:PORT/write?db=bench"),
        }
    }
    let wants = |s: &str| args.systems.iter().any(|x| x == s);
    if wants("hotlake-3") && !hotlakectl_bin.is_file() {
        bail!(
            "{} not found: build it (cargo build --release -p hotlakectl --bin hotlakectl)",
            hotlakectl_bin.display()
        );
    }
    if args.systems.iter().any(|s| s.starts_with("hotlake")) && !hotlake_bin.is_file() {
        bail!(
            "{} not found: build it (cargo build --release -p hotlake-node) or pass --hotlake-bin",
            hotlake_bin.display()
        );
    }
    let peer =
        |name: &str, bin: &str, package: &str, version_from: &str| -> anyhow::Result<Option<(PathBuf, String)>> {
            if !wants(name) {
                return Ok(None);
            }
            let path = systems::locate(bin).with_context(|| {
                format!(
                    "{bin} not found: install the Debian package {package} (sudo apt-get install {package}), \
                 pass its path, or leave {name} out of --systems"
                )
            })?;
            let version = systems::package_version(version_from).unwrap_or_else(|| "(version unknown)".into());
            Ok(Some((path, version)))
        };
    Ok(Plan {
        auth: !args.no_auth,
        influxd: peer("influxdb", &args.influxd_bin, "influxdb", "influxdb")?,
        victoria: peer("victoriametrics", &args.victoria_bin, "victoria-metrics", "victoria-metrics")?,
        spec,
        iterations: args.queries.unwrap_or(iterations).max(1),
        writers: args.writers,
        systems: SYSTEMS.iter().filter(|s| wants(s)).map(|s| s.to_string()).collect(),
        hotlake_bin,
        hotlakectl_bin,
        endpoints,
    })
}

/// Runs one query on one system: `None` when the system cannot express it.
type RunQuery<'a> = dyn FnMut(QueryType, &queries::Params) -> anyhow::Result<Option<Answer>> + 'a;

/// Every iteration's answer of one system, per query type.
type Answers = BTreeMap<QueryType, Vec<Option<Answer>>>;

/// `MemAvailable` from `/proc/meminfo`, in bytes.
fn memory_available_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib = meminfo.lines().find_map(|l| l.strip_prefix("MemAvailable:"))?;
    kib.trim().trim_end_matches("kB").trim().parse::<u64>().ok().map(|k| k * 1024)
}

/// Runs every query type `iterations` times through `run`, timing each.
fn run_queries(
    system: &str,
    data: &Dataset,
    iterations: usize,
    mut run: impl FnMut(QueryType, &queries::Params) -> anyhow::Result<Option<Answer>>,
) -> anyhow::Result<(BTreeMap<QueryType, QueryFigures>, Answers)> {
    let mut figures = BTreeMap::new();
    let mut answers = Answers::new();
    for q in QueryType::ALL {
        let mut times = Vec::with_capacity(iterations);
        let mut got = Vec::with_capacity(iterations);
        for i in 0..iterations {
            let p = queries::params(data.spec.seed, q, i, data.spec.trucks, data.start_ns, data.end_ns);
            let t = Instant::now();
            let answer = run(q, &p).with_context(|| format!("{system}: {} (iteration {i}, {p:?})", q.name()))?;
            let took = t.elapsed();
            if answer.is_some() {
                times.push(took);
            }
            got.push(answer);
        }
        if !times.is_empty() {
            figures.insert(q, QueryFigures::from_times(times, &got));
        }
        answers.insert(q, got);
    }
    Ok((figures, answers))
}

/// Loads the data into a started server over line protocol, runs the queries when asked, and
/// stops it; returns its figures.
fn measure(
    server: Server,
    name: &str,
    data: &Arc<Dataset>,
    plan: &Plan,
    write_urls: Vec<String>,
    query: Option<&mut RunQuery>,
) -> anyhow::Result<(SystemFigures, Answers)> {
    eprintln!("  {}: loading {} batches with {} writers", server.label, data.batches.len(), plan.writers);
    let before = server.usage()?;
    let ingest = if name == "hotlake-grpc" {
        ingest::grpc(
            server.grpc.as_deref().expect("hotlake has gRPC"),
            server.token.as_deref(),
            "bench",
            data,
            plan.writers,
        )?
    } else {
        ingest::line_protocol(&write_urls, server.token.as_deref(), data, plan.writers)?
    };
    let after_ingest = server.usage()?;
    server.settle()?;
    eprintln!("  {}: {:.0} values/s; running queries", server.label, ingest.values_per_s);
    let (queries, answers) = match query {
        Some(run) => run_queries(name, data, plan.iterations, run)?,
        None => Default::default(),
    };
    let usage = server.usage()?;
    let label = server.label.clone();
    let durability = server.durability;
    eprintln!("  {label}: flushing and stopping");
    let disk_bytes = server.flush_and_stop()?;
    Ok((
        SystemFigures {
            name: name.to_string(),
            label,
            durability,
            ingest,
            ingest_cpu_s: after_ingest.cpu_s - before.cpu_s,
            cpu_s: usage.cpu_s,
            peak_rss_bytes: usage.peak_rss_bytes,
            disk_bytes,
            disk_bytes_per_value: disk_bytes as f64 / data.values as f64,
            queries,
        },
        answers,
    ))
}

/// Runs the comparison.
pub fn run(args: Args) -> anyhow::Result<()> {
    let plan = plan(&args)?;
    if args.tls {
        let pki = systems::make_pki(&plan.hotlake_bin, 3)?;
        crate::token::set_tls(&pki)?;
        eprintln!("TLS on: CA and node certificates in {}", pki.display());
    }
    let t = Instant::now();
    let data = Arc::new(Dataset::generate(plan.spec.clone()));
    eprintln!(
        "data set: {} trucks, {} h, seed {}: {} rows, {} values, {} batches, {:.1} MiB of line protocol ({:.1} s to generate)",
        data.spec.trucks,
        data.spec.hours,
        data.spec.seed,
        data.rows,
        data.values,
        data.batches.len(),
        data.line_bytes() as f64 / (1 << 20) as f64,
        t.elapsed().as_secs_f64()
    );
    let mut systems = Vec::new();
    let mut answers: BTreeMap<String, Answers> = BTreeMap::new();
    for name in &plan.systems {
        eprintln!("== {name}");
        let (figures, got) = match name.as_str() {
            "hotlake" | "hotlake-grpc" | "hotlake-3" => {
                let mut server = match name.as_str() {
                    "hotlake" => {
                        Server::start_hotlake(&plan.hotlake_bin, &PORTS, "hotlake (line protocol)", plan.auth)?
                    }
                    "hotlake-grpc" => {
                        Server::start_hotlake(&plan.hotlake_bin, &PORTS, "hotlake (gRPC client)", plan.auth)?
                    }
                    _ => Server::start_hotlake_cluster(&plan.hotlake_bin, &plan.hotlakectl_bin, &PORTS, 3, plan.auth)?,
                };
                if !plan.auth {
                    server.label.push_str(", no auth");
                }
                if args.tls {
                    server.label.push_str(", TLS");
                }
                let scheme = crate::token::scheme();
                let url = server.http.iter().map(|h| format!("{scheme}://{h}/write?db=bench")).collect();
                if name != "hotlake-grpc" {
                    let client = queries::Hotlake::connect(
                        server.grpc.as_deref().expect("gRPC"),
                        server.token.as_deref(),
                        "bench",
                    )?;
                    let mut run = |q: QueryType, p: &queries::Params| client.run(q, p).map(Some);
                    measure(server, name, &data, &plan, url, Some(&mut run))?
                } else {
                    measure(server, name, &data, &plan, url, None)?
                }
            }
            "influxdb" => {
                let (bin, version) = plan.influxd.as_ref().expect("planned");
                let server = Server::start_influxdb(bin, &PORTS, version)?;
                let url = vec![format!("http://{}/write?db=bench&precision=ns", server.http[0])];
                let client = queries::Influx::new(&server.http[0])?;
                let mut run = |q: QueryType, p: &queries::Params| client.run(q, p).map(Some);
                measure(server, name, &data, &plan, url, Some(&mut run))?
            }
            "victoriametrics" => {
                let (bin, version) = plan.victoria.as_ref().expect("planned");
                let server = Server::start_victoria(bin, &PORTS, version)?;
                let url = vec![format!("http://{}/write", server.http[0])];
                let client = queries::Victoria::new(&server.http[0])?;
                let mut run = |q: QueryType, p: &queries::Params| client.run(q, p);
                measure(server, name, &data, &plan, url, Some(&mut run))?
            }
            other => unreachable!("checked in plan: {other}"),
        };
        systems.push(figures);
        answers.insert(name.clone(), got);
        // Let the page cache and sockets of one system settle before the next starts.
        std::thread::sleep(Duration::from_secs(1));
    }
    let mut external = Vec::new();
    for (name, url) in &plan.endpoints {
        eprintln!("== {name} ({url})");
        let figures = ingest::line_protocol(std::slice::from_ref(url), crate::token::get(), &data, plan.writers)
            .with_context(|| format!("endpoint {name}"))?;
        external.push((name.clone(), figures));
    }
    let report = Report::new(&data, plan.iterations, systems, external, &answers);
    report.print();
    if let Some(dir) = args.json.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.json, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("write {}", args.json.display()))?;
    println!("\nJSON report: {} ({:.0} s in all)", args.json.display(), t.elapsed().as_secs_f64());
    let differing = report.differences();
    if args.fail_on_difference && differing > 0 {
        bail!("{differing} answers differ from Hotlake's (see above)");
    }
    Ok(())
}
