//! Broker configuration: an embedded default, a TOML file with Kafka's dotted key names, then command-line
//! overrides. Kafka's names (`log.segment.bytes`) exist only here, at the boundary; the rest of the broker reads
//! the Rust fields, which follow the house naming (`segment_size_max`).
//!
//! TOML turns an unquoted dotted key (`log.segment.bytes = 1`) into nested tables, while a quoted one
//! (`"log.segment.bytes" = 1`) stays flat. Both spellings are accepted: the file is flattened back to dotted keys
//! before it is read, and an unknown key is an error that names it (a typo must not silently fall back to a default).

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The configuration `sluice` runs with when given no file: a single-node broker on 127.0.0.1:9092, data in `./data`.
pub const DEFAULT_CONFIG: &str = include_str!("default_config.toml");

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// How appends become durable (`log.flush.policy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlushPolicy {
    /// Every acknowledged acks=all append is fsynced first (Redpanda's default; the broker's default).
    Fsync,
    /// Flush after `flush_interval_bytes` unflushed bytes or `flush_interval` (Kafka's default behaviour).
    Interval,
}

/// The validated configuration. Limits are checked at start-up, so the rest of the broker may rely on them.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    /// `host:port` that Metadata hands to clients; the listen address when not set.
    pub advertised_listener: Option<(String, u16)>,
    pub data_dir: PathBuf,
    pub node_id: i32,
    /// Executors, one per core; `None` means one per online core.
    pub shard_count: Option<usize>,
    pub partition_count_default: i32,
    pub replication_factor_default: i16,
    pub segment_size_max: u64,
    pub segment_age_max: Duration,
    /// `None`: keep forever (`-1`).
    pub retention_age_max: Option<Duration>,
    pub retention_size_max: Option<u64>,
    pub index_interval_size: u32,
    pub auto_create_topics: bool,
    /// `message.max.bytes`: the largest record batch a produce may carry.
    pub message_size_max: usize,
    /// `socket.request.max.bytes`: the largest request frame; a bigger one closes the connection.
    pub request_size_max: usize,
    pub flush_policy: FlushPolicy,
    /// `log.flush.interval.messages`: accepted for Kafka compatibility; storage group-commits by bytes, so the
    /// byte threshold below is what takes effect.
    pub flush_interval_messages: u64,
    /// `log.flush.interval.bytes`: under the interval policy, fdatasync after this many unsynced bytes.
    pub flush_interval_size: u64,
    pub flush_interval: Duration,
    /// `cache.size.bytes`: the whole broker's batch cache, split evenly between the shards.
    pub cache_size_max: usize,
    /// Bound of each cross-shard channel (`shard.channel.capacity`).
    pub shard_channel_capacity: usize,
    /// Requests one connection may have in flight before the broker stops reading from it.
    pub connection_inflight_max: usize,
    /// `producer.id.expiration.ms`: a partition forgets an idempotent producer that has not written for this long.
    pub producer_id_expiration: Duration,
    /// Consumer groups: see [`crate::group`]. Kafka's names and defaults.
    pub groups: GroupConfig,
    /// `log.segment.space.policy` (Sluice's own): how segment files get their space ahead of the data — "grow" (every
    /// write extends the file), "fallocate" or "prewrite" (zeros written and synced ahead, so that data writes
    /// overwrite and an fdatasync needs no ext4 journal commit), in steps of `log.segment.space.step.bytes`.
    pub segment_space: sluice_storage::SegmentSpace,
}

/// The group coordinator's settings (Kafka's `group.*` and `offsets.*` keys).
#[derive(Clone, Debug)]
pub struct GroupConfig {
    /// `group.initial.rebalance.delay.ms`: how long the first rebalance of an empty group waits for more members.
    pub initial_rebalance_delay: Duration,
    /// `group.min.session.timeout.ms` / `group.max.session.timeout.ms`: the session timeouts a member may ask for.
    pub session_timeout_min: Duration,
    pub session_timeout_max: Duration,
    /// `group.max.size`: members per group.
    pub size_max: usize,
    /// `offsets.topic.num.partitions`: partitions of `__consumer_offsets`, fixed when the topic is created.
    pub offsets_partition_count: i32,
    /// `offsets.retention.minutes`: committed offsets of an empty group expire this long after their commit.
    pub offsets_retention: Duration,
    /// `offsets.retention.check.interval.ms`.
    pub offsets_retention_check_interval: Duration,
    /// `offset.metadata.max.bytes`: the largest metadata string a commit may carry.
    pub offset_metadata_size_max: usize,
    /// `offsets.checkpoint.records` (Sluice's own): a `__consumer_offsets` partition that has grown by this many
    /// records (and by more than twice its live state) since its last checkpoint is checkpointed — its live state
    /// rewritten at the end, everything before deleted. Stands in for Kafka's compaction of the topic.
    pub offsets_checkpoint_records: usize,
}

