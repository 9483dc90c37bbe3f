//! `MetadataImage`: the cluster's metadata as of one applied index of the metadata log (KRaft's `MetadataImage`).
//!
//! An image is immutable. Applying a committed batch makes a new image (`apply_batch`) and the old one stays valid
//! for whoever still holds it, so the broker can hand every shard an `Arc<MetadataImage>` and swap it whole; a
//! request reads one image from start to end and never sees half a change. Topics are `Arc`-shared between
//! successive images, so a new image copies the maps, not the partitions of untouched topics.
//!
//! Every record is validated as it is applied: a record that would break a rule (a leader outside the replicas, an
//! epoch that does not move forward, a producer-id block that overlaps the last one) is an `ImageError` and the
//! whole batch is refused. Refusal is deterministic — every node applies the same batches to the same images — so
//! all nodes skip the same batches and stay equal.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use crate::metadata::codec::{decode_registration, encode_registration, CodecError, Reader, Writer};
use crate::metadata::records::{
    BrokerEpoch, BrokerRegistration, ConfigChange, ConfigResource, MetadataRecord, PartitionChange,
    PartitionRecord, ProducerIdsBlock, ReplicasChange, TopicId, TopicRecord,
};
use crate::types::{LeaderEpoch, NodeId};

/// A registered broker as the image knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerImage {
    pub registration: BrokerRegistration,
    pub epoch: BrokerEpoch,
    /// A fenced broker leads nothing and is in no ISR; new brokers start fenced until they catch up (KRaft).
    pub fenced: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionImage {
    /// Every replica; during a reassignment, the target replicas first and then those being removed.
    pub replicas: Vec<NodeId>,
    pub isr: Vec<NodeId>,
    pub leader: NodeId,
    pub leader_epoch: LeaderEpoch,
    pub partition_epoch: i32,
    /// A reassignment's new replicas (KIP-455): in `replicas`, catching up to join the ISR. Empty when none runs.
    pub adding_replicas: Vec<NodeId>,
    /// A reassignment's departing replicas: in `replicas` until the target replicas are all in the ISR.
    pub removing_replicas: Vec<NodeId>,
}

impl PartitionImage {
    /// A reassignment is under way (KIP-455: some replica is being added or removed).
    pub fn is_reassigning(&self) -> bool {
        !self.adding_replicas.is_empty() || !self.removing_replicas.is_empty()
    }

    /// The replicas once the reassignment completes: all of them but those being removed.
    pub fn target_replicas(&self) -> Vec<NodeId> {
        self.replicas.iter().copied().filter(|node| !self.removing_replicas.contains(node)).collect()
    }

    /// The replicas before the reassignment began (what a cancellation restores): all of them but those added.
    pub fn original_replicas(&self) -> Vec<NodeId> {
        self.replicas.iter().copied().filter(|node| !self.adding_replicas.contains(node)).collect()
    }

