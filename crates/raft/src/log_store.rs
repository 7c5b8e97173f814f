//! The Raft log store of one group (a shard group or the meta group), over the group's log space.
//!
//! Entries are bincode-encoded under `[0x01] index`. Appends go through the engine's
//! group-committed log writer: readable (and ordered before a later truncation) when `append`
//! returns, as openraft requires, and reported durable only from its completion callback. The vote is written synced and `committed` buffered, because losing it only makes
//! a restart re-apply a little more. A purge is synced, then asks the engine to give the purged
//! entries' disk back.

use std::fmt::Debug;
use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, OptionalSend, RaftLogReader, RaftTypeConfig, Vote};

use super::{read_err, write_err, LogId, NodeId, RaftStorageError};
use hotlake_storage::{keys, Durability, Engine, Space, WriteBatch};

/// Log store of one group, generic over the group's openraft types. Cloning shares the same log.
pub struct LogStore<C> {
    engine: Engine,
    space: Space,
    /// Bytes of entries one replication request may carry (at least one entry goes).
    payload_bytes_max: usize,
    types: PhantomData<C>,
}

impl<C> Clone for LogStore<C> {
    fn clone(&self) -> Self {
        LogStore {
            engine: self.engine.clone(),
            space: self.space,
            payload_bytes_max: self.payload_bytes_max,
            types: PhantomData,
        }
    }
}

impl<C> LogStore<C> {
    /// The log store kept in `space` (which must exist): `Space::Log(shard)` for a shard group,
    /// `Space::ClusterLog` for the meta group.
    pub fn new(engine: Engine, space: Space) -> Self {
        LogStore { engine, space, payload_bytes_max: usize::MAX, types: PhantomData }
    }

    /// Bounds the entries of one replication request (`AppendEntries`) to about `bytes`: the
    /// leader reads entries for a follower through [`RaftLogReader::limited_get_log_entries`],
    /// which stops once the bound is reached. openraft bounds a request by entry count only,
    /// and an entry is a whole client batch, so without this one request could carry
    /// `max_payload_entries` batches of megabytes each and not arrive within the replication
    /// timeout, to be sent again whole.
    pub fn with_payload_bytes_max(mut self, bytes: usize) -> Self {
        self.payload_bytes_max = bytes.max(1);
        self
    }

    fn space(&self) -> Space {
        self.space
    }

    fn get_state<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<Option<T>, RaftStorageError> {
        match self.engine.get(self.space(), &keys::log_state(name)).map_err(read_err)? {
            Some(bytes) => Ok(Some(bincode::deserialize(&bytes).map_err(read_err)?)),
            None => Ok(None),
        }
    }

    fn put_state<T: serde::Serialize>(&self, name: &str, value: &T, d: Durability) -> Result<(), RaftStorageError> {
        let mut b = WriteBatch::new();
        b.put(self.space(), keys::log_state(name), bincode::serialize(value).map_err(write_err)?);
        self.engine.write(b, d).map_err(write_err)
    }
}

impl<C> RaftLogReader<C> for LogStore<C>
where
    C: RaftTypeConfig<NodeId = NodeId, Entry = Entry<C>>,
{
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<C>>, RaftStorageError> {
        self.read_entries(range, usize::MAX)
    }

    async fn limited_get_log_entries(&mut self, start: u64, end: u64) -> Result<Vec<Entry<C>>, RaftStorageError> {
        self.read_entries(start..end, self.payload_bytes_max)
    }
}

