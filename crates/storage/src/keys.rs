//! Key encodings. Integers are big-endian so byte order is numeric order; signed timestamps have
//! their sign bit flipped for the same reason.
//!
//! ```text
//! log space:    [0x00] "vote" | [0x00] "committed" | [0x00] "purged"   (Raft state)
//!               [0x01] index:u64                                       (log entries)
//! data space:   series:u32  window_start:i64*  flush_seq:u64            (blocks)   * sign-flipped
//! index space:  [0x00] "flushed"                                       (flushed state)
//!               [0x00] "feed_start"                                    (first feed index held)
//!               [0x01] series:u32                                      (series record)
//!               [0x02] index:u64                                       (feed entry)
//!               [0x03] flushed_at_ms:u64 last_index:u64                (feed flush mark)
//! meta space:   "node_id" | "shard_count" | ...
//! ```

/// Prefix byte of Raft state keys in the log space.
pub const LOG_STATE: u8 = 0x00;
/// Prefix byte of log entries in the log space.
pub const LOG_ENTRY: u8 = 0x01;

/// Key of a log entry.
pub fn log_entry(index: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = LOG_ENTRY;
    k[1..].copy_from_slice(&index.to_be_bytes());
    k
}

/// Decodes a log entry key back to its index; `None` for any other key.
pub fn log_entry_index(key: &[u8]) -> Option<u64> {
    if key.len() != 9 || key[0] != LOG_ENTRY {
        return None;
    }
    let mut b = [0u8; 8];
    b.copy_from_slice(&key[1..]);
    Some(u64::from_be_bytes(b))
}

/// Key of a Raft state record (`vote`, `committed`, `purged`).
pub fn log_state(name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + name.len());
    k.push(LOG_STATE);
    k.extend_from_slice(name.as_bytes());
    k
}

/// Maps an i64 onto u64 so that unsigned order equals signed order.
pub fn order_i64(v: i64) -> u64 {
    (v as u64) ^ (1u64 << 63)
}

/// Inverse of [`order_i64`].
pub fn unorder_i64(v: u64) -> i64 {
    (v ^ (1u64 << 63)) as i64
}

/// Key of a block: (series, window start, flush sequence).
pub fn block(series: u32, window_start_ns: i64, flush_seq: u64) -> [u8; 20] {
    let mut k = [0u8; 20];
    k[..4].copy_from_slice(&series.to_be_bytes());
    k[4..12].copy_from_slice(&order_i64(window_start_ns).to_be_bytes());
    k[12..].copy_from_slice(&flush_seq.to_be_bytes());
    k
}

/// The smallest block key of `series` whose window starts at or after `window_start_ns`.
pub fn block_from(series: u32, window_start_ns: i64) -> [u8; 20] {
    block(series, window_start_ns, 0)
}

/// Decodes a block key into (series, window start, flush sequence).
pub fn parse_block(key: &[u8]) -> Option<(u32, i64, u64)> {
    if key.len() != 20 {
        return None;
    }
    let series = u32::from_be_bytes(key[..4].try_into().ok()?);
    let window = unorder_i64(u64::from_be_bytes(key[4..12].try_into().ok()?));
    let seq = u64::from_be_bytes(key[12..].try_into().ok()?);
    Some((series, window, seq))
}

/// Key of the flushed-state record in the index space.
pub const FLUSHED_STATE: &[u8] = b"\x00flushed";

/// Key of a series record in the index space.
pub fn series_record(series: u32) -> [u8; 5] {
    let mut k = [0u8; 5];
    k[0] = 0x01;
    k[1..].copy_from_slice(&series.to_be_bytes());
    k
}

/// Range of all series records: `[from, to)`.
pub fn series_records_range() -> (Vec<u8>, Vec<u8>) {
    (vec![0x01], vec![0x02])
}

/// Key of the record naming the first log index this replica's feed holds in full.
pub const FEED_START: &[u8] = b"\x00feed_start";

