//! The coordinator: a query is planned onto the shards it touches, each shard's leader runs its
//! part next to the data, and the partial answers are merged here.
//!
//! ```text
//!  query ──plan shards──► per shard in parallel: leader: ensure_linearizable ──► run_on_shard
//!                                                      ──gather──► merge_answers
//! ```

use super::Node;
use hotlake_cluster::transport::{PeerCall, PeerReply};
use hotlake_query::exec::{last_on_shard, merge_answers, run_on_shard, ShardResult};
use hotlake_query::{LastQuery, LastRow, Query, QueryResult, TagOp};
use hotlake_storage::ShardId;
use hotlake_types::error::{Error, Result};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

impl Node {
    /// Shards a query must visit: one per device named by an equality (or IN) on the device
    /// tag, all shards otherwise.
    pub(super) fn plan_shards(&self, tenant: &str, predicates: &[hotlake_query::TagPredicate]) -> Result<Vec<ShardId>> {
        let ring = self.ring()?;
        let device_tag = self.settings().device_tag;
        for p in predicates {
            if p.key != device_tag {
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

    /// Runs a query: linearizable per shard, shards visited in parallel wherever their
    /// leaders are.
    pub async fn query(&self, mut q: Query) -> Result<QueryResult> {
        let started = crate::clock::Stopwatch::start();
        q.tenant = self.tenant(&q.tenant)?.to_string();
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

    pub(super) async fn query_inner(&self, q: Query) -> Result<QueryResult> {
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
        let mut result = merge_answers(&q, answers, self.config.limits.query_rows_max)?;
        result.missing_shards = missing;
        Ok(result)
    }

    /// `Last` on this node's replica of `shard`, which must lead it.
    pub(crate) async fn last_here(&self, shard: ShardId, q: &LastQuery) -> Result<Vec<LastRow>> {
        let group = self.local_group(shard).ok_or(Error::NotLeader { shard, leader: None })?;
        self.ensure_linearizable(&group).await?;
        // Walks every matching series of the shard's index: off the async workers.
        let q = q.clone();
        hotlake_raft::runtime::spawn_blocking(move || last_on_shard(&group.data, &q))
            .await
            .map_err(|e| Error::Internal(format!("last on {shard}: {e}")))
    }

    /// Latest values per device matching a filter, from the series index of each shard leader.
    pub async fn last(&self, mut q: LastQuery) -> Result<Vec<LastRow>> {
        q.tenant = self.tenant(&q.tenant)?.to_string();
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
}
