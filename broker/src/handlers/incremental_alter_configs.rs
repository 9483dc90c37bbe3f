//! IncrementalAlterConfigs (key 44), v0–1: SET (0) and DELETE (1) of topic configs. APPEND and SUBTRACT apply
//! to list-valued keys, which no supported topic key is, so they are refused with INVALID_CONFIG.

use std::rc::Rc;

use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse};

use super::describe_configs::RESOURCE_TOPIC;
use super::{str_bytes, HandlerResult, RequestContext};
use crate::errors::{ErrorCode, KafkaError};
use crate::mesh::TopicChange;
use crate::shard::Shard;

const OPERATION_SET: i8 = 0;
const OPERATION_DELETE: i8 = 1;

pub async fn handle(
    shard: &Rc<Shard>,
    context: &RequestContext,
    body: IncrementalAlterConfigsRequest,
) -> HandlerResult {
    let mut responses = Vec::with_capacity(body.resources.len());
    for resource in body.resources {
        let mut configs = Vec::with_capacity(resource.configs.len());
        let mut refused = None;
        for config in &resource.configs {
            match config.config_operation {
                OPERATION_SET => configs.push((
                    config.name.to_string(),
                    Some(config.value.as_ref().map_or(String::new(), |v| v.to_string())),
                )),
                OPERATION_DELETE => configs.push((config.name.to_string(), None)),
                other => {
                    refused = Some(KafkaError::with_message(
                        ErrorCode::INVALID_CONFIG,
                        format!("operation {other} on {} is not supported", config.name.as_str()),
                    ))
                }
            }
        }
        let result = if resource.resource_type != RESOURCE_TOPIC {
            Err(KafkaError::with_message(
                ErrorCode::INVALID_REQUEST,
                "broker configuration is static (sluice.toml)",
            ))
        } else if let Some(error) = refused {
            Err(error)
        } else {
            let change = TopicChange::AlterConfigs {
                name: resource.resource_name.to_string(),
                configs,
                replace: false,
            };
            shard.admin(vec![change], body.validate_only).await.pop().unwrap_or(Ok(()))
        };
        let mut response = AlterConfigsResourceResponse::default();
        response.resource_type = resource.resource_type;
        response.resource_name = resource.resource_name;
        if let Err(error) = result {
            response.error_code = error.code.code();
            response.error_message = error.message.as_deref().map(str_bytes);
        }
        responses.push(response);
    }
    let mut response = IncrementalAlterConfigsResponse::default();
    response.responses = responses;
    context.respond(&response)
}
