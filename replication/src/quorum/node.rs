//! `QuorumNode`: one member of the metadata quorum — raft-rs's `RawNode`, the rules for driving it, and the
//! `MetadataImage` its committed entries build.
//!
//! Sans-I/O. Inputs: `step` (a message from a peer), `tick` (time passed), `propose` (records from the
//! controller) and `sync` (make the writes so far durable). Outputs go into a `QuorumOutput`: messages to send,
//! entries applied, proposal outcomes. Writes go through the `QuorumStorage` seam; nothing reaches a peer or the
//! state machine before the sync that makes it safe.
//!
//! The rules (REPLICATION_FACTS.md §1; raft-rs `lib.rs` "async ready"), each enforced here:
//! - A Ready's *leader* messages (`take_messages`) go out at once: a leader's own entries count towards the commit
//!   only once persisted (`on_persist_entries`), so sending before the local sync is safe (Raft thesis 10.2.1).
//! - Everything else in a Ready — the follower and candidate messages (`take_persisted_messages`: votes, append
//!   acknowledgements), committed entries, a snapshot to install — waits for the `sync` that covers the Ready's
//!   snapshot, entries and hard state. The commit index rides in that hard state, so it is durable before anything
//!   at or below it is applied; then `on_persist_ready` tells raft-rs.
//! - On restart `applied` is the snapshot's index: the image is rebuilt from the snapshot and raft-rs re-delivers
//!   the committed entries after it. Snapshots are taken only of applied (hence durably committed) state.
//! - A proposal is remembered by the (index, term) its entry got. It succeeds only when an entry is applied at that
//!   index *with that term*; another term there means the entry was replaced after a leader change.
//! - Every `MsgSnapshot` handed to the transport is reported back (`report_snapshot`), or the follower would stay
//!   in the snapshot state forever.
//! - `check_quorum` and `pre_vote` are on. raft-rs draws election timeouts from `thread_rng`; the driver redraws
//!   every timeout from its own seeded generator whenever the election clock restarts, so a run replays.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::Arc;

use raft::prelude::{ConfState, Entry, EntryType, Message, MessageType, Snapshot};
use raft::{RawNode, SnapshotStatus, StateRole};

use crate::metadata::{decode_batch, encode_batch, ImageError, MetadataImage, MetadataRecord};
use crate::quorum::storage::{QuorumStorage, QuorumStorageError};
use crate::sim::Prng;
use crate::types::NodeId;

/// raft-rs ids must be non-zero; Kafka node ids start at 0. Node `n` is raft id `n + 1`, everywhere.
pub fn raft_id(node: NodeId) -> u64 {
    assert!(node.0 >= 0, "{node} cannot be a quorum member");
    node.0 as u64 + 1
}

pub fn node_id(raft_id: u64) -> NodeId {
    assert!(raft_id >= 1 && raft_id <= i32::MAX as u64 + 1, "raft id {raft_id} is not a node's");
    NodeId((raft_id - 1) as i32)
}

/// A rule of the driver deliberately broken, so a test can show that the simulator's checker notices. Never set
/// outside tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BrokenRule {
    /// Send vote and append acknowledgements as soon as the Ready is written, before the sync.
    SendBeforeSync,
    /// Report a proposal as committed as soon as it is appended to the leader's log.
    AcknowledgeBeforeCommit,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuorumConfig {
    pub node: NodeId,
    /// The membership written at bootstrap into empty storage; storage that already holds one keeps its own.
    pub voters: Vec<NodeId>,
    /// Broker-only nodes: they receive the log but never vote or campaign.
    pub learners: Vec<NodeId>,
    /// Leader heartbeat period, in ticks.
    pub heartbeat_tick: usize,
    /// The shortest election timeout in ticks; each timeout is drawn from `[election_tick, election_tick +
    /// election_jitter_tick_count]`.
    pub election_tick: usize,
    pub election_jitter_tick_count: usize,
    /// A snapshot is taken once this many applied entries sit in the log after the last one.
    pub snapshot_entry_count: u64,
    /// Proposals awaiting their outcome at most; more are refused (`ProposalError::TooManyPending`).
    pub proposal_pending_count_max: usize,
    /// Bytes of entries in one append message (raft-rs `max_size_per_msg`).
    pub message_size_max: u64,
    /// Append messages in flight per follower (raft-rs `max_inflight_msgs`).
    pub inflight_message_count_max: usize,
    /// Seeds the election-timeout draws.
    pub jitter_seed: u64,
    pub broken_rule: Option<BrokenRule>,
}

