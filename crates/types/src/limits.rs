//! Limits on requests, named with their unit last. Every exceeded limit is a clear error naming
//! its config key (`limits.<name>`).

use serde::{Deserialize, Serialize};

/// Limits on requests. Each exceeded limit is a clear error naming the key.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Request body (after gzip decompression) bytes.
    pub body_bytes_max: u64,
    /// Bytes of write requests a node processes at once; a write that would go over waits its
    /// turn for at most `write_admission_wait_ms`, then is refused as `overloaded` (HTTP 429
    /// with Retry-After), so an overloaded node answers quickly instead of queueing into
    /// timeouts. A request larger than this is admitted when no other write is in progress.
    pub write_inflight_bytes_max: u64,
    /// Milliseconds a write may wait for room under `write_inflight_bytes_max`, in arrival
    /// order. Without a wait, a writer whose batch came while the budget was full kept being
    /// refused while others, sending again the moment theirs were answered, always found room.
    pub write_admission_wait_ms: u64,
    /// Lines per line-protocol request.
    pub lines_per_request_max: u64,
    /// Fields per line.
    pub fields_per_line_max: u64,
    /// Tags per line.
    pub tags_per_line_max: u64,
    /// Bytes of a measurement, tag key or field key.
    pub key_bytes_max: u64,
    /// Bytes of a tag value.
    pub tag_value_bytes_max: u64,
    /// Bytes of a string field value.
    pub string_value_bytes_max: u64,
    /// Series per tenant on this node.
    pub series_per_tenant_max: u64,
    /// Points a query may read.
    pub query_points_max: u64,
    /// Rows a query may return.
    pub query_rows_max: u64,
    /// Time range a query may span, in seconds.
    pub query_range_s_max: u64,
    /// Buckets a grouped query may produce per group.
    pub query_buckets_max: u64,
    /// Seconds a query may run.
    pub query_timeout_ms: u64,
    /// HTTP connections a node holds open at once; one more is closed as soon as it is
    /// accepted, so idle or slow clients cannot take every socket.
    pub http_connections_max: u64,
    /// Milliseconds a client has to send a request's headers, counted from when the node
    /// starts waiting for them (so it also closes idle kept-alive connections).
    pub http_header_read_timeout_ms: u64,
    /// gRPC connections a node holds open at once (clients and other nodes); one more is
    /// closed as soon as it is accepted.
    pub grpc_connections_max: u64,
    /// gRPC calls one connection may have open at once (HTTP/2 concurrent streams); further
    /// calls wait for a slot. Nodes multiplex their Raft traffic over one connection per pair,
    /// so this stays well above what 64 shard groups send at once.
    pub grpc_streams_per_connection_max: u64,
    /// Milliseconds a `WriteStream` may go without a message before the node ends it (what was
    /// written before stays written).
    pub write_stream_idle_ms: u64,
    /// Seconds past the receiving node's clock a point's timestamp may be (0: no bound). A
    /// point far in the future never expires and stays its device's latest value.
    pub future_s_max: u64,
}

impl Limits {
    /// The latest timestamp a point written at `now_ns` may carry.
    pub fn timestamp_ns_max(&self, now_ns: i64) -> i64 {
        if self.future_s_max == 0 {
            return i64::MAX;
        }
        let ahead = i64::try_from(self.future_s_max).unwrap_or(i64::MAX).saturating_mul(1_000_000_000);
        now_ns.saturating_add(ahead)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            body_bytes_max: 64 << 20,
            write_inflight_bytes_max: 8 << 20,
            write_admission_wait_ms: 250,
            lines_per_request_max: 500_000,
            fields_per_line_max: 1_000,
            tags_per_line_max: 256,
            key_bytes_max: 256,
            tag_value_bytes_max: 1024,
            string_value_bytes_max: 64 << 10,
            series_per_tenant_max: 10_000_000,
            query_points_max: 500_000_000,
            query_rows_max: 1_000_000,
            query_range_s_max: 10 * 366 * 86_400,
            query_buckets_max: 100_000,
            query_timeout_ms: 30_000,
            http_connections_max: 1024,
            http_header_read_timeout_ms: 10_000,
            grpc_connections_max: 1024,
            grpc_streams_per_connection_max: 1024,
            write_stream_idle_ms: 60_000,
            future_s_max: 366 * 86_400,
        }
    }
}

/// The config key of a limit named on the wire by another node (the set of limits is fixed, so
/// error values can keep `&'static str` keys).
pub fn limit_name(name: &str) -> &'static str {
    const KNOWN: [&str; 8] = [
        "limits.body_bytes_max",
        "limits.write_inflight_bytes_max",
        "limits.lines_per_request_max",
        "limits.query_buckets_max",
        "limits.query_points_max",
        "limits.query_range_s_max",
        "limits.query_rows_max",
        "limits.series_per_tenant_max",
    ];
    KNOWN.iter().find(|k| **k == name).copied().unwrap_or("limits (named in the message)")
}
