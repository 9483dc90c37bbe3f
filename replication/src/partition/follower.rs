//! `FollowerState`: the follower's side of one partition (Kafka's `AbstractFetcherThread` for one partition).
//!
//! - One Fetch in flight at a time, resent after `request_timeout`. Its fetch offset is the log end, and a Fetch
//!   is sent only once the log is durable up to it (under `fsync`): the leader counts the offset as held, so it must
//!   survive a crash (REPLICATION_FACTS.md §0; KRaft flushes before the next Fetch likewise).
//! - An answer counts only if it answers the Fetch in flight, from this leader epoch, for the log as it still is:
//!   a late or duplicated answer can neither append twice nor truncate what was since fetched (redpanda#17731).
//! - A diverging epoch truncates to min(leader's end of that epoch, own end of it, own log end) and fetches again,
//!   as many rounds as it takes (KIP-279); the leader's high watermark is taken only from a Records answer, after
//!   the records are appended, never before a truncation (KAFKA-14704).
//! - The follower's high watermark is min(leader's, own reportable end) and never falls except by truncation.

use std::time::Duration;

use crate::metadata::BrokerEpoch;
use crate::partition::{BrokenRule, EpochHistory, FetchAnswer, FetchRequest, LogEnds, ReplicationConfig};
use crate::types::{LeaderEpoch, NodeId};
use sluice_storage::Offset;

/// What the driver must do with a Fetch answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FollowerAction {
    /// Append the answer's batches (they start at the log end), then call `appended`.
    Append { high_watermark: Offset },
    /// Cut the log at `offset`, then call `truncated`; the next Fetch starts there.
    Truncate { offset: Offset },
    /// Stale, duplicated, or an error to wait out: nothing to do.
    Ignore,
}

#[derive(Clone, Debug)]
pub struct FollowerState {
    me: NodeId,
    leader: NodeId,
    leader_epoch: LeaderEpoch,
    /// The Fetch in flight and when it was sent.
    in_flight: Option<(FetchRequest, Duration)>,
    high_watermark: Offset,
    config: ReplicationConfig,
}

impl FollowerState {
    pub fn new(
        me: NodeId,
        leader: NodeId,
        leader_epoch: LeaderEpoch,
        high_watermark: Offset,
        config: ReplicationConfig,
    ) -> FollowerState {
        FollowerState { me, leader, leader_epoch, in_flight: None, high_watermark, config }
    }

    pub fn leader(&self) -> NodeId {
        self.leader
    }

    pub fn set_config(&mut self, config: ReplicationConfig) {
        self.config = config;
    }

    /// The Fetch in flight will get no answer (its connection failed): the next may go at once.
    pub fn abandon_fetch(&mut self) {
        self.in_flight = None;
    }

    pub fn leader_epoch(&self) -> LeaderEpoch {
        self.leader_epoch
    }

    pub fn high_watermark(&self) -> Offset {
        self.high_watermark
    }

    /// The Fetch to send now, if any: none while one is in flight (until it times out) and, under `fsync`, none
    /// while the log has unsynced data (the driver syncs, then asks again).
    pub fn fetch_request(
        &mut self,
        now: Duration,
        ends: LogEnds,
        epochs: &EpochHistory,
        broker_epoch: BrokerEpoch,
    ) -> Option<FetchRequest> {
        if let Some((_, sent_at)) = self.in_flight {
            if now.saturating_sub(sent_at) < self.config.request_timeout {
                return None;
            }
        }
        let report_unsynced = self.config.broken_rule == Some(BrokenRule::CountUnsyncedOffsets);
        if ends.reportable(self.config.visibility) < ends.log_end && !report_unsynced {
            return None;
        }
        let request = FetchRequest {
            replica: self.me,
            replica_epoch: broker_epoch,
            current_leader_epoch: self.leader_epoch,
            fetch_offset: ends.log_end,
            last_fetched_epoch: epochs.latest(),
        };
        self.in_flight = Some((request, now));
        Some(request)
    }

    /// An answer from `from` to `request` arrived. Decides what to do with the log; the driver acts and reports.
    pub fn on_fetch_answer(
        &mut self,
        from: NodeId,
        request: &FetchRequest,
        answer: FetchAnswer,
        ends: LogEnds,
        epochs: &EpochHistory,
    ) -> FollowerAction {
        let current = self.in_flight.is_some_and(|(in_flight, _)| {
            in_flight.fetch_offset == request.fetch_offset
                && in_flight.last_fetched_epoch == request.last_fetched_epoch
        });
        let fresh = from == self.leader
            && request.current_leader_epoch == self.leader_epoch
            && request.fetch_offset == ends.log_end
            && request.last_fetched_epoch == epochs.latest();
        if !(current && fresh) {
            return FollowerAction::Ignore;
        }
        self.in_flight = None;
        match answer {
            FetchAnswer::Records { from, high_watermark } => {
                assert_eq!(
                    from, ends.log_end,
                    "the leader answered from {from}, the log ends at {}",
                    ends.log_end
                );
                FollowerAction::Append { high_watermark }
            }
            FetchAnswer::Diverging { epoch, end_offset } => {
                let (_, own_end) = epochs.end_offset_for(epoch, ends.log_end);
                FollowerAction::Truncate { offset: end_offset.min(own_end).min(ends.log_end) }
            }
            // Fenced or unknown epoch (metadata will move this follower), not a follower (a stale broker epoch),
            // out of range (unreachable while the divergence check runs first): wait and fetch again.
            FetchAnswer::Error(_) => FollowerAction::Ignore,
        }
    }

    /// The batches of an `Append` were appended: the high watermark follows the leader's, bounded by what is held.
    pub fn appended(&mut self, leader_high_watermark: Offset, ends: LogEnds) {
        let bound = ends.reportable(self.config.visibility);
        self.high_watermark = self.high_watermark.max(leader_high_watermark.min(bound));
        self.check(ends);
    }

    /// The log was cut at `offset` (a diverging epoch).
    pub fn truncated(&mut self, ends: LogEnds) {
        self.high_watermark = self.high_watermark.min(ends.log_end);
        self.check(ends);
    }

    fn check(&self, ends: LogEnds) {
        assert!(
            self.high_watermark <= ends.log_end,
            "follower high watermark {} past its log end {}",
            self.high_watermark,
            ends.log_end
        );
    }
}