impl QuorumConfig {
    /// KRaft's defaults scaled to a 100 ms tick: heartbeats every 200 ms (`heartbeat_tick` 2), elections after
    /// 1–2 s (`controller.quorum.election.timeout.ms` 1000 plus as much jitter).
    pub fn new(node: NodeId, voters: Vec<NodeId>, learners: Vec<NodeId>) -> QuorumConfig {
        QuorumConfig {
            node,
            voters,
            learners,
            heartbeat_tick: 2,
            election_tick: 10,
            election_jitter_tick_count: 10,
            snapshot_entry_count: 1_024,
            proposal_pending_count_max: 1_024,
            message_size_max: 1 << 20,
            inflight_message_count_max: 64,
            jitter_seed: 0,
            broken_rule: None,
        }
    }
}

/// Why the node stopped: storage failed, or raft-rs refused its configuration or state. The node must not be
/// used afterwards; the broker restarts it from storage.
#[derive(Debug)]
pub enum QuorumError {
    Storage(QuorumStorageError),
    Raft(raft::Error),
    Snapshot(crate::metadata::CodecError),
    Config(String),
    /// An earlier input failed (the reason is in its message); the node takes no more input.
    Stopped(String),
}

impl fmt::Display for QuorumError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QuorumError::Storage(error) => write!(formatter, "{error}"),
            QuorumError::Raft(error) => write!(formatter, "raft: {error}"),
            QuorumError::Snapshot(error) => write!(formatter, "metadata snapshot: {error}"),
            QuorumError::Config(reason) => write!(formatter, "quorum configuration: {reason}"),
            QuorumError::Stopped(reason) => write!(formatter, "quorum node stopped after: {reason}"),
        }
    }
}

impl std::error::Error for QuorumError {}

impl From<QuorumStorageError> for QuorumError {
    fn from(error: QuorumStorageError) -> QuorumError {
        QuorumError::Storage(error)
    }
}

impl From<raft::Error> for QuorumError {
    fn from(error: raft::Error) -> QuorumError {
        QuorumError::Raft(error)
    }
}

/// The caller's name for a proposal, echoed in its outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProposalId(pub u64);

/// Why a proposal did not (or may not have) taken effect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProposalError {
    /// Only the leader (the active controller) proposes; `leader` is where to go, if known.
    NotLeader {
        leader: Option<NodeId>,
    },
    TooManyPending {
        pending_count_max: usize,
    },
    /// raft-rs dropped it (a leadership transfer, the uncommitted-size limit).
    Dropped,
    /// Another leader's entry took the proposal's place: it never took effect.
    Superseded {
        index: u64,
    },
    /// Committed, but the image refused it when applied: it had no effect on any node.
    Refused {
        index: u64,
        error: ImageError,
    },
    /// A snapshot replaced the log past the proposal; whether it was committed is unknown.
    OutcomeUnknown,
    /// The node stopped on a storage or raft error (see `QuorumError::Stopped`).
    Stopped,
}

impl fmt::Display for ProposalError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProposalError::NotLeader { leader: Some(leader) } => {
                write!(formatter, "not the leader; {leader} is")
            }
            ProposalError::NotLeader { leader: None } => {
                write!(formatter, "not the leader; no leader is known")
            }
            ProposalError::TooManyPending { pending_count_max } => {
                write!(formatter, "{pending_count_max} proposals are already pending")
            }
            ProposalError::Dropped => write!(formatter, "the proposal was dropped"),
            ProposalError::Superseded { index } => write!(formatter, "another entry took index {index}"),
            ProposalError::Refused { index, error } => write!(formatter, "entry {index} refused: {error}"),
            ProposalError::OutcomeUnknown => {
                write!(formatter, "a snapshot replaced the log past the proposal")
            }
            ProposalError::Stopped => write!(formatter, "the quorum node stopped"),
        }
    }
}

