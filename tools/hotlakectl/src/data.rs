//! Data commands: `health`, `write`, `query`, `last`.

use std::io::{BufRead, IsTerminal, Read, Write};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use hotlake_client::AdminClient;
use hotlake_types::filter::{parse_text, FieldFilter, Operand};

use crate::api::Api;
use crate::output::{cell, json as print_json, print_rows, rfc3339, Output};
use crate::Failure;

/// Health of every member: up, and every shard it hosts has a leader.
pub async fn health(admin: &AdminClient, output: Output, out: &mut impl Write) -> Result<(), Failure> {
    let status = admin.cluster_status().await?;
    let mut rows = Vec::new();
    let mut bad = 0;
    for m in &status.members {
        let row = match admin.health_at(&m.grpc_addr).await {
            Ok(h) => {
                let status = if h.shards_with_leader == h.shards && h.problems.is_empty() {
                    "ok".to_string()
                } else {
                    bad += 1;
                    format!("degraded: {}", h.problems.join("; "))
                };
                vec![
                    m.id.to_string(),
                    m.grpc_addr.clone(),
                    status,
                    format!("{}/{}", h.shards_with_leader, h.shards),
                    h.version,
                ]
            }
            Err(e) => {
                bad += 1;
                vec![m.id.to_string(), m.grpc_addr.clone(), format!("down: {e}"), String::new(), String::new()]
            }
        };
        rows.push(row);
    }
    print_rows(output, &["node", "grpc", "status", "shards_led", "version"], &rows, out);
    if bad > 0 {
        return Err(Failure::Unreachable(format!("{bad} node(s) did not answer or are degraded")));
    }
    Ok(())
}

/// Options of `write`.
pub struct WriteOptions<'a> {
    pub db: &'a str,
    pub file: Option<&'a str>,
    pub precision: &'a str,
    pub batch_lines: usize,
}

/// Progress of a write on stderr: a bar with rate and ETA on a terminal, a line every few
/// seconds otherwise.
struct Progress {
    started: Instant,
    last_print: Instant,
    total_bytes: Option<u64>,
    tty: bool,
    /// A bar is on the terminal's current line (no newline after it yet).
    open_line: bool,
}

impl Progress {
    fn show(&mut self, points: u64, bytes: u64, last: bool) {
        if !last && !self.tty && self.last_print.elapsed() < Duration::from_secs(5) {
            return;
        }
        self.last_print = Instant::now();
        let secs = self.started.elapsed().as_secs_f64().max(1e-9);
        let rate = points as f64 / secs;
        let (bar, eta) = match self.total_bytes.filter(|t| *t > 0) {
            Some(total) => {
                let done = (bytes as f64 / total as f64).min(1.0);
                let filled = (done * 30.0) as usize;
                let eta = if done > 0.0 { secs / done - secs } else { 0.0 };
                (
                    format!("[{}{}] {:>3.0}% ", "#".repeat(filled), ".".repeat(30 - filled), done * 100.0),
                    format!(", ETA {eta:.0} s"),
                )
            }
            None => (String::new(), String::new()),
        };
        let line = format!("{bar}{points} points, {rate:.0} points/s{eta}");
        if self.tty {
            eprint!("\r{line}   ");
            self.open_line = true;
            if last {
                self.end_line();
            }
        } else {
            eprintln!("{line}");
        }
    }
}

impl Progress {
    /// Ends the bar's line, so that whatever is printed next (the summary, an error, a
    /// rejected line) starts on a line of its own.
    fn end_line(&mut self) {
        if std::mem::take(&mut self.open_line) {
            eprintln!();
        }
    }
}

/// Sends batches of lines round-robin over the members and counts what was written.
struct Sender<'a> {
    api: &'a Api,
    options: &'a WriteOptions<'a>,
    turn: usize,
    points: u64,
    rejected: u64,
    /// Reasons for rejected lines not printed yet (printed between progress lines).
    rejections: Vec<String>,
}

