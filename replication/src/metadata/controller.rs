//! The controller's validation layer: turns admin requests into the records that carry them out, or into an error
//! the broker maps to Kafka's code (KRaft's `ReplicationControlManager`, `ClusterControlManager`,
//! `ProducerIdControlManager`). It reads one image and writes nothing: the records it returns are proposed to the
//! quorum and take effect only when committed and applied, where the image validates them again.
//!
//! Heartbeats are soft state (`BrokerHeartbeats`), kept only by the active controller as in KRaft: a new
//! controller gives every broker a full session before fencing it.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::metadata::election::{
    is_live, new_leader, unclean_leader, ElectionPolicy, UNCLEAN_LEADER_ELECTION_ENABLE,
};
use crate::metadata::image::{MetadataImage, PartitionImage, TopicImage};
use crate::metadata::placement::{place_replicas, PlacementBroker};
use crate::metadata::records::{
    BrokerEpoch, BrokerRegistration, ConfigChange, ConfigResource, MetadataRecord, PartitionChange,
    PartitionRecord, ProducerIdsBlock, TopicId, TopicRecord,
};
use crate::types::{LeaderEpoch, NodeId};

/// Producer ids per block, as the single-node broker's allocator hands them out (`broker/src/producer_ids.rs`).
pub const PRODUCER_ID_BLOCK_SIZE: i32 = 1_000;
/// Kafka's limit on topic names (`Topic.MAX_NAME_LENGTH`): a partition directory `<topic>-<partition>` must fit
/// a 255-byte file name.
pub const TOPIC_NAME_LENGTH_MAX: usize = 249;
/// Most partitions one request may create: far above any real topic, low enough to bound one batch's records.
pub const PARTITION_COUNT_MAX: i32 = 10_000;

/// An admin request as the active controller receives it (CreateTopics, DeleteTopics, CreatePartitions,
/// IncrementalAlterConfigs, BrokerRegistration, AllocateProducerIds).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminRequest {
    CreateTopic {
        name: String,
        /// Drawn by the caller from its entropy source: the controller reads no randomness.
        id: TopicId,
        partition_count: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
        /// Explicit replica lists, one per partition, honoured as given (leader first).
        assignment: Option<Vec<Vec<NodeId>>>,
    },
    DeleteTopic {
        name: String,
    },
    /// Grows the topic to `partition_count` partitions in total; `assignment` lists the new partitions'
    /// replicas (leader first), honoured as given, else they are placed.
    CreatePartitions {
        name: String,
        partition_count: i32,
        assignment: Option<Vec<Vec<NodeId>>>,
    },
    AlterConfigs {
        resource: ConfigResource,
        changes: Vec<(String, Option<String>)>,
    },
    RegisterBroker(BrokerRegistration),
    AllocateProducerIds {
        broker: NodeId,
        broker_epoch: BrokerEpoch,
    },
}

/// Why the controller refuses a request; each maps to one Kafka error code in the broker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ControllerError {
    /// INVALID_REPLICATION_FACTOR.
    InvalidReplicationFactor { requested: i16, live_broker_count: usize },
    /// INVALID_PARTITIONS.
    InvalidPartitions { requested: i32, current: i32 },
    /// INVALID_REPLICA_ASSIGNMENT.
    InvalidReplicaAssignment { reason: String },
    /// TOPIC_ALREADY_EXISTS.
    TopicAlreadyExists { name: String },
    /// INVALID_TOPIC_EXCEPTION.
    InvalidTopicName { name: String, reason: &'static str },
    /// UNKNOWN_TOPIC_OR_PARTITION.
    UnknownTopic { name: String },
    /// INVALID_CONFIG.
    InvalidConfig { key: String },
    /// BROKER_ID_NOT_REGISTERED.
    UnknownBroker { broker: NodeId },
    /// STALE_BROKER_EPOCH.
    StaleBrokerEpoch { broker: NodeId, epoch: BrokerEpoch, current: BrokerEpoch },
    /// DUPLICATE_BROKER_REGISTRATION: the same incarnation is registered already (its epoch stands).
    AlreadyRegistered { broker: NodeId, epoch: BrokerEpoch },
}