impl<C> LogStore<C>
where
    C: RaftTypeConfig<NodeId = NodeId, Entry = Entry<C>>,
{
    /// Entries in `range`, in order, stopping after the entry that brings their encoded size to
    /// `bytes_max` or more (so at least one entry is read when the range holds any).
    fn read_entries<RB: RangeBounds<u64>>(
        &self,
        range: RB,
        bytes_max: usize,
    ) -> Result<Vec<Entry<C>>, RaftStorageError> {
        let start = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let to = match range.end_bound() {
            Bound::Included(&i) => match i.checked_add(1) {
                Some(e) => keys::log_entry(e).to_vec(),
                None => vec![keys::LOG_ENTRY + 1],
            },
            Bound::Excluded(&i) => keys::log_entry(i).to_vec(),
            Bound::Unbounded => vec![keys::LOG_ENTRY + 1],
        };
        let mut out: Vec<Entry<C>> = Vec::new();
        let mut bytes = 0usize;
        let mut failure = None;
        self.engine
            .scan(self.space(), &keys::log_entry(start), &to, &mut |_, v| match bincode::deserialize::<Entry<C>>(v) {
                Ok(e) => {
                    // The log holds contiguous indexes; a gap read from disk is corrupt data.
                    if let Some(previous) = out.last().filter(|p| p.log_id.index + 1 != e.log_id.index) {
                        let gap = format!("log entry {} follows {}", e.log_id.index, previous.log_id.index);
                        failure = Some(read_err(gap));
                        return false;
                    }
                    out.push(e);
                    bytes += v.len();
                    bytes < bytes_max
                }
                Err(e) => {
                    failure = Some(read_err(e));
                    false
                }
            })
            .map_err(read_err)?;
        match failure {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }
}

impl<C> RaftLogStorage<C> for LogStore<C>
where
    C: RaftTypeConfig<NodeId = NodeId, Entry = Entry<C>>,
{
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<C>, RaftStorageError> {
        let last_purged: Option<LogId> = self.get_state("purged")?;
        let last =
            self.engine.last_in_range(self.space(), &[keys::LOG_ENTRY], &[keys::LOG_ENTRY + 1]).map_err(read_err)?;
        let last_log_id = match last {
            Some((_, v)) => Some(bincode::deserialize::<Entry<C>>(&v).map_err(read_err)?.log_id),
            None => last_purged,
        };
        Ok(LogState { last_purged_log_id: last_purged, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), RaftStorageError> {
        if let Some(saved) = self.get_state::<Vote<NodeId>>("vote")? {
            // Invariant: a vote only moves forward; going back could grant two leaders a term.
            assert!(*vote >= saved, "vote went back from {saved} to {vote}");
        }
        self.put_state("vote", vote, Durability::Sync)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, RaftStorageError> {
        self.get_state("vote")
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), RaftStorageError> {
        self.put_state("committed", &committed, Durability::Buffered)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, RaftStorageError> {
        Ok(self.get_state::<Option<LogId>>("committed")?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<C>) -> Result<(), RaftStorageError>
    where
        I: IntoIterator<Item = Entry<C>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = WriteBatch::new();
        let mut previous: Option<u64> = None;
        for entry in entries {
            // Invariant: one append holds contiguous entries.
            if let Some(p) = previous {
                assert_eq!(p + 1, entry.log_id.index, "append is not contiguous");
            }
            previous = Some(entry.log_id.index);
            let bytes = bincode::serialize(&entry).map_err(write_err)?;
            batch.put(self.space(), keys::log_entry(entry.log_id.index).to_vec(), bytes);
        }
        self.engine.write_log(
            batch,
            Box::new(move |result| {
                callback.log_io_completed(result.map_err(|e| std::io::Error::other(e.to_string())));
            }),
        );
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), RaftStorageError> {
        let mut b = WriteBatch::new();
        b.delete_range(self.space(), keys::log_entry(log_id.index).to_vec(), vec![keys::LOG_ENTRY + 1]);
        self.engine.write(b, Durability::Buffered).map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), RaftStorageError> {
        if let Some(purged) = self.get_state::<LogId>("purged")? {
            // Invariant: a purge only moves forward.
            assert!(log_id >= purged, "purge went back from {purged} to {log_id}");
        }
        // Not asserted: that a purge stays below the shard's flushed index. It holds for purges
        // after a local flush, but a follower taking a leader's snapshot is told to purge up to
        // the snapshot before its state machine has installed it (the simulator's snapshot
        // tests show it), so the log store cannot tell a bad purge from that one.
        let (from, to) = (keys::log_entry(0), keys::log_entry(log_id.index + 1));
        let mut b = WriteBatch::new();
        b.put(self.space(), keys::log_state("purged"), bincode::serialize(&log_id).map_err(write_err)?);
        b.delete_range(self.space(), from.to_vec(), to.to_vec());
        // Synced, because files dropped next cannot come back: a purge marker lost in a crash
        // must not leave the log claiming entries whose files are gone.
        self.engine.write(b, Durability::Sync).map_err(write_err)?;
        // Purged entries would otherwise hold their disk until a compaction reaches them; on
        // a write-heavy node that was most of the data directory.
        if let Err(e) = self.engine.reclaim_range(self.space(), &from, &to) {
            tracing::warn!(space = %self.space().name(), error = %e, "could not reclaim the disk of a purged log");
        }
        Ok(())
    }
}
