//! Kafka's exact answers (issue 14, section 1), each against a real broker on loopback with two shards, spoken to
//! with a raw protocol client: read-your-writes after acks=1 under both flush policies, null error messages on
//! success over every advertised version, DescribeConfigs as Kafka answers it, CreatePartitions' manual
//! assignments, the group APIs' validation order, the first group on a fresh broker, and a Kafka
//! server.properties' no-op keys accepted by the `sluice` binary.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step is the test failing

mod common;
use common::Client;

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::alter_configs_request::{AlterConfigsResource, AlterableConfig};
use kafka_protocol::messages::create_partitions_request::{
    CreatePartitionsAssignment, CreatePartitionsTopic,
};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::delete_records_request::{DeleteRecordsPartition, DeleteRecordsTopic};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_configs_response::DescribeConfigsResourceResult;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::incremental_alter_configs_request as incremental;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Message, Request, StrBytes};
use sluice_broker::server;
use sluice_storage::batch::testing::make_batch;

const NONE: i16 = 0;
const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
const COORDINATOR_NOT_AVAILABLE: i16 = 15;
const INVALID_GROUP_ID: i16 = 24;
const REBALANCE_IN_PROGRESS: i16 = 27;
const INVALID_REPLICA_ASSIGNMENT: i16 = 39;
const MEMBER_ID_REQUIRED: i16 = 79;
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
const SOURCE_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;

struct Running {
    broker: server::Broker,
    directory: PathBuf,
}

impl Running {
    /// A fresh broker (empty data directory) with two shards and `config` over the embedded default.
    fn start(name: &str, config: &str) -> Running {
        let (broker, directory) = common::start_broker(&format!("fidelity-{name}"), config);
        Running { broker, directory }
    }

    fn client(&self) -> Client {
        Client::connect(self.broker.address, Duration::from_secs(60))
    }

    fn stop(self) {
        self.broker.stop();
        self.broker.join();
        let _ = std::fs::remove_dir_all(&self.directory);
    }
}

fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_string())
}

fn create_topic(client: &mut Client, topic: &str, partition_count: i32) {
    let mut creatable = CreatableTopic::default();
    creatable.name = TopicName(text(topic));
    creatable.num_partitions = partition_count;
    creatable.replication_factor = 1;
    let mut create = CreateTopicsRequest::default();
    create.topics = vec![creatable];
    create.timeout_ms = 60_000;
    let answer = client.call(&create, 5);
    assert_eq!(answer.topics[0].error_code, NONE, "{:?}", answer.topics[0].error_message);
}

/// Produces one batch of one record to `topic`-`partition` with `acks`; returns its base offset.
fn produce(client: &mut Client, topic: &str, partition: i32, acks: i16) -> i64 {
    let mut partition_data = PartitionProduceData::default();
    partition_data.index = partition;
    partition_data.records = Some(make_batch(1, 100, 1_000));
    let mut data = TopicProduceData::default();
    data.name = TopicName(text(topic));
    data.partition_data = vec![partition_data];
    let mut request = ProduceRequest::default();
    request.acks = acks;
    request.timeout_ms = 30_000;
    request.topic_data = vec![data];
    let answer = client.call(&request, 8);
    let partition = &answer.responses[0].partition_responses[0];
    assert_eq!(partition.error_code, NONE);
    partition.base_offset
}

fn list_latest(client: &mut Client, topic: &str, partition: i32) -> i64 {
    let mut wanted = ListOffsetsPartition::default();
    wanted.partition_index = partition;
    wanted.timestamp = -1;
    let mut list_topic = ListOffsetsTopic::default();
    list_topic.name = TopicName(text(topic));
    list_topic.partitions = vec![wanted];
    let mut request = ListOffsetsRequest::default();
    request.replica_id = BrokerId(-1);
    request.topics = vec![list_topic];
    let answer = client.call(&request, 5);
    let partition = &answer.topics[0].partitions[0];
    assert_eq!(partition.error_code, NONE);
    partition.offset
}

