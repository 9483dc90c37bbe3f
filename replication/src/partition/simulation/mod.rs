//! Deterministic simulation of the ISR data path (issue 16): 3–5 brokers running `PartitionReplica` over
//! `SimLog`s, a controller (`controller.rs`), and a client with one idempotent acks=all producer per partition, all
//! on one thread over `SimNetwork` — seeded loss, duplication, delay (so reordering), partitions, a leader cut from
//! the controller but not from clients or followers (a zombie), crashes that lose each log's unsynced suffix, and
//! restarts as new incarnations. A safety phase with faults, then a heal-and-converge liveness phase: every
//! broker back, every ISR full, every replica's log equal to its leader's with HW = LEO, and the producers'
//! writes made after healing acknowledged. `ReplicationChecker` checks issue 16's invariants after every step.
//!
//! `SLUICE_SEED` replays one seed; `SLUICE_SIM_SEEDS` sets how many seeds the long test runs.

mod broker;
mod checker;
mod client;
mod controller;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use broker::SimBroker;
use checker::ReplicationChecker;
use client::SimClient;
use controller::{LeaderMoves, SimController};

use crate::metadata::{
    plan, AdminRequest, BrokerRegistration, Listener, MetadataImage, MetadataRecord, PartitionImage, TopicId,
};
use crate::partition::{
    AlterPartitionError, AlterPartitionRequest, BrokenRule, FetchAnswer, FetchRequest, ReplicationConfig,
    Role,
};
use crate::replica::Visibility;
use crate::seams::ReplicaLog;
use crate::sim::{Faults, NetworkConfig, Node, Outbox, Prng, SimBatch, SimConfig, Simulation, Violation};
use crate::types::{LeaderEpoch, NodeId};
use sluice_storage::Offset;

/// The protocol of the simulated cluster.
#[derive(Clone, Debug)]
pub enum Message {
    /// Broker → controller, every tick: alive, this incarnation (and how many restarts it follows, so that a
    /// late heartbeat of an earlier process never registers it again), metadata applied up to here.
    Heartbeat {
        incarnation: u128,
        generation: u64,
        metadata_offset: u64,
    },
    /// Controller → brokers on every change and every heartbeat; broker → client on request.
    Metadata(Arc<MetadataImage>),
    MetadataRequest,
    AlterPartition {
        partition: i32,
        request: AlterPartitionRequest,
    },
    AlterPartitionAnswer {
        partition: i32,
        request: AlterPartitionRequest,
        result: Result<PartitionImage, AlterPartitionError>,
    },
    Fetch {
        partition: i32,
        request: FetchRequest,
    },
    FetchAnswer {
        partition: i32,
        request: FetchRequest,
        answer: FetchAnswer,
        batches: Vec<SimBatch>,
    },
    Produce {
        partition: i32,
        sequence: u32,
        record_count: u32,
    },
    ProduceAnswer {
        partition: i32,
        sequence: u32,
        result: Result<(Offset, LeaderEpoch), ProduceFailure>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProduceFailure {
    NotLeaderOrFollower,
    NotEnoughReplicas,
    OutOfOrderSequence,
    /// Dropped from a full wait queue (REQUEST_TIMED_OUT).
    Timeout,
}

/// A batch's payload names its producer (the partition's number) and sequence, so logs can be read back as
/// acknowledged writes.
mod payload {
    pub fn encode(producer: u32, sequence: u32) -> u64 {
        (u64::from(producer) << 32) | u64::from(sequence)
    }

    pub fn producer(payload: u64) -> u32 {
        (payload >> 32) as u32
    }

    pub fn sequence(payload: u64) -> u32 {
        payload as u32
    }
}

pub enum SimNode {
    Broker(Box<SimBroker>),
    Controller(Box<SimController>),
    Client(Box<SimClient>),
}

impl Node for SimNode {
    type Message = Message;

    fn on_message(&mut self, now: Duration, from: NodeId, message: Message, out: &mut Outbox<Message>) {
        match self {
            SimNode::Broker(broker) => broker.on_message(now, from, message, out),
            SimNode::Controller(controller) => match message {
                Message::Heartbeat { incarnation, generation, metadata_offset } => {
                    controller.on_heartbeat(now, from, (incarnation, generation), metadata_offset, out)
                }
                Message::AlterPartition { partition, request } => {
                    controller.on_alter_partition(from, partition, &request, out)
                }
                _ => {}
            },
            SimNode::Client(client) => client.on_message(message),
        }
    }

    fn on_tick(&mut self, now: Duration, out: &mut Outbox<Message>) {
        match self {
            SimNode::Broker(broker) => broker.on_tick(now, out),
            SimNode::Controller(controller) => controller.on_tick(now, out),
            SimNode::Client(client) => client.on_tick(now, out),
        }
    }
}

impl crate::sim::Checker<SimNode> for ReplicationChecker {
    fn check(&mut self, _now: Duration, nodes: &[SimNode]) -> Result<(), String> {
        self.check_nodes(nodes)
    }
}

/// The shape and fault rates of one simulated run.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub broker_count: usize,
    pub partition_count: usize,
    pub safety_step_count: u64,
    pub liveness_step_max: u64,
    pub crash_probability: f64,
    pub restart_probability: f64,
    pub partition_probability: f64,
    /// Cutting a partition leader off from the controller alone (clients and followers still reach it).
    pub zombie_probability: f64,
    pub heal_probability: f64,
    /// Per controller tick in the safety phase: a preferred-leader rebalance (`rebalance_leaders`).
    pub rebalance_probability: f64,
    /// Per controller tick in the safety phase: a reassignment of a random partition to three random brokers, or
    /// (three times in ten, when one runs) its cancellation.
    pub reassignment_probability: f64,
    pub faults: Faults,
    pub broken_rule: Option<BrokenRule>,
}

impl Scenario {
    pub fn new(broker_count: usize, partition_count: usize) -> Scenario {
        Scenario {
            broker_count,
            partition_count,
            safety_step_count: 20_000,
            liveness_step_max: 30_000,
            crash_probability: 0.001,
            restart_probability: 0.004,
            partition_probability: 0.0005,
            zombie_probability: 0.0005,
            heal_probability: 0.001,
            rebalance_probability: 0.0,
            reassignment_probability: 0.0,
            faults: Faults {
                loss_probability: 0.05,
                duplication_probability: 0.05,
                delay_min: Duration::from_millis(1),
                delay_max: Duration::from_millis(25),
            },
            broken_rule: None,
        }
    }

