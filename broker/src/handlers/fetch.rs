//! Fetch (key 1), v4–16. Fetch sessions are declined (session id 0 in every response), so every request is a
//! full fetch. Long polling: when less than `min_bytes` is available the handler waits on the owners'
//! per-partition notifications (woken by appends that move the high watermark) or until `max_wait_ms`.
//!
//! The response is written by hand rather than through the codec so that record batches go out as their own
//! `Bytes` chunks (from the shard cache or a direct-I/O read buffer) with no copy in user space.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::FetchRequest;
use sluice_storage::records::put_varint_unsigned;

use super::{HandlerResult, RequestContext, Response};
use crate::cluster::partition::{PartitionOp, PartitionReply};
use crate::codec;
use crate::errors::{ErrorCode, KafkaError, ResponseError};
use crate::shard::Shard;
use crate::shard::ShardRequest;
use sluice_replication::{ShardId, TopicPartition};
use sluice_storage::Offset;

/// Bound on a fetch's wait, whatever the client asks (a parked request holds a connection slot).
const FETCH_WAIT_MAX: Duration = Duration::from_secs(30);

struct PartitionFetch {
    index: i32,
    offset: i64,
    size_max: usize,
    /// The topic or partition does not exist: answered with `error`, never read.
    unknown: bool,
    error: ErrorCode,
    high_watermark: i64,
    log_start_offset: i64,
    batches: Vec<Bytes>,
}

struct TopicFetch {
    name: String,
    topic_id: [u8; 16],
    partitions: Vec<PartitionFetch>,
}

#[allow(clippy::too_many_lines)] // over 70 lines before the limit; to be split
pub async fn handle(shard: &Rc<Shard>, context: &RequestContext, body: FetchRequest) -> HandlerResult {
    let version = context.api_version;
    let table = shard.topics();
    let mut topics: Vec<TopicFetch> = body
        .topics
        .iter()
        .map(|topic| {
            let entry = if version >= 13 {
                table.find_by_id(topic.topic_id.as_bytes())
            } else {
                table.get(topic.topic.0.as_str())
            };
            let missing = if version >= 13 {
                ResponseError::UnknownTopicId
            } else {
                ResponseError::UnknownTopicOrPartition
            };
            TopicFetch {
                name: entry.map_or_else(|| topic.topic.0.to_string(), |entry| entry.name.clone()),
                topic_id: *topic.topic_id.as_bytes(),
                partitions: topic
                    .partitions
                    .iter()
                    .map(|partition| PartitionFetch {
                        index: partition.partition,
                        offset: partition.fetch_offset,
                        size_max: partition.partition_max_bytes.max(0) as usize,
                        unknown: false,
                        error: match entry {
                            None => missing.into(),
                            Some(entry)
                                if partition.partition < 0
                                    || partition.partition >= entry.partition_count =>
                            {
                                ResponseError::UnknownTopicOrPartition.into()
                            }
                            Some(_) => ErrorCode::NONE,
                        },
                        high_watermark: -1,
                        log_start_offset: -1,
                        batches: Vec::new(),
                    })
                    .map(|mut partition| {
                        partition.unknown = partition.error.is_error();
                        partition
                    })
                    .collect(),
            }
        })
        .collect();
    let response_size_max = if body.max_bytes <= 0 { usize::MAX } else { body.max_bytes as usize };
    let min_bytes = body.min_bytes.max(0) as usize;
    let wait = Duration::from_millis(body.max_wait_ms.max(0) as u64).min(FETCH_WAIT_MAX);
    let deadline = Instant::now() + wait;

    loop {
        // Every partition is read at once (its owner's cache, its disk, or across the mesh), each within a budget
        // fixed up front: its own limit, and what the response limit leaves after the partitions before it. A
        // partition with a budget returns at least one batch even when that batch is larger (which partition is
        // the first non-empty one is not known before the reads finish, and a consumer must never be stuck behind
        // a batch larger than its fetch size), so the response may pass max_bytes by that much.
        let mut reads = Vec::new();
        let mut planned = 0usize;
        for topic in topics.iter() {
            for partition in topic.partitions.iter().filter(|partition| !partition.unknown) {
                let budget = response_size_max.saturating_sub(planned).min(partition.size_max);
                let op = PartitionOp::Read {
                    offset: sluice_storage::Offset(partition.offset),
                    size_max: budget,
                    min_one: budget > 0,
                };
                planned = planned.saturating_add(budget.max(1));
                let (shard, name, index) = (shard.clone(), topic.name.clone(), partition.index);
                reads.push(glommio::spawn_local(async move { shard.partition_call(&name, index, op).await }));
            }
        }
        let mut reads = reads.into_iter();
        let mut total = 0usize;
        let mut any_error = false;
        for topic in topics.iter_mut() {
            for partition in topic.partitions.iter_mut() {
                if partition.unknown {
                    any_error = true;
                    continue;
                }
                let Some(read) = reads.next() else { break };
                match read.await {
                    Ok(PartitionReply::Read { batches, high_watermark, log_start_offset, error }) => {
                        total += batches.iter().map(Bytes::len).sum::<usize>();
                        partition.batches = batches;
                        partition.high_watermark = high_watermark.0;
                        partition.log_start_offset = log_start_offset.0;
                        partition.error = error;
                        any_error |= error.is_error();
                    }
                    Ok(_) => {
                        partition.error = ResponseError::UnknownServerError.into();
                        any_error = true;
                    }
                    Err(KafkaError { code, .. }) => {
                        partition.error = code;
                        any_error = true;
                    }
                }
            }
        }
        let now = Instant::now();
        if total >= min_bytes || any_error || now >= deadline || shard.is_shutting_down() {
            break;
        }
        wait_for_data(shard, &topics, deadline - now).await;
    }
    encode(context, &topics).map(Some)
}

