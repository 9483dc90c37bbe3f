//! Unit tests of the partition core, case by case; the simulation (`simulation/`) tests the rules together.

use std::collections::BTreeMap;
use std::time::Duration;

use super::*;
use crate::metadata::{
    plan, AdminRequest, BrokerRegistration, MetadataImage, MetadataRecord, PartitionImage, TopicId,
};

const TOPIC: TopicId = TopicId(7);

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

fn ends(log_end: i64, durable_end: i64) -> LogEnds {
    LogEnds::new(Offset(log_end), Offset(durable_end))
}

fn config() -> ReplicationConfig {
    ReplicationConfig {
        replica_lag_time_max: ms(100),
        min_insync_replicas: 2,
        request_timeout: ms(50),
        visibility: Visibility::Durable,
        broken_rule: None,
    }
}

/// Brokers 0, 1 and 2 registered (broker epoch 1) and unfenced; topic 7 with one partition on all three, led by 0.
fn image() -> MetadataImage {
    let registrations: Vec<MetadataRecord> = (0..3)
        .map(|broker| {
            MetadataRecord::RegisterBroker(BrokerRegistration {
                broker: NodeId(broker),
                incarnation: broker as u128 + 1,
                listeners: Vec::new(),
                rack: None,
            })
        })
        .collect();
    let image = MetadataImage::empty().apply_batch(1, &registrations).unwrap();
    let unfences: Vec<MetadataRecord> = (0..3)
        .map(|broker| MetadataRecord::UnfenceBroker { broker: NodeId(broker), epoch: BrokerEpoch(1) })
        .collect();
    let image = image.apply_batch(2, &unfences).unwrap();
    let request = AdminRequest::CreateTopic {
        name: "t".into(),
        id: TOPIC,
        partition_count: 1,
        replication_factor: 3,
        configs: BTreeMap::new(),
        assignment: Some(vec![vec![NodeId(0), NodeId(1), NodeId(2)]]),
    };
    image.apply_batch(3, &plan(&image, &request).unwrap()).unwrap()
}

fn partition(image: &MetadataImage) -> PartitionImage {
    image.topic(TOPIC).unwrap().partitions[0].clone()
}

/// Node 0 leading epoch 0 with a log ending at `log_end` (all durable) and high watermark 0.
fn leader(log_end: i64) -> LeaderState {
    let image = image();
    let start = LeaderStart { now: Duration::ZERO, ends: ends(log_end, log_end), high_watermark: Offset(0) };
    LeaderState::new(NodeId(0), BrokerEpoch(1), &partition(&image), &image, start, config())
}

fn fetch(replica: i32, fetch_offset: i64, last_fetched_epoch: i32) -> FetchRequest {
    FetchRequest {
        replica: NodeId(replica),
        replica_epoch: BrokerEpoch(1),
        current_leader_epoch: LeaderEpoch(0),
        fetch_offset: Offset(fetch_offset),
        last_fetched_epoch: LeaderEpoch(last_fetched_epoch),
    }
}

fn history(entries: &[(i32, i64)]) -> EpochHistory {
    let mut history = EpochHistory::new();
    for &(epoch, start) in entries {
        history.assign(LeaderEpoch(epoch), Offset(start));
    }
    history
}

fn records(from: i64, high_watermark: i64) -> FetchAnswer {
    FetchAnswer::Records { from: Offset(from), high_watermark: Offset(high_watermark) }
}

// The high watermark is the minimum of the leader's durable end and every ISR member's fetch offset; it waits for
// members not yet heard from, and never falls.
#[test]
fn high_watermark_is_the_minimum_over_the_isr() {
    let mut leader = leader(10);
    let epochs = history(&[(0, 0)]);
    assert_eq!(leader.on_fetch(ms(1), &fetch(1, 6, 0), ends(10, 10), &epochs), records(6, 0));
    assert_eq!(leader.high_watermark(), Offset(0), "member 2 has not fetched in this epoch");
    assert_eq!(leader.on_fetch(ms(2), &fetch(2, 4, 0), ends(10, 10), &epochs), records(4, 4));
    assert_eq!(leader.on_fetch(ms(3), &fetch(2, 10, 0), ends(12, 7), &epochs), records(10, 6));
    assert_eq!(leader.on_log_moved(ends(12, 12)), None, "member 1 still holds only 6");
    assert_eq!(leader.on_fetch(ms(4), &fetch(1, 12, 0), ends(12, 12), &epochs), records(12, 10));
    assert_eq!(leader.on_fetch(ms(5), &fetch(1, 3, 0), ends(12, 12), &epochs), records(3, 10), "never falls");
}

