//! Rust client for Hotlake.
//!
//! ```text
//!  your app ─► Client ── cluster map (cached) ──► shard of each series ──► that shard's leader
//!               │  retries: backoff with jitter, within a budget; map refreshed on
//!               │  `stale_map` / `not_leader`
//!               └─ BatchWriter: batches by points, bytes and linger time, bounded memory
//! ```
//!
//! # Connecting
//! [`Client::connect`] takes seed addresses; any member will do. The client fetches the
//! cluster map from one and learns the others from it. [`ClientBuilder`] sets timeouts, the
//! [`RetryPolicy`], a bearer token and a hook to configure every endpoint (TLS).
//!
//! # Writes and retries
//! [`Client::write`] splits a write by shard and sends each part straight to the shard's
//! leader, asking the node not to forward (`leader_only`): a node that does not lead the shard,
//! or that has a newer map than the client, refuses at once, and the client refreshes its map
//! and resends. Leader changes, unreachable nodes and overload are retried with exponential
//! backoff and full jitter until the retry budget (default 30 s) is spent.
//!
//! Retrying a write is safe because a point is keyed by (series, timestamp, field) and the last
//! write of a key wins: sending the same points again stores the same values. The limits of
//! that guarantee:
//! - a retry that races a *different* write of the same key may end with either value, and a
//!   retry that arrives after a newer write of the key overwrites it with the older value;
//! - a write that fails (even after its retries) may have been applied in part: some shards'
//!   parts may be stored. Resend it or accept that.
//!
//! [`BatchWriter`] buffers series for one tenant and writes them in batches, with a byte budget:
//! when it is full, [`BatchWriter::write`] waits (backpressure) or fails with
//! [`ClientError::BufferFull`], never grows.
//!
//! # Reads
//! [`Client::query`] takes a [`QueryBuilder`] and returns a typed [`QueryResult`];
//! [`Client::last`] takes a [`LastBuilder`]. Reads go to any member (which scatters them to the
//! shards) and move to another member on retryable errors. Dropping a request's future cancels
//! it; each attempt has the client's request timeout.
//!
//! ```no_run
//! # async fn demo() -> Result<(), hotlake_client::ClientError> {
//! use hotlake_client::{Aggregate, Client, QueryBuilder, SeriesBuilder};
//! let client = Client::connect(["127.0.0.1:7101", "127.0.0.1:7102"]).await?;
//! let mut s = SeriesBuilder::new("readings").tag("device_id", "truck_1");
//! s.push_f64(1_451_606_400_000_000_000, "velocity", 42.0);
//! let written = client.write("fleet", vec![s.build()]).await?;
//! assert_eq!(written.points_written, 1);
//! let mean = client
//!     .query(QueryBuilder::new("readings").tenant("fleet").field("velocity").aggregate(Aggregate::Mean)
//!         .range(1_451_606_400_000_000_000, 1_451_606_460_000_000_000))
//!     .await?;
//! println!("{:?}", mean.groups[0].rows[0].values[0]);
//! # Ok(()) }
//! ```
//!
//! # Subscriptions
//! [`Client::subscribe`] takes a [`SubscribeBuilder`] (tenant, measurement, tags, fields, and
//! where to start) and returns a [`Subscription`], a stream of every matching write in the
//! order each shard applied it. Each [`SubscriptionMessage`] carries a cursor; the stream
//! reconnects to another member on failure and resumes from the last cursor by itself, and a
//! new subscription started [`after`](SubscribeBuilder::after) a stored cursor continues
//! exactly there. Delivery is at-least-once across application restarts: to process every
//! write exactly once, store the cursor in the same transaction as what you made of the
//! message, and resume from the stored cursor.
//!
//! Runnable programs are in `client/examples/` (`cargo run -p hotlake-client --example
//! quickstart` against the local cluster of `scripts/run`).
#![warn(missing_docs, unreachable_pub)]

mod admin;
mod client;
mod cluster;
mod connections;
mod error;
mod query;
mod retry;
mod subscribe;
mod writer;

pub use admin::{
    AdminClient, ClusterPlan, ClusterStatus, InitCluster, Member, NewToken, NodeReport, NodeState, PlannedMove,
    ReplicaReport, ReplicaRole, ShardDigest, ShardPlacement, Tenant, TenantSettings, Token,
};
pub use client::{Client, ClientBuilder, EndpointHook, WriteSummary};
pub use cluster::{ClusterView, NodeView, ShardView};
pub use error::ClientError;
pub use hotlake_proto::v1 as proto;
pub use query::{
    Aggregate, Cmp, Fill, FilterValue, Group, LastBuilder, LastRow, QueryBuilder, QueryResult, Row, Value,
};
pub use retry::RetryPolicy;
pub use subscribe::{SubscribeBuilder, Subscription, SubscriptionMessage};
pub use writer::{BatchConfig, BatchStats, BatchWriter, WhenFull};

