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
