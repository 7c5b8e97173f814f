//! InfluxDB line protocol parser for the write endpoint.
//!
//! A write body is a sequence of lines of the form
//! `measurement[,tag=value...] field=value[,field=value...] [timestamp]`. This module turns such a
//! body into [`ParsedLine`]s: it unescapes names, types field values, sorts tags by key and scales
//! timestamps by the request's [`Precision`].
//!
//! Bad lines are handled the way InfluxDB handles them: a body is not all-or-nothing. Every good
//! line is delivered to the caller (who writes it) and every bad line is reported as a
//! [`LineError`] with its physical line number, byte column and a reason, so a client can fix the
//! offending lines and resend only those. A line that fails stops at its first error.
//!
//! Accepted syntax, beyond the basic shape:
//! * Escapes: `\,` and `\ ` in measurements; `\,`, `\=` and `\ ` in tag keys, tag values and field
//!   keys; `\\` for a backslash in all of these (so the canonical series key built by
//!   [`hotlake_types::model::series_key`] parses back to the same names); `\"` and `\\` in string field
//!   values. A backslash before any other character is literal.
//! * Field values: floats (`1`, `-1.5`, `.5`, `1e9`; no leading `+`, no NaN or infinity), signed
//!   integers (`12i`), unsigned integers (`12u`), booleans (`t T true True TRUE f F false False
//!   FALSE`) and double-quoted strings, which may span lines.
//! * One or more spaces separate sections; leading spaces and tabs, trailing spaces and a trailing
//!   `\r` are tolerated. Blank lines and lines starting with `#` are skipped.
//! * A repeated field key keeps its first position and its last value, as in InfluxDB; a repeated
//!   tag key is an error because it would make the series ambiguous.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt;

use hotlake_types::model::{FieldValue, TimestampNs};

/// Timestamp precision of a write request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    /// Nanoseconds (`ns`), the default.
    Nanoseconds,
    /// Microseconds (`us`, `u` or `µ`).
    Microseconds,
    /// Milliseconds (`ms`).
    Milliseconds,
    /// Seconds (`s`).
    Seconds,
    /// Minutes (`m`).
    Minutes,
    /// Hours (`h`).
    Hours,
}

impl Precision {
    /// Parses the `precision` query parameter: "ns"/"n", "us"/"u"/"µ"/"µs", "ms", "s", "m", "h".
    /// The error message names the bad value.
    pub fn parse(s: &str) -> Result<Precision, String> {
        match s {
            "ns" | "n" => Ok(Precision::Nanoseconds),
            "us" | "u" | "µ" | "µs" => Ok(Precision::Microseconds),
            "ms" => Ok(Precision::Milliseconds),
            "s" => Ok(Precision::Seconds),
            "m" => Ok(Precision::Minutes),
            "h" => Ok(Precision::Hours),
            other => Err(format!("invalid precision {}: expected one of ns, us, ms, s, m, h", quoted(other))),
        }
    }

    /// Multiplier to nanoseconds.
    pub fn nanos(self) -> i64 {
        match self {
            Precision::Nanoseconds => 1,
            Precision::Microseconds => 1_000,
            Precision::Milliseconds => 1_000_000,
            Precision::Seconds => 1_000_000_000,
            Precision::Minutes => 60 * 1_000_000_000,
            Precision::Hours => 3_600 * 1_000_000_000,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Precision::Nanoseconds => "ns",
            Precision::Microseconds => "us",
            Precision::Milliseconds => "ms",
            Precision::Seconds => "s",
            Precision::Minutes => "m",
            Precision::Hours => "h",
        }
    }
}

/// Limits applied while parsing; each exceeded limit is a per-line error naming the limit's config
/// key.
#[derive(Clone, Debug)]
pub struct LineLimits {
    /// Most fields one line may carry (duplicates count).
    pub fields_per_line_max: usize,
    /// Most tags one line may carry.
    pub tags_per_line_max: usize,
    /// Longest measurement, tag key or field key, in bytes after unescaping.
    pub key_bytes_max: usize,
    /// Longest tag value, in bytes after unescaping.
    pub tag_value_bytes_max: usize,
    /// Longest string field value, in bytes after unescaping.
    pub string_value_bytes_max: usize,
    /// Latest timestamp a line may carry, in nanoseconds (a point far in the future would never
    /// expire and would stay every device's latest value).
    pub timestamp_ns_max: TimestampNs,
}

impl Default for LineLimits {
    /// 1000 fields, 256 tags, 256 key bytes, 1024 tag value bytes, 64 KiB strings, any time.
    fn default() -> Self {
        LineLimits {
            fields_per_line_max: 1000,
            tags_per_line_max: 256,
            key_bytes_max: 256,
            tag_value_bytes_max: 1024,
            string_value_bytes_max: 64 * 1024,
            timestamp_ns_max: TimestampNs::MAX,
        }
    }
}

/// One parsed line. Tags are sorted by key (byte order) before return. Each `Cow` borrows from the
/// input when no unescaping was needed.
#[derive(Clone, Debug, PartialEq)]
pub struct ParsedLine<'a> {
    /// The measurement name, unescaped.
    pub measurement: Cow<'a, str>,
    /// Tag keys and values, unescaped, sorted by key, keys unique.
    pub tags: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    /// Field keys (unescaped, unique) and values, in the order first written.
    pub fields: Vec<(Cow<'a, str>, FieldValue)>,
    /// Timestamp in nanoseconds, already scaled by precision; None when the line had none.
    pub timestamp_ns: Option<TimestampNs>,
}

/// Why one line was rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineError {
    /// 1-based physical line number in the body of the offending byte.
    pub line: usize,
    /// 1-based byte column of the offending byte within its physical line.
    pub column: usize,
    /// What is wrong; names the field or tag when relevant, e.g.
    /// `field "temp": invalid integer "12x"`.
    pub reason: String,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}: {}", self.line, self.column, self.reason)
    }
}

impl std::error::Error for LineError {}

/// Parses a whole body, calling `on_line` with the 1-based line number where each good line
/// starts, and collecting bad ones (InfluxDB semantics: good lines are written, bad ones reported).
///
/// A newline inside a quoted string field value does not end the line, but line numbers still
/// count every physical newline so they match what an editor shows.
pub fn parse_body<'a>(
    body: &'a str,
    precision: Precision,
    limits: &LineLimits,
    mut on_line: impl FnMut(usize, ParsedLine<'a>),
) -> Vec<LineError> {
    let b = body.as_bytes();
    let mut errors = Vec::new();
    let mut pos = 0;
    let mut line_no = 1;
    while pos < b.len() {
        let line_start = pos;
        let first = skip_blanks(b, pos);
        if let Some(eol) = line_end_at(b, first) {
            // Blank line.
            pos = eol + 1;
            line_no += 1;
            continue;
        }
        if b[first] == b'#' {
            let eol = find_byte(b, first, b'\n');
            pos = eol + 1;
            line_no += 1;
            continue;
        }
        let mut parser = Parser::new(body, precision, limits);
        match parser.parse(first) {
            Ok((line, eol)) => {
                debug_assert_eq!(eol, find_line_end(b, first), "splitter disagrees with parser");
                on_line(line_no, line);
                line_no += parser.newlines_in_strings + 1;
                pos = eol + 1;
            }
            Err(fail) => {
                errors.push(fail.into_error(body, line_start, line_no));
                // Resynchronise with a scan that only tracks line structure, so that one bad line
                // cannot swallow the next good one (unless it opened a string it never closed).
                let eol = find_line_end(b, first);
                line_no += count_byte(&b[first..eol], b'\n') + 1;
                pos = eol + 1;
            }
        }
    }
    errors
}

/// Parses one line (without its terminating newline). `line_no` is only used in the error, as the
/// number of the line's first physical line. Blank and comment lines are errors here because they
/// hold no point; [`parse_body`] skips them instead.
pub fn parse_line<'a>(
    line: &'a str,
    line_no: usize,
    precision: Precision,
    limits: &LineLimits,
) -> Result<ParsedLine<'a>, LineError> {
    let b = line.as_bytes();
    let first = skip_blanks(b, 0);
    let result = if line_end_at(b, first).is_some() {
        Err(Fail::new(first, "empty line has no point".to_string()))
    } else if b[first] == b'#' {
        Err(Fail::new(first, "comment line has no point".to_string()))
    } else {
        let mut parser = Parser::new(line, precision, limits);
        parser.parse(first).and_then(|(parsed, eol)| {
            if eol == b.len() {
                Ok(parsed)
            } else {
                Err(Fail::new(eol, "newline outside a quoted string".to_string()))
            }
        })
    };
    result.map_err(|fail| fail.into_error(line, 0, line_no))
}

