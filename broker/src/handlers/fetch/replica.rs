//! A follower's Fetch (cluster mode): a Fetch whose replica id (v15: `ReplicaState.ReplicaId`) names a broker.
//! Each partition goes to its owning shard as a `ReplicaRead`: the leader records the follower's progress (its
//! fetch offset is what it holds durably), which may move the high watermark, and answers from the same read path
//! as consumers but up to the log end — or with the diverging epoch (KIP-320), or Kafka's error. Long polling waits
//! for the log end to pass the fetch offsets. No fetch sessions: a follower sends full requests (session 0).

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::FetchRequest;
use sluice_replication::metadata::BrokerEpoch;
use sluice_replication::partition::FetchRequest as ReplicaFetch;
use sluice_replication::{LeaderEpoch, NodeId};
use sluice_storage::Offset;

use super::{encode, wait_for_data, PartitionFetch, Topic, FETCH_WAIT_MAX, RESPONSE_SIZE_MAX};
use crate::cluster::partition::{PartitionOp, PartitionReply};
use crate::errors::{ErrorCode, KafkaError, ResponseError};
use crate::handlers::{HandlerResult, RequestContext};
use crate::shard::Shard;

/// A follower's partition limit when it sends none (Kafka's `replica.fetch.max.bytes`, 1 MiB).
const PARTITION_SIZE_DEFAULT: usize = 1 << 20;

pub async fn handle(
    shard: &Rc<Shard>,
    context: &RequestContext,
    body: FetchRequest,
    replica: i32,
) -> HandlerResult {
    let version = context.api_version;
    let replica_epoch = if version >= 15 { body.replica_state.replica_epoch } else { -1 };
    let mut partitions = Vec::new();
    let mut requests = Vec::new();
    let table = shard.topics();
    for topic in &body.topics {
        let entry = if version >= 13 {
            table.find_by_id(topic.topic_id.as_bytes())
        } else {
            table.get(topic.topic.0.as_str())
        };
        let name = entry.map_or_else(|| topic.topic.0.to_string(), |entry| entry.name.clone());
        let shared = Rc::new(Topic { name, topic_id: *topic.topic_id.as_bytes() });
        for partition in &topic.partitions {
            let known = entry.is_some_and(|entry| (0..entry.partition_count).contains(&partition.partition));
            let error: ErrorCode = match (entry, known) {
                (None, _) if version >= 13 => ResponseError::UnknownTopicId.into(),
                (_, false) => ResponseError::UnknownTopicOrPartition.into(),
                _ => ErrorCode::NONE,
            };
            partitions.push(PartitionFetch {
                topic: shared.clone(),
                index: partition.partition,
                offset: partition.fetch_offset,
                size_max: usize::try_from(partition.partition_max_bytes)
                    .ok()
                    .filter(|size| *size > 0)
                    .unwrap_or(PARTITION_SIZE_DEFAULT),
                unknown: error.is_error(),
                error,
                high_watermark: -1,
                log_start_offset: -1,
                batches: Vec::new(),
                omitted: false,
                diverging: None,
            });
            requests.push(ReplicaFetch {
                replica: NodeId(replica),
                replica_epoch: BrokerEpoch(u64::try_from(replica_epoch).unwrap_or(0)),
                current_leader_epoch: LeaderEpoch(partition.current_leader_epoch),
                fetch_offset: Offset(partition.fetch_offset),
                last_fetched_epoch: LeaderEpoch(partition.last_fetched_epoch),
            });
        }
    }
    let response_size_max = usize::try_from(body.max_bytes)
        .ok()
        .filter(|size| *size > 0)
        .map_or(RESPONSE_SIZE_MAX, |size| size.min(RESPONSE_SIZE_MAX));
    let min_bytes = usize::try_from(body.min_bytes).unwrap_or(0);
    let wait = Duration::from_millis(u64::try_from(body.max_wait_ms).unwrap_or(0)).min(FETCH_WAIT_MAX);
    let deadline = Instant::now() + wait;
    loop {
        let (size, any_error) = read_all(shard, &mut partitions, &requests, response_size_max).await;
        let now = Instant::now();
        if size >= min_bytes.max(1) || any_error || now >= deadline || shard.is_shutting_down() {
            break;
        }
        wait_for_data(shard, &partitions, deadline - now, true).await;
    }
    encode(context, ErrorCode::NONE, 0, &partitions).map(Some)
}

/// Reads every partition on its owner at once; keeps what fits `response_size_max` (the first batch always).
/// Returns the bytes kept and whether any partition answered with an error or a diverging epoch.
async fn read_all(
    shard: &Rc<Shard>,
    partitions: &mut [PartitionFetch],
    requests: &[ReplicaFetch],
    response_size_max: usize,
) -> (usize, bool) {
    let reads: Vec<Option<glommio::Task<Result<PartitionReply, KafkaError>>>> = partitions
        .iter()
        .zip(requests)
        .map(|(partition, request)| {
            (!partition.unknown).then(|| {
                let op = PartitionOp::ReplicaRead { request: *request, size_max: partition.size_max };
                let (shard, name, index) = (shard.clone(), partition.topic.name.clone(), partition.index);
                glommio::spawn_local(async move { shard.partition_call(&name, index, op).await })
            })
        })
        .collect();
    let mut size = 0usize;
    let mut any_error = false;
    for (partition, read) in partitions.iter_mut().zip(reads) {
        let Some(read) = read else {
            any_error = true;
            continue;
        };
        partition.batches.clear();
        partition.diverging = None;
        match read.await {
            Ok(PartitionReply::ReplicaRead {
                batches,
                high_watermark,
                log_start_offset,
                diverging,
                error,
            }) => {
                partition.high_watermark = high_watermark.0;
                partition.log_start_offset = log_start_offset.0;
                partition.error = error;
                partition.diverging = diverging.map(|(epoch, end)| (epoch.0, end.0));
                let mut kept: Vec<Bytes> = Vec::new();
                for batch in batches {
                    if size > 0 && size + batch.len() > response_size_max {
                        break;
                    }
                    size += batch.len();
                    kept.push(batch);
                }
                partition.batches = kept;
            }
            Ok(_) => partition.error = ResponseError::UnknownServerError.into(),
            Err(error) => partition.error = error.code,
        }
        any_error |= partition.error.is_error() || partition.diverging.is_some();
    }
    (size, any_error)
}
