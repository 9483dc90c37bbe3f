//! ListOffsets (key 2), v0–10: earliest (-2), latest (-1, the high watermark), max timestamp (-3), earliest
//! local (-4, v8: the log start, there being no tiered storage), latest tiered (-5, v9: none, offset -1) and by
//! timestamp (the first record at or after it, found inside its batch). v0 is answered in its old layout
//! (`codec_legacy`); v10's remote-read timeout has nothing to wait for.

use std::rc::Rc;

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use super::{topic_name, HandlerResult, RequestContext};
use crate::cluster::partition::{PartitionOp, PartitionReply};
use crate::errors::ResponseError;
use crate::shard::Shard;

pub async fn handle(shard: &Rc<Shard>, context: &RequestContext, body: ListOffsetsRequest) -> HandlerResult {
    let table = shard.topics();
    let mut topics = Vec::with_capacity(body.topics.len());
    for topic in body.topics {
        let name = topic.name.0.to_string();
        let entry = table.get(&name);
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for partition in topic.partitions {
            let mut response = ListOffsetsPartitionResponse::default();
            response.partition_index = partition.partition_index;
            response.timestamp = -1;
            response.offset = -1;
            let known =
                entry.is_some_and(|entry| (0..entry.partition_count).contains(&partition.partition_index));
            if !known {
                response.error_code = ResponseError::UnknownTopicOrPartition.code();
            } else {
                let op = PartitionOp::ListOffset { timestamp: partition.timestamp };
                match shard.partition_call(&name, partition.partition_index, op).await {
                    Ok(PartitionReply::Offset { offset, timestamp, leader_epoch }) => {
                        response.offset = offset;
                        response.timestamp = timestamp;
                        if context.api_version >= 4 {
                            response.leader_epoch = leader_epoch.0;
                        }
                    }
                    Ok(_) => response.error_code = ResponseError::UnknownServerError.code(),
                    Err(error) => response.error_code = error.code.code(),
                }
            }
            partitions.push(response);
        }
        let mut result = ListOffsetsTopicResponse::default();
        result.name = topic_name(&name);
        result.partitions = partitions;
        topics.push(result);
    }
    let mut response = ListOffsetsResponse::default();
    response.topics = topics;
    context.respond(&response)
}
