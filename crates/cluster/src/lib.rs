//! The cluster: the map of nodes and shard placement kept by the meta group, the node-to-node
//! transport, and the control loops that move replicas.
//!
//! ```text
//!  meta group (Raft, ≤ meta_voters_max voters) ──apply──► ClusterMap on every node (watch)
//!        ▲ SetPlacement (meta leader: placement::plan)        │
//!        │ reports                                            ▼
//!  control loop on every node: open placed replicas ─► shard leaders change membership
//!                              (learner → catch up → voters replaced) ─► old replicas deleted
//!  transport: one gRPC Peer service per node, Raft RPCs multiplexed by group id, heartbeats
//!             bound for one peer sent together
//! ```
//!
//! Invariants: `map` and `placement` do no I/O; a replica is deleted only after its group's
//! leader applied a membership without it. The control loop that drives all this is the node's
//! (`node/src/control.rs`): this crate holds what it works with.
#![warn(missing_docs, unreachable_pub)]
#![allow(clippy::result_large_err)]

pub mod access;
pub mod consumers;
mod heartbeats;
pub mod leaders;
pub mod map;
pub mod meta;
pub mod placement;
pub mod transport;
