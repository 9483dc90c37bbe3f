//! The harness exercised end to end with a toy protocol: every node counts up on its ticks and broadcasts its
//! counter; every node keeps a view of the highest counter it has heard from each peer. Safety: a view never goes
//! backwards and never runs ahead of the real counter. Liveness: once the network heals, every view converges.

use std::time::Duration;

use super::*;

/// Ticks after which a node stops counting (but keeps rebroadcasting, which is what survives loss).
const COUNTER_MAX: u64 = 250;

#[derive(Clone, Debug)]
struct CounterNode {
    id: NodeId,
    counter: u64,
    /// Highest counter heard from each node; the node's own entry is its counter.
    view: Vec<u64>,
    /// The deliberately broken rule: take whatever arrives, even a stale or duplicated counter.
    accept_stale: bool,
}

impl CounterNode {
    fn cluster(node_count: usize, accept_stale: bool) -> Vec<CounterNode> {
        (0..node_count)
            .map(|index| CounterNode {
                id: NodeId(index as i32),
                counter: 0,
                view: vec![0; node_count],
                accept_stale,
            })
            .collect()
    }
}

impl Node for CounterNode {
    type Message = u64;

    fn on_message(&mut self, _now: Duration, from: NodeId, counter: u64, _out: &mut Outbox<u64>) {
        let from_index = from.index(self.view.len()).expect("the network delivers only from its nodes");
        let entry = &mut self.view[from_index];
        *entry = if self.accept_stale { counter } else { (*entry).max(counter) };
    }

    fn on_tick(&mut self, _now: Duration, out: &mut Outbox<u64>) {
        self.counter = (self.counter + 1).min(COUNTER_MAX);
        let own = self.id.index(self.view.len()).expect("own id is in range");
        self.view[own] = self.counter;
        for index in (0..self.view.len()).filter(|&index| index != own) {
            out.send(NodeId(index as i32), self.counter);
        }
    }
}

/// Views are monotonic, and nobody believes a counter its owner has not reached.
#[derive(Default)]
struct ViewsChecker {
    previous: Vec<Vec<u64>>,
}

impl Checker<CounterNode> for ViewsChecker {
    fn check(&mut self, _now: Duration, nodes: &[CounterNode]) -> Result<(), String> {
        for (observer, node) in nodes.iter().enumerate() {
            for (subject, &seen) in node.view.iter().enumerate() {
                if let Some(&before) = self.previous.get(observer).and_then(|view| view.get(subject)) {
                    if seen < before {
                        return Err(format!(
                            "node {observer}'s view of node {subject} went back from {before} to {seen}"
                        ));
                    }
                }
                if seen > nodes[subject].counter {
                    return Err(format!(
                        "node {observer} saw counter {seen} from node {subject}, which has only reached {}",
                        nodes[subject].counter
                    ));
                }
            }
        }
        // Reuse the buffers: this runs after every one of about 1.6 million steps in the 200-seed sweep.
        self.previous.resize_with(nodes.len(), Vec::new);
        for (previous, node) in self.previous.iter_mut().zip(nodes) {
            previous.clone_from(&node.view);
        }
        Ok(())
    }
}

fn converged(nodes: &[CounterNode]) -> bool {
    nodes.iter().all(|node| node.view.iter().all(|&seen| seen == COUNTER_MAX))
}

fn config(node_count: usize) -> SimConfig {
    SimConfig {
        network: NetworkConfig {
            node_count,
            queue_length_max: 10_000,
            faults: Faults {
                loss_probability: 0.2,
                duplication_probability: 0.1,
                // Up to four tick intervals of delay: consecutive broadcasts of one node often arrive reordered.
                delay_min: Duration::ZERO,
                delay_max: Duration::from_millis(40),
            },
        },
        tick_interval: Duration::from_millis(10),
        outbox_length_max: 16,
    }
}

/// The safety phase: 3 s of simulated time (counters stop at 2.5 s) under loss, duplication, reordering and a
/// partition that changes every 200 ms — a random minority or majority cut off, or none.
fn run_safety_phase(
    simulation: &mut Simulation<CounterNode>,
    checker: &mut ViewsChecker,
) -> Result<(), Violation> {
    let node_count = simulation.nodes().len();
    let mut faults_prng = Prng::new(simulation.seed() ^ 0x0fau64);
    let mut time = Duration::ZERO;
    while time < Duration::from_secs(3) {
        let network = simulation.network_mut();
        network.heal();
        if faults_prng.chance(0.7) {
            let group: Vec<NodeId> = (0..node_count)
                .filter(|_| faults_prng.chance(0.5))
                .map(|index| NodeId(index as i32))
                .collect();
            network.partition(&group);
        }
        time += Duration::from_millis(200);
        simulation.run_until(time, checker)?;
    }
    Ok(())
}

