//! Storage behind a trait: the node's one key-value engine, split into named spaces.
//!
//! ```text
//!   raft::log_store ─┐                      ┌─► RocksEngine (production: one RocksDB, CFs per shard)
//!   raft::state_machine ─► dyn KvEngine ────┤
//!   engine (flush, merge reader) ─┘         └─► MemEngine (simulation and tests: in memory,
//!                                                 drops unsynced writes on a simulated crash)
//! ```
//!
//! Every shard owns four spaces (its Raft log, its blocks, its series index and the stage a
//! snapshot is received into) so a replica can be dropped or snapshotted alone; the node has one
//! meta space. A [`WriteBatch`] is atomic across spaces; a [`ConsistentReader`] reads spaces as
//! of one instant, page by page.
//!
//! Invariant: nothing here names `rocksdb`; the RocksDB engine is the crate `hotlake-storage-rocks`,
//! the only crate that depends on it.

pub mod keys;
pub mod mem;
pub mod suite;

use std::sync::Arc;

pub use hotlake_types::ShardId;
pub use mem::MemEngine;

/// A named key space inside the engine (a column family in RocksDB).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Space {
    /// Node-wide metadata (shard count, the cluster map as applied by the meta group).
    NodeMeta,
    /// The meta group's Raft log, vote and committed pointer.
    ClusterLog,
    /// A shard's Raft log, vote and committed pointer.
    Log(ShardId),
    /// A shard's flushed blocks.
    Data(ShardId),
    /// A shard's series index, field types, last values and flushed state.
    Index(ShardId),
    /// A snapshot of the shard being received, kept apart until it is installed whole.
    Stage(ShardId),
}

impl Space {
    /// The column family name, for example `s17/log`.
    pub fn name(self) -> String {
        match self {
            Space::NodeMeta => "meta".to_string(),
            Space::ClusterLog => "cluster/log".to_string(),
            Space::Log(s) => format!("{s}/log"),
            Space::Data(s) => format!("{s}/data"),
            Space::Index(s) => format!("{s}/index"),
            Space::Stage(s) => format!("{s}/stage"),
        }
    }

    /// The spaces of a shard.
    pub fn of_shard(shard: ShardId) -> [Space; 4] {
        [Space::Log(shard), Space::Data(shard), Space::Index(shard), Space::Stage(shard)]
    }
}

/// One change inside a [`WriteBatch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteOp {
    /// Set `key` to `value`.
    Put(Space, Vec<u8>, Vec<u8>),
    /// Remove `key`.
    Delete(Space, Vec<u8>),
    /// Remove every key in `[from, to)`.
    DeleteRange(Space, Vec<u8>, Vec<u8>),
}

/// Changes applied atomically: after a crash either all of them are visible or none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteBatch {
    ops: Vec<WriteOp>,
    bytes: usize,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a put.
    pub fn put(&mut self, space: Space, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        let (key, value) = (key.into(), value.into());
        self.bytes += key.len() + value.len();
        self.ops.push(WriteOp::Put(space, key, value));
    }

    /// Adds a delete.
    pub fn delete(&mut self, space: Space, key: impl Into<Vec<u8>>) {
        let key = key.into();
        self.bytes += key.len();
        self.ops.push(WriteOp::Delete(space, key));
    }

    /// Adds a range delete of `[from, to)`.
    pub fn delete_range(&mut self, space: Space, from: impl Into<Vec<u8>>, to: impl Into<Vec<u8>>) {
        let (from, to) = (from.into(), to.into());
        self.bytes += from.len() + to.len();
        self.ops.push(WriteOp::DeleteRange(space, from, to));
    }

    /// The changes, in order.
    pub fn ops(&self) -> &[WriteOp] {
        &self.ops
    }

    /// Key and value bytes in the batch.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// True when the batch holds no change.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Appends another batch's changes after this one's.
    pub fn extend(&mut self, other: WriteBatch) {
        self.bytes += other.bytes;
        self.ops.extend(other.ops);
    }
}

/// Whether a write must be on stable storage before it returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// fsync before returning; also makes every earlier buffered write durable.
    Sync,
    /// Ordered after earlier writes, durable with the next synced write. A crash may lose a
    /// suffix of buffered writes, never a write in the middle.
    Buffered,
}

