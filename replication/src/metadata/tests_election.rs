//! Elections beyond fencing's ISR rule: unclean elections under `unclean.leader.election.enable`, ElectLeaders
//! (PREFERRED and UNCLEAN, with Kafka's per-partition codes), the preferred-leader rebalance and the repair of
//! leaderless partitions. Every plan is committed to show the image accepts it.

use std::time::Duration;

use super::tests::{cluster, commit};
use super::*;
use crate::types::{LeaderEpoch, NodeId};

pub(super) const TOPIC: TopicId = TopicId(7);

/// A cluster of `broker_count` brokers with topic "t" (id 7) of the given replica lists and configs.
pub(super) fn topic_image(broker_count: i32, lists: &[&[i32]], configs: &[(&str, &str)]) -> MetadataImage {
    let (image, _) = cluster(broker_count);
    let request = AdminRequest::CreateTopic {
        name: "t".into(),
        id: TOPIC,
        partition_count: lists.len() as i32,
        replication_factor: lists[0].len() as i16,
        configs: configs.iter().map(|(key, value)| (key.to_string(), value.to_string())).collect(),
        assignment: Some(lists.iter().map(|list| list.iter().map(|&node| NodeId(node)).collect()).collect()),
    };
    commit(&image, &plan(&image, &request).unwrap())
}

pub(super) fn partition(image: &MetadataImage, index: usize) -> PartitionImage {
    image.topic(TOPIC).unwrap().partitions[index].clone()
}

/// Commits a change of partition `index` to `leader` and `isr` with the right epochs.
pub(super) fn set_leader(image: &MetadataImage, index: i32, leader: i32, isr: &[i32]) -> MetadataImage {
    let current = partition(image, index as usize);
    let leader = NodeId(leader);
    let leader_epoch =
        if leader == current.leader { current.leader_epoch } else { current.leader_epoch.next() };
    let change = PartitionChange {
        topic_id: TOPIC,
        partition: index,
        leader,
        isr: isr.iter().map(|&node| NodeId(node)).collect(),
        leader_epoch,
        partition_epoch: current.partition_epoch + 1,
    };
    commit(image, &[MetadataRecord::PartitionChange(change)])
}

pub(super) fn nodes(list: &[i32]) -> Vec<NodeId> {
    list.iter().map(|&node| NodeId(node)).collect()
}

// Fencing the last ISR member: leaderless with ISR kept unless the topic (or, without a topic setting, the
// broker-wide default) allows an unclean election, which elects the first live replica with ISR = [it] and a new
// leader epoch.
#[test]
fn fencing_the_last_isr_member_elects_uncleanly_only_when_allowed() {
    let cases = [
        (None, false, None),
        (None, true, Some(1)),
        (Some("false"), true, None),
        (Some("true"), false, Some(1)),
        (Some("TRUE"), false, Some(1)),
    ];
    for (topic_setting, unclean_default, elected) in cases {
        let configs: Vec<(&str, &str)> =
            topic_setting.map(|value| (UNCLEAN_LEADER_ELECTION_ENABLE, value)).into_iter().collect();
        let image = topic_image(3, &[&[0, 1, 2]], &configs);
        let image = set_leader(&image, 0, 0, &[0]);
        let policy = ElectionPolicy { unclean_default };
        let image = commit(&image, &controller::fence_records_with(&image, NodeId(0), policy));
        let after = partition(&image, 0);
        let case = format!("topic {topic_setting:?}, default {unclean_default}");
        match elected {
            None => {
                assert_eq!((after.leader, after.isr.clone()), (NodeId::NONE, nodes(&[0])), "{case}");
                assert_eq!(after.leader_epoch, LeaderEpoch(1), "{case}");
            }
            Some(node) => {
                assert_eq!((after.leader, after.isr.clone()), (NodeId(node), nodes(&[node])), "{case}");
                assert_eq!(after.leader_epoch, LeaderEpoch(1), "{case}");
            }
        }
    }
    // A malformed value (refused by the controller, but a record is a record) reads as false, not as the default.
    let topic = TopicImage {
        name: "t".into(),
        id: TOPIC,
        configs: [(UNCLEAN_LEADER_ELECTION_ENABLE.to_string(), "yes".to_string())].into(),
        partitions: Vec::new(),
    };
    assert!(!ElectionPolicy { unclean_default: true }.unclean_enabled(&topic));
    // The compatible `fence_records` never elects uncleanly, whatever the broker default would be.
    let image = topic_image(3, &[&[0, 1, 2]], &[]);
    let image = set_leader(&image, 0, 0, &[0]);
    let image = commit(&image, &controller::fence_records(&image, NodeId(0)));
    assert_eq!(partition(&image, 0).leader, NodeId::NONE);
}

