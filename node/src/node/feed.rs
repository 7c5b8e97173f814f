//! Subscriptions: each one reads the change feed of the shards its filter can touch, from its
//! cursor on, and delivers what matches through a bounded channel.
//!
//! ```text
//!  subscribe(filter, start) ──► task: for each shard: read_feed(cursor[shard]) ──► deliveries
//!                                      │  (the replica here, else the leader)      (bounded)
//!                                      └─ nothing new anywhere: wait for an apply here, or poll
//! ```
//!
//! Invariants:
//! - the cursor holds, per shard, the log index up to which entries have been considered;
//!   every delivery carries the cursor just after it, so a consumer that resumes from the last
//!   cursor it saw gets exactly what follows (the feed is the same on every replica, so any
//!   replica can continue where another stopped);
//! - a subscriber that does not read fills its channel and its task stops reading; writes and
//!   other subscribers do not wait for it (the feed is read, never held back);
//! - a cursor below what a shard's feed still holds ends the subscription with
//!   `cursor_expired` naming the oldest cursor served, never with a silent jump.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::Node;
use crate::metrics::Metrics;
use hotlake_cluster::transport::{PeerCall, PeerReply};
use hotlake_engine::batch::ShardWrite;
use hotlake_engine::feed::{FeedEntry, FeedError, FeedFilter, FeedRead};
use hotlake_engine::history::HistoryError;
use hotlake_raft::NodeId;
use hotlake_storage::ShardId;
use hotlake_types::error::{Error, Result};
use hotlake_types::model::TimestampNs;

/// How long a subscription with nothing to read waits before it looks again at shards led
/// elsewhere (shards with a replica here wake it up as soon as they apply).
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// A subscription that delivered nothing for this long gets a progress message carrying its
/// cursor, so that a consumer of a rare filter still moves its resume point forward, and a
/// client can tell a quiet subscription from a dead connection.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Where a subscription is, per shard: the last log index considered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor(pub Vec<u64>);

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, index) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            write!(f, "{index}")?;
        }
        Ok(())
    }
}

impl FromStr for Cursor {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        // 4096 shards at most, each index at most 20 digits and a dot.
        if s.len() > 4096 * 21 {
            return Err(format!("a cursor is at most {} characters, got {}", 4096 * 21, s.len()));
        }
        s.split('.')
            .map(|p| p.parse::<u64>().map_err(|_| format!("a cursor is log indexes joined by '.', got {:?}", shown(s))))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map(Cursor)
    }
}

fn shown(s: &str) -> &str {
    hotlake_engine::batch::shown(s)
}

/// Where a new subscription starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Start {
    /// After what each shard has applied when the subscription starts.
    Now,
    /// Right after a cursor from an earlier delivery.
    After(Cursor),
    /// The stored points from this time on, each shard's as of one log index, then what each
    /// shard applies after that index: no gap and no duplicate between the two.
    History(TimestampNs),
    /// The latest value of each field of each series the filter selects, each shard's as of
    /// one log index, then what each shard applies after that index.
    Last,
}

/// What a subscription delivers.
#[derive(Clone, Debug)]
pub enum Delivery {
    /// Points of one feed entry that match, and the cursor just after the entry.
    Entry {
        /// The shard.
        shard: ShardId,
        /// The entry (already narrowed to the filter).
        entry: FeedEntry,
        /// The subscription's cursor after this entry.
        cursor: Arc<Cursor>,
    },
    /// Stored points of one shard as of log index `index` (a `History` start delivers these
    /// first; the progress message after the last of them starts the live part).
    History {
        /// The shard.
        shard: ShardId,
        /// The log index the points are as of.
        index: u64,
        /// The points, narrowed to the filter.
        write: Arc<ShardWrite>,
        /// Where the live part starts: resuming from it skips the rest of the history.
        cursor: Arc<Cursor>,
    },
    /// Where the subscription starts (the first message), or, later, nothing matched for a
    /// while and the cursor is here.
    Progress(Arc<Cursor>),
}

/// Wakes subscriptions when a replica here applies a write; also counts applied points.
pub(crate) struct AppliedSignal {
    metrics: Arc<Metrics>,
    tick: watch::Sender<u64>,
}

