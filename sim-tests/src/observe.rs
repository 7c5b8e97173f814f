//! Observing a simulated cluster from a client host through the node-to-node `Peer` service:
//! the map, each node's view of its replicas, and per-replica digests.
//!
//! Tests name nodes by their public gRPC addresses (what clients use); calls here go to the
//! same host's peer listener (see [`peer_of`]).

use std::collections::BTreeSet;
use std::time::Duration;

use hotlake_cluster::map::{ClusterMap, MetaCommand, NodeState};
use hotlake_cluster::transport::{NodeStatus, PeerCall, PeerReply, Peers, TransportOptions};
use hotlake_storage::ShardId;

/// A connection pool for observing nodes.
pub fn peers() -> Peers {
    Peers::new(TransportOptions {
        call_timeout: Duration::from_secs(2),
        snapshot_chunk_bytes_max: 1 << 20,
        snapshot_bytes_per_s_max: 0,
        message_bytes_max: 64 << 20,
    })
}

/// The peer listener of the node at `addr` (its gRPC or peer address): in the simulator every
/// node listens for peers on [`crate::harness::PEER_PORT`] of its host.
pub fn peer_of(addr: &str) -> String {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    format!("{host}:{}", crate::harness::PEER_PORT)
}

/// The map as node `addr` applied it.
pub async fn map(peers: &Peers, addr: &str) -> Option<ClusterMap> {
    match peers.call(&peer_of(addr), &PeerCall::Map, Duration::from_secs(2)).await {
        Ok(PeerReply::Map(m)) => Some(m),
        _ => None,
    }
}

/// What node `addr` says about itself.
pub async fn status(peers: &Peers, addr: &str) -> Option<NodeStatus> {
    match peers.call(&peer_of(addr), &PeerCall::Status, Duration::from_secs(2)).await {
        Ok(PeerReply::Status(s)) => Some(s),
        _ => None,
    }
}

/// The newest map among the ones `seeds` applied (a removed node keeps an old one).
pub async fn best_map(peers: &Peers, seeds: &[String]) -> Option<ClusterMap> {
    let mut best: Option<ClusterMap> = None;
    for addr in seeds {
        if let Some(m) = map(peers, addr).await {
            if best.as_ref().is_none_or(|b| m.version > b.version) {
                best = Some(m);
            }
        }
    }
    best
}

/// gRPC addresses of the members in the newest map.
pub async fn members(peers: &Peers, seeds: &[String]) -> Vec<String> {
    best_map(peers, seeds).await.map(|m| m.nodes.values().map(|n| n.grpc_addr.clone()).collect()).unwrap_or_default()
}

/// Proposes a meta command through the meta leader, as `hotlakectl` would.
pub async fn propose(peers: &Peers, seeds: &[String], cmd: MetaCommand) -> Result<u64, String> {
    let mut last = "no node answered".to_string();
    for addr in seeds {
        let Some(leader) = status(peers, addr).await.and_then(|s| s.meta_leader) else { continue };
        let Some(m) = map(peers, addr).await else { continue };
        let Some(leader_addr) = m.peer_addr(leader) else { continue };
        match peers.call(leader_addr, &PeerCall::Meta(cmd.clone()), Duration::from_secs(5)).await {
            Ok(PeerReply::MapVersion(v)) => return Ok(v),
            Ok(other) => last = format!("unexpected reply {other:?}"),
            Err(e) => last = e.to_string(),
        }
    }
    Err(last)
}

/// The node that currently leads `shard`, as its replicas report it.
pub async fn shard_leader(peers: &Peers, seeds: &[String], shard: ShardId) -> Option<u64> {
    for addr in seeds {
        if let Some(s) = status(peers, addr).await {
            if s.replicas.iter().any(|r| r.shard == shard && r.role == "leader") {
                return Some(s.node);
            }
        }
    }
    None
}

