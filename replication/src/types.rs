//! Vocabulary types of replication: who (a node, a shard), which log (a topic partition) and which reign (a leader
//! epoch). Each is a newtype so that a node id can never be passed where an epoch is expected. Kafka's wire protocol
//! encodes "none" as -1 for node ids and epochs; those values are named constants here, never bare literals.
//!
//! `Offset` is not defined here: it belongs to the log and is defined once, in `sluice-storage`. It is re-exported
//! from this crate's root so that users of replication name every vocabulary type through one path.

use sluice_storage::Invariant;
use std::fmt;
use std::sync::Arc;

/// A broker or controller in the cluster, as Kafka's `broker.id` / `node.id` (an int32 on the wire).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub i32);

impl NodeId {
    /// Kafka's "no node": the leader field of a partition without a leader, a coordinator not yet known.
    pub const NONE: NodeId = NodeId(-1);

    /// The position of this node in a dense table of `node_count` nodes numbered from 0, as the simulator and the
    /// single-node broker number them. None for `NodeId::NONE` or an id outside the table.
    pub fn index(self, node_count: usize) -> Option<usize> {
        usize::try_from(self.0).ok().filter(|&index| index < node_count)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "node {}", self.0)
    }
}

/// A core of one broker: one pinned executor that owns some partition replicas (see the broker's `ShardTable`).
/// Shards are numbered densely from 0, so the id is also an index into per-shard tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShardId(pub usize);

impl fmt::Display for ShardId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(formatter)
    }
}

/// The reign of one leader of one partition (KIP-101). Every batch is stamped with the epoch of the leader that
/// appended it; followers truncate by epoch, never by high watermark, after a leader change. Epochs of one partition
/// only grow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LeaderEpoch(pub i32);

impl LeaderEpoch {
    /// Kafka's `RecordBatch.NO_PARTITION_LEADER_EPOCH` and the "unknown epoch" of Fetch and ListOffsets requests
    /// from clients that predate KIP-320.
    pub const NONE: LeaderEpoch = LeaderEpoch(-1);

    /// The epoch a new leader takes. Panics on overflow: 2^31 leader changes of one partition would take 68 years
    /// at one per second, so reaching it means the epoch was corrupted, which must not be papered over.
    pub fn next(self) -> LeaderEpoch {
        assert!(self.0 >= LeaderEpoch::NONE.0, "leader epoch {} is below {}", self.0, LeaderEpoch::NONE.0);
        LeaderEpoch(self.0.checked_add(1).invariant("leader epoch overflowed i32"))
    }
}

impl fmt::Display for LeaderEpoch {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(formatter)
    }
}

/// One partition of one topic: the unit of replication. The topic name is shared (`Arc<str>`) because the same
/// name sits in every request, metadata image and replica of the topic; clones cost a reference count, not a copy.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartition {
    pub topic: Arc<str>,
    /// Kafka's partition index, an int32 on the wire; 0-based and never negative in a valid partition.
    pub partition: i32,
}

impl TopicPartition {
    pub fn new(topic: &str, partition: i32) -> TopicPartition {
        TopicPartition { topic: Arc::from(topic), partition }
    }
}

/// Kafka's own spelling (`TopicPartition.toString`): `topic-partition`, as in log directory names and tool output.
impl fmt::Display for TopicPartition {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}-{}", self.topic, self.partition)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Pins the spellings that show up in logs and errors, and Kafka's -1 sentinels.
    #[test]
    fn display_and_sentinels() {
        let check = |value: &dyn fmt::Display, expected: &str| assert_eq!(value.to_string(), expected);
        check(&NodeId(3), "node 3");
        check(&NodeId::NONE, "node -1");
        check(&ShardId(1), "1");
        check(&LeaderEpoch(7), "7");
        check(&LeaderEpoch::NONE, "-1");
        check(&TopicPartition::new("orders", 12), "orders-12");
        assert_eq!(NodeId::NONE.0, -1);
        assert_eq!(LeaderEpoch::NONE.0, -1);
    }

    // Epochs order numerically, the first real epoch follows NONE, and a node id maps to a table index only in range.
    #[test]
    fn epoch_order_and_node_index() {
        assert_eq!(LeaderEpoch::NONE.next(), LeaderEpoch(0));
        assert!(LeaderEpoch(2) < LeaderEpoch(10));
        assert_eq!(NodeId(2).index(3), Some(2));
        assert_eq!(NodeId(3).index(3), None);
        assert_eq!(NodeId::NONE.index(3), None);
    }

    // Topic partitions order by topic name, then by partition number, as Kafka tools list them.
    #[test]
    fn topic_partition_order() {
        let mut partitions =
            [TopicPartition::new("b", 0), TopicPartition::new("a", 10), TopicPartition::new("a", 2)];
        partitions.sort();
        let names: Vec<String> = partitions.iter().map(|partition| partition.to_string()).collect();
        assert_eq!(names, ["a-2", "a-10", "b-0"]);
    }
}
