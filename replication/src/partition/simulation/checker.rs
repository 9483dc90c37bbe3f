//! The invariants of issue 16, checked after every step:
//! - at most one leader per partition per leader epoch;
//! - HW ≤ LEO on every replica;
//! - the logs of ISR members agree below the HW (the controller's ISR, against the leader it names);
//! - every acknowledged batch is present, in order, at its acknowledged offset, on every later leader;
//! - no duplicates: a sequence is acknowledged at one offset only, and sits at most once in the committed log.
//!
//! Besides, everything below any replica's HW must equal one global committed log (the leaders' prefixes below
//! their HW, remembered as they rise): committed data never changes. Each replica is checked from where the last
//! check stopped; only a truncation or a crash (the log end falling below that point) moves it back.

use std::collections::{BTreeMap, BTreeSet};

use super::{payload, SimNode};
use crate::partition::Role;
use crate::seams::ReplicaLog;
use crate::sim::SimBatch;
use crate::types::{LeaderEpoch, NodeId};
use sluice_storage::Offset;

#[derive(Default)]
pub struct ReplicationChecker {
    leaders: BTreeMap<(usize, LeaderEpoch), NodeId>,
    /// Per partition: the committed log, contiguous from offset 0, and the payloads in it.
    committed: Vec<Vec<SimBatch>>,
    committed_payloads: Vec<BTreeSet<u64>>,
    /// Per (node, partition): batches below this count are checked against `committed`.
    checked_batch_count: BTreeMap<(usize, usize), usize>,
    /// Per partition and sequence: the offset it was acknowledged at and the highest epoch that acknowledged it.
    acknowledged: Vec<BTreeMap<u32, (Offset, LeaderEpoch)>>,
    ack_cursor: usize,
    /// Per (node, partition): (leader epoch, acknowledgements already found in that leader's log).
    leader_acks_checked: BTreeMap<(usize, usize), (LeaderEpoch, usize)>,
}

impl ReplicationChecker {
    pub fn new(partition_count: usize) -> ReplicationChecker {
        ReplicationChecker {
            committed: vec![Vec::new(); partition_count],
            committed_payloads: vec![BTreeSet::new(); partition_count],
            acknowledged: vec![BTreeMap::new(); partition_count],
            ..ReplicationChecker::default()
        }
    }

    pub fn leader_epoch_count(&self) -> usize {
        self.leaders.len()
    }

    pub fn committed_batch_count(&self) -> usize {
        self.committed.iter().map(Vec::len).sum()
    }

    pub fn check_nodes(&mut self, nodes: &[SimNode]) -> Result<(), String> {
        self.read_acks(nodes)?;
        for (node_index, node) in nodes.iter().enumerate() {
            let SimNode::Broker(broker) = node else { continue };
            if !broker.running {
                continue;
            }
            for (partition_index, partition) in broker.partitions.iter().enumerate() {
                let Some(replica) = &partition.replica else { continue };
                let (log_end, high_watermark) = (partition.log.log_end_offset(), replica.high_watermark());
                let id = broker.id;
                if high_watermark > log_end {
                    return Err(format!(
                        "{id} partition {partition_index}: high watermark {high_watermark} past its log end {log_end}"
                    ));
                }
                let leading = matches!(replica.role(), Role::Leader(_));
                if leading {
                    self.check_leader(id, partition_index, replica.leader_epoch())?;
                }
                let batches = partition.log.batches();
                self.check_committed(node_index, partition_index, batches, high_watermark, leading)
                    .map_err(|error| format!("{id} partition {partition_index}: {error}"))?;
                if leading {
                    self.check_acks_on_leader(node_index, partition_index, replica.leader_epoch(), batches)
                        .map_err(|error| format!("{id} leading partition {partition_index}: {error}"))?;
                }
            }
        }
        self.check_isr_agreement(nodes)
    }

    fn check_leader(&mut self, id: NodeId, partition: usize, epoch: LeaderEpoch) -> Result<(), String> {
        let leader = *self.leaders.entry((partition, epoch)).or_insert(id);
        if leader != id {
            return Err(format!("{id} and {leader} both lead partition {partition} in leader epoch {epoch}"));
        }
        Ok(())
    }

    /// The replica's batches below its high watermark are the committed log's; a leader's extend it.
    fn check_committed(
        &mut self,
        node: usize,
        partition: usize,
        batches: &[SimBatch],
        high_watermark: Offset,
        leading: bool,
    ) -> Result<(), String> {
        let below = batches.partition_point(|batch| batch.end_offset() <= high_watermark);
        let checked = self.checked_batch_count.entry((node, partition)).or_insert(0);
        *checked = (*checked).min(batches.len());
        let committed = &mut self.committed[partition];
        for (index, batch) in batches.iter().enumerate().take(below).skip(*checked) {
            match committed.get(index) {
                Some(expected) if expected == batch => {}
                Some(expected) => {
                    return Err(format!(
                        "batch {batch:?} below the high watermark differs from committed {expected:?}"
                    ))
                }
                None if leading => {
                    if !self.committed_payloads[partition].insert(batch.payload) {
                        return Err(format!("batch {batch:?} duplicates a committed batch"));
                    }
                    committed.push(*batch);
                }
                None => {
                    return Err(format!(
                        "batch {batch:?} is below its high watermark but no leader committed it"
                    ))
                }
            }
        }
        *checked = (*checked).max(below);
        Ok(())
    }

