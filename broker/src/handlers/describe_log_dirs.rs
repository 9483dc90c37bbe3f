//! DescribeLogDirs (key 35), v1–4: one log directory (the data directory) with each partition's size.

use std::rc::Rc;

use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse};

use super::{str_bytes, topic_name, HandlerResult, RequestContext};
use crate::cluster::partition::{PartitionOp, PartitionReply};
use crate::shard::Shard;

pub async fn handle(
    shard: &Rc<Shard>,
    context: &RequestContext,
    body: DescribeLogDirsRequest,
) -> HandlerResult {
    let table = shard.topics();
    let wanted: Vec<(String, Vec<i32>)> = match body.topics {
        None => table
            .topics
            .values()
            .map(|entry| (entry.name.clone(), (0..entry.partition_count).collect()))
            .collect(),
        Some(topics) => topics
            .into_iter()
            .filter_map(|topic| {
                let entry = table.get(topic.topic.0.as_str())?;
                let partitions = topic
                    .partitions
                    .into_iter()
                    .filter(|index| (0..entry.partition_count).contains(index))
                    .collect();
                Some((entry.name.clone(), partitions))
            })
            .collect(),
    };
    let mut topics = Vec::with_capacity(wanted.len());
    for (name, indexes) in wanted {
        let mut partitions = Vec::with_capacity(indexes.len());
        for index in indexes {
            if let Ok(PartitionReply::Described { size, offset_lag }) =
                shard.partition_call(&name, index, PartitionOp::Describe).await
            {
                let mut partition = DescribeLogDirsPartition::default();
                partition.partition_index = index;
                partition.partition_size = size as i64;
                partition.offset_lag = offset_lag;
                partitions.push(partition);
            }
        }
        let mut topic = DescribeLogDirsTopic::default();
        topic.name = topic_name(&name);
        topic.partitions = partitions;
        topics.push(topic);
    }
    let mut result = DescribeLogDirsResult::default();
    let directory =
        std::fs::canonicalize(&shard.config.data_dir).unwrap_or_else(|_| shard.config.data_dir.clone());
    result.log_dir = str_bytes(&directory.to_string_lossy());
    result.topics = topics;
    let mut response = DescribeLogDirsResponse::default();
    response.results = vec![result];
    context.respond(&response)
}
