//! The request and response layouts of the versions Kafka 4.0 removed (KIP-896) and Kafka 3.9 still accepted,
//! which the `kafka-protocol` crate (generated from Kafka 4.x) no longer has: Produce v0–2, Fetch v0–3,
//! ListOffsets v0, OffsetCommit v0–1, OffsetFetch v0, CreateTopics v0–1, DeleteTopics v0, OffsetForLeaderEpoch
//! v0–1, DescribeConfigs v0, DescribeLogDirs v0. Requests are decoded into the codec's own structs, so the
//! handlers serve every version alike; responses are encoded from them. None of these versions is flexible.
//!
//! Where an old layout equals a newer one the codec knows (OffsetFetch v0 is v1, DescribeLogDirs v0 is v1,
//! OffsetCommit v0–1 responses are v2's, DeleteTopics v0 is v1 without the leading throttle time, …), the codec
//! does the work; the rest is written here field by field from Kafka 3.9's message definitions. Fetch v0–3
//! responses are written by `handlers::fetch`, which also converts their records down.

use std::any::Any;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};

/// The lowest version the codec crate knows for `api_key`; versions below it are this module's.
pub fn codec_min(api_key: ApiKey) -> i16 {
    match api_key {
        ApiKey::Produce => 3,
        ApiKey::Fetch => 4,
        ApiKey::ListOffsets
        | ApiKey::OffsetFetch
        | ApiKey::DeleteTopics
        | ApiKey::DescribeConfigs
        | ApiKey::DescribeLogDirs => 1,
        ApiKey::OffsetCommit | ApiKey::CreateTopics | ApiKey::OffsetForLeaderEpoch => 2,
        _ => 0,
    }
}

pub fn is_legacy(api_key: ApiKey, api_version: i16) -> bool {
    api_version < codec_min(api_key)
}

/// A cursor over a request body in the classic (non-flexible) encoding. Byte fields are sliced, not copied.
struct Reader {
    buffer: Bytes,
}

type Decoded<T> = Result<T, String>;

impl Reader {
    fn need(&self, size: usize, what: &str) -> Decoded<()> {
        if self.buffer.remaining() < size {
            return Err(format!("{what}: needs {size} bytes, {} left", self.buffer.remaining()));
        }
        Ok(())
    }

    fn i16(&mut self) -> Decoded<i16> {
        self.need(2, "int16")?;
        Ok(self.buffer.get_i16())
    }

    fn i32(&mut self) -> Decoded<i32> {
        self.need(4, "int32")?;
        Ok(self.buffer.get_i32())
    }

    fn i64(&mut self) -> Decoded<i64> {
        self.need(8, "int64")?;
        Ok(self.buffer.get_i64())
    }

    fn nullable_string(&mut self) -> Decoded<Option<StrBytes>> {
        let length = self.i16()?;
        if length < 0 {
            return Ok(None);
        }
        self.need(length as usize, "string")?;
        let bytes = self.buffer.split_to(length as usize);
        StrBytes::from_utf8(bytes).map(Some).map_err(|error| format!("string is not UTF-8: {error}"))
    }

    fn string(&mut self) -> Decoded<StrBytes> {
        self.nullable_string()?.ok_or_else(|| "a non-nullable string is null".to_string())
    }

    fn nullable_bytes(&mut self) -> Decoded<Option<Bytes>> {
        let length = self.i32()?;
        if length < 0 {
            return Ok(None);
        }
        self.need(length as usize, "bytes")?;
        Ok(Some(self.buffer.split_to(length as usize)))
    }

    /// An array of `element`s; its count is bounded by the bytes left (every element takes at least one).
    fn array<T>(&mut self, mut element: impl FnMut(&mut Reader) -> Decoded<T>) -> Decoded<Vec<T>> {
        let count = self.i32()?;
        if count < 0 {
            return Ok(Vec::new());
        }
        self.need(count as usize, "array")?;
        (0..count).map(|_| element(self)).collect()
    }
}

