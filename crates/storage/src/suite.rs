//! The storage trait suite: the same checks against every engine (`MemEngine` here,
//! `RocksEngine` in `hotlake-storage-rocks`), run through [`engine_suite!`](crate::engine_suite)
//! as TiKV's `engine_traits_tests` are.

use std::sync::{Arc, Mutex};

use crate::*;

/// The shard the suite writes to.
pub const S: ShardId = ShardId(7);

/// Puts `k = v` in `space`, synced.
pub fn put(e: &dyn KvEngine, space: Space, k: &[u8], v: &[u8]) {
    let mut b = WriteBatch::new();
    b.put(space, k.to_vec(), v.to_vec());
    e.write(b, Durability::Sync).unwrap();
}

/// The keys of `space` in `[from, to)`, in order.
pub fn keys_in(e: &dyn KvEngine, space: Space, from: &[u8], to: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    e.scan(space, from, to, &mut |k, _| {
        out.push(k.to_vec());
        true
    })
    .unwrap();
    out
}

/// Put, get and overwrite see the latest value; missing keys read as None.
pub fn put_get_overwrite(e: &dyn KvEngine) {
    e.create_shard(S).unwrap();
    put(e, Space::Data(S), b"k", b"1");
    put(e, Space::Data(S), b"k", b"2");
    assert_eq!(e.get(Space::Data(S), b"k").unwrap(), Some(b"2".to_vec()));
    assert_eq!(e.get(Space::Data(S), b"missing").unwrap(), None);
    assert_eq!(e.get(Space::Index(S), b"k").unwrap(), None, "spaces are separate");
}

/// Scans are ordered bytewise, honour [from, to) and stop when the visitor says so.
pub fn scan_order_and_bounds(e: &dyn KvEngine) {
    e.create_shard(S).unwrap();
    for k in [&b"b"[..], b"a", b"c", b"ab", b"\x00", b"\xff"] {
        put(e, Space::Log(S), k, b"v");
    }
    assert_eq!(keys_in(e, Space::Log(S), b"a", b"c"), vec![b"a".to_vec(), b"ab".to_vec(), b"b".to_vec()]);
    assert_eq!(keys_in(e, Space::Log(S), b"c", b"a"), Vec::<Vec<u8>>::new());
    let mut first = Vec::new();
    e.scan(Space::Log(S), b"", b"\xff\xff", &mut |k, _| {
        first.push(k.to_vec());
        false
    })
    .unwrap();
    assert_eq!(first, vec![b"\x00".to_vec()]);
    assert_eq!(e.last_in_range(Space::Log(S), b"a", b"c").unwrap().map(|(k, _)| k), Some(b"b".to_vec()));
    assert_eq!(e.last_in_range(Space::Log(S), b"d", b"e").unwrap(), None);
}

/// A batch spanning spaces applies whole, including deletes and range deletes.
pub fn batch_is_atomic_across_spaces(e: &dyn KvEngine) {
    e.create_shard(S).unwrap();
    for i in 0..10u8 {
        put(e, Space::Data(S), &[i], b"x");
    }
    let mut b = WriteBatch::new();
    b.delete_range(Space::Data(S), vec![2], vec![5]);
    b.delete(Space::Data(S), vec![8]);
    b.put(Space::Index(S), b"flushed".to_vec(), b"3".to_vec());
    e.write(b, Durability::Buffered).unwrap();
    assert_eq!(keys_in(e, Space::Data(S), &[0], &[255]), vec![vec![0], vec![1], vec![5], vec![6], vec![7], vec![9]]);
    assert_eq!(e.get(Space::Index(S), b"flushed").unwrap(), Some(b"3".to_vec()));
    // A batch naming a missing space fails and changes nothing.
    let mut bad = WriteBatch::new();
    bad.put(Space::Data(S), b"new".to_vec(), b"v".to_vec());
    bad.put(Space::Data(ShardId(999)), b"k".to_vec(), b"v".to_vec());
    assert!(e.write(bad, Durability::Sync).is_err());
    assert_eq!(e.get(Space::Data(S), b"new").unwrap(), None);
}

