//! The node's servers: public gRPC (`hotlake.v1`'s data and admin services), the node-to-node
//! `Peer` service on a listener of its own, and HTTP (line protocol, JSON queries and admin,
//! health, metrics). The HTTP server and TLS are not part of simulation builds.
//!
//! Invariant: only the server layer converts proto and JSON types to the node's types.

mod admin;
mod auth;
#[cfg(not(madsim))]
mod counted;
pub mod grpc;
#[cfg(not(madsim))]
pub mod http;
pub mod json;
pub mod peer;
#[cfg(not(madsim))]
mod sse;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::node::Node;

/// Where a gRPC server listens: a socket the caller bound (non-blocking), so that a node is
/// announced ready only once every listener takes connections. Simulated servers bind their
/// address themselves (madsim-tonic serves an address, not a socket).
#[cfg(not(madsim))]
pub type Listener = std::net::TcpListener;
/// Where a gRPC server listens (simulation: its address).
#[cfg(madsim)]
pub type Listener = SocketAddr;

/// Binds `addr` for [`serve_grpc`] or [`serve_peer`]; `what` names the listener in the error.
#[cfg(not(madsim))]
pub fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<Listener> {
    let listener = std::net::TcpListener::bind(addr).with_context(|| format!("bind {what} on {addr}"))?;
    listener.set_nonblocking(true).with_context(|| format!("{what} listener on {addr}"))?;
    Ok(listener)
}

/// Serves the public gRPC API (the data and admin services) on `listener` until `shutdown`
/// completes. It never serves `Peer`: see [`serve_peer`].
pub async fn serve_grpc(
    node: Arc<Node>,
    listener: Listener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // The generated server types differ between production and simulation builds; they are
    // only ever named here, by inference.
    let service = hotlake_proto::v1::hotlake_server::HotlakeServer::new(grpc::GrpcService::new(node.clone()))
        .max_decoding_message_size(256 << 20);
    let admin = hotlake_proto::v1::admin_server::AdminServer::new(admin::AdminService::new(node.clone()));
    let limits = node.config().limits.clone();
    let router = grpc_server(&limits).add_service(service).add_service(admin);
    #[cfg(madsim)]
    let (addr, served) = (listener, router.serve_with_shutdown(listener, shutdown).await);
    #[cfg(not(madsim))]
    let (addr, served) = {
        let addr = listener.local_addr().context("gRPC listener")?;
        let listener = tokio::net::TcpListener::from_std(listener).context("gRPC listener")?;
        let tls = node.tls().map(|t| t.grpc.clone());
        let served = router
            .serve_with_incoming_shutdown(
                counted::connections(listener, limits.grpc_connections_max, tls, "gRPC"),
                shutdown,
            )
            .await;
        (addr, served)
    };
    served.with_context(|| format!("gRPC server on {addr}"))
}

/// Serves the node-to-node `Peer` service (Raft, snapshots, forwarded calls, joins) on
/// `listener` until `shutdown` completes. With TLS configured, only a client presenting a
/// certificate of the cluster's CA gets past the handshake (mutual TLS).
pub async fn serve_peer(
    node: Arc<Node>,
    listener: Listener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let peer = hotlake_proto::internal::v1::peer_server::PeerServer::new(peer::PeerService::new(node.clone()))
        .max_decoding_message_size(256 << 20)
        .max_encoding_message_size(256 << 20);
    let limits = node.config().limits.clone();
    let router = grpc_server(&limits).add_service(peer);
    #[cfg(madsim)]
    let (addr, served) = (listener, router.serve_with_shutdown(listener, shutdown).await);
    #[cfg(not(madsim))]
    let (addr, served) = {
        let addr = listener.local_addr().context("peer listener")?;
        // Made a tokio listener here, on the runtime that serves it (the Raft one).
        let listener = tokio::net::TcpListener::from_std(listener).context("peer listener")?;
        let tls = node.tls().map(|t| t.peer.clone());
        let served = router
            .serve_with_incoming_shutdown(
                counted::connections(listener, limits.grpc_connections_max, tls, "peer"),
                shutdown,
            )
            .await;
        (addr, served)
    };
    served.with_context(|| format!("peer server on {addr}"))
}

/// A gRPC server builder with the node's connection limits.
fn grpc_server(limits: &hotlake_types::limits::Limits) -> tonic::transport::Server {
    // HTTP/2 keepalive pings find clients that vanished without closing (their calls would
    // otherwise hold memory); the pending-reset bound stops a client that opens and cancels
    // streams in a loop; the connection bound (`counted`) stops one that opens sockets and
    // leaves them idle.
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .max_concurrent_streams(limits.grpc_streams_per_connection_max.min(u32::MAX as u64) as u32)
        .http2_max_pending_accept_reset_streams(Some(64))
}

/// Serves HTTP on an already bound listener until `shutdown` completes, then lets requests in
/// flight finish (for up to [`HTTP_DRAIN`]).
///
/// Its own accept loop rather than `axum::serve`, for two limits a server on a shared network
/// needs: at most `limits.http_connections_max` connections (one more is closed as soon as it
/// is accepted) and `limits.http_header_read_timeout_ms` to send a request's headers (which
/// also closes kept-alive connections left idle), so slow or idle clients cannot hold every
/// socket.
#[cfg(not(madsim))]
pub async fn serve_http(
    node: Arc<Node>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let limits = node.config().limits.clone();
    let tls = node.tls().map(|t| t.http.clone());
    let router = http::router(node);
    let slots = Arc::new(tokio::sync::Semaphore::new(
        (limits.http_connections_max as usize).clamp(1, tokio::sync::Semaphore::MAX_PERMITS),
    ));
    let header_timeout = std::time::Duration::from_millis(limits.http_header_read_timeout_ms);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            // Out of file descriptors and the like: the listener itself is fine; go on.
            Err(e) => {
                tracing::warn!(error = %e, "HTTP accept failed");
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(
                limit = limits.http_connections_max,
                "HTTP connection refused: limits.http_connections_max reached"
            );
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let (tls, watcher) = (tls.clone(), graceful.watcher());
        tokio::spawn(async move {
            // The handshake (when TLS is on) runs here, off the accept loop, under its own
            // timeout; the header-read timeout starts after it.
            let Some(conn) = counted::Conn::accept(stream, tls.as_deref(), "HTTP").await else { return };
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(conn), service);
            let _ = watcher.watch(connection).await;
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(HTTP_DRAIN, graceful.shutdown()).await.is_err() {
        tracing::warn!("HTTP requests still in flight after {} s; closing them", HTTP_DRAIN.as_secs());
    }
    Ok(())
}

/// How long a stopping node waits for HTTP requests in flight.
#[cfg(not(madsim))]
pub const HTTP_DRAIN: std::time::Duration = std::time::Duration::from_secs(30);
