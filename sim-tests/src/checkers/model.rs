//! Model: the stored points are exactly what the history allows. Every stored point belongs
//! to a batch that was acknowledged or whose outcome is unknown, and carries the value that
//! batch wrote; points are unique and ordered. Aggregates over a device agree with its raw
//! points after healing, and during faults count whole batches (a device's points of one
//! batch commit together) and never exceed what could have been stored.

use super::FinalState;
use crate::workload::{batch_of, value_of, Aggregates, History, POINTS_PER_BATCH};

/// The first stored point the model does not allow.
pub fn check(history: &History, state: &FinalState) -> Result<(), String> {
    let maybe = history.maybe();
    for (d, points) in state {
        for w in points.windows(2) {
            if w[0].0 >= w[1].0 {
                return Err(format!("d{d}: points out of order or duplicated at {}s", w[1].0));
            }
        }
        for &(t, v) in points {
            let b = batch_of(t);
            if !maybe.contains(&b) {
                return Err(format!("d{d}@{t}s is stored but batch {b} was never written or was rejected"));
            }
            if v != value_of(*d, t) {
                return Err(format!("d{d}@{t}s holds {v}, batch {b} wrote {}", value_of(*d, t)));
            }
        }
    }
    Ok(())
}

/// Checks a device's aggregate answer against its raw points after healing.
pub fn check_aggregate(d: i64, raw: &[(i64, i64)], answer: Option<Aggregates>) -> Result<(), String> {
    let want_count = raw.len() as u64;
    let want_sum: f64 = raw.iter().map(|(_, v)| *v as f64).sum();
    let want_min = raw.iter().map(|(_, v)| *v).min().map(|v| v as f64).unwrap_or(f64::NAN);
    let want_max = raw.iter().map(|(_, v)| *v).max().map(|v| v as f64).unwrap_or(f64::NAN);
    let Some(a) = answer else {
        return if raw.is_empty() { Ok(()) } else { Err(format!("d{d}: no aggregates, {want_count} raw points")) };
    };
    if a.count != want_count || a.sum != want_sum || (want_count > 0 && (a.min != want_min || a.max != want_max)) {
        return Err(format!(
            "d{d}: aggregates {a:?}, raw points give count {want_count} sum {want_sum} min {want_min} max {want_max}"
        ));
    }
    Ok(())
}

/// Checks the aggregate reads made during faults against what could have been stored.
pub fn check_aggregate_reads(history: &History) -> Result<(), String> {
    let maybe = history.maybe();
    for r in &history.aggregate_reads {
        let (d, Some(a)) = (r.device, r.answer) else { continue };
        let values = || {
            maybe.iter().flat_map(|&b| {
                let first = b as i64 * POINTS_PER_BATCH;
                (first..first + POINTS_PER_BATCH).map(move |t| value_of(d, t))
            })
        };
        let (count_max, sum_max) = (values().count() as u64, values().map(|v| v as f64).sum::<f64>());
        let (lowest, highest) = (values().min().unwrap_or(i64::MAX) as f64, values().max().unwrap_or(i64::MIN) as f64);
        if a.count % POINTS_PER_BATCH as u64 != 0 {
            return Err(format!("d{d}: count {} is not whole batches of {POINTS_PER_BATCH}", a.count));
        }
        if a.count > count_max || a.sum > sum_max || a.min < lowest || a.max > highest {
            return Err(format!(
                "d{d}: aggregates {a:?} exceed what acknowledged and unknown batches could hold (count {count_max}, sum {sum_max}, values {lowest}..={highest})"
            ));
        }
    }
    Ok(())
}
