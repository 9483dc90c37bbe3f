//! Fetch (key 1), v0–18, with KIP-74's response limit and KIP-227's fetch sessions ([`session`]). v17–18 add
//! only fields a follower sends.
//!
//! Reads: partitions are read concurrently (their owners' caches, disks in parallel, or across the mesh) in
//! *waves* of consecutive partitions, each read bounded by its own limit and by what the response has left when
//! the wave starts. The response is then assembled in order, charging each partition only the bytes it actually
//! returned (KIP-74): an empty partition costs nothing, the first partition with data always gets at least its
//! first batch even when that batch is larger than either limit, and data that no longer fits is dropped — that
//! partition is answered with no records and its high watermark, and the client fetches it next time.
//!
//! Memory: a wave takes partitions while the bytes they may return sum to less than what the response has left
//! (at least [`WAVE_SIZE_MIN`]), so one fetch holds at most that plus one partition's limit plus one oversized
//! first batch, and the response itself is capped at [`RESPONSE_SIZE_MAX`]. In the common catch-up case (a
//! response limit of tens of partitions' limits) the first wave reads every partition that can fit at once.
//!
//! Fairness across requests: a session keeps its partitions in fetch order and moves those that returned
//! records to the end, so partitions listed later are served on the next requests. Sessionless clients
//! (librdkafka) rotate their own lists.
//!
//! Long polling: when less than `min_bytes` is available the handler waits on the owners' per-partition
//! notifications (woken by appends that move the high watermark) or until `max_wait_ms`.
//!
//! The response is written by hand rather than through the codec so that record batches go out as their own
//! `Bytes` chunks (from the shard cache or a direct-I/O read buffer) with no copy in user space.
//!
//! Fetch v0–3 (removed in Kafka 4) predate record batches: their answers carry message sets of format v0 (Fetch
//! v0–1) or v1 (v2–3), converted down from the log's batches ([`down_convert`]) — a copy and, for compressed
//! batches, an inflation and a compression per response, so these old clients cost more per byte.

mod replica;
mod session;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::FetchRequest;
use sluice_storage::records::put_varint_unsigned;

use super::{HandlerResult, RequestContext, Response};
use crate::cluster::partition::{PartitionOp, PartitionReply, PartitionResult};
use crate::codec;
use crate::errors::{ErrorCode, KafkaError, ResponseError};
use crate::shard::Shard;
use crate::shard::ShardRequest;
use session::{Mode, PartitionKey, Plan, Served, Wanted};
use sluice_replication::{ShardId, TopicPartition};
use sluice_storage::Offset;

/// Bound on a fetch's wait, whatever the client asks (a parked request holds a connection slot).
const FETCH_WAIT_MAX: Duration = Duration::from_secs(30);

/// The most record bytes one response carries, whatever the client asks: Kafka's broker `fetch.max.bytes`
/// default (55 MiB, 57,671,680 bytes), a little above the Java consumer's 50 MiB default request limit.
const RESPONSE_SIZE_MAX: usize = 55 << 20;

/// A wave of reads may plan at least this many bytes, so that a small response limit (even 1 byte) still reads
/// many partitions at once instead of one after another; 1 MiB is the default per-partition limit of the Java
/// consumer and librdkafka, so it costs no more memory than one ordinary partition read.
const WAVE_SIZE_MIN: usize = 1 << 20;

/// A topic as the response names it.
struct Topic {
    name: String,
    topic_id: [u8; 16],
}

struct PartitionFetch {
    topic: Rc<Topic>,
    index: i32,
    offset: i64,
    size_max: usize,
    /// The topic or partition does not exist: answered with `error`, never read.
    unknown: bool,
    error: ErrorCode,
    high_watermark: i64,
    log_start_offset: i64,
    batches: Vec<Bytes>,
    /// Left out of an incremental session's response: nothing new since the client last heard of it.
    omitted: bool,
    /// A follower's log diverges (KIP-320, v12+): the epoch and where it ends on the leader.
    diverging: Option<(i32, i64)>,
}

