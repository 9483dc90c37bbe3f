//! IncrementalAlterConfigs (key 44), v0–1: SET (0), DELETE (1), and APPEND (2) / SUBTRACT (3) on list-valued
//! topic keys (`cleanup.policy`), which start from the topic's current value (its override, else the default).

use std::rc::Rc;

use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse};

use super::describe_configs::RESOURCE_TOPIC;
use super::{str_bytes, HandlerResult, RequestContext};
use crate::cluster::TopicChange;
use crate::errors::{KafkaError, ResponseError};
use crate::shard::Shard;

const OPERATION_SET: i8 = 0;
const OPERATION_DELETE: i8 = 1;
const OPERATION_APPEND: i8 = 2;
const OPERATION_SUBTRACT: i8 = 3;
/// Topic keys whose values are comma-separated lists.
const LIST_KEYS: &[&str] = &["cleanup.policy"];

#[allow(clippy::too_many_lines)] // over 70 lines before the limit; to be split
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
                OPERATION_APPEND | OPERATION_SUBTRACT if LIST_KEYS.contains(&config.name.as_str()) => {
                    let name = config.name.to_string();
                    // Earlier operations of this request on the same key count (Kafka applies them in order).
                    let current = match configs.iter().rev().find(|(key, _)| *key == name) {
                        Some((_, value)) => value.clone(),
                        None => shard
                            .topics()
                            .get(resource.resource_name.as_str())
                            .and_then(|entry| entry.configs.get(&name).cloned()),
                    }
                    .or_else(|| {
                        crate::cluster::topic_table::topic_config_key(&name)
                            .map(|key| (key.default)(&shard.config))
                    })
                    .unwrap_or_default();
                    let mut items: Vec<String> = current
                        .split(',')
                        .map(str::trim)
                        .filter(|item| !item.is_empty())
                        .map(String::from)
                        .collect();
                    let given = config.value.as_ref().map_or(String::new(), |v| v.to_string());
                    for item in given.split(',').map(str::trim).filter(|item| !item.is_empty()) {
                        if config.config_operation == OPERATION_APPEND {
                            if !items.iter().any(|existing| existing == item) {
                                items.push(item.to_string());
                            }
                        } else {
                            items.retain(|existing| existing != item);
                        }
                    }
                    configs.push((name, Some(items.join(","))));
                }
                other => {
                    refused = Some(KafkaError::with_message(
                        ResponseError::InvalidConfig,
                        format!("operation {other} on {} is not supported", config.name.as_str()),
                    ))
                }
            }
        }
        let result = if resource.resource_type != RESOURCE_TOPIC {
            Err(KafkaError::with_message(
                ResponseError::InvalidRequest,
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
    let mut response = IncrementalAlterConfigsResponse::default();
    response.responses = responses;
    context.respond(&response)
}
