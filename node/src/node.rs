//! The node: owns the engine and every shard group hosted here, routes writes to shard groups
//! and scatters queries over them.
//!
//! ```text
//!  write(tenant, points) ──ring──► per shard: validate ──► raft.client_write ──► ack after commit
//!  query ──plan shards──► per shard: ensure_linearizable ──► run_on_shard ──gather──► merge
//!  background: flush scheduler (size / age / node memory) and retention enforcement
//! ```

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, Config as RaftConfig, SnapshotPolicy};

use crate::config::Config;
use crate::engine::batch::{ShardCommand, ShardWrite};
use crate::engine::shard::{ShardData, ShardOptions};
use crate::error::{Error, Result};
use crate::ingest::line_protocol::{self, LineError, LineLimits, Precision};
use crate::ingest::BatchBuilder;
use crate::metrics::Metrics;
use crate::query::exec::{last_on_shard, merge_answers, run_on_shard};
use crate::query::{LastQuery, LastRow, Query, QueryResult, TagOp};
use crate::raft::log_store::LogStore;
use crate::raft::network::LocalOnlyNetwork;
use crate::raft::state_machine::StateMachine;
use crate::raft::{NodeId, ShardRaft};
use crate::ring::Ring;
use crate::storage::{Durability, Engine, ShardId, Space, WriteBatch};

/// One shard group hosted on this node.
pub struct ShardGroup {
    /// The shard.
    pub id: ShardId,
    /// Its data.
    pub data: Arc<ShardData>,
    /// Its Raft group.
    pub raft: ShardRaft,
    /// When the memtable got its first point since the last flush (tokio clock).
    dirty_since: Mutex<Option<tokio::time::Instant>>,
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
    /// Shards hosted.
    pub shards: u32,
    /// Shards whose group has a leader.
    pub shards_with_leader: u32,
}

/// A running node.
pub struct Node {
    config: Config,
    engine: Engine,
    ring: Ring,
    groups: Vec<Arc<ShardGroup>>,
    metrics: Arc<Metrics>,
    stopping: AtomicBool,
}

fn raft_config() -> RaftConfig {
    RaftConfig {
        cluster_name: "hotlake-shard".into(),
        heartbeat_interval: 100,
        election_timeout_min: 300,
        election_timeout_max: 600,
        // Flushes are driven by the node (memtable size and age), not by log length.
        snapshot_policy: SnapshotPolicy::Never,
        max_in_snapshot_log_to_keep: 0,
        purge_batch_size: 1,
        max_payload_entries: 64,
        ..Default::default()
    }
}

const SHARD_COUNT_KEY: &[u8] = b"shard_count";

impl Node {
    /// Opens the node's shards over `engine` and starts their Raft groups.
    pub async fn open(config: Config, engine: Engine) -> anyhow::Result<Arc<Node>> {
        use anyhow::Context;
        config.validate()?;
        let shard_count = match engine.get(Space::NodeMeta, SHARD_COUNT_KEY)? {
            Some(b) if b.len() == 4 => {
                let stored = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
                if stored != config.shard_count {
                    tracing::warn!(
                        stored,
                        configured = config.shard_count,
                        "shard_count is fixed when the data directory is created; using the stored value"
                    );
                }
                stored
            }
            Some(_) => anyhow::bail!("node meta record shard_count is corrupt"),
            None => {
                let mut b = WriteBatch::new();
                b.put(Space::NodeMeta, SHARD_COUNT_KEY.to_vec(), config.shard_count.to_be_bytes().to_vec());
                engine.write(b, Durability::Sync)?;
                config.shard_count
            }
        };
        let ring = Ring::new(shard_count);
        let metrics = Arc::new(Metrics::default());
        let raft_config = Arc::new(raft_config().validate().context("raft config")?);
        let options =
            ShardOptions { block_window_ns: config.storage.block_window_ms as i64 * 1_000_000, ..Default::default() };
        let mut groups = Vec::with_capacity(shard_count as usize);
        for shard in ring.shards() {
            let data = Arc::new(
                ShardData::open(engine.clone(), shard, options.clone())
                    .with_context(|| format!("open shard {shard}"))?,
            );
            let log_store = LogStore::new(engine.clone(), shard);
            let sm = StateMachine::new(data.clone(), metrics.clone());
            let raft = ShardRaft::new(config.node_id, raft_config.clone(), LocalOnlyNetwork, log_store, sm)
                .await
                .with_context(|| format!("start raft group of shard {shard}"))?;
            if !raft.is_initialized().await.map_err(|e| anyhow::anyhow!("{e}"))? {
                let members = BTreeMap::from([(config.node_id, BasicNode { addr: config.grpc_addr.clone() })]);
                raft.initialize(members).await.map_err(|e| anyhow::anyhow!("initialize shard {shard}: {e}"))?;
            }
            groups.push(Arc::new(ShardGroup { id: shard, data, raft, dirty_since: Mutex::new(None) }));
        }
        let node = Arc::new(Node { config, engine, ring, groups, metrics, stopping: AtomicBool::new(false) });
        node.wait_for_leaders(Duration::from_secs(10)).await?;
        Ok(node)
    }

