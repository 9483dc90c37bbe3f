//! DescribeConfigs (key 32), v1–4, answered as Kafka answers it. A TOPIC resource lists every topic-level key
//! with its effective value and where it comes from (the topic's override, the operator's broker configuration,
//! or the built-in default). A BROKER resource (named by this broker's id) lists the broker's own keys — every key
//! of the configuration with Sluice's effective value, the broker keys that topic keys default from, and the
//! Kafka keys the file set that have no effect here. A key the config file or a flag set is
//! STATIC_BROKER_CONFIG, any other DEFAULT_CONFIG. With `include_synonyms` each entry carries its chain, most
//! specific first (topic override, static broker value, default), as Kafka does. Entries are sorted by name: Kafka
//! itself answers in the order of a hash map, which no client relies on, and its own tools sort by name.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};

use super::{str_bytes, HandlerResult, RequestContext};
use crate::cluster::topic_table::{TopicConfigKey, TopicEntry, TOPIC_CONFIG_KEYS};
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
const TYPE_BOOLEAN: i8 = 1;
const TYPE_STRING: i8 = 2;
const TYPE_LONG: i8 = 5;
const TYPE_DOUBLE: i8 = 6;

/// The configuration built from the embedded default alone: the values DEFAULT_CONFIG synonyms name.
fn builtin_config() -> Option<&'static Config> {
    static BUILTIN: OnceLock<Option<Config>> = OnceLock::new();
    BUILTIN.get_or_init(|| Config::from_toml("", &ConfigOverrides::default()).ok()).as_ref()
}

/// One config entry before encoding: its name, effective value, source and synonyms (most specific first).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Described {
    name: String,
    value: String,
    source: i8,
    synonyms: Vec<(String, String, i8)>,
}

/// The broker key `name` as the operator's configuration decides it: `value` is its effective value, and the
/// synonyms are the static value (if the file or a flag set it) and the built-in default.
fn broker_described(name: &str, value: String, builtin: Option<String>, is_static: bool) -> Described {
    let mut synonyms = Vec::with_capacity(2);
    if is_static {
        synonyms.push((name.to_string(), value.clone(), SOURCE_STATIC_BROKER));
    }
    if let Some(builtin) = builtin {
        synonyms.push((name.to_string(), builtin, SOURCE_DEFAULT));
    }
    let source = if is_static { SOURCE_STATIC_BROKER } else { SOURCE_DEFAULT };
    Described { name: name.to_string(), value, source, synonyms }
}

/// A topic key of `topic` (`None`: the broker's default for every topic).
fn topic_described(key: &TopicConfigKey, topic: Option<&TopicEntry>, config: &Config) -> Described {
    let broker_value = (key.default)(config);
    let is_static = config.origins.static_keys.contains(key.broker_name);
    let builtin = builtin_config().map(|builtin| (key.default)(builtin));
    let mut described = broker_described(key.broker_name, broker_value, builtin, is_static);
    described.name = key.name.to_string();
    if let Some(value) = topic.and_then(|topic| topic.configs.get(key.name)) {
        described.synonyms.insert(0, (key.name.to_string(), value.clone(), SOURCE_TOPIC));
        described.value = value.clone();
        described.source = SOURCE_TOPIC;
    }
    described
}

/// Kafka's spelling of a broker key of Sluice's configuration, and its effective value.
fn broker_kafka_value(name: &str, value: &str, config: &Config) -> (String, String) {
    let listener = |address: &str| {
        if address.contains("://") {
            address.to_string()
        } else {
            format!("PLAINTEXT://{address}")
        }
    };
    match name {
        "listen" => ("listeners".to_string(), listener(value)),
        "advertised.listeners" => {
            let (host, port) = config.advertised();
            (name.to_string(), listener(&format!("{host}:{port}")))
        }
        _ => (name.to_string(), value.to_string()),
    }
}

