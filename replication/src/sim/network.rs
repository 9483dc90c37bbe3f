//! A deterministic, unreliable, in-memory network for simulation tests.
//!
//! Every accepted message is given a delivery time `send time + delay`, the delay drawn from a seeded generator
//! between `delay_min` and `delay_max`; messages leave the queue in (delivery time, send sequence) order, so a delay
//! range wider than the gap between two sends reorders them, and equal times are broken by send order. Loss and
//! duplication are drawn per message; partitions cut links, and a cut link drops both new messages and messages in
//! flight when they fall due (a cable pulled mid-flight). The queue is bounded: beyond `queue_length_max` messages
//! a send is refused and counted, as a real bounded channel would refuse it.
//!
//! Every send draws the same four numbers from the generator whatever the outcome, so cutting a link or changing a
//! probability does not shift the randomness of every later message; a failing seed stays comparable across small
//! edits to a test.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::seams::{Envelope, MessageBus, SendError};
use crate::sim::prng::Prng;
use crate::types::NodeId;

/// The largest cluster the network simulates. Links are kept in a dense `node_count²` matrix; 64 nodes (4 KiB of
/// flags) is far more than a controller quorum plus the brokers any one-thread simulation can usefully run.
pub const NODE_COUNT_MAX: usize = 64;

/// The misbehaviour of the network, changeable while a simulation runs (a safety phase with faults, a liveness
/// phase without). Changes apply to messages sent afterwards.
#[derive(Clone, Debug, PartialEq)]
pub struct Faults {
    /// Chance that a message is silently dropped, in [0, 1].
    pub loss_probability: f64,
    /// Chance that a message that is not lost is delivered twice, each copy with its own delay, in [0, 1].
    pub duplication_probability: f64,
    /// Shortest and longest delay from send to delivery, inclusive, drawn uniformly with microsecond resolution.
    pub delay_min: Duration,
    pub delay_max: Duration,
}

impl Faults {
    /// A perfect network with a fixed one-millisecond delay: what the liveness phase of a test heals to.
    pub fn none() -> Faults {
        Faults {
            loss_probability: 0.0,
            duplication_probability: 0.0,
            delay_min: Duration::from_millis(1),
            delay_max: Duration::from_millis(1),
        }
    }

    fn validate(&self) -> Result<(), NetworkConfigError> {
        for (name, value) in [
            ("loss_probability", self.loss_probability),
            ("duplication_probability", self.duplication_probability),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(NetworkConfigError::Probability { name, value });
            }
        }
        if self.delay_min > self.delay_max {
            return Err(NetworkConfigError::DelayRange {
                delay_min: self.delay_min,
                delay_max: self.delay_max,
            });
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct NetworkConfig {
    /// Nodes are `NodeId(0)` to `NodeId(node_count - 1)`.
    pub node_count: usize,
    /// Messages in flight at most; sends beyond it are refused with `SendError::QueueFull` and counted.
    pub queue_length_max: usize,
    pub faults: Faults,
}

#[derive(Clone, Debug, PartialEq)]
pub enum NetworkConfigError {
    NodeCount { node_count: usize },
    QueueLengthMax { queue_length_max: usize },
    Probability { name: &'static str, value: f64 },
    DelayRange { delay_min: Duration, delay_max: Duration },
}

impl fmt::Display for NetworkConfigError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetworkConfigError::NodeCount { node_count } => {
                write!(formatter, "node_count {node_count} is outside 1..={NODE_COUNT_MAX}")
            }
            NetworkConfigError::QueueLengthMax { queue_length_max } => {
                write!(formatter, "queue_length_max {queue_length_max} must be at least 1")
            }
            NetworkConfigError::Probability { name, value } => {
                write!(formatter, "{name} {value} is outside [0, 1]")
            }
            NetworkConfigError::DelayRange { delay_min, delay_max } => {
                write!(formatter, "delay_min {delay_min:?} is above delay_max {delay_max:?}")
            }
        }
    }
}

