//! Consumer groups: the members of a named group share a tenant's shards, and each commits,
//! through the meta group, the positions it has processed.
//!
//! ```text
//!  member stream (any node) ──heartbeat every 2 s──► coordinator (the meta leader, soft state)
//!     │                      ◄── my shards and their committed positions
//!     └─ subscription over my shards ──► deliveries (cursor, member id)
//!  consumer ── commit(member, cursor) ──► any node ──► coordinator: keep the member's shards
//!                                                        └─► meta Raft: Consumers(Commit)
//! ```
//!
//! Invariants:
//! - a position moves only by a commit of the shard's current reader, or by a reset or delete
//!   while the group has no member; a member that lost a shard can move it neither back nor on;
//! - a member that takes a shard over starts right after its committed position: what the last
//!   reader delivered but did not commit is delivered again (at-least-once; a message's cursor
//!   is its idempotency key);
//! - the assignment is a pure function of the member ids and the shard count, so a new
//!   coordinator that hears the same members assigns alike; members it has not heard yet
//!   rejoin with their next heartbeat (until then a shard may be read twice, never not at all).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::feed::{Cursor, Delivery, Start};
use super::Node;
use hotlake_cluster::consumers::{check_group_name, ConsumerCommand, ConsumerGroup};
use hotlake_cluster::map::MetaCommand;
use hotlake_cluster::transport::{ConsumerCall, ConsumerReply, PeerCall, PeerReply};
use hotlake_engine::feed::FeedFilter;
use hotlake_storage::ShardId;
use hotlake_types::error::{Error, Result};

/// How often a member tells the coordinator it is alive (and learns its shards).
const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);

/// A member not heard from for this long has gone: its shards go to the others.
const MEMBER_SILENCE_MAX: Duration = Duration::from_secs(10);

/// Most members of one group.
const MEMBERS_PER_GROUP_MAX: usize = 256;

/// A group's state as `hotlakectl consumer show` presents it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerGroupStatus {
    /// The group.
    pub group: String,
    /// Committed positions, one per shard: the cursor the group resumes after.
    pub positions: Cursor,
    /// Each shard's applied index as its leader last reported it (0: not reported yet).
    pub applied: Vec<u64>,
    /// Commits and resets since the group was created.
    pub commits: u64,
    /// Members and the shards each reads.
    pub members: Vec<(String, Vec<u32>)>,
}

impl ConsumerGroupStatus {
    /// Log entries applied but not committed by the group, over every shard.
    pub fn lag_entries(&self) -> u64 {
        self.applied.iter().zip(&self.positions.0).map(|(a, p)| a.saturating_sub(*p)).sum()
    }
}

/// Where an operator moves a group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResetTo {
    /// After what each shard has applied now: skip everything not yet processed.
    Now,
    /// Right after a cursor (from a delivered message, or one shown by `consumer show`).
    After(Cursor),
}

/// Members of the groups this node coordinates while it leads the meta group, with when each
/// was last heard.
#[derive(Default)]
pub(crate) struct ConsumerMembers {
    groups: Mutex<HashMap<(String, String), BTreeMap<String, Instant>>>,
    /// Numbers the member ids this node gives out.
    next_member: AtomicU64,
}

/// The shards of each member: shard `i` goes to the `i mod n`-th of the `n` members in id order.
fn assign(members: &BTreeMap<String, Instant>, shard_count: u32) -> Vec<(String, Vec<u32>)> {
    let mut out: Vec<(String, Vec<u32>)> = members.keys().map(|m| (m.clone(), Vec::new())).collect();
    if !out.is_empty() {
        let n = out.len();
        for shard in 0..shard_count {
            out[shard as usize % n].1.push(shard);
        }
    }
    out
}