impl AppliedSignal {
    pub(crate) fn new(metrics: Arc<Metrics>) -> Self {
        AppliedSignal { metrics, tick: watch::Sender::new(0) }
    }
}

impl hotlake_raft::state_machine::ApplyObserver for AppliedSignal {
    fn points_applied(&self, points: u64) {
        hotlake_raft::state_machine::ApplyObserver::points_applied(&*self.metrics, points);
        if points > 0 {
            self.tick.send_modify(|t| *t = t.wrapping_add(1));
        }
    }

    fn flushed(&self, seconds: f64) {
        hotlake_raft::state_machine::ApplyObserver::flushed(&*self.metrics, seconds);
    }
}

/// Subscriptions open on this node, in total and per tenant.
#[derive(Default)]
pub(crate) struct Subscribers {
    total: AtomicU32,
    per_tenant: Mutex<BTreeMap<String, u32>>,
}

/// Holds one subscription's place in [`Subscribers`] until dropped.
pub(super) struct Seat {
    node: Arc<Node>,
    tenant: String,
}

impl Drop for Seat {
    fn drop(&mut self) {
        let s = &self.node.subscribers;
        s.total.fetch_sub(1, Ordering::Relaxed);
        let mut per = s.per_tenant.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = per.get_mut(&self.tenant) {
            *n -= 1;
            if *n == 0 {
                per.remove(&self.tenant);
            }
        }
        self.node.metrics.subscriptions.store(u64::from(s.total.load(Ordering::Relaxed)), Ordering::Relaxed);
    }
}

impl Node {
    /// Opens a subscription: its deliveries arrive on the returned channel until the receiver
    /// is dropped or an error (the last message) ends it.
    pub async fn subscribe(
        self: &Arc<Self>,
        mut filter: FeedFilter,
        start: Start,
    ) -> Result<mpsc::Receiver<Result<Delivery>>> {
        let shards = self.check_filter(&mut filter)?;
        let seat = self.take_seat(&filter.tenant)?;
        let resumed = matches!(start, Start::After(_));
        let (cursor, history) = match start {
            Start::History(from_ns) => self.history(&shards, &filter, Some(from_ns)).await?,
            Start::Last => self.history(&shards, &filter, None).await?,
            start => (self.start_cursor(start, &shards, &filter).await?, Vec::new()),
        };
        let (tx, rx) = mpsc::channel(self.config.feed.subscriber_buffer_messages as usize);
        let node = self.clone();
        tokio::spawn(async move {
            let _seat = seat;
            let live_from = Arc::new(cursor.clone());
            for (shard, index, write) in history {
                let delivery = Delivery::History { shard, index, write: Arc::new(write), cursor: live_from.clone() };
                if tx.send(Ok(delivery)).await.is_err() {
                    return;
                }
            }
            if let Err(e) = node.run_subscription(filter, shards, cursor, resumed, &tx).await {
                let _ = tx.send(Err(e)).await;
            }
        });
        Ok(rx)
    }

    /// Checks a filter against the request limits and names its tenant (the default one when
    /// it names none); returns the shards whose feeds it can touch.
    pub(super) fn check_filter(&self, filter: &mut FeedFilter) -> Result<Vec<ShardId>> {
        filter.tenant = self.tenant(&filter.tenant)?.to_string();
        let limits = &self.config.limits;
        let too_long = |s: &String| s.len() as u64 > limits.key_bytes_max;
        if filter.measurement.as_ref().is_some_and(too_long)
            || filter.tags.iter().any(|(k, v)| too_long(k) || v.len() as u64 > limits.tag_value_bytes_max)
            || filter.fields.iter().any(too_long)
        {
            return Err(Error::invalid(
                "a measurement, tag or field name of the filter is longer than the limits allow",
            ));
        }
        hotlake_types::filter::check_filters(&filter.filters, limits)?;
        if filter.tags.len() as u64 > limits.tags_per_line_max
            || filter.fields.len() as u64 > limits.fields_per_line_max
        {
            return Err(Error::invalid(format!(
                "a filter names at most {} tags and {} fields",
                limits.tags_per_line_max, limits.fields_per_line_max
            )));
        }
        let ring = self.ring()?;
        let device_tag = self.settings().device_tag;
        Ok(match filter.tags.iter().find(|(k, _)| *k == device_tag) {
            // The device tag decides the shard: one feed to read.
            Some((_, device)) => vec![ring.shard_of(&filter.tenant, device)],
            None => ring.shards().collect(),
        })
    }

