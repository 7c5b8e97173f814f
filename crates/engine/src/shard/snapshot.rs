//! A shard's Raft snapshot: its flushed state, streamed out of the engine and into it in pages,
//! so a shard larger than memory moves between nodes.
//!
//! ```text
//!  sender:   flush lock ─► flushed state + engine consistent reader ─► pages ─► wire
//!  receiver: wire ─► pages ─► stage space (synced) ─► install: mark ─► replace data and index
//!                                                     from the stage ─► drop stage and mark
//! ```
//!
//! Invariants:
//! - a snapshot read is one flushed state: the reader is opened under the flush lock, which
//!   every write to the data and index spaces outside a log append holds, and the flushed state
//!   sent in its header is read under the same lock;
//! - a shard snapshot carries the stored feed of its flushed state (entries, flush marks and
//!   its start, read under the same lock), so a replica that received its shard as a snapshot
//!   answers every cursor the sender could; the sender names the feed's start ahead of the
//!   first page even when it has no record of it, so a stage without one came from a sender of
//!   the release before, which sent no feed, and its feed restarts after the snapshot;
//! - the shard's content is replaced only by a complete, synced stage whose flushed state the
//!   caller checked; from the install mark on, the install finishes even across a crash
//!   (`ShardData::open` completes it), so a replica is never left half old and half new.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{FlushedState, ShardData, StoredFeed};
use hotlake_storage::{keys, ConsistentReader, Durability, Engine, ShardId, Space, StorageError, WriteBatch, KEY_END};

/// Bytes of pairs per write while a staged snapshot is copied into place.
const INSTALL_BATCH_BYTES: usize = 4 << 20;

/// Snapshot data of a shard: its flushed blocks, index and flushed state.
///
/// Built lazily: the node's own current snapshot refers to the engine and is read only while it
/// is sent; a received one lies in the shard's stage space until it is installed.
pub struct ShardSnapshot {
    source: SnapshotSource,
}

enum SnapshotSource {
    /// The shard's flushed content, read from the engine when sent.
    Shard(Arc<ShardData>),
    /// Pairs held in memory (tests and tools).
    Pairs(Vec<SnapshotPair>),
    /// Received into the shard's stage space ([`ShardData::stage`]).
    Staged,
}

/// One key-value pair of a snapshot.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SnapshotPair {
    /// True for the index space, false for the data space.
    pub index_space: bool,
    /// Key.
    pub key: Vec<u8>,
    /// Value.
    pub value: Vec<u8>,
}

impl ShardSnapshot {
    /// An empty snapshot to receive into.
    pub fn empty() -> Self {
        ShardSnapshot { source: SnapshotSource::Pairs(Vec::new()) }
    }

    /// A snapshot that reads the shard's flushed content when it is sent.
    pub fn of_shard(shard: Arc<ShardData>) -> Self {
        ShardSnapshot { source: SnapshotSource::Shard(shard) }
    }

    /// The snapshot received into the installing shard's stage space.
    pub fn staged() -> Self {
        ShardSnapshot { source: SnapshotSource::Staged }
    }

    /// Adds received pairs.
    pub fn push(&mut self, pair: SnapshotPair) {
        if let SnapshotSource::Pairs(p) = &mut self.source {
            p.push(pair);
        }
    }

    /// Opens the snapshot for reading in pages of about `page_bytes`. The reader's flushed state
    /// may be newer than the one this snapshot was made at (a flush since); the pages always
    /// hold exactly that state.
    pub fn open(self, page_bytes: usize) -> Result<SnapshotReader, StorageError> {
        match self.source {
            SnapshotSource::Shard(shard) => shard.snapshot_reader(page_bytes),
            SnapshotSource::Pairs(pairs) => Ok(SnapshotReader {
                flushed: flushed_state_of(&pairs)?,
                feed_start: None,
                pages: Pages::Held(pairs.into_iter(), page_bytes),
            }),
            SnapshotSource::Staged => Err(StorageError::Io("a received snapshot is installed, never sent on".into())),
        }
    }

