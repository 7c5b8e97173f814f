//! The last Raft entry a shard's state includes, in the engine's own terms. The Raft layer
//! converts to and from openraft's types at its boundary (`raft::state_machine`), so the engine
//! names no openraft type and can be tested without one.

use serde::{Deserialize, Serialize};

/// Id of a log entry: the term and node of the leader that proposed it, and its index.
/// Laid out as openraft's `LogId` (leader term, leader node, index).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EntryId {
    /// Term of the leader that proposed the entry.
    pub term: u64,
    /// Node id of that leader.
    pub leader: u64,
    /// Position in the log (1 is the first entry).
    pub index: u64,
}

/// The group's membership as of the applied entry, encoded by the Raft layer. The engine stores
/// it with its flushed state and hands it back on restart and in snapshots; it never reads it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipRecord(pub Vec<u8>);
