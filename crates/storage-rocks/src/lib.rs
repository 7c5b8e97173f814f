//! `RocksEngine`: the production engine, one RocksDB per node.
//!
//! - Column families per shard (`s17/log`, `s17/data`, `s17/index`, `s17/stage`) plus `meta`.
//! - One shared LRU block cache and one write-buffer manager charged to that cache, so memory
//!   stays bounded however many shards the node hosts.
//! - Raft log writes go through [`LogWriter`]: one thread that gathers every log write waiting
//!   at the moment into a single RocksDB write with one fsync (group commit), then reports
//!   completion to each writer.
//!
//! Invariant: this is the only crate that depends on `rocksdb` (the tidy check enforces it).
#![warn(missing_docs, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, DBCompressionType, Options, ReadOptions, WriteBufferManager,
    WriteOptions, DB,
};

use hotlake_storage::{
    ConsistentReader, Durability, KeyValue, KvEngine, LogWriteDone, ShardId, Space, SpaceKeyValue, StorageError,
    WriteBatch, WriteOp,
};

/// Memory and tuning knobs of the RocksDB engine.
#[derive(Clone, Debug)]
pub struct RocksOptions {
    /// Shared block cache for every column family.
    pub block_cache_bytes: usize,
    /// Total memory all RocksDB memtables may use, charged to the block cache.
    pub write_buffer_bytes: usize,
    /// At most this many log writes are merged into one fsync.
    pub group_commit_batches_max: usize,
}

impl Default for RocksOptions {
    fn default() -> Self {
        RocksOptions { block_cache_bytes: 256 << 20, write_buffer_bytes: 128 << 20, group_commit_batches_max: 1024 }
    }
}

fn io(e: rocksdb::Error) -> StorageError {
    StorageError::Io(e.into_string())
}

/// The production engine.
pub struct RocksEngine {
    db: Arc<DB>,
    path: PathBuf,
    cf_options: Options,
    shards: Mutex<std::collections::BTreeSet<ShardId>>,
    log_writer: LogWriter,
    /// Spaces with a background compaction running (`reclaim_range`).
    compacting: Arc<Mutex<std::collections::HashSet<String>>>,
}

fn parse_shard_cf(name: &str) -> Option<ShardId> {
    let rest = name.strip_prefix('s')?;
    let (id, _) = rest.split_once('/')?;
    id.parse().ok().map(ShardId)
}

impl RocksEngine {
    /// Opens (or creates) the database at `path`.
    pub fn open(path: &Path, opts: &RocksOptions) -> Result<Self, StorageError> {
        std::fs::create_dir_all(path).map_err(|e| StorageError::Io(format!("create {}: {e}", path.display())))?;
        let cache = Cache::new_lru_cache(opts.block_cache_bytes);
        // No stall: past the budget RocksDB flushes memtables, but a writer is never parked behind
        // that. A stall here parks a Raft log append or a flush on a runtime thread, and with many
        // column families RocksDB may never pick the memtable whose flush would end the stall.
        let wbm =
            WriteBufferManager::new_write_buffer_manager_with_cache(opts.write_buffer_bytes, false, cache.clone());
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&cache);
        table.set_bloom_filter(10.0, false);
        table.set_cache_index_and_filter_blocks(true);

        let mut cf_options = Options::default();
        cf_options.set_block_based_table_factory(&table);
        // Blocks are already compressed by our codecs; LZ4 is cheap and still helps the log
        // and index.
        cf_options.set_compression_type(DBCompressionType::Lz4);
        cf_options.set_write_buffer_size(16 << 20);

        let mut db_options = cf_options.clone();
        db_options.create_if_missing(true);
        db_options.create_missing_column_families(true);
        db_options.set_write_buffer_manager(&wbm);
        db_options.set_max_background_jobs(2);
        db_options.set_keep_log_file_num(4);