// Below min.insync.replicas an acks=all append is refused and the high watermark stands still (KIP-966).
#[test]
fn min_insync_replicas_freezes_the_high_watermark() {
    let mut leader = leader(10);
    let epochs = history(&[(0, 0)]);
    let shrunk = PartitionImage { isr: vec![NodeId(0)], partition_epoch: 1, ..partition(&image()) };
    leader.on_metadata(&shrunk, &image(), ends(10, 10));
    assert_eq!(leader.check_append(), Err(ProduceError::NotEnoughReplicas));
    assert_eq!(leader.on_log_moved(ends(10, 10)), None, "an ISR of one is below min.insync.replicas 2");
    assert_eq!(leader.on_fetch(ms(1), &fetch(1, 8, 0), ends(10, 10), &epochs), records(8, 0));
    assert_eq!(leader.maximal_isr(), vec![NodeId(0)], "not yet at this epoch's start offset 10");
    assert_eq!(leader.on_fetch(ms(2), &fetch(1, 10, 0), ends(10, 10), &epochs), records(10, 10));
    assert_eq!(leader.maximal_isr(), vec![NodeId(0), NodeId(1)], "the pending expansion counts at once");
}

// Fetch validation, case by case: epochs, membership, broker epoch, divergence, range.
#[test]
fn fetch_validation() {
    let epochs = history(&[(0, 0)]);
    let check = |request: FetchRequest, expected: FetchAnswer| {
        let mut leader = leader(10);
        assert_eq!(leader.on_fetch(ms(1), &request, ends(10, 10), &epochs), expected, "{request:?}");
    };
    let error = FetchAnswer::Error;
    check(
        FetchRequest { current_leader_epoch: LeaderEpoch::NONE, ..fetch(1, 0, 0) },
        error(FetchError::FencedLeaderEpoch),
    );
    check(
        FetchRequest { current_leader_epoch: LeaderEpoch(1), ..fetch(1, 0, 0) },
        error(FetchError::UnknownLeaderEpoch),
    );
    check(fetch(5, 0, 0), error(FetchError::NotLeaderOrFollower));
    check(
        FetchRequest { replica_epoch: BrokerEpoch(9), ..fetch(1, 0, 0) },
        error(FetchError::NotLeaderOrFollower),
    );
    check(fetch(1, 11, 0), FetchAnswer::Diverging { epoch: LeaderEpoch(0), end_offset: Offset(10) });
    check(fetch(1, 0, -1), records(0, 0));
}

// KIP-320: the leader answers the end of the follower's last epoch as it is here, and records nothing of it.
#[test]
fn diverging_epochs() {
    let epochs = history(&[(0, 0), (2, 5), (4, 8)]);
    let check = |fetch_offset: i64, last_epoch: i32, expected: (i32, i64)| {
        let mut leader = leader(10);
        let answer = leader.on_fetch(ms(1), &fetch(1, fetch_offset, last_epoch), ends(10, 10), &epochs);
        let diverging =
            FetchAnswer::Diverging { epoch: LeaderEpoch(expected.0), end_offset: Offset(expected.1) };
        assert_eq!(answer, diverging, "fetch offset {fetch_offset}, last epoch {last_epoch}");
    };
    check(7, 1, (0, 5));
    check(9, 2, (2, 8));
    check(9, 3, (2, 8));
    check(11, 4, (4, 10));
    let mut leader = leader(10);
    assert_eq!(leader.on_fetch(ms(1), &fetch(1, 8, 2), ends(10, 10), &epochs), records(8, 0));
}

