//! The replicas this node hosts: opening and dropping shard groups, proposing to a group led
//! here, linearizable reads, digests.
//!
//! Invariant: a write is acknowledged only after its entry is committed (`propose` waits for
//! `client_write`, which returns after commit and apply).

use super::{Node, ShardGroup};
use hotlake_cluster::transport::PeerNetwork;
use hotlake_engine::batch::{ApplyOutcome, ShardCommand};
use hotlake_engine::feed::FeedRetention;
use hotlake_engine::shard::{ShardData, ShardOptions};
use hotlake_raft::log_store::LogStore;
use hotlake_raft::state_machine::StateMachine;
use hotlake_raft::ShardRaft;
use hotlake_storage::{ShardId, Space};
use hotlake_types::error::{Error, Result};
use openraft::error::{ClientWriteError, RaftError};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

impl Node {
    /// Opens (or returns) the replica of `shard` on this node. A new replica starts empty and
    /// uninitialized: the shard's leader adds it as a learner and sends it a snapshot or the log.
    /// A replica that fails to open is remembered with its error for the node's health.
    pub(crate) async fn open_group(&self, shard: ShardId) -> anyhow::Result<Arc<ShardGroup>> {
        if let Some(g) = self.groups_read().get(&shard) {
            return Ok(g.clone());
        }
        let _changing = self.replica_changes.lock().await;
        if let Some(g) = self.groups_read().get(&shard) {
            return Ok(g.clone());
        }
        let opened = self.open_group_now(shard).await;
        let mut unopened = self.unopened.lock().unwrap_or_else(|p| p.into_inner());
        match &opened {
            Ok(_) => unopened.remove(&shard),
            Err(e) => unopened.insert(shard, format!("{e:#}")),
        };
        opened
    }

    async fn open_group_now(&self, shard: ShardId) -> anyhow::Result<Arc<ShardGroup>> {
        use anyhow::Context;
        let options = ShardOptions {
            block_window_ns: self.settings().block_window_ms as i64 * 1_000_000,
            feed: FeedRetention {
                age_ms: self.config.feed.retention_s.saturating_mul(1000),
                bytes_max: self.config.feed.shard_bytes_max,
            },
            ..Default::default()
        };
        let data = Arc::new(
            ShardData::open(self.engine.clone(), shard, options).with_context(|| format!("open shard {shard}"))?,
        );
        let log_store = LogStore::new(self.engine.clone(), Space::Log(shard))
            .with_payload_bytes_max(self.config.cluster.raft_append_bytes_max as usize);
        let sm = StateMachine::new(data.clone(), self.applied_signal.clone());
        let raft = ShardRaft::new(
            self.config.node_id,
            self.shard_raft_config.clone(),
            PeerNetwork::new(self.peers.clone(), shard.0 as u64),
            log_store,
            sm,
        )
        .await
        .with_context(|| format!("start raft group of shard {shard}"))?;
        let group = Arc::new(ShardGroup {
            id: shard,
            data,
            raft,
            dirty_since: Mutex::new(None),
            joint_since: Mutex::new(None),
            snapshot_receive: tokio::sync::Mutex::new(()),
            handing_over: AtomicBool::new(false),
            proposals_in_flight: AtomicUsize::new(0),
        });
        self.groups.write().unwrap_or_else(|p| p.into_inner()).insert(shard, group.clone());
        Ok(group)
    }

    /// Stops and deletes this node's replica of `shard` (it left the group).
    pub(crate) async fn drop_group(&self, shard: ShardId) -> Result<()> {
        let _changing = self.replica_changes.lock().await;
        let group = self.groups.write().unwrap_or_else(|p| p.into_inner()).remove(&shard);
        if let Some(g) = group {
            let _ = g.raft.shutdown().await;
            // A flush or install openraft started before the shutdown may still be writing;
            // waited for off the runtime's threads (an install reopens the shard under the lock).
            let data = g.data.clone();
            hotlake_raft::runtime::spawn_blocking(move || data.close())
                .await
                .map_err(|e| Error::Internal(format!("closing the replica of {shard}: {e}")))?;
            drop(g);
            self.engine.drop_shard(shard)?;
            tracing::info!(%shard, "replica removed from this node");
        }
        Ok(())
    }

