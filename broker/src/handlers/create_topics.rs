//! CreateTopics (key 19), v2–7. Changes go to shard 0, which persists the table and opens the logs on every
//! owner before answering.

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};

use super::{str_bytes, HandlerResult, RequestContext};
use crate::cluster::TopicChange;
use crate::errors::{KafkaError, ResponseError};
use crate::shard::Shard;

#[allow(clippy::too_many_lines)] // over 70 lines before the limit; to be split
pub async fn handle(shard: &Rc<Shard>, context: &RequestContext, body: CreateTopicsRequest) -> HandlerResult {
    let version = context.api_version;
    let mut changes = Vec::with_capacity(body.topics.len());
    let mut early: Vec<Option<KafkaError>> = Vec::with_capacity(body.topics.len());
    for topic in &body.topics {
        let mut configs = BTreeMap::new();
        for config in &topic.configs {
            if let Some(value) = &config.value {
                configs.insert(config.name.to_string(), value.to_string());
            }
        }
        // A manual assignment is valid when it places every replica on this node, one replica per partition
        // (librdkafka's admin tests assign [[0], [0], ...]); it then sets the partition count.
        let node = shard.config.node_id;
        let cluster = shard.cluster.is_some();
        let mut assignment = None;
        let mut partition_count = topic.num_partitions;
        let mut replication_factor = topic.replication_factor;
        if topic.assignments.is_empty() {
            early.push(None);
        } else if topic.num_partitions != -1 || topic.replication_factor != -1 {
            early.push(Some(KafkaError::with_message(
                ResponseError::InvalidRequest,
                "a replica assignment goes with num_partitions and replication_factor -1",
            )));
        } else if !cluster
            && topic
                .assignments
                .iter()
                .any(|assignment| assignment.broker_ids.iter().map(|id| id.0).ne([node]))
        {
            early.push(Some(KafkaError::with_message(
                ResponseError::InvalidReplicaAssignment,
                format!("this cluster has one broker: every partition's replicas must be [{node}]"),
            )));
        } else {
            let mut indexes: Vec<i32> =
                topic.assignments.iter().map(|assignment| assignment.partition_index).collect();
            indexes.sort_unstable();
            if indexes.iter().enumerate().any(|(position, index)| *index != position as i32) {
                early.push(Some(KafkaError::with_message(
                    ResponseError::InvalidReplicaAssignment,
                    "the assignment must name partitions 0..n-1 once each",
                )));
            } else {
                early.push(None);
                partition_count = indexes.len() as i32;
                let mut by_index: Vec<&_> = topic.assignments.iter().collect();
                by_index.sort_by_key(|assignment| assignment.partition_index);
                let replicas: Vec<Vec<i32>> = by_index
                    .iter()
                    .map(|assignment| assignment.broker_ids.iter().map(|id| id.0).collect())
                    .collect();
                replication_factor = replicas.first().map_or(1, |first| first.len() as i16);
                assignment = cluster.then_some(replicas);
            }
        }
        changes.push(TopicChange::Create {
            name: topic.name.0.to_string(),
            partition_count,
            replication_factor,
            configs,
            assignment,
        });
    }
    let accepted: Vec<TopicChange> = changes
        .iter()
        .zip(&early)
        .filter(|(_, error)| error.is_none())
        .map(|(change, _)| change.clone())
        .collect();
    let mut results = shard.admin(accepted, body.validate_only).await.into_iter();
    let table = shard.topics();
    let mut topics = Vec::with_capacity(body.topics.len());
    for (topic, error) in body.topics.iter().zip(early) {
        let result = match error {
            Some(error) => Err(error),
            None => results.next().unwrap_or(Err(KafkaError::new(ResponseError::UnknownServerError))),
        };
        let mut response = CreatableTopicResult::default();
        response.name = topic.name.clone();
        // The codec's default is an empty string; Kafka sends null on success.
        response.error_message = None;
        match result {
            Ok(()) => {
                if version >= 5 {
                    let partition_count = table
                        .get(topic.name.0.as_str())
                        .map_or(topic.num_partitions.max(shard.config.partition_count_default), |entry| {
                            entry.partition_count
                        });
                    response.num_partitions = partition_count;
                    response.replication_factor = table
                        .get(topic.name.0.as_str())
                        .and_then(|entry| entry.partition(0))
                        .map_or(1, |assignment| assignment.replicas.len() as i16);
                }
                if version >= 7 {
                    if let Some(entry) = table.get(topic.name.0.as_str()) {
                        response.topic_id = uuid::Uuid::from_bytes(entry.topic_uuid());
                    }
                }
            }
            Err(error) => {
                response.error_code = error.code.code();
                response.error_message = error.message.as_deref().map(str_bytes);
            }
        }
        topics.push(response);
    }
    let mut response = CreateTopicsResponse::default();
    response.topics = topics;
    context.respond(&response)
}
