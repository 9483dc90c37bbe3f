//! `PartitionManager`: the partition replicas one shard owns. Lives on every shard and holds only the partitions
//! that [`crate::cluster::placement::shard_for`] assigns to it; only this shard touches them. Started by the
//! server (which applies the topic table once with [`PartitionManager::apply`]: leftovers of interrupted topic
//! changes are removed, then every owned partition is opened and its log recovered before the shard serves; one
//! that cannot be opened is left out and answers KAFKA_STORAGE_ERROR), kept in line with each new table in two
//! phases ([`PartitionManager::prepare`] opens what a change adds, [`PartitionManager::install`] serves it once
//! the table is saved, or [`PartitionManager::discard_prepared`] removes it), stopped by
//! [`PartitionManager::close_all`] at shutdown. Generic over the storage seam, so that a simulation runs the same
//! code on `SimStorage`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use sluice_replication::{NodeId, ShardId, TopicPartition, Visibility};
use sluice_storage::{BatchCache, Durability, Log, LogConfig, LogRuntime, Storage, TimestampType};

use crate::cluster::partition::Partition;
use crate::cluster::placement::shard_for;
use crate::cluster::topic_table::{
    new_topic_id, validate_topic_name, TimestampKind, TopicEntry, TopicSettings, TopicTable,
};
use crate::config::{Config, FlushPolicy};

