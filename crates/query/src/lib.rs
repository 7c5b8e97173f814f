//! Queries: the request model, series selection, partial aggregates computed next to the data,
//! and the coordinator's merge.
//!
//! ```text
//!  Query ──validate──► per shard: select series (plan) ──► read_series (merge reader)
//!                                    └──► raw rows or PartialAggregates ──gather──► merge ──► QueryResult
//! ```
//!
//! Invariant: `plan` and `aggregate` do no I/O; only `exec` reads the engine.
#![warn(missing_docs, unreachable_pub)]

pub mod aggregate;
pub mod exec;
pub mod filter;
pub mod plan;

use regex::Regex;
use serde::{Deserialize, Serialize};

use hotlake_types::error::{Error, Result};
use hotlake_types::limits::Limits;
use hotlake_types::model::{FieldValue, TimestampNs};

/// A tag predicate.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum TagOp {
    /// Tag equals the value (a missing tag equals "").
    Eq(String),
    /// Tag differs from the value.
    Neq(String),
    /// Tag equals one of the values.
    In(Vec<String>),
    /// Tag matches the regular expression (a missing tag is "").
    Regex(#[serde(with = "hotlake_types::filter::regex_wire")] Regex),
    /// Tag does not match the regular expression.
    NotRegex(#[serde(with = "hotlake_types::filter::regex_wire")] Regex),
}

/// A predicate on one tag key.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TagPredicate {
    /// The tag key.
    pub key: String,
    /// The test.
    pub op: TagOp,
}

/// An aggregate function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AggKind {
    /// Number of values.
    Count,
    /// Sum.
    Sum,
    /// Minimum.
    Min,
    /// Maximum.
    Max,
    /// Arithmetic mean.
    Mean,
    /// Value with the smallest timestamp.
    First,
    /// Value with the greatest timestamp.
    Last,
    /// Sample standard deviation.
    Stddev,
    /// The `Query::percentile`-th percentile (approximate, 1% relative error).
    Percentile,
}

impl AggKind {
    /// Name used in column headers, e.g. `mean(velocity)`.
    pub fn name(self) -> &'static str {
        match self {
            AggKind::Count => "count",
            AggKind::Sum => "sum",
            AggKind::Min => "min",
            AggKind::Max => "max",
            AggKind::Mean => "mean",
            AggKind::First => "first",
            AggKind::Last => "last",
            AggKind::Stddev => "stddev",
            AggKind::Percentile => "percentile",
        }
    }

    /// Parses a name as used in the JSON API.
    pub fn parse(s: &str) -> Result<AggKind> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "count" => AggKind::Count,
            "sum" => AggKind::Sum,
            "min" => AggKind::Min,
            "max" => AggKind::Max,
            "mean" | "avg" => AggKind::Mean,
            "first" => AggKind::First,
            "last" => AggKind::Last,
            "stddev" => AggKind::Stddev,
            "percentile" => AggKind::Percentile,
            other => {
                return Err(Error::invalid(format!(
                "unknown aggregate {other:?}: expected count, sum, min, max, mean, first, last, stddev or percentile"
            )))
            }
        })
    }
}

/// What to report for a bucket without points.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Fill {
    /// Leave the bucket out.
    None,
    /// Report nulls.
    Null,
    /// Repeat the previous bucket's values.
    Previous,
    /// Report this value.
    Value(f64),
}

