//! The cluster map: nodes, shard placement and the commands that change them. The meta group
//! replicates the commands; every node applies them to its copy in the same order.
//!
//! Pure: no I/O. `apply` is deterministic and rejects a command that does not fit the current
//! map (a stale placement epoch, an unknown node) without changing anything.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use hotlake_raft::NodeId;
use hotlake_storage::ShardId;

use crate::access::{TenantSettings, TokenRecord, TENANTS_MAX, TOKENS_MAX};

/// Whether a node takes new replicas.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// Serving and eligible for replicas.
    Active,
    /// Drained: its replicas move away; it stays a member (and can be made active again).
    Draining,
    /// Being removed: its replicas move away, then it leaves the cluster.
    Removing,
}

impl NodeState {
    /// Lower-case name, as shown by `hotlakectl`.
    pub fn name(self) -> &'static str {
        match self {
            NodeState::Active => "active",
            NodeState::Draining => "draining",
            NodeState::Removing => "removing",
        }
    }
}

/// A member node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Node id, unique in the cluster.
    pub id: NodeId,
    /// gRPC address of the public API (data and admin services) that clients use.
    pub grpc_addr: String,
    /// Address of the node-to-node listener (Raft, forwarded calls, joins); it serves only
    /// the `Peer` service, so the public port never does, and takes mutual TLS where the
    /// cluster has a CA.
    pub peer_addr: String,
    /// HTTP address (line protocol, JSON queries, health, metrics).
    pub http_addr: String,
    /// Whether it takes replicas.
    pub state: NodeState,
    /// Random id the node chose when its data directory was created. A known node id coming
    /// back with another incarnation lost its disk: its votes and acknowledged log entries
    /// are gone, so it must not rejoin the groups that counted on them (see `AddNode`).
    pub incarnation: u64,
}

/// Settings every replica must apply alike, fixed when the cluster is created. They decide how
/// series are routed to shards and how a shard's data is cut into blocks: two nodes with
/// different values would route one device's series to different shards, or apply the same
/// retention command to different windows and diverge. A node uses the map's values; one
/// configured otherwise refuses to start (or to join) and says which value to set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterSettings {
    /// The tag whose value names a series' device (the routing key).
    pub device_tag: String,
    /// Width of a block's time window, in milliseconds.
    pub block_window_ms: u64,
    /// Whether requests must carry a token (every node must agree, or one would let in what
    /// the others keep out).
    pub auth: bool,
}

impl ClusterSettings {
    /// Settings for unit tests of the map and planners.
    #[cfg(test)]
    pub(crate) fn for_tests() -> Self {
        ClusterSettings { device_tag: "device_id".into(), block_window_ms: 3_600_000, auth: true }
    }

    /// Refuses values no cluster can run with.
    pub fn check(&self) -> Result<(), String> {
        if self.device_tag.is_empty() || self.device_tag.len() > 255 || self.device_tag.chars().any(char::is_control) {
            return Err(format!("device_tag {:?} must be 1 to 255 bytes without control characters", self.device_tag));
        }
        if self.block_window_ms < 1000 {
            return Err(format!("block_window_ms must be at least 1000, got {}", self.block_window_ms));
        }
        Ok(())
    }
}

/// Longest node address, in bytes.
pub const ADDR_BYTES_MAX: usize = 255;

impl NodeInfo {
    /// Refuses a registration no cluster can use: id 0, or an address that is empty, longer
    /// than [`ADDR_BYTES_MAX`] or holds whitespace or control characters (every member keeps
    /// the map, so an oversized entry would cost every node).
    pub fn check(&self) -> Result<(), String> {
        if self.id == 0 {
            return Err("node id must be greater than 0".into());
        }
        for (what, addr) in
            [("grpc_addr", &self.grpc_addr), ("http_addr", &self.http_addr), ("peer_addr", &self.peer_addr)]
        {
            if addr.is_empty()
                || addr.len() > ADDR_BYTES_MAX
                || addr.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(format!(
                    "{what} must be 1 to {ADDR_BYTES_MAX} bytes of host:port without spaces, got {} bytes",
                    addr.len()
                ));
            }
        }
        Ok(())
    }
}

