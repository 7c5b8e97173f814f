//! gRPC connections counted against `limits.grpc_connections_max`: one more is closed as soon
//! as it is accepted, so clients that open connections and leave them idle cannot take every
//! socket (HTTP has the same bound in `serve_http`). Not part of simulation builds, whose
//! gRPC server binds its own simulated listener.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// An accepted connection holding one of the slots; the slot frees when it closes.
pub(crate) struct Counted {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
}

/// The connections `listener` accepts, at most `max` open at once.
pub(crate) fn connections(
    listener: tokio::net::TcpListener,
    max: u64,
) -> impl futures::Stream<Item = std::io::Result<Counted>> {
    let slots = Arc::new(Semaphore::new((max as usize).clamp(1, Semaphore::MAX_PERMITS)));
    futures::stream::unfold((listener, slots), move |(listener, slots)| async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                // Out of file descriptors and the like: the listener itself is fine; go on.
                Err(e) => {
                    tracing::warn!(error = %e, "gRPC accept failed");
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                tracing::warn!(limit = max, "gRPC connection refused: limits.grpc_connections_max reached");
                continue;
            };
            let _ = stream.set_nodelay(true);
            return Some((Ok(Counted { stream, _slot: slot }), (listener, slots)));
        }
    })
}

impl tonic::transport::server::Connected for Counted {
    type ConnectInfo = <TcpStream as tonic::transport::server::Connected>::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Counted {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
