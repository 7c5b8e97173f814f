//! Hotlake's public gRPC contract, package `hotlake.v1` (the data service `Hotlake` and the
//! operations service `Admin`), as generated Rust types, with the error kinds, metadata keys and
//! device-key rule both sides of the wire share.
//!
//! ```text
//!  hotlake.proto, admin.proto ──(build.rs, vendored protoc)──► v1::{messages, hotlake_*, admin_*}
//! ```
//!
//! Other crates never name the generated server type directly: the node wraps it behind one
//! function because its shape differs between production and simulation builds.
#![allow(missing_docs, clippy::all)]

pub mod errors;
mod json;
pub mod routing;

/// Generated code for `hotlake.v1`.
pub mod v1 {
    tonic::include_proto!("hotlake.v1");
}

/// Generated code for the node-to-node protocol (`hotlake.internal.v1`); not a public API.
pub mod internal {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("hotlake.internal.v1");
    }
}