impl std::error::Error for ProposalError {}

/// What one applied entry did to the image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppliedKind {
    /// A batch of records, applied (`Ok`) or refused as a whole by the image.
    Records(Result<usize, ImageError>),
    /// An entry with no records: raft-rs's empty entry of a new leader, a configuration change, or data that did
    /// not decode.
    Empty,
    /// A snapshot replaced the image: everything up to `index` at once.
    Snapshot,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    pub index: u64,
    pub term: u64,
    /// The entry's data as committed (empty for a snapshot), for comparing logs across nodes.
    pub data: bytes::Bytes,
    pub kind: AppliedKind,
}

/// Everything one input produced. The caller sends `messages` (to `message.to`, a raft id; see `node_id`) and
/// takes the rest; the driver only appends.
#[derive(Debug, Default)]
pub struct QuorumOutput {
    pub messages: Vec<Message>,
    pub applied: Vec<Applied>,
    pub proposals: Vec<(ProposalId, Result<u64, ProposalError>)>,
}

/// A Ready written to storage whose effects wait for the next sync.
#[derive(Debug)]
struct UnsyncedReady {
    number: u64,
    messages: Vec<Message>,
    snapshot: Option<Snapshot>,
    committed: Vec<Entry>,
}

/// Readies written and not yet synced, at most. The host syncs after every batch of inputs (the simulator at
/// random, the broker when its fdatasync completes), so a few are normal; thousands mean a host that never syncs,
/// and the queue would otherwise grow without bound.
pub const UNSYNCED_READY_COUNT_MAX: usize = 4_096;

/// One member of the metadata quorum. In the broker it will live on one shard (the controller's), created at
/// start from its storage and dropped at shutdown after a final `sync`; every other shard sees only the
/// `Arc<MetadataImage>` it publishes. Not wired into the broker yet.
pub struct QuorumNode<S: QuorumStorage> {
    raw: RawNode<S>,
    config: QuorumConfig,
    image: Arc<MetadataImage>,
    jitter: Prng,
    /// Proposals awaiting their entry's application: index → (term, proposal).
    pending: BTreeMap<u64, (u64, ProposalId)>,
    unsynced: VecDeque<UnsyncedReady>,
    snapshot_reports: Vec<u64>,
    /// Set by the first failed input: raft-rs's state may be half-advanced, so nothing more is accepted.
    stopped: Option<String>,
}

impl<S: QuorumStorage> QuorumNode<S> {
    /// Opens a node over `storage`: bootstraps empty storage with the configured membership, else restarts from
    /// what storage holds (image from the latest snapshot, `applied` at its index).
    pub fn open(config: QuorumConfig, mut storage: S) -> Result<QuorumNode<S>, QuorumError> {
        validate(&config)?;
        if !storage.initial_state()?.initialized() {
            let conf_state = ConfState {
                voters: config.voters.iter().copied().map(raft_id).collect(),
                learners: config.learners.iter().copied().map(raft_id).collect(),
                ..ConfState::default()
            };
            storage.set_conf_state(&conf_state)?;
            storage.sync()?;
        }
        let snapshot = storage.latest_snapshot();
        let snapshot_index = snapshot.get_metadata().index;
        let image = if snapshot_index == 0 {
            MetadataImage::empty()
        } else {
            MetadataImage::decode(&snapshot.data).map_err(QuorumError::Snapshot)?
        };
        if image.applied_index() != snapshot_index {
            return Err(QuorumError::Config(format!(
                "snapshot at {snapshot_index} holds an image at {}",
                image.applied_index()
            )));
        }
        let raft_config = raft::Config {
            id: raft_id(config.node),
            heartbeat_tick: config.heartbeat_tick,
            election_tick: config.election_tick,
            min_election_tick: config.election_tick,
            max_election_tick: config.election_tick + config.election_jitter_tick_count + 1,
            applied: snapshot_index,
            check_quorum: true,
            pre_vote: true,
            max_size_per_msg: config.message_size_max,
            max_inflight_msgs: config.inflight_message_count_max,
            ..raft::Config::default()
        };
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let raw = RawNode::new(&raft_config, storage, &logger)?;
        let mut node = QuorumNode {
            raw,
            jitter: Prng::new(config.jitter_seed),
            config,
            image: Arc::new(image),
            pending: BTreeMap::new(),
            unsynced: VecDeque::new(),
            snapshot_reports: Vec::new(),
            stopped: None,
        };
        node.draw_election_timeout();
        Ok(node)
    }

