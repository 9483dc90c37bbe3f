//! The ISR data path of one partition replica, sans-I/O (issue 16): Kafka's `Partition`/`ReplicaManager` rules as
//! REPLICATION_FACTS.md §2 reads them from apache/kafka, with Sluice's fsync rule (§0) on top.
//!
//! - `epochs`: `EpochHistory`, the leader-epoch cache that truncation reads (KIP-101/279).
//! - `leader`: `LeaderState` — per-follower log end and last-caught-up time from Fetch, the high watermark (minimum
//!   over the maximal ISR, monotone, bounded by the leader's *durable* end, frozen below min.insync.replicas as
//!   KIP-966), ISR shrink and expand proposed as AlterPartition (KIP-497: expansion optimistic, shrink pessimistic),
//!   Fetch validation and the diverging-epoch answer (KIP-320).
//! - `follower`: `FollowerState` — what to fetch (only what is durable is reported), truncation on a diverging
//!   epoch before the leader's high watermark is taken (KAFKA-14704), stale and duplicated answers ignored.
//! - `replica`: `PartitionReplica` — the role a replica takes from each metadata image: leader or follower on a new
//!   leader epoch, stale images ignored, epochs never back.
//! - `alter`: the controller's validation of AlterPartition (leader and partition epochs, KIP-841 eligibility).
//! - `simulation` (tests only): brokers, the controller and an idempotent acks=all producer under `sim`.
//!
//! Nothing here reads a log: the driver reads and appends batches and passes the log's two end offsets in
//! (`LogEnds`), so the same code runs under the broker and under the simulator.

pub mod alter;
pub mod epochs;
pub mod follower;
pub mod leader;
pub mod replica;
#[cfg(test)]
mod simulation;
#[cfg(test)]
mod tests;

use std::time::Duration;

pub use alter::{plan_alter_partition, AlterPartitionError, AlterPartitionReplies};
pub use epochs::EpochHistory;
pub use follower::{FollowerAction, FollowerState};
pub use leader::{LeaderStart, LeaderState};
pub use replica::{PartitionReplica, Role, Transition};

use crate::metadata::BrokerEpoch;
use crate::replica::Visibility;
use crate::types::{LeaderEpoch, NodeId};
use sluice_storage::Offset;

/// Where a replica's log ends: written (Kafka's LEO) and fdatasync'd. `durable_end <= log_end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogEnds {
    pub log_end: Offset,
    pub durable_end: Offset,
}

impl LogEnds {
    pub fn new(log_end: Offset, durable_end: Offset) -> LogEnds {
        assert!(durable_end <= log_end, "durable end {durable_end} past the log end {log_end}");
        LogEnds { log_end, durable_end }
    }

    /// What this replica may count or report as held: the durable end under `fsync` (an acks=all answer means
    /// fdatasync'd on every counted replica), the written end under `interval` (Kafka's behaviour).
    pub fn reportable(&self, visibility: Visibility) -> Offset {
        match visibility {
            Visibility::Durable => self.durable_end,
            Visibility::Sequenced => self.log_end,
        }
    }
}

/// The replication settings of one partition, with Kafka's names at the configuration boundary.
#[derive(Clone, Debug, PartialEq)]
pub struct ReplicationConfig {
    /// `replica.lag.time.max.ms`: a follower that has not caught up for this long leaves the ISR.
    pub replica_lag_time_max: Duration,
    /// `min.insync.replicas`: below it, produce with acks=all is refused and the high watermark stands still.
    pub min_insync_replicas: usize,
    /// A follower resends a Fetch left unanswered this long; a leader resends an AlterPartition likewise.
    pub request_timeout: Duration,
    pub visibility: Visibility,
    /// Tests only: a rule broken on purpose so that the simulator shows it notices.
    pub broken_rule: Option<BrokenRule>,
}

/// A rule deliberately broken, so a test can show that the simulation's checker notices. Never set outside tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BrokenRule {
    /// The controller elects any live replica when the leader is fenced, in the ISR or not (unclean election).
    ElectOutsideIsr,
    /// acks=all is answered as soon as the leader has appended (acks=1).
    AcknowledgeBeforeHighWatermark,
    /// Kafka without fsync: followers report their written end and the leader counts its own written end.
    CountUnsyncedOffsets,
    /// The high watermark is the minimum over the followers that have fetched, not over the whole ISR.
    HighWatermarkOverFetchers,
}

/// A follower's Fetch for one partition (Fetch v15: `ReplicaState`, `CurrentLeaderEpoch`, `LastFetchedEpoch`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FetchRequest {
    pub replica: NodeId,
    pub replica_epoch: BrokerEpoch,
    pub current_leader_epoch: LeaderEpoch,
    /// The follower's log end, all of it durable under `fsync`: the leader counts it as held.
    pub fetch_offset: Offset,
    /// The epoch of the follower's last batch (`LeaderEpoch::NONE` for an empty log).
    pub last_fetched_epoch: LeaderEpoch,
}

/// The leader's decision on a Fetch; the driver attaches the batches of `Records` from its log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FetchAnswer {
    Records {
        from: Offset,
        high_watermark: Offset,
    },
    /// KIP-320: the follower's log diverges; this is where the largest epoch at or below its last one ends here.
    Diverging {
        epoch: LeaderEpoch,
        end_offset: Offset,
    },
    Error(FetchError),
}

/// Kafka's codes for a refused Fetch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FetchError {
    /// The follower's leader epoch is older than the leader's.
    FencedLeaderEpoch,
    /// The follower's leader epoch is newer than the leader's (its metadata is ahead): retry.
    UnknownLeaderEpoch,
    /// Not a replica, not this leader, or a stale broker epoch (KIP-903).
    NotLeaderOrFollower,
    OffsetOutOfRange,
}

/// KIP-497's AlterPartition, for one partition: the ISR the leader wants, stamped with what it believes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlterPartitionRequest {
    /// The leader's proposal number in this leader epoch; a resend keeps it. The controller answers a repeat
    /// with its first answer and refuses older ones (`AlterPartitionReplies`), so a copy of a refused proposal
    /// still in flight can never be applied later: the leader may drop a change the controller refused.
    pub sequence: u64,
    pub leader: NodeId,
    pub broker_epoch: BrokerEpoch,
    pub leader_epoch: LeaderEpoch,
    pub partition_epoch: i32,
    pub isr: Vec<NodeId>,
}

/// Why a produce was refused before it was appended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProduceError {
    NotLeaderOrFollower,
    /// The ISR is smaller than min.insync.replicas (checked before the append).
    NotEnoughReplicas,
}