impl std::error::Error for NetworkConfigError {}

/// What became of every message. Each accepted send makes one copy, two if duplicated; every copy ends up in
/// exactly one of lost, partitioned, queue-full, delivered or still in flight (checked by `check_accounting`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetworkStats {
    /// Calls to `send` with a known destination.
    pub send_count: u64,
    /// Messages dropped by the loss draw (never duplicated).
    pub lost_count: u64,
    /// Extra copies made by the duplication draw.
    pub duplicated_count: u64,
    /// Copies dropped because their link was cut, at send or when they fell due.
    pub partitioned_count: u64,
    /// Copies refused because the queue held `queue_length_max` messages.
    pub queue_full_count: u64,
    /// Copies handed to their destination.
    pub delivered_count: u64,
}

/// A message leaving the network, with the times that tests check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery<M> {
    pub envelope: Envelope<M>,
    pub sent_at: Duration,
    pub deliver_at: Duration,
    /// Unique per copy, in the order copies were queued; breaks ties between equal delivery times.
    pub sequence: u64,
}

#[derive(Debug)]
struct InFlight<M> {
    envelope: Envelope<M>,
    sent_at: Duration,
}

pub struct SimNetwork<M> {
    config: NetworkConfig,
    prng: Prng,
    /// Network time: the latest time a message was delivered or the owner advanced to. Sends are stamped with it.
    now: Duration,
    sequence_next: u64,
    /// Keyed by (delivery time, sequence): iteration order is delivery order, with no hashing to vary it.
    in_flight: BTreeMap<(Duration, u64), InFlight<M>>,
    /// `link_cut[from * node_count + to]`: true while messages from `from` to `to` are dropped.
    link_cut: Vec<bool>,
    stats: NetworkStats,
}

impl<M: Clone> SimNetwork<M> {
    pub fn new(config: NetworkConfig, prng: Prng) -> Result<SimNetwork<M>, NetworkConfigError> {
        if config.node_count == 0 || config.node_count > NODE_COUNT_MAX {
            return Err(NetworkConfigError::NodeCount { node_count: config.node_count });
        }
        if config.queue_length_max == 0 {
            return Err(NetworkConfigError::QueueLengthMax { queue_length_max: config.queue_length_max });
        }
        config.faults.validate()?;
        let link_count = config.node_count * config.node_count;
        Ok(SimNetwork {
            config,
            prng,
            now: Duration::ZERO,
            sequence_next: 0,
            in_flight: BTreeMap::new(),
            link_cut: vec![false; link_count],
            stats: NetworkStats::default(),
        })
    }

    pub fn node_count(&self) -> usize {
        self.config.node_count
    }

    pub fn now(&self) -> Duration {
        self.now
    }

    pub fn stats(&self) -> &NetworkStats {
        &self.stats
    }

    pub fn in_flight_count(&self) -> usize {
        self.in_flight.len()
    }

    pub fn faults(&self) -> &Faults {
        &self.config.faults
    }

    /// Replaces the fault model for messages sent from now on; messages in flight keep their fate.
    pub fn set_faults(&mut self, faults: Faults) -> Result<(), NetworkConfigError> {
        faults.validate()?;
        self.config.faults = faults;
        Ok(())
    }

    /// Moves network time forward without delivering anything; `deliver_until` and `pop_due` also move it.
    pub fn advance_to(&mut self, time: Duration) {
        assert!(time >= self.now, "network time would move backwards from {:?} to {:?}", self.now, time);
        self.now = time;
    }

