//! Read-after-acknowledgement: a read that started after a write was acknowledged sees it, for
//! range reads (every point of the batch) and for `Last` (a timestamp at least as new).

use crate::workload::{History, POINTS_PER_BATCH};

/// The first read that missed an earlier acknowledged write.
pub fn check(history: &History) -> Result<(), String> {
    for r in &history.range_reads {
        for &b in &r.acked_before {
            let first = b as i64 * POINTS_PER_BATCH;
            if let Some(t) = (first..first + POINTS_PER_BATCH).find(|t| !r.seen.contains(t)) {
                let (wrote_via, acked_ms) = history.write_trace.get(&b).cloned().unwrap_or_default();
                return Err(format!(
                    "a read of d{} via {} during [{}, {}] ms missed d{}@{t}s of batch {b}, acknowledged via {wrote_via} at {acked_ms} ms",
                    r.device, r.via, r.began_ms, r.ended_ms, r.device
                ));
            }
        }
    }
    for r in &history.last_reads {
        if let Some(acked) = r.acked_max {
            if r.seen.is_none_or(|s| s < acked) {
                return Err(format!(
                    "last of d{} returned {:?}s, but {acked}s was acknowledged before the read began",
                    r.device, r.seen
                ));
            }
        }
    }
    Ok(())
}
