//! Placement: which nodes should hold each shard's replicas. The meta leader runs [`plan`]
//! periodically and commits its output as `SetPlacement` commands; shard leaders then move their
//! groups' membership towards the placement (add learner → catch up → promote → remove).
//!
//! Pure: no I/O, deterministic for the same input.

use std::collections::{BTreeMap, BTreeSet};

use super::map::{ClusterMap, NodeState};
use hotlake_raft::NodeId;
use hotlake_storage::ShardId;

/// What the planner knows besides the map.
#[derive(Clone, Debug, Default)]
pub struct PlanInput {
    /// Nodes heard from recently enough to count as up.
    pub live: BTreeSet<NodeId>,
    /// Shards whose group membership does not match their placement yet (a move in progress).
    pub in_flight: BTreeSet<ShardId>,
    /// At most this many shards may be moving at once.
    pub moves_max: usize,
}

/// One planned placement change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Move {
    /// The shard.
    pub shard: ShardId,
    /// Its new replicas, ascending.
    pub replicas: Vec<NodeId>,
    /// The placement epoch the move was planned against.
    pub epoch: u64,
}

/// Placement changes that bring the map closer to `replication_factor` replicas per shard on
/// distinct, active, live nodes with balanced replica counts, within the move budget.
///
/// Rules, in order:
/// 1. replicas on draining or removing nodes move away; replicas on nodes that are down are replaced when
///    another node can take them (a down node keeps its replica otherwise: it may come back);
/// 2. under-replicated shards gain replicas on the least loaded eligible nodes;
/// 3. while one eligible node holds two or more replicas more than another, a replica moves from
///    the most to the least loaded node.
pub fn plan(map: &ClusterMap, input: &PlanInput) -> Vec<Move> {
    let eligible: BTreeSet<NodeId> = map
        .nodes
        .values()
        .filter(|n| n.state == NodeState::Active && input.live.contains(&n.id))
        .map(|n| n.id)
        .collect();
    let rf = map.replication_factor as usize;
    let mut budget = input.moves_max.saturating_sub(input.in_flight.len());
    let mut load: BTreeMap<NodeId, usize> = eligible.iter().map(|&n| (n, 0)).collect();
    for p in &map.shards {
        for n in &p.replicas {
            if let Some(l) = load.get_mut(n) {
                *l += 1;
            }
        }
    }
    let mut moves = Vec::new();
    let mut changed: BTreeSet<ShardId> = BTreeSet::new();
    if eligible.is_empty() {
        return moves;
    }
    for (i, p) in map.shards.iter().enumerate() {
        if budget == 0 {
            break;
        }
        let shard = ShardId(i as u32);
        if input.in_flight.contains(&shard) {
            continue;
        }
        let mut next: Vec<NodeId> = p.replicas.iter().copied().filter(|n| eligible.contains(n)).collect();
        while next.len() < rf {
            let pick = load.iter().filter(|(n, _)| !next.contains(n)).min_by_key(|(n, l)| (**l, **n)).map(|(n, _)| *n);
            match pick {
                Some(n) => {
                    next.push(n);
                    *load.get_mut(&n).expect("eligible node has a load") += 1;
                }
                None => break,
            }
        }
        // Keep replicas on down (but not draining) nodes while the shard is short of replicas.
        for n in &p.replicas {
            let draining = map.nodes.get(n).is_none_or(|info| info.state != NodeState::Active);
            if next.len() < rf && !next.contains(n) && !draining {
                next.push(*n);
            }
        }
        if next.is_empty() {
            continue;
        }
        next.sort_unstable();
        if next != p.replicas {
            for n in &p.replicas {
                if !next.contains(n) {
                    if let Some(l) = load.get_mut(n) {
                        *l -= 1;
                    }
                }
            }
            moves.push(Move { shard, replicas: next, epoch: p.epoch });
            changed.insert(shard);
            budget -= 1;
        }
    }
    while budget > 0 && load.len() > 1 {
        let (&most, &most_load) = load.iter().max_by_key(|(n, l)| (**l, std::cmp::Reverse(**n))).expect("non-empty");
        let (&least, &least_load) = load.iter().min_by_key(|(n, l)| (**l, **n)).expect("non-empty");
        if most_load <= least_load + 1 {
            break;
        }
        let candidate = map.shards.iter().enumerate().find(|(i, p)| {
            let s = ShardId(*i as u32);
            !changed.contains(&s)
                && !input.in_flight.contains(&s)
                && p.replicas.contains(&most)
                && !p.replicas.contains(&least)
        });
        let Some((i, p)) = candidate else { break };
        let mut next: Vec<NodeId> = p.replicas.iter().map(|&n| if n == most { least } else { n }).collect();
        next.sort_unstable();
        *load.get_mut(&most).expect("eligible") -= 1;
        *load.get_mut(&least).expect("eligible") += 1;
        let shard = ShardId(i as u32);
        moves.push(Move { shard, replicas: next, epoch: p.epoch });
        changed.insert(shard);
        budget -= 1;
    }
    for m in &moves {
        assert_move_is_sound(map, m);
    }
    moves
}