/// The file's shape, with Kafka's names. Every field is optional so that a file may set only what it changes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(alias = "listeners")]
    listen: Option<String>,
    #[serde(rename = "advertised.listeners", alias = "advertised.listener")]
    advertised_listener: Option<String>,
    #[serde(rename = "log.dirs", alias = "data.dir", alias = "log.dir")]
    data_dir: Option<String>,
    #[serde(rename = "node.id", alias = "broker.id")]
    node_id: Option<i32>,
    shards: Option<i64>,
    #[serde(rename = "num.partitions")]
    partition_count_default: Option<i32>,
    #[serde(rename = "default.replication.factor")]
    replication_factor_default: Option<i16>,
    #[serde(rename = "log.segment.bytes", alias = "segment.bytes")]
    segment_size_max: Option<i64>,
    #[serde(rename = "log.segment.ms", alias = "log.roll.ms", alias = "segment.ms")]
    segment_age_max_ms: Option<i64>,
    #[serde(rename = "log.retention.ms", alias = "retention.ms")]
    retention_age_max_ms: Option<i64>,
    #[serde(rename = "log.retention.bytes", alias = "retention.bytes")]
    retention_size_max: Option<i64>,
    #[serde(rename = "log.index.interval.bytes", alias = "index.interval.bytes")]
    index_interval_size: Option<i64>,
    #[serde(rename = "auto.create.topics.enable")]
    auto_create_topics: Option<bool>,
    #[serde(rename = "message.max.bytes", alias = "max.message.bytes")]
    message_size_max: Option<i64>,
    #[serde(rename = "socket.request.max.bytes")]
    request_size_max: Option<i64>,
    #[serde(rename = "log.flush.policy")]
    flush_policy: Option<String>,
    #[serde(rename = "log.flush.interval.messages")]
    flush_interval_messages: Option<i64>,
    #[serde(rename = "log.flush.interval.bytes")]
    flush_interval_size: Option<i64>,
    #[serde(rename = "log.flush.interval.ms")]
    flush_interval_ms: Option<i64>,
    #[serde(rename = "cache.size.bytes")]
    cache_size_max: Option<i64>,
    #[serde(rename = "shard.channel.capacity")]
    shard_channel_capacity: Option<i64>,
    #[serde(rename = "connection.inflight.max")]
    connection_inflight_max: Option<i64>,
    #[serde(rename = "producer.id.expiration.ms")]
    producer_id_expiration_ms: Option<i64>,
    #[serde(rename = "log.segment.space.policy")]
    segment_space: Option<String>,
    #[serde(rename = "log.segment.space.step.bytes")]
    segment_space_step: Option<i64>,
    #[serde(rename = "group.initial.rebalance.delay.ms")]
    group_initial_rebalance_delay_ms: Option<i64>,
    #[serde(rename = "group.min.session.timeout.ms")]
    group_session_timeout_min_ms: Option<i64>,
    #[serde(rename = "group.max.session.timeout.ms")]
    group_session_timeout_max_ms: Option<i64>,
    #[serde(rename = "group.max.size")]
    group_size_max: Option<i64>,
    #[serde(rename = "offsets.topic.num.partitions")]
    offsets_partition_count: Option<i64>,
    #[serde(rename = "offsets.retention.minutes")]
    offsets_retention_minutes: Option<i64>,
    #[serde(rename = "offsets.retention.check.interval.ms")]
    offsets_retention_check_interval_ms: Option<i64>,
    #[serde(rename = "offset.metadata.max.bytes")]
    offset_metadata_size_max: Option<i64>,
    #[serde(rename = "offsets.checkpoint.records")]
    offsets_checkpoint_records: Option<i64>,
}

/// Command-line values that override the file.
#[derive(Clone, Debug, Default)]
pub struct ConfigOverrides {
    pub listen: Option<String>,
    pub advertised_listener: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub shard_count: Option<usize>,
    pub node_id: Option<i32>,
}

