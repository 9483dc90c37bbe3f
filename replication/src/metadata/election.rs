//! Leader elections beyond the ISR rules of fencing: the unclean-election policy (`unclean.leader.election.enable`),
//! the ElectLeaders admin request (Kafka API 43, KIP-460: PREFERRED and UNCLEAN), the automatic preferred-leader
//! rebalance (`auto.leader.rebalance.enable`) and the repair of leaderless partitions. Like `plan`, every function
//! reads one image and writes nothing; the records it returns take effect once committed, and the image validates
//! them again (leader in the ISR, leader epoch +1 on a new leader, partition epoch +1).
//!
//! Each record a function returns touches a distinct partition, so a batch of them never fails the image's
//! partition-epoch rule against itself.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use crate::metadata::image::{MetadataImage, PartitionImage, TopicImage};
use crate::metadata::records::{MetadataRecord, PartitionChange, TopicId};
use crate::types::NodeId;

/// The topic configuration key (and broker default) allowing a replica outside the ISR to lead.
pub const UNCLEAN_LEADER_ELECTION_ENABLE: &str = "unclean.leader.election.enable";
/// Most partitions one plan changes. Below `codec::BATCH_RECORD_COUNT_MAX` (16,384), so a plan is one batch; the
/// partitions past it are answered `Deferred` and a retry elects them against the next image.
pub const PARTITION_PLAN_RECORD_COUNT_MAX: usize = 10_000;

/// How leaders may be chosen when no ISR member can lead. `unclean_default` is the broker-wide
/// `unclean.leader.election.enable` (Kafka's default: false); a topic's own setting of the key overrides it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ElectionPolicy {
    pub unclean_default: bool,
}

impl ElectionPolicy {
    /// Whether `topic` may elect a leader outside its ISR. A value other than `true` (any case) counts as false:
    /// a malformed setting never loses data.
    pub fn unclean_enabled(&self, topic: &TopicImage) -> bool {
        match topic.configs.get(UNCLEAN_LEADER_ELECTION_ENABLE) {
            Some(value) => value.trim().eq_ignore_ascii_case("true"),
            None => self.unclean_default,
        }
    }
}

/// Registered and not fenced: may lead and join ISRs.
pub(crate) fn is_live(image: &MetadataImage, node: NodeId) -> bool {
    image.broker(node).is_some_and(|broker| !broker.fenced)
}

/// The first replica, in replica order, that is live and not `excluded` (a broker being fenced in the same batch):
/// the leader an unclean election picks. Its ISR becomes just itself.
pub(crate) fn unclean_leader(
    image: &MetadataImage,
    partition: &PartitionImage,
    excluded: NodeId,
) -> Option<NodeId> {
    partition.replicas.iter().copied().find(|&node| node != excluded && is_live(image, node))
}

/// Kafka's ElectLeaders election type (KIP-460), with its wire values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElectionType {
    /// 0: move leadership to the first replica, if it is in the ISR and live.
    Preferred,
    /// 1: give a leaderless partition a leader, from outside the ISR if none inside can lead.
    Unclean,
}

impl ElectionType {
    pub fn from_code(code: i8) -> Option<ElectionType> {
        match code {
            0 => Some(ElectionType::Preferred),
            1 => Some(ElectionType::Unclean),
            _ => None,
        }
    }

    pub fn code(self) -> i8 {
        match self {
            ElectionType::Preferred => 0,
            ElectionType::Unclean => 1,
        }
    }
}

/// ElectLeaders as the active controller receives it. `partitions: None` means every partition of every topic;
/// then, as in Kafka, partitions answered `ElectionNotNeeded` are left out of the results.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElectLeadersRequest {
    pub election: ElectionType,
    pub partitions: Option<Vec<(String, i32)>>,
}

/// Why one partition of an ElectLeaders or AlterPartitionReassignments request was not carried out; `code` is
/// Kafka's error code for the per-partition result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PartitionError {
    /// UNKNOWN_TOPIC_OR_PARTITION (3).
    UnknownTopicOrPartition,
    /// PREFERRED_LEADER_NOT_AVAILABLE (80): the first replica is not in the ISR or is fenced.
    PreferredLeaderNotAvailable,
    /// ELIGIBLE_LEADERS_NOT_AVAILABLE (83): no live replica for an unclean election.
    EligibleLeadersNotAvailable,
    /// ELECTION_NOT_NEEDED (84): the preferred replica leads already, or (unclean) the partition has a leader.
    ElectionNotNeeded,
    /// NO_REASSIGNMENT_IN_PROGRESS (85): a cancellation of nothing.
    NoReassignmentInProgress,
    /// INVALID_REPLICA_ASSIGNMENT (39).
    InvalidReplicaAssignment { reason: String },
    /// REQUEST_TIMED_OUT (7), retriable: the plan already changes `PARTITION_PLAN_RECORD_COUNT_MAX` partitions.
    Deferred,
}

