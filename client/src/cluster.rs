//! The client's cached view of the cluster: members, shard placement and leaders, and how a
//! series maps to its shard.

use std::collections::BTreeMap;

use hotlake_proto::routing;
use hotlake_proto::v1 as pb;

/// A member node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeView {
    /// Node id.
    pub id: u64,
    /// gRPC address (`host:port`).
    pub grpc_addr: String,
    /// HTTP address (`host:port`).
    pub http_addr: String,
    /// `active` or `draining`.
    pub state: String,
}

/// One shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardView {
    /// Shard id.
    pub id: u32,
    /// Nodes placed to hold a voting replica.
    pub replicas: Vec<u64>,
    /// Placement epoch.
    pub epoch: u64,
    /// Leader as last known, if any.
    pub leader: Option<u64>,
}

/// The cluster map as one node reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterView {
    /// Map version (bumped on every change).
    pub version: u64,
    /// Cluster id.
    pub cluster_id: u64,
    /// Tag naming a series' device.
    pub device_tag: String,
    /// Members by id.
    pub nodes: BTreeMap<u64, NodeView>,
    /// Shards by id.
    pub shards: Vec<ShardView>,
}

impl From<pb::ClusterMapResponse> for ClusterView {
    fn from(m: pb::ClusterMapResponse) -> Self {
        ClusterView {
            version: m.version,
            cluster_id: m.cluster_id,
            device_tag: m.device_tag,
            nodes: m
                .nodes
                .into_iter()
                .map(|n| (n.id, NodeView { id: n.id, grpc_addr: n.grpc_addr, http_addr: n.http_addr, state: n.state }))
                .collect(),
            shards: m
                .shards
                .into_iter()
                .map(|s| ShardView {
                    id: s.id,
                    replicas: s.replicas,
                    epoch: s.epoch,
                    leader: (s.leader != 0).then_some(s.leader),
                })
                .collect(),
        }
    }
}

impl ClusterView {
    /// The shard a series of `tenant` belongs to (the same function the nodes use).
    pub fn shard_of(&self, tenant: &str, series: &pb::SeriesPoints) -> u32 {
        let count = self.shards.len().max(1) as u32;
        let mut tags: Vec<(&str, &str)> = series.tags.iter().map(|t| (t.key.as_str(), t.value.as_str())).collect();
        tags.sort_unstable();
        let key = routing::series_key(&series.measurement, &tags);
        let device = routing::device_hash(tenant, routing::device_of(&self.device_tag, &tags, &key));
        routing::shard_of_hash(device, count)
    }

    /// Where to send `shard`'s writes: its leader if known, else its first placed replica.
    pub fn route(&self, shard: u32) -> Option<&NodeView> {
        let s = self.shards.get(shard as usize)?;
        s.leader.into_iter().chain(s.replicas.iter().copied()).find_map(|n| self.nodes.get(&n))
    }

    /// Records `leader` as the leader of `shard` (from a `not_leader` answer).
    pub fn set_leader(&mut self, shard: u32, leader: u64) {
        if let Some(s) = self.shards.get_mut(shard as usize) {
            s.leader = Some(leader);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(shards: u32) -> ClusterView {
        ClusterView {
            version: 1,
            cluster_id: 9,
            device_tag: "device_id".into(),
            nodes: (1..=3)
                .map(|id| {
                    let n = NodeView {
                        id,
                        grpc_addr: format!("127.0.0.1:710{id}"),
                        http_addr: String::new(),
                        state: "active".into(),
                    };
                    (id, n)
                })
                .collect(),
            shards: (0..shards).map(|id| ShardView { id, replicas: vec![2, 3], epoch: 1, leader: None }).collect(),
        }
    }

    fn series(measurement: &str, tags: &[(&str, &str)]) -> pb::SeriesPoints {
        pb::SeriesPoints {
            measurement: measurement.into(),
            tags: tags.iter().map(|(k, v)| pb::Tag { key: (*k).into(), value: (*v).into() }).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn series_of_one_device_share_a_shard_and_tag_order_does_not_matter() {
        let v = view(64);
        let a = v.shard_of("t", &series("cpu", &[("device_id", "x"), ("site", "a")]));
        let b = v.shard_of("t", &series("mem", &[("site", "b"), ("device_id", "x")]));
        assert_eq!(a, b);
        let c = v.shard_of("t", &series("cpu", &[("zone", "1"), ("host", "h")]));
        let d = v.shard_of("t", &series("cpu", &[("host", "h"), ("zone", "1")]));
        assert_eq!(c, d);
        assert!((0..64).contains(&c));
    }

    #[test]
    fn routes_prefer_the_known_leader() {
        let mut v = view(4);
        assert_eq!(v.route(1).unwrap().id, 2);
        v.set_leader(1, 3);
        assert_eq!(v.route(1).unwrap().id, 3);
        assert!(v.route(9).is_none());
    }
}
