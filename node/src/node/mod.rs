//! The node: hosts shard replicas and a replica of the meta group, routes writes to shard
//! leaders (here or on other nodes) and scatters queries over the shards involved. `Node` is
//! one struct whose work is split by role, one file each:
//!
//! ```text
//!  router       write(tenant, points) ──ring──► per shard: leader here? ──yes──► propose (replicas)
//!                                                        └─no──► forward to the leader (peer Call)
//!  coordinator  query ──plan shards──► per shard: leader: ensure_linearizable ──► run_on_shard ──► merge
//!  replicas     open/drop shard groups, propose, linearizable reads, digests
//!  feed         subscribe(filter, cursor) ──► per shard: read_feed here (else the leader) ──► channel
//!  consumers    consumer groups: members share shards, commit positions through the meta group
//!  maintenance  flush scheduler, retention, the background tasks
//!  admin        cluster, node and shard operations; calls from other nodes
//!  access       tokens verified against the map; tenant and token operations
//!  control      the control loop: join, open placed replicas, drive membership, report
//! ```
//!
//! This module holds the struct, opening and bootstrapping, and what every role reads.

mod access;
mod admin;
mod consumers;
mod control;
mod coordinator;
mod feed;
mod maintenance;
mod replicas;
mod router;

pub use access::NewToken;
pub use admin::{ClusterStatus, MemberStatus};
pub use consumers::{ConsumerGroupStatus, ResetTo};
pub use feed::{Cursor, Delivery, Start};
pub use router::WritePermit;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use openraft::{BasicNode, Config as RaftConfig, SnapshotPolicy};

use crate::config::Config;
use crate::metrics::Metrics;
use hotlake_cluster::map::{ClusterMap, ClusterSettings, MetaCommand, NodeInfo, NodeState};
use hotlake_cluster::meta::{MetaRaft, MetaStateMachine};
use hotlake_cluster::transport::{PeerNetwork, Peers, TransportOptions, META_GROUP};
use hotlake_engine::shard::ShardData;
use hotlake_ingest::line_protocol::LineLimits;
use hotlake_raft::log_store::LogStore;
use hotlake_raft::{NodeId, ShardRaft};
use hotlake_storage::{Durability, Engine, ShardId, Space, WriteBatch};
use hotlake_types::error::{Error, Result};
use hotlake_types::ring::Ring;

/// One shard replica hosted on this node.
pub struct ShardGroup {
    /// The shard.
    pub id: ShardId,
    /// Its data.
    pub data: Arc<ShardData>,
    /// Its Raft group.
    pub raft: ShardRaft,
    /// When the memtable got its first point since the last flush (tokio clock).
    dirty_since: Mutex<Option<tokio::time::Instant>>,
    /// Set while this replica hands its leadership over: new proposals wait for the new leader.
    pub(crate) handing_over: AtomicBool,
    /// Proposals to this group that are not yet committed and applied.
    proposals_in_flight: AtomicUsize,
    /// Since when (tokio clock) the membership this replica knows has been joint, as the
    /// control loop last saw it; a change half way for long is stuck.
    joint_since: Mutex<Option<tokio::time::Instant>>,
    /// Held while a snapshot of this shard is received and installed: the shard has one stage
    /// space, so one stream at a time.
    pub(crate) snapshot_receive: tokio::sync::Mutex<()>,
}

impl ShardGroup {
    /// Records whether the membership is joint now; returns how long it has been.
    pub(crate) fn note_joint(&self, joint: bool) -> Option<Duration> {
        let now = tokio::time::Instant::now();
        joint_for(&mut self.joint_since.lock().unwrap_or_else(|p| p.into_inner()), joint, now)
    }
}

/// Updates `since` (when a joint membership was first seen) with what is seen `now`; returns
/// how long it has been joint, or `None` when it is not.
fn joint_for(since: &mut Option<tokio::time::Instant>, joint: bool, now: tokio::time::Instant) -> Option<Duration> {
    match (joint, *since) {
        (false, _) => *since = None,
        (true, None) => *since = Some(now),
        (true, Some(_)) => {}
    }
    since.map(|s| now.saturating_duration_since(s))
}

/// A membership change half way for longer than this is reported as stuck.
const JOINT_STUCK_AFTER: Duration = Duration::from_secs(60);

