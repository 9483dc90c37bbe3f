//! Broker configuration: an embedded default, a TOML file with Kafka's dotted key names, then command-line
//! overrides. Kafka's names (`log.segment.bytes`) exist only here, at the boundary; the rest of the broker reads
//! the Rust fields, which follow the house naming (`segment_size_max`).
//!
//! Every default lives in one place, the embedded `default_config.toml`: it is what `sluice` runs with when given
//! no file, and it lists every key, so it is also the list of known keys and fixes each key's type. The layers
//! are merged as TOML tables, key by key, and the result is deserialized once into [`Settings`] (Kafka's names and
//! units, no serde defaults), the flags are applied to that, and [`Config::build`] checks and converts it. A
//! default written in code as well would be a second copy that can drift from the file, so there is none.
//!
//! TOML turns an unquoted dotted key (`log.segment.bytes = 1`) into nested tables, while a quoted one
//! (`"log.segment.bytes" = 1`) stays flat. Both spellings are accepted: each layer is flattened back to dotted keys
//! before it is merged, and an unknown key is an error that names it and the closest known key (a typo must not
//! silently fall back to a default).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, ToSocketAddrs};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The configuration `sluice` runs with when given no file: a single-node broker on 127.0.0.1:9092, data in `./data`.
pub const DEFAULT_CONFIG: &str = include_str!("default_config.toml");

/// The bounds of `log.segment.bytes` and of the topic-level `segment.bytes`. The top is Kafka's: a segment's byte
/// positions are 32-bit signed in its offset index, so Kafka refuses anything above 2^31 - 1 (an `int` config).
/// The bottom is the log's own (`LogConfig::validate`): one 4,096-byte direct-I/O block. Kafka allows 14 (one
/// record batch header), but a smaller value here would pass the configuration and then fail every log open.
pub const SEGMENT_SIZE_MIN: i64 = sluice_storage::BLOCK_SIZE as i64;
pub const SEGMENT_SIZE_MAX: i64 = i32::MAX as i64;

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
    /// `controller.quorum.voters`: empty for a single-node broker (no quorum).
    pub quorum_voters: Vec<QuorumVoter>,
    /// `broker.rack`: `None` when empty.
    pub broker_rack: Option<String>,
    /// `broker.session.timeout.ms`: a broker that has not heartbeated to the controller for this long is fenced.
    pub broker_session_timeout: Duration,
    /// `controller.quorum.election.timeout.ms`: a voter that hears no leader for this long (plus up to as much
    /// again, drawn at random) starts an election.
    pub quorum_election_timeout: Duration,
    /// `broker.heartbeat.interval.ms`: how often a broker heartbeats to the controller; below the session timeout.
    pub broker_heartbeat_interval: Duration,
    /// `min.insync.replicas`: the broker default of the topic key (acks=all needs this many in-sync replicas).
    pub min_insync_replicas: usize,
    /// `replica.lag.time.max.ms`: a follower that has not caught up with its leader for this long leaves the ISR.
    pub replica_lag_time_max: Duration,
    /// `unclean.leader.election.enable`: the broker default of the topic key (elect outside the ISR when the
    /// last in-sync replica is gone, losing what only it held).
    pub unclean_leader_election: bool,
    /// `auto.leader.rebalance.enable`, `leader.imbalance.per.broker.percentage`,
    /// `leader.imbalance.check.interval.seconds`: the active controller moves leadership back to preferred replicas.
    pub auto_leader_rebalance: bool,
    pub leader_imbalance_percentage: u32,
    pub leader_imbalance_check_interval: Duration,
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
    /// `queued.max.request.bytes`: request bytes the whole broker holds between reading a frame's size and writing
    /// its response; a connection whose next frame does not fit stops reading until it does. `None`: unbounded
    /// (`-1`). Never below `request_size_max`, so every admissible frame fits.
    pub request_queued_size_max: Option<usize>,
    /// `max.connections`: connections open at once over all shards; more are closed at accept. `None` (`-1`):
    /// the descriptor limit less a reserve (see `server::connection_count_bound`), which also caps any value set.
    pub connection_count_max: Option<usize>,
    /// `max.connections.per.ip`: connections open at once from one client address.
    pub connection_count_per_ip_max: usize,
    /// `log.segment.open.files.max` (Sluice's own): segment files (`.log`, `.index`, `.timeindex`) the whole broker
    /// keeps open when idle, split evenly between the shards' caches; others are opened when read or written.
    /// `None` (`-1`): half the descriptors the connection limit leaves (see `server::open_file_count_bound`).
    pub segment_open_files_max: Option<usize>,
    /// `connections.max.idle.ms`: a connection with nothing in flight that sends nothing for this long is closed.
    /// `None` (`-1`): never.
    pub connection_idle_max: Option<Duration>,
    /// `producer.id.expiration.ms`: a partition forgets an idempotent producer that has not written for this long.
    pub producer_id_expiration: Duration,
    /// Consumer groups: see [`crate::group`]. Kafka's names and defaults.
    pub groups: GroupConfig,
    /// `log.segment.space.policy` (Sluice's own): how segment files get their space ahead of the data — "grow" (every
    /// write extends the file), "fallocate" or "prewrite" (zeros written and synced ahead, so that data writes
    /// overwrite and an fdatasync needs no ext4 journal commit), in steps of `log.segment.space.step.bytes`.
    pub segment_space: sluice_storage::SegmentSpace,
    /// Where each value came from, for DescribeConfigs (Kafka's config sources).
    pub origins: ConfigOrigins,
}

/// One entry of `controller.quorum.voters` (`id@host:port`): a voter of the metadata quorum and the address it
/// serves the quorum on. `host` is kept without the brackets an IPv6 address is written with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuorumVoter {
    pub id: i32,
    pub host: String,
    pub port: u16,
}

