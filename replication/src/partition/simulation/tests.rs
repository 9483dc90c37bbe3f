use super::*;
use crate::sim::seeds;
use std::time::Instant;

/// Runs `count` seeds (or only `SLUICE_SEED`), panicking with the replay line on the first violation.
fn sweep(count: usize, scenario: &Scenario) -> Vec<RunReport> {
    seeds(count)
        .into_iter()
        .map(|seed| run(seed, scenario).unwrap_or_else(|violation| panic!("{violation}")))
        .collect()
}

fn summary(reports: &[RunReport]) -> String {
    let sum = |field: fn(&RunReport) -> u64| reports.iter().map(field).sum::<u64>();
    let liveness_max = reports.iter().map(|report| report.liveness_step_count).max().unwrap_or(0);
    format!(
        "{} runs: {} batches committed, {} acknowledgements, {} leader epochs, {} crashes ({} unsynced batches \
         lost), {} leaders cut from the controller, {} ISR shrinks, {} ISR expansions, {} diverging answers \
         ({} batches truncated), {} NOT_ENOUGH_REPLICAS, {} batches the image refused, liveness steps max \
         {liveness_max}",
        reports.len(),
        sum(|report| report.committed_batch_count),
        sum(|report| report.acknowledged_count),
        sum(|report| report.leader_epoch_count),
        sum(|report| report.crash_count),
        sum(|report| report.lost_unsynced_batch_count),
        sum(|report| report.zombie_count),
        sum(|report| report.isr_shrink_count),
        sum(|report| report.isr_expand_count),
        sum(|report| report.diverging_answer_count),
        sum(|report| report.truncated_batch_count),
        sum(|report| report.not_enough_replicas_count),
        sum(|report| report.refused_batch_count),
    )
}

/// The sweep exercised what it claims: writes acknowledged, leaders changed, crashes and zombies happened.
fn assert_coverage(reports: &[RunReport]) {
    assert!(reports.iter().all(|report| report.acknowledged_count > 0), "a run acknowledged nothing");
    if reports.len() >= 50 {
        let sum = |field: fn(&RunReport) -> u64| reports.iter().map(field).sum::<u64>();
        assert!(sum(|report| report.leader_epoch_count) > 2 * reports.len() as u64, "few leader changes");
        assert!(sum(|report| report.crash_count) > 0, "no crash");
        assert!(sum(|report| report.zombie_count) > 0, "no leader cut from the controller");
        assert!(sum(|report| report.lost_unsynced_batch_count) > 0, "no crash lost unsynced data");
        assert!(sum(|report| report.isr_shrink_count) > 0, "no ISR shrink");
        assert!(sum(|report| report.isr_expand_count) > 0, "no ISR expansion");
        assert!(sum(|report| report.truncated_batch_count) > 0, "no follower truncated a diverging suffix");
    }
}

// Three brokers, one partition (RF 3), keep every invariant through faults and converge after healing.
#[test]
fn three_brokers() {
    let started = Instant::now();
    let reports = sweep(300, &Scenario::new(3, 1));
    eprintln!("3 brokers, 1 partition: {} in {:.1} s", summary(&reports), started.elapsed().as_secs_f64());
    assert_coverage(&reports);
}

// Five brokers, two partitions placed over them (RF 3), the same.
#[test]
fn five_brokers() {
    let started = Instant::now();
    let reports = sweep(200, &Scenario::new(5, 2));
    eprintln!("5 brokers, 2 partitions: {} in {:.1} s", summary(&reports), started.elapsed().as_secs_f64());
    assert_coverage(&reports);
}

/// `scenario` with preferred-leader rebalances and reassignments switched on.
fn with_leader_moves(scenario: Scenario) -> Scenario {
    Scenario { rebalance_probability: 0.02, reassignment_probability: 0.01, ..scenario }
}

