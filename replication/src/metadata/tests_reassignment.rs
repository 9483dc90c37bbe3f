//! KIP-455 reassignment: start (replicas = target ++ removed, adding/removing recorded), catch-up through the
//! ordinary AlterPartition expansion, completion once the ISR holds the target, cancellation back to the original
//! replicas, the per-partition codes, the image's validation of `ReplicasChange`, and the snapshot formats.

use super::tests::{cluster, commit};
use super::tests_election::{nodes, partition, topic_image, TOPIC};
use super::*;
use crate::partition::{plan_alter_partition, AlterPartitionRequest};
use crate::types::{LeaderEpoch, NodeId};

fn reassign(
    image: &MetadataImage,
    targets: &[(i32, Option<&[i32]>)],
    policy: ElectionPolicy,
) -> PartitionPlan {
    let targets: Vec<ReassignmentTarget> =
        targets.iter().map(|(index, target)| (("t".to_string(), *index), target.map(nodes))).collect();
    plan_alter_reassignments(image, policy, &targets)
}

/// The leader's AlterPartition adding `joining` to the ISR, planned by the controller's ordinary path.
fn expand_isr(image: &MetadataImage, index: i32, joining: i32) -> Vec<MetadataRecord> {
    let current = partition(image, index as usize);
    let mut isr = current.isr.clone();
    isr.push(NodeId(joining));
    let request = AlterPartitionRequest {
        sequence: 0,
        leader: current.leader,
        broker_epoch: image.broker(current.leader).unwrap().epoch,
        leader_epoch: current.leader_epoch,
        partition_epoch: current.partition_epoch,
        isr,
    };
    plan_alter_partition(image, TOPIC, index, &request).unwrap()
}

// The whole life of a reassignment [0,1,2] → [1,2,3]: started with the union and the sets recorded (leader kept,
// leader epoch +1), listed, not completed while 3 catches up, completed once AlterPartition adds 3 to the ISR —
// replicas = target, ISR without 0, the removed leader 0 replaced by 1, leader epoch +1 — and no longer listed.
#[test]
fn reassignment_starts_catches_up_and_completes() {
    let image = topic_image(4, &[&[0, 1, 2]], &[]);
    let planned = reassign(&image, &[(0, Some(&[1, 2, 3]))], ElectionPolicy::default());
    assert_eq!(planned.results, [(("t".to_string(), 0), Ok(()))]);
    let started = ReplicasChange {
        topic_id: TOPIC,
        partition: 0,
        replicas: nodes(&[1, 2, 3, 0]),
        adding_replicas: nodes(&[3]),
        removing_replicas: nodes(&[0]),
        leader: NodeId(0),
        isr: nodes(&[0, 1, 2]),
        leader_epoch: LeaderEpoch(1),
        partition_epoch: 1,
    };
    assert_eq!(planned.records, [MetadataRecord::ReplicasChange(started)]);
    let image = commit(&image, &planned.records);
    let listed = image.partition_reassignments(None);
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].adding_replicas.clone(), listed[0].removing_replicas.clone()),
        (nodes(&[3]), nodes(&[0]))
    );
    assert_eq!(
        image.partition_reassignments(Some(&[("t".into(), 0), ("t".into(), 5), ("x".into(), 0)])),
        listed
    );
    assert!(complete_reassignments(&image).is_empty(), "3 is not in the ISR yet");
    let expansion = expand_isr(&image, 0, 3);
    let image = commit(&image, &expansion);
    let completion = complete_reassignments_after(&image, &expansion);
    assert_eq!(completion, complete_reassignments(&image));
    let done = ReplicasChange {
        topic_id: TOPIC,
        partition: 0,
        replicas: nodes(&[1, 2, 3]),
        adding_replicas: vec![],
        removing_replicas: vec![],
        leader: NodeId(1),
        isr: nodes(&[1, 2, 3]),
        leader_epoch: LeaderEpoch(2),
        partition_epoch: 3,
    };
    assert_eq!(completion, [MetadataRecord::ReplicasChange(done)]);
    let image = commit(&image, &completion);
    assert!(!partition(&image, 0).is_reassigning());
    assert!(image.partition_reassignments(None).is_empty());
    assert!(complete_reassignments(&image).is_empty());
}

// A target the ISR already covers (a pure removal, or a reorder) completes in the starting record; the same target
// again changes nothing.
#[test]
fn covered_target_completes_at_once() {
    let image = topic_image(3, &[&[0, 1, 2], &[0, 1, 2]], &[]);
    let planned = reassign(&image, &[(0, Some(&[2, 1])), (1, Some(&[2, 1, 0]))], ElectionPolicy::default());
    let image = commit(&image, &planned.records);
    let shrunk = partition(&image, 0);
    assert_eq!(
        (shrunk.replicas.clone(), shrunk.isr.clone(), shrunk.leader),
        (nodes(&[2, 1]), nodes(&[1, 2]), NodeId(2))
    );
    assert!(!shrunk.is_reassigning());
    let reordered = partition(&image, 1);
    assert_eq!((reordered.replicas.clone(), reordered.leader), (nodes(&[2, 1, 0]), NodeId(0)));
    let again = reassign(&image, &[(0, Some(&[2, 1])), (1, Some(&[2, 1, 0]))], ElectionPolicy::default());
    assert!(again.records.is_empty());
    assert!(again.results.iter().all(|(_, result)| result.is_ok()));
}