/// Where one shard's replicas live.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// Nodes that should hold a voting replica, ascending.
    pub replicas: Vec<NodeId>,
    /// Bumped on every change; a change names the epoch it was planned against.
    pub epoch: u64,
}

/// The whole cluster map.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMap {
    /// Random id chosen at bootstrap; a node refuses to join another cluster's data.
    pub cluster_id: u64,
    /// Bumped on every applied change.
    pub version: u64,
    /// Bumped on every applied change of members or placement, what clients route by; tenant
    /// and token changes leave it, so they never make a client's routing stale.
    pub routing_version: u64,
    /// Shards on the ring (fixed at bootstrap).
    pub shard_count: u32,
    /// Replicas per shard the placement aims for.
    pub replication_factor: u32,
    /// Settings every replica applies alike (set at bootstrap).
    pub settings: ClusterSettings,
    /// Member nodes.
    pub nodes: BTreeMap<NodeId, NodeInfo>,
    /// Placement per shard, indexed by shard id.
    pub shards: Vec<Placement>,
    /// Incarnations of removed nodes, oldest first (at most [`REMOVED_REMEMBERED_MAX`]): a
    /// data directory of a removed node does not join again.
    pub removed: Vec<u64>,
    /// Tenants by name (at most [`TENANTS_MAX`]).
    pub tenants: BTreeMap<String, TenantSettings>,
    /// Tokens by id (at most [`TOKENS_MAX`]), hashed.
    pub tokens: BTreeMap<u64, TokenRecord>,
}

/// How many removed incarnations the map remembers.
pub const REMOVED_REMEMBERED_MAX: usize = 1024;

/// A change to the cluster map.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaCommand {
    /// Creates the cluster with one node holding every shard.
    Bootstrap {
        /// New cluster id.
        cluster_id: u64,
        /// Shards on the ring.
        shard_count: u32,
        /// Target replicas per shard.
        replication_factor: u32,
        /// Settings every replica applies alike.
        settings: ClusterSettings,
        /// The first node.
        node: NodeInfo,
        /// The tenant requests that name none go to, created with the cluster.
        tenant: String,
        /// The first admin token (with authentication on).
        admin_token: Option<TokenRecord>,
    },
    /// Adds a node, or updates the addresses of a known one. A known node with a new
    /// incarnation (an empty data directory) is rejected while replicas are placed on it.
    AddNode(NodeInfo),
    /// Marks a node active or draining.
    SetNodeState {
        /// The node.
        node: NodeId,
        /// Its new state.
        state: NodeState,
    },
    /// Removes a node that is being drained and holds no replica.
    RemoveNode {
        /// The node.
        node: NodeId,
    },
    /// Sets a shard's replicas if its placement is still at `epoch`.
    SetPlacement {
        /// The shard.
        shard: ShardId,
        /// New replicas.
        replicas: Vec<NodeId>,
        /// The epoch the change was planned against.
        epoch: u64,
    },
    /// Creates a tenant. With `if_absent` an existing tenant is left as it is (a first write
    /// to a tenant creates it); without, it is an error.
    CreateTenant {
        /// Its name.
        name: String,
        /// Its settings.
        settings: TenantSettings,
        /// Whether an existing tenant is fine.
        if_absent: bool,
    },
    /// Changes a tenant's settings.
    SetTenant {
        /// Its name.
        name: String,
        /// Its new settings.
        settings: TenantSettings,
    },
    /// Adds a token; every tenant its scopes name must exist.
    CreateToken(TokenRecord),
    /// Revokes a token.
    RevokeToken {
        /// Its id.
        id: u64,
    },
    /// Changes a consumer group's committed positions. Applied by the meta state machine to
    /// its [`crate::consumers::ConsumerGroups`], beside the map: commits are frequent and change
    /// nothing that map watchers follow.
    Consumers(crate::consumers::ConsumerCommand),
}

