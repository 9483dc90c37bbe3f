//! DescribeConfigs (key 32), v1–4: every topic-level key with its effective value and where it comes from
//! (topic override, broker configuration), and a few broker keys for broker resources.

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};

use super::{str_bytes, HandlerResult, RequestContext};
use crate::errors::ErrorCode;
use crate::shard::Shard;
use crate::topics::TOPIC_CONFIG_KEYS;

pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;
/// Kafka's ConfigSource values.
const SOURCE_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
/// Kafka's ConfigType values (v3+).
const TYPE_STRING: i8 = 2;
const TYPE_LONG: i8 = 5;

pub fn handle(shard: &Shard, context: &RequestContext, body: DescribeConfigsRequest) -> HandlerResult {
    let version = context.api_version;
    let table = shard.topics();
    let entry = |name: &str, value: String, source: i8, read_only: bool| {
        let mut result = DescribeConfigsResourceResult::default();
        result.name = str_bytes(name);
        result.config_source = source;
        result.read_only = read_only;
        if version >= 3 {
            result.config_type = if value.parse::<i64>().is_ok() { TYPE_LONG } else { TYPE_STRING };
        }
        result.value = Some(str_bytes(&value));
        result
    };
    let mut results = Vec::with_capacity(body.resources.len());
    for resource in body.resources {
        let wanted = |name: &str| {
            resource
                .configuration_keys
                .as_ref()
                .is_none_or(|keys| keys.iter().any(|key| key.as_str() == name))
        };
        let mut result = DescribeConfigsResult::default();
        result.resource_type = resource.resource_type;
        result.resource_name = resource.resource_name.clone();
        match resource.resource_type {
            RESOURCE_TOPIC => match table.get(resource.resource_name.as_str()) {
                None => result.error_code = ErrorCode::UNKNOWN_TOPIC_OR_PARTITION.code(),
                Some(topic) => {
                    result.configs = TOPIC_CONFIG_KEYS
                        .iter()
                        .filter(|key| wanted(key.name))
                        .map(|key| match topic.configs.get(key.name) {
                            Some(value) => entry(key.name, value.clone(), SOURCE_TOPIC, false),
                            None => {
                                entry(key.name, (key.default)(&shard.config), SOURCE_STATIC_BROKER, false)
                            }
                        })
                        .collect();
                }
            },
            RESOURCE_BROKER => {
                result.configs = TOPIC_CONFIG_KEYS
                    .iter()
                    .filter(|key| wanted(key.broker_name))
                    .map(|key| {
                        entry(key.broker_name, (key.default)(&shard.config), SOURCE_STATIC_BROKER, true)
                    })
                    .collect();
            }
            _ => {
                result.error_code = ErrorCode::INVALID_REQUEST.code();
                result.error_message = Some(str_bytes("only topic and broker resources are supported"));
            }
        }
        results.push(result);
    }
    let mut response = DescribeConfigsResponse::default();
    response.results = results;
    context.respond(&response)
}
