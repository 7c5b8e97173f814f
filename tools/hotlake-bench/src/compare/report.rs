//! The comparison's figures, the cross-check of answers, the printed table of ratios and the
//! JSON file.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::dataset::{Dataset, DatasetSpec};
use super::ingest::IngestReport;
use super::queries::{self, Answer, QueryType};
use super::Answers;

/// Latency of one query type on one system.
#[derive(Clone, Debug, Serialize)]
pub struct QueryFigures {
    /// Iterations timed.
    pub n: usize,
    /// Median, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile (the slowest of fewer than 100 iterations), milliseconds.
    pub p99_ms: f64,
    /// Groups in the answers, summed over iterations (a sign the answers are not empty).
    pub groups: usize,
}

impl QueryFigures {
    /// Figures from the iterations' times and answers.
    pub fn from_times(mut times: Vec<Duration>, answers: &[Option<Answer>]) -> QueryFigures {
        times.sort();
        let at = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e3;
        QueryFigures {
            n: times.len(),
            p50_ms: at(0.5),
            p99_ms: at(0.99),
            groups: answers.iter().flatten().map(|a| a.len()).sum(),
        }
    }
}

/// Everything measured of one system.
#[derive(Clone, Debug, Serialize)]
pub struct SystemFigures {
    /// Key: hotlake, hotlake-grpc, influxdb, victoriametrics.
    pub name: String,
    /// Display name with version.
    pub label: String,
    /// When a write is acknowledged.
    pub durability: &'static str,
    /// The load.
    pub ingest: IngestReport,
    /// CPU seconds of the server during the load.
    pub ingest_cpu_s: f64,
    /// CPU seconds of the server from start to the end of the queries.
    pub cpu_s: f64,
    /// Peak resident memory of the server, bytes.
    pub peak_rss_bytes: u64,
    /// Bytes of its data directory after a flush and a graceful stop.
    pub disk_bytes: u64,
    /// The same per field value loaded.
    pub disk_bytes_per_value: f64,
    /// Query latency per type.
    pub queries: BTreeMap<QueryType, QueryFigures>,
}

/// How a peer's answers compare with Hotlake's for one query type.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    /// Iterations compared.
    pub compared: usize,
    /// Iterations with the same groups and values.
    pub agreed: usize,
    /// The first difference found, if any.
    pub first_difference: Option<String>,
    /// Why the peer has no answer, when it cannot express the type.
    pub not_expressed: Option<&'static str>,
}

/// The whole report.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The machine it ran on.
    pub machine: BTreeMap<&'static str, String>,
    /// The data set.
    pub dataset: DatasetSpec,
    /// Rows loaded.
    pub rows: u64,
    /// Field values loaded.
    pub values: u64,
    /// Iterations per query type.
    pub iterations: usize,
    /// Per system.
    pub systems: Vec<SystemFigures>,
    /// Other line-protocol endpoints loaded with the same data (`--endpoint`): ingest only.
    pub endpoints: Vec<(String, IngestReport)>,
    /// Per peer, per query type.
    pub cross_check: BTreeMap<String, BTreeMap<QueryType, Check>>,
}

impl Serialize for QueryType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

fn machine() -> BTreeMap<&'static str, String> {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string());
    let meminfo = read("/proc/meminfo");
    let mem = meminfo.lines().find_map(|l| l.strip_prefix("MemTotal:")).map(|l| l.trim().to_string());
    let mut m = BTreeMap::new();
    m.insert("cpus", std::thread::available_parallelism().map(|n| n.get().to_string()).unwrap_or_default());
    m.insert("cpu_model", model.unwrap_or_default());
    m.insert("memory", mem.unwrap_or_default());
    m.insert("kernel", read("/proc/sys/kernel/osrelease").trim().to_string());
    m
}