/// How a client routed a write (the `map_version` and `leader_only` fields of a gRPC write).
#[derive(Clone, Copy, Debug, Default)]
pub struct WriteRouting {
    /// The client's map version (0: not routed).
    pub map_version: u64,
    /// Fail shard parts this node does not lead (`NotLeader`) and requests routed with an
    /// older map (`StaleMap`) instead of forwarding them.
    pub leader_only: bool,
}

/// Outcome of a write request.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct WriteSummary {
    /// Points acknowledged.
    pub points: u64,
    /// Field values acknowledged.
    pub values: u64,
    /// Values or series rejected after routing, with reasons.
    pub rejected: Vec<String>,
}

/// Health of the node.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Health {
    /// Node id.
    pub node_id: NodeId,
    /// Shard replicas hosted here.
    pub shards: u32,
    /// Replicas whose group has a leader.
    pub shards_with_leader: u32,
    /// Shards that cannot commit, each with the reason: no leader known, or led here by a
    /// leader that has not heard from a quorum for several election timeouts.
    pub problems: Vec<String>,
}

impl Health {
    /// Whether every replica's group can commit.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty() && self.shards_with_leader == self.shards
    }
}

/// A running node.
pub struct Node {
    pub(crate) config: Config,
    engine: Engine,
    pub(crate) groups: RwLock<BTreeMap<ShardId, Arc<ShardGroup>>>,
    /// Held while a replica is opened or deleted, so a shard never has two groups on this node
    /// (two Rafts on one log) and a deletion finishes before the shard is opened again.
    pub(crate) replica_changes: tokio::sync::Mutex<()>,
    pub(crate) meta: MetaRaft,
    pub(crate) meta_sm: MetaStateMachine,
    pub(crate) peers: Arc<Peers>,
    /// Last known leader per shard, learned from NotLeader replies and successful calls.
    leader_hints: Mutex<HashMap<ShardId, NodeId>>,
    /// State only the meta leader uses (reports, liveness).
    pub(crate) meta_duties: Mutex<control::MetaDuties>,
    shard_raft_config: Arc<RaftConfig>,
    /// Bytes of write requests being processed (`limits.write_inflight_bytes_max`).
    write_admission: Arc<tokio::sync::Semaphore>,
    metrics: Arc<Metrics>,
    /// What shard state machines report applies to: metrics, and subscriptions waiting.
    applied_signal: Arc<feed::AppliedSignal>,
    /// Subscriptions open here.
    subscribers: feed::Subscribers,
    /// Members of consumer groups, while this node leads the meta group.
    consumer_members: consumers::ConsumerMembers,
    pub(crate) stopping: AtomicBool,
    /// Set once this node has seen itself in the map; a node removed after that does not join
    /// again on its own (it was drained on purpose).
    pub(crate) was_member: AtomicBool,
    /// The removal above has been logged.
    pub(crate) removed_noticed: AtomicBool,
    /// Chosen when this data directory was created; see [`NodeInfo::incarnation`].
    incarnation: u64,
    /// Whether this node takes part in Raft. A node with no Raft state on disk that joins
    /// through `cluster.join` stays out until the cluster accepts the join: if it lost its
    /// disk, its empty vote and log must not count in any election.
    pub(crate) raft_open: AtomicBool,
    /// Replicas on disk that could not be opened (corrupt data), with the error: the node
    /// serves its other replicas and names these in its health.
    pub(crate) unopened: Mutex<BTreeMap<ShardId, String>>,
    /// The index of the map's tokens, rebuilt when the map changes.
    tokens: access::TokenCache,
    /// TLS of the listeners, when configured.
    #[cfg(not(madsim))]
    tls: Option<Arc<crate::tls::NodeTls>>,
}

const INCARNATION_KEY: &[u8] = b"incarnation";

/// The layout of a data directory (spaces, keys, encodings of blocks, index and logs) this
/// release writes. A release that changes it bumps it and converts older directories at open;
/// it reads directories down to `STORAGE_FORMAT_MIN`, so an upgrade goes one release at a time.
const STORAGE_FORMAT: u32 = 1;
/// Oldest data-directory format this release opens.
const STORAGE_FORMAT_MIN: u32 = 1;
const STORAGE_FORMAT_KEY: &[u8] = b"storage_format";

