//! Topic metadata and its state machine: names, topic ids, per-partition assignments (replicas and leader epoch),
//! per-topic configs. [`TopicTable`] is an immutable snapshot shared as `Arc`: shard 0 is its single writer (it
//! applies [`TopicChange`]s with [`apply_change`], persists each new version to `<data dir>/topics.toml`, then
//! hands copies to the other shards), every shard reads its copy. The state machine answers with its own
//! [`TopicTableError`]; the broker maps it to Kafka's codes in `errors.rs`. The metadata quorum replaces the
//! single writer next; the changes and their checks stay the same.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sluice_replication::{LeaderEpoch, NodeId};

use crate::config::{Config, SEGMENT_SIZE_MAX, SEGMENT_SIZE_MIN};
use crate::errors::{KafkaError, ResponseError};

/// The internal topic holding consumer groups' commits and metadata; its partitions place the groups.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

pub const TOPICS_FILE: &str = "topics.toml";
/// Kafka's limit: a topic directory `<topic>-<partition>` must fit a 255-byte file name.
pub const TOPIC_NAME_SIZE_MAX: usize = 249;
/// A bound on partitions per topic, so that one CreateTopics cannot ask for millions of directories.
pub const PARTITION_COUNT_MAX: i32 = 10_000;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TopicEntry {
    pub name: String,
    /// 32 lowercase hex digits; the topic's UUID.
    pub topic_id: String,
    pub partition_count: i32,
    /// The topic-wide leader epoch of tables written before partitions had their own: read, never written.
    #[serde(default, skip_serializing, rename = "leader_epoch")]
    legacy_leader_epoch: i32,
    /// Topic-level overrides with Kafka's names (`retention.ms`, `max.message.bytes`, ...).
    #[serde(default)]
    pub configs: BTreeMap<String, String>,
    /// One entry per partition, index = partition index (`partition_count` of them once loaded).
    #[serde(default)]
    pub partitions: Vec<PartitionAssignment>,
}

/// Where a partition lives and which leadership it is in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionAssignment {
    /// Node ids of the replicas, preferred leader first.
    pub replicas: Vec<i32>,
    /// Bumped by each leader change; stamped into the batches the leader writes.
    pub leader_epoch: i32,
    /// The current leader when the metadata quorum says (cluster mode; `-1`: none can lead). Absent in a cluster
    /// of one's `topics.toml`: the first replica leads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<i32>,
    /// The in-sync replicas (cluster mode); empty in a cluster of one, where it is the replica list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub isr: Vec<i32>,
}

impl PartitionAssignment {
    pub fn on_node(node: NodeId, leader_epoch: LeaderEpoch) -> PartitionAssignment {
        PartitionAssignment {
            replicas: vec![node.0],
            leader_epoch: leader_epoch.0,
            leader: None,
            isr: Vec::new(),
        }
    }

    pub fn leader_epoch(&self) -> LeaderEpoch {
        LeaderEpoch(self.leader_epoch)
    }

    /// The partition's leader: the quorum's choice in a cluster, the only replica in a cluster of one.
    pub fn leader(&self) -> NodeId {
        match self.leader {
            Some(leader) => NodeId(leader),
            None => self.replicas.first().map_or(NodeId::NONE, |node| NodeId(*node)),
        }
    }