impl ConsumerMembers {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), BTreeMap<String, Instant>>> {
        self.groups.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a member's heartbeat (or departure); returns its shards.
    fn heartbeat(&self, key: (String, String), member: &str, leaving: bool, shard_count: u32) -> Result<Vec<u32>> {
        let now = Instant::now();
        let mut groups = self.lock();
        let members = groups.entry(key.clone()).or_default();
        members.retain(|_, seen| now.duration_since(*seen) <= MEMBER_SILENCE_MAX);
        if leaving {
            members.remove(member);
            if members.is_empty() {
                groups.remove(&key);
            }
            return Ok(Vec::new());
        }
        if !members.contains_key(member) && members.len() >= MEMBERS_PER_GROUP_MAX {
            return Err(Error::LimitExceeded {
                limit: "members_per_group_max",
                message: format!("consumer group {:?} has {MEMBERS_PER_GROUP_MAX} members, the most it may", key.1),
            });
        }
        members.insert(member.to_string(), now);
        Ok(assign(members, shard_count).into_iter().find(|(m, _)| m == member).map(|(_, s)| s).unwrap_or_default())
    }

    /// The members that have been heard from lately, with their shards.
    fn members(&self, key: &(String, String), shard_count: u32) -> Vec<(String, Vec<u32>)> {
        let now = Instant::now();
        let mut groups = self.lock();
        match groups.get_mut(key) {
            Some(members) => {
                members.retain(|_, seen| now.duration_since(*seen) <= MEMBER_SILENCE_MAX);
                assign(members, shard_count)
            }
            None => Vec::new(),
        }
    }
}

impl Node {
    /// Sends a consumer-group call to the coordinator: the meta leader, here or elsewhere.
    async fn to_coordinator(&self, call: ConsumerCall) -> Result<ConsumerReply> {
        let leader = self.meta.metrics().borrow().current_leader;
        match leader {
            Some(l) if l == self.config.node_id => self.coordinate(call).await,
            Some(l) => match self.call_node(l, &PeerCall::Consumer(call)).await? {
                PeerReply::Consumer(r) => Ok(r),
                other => Err(Error::Internal(format!("unexpected reply to a consumer-group call: {other:?}"))),
            },
            None => Err(Error::Unavailable("the meta group has no leader right now; retry".into())),
        }
    }

    /// A group's committed state, as the coordinator may answer with it. A meta leader that
    /// has just taken over may not have applied a create its predecessor acknowledged: before
    /// a group is called unknown (which ends its members' streams), the whole meta log is
    /// applied here.
    async fn committed_group(&self, tenant: &str, group: &str) -> Result<ConsumerGroup> {
        if let Some(g) = self.meta_sm.consumer_group(tenant, group) {
            return Ok(g);
        }
        self.meta
            .ensure_linearizable()
            .await
            .map_err(|e| Error::Unavailable(format!("the meta group cannot confirm its leader: {e}; retry")))?;
        let last = self.meta.metrics().borrow().last_log_index;
        let timeout = Duration::from_millis(self.config.limits.query_timeout_ms);
        self.meta.wait(Some(timeout)).applied_index_at_least(last, "consumer group lookup").await.map_err(|e| {
            Error::Unavailable(format!("the meta group did not apply its log within {timeout:?}: {e}; retry"))
        })?;
        self.meta_sm.consumer_group(tenant, group).ok_or_else(|| no_group(tenant, group))
    }

