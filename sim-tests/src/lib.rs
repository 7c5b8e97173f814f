//! Deterministic simulation of Hotlake nodes under madsim.
//!
//! ```text
//!  madsim runtime (one thread, simulated clock, network and randomness from the seed)
//!    ├─ node hosts 10.0.0.N: hotlake_node::Node on MemEngine, gRPC via madsim-tonic
//!    └─ client host 10.0.1.1: writers and readers recording what was acknowledged, a
//!       subscriber recording what it was given, observers reading the map, replica status
//!       and digests through the Peer service
//! ```
//!
//! Build and run with `RUSTFLAGS="--cfg madsim"` and a target directory of its own (see
//! `scripts/test`). Every test prints its seed; `MADSIM_TEST_SEED=N` replays it.
#![warn(missing_docs)]

#[cfg(madsim)]
pub mod checkers;
#[cfg(madsim)]
pub mod faults;
#[cfg(madsim)]
pub mod harness;
#[cfg(madsim)]
pub mod observe;
#[cfg(madsim)]
pub mod subscriber;
#[cfg(madsim)]
pub mod workload;
