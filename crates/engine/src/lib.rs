//! The time-series engine of a shard: memtable, block codec, flush and the merge reader.
//!
//! ```text
//!  batch (Raft entry payload) ─apply─► shard ─► memtable ─flush─► codec ─► blocks in the data space
//!                                        └─► index (series, postings, last values)
//!  read ─► read::read_series ─► merge(blocks, memtables) ─► Block
//! ```
//!
//! Invariants: no openraft type appears here (the Raft layer converts at its boundary); the memtable is written only from Raft apply; a block is verified when encoded
//! and its checksum when decoded.
#![warn(missing_docs, unreachable_pub)]

pub mod applied;
pub mod batch;
pub mod codec;
pub mod digest;
pub mod feed;
pub mod history;
pub mod index;
pub mod memtable;
#[cfg(test)]
mod model_test;
pub mod read;
pub mod shard;
