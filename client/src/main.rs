//! `hotlakectl`: command-line access to a Hotlake node.
//!
//! Exit codes: 0 success; 1 the server rejected the request (bad input, limits); 2 usage error;
//! 3 the node could not be reached or was unavailable (retrying may help).

use std::io::{BufRead, Read, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::{json, Value};

/// Command-line client for Hotlake.
#[derive(Parser)]
#[command(
    version,
    about,
    after_help = "Exit codes: 0 ok, 1 rejected by the server, 2 usage, 3 unreachable/unavailable."
)]
struct Cli {
    /// The node's HTTP address.
    #[arg(long, global = true, env = "HOTLAKE_HTTP", default_value = "127.0.0.1:7181")]
    http: String,
    /// Give up on a request after this many seconds.
    #[arg(long, global = true, default_value_t = 60)]
    timeout_s: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Table,
    Json,
    Csv,
}

#[derive(Subcommand)]
enum Command {
    /// Show whether the node is up and every shard has a leader.
    ///
    /// Example: hotlakectl health
    Health,
    /// Write line protocol from a file or stdin, in batches, with progress on stderr.
    ///
    /// Example: hotlakectl write --db fleet --file points.lp
    Write {
        /// Tenant (database).
        #[arg(long, default_value = "default")]
        db: String,
        /// File to read; `-` or absent reads stdin.
        #[arg(long)]
        file: Option<String>,
        /// Timestamp precision of the lines: ns, us, ms, s.
        #[arg(long, default_value = "ns")]
        precision: String,
        /// Lines per request.
        #[arg(long, default_value_t = 5000)]
        batch_lines: usize,
    },
    /// Query raw points or aggregates.
    ///
    /// Example: hotlakectl query readings --field velocity --where fleet=East --start 2016-01-01T00:00:00Z --end 2016-01-02T00:00:00Z --agg mean --bucket 1h
    Query {
        /// Measurement.
        measurement: String,
        /// Tenant (database).
        #[arg(long, default_value = "default")]
        db: String,
        /// Field to return (repeatable); none returns all.
        #[arg(long = "field")]
        fields: Vec<String>,
        /// Tag filter `key=value`, `key!=value`, `key=~regex` or `key!~regex` (repeatable).
        #[arg(long = "where")]
        filters: Vec<String>,
        /// Start: RFC 3339 or nanoseconds.
        #[arg(long)]
        start: String,
        /// End (exclusive): RFC 3339 or nanoseconds.
        #[arg(long)]
        end: String,
        /// Aggregate (repeatable): count, sum, min, max, mean, first, last, stddev, percentile.
        #[arg(long = "agg")]
        aggregates: Vec<String>,
        /// Quantile for percentile (0-100).
        #[arg(long)]
        percentile: Option<f64>,
        /// Bucket width, e.g. 10s, 1h.
        #[arg(long)]
        bucket: Option<String>,
        /// Tag to group by (repeatable).
        #[arg(long = "group-by")]
        group_by: Vec<String>,
        /// Rows per group.
        #[arg(long)]
        limit: Option<u64>,
        /// Newest first.
        #[arg(long)]
        desc: bool,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Latest values per device matching a filter.
    ///
    /// Example: hotlakectl last readings --where fleet=East --field latitude --field longitude
    Last {
        /// Measurement.
        measurement: String,
        /// Tenant (database).
        #[arg(long, default_value = "default")]
        db: String,
        /// Field (repeatable); none returns all.
        #[arg(long = "field")]
        fields: Vec<String>,
        /// Tag filter (repeatable), as for `query`.
        #[arg(long = "where")]
        filters: Vec<String>,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Cluster-wide views.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Node membership.
    #[command(subcommand)]
    Node(NodeCommand),
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Show every member: addresses, state, reachability, replicas and leaders it holds.
    ///
    /// Example: hotlakectl cluster status
    Status {
        /// Output format (`json` prints the node's full answer).
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
        /// First wait up to this many seconds until the cluster is ready: every member up and
        /// every shard with its full set of voting replicas (no move in progress).
        #[arg(long, default_value_t = 0)]
        wait_ready_s: u64,
        /// With --wait-ready-s: also wait until the cluster has at least this many members.
        #[arg(long, default_value_t = 1)]
        wait_nodes: usize,
    },
}

#[derive(Subcommand)]
enum NodeCommand {
    /// Decommission a node: its replicas move to the other nodes (while writes go on), then it
    /// leaves the cluster. Stop its process afterwards.
    ///
    /// Example: hotlakectl node remove 4 --watch
    Remove {
        /// The node's id.
        id: u64,
        /// Follow the move until the node is gone, printing the replicas it still holds.
        #[arg(long)]
        watch: bool,
    },
}

enum Failure {
    Rejected(String),
    Usage(String),
    Unreachable(String),
}

fn parse_filter(f: &str) -> Result<Value, Failure> {
    for (op, json_op) in [("!=", "!="), ("=~", "=~"), ("!~", "!~"), ("=", "=")] {
        if let Some((k, v)) = f.split_once(op) {
            return Ok(json!({"tag": k, "op": json_op, "value": v}));
        }
    }
    Err(Failure::Usage(format!("filter {f:?} must look like key=value, key!=value, key=~regex or key!~regex")))
}

fn time_json(s: &str) -> Value {
    match s.parse::<i64>() {
        Ok(n) => json!(n),
        Err(_) => json!(s),
    }
}

fn client(timeout_s: u64) -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(Duration::from_secs(timeout_s)).build().expect("HTTP client builds")
}

fn post_json(cli: &Cli, path: &str, body: &Value) -> Result<Value, Failure> {
    let url = format!("http://{}{}", cli.http, path);
    let resp =
        client(cli.timeout_s).post(&url).json(body).send().map_err(|e| {
            Failure::Unreachable(format!("{url}: {e}. Is the node running? Check --http / HOTLAKE_HTTP."))
        })?;
    let status = resp.status();
    let value: Value = resp.json().map_err(|e| Failure::Unreachable(format!("{url}: bad response: {e}")))?;
    if status.is_success() {
        Ok(value)
    } else if status.is_server_error() {
        Err(Failure::Unreachable(value.to_string()))
    } else {
        Err(Failure::Rejected(serde_json::to_string_pretty(&value).unwrap_or_default()))
    }
}

fn get_json(cli: &Cli, path: &str) -> Result<Value, Failure> {
    let url = format!("http://{}{}", cli.http, path);
    let resp = client(cli.timeout_s)
        .get(&url)
        .send()
        .map_err(|e| Failure::Unreachable(format!("{url}: {e}. Is the node running? Check --http / HOTLAKE_HTTP.")))?;
    let status = resp.status();
    let value: Value = resp.json().map_err(|e| Failure::Unreachable(format!("{url}: bad response: {e}")))?;
    if status.is_success() {
        Ok(value)
    } else {
        Err(Failure::Unreachable(value.to_string()))
    }
}

/// True when every member answers and every shard has min(members, replication factor) voters,
/// each hosted where the map places it, as a leader or follower, with no voter change under way.
fn cluster_ready(status: &Value) -> bool {
    let Some(members) = status["members"].as_array() else { return false };
    let rf = status["map"]["replication_factor"].as_u64().unwrap_or(0) as usize;
    let want = members.len().min(rf);
    let shards_ok = status["map"]["shards"]
        .as_array()
        .is_some_and(|s| s.iter().all(|p| p["replicas"].as_array().is_some_and(|r| r.len() == want)));
    let shards = status["map"]["shards"].as_array();
    let members_ok = members.iter().all(|m| {
        let id = &m["info"]["id"];
        let placed =
            shards.map(|s| s.iter().filter(|p| p["replicas"].as_array().is_some_and(|r| r.contains(id))).count());
        m["status"]["replicas"].as_array().is_some_and(|r| {
            Some(r.len()) == placed
                && r.iter().all(|x| {
                    (x["role"] == "leader" || x["role"] == "follower")
                        && !x["leader"].is_null()
                        && x["joint"] == false
                        && x["voters"].as_array().map(|v| v.len()) == Some(want)
                })
        })
    });
    want > 0 && shards_ok && members_ok
}

/// Rows of `cluster status`: one per member.
fn member_rows(status: &Value) -> Vec<Vec<String>> {
    let empty = Vec::new();
    status["members"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .map(|m| {
            let info = &m["info"];
            let replicas = m["status"]["replicas"].as_array();
            let count = |role: &str| {
                replicas.map(|r| r.iter().filter(|x| x["role"] == role).count().to_string()).unwrap_or_default()
            };
            let reach = if m["status"].is_null() { format!("unreachable: {}", cell(&m["error"])) } else { "up".into() };
            vec![
                cell(&info["id"]),
                cell(&info["grpc_addr"]),
                cell(&info["http_addr"]),
                cell(&info["state"]),
                reach,
                replicas.map(|r| r.len().to_string()).unwrap_or_default(),
                count("leader"),
                count("learner"),
            ]
        })
        .collect()
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn print_table(headers: &[String], rows: &[Vec<String>], out: &mut impl Write) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.len());
            }
        }
    }
    let line = |cells: &[String], out: &mut dyn Write| {
        let parts: Vec<String> = cells.iter().enumerate().map(|(i, c)| format!("{:<w$}", c, w = widths[i])).collect();
        let _ = writeln!(out, "{}", parts.join("  ").trim_end());
    };
    line(headers, out);
    line(&widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>(), out);
    for r in rows {
        line(r, out);
    }
}

