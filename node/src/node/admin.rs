//! Admin: the operations behind the cluster, node and shard commands (status, join, drain,
//! remove, move, leader hand-over) and the answers to calls from other nodes.

use super::{control, Node};
use openraft::error::{ClientWriteError, RaftError};
use openraft::ServerState;
use serde::{Deserialize, Serialize};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use hotlake_cluster::map::{ClusterMap, MetaCommand, NodeInfo, NodeState};
use hotlake_cluster::placement::{plan, PlanInput};
use hotlake_cluster::transport::{NodeStatus, PeerCall, PeerReply, ReplicaStatus};
use hotlake_raft::NodeId;
use hotlake_storage::ShardId;
use hotlake_types::error::{Error, Result};

/// A hand-over starts refusing writes only once its target is at most this many entries
/// behind the leader's log, so the refusal lasts about the lease, not a catch-up.
const HANDOVER_LAG_MAX: u64 = 64;

/// How long a hand-over waits, with writes still flowing, for its target to come that close.
const HANDOVER_CATCH_UP_TIME: Duration = Duration::from_secs(5);

impl Node {
    /// Proposes a meta command on the meta leader; from another node the command is forwarded
    /// once. Returns the map version after it.
    pub(crate) async fn propose_meta(&self, cmd: MetaCommand, forwarded: bool) -> Result<u64> {
        match self.meta.client_write(cmd.clone()).await {
            Ok(r) => match r.data.rejected {
                Some(reason) => Err(Error::invalid(reason)),
                None => Ok(r.data.version),
            },
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                let Some(leader) = f.leader_node.filter(|_| !forwarded) else {
                    return Err(Error::Unavailable("the meta group has no leader right now; retry".into()));
                };
                match self.peers.call(&leader.addr, &PeerCall::Meta(cmd), self.peers.options().call_timeout).await? {
                    PeerReply::MapVersion(v) => Ok(v),
                    other => Err(Error::Internal(format!("unexpected reply to a meta command: {other:?}"))),
                }
            }
            Err(e) => Err(Error::Unavailable(format!("meta group: {e}"))),
        }
    }

    /// Answers a call from another node.
    pub async fn handle_call(&self, call: PeerCall) -> Result<PeerReply> {
        match call {
            PeerCall::Write { shard, write } => {
                if self.stopping.load(Ordering::Relaxed) {
                    return Err(Error::Unavailable("node is shutting down".into()));
                }
                self.check_forwarded_write(shard, &write)?;
                let outcome = self.propose_here(shard, hotlake_engine::batch::ShardCommand::Write(write)).await?;
                Ok(PeerReply::Written(outcome))
            }
            PeerCall::Query { shard, query, points_budget } => {
                Ok(PeerReply::Answer(self.query_here(shard, Arc::new(query), points_budget).await?))
            }
            PeerCall::Last { shard, query } => Ok(PeerReply::LastRows(self.last_here(shard, &query).await?)),
            PeerCall::Join(info) => {
                let map = self.map();
                if !map.is_bootstrapped() {
                    return Err(Error::Unavailable("this node has not joined a cluster itself".into()));
                }
                Ok(PeerReply::MapVersion(self.propose_meta(MetaCommand::AddNode(info), false).await?))
            }
            PeerCall::Meta(cmd) => Ok(PeerReply::MapVersion(self.propose_meta(cmd, true).await?)),
            PeerCall::Report(r) => {
                if self.meta.metrics().borrow().current_leader != Some(self.config.node_id) {
                    return Err(Error::Unavailable("not the meta leader".into()));
                }
                control::record_report(self, r);
                Ok(PeerReply::Ack)
            }
            PeerCall::Map => Ok(PeerReply::Map((*self.map()).clone())),
            PeerCall::Status => Ok(PeerReply::Status(self.status())),
            PeerCall::FeedRead { shard, after, filter, max_points } => {
                let max_points = max_points.min(u64::from(self.config.feed.read_points_max)) as usize;
                let read = self.feed_read_here(shard, after, &filter, max_points).await?;
                let entries = read.entries.into_iter().map(|e| (e.index, Arc::unwrap_or_clone(e.write))).collect();
                Ok(PeerReply::Feed { entries, through: read.through })
            }
            PeerCall::Consumer(call) => Ok(PeerReply::Consumer(self.coordinate(call).await?)),
            PeerCall::History { shard, filter, since, max_points } => {
                let max_points = max_points.min(self.config.limits.query_rows_max) as usize;
                let (index, write) = self.history_here(shard, &filter, since, max_points).await?;
                Ok(PeerReply::History { index, write })
            }
            PeerCall::Digest { shard } => {
                let (digest, applied) = self.shard_digest(shard).await?;
                Ok(PeerReply::Digest { digest, applied })
            }
            PeerCall::TransferLeader { shard, to } => {
                self.hand_over_leadership(shard, to).await?;
                Ok(PeerReply::Ack)
            }
            PeerCall::Elect { shard } => {
                let g = self.local_group(shard).ok_or(Error::NotLeader { shard, leader: None })?;
                g.raft.trigger().elect().await.map_err(|e| Error::Unavailable(format!("{shard}: {e}")))?;
                Ok(PeerReply::Ack)
            }
            PeerCall::Group { shard } => {
                let g = self.local_group(shard).ok_or(Error::NotLeader { shard, leader: None })?;
                match control::group_report(&g, self.config.node_id) {
                    Some(r) => Ok(PeerReply::Group(r)),
                    None => Err(Error::NotLeader { shard, leader: g.raft.metrics().borrow().current_leader }),
                }
            }
        }
    }

    /// A write forwarded by another node gets the checks of the public path it skipped: every
    /// series well formed and owned by `shard` on the ring. Nothing is proposed otherwise.
    fn check_forwarded_write(&self, shard: ShardId, write: &hotlake_engine::batch::ShardWrite) -> Result<()> {
        let ring = self.ring()?;
        let mut problems = Vec::new();
        for s in &write.series {
            let key = hotlake_engine::batch::shown(&s.key);
            if let Err(why) = s.check() {
                problems.push(format!("series {key}: {why}"));
            } else if ring.shard_of(&write.tenant, &s.device) != shard {
                problems.push(format!("series {key}: its device belongs to another shard than {shard}"));
            }
        }
        if problems.is_empty() {
            return Ok(());
        }
        Err(Error::InvalidArgument {
            message: format!(
                "forwarded write refused: {} malformed series (the first: {}); nothing was written",
                problems.len(),
                problems[0]
            ),
            details: problems.into_iter().take(100).collect(),
        })
    }

    /// This node's view of itself and its replicas.
    pub fn status(&self) -> NodeStatus {
        let replicas = self
            .groups()
            .iter()
            .map(|g| {
                let m = g.raft.metrics().borrow().clone();
                let role = match m.state {
                    ServerState::Leader => "leader",
                    ServerState::Follower => "follower",
                    ServerState::Candidate => "candidate",
                    ServerState::Learner => "learner",
                    ServerState::Shutdown => "stopped",
                };
                let membership = m.membership_config.membership();
                let joint = membership.get_joint_config();
                ReplicaStatus {
                    shard: g.id,
                    role: role.into(),
                    leader: m.current_leader,
                    voters: joint.last().map(|c| c.iter().copied().collect()).unwrap_or_default(),
                    joint: joint.len() > 1,
                    applied: m.last_applied.map(|l| l.index).unwrap_or(0),
                    flushed: g.data.read().flushed.applied.map(|l| l.index).unwrap_or(0),
                    memtable_bytes: g.data.read().memtable_bytes() as u64,
                }
            })
            .collect();
        NodeStatus {
            node: self.config.node_id,
            map_version: self.map().version,
            meta_leader: self.meta.metrics().borrow().current_leader,
            replicas,
        }
    }

    /// The map and every member's status (a member that does not answer within two seconds
    /// is shown as unreachable).
    pub async fn cluster_status(&self) -> ClusterStatus {
        let map = self.map();
        let asks = map.nodes.values().map(|n| async move {
            let status = if n.id == self.config.node_id {
                Ok(self.status())
            } else {
                match self.peers.call(&n.peer_addr, &PeerCall::Status, Duration::from_secs(2)).await {
                    Ok(PeerReply::Status(s)) => Ok(s),
                    Ok(other) => Err(format!("unexpected reply {other:?}")),
                    Err(e) => Err(e.to_string()),
                }
            };
            MemberStatus { info: n.clone(), status: status.as_ref().ok().cloned(), error: status.err() }
        });
        let members = futures::future::join_all(asks).await;
        ClusterStatus { map: (*map).clone(), members }
    }

    /// Sets a node's state: `Draining` moves its replicas away and keeps it a member,
    /// `Removing` moves them away and then removes it, `Active` makes it take replicas again.
    pub async fn set_node_state(&self, id: NodeId, state: NodeState) -> Result<u64> {
        self.propose_meta(MetaCommand::SetNodeState { node: id, state }, false).await
    }

    /// Moves `shard`'s replica from node `from` to node `to` (the planner keeps replica counts
    /// balanced, so it may later move another shard back to `from`).
    pub async fn move_replica(&self, shard: ShardId, from: NodeId, to: NodeId) -> Result<u64> {
        let map = self.map();
        let p = map.shards.get(shard.0 as usize).ok_or_else(|| Error::invalid(format!("no shard {shard}")))?;
        if !p.replicas.contains(&from) {
            return Err(Error::invalid(format!("{shard} has no replica on node {from} (replicas {:?})", p.replicas)));
        }
        if p.replicas.contains(&to) {
            return Err(Error::invalid(format!("{shard} already has a replica on node {to}")));
        }
        match map.nodes.get(&to) {
            Some(n) if n.state == NodeState::Active => {}
            Some(n) => return Err(Error::invalid(format!("node {to} is {}; it takes no replicas", n.state.name()))),
            None => return Err(Error::invalid(format!("node {to} is not a member"))),
        }
        let replicas = p.replicas.iter().map(|&n| if n == from { to } else { n }).collect();
        self.propose_meta(MetaCommand::SetPlacement { shard, replicas, epoch: p.epoch }, false).await
    }

    /// Moves the leadership of `shard` to voter `to`, from whichever node leads it now.
    pub async fn transfer_leader(&self, shard: ShardId, to: NodeId) -> Result<()> {
        let map = self.map();
        if shard.0 as usize >= map.shards.len() {
            return Err(Error::invalid(format!("no shard {shard}; the cluster has {} shards", map.shards.len())));
        }
        if !map.replicas(shard).contains(&to) {
            return Err(Error::invalid(format!("node {to} holds no replica of {shard}; it cannot lead it")));
        }
        self.route(shard, |target| async move {
            if target == self.config.node_id {
                self.hand_over_leadership(shard, to).await
            } else {
                match self.call_node(target, &PeerCall::TransferLeader { shard, to }).await? {
                    PeerReply::Ack => Ok(()),
                    other => Err(Error::Internal(format!("unexpected reply to a leader transfer: {other:?}"))),
                }
            }
        })
        .await
    }

    /// Hands this node's leadership of `shard` to voter `to`. openraft 0.9 has no leader
    /// transfer, and a follower's election loses to the leader's lease while the leader keeps
    /// replicating, so: wait, with writes still flowing, until `to` is close behind the log;
    /// then stop taking proposals and heartbeats, wait until `to` has the whole log, let the
    /// lease run out (`raft_election_timeout_max_ms`), and ask `to` to stand. Writes to the
    /// shard are refused (and retried by clients) only from the second step on, for about the
    /// lease; a target that is far behind fails the hand-over before any write is refused.
    pub(super) async fn hand_over_leadership(&self, shard: ShardId, to: NodeId) -> Result<()> {
        let me = self.config.node_id;
        let g = self.local_group(shard).ok_or(Error::NotLeader { shard, leader: None })?;
        let m = g.raft.metrics().borrow().clone();
        if m.state != ServerState::Leader {
            return Err(Error::NotLeader { shard, leader: m.current_leader });
        }
        if to == me {
            return Ok(());
        }
        if !m.membership_config.membership().voter_ids().any(|v| v == to) {
            return Err(Error::invalid(format!("node {to} is not a voter of {shard}; it cannot lead it")));
        }
        let lease = Duration::from_millis(self.config.cluster.raft_election_timeout_max_ms());
        let lag_of_target = || {
            let m = g.raft.metrics().borrow().clone();
            let last = m.last_log_index.unwrap_or(0);
            let matched = m.replication.as_ref().and_then(|r| r.get(&to).cloned().flatten()).map(|l| l.index);
            matched.map(|i| last.saturating_sub(i))
        };
        let deadline = Instant::now() + HANDOVER_CATCH_UP_TIME;
        while lag_of_target().is_none_or(|lag| lag > HANDOVER_LAG_MAX) {
            if Instant::now() >= deadline {
                return Err(Error::Unavailable(format!("node {to} is too far behind {shard}'s log to take it over")));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        g.handing_over.store(true, Ordering::Relaxed);
        g.raft.runtime_config().heartbeat(false);
        let result = async {
            let deadline = Instant::now() + lease;
            while lag_of_target() != Some(0) {
                if Instant::now() >= deadline {
                    return Err(Error::Unavailable(format!("node {to} did not catch up with {shard}'s log in time")));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            tokio::time::sleep(lease + Duration::from_millis(100)).await;
            match self.call_node(to, &PeerCall::Elect { shard }).await? {
                PeerReply::Ack => {}
                other => return Err(Error::Internal(format!("unexpected reply to an election request: {other:?}"))),
            }
            let deadline = Instant::now() + lease * 2;
            loop {
                if g.raft.metrics().borrow().current_leader == Some(to) {
                    return Ok(());
                }
                if Instant::now() >= deadline {
                    return Err(Error::Unavailable(format!("node {to} did not win the election of {shard}; retry")));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        .await;
        g.raft.runtime_config().heartbeat(true);
        g.handing_over.store(false, Ordering::Relaxed);
        if result.is_ok() {
            tracing::info!(%shard, to, "leadership handed over");
        }
        result
    }

    /// The placement changes still needed to reach the target placement, as the planner would
    /// make them with every member considered up and no move limit.
    pub fn pending_moves(&self) -> Vec<hotlake_cluster::placement::Move> {
        let mut map = (*self.map()).clone();
        let live = map.nodes.keys().copied().collect();
        let input = PlanInput { live, in_flight: Default::default(), moves_max: usize::MAX };
        let mut all = Vec::new();
        // Each round settles what the previous one changed; a placement converges in a few.
        for _ in 0..64 {
            let round = plan(&map, &input);
            if round.is_empty() {
                break;
            }
            for mv in round {
                let cmd = MetaCommand::SetPlacement { shard: mv.shard, replicas: mv.replicas.clone(), epoch: mv.epoch };
                if map.apply(&cmd).is_ok() {
                    all.push(mv);
                }
            }
        }
        all
    }

    /// Creates the cluster on this node if it has none (`cluster.bootstrap = "manual"`).
    /// Returns the cluster id, whether this call created it and, when this call made up the
    /// first admin token, its secret (shown this once).
    pub async fn init_cluster(&self) -> Result<(u64, bool, Option<String>)> {
        let map = self.map();
        if map.is_bootstrapped() {
            return Ok((map.cluster_id, false, None));
        }
        let initialized = self.meta.is_initialized().await.map_err(|e| Error::Internal(e.to_string()))?;
        if initialized {
            return Err(Error::Unavailable("this node is joining a cluster already; retry on a member".into()));
        }
        self.raft_open.store(true, Ordering::Relaxed);
        let secret = self.bootstrap().await.map_err(|e| Error::Unavailable(format!("bootstrap failed: {e:#}")))?;
        Ok((self.map().cluster_id, true, secret))
    }

    /// Adds a node to the map by hand (it still has to run with the same id and addresses).
    pub async fn add_node(&self, info: NodeInfo) -> Result<u64> {
        self.propose_meta(MetaCommand::AddNode(info), false).await
    }
}

/// One member as `cluster status` shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MemberStatus {
    /// The map entry.
    pub info: NodeInfo,
    /// What the node said about itself.
    pub status: Option<NodeStatus>,
    /// Why it did not answer.
    pub error: Option<String>,
}

/// The answer of `cluster status`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// The map as the answering node applied it.
    pub map: ClusterMap,
    /// Every member.
    pub members: Vec<MemberStatus>,
}
