//! The meta group: a Raft group over up to `cluster.meta_voters_max` voters (every other node is
//! a learner) whose state machine is the [`ClusterMap`]. Every node applies the same commands
//! and so holds the same map; changes are published on a watch channel.
//!
//! The applied state (map, applied log id, membership) is small: it is rewritten whole after
//! each applied batch into the node meta space, and a snapshot is that state encoded.

use std::io;
use std::sync::{Arc, Mutex};

use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{BasicNode, EntryPayload, OptionalSend, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};

use super::consumers::{ConsumerGroup, ConsumerGroups};
use super::map::{ClusterMap, MetaCommand, NodeInfo};
use hotlake_raft::{read_err, write_err, LogId, NodeId, RaftStorageError, StoredMembership};
use hotlake_storage::{Durability, Engine, Space, WriteBatch};

openraft::declare_raft_types!(
    /// openraft types of the meta group.
    pub MetaTypeConfig:
        D = MetaCommand,
        R = MetaOutcome,
        NodeId = NodeId,
        Node = BasicNode,
        Entry = openraft::Entry<MetaTypeConfig>,
        SnapshotData = MetaSnapshot,
        AsyncRuntime = hotlake_raft::runtime::Runtime,
);

/// The meta group's Raft handle.
pub type MetaRaft = openraft::Raft<MetaTypeConfig>;

/// What applying a meta command did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaOutcome {
    /// Why the command was rejected (the map is unchanged), if it was.
    pub rejected: Option<String>,
    /// Map version after the command.
    pub version: u64,
}

/// Snapshot data of the meta group: the encoded [`MetaState`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetaSnapshot(pub Vec<u8>);

/// Everything the meta state machine holds.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MetaState {
    /// Last applied log id.
    pub applied: Option<LogId>,
    /// Last applied membership of the meta group.
    pub membership: StoredMembership,
    /// The map.
    pub map: ClusterMap,
    /// Consumer groups' committed positions.
    pub consumers: ConsumerGroups,
}

/// The state as nodes before consumer groups wrote it: read once, then rewritten in the
/// current form by the next apply.
#[derive(Deserialize)]
struct MetaStateBeforeConsumers {
    applied: Option<LogId>,
    membership: StoredMembership,
    map: ClusterMap,
}

/// Decodes a persisted or snapshotted [`MetaState`], in the current form or the one before.
fn decode_state(bytes: &[u8]) -> bincode::Result<MetaState> {
    bincode::deserialize::<MetaState>(bytes).or_else(|current| {
        match bincode::deserialize::<MetaStateBeforeConsumers>(bytes) {
            Ok(old) => Ok(MetaState {
                applied: old.applied,
                membership: old.membership,
                map: old.map,
                consumers: ConsumerGroups::default(),
            }),
            Err(_) => Err(current),
        }
    })
}

const META_STATE_KEY: &[u8] = b"cluster_state";

/// The meta state machine. Cloning shares the state.
#[derive(Clone)]
pub struct MetaStateMachine {
    engine: Engine,
    state: Arc<Mutex<MetaState>>,
    published: Arc<tokio::sync::watch::Sender<Arc<ClusterMap>>>,
}

impl MetaStateMachine {
    /// Loads the applied state from `engine` (empty on a new node).
    pub fn open(engine: Engine) -> Result<Self, hotlake_storage::StorageError> {
        let state: MetaState = match engine.get(Space::NodeMeta, META_STATE_KEY)? {
            Some(bytes) => decode_state(&bytes).map_err(|e| hotlake_storage::StorageError::Corrupt {
                space: Space::NodeMeta.name(),
                reason: format!("cluster state: {e}"),
            })?,
            None => MetaState::default(),
        };
        let (tx, _) = tokio::sync::watch::channel(Arc::new(state.map.clone()));
        Ok(MetaStateMachine { engine, state: Arc::new(Mutex::new(state)), published: Arc::new(tx) })
    }

    /// The current map.
    pub fn map(&self) -> Arc<ClusterMap> {
        self.published.borrow().clone()
    }

    /// Follows map changes.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<Arc<ClusterMap>> {
        self.published.subscribe()
    }

    /// A consumer group's committed positions, as this node has applied them.
    pub fn consumer_group(&self, tenant: &str, group: &str) -> Option<ConsumerGroup> {
        self.lock().consumers.get(tenant, group).cloned()
    }

    /// The consumer groups of a tenant, by name.
    pub fn consumer_groups(&self, tenant: &str) -> Vec<(String, ConsumerGroup)> {
        self.lock().consumers.of_tenant(tenant)
    }

    /// Every consumer group: (tenant, name, positions per shard).
    pub fn all_consumer_groups(&self) -> Vec<(String, String, Vec<u64>)> {
        self.lock().consumers.all().map(|(t, n, g)| (t.to_string(), n.to_string(), g.positions.clone())).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MetaState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn persist(&self, state: &MetaState) -> Result<(), RaftStorageError> {
        let mut b = WriteBatch::new();
        b.put(Space::NodeMeta, META_STATE_KEY.to_vec(), bincode::serialize(state).map_err(write_err)?);
        // Ordered after the log entries it reflects; a crash that loses it replays them.
        self.engine.write(b, Durability::Buffered).map_err(write_err)
    }

    fn snapshot_of(state: &MetaState) -> Result<Snapshot<MetaTypeConfig>, RaftStorageError> {
        let snapshot_id = match state.applied {
            Some(l) => format!("meta-{}-{}", l.leader_id, l.index),
            None => "meta-empty".into(),
        };
        Ok(Snapshot {
            meta: SnapshotMeta { last_log_id: state.applied, last_membership: state.membership.clone(), snapshot_id },
            snapshot: Box::new(MetaSnapshot(bincode::serialize(state).map_err(read_err)?)),
        })
    }
}

