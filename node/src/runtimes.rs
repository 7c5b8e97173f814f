//! The node's two runtimes. Request work (client APIs, queries, forwarded calls, the control
//! loop and maintenance) runs on the main runtime; Raft (every group's core, replication and
//! apply, and the peer listener that feeds them) on a runtime of its own, so a queue of request
//! work never delays a heartbeat, a vote or an apply: overload shows as refused writes, never as
//! leader churn.
//!
//! ```text
//!   main runtime:  HTTP, gRPC, queries, control loop ──propose──► │ raft runtime: openraft tasks,
//!                  forwarded calls ◄──────────hop────────────── │ peer listener, apply
//! ```
//!
//! The simulator runs everything on its one deterministic runtime: there these are no-ops.

use std::future::Future;

#[cfg(not(madsim))]
static REQUESTS: std::sync::OnceLock<tokio::runtime::Handle> = std::sync::OnceLock::new();

/// Makes `raft` the runtime of every openraft task and of [`spawn_raft`], and `requests` that of
/// [`on_request_runtime`]. Called once by the `hotlake serve` process before its node opens.
#[cfg(not(madsim))]
pub fn install(requests: tokio::runtime::Handle, raft: tokio::runtime::Handle) {
    hotlake_raft::runtime::set_raft_runtime(raft);
    let _ = REQUESTS.set(requests);
}

/// Spawns `future` on the Raft runtime (the current one when none was installed).
pub fn spawn_raft<F>(future: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    #[cfg(not(madsim))]
    return hotlake_raft::runtime::raft_runtime().spawn(future);
    #[cfg(madsim)]
    return tokio::spawn(future);
}

/// Runs request work that arrived on the Raft runtime (a call forwarded by a peer) on the
/// request runtime, and waits for it there. A panic in it panics here, as if run inline.
pub async fn on_request_runtime<F>(future: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    #[cfg(not(madsim))]
    {
        if let Some(requests) = REQUESTS.get() {
            return match requests.spawn(future).await {
                Ok(output) => output,
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(e) => panic!("request work cancelled: {e}"),
            };
        }
    }
    future.await
}