    /// Sends `message` at the current network time. `Ok` means accepted: the message may still be lost, duplicated,
    /// delayed or cut off by a partition, as on a real network.
    pub fn send(&mut self, from: NodeId, to: NodeId, message: M) -> Result<(), SendError> {
        let from_index = self.node_index_checked(from)?;
        let to_index = self.node_index_checked(to)?;
        self.stats.send_count += 1;
        let faults = &self.config.faults;
        let delay_range_us = (faults.delay_min.as_micros() as u64, faults.delay_max.as_micros() as u64);
        // Always the same four draws, in the same order: see the module comment.
        let lost = self.prng.chance(faults.loss_probability);
        let duplicated = self.prng.chance(faults.duplication_probability);
        let delay_first = Duration::from_micros(self.prng.between(delay_range_us.0, delay_range_us.1));
        let delay_second = Duration::from_micros(self.prng.between(delay_range_us.0, delay_range_us.1));
        if lost {
            self.stats.lost_count += 1;
            return Ok(());
        }
        if self.link_cut[from_index * self.config.node_count + to_index] {
            self.stats.partitioned_count += 1;
            if duplicated {
                self.stats.duplicated_count += 1;
                self.stats.partitioned_count += 1;
            }
            return Ok(());
        }
        let envelope = Envelope { from, to, message };
        let result = if duplicated {
            self.stats.duplicated_count += 1;
            let first = self.enqueue(envelope.clone(), delay_first);
            let second = self.enqueue(envelope, delay_second);
            first.and(second)
        } else {
            self.enqueue(envelope, delay_first)
        };
        self.check_accounting();
        result
    }

    fn enqueue(&mut self, envelope: Envelope<M>, delay: Duration) -> Result<(), SendError> {
        if self.in_flight.len() >= self.config.queue_length_max {
            self.stats.queue_full_count += 1;
            return Err(SendError::QueueFull { queue_length_max: self.config.queue_length_max });
        }
        let sequence = self.sequence_next;
        self.sequence_next += 1;
        let deliver_at = self.now + delay;
        let previous =
            self.in_flight.insert((deliver_at, sequence), InFlight { envelope, sent_at: self.now });
        assert!(previous.is_none(), "sequence {sequence} was queued twice");
        Ok(())
    }

    /// When the next queued message falls due, if any (it may yet be dropped by a cut link).
    pub fn next_delivery_time(&self) -> Option<Duration> {
        self.in_flight.first_key_value().map(|(&(deliver_at, _), _)| deliver_at)
    }

    /// Delivers the earliest message due at or before `until`, moving network time to its delivery time. Messages
    /// whose link is cut by then are dropped on the way. None when nothing is due by `until`.
    pub fn pop_due(&mut self, until: Duration) -> Option<Delivery<M>> {
        while let Some(entry) = self.in_flight.first_entry() {
            let (deliver_at, sequence) = *entry.key();
            if deliver_at > until {
                return None;
            }
            let in_flight = entry.remove();
            assert!(deliver_at >= in_flight.sent_at, "message {sequence} would arrive before it was sent");
            // Delivery times only grow: everything earlier has already left the queue.
            self.advance_to(deliver_at);
            if self.is_link_cut(in_flight.envelope.from, in_flight.envelope.to) {
                self.stats.partitioned_count += 1;
                continue;
            }
            self.stats.delivered_count += 1;
            self.check_accounting();
            return Some(Delivery {
                envelope: in_flight.envelope,
                sent_at: in_flight.sent_at,
                deliver_at,
                sequence,
            });
        }
        self.check_accounting();
        None
    }

    /// Delivers the earliest queued message, however far ahead, and moves network time to it.
    pub fn step(&mut self) -> Option<Delivery<M>> {
        self.pop_due(Duration::MAX)
    }

    /// Delivers every message due at or before `time`, in delivery order, and moves network time to `time`.
    pub fn deliver_until(&mut self, time: Duration) -> Vec<Delivery<M>> {
        let mut deliveries = Vec::new();
        while let Some(delivery) = self.pop_due(time) {
            deliveries.push(delivery);
        }
        self.advance_to(time);
        self.check_accounting();
        deliveries
    }

