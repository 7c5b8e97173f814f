//! Read-after-acknowledgement: a read that started after a write was acknowledged sees it, for
//! range reads (every point of the batch), for `Last` (a timestamp at least as new) and for
//! aggregates (at least the acknowledged points counted and summed, a maximum at least the
//! largest acknowledged value).

use crate::workload::{value_of, History, POINTS_PER_BATCH};

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
    for r in &history.aggregate_reads {
        let d = r.device;
        let values = || {
            r.acked_before.iter().flat_map(|&b| {
                let first = b as i64 * POINTS_PER_BATCH;
                (first..first + POINTS_PER_BATCH).map(move |t| value_of(d, t))
            })
        };
        let Some(max_acked) = values().max() else { continue };
        let (count, sum) = (values().count() as u64, values().map(|v| v as f64).sum::<f64>());
        let Some(a) = r.answer else {
            return Err(format!("aggregates of d{d} found no points, but {count} were acknowledged before the read"));
        };
        if a.count < count || a.sum < sum || a.max < max_acked as f64 {
            return Err(format!(
                "aggregates of d{d} gave count {} sum {} max {}, below the {count} points (sum {sum}, max {max_acked}) acknowledged before the read",
                a.count, a.sum, a.max
            ));
        }
    }
    Ok(())
}
