//! Metadata (key 3), v0–12: this broker, and for each topic its partitions led by this node (ISR = [node]).
//! Missing topics are auto-created when the request and `auto.create.topics.enable` allow.

use std::rc::Rc;

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{MetadataRequest, MetadataResponse};

use kafka_protocol::messages::BrokerId;

use super::{
    auto_create, brokers_and_controller, partition_nodes, str_bytes, topic_name, HandlerResult,
    PartitionNodes, RequestContext,
};
use crate::cluster::topic_table::validate_topic_name;
use crate::errors::ResponseError;
use crate::handlers::describe_cluster::CLUSTER_ID;
use crate::shard::Shard;

#[allow(clippy::too_many_lines)] // over 70 lines before the limit; to be split
pub async fn handle(shard: &Rc<Shard>, context: &RequestContext, body: MetadataRequest) -> HandlerResult {
    let version = context.api_version;
    // v0: an empty list means all topics; v1+: null means all, empty means none.
    let requested: Option<Vec<(Option<String>, [u8; 16])>> = match body.topics {
        Some(topics) if !(version == 0 && topics.is_empty()) => Some(
            topics
                .into_iter()
                .map(|topic| (topic.name.map(|name| name.0.to_string()), *topic.topic_id.as_bytes()))
                .collect(),
        ),
        _ => None,
    };
    let allow_create = version < 4 || body.allow_auto_topic_creation;
    if let (Some(requested), true) = (&requested, allow_create) {
        let names: Vec<String> = requested.iter().filter_map(|(name, _)| name.clone()).collect();
        auto_create(shard, &names).await;
    }
    let table = shard.topics();
    let (brokers, controller) = brokers_and_controller(shard, &table);

    let describe = |entry: &crate::cluster::topic_table::TopicEntry| {
        let mut topic = MetadataResponseTopic::default();
        topic.name = Some(topic_name(&entry.name));
        if version >= 10 {
            topic.topic_id = uuid::Uuid::from_bytes(entry.topic_uuid());
        }
        topic.partitions = (0..entry.partition_count)
            .map(|index| {
                let mut partition = MetadataResponsePartition::default();
                partition.partition_index = index;
                let nodes = match entry.partition(index) {
                    Some(assignment) => partition_nodes(&table, assignment),
                    None => PartitionNodes {
                        leader: -1,
                        replicas: Vec::new(),
                        isr: Vec::new(),
                        offline: Vec::new(),
                    },
                };
                if nodes.leader < 0 {
                    partition.error_code = ResponseError::LeaderNotAvailable.code();
                }
                partition.leader_id = BrokerId(nodes.leader);
                if version >= 7 {
                    partition.leader_epoch = entry.leader_epoch(index).0;
                }
                partition.replica_nodes = nodes.replicas.into_iter().map(BrokerId).collect();
                partition.isr_nodes = nodes.isr.into_iter().map(BrokerId).collect();
                if version >= 5 {
                    partition.offline_replicas = nodes.offline.into_iter().map(BrokerId).collect();
                }
                partition
            })
            .collect();
        if version >= 8 {
            topic.topic_authorized_operations = i32::MIN;
        }
        if version >= 1 {
            topic.is_internal = entry.name == crate::group::OFFSETS_TOPIC;
        }
        topic
    };
    let topics = match requested {
        None => table.topics.values().map(describe).collect(),
        Some(requested) => requested
            .into_iter()
            .map(|(name, topic_id)| {
                let entry = match &name {
                    Some(name) => table.get(name),
                    None => table.find_by_id(&topic_id),
                };
                match entry {
                    Some(entry) => describe(entry),
                    None => {
                        let mut topic = MetadataResponseTopic::default();
                        let invalid = name.as_deref().is_some_and(|name| validate_topic_name(name).is_err());
                        topic.error_code = match (&name, invalid) {
                            (None, _) => ResponseError::UnknownTopicId.code(),
                            (Some(_), true) => ResponseError::InvalidTopicException.code(),
                            (Some(_), false) => ResponseError::UnknownTopicOrPartition.code(),
                        };
                        topic.name = name.as_deref().map(topic_name);
                        if version >= 10 && name.is_none() {
                            topic.topic_id = uuid::Uuid::from_bytes(topic_id);
                        }
                        topic
                    }
                }
            })
            .collect(),
    };
    let mut response = MetadataResponse::default();
    response.brokers = brokers
        .into_iter()
        .map(|(id, host, port, rack)| {
            let mut broker = MetadataResponseBroker::default();
            broker.node_id = BrokerId(id);
            broker.host = str_bytes(&host);
            broker.port = i32::from(port);
            if version >= 1 {
                broker.rack = rack.as_deref().map(str_bytes);
            }
            broker
        })
        .collect();
    if version >= 2 {
        response.cluster_id = Some(str_bytes(CLUSTER_ID));
    }
    if version >= 1 {
        response.controller_id = BrokerId(controller);
    }
    response.topics = topics;
    context.respond(&response)
}