/// Decodes the body of a request of a version below [`codec_min`].
pub fn decode_request(api_key: ApiKey, api_version: i16, body: Bytes) -> Decoded<RequestKind> {
    let mut reader = Reader { buffer: body.clone() };
    let codec_decode = |version: i16, body: Bytes| -> Decoded<RequestKind> {
        RequestKind::decode(api_key, &mut body.clone(), version).map_err(|error| error.to_string())
    };
    // CreateTopics v0 and DescribeConfigs v0 are v2 and v1 without their last boolean (validate_only,
    // include_synonyms): false is appended. Requests of those APIs are small; the copy costs nothing.
    let with_false = || {
        let mut extended = BytesMut::from(&body[..]);
        extended.put_u8(0);
        extended.freeze()
    };
    let kind = match api_key {
        ApiKey::Produce => RequestKind::Produce(decode_produce(&mut reader)?),
        ApiKey::Fetch => RequestKind::Fetch(decode_fetch(&mut reader, api_version)?),
        ApiKey::ListOffsets => RequestKind::ListOffsets(decode_list_offsets(&mut reader)?),
        ApiKey::OffsetCommit => RequestKind::OffsetCommit(decode_offset_commit(&mut reader, api_version)?),
        ApiKey::OffsetForLeaderEpoch => {
            RequestKind::OffsetForLeaderEpoch(decode_offset_for_leader_epoch(&mut reader)?)
        }
        ApiKey::OffsetFetch | ApiKey::DeleteTopics | ApiKey::DescribeLogDirs => return codec_decode(1, body),
        ApiKey::CreateTopics if api_version == 1 => return codec_decode(2, body),
        ApiKey::CreateTopics => return codec_decode(2, with_false()),
        ApiKey::DescribeConfigs => return codec_decode(1, with_false()),
        other => return Err(format!("{other:?} v{api_version} has no legacy decoder")),
    };
    if reader.buffer.has_remaining() {
        return Err(format!("{} bytes after the request body", reader.buffer.remaining()));
    }
    Ok(kind)
}

/// Produce v0–2: acks, timeout, then topics of partitions of message sets (v3 adds the transactional id first).
fn decode_produce(reader: &mut Reader) -> Decoded<ProduceRequest> {
    let mut request = ProduceRequest::default();
    request.acks = reader.i16()?;
    request.timeout_ms = reader.i32()?;
    request.topic_data = reader.array(|reader| {
        let mut topic = TopicProduceData::default();
        topic.name = TopicName(reader.string()?);
        topic.partition_data = reader.array(|reader| {
            let mut partition = PartitionProduceData::default();
            partition.index = reader.i32()?;
            partition.records = reader.nullable_bytes()?;
            Ok(partition)
        })?;
        Ok(topic)
    })?;
    Ok(request)
}

/// Fetch v0–3: replica id, wait, min bytes, (v3) max bytes, topics of (partition, offset, max bytes). Sessionless,
/// read uncommitted, and without a response limit before v3 (Kafka's `Int.MaxValue`).
fn decode_fetch(reader: &mut Reader, api_version: i16) -> Decoded<FetchRequest> {
    let mut request = FetchRequest::default();
    request.replica_id = BrokerId(reader.i32()?);
    request.max_wait_ms = reader.i32()?;
    request.min_bytes = reader.i32()?;
    request.max_bytes = if api_version >= 3 { reader.i32()? } else { i32::MAX };
    request.isolation_level = 0;
    request.session_id = 0;
    request.session_epoch = -1;
    request.topics = reader.array(|reader| {
        let mut topic = FetchTopic::default();
        topic.topic = TopicName(reader.string()?);
        topic.partitions = reader.array(|reader| {
            let mut partition = FetchPartition::default();
            partition.partition = reader.i32()?;
            partition.fetch_offset = reader.i64()?;
            partition.partition_max_bytes = reader.i32()?;
            partition.current_leader_epoch = -1;
            partition.last_fetched_epoch = -1;
            partition.log_start_offset = -1;
            Ok(partition)
        })?;
        Ok(topic)
    })?;
    Ok(request)
}

/// ListOffsets v0: replica id, topics of (partition, timestamp, max number of offsets). Only the first offset
/// is answered (see [`encode_list_offsets_v0`]), so the maximum is read and dropped.
fn decode_list_offsets(reader: &mut Reader) -> Decoded<ListOffsetsRequest> {
    let mut request = ListOffsetsRequest::default();
    request.replica_id = BrokerId(reader.i32()?);
    request.topics = reader.array(|reader| {
        let mut topic = ListOffsetsTopic::default();
        topic.name = TopicName(reader.string()?);
        topic.partitions = reader.array(|reader| {
            let mut partition = ListOffsetsPartition::default();
            partition.partition_index = reader.i32()?;
            partition.timestamp = reader.i64()?;
            let _max_num_offsets = reader.i32()?;
            partition.current_leader_epoch = -1;
            Ok(partition)
        })?;
        Ok(topic)
    })?;
    Ok(request)
}

