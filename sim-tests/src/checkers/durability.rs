//! Durability: every point of every acknowledged batch is stored after healing.

use super::FinalState;
use crate::workload::{History, DEVICES, POINTS_PER_BATCH};

/// The first acknowledged point missing from `state`.
pub fn check(history: &History, state: &FinalState) -> Result<(), String> {
    for b in history.acked() {
        let first = b as i64 * POINTS_PER_BATCH;
        for d in 0..DEVICES {
            let stored = &state[&d];
            for t in first..first + POINTS_PER_BATCH {
                if stored.binary_search_by_key(&t, |(ts, _)| *ts).is_err() {
                    return Err(format!("acknowledged point d{d}@{t}s (batch {b}) is lost"));
                }
            }
        }
    }
    Ok(())
}
