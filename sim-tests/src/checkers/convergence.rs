//! Convergence: all replicas of every shard reach the same applied index and then have the
//! same digest (see `observe::assert_replicas_identical`).

use std::time::Duration;

use crate::observe;

/// Waits for the replicas to catch up and compares their digests.
pub async fn check(addrs: &[String], replicas: usize, timeout: Duration) {
    let peers = observe::peers();
    observe::wait_converged(&peers, addrs, replicas, timeout).await;
    observe::assert_replicas_identical(&peers, addrs, timeout).await;
}