fn print_csv(headers: &[String], rows: &[Vec<String>], out: &mut impl Write) {
    let esc = |s: &String| {
        if s.contains([',', '"', '\n']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.clone()
        }
    };
    let _ = writeln!(out, "{}", headers.iter().map(esc).collect::<Vec<_>>().join(","));
    for r in rows {
        let _ = writeln!(out, "{}", r.iter().map(esc).collect::<Vec<_>>().join(","));
    }
}

fn run(cli: &Cli) -> Result<(), Failure> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match &cli.command {
        Command::Health => {
            let url = format!("http://{}/health", cli.http);
            let resp = client(cli.timeout_s)
                .get(&url)
                .send()
                .map_err(|e| Failure::Unreachable(format!("{url}: {e}. Is the node running?")))?;
            let ok = resp.status().is_success();
            let v: Value = resp.json().map_err(|e| Failure::Unreachable(e.to_string()))?;
            let _ = writeln!(
                out,
                "node {}: {} ({}/{} shards have a leader, version {})",
                v["node_id"],
                v["status"].as_str().unwrap_or("?"),
                v["shards_with_leader"],
                v["shards"],
                v["version"].as_str().unwrap_or("?")
            );
            if !ok {
                return Err(Failure::Unreachable("node is degraded".into()));
            }
        }
        Command::Write { db, file, precision, batch_lines } => {
            let reader: Box<dyn Read> = match file.as_deref() {
                None | Some("-") => Box::new(std::io::stdin()),
                Some(path) => {
                    Box::new(std::fs::File::open(path).map_err(|e| Failure::Usage(format!("open {path}: {e}")))?)
                }
            };
            let total_bytes =
                file.as_deref().filter(|f| *f != "-").and_then(|f| std::fs::metadata(f).ok()).map(|m| m.len());
            let http = client(cli.timeout_s);
            let url = format!("http://{}/write?db={}&precision={}", cli.http, db, precision);
            let started = Instant::now();
            let (mut lines_sent, mut bytes_read, mut rejected) = (0u64, 0u64, 0u64);
            let mut batch = String::new();
            let mut n = 0usize;
            let mut send = |batch: &mut String,
                            n: &mut usize,
                            lines_sent: &mut u64,
                            bytes_read: u64|
             -> Result<(), Failure> {
                if *n == 0 {
                    return Ok(());
                }
                let resp = http
                    .post(&url)
                    .body(std::mem::take(batch))
                    .send()
                    .map_err(|e| Failure::Unreachable(format!("{url}: {e}")))?;
                let status = resp.status();
                if status.as_u16() == 400 {
                    let v: Value = resp.json().unwrap_or(Value::Null);
                    let bad = v["error"]["lines_rejected"].as_u64().unwrap_or(0);
                    rejected += bad;
                    for d in v["error"]["details"].as_array().into_iter().flatten().take(5) {
                        eprintln!("\nrejected (line {} of batch): {}", d["line"], d["reason"].as_str().unwrap_or(""));
                    }
                } else if !status.is_success() {
                    let body = resp.text().unwrap_or_default();
                    return Err(if status.is_server_error() {
                        Failure::Unreachable(body)
                    } else {
                        Failure::Rejected(body)
                    });
                }
                *lines_sent += *n as u64;
                *n = 0;
                let secs = started.elapsed().as_secs_f64().max(1e-9);
                let eta = total_bytes
                    .filter(|&t| bytes_read > 0 && t > bytes_read)
                    .map(|t| format!(", ETA {:.0} s", (t - bytes_read) as f64 / (bytes_read as f64 / secs)))
                    .unwrap_or_default();
                eprint!("\r{} lines, {:.0} lines/s{}   ", lines_sent, *lines_sent as f64 / secs, eta);
                Ok(())
            };
            let mut buf = std::io::BufReader::new(reader);
            let mut line = String::new();
            loop {
                line.clear();
                let read = buf.read_line(&mut line).map_err(|e| Failure::Usage(format!("read input: {e}")))?;
                if read == 0 {
                    break;
                }
                bytes_read += read as u64;
                batch.push_str(&line);
                if !line.ends_with('\n') {
                    batch.push('\n');
                }
                n += 1;
                if n >= *batch_lines {
                    send(&mut batch, &mut n, &mut lines_sent, bytes_read)?;
                }
            }
            send(&mut batch, &mut n, &mut lines_sent, bytes_read)?;
            eprintln!();
            let _ = writeln!(
                out,
                "{} lines sent, {} rejected, {:.1} s",
                lines_sent,
                rejected,
                started.elapsed().as_secs_f64()
            );
            if rejected > 0 {
                return Err(Failure::Rejected(format!("{rejected} lines were rejected")));
            }
        }
        Command::Query {
            measurement,
            db,
            fields,
            filters,
            start,
            end,
            aggregates,
            percentile,
            bucket,
            group_by,
            limit,
            desc,
            output,
        } => {
            let mut body = json!({
                "tenant": db, "measurement": measurement, "fields": fields,
                "where": filters.iter().map(|f| parse_filter(f)).collect::<Result<Vec<_>, _>>()?,
                "start": time_json(start), "end": time_json(end),
                "aggregates": aggregates, "group_by": group_by,
                "order": if *desc { "desc" } else { "asc" },
            });
            if let Some(p) = percentile {
                body["percentile"] = json!(p);
            }
            if let Some(b) = bucket {
                body["bucket"] = json!(b);
            }
            if let Some(l) = limit {
                body["limit"] = json!(l);
            }
            let v = post_json(cli, "/api/v1/query", &body)?;
            if matches!(output, Output::Json) {
                let _ = writeln!(out, "{}", serde_json::to_string_pretty(&v).unwrap_or_default());
                return Ok(());
            }
            let mut headers: Vec<String> = Vec::new();
            let mut rows: Vec<Vec<String>> = Vec::new();
            for g in v["groups"].as_array().into_iter().flatten() {
                let tags: Vec<(String, String)> = g["tags"]
                    .as_object()
                    .map(|o| o.iter().map(|(k, v)| (k.clone(), cell(v))).collect())
                    .unwrap_or_default();
                let cols: Vec<String> = g["columns"].as_array().into_iter().flatten().map(cell).collect();
                if headers.is_empty() {
                    headers = tags.iter().map(|(k, _)| k.clone()).chain(cols.iter().cloned()).collect();
                }
                for r in g["rows"].as_array().into_iter().flatten() {
                    let mut row: Vec<String> = tags.iter().map(|(_, v)| v.clone()).collect();
                    row.extend(r.as_array().into_iter().flatten().map(cell));
                    rows.push(row);
                }
            }
            match output {
                Output::Csv => print_csv(&headers, &rows, &mut out),
                _ => print_table(&headers, &rows, &mut out),
            }
        }
        Command::Cluster(c) => run_cluster(cli, c, &mut out)?,
        Command::Node(c) => run_node(cli, c, &mut out)?,
        Command::Last { measurement, db, fields, filters, output } => {
            let body = json!({
                "tenant": db, "measurement": measurement, "fields": fields,
                "where": filters.iter().map(|f| parse_filter(f)).collect::<Result<Vec<_>, _>>()?,
            });
            let v = post_json(cli, "/api/v1/last", &body)?;
            if matches!(output, Output::Json) {
                let _ = writeln!(out, "{}", serde_json::to_string_pretty(&v).unwrap_or_default());
                return Ok(());
            }
            let headers = vec!["device".to_string(), "field".into(), "time".into(), "value".into()];
            let mut rows = Vec::new();
            for r in v["rows"].as_array().into_iter().flatten() {
                for (f, fv) in r["values"].as_object().into_iter().flatten() {
                    rows.push(vec![cell(&r["device"]), f.clone(), cell(&fv["time"]), cell(&fv["value"])]);
                }
            }
            match output {
                Output::Csv => print_csv(&headers, &rows, &mut out),
                _ => print_table(&headers, &rows, &mut out),
            }
        }
    }
    Ok(())
}