impl PartitionFetch {
    /// Below the high watermark and readable: a read that returned nothing was held back by its limit.
    fn has_unread_data(&self) -> bool {
        !self.unknown && !self.error.is_error() && self.offset < self.high_watermark
    }
}

pub async fn handle(shard: &Rc<Shard>, context: &RequestContext, body: FetchRequest) -> HandlerResult {
    let version = context.api_version;
    let replica_id = if version >= 15 { body.replica_state.replica_id.0 } else { body.replica_id.0 };
    if replica_id >= 0 && shard.cluster.is_some() {
        return replica::handle(shard, context, body, replica_id).await;
    }
    let (requested, forgotten) = request_partitions(&body, version);
    let begun = session::CACHE.with_borrow_mut(|cache| {
        cache.begin(version, body.session_id, body.session_epoch, requested, &forgotten)
    });
    let plan = match begun {
        Ok(plan) => plan,
        Err(error) => return encode(context, error.into(), 0, &[]).map(Some),
    };
    let mut partitions = resolve(shard, version, &plan.wanted);
    let response_size_max = match usize::try_from(body.max_bytes) {
        Ok(size) if size > 0 => size.min(RESPONSE_SIZE_MAX),
        _ => RESPONSE_SIZE_MAX,
    };
    let min_bytes = body.min_bytes.max(0) as usize;
    let wait = Duration::from_millis(body.max_wait_ms.max(0) as u64).min(FETCH_WAIT_MAX);
    let deadline = Instant::now() + wait;
    loop {
        let read = read_partitions(shard, &mut partitions, response_size_max).await;
        let now = Instant::now();
        if read.size >= min_bytes || read.any_error || now >= deadline || shard.is_shutting_down() {
            break;
        }
        wait_for_data(shard, &partitions, deadline - now, false).await;
    }
    let session_id = finish_session(&plan, &mut partitions);
    if version < 4 {
        down_convert(version, &mut partitions);
    }
    encode(context, ErrorCode::NONE, session_id, &partitions).map(Some)
}

/// The request's partitions in its order, and the partitions it asks its session to forget.
fn request_partitions(body: &FetchRequest, version: i16) -> (Vec<Wanted>, Vec<PartitionKey>) {
    let topic_key = |name: &str, topic_id: &[u8; 16]| {
        if version >= 13 {
            (String::new(), *topic_id)
        } else {
            (name.to_string(), [0; 16])
        }
    };
    let mut requested = Vec::new();
    for topic in &body.topics {
        let (name, topic_id) = topic_key(topic.topic.0.as_str(), topic.topic_id.as_bytes());
        for partition in &topic.partitions {
            requested.push(Wanted {
                key: PartitionKey { topic: name.clone(), topic_id, index: partition.partition },
                offset: partition.fetch_offset,
                size_max: partition.partition_max_bytes.max(0) as usize,
            });
        }
    }
    let mut forgotten = Vec::new();
    for topic in &body.forgotten_topics_data {
        let (name, topic_id) = topic_key(topic.topic.0.as_str(), topic.topic_id.as_bytes());
        for index in &topic.partitions {
            forgotten.push(PartitionKey { topic: name.clone(), topic_id, index: *index });
        }
    }
    (requested, forgotten)
}

/// A topic as a request names it, and its partition count (`None`: no such topic).
type TopicLookup = (Rc<Topic>, Option<i32>);