/// Refuses a data directory this release cannot read, before anything in it is touched, and
/// records the format of a new one (or of one from before formats were numbered: format 1).
fn check_storage_format(engine: &Engine) -> anyhow::Result<()> {
    use anyhow::Context;
    let recorded = match engine.get(Space::NodeMeta, STORAGE_FORMAT_KEY).context("read the storage format")? {
        Some(bytes) => {
            let raw: [u8; 4] =
                bytes.as_slice().try_into().map_err(|_| anyhow::anyhow!("corrupt storage format record"))?;
            Some(u32::from_be_bytes(raw))
        }
        None => None,
    };
    match recorded {
        Some(v) if v > STORAGE_FORMAT => anyhow::bail!(
            "this data directory was written by a newer Hotlake (storage format {v}); this release reads formats \
             {STORAGE_FORMAT_MIN} to {STORAGE_FORMAT}: run the newer release, nothing was changed"
        ),
        Some(v) if v < STORAGE_FORMAT_MIN => anyhow::bail!(
            "this data directory has storage format {v}, older than this release reads ({STORAGE_FORMAT_MIN} to \
             {STORAGE_FORMAT}): upgrade through the releases in between, nothing was changed"
        ),
        Some(_) => Ok(()),
        None => {
            let mut b = WriteBatch::new();
            b.put(Space::NodeMeta, STORAGE_FORMAT_KEY.to_vec(), STORAGE_FORMAT.to_be_bytes().to_vec());
            engine.write(b, Durability::Sync).context("record the storage format")
        }
    }
}

/// Shows a new cluster's admin token on stdout, the only time it is shown (the logs go to
/// stderr and never carry it).
fn show_bootstrap_token(secret: &str) {
    println!(
        "\nA new cluster was created with authentication on. Its admin token, shown only this once:\n\n    {secret}\n\n\
         Keep it secret. Use it with `hotlakectl --token` (or HOTLAKE_TOKEN) to create tenants and their\n\
         tokens; set auth.bootstrap_token_file to have it written to a file instead.\n"
    );
}

/// This data directory's incarnation, created (and synced) on first use.
fn incarnation(engine: &Engine, config: &Config) -> anyhow::Result<u64> {
    use anyhow::Context;
    if let Some(bytes) = engine.get(Space::NodeMeta, INCARNATION_KEY).context("read the incarnation")? {
        let raw: [u8; 8] = bytes.as_slice().try_into().map_err(|_| anyhow::anyhow!("corrupt incarnation record"))?;
        return Ok(u64::from_be_bytes(raw));
    }
    let id = xxhash_rust::xxh3::xxh3_64(
        format!("{}/{}/{}/incarnation", config.grpc_addr, config.node_id, crate::clock::now_ns()).as_bytes(),
    )
    .max(1);
    let mut b = WriteBatch::new();
    b.put(Space::NodeMeta, INCARNATION_KEY.to_vec(), id.to_be_bytes().to_vec());
    engine.write(b, Durability::Sync).context("record the incarnation")?;
    Ok(id)
}

fn raft_config(name: &str, c: &crate::config::ClusterConfig) -> RaftConfig {
    RaftConfig {
        cluster_name: name.into(),
        heartbeat_interval: c.raft_heartbeat_ms,
        election_timeout_min: c.raft_election_timeout_ms,
        election_timeout_max: c.raft_election_timeout_max_ms(),
        // Flushes are driven by the node (memtable size and age), not by log length.
        snapshot_policy: SnapshotPolicy::Never,
        max_in_snapshot_log_to_keep: 0,
        purge_batch_size: 1,
        max_payload_entries: 64,
        ..Default::default()
    }
}

fn meta_raft_config(c: &crate::config::ClusterConfig) -> RaftConfig {
    RaftConfig {
        snapshot_policy: SnapshotPolicy::LogsSinceLast(1000),
        max_in_snapshot_log_to_keep: 100,
        ..raft_config("hotlake-meta", c)
    }
}

