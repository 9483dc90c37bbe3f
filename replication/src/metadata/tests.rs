//! The metadata state machine without Raft: the controller's plans applied to images, as the quorum would apply
//! them once committed.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::*;
use crate::types::{LeaderEpoch, NodeId};

/// Applies `records` as the next entry; panics (a test failure) if the image refuses them.
pub(super) fn commit(image: &MetadataImage, records: &[MetadataRecord]) -> MetadataImage {
    image.apply_batch(image.applied_index() + 1, records).unwrap()
}

pub(super) fn registration(broker: i32, rack: Option<&str>) -> BrokerRegistration {
    BrokerRegistration {
        broker: NodeId(broker),
        incarnation: 1000 + broker as u128,
        listeners: vec![Listener { name: "PLAINTEXT".into(), host: "127.0.0.1".into(), port: 9092 }],
        rack: rack.map(String::from),
    }
}

/// Registers and unfences `count` brokers (racks a, b, c in turn).
pub(super) fn cluster(count: i32) -> (MetadataImage, BrokerHeartbeats) {
    let mut image = MetadataImage::empty();
    let mut heartbeats = BrokerHeartbeats::new(Duration::from_secs(9), Duration::ZERO);
    for broker in 0..count {
        let rack = ["a", "b", "c"][broker as usize % 3];
        let records = plan(&image, &AdminRequest::RegisterBroker(registration(broker, Some(rack)))).unwrap();
        image = commit(&image, &records);
    }
    for broker in 0..count {
        let epoch = image.broker(NodeId(broker)).unwrap().epoch;
        let heartbeat = Heartbeat {
            broker: NodeId(broker),
            broker_epoch: epoch,
            metadata_offset: epoch.0,
            want_fence: false,
        };
        let records = heartbeats.heartbeat(&image, Duration::ZERO, &heartbeat).unwrap();
        assert!(matches!(records[0], MetadataRecord::UnfenceBroker { .. }));
        image = commit(&image, &records);
    }
    (image, heartbeats)
}

pub(super) fn create_topic(
    name: &str,
    id: u128,
    partition_count: i32,
    replication_factor: i16,
) -> AdminRequest {
    AdminRequest::CreateTopic {
        name: name.into(),
        id: TopicId(id),
        partition_count,
        replication_factor,
        configs: BTreeMap::from([("retention.ms".into(), "60000".into())]),
        assignment: None,
    }
}

// A topic of 12 partitions over three brokers on three racks: four leaders each, three racks per partition; a
// replication factor above the live brokers is INVALID_REPLICATION_FACTOR; the name cannot be reused.
#[test]
fn create_topic_spreads_leaders() {
    let (image, _) = cluster(3);
    let image = commit(&image, &plan(&image, &create_topic("orders", 1, 12, 3)).unwrap());
    let topic = image.topic_by_name("orders").unwrap();
    assert_eq!(topic.partitions.len(), 12);
    let mut leaders = BTreeMap::new();
    for partition in &topic.partitions {
        *leaders.entry(partition.leader).or_insert(0) += 1;
        assert_eq!(partition.isr, partition.replicas);
        let racks: BTreeSet<_> = partition
            .replicas
            .iter()
            .map(|node| image.broker(*node).unwrap().registration.rack.clone())
            .collect();
        assert_eq!(racks.len(), 3);
    }
    assert_eq!(leaders.values().copied().collect::<Vec<_>>(), [4, 4, 4]);
    assert_eq!(
        plan(&image, &create_topic("more", 2, 1, 4)),
        Err(ControllerError::InvalidReplicationFactor { requested: 4, live_broker_count: 3 })
    );
    assert_eq!(
        plan(&image, &create_topic("orders", 3, 1, 1)),
        Err(ControllerError::TopicAlreadyExists { name: "orders".into() })
    );
    assert!(matches!(
        plan(&image, &create_topic("bad/name", 4, 1, 1)),
        Err(ControllerError::InvalidTopicName { .. })
    ));
}

