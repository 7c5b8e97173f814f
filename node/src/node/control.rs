//! Cluster control loops and the handling of calls from other nodes.
//!
//! Every node, each `cluster.reconcile_interval_ms`:
//! 1. joins through `cluster.join` until the map lists it;
//! 2. opens a replica for every shard the map places on it;
//! 3. for each group it leads, moves the group's membership towards the placement: add the new
//!    node as a learner, and once every new member has caught up, replace the voters
//!    (openraft's joint consensus), dropping the old ones;
//! 4. deletes a replica the map no longer places here once the group's leader has applied a
//!    membership without it (never earlier: a voter that lost its data could break quorums);
//! 5. reports the groups it leads to the meta leader (which doubles as its heartbeat).
//!
//! The meta leader also keeps the meta group's membership in line with the map (voters up to
//! `cluster.meta_voters_max`, everyone else a learner), plans placement (`placement::plan`)
//! from the reports, and removes drained nodes.

use super::{Node, ShardGroup};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use openraft::{BasicNode, ChangeMembers, ServerState};
use tokio::time::Instant;

use hotlake_cluster::leaders::rebalance;
use hotlake_cluster::map::{ClusterMap, MetaCommand, NodeState};
use hotlake_cluster::placement::{plan, PlanInput};
use hotlake_cluster::transport::{GroupReport, NodeReport, PeerCall, PeerReply};
use hotlake_raft::NodeId;
use hotlake_storage::ShardId;
use hotlake_types::error::{Error, Result};

/// A learner whose matched log index is within this many entries of the leader's last one
/// counts as caught up.
const CATCH_UP_ENTRIES_MAX: u64 = 1000;

/// Reports older than this are ignored when planning.
const REPORT_FRESH_FOR: Duration = Duration::from_secs(10);

/// How long the balancer leaves a shard alone after a failed leader hand-over.
const HANDOVER_RETRY_AFTER: Duration = Duration::from_secs(30);

/// What the meta leader remembers between rounds. Rebuilt from scratch when another node
/// becomes meta leader.
#[derive(Default)]
pub(crate) struct MetaDuties {
    leader_since: Option<Instant>,
    seen: BTreeMap<NodeId, Instant>,
    reports: BTreeMap<ShardId, (GroupReport, Instant)>,
    /// The leader of each shard as its last report named it.
    leaders: BTreeMap<ShardId, (NodeId, Instant)>,
    /// When the last leader hand-overs finished: only reports after it show their effect.
    balanced_at: Option<Instant>,
    /// Shards whose last hand-over failed, and when: left alone for `HANDOVER_RETRY_AFTER`,
    /// so a target that cannot take a shard over does not get asked again every round.
    handover_failed: BTreeMap<ShardId, Instant>,
}

/// Starts the control loop.
pub(super) fn start(node: Arc<Node>) {
    tokio::spawn(async move {
        let interval = Duration::from_millis(node.config.cluster.reconcile_interval_ms);
        while !node.stopping.load(Ordering::Relaxed) {
            tokio::time::sleep(interval).await;
            if let Err(e) = join_if_needed(&node).await {
                tracing::info!(error = %e, "not joined yet; retrying");
                continue;
            }
            reconcile_replicas(&node).await;
            report(&node).await;
            if leads_as_voter(&node.meta.metrics().borrow(), node.config.node_id) {
                meta_leader_round(&node).await;
            } else {
                node.meta_duties.lock().unwrap_or_else(|p| p.into_inner()).leader_since = None;
            }
        }
    });
}

/// Whether `me` leads the group and is one of its voters. A leader that committed its own
/// removal stays leader inside openraft until it hands over, but a membership change asked of
/// it then trips openraft's invariant (found by the simulator: a drained meta leader that
/// removed itself was asked to promote a voter); only a voting leader changes membership.
fn leads_as_voter(m: &openraft::RaftMetrics<NodeId, BasicNode>, me: NodeId) -> bool {
    m.state == ServerState::Leader
        && m.current_leader == Some(me)
        && m.membership_config.membership().voter_ids().any(|v| v == me)
}