/// An error at a byte offset into the parsed text, before it is turned into line and column.
#[derive(Debug)]
struct Fail {
    pos: usize,
    reason: String,
}

impl Fail {
    fn new(pos: usize, reason: String) -> Fail {
        Fail { pos, reason }
    }

    /// Locates the failure on its physical line; `line_start` is where physical line `line_no`
    /// starts in `text`.
    fn into_error(self, text: &str, line_start: usize, line_no: usize) -> LineError {
        let before = &text.as_bytes()[line_start..self.pos.min(text.len())];
        let newlines = count_byte(before, b'\n');
        let physical_start = match before.iter().rposition(|&c| c == b'\n') {
            Some(i) => line_start + i + 1,
            None => line_start,
        };
        LineError { line: line_no + newlines, column: self.pos - physical_start + 1, reason: self.reason }
    }
}

type ParseResult<T> = Result<T, Fail>;

/// Builds a failure. Kept out of line so message formatting does not bloat the hot parser.
#[cold]
#[inline(never)]
fn fail(pos: usize, reason: impl FnOnce() -> String) -> Fail {
    Fail::new(pos, reason())
}

/// Refuses a NUL byte in a measurement, tag or field key, or tag value: series keys are split
/// on it internally, so one would be read back as another key.
fn no_nul(raw: &str, pos: usize, what: &str) -> ParseResult<()> {
    match raw.bytes().position(|c| c == 0) {
        Some(i) => Err(fail(pos + i, || format!("{what} contains a NUL byte"))),
        None => Ok(()),
    }
}

/// Whether `c` ends a name or needs a closer look: `,` and space end every name, `=` also ends
/// keys and tag values (`EQUALS`), `\n` ends the line outside strings, `\` may start an escape.
#[inline(always)]
fn is_name_special<const EQUALS: bool>(c: u8) -> bool {
    matches!(c, b',' | b' ' | b'\n' | b'\\') || (EQUALS && c == b'=')
}

/// Whether `\c` is an escape (rather than a literal backslash) in a measurement (`equals` false)
/// or in a tag key, tag value or field key (`equals` true).
#[inline]
fn is_name_escape(c: u8, equals: bool) -> bool {
    matches!(c, b',' | b' ' | b'\\') || (equals && c == b'=')
}

/// Offset of the first byte at or after `pos` that [`is_name_special`], or the length.
///
/// Names are most of a line's bytes, so this tests eight bytes per step: a byte equal to `c` is
/// a zero byte of `word ^ splat(c)`, and the classic zero-byte test flags it. That test can also
/// flag bytes above a true zero (borrows only travel upwards), so the lowest flag is exact.
#[inline(always)]
fn find_name_special<const EQUALS: bool>(b: &[u8], mut pos: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    #[inline(always)]
    fn zero_bytes(v: u64) -> u64 {
        v.wrapping_sub(ONES) & !v & HIGHS
    }
    while let Some(chunk) = b.get(pos..pos + 8) {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(chunk);
        let word = u64::from_le_bytes(bytes);
        let mut hits = zero_bytes(word ^ (ONES * u64::from(b',')))
            | zero_bytes(word ^ (ONES * u64::from(b' ')))
            | zero_bytes(word ^ (ONES * u64::from(b'\n')))
            | zero_bytes(word ^ (ONES * u64::from(b'\\')));
        if EQUALS {
            hits |= zero_bytes(word ^ (ONES * u64::from(b'=')));
        }
        if hits != 0 {
            return pos + (hits.trailing_zeros() / 8) as usize;
        }
        pos += 8;
    }
    while pos < b.len() && !is_name_special::<EQUALS>(b[pos]) {
        pos += 1;
    }
    pos
}

/// Turns a scanned name into its value, borrowing when it held no escapes.
#[inline(always)]
fn name_cow(raw: &str, escaped: bool, equals: bool) -> Cow<'_, str> {
    if escaped {
        Cow::Owned(unescape_name(raw, equals))
    } else {
        Cow::Borrowed(raw)
    }
}

struct Parser<'a, 'l> {
    text: &'a str,
    b: &'a [u8],
    precision: Precision,
    limits: &'l LineLimits,
    /// Newlines crossed inside quoted strings, so the caller can keep physical line numbers.
    newlines_in_strings: usize,
}

impl<'a, 'l> Parser<'a, 'l> {
    fn new(text: &'a str, precision: Precision, limits: &'l LineLimits) -> Self {
        Parser { text, b: text.as_bytes(), precision, limits, newlines_in_strings: 0 }
    }

    /// Parses the line starting at `start` (its first non-blank byte). Returns the line and the
    /// offset of its terminating `\n` (or the text's length).
    fn parse(&mut self, start: usize) -> ParseResult<(ParsedLine<'a>, usize)> {
        let b = self.b;
        let limits = self.limits;

        let (raw, escaped, mut pos) = self.scan_name::<false>(start);
        if raw.is_empty() {
            return Err(fail(start, || "missing measurement".to_string()));
        }
        no_nul(raw, start, "measurement")?;
        let measurement = name_cow(raw, escaped, false);
        if measurement.len() > limits.key_bytes_max {
            return Err(fail(start, || {
                format!("measurement is {} bytes, over key_bytes_max = {}", measurement.len(), limits.key_bytes_max)
            }));
        }

        let mut tags = Vec::new();
        if b.get(pos) == Some(&b',') {
            // One allocation covers typical tag sets instead of growing 4 -> 8.
            tags.reserve(8);
        }
        let first_tag_pos = pos + 1;
        let mut tags_unsorted = false;
        while b.get(pos) == Some(&b',') {
            pos = self.parse_tag(pos + 1, &mut tags, &mut tags_unsorted)?;
        }
        if tags_unsorted {
            tags.sort_unstable_by(|x, y| key_cmp(&x.0, &y.0));
            if let Some(pair) = tags.windows(2).find(|pair| pair[0].0 == pair[1].0) {
                let key = &pair[1].0;
                let key_pos = self.second_tag_key_pos(first_tag_pos, key);
                return Err(fail(key_pos, || format!("duplicate tag key {}", quoted(key))));
            }
        }

        if b.get(pos) != Some(&b' ') {
            return Err(fail(pos, || "missing fields".to_string()));
        }
        pos = skip_spaces(b, pos);
        if line_end_at(b, pos).is_some() {
            return Err(fail(pos, || "missing fields".to_string()));
        }

        let mut fields = Vec::with_capacity(8);
        let fields_end = loop {
            let after_value = self.parse_field(pos, &mut fields)?;
            match b.get(after_value) {
                Some(b',') => pos = after_value + 1,
                Some(b' ') => break after_value,
                Some(_) if line_end_at(b, after_value).is_none() => {
                    let key = fields.last().map_or("", |(k, _)| k.as_ref());
                    return Err(fail(after_value, || {
                        format!("field {}: unexpected character after value", quoted(key))
                    }));
                }
                _ => break after_value,
            }
        };
        let (timestamp_ns, eol) = self.parse_timestamp(fields_end)?;
        dedupe_fields(&mut fields);

        Ok((ParsedLine { measurement, tags, fields, timestamp_ns }, eol))
    }

    /// Scans a measurement (`EQUALS` false) or a tag key, tag value or field key (`EQUALS` true)
    /// starting at `start`. Returns the raw text, whether it holds escapes, and the offset of the
    /// byte that ended it.
    #[inline(always)]
    fn scan_name<const EQUALS: bool>(&self, start: usize) -> (&'a str, bool, usize) {
        let b = self.b;
        let mut pos = start;
        let mut escaped = false;
        loop {
            pos = find_name_special::<EQUALS>(b, pos);
            if b.get(pos) != Some(&b'\\') {
                break;
            }
            if pos + 1 < b.len() && is_name_escape(b[pos + 1], EQUALS) {
                escaped = true;
                pos += 2;
            } else {
                pos += 1;
            }
        }
        (&self.text[start..pos], escaped, pos)
    }