    pub fn node(&self) -> NodeId {
        self.config.node
    }

    /// The image as of the last applied entry; share it, it never changes.
    pub fn image(&self) -> &Arc<MetadataImage> {
        &self.image
    }

    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    pub fn role(&self) -> StateRole {
        self.raw.raft.state
    }

    pub fn term(&self) -> u64 {
        self.raw.raft.term
    }

    pub fn leader(&self) -> Option<NodeId> {
        match self.raw.raft.leader_id {
            raft::INVALID_ID => None,
            id => Some(node_id(id)),
        }
    }

    /// The commit index this node knows (durable or not).
    /// Each voter's replication progress as this leader tracks it, `(voter, highest index known on it)` by
    /// voter; empty unless this node leads (KIP-595's DescribeQuorum answers it).
    pub fn voter_progress(&self) -> Vec<(NodeId, u64)> {
        if !self.is_leader() {
            return Vec::new();
        }
        let mut progress: Vec<(NodeId, u64)> =
            self.raw.raft.prs().iter().map(|(id, progress)| (node_id(*id), progress.matched)).collect();
        progress.sort_unstable();
        progress
    }

    pub fn commit_index(&self) -> u64 {
        self.raw.raft.raft_log.committed
    }

    pub fn storage(&self) -> &S {
        self.raw.store()
    }

    /// Readies written but not yet synced: what a `sync` would release.
    pub fn unsynced_ready_count(&self) -> usize {
        self.unsynced.len()
    }

    pub fn pending_proposal_count(&self) -> usize {
        self.pending.len()
    }

    /// One tick of the quorum's clock (the broker's 100 ms timer).
    pub fn tick(&mut self, out: &mut QuorumOutput) -> Result<(), QuorumError> {
        self.check_running()?;
        self.raw.tick();
        self.process(out)
    }

    /// A message from a peer. Messages for another node or of a local-only type are dropped, as a network
    /// garbling them would; raft-rs's own refusals are dropped too (a message from a removed peer).
    pub fn step(&mut self, message: Message, out: &mut QuorumOutput) -> Result<(), QuorumError> {
        self.check_running()?;
        let local_only = matches!(
            message.msg_type,
            MessageType::MsgHup
                | MessageType::MsgBeat
                | MessageType::MsgUnreachable
                | MessageType::MsgSnapStatus
        );
        if message.to == raft_id(self.config.node) && !local_only {
            match self.raw.step(message) {
                Ok(()) | Err(raft::Error::StepPeerNotFound) | Err(raft::Error::StepLocalMsg) => {}
                Err(error) => return Err(error.into()),
            }
        }
        self.process(out)
    }

    /// The quorum's leader is known dead (the driver found its port refusing connections): campaign now, as the
    /// target of a leadership transfer does (raft-rs's MsgTimeoutNow: no pre-vote, and voters set the leader's lease
    /// aside), instead of waiting out the election timeout and the lease. Only liveness changes: a vote still needs
    /// an up-to-date log, one vote per term, and a majority. Nothing happens while this node leads or knows no
    /// leader.
    pub fn campaign_now(&mut self, out: &mut QuorumOutput) -> Result<(), QuorumError> {
        let Some(leader) = self.leader().filter(|leader| *leader != self.config.node) else {
            return Ok(());
        };
        let mut message = Message::default();
        message.set_msg_type(MessageType::MsgTimeoutNow);
        message.from = raft_id(leader);
        message.to = raft_id(self.config.node);
        message.term = self.term();
        self.step(message, out)
    }

