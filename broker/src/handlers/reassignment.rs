//! Leadership and replica moves (issue 16): ElectLeaders (key 43, v0–2; KIP-460's preferred and unclean
//! elections), AlterPartitionReassignments (key 45, v0) and ListPartitionReassignments (key 46, v0) (KIP-455).
//!
//! Any broker answers: the first two are forwarded to the active controller, which plans them against its image
//! (`sluice_replication::metadata::{election, reassignment}`), commits the records and answers per partition; the
//! answer waits (bounded) until this broker installed the change, so the client's next Metadata shows it.
//! ListPartitionReassignments reads this broker's image. A single-node broker has one replica per partition:
//! nothing to elect or move.

use std::rc::Rc;
use std::time::Duration;

use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId, ElectLeadersRequest,
    ElectLeadersResponse, ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse,
};
use sluice_replication::metadata::ReassignmentTarget;
use sluice_replication::NodeId;

use super::{str_bytes, topic_name, HandlerResult, RequestContext};
use crate::controller::wire::{ControlRequest, ControlResponse};
use crate::errors::ResponseError;
use crate::shard::Shard;

/// How long a forwarded change may wait for the controller (a controller failover takes seconds).
const CONTROLLER_TIMEOUT: Duration = Duration::from_secs(15);

/// One partition's answer: topic, partition, Kafka's code, its sentence.
type PartitionAnswer = (String, i32, i16, String);

/// Forwards `request` to the active controller; per-partition answers, or one code for all.
async fn forward(shard: &Rc<Shard>, request: ControlRequest) -> Result<Vec<PartitionAnswer>, (i16, String)> {
    let Some(cluster) = shard.cluster.clone() else {
        return Err((ResponseError::UnknownServerError.code(), "not a cluster".into()));
    };
    match cluster.call(request, CONTROLLER_TIMEOUT).await {
        Ok(ControlResponse::PartitionResults { index, results }) => {
            shard.wait_installed(index).await;
            Ok(results)
        }
        Ok(ControlResponse::Error { code, message }) => Err((code, message)),
        Ok(other) => Err((ResponseError::UnknownServerError.code(), format!("unexpected answer {other:?}"))),
        Err(message) => Err((ResponseError::RequestTimedOut.code(), message)),
    }
}

/// A single node's answers: every named partition that exists has one replica, which leads.
fn single_node(
    shard: &Shard,
    partitions: &[(String, i32)],
    exists: i16,
    missing: i16,
) -> Vec<PartitionAnswer> {
    let table = shard.topics();
    partitions
        .iter()
        .map(|(topic, partition)| {
            let known = table.get(topic).is_some_and(|entry| (0..entry.partition_count).contains(partition));
            (topic.clone(), *partition, if known { exists } else { missing }, String::new())
        })
        .collect()
}

pub async fn elect_leaders(
    shard: &Rc<Shard>,
    context: &RequestContext,
    body: ElectLeadersRequest,
) -> HandlerResult {
    let version = context.api_version;
    // v0 elects the preferred leader only (KIP-460 added the type in v1).
    let election = if version >= 1 { body.election_type } else { 0 };
    let partitions: Option<Vec<(String, i32)>> = body.topic_partitions.as_ref().map(|topics| {
        topics
            .iter()
            .flat_map(|topic| topic.partitions.iter().map(|index| (topic.topic.0.to_string(), *index)))
            .collect()
    });
    let mut response = ElectLeadersResponse::default();
    let answers = if shard.cluster.is_none() {
        let named = partitions.unwrap_or_default();
        Ok(single_node(
            shard,
            &named,
            ResponseError::ElectionNotNeeded.code(),
            ResponseError::UnknownTopicOrPartition.code(),
        ))
    } else {
        forward(shard, ControlRequest::ElectLeaders { election, partitions }).await
    };
    match answers {
        Ok(answers) => {
            let mut results: Vec<ReplicaElectionResult> = Vec::new();
            for (topic, partition, code, message) in answers {
                let mut result = PartitionResult::default();
                result.partition_id = partition;
                result.error_code = code;
                result.error_message = (code != 0).then(|| str_bytes(&message));
                match results.iter_mut().find(|entry| entry.topic.0.as_str() == topic) {
                    Some(entry) => entry.partition_result.push(result),
                    None => {
                        let mut entry = ReplicaElectionResult::default();
                        entry.topic = topic_name(&topic);
                        entry.partition_result.push(result);
                        results.push(entry);
                    }
                }
            }
            response.replica_election_results = results;
        }
        Err((code, message)) => {
            if version >= 1 {
                response.error_code = code;
            } else {
                log::warn!("ElectLeaders v0 failed as a whole ({code}): {message}");
            }
        }
    }
    context.respond(&response)
}