impl PartitionError {
    pub fn code(&self) -> i16 {
        match self {
            PartitionError::UnknownTopicOrPartition => 3,
            PartitionError::PreferredLeaderNotAvailable => 80,
            PartitionError::EligibleLeadersNotAvailable => 83,
            PartitionError::ElectionNotNeeded => 84,
            PartitionError::NoReassignmentInProgress => 85,
            PartitionError::InvalidReplicaAssignment { .. } => 39,
            PartitionError::Deferred => 7,
        }
    }
}

impl fmt::Display for PartitionError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PartitionError::InvalidReplicaAssignment { reason } => {
                write!(formatter, "invalid replica assignment: {reason}")
            }
            PartitionError::Deferred => write!(
                formatter,
                "more than {PARTITION_PLAN_RECORD_COUNT_MAX} partitions change in one request; retry"
            ),
            other => write!(formatter, "{other:?}"),
        }
    }
}

impl std::error::Error for PartitionError {}

/// A per-partition admin request's plan: the records to propose as one batch (possibly none), and one result per
/// distinct partition named, in request order. A result of `Ok` means "done once `records` commit".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartitionPlan {
    pub records: Vec<MetadataRecord>,
    pub results: Vec<((String, i32), Result<(), PartitionError>)>,
}

/// The records and per-partition results of ElectLeaders against `image`.
pub fn plan_elect_leaders(image: &MetadataImage, request: &ElectLeadersRequest) -> PartitionPlan {
    let mut plan = PartitionPlan::default();
    let mut seen = BTreeSet::new();
    let named: Vec<(String, i32)> = match &request.partitions {
        Some(partitions) => partitions.clone(),
        None => image
            .topics()
            .flat_map(|topic| (0..topic.partitions.len() as i32).map(|index| (topic.name.clone(), index)))
            .collect(),
    };
    for (topic_name, index) in named {
        if !seen.insert((topic_name.clone(), index)) {
            continue;
        }
        let result = match partition_named(image, &topic_name, index) {
            None => Err(PartitionError::UnknownTopicOrPartition),
            Some((topic, partition)) => match elect(image, topic.id, index, partition, request.election) {
                Ok(_) if plan.records.len() >= PARTITION_PLAN_RECORD_COUNT_MAX => {
                    Err(PartitionError::Deferred)
                }
                Ok(change) => {
                    plan.records.push(MetadataRecord::PartitionChange(change));
                    Ok(())
                }
                Err(error) => Err(error),
            },
        };
        if request.partitions.is_none() && result == Err(PartitionError::ElectionNotNeeded) {
            continue;
        }
        plan.results.push(((topic_name, index), result));
    }
    plan
}

pub(crate) fn partition_named<'a>(
    image: &'a MetadataImage,
    topic_name: &str,
    index: i32,
) -> Option<(&'a TopicImage, &'a PartitionImage)> {
    let topic = image.topic_by_name(topic_name)?;
    let partition = usize::try_from(index).ok().and_then(|index| topic.partitions.get(index))?;
    Some((topic, partition))
}

/// One partition's election of `election` type, as Kafka's `ReplicationControlManager.electLeader` decides it.
fn elect(
    image: &MetadataImage,
    topic_id: TopicId,
    index: i32,
    partition: &PartitionImage,
    election: ElectionType,
) -> Result<PartitionChange, PartitionError> {
    let (leader, isr) = match election {
        ElectionType::Preferred => {
            let preferred = partition.preferred_leader();
            if partition.leader == preferred {
                return Err(PartitionError::ElectionNotNeeded);
            }
            if !partition.isr.contains(&preferred) || !is_live(image, preferred) {
                return Err(PartitionError::PreferredLeaderNotAvailable);
            }
            (preferred, partition.isr.clone())
        }
        ElectionType::Unclean => {
            if partition.leader != NodeId::NONE {
                return Err(PartitionError::ElectionNotNeeded);
            }
            leaderless_choice(image, partition, true).ok_or(PartitionError::EligibleLeadersNotAvailable)?
        }
    };
    Ok(new_leader(topic_id, index, partition, leader, isr))
}

/// The leader (and ISR) for a partition without one: a live ISR member if any, keeping the ISR; else, when
/// `unclean` allows, the first live replica with the ISR reduced to it.
fn leaderless_choice(
    image: &MetadataImage,
    partition: &PartitionImage,
    unclean: bool,
) -> Option<(NodeId, Vec<NodeId>)> {
    let clean = partition
        .replicas
        .iter()
        .copied()
        .find(|&node| partition.isr.contains(&node) && is_live(image, node));
    match clean {
        Some(leader) => Some((leader, partition.isr.clone())),
        None if unclean => {
            unclean_leader(image, partition, NodeId::NONE).map(|leader| (leader, vec![leader]))
        }
        None => None,
    }
}

