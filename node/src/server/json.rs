//! The JSON query format of `POST /api/v1/query` and `POST /api/v1/last`, and time parsing
//! shared with the CLI.
//!
//! ```json
//! {"measurement": "readings", "fields": ["velocity"],
//!  "where": [{"tag": "fleet", "op": "=", "value": "East"}],
//!  "filter": [{"field": "velocity", "op": ">", "value": 1}],
//!  "start": "2016-01-01T00:00:00Z", "end": "2016-01-02T00:00:00Z",
//!  "aggregates": ["mean", "max"], "bucket": "1h", "group_by": ["name"],
//!  "fill": "none", "order": "asc", "limit": 100}
//! ```

use serde::{Deserialize, Serialize};
use serde_json::{json, Value as Json};

use hotlake_query::filter::{FieldFilter, FilterOp, Operand};
use hotlake_query::{AggKind, Fill, LastQuery, LastRow, Query, QueryResult, TagOp, TagPredicate};
use hotlake_types::error::Error;
use hotlake_types::model::{FieldValue, TimestampNs};

/// A time given as nanoseconds or as an RFC 3339 string.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum TimeArg {
    /// Nanoseconds since the epoch.
    Nanos(i64),
    /// RFC 3339, e.g. `2016-01-01T00:00:00Z` or `2016-01-01T00:00:00.5+02:00`.
    Text(String),
}

/// A duration given as nanoseconds or as text like `10s`, `5m`, `1h`, `1d`, `250ms`.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum DurationArg {
    /// Nanoseconds.
    Nanos(i64),
    /// Text with a unit.
    Text(String),
}

/// One predicate of the `where` list.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonPredicate {
    /// Tag key.
    pub tag: String,
    /// `=`, `!=`, `in`, `=~` or `!~`.
    pub op: String,
    /// The value, for every operator but `in`.
    #[serde(default)]
    pub value: Option<String>,
    /// The values, for `in`.
    #[serde(default)]
    pub values: Option<Vec<String>>,
}

/// One entry of the `filter` list: `{"field": "velocity", "op": ">", "value": 1}`,
/// `{"field": "error", "op": "=", "value": "E_DECODER"}`, `{"field": "reboot", "op": "=",
/// "value": true}`, `{"field": "error", "op": "in", "values": ["E_1", "E_2"]}`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonFieldFilter {
    /// Field name.
    pub field: String,
    /// `<`, `<=`, `>`, `>=`, `=`, `!=`, `in`, `prefix`, `=~` or `!~`.
    pub op: String,
    /// The operand: a number, a boolean or a string (every operator but `in`).
    #[serde(default)]
    pub value: Option<serde_json::Value>,
    /// The strings of `in`.
    #[serde(default)]
    pub values: Option<Vec<String>>,
}

impl JsonFieldFilter {
    /// Converts to the query model, checking the operator against the operand.
    pub fn into_filter(self) -> Result<FieldFilter, Error> {
        let op = FilterOp::parse(&self.op)?;
        let operand = match (op, self.value, self.values) {
            (FilterOp::In, None, Some(values)) => Operand::List(values),
            (FilterOp::In, _, _) => {
                return Err(Error::invalid(format!("filter on {:?} with in needs \"values\" only", self.field)))
            }
            (_, Some(_), Some(_)) | (_, None, Some(_)) => {
                return Err(Error::invalid(format!("filter on {:?}: only in takes \"values\"", self.field)))
            }
            (_, None, None) => return Err(Error::invalid(format!("filter on {:?} needs \"value\"", self.field))),
            (_, Some(serde_json::Value::Number(n)), None) => Operand::Number(n.as_f64().unwrap_or(f64::NAN)),
            (_, Some(serde_json::Value::Bool(b)), None) => Operand::Bool(b),
            (_, Some(serde_json::Value::String(s)), None) => Operand::Str(s),
            (_, Some(other), None) => {
                return Err(Error::invalid(format!(
                    "filter on {:?}: \"value\" must be a number, a boolean or a string, not {other}",
                    self.field
                )))
            }
        };
        FieldFilter::new(self.field, op, operand)
    }
}

