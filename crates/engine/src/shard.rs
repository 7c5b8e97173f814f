//! One shard's data: series index, memtables and flushed blocks, plus the apply, flush and
//! read-view operations the Raft state machine and the query path use.
//!
//! ```text
//!  apply ──► active memtable ──freeze──► frozen memtable ──flush──► blocks (data space)
//!                   │                           │                    + series records (index space)
//!                   └──────── read view: blocks (seq ≤ cut) + frozen + active ──► merge reader
//! ```
//!
//! Invariants:
//! - the flushed state record (applied log id, flush sequence, next series id, retention) is
//!   written in the same atomic batch as the blocks and series records of that flush;
//! - a read view sees blocks only up to the flush sequence current when the view was taken, and
//!   every memtable at or after it, so it never sees a point twice with different ages nor misses
//!   one that a concurrent flush moves.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};

use super::applied::{EntryId, MembershipRecord};
use super::batch::{shown, ApplyOutcome, SeriesWrite, ShardCommand, ShardWrite};
use super::codec::{self, Block};
use super::feed::{self, FeedEntry, FeedError, FeedFilter, FeedRead, FeedRetention, StoredFeed};
use super::index::{LastValue, SeriesIndex, SeriesRecord};
use super::memtable::{FieldId, Memtable};
use hotlake_storage::{keys, Durability, Engine, ShardId, Space, StorageError, WriteBatch};
use hotlake_types::model::TimestampNs;

mod snapshot;
pub use snapshot::{flushed_state_of, ShardSnapshot, SnapshotPair, SnapshotReader};

/// Engine knobs of a shard.
#[derive(Clone, Debug)]
pub struct ShardOptions {
    /// Blocks never span an aligned window boundary of this width.
    pub block_window_ns: i64,
    /// Numeric codec for new blocks.
    pub codec: codec::NumericCodec,
    /// How much of the change feed is kept.
    pub feed: FeedRetention,
}

impl Default for ShardOptions {
    fn default() -> Self {
        ShardOptions {
            block_window_ns: 6 * 3600 * 1_000_000_000,
            codec: codec::DEFAULT_NUMERIC_CODEC,
            feed: FeedRetention::default(),
        }
    }
}

/// Start of the aligned window containing `ts` (clamped to `i64::MIN` for the first, partial
/// window of the time line).
pub fn window_start(ts: TimestampNs, window_ns: i64) -> TimestampNs {
    ts.checked_sub(ts.rem_euclid(window_ns)).unwrap_or(TimestampNs::MIN)
}

/// Invariant of apply: entries come in log order, each exactly once, so the applied index
/// strictly rises. Anything else would apply an entry twice or skip one on this replica only.
/// (The first entry of a log may have index 0: openraft's initial membership.)
fn assert_applied_rises(applied: Option<EntryId>, next: EntryId) {
    if let Some(previous) = applied {
        assert!(next.index > previous.index, "apply went from index {} to {}", previous.index, next.index);
    }
}

/// What a flush persists beside the blocks: enough to restart without the purged log.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct FlushedState {
    /// Last log entry whose effects are in the blocks.
    pub applied: Option<EntryId>,
    /// Membership as of `applied`.
    pub membership: MembershipRecord,
    /// Sequence number of the last flush (0: none yet).
    pub flush_seq: u64,
    /// Series ids below this are persisted.
    pub next_series_id: u32,
    /// Per tenant: points before this time are dropped.
    pub retention: BTreeMap<String, TimestampNs>,
}

struct Frozen {
    seq: u64,
    memtable: Arc<RwLock<Memtable>>,
    feed: Arc<Vec<FeedEntry>>,
    feed_bytes: usize,
}

/// Mutable state of a shard, behind one lock.
pub struct ShardInner {
    /// Last applied log id.
    pub applied: Option<EntryId>,
    /// Last applied membership.
    pub membership: MembershipRecord,
    /// Series index.
    pub index: SeriesIndex,
    active: Arc<RwLock<Memtable>>,
    /// Feed entries applied into the active memtable, and their bytes.
    active_feed: Vec<FeedEntry>,
    active_feed_bytes: usize,
    frozen: Vec<Frozen>,
    /// What the last completed flush persisted.
    pub flushed: FlushedState,
    next_flush_seq: u64,
    retention: BTreeMap<String, TimestampNs>,
}

impl ShardInner {
    /// Bytes buffered in memtables (active and frozen), with the feed entries beside them.
    pub fn memtable_bytes(&self) -> usize {
        let active = self.active.read().unwrap_or_else(|p| p.into_inner()).bytes() + self.active_feed_bytes;
        active
            + self
                .frozen
                .iter()
                .map(|f| f.memtable.read().unwrap_or_else(|p| p.into_inner()).bytes() + f.feed_bytes)
                .sum::<usize>()
    }

    /// A read view of this state: the memtables and the flush cut as they are now.
    pub(crate) fn view(&self) -> ReadView {
        let mut memtables: Vec<_> = self.frozen.iter().map(|f| f.memtable.clone()).collect();
        memtables.push(self.active.clone());
        ReadView { flush_seq_max: self.flushed.flush_seq, memtables }
    }

    /// Retention cutoff of a tenant (points before it are gone).
    pub fn retention_cutoff(&self, tenant: &str) -> TimestampNs {
        self.retention.get(tenant).copied().unwrap_or(TimestampNs::MIN)
    }
}

