//! `LeaderState`: the leader's side of one partition (Kafka's `Partition` as leader, `Replica.updateFetchState`).
//!
//! Rules, each from REPLICATION_FACTS.md §2:
//! - A Fetch with an older leader epoch is FENCED_LEADER_EPOCH, a newer one UNKNOWN_LEADER_EPOCH, a stale broker
//!   epoch or a non-replica NOT_LEADER_OR_FOLLOWER. A Fetch whose last fetched epoch ends earlier here (or does not
//!   exist here) gets the diverging epoch and changes no follower state.
//! - A follower's log end is its fetch offset; it caught up at this fetch if that reaches the leader's log end now,
//!   or at the previous fetch if it reaches the leader's log end then.
//! - The high watermark is the minimum of the leader's *durable* end (under `fsync`) and every maximal-ISR
//!   member's log end; it only rises, never for a member not yet heard from in this epoch, and not at all while the
//!   maximal ISR is smaller than min(min.insync.replicas, replicas) (KIP-966).
//! - One AlterPartition at a time. Expand when a follower reaches the high watermark and the epoch start (and is an
//!   unfenced broker of the epoch it fetched with); shrink members that have not caught up for
//!   `replica_lag_time_max`. The maximal ISR (committed ∪ pending) counts for the high watermark at once; a shrink
//!   counts only once committed.
//!
//! Invariants asserted: `high_watermark <= log_end`, `high_watermark <= durable_end` under `fsync`, the high
//! watermark never falls, the leader is in its ISR.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::metadata::{BrokerEpoch, MetadataImage, PartitionImage};
use crate::partition::{
    AlterPartitionError, AlterPartitionRequest, BrokenRule, EpochHistory, FetchAnswer, FetchError,
    FetchRequest, LogEnds, ProduceError, ReplicationConfig,
};
use crate::types::{LeaderEpoch, NodeId};
use sluice_storage::Offset;

/// What the leader knows of one follower in this leader epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
struct FollowerProgress {
    /// None until the follower's first valid Fetch in this epoch: an unknown member holds the high watermark back.
    log_end: Option<Offset>,
    last_caught_up_at: Duration,
    last_fetch_at: Duration,
    /// The leader's log end at the follower's previous fetch.
    last_fetch_leader_end: Offset,
}

#[derive(Clone, Debug)]
struct PendingChange {
    request: AlterPartitionRequest,
    sent_at: Option<Duration>,
    /// Refused for a reason that does not prove it was not applied (a stale partition or leader epoch: an
    /// earlier copy may have committed, its answer lost). Kafka's `handleAlterPartitionError` gives up resending
    /// but keeps the pending state, and so the maximal ISR, until metadata settles it.
    awaiting_metadata: bool,
}

/// Where a new leader starts: the time, its log's ends, and the high watermark it had as a follower (it only
/// rises from there).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaderStart {
    pub now: Duration,
    pub ends: LogEnds,
    pub high_watermark: Offset,
}

#[derive(Clone, Debug)]
pub struct LeaderState {
    me: NodeId,
    broker_epoch: BrokerEpoch,
    leader_epoch: LeaderEpoch,
    partition_epoch: i32,
    replicas: Vec<NodeId>,
    /// The ISR the controller committed.
    isr: Vec<NodeId>,
    pending: Option<PendingChange>,
    followers: BTreeMap<NodeId, FollowerProgress>,
    /// Broker epochs of unfenced brokers, from the newest metadata: who may join the ISR, whose Fetch is current.
    unfenced_epochs: BTreeMap<NodeId, BrokerEpoch>,
    high_watermark: Offset,
    /// The sequence of the last AlterPartition proposed in this leader epoch.
    alter_sequence_next: u64,
    /// The log end when this leader took over: a follower joins the ISR only once it holds this epoch's start.
    epoch_start_offset: Offset,
    config: ReplicationConfig,
}