    /// Proposes `records` as one entry. `Ok` means appended to this leader's log; the outcome arrives in
    /// `out.proposals` once the entry is applied (or replaced).
    pub fn propose(
        &mut self,
        proposal: ProposalId,
        records: &[MetadataRecord],
        out: &mut QuorumOutput,
    ) -> Result<(), ProposalError> {
        if self.stopped.is_some() {
            return Err(ProposalError::Stopped);
        }
        if !self.is_leader() {
            return Err(ProposalError::NotLeader { leader: self.leader() });
        }
        if self.pending.len() >= self.config.proposal_pending_count_max {
            return Err(ProposalError::TooManyPending {
                pending_count_max: self.config.proposal_pending_count_max,
            });
        }
        let context = proposal.0.to_be_bytes().to_vec();
        self.raw.propose(context, encode_batch(records)).map_err(|_| ProposalError::Dropped)?;
        let index = self.raw.raft.raft_log.last_index();
        let term = self.raw.raft.term;
        // A proposal of an earlier reign at the same index was cut from the log when this one took its place.
        if let Some((earlier_term, earlier)) = self.pending.insert(index, (term, proposal)) {
            assert!(earlier_term < term, "two proposals at index {index} in term {term}");
            out.proposals.push((earlier, Err(ProposalError::Superseded { index })));
        }
        if self.config.broken_rule == Some(BrokenRule::AcknowledgeBeforeCommit) {
            self.pending.remove(&index);
            out.proposals.push((proposal, Ok(index)));
        }
        // A failure here stops the node; the proposal's outcome is then never reported.
        self.process(out).map_err(|_| ProposalError::Stopped)
    }

    /// The sync point: makes every write so far durable, then releases what waited for it — acknowledgements to
    /// peers, committed entries to apply — and tells raft-rs.
    pub fn sync(&mut self, out: &mut QuorumOutput) -> Result<(), QuorumError> {
        self.check_running()?;
        let result = self.sync_and_release(out);
        if let Err(error) = &result {
            self.stopped.get_or_insert_with(|| error.to_string());
        }
        result
    }

    fn sync_and_release(&mut self, out: &mut QuorumOutput) -> Result<(), QuorumError> {
        if self.unsynced.is_empty() {
            return Ok(());
        }
        self.sync_unsynced(out)?;
        self.maybe_snapshot()?;
        self.process(out)
    }

    /// Syncs storage, releases every waiting Ready in order, and tells raft-rs they are persisted and applied.
    fn sync_unsynced(&mut self, out: &mut QuorumOutput) -> Result<(), QuorumError> {
        self.raw.mut_store().sync()?;
        let mut last_number = 0;
        while let Some(ready) = self.unsynced.pop_front() {
            last_number = ready.number;
            self.release(ready, out)?;
        }
        self.raw.on_persist_ready(last_number);
        self.raw.advance_apply_to(self.image.applied_index());
        Ok(())
    }

    fn check_running(&self) -> Result<(), QuorumError> {
        match &self.stopped {
            Some(reason) => Err(QuorumError::Stopped(reason.clone())),
            None => Ok(()),
        }
    }

    /// Handles every Ready raft-rs has, then the follow-ups (snapshot reports, the election timeout draw). The
    /// first failure stops the node for good.
    fn process(&mut self, out: &mut QuorumOutput) -> Result<(), QuorumError> {
        let result = self.process_readies(out);
        if let Err(error) = &result {
            self.stopped = Some(error.to_string());
        }
        result
    }

    fn process_readies(&mut self, out: &mut QuorumOutput) -> Result<(), QuorumError> {
        loop {
            while self.raw.has_ready() {
                self.handle_ready(out)?;
            }
            if self.snapshot_reports.is_empty() {
                break;
            }
            for to in std::mem::take(&mut self.snapshot_reports) {
                self.raw.report_snapshot(to, SnapshotStatus::Finish);
            }
        }
        self.draw_election_timeout();
        Ok(())
    }