/// The body of `POST /api/v1/query`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonQuery {
    /// Tenant (defaults to the node's default tenant).
    #[serde(default)]
    pub tenant: String,
    /// Measurement.
    pub measurement: String,
    /// Fields (empty = all).
    #[serde(default)]
    pub fields: Vec<String>,
    /// Tag predicates.
    #[serde(default, rename = "where")]
    pub predicates: Vec<JsonPredicate>,
    /// Field-value filters.
    #[serde(default, rename = "filter")]
    pub filters: Vec<JsonFieldFilter>,
    /// Start (inclusive).
    pub start: TimeArg,
    /// End (exclusive).
    pub end: TimeArg,
    /// Aggregates (empty = raw points).
    #[serde(default)]
    pub aggregates: Vec<String>,
    /// Quantile for `percentile`.
    #[serde(default)]
    pub percentile: Option<f64>,
    /// Bucket width.
    #[serde(default)]
    pub bucket: Option<DurationArg>,
    /// Tag keys to group by.
    #[serde(default)]
    pub group_by: Vec<String>,
    /// `none`, `null`, `previous` or a number.
    #[serde(default)]
    pub fill: Option<Json>,
    /// `asc` or `desc`.
    #[serde(default)]
    pub order: Option<String>,
    /// Rows per group.
    #[serde(default)]
    pub limit: Option<u64>,
    /// Answer from the shards that can, listing the others in `missing_shards`, instead of
    /// failing when a shard cannot be reached.
    #[serde(default)]
    pub partial: bool,
}