// A member that has not caught up for replica.lag.time.max is shrunk away, pessimistically: it still counts until
// the controller commits; a follower that reaches the high watermark is proposed back, optimistically.
#[test]
fn shrink_and_expand() {
    let mut leader = leader(10);
    let epochs = history(&[(0, 0)]);
    leader.on_fetch(ms(10), &fetch(1, 10, 0), ends(10, 10), &epochs);
    leader.on_fetch(ms(10), &fetch(2, 4, 0), ends(10, 10), &epochs);
    leader.on_tick(ms(90), ends(10, 10));
    assert_eq!(leader.take_alter_partition(ms(90)), None, "within the lag time");
    leader.on_tick(ms(120), ends(10, 10));
    let shrink = leader.take_alter_partition(ms(120)).unwrap();
    let shrink_request = shrink.clone();
    assert_eq!((shrink.isr, shrink.partition_epoch), (vec![NodeId(0), NodeId(1)], 0));
    assert_eq!(leader.take_alter_partition(ms(140)), None, "resent only after the request timeout");
    assert!(leader.take_alter_partition(ms(170)).is_some());
    assert_eq!(leader.high_watermark(), Offset(4), "the shrink is not committed yet");
    let committed =
        PartitionImage { isr: vec![NodeId(0), NodeId(1)], partition_epoch: 1, ..partition(&image()) };
    leader.on_alter_partition_answer(&shrink_request, Ok(&committed), ends(10, 10));
    assert_eq!(leader.high_watermark(), Offset(10));
    leader.on_fetch(ms(200), &fetch(2, 9, 0), ends(10, 10), &epochs);
    assert_eq!(leader.take_alter_partition(ms(200)), None, "below the high watermark");
    leader.on_fetch(ms(210), &fetch(2, 10, 0), ends(10, 10), &epochs);
    let expand = leader.take_alter_partition(ms(210)).unwrap();
    assert_eq!((expand.isr.clone(), expand.partition_epoch), (vec![NodeId(0), NodeId(1), NodeId(2)], 1));
    assert_eq!(leader.maximal_isr().len(), 3);
    let stale = AlterPartitionError::InvalidUpdateVersion;
    leader.on_alter_partition_answer(&expand, Err(&stale), ends(10, 10));
    assert_eq!(
        leader.maximal_isr().len(),
        3,
        "an earlier copy may have committed: the expansion still counts"
    );
    assert_eq!(leader.take_alter_partition(ms(400)), None, "and waits for metadata instead of resending");
    let ineligible = AlterPartitionError::IneligibleReplica { replica: NodeId(2) };
    leader.on_alter_partition_answer(&shrink_request, Err(&ineligible), ends(10, 10));
    assert_eq!(leader.maximal_isr().len(), 3, "an answer to another proposal settles nothing");
    let earlier_epoch = AlterPartitionRequest { leader_epoch: LeaderEpoch::NONE, ..expand.clone() };
    leader.on_alter_partition_answer(&earlier_epoch, Err(&ineligible), ends(10, 10));
    assert_eq!(leader.maximal_isr().len(), 3, "nor does one to the same sequence of another leader epoch");
    leader.on_alter_partition_answer(&expand, Err(&ineligible), ends(10, 10));
    assert_eq!(leader.maximal_isr().len(), 2, "a proposal refused as never applied is dropped");
}

// A follower reports only durable offsets, keeps one Fetch in flight, and resends it after the timeout.
#[test]
fn follower_fetches_durable_offsets_one_at_a_time() {
    let mut follower = FollowerState::new(NodeId(1), NodeId(0), LeaderEpoch(3), Offset(0), config());
    let epochs = history(&[(0, 0), (3, 4)]);
    assert_eq!(follower.fetch_request(ms(0), ends(6, 5), &epochs, BrokerEpoch(1)), None, "unsynced");
    let request = follower.fetch_request(ms(0), ends(6, 6), &epochs, BrokerEpoch(1)).unwrap();
    assert_eq!(
        (request.fetch_offset, request.last_fetched_epoch, request.current_leader_epoch),
        (Offset(6), LeaderEpoch(3), LeaderEpoch(3))
    );
    assert_eq!(follower.fetch_request(ms(10), ends(6, 6), &epochs, BrokerEpoch(1)), None, "in flight");
    assert!(follower.fetch_request(ms(50), ends(6, 6), &epochs, BrokerEpoch(1)).is_some(), "timed out");
}