async fn join_if_needed(node: &Node) -> Result<()> {
    let me = node.self_info();
    let map = node.map();
    node.peers.set_cluster_id(map.cluster_id);
    if map.nodes.get(&me.id).is_some_and(|n| {
        n.grpc_addr == me.grpc_addr
            && n.http_addr == me.http_addr
            && n.peer_addr == me.peer_addr
            && n.incarnation == me.incarnation
    }) {
        node.was_member.store(true, Ordering::Relaxed);
        return Ok(());
    }
    if node.was_member.load(Ordering::Relaxed) {
        // Removed after being a member (drained on purpose): stay out; the process can be
        // stopped. The map remembers this data directory's incarnation, so it is refused
        // after a restart too; an empty data directory joins as a new node.
        if !node.removed_noticed.swap(true, Ordering::Relaxed) {
            tracing::warn!("this node was removed from the cluster; it will not join again until restarted");
        }
        return Ok(());
    }
    if node.config.cluster.join.is_empty() {
        // A bootstrapped node whose entry is being applied; nothing to ask anyone.
        return Ok(());
    }
    let mut last = None;
    for seed in &node.config.cluster.join {
        // A node configured against the cluster's settings would route and cut blocks its
        // own way: it stays out and says what to set.
        if let Ok(PeerReply::Map(theirs)) =
            node.peers.call(seed, &PeerCall::Map, node.peers.options().call_timeout).await
        {
            if let Some(why) = theirs.is_bootstrapped().then(|| node.config.contradiction(&theirs.settings)).flatten() {
                tracing::error!(seed, "{why}");
                return Err(Error::invalid(why));
            }
        }
        match node.peers.call(seed, &PeerCall::Join(me.clone()), node.peers.options().call_timeout).await {
            Ok(_) => {
                node.raft_open.store(true, Ordering::Relaxed);
                tracing::info!(seed, "joined; waiting for the cluster map");
                return Err(Error::Unavailable("join accepted, map not replicated here yet".into()));
            }
            Err(refused @ Error::InvalidArgument { .. }) => {
                // The cluster refused this node as it is (for example: it lost its disk while
                // replicas are still placed on it). Say so loudly; retry, as the operator may
                // be fixing it.
                tracing::warn!(seed, reason = %refused, "the cluster refused to let this node join");
                return Err(refused);
            }
            Err(e) => last = Some(format!("{seed}: {e}")),
        }
    }
    Err(Error::Unavailable(format!("no seed accepted the join ({})", last.unwrap_or_default())))
}

async fn reconcile_replicas(node: &Node) {
    let map = node.map();
    if !map.is_bootstrapped() {
        return;
    }
    let me = node.config.node_id;
    let placed: BTreeSet<ShardId> = map.shards_on(me).into_iter().collect();
    for &shard in &placed {
        if node.local_group(shard).is_none() {
            if let Err(e) = node.open_group(shard).await {
                tracing::warn!(%shard, error = %e, "cannot open a replica placed here");
            }
        }
    }
    let work = node.groups().into_iter().map(|g| {
        // Watched every round, so health can tell a change that is stuck from one under way.
        g.note_joint(g.raft.metrics().borrow().membership_config.membership().get_joint_config().len() > 1);
        let map = map.clone();
        let placed = placed.contains(&g.id);
        async move {
            // A leader removed from its group steps down to learner but may keep naming
            // itself as the leader it last knew; only a replica in the leader state drives.
            let leading = leads_as_voter(&g.raft.metrics().borrow(), me);
            if leading {
                let target: BTreeSet<NodeId> = map.replicas(g.id).iter().copied().collect();
                if let Err(e) = drive_membership(&g, &target, &map).await {
                    tracing::info!(shard = %g.id, error = %e, "membership change not done yet");
                }
            } else if !placed {
                maybe_drop(node, &g).await;
            }
        }
    });
    futures::future::join_all(work).await;
}