// An unclean election skips fenced replicas; with none live the partition stays leaderless.
#[test]
fn unclean_election_takes_only_live_replicas() {
    let image = topic_image(3, &[&[0, 1, 2]], &[(UNCLEAN_LEADER_ELECTION_ENABLE, "true")]);
    let image = set_leader(&image, 0, 0, &[0]);
    let image = commit(&image, &controller::fence_records(&image, NodeId(1)));
    let policy = ElectionPolicy::default();
    let image = commit(&image, &controller::fence_records_with(&image, NodeId(0), policy));
    assert_eq!((partition(&image, 0).leader, partition(&image, 0).isr), (NodeId(2), nodes(&[2])));
    let image = commit(&image, &controller::fence_records_with(&image, NodeId(2), policy));
    assert_eq!((partition(&image, 0).leader, partition(&image, 0).isr), (NodeId::NONE, nodes(&[2])));
}

// A replica outside the ISR returning to a leaderless partition leads it (ISR = [it]) only under the unclean
// policy; an ISR member returning leads it in any case, keeping the ISR.
#[test]
fn unfencing_elects_a_returning_replica() {
    for unclean_default in [false, true] {
        let (_, mut heartbeats) = cluster(2);
        heartbeats.set_election_policy(ElectionPolicy { unclean_default });
        let image = topic_image(2, &[&[0, 1]], &[]);
        let image = set_leader(&image, 0, 0, &[0]);
        let image = commit(&image, &controller::fence_records(&image, NodeId(1)));
        let image = commit(&image, &controller::fence_records(&image, NodeId(0)));
        assert_eq!(partition(&image, 0).leader, NodeId::NONE);
        let beat = |image: &MetadataImage, broker: i32| {
            let epoch = image.broker(NodeId(broker)).unwrap().epoch;
            Heartbeat {
                broker: NodeId(broker),
                broker_epoch: epoch,
                metadata_offset: epoch.0,
                want_fence: false,
            }
        };
        let now = Duration::from_secs(1);
        let records = heartbeats.heartbeat(&image, now, &beat(&image, 1)).unwrap();
        let image = commit(&image, &records);
        let after = partition(&image, 0);
        if unclean_default {
            assert_eq!((after.leader, after.isr), (NodeId(1), nodes(&[1])));
        } else {
            assert_eq!((after.leader, after.isr), (NodeId::NONE, nodes(&[0])));
            let image = commit(&image, &heartbeats.heartbeat(&image, now, &beat(&image, 0)).unwrap());
            assert_eq!((partition(&image, 0).leader, partition(&image, 0).isr), (NodeId(0), nodes(&[0])));
        }
    }
}

fn elect(image: &MetadataImage, election: ElectionType, partitions: Option<&[(&str, i32)]>) -> PartitionPlan {
    let partitions =
        partitions.map(|list| list.iter().map(|(topic, index)| (topic.to_string(), *index)).collect());
    plan_elect_leaders(image, &ElectLeadersRequest { election, partitions })
}

fn codes(plan: &PartitionPlan) -> Vec<(i32, i16)> {
    plan.results
        .iter()
        .map(|((_, index), result)| (*index, result.as_ref().err().map_or(0, |e| e.code())))
        .collect()
}

// PREFERRED: the first replica leads if it is in the ISR and live (leader epoch +1, ISR kept); already leading is
// ELECTION_NOT_NEEDED (84); outside the ISR, or fenced, PREFERRED_LEADER_NOT_AVAILABLE (80); unknown partitions
// UNKNOWN_TOPIC_OR_PARTITION (3); a partition named twice is elected once.
#[test]
fn elect_leaders_preferred() {
    let image = topic_image(3, &[&[0, 1, 2], &[1, 2, 0], &[2, 0, 1], &[0, 1, 2]], &[]);
    let image = set_leader(&image, 0, 1, &[0, 1, 2]);
    let image = set_leader(&image, 2, 0, &[0, 1]);
    let image = set_leader(&image, 3, 1, &[1, 2]);
    let named = [("t", 0), ("t", 1), ("t", 2), ("t", 0), ("t", 9), ("nope", 0), ("t", -1)];
    let planned = elect(&image, ElectionType::Preferred, Some(&named));
    assert_eq!(codes(&planned), [(0, 0), (1, 84), (2, 80), (9, 3), (0, 3), (-1, 3)]);
    assert_eq!(planned.results[4].0, ("nope".to_string(), 0));
    let expected = PartitionChange {
        topic_id: TOPIC,
        partition: 0,
        leader: NodeId(0),
        isr: nodes(&[0, 1, 2]),
        leader_epoch: LeaderEpoch(2),
        partition_epoch: 2,
    };
    assert_eq!(planned.records, [MetadataRecord::PartitionChange(expected)]);
    let image = commit(&image, &planned.records);
    assert_eq!(partition(&image, 0).leader, NodeId(0));
    // Every partition: those needing no election are left out of the results.
    let all = elect(&image, ElectionType::Preferred, None);
    assert_eq!(codes(&all), [(2, 80), (3, 80)]);
    assert!(all.records.is_empty());
    // A preferred replica that is the fenced last ISR member is not available either.
    let image = set_leader(&image, 1, 1, &[1]);
    let image = commit(&image, &controller::fence_records(&image, NodeId(1)));
    assert_eq!(codes(&elect(&image, ElectionType::Preferred, Some(&[("t", 1)]))), [(1, 80)]);
}

