//! The controller of a voter: one thread that owns the `QuorumNode` (raft-rs over `DiskQuorumStorage`, whose
//! fsyncs would stall a shard's reactor, hence a thread of its own), its listener for the other voters and the
//! brokers, and a sender thread per other voter. Inputs arrive as [`Event`]s on one bounded channel; after each
//! batch of them the node syncs its storage, and only then are acknowledgements sent, committed entries applied
//! and the new image published to the shards ([`MetadataCell`]).
//!
//! While this voter leads, it is the active controller: it answers admin writes (validated by
//! `metadata::plan` against its image, answered once committed), broker heartbeats (registration, unfencing,
//! and fencing of brokers whose session expired: `BrokerHeartbeats`), metadata fetches and DescribeQuorum.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use raft::eraftpb::Message;
use sluice_replication::metadata::controller::fence_records_with;
use sluice_replication::metadata::{
    complete_reassignments, elect_leaderless, plan_alter_reassignments, plan_elect_leaders,
    rebalance_leaders, ElectLeadersRequest, ElectionPolicy, ElectionType, LeaderRebalanceConfig,
    PartitionPlan,
};
use sluice_replication::metadata::{
    plan, AdminRequest, BrokerEpoch, BrokerHeartbeats, BrokerRegistration, ControllerError, Heartbeat,
    MetadataImage, MetadataRecord, TopicId,
};
use sluice_replication::partition::{
    plan_alter_partition, AlterPartitionError, AlterPartitionReplies, AlterPartitionRequest,
};
use sluice_replication::quorum::node::{node_id, ProposalId};
use sluice_replication::quorum::{DiskQuorumStorage, QuorumNode, QuorumOutput, StdDir};
use sluice_replication::NodeId;

use super::client::resolve;
use super::wire::{encode, read_frame, ControlRequest, ControlResponse, Frame, QuorumState, VoterState};
use super::{spawn, MetadataCell};
use crate::errors::ResponseError;

pub type DiskNode = QuorumNode<DiskQuorumStorage<StdDir>>;

/// raft-rs's tick: elections after 10–20 ticks, heartbeats every 2 (see `QuorumConfig::new`).
pub const TICK: Duration = Duration::from_millis(100);
/// How often an idle peer sender checks that its peer is still there.
const PEER_IDLE_CHECK: Duration = Duration::from_millis(100);
/// After a failed connection to a peer, before the next attempt.
const PEER_RETRY_PAUSE: Duration = Duration::from_millis(200);
/// Events queued for the controller thread at most; raft messages beyond it are dropped (Raft resends).
const EVENT_QUEUE_CAPACITY: usize = 4_096;
/// Events handled between two syncs at most.
const EVENT_BATCH_MAX: usize = 256;
/// Frames queued for one peer at most; more are dropped.
const PEER_QUEUE_CAPACITY: usize = 1_024;
/// Connections the controller listener serves at once (voters and brokers open one per call).
const CONNECTION_COUNT_MAX: usize = 512;
/// Metadata fetches held for a newer image at most.
const WAITING_FETCH_COUNT_MAX: usize = 1_024;
/// A proposal whose outcome has not come by then is given up (its caller retries), so that a lost outcome never
/// holds every later write back.
const PROPOSAL_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests waiting for the proposal in flight to commit, at most; more are refused as overload.
const DEFERRED_COUNT_MAX: usize = 4_096;

/// Where an answer goes: the connection the request came on.
#[derive(Clone, Debug)]
pub struct Responder {
    stream: Arc<Mutex<TcpStream>>,
    correlation: u64,
}

impl Responder {
    fn respond(&self, response: ControlResponse) {
        let bytes = encode(&Frame::Response { correlation: self.correlation, response });
        if let Ok(mut stream) = self.stream.lock() {
            // A caller that went away gets nothing; it retries.
            let _ = stream.write_all(&bytes);
        }
    }
}

#[derive(Debug)]
pub enum Event {
    Raft(Message),
    Request(Responder, ControlRequest),
    /// The controller's own probe found nothing listening on `broker`'s Kafka port (see `probe_unreachable`).
    Unreachable {
        broker: NodeId,
        epoch: BrokerEpoch,
    },
    /// A peer voter's quorum port refused a connection: its process is gone (see `spawn_peer`).
    PeerRefused(i32),
}

/// Probes of reported brokers running at once, at most (each a thread and one connection attempt).
const PROBE_COUNT_MAX: usize = 8;
/// How long a probe's connection attempt may take: refused is immediate; anything slower proves nothing.
const PROBE_TIMEOUT: Duration = Duration::from_millis(300);