// Per-partition codes: empty, repeating or unregistered targets and a partition named twice are
// INVALID_REPLICA_ASSIGNMENT (39); a cancellation of nothing NO_REASSIGNMENT_IN_PROGRESS (85); unknown partitions
// UNKNOWN_TOPIC_OR_PARTITION (3). The valid entries still go ahead.
#[test]
fn reassignment_results_carry_kafka_codes() {
    let image = topic_image(3, &[&[0, 1], &[1, 2]], &[]);
    let targets: Vec<ReassignmentTarget> = vec![
        (("t".into(), 0), Some(vec![])),
        (("t".into(), 0), Some(nodes(&[0, 0]))),
        (("t".into(), 1), None),
        (("t".into(), 1), Some(nodes(&[1, 2]))),
        (("t".into(), 2), Some(nodes(&[0]))),
        (("u".into(), 0), Some(nodes(&[0]))),
    ];
    let planned = plan_alter_reassignments(&image, ElectionPolicy::default(), &targets);
    let codes: Vec<i16> =
        planned.results.iter().map(|(_, result)| result.as_ref().err().map_or(0, |e| e.code())).collect();
    assert_eq!(codes, [39, 39, 85, 39, 3, 3]);
    assert!(planned.records.is_empty());
    let ok = reassign(&image, &[(0, Some(&[0, 2])), (1, Some(&[0, 9]))], ElectionPolicy::default());
    assert_eq!(ok.records.len(), 1);
    assert!(ok.results[0].1.is_ok() && ok.results[1].1.as_ref().is_err_and(|error| error.code() == 39));
}

// Cancelling restores the original replicas and drops the added ones from the ISR; a new target replaces a running
// one against the original replicas, and its repeat changes nothing.
#[test]
fn cancel_and_replace_work_from_the_original_replicas() {
    let image = topic_image(5, &[&[0, 1, 2]], &[]);
    let image =
        commit(&image, &reassign(&image, &[(0, Some(&[0, 1, 3]))], ElectionPolicy::default()).records);
    let image = commit(&image, &expand_isr(&image, 0, 3));
    // The target is in the ISR, but the controller has not proposed the completion yet when the new target comes.
    assert!(!complete_reassignments(&image).is_empty());
    let replaced = reassign(&image, &[(0, Some(&[0, 1, 4]))], ElectionPolicy::default());
    let image = commit(&image, &replaced.records);
    let running = partition(&image, 0);
    assert_eq!(running.replicas, nodes(&[0, 1, 4, 2]));
    assert_eq!(
        (running.adding_replicas.clone(), running.removing_replicas.clone()),
        (nodes(&[4]), nodes(&[2]))
    );
    assert_eq!(running.isr, nodes(&[0, 1, 2]), "3 left with the target that added it");
    assert!(reassign(&image, &[(0, Some(&[0, 1, 4]))], ElectionPolicy::default()).records.is_empty());
    let cancelled = reassign(&image, &[(0, None)], ElectionPolicy::default());
    let image = commit(&image, &cancelled.records);
    let reverted = partition(&image, 0);
    assert_eq!((reverted.replicas.clone(), reverted.isr.clone()), (nodes(&[0, 1, 2]), nodes(&[0, 1, 2])));
    assert!(!reverted.is_reassigning());
    assert_eq!(
        reassign(&image, &[(0, None)], ElectionPolicy::default()).results[0].1,
        Err(PartitionError::NoReassignmentInProgress)
    );
}

// A cancellation that would leave no ISR (only added replicas are in sync) needs an unclean election: refused
// unless the policy allows it, and then the first original replica is the ISR (Kafka's PartitionReassignmentRevert).
#[test]
fn cancel_needing_an_unclean_election_follows_the_policy() {
    let image = topic_image(3, &[&[0]], &[]);
    let image = commit(&image, &reassign(&image, &[(0, Some(&[1, 2]))], ElectionPolicy::default()).records);
    let image = commit(&image, &expand_isr(&image, 0, 1));
    let image = commit(&image, &controller::fence_records(&image, NodeId(0)));
    assert_eq!((partition(&image, 0).leader, partition(&image, 0).isr), (NodeId(1), nodes(&[1])));
    // A new target without 1 would leave no ISR member either: refused whatever the policy.
    let replaced = reassign(&image, &[(0, Some(&[0, 2]))], ElectionPolicy { unclean_default: true });
    assert!(replaced.records.is_empty());
    assert!(replaced.results[0].1.as_ref().is_err_and(|error| error.code() == 39));
    let refused = reassign(&image, &[(0, None)], ElectionPolicy::default());
    assert!(refused.records.is_empty());
    assert!(refused.results[0].1.as_ref().is_err_and(|error| error.code() == 39));
    let allowed = reassign(&image, &[(0, None)], ElectionPolicy { unclean_default: true });
    let image = commit(&image, &allowed.records);
    let reverted = partition(&image, 0);
    assert_eq!(
        (reverted.replicas.clone(), reverted.isr.clone(), reverted.leader),
        (nodes(&[0]), nodes(&[0]), NodeId::NONE)
    );
}

