//! DescribeTopicPartitions (key 75, KIP-966), v0: topics and their partitions in name order, paginated by a
//! partition budget and a cursor, as Kafka 3.8+'s `DescribeTopicPartitionsRequestHandler` and
//! `KRaftMetadataCache.getTopicMetadataForDescribeTopicResponse` answer:
//!
//! - An empty topic list means every topic; otherwise the named ones (duplicates once). Either way only names at
//!   or after the cursor's topic are considered, sorted by name.
//! - A cursor whose topic is not in a non-empty topic list is INVALID_REQUEST for every requested topic.
//! - The budget is `response_partition_limit` clamped to 1..=[`RESPONSE_PARTITION_COUNT_MAX`] (the lower bound is
//!   Kafka 4's; 3.8 answered a limit of 0 with no topics and a cursor that never moved). The cursor's topic
//!   starts at the cursor's partition, every other topic at 0. When a topic's partitions do not all fit,
//!   `next_cursor` names its first partition left out; when the budget is spent exactly at a topic's end and
//!   another topic follows, `next_cursor` names that topic's partition 0. Otherwise `next_cursor` is null.
//! - A named topic that does not exist is UNKNOWN_TOPIC_OR_PARTITION (INVALID_TOPIC_EXCEPTION when the name is not
//!   a legal topic name), with topic id zero and no partitions; it costs no budget.
//! - Sluice has no eligible leader replicas (KIP-966's ELR): both ELR lists are empty, as Kafka's are with ELR
//!   disabled (an empty replica array in the partition record, not null).

use std::collections::BTreeSet;

use kafka_protocol::messages::describe_topic_partitions_response::{
    Cursor, DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
};
use kafka_protocol::messages::{BrokerId, DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse};

use super::{topic_name, HandlerResult, RequestContext};
use crate::cluster::topic_table::{
    validate_topic_name, ClusterView, PartitionAssignment, TopicEntry, TopicTable, OFFSETS_TOPIC,
};
use crate::errors::ResponseError;
use crate::shard::Shard;

/// Kafka's `max.request.partition.size.limit` default: the most partitions one response describes, whatever the
/// request asks for.
pub const RESPONSE_PARTITION_COUNT_MAX: i32 = 2000;

/// `topic_authorized_operations` of every described topic. Kafka always computes it for this API (the request has
/// no "include" flag); without an authorizer every operation a topic supports is allowed: READ (3), WRITE (4),
/// CREATE (5), DELETE (6), ALTER (7), DESCRIBE (8), DESCRIBE_CONFIGS (10), ALTER_CONFIGS (11), one bit each.
pub const TOPIC_OPERATIONS_ALL: i32 =
    (1 << 3) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 8) | (1 << 10) | (1 << 11);
const _: () = assert!(TOPIC_OPERATIONS_ALL == 3576);

/// Kafka's "not computed" value of `topic_authorized_operations`, left on the entries of an INVALID_REQUEST answer.
const OPERATIONS_NOT_COMPUTED: i32 = i32::MIN;

pub fn handle(
    shard: &Shard,
    context: &RequestContext,
    body: DescribeTopicPartitionsRequest,
) -> HandlerResult {
    let table = shard.topics();
    context.respond(&describe(&table, &body))
}

/// The answer to `request` from `table`; no I/O, so the tests below drive it directly.
pub fn describe(
    table: &TopicTable,
    request: &DescribeTopicPartitionsRequest,
) -> DescribeTopicPartitionsResponse {
    let all_topics = request.topics.is_empty();
    let cursor_topic = request.cursor.as_ref().map_or("", |cursor| cursor.topic_name.0.as_str());
    let names: BTreeSet<&str> = if all_topics {
        table.topics.keys().map(String::as_str).filter(|name| *name >= cursor_topic).collect()
    } else {
        request
            .topics
            .iter()
            .map(|topic| topic.name.0.as_str())
            .filter(|name| *name >= cursor_topic)
            .collect()
    };
    if !all_topics && request.cursor.is_some() && !names.contains(cursor_topic) {
        return invalid_request(request);
    }
    let cursor_partition = request.cursor.as_ref().map_or(0, |cursor| cursor.partition_index);
    let mut remaining = i64::from(request.response_partition_limit.clamp(1, RESPONSE_PARTITION_COUNT_MAX));
    let mut response = DescribeTopicPartitionsResponse::default();
    for name in names {
        if remaining == 0 {
            // The previous topic ended exactly at the budget: the next page starts at this one.
            response.next_cursor = Some(cursor(name, 0));
            break;
        }
        let Some(entry) = table.get(name) else {
            // Listing every topic only names topics that exist; a named one that does not is an error entry.
            if !all_topics {
                response.topics.push(missing_topic(name));
            }
            continue;
        };
        let start = if name == cursor_topic { cursor_partition } else { 0 };
        let (topic, next_partition) = describe_topic(entry, table.cluster.as_deref(), start, remaining);
        remaining -= topic.partitions.len() as i64;
        assert!(remaining >= 0, "topic {name} described more partitions than the budget left");
        response.topics.push(topic);
        if let Some(next_partition) = next_partition {
            response.next_cursor = Some(cursor(name, next_partition));
            break;
        }
    }
    response
}

