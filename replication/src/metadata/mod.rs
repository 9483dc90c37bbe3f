//! The cluster's metadata as a replicated state machine: typed records (`records`), their binary encoding
//! (`codec`), the immutable `MetadataImage` they build (`image`), and the controller that turns admin requests into
//! records (`controller`, with replica `placement`), elects leaders (`election`: the unclean policy, ElectLeaders,
//! the preferred-leader rebalance) and moves replicas (`reassignment`, KIP-455). Nothing here knows about Raft:
//! `crate::quorum` carries encoded record batches through the log and applies the committed ones to the image.

pub mod codec;
pub mod controller;
pub mod election;
pub mod image;
pub mod placement;
pub mod reassignment;
pub mod records;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_election;
#[cfg(test)]
mod tests_reassignment;

pub use codec::{decode_batch, encode_batch, CodecError};
pub use controller::{
    plan, AdminRequest, BrokerHeartbeats, ControllerError, Heartbeat, PRODUCER_ID_BLOCK_SIZE,
};
pub use election::{
    elect_leaderless, plan_elect_leaders, rebalance_leaders, ElectLeadersRequest, ElectionPolicy,
    ElectionType, LeaderRebalanceConfig, PartitionError, PartitionPlan, PARTITION_PLAN_RECORD_COUNT_MAX,
    UNCLEAN_LEADER_ELECTION_ENABLE,
};
pub use image::{BrokerImage, ImageError, MetadataImage, PartitionImage, TopicImage};
pub use reassignment::{
    complete_reassignments, complete_reassignments_after, plan_alter_reassignments, OngoingReassignment,
    ReassignmentTarget,
};
pub use records::{
    BrokerEpoch, BrokerRegistration, ConfigChange, ConfigResource, Listener, MetadataRecord, PartitionChange,
    PartitionRecord, ProducerIdsBlock, ReplicasChange, TopicId, TopicRecord,
};
