//! Rust client for Hotlake.
//!
//! ```text
//!  your app ──Client (gRPC, hotlake.v1)──► any node ──► shards
//! ```
//!
//! This release connects to one node and forwards writes, queries, `Last` and health checks;
//! the node routes to shards. Points are keyed by (series, timestamp, field) with last write
//! wins, so retrying a write whose outcome is unknown is safe: the retry rewrites the same
//! values. The limit of that guarantee: a retry that races a *different* write of the same key
//! may end with either value.
//!
//! ```no_run
//! # async fn demo() -> Result<(), hotlake_client::ClientError> {
//! use hotlake_client::{Client, SeriesBuilder};
//! let mut client = Client::connect("http://127.0.0.1:7101").await?;
//! let mut s = SeriesBuilder::new("readings").tag("device_id", "truck_1");
//! s.push_f64(1_451_606_400_000_000_000, "velocity", 42.0);
//! let written = client.write("fleet", vec![s.build()]).await?;
//! assert_eq!(written.points_written, 1);
//! # Ok(()) }
//! ```
#![warn(missing_docs, unreachable_pub)]

pub mod tsbs;

pub use hotlake_proto::v1 as proto;
use hotlake_proto::v1::hotlake_client::HotlakeClient;
use tonic::transport::Channel;

/// Errors of the client, with what to do about them.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Could not connect; check the address and that the node runs.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// Address tried.
        addr: String,
        /// Cause.
        source: tonic::transport::Error,
    },
    /// The request was wrong; fix it before retrying.
    #[error("rejected ({kind}): {message}")]
    Rejected {
        /// Stable error kind from the server.
        kind: String,
        /// The server's explanation.
        message: String,
    },
    /// The node could not serve now; retrying later is safe.
    #[error("unavailable ({kind}): {message}")]
    Retryable {
        /// Stable error kind from the server.
        kind: String,
        /// The server's explanation.
        message: String,
    },
}

impl From<tonic::Status> for ClientError {
    fn from(s: tonic::Status) -> Self {
        let kind =
            s.metadata().get("hotlake-error-kind").and_then(|v| v.to_str().ok()).unwrap_or("unknown").to_string();
        let message = s.message().to_string();
        match s.code() {
            tonic::Code::Unavailable | tonic::Code::ResourceExhausted if kind != "limit_exceeded" => {
                ClientError::Retryable { kind, message }
            }
            tonic::Code::DeadlineExceeded => ClientError::Retryable { kind, message },
            _ => ClientError::Rejected { kind, message },
        }
    }
}

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
        use proto::field_column::Values;
        let row = self.series.timestamps_ns.len() as u32;
        self.series.timestamps_ns.push(timestamp_ns);
        let mut found = false;
        for col in &mut self.series.fields {
            if col.name == field {
                if let Some(Values::F64(v)) = &mut col.values {
                    v.values.push(value);
                    found = true;
                }
            } else {
                col.absent_rows.push(row);
            }
        }
        if !found {
            self.series.fields.push(proto::FieldColumn {
                name: field.into(),
                values: Some(Values::F64(proto::DoubleValues { values: vec![value] })),
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

/// A connection to one Hotlake node.
#[derive(Clone)]
pub struct Client {
    inner: HotlakeClient<Channel>,
}

impl Client {
    /// Connects to a node's gRPC address, e.g. `http://127.0.0.1:7101`.
    pub async fn connect(addr: &str) -> Result<Self, ClientError> {
        let channel = Channel::from_shared(addr.to_string())
            .map_err(|e| ClientError::Rejected {
                kind: "invalid_argument".into(),
                message: format!("bad address {addr:?}: {e}"),
            })?
            .connect()
            .await
            .map_err(|source| ClientError::Connect { addr: addr.to_string(), source })?;
        Ok(Client { inner: HotlakeClient::new(channel).max_decoding_message_size(256 << 20) })
    }

    /// Writes series; returns after every point is committed.
    pub async fn write(
        &mut self,
        tenant: &str,
        series: Vec<proto::SeriesPoints>,
    ) -> Result<proto::WriteResponse, ClientError> {
        let req = proto::WriteRequest { tenant: tenant.into(), series };
        Ok(self.inner.write(req).await?.into_inner())
    }

    /// Runs a query.
    pub async fn query(&mut self, req: proto::QueryRequest) -> Result<proto::QueryResponse, ClientError> {
        Ok(self.inner.query(req).await?.into_inner())
    }

    /// Latest values per device.
    pub async fn last(&mut self, req: proto::LastRequest) -> Result<proto::LastResponse, ClientError> {
        Ok(self.inner.last(req).await?.into_inner())
    }

    /// The node's health.
    pub async fn health(&mut self) -> Result<proto::HealthResponse, ClientError> {
        Ok(self.inner.health(proto::HealthRequest {}).await?.into_inner())
    }
}