impl QuorumVoter {
    /// `host:port`, with an IPv6 host in brackets (`[::1]:19093`), as `ToSocketAddrs` and Kafka write it.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Every key of the default file with its value after the file and the flags, as text in Kafka's units; which of
/// them the file or a flag set (Kafka's STATIC_BROKER_CONFIG; the rest are DEFAULT_CONFIG); and the Kafka broker
/// keys the file set that have no effect here. DescribeConfigs answers from it.
#[derive(Clone, Debug, Default)]
pub struct ConfigOrigins {
    pub values: BTreeMap<String, String>,
    pub static_keys: BTreeSet<String>,
    pub ignored: BTreeMap<String, String>,
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
    /// `offsets.topic.replication.factor`: replicas of each `__consumer_offsets` partition in a cluster (at most
    /// the live brokers when it is created).
    pub offsets_replication_factor: i16,
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

/// Where the embedded default's errors say they come from.
const DEFAULT_ORIGIN: &str = "the embedded default configuration";

/// Other spellings a file may use for a key of the default file: Kafka's topic-level and older broker names, and
/// names earlier Sluice versions read. Each layer is rewritten to the default file's names before it is merged, so
/// that a file saying `log.dir` overrides the default's `log.dirs` rather than sitting beside it.
const ALIASES: &[(&str, &str)] = &[
    ("listeners", "listen"),
    ("advertised.listener", "advertised.listeners"),
    ("data.dir", "log.dirs"),
    ("log.dir", "log.dirs"),
    ("broker.id", "node.id"),
    ("segment.bytes", "log.segment.bytes"),
    ("log.roll.ms", "log.segment.ms"),
    ("segment.ms", "log.segment.ms"),
    ("retention.ms", "log.retention.ms"),
    ("retention.bytes", "log.retention.bytes"),
    ("index.interval.bytes", "log.index.interval.bytes"),
    ("max.message.bytes", "message.max.bytes"),
];

/// Kafka broker keys in time units other than the default file's: a Kafka `server.properties` sets
/// `log.retention.hours = 168`, which is `log.retention.ms` times 3,600,000 (-1, "forever", stays -1).
const UNIT_ALIASES: &[(&str, &str, i64)] = &[
    ("log.retention.hours", "log.retention.ms", 3_600_000),
    ("log.retention.minutes", "log.retention.ms", 60_000),
    ("log.roll.hours", "log.segment.ms", 3_600_000),
];

/// Kafka broker keys that have no effect on a single node that keeps no ZooKeeper, no replicas, no compaction and
/// one message format, and whose absence changes no guarantee: a Kafka `server.properties` translated to TOML
/// keeps them, and each is accepted with one warning line. Keys whose absence would weaken what the operator asked
/// for (`ssl.*`, `sasl.*`, `authorizer.class.name`, `super.users`, ...) are not here: they are refused as unknown.
const IGNORED_KEYS: &[&str] = &[
    "background.threads",
    "broker.id.generation.enable",
    "compression.type",
    "controlled.shutdown.enable",
    "controller.listener.names",
    "controller.quorum.bootstrap.servers",
    "delete.topic.enable",
    "group.coordinator.rebalance.protocols",
    "inter.broker.listener.name",
    "inter.broker.protocol.version",
    "listener.security.protocol.map",
    "log.cleaner.backoff.ms",
    "log.cleaner.dedupe.buffer.size",
    "log.cleaner.delete.retention.ms",
    "log.cleaner.enable",
    "log.cleaner.io.buffer.size",
    "log.cleaner.min.cleanable.ratio",
    "log.cleaner.min.compaction.lag.ms",
    "log.cleaner.threads",
    "log.cleanup.policy",
    "log.flush.offset.checkpoint.interval.ms",
    "log.flush.scheduler.interval.ms",
    "log.flush.start.offset.checkpoint.interval.ms",
    "log.index.size.max.bytes",
    "log.message.format.version",
    "log.message.timestamp.type",
    "log.preallocate",
    "log.retention.check.interval.ms",
    "log.segment.delete.delay.ms",
    "metadata.log.dir",
    "metric.reporters",
    "metrics.num.samples",
    "metrics.sample.window.ms",
    "num.io.threads",
    "num.network.threads",
    "num.recovery.threads.per.data.dir",
    "num.replica.fetchers",
    "offsets.commit.timeout.ms",
    "offsets.load.buffer.size",
    "offsets.topic.segment.bytes",
    "process.roles",
    "queued.max.requests",
    "replica.fetch.max.bytes",
    "replica.socket.timeout.ms",
    "request.timeout.ms",
    "reserved.broker.max.id",
    "socket.listen.backlog.size",
    "socket.receive.buffer.bytes",
    "socket.send.buffer.bytes",
    "transaction.state.log.min.isr",
    "transaction.state.log.num.partitions",
    "transaction.state.log.replication.factor",
    "transactional.id.expiration.ms",
];

/// Prefixes of ignored Kafka keys: ZooKeeper's connection settings (a single node keeps its metadata itself).
const IGNORED_KEY_PREFIXES: &[&str] = &["zookeeper."];

fn is_ignored_key(name: &str) -> bool {
    IGNORED_KEYS.contains(&name) || IGNORED_KEY_PREFIXES.iter().any(|prefix| name.starts_with(prefix))
}

/// The merged layers, one field per key of the default file, in Kafka's names and units and not yet checked.
/// No field has `#[serde(default)]` and every field is required: a key missing from the default file fails the
/// first load (and `every_default_key_is_known_and_parses`) instead of quietly taking a value written here.
/// Integers are `i64`, TOML's own, so that a value out of a field's range reaches [`Config::build`], whose message
/// names the limit, rather than serde's.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    listen: String,
    /// Empty: clients are told the listen address.
    #[serde(rename = "advertised.listeners")]
    advertised_listener: String,
    #[serde(rename = "log.dirs")]
    data_dir: PathBuf,
    #[serde(rename = "node.id")]
    node_id: i64,
    #[serde(rename = "controller.quorum.voters")]
    quorum_voters: String,
    /// Empty: no rack.
    #[serde(rename = "broker.rack")]
    broker_rack: String,
    #[serde(rename = "broker.session.timeout.ms")]
    broker_session_timeout_ms: i64,
    #[serde(rename = "broker.heartbeat.interval.ms")]
    broker_heartbeat_interval_ms: i64,
    #[serde(rename = "controller.quorum.election.timeout.ms")]
    quorum_election_timeout_ms: i64,
    #[serde(rename = "min.insync.replicas")]
    min_insync_replicas: i64,
    #[serde(rename = "replica.lag.time.max.ms")]
    replica_lag_time_max_ms: i64,
    #[serde(rename = "unclean.leader.election.enable")]
    unclean_leader_election: bool,
    #[serde(rename = "auto.leader.rebalance.enable")]
    auto_leader_rebalance: bool,
    #[serde(rename = "leader.imbalance.per.broker.percentage")]
    leader_imbalance_percentage: i64,
    #[serde(rename = "leader.imbalance.check.interval.seconds")]
    leader_imbalance_check_interval_seconds: i64,
    shards: i64,
    #[serde(rename = "num.partitions")]
    partition_count_default: i64,
    #[serde(rename = "default.replication.factor")]
    replication_factor_default: i64,
    #[serde(rename = "log.segment.bytes")]
    segment_size_max: i64,
    #[serde(rename = "log.segment.ms")]
    segment_age_max_ms: i64,
    #[serde(rename = "log.retention.ms")]
    retention_age_max_ms: i64,
    #[serde(rename = "log.retention.bytes")]
    retention_size_max: i64,
    #[serde(rename = "log.index.interval.bytes")]
    index_interval_size: i64,
    #[serde(rename = "auto.create.topics.enable")]
    auto_create_topics: bool,
    #[serde(rename = "message.max.bytes")]
    message_size_max: i64,
    #[serde(rename = "socket.request.max.bytes")]
    request_size_max: i64,
    #[serde(rename = "log.flush.policy")]
    flush_policy: String,
    #[serde(rename = "log.flush.interval.messages")]
    flush_interval_messages: i64,
    #[serde(rename = "log.flush.interval.bytes")]
    flush_interval_size: i64,
    #[serde(rename = "log.flush.interval.ms")]
    flush_interval_ms: i64,
    #[serde(rename = "log.segment.space.policy")]
    segment_space: String,
    #[serde(rename = "log.segment.space.step.bytes")]
    segment_space_step: i64,
    #[serde(rename = "cache.size.bytes")]
    cache_size_max: i64,
    #[serde(rename = "shard.channel.capacity")]
    shard_channel_capacity: i64,
    #[serde(rename = "connection.inflight.max")]
    connection_inflight_max: i64,
    #[serde(rename = "queued.max.request.bytes")]
    request_queued_size_max: i64,
    #[serde(rename = "max.connections")]
    connection_count_max: i64,
    #[serde(rename = "max.connections.per.ip")]
    connection_count_per_ip_max: i64,
    #[serde(rename = "log.segment.open.files.max")]
    segment_open_files_max: i64,
    #[serde(rename = "connections.max.idle.ms")]
    connection_idle_max_ms: i64,
    #[serde(rename = "producer.id.expiration.ms")]
    producer_id_expiration_ms: i64,
    #[serde(rename = "group.initial.rebalance.delay.ms")]
    group_initial_rebalance_delay_ms: i64,
    #[serde(rename = "group.min.session.timeout.ms")]
    group_session_timeout_min_ms: i64,
    #[serde(rename = "group.max.session.timeout.ms")]
    group_session_timeout_max_ms: i64,
    #[serde(rename = "group.max.size")]
    group_size_max: i64,
    #[serde(rename = "offsets.topic.num.partitions")]
    offsets_partition_count: i64,
    #[serde(rename = "offsets.topic.replication.factor")]
    offsets_replication_factor: i64,
    #[serde(rename = "offsets.retention.minutes")]
    offsets_retention_minutes: i64,
    #[serde(rename = "offsets.retention.check.interval.ms")]
    offsets_retention_check_interval_ms: i64,
    #[serde(rename = "offset.metadata.max.bytes")]
    offset_metadata_size_max: i64,
    #[serde(rename = "offsets.checkpoint.records")]
    offsets_checkpoint_records: i64,
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
        let user = match file {
            None => None,
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|error| {
                    ConfigError(format!("cannot read config file {}: {error}", path.display()))
                })?;
                Some((text, format!("config file {}", path.display())))
            }
        };
        Config::load_layers(user.as_ref().map(|(text, origin)| (text.as_str(), origin.as_str())), overrides)
    }

    /// Parses a configuration from TOML text over the embedded default (for tests and embedding).
    pub fn from_toml(text: &str, overrides: &ConfigOverrides) -> Result<Config, ConfigError> {
        Config::load_layers(Some((text, "config")), overrides)
    }

    /// Merges the default layer and the user's `(text, origin)` key by key, deserializes the result once, applies
    /// the flags, and checks it all in [`Config::build`], so that a flag's value meets the same limits as a file's.
    fn load_layers(user: Option<(&str, &str)>, overrides: &ConfigOverrides) -> Result<Config, ConfigError> {
        let mut values = parse_layer(DEFAULT_CONFIG, DEFAULT_ORIGIN, None)?.values;
        let mut origins = ConfigOrigins::default();
        if let Some((text, origin)) = user {
            let layer = parse_layer(text, origin, Some(&values))?;
            for (name, value) in &layer.ignored {
                log::warn!("{origin}: {name} = {value} is a Kafka key with no effect here; ignored");
            }
            origins.static_keys.extend(layer.values.keys().cloned());
            origins.ignored = layer.ignored;
            values.extend(layer.values);
        }
        origins.values = values.iter().map(|(name, value)| (name.clone(), value_text(value))).collect();
        // Every user value has a key and a type taken from the default layer, so a failure here means the default
        // file and `Settings` disagree: a bug that `every_default_key_is_known_and_parses` catches before release.
        let mut settings: Settings = toml::Value::Table(values)
            .try_into()
            .map_err(|error| ConfigError(format!("{DEFAULT_ORIGIN}: {}", one_line(&error.to_string()))))?;
        settings.apply(overrides);
        origins.apply(overrides);
        let mut config = Config::build(settings)?;
        config.origins = origins;
        Ok(config)
    }

    /// Checks every value against its limits and converts Kafka's names and units into the broker's.
    #[allow(clippy::too_many_lines)] // over 70 lines before the limit; to be split
    fn build(settings: Settings) -> Result<Config, ConfigError> {
        let step = positive("log.segment.space.step.bytes", settings.segment_space_step)? as u64;
        let segment_space = match settings.segment_space.as_str() {
            "grow" => sluice_storage::SegmentSpace::Grow,
            "fallocate" => sluice_storage::SegmentSpace::Fallocate { step },
            "prewrite" => sluice_storage::SegmentSpace::Prewrite { step },
            other => {
                return Err(ConfigError(format!(
                "log.segment.space.policy = \"{other}\" is not one of \"grow\", \"fallocate\", \"prewrite\""
            )))
            }
        };
        let listen = parse_listen(&settings.listen)?;
        let advertised_listener = match settings.advertised_listener.as_str() {
            "" => None,
            text => Some(parse_host_port(text, "advertised.listeners")?),
        };
        let shard_count = match settings.shards {
            0 => None,
            count if (1..=1024).contains(&count) => Some(count as usize),
            count => {
                return Err(ConfigError(format!(
                    "shards = {count} is outside 1..=1024 (or 0: one per online core)"
                )))
            }
        };
        let flush_policy = match settings.flush_policy.as_str() {
            "fsync" => FlushPolicy::Fsync,
            "interval" => FlushPolicy::Interval,
            other => {
                return Err(ConfigError(format!(
                    "log.flush.policy = \"{other}\" is not one of \"fsync\", \"interval\""
                )))
            }
        };
        let message_size_max = positive("message.max.bytes", settings.message_size_max)?;
        let request_size_max = positive("socket.request.max.bytes", settings.request_size_max)?;
        if message_size_max > request_size_max {
            return Err(ConfigError(format!(
                "message.max.bytes {message_size_max} exceeds socket.request.max.bytes {request_size_max}"
            )));
        }
        // A cluster checks the factor against its live brokers when a topic is created.
        let single_node = settings.quorum_voters.trim().is_empty();
        if (single_node && settings.replication_factor_default != 1)
            || !(1..=i64::from(i16::MAX)).contains(&settings.replication_factor_default)
        {
            return Err(ConfigError(format!(
                "default.replication.factor = {}: {}",
                settings.replication_factor_default,
                if single_node {
                    "a single-node broker supports only 1"
                } else {
                    "must be between 1 and 32767"
                }
            )));
        }
        let groups = GroupConfig::build(&settings)?;
        let connections = ConnectionSettings::build(&settings, request_size_max)?;
        let node_id = within("node.id", settings.node_id, i32::MIN.into()..=i32::MAX.into())? as i32;
        let cluster = ClusterSettings::build(&settings, node_id)?;
        let millis = |value: usize| Duration::from_millis(value as u64);
        Ok(Config {
            listen,
            advertised_listener,
            data_dir: settings.data_dir,
            node_id,
            quorum_voters: cluster.quorum_voters,
            broker_rack: cluster.broker_rack,
            broker_session_timeout: cluster.broker_session_timeout,
            broker_heartbeat_interval: cluster.broker_heartbeat_interval,
            quorum_election_timeout: cluster.quorum_election_timeout,
            min_insync_replicas: within(
                "min.insync.replicas",
                settings.min_insync_replicas,
                1..=i16::MAX.into(),
            )? as usize,
            replica_lag_time_max: Duration::from_millis(positive(
                "replica.lag.time.max.ms",
                settings.replica_lag_time_max_ms,
            )? as u64),
            unclean_leader_election: settings.unclean_leader_election,
            auto_leader_rebalance: settings.auto_leader_rebalance,
            leader_imbalance_percentage: within(
                "leader.imbalance.per.broker.percentage",
                settings.leader_imbalance_percentage,
                0..=100,
            )? as u32,
            leader_imbalance_check_interval: Duration::from_secs(positive(
                "leader.imbalance.check.interval.seconds",
                settings.leader_imbalance_check_interval_seconds,
            )? as u64),
            shard_count,
            partition_count_default: within(
                "num.partitions",
                settings.partition_count_default,
                1..=i32::MAX.into(),
            )? as i32,
            // Checked above to be 1, so it fits.
            replication_factor_default: settings.replication_factor_default as i16,
            segment_size_max: within(
                "log.segment.bytes",
                settings.segment_size_max,
                SEGMENT_SIZE_MIN..=SEGMENT_SIZE_MAX,
            )? as u64,
            segment_age_max: millis(positive("log.segment.ms", settings.segment_age_max_ms)?),
            retention_age_max: optional_limit("log.retention.ms", settings.retention_age_max_ms)?
                .map(Duration::from_millis),
            retention_size_max: optional_limit("log.retention.bytes", settings.retention_size_max)?,
            index_interval_size: positive("log.index.interval.bytes", settings.index_interval_size)?
                .min(u32::MAX as usize) as u32,
            auto_create_topics: settings.auto_create_topics,
            message_size_max,
            request_size_max,
            flush_policy,
            flush_interval_messages: positive(
                "log.flush.interval.messages",
                settings.flush_interval_messages,
            )? as u64,
            flush_interval_size: positive("log.flush.interval.bytes", settings.flush_interval_size)? as u64,
            flush_interval: millis(positive("log.flush.interval.ms", settings.flush_interval_ms)?),
            cache_size_max: positive("cache.size.bytes", settings.cache_size_max)?,
            shard_channel_capacity: positive("shard.channel.capacity", settings.shard_channel_capacity)?,
            connection_inflight_max: positive("connection.inflight.max", settings.connection_inflight_max)?,
            request_queued_size_max: connections.request_queued_size_max,
            connection_count_max: connections.connection_count_max,
            connection_count_per_ip_max: connections.connection_count_per_ip_max,
            connection_idle_max: connections.connection_idle_max,
            segment_open_files_max: match settings.segment_open_files_max {
                -1 => None,
                count => Some(within("log.segment.open.files.max", count, 1..=i64::from(i32::MAX))? as usize),
            },
            producer_id_expiration: millis(positive(
                "producer.id.expiration.ms",
                settings.producer_id_expiration_ms,
            )?),
            groups,
            segment_space,
            origins: ConfigOrigins::default(),
        })
    }

    /// Whether this node is part of a cluster (`controller.quorum.voters` is set); otherwise it is a single-node
    /// broker that leads every partition itself.
    pub fn is_cluster(&self) -> bool {
        !self.quorum_voters.is_empty()
    }

    /// This node's entry in `controller.quorum.voters`, if it is a voter; `None` for a single-node broker and for
    /// a broker-only node of a cluster (a learner of the metadata log).
    pub fn own_voter(&self) -> Option<&QuorumVoter> {
        self.quorum_voters.iter().find(|voter| voter.id == self.node_id)
    }

    /// The address clients are told to connect to.
    pub fn advertised(&self) -> (String, u16) {
        match &self.advertised_listener {
            Some((host, port)) => (host.clone(), *port),
            None => (self.listen.ip().to_string(), self.listen.port()),
        }
    }
}