    /// The preferred leader: the first replica (Kafka's `preferredReplica`).
    pub fn preferred_leader(&self) -> NodeId {
        self.replicas.first().copied().unwrap_or(NodeId::NONE)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicImage {
    pub name: String,
    pub id: TopicId,
    pub configs: BTreeMap<String, String>,
    /// Indexed by partition number: partitions are created densely from 0.
    pub partitions: Vec<PartitionImage>,
}

/// Why a record cannot be applied to an image. Each message names the values involved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageError {
    BrokerAlreadyRegistered { broker: NodeId, incarnation: u128 },
    UnknownBroker { broker: NodeId },
    StaleBrokerEpoch { broker: NodeId, epoch: BrokerEpoch, current: BrokerEpoch },
    FencingUnchanged { broker: NodeId, fenced: bool },
    TopicNameTaken { name: String },
    TopicIdTaken { id: TopicId },
    InvalidTopicId,
    UnknownTopicId { id: TopicId },
    UnknownTopicName { name: String },
    PartitionOutOfOrder { id: TopicId, partition: i32, expected: i32 },
    UnknownPartition { id: TopicId, partition: i32 },
    InvalidReplicas { id: TopicId, partition: i32, reason: String },
    PartitionEpochNotNext { id: TopicId, partition: i32, epoch: i32, current: i32 },
    LeaderEpochInvalid { id: TopicId, partition: i32, epoch: LeaderEpoch, current: LeaderEpoch },
    EmptyConfigKey,
    ProducerIdsNotContiguous { first: i64, expected: i64 },
    ProducerIdsInvalidSize { size: i32 },
}

impl fmt::Display for ImageError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageError::BrokerAlreadyRegistered { broker, incarnation } => {
                write!(formatter, "{broker} is already registered with incarnation {incarnation:#x}")
            }
            ImageError::UnknownBroker { broker } => write!(formatter, "{broker} is not registered"),
            ImageError::StaleBrokerEpoch { broker, epoch, current } => {
                write!(formatter, "{broker} epoch {epoch} is not its current epoch {current}")
            }
            ImageError::FencingUnchanged { broker, fenced } => {
                write!(formatter, "{broker} is already {}", if *fenced { "fenced" } else { "unfenced" })
            }
            ImageError::TopicNameTaken { name } => write!(formatter, "topic {name:?} already exists"),
            ImageError::TopicIdTaken { id } => write!(formatter, "topic id {id} is already in use"),
            ImageError::InvalidTopicId => write!(formatter, "topic id zero is reserved"),
            ImageError::UnknownTopicId { id } => write!(formatter, "no topic has id {id}"),
            ImageError::UnknownTopicName { name } => write!(formatter, "no topic is named {name:?}"),
            ImageError::PartitionOutOfOrder { id, partition, expected } => {
                write!(formatter, "topic {id}: partition {partition} created, {expected} expected next")
            }
            ImageError::UnknownPartition { id, partition } => {
                write!(formatter, "topic {id} has no partition {partition}")
            }
            ImageError::InvalidReplicas { id, partition, reason } => {
                write!(formatter, "topic {id} partition {partition}: {reason}")
            }
            ImageError::PartitionEpochNotNext { id, partition, epoch, current } => write!(
                formatter,
                "topic {id} partition {partition}: partition epoch {epoch} does not follow {current}"
            ),
            ImageError::LeaderEpochInvalid { id, partition, epoch, current } => write!(
                formatter,
                "topic {id} partition {partition}: leader epoch {epoch} is invalid after {current}"
            ),
            ImageError::EmptyConfigKey => write!(formatter, "a configuration key is empty"),
            ImageError::ProducerIdsNotContiguous { first, expected } => {
                write!(formatter, "producer-id block starts at {first}, the next free id is {expected}")
            }
            ImageError::ProducerIdsInvalidSize { size } => {
                write!(formatter, "producer-id block size {size} is not positive")
            }
        }
    }
}

impl std::error::Error for ImageError {}

/// The cluster's metadata after applying the log up to `applied_index`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetadataImage {
    /// The Raft index of the last entry applied (0 for the empty image). Images at equal indices are equal.
    applied_index: u64,
    brokers: BTreeMap<NodeId, BrokerImage>,
    topics: BTreeMap<TopicId, Arc<TopicImage>>,
    topic_ids: BTreeMap<String, TopicId>,
    broker_configs: BTreeMap<NodeId, BTreeMap<String, String>>,
    /// The first producer id not yet handed out; ids below it belong to some block.
    producer_id_next: i64,
}

impl MetadataImage {
    pub fn empty() -> MetadataImage {
        MetadataImage::default()
    }

    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    pub fn brokers(&self) -> &BTreeMap<NodeId, BrokerImage> {
        &self.brokers
    }

    pub fn broker(&self, broker: NodeId) -> Option<&BrokerImage> {
        self.brokers.get(&broker)
    }

    pub fn topics(&self) -> impl Iterator<Item = &TopicImage> {
        self.topics.values().map(|topic| topic.as_ref())
    }