/// What to answer when a proposal commits.
#[derive(Debug)]
enum Reply {
    Done,
    Registered,
    Heartbeat {
        epoch: BrokerEpoch,
        fenced: bool,
    },
    ProducerIds {
        first: i64,
        size: i32,
    },
    /// The controller's own proposal (a fence, the migration batch): nobody waits.
    Internal,
    /// ElectLeaders, AlterPartitionReassignments: the per-partition answers, sent once committed.
    Results(Vec<(String, i32, i16, String)>),
    /// An AlterPartition: remembered (`AlterPartitionReplies`) so that a resend gets the same answer.
    Altered {
        topic_id: TopicId,
        partition: i32,
        request: AlterPartitionRequest,
    },
}

#[derive(Debug)]
struct Pending {
    responder: Option<Responder>,
    reply: Reply,
    proposed_at: Instant,
}

struct WaitingFetch {
    responder: Responder,
    applied_index: u64,
    deadline: Instant,
}

pub struct Controller {
    node: DiskNode,
    session_timeout: Duration,
    started: Instant,
    heartbeats: Option<BrokerHeartbeats>,
    next_proposal: u64,
    /// Proposals awaiting their commit: at most one at a time (see `deferred`).
    pending: HashMap<u64, Pending>,
    waiting_fetches: Vec<WaitingFetch>,
    /// Requests that may write, held while a proposal is in flight: each is planned against the image the one
    /// before it produced (two plans against the same image would both bump a partition's epoch from the same
    /// value, and the second would be refused when applied).
    deferred: VecDeque<(Responder, ControlRequest)>,
    peers: BTreeMap<i32, SyncSender<Vec<u8>>>,
    /// The other voters' ids.
    peer_ids: Vec<i32>,
    cell: Arc<MetadataCell>,
    /// Topics of a single-node data directory (`topics.toml`) still to be written into the metadata log.
    bootstrap: Vec<MetadataRecord>,
    /// This node's broker registration, written with the migrated topics (their partitions name it).
    registration: BrokerRegistration,
    last_leader: Option<NodeId>,
    /// The answers given to AlterPartition (soft state of this reign, like `heartbeats`).
    alter_replies: AlterPartitionReplies,
    /// Brokers the controller's probe found dead, to fence as soon as no proposal is in flight.
    unreachable: VecDeque<(NodeId, BrokerEpoch)>,
    /// For the probes' threads, which report back as events.
    events: SyncSender<Event>,
    probes: Arc<AtomicUsize>,
    policy: ControllerPolicy,
    /// When the preferred-leader check last ran (`leader.imbalance.check.interval.seconds`).
    rebalanced_at: Instant,
}

/// The active controller's election settings (broker keys).
#[derive(Clone, Debug)]
pub struct ControllerPolicy {
    pub session_timeout: Duration,
    /// `unclean.leader.election.enable` as the broker default.
    pub election: ElectionPolicy,
    /// `auto.leader.rebalance.enable` and its two settings.
    pub rebalance: LeaderRebalanceConfig,
}

/// Leaderless partitions given a leader per tick at most (an election batch stays small).
const LEADERLESS_ELECTIONS_MAX: usize = 1_000;

/// Binds the controller listener and starts the controller's threads. An address that cannot be bound is a
/// start-up error.
pub fn start(
    node: DiskNode,
    listen: &str,
    peers: Vec<(i32, String)>,
    policy: ControllerPolicy,
    cell: Arc<MetadataCell>,
    bootstrap: Vec<MetadataRecord>,
    registration: BrokerRegistration,
) -> Result<(), String> {
    let socket = resolve(listen)?;
    let listener = TcpListener::bind(socket)
        .map_err(|error| format!("cannot listen for the metadata quorum on {listen}: {error}"))?;
    let (events, receiver) = sync_channel::<Event>(EVENT_QUEUE_CAPACITY);
    let peer_senders =
        peers.iter().map(|(id, address)| (*id, spawn_peer(*id, address.clone(), events.clone()))).collect();
    let voter_ids: Vec<i32> = peers.iter().map(|(id, _)| *id).collect();
    let accept_events = events.clone();
    let probe_events = events.clone();
    spawn("sluice-quorum-accept", move || accept(listener, accept_events))?;
    let mut controller = Controller {
        node,
        session_timeout: policy.session_timeout,
        started: Instant::now(),
        heartbeats: None,
        next_proposal: 1,
        pending: HashMap::new(),
        waiting_fetches: Vec::new(),
        deferred: VecDeque::new(),
        peers: peer_senders,
        peer_ids: voter_ids,
        cell,
        bootstrap,
        registration,
        alter_replies: AlterPartitionReplies::default(),
        unreachable: VecDeque::new(),
        events: probe_events,
        probes: Arc::new(AtomicUsize::new(0)),
        policy,
        rebalanced_at: Instant::now(),
        last_leader: None,
    };
    controller.publish();
    spawn("sluice-controller", move || controller.run(&receiver))?;
    Ok(())
}