/// A configuration problem, worded for the one line `sluice` prints before it exits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// The embedded default, then `file` (if any), then `overrides`.
    pub fn load(file: Option<&Path>, overrides: &ConfigOverrides) -> Result<Config, ConfigError> {
        let mut merged = parse_file(DEFAULT_CONFIG, "the embedded default configuration")?;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|error| {
                ConfigError(format!("cannot read config file {}: {error}", path.display()))
            })?;
            let from_file = parse_file(&text, &format!("config file {}", path.display()))?;
            merged = merge(merged, from_file);
        }
        Config::build(merged, overrides)
    }

    /// Parses a configuration from TOML text over the embedded default (for tests and embedding).
    pub fn from_toml(text: &str, overrides: &ConfigOverrides) -> Result<Config, ConfigError> {
        let base = parse_file(DEFAULT_CONFIG, "the embedded default configuration")?;
        let file = parse_file(text, "config")?;
        Config::build(merge(base, file), overrides)
    }

    fn build(file: ConfigFile, overrides: &ConfigOverrides) -> Result<Config, ConfigError> {
        let groups = GroupConfig::build(&file)?;
        let step =
            positive("log.segment.space.step.bytes", file.segment_space_step.unwrap_or(16 << 20))? as u64;
        let segment_space = match file.segment_space.as_deref().unwrap_or("grow") {
            "grow" => sluice_storage::SegmentSpace::Grow,
            "fallocate" => sluice_storage::SegmentSpace::Fallocate { step },
            "prewrite" => sluice_storage::SegmentSpace::Prewrite { step },
            other => {
                return Err(ConfigError(format!(
                "log.segment.space.policy = \"{other}\" is not one of \"grow\", \"fallocate\", \"prewrite\""
            )))
            }
        };
        let listen_text = overrides.listen.clone().or(file.listen).unwrap_or_else(|| "127.0.0.1:9092".into());
        let listen = parse_listen(&listen_text)?;
        let advertised_listener = match overrides.advertised_listener.clone().or(file.advertised_listener) {
            Some(text) => Some(parse_host_port(&text, "advertised.listeners")?),
            None => None,
        };
        let data_dir = overrides
            .data_dir
            .clone()
            .or(file.data_dir.map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("data"));
        let shard_count = match overrides.shard_count.map(|count| count as i64).or(file.shards) {
            None | Some(0) => None,
            Some(count) if (1..=1024).contains(&count) => Some(count as usize),
            Some(count) => return Err(ConfigError(format!("shards = {count} is outside 1..=1024"))),
        };
        let flush_policy = match file.flush_policy.as_deref().unwrap_or("fsync") {
            "fsync" => FlushPolicy::Fsync,
            "interval" => FlushPolicy::Interval,
            other => {
                return Err(ConfigError(format!(
                    "log.flush.policy = \"{other}\" is not one of \"fsync\", \"interval\""
                )))
            }
        };
        let message_size_max = positive("message.max.bytes", file.message_size_max.unwrap_or(1_048_588))?;
        let request_size_max =
            positive("socket.request.max.bytes", file.request_size_max.unwrap_or(104_857_600))?;
        if message_size_max > request_size_max {
            return Err(ConfigError(format!(
                "message.max.bytes {message_size_max} exceeds socket.request.max.bytes {request_size_max}"
            )));
        }
        let config = Config {
            listen,
            advertised_listener,
            data_dir,
            node_id: overrides.node_id.or(file.node_id).unwrap_or(0),
            shard_count,
            partition_count_default: file.partition_count_default.unwrap_or(1),
            replication_factor_default: file.replication_factor_default.unwrap_or(1),
            segment_size_max: positive("log.segment.bytes", file.segment_size_max.unwrap_or(1 << 30))? as u64,
            segment_age_max: Duration::from_millis(positive(
                "log.segment.ms",
                file.segment_age_max_ms.unwrap_or(7 * DAY_MS),
            )? as u64),
            retention_age_max: optional_limit(
                "log.retention.ms",
                file.retention_age_max_ms.unwrap_or(7 * DAY_MS),
            )?
            .map(Duration::from_millis),
            retention_size_max: optional_limit("log.retention.bytes", file.retention_size_max.unwrap_or(-1))?,
            index_interval_size: positive(
                "log.index.interval.bytes",
                file.index_interval_size.unwrap_or(4096),
            )?
            .min(u32::MAX as usize) as u32,
            auto_create_topics: file.auto_create_topics.unwrap_or(true),
            message_size_max,
            request_size_max,
            flush_policy,
            flush_interval_messages: positive(
                "log.flush.interval.messages",
                file.flush_interval_messages.unwrap_or(10_000),
            )? as u64,
            flush_interval_size: positive(
                "log.flush.interval.bytes",
                file.flush_interval_size.unwrap_or(1 << 20),
            )? as u64,
            flush_interval: Duration::from_millis(positive(
                "log.flush.interval.ms",
                file.flush_interval_ms.unwrap_or(1000),
            )? as u64),
            cache_size_max: positive("cache.size.bytes", file.cache_size_max.unwrap_or(512 << 20))?,
            shard_channel_capacity: positive(
                "shard.channel.capacity",
                file.shard_channel_capacity.unwrap_or(1024),
            )?,
            connection_inflight_max: positive(
                "connection.inflight.max",
                file.connection_inflight_max.unwrap_or(1024),
            )?,
            producer_id_expiration: Duration::from_millis(positive(
                "producer.id.expiration.ms",
                file.producer_id_expiration_ms.unwrap_or(DAY_MS),
            )? as u64),
            groups,
            segment_space,
        };
        if config.partition_count_default < 1 {
            return Err(ConfigError(format!(
                "num.partitions = {} must be at least 1",
                config.partition_count_default
            )));
        }
        if config.replication_factor_default != 1 {
            return Err(ConfigError(format!(
                "default.replication.factor = {}: a single-node broker supports only 1",
                config.replication_factor_default
            )));
        }
        Ok(config)
    }

    /// The address clients are told to connect to.
    pub fn advertised(&self) -> (String, u16) {
        match &self.advertised_listener {
            Some((host, port)) => (host.clone(), *port),
            None => (self.listen.ip().to_string(), self.listen.port()),
        }
    }
}

