//! Deterministic simulation: several nodes' real state machines, one thread, one seed.
//!
//! `Simulation` owns a `SimClock`, a `SimNetwork` and the nodes. Each `step` runs exactly one node callback — the
//! delivery of the earliest message due, or else the earliest node tick — then drains that node's outbox into the
//! network and runs the test's invariant checker over every node. Nothing depends on the wall clock, thread
//! scheduling or hash order, so a seed replays a run exactly, step for step (TigerBeetle's VOPR, FoundationDB's
//! simulator).
//!
//! The seed comes from `SLUICE_SEED` when set (decimal or `0x` hex), else from the process's random hash keys; a
//! violation, and any panic while a simulation is alive, prints `SLUICE_SEED=…` so that a failing run replays.

pub mod clock;
pub mod log;
pub mod network;
pub mod prng;
#[cfg(test)]
mod tests;

use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

pub use crate::seams::{Node, Outbox};
pub use clock::SimClock;
pub use log::{SimBatch, SimLog, SimLogError};
pub use network::{Delivery, Faults, NetworkConfig, NetworkConfigError, NetworkStats, SimNetwork};
pub use prng::Prng;

use crate::seams::SendError;
use crate::types::NodeId;
use sluice_storage::Invariant;

/// The environment variable that fixes the seed of every simulation in a test run.
pub const SEED_ENV: &str = "SLUICE_SEED";

/// The seed for one simulation: `SLUICE_SEED` if set, else a fresh random one (which a failure prints).
pub fn seed() -> u64 {
    seeds(1)[0]
}

/// Seeds for a sweep of `count` simulations. With `SLUICE_SEED` set, only that seed, so a failing member of a sweep
/// replays alone. Otherwise `count` seeds drawn from one random base: each run of the tests explores new ones.
pub fn seeds(count: usize) -> Vec<u64> {
    match seed_from_env() {
        Some(seed) => vec![seed],
        None => {
            // The std hasher's keys are random per process (from the OS): a seed source without a dependency and
            // without reading the clock. Only the base is random; the rest follow from it.
            let mut base = Prng::new(std::collections::hash_map::RandomState::new().build_hasher().finish());
            (0..count).map(|_| base.next_u64()).collect()
        }
    }
}

fn seed_from_env() -> Option<u64> {
    let text = std::env::var(SEED_ENV).ok()?;
    match parse_seed(&text) {
        Ok(seed) => Some(seed),
        // A typo must not silently run a different seed than the one being replayed.
        Err(error) => panic!("{SEED_ENV}={text:?} is not a u64 in decimal or 0x hex: {error}"),
    }
}

/// Decimal, or hex with a `0x` prefix as violations print it.
fn parse_seed(text: &str) -> Result<u64, std::num::ParseIntError> {
    let trimmed = text.trim();
    match trimmed.strip_prefix("0x").or_else(|| trimmed.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => trimmed.parse::<u64>(),
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct SimConfig {
    pub network: NetworkConfig,
    /// Every node ticks once per interval; each node's first tick is at a random offset inside the first interval,
    /// so nodes do not tick in lockstep.
    pub tick_interval: Duration,
    /// Most messages one node callback may emit (see `Outbox`).
    pub outbox_length_max: usize,
}

/// A test's safety property, checked after every step. Stateful, so it can compare a node's state with what it
/// was (monotonicity) or remember what was ever acknowledged.
pub trait Checker<N> {
    /// `Err` carries a sentence naming the nodes and values that break the property.
    fn check(&mut self, now: Duration, nodes: &[N]) -> Result<(), String>;
}

impl<N, F: FnMut(Duration, &[N]) -> Result<(), String>> Checker<N> for F {
    fn check(&mut self, now: Duration, nodes: &[N]) -> Result<(), String> {
        self(now, nodes)
    }
}

/// A broken property (or a node addressing a node that does not exist), with what is needed to replay it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub seed: u64,
    /// Steps completed before the violation was found, counting the step that caused it.
    pub step_count: u64,
    pub now: Duration,
    pub message: String,
}

/// Runs one seed's `body`; a panic inside it (an assertion of the code under test) is a violation of that seed too.
pub fn catching_panics<R>(seed: u64, body: impl FnOnce() -> Result<R, Violation>) -> Result<R, Violation> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).unwrap_or_else(|panic| {
        let text = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|text| text.to_string()))
            .unwrap_or_default();
        Err(Violation {
            seed,
            step_count: 0,
            now: Duration::ZERO,
            message: format!("a node panicked: {text}"),
        })
    })
}

impl fmt::Display for Violation {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "invariant violated after step {} at {:?} simulated: {}; replay with {SEED_ENV}={:#x}",
            self.step_count, self.now, self.message, self.seed
        )
    }
}

impl std::error::Error for Violation {}

/// What one step did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    Delivered { from: NodeId, to: NodeId },
    Ticked { node: NodeId },
}

pub struct Simulation<N: Node> {
    seed: u64,
    clock: SimClock,
    network: SimNetwork<N::Message>,
    nodes: Vec<N>,
    tick_interval: Duration,
    /// When each node ticks next; indexed like `nodes`.
    tick_next_at: Vec<Duration>,
    outbox: Outbox<N::Message>,
    step_count: u64,
}