    pub(super) fn groups_read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<ShardId, Arc<ShardGroup>>> {
        self.groups.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Replicas hosted here, by shard.
    pub fn groups(&self) -> Vec<Arc<ShardGroup>> {
        self.groups_read().values().cloned().collect()
    }

    /// The replica of `shard` on this node, if any.
    pub fn local_group(&self, shard: ShardId) -> Option<Arc<ShardGroup>> {
        self.groups_read().get(&shard).cloned()
    }

    pub(super) async fn wait_for_leaders(&self, timeout: Duration) -> anyhow::Result<()> {
        for g in self.groups() {
            g.raft
                .wait(Some(timeout))
                .metrics(|m| m.current_leader.is_some(), "shard ready")
                .await
                .map_err(|e| anyhow::anyhow!("shard {} did not become ready: {e}", g.id))?;
        }
        Ok(())
    }

    /// Proposes a command on this node's replica of `shard`, which must lead the group.
    pub(crate) async fn propose_here(&self, shard: ShardId, cmd: ShardCommand) -> Result<ApplyOutcome> {
        let group = self.local_group(shard).ok_or(Error::NotLeader { shard, leader: None })?;
        if group.handing_over.load(Ordering::Relaxed) {
            return Err(Error::Unavailable(format!("leadership of shard {shard} is being handed over; retry")));
        }
        let outcome = Self::propose(&group, cmd, self.config.cluster.shard_proposals_inflight_max as usize).await?;
        group.mark_dirty();
        Ok(outcome)
    }

    pub(super) async fn propose(group: &ShardGroup, cmd: ShardCommand, proposals_max: usize) -> Result<ApplyOutcome> {
        #[cfg(hotlake_bug = "ack-before-commit")]
        if let ShardCommand::Write(w) = &cmd {
            let points = w.series.iter().map(|s| s.timestamps.len() as u64).sum();
            let raft = group.raft.clone();
            tokio::spawn(async move {
                let _ = raft.client_write(cmd).await;
            });
            return Ok(ApplyOutcome { points, ..Default::default() });
        }
        // Admission: a shard whose log is this far behind its proposals answers at once
        // instead of queueing more work behind them (the client retries after a pause).
        let in_flight = group.proposals_in_flight.fetch_add(1, Ordering::AcqRel);
        let _in_flight = InFlight(&group.proposals_in_flight);
        if in_flight >= proposals_max {
            return Err(Error::Overloaded(format!(
                "shard {} has {in_flight} proposals waiting for commit (limit cluster.shard_proposals_inflight_max)",
                group.id
            )));
        }
        match group.raft.client_write(cmd).await {
            Ok(resp) => Ok(resp.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(Error::NotLeader { shard: group.id, leader: f.leader_id })
            }
            Err(RaftError::APIError(e)) => Err(Error::Unavailable(format!("shard {}: {e}", group.id))),
            Err(RaftError::Fatal(e)) => Err(Error::Unavailable(format!("shard {} stopped: {e}", group.id))),
        }
    }

    /// Confirms this replica leads `shard` with a read-index round and waits until it has
    /// applied every entry of its log, so a read after it sees every write acknowledged before
    /// it started.
    ///
    /// openraft's read index alone is not enough: a leader that restarts before its election
    /// timeout resumes its leadership, and if the power loss took its buffered commit index with
    /// it, the read index can sit below entries it had already committed and acknowledged (found
    /// by the simulator, seed 5237). Every committed entry is in the leader's log, so waiting for
    /// the whole log closes that gap; in steady state the wait is only for in-flight writes.
    pub(crate) async fn ensure_linearizable(&self, group: &ShardGroup) -> Result<()> {
        group.raft.ensure_linearizable().await.map_err(|e| match e {
            RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(f)) => {
                Error::NotLeader { shard: group.id, leader: f.leader_id }
            }
            other => Error::Unavailable(format!("shard {}: {other}", group.id)),
        })?;
        let last = group.raft.metrics().borrow().last_log_index;
        let timeout = Duration::from_millis(self.config.limits.query_timeout_ms);
        group.raft.wait(Some(timeout)).applied_index_at_least(last, "read after the whole log").await.map_err(|e| {
            Error::Unavailable(format!("shard {} did not apply its log within {timeout:?}: {e}", group.id))
        })?;
        Ok(())
    }

    /// A digest of this node's replica of `shard` (every point of every series, merged), equal
    /// on replicas with the same content regardless of how they flushed, with the log index the
    /// content is at. Fails with `Unavailable` while entries are being applied, so a digest is
    /// never paired with an index it does not reflect.
    pub async fn shard_digest(&self, shard: ShardId) -> Result<(u64, u64)> {
        let group = self.local_group(shard).ok_or_else(|| Error::invalid(format!("no replica of {shard} here")))?;
        // Reads the whole replica: off the async workers.
        hotlake_raft::runtime::spawn_blocking(move || {
            let applied = || group.data.read().applied.map(|l| l.index).unwrap_or(0);
            let before = applied();
            let digest = hotlake_engine::digest::shard_digest(&group.data)?;
            if applied() != before {
                return Err(Error::Unavailable(format!("replica of {shard} is applying entries; retry")));
            }
            Ok((digest, before))
        })
        .await
        .map_err(|e| Error::Internal(format!("digest of {shard}: {e}")))?
    }
}

/// Counts one proposal in flight until dropped (also when the proposing future is cancelled).
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