/// Parks until an owner reports new data on any fetched partition, or `timeout`.
async fn wait_for_data(shard: &Rc<Shard>, topics: &[TopicFetch], timeout: Duration) {
    let mut by_owner: Vec<Vec<(TopicPartition, Offset)>> = vec![Vec::new(); shard.count];
    for topic in topics {
        for partition in &topic.partitions {
            by_owner[shard.owner(&topic.name, partition.index).0]
                .push((TopicPartition::new(&topic.name, partition.index), Offset(partition.offset)));
        }
    }
    let mut waits: Vec<Pin<Box<dyn Future<Output = ()>>>> = Vec::new();
    for (owner, partitions) in by_owner.into_iter().enumerate() {
        if partitions.is_empty() {
            continue;
        }
        let shard = shard.clone();
        waits.push(Box::pin(async move {
            let _ = shard.call(ShardId(owner), ShardRequest::WaitForData { partitions, timeout }).await;
        }));
    }
    let any = std::future::poll_fn(|context| {
        for wait in waits.iter_mut() {
            if wait.as_mut().poll(context).is_ready() {
                return Poll::Ready(());
            }
        }
        Poll::Pending
    });
    futures_lite::future::or(any, glommio::timer::sleep(timeout).map_unit()).await;
}

trait MapUnit {
    fn map_unit(self) -> impl Future<Output = ()>;
}

impl<F: Future> MapUnit for F {
    async fn map_unit(self) {
        self.await;
    }
}