fn accept(listener: TcpListener, events: SyncSender<Event>) {
    let open = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        if open.load(Ordering::Relaxed) >= CONNECTION_COUNT_MAX {
            log::warn!("controller listener: {CONNECTION_COUNT_MAX} connections open; refusing one");
            continue;
        }
        let events = events.clone();
        let open = open.clone();
        open.fetch_add(1, Ordering::Relaxed);
        let spawned = spawn("sluice-quorum-conn", move || {
            serve_connection(stream, &events);
            open.fetch_sub(1, Ordering::Relaxed);
        });
        if let Err(error) = spawned {
            log::warn!("{error}");
        }
    }
}

fn serve_connection(stream: TcpStream, events: &SyncSender<Event>) {
    let _ = stream.set_nodelay(true);
    // An answer that cannot be written within this is dropped (the caller retries): the controller thread writes
    // answers itself and must not wait on a stuck peer.
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    let Ok(writer) = stream.try_clone() else { return };
    let writer = Arc::new(Mutex::new(writer));
    let mut reader = std::io::BufReader::new(stream);
    loop {
        match read_frame(&mut reader) {
            Ok(Some(Frame::Raft(message))) => {
                // A full queue drops the message: raft-rs resends what matters.
                let _ = events.try_send(Event::Raft(message));
            }
            Ok(Some(Frame::Request { correlation, request })) => {
                let responder = Responder { stream: writer.clone(), correlation };
                match events.try_send(Event::Request(responder.clone(), request)) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) => responder.respond(ControlResponse::Error {
                        code: ResponseError::RequestTimedOut.code(),
                        message: "the controller is overloaded".into(),
                    }),
                    Err(TrySendError::Disconnected(_)) => return,
                }
            }
            Ok(Some(Frame::Response { .. })) => {}
            Ok(None) => return,
            Err(error) => {
                log::debug!("controller listener: dropping a connection: {error}");
                return;
            }
        }
    }
}

