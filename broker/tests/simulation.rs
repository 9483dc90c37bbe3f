//! The real partition layer of two nodes, run on one thread under the deterministic simulator's network: node 1
//! leads a partition and takes produces through the one produce path; node 2 copies it with fetches carried by
//! `SimNetwork` (seeded loss, duplication, delay — hence reordering — and a partition that comes and goes) and
//! appends what it gets with the follower append, keeping the leader's offsets and epochs. Both run on simulated
//! storage. After every delivery the follower's log must be a prefix of the leader's, byte for byte, and
//! `high watermark <= log end` on both; after the network heals the two logs must be identical.
//!
//! Not replication yet (no ISR, no acks=all across nodes): this proves the seams — partition layer over
//! `SimStorage`, follower append, simulated network and seeds — carry a two-node run deterministically.
//! A failing seed is printed; `SLUICE_SEED=<seed>` replays it.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step is the test failing

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sluice_broker::cluster::partition::Partition;
use sluice_broker::cluster::topic_table::{apply_change, TopicChange, TopicTable};
use sluice_broker::cluster::PartitionManager;
use sluice_broker::config::{Config, ConfigOverrides};
use sluice_replication::sim::{self, Faults, NetworkConfig, Prng, SimNetwork};
use sluice_replication::{Acks, LeaderEpoch, NodeId, ShardId};
use sluice_storage::{BatchHeader, GlommioSpawner, LogRuntime, ManualClock, Offset, SimStorage};

const TOPIC: &str = "simulated";
const LEADER: NodeId = NodeId(0);
const FOLLOWER: NodeId = NodeId(1);
const SEED_COUNT: usize = 16;
const PRODUCE_COUNT: usize = 120;
const STEP: Duration = Duration::from_millis(1);
const FETCH_INTERVAL: Duration = Duration::from_millis(5);
const FETCH_SIZE_MAX: usize = 4096;
const STEPS_MAX: u64 = 200_000;

#[derive(Clone, Debug)]
enum Message {
    Fetch { offset: Offset },
    FetchReply { batches: Vec<Bytes>, high_watermark: Offset },
}

struct Node {
    manager: PartitionManager<SimStorage>,
}

impl Node {
    async fn start(node: NodeId, clock: Rc<ManualClock>) -> Node {
        let overrides = ConfigOverrides {
            data_dir: Some(format!("/sim/node-{}", node.0).into()),
            node_id: Some(node.0),
            ..Default::default()
        };
        let config = Arc::new(Config::from_toml("", &overrides).expect("config"));
        let mut table = TopicTable::default();
        let create = TopicChange::Create {
            name: TOPIC.into(),
            partition_count: 1,
            replication_factor: 1,
            configs: Default::default(),
            assignment: None,
        };
        apply_change(&config, node, &mut table, create).expect("create the topic");
        // Simulated time: the logs' clock moves only when the simulation says (their tasks still run on glommio).
        let runtime = LogRuntime { clock, spawner: Rc::new(GlommioSpawner) };
        let manager = PartitionManager::with_runtime(config, SimStorage::new(), ShardId(0), 1, runtime);
        manager.apply(&table).await.expect("open the partition");
        Node { manager }
    }

    fn partition(&self) -> Rc<Partition<SimStorage>> {
        self.manager.get(TOPIC, 0).expect("the partition is open")
    }
}

/// A small batch of `count` records, as a producer would send it.
fn batch(prng: &mut Prng, count: usize) -> Bytes {
    let values: Vec<Vec<u8>> = (0..count).map(|_| prng.next_u64().to_be_bytes().to_vec()).collect();
    let records: Vec<sluice_broker::records::KeyValue<'_>> =
        values.iter().map(|value| (None, Some(value.as_slice()))).collect();
    sluice_broker::records::encode_batch(&records, 1_700_000_000_000)
}

async fn whole_log(partition: &Partition<SimStorage>) -> Vec<Bytes> {
    let mut batches = Vec::new();
    let mut offset = partition.log_start_offset();
    // Bounded: every read returns at least one batch or the loop ends.
    while offset < partition.log_end_offset() {
        let read = partition.read_replica(offset, 1 << 20).await.expect("read");
        let Some(last) = read.last() else { break };
        offset = BatchHeader::parse(last).expect("a stored batch parses").last_offset().next();
        batches.extend(read);
    }
    batches
}

/// The invariants after every step.
async fn check(leader: &Partition<SimStorage>, follower: &Partition<SimStorage>, seed: u64) {
    for partition in [leader, follower] {
        assert!(partition.high_watermark() <= partition.log_end_offset(), "seed {seed:#x}: HW past LEO");
    }
    assert!(
        follower.log_end_offset() <= leader.log_end_offset(),
        "seed {seed:#x}: follower ahead of the leader"
    );
    assert!(follower.high_watermark() <= leader.high_watermark(), "seed {seed:#x}: follower HW ahead");
    let (leader_log, follower_log) = (whole_log(leader).await, whole_log(follower).await);
    assert!(follower_log.len() <= leader_log.len());
    for (index, (ours, theirs)) in follower_log.iter().zip(&leader_log).enumerate() {
        assert_eq!(ours, theirs, "seed {seed:#x}: batch {index} differs between follower and leader");
    }
}