    async fn wait_for_leaders(&self, timeout: Duration) -> anyhow::Result<()> {
        for g in &self.groups {
            let me = self.config.node_id;
            g.raft
                .wait(Some(timeout))
                .metrics(|m| m.current_leader == Some(me), "shard ready")
                .await
                .map_err(|e| anyhow::anyhow!("shard {} did not become ready: {e}", g.id))?;
        }
        Ok(())
    }

    /// The node's configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The ring.
    pub fn ring(&self) -> Ring {
        self.ring
    }

    /// The node's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The shard groups hosted here.
    pub fn groups(&self) -> &[Arc<ShardGroup>] {
        &self.groups
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
        let mut builder = BatchBuilder::new(self.ring, &tenant, &self.config.device_tag);
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

    /// Writes per-shard batches; each shard's part is atomic. Fails as a whole if any shard
    /// fails (parts on other shards may be written; retrying is safe because points are keyed
    /// by (series, timestamp, field) with last write wins).
    pub async fn write_batches(&self, batches: Vec<(ShardId, ShardWrite)>) -> Result<WriteSummary> {
        let started = crate::clock::Stopwatch::start();
        if self.stopping.load(Ordering::Relaxed) {
            return Err(Error::Unavailable("node is shutting down".into()));
        }
        let memtable_bytes: usize = self.groups.iter().map(|g| g.data.read().memtable_bytes()).sum();
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
            let group = self.group(shard)?;
            {
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
                prepared.push((group, w));
            }
        }
        if new_series_by_tenant > 0 {
            let tenant = prepared.first().map(|(_, w)| w.tenant.clone()).unwrap_or_default();
            let existing: usize = self.groups.iter().map(|g| g.data.read().index.tenant_series(&tenant)).sum();
            let max = self.config.limits.series_per_tenant_max as usize;
            if existing + new_series_by_tenant > max {
                self.metrics.error("limit_exceeded");
                return Err(Error::LimitExceeded {
                    limit: "limits.series_per_tenant_max",
                    message: format!(
                        "tenant {tenant:?} has {existing} series; this write would add {new_series_by_tenant}, more than {max}"
                    ),
                });
            }
        }
        let writes = prepared.into_iter().map(|(group, w)| async move {
            let result = Self::propose(&group, ShardCommand::Write(w)).await;
            if result.is_ok() {
                group.mark_dirty();
            }
            result
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

    async fn propose(group: &ShardGroup, cmd: ShardCommand) -> Result<crate::engine::batch::ApplyOutcome> {
        match group.raft.client_write(cmd).await {
            Ok(resp) => Ok(resp.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(Error::NotLeader { shard: group.id, leader: f.leader_id })
            }
            Err(RaftError::APIError(e)) => Err(Error::Unavailable(format!("shard {}: {e}", group.id))),
            Err(RaftError::Fatal(e)) => Err(Error::Unavailable(format!("shard {} stopped: {e}", group.id))),
        }
    }

    fn group(&self, shard: ShardId) -> Result<Arc<ShardGroup>> {
        self.groups
            .get(shard.0 as usize)
            .cloned()
            .ok_or_else(|| Error::Internal(format!("shard {shard} is not hosted on this node")))
    }

    /// Shards a query must visit: one per device named by an equality (or IN) on the device
    /// tag, all shards otherwise.
    fn plan_shards(&self, tenant: &str, predicates: &[crate::query::TagPredicate]) -> Vec<ShardId> {
        for p in predicates {
            if p.key != self.config.device_tag {
                continue;
            }
            let devices: Vec<&String> = match &p.op {
                TagOp::Eq(v) if !v.is_empty() => vec![v],
                TagOp::In(vs) if !vs.iter().any(|v| v.is_empty()) => vs.iter().collect(),
                _ => continue,
            };
            let set: BTreeSet<ShardId> = devices.iter().map(|d| self.ring.shard_of(tenant, d)).collect();
            return set.into_iter().collect();
        }
        self.ring.shards().collect()
    }

    async fn ensure_linearizable(&self, group: &ShardGroup) -> Result<()> {
        group.raft.ensure_linearizable().await.map_err(|e| match e {
            RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(f)) => {
                Error::NotLeader { shard: group.id, leader: f.leader_id }
            }
            other => Error::Unavailable(format!("shard {}: {other}", group.id)),
        })?;
        Ok(())
    }

    /// Runs a query: linearizable per shard.
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

    async fn query_inner(&self, q: Query) -> Result<QueryResult> {
        let shards = self.plan_shards(&q.tenant, &q.predicates);
        let q = Arc::new(q);
        let mut tasks = Vec::with_capacity(shards.len());
        for shard in shards {
            let group = self.group(shard)?;
            self.ensure_linearizable(&group).await?;
            let q = q.clone();
            let limits = self.config.limits.clone();
            tasks.push(crate::rt::spawn_blocking(move || {
                run_on_shard(&group.data, &q, &limits, limits.query_points_max)
            }));
        }
        let mut answers = Vec::with_capacity(tasks.len());
        let mut scanned = 0u64;
        for t in tasks {
            let a = t.await.map_err(|e| Error::Internal(format!("query task failed: {e}")))??;
            scanned += a.points_scanned;
            if scanned > self.config.limits.query_points_max {
                return Err(Error::LimitExceeded {
                    limit: "limits.query_points_max",
                    message: format!("query reads more than {} points", self.config.limits.query_points_max),
                });
            }
            answers.push(a);
        }
        let result = merge_answers(&q, answers);
        let rows: usize = result.groups.iter().map(|g| g.rows.len()).sum();
        if rows as u64 > self.config.limits.query_rows_max {
            return Err(Error::LimitExceeded {
                limit: "limits.query_rows_max",
                message: format!("query returns {rows} rows; add a limit, a narrower range or an aggregate"),
            });
        }
        Ok(result)
    }

    /// Latest values per device matching a filter, from the series index.
    pub async fn last(&self, mut q: LastQuery) -> Result<Vec<LastRow>> {
        q.tenant = self.tenant(&q.tenant).to_string();
        if q.measurement.is_empty() {
            return Err(Error::invalid("measurement is required"));
        }
        let mut rows = Vec::new();
        for shard in self.plan_shards(&q.tenant, &q.predicates) {
            let group = self.group(shard)?;
            self.ensure_linearizable(&group).await?;
            rows.extend(last_on_shard(&group.data, &q));
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
        let with_leader =
            self.groups.iter().filter(|g| g.raft.metrics().borrow().current_leader.is_some()).count() as u32;
        Health { node_id: self.config.node_id, shards: self.groups.len() as u32, shards_with_leader: with_leader }
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

    /// Flushes every shard (used by graceful shutdown and tests).
    pub async fn flush_all(&self) -> Result<()> {
        for g in &self.groups {
            self.flush_shard(g, Duration::from_secs(60)).await?;
        }
        self.engine.sync()?;
        Ok(())
    }

    /// One round of the flush scheduler: flush shards over their size or age limit, and the
    /// largest shards while the node is over its memory limit.
    pub async fn flush_round(&self) {
        let s = &self.config.storage;
        let mut sizes: Vec<(usize, Arc<ShardGroup>)> =
            self.groups.iter().map(|g| (g.data.read().memtable_bytes(), g.clone())).collect();
        let total: usize = sizes.iter().map(|(b, _)| b).sum();
        self.metrics.memtable_bytes.store(total as u64, Ordering::Relaxed);
        self.metrics
            .series
            .store(self.groups.iter().map(|g| g.data.read().index.len() as u64).sum(), Ordering::Relaxed);
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

    /// One round of retention: for each tenant with a retention period, drop what is older.
    pub async fn retention_round(&self, now_ns: i64) {
        for (tenant, t) in &self.config.tenants {
            if t.retention_s == 0 {
                continue;
            }
            let before_ns = now_ns.saturating_sub((t.retention_s as i64).saturating_mul(1_000_000_000));
            for g in &self.groups {
                let window = g.data.options().block_window_ns;
                let cutoff = crate::engine::shard::window_start(before_ns, window);
                if cutoff <= g.data.read().retention_cutoff(tenant) {
                    continue;
                }
                let cmd = ShardCommand::Retain { tenant: tenant.clone(), before_ns };
                if let Err(e) = Self::propose(g, cmd).await {
                    tracing::warn!(shard = %g.id, tenant, error = %e, "retention not applied");
                }
            }
        }
    }

    /// Runs the flush scheduler and retention until shutdown.
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
    }

    /// Stops taking writes, flushes every shard and stops the Raft groups.
    pub async fn shutdown(&self) -> Result<()> {
        self.stopping.store(true, Ordering::Relaxed);
        let flushed = self.flush_all().await;
        for g in &self.groups {
            let _ = g.raft.shutdown().await;
        }
        self.engine.sync()?;
        flushed
    }

    /// A digest of one shard's logical content (every point of every series, merged), equal on
    /// replicas with the same content regardless of how it was flushed.
    pub fn shard_digest(&self, shard: ShardId) -> Result<u64> {
        let group = self.group(shard)?;
        Ok(crate::engine::digest::shard_digest(&group.data)?)
    }

    /// Raw key count of a shard's spaces, for diagnostics.
    pub fn shard_key_counts(&self, shard: ShardId) -> Result<[usize; 3]> {
        let mut out = [0usize; 3];
        for (i, space) in Space::of_shard(shard).into_iter().enumerate() {
            self.engine.scan(space, &[], &[0xff; 32], &mut |_, _| {
                out[i] += 1;
                true
            })?;
        }
        Ok(out)
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