/// A consistent point-in-time view for reading a shard.
pub struct ReadView {
    /// Blocks with a flush sequence above this are ignored (their points are in `memtables`).
    pub flush_seq_max: u64,
    /// Memtables, oldest first: frozen ones, then the active one.
    pub memtables: Vec<Arc<RwLock<Memtable>>>,
}

/// What the feed gets of one series of an applied write.
enum Fed {
    Whole,
    Part(SeriesWrite),
    Nothing,
}

impl Fed {
    /// What was accepted of `s` (already trimmed if `dropped_rows`), given the field id each
    /// column got (`None`: refused).
    fn of(s: &SeriesWrite, dropped_rows: usize, field_ids: &[Option<FieldId>]) -> Fed {
        if dropped_rows == 0 && field_ids.iter().all(Option::is_some) {
            return Fed::Whole;
        }
        Fed::Part(SeriesWrite {
            key: s.key.clone(),
            device: s.device.clone(),
            timestamps: s.timestamps.clone(),
            columns: s.columns.iter().zip(field_ids).filter(|(_, f)| f.is_some()).map(|(c, _)| c.clone()).collect(),
        })
    }

    /// The accepted part of `w`, one `Fed` per series (`None` when nothing was); the write
    /// itself, without a copy, when all of it was.
    fn accepted(w: ShardWrite, fed: Vec<Fed>) -> Option<ShardWrite> {
        if fed.iter().all(|f| matches!(f, Fed::Whole)) {
            return Some(w);
        }
        let series: Vec<SeriesWrite> = w
            .series
            .into_iter()
            .zip(fed)
            .filter_map(|(s, f)| match f {
                Fed::Whole => Some(s),
                Fed::Part(part) => Some(part),
                Fed::Nothing => None,
            })
            .collect();
        (!series.is_empty()).then_some(ShardWrite { tenant: w.tenant, series })
    }
}

/// A memtable cut for flushing, taken in apply order.
pub struct FlushCut {
    seq: u64,
    memtable: Arc<RwLock<Memtable>>,
    feed: Arc<Vec<FeedEntry>>,
    state: FlushedState,
    /// The shard's install generation when the cut was taken.
    generation: u64,
}

/// A shard's data on this node.
pub struct ShardData {
    /// The shard.
    pub id: ShardId,
    engine: Engine,
    options: ShardOptions,
    inner: RwLock<ShardInner>,
    /// Held by every write that changes flushed content outside a log append (flush, retention,
    /// snapshot install) and by snapshot reads, so a snapshot never mixes two flushed states.
    /// Never taken before `inner` by a thread that then waits for `inner`.
    flush_lock: Mutex<()>,
    /// Bumped (under `flush_lock`) by every snapshot install. A flush whose cut was taken in an
    /// earlier generation belongs to content the install replaced: it must not write, or it
    /// would put back an older flushed state and blocks whose keys may collide with the new
    /// content's.
    generation: AtomicU64,
    /// Set (under `flush_lock`) by [`ShardData::close`]: the replica is being deleted and
    /// writes nothing more. The engine names a shard's spaces by shard id, so a write from a
    /// closed replica would land in the spaces of a new replica of the same shard.
    closed: AtomicBool,
    /// The stored part of the change feed. Taken after `flush_lock`, never before it, and
    /// never while waiting for `inner`.
    stored_feed: Mutex<StoredFeed>,
}

fn corrupt(space: Space, reason: impl std::fmt::Display) -> StorageError {
    StorageError::Corrupt { space: space.name(), reason: reason.to_string() }
}

impl ShardData {
    /// Opens a shard: creates its spaces if needed, loads the flushed state and the series index.
    pub fn open(engine: Engine, id: ShardId, options: ShardOptions) -> Result<Self, StorageError> {
        engine.create_shard(id)?;
        if engine.get(Space::Stage(id), keys::STAGE_INSTALLING)?.is_some() {
            // A crash interrupted a snapshot install: finish it before reading anything.
            snapshot::finish_install(&engine, id)?;
        }
        let flushed: FlushedState = match engine.get(Space::Index(id), keys::FLUSHED_STATE)? {
            Some(bytes) => bincode::deserialize(&bytes).map_err(|e| corrupt(Space::Index(id), e))?,
            None => FlushedState::default(),
        };
        let mut index = SeriesIndex::new();
        let (from, to) = keys::series_records_range();
        let mut failure = None;
        engine.scan(Space::Index(id), &from, &to, &mut |k, v| {
            let &[_, a, b, c, d] = k else {
                failure = Some(corrupt(Space::Index(id), format!("series record key {k:?} is not 5 bytes")));
                return false;
            };
            let sid = u32::from_be_bytes([a, b, c, d]);
            if sid >= flushed.next_series_id {
                // A record from a flush newer than the flushed state cannot exist (same batch);
                // tolerate nothing silently.
                failure = Some(corrupt(Space::Index(id), format!("series {sid} beyond next id")));
                return false;
            }
            match bincode::deserialize::<SeriesRecord>(v) {
                Ok(rec) => {
                    if sid != index.next_id() {
                        failure = Some(corrupt(Space::Index(id), format!("series id gap at {sid}")));
                        return false;
                    }
                    if let Some(first) = index.lookup(&rec.tenant, &rec.key) {
                        failure = Some(corrupt(Space::Index(id), format!("series {sid} repeats series {first}")));
                        return false;
                    }
                    index.restore(sid, rec);
                    true
                }
                Err(e) => {
                    failure = Some(corrupt(Space::Index(id), format!("series {sid}: {e}")));
                    false
                }
            }
        })?;
        if let Some(e) = failure {
            return Err(e);
        }
        if index.next_id() != flushed.next_series_id {
            return Err(corrupt(
                Space::Index(id),
                format!("{} series records, flushed state says {}", index.next_id(), flushed.next_series_id),
            ));
        }
        let stored_feed = StoredFeed::load(&engine, Space::Index(id))?;
        let next_flush_seq = flushed
            .flush_seq
            .checked_add(1)
            .ok_or_else(|| corrupt(Space::Index(id), "flush sequence at its maximum"))?;
        let inner = ShardInner {
            applied: flushed.applied,
            membership: flushed.membership.clone(),
            index,
            active: Arc::new(RwLock::new(Memtable::new())),
            active_feed: Vec::new(),
            active_feed_bytes: 0,
            frozen: Vec::new(),
            next_flush_seq,
            retention: flushed.retention.clone(),
            flushed,
        };
        Ok(ShardData {
            id,
            engine,
            options,
            inner: RwLock::new(inner),
            flush_lock: Mutex::new(()),
            generation: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            stored_feed: Mutex::new(stored_feed),
        })
    }

