//! Raft plumbing: one openraft group per shard over the node's storage engine.
//!
//! ```text
//!  router ──client_write──► openraft::Raft<TypeConfig> ──append──► log_store (log space, group commit)
//!                                         └──apply──► state_machine ──► engine::ShardData (memtable, flush)
//! ```
//!
//! Invariant: the log is the WAL. A write is acknowledged only after its entry is committed,
//! that is synced on a majority of the group's voters. The transport between replicas is
//! `cluster::transport`. The engine below names no openraft type: `entry_id` and `log_id`
//! convert at this boundary.
#![warn(missing_docs, unreachable_pub)]
// openraft's `StorageError` is large, and it is the error type its storage traits require.
#![allow(clippy::result_large_err)]

pub mod log_store;
pub mod runtime;
pub mod state_machine;
#[cfg(test)]
mod suite;

use std::io;

use openraft::BasicNode;

use hotlake_engine::applied::{EntryId, MembershipRecord};
use hotlake_engine::batch::{ApplyOutcome, ShardCommand};
use hotlake_engine::shard::ShardSnapshot;

pub use hotlake_types::NodeId;

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

/// The engine's id of a log entry (the engine names no openraft type).
pub fn entry_id(log_id: LogId) -> EntryId {
    EntryId { term: log_id.leader_id.term, leader: log_id.leader_id.node_id, index: log_id.index }
}

/// openraft's id of an entry the engine recorded.
pub fn log_id(entry: EntryId) -> LogId {
    openraft::LogId::new(openraft::CommittedLeaderId::new(entry.term, entry.leader), entry.index)
}

/// A membership as the engine stores it beside its flushed state.
pub fn membership_record(membership: &StoredMembership) -> MembershipRecord {
    MembershipRecord(bincode::serialize(membership).expect("a membership serializes"))
}

/// The membership the engine stored (empty: none applied yet). Bytes that do not decode are
/// corrupt data, reported as an error.
pub fn stored_membership(record: &MembershipRecord) -> Result<StoredMembership, RaftStorageError> {
    if record.0.is_empty() {
        return Ok(StoredMembership::default());
    }
    bincode::deserialize(&record.0).map_err(|e| read_err(format!("stored membership does not decode: {e}")))
}

/// Wraps a storage failure for openraft (reads).
pub fn read_err(e: impl std::fmt::Display) -> RaftStorageError {
    openraft::StorageIOError::read(&io::Error::other(e.to_string())).into()
}

/// Wraps a storage failure for openraft (writes).
pub fn write_err(e: impl std::fmt::Display) -> RaftStorageError {
    openraft::StorageIOError::write(&io::Error::other(e.to_string())).into()
}
