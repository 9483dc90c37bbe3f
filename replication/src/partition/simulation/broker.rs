//! A simulated broker: per partition a `SimLog` (written and durable images), its `EpochHistory` and the
//! `PartitionReplica` core, driven by metadata pushed from the controller, Fetch between brokers, and Produce from
//! the client. Syncs complete at random ticks, so unsynced data sits across steps where a crash finds it; a crash
//! loses it and every bit of soft state (metadata, high watermark, producer waits), and a restart comes back as a
//! new incarnation that must register again before it serves.

use std::sync::Arc;
use std::time::Duration;

use super::{payload, Message, ProduceFailure};
use crate::metadata::{BrokerEpoch, MetadataImage, TopicId};
use crate::partition::{
    BrokenRule, EpochHistory, FetchAnswer, FetchError, FetchRequest, FollowerAction, LogEnds,
    PartitionReplica, ProduceError, ReplicationConfig, Role, Transition,
};
use crate::seams::ReplicaLog;
use crate::sim::{Outbox, Prng, SimBatch, SimLog};
use crate::types::{LeaderEpoch, NodeId};
use sluice_storage::Offset;

/// Batches one Fetch answer carries at most: small, so that catching up takes several rounds.
const FETCH_BATCH_COUNT_MAX: usize = 8;
/// Produce requests one partition leader holds waiting for the high watermark (the client has one in flight per
/// producer, plus retries of it).
const WAITING_COUNT_MAX: usize = 64;

/// An acks=all produce waiting for the high watermark to pass `end_offset`.
#[derive(Clone, Debug)]
struct Waiting {
    client: NodeId,
    partition: i32,
    sequence: u32,
    base_offset: Offset,
    end_offset: Offset,
}

pub struct SimPartition {
    pub(super) log: SimLog,
    pub(super) epochs: EpochHistory,
    pub(super) replica: Option<PartitionReplica>,
    waiting: Vec<Waiting>,
}

impl SimPartition {
    fn recovered(log: SimLog) -> SimPartition {
        let mut epochs = EpochHistory::new();
        for batch in log.batches() {
            epochs.assign(batch.leader_epoch, batch.base_offset);
        }
        SimPartition { log, epochs, replica: None, waiting: Vec::new() }
    }

    pub(super) fn ends(&self) -> LogEnds {
        log_ends(&self.log)
    }
}

pub struct SimBroker {
    pub(super) id: NodeId,
    controller: NodeId,
    pub(super) running: bool,
    incarnation: u128,
    pub(super) broker_epoch: Option<BrokerEpoch>,
    pub(super) image: Arc<MetadataImage>,
    topic_id: TopicId,
    pub(super) partitions: Vec<SimPartition>,
    prng: Prng,
    config: ReplicationConfig,
    sync_probability: f64,
    pub(super) restart_count: u64,
    pub(super) stats: BrokerStats,
}

/// What a broker saw happen, for the run's coverage report.
#[derive(Clone, Debug, Default)]
pub struct BrokerStats {
    pub diverging_answer_count: u64,
    pub truncated_batch_count: u64,
    /// Unsynced batches a crash took.
    pub lost_unsynced_batch_count: u64,
    pub not_enough_replicas_count: u64,
}

impl SimBroker {
    pub fn new(
        id: NodeId,
        controller: NodeId,
        incarnation: u128,
        topic: (TopicId, usize),
        config: ReplicationConfig,
        prng: Prng,
    ) -> SimBroker {
        SimBroker {
            id,
            controller,
            running: true,
            incarnation,
            broker_epoch: None,
            image: Arc::new(MetadataImage::empty()),
            topic_id: topic.0,
            partitions: (0..topic.1).map(|_| SimPartition::recovered(SimLog::new())).collect(),
            prng,
            config,
            sync_probability: 0.5,
            restart_count: 0,
            stats: BrokerStats::default(),
        }
    }

