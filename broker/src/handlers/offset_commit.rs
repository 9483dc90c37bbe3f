//! OffsetCommit (key 8), v2–9: committed offsets (with leader epoch and metadata) are written to
//! `__consumer_offsets` and fsynced before the answer. `retention_time_ms` (v2–4) is ignored, as in Kafka ≥ 2.1:
//! `offsets.retention.minutes` applies.

use std::rc::Rc;

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};

use super::{topic_name, HandlerResult, RequestContext};
use crate::errors::ResponseError;
use crate::group::{GroupReply, GroupRequest, OffsetToCommit};
use crate::shard::Shard;

pub async fn handle(shard: &Rc<Shard>, context: &RequestContext, body: OffsetCommitRequest) -> HandlerResult {
    let version = context.api_version;
    let group_id = body.group_id.0.to_string();
    let offsets: Vec<OffsetToCommit> = body
        .topics
        .iter()
        .flat_map(|topic| {
            topic.partitions.iter().map(|partition| OffsetToCommit {
                topic: topic.name.0.to_string(),
                partition: partition.partition_index,
                offset: partition.committed_offset,
                leader_epoch: if version >= 6 { partition.committed_leader_epoch } else { -1 },
                metadata: partition.committed_metadata.as_ref().map(|text| text.to_string()),
            })
        })
        .collect();
    let count = offsets.len();
    let request = GroupRequest::Commit {
        group: group_id.clone(),
        member_id: body.member_id.to_string(),
        instance_id: if version >= 7 { body.group_instance_id.map(|id| id.to_string()) } else { None },
        generation: body.generation_id_or_member_epoch,
        offsets,
    };
    let errors = match shard.group_call(&group_id, request).await {
        GroupReply::Commit(errors) if errors.len() == count => errors,
        GroupReply::Error(error) => vec![error; count],
        _ => vec![ResponseError::UnknownServerError.into(); count],
    };
    let mut errors = errors.into_iter();
    let mut response = OffsetCommitResponse::default();
    response.topics = body
        .topics
        .iter()
        .map(|topic| {
            let mut result = OffsetCommitResponseTopic::default();
            result.name = topic_name(&topic.name.0);
            result.partitions = topic
                .partitions
                .iter()
                .map(|partition| {
                    let mut answer = OffsetCommitResponsePartition::default();
                    answer.partition_index = partition.partition_index;
                    answer.error_code =
                        errors.next().unwrap_or(ResponseError::UnknownServerError.into()).code();
                    answer
                })
                .collect();
            result
        })
        .collect();
    context.respond(&response)
}