impl LeaderState {
    /// Leads `partition` from `now`, with the high watermark this replica had as a follower (it only rises from
    /// there). Every follower starts caught up as of now, with an unknown log end.
    pub fn new(
        me: NodeId,
        broker_epoch: BrokerEpoch,
        partition: &PartitionImage,
        image: &MetadataImage,
        start: LeaderStart,
        config: ReplicationConfig,
    ) -> LeaderState {
        let LeaderStart { now, ends, high_watermark } = start;
        assert_eq!(partition.leader, me, "{me} leads a partition whose leader is {}", partition.leader);
        let progress = FollowerProgress {
            log_end: None,
            last_caught_up_at: now,
            last_fetch_at: now,
            last_fetch_leader_end: ends.log_end,
        };
        let followers = partition
            .replicas
            .iter()
            .filter(|&&node| node != me)
            .map(|&node| (node, progress.clone()))
            .collect();
        let state = LeaderState {
            me,
            broker_epoch,
            leader_epoch: partition.leader_epoch,
            partition_epoch: partition.partition_epoch,
            replicas: partition.replicas.clone(),
            isr: partition.isr.clone(),
            pending: None,
            followers,
            unfenced_epochs: unfenced_epochs(image),
            high_watermark: high_watermark.min(ends.log_end),
            alter_sequence_next: 0,
            epoch_start_offset: ends.log_end,
            config,
        };
        state.check(ends);
        state
    }

    pub fn leader_epoch(&self) -> LeaderEpoch {
        self.leader_epoch
    }

    pub fn set_config(&mut self, config: ReplicationConfig) {
        self.config = config;
    }

    pub fn min_insync_replicas(&self) -> usize {
        self.config.min_insync_replicas
    }

    pub fn partition_epoch(&self) -> i32 {
        self.partition_epoch
    }

    pub fn high_watermark(&self) -> Offset {
        self.high_watermark
    }

    pub fn isr(&self) -> &[NodeId] {
        &self.isr
    }

    /// The committed ISR plus a pending expansion (KIP-497): the set the high watermark waits for.
    pub fn maximal_isr(&self) -> Vec<NodeId> {
        let mut maximal = self.isr.clone();
        if let Some(pending) = &self.pending {
            maximal.extend(pending.request.isr.iter().filter(|node| !self.isr.contains(node)));
        }
        maximal
    }

    /// The ISR change in flight, if any, and whether it waits for metadata (refused, maybe applied).
    pub fn pending_alter_partition(&self) -> Option<(&AlterPartitionRequest, bool)> {
        self.pending.as_ref().map(|pending| (&pending.request, pending.awaiting_metadata))
    }

    /// Kafka's up-front check of `appendRecordsToLeader` for acks=all: NOT_ENOUGH_REPLICAS below min.insync.
    pub fn check_append(&self) -> Result<(), ProduceError> {
        if self.isr.len() < self.config.min_insync_replicas {
            return Err(ProduceError::NotEnoughReplicas);
        }
        Ok(())
    }

    /// Answers a follower's Fetch and records its progress; may start an ISR expansion (`take_alter_partition`).
    pub fn on_fetch(
        &mut self,
        now: Duration,
        request: &FetchRequest,
        ends: LogEnds,
        epochs: &EpochHistory,
    ) -> FetchAnswer {
        if let Err(error) = self.validate_fetch(request) {
            return FetchAnswer::Error(error);
        }
        if request.last_fetched_epoch != LeaderEpoch::NONE {
            let (epoch, end_offset) = epochs.end_offset_for(request.last_fetched_epoch, ends.log_end);
            if epoch < request.last_fetched_epoch || end_offset < request.fetch_offset {
                return FetchAnswer::Diverging { epoch, end_offset };
            }
        }
        if request.fetch_offset > ends.log_end {
            return FetchAnswer::Error(FetchError::OffsetOutOfRange);
        }
        self.record_progress(now, request.replica, request.fetch_offset, ends.log_end);
        self.maybe_expand(request);
        self.maybe_advance(ends);
        self.check(ends);
        FetchAnswer::Records { from: request.fetch_offset, high_watermark: self.high_watermark }
    }