/// A fetch at `offset` that does not wait: the high watermark and the number of batches returned.
fn fetch_now(client: &mut Client, topic: &str, partition: i32, offset: i64) -> (i64, usize) {
    let mut wanted = FetchPartition::default();
    wanted.partition = partition;
    wanted.fetch_offset = offset;
    wanted.partition_max_bytes = 1 << 20;
    let mut fetch_topic = FetchTopic::default();
    fetch_topic.topic = TopicName(text(topic));
    fetch_topic.partitions = vec![wanted];
    let mut request = FetchRequest::default();
    request.max_wait_ms = 0;
    request.min_bytes = 0;
    request.max_bytes = 1 << 20;
    request.session_epoch = -1;
    request.topics = vec![fetch_topic];
    let answer = client.call(&request, 12);
    let partition = &answer.responses[0].partitions[0];
    assert_eq!(partition.error_code, NONE);
    let records = partition.records.clone().unwrap_or_default();
    (partition.high_watermark, sluice_storage::batch::split_batches(&records).count())
}

fn delete_records(client: &mut Client, topic: &str, partition: i32, offset: i64) -> (i16, i64) {
    let mut wanted = DeleteRecordsPartition::default();
    wanted.partition_index = partition;
    wanted.offset = offset;
    let mut delete_topic = DeleteRecordsTopic::default();
    delete_topic.name = TopicName(text(topic));
    delete_topic.partitions = vec![wanted];
    let mut request = DeleteRecordsRequest::default();
    request.topics = vec![delete_topic];
    request.timeout_ms = 30_000;
    let answer = client.call(&request, 2);
    let partition = &answer.topics[0].partitions[0];
    (partition.error_code, partition.low_watermark)
}

/// Read-your-writes after acks=1: under both flush policies, a ListOffsets, Fetch or DeleteRecords sent as soon
/// as an acks=1 produce is answered sees the record (Kafka's single replica moves the high watermark before it
/// answers). Under `fsync` the high watermark used to move only after the background fdatasync.
#[test]
fn acks_1_writes_are_read_back_at_once_under_both_flush_policies() {
    for policy in ["fsync", "interval"] {
        let running =
            Running::start(&format!("ryw-{policy}"), &format!("\"log.flush.policy\" = \"{policy}\""));
        let mut client = running.client();
        create_topic(&mut client, "ryw", 2);
        for round in 0..150 {
            let partition = round % 2;
            let base = produce(&mut client, "ryw", partition, 1);
            assert_eq!(list_latest(&mut client, "ryw", partition), base + 1, "{policy}: round {round}");
            let base = produce(&mut client, "ryw", partition, 1);
            let (high_watermark, batch_count) = fetch_now(&mut client, "ryw", partition, base);
            assert_eq!((high_watermark, batch_count), (base + 1, 1), "{policy}: round {round}");
            if round % 10 == 0 {
                let base = produce(&mut client, "ryw", partition, 1);
                let (error, low_watermark) = delete_records(&mut client, "ryw", partition, base + 1);
                assert_eq!((error, low_watermark), (NONE, base + 1), "{policy}: round {round}");
            }
        }
        drop(client);
        running.stop();
    }
}

/// The versions of API `R` both the broker advertises and the codec can speak.
fn versions<R: Request + Message>(advertised: &ApiVersionsResponse) -> std::ops::RangeInclusive<i16> {
    let key = advertised.api_keys.iter().find(|api| api.api_key == R::KEY).expect("API advertised");
    key.min_version.max(R::VERSIONS.min)..=key.max_version.min(R::VERSIONS.max)
}

fn assert_null_on_success(api: &str, version: i16, error_code: i16, message: &Option<StrBytes>) {
    if error_code == NONE {
        assert_eq!(message, &None, "{api} v{version}: error_message on success");
    }
}