    /// Cuts the link between `a` and `b` in both directions.
    pub fn cut_link(&mut self, a: NodeId, b: NodeId) {
        self.cut_link_one_way(a, b);
        self.cut_link_one_way(b, a);
    }

    /// Cuts only messages from `from` to `to`: the asymmetric partitions that confuse leader leases and elections.
    pub fn cut_link_one_way(&mut self, from: NodeId, to: NodeId) {
        assert_ne!(from, to, "a node cannot be cut off from itself");
        let index = self.link_index(from, to);
        self.link_cut[index] = true;
    }

    /// Splits the cluster in two: `group` on one side, every other node on the other. Links inside each side stay.
    pub fn partition(&mut self, group: &[NodeId]) {
        let node_count = self.config.node_count;
        let mut in_group = vec![false; node_count];
        for &node in group {
            in_group[self.node_index(node)] = true;
        }
        for from in 0..node_count {
            for to in 0..node_count {
                if in_group[from] != in_group[to] {
                    self.link_cut[from * node_count + to] = true;
                }
            }
        }
    }

    /// Restores every link. Messages already dropped stay dropped.
    pub fn heal(&mut self) {
        self.link_cut.fill(false);
    }

    pub fn is_link_cut(&self, from: NodeId, to: NodeId) -> bool {
        self.link_cut[self.link_index(from, to)]
    }

    fn link_index(&self, from: NodeId, to: NodeId) -> usize {
        self.node_index(from) * self.config.node_count + self.node_index(to)
    }

    /// For ids that come from the test itself: an unknown one is a bug in the test.
    fn node_index(&self, node: NodeId) -> usize {
        match node.index(self.config.node_count) {
            Some(index) => index,
            None => panic!("{node} is not one of the {} simulated nodes", self.config.node_count),
        }
    }

    /// For ids that come from a node under test: an unknown one is an operating error, as on a real network.
    fn node_index_checked(&self, node: NodeId) -> Result<usize, SendError> {
        node.index(self.config.node_count)
            .ok_or(SendError::UnknownNode { node, node_count: self.config.node_count })
    }

    /// Every copy of every message is accounted for exactly once.
    fn check_accounting(&self) {
        let stats = &self.stats;
        let copies = stats.send_count - stats.lost_count + stats.duplicated_count;
        let settled = stats.partitioned_count + stats.queue_full_count + stats.delivered_count;
        assert_eq!(
            copies,
            settled + self.in_flight.len() as u64,
            "network lost track of a message: {stats:?}"
        );
        assert!(self.in_flight.len() <= self.config.queue_length_max);
    }
}

impl<M: Clone> MessageBus<M> for SimNetwork<M> {
    fn send(&mut self, from: NodeId, to: NodeId, message: M) -> Result<(), SendError> {
        SimNetwork::send(self, from, to, message)
    }