/// Every broker key this broker reports, by name.
fn broker_entries(config: &Config) -> BTreeMap<String, Described> {
    let builtin_values = builtin_config().map(|builtin| &builtin.origins.values);
    let mut entries = BTreeMap::new();
    for (name, value) in &config.origins.values {
        let (kafka_name, effective) = broker_kafka_value(name, value, config);
        let builtin = builtin_values
            .and_then(|values| values.get(name))
            .zip(builtin_config())
            .map(|(value, builtin)| broker_kafka_value(name, value, builtin).1);
        let is_static = config.origins.static_keys.contains(name);
        entries.insert(kafka_name.clone(), broker_described(&kafka_name, effective, builtin, is_static));
    }
    if let Some(node) = entries.get("node.id").cloned() {
        let mut broker_id = node;
        broker_id.name = "broker.id".to_string();
        broker_id.synonyms.iter_mut().for_each(|synonym| synonym.0 = "node.id".to_string());
        entries.insert(broker_id.name.clone(), broker_id);
    }
    for key in TOPIC_CONFIG_KEYS {
        if !entries.contains_key(key.broker_name) {
            let mut described = topic_described(key, None, config);
            described.name = key.broker_name.to_string();
            entries.insert(described.name.clone(), described);
        }
    }
    for (name, value) in &config.origins.ignored {
        entries.entry(name.clone()).or_insert_with(|| Described {
            name: name.clone(),
            value: value.clone(),
            source: SOURCE_STATIC_BROKER,
            synonyms: vec![(name.clone(), value.clone(), SOURCE_STATIC_BROKER)],
        });
    }
    entries
}

fn config_type(value: &str) -> i8 {
    if value == "true" || value == "false" {
        TYPE_BOOLEAN
    } else if value.parse::<i64>().is_ok() {
        TYPE_LONG
    } else if value.parse::<f64>().is_ok() {
        TYPE_DOUBLE
    } else {
        TYPE_STRING
    }
}

fn encode(
    described: Described,
    version: i16,
    read_only: bool,
    synonyms: bool,
) -> DescribeConfigsResourceResult {
    let mut result = DescribeConfigsResourceResult::default();
    result.name = str_bytes(&described.name);
    result.config_source = described.source;
    result.read_only = read_only;
    if version >= 3 {
        result.config_type = config_type(&described.value);
        result.documentation = None;
    }
    result.value = Some(str_bytes(&described.value));
    if synonyms {
        result.synonyms = described
            .synonyms
            .into_iter()
            .map(|(name, value, source)| {
                let mut synonym = DescribeConfigsSynonym::default();
                synonym.name = str_bytes(&name);
                synonym.value = Some(str_bytes(&value));
                synonym.source = source;
                synonym
            })
            .collect();
    }
    result
}

/// One resource's answer: its entries (each named in `wanted`, or all), or an error code and message.
fn describe(
    shard: &Shard,
    resource: &DescribeConfigsResource,
) -> Result<Vec<(Described, bool)>, (ResponseError, String)> {
    let config = &shard.config;
    match resource.resource_type {
        RESOURCE_TOPIC => {
            let table = shard.topics();
            let Some(topic) = table.get(resource.resource_name.as_str()) else {
                let name = resource.resource_name.as_str();
                return Err((ResponseError::UnknownTopicOrPartition, format!("topic {name} does not exist")));
            };
            let mut entries: Vec<Described> =
                TOPIC_CONFIG_KEYS.iter().map(|key| topic_described(key, Some(topic), config)).collect();
            entries.sort_by(|left, right| left.name.cmp(&right.name));
            Ok(entries.into_iter().map(|entry| (entry, false)).collect())
        }
        RESOURCE_BROKER => {
            let name = resource.resource_name.as_str();
            if name.is_empty() {
                // The cluster-wide dynamic defaults: Sluice has none.
                return Ok(Vec::new());
            }
            if name.parse::<i32>().ok() != Some(config.node_id) {
                let message = format!(
                    "unexpected broker id, expected {} or empty string, but received {name}",
                    config.node_id
                );
                return Err((ResponseError::InvalidRequest, message));
            }
            Ok(broker_entries(config).into_values().map(|entry| (entry, true)).collect())
        }
        _ => {
            Err((ResponseError::InvalidRequest, "only topic and broker resources are supported".to_string()))
        }
    }
}