// 200 seeds of the correct protocol under loss, duplication, reordering and shifting partitions: the invariant holds
// at every step, the faults really happened, and after heal every view converges within one simulated second.
#[test]
fn toy_protocol_is_safe_and_converges_after_heal() {
    let mut partitioned_count = 0;
    let mut lost_count = 0;
    for seed in seeds(200) {
        let mut simulation = Simulation::new(config(5), seed, CounterNode::cluster(5, false)).unwrap();
        let mut checker = ViewsChecker::default();
        if let Err(violation) = run_safety_phase(&mut simulation, &mut checker) {
            panic!("{violation}");
        }
        let network = simulation.network_mut();
        network.heal();
        network.set_faults(Faults::none()).unwrap();
        let deadline = simulation.now() + Duration::from_secs(1);
        match simulation.run_until_done(deadline, &mut checker, converged) {
            Ok(true) => {}
            Ok(false) => panic!(
                "views did not converge within 1 s of heal: {:?}; replay with {SEED_ENV}={seed:#x}",
                simulation.nodes().iter().map(|node| &node.view).collect::<Vec<_>>()
            ),
            Err(violation) => panic!("{violation}"),
        }
        partitioned_count += simulation.network().stats().partitioned_count;
        lost_count += simulation.network().stats().lost_count;
    }
    assert!(partitioned_count > 0 && lost_count > 0, "the sweep never exercised partitions or loss");
}

// The checker catches a broken rule: nodes that accept stale counters are reported on every seed, with the seed in
// the report, and the same seed replays the same violation at the same step.
#[test]
fn broken_rule_is_caught_and_replays() {
    for seed in seeds(20) {
        let run = || {
            let mut simulation = Simulation::new(config(5), seed, CounterNode::cluster(5, true)).unwrap();
            let mut checker = ViewsChecker::default();
            run_safety_phase(&mut simulation, &mut checker)
                .expect_err("accepting stale counters must be caught")
        };
        let violation = run();
        assert!(violation.message.contains("went back"), "{violation}");
        assert!(violation.to_string().contains(&format!("{SEED_ENV}={seed:#x}")), "{violation}");
        assert_eq!(run(), violation, "{SEED_ENV}={seed:#x} did not replay");
    }
}

// Two simulations from one seed take the same steps at the same times; a node addressing a node outside the
// cluster is reported as a violation rather than a panic.
#[test]
fn steps_replay_and_bad_destination_is_a_violation() {
    let seed = seed();
    let trace = || {
        let mut simulation = Simulation::new(config(4), seed, CounterNode::cluster(4, false)).unwrap();
        let mut checker = ViewsChecker::default();
        (0..2_000).map(|_| (simulation.step(&mut checker).unwrap(), simulation.now())).collect::<Vec<_>>()
    };
    let first = trace();
    assert_eq!(first, trace(), "{SEED_ENV}={seed:#x} did not replay");
    assert!(first.iter().any(|(event, _)| matches!(event, Event::Delivered { .. })));

    struct Stray;
    impl Node for Stray {
        type Message = ();
        fn on_message(&mut self, _: Duration, _: NodeId, _: (), _: &mut Outbox<()>) {}
        fn on_tick(&mut self, _: Duration, out: &mut Outbox<()>) {
            out.send(NodeId(9), ());
        }
    }
    let mut config = config(1);
    config.network.faults = Faults::none();
    let mut simulation = Simulation::new(config, seed, vec![Stray]).unwrap();
    let violation = simulation.step(&mut |_: Duration, _: &[Stray]| Ok(())).unwrap_err();
    assert_eq!(violation.step_count, 1);
    assert!(
        violation.message.contains("node 0 sent a message: node 9 is not one of the 1 nodes"),
        "{violation}"
    );
}

// SLUICE_SEED accepts what a violation prints (0x hex) as well as decimal, and refuses anything else.
#[test]
fn seed_parsing() {
    assert_eq!(parse_seed("0x1f"), Ok(31));
    assert_eq!(parse_seed(" 31\n"), Ok(31));
    assert_eq!(parse_seed(&format!("{:#x}", u64::MAX)), Ok(u64::MAX));
    assert!(parse_seed("seed").is_err());
    assert!(parse_seed("-1").is_err());
}