// Leaders and replicas moving under faults: preferred-leader rebalances and random reassignments (and their
// cancellations) of two partitions over five brokers, and under harsh faults over four, keep every invariant, and
// the running reassignments complete once healed. The counts show the moves happened.
#[test]
fn leader_moves() {
    for (scenario, seed_count) in
        [(with_leader_moves(Scenario::new(5, 2)), 100), (with_leader_moves(Scenario::harsh(4, 2)), 50)]
    {
        let started = Instant::now();
        let reports = sweep(seed_count, &scenario);
        let sum = |field: fn(&RunReport) -> u64| reports.iter().map(field).sum::<u64>();
        eprintln!(
            "leader moves, {} brokers, {} partitions: {}; {} preferred elections, {} reassignments ({} cancelled, \
             {} completed) in {:.1} s",
            scenario.broker_count,
            scenario.partition_count,
            summary(&reports),
            sum(|report| report.preferred_election_count),
            sum(|report| report.reassignment_count),
            sum(|report| report.reassignment_cancel_count),
            sum(|report| report.reassignment_completion_count),
            started.elapsed().as_secs_f64()
        );
        assert_coverage(&reports);
        assert!(sum(|report| report.preferred_election_count) > 0, "no preferred election");
        assert!(sum(|report| report.reassignment_count) > 0, "no reassignment");
        assert!(sum(|report| report.reassignment_cancel_count) > 0, "no cancellation");
        assert!(sum(|report| report.reassignment_completion_count) > 0, "no reassignment completed");
    }
}

// Harsher faults (`Scenario::harsh`) keep every invariant too, and the cluster still converges once healed.
#[test]
fn harsh_faults() {
    let started = Instant::now();
    let reports = sweep(100, &Scenario::harsh(4, 2));
    eprintln!(
        "harsh, 4 brokers, 2 partitions: {} in {:.1} s",
        summary(&reports),
        started.elapsed().as_secs_f64()
    );
    assert_coverage(&reports);
}

// A seed is a replay: the same seed gives the same run.
#[test]
fn same_seed_same_run() {
    let seed = crate::sim::seed();
    let scenario = Scenario::new(3, 1);
    let first = run(seed, &scenario).unwrap();
    let second = run(seed, &scenario).unwrap();
    assert_eq!(
        (first.committed_batch_count, first.acknowledged_count, first.liveness_step_count, first.crash_count),
        (
            second.committed_batch_count,
            second.acknowledged_count,
            second.liveness_step_count,
            second.crash_count
        ),
        "seed {seed:#x} did not replay"
    );
}

/// Runs up to `count` seeds with `rule` broken and returns the first violation and how many seeds it took.
fn find_violation(rule: BrokenRule, count: usize, shape: Scenario) -> (Violation, usize) {
    let scenario = Scenario { broken_rule: Some(rule), ..shape };
    let mut tried = 0;
    let violation = seeds(count).into_iter().find_map(|seed| {
        tried += 1;
        run(seed, &scenario).err()
    });
    let violation = violation.unwrap_or_else(|| panic!("{count} seeds with {rule:?} broken found nothing"));
    eprintln!("{rule:?}: caught at seed {tried} of {count}: {violation}");
    (violation, tried)
}

// Electing a leader outside the ISR loses acknowledged writes, and the simulation says so.
#[test]
fn checker_catches_election_outside_the_isr() {
    find_violation(BrokenRule::ElectOutsideIsr, 100, Scenario::new(3, 1));
}

// Answering acks=all at append, before the high watermark passes the batch, loses acknowledged writes.
#[test]
fn checker_catches_acknowledge_before_high_watermark() {
    find_violation(BrokenRule::AcknowledgeBeforeHighWatermark, 100, Scenario::new(3, 1));
}

// Counting offsets that are written but not synced (Kafka without fsync): a crash takes back what was counted.
// It takes a crash of a counted replica and then its election: 23 of 1,500 seeds found it when measured with
// `broken_rule_detection_rates` (about 1.5%), so 2,000 seeds miss it with odds near e^-30.
#[test]
fn checker_catches_counting_unsynced_offsets() {
    find_violation(BrokenRule::CountUnsyncedOffsets, 2_000, Scenario::new(3, 1));
}