    /// Power cut: the logs keep their durable images; everything else is gone.
    pub fn crash(&mut self) {
        self.running = false;
        for partition in &mut self.partitions {
            let mut log = std::mem::take(&mut partition.log);
            let written_count = log.batches().len();
            log.crash();
            self.stats.lost_unsynced_batch_count += (written_count - log.batches().len()) as u64;
            *partition = SimPartition::recovered(log);
        }
        self.broker_epoch = None;
        self.image = Arc::new(MetadataImage::empty());
    }

    /// A new process on the same disk: a new incarnation, registered again through its next heartbeat.
    pub fn restart(&mut self) {
        if !self.running {
            self.running = true;
            self.incarnation = u128::from(self.prng.next_u64()) | 1;
            self.restart_count += 1;
        }
    }

    pub fn on_tick(&mut self, now: Duration, out: &mut Outbox<Message>) {
        if !self.running {
            return;
        }
        let metadata_offset = self.image.applied_index();
        out.send(
            self.controller,
            Message::Heartbeat {
                incarnation: self.incarnation,
                generation: self.restart_count,
                metadata_offset,
            },
        );
        for index in 0..self.partitions.len() {
            if self.prng.chance(self.sync_probability) {
                self.partitions[index].log.sync();
            }
            self.tick_partition(now, index, out);
            self.answer_waiting(index, out);
        }
    }

    fn tick_partition(&mut self, now: Duration, index: usize, out: &mut Outbox<Message>) {
        let Some(broker_epoch) = self.broker_epoch else { return };
        let partition = &mut self.partitions[index];
        let ends = partition.ends();
        let Some(replica) = &mut partition.replica else { return };
        match replica.role_mut() {
            Role::Leader(leader) => {
                leader.on_log_moved(ends);
                leader.on_tick(now, ends);
                if let Some(request) = leader.take_alter_partition(now) {
                    out.send(self.controller, Message::AlterPartition { partition: index as i32, request });
                }
            }
            Role::Follower(follower) => {
                if let Some(request) = follower.fetch_request(now, ends, &partition.epochs, broker_epoch) {
                    out.send(follower.leader(), Message::Fetch { partition: index as i32, request });
                }
            }
            Role::Offline => {}
        }
    }

    pub fn on_message(&mut self, now: Duration, from: NodeId, message: Message, out: &mut Outbox<Message>) {
        if !self.running {
            return;
        }
        match message {
            Message::Metadata(image) => self.on_metadata(now, image, out),
            Message::Fetch { partition, request } => self.on_fetch(now, from, partition, request, out),
            Message::FetchAnswer { partition, request, answer, batches } => {
                self.on_fetch_answer(from, partition, &request, answer, batches)
            }
            Message::AlterPartitionAnswer { partition, request, result } => {
                let sim_partition = &mut self.partitions[partition as usize];
                let ends = sim_partition.ends();
                if let Some(Role::Leader(leader)) =
                    sim_partition.replica.as_mut().map(PartitionReplica::role_mut)
                {
                    leader.on_alter_partition_answer(&request, result.as_ref(), ends);
                }
                self.answer_waiting(partition as usize, out);
            }
            Message::Produce { partition, sequence, record_count } => {
                self.on_produce(from, partition, sequence, record_count, out)
            }
            Message::MetadataRequest => out.send(from, Message::Metadata(self.image.clone())),
            Message::Heartbeat { .. } | Message::AlterPartition { .. } | Message::ProduceAnswer { .. } => {}
        }
    }

    /// A newer image: learn this incarnation's broker epoch, then let every partition take its role.
    fn on_metadata(&mut self, now: Duration, image: Arc<MetadataImage>, out: &mut Outbox<Message>) {
        if image.applied_index() <= self.image.applied_index() {
            return;
        }
        let Some(registered) = image.broker(self.id) else { return };
        if registered.registration.incarnation != self.incarnation {
            return;
        }
        let broker_epoch = *self.broker_epoch.get_or_insert(registered.epoch);
        assert_eq!(broker_epoch, registered.epoch, "{} changed broker epoch without a restart", self.id);
        self.image = image.clone();
        let Some(topic) = image.topic(self.topic_id) else { return };
        for (index, partition_image) in topic.partitions.iter().enumerate() {
            let partition = &mut self.partitions[index];
            let ends = partition.ends();
            let config = self.config.clone();
            let replica = partition
                .replica
                .get_or_insert_with(|| PartitionReplica::new(self.id, broker_epoch, Offset(0), config));
            let was_leader = replica.is_leader();
            let transition =
                replica.apply_metadata(now, partition_image, &image, ends, &mut partition.epochs);
            if was_leader && transition != Transition::Unchanged {
                fail_waiting(&mut partition.waiting, out);
            }
            self.answer_waiting(index, out);
        }
    }

