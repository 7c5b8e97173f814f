//! The consistent-hash ring: the 64-bit xxh3 hash space cut into equal hash-range shards.
//!
//! Device → shard is a pure function of (tenant, device key, shard count), so every node and
//! client computes the same placement without asking anyone.
//!
//! Invariant: `ring` does no I/O.

use crate::ShardId;

/// The ring of a cluster (shard count fixed at bootstrap).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ring {
    shard_count: u32,
}

impl Ring {
    /// A ring of `shard_count` shards (at least one).
    pub fn new(shard_count: u32) -> Self {
        assert!(shard_count > 0, "a ring needs at least one shard");
        Ring { shard_count }
    }

    /// Number of shards.
    pub fn shard_count(&self) -> u32 {
        self.shard_count
    }

    /// Hash of a device within a tenant (see `hotlake_proto::routing`).
    pub fn hash(tenant: &str, device: &str) -> u64 {
        hotlake_proto::routing::device_hash(tenant, device)
    }

    /// The shard owning a hash: shards own equal, contiguous ranges of the hash space.
    pub fn shard_of_hash(&self, hash: u64) -> ShardId {
        ShardId(hotlake_proto::routing::shard_of_hash(hash, self.shard_count))
    }

    /// The shard owning a device.
    pub fn shard_of(&self, tenant: &str, device: &str) -> ShardId {
        self.shard_of_hash(Self::hash(tenant, device))
    }

    /// The hash range `[start, end]` (inclusive) a shard owns.
    pub fn range(&self, shard: ShardId) -> (u64, u64) {
        let n = self.shard_count as u128;
        let start = ((shard.0 as u128) << 64).div_ceil(n);
        let end = (((shard.0 as u128 + 1) << 64).div_ceil(n)) - 1;
        (start as u64, end as u64)
    }

    /// Every shard id.
    pub fn shards(&self) -> impl Iterator<Item = ShardId> {
        (0..self.shard_count).map(ShardId)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_tile_the_hash_space_and_agree_with_shard_of_hash() {
        for n in [1u32, 3, 64, 1000] {
            let ring = Ring::new(n);
            let mut next = 0u64;
            for s in ring.shards() {
                let (a, b) = ring.range(s);
                assert_eq!(a, next, "shard {s} of {n} starts where the previous ended");
                assert_eq!(ring.shard_of_hash(a), s);
                assert_eq!(ring.shard_of_hash(b), s);
                next = b.wrapping_add(1);
            }
            assert_eq!(next, 0, "the last range ends at u64::MAX");
        }
    }

    #[test]
    fn devices_spread_evenly_over_shards() {
        let ring = Ring::new(64);
        let mut counts = vec![0u32; 64];
        for i in 0..64_000 {
            counts[ring.shard_of("t", &format!("device-{i}")).0 as usize] += 1;
        }
        let (min, max) = (*counts.iter().min().unwrap(), *counts.iter().max().unwrap());
        assert!(min > 800 && max < 1200, "min {min} max {max}");
    }

    #[test]
    fn tenant_is_part_of_the_hash() {
        assert_ne!(Ring::hash("ab", "c"), Ring::hash("a", "bc"));
    }
}