/// The body of `POST /api/v1/last`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonLast {
    /// Tenant.
    #[serde(default)]
    pub tenant: String,
    /// Measurement.
    pub measurement: String,
    /// Fields (empty = all).
    #[serde(default)]
    pub fields: Vec<String>,
    /// Tag predicates.
    #[serde(default, rename = "where")]
    pub predicates: Vec<JsonPredicate>,
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    // Howard Hinnant's algorithm: days since 1970-01-01 of a proleptic Gregorian date.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses an RFC 3339 timestamp into nanoseconds since the epoch.
pub fn parse_rfc3339(s: &str) -> Result<TimestampNs, String> {
    let bad = || format!("invalid time {s:?}: expected RFC 3339 like 2016-01-01T00:00:00Z");
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !(b[10] == b'T' || b[10] == b't' || b[10] == b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| -> Result<i64, String> {
        s.get(r).and_then(|x| x.parse::<i64>().ok()).ok_or_else(bad)
    };
    let (y, mo, d, h, mi, sec) = (num(0..4)?, num(5..7)?, num(8..10)?, num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return Err(bad());
    }
    let mut i = 19;
    let mut frac_ns = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let digits = &s[start..i];
        if digits.is_empty() || digits.len() > 9 {
            return Err(bad());
        }
        frac_ns = digits.parse::<i64>().map_err(|_| bad())? * 10i64.pow(9 - digits.len() as u32);
    }
    // Byte checks only: the text may hold multi-byte characters anywhere, and slicing a
    // `str` inside one panics.
    let zone = &b[i..];
    let digits = |r: std::ops::Range<usize>| -> Result<i64, String> {
        let d = &zone[r];
        if !d.iter().all(u8::is_ascii_digit) {
            return Err(bad());
        }
        Ok(d.iter().fold(0, |n, c| n * 10 + i64::from(c - b'0')))
    };
    let offset_s = match zone {
        b"Z" | b"z" => 0,
        tz if tz.len() == 6 && (tz[0] == b'+' || tz[0] == b'-') && tz[3] == b':' => {
            let oh = digits(1..3)?;
            let om = digits(4..6)?;
            let o = oh * 3600 + om * 60;
            if tz[0] == b'-' {
                -o
            } else {
                o
            }
        }
        _ => return Err(bad()),
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec - offset_s;
    secs.checked_mul(1_000_000_000).and_then(|n| n.checked_add(frac_ns)).ok_or_else(bad)
}

/// Parses a duration like `10s`, `5m`, `1h`, `7d`, `250ms`, `10us`, `100ns`.
pub fn parse_duration(s: &str) -> Result<i64, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: i64 = n.parse().map_err(|_| format!("invalid duration {s:?}: expected a number and a unit like 10s"))?;
    let mult = match unit {
        "ns" => 1,
        "us" | "µs" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        "d" => 86_400_000_000_000,
        "w" => 7 * 86_400_000_000_000,
        _ => return Err(format!("invalid duration {s:?}: unit must be ns, us, ms, s, m, h, d or w")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("duration {s:?} is too large"))
}

fn time_arg(t: &TimeArg, what: &str) -> Result<TimestampNs, Error> {
    match t {
        TimeArg::Nanos(n) => Ok(*n),
        TimeArg::Text(s) => parse_rfc3339(s).map_err(|e| Error::invalid(format!("{what}: {e}"))),
    }
}

fn predicates(list: Vec<JsonPredicate>) -> Result<Vec<TagPredicate>, Error> {
    list.into_iter()
        .map(|p| {
            let one = || {
                p.value
                    .clone()
                    .ok_or_else(|| Error::invalid(format!("predicate on {:?} with {:?} needs \"value\"", p.tag, p.op)))
            };
            let regex = |s: String| hotlake_types::filter::compile_pattern(&s);
            let op = match p.op.as_str() {
                "=" | "==" => TagOp::Eq(one()?),
                "!=" | "<>" => TagOp::Neq(one()?),
                "in" | "IN" => TagOp::In(
                    p.values
                        .clone()
                        .ok_or_else(|| Error::invalid(format!("predicate on {:?} with in needs \"values\"", p.tag)))?,
                ),
                "=~" => TagOp::Regex(regex(one()?)?),
                "!~" => TagOp::NotRegex(regex(one()?)?),
                other => return Err(Error::invalid(format!("unknown operator {other:?}: use =, !=, in, =~ or !~"))),
            };
            Ok(TagPredicate { key: p.tag, op })
        })
        .collect()
}

impl JsonQuery {
    /// Converts to the query model.
    pub fn into_query(self) -> Result<Query, Error> {
        let aggregates = self.aggregates.iter().map(|a| AggKind::parse(a)).collect::<Result<Vec<_>, _>>()?;
        let fill = match &self.fill {
            None => Fill::None,
            Some(Json::String(s)) if s == "none" => Fill::None,
            Some(Json::String(s)) if s == "null" => Fill::Null,
            Some(Json::Null) => Fill::Null,
            Some(Json::String(s)) if s == "previous" => Fill::Previous,
            Some(Json::Number(n)) => Fill::Value(n.as_f64().unwrap_or(0.0)),
            Some(other) => {
                return Err(Error::invalid(format!("fill must be none, null, previous or a number, got {other}")))
            }
        };
        let descending = match self.order.as_deref() {
            None | Some("asc") => false,
            Some("desc") => true,
            Some(o) => return Err(Error::invalid(format!("order must be asc or desc, got {o:?}"))),
        };
        let bucket_ns = match &self.bucket {
            None => 0,
            Some(DurationArg::Nanos(n)) => *n,
            Some(DurationArg::Text(s)) => parse_duration(s).map_err(Error::invalid)?,
        };
        Ok(Query {
            tenant: self.tenant,
            measurement: self.measurement,
            fields: self.fields,
            predicates: predicates(self.predicates)?,
            filters: self.filters.into_iter().map(JsonFieldFilter::into_filter).collect::<Result<Vec<_>, Error>>()?,
            start_ns: time_arg(&self.start, "start")?,
            end_ns: time_arg(&self.end, "end")?,
            aggregates,
            percentile: self.percentile.unwrap_or(50.0),
            bucket_ns,
            group_by: self.group_by,
            fill,
            descending,
            limit: self.limit.unwrap_or(0) as usize,
            allow_partial: self.partial,
        })
    }
}

impl JsonLast {
    /// Converts to the query model.
    pub fn into_query(self) -> Result<LastQuery, Error> {
        Ok(LastQuery {
            tenant: self.tenant,
            measurement: self.measurement,
            fields: self.fields,
            predicates: predicates(self.predicates)?,
        })
    }
}

/// A field value as JSON.
pub fn value_json(v: &Option<FieldValue>) -> Json {
    match v {
        None => Json::Null,
        Some(FieldValue::F64(x)) => json!(x),
        Some(FieldValue::I64(x)) => json!(x),
        Some(FieldValue::U64(x)) => json!(x),
        Some(FieldValue::Bool(x)) => json!(x),
        Some(FieldValue::Str(x)) => json!(x),
    }
}

fn tags_json(tags: &[(String, String)]) -> Json {
    Json::Object(tags.iter().map(|(k, v)| (k.clone(), Json::String(v.clone()))).collect())
}

/// A query result as JSON: `{"groups": [{"tags", "columns", "rows"}], "points_scanned"}`.
pub fn result_json(r: &QueryResult) -> Json {
    let groups: Vec<Json> = r
        .groups
        .iter()
        .map(|g| {
            let mut columns = vec![Json::String("time".into())];
            columns.extend(g.columns.iter().map(|c| Json::String(c.clone())));
            let rows: Vec<Json> = g
                .rows
                .iter()
                .map(|(t, vs)| {
                    let mut row = vec![json!(t)];
                    row.extend(vs.iter().map(value_json));
                    Json::Array(row)
                })
                .collect();
            json!({"tags": tags_json(&g.tags), "columns": columns, "rows": rows})
        })
        .collect();
    let mut out = json!({"groups": groups, "points_scanned": r.points_scanned});
    if !r.missing_shards.is_empty() {
        out["missing_shards"] = json!(r.missing_shards);
    }
    out
}

/// `Last` rows as JSON.
pub fn last_json(rows: &[LastRow]) -> Json {
    let rows: Vec<Json> = rows
        .iter()
        .map(|r| {
            let values: serde_json::Map<String, Json> = r
                .values
                .iter()
                .map(|(f, t, v)| (f.clone(), json!({"time": t, "value": value_json(&Some(v.clone()))})))
                .collect();
            json!({"device": r.device, "tags": tags_json(&r.tags), "values": values})
        })
        .collect();
    json!({ "rows": rows })
}

/// The JSON error body: `{"error": {"kind", "message", "details"}}`.
#[derive(Serialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorInfo,
}