/// One produce on the leader; returns the offset the next one must get.
async fn produce_one(
    leader: &Rc<Partition<SimStorage>>,
    prng: &mut Prng,
    expected_offset: Offset,
    seed: u64,
) -> Offset {
    let count = 1 + prng.below(5) as usize;
    let records = batch(prng, count);
    let acknowledged = leader.produce(records, Acks::Leader).await.expect("sequenced").acknowledged();
    match acknowledged.await.expect("acknowledged") {
        sluice_broker::cluster::PartitionReply::Appended { base_offset, .. } => {
            assert_eq!(base_offset, expected_offset, "seed {seed:#x}: offsets are contiguous");
            Offset(base_offset.0 + count as i64)
        }
        other => panic!("seed {seed:#x}: produce answered {other:?}"),
    }
}

/// The follower's side of a fetch reply: a stale or duplicated reply keeps only what continues its log.
async fn follow(follower: &Partition<SimStorage>, batches: Vec<Bytes>, high_watermark: Offset) {
    let end = follower.log_end_offset();
    let fresh: Vec<Bytes> = batches
        .into_iter()
        .filter(|batch| BatchHeader::parse(batch).is_ok_and(|header| header.base_offset.get() >= end.0))
        .collect();
    let starts_at_end = fresh
        .first()
        .is_some_and(|first| BatchHeader::parse(first).is_ok_and(|h| h.base_offset.get() == end.0));
    if !starts_at_end {
        follower.follower_high_watermark(high_watermark);
        return;
    }
    let mut records = Vec::new();
    for batch in &fresh {
        records.extend_from_slice(batch);
    }
    follower.append_replicated(Bytes::from(records), high_watermark).await.expect("follower append");
}

/// The network misbehaves during the first part of the run (a partition now and then), then heals.
fn misbehave(network: &mut SimNetwork<Message>, produced: usize, prng: &mut Prng) {
    if produced == PRODUCE_COUNT / 3 && !network.is_link_cut(LEADER, FOLLOWER) && prng.chance(0.05) {
        network.partition(&[LEADER]);
    } else if produced >= 2 * PRODUCE_COUNT / 3 {
        network.heal();
    }
    if produced == PRODUCE_COUNT {
        network.set_faults(Faults::none()).expect("faults");
    }
}

async fn run_seed(seed: u64) -> (u64, u64) {
    let mut prng = Prng::new(seed);
    let faults = Faults {
        loss_probability: 0.2,
        duplication_probability: 0.1,
        delay_min: Duration::from_millis(0),
        delay_max: Duration::from_millis(20),
    };
    let config = NetworkConfig { node_count: 2, queue_length_max: 1024, faults };
    let mut network: SimNetwork<Message> = SimNetwork::new(config, prng.fork()).expect("network");
    let clock = Rc::new(ManualClock::new(1_700_000_000_000));
    let (leader_node, follower_node) =
        (Node::start(LEADER, clock.clone()).await, Node::start(FOLLOWER, clock.clone()).await);
    let (leader, follower) = (leader_node.partition(), follower_node.partition());
    follower.become_follower(LeaderEpoch(0));
    let mut produced = 0usize;
    let mut expected_offset = Offset(0);
    let mut now = Duration::ZERO;
    let mut next_fetch = Duration::ZERO;
    let mut step: u64 = 0;
    while step < STEPS_MAX {
        step += 1;
        now += STEP;
        clock.advance(STEP);
        // Everything due by now arrives first (this also moves network time to now); sends below happen at now.
        let deliveries = network.deliver_until(now);
        // A produce now and then, through the one produce path; offsets come back contiguous.
        if produced < PRODUCE_COUNT && prng.chance(0.3) {
            expected_offset = produce_one(&leader, &mut prng, expected_offset, seed).await;
            produced += 1;
        }
        misbehave(&mut network, produced, &mut prng);
        if now >= next_fetch {
            next_fetch = now + FETCH_INTERVAL;
            let _ = network.send(FOLLOWER, LEADER, Message::Fetch { offset: follower.log_end_offset() });
        }
        for delivery in deliveries {
            let envelope = delivery.envelope;
            match envelope.message {
                Message::Fetch { offset } => {
                    let batches = leader.read_replica(offset, FETCH_SIZE_MAX).await.unwrap_or_default();
                    let reply = Message::FetchReply { batches, high_watermark: leader.high_watermark() };
                    let _ = network.send(LEADER, envelope.from, reply);
                }
                Message::FetchReply { batches, high_watermark } => {
                    follow(&follower, batches, high_watermark).await;
                }
            }
            check(&leader, &follower, seed).await;
        }
        if produced == PRODUCE_COUNT
            && follower.log_end_offset() == leader.log_end_offset()
            && follower.high_watermark() == leader.high_watermark()
        {
            break;
        }
    }
    assert_eq!(
        follower.log_end_offset(),
        leader.log_end_offset(),
        "seed {seed:#x}: no convergence in {step} steps"
    );
    assert_eq!(
        whole_log(&follower).await,
        whole_log(&leader).await,
        "seed {seed:#x}: logs differ after heal"
    );
    let stats = network.stats();
    (stats.lost_count, stats.duplicated_count)
}

#[test]
fn two_nodes_converge_under_a_faulty_network() {
    for seed in sim::seeds(SEED_COUNT) {
        let (lost, duplicated) = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .spawn(move || async move { run_seed(seed).await })
            .expect("executor")
            .join()
            .unwrap_or_else(|_| panic!("seed {seed:#x} failed; replay with SLUICE_SEED={seed:#x}"));
        assert!(
            lost > 0 && duplicated > 0,
            "seed {seed:#x}: the network was not faulty ({lost} lost, {duplicated} duplicated)"
        );
    }
}
