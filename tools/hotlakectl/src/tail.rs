//! `hotlakectl tail`: follows a subscription and prints each point as it is written.
//!
//! Text output is one line per point, `time measurement,tags fields`; JSON output is one
//! object per point with the cursor after it. On Ctrl-C, at `--count`, or when the stream ends
//! the last cursor goes to stderr, to resume with `--after`.
//!
//! With `--group`, `tail` is a member of a consumer group: it reads the shards the group gives
//! it and commits what it has printed (after each message, at most once a second, and on the
//! way out), so the next member of the group resumes right after.

use std::io::Write;

use serde_json::{json, Map, Value};

use crate::data;
use crate::output::rfc3339;
use crate::Failure;
use hotlake_client::proto::{field_column::Values, SeriesPoints};
use hotlake_client::{Client, Cmp, SubscribeBuilder, Subscription};
use hotlake_types::filter::{FieldFilter, FilterOp, Operand};

/// How `tail` prints points.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum TailFormat {
    /// `time measurement,tag=value field=value,...`, one point per line.
    Text,
    /// One JSON object per line: cursor, shard, index, measurement, tags, time, fields.
    Json,
}

/// What `tail` follows, and how it prints.
#[derive(clap::Args)]
pub struct TailArgs {
    /// Measurement (all of the tenant's when absent).
    measurement: Option<String>,
    /// Tenant (database).
    #[arg(long, default_value = "default")]
    db: String,
    /// Field to show (repeatable); none shows all.
    #[arg(long = "field")]
    fields: Vec<String>,
    /// Tag filter `key=value` (repeatable; all must hold).
    #[arg(long = "where")]
    filters: Vec<String>,
    /// Field-value filter, as `query --filter` takes it (repeatable; all must hold): only the
    /// rows that pass come, e.g. --filter error=E_DECODER, --filter reboot=true. With
    /// --latest, a series comes when the latest value of each tested field passes.
    #[arg(long = "filter")]
    field_filters: Vec<String>,
    /// Start right after this cursor (printed by an earlier `tail`) instead of now.
    #[arg(long)]
    after: Option<String>,
    /// Start with the points stored from this time on (RFC 3339 or nanoseconds), then follow
    /// what is written after them.
    #[arg(long, conflicts_with_all = ["after", "group"])]
    history_from: Option<String>,
    /// Start with the latest value of each field of each series (as `last` shows), then follow
    /// what is written after them.
    #[arg(long, conflicts_with_all = ["after", "group", "history_from"])]
    latest: bool,
    /// Stop after this many points.
    #[arg(long)]
    count: Option<u64>,
    /// Read as a member of this consumer group (created on first use, starting now or at
    /// `--after`), committing what is printed.
    #[arg(long)]
    group: Option<String>,
    #[arg(long, value_enum, default_value = "text")]
    output: TailFormat,
}

/// Follows the subscription until Ctrl-C, `count` points, or an error.
pub async fn tail(client: &Client, o: &TailArgs, raw_time: bool, out: &mut impl Write) -> Result<(), Failure> {
    let mut what = SubscribeBuilder::new(&o.db);
    if let Some(m) = &o.measurement {
        what = what.measurement(m);
    }
    for t in &o.filters {
        let (k, v) = t.split_once('=').ok_or_else(|| Failure::Usage(format!("--where wants key=value, got {t:?}")))?;
        what = what.tag(k, v);
    }
    for f in &o.fields {
        what = what.field(f);
    }
    for f in &o.field_filters {
        what = with_field_filter(what, &data::parse_field_filter(f)?);
    }
    if let Some(c) = &o.after {
        what = what.after(c);
    }
    if let Some(t) = &o.history_from {
        what = what.history_from(t);
    }
    if o.latest {
        what = what.latest();
    }
    if let Some(g) = &o.group {
        what = what.group(g);
    }
    let mut subscription = client.subscribe(what);
    let mut cursor: Option<String> = None;
    let mut committed: Option<String> = None;
    let mut last_commit = std::time::Instant::now();
    let mut printed = 0u64;
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    let result = loop {
        let message = tokio::select! {
            m = subscription.recv() => m,
            _ = &mut interrupted => break Ok(()),
        };
        let message = match message {
            Some(Ok(m)) => m,
            Some(Err(e)) => break Err(Failure::from(e)),
            None => break Ok(()),
        };
        let mut whole = true;
        for s in &message.series {
            for point in points_of(s) {
                if o.count.is_some_and(|c| printed >= c) {
                    whole = false;
                    break;
                }
                print_point(o.output, raw_time, &message.cursor, message.shard, message.index, &point, out);
                printed += 1;
            }
        }
        let _ = out.flush();
        // A message cut short by --count is not passed: resuming (or the group's next member)
        // gets it again, whole. A history message's cursor would skip the rest of the history.
        if whole && !message.history {
            cursor = Some(message.cursor);
        }
        if o.group.is_some() && last_commit.elapsed() >= COMMIT_EVERY {
            commit(&subscription, &cursor, &mut committed).await;
            last_commit = std::time::Instant::now();
        }
        if o.count.is_some_and(|c| printed >= c) {
            break Ok(());
        }
    };
    if o.group.is_some() {
        commit(&subscription, &cursor, &mut committed).await;
    } else if let Some(c) = cursor {
        eprintln!("resume with: --after {c}");
    }
    result
}