fn alter_configs_request(topic: &str) -> AlterConfigsRequest {
    let mut config = AlterableConfig::default();
    config.name = text("retention.ms");
    config.value = Some(text("3600000"));
    let mut resource = AlterConfigsResource::default();
    resource.resource_type = RESOURCE_TOPIC;
    resource.resource_name = text(topic);
    resource.configs = vec![config];
    let mut request = AlterConfigsRequest::default();
    request.resources = vec![resource];
    request
}

fn incremental_alter_configs_request(topic: &str) -> IncrementalAlterConfigsRequest {
    let mut config = incremental::AlterableConfig::default();
    config.name = text("segment.ms");
    config.config_operation = 0;
    config.value = Some(text("3600000"));
    let mut resource = incremental::AlterConfigsResource::default();
    resource.resource_type = RESOURCE_TOPIC;
    resource.resource_name = text(topic);
    resource.configs = vec![config];
    let mut request = IncrementalAlterConfigsRequest::default();
    request.resources = vec![resource];
    request
}

fn describe_configs_request(resources: &[(i8, &str)], synonyms: bool) -> DescribeConfigsRequest {
    let mut request = DescribeConfigsRequest::default();
    request.include_synonyms = synonyms;
    request.resources = resources
        .iter()
        .map(|(kind, name)| {
            let mut resource = DescribeConfigsResource::default();
            resource.resource_type = *kind;
            resource.resource_name = text(name);
            resource.configuration_keys = None;
            resource
        })
        .collect();
    request
}

/// Every successful response of the admin version sweep carries a null error_message (Kafka's), not the codec
/// default's empty string: CreateTopics, CreatePartitions, AlterConfigs, IncrementalAlterConfigs,
/// DescribeConfigs, DeleteTopics, FindCoordinator and DescribeCluster, each at every version advertised.
#[test]
fn successful_responses_carry_null_error_messages() {
    let running = Running::start("nulls", "");
    let mut client = running.client();
    let advertised = client.call(&ApiVersionsRequest::default(), 0);
    for version in versions::<CreateTopicsRequest>(&advertised) {
        let topic = format!("nulls-{version}");
        let mut creatable = CreatableTopic::default();
        creatable.name = TopicName(text(&topic));
        creatable.num_partitions = 1;
        creatable.replication_factor = 1;
        let mut create = CreateTopicsRequest::default();
        create.topics = vec![creatable];
        create.timeout_ms = 60_000;
        for result in client.call(&create, version).topics {
            assert_eq!(result.error_code, NONE);
            assert_null_on_success("CreateTopics", version, result.error_code, &result.error_message);
        }
    }
    let topic = "nulls-7";
    for (index, version) in versions::<CreatePartitionsRequest>(&advertised).enumerate() {
        let mut grow = CreatePartitionsTopic::default();
        grow.name = TopicName(text(topic));
        grow.count = 2 + index as i32;
        let mut request = CreatePartitionsRequest::default();
        request.topics = vec![grow];
        request.timeout_ms = 60_000;
        for result in client.call(&request, version).results {
            assert_eq!(result.error_code, NONE);
            assert_null_on_success("CreatePartitions", version, result.error_code, &result.error_message);
        }
    }
    sweep_configs(&mut client, &advertised, topic);
    sweep_coordinator_cluster_delete(&mut client, &advertised);
    drop(client);
    running.stop();
}

/// The config APIs' part of the sweep, on `topic`.
fn sweep_configs(client: &mut Client, advertised: &ApiVersionsResponse, topic: &str) {
    for version in versions::<AlterConfigsRequest>(advertised) {
        for result in client.call(&alter_configs_request(topic), version).responses {
            assert_eq!(result.error_code, NONE);
            assert_null_on_success("AlterConfigs", version, result.error_code, &result.error_message);
        }
    }
    for version in versions::<IncrementalAlterConfigsRequest>(advertised) {
        for result in client.call(&incremental_alter_configs_request(topic), version).responses {
            assert_eq!(result.error_code, NONE);
            assert_null_on_success(
                "IncrementalAlterConfigs",
                version,
                result.error_code,
                &result.error_message,
            );
        }
    }
    for version in versions::<DescribeConfigsRequest>(advertised) {
        let request = describe_configs_request(&[(RESOURCE_TOPIC, topic), (RESOURCE_BROKER, "0")], true);
        for result in client.call(&request, version).results {
            assert_eq!(result.error_code, NONE);
            assert_null_on_success("DescribeConfigs", version, result.error_code, &result.error_message);
            assert!(!result.configs.is_empty());
        }
    }
}

