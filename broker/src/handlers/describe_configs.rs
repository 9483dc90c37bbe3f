//! DescribeConfigs (key 32), v1–4: every topic-level key with its effective value and where it comes from
//! (topic override, the operator's broker configuration, or the built-in default), and a few broker keys for
//! broker resources.

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};

use super::{str_bytes, HandlerResult, RequestContext};
use std::sync::OnceLock;

use crate::cluster::topic_table::{TopicConfigKey, TOPIC_CONFIG_KEYS};
use crate::config::{Config, ConfigOverrides};
use crate::errors::ResponseError;
use crate::shard::Shard;

pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;
/// Kafka's ConfigSource values.
const SOURCE_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;
/// Kafka's ConfigType values (v3+).
const TYPE_STRING: i8 = 2;
const TYPE_LONG: i8 = 5;

/// The configuration built from the embedded default alone: what "default" means for a broker-level value.
fn builtin_config() -> Option<&'static Config> {
    static BUILTIN: OnceLock<Option<Config>> = OnceLock::new();
    BUILTIN.get_or_init(|| Config::from_toml("", &ConfigOverrides::default()).ok()).as_ref()
}

/// Where a topic key's value comes from when the topic does not override it: Kafka's DEFAULT_CONFIG when the
/// broker runs with the built-in value (clients show it as "default"), STATIC_BROKER_CONFIG when the operator's
/// configuration changed it.
fn broker_source(key: &TopicConfigKey, config: &Config) -> i8 {
    match builtin_config() {
        Some(builtin) if (key.default)(builtin) == (key.default)(config) => SOURCE_DEFAULT,
        _ => SOURCE_STATIC_BROKER,
    }
}

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
                None => result.error_code = ResponseError::UnknownTopicOrPartition.code(),
                Some(topic) => {
                    result.configs = TOPIC_CONFIG_KEYS
                        .iter()
                        .filter(|key| wanted(key.name))
                        .map(|key| match topic.configs.get(key.name) {
                            Some(value) => entry(key.name, value.clone(), SOURCE_TOPIC, false),
                            None => entry(
                                key.name,
                                (key.default)(&shard.config),
                                broker_source(key, &shard.config),
                                false,
                            ),
                        })
                        .collect();
                }
            },
            RESOURCE_BROKER => {
                result.configs = TOPIC_CONFIG_KEYS
                    .iter()
                    .filter(|key| wanted(key.broker_name))
                    .map(|key| {
                        let source = broker_source(key, &shard.config);
                        entry(key.broker_name, (key.default)(&shard.config), source, true)
                    })
                    .collect();
            }
            _ => {
                result.error_code = ResponseError::InvalidRequest.code();
                result.error_message = Some(str_bytes("only topic and broker resources are supported"));
            }
        }
        results.push(result);
    }
    let mut response = DescribeConfigsResponse::default();
    response.results = results;
    context.respond(&response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::topic_table::topic_config_key;

    /// A key the operator left alone is DEFAULT_CONFIG; one the operator's file changed is STATIC_BROKER_CONFIG.
    #[test]
    fn source_tells_built_in_defaults_from_operator_values() {
        let key = topic_config_key("max.message.bytes").unwrap();
        let builtin = Config::from_toml("", &ConfigOverrides::default()).unwrap();
        assert_eq!(broker_source(key, &builtin), SOURCE_DEFAULT);
        let changed =
            Config::from_toml("\"message.max.bytes\" = 2000000", &ConfigOverrides::default()).unwrap();
        assert_eq!(broker_source(key, &changed), SOURCE_STATIC_BROKER);
        let other = topic_config_key("retention.ms").unwrap();
        assert_eq!(broker_source(other, &changed), SOURCE_DEFAULT);
    }
}