/// A group member commits what it printed at most this often (and once more on the way out).
const COMMIT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Commits `cursor` unless it is what was committed last; a failure is reported, not fatal
/// (the group then delivers those points again).
async fn commit(subscription: &Subscription, cursor: &Option<String>, committed: &mut Option<String>) {
    let Some(c) = cursor.as_ref().filter(|c| committed.as_ref() != Some(*c)) else {
        return;
    };
    match subscription.commit(c).await {
        Ok(_) => *committed = Some(c.clone()),
        Err(e) => eprintln!("warning: commit failed ({e}); the group will deliver these points again"),
    }
}

/// One point of a series.
struct Point {
    measurement: String,
    tags: Vec<(String, String)>,
    time: i64,
    fields: Vec<(String, Value)>,
}

/// The points of a series, row by row.
fn points_of(s: &SeriesPoints) -> Vec<Point> {
    let tags: Vec<(String, String)> = s.tags.iter().map(|t| (t.key.clone(), t.value.clone())).collect();
    let mut points: Vec<Point> = s
        .timestamps_ns
        .iter()
        .map(|&time| Point { measurement: s.measurement.clone(), tags: tags.clone(), time, fields: Vec::new() })
        .collect();
    for c in &s.fields {
        let values: Vec<Value> = match &c.values {
            Some(Values::F64(v)) => v.values.iter().map(|x| json!(x)).collect(),
            Some(Values::I64(v)) => v.values.iter().map(|x| json!(x)).collect(),
            Some(Values::U64(v)) => v.values.iter().map(|x| json!(x)).collect(),
            Some(Values::Bool(v)) => v.values.iter().map(|x| json!(x)).collect(),
            Some(Values::String(v)) => v.values.iter().map(|x| json!(x)).collect(),
            None => Vec::new(),
        };
        let mut values = values.into_iter();
        let mut absent = c.absent_rows.iter().peekable();
        for (row, p) in points.iter_mut().enumerate() {
            if absent.peek() == Some(&&(row as u32)) {
                absent.next();
                continue;
            }
            if let Some(v) = values.next() {
                p.fields.push((c.name.clone(), v));
            }
        }
    }
    points
}

fn print_point(
    format: TailFormat,
    raw_time: bool,
    cursor: &str,
    shard: u32,
    index: u64,
    p: &Point,
    out: &mut impl Write,
) {
    match format {
        TailFormat::Json => {
            let tags: Map<String, Value> = p.tags.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
            let fields: Map<String, Value> = p.fields.iter().cloned().collect();
            let line = json!({
                "cursor": cursor, "shard": shard, "index": index, "measurement": p.measurement,
                "tags": tags, "time": p.time, "fields": fields,
            });
            let _ = writeln!(out, "{line}");
        }
        TailFormat::Text => {
            let time = if raw_time { p.time.to_string() } else { rfc3339(p.time) };
            let tags: String = p.tags.iter().map(|(k, v)| format!(",{k}={v}")).collect();
            let fields: Vec<String> = p.fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let _ = writeln!(out, "{time} {}{tags} {}", p.measurement, fields.join(","));
        }
    }
}

/// `what` with a field filter added through the client's builder.
fn with_field_filter(what: SubscribeBuilder, f: &FieldFilter) -> SubscribeBuilder {
    let (op, operand) = f.test.parts();
    let cmp = match op {
        FilterOp::Lt => Cmp::Lt,
        FilterOp::Le => Cmp::Le,
        FilterOp::Gt => Cmp::Gt,
        FilterOp::Ge => Cmp::Ge,
        FilterOp::Eq => Cmp::Eq,
        FilterOp::Ne => Cmp::Ne,
        FilterOp::In => Cmp::In,
        FilterOp::Prefix => Cmp::Prefix,
        FilterOp::Regex => Cmp::Regex,
        FilterOp::NotRegex => Cmp::NotRegex,
    };
    match operand {
        Operand::Number(x) => what.filter(&f.field, cmp, x),
        Operand::Bool(b) => what.filter(&f.field, cmp, b),
        Operand::Str(s) => what.filter(&f.field, cmp, s),
        Operand::List(values) => what.filter_in(&f.field, values),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hotlake_client::proto::{DoubleValues, FieldColumn, Tag};

    #[test]
    fn absent_rows_leave_their_field_out_of_the_point() {
        let s = SeriesPoints {
            measurement: "m".into(),
            tags: vec![Tag { key: "d".into(), value: "1".into() }],
            timestamps_ns: vec![10, 20, 30],
            fields: vec![FieldColumn {
                name: "v".into(),
                values: Some(Values::F64(DoubleValues { values: vec![1.5, 3.5] })),
                absent_rows: vec![1],
            }],
        };
        let p = points_of(&s);
        assert_eq!(p.iter().map(|p| p.fields.len()).collect::<Vec<_>>(), vec![1, 0, 1]);
        assert_eq!(p[2].fields[0].1, json!(3.5));
    }
}