// UNCLEAN: only for a partition without a leader (else ELECTION_NOT_NEEDED); a live ISR member first, else the
// first live replica with ISR = [it], whatever the topic's setting; none live is ELIGIBLE_LEADERS_NOT_AVAILABLE.
#[test]
fn elect_leaders_unclean() {
    let image = topic_image(3, &[&[0, 2], &[0, 1], &[1, 0]], &[]);
    let image = set_leader(&image, 0, 0, &[0]);
    let image = set_leader(&image, 1, 0, &[0]);
    let image = commit(&image, &controller::fence_records(&image, NodeId(0)));
    let image = commit(&image, &controller::fence_records(&image, NodeId(1)));
    // Partition 0 [0,2] ISR [0]: 2 is live. Partition 1 [0,1] ISR [0]: nobody live. Partition 2: ISR [1], fenced.
    for index in 0..3 {
        assert_eq!(partition(&image, index).leader, NodeId::NONE);
    }
    let planned = elect(&image, ElectionType::Unclean, Some(&[("t", 0), ("t", 1), ("t", 2)]));
    assert_eq!(codes(&planned), [(0, 0), (1, 83), (2, 83)]);
    let image = commit(&image, &planned.records);
    assert_eq!((partition(&image, 0).leader, partition(&image, 0).isr), (NodeId(2), nodes(&[2])));
    assert_eq!(codes(&elect(&image, ElectionType::Unclean, Some(&[("t", 0)]))), [(0, 84)]);
    assert_eq!(ElectionType::from_code(1), Some(ElectionType::Unclean));
    assert_eq!(ElectionType::from_code(2), None);
}

// Kafka's per-broker rule: a broker whose preferred partitions are led elsewhere for more than
// leader.imbalance.per.broker.percentage of them gets them back — only where it is in the ISR and live, at most
// `election_count_max` per call; exactly 10% is not over 10%.
#[test]
fn rebalance_moves_leaders_back_past_the_threshold() {
    let mut lists: Vec<&[i32]> = vec![&[0, 1, 2][..]; 10];
    lists.extend(vec![&[1, 2, 0][..]; 10]);
    let image = topic_image(3, &lists, &[]);
    let image = set_leader(&image, 0, 1, &[0, 1, 2]); // broker 0: 1 of 10 elsewhere, 10%
    let image = set_leader(&image, 10, 2, &[0, 1, 2]); // broker 1: 3 of 10 elsewhere, one not movable
    let image = set_leader(&image, 11, 0, &[0, 1, 2]);
    let image = set_leader(&image, 12, 2, &[2, 0]);
    let config = LeaderRebalanceConfig::default();
    let records = rebalance_leaders(&image, &config);
    let moved: Vec<(i32, NodeId)> = records
        .iter()
        .map(|record| match record {
            MetadataRecord::PartitionChange(change) => (change.partition, change.leader),
            other => panic!("not a partition change: {other:?}"),
        })
        .collect();
    assert_eq!(moved, [(10, NodeId(1)), (11, NodeId(1))]);
    let image = commit(&image, &records);
    assert!(rebalance_leaders(&image, &config).is_empty(), "broker 1 is at 10% now");
    let strict =
        LeaderRebalanceConfig { imbalance_per_broker_percentage: 0, election_count_max: 1, ..config };
    let records = rebalance_leaders(&image, &strict);
    assert!(matches!(&records[..], [MetadataRecord::PartitionChange(change)] if change.partition == 0));
    let disabled = LeaderRebalanceConfig { enabled: false, ..strict };
    assert!(rebalance_leaders(&image, &disabled).is_empty());
}