    fn on_fetch(
        &mut self,
        now: Duration,
        from: NodeId,
        index: i32,
        request: FetchRequest,
        out: &mut Outbox<Message>,
    ) {
        let partition = &mut self.partitions[index as usize];
        let ends = partition.ends();
        let answer = match partition.replica.as_mut().map(PartitionReplica::role_mut) {
            Some(Role::Leader(leader)) => leader.on_fetch(now, &request, ends, &partition.epochs),
            _ => FetchAnswer::Error(FetchError::NotLeaderOrFollower),
        };
        let batches = match answer {
            FetchAnswer::Records { from: start, .. } => {
                let batches = partition.log.batches();
                let first = batches.partition_point(|batch| batch.base_offset < start);
                batches[first..].iter().take(FETCH_BATCH_COUNT_MAX).copied().collect()
            }
            _ => Vec::new(),
        };
        out.send(from, Message::FetchAnswer { partition: index, request, answer, batches });
        if let Some(Role::Leader(leader)) = partition.replica.as_mut().map(PartitionReplica::role_mut) {
            if let Some(alter) = leader.take_alter_partition(now) {
                out.send(self.controller, Message::AlterPartition { partition: index, request: alter });
            }
        }
        self.answer_waiting(index as usize, out);
    }

    fn on_fetch_answer(
        &mut self,
        from: NodeId,
        index: i32,
        request: &FetchRequest,
        answer: FetchAnswer,
        batches: Vec<SimBatch>,
    ) {
        let partition = &mut self.partitions[index as usize];
        let ends = partition.ends();
        let Some(replica) = partition.replica.as_mut() else { return };
        let Role::Follower(follower) = replica.role_mut() else { return };
        match follower.on_fetch_answer(from, request, answer, ends, &partition.epochs) {
            FollowerAction::Append { high_watermark } => {
                for batch in batches {
                    partition.epochs.assign(batch.leader_epoch, batch.base_offset);
                    let appended = partition.log.append_replicated(batch.base_offset, vec![batch]);
                    assert!(appended.is_ok(), "a follower's append failed: {appended:?}");
                }
                follower.appended(high_watermark, log_ends(&partition.log));
            }
            FollowerAction::Truncate { offset } => {
                let removed_count =
                    partition.log.batches().iter().filter(|batch| batch.end_offset() > offset).count();
                self.stats.truncated_batch_count += removed_count as u64;
                self.stats.diverging_answer_count += 1;
                let truncated = partition.log.truncate_to(offset);
                assert!(truncated.is_ok(), "a follower's truncation failed: {truncated:?}");
                partition.epochs.truncate_to(partition.log.log_end_offset());
                replica.truncated(log_ends(&partition.log));
            }
            FollowerAction::Ignore => {}
        }
    }