    /// Reads every pair of the snapshot into memory (tests and tools: a real shard's snapshot
    /// is streamed with [`ShardSnapshot::open`]).
    pub fn materialize(self) -> Result<Vec<SnapshotPair>, StorageError> {
        if let SnapshotSource::Pairs(pairs) = self.source {
            return Ok(pairs);
        }
        let mut reader = self.open(1 << 20)?;
        let mut out = Vec::new();
        while let Some(page) = reader.next_page()? {
            out.extend(page);
        }
        Ok(out)
    }

    /// Puts the snapshot into `shard`'s stage space, synced, unless it is there already: what
    /// [`ShardData::install_staged`] then installs.
    pub fn stage_into(self, shard: &ShardData) -> Result<(), StorageError> {
        if matches!(self.source, SnapshotSource::Staged) {
            return Ok(());
        }
        let mut reader = self.open(INSTALL_BATCH_BYTES)?;
        shard.clear_stage()?;
        while let Some(page) = reader.next_page()? {
            shard.stage(&page)?;
        }
        shard.engine.sync()
    }
}

impl std::fmt::Debug for ShardSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.source {
            SnapshotSource::Shard(shard) => write!(f, "ShardSnapshot(shard {})", shard.id),
            SnapshotSource::Pairs(p) => write!(f, "ShardSnapshot({} pairs)", p.len()),
            SnapshotSource::Staged => write!(f, "ShardSnapshot(staged)"),
        }
    }
}

/// A snapshot being read: its flushed state, then its pairs page by page.
pub struct SnapshotReader {
    flushed: FlushedState,
    /// The feed's start record, sent at the head of the first page (then `None`).
    feed_start: Option<SnapshotPair>,
    pages: Pages,
}

enum Pages {
    Engine(Box<dyn ConsistentReader>, ShardId),
    Held(std::vec::IntoIter<SnapshotPair>, usize),
}

impl SnapshotReader {
    /// The flushed state the pairs hold.
    pub fn flushed(&self) -> &FlushedState {
        &self.flushed
    }

    /// The next pairs (at least one), or `None` once all were read.
    pub fn next_page(&mut self) -> Result<Option<Vec<SnapshotPair>>, StorageError> {
        match &mut self.pages {
            Pages::Held(pairs, page_bytes) => {
                let mut page = Vec::new();
                let mut bytes = 0;
                while bytes < *page_bytes {
                    let Some(p) = pairs.next() else { break };
                    bytes += p.key.len() + p.value.len();
                    page.push(p);
                }
                Ok((!page.is_empty()).then_some(page))
            }
            Pages::Engine(reader, shard) => loop {
                let Some(page) = reader.next_page()? else { return Ok(self.feed_start.take().map(|p| vec![p])) };
                let mut pairs: Vec<SnapshotPair> = self.feed_start.take().into_iter().collect();
                // The engine's own start record is left out: the one read with the flushed state
                // was put first.
                pairs.extend(
                    page.into_iter()
                        .filter(|(space, key, _)| !(*space == Space::Index(*shard) && key == keys::FEED_START))
                        .map(|(space, key, value)| SnapshotPair {
                            index_space: space == Space::Index(*shard),
                            key,
                            value,
                        }),
                );
                // A page holding only the start record filters to nothing: read on.
                if !pairs.is_empty() {
                    return Ok(Some(pairs));
                }
            },
        }
    }
}

/// The flushed state recorded among a snapshot's pairs.
pub fn flushed_state_of(pairs: &[SnapshotPair]) -> Result<FlushedState, StorageError> {
    let pair = pairs
        .iter()
        .find(|p| p.index_space && p.key == keys::FLUSHED_STATE)
        .ok_or_else(|| StorageError::Corrupt { space: "snapshot".into(), reason: "no flushed state".into() })?;
    decode_flushed(&pair.value, "snapshot")
}

fn decode_flushed(bytes: &[u8], space: &str) -> Result<FlushedState, StorageError> {
    bincode::deserialize(bytes)
        .map_err(|e| StorageError::Corrupt { space: space.into(), reason: format!("flushed state: {e}") })
}