/// Group-committed log writes complete exactly once and are readable afterwards.
pub fn log_writes_complete_once(e: &dyn KvEngine) {
    e.create_shard(S).unwrap();
    let done = Arc::new(Mutex::new(Vec::new()));
    for i in 0..50u8 {
        let mut b = WriteBatch::new();
        b.put(Space::Log(S), vec![i], vec![i]);
        let d = done.clone();
        e.write_log(b, Box::new(move |r| d.lock().unwrap().push((i, r.is_ok()))));
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while done.lock().unwrap().len() < 50 {
        assert!(std::time::Instant::now() < deadline, "log writes did not complete");
        std::thread::yield_now();
    }
    let mut got = done.lock().unwrap().clone();
    got.sort();
    assert_eq!(got, (0..50u8).map(|i| (i, true)).collect::<Vec<_>>());
    assert_eq!(keys_in(e, Space::Log(S), &[0], &[255]).len(), 50);
}

/// A log write is readable as soon as `write_log` returns, before it is durable, and takes
/// effect before any write made after it: openraft applies entries it has just appended (a
/// follower told they are committed in the same request) and truncates a conflicting suffix
/// right after appending it.
pub fn log_writes_are_readable_at_once_and_ordered(e: &dyn KvEngine) {
    e.create_shard(S).unwrap();
    let done = Arc::new(Mutex::new(0));
    for round in 0..200u8 {
        let mut b = WriteBatch::new();
        b.put(Space::Log(S), vec![round], vec![round]);
        let d = done.clone();
        e.write_log(b, Box::new(move |r| *d.lock().unwrap() += usize::from(r.is_ok())));
        assert_eq!(e.get(Space::Log(S), &[round]).unwrap(), Some(vec![round]), "log write {round} not readable");
        // Deleting what was just appended (a truncation) must not be undone by the append.
        if round % 2 == 1 {
            let mut truncate = WriteBatch::new();
            truncate.delete_range(Space::Log(S), vec![round], vec![255]);
            e.write(truncate, Durability::Buffered).unwrap();
        }
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while *done.lock().unwrap() < 200 {
        assert!(std::time::Instant::now() < deadline, "log writes did not complete");
        std::thread::yield_now();
    }
    let kept: Vec<Vec<u8>> = (0..200u8).filter(|r| r % 2 == 0).map(|r| vec![r]).collect();
    assert_eq!(keys_in(e, Space::Log(S), &[0], &[255]), kept);
}

/// Dropping a shard removes its spaces and data; other shards are untouched.
pub fn drop_shard_removes_only_that_shard(e: &dyn KvEngine) {
    e.create_shard(S).unwrap();
    e.create_shard(ShardId(8)).unwrap();
    put(e, Space::Data(S), b"k", b"v");
    put(e, Space::Data(ShardId(8)), b"k", b"v");
    e.drop_shard(S).unwrap();
    assert!(!e.shards().contains(&S));
    assert!(e.get(Space::Data(S), b"k").is_err());
    assert_eq!(e.get(Space::Data(ShardId(8)), b"k").unwrap(), Some(b"v".to_vec()));
    e.create_shard(S).unwrap();
    assert_eq!(e.get(Space::Data(S), b"k").unwrap(), None, "a re-created shard starts empty");
}

/// Reclaiming a deleted range keeps every key outside it: a purged log's tail and its state.
pub fn reclaim_keeps_keys_outside_the_range(e: &dyn KvEngine) {
    e.create_shard(S).unwrap();
    let space = Space::Log(S);
    for i in 0..100 {
        put(e, space, &keys::log_entry(i), b"entry");
    }
    put(e, space, &keys::log_state("purged"), b"49");
    e.flush_memtables().unwrap();
    let (from, to) = (keys::log_entry(0), keys::log_entry(50));
    let mut b = WriteBatch::new();
    b.delete_range(space, from.to_vec(), to.to_vec());
    e.write(b, Durability::Sync).unwrap();
    e.reclaim_range(space, &from, &to).unwrap();
    let entries = keys_in(e, space, &keys::log_entry(0), &keys::log_entry(u64::MAX));
    assert_eq!(entries, (50..100).map(|i| keys::log_entry(i).to_vec()).collect::<Vec<_>>());
    assert_eq!(e.get(space, &keys::log_state("purged")).unwrap(), Some(b"49".to_vec()));
}

/// A consistent reader sees the spaces as they were when it was opened, in order and paged,
/// whatever is written, overwritten or deleted while it reads.
pub fn consistent_reader_sees_one_instant(e: &dyn KvEngine) {
    e.create_shard(S).unwrap();
    for i in 0..200u32 {
        put(e, Space::Data(S), &i.to_be_bytes(), &[1; 100]);
    }
    put(e, Space::Index(S), b"state", b"before");
    let mut reader = e.consistent_reader(&[Space::Data(S), Space::Index(S)], 1000).unwrap();
    let first = reader.next_page().unwrap().expect("a first page");
    let mut b = WriteBatch::new();
    b.delete_range(Space::Data(S), Vec::new(), KEY_END.to_vec());
    b.put(Space::Data(S), b"late".to_vec(), b"x".to_vec());
    b.put(Space::Index(S), b"state".to_vec(), b"after".to_vec());
    e.write(b, Durability::Sync).unwrap();
    let mut pairs = first;
    let mut pages = 1;
    while let Some(page) = reader.next_page().unwrap() {
        assert!(!page.is_empty(), "a page holds at least one pair");
        pairs.extend(page);
        pages += 1;
    }
    assert!(pages >= 20, "200 pairs of 104 bytes in pages of about 1000 bytes, got {pages} pages");
    let mut expected: Vec<SpaceKeyValue> =
        (0..200u32).map(|i| (Space::Data(S), i.to_be_bytes().to_vec(), vec![1; 100])).collect();
    expected.push((Space::Index(S), b"state".to_vec(), b"before".to_vec()));
    assert_eq!(pairs, expected);
    assert!(reader.next_page().unwrap().is_none(), "a finished reader stays finished");
}

/// Runs every check of the suite against an engine: `engine_suite!(name, make)` where `make`
/// evaluates to `(guard, Arc<engine>)` (the guard keeps, say, a temporary directory alive).
#[macro_export]
macro_rules! engine_suite {
    ($modname:ident, $make:expr) => {
        mod $modname {
            #[allow(unused_imports)]
            use super::*;
            #[test]
            fn put_get_overwrite() {
                let (_g, e) = $make;
                $crate::suite::put_get_overwrite(&*e);
            }
            #[test]
            fn scan_order_and_bounds() {
                let (_g, e) = $make;
                $crate::suite::scan_order_and_bounds(&*e);
            }
            #[test]
            fn batch_is_atomic_across_spaces() {
                let (_g, e) = $make;
                $crate::suite::batch_is_atomic_across_spaces(&*e);
            }
            #[test]
            fn log_writes_complete_once() {
                let (_g, e) = $make;
                $crate::suite::log_writes_complete_once(&*e);
            }
            #[test]
            fn log_writes_are_readable_at_once_and_ordered() {
                let (_g, e) = $make;
                $crate::suite::log_writes_are_readable_at_once_and_ordered(&*e);
            }
            #[test]
            fn drop_shard_removes_only_that_shard() {
                let (_g, e) = $make;
                $crate::suite::drop_shard_removes_only_that_shard(&*e);
            }
            #[test]
            fn consistent_reader_sees_one_instant() {
                let (_g, e) = $make;
                $crate::suite::consistent_reader_sees_one_instant(&*e);
            }
            #[test]
            fn reclaim_keeps_keys_outside_the_range() {
                let (_g, e) = $make;
                $crate::suite::reclaim_keeps_keys_outside_the_range(&*e);
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    crate::engine_suite!(mem, ((), Arc::new(crate::MemEngine::new())));
}
