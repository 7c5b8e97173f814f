//! Raft plumbing: one openraft group per shard over the node's storage engine.
//!
//! ```text
//!  router ──client_write──► openraft::Raft<TypeConfig> ──append──► log_store (log space, group commit)
//!                                         └──apply──► state_machine ──► engine::ShardData (memtable, flush)
//! ```
//!
//! Invariant: the log is the WAL. A write is acknowledged only after its entry is committed,
//! that is synced on a majority of the group's voters. The transport between replicas is
//! `cluster::transport`.

pub mod log_store;
pub mod runtime;
pub mod state_machine;
#[cfg(test)]
mod suite;

use std::io;

use openraft::BasicNode;

use crate::engine::batch::{ApplyOutcome, ShardCommand};
use crate::engine::shard::ShardSnapshot;

/// A node's id in the cluster.
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// openraft types of a shard group.
    pub TypeConfig:
        D = ShardCommand,
        R = ApplyOutcome,
        NodeId = NodeId,
        Node = BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = ShardSnapshot,
        AsyncRuntime = runtime::Runtime,
);

/// A shard group's Raft handle.
pub type ShardRaft = openraft::Raft<TypeConfig>;
/// Log id of a shard group.
pub type LogId = openraft::LogId<NodeId>;
/// Membership as stored in the state machine.
pub type StoredMembership = openraft::StoredMembership<NodeId, BasicNode>;
/// Storage error as openraft expects it.
pub type RaftStorageError = openraft::StorageError<NodeId>;

/// Wraps a storage failure for openraft (reads).
pub(crate) fn read_err(e: impl std::fmt::Display) -> RaftStorageError {
    openraft::StorageIOError::read(&io::Error::other(e.to_string())).into()
}

/// Wraps a storage failure for openraft (writes).
pub(crate) fn write_err(e: impl std::fmt::Display) -> RaftStorageError {
    openraft::StorageIOError::write(&io::Error::other(e.to_string())).into()
}