/// Why the cluster is not converged yet: no node draining, every shard with `replicas` voters
/// in the newest map, every member answering, hosting exactly its placed replicas as leader
/// or follower of a group with a leader, with the placed voters.
pub async fn not_converged(peers: &Peers, seeds: &[String], replicas: usize) -> Option<String> {
    let Some(m) = best_map(peers, seeds).await else { return Some("no map".into()) };
    if !m.is_bootstrapped() {
        return Some("not bootstrapped".into());
    }
    if let Some(n) = m.nodes.values().find(|n| n.state != NodeState::Active) {
        return Some(format!("node {} is {}", n.id, n.state.name()));
    }
    for (i, p) in m.shards.iter().enumerate() {
        if p.replicas.len() != replicas {
            return Some(format!("shard {i} placed on {:?}", p.replicas));
        }
    }
    for (id, info) in &m.nodes {
        let Some(s) = status(peers, &info.peer_addr).await else { return Some(format!("node {id} silent")) };
        let hosted: BTreeSet<ShardId> = s.replicas.iter().map(|r| r.shard).collect();
        let placed: BTreeSet<ShardId> = m.shards_on(*id).into_iter().collect();
        if hosted != placed {
            return Some(format!("node {id} hosts {hosted:?}, placed {placed:?}"));
        }
        if let Some(r) = s.replicas.iter().find(|r| !(r.role == "leader" || r.role == "follower") || r.leader.is_none())
        {
            return Some(format!("node {id} {}: {} (leader {:?})", r.shard, r.role, r.leader));
        }
        if let Some(r) = s.replicas.iter().find(|r| r.joint || r.voters != m.replicas(r.shard)) {
            return Some(format!(
                "node {id} {}: voters {:?} (joint {}), placed {:?}",
                r.shard,
                r.voters,
                r.joint,
                m.replicas(r.shard)
            ));
        }
    }
    None
}

/// Waits until [`not_converged`] is `None`, panicking with the last reason after `timeout`.
pub async fn wait_converged(peers: &Peers, addrs: &[String], replicas: usize, timeout: Duration) {
    let deadline = madsim::time::Instant::now() + timeout;
    loop {
        let why = not_converged(peers, addrs, replicas).await;
        let Some(why) = why else { return };
        if madsim::time::Instant::now() >= deadline {
            dump(peers, addrs).await;
            panic!("cluster did not converge: {why}");
        }
        madsim::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Prints every node's map version and replicas (for a seed that failed).
pub async fn dump(peers: &Peers, seeds: &[String]) {
    if let Some(m) = best_map(peers, seeds).await {
        println!(
            "map v{}: nodes {:?}",
            m.version,
            m.nodes.values().map(|n| (n.id, n.state.name())).collect::<Vec<_>>()
        );
        for (i, p) in m.shards.iter().enumerate() {
            println!("  s{i} placed on {:?} (epoch {})", p.replicas, p.epoch);
        }
    }
    for addr in seeds {
        match status(peers, addr).await {
            Some(s) => {
                println!("node {} (map v{}, meta leader {:?}):", s.node, s.map_version, s.meta_leader);
                for r in &s.replicas {
                    println!(
                        "  {} {} leader {:?} voters {:?} joint {} applied {}",
                        r.shard, r.role, r.leader, r.voters, r.joint, r.applied
                    );
                }
            }
            None => println!("{addr}: no answer"),
        }
    }
}

/// The digest of node `addr`'s replica of `shard` and the applied index it reflects (one
/// call, so the two always belong together).
pub async fn digest(peers: &Peers, addr: &str, shard: ShardId) -> Option<(u64, u64)> {
    match peers.call(&peer_of(addr), &PeerCall::Digest { shard }, Duration::from_secs(5)).await {
        Ok(PeerReply::Digest { digest, applied }) => Some((digest, applied)),
        _ => None,
    }
}

/// Waits until all replicas of every shard are at the same applied index, then asserts their
/// digests are equal.
pub async fn assert_replicas_identical(peers: &Peers, seeds: &[String], timeout: Duration) {
    let m = best_map(peers, seeds).await.expect("map");
    let deadline = madsim::time::Instant::now() + timeout;
    for (i, p) in m.shards.iter().enumerate() {
        let shard = ShardId(i as u32);
        loop {
            let mut seen = Vec::new();
            for n in &p.replicas {
                let addr = m.peer_addr(*n).expect("placed node is a member");
                seen.push((*n, digest(peers, addr, shard).await));
            }
            let applied: BTreeSet<Option<u64>> = seen.iter().map(|(_, d)| d.map(|x| x.1)).collect();
            if applied.len() == 1 && !applied.contains(&None) {
                let digests: BTreeSet<u64> = seen.iter().filter_map(|(_, d)| d.map(|x| x.0)).collect();
                assert_eq!(digests.len(), 1, "{shard}: replicas at the same index differ: {seen:?}");
                break;
            }
            assert!(madsim::time::Instant::now() < deadline, "{shard}: replicas do not catch up: {seen:?}");
            madsim::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
