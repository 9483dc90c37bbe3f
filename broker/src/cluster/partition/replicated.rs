//! Cluster mode: one partition replica's part in replication (issue 16). The rules live in
//! `sluice_replication::partition` (sans-I/O: `PartitionReplica`, `LeaderState`, `FollowerState`); this file feeds
//! them what the log did and carries out what they decide.
//!
//! - Metadata: every installed image goes through [`Partition::apply_metadata`]; a new leader epoch makes this
//!   replica leader or follower (the storage seam's `ReplicaState` follows, so produce and reads see the role).
//! - As leader: a follower's Fetch ([`Partition::replica_read`]) records its progress and may move the high
//!   watermark (the minimum over the ISR, bounded by this log's durable end under `fsync`); a replicated acks=all
//!   produce waits for it ([`Partition::wait_replicated`]); ISR changes leave as AlterPartition requests taken by
//!   the shard's replication driver ([`Partition::replication_tick`]).
//! - As follower: the shard's fetcher asks [`Partition::follower_fetch`] what to fetch and hands the answer to
//!   [`Partition::on_fetch_answer`], which appends (durably, before the next Fetch reports it) or truncates a
//!   divergent tail.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_replication::metadata::{MetadataImage, PartitionImage};
use sluice_replication::partition::{
    AlterPartitionError, AlterPartitionRequest, EpochHistory, FetchAnswer, FetchError, FetchRequest,
    FollowerAction, LogEnds, PartitionReplica, ReplicationConfig, Role as ReplicaRole, Transition,
};
use sluice_replication::{Acks, LeaderEpoch, NodeId, Role};
use sluice_storage::{Offset, Storage};

use super::{Partition, PartitionReply, PartitionResult};
use crate::cluster::producer_state::ProducerStateTable;
use crate::errors::{from_log_error, ErrorCode, KafkaError, ResponseError};

/// How long a replicated acks=all produce waits for the ISR before REQUEST_TIMED_OUT: the producers' default
/// `request.timeout.ms` (30 s), which is also the Produce request's own timeout they send.
const REPLICATED_ACK_TIMEOUT: Duration = Duration::from_secs(30);

/// The process's monotonic time for replication's rules (lag, resends), as the sans-I/O core takes it.
pub fn replication_now() -> Duration {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed()
}

fn fetch_error_code(error: FetchError) -> ErrorCode {
    match error {
        FetchError::FencedLeaderEpoch => ResponseError::FencedLeaderEpoch.into(),
        FetchError::UnknownLeaderEpoch => ResponseError::UnknownLeaderEpoch.into(),
        FetchError::NotLeaderOrFollower => ResponseError::NotLeaderOrFollower.into(),
        FetchError::OffsetOutOfRange => ResponseError::OffsetOutOfRange.into(),
    }
}

impl<S: Storage> Partition<S> {
    /// The log's two ends as the replica seam knows them (the durable end never past the sequenced end).
    fn ends(&self) -> LogEnds {
        let log_end = self.replica.borrow().log_end();
        LogEnds::new(log_end, self.log.durable_offset().min(log_end))
    }

    /// The log's leader-epoch cache (storage's checkpoint) in the sans-I/O core's form.
    fn epoch_history(&self) -> EpochHistory {
        let mut history = EpochHistory::new();
        for entry in self.log.leader_epochs() {
            history.assign(LeaderEpoch(entry.epoch), entry.start_offset);
        }
        history
    }

    /// The leader this replica follows now, if it follows one.
    pub fn followed_leader(&self) -> Option<NodeId> {
        match self.replication.borrow().as_ref().map(PartitionReplica::role) {
            Some(ReplicaRole::Follower(follower)) => Some(follower.leader()),
            _ => None,
        }
    }

    /// Whether this replica leads in cluster mode (replication decides its high watermark).
    pub fn is_replicated_leader(&self) -> bool {
        self.replication.borrow().as_ref().is_some_and(PartitionReplica::is_leader)
    }

    /// The ISR as this leader counts it (committed plus a pending expansion), if it leads.
    pub fn leader_isr(&self) -> Option<Vec<NodeId>> {
        match self.replication.borrow().as_ref().map(PartitionReplica::role) {
            Some(ReplicaRole::Leader(leader)) => Some(leader.maximal_isr()),
            _ => None,
        }
    }

