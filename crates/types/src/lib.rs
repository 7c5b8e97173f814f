//! Hotlake's pure types: ids, the data model, the ring and the hash maps the engine keys by
//! series. Nothing here does I/O or awaits, so every crate above can use it and test it with
//! plain unit tests.
//!
//! ```text
//!   types ◄── storage ◄── engine ◄── raft ◄── cluster ◄── node
//!     ▲                     ▲
//!     └── ingest, query ────┘
//! ```
//!
//! Invariant: no I/O, no async, no clock.
#![warn(missing_docs, unreachable_pub)]

pub mod error;
pub mod filter;
pub mod hash;
pub mod limits;
pub mod model;
pub mod ring;

pub use error::{Error, Result};

use std::fmt;

/// A node's id in the cluster (openraft's node id type).
pub type NodeId = u64;

/// A shard's id: its index on the ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct ShardId(pub u32);

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s{}", self.0)
    }
}
