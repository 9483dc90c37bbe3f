//! The floor's Kafka side: decode a request frame, and encode its answer. Only what `sluice-bench` needs to route
//! and produce: ApiVersions, Metadata, CreateTopics and Produce. Fetch and ListOffsets are advertised (sluice-bench's
//! version negotiation requires them) but never answered: a run against the floor has no consumers.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, BrokerId, CreateTopicsRequest, CreateTopicsResponse, MetadataRequest,
    MetadataResponse, ProduceRequest, ProduceResponse, RequestHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

/// What the floor advertises: (API, lowest, highest). Produce, Metadata and CreateTopics stop where sluice-bench
/// stops, so both the floor and Sluice are driven with the same request versions; ApiVersions as Kafka 3.x.
pub const SUPPORTED_APIS: [(ApiKey, i16, i16); 6] = [
    (ApiKey::Produce, 3, 12),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 1, 12),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
];

const NODE_ID: i32 = 0;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const UNSUPPORTED_VERSION: i16 = 35;
const TOPIC_ALREADY_EXISTS: i16 = 36;
/// Partitions a CreateTopics with num_partitions = -1 (the broker's default) gets.
const PARTITION_COUNT_DEFAULT: i32 = 1;
/// Topics the floor remembers: sluice-bench creates a fresh topic per run (two with --evict-size).
const TOPIC_COUNT_MAX: usize = 10_000;

#[derive(Debug)]
pub enum AnswerError {
    Truncated {
        size: usize,
    },
    /// An API or version the floor does not serve; the connection is closed.
    Unsupported {
        api_key: i16,
        api_version: i16,
    },
    Codec {
        api_key: i16,
        api_version: i16,
        reason: String,
    },
}

impl fmt::Display for AnswerError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AnswerError::Truncated { size } => {
                write!(formatter, "request frame of {size} bytes has no header")
            }
            AnswerError::Unsupported { api_key, api_version } => {
                write!(formatter, "API key {api_key} version {api_version} is not served by the floor")
            }
            AnswerError::Codec { api_key, api_version, reason } => {
                write!(formatter, "API key {api_key} version {api_version}: {reason}")
            }
        }
    }
}

impl std::error::Error for AnswerError {}

/// The answer to one request: record bytes to append first (Produce only), then the reply frame (None for acks=0).
pub struct Answer {
    pub records: Vec<Bytes>,
    pub reply: Option<Bytes>,
}

/// What every connection shares: the advertised address and the topics created (name → partition count).
pub struct FloorState {
    pub host: String,
    pub port: i32,
    topics: Mutex<BTreeMap<String, i32>>,
}

impl FloorState {
    pub fn new(host: String, port: i32) -> Self {
        FloorState { host, port, topics: Mutex::new(BTreeMap::new()) }
    }