    /// Applies the partition's state from an installed image (cluster mode). `me` must be registered in it with
    /// this process's incarnation (the caller checks). A new leader epoch makes this replica leader or follower;
    /// within an epoch a leader takes the ISR and the brokers' fencing.
    pub fn apply_metadata(
        &self,
        me: NodeId,
        partition: &PartitionImage,
        image: &MetadataImage,
        config: ReplicationConfig,
    ) {
        assert!(self.cluster_member, "{} is not a cluster member", self.topic_partition);
        let Some(broker) = image.broker(me) else { return };
        let now = replication_now();
        let ends = self.ends();
        let mut epochs = self.epoch_history();
        let transition = {
            let mut slot = self.replication.borrow_mut();
            let high_watermark = self.high_watermark();
            let replica = slot.get_or_insert_with(|| {
                PartitionReplica::new(me, broker.epoch, high_watermark, config.clone())
            });
            if *replica.config() != config {
                replica.set_config(config);
            }
            let newer = partition.leader_epoch > replica.leader_epoch();
            if newer && partition.leader == me && partition.leader_epoch <= epochs.latest() {
                // Never lead an epoch the log already holds: another replica may hold a different tail of it.
                log::error!(
                    "{}: metadata makes this broker leader of epoch {} which its log already holds (latest {}): \
                     not leading",
                    self.topic_partition,
                    partition.leader_epoch,
                    epochs.latest()
                );
                return;
            }
            replica.apply_metadata(now, partition, image, ends, &mut epochs)
        };
        match transition {
            Transition::BecameLeader => {
                self.replica.borrow_mut().become_leader(partition.leader_epoch);
                log::info!(
                    "{}: leader in epoch {} (ISR {:?}, log end {}, high watermark {})",
                    self.topic_partition,
                    partition.leader_epoch,
                    partition.isr,
                    ends.log_end,
                    self.high_watermark()
                );
            }
            Transition::BecameFollower | Transition::BecameOffline => {
                self.replica.borrow_mut().become_follower(partition.leader_epoch);
                log::debug!(
                    "{}: {transition:?} in epoch {} (leader {})",
                    self.topic_partition,
                    partition.leader_epoch,
                    partition.leader
                );
            }
            Transition::Unchanged => {}
        }
        self.leader_log_moved();
        // Waiting acks=all produces re-check leadership and the ISR; parked follower fetches re-validate.
        self.data_arrived.notify_all();
        self.log_grew.notify_all();
    }

    /// A replicated leader's log or ISR moved: recompute the high watermark and publish it if it rose.
    pub(super) fn leader_log_moved(&self) {
        let ends = self.ends();
        let high_watermark = {
            let mut slot = self.replication.borrow_mut();
            match slot.as_mut().map(PartitionReplica::role_mut) {
                Some(ReplicaRole::Leader(leader)) => {
                    leader.on_log_moved(ends);
                    leader.high_watermark()
                }
                _ => return,
            }
        };
        let moved = {
            let mut state = self.replica.borrow_mut();
            if state.role() != Role::Leader {
                return;
            }
            state.durable(ends.durable_end);
            let bound = high_watermark.min(state.log_end());
            state.replicated_high_watermark(bound)
        };
        if moved.is_some() {
            self.publish_high_watermark();
        }
    }

    /// Cluster mode, before a produce: only a leader appends, and acks=all needs `min.insync.replicas` in the ISR
    /// (NOT_ENOUGH_REPLICAS, nothing appended).
    pub(super) fn check_replicated_produce(&self, acks: Acks) -> Result<(), KafkaError> {
        let slot = self.replication.borrow();
        match slot.as_ref().map(PartitionReplica::role) {
            Some(ReplicaRole::Leader(leader)) => {
                if matches!(acks, Acks::All) && leader.check_append().is_err() {
                    return Err(KafkaError::with_message(
                        ResponseError::NotEnoughReplicas,
                        format!(
                            "{}: ISR {:?} is smaller than min.insync.replicas {}",
                            self.topic_partition,
                            leader.isr(),
                            leader.min_insync_replicas()
                        ),
                    ));
                }
                Ok(())
            }
            _ => Err(KafkaError::new(ResponseError::NotLeaderOrFollower)),
        }
    }