impl Node {
    /// Opens the node: the meta group replica, the shard replicas found in `engine`, and the
    /// servers' view of them. With no cluster in the data directory and no `cluster.join`
    /// address, bootstraps a new cluster of this one node holding every shard.
    pub async fn open(config: Config, engine: Engine) -> anyhow::Result<Arc<Node>> {
        use anyhow::Context;
        config.validate()?;
        hotlake_raft::runtime::set_rpc_timeout_floor(Duration::from_millis(config.cluster.raft_rpc_timeout_ms));
        let metrics = Arc::new(Metrics::default());
        let peers = Arc::new(Peers::new(TransportOptions {
            call_timeout: Duration::from_millis(config.cluster.forward_timeout_ms),
            snapshot_chunk_bytes_max: config.cluster.snapshot_chunk_bytes_max as usize,
            snapshot_bytes_per_s_max: config.cluster.snapshot_bytes_per_s_max,
            message_bytes_max: (config.limits.body_bytes_max as usize).max(64 << 20) * 2,
        }));
        #[cfg(not(madsim))]
        let tls = match config.tls.enabled() {
            true => {
                let (tls, to_peers) = crate::tls::NodeTls::load(&config.tls).context("TLS")?;
                peers.set_tls(to_peers);
                Some(Arc::new(tls))
            }
            false => None,
        };
        check_storage_format(&engine)?;
        let incarnation = incarnation(&engine, &config)?;
        let meta_sm = MetaStateMachine::open(engine.clone()).context("load cluster state")?;
        let meta = MetaRaft::new(
            config.node_id,
            Arc::new(meta_raft_config(&config.cluster).validate().context("meta raft config")?),
            PeerNetwork::new(peers.clone(), META_GROUP),
            LogStore::new(engine.clone(), Space::ClusterLog),
            meta_sm.clone(),
        )
        .await
        .context("start the meta group")?;
        let shard_raft_config =
            Arc::new(raft_config("hotlake-shard", &config.cluster).validate().context("shard raft config")?);
        let config_write_inflight_bytes_max = config.limits.write_inflight_bytes_max;
        let node = Arc::new(Node {
            config,
            engine: engine.clone(),
            groups: RwLock::new(BTreeMap::new()),
            replica_changes: tokio::sync::Mutex::new(()),
            meta,
            meta_sm,
            peers,
            leader_hints: Mutex::new(HashMap::new()),
            meta_duties: Mutex::new(Default::default()),
            shard_raft_config,
            write_admission: Arc::new(tokio::sync::Semaphore::new(
                (config_write_inflight_bytes_max as usize).min(tokio::sync::Semaphore::MAX_PERMITS),
            )),
            applied_signal: Arc::new(feed::AppliedSignal::new(metrics.clone())),
            subscribers: Default::default(),
            consumer_members: Default::default(),
            metrics,
            stopping: AtomicBool::new(false),
            was_member: AtomicBool::new(false),
            removed_noticed: AtomicBool::new(false),
            incarnation,
            raft_open: AtomicBool::new(false),
            unopened: Mutex::new(BTreeMap::new()),
            tokens: Default::default(),
            #[cfg(not(madsim))]
            tls,
        });
        let map = node.map();
        if map.is_bootstrapped() {
            if let Some(why) = node.config.contradiction(&map.settings) {
                anyhow::bail!("{why}");
            }
        }
        for shard in engine.shards() {
            // Bad data in one replica fails that replica, not the node.
            if let Err(e) = node.open_group(shard).await {
                tracing::error!(%shard, error = format!("{e:#}"), "cannot open this replica; serving the others");
            }
        }
        let initialized = node.meta.is_initialized().await.map_err(|e| anyhow::anyhow!("{e}"))?;
        let auto_bootstrap = node.config.cluster.join.is_empty() && node.config.cluster.bootstrap == "auto";
        if initialized || auto_bootstrap {
            node.raft_open.store(true, Ordering::Relaxed);
        }
        if !initialized && auto_bootstrap {
            if let Some(secret) = node.bootstrap().await? {
                show_bootstrap_token(&secret);
            }
        }
        node.peers.set_cluster_id(node.map().cluster_id);
        let map = node.map();
        if map.nodes.len() == 1 && map.nodes.contains_key(&node.config.node_id) {
            // A one-node cluster elects itself at once; serve only when every shard is ready.
            node.wait_for_leaders(Duration::from_secs(10)).await?;
        }
        Ok(node)
    }