// Fenced brokers take no new replicas; explicit assignments are honoured; delete, create partitions and config
// changes become the records that do them.
#[test]
fn admin_requests_become_records() {
    let (image, _) = cluster(3);
    let fence = controller::fence_records(&image, NodeId(2));
    let image = commit(&image, &fence);
    assert_eq!(
        plan(&image, &create_topic("t", 1, 1, 3)),
        Err(ControllerError::InvalidReplicationFactor { requested: 3, live_broker_count: 2 })
    );
    let explicit = AdminRequest::CreateTopic {
        name: "t".into(),
        id: TopicId(1),
        partition_count: 2,
        replication_factor: 2,
        configs: BTreeMap::new(),
        assignment: Some(vec![vec![NodeId(2), NodeId(0)], vec![NodeId(0), NodeId(1)]]),
    };
    let image = commit(&image, &plan(&image, &explicit).unwrap());
    assert_eq!(image.topic_by_name("t").unwrap().partitions[0].replicas, [NodeId(2), NodeId(0)]);
    let grow = AdminRequest::CreatePartitions { name: "t".into(), partition_count: 5, assignment: None };
    let image = commit(&image, &plan(&image, &grow).unwrap());
    assert_eq!(image.topic_by_name("t").unwrap().partitions.len(), 5);
    assert!(matches!(
        plan(&image, &grow),
        Err(ControllerError::InvalidPartitions { requested: 5, current: 5 })
    ));
    let alter = AdminRequest::AlterConfigs {
        resource: ConfigResource::Topic("t".into()),
        changes: vec![("cleanup.policy".into(), Some("compact".into()))],
    };
    let image = commit(&image, &plan(&image, &alter).unwrap());
    assert_eq!(image.topic_by_name("t").unwrap().configs["cleanup.policy"], "compact");
    let image = commit(&image, &plan(&image, &AdminRequest::DeleteTopic { name: "t".into() }).unwrap());
    assert!(image.topic_by_name("t").is_none());
    assert!(matches!(
        plan(&image, &AdminRequest::DeleteTopic { name: "t".into() }),
        Err(ControllerError::UnknownTopic { .. })
    ));
}

// Blocks are contiguous and disjoint; a block planned against a stale image (two controllers' worth of
// proposals racing) is refused when applied, so no id is handed out twice.
#[test]
fn producer_id_blocks_never_overlap() {
    let (mut image, _) = cluster(2);
    let mut blocks = Vec::new();
    for broker in [0, 1, 0] {
        let epoch = image.broker(NodeId(broker)).unwrap().epoch;
        let records =
            plan(&image, &AdminRequest::AllocateProducerIds { broker: NodeId(broker), broker_epoch: epoch })
                .unwrap();
        let MetadataRecord::ProducerIds(block) = &records[0] else { panic!("not a block: {records:?}") };
        blocks.push((block.first_producer_id, block.first_producer_id + i64::from(block.size)));
        image = commit(&image, &records);
    }
    assert_eq!(blocks, [(0, 1000), (1000, 2000), (2000, 3000)]);
    let epoch = image.broker(NodeId(0)).unwrap().epoch;
    let request = AdminRequest::AllocateProducerIds { broker: NodeId(0), broker_epoch: epoch };
    let first = plan(&image, &request).unwrap();
    let second = plan(&image, &request).unwrap();
    let image = commit(&image, &first);
    assert_eq!(
        image.apply_batch(image.applied_index() + 1, &second),
        Err(ImageError::ProducerIdsNotContiguous { first: 3000, expected: 4000 })
    );
    let stale =
        AdminRequest::AllocateProducerIds { broker: NodeId(0), broker_epoch: BrokerEpoch(epoch.0 + 1) };
    assert!(matches!(plan(&image, &stale), Err(ControllerError::StaleBrokerEpoch { .. })));
}