    /// Three times the crashes and partitions, 15% loss, delays up to 80 ms (a third of the session timeout).
    pub fn harsh(broker_count: usize, partition_count: usize) -> Scenario {
        Scenario {
            crash_probability: 0.003,
            restart_probability: 0.01,
            partition_probability: 0.0015,
            zombie_probability: 0.0015,
            heal_probability: 0.002,
            faults: Faults {
                loss_probability: 0.15,
                duplication_probability: 0.1,
                delay_min: Duration::from_millis(1),
                delay_max: Duration::from_millis(80),
            },
            ..Scenario::new(broker_count, partition_count)
        }
    }
}

/// What a run that kept every invariant did.
#[derive(Clone, Debug, Default)]
pub struct RunReport {
    pub committed_batch_count: u64,
    pub acknowledged_count: u64,
    pub leader_epoch_count: u64,
    pub crash_count: u64,
    pub zombie_count: u64,
    pub liveness_step_count: u64,
    pub refused_batch_count: u64,
    pub isr_shrink_count: u64,
    pub isr_expand_count: u64,
    pub diverging_answer_count: u64,
    pub truncated_batch_count: u64,
    pub lost_unsynced_batch_count: u64,
    pub not_enough_replicas_count: u64,
    pub preferred_election_count: u64,
    pub reassignment_count: u64,
    pub reassignment_cancel_count: u64,
    pub reassignment_completion_count: u64,
}

/// A tick of 10 ms; sessions of 250 ms, lag 150 ms: elections and ISR shrinks both happen within a run.
const TICK_INTERVAL: Duration = Duration::from_millis(10);
const SESSION_TIMEOUT: Duration = Duration::from_millis(250);
const TOPIC_ID: TopicId = TopicId(0x5eed);
/// Set to print the cluster's state after every step of the safety phase that changed it.
const TRACE_ENV: &str = "SLUICE_SIM_TRACE";

fn replication_config(broken_rule: Option<BrokenRule>) -> ReplicationConfig {
    ReplicationConfig {
        replica_lag_time_max: Duration::from_millis(150),
        min_insync_replicas: 2,
        request_timeout: Duration::from_millis(60),
        visibility: Visibility::Durable,
        broken_rule,
    }
}

/// Brokers registered (incarnation = id + 1) and unfenced, and the topic with replication factor 3.
fn initial_image(scenario: &Scenario) -> MetadataImage {
    let brokers = 0..scenario.broker_count as i32;
    let registrations: Vec<MetadataRecord> = brokers
        .clone()
        .map(|broker| {
            MetadataRecord::RegisterBroker(BrokerRegistration {
                broker: NodeId(broker),
                incarnation: broker as u128 + 1,
                listeners: vec![Listener { name: "PLAINTEXT".into(), host: "127.0.0.1".into(), port: 9092 }],
                rack: None,
            })
        })
        .collect();
    let mut image = MetadataImage::empty().apply_batch(1, &registrations).unwrap();
    let unfences: Vec<MetadataRecord> = brokers
        .map(|broker| MetadataRecord::UnfenceBroker {
            broker: NodeId(broker),
            epoch: image.brokers()[&NodeId(broker)].epoch,
        })
        .collect();
    image = image.apply_batch(2, &unfences).unwrap();
    let request = AdminRequest::CreateTopic {
        name: "events".into(),
        id: TOPIC_ID,
        partition_count: scenario.partition_count as i32,
        replication_factor: 3,
        configs: BTreeMap::new(),
        assignment: None,
    };
    image.apply_batch(3, &plan(&image, &request).unwrap()).unwrap()
}

struct Harness {
    sim: Simulation<SimNode>,
    checker: ReplicationChecker,
    prng: Prng,
    scenario: Scenario,
    report: RunReport,
}

impl Harness {
    fn new(seed: u64, scenario: &Scenario) -> Harness {
        let broker_count = scenario.broker_count;
        let controller = NodeId(broker_count as i32);
        let mut prng = Prng::new(seed ^ 0x4953_5253_494d);
        let topic = (TOPIC_ID, scenario.partition_count);
        let config = replication_config(scenario.broken_rule);
        let mut nodes: Vec<SimNode> = (0..broker_count as i32)
            .map(|id| {
                let broker = SimBroker::new(
                    NodeId(id),
                    controller,
                    id as u128 + 1,
                    topic,
                    config.clone(),
                    prng.fork(),
                );
                SimNode::Broker(Box::new(broker))
            })
            .collect();
        let image = initial_image(scenario);
        let mut controller = SimController::new(image, TOPIC_ID, SESSION_TIMEOUT, scenario.broken_rule);
        // Drawn only when enabled, so the scenarios without leader moves replay exactly as before.
        if scenario.rebalance_probability > 0.0 || scenario.reassignment_probability > 0.0 {
            controller.leader_moves = Some(LeaderMoves {
                prng: prng.fork(),
                rebalance_probability: scenario.rebalance_probability,
                reassignment_probability: scenario.reassignment_probability,
            });
        }
        nodes.push(SimNode::Controller(Box::new(controller)));
        let client = SimClient::new(topic, broker_count, config.request_timeout * 3, prng.fork());
        nodes.push(SimNode::Client(Box::new(client)));
        let sim_config = SimConfig {
            network: NetworkConfig {
                node_count: nodes.len(),
                queue_length_max: 10_000,
                faults: scenario.faults.clone(),
            },
            tick_interval: TICK_INTERVAL,
            outbox_length_max: 256,
        };
        Harness {
            sim: Simulation::new(sim_config, seed, nodes).unwrap(),
            checker: ReplicationChecker::new(scenario.partition_count),
            prng,
            scenario: scenario.clone(),
            report: RunReport::default(),
        }
    }