    /// Closes the replica before its spaces are dropped: waits for a flush, retention or
    /// install writing now, and makes every later one write nothing. openraft runs flushes
    /// (snapshot builds) in tasks of their own that outlive the group's shutdown, so one may
    /// still be encoding blocks when the replica is deleted, and finish after the shard has
    /// been placed here again and opened afresh.
    pub fn close(&self) {
        let _quiet = self.flush_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.closed.store(true, Ordering::Release);
    }

    /// Writes `batch` unless the replica was closed. Called with `flush_lock` held, so a write
    /// either finishes before [`ShardData::close`] returns or does not happen.
    fn write_open(&self, batch: WriteBatch, durability: Durability) -> Result<(), StorageError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StorageError::Closed(self.id.to_string()));
        }
        self.engine.write(batch, durability)
    }

    /// The engine the shard lives in.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Engine knobs.
    pub fn options(&self) -> &ShardOptions {
        &self.options
    }

    /// Shared access to the shard state.
    pub fn read(&self) -> std::sync::RwLockReadGuard<'_, ShardInner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, ShardInner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a log entry that carries no command (blank or membership).
    pub fn apply_meta(&self, log_id: EntryId, membership: Option<MembershipRecord>) {
        let mut inner = self.write();
        assert_applied_rises(inner.applied, log_id);
        inner.applied = Some(log_id);
        if let Some(m) = membership {
            inner.membership = m;
        }
    }

    /// Applies one committed command. Deterministic: every replica gets the same outcome and
    /// the same feed entry.
    pub fn apply(&self, log_id: EntryId, cmd: ShardCommand) -> Result<ApplyOutcome, StorageError> {
        let mut inner = self.write();
        assert_applied_rises(inner.applied, log_id);
        let outcome = match cmd {
            ShardCommand::Write(w) => {
                let (outcome, accepted) = Self::apply_write(&mut inner, w);
                if let Some(write) = accepted {
                    inner.active_feed_bytes += feed::approx_bytes(&write);
                    inner.active_feed.push(FeedEntry { index: log_id.index, write: Arc::new(write) });
                }
                outcome
            }
            ShardCommand::Retain { tenant, before_ns } => {
                self.apply_retain(&mut inner, &tenant, before_ns)?;
                ApplyOutcome::default()
            }
        };
        inner.applied = Some(log_id);
        Ok(outcome)
    }

    /// Applies a write; returns the outcome and what was accepted of the write, for the feed
    /// (`None` when nothing was).
    fn apply_write(inner: &mut ShardInner, w: ShardWrite) -> (ApplyOutcome, Option<ShardWrite>) {
        let mut outcome = ApplyOutcome::default();
        let cutoff = inner.retention_cutoff(&w.tenant);
        let active = inner.active.clone();
        let mut memtable = active.write().unwrap_or_else(|p| p.into_inner());
        // What the feed gets of each series: all of it, a part (some points or fields were
        // not accepted), or nothing.
        let mut fed: Vec<Fed> = Vec::with_capacity(w.series.len());
        for s in &w.series {
            // Total apply: a malformed series is rejected the same way on every replica.
            if let Err(why) = s.check() {
                outcome.rejected.push(format!("series {}: {why}; none of its points were applied", shown(&s.key)));
                fed.push(Fed::Nothing);
                continue;
            }
            let dropped_rows = s.timestamps.iter().filter(|&&t| t < cutoff).count();
            let trimmed;
            let s = if dropped_rows > 0 {
                outcome.rejected.push(format!(
                    "series {}: {dropped_rows} points older than the tenant's retention were dropped",
                    shown(&s.key)
                ));
                trimmed = trim_before(s, cutoff);
                &trimmed
            } else {
                s
            };
            if s.timestamps.is_empty() {
                fed.push(Fed::Nothing);
                continue;
            }
            let sid = inner.index.get_or_create(&w.tenant, &s.key, &s.device);
            let mut field_ids: Vec<Option<FieldId>> = Vec::with_capacity(s.columns.len());
            let mut seen: HashSet<FieldId> = HashSet::new();
            for col in &s.columns {
                let fid = inner.index.field_id(&col.field);
                let ty = col.values.field_type();
                let info = inner.index.get_mut(sid);
                let accepted = match info.type_of(fid) {
                    Some(existing) if existing != ty => {
                        outcome.rejected.push(format!(
                            "series {}: field {:?} is {} but this write has {}",
                            shown(&s.key),
                            col.field,
                            existing.name(),
                            ty.name()
                        ));
                        false
                    }
                    Some(_) => true,
                    None => {
                        info.types.push((fid, ty));
                        true
                    }
                };
                if accepted && !seen.insert(fid) {
                    outcome.rejected.push(format!(
                        "series {}: field {:?} given twice",
                        shown(&s.key),
                        shown(&col.field)
                    ));
                    field_ids.push(None);
                    continue;
                }
                if accepted {
                    update_last(info, fid, s, col);
                }
                field_ids.push(accepted.then_some(fid));
            }
            outcome.values += memtable.insert(sid, s, &field_ids);
            outcome.points += s.timestamps.len() as u64;
            fed.push(Fed::of(s, dropped_rows, &field_ids));
        }
        drop(memtable);
        (outcome, Fed::accepted(w, fed))
    }

    fn apply_retain(&self, inner: &mut ShardInner, tenant: &str, before_ns: TimestampNs) -> Result<(), StorageError> {
        let window = self.options.block_window_ns;
        // Whole windows only: the cutoff moves down to a window boundary.
        let cutoff = window_start(before_ns, window);
        if cutoff <= inner.retention_cutoff(tenant) {
            return Ok(());
        }
        inner.retention.insert(tenant.to_string(), cutoff);
        let sids: Vec<u32> =
            inner.index.all().iter().enumerate().filter(|(_, s)| &*s.tenant == tenant).map(|(i, _)| i as u32).collect();
        let mut batch = WriteBatch::new();
        for &sid in &sids {
            batch.delete_range(
                Space::Data(self.id),
                keys::block_from(sid, TimestampNs::MIN).to_vec(),
                keys::block_from(sid, cutoff).to_vec(),
            );
        }
        // Ordered before any later flush; a crash before it is durable replays this entry.
        {
            let _quiet = self.flush_lock.lock().unwrap_or_else(|p| p.into_inner());
            self.write_open(batch, Durability::Buffered)?;
        }
        let memtables: Vec<_> =
            std::iter::once(inner.active.clone()).chain(inner.frozen.iter().map(|f| f.memtable.clone())).collect();
        for m in memtables {
            let mut m = m.write().unwrap_or_else(|p| p.into_inner());
            for &sid in &sids {
                m.drop_before(sid, cutoff);
            }
        }
        for &sid in &sids {
            inner.index.get_mut(sid).last.retain(|l| l.timestamp_ns >= cutoff);
        }
        Ok(())
    }

    /// The feed entries after log index `after` that `filter` selects, until their points
    /// reach `max_points` (at least one entry when there is one). `through` in the answer is
    /// the cursor to continue from: the last entry returned when the read stopped early, else
    /// the applied index.
    pub fn read_feed(&self, after: u64, filter: &FeedFilter, max_points: usize) -> Result<FeedRead, FeedError> {
        let (in_memory, applied) = {
            let inner = self.read();
            // Each list is in index order: skip what the cursor has seen without looking at it.
            let after_cursor =
                |entries: &[FeedEntry]| entries[entries.partition_point(|e| e.index <= after)..].to_vec();
            let mut in_memory: Vec<FeedEntry> = Vec::new();
            for f in &inner.frozen {
                in_memory.extend(after_cursor(&f.feed));
            }
            in_memory.extend(after_cursor(&inner.active_feed));
            (in_memory, inner.applied.map_or(0, |a| a.index))
        };
        // Entries leave memory only after their flush is written, and trimming raises the start
        // before it deletes: checking the start on both sides of the stored read means a range
        // read as empty was empty.
        let held_from = || {
            let start = self.stored_feed.lock().unwrap_or_else(|p| p.into_inner()).start;
            match after.checked_add(1) {
                Some(next) if next < start => Err(FeedError::Trimmed { oldest_cursor: start - 1 }),
                _ => Ok(()),
            }
        };
        held_from()?;
        let stored_until = in_memory.first().map_or(applied.max(after).saturating_add(1), |e| e.index);
        let mut entries = Vec::new();
        let (last_read, mut points) = feed::read_stored(
            &self.engine,
            Space::Index(self.id),
            after.saturating_add(1),
            stored_until,
            filter,
            max_points,
            &mut entries,
        )?;
        held_from()?;
        if points >= max_points {
            return Ok(FeedRead { entries, through: last_read.unwrap_or(after) });
        }
        for e in in_memory {
            if let Some(selected) = filter.select(&e.write) {
                points += feed::points_of(&selected);
                entries.push(FeedEntry { index: e.index, write: Arc::new(selected) });
                if points >= max_points {
                    return Ok(FeedRead { entries, through: e.index });
                }
            }
        }
        Ok(FeedRead { entries, through: applied.max(after) })
    }

    /// Bytes of feed entries stored on this replica.
    pub fn feed_stored_bytes(&self) -> u64 {
        self.stored_feed.lock().unwrap_or_else(|p| p.into_inner()).bytes()
    }

    /// Takes a consistent read view.
    pub fn read_view(&self) -> ReadView {
        self.read().view()
    }

    /// Freezes the active memtable for flushing. Called in apply order, so the cut is exactly
    /// the state after `applied`.
    pub fn freeze(&self) -> FlushCut {
        let mut inner = self.write();
        let seq = inner.next_flush_seq;
        inner.next_flush_seq += 1;
        let memtable = std::mem::replace(&mut inner.active, Arc::new(RwLock::new(Memtable::new())));
        let feed = Arc::new(std::mem::take(&mut inner.active_feed));
        let feed_bytes = std::mem::take(&mut inner.active_feed_bytes);
        inner.frozen.push(Frozen { seq, memtable: memtable.clone(), feed: feed.clone(), feed_bytes });
        let state = FlushedState {
            applied: inner.applied,
            membership: inner.membership.clone(),
            flush_seq: seq,
            next_series_id: inner.index.next_id(),
            retention: inner.retention.clone(),
        };
        FlushCut { seq, memtable, feed, state, generation: self.generation.load(Ordering::Acquire) }
    }

    /// Writes a frozen memtable as blocks, atomically with its flushed state, then forgets it.
    /// Returns the flushed state.
    pub fn flush(&self, cut: FlushCut) -> Result<FlushedState, StorageError> {
        let window = self.options.block_window_ns;
        let mut batch = WriteBatch::new();
        let memtable = cut.memtable.read().unwrap_or_else(|p| p.into_inner());
        let mut sids: Vec<u32> = memtable.series_ids().collect();
        sids.sort_unstable();
        // Take what the encoding needs from the index under a short lock, so apply is not held
        // up while blocks are compressed.
        let (field_names, records, tenants, records_without_rows) = {
            let inner = self.read();
            let field_names: Vec<String> =
                (0..inner.index.field_count()).map(|f| inner.index.field_name(f as FieldId).to_string()).collect();
            let records: Vec<Vec<u8>> = sids
                .iter()
                .map(|&sid| bincode::serialize(&inner.index.record(sid)).expect("series record serializes"))
                .collect();
            let tenants: Vec<String> = sids.iter().map(|&sid| inner.index.get(sid).tenant.to_string()).collect();
            // Series created with no accepted points have no memtable rows; persist them too so
            // the records stay gap-free.
            let without_rows: Vec<(u32, Vec<u8>)> = (inner.flushed.next_series_id..cut.state.next_series_id)
                .filter(|sid| memtable.series(*sid).is_none())
                .map(|sid| (sid, bincode::serialize(&inner.index.record(sid)).expect("series record serializes")))
                .collect();
            (field_names, records, tenants, without_rows)
        };
        let name_of = |f: FieldId| field_names[f as usize].clone();
        for ((&sid, record), tenant) in sids.iter().zip(records).zip(&tenants) {
            assert!(sid < cut.state.next_series_id, "memtable series beyond the cut");
            let buf = memtable.series(sid).expect("listed series exists");
            let from = cut.state.retention.get(tenant).copied().unwrap_or(TimestampNs::MIN);
            let block = buf.to_block(from, TimestampNs::MAX, None, &name_of);
            for (win, part) in split_by_window(block, window) {
                let bytes = codec::encode_block(&part, self.options.codec);
                batch.put(Space::Data(self.id), keys::block(sid, win, cut.seq).to_vec(), bytes);
            }
            batch.put(Space::Index(self.id), keys::series_record(sid).to_vec(), record);
        }
        for (sid, record) in records_without_rows {
            batch.put(Space::Index(self.id), keys::series_record(sid).to_vec(), record);
        }
        drop(memtable);
        let state_bytes = bincode::serialize(&cut.state).expect("flushed state serializes");
        #[cfg(hotlake_bug = "flush-state-before-blocks")]
        {
            let mut early = WriteBatch::new();
            early.put(Space::Index(self.id), keys::FLUSHED_STATE.to_vec(), state_bytes.clone());
            self.engine.write(early, Durability::Buffered)?;
            self.engine.sync()?;
        }
        batch.put(Space::Index(self.id), keys::FLUSHED_STATE.to_vec(), state_bytes);
        let feed_entries = feed::encode(&cut.feed);
        {
            let _quiet = self.flush_lock.lock().unwrap_or_else(|p| p.into_inner());
            if self.generation.load(Ordering::Acquire) != cut.generation {
                // A snapshot was installed since the cut: its content supersedes this flush.
                return Ok(self.read().flushed.clone());
            }
            let now_ms =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
            self.stored_feed.lock().unwrap_or_else(|p| p.into_inner()).persist(
                Space::Index(self.id),
                feed_entries,
                now_ms,
                &self.options.feed,
                &mut batch,
            );
            self.write_open(batch, Durability::Buffered)?;
        }
        let mut inner = self.write();
        inner.frozen.retain(|f| f.seq != cut.seq);
        if cut.state.flush_seq > inner.flushed.flush_seq {
            inner.flushed = cut.state.clone();
        }
        Ok(cut.state)
    }
}

