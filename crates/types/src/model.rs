//! The data model shared by ingest, the engine and queries: field values, points and the
//! canonical series key.
//!
//! A series is a measurement plus its tag set, sorted by tag key. Its canonical key is the
//! line-protocol form `measurement,k1=v1,k2=v2` with line-protocol escaping, so it is unique,
//! printable and parseable back.

use serde::{Deserialize, Serialize};

/// Nanoseconds since the Unix epoch, UTC.
pub type TimestampNs = i64;

/// The type of a field. A field keeps one type within a series; a write of another type to the
/// same (series, field) is rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
pub enum FieldType {
    /// 64-bit float (line protocol: bare number).
    F64,
    /// Signed integer (line protocol: `12i`).
    I64,
    /// Unsigned integer (line protocol: `12u`).
    U64,
    /// Boolean (line protocol: `t`, `true`, `F`, ...).
    Bool,
    /// UTF-8 string (line protocol: `"quoted"`).
    Str,
}

impl FieldType {
    /// The name used in errors and JSON output.
    pub fn name(self) -> &'static str {
        match self {
            FieldType::F64 => "float",
            FieldType::I64 => "integer",
            FieldType::U64 => "unsigned",
            FieldType::Bool => "boolean",
            FieldType::Str => "string",
        }
    }
}

/// One field value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum FieldValue {
    /// 64-bit float.
    F64(f64),
    /// Signed integer.
    I64(i64),
    /// Unsigned integer.
    U64(u64),
    /// Boolean.
    Bool(bool),
    /// UTF-8 string.
    Str(String),
}

impl FieldValue {
    /// The value's type.
    pub fn field_type(&self) -> FieldType {
        match self {
            FieldValue::F64(_) => FieldType::F64,
            FieldValue::I64(_) => FieldType::I64,
            FieldValue::U64(_) => FieldType::U64,
            FieldValue::Bool(_) => FieldType::Bool,
            FieldValue::Str(_) => FieldType::Str,
        }
    }

    /// The value as a float for numeric aggregates; `None` for strings. Booleans count as 0/1.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            FieldValue::F64(v) => Some(*v),
            FieldValue::I64(v) => Some(*v as f64),
            FieldValue::U64(v) => Some(*v as f64),
            FieldValue::Bool(v) => Some(if *v { 1.0 } else { 0.0 }),
            FieldValue::Str(_) => None,
        }
    }
}

// The canonical series key is shared with the client library, which routes by it.
pub use hotlake_proto::routing::{escape_measurement, escape_tag, series_key};

/// Longest tenant name, in bytes.
pub const TENANT_BYTES_MAX: usize = 255;

/// Checks a tenant name as a request gives it: 1 to [`TENANT_BYTES_MAX`] bytes, no control
/// characters (a NUL would split keys; others only confuse logs and paths).
pub fn check_tenant(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > TENANT_BYTES_MAX {
        return Err(format!("tenant name must be 1 to {TENANT_BYTES_MAX} bytes, got {}", name.len()));
    }
    if name.chars().any(char::is_control) {
        return Err("tenant name must not contain control characters".into());
    }
    Ok(())
}

/// Splits a canonical series key back into its measurement and tags.
pub fn parse_series_key(key: &str) -> (String, Vec<(String, String)>) {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut chars = key.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            ',' => parts.push(std::mem::take(&mut cur)),
            '=' if !parts.is_empty() => {
                // Tag key/value separator: mark the split with a NUL that cannot appear in keys
                // after validation.
                cur.push('\0');
            }
            _ => cur.push(c),
        }
    }
    parts.push(cur);
    let measurement = parts.remove(0);
    let tags = parts
        .into_iter()
        .map(|kv| match kv.split_once('\0') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (kv, String::new()),
        })
        .collect();
    (measurement, tags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_names_are_bounded_and_printable() {
        assert!(check_tenant("fleet-eu_1").is_ok());
        assert!(check_tenant(&"é".repeat(127)).is_ok());
        assert!(check_tenant("").is_err());
        assert!(check_tenant(&"x".repeat(TENANT_BYTES_MAX + 1)).is_err());
        assert!(check_tenant("a\0b").is_err());
        assert!(check_tenant("a\nb").is_err());
    }

    #[test]
    fn series_key_round_trips_through_escaping() {
        let tags = vec![("a,b".to_string(), "x=y z".to_string()), ("c".into(), "d\\e".into())];
        let key = series_key("m m,", &tags);
        let (m, parsed) = parse_series_key(&key);
        assert_eq!(m, "m m,");
        assert_eq!(parsed, tags);
    }
}
