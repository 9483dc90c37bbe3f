//! One consumer group's state machine (Kafka's classic protocol), with no I/O: the coordinator
//! ([`super::GroupCoordinator`]) calls these methods with the time, sends what they return and writes to
//! `__consumer_offsets` what they mark dirty.
//!
//! States: Empty → PreparingRebalance (a member joins) → CompletingRebalance (every member has rejoined, or the
//! rebalance timeout passed; the leader gets the members) → Stable (the leader's SyncGroup brought the assignments)
//! → PreparingRebalance again when a member joins, leaves, changes its protocols or misses its session timeout.
//! Dead is a deleted group. The first rebalance of an empty group waits `group.initial.rebalance.delay.ms`, each
//! new member extending it, up to the rebalance timeout, so that a fleet of consumers starting together causes one
//! rebalance instead of one per member.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::errors::{ErrorCode, ResponseError};
use crate::sync::{oneshot, OneshotReceiver, OneshotSender};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// Kafka's names, as ListGroups and DescribeGroups report them.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// A JoinGroup as the coordinator sees it (decoded from any version).
#[derive(Clone, Debug)]
pub struct JoinParams {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub protocol_type: String,
    /// (name, metadata) in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    /// v4+: an unknown member first gets MEMBER_ID_REQUIRED and its id (KIP-394).
    pub require_known_member_id: bool,
    /// v9+: a static leader rejoining a stable group may be told to skip the assignment (KIP-814).
    pub supports_skip_assignment: bool,
}

#[derive(Clone, Debug, Default)]
pub struct JoinOutcome {
    pub error: ErrorCode,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: String,
    pub member_id: String,
    pub skip_assignment: bool,
    /// For the leader only: (member id, instance id, metadata of the chosen protocol).
    pub members: Vec<(String, Option<String>, Bytes)>,
}

impl JoinOutcome {
    pub fn error(error: ErrorCode, member_id: &str) -> JoinOutcome {
        JoinOutcome { error, generation: -1, member_id: member_id.to_string(), ..Default::default() }
    }
}

#[derive(Clone, Debug, Default)]
pub struct SyncOutcome {
    pub error: ErrorCode,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub assignment: Bytes,
}

impl SyncOutcome {
    pub fn error(error: ErrorCode) -> SyncOutcome {
        SyncOutcome { error, ..Default::default() }
    }
}

pub struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub assignment: Bytes,
    /// Expired (removed, the group rebalanced) when passed without a heartbeat, unless awaiting a join.
    pub session_deadline: Instant,
    awaiting_join: Option<OneshotSender<JoinOutcome>>,
    /// Whether the awaiting JoinGroup may receive `skip_assignment`.
    join_supports_skip: bool,
    awaiting_sync: Option<OneshotSender<SyncOutcome>>,
}

impl Member {
    fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, bytes)| bytes.clone())
            .unwrap_or_default()
    }

    pub fn is_awaiting_join(&self) -> bool {
        self.awaiting_join.is_some()
    }
}

/// A committed offset and where in `__consumer_offsets` it was written (a later write always wins).
#[derive(Clone, Debug, PartialEq)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
    pub log_offset: i64,
}

impl CommittedOffset {
    /// A commit as it was written at `log_offset` of `__consumer_offsets`.
    pub fn from_stored(value: super::store::StoredOffset, log_offset: i64) -> CommittedOffset {
        CommittedOffset {
            offset: value.offset,
            leader_epoch: value.leader_epoch,
            metadata: value.metadata,
            commit_timestamp_ms: value.commit_timestamp_ms,
            log_offset,
        }
    }

    /// The record value that writes this commit again (a checkpoint).
    pub fn stored(&self) -> super::store::StoredOffset {
        super::store::StoredOffset {
            offset: self.offset,
            leader_epoch: self.leader_epoch,
            metadata: self.metadata.clone(),
            commit_timestamp_ms: self.commit_timestamp_ms,
        }
    }
}

/// What a JoinGroup gets: an answer now, or a receiver that the rebalance answers.
pub enum JoinReply {
    Now(JoinOutcome),
    Later(OneshotReceiver<JoinOutcome>),
}

pub enum SyncReply {
    Now(SyncOutcome),
    Later(OneshotReceiver<SyncOutcome>),
    /// The leader's assignments are in place; the coordinator persists the group, then calls
    /// [`Group::finish_sync`] (or [`Group::fail_sync`]) with this generation, and the receiver is answered then.
    Persist {
        generation: i32,
        receiver: OneshotReceiver<SyncOutcome>,
    },
}

pub struct Group {
    pub id: String,
    pub state: GroupState,
    pub state_since_ms: i64,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    /// Ordered by member id, so that every choice that walks the members is deterministic.
    pub members: BTreeMap<String, Member>,
    /// Ids handed out with MEMBER_ID_REQUIRED, waiting for their second JoinGroup, and until when.
    pending_members: HashMap<String, Instant>,
    /// group.instance.id → member id (static membership).
    static_members: HashMap<String, String>,
    pub offsets: HashMap<(String, i32), CommittedOffset>,
    /// PreparingRebalance completes at this time at the latest.
    join_deadline: Option<Instant>,
    /// The initial delay of an empty group's first rebalance: its current end, and its cap.
    initial_delay: Option<(Instant, Instant)>,
    /// The group's metadata changed in a way the log must record (a new assignment, or it became empty).
    pub metadata_dirty: bool,
    /// Where the newest group metadata record was written in `__consumer_offsets`.
    pub metadata_log_offset: i64,
}

/// Counter for member ids (unique per shard; the shard id is part of every id).
static NEXT_MEMBER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn new_member_id(client_id: &str) -> String {
    let counter = NEXT_MEMBER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos() as u64)
        .unwrap_or(0);
    let client: String = client_id.chars().take(64).collect();
    format!("{client}-{nanos:016x}-{counter:x}")
}