    /// Creates a new cluster: this node alone in the meta group and in every shard group.
    /// Returns the first admin token's secret when this node made it up (it is shown once).
    pub(crate) async fn bootstrap(&self) -> anyhow::Result<Option<String>> {
        // Drawn (and written to `auth.bootstrap_token_file`) before the cluster exists, so a
        // cluster is never created with an admin token nobody can have.
        let admin_token = self.bootstrap_token()?;
        let me = self.config.node_id;
        let members = BTreeMap::from([(me, BasicNode { addr: self.config.advertised_peer_addr() })]);
        self.meta.initialize(members.clone()).await.map_err(|e| anyhow::anyhow!("initialize the meta group: {e}"))?;
        self.meta
            .wait(Some(Duration::from_secs(10)))
            .metrics(|m| m.current_leader == Some(me), "meta leader")
            .await
            .map_err(|e| anyhow::anyhow!("meta group did not elect this node: {e}"))?;
        let cluster_id = xxhash_rust::xxh3::xxh3_64(
            format!("{}/{}/{}", self.config.grpc_addr, me, crate::clock::now_ns()).as_bytes(),
        );
        let cmd = MetaCommand::Bootstrap {
            cluster_id,
            shard_count: self.config.shard_count,
            replication_factor: self.config.cluster.replication_factor,
            settings: self.config.cluster_settings(),
            node: self.self_info(),
            tenant: self.config.default_tenant.clone(),
            admin_token: admin_token.as_ref().map(|(record, _)| record.clone()),
        };
        let outcome = self.meta.client_write(cmd).await.map_err(|e| anyhow::anyhow!("bootstrap: {e}"))?;
        if let Some(reason) = outcome.data.rejected {
            anyhow::bail!("bootstrap rejected: {reason}");
        }
        for shard in Ring::new(self.config.shard_count).shards() {
            let group = self.open_group(shard).await?;
            if !group.raft.is_initialized().await.map_err(|e| anyhow::anyhow!("{e}"))? {
                group
                    .raft
                    .initialize(members.clone())
                    .await
                    .map_err(|e| anyhow::anyhow!("initialize shard {shard}: {e}"))?;
            }
        }
        tracing::info!(
            cluster = format!("{cluster_id:016x}"),
            shards = self.config.shard_count,
            auth = self.config.auth.enabled,
            "bootstrapped a new cluster"
        );
        Ok(admin_token.and_then(|(_, shown)| shown))
    }

    /// This node as a map entry.
    pub fn self_info(&self) -> NodeInfo {
        NodeInfo {
            id: self.config.node_id,
            grpc_addr: self.config.advertised_grpc_addr(),
            http_addr: self.config.advertised_http_addr(),
            peer_addr: self.config.advertised_peer_addr(),
            state: NodeState::Active,
            incarnation: self.incarnation,
        }
    }

    /// The node's configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// TLS of the listeners, when configured.
    #[cfg(not(madsim))]
    pub fn tls(&self) -> Option<&Arc<crate::tls::NodeTls>> {
        self.tls.as_ref()
    }

    /// The cluster map as applied on this node.
    pub fn map(&self) -> Arc<ClusterMap> {
        self.meta_sm.map()
    }

    /// The settings every replica applies alike: the map's once the cluster exists (this
    /// node's configuration only before, when it is about to create the cluster with them).
    pub fn settings(&self) -> ClusterSettings {
        let map = self.map();
        if map.is_bootstrapped() {
            map.settings.clone()
        } else {
            self.config.cluster_settings()
        }
    }

    /// The ring of the cluster this node belongs to.
    pub fn ring(&self) -> Result<Ring> {
        let map = self.map();
        if !map.is_bootstrapped() {
            return Err(Error::Unavailable("this node has not joined a cluster yet; retry shortly".into()));
        }
        Ok(Ring::new(map.shard_count))
    }

    /// The node's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Line-protocol limits from the config.
    pub fn line_limits(&self) -> LineLimits {
        let l = &self.config.limits;
        LineLimits {
            fields_per_line_max: l.fields_per_line_max as usize,
            tags_per_line_max: l.tags_per_line_max as usize,
            key_bytes_max: l.key_bytes_max as usize,
            tag_value_bytes_max: l.tag_value_bytes_max as usize,
            string_value_bytes_max: l.string_value_bytes_max as usize,
            timestamp_ns_max: l.timestamp_ns_max(crate::clock::now_ns()),
        }
    }

    /// Resolves an empty tenant to the default one; refuses a name that is too long or holds
    /// control characters.
    pub fn tenant<'a>(&'a self, tenant: &'a str) -> Result<&'a str> {
        if tenant.is_empty() {
            return Ok(&self.config.default_tenant);
        }
        hotlake_types::model::check_tenant(tenant).map_err(Error::invalid)?;
        Ok(tenant)
    }