/// How long shutdown waits for one log to flush, sync and close.
const LOG_CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How many logs shutdown closes at once. One close is a chain of dependent I/Os (the last write, an fdatasync,
/// then per index file an ftruncate on glommio's blocking-thread pool, an fdatasync and a close, then the log
/// file's ftruncate and fdatasync), so it keeps the disk at queue depth one: one after another, 2,800 closes took
/// 12.9 s. 64 at once keep an SSD's queue full (they reach their throughput around depth 32 to 64) while staying
/// within half of glommio's 128-entry ring and far below its blocking pool's 4,096-request queue, so thousands of
/// partitions never flush at once.
const LOG_CLOSE_CONCURRENCY: usize = 64;

pub struct PartitionManager<S: Storage> {
    config: Arc<Config>,
    storage: S,
    /// The clock and task spawner of every log here (the system's, or a simulation's).
    runtime: LogRuntime,
    cache: BatchCache,
    node: NodeId,
    shard: ShardId,
    shard_count: usize,
    partitions: RefCell<HashMap<TopicPartition, Rc<Partition<S>>>>,
    /// Opened by phase one of a topic change, served once the change is committed (see [`Self::prepare`]).
    prepared: RefCell<HashMap<TopicPartition, Rc<Partition<S>>>>,
    /// Owned partitions named by the table that could not be opened: topic id and why.
    failed: RefCell<HashMap<TopicPartition, (String, String)>>,
}

impl<S: Storage> PartitionManager<S> {
    pub fn new(config: Arc<Config>, storage: S, shard: ShardId, shard_count: usize) -> PartitionManager<S> {
        Self::with_runtime(config, storage, shard, shard_count, LogRuntime::default())
    }

    /// As `new`, with the clock and spawner of a simulation.
    pub fn with_runtime(
        config: Arc<Config>,
        storage: S,
        shard: ShardId,
        shard_count: usize,
        runtime: LogRuntime,
    ) -> PartitionManager<S> {
        assert!(shard.0 < shard_count, "shard {shard} of {shard_count}");
        let cache = BatchCache::new((config.cache_size_max / shard_count).max(1 << 20));
        PartitionManager {
            node: NodeId(config.node_id),
            config,
            storage,
            runtime,
            cache,
            shard,
            shard_count,
            partitions: RefCell::new(HashMap::new()),
            prepared: RefCell::new(HashMap::new()),
            failed: RefCell::new(HashMap::new()),
        }
    }

    pub fn owns(&self, topic: &str, partition: i32) -> bool {
        shard_for(topic, partition, self.shard_count) == self.shard.0
    }

    pub fn get(&self, topic: &str, partition: i32) -> Option<Rc<Partition<S>>> {
        self.partitions.borrow().get(&TopicPartition::new(topic, partition)).cloned()
    }

    pub fn partition_count(&self) -> usize {
        self.partitions.borrow().len()
    }

    /// Every owned partition (a snapshot: the map may change while the caller awaits).
    pub fn all(&self) -> Vec<Rc<Partition<S>>> {
        self.partitions.borrow().values().cloned().collect()
    }

    fn directory(&self, topic_partition: &TopicPartition) -> PathBuf {
        self.config.data_dir.join(topic_partition.to_string())
    }

    fn visibility(&self) -> Visibility {
        match self.config.flush_policy {
            FlushPolicy::Fsync => Visibility::Durable,
            FlushPolicy::Interval => Visibility::Sequenced,
        }
    }

    fn log_config(&self, entry: &TopicEntry) -> LogConfig {
        let settings = TopicSettings::resolve(&self.config, &entry.configs);
        LogConfig {
            segment_size_max: settings.segment_size_max,
            segment_age_max: settings.segment_age_max,
            retention_age_max: settings.retention_age_max,
            retention_size_max: settings.retention_size_max,
            index_interval_size: settings.index_interval_size,
            durability: match self.config.flush_policy {
                FlushPolicy::Fsync => Durability::Fsync,
                FlushPolicy::Interval => Durability::Interval {
                    bytes: self.config.flush_interval_size,
                    interval: self.config.flush_interval,
                },
            },
            timestamp_type: match settings.timestamp_kind {
                TimestampKind::CreateTime => TimestampType::CreateTime,
                TimestampKind::LogAppendTime => TimestampType::LogAppendTime,
            },
            batch_size_max: settings.message_size_max,
            segment_space: self.config.segment_space,
            ..LogConfig::default()
        }
    }

    /// Start-up: removes what an interrupted topic change left behind (see [`Self::remove_leftovers`]), then opens
    /// every owned partition of `table` (recovering existing files). A partition that cannot be opened is logged
    /// and left out, and answers KAFKA_STORAGE_ERROR (see [`Self::failure`]): one bad directory does not keep the
    /// broker from serving the rest. Never fails; the `Result` is the start-up sequence's shape.
    pub async fn apply(&self, table: &TopicTable) -> Result<(), String> {
        // In a cluster the table comes from the metadata quorum and may lag the disk at start (the image is
        // caught up after the shards load): nothing on disk is removed on its word.
        if table.cluster.is_none() {
            self.remove_leftovers(table);
        }
        self.install(table).await;
        Ok(())
    }

    /// Phase one of a topic change (shard 0 commits the table only if every shard's phase one succeeded): opens
    /// the owned partitions `table` adds and keeps them aside, not served, until [`Self::install`] serves them or
    /// [`Self::discard_prepared`] removes them. The first partition that cannot be opened fails the phase; the
    /// ones opened before it stay prepared, for the discard.
    pub async fn prepare(&self, table: &TopicTable) -> Result<(), String> {
        // Left by a change whose discard never arrived (shard 0 is the single writer, so nothing else is pending).
        self.discard_prepared().await;
        for (entry, index) in self.owned_partitions(table) {
            let key = TopicPartition::new(&entry.name, index);
            // Open already, failed at start-up, or still open under an older id (the install replaces it).
            if self.partitions.borrow().contains_key(&key) || self.failed.borrow().contains_key(&key) {
                continue;
            }
            let partition = self.open_new(entry, index).await?;
            self.prepared.borrow_mut().insert(key, partition);
        }
        Ok(())
    }

    /// Closes and removes the partitions [`Self::prepare`] opened: the change they were for was not committed.
    pub async fn discard_prepared(&self) {
        let prepared: Vec<(TopicPartition, Rc<Partition<S>>)> = self.prepared.borrow_mut().drain().collect();
        for (key, partition) in prepared {
            self.remove_partition(&key, partition).await;
        }
    }

    /// Phase two: `table` is committed. Removes the logs of deleted topics (or of a topic re-created under a new
    /// id), serves the prepared partitions, updates configs, and opens any owned partition still missing (a
    /// failure is logged and answered KAFKA_STORAGE_ERROR, as at start-up).
    pub async fn install(&self, table: &TopicTable) {
        self.apply_removals(table).await;
        let mut prepared = std::mem::take(&mut *self.prepared.borrow_mut());
        for (entry, index) in self.owned_partitions(table) {
            let key = TopicPartition::new(&entry.name, index);
            if let Some(partition) = self.get(&entry.name, index) {
                if let Err(error) = partition.update_config(self.log_config(entry)) {
                    log::warn!("config of {key}: {error}");
                }
                // In a cluster, roles and epochs come from the image (the shard applies it after the install).
                continue;
            }
            if self.failed.borrow().contains_key(&key) {
                continue;
            }
            let partition = match prepared.remove(&key) {
                Some(partition) if partition.topic_id() == entry.topic_id => partition,
                stale => {
                    if let Some(stale) = stale {
                        self.remove_partition(&key, stale).await;
                    }
                    match self.open(entry, index).await {
                        Ok(partition) => partition,
                        Err(error) => {
                            log::error!("{key} is not served: {error}");
                            self.failed.borrow_mut().insert(key, (entry.topic_id.clone(), error));
                            continue;
                        }
                    }
                }
            };
            let replaced = self.partitions.borrow_mut().insert(key, partition);
            assert!(replaced.is_none(), "{}-{index} opened twice", entry.name);
        }
        for (key, partition) in prepared {
            self.remove_partition(&key, partition).await;
        }
    }

    /// Why an owned partition named by the table is not served (it could not be opened), if it is not.
    pub fn failure(&self, topic_partition: &TopicPartition) -> Option<String> {
        self.failed.borrow().get(topic_partition).map(|(_, reason)| reason.clone())
    }

    /// The partitions of `table` this shard owns.
    fn owned_partitions<'table>(&self, table: &'table TopicTable) -> Vec<(&'table TopicEntry, i32)> {
        table
            .topics
            .values()
            .flat_map(|entry| (0..entry.partition_count).map(move |index| (entry, index)))
            .filter(|(entry, index)| self.owns(&entry.name, *index))
            // A replica of this node (in a cluster of one, every partition is).
            .filter(|(entry, index)| {
                entry
                    .partition(*index)
                    .is_some_and(|assignment| assignment.replicas.contains(&self.config.node_id))
            })
            .collect()
    }

    async fn apply_removals(&self, table: &TopicTable) {
        // In a cluster a replica the image no longer assigns here (a completed reassignment moved it) goes too:
        // the controller drops a replica only once the target replicas are in the ISR.
        let node = self.config.node_id;
        let moved_away = |key: &TopicPartition| {
            table.cluster.is_some()
                && table
                    .get(&key.topic)
                    .and_then(|entry| entry.partition(key.partition))
                    .is_some_and(|assignment| !assignment.replicas.contains(&node))
        };
        let stale: Vec<TopicPartition> = self
            .partitions
            .borrow()
            .iter()
            .filter(|(key, partition)| !names(table, key, partition.topic_id()) || moved_away(key))
            .map(|(key, _)| key.clone())
            .collect();
        for key in stale {
            let removed = self.partitions.borrow_mut().remove(&key);
            if let Some(partition) = removed {
                self.remove_partition(&key, partition).await;
            }
        }
        let failed_stale: Vec<TopicPartition> = self
            .failed
            .borrow()
            .iter()
            .filter(|(key, (topic_id, _))| !names(table, key, topic_id))
            .map(|(key, _)| key.clone())
            .collect();
        for key in failed_stale {
            self.failed.borrow_mut().remove(&key);
            let directory = self.directory(&key);
            // Only a directory: what failed to open may be a file someone else put there.
            if directory.is_dir() {
                if let Err(error) = remove_partition_directory(&self.config.data_dir, &key.to_string()) {
                    log::warn!("removing {}: {error}", directory.display());
                }
            }
        }
    }

    /// Closes a partition and removes its directory, durably first (see [`remove_partition_directory`]).
    async fn remove_partition(&self, key: &TopicPartition, partition: Rc<Partition<S>>) {
        partition.close(LOG_CLOSE_TIMEOUT).await;
        match remove_partition_directory(&self.config.data_dir, &key.to_string()) {
            Ok(()) => {}
            // Not on the machine's file system (a simulation's storage): remove the files through the storage.
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                if let Err(error) = partition.remove().await {
                    log::warn!("removing {key}: {error}");
                }
            }
            Err(error) => log::warn!("removing {}: {error}", self.directory(key).display()),
        }
    }

    /// Opens a partition for a topic change; if the open fails, a directory the open created is removed again,
    /// so a refused change leaves nothing (anything that was there before, a file in the way included, is kept).
    async fn open_new(&self, entry: &TopicEntry, index: i32) -> Result<Rc<Partition<S>>, String> {
        let key = TopicPartition::new(&entry.name, index);
        let directory = self.directory(&key);
        let existed = std::fs::symlink_metadata(&directory).is_ok();
        let opened = self.open(entry, index).await;
        if opened.is_err() && !existed && directory.is_dir() {
            if let Err(error) = remove_partition_directory(&self.config.data_dir, &key.to_string()) {
                log::warn!("removing {}: {error}", directory.display());
            }
        }
        opened
    }

    /// Start-up: removes, from the directories this shard owns, what an interrupted topic change left behind:
    /// `<topic>-<partition>.<id>-delete` directories (a removal renamed but not finished) and, once a table has
    /// been saved, partition directories the table does not name (a deletion saved but not carried out, or a
    /// creation prepared but never saved). Only directories whose names parse as one of those are touched, and an
    /// unnamed partition directory only if it holds a segment file: other files are never touched. Without a
    /// saved table (version 0: a new data directory, or a lost `topics.toml`) partition directories are kept:
    /// data is never removed on the word of a missing file.
    fn remove_leftovers(&self, table: &TopicTable) {
        let data_dir = &self.config.data_dir;
        let Ok(entries) = std::fs::read_dir(data_dir) else { return };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if !entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                continue;
            }
            let removal = match parse_leftover(&name) {
                Some(Leftover::Deleted(key)) if self.owns(&key.topic, key.partition) => {
                    std::fs::remove_dir_all(&path)
                }
                Some(Leftover::Partition(key))
                    if self.owns(&key.topic, key.partition)
                        && table.version > 0
                        && !names_index(table, &key)
                        && holds_segment(&path) =>
                {
                    remove_partition_directory(data_dir, &name)
                }
                _ => continue,
            };
            match removal {
                Ok(()) => log::warn!("removed {}: left by an interrupted topic change", path.display()),
                Err(error) => log::warn!("removing {}: {error}", path.display()),
            }
        }
    }

    async fn open(&self, entry: &TopicEntry, index: i32) -> Result<Rc<Partition<S>>, String> {
        let topic_partition = TopicPartition::new(&entry.name, index);
        let directory = self.directory(&topic_partition);
        let (storage, cache) = (self.storage.clone(), self.cache.clone());
        let log = Log::open_with_runtime(
            storage,
            directory.clone(),
            self.log_config(entry),
            cache,
            self.runtime.clone(),
        )
        .await
        .map_err(|error| format!("opening partition log {}: {error}", directory.display()))?;
        let assignment =
            entry.partition(index).ok_or_else(|| format!("{topic_partition} has no assignment"))?;
        assert!(
            assignment.replicas.contains(&self.node.0),
            "{topic_partition} is not assigned to node {}",
            self.node
        );
        let partition = Rc::new(Partition::new(
            topic_partition,
            entry.topic_id.clone(),
            log,
            assignment.leader_epoch(),
            self.visibility(),
            self.config.producer_id_expiration.as_millis().min(i64::MAX as u128) as i64,
            !self.config.quorum_voters.is_empty(),
        ));
        partition.load_producer_state().await;
        Ok(partition)
    }

    /// Runs retention on every owned log (called on a timer).
    pub async fn enforce_retention(&self) {
        let now_ms = self.runtime.clock.now_ms();
        for partition in self.all() {
            if let Err(error) = partition.enforce_retention(now_ms).await {
                log::warn!("retention on {}: {error}", partition.topic_partition());
            }
            glommio::yield_if_needed().await;
        }
    }

    /// Flushes, syncs and closes every owned log (shutdown), [`LOG_CLOSE_CONCURRENCY`] at a time, each bounded by
    /// [`LOG_CLOSE_TIMEOUT`] from its own start (a close waiting for its turn is not charged for the wait).
    pub async fn close_all(&self) {
        let started = std::time::Instant::now();
        let partitions = self.all();
        let count = partitions.len();
        let permits = Rc::new(glommio::sync::Semaphore::new(LOG_CLOSE_CONCURRENCY as u64));
        let mut closes = Vec::with_capacity(count);
        for partition in partitions {
            match permits.acquire_static_permit(1).await {
                Ok(permit) => closes.push(glommio::spawn_local(async move {
                    partition.close(LOG_CLOSE_TIMEOUT).await;
                    drop(permit);
                })),
                // The semaphore is never closed; were it, the close still happens, in line.
                Err(_) => partition.close(LOG_CLOSE_TIMEOUT).await,
            }
        }
        for close in closes {
            close.await;
        }
        log::info!("shard {}: closed {count} logs in {:?}", self.shard, started.elapsed());
    }
}

