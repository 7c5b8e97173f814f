//! Model: the stored points are exactly what the history allows. Every stored point belongs
//! to a batch that was acknowledged or whose outcome is unknown, and carries the value that
//! batch wrote; points are unique and ordered. Aggregates over a device agree with its raw
//! points.

use super::FinalState;
use crate::workload::{batch_of, value_of, History};

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

/// Checks a device's aggregate answer (count, sum, min, max) against its raw points.
pub fn check_aggregate(d: i64, raw: &[(i64, i64)], count: u64, sum: f64, min: f64, max: f64) -> Result<(), String> {
    let want_count = raw.len() as u64;
    let want_sum: f64 = raw.iter().map(|(_, v)| *v as f64).sum();
    let want_min = raw.iter().map(|(_, v)| *v).min().map(|v| v as f64).unwrap_or(f64::NAN);
    let want_max = raw.iter().map(|(_, v)| *v).max().map(|v| v as f64).unwrap_or(f64::NAN);
    if count != want_count || sum != want_sum || (want_count > 0 && (min != want_min || max != want_max)) {
        return Err(format!(
            "d{d}: aggregates count {count} sum {sum} min {min} max {max}, raw points give {want_count} {want_sum} {want_min} {want_max}"
        ));
    }
    Ok(())
}