    fn handle_ready(&mut self, out: &mut QuorumOutput) -> Result<(), QuorumError> {
        let mut ready = self.raw.ready();
        let leader_messages = ready.take_messages();
        self.send(leader_messages, out);
        let store = self.raw.mut_store();
        let snapshot = (!ready.snapshot().is_empty()).then(|| ready.snapshot().clone());
        if let Some(snapshot) = &snapshot {
            store.install_snapshot(snapshot)?;
        }
        if !ready.entries().is_empty() {
            store.append(ready.entries())?;
        }
        let wrote_hard_state = ready.hs().is_some();
        if let Some(hard_state) = ready.hs() {
            store.set_hard_state(hard_state)?;
        }
        let wrote = snapshot.is_some() || !ready.entries().is_empty() || wrote_hard_state;
        let mut unsynced = UnsyncedReady {
            number: ready.number(),
            messages: ready.take_persisted_messages(),
            snapshot,
            committed: ready.take_committed_entries(),
        };
        if self.config.broken_rule == Some(BrokenRule::SendBeforeSync) {
            self.send(std::mem::take(&mut unsynced.messages), out);
        }
        self.raw.advance_append_async(ready);
        if !wrote && self.unsynced.is_empty() {
            // Nothing of this Ready needs a sync, and everything before it is durable: release it now.
            let number = unsynced.number;
            self.release(unsynced, out)?;
            self.raw.on_persist_ready(number);
            self.raw.advance_apply_to(self.image.applied_index());
        } else {
            assert!(
                self.unsynced.len() < UNSYNCED_READY_COUNT_MAX,
                "{UNSYNCED_READY_COUNT_MAX} Readies wait for a sync: the host never calls `sync`"
            );
            let installs_snapshot = unsynced.snapshot.is_some();
            self.unsynced.push_back(unsynced);
            // A snapshot cuts the stored log at its index at once, while raft-rs's `applied` stays behind until the
            // snapshot is released; a campaign in between reads entries from `applied + 1` and finds them
            // compacted (a fatal error in raft-rs 0.7). So an installed snapshot is synced and applied here.
            if installs_snapshot {
                self.sync_unsynced(out)?;
            }
        }
        Ok(())
    }

    fn send(&mut self, messages: Vec<Message>, out: &mut QuorumOutput) {
        for message in messages {
            if message.msg_type == MessageType::MsgSnapshot {
                self.snapshot_reports.push(message.to);
            }
            out.messages.push(message);
        }
    }

    /// The durable part of a Ready: its messages go out, its snapshot and committed entries are applied.
    fn release(&mut self, ready: UnsyncedReady, out: &mut QuorumOutput) -> Result<(), QuorumError> {
        self.send(ready.messages, out);
        if let Some(snapshot) = ready.snapshot {
            self.install_image(&snapshot, out)?;
        }
        for entry in ready.committed {
            self.apply_entry(&entry, out);
        }
        Ok(())
    }

    fn install_image(&mut self, snapshot: &Snapshot, out: &mut QuorumOutput) -> Result<(), QuorumError> {
        let metadata = snapshot.get_metadata();
        let image = MetadataImage::decode(&snapshot.data).map_err(QuorumError::Snapshot)?;
        assert_eq!(image.applied_index(), metadata.index, "a snapshot's image is at its index");
        assert!(metadata.index > self.image.applied_index(), "a snapshot moves the image forward");
        self.image = Arc::new(image);
        // Proposals the snapshot passed: their entries may or may not be inside it.
        let passed: Vec<u64> = self.pending.range(..=metadata.index).map(|(index, _)| *index).collect();
        for index in passed {
            if let Some((_, proposal)) = self.pending.remove(&index) {
                out.proposals.push((proposal, Err(ProposalError::OutcomeUnknown)));
            }
        }
        out.applied.push(Applied {
            index: metadata.index,
            term: metadata.term,
            data: bytes::Bytes::new(),
            kind: AppliedKind::Snapshot,
        });
        Ok(())
    }

