//! Integration tests against the real `hotlake` binary: HTTP and gRPC API behaviour, kill -9
//! crash recovery, and multi-node clusters (leader kills, node add and drain, full restarts, a partition).

mod cluster;
mod crash;
mod grpc_api;
mod http_api;
mod netns;
mod support;
