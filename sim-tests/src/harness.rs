//! Starting simulated nodes and clients.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use hotlake_node::config::Config;
use hotlake_node::node::Node;
use hotlake_storage::MemEngine;

/// Address of the simulated node's gRPC server.
pub const NODE_ADDR: &str = "10.0.0.1:7101";
/// Address of the simulated node's peer server.
pub const NODE_PEER_ADDR: &str = "10.0.0.1:7191";
/// The port every simulated node's peer listener uses (gRPC is on 7101).
pub const PEER_PORT: u16 = 7191;

/// A simulated node: its host, its engine (kept across restarts) and its shard count.
pub struct SimNode {
    /// The simulated host.
    pub host: madsim::runtime::NodeHandle,
    /// The engine; survives restarts of the host, like a disk.
    pub engine: MemEngine,
}

/// The node configuration used in simulation.
pub fn sim_config() -> Config {
    let mut c =
        Config { shard_count: 4, grpc_addr: NODE_ADDR.into(), peer_addr: NODE_PEER_ADDR.into(), ..Config::default() };
    // Small memtables so flushes and log purges happen within short runs.
    c.storage.shard_memtable_bytes_max = 16 << 10;
    // The simulator tests replication, not access: its clients send no token.
    c.auth.enabled = false;
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
                    serve(node).await;
                }
            })
            .build();
        SimNode { host, engine }
    }
}

/// Serves a node's public gRPC and peer listeners, at the addresses of its configuration,
/// for as long as its host runs.
async fn serve(node: Arc<Node>) {
    let config = node.config();
    let grpc: SocketAddr = config.grpc_addr.parse().expect("valid gRPC address");
    let peer: SocketAddr = config.peer_addr.parse().expect("valid peer address");
    let public = hotlake_node::server::serve_grpc(node.clone(), grpc, std::future::pending());
    let internal = hotlake_node::server::serve_peer(node.clone(), peer, std::future::pending());
    let (public, internal) = tokio::join!(public, internal);
    public.expect("serve gRPC");
    internal.expect("serve peers");
}

/// A node of a simulated cluster.
pub struct ClusterNode {
    /// Node id (also the last octet of its address).
    pub id: u64,
    /// gRPC address.
    pub addr: String,
    /// The simulated host.
    pub host: madsim::runtime::NodeHandle,
    /// The node's "disk"; survives restarts, replaced by [`SimCluster::wipe`].
    disk: Arc<Mutex<MemEngine>>,
}

impl ClusterNode {
    /// The node's current engine.
    pub fn engine(&self) -> MemEngine {
        self.disk.lock().unwrap().clone()
    }
}

/// Changes a node's configuration before it starts (same for every start of that node).
pub type ConfigTweak = Arc<dyn Fn(&mut Config) + Send + Sync>;

/// Several simulated nodes forming one cluster: node 1 bootstraps, the others join it.
pub struct SimCluster {
    /// Nodes, by id − 1.
    pub nodes: Vec<ClusterNode>,
    tweak: ConfigTweak,
}

/// Prints the nodes' logs when `HOTLAKE_SIM_LOG` is set (a filter such as
/// `hotlake_node::cluster=info`); call at the start of a test. Log lines carry simulated time.
pub fn init_logging() {
    if let Ok(filter) = std::env::var("HOTLAKE_SIM_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_timer(SimTime)
            .with_test_writer()
            .try_init();
    }
}

struct SimTime;

impl tracing_subscriber::fmt::time::FormatTime for SimTime {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        write!(w, "{:?}", madsim::time::Instant::now())
    }
}

/// Shards of a simulated cluster.
pub const SIM_SHARDS: u32 = 4;

/// Nodes 1..=3 are the seeds every later node joins through.
const SEEDS: u64 = 3;

/// Configuration of cluster node `id`.
pub fn cluster_config(id: u64) -> Config {
    let mut c = Config {
        node_id: id,
        shard_count: SIM_SHARDS,
        grpc_addr: format!("10.0.0.{id}:7101"),
        http_addr: format!("10.0.0.{id}:7181"),
        peer_addr: format!("10.0.0.{id}:{PEER_PORT}"),
        ..Config::default()
    };
    if id > 1 {
        c.cluster.join = (1..=SEEDS).filter(|s| *s != id).map(|s| format!("10.0.0.{s}:{PEER_PORT}")).collect();
    }
    c.cluster.reconcile_interval_ms = 200;
    c.storage.shard_memtable_bytes_max = 16 << 10;
    // The simulator tests replication, not access: its clients send no token.
    c.auth.enabled = false;
    c
}

impl SimCluster {
    /// Starts `n` nodes with [`cluster_config`].
    pub fn start(n: u64) -> SimCluster {
        Self::start_with(n, Arc::new(|_| {}))
    }

    /// Starts `n` nodes with [`cluster_config`] changed by `tweak`.
    pub fn start_with(n: u64, tweak: ConfigTweak) -> SimCluster {
        let mut cluster = SimCluster { nodes: Vec::new(), tweak };
        for _ in 0..n {
            cluster.add_node();
        }
        cluster
    }

    /// Starts one more node (the next id), which joins the cluster. Returns its id.
    pub fn add_node(&mut self) -> u64 {
        let id = self.nodes.len() as u64 + 1;
        let disk = Arc::new(Mutex::new(MemEngine::new()));
        let (d, tweak) = (disk.clone(), self.tweak.clone());
        let host = madsim::runtime::Handle::current()
            .create_node()
            .name(format!("node-{id}"))
            .ip(format!("10.0.0.{id}").parse().expect("valid ip"))
            .init(move || {
                let engine = d.lock().unwrap().clone();
                let tweak = tweak.clone();
                async move {
                    let mut config = cluster_config(id);
                    tweak(&mut config);
                    let node: Arc<Node> = Node::open(config, Arc::new(engine)).await.expect("node opens");
                    node.start_background();
                    serve(node).await;
                }
            })
            .build();
        self.nodes.push(ClusterNode { id, addr: format!("10.0.0.{id}:7101"), host, disk });
        id
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
        self.node(id).engine().crash()
    }

    /// Kills node `id`, gives it an empty disk (a replaced drive) and starts it again with the
    /// same id and addresses.
    pub fn wipe(&self, id: u64) {
        self.kill(id);
        *self.node(id).disk.lock().unwrap() = MemEngine::new();
        self.restart(id);
    }

    /// Restarts node `id` on its engine.
    pub fn restart(&self, id: u64) {
        madsim::runtime::Handle::current().restart(self.node(id).host.id());
    }

    /// gRPC addresses of every node ever started (members or not).
    pub fn addrs(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.addr.clone()).collect()
    }
}