/// A query.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Query {
    /// Tenant.
    pub tenant: String,
    /// Measurement.
    pub measurement: String,
    /// Fields to return; empty = all.
    pub fields: Vec<String>,
    /// Tag predicates, all of which must hold.
    pub predicates: Vec<TagPredicate>,
    /// Field-value filters, all of which must hold for a row to count.
    #[serde(default)]
    pub filters: Vec<filter::FieldFilter>,
    /// Start of the range (inclusive).
    pub start_ns: TimestampNs,
    /// End of the range (exclusive).
    pub end_ns: TimestampNs,
    /// Aggregates; empty = raw points.
    pub aggregates: Vec<AggKind>,
    /// Quantile for `Percentile`, in [0, 100].
    pub percentile: f64,
    /// Bucket width; 0 = one bucket over the whole range.
    pub bucket_ns: i64,
    /// Tag keys to group by.
    pub group_by: Vec<String>,
    /// Fill for empty buckets.
    pub fill: Fill,
    /// Newest first.
    pub descending: bool,
    /// Rows per group; 0 = no limit beyond the server's.
    pub limit: usize,
    /// Answer from the shards that can answer and list the others in
    /// `QueryResult::missing_shards`, instead of failing when a shard cannot be reached.
    pub allow_partial: bool,
}

impl Query {
    /// Checks the query against its own rules and the node's limits.
    pub fn validate(&self, limits: &Limits) -> Result<()> {
        if self.measurement.is_empty() {
            return Err(Error::invalid("measurement is required"));
        }
        if self.start_ns >= self.end_ns {
            return Err(Error::invalid(format!(
                "time range is empty: start {} is not before end {}",
                self.start_ns, self.end_ns
            )));
        }
        let span_s = (self.end_ns as i128 - self.start_ns as i128) / 1_000_000_000;
        if span_s > limits.query_range_s_max as i128 {
            return Err(Error::LimitExceeded {
                limit: "limits.query_range_s_max",
                message: format!("query spans {span_s} s, more than {} s", limits.query_range_s_max),
            });
        }
        if self.bucket_ns < 0 {
            return Err(Error::invalid("bucket must not be negative"));
        }
        if !self.aggregates.is_empty() && self.bucket_ns > 0 {
            let buckets = (self.end_ns as i128 - self.start_ns as i128) / self.bucket_ns as i128 + 1;
            if buckets > limits.query_buckets_max as i128 {
                return Err(Error::LimitExceeded {
                    limit: "limits.query_buckets_max",
                    message: format!("query would produce {buckets} buckets per group"),
                });
            }
        }
        if self.aggregates.is_empty() && (self.bucket_ns > 0 || !self.group_by.is_empty()) {
            return Err(Error::invalid("group by time or tags needs at least one aggregate"));
        }
        hotlake_types::filter::check_filters(&self.filters, limits)?;
        if self.aggregates.contains(&AggKind::Percentile) && !(0.0..=100.0).contains(&self.percentile) {
            return Err(Error::invalid(format!("percentile must be within 0..=100, got {}", self.percentile)));
        }
        Ok(())
    }
}

/// One group of a result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResultGroup {
    /// Tags identifying the group (the series' tags for raw queries, the group-by tags
    /// otherwise).
    pub tags: Vec<(String, String)>,
    /// Column names after the timestamp.
    pub columns: Vec<String>,
    /// Rows: timestamp and one optional value per column.
    pub rows: Vec<(TimestampNs, Vec<Option<FieldValue>>)>,
}

/// A query result.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct QueryResult {
    /// Groups, ordered by tags.
    pub groups: Vec<ResultGroup>,
    /// Points read to answer.
    pub points_scanned: u64,
    /// Shards that could not answer (only with `Query::allow_partial`); empty = complete.
    pub missing_shards: Vec<u32>,
}

/// A `Last` request: latest values per device.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LastQuery {
    /// Tenant.
    pub tenant: String,
    /// Measurement.
    pub measurement: String,
    /// Fields; empty = all.
    pub fields: Vec<String>,
    /// Tag predicates.
    pub predicates: Vec<TagPredicate>,
}

/// Latest values of one series.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LastRow {
    /// Device key.
    pub device: String,
    /// Series tags.
    pub tags: Vec<(String, String)>,
    /// (field, timestamp, value).
    pub values: Vec<(String, TimestampNs, FieldValue)>,
}