// A high watermark over the followers that fetched, not the whole ISR, commits what a member lacks. It needs a
// quick second failover to a member that had not fetched yet: 37 of 1,500 harsh seeds (about 2.5%) when measured.
#[test]
fn checker_catches_high_watermark_over_fetchers() {
    find_violation(BrokenRule::HighWatermarkOverFetchers, 2_000, Scenario::harsh(3, 1));
}

// The long run: SLUICE_SIM_SEEDS seeds (10,000 by default) of each shape, with timings every 1,000 seeds.
#[test]
#[ignore = "long: run with --ignored, SLUICE_SIM_SEEDS=N"]
fn long_run() {
    let count = std::env::var("SLUICE_SIM_SEEDS").ok().and_then(|text| text.parse().ok()).unwrap_or(10_000);
    let scenarios = [
        Scenario::new(3, 1),
        Scenario::new(5, 2),
        Scenario::harsh(3, 1),
        Scenario::harsh(5, 3),
        with_leader_moves(Scenario::new(5, 2)),
        with_leader_moves(Scenario::harsh(4, 2)),
    ];
    for scenario in scenarios {
        let started = Instant::now();
        let mut reports = Vec::new();
        for (index, seed) in seeds(count).into_iter().enumerate() {
            reports.push(run(seed, &scenario).unwrap_or_else(|violation| panic!("{violation}")));
            if (index + 1) % 1_000 == 0 || index + 1 == count {
                eprintln!(
                    "{} brokers, {} partitions: {} in {:.1} s",
                    scenario.broker_count,
                    scenario.partition_count,
                    summary(&reports),
                    started.elapsed().as_secs_f64()
                );
            }
        }
        assert_coverage(&reports);
    }
}

// Seeds that once found bugs: 0x746a9b4210eeee5d (3 brokers) made a leader drop a pending ISR expansion on an
// INVALID_UPDATE_VERSION answer although an earlier copy had committed it, so a zombie's high watermark passed a
// member the controller then elected; 0xc08b77aa01f04426 (harsh, 4 brokers) matched an answer to a proposal of an
// earlier leader epoch with the same sequence, so a pending expansion waited for metadata that never came. Edits to the harness shift the streams, so these may no longer reach the same
// states; they stay as cheap extra seeds.
#[test]
fn regression_seeds() {
    let seeds =
        [(0x746a_9b42_10ee_ee5d, Scenario::new(3, 1)), (0xc08b_77aa_01f0_4426, Scenario::harsh(4, 2))];
    for (seed, scenario) in seeds.iter() {
        run(*seed, scenario).unwrap_or_else(|violation| panic!("{violation}"));
    }
}

// How often each broken rule is caught: the share of SLUICE_SIM_SEEDS seeds (500 by default) that report a
// violation, and the first message of each kind.
#[test]
#[ignore = "long: run with --ignored, SLUICE_SIM_SEEDS=N"]
fn broken_rule_detection_rates() {
    let count = std::env::var("SLUICE_SIM_SEEDS").ok().and_then(|text| text.parse().ok()).unwrap_or(500);
    for rule in [
        BrokenRule::ElectOutsideIsr,
        BrokenRule::AcknowledgeBeforeHighWatermark,
        BrokenRule::CountUnsyncedOffsets,
        BrokenRule::HighWatermarkOverFetchers,
    ] {
        let shape = std::env::var("SLUICE_SIM_HARSH").map_or(Scenario::new(3, 1), |_| Scenario::harsh(3, 1));
        let scenario = Scenario { broken_rule: Some(rule), ..shape };
        let violations: Vec<Violation> =
            seeds(count).into_iter().filter_map(|seed| run(seed, &scenario).err()).collect();
        assert!(!violations.is_empty(), "{rule:?}: {count} seeds found nothing");
        eprintln!(
            "{rule:?}: {} of {count} seeds caught ({:.1}%); e.g. {}",
            violations.len(),
            100.0 * violations.len() as f64 / count as f64,
            violations[0]
        );
    }
}