    fn read_acks(&mut self, nodes: &[SimNode]) -> Result<(), String> {
        let Some(SimNode::Client(client)) = nodes.last() else { return Ok(()) };
        for ack in &client.acks[self.ack_cursor..] {
            let partition = ack.partition as usize;
            let acknowledged = &mut self.acknowledged[partition];
            let entry = acknowledged.entry(ack.sequence).or_insert((ack.base_offset, ack.leader_epoch));
            if entry.0 != ack.base_offset {
                return Err(format!(
                    "partition {partition} sequence {} acknowledged at offsets {} and {}",
                    ack.sequence, entry.0, ack.base_offset
                ));
            }
            entry.1 = entry.1.max(ack.leader_epoch);
            let before = acknowledged.range(..ack.sequence).next_back();
            let after = acknowledged.range(ack.sequence + 1..).next();
            let ordered = before.is_none_or(|(_, earlier)| earlier.0 < ack.base_offset)
                && after.is_none_or(|(_, later)| later.0 > ack.base_offset);
            if !ordered {
                return Err(format!(
                    "partition {partition} sequence {} acknowledged out of order",
                    ack.sequence
                ));
            }
        }
        self.ack_cursor = client.acks.len();
        Ok(())
    }

    /// Every acknowledgement made in this leader's epoch or before is in its log at its offset.
    fn check_acks_on_leader(
        &mut self,
        node: usize,
        partition: usize,
        epoch: LeaderEpoch,
        batches: &[SimBatch],
    ) -> Result<(), String> {
        let checked = self.leader_acks_checked.entry((node, partition)).or_insert((epoch, 0));
        if checked.0 != epoch {
            *checked = (epoch, 0);
        }
        let acknowledged = &self.acknowledged[partition];
        if acknowledged.len() == checked.1 {
            return Ok(());
        }
        for (&sequence, &(offset, ack_epoch)) in acknowledged {
            if ack_epoch > epoch {
                continue;
            }
            let position = batches.partition_point(|batch| batch.base_offset < offset);
            let expected = payload::encode(partition as u32, sequence);
            if batches
                .get(position)
                .is_none_or(|batch| batch.base_offset != offset || batch.payload != expected)
            {
                return Err(format!(
                    "sequence {sequence}, acknowledged at offset {offset} in epoch {ack_epoch}, is missing in epoch {epoch}"
                ));
            }
        }
        checked.1 = acknowledged.len();
        Ok(())
    }

    /// The controller's ISR members agree with the leader it names below that leader's high watermark.
    fn check_isr_agreement(&self, nodes: &[SimNode]) -> Result<(), String> {
        let Some(controller) = nodes.iter().find_map(|node| match node {
            SimNode::Controller(controller) => Some(controller),
            _ => None,
        }) else {
            return Ok(());
        };
        let Some(topic) = controller.image.topics().next() else { return Ok(()) };
        for (index, partition) in topic.partitions.iter().enumerate() {
            let Some((leader_log, high_watermark)) =
                leading_log(nodes, partition.leader, index, partition.leader_epoch)
            else {
                continue;
            };
            for member in partition.isr.iter().filter(|member| **member != partition.leader) {
                let Some(SimNode::Broker(broker)) = member.index(nodes.len()).map(|at| &nodes[at]) else {
                    continue;
                };
                if !broker.running {
                    continue;
                }
                let log = broker.partitions[index].log.batches();
                let bound = high_watermark.min(broker.partitions[index].log.log_end_offset());
                let count = log.partition_point(|batch| batch.end_offset() <= bound);
                let leader_count = leader_log.partition_point(|batch| batch.end_offset() <= bound);
                if count != leader_count || log[..count] != leader_log[..count] {
                    return Err(format!(
                        "partition {index}: ISR member {member}'s log differs from leader {}'s below {bound}",
                        partition.leader
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The log and high watermark of `leader` if it runs and leads `partition` in `epoch`.
fn leading_log(
    nodes: &[SimNode],
    leader: NodeId,
    partition: usize,
    epoch: LeaderEpoch,
) -> Option<(&[SimBatch], Offset)> {
    let SimNode::Broker(broker) = &nodes[leader.index(nodes.len())?] else { return None };
    let sim_partition = &broker.partitions[partition];
    let replica = sim_partition.replica.as_ref()?;
    let leads = broker.running && replica.is_leader() && replica.leader_epoch() == epoch;
    leads.then(|| (sim_partition.log.batches(), replica.high_watermark()))
}