/// Invariant of every planned move: distinct nodes, ascending, at least one, and no more than
/// the replication factor (or the shard's replicas now, when the map holds more).
fn assert_move_is_sound(map: &ClusterMap, m: &Move) {
    let now = map.replicas(m.shard).len();
    let most = (map.replication_factor as usize).max(now);
    assert!(!m.replicas.is_empty(), "{}: a move to no replica", m.shard);
    assert!(
        m.replicas.windows(2).all(|w| w[0] < w[1]),
        "{}: replicas not distinct and ascending: {:?}",
        m.shard,
        m.replicas
    );
    assert!(m.replicas.len() <= most, "{}: {} replicas planned, at most {most}", m.shard, m.replicas.len());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::map::{MetaCommand, NodeInfo};

    fn map_with(nodes: &[NodeId], shards: u32, rf: u32) -> ClusterMap {
        let info = |id: NodeId| NodeInfo {
            id,
            grpc_addr: format!("127.0.0.{id}:7101"),
            http_addr: format!("127.0.0.{id}:7181"),
            peer_addr: format!("127.0.0.{id}:7191"),
            state: NodeState::Active,
            incarnation: 1,
        };
        let mut m = ClusterMap::default();
        m.apply(&MetaCommand::Bootstrap {
            cluster_id: 1,
            shard_count: shards,
            replication_factor: rf,
            settings: crate::map::ClusterSettings::for_tests(),
            node: info(1),
            tenant: "default".into(),
            admin_token: None,
        })
        .unwrap();
        for &n in &nodes[1..] {
            m.apply(&MetaCommand::AddNode(info(n))).unwrap();
        }
        m
    }

    fn run_to_fixpoint(m: &mut ClusterMap, live: &[NodeId]) -> usize {
        let input = PlanInput { live: live.iter().copied().collect(), in_flight: BTreeSet::new(), moves_max: 4 };
        let mut rounds = 0;
        loop {
            let moves = plan(m, &input);
            if moves.is_empty() {
                return rounds;
            }
            for mv in moves {
                m.apply(&MetaCommand::SetPlacement { shard: mv.shard, replicas: mv.replicas, epoch: mv.epoch })
                    .unwrap();
            }
            rounds += 1;
            assert!(rounds < 1000, "planner does not converge");
        }
    }

    fn loads(m: &ClusterMap) -> BTreeMap<NodeId, usize> {
        let mut out = BTreeMap::new();
        for p in &m.shards {
            for n in &p.replicas {
                *out.entry(*n).or_default() += 1;
            }
        }
        out
    }

    #[test]
    fn three_nodes_get_every_shard_on_distinct_nodes() {
        let mut m = map_with(&[1, 2, 3], 16, 3);
        run_to_fixpoint(&mut m, &[1, 2, 3]);
        for p in &m.shards {
            assert_eq!(p.replicas, vec![1, 2, 3]);
        }
    }

    #[test]
    fn a_fourth_node_takes_a_balanced_share() {
        let mut m = map_with(&[1, 2, 3], 16, 3);
        run_to_fixpoint(&mut m, &[1, 2, 3]);
        m.apply(&MetaCommand::AddNode(NodeInfo {
            id: 4,
            grpc_addr: "127.0.0.4:7101".into(),
            http_addr: "127.0.0.4:7181".into(),
            peer_addr: "127.0.0.4:7191".into(),
            state: NodeState::Active,
            incarnation: 1,
        }))
        .unwrap();
        run_to_fixpoint(&mut m, &[1, 2, 3, 4]);
        let l = loads(&m);
        assert_eq!(l.values().sum::<usize>(), 48);
        assert!(l.values().all(|&c| c == 12), "{l:?}");
        assert!(m.shards.iter().all(|p| p.replicas.len() == 3));
    }

    #[test]
    fn draining_moves_every_replica_away() {
        let mut m = map_with(&[1, 2, 3, 4], 8, 3);
        run_to_fixpoint(&mut m, &[1, 2, 3, 4]);
        m.apply(&MetaCommand::SetNodeState { node: 2, state: NodeState::Draining }).unwrap();
        run_to_fixpoint(&mut m, &[1, 2, 3, 4]);
        assert!(m.shards_on(2).is_empty());
        assert!(m.shards.iter().all(|p| p.replicas.len() == 3));
    }

    #[test]
    fn a_down_node_is_replaced_only_when_another_can_take_its_replica() {
        let mut m = map_with(&[1, 2, 3], 8, 3);
        run_to_fixpoint(&mut m, &[1, 2, 3]);
        // Nobody can take node 3's replicas: they stay.
        assert_eq!(run_to_fixpoint(&mut m, &[1, 2]), 0);
        m.apply(&MetaCommand::AddNode(NodeInfo {
            id: 4,
            grpc_addr: "127.0.0.4:7101".into(),
            http_addr: "127.0.0.4:7181".into(),
            peer_addr: "127.0.0.4:7191".into(),
            state: NodeState::Active,
            incarnation: 1,
        }))
        .unwrap();
        run_to_fixpoint(&mut m, &[1, 2, 4]);
        assert!(m.shards_on(3).is_empty());
        assert!(m.shards.iter().all(|p| p.replicas == vec![1, 2, 4]));
    }

    #[test]
    fn moves_respect_the_budget_and_skip_shards_in_flight() {
        let m = map_with(&[1, 2, 3], 16, 3);
        let input = PlanInput {
            live: [1, 2, 3].into_iter().collect(),
            in_flight: [ShardId(0), ShardId(1)].into_iter().collect(),
            moves_max: 5,
        };
        let moves = plan(&m, &input);
        assert_eq!(moves.len(), 3);
        assert!(moves.iter().all(|mv| mv.shard != ShardId(0) && mv.shard != ShardId(1)));
    }
}