/// Moves one group's membership one step towards `target`.
async fn drive_membership(g: &ShardGroup, target: &BTreeSet<NodeId>, map: &ClusterMap) -> Result<()> {
    if target.is_empty() {
        return Ok(());
    }
    let m = g.raft.metrics().borrow().clone();
    let membership = m.membership_config.membership().clone();
    if membership.get_joint_config().len() > 1 {
        return finish_inherited_joint(&g.raft, &m).await;
    }
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    let learners: BTreeSet<NodeId> = membership.learner_ids().collect();
    for &n in target.difference(&voters).filter(|n| !learners.contains(n)) {
        let Some(addr) = map.peer_addr(n) else { continue };
        g.raft.add_learner(n, BasicNode { addr: addr.to_string() }, false).await.map_err(write_error)?;
        tracing::info!(shard = %g.id, node = n, "added a learner");
    }
    if &voters != target {
        let last = m.last_log_index.unwrap_or(0);
        let matched =
            |n: &NodeId| m.replication.as_ref().and_then(|r| r.get(n).cloned().flatten()).map(|l| l.index).unwrap_or(0);
        let behind: Vec<NodeId> = target
            .iter()
            .copied()
            .filter(|n| !voters.contains(n) && matched(n) + CATCH_UP_ENTRIES_MAX < last)
            .collect();
        if !behind.is_empty() {
            return Err(Error::Unavailable(format!("learners {behind:?} are catching up")));
        }
        g.raft.change_membership(ChangeMembers::ReplaceAllVoters(target.clone()), false).await.map_err(write_error)?;
        tracing::info!(shard = %g.id, voters = ?target, "voters replaced");
        return Ok(());
    }
    let stray: BTreeSet<NodeId> = learners.difference(target).copied().collect();
    if !stray.is_empty() {
        g.raft.change_membership(ChangeMembers::RemoveNodes(stray.clone()), false).await.map_err(write_error)?;
        tracing::info!(shard = %g.id, removed = ?stray, "learners removed");
    }
    Ok(())
}

/// The leader that starts a membership change finishes its joint phase itself. A leader
/// elected in the middle inherits the joint config and nobody finishes it, which would block
/// every later change of the group; once the joint config is committed here, finish it with
/// the config the change was heading for.
async fn finish_inherited_joint<C>(raft: &openraft::Raft<C>, m: &openraft::RaftMetrics<NodeId, BasicNode>) -> Result<()>
where
    C: openraft::RaftTypeConfig<
        NodeId = NodeId,
        Node = BasicNode,
        Responder = openraft::raft::responder::OneshotResponder<C>,
    >,
{
    let committed = m.membership_config.log_id().map(|l| l.index) <= m.last_applied.map(|l| l.index);
    let Some(last) = m.membership_config.membership().get_joint_config().last() else { return Ok(()) };
    if committed {
        let next: BTreeSet<NodeId> = last.iter().copied().collect();
        raft.change_membership(ChangeMembers::ReplaceAllVoters(next.clone()), false).await.map_err(write_error)?;
        tracing::info!(voters = ?next, "finished a joint membership left by an earlier leader");
    }
    Ok(())
}

pub(super) fn write_error<E: std::fmt::Display>(e: E) -> Error {
    Error::Unavailable(e.to_string())
}