/// Error details.
#[derive(Serialize)]
pub struct ErrorInfo {
    /// Stable kind.
    pub kind: String,
    /// Human message.
    pub message: String,
    /// Per line / field details.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<Json>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_parses_to_unix_nanoseconds() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_rfc3339("2016-01-01T00:00:00Z"), Ok(1_451_606_400_000_000_000));
        assert_eq!(parse_rfc3339("2016-01-01T01:00:00.5+01:00"), Ok(1_451_606_400_500_000_000));
        assert_eq!(parse_rfc3339("1969-12-31T23:59:59Z"), Ok(-1_000_000_000));
        assert!(parse_rfc3339("2016-13-01T00:00:00Z").is_err());
        assert!(parse_rfc3339("yesterday").is_err());
    }

    /// A multi-byte character where the zone's `:` belongs used to panic the handler (a slice
    /// inside the character) and reset the client's connection.
    #[test]
    fn a_zone_with_a_multi_byte_character_is_an_error_not_a_panic() {
        assert!(parse_rfc3339("2016-01-01T00:00:00+0é00").is_err());
        assert!(parse_rfc3339("2016-01-01T00:00:00+é:00").is_err());
        assert!(parse_rfc3339("2016-01-01T00:00:00.5é").is_err());
        assert!(parse_rfc3339("2016-01-01T00:00:00+1a:00").is_err());
    }

    proptest::proptest! {
        /// No text panics the time and duration parsers; text that parses is a valid time.
        #[test]
        fn time_parsing_never_panics(text in "\\PC{0,40}", tail in "\\PC{0,8}") {
            let _ = parse_duration(&text);
            let _ = parse_rfc3339(&text);
            let _ = parse_rfc3339(&format!("2016-01-01T00:00:00{tail}"));
        }
    }

    #[test]
    fn durations_parse_with_units_and_reject_garbage() {
        assert_eq!(parse_duration("10s"), Ok(10_000_000_000));
        assert_eq!(parse_duration("1h"), Ok(3_600_000_000_000));
        assert_eq!(parse_duration("250ms"), Ok(250_000_000));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("9999999999999d").is_err());
    }
}
