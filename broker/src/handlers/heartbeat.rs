//! Heartbeat (key 12), v0–4: keeps a member's session alive; REBALANCE_IN_PROGRESS tells it to rejoin.

use std::rc::Rc;

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use super::{HandlerResult, RequestContext};
use crate::errors::ResponseError;
use crate::group::{GroupReply, GroupRequest};
use crate::shard::Shard;

pub async fn handle(shard: &Rc<Shard>, context: &RequestContext, body: HeartbeatRequest) -> HandlerResult {
    let group_id = body.group_id.0.to_string();
    let request = GroupRequest::Heartbeat {
        group: group_id.clone(),
        member_id: body.member_id.to_string(),
        instance_id: body.group_instance_id.map(|id| id.to_string()),
        generation: body.generation_id,
    };
    let error = match shard.group_call(&group_id, request).await {
        GroupReply::Error(error) => error,
        _ => ResponseError::UnknownServerError.into(),
    };
    let mut response = HeartbeatResponse::default();
    response.error_code = error.code();
    context.respond(&response)
}
