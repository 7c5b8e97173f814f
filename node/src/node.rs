//! The node: hosts shard replicas and a replica of the meta group, routes writes to shard
//! leaders (here or on other nodes) and scatters queries over the shards involved.
//!
//! ```text
//!  write(tenant, points) ──ring──► per shard: leader here? ──yes──► raft.client_write ──► ack after commit
//!                                                └─no──► forward to the leader (peer Call), follow NotLeader hints
//!  query ──plan shards──► per shard in parallel: leader: ensure_linearizable ──► run_on_shard ──gather──► merge
//!  background: flush scheduler, retention, reconcile replicas with the map (cluster::control)
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, Config as RaftConfig, SnapshotPolicy};

use crate::config::Config;
use crate::metrics::Metrics;
use hotlake_cluster::map::{ClusterMap, MetaCommand, NodeInfo, NodeState};
use hotlake_cluster::meta::{MetaRaft, MetaStateMachine};
use hotlake_cluster::transport::{PeerCall, PeerNetwork, PeerReply, Peers, TransportOptions, META_GROUP};
use hotlake_engine::batch::{ApplyOutcome, ShardCommand, ShardWrite};
use hotlake_engine::shard::{ShardData, ShardOptions};
use hotlake_ingest::line_protocol::{self, LineError, LineLimits, Precision};
use hotlake_ingest::BatchBuilder;
use hotlake_query::exec::{last_on_shard, merge_answers, run_on_shard, ShardResult};
use hotlake_query::{LastQuery, LastRow, Query, QueryResult, TagOp};
use hotlake_raft::log_store::LogStore;
use hotlake_raft::state_machine::StateMachine;
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
}

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
}

/// A running node.
pub struct Node {
    pub(crate) config: Config,
    engine: Engine,
    pub(crate) groups: RwLock<BTreeMap<ShardId, Arc<ShardGroup>>>,
    pub(crate) meta: MetaRaft,
    pub(crate) meta_sm: MetaStateMachine,
    pub(crate) peers: Arc<Peers>,
    /// Last known leader per shard, learned from NotLeader replies and successful calls.
    leader_hints: Mutex<HashMap<ShardId, NodeId>>,
    /// State only the meta leader uses (reports, liveness).
    pub(crate) meta_duties: Mutex<crate::control::MetaDuties>,
    shard_raft_config: Arc<RaftConfig>,
    metrics: Arc<Metrics>,
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
}