/// Whether `table` names partition `key` of the topic incarnation `topic_id`.
fn names(table: &TopicTable, key: &TopicPartition, topic_id: &str) -> bool {
    table
        .get(&key.topic)
        .is_some_and(|entry| entry.topic_id == topic_id && key.partition < entry.partition_count)
}

/// Whether `table` names partition `key`, whatever the incarnation.
fn names_index(table: &TopicTable, key: &TopicPartition) -> bool {
    table.get(&key.topic).is_some_and(|entry| key.partition < entry.partition_count)
}

/// A directory in the data directory that start-up may remove.
#[derive(Debug, PartialEq, Eq)]
enum Leftover {
    /// `<topic>-<partition>.<32 hex digits>-delete`: marked for deletion.
    Deleted(TopicPartition),
    /// `<topic>-<partition>`, exactly as the broker names a partition directory.
    Partition(TopicPartition),
}

fn parse_leftover(name: &str) -> Option<Leftover> {
    if let Some(stem) = name.strip_suffix(DELETED_SUFFIX) {
        let (partition_name, id) = stem.rsplit_once('.')?;
        if id.len() != 32 || !id.bytes().all(|byte| byte.is_ascii_hexdigit()) {
            return None;
        }
        return parse_partition_directory(partition_name).map(Leftover::Deleted);
    }
    parse_partition_directory(name).map(Leftover::Partition)
}