fn trim_before(s: &SeriesWrite, cutoff: TimestampNs) -> SeriesWrite {
    let keep: Vec<bool> = s.timestamps.iter().map(|&t| t >= cutoff).collect();
    let mut out = SeriesWrite {
        key: s.key.clone(),
        device: s.device.clone(),
        timestamps: s.timestamps.iter().copied().filter(|&t| t >= cutoff).collect(),
        columns: Vec::with_capacity(s.columns.len()),
    };
    for col in &s.columns {
        let mut absent = col.absent_rows.iter().peekable();
        let mut values = super::batch::Values::empty(col.values.field_type());
        let mut new_absent = Vec::new();
        let mut vi = 0;
        let mut new_row = 0u32;
        for (row, &k) in keep.iter().enumerate() {
            let is_absent = absent.peek() == Some(&&(row as u32));
            if is_absent {
                absent.next();
            }
            if k {
                if is_absent {
                    new_absent.push(new_row);
                } else {
                    values.push(col.values.get(vi));
                }
                new_row += 1;
            }
            if !is_absent {
                vi += 1;
            }
        }
        if !values.is_empty() {
            out.columns.push(super::batch::ColumnWrite { field: col.field.clone(), absent_rows: new_absent, values });
        }
    }
    out
}

/// Updates the last value of a field from one series write: the row with the greatest
/// timestamp wins, and among equal timestamps the later row (apply order).
fn update_last(info: &mut super::index::SeriesInfo, fid: FieldId, s: &SeriesWrite, col: &super::batch::ColumnWrite) {
    let mut best: Option<(TimestampNs, usize)> = None;
    let mut absent = col.absent_rows.iter().peekable();
    let mut vi = 0;
    for (row, &t) in s.timestamps.iter().enumerate() {
        if absent.peek() == Some(&&(row as u32)) {
            absent.next();
            continue;
        }
        if best.is_none_or(|(bt, _)| t >= bt) {
            best = Some((t, vi));
        }
        vi += 1;
    }
    let Some((t, vi)) = best else { return };
    match info.last.iter_mut().find(|l| l.field == fid) {
        Some(l) if t >= l.timestamp_ns => {
            l.timestamp_ns = t;
            l.value = col.values.get(vi);
        }
        Some(_) => {}
        None => info.last.push(LastValue { field: fid, timestamp_ns: t, value: col.values.get(vi) }),
    }
}

