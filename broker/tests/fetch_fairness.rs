//! Fetch never withholds records forever (issue 13, item 5): a response charges each partition only the bytes it
//! returned (KIP-74), the first partition with data is always served even past the response limit, and a fetch
//! session (KIP-227) serves its partitions in turn across requests. Each test runs a real broker on loopback
//! with two shards (so reads cross the shard mesh) and talks to it with a raw protocol client.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step is the test failing

mod common;
use common::Client;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ForgottenTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use sluice_broker::server;
use sluice_storage::batch::testing::make_batch;

const NONE: i16 = 0;
const FETCH_SESSION_ID_NOT_FOUND: i16 = 70;
const INVALID_FETCH_SESSION_EPOCH: i16 = 71;
const MEBIBYTE: i32 = 1 << 20;
/// Fetch v12: the first flexible version, topics by name, sessions available.
const FETCH_VERSION: i16 = 12;

struct Running {
    broker: server::Broker,
    directory: PathBuf,
    client: Client,
}

impl Running {
    fn start(name: &str) -> Running {
        let (broker, directory) = common::start_broker(&format!("fetch-{name}"), "");
        let client = Client::connect(broker.address, Duration::from_secs(60));
        Running { broker, directory, client }
    }

    fn stop(self) {
        let Running { broker, directory, client } = self;
        drop(client);
        broker.stop();
        broker.join();
        let _ = std::fs::remove_dir_all(&directory);
    }

    fn create_topic(&mut self, topic: &str, partition_count: i32) {
        let mut creatable = CreatableTopic::default();
        creatable.name = TopicName(StrBytes::from_string(topic.to_string()));
        creatable.num_partitions = partition_count;
        creatable.replication_factor = 1;
        let mut create = CreateTopicsRequest::default();
        create.topics = vec![creatable];
        create.timeout_ms = 60_000;
        assert_eq!(self.client.call(&create, 7).topics[0].error_code, NONE);
    }

    /// Appends `batch_count` batches of one record with a `value_size`-byte value to each of `partitions`,
    /// acknowledged once durable (so committed and visible to fetches).
    fn produce(
        &mut self,
        topic: &str,
        partitions: impl Iterator<Item = i32>,
        batch_count: usize,
        value_size: usize,
    ) {
        let partitions: Vec<i32> = partitions.collect();
        for _ in 0..batch_count {
            let mut data = TopicProduceData::default();
            data.name = TopicName(StrBytes::from_string(topic.to_string()));
            data.partition_data = partitions
                .iter()
                .map(|index| {
                    let mut partition = PartitionProduceData::default();
                    partition.index = *index;
                    partition.records = Some(make_batch(1, value_size, 1_000));
                    partition
                })
                .collect();
            let mut produce = ProduceRequest::default();
            produce.acks = -1;
            produce.timeout_ms = 60_000;
            produce.topic_data = vec![data];
            let answered = self.client.call(&produce, 8);
            for partition in &answered.responses[0].partition_responses {
                assert_eq!(partition.error_code, NONE, "produce to partition {}", partition.index);
            }
        }
    }

    fn fetch(&mut self, request: &FetchRequest) -> FetchResponse {
        self.client.call(request, FETCH_VERSION)
    }
}

fn fetch_partition(index: i32, offset: i64, size_max: i32) -> FetchPartition {
    let mut partition = FetchPartition::default();
    partition.partition = index;
    partition.fetch_offset = offset;
    partition.partition_max_bytes = size_max;
    partition
}

/// A fetch of `offsets` (partition → next offset) in partition order, as a sessionless client sends it.
fn fetch_request(
    topic: &str,
    offsets: &BTreeMap<i32, i64>,
    max_bytes: i32,
    partition_max_bytes: i32,
) -> FetchRequest {
    let mut fetch_topic = FetchTopic::default();
    fetch_topic.topic = TopicName(StrBytes::from_string(topic.to_string()));
    fetch_topic.partitions =
        offsets.iter().map(|(index, offset)| fetch_partition(*index, *offset, partition_max_bytes)).collect();
    let mut request = FetchRequest::default();
    request.max_wait_ms = 500;
    request.min_bytes = 1;
    request.max_bytes = max_bytes;
    request.session_id = 0;
    request.session_epoch = -1;
    request.topics = vec![fetch_topic];
    request
}

