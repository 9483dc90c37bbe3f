//! SyncGroup (key 14), v0–5: the leader brings the assignments, every member gets its own once the group's
//! metadata is durable.

use std::rc::Rc;

use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};

use super::{str_bytes, HandlerResult, RequestContext};
use crate::errors::ResponseError;
use crate::group::state::SyncOutcome;
use crate::group::{GroupReply, GroupRequest};
use crate::shard::Shard;

pub async fn handle(shard: &Rc<Shard>, context: &RequestContext, body: SyncGroupRequest) -> HandlerResult {
    let version = context.api_version;
    let group_id = body.group_id.0.to_string();
    let request = GroupRequest::Sync {
        group: group_id.clone(),
        member_id: body.member_id.to_string(),
        instance_id: body.group_instance_id.map(|id| id.to_string()),
        generation: body.generation_id,
        protocol_type: body.protocol_type.map(|name| name.to_string()),
        protocol: body.protocol_name.map(|name| name.to_string()),
        assignments: body.assignments.into_iter().map(|a| (a.member_id.to_string(), a.assignment)).collect(),
    };
    let outcome = match shard.group_call(&group_id, request).await {
        GroupReply::Sync(outcome) => outcome,
        GroupReply::Error(error) => SyncOutcome::error(error),
        _ => SyncOutcome::error(ResponseError::UnknownServerError.into()),
    };
    let mut response = SyncGroupResponse::default();
    response.error_code = outcome.error.code();
    if version >= 5 {
        response.protocol_type = outcome.protocol_type.as_deref().map(str_bytes);
        response.protocol_name = outcome.protocol.as_deref().map(str_bytes);
    }
    response.assignment = outcome.assignment;
    context.respond(&response)
}