    /// Parses one `key=value` tag starting at `key_pos` and adds it to `tags`. Returns the
    /// offset just past the value.
    ///
    /// Tags are kept sorted as they arrive while that is cheap. Once a line has
    /// `INSERTION_TAGS_MAX` tags, an out-of-order one sets `unsorted` and from then on tags are
    /// appended; the caller then sorts and checks for duplicates once.
    fn parse_tag(
        &self,
        key_pos: usize,
        tags: &mut Vec<(Cow<'a, str>, Cow<'a, str>)>,
        unsorted: &mut bool,
    ) -> ParseResult<usize> {
        // Inserting shifts the tail, so beyond this many tags a final sort is cheaper.
        const INSERTION_TAGS_MAX: usize = 16;
        let b = self.b;
        let limits = self.limits;
        if tags.len() == limits.tags_per_line_max {
            return Err(fail(key_pos, || {
                format!("more than {} tags, over tags_per_line_max", limits.tags_per_line_max)
            }));
        }
        let (key_raw, key_escaped, after_key) = self.scan_name::<true>(key_pos);
        if key_raw.is_empty() {
            return Err(fail(key_pos, || "empty tag key".to_string()));
        }
        no_nul(key_raw, key_pos, "tag key")?;
        let key = name_cow(key_raw, key_escaped, true);
        if b.get(after_key) != Some(&b'=') {
            return Err(fail(key_pos, || format!("tag {}: missing '=' and tag value", quoted(&key))));
        }
        if key.len() > limits.key_bytes_max {
            return Err(fail(key_pos, || {
                format!(
                    "tag key {} is {} bytes, over key_bytes_max = {}",
                    quoted(&key),
                    key.len(),
                    limits.key_bytes_max
                )
            }));
        }
        let value_pos = after_key + 1;
        let (value_raw, value_escaped, after_value) = self.scan_name::<true>(value_pos);
        if b.get(after_value) == Some(&b'=') {
            return Err(fail(after_value, || format!("tag {}: unescaped '=' in tag value", quoted(&key))));
        }
        if value_raw.is_empty() {
            return Err(fail(value_pos, || format!("tag {}: empty tag value", quoted(&key))));
        }
        no_nul(value_raw, value_pos, "tag value")?;
        // Built as a pair up front: assembling it right before the insert makes the copy into
        // the vector stall on store forwarding.
        let entry = (key, name_cow(value_raw, value_escaped, true));
        let (key, value) = (&entry.0, &entry.1);
        if value.len() > limits.tag_value_bytes_max {
            return Err(fail(value_pos, || {
                format!(
                    "tag {}: value is {} bytes, over tag_value_bytes_max = {}",
                    quoted(key),
                    value.len(),
                    limits.tag_value_bytes_max
                )
            }));
        }
        if *unsorted {
            tags.push(entry);
            return Ok(after_value);
        }
        // Clients usually send tags sorted, so one comparison with the last tag usually decides;
        // otherwise insert from the end, where an equal neighbour is a duplicate.
        let mut at = tags.len();
        while at > 0 {
            match key_cmp(&tags[at - 1].0, key) {
                Ordering::Less => break,
                Ordering::Equal => return Err(fail(key_pos, || format!("duplicate tag key {}", quoted(key)))),
                Ordering::Greater if tags.len() >= INSERTION_TAGS_MAX => {
                    *unsorted = true;
                    at = tags.len();
                    break;
                }
                Ordering::Greater => at -= 1,
            }
        }
        tags.insert(at, entry);
        Ok(after_value)
    }

    /// Finds where the second occurrence of tag key `key` starts, for the error on a duplicate
    /// found after sorting. The tags from `first_tag_pos` on have already parsed cleanly.
    #[cold]
    fn second_tag_key_pos(&self, first_tag_pos: usize, key: &str) -> usize {
        let mut pos = first_tag_pos;
        let mut seen = false;
        loop {
            let (raw, escaped, after_key) = self.scan_name::<true>(pos);
            if name_cow(raw, escaped, true) == key {
                if seen {
                    return pos;
                }
                seen = true;
            }
            let (_, _, after_value) = self.scan_name::<true>(after_key + 1);
            if self.b.get(after_value) != Some(&b',') {
                return first_tag_pos;
            }
            pos = after_value + 1;
        }
    }

