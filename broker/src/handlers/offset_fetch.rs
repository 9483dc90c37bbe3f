//! OffsetFetch (key 9), v1–9: committed offsets of one group (v1–7) or several (v8+), for listed partitions or
//! (topics null, v2+) every partition the group has committed. A partition with no commit gets offset -1.
//! `require_stable` (v7+) needs no wait: this broker has no transactional offset commits pending.

use std::rc::Rc;

use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{GroupId, OffsetFetchRequest, OffsetFetchResponse};

use super::{str_bytes, topic_name, HandlerResult, RequestContext};
use crate::errors::{ErrorCode, ResponseError};
use crate::group::{FetchedOffset, GroupReply, GroupRequest};
use crate::shard::Shard;

/// One group's answer: a group-level error, or its offsets grouped by topic in request (or name) order.
async fn fetch_group(
    shard: &Rc<Shard>,
    group_id: &str,
    partitions: Option<Vec<(String, i32)>>,
) -> (ErrorCode, Vec<(String, Vec<FetchedOffset>)>) {
    let request = GroupRequest::FetchOffsets { group: group_id.to_string(), partitions };
    let offsets = match shard.group_call(group_id, request).await {
        GroupReply::Offsets(offsets) => offsets,
        GroupReply::Error(error) => return (error, Vec::new()),
        _ => return (ResponseError::UnknownServerError.into(), Vec::new()),
    };
    let mut topics: Vec<(String, Vec<FetchedOffset>)> = Vec::new();
    for offset in offsets {
        match topics.last_mut() {
            Some((topic, list)) if *topic == offset.topic => list.push(offset),
            _ => topics.push((offset.topic.clone(), vec![offset])),
        }
    }
    (ErrorCode::NONE, topics)
}

#[allow(clippy::too_many_lines)] // over 70 lines before the limit; to be split
pub async fn handle(shard: &Rc<Shard>, context: &RequestContext, body: OffsetFetchRequest) -> HandlerResult {
    let version = context.api_version;
    let mut response = OffsetFetchResponse::default();
    if version >= 8 {
        for requested in body.groups {
            let group_id = requested.group_id.0.to_string();
            let partitions = requested.topics.map(|topics| {
                topics
                    .iter()
                    .flat_map(|topic| topic.partition_indexes.iter().map(|p| (topic.name.0.to_string(), *p)))
                    .collect()
            });
            let (error, topics) = fetch_group(shard, &group_id, partitions).await;
            let mut group = OffsetFetchResponseGroup::default();
            group.group_id = GroupId(str_bytes(&group_id));
            group.error_code = error.code();
            group.topics = topics
                .into_iter()
                .map(|(name, offsets)| {
                    let mut topic = OffsetFetchResponseTopics::default();
                    topic.name = topic_name(&name);
                    topic.partitions = offsets
                        .into_iter()
                        .map(|offset| {
                            let mut partition = OffsetFetchResponsePartitions::default();
                            partition.partition_index = offset.partition;
                            partition.committed_offset = offset.offset;
                            partition.committed_leader_epoch = offset.leader_epoch;
                            partition.metadata = Some(str_bytes(&offset.metadata));
                            partition
                        })
                        .collect();
                    topic
                })
                .collect();
            response.groups.push(group);
        }
        return context.respond(&response);
    }
    let group_id = body.group_id.0.to_string();
    let partitions = body.topics.map(|topics| {
        topics
            .iter()
            .flat_map(|topic| topic.partition_indexes.iter().map(|p| (topic.name.0.to_string(), *p)))
            .collect()
    });
    let (error, topics) = fetch_group(shard, &group_id, partitions).await;
    if version >= 2 {
        response.error_code = error.code();
    }
    response.topics = topics
        .into_iter()
        .map(|(name, offsets)| {
            let mut topic = OffsetFetchResponseTopic::default();
            topic.name = topic_name(&name);
            topic.partitions = offsets
                .into_iter()
                .map(|offset| {
                    let mut partition = OffsetFetchResponsePartition::default();
                    partition.partition_index = offset.partition;
                    partition.committed_offset = offset.offset;
                    if version >= 5 {
                        partition.committed_leader_epoch = offset.leader_epoch;
                    }
                    partition.metadata = Some(str_bytes(&offset.metadata));
                    // v1 has no group-level error: it goes on every partition.
                    if version < 2 {
                        partition.error_code = error.code();
                    }
                    partition
                })
                .collect();
            topic
        })
        .collect();
    context.respond(&response)
}
