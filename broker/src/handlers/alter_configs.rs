//! AlterConfigs (key 33), v0–2: replaces a topic's overrides with the given set. Broker configuration is
//! static (the TOML file), so broker resources are refused.

use std::rc::Rc;

use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{AlterConfigsRequest, AlterConfigsResponse};

use super::describe_configs::RESOURCE_TOPIC;
use super::{str_bytes, HandlerResult, RequestContext};
use crate::cluster::TopicChange;
use crate::errors::{KafkaError, ResponseError};
use crate::shard::Shard;

pub async fn handle(shard: &Rc<Shard>, context: &RequestContext, body: AlterConfigsRequest) -> HandlerResult {
    let mut responses = Vec::with_capacity(body.resources.len());
    for resource in body.resources {
        let result = if resource.resource_type != RESOURCE_TOPIC {
            Err(KafkaError::with_message(
                ResponseError::InvalidRequest,
                "broker configuration is static (sluice.toml)",
            ))
        } else {
            let change = TopicChange::AlterConfigs {
                name: resource.resource_name.to_string(),
                configs: resource
                    .configs
                    .iter()
                    .map(|config| {
                        (config.name.to_string(), config.value.as_ref().map(|value| value.to_string()))
                    })
                    .collect(),
                replace: true,
            };
            shard.admin(vec![change], body.validate_only).await.pop().unwrap_or(Ok(()))
        };
        let mut response = AlterConfigsResourceResponse::default();
        // The codec's default is an empty string; Kafka sends null on success.
        response.error_message = None;
        response.resource_type = resource.resource_type;
        response.resource_name = resource.resource_name;
        if let Err(error) = result {
            response.error_code = error.code.code();
            response.error_message = error.message.as_deref().map(str_bytes);
        }
        responses.push(response);
    }
    let mut response = AlterConfigsResponse::default();
    response.responses = responses;
    context.respond(&response)
}