    /// Answers a consumer-group call as the coordinator.
    pub(crate) async fn coordinate(&self, call: ConsumerCall) -> Result<ConsumerReply> {
        if self.meta.metrics().borrow().current_leader != Some(self.config.node_id) {
            return Err(Error::Unavailable("this node no longer leads the meta group; retry".into()));
        }
        let shard_count = self.map().shard_count;
        match call {
            ConsumerCall::Heartbeat { tenant, group, member, leaving } => {
                let committed = self.committed_group(&tenant, &group).await?;
                let shards = self.consumer_members.heartbeat((tenant, group), &member, leaving, shard_count)?;
                let positions =
                    shards.iter().map(|s| committed.positions.get(*s as usize).copied().unwrap_or(0)).collect();
                Ok(ConsumerReply::Assignment { shards, positions })
            }
            ConsumerCall::Commit { tenant, group, member, positions } => {
                self.committed_group(&tenant, &group).await?;
                let key = (tenant, group);
                let members = self.consumer_members.members(&key, shard_count);
                let Some((_, mine)) = members.into_iter().find(|(m, _)| *m == member) else {
                    return Err(Error::Unavailable(format!(
                        "member {member} is not (or no longer) in consumer group {:?}; its stream rejoins within \
                         {} s, commit again then",
                        key.1,
                        HEARTBEAT_EVERY.as_secs()
                    )));
                };
                let positions: Vec<(u32, u64)> = positions.into_iter().filter(|(s, _)| mine.contains(s)).collect();
                let shards = positions.iter().map(|(s, _)| *s).collect();
                if !positions.is_empty() {
                    let (tenant, group) = key;
                    let cmd = ConsumerCommand::Commit { tenant, group, positions };
                    self.propose_meta(MetaCommand::Consumers(cmd), false).await?;
                }
                Ok(ConsumerReply::Committed(shards))
            }
            ConsumerCall::Members { tenant, group } => {
                Ok(ConsumerReply::Members(self.consumer_members.members(&(tenant, group), shard_count)))
            }
        }
    }

    /// Joins (creating it at `start` if it is new) consumer group `group` as a new member that
    /// reads the shards the coordinator gives it. Returns the member's id (commits name it) and
    /// the deliveries, which end as [`Node::subscribe`]'s do.
    pub async fn subscribe_group(
        self: &Arc<Self>,
        mut filter: FeedFilter,
        group: String,
        start: Start,
    ) -> Result<(String, mpsc::Receiver<Result<Delivery>>)> {
        check_group_name(&group).map_err(Error::invalid)?;
        let wanted = self.check_filter(&mut filter)?;
        let seat = self.take_seat(&filter.tenant)?;
        let tenant = filter.tenant.clone();
        if self.meta_sm.consumer_group(&tenant, &group).is_none() {
            // A new group starts where `start` says on every shard, so that members with other
            // filters later still have a position everywhere. Creating is idempotent: a group
            // another node created meanwhile keeps its positions.
            let all: Vec<ShardId> = self.ring()?.shards().collect();
            let positions = self.start_cursor(start, &all, &filter).await?.0;
            let cmd = ConsumerCommand::Create { tenant: tenant.clone(), group: group.clone(), positions };
            self.propose_meta(MetaCommand::Consumers(cmd), false).await?;
        }
        let member = format!(
            "{}.{:x}.{}",
            self.config.node_id,
            self.incarnation & 0xffff_ffff,
            self.consumer_members.next_member.fetch_add(1, Ordering::Relaxed)
        );
        // The first heartbeat is answered before the request is: an unknown group or a full
        // one fails it.
        let heartbeat = ConsumerCall::Heartbeat { tenant, group, member: member.clone(), leaving: false };
        let first = self.to_coordinator(heartbeat.clone()).await?;
        let (tx, rx) = mpsc::channel(self.config.feed.subscriber_buffer_messages as usize);
        let node = self.clone();
        tokio::spawn(async move {
            let _seat = seat;
            let member = Member { filter, wanted, heartbeat };
            node.run_member(member, first, &tx).await;
        });
        Ok((member, rx))
    }

