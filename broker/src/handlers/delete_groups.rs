//! DeleteGroups (key 42), v0–2: an empty group and its committed offsets are deleted (tombstones in
//! `__consumer_offsets`); a group with members gets NON_EMPTY_GROUP, an unknown one GROUP_ID_NOT_FOUND.

use std::rc::Rc;

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};

use super::{HandlerResult, RequestContext};
use crate::errors::ResponseError;
use crate::group::{GroupReply, GroupRequest};
use crate::shard::Shard;

pub async fn handle(shard: &Rc<Shard>, context: &RequestContext, body: DeleteGroupsRequest) -> HandlerResult {
    let mut response = DeleteGroupsResponse::default();
    for group_id in body.groups_names {
        let name = group_id.0.to_string();
        let error = match shard.group_call(&name, GroupRequest::Delete { group: name.clone() }).await {
            GroupReply::Error(error) => error,
            _ => ResponseError::UnknownServerError.into(),
        };
        let mut result = DeletableGroupResult::default();
        result.group_id = group_id;
        result.error_code = error.code();
        response.results.push(result);
    }
    context.respond(&response)
}
