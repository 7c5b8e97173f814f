//! Starting simulated nodes and clients.

use std::net::SocketAddr;
use std::sync::Arc;

use hotlake_node::config::Config;
use hotlake_node::node::Node;
use hotlake_node::storage::MemEngine;

/// Address of the simulated node's gRPC server.
pub const NODE_ADDR: &str = "10.0.0.1:7101";

/// A simulated node: its host, its engine (kept across restarts) and its shard count.
pub struct SimNode {
    /// The simulated host.
    pub host: madsim::runtime::NodeHandle,
    /// The engine; survives restarts of the host, like a disk.
    pub engine: MemEngine,
}

/// The node configuration used in simulation.
pub fn sim_config() -> Config {
    let mut c = Config { shard_count: 4, grpc_addr: NODE_ADDR.into(), ..Config::default() };
    // Small memtables so flushes and log purges happen within short runs.
    c.storage.shard_memtable_bytes_max = 16 << 10;
    c
}

impl SimNode {
    /// Starts a host running a node over `engine` and its gRPC server.
    pub fn start(engine: MemEngine) -> SimNode {
        let handle = madsim::runtime::Handle::current();
        let e = engine.clone();
        let host = handle
            .create_node()
            .name("node-1")
            .ip("10.0.0.1".parse().expect("valid ip"))
            .init(move || {
                let e = e.clone();
                async move {
                    let node: Arc<Node> = Node::open(sim_config(), Arc::new(e)).await.expect("node opens");
                    node.start_background();
                    let addr: SocketAddr = NODE_ADDR.parse().expect("valid addr");
                    hotlake_node::server::serve_grpc(node, addr, std::future::pending()).await.expect("serve");
                }
            })
            .build();
        SimNode { host, engine }
    }
}

/// A node of a simulated cluster.
pub struct ClusterNode {
    /// Node id (also the last octet of its address).
    pub id: u64,
    /// gRPC address.
    pub addr: String,
    /// The simulated host.
    pub host: madsim::runtime::NodeHandle,
    /// The node's "disk"; survives restarts.
    pub engine: MemEngine,
}

/// Several simulated nodes forming one cluster: node 1 bootstraps, the others join it.
pub struct SimCluster {
    /// Nodes, by id − 1.
    pub nodes: Vec<ClusterNode>,
}

/// Configuration of cluster node `id`.
pub fn cluster_config(id: u64) -> Config {
    let mut c = Config {
        node_id: id,
        shard_count: 4,
        grpc_addr: format!("10.0.0.{id}:7101"),
        http_addr: format!("10.0.0.{id}:7181"),
        ..Config::default()
    };
    if id > 1 {
        c.cluster.join = vec!["10.0.0.1:7101".into()];
    }
    c.cluster.reconcile_interval_ms = 200;
    c.storage.shard_memtable_bytes_max = 16 << 10;
    c
}

impl SimCluster {
    /// Starts `n` nodes.
    pub fn start(n: u64) -> SimCluster {
        let handle = madsim::runtime::Handle::current();
        let nodes = (1..=n)
            .map(|id| {
                let engine = MemEngine::new();
                let e = engine.clone();
                let host = handle
                    .create_node()
                    .name(format!("node-{id}"))
                    .ip(format!("10.0.0.{id}").parse().expect("valid ip"))
                    .init(move || {
                        let e = e.clone();
                        async move {
                            let config = cluster_config(id);
                            let addr: SocketAddr = config.grpc_addr.parse().expect("valid addr");
                            let node: Arc<Node> = Node::open(config, Arc::new(e)).await.expect("node opens");
                            node.start_background();
                            hotlake_node::server::serve_grpc(node, addr, std::future::pending()).await.expect("serve");
                        }
                    })
                    .build();
                ClusterNode { id, addr: format!("10.0.0.{id}:7101"), host, engine }
            })
            .collect();
        SimCluster { nodes }
    }

    /// The node with `id`.
    pub fn node(&self, id: u64) -> &ClusterNode {
        &self.nodes[id as usize - 1]
    }

    /// Kills node `id` (a process crash: what the engine synced survives).
    pub fn kill(&self, id: u64) {
        madsim::runtime::Handle::current().kill(self.node(id).host.id());
    }

    /// Kills node `id` and drops every write its engine had not synced (power loss).
    pub fn power_loss(&self, id: u64) -> usize {
        self.kill(id);
        self.node(id).engine.crash()
    }

    /// Restarts node `id` on its engine.
    pub fn restart(&self, id: u64) {
        madsim::runtime::Handle::current().restart(self.node(id).host.id());
    }

    /// gRPC addresses of every node.
    pub fn addrs(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.addr.clone()).collect()
    }
}