    /// Serves one member until its receiver goes away or an error ends it, then leaves.
    async fn run_member(self: Arc<Self>, m: Member, first: ConsumerReply, tx: &mpsc::Sender<Result<Delivery>>) {
        let shard_count = self.map().shard_count as usize;
        let mut cursor = Cursor(vec![0; shard_count]);
        let mut mine: Vec<u32> = Vec::new();
        let mut reading: Option<Reading> = None;
        let mut assignment = Some(first);
        let mut beat = tokio::time::interval(HEARTBEAT_EVERY);
        // The first tick is at once: the join was the first heartbeat.
        beat.tick().await;
        loop {
            if let Some(ConsumerReply::Assignment { shards, positions }) = assignment.take() {
                if shards != mine {
                    // Shards kept go on from where this member is; new ones start right after
                    // their committed position.
                    for (s, p) in shards.iter().zip(&positions) {
                        if !mine.contains(s) {
                            cursor.0[*s as usize] = *p;
                            // A planted bug for the simulator's group checker to catch: a
                            // member taking a shard over skips the first entry after the commit.
                            if cfg!(hotlake_bug = "skip-entry-on-takeover") {
                                cursor.0[*s as usize] += 1;
                            }
                        }
                    }
                    mine = shards;
                    let read: Vec<ShardId> = m.wanted.iter().filter(|s| mine.contains(&s.0)).copied().collect();
                    reading = Some(self.clone().start_reading(m.filter.clone(), read, cursor.clone()));
                }
            }
            tokio::select! {
                delivery = async {
                    match reading.as_mut() {
                        Some(r) => r.rx.recv().await,
                        None => std::future::pending().await,
                    }
                } => match delivery {
                    Some(Ok(d)) => {
                        let (Delivery::Entry { cursor: c, .. } | Delivery::History { cursor: c, .. } | Delivery::Progress(c)) =
                            &d;
                        cursor.0.clone_from(&c.0);
                        if tx.send(Ok(d)).await.is_err() {
                            break;
                        }
                    }
                    Some(Err(e)) => {
                        let _ = tx.send(Err(e)).await;
                        break;
                    }
                    None => reading = None,
                },
                _ = beat.tick() => match self.to_coordinator(m.heartbeat.clone()).await {
                    Ok(a) => assignment = Some(a),
                    Err(e @ Error::NotFound(_)) => {
                        // Deleted under a member (a delete waits for none, but one may join
                        // meanwhile): nothing left to read for.
                        let _ = tx.send(Err(e)).await;
                        break;
                    }
                    // The coordinator moved or is busy: keep reading what this member has.
                    Err(e) => tracing::debug!(error = %e, "consumer heartbeat failed; retrying"),
                },
                _ = tx.closed() => break,
            }
        }
        drop(reading);
        if let ConsumerCall::Heartbeat { tenant, group, member, .. } = m.heartbeat {
            let leave = ConsumerCall::Heartbeat { tenant, group, member, leaving: true };
            if let Err(e) = self.to_coordinator(leave).await {
                tracing::debug!(error = %e, "leaving a consumer group failed; the coordinator forgets the member later");
            }
        }
    }

    fn start_reading(self: Arc<Self>, filter: FeedFilter, shards: Vec<ShardId>, cursor: Cursor) -> Reading {
        let (tx, rx) = mpsc::channel(self.config.feed.subscriber_buffer_messages as usize);
        let task = tokio::spawn(async move {
            if let Err(e) = self.run_subscription(filter, shards, cursor, true, &tx).await {
                let _ = tx.send(Err(e)).await;
            }
        });
        Reading { rx, task }
    }

    /// Commits what member `member` of a group has processed, up to `cursor`; returns the shards
    /// whose positions moved (those the member reads).
    pub async fn commit_consumer(&self, tenant: &str, group: &str, member: &str, cursor: &Cursor) -> Result<Vec<u32>> {
        let tenant = self.tenant(tenant)?.to_string();
        check_group_name(group).map_err(Error::invalid)?;
        let shard_count = self.map().shard_count as usize;
        if cursor.0.len() != shard_count {
            return Err(Error::invalid(format!(
                "the cursor names {} shards but the cluster has {shard_count}",
                cursor.0.len()
            )));
        }
        if member.is_empty() || member.len() > 64 {
            return Err(Error::invalid("a member id is what the group's stream named, 1 to 64 bytes"));
        }
        let positions = cursor.0.iter().enumerate().map(|(s, i)| (s as u32, *i)).collect();
        let call = ConsumerCall::Commit { tenant, group: group.into(), member: member.into(), positions };
        match self.to_coordinator(call).await? {
            ConsumerReply::Committed(shards) => Ok(shards),
            other => Err(Error::Internal(format!("unexpected reply to a commit: {other:?}"))),
        }
    }