    /// Parses one `key=value` field starting at `key_pos` and appends it to `fields`. Returns the
    /// offset just past the value.
    fn parse_field(&mut self, key_pos: usize, fields: &mut Vec<(Cow<'a, str>, FieldValue)>) -> ParseResult<usize> {
        let b = self.b;
        let limits = self.limits;
        if fields.len() == limits.fields_per_line_max {
            return Err(fail(key_pos, || {
                format!("more than {} fields, over fields_per_line_max", limits.fields_per_line_max)
            }));
        }
        let (key_raw, key_escaped, after_key) = self.scan_name::<true>(key_pos);
        if key_raw.is_empty() {
            return Err(fail(key_pos, || "empty field key".to_string()));
        }
        no_nul(key_raw, key_pos, "field key")?;
        let key = name_cow(key_raw, key_escaped, true);
        if b.get(after_key) != Some(&b'=') {
            return Err(fail(key_pos, || format!("field {}: missing '=' and field value", quoted(&key))));
        }
        if key.len() > limits.key_bytes_max {
            return Err(fail(key_pos, || {
                format!(
                    "field key {} is {} bytes, over key_bytes_max = {}",
                    quoted(&key),
                    key.len(),
                    limits.key_bytes_max
                )
            }));
        }
        let value_pos = after_key + 1;
        let (value, after_value) = if b.get(value_pos) == Some(&b'"') {
            self.parse_string_value(value_pos, &key)?
        } else {
            self.parse_plain_value(value_pos, &key)?
        };
        fields.push((key, value));
        Ok(after_value)
    }

    /// Parses an unquoted field value (number or boolean) starting at `start`; returns it and the
    /// offset just past it.
    #[inline(always)]
    fn parse_plain_value(&self, start: usize, key: &str) -> ParseResult<(FieldValue, usize)> {
        let b = self.b;
        let mut end = start;
        while end < b.len() && !matches!(b[end], b',' | b' ' | b'\n' | b'\r') {
            end += 1;
        }
        let raw = &self.text[start..end];
        let bytes = raw.as_bytes();
        let Some((&first, _)) = bytes.split_first() else {
            return Err(fail(start, || format!("field {}: missing field value", quoted(key))));
        };
        let value = if first.is_ascii_digit() || matches!(first, b'-' | b'+' | b'.') {
            match bytes.split_last() {
                Some((b'i', digits)) => match parse_decimal(digits, true) {
                    Decimal::Value(negative, magnitude) => match signed_from(negative, magnitude) {
                        Some(v) => FieldValue::I64(v),
                        None => return Err(out_of_range(start, key, raw, "integer", "i64")),
                    },
                    Decimal::Overflow => return Err(out_of_range(start, key, raw, "integer", "i64")),
                    Decimal::Invalid => return Err(invalid(start, key, raw, "integer", "")),
                },
                Some((b'u', digits)) => match parse_decimal(digits, false) {
                    Decimal::Value(_, magnitude) => FieldValue::U64(magnitude),
                    Decimal::Overflow => return Err(out_of_range(start, key, raw, "unsigned integer", "u64")),
                    Decimal::Invalid => return Err(invalid(start, key, raw, "unsigned integer", "")),
                },
                _ => match parse_float(raw) {
                    Ok(v) => FieldValue::F64(v),
                    Err(why) => return Err(invalid(start, key, raw, "float", why)),
                },
            }
        } else {
            match raw {
                "t" | "T" | "true" | "True" | "TRUE" => FieldValue::Bool(true),
                "f" | "F" | "false" | "False" | "FALSE" => FieldValue::Bool(false),
                _ => return Err(invalid(start, key, raw, "boolean", " (strings must be double-quoted)")),
            }
        };
        Ok((value, end))
    }

    /// Parses a double-quoted string value whose opening quote is at `open`.
    fn parse_string_value(&mut self, open: usize, key: &str) -> ParseResult<(FieldValue, usize)> {
        let b = self.b;
        let start = open + 1;
        let mut pos = start;
        let mut escaped = false;
        let mut newlines = 0;
        loop {
            match b.get(pos) {
                None => return Err(fail(open, || format!("field {}: unterminated string value", quoted(key)))),
                Some(b'"') => break,
                Some(b'\\') if matches!(b.get(pos + 1), Some(b'"' | b'\\')) => {
                    escaped = true;
                    pos += 2;
                }
                Some(b'\n') => {
                    newlines += 1;
                    pos += 1;
                }
                Some(_) => pos += 1,
            }
        }
        self.newlines_in_strings += newlines;
        let raw = &self.text[start..pos];
        let value = if escaped { unescape_string(raw) } else { raw.to_string() };
        let limits = self.limits;
        if value.len() > limits.string_value_bytes_max {
            return Err(fail(open, || {
                format!(
                    "field {}: string value is {} bytes, over string_value_bytes_max = {}",
                    quoted(key),
                    value.len(),
                    limits.string_value_bytes_max
                )
            }));
        }
        let after = pos + 1;
        if line_end_at(b, after).is_none() && !matches!(b[after], b',' | b' ') {
            return Err(fail(after, || format!("field {}: unexpected character after string value", quoted(key))));
        }
        Ok((FieldValue::Str(value), after))
    }

    /// Parses the optional timestamp section at `pos` (either the end of the line or the space
    /// after the last field). Returns the scaled timestamp and the offset of the line's end.
    fn parse_timestamp(&self, pos: usize) -> ParseResult<(Option<TimestampNs>, usize)> {
        let b = self.b;
        let start = skip_spaces(b, pos);
        if let Some(eol) = line_end_at(b, start) {
            return Ok((None, eol));
        }
        let mut end = start;
        while end < b.len() && !matches!(b[end], b' ' | b'\n' | b'\r') {
            end += 1;
        }
        let raw = &self.text[start..end];
        let timestamp = match parse_decimal(raw.as_bytes(), true) {
            Decimal::Value(negative, magnitude) => signed_from(negative, magnitude),
            Decimal::Overflow => None,
            Decimal::Invalid => return Err(fail(start, || format!("invalid timestamp {}", quoted(raw)))),
        };
        let Some(timestamp) = timestamp else {
            return Err(fail(start, || format!("timestamp {} out of range for i64", quoted(raw))));
        };
        let precision = self.precision;
        let Some(timestamp_ns) = timestamp.checked_mul(precision.nanos()) else {
            return Err(fail(start, || {
                format!("timestamp {} out of range in nanoseconds at precision {}", quoted(raw), precision.name())
            }));
        };
        if timestamp_ns > self.limits.timestamp_ns_max {
            return Err(fail(start, || {
                format!("timestamp {} is further in the future than limits.future_s_max allows", quoted(raw))
            }));
        }
        let rest = skip_spaces(b, end);
        match line_end_at(b, rest) {
            Some(eol) => Ok((Some(timestamp_ns), eol)),
            None => Err(fail(rest, || "unexpected text after timestamp".to_string())),
        }
    }
}

#[cold]
#[inline(never)]
fn invalid(pos: usize, key: &str, raw: &str, kind: &str, why: &str) -> Fail {
    Fail::new(pos, format!("field {}: invalid {kind} {}{why}", quoted(key), quoted(raw)))
}

#[cold]
#[inline(never)]
fn out_of_range(pos: usize, key: &str, raw: &str, kind: &str, range: &str) -> Fail {
    Fail::new(pos, format!("field {}: {kind} {} out of range for {range}", quoted(key), quoted(raw)))
}

/// Byte-order comparison of two keys. Keys usually differ in their first byte, and deciding there
/// saves a `memcmp` call in the tag sort that runs for every line with unsorted tags.
#[inline]
fn key_cmp(a: &str, b: &str) -> Ordering {
    match (a.as_bytes().first(), b.as_bytes().first()) {
        (Some(x), Some(y)) if x != y => x.cmp(y),
        _ => a.cmp(b),
    }
}

/// Keeps the first position and the last value of each repeated field key, as InfluxDB does.
fn dedupe_fields(fields: &mut Vec<(Cow<'_, str>, FieldValue)>) {
    // Pairwise comparison beats sorting for the few fields a typical line has.
    const PAIRWISE_MAX: usize = 32;
    let n = fields.len();
    if n <= PAIRWISE_MAX {
        let has_duplicate = (1..n).any(|i| fields[..i].iter().any(|(k, _)| *k == fields[i].0));
        if !has_duplicate {
            return;
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_unstable_by(|&x, &y| key_cmp(&fields[x].0, &fields[y].0).then(x.cmp(&y)));
    let mut drop = vec![false; n];
    let mut any_dropped = false;
    let mut run = 0;
    while run < n {
        let mut run_end = run + 1;
        while run_end < n && fields[order[run_end]].0 == fields[order[run]].0 {
            run_end += 1;
        }
        if run_end - run > 1 {
            let first = order[run];
            let last = order[run_end - 1];
            let value = std::mem::replace(&mut fields[last].1, FieldValue::Bool(false));
            fields[first].1 = value;
            for &index in &order[run + 1..run_end] {
                drop[index] = true;
            }
            any_dropped = true;
        }
        run = run_end;
    }
    if any_dropped {
        let mut index = 0;
        fields.retain(|_| {
            let keep = !drop[index];
            index += 1;
            keep
        });
    }
}

fn unescape_name(raw: &str, equals: bool) -> String {
    let b = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut copied = 0;
    let mut pos = 0;
    while pos < b.len() {
        if b[pos] == b'\\' && pos + 1 < b.len() && is_name_escape(b[pos + 1], equals) {
            // Both bytes are ASCII, so these offsets are char boundaries.
            out.push_str(&raw[copied..pos]);
            copied = pos + 1;
            pos += 2;
        } else {
            pos += 1;
        }
    }
    out.push_str(&raw[copied..]);
    out
}

fn unescape_string(raw: &str) -> String {
    let b = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut copied = 0;
    let mut pos = 0;
    while pos < b.len() {
        if b[pos] == b'\\' && pos + 1 < b.len() && matches!(b[pos + 1], b'"' | b'\\') {
            out.push_str(&raw[copied..pos]);
            copied = pos + 1;
            pos += 2;
        } else {
            pos += 1;
        }
    }
    out.push_str(&raw[copied..]);
    out
}

enum Decimal {
    /// Sign (true when negative) and magnitude.
    Value(bool, u64),
    Overflow,
    Invalid,
}

/// Parses `-?[0-9]+` (the minus only when `signed`) into a sign and magnitude.
#[inline]
fn parse_decimal(digits: &[u8], signed: bool) -> Decimal {
    let (negative, digits) = match digits.split_first() {
        Some((b'-', rest)) if signed => (true, rest),
        _ => (false, digits),
    };
    if digits.is_empty() {
        return Decimal::Invalid;
    }
    let mut magnitude: u64 = 0;
    // Nineteen digits cannot overflow a u64, so the common case needs no overflow checks.
    if digits.len() <= 19 {
        for &c in digits {
            let digit = c.wrapping_sub(b'0');
            if digit > 9 {
                return Decimal::Invalid;
            }
            magnitude = magnitude * 10 + u64::from(digit);
        }
        return Decimal::Value(negative, magnitude);
    }
    if !digits.iter().all(u8::is_ascii_digit) {
        return Decimal::Invalid;
    }
    for &c in digits {
        match magnitude.checked_mul(10).and_then(|m| m.checked_add(u64::from(c - b'0'))) {
            Some(m) => magnitude = m,
            None => return Decimal::Overflow,
        }
    }
    Decimal::Value(negative, magnitude)
}

fn signed_from(negative: bool, magnitude: u64) -> Option<i64> {
    if negative {
        // i64::MIN's magnitude is one more than i64::MAX.
        0i64.checked_sub_unsigned(magnitude)
    } else {
        i64::try_from(magnitude).ok()
    }
}

/// Exact powers of ten for the float fast path: every one up to 1e22 is representable in f64.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20,
    1e21, 1e22,
];

/// Parses a float after checking it has line-protocol syntax, which is narrower than Rust's
/// (no `inf`, `NaN` or leading `+`). The error is a suffix for the message.
#[inline]
fn parse_float(raw: &str) -> Result<f64, &'static str> {
    let b = raw.as_bytes();
    let negative = b.first() == Some(&b'-');
    let mut pos = usize::from(negative);
    // Wrapping is harmless: the mantissa is only used when it has at most 19 digits.
    let mut mantissa: u64 = 0;
    let int_start = pos;
    while pos < b.len() && b[pos].is_ascii_digit() {
        mantissa = mantissa.wrapping_mul(10).wrapping_add(u64::from(b[pos] - b'0'));
        pos += 1;
    }
    let int_digits = pos - int_start;
    let mut frac_digits = 0;
    if pos < b.len() && b[pos] == b'.' {
        pos += 1;
        let frac_start = pos;
        while pos < b.len() && b[pos].is_ascii_digit() {
            mantissa = mantissa.wrapping_mul(10).wrapping_add(u64::from(b[pos] - b'0'));
            pos += 1;
        }
        frac_digits = pos - frac_start;
    }
    if int_digits + frac_digits == 0 {
        return Err("");
    }
    let mut has_exponent = false;
    if pos < b.len() && matches!(b[pos], b'e' | b'E') {
        has_exponent = true;
        pos += 1;
        if pos < b.len() && matches!(b[pos], b'+' | b'-') {
            pos += 1;
        }
        let exp_start = pos;
        while pos < b.len() && b[pos].is_ascii_digit() {
            pos += 1;
        }
        if pos == exp_start {
            return Err("");
        }
    }
    if pos != b.len() {
        return Err("");
    }
    // Clinger's fast path: an exactly representable mantissa divided by an exactly representable
    // power of ten is correctly rounded by one IEEE division, so it matches `str::parse` while
    // skipping its second scan. Sensor values almost always qualify.
    if !has_exponent && int_digits + frac_digits <= 19 && mantissa <= 1 << 53 {
        if let Some(scale) = POW10.get(frac_digits) {
            let magnitude = mantissa as f64 / scale;
            return Ok(if negative { -magnitude } else { magnitude });
        }
    }
    match raw.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        Ok(_) => Err(": out of range for f64"),
        Err(_) => Err(""),
    }
}

/// Where the line ends if `pos` is at its end: the offset of the `\n`, or the text length. A `\r`
/// directly before either counts as part of the line ending.
#[inline]
fn line_end_at(b: &[u8], pos: usize) -> Option<usize> {
    match b.get(pos) {
        None => Some(b.len()),
        Some(b'\n') => Some(pos),
        Some(b'\r') if pos + 1 == b.len() || b[pos + 1] == b'\n' => Some(pos + 1),
        _ => None,
    }
}

#[inline]
fn skip_spaces(b: &[u8], mut pos: usize) -> usize {
    while pos < b.len() && b[pos] == b' ' {
        pos += 1;
    }
    pos
}

/// Skips the leading whitespace InfluxDB tolerates at the start of a line.
fn skip_blanks(b: &[u8], mut pos: usize) -> usize {
    while pos < b.len() && matches!(b[pos], b' ' | b'\t') {
        pos += 1;
    }
    pos
}

fn find_byte(b: &[u8], from: usize, needle: u8) -> usize {
    b[from..].iter().position(|&c| c == needle).map_or(b.len(), |i| from + i)
}

fn count_byte(b: &[u8], needle: u8) -> usize {
    b.iter().filter(|&&c| c == needle).count()
}

/// Finds the end (offset of the `\n`, or the length) of the line starting at `start`, following
/// only the structure that decides where a line ends: escapes in names and quoted field values.
/// Used to skip past a bad line whose parse stopped part-way.
fn find_line_end(b: &[u8], start: usize) -> usize {
    #[derive(Clone, Copy, PartialEq)]
    enum State {
        /// Measurement and tags: escapes matter, the first unescaped space starts the fields.
        Series,
        /// Spaces before the first field key.
        FieldsStart,
        FieldKey,
        ValueStart,
        Value,
        Str,
        Timestamp,
    }
    let mut state = State::Series;
    let mut pos = start;
    while pos < b.len() {
        let c = b[pos];
        if c == b'\n' && state != State::Str {
            return pos;
        }
        match state {
            State::FieldsStart if c == b' ' => {}
            State::FieldsStart => {
                // Look at this byte again as the start of the key.
                state = State::FieldKey;
                continue;
            }
            State::Series | State::FieldKey => match c {
                b'\\' if pos + 1 < b.len() && is_name_escape(b[pos + 1], true) => pos += 1,
                b' ' if state == State::Series => state = State::FieldsStart,
                b' ' => state = State::Timestamp,
                b'=' if state == State::FieldKey => state = State::ValueStart,
                _ => {}
            },
            State::ValueStart if c == b'"' => state = State::Str,
            State::ValueStart | State::Value => match c {
                b',' => state = State::FieldKey,
                b' ' => state = State::Timestamp,
                _ => state = State::Value,
            },
            State::Str => match c {
                b'\\' if pos + 1 < b.len() && matches!(b[pos + 1], b'"' | b'\\') => pos += 1,
                b'"' => state = State::Value,
                _ => {}
            },
            State::Timestamp => {}
        }
        pos += 1;
    }
    b.len()
}

/// Quotes a name or value for an error message, shortened so a huge bad input cannot bloat the
/// error report.
fn quoted(s: &str) -> String {
    const SHOWN_BYTES_MAX: usize = 64;
    if s.len() <= SHOWN_BYTES_MAX {
        return format!("{s:?}");
    }
    let mut cut = SHOWN_BYTES_MAX;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{:?}...", &s[..cut])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> LineLimits {
        LineLimits::default()
    }

