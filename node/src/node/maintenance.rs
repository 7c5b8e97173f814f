//! Maintenance: the flush scheduler (memtable size and age, node memory), retention, and the
//! background tasks that run them.

use super::{control, Node, ShardGroup};
use hotlake_engine::batch::ShardCommand;
use hotlake_raft::NodeId;
use hotlake_storage::ShardId;
use hotlake_types::error::{Error, Result};
use openraft::BasicNode;
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

impl Node {
    /// Flushes the memtable of one shard and waits until the flush is persisted.
    pub async fn flush_shard(&self, group: &ShardGroup, timeout: Duration) -> Result<()> {
        let applied = group.raft.metrics().borrow().last_applied;
        let Some(applied) = applied else { return Ok(()) };
        let flushed =
            |m: &openraft::RaftMetrics<NodeId, BasicNode>| m.snapshot.is_some_and(|s| s.index >= applied.index);
        if flushed(&group.raft.metrics().borrow()) {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + timeout;
        // A trigger that arrives while another flush is being built is dropped by openraft, so
        // trigger again until a flush covering `applied` is persisted.
        loop {
            group.raft.trigger().snapshot().await.map_err(|e| Error::Unavailable(e.to_string()))?;
            let waited = group.raft.wait(Some(Duration::from_secs(2))).metrics(flushed, "flush").await;
            if waited.is_ok() {
                break;
            }
            let m = group.raft.metrics().borrow().clone();
            tracing::warn!(
                shard = %group.id,
                applied = ?m.last_applied,
                snapshot = ?m.snapshot,
                state = ?m.state,
                "flush not finished yet; triggering again"
            );
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Timeout(format!(
                    "flush of shard {} did not finish in {timeout:?} (applied {:?}, last flush {:?})",
                    group.id, m.last_applied, m.snapshot
                )));
            }
        }
        let mut dirty = group.dirty_since.lock().unwrap_or_else(|p| p.into_inner());
        if group.data.read().memtable_bytes() == 0 {
            *dirty = None;
        }
        Ok(())
    }

    /// Flushes every replica (used by graceful shutdown and tests).
    pub async fn flush_all(&self) -> Result<()> {
        for g in self.groups() {
            self.flush_shard(&g, Duration::from_secs(60)).await?;
        }
        self.engine.sync()?;
        Ok(())
    }

    /// One round of the flush scheduler: flush replicas over their size or age limit, and the
    /// largest while the node is over its memory limit.
    pub async fn flush_round(&self) {
        let s = &self.config.storage;
        let mut sizes: Vec<(usize, Arc<ShardGroup>)> = self
            .groups()
            .into_iter()
            .map(|g| {
                let bytes = g.data.read().memtable_bytes();
                (bytes, g)
            })
            .collect();
        let total: usize = sizes.iter().map(|(b, _)| b).sum();
        self.metrics.memtable_bytes.store(total as u64, Ordering::Relaxed);
        self.metrics.series.store(sizes.iter().map(|(_, g)| g.data.read().index.len() as u64).sum(), Ordering::Relaxed);
        self.metrics
            .feed_stored_bytes
            .store(sizes.iter().map(|(_, g)| g.data.feed_stored_bytes()).sum(), Ordering::Relaxed);
        let mut due: HashSet<ShardId> = HashSet::new();
        let max_age = Duration::from_millis(s.memtable_age_ms_max);
        for (bytes, g) in &sizes {
            let old = g.dirty_since.lock().unwrap_or_else(|p| p.into_inner()).is_some_and(|t| t.elapsed() >= max_age);
            if *bytes as u64 >= s.shard_memtable_bytes_max || (old && *bytes > 0) {
                due.insert(g.id);
            }
        }
        if total as u64 > s.node_memtable_bytes_max {
            sizes.sort_by_key(|s| std::cmp::Reverse(s.0));
            let mut remaining = total as u64;
            for (bytes, g) in &sizes {
                if remaining <= s.node_memtable_bytes_max / 2 {
                    break;
                }
                due.insert(g.id);
                remaining = remaining.saturating_sub(*bytes as u64);
            }
        }
        for g in sizes.into_iter().map(|(_, g)| g).filter(|g| due.contains(&g.id)) {
            if let Err(e) = self.flush_shard(&g, Duration::from_secs(60)).await {
                tracing::warn!(shard = %g.id, error = %e, "flush failed");
                self.metrics.error("flush");
            }
        }
    }

    /// One round of retention: for each tenant of the map with a retention period, the leader
    /// of each shard hosted here proposes dropping what is older.
    pub async fn retention_round(&self, now_ns: i64) {
        let me = self.config.node_id;
        let map = self.map();
        for (tenant, t) in &map.tenants {
            if t.retention_s == 0 {
                continue;
            }
            // Validated to fit; saturating all the same, since a cutoff that wrapped would drop
            // the tenant's every point.
            let retention_ns = i64::try_from(t.retention_s).unwrap_or(i64::MAX).saturating_mul(1_000_000_000);
            let before_ns = now_ns.saturating_sub(retention_ns);
            for g in self.groups() {
                if g.raft.metrics().borrow().current_leader != Some(me) {
                    continue;
                }
                let window = g.data.options().block_window_ns;
                let cutoff = hotlake_engine::shard::window_start(before_ns, window);
                if cutoff <= g.data.read().retention_cutoff(tenant) {
                    continue;
                }
                let cmd = ShardCommand::Retain { tenant: tenant.clone(), before_ns };
                if let Err(e) = Self::propose(&g, cmd, usize::MAX).await {
                    tracing::warn!(shard = %g.id, tenant, error = %e, "retention not applied");
                }
            }
        }
    }

    /// Runs the flush scheduler, retention and the cluster duties (joining, reconciling
    /// replicas with the map, reporting, and on the meta leader placement) until shutdown.
    pub fn start_background(self: &Arc<Self>) {
        let node = self.clone();
        tokio::spawn(async move {
            let mut since_retention = Duration::ZERO;
            let tick = Duration::from_millis(200);
            while !node.stopping.load(Ordering::Relaxed) {
                tokio::time::sleep(tick).await;
                node.flush_round().await;
                since_retention += tick;
                if since_retention.as_millis() as u64 >= node.config.storage.retention_check_interval_ms {
                    since_retention = Duration::ZERO;
                    node.retention_round(crate::clock::now_ns()).await;
                }
            }
        });
        #[cfg(not(madsim))]
        if let Some(tls) = self.tls().cloned() {
            let node = self.clone();
            tokio::spawn(async move {
                while !node.stopping.load(Ordering::Relaxed) {
                    tokio::time::sleep(crate::tls::RELOAD_CHECK).await;
                    if let Some(to_peers) = tls.reload_if_changed() {
                        node.peers.set_tls(to_peers);
                    }
                }
            });
        }
        control::start(self.clone());
    }
}