    pub fn topic(&self, id: TopicId) -> Option<&TopicImage> {
        self.topics.get(&id).map(|topic| topic.as_ref())
    }

    pub fn topic_by_name(&self, name: &str) -> Option<&TopicImage> {
        self.topic_ids.get(name).and_then(|id| self.topic(*id))
    }

    pub fn broker_configs(&self, broker: NodeId) -> Option<&BTreeMap<String, String>> {
        self.broker_configs.get(&broker)
    }

    pub fn producer_id_next(&self) -> i64 {
        self.producer_id_next
    }

    /// Brokers that are registered and not fenced: where new replicas may go.
    pub fn live_brokers(&self) -> impl Iterator<Item = &BrokerImage> {
        self.brokers.values().filter(|broker| !broker.fenced)
    }

    /// The image after the batch committed at `index`: every record applied, or none (the error says which
    /// failed). `index` must be above `applied_index`.
    pub fn apply_batch(&self, index: u64, records: &[MetadataRecord]) -> Result<MetadataImage, ImageError> {
        assert!(index > self.applied_index, "batch at {index} applied after {}", self.applied_index);
        let mut next = self.clone();
        next.applied_index = index;
        for record in records {
            next.apply(index, record)?;
        }
        next.assert_consistent();
        Ok(next)
    }

    /// The same image at a later index: for entries that carry no records (Raft's empty entries, configuration
    /// changes) and batches refused by validation, which still move the applied index.
    pub fn advanced_to(&self, index: u64) -> MetadataImage {
        assert!(index > self.applied_index, "advance to {index} after {}", self.applied_index);
        MetadataImage { applied_index: index, ..self.clone() }
    }

    fn apply(&mut self, index: u64, record: &MetadataRecord) -> Result<(), ImageError> {
        match record {
            MetadataRecord::RegisterBroker(registration) => self.apply_register(index, registration),
            MetadataRecord::FenceBroker { broker, epoch } => self.apply_fencing(*broker, *epoch, true),
            MetadataRecord::UnfenceBroker { broker, epoch } => self.apply_fencing(*broker, *epoch, false),
            MetadataRecord::Topic(topic) => self.apply_topic(topic),
            MetadataRecord::Partition(partition) => self.apply_partition(partition),
            MetadataRecord::PartitionChange(change) => self.apply_partition_change(change),
            MetadataRecord::ReplicasChange(change) => self.apply_replicas_change(change),
            MetadataRecord::Config(change) => self.apply_config(change),
            MetadataRecord::RemoveTopic { id } => self.apply_remove_topic(*id),
            MetadataRecord::ProducerIds(block) => self.apply_producer_ids(block),
        }
    }

    fn apply_register(&mut self, index: u64, registration: &BrokerRegistration) -> Result<(), ImageError> {
        if let Some(existing) = self.brokers.get(&registration.broker) {
            if existing.registration.incarnation == registration.incarnation {
                return Err(ImageError::BrokerAlreadyRegistered {
                    broker: registration.broker,
                    incarnation: registration.incarnation,
                });
            }
        }
        let broker =
            BrokerImage { registration: registration.clone(), epoch: BrokerEpoch(index), fenced: true };
        self.brokers.insert(registration.broker, broker);
        Ok(())
    }

    fn apply_fencing(&mut self, broker: NodeId, epoch: BrokerEpoch, fenced: bool) -> Result<(), ImageError> {
        let image = self.brokers.get_mut(&broker).ok_or(ImageError::UnknownBroker { broker })?;
        if image.epoch != epoch {
            return Err(ImageError::StaleBrokerEpoch { broker, epoch, current: image.epoch });
        }
        if image.fenced == fenced {
            return Err(ImageError::FencingUnchanged { broker, fenced });
        }
        image.fenced = fenced;
        Ok(())
    }