impl MetaCommand {
    /// Whether it changes what clients route by (members, placement).
    pub fn changes_routing(&self) -> bool {
        match self {
            MetaCommand::Bootstrap { .. }
            | MetaCommand::AddNode(_)
            | MetaCommand::SetNodeState { .. }
            | MetaCommand::RemoveNode { .. }
            | MetaCommand::SetPlacement { .. } => true,
            MetaCommand::CreateTenant { .. }
            | MetaCommand::SetTenant { .. }
            | MetaCommand::CreateToken(_)
            | MetaCommand::RevokeToken { .. }
            | MetaCommand::Consumers(_) => false,
        }
    }
}

impl ClusterMap {
    /// True once the cluster has been bootstrapped.
    pub fn is_bootstrapped(&self) -> bool {
        self.shard_count > 0
    }

    /// Replicas of `shard` (empty if unknown).
    pub fn replicas(&self, shard: ShardId) -> &[NodeId] {
        self.shards.get(shard.0 as usize).map(|p| p.replicas.as_slice()).unwrap_or(&[])
    }

    /// Shards with a replica placed on `node`.
    pub fn shards_on(&self, node: NodeId) -> Vec<ShardId> {
        (0..self.shards.len() as u32).map(ShardId).filter(|s| self.replicas(*s).contains(&node)).collect()
    }

    /// Public gRPC address of `node` (for clients).
    pub fn grpc_addr(&self, node: NodeId) -> Option<&str> {
        self.nodes.get(&node).map(|n| n.grpc_addr.as_str())
    }

    /// Node-to-node address of `node` (for Raft and forwarded calls).
    pub fn peer_addr(&self, node: NodeId) -> Option<&str> {
        self.nodes.get(&node).map(|n| n.peer_addr.as_str())
    }