    fn ok(line: &str) -> ParsedLine<'_> {
        match parse_line(line, 1, Precision::Nanoseconds, &limits()) {
            Ok(parsed) => parsed,
            Err(e) => panic!("{line:?} should parse, got {e}"),
        }
    }

    fn ok_at(line: &str, precision: Precision) -> ParsedLine<'_> {
        match parse_line(line, 1, precision, &limits()) {
            Ok(parsed) => parsed,
            Err(e) => panic!("{line:?} should parse, got {e}"),
        }
    }

    /// Asserts `body` yields exactly one error, on `line`, whose reason contains `reason`.
    #[track_caller]
    fn bad_body(body: &str, line: usize, reason: &str) -> LineError {
        let mut good = 0;
        let errors = parse_body(body, Precision::Nanoseconds, &limits(), |_, _| good += 1);
        assert_eq!(errors.len(), 1, "{body:?}: {errors:?}");
        let e = errors[0].clone();
        assert_eq!(e.line, line, "{body:?}: {e}");
        assert!(e.reason.contains(reason), "{body:?}: {e} lacks {reason:?}");
        assert_eq!(good, 0, "{body:?}");
        e
    }

    fn bad(line: &str, reason: &str) -> LineError {
        bad_body(line, 1, reason)
    }

    #[test]
    fn a_timestamp_past_the_bound_is_refused() {
        let limits = LineLimits { timestamp_ns_max: 1_000, ..limits() };
        assert!(parse_line("m v=1 1000", 1, Precision::Nanoseconds, &limits).is_ok());
        let e = parse_line("m v=1 1001", 1, Precision::Nanoseconds, &limits).unwrap_err();
        assert!(e.reason.contains("limits.future_s_max"), "{e}");
        assert!(parse_line("m v=1 2", 1, Precision::Microseconds, &limits).is_err(), "compared after scaling");
    }

    /// A NUL byte in any name would be indexed under another key; in a string value it is data.
    #[test]
    fn a_nul_byte_in_a_name_is_refused_but_not_in_a_string_value() {
        bad("m\0x v=1 1", "measurement contains a NUL byte");
        bad("m,ta\0g=x v=1 1", "tag key contains a NUL byte");
        bad("m,tag=x\0y v=1 1", "tag value contains a NUL byte");
        bad("m,tag=x v\0w=1 1", "field key contains a NUL byte");
        assert_eq!(field(&ok("m s=\"a\0b\" 1"), "s"), &FieldValue::Str("a\0b".into()));
    }

    fn tags<'a>(p: &'a ParsedLine<'_>) -> Vec<(&'a str, &'a str)> {
        p.tags.iter().map(|(k, v)| (k.as_ref(), v.as_ref())).collect()
    }

    fn field<'a>(p: &'a ParsedLine<'_>, key: &str) -> &'a FieldValue {
        match p.fields.iter().find(|(k, _)| k == key) {
            Some((_, v)) => v,
            None => panic!("no field {key:?} in {p:?}"),
        }
    }

    /// The basic shape parses into measurement, tags, fields and timestamp.
    #[test]
    fn full_line() {
        let p = ok("cpu,host=a,region=eu usage=0.5,count=3i 1700000000000000000");
        assert_eq!(p.measurement, "cpu");
        assert_eq!(tags(&p), [("host", "a"), ("region", "eu")]);
        assert_eq!(p.fields.len(), 2);
        assert_eq!(field(&p, "usage"), &FieldValue::F64(0.5));
        assert_eq!(field(&p, "count"), &FieldValue::I64(3));
        assert_eq!(p.timestamp_ns, Some(1_700_000_000_000_000_000));
    }

    /// Names without escapes borrow from the input instead of allocating.
    #[test]
    fn unescaped_names_are_borrowed() {
        let p = ok("cpu,host=a v=1");
        assert!(matches!(p.measurement, Cow::Borrowed(_)));
        assert!(matches!(p.tags[0].0, Cow::Borrowed(_)));
        assert!(matches!(p.tags[0].1, Cow::Borrowed(_)));
        assert!(matches!(p.fields[0].0, Cow::Borrowed(_)));
        let p = ok("c\\ pu v=1");
        assert!(matches!(p.measurement, Cow::Owned(_)));
    }

    /// Measurements unescape `\,`, `\ ` and `\\`; `=` needs no escape and `\=` stays literal.
    #[test]
    fn measurement_escapes() {
        assert_eq!(ok("a\\,b\\ c\\\\d v=1").measurement, "a,b c\\d");
        assert_eq!(ok("a=b v=1").measurement, "a=b");
        assert_eq!(ok("a\\=b v=1").measurement, "a\\=b");
    }

    /// Tag keys and values unescape `\,`, `\=`, `\ ` and `\\`.
    #[test]
    fn tag_escapes() {
        let p = ok("m,k\\,1\\=\\ x=v\\,1\\=\\ y\\\\ f=1");
        assert_eq!(tags(&p), [("k,1= x", "v,1= y\\")]);
    }

    /// Field keys unescape `\,`, `\=`, `\ ` and `\\`.
    #[test]
    fn field_key_escapes() {
        let p = ok("m f\\,1\\=\\ x\\\\=1");
        assert_eq!(p.fields[0].0, "f,1= x\\");
    }

    /// A backslash before any other character is literal, and such names still borrow.
    #[test]
    fn other_backslashes_are_literal() {
        let p = ok("m\\x,t\\n=a\\b f\\z=\"s\\n\\t\" 1");
        assert_eq!(p.measurement, "m\\x");
        assert_eq!(tags(&p), [("t\\n", "a\\b")]);
        assert_eq!(p.fields[0].0, "f\\z");
        assert_eq!(p.fields[0].1, FieldValue::Str("s\\n\\t".into()));
        assert!(matches!(p.measurement, Cow::Borrowed(_)));
    }

    /// Series keys built by `model::series_key` parse back to the same names.
    #[test]
    fn canonical_series_key_round_trips() {
        let names = [("a,b\\".to_string(), "x=y z\\".to_string())];
        let key = hotlake_types::model::series_key("m m,\\", &names);
        let line = format!("{key} v=1");
        let p = ok(&line);
        assert_eq!(p.measurement, "m m,\\");
        assert_eq!(tags(&p), [("a,b\\", "x=y z\\")]);
    }

    /// String values unescape `\"` and `\\` only, and may hold spaces, commas and equals signs.
    #[test]
    fn string_values() {
        let p = ok(r#"m a="x y,z=w",b="say \"hi\"",c="back\\slash",d="",e="\\" 5"#);
        assert_eq!(field(&p, "a"), &FieldValue::Str("x y,z=w".into()));
        assert_eq!(field(&p, "b"), &FieldValue::Str("say \"hi\"".into()));
        assert_eq!(field(&p, "c"), &FieldValue::Str("back\\slash".into()));
        assert_eq!(field(&p, "d"), &FieldValue::Str(String::new()));
        assert_eq!(field(&p, "e"), &FieldValue::Str("\\".into()));
        assert_eq!(p.timestamp_ns, Some(5));
    }

    /// Strings may contain newlines; the line continues and later line numbers stay physical.
    #[test]
    fn string_with_newlines() {
        let body = "m s=\"one\ntwo\nthree\",n=1i 7\nm v=2\n";
        let mut seen = Vec::new();
        let errors = parse_body(body, Precision::Nanoseconds, &limits(), |n, p| seen.push((n, p)));
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0].0, 1);
        assert_eq!(field(&seen[0].1, "s"), &FieldValue::Str("one\ntwo\nthree".into()));
        assert_eq!(seen[0].1.timestamp_ns, Some(7));
        assert_eq!(seen[1].0, 4);
        let p = ok("m s=\"a\nb\"");
        assert_eq!(p.fields[0].1, FieldValue::Str("a\nb".into()));
    }

    /// Floats accept the usual decimal and exponent forms.
    #[test]
    fn float_values() {
        for (text, want) in [
            ("1", 1.0),
            ("1.5", 1.5),
            ("-1e9", -1e9),
            ("1E5", 1e5),
            ("2e-3", 2e-3),
            ("1e+2", 100.0),
            (".5", 0.5),
            ("5.", 5.0),
            ("-0", 0.0),
            ("007", 7.0),
        ] {
            let line = format!("m v={text}");
            assert_eq!(ok(&line).fields[0].1, FieldValue::F64(want), "{text}");
        }
    }

    /// The float fast path gives bit-identical results to `str::parse` on many decimal shapes.
    #[test]
    fn float_fast_path_matches_std() {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            state >> 11
        };
        for _ in 0..200_000 {
            let int_len = (next() % 12) as usize;
            let frac_len = (next() % 20) as usize;
            let mut text = String::new();
            if next() % 2 == 0 {
                text.push('-');
            }
            for _ in 0..int_len {
                text.push(char::from(b'0' + (next() % 10) as u8));
            }
            if frac_len > 0 || int_len == 0 {
                text.push('.');
                for _ in 0..frac_len.max(1) {
                    text.push(char::from(b'0' + (next() % 10) as u8));
                }
            }
            let want: f64 = text.parse().expect("generated text is a valid float");
            let got = parse_float(&text).expect("generated text is a valid float");
            assert_eq!(got.to_bits(), want.to_bits(), "{text}");
        }
    }

    /// Signed and unsigned integers parse to their full ranges.
    #[test]
    fn integer_values() {
        let p = ok("m a=12i,b=-12i,c=9223372036854775807i,d=-9223372036854775808i,e=0i");
        assert_eq!(field(&p, "a"), &FieldValue::I64(12));
        assert_eq!(field(&p, "b"), &FieldValue::I64(-12));
        assert_eq!(field(&p, "c"), &FieldValue::I64(i64::MAX));
        assert_eq!(field(&p, "d"), &FieldValue::I64(i64::MIN));
        assert_eq!(field(&p, "e"), &FieldValue::I64(0));
        let p = ok("m a=12u,b=18446744073709551615u,c=0u");
        assert_eq!(field(&p, "a"), &FieldValue::U64(12));
        assert_eq!(field(&p, "b"), &FieldValue::U64(u64::MAX));
        assert_eq!(field(&p, "c"), &FieldValue::U64(0));
    }

    /// Every boolean spelling InfluxDB accepts.
    #[test]
    fn boolean_spellings() {
        for text in ["t", "T", "true", "True", "TRUE"] {
            let line = format!("m v={text}");
            assert_eq!(ok(&line).fields[0].1, FieldValue::Bool(true), "{text}");
        }
        for text in ["f", "F", "false", "False", "FALSE"] {
            let line = format!("m v={text}");
            assert_eq!(ok(&line).fields[0].1, FieldValue::Bool(false), "{text}");
        }
    }

    /// Timestamps are scaled by every precision, including negative ones.
    #[test]
    fn precision_scaling() {
        for (precision, want) in [
            (Precision::Nanoseconds, 3),
            (Precision::Microseconds, 3_000),
            (Precision::Milliseconds, 3_000_000),
            (Precision::Seconds, 3_000_000_000),
            (Precision::Minutes, 180_000_000_000),
            (Precision::Hours, 10_800_000_000_000),
        ] {
            assert_eq!(ok_at("m v=1 3", precision).timestamp_ns, Some(want), "{precision:?}");
            assert_eq!(ok_at("m v=1 -3", precision).timestamp_ns, Some(-want), "{precision:?}");
        }
        assert_eq!(ok("m v=1 -9223372036854775808").timestamp_ns, Some(i64::MIN));
    }

    /// The precision parameter accepts InfluxDB's spellings and names a bad value.
    #[test]
    fn precision_parse() {
        for (text, want) in [
            ("ns", Precision::Nanoseconds),
            ("n", Precision::Nanoseconds),
            ("us", Precision::Microseconds),
            ("u", Precision::Microseconds),
            ("µ", Precision::Microseconds),
            ("ms", Precision::Milliseconds),
            ("s", Precision::Seconds),
            ("m", Precision::Minutes),
            ("h", Precision::Hours),
        ] {
            assert_eq!(Precision::parse(text), Ok(want), "{text}");
        }
        let err = Precision::parse("days").unwrap_err();
        assert!(err.contains("\"days\""), "{err}");
        assert!(Precision::parse("").is_err());
        assert_eq!(Precision::Hours.nanos(), 3_600_000_000_000);
    }

    /// The timestamp is optional, with or without trailing spaces.
    #[test]
    fn optional_timestamp() {
        assert_eq!(ok("m v=1").timestamp_ns, None);
        assert_eq!(ok("m v=1   ").timestamp_ns, None);
        assert_eq!(ok("m v=\"x\"").timestamp_ns, None);
        assert_eq!(ok("m v=1 42  ").timestamp_ns, Some(42));
    }

    /// One or more spaces separate sections; leading blanks are skipped.
    #[test]
    fn whitespace_between_sections() {
        let p = ok("  \tm,t=1    v=1     9");
        assert_eq!(p.measurement, "m");
        assert_eq!(p.timestamp_ns, Some(9));
    }

    /// Blank lines, whitespace-only lines and `#` comments are skipped without errors.
    #[test]
    fn comments_and_blank_lines() {
        let body = "# header\n\n   \nm v=1\n  # indented comment with \"quote\n\t\nm v=2 # not a comment\nm v=3";
        let mut seen = Vec::new();
        let errors = parse_body(body, Precision::Nanoseconds, &limits(), |n, _| seen.push(n));
        assert_eq!(seen, [4, 8]);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].line, 7);
        assert!(errors[0].reason.contains("timestamp"), "{}", errors[0]);
    }

    /// CRLF line endings work and the `\r` never leaks into values.
    #[test]
    fn crlf() {
        let body = "m v=1 5\r\nm s=\"x\"\r\nm v=t\r\n\r\n# c\r\nm v=2i\r";
        let mut seen = Vec::new();
        let errors = parse_body(body, Precision::Nanoseconds, &limits(), |n, p| seen.push((n, p)));
        assert!(errors.is_empty(), "{errors:?}");
        let lines: Vec<usize> = seen.iter().map(|(n, _)| *n).collect();
        assert_eq!(lines, [1, 2, 3, 6]);
        assert_eq!(seen[0].1.timestamp_ns, Some(5));
        assert_eq!(seen[1].1.fields[0].1, FieldValue::Str("x".into()));
        assert_eq!(seen[2].1.fields[0].1, FieldValue::Bool(true));
        assert_eq!(seen[3].1.fields[0].1, FieldValue::I64(2));
        assert_eq!(ok("m v=1\r").fields[0].1, FieldValue::F64(1.0));
    }

    /// Tags come back sorted by key whatever order they were sent in.
    #[test]
    fn tags_are_sorted() {
        let p = ok("m,z=1,a=2,m=3,b=4 v=1");
        assert_eq!(tags(&p), [("a", "2"), ("b", "4"), ("m", "3"), ("z", "1")]);
    }

    /// Many out-of-order tags are sorted, and a duplicate among them is still caught and located.
    #[test]
    fn many_unsorted_tags() {
        let keys: Vec<String> = (0..40).rev().map(|i| format!("k{i:02}")).collect();
        let tag_text: Vec<String> = keys.iter().map(|k| format!("{k}=v")).collect();
        let line = format!("m,{} f=1", tag_text.join(","));
        let p = ok(&line);
        let got: Vec<&str> = p.tags.iter().map(|(k, _)| k.as_ref()).collect();
        let mut want: Vec<&str> = keys.iter().map(String::as_str).collect();
        want.sort_unstable();
        assert_eq!(got, want);

        let line = format!("m,{},k07=w f=1", tag_text.join(","));
        let e = bad(&line, "duplicate tag key \"k07\"");
        assert_eq!(e.column, line.find(",k07=w").map(|i| i + 2).unwrap_or(0));
    }

    /// A repeated field key keeps its first position and its last value.
    #[test]
    fn duplicate_field_last_wins() {
        let p = ok("m a=1,b=2,a=3i,c=4,a=\"s\"");
        let keys: Vec<&str> = p.fields.iter().map(|(k, _)| k.as_ref()).collect();
        assert_eq!(keys, ["a", "b", "c"]);
        assert_eq!(field(&p, "a"), &FieldValue::Str("s".into()));
        let many: Vec<String> = (0..40).map(|i| format!("f{}={i}", i % 20)).collect();
        let line = format!("m {}", many.join(","));
        let p = ok(&line);
        assert_eq!(p.fields.len(), 20);
        assert_eq!(p.fields[0], (Cow::Borrowed("f0"), FieldValue::F64(20.0)));
        assert_eq!(p.fields[19], (Cow::Borrowed("f19"), FieldValue::F64(39.0)));
    }

    /// Keys starting with `_` are accepted.
    #[test]
    fn underscore_keys_allowed() {
        let p = ok("_m,_t=1 _f=1");
        assert_eq!(p.measurement, "_m");
        assert_eq!(tags(&p), [("_t", "1")]);
        assert_eq!(p.fields[0].0, "_f");
    }

    /// Multi-byte UTF-8 in names and strings is kept intact.
    #[test]
    fn utf8_names() {
        let p = ok("température,lieu=café\\ crème valeur=\"ça va\" 1");
        assert_eq!(p.measurement, "température");
        assert_eq!(tags(&p), [("lieu", "café crème")]);
        assert_eq!(p.fields[0].1, FieldValue::Str("ça va".into()));
    }

    /// Lines without a field section are rejected.
    #[test]
    fn missing_fields() {
        bad("cpu", "missing fields");
        bad("cpu,host=a", "missing fields");
        bad("cpu,host=a   ", "missing fields");
        bad("cpu 1", "missing '='");
        bad("cpu v=1,", "empty field key");
        bad("cpu =1", "empty field key");
        bad("cpu v=", "missing field value");
        bad("cpu v=,w=1", "missing field value");
    }

    /// An empty measurement is rejected at column 1.
    #[test]
    fn empty_measurement() {
        let e = bad(",host=a v=1", "missing measurement");
        assert_eq!(e.column, 1);
    }

    /// A tag without `=`, with an empty key or value, or with an unescaped `=` is rejected.
    #[test]
    fn bad_tags() {
        let e = bad("cpu,host v=1", "tag \"host\": missing '='");
        assert_eq!(e.column, 5);
        bad("cpu,host,a=b v=1", "missing '='");
        bad("cpu,=a v=1", "empty tag key");
        bad("cpu, v=1", "empty tag key");
        bad("cpu,host= v=1", "empty tag value");
        bad("cpu,host=a=b v=1", "unescaped '='");
    }

    /// Repeated tag keys are rejected whether adjacent or not, and after unescaping.
    #[test]
    fn duplicate_tag_keys() {
        let e = bad("m,a=1,a=2 v=1", "duplicate tag key \"a\"");
        assert_eq!(e.column, 7);
        bad("m,b=1,a=2,b=3 v=1", "duplicate tag key \"b\"");
        bad("m,a\\ b=1,a\\ b=2 v=1", "duplicate tag key \"a b\"");
    }

    /// An unterminated string is reported at its opening quote and swallows the rest of the body.
    #[test]
    fn unterminated_string() {
        let mut seen = Vec::new();
        let errors = parse_body("m v=1\nm s=\"abc\nm v=2\n", Precision::Nanoseconds, &limits(), |n, _| seen.push(n));
        assert_eq!(seen, [1]);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!((errors[0].line, errors[0].column), (2, 5));
        assert!(errors[0].reason.contains("field \"s\": unterminated string"), "{}", errors[0]);
        // But a bad line with a closed string ends where the string's line ends.
        let mut seen = Vec::new();
        let errors = parse_body("m,t v=\"a\nb\"\nm v=3", Precision::Nanoseconds, &limits(), |n, _| seen.push(n));
        assert_eq!(errors.len(), 1);
        assert_eq!(seen, [3]);
    }

    /// Malformed integers, unsigned integers and floats name the field and the bad value.
    #[test]
    fn bad_numbers() {
        bad("m temp=12xi", "field \"temp\": invalid integer \"12xi\"");
        bad("m temp=1.5i", "invalid integer");
        bad("m temp=-i", "invalid integer");
        bad("m temp=-1u", "invalid unsigned integer");
        bad("m temp=12x", "field \"temp\": invalid float \"12x\"");
        bad("m temp=1.2.3", "invalid float");
        bad("m temp=+1.0", "invalid float");
        bad("m temp=1e", "invalid float");
        bad("m temp=-", "invalid float");
        bad("m temp=.", "invalid float");
    }

    /// Integers outside their type's range are rejected rather than wrapped.
    #[test]
    fn integer_overflow() {
        bad("m v=9223372036854775808i", "out of range for i64");
        bad("m v=-9223372036854775809i", "out of range for i64");
        bad("m v=99999999999999999999999i", "out of range for i64");
        bad("m v=18446744073709551616u", "out of range for u64");
    }

    /// NaN and infinities are rejected in every spelling, including overflowing exponents.
    #[test]
    fn non_finite_floats() {
        bad("m v=NaN", "invalid boolean");
        bad("m v=nan", "invalid boolean");
        bad("m v=inf", "invalid boolean");
        bad("m v=-inf", "invalid float");
        bad("m v=-Infinity", "invalid float");
        bad("m v=1e400", "out of range for f64");
    }

    /// Unquoted non-numeric values that are not boolean spellings are rejected.
    #[test]
    fn bad_booleans() {
        bad("m v=tru", "field \"v\": invalid boolean \"tru\"");
        bad("m v=yes", "invalid boolean");
        bad("m v=tRUE", "invalid boolean");
        bad("m v=abc", "must be double-quoted");
    }

    /// Anything after the timestamp, or directly after a closing quote, is rejected.
    #[test]
    fn trailing_garbage() {
        let e = bad("m v=1 123 456", "unexpected text after timestamp");
        assert_eq!(e.column, 11);
        bad("m v=1 123 x", "unexpected text after timestamp");
        bad("m v=\"a\"b", "unexpected character after string value");
        bad("m v=1\rx", "unexpected character after value");
    }

    /// Timestamps that are not integers or that overflow once scaled are rejected.
    #[test]
    fn bad_timestamps() {
        let e = bad("m v=1 12a", "invalid timestamp \"12a\"");
        assert_eq!(e.column, 7);
        bad("m v=1 1.5", "invalid timestamp");
        bad("m v=1 -", "invalid timestamp");
        bad("m v=1 +5", "invalid timestamp");
        bad("m v=1 9223372036854775808", "out of range for i64");
        let errors = parse_body("m v=1 9223372036854776\nm v=1 2562048", Precision::Hours, &limits(), |_, _| {});
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].reason.contains("at precision h"), "{}", errors[0]);
        assert_eq!(errors[1].line, 2);
        assert!(parse_line("m v=1 2562047", 1, Precision::Hours, &limits()).is_ok());
    }

    /// Each limit, when exceeded, yields an error naming its config key.
    #[test]
    fn limits_exceeded() {
        let small = LineLimits {
            fields_per_line_max: 2,
            tags_per_line_max: 1,
            key_bytes_max: 3,
            tag_value_bytes_max: 2,
            string_value_bytes_max: 4,
            timestamp_ns_max: i64::MAX,
        };
        let check = |line: &str, key: &str| {
            let e = match parse_line(line, 1, Precision::Nanoseconds, &small) {
                Ok(p) => panic!("{line:?} should fail, got {p:?}"),
                Err(e) => e,
            };
            assert!(e.reason.contains(key), "{line:?}: {e}");
        };
        check("m a=1,b=2,c=3", "fields_per_line_max");
        check("m,a=1,b=2 v=1", "tags_per_line_max");
        check("long v=1", "key_bytes_max");
        check("m,long=1 v=1", "key_bytes_max");
        check("m long=1", "key_bytes_max");
        check("m,t=abc v=1", "tag_value_bytes_max");
        check("m s=\"abcde\"", "string_value_bytes_max");
        // Limits measure unescaped bytes, and values at the limit pass.
        assert!(parse_line("a\\ b s=\"ab\\\"\\\"\"", 1, Precision::Nanoseconds, &small).is_ok());
        assert!(parse_line("m,t=ab a=1,b=2", 1, Precision::Nanoseconds, &small).is_ok());
    }

    /// Good lines are delivered with their line numbers and bad ones reported, in one pass.
    #[test]
    fn mixed_body() {
        let body = "cpu v=1 1\n\
                    cpu v=x 2\n\
                    # comment\n\
                    cpu,host=a v=2i 3\n\
                    \n\
                    cpu v=9223372036854775808i 4\n\
                    mem free=10u 5\n\
                    cpu,host v=1\n\
                    disk used=0.5";
        let mut seen = Vec::new();
        let errors = parse_body(body, Precision::Seconds, &limits(), |n, p| {
            seen.push((n, p.measurement.into_owned(), p.timestamp_ns))
        });
        assert_eq!(
            seen,
            [
                (1, "cpu".to_string(), Some(1_000_000_000)),
                (4, "cpu".to_string(), Some(3_000_000_000)),
                (7, "mem".to_string(), Some(5_000_000_000)),
                (9, "disk".to_string(), None),
            ]
        );
        let lines: Vec<(usize, usize)> = errors.iter().map(|e| (e.line, e.column)).collect();
        assert_eq!(lines, [(2, 7), (6, 7), (8, 5)]);
        assert!(errors[0].reason.contains("invalid boolean"));
        assert!(errors[1].reason.contains("out of range"));
        assert!(errors[2].reason.contains("missing '='"));
    }

    /// After a bad line, parsing resumes at the right place even when several spaces precede a
    /// multi-line string in that line.
    #[test]
    fn resync_after_bad_line_with_spaces_and_string() {
        let body = "m   s=\"a\nb\",x=bad 1\nm v=1";
        let mut seen = Vec::new();
        let errors = parse_body(body, Precision::Nanoseconds, &limits(), |n, _| seen.push(n));
        assert_eq!(seen, [3]);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!((errors[0].line, errors[0].column), (2, 6));
    }

    /// An error after a multi-line string points at the physical line and column of the problem.
    #[test]
    fn error_position_after_multiline_string() {
        let body = "m v=1\nm s=\"a\nbc\" oops\nm v=2";
        let mut seen = Vec::new();
        let errors = parse_body(body, Precision::Nanoseconds, &limits(), |n, _| seen.push(n));
        assert_eq!(seen, [1, 4]);
        assert_eq!(errors.len(), 1);
        assert_eq!((errors[0].line, errors[0].column), (3, 5));
        assert_eq!(errors[0].to_string(), format!("line 3, column 5: {}", errors[0].reason));
        let e = match parse_line("m s=\"a\nbc\" oops", 10, Precision::Nanoseconds, &limits()) {
            Ok(p) => panic!("should fail: {p:?}"),
            Err(e) => e,
        };
        assert_eq!((e.line, e.column), (11, 5));
    }

    /// `parse_line` rejects blank and comment lines and a newline outside a string.
    #[test]
    fn parse_line_edges() {
        let p = |s| parse_line(s, 3, Precision::Nanoseconds, &limits());
        assert!(p("").unwrap_err().reason.contains("empty line"));
        assert!(p("  ").unwrap_err().reason.contains("empty line"));
        assert!(p("# c").unwrap_err().reason.contains("comment"));
        let e = p("m v=1\nm v=2").unwrap_err();
        assert_eq!((e.line, e.column), (3, 6));
        assert!(e.reason.contains("newline outside"));
    }

    /// `LineError` displays as "line L, column C: reason".
    #[test]
    fn error_display() {
        let e = LineError { line: 3, column: 17, reason: "bad".into() };
        assert_eq!(e.to_string(), "line 3, column 17: bad");
    }

    /// Error messages quote long input only in part.
    #[test]
    fn long_values_are_truncated_in_errors() {
        let line = format!("m v={}x", "9".repeat(500));
        let e = bad(&line, "invalid float");
        assert!(e.reason.len() < 200, "{}", e.reason);
    }
}
