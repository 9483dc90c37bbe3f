//! One file per Kafka API, as Redpanda's `kafka/server/handlers/`. Each handler takes the decoded request and
//! returns the encoded response frame (or none: acks=0 produce).

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, BrokerId, RequestKind, TopicName};
use kafka_protocol::protocol::{Encodable, StrBytes};

use crate::cluster::topic_table::PartitionAssignment;
use crate::cluster::TopicTable;
use crate::codec::{self, CodecError, Request};
use crate::shard::Shard;
use crate::sync::OneshotSender;

pub mod alter_configs;
pub mod api_versions;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_groups;
pub mod delete_records;
pub mod delete_topics;
pub mod describe_cluster;
pub mod describe_configs;
pub mod describe_groups;
pub mod describe_log_dirs;
pub mod describe_quorum;
pub mod describe_topic_partitions;
pub mod fetch;
pub mod find_coordinator;
pub mod heartbeat;
pub mod incremental_alter_configs;
pub mod init_producer_id;
pub mod join_group;
pub mod leave_group;
pub mod list_groups;
pub mod list_offsets;
pub mod metadata;
pub mod offset_commit;
pub mod offset_delete;
pub mod offset_fetch;
pub mod offset_for_leader_epoch;
pub mod produce;
pub mod reassignment;
pub mod sync_group;

/// An encoded response frame as chunks (size prefix included) for one vectored write.
#[derive(Debug)]
pub struct Response {
    pub chunks: Vec<Bytes>,
}

pub type HandlerResult = Result<Option<Response>, CodecError>;

/// The request header fields a handler needs to answer.
#[derive(Clone, Debug)]
pub struct RequestContext {
    pub api_key: ApiKey,
    pub api_version: i16,
    pub correlation_id: i32,
}

impl RequestContext {
    /// Encodes `body` as this request's response.
    pub fn respond<M: Encodable + 'static>(&self, body: &M) -> HandlerResult {
        let frame = codec::encode_response(self.api_key, self.api_version, self.correlation_id, body)?;
        Ok(Some(Response { chunks: vec![frame] }))
    }
}

/// Who sent a request, for the group coordinator's member records (DescribeGroups shows them).
#[derive(Clone, Debug)]
pub struct Client {
    pub id: String,
    pub host: String,
}

/// Runs the handler for `request`. `sequenced` is signalled (dropped or sent) once a produce's offsets are fixed.
pub async fn handle(
    shard: &Rc<Shard>,
    request: Request,
    sequenced: OneshotSender<()>,
    client_host: &str,
) -> HandlerResult {
    let context = RequestContext {
        api_key: request.api_key,
        api_version: request.api_version,
        correlation_id: request.correlation_id,
    };
    let client =
        || Client { id: request.client_id.clone().unwrap_or_default(), host: client_host.to_string() };
    match request.body {
        RequestKind::Produce(body) => produce::handle(shard, &context, body, sequenced).await,
        RequestKind::Fetch(body) => fetch::handle(shard, &context, body).await,
        RequestKind::FindCoordinator(body) => find_coordinator::handle(shard, &context, body).await,
        RequestKind::JoinGroup(body) => join_group::handle(shard, &context, body, client()).await,
        RequestKind::SyncGroup(body) => sync_group::handle(shard, &context, body).await,
        RequestKind::Heartbeat(body) => heartbeat::handle(shard, &context, body).await,
        RequestKind::LeaveGroup(body) => leave_group::handle(shard, &context, body).await,
        RequestKind::OffsetCommit(body) => offset_commit::handle(shard, &context, body).await,
        RequestKind::OffsetFetch(body) => offset_fetch::handle(shard, &context, body).await,
        RequestKind::ListGroups(body) => list_groups::handle(shard, &context, body).await,
        RequestKind::DescribeGroups(body) => describe_groups::handle(shard, &context, body).await,
        RequestKind::DeleteGroups(body) => delete_groups::handle(shard, &context, body).await,
        RequestKind::OffsetDelete(body) => offset_delete::handle(shard, &context, body).await,
        RequestKind::OffsetForLeaderEpoch(body) => {
            offset_for_leader_epoch::handle(shard, &context, body).await
        }
        RequestKind::ListOffsets(body) => list_offsets::handle(shard, &context, body).await,
        RequestKind::Metadata(body) => metadata::handle(shard, &context, body).await,
        RequestKind::ApiVersions(body) => api_versions::handle(&context, body),
        RequestKind::CreateTopics(body) => create_topics::handle(shard, &context, body).await,
        RequestKind::DeleteTopics(body) => delete_topics::handle(shard, &context, body).await,
        RequestKind::DeleteRecords(body) => delete_records::handle(shard, &context, body).await,
        RequestKind::DescribeConfigs(body) => describe_configs::handle(shard, &context, body),
        RequestKind::AlterConfigs(body) => alter_configs::handle(shard, &context, body).await,
        RequestKind::DescribeLogDirs(body) => describe_log_dirs::handle(shard, &context, body).await,
        RequestKind::CreatePartitions(body) => create_partitions::handle(shard, &context, body).await,
        RequestKind::IncrementalAlterConfigs(body) => {
            incremental_alter_configs::handle(shard, &context, body).await
        }
        RequestKind::DescribeCluster(body) => describe_cluster::handle(shard, &context, body),
        RequestKind::DescribeQuorum(body) => describe_quorum::handle(shard, &context, body).await,
        RequestKind::DescribeTopicPartitions(body) => {
            describe_topic_partitions::handle(shard, &context, body)
        }
        RequestKind::InitProducerId(body) => init_producer_id::handle(shard, &context, body).await,
        RequestKind::ElectLeaders(body) => reassignment::elect_leaders(shard, &context, body).await,
        RequestKind::AlterPartitionReassignments(body) => {
            reassignment::alter_reassignments(shard, &context, body).await
        }
        RequestKind::ListPartitionReassignments(body) => {
            reassignment::list_reassignments(shard, &context, body)
        }
        _ => Err(CodecError::Malformed {
            api_key: context.api_key as i16,
            api_version: context.api_version,
            reason: "no handler for this API".into(),
        }),
    }
}