impl fmt::Display for ControllerError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControllerError::InvalidReplicationFactor { requested, live_broker_count } => write!(
                formatter,
                "replication factor {requested} is not between 1 and the {live_broker_count} live brokers"
            ),
            ControllerError::InvalidPartitions { requested, current } => {
                write!(
                    formatter,
                    "partition count {requested} is invalid (current {current}, max {PARTITION_COUNT_MAX})"
                )
            }
            ControllerError::InvalidReplicaAssignment { reason } => {
                write!(formatter, "replica assignment: {reason}")
            }
            ControllerError::TopicAlreadyExists { name } => {
                write!(formatter, "topic {name:?} already exists")
            }
            ControllerError::InvalidTopicName { name, reason } => {
                write!(formatter, "topic name {name:?} {reason}")
            }
            ControllerError::UnknownTopic { name } => write!(formatter, "topic {name:?} does not exist"),
            ControllerError::InvalidConfig { key } => {
                write!(formatter, "configuration key {key:?} is invalid")
            }
            ControllerError::UnknownBroker { broker } => write!(formatter, "{broker} is not registered"),
            ControllerError::StaleBrokerEpoch { broker, epoch, current } => {
                write!(formatter, "{broker} sent epoch {epoch}; its current epoch is {current}")
            }
            ControllerError::AlreadyRegistered { broker, epoch } => {
                write!(formatter, "{broker} is registered with this incarnation at epoch {epoch}")
            }
        }
    }
}

impl std::error::Error for ControllerError {}

/// The records that carry out `request` against `image`, or why it is refused.
pub fn plan(image: &MetadataImage, request: &AdminRequest) -> Result<Vec<MetadataRecord>, ControllerError> {
    match request {
        AdminRequest::CreateTopic { name, id, partition_count, replication_factor, configs, assignment } => {
            let shape =
                TopicShape { partition_count: *partition_count, replication_factor: *replication_factor };
            plan_create_topic(image, name, *id, shape, configs, assignment.as_deref())
        }
        AdminRequest::DeleteTopic { name } => {
            let topic = topic_named(image, name)?;
            Ok(vec![MetadataRecord::RemoveTopic { id: topic.id }])
        }
        AdminRequest::CreatePartitions { name, partition_count, assignment } => {
            plan_create_partitions(image, name, *partition_count, assignment.as_deref())
        }
        AdminRequest::AlterConfigs { resource, changes } => plan_alter_configs(image, resource, changes),
        AdminRequest::RegisterBroker(registration) => match image.broker(registration.broker) {
            Some(existing) if existing.registration.incarnation == registration.incarnation => {
                Err(ControllerError::AlreadyRegistered { broker: registration.broker, epoch: existing.epoch })
            }
            // A restarted broker (a new incarnation) is fenced in its old registration first, as KRaft does: every
            // partition it led moves on or waits for it under a new leader epoch, so no broker ever leads again an
            // epoch it led before a restart (its log may have lost the unsynced end of that epoch, which followers
            // hold).
            Some(existing) if !existing.fenced => {
                let mut records = fence_records(image, registration.broker);
                records.push(MetadataRecord::RegisterBroker(registration.clone()));
                Ok(records)
            }
            _ => Ok(vec![MetadataRecord::RegisterBroker(registration.clone())]),
        },
        AdminRequest::AllocateProducerIds { broker, broker_epoch } => {
            current_broker(image, *broker, *broker_epoch)?;
            Ok(vec![MetadataRecord::ProducerIds(ProducerIdsBlock {
                broker: *broker,
                broker_epoch: *broker_epoch,
                first_producer_id: image.producer_id_next(),
                size: PRODUCER_ID_BLOCK_SIZE,
            })])
        }
    }
}

#[derive(Clone, Copy)]
struct TopicShape {
    partition_count: i32,
    replication_factor: i16,
}

fn plan_create_topic(
    image: &MetadataImage,
    name: &str,
    id: TopicId,
    shape: TopicShape,
    configs: &BTreeMap<String, String>,
    assignment: Option<&[Vec<NodeId>]>,
) -> Result<Vec<MetadataRecord>, ControllerError> {
    validate_topic_name(name)?;
    if image.topic_by_name(name).is_some() {
        return Err(ControllerError::TopicAlreadyExists { name: name.to_string() });
    }
    if id == TopicId::ZERO || image.topic(id).is_some() {
        return Err(ControllerError::InvalidTopicName {
            name: name.to_string(),
            reason: "has a used or zero id",
        });
    }
    if let Some((key, _)) = configs.iter().find(|(key, value)| !valid_config(key, Some(value))) {
        return Err(ControllerError::InvalidConfig { key: key.clone() });
    }
    let replica_lists = match assignment {
        Some(lists) => check_assignment(image, lists)?.to_vec(),
        None => {
            if shape.partition_count < 1 || shape.partition_count > PARTITION_COUNT_MAX {
                return Err(ControllerError::InvalidPartitions {
                    requested: shape.partition_count,
                    current: 0,
                });
            }
            placement(image, shape.partition_count as usize, shape.replication_factor)?
        }
    };
    let mut records =
        vec![MetadataRecord::Topic(TopicRecord { name: name.to_string(), id, configs: configs.clone() })];
    records.extend(partition_records(id, 0, replica_lists));
    Ok(records)
}