    /// Hands over the messages for `node` that are due at the current network time, in delivery order. Messages
    /// for other nodes stay queued. Meant for drivers written against `MessageBus`; the simulator itself delivers
    /// one message at a time with `pop_due`, across all nodes.
    fn drain_inbox(&mut self, node: NodeId, inbox: &mut Vec<Envelope<M>>) {
        let due: Vec<(Duration, u64)> = self
            .in_flight
            .range(..=(self.now, u64::MAX))
            .filter(|(_, in_flight)| in_flight.envelope.to == node)
            .map(|(&key, _)| key)
            .collect();
        for key in due {
            let Some(in_flight) = self.in_flight.remove(&key) else {
                unreachable!("key {key:?} was just listed")
            };
            if self.is_link_cut(in_flight.envelope.from, in_flight.envelope.to) {
                self.stats.partitioned_count += 1;
            } else {
                self.stats.delivered_count += 1;
                inbox.push(in_flight.envelope);
            }
        }
        self.check_accounting();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{seed, SEED_ENV};

    fn config(node_count: usize, faults: Faults) -> NetworkConfig {
        NetworkConfig { node_count, queue_length_max: 100_000, faults }
    }

    fn lossy() -> Faults {
        Faults {
            loss_probability: 0.1,
            duplication_probability: 0.1,
            delay_min: Duration::ZERO,
            delay_max: Duration::from_millis(20),
        }
    }

    /// Sends `message_count` messages on a fixed schedule (one per millisecond, rotating over senders and
    /// receivers), delivering as time passes; returns every delivery.
    fn run_schedule(network: &mut SimNetwork<u32>, message_count: u32) -> Vec<Delivery<u32>> {
        let node_count = network.node_count() as u32;
        let mut deliveries = Vec::new();
        for index in 0..message_count {
            let time = Duration::from_millis(u64::from(index));
            deliveries.extend(network.deliver_until(time));
            let from = NodeId((index % node_count) as i32);
            let to = NodeId(((index * 7 + 1) % node_count) as i32);
            network.send(from, to, index).expect("the queue is large enough");
        }
        deliveries.extend(network.deliver_until(Duration::from_secs(3_600)));
        deliveries
    }

    // The same seed gives the same delivery trace, message for message and microsecond for microsecond; another
    // seed gives another trace.
    #[test]
    fn same_seed_same_trace() {
        let seed = seed();
        let trace = |seed: u64| {
            let mut network = SimNetwork::new(config(5, lossy()), Prng::new(seed)).unwrap();
            let deliveries = run_schedule(&mut network, 2_000);
            (deliveries, network.stats().clone())
        };
        let (first, first_stats) = trace(seed);
        let (second, second_stats) = trace(seed);
        assert!(first.len() > 1_000, "{SEED_ENV}={seed:#x}: only {} deliveries", first.len());
        assert_eq!(first, second, "{SEED_ENV}={seed:#x} did not replay");
        assert_eq!(first_stats, second_stats);
        let (other, _) = trace(seed.wrapping_add(1));
        assert_ne!(first, other, "{SEED_ENV}={seed:#x} and its successor gave the same trace");
    }

    // Over 10,000 messages, loss and duplication counts lie within six standard deviations of their expectation
    // (a false alarm about once in 500 million runs), and every copy is delivered or accounted for.
    #[test]
    fn loss_and_duplication_rates() {
        let seed = seed();
        let faults = Faults {
            loss_probability: 0.1,
            duplication_probability: 0.2,
            delay_min: Duration::from_millis(1),
            delay_max: Duration::from_millis(5),
        };
        let mut network = SimNetwork::new(config(3, faults), Prng::new(seed)).unwrap();
        let deliveries = run_schedule(&mut network, 10_000);
        let stats = network.stats();
        let within = |count: u64, probability: f64, what: &str| {
            let expected = 10_000.0 * probability;
            let deviation = (10_000.0 * probability * (1.0 - probability)).sqrt();
            assert!(
                (count as f64 - expected).abs() <= 6.0 * deviation,
                "{SEED_ENV}={seed:#x}: {what} {count} is not within 6 × {deviation:.1} of {expected}"
            );
        };
        within(stats.lost_count, 0.1, "lost");
        // Only messages that survive the loss draw can be duplicated.
        within(stats.duplicated_count, 0.9 * 0.2, "duplicated");
        assert_eq!(stats.send_count, 10_000);
        assert_eq!(stats.delivered_count, 10_000 - stats.lost_count + stats.duplicated_count);
        assert_eq!(deliveries.len() as u64, stats.delivered_count);
        assert_eq!(network.in_flight_count(), 0);
    }

    // No message arrives before it was sent or before `delay_min` has passed, none after `delay_max`, none is
    // handed out before the time asked for, and a delay range wider than the send interval reorders messages.
    #[test]
    fn delivery_respects_send_time_and_delay_range() {
        let seed = seed();
        let faults = Faults {
            loss_probability: 0.0,
            duplication_probability: 0.0,
            delay_min: Duration::from_millis(2),
            delay_max: Duration::from_millis(30),
        };
        let mut network = SimNetwork::new(config(2, faults.clone()), Prng::new(seed)).unwrap();
        let mut deliveries = Vec::new();
        for index in 0..1_000u32 {
            let time = Duration::from_millis(u64::from(index));
            for delivery in network.deliver_until(time) {
                assert!(
                    delivery.deliver_at <= time,
                    "{SEED_ENV}={seed:#x}: {delivery:?} handed out early, at {time:?}"
                );
                deliveries.push(delivery);
            }
            network.send(NodeId(0), NodeId(1), index).unwrap();
        }
        deliveries.extend(network.deliver_until(Duration::from_secs(60)));
        assert_eq!(deliveries.len(), 1_000);
        let mut reordered_count = 0;
        for pair in deliveries.windows(2) {
            assert!((pair[0].deliver_at, pair[0].sequence) < (pair[1].deliver_at, pair[1].sequence));
            reordered_count += usize::from(pair[0].envelope.message > pair[1].envelope.message);
        }
        for delivery in &deliveries {
            assert_eq!(delivery.sent_at, Duration::from_millis(u64::from(delivery.envelope.message)));
            assert!(
                delivery.deliver_at >= delivery.sent_at + faults.delay_min,
                "{SEED_ENV}={seed:#x}: {delivery:?}"
            );
            assert!(
                delivery.deliver_at <= delivery.sent_at + faults.delay_max,
                "{SEED_ENV}={seed:#x}: {delivery:?}"
            );
        }
        assert!(reordered_count > 0, "{SEED_ENV}={seed:#x}: a 2..30 ms delay never reordered 1 ms sends");
    }

    // A partition drops messages across the cut in both directions, including those already in flight, keeps
    // links inside each side, and heal() restores delivery; a one-way cut drops one direction only.
    #[test]
    fn partition_cuts_and_heal_restores() {
        let mut network = SimNetwork::new(config(3, Faults::none()), Prng::new(seed())).unwrap();
        let send = |network: &mut SimNetwork<&'static str>, from: i32, to: i32, message| {
            network.send(NodeId(from), NodeId(to), message).unwrap()
        };
        let delivered = |network: &mut SimNetwork<&'static str>| -> Vec<&'static str> {
            let time = network.now() + Duration::from_millis(10);
            network.deliver_until(time).into_iter().map(|delivery| delivery.envelope.message).collect()
        };
        send(&mut network, 0, 1, "in flight when cut");
        network.partition(&[NodeId(0)]);
        send(&mut network, 0, 1, "0 to 1");
        send(&mut network, 1, 0, "1 to 0");
        send(&mut network, 2, 0, "2 to 0");
        send(&mut network, 1, 2, "1 to 2, same side");
        assert_eq!(delivered(&mut network), ["1 to 2, same side"]);
        assert_eq!(network.stats().partitioned_count, 4);
        assert!(network.is_link_cut(NodeId(2), NodeId(0)) && !network.is_link_cut(NodeId(2), NodeId(1)));

        network.heal();
        send(&mut network, 0, 1, "0 to 1 healed");
        send(&mut network, 2, 0, "2 to 0 healed");
        assert_eq!(delivered(&mut network), ["0 to 1 healed", "2 to 0 healed"]);

        network.cut_link_one_way(NodeId(0), NodeId(1));
        send(&mut network, 0, 1, "0 to 1 one-way cut");
        send(&mut network, 1, 0, "1 to 0 one-way cut");
        assert_eq!(delivered(&mut network), ["1 to 0 one-way cut"]);
        network.heal();
        network.cut_link(NodeId(1), NodeId(2));
        send(&mut network, 1, 2, "1 to 2 cut");
        send(&mut network, 2, 1, "2 to 1 cut");
        send(&mut network, 0, 2, "0 to 2");
        assert_eq!(delivered(&mut network), ["0 to 2"]);
    }