impl Group {
    pub fn new(id: &str, now_ms: i64) -> Group {
        Group {
            id: id.to_string(),
            state: GroupState::Empty,
            state_since_ms: now_ms,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            pending_members: HashMap::new(),
            static_members: HashMap::new(),
            offsets: HashMap::new(),
            join_deadline: None,
            initial_delay: None,
            metadata_dirty: false,
            metadata_log_offset: -1,
        }
    }

    fn transition(&mut self, state: GroupState) {
        // The classic protocol's edges: only a rebalance leads anywhere but back to it.
        let allowed = match state {
            GroupState::PreparingRebalance => self.state != GroupState::Dead,
            GroupState::CompletingRebalance | GroupState::Empty => {
                self.state == GroupState::PreparingRebalance
            }
            GroupState::Stable => self.state == GroupState::CompletingRebalance,
            GroupState::Dead => true,
        };
        assert!(
            allowed,
            "group {}: {:?} -> {state:?} is not a transition of the protocol",
            self.id, self.state
        );
        if self.state != state {
            self.state = state;
            self.state_since_ms = sluice_storage::now_ms();
        }
        self.check_invariants();
    }

    /// What each state promises: a group with a generation in progress or done has members and a leader among
    /// them; an empty group has neither members nor a leader.
    fn check_invariants(&self) {
        match self.state {
            GroupState::CompletingRebalance | GroupState::Stable => {
                assert!(!self.members.is_empty(), "group {}: {:?} without members", self.id, self.state);
                assert!(
                    self.leader.as_ref().is_some_and(|leader| self.members.contains_key(leader)),
                    "group {}: {:?} with leader {:?} not among its members",
                    self.id,
                    self.state,
                    self.leader
                );
                assert!(
                    self.generation >= 1,
                    "group {}: {:?} at generation {}",
                    self.id,
                    self.state,
                    self.generation
                );
            }
            GroupState::Empty => {
                assert!(
                    self.members.is_empty(),
                    "group {}: Empty with {} members",
                    self.id,
                    self.members.len()
                );
                assert!(self.leader.is_none(), "group {}: Empty with a leader", self.id);
            }
            GroupState::PreparingRebalance | GroupState::Dead => {}
        }
    }

    /// Whether `member_id` (with `instance_id`, if static) may act in this group: NONE, UNKNOWN_MEMBER_ID or
    /// FENCED_INSTANCE_ID.
    pub fn check_member(&self, member_id: &str, instance_id: Option<&str>) -> ErrorCode {
        if let Some(instance) = instance_id {
            match self.static_members.get(instance) {
                Some(current) if current == member_id => {}
                Some(_) => return ResponseError::FencedInstanceId.into(),
                None => return ResponseError::UnknownMemberId.into(),
            }
        }
        if self.members.contains_key(member_id) {
            ErrorCode::NONE
        } else {
            ResponseError::UnknownMemberId.into()
        }
    }

    /// Protocols every member (and `candidate`, if given) supports, for a new member's consistency check.
    fn supports(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.members.is_empty() {
            return true;
        }
        if self.protocol_type.as_deref() != Some(protocol_type) {
            return false;
        }
        protocols.iter().any(|(name, _)| {
            self.members.values().all(|member| member.protocols.iter().any(|(other, _)| other == name))
        })
    }

    pub fn join(
        &mut self,
        params: JoinParams,
        now: Instant,
        size_max: usize,
        initial_delay: Duration,
    ) -> JoinReply {
        if self.state == GroupState::Dead {
            return JoinReply::Now(JoinOutcome::error(
                ResponseError::CoordinatorNotAvailable.into(),
                &params.member_id,
            ));
        }
        if params.protocol_type.is_empty() || params.protocols.is_empty() {
            return JoinReply::Now(JoinOutcome::error(
                ResponseError::InconsistentGroupProtocol.into(),
                &params.member_id,
            ));
        }
        let known = self.members.contains_key(&params.member_id);
        let pending = self.pending_members.contains_key(&params.member_id);
        let is_existing = known && !params.member_id.is_empty();
        if !is_existing && !self.supports(&params.protocol_type, &params.protocols) {
            return JoinReply::Now(JoinOutcome::error(
                ResponseError::InconsistentGroupProtocol.into(),
                &params.member_id,
            ));
        }
        if params.member_id.is_empty() {
            if let Some(instance) = params.instance_id.clone() {
                if let Some(old_id) = self.static_members.get(&instance).cloned() {
                    return self.rejoin_static(old_id, params, now, initial_delay);
                }
                if self.members.len() >= size_max {
                    return JoinReply::Now(JoinOutcome::error(ResponseError::GroupMaxSizeReached.into(), ""));
                }
                let member_id = new_member_id(&params.client_id);
                self.static_members.insert(instance, member_id.clone());
                return self.add_member(member_id, params, now, initial_delay);
            }
            if self.members.len() + self.pending_members.len() >= size_max {
                return JoinReply::Now(JoinOutcome::error(ResponseError::GroupMaxSizeReached.into(), ""));
            }
            let member_id = new_member_id(&params.client_id);
            if params.require_known_member_id {
                self.pending_members.insert(member_id.clone(), now + params.session_timeout);
                return JoinReply::Now(JoinOutcome::error(
                    ResponseError::MemberIdRequired.into(),
                    &member_id,
                ));
            }
            return self.add_member(member_id, params, now, initial_delay);
        }
        if pending {
            self.pending_members.remove(&params.member_id);
            let member_id = params.member_id.clone();
            return self.add_member(member_id, params, now, initial_delay);
        }
        let check = self.check_member(&params.member_id, params.instance_id.as_deref());
        if check != ErrorCode::NONE {
            return JoinReply::Now(JoinOutcome::error(check, &params.member_id));
        }
        self.rejoin(params, now, initial_delay)
    }