    fn topics(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, i32>> {
        self.topics.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Answers one request frame (the bytes after the size prefix). `offsets` is the core's record counter: the only
/// offsets the floor keeps.
pub fn answer(frame: Bytes, state: &FloorState, offsets: &AtomicI64) -> Result<Answer, AnswerError> {
    if frame.len() < 8 {
        return Err(AnswerError::Truncated { size: frame.len() });
    }
    let api_key_raw = i16::from_be_bytes([frame[0], frame[1]]);
    let api_version = i16::from_be_bytes([frame[2], frame[3]]);
    let unsupported = AnswerError::Unsupported { api_key: api_key_raw, api_version };
    let Ok(api_key) = ApiKey::try_from(api_key_raw) else { return Err(unsupported) };
    let Some(&(_, version_min, version_max)) = SUPPORTED_APIS.iter().find(|(key, _, _)| *key == api_key)
    else {
        return Err(unsupported);
    };
    let codec = |reason: String| AnswerError::Codec { api_key: api_key_raw, api_version, reason };
    let mut body = frame;
    if api_key == ApiKey::ApiVersions && api_version > version_max {
        // KIP-511: a version we do not know still gets the v0 layout with the list, so the client can retry lower.
        let correlation_id = i32::from_be_bytes([body[4], body[5], body[6], body[7]]);
        return reply(api_key, 0, correlation_id, &api_versions(UNSUPPORTED_VERSION)).map_err(codec);
    }
    if api_version < version_min || api_version > version_max {
        return Err(unsupported);
    }
    let header = RequestHeader::decode(&mut body, api_key.request_header_version(api_version))
        .map_err(|error| codec(format!("header: {error}")))?;
    let correlation_id = header.correlation_id;
    match api_key {
        ApiKey::Produce => {
            let request = ProduceRequest::decode(&mut body, api_version).map_err(|e| codec(e.to_string()))?;
            produce(request, api_version, correlation_id, offsets).map_err(codec)
        }
        ApiKey::Metadata => {
            let request =
                MetadataRequest::decode(&mut body, api_version).map_err(|e| codec(e.to_string()))?;
            reply(api_key, api_version, correlation_id, &metadata(&request, state)).map_err(codec)
        }
        ApiKey::CreateTopics => {
            let request =
                CreateTopicsRequest::decode(&mut body, api_version).map_err(|e| codec(e.to_string()))?;
            reply(api_key, api_version, correlation_id, &create_topics(&request, state)).map_err(codec)
        }
        ApiKey::ApiVersions => reply(api_key, api_version, correlation_id, &api_versions(0)).map_err(codec),
        _ => Err(unsupported),
    }
}

/// A whole response frame: size prefix, response header, body.
fn encode_frame<M: Encodable>(
    api_key: ApiKey,
    api_version: i16,
    correlation_id: i32,
    body: &M,
) -> Result<Bytes, String> {
    // ApiVersions always answers with header v0 (KIP-511).
    let header_version =
        if api_key == ApiKey::ApiVersions { 0 } else { api_key.response_header_version(api_version) };
    let size = body.compute_size(api_version).map_err(|error| error.to_string())?;
    let mut frame = BytesMut::with_capacity(size + 16);
    frame.put_i32(0);
    frame.put_i32(correlation_id);
    if header_version >= 1 {
        frame.put_u8(0); // no tagged fields
    }
    body.encode(&mut frame, api_version).map_err(|error| error.to_string())?;
    let frame_size = (frame.len() - 4) as i32;
    frame[0..4].copy_from_slice(&frame_size.to_be_bytes());
    Ok(frame.freeze())
}

fn reply<M: Encodable>(
    api_key: ApiKey,
    api_version: i16,
    correlation_id: i32,
    body: &M,
) -> Result<Answer, String> {
    Ok(Answer { records: Vec::new(), reply: Some(encode_frame(api_key, api_version, correlation_id, body)?) })
}

fn api_versions(error_code: i16) -> ApiVersionsResponse {
    let mut response = ApiVersionsResponse::default();
    response.error_code = error_code;
    response.api_keys = SUPPORTED_APIS
        .iter()
        .map(|&(key, min, max)| {
            let mut version = ApiVersion::default();
            version.api_key = key as i16;
            version.min_version = min;
            version.max_version = max;
            version
        })
        .collect();
    response
}

fn create_topics(request: &CreateTopicsRequest, state: &FloorState) -> CreateTopicsResponse {
    let mut topics = state.topics();
    let mut response = CreateTopicsResponse::default();
    for topic in &request.topics {
        let name = topic.name.0.as_str().to_owned();
        let partition_count =
            if topic.num_partitions > 0 { topic.num_partitions } else { PARTITION_COUNT_DEFAULT };
        let mut result = CreatableTopicResult::default();
        result.name = topic.name.clone();
        result.num_partitions = partition_count;
        result.replication_factor = 1;
        if topics.contains_key(&name) {
            result.error_code = TOPIC_ALREADY_EXISTS;
        } else if !request.validate_only && topics.len() < TOPIC_COUNT_MAX {
            topics.insert(name, partition_count);
        }
        response.topics.push(result);
    }
    response
}

fn metadata(request: &MetadataRequest, state: &FloorState) -> MetadataResponse {
    let topics = state.topics();
    let mut broker = MetadataResponseBroker::default();
    broker.node_id = BrokerId(NODE_ID);
    broker.host = StrBytes::from_string(state.host.clone());
    broker.port = state.port;
    let mut response = MetadataResponse::default();
    response.brokers = vec![broker];
    response.cluster_id = Some(StrBytes::from_static_str("sluice-floor"));
    response.controller_id = BrokerId(NODE_ID);
    let names: Vec<String> = match &request.topics {
        Some(requested) => requested
            .iter()
            .filter_map(|topic| topic.name.as_ref())
            .map(|name| name.0.as_str().to_owned())
            .collect(),
        None => topics.keys().cloned().collect(),
    };
    for name in names {
        let mut topic = MetadataResponseTopic::default();
        topic.name = Some(TopicName(StrBytes::from_string(name.clone())));
        match topics.get(&name) {
            Some(&partition_count) => {
                topic.partitions = (0..partition_count)
                    .map(|index| {
                        let mut partition = MetadataResponsePartition::default();
                        partition.partition_index = index;
                        partition.leader_id = BrokerId(NODE_ID);
                        partition.replica_nodes = vec![BrokerId(NODE_ID)];
                        partition.isr_nodes = vec![BrokerId(NODE_ID)];
                        partition
                    })
                    .collect();
            }
            None => topic.error_code = UNKNOWN_TOPIC_OR_PARTITION,
        }
        response.topics.push(topic);
    }
    response
}

/// Records in the v2 batches of `records`, read from each batch header's count field (no other check: a malformed
/// batch counts what its header claims, or stops the walk).
fn record_count(records: &[u8]) -> i64 {
    const LENGTH_END: usize = 12;
    const COUNT_START: usize = 57;
    let mut rest = records;
    let mut count = 0i64;
    while rest.len() >= COUNT_START + 4 {
        let batch_size = i32::from_be_bytes([rest[8], rest[9], rest[10], rest[11]]);
        count += i64::from(i32::from_be_bytes([rest[57], rest[58], rest[59], rest[60]]).max(0));
        let Ok(batch_size) = usize::try_from(batch_size) else { break };
        rest = rest.get(LENGTH_END + batch_size..).unwrap_or_default();
    }
    count
}

/// The records to append and the reply. Each partition's base offset comes from the core's counter.
fn produce(
    request: ProduceRequest,
    api_version: i16,
    correlation_id: i32,
    offsets: &AtomicI64,
) -> Result<Answer, String> {
    let mut records = Vec::new();
    let mut response = ProduceResponse::default();
    for topic in request.topic_data {
        let mut topic_response = TopicProduceResponse::default();
        topic_response.name = topic.name;
        for partition in topic.partition_data {
            let mut partition_response = PartitionProduceResponse::default();
            partition_response.index = partition.index;
            if let Some(bytes) = partition.records {
                partition_response.base_offset = offsets.fetch_add(record_count(&bytes), Ordering::Relaxed);
                records.push(bytes);
            }
            partition_response.log_append_time_ms = -1;
            topic_response.partition_responses.push(partition_response);
        }
        response.responses.push(topic_response);
    }
    let reply = if request.acks == 0 {
        None
    } else {
        Some(encode_frame(ApiKey::Produce, api_version, correlation_id, &response)?)
    };
    Ok(Answer { records, reply })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_storage::records::{BatchBuilder, Compression};

    #[test]
    fn record_count_walks_every_batch_header() {
        // Proves the count sums the header counts of back-to-back batches and stops on a truncated tail.
        let batch = |count: usize| {
            let mut builder = BatchBuilder::new(Compression::None, 4096);
            for _ in 0..count {
                builder.append(1, None, Some(&[&[7u8; 100][..]]));
            }
            builder.finish(4096).unwrap()
        };
        let mut two = batch(3).to_vec();
        two.extend_from_slice(&batch(5));
        assert_eq!(record_count(&two), 8);
        assert_eq!(
            record_count(&two[..two.len() - 1]),
            3 + 5,
            "the second header is whole even if its tail is not"
        );
        assert_eq!(record_count(&two[..40]), 0);
        assert_eq!(record_count(&[]), 0);
    }
}
