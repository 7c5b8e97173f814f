//! openraft's tokio runtime, with its timeouts raised to the floor of [`super::floor`], and its
//! tasks on a runtime of their own when the process set one ([`set_raft_runtime`]).

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use openraft::{AsyncRuntime, OptionalSend, TokioInstant, TokioRuntime};

use super::floor::stretched;

/// The runtime every openraft task of this process is spawned on, once set.
static RAFT_RUNTIME: OnceLock<tokio::runtime::Handle> = OnceLock::new();

/// Spawns every openraft task of this process from now on (each group's core, replication
/// streams and state-machine worker) onto `handle`, so request work queued on another runtime
/// never delays a heartbeat, a vote or an apply. A process runs one node: the first call wins
/// and later ones return false. Without it, openraft runs on the runtime of whoever spawns
/// (tests that run several nodes in one process).
pub fn set_raft_runtime(handle: tokio::runtime::Handle) -> bool {
    RAFT_RUNTIME.set(handle).is_ok()
}

/// The runtime Raft work runs on: the one set by [`set_raft_runtime`], else the current one.
pub fn raft_runtime() -> tokio::runtime::Handle {
    RAFT_RUNTIME.get().cloned().unwrap_or_else(tokio::runtime::Handle::current)
}

/// tokio for openraft, with every RPC timeout at least the configured floor.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct FlooredTokioRuntime;

impl AsyncRuntime for FlooredTokioRuntime {
    type JoinError = <TokioRuntime as AsyncRuntime>::JoinError;
    type JoinHandle<T: OptionalSend + 'static> = <TokioRuntime as AsyncRuntime>::JoinHandle<T>;
    type Sleep = <TokioRuntime as AsyncRuntime>::Sleep;
    type Instant = TokioInstant;
    type TimeoutError = <TokioRuntime as AsyncRuntime>::TimeoutError;
    type Timeout<R, T: Future<Output = R> + OptionalSend> = <TokioRuntime as AsyncRuntime>::Timeout<R, T>;
    type ThreadLocalRng = <TokioRuntime as AsyncRuntime>::ThreadLocalRng;
    type OneshotSender<T: OptionalSend> = <TokioRuntime as AsyncRuntime>::OneshotSender<T>;
    type OneshotReceiver<T: OptionalSend> = <TokioRuntime as AsyncRuntime>::OneshotReceiver<T>;
    type OneshotReceiverError = <TokioRuntime as AsyncRuntime>::OneshotReceiverError;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        match RAFT_RUNTIME.get() {
            Some(raft) => raft.spawn(future),
            None => TokioRuntime::spawn(future),
        }
    }

    fn sleep(duration: Duration) -> Self::Sleep {
        TokioRuntime::sleep(duration)
    }

    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        TokioRuntime::sleep_until(deadline)
    }

    fn timeout<R, F: Future<Output = R> + OptionalSend>(duration: Duration, future: F) -> Self::Timeout<R, F> {
        TokioRuntime::timeout(stretched(duration), future)
    }

    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(deadline: Self::Instant, future: F) -> Self::Timeout<R, F> {
        let floor = tokio::time::Instant::now() + stretched(Duration::ZERO);
        TokioRuntime::timeout_at(deadline.max(floor), future)
    }

    fn is_panic(join_error: &Self::JoinError) -> bool {
        TokioRuntime::is_panic(join_error)
    }

    fn thread_rng() -> Self::ThreadLocalRng {
        TokioRuntime::thread_rng()
    }

    fn oneshot<T>() -> (Self::OneshotSender<T>, Self::OneshotReceiver<T>)
    where
        T: OptionalSend,
    {
        TokioRuntime::oneshot()
    }
}