    fn broker_mut(&mut self, index: usize) -> &mut SimBroker {
        match &mut self.sim.nodes_mut()[index] {
            SimNode::Broker(broker) => broker,
            _ => unreachable!("nodes below broker_count are brokers"),
        }
    }

    fn broker(&self, index: usize) -> &SimBroker {
        match &self.sim.nodes()[index] {
            SimNode::Broker(broker) => broker,
            _ => unreachable!("nodes below broker_count are brokers"),
        }
    }

    fn controller(&self) -> &SimController {
        match &self.sim.nodes()[self.scenario.broker_count] {
            SimNode::Controller(controller) => controller,
            _ => unreachable!("the controller follows the brokers"),
        }
    }

    fn controller_mut(&mut self) -> &mut SimController {
        match &mut self.sim.nodes_mut()[self.scenario.broker_count] {
            SimNode::Controller(controller) => controller,
            _ => unreachable!("the controller follows the brokers"),
        }
    }

    fn client_mut(&mut self) -> &mut SimClient {
        match self.sim.nodes_mut().last_mut() {
            Some(SimNode::Client(client)) => client,
            _ => unreachable!("the client is the last node"),
        }
    }

    fn client(&self) -> &SimClient {
        match self.sim.nodes().last() {
            Some(SimNode::Client(client)) => client,
            _ => unreachable!("the client is the last node"),
        }
    }