    /// The in-sync replicas (the replica list in a cluster of one).
    pub fn isr(&self) -> &[i32] {
        if self.leader.is_none() {
            &self.replicas
        } else {
            &self.isr
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TopicTable {
    /// Incremented by every change; a shard ignores a table older than the one it has. In a cluster: the metadata
    /// log index the table was derived from.
    pub version: u64,
    #[serde(default)]
    pub topics: BTreeMap<String, TopicEntry>,
    /// The cluster around this broker (brokers, active controller), derived from the metadata image; `None` in a
    /// cluster of one (no `controller.quorum.voters`).
    #[serde(skip)]
    pub cluster: Option<Arc<ClusterView>>,
}

/// What the metadata quorum says about the brokers, as every shard reads it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClusterView {
    /// Every registered broker, fenced ones too (by id).
    pub brokers: BTreeMap<i32, BrokerView>,
    /// The active controller (the quorum's leader) when known.
    pub controller: Option<i32>,
    /// The image this view was derived from: replication reads partitions' epochs and brokers' registrations here.
    pub image: Arc<sluice_replication::metadata::MetadataImage>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerView {
    pub id: i32,
    pub host: String,
    pub port: u16,
    pub rack: Option<String>,
    /// A fenced broker missed its session (or has not caught up since registering): it leads nothing.
    pub fenced: bool,
}

impl ClusterView {
    /// Brokers clients may use: registered and unfenced.
    pub fn live_brokers(&self) -> impl Iterator<Item = &BrokerView> {
        self.brokers.values().filter(|broker| !broker.fenced)
    }
}

impl TopicTable {
    pub fn get(&self, name: &str) -> Option<&TopicEntry> {
        self.topics.get(name)
    }

    pub fn find_by_id(&self, topic_id: &[u8; 16]) -> Option<&TopicEntry> {
        self.topics.values().find(|entry| entry.topic_uuid() == *topic_id)
    }

    /// Reads `<data dir>/topics.toml`; a missing file is an empty table (a fresh data directory). A table written
    /// before partitions had their own assignment gets one per partition on `node`, at the topic's old epoch.
    pub fn load(data_dir: &Path, node: NodeId) -> Result<TopicTable, String> {
        let mut table = Self::load_file(data_dir)?;
        for entry in table.topics.values_mut() {
            entry.fill_assignments(node);
        }
        Ok(table)
    }

    fn load_file(data_dir: &Path) -> Result<TopicTable, String> {
        let path = data_dir.join(TOPICS_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(TopicTable::default()),
            Err(error) => return Err(format!("cannot read {}: {error}", path.display())),
        };
        let table: TopicTable = toml::from_str(&text)
            .map_err(|error| format!("{} is corrupt: {}", path.display(), error.message()))?;
        for (name, entry) in &table.topics {
            if name != &entry.name || validate_topic_name(name).is_err() || entry.partition_count < 1 {
                return Err(format!("{} is corrupt: bad entry for topic \"{name}\"", path.display()));
            }
        }
        Ok(table)
    }

    /// Writes the table atomically: a temporary file, fsync, rename over the old one, fsync the directory.
    /// Blocking file I/O on the executor thread is accepted here: it happens only on topic changes.
    pub fn save(&self, data_dir: &Path) -> Result<(), String> {
        let text =
            toml::to_string(self).map_err(|error| format!("cannot encode the topic table: {error}"))?;
        let path = data_dir.join(TOPICS_FILE);
        let temporary: PathBuf = data_dir.join(format!("{TOPICS_FILE}.tmp"));
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::File::create(&temporary)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&temporary, &path)?;
            std::fs::File::open(data_dir)?.sync_all()
        };
        write().map_err(|error| format!("cannot write {}: {error}", path.display()))
    }
}

impl TopicEntry {
    pub fn new(
        name: &str,
        partition_count: i32,
        configs: BTreeMap<String, String>,
        node: NodeId,
    ) -> TopicEntry {
        let mut entry = TopicEntry {
            name: name.to_string(),
            topic_id: new_topic_id(),
            partition_count,
            legacy_leader_epoch: 0,
            configs,
            partitions: Vec::new(),
        };
        entry.fill_assignments(node);
        entry
    }

    /// A topic as the metadata quorum describes it (cluster mode): its assignments are the quorum's.
    pub fn from_cluster(
        name: String,
        topic_id: String,
        configs: BTreeMap<String, String>,
        partitions: Vec<PartitionAssignment>,
    ) -> TopicEntry {
        TopicEntry {
            name,
            topic_id,
            partition_count: partitions.len() as i32,
            legacy_leader_epoch: 0,
            configs,
            partitions,
        }
    }

    /// Partition `index`'s assignment (`None` outside the topic).
    pub fn partition(&self, index: i32) -> Option<&PartitionAssignment> {
        usize::try_from(index).ok().and_then(|index| self.partitions.get(index))
    }

    /// The leader epoch of partition `index` (`NONE` outside the topic).
    pub fn leader_epoch(&self, index: i32) -> LeaderEpoch {
        self.partition(index).map_or(LeaderEpoch::NONE, PartitionAssignment::leader_epoch)
    }