fn plan_create_partitions(
    image: &MetadataImage,
    name: &str,
    partition_count: i32,
    assignment: Option<&[Vec<NodeId>]>,
) -> Result<Vec<MetadataRecord>, ControllerError> {
    let topic = topic_named(image, name)?;
    let current = topic.partitions.len() as i32;
    if partition_count <= current || partition_count > PARTITION_COUNT_MAX {
        return Err(ControllerError::InvalidPartitions { requested: partition_count, current });
    }
    // New partitions keep the topic's replication factor (that of partition 0), as Kafka does.
    let replication_factor = topic.partitions.first().map_or(1, |partition| partition.replicas.len()) as i16;
    let lists = match assignment {
        Some(lists) => {
            if lists.len() != (partition_count - current) as usize {
                return Err(ControllerError::InvalidReplicaAssignment {
                    reason: format!(
                        "{} new partitions but {} replica lists",
                        partition_count - current,
                        lists.len()
                    ),
                });
            }
            if let Some(list) = lists.iter().find(|list| list.len() != replication_factor as usize) {
                return Err(ControllerError::InvalidReplicaAssignment {
                    reason: format!(
                        "{list:?} is not {replication_factor} replicas, the topic's replication factor"
                    ),
                });
            }
            check_assignment(image, lists)?.to_vec()
        }
        None => placement(image, (partition_count - current) as usize, replication_factor)?,
    };
    Ok(partition_records(topic.id, current, lists).collect())
}

fn plan_alter_configs(
    image: &MetadataImage,
    resource: &ConfigResource,
    changes: &[(String, Option<String>)],
) -> Result<Vec<MetadataRecord>, ControllerError> {
    if let ConfigResource::Topic(name) = resource {
        topic_named(image, name)?;
    }
    changes
        .iter()
        .map(|(key, value)| {
            if !valid_config(key, value.as_deref()) {
                return Err(ControllerError::InvalidConfig { key: key.clone() });
            }
            Ok(MetadataRecord::Config(ConfigChange {
                resource: resource.clone(),
                key: key.clone(),
                value: value.clone(),
            }))
        })
        .collect()
}

/// Partition records for replica lists numbered from `first_partition`: leader first, the ISR all replicas, every
/// epoch at 0.
fn partition_records(
    topic_id: TopicId,
    first_partition: i32,
    replica_lists: Vec<Vec<NodeId>>,
) -> impl Iterator<Item = MetadataRecord> {
    replica_lists.into_iter().enumerate().map(move |(offset, replicas)| {
        MetadataRecord::Partition(PartitionRecord {
            topic_id,
            partition: first_partition + offset as i32,
            leader: replicas[0],
            isr: replicas.clone(),
            replicas,
            leader_epoch: LeaderEpoch(0),
            partition_epoch: 0,
        })
    })
}

fn placement(
    image: &MetadataImage,
    partition_count: usize,
    replication_factor: i16,
) -> Result<Vec<Vec<NodeId>>, ControllerError> {
    let live: Vec<PlacementBroker> = image
        .live_brokers()
        .map(|broker| PlacementBroker {
            broker: broker.registration.broker,
            rack: broker.registration.rack.clone(),
        })
        .collect();
    if replication_factor < 1 || replication_factor as usize > live.len() {
        return Err(ControllerError::InvalidReplicationFactor {
            requested: replication_factor,
            live_broker_count: live.len(),
        });
    }
    let start: usize = image.topics().map(|topic| topic.partitions.len()).sum();
    Ok(place_replicas(&live, partition_count, replication_factor as usize, start))
}

fn check_assignment<'a>(
    image: &MetadataImage,
    lists: &'a [Vec<NodeId>],
) -> Result<&'a [Vec<NodeId>], ControllerError> {
    let invalid = |reason: String| Err(ControllerError::InvalidReplicaAssignment { reason });
    if lists.is_empty() || lists.len() > PARTITION_COUNT_MAX as usize {
        return invalid(format!("{} partitions", lists.len()));
    }
    for (partition, replicas) in lists.iter().enumerate() {
        if replicas.is_empty() || replicas.len() != lists[0].len() {
            return invalid(format!(
                "partition {partition} has {} replicas, partition 0 has {}",
                replicas.len(),
                lists[0].len()
            ));
        }
        if let Some(unknown) = replicas.iter().find(|node| image.broker(**node).is_none()) {
            return invalid(format!("partition {partition} names unregistered {unknown}"));
        }
        let mut sorted = replicas.clone();
        sorted.sort();
        sorted.dedup();
        if sorted.len() != replicas.len() {
            return invalid(format!("partition {partition} repeats a broker in {replicas:?}"));
        }
    }
    Ok(lists)
}