    /// Applies `cmd`. A rejected command leaves the map unchanged and says why.
    // tidy: long (one match over every meta command, each arm the whole rule for its command).
    pub fn apply(&mut self, cmd: &MetaCommand) -> Result<(), String> {
        match cmd {
            MetaCommand::Bootstrap {
                cluster_id,
                shard_count,
                replication_factor,
                settings,
                node,
                tenant,
                admin_token,
            } => {
                if self.is_bootstrapped() {
                    return Err(format!("cluster {:016x} is already bootstrapped", self.cluster_id));
                }
                if *shard_count == 0 || *replication_factor == 0 {
                    return Err("shard_count and replication_factor must be positive".into());
                }
                settings.check()?;
                hotlake_types::model::check_tenant(tenant)?;
                if let Some(token) = admin_token {
                    token.check()?;
                    self.tokens.insert(token.id, token.clone());
                }
                self.tenants.insert(tenant.clone(), TenantSettings::default());
                self.settings = settings.clone();
                self.cluster_id = *cluster_id;
                self.shard_count = *shard_count;
                self.replication_factor = *replication_factor;
                self.nodes.insert(node.id, NodeInfo { state: NodeState::Active, ..node.clone() });
                self.shards = (0..*shard_count).map(|_| Placement { replicas: vec![node.id], epoch: 1 }).collect();
            }
            MetaCommand::AddNode(info) => {
                self.require_bootstrapped()?;
                info.check()?;
                if self.removed.contains(&info.incarnation) {
                    return Err("this data directory belonged to a node that was removed from the cluster; \
                                its replicas were moved away. To join again as a new node, start it \
                                with an empty data directory"
                        .into());
                }
                let placed = self.shards_on(info.id).len();
                match self.nodes.get_mut(&info.id) {
                    // Incarnation 0: added by hand before it ever ran; any disk may claim it.
                    Some(known) if known.incarnation != 0 && known.incarnation != info.incarnation && placed > 0 => {
                        return Err(lost_disk(info.id, placed));
                    }
                    Some(known)
                        if known.grpc_addr == info.grpc_addr
                            && known.http_addr == info.http_addr
                            && known.peer_addr == info.peer_addr
                            && known.incarnation == info.incarnation =>
                    {
                        return Ok(());
                    }
                    // A new disk under the id of a node being removed must not take over its
                    // entry: the removal would then remember (and refuse for good) the new
                    // disk instead of the old one.
                    Some(known) if known.incarnation != info.incarnation && known.state == NodeState::Removing => {
                        return Err(format!(
                            "node {} is being removed; its new data directory can join once the removal is done",
                            info.id
                        ));
                    }
                    Some(known) => {
                        known.grpc_addr = info.grpc_addr.clone();
                        known.http_addr = info.http_addr.clone();
                        known.peer_addr = info.peer_addr.clone();
                        known.incarnation = info.incarnation;
                    }
                    None => {
                        if let Some(other) =
                            self.nodes.values().find(|n| n.grpc_addr == info.grpc_addr || n.peer_addr == info.peer_addr)
                        {
                            return Err(format!(
                                "address {} or {} already belongs to node {}; give each node its own addresses",
                                info.grpc_addr, info.peer_addr, other.id
                            ));
                        }
                        self.nodes.insert(info.id, NodeInfo { state: NodeState::Active, ..info.clone() });
                    }
                }
            }
            MetaCommand::SetNodeState { node, state } => {
                let n = self.nodes.get_mut(node).ok_or_else(|| format!("node {node} is not a member"))?;
                if n.state == *state {
                    return Ok(());
                }
                n.state = *state;
            }
            MetaCommand::RemoveNode { node } => {
                let n = self.nodes.get(node).ok_or_else(|| format!("node {node} is not a member"))?;
                // The removal is planned on a map read before it is proposed. A node removed
                // and back with a new data directory in between is an active member: a removal
                // planned for its old entry must not take the new one out.
                if n.state != NodeState::Removing {
                    return Err(format!("node {node} is not being removed; drain it first"));
                }
                let held = self.shards_on(*node);
                if !held.is_empty() {
                    return Err(format!("node {node} still holds {} replicas; drain it first", held.len()));
                }
                if self.nodes.len() == 1 {
                    return Err("the last node of a cluster cannot be removed".into());
                }
                if let Some(gone) = self.nodes.remove(node) {
                    self.removed.push(gone.incarnation);
                    if self.removed.len() > REMOVED_REMEMBERED_MAX {
                        self.removed.remove(0);
                    }
                }
            }
            MetaCommand::SetPlacement { shard, replicas, epoch } => {
                let p = self.shards.get(shard.0 as usize).ok_or_else(|| format!("no shard {shard}"))?;
                if p.epoch != *epoch {
                    return Err(format!("placement of {shard} is at epoch {}, not {epoch}", p.epoch));
                }
                if replicas.is_empty() {
                    return Err(format!("placement of {shard} must keep at least one replica"));
                }
                let mut sorted = replicas.clone();
                sorted.sort_unstable();
                sorted.dedup();
                if sorted.len() != replicas.len() {
                    return Err(format!("placement of {shard} names a node twice"));
                }
                if let Some(unknown) = sorted.iter().find(|n| !self.nodes.contains_key(n)) {
                    return Err(format!("placement of {shard} names node {unknown}, which is not a member"));
                }
                let p = &mut self.shards[shard.0 as usize];
                p.replicas = sorted;
                p.epoch += 1;
            }
            MetaCommand::CreateTenant { name, settings, if_absent } => {
                self.require_bootstrapped()?;
                hotlake_types::model::check_tenant(name)?;
                settings.check()?;
                if self.tenants.contains_key(name) {
                    return if *if_absent { Ok(()) } else { Err(format!("tenant {name:?} already exists")) };
                }
                if self.tenants.len() >= TENANTS_MAX {
                    return Err(format!("the cluster already holds {TENANTS_MAX} tenants, the most it takes"));
                }
                self.tenants.insert(name.clone(), settings.clone());
            }
            MetaCommand::SetTenant { name, settings } => {
                settings.check()?;
                let t = self.tenants.get_mut(name).ok_or_else(|| format!("tenant {name:?} does not exist"))?;
                if t == settings {
                    return Ok(());
                }
                *t = settings.clone();
            }
            MetaCommand::CreateToken(token) => {
                self.require_bootstrapped()?;
                token.check()?;
                if self.tokens.contains_key(&token.id) {
                    return Err(format!("token id {} is taken", token.id));
                }
                if self.tokens.len() >= TOKENS_MAX {
                    return Err(format!("the cluster already holds {TOKENS_MAX} tokens, the most it takes"));
                }
                if let Some(missing) =
                    token.scopes.iter().filter_map(|s| s.tenant.as_ref()).find(|t| !self.tenants.contains_key(*t))
                {
                    return Err(format!("tenant {missing:?} does not exist; create it first"));
                }
                self.tokens.insert(token.id, token.clone());
            }
            MetaCommand::RevokeToken { id } => {
                if self.tokens.remove(id).is_none() {
                    return Err(format!("no token with id {id}"));
                }
            }
            MetaCommand::Consumers(_) => {
                return Err("consumer group commands change the consumer groups, not the map".into());
            }
        }
        self.version += 1;
        if cmd.changes_routing() {
            self.routing_version += 1;
        }
        Ok(())
    }