/// Splits a sorted block into aligned windows.
pub fn split_by_window(block: Block, window_ns: i64) -> Vec<(TimestampNs, Block)> {
    let (Some(&first), Some(&last)) = (block.timestamps.first(), block.timestamps.last()) else {
        return Vec::new();
    };
    if window_start(first, window_ns) == window_start(last, window_ns) {
        return vec![(window_start(first, window_ns), block)];
    }
    let mut out = Vec::new();
    let mut start = 0;
    while start < block.timestamps.len() {
        let win = window_start(block.timestamps[start], window_ns);
        let end = block.timestamps.partition_point(|&t| t < win.saturating_add(window_ns));
        out.push((win, super::read::slice_rows(&block, start, end)));
        start = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::batch::{ColumnWrite, Values};
    use hotlake_storage::MemEngine;

    const HOUR: i64 = 3600 * 1_000_000_000;

    fn write(tenant: &str, device: &str, hours: &[i64]) -> ShardCommand {
        ShardCommand::Write(ShardWrite {
            tenant: tenant.into(),
            series: vec![SeriesWrite {
                key: format!("m,device_id={device}"),
                device: device.into(),
                timestamps: hours.iter().map(|h| h * HOUR).collect(),
                columns: vec![ColumnWrite {
                    field: "v".into(),
                    absent_rows: vec![],
                    values: Values::F64(hours.iter().map(|&h| h as f64).collect()),
                }],
            }],
        })
    }

    fn points(shard: &ShardData, tenant: &str, device: &str) -> Vec<i64> {
        let sid = shard.read().index.lookup(tenant, &format!("m,device_id={device}")).unwrap();
        let view = shard.read_view();
        let b = crate::read::read_series(shard, &view, sid, i64::MIN, i64::MAX, None).unwrap();
        b.timestamps.iter().map(|t| t / HOUR).collect()
    }

    /// Bad index data on disk is an error naming the shard's space, never a panic: a short
    /// series-record key used to index past its end.
    #[test]
    fn a_corrupt_index_fails_the_open_with_an_error() {
        use hotlake_storage::{Durability, WriteBatch};
        for (key, value) in [(vec![0x01], vec![]), (keys::FLUSHED_STATE.to_vec(), vec![0xff; 3])] {
            let engine: Engine = Arc::new(MemEngine::new());
            ShardData::open(engine.clone(), ShardId(2), ShardOptions::default()).unwrap();
            let mut b = WriteBatch::new();
            b.put(Space::Index(ShardId(2)), key, value);
            engine.write(b, Durability::Sync).unwrap();
            match ShardData::open(engine, ShardId(2), ShardOptions::default()) {
                Err(StorageError::Corrupt { space, .. }) => assert!(space.contains('2'), "{space}"),
                Err(other) => panic!("expected corruption, got {other}"),
                Ok(_) => panic!("a corrupt index opened"),
            }
        }
    }

    /// A batch whose columns do not match its timestamps used to panic apply on every replica
    /// after it committed (and again after every restart). Apply is total: the malformed series
    /// are rejected with a reason, the good ones in the same entry are applied.
    #[test]
    fn apply_rejects_malformed_series_without_panicking() {
        let engine: Engine = Arc::new(MemEngine::new());
        let shard = ShardData::open(engine, ShardId(0), ShardOptions::default()).unwrap();
        let ShardCommand::Write(mut w) = write("a", "good", &[1, 2]) else { unreachable!() };
        let ShardCommand::Write(template) = write("a", "bad", &[1, 2]) else { unreachable!() };
        let bad = template.series[0].clone();
        let mut short = bad.clone();
        short.key = "m,device_id=short".into();
        short.columns[0].values = Values::F64(vec![1.0]);
        let mut absent_past_end = bad.clone();
        absent_past_end.key = "m,device_id=absent".into();
        absent_past_end.columns[0].absent_rows = vec![5];
        let mut nul = bad;
        nul.key = "m,device_id=n\0ul".into();
        w.series.extend([short, absent_past_end, nul]);
        let outcome = shard.apply(EntryId { term: 1, leader: 1, index: 1 }, ShardCommand::Write(w)).unwrap();
        assert_eq!(outcome.points, 2, "the good series is applied");
        assert_eq!(outcome.rejected.len(), 3, "{:?}", outcome.rejected);
        assert!(
            outcome.rejected[0].contains("1 values and 0 absent rows do not make 2 rows"),
            "{:?}",
            outcome.rejected
        );
        assert!(outcome.rejected[1].contains("ascending row indexes below 2"), "{:?}", outcome.rejected);
        assert!(outcome.rejected[2].contains("NUL"), "{:?}", outcome.rejected);
        assert_eq!(points(&shard, "a", "good"), vec![1, 2]);
        assert_eq!(shard.read().applied.map(|e| e.index), Some(1));
    }

    /// A flush cut before the replica was closed writes nothing, even once the shard's spaces
    /// belong to a new replica of the same shard: the new replica keeps its own flushed state
    /// and holds none of the old one's blocks.
    #[test]
    fn a_flush_that_outlives_its_closed_replica_writes_nothing() {
        let engine: Engine = Arc::new(MemEngine::new());
        let old = ShardData::open(engine.clone(), ShardId(3), ShardOptions::default()).unwrap();
        old.apply(EntryId { term: 1, leader: 1, index: 7 }, write("a", "old", &[1, 2])).unwrap();
        let cut = old.freeze();
        old.close();
        engine.drop_shard(ShardId(3)).unwrap();
        let new = ShardData::open(engine.clone(), ShardId(3), ShardOptions::default()).unwrap();
        match old.flush(cut) {
            Err(StorageError::Closed(shard)) => assert_eq!(shard, ShardId(3).to_string()),
            other => panic!("a closed replica flushed: {other:?}"),
        }
        drop((old, new));
        let reopened = ShardData::open(engine.clone(), ShardId(3), ShardOptions::default()).unwrap();
        assert_eq!(reopened.read().flushed.applied, None, "the old replica's flushed state came back");
        assert!(reopened.read().index.lookup("a", "m,device_id=old").is_none(), "the old replica's series came back");

        // An install finishing after the close neither writes nor creates the dropped spaces
        // again (opening a shard creates them).
        let source = Arc::new(ShardData::open(engine.clone(), ShardId(4), ShardOptions::default()).unwrap());
        source.apply(EntryId { term: 1, leader: 1, index: 9 }, write("a", "src", &[1])).unwrap();
        source.flush(source.freeze()).unwrap();
        let pairs = ShardSnapshot::of_shard(source).materialize().unwrap();
        reopened.close();
        engine.drop_shard(ShardId(3)).unwrap();
        assert!(matches!(reopened.install(pairs), Err(StorageError::Closed(_))));
        assert!(!engine.shards().contains(&ShardId(3)), "the install created the dropped shard again");
    }

    /// Retention drops whole windows of one tenant from blocks and memtables, keeps other
    /// tenants, rejects later writes older than the cutoff, and survives a restart.
    #[test]
    fn retention_drops_whole_windows_of_one_tenant() {
        let engine: Engine = Arc::new(MemEngine::new());
        let options = ShardOptions { block_window_ns: 2 * HOUR, ..ShardOptions::default() };
        let shard = ShardData::open(engine.clone(), ShardId(0), options.clone()).unwrap();
        let id = |index| EntryId { term: 1, leader: 1, index };
        shard.apply(id(1), write("a", "d", &[0, 1, 2, 3])).unwrap();
        shard.apply(id(2), write("b", "d", &[0, 1, 2, 3])).unwrap();
        let cut = shard.freeze();
        shard.flush(cut).unwrap();
        shard.apply(id(3), write("a", "d", &[1, 4, 5])).unwrap();
        // 3 h rounds down to the 2 h window boundary: hours 0 and 1 go.
        shard.apply(id(4), ShardCommand::Retain { tenant: "a".into(), before_ns: 3 * HOUR }).unwrap();
        assert_eq!(points(&shard, "a", "d"), vec![2, 3, 4, 5]);
        assert_eq!(points(&shard, "b", "d"), vec![0, 1, 2, 3]);
        let outcome = shard.apply(id(5), write("a", "d", &[1, 6])).unwrap();
        assert_eq!(outcome.points, 1);
        assert!(outcome.rejected[0].contains("older than the tenant's retention"), "{:?}", outcome.rejected);
        let cut = shard.freeze();
        shard.flush(cut).unwrap();
        drop(shard);
        let shard = ShardData::open(engine, ShardId(0), options).unwrap();
        assert_eq!(points(&shard, "a", "d"), vec![2, 3, 4, 5, 6]);
        assert_eq!(shard.read().retention_cutoff("a"), 2 * HOUR);
    }

    /// The feed keeps what apply accepted, trims its oldest flushes past its byte budget (a
    /// cursor below them is refused, never answered with less), and travels with a snapshot.
    #[test]
    fn the_feed_keeps_accepted_writes_trims_by_bytes_and_travels_with_a_snapshot() {
        use crate::feed::{FeedError, FeedFilter, FeedRetention};
        let engine: Engine = Arc::new(MemEngine::new());
        let options = ShardOptions { feed: FeedRetention { age_ms: u64::MAX, bytes_max: 400 }, ..Default::default() };
        let shard = ShardData::open(engine.clone(), ShardId(0), options.clone()).unwrap();
        let id = |index| EntryId { term: 1, leader: 1, index };
        let a = FeedFilter { tenant: "a".into(), ..Default::default() };
        let ShardCommand::Write(mut mixed) = write("a", "good", &[1]) else { unreachable!() };
        let ShardCommand::Write(bad) = write("a", "bad", &[1, 2]) else { unreachable!() };
        let mut bad = bad.series[0].clone();
        bad.columns[0].values = Values::F64(vec![1.0]);
        mixed.series.push(bad);
        shard.apply(id(1), ShardCommand::Write(mixed)).unwrap();
        shard.apply(id(2), write("b", "other", &[1])).unwrap();
        let read = shard.read_feed(0, &a, usize::MAX).unwrap();
        assert_eq!(read.through, 2);
        assert_eq!(read.entries.len(), 1);
        assert_eq!(read.entries[0].write.series.len(), 1, "the rejected series is not in the feed");
        for i in 3..=12 {
            shard.apply(id(i), write("a", "d", &[i as i64])).unwrap();
            let cut = shard.freeze();
            shard.flush(cut).unwrap();
        }
        let start = shard.stored_feed.lock().unwrap().start;
        assert!(start > 1 && shard.feed_stored_bytes() <= 400, "start {start}, {} bytes", shard.feed_stored_bytes());
        match shard.read_feed(0, &a, usize::MAX) {
            Err(FeedError::Trimmed { oldest_cursor }) => assert_eq!(oldest_cursor, start - 1),
            other => panic!("a trimmed cursor was answered: {other:?}"),
        }
        let rest = shard.read_feed(start - 1, &a, usize::MAX).unwrap();
        assert!(rest.entries.iter().map(|e| e.index).eq(start..=12));
        let pairs =
            ShardSnapshot::of_shard(Arc::new(ShardData::open(engine.clone(), ShardId(0), options.clone()).unwrap()))
                .materialize()
                .unwrap();
        // A replica that received the shard as a snapshot holds the sender's feed, trimmed alike,
        // and goes on from it; so does it after a restart.
        let other: Engine = Arc::new(MemEngine::new());
        let replica = ShardData::open(other.clone(), ShardId(0), options.clone()).unwrap();
        replica.install(pairs.clone()).unwrap();
        let trimmed_alike = |shard: &ShardData| matches!(shard.read_feed(0, &a, usize::MAX), Err(FeedError::Trimmed { oldest_cursor }) if oldest_cursor == start - 1);
        assert!(trimmed_alike(&replica));
        assert!(replica.read_feed(start - 1, &a, usize::MAX).unwrap().entries.iter().map(|e| e.index).eq(start..=12));
        replica.apply(id(13), write("a", "d", &[13])).unwrap();
        assert!(replica.read_feed(start - 1, &a, usize::MAX).unwrap().entries.iter().map(|e| e.index).eq(start..=13));
        let cut = replica.freeze();
        replica.flush(cut).unwrap();
        let reopened = ShardData::open(other, ShardId(0), options.clone()).unwrap();
        let start_now = replica.stored_feed.lock().unwrap().start;
        assert_eq!(reopened.stored_feed.lock().unwrap().start, start_now);
        assert!(reopened
            .read_feed(start_now - 1, &a, usize::MAX)
            .unwrap()
            .entries
            .iter()
            .map(|e| e.index)
            .eq(start_now..=13));
        assert_eq!(reopened.read_feed(12, &a, usize::MAX).unwrap().entries[0].index, 13);
        // A snapshot without the feed (a sender of the release before) restarts it after the
        // snapshot: a cursor before it is refused, never answered with less.
        let without_feed: Vec<SnapshotPair> =
            pairs.into_iter().filter(|p| !(p.index_space && keys::is_feed_key(&p.key))).collect();
        let older: Engine = Arc::new(MemEngine::new());
        let replica = ShardData::open(older, ShardId(0), options).unwrap();
        replica.install(without_feed).unwrap();
        assert!(matches!(replica.read_feed(11, &a, usize::MAX), Err(FeedError::Trimmed { oldest_cursor: 12 })));
        replica.apply(id(13), write("a", "d", &[13])).unwrap();
        assert_eq!(replica.read_feed(12, &a, usize::MAX).unwrap().entries[0].index, 13);
    }
}