    fn apply_topic(&mut self, topic: &TopicRecord) -> Result<(), ImageError> {
        if topic.id == TopicId::ZERO {
            return Err(ImageError::InvalidTopicId);
        }
        if self.topic_ids.contains_key(&topic.name) {
            return Err(ImageError::TopicNameTaken { name: topic.name.clone() });
        }
        if self.topics.contains_key(&topic.id) {
            return Err(ImageError::TopicIdTaken { id: topic.id });
        }
        let image = TopicImage {
            name: topic.name.clone(),
            id: topic.id,
            configs: topic.configs.clone(),
            partitions: Vec::new(),
        };
        self.topic_ids.insert(topic.name.clone(), topic.id);
        self.topics.insert(topic.id, Arc::new(image));
        Ok(())
    }

    fn apply_partition(&mut self, record: &PartitionRecord) -> Result<(), ImageError> {
        let id = record.topic_id;
        let topic = self.topics.get(&id).ok_or(ImageError::UnknownTopicId { id })?;
        let expected = topic.partitions.len() as i32;
        if record.partition != expected {
            return Err(ImageError::PartitionOutOfOrder { id, partition: record.partition, expected });
        }
        let invalid =
            |reason: String| ImageError::InvalidReplicas { id, partition: record.partition, reason };
        if record.leader_epoch.0 < 0 || record.partition_epoch < 0 {
            return Err(invalid("epochs start at 0".into()));
        }
        check_replicas(&self.brokers, &record.replicas, &record.isr, record.leader).map_err(invalid)?;
        let partition = PartitionImage {
            replicas: record.replicas.clone(),
            isr: record.isr.clone(),
            leader: record.leader,
            leader_epoch: record.leader_epoch,
            partition_epoch: record.partition_epoch,
            adding_replicas: Vec::new(),
            removing_replicas: Vec::new(),
        };
        let topic = self.topics.get_mut(&id).ok_or(ImageError::UnknownTopicId { id })?;
        Arc::make_mut(topic).partitions.push(partition);
        Ok(())
    }

    fn apply_partition_change(&mut self, change: &PartitionChange) -> Result<(), ImageError> {
        let (id, partition_index) = (change.topic_id, change.partition);
        let current = self.partition_mut(id, partition_index)?.clone();
        let epochs = Epochs { leader: change.leader, leader_epoch: change.leader_epoch };
        check_epochs(id, partition_index, &current, epochs, change.partition_epoch, false)?;
        check_replicas(&self.brokers, &current.replicas, &change.isr, change.leader)
            .map_err(|reason| ImageError::InvalidReplicas { id, partition: partition_index, reason })?;
        let partition = self.partition_mut(id, partition_index)?;
        partition.leader = change.leader;
        partition.isr = change.isr.clone();
        partition.leader_epoch = change.leader_epoch;
        partition.partition_epoch = change.partition_epoch;
        Ok(())
    }

    /// A reassignment's start, completion or cancellation: the replica set changes, so the leader epoch must rise
    /// (a leader takes its followers from the replicas at the start of its epoch), and the adding and removing sets
    /// must describe the new replicas.
    fn apply_replicas_change(&mut self, change: &ReplicasChange) -> Result<(), ImageError> {
        let (id, partition_index) = (change.topic_id, change.partition);
        let current = self.partition_mut(id, partition_index)?.clone();
        let epochs = Epochs { leader: change.leader, leader_epoch: change.leader_epoch };
        check_epochs(id, partition_index, &current, epochs, change.partition_epoch, true)?;
        let invalid = |reason: String| ImageError::InvalidReplicas { id, partition: partition_index, reason };
        check_replicas(&self.brokers, &change.replicas, &change.isr, change.leader).map_err(invalid)?;
        check_reassignment(&change.replicas, &change.adding_replicas, &change.removing_replicas)
            .map_err(invalid)?;
        let partition = self.partition_mut(id, partition_index)?;
        partition.replicas = change.replicas.clone();
        partition.adding_replicas = change.adding_replicas.clone();
        partition.removing_replicas = change.removing_replicas.clone();
        partition.leader = change.leader;
        partition.isr = change.isr.clone();
        partition.leader_epoch = change.leader_epoch;
        partition.partition_epoch = change.partition_epoch;
        Ok(())
    }

