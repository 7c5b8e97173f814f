//! Query and `Last` builders with typed results.

use std::time::Duration;

use hotlake_proto::v1 as pb;

/// A comparison of a field filter ([`QueryBuilder::filter`]).
pub use pb::field_filter::Op as Cmp;
pub use pb::{Aggregate, Fill};

/// The operand of a field filter: a number, a boolean or a string; its type decides what the
/// filter applies to (a number compares with numbers and with booleans as 0/1, a boolean tests
/// booleans, a string tests strings).
#[derive(Clone, Debug, PartialEq)]
pub enum FilterValue {
    /// A number.
    Number(f64),
    /// A boolean.
    Bool(bool),
    /// A string (also a prefix or a regular expression).
    Text(String),
}

impl From<f64> for FilterValue {
    fn from(v: f64) -> Self {
        FilterValue::Number(v)
    }
}

impl From<i64> for FilterValue {
    fn from(v: i64) -> Self {
        FilterValue::Number(v as f64)
    }
}

impl From<bool> for FilterValue {
    fn from(v: bool) -> Self {
        FilterValue::Bool(v)
    }
}

impl From<&str> for FilterValue {
    fn from(v: &str) -> Self {
        FilterValue::Text(v.to_string())
    }
}

impl From<String> for FilterValue {
    fn from(v: String) -> Self {
        FilterValue::Text(v)
    }
}

/// A field filter as the wire carries it.
pub(crate) fn field_filter(field: &str, cmp: Cmp, value: FilterValue) -> pb::FieldFilter {
    use pb::field_filter::Operand;
    let operand = match value {
        FilterValue::Number(x) => Operand::Value(x),
        FilterValue::Bool(b) => Operand::BoolValue(b),
        FilterValue::Text(s) => Operand::StringValue(s),
    };
    pb::FieldFilter { field: field.into(), op: cmp as i32, operand: Some(operand), values: Vec::new() }
}

/// A field filter that passes strings equal to one of `values`.
pub(crate) fn field_filter_in<S: Into<String>>(field: &str, values: impl IntoIterator<Item = S>) -> pb::FieldFilter {
    pb::FieldFilter {
        field: field.into(),
        op: Cmp::In as i32,
        operand: None,
        values: values.into_iter().map(Into::into).collect(),
    }
}

/// One value of a result.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A float.
    F64(f64),
    /// A signed integer.
    I64(i64),
    /// An unsigned integer.
    U64(u64),
    /// A boolean.
    Bool(bool),
    /// A string.
    Str(String),
    /// No value (an empty bucket with `Fill::Null`, an absent field).
    Null,
}

impl Value {
    /// The value as a float, for numbers.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F64(x) => Some(x),
            Value::I64(x) => Some(x as f64),
            Value::U64(x) => Some(x as f64),
            _ => None,
        }
    }
}

impl From<pb::Value> for Value {
    fn from(v: pb::Value) -> Self {
        use pb::value::Kind;
        match v.kind {
            Some(Kind::F64(x)) => Value::F64(x),
            Some(Kind::I64(x)) => Value::I64(x),
            Some(Kind::U64(x)) => Value::U64(x),
            Some(Kind::Bool(x)) => Value::Bool(x),
            Some(Kind::String(x)) => Value::Str(x),
            None => Value::Null,
        }
    }
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::F64(x) => write!(f, "{x}"),
            Value::I64(x) => write!(f, "{x}"),
            Value::U64(x) => write!(f, "{x}"),
            Value::Bool(x) => write!(f, "{x}"),
            Value::Str(x) => write!(f, "{x}"),
            Value::Null => Ok(()),
        }
    }
}

/// One row: a timestamp (a bucket start for aggregates) and one value per column.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// Nanoseconds since the Unix epoch.
    pub timestamp_ns: i64,
    /// Values in column order.
    pub values: Vec<Value>,
}

/// Rows of one series or one group-by combination.
#[derive(Clone, Debug, PartialEq)]
pub struct Group {
    /// The group's tags.
    pub tags: Vec<(String, String)>,
    /// Column names (`field` or `aggregate(field)`).
    pub columns: Vec<String>,
    /// Rows in time order.
    pub rows: Vec<Row>,
}

impl Group {
    /// The value of tag `key`.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// The values of column `name`, row by row.
    pub fn column(&self, name: &str) -> Option<impl Iterator<Item = &Value> + '_> {
        let i = self.columns.iter().position(|c| c == name)?;
        Some(self.rows.iter().map(move |r| &r.values[i]))
    }
}