    /// The cursor a subscription over `shards` starts from (shards not read stay at 0).
    pub(super) async fn start_cursor(&self, start: Start, shards: &[ShardId], filter: &FeedFilter) -> Result<Cursor> {
        let shard_count = self.ring()?.shards().count();
        match start {
            Start::After(c) => {
                if c.0.len() != shard_count {
                    return Err(Error::invalid(format!(
                        "the cursor names {} shards but the cluster has {shard_count}",
                        c.0.len()
                    )));
                }
                Ok(c)
            }
            Start::Now => {
                let mut c = Cursor(vec![0; shard_count]);
                for &shard in shards {
                    c.0[shard.0 as usize] = self.feed_read_anywhere(shard, None, filter, 0).await?.through;
                }
                Ok(c)
            }
            Start::History(_) | Start::Last => {
                Err(Error::invalid("this start is `now` or a cursor; a history is not a position"))
            }
        }
    }

    /// The stored points of `shards` from `since` on (`None`: the latest value of each field),
    /// each as of a log index, and the cursor of those indexes. All of it together holds at
    /// most `limits.query_rows_max` points, as a query would.
    async fn history(
        &self,
        shards: &[ShardId],
        filter: &FeedFilter,
        since: Option<TimestampNs>,
    ) -> Result<(Cursor, Vec<(ShardId, u64, ShardWrite)>)> {
        let limit = self.config.limits.query_rows_max as usize;
        let mut budget = limit;
        let mut cursor = Cursor(vec![0; self.ring()?.shards().count()]);
        let mut parts = Vec::new();
        for &shard in shards {
            let (index, write) = match self.history_read_anywhere(shard, filter, since, budget).await {
                Err(Error::LimitExceeded { .. }) => {
                    return Err(Error::LimitExceeded {
                        limit: "limits.query_rows_max",
                        message: format!(
                            "the history holds more than {limit} points; start it later or narrow the filter"
                        ),
                    })
                }
                other => other?,
            };
            cursor.0[shard.0 as usize] = index;
            if let Some(w) = write {
                budget = budget.saturating_sub(hotlake_engine::feed::points_of(&w));
                parts.push((shard, index, w));
            }
        }
        Ok((cursor, parts))
    }

    /// One shard's history from the replica here, else the leader, else another replica: any
    /// replica's history is exact as of its own applied index, and the feed after that index
    /// is the same everywhere.
    async fn history_read_anywhere(
        &self,
        shard: ShardId,
        filter: &FeedFilter,
        since: Option<TimestampNs>,
        max_points: usize,
    ) -> Result<(u64, Option<ShardWrite>)> {
        let me = self.config.node_id;
        if self.local_group(shard).is_some() {
            return self.history_here(shard, filter, since, max_points).await;
        }
        let mut others: Vec<NodeId> = Vec::new();
        for n in self.leader_of(shard, &[me]).into_iter().chain(self.map().replicas(shard).iter().copied()) {
            if n != me && !others.contains(&n) {
                others.push(n);
            }
        }
        let mut failed = None;
        for target in others {
            let call = PeerCall::History { shard, filter: filter.clone(), since, max_points: max_points as u64 };
            match self.call_node(target, &call).await {
                Ok(PeerReply::History { index, write }) => return Ok((index, write)),
                Ok(other) => failed = Some(Error::Internal(format!("unexpected reply to a history read: {other:?}"))),
                Err(e @ Error::LimitExceeded { .. }) => return Err(e),
                Err(e) => failed = Some(e),
            }
        }
        Err(failed.unwrap_or_else(|| Error::Unavailable(format!("no replica of {shard} is known"))))
    }