    fn validate_fetch(&self, request: &FetchRequest) -> Result<(), FetchError> {
        if request.current_leader_epoch < self.leader_epoch {
            return Err(FetchError::FencedLeaderEpoch);
        }
        if request.current_leader_epoch > self.leader_epoch {
            return Err(FetchError::UnknownLeaderEpoch);
        }
        if !self.followers.contains_key(&request.replica) {
            return Err(FetchError::NotLeaderOrFollower);
        }
        match self.unfenced_epochs.get(&request.replica) {
            Some(&epoch) if epoch != request.replica_epoch => Err(FetchError::NotLeaderOrFollower),
            _ => Ok(()),
        }
    }

    /// Kafka's `Replica.updateFetchStateOrThrow`.
    fn record_progress(&mut self, now: Duration, replica: NodeId, fetch_offset: Offset, leader_end: Offset) {
        let Some(progress) = self.followers.get_mut(&replica) else { return };
        if fetch_offset >= leader_end {
            progress.last_caught_up_at = now;
        } else if fetch_offset >= progress.last_fetch_leader_end {
            progress.last_caught_up_at = progress.last_caught_up_at.max(progress.last_fetch_at);
        }
        progress.log_end = Some(fetch_offset);
        progress.last_fetch_at = now;
        progress.last_fetch_leader_end = leader_end;
    }

    fn maybe_expand(&mut self, request: &FetchRequest) {
        let replica = request.replica;
        if self.pending.is_some() || self.isr.contains(&replica) {
            return;
        }
        let eligible = self.unfenced_epochs.get(&replica) == Some(&request.replica_epoch);
        let caught_up =
            request.fetch_offset >= self.high_watermark && request.fetch_offset >= self.epoch_start_offset;
        if eligible && caught_up {
            let mut isr = self.isr.clone();
            isr.push(replica);
            self.propose(isr);
        }
    }

    /// Time passed: shrink the ISR of members that fell behind for too long. The driver then sends
    /// `take_alter_partition` (a new proposal, or one unanswered for `request_timeout`).
    pub fn on_tick(&mut self, now: Duration, ends: LogEnds) {
        if self.pending.is_some() {
            return;
        }
        let lag_max = self.config.replica_lag_time_max;
        let lagging: Vec<NodeId> = self
            .isr
            .iter()
            .copied()
            .filter(|node| *node != self.me)
            .filter(|node| {
                self.followers.get(node).is_some_and(|progress| {
                    progress.log_end != Some(ends.log_end)
                        && now.saturating_sub(progress.last_caught_up_at) > lag_max
                })
            })
            .collect();
        if !lagging.is_empty() {
            let isr = self.isr.iter().copied().filter(|node| !lagging.contains(node)).collect();
            self.propose(isr);
        }
    }

    fn propose(&mut self, isr: Vec<NodeId>) {
        assert!(isr.contains(&self.me), "{me} proposed an ISR {isr:?} without itself", me = self.me);
        self.alter_sequence_next += 1;
        let request = AlterPartitionRequest {
            sequence: self.alter_sequence_next,
            leader: self.me,
            broker_epoch: self.broker_epoch,
            leader_epoch: self.leader_epoch,
            partition_epoch: self.partition_epoch,
            isr,
        };
        self.pending = Some(PendingChange { request, sent_at: None, awaiting_metadata: false });
    }

    /// The AlterPartition to send now: a new one, or the pending one again after `request_timeout`.
    pub fn take_alter_partition(&mut self, now: Duration) -> Option<AlterPartitionRequest> {
        let timeout = self.config.request_timeout;
        let pending = self.pending.as_mut().filter(|pending| !pending.awaiting_metadata)?;
        let due = pending.sent_at.is_none_or(|sent_at| now.saturating_sub(sent_at) >= timeout);
        due.then(|| {
            pending.sent_at = Some(now);
            pending.request.clone()
        })
    }

