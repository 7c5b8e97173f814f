//! Node configuration: a TOML file (see `deploy/hotlake.toml`) overridden by command-line
//! flags. Every limit is here, named with its unit last.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;

use hotlake_cluster::map::ClusterSettings;
use hotlake_types::limits::Limits;
use serde::{Deserialize, Serialize};

/// Complete node configuration.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// This node's id.
    pub node_id: u64,
    /// Directory holding the node's RocksDB.
    pub data_dir: PathBuf,
    /// gRPC listen address of the public API (data and admin services).
    pub grpc_addr: String,
    /// HTTP listen address (line protocol, JSON queries, health, metrics).
    pub http_addr: String,
    /// Listen address of the node-to-node service (Raft, forwarded calls, joins); other
    /// nodes' `cluster.join` names this address. Keep it reachable by the other nodes only.
    pub peer_addr: String,
    /// Host name or IP address that other nodes and clients reach this node by, used with the
    /// ports of the three listen addresses; empty: the listen addresses as they are. Needed
    /// when the node listens on a wildcard address (`0.0.0.0`, `[::]`) or on one others cannot
    /// use, as in a container or a Kubernetes pod with a stable DNS name.
    pub advertise_host: String,
    /// Number of shards on the ring, fixed when the data directory is created.
    pub shard_count: u32,
    /// Tag whose value is the device key of a series; series without it use their series key.
    /// Fixed when the cluster is created (the cluster map keeps it).
    pub device_tag: String,
    /// Tenant used when a request names none.
    pub default_tenant: String,
    /// Engine and memory settings.
    pub storage: StorageConfig,
    /// Limits on requests.
    pub limits: Limits,
    /// No longer read: tenants and their retention live in the cluster map (`hotlakectl
    /// tenant`). Kept only so a configuration that still sets them is refused with that advice.
    #[serde(skip_serializing)]
    pub tenants: BTreeMap<String, toml::Value>,
    /// Tokens.
    pub auth: AuthConfig,
    /// TLS on every listener, and mutual TLS between nodes.
    pub tls: TlsConfig,
    /// Cluster membership, replication and rebalancing.
    pub cluster: ClusterConfig,
    /// The change feed each shard keeps, and the subscriptions reading it.
    pub feed: FeedConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node_id: 1,
            data_dir: PathBuf::from("hotlake-data"),
            grpc_addr: "127.0.0.1:7101".into(),
            http_addr: "127.0.0.1:7181".into(),
            peer_addr: "127.0.0.1:7191".into(),
            advertise_host: String::new(),
            shard_count: 64,
            device_tag: "device_id".into(),
            default_tenant: "default".into(),
            storage: StorageConfig::default(),
            limits: Limits::default(),
            tenants: BTreeMap::new(),
            auth: AuthConfig::default(),
            tls: TlsConfig::default(),
            cluster: ClusterConfig::default(),
            feed: FeedConfig::default(),
        }
    }
}

/// Engine and memory settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// A shard flushes its memtable when it holds this many bytes.
    pub shard_memtable_bytes_max: u64,
    /// All memtables of the node together; above it the largest is flushed.
    pub node_memtable_bytes_max: u64,
    /// Above this, writes are refused with a retryable `overloaded` error until flushes catch up.
    pub node_memtable_bytes_hard_max: u64,
    /// A memtable older than this is flushed even if small.
    pub memtable_age_ms_max: u64,
    /// Width of the aligned time window a block may span. Fixed when the cluster is created
    /// (the cluster map keeps it).
    pub block_window_ms: u64,
    /// RocksDB shared block cache.
    pub block_cache_bytes: u64,
    /// RocksDB memtables (write buffers) of all column families together.
    pub rocksdb_write_buffer_bytes: u64,
    /// How often retention is enforced.
    pub retention_check_interval_ms: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            shard_memtable_bytes_max: 32 << 20,
            node_memtable_bytes_max: 1 << 30,
            node_memtable_bytes_hard_max: 2 << 30,
            memtable_age_ms_max: 10 * 60 * 1000,
            block_window_ms: 6 * 3600 * 1000,
            block_cache_bytes: 256 << 20,
            rocksdb_write_buffer_bytes: 128 << 20,
            retention_check_interval_ms: 60_000,
        }
    }
}

