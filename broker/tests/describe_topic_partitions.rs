//! DescribeTopicPartitions v0 (KIP-966) against a real broker on loopback with two shards: advertised in
//! ApiVersions, a flexible request header and response header, pagination by `response_partition_limit` and
//! `next_cursor` that lists every partition exactly once in name order for named topics and for all topics (the
//! empty list), and UNKNOWN_TOPIC_OR_PARTITION / INVALID_TOPIC_EXCEPTION for named topics that do not exist.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step is the test failing

mod common;
use common::Client;

use std::collections::BTreeMap;
use std::time::Duration;

use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::describe_topic_partitions_request::{Cursor, TopicRequest};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

const NONE: i16 = 0;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const INVALID_TOPIC_EXCEPTION: i16 = 17;
/// Kafka with no authorizer: every operation a topic supports (READ..DESCRIBE, DESCRIBE_CONFIGS, ALTER_CONFIGS).
const TOPIC_OPERATIONS_ALL: i32 = 3576;

fn name(value: &str) -> TopicName {
    TopicName(StrBytes::from_string(value.to_string()))
}

fn request(
    topics: &[&str],
    limit: i32,
    cursor: Option<&describe_topic_partitions_response::Cursor>,
) -> DescribeTopicPartitionsRequest {
    let mut request = DescribeTopicPartitionsRequest::default();
    request.topics = topics
        .iter()
        .map(|topic| {
            let mut requested = TopicRequest::default();
            requested.name = name(topic);
            requested
        })
        .collect();
    request.response_partition_limit = limit;
    request.cursor = cursor.map(|next| {
        let mut cursor = Cursor::default();
        cursor.topic_name = next.topic_name.clone();
        cursor.partition_index = next.partition_index;
        cursor
    });
    request
}

/// Follows `next_cursor` from the first page until it is null; returns every (topic, partition) listed, in order,
/// and each topic's id. Every page holds at most `limit` partitions and every topic entry is error-free.
fn list_all_pages(
    client: &mut Client,
    topics: &[&str],
    limit: i32,
) -> (Vec<(String, i32)>, BTreeMap<String, uuid::Uuid>) {
    let mut listed = Vec::new();
    let mut ids = BTreeMap::new();
    let mut cursor = None;
    for _page in 0..1_000 {
        let response = client.call(&request(topics, limit, cursor.as_ref()), 0);
        let page_size: usize = response.topics.iter().map(|topic| topic.partitions.len()).sum();
        assert!(page_size <= limit as usize, "a page of {page_size} partitions over the limit {limit}");
        for topic in &response.topics {
            let topic_name = topic.name.as_ref().unwrap().0.to_string();
            assert_eq!(topic.error_code, NONE, "{topic_name}");
            assert_eq!(topic.topic_authorized_operations, TOPIC_OPERATIONS_ALL);
            assert_eq!(topic.is_internal, topic_name == "__consumer_offsets");
            ids.insert(topic_name.clone(), topic.topic_id);
            for partition in &topic.partitions {
                assert_eq!(partition.error_code, NONE);
                assert_eq!(partition.replica_nodes, [partition.leader_id]);
                assert_eq!(partition.isr_nodes, [partition.leader_id]);
                assert_eq!(partition.eligible_leader_replicas, Some(vec![]));
                assert_eq!(partition.last_known_elr, Some(vec![]));
                assert!(partition.offline_replicas.is_empty());
                listed.push((topic_name.clone(), partition.partition_index));
            }
        }
        cursor = response.next_cursor;
        if cursor.is_none() {
            return (listed, ids);
        }
    }
    panic!("the cursor did not reach the end in 1,000 pages");
}