impl Settings {
    /// The command line's values replace the merged file's, before [`Config::build`] checks them.
    fn apply(&mut self, overrides: &ConfigOverrides) {
        if let Some(listen) = &overrides.listen {
            self.listen = listen.clone();
        }
        if let Some(advertised) = &overrides.advertised_listener {
            self.advertised_listener = advertised.clone();
        }
        if let Some(data_dir) = &overrides.data_dir {
            self.data_dir = data_dir.clone();
        }
        if let Some(count) = overrides.shard_count {
            self.shards = i64::try_from(count).unwrap_or(i64::MAX);
        }
        if let Some(node_id) = overrides.node_id {
            self.node_id = node_id.into();
        }
    }
}

impl ConfigOrigins {
    /// A flag's value replaces the file's and counts as set by the operator (Kafka treats `--override` so).
    fn apply(&mut self, overrides: &ConfigOverrides) {
        let flags = [
            ("listen", overrides.listen.clone()),
            ("advertised.listeners", overrides.advertised_listener.clone()),
            ("log.dirs", overrides.data_dir.as_ref().map(|path| path.display().to_string())),
            ("shards", overrides.shard_count.map(|count| count.to_string())),
            ("node.id", overrides.node_id.map(|id| id.to_string())),
        ];
        for (name, value) in flags {
            if let Some(value) = value {
                self.values.insert(name.to_string(), value);
                self.static_keys.insert(name.to_string());
            }
        }
    }
}