pub fn handle(shard: &Shard, context: &RequestContext, body: DescribeConfigsRequest) -> HandlerResult {
    let version = context.api_version;
    let mut results = Vec::with_capacity(body.resources.len());
    for resource in body.resources {
        let mut result = DescribeConfigsResult::default();
        // The codec's default is an empty string; Kafka sends null on success.
        result.error_message = None;
        match describe(shard, &resource) {
            Ok(entries) => {
                let wanted = |name: &str| {
                    resource
                        .configuration_keys
                        .as_ref()
                        .is_none_or(|keys| keys.is_empty() || keys.iter().any(|key| key.as_str() == name))
                };
                result.configs = entries
                    .into_iter()
                    .filter(|(entry, _)| wanted(&entry.name))
                    .map(|(entry, read_only)| encode(entry, version, read_only, body.include_synonyms))
                    .collect();
            }
            Err((code, message)) => {
                result.error_code = code.code();
                result.error_message = Some(str_bytes(&message));
            }
        }
        result.resource_type = resource.resource_type;
        result.resource_name = resource.resource_name;
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

    fn load(text: &str) -> Config {
        Config::from_toml(text, &ConfigOverrides::default()).unwrap()
    }

    /// A key the operator left alone is DEFAULT_CONFIG; one the operator's file set is STATIC_BROKER_CONFIG, even
    /// at its default value, with the chain static → default as its synonyms.
    #[test]
    fn source_tells_built_in_defaults_from_operator_values() {
        let key = topic_config_key("max.message.bytes").unwrap();
        assert_eq!(topic_described(key, None, &load("")).source, SOURCE_DEFAULT);
        let changed = load("\"message.max.bytes\" = 2000000");
        let described = topic_described(key, None, &changed);
        assert_eq!(described.source, SOURCE_STATIC_BROKER);
        assert_eq!(described.value, "2000000");
        assert_eq!(
            described.synonyms,
            [
                ("message.max.bytes".to_string(), "2000000".to_string(), SOURCE_STATIC_BROKER),
                ("message.max.bytes".to_string(), "1048588".to_string(), SOURCE_DEFAULT),
            ]
        );
        let other = topic_config_key("retention.ms").unwrap();
        assert_eq!(topic_described(other, None, &changed).source, SOURCE_DEFAULT);
        let same = load("\"log.segment.bytes\" = 1073741824");
        let segment = topic_config_key("segment.bytes").unwrap();
        assert_eq!(topic_described(segment, None, &same).source, SOURCE_STATIC_BROKER);
    }

    /// The broker resource lists the broker's own keys with effective values and Kafka's names, sorted.
    #[test]
    fn broker_entries_are_the_brokers_own_keys() {
        let config = load("\"num.partitions\" = 3\n\"delete.topic.enable\" = true");
        let entries = broker_entries(&config);
        let names: Vec<&String> = entries.keys().collect();
        assert!(names.windows(2).all(|pair| pair[0] < pair[1]));
        for name in
            ["advertised.listeners", "listeners", "log.dirs", "broker.id", "node.id", "log.cleanup.policy"]
        {
            assert!(entries.contains_key(name), "{name} missing");
        }
        assert_eq!(entries["num.partitions"].value, "3");
        assert_eq!(entries["num.partitions"].source, SOURCE_STATIC_BROKER);
        assert_eq!(entries["default.replication.factor"].source, SOURCE_DEFAULT);
        assert_eq!(entries["log.flush.interval.ms"].value, "1000");
        assert_eq!(entries["log.flush.interval.messages"].value, "10000");
        assert_eq!(entries["listeners"].value, "PLAINTEXT://127.0.0.1:9092");
        assert_eq!(entries["advertised.listeners"].value, "PLAINTEXT://127.0.0.1:9092");
        assert_eq!(entries["delete.topic.enable"].source, SOURCE_STATIC_BROKER);
        assert!(!entries.contains_key("listen"));
    }
}