impl GroupConfig {
    fn build(file: &ConfigFile) -> Result<GroupConfig, ConfigError> {
        let millis = |value: usize| Duration::from_millis(value as u64);
        let delay = file.group_initial_rebalance_delay_ms.unwrap_or(3000);
        if delay < 0 {
            return Err(ConfigError(format!(
                "group.initial.rebalance.delay.ms = {delay} must be at least 0"
            )));
        }
        let config = GroupConfig {
            initial_rebalance_delay: Duration::from_millis(delay as u64),
            session_timeout_min: millis(positive(
                "group.min.session.timeout.ms",
                file.group_session_timeout_min_ms.unwrap_or(6000),
            )?),
            session_timeout_max: millis(positive(
                "group.max.session.timeout.ms",
                file.group_session_timeout_max_ms.unwrap_or(1_800_000),
            )?),
            size_max: positive("group.max.size", file.group_size_max.unwrap_or(10_000))?,
            offsets_partition_count: positive(
                "offsets.topic.num.partitions",
                file.offsets_partition_count.unwrap_or(50),
            )?
            .min(1000) as i32,
            offsets_retention: Duration::from_secs(
                60 * positive("offsets.retention.minutes", file.offsets_retention_minutes.unwrap_or(10_080))?
                    as u64,
            ),
            offsets_retention_check_interval: millis(positive(
                "offsets.retention.check.interval.ms",
                file.offsets_retention_check_interval_ms.unwrap_or(600_000),
            )?),
            offset_metadata_size_max: positive(
                "offset.metadata.max.bytes",
                file.offset_metadata_size_max.unwrap_or(4096),
            )?,
            offsets_checkpoint_records: positive(
                "offsets.checkpoint.records",
                file.offsets_checkpoint_records.unwrap_or(100_000),
            )?,
        };
        if config.session_timeout_min > config.session_timeout_max {
            return Err(ConfigError(
                "group.min.session.timeout.ms exceeds group.max.session.timeout.ms".to_string(),
            ));
        }
        Ok(config)
    }
}

fn positive(name: &str, value: i64) -> Result<usize, ConfigError> {
    if value < 1 {
        return Err(ConfigError(format!("{name} = {value} must be a positive number")));
    }
    Ok(value as usize)
}

/// Kafka's convention: `-1` means no limit.
fn optional_limit(name: &str, value: i64) -> Result<Option<u64>, ConfigError> {
    match value {
        -1 => Ok(None),
        value if value >= 0 => Ok(Some(value as u64)),
        value => Err(ConfigError(format!("{name} = {value} must be -1 (no limit) or at least 0"))),
    }
}

