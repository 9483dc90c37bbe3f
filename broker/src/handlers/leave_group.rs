//! LeaveGroup (key 13), v0–5: one member (v0–2) or a batch of members by id or group.instance.id (v3+).

use std::rc::Rc;

use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};

use super::{str_bytes, HandlerResult, RequestContext};
use crate::errors::{ErrorCode, ResponseError};
use crate::group::{GroupReply, GroupRequest};
use crate::shard::Shard;

pub async fn handle(shard: &Rc<Shard>, context: &RequestContext, body: LeaveGroupRequest) -> HandlerResult {
    let version = context.api_version;
    let group_id = body.group_id.0.to_string();
    let members: Vec<(String, Option<String>)> = if version >= 3 {
        body.members
            .into_iter()
            .map(|member| (member.member_id.to_string(), member.group_instance_id.map(|id| id.to_string())))
            .collect()
    } else {
        vec![(body.member_id.to_string(), None)]
    };
    let count = members.len();
    let request = GroupRequest::Leave { group: group_id.clone(), members: members.clone() };
    let (top, errors) = match shard.group_call(&group_id, request).await {
        GroupReply::Leave(errors) if errors.len() == count => (ErrorCode::NONE, errors),
        GroupReply::Error(error) => (error, vec![error; count]),
        _ => {
            (ResponseError::UnknownServerError.into(), vec![ResponseError::UnknownServerError.into(); count])
        }
    };
    let mut response = LeaveGroupResponse::default();
    if version >= 3 {
        response.error_code = top.code();
        response.members = members
            .into_iter()
            .zip(errors)
            .map(|((member_id, instance_id), error)| {
                let mut member = MemberResponse::default();
                member.member_id = str_bytes(&member_id);
                member.group_instance_id = instance_id.as_deref().map(str_bytes);
                member.error_code = error.code();
                member
            })
            .collect();
    } else {
        response.error_code = errors.first().copied().unwrap_or(top).code();
    }
    context.respond(&response)
}