/// Writes the response: header and fields into `head` buffers, record batches as their own chunks.
#[allow(clippy::too_many_lines)] // over 70 lines before the limit; to be split
fn encode(context: &RequestContext, topics: &[TopicFetch]) -> Result<Response, codec::CodecError> {
    let version = context.api_version;
    let flexible = version >= 12;
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut head = codec::begin_frame(context.api_key, version, context.correlation_id, 256);
    let put_array_size = |buffer: &mut BytesMut, count: usize| {
        if flexible {
            put_varint_unsigned(buffer, count as u64 + 1);
        } else {
            buffer.put_i32(count as i32);
        }
    };
    head.put_i32(0); // throttle_time_ms
    if version >= 7 {
        head.put_i16(0); // error_code
        head.put_i32(0); // session_id: fetch sessions are declined
    }
    put_array_size(&mut head, topics.len());
    let mut frame_size = 0usize;
    for topic in topics {
        if version >= 13 {
            head.put_slice(&topic.topic_id);
        } else if flexible {
            put_varint_unsigned(&mut head, topic.name.len() as u64 + 1);
            head.put_slice(topic.name.as_bytes());
        } else {
            head.put_i16(topic.name.len() as i16);
            head.put_slice(topic.name.as_bytes());
        }
        put_array_size(&mut head, topic.partitions.len());
        for partition in &topic.partitions {
            head.put_i32(partition.index);
            head.put_i16(partition.error.code());
            head.put_i64(partition.high_watermark);
            head.put_i64(partition.high_watermark); // last_stable_offset: no transactions yet
            if version >= 5 {
                head.put_i64(partition.log_start_offset);
            }
            put_array_size(&mut head, 0); // aborted_transactions
            if version >= 11 {
                head.put_i32(-1); // preferred_read_replica
            }
            let records_size: usize = partition.batches.iter().map(Bytes::len).sum();
            if flexible {
                put_varint_unsigned(&mut head, records_size as u64 + 1);
            } else {
                head.put_i32(records_size as i32);
            }
            if records_size > 0 {
                let finished = head.split().freeze();
                frame_size += finished.len();
                chunks.push(finished);
                for batch in &partition.batches {
                    frame_size += batch.len();
                    chunks.push(batch.clone());
                }
            }
            if flexible {
                head.put_u8(0); // partition tagged fields
            }
        }
        if flexible {
            head.put_u8(0); // topic tagged fields
        }
    }
    if flexible {
        head.put_u8(0); // response tagged fields
    }
    frame_size += head.len();
    chunks.push(head.freeze());
    // The size prefix sits in the first chunk.
    let mut first = BytesMut::from(&chunks[0][..]);
    codec::finish_frame(&mut first, frame_size);
    chunks[0] = first.freeze();
    Ok(Response { chunks })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{ApiKey, FetchResponse};
    use kafka_protocol::protocol::Decodable;

    /// The hand-written encoder agrees with the codec's decoder for every advertised version.
    #[test]
    fn hand_written_response_decodes_with_the_codec() {
        let batch = sluice_storage::batch::testing::make_batch(2, 2, 1000);
        for version in 4..=16 {
            let topics = vec![TopicFetch {
                name: "orders".into(),
                topic_id: [7; 16],
                partitions: vec![
                    PartitionFetch {
                        index: 0,
                        offset: 0,
                        size_max: 0,
                        unknown: false,
                        error: ErrorCode::NONE,
                        high_watermark: 2,
                        log_start_offset: 0,
                        batches: vec![batch.clone(), batch.clone()],
                    },
                    PartitionFetch {
                        index: 1,
                        offset: 9,
                        size_max: 0,
                        unknown: false,
                        error: ResponseError::OffsetOutOfRange.into(),
                        high_watermark: 0,
                        log_start_offset: 0,
                        batches: vec![],
                    },
                ],
            }];
            let context = RequestContext { api_key: ApiKey::Fetch, api_version: version, correlation_id: 42 };
            let response = encode(&context, &topics).unwrap();
            let mut frame = BytesMut::new();
            for chunk in &response.chunks {
                frame.extend_from_slice(chunk);
            }
            let mut frame = frame.freeze();
            let size = i32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
            assert_eq!(size + 4, frame.len(), "v{version}");
            let _ = frame.split_to(4);
            let header = codec::decode_response_header(&mut frame, ApiKey::Fetch, version).unwrap();
            assert_eq!(header.correlation_id, 42);
            let decoded = FetchResponse::decode(&mut frame, version).unwrap();
            assert!(frame.is_empty(), "v{version}: trailing bytes");
            let partitions = &decoded.responses[0].partitions;
            assert_eq!(partitions[0].high_watermark, 2);
            assert_eq!(partitions[0].records.as_ref().unwrap().len(), batch.len() * 2, "v{version}");
            assert_eq!(partitions[1].error_code, ResponseError::OffsetOutOfRange.code());
            if version >= 13 {
                assert_eq!(decoded.responses[0].topic_id.as_bytes(), &[7; 16]);
            } else {
                assert_eq!(decoded.responses[0].topic.0.as_str(), "orders");
            }
        }
    }
}
