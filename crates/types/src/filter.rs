//! Field-value filters (`velocity > 1`, `error = 'E_DECODER'`, `reboot = true`): which values
//! of a field pass a test. Queries keep the rows whose values pass every filter; subscriptions
//! deliver only those rows. Pure: the tests of single values, shared by every reader.
//!
//! Typing follows the operand, as in InfluxQL:
//! - a number compares with integer and float values (integers as `f64`) and with booleans as
//!   0/1, the way aggregates count them;
//! - a boolean tests booleans for `=` and `!=`;
//! - a string tests strings: `=`, `!=`, `in`, a prefix, a regular expression or its negation.
//!
//! A value of another type never passes (`error != 'x'` does not keep a row whose `error` is a
//! number), and neither does a row without the field.

use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::limits::Limits;
use crate::model::FieldValue;

/// Longest regular expression accepted, in bytes.
pub const PATTERN_BYTES_MAX: usize = 4096;
/// Most compiled size of one regular expression, in bytes (the `regex` crate's size limit).
const PATTERN_COMPILED_BYTES_MAX: usize = 1 << 20;
/// Most strings in one `in` list.
pub const IN_VALUES_MAX: usize = 1000;

/// Compiles a regular expression of a filter (a field's or a tag's) within the size limits, so
/// a request cannot make the node build an automaton of any size.
pub fn compile_pattern(pattern: &str) -> Result<Regex> {
    if pattern.len() > PATTERN_BYTES_MAX {
        return Err(Error::invalid(format!(
            "regular expression of {} bytes: at most {PATTERN_BYTES_MAX} are allowed",
            pattern.len()
        )));
    }
    RegexBuilder::new(pattern)
        .size_limit(PATTERN_COMPILED_BYTES_MAX)
        .build()
        .map_err(|e| Error::invalid(format!("bad regex {pattern:?}: {e}")))
}

/// How a filter compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FilterOp {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `in`: equal to one of a list of strings.
    In,
    /// `prefix`: a string starting with the operand.
    Prefix,
    /// `=~`: a string matching a regular expression.
    Regex,
    /// `!~`: a string not matching a regular expression.
    NotRegex,
}

impl FilterOp {
    /// Parses `<`, `<=`, `>`, `>=`, `=` (or `==`), `!=` (or `<>`), `in`, `prefix`, `=~` and `!~`.
    pub fn parse(s: &str) -> Result<FilterOp> {
        Ok(match s {
            "<" => FilterOp::Lt,
            "<=" => FilterOp::Le,
            ">" => FilterOp::Gt,
            ">=" => FilterOp::Ge,
            "=" | "==" => FilterOp::Eq,
            "!=" | "<>" => FilterOp::Ne,
            "in" | "IN" => FilterOp::In,
            "prefix" => FilterOp::Prefix,
            "=~" => FilterOp::Regex,
            "!~" => FilterOp::NotRegex,
            other => {
                return Err(Error::invalid(format!(
                    "unknown comparison {other:?}: use <, <=, >, >=, =, !=, in, prefix, =~ or !~"
                )))
            }
        })
    }

    /// The numeric comparison this operator is, if it is one.
    pub fn cmp(self) -> Option<CmpOp> {
        Some(match self {
            FilterOp::Lt => CmpOp::Lt,
            FilterOp::Le => CmpOp::Le,
            FilterOp::Gt => CmpOp::Gt,
            FilterOp::Ge => CmpOp::Ge,
            FilterOp::Eq => CmpOp::Eq,
            FilterOp::Ne => CmpOp::Ne,
            FilterOp::In | FilterOp::Prefix | FilterOp::Regex | FilterOp::NotRegex => return None,
        })
    }

    /// The operator as `parse` reads it.
    pub fn symbol(self) -> &'static str {
        match self {
            FilterOp::Lt => "<",
            FilterOp::Le => "<=",
            FilterOp::Gt => ">",
            FilterOp::Ge => ">=",
            FilterOp::Eq => "=",
            FilterOp::Ne => "!=",
            FilterOp::In => "in",
            FilterOp::Prefix => "prefix",
            FilterOp::Regex => "=~",
            FilterOp::NotRegex => "!~",
        }
    }
}