    /// Gives every partition up to `partition_count` an assignment on `node` (new partitions, or a table from
    /// before per-partition assignments), and drops assignments past it. A cluster of one holds every replica: a
    /// data directory written under another `node.id` is re-homed to this one (its epochs kept).
    fn fill_assignments(&mut self, node: NodeId) {
        let count = self.partition_count.max(0) as usize;
        let epoch = LeaderEpoch(self.legacy_leader_epoch);
        self.partitions.truncate(count);
        for assignment in &mut self.partitions {
            if assignment.replicas != [node.0] {
                assignment.replicas = vec![node.0];
            }
        }
        while self.partitions.len() < count {
            self.partitions.push(PartitionAssignment::on_node(node, epoch));
        }
        assert_eq!(self.partitions.len(), count, "one assignment per partition of {}", self.name);
    }

    pub fn topic_uuid(&self) -> [u8; 16] {
        let mut uuid = [0u8; 16];
        for (index, byte) in uuid.iter_mut().enumerate() {
            *byte = self
                .topic_id
                .get(index * 2..index * 2 + 2)
                .and_then(|digits| u8::from_str_radix(digits, 16).ok())
                .unwrap_or(0);
        }
        uuid
    }
}

/// A random version-4 UUID as 32 hex digits. `RandomState` draws its keys from the OS's random source, which
/// avoids a dependency for sixteen bytes.
pub(crate) fn new_topic_id() -> String {
    let mut bytes = [0u8; 16];
    for half in bytes.chunks_mut(8) {
        let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
        half.copy_from_slice(&random.to_be_bytes());
    }
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Kafka's rule: 1 to 249 characters of `[a-zA-Z0-9._-]`, not "." or "..".
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > TOPIC_NAME_SIZE_MAX {
        return Err(format!("topic name length {} is outside 1..={TOPIC_NAME_SIZE_MAX}", name.len()));
    }
    if name == "." || name == ".." {
        return Err(format!("topic name \"{name}\" is reserved"));
    }
    if let Some(bad) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(format!("topic name \"{name}\" contains '{bad}'; allowed are [a-zA-Z0-9._-]"));
    }
    Ok(())
}

/// Whether a record batch's timestamps are the producer's or the broker's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimestampKind {
    CreateTime,
    LogAppendTime,
}

/// A topic's effective settings: broker defaults overridden by the topic's own configs.
#[derive(Clone, Debug, PartialEq)]
pub struct TopicSettings {
    pub segment_size_max: u64,
    pub segment_age_max: Duration,
    pub retention_age_max: Option<Duration>,
    pub retention_size_max: Option<u64>,
    pub index_interval_size: u32,
    pub message_size_max: usize,
    pub timestamp_kind: TimestampKind,
    /// `min.insync.replicas`: acks=all needs this many in-sync replicas (cluster mode).
    pub min_insync_replicas: usize,
}

/// One topic-level config key: its Kafka name, how to check a value, and the broker default as text.
pub struct TopicConfigKey {
    pub name: &'static str,
    /// The broker-level key it defaults from.
    pub broker_name: &'static str,
    pub default: fn(&Config) -> String,
    pub validate: fn(&str) -> Result<(), String>,
}

fn number_at_least(minimum: i64) -> impl Fn(&str) -> Result<(), String> {
    move |text: &str| match text.trim().parse::<i64>() {
        Ok(value) if value >= minimum => Ok(()),
        _ => Err(format!("\"{text}\" is not a number of at least {minimum}")),
    }
}

fn number_within(minimum: i64, maximum: i64) -> impl Fn(&str) -> Result<(), String> {
    move |text: &str| match text.trim().parse::<i64>() {
        Ok(value) if (minimum..=maximum).contains(&value) => Ok(()),
        _ => Err(format!("\"{text}\" is not a number between {minimum} and {maximum}")),
    }
}

fn millis(duration: Option<Duration>) -> String {
    duration.map_or("-1".to_string(), |duration| duration.as_millis().to_string())
}

/// A topic key accepted for compatibility with no effect: its Kafka default, and a check that a value is a
/// non-negative number (`number`) or anything (`text`).
macro_rules! accepted {
    ($name:expr, $broker_name:expr, $default:expr, number) => {
        TopicConfigKey {
            name: $name,
            broker_name: $broker_name,
            default: |_| $default.into(),
            validate: |text| match text.trim().parse::<f64>() {
                Ok(value) if value >= 0.0 => Ok(()),
                _ => Err(format!("\"{text}\" is not a non-negative number")),
            },
        }
    };
    ($name:expr, $broker_name:expr, $default:expr, text) => {
        TopicConfigKey {
            name: $name,
            broker_name: $broker_name,
            default: |_| $default.into(),
            validate: |_| Ok(()),
        }
    };
}

