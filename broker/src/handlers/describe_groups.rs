//! DescribeGroups (key 15), v0–6: state, protocol and members of each group. As in Kafka, member metadata and
//! assignments are shown only while the group is Stable; an unknown group is reported as "Dead", and from v6
//! (KIP-1043) also with GROUP_ID_NOT_FOUND.

use std::rc::Rc;

use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};

use super::{str_bytes, HandlerResult, RequestContext};
use crate::errors::ResponseError;
use crate::group::{GroupReply, GroupRequest};
use crate::shard::Shard;

/// `authorized_operations` when the client did not ask for them (Kafka's INT32_MIN).
const OPERATIONS_NOT_REQUESTED: i32 = i32::MIN;

pub async fn handle(
    shard: &Rc<Shard>,
    context: &RequestContext,
    body: DescribeGroupsRequest,
) -> HandlerResult {
    let version = context.api_version;
    let mut response = DescribeGroupsResponse::default();
    for group_id in body.groups {
        let name = group_id.0.to_string();
        let mut described = DescribedGroup::default();
        described.group_id = group_id;
        if version >= 3 {
            described.authorized_operations = OPERATIONS_NOT_REQUESTED;
        }
        match shard.group_call(&name, GroupRequest::Describe { group: name.clone() }).await {
            GroupReply::Described(Some(group)) => {
                described.group_state = str_bytes(group.state);
                described.protocol_type = str_bytes(&group.protocol_type);
                described.protocol_data = str_bytes(&group.protocol);
                described.members = group
                    .members
                    .into_iter()
                    .map(|member| {
                        let mut entry = DescribedGroupMember::default();
                        entry.member_id = str_bytes(&member.member_id);
                        if version >= 4 {
                            entry.group_instance_id = member.instance_id.as_deref().map(str_bytes);
                        }
                        entry.client_id = str_bytes(&member.client_id);
                        entry.client_host = str_bytes(&member.client_host);
                        entry.member_metadata = member.metadata;
                        entry.member_assignment = member.assignment;
                        entry
                    })
                    .collect();
            }
            GroupReply::Described(None) => {
                described.group_state = str_bytes("Dead");
                if version >= 6 {
                    described.error_code = ResponseError::GroupIdNotFound.code();
                    described.error_message = Some(str_bytes(&format!("Group {name} not found.")));
                }
            }
            GroupReply::Error(error) => described.error_code = error.code(),
            _ => described.error_code = ResponseError::UnknownServerError.code(),
        }
        response.groups.push(described);
    }
    context.respond(&response)
}
