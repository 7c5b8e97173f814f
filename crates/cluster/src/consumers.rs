//! Consumer groups: named, durable subscriptions whose positions are committed through the
//! meta group, so that every node knows where a group is and a member that takes a shard over
//! continues from the last position committed for it.
//!
//! Only positions are replicated. Who reads which shard is soft state of the meta leader
//! (`node::consumers`), rebuilt from the members' heartbeats after a change of leader: losing
//! it costs a rebalance, never a position.
//!
//! Pure: no I/O, no clock. `apply` is deterministic and changes nothing when it refuses.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Most consumer groups in a cluster: each costs every node meta-state memory and every meta
/// apply a rewrite of its positions.
pub const CONSUMER_GROUPS_MAX: usize = 1_000;
/// Most consumer groups of one tenant.
pub const CONSUMER_GROUPS_PER_TENANT_MAX: usize = 100;
/// Longest group name, in bytes.
pub const GROUP_NAME_BYTES_MAX: usize = 128;

/// A group's committed place in the change feed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerGroup {
    /// Per shard, the last log index the group has processed: it resumes right after it.
    pub positions: Vec<u64>,
    /// Commits and resets applied since the group was created.
    pub commits: u64,
}

/// A change to the consumer groups, replicated by the meta group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConsumerCommand {
    /// Creates a group at `positions` (one per shard); an existing group is left as it is, so
    /// two members that open a new group at once agree on the first one's start.
    Create {
        /// The tenant whose feed the group reads.
        tenant: String,
        /// The group's name.
        group: String,
        /// Where it starts, per shard.
        positions: Vec<u64>,
    },
    /// Sets the positions of some shards: a member's commit of what it has processed.
    Commit {
        /// The tenant.
        tenant: String,
        /// The group.
        group: String,
        /// (shard, last processed index) pairs.
        positions: Vec<(u32, u64)>,
    },
    /// Sets every position: an operator's reset (to now, to the oldest kept, to a cursor).
    Reset {
        /// The tenant.
        tenant: String,
        /// The group.
        group: String,
        /// The new positions, one per shard.
        positions: Vec<u64>,
    },
    /// Removes a group and its positions.
    Delete {
        /// The tenant.
        tenant: String,
        /// The group.
        group: String,
    },
}

/// Checks a group name: 1 to 128 bytes of letters, digits, `_`, `-` and `.`, so it can stand
/// in URLs, metric labels and command lines without quoting.
pub fn check_group_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > GROUP_NAME_BYTES_MAX {
        return Err(format!("a consumer group name is 1 to {GROUP_NAME_BYTES_MAX} bytes, got {}", name.len()));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))) {
        return Err(format!("a consumer group name holds letters, digits, '_', '-' and '.' only, not {c:?}"));
    }
    Ok(())
}

/// Every consumer group of the cluster, by tenant and name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerGroups {
    groups: BTreeMap<String, BTreeMap<String, ConsumerGroup>>,
}

impl ConsumerGroups {
    /// One group.
    pub fn get(&self, tenant: &str, group: &str) -> Option<&ConsumerGroup> {
        self.groups.get(tenant)?.get(group)
    }

    /// The groups of a tenant, by name.
    pub fn of_tenant(&self, tenant: &str) -> Vec<(String, ConsumerGroup)> {
        self.groups.get(tenant).map(|g| g.iter().map(|(n, g)| (n.clone(), g.clone())).collect()).unwrap_or_default()
    }

    /// Every group: (tenant, name, group).
    pub fn all(&self) -> impl Iterator<Item = (&str, &str, &ConsumerGroup)> {
        self.groups.iter().flat_map(|(t, g)| g.iter().map(move |(n, g)| (t.as_str(), n.as_str(), g)))
    }

    fn count(&self) -> usize {
        self.groups.values().map(BTreeMap::len).sum()
    }