/// Every topic-level key the broker understands; DescribeConfigs lists these and AlterConfigs accepts only these.
pub const TOPIC_CONFIG_KEYS: &[TopicConfigKey] = &[
    TopicConfigKey {
        name: "cleanup.policy",
        broker_name: "log.cleanup.policy",
        default: |_| "delete".into(),
        // "compact" is accepted and keeps its contract for producers (every record needs a key) and for
        // retention (a compact-only topic is not deleted by time or size), but the log is not compacted.
        validate: |text| {
            let policies: Vec<&str> = text.split(',').map(str::trim).collect();
            if !policies.is_empty() && policies.iter().all(|policy| matches!(*policy, "delete" | "compact")) {
                Ok(())
            } else {
                Err(format!("cleanup.policy \"{text}\" is not a list of \"delete\" and \"compact\""))
            }
        },
    },
    TopicConfigKey {
        name: "retention.ms",
        broker_name: "log.retention.ms",
        default: |config| millis(config.retention_age_max),
        validate: |text| number_at_least(-1)(text),
    },
    TopicConfigKey {
        name: "retention.bytes",
        broker_name: "log.retention.bytes",
        default: |config| config.retention_size_max.map_or("-1".into(), |size| size.to_string()),
        validate: |text| number_at_least(-1)(text),
    },
    TopicConfigKey {
        name: "segment.bytes",
        broker_name: "log.segment.bytes",
        default: |config| config.segment_size_max.to_string(),
        validate: |text| number_within(SEGMENT_SIZE_MIN, SEGMENT_SIZE_MAX)(text),
    },
    TopicConfigKey {
        name: "segment.ms",
        broker_name: "log.segment.ms",
        default: |config| config.segment_age_max.as_millis().to_string(),
        validate: |text| number_at_least(1)(text),
    },
    TopicConfigKey {
        name: "max.message.bytes",
        broker_name: "message.max.bytes",
        default: |config| config.message_size_max.to_string(),
        validate: |text| number_at_least(0)(text),
    },
    TopicConfigKey {
        name: "index.interval.bytes",
        broker_name: "log.index.interval.bytes",
        default: |config| config.index_interval_size.to_string(),
        validate: |text| number_at_least(0)(text),
    },
    TopicConfigKey {
        name: "message.timestamp.type",
        broker_name: "log.message.timestamp.type",
        default: |_| "CreateTime".into(),
        validate: |text| match text {
            "CreateTime" | "LogAppendTime" => Ok(()),
            other => Err(format!("message.timestamp.type \"{other}\" is not CreateTime or LogAppendTime")),
        },
    },
    TopicConfigKey {
        name: "min.insync.replicas",
        broker_name: "min.insync.replicas",
        default: |config| config.min_insync_replicas.to_string(),
        validate: |text| number_at_least(1)(text),
    },
    TopicConfigKey {
        name: "compression.type",
        broker_name: "compression.type",
        default: |_| "producer".into(),
        // Accepted and reported, but batches are stored as the producer sent them (no recompression).
        validate: |text| match text {
            "producer" | "uncompressed" | "gzip" | "snappy" | "lz4" | "zstd" => Ok(()),
            other => Err(format!("compression.type \"{other}\" is not a codec")),
        },
    },
    // Kafka topic configs accepted for compatibility that change nothing here: message formats are always v2,
    // there is no compaction to tune, one replica, and flushing follows log.flush.policy.
    accepted!("message.format.version", "log.message.format.version", "3.0-IV1", text),
    accepted!("message.downconversion.enable", "log.message.downconversion.enable", "true", text),
    accepted!("delete.retention.ms", "log.cleaner.delete.retention.ms", "86400000", number),
    accepted!("min.compaction.lag.ms", "log.cleaner.min.compaction.lag.ms", "0", number),
    accepted!("max.compaction.lag.ms", "log.cleaner.max.compaction.lag.ms", "9223372036854775807", number),
    accepted!("min.cleanable.dirty.ratio", "log.cleaner.min.cleanable.ratio", "0.5", text),
    accepted!("file.delete.delay.ms", "log.segment.delete.delay.ms", "60000", number),
    // A topic's flush.* changes nothing (flushing follows log.flush.policy for every log), but the broker keys they
    // default from are Sluice's own thresholds, so those are what is reported, not Kafka's Long.MAX.
    TopicConfigKey {
        name: "flush.messages",
        broker_name: "log.flush.interval.messages",
        default: |config| config.flush_interval_messages.to_string(),
        validate: |text| number_at_least(0)(text),
    },
    TopicConfigKey {
        name: "flush.ms",
        broker_name: "log.flush.interval.ms",
        default: |config| config.flush_interval.as_millis().to_string(),
        validate: |text| number_at_least(0)(text),
    },
    accepted!("preallocate", "log.preallocate", "false", text),
    accepted!("segment.index.bytes", "log.index.size.max.bytes", "10485760", number),
    accepted!("segment.jitter.ms", "log.roll.jitter.ms", "0", number),
    TopicConfigKey {
        name: "unclean.leader.election.enable",
        broker_name: "unclean.leader.election.enable",
        default: |config| config.unclean_leader_election.to_string(),
        validate: |text| match text.trim().to_ascii_lowercase().as_str() {
            "true" | "false" => Ok(()),
            _ => Err(format!("\"{text}\" is not true or false")),
        },
    },
    accepted!(
        "message.timestamp.difference.max.ms",
        "log.message.timestamp.difference.max.ms",
        "9223372036854775807",
        number
    ),
];