impl ShardData {
    /// Opens a reader of the shard's flushed content as it is now: the flushed state and the
    /// blocks, index and stored feed of that state, whatever flushes, retention or installs
    /// happen while it is read.
    pub fn snapshot_reader(&self, page_bytes: usize) -> Result<SnapshotReader, StorageError> {
        let _quiet = self.flush_lock.lock().unwrap_or_else(|p| p.into_inner());
        let flushed = match self.engine.get(Space::Index(self.id), keys::FLUSHED_STATE)? {
            Some(bytes) => decode_flushed(&bytes, &Space::Index(self.id).name())?,
            None => return Err(StorageError::Io(format!("shard {} has flushed nothing to send", self.id))),
        };
        // No record means the feed was never trimmed: it holds everything from index 0.
        let feed_start =
            self.engine.get(Space::Index(self.id), keys::FEED_START)?.unwrap_or_else(|| 0u64.to_be_bytes().to_vec());
        let reader = self.engine.consistent_reader(&[Space::Data(self.id), Space::Index(self.id)], page_bytes)?;
        Ok(SnapshotReader {
            flushed,
            feed_start: Some(SnapshotPair { index_space: true, key: keys::FEED_START.to_vec(), value: feed_start }),
            pages: Pages::Engine(reader, self.id),
        })
    }

    /// Empties the stage space, before a snapshot is received into it.
    pub fn clear_stage(&self) -> Result<(), StorageError> {
        let mut batch = WriteBatch::new();
        batch.delete_range(Space::Stage(self.id), Vec::new(), KEY_END.to_vec());
        let _quiet = self.flush_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.write_open(batch, Durability::Buffered)
    }

    /// Adds received pairs to the stage space (buffered: the receiver syncs once at the end).
    pub fn stage(&self, pairs: &[SnapshotPair]) -> Result<(), StorageError> {
        let mut batch = WriteBatch::new();
        for p in pairs {
            batch.put(Space::Stage(self.id), keys::stage_key(p.index_space, &p.key), p.value.clone());
        }
        let _quiet = self.flush_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.write_open(batch, Durability::Buffered)
    }

    /// The flushed state of the staged snapshot; an error when the stage holds none.
    pub fn staged_flushed_state(&self) -> Result<FlushedState, StorageError> {
        let space = Space::Stage(self.id);
        match self.engine.get(space, &keys::stage_key(true, keys::FLUSHED_STATE))? {
            Some(bytes) => decode_flushed(&bytes, &space.name()),
            None => Err(StorageError::Corrupt {
                space: space.name(),
                reason: "staged snapshot has no flushed state".into(),
            }),
        }
    }

    /// Replaces the whole shard content with the staged snapshot, which must be complete and
    /// synced. The feed is the snapshot's (or, from a sender that sent none, restarts after the
    /// snapshot's last entry).
    pub fn install_staged(&self) -> Result<FlushedState, StorageError> {
        let staged = self.staged_flushed_state()?;
        // All under the lock, the reopen too: a close waits for the install, and opening (which
        // creates the shard's spaces) never follows a close and the drop of the spaces.
        let fresh = {
            let _quiet = self.flush_lock.lock().unwrap_or_else(|p| p.into_inner());
            let mut mark = WriteBatch::new();
            mark.put(Space::Stage(self.id), keys::STAGE_INSTALLING.to_vec(), Vec::new());
            self.write_open(mark, Durability::Sync)?;
            finish_install(&self.engine, self.id)?;
            self.generation.fetch_add(1, Ordering::AcqRel);
            let fresh = ShardData::open(self.engine.clone(), self.id, self.options.clone())?;
            *self.stored_feed.lock().unwrap_or_else(|p| p.into_inner()) =
                std::mem::take(&mut *fresh.stored_feed.lock().unwrap_or_else(|p| p.into_inner()));
            fresh
        };
        let mut new_inner = fresh.inner.into_inner().unwrap_or_else(|p| p.into_inner());
        // Flush sequences only grow on a replica, so block keys of a flush before the install can
        // never be reused by one after it.
        new_inner.next_flush_seq = new_inner.next_flush_seq.max(self.read().next_flush_seq);
        let flushed = new_inner.flushed.clone();
        *self.write() = new_inner;
        if flushed.applied != staged.applied {
            return Err(StorageError::Corrupt {
                space: Space::Index(self.id).name(),
                reason: format!(
                    "installed a snapshot at {:?} but the shard reads {:?}",
                    staged.applied, flushed.applied
                ),
            });
        }
        Ok(flushed)
    }

