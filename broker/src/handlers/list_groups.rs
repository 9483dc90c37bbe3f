//! ListGroups (key 16), v0–5: every shard's groups, filtered by state (v4+) and type (v5+; all groups here are
//! "classic").

use std::rc::Rc;

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};

use super::{str_bytes, HandlerResult, RequestContext};
use crate::errors::ResponseError;
use crate::group::{GroupReply, GroupRequest};
use crate::shard::Shard;
use crate::shard::{ShardReply, ShardRequest};

pub async fn handle(shard: &Rc<Shard>, context: &RequestContext, body: ListGroupsRequest) -> HandlerResult {
    let version = context.api_version;
    let states: Vec<String> = body.states_filter.iter().map(|state| state.to_lowercase()).collect();
    let types: Vec<String> = body.types_filter.iter().map(|kind| kind.to_lowercase()).collect();
    let mut response = ListGroupsResponse::default();
    if !types.is_empty() && !types.iter().any(|kind| kind == "classic") {
        return context.respond(&response);
    }
    for target in (0..shard.count).map(sluice_replication::ShardId) {
        let reply = if target == shard.id {
            shard.groups.serve(shard, GroupRequest::List).await
        } else {
            match shard.call(target, ShardRequest::Group(GroupRequest::List)).await {
                Ok(ShardReply::Group(reply)) => reply,
                _ => GroupReply::Error(ResponseError::CoordinatorNotAvailable.into()),
            }
        };
        match reply {
            GroupReply::Listed(groups) => {
                for group in groups {
                    if !states.is_empty() && !states.contains(&group.state.to_lowercase()) {
                        continue;
                    }
                    let mut listed = ListedGroup::default();
                    listed.group_id = GroupId(str_bytes(&group.group));
                    listed.protocol_type = str_bytes(&group.protocol_type);
                    if version >= 4 {
                        listed.group_state = str_bytes(group.state);
                    }
                    if version >= 5 {
                        listed.group_type = str_bytes("classic");
                    }
                    response.groups.push(listed);
                }
            }
            GroupReply::Error(error) => response.error_code = error.code(),
            _ => response.error_code = ResponseError::UnknownServerError.code(),
        }
    }
    context.respond(&response)
}
