//! Accepted connections, counted against a limit and, where TLS is configured, past their TLS
//! handshake. One more connection than the limit is closed as soon as it is accepted, so
//! clients that open connections and leave them idle cannot take every socket; a handshake
//! runs in its own task under [`HANDSHAKE_TIMEOUT`], so a client that stalls in it holds one
//! slot and nothing else. Not part of simulation builds, whose gRPC servers bind their own
//! simulated listeners.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::tls::{ServerTls, HANDSHAKE_TIMEOUT};

/// An accepted connection, plaintext or TLS.
pub(crate) enum Conn {
    /// Where no TLS is configured.
    Plain(TcpStream),
    /// Past the handshake.
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl Conn {
    fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(s) => s.get_ref().0,
        }
    }

    /// Completes the TLS handshake on `stream` when `tls` is given; `None` (logged) when the
    /// client does not finish it in time or fails it (a plaintext client, an unknown
    /// certificate on the peer listener).
    pub(crate) async fn accept(stream: TcpStream, tls: Option<&ServerTls>, listener: &'static str) -> Option<Conn> {
        let Some(tls) = tls else { return Some(Conn::Plain(stream)) };
        let peer = stream.peer_addr().ok();
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.acceptor().accept(stream)).await {
            Ok(Ok(s)) => Some(Conn::Tls(Box::new(s))),
            Ok(Err(e)) => {
                tracing::debug!(listener, ?peer, error = %e, "TLS handshake failed; connection closed");
                None
            }
            Err(_) => {
                tracing::debug!(listener, ?peer, "TLS handshake not finished in time; connection closed");
                None
            }
        }
    }
}

/// An accepted connection holding one of the slots; the slot frees when it closes.
pub(crate) struct Counted {
    conn: Conn,
    _slot: OwnedSemaphorePermit,
}

/// The connections `listener` accepts, at most `max` open at once, past their TLS handshake
/// when `tls` is given.
pub(crate) fn connections(
    listener: tokio::net::TcpListener,
    max: u64,
    tls: Option<Arc<ServerTls>>,
    name: &'static str,
) -> impl futures::Stream<Item = std::io::Result<Counted>> {
    let slots = Arc::new(Semaphore::new((max as usize).clamp(1, Semaphore::MAX_PERMITS)));
    let (ready_tx, ready_rx) = tokio::sync::mpsc::channel::<std::io::Result<Counted>>(64);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                // The server stopped: stop accepting.
                () = ready_tx.closed() => return,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                // Out of file descriptors and the like: the listener itself is fine; go on.
                Err(e) => {
                    tracing::warn!(listener = name, error = %e, "accept failed");
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                tracing::warn!(listener = name, limit = max, "connection refused: limits.grpc_connections_max reached");
                continue;
            };
            let _ = stream.set_nodelay(true);
            let (tls, ready_tx) = (tls.clone(), ready_tx.clone());
            tokio::spawn(async move {
                if let Some(conn) = Conn::accept(stream, tls.as_deref(), name).await {
                    let _ = ready_tx.send(Ok(Counted { conn, _slot: slot })).await;
                }
            });
        }
    });
    futures::stream::unfold(ready_rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) })
}

impl tonic::transport::server::Connected for Counted {
    type ConnectInfo = <TcpStream as tonic::transport::server::Connected>::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.conn.tcp().connect_info()
    }
}

impl AsyncRead for Conn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s) => s.is_write_vectored(),
            Conn::Tls(s) => s.is_write_vectored(),
        }
    }
}

impl AsyncRead for Counted {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.conn).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.conn).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.conn).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.conn).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.conn).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.conn.is_write_vectored()
    }
}