// Only the answer to the Fetch in flight, from this leader and epoch, for the log as it is, is acted on.
#[test]
fn follower_ignores_stale_answers() {
    let epochs = history(&[(0, 0)]);
    let mut follower = FollowerState::new(NodeId(1), NodeId(0), LeaderEpoch(0), Offset(0), config());
    let request = follower.fetch_request(ms(0), ends(6, 6), &epochs, BrokerEpoch(1)).unwrap();
    let other_epoch = FetchRequest { current_leader_epoch: LeaderEpoch(1), ..request };
    assert_eq!(
        follower.on_fetch_answer(NodeId(0), &other_epoch, records(6, 6), ends(6, 6), &epochs),
        FollowerAction::Ignore
    );
    assert_eq!(
        follower.on_fetch_answer(NodeId(2), &request, records(6, 6), ends(6, 6), &epochs),
        FollowerAction::Ignore
    );
    assert_eq!(
        follower.on_fetch_answer(NodeId(0), &request, records(6, 6), ends(8, 8), &epochs),
        FollowerAction::Ignore
    );
    let append = FollowerAction::Append { high_watermark: Offset(6) };
    assert_eq!(follower.on_fetch_answer(NodeId(0), &request, records(6, 6), ends(6, 6), &epochs), append);
    assert_eq!(
        follower.on_fetch_answer(NodeId(0), &request, records(6, 6), ends(6, 6), &epochs),
        FollowerAction::Ignore,
        "a duplicate"
    );
}

// A diverging answer truncates to min(leader's end of the epoch, own end of it, own log end) (KIP-279 rounds).
#[test]
fn follower_truncation_offsets() {
    let epochs = history(&[(0, 0), (1, 5), (3, 9)]);
    let check = |leader_epoch: i32, leader_end: i64, expected: i64| {
        let mut follower = FollowerState::new(NodeId(1), NodeId(0), LeaderEpoch(4), Offset(0), config());
        let request = follower.fetch_request(ms(0), ends(12, 12), &epochs, BrokerEpoch(1)).unwrap();
        let answer =
            FetchAnswer::Diverging { epoch: LeaderEpoch(leader_epoch), end_offset: Offset(leader_end) };
        let action = follower.on_fetch_answer(NodeId(0), &request, answer, ends(12, 12), &epochs);
        assert_eq!(
            action,
            FollowerAction::Truncate { offset: Offset(expected) },
            "leader ({leader_epoch}, {leader_end})"
        );
    };
    check(1, 7, 7);
    check(1, 11, 9);
    check(2, 10, 9);
    check(3, 20, 12);
    check(-1, 0, 0);
}

// The follower's high watermark is the leader's, bounded by its own durable end, and only rises.
#[test]
fn follower_high_watermark() {
    let mut follower = FollowerState::new(NodeId(1), NodeId(0), LeaderEpoch(0), Offset(0), config());
    follower.appended(Offset(8), ends(10, 6));
    assert_eq!(follower.high_watermark(), Offset(6));
    follower.appended(Offset(4), ends(10, 10));
    assert_eq!(follower.high_watermark(), Offset(6));
    follower.truncated(ends(5, 5));
    assert_eq!(follower.high_watermark(), Offset(5));
}

// Roles follow leader epochs: stale images change nothing, a new leader assigns its epoch at its log end.
#[test]
fn replica_roles_from_metadata() {
    let image = image();
    let mut epochs = history(&[(0, 0)]);
    let mut replica = PartitionReplica::new(NodeId(1), BrokerEpoch(1), Offset(0), config());
    let at_zero = partition(&image);
    assert_eq!(
        replica.apply_metadata(ms(0), &at_zero, &image, ends(4, 4), &mut epochs),
        Transition::BecameFollower
    );
    let elected = PartitionImage {
        leader: NodeId(1),
        leader_epoch: LeaderEpoch(1),
        partition_epoch: 1,
        isr: vec![NodeId(1), NodeId(2)],
        ..at_zero.clone()
    };
    assert_eq!(
        replica.apply_metadata(ms(1), &elected, &image, ends(4, 4), &mut epochs),
        Transition::BecameLeader
    );
    assert_eq!(epochs.entries().last(), Some(&(LeaderEpoch(1), Offset(4))));
    assert_eq!(
        replica.apply_metadata(ms(2), &at_zero, &image, ends(4, 4), &mut epochs),
        Transition::Unchanged
    );
    assert!(replica.is_leader());
    let moved =
        PartitionImage { leader: NodeId(2), leader_epoch: LeaderEpoch(2), partition_epoch: 2, ..elected };
    assert_eq!(
        replica.apply_metadata(ms(3), &moved, &image, ends(4, 4), &mut epochs),
        Transition::BecameFollower
    );
}

