//! The replica seam: one partition replica's offsets and the rule that decides when an append is acknowledged and
//! when it becomes visible to consumers. Sans-I/O: the broker feeds it what the log did (sequenced up to here,
//! durable up to here, truncated to here) and asks it what to wait for; it never waits itself.
//!
//! Today it models a cluster of one (this node leads, the ISR is this node alone), so the high watermark is the
//! log end (flush policy `interval`) or the durable end (`fsync`). Replication plugs in here: a leader's high
//! watermark becomes the smallest log end over the ISR, and acks=all waits for it.
//!
//! Invariants (asserted on every transition, in release builds too — they are a few integer compares):
//! `high_watermark <= durable_end <= log_end` under `fsync`, `high_watermark <= log_end` always, and none of the
//! three moves backwards except through [`ReplicaState::truncated_to`].

use sluice_storage::Offset;

use crate::types::LeaderEpoch;

/// When a leader's data counts as committed (visible below the high watermark).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Visibility {
    /// Once fdatasync'd (`log.flush.policy = fsync`): a consumer never reads what a crash could take back.
    Durable,
    /// Once sequenced (`log.flush.policy = interval`, Kafka's behaviour).
    Sequenced,
}

/// Whether this replica leads its partition (its own log decides the high watermark: a cluster of one) or
/// follows (the leader's high watermark, bounded by its own log, decides it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Leader,
    Follower,
}

/// What a producer asked to wait for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acks {
    /// acks=0: no answer at all.
    None,
    /// acks=1: the leader has sequenced it.
    Leader,
    /// acks=all: committed (the high watermark has passed it).
    All,
    /// The broker's own records (consumer-group commits): fdatasync'd whatever the flush policy, then committed.
    Durable,
}

impl Acks {
    /// Kafka's wire value (0, 1, -1); anything else is not a valid acks.
    pub fn from_wire(acks: i16) -> Option<Acks> {
        match acks {
            0 => Some(Acks::None),
            1 => Some(Acks::Leader),
            -1 => Some(Acks::All),
            _ => None,
        }
    }
}

/// What an append must wait for before its produce is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckWait {
    /// Answer now (it is sequenced).
    Sequenced,
    /// Answer once the log is durable past the append, which then also commits it.
    Durable,
    /// Answer once the high watermark passes the append: a replicated leader's acks=all (the ISR holds it).
    HighWatermark,
}

#[derive(Debug)]
pub struct ReplicaState {
    role: Role,
    leader_epoch: LeaderEpoch,
    visibility: Visibility,
    log_end: Offset,
    durable_end: Offset,
    high_watermark: Offset,
    /// A member of a cluster: as leader, the high watermark is not this log's alone but what replication
    /// computes over the ISR ([`ReplicaState::replicated_high_watermark`]), and acks=all waits for it.
    replicated: bool,
}

impl ReplicaState {
    /// A replica opened on a recovered log: everything recovery found is on disk, so durable and committed.
    pub fn open(leader_epoch: LeaderEpoch, visibility: Visibility, log_end: Offset) -> ReplicaState {
        let state = ReplicaState {
            role: Role::Leader,
            leader_epoch,
            visibility,
            log_end,
            durable_end: log_end,
            high_watermark: log_end,
            replicated: false,
        };
        state.check();
        state
    }

    /// A cluster member's replica: from now on a leader's high watermark comes from replication.
    pub fn set_replicated(&mut self) {
        self.replicated = true;
    }

    pub fn is_replicated(&self) -> bool {
        self.replicated
    }

    /// A replicated leader's high watermark, as replication computed it over the ISR: bounded by the log end
    /// (and the durable end under `fsync`), never back. Returns it if it moved.
    pub fn replicated_high_watermark(&mut self, high_watermark: Offset) -> Option<Offset> {
        assert!(self.replicated && self.role == Role::Leader, "only a replicated leader takes this");
        assert!(
            high_watermark <= self.log_end,
            "replicated high watermark {high_watermark} past the log end {}",
            self.log_end
        );
        let moved = self.advance_high_watermark(high_watermark);
        self.check();
        moved
    }

