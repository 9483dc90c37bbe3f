//! `PartitionManager`: the partition replicas one shard owns. Lives on every shard and holds only the partitions
//! that [`crate::cluster::placement::shard_for`] assigns to it; only this shard touches them. Started by the
//! server (which applies the topic table once: every owned partition is opened and its log recovered before the
//! shard serves), kept in line with each new table by [`PartitionManager::apply`], stopped by
//! [`PartitionManager::close_all`] at shutdown. Generic over the storage seam, so that a simulation runs the same
//! code on `SimStorage`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

use sluice_replication::{NodeId, ShardId, TopicPartition, Visibility};
use sluice_storage::{BatchCache, Durability, Log, LogConfig, LogRuntime, Storage, TimestampType};

use crate::cluster::partition::Partition;
use crate::cluster::placement::shard_for;
use crate::cluster::topic_table::{TimestampKind, TopicEntry, TopicSettings, TopicTable};
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

    /// Brings the owned partitions in line with `table`: opens new ones (recovering existing files), updates
    /// configs, and removes the logs of deleted topics (or of a topic re-created under a new id).
    pub async fn apply(&self, table: &TopicTable) -> Result<(), String> {
        self.apply_removals(table).await;
        for entry in table.topics.values() {
            for index in 0..entry.partition_count {
                if !self.owns(&entry.name, index) {
                    continue;
                }
                if let Some(partition) = self.get(&entry.name, index) {
                    if let Err(error) = partition.update_config(self.log_config(entry)) {
                        log::warn!("config of {}-{index}: {error}", entry.name);
                    }
                    continue;
                }
                let partition = self.open(entry, index).await?;
                let key = partition.topic_partition().clone();
                let replaced = self.partitions.borrow_mut().insert(key, partition);
                assert!(replaced.is_none(), "{}-{index} opened twice", entry.name);
            }
        }
        Ok(())
    }

    async fn apply_removals(&self, table: &TopicTable) {
        let stale: Vec<TopicPartition> = self
            .partitions
            .borrow()
            .iter()
            .filter(|(key, partition)| match table.get(&key.topic) {
                Some(entry) => {
                    entry.topic_id != partition.topic_id() || key.partition >= entry.partition_count
                }
                None => true,
            })
            .map(|(key, _)| key.clone())
            .collect();
        for key in stale {
            let removed = self.partitions.borrow_mut().remove(&key);
            if let Some(partition) = removed {
                let directory = self.directory(&key);
                if let Err(error) = partition.remove().await {
                    log::warn!("removing {}: {error}", directory.display());
                }
                let _ = std::fs::remove_dir(&directory);
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