/// Per partition with records in `response`: the record count, and the offset after the last record.
fn records_by_partition(response: &FetchResponse) -> BTreeMap<i32, (usize, i64)> {
    assert_eq!(response.error_code, NONE);
    let mut found = BTreeMap::new();
    for topic in &response.responses {
        for partition in &topic.partitions {
            assert_eq!(partition.error_code, NONE, "partition {}", partition.partition_index);
            let Some(records) = partition.records.as_ref().filter(|records| !records.is_empty()) else {
                continue;
            };
            let (mut count, mut next) = (0usize, 0i64);
            let mut rest = records.clone();
            while rest.len() >= 61 {
                let base_offset = i64::from_be_bytes(rest[..8].try_into().unwrap());
                let length = i32::from_be_bytes(rest[8..12].try_into().unwrap()) as usize;
                let last_delta = i32::from_be_bytes(rest[23..27].try_into().unwrap());
                count += i32::from_be_bytes(rest[57..61].try_into().unwrap()) as usize;
                next = base_offset + i64::from(last_delta) + 1;
                let _ = rest.split_to((12 + length).min(rest.len()));
            }
            let entry = found.entry(partition.partition_index).or_insert((0, 0));
            *entry = (entry.0 + count, next);
        }
    }
    found
}

/// 60 partitions with records only in 50–59, and a Java consumer's default limits (50 MiB per response, 1 MiB
/// per partition): one fetch returns every one of them. Before, the 50 empty partitions listed first were each
/// charged 1 MiB, leaving nothing for the ones with records.
#[test]
fn a_fetch_serves_partitions_listed_after_empty_ones() {
    let mut running = Running::start("sixty");
    running.create_topic("sixty", 60);
    running.produce("sixty", 50..60, 1, 100);
    let offsets: BTreeMap<i32, i64> = (0..60).map(|index| (index, 0)).collect();
    let response = running.fetch(&fetch_request("sixty", &offsets, 50 * MEBIBYTE, MEBIBYTE));
    let found = records_by_partition(&response);
    assert_eq!(found.keys().copied().collect::<Vec<_>>(), (50..60).collect::<Vec<_>>());
    assert!(found.values().all(|(count, _)| *count == 1));
    running.stop();
}

/// A response limit of 1 byte with records only in the last of 8 partitions: that partition's first batch is
/// returned anyway (KIP-74: the first partition with data always gets at least one batch), and only it.
#[test]
fn a_one_byte_response_limit_still_returns_the_first_batch() {
    let mut running = Running::start("one-byte");
    running.create_topic("one-byte", 8);
    running.produce("one-byte", 7..8, 3, 100);
    let offsets: BTreeMap<i32, i64> = (0..8).map(|index| (index, 0)).collect();
    let response = running.fetch(&fetch_request("one-byte", &offsets, 1, MEBIBYTE));
    let found = records_by_partition(&response);
    assert_eq!(found, BTreeMap::from([(7, (1, 1))]), "exactly the first batch of partition 7");
    running.stop();
}

/// 2,000 partitions: with records in the last 1,000 only, a client that resends the same list reads them all in
/// one fetch; with one record in every partition and a 16 KiB response limit, it needs about as many fetches
/// as 16 KiB responses the records fill. Before, the first partitions' allowances took every request's limit:
/// partitions after them were never served, or one per request.
#[test]
fn two_thousand_partitions_are_read_back_in_few_fetches() {
    let mut running = Running::start("two-thousand");
    running.create_topic("two-thousand", 2000);
    running.produce("two-thousand", 1000..2000, 1, 10);
    let (fetch_count, elapsed) = read_all(&mut running, 1000, 50 * MEBIBYTE, 5);
    assert_eq!(fetch_count, 1, "records only in the last 1,000 of 2,000 partitions");
    println!("records in the last 1,000 of 2,000 partitions: 1 fetch, {elapsed:?}");

    running.produce("two-thousand", 0..1000, 1, 10);
    let batch_size = make_batch(1, 10, 1_000).len();
    let response_size_max = 16 << 10;
    // Each response but the last is filled to within one batch of its limit.
    let bound = (2000 * batch_size).div_ceil(response_size_max - batch_size) + 1;
    let (fetch_count, elapsed) = read_all(&mut running, 2000, response_size_max as i32, bound + 5);
    assert!(
        fetch_count <= bound,
        "{fetch_count} fetches for 2,000 batches of {batch_size} bytes, bound {bound}"
    );
    println!("one record in each of 2,000 partitions, 16 KiB responses: {fetch_count} fetches, {elapsed:?}");
    running.stop();
}

