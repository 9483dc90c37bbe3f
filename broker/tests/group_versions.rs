//! Every advertised version of every group API against a real broker on loopback: a member joins (through
//! MEMBER_ID_REQUIRED from v4), syncs, heartbeats, commits, fetches its offsets, is listed and described, leaves,
//! and the group is deleted — once per JoinGroup version, with the other APIs' versions cycled alongside. Each
//! response is decoded with the version it was asked in (a field a version lacks would fail to encode or
//! decode) and its error codes and values are checked.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step is the test failing

mod common;
use common::Client;

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_delete_request::{
    OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use sluice_broker::config::{Config, ConfigOverrides};
use sluice_broker::server;

const NONE: i16 = 0;
const MEMBER_ID_REQUIRED: i16 = 79;
const TOPIC: &str = "versions";

fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_string())
}

/// Cycles `index` through `low..=high`.
fn version_in(index: i16, low: i16, high: i16) -> i16 {
    low + index % (high - low + 1)
}

#[test]
#[allow(clippy::too_many_lines)] // over 70 lines before the limit; to be split
fn every_group_api_version_round_trips() {
    let directory = std::env::temp_dir().join(format!("sluice-group-versions-{}", std::process::id()));
    let overrides = ConfigOverrides {
        listen: Some("127.0.0.1:0".into()),
        data_dir: Some(directory.clone()),
        shard_count: Some(2),
        ..Default::default()
    };
    let config = Config::from_toml("\"group.initial.rebalance.delay.ms\" = 0", &overrides).unwrap();
    let broker = server::start(config).unwrap();
    let mut client = Client::connect(broker.address, Duration::from_secs(30));

    let mut create = CreateTopicsRequest::default();
    let mut topic = kafka_protocol::messages::create_topics_request::CreatableTopic::default();
    topic.name = TopicName(text(TOPIC));
    topic.num_partitions = 2;
    topic.replication_factor = 1;
    create.topics = vec![topic];
    create.timeout_ms = 10_000;
    assert_eq!(client.call(&create, 7).topics[0].error_code, NONE);

    for join_version in 0..=9i16 {
        let group = format!("group-v{join_version}");
        let index = join_version;

        // FindCoordinator: this node, for groups.
        let find_version = version_in(index, 0, 4);
        let mut find = FindCoordinatorRequest::default();
        if find_version >= 4 {
            find.coordinator_keys = vec![text(&group)];
        } else {
            find.key = text(&group);
        }
        let found = client.call(&find, find_version);
        if find_version >= 4 {
            assert_eq!(found.coordinators[0].error_code, NONE, "FindCoordinator v{find_version}");
            assert_eq!(found.coordinators[0].port, i32::from(broker.address.port()));
        } else {
            assert_eq!(found.error_code, NONE, "FindCoordinator v{find_version}");
            assert_eq!(found.port, i32::from(broker.address.port()));
        }

        // JoinGroup, through MEMBER_ID_REQUIRED from v4.
        let mut protocol = JoinGroupRequestProtocol::default();
        protocol.name = text("range");
        protocol.metadata = Bytes::from_static(b"\x00\x00\x00\x00\x00\x01\x00\x08versions\x00\x00\x00\x00");
        let mut join = JoinGroupRequest::default();
        join.group_id = GroupId(text(&group));
        join.session_timeout_ms = 10_000;
        join.rebalance_timeout_ms = 10_000;
        join.protocol_type = text("consumer");
        join.protocols = vec![protocol];
        let mut joined = client.call(&join, join_version);
        if join_version >= 4 {
            assert_eq!(joined.error_code, MEMBER_ID_REQUIRED, "JoinGroup v{join_version}");
            join.member_id = joined.member_id.clone();
            joined = client.call(&join, join_version);
        }
        assert_eq!(joined.error_code, NONE, "JoinGroup v{join_version}");
        assert_eq!(joined.generation_id, 1);
        assert_eq!(joined.leader, joined.member_id, "the only member leads");
        assert_eq!(joined.members.len(), 1);
        assert_eq!(joined.protocol_name.as_deref(), Some("range"));
        let member_id = joined.member_id.clone();

        // SyncGroup: the leader's assignment comes back.
        let sync_version = version_in(index, 0, 5);
        let mut sync = SyncGroupRequest::default();
        sync.group_id = GroupId(text(&group));
        sync.generation_id = 1;
        sync.member_id = member_id.clone();
        let mut assignment = SyncGroupRequestAssignment::default();
        assignment.member_id = member_id.clone();
        assignment.assignment = Bytes::from_static(b"assigned");
        sync.assignments = vec![assignment];
        if sync_version >= 5 {
            sync.protocol_type = Some(text("consumer"));
            sync.protocol_name = Some(text("range"));
        }
        let synced = client.call(&sync, sync_version);
        assert_eq!(synced.error_code, NONE, "SyncGroup v{sync_version}");
        assert_eq!(synced.assignment, Bytes::from_static(b"assigned"));

        let heartbeat_version = version_in(index, 0, 4);
        let mut heartbeat = HeartbeatRequest::default();
        heartbeat.group_id = GroupId(text(&group));
        heartbeat.generation_id = 1;
        heartbeat.member_id = member_id.clone();
        assert_eq!(
            client.call(&heartbeat, heartbeat_version).error_code,
            NONE,
            "Heartbeat v{heartbeat_version}"
        );

        // OffsetCommit, then OffsetFetch reads it back.
        let commit_version = version_in(index, 2, 9);
        let committed_offset = 100 + i64::from(join_version);
        let mut partition = OffsetCommitRequestPartition::default();
        partition.partition_index = 1;
        partition.committed_offset = committed_offset;
        partition.committed_leader_epoch = if commit_version >= 6 { 0 } else { -1 };
        partition.committed_metadata = Some(text("meta"));
        let mut commit_topic = OffsetCommitRequestTopic::default();
        commit_topic.name = TopicName(text(TOPIC));
        commit_topic.partitions = vec![partition];
        let mut commit = OffsetCommitRequest::default();
        commit.group_id = GroupId(text(&group));
        commit.generation_id_or_member_epoch = 1;
        commit.member_id = member_id.clone();
        commit.topics = vec![commit_topic];
        let commit_response = client.call(&commit, commit_version);
        assert_eq!(
            commit_response.topics[0].partitions[0].error_code, NONE,
            "OffsetCommit v{commit_version}"
        );

        let fetch_version = version_in(index, 1, 9);
        let mut fetch = OffsetFetchRequest::default();
        if fetch_version >= 8 {
            let mut requested = OffsetFetchRequestGroup::default();
            requested.group_id = GroupId(text(&group));
            let mut topics = OffsetFetchRequestTopics::default();
            topics.name = TopicName(text(TOPIC));
            topics.partition_indexes = vec![0, 1];
            requested.topics = Some(vec![topics]);
            fetch.groups = vec![requested];
            let fetched = client.call(&fetch, fetch_version);
            let partitions = &fetched.groups[0].topics[0].partitions;
            assert_eq!(partitions[0].committed_offset, -1, "OffsetFetch v{fetch_version}: nothing committed");
            assert_eq!(partitions[1].committed_offset, committed_offset, "OffsetFetch v{fetch_version}");
            assert_eq!(partitions[1].metadata.as_deref(), Some("meta"));
        } else {
            fetch.group_id = GroupId(text(&group));
            let mut topics = OffsetFetchRequestTopic::default();
            topics.name = TopicName(text(TOPIC));
            topics.partition_indexes = vec![0, 1];
            fetch.topics = Some(vec![topics]);
            let fetched = client.call(&fetch, fetch_version);
            let partitions = &fetched.topics[0].partitions;
            assert_eq!(partitions[0].committed_offset, -1, "OffsetFetch v{fetch_version}: nothing committed");
            assert_eq!(partitions[1].committed_offset, committed_offset, "OffsetFetch v{fetch_version}");
        }

        // ListGroups and DescribeGroups see a stable group with one member.
        let list_version = version_in(index, 0, 5);
        let mut list = ListGroupsRequest::default();
        if list_version >= 4 {
            list.states_filter = vec![text("Stable")];
        }
        let listed = client.call(&list, list_version);
        assert_eq!(listed.error_code, NONE);
        let entry = listed.groups.iter().find(|g| g.group_id.0.as_str() == group).expect("group listed");
        assert_eq!(entry.protocol_type.as_str(), "consumer");
        if list_version >= 4 {
            assert_eq!(entry.group_state.as_str(), "Stable");
        }
        let describe_version = version_in(index, 0, 5);
        let mut describe = DescribeGroupsRequest::default();
        describe.groups = vec![GroupId(text(&group)), GroupId(text("no-such-group"))];
        let described = client.call(&describe, describe_version);
        assert_eq!(described.groups[0].group_state.as_str(), "Stable", "DescribeGroups v{describe_version}");
        assert_eq!(described.groups[0].protocol_data.as_str(), "range");
        assert_eq!(described.groups[0].members.len(), 1);
        assert_eq!(described.groups[0].members[0].member_assignment, Bytes::from_static(b"assigned"));
        assert_eq!(described.groups[1].group_state.as_str(), "Dead");

        // OffsetForLeaderEpoch: epoch 0 ends at the high watermark (0: nothing produced).
        let epoch_version = version_in(index, 2, 4);
        let mut epoch_partition = OffsetForLeaderPartition::default();
        epoch_partition.partition = 0;
        epoch_partition.current_leader_epoch = 0;
        epoch_partition.leader_epoch = 0;
        let mut epoch_topic = OffsetForLeaderTopic::default();
        epoch_topic.topic = TopicName(text(TOPIC));
        epoch_topic.partitions = vec![epoch_partition];
        let mut epoch = OffsetForLeaderEpochRequest::default();
        epoch.replica_id = BrokerId(-1);
        epoch.topics = vec![epoch_topic];
        let ended = client.call(&epoch, epoch_version);
        let answer = &ended.topics[0].partitions[0];
        assert_eq!((answer.error_code, answer.leader_epoch, answer.end_offset), (NONE, 0, 0));

        // OffsetDelete refuses a topic the stable group subscribes to.
        let mut delete_partition = OffsetDeleteRequestPartition::default();
        delete_partition.partition_index = 1;
        let mut delete_topic = OffsetDeleteRequestTopic::default();
        delete_topic.name = TopicName(text(TOPIC));
        delete_topic.partitions = vec![delete_partition];
        let mut delete_offsets = OffsetDeleteRequest::default();
        delete_offsets.group_id = GroupId(text(&group));
        delete_offsets.topics = vec![delete_topic];
        let refused = client.call(&delete_offsets, 0);
        assert_eq!(refused.topics[0].partitions[0].error_code, 86, "GROUP_SUBSCRIBED_TO_TOPIC");

        // LeaveGroup empties the group; then DeleteGroups removes it.
        let leave_version = version_in(index, 0, 5);
        let mut leave = LeaveGroupRequest::default();
        leave.group_id = GroupId(text(&group));
        if leave_version >= 3 {
            let mut identity = MemberIdentity::default();
            identity.member_id = member_id.clone();
            leave.members = vec![identity];
        } else {
            leave.member_id = member_id.clone();
        }
        let left = client.call(&leave, leave_version);
        assert_eq!(left.error_code, NONE, "LeaveGroup v{leave_version}");
        if leave_version >= 3 {
            assert_eq!(left.members[0].error_code, NONE);
        }
        let delete_version = version_in(index, 0, 2);
        let mut delete = DeleteGroupsRequest::default();
        delete.groups_names = vec![GroupId(text(&group)), GroupId(text(&group))];
        let deleted = client.call(&delete, delete_version);
        assert_eq!(deleted.results[0].error_code, NONE, "DeleteGroups v{delete_version}");
        assert_eq!(deleted.results[1].error_code, 69, "GROUP_ID_NOT_FOUND the second time");
    }
    drop(client);
    broker.stop();
    broker.join();
    let _ = std::fs::remove_dir_all(&directory);
}