pub fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

pub fn str_bytes(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

pub fn node(shard: &Shard) -> BrokerId {
    BrokerId(shard.config.node_id)
}

/// A broker clients may reach: (id, host, port, rack).
pub type BrokerAddress = (i32, String, u16, Option<String>);

/// The brokers Metadata and DescribeCluster list, and the active controller: the live brokers of the cluster
/// view, or this broker alone (a single node, or a cluster member before its first image).
pub fn brokers_and_controller(shard: &Shard, table: &TopicTable) -> (Vec<BrokerAddress>, i32) {
    let (host, port) = shard.config.advertised();
    let own = (shard.config.node_id, host, port, shard.config.broker_rack.clone());
    let Some(view) = &table.cluster else { return (vec![own], shard.config.node_id) };
    let mut brokers: Vec<BrokerAddress> = view
        .live_brokers()
        .map(|broker| (broker.id, broker.host.clone(), broker.port, broker.rack.clone()))
        .collect();
    if brokers.is_empty() {
        brokers.push(own);
    }
    (brokers, view.controller.unwrap_or(-1))
}

/// A partition as Metadata describes it: leader (-1 when none can lead), replicas, ISR, offline replicas.
pub struct PartitionNodes {
    pub leader: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub offline: Vec<i32>,
}

pub fn partition_nodes(table: &TopicTable, assignment: &PartitionAssignment) -> PartitionNodes {
    let live = |node: &i32| {
        table.cluster.as_ref().is_none_or(|view| view.brokers.get(node).is_some_and(|broker| !broker.fenced))
    };
    let leader = assignment.leader().0;
    PartitionNodes {
        leader: if live(&leader) { leader } else { -1 },
        replicas: assignment.replicas.clone(),
        isr: assignment.isr().to_vec(),
        offline: assignment.replicas.iter().copied().filter(|node| !live(node)).collect(),
    }
}

/// Auto-creates the topics in `names` that do not exist, when `auto.create.topics.enable` allows.
pub async fn auto_create(shard: &Rc<Shard>, names: &[String]) {
    if !shard.config.auto_create_topics || names.is_empty() {
        return;
    }
    let table = shard.topics();
    let changes: Vec<_> = names
        .iter()
        .filter(|name| {
            table.get(name).is_none() && crate::cluster::topic_table::validate_topic_name(name).is_ok()
        })
        .map(|name| crate::cluster::TopicChange::Create {
            assignment: None,
            name: name.clone(),
            partition_count: -1,
            replication_factor: -1,
            configs: Default::default(),
        })
        .collect();
    if !changes.is_empty() {
        // TOPIC_ALREADY_EXISTS from a concurrent creation is fine: the topic exists either way.
        let _ = bounded_in_cluster(shard, shard.admin(changes, false)).await;
    }
}

/// How long a request that creates a topic as a side effect (auto-creation, `__consumer_offsets`) waits for it in a
/// cluster, where the creation goes to the active controller: a healthy quorum answers in milliseconds, and a
/// request must not stall for a whole controller failover (Kafka creates these in the background and answers
/// LEADER_NOT_AVAILABLE / COORDINATOR_NOT_AVAILABLE meanwhile).
pub const SIDE_CREATION_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// `work`'s result, or `None` if a cluster member waited [`SIDE_CREATION_WAIT`] for it. The work goes on: admin
/// calls run in tasks of their own on shard 0, so dropping the wait cancels nothing.
pub async fn bounded_in_cluster<T>(shard: &Shard, work: impl std::future::Future<Output = T>) -> Option<T> {
    if shard.cluster.is_none() {
        return Some(work.await);
    }
    futures_lite::future::or(async { Some(work.await) }, async {
        glommio::timer::sleep(SIDE_CREATION_WAIT).await;
        None
    })
    .await
}