/// `entry`'s partitions from `start`, at most `budget` of them, and the first partition left out if any.
fn describe_topic(
    entry: &TopicEntry,
    cluster: Option<&ClusterView>,
    start: i32,
    budget: i64,
) -> (DescribeTopicPartitionsResponseTopic, Option<i32>) {
    let partition_count = entry.partitions.len() as i64;
    // As Kafka: a cursor past the last partition describes none and ends the listing of this topic, and a negative
    // one counts the indexes below zero against the budget without describing them.
    let end = partition_count.min(i64::from(start) + budget);
    let next_partition = (end < partition_count).then_some(end as i32);
    let mut topic = DescribeTopicPartitionsResponseTopic::default();
    topic.name = Some(topic_name(&entry.name));
    topic.topic_id = uuid::Uuid::from_bytes(entry.topic_uuid());
    topic.is_internal = entry.name == OFFSETS_TOPIC;
    topic.topic_authorized_operations = TOPIC_OPERATIONS_ALL;
    topic.partitions = (i64::from(start).max(0)..end)
        .filter_map(|index| {
            let index = index as i32;
            entry.partition(index).map(|assignment| describe_partition(index, assignment, cluster))
        })
        .collect();
    (topic, next_partition)
}

/// One partition's leadership. Offline replicas are those that are not live brokers (unregistered or fenced); a
/// cluster of one (no `ClusterView`) has none, and its leader is itself.
fn describe_partition(
    index: i32,
    assignment: &PartitionAssignment,
    cluster: Option<&ClusterView>,
) -> DescribeTopicPartitionsResponsePartition {
    let registered = |node: i32| cluster.is_none_or(|cluster| cluster.brokers.contains_key(&node));
    let live = |node: i32| {
        cluster.is_none_or(|cluster| cluster.brokers.get(&node).is_some_and(|broker| !broker.fenced))
    };
    let leader = assignment.leader().0;
    let mut partition = DescribeTopicPartitionsResponsePartition::default();
    partition.partition_index = index;
    // Kafka reports no leader (-1) when the leader is not a registered broker.
    partition.leader_id = BrokerId(if registered(leader) { leader } else { -1 });
    partition.leader_epoch = assignment.leader_epoch;
    partition.replica_nodes = assignment.replicas.iter().copied().map(BrokerId).collect();
    partition.isr_nodes = assignment.isr().iter().copied().map(BrokerId).collect();
    partition.eligible_leader_replicas = Some(Vec::new());
    partition.last_known_elr = Some(Vec::new());
    partition.offline_replicas =
        assignment.replicas.iter().copied().filter(|node| !live(*node)).map(BrokerId).collect();
    partition
}

/// The entry of a named topic that does not exist.
fn missing_topic(name: &str) -> DescribeTopicPartitionsResponseTopic {
    let error = if validate_topic_name(name).is_ok() {
        ResponseError::UnknownTopicOrPartition
    } else {
        ResponseError::InvalidTopicException
    };
    let mut topic = DescribeTopicPartitionsResponseTopic::default();
    topic.error_code = error.code();
    topic.name = Some(topic_name(name));
    topic.is_internal = name == OFFSETS_TOPIC;
    topic.topic_authorized_operations = TOPIC_OPERATIONS_ALL;
    topic
}

/// Kafka's error answer (`DescribeTopicPartitionsRequest.getErrorResponse`): every requested topic, in request
/// order, with INVALID_REQUEST.
fn invalid_request(request: &DescribeTopicPartitionsRequest) -> DescribeTopicPartitionsResponse {
    let mut response = DescribeTopicPartitionsResponse::default();
    response.topics = request
        .topics
        .iter()
        .map(|requested| {
            let mut topic = DescribeTopicPartitionsResponseTopic::default();
            topic.error_code = ResponseError::InvalidRequest.code();
            topic.name = Some(requested.name.clone());
            topic.topic_authorized_operations = OPERATIONS_NOT_COMPUTED;
            topic
        })
        .collect();
    response
}

