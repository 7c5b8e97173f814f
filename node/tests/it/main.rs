//! Integration tests against the real `hotlake` binary: HTTP and gRPC API behaviour, hostile
//! requests, kill -9 crash recovery, multi-node clusters (leader kills, node add and drain, full
//! restarts, a partition), every `hotlakectl` command against a real cluster, and TLS.

mod auth;
mod cluster;
mod crash;
mod ctl;
mod deploy;
mod filters;
mod grpc_api;
mod hostile;
mod http_api;
mod netns;
mod subscribe;
mod support;
mod tls;