    /// The state of one group (`None`: of every group of the tenant).
    pub async fn consumer_groups(&self, tenant: &str, group: Option<&str>) -> Result<Vec<ConsumerGroupStatus>> {
        let tenant = self.tenant(tenant)?.to_string();
        let mut groups = self.meta_sm.consumer_groups(&tenant);
        if let Some(name) = group {
            groups.retain(|(n, _)| n == name);
            if groups.is_empty() {
                return Err(no_group(&tenant, name));
            }
        }
        let applied = self.shards_applied().await;
        let mut out = Vec::with_capacity(groups.len());
        for (name, g) in groups {
            let members =
                match self.to_coordinator(ConsumerCall::Members { tenant: tenant.clone(), group: name.clone() }).await?
                {
                    ConsumerReply::Members(m) => m,
                    other => return Err(Error::Internal(format!("unexpected reply to a members call: {other:?}"))),
                };
            out.push(ConsumerGroupStatus {
                group: name,
                positions: Cursor(g.positions),
                applied: applied.clone(),
                commits: g.commits,
                members,
            });
        }
        Ok(out)
    }

    /// `hotlake_consumer_lag_entries` for every consumer group, from the meta leader only: it
    /// holds the groups' positions and every shard's applied index as its leader reports it,
    /// and other nodes answer nothing, so a sum over the nodes counts each group once.
    pub(crate) fn consumer_lag_metrics(&self) -> String {
        use std::fmt::Write as _;
        if self.meta.metrics().borrow().current_leader != Some(self.config.node_id) {
            return String::new();
        }
        let groups = self.meta_sm.all_consumer_groups();
        if groups.is_empty() {
            return String::new();
        }
        let applied = super::control::reported_applied(self, self.map().shard_count as usize);
        let mut out = String::from(
            "# HELP hotlake_consumer_lag_entries Log entries applied to the shards and not yet committed by the \
             consumer group (answered by the meta leader).\n# TYPE hotlake_consumer_lag_entries gauge\n",
        );
        for (tenant, group, positions) in groups {
            let lag: u64 = applied.iter().zip(&positions).map(|(a, p)| a.saturating_sub(*p)).sum();
            let _ = writeln!(
                out,
                "hotlake_consumer_lag_entries{{tenant=\"{}\",group=\"{group}\"}} {lag}",
                label_value(&tenant)
            );
        }
        out
    }

    /// Each shard's applied index: read where a replica answers (0 where none does).
    async fn shards_applied(&self) -> Vec<u64> {
        let shards: Vec<ShardId> = match self.ring() {
            Ok(r) => r.shards().collect(),
            Err(_) => return Vec::new(),
        };
        let mut applied = vec![0; shards.len()];
        let filter = FeedFilter::default();
        for shard in shards {
            if let Ok(r) = self.feed_read_anywhere(shard, None, &filter, 0).await {
                applied[shard.0 as usize] = r.through;
            }
        }
        applied
    }

    /// Moves a group that has no member to `to`.
    pub async fn reset_consumer(&self, tenant: &str, group: &str, to: ResetTo) -> Result<()> {
        let tenant = self.without_members(tenant, group).await?;
        let shards: Vec<ShardId> = self.ring()?.shards().collect();
        let start = match to {
            ResetTo::Now => Start::Now,
            ResetTo::After(c) => Start::After(c),
        };
        let positions = self.start_cursor(start, &shards, &FeedFilter::default()).await?.0;
        let cmd = ConsumerCommand::Reset { tenant, group: group.into(), positions };
        self.propose_meta(MetaCommand::Consumers(cmd), false).await.map(|_| ())
    }