    fn partition_mut(&mut self, id: TopicId, partition: i32) -> Result<&mut PartitionImage, ImageError> {
        let topic = self.topics.get_mut(&id).ok_or(ImageError::UnknownTopicId { id })?;
        usize::try_from(partition)
            .ok()
            .and_then(|index| Arc::make_mut(topic).partitions.get_mut(index))
            .ok_or(ImageError::UnknownPartition { id, partition })
    }

    fn apply_config(&mut self, change: &ConfigChange) -> Result<(), ImageError> {
        if change.key.is_empty() {
            return Err(ImageError::EmptyConfigKey);
        }
        let configs = match &change.resource {
            ConfigResource::Broker(broker) => self.broker_configs.entry(*broker).or_default(),
            ConfigResource::Topic(name) => {
                let id =
                    self.topic_ids.get(name).ok_or(ImageError::UnknownTopicName { name: name.clone() })?;
                let topic = self.topics.get_mut(id).ok_or(ImageError::UnknownTopicId { id: *id })?;
                &mut Arc::make_mut(topic).configs
            }
        };
        match &change.value {
            Some(value) => configs.insert(change.key.clone(), value.clone()),
            None => configs.remove(&change.key),
        };
        self.broker_configs.retain(|_, configs| !configs.is_empty());
        Ok(())
    }

    fn apply_remove_topic(&mut self, id: TopicId) -> Result<(), ImageError> {
        let topic = self.topics.remove(&id).ok_or(ImageError::UnknownTopicId { id })?;
        self.topic_ids.remove(&topic.name);
        Ok(())
    }

    fn apply_producer_ids(&mut self, block: &ProducerIdsBlock) -> Result<(), ImageError> {
        let broker =
            self.brokers.get(&block.broker).ok_or(ImageError::UnknownBroker { broker: block.broker })?;
        if broker.epoch != block.broker_epoch {
            return Err(ImageError::StaleBrokerEpoch {
                broker: block.broker,
                epoch: block.broker_epoch,
                current: broker.epoch,
            });
        }
        if block.size <= 0 {
            return Err(ImageError::ProducerIdsInvalidSize { size: block.size });
        }
        if block.first_producer_id != self.producer_id_next {
            return Err(ImageError::ProducerIdsNotContiguous {
                first: block.first_producer_id,
                expected: self.producer_id_next,
            });
        }
        self.producer_id_next = block
            .first_producer_id
            .checked_add(i64::from(block.size))
            .ok_or(ImageError::ProducerIdsInvalidSize { size: block.size })?;
        Ok(())
    }

    /// The cross-map invariants: names and ids map one to one, and every partition's leader is in its ISR, which
    /// is inside its replicas.
    fn assert_consistent(&self) {
        assert_eq!(self.topics.len(), self.topic_ids.len(), "topic name and id maps disagree");
        for (name, id) in &self.topic_ids {
            let topic = self.topics.get(id);
            assert!(
                topic.is_some_and(|topic| &topic.name == name),
                "topic {name:?} maps to a missing id {id}"
            );
        }
        for topic in self.topics.values() {
            for partition in &topic.partitions {
                assert!(partition.isr.iter().all(|node| partition.replicas.contains(node)));
                assert!(partition.leader == NodeId::NONE || partition.isr.contains(&partition.leader));
                assert!(check_reassignment(
                    &partition.replicas,
                    &partition.adding_replicas,
                    &partition.removing_replicas
                )
                .is_ok());
            }
        }
    }
}

/// A change's new leader and leader epoch, checked against the partition's.
#[derive(Clone, Copy)]
struct Epochs {
    leader: NodeId,
    leader_epoch: LeaderEpoch,
}