        let existing = match DB::list_cf(&db_options, path) {
            Ok(names) => names,
            Err(_) => vec!["default".to_string()],
        };
        let mut names: Vec<String> = existing;
        for required in ["default", "meta", "cluster/log"] {
            if !names.iter().any(|n| n == required) {
                names.push(required.to_string());
            }
        }
        let descriptors: Vec<_> = names.iter().map(|n| ColumnFamilyDescriptor::new(n, cf_options.clone())).collect();
        let db = DB::open_cf_descriptors(&db_options, path, descriptors)
            .map_err(|e| StorageError::Io(format!("open rocksdb at {}: {}", path.display(), e)))?;
        let shards = names.iter().filter_map(|n| parse_shard_cf(n)).collect();
        let db = Arc::new(db);
        let log_writer = LogWriter::start(db.clone(), opts.group_commit_batches_max);
        Ok(RocksEngine {
            db,
            path: path.to_path_buf(),
            cf_options,
            shards: Mutex::new(shards),
            log_writer,
            compacting: Arc::default(),
        })
    }

    /// Column family names of every space: the node's and each shard's.
    fn space_names(&self) -> Vec<String> {
        let mut names = vec![Space::NodeMeta.name(), Space::ClusterLog.name()];
        for shard in self.shards() {
            names.extend(Space::of_shard(shard).iter().map(|s| s.name()));
        }
        names
    }

    /// The directory holding the database.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn to_rocks_batch(db: &DB, batch: &WriteBatch) -> Result<rocksdb::WriteBatch, StorageError> {
        let mut wb = rocksdb::WriteBatch::default();
        for op in batch.ops() {
            match op {
                WriteOp::Put(s, k, v) => wb.put_cf(&cf(db, *s)?, k, v),
                WriteOp::Delete(s, k) => wb.delete_cf(&cf(db, *s)?, k),
                WriteOp::DeleteRange(s, from, to) => wb.delete_range_cf(&cf(db, *s)?, from, to),
            }
        }
        Ok(wb)
    }
}

fn cf(db: &DB, space: Space) -> Result<Arc<rocksdb::BoundColumnFamily<'_>>, StorageError> {
    db.cf_handle(&space.name()).ok_or_else(|| StorageError::NoSpace(space.name()))
}

impl KvEngine for RocksEngine {
    fn create_shard(&self, shard: ShardId) -> Result<(), StorageError> {
        let mut shards = self.shards.lock().unwrap_or_else(|p| p.into_inner());
        for s in Space::of_shard(shard) {
            if self.db.cf_handle(&s.name()).is_none() {
                self.db.create_cf(s.name(), &self.cf_options).map_err(io)?;
            }
        }
        shards.insert(shard);
        Ok(())
    }

    fn drop_shard(&self, shard: ShardId) -> Result<(), StorageError> {
        let mut shards = self.shards.lock().unwrap_or_else(|p| p.into_inner());
        for s in Space::of_shard(shard) {
            if self.db.cf_handle(&s.name()).is_some() {
                self.db.drop_cf(&s.name()).map_err(io)?;
            }
        }
        shards.remove(&shard);
        Ok(())
    }

    fn shards(&self) -> Vec<ShardId> {
        self.shards.lock().unwrap_or_else(|p| p.into_inner()).iter().copied().collect()
    }

    fn write(&self, batch: WriteBatch, durability: Durability) -> Result<(), StorageError> {
        let wb = Self::to_rocks_batch(&self.db, &batch)?;
        let mut wo = WriteOptions::default();
        wo.set_sync(durability == Durability::Sync);
        self.db.write_opt(wb, &wo).map_err(io)
    }