/// The right-hand side of a filter as a request carries it, before it is checked.
#[derive(Clone, Debug, PartialEq)]
pub enum Operand {
    /// A number.
    Number(f64),
    /// A boolean.
    Bool(bool),
    /// A string (also a prefix or a regular expression).
    Str(String),
    /// Strings, for `in`.
    List(Vec<String>),
}

/// A numeric comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CmpOp {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `=`
    Eq,
    /// `!=`
    Ne,
}

impl From<CmpOp> for FilterOp {
    fn from(op: CmpOp) -> FilterOp {
        match op {
            CmpOp::Lt => FilterOp::Lt,
            CmpOp::Le => FilterOp::Le,
            CmpOp::Gt => FilterOp::Gt,
            CmpOp::Ge => FilterOp::Ge,
            CmpOp::Eq => FilterOp::Eq,
            CmpOp::Ne => FilterOp::Ne,
        }
    }
}

impl CmpOp {
    /// `a <op> b`; false whenever either side is NaN.
    #[inline]
    pub fn holds(self, a: f64, b: f64) -> bool {
        match self {
            CmpOp::Lt => a < b,
            CmpOp::Le => a <= b,
            CmpOp::Gt => a > b,
            CmpOp::Ge => a >= b,
            CmpOp::Eq => a == b,
            CmpOp::Ne => a != b && !a.is_nan() && !b.is_nan(),
        }
    }
}

/// What a filter tests a value for, checked and ready to run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum FieldTest {
    /// A numeric comparison (integers as `f64`, booleans as 0/1).
    Number(CmpOp, f64),
    /// A boolean equal (`true`) or not equal (`false`) to the value.
    Bool {
        /// `=` (true) or `!=` (false).
        equal: bool,
        /// The operand.
        value: bool,
    },
    /// A string equal (`true`) or not equal (`false`) to the value.
    Str {
        /// `=` (true) or `!=` (false).
        equal: bool,
        /// The operand.
        value: String,
    },
    /// A string equal to one of these.
    In(Vec<String>),
    /// A string starting with this.
    Prefix(String),
    /// A string matching the regular expression.
    Regex(#[serde(with = "regex_wire")] Regex),
    /// A string not matching the regular expression.
    NotRegex(#[serde(with = "regex_wire")] Regex),
}

impl PartialEq for FieldTest {
    fn eq(&self, other: &Self) -> bool {
        use FieldTest::*;
        match (self, other) {
            (Number(a, x), Number(b, y)) => a == b && x.to_bits() == y.to_bits(),
            (Bool { equal: a, value: x }, Bool { equal: b, value: y }) => a == b && x == y,
            (Str { equal: a, value: x }, Str { equal: b, value: y }) => a == b && x == y,
            (In(a), In(b)) => a == b,
            (Prefix(a), Prefix(b)) => a == b,
            (Regex(a), Regex(b)) | (NotRegex(a), NotRegex(b)) => a.as_str() == b.as_str(),
            _ => false,
        }
    }
}

impl FieldTest {
    /// Whether a numeric value (an integer as `f64`) passes.
    #[inline]
    pub fn number(&self, v: f64) -> bool {
        match self {
            FieldTest::Number(op, x) => op.holds(v, *x),
            _ => false,
        }
    }

    /// Whether a boolean value passes.
    #[inline]
    pub fn boolean(&self, v: bool) -> bool {
        match self {
            FieldTest::Bool { equal, value } => (v == *value) == *equal,
            FieldTest::Number(op, x) => op.holds(if v { 1.0 } else { 0.0 }, *x),
            _ => false,
        }
    }

    /// Whether a string value passes.
    pub fn string(&self, v: &str) -> bool {
        match self {
            FieldTest::Str { equal, value } => (v == value) == *equal,
            FieldTest::In(values) => values.iter().any(|x| x == v),
            FieldTest::Prefix(p) => v.starts_with(p.as_str()),
            FieldTest::Regex(r) => r.is_match(v),
            FieldTest::NotRegex(r) => !r.is_match(v),
            FieldTest::Number(..) | FieldTest::Bool { .. } => false,
        }
    }

    /// Whether `v` passes.
    pub fn value(&self, v: &FieldValue) -> bool {
        match v {
            FieldValue::F64(x) => self.number(*x),
            FieldValue::I64(x) => self.number(*x as f64),
            FieldValue::U64(x) => self.number(*x as f64),
            FieldValue::Bool(b) => self.boolean(*b),
            FieldValue::Str(s) => self.string(s),
        }
    }

    /// The operator and operand, as a request would give them.
    pub fn parts(&self) -> (FilterOp, Operand) {
        let eq = |equal: bool| if equal { FilterOp::Eq } else { FilterOp::Ne };
        match self {
            FieldTest::Number(op, x) => (FilterOp::from(*op), Operand::Number(*x)),
            FieldTest::Bool { equal, value } => (eq(*equal), Operand::Bool(*value)),
            FieldTest::Str { equal, value } => (eq(*equal), Operand::Str(value.clone())),
            FieldTest::In(v) => (FilterOp::In, Operand::List(v.clone())),
            FieldTest::Prefix(p) => (FilterOp::Prefix, Operand::Str(p.clone())),
            FieldTest::Regex(r) => (FilterOp::Regex, Operand::Str(r.as_str().to_string())),
            FieldTest::NotRegex(r) => (FilterOp::NotRegex, Operand::Str(r.as_str().to_string())),
        }
    }
}

/// A test of one field's values.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FieldFilter {
    /// The field tested.
    pub field: String,
    /// The test.
    pub test: FieldTest,
}

