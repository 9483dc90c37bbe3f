//! The simulated controller: the metadata image itself, each batch applied as soon as it is planned. It stands in
//! for the quorum, which `quorum/simulation.rs` tests on its own: what matters here is that it is *correct* — it
//! elects leaders from the ISR only (`fence_records`), bumps leader epochs (the image refuses anything else),
//! checks AlterPartition's epochs (`plan_alter_partition`), fences expired brokers one at a time, and treats a
//! restarted broker (a new incarnation) as KRaft does: fenced and out of every ISR it can leave, then registered
//! again with a new broker epoch. It never crashes; it can be cut off.
//!
//! With `LeaderMoves` it also moves leaders and replicas on its own, as an operator and the active controller's
//! timers would: the preferred-leader rebalance (`rebalance_leaders`) and random reassignments and cancellations
//! (`plan_alter_reassignments`), completed after every applied batch (`complete_reassignments_after`), so the
//! checker's invariants are seen to hold across those leader changes too.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::Message;
use crate::metadata::{
    complete_reassignments, controller::fence_records, plan_alter_reassignments, rebalance_leaders,
    BrokerHeartbeats, BrokerRegistration, ElectionPolicy, Heartbeat, LeaderRebalanceConfig, MetadataImage,
    MetadataRecord, PartitionChange, TopicId,
};
use crate::partition::{plan_alter_partition, AlterPartitionReplies, AlterPartitionRequest, BrokenRule};
use crate::sim::{Outbox, Prng};
use crate::types::NodeId;

pub struct SimController {
    pub(super) image: Arc<MetadataImage>,
    heartbeats: BrokerHeartbeats,
    topic_id: TopicId,
    broker_count: usize,
    broken_rule: Option<BrokenRule>,
    replies: AlterPartitionReplies,
    /// Per broker, the newest process generation registered: heartbeats of older ones are ignored.
    generations: BTreeMap<NodeId, u64>,
    /// Batches refused by the image: a correct controller plans none.
    pub(super) refused_count: u64,
    pub(super) shrink_count: u64,
    pub(super) expand_count: u64,
    /// Leader and replica moves made on ticks, while `Some`; the harness ends them before the liveness phase.
    pub(super) leader_moves: Option<LeaderMoves>,
    pub(super) move_counts: MoveCounts,
}

/// How often, per controller tick, the simulated controller rebalances leaders or reassigns a partition.
pub struct LeaderMoves {
    pub prng: Prng,
    pub rebalance_probability: f64,
    pub reassignment_probability: f64,
}

/// What the leader moves did, for the run report.
#[derive(Clone, Copy, Debug, Default)]
pub struct MoveCounts {
    pub preferred_election_count: u64,
    pub reassignment_count: u64,
    pub cancellation_count: u64,
    pub completion_count: u64,
}

impl SimController {
    pub fn new(
        image: MetadataImage,
        topic_id: TopicId,
        session_timeout: Duration,
        broken_rule: Option<BrokenRule>,
    ) -> SimController {
        let broker_count = image.brokers().len();
        SimController {
            image: Arc::new(image),
            heartbeats: BrokerHeartbeats::new(session_timeout, Duration::ZERO),
            topic_id,
            broker_count,
            broken_rule,
            generations: BTreeMap::new(),
            replies: AlterPartitionReplies::default(),
            refused_count: 0,
            shrink_count: 0,
            expand_count: 0,
            leader_moves: None,
            move_counts: MoveCounts::default(),
        }
    }

    pub fn on_heartbeat(
        &mut self,
        now: Duration,
        broker: NodeId,
        (incarnation, generation): (u128, u64),
        metadata_offset: u64,
        out: &mut Outbox<Message>,
    ) {
        let Some(registered) = self.image.broker(broker).cloned() else { return };
        let known = self.generations.entry(broker).or_insert(0);
        if generation < *known {
            return;
        }
        if registered.registration.incarnation != incarnation {
            *known = generation;
            let mut records = if registered.fenced { Vec::new() } else { fence_records(&self.image, broker) };
            records.push(MetadataRecord::RegisterBroker(BrokerRegistration {
                incarnation,
                ..registered.registration
            }));
            self.apply_and_complete(records, out);
        } else {
            let heartbeat =
                Heartbeat { broker, broker_epoch: registered.epoch, metadata_offset, want_fence: false };
            if let Ok(records) = self.heartbeats.heartbeat(&self.image, now, &heartbeat) {
                self.apply_and_complete(records, out);
            }
        }
        out.send(broker, Message::Metadata(self.image.clone()));
    }

    pub fn on_alter_partition(
        &mut self,
        from: NodeId,
        partition: i32,
        request: &AlterPartitionRequest,
        out: &mut Outbox<Message>,
    ) {
        if let Some(result) = self.replies.replay(self.topic_id, partition, request) {
            let request = request.clone();
            out.send(from, Message::AlterPartitionAnswer { partition, request, result });
            return;
        }
        let result = match plan_alter_partition(&self.image, self.topic_id, partition, request) {
            Ok(records) => {
                let before = self.partition(partition).isr.len();
                self.apply(records, out);
                let after = self.partition(partition);
                self.shrink_count += u64::from(after.isr.len() < before);
                self.expand_count += u64::from(after.isr.len() > before);
                Ok(after)
            }
            Err(error) => Err(error),
        };
        self.replies.record(self.topic_id, partition, request, &result);
        let request = request.clone();
        out.send(from, Message::AlterPartitionAnswer { partition, request, result });
        // After the answer, as the active controller would after applying the expansion: a reassignment whose
        // target is now in the ISR completes.
        self.apply_and_complete(Vec::new(), out);
    }

