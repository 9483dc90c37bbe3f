//! OffsetDelete (key 47), v0: deletes a group's committed offsets for some partitions, unless a member of the
//! (non-empty, consumer-protocol) group subscribes to the topic: GROUP_SUBSCRIBED_TO_TOPIC.

use std::rc::Rc;

use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse};

use super::{topic_name, HandlerResult, RequestContext};
use crate::errors::ResponseError;
use crate::group::{GroupReply, GroupRequest};
use crate::shard::Shard;

pub async fn handle(shard: &Rc<Shard>, context: &RequestContext, body: OffsetDeleteRequest) -> HandlerResult {
    let group_id = body.group_id.0.to_string();
    let partitions: Vec<(String, i32)> = body
        .topics
        .iter()
        .flat_map(|topic| topic.partitions.iter().map(|p| (topic.name.0.to_string(), p.partition_index)))
        .collect();
    let count = partitions.len();
    let request = GroupRequest::DeleteOffsets { group: group_id.clone(), partitions };
    let (top, errors) = match shard.group_call(&group_id, request).await {
        GroupReply::OffsetsDeleted(top, errors) => (top, errors),
        GroupReply::Error(error) => (error, Vec::new()),
        _ => (ResponseError::UnknownServerError.into(), Vec::new()),
    };
    let mut response = OffsetDeleteResponse::default();
    response.error_code = top.code();
    if errors.len() == count {
        let mut errors = errors.into_iter();
        response.topics = body
            .topics
            .iter()
            .map(|topic| {
                let mut result = OffsetDeleteResponseTopic::default();
                result.name = topic_name(&topic.name.0);
                result.partitions = topic
                    .partitions
                    .iter()
                    .map(|partition| {
                        let mut answer = OffsetDeleteResponsePartition::default();
                        answer.partition_index = partition.partition_index;
                        answer.error_code = errors.next().unwrap_or_default().code();
                        answer
                    })
                    .collect();
                result
            })
            .collect();
    }
    context.respond(&response)
}
