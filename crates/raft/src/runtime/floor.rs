//! The floor under openraft's RPC timeouts. openraft 0.9 gives an `AppendEntries` the heartbeat
//! interval to complete (100 ms by default) and a vote the election timeout. On a busy node a
//! request that takes longer is abandoned and sent again whole; with 64 groups lagging at once
//! their retries alone kept both cores busy, every request missed its deadline, and the
//! cluster never caught up even with no client traffic. The runtimes stretch any timeout
//! openraft asks for up to this floor (`cluster.raft_rpc_timeout_ms`), so replication is given
//! time to finish, while heartbeats stay frequent enough for fast failover.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Milliseconds; 0 until a node sets it.
static FLOOR_MS: AtomicU64 = AtomicU64::new(0);

/// Sets the floor for every Raft group of this process (all nodes of a process share their
/// configuration, and so this value).
pub fn set_rpc_timeout_floor(floor: Duration) {
    FLOOR_MS.store(floor.as_millis().min(u64::MAX as u128) as u64, Ordering::Relaxed);
}

/// `requested`, or the floor if that is longer. The network layer applies it to the deadline
/// openraft hands each RPC (`RPCOption::hard_ttl`, the heartbeat interval for appends): a
/// transport that used that deadline as it is would cut every append at the heartbeat interval
/// whatever the runtime allows.
pub fn stretched(requested: Duration) -> Duration {
    requested.max(Duration::from_millis(FLOOR_MS.load(Ordering::Relaxed)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shorter timeouts are raised to the floor; longer ones are kept.
    #[test]
    fn timeouts_are_raised_to_the_floor_only() {
        set_rpc_timeout_floor(Duration::from_secs(2));
        assert_eq!(stretched(Duration::from_millis(100)), Duration::from_secs(2));
        assert_eq!(stretched(Duration::from_secs(60)), Duration::from_secs(60));
    }
}
