//! A Hotlake node: routes device telemetry to shards, replicates each shard's log with Raft,
//! keeps the live tail in memtables and history in compressed blocks, and answers queries by
//! merging both.
//!
//! ```text
//!   HTTP line protocol / gRPC ─► server ─► node (router) ─ring─► shard group (openraft)
//!                                               │                   │ apply
//!   query ─► server ─► node (coordinator) ─scatter─► engine::shard ◄┘ memtable ─flush─► blocks
//!                                               ◄─gather── query::exec (partials) ─► merge
//! ```
//!
//! See `ARCHITECTURE.md` at the repository root for the code map and invariants.
#![warn(missing_docs, unreachable_pub)]
// openraft's `StorageError` is large, and it is the error type its storage traits require.
#![allow(clippy::result_large_err)]

pub mod clock;
pub mod config;

#[cfg(not(madsim))]
pub mod certs;
#[cfg(not(madsim))]
pub mod log_limit;
pub mod metrics;
pub mod node;
pub mod runtimes;
pub mod server;
pub mod service;
#[cfg(not(madsim))]
pub mod systemd;
#[cfg(not(madsim))]
pub mod tls;