/// A node joining as `info` must not be a voter of the meta group with another disk: a voter
/// that lost its vote and log could elect a leader that lacks committed entries. Such a node
/// waits until the meta leader has removed it from the voters (which follows its removal from
/// the map).
fn may_vote_again(state: &MetaState, info: &NodeInfo) -> Result<(), String> {
    let same_disk = state
        .map
        .nodes
        .get(&info.id)
        .is_some_and(|known| known.incarnation == 0 || known.incarnation == info.incarnation);
    if !same_disk && state.membership.membership().voter_ids().any(|v| v == info.id) {
        return Err(format!(
            "node {} is still a voter of the meta group with its old data directory; remove it first \
             (`hotlakectl node remove {}`) and retry once it is out of the meta group, or start it with a new node id",
            info.id, info.id
        ));
    }
    Ok(())
}

impl RaftSnapshotBuilder<MetaTypeConfig> for MetaStateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<MetaTypeConfig>, RaftStorageError> {
        let state = self.lock().clone();
        Self::snapshot_of(&state)
    }
}

impl RaftStateMachine<MetaTypeConfig> for MetaStateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), RaftStorageError> {
        let s = self.lock();
        Ok((s.applied, s.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<MetaOutcome>, RaftStorageError>
    where
        I: IntoIterator<Item = openraft::Entry<MetaTypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut out = Vec::new();
        let snapshot = {
            let mut s = self.lock();
            for entry in entries {
                s.applied = Some(entry.log_id);
                let mut outcome = MetaOutcome::default();
                match entry.payload {
                    EntryPayload::Blank => {}
                    EntryPayload::Membership(m) => s.membership = StoredMembership::new(Some(entry.log_id), m),
                    EntryPayload::Normal(MetaCommand::Consumers(cmd)) => {
                        let shard_count = s.map.shard_count;
                        if let Err(reason) = s.consumers.apply(&cmd, shard_count) {
                            outcome.rejected = Some(reason);
                        }
                    }
                    EntryPayload::Normal(cmd) => {
                        let checked = match &cmd {
                            MetaCommand::AddNode(info) => may_vote_again(&s, info),
                            _ => Ok(()),
                        };
                        if let Err(reason) = checked.and_then(|()| s.map.apply(&cmd)) {
                            outcome.rejected = Some(reason);
                        }
                    }
                }
                outcome.version = s.map.version;
                out.push(outcome);
            }
            s.clone()
        };
        self.persist(&snapshot)?;
        if snapshot.map.version != self.published.borrow().version {
            self.published.send_replace(Arc::new(snapshot.map));
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<MetaSnapshot>, RaftStorageError> {
        Ok(Box::new(MetaSnapshot::default()))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<MetaSnapshot>,
    ) -> Result<(), RaftStorageError> {
        let state: MetaState = decode_state(&snapshot.0).map_err(read_err)?;
        if state.applied != meta.last_log_id {
            return Err(read_err(io::Error::other(format!(
                "meta snapshot content is at {:?} but its meta says {:?}",
                state.applied, meta.last_log_id
            ))));
        }
        self.persist(&state)?;
        let map = state.map.clone();
        *self.lock() = state;
        self.published.send_replace(Arc::new(map));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<MetaTypeConfig>>, RaftStorageError> {
        let state = self.lock().clone();
        if state.applied.is_none() {
            return Ok(None);
        }
        Ok(Some(Self::snapshot_of(&state)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consumers::ConsumerCommand;

    #[test]
    fn state_written_before_consumer_groups_is_still_read_and_the_current_form_round_trips() {
        let map = ClusterMap { version: 7, ..Default::default() };
        // The earlier form: the same fields, without the consumer groups after them.
        let old = bincode::serialize(&(None::<LogId>, StoredMembership::default(), &map)).unwrap();
        let state = decode_state(&old).unwrap();
        assert_eq!(state.map.version, 7);
        assert_eq!(state.consumers, ConsumerGroups::default());

        let mut state = state;
        let create = ConsumerCommand::Create { tenant: "t".into(), group: "g".into(), positions: vec![3] };
        state.consumers.apply(&create, 1).unwrap();
        let back = decode_state(&bincode::serialize(&state).unwrap()).unwrap();
        assert_eq!(back.consumers.get("t", "g").unwrap().positions, vec![3]);
        assert!(decode_state(b"\x01garbage").is_err());
    }
}
