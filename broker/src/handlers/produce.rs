//! Produce (key 0), v0–13. Two completions per partition: *sequenced* (offsets fixed; the connection may start
//! its next request) and *acknowledged* (durable per `acks` and the flush policy). Record sets are `Bytes`
//! slices of the request frame and reach the owning shard uncopied — except the message sets of v0–2 (formats
//! v0/v1), which are checked and converted to one v2 batch here ([`up_convert`]) so that the log stays all v2.
//! v13 names topics by id (KIP-516).

use std::rc::Rc;

use bytes::Bytes;

use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};

use super::{auto_create, str_bytes, topic_name, HandlerResult, RequestContext};
use crate::cluster::partition::{PartitionReply, PartitionResult};
use crate::errors::{KafkaError, ResponseError};
use crate::shard::{Acknowledgement, Shard};
use crate::sync::OneshotSender;
use sluice_replication::{Acks, TopicPartition};

type Pending = Acknowledgement;
/// A topic's name, its id (v13) and its partitions' pending answers, in request order.
type PendingTopic = (String, uuid::Uuid, Vec<(i32, Pending)>);

#[allow(clippy::too_many_lines)] // over 70 lines before the limit; to be split
pub async fn handle(
    shard: &Rc<Shard>,
    context: &RequestContext,
    body: ProduceRequest,
    sequenced: OneshotSender<()>,
) -> HandlerResult {
    let acks = body.acks;
    let version = context.api_version;
    let by_id = version >= 13;
    // Kafka checks acks before anything else: a request it refuses creates no topic.
    let valid_acks = matches!(acks, -1..=1);
    let names: Vec<String> = if by_id {
        let table = shard.topics();
        let name_of =
            |id: &[u8; 16]| table.find_by_id(id).map(|entry| entry.name.clone()).unwrap_or_default();
        body.topic_data.iter().map(|topic| name_of(topic.topic_id.as_bytes())).collect()
    } else {
        let names: Vec<String> = body.topic_data.iter().map(|topic| topic.name.0.to_string()).collect();
        if valid_acks {
            auto_create(shard, &names).await;
        }
        names
    };
    let missing = if by_id { ResponseError::UnknownTopicId } else { ResponseError::UnknownTopicOrPartition };
    let table = shard.topics();
    let mut pending: Vec<PendingTopic> = Vec::with_capacity(body.topic_data.len());
    let mut record_errors: std::collections::HashMap<(String, i32), Vec<i32>> = Default::default();
    for (topic, name) in body.topic_data.into_iter().zip(names) {
        let entry = table.get(&name);
        let mut partitions = Vec::with_capacity(topic.partition_data.len());
        for mut partition in topic.partition_data {
            let index = partition.index;
            let ready = |result: PartitionResult| -> Pending { Box::pin(std::future::ready(result)) };
            if version < 3 {
                match partition.records.map(up_convert).transpose() {
                    Ok(records) => partition.records = records,
                    Err(error) => {
                        partitions.push((index, ready(Err(error))));
                        continue;
                    }
                }
            }
            // A compacted topic refuses records without a key (the batch fails; record_errors name them).
            let mut keyless = match (entry, &partition.records) {
                (Some(entry), Some(records)) if crate::cluster::topic_table::is_compacted(&entry.configs) => {
                    sluice_storage::records::keyless_records(records).ok().filter(|found| !found.is_empty())
                }
                _ => None,
            };
            // Kafka's order: acks, the internal topic, the partition's existence, then the records themselves.
            let future: Pending = match (entry, partition.records) {
                _ if !valid_acks => ready(Err(KafkaError::new(ResponseError::InvalidRequiredAcks))),
                (None, _) => ready(Err(KafkaError::new(missing))),
                // Only the group coordinator writes the internal topic (Kafka refuses it the same way).
                (Some(entry), _) if entry.name == crate::group::OFFSETS_TOPIC => {
                    ready(Err(KafkaError::with_message(
                        ResponseError::InvalidTopicException,
                        "clients cannot produce to the internal topic __consumer_offsets",
                    )))
                }
                (Some(entry), _) if index < 0 || index >= entry.partition_count => {
                    ready(Err(KafkaError::new(ResponseError::UnknownTopicOrPartition)))
                }
                (Some(_), None) => ready(Err(KafkaError::new(ResponseError::CorruptMessage))),
                _ if keyless.is_some() => {
                    record_errors.insert((name.clone(), index), keyless.take().unwrap_or_default());
                    ready(Err(KafkaError::with_message(
                        ResponseError::InvalidRecord,
                        format!("compacted topic {name} cannot accept records without a key"),
                    )))
                }
                (Some(_), Some(records)) => match Acks::from_wire(acks) {
                    Some(acks) => shard.produce(&TopicPartition::new(&name, index), records, acks).await,
                    None => ready(Err(KafkaError::new(ResponseError::InvalidRequiredAcks))),
                },
            };
            partitions.push((index, future));
        }
        pending.push((name, topic.topic_id, partitions));
    }
    // Every partition is sequenced (local) or queued in order to its owner (remote).
    let _ = sequenced.send(());

    let mut responses = Vec::with_capacity(pending.len());
    for (name, topic_id, partitions) in pending {
        let mut partition_responses = Vec::with_capacity(partitions.len());
        for (index, future) in partitions {
            let mut response = PartitionProduceResponse::default();
            response.index = index;
            response.base_offset = -1;
            response.log_append_time_ms = -1;
            response.log_start_offset = -1;
            match future.await {
                Ok(PartitionReply::Appended { base_offset, log_append_time_ms, log_start_offset }) => {
                    response.base_offset = base_offset.0;
                    response.log_append_time_ms = log_append_time_ms;
                    response.log_start_offset = log_start_offset.0;
                }
                Ok(_) => response.error_code = ResponseError::UnknownServerError.code(),
                Err(error) => {
                    response.error_code = error.code.code();
                    if context.api_version >= 8 {
                        response.error_message = error.message.as_deref().map(str_bytes);
                        if let Some(indexes) = record_errors.remove(&(name.clone(), index)) {
                            response.record_errors = indexes
                                .into_iter()
                                .map(|batch_index| {
                                    let mut record_error = BatchIndexAndErrorMessage::default();
                                    record_error.batch_index = batch_index;
                                    record_error.batch_index_error_message =
                                        Some(str_bytes("Compacted topic cannot accept message without key."));
                                    record_error
                                })
                                .collect();
                        }
                    }
                }
            }
            if context.api_version < 5 {
                response.log_start_offset = -1;
            }
            partition_responses.push(response);
        }
        let mut topic = TopicProduceResponse::default();
        if by_id {
            topic.topic_id = topic_id;
        } else {
            topic.name = topic_name(&name);
        }
        topic.partition_responses = partition_responses;
        responses.push(topic);
    }
    if acks == 0 {
        return Ok(None);
    }
    let mut response = ProduceResponse::default();
    response.responses = responses;
    context.respond(&response)
}

/// A Produce v0–2 message set (formats v0/v1) as one v2 batch: CRC-32s checked, compressed wrappers unwrapped
/// and their codec kept, offsets left to the log, timestamps the messages' own or (magic 0) the broker's clock.
fn up_convert(message_set: Bytes) -> Result<Bytes, KafkaError> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64);
    sluice_storage::records::message_set::message_set_to_batch(&message_set, now_ms)
        .map_err(|error| KafkaError::with_message(ResponseError::CorruptMessage, error.0))
}