/// OffsetCommit v0 (group, topics of (partition, offset, metadata)) and v1 (adds generation and member id, and
/// a per-partition commit timestamp, which Kafka ignored since 0.10.1 and is dropped here too).
fn decode_offset_commit(reader: &mut Reader, api_version: i16) -> Decoded<OffsetCommitRequest> {
    let mut request = OffsetCommitRequest::default();
    request.group_id = GroupId(reader.string()?);
    request.generation_id_or_member_epoch = -1;
    if api_version >= 1 {
        request.generation_id_or_member_epoch = reader.i32()?;
        request.member_id = reader.string()?;
    }
    request.retention_time_ms = -1;
    request.topics = reader.array(|reader| {
        let mut topic = OffsetCommitRequestTopic::default();
        topic.name = TopicName(reader.string()?);
        topic.partitions = reader.array(|reader| {
            let mut partition = OffsetCommitRequestPartition::default();
            partition.partition_index = reader.i32()?;
            partition.committed_offset = reader.i64()?;
            if api_version >= 1 {
                let _commit_timestamp = reader.i64()?;
            }
            partition.committed_leader_epoch = -1;
            partition.committed_metadata = reader.nullable_string()?;
            Ok(partition)
        })?;
        Ok(topic)
    })?;
    Ok(request)
}

/// OffsetForLeaderEpoch v0–1: topics of (partition, leader epoch); v2 adds the current leader epoch.
fn decode_offset_for_leader_epoch(reader: &mut Reader) -> Decoded<OffsetForLeaderEpochRequest> {
    let mut request = OffsetForLeaderEpochRequest::default();
    request.replica_id = BrokerId(-2);
    request.topics = reader.array(|reader| {
        let mut topic = OffsetForLeaderTopic::default();
        topic.topic = TopicName(reader.string()?);
        topic.partitions = reader.array(|reader| {
            let mut partition = OffsetForLeaderPartition::default();
            partition.partition = reader.i32()?;
            partition.current_leader_epoch = -1;
            partition.leader_epoch = reader.i32()?;
            Ok(partition)
        })?;
        Ok(topic)
    })?;
    Ok(request)
}

fn put_string(output: &mut BytesMut, text: &str) {
    output.put_i16(text.len() as i16);
    output.put_slice(text.as_bytes());
}

fn put_nullable_string(output: &mut BytesMut, text: Option<&str>) {
    match text {
        Some(text) => put_string(output, text),
        None => output.put_i16(-1),
    }
}

fn put_array<T>(output: &mut BytesMut, items: &[T], mut element: impl FnMut(&mut BytesMut, &T)) {
    output.put_i32(items.len() as i32);
    for item in items {
        element(output, item);
    }
}

/// Encodes `body`, a response to a request of a version below [`codec_min`], onto `output`.
pub fn encode_response(
    api_key: ApiKey,
    api_version: i16,
    body: &dyn Any,
    output: &mut BytesMut,
) -> Result<(), String> {
    let wrong_type = || format!("{api_key:?} v{api_version}: the response is not a {api_key:?} response");
    match api_key {
        ApiKey::Produce => encode_produce(api_version, body.downcast_ref().ok_or_else(wrong_type)?, output),
        ApiKey::ListOffsets => encode_list_offsets_v0(body.downcast_ref().ok_or_else(wrong_type)?, output),
        ApiKey::OffsetCommit => codec_encode::<OffsetCommitResponse>(body, 2, 0, output),
        ApiKey::OffsetFetch => codec_encode::<OffsetFetchResponse>(body, 1, 0, output),
        ApiKey::DescribeLogDirs => codec_encode::<DescribeLogDirsResponse>(body, 1, 0, output),
        ApiKey::DeleteTopics => codec_encode::<DeleteTopicsResponse>(body, 1, 4, output),
        ApiKey::CreateTopics if api_version == 1 => codec_encode::<CreateTopicsResponse>(body, 2, 4, output),
        ApiKey::CreateTopics => encode_create_topics_v0(body.downcast_ref().ok_or_else(wrong_type)?, output),
        ApiKey::OffsetForLeaderEpoch if api_version == 1 => {
            codec_encode::<OffsetForLeaderEpochResponse>(body, 2, 4, output)
        }
        ApiKey::OffsetForLeaderEpoch => {
            encode_offset_for_leader_epoch_v0(body.downcast_ref().ok_or_else(wrong_type)?, output)
        }
        ApiKey::DescribeConfigs => {
            encode_describe_configs_v0(body.downcast_ref().ok_or_else(wrong_type)?, output)
        }
        other => Err(format!("{other:?} v{api_version} has no legacy encoder")),
    }
}