/// A TOML value as Kafka writes a config value: strings without quotes.
fn value_text(value: &toml::Value) -> String {
    match value {
        toml::Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// The connection limits of [`Config`], checked together (issue 13).
struct ConnectionSettings {
    request_queued_size_max: Option<usize>,
    connection_count_max: Option<usize>,
    connection_count_per_ip_max: usize,
    connection_idle_max: Option<Duration>,
}

impl ConnectionSettings {
    fn build(settings: &Settings, request_size_max: usize) -> Result<ConnectionSettings, ConfigError> {
        let request_queued_size_max = match settings.request_queued_size_max {
            -1 => None,
            size if size >= 1 && size as u64 >= request_size_max as u64 => Some(size as usize),
            size => {
                return Err(ConfigError(format!(
                    "queued.max.request.bytes = {size} must be -1 (no limit) or at least \
                     socket.request.max.bytes {request_size_max}, so that every admissible request fits"
                )))
            }
        };
        let connection_count_max = match settings.connection_count_max {
            -1 => None,
            count => Some(within("max.connections", count, 1..=i64::from(i32::MAX))? as usize),
        };
        let connection_idle_max = match settings.connection_idle_max_ms {
            -1 => None,
            millis => Some(Duration::from_millis(positive("connections.max.idle.ms", millis)? as u64)),
        };
        Ok(ConnectionSettings {
            request_queued_size_max,
            connection_count_max,
            connection_count_per_ip_max: within(
                "max.connections.per.ip",
                settings.connection_count_per_ip_max,
                1..=i64::from(i32::MAX),
            )? as usize,
            connection_idle_max,
        })
    }
}

/// The cluster keys of [`Config`] (issue 15), checked together: the quorum's voters against `node.id`, and the
/// heartbeat interval against the session timeout.
struct ClusterSettings {
    quorum_voters: Vec<QuorumVoter>,
    broker_rack: Option<String>,
    broker_session_timeout: Duration,
    broker_heartbeat_interval: Duration,
    quorum_election_timeout: Duration,
}

impl ClusterSettings {
    fn build(settings: &Settings, node_id: i32) -> Result<ClusterSettings, ConfigError> {
        let quorum_voters = parse_quorum_voters(&settings.quorum_voters)?;
        if !quorum_voters.is_empty() && node_id < 0 {
            return Err(ConfigError(format!(
                "node.id = {node_id} must be at least 0 when controller.quorum.voters is set"
            )));
        }
        let session_ms = positive("broker.session.timeout.ms", settings.broker_session_timeout_ms)?;
        let heartbeat_ms = positive("broker.heartbeat.interval.ms", settings.broker_heartbeat_interval_ms)?;
        // A broker must get more than one heartbeat into each session, or the controller fences it between two.
        if heartbeat_ms >= session_ms {
            return Err(ConfigError(format!(
                "broker.heartbeat.interval.ms {heartbeat_ms} must be less than broker.session.timeout.ms {session_ms}"
            )));
        }
        let broker_rack = match settings.broker_rack.as_str() {
            "" => None,
            rack => Some(rack.to_string()),
        };
        Ok(ClusterSettings {
            quorum_voters,
            broker_rack,
            broker_session_timeout: Duration::from_millis(session_ms as u64),
            broker_heartbeat_interval: Duration::from_millis(heartbeat_ms as u64),
            quorum_election_timeout: Duration::from_millis(within(
                "controller.quorum.election.timeout.ms",
                settings.quorum_election_timeout_ms,
                200..=60_000,
            )? as u64),
        })
    }
}

/// `controller.quorum.voters` in Kafka's form, `id@host:port` separated by commas (spaces around an entry are
/// allowed); an IPv6 host is written in brackets, `1@[::1]:19093`. Empty (or blank) is no quorum. Each error names
/// the entry at fault.
fn parse_quorum_voters(text: &str) -> Result<Vec<QuorumVoter>, ConfigError> {
    const KEY: &str = "controller.quorum.voters";
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let mut voters: Vec<QuorumVoter> = Vec::new();
    for entry in text.split(',').map(str::trim) {
        let voter = parse_quorum_voters_entry(entry)?;
        if voters.iter().any(|other| other.id == voter.id) {
            return Err(ConfigError(format!("{KEY}: voter id {} is listed twice", voter.id)));
        }
        if let Some(other) = voters.iter().find(|other| other.host == voter.host && other.port == voter.port)
        {
            return Err(ConfigError(format!(
                "{KEY}: voters {} and {} have the same address {}",
                other.id,
                voter.id,
                voter.address()
            )));
        }
        voters.push(voter);
    }
    Ok(voters)
}

/// One `id@host:port` of `controller.quorum.voters`.
fn parse_quorum_voters_entry(entry: &str) -> Result<QuorumVoter, ConfigError> {
    const KEY: &str = "controller.quorum.voters";
    let malformed = || ConfigError(format!("{KEY}: entry \"{entry}\" is not of the form id@host:port"));
    let (id, address) = entry.split_once('@').ok_or_else(malformed)?;
    let digits = id.strip_prefix('-').unwrap_or(id);
    if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(malformed());
    }
    let id = match id.parse::<i64>() {
        Ok(id) if (0..=i64::from(i32::MAX)).contains(&id) => id as i32,
        // All digits (and a sign) but not a node id: negative, or too large even for an i64.
        _ => {
            return Err(ConfigError(format!(
                "{KEY}: entry \"{entry}\" has id {id}, outside 0..={}",
                i32::MAX
            )))
        }
    };
    // `[v6]:port` or `host:port`; a bare IPv6 address would leave the port ambiguous.
    let (host, port) = match address.strip_prefix('[') {
        Some(bracketed) => {
            let (host, rest) = bracketed.split_once(']').ok_or_else(malformed)?;
            (host, rest.strip_prefix(':').ok_or_else(malformed)?)
        }
        None => address.rsplit_once(':').ok_or_else(malformed)?,
    };
    if host.contains(|c: char| c.is_whitespace() || c == '@' || c == '/' || c == '[' || c == ']')
        || (host.contains(':') && !address.starts_with('['))
    {
        return Err(malformed());
    }
    if host.is_empty() {
        return Err(ConfigError(format!("{KEY}: entry \"{entry}\" has an empty host")));
    }
    let port = port.parse::<u16>().map_err(|_| {
        ConfigError(format!("{KEY}: entry \"{entry}\" has port \"{port}\", not a number in 1..=65535"))
    })?;
    if port == 0 {
        return Err(ConfigError(format!("{KEY}: entry \"{entry}\" has port 0; a voter needs a fixed port")));
    }
    Ok(QuorumVoter { id, host: host.to_string(), port })
}

impl GroupConfig {
    fn build(settings: &Settings) -> Result<GroupConfig, ConfigError> {
        let millis = |value: usize| Duration::from_millis(value as u64);
        let delay = within(
            "group.initial.rebalance.delay.ms",
            settings.group_initial_rebalance_delay_ms,
            0..=i64::MAX,
        )?;
        let offsets_retention_minutes =
            positive("offsets.retention.minutes", settings.offsets_retention_minutes)? as u64;
        let config = GroupConfig {
            initial_rebalance_delay: Duration::from_millis(delay as u64),
            session_timeout_min: millis(positive(
                "group.min.session.timeout.ms",
                settings.group_session_timeout_min_ms,
            )?),
            session_timeout_max: millis(positive(
                "group.max.session.timeout.ms",
                settings.group_session_timeout_max_ms,
            )?),
            size_max: positive("group.max.size", settings.group_size_max)?,
            offsets_partition_count: positive(
                "offsets.topic.num.partitions",
                settings.offsets_partition_count,
            )?
            .min(1000) as i32,
            offsets_replication_factor: within(
                "offsets.topic.replication.factor",
                settings.offsets_replication_factor,
                1..=i16::MAX.into(),
            )? as i16,
            offsets_retention: Duration::from_secs(offsets_retention_minutes.saturating_mul(60)),
            offsets_retention_check_interval: millis(positive(
                "offsets.retention.check.interval.ms",
                settings.offsets_retention_check_interval_ms,
            )?),
            offset_metadata_size_max: positive(
                "offset.metadata.max.bytes",
                settings.offset_metadata_size_max,
            )?,
            offsets_checkpoint_records: positive(
                "offsets.checkpoint.records",
                settings.offsets_checkpoint_records,
            )?,
        };
        if config.session_timeout_min > config.session_timeout_max {
            return Err(ConfigError(format!(
                "group.min.session.timeout.ms {} exceeds group.max.session.timeout.ms {}",
                settings.group_session_timeout_min_ms, settings.group_session_timeout_max_ms
            )));
        }
        Ok(config)
    }
}

/// `value` of `key` if it lies in `range`; otherwise an error naming the key, the value and the bound it crosses.
fn within(key: &str, value: i64, range: RangeInclusive<i64>) -> Result<i64, ConfigError> {
    if value < *range.start() {
        return Err(ConfigError(format!("{key} = {value} must be at least {}", range.start())));
    }
    if value > *range.end() {
        return Err(ConfigError(format!("{key} = {value} must be at most {}", range.end())));
    }
    Ok(value)
}

fn positive(key: &str, value: i64) -> Result<usize, ConfigError> {
    Ok(within(key, value, 1..=i64::MAX)? as usize)
}

/// Kafka's convention: `-1` means no limit.
fn optional_limit(key: &str, value: i64) -> Result<Option<u64>, ConfigError> {
    match value {
        -1 => Ok(None),
        value if value >= 0 => Ok(Some(value as u64)),
        value => Err(ConfigError(format!("{key} = {value} must be -1 (no limit) or at least 0"))),
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
    // Kafka's `PLAINTEXT://:9092`: no host binds every interface.
    let address = match address.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => address.to_string(),
    };
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

/// One parsed layer: its values under the default file's key names, and the ignored Kafka keys it set.
struct Layer {
    values: toml::Table,
    ignored: BTreeMap<String, String>,
}

/// One layer as a flat table under the default file's key names. `defaults` is the default layer, which says
/// which keys exist and each one's type; the default layer itself is read with `None`. Errors begin with `origin`.
fn parse_layer(text: &str, origin: &str, defaults: Option<&toml::Table>) -> Result<Layer, ConfigError> {
    let table: toml::Table = toml::from_str(text)
        .map_err(|error| ConfigError(format!("{origin}: {}", one_line(&error.to_string()))))?;
    let mut flat = BTreeMap::new();
    parse_layer_flatten("", table, &mut flat).map_err(|error| ConfigError(format!("{origin}: {error}")))?;
    let mut layer = Layer { values: toml::Table::new(), ignored: BTreeMap::new() };
    // The spelling the layer used for each key, to name both when two aliases set the same key.
    let mut spellings: BTreeMap<&str, String> = BTreeMap::new();
    for (name, value) in flat {
        let Some(defaults) = defaults else {
            layer.values.insert(name, value);
            continue;
        };
        if is_ignored_key(&name) {
            layer.ignored.insert(name, value_text(&value));
            continue;
        }
        let (unit_key, value) = parse_layer_unit(&name, value, origin)?;
        let key = ALIASES.iter().find(|(alias, _)| *alias == name).map_or(unit_key, |(_, key)| *key);
        let Some((key, default)) = defaults.get_key_value(key) else {
            return Err(ConfigError(format!(
                "{origin}: unknown key \"{name}\" (the closest known key is \"{}\")",
                parse_layer_closest_key(&name, defaults)
            )));
        };
        if value.type_str() != default.type_str() {
            return Err(ConfigError(format!(
                "{origin}: {name} = {value} is {}, not {} like its default {default}",
                parse_layer_kind(&value),
                parse_layer_kind(default)
            )));
        }
        if let Some(previous) = spellings.insert(key, name.clone()) {
            return Err(ConfigError(format!(
                "{origin}: \"{previous}\" and \"{name}\" both set {key}; keep one"
            )));
        }
        layer.values.insert(key.clone(), value);
    }
    Ok(layer)
}

/// A key of [`UNIT_ALIASES`] becomes its default-file key with the value converted (`log.retention.hours = 168`
/// is `log.retention.ms = 604800000`); any other key passes unchanged. Error lines name the key as written.
fn parse_layer_unit<'a>(
    name: &'a str,
    value: toml::Value,
    origin: &str,
) -> Result<(&'a str, toml::Value), ConfigError> {
    let Some((_, key, factor)) = UNIT_ALIASES.iter().find(|(alias, _, _)| *alias == name) else {
        return Ok((name, value));
    };
    let converted = match value.as_integer() {
        Some(-1) => Some(-1),
        Some(amount) if amount >= 0 => amount.checked_mul(*factor),
        _ => None,
    };
    match converted {
        Some(millis) => Ok((key, toml::Value::Integer(millis))),
        None => Err(ConfigError(format!(
            "{origin}: {name} = {value} must be -1 or a non-negative integer that fits {key} in milliseconds"
        ))),
    }
}

/// Flattens nested tables into dotted keys. Two spellings of one key in one layer (`log.segment.bytes = 1` and
/// `"log.segment.bytes" = 2`) are an error rather than a silent choice of one.
fn parse_layer_flatten(
    prefix: &str,
    table: toml::Table,
    flat: &mut BTreeMap<String, toml::Value>,
) -> Result<(), String> {
    for (key, value) in table {
        let name = if prefix.is_empty() { key } else { format!("{prefix}.{key}") };
        match value {
            toml::Value::Table(inner) => parse_layer_flatten(&name, inner, flat)?,
            value => {
                if flat.contains_key(&name) {
                    return Err(format!("{name} is set twice, once quoted and once as a dotted key"));
                }
                flat.insert(name, value);
            }
        }
    }
    Ok(())
}

/// The known key or alias fewest single-character edits away from `name`; the first in order on a tie.
fn parse_layer_closest_key<'a>(name: &str, defaults: &'a toml::Table) -> &'a str {
    let aliases = ALIASES.iter().map(|(alias, _)| *alias);
    defaults
        .keys()
        .map(String::as_str)
        .chain(aliases)
        .min_by_key(|known| edit_distance(name, known))
        .unwrap_or("")
}

