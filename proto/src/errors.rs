//! Error kinds and metadata keys of the public contract, used by the node when it answers and
//! by the client when it reads an answer: one definition for both ends of the wire.
//!
//! A failed gRPC call carries its kind in the `hotlake-error-kind` metadata key (and the HTTP
//! API in the `kind` field of its JSON error), and, for `not_leader`, the leader's node id in
//! `hotlake-leader`.

use std::fmt;
use std::str::FromStr;

/// gRPC metadata key holding an [`ErrorKind`].
pub const ERROR_KIND_KEY: &str = "hotlake-error-kind";
/// gRPC metadata key holding the id of the shard's leader, on `not_leader`.
pub const LEADER_KEY: &str = "hotlake-leader";
/// gRPC metadata and HTTP header holding the bearer token.
pub const AUTHORIZATION_KEY: &str = "authorization";

/// Why a request failed. The names are stable: clients match on them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The request itself is wrong; retrying it unchanged fails again.
    InvalidArgument,
    /// A configured limit was exceeded; the message names the config key.
    LimitExceeded,
    /// The node does not lead the shard; resend to the leader.
    NotLeader,
    /// The request was routed with an older cluster map; refresh it and resend.
    StaleMap,
    /// The node is over a memory or queue bound; retry shortly.
    Overloaded,
    /// The shard or node cannot serve right now; retry.
    Unavailable,
    /// The request ran out of time.
    Timeout,
    /// Part of a write was rejected while the rest was written.
    PartialWrite,
    /// Storage failed.
    Storage,
    /// A bug or an unexpected state.
    Internal,
    /// The request carries no token, or one the cluster does not know (revoked, mistyped).
    Unauthenticated,
    /// The token is known but its scopes do not allow this request.
    PermissionDenied,
    /// What the request names (a tenant, a token) does not exist.
    NotFound,
    /// A subscription's cursor is older than the change feed still kept; the message names
    /// the oldest cursor served. Resuming needs a newer start (`now`, a later cursor).
    CursorExpired,
    /// The request never reached Hotlake (connection refused or reset): only the client
    /// reports this kind.
    Transport,
}

impl ErrorKind {
    /// Every kind, in declaration order.
    pub const ALL: [ErrorKind; 15] = [
        ErrorKind::InvalidArgument,
        ErrorKind::LimitExceeded,
        ErrorKind::NotLeader,
        ErrorKind::StaleMap,
        ErrorKind::Overloaded,
        ErrorKind::Unavailable,
        ErrorKind::Timeout,
        ErrorKind::PartialWrite,
        ErrorKind::Storage,
        ErrorKind::Internal,
        ErrorKind::Unauthenticated,
        ErrorKind::PermissionDenied,
        ErrorKind::NotFound,
        ErrorKind::CursorExpired,
        ErrorKind::Transport,
    ];

    /// The stable name on the wire, for example `not_leader`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidArgument => "invalid_argument",
            ErrorKind::LimitExceeded => "limit_exceeded",
            ErrorKind::NotLeader => "not_leader",
            ErrorKind::StaleMap => "stale_map",
            ErrorKind::Overloaded => "overloaded",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Timeout => "timeout",
            ErrorKind::PartialWrite => "partial_write",
            ErrorKind::Storage => "storage",
            ErrorKind::Internal => "internal",
            ErrorKind::Unauthenticated => "unauthenticated",
            ErrorKind::PermissionDenied => "permission_denied",
            ErrorKind::NotFound => "not_found",
            ErrorKind::CursorExpired => "cursor_expired",
            ErrorKind::Transport => "transport",
        }
    }

    /// Whether resending the same request may succeed: the failure was about where or when
    /// it was sent, not about what it holds.
    pub const fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::NotLeader
                | ErrorKind::StaleMap
                | ErrorKind::Overloaded
                | ErrorKind::Unavailable
                | ErrorKind::Timeout
                | ErrorKind::Transport
        )
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ErrorKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ErrorKind::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| format!("unknown error kind {s:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kind's name parses back to that kind, and names are distinct.
    #[test]
    fn names_round_trip() {
        for k in ErrorKind::ALL {
            assert_eq!(k.as_str().parse::<ErrorKind>(), Ok(k));
        }
        let names: std::collections::BTreeSet<_> = ErrorKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(names.len(), ErrorKind::ALL.len());
        assert!("nonsense".parse::<ErrorKind>().is_err());
    }
}