fn cursor(name: &str, partition_index: i32) -> Cursor {
    let mut cursor = Cursor::default();
    cursor.topic_name = topic_name(name);
    cursor.partition_index = partition_index;
    cursor
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use kafka_protocol::messages::describe_topic_partitions_request::{self as request, TopicRequest};
    use kafka_protocol::messages::TopicName;
    use sluice_replication::NodeId;

    use super::*;
    use crate::cluster::topic_table::BrokerView;

    const NODE: i32 = 1;

    fn table(topics: &[(&str, i32)]) -> TopicTable {
        let mut table = TopicTable::default();
        for (name, partition_count) in topics {
            let entry = TopicEntry::new(name, *partition_count, BTreeMap::new(), NodeId(NODE));
            table.topics.insert(name.to_string(), entry);
        }
        table
    }

    fn request(topics: &[&str], limit: i32, cursor: Option<(&str, i32)>) -> DescribeTopicPartitionsRequest {
        let mut request = DescribeTopicPartitionsRequest::default();
        request.topics = topics
            .iter()
            .map(|name| {
                let mut topic = TopicRequest::default();
                topic.name = topic_name(name);
                topic
            })
            .collect();
        request.response_partition_limit = limit;
        request.cursor = cursor.map(|(name, partition_index)| {
            let mut cursor = request::Cursor::default();
            cursor.topic_name = topic_name(name);
            cursor.partition_index = partition_index;
            cursor
        });
        request
    }

    /// A page as (topic, error, partition indexes) and its next cursor.
    type Page = (Vec<(String, i16, Vec<i32>)>, Option<(String, i32)>);
    /// The page `check` expects, in the same shape.
    type Expected<'a> = (&'a [(&'a str, i16, &'a [i32])], Option<(&'a str, i32)>);

    fn page(response: &DescribeTopicPartitionsResponse) -> Page {
        let name =
            |name: &Option<TopicName>| name.as_ref().map(|name| name.0.to_string()).unwrap_or_default();
        let topics = response
            .topics
            .iter()
            .map(|topic| {
                let partitions = topic.partitions.iter().map(|partition| partition.partition_index).collect();
                (name(&topic.name), topic.error_code, partitions)
            })
            .collect();
        let next = response
            .next_cursor
            .as_ref()
            .map(|cursor| (cursor.topic_name.0.to_string(), cursor.partition_index));
        (topics, next)
    }

    fn check(table: &TopicTable, request: &DescribeTopicPartitionsRequest, expected: Expected<'_>) {
        let (topics, next) = page(&describe(table, request));
        let expected_topics: Vec<(String, i16, Vec<i32>)> = expected
            .0
            .iter()
            .map(|(name, error, partitions)| (name.to_string(), *error, partitions.to_vec()))
            .collect();
        assert_eq!(topics, expected_topics);
        assert_eq!(next, expected.1.map(|(name, index)| (name.to_string(), index)));
    }

    #[test]
    fn pages_cut_inside_a_topic_and_at_its_end() {
        let table = table(&[("c", 2), ("a", 5), ("b", 1)]);
        // Three partitions a page: the first page stops inside "a", the second exactly at the end of "b".
        check(&table, &request(&[], 3, None), (&[("a", 0, &[0, 1, 2])], Some(("a", 3))));
        check(
            &table,
            &request(&[], 3, Some(("a", 3))),
            (&[("a", 0, &[3, 4]), ("b", 0, &[0])], Some(("c", 0))),
        );
        check(&table, &request(&[], 3, Some(("c", 0))), (&[("c", 0, &[0, 1])], None));
        // The budget is at least one partition and at most Kafka's 2000.
        check(&table, &request(&[], 0, None), (&[("a", 0, &[0])], Some(("a", 1))));
        check(&table, &request(&[], -5, Some(("b", 0))), (&[("b", 0, &[0])], Some(("c", 0))));
        check(
            &table,
            &request(&[], i32::MAX, None),
            (&[("a", 0, &[0, 1, 2, 3, 4]), ("b", 0, &[0]), ("c", 0, &[0, 1])], None),
        );
        // A cursor past the last partition describes none of that topic and moves on.
        check(
            &table,
            &request(&[], 10, Some(("a", 9))),
            (&[("a", 0, &[]), ("b", 0, &[0]), ("c", 0, &[0, 1])], None),
        );
        // A cursor on a topic that does not exist starts at the next name.
        check(&table, &request(&[], 10, Some(("ab", 1))), (&[("b", 0, &[0]), ("c", 0, &[0, 1])], None));
    }

    #[test]
    fn named_topics_are_sorted_once_and_missing_ones_are_errors() {
        let table = table(&[("a", 2), ("b", 1)]);
        let unknown = ResponseError::UnknownTopicOrPartition.code();
        let invalid = ResponseError::InvalidTopicException.code();
        check(
            &table,
            &request(&["zz", "b", "bad name!", "a", "b"], 10, None),
            (&[("a", 0, &[0, 1]), ("b", 0, &[0]), ("bad name!", invalid, &[]), ("zz", unknown, &[])], None),
        );
        // Missing topics cost no budget; an exhausted budget stops before them.
        check(&table, &request(&["b", "a", "aa"], 2, None), (&[("a", 0, &[0, 1])], Some(("aa", 0))));
        check(
            &table,
            &request(&["b", "a", "aa"], 2, Some(("aa", 0))),
            (&[("aa", unknown, &[]), ("b", 0, &[0])], None),
        );
        let response = describe(&table, &request(&["zz", "b"], 10, None));
        let missing = &response.topics[1];
        assert_eq!((missing.topic_id, missing.is_internal), (uuid::Uuid::nil(), false));
        assert!(response
            .topics
            .iter()
            .all(|topic| topic.topic_authorized_operations == TOPIC_OPERATIONS_ALL));
        assert_eq!(response.topics[0].topic_id, uuid::Uuid::from_bytes(table.topics["b"].topic_uuid()));
    }

    #[test]
    fn a_cursor_outside_the_named_topics_is_an_invalid_request() {
        let table = table(&[("a", 2), ("b", 1)]);
        let code = ResponseError::InvalidRequest.code();
        check(
            &table,
            &request(&["b", "a"], 10, Some(("c", 0))),
            (&[("b", code, &[]), ("a", code, &[])], None),
        );
        // Names before the cursor's topic are dropped before the check, so a cursor before all of them fails too.
        check(&table, &request(&["b"], 10, Some(("a", 0))), (&[("b", code, &[])], None));
    }

    #[test]
    fn partitions_show_leadership_replicas_and_empty_elr() {
        let mut table = table(&[(OFFSETS_TOPIC, 1), ("t", 3)]);
        let response = describe(&table, &request(&[OFFSETS_TOPIC], 10, None));
        assert!(response.topics[0].is_internal);
        let partition = &describe(&table, &request(&["t"], 10, None)).topics[0].partitions[0];
        assert_eq!(partition.leader_id, BrokerId(NODE));
        assert_eq!(
            (partition.replica_nodes.clone(), partition.isr_nodes.clone()),
            (vec![BrokerId(NODE)], vec![BrokerId(NODE)])
        );
        assert_eq!(
            (partition.eligible_leader_replicas.clone(), partition.last_known_elr.clone()),
            (Some(vec![]), Some(vec![]))
        );
        assert!(partition.offline_replicas.is_empty());

        // A cluster: broker 1 live, 2 fenced, 3 unregistered.
        let broker = |id: i32, fenced: bool| {
            (id, BrokerView { id, host: "localhost".into(), port: 9092, rack: None, fenced })
        };
        table.cluster = Some(Arc::new(ClusterView {
            brokers: [broker(1, false), broker(2, true)].into(),
            controller: Some(1),
            image: Default::default(),
        }));
        let entry = table.topics.get_mut("t").unwrap();
        let assignment = |leader: i32, epoch: i32| PartitionAssignment {
            replicas: vec![1, 2, 3],
            leader_epoch: epoch,
            leader: Some(leader),
            isr: vec![leader],
        };
        entry.partitions = vec![assignment(1, 4), assignment(3, 5), assignment(-1, 6)];
        let partitions = &describe(&table, &request(&["t"], 10, None)).topics[0].partitions;
        let leaders: Vec<(i32, i32)> =
            partitions.iter().map(|partition| (partition.leader_id.0, partition.leader_epoch)).collect();
        assert_eq!(leaders, [(1, 4), (-1, 5), (-1, 6)]);
        assert_eq!(partitions[0].isr_nodes, [BrokerId(1)]);
        assert_eq!(partitions[0].replica_nodes, [BrokerId(1), BrokerId(2), BrokerId(3)]);
        assert!(partitions.iter().all(|partition| partition.offline_replicas == [BrokerId(2), BrokerId(3)]));
    }
}