// `unclean.leader.election.enable` must be a boolean (INVALID_CONFIG otherwise), at creation and when altered;
// removing the override is always allowed.
#[test]
fn unclean_setting_must_be_a_boolean() {
    let (image, _) = cluster(1);
    let create = |value: &str| AdminRequest::CreateTopic {
        name: "t".into(),
        id: TOPIC,
        partition_count: 1,
        replication_factor: 1,
        configs: [(UNCLEAN_LEADER_ELECTION_ENABLE.to_string(), value.to_string())].into(),
        assignment: None,
    };
    assert!(plan(&image, &create(" True ")).is_ok());
    let refused = Err(ControllerError::InvalidConfig { key: UNCLEAN_LEADER_ELECTION_ENABLE.into() });
    assert_eq!(plan(&image, &create("yes")), refused);
    let image = topic_image(1, &[&[0]], &[]);
    let alter = |value: Option<&str>| AdminRequest::AlterConfigs {
        resource: ConfigResource::Topic("t".into()),
        changes: vec![(UNCLEAN_LEADER_ELECTION_ENABLE.into(), value.map(String::from))],
    };
    assert_eq!(plan(&image, &alter(Some("1"))), refused);
    assert!(plan(&image, &alter(Some("false"))).is_ok());
    assert!(plan(&image, &alter(None)).is_ok());
}

// A leaderless partition left by a policy that forbade unclean elections is repaired once the topic allows them.
#[test]
fn leaderless_partitions_elect_after_the_policy_changes() {
    let image = topic_image(2, &[&[0, 1]], &[]);
    let image = set_leader(&image, 0, 0, &[0]);
    let image = commit(&image, &controller::fence_records(&image, NodeId(0)));
    assert!(elect_leaderless(&image, ElectionPolicy::default(), 100).is_empty());
    let alter = AdminRequest::AlterConfigs {
        resource: ConfigResource::Topic("t".into()),
        changes: vec![(UNCLEAN_LEADER_ELECTION_ENABLE.into(), Some("true".into()))],
    };
    let image = commit(&image, &plan(&image, &alter).unwrap());
    let records = elect_leaderless(&image, ElectionPolicy::default(), 100);
    let image = commit(&image, &records);
    assert_eq!((partition(&image, 0).leader, partition(&image, 0).isr), (NodeId(1), nodes(&[1])));
    assert!(elect_leaderless(&image, ElectionPolicy::default(), 100).is_empty());
}

// One ElectLeaders plan changes at most PARTITION_PLAN_RECORD_COUNT_MAX partitions, so it fits one batch; the rest
// are answered REQUEST_TIMED_OUT (7, retriable) and elected by a retry against the next image.
#[test]
fn elect_leaders_is_bounded_to_one_batch() {
    let (mut image, _) = cluster(2);
    let mut moves = Vec::new();
    for (name, id) in [("a", 1), ("b", 2)] {
        let request = AdminRequest::CreateTopic {
            name: name.into(),
            id: TopicId(id),
            partition_count: 6_000,
            replication_factor: 2,
            configs: Default::default(),
            assignment: Some(vec![nodes(&[0, 1]); 6_000]),
        };
        image = commit(&image, &plan(&image, &request).unwrap());
        moves.extend((0..6_000).map(|partition| {
            MetadataRecord::PartitionChange(PartitionChange {
                topic_id: TopicId(id),
                partition,
                leader: NodeId(1),
                isr: nodes(&[0, 1]),
                leader_epoch: LeaderEpoch(1),
                partition_epoch: 1,
            })
        }));
    }
    let image = commit(&image, &moves);
    let planned = elect(&image, ElectionType::Preferred, None);
    assert_eq!(planned.records.len(), PARTITION_PLAN_RECORD_COUNT_MAX);
    assert_eq!(planned.results.len(), 12_000);
    let deferred =
        planned.results.iter().filter(|(_, result)| result == &Err(PartitionError::Deferred)).count();
    assert_eq!(deferred, 12_000 - PARTITION_PLAN_RECORD_COUNT_MAX);
    assert_eq!(decode_batch(&encode_batch(&planned.records)).unwrap(), planned.records);
    let image = commit(&image, &planned.records);
    let retry = elect(&image, ElectionType::Preferred, None);
    assert_eq!(retry.records.len(), 12_000 - PARTITION_PLAN_RECORD_COUNT_MAX);
    assert!(retry.results.iter().all(|(_, result)| result.is_ok()));
}