/// Looks the plan's partitions up in the topic table: unknown topics and partitions are answered with an error.
fn resolve(shard: &Rc<Shard>, version: i16, wanted: &[Wanted]) -> Vec<PartitionFetch> {
    let table = shard.topics();
    let missing =
        if version >= 13 { ResponseError::UnknownTopicId } else { ResponseError::UnknownTopicOrPartition };
    // Topic lookups by id scan the table: one per distinct topic, not per partition.
    let mut topics: HashMap<(&str, [u8; 16]), TopicLookup> = HashMap::new();
    let mut partitions = Vec::with_capacity(wanted.len());
    for wanted in wanted {
        let key = &wanted.key;
        let (topic, partition_count) = topics
            .entry((key.topic.as_str(), key.topic_id))
            .or_insert_with(|| {
                let entry =
                    if version >= 13 { table.find_by_id(&key.topic_id) } else { table.get(&key.topic) };
                let name = entry.map_or_else(|| key.topic.clone(), |entry| entry.name.clone());
                let topic = Rc::new(Topic { name, topic_id: key.topic_id });
                (topic, entry.map(|entry| entry.partition_count))
            })
            .clone();
        let error = match partition_count {
            None => missing.into(),
            Some(count) if key.index < 0 || key.index >= count => {
                ResponseError::UnknownTopicOrPartition.into()
            }
            Some(_) => ErrorCode::NONE,
        };
        partitions.push(PartitionFetch {
            topic,
            index: key.index,
            offset: wanted.offset,
            size_max: wanted.size_max,
            unknown: error.is_error(),
            error,
            high_watermark: -1,
            log_start_offset: -1,
            batches: Vec::new(),
            omitted: false,
            diverging: None,
        });
    }
    partitions
}

/// What one pass over the partitions put in the response.
struct ReadOutcome {
    size: usize,
    any_error: bool,
}

/// The response being assembled in order: what it holds and what it has left.
struct Assembly {
    size: usize,
    remaining: usize,
    /// The first batch kept past the limits (KIP-74's exception), 0 when none.
    exception_size: usize,
}

impl Assembly {
    /// Keeps the prefix of `partition`'s batches that fits what the response has left — and the first batch of
    /// the first partition with data whatever its size — and drops the rest, which the client fetches next time.
    fn keep(&mut self, partition: &mut PartitionFetch) {
        let mut kept_size = 0usize;
        let mut kept_count = 0usize;
        for batch in &partition.batches {
            let first = self.size == 0 && kept_count == 0;
            if kept_size + batch.len() > self.remaining {
                if !first {
                    break;
                }
                self.exception_size = batch.len();
            }
            kept_size += batch.len();
            kept_count += 1;
        }
        partition.batches.truncate(kept_count);
        self.size += kept_size;
        self.remaining = self.remaining.saturating_sub(kept_size);
    }
}

/// Reads every partition (in waves, see the module comment) and keeps what fits the response, in order.
async fn read_partitions(
    shard: &Rc<Shard>,
    partitions: &mut [PartitionFetch],
    response_size_max: usize,
) -> ReadOutcome {
    let mut assembly = Assembly { size: 0, remaining: response_size_max, exception_size: 0 };
    let mut any_error = false;
    let mut start = 0;
    while start < partitions.len() {
        let end = read_wave_end(partitions, start, assembly.remaining);
        let wave = &mut partitions[start..end];
        let remaining = assembly.remaining;
        let response_empty = assembly.size == 0;
        // The wave's first partition may be the response's first with data: it gets KIP-74's exception now
        // rather than a second read. Any later one that turns out to be first gets a second read below.
        let reads: Vec<_> = wave
            .iter()
            .enumerate()
            .map(|(position, partition)| {
                (!partition.unknown)
                    .then(|| spawn_read(shard, partition, remaining, response_empty && position == 0))
            })
            .collect();
        for (partition, read) in wave.iter_mut().zip(reads) {
            let Some(read) = read else {
                any_error = true;
                continue;
            };
            apply_read(partition, read.await);
            if partition.batches.is_empty() && assembly.size == 0 && partition.has_unread_data() {
                let read = spawn_read(shard, partition, assembly.remaining, true);
                apply_read(partition, read.await);
            }
            any_error |= partition.error.is_error();
            assembly.keep(partition);
        }
        start = end;
    }
    assert!(
        assembly.size <= response_size_max.saturating_add(assembly.exception_size),
        "a response of {} bytes passed its limit of {response_size_max} by more than one batch of {}",
        assembly.size,
        assembly.exception_size,
    );
    ReadOutcome { size: assembly.size, any_error }
}