    /// Deletes a group that has no member.
    pub async fn delete_consumer(&self, tenant: &str, group: &str) -> Result<()> {
        let tenant = self.without_members(tenant, group).await?;
        let cmd = ConsumerCommand::Delete { tenant, group: group.into() };
        self.propose_meta(MetaCommand::Consumers(cmd), false).await.map(|_| ())
    }

    /// The tenant's name, once the group exists and no member reads it (a member's next commit
    /// would undo a reset).
    async fn without_members(&self, tenant: &str, group: &str) -> Result<String> {
        let tenant = self.tenant(tenant)?.to_string();
        check_group_name(group).map_err(Error::invalid)?;
        if self.meta_sm.consumer_group(&tenant, group).is_none() {
            return Err(no_group(&tenant, group));
        }
        let call = ConsumerCall::Members { tenant: tenant.clone(), group: group.into() };
        if let ConsumerReply::Members(m) = self.to_coordinator(call).await? {
            if !m.is_empty() {
                return Err(Error::invalid(format!(
                    "consumer group {group:?} has {} member(s) reading; stop them first (a member's next commit \
                     would undo the change)",
                    m.len()
                )));
            }
        }
        Ok(tenant)
    }
}

/// What a member stream reads, and the heartbeat it sends.
struct Member {
    filter: FeedFilter,
    /// Shards the filter can touch.
    wanted: Vec<ShardId>,
    heartbeat: ConsumerCall,
}

/// The subscription over a member's current shards; dropping it stops it.
struct Reading {
    rx: mpsc::Receiver<Result<Delivery>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Reading {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A Prometheus label value: backslash, double quote and newline escaped (a group name needs
/// none; a tenant name may hold them).
fn label_value(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn no_group(tenant: &str, group: &str) -> Error {
    Error::NotFound(format!("tenant {tenant:?} has no consumer group {group:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_escape_what_the_text_format_reserves() {
        assert_eq!(label_value(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(label_value("x\ny"), "x\\ny");
    }

    #[test]
    fn shards_are_dealt_to_members_in_id_order_and_every_shard_has_one_reader() {
        let now = Instant::now();
        let members: BTreeMap<String, Instant> = ["b", "a", "c"].iter().map(|m| (m.to_string(), now)).collect();
        let a = assign(&members, 8);
        assert_eq!(a, vec![("a".into(), vec![0, 3, 6]), ("b".into(), vec![1, 4, 7]), ("c".into(), vec![2, 5])]);
        assert!(assign(&BTreeMap::new(), 8).is_empty());
    }

    #[test]
    fn a_group_is_bounded_and_a_member_that_leaves_gives_its_shards_back() {
        let c = ConsumerMembers::default();
        let key = ("t".to_string(), "g".to_string());
        assert_eq!(c.heartbeat(key.clone(), "a", false, 4).unwrap(), vec![0, 1, 2, 3]);
        assert_eq!(c.heartbeat(key.clone(), "b", false, 4).unwrap(), vec![1, 3]);
        assert_eq!(c.heartbeat(key.clone(), "a", false, 4).unwrap(), vec![0, 2]);
        c.heartbeat(key.clone(), "b", true, 4).unwrap();
        assert_eq!(c.members(&key, 4), vec![("a".to_string(), vec![0, 1, 2, 3])]);
        for i in 1..MEMBERS_PER_GROUP_MAX {
            c.heartbeat(key.clone(), &format!("m{i:03}"), false, 4).unwrap();
        }
        assert!(matches!(c.heartbeat(key.clone(), "late", false, 4), Err(Error::LimitExceeded { .. })));
        assert_eq!(c.members(&key, 4).len(), MEMBERS_PER_GROUP_MAX);
    }
}
