//! Where a new partition's replicas go: across live, unfenced brokers, leaders spread evenly, replicas of one
//! partition on distinct racks whenever there are enough racks (Kafka's `assignReplicasToBrokers`, simplified).
//!
//! Brokers are taken in id order. Partition `p` is led by broker `(start + p) mod n`, so consecutive partitions
//! rotate the leadership and `start` (the number of partitions already in the cluster) keeps successive topics from
//! all starting on the same broker. Followers are chosen walking on from the leader, preferring a rack not yet used
//! by the partition, then any broker not yet used.

use crate::types::NodeId;

/// One candidate broker with its rack (`broker.rack`), if set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlacementBroker {
    pub broker: NodeId,
    pub rack: Option<String>,
}

/// Replica lists for `partition_count` partitions of `replication_factor` replicas each, the leader first.
/// `brokers` must hold at least `replication_factor` distinct brokers (the controller checks this first).
pub fn place_replicas(
    brokers: &[PlacementBroker],
    partition_count: usize,
    replication_factor: usize,
    start: usize,
) -> Vec<Vec<NodeId>> {
    assert!(replication_factor >= 1 && replication_factor <= brokers.len(), "placement needs enough brokers");
    let mut sorted = brokers.to_vec();
    sorted.sort_by_key(|broker| broker.broker);
    let count = sorted.len();
    (0..partition_count)
        .map(|partition| {
            let leader_index = (start + partition) % count;
            let mut chosen = vec![leader_index];
            while chosen.len() < replication_factor {
                let walk =
                    (1..count).map(|step| (leader_index + step) % count).filter(|i| !chosen.contains(i));
                let racks_used: Vec<&Option<String>> = chosen.iter().map(|&i| &sorted[i].rack).collect();
                let candidates: Vec<usize> = walk.collect();
                let fresh_rack = candidates
                    .iter()
                    .copied()
                    .find(|&i| sorted[i].rack.is_some() && !racks_used.contains(&&sorted[i].rack));
                chosen.push(fresh_rack.unwrap_or(candidates[0]));
            }
            chosen.into_iter().map(|index| sorted[index].broker).collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn brokers(racks: &[Option<&str>]) -> Vec<PlacementBroker> {
        racks
            .iter()
            .enumerate()
            .map(|(id, rack)| PlacementBroker { broker: NodeId(id as i32), rack: rack.map(String::from) })
            .collect()
    }

    // Leaders rotate evenly, replicas are distinct, and `start` shifts the first leader.
    #[test]
    fn leaders_spread_and_replicas_distinct() {
        let placement = place_replicas(&brokers(&[None, None, None]), 12, 3, 0);
        let mut leader_counts = [0; 3];
        for replicas in &placement {
            assert_eq!(replicas.iter().collect::<BTreeSet<_>>().len(), 3);
            leader_counts[replicas[0].0 as usize] += 1;
        }
        assert_eq!(leader_counts, [4, 4, 4]);
        assert_eq!(place_replicas(&brokers(&[None, None, None]), 1, 1, 2), vec![vec![NodeId(2)]]);
    }

    // With racks a, a, b, b, c, c, every partition of three replicas lands on three racks, even when brokers of
    // one rack are adjacent in id order.
    #[test]
    fn rack_aware() {
        let list = brokers(&[Some("a"), Some("a"), Some("b"), Some("b"), Some("c"), Some("c")]);
        for start in 0..6 {
            for replicas in place_replicas(&list, 6, 3, start) {
                let racks: BTreeSet<_> =
                    replicas.iter().map(|node| list[node.0 as usize].rack.clone()).collect();
                assert_eq!(racks.len(), 3, "{replicas:?} repeats a rack");
            }
        }
    }
}