    /// A replicated acks=all: waits until the high watermark passes `end` while this replica still leads in
    /// `epoch`. Leadership lost: NOT_LEADER_OR_FOLLOWER (the producer retries on the new leader; an idempotent
    /// retry is deduplicated there). The ISR below `min.insync.replicas`: NOT_ENOUGH_REPLICAS_AFTER_APPEND.
    pub(super) async fn wait_replicated(&self, end: Offset, epoch: LeaderEpoch) -> Result<(), KafkaError> {
        let deadline = Instant::now() + REPLICATED_ACK_TIMEOUT;
        loop {
            let arrived = self.data_arrived.notified();
            let leads = !self.closed.get()
                && self.replica.borrow().role() == Role::Leader
                && self.leader_epoch() == epoch
                && self.is_replicated_leader();
            if !leads {
                return Err(KafkaError::with_message(
                    ResponseError::NotLeaderOrFollower,
                    format!("{}: leadership moved before the ISR held the records", self.topic_partition),
                ));
            }
            if self.high_watermark() >= end {
                return Ok(());
            }
            if let Some(error) = self.isr_shortfall() {
                return Err(error);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(KafkaError::with_message(
                    ResponseError::RequestTimedOut,
                    format!(
                        "{}: the ISR did not reach offset {end} within {REPLICATED_ACK_TIMEOUT:?}",
                        self.topic_partition
                    ),
                ));
            }
            futures_lite::future::or(arrived, glommio::timer::sleep(left)).await;
        }
    }

    fn isr_shortfall(&self) -> Option<KafkaError> {
        let slot = self.replication.borrow();
        let Some(ReplicaRole::Leader(leader)) = slot.as_ref().map(PartitionReplica::role) else {
            return None;
        };
        (leader.isr().len() < leader.min_insync_replicas()).then(|| {
            KafkaError::with_message(
                ResponseError::NotEnoughReplicasAfterAppend,
                format!(
                    "{}: appended, but the ISR {:?} fell below min.insync.replicas {}",
                    self.topic_partition,
                    leader.isr(),
                    leader.min_insync_replicas()
                ),
            )
        })
    }

    /// The leader's answer to a follower's Fetch: its progress is recorded first (the high watermark may move),
    /// then the batches from its fetch offset up to the log end — or where its log diverges, or Kafka's error.
    pub(super) async fn replica_read(&self, request: &FetchRequest, size_max: usize) -> PartitionResult {
        let ends = self.ends();
        let epochs = self.epoch_history();
        let answer = {
            let mut slot = self.replication.borrow_mut();
            match slot.as_mut().map(PartitionReplica::role_mut) {
                Some(ReplicaRole::Leader(leader)) => {
                    leader.on_fetch(replication_now(), request, ends, &epochs)
                }
                _ => FetchAnswer::Error(FetchError::NotLeaderOrFollower),
            }
        };
        self.leader_log_moved();
        let reply = |batches, diverging, error| PartitionReply::ReplicaRead {
            batches,
            high_watermark: self.high_watermark(),
            log_start_offset: self.log.log_start_offset(),
            diverging,
            error,
        };
        Ok(match answer {
            FetchAnswer::Records { from, .. } => {
                let batches =
                    if from < ends.log_end { self.read_replica(from, size_max).await? } else { Vec::new() };
                reply(batches, None, ErrorCode::NONE)
            }
            FetchAnswer::Diverging { epoch, end_offset } => {
                reply(Vec::new(), Some((epoch, end_offset)), ErrorCode::NONE)
            }
            FetchAnswer::Error(error) => reply(Vec::new(), None, fetch_error_code(error)),
        })
    }

    /// Woken on every append (a follower's Fetch long-polls here).
    pub fn log_grew(&self) -> &crate::sync::Notify {
        &self.log_grew
    }

    /// The Fetch this follower should send now, if any (none while one is in flight, or while its log has
    /// unsynced data under `fsync`: the offset it reports must survive a crash).
    pub fn follower_fetch(&self) -> Option<FetchRequest> {
        let ends = self.ends();
        let epochs = self.epoch_history();
        let mut slot = self.replication.borrow_mut();
        let replica = slot.as_mut()?;
        let broker_epoch = replica.broker_epoch();
        match replica.role_mut() {
            ReplicaRole::Follower(follower) => {
                follower.fetch_request(replication_now(), ends, &epochs, broker_epoch)
            }
            _ => None,
        }
    }

    /// The Fetch in flight got no answer (its connection failed).
    pub fn abandon_fetch(&self) {
        if let Some(ReplicaRole::Follower(follower)) =
            self.replication.borrow_mut().as_mut().map(|r| r.role_mut())
        {
            follower.abandon_fetch();
        }
    }