fn run_cluster(cli: &Cli, command: &ClusterCommand, out: &mut impl Write) -> Result<(), Failure> {
    match command {
        ClusterCommand::Status { output, wait_ready_s, wait_nodes } => {
            let ready = |s: &Value| cluster_ready(s) && s["members"].as_array().is_some_and(|m| m.len() >= *wait_nodes);
            let deadline = Instant::now() + Duration::from_secs(*wait_ready_s);
            let mut status = get_json(cli, "/api/v1/cluster");
            while Instant::now() < deadline && !status.as_ref().is_ok_and(ready) {
                std::thread::sleep(Duration::from_millis(500));
                status = get_json(cli, "/api/v1/cluster");
            }
            let status = status?;
            let headers: Vec<String> =
                ["node", "grpc", "http", "state", "reachable", "replicas", "leaders", "learners"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
            let rows = member_rows(&status);
            match output {
                Output::Json => {
                    let _ = writeln!(out, "{}", serde_json::to_string_pretty(&status).unwrap_or_default());
                }
                Output::Csv => print_csv(&headers, &rows, out),
                Output::Table => {
                    let map = &status["map"];
                    let _ = writeln!(
                        out,
                        "cluster {:016x}  map version {}  {} shards  replication factor {}",
                        map["cluster_id"].as_u64().unwrap_or(0),
                        map["version"],
                        map["shard_count"],
                        map["replication_factor"]
                    );
                    print_table(&headers, &rows, out);
                }
            }
            if rows.iter().any(|r| r[4] != "up") {
                return Err(Failure::Unreachable("some members are unreachable".into()));
            }
            if *wait_ready_s > 0 && !ready(&status) {
                return Err(Failure::Unreachable(format!(
                    "the cluster is not ready after {wait_ready_s} s: some shards lack replicas or leaders"
                )));
            }
        }
    }
    Ok(())
}

fn run_node(cli: &Cli, command: &NodeCommand, out: &mut impl Write) -> Result<(), Failure> {
    match command {
        NodeCommand::Remove { id, watch } => {
            post_json(cli, &format!("/api/v1/cluster/nodes/{id}/drain"), &json!({}))?;
            let _ = writeln!(out, "node {id} is draining: its replicas move to other nodes, then it leaves");
            if !watch {
                return Ok(());
            }
            loop {
                let status = get_json(cli, "/api/v1/cluster")?;
                let key = id.to_string();
                if !status["map"]["nodes"].as_object().is_some_and(|n| n.contains_key(&key)) {
                    let _ = writeln!(out, "node {id} has left the cluster; its process can be stopped");
                    return Ok(());
                }
                let placed = status["map"]["shards"]
                    .as_array()
                    .map(|s| {
                        s.iter().filter(|p| p["replicas"].as_array().is_some_and(|r| r.contains(&json!(id)))).count()
                    })
                    .unwrap_or(0);
                let _ = writeln!(out, "node {id}: {placed} replicas still placed there");
                std::thread::sleep(Duration::from_secs(2));
            }
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Rejected(m)) => {
            eprintln!("error: the server rejected the request:\n{m}");
            ExitCode::from(1)
        }
        Err(Failure::Usage(m)) => {
            eprintln!("error: {m}");
            ExitCode::from(2)
        }
        Err(Failure::Unreachable(m)) => {
            eprintln!("error: {m}");
            ExitCode::from(3)
        }
    }
}