/// The end of the wave of reads that starts at `start`: partitions join while the bytes they may return (each
/// its own limit, at most `remaining`) sum to less than `remaining` or [`WAVE_SIZE_MIN`]. Once the response is
/// full every partition left joins one wave of reads of no bytes, which only learn high watermarks.
fn read_wave_end(partitions: &[PartitionFetch], start: usize, remaining: usize) -> usize {
    let wave_size_max = remaining.max(WAVE_SIZE_MIN);
    let mut planned = 0usize;
    let mut end = start;
    while end < partitions.len() && planned < wave_size_max {
        if !partitions[end].unknown {
            planned = planned.saturating_add(partitions[end].size_max.min(remaining));
        }
        end += 1;
    }
    assert!(end > start || start == partitions.len(), "a wave holds at least one partition");
    end
}

/// Starts reading `partition` on its owner, within its own limit and `remaining`.
fn spawn_read(
    shard: &Rc<Shard>,
    partition: &PartitionFetch,
    remaining: usize,
    min_one: bool,
) -> glommio::Task<PartitionResult> {
    let op = PartitionOp::Read {
        offset: Offset(partition.offset),
        size_max: partition.size_max.min(remaining),
        min_one,
    };
    let (shard, name, index) = (shard.clone(), partition.topic.name.clone(), partition.index);
    glommio::spawn_local(async move { shard.partition_call(&name, index, op).await })
}

fn apply_read(partition: &mut PartitionFetch, read: PartitionResult) {
    match read {
        Ok(PartitionReply::Read { batches, high_watermark, log_start_offset, error }) => {
            partition.batches = batches;
            partition.high_watermark = high_watermark.0;
            partition.log_start_offset = log_start_offset.0;
            partition.error = error;
        }
        Ok(_) => {
            partition.batches.clear();
            partition.error = ResponseError::UnknownServerError.into();
        }
        Err(KafkaError { code, .. }) => {
            partition.batches.clear();
            partition.error = code;
        }
    }
}

/// Opens or updates the request's session with what was answered; marks the partitions an incremental response
/// leaves out. Returns the session id for the response (0: none).
fn finish_session(plan: &Plan, partitions: &mut [PartitionFetch]) -> i32 {
    assert_eq!(plan.wanted.len(), partitions.len(), "one partition answered per partition planned");
    let served: Vec<Served> = partitions
        .iter()
        .map(|partition| Served {
            high_watermark: partition.high_watermark,
            log_start_offset: partition.log_start_offset,
            has_records: !partition.batches.is_empty(),
            has_error: partition.error.is_error(),
        })
        .collect();
    match plan.mode {
        Mode::Sessionless => 0,
        Mode::New => session::CACHE.with_borrow_mut(|cache| cache.create(&plan.wanted, &served)),
        Mode::Incremental { id } => {
            let listed = session::CACHE.with_borrow_mut(|cache| cache.finish(id, &plan.wanted, &served));
            for (partition, listed) in partitions.iter_mut().zip(listed) {
                partition.omitted = !listed;
            }
            id
        }
    }
}