/// FindCoordinator, DescribeCluster and DeleteTopics' part of the sweep.
fn sweep_coordinator_cluster_delete(client: &mut Client, advertised: &ApiVersionsResponse) {
    for version in versions::<FindCoordinatorRequest>(advertised) {
        let mut request = FindCoordinatorRequest::default();
        if version >= 4 {
            request.coordinator_keys = vec![text("nulls-group")];
        } else {
            request.key = text("nulls-group");
        }
        let answer = client.call(&request, version);
        if (1..=3).contains(&version) {
            // The field exists in v1–3 only (a missing field decodes as the codec's default).
            assert_null_on_success("FindCoordinator", version, answer.error_code, &answer.error_message);
        }
        for coordinator in answer.coordinators {
            assert_null_on_success(
                "FindCoordinator",
                version,
                coordinator.error_code,
                &coordinator.error_message,
            );
        }
    }
    for version in versions::<DescribeClusterRequest>(advertised) {
        let answer = client.call(&DescribeClusterRequest::default(), version);
        assert_eq!(answer.error_code, NONE);
        assert_null_on_success("DescribeCluster", version, answer.error_code, &answer.error_message);
    }
    for version in versions::<DeleteTopicsRequest>(advertised) {
        let name = format!("nulls-{}", version.clamp(2, 7));
        let mut request = DeleteTopicsRequest::default();
        request.topic_names = vec![TopicName(text(&name))];
        request.timeout_ms = 60_000;
        for result in client.call(&request, version).responses {
            if version >= 5 {
                assert_null_on_success("DeleteTopics", version, result.error_code, &result.error_message);
            }
        }
    }
}

fn by_name(configs: &[DescribeConfigsResourceResult]) -> BTreeMap<String, &DescribeConfigsResourceResult> {
    configs.iter().map(|entry| (entry.name.to_string(), entry)).collect()
}

fn synonyms(entry: &DescribeConfigsResourceResult) -> Vec<(String, String, i8)> {
    entry
        .synonyms
        .iter()
        .map(|synonym| {
            let value = synonym.value.as_ref().map(ToString::to_string).unwrap_or_default();
            (synonym.name.to_string(), value, synonym.source)
        })
        .collect()
}