// The image refuses a `ReplicasChange` that breaks a rule, and accepts an ordinary ISR change mid-reassignment.
#[test]
fn image_refuses_invalid_replicas_changes() {
    let image = topic_image(4, &[&[0, 1, 2]], &[]);
    let valid = ReplicasChange {
        topic_id: TOPIC,
        partition: 0,
        replicas: nodes(&[1, 2, 3, 0]),
        adding_replicas: nodes(&[3]),
        removing_replicas: nodes(&[0]),
        leader: NodeId(0),
        isr: nodes(&[0, 1, 2]),
        leader_epoch: LeaderEpoch(1),
        partition_epoch: 1,
    };
    let cases = [
        (
            ReplicasChange { leader_epoch: LeaderEpoch(0), ..valid.clone() },
            "replicas changed, leader epoch kept",
        ),
        (ReplicasChange { partition_epoch: 2, ..valid.clone() }, "partition epoch jumping"),
        (ReplicasChange { adding_replicas: nodes(&[3, 9]), ..valid.clone() }, "adding outside the replicas"),
        (ReplicasChange { removing_replicas: nodes(&[3]), ..valid.clone() }, "adding and removing overlap"),
        (
            ReplicasChange {
                removing_replicas: nodes(&[1, 2, 3, 0]),
                adding_replicas: vec![],
                ..valid.clone()
            },
            "removing every replica",
        ),
        (ReplicasChange { removing_replicas: nodes(&[0, 0]), ..valid.clone() }, "removing repeats a broker"),
        (ReplicasChange { leader: NodeId(3), ..valid.clone() }, "leader outside the ISR"),
        (ReplicasChange { isr: nodes(&[0, 5]), ..valid.clone() }, "ISR outside the replicas"),
        (
            ReplicasChange { replicas: nodes(&[1, 2, 9, 0]), adding_replicas: nodes(&[9]), ..valid.clone() },
            "unregistered replica",
        ),
        (ReplicasChange { partition: 1, ..valid.clone() }, "unknown partition"),
    ];
    for (change, what) in cases {
        let record = MetadataRecord::ReplicasChange(change);
        let result = image.apply_batch(image.applied_index() + 1, std::slice::from_ref(&record));
        assert!(result.is_err(), "{what} was accepted: {record:?}");
    }
    let image = commit(&image, &[MetadataRecord::ReplicasChange(valid)]);
    let image = commit(&image, &expand_isr(&image, 0, 3));
    assert_eq!(partition(&image, 0).isr, nodes(&[0, 1, 2, 3]));
}

// Snapshots: an image with a running reassignment round trips in format 2, and a format-1 snapshot (bytes
// captured from the encoder at commit 23b1052, before reassignment existed) decodes to the same image as today's
// code builds, with no reassignment.
#[test]
fn snapshot_formats() {
    let image = topic_image(4, &[&[0, 1, 2]], &[]);
    let image =
        commit(&image, &reassign(&image, &[(0, Some(&[1, 2, 3]))], ElectionPolicy::default()).records);
    assert_eq!(MetadataImage::decode(&image.encode()).unwrap(), image);
    let hex =
        "01000000000000000500000000000000000000000200000000000000000000000000000000000003e800000001000950\
               4c41494e5445585400093132372e302e302e3123840100016100000000000000010000000001000000000000000000\
               000000000003e9000000010009504c41494e5445585400093132372e302e302e312384010001620000000000000002\
               0000000000000000010001740000000000000000000000000000000700000000000000010000000200000001000000\
               00000000020000000100000000000000010000000000000000";
    let old: Vec<u8> =
        (0..hex.len()).step_by(2).map(|at| u8::from_str_radix(&hex[at..at + 2], 16).unwrap()).collect();
    let (expected, _) = cluster(2);
    let request = AdminRequest::CreateTopic {
        name: "t".into(),
        id: TOPIC,
        partition_count: 1,
        replication_factor: 2,
        configs: Default::default(),
        assignment: Some(vec![nodes(&[1, 0])]),
    };
    let expected = commit(&expected, &plan(&expected, &request).unwrap());
    assert_eq!(MetadataImage::decode(&old).unwrap(), expected);
    assert_ne!(expected.encode(), old, "today's snapshots are format 2");
    assert_eq!(MetadataImage::decode(&expected.encode()).unwrap(), expected);
}
