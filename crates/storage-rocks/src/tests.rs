//! The storage suite and RocksDB's own checks (reopen, reclaiming a purged log's files).

use std::sync::Arc;

use hotlake_storage::suite::{keys_in, put, S};
use hotlake_storage::{keys, Durability, KvEngine, Space, WriteBatch};

use crate::{RocksEngine, RocksOptions};

hotlake_storage::engine_suite!(rocks, {
    let dir = tempfile::tempdir().unwrap();
    let e = Arc::new(RocksEngine::open(dir.path(), &RocksOptions::default()).unwrap());
    (dir, e)
});

/// Data written and synced survives closing and reopening RocksDB, shards included.
#[test]
fn rocks_reopen_keeps_synced_data_and_shards() {
    let dir = tempfile::tempdir().unwrap();
    {
        let e = RocksEngine::open(dir.path(), &RocksOptions::default()).unwrap();
        e.create_shard(S).unwrap();
        put(&e, Space::Data(S), b"k", b"v");
    }
    let e = RocksEngine::open(dir.path(), &RocksOptions::default()).unwrap();
    assert_eq!(e.shards(), vec![S]);
    assert_eq!(e.get(Space::Data(S), b"k").unwrap(), Some(b"v".to_vec()));
}

/// Bytes of the table files in a RocksDB directory.
fn sst_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "sst"))
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

/// A purged log gives its disk back: files that held only purged entries are gone, and files
/// that also held live keys (every flush carries the log's state) are compacted.
#[test]
fn rocks_reclaim_gives_a_purged_logs_files_back() {
    let dir = tempfile::tempdir().unwrap();
    let space = Space::Log(S);
    let before;
    {
        let e = RocksEngine::open(dir.path(), &RocksOptions::default()).unwrap();
        e.create_shard(S).unwrap();
        // 8 flushes of 500 entries of 2 KiB each, incompressible, each with a state key.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for flush in 0..8u64 {
            let mut b = WriteBatch::new();
            for i in 0..500 {
                let value: Vec<u8> = (0..2048)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x as u8
                    })
                    .collect();
                b.put(space, keys::log_entry(flush * 500 + i).to_vec(), value);
            }
            b.put(space, keys::log_state("committed"), flush.to_be_bytes().to_vec());
            e.write(b, Durability::Sync).unwrap();
            e.flush_memtables().unwrap();
        }
        before = sst_bytes(dir.path());
        assert!(before > 7 << 20, "{before} bytes of tables before the purge");
        let (from, to) = (keys::log_entry(0), keys::log_entry(3_900));
        let mut b = WriteBatch::new();
        b.delete_range(space, from.to_vec(), to.to_vec());
        e.write(b, Durability::Sync).unwrap();
        e.reclaim_range(space, &from, &to).unwrap();
        // Dropping the engine waits for the background compaction.
    }
    let after = sst_bytes(dir.path());
    assert!(after < before / 10, "tables hold {after} bytes after the purge, {before} before");
    let e = RocksEngine::open(dir.path(), &RocksOptions::default()).unwrap();
    let entries = keys_in(&e, space, &keys::log_entry(0), &keys::log_entry(u64::MAX));
    assert_eq!(entries.len(), 100, "the 100 entries after the purge point remain");
    assert_eq!(e.get(space, &keys::log_state("committed")).unwrap(), Some(7u64.to_be_bytes().to_vec()));
}