/// Encodes `body` with the codec at `version`, whose layout is the old one's after its first `skip` bytes (a
/// throttle time the old version did not have).
fn codec_encode<M: Encodable + 'static>(
    body: &dyn Any,
    version: i16,
    skip: usize,
    output: &mut BytesMut,
) -> Result<(), String> {
    let body: &M = body.downcast_ref().ok_or("the response is not of the expected type")?;
    let mut encoded = BytesMut::new();
    body.encode(&mut encoded, version).map_err(|error| error.to_string())?;
    if encoded.len() < skip {
        return Err(format!("a v{version} encoding of {} bytes is shorter than {skip}", encoded.len()));
    }
    output.put_slice(&encoded[skip..]);
    Ok(())
}

/// Produce v0: topics of (partition, error, base offset); v1 adds the throttle time at the end, v2 the log
/// append time after each base offset.
fn encode_produce(api_version: i16, body: &ProduceResponse, output: &mut BytesMut) -> Result<(), String> {
    put_array(output, &body.responses, |output, topic| {
        put_string(output, &topic.name.0);
        put_array(output, &topic.partition_responses, |output, partition| {
            output.put_i32(partition.index);
            output.put_i16(partition.error_code);
            output.put_i64(partition.base_offset);
            if api_version >= 2 {
                output.put_i64(partition.log_append_time_ms);
            }
        });
    });
    if api_version >= 1 {
        output.put_i32(body.throttle_time_ms);
    }
    Ok(())
}

/// ListOffsets v0: topics of (partition, error, offsets). Kafka listed segment base offsets here; one offset,
/// the answer v1 gives, is what every v0 client reads (none asks for more than the first).
fn encode_list_offsets_v0(body: &ListOffsetsResponse, output: &mut BytesMut) -> Result<(), String> {
    put_array(output, &body.topics, |output, topic| {
        put_string(output, &topic.name.0);
        put_array(output, &topic.partitions, |output, partition| {
            output.put_i32(partition.partition_index);
            output.put_i16(partition.error_code);
            let offsets: &[i64] =
                if partition.offset >= 0 { std::slice::from_ref(&partition.offset) } else { &[] };
            put_array(output, offsets, |output, offset| output.put_i64(*offset));
        });
    });
    Ok(())
}

/// CreateTopics v0: topics of (name, error); v1 adds the error message.
fn encode_create_topics_v0(body: &CreateTopicsResponse, output: &mut BytesMut) -> Result<(), String> {
    put_array(output, &body.topics, |output, topic| {
        put_string(output, &topic.name.0);
        output.put_i16(topic.error_code);
    });
    Ok(())
}

/// OffsetForLeaderEpoch v0: topics of (error, partition, end offset); v1 adds the leader epoch.
fn encode_offset_for_leader_epoch_v0(
    body: &OffsetForLeaderEpochResponse,
    output: &mut BytesMut,
) -> Result<(), String> {
    put_array(output, &body.topics, |output, topic| {
        put_string(output, &topic.topic.0);
        put_array(output, &topic.partitions, |output, partition| {
            output.put_i16(partition.error_code);
            output.put_i32(partition.partition);
            output.put_i64(partition.end_offset);
        });
    });
    Ok(())
}