    // The queue never holds more than queue_length_max messages; refusals are errors and are counted.
    #[test]
    fn queue_is_bounded() {
        let config = NetworkConfig { node_count: 2, queue_length_max: 10, faults: Faults::none() };
        let mut network = SimNetwork::new(config, Prng::new(seed())).unwrap();
        let results: Vec<_> = (0..15).map(|index| network.send(NodeId(0), NodeId(1), index)).collect();
        assert!(results[..10].iter().all(Result::is_ok));
        assert!(results[10..]
            .iter()
            .all(|result| *result == Err(SendError::QueueFull { queue_length_max: 10 })));
        assert_eq!(network.stats().queue_full_count, 5);
        assert_eq!(network.in_flight_count(), 10);
        assert_eq!(network.deliver_until(Duration::from_secs(1)).len(), 10);
        assert!(network.send(NodeId(0), NodeId(1), 15).is_ok());
    }

    // Sending to a node outside the cluster is an error naming it, not a panic.
    #[test]
    fn unknown_destination_is_an_error() {
        let mut network = SimNetwork::new(config(2, Faults::none()), Prng::new(seed())).unwrap();
        let error = network.send(NodeId(0), NodeId(2), ()).unwrap_err();
        assert_eq!(error, SendError::UnknownNode { node: NodeId(2), node_count: 2 });
        assert_eq!(error.to_string(), "node 2 is not one of the 2 nodes of this cluster");
        assert!(network.send(NodeId::NONE, NodeId(1), ()).is_err());
        assert_eq!(network.stats().send_count, 0);
    }