    fn apply_entry(&mut self, entry: &Entry, out: &mut QuorumOutput) {
        // raft-rs delivers each committed entry once, after `applied` (the snapshot's index at restart) and after any
        // snapshot it installs; a repeat or a gap means the driver broke a rule.
        let applied_index = self.image.applied_index();
        assert_eq!(entry.index, applied_index + 1, "entries are applied in order without gaps or repeats");
        let batch = match entry.entry_type {
            EntryType::EntryNormal if !entry.data.is_empty() => decode_batch(&entry.data).ok(),
            // Membership is fixed at bootstrap: this driver proposes no configuration change.
            _ => None,
        };
        let kind = match &batch {
            Some(records) => match self.image.apply_batch(entry.index, records) {
                Ok(image) => {
                    self.image = Arc::new(image);
                    AppliedKind::Records(Ok(records.len()))
                }
                Err(error) => {
                    self.image = Arc::new(self.image.advanced_to(entry.index));
                    AppliedKind::Records(Err(error))
                }
            },
            None => {
                self.image = Arc::new(self.image.advanced_to(entry.index));
                AppliedKind::Empty
            }
        };
        if let Some((term, proposal)) = self.pending.remove(&entry.index) {
            let outcome = match (&kind, term == entry.term) {
                (_, false) => Err(ProposalError::Superseded { index: entry.index }),
                (AppliedKind::Records(Err(error)), true) => {
                    Err(ProposalError::Refused { index: entry.index, error: error.clone() })
                }
                (_, true) => Ok(entry.index),
            };
            out.proposals.push((proposal, outcome));
        }
        out.applied.push(Applied { index: entry.index, term: entry.term, data: entry.data.clone(), kind });
    }

    /// Takes a snapshot of the applied image once enough applied entries sit in the log, then drops them.
    fn maybe_snapshot(&mut self) -> Result<(), QuorumError> {
        let applied_index = self.image.applied_index();
        let store = self.raw.mut_store();
        let first_index = raft::Storage::first_index(store)?;
        if applied_index + 1 < first_index + self.config.snapshot_entry_count {
            return Ok(());
        }
        let mut snapshot = Snapshot { data: self.image.encode().into(), ..Snapshot::default() };
        let metadata = snapshot.mut_metadata();
        metadata.index = applied_index;
        metadata.term = raft::Storage::term(store, applied_index)?;
        metadata.set_conf_state(raft::Storage::initial_state(store)?.conf_state);
        store.compact_to_snapshot(&snapshot)?;
        Ok(())
    }

    /// Replaces raft-rs's `thread_rng` draw with one from the seeded generator each time the election clock
    /// restarts (after a reset, a heartbeat, or a campaign), so the timeout is random yet replayable.
    fn draw_election_timeout(&mut self) {
        if self.raw.raft.election_elapsed == 0 {
            let jitter = self.jitter.below(self.config.election_jitter_tick_count as u64 + 1) as usize;
            self.raw.raft.set_randomized_election_timeout(self.config.election_tick + jitter);
        }
    }
}