/// DescribeConfigs v0: as v1, but each entry has `is_default` where v1 has `config_source`, and no synonyms.
fn encode_describe_configs_v0(body: &DescribeConfigsResponse, output: &mut BytesMut) -> Result<(), String> {
    /// `config_source` DEFAULT_CONFIG.
    const SOURCE_DEFAULT: i8 = 5;
    output.put_i32(body.throttle_time_ms);
    put_array(output, &body.results, |output, result| {
        output.put_i16(result.error_code);
        put_nullable_string(output, result.error_message.as_deref());
        output.put_i8(result.resource_type);
        put_string(output, &result.resource_name);
        put_array(output, &result.configs, |output, config| {
            put_string(output, &config.name);
            put_nullable_string(output, config.value.as_deref());
            output.put_u8(u8::from(config.read_only));
            output.put_u8(u8::from(config.config_source == SOURCE_DEFAULT));
            output.put_u8(u8::from(config.is_sensitive));
        });
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(output: &mut Vec<u8>, text: &str) {
        output.extend_from_slice(&(text.len() as i16).to_be_bytes());
        output.extend_from_slice(text.as_bytes());
    }

    #[test]
    fn produce_v2_decodes_and_answers_in_its_layout() {
        // Proves a Produce v2 body written from the spec decodes (records sliced whole) and the answer carries
        // exactly v2's fields.
        let mut body = Vec::new();
        body.extend_from_slice(&1i16.to_be_bytes()); // acks
        body.extend_from_slice(&1500i32.to_be_bytes()); // timeout
        body.extend_from_slice(&1i32.to_be_bytes());
        string(&mut body, "t");
        body.extend_from_slice(&1i32.to_be_bytes());
        body.extend_from_slice(&3i32.to_be_bytes()); // partition
        body.extend_from_slice(&4i32.to_be_bytes());
        body.extend_from_slice(b"abcd");
        let RequestKind::Produce(request) =
            decode_request(ApiKey::Produce, 2, Bytes::from(body.clone())).unwrap()
        else {
            panic!("not a produce request");
        };
        assert_eq!((request.acks, request.timeout_ms), (1, 1500));
        assert_eq!(request.topic_data[0].name.0.as_str(), "t");
        assert_eq!(request.topic_data[0].partition_data[0].index, 3);
        assert_eq!(request.topic_data[0].partition_data[0].records.as_deref(), Some(&b"abcd"[..]));
        assert!(decode_request(ApiKey::Produce, 2, Bytes::from(body[..body.len() - 1].to_vec())).is_err());

        let mut response = ProduceResponse::default();
        let mut topic = kafka_protocol::messages::produce_response::TopicProduceResponse::default();
        topic.name = TopicName(StrBytes::from_static_str("t"));
        let mut partition = kafka_protocol::messages::produce_response::PartitionProduceResponse::default();
        partition.index = 3;
        partition.base_offset = 42;
        partition.log_append_time_ms = -1;
        topic.partition_responses = vec![partition];
        response.responses = vec![topic];
        for (version, size) in [(0, 4 + 3 + 4 + 14), (1, 4 + 3 + 4 + 14 + 4), (2, 4 + 3 + 4 + 22 + 4)] {
            let mut output = BytesMut::new();
            encode_response(ApiKey::Produce, version, &response, &mut output).unwrap();
            assert_eq!(output.len(), size, "v{version}");
            assert_eq!(&output[11..15], &3i32.to_be_bytes());
            assert_eq!(&output[17..25], &42i64.to_be_bytes());
        }
    }

    #[test]
    fn every_legacy_api_decodes_its_oldest_version() {
        // Proves each removed version's request layout decodes into the codec's struct.
        let mut fetch = Vec::new();
        for value in [-1i32, 500, 1] {
            fetch.extend_from_slice(&value.to_be_bytes());
        }
        fetch.extend_from_slice(&1i32.to_be_bytes());
        string(&mut fetch, "t");
        fetch.extend_from_slice(&1i32.to_be_bytes());
        fetch.extend_from_slice(&0i32.to_be_bytes());
        fetch.extend_from_slice(&7i64.to_be_bytes());
        fetch.extend_from_slice(&1024i32.to_be_bytes());
        let RequestKind::Fetch(request) = decode_request(ApiKey::Fetch, 0, Bytes::from(fetch)).unwrap()
        else {
            panic!("not a fetch");
        };
        assert_eq!(request.max_bytes, i32::MAX);
        assert_eq!(request.topics[0].partitions[0].fetch_offset, 7);
        assert_eq!(request.topics[0].partitions[0].partition_max_bytes, 1024);

        let mut create = Vec::new();
        create.extend_from_slice(&1i32.to_be_bytes());
        string(&mut create, "t");
        create.extend_from_slice(&2i32.to_be_bytes()); // partitions
        create.extend_from_slice(&1i16.to_be_bytes()); // replication factor
        create.extend_from_slice(&0i32.to_be_bytes()); // assignments
        create.extend_from_slice(&0i32.to_be_bytes()); // configs
        create.extend_from_slice(&1000i32.to_be_bytes()); // timeout
        let RequestKind::CreateTopics(request) =
            decode_request(ApiKey::CreateTopics, 0, Bytes::from(create)).unwrap()
        else {
            panic!("not a create");
        };
        assert_eq!(request.topics[0].num_partitions, 2);
        assert!(!request.validate_only);

        let mut commit = Vec::new();
        string(&mut commit, "g");
        commit.extend_from_slice(&1i32.to_be_bytes());
        string(&mut commit, "t");
        commit.extend_from_slice(&1i32.to_be_bytes());
        commit.extend_from_slice(&0i32.to_be_bytes());
        commit.extend_from_slice(&9i64.to_be_bytes());
        string(&mut commit, "meta");
        let RequestKind::OffsetCommit(request) =
            decode_request(ApiKey::OffsetCommit, 0, Bytes::from(commit)).unwrap()
        else {
            panic!("not a commit");
        };
        assert_eq!(request.topics[0].partitions[0].committed_offset, 9);
        assert_eq!(request.generation_id_or_member_epoch, -1);
    }
}