/// Fetches partitions 0–1999 of "two-thousand" from offset 0 (sessionless, the same order every time, moving
/// offsets on) until `record_count` records came back; panics after `fetch_count_max` fetches.
fn read_all(
    running: &mut Running,
    record_count: usize,
    max_bytes: i32,
    fetch_count_max: usize,
) -> (usize, Duration) {
    let mut offsets: BTreeMap<i32, i64> = (0..2000).map(|index| (index, 0)).collect();
    let started = Instant::now();
    let mut received = 0;
    for fetch_count in 1..=fetch_count_max {
        let response = running.fetch(&fetch_request("two-thousand", &offsets, max_bytes, MEBIBYTE));
        for (index, (count, next)) in records_by_partition(&response) {
            received += count;
            offsets.insert(index, next);
        }
        if received >= record_count {
            assert_eq!(received, record_count);
            return (fetch_count, started.elapsed());
        }
    }
    panic!("only {received} of {record_count} records after {fetch_count_max} fetches");
}

/// A fetch session (KIP-227): the full fetch opens it; incremental fetches list only partitions with news; a
/// partition that returned records moves to the end, so with every partition holding more than one response's
/// worth, each of 20 partitions is served within 20 fetches (without rotation partition 0 would be served
/// until it ran dry). Forgotten partitions leave the session; wrong ids and epochs are refused.
#[test]
fn a_fetch_session_serves_its_partitions_in_turn() {
    let mut running = Running::start("session");
    running.create_topic("session", 20);
    running.produce("session", 0..20, 10, 1000);
    let offsets: BTreeMap<i32, i64> = (0..20).map(|index| (index, 0)).collect();
    let mut request = fetch_request("session", &offsets, 2500, MEBIBYTE);
    request.session_epoch = 0;
    let response = running.fetch(&request);
    assert_ne!(response.session_id, 0, "a full fetch with epoch 0 opens a session");
    let session_id = response.session_id;
    let listed: usize = response.responses.iter().map(|topic| topic.partitions.len()).sum();
    assert_eq!(listed, 20, "a full fetch lists every partition");
    let mut served: BTreeMap<i32, (usize, i64)> = records_by_partition(&response);
    let mut next_offsets = served.clone();

    for epoch in 1..20 {
        let changed: BTreeMap<i32, i64> =
            next_offsets.iter().map(|(index, (_, next))| (*index, *next)).collect();
        let mut request = fetch_request("session", &changed, 2500, MEBIBYTE);
        request.session_id = session_id;
        request.session_epoch = epoch;
        let response = running.fetch(&request);
        assert_eq!(response.session_id, session_id);
        let listed: usize = response.responses.iter().map(|topic| topic.partitions.len()).sum();
        next_offsets = records_by_partition(&response);
        assert!(
            listed <= 3,
            "epoch {epoch}: an incremental response lists only partitions with news ({listed})"
        );
        assert!(!next_offsets.is_empty(), "epoch {epoch}: every partition has records left");
        for (index, (count, _)) in &next_offsets {
            served.entry(*index).or_insert((0, 0)).0 += count;
        }
    }
    assert_eq!(served.len(), 20, "each partition served within 20 fetches: {served:?}");

    // Forgetting partitions 0–18: the session fetches only partition 19.
    let mut request = fetch_request("session", &BTreeMap::new(), 50 * MEBIBYTE, MEBIBYTE);
    request.session_id = session_id;
    request.session_epoch = 20;
    let mut forgotten = ForgottenTopic::default();
    forgotten.topic = TopicName(StrBytes::from_static_str("session"));
    forgotten.partitions = (0..19).collect();
    request.forgotten_topics_data = vec![forgotten];
    let found = records_by_partition(&running.fetch(&request));
    assert_eq!(found.keys().copied().collect::<Vec<_>>(), vec![19]);

    request.forgotten_topics_data.clear();
    let replayed = running.fetch(&request);
    assert_eq!(replayed.error_code, INVALID_FETCH_SESSION_EPOCH, "epoch 20 again");
    request.session_id = session_id ^ 1;
    request.session_epoch = 21;
    assert_eq!(running.fetch(&request).error_code, FETCH_SESSION_ID_NOT_FOUND);
    running.stop();
}
