//! JoinGroup (key 11), v0–9: forwarded to the group's coordinator shard ([`crate::group`]); the answer comes when
//! the rebalance's join phase completes, which may take up to the rebalance timeout.

use std::rc::Rc;
use std::time::Duration;

use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};

use super::{str_bytes, Client, HandlerResult, RequestContext};
use crate::errors::ResponseError;
use crate::group::state::{JoinOutcome, JoinParams};
use crate::group::{GroupReply, GroupRequest};
use crate::shard::Shard;

pub async fn handle(
    shard: &Rc<Shard>,
    context: &RequestContext,
    body: JoinGroupRequest,
    client: Client,
) -> HandlerResult {
    let version = context.api_version;
    let group_id = body.group_id.0.to_string();
    let session_timeout = Duration::from_millis(body.session_timeout_ms.max(0) as u64);
    let params = JoinParams {
        member_id: body.member_id.to_string(),
        instance_id: body.group_instance_id.map(|id| id.to_string()),
        client_id: client.id,
        client_host: client.host,
        protocol_type: body.protocol_type.to_string(),
        protocols: body.protocols.into_iter().map(|p| (p.name.to_string(), p.metadata)).collect(),
        session_timeout,
        // v0 has no rebalance timeout: the session timeout serves as both.
        rebalance_timeout: if version >= 1 {
            Duration::from_millis(body.rebalance_timeout_ms.max(0) as u64)
        } else {
            session_timeout
        },
        require_known_member_id: version >= 4,
        supports_skip_assignment: version >= 9,
    };
    let member_id = params.member_id.clone();
    let outcome =
        match shard.group_call(&group_id, GroupRequest::Join { group: group_id.clone(), params }).await {
            GroupReply::Join(outcome) => outcome,
            GroupReply::Error(error) => JoinOutcome::error(error, &member_id),
            _ => JoinOutcome::error(ResponseError::UnknownServerError.into(), &member_id),
        };
    context.respond(&encode(outcome, version))
}

fn encode(outcome: JoinOutcome, version: i16) -> JoinGroupResponse {
    let mut response = JoinGroupResponse::default();
    response.error_code = outcome.error.code();
    response.generation_id = outcome.generation;
    if version >= 7 {
        response.protocol_type = outcome.protocol_type.as_deref().map(str_bytes);
        response.protocol_name = outcome.protocol.as_deref().map(str_bytes);
    } else {
        response.protocol_name = Some(str_bytes(outcome.protocol.as_deref().unwrap_or("")));
    }
    response.leader = str_bytes(&outcome.leader);
    response.skip_assignment = version >= 9 && outcome.skip_assignment;
    response.member_id = str_bytes(&outcome.member_id);
    response.members = outcome
        .members
        .into_iter()
        .map(|(member_id, instance_id, metadata)| {
            let mut member = JoinGroupResponseMember::default();
            member.member_id = str_bytes(&member_id);
            if version >= 5 {
                member.group_instance_id = instance_id.as_deref().map(str_bytes);
            }
            member.metadata = metadata;
            member
        })
        .collect();
    response
}