    /// Reads this node's replica of `shard` for a history.
    pub(crate) async fn history_here(
        &self,
        shard: ShardId,
        filter: &FeedFilter,
        since: Option<TimestampNs>,
        max_points: usize,
    ) -> Result<(u64, Option<ShardWrite>)> {
        let group = self.local_group(shard).ok_or(Error::NotLeader { shard, leader: None })?;
        let filter = filter.clone();
        let h = hotlake_raft::runtime::spawn_blocking(move || match since {
            Some(from_ns) => group.data.read_history(&filter, from_ns, max_points),
            None => group.data.read_latest(&filter, max_points),
        })
        .await
        .map_err(|e| Error::Internal(format!("history read on {shard}: {e}")))?
        .map_err(|e| match e {
            HistoryError::TooLarge { limit } => Error::LimitExceeded {
                limit: "limits.query_rows_max",
                message: format!("the history of {shard} holds more than {limit} points"),
            },
            HistoryError::Storage(e) => e.into(),
        })?;
        Ok((h.index, h.write))
    }

    pub(super) fn take_seat(self: &Arc<Self>, tenant: &str) -> Result<Seat> {
        let limits = &self.config.feed;
        let s = &self.subscribers;
        let mut per = s.per_tenant.lock().unwrap_or_else(|p| p.into_inner());
        if s.total.load(Ordering::Relaxed) >= limits.subscribers_max {
            return Err(Error::LimitExceeded {
                limit: "feed.subscribers_max",
                message: format!("this node serves {} subscriptions already", limits.subscribers_max),
            });
        }
        let mine = per.entry(tenant.to_string()).or_insert(0);
        if *mine >= limits.subscribers_per_tenant_max {
            return Err(Error::LimitExceeded {
                limit: "feed.subscribers_per_tenant_max",
                message: format!("tenant {tenant:?} has {} subscriptions on this node already", *mine),
            });
        }
        *mine += 1;
        let total = s.total.fetch_add(1, Ordering::Relaxed) + 1;
        self.metrics.subscriptions.store(u64::from(total), Ordering::Relaxed);
        Ok(Seat { node: self.clone(), tenant: tenant.to_string() })
    }

    /// Reads the shards' feeds from `cursor` on and delivers until the receiver goes away.
    pub(super) async fn run_subscription(
        &self,
        filter: FeedFilter,
        shards: Vec<ShardId>,
        mut cursor: Cursor,
        resumed: bool,
        tx: &mpsc::Sender<Result<Delivery>>,
    ) -> Result<()> {
        // A planted bug for the simulator's delivery checker to catch: a resumed subscription
        // loses the first entry it would deliver.
        let mut skip_one = cfg!(hotlake_bug = "skip-entry-on-resume") && resumed;
        let mut applied = self.applied_signal.tick.subscribe();
        let budget = self.config.feed.read_points_max as usize;
        if tx.send(Ok(Delivery::Progress(Arc::new(cursor.clone())))).await.is_err() {
            return Ok(());
        }
        let mut last_sent = tokio::time::Instant::now();
        loop {
            applied.borrow_and_update();
            let mut delivered_any = false;
            for &shard in &shards {
                let at = cursor.0[shard.0 as usize];
                let read = match self.feed_read_anywhere(shard, Some(at), &filter, budget).await {
                    Ok(r) => r,
                    Err(e @ Error::CursorExpired(_)) => return Err(e),
                    Err(e) => {
                        // Leader changes and node loss: the next round tries again.
                        tracing::debug!(%shard, error = %e, "feed read failed; retrying");
                        continue;
                    }
                };
                for entry in read.entries {
                    cursor.0[shard.0 as usize] = entry.index;
                    if std::mem::take(&mut skip_one) {
                        continue;
                    }
                    self.metrics.feed_points_delivered.add(hotlake_engine::feed::points_of(&entry.write) as u64);
                    let delivery = Delivery::Entry { shard, entry, cursor: Arc::new(cursor.clone()) };
                    if tx.send(Ok(delivery)).await.is_err() {
                        return Ok(());
                    }
                    delivered_any = true;
                }
                cursor.0[shard.0 as usize] = read.through.max(at);
            }
            if delivered_any {
                last_sent = tokio::time::Instant::now();
                continue;
            }
            if last_sent.elapsed() >= PROGRESS_EVERY {
                if tx.send(Ok(Delivery::Progress(Arc::new(cursor.clone())))).await.is_err() {
                    return Ok(());
                }
                last_sent = tokio::time::Instant::now();
            }
            tokio::select! {
                _ = applied.changed() => {}
                _ = tokio::time::sleep(POLL_INTERVAL) => {}
                _ = tx.closed() => return Ok(()),
            }
        }
    }