    /// A known member joins again.
    fn rejoin(&mut self, params: JoinParams, now: Instant, initial_delay: Duration) -> JoinReply {
        let member_id = params.member_id.clone();
        let changed = {
            let Some(member) = self.members.get(&member_id) else {
                return JoinReply::Now(JoinOutcome::error(ResponseError::UnknownMemberId.into(), &member_id));
            };
            member.protocols != params.protocols
        };
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance
                if !changed && self.leader.as_deref() != Some(member_id.as_str()) =>
            {
                // A follower whose join response was lost: the current generation, no rebalance.
                if let Some(member) = self.members.get_mut(&member_id) {
                    member.session_deadline = now + member.session_timeout;
                }
                JoinReply::Now(self.outcome_for(&member_id, false))
            }
            GroupState::CompletingRebalance if !changed => {
                // The leader again, before it synced: it gets the members again.
                JoinReply::Now(self.outcome_for(&member_id, false))
            }
            _ => {
                let receiver = self.update_member(params, now);
                if self.state != GroupState::PreparingRebalance {
                    self.prepare_rebalance(
                        "a member rejoined with new protocols (or is the leader)",
                        now,
                        initial_delay,
                    );
                }
                self.maybe_complete_join(now);
                JoinReply::Later(receiver)
            }
        }
    }

    /// A static member restarted (new member id, same group.instance.id): it replaces its old self. In a stable
    /// group with unchanged protocols it gets the current generation back and no rebalance happens (KIP-345).
    fn rejoin_static(
        &mut self,
        old_id: String,
        params: JoinParams,
        now: Instant,
        initial_delay: Duration,
    ) -> JoinReply {
        let Some(mut member) = self.members.remove(&old_id) else {
            self.static_members.remove(params.instance_id.as_deref().unwrap_or_default());
            let member_id = new_member_id(&params.client_id);
            if let Some(instance) = params.instance_id.clone() {
                self.static_members.insert(instance, member_id.clone());
            }
            return self.add_member(member_id, params, now, initial_delay);
        };
        let new_id = new_member_id(&params.client_id);
        // The old incarnation's waiting requests are fenced.
        if let Some(waiting) = member.awaiting_join.take() {
            let _ = waiting.send(JoinOutcome::error(ResponseError::FencedInstanceId.into(), &old_id));
        }
        if let Some(waiting) = member.awaiting_sync.take() {
            let _ = waiting.send(SyncOutcome::error(ResponseError::FencedInstanceId.into()));
        }
        member.id = new_id.clone();
        member.client_id = params.client_id.clone();
        member.client_host = params.client_host.clone();
        member.session_timeout = params.session_timeout;
        member.rebalance_timeout = params.rebalance_timeout;
        member.session_deadline = now + params.session_timeout;
        self.members.insert(new_id.clone(), member);
        if let Some(instance) = params.instance_id.clone() {
            self.static_members.insert(instance, new_id.clone());
        }
        let was_leader = self.leader.as_deref() == Some(old_id.as_str());
        if was_leader {
            self.leader = Some(new_id.clone());
        }
        self.metadata_dirty = true;
        if self.state == GroupState::Stable {
            // As Kafka: take the new protocols; if the group would still choose the same protocol, the member
            // keeps its assignment and nobody rebalances. (Its metadata bytes may differ: a consumer's
            // subscription lists the partitions it owned, which a restarted process no longer knows.)
            let previous =
                self.members.get(&new_id).map(|member| member.protocols.clone()).unwrap_or_default();
            if let Some(member) = self.members.get_mut(&new_id) {
                member.protocols = params.protocols.clone();
                member.protocol_type = params.protocol_type.clone();
            }
            if self.select_protocol() == self.protocol {
                // A leader that cannot be told to skip the assignment (JoinGroup < v9) gets the members and
                // syncs; in the Stable state its SyncGroup just returns its current assignment.
                return JoinReply::Now(
                    self.outcome_for(&new_id, was_leader && params.supports_skip_assignment),
                );
            }
            if let Some(member) = self.members.get_mut(&new_id) {
                member.protocols = previous;
            }
        }
        let mut params = params;
        params.member_id = new_id;
        let receiver = self.update_member(params, now);
        if self.state != GroupState::PreparingRebalance {
            self.prepare_rebalance("a static member rejoined with other protocols", now, initial_delay);
        }
        self.maybe_complete_join(now);
        JoinReply::Later(receiver)
    }

    fn add_member(
        &mut self,
        member_id: String,
        params: JoinParams,
        now: Instant,
        initial_delay: Duration,
    ) -> JoinReply {
        if self.members.is_empty() {
            self.protocol_type = Some(params.protocol_type.clone());
        }
        self.members.insert(
            member_id.clone(),
            Member {
                id: member_id.clone(),
                instance_id: params.instance_id.clone(),
                client_id: params.client_id.clone(),
                client_host: params.client_host.clone(),
                protocol_type: params.protocol_type.clone(),
                protocols: Vec::new(),
                session_timeout: params.session_timeout,
                rebalance_timeout: params.rebalance_timeout,
                assignment: Bytes::new(),
                session_deadline: now + params.session_timeout,
                awaiting_join: None,
                join_supports_skip: false,
                awaiting_sync: None,
            },
        );
        let mut params = params;
        params.member_id = member_id;
        let receiver = self.update_member(params, now);
        match self.state {
            GroupState::PreparingRebalance => {
                // A new member during the initial delay extends it (up to its cap).
                if let Some((end, cap)) = self.initial_delay {
                    self.initial_delay = Some(((now + initial_delay).max(end).min(cap), cap));
                }
            }
            _ => self.prepare_rebalance("a new member joined", now, initial_delay),
        }
        self.maybe_complete_join(now);
        JoinReply::Later(receiver)
    }

    /// Records the member's join parameters and parks its JoinGroup.
    fn update_member(&mut self, params: JoinParams, now: Instant) -> OneshotReceiver<JoinOutcome> {
        let (sender, receiver) = oneshot();
        if let Some(member) = self.members.get_mut(&params.member_id) {
            if let Some(previous) = member.awaiting_join.take() {
                // A second JoinGroup from the same member replaces the first, which is told to retry.
                let _ = previous
                    .send(JoinOutcome::error(ResponseError::RebalanceInProgress.into(), &params.member_id));
            }
            member.protocols = params.protocols;
            member.protocol_type = params.protocol_type;
            member.session_timeout = params.session_timeout;
            member.rebalance_timeout = params.rebalance_timeout;
            member.client_id = params.client_id;
            member.client_host = params.client_host;
            member.session_deadline = now + member.session_timeout;
            member.join_supports_skip = params.supports_skip_assignment;
            member.awaiting_join = Some(sender);
        }
        receiver
    }

    /// Starts a rebalance: members must rejoin (their heartbeats say REBALANCE_IN_PROGRESS) within the largest
    /// rebalance timeout.
    pub fn prepare_rebalance(&mut self, reason: &str, now: Instant, initial_delay: Duration) {
        log::info!(
            "group {}: preparing to rebalance in state {} with generation {} ({reason})",
            self.id,
            self.state.name(),
            self.generation
        );
        if self.state == GroupState::CompletingRebalance {
            for member in self.members.values_mut() {
                member.assignment = Bytes::new();
                if let Some(waiting) = member.awaiting_sync.take() {
                    let _ = waiting.send(SyncOutcome::error(ResponseError::RebalanceInProgress.into()));
                }
            }
        }
        let rebalance_timeout =
            self.members.values().map(|member| member.rebalance_timeout).max().unwrap_or(Duration::ZERO);
        if self.state == GroupState::Empty && !initial_delay.is_zero() {
            let cap = now + rebalance_timeout.max(initial_delay);
            self.initial_delay = Some(((now + initial_delay).min(cap), cap));
        }
        self.join_deadline = Some(now + rebalance_timeout);
        self.transition(GroupState::PreparingRebalance);
    }

    fn all_joined(&self) -> bool {
        self.pending_members.is_empty() && self.members.values().all(Member::is_awaiting_join)
    }

    /// Completes the join phase when it is time: everyone rejoined (and any initial delay is over), or the
    /// rebalance timeout passed (members that did not rejoin are removed).
    pub fn maybe_complete_join(&mut self, now: Instant) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        if let Some((end, _)) = self.initial_delay {
            if now < end {
                return;
            }
        }
        let timed_out = self.join_deadline.is_some_and(|deadline| now >= deadline);
        if !self.all_joined() && !timed_out {
            return;
        }
        self.initial_delay = None;
        self.join_deadline = None;
        let absent: Vec<String> =
            self.members.values().filter(|member| !member.is_awaiting_join()).map(|m| m.id.clone()).collect();
        for member_id in absent {
            self.remove_member_only(&member_id, ResponseError::UnknownMemberId.into());
        }
        self.pending_members.clear();
        self.generation = self.generation.wrapping_add(1).max(1);
        if self.members.is_empty() {
            self.protocol = None;
            self.leader = None;
            self.transition(GroupState::Empty);
            self.metadata_dirty = true;
            return;
        }
        self.protocol = self.select_protocol();
        if !self.leader.as_ref().is_some_and(|leader| self.members.contains_key(leader)) {
            self.leader = self.members.keys().next().cloned();
        }
        self.transition(GroupState::CompletingRebalance);
        log::info!(
            "group {}: generation {} with {} members, protocol {:?}",
            self.id,
            self.generation,
            self.members.len(),
            self.protocol
        );
        let member_ids: Vec<String> = self.members.keys().cloned().collect();
        for member_id in member_ids {
            let outcome = self.outcome_for(&member_id, false);
            if let Some(member) = self.members.get_mut(&member_id) {
                member.session_deadline = now + member.session_timeout;
                if let Some(waiting) = member.awaiting_join.take() {
                    let _ = waiting.send(outcome);
                }
            }
        }
    }

    /// The protocol every member supports that most members prefer (ties: the leader-to-be's order).
    fn select_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        let candidates: Vec<&String> = first
            .protocols
            .iter()
            .map(|(name, _)| name)
            .filter(|name| {
                self.members.values().all(|member| member.protocols.iter().any(|(other, _)| other == *name))
            })
            .collect();
        let mut votes: Vec<usize> = vec![0; candidates.len()];
        for member in self.members.values() {
            if let Some(choice) = member
                .protocols
                .iter()
                .find_map(|(name, _)| candidates.iter().position(|candidate| *candidate == name))
            {
                votes[choice] += 1;
            }
        }
        let best = votes.iter().enumerate().max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(&a.0)))?.0;
        Some(candidates[best].clone())
    }

    /// The JoinGroup answer for `member_id` in the current generation (the leader gets every member).
    fn outcome_for(&self, member_id: &str, skip_assignment: bool) -> JoinOutcome {
        let protocol = self.protocol.clone().unwrap_or_default();
        let is_leader = self.leader.as_deref() == Some(member_id);
        JoinOutcome {
            error: ErrorCode::NONE,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol: self.protocol.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            member_id: member_id.to_string(),
            skip_assignment,
            members: if is_leader {
                self.members
                    .values()
                    .map(|member| {
                        (member.id.clone(), member.instance_id.clone(), member.metadata_for(&protocol))
                    })
                    .collect()
            } else {
                Vec::new()
            },
        }
    }

    /// Removes a member and answers its parked requests with `error`; no state change.
    fn remove_member_only(&mut self, member_id: &str, error: ErrorCode) -> bool {
        let Some(mut member) = self.members.remove(member_id) else {
            return self.pending_members.remove(member_id).is_some();
        };
        if let Some(instance) = &member.instance_id {
            if self.static_members.get(instance).map(String::as_str) == Some(member_id) {
                self.static_members.remove(instance);
            }
        }
        if let Some(waiting) = member.awaiting_join.take() {
            let _ = waiting.send(JoinOutcome::error(error, member_id));
        }
        if let Some(waiting) = member.awaiting_sync.take() {
            let _ = waiting.send(SyncOutcome::error(error));
        }
        true
    }

    /// A member left (LeaveGroup) or expired: the others rebalance.
    pub fn remove_member(&mut self, member_id: &str, now: Instant, initial_delay: Duration) -> bool {
        if !self.remove_member_only(member_id, ResponseError::UnknownMemberId.into()) {
            return false;
        }
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance("a member left", now, initial_delay);
                self.maybe_complete_join(now);
            }
            GroupState::PreparingRebalance => self.maybe_complete_join(now),
            GroupState::Empty | GroupState::Dead => {}
        }
        true
    }

    /// LeaveGroup for one member identity: by instance id when given (the member id must then match or be
    /// empty), else by member id.
    pub fn leave(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        now: Instant,
        delay: Duration,
    ) -> ErrorCode {
        let target = match instance_id {
            Some(instance) => match self.static_members.get(instance) {
                Some(current) if member_id.is_empty() || current == member_id => current.clone(),
                Some(_) => return ResponseError::FencedInstanceId.into(),
                None => return ResponseError::UnknownMemberId.into(),
            },
            None => member_id.to_string(),
        };
        if self.remove_member(&target, now, delay) {
            ErrorCode::NONE
        } else {
            ResponseError::UnknownMemberId.into()
        }
    }

    pub fn heartbeat(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now: Instant,
    ) -> ErrorCode {
        if matches!(self.state, GroupState::Empty | GroupState::Dead) {
            return ResponseError::UnknownMemberId.into();
        }
        let check = self.check_member(member_id, instance_id);
        if check != ErrorCode::NONE {
            return check;
        }
        if let Some(member) = self.members.get_mut(member_id) {
            member.session_deadline = now + member.session_timeout;
        }
        if generation != self.generation {
            return ResponseError::IllegalGeneration.into();
        }
        match self.state {
            GroupState::PreparingRebalance => ResponseError::RebalanceInProgress.into(),
            _ => ErrorCode::NONE,
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub fn sync(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        protocol_type: Option<&str>,
        protocol: Option<&str>,
        assignments: Vec<(String, Bytes)>,
        now: Instant,
    ) -> SyncReply {
        if matches!(self.state, GroupState::Empty | GroupState::Dead) {
            return SyncReply::Now(SyncOutcome::error(ResponseError::UnknownMemberId.into()));
        }
        let check = self.check_member(member_id, instance_id);
        if check != ErrorCode::NONE {
            return SyncReply::Now(SyncOutcome::error(check));
        }
        if generation != self.generation {
            return SyncReply::Now(SyncOutcome::error(ResponseError::IllegalGeneration.into()));
        }
        if protocol_type.is_some_and(|name| Some(name) != self.protocol_type.as_deref())
            || protocol.is_some_and(|name| Some(name) != self.protocol.as_deref())
        {
            return SyncReply::Now(SyncOutcome::error(ResponseError::InconsistentGroupProtocol.into()));
        }
        match self.state {
            GroupState::PreparingRebalance => {
                SyncReply::Now(SyncOutcome::error(ResponseError::RebalanceInProgress.into()))
            }
            GroupState::Stable => {
                let outcome = self.sync_outcome(member_id);
                if let Some(member) = self.members.get_mut(member_id) {
                    member.session_deadline = now + member.session_timeout;
                }
                SyncReply::Now(outcome)
            }
            _ => {
                let (sender, receiver) = oneshot();
                let is_leader = self.leader.as_deref() == Some(member_id);
                if let Some(member) = self.members.get_mut(member_id) {
                    member.session_deadline = now + member.session_timeout;
                    if let Some(previous) = member.awaiting_sync.replace(sender) {
                        let _ = previous.send(SyncOutcome::error(ResponseError::RebalanceInProgress.into()));
                    }
                }
                if !is_leader {
                    return SyncReply::Later(receiver);
                }
                for member in self.members.values_mut() {
                    member.assignment = Bytes::new();
                }
                for (target, assignment) in assignments {
                    if let Some(member) = self.members.get_mut(&target) {
                        member.assignment = assignment;
                    }
                }
                SyncReply::Persist { generation: self.generation, receiver }
            }
        }
    }

    fn sync_outcome(&self, member_id: &str) -> SyncOutcome {
        SyncOutcome {
            error: ErrorCode::NONE,
            protocol_type: self.protocol_type.clone(),
            protocol: self.protocol.clone(),
            assignment: self
                .members
                .get(member_id)
                .map(|member| member.assignment.clone())
                .unwrap_or_default(),
        }
    }

    /// The group metadata of `generation` is durable: the group is stable and every member gets its assignment.
    pub fn finish_sync(&mut self, generation: i32) {
        if self.state != GroupState::CompletingRebalance || self.generation != generation {
            return;
        }
        self.transition(GroupState::Stable);
        let member_ids: Vec<String> = self.members.keys().cloned().collect();
        for member_id in member_ids {
            let outcome = self.sync_outcome(&member_id);
            if let Some(waiting) =
                self.members.get_mut(&member_id).and_then(|member| member.awaiting_sync.take())
            {
                let _ = waiting.send(outcome);
            }
        }
    }

    /// Writing the group metadata failed: members waiting in SyncGroup get `error` and the group rebalances.
    pub fn fail_sync(&mut self, generation: i32, error: ErrorCode, now: Instant, delay: Duration) {
        if self.state != GroupState::CompletingRebalance || self.generation != generation {
            return;
        }
        for member in self.members.values_mut() {
            member.assignment = Bytes::new();
            if let Some(waiting) = member.awaiting_sync.take() {
                let _ = waiting.send(SyncOutcome::error(error));
            }
        }
        self.prepare_rebalance("the assignment could not be written", now, delay);
    }

    /// Whether an OffsetCommit from this member may be written: NONE or the error to return. A commit with
    /// generation -1 and no member id is a "simple" commit, allowed while the group has no members.
    pub fn check_commit(&self, member_id: &str, instance_id: Option<&str>, generation: i32) -> ErrorCode {
        match self.state {
            GroupState::Dead => ResponseError::CoordinatorNotAvailable.into(),
            GroupState::Empty if generation < 0 => ErrorCode::NONE,
            GroupState::Empty => ResponseError::UnknownMemberId.into(),
            GroupState::CompletingRebalance => ResponseError::RebalanceInProgress.into(),
            _ => {
                let check = self.check_member(member_id, instance_id);
                if check != ErrorCode::NONE {
                    check
                } else if generation != self.generation {
                    ResponseError::IllegalGeneration.into()
                } else {
                    ErrorCode::NONE
                }
            }
        }
    }

    pub fn touch(&mut self, member_id: &str, now: Instant) {
        if let Some(member) = self.members.get_mut(member_id) {
            member.session_deadline = now + member.session_timeout;
        }
    }

    /// Applies a commit written at `log_offset`, unless a later write already set this partition.
    pub fn apply_commit(&mut self, topic: &str, partition: i32, committed: CommittedOffset) {
        let key = (topic.to_string(), partition);
        if self.offsets.get(&key).is_some_and(|current| current.log_offset > committed.log_offset) {
            return;
        }
        self.offsets.insert(key, committed);
    }

    /// Expires members past their session timeout and pending members past theirs, completes a join whose time
    /// has come. Returns whether anything changed.
    pub fn tick(&mut self, now: Instant, delay: Duration) -> bool {
        let before = (self.state, self.generation, self.members.len(), self.pending_members.len());
        self.pending_members.retain(|_, deadline| *deadline > now);
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|member| !member.is_awaiting_join() && member.session_deadline <= now)
            .map(|member| member.id.clone())
            .collect();
        for member_id in expired {
            log::info!("group {}: member {member_id} missed its session timeout; rebalancing", self.id);
            self.remove_member(&member_id, now, delay);
        }
        self.maybe_complete_join(now);
        before != (self.state, self.generation, self.members.len(), self.pending_members.len())
    }

    /// The earliest time at which [`Group::tick`] could change something.
    pub fn next_deadline(&self) -> Option<Instant> {
        let members = self.members.values().filter(|m| !m.is_awaiting_join()).map(|m| m.session_deadline);
        let join = self.join_deadline.into_iter().chain(self.initial_delay.map(|(end, _)| end));
        members.chain(self.pending_members.values().copied()).chain(join).min()
    }

    /// Answers every parked request with `error` (shutdown).
    pub fn abandon_waiters(&mut self, error: ErrorCode) {
        for member in self.members.values_mut() {
            if let Some(waiting) = member.awaiting_join.take() {
                let _ = waiting.send(JoinOutcome::error(error, &member.id));
            }
            if let Some(waiting) = member.awaiting_sync.take() {
                let _ = waiting.send(SyncOutcome::error(error));
            }
        }
    }

    /// The metadata record for this group's current membership.
    pub fn stored(&self) -> super::store::StoredGroup {
        super::store::StoredGroup {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            protocol: self.protocol.clone(),
            leader: self.leader.clone(),
            state_timestamp_ms: self.state_since_ms,
            members: self
                .members
                .values()
                .map(|member| super::store::StoredMember {
                    member_id: member.id.clone(),
                    instance_id: member.instance_id.clone(),
                    client_id: member.client_id.clone(),
                    client_host: member.client_host.clone(),
                    rebalance_timeout_ms: member.rebalance_timeout.as_millis().min(i32::MAX as u128) as i32,
                    session_timeout_ms: member.session_timeout.as_millis().min(i32::MAX as u128) as i32,
                    subscription: self
                        .protocol
                        .as_deref()
                        .map(|p| member.metadata_for(p))
                        .unwrap_or_default(),
                    assignment: member.assignment.clone(),
                })
                .collect(),
        }
    }

    /// Restores membership from a metadata record at load: a group with members is Stable (they keep
    /// heartbeating into the same generation after a broker restart); their sessions start now.
    pub fn restore(&mut self, stored: super::store::StoredGroup, log_offset: i64, now: Instant) {
        self.generation = stored.generation;
        self.protocol_type = (!stored.protocol_type.is_empty()).then_some(stored.protocol_type);
        self.protocol = stored.protocol.clone();
        self.leader = stored.leader;
        self.metadata_log_offset = log_offset;
        self.members.clear();
        self.static_members.clear();
        let protocol = stored.protocol.unwrap_or_default();
        for member in stored.members {
            let session_timeout = Duration::from_millis(member.session_timeout_ms.max(0) as u64);
            if let Some(instance) = &member.instance_id {
                self.static_members.insert(instance.clone(), member.member_id.clone());
            }
            self.members.insert(
                member.member_id.clone(),
                Member {
                    id: member.member_id,
                    instance_id: member.instance_id,
                    client_id: member.client_id,
                    client_host: member.client_host,
                    protocol_type: self.protocol_type.clone().unwrap_or_default(),
                    protocols: vec![(protocol.clone(), member.subscription)],
                    session_timeout,
                    rebalance_timeout: Duration::from_millis(member.rebalance_timeout_ms.max(0) as u64),
                    assignment: member.assignment,
                    session_deadline: now + session_timeout,
                    awaiting_join: None,
                    join_supports_skip: false,
                    awaiting_sync: None,
                },
            );
        }
        let state = if self.members.is_empty() { GroupState::Empty } else { GroupState::Stable };
        self.state = state;
        self.state_since_ms = stored.state_timestamp_ms;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::{block_on, poll_once};

    const DELAY: Duration = Duration::from_millis(3000);

    fn params(member_id: &str, protocols: &[&str]) -> JoinParams {
        JoinParams {
            member_id: member_id.into(),
            instance_id: None,
            client_id: "client".into(),
            client_host: "/127.0.0.1".into(),
            protocol_type: "consumer".into(),
            protocols: protocols
                .iter()
                .map(|name| (name.to_string(), Bytes::from(name.to_string())))
                .collect(),
            session_timeout: Duration::from_secs(10),
            rebalance_timeout: Duration::from_secs(30),
            require_known_member_id: true,
            supports_skip_assignment: false,
        }
    }

    fn ready<T>(receiver: &mut OneshotReceiver<T>) -> Option<T> {
        block_on(poll_once(receiver)).flatten()
    }

    /// Joins through MEMBER_ID_REQUIRED; returns the member id and the parked join.
    fn join_new(
        group: &mut Group,
        now: Instant,
        protocols: &[&str],
    ) -> (String, OneshotReceiver<JoinOutcome>) {
        let JoinReply::Now(first) = group.join(params("", protocols), now, 100, DELAY) else {
            panic!("an unknown member must get MEMBER_ID_REQUIRED first");
        };
        assert_eq!(first.error, ResponseError::MemberIdRequired);
        match group.join(params(&first.member_id, protocols), now, 100, DELAY) {
            JoinReply::Later(receiver) => (first.member_id, receiver),
            JoinReply::Now(outcome) => panic!("joined at once: {outcome:?}"),
        }
    }

    #[test]
    fn first_rebalance_waits_for_the_initial_delay_then_elects_a_leader() {
        let start = Instant::now();
        let mut group = Group::new("g", 0);
        let (a, mut join_a) = join_new(&mut group, start, &["range", "roundrobin"]);
        let (b, mut join_b) =
            join_new(&mut group, start + Duration::from_millis(1000), &["roundrobin", "range"]);
        assert_eq!(group.state, GroupState::PreparingRebalance);
        group.tick(start + Duration::from_millis(3500), DELAY);
        assert!(ready(&mut join_a).is_none(), "the delay was extended by the second member");
        group.tick(start + Duration::from_millis(4001), DELAY);
        let outcome_a = ready(&mut join_a).expect("join completed");
        let outcome_b = ready(&mut join_b).expect("join completed");
        assert_eq!(group.state, GroupState::CompletingRebalance);
        assert_eq!(outcome_a.generation, 1);
        assert_eq!(outcome_a.leader, outcome_b.leader);
        let (leader, follower) =
            if outcome_a.leader == a { (outcome_a, outcome_b) } else { (outcome_b, outcome_a) };
        assert_eq!(leader.members.len(), 2);
        assert!(follower.members.is_empty());
        // Both support both; one vote each, so the tie goes to the leader-to-be's preference order.
        assert!(leader.protocol.is_some());
        assert!([a.as_str(), b.as_str()].contains(&leader.leader.as_str()));
    }

    fn stable_group_of_two(start: Instant) -> (Group, String, String) {
        let mut group = Group::new("g", 0);
        let (a, mut join_a) = join_new(&mut group, start, &["range"]);
        let (b, mut join_b) = join_new(&mut group, start, &["range"]);
        group.tick(start + DELAY, DELAY);
        let outcome = ready(&mut join_a).unwrap();
        ready(&mut join_b).unwrap();
        let leader = outcome.leader.clone();
        let follower = if leader == a { b.clone() } else { a.clone() };
        let SyncReply::Later(mut follower_sync) =
            group.sync(&follower, None, 1, None, None, Vec::new(), start + DELAY)
        else {
            panic!("the follower waits for the leader");
        };
        let assignments =
            vec![(leader.clone(), Bytes::from_static(b"p0")), (follower.clone(), Bytes::from_static(b"p1"))];
        let SyncReply::Persist { generation, mut receiver } =
            group.sync(&leader, None, 1, Some("consumer"), Some("range"), assignments, start + DELAY)
        else {
            panic!("the leader's sync persists the group");
        };
        assert!(ready(&mut follower_sync).is_none(), "nothing is answered before the metadata is durable");
        group.finish_sync(generation);
        assert_eq!(ready(&mut receiver).unwrap().assignment, Bytes::from_static(b"p0"));
        assert_eq!(ready(&mut follower_sync).unwrap().assignment, Bytes::from_static(b"p1"));
        assert_eq!(group.state, GroupState::Stable);
        (group, leader, follower)
    }

    #[test]
    fn sync_hands_out_the_leaders_assignments() {
        stable_group_of_two(Instant::now());
    }

    #[test]
    fn a_silent_member_expires_and_the_rest_rebalance() {
        let start = Instant::now();
        let (mut group, leader, follower) = stable_group_of_two(start);
        let later = start + DELAY + Duration::from_secs(8);
        assert_eq!(group.heartbeat(&leader, None, 1, later), ErrorCode::NONE);
        group.tick(start + DELAY + Duration::from_secs(11), DELAY);
        assert!(!group.members.contains_key(&follower), "the follower missed its session timeout");
        assert_eq!(group.state, GroupState::PreparingRebalance);
        assert_eq!(group.heartbeat(&leader, None, 1, later), ResponseError::RebalanceInProgress);
        let JoinReply::Later(mut rejoin) = group.join(params(&leader, &["range"]), later, 100, DELAY) else {
            panic!("rejoin waits");
        };
        let outcome = ready(&mut rejoin).expect("the only member rejoined: the join completes at once");
        assert_eq!(outcome.generation, 2);
        assert_eq!(outcome.members.len(), 1);
        assert_eq!(group.heartbeat(&follower, None, 2, later), ResponseError::UnknownMemberId);
    }

    #[test]
    fn leaving_rebalances_and_the_last_leave_empties_the_group() {
        let start = Instant::now();
        let (mut group, leader, follower) = stable_group_of_two(start);
        let now = start + DELAY;
        assert_eq!(group.leave(&follower, None, now, DELAY), ErrorCode::NONE);
        assert_eq!(group.state, GroupState::PreparingRebalance);
        assert_eq!(group.leave(&follower, None, now, DELAY), ResponseError::UnknownMemberId);
        assert_eq!(group.leave(&leader, None, now, DELAY), ErrorCode::NONE);
        assert_eq!(group.state, GroupState::Empty);
        assert!(group.metadata_dirty);
        assert_eq!(group.check_commit("", None, -1), ErrorCode::NONE, "simple commits to an empty group");
    }

    #[test]
    fn stale_generations_and_unknown_members_are_refused() {
        let start = Instant::now();
        let (mut group, leader, _) = stable_group_of_two(start);
        assert_eq!(group.heartbeat(&leader, None, 0, start), ResponseError::IllegalGeneration);
        assert_eq!(group.heartbeat("nobody", None, 1, start), ResponseError::UnknownMemberId);
        assert_eq!(group.check_commit(&leader, None, 0), ResponseError::IllegalGeneration);
        assert_eq!(group.check_commit(&leader, None, 1), ErrorCode::NONE);
        assert_eq!(group.check_commit("", None, -1), ResponseError::UnknownMemberId);
        let JoinReply::Now(outcome) = group.join(params("nobody", &["range"]), start, 100, DELAY) else {
            panic!()
        };
        assert_eq!(outcome.error, ResponseError::UnknownMemberId);
        let JoinReply::Now(outcome) = group.join(params("", &["sticky"]), start, 100, DELAY) else {
            panic!()
        };
        assert_eq!(outcome.error, ResponseError::InconsistentGroupProtocol, "no protocol in common");
    }

    #[test]
    fn a_static_member_restarting_gets_its_assignment_back_without_a_rebalance() {
        let start = Instant::now();
        let mut group = Group::new("g", 0);
        let static_params = |instance: &str| {
            let mut p = params("", &["range"]);
            p.instance_id = Some(instance.into());
            p
        };
        let JoinReply::Later(mut join_a) = group.join(static_params("a"), start, 100, DELAY) else {
            panic!()
        };
        let JoinReply::Later(mut join_b) = group.join(static_params("b"), start, 100, DELAY) else {
            panic!()
        };
        group.tick(start + DELAY, DELAY);
        let a = ready(&mut join_a).unwrap();
        let b = ready(&mut join_b).unwrap();
        let (leader, follower) = if a.leader == a.member_id { (a, b) } else { (b, a) };
        let assignments = vec![
            (leader.member_id.clone(), Bytes::from_static(b"L")),
            (follower.member_id.clone(), Bytes::from_static(b"F")),
        ];
        let SyncReply::Persist { generation, .. } =
            group.sync(&leader.member_id, None, 1, None, None, assignments, start + DELAY)
        else {
            panic!()
        };
        group.finish_sync(generation);
        let follower_instance = group.members[&follower.member_id].instance_id.clone().unwrap();
        // The follower restarts: a new member id, same instance id.
        let JoinReply::Now(again) = group.join(static_params(&follower_instance), start + DELAY, 100, DELAY)
        else {
            panic!("a static follower rejoining a stable group is answered at once");
        };
        assert_eq!(again.error, ErrorCode::NONE);
        assert_eq!(again.generation, 1, "no rebalance");
        assert_ne!(again.member_id, follower.member_id);
        assert_eq!(group.state, GroupState::Stable);
        let SyncReply::Now(sync) =
            group.sync(&again.member_id, Some(&follower_instance), 1, None, None, Vec::new(), start + DELAY)
        else {
            panic!()
        };
        assert_eq!(sync.assignment, Bytes::from_static(b"F"));
        // The old incarnation is fenced.
        assert_eq!(
            group.heartbeat(&follower.member_id, Some(&follower_instance), 1, start + DELAY),
            ResponseError::FencedInstanceId
        );
    }

    #[test]
    fn restore_brings_back_a_stable_group() {
        let start = Instant::now();
        let (group, leader, follower) = stable_group_of_two(start);
        let stored = group.stored();
        let mut restored = Group::new("g", 0);
        restored.restore(stored, 10, start);
        assert_eq!(restored.state, GroupState::Stable);
        assert_eq!(restored.generation, 1);
        assert_eq!(restored.heartbeat(&leader, None, 1, start), ErrorCode::NONE);
        let SyncReply::Now(sync) = restored.sync(&follower, None, 1, None, None, Vec::new(), start) else {
            panic!()
        };
        assert_eq!(sync.assignment, Bytes::from_static(b"p1"));
    }
}