/// Whether `cleanup.policy` includes "compact": every record produced must then carry a key.
pub fn is_compacted(configs: &BTreeMap<String, String>) -> bool {
    configs.get("cleanup.policy").is_some_and(|policy| policy.split(',').any(|p| p.trim() == "compact"))
}

fn is_compact_only(configs: &BTreeMap<String, String>) -> bool {
    is_compacted(configs)
        && configs
            .get("cleanup.policy")
            .is_some_and(|policy| policy.split(',').all(|p| p.trim() == "compact"))
}

pub fn topic_config_key(name: &str) -> Option<&'static TopicConfigKey> {
    TOPIC_CONFIG_KEYS.iter().find(|key| key.name == name)
}

/// Checks a set of topic configs; the error names the first bad key.
pub fn validate_topic_configs(configs: &BTreeMap<String, String>) -> Result<(), String> {
    for (name, value) in configs {
        let key = topic_config_key(name).ok_or_else(|| format!("unknown topic config \"{name}\""))?;
        (key.validate)(value).map_err(|error| format!("{name}: {error}"))?;
    }
    Ok(())
}

impl TopicSettings {
    pub fn resolve(config: &Config, configs: &BTreeMap<String, String>) -> TopicSettings {
        let number = |name: &str| configs.get(name).and_then(|text| text.trim().parse::<i64>().ok());
        let limit = |value: i64| if value < 0 { None } else { Some(value as u64) };
        // A compact-only topic keeps everything (Kafka never deletes it by time or size; Sluice does not compact).
        let compact_only = is_compact_only(configs);
        TopicSettings {
            segment_size_max: number("segment.bytes").map_or(config.segment_size_max, |value| {
                value.clamp(SEGMENT_SIZE_MIN, SEGMENT_SIZE_MAX) as u64
            }),
            segment_age_max: number("segment.ms")
                .map_or(config.segment_age_max, |value| Duration::from_millis(value.max(1) as u64)),
            retention_age_max: number("retention.ms")
                .map_or(config.retention_age_max, |value| limit(value).map(Duration::from_millis))
                .filter(|_| !compact_only),
            retention_size_max: number("retention.bytes")
                .map_or(config.retention_size_max, limit)
                .filter(|_| !compact_only),
            index_interval_size: number("index.interval.bytes")
                .map_or(config.index_interval_size, |value| value.clamp(0, u32::MAX as i64) as u32),
            message_size_max: number("max.message.bytes")
                .map_or(config.message_size_max, |value| value.max(0) as usize),
            timestamp_kind: match configs.get("message.timestamp.type").map(String::as_str) {
                Some("LogAppendTime") => TimestampKind::LogAppendTime,
                _ => TimestampKind::CreateTime,
            },
            min_insync_replicas: number("min.insync.replicas")
                .map_or(config.min_insync_replicas, |value| value.clamp(1, i64::from(i16::MAX)) as usize),
        }
    }
}