    /// Reads one shard's feed after `after` (`None`: only where it is now) from any replica
    /// that holds it: the one here, else the leader, else the other replicas. A replica that
    /// installed a snapshot holds the feed only from the snapshot on, so a cursor is expired
    /// only when no replica answering holds it.
    pub(super) async fn feed_read_anywhere(
        &self,
        shard: ShardId,
        after: Option<u64>,
        filter: &FeedFilter,
        max_points: usize,
    ) -> Result<FeedRead> {
        let me = self.config.node_id;
        let (mut expired, mut failed) = (None, None);
        if self.local_group(shard).is_some() {
            // The common case, read each round for every shard: answered here, nothing else looked up.
            match self.feed_read_here(shard, after, filter, max_points).await {
                Ok(r) => return Ok(r),
                Err(e @ Error::CursorExpired(_)) => expired = Some(e),
                Err(Error::NotLeader { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let mut others: Vec<NodeId> = Vec::new();
        let leader = self.leader_of(shard, &[me]);
        for n in leader.into_iter().chain(self.map().replicas(shard).iter().copied()) {
            if n != me && !others.contains(&n) {
                others.push(n);
            }
        }
        for target in others {
            let call = PeerCall::FeedRead { shard, after, filter: filter.clone(), max_points: max_points as u64 };
            let read = match self.call_node(target, &call).await {
                Ok(PeerReply::Feed { entries, through }) => Ok(FeedRead {
                    entries: entries.into_iter().map(|(index, w)| FeedEntry { index, write: Arc::new(w) }).collect(),
                    through,
                }),
                Ok(other) => Err(Error::Internal(format!("unexpected reply to a feed read: {other:?}"))),
                Err(e) => Err(e),
            };
            match read {
                Ok(r) => return Ok(r),
                Err(e @ Error::CursorExpired(_)) => expired = Some(e),
                Err(e) => failed = Some(e),
            }
        }
        // A replica that did not answer may still hold the cursor: only a unanimous answer
        // expires it.
        Err(failed.or(expired).unwrap_or_else(|| Error::Unavailable(format!("no replica of {shard} is known"))))
    }

    /// Reads this node's replica of `shard` (any role: the feed holds committed entries only).
    pub(crate) async fn feed_read_here(
        &self,
        shard: ShardId,
        after: Option<u64>,
        filter: &FeedFilter,
        max_points: usize,
    ) -> Result<FeedRead> {
        let group = self.local_group(shard).ok_or(Error::NotLeader { shard, leader: None })?;
        let applied = group.data.read().applied.map_or(0, |a| a.index);
        let after = match after {
            // Nothing new (the common case of a subscription that keeps up): no read at all.
            Some(after) if after >= applied => return Ok(FeedRead { entries: Vec::new(), through: after }),
            Some(after) => after,
            None => return Ok(FeedRead { entries: Vec::new(), through: applied }),
        };
        let filter = filter.clone();
        hotlake_raft::runtime::spawn_blocking(move || group.data.read_feed(after, &filter, max_points))
            .await
            .map_err(|e| Error::Internal(format!("feed read on {shard}: {e}")))?
            .map_err(|e| match e {
                FeedError::Trimmed { oldest_cursor } => Error::CursorExpired(format!(
                    "the feed of {shard} here holds entries after index {oldest_cursor} only, the cursor is at {after}"
                )),
                FeedError::Storage(e) => e.into(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_through_text_and_refuse_anything_else() {
        let c = Cursor(vec![0, 17, 4_000_000_000]);
        assert_eq!(c.to_string(), "0.17.4000000000");
        assert_eq!(c.to_string().parse::<Cursor>(), Ok(c));
        for bad in ["", "1..2", "1.x", "-1", "1.2."] {
            assert!(bad.parse::<Cursor>().is_err(), "{bad:?} parsed");
        }
        let huge = vec!["1"; 50_000].join(".");
        assert!(huge.parse::<Cursor>().unwrap_err().contains("at most"));
    }
}