impl FieldFilter {
    /// A numeric comparison (`velocity > 1`).
    pub fn number(field: impl Into<String>, op: CmpOp, value: f64) -> FieldFilter {
        FieldFilter { field: field.into(), test: FieldTest::Number(op, value) }
    }

    /// Checks that `op` fits `operand` (ordering only on numbers, `in` only with a list,
    /// prefixes and regular expressions only with a string) and builds the filter.
    pub fn new(field: impl Into<String>, op: FilterOp, operand: Operand) -> Result<FieldFilter> {
        let field = field.into();
        if field.is_empty() {
            return Err(Error::invalid("a field filter needs a field name"));
        }
        let misfit = |what: &str| {
            Error::invalid(format!(
                "field filter on {field:?}: {} does not apply to {what} (numbers take <, <=, >, >=, =, !=; \
                 booleans =, !=; strings =, !=, prefix, =~, !~; a list of strings in)",
                op.symbol()
            ))
        };
        let test = match (op, operand) {
            (_, Operand::Number(x)) if x.is_nan() => {
                return Err(Error::invalid(format!("field filter on {field:?} compares with NaN")))
            }
            (_, Operand::Number(x)) => match op.cmp() {
                Some(cmp) => FieldTest::Number(cmp, x),
                None => return Err(misfit("a number")),
            },
            (FilterOp::Eq | FilterOp::Ne, Operand::Bool(value)) => FieldTest::Bool { equal: op == FilterOp::Eq, value },
            (FilterOp::Eq | FilterOp::Ne, Operand::Str(value)) => FieldTest::Str { equal: op == FilterOp::Eq, value },
            (FilterOp::Prefix, Operand::Str(p)) => FieldTest::Prefix(p),
            (FilterOp::Regex, Operand::Str(p)) => FieldTest::Regex(compile_pattern(&p)?),
            (FilterOp::NotRegex, Operand::Str(p)) => FieldTest::NotRegex(compile_pattern(&p)?),
            (FilterOp::In, Operand::List(values)) => {
                if values.len() > IN_VALUES_MAX {
                    return Err(Error::invalid(format!(
                        "field filter on {field:?}: {} values in the list, at most {IN_VALUES_MAX} are allowed",
                        values.len()
                    )));
                }
                FieldTest::In(values)
            }
            (_, Operand::Bool(_)) => return Err(misfit("a boolean")),
            (_, Operand::Str(_)) => return Err(misfit("a string")),
            (_, Operand::List(_)) => return Err(misfit("a list")),
        };
        Ok(FieldFilter { field, test })
    }

    /// Bytes of text the filter carries (its name and string operands), for request limits.
    pub fn text_bytes(&self) -> usize {
        self.field.len()
            + match &self.test {
                FieldTest::Number(..) | FieldTest::Bool { .. } => 0,
                FieldTest::Str { value, .. } | FieldTest::Prefix(value) => value.len(),
                FieldTest::In(values) => values.iter().map(String::len).sum(),
                FieldTest::Regex(r) | FieldTest::NotRegex(r) => r.as_str().len(),
            }
    }
}

