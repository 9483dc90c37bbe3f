//! The simulated client: one idempotent producer per partition with acks=all and one request in flight
//! (`max.in.flight.requests.per.connection=1`), so acknowledged sequences must sit at increasing offsets. It asks a
//! random broker for metadata (which may be stale), sends to the leader it names, and retries the same sequence
//! after an error or `request_timeout`, possibly at another leader. Every acknowledgement is recorded for the
//! checker, repeats included.

use std::sync::Arc;
use std::time::Duration;

use super::{Message, ProduceFailure};
use crate::metadata::{MetadataImage, TopicId};
use crate::sim::{Outbox, Prng};
use crate::types::{LeaderEpoch, NodeId};
use sluice_storage::Offset;

/// One acknowledgement as the client received it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ack {
    pub partition: i32,
    pub sequence: u32,
    pub base_offset: Offset,
    /// The leader epoch of the leader that answered.
    pub leader_epoch: LeaderEpoch,
}

#[derive(Clone, Debug)]
struct Producer {
    /// The sequence being sent (or next to send); all below it are acknowledged.
    sequence: u32,
    record_count: u32,
    sent_at: Option<Duration>,
}

pub struct SimClient {
    image: Arc<MetadataImage>,
    topic_id: TopicId,
    broker_count: usize,
    producers: Vec<Producer>,
    /// Producers stop once this many batches of theirs are acknowledged.
    pub(super) sequence_limit: u32,
    request_timeout: Duration,
    prng: Prng,
    pub(super) acks: Vec<Ack>,
    pub(super) failure_count: u64,
}

impl SimClient {
    pub fn new(
        topic: (TopicId, usize),
        broker_count: usize,
        request_timeout: Duration,
        prng: Prng,
    ) -> SimClient {
        let producer = Producer { sequence: 0, record_count: 1, sent_at: None };
        SimClient {
            image: Arc::new(MetadataImage::empty()),
            topic_id: topic.0,
            broker_count,
            producers: vec![producer; topic.1],
            sequence_limit: u32::MAX,
            request_timeout,
            prng,
            acks: Vec::new(),
            failure_count: 0,
        }
    }

    /// Sequences acknowledged so far, per partition.
    pub fn acknowledged(&self, partition: usize) -> u32 {
        self.producers[partition].sequence
    }

    pub fn done(&self) -> bool {
        self.producers.iter().all(|producer| producer.sequence >= self.sequence_limit)
    }

    pub fn on_tick(&mut self, now: Duration, out: &mut Outbox<Message>) {
        if self.prng.chance(0.2) {
            let broker = NodeId(self.prng.below(self.broker_count as u64) as i32);
            out.send(broker, Message::MetadataRequest);
        }
        for index in 0..self.producers.len() {
            self.maybe_send(now, index, out);
        }
    }

    fn maybe_send(&mut self, now: Duration, index: usize, out: &mut Outbox<Message>) {
        let producer = &self.producers[index];
        let idle = producer.sent_at.is_none_or(|sent_at| now.saturating_sub(sent_at) >= self.request_timeout);
        if producer.sequence >= self.sequence_limit || !idle {
            return;
        }
        let leader = self
            .image
            .topic(self.topic_id)
            .and_then(|topic| topic.partitions.get(index))
            .map_or(NodeId::NONE, |partition| partition.leader);
        if leader == NodeId::NONE {
            return;
        }
        let producer = &mut self.producers[index];
        if producer.sent_at.is_none() {
            producer.record_count = self.prng.between(1, 4) as u32;
        }
        producer.sent_at = Some(now);
        let (sequence, record_count) = (producer.sequence, producer.record_count);
        out.send(leader, Message::Produce { partition: index as i32, sequence, record_count });
    }

    pub fn on_message(&mut self, message: Message) {
        match message {
            Message::Metadata(image) if image.applied_index() > self.image.applied_index() => {
                self.image = image
            }
            Message::ProduceAnswer { partition, sequence, result } => {
                self.on_answer(partition, sequence, result);
            }
            _ => {}
        }
    }

    fn on_answer(
        &mut self,
        partition: i32,
        sequence: u32,
        result: Result<(Offset, LeaderEpoch), ProduceFailure>,
    ) {
        let producer = &mut self.producers[partition as usize];
        match result {
            Ok((base_offset, leader_epoch)) => {
                self.acks.push(Ack { partition, sequence, base_offset, leader_epoch });
                if sequence == producer.sequence {
                    producer.sequence += 1;
                    producer.sent_at = None;
                }
            }
            Err(_) if sequence == producer.sequence => {
                self.failure_count += 1;
                // Retry the same sequence at the next tick, after fresh metadata.
                producer.sent_at = Some(Duration::ZERO);
            }
            Err(_) => {}
        }
    }
}
