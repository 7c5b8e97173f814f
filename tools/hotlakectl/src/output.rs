//! Output formats: aligned tables for people, JSON and CSV for scripts.

use std::io::Write;

use clap::ValueEnum;
use serde_json::Value;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns.
    Table,
    /// JSON (the server's answer, pretty-printed).
    Json,
    /// Comma-separated values with a header row.
    Csv,
}

/// A JSON value as a table cell (strings unquoted, null empty).
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Prints `rows` under `headers` in `format` (`json`: an array of objects keyed by header).
pub fn print_rows(format: Output, headers: &[&str], rows: &[Vec<String>], out: &mut impl Write) {
    match format {
        Output::Table => table(headers, rows, out),
        Output::Csv => csv(headers, rows, out),
        Output::Json => {
            let objects: Vec<Value> = rows
                .iter()
                .map(|r| {
                    Value::Object(
                        headers.iter().zip(r).map(|(h, c)| (h.to_string(), Value::String(c.clone()))).collect(),
                    )
                })
                .collect();
            json(&Value::Array(objects), out);
        }
    }
}

pub fn json(v: &Value, out: &mut impl Write) {
    let _ = writeln!(out, "{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

fn table(headers: &[&str], rows: &[Vec<String>], out: &mut impl Write) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate().take(widths.len()) {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut line = |cells: Vec<String>| {
        let parts: Vec<String> = cells.iter().enumerate().map(|(i, c)| format!("{:<w$}", c, w = widths[i])).collect();
        let _ = writeln!(out, "{}", parts.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_uppercase()).collect());
    for r in rows {
        line(r.clone());
    }
}

fn csv(headers: &[&str], rows: &[Vec<String>], out: &mut impl Write) {
    let esc = |s: &str| {
        if s.contains([',', '"', '\n']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    };
    let _ = writeln!(out, "{}", headers.iter().map(|h| esc(h)).collect::<Vec<_>>().join(","));
    for r in rows {
        let _ = writeln!(out, "{}", r.iter().map(|c| esc(c)).collect::<Vec<_>>().join(","));
    }
}

/// `ns` nanoseconds since the Unix epoch as RFC 3339 in UTC, with as many fraction digits as
/// needed (none for whole seconds): `2016-01-01T00:00:00.5Z`.
pub fn rfc3339(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let nanos = ns.rem_euclid(1_000_000_000);
    let (days, day_secs) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s) = (day_secs / 3600, day_secs % 3600 / 60, day_secs % 60);
    let mut out = format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}");
    if nanos > 0 {
        let fraction = format!("{nanos:09}");
        out.push('.');
        out.push_str(fraction.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

#[cfg(test)]
mod tests {
    use super::rfc3339;

    /// Known instants, before and after the epoch and around leap days, format as RFC 3339.
    #[test]
    fn times_format_as_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_451_606_400_000_000_000), "2016-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_456_704_000_500_000_000), "2016-02-29T00:00:00.5Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999999999Z");
        assert_eq!(rfc3339(951_782_400_000_000_123), "2000-02-29T00:00:00.000000123Z");
    }
}