/// Parks until an owner reports new data on any fetched partition (past the high watermark, or for a follower's
/// fetch past the log end), or `timeout`.
async fn wait_for_data(shard: &Rc<Shard>, partitions: &[PartitionFetch], timeout: Duration, replica: bool) {
    let mut by_owner: Vec<Vec<(TopicPartition, Offset)>> = vec![Vec::new(); shard.count];
    for partition in partitions.iter().filter(|partition| !partition.unknown) {
        let name = &partition.topic.name;
        by_owner[shard.owner(name, partition.index).0]
            .push((TopicPartition::new(name, partition.index), Offset(partition.offset)));
    }
    let mut waits: Vec<Pin<Box<dyn Future<Output = ()>>>> = Vec::new();
    for (owner, partitions) in by_owner.into_iter().enumerate() {
        if partitions.is_empty() {
            continue;
        }
        let shard = shard.clone();
        waits.push(Box::pin(async move {
            let request = ShardRequest::WaitForData { partitions, timeout, replica };
            let _ = shard.call(ShardId(owner), request).await;
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

/// Replaces each partition's batches by one message set of the format Fetch `version` (0–3) reads: magic 0 for
/// v0–1, magic 1 for v2–3. Before v3 the partition's limit holds and a first message larger than it is sent in
/// part, as Kafka did (old clients then retry with a larger limit); v3 keeps what the read kept (KIP-74's first
/// batch). zstd batches cannot be expressed: the partition gets UNSUPPORTED_COMPRESSION_TYPE, as from Kafka.
fn down_convert(version: i16, partitions: &mut [PartitionFetch]) {
    use sluice_storage::records::message_set::{batches_to_message_set, ConversionError, MAGIC_V0, MAGIC_V1};
    assert!(version < 4, "Fetch v{version} carries record batches");
    let magic = if version >= 2 { MAGIC_V1 } else { MAGIC_V0 };
    for partition in partitions.iter_mut().filter(|partition| !partition.batches.is_empty()) {
        let fetched_size: usize = partition.batches.iter().map(Bytes::len).sum();
        let size_max = if version >= 3 { partition.size_max.max(fetched_size) } else { partition.size_max };
        let fetched = match partition.batches.as_slice() {
            [one] => one.clone(),
            many => many.concat().into(),
        };
        let mut message_set = BytesMut::with_capacity(fetched_size + fetched_size / 4);
        match batches_to_message_set(&fetched, magic, partition.offset, size_max, &mut message_set) {
            Ok(()) => partition.batches = vec![message_set.freeze()],
            Err(error) => {
                partition.batches.clear();
                partition.error = match error {
                    ConversionError::UnsupportedCompression(_) => {
                        ResponseError::UnsupportedCompressionType.into()
                    }
                    ConversionError::Corrupt(_) => ResponseError::CorruptMessage.into(),
                };
            }
        }
        partition.batches.retain(|batch| !batch.is_empty());
    }
}

/// The listed partitions grouped into runs of one topic, in order: a session's rotation can list a topic's
/// partitions apart, and then the topic appears once per run, as Kafka's responses do.
fn topic_runs(partitions: &[PartitionFetch]) -> Vec<Vec<&PartitionFetch>> {
    let mut runs: Vec<Vec<&PartitionFetch>> = Vec::new();
    for partition in partitions.iter().filter(|partition| !partition.omitted) {
        match runs.last_mut() {
            Some(run) if Rc::ptr_eq(&run[0].topic, &partition.topic) => run.push(partition),
            _ => runs.push(vec![partition]),
        }
    }
    runs
}

/// A response under construction: header and fields in `head`, record batches as their own chunks.
struct Encoder {
    version: i16,
    flexible: bool,
    head: BytesMut,
    chunks: Vec<Bytes>,
    frame_size: usize,
}

impl Encoder {
    fn put_array_size(&mut self, count: usize) {
        if self.flexible {
            put_varint_unsigned(&mut self.head, count as u64 + 1);
        } else {
            self.head.put_i32(count as i32);
        }
    }

    fn put_topic(&mut self, topic: &Topic) {
        if self.version >= 13 {
            self.head.put_slice(&topic.topic_id);
        } else if self.flexible {
            put_varint_unsigned(&mut self.head, topic.name.len() as u64 + 1);
            self.head.put_slice(topic.name.as_bytes());
        } else {
            self.head.put_i16(topic.name.len() as i16);
            self.head.put_slice(topic.name.as_bytes());
        }
    }

    fn put_partition(&mut self, partition: &PartitionFetch) {
        self.head.put_i32(partition.index);
        self.head.put_i16(partition.error.code());
        self.head.put_i64(partition.high_watermark);
        if self.version >= 4 {
            self.head.put_i64(partition.high_watermark); // last_stable_offset: no transactions yet
        }
        if self.version >= 5 {
            self.head.put_i64(partition.log_start_offset);
        }
        if self.version >= 4 {
            self.put_array_size(0); // aborted_transactions
        }
        if self.version >= 11 {
            self.head.put_i32(-1); // preferred_read_replica
        }
        let records_size: usize = partition.batches.iter().map(Bytes::len).sum();
        if self.flexible {
            put_varint_unsigned(&mut self.head, records_size as u64 + 1);
        } else {
            self.head.put_i32(records_size as i32);
        }
        if records_size > 0 {
            let finished = self.head.split().freeze();
            self.frame_size += finished.len();
            self.chunks.push(finished);
            for batch in &partition.batches {
                self.frame_size += batch.len();
                self.chunks.push(batch.clone());
            }
        }
        if self.flexible {
            match partition.diverging {
                // Tag 0 of the partition's tagged fields: DivergingEpoch { epoch: int32, end_offset: int64 } and its
                // own (empty) tagged fields, 13 bytes.
                Some((epoch, end_offset)) => {
                    self.head.put_u8(1);
                    self.head.put_u8(0);
                    self.head.put_u8(13);
                    self.head.put_i32(epoch);
                    self.head.put_i64(end_offset);
                    self.head.put_u8(0);
                }
                None => self.head.put_u8(0), // partition tagged fields
            }
        }
    }
}

/// Writes the response: the listed partitions (all but those an incremental session omits) under `error` (a
/// session's refusal, with no partitions) and `session_id`.
fn encode(
    context: &RequestContext,
    error: ErrorCode,
    session_id: i32,
    partitions: &[PartitionFetch],
) -> Result<Response, codec::CodecError> {
    let version = context.api_version;
    let mut encoder = Encoder {
        version,
        flexible: version >= 12,
        head: codec::begin_frame(context.api_key, version, context.correlation_id, 256),
        chunks: Vec::new(),
        frame_size: 0,
    };
    if version >= 1 {
        encoder.head.put_i32(0); // throttle_time_ms
    }
    if version >= 7 {
        encoder.head.put_i16(error.code());
        encoder.head.put_i32(session_id);
    }
    let runs = topic_runs(partitions);
    encoder.put_array_size(runs.len());
    for run in &runs {
        encoder.put_topic(&run[0].topic);
        encoder.put_array_size(run.len());
        for partition in run {
            encoder.put_partition(partition);
        }
        if encoder.flexible {
            encoder.head.put_u8(0); // topic tagged fields
        }
    }
    if encoder.flexible {
        encoder.head.put_u8(0); // response tagged fields
    }
    let Encoder { head, mut chunks, mut frame_size, .. } = encoder;
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

    fn partition(topic: &Rc<Topic>, index: i32, batches: Vec<Bytes>) -> PartitionFetch {
        PartitionFetch {
            topic: topic.clone(),
            index,
            offset: 0,
            size_max: 1 << 20,
            unknown: false,
            error: ErrorCode::NONE,
            high_watermark: 2,
            log_start_offset: 0,
            batches,
            omitted: false,
            diverging: None,
        }
    }

    fn decode(response: &Response, version: i16) -> FetchResponse {
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
        decoded
    }

    /// The hand-written encoder agrees with the codec's decoder for every advertised version, including a topic
    /// listed twice (a session's rotation) and a partition an incremental response omits.
    #[test]
    fn hand_written_response_decodes_with_the_codec() {
        let batch = sluice_storage::batch::testing::make_batch(2, 2, 1000);
        let orders = Rc::new(Topic { name: "orders".into(), topic_id: [7; 16] });
        let audit = Rc::new(Topic { name: "audit".into(), topic_id: [8; 16] });
        for version in 4..=18 {
            let mut out_of_range = partition(&orders, 1, vec![]);
            out_of_range.error = ResponseError::OffsetOutOfRange.into();
            let mut omitted = partition(&audit, 1, vec![]);
            omitted.omitted = true;
            let partitions = vec![
                partition(&orders, 0, vec![batch.clone(), batch.clone()]),
                out_of_range,
                partition(&audit, 0, vec![]),
                omitted,
                partition(&orders, 2, vec![batch.clone()]),
            ];
            let context = RequestContext { api_key: ApiKey::Fetch, api_version: version, correlation_id: 42 };
            let decoded = decode(&encode(&context, ErrorCode::NONE, 99, &partitions).unwrap(), version);
            let runs: Vec<Vec<i32>> = decoded
                .responses
                .iter()
                .map(|topic| topic.partitions.iter().map(|partition| partition.partition_index).collect())
                .collect();
            assert_eq!(runs, vec![vec![0, 1], vec![0], vec![2]], "v{version}");
            let first = &decoded.responses[0].partitions;
            assert_eq!(first[0].high_watermark, 2);
            assert_eq!(first[0].records.as_ref().unwrap().len(), batch.len() * 2, "v{version}");
            assert_eq!(first[1].error_code, ResponseError::OffsetOutOfRange.code());
            if version >= 7 {
                assert_eq!(decoded.session_id, 99);
            }
            if version >= 13 {
                assert_eq!(decoded.responses[1].topic_id.as_bytes(), &[8; 16]);
            } else {
                assert_eq!(decoded.responses[1].topic.0.as_str(), "audit");
            }
        }
    }

    /// Fetch v0–3 answers carry message sets of magic 0 (v0–1) or 1 (v2–3) in the old layout: no throttle time in
    /// v0, no last stable offset or aborted transactions; a zstd batch is refused with its error code.
    /// A follower's answer carries the diverging epoch (KIP-320, a tagged field from v12) next to records elsewhere.
    #[test]
    fn diverging_epoch_is_a_tagged_field_the_codec_reads() {
        let batch = sluice_storage::batch::testing::make_batch(2, 2, 1000);
        let topic = Rc::new(Topic { name: "t".into(), topic_id: [3; 16] });
        for version in 12..=18 {
            let mut diverging = partition(&topic, 0, vec![]);
            diverging.diverging = Some((4, 1_234));
            let partitions = vec![diverging, partition(&topic, 1, vec![batch.clone()])];
            let context = RequestContext { api_key: ApiKey::Fetch, api_version: version, correlation_id: 42 };
            let decoded = decode(&encode(&context, ErrorCode::NONE, 0, &partitions).unwrap(), version);
            let answered = &decoded.responses[0].partitions;
            assert_eq!(
                (answered[0].diverging_epoch.epoch, answered[0].diverging_epoch.end_offset),
                (4, 1_234),
                "v{version}"
            );
            assert_eq!(answered[1].diverging_epoch.epoch, -1, "v{version}: none where the log agrees");
            assert_eq!(answered[1].records.as_ref().map(|records| records.len()), Some(batch.len()));
        }
    }

    #[test]
    fn old_versions_answer_with_converted_message_sets() {
        let topic = Rc::new(Topic { name: "t".into(), topic_id: [0; 16] });
        let batch = sluice_storage::batch::testing::make_batch(2, 3, 1000);
        for version in 0..=3i16 {
            let mut partitions = vec![partition(&topic, 0, vec![batch.clone()])];
            down_convert(version, &mut partitions);
            let context = RequestContext { api_key: ApiKey::Fetch, api_version: version, correlation_id: 42 };
            let response = encode(&context, ErrorCode::NONE, 0, &partitions).unwrap();
            let frame: Vec<u8> = response.chunks.concat();
            let mut body = &frame[8..]; // size and correlation id
            if version >= 1 {
                assert_eq!(&body[..4], &[0; 4], "v{version} throttle time");
                body = &body[4..];
            }
            // One topic "t", one partition 0, no error, high watermark 2, then the message set.
            let expected: [&[u8]; 5] =
                [&[0, 0, 0, 1, 0, 1, b't'], &[0, 0, 0, 1], &[0; 4], &[0; 2], &2i64.to_be_bytes()];
            assert_eq!(&body[..25], &expected.concat()[..], "v{version}");
            body = &body[25..];
            let size = i32::from_be_bytes(body[..4].try_into().unwrap()) as usize;
            let set = &body[4..];
            assert_eq!(set.len(), size, "v{version}: the message set ends the frame");
            let magic = if version >= 2 { 1 } else { 0 };
            let mut rest = set;
            let mut offsets = Vec::new();
            while let Some(message) = sluice_storage::records::message_set::next_message(&mut rest).unwrap() {
                assert_eq!(message.magic, magic);
                offsets.push(message.offset);
            }
            assert_eq!(offsets, vec![0, 1], "v{version}");
        }
        let mut builder = sluice_storage::BatchBuilder::new(sluice_storage::Compression::Zstd, 64);
        builder.append(0, None, Some(&[b"v"]));
        let mut partitions = vec![partition(&topic, 0, vec![builder.finish(0).unwrap()])];
        down_convert(2, &mut partitions);
        assert!(partitions[0].batches.is_empty());
        assert_eq!(partitions[0].error.code(), ResponseError::UnsupportedCompressionType.code());
    }

    /// A session's refusal is a top-level error with no partitions.
    #[test]
    fn session_errors_encode_at_the_top_level() {
        let context = RequestContext { api_key: ApiKey::Fetch, api_version: 12, correlation_id: 42 };
        let error = ResponseError::FetchSessionIdNotFound.into();
        let decoded = decode(&encode(&context, error, 0, &[]).unwrap(), 12);
        assert_eq!(decoded.error_code, ResponseError::FetchSessionIdNotFound.code());
        assert!(decoded.responses.is_empty());
    }

    /// KIP-74 assembly: each partition is charged what it returned; the first batch of the first partition with
    /// data is kept whatever its size; what does not fit is dropped whole batches at a time.
    #[test]
    fn assembly_keeps_what_fits_and_the_first_batch() {
        let topic = Rc::new(Topic { name: "t".into(), topic_id: [0; 16] });
        let batch = |size: usize| Bytes::from(vec![0u8; size]);
        // (response limit, each partition's batch sizes, the batch counts kept, the response size)
        type Case = (usize, Vec<Vec<usize>>, Vec<usize>, usize);
        let cases: Vec<Case> = vec![
            (1, vec![vec![], vec![], vec![70, 70]], vec![0, 0, 1], 70),
            (100, vec![vec![], vec![40, 40], vec![30]], vec![0, 2, 0], 80),
            (100, vec![vec![150, 10], vec![10]], vec![1, 0], 150),
            (100, vec![vec![60], vec![30, 30], vec![10]], vec![1, 1, 1], 100),
        ];
        for (limit, sizes, kept_counts, size) in cases {
            let mut assembly = Assembly { size: 0, remaining: limit, exception_size: 0 };
            let mut kept = Vec::new();
            for (index, sizes) in sizes.iter().enumerate() {
                let mut fetched =
                    partition(&topic, index as i32, sizes.iter().map(|size| batch(*size)).collect());
                assembly.keep(&mut fetched);
                kept.push(fetched.batches.len());
            }
            assert_eq!((kept, assembly.size), (kept_counts, size), "limit {limit}, batches {sizes:?}");
            assert!(assembly.size <= limit + assembly.exception_size);
        }
    }

    /// Waves plan about what the response has left (at least WAVE_SIZE_MIN), and everything once it is full.
    #[test]
    fn waves_bound_what_they_plan_to_read() {
        let topic = Rc::new(Topic { name: "t".into(), topic_id: [0; 16] });
        let partitions: Vec<PartitionFetch> =
            (0..2000).map(|index| partition(&topic, index, vec![])).collect();
        let mebibyte = 1 << 20;
        // (start, response remaining, wave end)
        let cases = [
            (0, 50 * mebibyte, 50),
            (1990, 50 * mebibyte, 2000),
            (0, mebibyte / 2, 2),
            (0, 1, WAVE_SIZE_MIN),
            (0, 0, 2000),
            (2000, 0, 2000),
        ];
        for (start, remaining, end) in cases {
            assert_eq!(read_wave_end(&partitions, start, remaining), end.min(2000), "{start} {remaining}");
        }
    }
}
