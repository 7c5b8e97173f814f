//! The node's servers: gRPC (`hotlake.v1`'s data and admin services, and the node-to-node
//! `Peer` service, on one port) and HTTP (line protocol, JSON queries and admin, health,
//! metrics). The HTTP server is not part of simulation builds.
//!
//! Invariant: only the server layer converts proto and JSON types to the node's types.

mod admin;
pub mod grpc;
#[cfg(not(madsim))]
pub mod http;
pub mod json;
pub mod peer;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;

use crate::node::Node;

/// Serves gRPC on `addr` until `shutdown` completes.
pub async fn serve_grpc(
    node: Arc<Node>,
    addr: SocketAddr,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // The generated server type differs between production and simulation builds; it is only
    // ever named here, by inference.
    let service = hotlake_proto::v1::hotlake_server::HotlakeServer::new(grpc::GrpcService::new(node.clone()))
        .max_decoding_message_size(256 << 20);
    let admin = hotlake_proto::v1::admin_server::AdminServer::new(admin::AdminService::new(node.clone()));
    let peer = hotlake_proto::internal::v1::peer_server::PeerServer::new(peer::PeerService::new(node.clone()))
        .max_decoding_message_size(256 << 20)
        .max_encoding_message_size(256 << 20);
    tonic::transport::Server::builder()
        .add_service(service)
        .add_service(admin)
        .add_service(peer)
        .serve_with_shutdown(addr, shutdown)
        .await
        .with_context(|| format!("gRPC server on {addr}"))
}

/// Serves HTTP on an already bound listener until `shutdown` completes.
#[cfg(not(madsim))]
pub async fn serve_http(
    node: Arc<Node>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    axum::serve(listener, http::router(node)).with_graceful_shutdown(shutdown).await.context("HTTP server")
}