/// DescribeConfigs as Kafka answers it: the BROKER resource lists the broker's own keys with their effective
/// values; a key set in the configuration is STATIC_BROKER_CONFIG and the rest DEFAULT_CONFIG; the flush
/// thresholds are Sluice's (1000 ms, 10000 messages), not Long.MAX; include_synonyms gives the chain; entries
/// come sorted by name.
#[test]
fn describe_configs_answers_as_kafka() {
    let running = Running::start("configs", "\"num.partitions\" = 3\n\"log.retention.ms\" = 86400000");
    let mut client = running.client();
    create_topic(&mut client, "described", 1);
    let mut alter = alter_configs_request("described");
    alter.resources[0].configs[0].name = text("segment.bytes");
    alter.resources[0].configs[0].value = Some(text("1048576"));
    assert_eq!(client.call(&alter, 1).responses[0].error_code, NONE);
    let request = describe_configs_request(&[(RESOURCE_BROKER, "0"), (RESOURCE_TOPIC, "described")], true);
    let answer = client.call(&request, 4);
    let broker = &answer.results[0];
    assert_eq!(broker.error_code, NONE);
    let names: Vec<String> = broker.configs.iter().map(|entry| entry.name.to_string()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "entries sorted by name");
    let entries = by_name(&broker.configs);
    for name in
        ["advertised.listeners", "listeners", "num.partitions", "default.replication.factor", "broker.id"]
    {
        assert!(entries.contains_key(name), "broker resource lacks {name}: {names:?}");
    }
    let partitions = entries["num.partitions"];
    assert_eq!((partitions.value.as_deref(), partitions.config_source), (Some("3"), SOURCE_STATIC_BROKER));
    assert_eq!(
        synonyms(partitions),
        [
            ("num.partitions".to_string(), "3".to_string(), SOURCE_STATIC_BROKER),
            ("num.partitions".to_string(), "1".to_string(), SOURCE_DEFAULT)
        ]
    );
    assert_eq!(entries["default.replication.factor"].config_source, SOURCE_DEFAULT);
    assert_eq!(entries["log.flush.interval.ms"].value.as_deref(), Some("1000"));
    assert_eq!(entries["log.flush.interval.messages"].value.as_deref(), Some("10000"));
    assert_eq!(entries["log.retention.ms"].value.as_deref(), Some("86400000"));
    let topic = &answer.results[1];
    assert_eq!(topic.error_code, NONE);
    let entries = by_name(&topic.configs);
    let retention = entries["retention.ms"];
    assert_eq!(
        (retention.value.as_deref(), retention.config_source),
        (Some("86400000"), SOURCE_STATIC_BROKER)
    );
    let segment = entries["segment.bytes"];
    assert_eq!((segment.value.as_deref(), segment.config_source), (Some("1048576"), SOURCE_TOPIC));
    assert_eq!(
        synonyms(segment),
        [
            ("segment.bytes".to_string(), "1048576".to_string(), SOURCE_TOPIC),
            ("log.segment.bytes".to_string(), "1073741824".to_string(), SOURCE_DEFAULT)
        ]
    );
    assert_eq!(entries["flush.ms"].value.as_deref(), Some("1000"));
    assert_eq!(entries["flush.messages"].value.as_deref(), Some("10000"));
    assert_eq!(entries["flush.ms"].config_source, SOURCE_DEFAULT);
    let without = client.call(&describe_configs_request(&[(RESOURCE_TOPIC, "described")], false), 4);
    assert!(without.results[0].configs.iter().all(|entry| entry.synonyms.is_empty()));
    drop(client);
    running.stop();
}

fn partition_count(client: &mut Client, topic: &str) -> usize {
    let mut wanted = MetadataRequestTopic::default();
    wanted.name = Some(TopicName(text(topic)));
    let mut request = MetadataRequest::default();
    request.topics = Some(vec![wanted]);
    let answer = client.call(&request, 9);
    for partition in &answer.topics[0].partitions {
        assert_eq!(partition.replica_nodes, [BrokerId(0)]);
    }
    answer.topics[0].partitions.len()
}

fn create_partitions(client: &mut Client, topic: &str, count: i32, assignments: Option<&[&[i32]]>) -> i16 {
    let mut grow = CreatePartitionsTopic::default();
    grow.name = TopicName(text(topic));
    grow.count = count;
    grow.assignments = assignments.map(|assignments| {
        assignments
            .iter()
            .map(|brokers| {
                let mut assignment = CreatePartitionsAssignment::default();
                assignment.broker_ids = brokers.iter().map(|id| BrokerId(*id)).collect();
                assignment
            })
            .collect()
    });
    let mut request = CreatePartitionsRequest::default();
    request.topics = vec![grow];
    request.timeout_ms = 60_000;
    client.call(&request, 3).results[0].error_code
}

