//! Subscriptions: what a subscriber was given, against what was written.
//!
//! - each shard's entries arrive once each and in log order, across every reconnection (the
//!   subscriber resumes from the last cursor it was given);
//! - every point of every acknowledged batch was delivered;
//! - every point delivered belongs to a batch that was acknowledged or whose outcome is unknown,
//!   with the value that batch wrote.

use crate::subscriber::Deliveries;
use crate::workload::{batch_of, value_of, History, DEVICES, POINTS_PER_BATCH};

/// The first violation, if any.
pub fn check(h: &History, d: &Deliveries) -> Result<(), String> {
    for (shard, indexes) in &d.entries {
        if let Some(w) = indexes.windows(2).find(|w| w[0] >= w[1]) {
            return Err(format!("s{shard}: entry {} delivered after entry {} ({} streams)", w[1], w[0], d.streams));
        }
    }
    let maybe = h.maybe();
    for (&(device, t), values) in &d.points {
        let b = batch_of(t);
        if !maybe.contains(&b) {
            return Err(format!("d{device} t={t}: delivered, but batch {b} was refused"));
        }
        if let Some(v) = values.iter().find(|v| **v != value_of(device, t)) {
            return Err(format!("d{device} t={t}: delivered value {v}, written {}", value_of(device, t)));
        }
    }
    for b in h.acked() {
        for device in 0..DEVICES {
            for t in b as i64 * POINTS_PER_BATCH..(b as i64 + 1) * POINTS_PER_BATCH {
                if !d.points.contains_key(&(device, t)) {
                    return Err(format!(
                        "batch {b} was acknowledged but d{device} t={t} was never delivered ({} streams)",
                        d.streams
                    ));
                }
            }
        }
    }
    Ok(())
}

/// A consumer group's members, together: every point of every acknowledged batch was given
/// to one of them at least once (at-least-once: redelivery after a rebalance or a failed
/// commit is allowed), and every point given belongs to a batch that was acknowledged or
/// whose outcome is unknown, with the value that batch wrote.
pub fn check_group(h: &History, members: &[&Deliveries]) -> Result<(), String> {
    let union = union_of(members);
    let maybe = h.maybe();
    for (&(device, t), values) in &union.points {
        let b = batch_of(t);
        if !maybe.contains(&b) {
            return Err(format!("group: d{device} t={t} given to a member, but batch {b} was refused"));
        }
        if let Some(v) = values.iter().find(|v| **v != value_of(device, t)) {
            return Err(format!("group: d{device} t={t}: given value {v}, written {}", value_of(device, t)));
        }
    }
    for b in h.acked() {
        for device in 0..DEVICES {
            for t in b as i64 * POINTS_PER_BATCH..(b as i64 + 1) * POINTS_PER_BATCH {
                if !union.points.contains_key(&(device, t)) {
                    return Err(format!(
                        "group: batch {b} was acknowledged but d{device} t={t} was given to no member ({} streams)",
                        union.streams
                    ));
                }
            }
        }
    }
    Ok(())
}

/// What the members were given, together.
pub fn union_of(members: &[&Deliveries]) -> Deliveries {
    let mut union = Deliveries::default();
    for m in members {
        union.streams += m.streams;
        for (k, v) in &m.points {
            union.points.entry(*k).or_default().extend(v);
        }
    }
    union
}

/// Whether every acknowledged batch has been delivered (to wait for before checking).
pub fn caught_up(h: &History, d: &Deliveries) -> bool {
    h.acked().into_iter().all(|b| {
        let t = b as i64 * POINTS_PER_BATCH;
        (0..DEVICES).all(|device| d.points.contains_key(&(device, t)))
    })
}
