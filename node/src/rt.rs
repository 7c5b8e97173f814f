//! Runtime helpers that differ between production and simulation.

/// Runs CPU-heavy work off the async workers. In simulation it runs as an ordinary task so the
/// run stays deterministic and single-threaded.
#[cfg(not(madsim))]
pub fn spawn_blocking<F, R>(f: F) -> tokio::task::JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    tokio::task::spawn_blocking(f)
}

/// Runs CPU-heavy work off the async workers. In simulation it runs as an ordinary task so the
/// run stays deterministic and single-threaded.
#[cfg(madsim)]
pub fn spawn_blocking<F, R>(f: F) -> tokio::task::JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    tokio::spawn(async move { f() })
}
