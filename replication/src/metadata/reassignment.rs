//! Partition reassignment (KIP-455: AlterPartitionReassignments, API 45; ListPartitionReassignments, API 46), after
//! KRaft's `ReplicationControlManager`, `PartitionReassignmentReplicas` and `PartitionReassignmentRevert`, with one
//! deviation (step 1).
//!
//! 1. Start: with the original replicas O (the replicas but those a running reassignment is adding), a target T
//!    becomes `replicas = T ++ (O − T)`, `adding = T − O`, `removing = O − T`, recorded in the partition image (a
//!    `ReplicasChange`, leader epoch +1 so the leader starts tracking its new followers). A new target while one
//!    runs replaces it and is taken against O too (KIP-455: O is what a cancellation restores, so it must survive
//!    a change of mind; KRaft takes it against the current replicas instead, which makes the earlier target's
//!    additions "original"). Replicas the earlier target was adding that the new one does not name leave the
//!    replicas and the ISR at once; a new target that would leave no ISR member is refused (39). Submitting the
//!    running target again changes nothing.
//! 2. Catch-up: the new replicas fetch like any follower and join the ISR through the leader's ordinary
//!    AlterPartition expansion (`partition::plan_alter_partition`, unchanged).
//! 3. Completion: once the ISR holds every target replica, `replicas = T`, `ISR = ISR − removing`, and a removed
//!    leader is replaced by the first target replica in the ISR that is live (leader epoch +1). The active
//!    controller asks for completions after every applied batch (`complete_reassignments_after`). A target the
//!    ISR already covers completes in the starting record itself.
//! 4. Cancel (target None): back to the original replicas (`replicas − adding`), `ISR − adding`; if that leaves no
//!    ISR, Kafka's `PartitionReassignmentRevert` makes the first original replica the ISR, an unclean election,
//!    refused unless the topic allows unclean elections.

use std::collections::BTreeSet;

use crate::metadata::election::{
    is_live, partition_named, ElectionPolicy, PartitionError, PartitionPlan, PARTITION_PLAN_RECORD_COUNT_MAX,
};
use crate::metadata::image::{MetadataImage, PartitionImage};
use crate::metadata::records::{MetadataRecord, ReplicasChange, TopicId};
use crate::types::NodeId;

/// One partition's entry in AlterPartitionReassignments: `Some(target replicas)` to reassign, `None` to cancel.
pub type ReassignmentTarget = ((String, i32), Option<Vec<NodeId>>);

/// The records and per-partition results of AlterPartitionReassignments against `image`. A partition named twice
/// is answered INVALID_REPLICA_ASSIGNMENT the second time; `policy` decides whether a cancellation that needs an
/// unclean election is allowed.
pub fn plan_alter_reassignments(
    image: &MetadataImage,
    policy: ElectionPolicy,
    targets: &[ReassignmentTarget],
) -> PartitionPlan {
    let mut plan = PartitionPlan::default();
    let mut seen = BTreeSet::new();
    for ((topic_name, index), target) in targets {
        let key = (topic_name.clone(), *index);
        let result = if !seen.insert(key.clone()) {
            Err(PartitionError::InvalidReplicaAssignment { reason: "the partition is named twice".into() })
        } else {
            match partition_named(image, topic_name, *index) {
                None => Err(PartitionError::UnknownTopicOrPartition),
                Some((topic, partition)) => {
                    let unclean = policy.unclean_enabled(topic);
                    match reassign(image, (topic.id, *index), partition, target.as_deref(), unclean) {
                        Ok(Some(_)) if plan.records.len() >= PARTITION_PLAN_RECORD_COUNT_MAX => {
                            Err(PartitionError::Deferred)
                        }
                        Ok(Some(change)) => {
                            plan.records.push(MetadataRecord::ReplicasChange(change));
                            Ok(())
                        }
                        Ok(None) => Ok(()),
                        Err(error) => Err(error),
                    }
                }
            }
        };
        plan.results.push((key, result));
    }
    plan
}