    /// Applies a command on a cluster of `shard_count` shards.
    pub fn apply(&mut self, cmd: &ConsumerCommand, shard_count: u32) -> Result<(), String> {
        let whole = |positions: &Vec<u64>| {
            if positions.len() != shard_count as usize {
                return Err(format!("{} positions given for {shard_count} shards", positions.len()));
            }
            Ok(())
        };
        match cmd {
            ConsumerCommand::Create { tenant, group, positions } => {
                check_group_name(group)?;
                whole(positions)?;
                if self.get(tenant, group).is_some() {
                    return Ok(());
                }
                if self.count() >= CONSUMER_GROUPS_MAX {
                    return Err(format!("the cluster holds {CONSUMER_GROUPS_MAX} consumer groups, the most it may"));
                }
                let of_tenant = self.groups.entry(tenant.clone()).or_default();
                if of_tenant.len() >= CONSUMER_GROUPS_PER_TENANT_MAX {
                    return Err(format!(
                        "tenant {tenant:?} has {CONSUMER_GROUPS_PER_TENANT_MAX} consumer groups, the most it may"
                    ));
                }
                of_tenant.insert(group.clone(), ConsumerGroup { positions: positions.clone(), commits: 0 });
            }
            ConsumerCommand::Commit { tenant, group, positions } => {
                if let Some((shard, _)) = positions.iter().find(|(s, _)| *s >= shard_count) {
                    return Err(format!("shard {shard} does not exist ({shard_count} shards)"));
                }
                let g = self.get_mut(tenant, group)?;
                for &(shard, index) in positions {
                    g.positions[shard as usize] = index;
                }
                g.commits += 1;
            }
            ConsumerCommand::Reset { tenant, group, positions } => {
                whole(positions)?;
                let g = self.get_mut(tenant, group)?;
                g.positions.clone_from(positions);
                g.commits += 1;
            }
            ConsumerCommand::Delete { tenant, group } => {
                self.get_mut(tenant, group)?;
                let of_tenant = self.groups.get_mut(tenant).expect("found above");
                of_tenant.remove(group);
                if of_tenant.is_empty() {
                    self.groups.remove(tenant);
                }
            }
        }
        Ok(())
    }

    fn get_mut(&mut self, tenant: &str, group: &str) -> Result<&mut ConsumerGroup, String> {
        self.groups
            .get_mut(tenant)
            .and_then(|g| g.get_mut(group))
            .ok_or_else(|| format!("tenant {tenant:?} has no consumer group {group:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(group: &str, positions: Vec<u64>) -> ConsumerCommand {
        ConsumerCommand::Create { tenant: "t".into(), group: group.into(), positions }
    }

    #[test]
    fn a_group_is_created_once_and_moves_only_by_commit_or_reset() {
        let mut g = ConsumerGroups::default();
        g.apply(&create("alerts", vec![5, 7]), 2).unwrap();
        // A second create (another member opening the group at once) changes nothing.
        g.apply(&create("alerts", vec![9, 9]), 2).unwrap();
        assert_eq!(g.get("t", "alerts").unwrap().positions, vec![5, 7]);
        let commit = |positions| ConsumerCommand::Commit { tenant: "t".into(), group: "alerts".into(), positions };
        g.apply(&commit(vec![(1, 12)]), 2).unwrap();
        assert_eq!(g.get("t", "alerts").unwrap(), &ConsumerGroup { positions: vec![5, 12], commits: 1 });
        let before = g.clone();
        assert!(g.apply(&commit(vec![(0, 1), (2, 1)]), 2).unwrap_err().contains("shard 2"));
        let reset = ConsumerCommand::Reset { tenant: "t".into(), group: "alerts".into(), positions: vec![1] };
        assert!(g.apply(&reset, 2).unwrap_err().contains("1 positions given for 2 shards"));
        assert_eq!(g, before, "a refused command changed something");
        let reset = ConsumerCommand::Reset { tenant: "t".into(), group: "alerts".into(), positions: vec![0, 0] };
        g.apply(&reset, 2).unwrap();
        assert_eq!(g.get("t", "alerts").unwrap().positions, vec![0, 0]);
        g.apply(&ConsumerCommand::Delete { tenant: "t".into(), group: "alerts".into() }, 2).unwrap();
        assert_eq!(g, ConsumerGroups::default());
        assert!(g.apply(&commit(vec![(0, 1)]), 2).unwrap_err().contains("no consumer group"));
    }

    #[test]
    fn names_and_counts_are_bounded() {
        for bad in ["", "a b", "ünicode", "x/y", &"n".repeat(GROUP_NAME_BYTES_MAX + 1)] {
            assert!(check_group_name(bad).is_err(), "{bad:?} accepted");
        }
        check_group_name("alerts.eu-west_2").unwrap();
        let mut g = ConsumerGroups::default();
        for i in 0..CONSUMER_GROUPS_PER_TENANT_MAX {
            g.apply(&create(&format!("g{i}"), vec![0]), 1).unwrap();
        }
        assert!(g.apply(&create("one-more", vec![0]), 1).unwrap_err().contains("the most it may"));
        assert!(g.get("t", "one-more").is_none());
    }
}