    fn safety_phase(&mut self) -> Result<(), Violation> {
        let trace = std::env::var_os(TRACE_ENV).is_some();
        let mut last = String::new();
        for _ in 0..self.scenario.safety_step_count {
            self.inject_faults();
            let event = self.sim.step(&mut self.checker);
            if trace {
                last = self.trace(last, &event);
            }
            event?;
        }
        Ok(())
    }

    /// With `SLUICE_SIM_TRACE` set: the state after every step that changed it, for replaying a seed by eye.
    fn trace(&self, last: String, event: &Result<crate::sim::Event, Violation>) -> String {
        let line = self.describe();
        if line != last {
            eprintln!("{:?} {event:?}: {line}", self.sim.now());
        }
        line
    }

    fn inject_faults(&mut self) {
        let broker_count = self.scenario.broker_count;
        let chosen = self.prng.below(broker_count as u64) as usize;
        if self.prng.chance(self.scenario.crash_probability) && self.broker(chosen).running {
            self.broker_mut(chosen).crash();
            self.report.crash_count += 1;
        }
        if self.prng.chance(self.scenario.restart_probability) {
            self.broker_mut(chosen).restart();
        }
        if self.prng.chance(self.scenario.partition_probability) {
            let node_count = self.sim.nodes().len() as i32;
            let group: Vec<NodeId> = (0..node_count).filter(|_| self.prng.chance(0.5)).map(NodeId).collect();
            self.sim.network_mut().partition(&group);
        }
        if self.prng.chance(self.scenario.zombie_probability) {
            self.cut_leader_from_controller();
        }
        if self.prng.chance(self.scenario.heal_probability) {
            self.sim.network_mut().heal();
        }
    }

    /// The leader of a random partition loses the controller, and only the controller.
    fn cut_leader_from_controller(&mut self) {
        let partition = self.prng.below(self.scenario.partition_count as u64) as usize;
        let controller = NodeId(self.scenario.broker_count as i32);
        let leader = self.controller().image.topics().next().map(|topic| topic.partitions[partition].leader);
        if let Some(leader) = leader.filter(|leader| *leader != NodeId::NONE) {
            self.sim.network_mut().cut_link(leader, controller);
            self.report.zombie_count += 1;
        }
    }

    fn liveness_phase(&mut self) -> Result<(), Violation> {
        // Running reassignments stay: they must complete for the ISRs to be full.
        self.controller_mut().leader_moves = None;
        self.sim.network_mut().heal();
        self.sim.network_mut().set_faults(Faults::none()).unwrap();
        for index in 0..self.scenario.broker_count {
            self.broker_mut(index).restart();
        }
        let partition_count = self.scenario.partition_count;
        let acknowledged_max =
            (0..partition_count).map(|partition| self.client().acknowledged(partition)).max();
        self.client_mut().sequence_limit = acknowledged_max.unwrap_or(0) + 5;
        for step in 0..self.scenario.liveness_step_max {
            if self.converged() {
                self.report.liveness_step_count = step;
                self.report.committed_batch_count = self.checker.committed_batch_count() as u64;
                self.report.acknowledged_count = self.client().acks.len() as u64;
                self.report.leader_epoch_count = self.checker.leader_epoch_count() as u64;
                self.finish_report();
                return Ok(());
            }
            self.sim.step(&mut self.checker)?;
        }
        Err(Violation {
            seed: self.sim.seed(),
            step_count: self.sim.step_count(),
            now: self.sim.now(),
            message: format!(
                "no convergence within {} steps of healing: {}",
                self.scenario.liveness_step_max,
                self.describe()
            ),
        })
    }

