//! DeleteRecords (key 21), v0–2: move a partition's log start offset up (offset -1: to the high watermark).

use std::rc::Rc;

use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};

use super::{HandlerResult, RequestContext};
use crate::cluster::partition::{PartitionOp, PartitionReply};
use crate::errors::ResponseError;
use crate::shard::Shard;

pub async fn handle(
    shard: &Rc<Shard>,
    context: &RequestContext,
    body: DeleteRecordsRequest,
) -> HandlerResult {
    let table = shard.topics();
    let mut topics = Vec::with_capacity(body.topics.len());
    for topic in body.topics {
        let name = topic.name.0.to_string();
        let entry = table.get(&name);
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for partition in topic.partitions {
            let mut result = DeleteRecordsPartitionResult::default();
            result.partition_index = partition.partition_index;
            result.low_watermark = -1;
            if !entry.is_some_and(|entry| (0..entry.partition_count).contains(&partition.partition_index)) {
                result.error_code = ResponseError::UnknownTopicOrPartition.code();
            } else {
                // Kafka's -1: up to the high watermark.
                let offset = (partition.offset != -1).then_some(sluice_storage::Offset(partition.offset));
                let op = PartitionOp::DeleteRecords { offset };
                match shard.partition_call(&name, partition.partition_index, op).await {
                    Ok(PartitionReply::Deleted { low_watermark }) => result.low_watermark = low_watermark.0,
                    Ok(_) => result.error_code = ResponseError::UnknownServerError.code(),
                    Err(error) => result.error_code = error.code.code(),
                }
            }
            partitions.push(result);
        }
        let mut result = DeleteRecordsTopicResult::default();
        result.name = topic.name;
        result.partitions = partitions;
        topics.push(result);
    }
    let mut response = DeleteRecordsResponse::default();
    response.topics = topics;
    context.respond(&response)
}