    /// Health of the node.
    pub fn health(&self) -> Health {
        let groups = self.groups();
        // A leader keeps leading without a quorum; after this long without one it cannot be
        // committing anything.
        let quorum_lost_ms = 3 * self.config.cluster.raft_election_timeout_max_ms();
        let mut with_leader = 0;
        let mut problems = Vec::new();
        for g in &groups {
            let m = g.raft.metrics().borrow().clone();
            let joint = m.membership_config.membership().get_joint_config().len() > 1;
            if let Some(half_way) = g.note_joint(joint).filter(|d| *d > JOINT_STUCK_AFTER) {
                problems.push(format!("{}: a membership change has been half way for {} s", g.id, half_way.as_secs()));
            }
            match (m.current_leader, m.state, m.millis_since_quorum_ack) {
                (None, _, _) => problems.push(format!("{}: no leader known", g.id)),
                (Some(_), openraft::ServerState::Leader, Some(ms)) if ms > quorum_lost_ms => {
                    with_leader += 1;
                    problems.push(format!("{}: led here without a quorum for {:.1} s", g.id, ms as f64 / 1000.0));
                }
                (Some(_), _, _) => with_leader += 1,
            }
        }
        let unopened = self.unopened.lock().unwrap_or_else(|p| p.into_inner());
        problems.extend(unopened.iter().map(|(shard, e)| format!("{shard}: cannot open the replica: {e}")));
        problems.sort();
        Health { node_id: self.config.node_id, shards: groups.len() as u32, shards_with_leader: with_leader, problems }
    }

    /// Stops taking writes, flushes every replica and stops the Raft groups.
    pub async fn shutdown(&self) -> Result<()> {
        self.stopping.store(true, Ordering::Relaxed);
        let flushed = self.flush_all().await;
        for g in self.groups() {
            let _ = g.raft.shutdown().await;
        }
        let _ = self.meta.shutdown().await;
        // Also flush the storage engine's own tables: a restart then replays no write-ahead
        // log, and the log's files (which still hold every purged Raft entry) are deleted.
        self.engine.flush_memtables()?;
        self.engine.sync()?;
        flushed
    }
}

impl ShardGroup {
    fn mark_dirty(&self) {
        let mut d = self.dirty_since.lock().unwrap_or_else(|p| p.into_inner());
        if d.is_none() {
            *d = Some(tokio::time::Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_joint_membership_is_timed_from_when_it_was_first_seen() {
        let t0 = tokio::time::Instant::now();
        let mut since = None;
        assert_eq!(joint_for(&mut since, false, t0), None);
        assert_eq!(joint_for(&mut since, true, t0), Some(Duration::ZERO));
        assert_eq!(joint_for(&mut since, true, t0 + Duration::from_secs(61)), Some(Duration::from_secs(61)));
        assert_eq!(joint_for(&mut since, false, t0 + Duration::from_secs(62)), None, "finished: no longer timed");
        assert_eq!(joint_for(&mut since, true, t0 + Duration::from_secs(70)), Some(Duration::ZERO), "a new change");
    }

    #[test]
    fn a_data_directory_of_an_unreadable_format_is_refused_untouched() {
        let engine: Engine = Arc::new(hotlake_storage::MemEngine::new());
        check_storage_format(&engine).unwrap();
        let recorded = engine.get(Space::NodeMeta, STORAGE_FORMAT_KEY).unwrap().unwrap();
        assert_eq!(recorded, STORAGE_FORMAT.to_be_bytes(), "a new directory records this release's format");
        check_storage_format(&engine).unwrap();

        for (format, says) in [(STORAGE_FORMAT + 1, "newer Hotlake"), (STORAGE_FORMAT_MIN - 1, "older than")] {
            let mut b = WriteBatch::new();
            b.put(Space::NodeMeta, STORAGE_FORMAT_KEY.to_vec(), format.to_be_bytes().to_vec());
            engine.write(b, Durability::Sync).unwrap();
            let e = check_storage_format(&engine).unwrap_err().to_string();
            assert!(e.contains(says) && e.contains("nothing was changed"), "{e}");
            let kept = engine.get(Space::NodeMeta, STORAGE_FORMAT_KEY).unwrap().unwrap();
            assert_eq!(kept, format.to_be_bytes(), "the record is left as it was");
        }
    }
}