/// One change to the topic table.
#[derive(Debug, Clone)]
pub enum TopicChange {
    Create {
        name: String,
        partition_count: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
        /// Explicit replica lists by partition index (cluster mode; a single node takes only `[[node], ...]`,
        /// checked by the CreateTopics handler).
        assignment: Option<Vec<Vec<i32>>>,
    },
    Delete {
        name: String,
    },
    /// Grow to `partition_count` partitions; `assignment` lists the new partitions' replicas (cluster mode; a
    /// single node's are checked by the CreatePartitions handler and placed here).
    AddPartitions {
        name: String,
        partition_count: i32,
        assignment: Option<Vec<Vec<i32>>>,
    },
    /// Set (`Some`) or remove (`None`) topic configs; `replace` first clears every override (AlterConfigs).
    AlterConfigs {
        name: String,
        configs: Vec<(String, Option<String>)>,
        replace: bool,
    },
}

/// Why the table refused a change. Each carries the sentence a client sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicTableError {
    InvalidName(String),
    AlreadyExists(String),
    UnknownTopic(String),
    InvalidPartitionCount(String),
    InvalidReplicationFactor(String),
    InvalidConfig(String),
    /// The change would break an internal topic (`__consumer_offsets` places the groups).
    InternalTopic(String),
}

impl std::fmt::Display for TopicTableError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (TopicTableError::InvalidName(message)
        | TopicTableError::AlreadyExists(message)
        | TopicTableError::UnknownTopic(message)
        | TopicTableError::InvalidPartitionCount(message)
        | TopicTableError::InvalidReplicationFactor(message)
        | TopicTableError::InvalidConfig(message)
        | TopicTableError::InternalTopic(message)) = self;
        formatter.write_str(message)
    }
}

/// Applies one change to `table` (new partitions are assigned to `node`, this cluster of one), or says why not.
/// The table is unchanged when it refuses.
pub fn apply_change(
    config: &Config,
    node: NodeId,
    table: &mut TopicTable,
    change: TopicChange,
) -> Result<(), TopicTableError> {
    match change {
        TopicChange::Create { name, partition_count, replication_factor, configs, .. } => {
            validate_topic_name(&name).map_err(TopicTableError::InvalidName)?;
            if table.get(&name).is_some() {
                return Err(TopicTableError::AlreadyExists(format!("topic \"{name}\" already exists")));
            }
            let partition_count =
                if partition_count == -1 { config.partition_count_default } else { partition_count };
            if !(1..=PARTITION_COUNT_MAX).contains(&partition_count) {
                return Err(TopicTableError::InvalidPartitionCount(format!(
                    "partition count {partition_count} is outside 1..={PARTITION_COUNT_MAX}"
                )));
            }
            if replication_factor != -1 && replication_factor != 1 {
                return Err(TopicTableError::InvalidReplicationFactor(format!(
                    "replication factor {replication_factor}: this cluster has one broker"
                )));
            }
            validate_topic_configs(&configs).map_err(TopicTableError::InvalidConfig)?;
            table.topics.insert(name.clone(), TopicEntry::new(&name, partition_count, configs, node));
            Ok(())
        }
        TopicChange::Delete { name } | TopicChange::AddPartitions { name, .. } if name == OFFSETS_TOPIC => {
            Err(TopicTableError::InternalTopic(format!(
                "{OFFSETS_TOPIC} is internal: its partitions place the consumer groups"
            )))
        }
        TopicChange::Delete { name } => match table.topics.remove(&name) {
            Some(_) => Ok(()),
            None => Err(unknown_topic(&name)),
        },
        TopicChange::AddPartitions { name, partition_count, .. } => {
            let entry = table.topics.get_mut(&name).ok_or_else(|| unknown_topic(&name))?;
            if partition_count <= entry.partition_count || partition_count > PARTITION_COUNT_MAX {
                return Err(TopicTableError::InvalidPartitionCount(format!(
                    "topic \"{name}\" has {} partitions; the new count {partition_count} must be larger and at most {PARTITION_COUNT_MAX}",
                    entry.partition_count
                )));
            }
            let before = entry.partition_count;
            entry.partition_count = partition_count;
            entry.fill_assignments(node);
            assert!(entry.partitions.len() > before as usize, "partitions of {name} grew");
            Ok(())
        }
        TopicChange::AlterConfigs { name, configs, replace } => {
            let entry = table.topics.get_mut(&name).ok_or_else(|| unknown_topic(&name))?;
            let mut updated = if replace { Default::default() } else { entry.configs.clone() };
            for (key, value) in configs {
                match value {
                    Some(value) => {
                        updated.insert(key, value);
                    }
                    None => {
                        updated.remove(&key);
                    }
                }
            }
            validate_topic_configs(&updated).map_err(TopicTableError::InvalidConfig)?;
            entry.configs = updated;
            Ok(())
        }
    }
}