    /// The leader `from` answered `request`: appends the batches (returning once they are durable here), or cuts
    /// a divergent tail, as the follower's rules decide; stale answers change nothing.
    pub async fn on_fetch_answer(
        &self,
        from: NodeId,
        request: &FetchRequest,
        answer: FetchAnswer,
        records: Option<Bytes>,
    ) -> Result<(), KafkaError> {
        let ends = self.ends();
        let epochs = self.epoch_history();
        let action = {
            let mut slot = self.replication.borrow_mut();
            match slot.as_mut().map(PartitionReplica::role_mut) {
                Some(ReplicaRole::Follower(follower)) => {
                    follower.on_fetch_answer(from, request, answer, ends, &epochs)
                }
                _ => FollowerAction::Ignore,
            }
        };
        match action {
            FollowerAction::Ignore => Ok(()),
            FollowerAction::Append { high_watermark } => {
                if let Some(records) = records.filter(|records| !records.is_empty()) {
                    self.append_replicated(records, high_watermark).await?;
                }
                let ends = self.ends();
                if let Some(ReplicaRole::Follower(follower)) =
                    self.replication.borrow_mut().as_mut().map(|r| r.role_mut())
                {
                    follower.appended(high_watermark, ends);
                }
                if self.replica.borrow().role() == Role::Follower {
                    self.follower_high_watermark(high_watermark);
                }
                Ok(())
            }
            FollowerAction::Truncate { offset } => {
                self.truncate_replica(offset).await?;
                let ends = self.ends();
                if let Some(ReplicaRole::Follower(follower)) =
                    self.replication.borrow_mut().as_mut().map(|r| r.role_mut())
                {
                    follower.truncated(ends);
                }
                Ok(())
            }
        }
    }

    /// Cuts this follower's log at `offset` (a divergent tail, KIP-279) and rebuilds the idempotent producers'
    /// state for the log as it now is.
    async fn truncate_replica(&self, offset: Offset) -> Result<(), KafkaError> {
        assert!(!self.is_replicated_leader(), "{}: a leader never truncates", self.topic_partition);
        let before = self.log.log_end_offset();
        self.log.truncate_to(offset).await.map_err(|error| from_log_error(&error))?;
        let end = self.log.log_end_offset();
        self.replica.borrow_mut().truncated_to(end);
        let expiration_ms = self.producers.borrow().expiration_ms();
        *self.producers.borrow_mut() = ProducerStateTable::new(expiration_ms);
        self.load_producer_state().await;
        log::warn!(
            "{}: divergent tail cut: log end {before} -> {end} (the leader's epoch history ends there)",
            self.topic_partition
        );
        Ok(())
    }

    /// The leader's follower follows the leader's log start (DeleteRecords, retention) within what it holds.
    pub async fn follow_log_start(&self, leader_log_start: Offset) {
        let own = self.log.log_start_offset();
        if leader_log_start <= own || leader_log_start > self.high_watermark() {
            return;
        }
        match self.log.delete_before(leader_log_start).await {
            Ok(start) => self.replica.borrow_mut().log_start_moved(start),
            Err(error) => log::warn!("{}: following the leader's log start: {error}", self.topic_partition),
        }
    }

    /// The replication driver's periodic call on a leader: ISR shrink for followers that lag too long, and the
    /// AlterPartition to send now (new, or unanswered past the resend time), if any.
    pub fn replication_tick(&self) -> Option<AlterPartitionRequest> {
        let ends = self.ends();
        let request = {
            let mut slot = self.replication.borrow_mut();
            match slot.as_mut().map(PartitionReplica::role_mut) {
                Some(ReplicaRole::Leader(leader)) => {
                    let now = replication_now();
                    leader.on_tick(now, ends);
                    leader.take_alter_partition(now)
                }
                _ => None,
            }
        };
        self.leader_log_moved();
        request
    }

    /// The controller answered an AlterPartition: committed (the partition as it is now), or refused.
    pub fn on_alter_partition_answer(
        &self,
        request: &AlterPartitionRequest,
        result: Result<&PartitionImage, &AlterPartitionError>,
    ) {
        let ends = self.ends();
        if let Some(ReplicaRole::Leader(leader)) =
            self.replication.borrow_mut().as_mut().map(|r| r.role_mut())
        {
            leader.on_alter_partition_answer(request, result, ends);
        }
        self.leader_log_moved();
        self.data_arrived.notify_all();
    }
}