impl Sender<'_> {
    /// Prints the reasons for rejected lines gathered since the last call, each on a line of
    /// its own below the progress bar.
    fn report_rejections(&mut self, progress: &mut Progress) {
        if self.rejections.is_empty() {
            return;
        }
        progress.end_line();
        for r in self.rejections.drain(..) {
            eprintln!("{r}");
        }
    }

    /// Sends one batch of `lines` lines; a batch that meets an unavailable node is retried on
    /// the next one, with a growing pause.
    async fn send(&mut self, body: String, lines: usize) -> Result<(), Failure> {
        if lines == 0 {
            return Ok(());
        }
        let addrs = self.api.addrs();
        let mut attempt = 0;
        loop {
            let addr = &addrs[self.turn % addrs.len()];
            self.turn += 1;
            let url =
                self.api.url(addr, &format!("/write?db={}&precision={}", self.options.db, self.options.precision));
            let err = match self.api.http().post(&url).body(body.clone()).send().await {
                Ok(r) if r.status().is_success() => break,
                Ok(r) if r.status().as_u16() == 400 => {
                    let v: Value = r.json().await.unwrap_or(Value::Null);
                    self.rejected += v["error"]["lines_rejected"].as_u64().unwrap_or(0);
                    for d in v["error"]["details"].as_array().into_iter().flatten().take(5) {
                        self.rejections.push(format!(
                            "rejected line {} of a batch: {}",
                            d["line"],
                            d["reason"].as_str().unwrap_or("")
                        ));
                    }
                    break;
                }
                Ok(r) if r.status().is_client_error() => {
                    return Err(Failure::Rejected(r.text().await.unwrap_or_default()))
                }
                Ok(r) => format!("{addr}: HTTP {}: {}", r.status(), r.text().await.unwrap_or_default()),
                Err(e) => format!("{addr}: {e}"),
            };
            attempt += 1;
            if attempt >= 5 * addrs.len() {
                return Err(Failure::Unreachable(format!("a batch failed {attempt} times, last: {err}")));
            }
            tokio::time::sleep(Duration::from_millis(200 * attempt.min(10) as u64)).await;
        }
        self.points += lines as u64;
        Ok(())
    }
}

/// Line protocol from a file or stdin in batches, spread over the cluster's members.
pub async fn write(api: &Api, o: &WriteOptions<'_>, out: &mut impl Write) -> Result<(), Failure> {
    if api.addrs().is_empty() {
        return Err(Failure::Usage("no cluster address; set --cluster".into()));
    }
    let reader: Box<dyn Read> = match o.file {
        None | Some("-") => Box::new(std::io::stdin()),
        Some(path) => {
            Box::new(std::fs::File::open(path).map_err(|e| Failure::Usage(format!("cannot open {path}: {e}")))?)
        }
    };
    let total_bytes = o.file.filter(|f| *f != "-").and_then(|f| std::fs::metadata(f).ok()).map(|m| m.len());
    let mut progress = Progress {
        started: Instant::now(),
        last_print: Instant::now(),
        total_bytes,
        tty: std::io::stderr().is_terminal(),
        open_line: false,
    };
    let mut sender = Sender { api, options: o, turn: 0, points: 0, rejected: 0, rejections: Vec::new() };
    let sent = send_all(&mut sender, &mut progress, reader, o.batch_lines).await;
    progress.end_line();
    sender.report_rejections(&mut progress);
    sent?;
    let _ = writeln!(
        out,
        "{} points sent, {} rejected, {:.1} s",
        sender.points,
        sender.rejected,
        progress.started.elapsed().as_secs_f64()
    );
    if sender.rejected > 0 {
        return Err(Failure::Rejected(format!("{} lines were rejected", sender.rejected)));
    }
    Ok(())
}

/// Reads `reader` to its end and sends it in batches of `batch_lines` lines, showing progress.
async fn send_all(
    sender: &mut Sender<'_>,
    progress: &mut Progress,
    reader: Box<dyn Read>,
    batch_lines: usize,
) -> Result<(), Failure> {
    let (mut batch, mut lines, mut bytes_read) = (String::new(), 0usize, 0u64);
    let mut input = std::io::BufReader::new(reader);
    let mut line = String::new();
    loop {
        line.clear();
        let read = input.read_line(&mut line).map_err(|e| Failure::Usage(format!("cannot read the input: {e}")))?;
        if read == 0 {
            break;
        }
        bytes_read += read as u64;
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        batch.push_str(&line);
        if !line.ends_with('\n') {
            batch.push('\n');
        }
        lines += 1;
        if lines >= batch_lines {
            sender.send(std::mem::take(&mut batch), std::mem::take(&mut lines)).await?;
            sender.report_rejections(progress);
            progress.show(sender.points, bytes_read, false);
        }
    }
    sender.send(batch, lines).await?;
    sender.report_rejections(progress);
    progress.show(sender.points, bytes_read, true);
    Ok(())
}