/// "an integer", "a string", ...: a TOML value's type for an error line.
fn parse_layer_kind(value: &toml::Value) -> String {
    let kind = value.type_str();
    let article = if kind.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" };
    format!("{article} {kind}")
}

/// Levenshtein distance: the fewest insertions, deletions and substitutions that turn `from` into `to`.
fn edit_distance(from: &str, to: &str) -> usize {
    let to: Vec<char> = to.chars().collect();
    // `row[j]` is the distance from the prefix of `from` read so far to `to[..j]`.
    let mut row: Vec<usize> = (0..=to.len()).collect();
    for (i, from_char) in from.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, to_char) in to.iter().enumerate() {
            let substitution = diagonal + usize::from(from_char != *to_char);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[to.len()]
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY_MS: u64 = 24 * 60 * 60 * 1000;

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
        assert_eq!(config.retention_age_max, Some(Duration::from_millis(7 * DAY_MS)));
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

    /// Any key of the default file, set by a user file to its default value, is accepted and changes nothing; and
    /// the default file without any one of its keys no longer deserializes. Together with `deny_unknown_fields`
    /// this proves the file's keys are exactly `Settings`' fields, none with a default of its own in code.
    #[test]
    fn every_default_key_is_known_and_parses() {
        // The origins differ by design (a key the file sets is STATIC_BROKER_CONFIG even at its default value).
        let without_origins = |mut config: Config| {
            config.origins = ConfigOrigins::default();
            format!("{config:?}")
        };
        let builtin = without_origins(load("").unwrap());
        let defaults = parse_layer(DEFAULT_CONFIG, DEFAULT_ORIGIN, None).unwrap().values;
        for (key, value) in &defaults {
            let config =
                load(&format!("\"{key}\" = {value}")).unwrap_or_else(|error| panic!("{key}: {error}"));
            assert_eq!(without_origins(config), builtin, "{key} = {value} changed the configuration");
            let mut without = defaults.clone();
            without.remove(key);
            let result = toml::Value::Table(without).try_into::<Settings>();
            assert!(result.is_err(), "Settings has a default of its own for {key}");
        }
    }

    /// Every alias names a key of the default file and is not itself one, so no key has two homes after a merge.
    #[test]
    fn aliases_point_at_default_keys() {
        let defaults = parse_layer(DEFAULT_CONFIG, DEFAULT_ORIGIN, None).unwrap().values;
        for (alias, key) in ALIASES {
            assert!(defaults.contains_key(*key), "alias {alias} points at unknown key {key}");
            assert!(!defaults.contains_key(*alias), "alias {alias} is also a key of the default file");
        }
        assert_eq!(load("\"log.dir\" = \"/srv/sluice\"").unwrap().data_dir, PathBuf::from("/srv/sluice"));
        assert_eq!(load("\"broker.id\" = 7").unwrap().node_id, 7);
    }

    /// A file that sets one key (by any spelling) leaves every other field at the embedded default.
    #[test]
    fn one_key_in_a_file_leaves_the_rest_at_defaults() {
        let builtin = load("").unwrap();
        let expected = Config { segment_size_max: 4096, ..builtin.clone() };
        let spellings = [
            "log.segment.bytes = 4096",
            "\"log.segment.bytes\" = 4096",
            "[log]\nsegment.bytes = 4096",
            "\"segment.bytes\" = 4096",
        ];
        // The origins differ by design: they record which key the file set.
        let without_origins = |mut config: Config| {
            config.origins = ConfigOrigins::default();
            format!("{config:?}")
        };
        for text in spellings {
            let config = load(text).unwrap();
            assert!(config.origins.static_keys.contains("log.segment.bytes"), "{text}");
            assert_eq!(without_origins(config), without_origins(expected.clone()), "{text}");
        }
        let groups = GroupConfig { size_max: 5, ..builtin.groups.clone() };
        let expected = Config { groups, ..builtin };
        assert_eq!(without_origins(load("\"group.max.size\" = 5").unwrap()), without_origins(expected));
    }

    /// Each flag beats the file's value for its key; a flag not given leaves the file's value.
    #[test]
    fn flags_override_the_file() {
        let file = "listen = \"127.0.0.1:19092\"\n\"advertised.listeners\" = \"file.example:19092\"\n\
                    \"log.dirs\" = \"/file\"\nshards = 2\n\"node.id\" = 3";
        let from_file = Config::from_toml(file, &ConfigOverrides::default()).unwrap();
        assert_eq!(from_file.listen.port(), 19092);
        assert_eq!(from_file.advertised(), ("file.example".to_string(), 19092));
        assert_eq!(from_file.data_dir, PathBuf::from("/file"));
        assert_eq!(from_file.shard_count, Some(2));
        assert_eq!(from_file.node_id, 3);
        let overrides = ConfigOverrides {
            listen: Some("127.0.0.1:29092".into()),
            advertised_listener: Some("flag.example:29092".into()),
            data_dir: Some(PathBuf::from("/flag")),
            shard_count: Some(4),
            node_id: Some(5),
        };
        let from_flags = Config::from_toml(file, &overrides).unwrap();
        assert_eq!(from_flags.listen.port(), 29092);
        assert_eq!(from_flags.advertised(), ("flag.example".to_string(), 29092));
        assert_eq!(from_flags.data_dir, PathBuf::from("/flag"));
        assert_eq!(from_flags.shard_count, Some(4));
        assert_eq!(from_flags.node_id, 5);
        let one_flag = ConfigOverrides { node_id: Some(9), ..Default::default() };
        let config = Config::from_toml(file, &one_flag).unwrap();
        assert_eq!((config.node_id, config.shard_count, config.listen.port()), (9, Some(2), 19092));
        // A flag meets the same limits as the file.
        let too_many = ConfigOverrides { shard_count: Some(5000), ..Default::default() };
        let error = Config::from_toml("", &too_many).unwrap_err();
        assert_eq!(error.0, "shards = 5000 is outside 1..=1024 (or 0: one per online core)");
    }

    /// An unknown key is refused, naming it and the known key (or alias) fewest edits away.
    #[test]
    fn unknown_key_names_the_closest_known_key() {
        let cases = [
            ("log.segmnt.bytes = 5", "log.segmnt.bytes", "log.segment.bytes"),
            ("[log]\nsegmnt.bytes = 5", "log.segmnt.bytes", "log.segment.bytes"),
            ("\"num.partition\" = 5", "num.partition", "num.partitions"),
            ("\"max.mesage.bytes\" = 5", "max.mesage.bytes", "max.message.bytes"),
            ("\"groups.max.size\" = 5", "groups.max.size", "group.max.size"),
            ("listner = \"x\"", "listner", "listen"),
        ];
        for (text, unknown, closest) in cases {
            let error = load(text).unwrap_err();
            assert_eq!(
                error.0,
                format!("config: unknown key \"{unknown}\" (the closest known key is \"{closest}\")"),
                "{text}"
            );
        }
    }

    /// A bad value costs one line that names the key, the value and the limit or the expected type.
    #[test]
    fn bad_value_is_one_line_with_key_and_value() {
        let cases = [
            ("log.segment.bytes = 0", "log.segment.bytes = 0 must be at least 4096"),
            ("\"log.segment.bytes\" = 2147483648", "log.segment.bytes = 2147483648 must be at most 2147483647"),
            ("\"log.segment.bytes\" = 4095", "log.segment.bytes = 4095 must be at least 4096"),
            ("num.partitions = \"x\"", "config: num.partitions = \"x\" is a string, not an integer like its default 1"),
            ("\"log.flush.policy\" = 1", "config: log.flush.policy = 1 is an integer, not a string like its default \"fsync\""),
            ("\"log.segment.bytes\" = 1.5", "config: log.segment.bytes = 1.5 is a float, not an integer like its default 1073741824"),
            ("\"auto.create.topics.enable\" = \"yes\"", "config: auto.create.topics.enable = \"yes\" is a string, not a boolean like its default true"),
            ("\"node.id\" = 3000000000", "node.id = 3000000000 must be at most 2147483647"),
            ("\"num.partitions\" = 0", "num.partitions = 0 must be at least 1"),
            ("shards = -1", "shards = -1 is outside 1..=1024 (or 0: one per online core)"),
            ("\"default.replication.factor\" = 3", "default.replication.factor = 3: a single-node broker supports only 1"),
            ("\"log.retention.bytes\" = -2", "log.retention.bytes = -2 must be -1 (no limit) or at least 0"),
            ("\"group.initial.rebalance.delay.ms\" = -1", "group.initial.rebalance.delay.ms = -1 must be at least 0"),
            ("\"group.min.session.timeout.ms\" = 9000\n\"group.max.session.timeout.ms\" = 8000",
             "group.min.session.timeout.ms 9000 exceeds group.max.session.timeout.ms 8000"),
            ("\"message.max.bytes\" = 200000000", "message.max.bytes 200000000 exceeds socket.request.max.bytes 104857600"),
            ("\"log.dir\" = \"a\"\n\"log.dirs\" = \"b\"", "config: \"log.dir\" and \"log.dirs\" both set log.dirs; keep one"),
            ("log.segment.bytes = 1\n\"log.segment.bytes\" = 2",
             "config: log.segment.bytes is set twice, once quoted and once as a dotted key"),
        ];
        for (text, expected) in cases {
            assert_eq!(load(text).unwrap_err().0, expected, "{text}");
        }
    }

    /// An empty `advertised.listeners` (the default) means the listen address; a value is used as given.
    #[test]
    fn advertised_listener_defaults_to_the_listen_address() {
        assert_eq!(load("").unwrap().advertised_listener, None);
        assert_eq!(load("").unwrap().advertised(), ("127.0.0.1".to_string(), 9092));
        let config = load("\"advertised.listeners\" = \"PLAINTEXT://broker.example:9093\"").unwrap();
        assert_eq!(config.advertised(), ("broker.example".to_string(), 9093));
    }

    /// The connection limits (issue 13): bounded defaults, Kafka's -1 where it means "none", and a request budget
    /// that can never be smaller than the largest admissible frame.
    #[test]
    fn connection_limits_have_bounded_defaults_and_checked_values() {
        let config = load("").unwrap();
        assert_eq!(config.request_queued_size_max, Some(512 << 20));
        assert_eq!(config.connection_count_max, None);
        assert_eq!(config.connection_count_per_ip_max, i32::MAX as usize);
        assert_eq!(config.connection_idle_max, Some(Duration::from_secs(600)));
        let config = load(
            "\"queued.max.request.bytes\" = -1\n\"max.connections\" = 7\n\"max.connections.per.ip\" = 2\n\
             \"connections.max.idle.ms\" = -1",
        )
        .unwrap();
        assert_eq!(config.request_queued_size_max, None);
        assert_eq!(config.connection_count_max, Some(7));
        assert_eq!(config.connection_count_per_ip_max, 2);
        assert_eq!(config.connection_idle_max, None);
        let cases = [
            ("\"queued.max.request.bytes\" = 1048576",
             "queued.max.request.bytes = 1048576 must be -1 (no limit) or at least socket.request.max.bytes 104857600, so that every admissible request fits"),
            ("\"queued.max.request.bytes\" = 0",
             "queued.max.request.bytes = 0 must be -1 (no limit) or at least socket.request.max.bytes 104857600, so that every admissible request fits"),
            ("\"max.connections\" = 0", "max.connections = 0 must be at least 1"),
            ("\"max.connections.per.ip\" = 0", "max.connections.per.ip = 0 must be at least 1"),
            ("\"connections.max.idle.ms\" = 0", "connections.max.idle.ms = 0 must be at least 1"),
        ];
        for (text, expected) in cases {
            assert_eq!(load(text).unwrap_err().0, expected, "{text}");
        }
    }

    /// A Kafka server.properties translated to TOML starts: keys with no effect here are accepted and listed
    /// once each as ignored (the loader logs one warning line per key), unit variants of known keys are
    /// converted, and a security key is still refused, since ignoring it would weaken what the operator asked for.
    #[test]
    fn kafka_broker_keys_without_effect_are_accepted_and_listed() {
        let text = "\"delete.topic.enable\" = true\n\"log.cleaner.enable\" = false\n\
                    \"zookeeper.connect\" = \"localhost:2181\"\n\"zookeeper.connection.timeout.ms\" = 18000\n\
                    \"inter.broker.protocol.version\" = \"3.9\"\n\"num.network.threads\" = 3\n\
                    \"log.retention.hours\" = 168\n\"log.roll.hours\" = 1\n\"num.partitions\" = 3\n";
        let config = load(text).unwrap();
        let ignored: Vec<&str> = config.origins.ignored.keys().map(String::as_str).collect();
        assert_eq!(
            ignored,
            [
                "delete.topic.enable",
                "inter.broker.protocol.version",
                "log.cleaner.enable",
                "num.network.threads",
                "zookeeper.connect",
                "zookeeper.connection.timeout.ms"
            ]
        );
        assert_eq!(config.origins.ignored["zookeeper.connect"], "localhost:2181");
        assert_eq!(config.retention_age_max, Some(Duration::from_millis(7 * DAY_MS)));
        assert_eq!(config.segment_age_max, Duration::from_secs(3600));
        assert_eq!(config.partition_count_default, 3);
        assert!(config.origins.static_keys.contains("log.retention.ms"));
        assert!(config.origins.static_keys.contains("num.partitions"));
        assert!(!config.origins.static_keys.contains("log.segment.bytes"));
        assert_eq!(load("\"log.retention.hours\" = -1").unwrap().retention_age_max, None);
        let both = load("\"log.retention.hours\" = 1\n\"log.retention.ms\" = 5").unwrap_err();
        assert!(both.0.contains("both set log.retention.ms"), "{both}");
        let refused = load("\"ssl.keystore.location\" = \"/x\"").unwrap_err();
        assert!(refused.0.contains("unknown key \"ssl.keystore.location\""), "{refused}");
    }

    /// The origins say what the file and the flags set, with every key's effective value as text.
    #[test]
    fn origins_record_file_and_flag_values() {
        let overrides = ConfigOverrides { node_id: Some(4), ..Default::default() };
        let config = Config::from_toml("\"log.flush.interval.ms\" = 1000", &overrides).unwrap();
        let static_keys: Vec<&str> = config.origins.static_keys.iter().map(String::as_str).collect();
        assert_eq!(static_keys, ["log.flush.interval.ms", "node.id"]);
        assert_eq!(config.origins.values["node.id"], "4");
        assert_eq!(config.origins.values["log.flush.interval.messages"], "10000");
        assert_eq!(config.origins.values["log.flush.policy"], "fsync");
        assert!(load("").unwrap().origins.static_keys.is_empty());
    }

    /// Without `controller.quorum.voters` a node is a single-node broker as before; the broker keys take Kafka's
    /// defaults.
    #[test]
    fn cluster_keys_default_to_a_single_node() {
        let config = load("").unwrap();
        assert!(config.quorum_voters.is_empty());
        assert!(!config.is_cluster());
        assert_eq!(config.own_voter(), None);
        assert_eq!(config.broker_rack, None);
        assert_eq!(config.broker_session_timeout, Duration::from_millis(9000));
        assert_eq!(config.broker_heartbeat_interval, Duration::from_millis(2000));
        // A blank list is no list, and a negative node.id stays allowed without one.
        let config = load("\"controller.quorum.voters\" = \" \"\n\"node.id\" = -1").unwrap();
        assert!(!config.is_cluster());
    }

    /// Kafka's voter list parses in order; the node finds its own entry by node.id; the cluster keys are known
    /// keys now, not Kafka keys ignored with a warning.
    #[test]
    fn quorum_voters_parse_and_name_this_node() {
        let text = "\"node.id\" = 2\n\"controller.quorum.voters\" = \
                    \"1@127.0.0.1:19093, 2@localhost:29093,3@broker-3.example:39093\"\n\
                    \"broker.rack\" = \"rack-a\"";
        let config = load(text).unwrap();
        let voter = |id: i32, host: &str, port: u16| QuorumVoter { id, host: host.to_string(), port };
        assert_eq!(
            config.quorum_voters,
            [voter(1, "127.0.0.1", 19093), voter(2, "localhost", 29093), voter(3, "broker-3.example", 39093)]
        );
        assert!(config.is_cluster());
        assert_eq!(config.own_voter(), Some(&voter(2, "localhost", 29093)));
        assert_eq!(config.own_voter().unwrap().address(), "localhost:29093");
        assert_eq!(config.broker_rack.as_deref(), Some("rack-a"));
        assert!(config.origins.ignored.is_empty(), "{:?}", config.origins.ignored);
        assert_eq!(
            config.origins.values["controller.quorum.voters"],
            "1@127.0.0.1:19093, 2@localhost:29093,3@broker-3.example:39093"
        );
        let text = "\"node.id\" = 0\n\"controller.quorum.voters\" = \"0@127.0.0.9:9093\"";
        assert_eq!(load(text).unwrap().own_voter(), Some(&voter(0, "127.0.0.9", 9093)));
    }

    /// An IPv6 host is written in brackets; it is kept without them and bracketed again by `address`.
    #[test]
    fn quorum_voters_accept_bracketed_ipv6() {
        let text = "\"node.id\" = 1\n\"controller.quorum.voters\" = \"1@[::1]:19093,2@[fe80::1:2]:29093\"";
        let config = load(text).unwrap();
        assert_eq!(config.quorum_voters[0], QuorumVoter { id: 1, host: "::1".to_string(), port: 19093 });
        assert_eq!(config.quorum_voters[1].host, "fe80::1:2");
        let addresses: Vec<String> = config.quorum_voters.iter().map(QuorumVoter::address).collect();
        assert_eq!(addresses, ["[::1]:19093", "[fe80::1:2]:29093"]);
        // The bracketed form is what the socket address parser takes back.
        let parsed: SocketAddr = addresses[0].parse().unwrap();
        assert_eq!(parsed, "[::1]:19093".parse::<SocketAddr>().unwrap());
    }

    /// A node whose id is not a voter is a broker-only node of the cluster (a learner of the metadata log).
    #[test]
    fn node_outside_the_voters_is_a_broker_only_member() {
        let text = "\"node.id\" = 4\n\"controller.quorum.voters\" = \"1@127.0.0.1:19093,2@127.0.0.1:29093\"";
        let config = load(text).unwrap();
        assert!(config.is_cluster());
        assert_eq!(config.own_voter(), None);
        assert_eq!(config.quorum_voters.len(), 2);
    }

    /// Each bad voter list costs one line naming the entry at fault and, for a malformed one, the expected form.
    #[test]
    fn bad_quorum_voters_are_one_line_naming_the_entry() {
        let voters = |list: &str| format!("\"controller.quorum.voters\" = \"{list}\"");
        let cases = [
            (voters("1@a:1,1@b:2"), "controller.quorum.voters: voter id 1 is listed twice"),
            (voters("1@a:1,2@a:1"), "controller.quorum.voters: voters 1 and 2 have the same address a:1"),
            (voters("1@a:1,b:2"), "controller.quorum.voters: entry \"b:2\" is not of the form id@host:port"),
            (voters("1@a:1,"), "controller.quorum.voters: entry \"\" is not of the form id@host:port"),
            (voters("x@a:1"), "controller.quorum.voters: entry \"x@a:1\" is not of the form id@host:port"),
            (voters("1@a"), "controller.quorum.voters: entry \"1@a\" is not of the form id@host:port"),
            (voters("1@::1:9093"), "controller.quorum.voters: entry \"1@::1:9093\" is not of the form id@host:port"),
            (voters("1@[::1]9093"), "controller.quorum.voters: entry \"1@[::1]9093\" is not of the form id@host:port"),
            (voters("1@a b:1"), "controller.quorum.voters: entry \"1@a b:1\" is not of the form id@host:port"),
            (voters("-1@a:1"), "controller.quorum.voters: entry \"-1@a:1\" has id -1, outside 0..=2147483647"),
            (voters("2147483648@a:1"),
             "controller.quorum.voters: entry \"2147483648@a:1\" has id 2147483648, outside 0..=2147483647"),
            (voters("1@:1"), "controller.quorum.voters: entry \"1@:1\" has an empty host"),
            (voters("1@[]:1"), "controller.quorum.voters: entry \"1@[]:1\" has an empty host"),
            (voters("1@a:0"), "controller.quorum.voters: entry \"1@a:0\" has port 0; a voter needs a fixed port"),
            (voters("1@a:65536"),
             "controller.quorum.voters: entry \"1@a:65536\" has port \"65536\", not a number in 1..=65535"),
            (voters("1@a:") + "\n\"node.id\" = 1",
             "controller.quorum.voters: entry \"1@a:\" has port \"\", not a number in 1..=65535"),
            (voters("1@a:1") + "\n\"node.id\" = -1",
             "node.id = -1 must be at least 0 when controller.quorum.voters is set"),
        ];
        for (text, expected) in cases {
            assert_eq!(load(&text).unwrap_err().0, expected, "{text}");
        }
    }

    /// The heartbeat interval must be positive and below the session timeout, or a live broker gets fenced.
    #[test]
    fn broker_heartbeat_must_be_below_the_session_timeout() {
        let config =
            load("\"broker.session.timeout.ms\" = 3000\n\"broker.heartbeat.interval.ms\" = 500").unwrap();
        assert_eq!(config.broker_session_timeout, Duration::from_secs(3));
        assert_eq!(config.broker_heartbeat_interval, Duration::from_millis(500));
        let cases = [
            (
                "\"broker.heartbeat.interval.ms\" = 9000",
                "broker.heartbeat.interval.ms 9000 must be less than broker.session.timeout.ms 9000",
            ),
            (
                "\"broker.session.timeout.ms\" = 1000",
                "broker.heartbeat.interval.ms 2000 must be less than broker.session.timeout.ms 1000",
            ),
            ("\"broker.heartbeat.interval.ms\" = 0", "broker.heartbeat.interval.ms = 0 must be at least 1"),
            ("\"broker.session.timeout.ms\" = -1", "broker.session.timeout.ms = -1 must be at least 1"),
        ];
        for (text, expected) in cases {
            assert_eq!(load(text).unwrap_err().0, expected, "{text}");
        }
    }

    /// A node file as `scripts/cluster.sh` writes it, in Kafka's spelling: `listeners` and `advertised.listeners`
    /// with the `PLAINTEXT://` scheme, and Kafka's empty host for every interface.
    #[test]
    fn kafka_listeners_with_scheme_are_accepted() {
        let text = "\"node.id\" = 1\nlisteners = \"PLAINTEXT://127.0.0.1:19092\"\n\
                    \"advertised.listeners\" = \"PLAINTEXT://localhost:19092\"\n\
                    \"controller.quorum.voters\" = \"1@127.0.0.1:19093\"";
        let config = load(text).unwrap();
        assert_eq!(config.listen, "127.0.0.1:19092".parse().unwrap());
        assert_eq!(config.advertised(), ("localhost".to_string(), 19092));
        assert_eq!(
            load("listeners = \"PLAINTEXT://:19092\"").unwrap().listen,
            "0.0.0.0:19092".parse().unwrap()
        );
        assert_eq!(
            load("listeners = \"PLAINTEXT://[::1]:19092\"").unwrap().listen,
            "[::1]:19092".parse().unwrap()
        );
    }

    #[test]
    fn edit_distance_counts_single_character_edits() {
        let cases =
            [("", "", 0), ("abc", "", 3), ("", "abc", 3), ("kitten", "sitting", 3), ("flaw", "lawn", 2)];
        for (from, to, expected) in cases {
            assert_eq!(edit_distance(from, to), expected, "{from} -> {to}");
        }
    }
}