/// Cluster membership, replication and rebalancing.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Peer addresses (`peer_addr`) of members to join through. Empty: this node bootstraps a new cluster
    /// when its data directory holds none.
    pub join: Vec<String>,
    /// `auto`: a node with no cluster in its data directory and no `join` creates one at start.
    /// `manual`: it waits for `hotlakectl cluster init` (`POST /api/v1/cluster/init`), so that
    /// nodes started together with the same `join` list never create two clusters.
    pub bootstrap: String,
    /// Voting replicas per shard (used when the cluster is bootstrapped).
    pub replication_factor: u32,
    /// Voters of the meta group; further nodes follow it as learners.
    pub meta_voters_max: u32,
    /// Shards whose replicas may be moving at the same time.
    pub moves_concurrent_max: u32,
    /// Pace of each snapshot stream sent to a new or lagging replica, bytes per second.
    pub snapshot_bytes_per_s_max: u64,
    /// Bytes per snapshot chunk on the wire; each side of a stream holds about two in memory.
    pub snapshot_chunk_bytes_max: u64,
    /// A node not heard from for this long has its replicas re-created elsewhere.
    pub node_down_replace_s: u64,
    /// Timeout of one request forwarded to another node.
    pub forward_timeout_ms: u64,
    /// How long a write or query keeps retrying on leader changes before it fails.
    pub route_timeout_ms: u64,
    /// How often a node reconciles its replicas with the map and reports to the meta leader.
    pub reconcile_interval_ms: u64,
    /// Raft heartbeat interval.
    pub raft_heartbeat_ms: u64,
    /// Lower bound of the Raft election timeout; see [`ClusterConfig::raft_election_timeout_max_ms`].
    pub raft_election_timeout_ms: u64,
    /// Bytes of log entries one replication request carries (at least one entry goes). An
    /// entry is a whole client batch; a request must arrive well within the heartbeat interval,
    /// openraft's replication timeout.
    pub raft_append_bytes_max: u64,
    /// Least time a Raft RPC is given before it is abandoned. openraft 0.9 gives an
    /// `AppendEntries` only the heartbeat interval; under load that abandoned requests that
    /// were about to finish and sent them again whole.
    pub raft_rpc_timeout_ms: u64,
    /// Proposals to one shard that may wait for commit at once; more are refused at once as
    /// `overloaded` (HTTP 429) rather than queued behind them.
    pub shard_proposals_inflight_max: u64,
}

impl Config {
    /// The gRPC address others reach this node by (see [`Config::advertise_host`]).
    pub fn advertised_grpc_addr(&self) -> String {
        self.advertised(&self.grpc_addr)
    }

    /// The HTTP address others reach this node by.
    pub fn advertised_http_addr(&self) -> String {
        self.advertised(&self.http_addr)
    }

    /// The node-to-node address others reach this node by.
    pub fn advertised_peer_addr(&self) -> String {
        self.advertised(&self.peer_addr)
    }

    fn advertised(&self, listen: &str) -> String {
        let port = listen.rsplit_once(':').map_or("", |(_, port)| port);
        match self.advertise_host.as_str() {
            "" => listen.to_string(),
            host if host.contains(':') => format!("[{host}]:{port}"),
            host => format!("{host}:{port}"),
        }
    }
}

impl ClusterConfig {
    /// Upper bound of the randomized Raft election timeout: 1.5 × the lower bound.
    ///
    /// openraft 0.9 also takes it as the leader lease: a follower that has heard from a leader
    /// refuses votes for a lease after the last message, and stands itself only after the lease
    /// plus its own timeout. A leader's death is therefore noticed after `max + [min, max)`
    /// (plus a tick of 1.5 heartbeats), so failover time is bounded by about twice this value;
    /// a narrower spread than `[t, 2t]` keeps that bound low while the timeouts of a group's
    /// voters still differ by more than a vote's round trip.
    pub fn raft_election_timeout_max_ms(&self) -> u64 {
        self.raft_election_timeout_ms * 3 / 2
    }
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            join: Vec::new(),
            bootstrap: "auto".into(),
            replication_factor: 3,
            meta_voters_max: 3,
            moves_concurrent_max: 4,
            snapshot_bytes_per_s_max: 64 << 20,
            snapshot_chunk_bytes_max: 1 << 20,
            node_down_replace_s: 300,
            forward_timeout_ms: 10_000,
            route_timeout_ms: 15_000,
            reconcile_interval_ms: 500,
            raft_heartbeat_ms: 200,
            raft_election_timeout_ms: 700,
            raft_append_bytes_max: 1 << 20,
            raft_rpc_timeout_ms: 1000,
            shard_proposals_inflight_max: 64,
        }
    }
}

