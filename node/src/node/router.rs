//! The router: a write's points go to their shards' leaders, here or on other nodes, following
//! `NotLeader` hints and map changes until the route timeout.
//!
//! ```text
//!  write(tenant, points) ──ring──► per shard: leader here? ──yes──► propose
//!                                             └─no──► forward to the leader (peer Call)
//! ```

use super::{Node, WriteRouting, WriteSummary};
use hotlake_cluster::transport::{PeerCall, PeerReply};
use hotlake_engine::batch::{ApplyOutcome, ShardCommand, ShardWrite};
use hotlake_ingest::line_protocol::{self, LineError, LineLimits, Precision};
use hotlake_ingest::BatchBuilder;
use hotlake_raft::NodeId;
use hotlake_storage::ShardId;
use hotlake_types::error::{Error, Result};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

impl Node {
    /// Parses and writes a line-protocol body. Good lines are written; bad ones are returned
    /// with their line numbers (InfluxDB's behaviour). `default_ts_ns` stamps lines without a
    /// timestamp.
    pub async fn write_lines(
        &self,
        tenant: &str,
        body: String,
        precision: Precision,
        default_ts_ns: i64,
    ) -> Result<(WriteSummary, Vec<LineError>)> {
        let _admitted = self.admit_write(body.len()).await?;
        let tenant = self.tenant(tenant)?.to_string();
        let limits = self.line_limits();
        let ring = self.ring()?;
        let device_tag = self.settings().device_tag;
        let lines_max = self.config.limits.lines_per_request_max;
        // Parsing is CPU work in proportion to the body: off the async workers, so it never
        // delays Raft's heartbeats and elections that run there.
        let parsed = hotlake_raft::runtime::spawn_blocking(move || {
            parse_lines(
                &body,
                precision,
                &limits,
                lines_max,
                BatchBuilder::new(ring, &tenant, &device_tag),
                default_ts_ns,
            )
        })
        .await
        .map_err(|e| Error::Internal(format!("parsing a write: {e}")))?;
        let (batches, errors) = parsed;
        let summary = self.write_batches(batches).await?;
        Ok((summary, errors))
    }

    /// Admits a write request of `bytes` against `limits.write_inflight_bytes_max`. A request
    /// that finds no room waits, in arrival order (tokio's semaphore is fair), for at most
    /// `limits.write_admission_wait_ms`, then is refused as `overloaded`: an overloaded node
    /// answers quickly instead of queueing requests into timeouts, and no writer is starved by
    /// others that send again the moment they are answered. The permit is held until the write
    /// is answered.
    pub async fn admit_write(&self, bytes: usize) -> Result<WritePermit> {
        let budget = self.config.limits.write_inflight_bytes_max as usize;
        let wanted = bytes.clamp(1, budget.min(u32::MAX as usize)) as u32;
        if let Ok(permit) = self.write_admission.clone().try_acquire_many_owned(wanted) {
            return Ok(WritePermit(permit));
        }
        let wait = Duration::from_millis(self.config.limits.write_admission_wait_ms);
        match tokio::time::timeout(wait, self.write_admission.clone().acquire_many_owned(wanted)).await {
            Ok(Ok(permit)) => Ok(WritePermit(permit)),
            _ => {
                self.metrics.error("overloaded");
                let busy = budget.saturating_sub(self.write_admission.available_permits());
                Err(Error::Overloaded(format!(
                    "{busy} bytes of writes in progress, {bytes} more would pass limits.write_inflight_bytes_max \
                     (waited {} ms)",
                    wait.as_millis()
                )))
            }
        }
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
        let current = self.map().routing_version;
        if routing.leader_only && routing.map_version != 0 && routing.map_version < current {
            self.metrics.error("stale_map");
            return Err(Error::StaleMap { client: routing.map_version, current });
        }
        // Almost always every tenant exists: names are copied only when one does not.
        let map = self.map();
        if batches.iter().any(|(_, w)| !map.tenants.contains_key(&w.tenant)) {
            let tenants: std::collections::BTreeSet<String> = batches.iter().map(|(_, w)| w.tenant.clone()).collect();
            self.ensure_tenants(tenants.iter().map(String::as_str)).await?;
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
    pub(super) async fn route_write(&self, shard: ShardId, write: ShardWrite) -> Result<ApplyOutcome> {
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
    pub(super) fn leader_of(&self, shard: ShardId, tried: &[NodeId]) -> Option<NodeId> {
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

    pub(super) fn set_leader_hint(&self, shard: ShardId, leader: Option<NodeId>) {
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
            .peer_addr(node)
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
}

/// A write admitted by [`Node::admit_write`]; its bytes count until it is dropped.
pub struct WritePermit(#[allow(dead_code)] tokio::sync::OwnedSemaphorePermit);

/// Parses a line-protocol body into per-shard batches; bad lines come back with their line
/// numbers, in order.
fn parse_lines(
    body: &str,
    precision: Precision,
    limits: &LineLimits,
    lines_max: u64,
    mut builder: BatchBuilder,
    default_ts_ns: i64,
) -> (Vec<(ShardId, ShardWrite)>, Vec<LineError>) {
    let mut lines = 0u64;
    let mut extra_errors = Vec::new();
    let mut errors = line_protocol::parse_body(body, precision, limits, |line_no, line| {
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
    (builder.finish(), errors)
}