pub fn parse_filter(f: &str) -> Result<Value, Failure> {
    for op in ["!=", "=~", "!~", "="] {
        if let Some((k, v)) = f.split_once(op) {
            return Ok(json!({"tag": k, "op": op, "value": v}));
        }
    }
    Err(Failure::Usage(format!("filter {f:?} must look like key=value, key!=value, key=~regex or key!~regex")))
}

/// A field filter flag in text form (`velocity>1`, `error=E_DECODER`, `reboot=true`,
/// `firmware^=2.`, `error=~^E_`, `error in E_1,E_2`), checked here so a mistake is a usage
/// error before anything is sent.
pub fn parse_field_filter(f: &str) -> Result<FieldFilter, Failure> {
    parse_text(f).map_err(|e| Failure::Usage(format!("--filter: {e}")))
}

/// A field filter as the JSON API takes it.
pub fn field_filter_json(f: &FieldFilter) -> Value {
    match f.test.parts() {
        (op, Operand::List(values)) => json!({"field": f.field, "op": op.symbol(), "values": values}),
        (op, Operand::Number(x)) => json!({"field": f.field, "op": op.symbol(), "value": x}),
        (op, Operand::Bool(b)) => json!({"field": f.field, "op": op.symbol(), "value": b}),
        (op, Operand::Str(s)) => json!({"field": f.field, "op": op.symbol(), "value": s}),
    }
}

/// A time flag: nanoseconds, or RFC 3339 text passed through for the server to parse.
pub fn time_json(s: &str) -> Value {
    match s.parse::<i64>() {
        Ok(n) => json!(n),
        Err(_) => json!(s),
    }
}

/// Prints a query answer: one row per result row, tag columns first; in a table the time column
/// is RFC 3339 unless `raw_time`.
pub fn print_query(v: &Value, output: Output, raw_time: bool, out: &mut impl Write) {
    if output == Output::Json {
        print_json(v, out);
        return;
    }
    let mut headers: Vec<String> = Vec::new();
    let mut rows: Vec<Vec<String>> = Vec::new();
    for g in v["groups"].as_array().into_iter().flatten() {
        let tags: Vec<(String, String)> =
            g["tags"].as_object().map(|o| o.iter().map(|(k, v)| (k.clone(), cell(v))).collect()).unwrap_or_default();
        if headers.is_empty() {
            headers = tags
                .iter()
                .map(|(k, _)| k.clone())
                .chain(g["columns"].as_array().into_iter().flatten().map(cell))
                .collect();
        }
        for r in g["rows"].as_array().into_iter().flatten() {
            let mut row: Vec<String> = tags.iter().map(|(_, v)| v.clone()).collect();
            row.extend(r.as_array().into_iter().flatten().map(cell));
            rows.push(row);
        }
    }
    let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
    if output == Output::Table && !raw_time {
        times_as_rfc3339(&headers, &mut rows);
    }
    print_rows(output, &headers, &rows, out);
}

/// Rewrites the cells of the `time` column from nanoseconds to RFC 3339 (cells that are not
/// whole numbers stay as they are).
fn times_as_rfc3339(headers: &[&str], rows: &mut [Vec<String>]) {
    let Some(col) = headers.iter().position(|h| *h == "time") else { return };
    for row in rows {
        if let Some(ns) = row.get(col).and_then(|c| c.parse::<i64>().ok()) {
            row[col] = rfc3339(ns);
        }
    }
}

/// Prints a `last` answer: one row per device and field; in a table times are RFC 3339 unless
/// `raw_time`.
pub fn print_last(v: &Value, output: Output, raw_time: bool, out: &mut impl Write) {
    if output == Output::Json {
        print_json(v, out);
        return;
    }
    let mut rows = Vec::new();
    for r in v["rows"].as_array().into_iter().flatten() {
        for (f, fv) in r["values"].as_object().into_iter().flatten() {
            rows.push(vec![cell(&r["device"]), f.clone(), cell(&fv["time"]), cell(&fv["value"])]);
        }
    }
    let headers = ["device", "field", "time", "value"];
    if output == Output::Table && !raw_time {
        times_as_rfc3339(&headers, &mut rows);
    }
    print_rows(output, &headers, &rows, out);
}
