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
