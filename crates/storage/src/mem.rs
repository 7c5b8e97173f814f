//! `MemEngine`: the in-memory, deterministic engine used by the simulator and fast tests.
//!
//! It keeps two views: `live` (every write, what readers see) and `durable` (what survives a
//! crash). A synced write makes every earlier write durable, like a WAL fsync; [`MemEngine::crash`]
//! throws away the unsynced suffix, modelling a power loss.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::{
    ConsistentReader, Durability, KeyValue, KvEngine, LogWriteDone, ShardId, Space, SpaceKeyValue, StorageError,
    WriteBatch, WriteOp,
};

type Tree = BTreeMap<Vec<u8>, Vec<u8>>;

#[derive(Default, Clone)]
struct State {
    spaces: BTreeMap<Space, Tree>,
    shards: BTreeSet<ShardId>,
}

impl State {
    fn apply(&mut self, batch: &WriteBatch) -> Result<(), StorageError> {
        // Check every space first so a batch never half-applies.
        for op in batch.ops() {
            let space = match op {
                WriteOp::Put(s, ..) | WriteOp::Delete(s, _) | WriteOp::DeleteRange(s, ..) => *s,
            };
            if !self.spaces.contains_key(&space) {
                return Err(StorageError::NoSpace(space.name()));
            }
        }
        for op in batch.ops() {
            match op {
                WriteOp::Put(s, k, v) => {
                    self.tree_mut(*s).insert(k.clone(), v.clone());
                }
                WriteOp::Delete(s, k) => {
                    self.tree_mut(*s).remove(k);
                }
                WriteOp::DeleteRange(s, from, to) => {
                    if from < to {
                        let tree = self.tree_mut(*s);
                        let doomed: Vec<Vec<u8>> = tree
                            .range::<[u8], _>((Bound::Included(&from[..]), Bound::Excluded(&to[..])))
                            .map(|(k, _)| k.clone())
                            .collect();
                        for k in doomed {
                            tree.remove(&k);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn tree_mut(&mut self, space: Space) -> &mut Tree {
        self.spaces.get_mut(&space).expect("space checked before apply")
    }

    fn create_shard(&mut self, shard: ShardId) {
        self.shards.insert(shard);
        for s in Space::of_shard(shard) {
            self.spaces.entry(s).or_default();
        }
    }

    fn drop_shard(&mut self, shard: ShardId) {
        self.shards.remove(&shard);
        for s in Space::of_shard(shard) {
            self.spaces.remove(&s);
        }
    }
}

struct Inner {
    live: State,
    durable: State,
    /// Batches written since the last sync, in order; replayed onto `durable` by a sync.
    unsynced: Vec<WriteBatch>,
    /// When set, every write is synced (no unsynced suffix can be lost).
    always_sync: bool,
}

/// In-memory engine with a crash model. Cloning shares the same store.
#[derive(Clone)]
pub struct MemEngine {
    inner: Arc<Mutex<Inner>>,
}

impl Default for MemEngine {
    fn default() -> Self {
        Self::new()
    }
}

impl MemEngine {
    /// An empty engine holding only the node meta space.
    pub fn new() -> Self {
        let mut state = State::default();
        state.spaces.insert(Space::NodeMeta, Tree::new());
        state.spaces.insert(Space::ClusterLog, Tree::new());
        MemEngine {
            inner: Arc::new(Mutex::new(Inner {
                live: state.clone(),
                durable: state,
                unsynced: Vec::new(),
                always_sync: false,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock already failed the test or simulation; keep going so
        // the failure report is the original panic.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Simulates a power loss: every write not yet synced is lost. Returns how many batches were
    /// dropped.
    pub fn crash(&self) -> usize {
        let mut inner = self.lock();
        let lost = inner.unsynced.len();
        inner.unsynced.clear();
        inner.live = inner.durable.clone();
        lost
    }

    fn write_inner(&self, batch: WriteBatch, durability: Durability) -> Result<(), StorageError> {
        let mut inner = self.lock();
        inner.live.apply(&batch)?;
        if durability == Durability::Sync || inner.always_sync {
            let pending = std::mem::take(&mut inner.unsynced);
            for b in &pending {
                inner.durable.apply(b)?;
            }
            inner.durable.apply(&batch)?;
        } else {
            inner.unsynced.push(batch);
        }
        Ok(())
    }
}

impl KvEngine for MemEngine {
    fn create_shard(&self, shard: ShardId) -> Result<(), StorageError> {
        let mut inner = self.lock();
        inner.live.create_shard(shard);
        // Creating a column family is durable at once in RocksDB as well.
        inner.durable.create_shard(shard);
        Ok(())
    }

    fn drop_shard(&self, shard: ShardId) -> Result<(), StorageError> {
        let mut inner = self.lock();
        inner.live.drop_shard(shard);
        inner.durable.drop_shard(shard);
        inner.unsynced.retain(|b| {
            !b.ops().iter().any(|op| match op {
                WriteOp::Put(s, ..) | WriteOp::Delete(s, _) | WriteOp::DeleteRange(s, ..) => {
                    Space::of_shard(shard).contains(s)
                }
            })
        });
        Ok(())
    }

    fn shards(&self) -> Vec<ShardId> {
        self.lock().live.shards.iter().copied().collect()
    }

    fn write(&self, batch: WriteBatch, durability: Durability) -> Result<(), StorageError> {
        self.write_inner(batch, durability)
    }

    fn write_log(&self, batch: WriteBatch, done: LogWriteDone) {
        done(self.write_inner(batch, Durability::Sync));
    }

    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let inner = self.lock();
        let tree = inner.live.spaces.get(&space).ok_or_else(|| StorageError::NoSpace(space.name()))?;
        Ok(tree.get(key).cloned())
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
        // Copy out under the lock in pages so `visit` may call back into the engine.
        let mut cursor = from.to_vec();
        let mut first = true;
        loop {
            let page: Vec<(Vec<u8>, Vec<u8>)> = {
                let inner = self.lock();
                let tree = inner.live.spaces.get(&space).ok_or_else(|| StorageError::NoSpace(space.name()))?;
                let lower = if first { Bound::Included(&cursor[..]) } else { Bound::Excluded(&cursor[..]) };
                tree.range::<[u8], _>((lower, Bound::Excluded(to)))
                    .take(256)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            };
            first = false;
            let Some((last, _)) = page.last() else { return Ok(()) };
            let last = last.clone();
            for (k, v) in &page {
                if !visit(k, v) {
                    return Ok(());
                }
            }
            cursor = last;
        }
    }

    fn consistent_reader(
        &self,
        spaces: &[Space],
        page_bytes: usize,
    ) -> Result<Box<dyn ConsistentReader>, StorageError> {
        // A copy of the spaces: the simulator's and tests' shards are small, and a copy is the
        // one view that later writes cannot reach.
        let inner = self.lock();
        let mut pairs = Vec::new();
        for &space in spaces {
            let tree = inner.live.spaces.get(&space).ok_or_else(|| StorageError::NoSpace(space.name()))?;
            pairs.extend(tree.iter().map(|(k, v)| (space, k.clone(), v.clone())));
        }
        Ok(Box::new(CopiedReader { pairs: pairs.into_iter(), page_bytes: page_bytes.max(1) }))
    }

    fn last_in_range(&self, space: Space, from: &[u8], to: &[u8]) -> Result<Option<KeyValue>, StorageError> {
        if from >= to {
            return Ok(None);
        }
        let inner = self.lock();
        let tree = inner.live.spaces.get(&space).ok_or_else(|| StorageError::NoSpace(space.name()))?;
        Ok(tree
            .range::<[u8], _>((Bound::Included(from), Bound::Excluded(to)))
            .next_back()
            .map(|(k, v)| (k.clone(), v.clone())))
    }

    fn size_bytes(&self) -> u64 {
        let inner = self.lock();
        inner.live.spaces.values().flat_map(|t| t.iter()).map(|(k, v)| (k.len() + v.len()) as u64).sum()
    }

    fn sync(&self) -> Result<(), StorageError> {
        self.write_inner(WriteBatch::new(), Durability::Sync)
    }

    fn compact(&self) -> Result<(), StorageError> {
        Ok(())
    }

    fn flush_memtables(&self) -> Result<(), StorageError> {
        Ok(())
    }

    fn reclaim_range(&self, _space: Space, _from: &[u8], _to: &[u8]) -> Result<(), StorageError> {
        // No files: deleted keys are gone from memory already.
        Ok(())
    }
}

/// [`MemEngine`]'s consistent reader: pages out of a copy taken when it was opened.
struct CopiedReader {
    pairs: std::vec::IntoIter<SpaceKeyValue>,
    page_bytes: usize,
}

impl ConsistentReader for CopiedReader {
    fn next_page(&mut self) -> Result<Option<Vec<SpaceKeyValue>>, StorageError> {
        let mut page = Vec::new();
        let mut bytes = 0;
        while bytes < self.page_bytes {
            let Some(pair) = self.pairs.next() else { break };
            bytes += pair.1.len() + pair.2.len();
            page.push(pair);
        }
        Ok((!page.is_empty()).then_some(page))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_drops_only_the_unsynced_suffix() {
        let e = MemEngine::new();
        e.create_shard(ShardId(1)).unwrap();
        let put = |k: &str, d| {
            let mut b = WriteBatch::new();
            b.put(Space::Data(ShardId(1)), k.as_bytes().to_vec(), b"v".to_vec());
            e.write(b, d).unwrap();
        };
        put("a", Durability::Buffered);
        put("b", Durability::Sync);
        put("c", Durability::Buffered);
        assert_eq!(e.crash(), 1);
        assert!(e.get(Space::Data(ShardId(1)), b"a").unwrap().is_some());
        assert!(e.get(Space::Data(ShardId(1)), b"b").unwrap().is_some());
        assert!(e.get(Space::Data(ShardId(1)), b"c").unwrap().is_none());
    }
}
