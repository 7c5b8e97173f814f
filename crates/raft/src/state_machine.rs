//! The Raft state machine of one shard group: applies committed commands to the shard's data.
//!
//! A snapshot is the shard's flushed state. Building one flushes the memtable: the cut is taken
//! in apply order (`get_snapshot_builder`) and the blocks are written by the builder, off the
//! apply path. The log below a snapshot is then purged by openraft.

use std::sync::Arc;

use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{BasicNode, EntryPayload, OptionalSend, RaftSnapshotBuilder};

use super::{
    entry_id, log_id, membership_record, read_err, stored_membership, write_err, LogId, NodeId, RaftStorageError,
    StoredMembership, TypeConfig,
};
use hotlake_engine::batch::ApplyOutcome;
use hotlake_engine::shard::{FlushCut, FlushedState, ShardData, ShardSnapshot};

/// What the state machine reports as it applies and flushes (the node's metrics implement it),
/// so this crate depends on no metrics registry.
pub trait ApplyObserver: Send + Sync + 'static {
    /// `points` were applied from one entry.
    fn points_applied(&self, points: u64);
    /// A flush finished after `seconds`.
    fn flushed(&self, seconds: f64);
}

/// State machine of one shard group.
#[derive(Clone)]
pub struct StateMachine {
    shard: Arc<ShardData>,
    observer: Arc<dyn ApplyObserver>,
    /// Deliberate bug for the simulation's checkers: the first write entry after a restart is
    /// skipped.
    #[cfg(hotlake_bug = "skip-apply-after-restart")]
    skipped_one: Arc<std::sync::atomic::AtomicBool>,
}

impl StateMachine {
    /// The state machine over `shard`.
    pub fn new(shard: Arc<ShardData>, observer: Arc<dyn ApplyObserver>) -> Self {
        StateMachine {
            shard,
            observer,
            #[cfg(hotlake_bug = "skip-apply-after-restart")]
            skipped_one: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        }
    }
}

fn snapshot_meta(state: &FlushedState) -> Result<SnapshotMeta<NodeId, BasicNode>, RaftStorageError> {
    let last_log_id = state.applied.map(log_id);
    let snapshot_id = match last_log_id {
        Some(l) => format!("{}-{}-{}", l.leader_id, l.index, state.flush_seq),
        None => format!("--{}", state.flush_seq),
    };
    Ok(SnapshotMeta { last_log_id, last_membership: stored_membership(&state.membership)?, snapshot_id })
}

/// Flushes one memtable cut; openraft calls it off the apply path.
pub struct Flusher {
    shard: Arc<ShardData>,
    cut: Option<FlushCut>,
    observer: Arc<dyn ApplyObserver>,
}

impl RaftSnapshotBuilder<TypeConfig> for Flusher {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, RaftStorageError> {
        let cut = self.cut.take().expect("a flusher builds once");
        let started = tokio::time::Instant::now();
        // Encoding blocks is CPU work of up to seconds: off the threads that run Raft.
        let shard = self.shard.clone();
        let state = crate::runtime::spawn_blocking(move || shard.flush(cut))
            .await
            .map_err(|e| write_err(e.to_string()))?
            .map_err(write_err)?;
        self.observer.flushed(started.elapsed().as_secs_f64());
        Ok(Snapshot { meta: snapshot_meta(&state)?, snapshot: Box::new(ShardSnapshot::of_shard(self.shard.clone())) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Flusher;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), RaftStorageError> {
        let inner = self.shard.read();
        Ok((inner.applied.map(log_id), stored_membership(&inner.membership)?))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<ApplyOutcome>, RaftStorageError>
    where
        I: IntoIterator<Item = openraft::Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut out = Vec::new();
        for entry in entries {
            match entry.payload {
                EntryPayload::Blank => {
                    self.shard.apply_meta(entry_id(entry.log_id), None);
                    out.push(ApplyOutcome::default());
                }
                EntryPayload::Membership(m) => {
                    let membership = StoredMembership::new(Some(entry.log_id), m);
                    self.shard.apply_meta(entry_id(entry.log_id), Some(membership_record(&membership)));
                    out.push(ApplyOutcome::default());
                }
                EntryPayload::Normal(cmd) => {
                    #[cfg(hotlake_bug = "skip-apply-after-restart")]
                    if !self.skipped_one.swap(true, std::sync::atomic::Ordering::Relaxed) {
                        self.shard.apply_meta(entry_id(entry.log_id), None);
                        out.push(ApplyOutcome::default());
                        continue;
                    }
                    let outcome = self.shard.apply(entry_id(entry.log_id), cmd).map_err(write_err)?;
                    self.observer.points_applied(outcome.points);
                    out.push(outcome);
                }
            }
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        Flusher { shard: self.shard.clone(), cut: Some(self.shard.freeze()), observer: self.observer.clone() }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<ShardSnapshot>, RaftStorageError> {
        Ok(Box::new(ShardSnapshot::empty()))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<ShardSnapshot>,
    ) -> Result<(), RaftStorageError> {
        let shard = self.shard.clone();
        let expected = meta.last_log_id;
        // Staging and copying write the whole shard: off the runtime's threads.
        let installed = crate::runtime::spawn_blocking(move || -> Result<(), RaftStorageError> {
            snapshot.stage_into(&shard).map_err(write_err)?;
            let staged = shard.staged_flushed_state().map_err(read_err)?;
            // Checked before the shard's content is touched: a wrong snapshot changes nothing.
            if staged.applied.map(log_id) != expected {
                return Err(read_err(format!(
                    "snapshot content is at {:?} but its meta says {:?}",
                    staged.applied, expected
                )));
            }
            shard.install_staged().map_err(write_err)?;
            Ok(())
        })
        .await;
        installed.map_err(|e| write_err(e.to_string()))?
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, RaftStorageError> {
        let state = self.shard.read().flushed.clone();
        if state.flush_seq == 0 {
            return Ok(None);
        }
        Ok(Some(Snapshot {
            meta: snapshot_meta(&state)?,
            snapshot: Box::new(ShardSnapshot::of_shard(self.shard.clone())),
        }))
    }
}