    fn require_bootstrapped(&self) -> Result<(), String> {
        if self.is_bootstrapped() {
            Ok(())
        } else {
            Err("the cluster is not bootstrapped yet".into())
        }
    }
}

/// Why a node that lost its data directory cannot rejoin as itself yet.
pub fn lost_disk(node: NodeId, placed: usize) -> String {
    format!(
        "node {node} came back with an empty data directory while {placed} replicas are still placed on it; \
         the lost replicas may have held acknowledged writes and votes that the other replicas count on. \
         Remove it first (`hotlakectl node remove {node}` moves its replicas away), then start it again, \
         or start it with a new node id"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: NodeId) -> NodeInfo {
        NodeInfo {
            id,
            grpc_addr: format!("127.0.0.{id}:7101"),
            http_addr: format!("127.0.0.{id}:7181"),
            peer_addr: format!("127.0.0.{id}:7191"),
            state: NodeState::Active,
            incarnation: id * 100,
        }
    }

    fn bootstrapped() -> ClusterMap {
        let mut m = ClusterMap::default();
        m.apply(&MetaCommand::Bootstrap {
            cluster_id: 7,
            shard_count: 4,
            replication_factor: 3,
            settings: ClusterSettings::for_tests(),
            node: node(1),
            tenant: "default".into(),
            admin_token: None,
        })
        .unwrap();
        m
    }

    #[test]
    fn bootstrap_refuses_settings_no_cluster_can_run_with() {
        for settings in [
            ClusterSettings { device_tag: String::new(), ..ClusterSettings::for_tests() },
            ClusterSettings { device_tag: "a\0b".into(), ..ClusterSettings::for_tests() },
            ClusterSettings { block_window_ms: 0, ..ClusterSettings::for_tests() },
        ] {
            let mut m = ClusterMap::default();
            let cmd = MetaCommand::Bootstrap {
                cluster_id: 7,
                shard_count: 4,
                replication_factor: 3,
                settings,
                node: node(1),
                tenant: "default".into(),
                admin_token: None,
            };
            assert!(m.apply(&cmd).is_err());
            assert_eq!(m, ClusterMap::default(), "a refused bootstrap changes nothing");
        }
    }

    #[test]
    fn bootstrap_places_every_shard_on_the_first_node_once() {
        let mut m = bootstrapped();
        assert_eq!(m.shards.len(), 4);
        assert!(m.shards.iter().all(|p| p.replicas == vec![1]));
        let again = MetaCommand::Bootstrap {
            cluster_id: 8,
            shard_count: 4,
            replication_factor: 3,
            settings: ClusterSettings::for_tests(),
            node: node(2),
            tenant: "default".into(),
            admin_token: None,
        };
        assert!(m.apply(&again).is_err());
        assert_eq!(m.cluster_id, 7);
    }

    #[test]
    fn tenants_and_tokens_are_checked_and_a_refusal_changes_nothing() {
        use crate::access::{Scope, TenantSettings, TokenRecord};
        let mut m = bootstrapped();
        assert!(m.tenants.contains_key("default"), "bootstrap creates the default tenant");
        let create = |name: &str, if_absent| MetaCommand::CreateTenant {
            name: name.into(),
            settings: TenantSettings { retention_s: 3600 },
            if_absent,
        };
        let routing = m.routing_version;
        m.apply(&create("fleet", false)).unwrap();
        assert_eq!(m.routing_version, routing, "a tenant never makes a client's routing stale");
        let version = m.version;
        for refused in [
            create("fleet", false),
            create("", false),
            create(&"x".repeat(300), false),
            MetaCommand::CreateTenant {
                name: "big".into(),
                settings: TenantSettings { retention_s: u64::MAX },
                if_absent: false,
            },
            MetaCommand::SetTenant { name: "nobody".into(), settings: TenantSettings::default() },
            MetaCommand::RevokeToken { id: 3 },
            MetaCommand::CreateToken(TokenRecord::new(
                3,
                "t".into(),
                &"s".repeat(40),
                vec![Scope::parse("read:nobody").unwrap()],
                0,
            )),
            MetaCommand::CreateToken(TokenRecord::new(3, "t".into(), &"s".repeat(40), vec![], 0)),
        ] {
            let before = m.clone();
            assert!(m.apply(&refused).is_err(), "{refused:?} must be refused");
            assert_eq!(m, before, "{refused:?} changed the map");
        }
        assert_eq!(m.version, version);
        m.apply(&create("fleet", true)).unwrap();
        assert_eq!(m.tenants["fleet"].retention_s, 3600, "if_absent leaves an existing tenant as it is");
        let token = TokenRecord::new(3, "t".into(), &"s".repeat(40), vec![Scope::parse("read:fleet").unwrap()], 0);
        m.apply(&MetaCommand::CreateToken(token.clone())).unwrap();
        assert!(m.apply(&MetaCommand::CreateToken(token)).is_err(), "an id is never reused");
        m.apply(&MetaCommand::RevokeToken { id: 3 }).unwrap();
        assert!(m.tokens.is_empty());
    }

    #[test]
    fn placement_changes_only_at_the_planned_epoch() {
        let mut m = bootstrapped();
        m.apply(&MetaCommand::AddNode(node(2))).unwrap();
        let change = MetaCommand::SetPlacement { shard: ShardId(0), replicas: vec![2, 1], epoch: 1 };
        m.apply(&change).unwrap();
        assert_eq!(m.replicas(ShardId(0)), &[1, 2]);
        let version = m.version;
        assert!(m.apply(&change).is_err(), "a stale epoch is rejected");
        assert_eq!(m.version, version, "a rejected command changes nothing");
        let unknown = MetaCommand::SetPlacement { shard: ShardId(1), replicas: vec![9], epoch: 1 };
        assert!(m.apply(&unknown).is_err());
    }

    #[test]
    fn a_node_holding_replicas_is_not_removed() {
        let mut m = bootstrapped();
        m.apply(&MetaCommand::AddNode(node(2))).unwrap();
        m.apply(&MetaCommand::SetNodeState { node: 1, state: NodeState::Removing }).unwrap();
        assert!(m.apply(&MetaCommand::RemoveNode { node: 1 }).is_err());
        m.apply(&MetaCommand::SetNodeState { node: 2, state: NodeState::Removing }).unwrap();
        m.apply(&MetaCommand::RemoveNode { node: 2 }).unwrap();
        assert!(!m.nodes.contains_key(&2));
        let err = m.apply(&MetaCommand::AddNode(node(2))).unwrap_err();
        assert!(err.contains("was removed"), "the removed data directory does not come back: {err}");
        m.apply(&MetaCommand::AddNode(NodeInfo { incarnation: 7, ..node(2) })).unwrap();
    }

    /// Found by the simulator: a wiped node retrying its join while the operator removed its
    /// old entry took the entry over once its replicas had moved away, so the removal banned
    /// the new disk and it could never join.
    #[test]
    fn a_new_disk_does_not_take_over_the_entry_of_a_node_being_removed() {
        let mut m = bootstrapped();
        m.apply(&MetaCommand::AddNode(node(2))).unwrap();
        m.apply(&MetaCommand::SetNodeState { node: 2, state: NodeState::Removing }).unwrap();
        let new_disk = NodeInfo { incarnation: 7, ..node(2) };
        let err = m.apply(&MetaCommand::AddNode(new_disk.clone())).unwrap_err();
        assert!(err.contains("being removed"), "{err}");
        m.apply(&MetaCommand::RemoveNode { node: 2 }).unwrap();
        assert!(m.apply(&MetaCommand::AddNode(node(2))).unwrap_err().contains("was removed"));
        m.apply(&MetaCommand::AddNode(new_disk)).unwrap();
        assert_eq!(m.nodes[&2].incarnation, 7);
    }

    /// Removals are planned on a map read before they are proposed: one planned for a node's
    /// old entry must not take out the new data directory that joined in its place since.
    #[test]
    fn a_removal_does_not_take_out_a_node_that_joined_again() {
        let mut m = bootstrapped();
        m.apply(&MetaCommand::AddNode(node(2))).unwrap();
        m.apply(&MetaCommand::SetNodeState { node: 2, state: NodeState::Removing }).unwrap();
        m.apply(&MetaCommand::RemoveNode { node: 2 }).unwrap();
        m.apply(&MetaCommand::AddNode(NodeInfo { incarnation: 7, ..node(2) })).unwrap();
        let version = m.version;
        let err = m.apply(&MetaCommand::RemoveNode { node: 2 }).unwrap_err();
        assert!(err.contains("not being removed"), "{err}");
        assert_eq!((m.version, m.nodes[&2].incarnation), (version, 7), "the new member stays");
    }

    #[test]
    fn an_unusable_registration_is_refused_and_changes_nothing() {
        let mut m = bootstrapped();
        let before = m.clone();
        for bad in [
            NodeInfo { id: 0, ..node(2) },
            NodeInfo { grpc_addr: String::new(), ..node(2) },
            NodeInfo { http_addr: "x".repeat(ADDR_BYTES_MAX + 1), ..node(2) },
            NodeInfo { grpc_addr: "10.0.0.2:7101 extra".into(), ..node(2) },
            NodeInfo { peer_addr: String::new(), ..node(2) },
            NodeInfo { peer_addr: node(1).peer_addr, ..node(5) },
        ] {
            assert!(m.apply(&MetaCommand::AddNode(bad)).is_err());
        }
        assert_eq!(m, before);
    }

    #[test]
    fn re_adding_a_node_is_idempotent_and_addresses_are_unique() {
        let mut m = bootstrapped();
        m.apply(&MetaCommand::AddNode(node(2))).unwrap();
        let version = m.version;
        m.apply(&MetaCommand::AddNode(node(2))).unwrap();
        assert_eq!(m.version, version);
        let clash = NodeInfo { id: 3, ..node(2) };
        assert!(m.apply(&MetaCommand::AddNode(clash)).is_err());
    }

    #[test]
    fn a_node_with_a_new_disk_rejoins_only_after_its_replicas_moved_away() {
        let mut m = bootstrapped();
        m.apply(&MetaCommand::AddNode(node(2))).unwrap();
        m.apply(&MetaCommand::SetPlacement { shard: ShardId(0), replicas: vec![1, 2], epoch: 1 }).unwrap();
        let wiped = NodeInfo { incarnation: 999, ..node(2) };
        let err = m.apply(&MetaCommand::AddNode(wiped.clone())).unwrap_err();
        assert!(err.contains("empty data directory"), "{err}");
        assert_eq!(m.nodes[&2].incarnation, 200, "the rejected join changed nothing");
        m.apply(&MetaCommand::AddNode(node(2))).unwrap(); // the same disk rejoining is fine
        m.apply(&MetaCommand::SetPlacement { shard: ShardId(0), replicas: vec![1], epoch: 2 }).unwrap();
        m.apply(&MetaCommand::AddNode(wiped)).unwrap();
        assert_eq!(m.nodes[&2].incarnation, 999);
    }
}