/// Parses the text form of a filter, as `hotlakectl --filter` and the `filter` parameter of
/// the HTTP subscription take it: `FIELD OP VALUE` with OP one of `<`, `<=`, `>`, `>=`, `=`,
/// `!=`, `^=` (prefix), `=~`, `!~`, or `FIELD in A,B,C`. VALUE is a number when it reads as
/// one, a boolean when it is `true` or `false`, and a string otherwise; quotes (`'1.2'`,
/// `"true"`) make it a string whatever it holds. `velocity>1`, `error=E_DECODER`,
/// `reboot=true`, `firmware^=2.`, `error in E_1,E_2`.
pub fn parse_text(text: &str) -> Result<FieldFilter> {
    let usage = || {
        Error::invalid(format!(
            "filter {text:?} must look like FIELD OP VALUE (OP: <, <=, >, >=, =, !=, ^=, =~, !~) or FIELD in A,B"
        ))
    };
    const OP_CHARS: [char; 6] = ['<', '>', '=', '!', '^', '~'];
    if let Some((field, list)) = text.split_once(" in ").filter(|(field, _)| !field.contains(OP_CHARS)) {
        let list = list.trim();
        let list = list.strip_prefix('(').and_then(|l| l.strip_suffix(')')).unwrap_or(list);
        let values = list.split(',').map(|v| unquote(v.trim()).unwrap_or(v.trim()).to_string()).collect();
        return FieldFilter::new(field.trim(), FilterOp::In, Operand::List(values));
    }
    let at = text.find(OP_CHARS).ok_or_else(usage)?;
    let (field, rest) = text.split_at(at);
    let (op, value) = ["<=", ">=", "!=", "<>", "=~", "!~", "^=", "==", "<", ">", "="]
        .iter()
        .find_map(|op| rest.strip_prefix(op).map(|v| (*op, v.trim())))
        .ok_or_else(usage)?;
    let op = if op == "^=" { FilterOp::Prefix } else { FilterOp::parse(op)? };
    let operand = match unquote(value) {
        Some(s) => Operand::Str(s.to_string()),
        None if matches!(op, FilterOp::Prefix | FilterOp::Regex | FilterOp::NotRegex) => Operand::Str(value.into()),
        None => match value {
            "true" => Operand::Bool(true),
            "false" => Operand::Bool(false),
            _ => value.parse::<f64>().map_or_else(|_| Operand::Str(value.into()), Operand::Number),
        },
    };
    FieldFilter::new(field.trim(), op, operand)
}

/// The text between matching single or double quotes, if `s` is quoted.
fn unquote(s: &str) -> Option<&str> {
    ['\'', '"'].iter().find_map(|q| s.strip_prefix(*q).and_then(|s| s.strip_suffix(*q)))
}

/// Checks a request's filters against the request limits: at most `fields_per_line_max`
/// filters, field names within `key_bytes_max`, string operands within
/// `string_value_bytes_max` (an `in` list's strings together), no NaN (a filter that came
/// from another node was not built by `FieldFilter::new`).
pub fn check_filters(filters: &[FieldFilter], limits: &Limits) -> Result<()> {
    if filters.len() as u64 > limits.fields_per_line_max {
        return Err(Error::invalid(format!(
            "{} field filters: at most {} are allowed",
            filters.len(),
            limits.fields_per_line_max
        )));
    }
    for f in filters {
        if f.field.is_empty() || f.field.len() as u64 > limits.key_bytes_max {
            return Err(Error::invalid(format!(
                "a field filter needs a field name of 1 to {} bytes",
                limits.key_bytes_max
            )));
        }
        if (f.text_bytes() - f.field.len()) as u64 > limits.string_value_bytes_max {
            return Err(Error::invalid(format!(
                "field filter on {:?}: its strings are longer than {} bytes",
                f.field, limits.string_value_bytes_max
            )));
        }
        if matches!(f.test, FieldTest::Number(_, x) if x.is_nan()) {
            return Err(Error::invalid(format!("field filter on {:?} compares with NaN", f.field)));
        }
    }
    Ok(())
}