// A replica never leads an epoch its log already holds: that would write two histories under one epoch.
#[test]
#[should_panic(expected = "already holds epoch")]
fn leading_an_epoch_already_in_the_log_is_a_broken_invariant() {
    let image = image();
    let mut epochs = history(&[(0, 0)]);
    let mut replica = PartitionReplica::new(NodeId(0), BrokerEpoch(1), Offset(0), config());
    replica.apply_metadata(ms(0), &partition(&image), &image, ends(4, 4), &mut epochs);
}

// The controller's AlterPartition checks, case by case.
#[test]
fn alter_partition_validation() {
    let image = image();
    let request = AlterPartitionRequest {
        sequence: 1,
        leader: NodeId(0),
        broker_epoch: BrokerEpoch(1),
        leader_epoch: LeaderEpoch(0),
        partition_epoch: 0,
        isr: vec![NodeId(0), NodeId(1)],
    };
    let check = |request: AlterPartitionRequest, expected: Result<(), AlterPartitionError>| {
        let result = plan_alter_partition(&image, TOPIC, 0, &request).map(|_| ());
        assert_eq!(result, expected, "{request:?}");
    };
    check(request.clone(), Ok(()));
    check(
        AlterPartitionRequest { partition_epoch: 1, ..request.clone() },
        Err(AlterPartitionError::InvalidUpdateVersion),
    );
    check(
        AlterPartitionRequest { leader_epoch: LeaderEpoch(1), ..request.clone() },
        Err(AlterPartitionError::FencedLeaderEpoch),
    );
    check(
        AlterPartitionRequest { broker_epoch: BrokerEpoch(2), ..request.clone() },
        Err(AlterPartitionError::StaleBrokerEpoch),
    );
    check(
        AlterPartitionRequest { isr: vec![NodeId(1)], ..request.clone() },
        Err(AlterPartitionError::InvalidRequest),
    );
    check(
        AlterPartitionRequest { isr: vec![NodeId(0), NodeId(0)], ..request.clone() },
        Err(AlterPartitionError::InvalidRequest),
    );
    let fenced = image
        .apply_batch(4, &[MetadataRecord::FenceBroker { broker: NodeId(2), epoch: BrokerEpoch(1) }])
        .unwrap();
    let shrunk = vec![MetadataRecord::PartitionChange(crate::metadata::PartitionChange {
        topic_id: TOPIC,
        partition: 0,
        leader: NodeId(0),
        isr: vec![NodeId(0)],
        leader_epoch: LeaderEpoch(0),
        partition_epoch: 1,
    })];
    let fenced = fenced.apply_batch(5, &shrunk).unwrap();
    let expand = AlterPartitionRequest { partition_epoch: 1, isr: vec![NodeId(0), NodeId(2)], ..request };
    assert_eq!(
        plan_alter_partition(&fenced, TOPIC, 0, &expand).map(|_| ()),
        Err(AlterPartitionError::IneligibleReplica { replica: NodeId(2) })
    );
}

// The controller answers a repeated proposal with its first answer and an older one as stale, so a duplicate of a
// refused proposal can never be applied after the leader dropped it.
#[test]
fn alter_partition_replies_are_idempotent() {
    let request = AlterPartitionRequest {
        sequence: 2,
        leader: NodeId(0),
        broker_epoch: BrokerEpoch(1),
        leader_epoch: LeaderEpoch(0),
        partition_epoch: 0,
        isr: vec![NodeId(0), NodeId(2)],
    };
    let mut replies = AlterPartitionReplies::default();
    assert_eq!(replies.replay(TOPIC, 0, &request), None);
    let refused = Err(AlterPartitionError::IneligibleReplica { replica: NodeId(2) });
    replies.record(TOPIC, 0, &request, &refused);
    assert_eq!(replies.replay(TOPIC, 0, &request), Some(refused));
    let older = AlterPartitionRequest { sequence: 1, ..request.clone() };
    assert_eq!(replies.replay(TOPIC, 0, &older), Some(Err(AlterPartitionError::InvalidUpdateVersion)));
    let newer = AlterPartitionRequest { sequence: 3, ..request.clone() };
    assert_eq!(replies.replay(TOPIC, 0, &newer), None);
    let next_epoch = AlterPartitionRequest { leader_epoch: LeaderEpoch(1), sequence: 1, ..request };
    assert_eq!(
        replies.replay(TOPIC, 0, &next_epoch),
        None,
        "a new leader epoch numbers its proposals afresh"
    );
}