/// The partition epoch rises by exactly one; the leader epoch rises by one when the leader changes or
/// `epoch_bump_required`, and otherwise may stay or rise by one.
fn check_epochs(
    id: TopicId,
    partition: i32,
    current: &PartitionImage,
    epochs: Epochs,
    partition_epoch: i32,
    epoch_bump_required: bool,
) -> Result<(), ImageError> {
    if partition_epoch != current.partition_epoch + 1 {
        return Err(ImageError::PartitionEpochNotNext {
            id,
            partition,
            epoch: partition_epoch,
            current: current.partition_epoch,
        });
    }
    let epoch_bumped = epochs.leader_epoch.0 == current.leader_epoch.0 + 1;
    // The epoch may stay only when nothing requires a new one: the same leader and the same replicas.
    let epoch_may_stay = epochs.leader == current.leader && !epoch_bump_required;
    let epoch_valid = epoch_bumped || (epoch_may_stay && epochs.leader_epoch == current.leader_epoch);
    if !epoch_valid {
        return Err(ImageError::LeaderEpochInvalid {
            id,
            partition,
            epoch: epochs.leader_epoch,
            current: current.leader_epoch,
        });
    }
    Ok(())
}

/// The adding and removing sets are distinct, disjoint subsets of the replicas, and the target (the replicas
/// but those removed) is not empty.
fn check_reassignment(replicas: &[NodeId], adding: &[NodeId], removing: &[NodeId]) -> Result<(), String> {
    let distinct = |nodes: &[NodeId]| nodes.iter().collect::<BTreeSet<_>>().len() == nodes.len();
    if !distinct(adding) || !distinct(removing) {
        return Err(format!("adding {adding:?} or removing {removing:?} repeats a broker"));
    }
    if !adding.iter().chain(removing).all(|node| replicas.contains(node)) {
        return Err(format!("adding {adding:?} or removing {removing:?} is outside replicas {replicas:?}"));
    }
    if adding.iter().any(|node| removing.contains(node)) {
        return Err(format!("adding {adding:?} and removing {removing:?} overlap"));
    }
    if replicas.iter().all(|node| removing.contains(node)) {
        return Err(format!("removing {removing:?} takes every replica of {replicas:?}"));
    }
    Ok(())
}

/// Replicas are distinct registered brokers, the ISR is a distinct subset of them, and the leader is in the ISR
/// (or there is none).
fn check_replicas(
    brokers: &BTreeMap<NodeId, BrokerImage>,
    replicas: &[NodeId],
    isr: &[NodeId],
    leader: NodeId,
) -> Result<(), String> {
    if replicas.is_empty() {
        return Err("no replicas".into());
    }
    if replicas.iter().collect::<BTreeSet<_>>().len() != replicas.len() {
        return Err(format!("replicas {replicas:?} repeat a broker"));
    }
    if let Some(unknown) = replicas.iter().find(|node| !brokers.contains_key(node)) {
        return Err(format!("replica {unknown} is not registered"));
    }
    if isr.iter().collect::<BTreeSet<_>>().len() != isr.len()
        || !isr.iter().all(|node| replicas.contains(node))
    {
        return Err(format!("ISR {isr:?} is not a set inside replicas {replicas:?}"));
    }
    if leader != NodeId::NONE && !isr.contains(&leader) {
        return Err(format!("leader {leader} is not in the ISR {isr:?}"));
    }
    Ok(())
}

/// The layout of an image in a snapshot, bumped when the layout changes. Format 2 added each partition's adding and
/// removing replicas; format 1 snapshots (written before reassignment existed) still decode, with both empty,
/// because snapshots live in users' data directories. Unknown formats are refused by name.
pub const IMAGE_FORMAT: u8 = 2;
/// The first snapshot layout, without reassignment state: decoded, never written.
const IMAGE_FORMAT_WITHOUT_REASSIGNMENT: u8 = 1;