/// The answer to a query.
#[derive(Clone, Debug, PartialEq)]
pub struct QueryResult {
    /// Groups of rows.
    pub groups: Vec<Group>,
    /// Points read to answer.
    pub points_scanned: u64,
    /// Shards that could not answer (only with [`QueryBuilder::allow_partial`]).
    pub missing_shards: Vec<u32>,
}

fn tags(t: Vec<pb::Tag>) -> Vec<(String, String)> {
    t.into_iter().map(|t| (t.key, t.value)).collect()
}

impl From<pb::QueryResponse> for QueryResult {
    fn from(r: pb::QueryResponse) -> Self {
        QueryResult {
            points_scanned: r.points_scanned,
            missing_shards: r.missing_shards,
            groups: r
                .groups
                .into_iter()
                .map(|g| Group {
                    tags: tags(g.tags),
                    columns: g.columns,
                    rows: g
                        .rows
                        .into_iter()
                        .map(|r| Row {
                            timestamp_ns: r.timestamp_ns,
                            values: r.values.into_iter().map(Value::from).collect(),
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

fn predicate(key: &str, op: pb::tag_predicate::Op, values: Vec<String>) -> pb::TagPredicate {
    pb::TagPredicate { key: key.into(), op: op as i32, values }
}

/// Builds a query.
///
/// ```
/// use std::time::Duration;
/// use hotlake_client::{Aggregate, QueryBuilder};
/// let q = QueryBuilder::new("readings")
///     .tenant("fleet")
///     .field("velocity")
///     .where_eq("fleet", "East")
///     .range(0, 3_600_000_000_000)
///     .aggregate(Aggregate::Mean)
///     .every(Duration::from_secs(60))
///     .group_by("device_id");
/// assert_eq!(q.build().bucket_ns, 60_000_000_000);
/// ```
#[derive(Clone, Debug)]
pub struct QueryBuilder {
    req: pb::QueryRequest,
}

impl QueryBuilder {
    /// A query of `measurement` over the last hour (set another window with
    /// [`QueryBuilder::range`]).
    pub fn new(measurement: &str) -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or_default();
        let (start_ns, end_ns) = (now - 3_600_000_000_000, now + 1);
        QueryBuilder {
            req: pb::QueryRequest { measurement: measurement.into(), start_ns, end_ns, ..Default::default() },
        }
    }

    /// The tenant (default: `default`).
    pub fn tenant(mut self, tenant: &str) -> Self {
        self.req.tenant = tenant.into();
        self
    }

    /// Adds a field to read (none: every field, raw queries only).
    pub fn field(mut self, field: &str) -> Self {
        self.req.fields.push(field.into());
        self
    }

    /// Only series whose tag `key` equals `value`.
    pub fn where_eq(mut self, key: &str, value: &str) -> Self {
        self.req.predicates.push(predicate(key, pb::tag_predicate::Op::Eq, vec![value.into()]));
        self
    }

    /// Only series whose tag `key` differs from `value`.
    pub fn where_ne(mut self, key: &str, value: &str) -> Self {
        self.req.predicates.push(predicate(key, pb::tag_predicate::Op::Neq, vec![value.into()]));
        self
    }

    /// Only series whose tag `key` is one of `values`.
    pub fn where_in<S: Into<String>>(mut self, key: &str, values: impl IntoIterator<Item = S>) -> Self {
        let values = values.into_iter().map(Into::into).collect();
        self.req.predicates.push(predicate(key, pb::tag_predicate::Op::In, values));
        self
    }

    /// Only series whose tag `key` matches the regular expression `pattern`.
    pub fn where_regex(mut self, key: &str, pattern: &str) -> Self {
        self.req.predicates.push(predicate(key, pb::tag_predicate::Op::Regex, vec![pattern.into()]));
        self
    }

    /// Only rows whose field `field` passes `cmp` with `value`: `.filter("velocity", Cmp::Gt,
    /// 1.0)` (moving trucks only), `.filter("error", Cmp::Eq, "E_DECODER")`, `.filter("reboot",
    /// Cmp::Eq, true)`, `.filter("error", Cmp::Prefix, "E_")`, `.filter("error", Cmp::Regex,
    /// "^E_(DE|TU)")`. Rows without the field, or with a value of another type, do not count.
    /// Several filters must all hold.
    pub fn filter(mut self, field: &str, cmp: Cmp, value: impl Into<FilterValue>) -> Self {
        self.req.filters.push(field_filter(field, cmp, value.into()));
        self
    }

    /// Only rows whose string field `field` equals one of `values`.
    pub fn filter_in<S: Into<String>>(mut self, field: &str, values: impl IntoIterator<Item = S>) -> Self {
        self.req.filters.push(field_filter_in(field, values));
        self
    }

    /// Time range `[start_ns, end_ns)`, nanoseconds since the Unix epoch.
    pub fn range(mut self, start_ns: i64, end_ns: i64) -> Self {
        self.req.start_ns = start_ns;
        self.req.end_ns = end_ns;
        self
    }

    /// Adds an aggregate (applied to every field).
    pub fn aggregate(mut self, aggregate: Aggregate) -> Self {
        self.req.aggregates.push(aggregate as i32);
        self
    }

    /// The percentile of `Aggregate::Percentile`, in (0, 100].
    pub fn percentile(mut self, p: f64) -> Self {
        self.req.percentile = p;
        self
    }

    /// Aggregates per time bucket of this width.
    pub fn every(mut self, bucket: Duration) -> Self {
        self.req.bucket_ns = bucket.as_nanos().min(i64::MAX as u128) as i64;
        self
    }

    /// Groups by tag `key`.
    pub fn group_by(mut self, key: &str) -> Self {
        self.req.group_by_tags.push(key.into());
        self
    }

    /// What empty buckets hold.
    pub fn fill(mut self, fill: Fill, value: f64) -> Self {
        self.req.fill = fill as i32;
        self.req.fill_value = value;
        self
    }

    /// Newest rows first.
    pub fn descending(mut self) -> Self {
        self.req.descending = true;
        self
    }

    /// At most `rows` rows per group.
    pub fn limit(mut self, rows: u64) -> Self {
        self.req.limit = rows;
        self
    }

    /// Answer from the shards that can, listing the others in `missing_shards`, instead of
    /// failing when one cannot answer.
    pub fn allow_partial(mut self) -> Self {
        self.req.allow_partial = true;
        self
    }

    /// The request message.
    pub fn build(self) -> pb::QueryRequest {
        self.req
    }
}

impl From<pb::QueryRequest> for QueryBuilder {
    fn from(req: pb::QueryRequest) -> Self {
        QueryBuilder { req }
    }
}

/// Latest values of one device.
#[derive(Clone, Debug, PartialEq)]
pub struct LastRow {
    /// The device.
    pub device: String,
    /// Tags of its series.
    pub tags: Vec<(String, String)>,
    /// (field, timestamp ns, value) per field.
    pub values: Vec<(String, i64, Value)>,
}

impl From<pb::LastRow> for LastRow {
    fn from(r: pb::LastRow) -> Self {
        LastRow {
            device: r.device,
            tags: tags(r.tags),
            values: r
                .values
                .into_iter()
                .map(|v| (v.field, v.timestamp_ns, v.value.map(Value::from).unwrap_or(Value::Null)))
                .collect(),
        }
    }
}

/// Builds a `Last` request: the latest value of each field per device.
#[derive(Clone, Debug)]
pub struct LastBuilder {
    req: pb::LastRequest,
}

impl LastBuilder {
    /// Latest values in `measurement`.
    pub fn new(measurement: &str) -> Self {
        LastBuilder { req: pb::LastRequest { measurement: measurement.into(), ..Default::default() } }
    }

    /// The tenant (default: `default`).
    pub fn tenant(mut self, tenant: &str) -> Self {
        self.req.tenant = tenant.into();
        self
    }

    /// Adds a field (none: every field).
    pub fn field(mut self, field: &str) -> Self {
        self.req.fields.push(field.into());
        self
    }

    /// Only devices whose series have tag `key` = `value`.
    pub fn where_eq(mut self, key: &str, value: &str) -> Self {
        self.req.predicates.push(predicate(key, pb::tag_predicate::Op::Eq, vec![value.into()]));
        self
    }

    /// Only devices whose series have tag `key` in `values`.
    pub fn where_in<S: Into<String>>(mut self, key: &str, values: impl IntoIterator<Item = S>) -> Self {
        let values = values.into_iter().map(Into::into).collect();
        self.req.predicates.push(predicate(key, pb::tag_predicate::Op::In, values));
        self
    }

    /// The request message.
    pub fn build(self) -> pb::LastRequest {
        self.req
    }
}

impl From<pb::LastRequest> for LastBuilder {
    fn from(req: pb::LastRequest) -> Self {
        LastBuilder { req }
    }
}