/// `<topic>-<partition>` with a valid topic name and a partition index written as the broker writes it.
fn parse_partition_directory(name: &str) -> Option<TopicPartition> {
    let (topic, index) = name.rsplit_once('-')?;
    validate_topic_name(topic).ok()?;
    let partition: i32 = index.parse().ok().filter(|partition| *partition >= 0)?;
    let key = TopicPartition::new(topic, partition);
    (key.to_string() == name).then_some(key)
}

/// Whether `directory` holds a segment file (`<20 digits>.log`): the mark of a partition log.
fn holds_segment(directory: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(directory) else { return false };
    entries.flatten().any(|entry| {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        name.strip_suffix(".log")
            .is_some_and(|stem| stem.len() == 20 && stem.bytes().all(|byte| byte.is_ascii_digit()))
    })
}

/// Kafka's suffix for a partition directory being deleted (`<topic>-<partition>.<uuid>-delete`).
const DELETED_SUFFIX: &str = "-delete";

/// Removes `<data dir>/<name>` durably first: it is renamed to `<name>.<random id>-delete` and the data directory
/// synced before anything in it is removed. A crash then leaves either the whole directory under its name or a
/// directory marked for deletion (start-up removes it), never a half-removed partition under the name a topic
/// re-created later would open. Blocking file-system calls on the executor thread are accepted here: they
/// happen only on topic changes and at start-up, as the table's own save does.
fn remove_partition_directory(data_dir: &Path, name: &str) -> std::io::Result<()> {
    let directory = data_dir.join(name);
    let deleted = data_dir.join(format!("{name}.{}{DELETED_SUFFIX}", new_topic_id()));
    std::fs::rename(&directory, &deleted)?;
    std::fs::File::open(data_dir)?.sync_all()?;
    std::fs::remove_dir_all(&deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Start-up removes only what parses exactly as a partition directory or one marked for deletion.
    #[test]
    fn leftover_names_parse_only_as_the_broker_writes_them() {
        let partition = |topic: &str, index| Some(Leftover::Partition(TopicPartition::new(topic, index)));
        let deleted = |topic: &str, index| Some(Leftover::Deleted(TopicPartition::new(topic, index)));
        let id = "0123456789abcdef0123456789ABCDEF";
        let cases = [
            ("orders-0".to_string(), partition("orders", 0)),
            ("a.b-c-12".to_string(), partition("a.b-c", 12)),
            (format!("orders-3.{id}-delete"), deleted("orders", 3)),
            (format!("a.b-7.{id}-delete"), deleted("a.b", 7)),
            ("orders".to_string(), None),
            ("orders-".to_string(), None),
            ("orders-01".to_string(), None),
            ("orders-+1".to_string(), None),
            ("orders-2147483648".to_string(), None),
            ("-0".to_string(), None),
            ("a b-0".to_string(), None),
            ("orders-3.0123-delete".to_string(), None),
            (format!("orders.{id}-delete"), None),
            (format!("orders-3.{id}-deleted"), None),
            ("producer-ids".to_string(), None),
            (".sluice-dma-probe".to_string(), None),
            ("topics.toml".to_string(), None),
        ];
        for (name, expected) in cases {
            assert_eq!(parse_leftover(&name), expected, "{name}");
        }
    }

    /// A removal renames first, so that nothing is ever half-removed under the partition's own name.
    #[test]
    fn a_partition_directory_is_removed_through_a_delete_name() {
        let data_dir = std::env::temp_dir().join(format!("sluice-manager-remove-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data_dir);
        std::fs::create_dir_all(data_dir.join("t-0")).unwrap();
        std::fs::write(data_dir.join("t-0").join("00000000000000000000.log"), b"x").unwrap();
        assert!(holds_segment(&data_dir.join("t-0")));
        remove_partition_directory(&data_dir, "t-0").unwrap();
        assert_eq!(
            std::fs::read_dir(&data_dir).unwrap().count(),
            0,
            "nothing left, not even the -delete name"
        );
        let missing = remove_partition_directory(&data_dir, "t-0").unwrap_err();
        assert_eq!(missing.kind(), std::io::ErrorKind::NotFound);
        std::fs::remove_dir_all(&data_dir).unwrap();
    }
}