impl MetadataImage {
    /// The image as snapshot bytes: every field, in map order, so equal images encode to equal bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut writer = Writer::new();
        writer.u8(IMAGE_FORMAT);
        writer.u64(self.applied_index);
        writer.i64(self.producer_id_next);
        writer.count(self.brokers.len());
        for broker in self.brokers.values() {
            encode_registration(&mut writer, &broker.registration);
            writer.u64(broker.epoch.0);
            writer.bool(broker.fenced);
        }
        writer.count(self.broker_configs.len());
        for (broker, configs) in &self.broker_configs {
            writer.i32(broker.0);
            writer.string_map(configs);
        }
        writer.count(self.topics.len());
        for topic in self.topics.values() {
            writer.str(&topic.name);
            writer.u128(topic.id.0);
            writer.string_map(&topic.configs);
            writer.count(topic.partitions.len());
            for partition in &topic.partitions {
                writer.nodes(&partition.replicas);
                writer.nodes(&partition.isr);
                writer.i32(partition.leader.0);
                writer.i32(partition.leader_epoch.0);
                writer.i32(partition.partition_epoch);
                writer.nodes(&partition.adding_replicas);
                writer.nodes(&partition.removing_replicas);
            }
        }
        writer.into_bytes()
    }

    /// The image a snapshot holds. Malformed bytes are an error; so is an image that breaks its own rules.
    pub fn decode(bytes: &[u8]) -> Result<MetadataImage, CodecError> {
        let mut reader = Reader::new(bytes);
        let format = reader.u8()?;
        if format != IMAGE_FORMAT && format != IMAGE_FORMAT_WITHOUT_REASSIGNMENT {
            return Err(CodecError::UnknownBatchFormat { format });
        }
        let mut image = MetadataImage { applied_index: reader.u64()?, ..MetadataImage::default() };
        image.producer_id_next = reader.i64()?;
        for _ in 0..reader.count(30)? {
            let registration = decode_registration(&mut reader)?;
            let broker =
                BrokerImage { epoch: BrokerEpoch(reader.u64()?), fenced: reader.bool()?, registration };
            image.brokers.insert(broker.registration.broker, broker);
        }
        for _ in 0..reader.count(8)? {
            let broker = NodeId(reader.i32()?);
            image.broker_configs.insert(broker, reader.string_map()?);
        }
        for _ in 0..reader.count(26)? {
            let topic = decode_topic(&mut reader, format)?;
            let invalid = |reason: String| CodecError::InvalidImage { reason };
            for partition in &topic.partitions {
                check_replicas(&image.brokers, &partition.replicas, &partition.isr, partition.leader)
                    .map_err(invalid)?;
                check_reassignment(
                    &partition.replicas,
                    &partition.adding_replicas,
                    &partition.removing_replicas,
                )
                .map_err(invalid)?;
            }
            if image.topic_ids.insert(topic.name.clone(), topic.id).is_some() || topic.id == TopicId::ZERO {
                return Err(invalid(format!("topic {:?} or its id {} repeats", topic.name, topic.id)));
            }
            if image.topics.insert(topic.id, Arc::new(topic)).is_some() {
                return Err(invalid("a topic id repeats".into()));
            }
        }
        reader.finish()?;
        Ok(image)
    }
}

fn decode_topic(reader: &mut Reader<'_>, format: u8) -> Result<TopicImage, CodecError> {
    let name = reader.string()?;
    let id = TopicId(reader.u128()?);
    let configs = reader.string_map()?;
    let mut partitions = Vec::new();
    for _ in 0..reader.count(20)? {
        let mut partition = PartitionImage {
            replicas: reader.nodes()?,
            isr: reader.nodes()?,
            leader: NodeId(reader.i32()?),
            leader_epoch: LeaderEpoch(reader.i32()?),
            partition_epoch: reader.i32()?,
            adding_replicas: Vec::new(),
            removing_replicas: Vec::new(),
        };
        if format != IMAGE_FORMAT_WITHOUT_REASSIGNMENT {
            partition.adding_replicas = reader.nodes()?;
            partition.removing_replicas = reader.nodes()?;
        }
        partitions.push(partition);
    }
    Ok(TopicImage { name, id, configs, partitions })
}