fn validate_topic_name(name: &str) -> Result<(), ControllerError> {
    let invalid = |reason| Err(ControllerError::InvalidTopicName { name: name.to_string(), reason });
    if name.is_empty() || name == "." || name == ".." {
        return invalid("is empty, \".\" or \"..\"");
    }
    if name.len() > TOPIC_NAME_LENGTH_MAX {
        return invalid("is longer than 249 characters");
    }
    if !name.bytes().all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-')) {
        return invalid("has characters outside [a-zA-Z0-9._-]");
    }
    Ok(())
}

/// A key of at most 255 bytes; the one value the controller reads itself, `unclean.leader.election.enable`, must
/// be a boolean as Kafka parses one (`true`/`false`, any case), so a typo is refused rather than read as false.
fn valid_config(key: &str, value: Option<&str>) -> bool {
    let valid_value = match (key, value) {
        (UNCLEAN_LEADER_ELECTION_ENABLE, Some(value)) => {
            let value = value.trim();
            value.eq_ignore_ascii_case("true") || value.eq_ignore_ascii_case("false")
        }
        _ => true,
    };
    !key.is_empty() && key.len() <= 255 && valid_value
}

fn topic_named<'a>(image: &'a MetadataImage, name: &str) -> Result<&'a TopicImage, ControllerError> {
    image.topic_by_name(name).ok_or_else(|| ControllerError::UnknownTopic { name: name.to_string() })
}

fn current_broker(image: &MetadataImage, broker: NodeId, epoch: BrokerEpoch) -> Result<(), ControllerError> {
    let current = image.broker(broker).ok_or(ControllerError::UnknownBroker { broker })?;
    if current.epoch != epoch {
        return Err(ControllerError::StaleBrokerEpoch { broker, epoch, current: current.epoch });
    }
    Ok(())
}

/// A broker's heartbeat (KRaft's `BrokerHeartbeatRequest`, the fields that matter here).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    pub broker: NodeId,
    pub broker_epoch: BrokerEpoch,
    /// The last metadata offset the broker has applied: it is unfenced only once this reaches its registration.
    pub metadata_offset: u64,
    pub want_fence: bool,
}

/// The active controller's record of when each broker last sent a heartbeat. Soft state: lost with leadership,
/// rebuilt by giving every broker a full session from the moment this controller became active.
#[derive(Clone, Debug)]
pub struct BrokerHeartbeats {
    session_timeout: Duration,
    /// When each broker was last heard from; brokers not listed are timed from `active_since`.
    last_seen: BTreeMap<NodeId, Duration>,
    active_since: Duration,
    /// Whether fencing and unfencing may elect outside the ISR (`unclean.leader.election.enable`).
    election_policy: ElectionPolicy,
}

impl BrokerHeartbeats {
    /// `broker.session.timeout.ms` as `session_timeout`; `now` is when this controller became active.
    pub fn new(session_timeout: Duration, now: Duration) -> BrokerHeartbeats {
        BrokerHeartbeats {
            session_timeout,
            last_seen: BTreeMap::new(),
            active_since: now,
            election_policy: ElectionPolicy::default(),
        }
    }

    /// The broker-wide unclean-election default the fences and unfences this planner makes follow (false until
    /// set, Kafka's default); topics override it with `unclean.leader.election.enable`.
    pub fn set_election_policy(&mut self, policy: ElectionPolicy) {
        self.election_policy = policy;
    }

    /// Records the heartbeat and returns the records it causes: an unfence once the broker has caught up with its
    /// own registration, a fence when it asks for one.
    pub fn heartbeat(
        &mut self,
        image: &MetadataImage,
        now: Duration,
        heartbeat: &Heartbeat,
    ) -> Result<Vec<MetadataRecord>, ControllerError> {
        current_broker(image, heartbeat.broker, heartbeat.broker_epoch)?;
        self.last_seen.insert(heartbeat.broker, now);
        let fenced = image.broker(heartbeat.broker).is_some_and(|broker| broker.fenced);
        if heartbeat.want_fence && !fenced {
            return Ok(fence_records_with(image, heartbeat.broker, self.election_policy));
        }
        if fenced && !heartbeat.want_fence && heartbeat.metadata_offset >= heartbeat.broker_epoch.0 {
            let epoch = heartbeat.broker_epoch;
            let mut records = vec![MetadataRecord::UnfenceBroker { broker: heartbeat.broker, epoch }];
            records.extend(elect_returning(image, heartbeat.broker, self.election_policy));
            return Ok(records);
        }
        Ok(Vec::new())
    }