fn unknown_topic(name: &str) -> TopicTableError {
    TopicTableError::UnknownTopic(format!("topic \"{name}\" does not exist"))
}

/// The mapping from the topic table's refusals to Kafka's codes (CreateTopics, DeleteTopics, CreatePartitions,
/// AlterConfigs); the message is the table's sentence.
pub fn to_kafka_error(error: &TopicTableError) -> KafkaError {
    let code = match error {
        TopicTableError::InvalidName(_) | TopicTableError::InternalTopic(_) => {
            ResponseError::InvalidTopicException
        }
        TopicTableError::AlreadyExists(_) => ResponseError::TopicAlreadyExists,
        TopicTableError::UnknownTopic(_) => ResponseError::UnknownTopicOrPartition,
        TopicTableError::InvalidPartitionCount(_) => ResponseError::InvalidPartitions,
        TopicTableError::InvalidReplicationFactor(_) => ResponseError::InvalidReplicationFactor,
        TopicTableError::InvalidConfig(_) => ResponseError::InvalidConfig,
    };
    // Unknown topics were answered without a message before the table had its own errors; keep the wire the same.
    match error {
        TopicTableError::UnknownTopic(_) => KafkaError::new(code),
        _ => KafkaError::with_message(code, error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigOverrides;

    #[test]
    fn table_round_trips_through_the_file() {
        let directory = std::env::temp_dir().join(format!("sluice-topics-{}", std::process::id()));
        std::fs::create_dir_all(&directory).unwrap();
        let mut table = TopicTable::default();
        let mut configs = BTreeMap::new();
        configs.insert("retention.ms".to_string(), "1000".to_string());
        table.topics.insert("a.b-c".into(), TopicEntry::new("a.b-c", 3, configs, NodeId(1)));
        table.version = 4;
        table.save(&directory).unwrap();
        assert_eq!(TopicTable::load(&directory, NodeId(1)).unwrap(), table);
        let uuid = table.topics["a.b-c"].topic_uuid();
        assert_eq!(uuid[6] >> 4, 4, "version-4 UUID");
        assert_ne!(uuid, [0u8; 16]);
        std::fs::remove_dir_all(&directory).unwrap();
    }

    #[test]
    fn topic_names_follow_kafka_rules() {
        for good in ["a", "orders.v1", "x_y-z", &"n".repeat(249)] {
            assert!(validate_topic_name(good).is_ok(), "{good}");
        }
        for bad in ["", ".", "..", "a/b", "a b", &"n".repeat(250)] {
            assert!(validate_topic_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn settings_take_topic_overrides() {
        let config = Config::from_toml("", &ConfigOverrides::default()).unwrap();
        let mut configs = BTreeMap::new();
        configs.insert("max.message.bytes".to_string(), "100".to_string());
        configs.insert("retention.ms".to_string(), "-1".to_string());
        configs.insert("message.timestamp.type".to_string(), "LogAppendTime".to_string());
        assert!(validate_topic_configs(&configs).is_ok());
        let settings = TopicSettings::resolve(&config, &configs);
        assert_eq!(settings.message_size_max, 100);
        assert_eq!(settings.retention_age_max, None);
        assert_eq!(settings.timestamp_kind, TimestampKind::LogAppendTime);
        configs.insert("bogus".to_string(), "1".to_string());
        assert!(validate_topic_configs(&configs).is_err());
    }

    /// segment.bytes is refused outside what Kafka and the log accept, with the key, the value and the bounds.
    #[test]
    fn segment_bytes_is_bounded_by_kafka_and_the_log() {
        let check = |value: &str, expected: Result<(), String>| {
            let configs = BTreeMap::from([("segment.bytes".to_string(), value.to_string())]);
            assert_eq!(validate_topic_configs(&configs), expected, "{value}");
        };
        let refused = |value: &str| -> Result<(), String> {
            Err(format!("segment.bytes: \"{value}\" is not a number between 4096 and 2147483647"))
        };
        check("4096", Ok(()));
        check("2147483647", Ok(()));
        check("2147483648", refused("2147483648"));
        check("4095", refused("4095"));
        check("14", refused("14"));
        check("-1", refused("-1"));
        // A value stored before the bound (a table written by an older broker) is clamped, never handed to the log.
        let config = Config::from_toml("", &ConfigOverrides::default()).unwrap();
        let configs = BTreeMap::from([("segment.bytes".to_string(), "99999999999".to_string())]);
        assert_eq!(TopicSettings::resolve(&config, &configs).segment_size_max, i32::MAX as u64);
    }

    #[test]
    fn a_table_from_before_per_partition_epochs_gets_one_assignment_per_partition() {
        let directory = std::env::temp_dir().join(format!("sluice-topics-legacy-{}", std::process::id()));
        std::fs::create_dir_all(&directory).unwrap();
        let legacy = "version = 3\n[topics.t]\nname = \"t\"\ntopic_id = \"0123456789abcdef0123456789abcdef\"\npartition_count = 2\nleader_epoch = 5\n";
        std::fs::write(directory.join(TOPICS_FILE), legacy).unwrap();
        let table = TopicTable::load(&directory, NodeId(7)).unwrap();
        let entry = table.get("t").unwrap();
        assert_eq!(entry.partitions.len(), 2);
        assert_eq!(entry.leader_epoch(1), LeaderEpoch(5));
        assert_eq!(entry.partition(0).unwrap().leader(), NodeId(7));
        assert_eq!(entry.leader_epoch(2), LeaderEpoch::NONE);
        // The same directory, saved, then started under another node id: every replica moves to it, epochs kept.
        table.save(&directory).unwrap();
        let table = TopicTable::load(&directory, NodeId(9)).unwrap();
        assert_eq!(table.get("t").unwrap().partition(1).unwrap().leader(), NodeId(9));
        assert_eq!(table.get("t").unwrap().leader_epoch(1), LeaderEpoch(5));
        std::fs::remove_dir_all(&directory).unwrap();
    }

    #[test]
    fn the_state_machine_refuses_with_its_own_errors_and_leaves_the_table_unchanged() {
        let config = Config::from_toml("", &ConfigOverrides::default()).unwrap();
        let node = NodeId(1);
        let mut table = TopicTable::default();
        let create = |name: &str, partition_count: i32, replication_factor: i16| TopicChange::Create {
            name: name.to_string(),
            partition_count,
            replication_factor,
            configs: BTreeMap::new(),
            assignment: None,
        };
        assert_eq!(apply_change(&config, node, &mut table, create("t", 2, 1)), Ok(()));
        let before = table.clone();
        let refused = [
            (create("t", 2, 1), "AlreadyExists"),
            (create("a/b", 2, 1), "InvalidName"),
            (create("u", 0, 1), "InvalidPartitionCount"),
            (create("u", 1, 3), "InvalidReplicationFactor"),
            (
                TopicChange::AddPartitions { name: "t".into(), partition_count: 2, assignment: None },
                "InvalidPartitionCount",
            ),
            (
                TopicChange::AddPartitions { name: "nope".into(), partition_count: 5, assignment: None },
                "UnknownTopic",
            ),
            (TopicChange::Delete { name: OFFSETS_TOPIC.into() }, "InternalTopic"),
            (
                TopicChange::AlterConfigs {
                    name: "t".into(),
                    configs: vec![("bogus".into(), Some("1".into()))],
                    replace: false,
                },
                "InvalidConfig",
            ),
        ];
        for (change, expected) in refused {
            let error = apply_change(&config, node, &mut table, change).unwrap_err();
            assert!(format!("{error:?}").starts_with(expected), "{error:?} is not {expected}");
            assert_eq!(table, before);
        }
        apply_change(
            &config,
            node,
            &mut table,
            TopicChange::AddPartitions { name: "t".into(), partition_count: 4, assignment: None },
        )
        .unwrap();
        assert_eq!(table.get("t").unwrap().partitions.len(), 4);
        apply_change(&config, node, &mut table, TopicChange::Delete { name: "t".into() }).unwrap();
        assert!(table.get("t").is_none());
    }
}
