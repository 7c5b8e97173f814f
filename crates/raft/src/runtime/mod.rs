//! The async runtime openraft runs on: tokio in production, madsim in simulation, both with
//! openraft's RPC timeouts raised to a floor (see `floor`).

mod floor;
#[cfg(not(madsim))]
mod tokio_rt;

pub use floor::{set_rpc_timeout_floor, stretched};

#[cfg(not(madsim))]
pub use tokio_rt::{raft_runtime, set_raft_runtime};

#[cfg(not(madsim))]
/// openraft's runtime in production builds.
pub type Runtime = tokio_rt::FlooredTokioRuntime;

#[cfg(madsim)]
pub use sim::MadsimRuntime as Runtime;

#[cfg(madsim)]
mod sim;

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