    fn on_produce(
        &mut self,
        client: NodeId,
        index: i32,
        sequence: u32,
        record_count: u32,
        out: &mut Outbox<Message>,
    ) {
        let broken = self.config.broken_rule;
        let partition = &mut self.partitions[index as usize];
        let leader = match partition.replica.as_mut().map(PartitionReplica::role_mut) {
            Some(Role::Leader(leader)) => leader,
            _ => return refuse(out, client, index, sequence, ProduceFailure::NotLeaderOrFollower),
        };
        if let Err(ProduceError::NotEnoughReplicas) = leader.check_append() {
            self.stats.not_enough_replicas_count += 1;
            return refuse(out, client, index, sequence, ProduceFailure::NotEnoughReplicas);
        }
        let (base_offset, end_offset) =
            match idempotent_append(&mut partition.log, index, sequence, leader.leader_epoch(), record_count)
            {
                Ok(range) => range,
                Err(failure) => return refuse(out, client, index, sequence, failure),
            };
        leader.on_log_moved(log_ends(&partition.log));
        if broken == Some(BrokenRule::AcknowledgeBeforeHighWatermark) {
            let result = Ok((base_offset, leader.leader_epoch()));
            out.send(client, Message::ProduceAnswer { partition: index, sequence, result });
            return;
        }
        if partition.waiting.len() >= WAITING_COUNT_MAX {
            let oldest = partition.waiting.remove(0);
            refuse(out, oldest.client, oldest.partition, oldest.sequence, ProduceFailure::Timeout);
        }
        partition.waiting.push(Waiting { client, partition: index, sequence, base_offset, end_offset });
        self.answer_waiting(index as usize, out);
    }

    /// Answers every acks=all produce the leader's high watermark now covers.
    fn answer_waiting(&mut self, index: usize, out: &mut Outbox<Message>) {
        let partition = &mut self.partitions[index];
        let Some(Role::Leader(leader)) = partition.replica.as_ref().map(PartitionReplica::role) else {
            return;
        };
        let (high_watermark, epoch) = (leader.high_watermark(), leader.leader_epoch());
        partition.waiting.retain(|waiting| {
            let done = waiting.end_offset <= high_watermark;
            if done {
                let result = Ok((waiting.base_offset, epoch));
                let answer = Message::ProduceAnswer {
                    partition: waiting.partition,
                    sequence: waiting.sequence,
                    result,
                };
                out.send(waiting.client, answer);
            }
            !done
        });
    }
}

/// The leader's idempotent append (one producer per partition, with the partition's number as its id): a
/// sequence already in the log answers with that batch's offsets; the next sequence is appended; any other is
/// OUT_OF_ORDER_SEQUENCE. The producer state is read from the log itself, so it survives leader changes.
fn idempotent_append(
    log: &mut SimLog,
    producer: i32,
    sequence: u32,
    leader_epoch: LeaderEpoch,
    record_count: u32,
) -> Result<(Offset, Offset), ProduceFailure> {
    let mine = |batch: &&SimBatch| payload::producer(batch.payload) == producer as u32;
    let last = log.batches().iter().rev().find(mine).map(|batch| payload::sequence(batch.payload));
    match last {
        Some(last) if sequence <= last => {
            let earlier = log
                .batches()
                .iter()
                .find(|batch| batch.payload == payload::encode(producer as u32, sequence));
            earlier
                .map(|batch| (batch.base_offset, batch.end_offset()))
                .ok_or(ProduceFailure::OutOfOrderSequence)
        }
        _ if sequence != last.map_or(0, |last| last + 1) => Err(ProduceFailure::OutOfOrderSequence),
        _ => {
            let base_offset = log.log_end_offset();
            let batch = SimBatch {
                base_offset,
                record_count,
                leader_epoch,
                payload: payload::encode(producer as u32, sequence),
            };
            let appended = log.append_replicated(base_offset, vec![batch]);
            assert!(appended.is_ok(), "a leader's append failed: {appended:?}");
            Ok((base_offset, batch.end_offset()))
        }
    }
}

fn refuse(out: &mut Outbox<Message>, client: NodeId, partition: i32, sequence: u32, failure: ProduceFailure) {
    out.send(client, Message::ProduceAnswer { partition, sequence, result: Err(failure) });
}

fn fail_waiting(waiting: &mut Vec<Waiting>, out: &mut Outbox<Message>) {
    for lost in waiting.drain(..) {
        refuse(out, lost.client, lost.partition, lost.sequence, ProduceFailure::NotLeaderOrFollower);
    }
}

fn log_ends(log: &SimLog) -> LogEnds {
    LogEnds::new(log.log_end_offset(), log.durable_end_offset())
}