// A broker silent for longer than the session is fenced, one at a time, and its partitions move to a live ISR
// member with a new leader epoch; when the last ISR member is fenced the partition goes offline, and it comes back
// led by that member when it returns.
#[test]
fn session_timeout_fences_and_moves_leaders() {
    let (image, mut heartbeats) = cluster(3);
    let image = commit(&image, &plan(&image, &create_topic("t", 1, 3, 2)).unwrap());
    let now = Duration::from_secs(5);
    for broker in [0, 1] {
        let epoch = image.broker(NodeId(broker)).unwrap().epoch;
        let beat = Heartbeat {
            broker: NodeId(broker),
            broker_epoch: epoch,
            metadata_offset: 100,
            want_fence: false,
        };
        assert_eq!(heartbeats.heartbeat(&image, now, &beat).unwrap(), vec![]);
    }
    assert_eq!(heartbeats.expire(&image, Duration::from_secs(9)), vec![]);
    let records = heartbeats.expire(&image, Duration::from_secs(10));
    assert!(matches!(records[0], MetadataRecord::FenceBroker { broker: NodeId(2), .. }));
    let before = image.clone();
    let image = commit(&image, &records);
    for (index, partition) in image.topic_by_name("t").unwrap().partitions.iter().enumerate() {
        let old = &before.topic_by_name("t").unwrap().partitions[index];
        assert_ne!(partition.leader, NodeId(2));
        assert!(!partition.isr.contains(&NodeId(2)));
        if old.leader == NodeId(2) {
            assert_eq!(partition.leader_epoch, LeaderEpoch(1));
        }
    }
    assert_eq!(heartbeats.expire(&image, Duration::from_secs(10)), vec![], "one broker at a time");
    // Fence 0 too: partitions replicated on {0, 2} keep ISR [0] and lose their leader.
    let image = commit(&image, &controller::fence_records(&image, NodeId(0)));
    let offline =
        image.topic_by_name("t").unwrap().partitions.iter().filter(|p| p.leader == NodeId::NONE).count();
    assert!(offline > 0);
    let epoch = image.broker(NodeId(0)).unwrap().epoch;
    let beat =
        Heartbeat { broker: NodeId(0), broker_epoch: epoch, metadata_offset: epoch.0, want_fence: false };
    let image = commit(&image, &heartbeats.heartbeat(&image, now, &beat).unwrap());
    assert!(image.topic_by_name("t").unwrap().partitions.iter().all(|p| p.leader != NodeId::NONE));
}

// Records that break a rule are errors naming the values, never panics, and leave the image unchanged.
#[test]
fn image_refuses_invalid_transitions() {
    let (image, _) = cluster(3);
    let image = commit(&image, &plan(&image, &create_topic("t", 7, 1, 2)).unwrap());
    let partition = image.topic_by_name("t").unwrap().partitions[0].clone();
    let outsider = [0, 1, 2].into_iter().map(NodeId).find(|node| !partition.replicas.contains(node)).unwrap();
    let change = |leader: NodeId, isr: Vec<NodeId>, leader_epoch: i32, partition_epoch: i32| {
        MetadataRecord::PartitionChange(PartitionChange {
            topic_id: TopicId(7),
            partition: 0,
            leader,
            isr,
            leader_epoch: LeaderEpoch(leader_epoch),
            partition_epoch,
        })
    };
    let follower = partition.replicas[1];
    let cases = [
        (change(outsider, vec![outsider], 1, 1), "leader outside the replicas"),
        (change(follower, partition.isr.clone(), 0, 1), "new leader without a new leader epoch"),
        (change(partition.leader, partition.isr.clone(), 0, 0), "partition epoch not moving"),
        (change(partition.leader, partition.isr.clone(), 0, 3), "partition epoch jumping"),
        (change(follower, vec![partition.leader], 1, 1), "leader outside the ISR"),
        (MetadataRecord::RemoveTopic { id: TopicId(99) }, "unknown topic"),
        (MetadataRecord::FenceBroker { broker: NodeId(0), epoch: BrokerEpoch(999) }, "stale broker epoch"),
        (
            MetadataRecord::UnfenceBroker {
                broker: NodeId(0),
                epoch: image.broker(NodeId(0)).unwrap().epoch,
            },
            "no-op",
        ),
    ];
    for (record, what) in cases {
        let result = image.apply_batch(image.applied_index() + 1, std::slice::from_ref(&record));
        assert!(result.is_err(), "{what} was accepted: {record:?}");
    }
    let good = change(follower, partition.isr.clone(), 1, 1);
    let next = commit(&image, &[good]);
    assert_eq!(next.topic_by_name("t").unwrap().partitions[0].leader, follower);
}

// A snapshot of an image decodes to an equal image, and every truncation of it is an error.
#[test]
fn image_snapshot_round_trip() {
    let (image, _) = cluster(3);
    let image = commit(&image, &plan(&image, &create_topic("t", 7, 4, 3)).unwrap());
    let alter = AdminRequest::AlterConfigs {
        resource: ConfigResource::Broker(NodeId(1)),
        changes: vec![("log.retention.ms".into(), Some("5".into()))],
    };
    let image = commit(&image, &plan(&image, &alter).unwrap());
    let bytes = image.encode();
    assert_eq!(MetadataImage::decode(&bytes).unwrap(), image);
    for length in 0..bytes.len() {
        assert!(MetadataImage::decode(&bytes[..length]).is_err());
    }
}