/// Builds the points of one series in columnar form.
#[derive(Clone, Debug)]
pub struct SeriesBuilder {
    series: proto::SeriesPoints,
}

impl SeriesBuilder {
    /// A series of `measurement` with no tags yet.
    pub fn new(measurement: &str) -> Self {
        SeriesBuilder { series: proto::SeriesPoints { measurement: measurement.into(), ..Default::default() } }
    }

    /// Adds a tag.
    pub fn tag(mut self, key: &str, value: &str) -> Self {
        self.series.tags.push(proto::Tag { key: key.into(), value: value.into() });
        self
    }

    /// Adds a row with one float field. Rows of several fields: call once per field with the
    /// same timestamp, or build the columns yourself with [`SeriesBuilder::raw`].
    pub fn push_f64(&mut self, timestamp_ns: i64, field: &str, value: f64) {
        self.push(timestamp_ns, field, Scalar::F64(value));
    }

    /// Adds a row with one signed integer field.
    pub fn push_i64(&mut self, timestamp_ns: i64, field: &str, value: i64) {
        self.push(timestamp_ns, field, Scalar::I64(value));
    }

    /// Adds a row with one boolean field.
    pub fn push_bool(&mut self, timestamp_ns: i64, field: &str, value: bool) {
        self.push(timestamp_ns, field, Scalar::Bool(value));
    }

    /// Adds a row with one string field.
    pub fn push_str(&mut self, timestamp_ns: i64, field: &str, value: &str) {
        self.push(timestamp_ns, field, Scalar::Str(value.to_string()));
    }

    fn push(&mut self, timestamp_ns: i64, field: &str, value: Scalar) {
        use proto::field_column::Values;
        let row = self.series.timestamps_ns.len() as u32;
        self.series.timestamps_ns.push(timestamp_ns);
        let mut value = Some(value);
        for col in &mut self.series.fields {
            let matches = col.name == field && value.as_ref().is_some_and(|v| v.fits(col.values.as_ref()));
            if matches {
                value.take().expect("checked").append_to(col.values.as_mut().expect("a column has values"));
            } else {
                col.absent_rows.push(row);
            }
        }
        if let Some(v) = value {
            let mut values = match v {
                Scalar::F64(_) => Values::F64(Default::default()),
                Scalar::I64(_) => Values::I64(Default::default()),
                Scalar::Bool(_) => Values::Bool(Default::default()),
                Scalar::Str(_) => Values::String(Default::default()),
            };
            v.append_to(&mut values);
            self.series.fields.push(proto::FieldColumn {
                name: field.into(),
                values: Some(values),
                absent_rows: (0..row).collect(),
            });
        }
    }

    /// The underlying message, for full control over columns.
    pub fn raw(&mut self) -> &mut proto::SeriesPoints {
        &mut self.series
    }

    /// The finished series.
    pub fn build(self) -> proto::SeriesPoints {
        self.series
    }
}

/// One value pushed by [`SeriesBuilder`].
enum Scalar {
    F64(f64),
    I64(i64),
    Bool(bool),
    Str(String),
}

impl Scalar {
    /// Whether a column of these values can take this scalar.
    fn fits(&self, values: Option<&proto::field_column::Values>) -> bool {
        use proto::field_column::Values;
        matches!(
            (self, values),
            (Scalar::F64(_), Some(Values::F64(_)))
                | (Scalar::I64(_), Some(Values::I64(_)))
                | (Scalar::Bool(_), Some(Values::Bool(_)))
                | (Scalar::Str(_), Some(Values::String(_)))
        )
    }

    fn append_to(self, values: &mut proto::field_column::Values) {
        use proto::field_column::Values;
        match (self, values) {
            (Scalar::F64(x), Values::F64(v)) => v.values.push(x),
            (Scalar::I64(x), Values::I64(v)) => v.values.push(x),
            (Scalar::Bool(x), Values::Bool(v)) => v.values.push(x),
            (Scalar::Str(x), Values::String(v)) => v.values.push(x),
            _ => unreachable!("checked by fits"),
        }
    }
}