impl<N: Node> Simulation<N>
where
    N::Message: Clone,
{
    /// Node `i` of `nodes` is `NodeId(i)`. The network and the tick offsets draw from independent streams of `seed`.
    pub fn new(config: SimConfig, seed: u64, nodes: Vec<N>) -> Result<Simulation<N>, NetworkConfigError> {
        assert_eq!(nodes.len(), config.network.node_count, "one node per network node");
        assert!(config.tick_interval > Duration::ZERO, "tick_interval must be positive");
        let mut prng = Prng::new(seed);
        let network = SimNetwork::new(config.network, prng.fork())?;
        let mut ticks_prng = prng.fork();
        let tick_interval_us = config.tick_interval.as_micros() as u64;
        let tick_next_at =
            (0..nodes.len()).map(|_| Duration::from_micros(ticks_prng.below(tick_interval_us))).collect();
        Ok(Simulation {
            seed,
            clock: SimClock::new(),
            network,
            nodes,
            tick_interval: config.tick_interval,
            tick_next_at,
            outbox: Outbox::new(config.outbox_length_max),
            step_count: 0,
        })
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    pub fn now(&self) -> Duration {
        self.clock.now()
    }

    pub fn clock(&self) -> &SimClock {
        &self.clock
    }

    pub fn step_count(&self) -> u64 {
        self.step_count
    }

    pub fn nodes(&self) -> &[N] {
        &self.nodes
    }

    /// For faults applied to nodes between steps: crashes, restarts, client requests queued for the next tick.
    pub fn nodes_mut(&mut self) -> &mut [N] {
        &mut self.nodes
    }

    /// For faults: partitions, heals, changes of loss and delay.
    pub fn network_mut(&mut self) -> &mut SimNetwork<N::Message> {
        &mut self.network
    }

    pub fn network(&self) -> &SimNetwork<N::Message> {
        &self.network
    }

    /// Runs one node callback — the earliest message due, or the earliest tick if no message is due by then
    /// (messages first on a tie, ticks by node id) — sends what it emitted, then checks the invariant.
    pub fn step(&mut self, checker: &mut impl Checker<N>) -> Result<Event, Violation> {
        let event = self.step_until(Duration::MAX, checker)?;
        Ok(event.invariant("a node always has a next tick"))
    }

    /// Steps until nothing is left to do at or before `time`, then moves the clock to `time`.
    pub fn run_until(&mut self, time: Duration, checker: &mut impl Checker<N>) -> Result<(), Violation> {
        while self.step_until(time, checker)?.is_some() {}
        self.clock.advance_to(time);
        self.network.advance_to(time);
        Ok(())
    }

    /// Steps until `done` holds for the nodes (checked before every step) or nothing is left to do by `deadline`.
    /// Returns whether `done` was reached: the liveness half of a test.
    pub fn run_until_done(
        &mut self,
        deadline: Duration,
        checker: &mut impl Checker<N>,
        mut done: impl FnMut(&[N]) -> bool,
    ) -> Result<bool, Violation> {
        while !done(&self.nodes) {
            if self.step_until(deadline, checker)?.is_none() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// One step whose event happens at or before `until`, or None if there is none. The bound is applied to what
    /// is actually delivered: a message due earlier but dropped by a cut link must not let a later tick through.
    fn step_until(
        &mut self,
        until: Duration,
        checker: &mut impl Checker<N>,
    ) -> Result<Option<Event>, Violation> {
        let (tick_index, tick_at) = self
            .tick_next_at
            .iter()
            .copied()
            .enumerate()
            .min_by_key(|&(index, at)| (at, index))
            .invariant("a simulation has at least one node");
        let (acting_node, event) = match self.network.pop_due(tick_at.min(until)) {
            Some(delivery) => {
                self.clock.advance_to(delivery.deliver_at);
                let envelope = delivery.envelope;
                let to_index =
                    envelope.to.index(self.nodes.len()).invariant("the network delivers only to its nodes");
                let now = self.clock.now();
                self.nodes[to_index].on_message(now, envelope.from, envelope.message, &mut self.outbox);
                (envelope.to, Event::Delivered { from: envelope.from, to: envelope.to })
            }
            None if tick_at <= until => {
                self.clock.advance_to(tick_at);
                self.network.advance_to(tick_at);
                self.nodes[tick_index].on_tick(tick_at, &mut self.outbox);
                self.tick_next_at[tick_index] = tick_at + self.tick_interval;
                let node = NodeId(tick_index as i32);
                (node, Event::Ticked { node })
            }
            None => return Ok(None),
        };
        assert_eq!(self.clock.now(), self.network.now(), "the clock and the network disagree on the time");
        self.step_count += 1;
        let mut unknown_destination = None;
        for (to, message) in self.outbox.drain() {
            match self.network.send(acting_node, to, message) {
                // A full queue is back-pressure the protocol must survive, like loss; the network counts it.
                Ok(()) | Err(SendError::QueueFull { .. }) => {}
                Err(error @ SendError::UnknownNode { .. }) => unknown_destination = Some(error),
            }
        }
        if let Some(error) = unknown_destination {
            return Err(self.violation(format!("{acting_node} sent a message: {error}")));
        }
        match checker.check(self.clock.now(), &self.nodes) {
            Ok(()) => Ok(Some(event)),
            Err(message) => Err(self.violation(message)),
        }
    }

    fn violation(&self, message: String) -> Violation {
        Violation { seed: self.seed, step_count: self.step_count, now: self.clock.now(), message }
    }
}

/// A panic inside a node or a test's assert still names the seed, so every failure replays.
impl<N: Node> Drop for Simulation<N> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "simulation panicked after step {} at {:?} simulated; replay with {SEED_ENV}={:#x}",
                self.step_count,
                self.clock.now(),
                self.seed
            );
        }
    }
}
