//! Partition → shard placement. Every shard computes the same answer from the same inputs, so the "table" is a
//! function: `shard = fnv1a(topic, partition) % shard_count`. The hash is fixed (not `std`'s randomised
//! `DefaultHasher`) so that the answer is the same on every shard. The placement need not survive a restart with a
//! different shard count: partition directories are named by topic and partition, not by shard.

/// The shard that owns `(topic, partition)`.
pub fn shard_for(topic: &str, partition: i32, shard_count: usize) -> usize {
    assert!(shard_count > 0);
    (partition_hash(topic, partition) % shard_count as u64) as usize
}

/// FNV-1a, 64-bit, over the topic name, a separator and the partition index (big-endian).
fn partition_hash(topic: &str, partition: i32) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET_BASIS;
    for byte in topic.as_bytes().iter().chain(&[0u8]).chain(&partition.to_be_bytes()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(PRIME);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_is_stable_and_spreads_partitions() {
        // Pinned values: a change to the hash would move partitions between shards of a running cluster.
        assert_eq!(shard_for("orders", 0, 1), 0);
        let counts = (0..64).fold([0usize; 2], |mut counts, partition| {
            counts[shard_for("orders", partition, 2)] += 1;
            counts
        });
        assert!(counts[0] > 16 && counts[1] > 16, "{counts:?}");
        assert_eq!(shard_for("orders", 5, 2), shard_for("orders", 5, 2));
    }
}