/// CreatePartitions with manual assignments: one naming a broker that does not exist, an empty or duplicated
/// replica list, or too few assignments is refused with INVALID_REPLICA_ASSIGNMENT and changes nothing; a valid
/// one (every replica on this node) is honoured.
#[test]
fn create_partitions_checks_manual_assignments() {
    let running = Running::start("assign", "");
    let mut client = running.client();
    create_topic(&mut client, "assigned", 1);
    let refused: [&[&[i32]]; 4] = [&[&[0], &[7]], &[&[0]], &[&[0], &[]], &[&[0], &[0, 0]]];
    for assignments in refused {
        let code = create_partitions(&mut client, "assigned", 3, Some(assignments));
        assert_eq!(code, INVALID_REPLICA_ASSIGNMENT, "{assignments:?}");
        assert_eq!(partition_count(&mut client, "assigned"), 1, "{assignments:?} changed the topic");
    }
    assert_eq!(create_partitions(&mut client, "assigned", 3, Some(&[&[0], &[0]])), NONE);
    assert_eq!(partition_count(&mut client, "assigned"), 3);
    assert_eq!(create_partitions(&mut client, "assigned", 4, None), NONE);
    assert_eq!(partition_count(&mut client, "assigned"), 4);
    drop(client);
    running.stop();
}

