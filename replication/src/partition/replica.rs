//! `PartitionReplica`: the role one replica of one partition plays, decided by each metadata image (Kafka's
//! `Partition.makeLeader`/`makeFollower` under KRaft's `BrokerMetadataPublisher`).
//!
//! - Images older than what this replica has seen (a lower leader epoch, or the same epoch with a partition epoch
//!   not above the last) change nothing: metadata may arrive late or twice.
//! - A new leader epoch makes this replica leader (if the image names it) or follower of the named leader; a
//!   leader assigns its epoch at its log end at once (KIP-279 follow-up), so followers' divergence is answered
//!   even before it writes. A new leader never truncates; followers truncate by epoch, on every epoch change
//!   (KAFKA-7164), through the Fetch they send next.
//! - Within one leader epoch a leader takes the image's ISR, partition epoch and fencing.
//!
//! Invariants asserted: leader epochs never go back, and a replica only leads an epoch newer than any in its log.

use std::time::Duration;

use crate::metadata::{BrokerEpoch, MetadataImage, PartitionImage};
use crate::partition::{EpochHistory, FollowerState, LeaderStart, LeaderState, LogEnds, ReplicationConfig};
use crate::types::{LeaderEpoch, NodeId};
use sluice_storage::Offset;

#[derive(Clone, Debug)]
pub enum Role {
    Leader(LeaderState),
    Follower(FollowerState),
    /// Not a replica, no leader elected, or no metadata yet.
    Offline,
}

/// What an image changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    Unchanged,
    BecameLeader,
    BecameFollower,
    BecameOffline,
}

#[derive(Clone, Debug)]
pub struct PartitionReplica {
    me: NodeId,
    broker_epoch: BrokerEpoch,
    role: Role,
    /// The newest leader epoch and partition epoch seen in metadata.
    leader_epoch: LeaderEpoch,
    partition_epoch: i32,
    /// The high watermark while offline (a leader or follower keeps its own).
    high_watermark: Offset,
    config: ReplicationConfig,
}

impl PartitionReplica {
    /// A replica of a broker in its registration `broker_epoch`, before any metadata: offline, with the high
    /// watermark it recovered (zero after a crash: the high watermark is soft state).
    pub fn new(
        me: NodeId,
        broker_epoch: BrokerEpoch,
        high_watermark: Offset,
        config: ReplicationConfig,
    ) -> PartitionReplica {
        PartitionReplica {
            me,
            broker_epoch,
            role: Role::Offline,
            leader_epoch: LeaderEpoch::NONE,
            partition_epoch: -1,
            high_watermark,
            config,
        }
    }

    /// The registration epoch this replica's broker fetches and proposes with.
    pub fn broker_epoch(&self) -> BrokerEpoch {
        self.broker_epoch
    }

    /// New settings (a topic's `min.insync.replicas` changed): they apply to the current role at once.
    pub fn set_config(&mut self, config: ReplicationConfig) {
        match &mut self.role {
            Role::Leader(leader) => leader.set_config(config.clone()),
            Role::Follower(follower) => follower.set_config(config.clone()),
            Role::Offline => {}
        }
        self.config = config;
    }

    pub fn config(&self) -> &ReplicationConfig {
        &self.config
    }

    pub fn role(&self) -> &Role {
        &self.role
    }

    pub fn role_mut(&mut self) -> &mut Role {
        &mut self.role
    }

    pub fn leader_epoch(&self) -> LeaderEpoch {
        self.leader_epoch
    }

    pub fn is_leader(&self) -> bool {
        matches!(self.role, Role::Leader(_))
    }

    pub fn high_watermark(&self) -> Offset {
        match &self.role {
            Role::Leader(leader) => leader.high_watermark(),
            Role::Follower(follower) => follower.high_watermark(),
            Role::Offline => self.high_watermark,
        }
    }

    /// The log was cut while offline or following (a leader never truncates).
    pub fn truncated(&mut self, ends: LogEnds) {
        assert!(!self.is_leader(), "a leader never truncates its log");
        match &mut self.role {
            Role::Follower(follower) => follower.truncated(ends),
            _ => self.high_watermark = self.high_watermark.min(ends.log_end),
        }
    }

    /// Applies the partition's state from a newer image. `epochs` is the log's epoch history (a new leader
    /// assigns its epoch in it).
    pub fn apply_metadata(
        &mut self,
        now: Duration,
        partition: &PartitionImage,
        image: &MetadataImage,
        ends: LogEnds,
        epochs: &mut EpochHistory,
    ) -> Transition {
        let newer_epoch = partition.leader_epoch > self.leader_epoch;
        let same_epoch = partition.leader_epoch == self.leader_epoch;
        if same_epoch {
            if let Role::Leader(leader) = &mut self.role {
                leader.on_metadata(partition, image, ends);
            }
            self.partition_epoch = self.partition_epoch.max(partition.partition_epoch);
            return Transition::Unchanged;
        }
        if !newer_epoch {
            return Transition::Unchanged;
        }
        self.high_watermark = self.high_watermark();
        self.leader_epoch = partition.leader_epoch;
        self.partition_epoch = partition.partition_epoch;
        let transition = if !partition.replicas.contains(&self.me) || partition.leader == NodeId::NONE {
            self.role = Role::Offline;
            Transition::BecameOffline
        } else if partition.leader == self.me {
            self.become_leader(now, partition, image, ends, epochs);
            Transition::BecameLeader
        } else {
            let follower = FollowerState::new(
                self.me,
                partition.leader,
                partition.leader_epoch,
                self.high_watermark,
                self.config.clone(),
            );
            self.role = Role::Follower(follower);
            Transition::BecameFollower
        };
        assert!(
            self.high_watermark() <= ends.log_end,
            "high watermark past the log end after {transition:?}"
        );
        transition
    }

    fn become_leader(
        &mut self,
        now: Duration,
        partition: &PartitionImage,
        image: &MetadataImage,
        ends: LogEnds,
        epochs: &mut EpochHistory,
    ) {
        assert!(
            partition.leader_epoch > epochs.latest(),
            "{} would lead epoch {} but its log already holds epoch {}",
            self.me,
            partition.leader_epoch,
            epochs.latest()
        );
        epochs.assign(partition.leader_epoch, ends.log_end);
        let start = LeaderStart { now, ends, high_watermark: self.high_watermark };
        let leader =
            LeaderState::new(self.me, self.broker_epoch, partition, image, start, self.config.clone());
        self.role = Role::Leader(leader);
    }
}