    // drain_inbox (the MessageBus view) hands a node only its own messages, only once due, in delivery order.
    #[test]
    fn drain_inbox_takes_only_due_messages_for_the_node() {
        let mut network = SimNetwork::new(config(3, Faults::none()), Prng::new(seed())).unwrap();
        let bus: &mut dyn MessageBus<u32> = &mut network;
        bus.send(NodeId(0), NodeId(1), 1).unwrap();
        bus.send(NodeId(2), NodeId(1), 2).unwrap();
        bus.send(NodeId(0), NodeId(2), 3).unwrap();
        let mut inbox = Vec::new();
        bus.drain_inbox(NodeId(1), &mut inbox);
        assert!(inbox.is_empty(), "nothing is due before the 1 ms delay");
        network.advance_to(Duration::from_millis(1));
        network.drain_inbox(NodeId(1), &mut inbox);
        let messages: Vec<(NodeId, u32)> =
            inbox.iter().map(|envelope| (envelope.from, envelope.message)).collect();
        assert_eq!(messages, [(NodeId(0), 1), (NodeId(2), 2)]);
        assert_eq!(network.in_flight_count(), 1);
    }

    // Bad configurations are refused with the offending numbers in the message.
    #[test]
    fn config_is_validated() {
        let check = |config: NetworkConfig, expected: &str| {
            let error = SimNetwork::<()>::new(config, Prng::new(0)).err().expect("config should be refused");
            assert_eq!(error.to_string(), expected);
        };
        check(config(0, Faults::none()), "node_count 0 is outside 1..=64");
        check(config(65, Faults::none()), "node_count 65 is outside 1..=64");
        check(
            NetworkConfig { queue_length_max: 0, ..config(2, Faults::none()) },
            "queue_length_max 0 must be at least 1",
        );
        check(
            config(2, Faults { loss_probability: 1.5, ..Faults::none() }),
            "loss_probability 1.5 is outside [0, 1]",
        );
        check(
            config(2, Faults { delay_min: Duration::from_millis(5), ..Faults::none() }),
            "delay_min 5ms is above delay_max 1ms",
        );
        let mut network = SimNetwork::<()>::new(config(2, Faults::none()), Prng::new(0)).unwrap();
        assert!(network.set_faults(Faults { duplication_probability: -0.1, ..Faults::none() }).is_err());
        assert_eq!(network.faults(), &Faults::none());
    }
}
