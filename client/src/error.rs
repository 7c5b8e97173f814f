//! The client's errors, each saying what to do about it.

use std::time::Duration;

use hotlake_proto::errors::{self, ErrorKind};

/// Errors of the client.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// No seed address answered. Check the addresses and that the nodes run.
    #[error("cannot reach the cluster through {addrs}: {reason}; check the addresses and that the nodes run")]
    Connect {
        /// Addresses tried.
        addrs: String,
        /// Why the last one failed.
        reason: String,
    },
    /// The request is wrong; retrying it unchanged fails again. Fix it (the message says how).
    #[error("rejected ({kind}): {message}")]
    Rejected {
        /// Stable error kind from the server (`invalid_argument`, `limit_exceeded`,
        /// `partial_write`, ...).
        kind: String,
        /// The server's explanation.
        message: String,
    },
    /// The cluster could not serve the request now (leader change, node down, overload, stale
    /// map). The client retries these itself; one reaches the caller only without retries.
    #[error("unavailable ({kind}): {message}")]
    Unavailable {
        /// Stable error kind from the server (`not_leader`, `stale_map`, `unavailable`,
        /// `overloaded`, `timeout`, `transport`).
        kind: String,
        /// The explanation.
        message: String,
        /// The shard leader named by a `not_leader` answer.
        leader: Option<u64>,
    },
    /// Retries did not succeed within the retry budget. A write that ends here may or may not
    /// have been applied; resending it is safe (see the crate docs).
    #[error("gave up after {attempts} attempts in {elapsed:?} (retry budget {budget:?}); last error: {last}")]
    RetryBudgetExhausted {
        /// Attempts made.
        attempts: u32,
        /// Time spent.
        elapsed: Duration,
        /// The budget.
        budget: Duration,
        /// The last error seen.
        last: Box<ClientError>,
    },
    /// The batch writer's buffer is full and it was asked not to wait. Wait for a flush, slow
    /// down, or raise `BatchConfig::buffer_bytes_max`.
    #[error("the write buffer is full ({buffered_bytes} of {limit_bytes} bytes); flush, slow down or raise BatchConfig::buffer_bytes_max")]
    BufferFull {
        /// Bytes buffered.
        buffered_bytes: usize,
        /// The limit.
        limit_bytes: usize,
    },
    /// The batch writer was closed.
    #[error("the batch writer is closed")]
    Closed,
}

impl ClientError {
    /// Whether retrying the same request may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ClientError::Unavailable { .. })
    }

    /// The server's error kind, if the server answered.
    pub fn kind(&self) -> Option<&str> {
        match self {
            ClientError::Rejected { kind, .. } | ClientError::Unavailable { kind, .. } => Some(kind),
            ClientError::RetryBudgetExhausted { last, .. } => last.kind(),
            _ => None,
        }
    }
}

impl From<tonic::Status> for ClientError {
    fn from(s: tonic::Status) -> Self {
        let meta = |key: &str| s.metadata().get(key).and_then(|v| v.to_str().ok()).map(str::to_string);
        let message = s.message().to_string();
        let leader = meta(errors::LEADER_KEY).and_then(|v| v.parse().ok());
        let sent = meta(errors::ERROR_KIND_KEY);
        // A kind this client does not know (a newer server) is reported as sent and retried by
        // its status code.
        let known = sent.as_deref().and_then(|k| k.parse::<ErrorKind>().ok());
        let kind = match (sent, s.code()) {
            (Some(k), _) => k,
            // No kind: the request never reached Hotlake (connection refused, reset, proxy).
            (None, tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled) => {
                ErrorKind::Transport.as_str().into()
            }
            (None, tonic::Code::DeadlineExceeded) => ErrorKind::Timeout.as_str().into(),
            (None, other) => format!("{other:?}").to_lowercase(),
        };
        let retryable = match (known, s.code()) {
            (Some(k), _) => k.is_retryable(),
            (None, code) => matches!(
                code,
                tonic::Code::Unavailable
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::Aborted
                    | tonic::Code::Unknown
                    | tonic::Code::Cancelled
            ),
        };
        if retryable {
            ClientError::Unavailable { kind, message, leader }
        } else {
            ClientError::Rejected { kind, message }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: tonic::Code, kind: Option<&str>) -> tonic::Status {
        let mut s = tonic::Status::new(code, "m");
        if let Some(k) = kind {
            s.metadata_mut().insert(errors::ERROR_KIND_KEY, k.parse().unwrap());
        }
        s
    }

    #[test]
    fn errors_are_sorted_into_retry_and_fix() {
        let mut nl = status(tonic::Code::Unavailable, Some("not_leader"));
        nl.metadata_mut().insert(errors::LEADER_KEY, "3".parse().unwrap());
        match ClientError::from(nl) {
            ClientError::Unavailable { kind, leader, .. } => {
                assert_eq!((kind.as_str(), leader), ("not_leader", Some(3)))
            }
            other => panic!("{other:?}"),
        }
        assert!(ClientError::from(status(tonic::Code::FailedPrecondition, Some("stale_map"))).is_retryable());
        assert!(ClientError::from(status(tonic::Code::ResourceExhausted, Some("overloaded"))).is_retryable());
        assert!(!ClientError::from(status(tonic::Code::ResourceExhausted, Some("limit_exceeded"))).is_retryable());
        assert!(!ClientError::from(status(tonic::Code::InvalidArgument, Some("invalid_argument"))).is_retryable());
        let refused = ClientError::from(status(tonic::Code::Unavailable, None));
        assert_eq!(refused.kind(), Some("transport"));
        assert!(refused.is_retryable());
    }
}