/// The change feed each shard replica keeps (what every applied write wrote, by log index)
/// and the subscriptions that read it. A subscription's cursor older than what is kept is
/// refused with the oldest cursor still served.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FeedConfig {
    /// Flushed feed entries older than this are dropped.
    pub retention_s: u64,
    /// Per shard replica, flushed feed entries beyond this many bytes are dropped, oldest first.
    pub shard_bytes_max: u64,
    /// Subscriptions this node serves at once.
    pub subscribers_max: u32,
    /// Subscriptions one tenant may have on this node at once.
    pub subscribers_per_tenant_max: u32,
    /// Points a subscription reads from one shard before it looks at the others (and the most
    /// one delivered message carries, short of one feed entry).
    pub read_points_max: u32,
    /// Messages buffered for a subscriber that does not read; when full, the subscription
    /// stops reading until it does, and later catches up from the feed.
    pub subscriber_buffer_messages: u32,
}

impl Default for FeedConfig {
    fn default() -> Self {
        FeedConfig {
            retention_s: 24 * 3600,
            shard_bytes_max: 1 << 30,
            subscribers_max: 512,
            subscribers_per_tenant_max: 128,
            read_points_max: 10_000,
            subscriber_buffer_messages: 64,
        }
    }
}

/// Tokens.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Whether requests must carry a token. Fixed when the cluster is created (the map keeps
    /// it); `hotlake serve --insecure-no-auth` turns it off, for local experiments only.
    pub enabled: bool,
    /// When this node creates the cluster: the first admin token is read from this file if it
    /// exists, else made up and written there (readable by its owner only). Empty: the token is
    /// printed once on stdout.
    pub bootstrap_token_file: PathBuf,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig { enabled: true, bootstrap_token_file: PathBuf::new() }
    }
}

/// TLS: all three files, or none (plaintext, for a private network or local experiments).
/// With them, the HTTP, gRPC and peer listeners accept TLS only, and the peer listener and this
/// node's connections to other nodes require a certificate signed by the cluster's CA (mutual
/// TLS). `hotlake cert` makes a CA and node certificates; the files are read again when they
/// change, without a restart.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// The cluster CA's certificate (PEM). Other nodes must present a certificate it signed.
    pub ca_file: PathBuf,
    /// This node's certificate chain (PEM), signed by the cluster CA. It must name the host of
    /// each of the node's addresses (`hotlake cert node --host`), as clients and other nodes
    /// check it against the address they connect to.
    pub cert_file: PathBuf,
    /// The private key of `cert_file` (PEM).
    pub key_file: PathBuf,
}

impl TlsConfig {
    /// Whether TLS is configured.
    pub fn enabled(&self) -> bool {
        !self.cert_file.as_os_str().is_empty()
    }
}

impl Config {
    /// The settings this node would create a cluster with.
    pub fn cluster_settings(&self) -> ClusterSettings {
        ClusterSettings {
            device_tag: self.device_tag.clone(),
            block_window_ms: self.storage.block_window_ms,
            auth: self.auth.enabled,
        }
    }

    /// How this configuration contradicts a cluster's settings, said so that the operator knows
    /// what to set; `None` when it agrees.
    pub fn contradiction(&self, cluster: &ClusterSettings) -> Option<String> {
        let mine = self.cluster_settings();
        let mut wrong = Vec::new();
        if mine.device_tag != cluster.device_tag {
            wrong.push(format!("device_tag is {:?} here but {:?} in the cluster", mine.device_tag, cluster.device_tag));
        }
        if mine.block_window_ms != cluster.block_window_ms {
            wrong.push(format!(
                "storage.block_window_ms is {} here but {} in the cluster",
                mine.block_window_ms, cluster.block_window_ms
            ));
        }
        if mine.auth != cluster.auth {
            wrong.push(format!(
                "auth.enabled is {} here but {} in the cluster{}",
                mine.auth,
                cluster.auth,
                if cluster.auth { " (drop --insecure-no-auth)" } else { " (start with --insecure-no-auth)" }
            ));
        }
        (!wrong.is_empty()).then(|| {
            format!(
                "this node's configuration contradicts the cluster's: {}. Every replica must apply them alike; \
                 set the cluster's values (or remove these settings) and start again",
                wrong.join("; ")
            )
        })
    }