/// Errors from the storage engine.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The engine failed to read or write.
    #[error("storage I/O failed: {0}")]
    Io(String),
    /// Stored bytes did not decode.
    #[error("stored data corrupt in {space}: {reason}")]
    Corrupt {
        /// The space (column family) holding the bad record.
        space: String,
        /// What did not decode.
        reason: String,
    },
    /// A space that should exist does not.
    #[error("no such space {0}")]
    NoSpace(String),
    /// The replica of a shard was closed to be deleted; it writes nothing more.
    #[error("the replica of shard {0} is closed")]
    Closed(String),
}

/// A key and its value.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// One key-value pair of a space, as a [`ConsistentReader`] hands it out.
pub type SpaceKeyValue = (Space, Vec<u8>, Vec<u8>);

/// Reads whole spaces as they were at one instant, a page at a time, however the spaces change
/// meanwhile: how a snapshot of a shard larger than memory is sent.
pub trait ConsistentReader: Send {
    /// The next pairs in order (spaces in the order given, keys ascending), at least one and
    /// about `page_bytes` of keys and values; `None` once everything was read.
    fn next_page(&mut self) -> Result<Option<Vec<SpaceKeyValue>>, StorageError>;
}

/// Keys of a space all sort below this (the widest key any space holds is shorter).
pub const KEY_END: &[u8] = &[0xff; 32];

/// Called once when a group-committed log write is durable (or failed).
pub type LogWriteDone = Box<dyn FnOnce(Result<(), StorageError>) + Send + 'static>;

/// The node's key-value engine. Implementations are internally synchronized.
///
/// Keys sort bytewise; all multi-byte integers in keys are big-endian so that byte order is
/// numeric order (see [`keys`]).
pub trait KvEngine: Send + Sync + 'static {
    /// Creates the spaces of `shard` if they do not exist.
    fn create_shard(&self, shard: ShardId) -> Result<(), StorageError>;
    /// Drops the spaces of `shard` and everything in them.
    fn drop_shard(&self, shard: ShardId) -> Result<(), StorageError>;
    /// Shards whose spaces exist, ascending.
    fn shards(&self) -> Vec<ShardId>;
    /// Applies `batch` atomically with the given durability.
    fn write(&self, batch: WriteBatch, durability: Durability) -> Result<(), StorageError>;
    /// Applies `batch` atomically and durably, grouping it with other concurrent log writes into
    /// one fsync. The batch is readable when this returns and takes effect before any write
    /// made after it (openraft's contract for appends); `done` runs once it is durable, which
    /// may be before this returns.
    fn write_log(&self, batch: WriteBatch, done: LogWriteDone);
    /// Reads one key.
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;
    /// Visits keys in `[from, to)` in ascending order until `visit` returns false.
    fn scan(
        &self,
        space: Space,
        from: &[u8],
        to: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StorageError>;
    /// A reader of `spaces` as they are now; later writes are not seen. Taken under the same
    /// lock as the writes it must be consistent with, it is cheap: nothing is read until
    /// [`ConsistentReader::next_page`].
    fn consistent_reader(&self, spaces: &[Space], page_bytes: usize)
        -> Result<Box<dyn ConsistentReader>, StorageError>;
    /// The greatest key in `[from, to)` and its value.
    fn last_in_range(&self, space: Space, from: &[u8], to: &[u8]) -> Result<Option<KeyValue>, StorageError>;
    /// Approximate bytes on disk (or in memory) used by the engine.
    fn size_bytes(&self) -> u64;
    /// Makes every buffered write durable.
    fn sync(&self) -> Result<(), StorageError>;
    /// Gives back the disk of keys in `[from, to)` of `space`, every one of them already
    /// deleted durably: whole files holding only such keys are dropped at once, the rest is
    /// compacted in the background. How a purged Raft log returns its disk: with many column
    /// families, RocksDB's own triggers may never compact a log's files.
    fn reclaim_range(&self, space: Space, from: &[u8], to: &[u8]) -> Result<(), StorageError>;
    /// Writes every in-memory table to files, so nothing is left to replay from the
    /// write-ahead log and the log's files can be dropped (graceful shutdown).
    fn flush_memtables(&self) -> Result<(), StorageError>;
    /// Writes in-memory state to files and compacts them, so that `size_bytes` reflects data
    /// actually kept (benchmarks and operators measuring footprint).
    fn compact(&self) -> Result<(), StorageError>;
}

/// A shared engine handle.
pub type Engine = Arc<dyn KvEngine>;

impl From<StorageError> for hotlake_types::Error {
    fn from(e: StorageError) -> Self {
        hotlake_types::Error::Storage(e.to_string())
    }
}