/// Accepts `HOST:PORT` and Kafka's `PLAINTEXT://HOST:PORT`; only the first of a comma-separated list is used.
fn strip_listener_scheme(text: &str) -> &str {
    let first = text.split(',').next().unwrap_or("").trim();
    match first.split_once("://") {
        Some((_, rest)) => rest,
        None => first,
    }
}

fn parse_listen(text: &str) -> Result<SocketAddr, ConfigError> {
    let address = strip_listener_scheme(text);
    address
        .to_socket_addrs()
        .map_err(|error| ConfigError(format!("listen address \"{text}\" is not HOST:PORT: {error}")))?
        .next()
        .ok_or_else(|| ConfigError(format!("listen address \"{text}\" resolves to nothing")))
}

fn parse_host_port(text: &str, name: &str) -> Result<(String, u16), ConfigError> {
    let address = strip_listener_scheme(text);
    let (host, port) =
        address.rsplit_once(':').ok_or_else(|| ConfigError(format!("{name} \"{text}\" is not HOST:PORT")))?;
    let port =
        port.parse::<u16>().map_err(|_| ConfigError(format!("{name} \"{text}\" has no valid port")))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(ConfigError(format!("{name} \"{text}\" has no host")));
    }
    Ok((host.to_string(), port))
}

fn parse_file(text: &str, origin: &str) -> Result<ConfigFile, ConfigError> {
    let table: toml::Table = toml::from_str(text)
        .map_err(|error| ConfigError(format!("{origin}: {}", one_line(&error.to_string()))))?;
    let mut flat = toml::Table::new();
    flatten("", table, &mut flat);
    toml::Value::Table(flat)
        .try_into::<ConfigFile>()
        .map_err(|error| ConfigError(format!("{origin}: {}", one_line(&error.to_string()))))
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn flatten(prefix: &str, table: toml::Table, flat: &mut toml::Table) {
    for (key, value) in table {
        let name = if prefix.is_empty() { key } else { format!("{prefix}.{key}") };
        match value {
            toml::Value::Table(inner) => flatten(&name, inner, flat),
            value => {
                flat.insert(name, value);
            }
        }
    }
}

fn merge(base: ConfigFile, over: ConfigFile) -> ConfigFile {
    ConfigFile {
        listen: over.listen.or(base.listen),
        advertised_listener: over.advertised_listener.or(base.advertised_listener),
        data_dir: over.data_dir.or(base.data_dir),
        node_id: over.node_id.or(base.node_id),
        shards: over.shards.or(base.shards),
        partition_count_default: over.partition_count_default.or(base.partition_count_default),
        replication_factor_default: over.replication_factor_default.or(base.replication_factor_default),
        segment_size_max: over.segment_size_max.or(base.segment_size_max),
        segment_age_max_ms: over.segment_age_max_ms.or(base.segment_age_max_ms),
        retention_age_max_ms: over.retention_age_max_ms.or(base.retention_age_max_ms),
        retention_size_max: over.retention_size_max.or(base.retention_size_max),
        index_interval_size: over.index_interval_size.or(base.index_interval_size),
        auto_create_topics: over.auto_create_topics.or(base.auto_create_topics),
        message_size_max: over.message_size_max.or(base.message_size_max),
        request_size_max: over.request_size_max.or(base.request_size_max),
        flush_policy: over.flush_policy.or(base.flush_policy),
        flush_interval_messages: over.flush_interval_messages.or(base.flush_interval_messages),
        flush_interval_size: over.flush_interval_size.or(base.flush_interval_size),
        flush_interval_ms: over.flush_interval_ms.or(base.flush_interval_ms),
        cache_size_max: over.cache_size_max.or(base.cache_size_max),
        shard_channel_capacity: over.shard_channel_capacity.or(base.shard_channel_capacity),
        connection_inflight_max: over.connection_inflight_max.or(base.connection_inflight_max),
        producer_id_expiration_ms: over.producer_id_expiration_ms.or(base.producer_id_expiration_ms),
        segment_space: over.segment_space.or(base.segment_space),
        segment_space_step: over.segment_space_step.or(base.segment_space_step),
        group_initial_rebalance_delay_ms: over
            .group_initial_rebalance_delay_ms
            .or(base.group_initial_rebalance_delay_ms),
        group_session_timeout_min_ms: over.group_session_timeout_min_ms.or(base.group_session_timeout_min_ms),
        group_session_timeout_max_ms: over.group_session_timeout_max_ms.or(base.group_session_timeout_max_ms),
        group_size_max: over.group_size_max.or(base.group_size_max),
        offsets_partition_count: over.offsets_partition_count.or(base.offsets_partition_count),
        offsets_retention_minutes: over.offsets_retention_minutes.or(base.offsets_retention_minutes),
        offsets_retention_check_interval_ms: over
            .offsets_retention_check_interval_ms
            .or(base.offsets_retention_check_interval_ms),
        offset_metadata_size_max: over.offset_metadata_size_max.or(base.offset_metadata_size_max),
        offsets_checkpoint_records: over.offsets_checkpoint_records.or(base.offsets_checkpoint_records),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, &ConfigOverrides::default())
    }

    #[test]
    fn embedded_default_gives_kafka_defaults() {
        let config = load("").unwrap();
        assert_eq!(config.listen, "127.0.0.1:9092".parse().unwrap());
        assert_eq!(config.data_dir, PathBuf::from("data"));
        assert_eq!(config.partition_count_default, 1);
        assert_eq!(config.segment_size_max, 1 << 30);
        assert_eq!(config.retention_age_max, Some(Duration::from_millis(7 * DAY_MS as u64)));
        assert_eq!(config.retention_size_max, None);
        assert_eq!(config.message_size_max, 1_048_588);
        assert_eq!(config.request_size_max, 104_857_600);
        assert_eq!(config.flush_policy, FlushPolicy::Fsync);
        assert!(config.auto_create_topics);
    }

    #[test]
    fn segment_space_and_group_settings_are_read() {
        let config =
            load("log.segment.space.policy = \"prewrite\"\nlog.segment.space.step.bytes = 1048576").unwrap();
        assert_eq!(config.segment_space, sluice_storage::SegmentSpace::Prewrite { step: 1 << 20 });
        assert_eq!(load("").unwrap().segment_space, sluice_storage::SegmentSpace::Grow);
        let config =
            load("\"group.initial.rebalance.delay.ms\" = 0\n\"offsets.topic.num.partitions\" = 8").unwrap();
        assert_eq!(config.groups.initial_rebalance_delay, Duration::ZERO);
        assert_eq!(config.groups.offsets_partition_count, 8);
        assert_eq!(load("").unwrap().groups.initial_rebalance_delay, Duration::from_secs(3));
    }

    #[test]
    fn dotted_keys_quoted_and_unquoted_are_the_same() {
        let unquoted = load("log.segment.bytes = 4096\nnum.partitions = 8").unwrap();
        let quoted = load("\"log.segment.bytes\" = 4096\n\"num.partitions\" = 8").unwrap();
        assert_eq!(unquoted.segment_size_max, 4096);
        assert_eq!(quoted.segment_size_max, 4096);
        assert_eq!(unquoted.partition_count_default, 8);
        assert_eq!(quoted.partition_count_default, 8);
    }

    #[test]
    fn listeners_accept_kafka_scheme_and_overrides_win() {
        let config = load("listeners = \"PLAINTEXT://127.0.0.1:19092\"").unwrap();
        assert_eq!(config.listen.port(), 19092);
        let overrides = ConfigOverrides { listen: Some("127.0.0.1:29092".into()), ..Default::default() };
        let config = Config::from_toml("listen = \"127.0.0.1:19092\"", &overrides).unwrap();
        assert_eq!(config.listen.port(), 29092);
        assert_eq!(config.advertised(), ("127.0.0.1".to_string(), 29092));
    }

    #[test]
    fn bad_values_name_the_key() {
        let cases = [
            ("log.segment.bytes = 0", "log.segment.bytes"),
            ("log.flush.policy = \"sometimes\"", "log.flush.policy"),
            ("log.segmnt.bytes = 5", "log.segmnt.bytes"),
            ("num.partitions = \"x\"", "num.partitions"),
            ("log.retention.ms = -5", "log.retention.ms"),
            ("listen = \"nonsense\"", "nonsense"),
            ("message.max.bytes = 200000000", "message.max.bytes"),
            ("log.segment.space.policy = \"reserve\"", "log.segment.space.policy"),
            ("group.min.session.timeout.ms = 0", "group.min.session.timeout.ms"),
        ];
        for (text, expected) in cases {
            let error = load(text).unwrap_err();
            assert!(error.0.contains(expected), "{text}: {error}");
            assert!(!error.0.contains('\n'), "{text}: error spans lines: {error}");
        }
    }
}