const INCARNATION_KEY: &[u8] = b"incarnation";

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
        election_timeout_max: c.raft_election_timeout_ms * 2,
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
        let metrics = Arc::new(Metrics::default());
        let peers = Arc::new(Peers::new(TransportOptions {
            call_timeout: Duration::from_millis(config.cluster.forward_timeout_ms),
            snapshot_chunk_bytes_max: config.cluster.snapshot_chunk_bytes_max as usize,
            snapshot_bytes_per_s_max: config.cluster.snapshot_bytes_per_s_max,
            message_bytes_max: (config.limits.body_bytes_max as usize).max(64 << 20) * 2,
        }));
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
        let node = Arc::new(Node {
            config,
            engine: engine.clone(),
            groups: RwLock::new(BTreeMap::new()),
            meta,
            meta_sm,
            peers,
            leader_hints: Mutex::new(HashMap::new()),
            meta_duties: Mutex::new(Default::default()),
            shard_raft_config,
            metrics,
            stopping: AtomicBool::new(false),
            was_member: AtomicBool::new(false),
            removed_noticed: AtomicBool::new(false),
            incarnation,
            raft_open: AtomicBool::new(false),
        });
        for shard in engine.shards() {
            node.open_group(shard).await?;
        }
        let initialized = node.meta.is_initialized().await.map_err(|e| anyhow::anyhow!("{e}"))?;
        let auto_bootstrap = node.config.cluster.join.is_empty() && node.config.cluster.bootstrap == "auto";
        if initialized || auto_bootstrap {
            node.raft_open.store(true, Ordering::Relaxed);
        }
        if !initialized && auto_bootstrap {
            node.bootstrap().await?;
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
    pub(crate) async fn bootstrap(&self) -> anyhow::Result<()> {
        let me = self.config.node_id;
        let members = BTreeMap::from([(me, BasicNode { addr: self.config.grpc_addr.clone() })]);
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
            node: self.self_info(),
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
            "bootstrapped a new cluster"
        );
        Ok(())
    }

    /// This node as a map entry.
    pub fn self_info(&self) -> NodeInfo {
        NodeInfo {
            id: self.config.node_id,
            grpc_addr: self.config.grpc_addr.clone(),
            http_addr: self.config.http_addr.clone(),
            state: NodeState::Active,
            incarnation: self.incarnation,
        }
    }

    /// Opens (or returns) the replica of `shard` on this node. A new replica starts empty and
    /// uninitialized: the shard's leader adds it as a learner and sends it a snapshot or the log.
    pub(crate) async fn open_group(&self, shard: ShardId) -> anyhow::Result<Arc<ShardGroup>> {
        use anyhow::Context;
        if let Some(g) = self.groups_read().get(&shard) {
            return Ok(g.clone());
        }
        let options = ShardOptions {
            block_window_ns: self.config.storage.block_window_ms as i64 * 1_000_000,
            ..Default::default()
        };
        let data = Arc::new(
            ShardData::open(self.engine.clone(), shard, options).with_context(|| format!("open shard {shard}"))?,
        );
        let log_store = LogStore::new(self.engine.clone(), Space::Log(shard))
            .with_payload_bytes_max(self.config.cluster.raft_append_bytes_max as usize);
        let sm = StateMachine::new(data.clone(), self.metrics.clone());
        let raft = ShardRaft::new(
            self.config.node_id,
            self.shard_raft_config.clone(),
            PeerNetwork::new(self.peers.clone(), shard.0 as u64),
            log_store,
            sm,
        )
        .await
        .with_context(|| format!("start raft group of shard {shard}"))?;
        let group = Arc::new(ShardGroup {
            id: shard,
            data,
            raft,
            dirty_since: Mutex::new(None),
            handing_over: AtomicBool::new(false),
        });
        let mut groups = self.groups.write().unwrap_or_else(|p| p.into_inner());
        Ok(groups.entry(shard).or_insert(group).clone())
    }

    /// Stops and deletes this node's replica of `shard` (it left the group).
    pub(crate) async fn drop_group(&self, shard: ShardId) -> Result<()> {
        let group = self.groups.write().unwrap_or_else(|p| p.into_inner()).remove(&shard);
        if let Some(g) = group {
            let _ = g.raft.shutdown().await;
            drop(g);
            self.engine.drop_shard(shard)?;
            tracing::info!(%shard, "replica removed from this node");
        }
        Ok(())
    }

    fn groups_read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<ShardId, Arc<ShardGroup>>> {
        self.groups.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Replicas hosted here, by shard.
    pub fn groups(&self) -> Vec<Arc<ShardGroup>> {
        self.groups_read().values().cloned().collect()
    }

    /// The replica of `shard` on this node, if any.
    pub fn local_group(&self, shard: ShardId) -> Option<Arc<ShardGroup>> {
        self.groups_read().get(&shard).cloned()
    }

    async fn wait_for_leaders(&self, timeout: Duration) -> anyhow::Result<()> {
        for g in self.groups() {
            g.raft
                .wait(Some(timeout))
                .metrics(|m| m.current_leader.is_some(), "shard ready")
                .await
                .map_err(|e| anyhow::anyhow!("shard {} did not become ready: {e}", g.id))?;
        }
        Ok(())
    }

    /// The node's configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The cluster map as applied on this node.
    pub fn map(&self) -> Arc<ClusterMap> {
        self.meta_sm.map()
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
        }
    }

    /// Resolves an empty tenant to the default one.
    pub fn tenant<'a>(&'a self, tenant: &'a str) -> &'a str {
        if tenant.is_empty() {
            &self.config.default_tenant
        } else {
            tenant
        }
    }

    /// Parses and writes a line-protocol body. Good lines are written; bad ones are returned
    /// with their line numbers (InfluxDB's behaviour). `default_ts_ns` stamps lines without a
    /// timestamp.
    pub async fn write_lines(
        &self,
        tenant: &str,
        body: &str,
        precision: Precision,
        default_ts_ns: i64,
    ) -> Result<(WriteSummary, Vec<LineError>)> {
        let tenant = self.tenant(tenant).to_string();
        let limits = self.line_limits();
        let mut builder = BatchBuilder::new(self.ring()?, &tenant, &self.config.device_tag);
        let mut lines = 0u64;
        let mut extra_errors = Vec::new();
        let lines_max = self.config.limits.lines_per_request_max;
        let mut errors = line_protocol::parse_body(body, precision, &limits, |line_no, line| {
            lines += 1;
            if lines > lines_max {
                if lines == lines_max + 1 {
                    extra_errors.push(LineError {
                        line: line_no,
                        column: 1,
                        reason: format!(
                            "request has more than {lines_max} lines (limit limits.lines_per_request_max); this and later lines were not written"
                        ),
                    });
                }
                return;
            }
            let ts = line.timestamp_ns.unwrap_or(default_ts_ns);
            if let Err(reason) = builder.add_point(&line.measurement, &line.tags, &line.fields, ts) {
                extra_errors.push(LineError { line: line_no, column: 1, reason });
            }
        });
        errors.extend(extra_errors);
        errors.sort_by_key(|e| e.line);
        let summary = self.write_batches(builder.finish()).await?;
        Ok((summary, errors))
    }

    /// Writes per-shard batches; each shard's part is atomic and goes to that shard's leader,
    /// wherever it is. Fails as a whole if any shard fails (parts on other shards may be
    /// written; retrying is safe because points are keyed by (series, timestamp, field) with
    /// last write wins).
    pub async fn write_batches(&self, batches: Vec<(ShardId, ShardWrite)>) -> Result<WriteSummary> {
        self.write_batches_routed(batches, WriteRouting::default()).await
    }

    /// [`Node::write_batches`] for a client that routes by shard itself (see [`WriteRouting`]).
    // tidy: long (the routed write in one place: split by shard, forward, retry on a new map, gather).
    pub async fn write_batches_routed(
        &self,
        batches: Vec<(ShardId, ShardWrite)>,
        routing: WriteRouting,
    ) -> Result<WriteSummary> {
        let started = crate::clock::Stopwatch::start();
        if self.stopping.load(Ordering::Relaxed) {
            return Err(Error::Unavailable("node is shutting down".into()));
        }
        let current = self.map().version;
        if routing.leader_only && routing.map_version != 0 && routing.map_version < current {
            self.metrics.error("stale_map");
            return Err(Error::StaleMap { client: routing.map_version, current });
        }
        let memtable_bytes: usize = self.groups().iter().map(|g| g.data.read().memtable_bytes()).sum();
        if memtable_bytes as u64 > self.config.storage.node_memtable_bytes_hard_max {
            self.metrics.error("overloaded");
            return Err(Error::Overloaded(format!(
                "memtables hold {memtable_bytes} bytes, over storage.node_memtable_bytes_hard_max"
            )));
        }
        let mut rejected = Vec::new();
        let mut prepared = Vec::with_capacity(batches.len());
        let mut new_series_by_tenant: usize = 0;
        for (shard, mut w) in batches {
            if let Some(group) = self.local_group(shard) {
                let inner = group.data.read();
                // Reject early, with a clear error, what apply would reject anyway: columns
                // whose type conflicts with the stored series.
                for s in &mut w.series {
                    let Some(sid) = inner.index.lookup(&w.tenant, &s.key) else {
                        new_series_by_tenant += 1;
                        continue;
                    };
                    let info = inner.index.get(sid);
                    s.columns.retain(|c| {
                        let stored = inner.index.find_field(&c.field).and_then(|f| info.type_of(f));
                        match stored {
                            Some(t) if t != c.values.field_type() => {
                                rejected.push(format!(
                                    "series {}: field {:?} is {} but this write has {}",
                                    s.key,
                                    c.field,
                                    t.name(),
                                    c.values.field_type().name()
                                ));
                                false
                            }
                            _ => true,
                        }
                    });
                }
                w.series.retain(|s| !s.columns.is_empty());
            }
            if !w.series.is_empty() {
                prepared.push((shard, w));
            }
        }
        if new_series_by_tenant > 0 {
            let tenant = prepared.first().map(|(_, w)| w.tenant.clone()).unwrap_or_default();
            let existing: usize = self.groups().iter().map(|g| g.data.read().index.tenant_series(&tenant)).sum();
            let max = self.config.limits.series_per_tenant_max as usize;
            if existing + new_series_by_tenant > max {
                self.metrics.error("limit_exceeded");
                return Err(Error::LimitExceeded {
                    limit: "limits.series_per_tenant_max",
                    message: format!(
                        "tenant {tenant:?} has {existing} series on this node; this write would add {new_series_by_tenant}, more than {max}"
                    ),
                });
            }
        }
        let writes = prepared.into_iter().map(|(shard, w)| async move {
            if routing.leader_only {
                self.propose_here(shard, ShardCommand::Write(w)).await.map_err(|e| match e {
                    Error::NotLeader { leader: None, .. } => {
                        Error::NotLeader { shard, leader: self.known_leader(shard) }
                    }
                    other => other,
                })
            } else {
                self.route_write(shard, w).await
            }
        });
        let results = futures::future::join_all(writes).await;
        let mut summary = WriteSummary::default();
        let mut first_error = None;
        for r in results {
            match r {
                Ok(outcome) => {
                    summary.points += outcome.points;
                    summary.values += outcome.values;
                    rejected.extend(outcome.rejected);
                }
                Err(e) => {
                    self.metrics.error(e.kind());
                    first_error.get_or_insert(e);
                }
            }
        }
        self.metrics.points_written.add(summary.points);
        self.metrics.values_written.add(summary.values);
        self.metrics.batches_written.inc();
        self.metrics.write_seconds.observe(started.elapsed_secs());
        if let Some(e) = first_error {
            return Err(e);
        }
        summary.rejected = rejected;
        Ok(summary)
    }

    /// Sends one shard's write to its leader, following leader hints and retrying on leader
    /// changes and unreachable nodes until `cluster.route_timeout_ms`.
    async fn route_write(&self, shard: ShardId, write: ShardWrite) -> Result<ApplyOutcome> {
        let write = Arc::new(write);
        self.route(shard, move |target| {
            let write = write.clone();
            let node = self;
            async move {
                if target == node.config.node_id {
                    node.propose_here(shard, ShardCommand::Write((*write).clone())).await
                } else {
                    let call = PeerCall::Write { shard, write: (*write).clone() };
                    match node.call_node(target, &call).await? {
                        PeerReply::Written(o) => Ok(o),
                        other => Err(Error::Internal(format!("unexpected reply to a write: {other:?}"))),
                    }
                }
            }
        })
        .await
    }

    /// Runs `attempt` against the leader of `shard` as best known, retrying on `NotLeader`
    /// (following its hint), `Unavailable` and timeouts of a single node until
    /// `cluster.route_timeout_ms`. Other errors end the request.
    pub(crate) async fn route<T, F, Fut>(&self, shard: ShardId, attempt: F) -> Result<T>
    where
        F: Fn(NodeId) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(self.config.cluster.route_timeout_ms);
        let mut tried: Vec<NodeId> = Vec::new();
        let mut backoff = Duration::from_millis(20);
        let mut hops = 0;
        loop {
            let target = self.leader_of(shard, &tried);
            let result = match target {
                Some(t) => attempt(t).await,
                None => Err(Error::Unavailable(format!("no replica of shard {shard} is known"))),
            };
            let error = match result {
                Ok(v) => {
                    if let Some(t) = target {
                        self.set_leader_hint(shard, Some(t));
                    }
                    return Ok(v);
                }
                Err(Error::NotLeader { leader: Some(l), .. }) if Some(l) != target && hops < 3 => {
                    // Follow a fresh hint at once; views may disagree briefly after an election,
                    // so only a few hops skip the backoff.
                    hops += 1;
                    self.set_leader_hint(shard, Some(l));
                    continue;
                }
                Err(e @ (Error::NotLeader { .. } | Error::Unavailable(_) | Error::Timeout(_))) => e,
                Err(e) => return Err(e),
            };
            self.set_leader_hint(shard, None);
            if let Some(t) = target {
                tried.push(t);
            }
            if tokio::time::Instant::now() + backoff >= deadline {
                return Err(Error::Unavailable(format!(
                    "shard {shard} has no reachable leader after {} ms (cluster.route_timeout_ms): {error}",
                    self.config.cluster.route_timeout_ms
                )));
            }
            tokio::time::sleep(backoff).await;
            hops = 0;
            // Short: a retry is cheap, and the usual wait is an election of a few hundred ms.
            backoff = (backoff * 2).min(Duration::from_millis(100));
            if tried.len() >= self.map().replicas(shard).len().max(1) {
                tried.clear();
            }
        }
    }

    /// Best guess of `shard`'s leader: the local replica's view, then the hint cache, then a
    /// replica from the map not tried yet.
    fn leader_of(&self, shard: ShardId, tried: &[NodeId]) -> Option<NodeId> {
        if let Some(g) = self.local_group(shard) {
            if let Some(l) = g.raft.metrics().borrow().current_leader {
                if !tried.contains(&l) {
                    return Some(l);
                }
            }
        }
        let hint = self.leader_hints.lock().unwrap_or_else(|p| p.into_inner()).get(&shard).copied();
        if let Some(h) = hint.filter(|h| !tried.contains(h)) {
            return Some(h);
        }
        let map = self.map();
        let replicas = map.replicas(shard);
        replicas.iter().copied().find(|n| !tried.contains(n)).or_else(|| replicas.first().copied())
    }

    /// The leader of `shard` as this node knows it: its own replica's view, else the last hint.
    pub fn known_leader(&self, shard: ShardId) -> Option<NodeId> {
        if let Some(l) = self.local_group(shard).and_then(|g| g.raft.metrics().borrow().current_leader) {
            return Some(l);
        }
        self.leader_hints.lock().unwrap_or_else(|p| p.into_inner()).get(&shard).copied()
    }

    fn set_leader_hint(&self, shard: ShardId, leader: Option<NodeId>) {
        let mut hints = self.leader_hints.lock().unwrap_or_else(|p| p.into_inner());
        match leader {
            Some(l) => hints.insert(shard, l),
            None => hints.remove(&shard),
        };
    }

    /// Sends a call to another node by id.
    pub(crate) async fn call_node(&self, node: NodeId, call: &PeerCall) -> Result<PeerReply> {
        let map = self.map();
        let addr = map
            .grpc_addr(node)
            .map(str::to_string)
            .or_else(|| {
                // A node not in the map yet (joining) is known to the groups it replicates.
                self.meta
                    .metrics()
                    .borrow()
                    .membership_config
                    .nodes()
                    .find(|(id, _)| **id == node)
                    .map(|(_, n)| n.addr.clone())
            })
            .ok_or_else(|| Error::Unavailable(format!("node {node} is not in the cluster map")))?;
        self.peers.call(&addr, call, self.peers.options().call_timeout).await
    }

    /// Proposes a command on this node's replica of `shard`, which must lead the group.
    pub(crate) async fn propose_here(&self, shard: ShardId, cmd: ShardCommand) -> Result<ApplyOutcome> {
        let group = self.local_group(shard).ok_or(Error::NotLeader { shard, leader: None })?;
        if group.handing_over.load(Ordering::Relaxed) {
            return Err(Error::Unavailable(format!("leadership of shard {shard} is being handed over; retry")));
        }
        let outcome = Self::propose(&group, cmd).await?;
        group.mark_dirty();
        Ok(outcome)
    }

    async fn propose(group: &ShardGroup, cmd: ShardCommand) -> Result<ApplyOutcome> {
        #[cfg(hotlake_bug = "ack-before-commit")]
        if let ShardCommand::Write(w) = &cmd {
            let points = w.series.iter().map(|s| s.timestamps.len() as u64).sum();
            let raft = group.raft.clone();
            tokio::spawn(async move {
                let _ = raft.client_write(cmd).await;
            });
            return Ok(ApplyOutcome { points, ..Default::default() });
        }
        match group.raft.client_write(cmd).await {
            Ok(resp) => Ok(resp.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(Error::NotLeader { shard: group.id, leader: f.leader_id })
            }
            Err(RaftError::APIError(e)) => Err(Error::Unavailable(format!("shard {}: {e}", group.id))),
            Err(RaftError::Fatal(e)) => Err(Error::Unavailable(format!("shard {} stopped: {e}", group.id))),
        }
    }

    /// Shards a query must visit: one per device named by an equality (or IN) on the device
    /// tag, all shards otherwise.
    fn plan_shards(&self, tenant: &str, predicates: &[hotlake_query::TagPredicate]) -> Result<Vec<ShardId>> {
        let ring = self.ring()?;
        for p in predicates {
            if p.key != self.config.device_tag {
                continue;
            }
            let devices: Vec<&String> = match &p.op {
                TagOp::Eq(v) if !v.is_empty() => vec![v],
                TagOp::In(vs) if !vs.iter().any(|v| v.is_empty()) => vs.iter().collect(),
                _ => continue,
            };
            let set: BTreeSet<ShardId> = devices.iter().map(|d| ring.shard_of(tenant, d)).collect();
            return Ok(set.into_iter().collect());
        }
        Ok(ring.shards().collect())
    }

    /// Confirms this replica leads `shard` with a read-index round and waits until it has
    /// applied every entry of its log, so a read after it sees every write acknowledged before
    /// it started.
    ///
    /// openraft's read index alone is not enough: a leader that restarts before its election
    /// timeout resumes its leadership, and if the power loss took its buffered commit index with
    /// it, the read index can sit below entries it had already committed and acknowledged (found
    /// by the simulator, seed 5237). Every committed entry is in the leader's log, so waiting for
    /// the whole log closes that gap; in steady state the wait is only for in-flight writes.
    pub(crate) async fn ensure_linearizable(&self, group: &ShardGroup) -> Result<()> {
        group.raft.ensure_linearizable().await.map_err(|e| match e {
            RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(f)) => {
                Error::NotLeader { shard: group.id, leader: f.leader_id }
            }
            other => Error::Unavailable(format!("shard {}: {other}", group.id)),
        })?;
        let last = group.raft.metrics().borrow().last_log_index;
        let timeout = Duration::from_millis(self.config.limits.query_timeout_ms);
        group.raft.wait(Some(timeout)).applied_index_at_least(last, "read after the whole log").await.map_err(|e| {
            Error::Unavailable(format!("shard {} did not apply its log within {timeout:?}: {e}", group.id))
        })?;
        Ok(())
    }

    /// Runs a query: linearizable per shard, shards visited in parallel wherever their
    /// leaders are.
    pub async fn query(&self, mut q: Query) -> Result<QueryResult> {
        let started = crate::clock::Stopwatch::start();
        q.tenant = self.tenant(&q.tenant).to_string();
        q.validate(&self.config.limits)?;
        let timeout = Duration::from_millis(self.config.limits.query_timeout_ms);
        let result = tokio::time::timeout(timeout, self.query_inner(q)).await;
        let result = match result {
            Ok(r) => r,
            Err(_) => Err(Error::Timeout(format!(
                "query ran longer than {} ms (limits.query_timeout_ms)",
                self.config.limits.query_timeout_ms
            ))),
        };
        if let Err(e) = &result {
            self.metrics.error(e.kind());
        }
        self.metrics.query_seconds.observe(started.elapsed_secs());
        result
    }

    /// Runs `q` on this node's replica of `shard`, which must lead it.
    pub(crate) async fn query_here(&self, shard: ShardId, q: Arc<Query>, points_budget: u64) -> Result<ShardResult> {
        let group = self.local_group(shard).ok_or(Error::NotLeader { shard, leader: None })?;
        self.ensure_linearizable(&group).await?;
        let limits = self.config.limits.clone();
        hotlake_raft::runtime::spawn_blocking(move || run_on_shard(&group.data, &q, &limits, points_budget))
            .await
            .map_err(|e| Error::Internal(format!("query task failed: {e}")))?
    }

    async fn query_inner(&self, q: Query) -> Result<QueryResult> {
        let shards = self.plan_shards(&q.tenant, &q.predicates)?;
        let q = Arc::new(q);
        let budget = self.config.limits.query_points_max;
        let tasks = shards.iter().copied().map(|shard| {
            let q = q.clone();
            async move {
                self.route(shard, move |target| {
                    let q = q.clone();
                    let node = self;
                    async move {
                        if target == node.config.node_id {
                            node.query_here(shard, q, budget).await
                        } else {
                            let call = PeerCall::Query { shard, query: (*q).clone(), points_budget: budget };
                            match node.call_node(target, &call).await? {
                                PeerReply::Answer(a) => Ok(a),
                                other => Err(Error::Internal(format!("unexpected reply to a query: {other:?}"))),
                            }
                        }
                    }
                })
                .await
                .map_err(|e| match e {
                    Error::Unavailable(m) => Error::Unavailable(format!("query incomplete: {m}")),
                    other => other,
                })
            }
        });
        let results = futures::future::join_all(tasks).await;
        let mut answers = Vec::with_capacity(results.len());
        let mut scanned = 0u64;
        let mut missing = Vec::new();
        for (shard, r) in shards.iter().zip(results) {
            let a = match r {
                Ok(a) => a,
                Err(Error::Unavailable(_) | Error::Timeout(_) | Error::NotLeader { .. }) if q.allow_partial => {
                    missing.push(shard.0);
                    continue;
                }
                Err(e) => return Err(e),
            };
            scanned += a.points_scanned;
            if scanned > self.config.limits.query_points_max {
                return Err(Error::LimitExceeded {
                    limit: "limits.query_points_max",
                    message: format!("query reads more than {} points", self.config.limits.query_points_max),
                });
            }
            answers.push(a);
        }
        let mut result = merge_answers(&q, answers);
        result.missing_shards = missing;
        let rows: usize = result.groups.iter().map(|g| g.rows.len()).sum();
        if rows as u64 > self.config.limits.query_rows_max {
            return Err(Error::LimitExceeded {
                limit: "limits.query_rows_max",
                message: format!("query returns {rows} rows; add a limit, a narrower range or an aggregate"),
            });
        }
        Ok(result)
    }

    /// `Last` on this node's replica of `shard`, which must lead it.
    pub(crate) async fn last_here(&self, shard: ShardId, q: &LastQuery) -> Result<Vec<LastRow>> {
        let group = self.local_group(shard).ok_or(Error::NotLeader { shard, leader: None })?;
        self.ensure_linearizable(&group).await?;
        Ok(last_on_shard(&group.data, q))
    }

    /// Latest values per device matching a filter, from the series index of each shard leader.
    pub async fn last(&self, mut q: LastQuery) -> Result<Vec<LastRow>> {
        q.tenant = self.tenant(&q.tenant).to_string();
        if q.measurement.is_empty() {
            return Err(Error::invalid("measurement is required"));
        }
        let q = Arc::new(q);
        let shards = self.plan_shards(&q.tenant, &q.predicates)?;
        let tasks = shards.into_iter().map(|shard| {
            let q = q.clone();
            self.route(shard, move |target| {
                let q = q.clone();
                let node = self;
                async move {
                    if target == node.config.node_id {
                        node.last_here(shard, &q).await
                    } else {
                        match node.call_node(target, &PeerCall::Last { shard, query: (*q).clone() }).await? {
                            PeerReply::LastRows(rows) => Ok(rows),
                            other => Err(Error::Internal(format!("unexpected reply to last: {other:?}"))),
                        }
                    }
                }
            })
        });
        let mut rows = Vec::new();
        for r in futures::future::join_all(tasks).await {
            rows.extend(r?);
            if rows.len() as u64 > self.config.limits.query_rows_max {
                return Err(Error::LimitExceeded {
                    limit: "limits.query_rows_max",
                    message: "last matches too many series; narrow the tag filter".into(),
                });
            }
        }
        rows.sort_by(|a, b| a.tags.cmp(&b.tags));
        Ok(rows)
    }

    /// Health of the node.
    pub fn health(&self) -> Health {
        let groups = self.groups();
        let with_leader = groups.iter().filter(|g| g.raft.metrics().borrow().current_leader.is_some()).count() as u32;
        Health { node_id: self.config.node_id, shards: groups.len() as u32, shards_with_leader: with_leader }
    }

    /// Flushes the memtable of one shard and waits until the flush is persisted.
    pub async fn flush_shard(&self, group: &ShardGroup, timeout: Duration) -> Result<()> {
        let applied = group.raft.metrics().borrow().last_applied;
        let Some(applied) = applied else { return Ok(()) };
        let flushed =
            |m: &openraft::RaftMetrics<NodeId, BasicNode>| m.snapshot.is_some_and(|s| s.index >= applied.index);
        if flushed(&group.raft.metrics().borrow()) {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + timeout;
        // A trigger that arrives while another flush is being built is dropped by openraft, so
        // trigger again until a flush covering `applied` is persisted.
        loop {
            group.raft.trigger().snapshot().await.map_err(|e| Error::Unavailable(e.to_string()))?;
            let waited = group.raft.wait(Some(Duration::from_secs(2))).metrics(flushed, "flush").await;
            if waited.is_ok() {
                break;
            }
            let m = group.raft.metrics().borrow().clone();
            tracing::warn!(
                shard = %group.id,
                applied = ?m.last_applied,
                snapshot = ?m.snapshot,
                state = ?m.state,
                "flush not finished yet; triggering again"
            );
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Timeout(format!(
                    "flush of shard {} did not finish in {timeout:?} (applied {:?}, last flush {:?})",
                    group.id, m.last_applied, m.snapshot
                )));
            }
        }
        let mut dirty = group.dirty_since.lock().unwrap_or_else(|p| p.into_inner());
        if group.data.read().memtable_bytes() == 0 {
            *dirty = None;
        }
        Ok(())
    }

    /// Flushes every replica (used by graceful shutdown and tests).
    pub async fn flush_all(&self) -> Result<()> {
        for g in self.groups() {
            self.flush_shard(&g, Duration::from_secs(60)).await?;
        }
        self.engine.sync()?;
        Ok(())
    }

    /// One round of the flush scheduler: flush replicas over their size or age limit, and the
    /// largest while the node is over its memory limit.
    pub async fn flush_round(&self) {
        let s = &self.config.storage;
        let mut sizes: Vec<(usize, Arc<ShardGroup>)> = self
            .groups()
            .into_iter()
            .map(|g| {
                let bytes = g.data.read().memtable_bytes();
                (bytes, g)
            })
            .collect();
        let total: usize = sizes.iter().map(|(b, _)| b).sum();
        self.metrics.memtable_bytes.store(total as u64, Ordering::Relaxed);
        self.metrics.series.store(sizes.iter().map(|(_, g)| g.data.read().index.len() as u64).sum(), Ordering::Relaxed);
        let mut due: HashSet<ShardId> = HashSet::new();
        let max_age = Duration::from_millis(s.memtable_age_ms_max);
        for (bytes, g) in &sizes {
            let old = g.dirty_since.lock().unwrap_or_else(|p| p.into_inner()).is_some_and(|t| t.elapsed() >= max_age);
            if *bytes as u64 >= s.shard_memtable_bytes_max || (old && *bytes > 0) {
                due.insert(g.id);
            }
        }
        if total as u64 > s.node_memtable_bytes_max {
            sizes.sort_by_key(|s| std::cmp::Reverse(s.0));
            let mut remaining = total as u64;
            for (bytes, g) in &sizes {
                if remaining <= s.node_memtable_bytes_max / 2 {
                    break;
                }
                due.insert(g.id);
                remaining = remaining.saturating_sub(*bytes as u64);
            }
        }
        for g in sizes.into_iter().map(|(_, g)| g).filter(|g| due.contains(&g.id)) {
            if let Err(e) = self.flush_shard(&g, Duration::from_secs(60)).await {
                tracing::warn!(shard = %g.id, error = %e, "flush failed");
                self.metrics.error("flush");
            }
        }
    }

    /// One round of retention: for each tenant with a retention period, the leader of each
    /// shard hosted here proposes dropping what is older.
    pub async fn retention_round(&self, now_ns: i64) {
        let me = self.config.node_id;
        for (tenant, t) in &self.config.tenants {
            if t.retention_s == 0 {
                continue;
            }
            let before_ns = now_ns.saturating_sub((t.retention_s as i64).saturating_mul(1_000_000_000));
            for g in self.groups() {
                if g.raft.metrics().borrow().current_leader != Some(me) {
                    continue;
                }
                let window = g.data.options().block_window_ns;
                let cutoff = hotlake_engine::shard::window_start(before_ns, window);
                if cutoff <= g.data.read().retention_cutoff(tenant) {
                    continue;
                }
                let cmd = ShardCommand::Retain { tenant: tenant.clone(), before_ns };
                if let Err(e) = Self::propose(&g, cmd).await {
                    tracing::warn!(shard = %g.id, tenant, error = %e, "retention not applied");
                }
            }
        }
    }

    /// Runs the flush scheduler, retention and the cluster duties (joining, reconciling
    /// replicas with the map, reporting, and on the meta leader placement) until shutdown.
    pub fn start_background(self: &Arc<Self>) {
        let node = self.clone();
        tokio::spawn(async move {
            let mut since_retention = Duration::ZERO;
            let tick = Duration::from_millis(200);
            while !node.stopping.load(Ordering::Relaxed) {
                tokio::time::sleep(tick).await;
                node.flush_round().await;
                since_retention += tick;
                if since_retention.as_millis() as u64 >= node.config.storage.retention_check_interval_ms {
                    since_retention = Duration::ZERO;
                    node.retention_round(crate::clock::now_ns()).await;
                }
            }
        });
        crate::control::start(self.clone());
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

    /// A digest of this node's replica of `shard` (every point of every series, merged), equal
    /// on replicas with the same content regardless of how they flushed, with the log index the
    /// content is at. Fails with `Unavailable` while entries are being applied, so a digest is
    /// never paired with an index it does not reflect.
    pub fn shard_digest(&self, shard: ShardId) -> Result<(u64, u64)> {
        let group = self.local_group(shard).ok_or_else(|| Error::invalid(format!("no replica of {shard} here")))?;
        let applied = || group.data.read().applied.map(|l| l.index).unwrap_or(0);
        let before = applied();
        let digest = hotlake_engine::digest::shard_digest(&group.data)?;
        if applied() != before {
            return Err(Error::Unavailable(format!("replica of {shard} is applying entries; retry")));
        }
        Ok((digest, before))
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