    fn write_log(&self, batch: WriteBatch, done: LogWriteDone) {
        self.log_writer.submit(batch, done);
    }

    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let cf = cf(&self.db, space)?;
        self.db.get_cf(&cf, key).map_err(io)
    }

    fn scan(
        &self,
        space: Space,
        from: &[u8],
        to: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StorageError> {
        if from >= to {
            return Ok(());
        }
        let cf = cf(&self.db, space)?;
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(to.to_vec());
        let mut it = self.db.raw_iterator_cf_opt(&cf, ro);
        it.seek(from);
        while it.valid() {
            let (Some(k), Some(v)) = (it.key(), it.value()) else { break };
            if !visit(k, v) {
                return Ok(());
            }
            it.next();
        }
        it.status().map_err(io)
    }

    fn consistent_reader(
        &self,
        spaces: &[Space],
        page_bytes: usize,
    ) -> Result<Box<dyn ConsistentReader>, StorageError> {
        for &space in spaces {
            cf(&self.db, space)?;
        }
        SnapshotReader::start(self.db.clone(), spaces.to_vec(), page_bytes.max(1))
    }

    fn last_in_range(&self, space: Space, from: &[u8], to: &[u8]) -> Result<Option<KeyValue>, StorageError> {
        if from >= to {
            return Ok(None);
        }
        let cf = cf(&self.db, space)?;
        let mut ro = ReadOptions::default();
        ro.set_iterate_lower_bound(from.to_vec());
        ro.set_iterate_upper_bound(to.to_vec());
        let mut it = self.db.raw_iterator_cf_opt(&cf, ro);
        it.seek_to_last();
        if it.valid() {
            if let (Some(k), Some(v)) = (it.key(), it.value()) {
                return Ok(Some((k.to_vec(), v.to_vec())));
            }
        }
        it.status().map_err(io)?;
        Ok(None)
    }

    fn size_bytes(&self) -> u64 {
        let mut total = 0u64;
        if let Ok(files) = self.db.live_files() {
            total += files.iter().map(|f| f.size as u64).sum::<u64>();
        }
        if let Ok(Some(v)) = self.db.property_int_value("rocksdb.cur-size-all-mem-tables") {
            total += v;
        }
        total
    }

    fn sync(&self) -> Result<(), StorageError> {
        self.db.flush_wal(true).map_err(io)
    }

    fn compact(&self) -> Result<(), StorageError> {
        for name in self.space_names() {
            let Some(cf) = self.db.cf_handle(&name) else { continue };
            self.db.flush_cf(&cf).map_err(io)?;
            self.db.compact_range_cf(&cf, None::<&[u8]>, None::<&[u8]>);
        }
        Ok(())
    }

    fn reclaim_range(&self, space: Space, from: &[u8], to: &[u8]) -> Result<(), StorageError> {
        let name = space.name();
        let Some(cf) = self.db.cf_handle(&name) else { return Ok(()) };
        self.db.delete_file_in_range_cf(&cf, from, to).map_err(io)?;
        // Files that also hold live keys (the log's tail, its state keys) are compacted; one
        // compaction per space at a time, the next purge covers what a skipped one would have.
        if !self.compacting.lock().unwrap_or_else(|p| p.into_inner()).insert(name.clone()) {
            return Ok(());
        }
        let (db, compacting, from, to) = (self.db.clone(), self.compacting.clone(), from.to_vec(), to.to_vec());
        std::thread::spawn(move || {
            if let Some(cf) = db.cf_handle(&name) {
                db.compact_range_cf(&cf, Some(&from), Some(&to));
            }
            compacting.lock().unwrap_or_else(|p| p.into_inner()).remove(&name);
        });
        Ok(())
    }

    fn flush_memtables(&self) -> Result<(), StorageError> {
        for name in self.space_names() {
            let Some(cf) = self.db.cf_handle(&name) else { continue };
            self.db.flush_cf(&cf).map_err(io)?;
        }
        Ok(())
    }
}

impl Drop for RocksEngine {
    fn drop(&mut self) {
        self.log_writer.stop();
        // Background compactions hold the database: wait for them, so the directory is free
        // to open again once the engine is dropped.
        while !self.compacting.lock().unwrap_or_else(|p| p.into_inner()).is_empty() {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let _ = self.db.flush_wal(true);
    }
}

/// A page of a [`SnapshotReader`]: pairs, `None` once the spaces are read, or the read's error.
type Page = Result<Option<Vec<SpaceKeyValue>>, StorageError>;

/// [`RocksEngine`]'s consistent reader: a thread holds a RocksDB snapshot (which borrows the
/// database, so it cannot be kept in a struct beside it) and reads one page ahead of the
/// caller. Dropping the reader ends the thread and releases the snapshot, and with it the files
/// it kept from compaction.
struct SnapshotReader {
    pages: Receiver<Page>,
    finished: bool,
}

impl SnapshotReader {
    fn start(db: Arc<DB>, spaces: Vec<Space>, page_bytes: usize) -> Result<Box<dyn ConsistentReader>, StorageError> {
        let (taken_tx, taken_rx) = mpsc::sync_channel::<()>(1);
        let (pages_tx, pages) = mpsc::sync_channel::<Page>(1);
        std::thread::Builder::new()
            .name("hotlake-snapshot-read".into())
            .spawn(move || {
                let snapshot = db.snapshot();
                let _ = taken_tx.send(());
                let result = Self::read(&db, &snapshot, &spaces, page_bytes, &pages_tx);
                let _ = pages_tx.send(result.map(|()| None));
            })
            .map_err(|e| StorageError::Io(format!("start snapshot reader: {e}")))?;
        // The caller's lock is held until the snapshot is taken: writes after it are not seen.
        taken_rx.recv().map_err(|_| StorageError::Io("snapshot reader stopped before reading".into()))?;
        Ok(Box::new(SnapshotReader { pages, finished: false }))
    }

