//! DescribeQuorum (key 55, KIP-595), v0–2: the metadata quorum as the active controller sees it — leader, epoch
//! (the Raft term), high watermark (the commit index), and each voter's log end; broker-only nodes are the
//! observers. Any broker answers, asking the active controller (Kafka's brokers forward it likewise). A single
//! node is a quorum of one: itself, leading, at its topic table's version.

use std::rc::Rc;
use std::time::Duration;

use kafka_protocol::messages::describe_quorum_response::{
    Listener, Node, PartitionData, ReplicaState, TopicData,
};
use kafka_protocol::messages::{BrokerId, DescribeQuorumRequest, DescribeQuorumResponse};

use super::{str_bytes, topic_name, HandlerResult, RequestContext};
use crate::controller::wire::{ControlRequest, ControlResponse, QuorumState, VoterState};
use crate::errors::ResponseError;
use crate::shard::Shard;

/// The metadata log's name in Kafka (the only partition DescribeQuorum knows).
pub const METADATA_TOPIC: &str = "__cluster_metadata";

pub async fn handle(
    shard: &Rc<Shard>,
    context: &RequestContext,
    body: DescribeQuorumRequest,
) -> HandlerResult {
    let asked_for_metadata = body.topics.iter().any(|topic| {
        topic.topic_name.0.as_str() == METADATA_TOPIC
            && topic.partitions.iter().any(|p| p.partition_index == 0)
    });
    let mut response = DescribeQuorumResponse::default();
    if !asked_for_metadata {
        response.error_code = ResponseError::UnknownTopicOrPartition.code();
        return context.respond(&response);
    }
    let state = match &shard.cluster {
        None => {
            let version = shard.topics().version;
            let node = shard.config.node_id;
            Ok(QuorumState {
                leader: node,
                term: 0,
                commit_index: version,
                voters: vec![VoterState { id: node, matched: version }],
            })
        }
        Some(cluster) => match cluster.call(ControlRequest::DescribeQuorum, Duration::from_secs(5)).await {
            Ok(ControlResponse::Quorum(state)) => Ok(state),
            Ok(ControlResponse::Error { code, message }) => Err((
                ResponseError::try_from_code(code).unwrap_or(ResponseError::UnknownServerError),
                message,
            )),
            Ok(other) => {
                Err((ResponseError::UnknownServerError, format!("unexpected controller answer {other:?}")))
            }
            Err(message) => Err((ResponseError::NotController, message)),
        },
    };
    match state {
        Ok(state) => describe(shard, context.api_version, &state, &mut response),
        Err((code, message)) => {
            response.error_code = code.code();
            if context.api_version >= 2 {
                response.error_message = Some(str_bytes(&message));
            }
        }
    }
    context.respond(&response)
}

fn describe(shard: &Shard, version: i16, state: &QuorumState, response: &mut DescribeQuorumResponse) {
    let replica = |id: i32, log_end_offset: i64| {
        let mut replica = ReplicaState::default();
        replica.replica_id = BrokerId(id);
        replica.log_end_offset = log_end_offset;
        replica.last_fetch_timestamp = -1;
        replica.last_caught_up_timestamp = -1;
        replica
    };
    let mut partition = PartitionData::default();
    partition.partition_index = 0;
    partition.leader_id = BrokerId(state.leader);
    partition.leader_epoch = i32::try_from(state.term).unwrap_or(i32::MAX);
    partition.high_watermark = i64::try_from(state.commit_index).unwrap_or(i64::MAX);
    partition.current_voters = state
        .voters
        .iter()
        .map(|voter| replica(voter.id, i64::try_from(voter.matched).unwrap_or(i64::MAX)))
        .collect();
    let table = shard.topics();
    if let Some(view) = &table.cluster {
        partition.observers = view
            .brokers
            .keys()
            .filter(|id| !state.voters.iter().any(|voter| voter.id == **id))
            .map(|id| replica(*id, -1))
            .collect();
    }
    let mut topic = TopicData::default();
    topic.topic_name = topic_name(METADATA_TOPIC);
    topic.partitions = vec![partition];
    response.topics = vec![topic];
    if version >= 2 {
        response.nodes = shard
            .config
            .quorum_voters
            .iter()
            .map(|voter| {
                let mut listener = Listener::default();
                listener.name = str_bytes("CONTROLLER");
                listener.host = str_bytes(&voter.host);
                listener.port = voter.port;
                let mut node = Node::default();
                node.node_id = BrokerId(voter.id);
                node.listeners = vec![listener];
                node
            })
            .collect();
    }
}
