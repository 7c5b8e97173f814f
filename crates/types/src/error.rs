//! The error type at crate boundaries below the servers. The gRPC and HTTP layers map it to
//! status codes in one place each (`server::grpc::to_status`, `server::http::to_response`), and
//! its kinds are the stable ones of the public contract (`hotlake_proto::errors::ErrorKind`).

use hotlake_proto::errors::ErrorKind;

use crate::{NodeId, ShardId};

/// Errors a request can end with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request itself is wrong; retrying it unchanged fails again.
    #[error("{message}")]
    InvalidArgument {
        /// What is wrong.
        message: String,
        /// One entry per offending line, field or value.
        details: Vec<String>,
    },
    /// A configured limit was exceeded; the message names the config key.
    #[error("{message} (limit {limit})")]
    LimitExceeded {
        /// The config key of the limit.
        limit: &'static str,
        /// What exceeded it.
        message: String,
    },
    /// This node does not lead the shard.
    #[error("shard {shard} is not led by this node (leader: {leader:?})")]
    NotLeader {
        /// The shard.
        shard: ShardId,
        /// The current leader, when known.
        leader: Option<NodeId>,
    },
    /// The client routed with an older cluster map than this node's; refresh it and resend.
    #[error(
        "the request was routed with cluster map version {client}, this node has {current}; refresh the map and resend"
    )]
    StaleMap {
        /// The client's map version.
        client: u64,
        /// This node's map version.
        current: u64,
    },
    /// Memtables are over their hard limit; retry after a short wait.
    #[error("node overloaded: {0}; retry shortly")]
    Overloaded(String),
    /// The shard or node cannot serve right now; retry.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The request ran out of time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// Part of a write was rejected while the rest was written.
    #[error("{written_points} points written; rejected: {}", rejected.join("; "))]
    PartialWrite {
        /// Points that were written and acknowledged.
        written_points: u64,
        /// Why the rest was rejected.
        rejected: Vec<String>,
    },
    /// Storage failed (the storage error's message; `hotlake-storage` converts its errors).
    #[error("storage: {0}")]
    Storage(String),
    /// A bug or an unexpected state.
    #[error("internal error: {0}")]
    Internal(String),
    /// No token, or one the cluster does not know.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The token's scopes do not allow the request.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// What the request names does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// A subscription cursor older than the feed kept (the message names the oldest served).
    #[error("cursor expired: {0}")]
    CursorExpired(String),
}

impl Error {
    /// The stable kind of the public contract.
    pub fn error_kind(&self) -> ErrorKind {
        match self {
            Error::InvalidArgument { .. } => ErrorKind::InvalidArgument,
            Error::LimitExceeded { .. } => ErrorKind::LimitExceeded,
            Error::NotLeader { .. } => ErrorKind::NotLeader,
            Error::StaleMap { .. } => ErrorKind::StaleMap,
            Error::Overloaded(_) => ErrorKind::Overloaded,
            Error::Unavailable(_) => ErrorKind::Unavailable,
            Error::Timeout(_) => ErrorKind::Timeout,
            Error::PartialWrite { .. } => ErrorKind::PartialWrite,
            Error::Storage(_) => ErrorKind::Storage,
            Error::Internal(_) => ErrorKind::Internal,
            Error::Unauthenticated(_) => ErrorKind::Unauthenticated,
            Error::PermissionDenied(_) => ErrorKind::PermissionDenied,
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::CursorExpired(_) => ErrorKind::CursorExpired,
        }
    }

    /// A stable, machine-readable kind (also the `kind` label of `hotlake_errors_total`).
    pub fn kind(&self) -> &'static str {
        self.error_kind().as_str()
    }

    /// Shorthand for an invalid argument without details.
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::InvalidArgument { message: message.into(), details: Vec::new() }
    }
}

/// Result with the node's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