/// Prefix byte of feed entries in the index space.
pub const FEED_ENTRY: u8 = 0x02;
/// Prefix byte of feed flush marks in the index space.
pub const FEED_MARK: u8 = 0x03;

/// Key of the feed entry of log index `index`.
pub fn feed_entry(index: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = FEED_ENTRY;
    k[1..].copy_from_slice(&index.to_be_bytes());
    k
}

/// Decodes a feed entry key back to its log index; `None` for any other key.
pub fn feed_entry_index(key: &[u8]) -> Option<u64> {
    (key.len() == 9 && key[0] == FEED_ENTRY).then(|| u64::from_be_bytes(key[1..].try_into().expect("8 bytes")))
}

/// Key of a feed flush mark: one flush wrote the entries up to `last_index` at `flushed_at_ms`.
pub fn feed_mark(flushed_at_ms: u64, last_index: u64) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[0] = FEED_MARK;
    k[1..9].copy_from_slice(&flushed_at_ms.to_be_bytes());
    k[9..].copy_from_slice(&last_index.to_be_bytes());
    k
}

/// Decodes a feed flush mark key into (flushed at, last index).
pub fn parse_feed_mark(key: &[u8]) -> Option<(u64, u64)> {
    if key.len() != 17 || key[0] != FEED_MARK {
        return None;
    }
    Some((u64::from_be_bytes(key[1..9].try_into().ok()?), u64::from_be_bytes(key[9..].try_into().ok()?)))
}

/// True for the index-space keys that belong to the feed (entries, marks, start), which are
/// this replica's own history and travel in no snapshot.
pub fn is_feed_key(key: &[u8]) -> bool {
    key == FEED_START || matches!(key.first(), Some(&FEED_ENTRY) | Some(&FEED_MARK))
}

/// Prefix of a staged pair from the data space, in a shard's stage space.
pub const STAGE_DATA: u8 = 0x00;
/// Prefix of a staged pair from the index space, in a shard's stage space.
pub const STAGE_INDEX: u8 = 0x01;
/// Key, in a shard's stage space, present from the moment a complete staged snapshot starts
/// replacing the shard's content until it has: a shard opened with it finishes the install.
pub const STAGE_INSTALLING: &[u8] = b"\x02installing";

/// Key of a staged snapshot pair: `index_space` tells which space it goes to.
pub fn stage_key(index_space: bool, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(if index_space { STAGE_INDEX } else { STAGE_DATA });
    k.extend_from_slice(key);
    k
}

/// Decodes a staged pair's key into (index space?, key); `None` for the install mark.
pub fn parse_stage_key(key: &[u8]) -> Option<(bool, &[u8])> {
    match key.split_first() {
        Some((&STAGE_DATA, rest)) => Some((false, rest)),
        Some((&STAGE_INDEX, rest)) => Some((true, rest)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn stage_keys_round_trip_and_the_mark_is_none() {
        assert_eq!(parse_stage_key(&stage_key(true, FLUSHED_STATE)), Some((true, FLUSHED_STATE)));
        assert_eq!(parse_stage_key(&stage_key(false, &block(3, 0, 9))), Some((false, &block(3, 0, 9)[..])));
        assert_eq!(parse_stage_key(STAGE_INSTALLING), None);
    }

    use super::*;

    #[test]
    fn block_keys_sort_by_series_then_signed_time_then_seq() {
        let mut keys = [block(2, -5, 0), block(1, 10, 3), block(1, -10, 9), block(1, 10, 1), block(1, i64::MIN, 0)];
        keys.sort();
        let parsed: Vec<_> = keys.iter().map(|k| parse_block(k).unwrap()).collect();
        assert_eq!(parsed, vec![(1, i64::MIN, 0), (1, -10, 9), (1, 10, 1), (1, 10, 3), (2, -5, 0)]);
    }

    #[test]
    fn log_entry_keys_round_trip_and_sort_numerically() {
        assert_eq!(log_entry_index(&log_entry(258)), Some(258));
        assert!(log_entry(255) < log_entry(256));
        assert_eq!(log_entry_index(&log_state("vote")), None);
    }
}