fn cross_check(peer: &str, hotlake: &Answers, theirs: &Answers) -> BTreeMap<QueryType, Check> {
    let mut out = BTreeMap::new();
    for q in QueryType::ALL {
        let (Some(ours), Some(other)) = (hotlake.get(&q), theirs.get(&q)) else { continue };
        let mut check = Check { compared: 0, agreed: 0, first_difference: None, not_expressed: None };
        if peer == "victoriametrics" {
            check.not_expressed = queries::victoria_gap(q);
        }
        for (a, b) in ours.iter().zip(other) {
            let (Some(a), Some(b)) = (a, b) else { continue };
            check.compared += 1;
            match queries::difference(a, b) {
                None => check.agreed += 1,
                Some(d) if check.first_difference.is_none() => check.first_difference = Some(d),
                Some(_) => {}
            }
        }
        out.insert(q, check);
    }
    out
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 && a.is_finite() {
        format!("{:.2}x", a / b)
    } else {
        "-".into()
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

impl Report {
    /// Assembles the report and cross-checks every peer's answers against Hotlake's.
    pub fn new(
        data: &Dataset,
        iterations: usize,
        systems: Vec<SystemFigures>,
        endpoints: Vec<(String, IngestReport)>,
        answers: &BTreeMap<String, Answers>,
    ) -> Report {
        let mut checks = BTreeMap::new();
        if let Some(ours) = answers.get("hotlake") {
            for peer in ["hotlake-3", "influxdb", "victoriametrics"] {
                if let Some(theirs) = answers.get(peer) {
                    checks.insert(peer.to_string(), cross_check(peer, ours, theirs));
                }
            }
        }
        Report {
            machine: machine(),
            dataset: data.spec.clone(),
            rows: data.rows,
            values: data.values,
            iterations,
            systems,
            endpoints,
            cross_check: checks,
        }
    }

    /// Iterations whose answer differed from Hotlake's, over every peer and type.
    pub fn differences(&self) -> usize {
        self.cross_check.values().flat_map(|c| c.values()).map(|c| c.compared - c.agreed).sum()
    }

    fn system(&self, name: &str) -> Option<&SystemFigures> {
        self.systems.iter().find(|s| s.name == name)
    }

    /// Prints the tables: ingest and footprint per system, ratios against each peer, query
    /// latency per type with the cross-check.
    pub fn print(&self) {
        let m = &self.machine;
        println!("\nmachine: {} CPUs ({}), {}, Linux {}", m["cpus"], m["cpu_model"], m["memory"], m["kernel"]);
        println!(
            "data: TSBS IoT, {} trucks, {} h, seed {}, {}: {} rows, {} field values; {} rows per batch",
            self.dataset.trucks,
            self.dataset.hours,
            self.dataset.seed,
            if self.dataset.disorder { "with disorder" } else { "in order" },
            self.rows,
            self.values,
            self.dataset.batch_rows
        );
        println!(
            "\n{:<32} {:>11} {:>10} {:>8} {:>8} {:>9} {:>9} {:>9} {:>8}  durability",
            "ingest", "values/s", "rows/s", "p50 ms", "p99 ms", "CPU s", "RSS MiB", "disk MiB", "B/value"
        );
        for s in &self.systems {
            println!(
                "{:<32} {:>11.0} {:>10.0} {:>8.1} {:>8.1} {:>9.1} {:>9.0} {:>9.1} {:>8.3}  {}",
                s.label,
                s.ingest.values_per_s,
                s.ingest.rows_per_s,
                s.ingest.batch_p50_ms,
                s.ingest.batch_p99_ms,
                s.ingest_cpu_s,
                mib(s.peak_rss_bytes),
                mib(s.disk_bytes),
                s.disk_bytes_per_value,
                s.durability
            );
        }
        for (name, e) in &self.endpoints {
            println!(
                "{:<32} {:>11.0} {:>10.0} {:>8.1} {:>8.1}  (an endpoint of its own: ingest only)",
                name, e.values_per_s, e.rows_per_s, e.batch_p50_ms, e.batch_p99_ms
            );
        }
        let Some(ours) = self.system("hotlake") else { return };
        for peer in ["influxdb", "victoriametrics"] {
            let Some(p) = self.system(peer) else { continue };
            let grpc = self.system("hotlake-grpc").map(|g| ratio(g.ingest.values_per_s, p.ingest.values_per_s));
            println!(
                "hotlake / {:<22} ingest {} (gRPC {}), CPU for the load {}, peak RSS {}, disk per value {}",
                p.label,
                ratio(ours.ingest.values_per_s, p.ingest.values_per_s),
                grpc.unwrap_or_else(|| "-".into()),
                ratio(ours.ingest_cpu_s, p.ingest_cpu_s),
                ratio(ours.peak_rss_bytes as f64, p.peak_rss_bytes as f64),
                ratio(ours.disk_bytes_per_value, p.disk_bytes_per_value)
            );
        }
        if let Some(c) = self.system("hotlake-3") {
            println!(
                "{:<32} ingest {} of one node's (every value is written to 3 replicas on the same cores)",
                c.label,
                ratio(c.ingest.values_per_s, ours.ingest.values_per_s)
            );
        }
        let peers: Vec<&SystemFigures> =
            ["hotlake-3", "influxdb", "victoriametrics"].iter().filter_map(|p| self.system(p)).collect();
        print!("\n{:<36} {:>17}", format!("queries ({} each), ms", self.iterations), "hotlake p50/p99");
        for p in &peers {
            print!(" {:>19} {:>7}", format!("{} p50/p99", p.name), "H/peer");
        }
        println!("  answers");
        for q in QueryType::ALL {
            let Some(h) = ours.queries.get(&q) else { continue };
            print!("{:<36} {:>17}", q.name(), format!("{:.1}/{:.1}", h.p50_ms, h.p99_ms));
            let mut notes = Vec::new();
            for p in &peers {
                match p.queries.get(&q) {
                    Some(f) => {
                        print!(" {:>19} {:>7}", format!("{:.1}/{:.1}", f.p50_ms, f.p99_ms), ratio(h.p50_ms, f.p50_ms))
                    }
                    None => print!(" {:>19} {:>7}", "n/a", "-"),
                }
                if let Some(c) = self.cross_check.get(&p.name).and_then(|c| c.get(&q)) {
                    notes.push(match (c.not_expressed, c.compared) {
                        (Some(_), _) => format!("{}: not expressed", p.name),
                        (None, n) if c.agreed == n => format!("{}: same {n}/{n}", p.name),
                        (None, n) => format!("{}: same {}/{n}", p.name, c.agreed),
                    });
                }
            }
            println!("  {} [{} groups]", notes.join(", "), h.groups);
        }
        for (peer, checks) in &self.cross_check {
            for (q, c) in checks {
                if let Some(d) = &c.first_difference {
                    println!("  {peer} {}: first difference: {d}", q.name());
                }
                if let Some(why) = c.not_expressed {
                    println!("  {peer} {}: not expressed: {why}", q.name());
                }
            }
        }
    }
}