    /// Sends the pages of every space; stops early (Ok) when the reader was dropped.
    fn read(
        db: &DB,
        snapshot: &rocksdb::Snapshot<'_>,
        spaces: &[Space],
        page_bytes: usize,
        pages: &SyncSender<Page>,
    ) -> Result<(), StorageError> {
        let mut page = Vec::new();
        let mut bytes = 0;
        for &space in spaces {
            let cf = cf(db, space)?;
            let mut ro = ReadOptions::default();
            ro.set_snapshot(snapshot);
            let mut it = db.raw_iterator_cf_opt(&cf, ro);
            it.seek_to_first();
            while it.valid() {
                let (Some(k), Some(v)) = (it.key(), it.value()) else { break };
                bytes += k.len() + v.len();
                page.push((space, k.to_vec(), v.to_vec()));
                if bytes >= page_bytes {
                    if pages.send(Ok(Some(std::mem::take(&mut page)))).is_err() {
                        return Ok(());
                    }
                    bytes = 0;
                }
                it.next();
            }
            it.status().map_err(io)?;
        }
        if !page.is_empty() {
            let _ = pages.send(Ok(Some(page)));
        }
        Ok(())
    }
}

impl ConsistentReader for SnapshotReader {
    fn next_page(&mut self) -> Result<Option<Vec<SpaceKeyValue>>, StorageError> {
        if self.finished {
            return Ok(None);
        }
        let page = self.pages.recv().map_err(|_| StorageError::Io("snapshot reader stopped".into()))?;
        if !matches!(page, Ok(Some(_))) {
            self.finished = true;
        }
        page
    }
}

/// The group-commit thread for Raft log writes. A log write goes into the database at once,
/// unsynced, on the caller's thread: it is readable when `write_log` returns and ordered with
/// every write made after it (openraft reads entries it has just appended, and may truncate
/// them). The thread then makes each group of writes durable with one WAL fsync and only then
/// tells their callers.
struct LogWriter {
    db: Arc<DB>,
    tx: Mutex<Option<Sender<LogWriteDone>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl LogWriter {
    fn start(db: Arc<DB>, batches_max: usize) -> Self {
        let (tx, rx) = mpsc::channel::<LogWriteDone>();
        let sync_db = db.clone();
        let thread = std::thread::Builder::new()
            .name("hotlake-log-writer".into())
            .spawn(move || Self::run(sync_db, rx, batches_max))
            .expect("spawn log writer thread");
        LogWriter { db, tx: Mutex::new(Some(tx)), thread: Mutex::new(Some(thread)) }
    }

    fn submit(&self, batch: WriteBatch, done: LogWriteDone) {
        // Held across the write: `stop` cannot slip between the write and the queueing, so
        // every write the thread is told of is in the WAL before the fsync that covers it.
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        let Some(tx) = tx.as_ref() else {
            return done(Err(StorageError::Io("log writer stopped".into())));
        };
        // A write naming a missing space (a shard dropped while its append was on the way)
        // fails alone.
        if let Err(e) = Self::write_unsynced(&self.db, &batch) {
            return done(Err(e));
        }
        if let Err(mpsc::SendError(done)) = tx.send(done) {
            done(Err(StorageError::Io("log writer stopped".into())));
        }
    }

    fn write_unsynced(db: &DB, batch: &WriteBatch) -> Result<(), StorageError> {
        let wb = RocksEngine::to_rocks_batch(db, batch)?;
        let mut wo = WriteOptions::default();
        wo.set_sync(false);
        db.write_opt(wb, &wo).map_err(io)
    }

    fn run(db: Arc<DB>, rx: Receiver<LogWriteDone>, batches_max: usize) {
        while let Ok(first) = rx.recv() {
            let mut group = vec![first];
            while group.len() < batches_max {
                match rx.try_recv() {
                    Ok(d) => group.push(d),
                    Err(_) => break,
                }
            }
            // Every write of the group reached the WAL before its callback was queued: one
            // fsync of the WAL makes them all durable.
            let result = db.flush_wal(true).map_err(|e| e.into_string());
            for done in group {
                done(result.clone().map_err(StorageError::Io));
            }
        }
    }

    fn stop(&self) {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests;