    /// The three listen addresses: distinct, `HOST:PORT`, and named to others
    /// (`advertise_host`) when they listen on every interface.
    fn validate_addresses(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.peer_addr != self.grpc_addr && self.peer_addr != self.http_addr && self.grpc_addr != self.http_addr,
            "grpc_addr, http_addr and peer_addr must be three different addresses, got {:?}, {:?} and {:?}",
            self.grpc_addr,
            self.http_addr,
            self.peer_addr
        );
        for (name, listen) in
            [("grpc_addr", &self.grpc_addr), ("http_addr", &self.http_addr), ("peer_addr", &self.peer_addr)]
        {
            let (host, port) =
                listen.rsplit_once(':').with_context(|| format!("{name} must be HOST:PORT, got {listen:?}"))?;
            anyhow::ensure!(port.parse::<u16>().is_ok(), "{name} has no valid port: {listen:?}");
            let wildcard = matches!(host, "0.0.0.0" | "[::]" | "::");
            anyhow::ensure!(
                !wildcard || !self.advertise_host.is_empty(),
                "{name} {listen:?} listens on every interface: set advertise_host (--advertise-host) to the name or \
                 address other nodes and clients reach this node by"
            );
        }
        anyhow::ensure!(
            !self.advertise_host.contains(['/', ' ', '[', ']']) && !self.advertise_host.contains("://"),
            "advertise_host is a host name or IP address without port or scheme, got {:?}",
            self.advertise_host
        );
        Ok(())
    }

    /// Reads a TOML file.
    pub fn from_file(path: &std::path::Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path).with_context(|| format!("read config {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parse config {}", path.display()))
    }

    /// Checks values that would make the node misbehave.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            matches!(self.cluster.bootstrap.as_str(), "auto" | "manual"),
            "cluster.bootstrap must be \"auto\" or \"manual\", got {:?}",
            self.cluster.bootstrap
        );
        anyhow::ensure!(
            self.shard_count >= 1 && self.shard_count <= 4096,
            "shard_count must be 1..=4096, got {}",
            self.shard_count
        );
        anyhow::ensure!(!self.device_tag.is_empty(), "device_tag must not be empty");
        self.validate_addresses()?;
        let tls = [&self.tls.ca_file, &self.tls.cert_file, &self.tls.key_file];
        anyhow::ensure!(
            tls.iter().all(|f| f.as_os_str().is_empty()) || tls.iter().all(|f| !f.as_os_str().is_empty()),
            "tls.ca_file, tls.cert_file and tls.key_file go together: set all three, or none for plaintext"
        );
        let f = &self.feed;
        anyhow::ensure!(f.retention_s >= 60, "feed.retention_s must be at least 60");
        anyhow::ensure!(f.shard_bytes_max >= 1 << 20, "feed.shard_bytes_max must be at least 1048576");
        anyhow::ensure!(f.read_points_max >= 1, "feed.read_points_max must be at least 1");
        anyhow::ensure!(
            (1..=65536).contains(&f.subscriber_buffer_messages),
            "feed.subscriber_buffer_messages must be 1..=65536"
        );
        let c = &self.cluster;
        anyhow::ensure!(
            (1..=7).contains(&c.replication_factor),
            "cluster.replication_factor must be 1..=7, got {}",
            c.replication_factor
        );
        anyhow::ensure!((1..=7).contains(&c.meta_voters_max), "cluster.meta_voters_max must be 1..=7");
        anyhow::ensure!(c.moves_concurrent_max >= 1, "cluster.moves_concurrent_max must be at least 1");
        anyhow::ensure!(
            (4096..=64 << 20).contains(&c.snapshot_chunk_bytes_max),
            "cluster.snapshot_chunk_bytes_max must be 4096..=67108864"
        );
        anyhow::ensure!(
            c.raft_election_timeout_ms >= 3 * c.raft_heartbeat_ms && c.raft_heartbeat_ms >= 10,
            "cluster.raft_election_timeout_ms must be at least 3 × cluster.raft_heartbeat_ms (>= 10)"
        );
        anyhow::ensure!(
            (4096..=256 << 20).contains(&c.raft_append_bytes_max),
            "cluster.raft_append_bytes_max must be 4096..=268435456"
        );
        anyhow::ensure!(
            c.raft_rpc_timeout_ms >= c.raft_heartbeat_ms && c.raft_rpc_timeout_ms <= c.raft_election_timeout_ms * 2,
            "cluster.raft_rpc_timeout_ms must be between cluster.raft_heartbeat_ms and twice cluster.raft_election_timeout_ms"
        );
        anyhow::ensure!(c.shard_proposals_inflight_max >= 1, "cluster.shard_proposals_inflight_max must be at least 1");
        anyhow::ensure!(
            self.limits.write_inflight_bytes_max >= 1 << 20,
            "limits.write_inflight_bytes_max must be at least 1048576"
        );
        anyhow::ensure!(self.storage.block_window_ms >= 1000, "storage.block_window_ms must be at least 1000");
        anyhow::ensure!(self.limits.http_connections_max >= 1, "limits.http_connections_max must be at least 1");
        anyhow::ensure!(
            self.limits.grpc_connections_max >= 16,
            "limits.grpc_connections_max must be at least 16 (every other node of the cluster holds one)"
        );
        anyhow::ensure!(
            self.limits.http_header_read_timeout_ms >= 100,
            "limits.http_header_read_timeout_ms must be at least 100"
        );
        anyhow::ensure!(
            self.limits.grpc_streams_per_connection_max >= 100,
            "limits.grpc_streams_per_connection_max must be at least 100 (Raft traffic between two nodes shares one connection)"
        );
        anyhow::ensure!(self.limits.write_stream_idle_ms >= 100, "limits.write_stream_idle_ms must be at least 100");
        hotlake_types::model::check_tenant(&self.default_tenant)
            .map_err(|e| anyhow::anyhow!("default_tenant {:?}: {e}", self.default_tenant))?;
        if let Some(name) = self.tenants.keys().next() {
            anyhow::bail!(
                "[tenants.{name}]: tenant settings now live in the cluster map, so every node applies the same \
                 retention; remove the [tenants] section and run `hotlakectl tenant set {name} --retention-s N` \
                 (or `tenant create`)"
            );
        }
        anyhow::ensure!(
            self.storage.node_memtable_bytes_hard_max >= self.storage.node_memtable_bytes_max,
            "storage.node_memtable_bytes_hard_max must be >= storage.node_memtable_bytes_max"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_contradiction_with_the_cluster_names_both_values() {
        let c = Config::default();
        assert_eq!(c.contradiction(&c.cluster_settings()), None);
        let theirs = ClusterSettings { device_tag: "name".into(), block_window_ms: 3_600_000, auth: false };
        let why = c.contradiction(&theirs).unwrap();
        assert!(why.contains("auth.enabled is true here but false in the cluster"), "{why}");
        assert!(why.contains(r#"device_tag is "device_id" here but "name" in the cluster"#), "{why}");
        assert!(why.contains("storage.block_window_ms is 21600000 here but 3600000 in the cluster"), "{why}");
    }

    /// Tenant retention moved to the cluster map: a file that still sets it is refused with
    /// the command that replaces it, and a bad default tenant name is refused.
    #[test]
    fn tenant_sections_and_bad_tenant_names_are_refused() {
        let c: Config = toml::from_str("[tenants.fleet]\nretention_s = 60\n").unwrap();
        let why = c.validate().unwrap_err().to_string();
        assert!(why.contains("hotlakectl tenant set fleet"), "{why}");
        let c = Config { default_tenant: "a\0b".into(), ..Config::default() };
        assert!(c.validate().is_err());
        let c = Config { default_tenant: "x".repeat(20_000), ..Config::default() };
        assert!(c.validate().unwrap_err().to_string().contains("tenant name must be 1 to 255 bytes"));
    }

    #[test]
    fn a_wildcard_listener_needs_an_advertised_host_and_advertises_it() {
        let mut c = Config { grpc_addr: "0.0.0.0:7101".into(), ..Config::default() };
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("grpc_addr") && e.contains("advertise_host"), "{e}");
        c.http_addr = "0.0.0.0:7181".into();
        c.peer_addr = "0.0.0.0:7191".into();
        c.advertise_host = "hotlake-0.hotlake.data.svc".into();
        c.validate().unwrap();
        assert_eq!(c.advertised_grpc_addr(), "hotlake-0.hotlake.data.svc:7101");
        assert_eq!(c.advertised_http_addr(), "hotlake-0.hotlake.data.svc:7181");
        assert_eq!(c.advertised_peer_addr(), "hotlake-0.hotlake.data.svc:7191");
        c.advertise_host = "fd00::7".into();
        assert_eq!(c.advertised_peer_addr(), "[fd00::7]:7191");
        c.advertise_host = "http://node1".into();
        assert!(c.validate().unwrap_err().to_string().contains("without port or scheme"));
        let plain = Config::default();
        assert_eq!(plain.advertised_peer_addr(), plain.peer_addr);
    }

    /// The sample configuration documents real keys with values the node accepts, and its
    /// feed section says the defaults.
    #[test]
    fn the_sample_configuration_parses_and_validates() {
        let text = include_str!("../../deploy/hotlake.toml");
        let c: Config = toml::from_str(text).expect("deploy/hotlake.toml parses");
        c.validate().expect("deploy/hotlake.toml validates");
        let d = FeedConfig::default();
        assert_eq!((c.feed.retention_s, c.feed.shard_bytes_max), (d.retention_s, d.shard_bytes_max));
        let bad: Config = toml::from_str("[feed]\nretention_s = 1\n").unwrap();
        assert!(bad.validate().unwrap_err().to_string().contains("feed.retention_s"));
    }
}