fn join_request(group: &str, member_id: &str, session_timeout_ms: i32) -> JoinGroupRequest {
    let mut protocol = JoinGroupRequestProtocol::default();
    protocol.name = text("range");
    protocol.metadata = Bytes::from_static(&[0, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
    let mut request = JoinGroupRequest::default();
    request.group_id = GroupId(text(group));
    request.session_timeout_ms = session_timeout_ms;
    request.rebalance_timeout_ms = 30_000;
    request.member_id = text(member_id);
    request.protocol_type = text("consumer");
    request.protocols = vec![protocol];
    request
}

fn sync_request(group: &str, generation: i32, member_id: &str, assignments: &[String]) -> SyncGroupRequest {
    let mut request = SyncGroupRequest::default();
    request.group_id = GroupId(text(group));
    request.generation_id = generation;
    request.member_id = text(member_id);
    request.protocol_type = Some(text("consumer"));
    request.protocol_name = Some(text("range"));
    request.assignments = assignments
        .iter()
        .map(|member| {
            let mut assignment = SyncGroupRequestAssignment::default();
            assignment.member_id = text(member);
            assignment.assignment = Bytes::from_static(&[0, 1, 0, 0, 0, 0, 0, 0]);
            assignment
        })
        .collect();
    request
}

/// Kafka checks the group id before anything else: an empty group id gets INVALID_GROUP_ID from JoinGroup (even
/// with session timeout 0, which is also invalid), SyncGroup, Heartbeat and LeaveGroup; OffsetCommit accepts the
/// empty group id (Kafka keeps it for backward compatibility).
#[test]
fn group_apis_check_the_group_id_first() {
    let running = Running::start("validation", "");
    let mut client = running.client();
    create_topic(&mut client, "validated", 1);
    for version in [0, 4, 5, 9] {
        let answer = client.call(&join_request("", "", 0), version);
        assert_eq!(answer.error_code, INVALID_GROUP_ID, "JoinGroup v{version}");
    }
    assert_eq!(client.call(&sync_request("", 1, "m", &[]), 3).error_code, INVALID_GROUP_ID);
    let mut heartbeat = HeartbeatRequest::default();
    heartbeat.generation_id = 1;
    heartbeat.member_id = text("m");
    assert_eq!(client.call(&heartbeat, 3).error_code, INVALID_GROUP_ID);
    let mut leave = LeaveGroupRequest::default();
    let mut member = MemberIdentity::default();
    member.member_id = text("m");
    leave.members = vec![member];
    assert_eq!(client.call(&leave, 3).error_code, INVALID_GROUP_ID);
    let (code, _) =
        until_loaded(|| (client.call(&join_request("named", "", 0), 5).error_code, ()), "JoinGroup");
    assert_eq!(code, 26, "a named group with session timeout 0: INVALID_SESSION_TIMEOUT");
    let mut partition = OffsetCommitRequestPartition::default();
    partition.partition_index = 0;
    partition.committed_offset = 0;
    let mut topic = OffsetCommitRequestTopic::default();
    topic.name = TopicName(text("validated"));
    topic.partitions = vec![partition];
    let mut commit = OffsetCommitRequest::default();
    commit.generation_id_or_member_epoch = -1;
    commit.topics = vec![topic];
    let answer = loop {
        let answer = client.call(&commit, 5);
        if answer.topics[0].partitions[0].error_code != COORDINATOR_LOAD_IN_PROGRESS {
            break answer;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(answer.topics[0].partitions[0].error_code, NONE, "a commit for the empty group id");
    drop(client);
    running.stop();
}

/// Calls until the answer is not COORDINATOR_LOAD_IN_PROGRESS (retriable: the coordinator is replaying), up to a
/// deadline; never accepts COORDINATOR_NOT_AVAILABLE.
fn until_loaded<T>(mut call: impl FnMut() -> (i16, T), what: &str) -> (i16, T) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, value) = call();
        assert_ne!(code, COORDINATOR_NOT_AVAILABLE, "{what}: COORDINATOR_NOT_AVAILABLE");
        if code != COORDINATOR_LOAD_IN_PROGRESS || Instant::now() > deadline {
            return (code, value);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One member of a two-member group on a fresh broker: join (through MEMBER_ID_REQUIRED), sync; returns the
/// generation it synced in. Rebalances (another member joined late) are retried from the join.
fn member_joins_and_syncs(address: SocketAddr, group: &str) -> i32 {
    let mut client = Client::connect(address, Duration::from_secs(60));
    let mut member_id = String::new();
    loop {
        let (code, joined) = until_loaded(
            || {
                let answer = client.call(&join_request(group, &member_id, 10_000), 5);
                (answer.error_code, answer)
            },
            "JoinGroup",
        );
        if code == MEMBER_ID_REQUIRED {
            member_id = joined.member_id.to_string();
            continue;
        }
        assert_eq!(code, NONE, "JoinGroup");
        member_id = joined.member_id.to_string();
        let assignments: Vec<String> = if joined.leader == joined.member_id {
            joined.members.iter().map(|member| member.member_id.to_string()).collect()
        } else {
            Vec::new()
        };
        let (code, _) = until_loaded(
            || {
                (
                    client
                        .call(&sync_request(group, joined.generation_id, &member_id, &assignments), 3)
                        .error_code,
                    (),
                )
            },
            "SyncGroup",
        );
        match code {
            NONE => return joined.generation_id,
            REBALANCE_IN_PROGRESS => continue,
            other => panic!("SyncGroup: error {other}"),
        }
    }
}

/// The first group on a brand-new data directory: two consumers join at once while `__consumer_offsets` is being
/// created, and neither JoinGroup nor SyncGroup ever answers COORDINATOR_NOT_AVAILABLE (the topic's partitions
/// are opened on every shard before the table naming them is installed; until then, COORDINATOR_LOAD_IN_PROGRESS).
/// At a2909bc, before two-phase topic creation, this failed in its first rounds: SyncGroup answered
/// COORDINATOR_NOT_AVAILABLE ("__consumer_offsets-N is not on shard S").
#[test]
fn the_first_group_on_a_fresh_broker_syncs_without_coordinator_not_available() {
    for round in 0..4 {
        let running =
            Running::start(&format!("first-group-{round}"), "\"group.initial.rebalance.delay.ms\" = 0");
        let address = running.broker.address;
        let members: Vec<_> = (0..2)
            .map(|_| std::thread::spawn(move || member_joins_and_syncs(address, "first-group")))
            .collect();
        let generations: Vec<i32> = members.into_iter().map(|member| member.join().unwrap()).collect();
        assert!(generations.iter().all(|generation| *generation >= 1), "round {round}: {generations:?}");
        running.stop();
    }
}

/// A Kafka server.properties translated to TOML starts the real binary: delete.topic.enable, log.cleaner.enable,
/// zookeeper.*, inter.broker.protocol.version and friends are accepted with one warning line each.
#[test]
fn kafka_keys_without_effect_start_the_binary_with_one_warning_each() {
    let directory = std::env::temp_dir().join(format!("sluice-fidelity-noop-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&directory);
    std::fs::create_dir_all(&directory).unwrap();
    let ignored = [
        ("delete.topic.enable", "true"),
        ("log.cleaner.enable", "false"),
        ("zookeeper.connect", "\"localhost:2181\""),
        ("zookeeper.connection.timeout.ms", "18000"),
        ("inter.broker.protocol.version", "\"3.9\""),
        ("num.network.threads", "3"),
        ("transaction.state.log.replication.factor", "1"),
    ];
    let mut file: String = ignored.iter().map(|(key, value)| format!("\"{key}\" = {value}\n")).collect();
    file.push_str("\"log.retention.hours\" = 168\n");
    let config_path = directory.join("server.toml");
    std::fs::write(&config_path, file).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["--config", config_path.to_str().unwrap(), "--listen", &format!("127.0.0.1:{port}")])
        .args(["--data-dir", directory.join("data").to_str().unwrap(), "--shards", "1"])
        .env("SLUICE_LOG", "warn")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(child.try_wait().unwrap().is_none(), "sluice exited at start-up");
        assert!(Instant::now() < deadline, "sluice did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    for (key, _) in ignored {
        let lines = stderr.lines().filter(|line| line.contains(&format!(" {key} = "))).count();
        assert_eq!(lines, 1, "{key}: {lines} warning lines in\n{stderr}");
    }
    let _ = std::fs::remove_dir_all(&directory);
}

/// One produce of a keyless batch to `topic`-`partition` with `acks`; returns the partition's error code.
fn produce_code(client: &mut Client, topic: &str, partition: i32, acks: i16) -> i16 {
    let mut partition_data = PartitionProduceData::default();
    partition_data.index = partition;
    partition_data.records = Some(make_batch(1, 100, 1_000));
    let mut data = TopicProduceData::default();
    data.name = TopicName(text(topic));
    data.partition_data = vec![partition_data];
    let mut request = ProduceRequest::default();
    request.acks = acks;
    request.timeout_ms = 30_000;
    request.topic_data = vec![data];
    client.call(&request, 8).responses[0].partition_responses[0].error_code
}

fn topic_exists(client: &mut Client, topic: &str) -> bool {
    let mut wanted = MetadataRequestTopic::default();
    wanted.name = Some(TopicName(text(topic)));
    let mut request = MetadataRequest::default();
    request.topics = Some(vec![wanted]);
    request.allow_auto_topic_creation = false;
    client.call(&request, 9).topics[0].error_code == NONE
}

#[test]
fn produce_checks_in_kafkas_order() {
    const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    const INVALID_REQUIRED_ACKS: i16 = 21;
    const INVALID_RECORD: i16 = 87;
    let running = Running::start("produce-order", "");
    let mut client = running.client();
    let mut creatable = CreatableTopic::default();
    creatable.name = TopicName(text("compacted"));
    creatable.num_partitions = 1;
    creatable.replication_factor = 1;
    let mut policy = kafka_protocol::messages::create_topics_request::CreatableTopicConfig::default();
    policy.name = text("cleanup.policy");
    policy.value = Some(text("compact"));
    creatable.configs = vec![policy];
    let mut create = CreateTopicsRequest::default();
    create.topics = vec![creatable];
    create.timeout_ms = 60_000;
    assert_eq!(client.call(&create, 5).topics[0].error_code, NONE);
    // A keyless batch to a partition that does not exist: the partition is checked before the records.
    assert_eq!(produce_code(&mut client, "compacted", 5, 1), UNKNOWN_TOPIC_OR_PARTITION);
    assert_eq!(produce_code(&mut client, "compacted", 0, 1), INVALID_RECORD);
    // Invalid acks are refused before a topic is auto-created.
    assert_eq!(produce_code(&mut client, "never-created", 0, 2), INVALID_REQUIRED_ACKS);
    assert!(!topic_exists(&mut client, "never-created"), "a refused produce created its topic");
    assert_eq!(produce_code(&mut client, "auto-created", 0, 1), NONE);
    assert!(topic_exists(&mut client, "auto-created"));
    drop(client);
    running.stop();
}