/// Regular expressions travel between nodes as their pattern.
pub mod regex_wire {
    use regex::Regex;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes the pattern.
    pub fn serialize<S: Serializer>(r: &Regex, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(r.as_str())
    }

    /// Reads and compiles a pattern, within the limits of `compile_pattern`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Regex, D::Error> {
        let pattern = String::deserialize(d)?;
        super::compile_pattern(&pattern).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The text form of a filter, as `parse_text` reads it back.
    fn to_text(f: &FieldFilter) -> String {
        let (op, operand) = f.test.parts();
        let op = if op == FilterOp::Prefix { "^=" } else { op.symbol() };
        match operand {
            Operand::Number(x) => format!("{}{op}{x}", f.field),
            Operand::Bool(b) => format!("{}{op}{b}", f.field),
            Operand::Str(s) => format!("{}{op}'{s}'", f.field),
            Operand::List(v) => {
                format!("{} in {}", f.field, v.iter().map(|s| format!("'{s}'")).collect::<Vec<_>>().join(","))
            }
        }
    }

    fn filter(op: &str, operand: Operand) -> Result<FieldFilter> {
        FieldFilter::new("f", FilterOp::parse(op)?, operand)
    }

    fn passes(op: &str, operand: Operand, v: FieldValue) -> bool {
        filter(op, operand).unwrap().test.value(&v)
    }

    #[test]
    fn numbers_compare_with_every_numeric_type_and_booleans_as_zero_or_one() {
        use Operand::Number as N;
        assert!(passes(">", N(1.0), FieldValue::F64(1.5)));
        assert!(passes(">=", N(2.0), FieldValue::I64(2)));
        assert!(passes("<", N(3.0), FieldValue::U64(2)));
        assert!(passes("=", N(1.0), FieldValue::Bool(true)));
        assert!(passes("<", N(1.0), FieldValue::Bool(false)));
        assert!(!passes("!=", N(1.0), FieldValue::Str("2".into())));
        assert!(!passes("!=", N(1.0), FieldValue::F64(f64::NAN)));
        assert!(filter("=", N(f64::NAN)).is_err());
    }

    #[test]
    fn booleans_and_strings_test_only_their_own_type() {
        use Operand::{Bool as B, Str as S};
        assert!(passes("=", B(true), FieldValue::Bool(true)));
        assert!(passes("!=", B(true), FieldValue::Bool(false)));
        assert!(!passes("=", B(true), FieldValue::I64(1)));
        assert!(!passes("=", B(false), FieldValue::Str("false".into())));
        assert!(passes("=", S("E_DECODER".into()), FieldValue::Str("E_DECODER".into())));
        assert!(passes("!=", S("E_DECODER".into()), FieldValue::Str("E_TUNER".into())));
        assert!(!passes("!=", S("x".into()), FieldValue::F64(1.0)));
        assert!(passes("prefix", S("E_".into()), FieldValue::Str("E_TUNER".into())));
        assert!(!passes("prefix", S("E_".into()), FieldValue::Str("W_E_".into())));
        assert!(passes("=~", S("^E_(DE|TU)".into()), FieldValue::Str("E_TUNER".into())));
        assert!(passes("!~", S("^E_".into()), FieldValue::Str("OK".into())));
        assert!(!passes("!~", S("^E_".into()), FieldValue::I64(0)));
        let list = Operand::List(vec!["a".into(), "b".into()]);
        assert!(passes("in", list.clone(), FieldValue::Str("b".into())));
        assert!(!passes("in", list, FieldValue::Str("c".into())));
    }

    #[test]
    fn an_operator_that_does_not_fit_its_operand_is_refused_with_what_fits() {
        for (op, operand) in [
            ("<", Operand::Str("a".into())),
            (">", Operand::Bool(true)),
            ("in", Operand::Str("a".into())),
            ("=", Operand::List(vec![])),
            ("prefix", Operand::Number(1.0)),
            ("=~", Operand::Bool(false)),
        ] {
            let e = filter(op, operand.clone()).unwrap_err().to_string();
            assert!(e.contains("does not apply"), "{op} {operand:?}: {e}");
        }
        assert!(FilterOp::parse("~").is_err());
        assert!(FieldFilter::new("", FilterOp::Eq, Operand::Number(1.0)).is_err());
        assert!(filter("=~", Operand::Str("(".into())).is_err());
        assert!(filter("=~", Operand::Str("a".repeat(PATTERN_BYTES_MAX + 1))).is_err());
        // Within the byte limit, but past the compiled-size limit.
        assert!(compile_pattern(&"\\w{100}".repeat(40)).is_err());
        assert!(filter("in", Operand::List(vec![String::new(); IN_VALUES_MAX + 1])).is_err());
    }