    fn finish_report(&mut self) {
        let controller = self.controller();
        let (refused, shrinks, expands) =
            (controller.refused_count, controller.shrink_count, controller.expand_count);
        let moves = controller.move_counts;
        let mut report = RunReport {
            refused_batch_count: refused,
            isr_shrink_count: shrinks,
            isr_expand_count: expands,
            preferred_election_count: moves.preferred_election_count,
            reassignment_count: moves.reassignment_count,
            reassignment_cancel_count: moves.cancellation_count,
            reassignment_completion_count: moves.completion_count,
            ..self.report.clone()
        };
        for index in 0..self.scenario.broker_count {
            let stats = &self.broker(index).stats;
            report.diverging_answer_count += stats.diverging_answer_count;
            report.truncated_batch_count += stats.truncated_batch_count;
            report.lost_unsynced_batch_count += stats.lost_unsynced_batch_count;
            report.not_enough_replicas_count += stats.not_enough_replicas_count;
        }
        self.report = report;
    }

    /// Every broker runs; every partition has a leader leading its epoch with a full ISR and no reassignment
    /// running; every replica's log is the leader's with HW = LEO; the producers' last writes are acknowledged.
    fn converged(&self) -> bool {
        if !self.client().done() {
            return false;
        }
        let Some(topic) = self.controller().image.topics().next() else { return false };
        topic.partitions.iter().enumerate().all(|(index, partition)| {
            let full = partition.isr.len() == partition.replicas.len() && !partition.is_reassigning();
            let Some(leader) = partition.leader.index(self.scenario.broker_count) else { return false };
            let leader_log = self.broker(leader).partitions[index].log.batches();
            full && partition.replicas.iter().all(|replica| {
                let broker = self.broker(replica.0 as usize);
                let sim_partition = &broker.partitions[index];
                let log_end = sim_partition.log.log_end_offset();
                broker.running
                    && sim_partition.log.batches() == leader_log
                    && sim_partition.replica.as_ref().is_some_and(|state| {
                        state.high_watermark() == log_end
                            && state.leader_epoch() == partition.leader_epoch
                            && (replica.0 != partition.leader.0 || matches!(state.role(), Role::Leader(_)))
                    })
            })
        })
    }

    fn describe(&self) -> String {
        let image = &self.controller().image;
        let partitions: Vec<String> = image
            .topics()
            .flat_map(|topic| topic.partitions.iter())
            .map(|partition| {
                format!(
                    "leader {} epoch {} replicas {:?} adding {:?} removing {:?} isr {:?} partition epoch {}",
                    partition.leader,
                    partition.leader_epoch,
                    partition.replicas,
                    partition.adding_replicas,
                    partition.removing_replicas,
                    partition.isr,
                    partition.partition_epoch
                )
            })
            .collect();
        let brokers: Vec<String> = (0..self.scenario.broker_count)
            .map(|index| {
                let broker = self.broker(index);
                let logs: Vec<String> = broker
                    .partitions
                    .iter()
                    .map(|partition| {
                        let role = partition.replica.as_ref().map(|replica| {
                            let role = match replica.role() {
                                Role::Leader(leader) => format!(
                                    "leader isr {:?} partition epoch {} pending {:?}",
                                    leader.isr(),
                                    leader.partition_epoch(),
                                    leader.pending_alter_partition()
                                ),
                                Role::Follower(follower) => format!("follows {}", follower.leader()),
                                Role::Offline => "offline".to_string(),
                            };
                            format!("epoch {} hw {} {role}", replica.leader_epoch(), replica.high_watermark())
                        });
                        format!(
                            "end {} durable {} epochs {:?} {role:?}",
                            partition.log.log_end_offset(),
                            partition.log.durable_end_offset(),
                            partition.epochs.entries(),
                        )
                    })
                    .collect();
                format!("{} running {} epoch {:?} {logs:?}", broker.id, broker.running, broker.broker_epoch)
            })
            .collect();
        format!("partitions {partitions:?}; brokers {brokers:?}; client done {}", self.client().done())
    }
}

/// Runs one seed through both phases; a panic inside a node (an assertion of the core) is a violation too.
pub fn run(seed: u64, scenario: &Scenario) -> Result<RunReport, Violation> {
    crate::sim::catching_panics(seed, || {
        let mut harness = Harness::new(seed, scenario);
        harness.safety_phase()?;
        harness.liveness_phase()?;
        Ok(harness.report)
    })
}

#[cfg(test)]
mod tests;