    pub fn leader_epoch(&self) -> LeaderEpoch {
        self.leader_epoch
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// Follows the leader of `leader_epoch` from now on; the high watermark stays where it is until the leader says.
    pub fn become_follower(&mut self, leader_epoch: LeaderEpoch) {
        assert!(
            leader_epoch >= self.leader_epoch,
            "epoch {leader_epoch} is older than {}",
            self.leader_epoch
        );
        self.role = Role::Follower;
        self.leader_epoch = leader_epoch;
    }

    /// Leads from `leader_epoch` on (the controller elected this replica, or re-elected it with a bumped epoch
    /// after a fence); epochs never go back.
    pub fn become_leader(&mut self, leader_epoch: LeaderEpoch) {
        assert!(
            leader_epoch >= self.leader_epoch,
            "epoch {leader_epoch} is older than {}",
            self.leader_epoch
        );
        self.role = Role::Leader;
        self.leader_epoch = leader_epoch;
        self.check();
    }

    pub fn log_end(&self) -> Offset {
        self.log_end
    }

    pub fn durable_end(&self) -> Offset {
        self.durable_end
    }

    pub fn high_watermark(&self) -> Offset {
        self.high_watermark
    }

    /// What an append with `acks` waits for before it is answered.
    pub fn ack_wait(&self, acks: Acks) -> AckWait {
        match (acks, self.visibility) {
            (Acks::None | Acks::Leader, _) => AckWait::Sequenced,
            (Acks::All | Acks::Durable, _) if self.replicated => AckWait::HighWatermark,
            (Acks::All, Visibility::Sequenced) => AckWait::Sequenced,
            (Acks::All, Visibility::Durable) | (Acks::Durable, _) => AckWait::Durable,
        }
    }

    /// Whether data must become durable before it is visible (so that acks=0/1 appends still need a sync
    /// waited for in the background before consumers see them).
    pub fn visibility(&self) -> Visibility {
        self.visibility
    }

    /// The log assigned offsets up to `end` (exclusive). Returns the new high watermark if it moved.
    pub fn sequenced(&mut self, end: Offset) -> Option<Offset> {
        assert!(end >= self.log_end, "log end went back from {} to {end} without a truncation", self.log_end);
        self.log_end = end;
        let moved = match (self.role, self.visibility) {
            (Role::Leader, Visibility::Sequenced) if !self.replicated => self.advance_high_watermark(end),
            _ => None,
        };
        self.check();
        moved
    }

    /// The log is fdatasync'd up to `end` (exclusive). Returns the new high watermark if it moved.
    pub fn durable(&mut self, end: Offset) -> Option<Offset> {
        assert!(end <= self.log_end, "durable end {end} past the log end {}", self.log_end);
        self.durable_end = self.durable_end.max(end);
        let moved = match self.role {
            Role::Leader if !self.replicated => self.advance_high_watermark(end),
            Role::Leader | Role::Follower => None,
        };
        self.check();
        moved
    }

    /// A follower learned the leader's high watermark: its own moves to it, bounded by what it has itself (and,
    /// under `fsync` visibility, by what it has made durable). Returns the new high watermark if it moved.
    pub fn follower_high_watermark(&mut self, leader_high_watermark: Offset) -> Option<Offset> {
        assert_eq!(self.role, Role::Follower, "only a follower takes the leader's high watermark");
        let bound = match self.visibility {
            Visibility::Durable => self.durable_end,
            Visibility::Sequenced => self.log_end,
        };
        let moved = self.advance_high_watermark(leader_high_watermark.min(bound));
        self.check();
        moved
    }

    /// The log was cut to `end`: nothing past it exists any more.
    pub fn truncated_to(&mut self, end: Offset) {
        self.log_end = end;
        self.durable_end = self.durable_end.min(end);
        self.high_watermark = self.high_watermark.min(end);
        self.check();
    }

    /// The log's start moved past records (DeleteRecords, retention): a log that was emptied below its old end
    /// restarts there, and nothing below the log start is waited for any more (it no longer exists).
    pub fn log_start_moved(&mut self, log_start: Offset) {
        self.log_end = self.log_end.max(log_start);
        self.durable_end = self.durable_end.max(log_start);
        self.high_watermark = self.high_watermark.max(log_start);
        self.check();
    }

    fn advance_high_watermark(&mut self, end: Offset) -> Option<Offset> {
        let end = end.min(self.log_end);
        (end > self.high_watermark).then(|| {
            self.high_watermark = end;
            end
        })
    }

    fn check(&self) {
        assert!(
            self.high_watermark <= self.log_end,
            "high watermark {} past log end {}",
            self.high_watermark,
            self.log_end
        );
        assert!(
            self.durable_end <= self.log_end,
            "durable end {} past log end {}",
            self.durable_end,
            self.log_end
        );
        if self.visibility == Visibility::Durable {
            assert!(
                self.high_watermark <= self.durable_end,
                "high watermark {} past the durable end {} under fsync",
                self.high_watermark,
                self.durable_end
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsync_visibility_waits_for_durability() {
        let mut replica = ReplicaState::open(LeaderEpoch(0), Visibility::Durable, Offset(10));
        assert_eq!(replica.high_watermark(), Offset(10));
        assert_eq!(replica.sequenced(Offset(15)), None);
        assert_eq!(replica.high_watermark(), Offset(10));
        assert_eq!(replica.ack_wait(Acks::All), AckWait::Durable);
        assert_eq!(replica.ack_wait(Acks::Leader), AckWait::Sequenced);
        assert_eq!(replica.durable(Offset(12)), Some(Offset(12)));
        assert_eq!(replica.durable(Offset(11)), None, "a late, smaller durable end moves nothing");
        assert_eq!(replica.durable(Offset(15)), Some(Offset(15)));
    }

    #[test]
    fn interval_visibility_commits_at_sequencing() {
        let mut replica = ReplicaState::open(LeaderEpoch(3), Visibility::Sequenced, Offset(0));
        assert_eq!(replica.sequenced(Offset(4)), Some(Offset(4)));
        assert_eq!(replica.ack_wait(Acks::All), AckWait::Sequenced);
        assert_eq!(replica.ack_wait(Acks::Durable), AckWait::Durable);
        assert_eq!(replica.durable(Offset(4)), None);
        assert_eq!(replica.durable_end(), Offset(4));
    }

    #[test]
    fn truncation_and_log_start_keep_the_order() {
        let mut replica = ReplicaState::open(LeaderEpoch(0), Visibility::Durable, Offset(0));
        replica.sequenced(Offset(20));
        replica.durable(Offset(20));
        replica.truncated_to(Offset(8));
        assert_eq!(
            (replica.log_end(), replica.durable_end(), replica.high_watermark()),
            (Offset(8), Offset(8), Offset(8))
        );
        replica.log_start_moved(Offset(30));
        assert_eq!((replica.log_end(), replica.high_watermark()), (Offset(30), Offset(30)));
    }

    #[test]
    #[should_panic(expected = "durable end")]
    fn durability_past_the_log_end_is_a_broken_invariant() {
        let mut replica = ReplicaState::open(LeaderEpoch(0), Visibility::Durable, Offset(0));
        replica.durable(Offset(1));
    }

    #[test]
    fn a_follower_never_commits_past_what_it_holds() {
        let mut replica = ReplicaState::open(LeaderEpoch(0), Visibility::Durable, Offset(0));
        replica.become_follower(LeaderEpoch(1));
        replica.sequenced(Offset(10));
        assert_eq!(replica.follower_high_watermark(Offset(8)), None, "nothing durable yet");
        replica.durable(Offset(6));
        assert_eq!(replica.high_watermark(), Offset(0), "a follower's own durability commits nothing");
        assert_eq!(replica.follower_high_watermark(Offset(8)), Some(Offset(6)), "bounded by the durable end");
        replica.durable(Offset(10));
        assert_eq!(replica.follower_high_watermark(Offset(8)), Some(Offset(8)));
        let mut relaxed = ReplicaState::open(LeaderEpoch(0), Visibility::Sequenced, Offset(0));
        relaxed.become_follower(LeaderEpoch(0));
        relaxed.sequenced(Offset(5));
        assert_eq!(relaxed.high_watermark(), Offset(0));
        assert_eq!(relaxed.follower_high_watermark(Offset(9)), Some(Offset(5)), "bounded by its log end");
    }

    #[test]
    fn a_replicated_leader_commits_only_what_replication_computes() {
        let mut replica = ReplicaState::open(LeaderEpoch(0), Visibility::Durable, Offset(0));
        replica.set_replicated();
        replica.become_leader(LeaderEpoch(1));
        assert_eq!(replica.sequenced(Offset(10)), None);
        assert_eq!(replica.durable(Offset(10)), None, "its own durability commits nothing");
        assert_eq!(replica.ack_wait(Acks::All), AckWait::HighWatermark);
        assert_eq!(replica.ack_wait(Acks::Durable), AckWait::HighWatermark);
        assert_eq!(replica.ack_wait(Acks::Leader), AckWait::Sequenced);
        assert_eq!(replica.replicated_high_watermark(Offset(6)), Some(Offset(6)));
        assert_eq!(replica.replicated_high_watermark(Offset(4)), None, "never back");
        assert_eq!(replica.high_watermark(), Offset(6));
    }

    #[test]
    #[should_panic(expected = "past the log end")]
    fn a_replicated_high_watermark_past_the_log_end_is_a_broken_invariant() {
        let mut replica = ReplicaState::open(LeaderEpoch(0), Visibility::Sequenced, Offset(0));
        replica.set_replicated();
        replica.sequenced(Offset(3));
        replica.replicated_high_watermark(Offset(4));
    }

    #[test]
    fn acks_from_the_wire() {
        assert_eq!(Acks::from_wire(0), Some(Acks::None));
        assert_eq!(Acks::from_wire(1), Some(Acks::Leader));
        assert_eq!(Acks::from_wire(-1), Some(Acks::All));
        assert_eq!(Acks::from_wire(2), None);
    }
}