    /// The records fencing the first unfenced broker whose session expired by `now`, if any. One broker at a time
    /// (KAFKA-13173): each fence's partition changes are computed against an image that has the previous one.
    pub fn expire(&self, image: &MetadataImage, now: Duration) -> Vec<MetadataRecord> {
        let expired = image.live_brokers().find(|broker| {
            let seen = self.last_seen.get(&broker.registration.broker).copied().unwrap_or(self.active_since);
            now.saturating_sub(seen.max(self.active_since)) > self.session_timeout
        });
        match expired {
            Some(broker) => fence_records_with(image, broker.registration.broker, self.election_policy),
            None => Vec::new(),
        }
    }
}

/// Fences `broker` with unclean elections disabled everywhere: `fence_records_with` and the default policy.
pub fn fence_records(image: &MetadataImage, broker: NodeId) -> Vec<MetadataRecord> {
    fence_records_with(image, broker, ElectionPolicy::default())
}

/// Fences `broker`: the fence record, then every partition it leads or follows in sync moves on without it. A
/// partition whose ISR would become empty keeps its ISR and loses its leader (offline until a member returns),
/// because the last ISR member holds the only copy known to be complete — unless `policy` allows an unclean
/// election for its topic: then the first live replica outside the ISR leads, with an ISR of itself (Kafka's
/// unclean election; acknowledged writes it lacks are lost).
pub fn fence_records_with(
    image: &MetadataImage,
    broker: NodeId,
    policy: ElectionPolicy,
) -> Vec<MetadataRecord> {
    let Some(broker_image) = image.broker(broker) else { return Vec::new() };
    let mut records = vec![MetadataRecord::FenceBroker { broker, epoch: broker_image.epoch }];
    for topic in image.topics() {
        let unclean = policy.unclean_enabled(topic);
        for (index, partition) in topic.partitions.iter().enumerate() {
            let change = partition_without(image, (topic.id, index as i32), partition, broker, unclean);
            if let Some(change) = change {
                records.push(MetadataRecord::PartitionChange(change));
            }
        }
    }
    records
}

/// Partitions left without a leader elect `broker` as it is unfenced: those whose ISR holds it, and — where
/// `policy` allows an unclean election and no ISR member is live — those it is a replica of, with an ISR of itself.
fn elect_returning(image: &MetadataImage, broker: NodeId, policy: ElectionPolicy) -> Vec<MetadataRecord> {
    let mut records = Vec::new();
    for topic in image.topics() {
        let unclean = policy.unclean_enabled(topic);
        for (index, partition) in topic.partitions.iter().enumerate() {
            if partition.leader != NodeId::NONE || !partition.replicas.contains(&broker) {
                continue;
            }
            let isr = if partition.isr.contains(&broker) {
                partition.isr.clone()
            } else if unclean && !partition.isr.iter().any(|&node| is_live(image, node)) {
                vec![broker]
            } else {
                continue;
            };
            let change = new_leader(topic.id, index as i32, partition, broker, isr);
            records.push(MetadataRecord::PartitionChange(change));
        }
    }
    records
}

fn partition_without(
    image: &MetadataImage,
    (topic_id, partition_index): (TopicId, i32),
    partition: &PartitionImage,
    broker: NodeId,
    unclean: bool,
) -> Option<PartitionChange> {
    if !partition.isr.contains(&broker) {
        return None;
    }
    let shrunk: Vec<NodeId> = partition.isr.iter().copied().filter(|node| *node != broker).collect();
    let mut isr = if shrunk.is_empty() { partition.isr.clone() } else { shrunk };
    let live = |node: &NodeId| *node != broker && is_live(image, *node);
    let mut leader = if partition.leader == broker || partition.leader == NodeId::NONE {
        isr.iter().copied().find(live).unwrap_or(NodeId::NONE)
    } else {
        partition.leader
    };
    if leader == NodeId::NONE && unclean {
        if let Some(outsider) = unclean_leader(image, partition, broker) {
            leader = outsider;
            isr = vec![outsider];
        }
    }
    if leader == partition.leader && isr == partition.isr {
        return None;
    }
    let leader_epoch =
        if leader == partition.leader { partition.leader_epoch } else { partition.leader_epoch.next() };
    Some(PartitionChange {
        topic_id,
        partition: partition_index,
        leader,
        isr,
        leader_epoch,
        partition_epoch: partition.partition_epoch + 1,
    })
}
