//! Integration tests against the real `hotlake` binary: HTTP API behaviour and kill -9 crash
//! recovery.

mod crash;
mod grpc_api;
mod http_api;
mod support;