#[test]
fn pages_follow_the_cursor_over_every_partition_once() {
    let (broker, directory) = common::start_broker("describe-topic-partitions", "");
    let mut client = Client::connect(broker.address, Duration::from_secs(30));

    let versions = client.call(&ApiVersionsRequest::default(), 3);
    let advertised =
        versions.api_keys.iter().find(|api| api.api_key == ApiKey::DescribeTopicPartitions as i16);
    assert_eq!(advertised.map(|api| (api.min_version, api.max_version)), Some((0, 0)));

    // Created out of name order; 5 + 3 + 4 partitions.
    let created: BTreeMap<&str, i32> = [("dtp-c", 4), ("dtp-a", 5), ("dtp-b", 3)].into();
    let mut create = CreateTopicsRequest::default();
    create.timeout_ms = 30_000;
    for (topic, partition_count) in &created {
        let mut creatable = CreatableTopic::default();
        creatable.name = name(topic);
        creatable.num_partitions = *partition_count;
        creatable.replication_factor = 1;
        create.topics.push(creatable);
    }
    let answer = client.call(&create, 7);
    assert!(answer.topics.iter().all(|topic| topic.error_code == NONE));
    let created_ids: BTreeMap<String, uuid::Uuid> =
        answer.topics.iter().map(|topic| (topic.name.0.to_string(), topic.topic_id)).collect();

    let expected: Vec<(String, i32)> = created
        .iter()
        .flat_map(|(topic, count)| (0..*count).map(|partition| (topic.to_string(), partition)))
        .collect();
    for limit in [1, 2, 3, 5, 12, 2000] {
        let (listed, ids) = list_all_pages(&mut client, &["dtp-b", "dtp-c", "dtp-a"], limit);
        assert_eq!(listed, expected, "limit {limit}");
        assert_eq!(ids, created_ids);
    }
    // The first page of two stops inside dtp-a and says where to go on.
    let first = client.call(&request(&["dtp-b", "dtp-c", "dtp-a"], 2, None), 0);
    let cursor = first.next_cursor.as_ref().unwrap();
    assert_eq!((cursor.topic_name.0.as_str(), cursor.partition_index), ("dtp-a", 2));

    missing_topics_are_errors(&mut client, &created_ids);
    all_topics_as_metadata_lists_them(&mut client);

    drop(client);
    broker.stop();
    broker.join();
    let _ = std::fs::remove_dir_all(&directory);
}

/// Named topics that do not exist: an error entry each, in name order among the others, with topic id zero.
fn missing_topics_are_errors(client: &mut Client, created_ids: &BTreeMap<String, uuid::Uuid>) {
    let response = client.call(&request(&["dtp-b", "no-such-topic", "bad/name"], 100, None), 0);
    let entries: Vec<(String, i16, usize, uuid::Uuid)> = response
        .topics
        .iter()
        .map(|topic| {
            (
                topic.name.as_ref().unwrap().0.to_string(),
                topic.error_code,
                topic.partitions.len(),
                topic.topic_id,
            )
        })
        .collect();
    assert_eq!(
        entries,
        [
            ("bad/name".to_string(), INVALID_TOPIC_EXCEPTION, 0, uuid::Uuid::nil()),
            ("dtp-b".to_string(), NONE, 3, created_ids["dtp-b"]),
            ("no-such-topic".to_string(), UNKNOWN_TOPIC_OR_PARTITION, 0, uuid::Uuid::nil()),
        ]
    );
    assert!(response.next_cursor.is_none());
}

/// All topics (the empty list): the same pages over every topic the broker has, as Metadata lists them.
fn all_topics_as_metadata_lists_them(client: &mut Client) {
    let mut metadata = MetadataRequest::default();
    metadata.topics = None;
    let all: BTreeMap<String, (usize, uuid::Uuid)> = client
        .call(&metadata, 12)
        .topics
        .iter()
        .map(|topic| (topic.name.as_ref().unwrap().0.to_string(), (topic.partitions.len(), topic.topic_id)))
        .collect();
    assert!(["dtp-a", "dtp-b", "dtp-c"].iter().all(|topic| all.contains_key(*topic)));
    let expected_all: Vec<(String, i32)> = all
        .iter()
        .flat_map(|(topic, (count, _))| (0..*count as i32).map(|partition| (topic.clone(), partition)))
        .collect();
    for limit in [3, 2000] {
        let (listed, ids) = list_all_pages(client, &[], limit);
        assert_eq!(listed, expected_all, "limit {limit}");
        assert_eq!(ids, all.iter().map(|(topic, (_, id))| (topic.clone(), *id)).collect());
    }
}