/// A sender thread for one peer voter: connects when needed, drops frames while the peer is unreachable, and tells
/// the controller thread when the peer's port refuses a connection (its process is gone).
fn spawn_peer(id: i32, address: String, events: SyncSender<Event>) -> SyncSender<Vec<u8>> {
    let (sender, receiver) = sync_channel::<Vec<u8>>(PEER_QUEUE_CAPACITY);
    let body = move || {
        let mut stream: Option<TcpStream> = None;
        let mut failed_at: Option<Instant> = None;
        loop {
            let frame = match receiver.recv_timeout(PEER_IDLE_CHECK) {
                Ok(frame) => Some(frame),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            // Idle (a follower may have nothing to send to a dead leader): notice a peer that closed the connection.
            if frame.is_none() && stream.as_ref().is_some_and(peer_closed) {
                log::debug!("quorum peer {id} at {address}: closed the connection");
                stream = None;
            }
            if stream.is_none() {
                if failed_at.is_some_and(|at| at.elapsed() < PEER_RETRY_PAUSE) {
                    continue;
                }
                let connected = resolve(&address)
                    .map_err(|error| std::io::Error::new(std::io::ErrorKind::NotFound, error))
                    .and_then(|socket| TcpStream::connect_timeout(&socket, Duration::from_millis(500)));
                match connected {
                    Ok(open) => {
                        let _ = open.set_nodelay(true);
                        let _ = open.set_write_timeout(Some(Duration::from_secs(2)));
                        stream = Some(open);
                        failed_at = None;
                    }
                    Err(error) => {
                        if error.kind() == std::io::ErrorKind::ConnectionRefused {
                            let _ = events.try_send(Event::PeerRefused(id));
                        }
                        failed_at = Some(Instant::now());
                        continue;
                    }
                }
            }
            let (Some(open), Some(frame)) = (stream.as_mut(), frame) else { continue };
            if open.write_all(&frame).is_err() {
                log::debug!("quorum peer {id} at {address}: connection lost");
                stream = None;
            }
        }
    };
    if let Err(error) = spawn("sluice-quorum-peer", body) {
        log::error!("{error}");
    }
    sender
}

/// Whether the peer closed `stream` (end of file or an error on a non-blocking peek; nothing to read is open).
fn peer_closed(stream: &TcpStream) -> bool {
    if stream.set_nonblocking(true).is_err() {
        return true;
    }
    let mut byte = [0u8; 1];
    let closed = match stream.peek(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(error) => error.kind() != std::io::ErrorKind::WouldBlock,
    };
    closed || stream.set_nonblocking(false).is_err()
}

fn controller_error_code(error: &ControllerError) -> ResponseError {
    match error {
        ControllerError::InvalidReplicationFactor { .. } => ResponseError::InvalidReplicationFactor,
        ControllerError::InvalidPartitions { .. } => ResponseError::InvalidPartitions,
        ControllerError::InvalidReplicaAssignment { .. } => ResponseError::InvalidReplicaAssignment,
        ControllerError::TopicAlreadyExists { .. } => ResponseError::TopicAlreadyExists,
        ControllerError::InvalidTopicName { .. } => ResponseError::InvalidTopicException,
        ControllerError::UnknownTopic { .. } => ResponseError::UnknownTopicOrPartition,
        ControllerError::InvalidConfig { .. } => ResponseError::InvalidConfig,
        ControllerError::UnknownBroker { .. } => ResponseError::BrokerIdNotRegistered,
        ControllerError::StaleBrokerEpoch { .. } => ResponseError::StaleBrokerEpoch,
        ControllerError::AlreadyRegistered { .. } => ResponseError::DuplicateBrokerRegistration,
    }
}

fn heartbeats_with(mut heartbeats: BrokerHeartbeats, policy: ElectionPolicy) -> BrokerHeartbeats {
    heartbeats.set_election_policy(policy);
    heartbeats
}

/// Kafka's codes for a refused AlterPartition.
fn alter_refusal(error: &AlterPartitionError) -> ControlResponse {
    let code = match error {
        AlterPartitionError::UnknownTopicOrPartition => ResponseError::UnknownTopicOrPartition,
        AlterPartitionError::StaleBrokerEpoch => ResponseError::StaleBrokerEpoch,
        AlterPartitionError::FencedLeaderEpoch => ResponseError::FencedLeaderEpoch,
        AlterPartitionError::InvalidUpdateVersion => ResponseError::InvalidUpdateVersion,
        AlterPartitionError::IneligibleReplica { .. } => ResponseError::IneligibleReplica,
        AlterPartitionError::InvalidRequest => ResponseError::InvalidRequest,
    };
    ControlResponse::Error { code: code.code(), message: error.to_string() }
}

fn refusal(error: &ControllerError) -> ControlResponse {
    ControlResponse::Error { code: controller_error_code(error).code(), message: error.to_string() }
}

impl Controller {
    fn run(&mut self, events: &Receiver<Event>) {
        let mut next_tick = Instant::now() + TICK;
        loop {
            let mut out = QuorumOutput::default();
            let wait = next_tick.saturating_duration_since(Instant::now());
            match events.recv_timeout(wait) {
                Ok(event) => {
                    self.handle(event, &mut out);
                    for _ in 1..EVENT_BATCH_MAX {
                        match events.try_recv() {
                            Ok(event) => self.handle(event, &mut out),
                            Err(_) => break,
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            if Instant::now() >= next_tick {
                next_tick = Instant::now() + TICK;
                if let Err(error) = self.node.tick(&mut out) {
                    log::error!("metadata quorum stopped: {error}");
                    return;
                }
                self.on_tick(&mut out);
            }
            if let Err(error) = self.node.sync(&mut out) {
                log::error!("metadata quorum stopped: {error}");
                return;
            }
            self.dispatch(out);
            if !self.run_deferred() {
                return;
            }
        }
    }

    /// Takes held requests one by one while nothing is in flight (a request may answer at once, or propose and
    /// hold the rest again). False if the node stopped.
    fn run_deferred(&mut self) -> bool {
        while self.pending.is_empty() {
            let Some((responder, request)) = self.deferred.pop_front() else { return true };
            let mut out = QuorumOutput::default();
            self.request(responder, request, &mut out);
            if let Err(error) = self.node.sync(&mut out) {
                log::error!("metadata quorum stopped: {error}");
                return false;
            }
            self.dispatch(out);
        }
        true
    }

    fn now(&self) -> Duration {
        self.started.elapsed()
    }

    fn handle(&mut self, event: Event, out: &mut QuorumOutput) {
        match event {
            Event::Raft(message) => {
                if let Err(error) = self.node.step(message, out) {
                    log::warn!("metadata quorum: a message was refused: {error}");
                }
            }
            Event::Request(responder, request) => self.request(responder, request, out),
            Event::PeerRefused(peer) => self.on_peer_refused(peer, out),
            Event::Unreachable { broker, epoch } => {
                if !self.unreachable.contains(&(broker, epoch)) {
                    self.unreachable.push_back((broker, epoch));
                }
                self.fence_unreachable(out);
            }
        }
    }

    /// The quorum leader's port refuses connections (its process died): rather than wait out the election timeout
    /// (1 s plus up to as much again) and the dead leader's lease, the surviving voter with the lowest id campaigns
    /// at once; the others wait for its vote request (two candidates at once could split the vote).
    fn on_peer_refused(&mut self, peer: i32, out: &mut QuorumOutput) {
        let me = self.node.node().0;
        if self.node.leader().map(|leader| leader.0) != Some(peer) || self.node.is_leader() {
            return;
        }
        let lowest_survivor = self.peer_ids.iter().filter(|id| **id != peer).all(|id| me < *id);
        if !lowest_survivor {
            return;
        }
        log::warn!(
            "metadata quorum: leader {peer} refuses connections; campaigning now (term {})",
            self.node.term()
        );
        if let Err(error) = self.node.campaign_now(out) {
            log::warn!("metadata quorum: campaign refused: {error}");
        }
    }

    /// Fences the first broker the probe found dead, if it is still unfenced in the same registration and no
    /// proposal is in flight (else on a later tick).
    fn fence_unreachable(&mut self, out: &mut QuorumOutput) {
        while self.node.is_leader() && self.pending.is_empty() {
            let Some((broker, epoch)) = self.unreachable.pop_front() else { return };
            let image = self.image();
            if image.broker(broker).is_none_or(|known| known.fenced || known.epoch != epoch) {
                continue;
            }
            log::warn!("broker {} does not listen any more (reported, then probed): fencing it", broker.0);
            let records = fence_records_with(&image, broker, self.policy.election);
            return self.propose(records, None, Reply::Internal, out);
        }
    }

    /// A broker reported `broker` unreachable: the controller checks for itself, on a thread of its own, that
    /// nothing listens on its Kafka address (connection refused — a process that died, not a slow one) before
    /// fencing it. Answered at once: the reporter only informs.
    fn probe_unreachable(&self, responder: Responder, broker: NodeId, broker_epoch: BrokerEpoch) {
        responder.respond(ControlResponse::Done { index: self.image().applied_index() });
        let image = self.image();
        let Some(known) = image.broker(broker).filter(|known| !known.fenced && known.epoch == broker_epoch)
        else {
            return;
        };
        let Some(listener) = known.registration.listeners.first() else { return };
        if self.probes.fetch_add(1, Ordering::SeqCst) >= PROBE_COUNT_MAX {
            self.probes.fetch_sub(1, Ordering::SeqCst);
            return;
        }
        let address = format!("{}:{}", listener.host, listener.port);
        let (events, probes) = (self.events.clone(), self.probes.clone());
        let spawned = spawn("sluice-probe", move || {
            let refused = resolve(&address).is_ok_and(|socket| {
                matches!(
                    TcpStream::connect_timeout(&socket, PROBE_TIMEOUT),
                    Err(error) if error.kind() == std::io::ErrorKind::ConnectionRefused
                )
            });
            if refused {
                let _ = events.try_send(Event::Unreachable { broker, epoch: broker_epoch });
            }
            probes.fetch_sub(1, Ordering::SeqCst);
        });
        if spawned.is_err() {
            self.probes.fetch_sub(1, Ordering::SeqCst);
        }
    }

    fn elect_leaders(
        &mut self,
        responder: Responder,
        election: i8,
        partitions: Option<Vec<(String, i32)>>,
        out: &mut QuorumOutput,
    ) {
        let image = self.image();
        let Some(election) = ElectionType::from_code(election) else {
            return responder.respond(ControlResponse::Error {
                code: ResponseError::InvalidRequest.code(),
                message: format!("election type {election} is not 0 (preferred) or 1 (unclean)"),
            });
        };
        let plan = plan_elect_leaders(&image, &ElectLeadersRequest { election, partitions });
        self.propose_plan(responder, plan, out);
    }

    /// Proposes a plan's records and answers its per-partition results once they commit (at once when it has no
    /// records).
    fn propose_plan(&mut self, responder: Responder, plan: PartitionPlan, out: &mut QuorumOutput) {
        let results = plan
            .results
            .into_iter()
            .map(|((topic, partition), result)| match result {
                Ok(()) => (topic, partition, 0, String::new()),
                Err(error) => (topic, partition, error.code(), error.to_string()),
            })
            .collect();
        if plan.records.is_empty() {
            let index = self.image().applied_index();
            return responder.respond(ControlResponse::PartitionResults { index, results });
        }
        self.propose(plan.records, Some(responder), Reply::Results(results), out);
    }

    /// KIP-497's AlterPartition on the active controller: a resend gets its first answer, a valid change is
    /// proposed and answered once committed, anything else is refused with Kafka's code.
    fn alter_partition(
        &mut self,
        responder: Responder,
        topic_id: TopicId,
        partition: i32,
        request: AlterPartitionRequest,
        out: &mut QuorumOutput,
    ) {
        let image = self.image();
        if let Some(answer) = self.alter_replies.replay(topic_id, partition, &request) {
            return responder.respond(match answer {
                Ok(_) => ControlResponse::Done { index: image.applied_index() },
                Err(error) => alter_refusal(&error),
            });
        }
        match plan_alter_partition(&image, topic_id, partition, &request) {
            Ok(records) => {
                let reply = Reply::Altered { topic_id, partition, request };
                self.propose(records, Some(responder), reply, out);
            }
            Err(error) => {
                self.alter_replies.record(topic_id, partition, &request, &Err(error.clone()));
                responder.respond(alter_refusal(&error));
            }
        }
    }

    fn image(&self) -> Arc<MetadataImage> {
        self.node.image().clone()
    }

    fn request(&mut self, responder: Responder, request: ControlRequest, out: &mut QuorumOutput) {
        match request {
            ControlRequest::FetchMetadata { applied_index, wait_ms } => {
                let image = self.image();
                if image.applied_index() > applied_index {
                    responder.respond(ControlResponse::Metadata { image: Some(image.encode()) });
                } else if self.waiting_fetches.len() >= WAITING_FETCH_COUNT_MAX || wait_ms == 0 {
                    responder.respond(ControlResponse::Metadata { image: None });
                } else {
                    let deadline = Instant::now() + Duration::from_millis(u64::from(wait_ms));
                    self.waiting_fetches.push(WaitingFetch { responder, applied_index, deadline });
                }
            }
            _ if !self.node.is_leader() => {
                responder.respond(ControlResponse::NotController {
                    leader: self.node.leader().map(|node| node.0),
                });
            }
            ControlRequest::DescribeQuorum => responder.respond(ControlResponse::Quorum(self.quorum_state())),
            ControlRequest::BrokerUnreachable { reporter: _, broker, broker_epoch } => {
                self.probe_unreachable(responder, broker, broker_epoch)
            }
            request if !self.pending.is_empty() => {
                if self.deferred.len() >= DEFERRED_COUNT_MAX {
                    return responder.respond(ControlResponse::Error {
                        code: ResponseError::RequestTimedOut.code(),
                        message: "the controller is overloaded".into(),
                    });
                }
                self.deferred.push_back((responder, request));
            }
            ControlRequest::Admin { request, validate_only } => {
                self.admin(responder, &request, validate_only, out)
            }
            ControlRequest::AlterPartition { topic_id, partition, request } => {
                self.alter_partition(responder, topic_id, partition, request, out)
            }
            ControlRequest::ElectLeaders { election, partitions } => {
                self.elect_leaders(responder, election, partitions, out)
            }
            ControlRequest::AlterReassignments { targets } => {
                let image = self.image();
                let plan = plan_alter_reassignments(&image, self.policy.election, &targets);
                self.propose_plan(responder, plan, out);
            }
            ControlRequest::Heartbeat { registration, broker_epoch: _, metadata_offset, want_fence } => {
                self.heartbeat(responder, registration, metadata_offset, want_fence, out)
            }
        }
    }

    /// A broker's heartbeat: registers an unknown incarnation, records the heartbeat, and proposes the fence or
    /// unfence it causes.
    fn heartbeat(
        &mut self,
        responder: Responder,
        registration: BrokerRegistration,
        metadata_offset: u64,
        want_fence: bool,
        out: &mut QuorumOutput,
    ) {
        let image = self.image();
        let broker = registration.broker;
        let known =
            image.broker(broker).filter(|known| known.registration.incarnation == registration.incarnation);
        let Some(known) = known else {
            return match plan(&image, &AdminRequest::RegisterBroker(registration)) {
                Ok(records) => self.propose(records, Some(responder), Reply::Registered, out),
                Err(error) => responder.respond(refusal(&error)),
            };
        };
        let heartbeat = Heartbeat { broker, broker_epoch: known.epoch, metadata_offset, want_fence };
        let now = self.now();
        let session_timeout = self.session_timeout;
        let policy = self.policy.election;
        let heartbeats = self
            .heartbeats
            .get_or_insert_with(|| heartbeats_with(BrokerHeartbeats::new(session_timeout, now), policy));
        match heartbeats.heartbeat(&image, now, &heartbeat) {
            Ok(records) if records.is_empty() => responder
                .respond(ControlResponse::Heartbeat { broker_epoch: known.epoch.0, fenced: known.fenced }),
            Ok(records) => {
                let reply = Reply::Heartbeat { epoch: known.epoch, fenced: want_fence };
                self.propose(records, Some(responder), reply, out);
            }
            Err(error) => responder.respond(refusal(&error)),
        }
    }

    fn admin(
        &mut self,
        responder: Responder,
        request: &AdminRequest,
        validate_only: bool,
        out: &mut QuorumOutput,
    ) {
        let image = self.image();
        match plan(&image, request) {
            Err(error) => responder.respond(refusal(&error)),
            Ok(_) if validate_only => responder.respond(ControlResponse::Done { index: 0 }),
            Ok(records) if records.is_empty() => {
                responder.respond(ControlResponse::Done { index: image.applied_index() });
            }
            Ok(records) => {
                let reply = records
                    .iter()
                    .find_map(|record| match record {
                        MetadataRecord::ProducerIds(block) => {
                            Some(Reply::ProducerIds { first: block.first_producer_id, size: block.size })
                        }
                        _ => None,
                    })
                    .unwrap_or(Reply::Done);
                self.propose(records, Some(responder), reply, out);
            }
        }
    }

    fn propose(
        &mut self,
        records: Vec<MetadataRecord>,
        responder: Option<Responder>,
        reply: Reply,
        out: &mut QuorumOutput,
    ) {
        let id = self.next_proposal;
        self.next_proposal += 1;
        match self.node.propose(ProposalId(id), &records, out) {
            Ok(()) => {
                assert!(self.pending.is_empty(), "one proposal in flight at a time");
                self.pending.insert(id, Pending { responder, reply, proposed_at: Instant::now() });
            }
            Err(error) => {
                if let Some(responder) = responder {
                    responder.respond(ControlResponse::Error {
                        code: ResponseError::NotController.code(),
                        message: format!("the metadata quorum refused the proposal: {error}"),
                    });
                }
            }
        }
    }

    fn quorum_state(&self) -> QuorumState {
        QuorumState {
            leader: self.node.leader().map_or(-1, |leader| leader.0),
            term: self.node.term(),
            commit_index: self.node.commit_index(),
            voters: self
                .node
                .voter_progress()
                .into_iter()
                .map(|(voter, matched)| VoterState { id: voter.0, matched })
                .collect(),
        }
    }

    /// Leader duties on each tick: fence expired brokers, write the migration batch; and the long polls' ends.
    fn on_tick(&mut self, out: &mut QuorumOutput) {
        let now_instant = Instant::now();
        let (expired, waiting): (Vec<_>, Vec<_>) =
            self.waiting_fetches.drain(..).partition(|fetch| fetch.deadline <= now_instant);
        self.waiting_fetches = waiting;
        for fetch in expired {
            fetch.responder.respond(ControlResponse::Metadata { image: None });
        }
        let stale: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, pending)| pending.proposed_at.elapsed() > PROPOSAL_TIMEOUT)
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            if let Some(pending) = self.pending.remove(&id) {
                log::warn!("metadata proposal {id} has no outcome after {PROPOSAL_TIMEOUT:?}: given up");
                self.finish(pending, Err(format!("no outcome within {PROPOSAL_TIMEOUT:?}")));
            }
        }
        if !self.node.is_leader() || !self.pending.is_empty() {
            return;
        }
        self.fence_unreachable(out);
        if !self.pending.is_empty() {
            return;
        }
        let image = self.image();
        let now = self.now();
        let session_timeout = self.session_timeout;
        let policy = self.policy.election;
        let heartbeats = self
            .heartbeats
            .get_or_insert_with(|| heartbeats_with(BrokerHeartbeats::new(session_timeout, now), policy));
        let fences = heartbeats.expire(&image, now);
        if !fences.is_empty() {
            if let Some(MetadataRecord::FenceBroker { broker, .. }) = fences.first() {
                log::warn!(
                    "broker {} missed its session ({} ms): fencing it",
                    broker.0,
                    session_timeout.as_millis()
                );
            }
            return self.propose(fences, None, Reply::Internal, out);
        }
        if !self.bootstrap.is_empty() {
            let mut records = super::migration::missing(&image, &self.bootstrap);
            if records.is_empty() {
                self.bootstrap.clear();
            } else {
                // The partitions name this node, which must be registered first (the heartbeat thread will find
                // this incarnation registered and carry on from it).
                if image.broker(self.node.node()).is_none() {
                    records.insert(0, MetadataRecord::RegisterBroker(self.registration.clone()));
                }
                log::info!(
                    "writing the topics of topics.toml into the metadata log ({} records)",
                    records.len()
                );
                return self.propose(records, None, Reply::Internal, out);
            }
        }
        self.maintain_partitions(out);
    }

    /// The active controller's partition upkeep, one batch per tick when nothing is in flight: finish
    /// reassignments whose new replicas joined the ISR, give leaderless partitions a leader, and (every
    /// `leader.imbalance.check.interval.seconds`) move leadership back to preferred replicas.
    fn maintain_partitions(&mut self, out: &mut QuorumOutput) {
        let image = self.image();
        let completed = complete_reassignments(&image);
        if !completed.is_empty() {
            log::info!("completing {} partition reassignments", completed.len());
            return self.propose(completed, None, Reply::Internal, out);
        }
        let elected = elect_leaderless(&image, self.policy.election, LEADERLESS_ELECTIONS_MAX);
        if !elected.is_empty() {
            log::info!("electing leaders for {} leaderless partitions", elected.len());
            return self.propose(elected, None, Reply::Internal, out);
        }
        if self.rebalanced_at.elapsed() >= self.policy.rebalance.check_interval {
            self.rebalanced_at = Instant::now();
            let moved = rebalance_leaders(&image, &self.policy.rebalance);
            if !moved.is_empty() {
                log::info!(
                    "moving leadership of {} partitions back to their preferred replicas",
                    moved.len()
                );
                self.propose(moved, None, Reply::Internal, out);
            }
        }
    }

    fn dispatch(&mut self, out: QuorumOutput) {
        for message in out.messages {
            let to = node_id(message.to).0;
            if let Some(peer) = self.peers.get(&to) {
                // Full: the peer is slow or down; raft-rs resends.
                let _ = peer.try_send(encode(&Frame::Raft(message)));
            }
        }
        for (proposal, outcome) in out.proposals {
            let Some(pending) = self.pending.remove(&proposal.0) else { continue };
            self.finish(pending, outcome.map_err(|error| error.to_string()));
        }
        let leader = self.node.leader();
        if leader != self.last_leader {
            self.on_leader_change(leader);
        }
        if !out.applied.is_empty() || leader != self.last_leader {
            self.last_leader = leader;
            self.publish();
        }
    }

    fn finish(&mut self, pending: Pending, outcome: Result<u64, String>) {
        if let (Ok(_), Reply::Altered { topic_id, partition, request }) = (&outcome, &pending.reply) {
            let image = self.image();
            let committed = image.topic(*topic_id).and_then(|topic| {
                usize::try_from(*partition).ok().and_then(|index| topic.partitions.get(index))
            });
            if let Some(committed) = committed {
                self.alter_replies.record(*topic_id, *partition, request, &Ok(committed.clone()));
            }
        }
        let Some(responder) = pending.responder else { return };
        let response = match (outcome, pending.reply) {
            (Err(error), _) => ControlResponse::Error {
                code: ResponseError::NotController.code(),
                message: format!("not committed: {error}"),
            },
            (Ok(index), Reply::Done | Reply::Internal | Reply::Altered { .. }) => {
                ControlResponse::Done { index }
            }
            (Ok(index), Reply::Registered) => {
                ControlResponse::Heartbeat { broker_epoch: index, fenced: true }
            }
            (Ok(_), Reply::Heartbeat { epoch, fenced }) => {
                ControlResponse::Heartbeat { broker_epoch: epoch.0, fenced }
            }
            (Ok(_), Reply::ProducerIds { first, size }) => ControlResponse::ProducerIds { first, size },
            (Ok(index), Reply::Results(results)) => ControlResponse::PartitionResults { index, results },
        };
        responder.respond(response);
    }

    /// Leadership moved: soft state of the old reign goes; waiting callers retry with the new controller.
    fn on_leader_change(&mut self, leader: Option<NodeId>) {
        log::info!(
            "metadata quorum: leader {} (term {}){}",
            leader.map_or("none".to_string(), |leader| leader.0.to_string()),
            self.node.term(),
            if self.node.is_leader() { ": this node is the active controller" } else { "" }
        );
        self.heartbeats = if self.node.is_leader() {
            Some(heartbeats_with(
                BrokerHeartbeats::new(self.session_timeout, self.now()),
                self.policy.election,
            ))
        } else {
            None
        };
        if !self.node.is_leader() {
            for (_, pending) in self.pending.drain() {
                if let Some(responder) = pending.responder {
                    responder
                        .respond(ControlResponse::NotController { leader: leader.map(|leader| leader.0) });
                }
            }
            for (responder, _) in self.deferred.drain(..) {
                responder.respond(ControlResponse::NotController { leader: leader.map(|leader| leader.0) });
            }
        }
    }

    fn publish(&mut self) {
        let image = self.image();
        let applied = image.applied_index();
        let (ready, waiting): (Vec<_>, Vec<_>) =
            self.waiting_fetches.drain(..).partition(|fetch| applied > fetch.applied_index);
        self.waiting_fetches = waiting;
        if !ready.is_empty() {
            let encoded = image.encode();
            for fetch in ready {
                fetch.responder.respond(ControlResponse::Metadata { image: Some(encoded.clone()) });
            }
        }
        self.cell.publish(image, self.node.leader().map(|leader| leader.0));
    }
}
