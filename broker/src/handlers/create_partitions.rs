//! CreatePartitions (key 37), v0–3: grow a topic's partition count. A request's `assignments` (replicas of each new
//! partition) are checked as Kafka checks them — one per new partition, none empty, no broker twice, only brokers
//! that exist, as many replicas as the topic's partitions have — and refused with INVALID_REPLICA_ASSIGNMENT
//! otherwise; a valid one is honoured (on a cluster of one it places every new partition on this node, which is
//! where the table puts them).

use std::rc::Rc;

use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};

use super::{str_bytes, HandlerResult, RequestContext};
use crate::cluster::topic_table::TopicTable;
use crate::cluster::TopicChange;
use crate::errors::{KafkaError, ResponseError};
use crate::shard::Shard;

/// Kafka's refusals of a manual assignment, in Kafka's order; `None` when there is none or it is valid. A topic
/// that does not exist or a count that does not grow is left to the table, whose errors come first in Kafka too.
/// An empty list counts as none (Kafka would refuse it, but it is what a codec's default sends).
fn check_assignments(topic: &CreatePartitionsTopic, table: &TopicTable, node: i32) -> Option<KafkaError> {
    let assignments = topic.assignments.as_ref().filter(|assignments| !assignments.is_empty())?;
    let entry = table.get(topic.name.0.as_str())?;
    if topic.count <= entry.partition_count {
        return None;
    }
    let refuse =
        |message: String| Some(KafkaError::with_message(ResponseError::InvalidReplicaAssignment, message));
    let added = topic.count - entry.partition_count;
    if assignments.len() != added as usize {
        return refuse(format!(
            "attempted to add {added} additional partition(s), but only {} assignment(s) were specified",
            assignments.len()
        ));
    }
    // Every partition of a topic on a cluster of one has exactly one replica, on this node.
    let replica_count = 1;
    for assignment in assignments {
        let brokers: Vec<i32> = assignment.broker_ids.iter().map(|id| id.0).collect();
        if brokers.is_empty() {
            return refuse("the manual partition assignment includes an empty replica list".to_string());
        }
        if let Some(broker) = brokers.iter().find(|broker| **broker != node) {
            return refuse(format!(
                "the manual partition assignment includes broker {broker}, but no such broker is registered \
                 (this cluster has one broker, {node})"
            ));
        }
        if brokers.len() != replica_count {
            return refuse(format!(
                "the manual partition assignment includes broker {node} more than once ({} replicas)",
                brokers.len()
            ));
        }
    }
    None
}

pub async fn handle(
    shard: &Rc<Shard>,
    context: &RequestContext,
    body: CreatePartitionsRequest,
) -> HandlerResult {
    let table = shard.topics();
    // A cluster's controller checks assignments against the brokers it knows.
    let cluster = shard.cluster.is_some();
    let early: Vec<Option<KafkaError>> = body
        .topics
        .iter()
        .map(|topic| if cluster { None } else { check_assignments(topic, &table, shard.config.node_id) })
        .collect();
    let changes = body
        .topics
        .iter()
        .zip(&early)
        .filter(|(_, error)| error.is_none())
        .map(|(topic, _)| TopicChange::AddPartitions {
            name: topic.name.0.to_string(),
            partition_count: topic.count,
            assignment: topic.assignments.as_ref().filter(|lists| cluster && !lists.is_empty()).map(
                |lists| lists.iter().map(|list| list.broker_ids.iter().map(|id| id.0).collect()).collect(),
            ),
        })
        .collect();
    let mut results = shard.admin(changes, body.validate_only).await.into_iter();
    let mut response = CreatePartitionsResponse::default();
    response.results = body
        .topics
        .iter()
        .zip(early)
        .map(|(topic, early)| {
            let result = match early {
                Some(error) => Err(error),
                None => results.next().unwrap_or(Err(KafkaError::new(ResponseError::UnknownServerError))),
            };
            let mut result_entry = CreatePartitionsTopicResult::default();
            result_entry.name = topic.name.clone();
            if let Err(error) = result {
                result_entry.error_code = error.code.code();
                result_entry.error_message = error.message.as_deref().map(str_bytes);
            }
            result_entry
        })
        .collect();
    context.respond(&response)
}
