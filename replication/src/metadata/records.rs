//! The records of the metadata log, modelled on KRaft's (`metadata/src/main/resources/common/metadata/`): what a
//! committed entry of the quorum says happened to the cluster. One entry carries a batch of records applied
//! atomically (a topic and all its partitions, a fence and the partition changes it causes).
//!
//! Records state facts, never requests: the controller (`controller.rs`) turns an admin request into records after
//! validating it against the current image, and the image (`image.rs`) validates each record again when it is
//! applied, because a record proposed against one image may commit after others changed it.

use std::collections::BTreeMap;
use std::fmt;

use crate::types::{LeaderEpoch, NodeId};

/// A topic's permanent identity (Kafka's topic UUID, KIP-516): a name can be deleted and reused, an id never.
/// Zero is Kafka's `Uuid.ZERO_UUID`, "no topic", and is never assigned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicId(pub u128);

impl TopicId {
    pub const ZERO: TopicId = TopicId(0);
}

impl fmt::Display for TopicId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{:032x}", self.0)
    }
}

/// A broker's reign since its last registration: the log index of its `RegisterBroker` record, as KRaft's
/// `ClusterControlManager` uses the record's offset. A restarted broker registers again and gets a larger one, so
/// requests carrying an older epoch are recognisably from a previous life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BrokerEpoch(pub u64);

impl fmt::Display for BrokerEpoch {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(formatter)
    }
}

/// One advertised endpoint of a broker (Kafka's `advertised.listeners` entry).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Listener {
    pub name: String,
    pub host: String,
    pub port: u16,
}

/// KRaft's `RegisterBrokerRecord`. `incarnation` is the random id a broker process draws at start (Kafka's
/// `incarnationId`): the same process registering twice keeps its epoch, a new process gets a new one.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BrokerRegistration {
    pub broker: NodeId,
    pub incarnation: u128,
    pub listeners: Vec<Listener>,
    pub rack: Option<String>,
}

/// KRaft's `TopicRecord`, with the topic's configuration overrides at creation (KRaft writes those as
/// `ConfigRecord`s in the same batch; one record keeps creation atomic without a batch-level rule).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TopicRecord {
    pub name: String,
    pub id: TopicId,
    pub configs: BTreeMap<String, String>,
}

/// KRaft's `PartitionRecord`: a new partition with its whole state. Partitions of a topic are created in order,
/// 0 first, so `partition` must equal the topic's current partition count.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PartitionRecord {
    pub topic_id: TopicId,
    pub partition: i32,
    pub replicas: Vec<NodeId>,
    pub isr: Vec<NodeId>,
    /// `NodeId::NONE` when no replica can lead.
    pub leader: NodeId,
    pub leader_epoch: LeaderEpoch,
    pub partition_epoch: i32,
}

/// KRaft's `PartitionChangeRecord`, stated as the partition's new leader and ISR with the epochs they carry. The
/// partition epoch rises by exactly one per change (so a stale writer is detected); the leader epoch rises by one
/// when the leader changes and may stay otherwise (KAFKA-15021: an ISR shrink bumps only the partition epoch).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PartitionChange {
    pub topic_id: TopicId,
    pub partition: i32,
    pub leader: NodeId,
    pub isr: Vec<NodeId>,
    pub leader_epoch: LeaderEpoch,
    pub partition_epoch: i32,
}

/// A partition change that also rewrites the replica set: the start, completion or cancellation of a KIP-455
/// reassignment (KRaft writes these as a `PartitionChangeRecord` with its `Replicas`, `AddingReplicas` and
/// `RemovingReplicas` fields set). A record of its own rather than new fields on `PartitionChange`, so every
/// `PartitionChange` an older Sluice wrote keeps its bytes and its meaning.
///
/// `replicas` is the whole set while a reassignment runs: the target replicas first, then those being removed
/// (Kafka's `PartitionReassignmentReplicas`). `adding_replicas` are the target replicas that were not replicas
/// before, `removing_replicas` the old replicas outside the target; both are empty when no reassignment runs. The
/// leader epoch always rises by one, because a leader learns its followers at the start of its epoch.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ReplicasChange {
    pub topic_id: TopicId,
    pub partition: i32,
    pub replicas: Vec<NodeId>,
    pub adding_replicas: Vec<NodeId>,
    pub removing_replicas: Vec<NodeId>,
    pub leader: NodeId,
    pub isr: Vec<NodeId>,
    pub leader_epoch: LeaderEpoch,
    pub partition_epoch: i32,
}

/// What a configuration entry belongs to (Kafka's `ConfigResource` types BROKER and TOPIC).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConfigResource {
    Broker(NodeId),
    Topic(String),
}

/// KRaft's `ConfigRecord`: sets `key` to `value`, or removes the override when `value` is None.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ConfigChange {
    pub resource: ConfigResource,
    pub key: String,
    pub value: Option<String>,
}

/// KRaft's `ProducerIdsRecord`: producer ids `[first_producer_id, first_producer_id + size)` now belong to `broker`.
/// Blocks are handed out contiguously from the image's next free id, so two blocks never overlap.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ProducerIdsBlock {
    pub broker: NodeId,
    pub broker_epoch: BrokerEpoch,
    pub first_producer_id: i64,
    pub size: i32,
}

/// One fact in the metadata log.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum MetadataRecord {
    RegisterBroker(BrokerRegistration),
    /// KRaft's `FenceBrokerRecord`: the broker missed its session; it leads nothing and joins no ISR.
    FenceBroker {
        broker: NodeId,
        epoch: BrokerEpoch,
    },
    /// KRaft's `UnfenceBrokerRecord`: the broker caught up with the log and may lead again.
    UnfenceBroker {
        broker: NodeId,
        epoch: BrokerEpoch,
    },
    Topic(TopicRecord),
    Partition(PartitionRecord),
    PartitionChange(PartitionChange),
    ReplicasChange(ReplicasChange),
    Config(ConfigChange),
    /// KRaft's `RemoveTopicRecord`: the topic, its partitions and its configuration are gone.
    RemoveTopic {
        id: TopicId,
    },
    ProducerIds(ProducerIdsBlock),
}