/// The change carrying out one partition's entry, `None` if it changes nothing.
fn reassign(
    image: &MetadataImage,
    key: (TopicId, i32),
    partition: &PartitionImage,
    target: Option<&[NodeId]>,
    unclean: bool,
) -> Result<Option<ReplicasChange>, PartitionError> {
    let Some(target) = target else { return cancel(image, key, partition, unclean).map(Some) };
    check_target(image, target)?;
    let original = partition.original_replicas();
    let removing: Vec<NodeId> = original.iter().copied().filter(|node| !target.contains(node)).collect();
    let adding: Vec<NodeId> = target.iter().copied().filter(|node| !original.contains(node)).collect();
    let replicas: Vec<NodeId> = target.iter().chain(&removing).copied().collect();
    let unchanged = replicas == partition.replicas
        && adding == partition.adding_replicas
        && removing == partition.removing_replicas;
    if unchanged {
        return Ok(None);
    }
    let isr: Vec<NodeId> = partition.isr.iter().copied().filter(|node| replicas.contains(node)).collect();
    if isr.is_empty() {
        return Err(PartitionError::InvalidReplicaAssignment {
            reason: format!("replicas {replicas:?} would keep none of ISR {:?}", partition.isr),
        });
    }
    let started = Assignment { replicas, adding, removing, isr };
    let assignment = started.completed().unwrap_or(started);
    Ok(Some(assignment.change(image, key, partition)))
}

fn cancel(
    image: &MetadataImage,
    key: (TopicId, i32),
    partition: &PartitionImage,
    unclean: bool,
) -> Result<ReplicasChange, PartitionError> {
    if !partition.is_reassigning() {
        return Err(PartitionError::NoReassignmentInProgress);
    }
    let replicas = partition.original_replicas();
    let mut isr: Vec<NodeId> =
        partition.isr.iter().copied().filter(|node| !partition.adding_replicas.contains(node)).collect();
    if isr.is_empty() {
        if !unclean {
            return Err(PartitionError::InvalidReplicaAssignment {
                reason: format!(
                    "cancelling leaves none of ISR {:?} among replicas {replicas:?}: an unclean election, which \
                     the topic does not allow",
                    partition.isr
                ),
            });
        }
        let first_live = replicas.iter().copied().find(|&node| is_live(image, node));
        isr = first_live.or(replicas.first().copied()).into_iter().collect();
    }
    let assignment = Assignment { replicas, adding: Vec::new(), removing: Vec::new(), isr };
    Ok(assignment.change(image, key, partition))
}

/// Target replicas are at least one distinct registered broker (fenced ones are allowed: they catch up when back).
fn check_target(image: &MetadataImage, target: &[NodeId]) -> Result<(), PartitionError> {
    let invalid = |reason: String| Err(PartitionError::InvalidReplicaAssignment { reason });
    if target.is_empty() {
        return invalid("no target replicas".into());
    }
    if target.iter().collect::<BTreeSet<_>>().len() != target.len() {
        return invalid(format!("target {target:?} repeats a broker"));
    }
    if let Some(unknown) = target.iter().find(|&&node| image.broker(node).is_none()) {
        return invalid(format!("target {target:?} names unregistered {unknown}"));
    }
    Ok(())
}

/// A partition's replica sets and ISR after a reassignment step, before its leader is chosen.
struct Assignment {
    replicas: Vec<NodeId>,
    adding: Vec<NodeId>,
    removing: Vec<NodeId>,
    isr: Vec<NodeId>,
}

impl Assignment {
    /// The finished reassignment, if the ISR holds every target replica (Kafka's `maybeCompleteReassignment`).
    fn completed(&self) -> Option<Assignment> {
        if self.adding.is_empty() && self.removing.is_empty() {
            return None;
        }
        let target: Vec<NodeId> =
            self.replicas.iter().copied().filter(|node| !self.removing.contains(node)).collect();
        if !target.iter().all(|node| self.isr.contains(node)) {
            return None;
        }
        let isr = self.isr.iter().copied().filter(|node| !self.removing.contains(node)).collect();
        Some(Assignment { replicas: target, adding: Vec::new(), removing: Vec::new(), isr })
    }

