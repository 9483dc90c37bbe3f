//! The newest versions Sluice advertises (Kafka 4.1's, as far as the codec has them) with their new fields
//! honoured, against a real broker on loopback: ApiVersions shows Kafka 3.9's oldest and Kafka 4.1's newest,
//! Produce v13 and Fetch v18 name topics by id, ListOffsets v10 answers earliest-local (-4) and latest-tiered (-5),
//! DescribeGroups v6 reports an unknown group with GROUP_ID_NOT_FOUND.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step is the test failing

mod common;
use common::Client;

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

const NONE: i16 = 0;
const UNKNOWN_TOPIC_ID: i16 = 100;
const GROUP_ID_NOT_FOUND: i16 = 69;

fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_string())
}

#[test]
fn the_newest_versions_serve_their_new_fields() {
    let (broker, directory) = common::start_broker("newest-versions", "");
    let mut client = Client::connect(broker.address, Duration::from_secs(30));

    let versions = client.call(&ApiVersionsRequest::default(), 3);
    let range = |key: ApiKey| {
        let api = versions.api_keys.iter().find(|api| api.api_key == key as i16).unwrap();
        (api.min_version, api.max_version)
    };
    assert_eq!(range(ApiKey::Produce), (0, 13));
    assert_eq!(range(ApiKey::Fetch), (0, 18));
    assert_eq!(range(ApiKey::ListOffsets), (0, 10));
    assert_eq!(range(ApiKey::Metadata), (0, 13));
    assert_eq!(range(ApiKey::CreateTopics), (0, 7));
    assert_eq!(range(ApiKey::DescribeGroups), (0, 6));

    let mut create = CreateTopicsRequest::default();
    let mut topic = kafka_protocol::messages::create_topics_request::CreatableTopic::default();
    topic.name = TopicName(text("newest"));
    topic.num_partitions = 1;
    topic.replication_factor = 1;
    create.topics = vec![topic];
    create.timeout_ms = 10_000;
    let created = client.call(&create, 7);
    assert_eq!(created.topics[0].error_code, NONE);
    let topic_id = created.topics[0].topic_id;

    let batch = sluice_storage::records::encode_batch(&[(Some(b"k"), Some(b"v"))], 1_000);
    let produce_to = |id: uuid::Uuid| {
        let mut partition = PartitionProduceData::default();
        partition.index = 0;
        partition.records = Some(batch.clone());
        let mut topic = TopicProduceData::default();
        topic.topic_id = id;
        topic.partition_data = vec![partition];
        let mut produce = ProduceRequest::default();
        produce.acks = -1;
        produce.timeout_ms = 10_000;
        produce.topic_data = vec![topic];
        produce
    };
    let produced = client.call(&produce_to(topic_id), 13);
    assert_eq!(produced.responses[0].topic_id, topic_id);
    let partition = &produced.responses[0].partition_responses[0];
    assert_eq!((partition.error_code, partition.base_offset), (NONE, 0));
    let unknown = client.call(&produce_to(uuid::Uuid::from_bytes([9; 16])), 13);
    assert_eq!(unknown.responses[0].partition_responses[0].error_code, UNKNOWN_TOPIC_ID);

    let mut fetch = FetchRequest::default();
    let mut fetch_topic = FetchTopic::default();
    fetch_topic.topic_id = topic_id;
    let mut fetch_partition = FetchPartition::default();
    fetch_partition.partition_max_bytes = 1 << 20;
    fetch_partition.high_watermark = i64::MAX; // v18: not known
    fetch_topic.partitions = vec![fetch_partition];
    fetch.topics = vec![fetch_topic];
    fetch.max_bytes = 1 << 20;
    fetch.session_epoch = -1;
    let fetched = client.call(&fetch, 18);
    let answer = &fetched.responses[0].partitions[0];
    assert_eq!((answer.error_code, answer.high_watermark), (NONE, 1));
    assert_eq!(answer.records.as_ref().map(Bytes::len), Some(batch.len()));

    list_offsets_v10(&mut client);
    describe_groups_v6(&mut client);

    drop(client);
    broker.stop();
    broker.join();
    let _ = std::fs::remove_dir_all(&directory);
}

/// ListOffsets v10: latest (-1), earliest local (-4: the log start) and latest tiered (-5: none) of "newest".
fn list_offsets_v10(client: &mut Client) {
    let mut list = ListOffsetsRequest::default();
    list.replica_id = BrokerId(-1);
    list.timeout_ms = 1_000;
    let mut list_topic = ListOffsetsTopic::default();
    list_topic.name = TopicName(text("newest"));
    for timestamp in [-1i64, -4, -5] {
        let mut partition = ListOffsetsPartition::default();
        partition.timestamp = timestamp;
        partition.current_leader_epoch = -1;
        list_topic.partitions.push(partition);
    }
    list.topics = vec![list_topic];
    let listed = client.call(&list, 10);
    let offsets: Vec<(i16, i64)> = listed.topics[0]
        .partitions
        .iter()
        .map(|partition| (partition.error_code, partition.offset))
        .collect();
    assert_eq!(offsets, vec![(NONE, 1), (NONE, 0), (NONE, -1)]);
    assert_eq!(listed.topics[0].partitions[2].leader_epoch, -1);
}

/// DescribeGroups v6 reports an unknown group with GROUP_ID_NOT_FOUND (KIP-1043); v5 does not.
fn describe_groups_v6(client: &mut Client) {
    let mut describe = DescribeGroupsRequest::default();
    describe.groups = vec![GroupId(text("nobody"))];
    let described = client.call(&describe, 6);
    assert_eq!(described.groups[0].error_code, GROUP_ID_NOT_FOUND);
    assert_eq!(described.groups[0].group_state.as_str(), "Dead");
    let described = client.call(&describe, 5);
    assert_eq!(described.groups[0].error_code, NONE);
}