    /// Replaces the whole shard content with a snapshot's pairs held in memory (tests, tools).
    pub fn install(&self, pairs: Vec<SnapshotPair>) -> Result<FlushedState, StorageError> {
        flushed_state_of(&pairs)?;
        ShardSnapshot { source: SnapshotSource::Pairs(pairs) }.stage_into(self)?;
        self.install_staged()
    }
}

/// Replaces the data and index spaces of `shard` with its stage, which carries the install
/// mark; then drops the stage and the mark in one synced write. Idempotent until that write, so
/// a shard opened with the mark still set finishes here. Returns the applied index installed.
/// A stage with no feed start came from a sender that sends no feed: the feed restarts after
/// the snapshot, so no cursor before it is answered with less than it asks for.
pub(super) fn finish_install(engine: &Engine, shard: ShardId) -> Result<u64, StorageError> {
    let stage = Space::Stage(shard);
    let Some(state) = engine.get(stage, &keys::stage_key(true, keys::FLUSHED_STATE))? else {
        return Err(StorageError::Corrupt {
            space: stage.name(),
            reason: "staged snapshot has no flushed state".into(),
        });
    };
    let applied = decode_flushed(&state, &stage.name())?.applied.map_or(0, |a| a.index);
    let carries_feed = engine.get(stage, &keys::stage_key(true, keys::FEED_START))?.is_some();
    let mut clear = WriteBatch::new();
    for space in [Space::Data(shard), Space::Index(shard)] {
        clear.delete_range(space, Vec::new(), KEY_END.to_vec());
    }
    engine.write(clear, Durability::Buffered)?;
    let mut reader = engine.consistent_reader(&[stage], INSTALL_BATCH_BYTES)?;
    while let Some(page) = reader.next_page()? {
        let mut batch = WriteBatch::new();
        for (_, key, value) in page {
            let Some((index_space, key)) = keys::parse_stage_key(&key) else { continue };
            let space = if index_space { Space::Index(shard) } else { Space::Data(shard) };
            batch.put(space, key.to_vec(), value);
        }
        engine.write(batch, Durability::Buffered)?;
    }
    // Ordered after every copy above: once this is durable, so are they.
    let mut done = WriteBatch::new();
    if !carries_feed {
        done.put(
            Space::Index(shard),
            keys::FEED_START.to_vec(),
            StoredFeed::restart_after(applied).start.to_be_bytes().to_vec(),
        );
    }
    done.delete_range(stage, Vec::new(), KEY_END.to_vec());
    engine.write(done, Durability::Sync)?;
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::applied::EntryId;
    use crate::batch::{ColumnWrite, SeriesWrite, ShardCommand, ShardWrite, Values};
    use crate::digest::shard_digest;
    use crate::shard::ShardOptions;
    use hotlake_storage::MemEngine;

    fn write(devices: std::ops::Range<u32>, t: i64) -> ShardCommand {
        let series = devices
            .map(|d| SeriesWrite {
                key: format!("m,device_id=d{d}"),
                device: format!("d{d}"),
                timestamps: vec![t * 1_000_000_000],
                columns: vec![ColumnWrite {
                    field: "v".into(),
                    absent_rows: vec![],
                    values: Values::F64(vec![t as f64]),
                }],
            })
            .collect();
        ShardCommand::Write(ShardWrite { tenant: "t".into(), series })
    }

    /// A shard with `entries` applied and flushed every fifth.
    fn shard_with(engine: Engine, devices: std::ops::Range<u32>, entries: u64) -> ShardData {
        let shard = ShardData::open(engine, ShardId(1), ShardOptions::default()).unwrap();
        for i in 1..=entries {
            shard.apply(EntryId { term: 1, leader: 1, index: i }, write(devices.clone(), i as i64)).unwrap();
            if i % 5 == 0 {
                shard.flush(shard.freeze()).unwrap();
            }
        }
        shard
    }

    /// A crash anywhere after the install mark is durable leaves a replica that, when opened,
    /// finishes the install: it holds the snapshot whole, never part old and part new.
    #[test]
    fn an_install_interrupted_after_its_mark_finishes_when_the_shard_opens() {
        let source = Arc::new(shard_with(Arc::new(MemEngine::new()), 0..30, 20));
        let sent = shard_digest(&source).unwrap();
        let mem = MemEngine::new();
        let engine: Engine = Arc::new(mem.clone());
        let replica = shard_with(engine.clone(), 100..110, 7);
        ShardSnapshot::of_shard(source.clone()).stage_into(&replica).unwrap();
        let mut mark = WriteBatch::new();
        mark.put(Space::Stage(ShardId(1)), keys::STAGE_INSTALLING.to_vec(), Vec::new());
        engine.write(mark, Durability::Sync).unwrap();
        // Half way: the old data space is gone for good, nothing copied yet.
        let mut clear = WriteBatch::new();
        clear.delete_range(Space::Data(ShardId(1)), Vec::new(), KEY_END.to_vec());
        engine.write(clear, Durability::Sync).unwrap();
        mem.crash();
        let reopened = ShardData::open(engine.clone(), ShardId(1), ShardOptions::default()).unwrap();
        assert_eq!(shard_digest(&reopened).unwrap(), sent);
        assert_eq!(reopened.read().flushed.applied, source.read().flushed.applied);
        assert!(engine.get(Space::Stage(ShardId(1)), keys::STAGE_INSTALLING).unwrap().is_none(), "the mark went");
        let mut staged = 0;
        engine
            .scan(Space::Stage(ShardId(1)), &[], KEY_END, &mut |_, _| {
                staged += 1;
                true
            })
            .unwrap();
        assert_eq!(staged, 0, "the stage was emptied");
    }

    /// A stage without its mark is a receive that never finished: opening the shard keeps its
    /// own content, and a stage without a flushed state is refused before anything changes.
    #[test]
    fn an_unfinished_or_incomplete_stage_changes_nothing() {
        let source = Arc::new(shard_with(Arc::new(MemEngine::new()), 0..30, 20));
        let engine: Engine = Arc::new(MemEngine::new());
        // Everything flushed: a reopened shard holds what the original did.
        let replica = shard_with(engine.clone(), 100..110, 10);
        let own = shard_digest(&replica).unwrap();
        let pairs = ShardSnapshot::of_shard(source).materialize().unwrap();
        let without_state: Vec<SnapshotPair> =
            pairs.iter().filter(|p| !(p.index_space && p.key == keys::FLUSHED_STATE)).cloned().collect();
        replica.clear_stage().unwrap();
        replica.stage(&without_state).unwrap();
        let reopened = ShardData::open(engine.clone(), ShardId(1), ShardOptions::default()).unwrap();
        assert_eq!(shard_digest(&reopened).unwrap(), own);
        let refused = replica.install_staged().expect_err("a stage without a flushed state was installed");
        assert!(refused.to_string().contains("no flushed state"), "{refused}");
        assert_eq!(shard_digest(&replica).unwrap(), own);
        assert!(engine.get(Space::Stage(ShardId(1)), keys::STAGE_INSTALLING).unwrap().is_none());
    }

    /// A snapshot read in pages of a few hundred bytes holds every pair of the flushed state
    /// exactly once, the feed's start first; the flushed state it reports is that of its pairs.
    #[test]
    fn a_paged_read_holds_the_flushed_state_once() {
        let source = shard_with(Arc::new(MemEngine::new()), 0..50, 20);
        let mut reader = source.snapshot_reader(300).unwrap();
        let flushed = reader.flushed().clone();
        let mut pairs = Vec::new();
        let mut pages = 0;
        while let Some(page) = reader.next_page().unwrap() {
            pages += 1;
            pairs.extend(page);
        }
        assert!(pages > 10, "{pages} pages");
        assert!(pairs[0].index_space && pairs[0].key == keys::FEED_START, "the feed's start leads");
        assert!(pairs.iter().any(|p| p.index_space && keys::feed_entry_index(&p.key).is_some()), "the feed travels");
        let mut keys: Vec<_> = pairs.iter().map(|p| (p.index_space, p.key.clone())).collect();
        keys.dedup();
        assert_eq!(keys.len(), pairs.len(), "a pair twice");
        assert_eq!(flushed_state_of(&pairs).unwrap().applied, flushed.applied);
        assert_eq!(flushed.applied.map(|a| a.index), Some(20));
    }
}