    /// The record: the current leader stays if it is in the new ISR, else the first replica in the ISR that is
    /// live leads (none if there is none); both epochs rise by one.
    fn change(
        self,
        image: &MetadataImage,
        (topic_id, index): (TopicId, i32),
        partition: &PartitionImage,
    ) -> ReplicasChange {
        let keep = partition.leader != NodeId::NONE && self.isr.contains(&partition.leader);
        let leader = if keep {
            partition.leader
        } else {
            let mut eligible =
                self.replicas.iter().copied().filter(|node| self.isr.contains(node) && is_live(image, *node));
            eligible.next().unwrap_or(NodeId::NONE)
        };
        ReplicasChange {
            topic_id,
            partition: index,
            replicas: self.replicas,
            adding_replicas: self.adding,
            removing_replicas: self.removing,
            leader,
            isr: self.isr,
            leader_epoch: partition.leader_epoch.next(),
            partition_epoch: partition.partition_epoch + 1,
        }
    }
}

/// The completion of one partition's reassignment, if its ISR now holds every target replica.
fn complete(
    image: &MetadataImage,
    key: (TopicId, i32),
    partition: &PartitionImage,
) -> Option<ReplicasChange> {
    let running = Assignment {
        replicas: partition.replicas.clone(),
        adding: partition.adding_replicas.clone(),
        removing: partition.removing_replicas.clone(),
        isr: partition.isr.clone(),
    };
    running.completed().map(|done| done.change(image, key, partition))
}

/// Completions for every partition whose reassignment's target is now in the ISR (at most
/// `PARTITION_PLAN_RECORD_COUNT_MAX`). A full scan: for a new active controller, or a periodic check.
pub fn complete_reassignments(image: &MetadataImage) -> Vec<MetadataRecord> {
    image
        .topics()
        .flat_map(|topic| {
            topic
                .partitions
                .iter()
                .enumerate()
                .filter_map(move |(index, partition)| complete(image, (topic.id, index as i32), partition))
        })
        .take(PARTITION_PLAN_RECORD_COUNT_MAX)
        .map(MetadataRecord::ReplicasChange)
        .collect()
}

/// Completions for the partitions `applied` (the batch just applied to give `image`) changed: the active
/// controller calls this after every applied batch and proposes the result when it is not empty. An ISR grows only
/// by a `PartitionChange` (AlterPartition), so only partitions a batch touched can have become complete.
pub fn complete_reassignments_after(
    image: &MetadataImage,
    applied: &[MetadataRecord],
) -> Vec<MetadataRecord> {
    let touched: BTreeSet<(TopicId, i32)> = applied
        .iter()
        .filter_map(|record| match record {
            MetadataRecord::PartitionChange(change) => Some((change.topic_id, change.partition)),
            MetadataRecord::ReplicasChange(change) => Some((change.topic_id, change.partition)),
            _ => None,
        })
        .collect();
    touched
        .into_iter()
        .filter_map(|(topic_id, index)| {
            let partition = image.topic(topic_id)?.partitions.get(usize::try_from(index).ok()?)?;
            complete(image, (topic_id, index), partition)
        })
        .map(MetadataRecord::ReplicasChange)
        .collect()
}

/// One partition's running reassignment, as ListPartitionReassignments answers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OngoingReassignment {
    pub topic: String,
    pub partition: i32,
    pub replicas: Vec<NodeId>,
    pub adding_replicas: Vec<NodeId>,
    pub removing_replicas: Vec<NodeId>,
}

impl MetadataImage {
    /// ListPartitionReassignments: the running reassignments among `partitions` (`None`: all), in topic-id and
    /// partition order for `None`, in request order otherwise. Unknown topics and partitions, and partitions
    /// without a reassignment, are left out (KRaft's `listPartitionReassignments`).
    pub fn partition_reassignments(&self, partitions: Option<&[(String, i32)]>) -> Vec<OngoingReassignment> {
        let named: Vec<(String, i32)> = match partitions {
            Some(partitions) => partitions.to_vec(),
            None => self
                .topics()
                .flat_map(|topic| (0..topic.partitions.len() as i32).map(|index| (topic.name.clone(), index)))
                .collect(),
        };
        let mut seen = BTreeSet::new();
        named
            .into_iter()
            .filter(|key| seen.insert(key.clone()))
            .filter_map(|(topic, index)| {
                let (_, partition) = partition_named(self, &topic, index)?;
                partition.is_reassigning().then(|| OngoingReassignment {
                    topic,
                    partition: index,
                    replicas: partition.replicas.clone(),
                    adding_replicas: partition.adding_replicas.clone(),
                    removing_replicas: partition.removing_replicas.clone(),
                })
            })
            .collect()
    }
}