/// The change making `leader` lead with `isr`: a new leader epoch and the next partition epoch.
pub(crate) fn new_leader(
    topic_id: TopicId,
    index: i32,
    partition: &PartitionImage,
    leader: NodeId,
    isr: Vec<NodeId>,
) -> PartitionChange {
    PartitionChange {
        topic_id,
        partition: index,
        leader,
        isr,
        leader_epoch: partition.leader_epoch.next(),
        partition_epoch: partition.partition_epoch + 1,
    }
}

/// Elections for partitions without a leader: a live ISR member where there is one, else — for topics whose
/// policy allows it — a live replica outside the ISR. At most `count_max` records. For the active controller's
/// periodic check (KRaft runs one every 5 minutes) and after a change of `unclean.leader.election.enable`: fencing
/// and unfencing already elect, so this finds only partitions a policy change or a missed case left behind.
pub fn elect_leaderless(
    image: &MetadataImage,
    policy: ElectionPolicy,
    count_max: usize,
) -> Vec<MetadataRecord> {
    let mut records = Vec::new();
    for topic in image.topics() {
        let unclean = policy.unclean_enabled(topic);
        for (index, partition) in topic.partitions.iter().enumerate() {
            if records.len() >= count_max {
                return records;
            }
            if partition.leader != NodeId::NONE {
                continue;
            }
            if let Some((leader, isr)) = leaderless_choice(image, partition, unclean) {
                let change = new_leader(topic.id, index as i32, partition, leader, isr);
                records.push(MetadataRecord::PartitionChange(change));
            }
        }
    }
    records
}

/// `auto.leader.rebalance.enable` and its companions, with Kafka's defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaderRebalanceConfig {
    /// `auto.leader.rebalance.enable` (true).
    pub enabled: bool,
    /// `leader.imbalance.per.broker.percentage` (10): a broker whose share of preferred partitions led by another
    /// broker exceeds this has them moved back.
    pub imbalance_per_broker_percentage: u32,
    /// `leader.imbalance.check.interval.seconds` (300 s): how often the active controller calls
    /// `rebalance_leaders`; the caller keeps the timer.
    pub check_interval: Duration,
    /// Most leader moves per call (KRaft's `maxElectionsPerImbalance`, 1,000), so one batch stays small and the
    /// moves spread over several checks.
    pub election_count_max: usize,
}

impl Default for LeaderRebalanceConfig {
    fn default() -> LeaderRebalanceConfig {
        LeaderRebalanceConfig {
            enabled: true,
            imbalance_per_broker_percentage: 10,
            check_interval: Duration::from_secs(300),
            election_count_max: 1_000,
        }
    }
}

/// Preferred-leader elections that move leadership back to each partition's first replica, for brokers whose
/// imbalance ratio — partitions preferring the broker but led by another, over partitions preferring it — exceeds
/// `imbalance_per_broker_percentage` (Kafka's `checkAndTriggerAutoLeaderRebalance`). Only partitions whose
/// preferred replica is in the ISR and live move, and none under reassignment (its completion places the leader).
/// Brokers in id order, partitions in topic-id and partition order, at most `election_count_max` records; empty
/// when disabled.
pub fn rebalance_leaders(image: &MetadataImage, config: &LeaderRebalanceConfig) -> Vec<MetadataRecord> {
    if !config.enabled {
        return Vec::new();
    }
    #[derive(Default)]
    struct Preferred {
        count: u64,
        elsewhere_count: u64,
        movable: Vec<PartitionChange>,
    }
    let mut brokers: BTreeMap<NodeId, Preferred> = BTreeMap::new();
    for topic in image.topics() {
        for (index, partition) in topic.partitions.iter().enumerate() {
            let preferred = partition.preferred_leader();
            if preferred == NodeId::NONE || partition.is_reassigning() {
                continue;
            }
            let entry = brokers.entry(preferred).or_default();
            entry.count += 1;
            if partition.leader != preferred {
                entry.elsewhere_count += 1;
                if partition.isr.contains(&preferred) && is_live(image, preferred) {
                    let change =
                        new_leader(topic.id, index as i32, partition, preferred, partition.isr.clone());
                    entry.movable.push(change);
                }
            }
        }
    }
    let percentage = u64::from(config.imbalance_per_broker_percentage);
    brokers
        .into_values()
        .filter(|broker| broker.elsewhere_count * 100 > percentage * broker.count)
        .flat_map(|broker| broker.movable)
        .take(config.election_count_max)
        .map(MetadataRecord::PartitionChange)
        .collect()
}