    #[test]
    fn the_text_form_types_its_value_and_reads_back() {
        let parsed = |t: &str| parse_text(t).unwrap();
        assert_eq!(parsed("velocity>1"), FieldFilter::number("velocity", CmpOp::Gt, 1.0));
        assert_eq!(parsed(" fuel <= -2.5 "), FieldFilter::number("fuel", CmpOp::Le, -2.5));
        assert_eq!(parsed("reboot=true").test, FieldTest::Bool { equal: true, value: true });
        assert_eq!(parsed("error!=E_DECODER").test, FieldTest::Str { equal: false, value: "E_DECODER".into() });
        assert_eq!(parsed("version='1.2'").test, FieldTest::Str { equal: true, value: "1.2".into() });
        assert_eq!(parsed("flag=\"true\"").test, FieldTest::Str { equal: true, value: "true".into() });
        assert_eq!(parsed("firmware^=2.").test, FieldTest::Prefix("2.".into()));
        assert_eq!(parsed("error in (E_1, 'E 2')").test, FieldTest::In(vec!["E_1".into(), "E 2".into()]));
        assert!(matches!(parsed("error=~^E_[0-9]+$").test, FieldTest::Regex(r) if r.as_str() == "^E_[0-9]+$"));
        assert!(matches!(parsed("error!~1").test, FieldTest::NotRegex(_)));
        assert!(matches!(parsed("error=~a in b").test, FieldTest::Regex(r) if r.as_str() == "a in b"));
        for bad in ["velocity", "velocity>", ">1", "error>E_1", "a~b"] {
            assert!(parse_text(bad).is_err(), "{bad}");
        }
        for text in ["velocity>1", "reboot!=false", "error='E_1'", "firmware^='2.'", "error in 'a','b'", "e=~'^x'"] {
            let f = parsed(text);
            assert_eq!(parse_text(&to_text(&f)).unwrap(), f, "{text}");
        }
    }

    #[test]
    fn request_limits_bound_the_count_the_names_and_the_strings_of_filters() {
        let limits =
            Limits { fields_per_line_max: 2, key_bytes_max: 4, string_value_bytes_max: 8, ..Limits::default() };
        let ok = filter("=", Operand::Str("12345678".into())).unwrap();
        assert!(check_filters(&[ok.clone(), ok.clone()], &limits).is_ok());
        assert!(check_filters(&[ok.clone(), ok.clone(), ok.clone()], &limits).is_err());
        let long_name = FieldFilter::new("fffff", FilterOp::Eq, Operand::Bool(true)).unwrap();
        assert!(check_filters(&[long_name], &limits).is_err());
        let long_list = filter("in", Operand::List(vec!["12345".into(), "6789".into()])).unwrap();
        assert!(check_filters(&[long_list], &limits).is_err());
        let nan = FieldFilter::number("f", CmpOp::Lt, f64::NAN);
        assert!(check_filters(&[nan], &limits).is_err());
    }

    #[test]
    fn filters_round_trip_through_their_parts_and_the_wire() {
        for (op, operand) in [
            ("<=", Operand::Number(2.5)),
            ("!=", Operand::Bool(true)),
            ("=", Operand::Str("a".into())),
            ("in", Operand::List(vec!["a".into()])),
            ("prefix", Operand::Str("p".into())),
            ("!~", Operand::Str("^x$".into())),
        ] {
            let f = filter(op, operand.clone()).unwrap();
            let (back_op, back_operand) = f.test.parts();
            assert_eq!((back_op.symbol(), back_operand), (FilterOp::parse(op).unwrap().symbol(), operand));
            let wire = serde_json::to_string(&f).unwrap();
            assert_eq!(serde_json::from_str::<FieldFilter>(&wire).unwrap(), f);
        }
    }
}
