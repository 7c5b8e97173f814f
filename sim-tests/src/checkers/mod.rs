//! Checkers: each takes the history (and, where needed, the cluster's final state) and returns
//! the first violation it finds. A checker that finds one fails the seed.
//!
//! | checker | property |
//! |---|---|
//! | `durability` | every acknowledged point is stored after healing |
//! | `model` | stored points equal the reference model: only acknowledged or unknown batches, exact values; aggregates agree with raw points |
//! | `read_after_ack` | a read that started after a write was acknowledged sees it |
//! | `convergence` | all replicas of a shard reach the same applied index and the same digest |
//! | `liveness` | once faults stop, writes and reads succeed within a bound of simulated time |
//! | `delivery` | a subscriber gets each shard's entries once and in order, every acknowledged point, nothing refused |

pub mod convergence;
pub mod delivery;
pub mod durability;
pub mod liveness;
pub mod model;
pub mod read_after_ack;

use std::collections::BTreeMap;

use crate::workload::{read_device, DEVICES};

/// Every device's points as read through `addr` after healing: device → (t, value).
pub type FinalState = BTreeMap<i64, Vec<(i64, i64)>>;

/// Reads every device's points through `addr`.
pub async fn read_final(addr: &str) -> Result<FinalState, String> {
    let mut out = BTreeMap::new();
    for d in 0..DEVICES {
        out.insert(d, read_device(addr, d).await?);
    }
    Ok(out)
}