pub async fn alter_reassignments(
    shard: &Rc<Shard>,
    context: &RequestContext,
    body: AlterPartitionReassignmentsRequest,
) -> HandlerResult {
    let targets: Vec<ReassignmentTarget> = body
        .topics
        .iter()
        .flat_map(|topic| {
            topic.partitions.iter().map(|partition| {
                let target = partition
                    .replicas
                    .as_ref()
                    .map(|replicas| replicas.iter().map(|id| NodeId(id.0)).collect());
                ((topic.name.0.to_string(), partition.partition_index), target)
            })
        })
        .collect();
    let mut response = AlterPartitionReassignmentsResponse::default();
    let answers = if shard.cluster.is_none() {
        let node = shard.config.node_id;
        let named: Vec<(String, i32)> = targets.iter().map(|(key, _)| key.clone()).collect();
        let mut answers = single_node(shard, &named, 0, ResponseError::UnknownTopicOrPartition.code());
        for (answer, (_, target)) in answers.iter_mut().zip(&targets) {
            if answer.2 != 0 {
                continue;
            }
            match target {
                None => answer.2 = ResponseError::NoReassignmentInProgress.code(),
                Some(target) if target.as_slice() != [NodeId(node)] => {
                    answer.2 = ResponseError::InvalidReplicaAssignment.code();
                    answer.3 = format!("a single-node broker has only broker {node}");
                }
                Some(_) => {}
            }
        }
        Ok(answers)
    } else {
        forward(shard, ControlRequest::AlterReassignments { targets }).await
    };
    match answers {
        Ok(answers) => {
            let mut topics: Vec<ReassignableTopicResponse> = Vec::new();
            for (topic, partition, code, message) in answers {
                let mut result = ReassignablePartitionResponse::default();
                result.partition_index = partition;
                result.error_code = code;
                result.error_message = (code != 0).then(|| str_bytes(&message));
                match topics.iter_mut().find(|entry| entry.name.0.as_str() == topic) {
                    Some(entry) => entry.partitions.push(result),
                    None => {
                        let mut entry = ReassignableTopicResponse::default();
                        entry.name = topic_name(&topic);
                        entry.partitions.push(result);
                        topics.push(entry);
                    }
                }
            }
            response.responses = topics;
        }
        Err((code, message)) => {
            response.error_code = code;
            response.error_message = Some(str_bytes(&message));
        }
    }
    context.respond(&response)
}

pub fn list_reassignments(
    shard: &Rc<Shard>,
    context: &RequestContext,
    body: ListPartitionReassignmentsRequest,
) -> HandlerResult {
    let mut response = ListPartitionReassignmentsResponse::default();
    let table = shard.topics();
    let Some(view) = table.cluster.as_ref() else {
        return context.respond(&response);
    };
    let named: Option<Vec<(String, i32)>> = body.topics.as_ref().map(|topics| {
        topics
            .iter()
            .flat_map(|topic| topic.partition_indexes.iter().map(|index| (topic.name.0.to_string(), *index)))
            .collect()
    });
    let brokers = |nodes: &[NodeId]| nodes.iter().map(|node| BrokerId(node.0)).collect::<Vec<_>>();
    let mut topics: Vec<OngoingTopicReassignment> = Vec::new();
    for ongoing in view.image.partition_reassignments(named.as_deref()) {
        let mut partition = OngoingPartitionReassignment::default();
        partition.partition_index = ongoing.partition;
        partition.replicas = brokers(&ongoing.replicas);
        partition.adding_replicas = brokers(&ongoing.adding_replicas);
        partition.removing_replicas = brokers(&ongoing.removing_replicas);
        match topics.iter_mut().find(|entry| entry.name.0.as_str() == ongoing.topic) {
            Some(entry) => entry.partitions.push(partition),
            None => {
                let mut entry = OngoingTopicReassignment::default();
                entry.name = topic_name(&ongoing.topic);
                entry.partitions.push(partition);
                topics.push(entry);
            }
        }
    }
    response.topics = topics;
    context.respond(&response)
}