    pub fn on_tick(&mut self, now: Duration, out: &mut Outbox<Message>) {
        let records = self.heartbeats.expire(&self.image, now);
        self.apply_and_complete(records, out);
        self.move_leaders(out);
    }

    /// With `leader_moves`: maybe a preferred-leader rebalance, maybe a reassignment of a random partition to
    /// three random brokers, or the cancellation of a running one.
    fn move_leaders(&mut self, out: &mut Outbox<Message>) {
        let Some(topic) = self.image.topic(self.topic_id) else { return };
        let (topic_name, partition_count) = (topic.name.clone(), topic.partitions.len());
        let broker_count = self.broker_count;
        let Some(moves) = self.leader_moves.as_mut() else { return };
        let rebalance = moves.prng.chance(moves.rebalance_probability);
        let reassign = moves.prng.chance(moves.reassignment_probability);
        let partition = moves.prng.below(partition_count as u64) as i32;
        let mut brokers: Vec<NodeId> = (0..broker_count as i32).map(NodeId).collect();
        let mut target = Vec::new();
        while target.len() < 3.min(broker_count) {
            target.push(brokers.remove(moves.prng.below(brokers.len() as u64) as usize));
        }
        let cancel = moves.prng.chance(0.3) && self.partition(partition).is_reassigning();
        if rebalance {
            let records = rebalance_leaders(&self.image, &LeaderRebalanceConfig::default());
            self.move_counts.preferred_election_count += records.len() as u64;
            self.apply_and_complete(records, out);
        }
        if reassign {
            let key = (topic_name, partition);
            let entry = if cancel { (key, None) } else { (key, Some(target)) };
            let plan = plan_alter_reassignments(&self.image, ElectionPolicy::default(), &[entry]);
            let counter = if cancel {
                &mut self.move_counts.cancellation_count
            } else {
                &mut self.move_counts.reassignment_count
            };
            *counter += plan.records.len() as u64;
            self.apply_and_complete(plan.records, out);
        }
    }

    /// Applies `records` (if any), then the completions of the reassignments whose target is now in the ISR.
    fn apply_and_complete(&mut self, records: Vec<MetadataRecord>, out: &mut Outbox<Message>) {
        self.apply(records, out);
        let completions = complete_reassignments(&self.image);
        self.move_counts.completion_count += completions.len() as u64;
        self.apply(completions, out);
    }

    fn partition(&self, partition: i32) -> crate::metadata::PartitionImage {
        let topic = self.image.topic(self.topic_id);
        let found = topic.and_then(|topic| topic.partitions.get(partition as usize)).cloned();
        found.unwrap_or_else(|| panic!("the simulated topic has no partition {partition}"))
    }

    /// Applies one batch and pushes the new image to every broker (KRaft brokers fetch it; pushing is quicker to
    /// simulate and a cut link still keeps it from a broker).
    fn apply(&mut self, records: Vec<MetadataRecord>, out: &mut Outbox<Message>) {
        if records.is_empty() {
            return;
        }
        let records = match self.broken_rule {
            Some(BrokenRule::ElectOutsideIsr) => elect_outside_isr(&self.image, records),
            _ => records,
        };
        let index = self.image.applied_index() + 1;
        match self.image.apply_batch(index, &records) {
            Ok(image) => self.image = Arc::new(image),
            Err(_) => {
                self.refused_count += 1;
                return;
            }
        }
        for broker in 0..self.broker_count as i32 {
            out.send(NodeId(broker), Message::Metadata(self.image.clone()));
        }
    }
}

/// The broken rule: every leader change elects the first live replica *outside* the new ISR if there is one (an
/// unclean election that adds it to the ISR), instead of a member of the ISR.
fn elect_outside_isr(image: &MetadataImage, records: Vec<MetadataRecord>) -> Vec<MetadataRecord> {
    let fenced: Vec<NodeId> = records
        .iter()
        .filter_map(|record| match record {
            MetadataRecord::FenceBroker { broker, .. } => Some(*broker),
            _ => None,
        })
        .collect();
    records
        .into_iter()
        .map(|record| match record {
            MetadataRecord::PartitionChange(change) => {
                MetadataRecord::PartitionChange(unclean(image, change, &fenced))
            }
            other => other,
        })
        .collect()
}

fn unclean(image: &MetadataImage, change: PartitionChange, fenced: &[NodeId]) -> PartitionChange {
    let Some(current) =
        image.topic(change.topic_id).and_then(|topic| topic.partitions.get(change.partition as usize))
    else {
        return change;
    };
    if change.leader == current.leader {
        return change;
    }
    let live =
        |node: &&NodeId| !fenced.contains(node) && image.broker(**node).is_some_and(|broker| !broker.fenced);
    match current.replicas.iter().filter(live).find(|node| !change.isr.contains(node)) {
        Some(&outsider) => {
            let mut isr = change.isr.clone();
            isr.retain(|node| !fenced.contains(node));
            isr.push(outsider);
            PartitionChange { leader: outsider, isr, ..change }
        }
        None => change,
    }
}