fn validate(config: &QuorumConfig) -> Result<(), QuorumError> {
    let invalid = |reason: String| Err(QuorumError::Config(reason));
    if !config.voters.contains(&config.node) && !config.learners.contains(&config.node) {
        return invalid(format!("{} is neither a voter nor a learner", config.node));
    }
    if config.voters.iter().any(|voter| config.learners.contains(voter)) {
        return invalid("a node is both a voter and a learner".into());
    }
    if let Some(negative) = config.voters.iter().chain(&config.learners).find(|node| node.0 < 0) {
        return invalid(format!("{negative} has a negative id"));
    }
    if config.heartbeat_tick == 0 || config.election_tick <= config.heartbeat_tick {
        return invalid(format!(
            "election_tick {} must exceed heartbeat_tick {} (> 0)",
            config.election_tick, config.heartbeat_tick
        ));
    }
    if config.snapshot_entry_count == 0 || config.proposal_pending_count_max == 0 {
        return invalid("snapshot_entry_count and proposal_pending_count_max must be positive".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::{ConfigChange, ConfigResource};
    use crate::quorum::storage::MemQuorumStorage;

    fn cluster() -> Vec<QuorumNode<MemQuorumStorage>> {
        let voters = vec![NodeId(0), NodeId(1), NodeId(2)];
        (0..3)
            .map(|index| {
                let config = QuorumConfig {
                    jitter_seed: index,
                    ..QuorumConfig::new(NodeId(index as i32), voters.clone(), vec![])
                };
                QuorumNode::open(config, MemQuorumStorage::new()).unwrap()
            })
            .collect()
    }

    /// One round on a perfect network: every node ticks and syncs, then every message is delivered, until quiet.
    fn round(
        nodes: &mut [QuorumNode<MemQuorumStorage>],
        outcomes: &mut Vec<(ProposalId, Result<u64, ProposalError>)>,
    ) {
        let mut out = QuorumOutput::default();
        for node in nodes.iter_mut() {
            node.tick(&mut out).unwrap();
            node.sync(&mut out).unwrap();
        }
        while !out.messages.is_empty() {
            for message in std::mem::take(&mut out.messages) {
                let to = node_id(message.to).0 as usize;
                nodes[to].step(message, &mut out).unwrap();
                nodes[to].sync(&mut out).unwrap();
            }
        }
        outcomes.append(&mut out.proposals);
    }

    fn record(value: &str) -> Vec<MetadataRecord> {
        vec![MetadataRecord::Config(ConfigChange {
            resource: ConfigResource::Broker(NodeId(0)),
            key: "k".into(),
            value: Some(value.into()),
        })]
    }

    // A follower refuses proposals and names the leader; the leader's proposal is acknowledged once applied, every
    // node's image then holds it, and a node restarted from its storage comes back to an equal image.
    #[test]
    fn propose_commit_restart() {
        let mut nodes = cluster();
        let mut outcomes = Vec::new();
        for _ in 0..40 {
            round(&mut nodes, &mut outcomes);
        }
        let leader = nodes.iter().position(|node| node.is_leader()).expect("a leader after 40 rounds");
        let follower = (leader + 1) % 3;
        let mut out = QuorumOutput::default();
        assert_eq!(
            nodes[follower].propose(ProposalId(1), &record("a"), &mut out),
            Err(ProposalError::NotLeader { leader: Some(NodeId(leader as i32)) })
        );
        nodes[leader].propose(ProposalId(2), &record("b"), &mut out).unwrap();
        assert!(out.proposals.is_empty(), "acknowledged before commit");
        for message in out.messages {
            nodes[node_id(message.to).0 as usize].step(message, &mut QuorumOutput::default()).unwrap();
        }
        for _ in 0..5 {
            round(&mut nodes, &mut outcomes);
        }
        assert!(matches!(outcomes.as_slice(), [(ProposalId(2), Ok(_))]), "{outcomes:?}");
        for node in &nodes {
            assert_eq!(node.image().broker_configs(NodeId(0)).unwrap()["k"], "b");
        }
        let config = nodes[follower].config.clone();
        let storage = nodes[follower].storage().clone();
        let restarted = QuorumNode::open(config, storage).unwrap();
        assert_eq!(restarted.image().applied_index(), 0, "no snapshot yet: the image is rebuilt by replay");
        nodes[follower] = restarted;
        for _ in 0..5 {
            round(&mut nodes, &mut outcomes);
        }
        assert_eq!(nodes[follower].image(), nodes[leader].image());
    }

    // A dead leader's survivors need not wait out the election timeout and the lease: the one told its leader is
    // gone campaigns at once and the other votes for it (inside the lease, which an ordinary vote request is not
    // granted in), in one exchange of messages with no tick.
    #[test]
    fn campaign_now_elects_a_survivor_without_waiting() {
        let mut nodes = cluster();
        let mut outcomes = Vec::new();
        for _ in 0..40 {
            round(&mut nodes, &mut outcomes);
        }
        let leader = nodes.iter().position(|node| node.is_leader()).expect("a leader after 40 rounds");
        let (first, second) = ((leader + 1) % 3, (leader + 2) % 3);
        let term = nodes[first].term();
        let exchange = |nodes: &mut Vec<QuorumNode<MemQuorumStorage>>, mut out: QuorumOutput| {
            for _ in 0..4 {
                for message in std::mem::take(&mut out.messages) {
                    let to = node_id(message.to).0 as usize;
                    if to != leader {
                        nodes[to].step(message, &mut out).unwrap();
                        nodes[to].sync(&mut out).unwrap();
                    }
                }
                for node in [first, second] {
                    nodes[node].sync(&mut out).unwrap();
                }
            }
        };
        let mut out = QuorumOutput::default();
        nodes[first].campaign_now(&mut out).unwrap();
        nodes[first].sync(&mut out).unwrap();
        exchange(&mut nodes, out);
        assert!(nodes[first].is_leader(), "the survivor leads at once");
        assert!(nodes[first].term() > term);
        assert_eq!(nodes[second].leader(), Some(NodeId(first as i32)));
    }
}
