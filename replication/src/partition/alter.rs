//! The controller's side of AlterPartition (KRaft's `ReplicationControlManager.alterPartition`): validate a
//! leader's proposed ISR against the image and turn it into a `PartitionChange` record, or refuse it with Kafka's
//! code. Like `metadata::plan` it reads one image and writes nothing; the image validates the record again.

use std::collections::BTreeMap;
use std::fmt;

use crate::metadata::{MetadataImage, MetadataRecord, PartitionChange, PartitionImage, TopicId};
use crate::partition::AlterPartitionRequest;
use crate::types::{LeaderEpoch, NodeId};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AlterPartitionError {
    UnknownTopicOrPartition,
    /// The leader's broker epoch is not its current registration (it restarted, or was fenced).
    StaleBrokerEpoch,
    /// The request's leader or leader epoch is not the partition's.
    FencedLeaderEpoch,
    /// The request's partition epoch is not the partition's: another change committed first.
    InvalidUpdateVersion,
    /// A new member is fenced or unknown (KIP-841).
    IneligibleReplica {
        replica: NodeId,
    },
    /// The ISR leaves out the leader, repeats a member or names a non-replica.
    InvalidRequest,
}

impl fmt::Display for AlterPartitionError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AlterPartitionError::IneligibleReplica { replica } => {
                write!(formatter, "INELIGIBLE_REPLICA: {replica} is fenced or unknown")
            }
            other => write!(formatter, "{other:?}"),
        }
    }
}

/// The record committing `request` for partition `partition` of topic `topic_id`, or why not.
pub fn plan_alter_partition(
    image: &MetadataImage,
    topic_id: TopicId,
    partition: i32,
    request: &AlterPartitionRequest,
) -> Result<Vec<MetadataRecord>, AlterPartitionError> {
    let current = image
        .topic(topic_id)
        .and_then(|topic| usize::try_from(partition).ok().and_then(|index| topic.partitions.get(index)))
        .ok_or(AlterPartitionError::UnknownTopicOrPartition)?;
    let leader_image = image.broker(request.leader).ok_or(AlterPartitionError::StaleBrokerEpoch)?;
    if leader_image.epoch != request.broker_epoch || leader_image.fenced {
        return Err(AlterPartitionError::StaleBrokerEpoch);
    }
    if current.leader != request.leader || current.leader_epoch != request.leader_epoch {
        return Err(AlterPartitionError::FencedLeaderEpoch);
    }
    if current.partition_epoch != request.partition_epoch {
        return Err(AlterPartitionError::InvalidUpdateVersion);
    }
    let distinct = request.isr.iter().enumerate().all(|(index, node)| !request.isr[..index].contains(node));
    let inside = request.isr.iter().all(|node| current.replicas.contains(node));
    if !request.isr.contains(&request.leader) || !distinct || !inside {
        return Err(AlterPartitionError::InvalidRequest);
    }
    for &replica in request.isr.iter().filter(|node| !current.isr.contains(node)) {
        if image.broker(replica).is_none_or(|broker| broker.fenced) {
            return Err(AlterPartitionError::IneligibleReplica { replica });
        }
    }
    Ok(vec![MetadataRecord::PartitionChange(PartitionChange {
        topic_id,
        partition,
        leader: current.leader,
        isr: request.isr.clone(),
        leader_epoch: current.leader_epoch,
        partition_epoch: current.partition_epoch + 1,
    })])
}

/// What the controller answers an AlterPartition: the partition as committed, or why not.
pub type AlterPartitionResult = Result<PartitionImage, AlterPartitionError>;

/// The active controller's memory of the last AlterPartition answered per partition (soft state, like
/// `BrokerHeartbeats`): a repeat of that proposal gets the same answer, an older proposal of the same leader
/// epoch is refused as stale. Kafka gets the same from one request in flight over one connection; here the network
/// may duplicate and delay, so the controller makes AlterPartition idempotent itself.
#[derive(Clone, Debug, Default)]
pub struct AlterPartitionReplies {
    last: BTreeMap<(TopicId, i32), (LeaderEpoch, u64, AlterPartitionResult)>,
}

impl AlterPartitionReplies {
    /// The answer already given to `request` (or `InvalidUpdateVersion` for an older proposal), if any.
    pub fn replay(
        &self,
        topic_id: TopicId,
        partition: i32,
        request: &AlterPartitionRequest,
    ) -> Option<Result<PartitionImage, AlterPartitionError>> {
        let (epoch, sequence, result) = self.last.get(&(topic_id, partition))?;
        if *epoch != request.leader_epoch || request.sequence > *sequence {
            return None;
        }
        if request.sequence < *sequence {
            return Some(Err(AlterPartitionError::InvalidUpdateVersion));
        }
        Some(result.clone())
    }

    pub fn record(
        &mut self,
        topic_id: TopicId,
        partition: i32,
        request: &AlterPartitionRequest,
        result: &Result<PartitionImage, AlterPartitionError>,
    ) {
        self.last.insert((topic_id, partition), (request.leader_epoch, request.sequence, result.clone()));
    }
}