    /// The controller answered `request`: a committed state (adopted if newer), or a refusal. Only a refusal
    /// that proves the change was never applied and never will be (INELIGIBLE_REPLICA, an invalid ISR: the
    /// partition epoch was current) drops the pending change, and only if it answers the pending proposal; any
    /// other keeps the maximal ISR until metadata says what holds, because dropping an expansion that did commit
    /// would let the high watermark pass a member the controller may elect.
    pub fn on_alter_partition_answer(
        &mut self,
        request: &AlterPartitionRequest,
        result: Result<&PartitionImage, &AlterPartitionError>,
        ends: LogEnds,
    ) {
        // The whole request, not only its sequence: sequences restart with every leader epoch.
        let answers_pending = self.pending.as_ref().is_some_and(|pending| pending.request == *request);
        match result {
            Ok(partition) => self.adopt(partition),
            Err(AlterPartitionError::IneligibleReplica { .. } | AlterPartitionError::InvalidRequest)
                if answers_pending =>
            {
                self.pending = None
            }
            Err(_) => {
                if let Some(pending) = self.pending.as_mut().filter(|_| answers_pending) {
                    pending.awaiting_metadata = true;
                }
            }
        }
        self.maybe_advance(ends);
        self.check(ends);
    }

    /// A newer image in this leader epoch: adopt its ISR and partition epoch and the brokers' fencing.
    pub fn on_metadata(&mut self, partition: &PartitionImage, image: &MetadataImage, ends: LogEnds) {
        assert_eq!(partition.leader_epoch, self.leader_epoch, "a new leader epoch is a new LeaderState");
        self.unfenced_epochs = unfenced_epochs(image);
        self.adopt(partition);
        self.maybe_advance(ends);
        self.check(ends);
    }

    fn adopt(&mut self, partition: &PartitionImage) {
        if partition.leader_epoch != self.leader_epoch || partition.partition_epoch <= self.partition_epoch {
            return;
        }
        self.partition_epoch = partition.partition_epoch;
        self.isr = partition.isr.clone();
        self.pending = None;
    }

    /// The log moved (an append, a sync): the high watermark may rise. Returns it if it did.
    pub fn on_log_moved(&mut self, ends: LogEnds) -> Option<Offset> {
        let moved = self.maybe_advance(ends);
        self.check(ends);
        moved
    }

    fn maybe_advance(&mut self, ends: LogEnds) -> Option<Offset> {
        let maximal = self.maximal_isr();
        let required = self.config.min_insync_replicas.min(self.replicas.len());
        if maximal.len() < required {
            return None;
        }
        let broken = self.config.broken_rule;
        let own = match broken {
            Some(BrokenRule::CountUnsyncedOffsets) => ends.log_end,
            _ => ends.reportable(self.config.visibility),
        };
        let mut candidate = own;
        for member in maximal.iter().filter(|node| **node != self.me) {
            match self.followers.get(member).and_then(|progress| progress.log_end) {
                Some(end) => candidate = candidate.min(end),
                None if broken == Some(BrokenRule::HighWatermarkOverFetchers) => {}
                None => return None,
            }
        }
        (candidate > self.high_watermark).then(|| {
            self.high_watermark = candidate;
            candidate
        })
    }

    fn check(&self, ends: LogEnds) {
        assert!(
            self.high_watermark <= ends.log_end,
            "leader high watermark {} past its log end {}",
            self.high_watermark,
            ends.log_end
        );
        if self.config.visibility == crate::replica::Visibility::Durable
            && self.config.broken_rule != Some(BrokenRule::CountUnsyncedOffsets)
        {
            assert!(
                self.high_watermark <= ends.durable_end,
                "leader high watermark {} past its durable end {} under fsync",
                self.high_watermark,
                ends.durable_end
            );
        }
        assert!(self.isr.contains(&self.me), "leader {} is not in its ISR {:?}", self.me, self.isr);
    }
}

fn unfenced_epochs(image: &MetadataImage) -> BTreeMap<NodeId, BrokerEpoch> {
    image.live_brokers().map(|broker| (broker.registration.broker, broker.epoch)).collect()
}