/// Deletes this node's replica of a shard the map no longer places here, once the group's
/// leader has applied a membership without this node.
async fn maybe_drop(node: &Node, g: &ShardGroup) {
    let me = node.config.node_id;
    let shard = g.id;
    let report = node
        .route(shard, |target| async move {
            if target == node.config.node_id {
                return Err(Error::NotLeader { shard, leader: None });
            }
            match node.call_node(target, &PeerCall::Group { shard }).await? {
                PeerReply::Group(r) => Ok(r),
                other => Err(Error::Internal(format!("unexpected reply: {other:?}"))),
            }
        })
        .await;
    match report {
        Ok(r) if r.membership_applied && !r.voters.contains(&me) && !r.learners.contains(&me) => {
            if let Err(e) = node.drop_group(shard).await {
                tracing::warn!(%shard, error = %e, "cannot delete the replica");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::debug!(%shard, error = %e, "leader not reachable; keeping the replica"),
    }
}

/// The group report of a replica that leads its group.
pub(super) fn group_report(g: &ShardGroup, me: NodeId) -> Option<GroupReport> {
    let m = g.raft.metrics().borrow().clone();
    if m.current_leader != Some(me) || m.state != ServerState::Leader {
        return None;
    }
    let membership = m.membership_config.membership();
    let applied = m.last_applied.map(|l| l.index).unwrap_or(0);
    Some(GroupReport {
        shard: g.id,
        voters: membership.voter_ids().collect(),
        learners: membership.learner_ids().collect(),
        joint: membership.get_joint_config().len() > 1,
        membership_applied: m.membership_config.log_id().map(|l| l.index).unwrap_or(0) <= applied,
        applied,
    })
}

async fn report(node: &Node) {
    let me = node.config.node_id;
    let leading: Vec<GroupReport> = node.groups().iter().filter_map(|g| group_report(g, me)).collect();
    let r = NodeReport { node: me, leading };
    let meta_leader = node.meta.metrics().borrow().current_leader;
    match meta_leader {
        Some(l) if l == me => record_report(node, r),
        Some(l) => {
            if let Err(e) = node.call_node(l, &PeerCall::Report(r)).await {
                tracing::debug!(error = %e, "report to the meta leader failed");
            }
        }
        None => {}
    }
}

/// Each shard's applied index as its leader last reported it to this meta leader (0: not
/// reported yet).
pub(super) fn reported_applied(node: &Node, shard_count: usize) -> Vec<u64> {
    let d = node.meta_duties.lock().unwrap_or_else(|p| p.into_inner());
    let mut applied = vec![0; shard_count];
    for (shard, (r, _)) in &d.reports {
        if let Some(slot) = applied.get_mut(shard.0 as usize) {
            *slot = r.applied;
        }
    }
    applied
}

pub(super) fn record_report(node: &Node, r: NodeReport) {
    let now = Instant::now();
    let mut d = node.meta_duties.lock().unwrap_or_else(|p| p.into_inner());
    d.seen.insert(r.node, now);
    for g in r.leading {
        d.leaders.insert(g.shard, (r.node, now));
        d.reports.insert(g.shard, (g, now));
    }
}

async fn meta_leader_round(node: &Node) {
    let map = node.map();
    if !map.is_bootstrapped() {
        return;
    }
    if let Err(e) = keep_meta_membership(node, &map).await {
        tracing::info!(error = %e, "meta membership change not done yet");
    }
    let now = Instant::now();
    let (live, in_flight, reported_members) = {
        let mut d = node.meta_duties.lock().unwrap_or_else(|p| p.into_inner());
        let since = *d.leader_since.get_or_insert(now);
        let down_after = Duration::from_secs(node.config.cluster.node_down_replace_s);
        let live: BTreeSet<NodeId> = map
            .nodes
            .keys()
            .copied()
            .filter(|n| {
                let last = d.seen.get(n).copied().unwrap_or(since).max(since);
                *n == node.config.node_id || now.duration_since(last) < down_after
            })
            .collect();
        let mut in_flight = BTreeSet::new();
        let mut members: BTreeSet<NodeId> = BTreeSet::new();
        for (i, p) in map.shards.iter().enumerate() {
            let shard = ShardId(i as u32);
            match d.reports.get(&shard).filter(|(_, at)| now.duration_since(*at) < REPORT_FRESH_FOR) {
                Some((r, _)) => {
                    members.extend(r.voters.iter().chain(&r.learners));
                    // A membership the leader has not applied is not committed yet: a new
                    // leader may still truncate it and bring back the old voters.
                    if r.joint || !r.membership_applied || !r.learners.is_empty() || r.voters != p.replicas {
                        in_flight.insert(shard);
                    }
                }
                None => {
                    in_flight.insert(shard);
                }
            }
        }
        (live, in_flight, members)
    };
    let input =
        PlanInput { live, in_flight: in_flight.clone(), moves_max: node.config.cluster.moves_concurrent_max as usize };
    for mv in plan(&map, &input) {
        tracing::info!(shard = %mv.shard, replicas = ?mv.replicas, "placement change");
        let cmd = MetaCommand::SetPlacement { shard: mv.shard, replicas: mv.replicas, epoch: mv.epoch };
        if let Err(e) = node.propose_meta(cmd, false).await {
            tracing::info!(error = %e, "placement change not committed");
            return;
        }
    }
    balance_leaders(node, &map, &input.live, &in_flight).await;
    // A node being removed that no placement and no reported membership names is gone.
    if in_flight.is_empty() {
        for n in map.nodes.values().filter(|n| n.state == NodeState::Removing) {
            if map.shards_on(n.id).is_empty() && !reported_members.contains(&n.id) {
                tracing::info!(node = n.id, "drained node removed from the cluster");
                if let Err(e) = node.propose_meta(MetaCommand::RemoveNode { node: n.id }, false).await {
                    tracing::info!(error = %e, "node removal not committed");
                }
            }
        }
    }
}

/// Spreads shard leadership evenly over the live active nodes: hands over a few leaderships
/// (`cluster.moves_concurrent_max` at a time) from the busiest node to the least busy replicas,
/// judged on reports newer than the last hand-overs.
async fn balance_leaders(node: &Node, map: &ClusterMap, live: &BTreeSet<NodeId>, in_flight: &BTreeSet<ShardId>) {
    let now = Instant::now();
    let (leaders, left_alone) = {
        let mut d = node.meta_duties.lock().unwrap_or_else(|p| p.into_inner());
        d.handover_failed.retain(|_, at| now.duration_since(*at) < HANDOVER_RETRY_AFTER);
        let leaders: BTreeMap<ShardId, NodeId> = d
            .leaders
            .iter()
            .filter(|(_, (_, at))| d.balanced_at.is_none_or(|b| *at > b) && now.duration_since(*at) < REPORT_FRESH_FOR)
            .map(|(s, (n, _))| (*s, *n))
            .collect();
        let left_alone: BTreeSet<ShardId> = in_flight.iter().chain(d.handover_failed.keys()).copied().collect();
        (leaders, left_alone)
    };
    let handovers = rebalance(map, &leaders, live, &left_alone, node.config.cluster.moves_concurrent_max as usize);
    if handovers.is_empty() {
        return;
    }
    let results = futures::future::join_all(handovers.iter().map(|h| node.transfer_leader(h.shard, h.to))).await;
    let mut d = node.meta_duties.lock().unwrap_or_else(|p| p.into_inner());
    for (h, r) in handovers.iter().zip(results) {
        match r {
            Ok(()) => tracing::info!(shard = %h.shard, from = h.from, to = h.to, "leadership handed over for balance"),
            Err(e) => {
                tracing::info!(shard = %h.shard, to = h.to, error = %e, "leadership hand-over not done");
                d.handover_failed.insert(h.shard, Instant::now());
            }
        }
    }
    d.balanced_at = Some(Instant::now());
}

/// Keeps the meta group's membership in line with the map: every node a member, the first
/// `cluster.meta_voters_max` active nodes voters.
async fn keep_meta_membership(node: &Node, map: &ClusterMap) -> Result<()> {
    let m = node.meta.metrics().borrow().clone();
    let membership = m.membership_config.membership().clone();
    if membership.get_joint_config().len() > 1 {
        return finish_inherited_joint(&node.meta, &m).await;
    }
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    let members: BTreeSet<NodeId> = membership.nodes().map(|(id, _)| *id).collect();
    for n in map.nodes.values().filter(|n| !members.contains(&n.id)) {
        node.meta.add_learner(n.id, BasicNode { addr: n.peer_addr.clone() }, false).await.map_err(write_error)?;
        tracing::info!(node = n.id, "added to the meta group as a learner");
    }
    let gone: BTreeSet<NodeId> = members.iter().copied().filter(|n| !map.nodes.contains_key(n)).collect();
    if !gone.is_empty() {
        let still_voting: BTreeSet<NodeId> = voters.difference(&gone).copied().collect();
        if still_voting.is_empty() {
            return Ok(());
        }
        node.meta.change_membership(ChangeMembers::ReplaceAllVoters(still_voting), false).await.map_err(write_error)?;
        let learners_gone: BTreeSet<NodeId> = gone.difference(&voters).copied().collect();
        if !learners_gone.is_empty() {
            node.meta.change_membership(ChangeMembers::RemoveNodes(learners_gone), false).await.map_err(write_error)?;
        }
        return Ok(());
    }
    let wanted = node.config.cluster.meta_voters_max as usize;
    if voters.len() < wanted {
        let last = m.last_log_index.unwrap_or(0);
        let caught_up = |n: &NodeId| {
            m.replication
                .as_ref()
                .and_then(|r| r.get(n).cloned().flatten())
                .is_some_and(|l| l.index + CATCH_UP_ENTRIES_MAX >= last)
        };
        let candidate = map
            .nodes
            .values()
            .filter(|n| n.state == NodeState::Active && !voters.contains(&n.id) && members.contains(&n.id))
            .map(|n| n.id)
            .find(caught_up);
        if let Some(c) = candidate {
            node.meta
                .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([c])), false)
                .await
                .map_err(write_error)?;
            tracing::info!(node = c, "promoted to a meta group voter");
        }
    }
    Ok(())
}
