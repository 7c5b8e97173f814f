//! Leader balancing: which shard leaderships to hand over so every node leads about as many
//! shards as the others. A node that leads every shard (as the bootstrapping node does, and a
//! node after the others restarted) proposes and coordinates every write alone while the other
//! nodes' cores idle. The meta leader runs [`rebalance`] on the leaders its reports name and
//! hands leaderships over (`transfer_leader`), a few at a time.
//!
//! Pure: no I/O, deterministic for the same input.

use std::collections::{BTreeMap, BTreeSet};

use hotlake_raft::NodeId;
use hotlake_storage::ShardId;

use super::map::{ClusterMap, NodeState};

/// One leadership to hand over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handover {
    /// The shard.
    pub shard: ShardId,
    /// Its leader now.
    pub from: NodeId,
    /// The replica that should lead it.
    pub to: NodeId,
}

/// Up to `max` hand-overs that bring the busiest node's leader count towards the least busy
/// one's, until every pair of eligible nodes differs by at most one. Eligible: active nodes in
/// `live`. Only shards whose leader is known (`leaders`), that are not left alone
/// (`left_alone`: moving, or recently failed to hand over), and whose placement holds the
/// target are handed over; each shard at most once.
pub fn rebalance(
    map: &ClusterMap,
    leaders: &BTreeMap<ShardId, NodeId>,
    live: &BTreeSet<NodeId>,
    left_alone: &BTreeSet<ShardId>,
    max: usize,
) -> Vec<Handover> {
    let eligible: BTreeSet<NodeId> =
        map.nodes.values().filter(|n| n.state == NodeState::Active && live.contains(&n.id)).map(|n| n.id).collect();
    let mut counts: BTreeMap<NodeId, usize> = eligible.iter().map(|n| (*n, 0)).collect();
    for leader in leaders.values() {
        if let Some(c) = counts.get_mut(leader) {
            *c += 1;
        }
    }
    let mut planned: Vec<Handover> = Vec::new();
    while planned.len() < max {
        // The busiest node first; among targets, the least busy that can take one of its shards.
        let Some((&from, &most)) = counts.iter().max_by_key(|(n, c)| (**c, std::cmp::Reverse(**n))) else { break };
        let mut targets: Vec<(usize, NodeId)> = counts.iter().map(|(n, c)| (*c, *n)).collect();
        targets.sort();
        let choice = targets.iter().take_while(|(c, _)| c + 1 < most).find_map(|&(_, to)| {
            leaders
                .iter()
                .find(|(shard, leader)| {
                    **leader == from
                        && !left_alone.contains(shard)
                        && map.replicas(**shard).contains(&to)
                        && !planned.iter().any(|h| h.shard == **shard)
                })
                .map(|(shard, _)| Handover { shard: *shard, from, to })
        });
        let Some(h) = choice else { break };
        *counts.get_mut(&h.from).expect("counted") -= 1;
        *counts.get_mut(&h.to).expect("counted") += 1;
        planned.push(h);
    }
    planned
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::map::{MetaCommand, NodeInfo};

    fn map(nodes: u64, shards: u32) -> ClusterMap {
        let mut m = ClusterMap::default();
        let info = |id: u64| NodeInfo {
            id,
            grpc_addr: format!("127.0.0.{id}:7101"),
            http_addr: format!("127.0.0.{id}:7181"),
            peer_addr: format!("127.0.0.{id}:7191"),
            state: NodeState::Active,
            incarnation: id,
        };
        m.apply(&MetaCommand::Bootstrap {
            cluster_id: 1,
            shard_count: shards,
            replication_factor: 3,
            settings: crate::map::ClusterSettings::for_tests(),
            node: info(1),
            tenant: "default".into(),
            admin_token: None,
        })
        .unwrap();
        for id in 2..=nodes {
            m.apply(&MetaCommand::AddNode(info(id))).unwrap();
        }
        for p in &mut m.shards {
            p.replicas = (1..=nodes.min(3)).collect();
        }
        m
    }

    fn counts_after(leaders: &BTreeMap<ShardId, NodeId>, moves: &[Handover]) -> BTreeMap<NodeId, usize> {
        let mut l = leaders.clone();
        for h in moves {
            assert_eq!(l.insert(h.shard, h.to), Some(h.from), "a hand-over names the shard's leader");
        }
        let mut c = BTreeMap::new();
        for n in l.values() {
            *c.entry(*n).or_insert(0) += 1;
        }
        c
    }

    /// One node leading all 64 shards of three is balanced to within one, each shard moved at
    /// most once, and a balanced cluster plans nothing.
    #[test]
    fn a_node_leading_everything_is_balanced_to_within_one() {
        let m = map(3, 64);
        let leaders: BTreeMap<ShardId, NodeId> = (0..64).map(|s| (ShardId(s), 1)).collect();
        let live = BTreeSet::from([1, 2, 3]);
        let moves = rebalance(&m, &leaders, &live, &BTreeSet::new(), usize::MAX);
        let counts = counts_after(&leaders, &moves);
        assert_eq!(counts.values().copied().collect::<Vec<_>>(), vec![22, 21, 21], "{counts:?}");
        let shards: BTreeSet<ShardId> = moves.iter().map(|h| h.shard).collect();
        assert_eq!(shards.len(), moves.len());
        let mut after = leaders.clone();
        for h in &moves {
            after.insert(h.shard, h.to);
        }
        assert!(rebalance(&m, &after, &live, &BTreeSet::new(), usize::MAX).is_empty());
    }

    /// Hand-overs stop at `max`, skip moving shards, and never target a node that is down or
    /// that holds no replica of the shard.
    #[test]
    fn hand_overs_respect_the_limit_moves_and_liveness() {
        let m = map(3, 8);
        let leaders: BTreeMap<ShardId, NodeId> = (0..8).map(|s| (ShardId(s), 1)).collect();
        let moves = rebalance(&m, &leaders, &BTreeSet::from([1, 2, 3]), &BTreeSet::new(), 2);
        assert_eq!(moves.len(), 2);
        let down = rebalance(&m, &leaders, &BTreeSet::from([1, 2]), &BTreeSet::new(), usize::MAX);
        assert!(down.iter().all(|h| h.to == 2), "{down:?}");
        let moving: BTreeSet<ShardId> = (0..7).map(ShardId).collect();
        let few = rebalance(&m, &leaders, &BTreeSet::from([1, 2, 3]), &moving, usize::MAX);
        assert_eq!(few, vec![Handover { shard: ShardId(7), from: 1, to: 2 }]);
    }
}
