//! OffsetForLeaderEpoch (key 23), v2–4: the end offset of a leader epoch, which consumers ask for after a leader
//! change to see whether their position was truncated away (KIP-320). A partition here has had one leader and
//! one epoch since creation (the topic's `leader_epoch`), so: the current epoch ends at the high watermark (no
//! consumer can be past it), an older epoch has no records (its end is the first epoch's start, offset 0, with
//! epoch -1 as Kafka answers for an epoch below the first), and a newer one is unknown (-1, -1).
//! `current_leader_epoch` is checked as for Fetch: newer → UNKNOWN_LEADER_EPOCH, older → FENCED_LEADER_EPOCH.

use std::rc::Rc;

use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use super::{topic_name, HandlerResult, RequestContext};
use crate::cluster::partition::{PartitionOp, PartitionReply, OFFSET_LATEST};
use crate::errors::ResponseError;
use crate::shard::Shard;

pub async fn handle(
    shard: &Rc<Shard>,
    context: &RequestContext,
    body: OffsetForLeaderEpochRequest,
) -> HandlerResult {
    let table = shard.topics();
    let mut response = OffsetForLeaderEpochResponse::default();
    for topic in body.topics {
        let name = topic.topic.0.to_string();
        let entry = table.get(&name);
        let mut result = OffsetForLeaderTopicResult::default();
        result.topic = topic_name(&name);
        for partition in topic.partitions {
            let mut answer = EpochEndOffset::default();
            answer.partition = partition.partition;
            answer.leader_epoch = -1;
            answer.end_offset = -1;
            let Some(entry) = entry.filter(|entry| (0..entry.partition_count).contains(&partition.partition))
            else {
                answer.error_code = ResponseError::UnknownTopicOrPartition.code();
                result.partitions.push(answer);
                continue;
            };
            let current = entry.leader_epoch(partition.partition).0;
            if partition.current_leader_epoch > current {
                answer.error_code = ResponseError::UnknownLeaderEpoch.code();
            } else if partition.current_leader_epoch >= 0 && partition.current_leader_epoch < current {
                answer.error_code = ResponseError::FencedLeaderEpoch.code();
            } else if partition.leader_epoch == current {
                let op = PartitionOp::ListOffset { timestamp: OFFSET_LATEST };
                match shard.partition_call(&name, partition.partition, op).await {
                    Ok(PartitionReply::Offset { offset, .. }) => {
                        answer.leader_epoch = current;
                        answer.end_offset = offset;
                    }
                    Ok(_) => answer.error_code = ResponseError::UnknownServerError.code(),
                    Err(error) => answer.error_code = error.code.code(),
                }
            } else if (0..current).contains(&partition.leader_epoch) {
                answer.end_offset = 0;
            }
            result.partitions.push(answer);
        }
        response.topics.push(result);
    }
    context.respond(&response)
}
