//! `PartitionManager`: the partitions this shard owns, each a storage `Log` plus the state of a cluster of one
//! (this node leads, ISR = [this node], a leader epoch, the high watermark).
//!
//! Lives on every shard; holds only the partitions that [`crate::placement::shard_for`] assigns to it. Started by
//! [`crate::shard::Shard`] (which opens every owned partition found in the topic table, recovering its log) and
//! stopped by `close_all` at shutdown. Only this shard touches these logs.
//!
//! High watermark policy: under `log.flush.policy = "fsync"` the high watermark moves to the log end only after
//! `wait_durable`, so a consumer never reads a record that a crash could still take back. Under "interval" it
//! moves as soon as the append is sequenced (Kafka's behaviour with acks=1: data may be read before it is on disk).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use sluice_storage::{
    AppendInfo, BatchCache, BatchHeader, DmaStorage, Durability, Log, LogConfig, Offset, ReadBound,
    TimestampType,
};

use crate::config::{Config, FlushPolicy};
use crate::errors::{from_log_error, ErrorCode, KafkaError};
use crate::placement::shard_for;
use crate::producer_state::{ProducerBatch, ProducerStateTable, SequenceCheck};
use crate::records;
use crate::sync::Notify;
use crate::topics::{TimestampKind, TopicEntry, TopicSettings, TopicTable};

/// Per partition directory: the idempotent producers' state at the last segment roll or clean shutdown.
const PRODUCER_SNAPSHOT_FILE: &str = "producer-state.snapshot";

/// Writes a producer snapshot atomically (temp file, fsync, rename, directory fsync); `None` removes it.
/// Blocking: called at shutdown, or on the blocking pool at a roll.
fn write_snapshot_file(directory: &std::path::Path, bytes: Option<Vec<u8>>) -> std::io::Result<()> {
    let path = directory.join(PRODUCER_SNAPSHOT_FILE);
    let Some(bytes) = bytes else {
        return match std::fs::remove_file(&path) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
            _ => Ok(()),
        };
    };
    let temporary = directory.join(format!("{PRODUCER_SNAPSHOT_FILE}.tmp"));
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&temporary, &path)?;
    std::fs::File::open(directory)?.sync_all()
}

/// How long shutdown waits for one log to flush, sync and close.
const LOG_CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// ListOffsets' special timestamps.
pub const OFFSET_LATEST: i64 = -1;
pub const OFFSET_EARLIEST: i64 = -2;
pub const OFFSET_MAX_TIMESTAMP: i64 = -3;

/// A partition operation that may run on another shard. Record bytes travel as `Bytes` (no copy).
#[derive(Debug)]
pub enum PartitionOp {
    Append { records: Bytes, acks: i16 },
    Read { offset: i64, size_max: usize, min_one: bool },
    ListOffset { timestamp: i64 },
    DeleteRecords { offset: i64 },
    Describe,
}

#[derive(Debug, Clone)]
pub enum PartitionReply {
    Appended {
        base_offset: i64,
        log_append_time_ms: i64,
        log_start_offset: i64,
    },
    /// `error` is set (with empty `batches`) for OFFSET_OUT_OF_RANGE, so that the response still carries the
    /// high watermark and log start offset the client needs to reset.
    Read {
        batches: Vec<Bytes>,
        high_watermark: i64,
        log_start_offset: i64,
        error: ErrorCode,
    },
    Offset {
        offset: i64,
        timestamp: i64,
        leader_epoch: i32,
    },
    Deleted {
        low_watermark: i64,
    },
    Described {
        size: u64,
        offset_lag: i64,
    },
}

pub type PartitionResult = Result<PartitionReply, KafkaError>;

/// One owned partition.
pub struct Partition {
    pub topic: String,
    pub index: i32,
    pub topic_id: String,
    pub log: Log<DmaStorage>,
    pub leader_epoch: Cell<i32>,
    /// Woken whenever the high watermark moves: Fetch long polling waits here.
    pub data_arrived: Notify,
    flush_policy: FlushPolicy,
    /// Idempotent producers' sequence state (see [`crate::producer_state`]).
    producers: RefCell<ProducerStateTable>,
    /// Held by an idempotent append from its sequence check until the producer state records it, so that a
    /// producer's pipelined batches are checked against each other in order even when the log makes an append
    /// wait (back-pressure). Appends without a producer id do not take it.
    producer_lock: glommio::sync::Semaphore,
    /// The active segment's base offset when the producer state was last snapshotted: a roll past it writes a
    /// new snapshot, so that recovery after a crash scans at most about one segment.
    snapshot_segment_base: Cell<Offset>,
    snapshot_running: Cell<bool>,
}

/// Attribute bit 5: a control batch (transaction markers), which carries no producer sequence.
const ATTRIBUTE_CONTROL: i16 = 1 << 5;

/// The producer fields of a produce's record set, when it is idempotent (producer id ≥ 0). Malformed input is
/// left for the log's validation to refuse; an idempotent record set must be a single batch, as in Kafka.
fn idempotent_batch(records: &[u8]) -> Result<Option<ProducerBatch>, KafkaError> {
    let Ok(header) = BatchHeader::parse(records) else {
        return Ok(None);
    };
    if header.producer_id.get() < 0 {
        return Ok(None);
    }
    if header.total_size() < records.len() {
        return Err(KafkaError::with_message(
            ErrorCode::INVALID_RECORD,
            "an idempotent produce must carry exactly one batch per partition",
        ));
    }
    Ok(Some(ProducerBatch {
        producer_id: header.producer_id.get(),
        producer_epoch: header.producer_epoch.get(),
        first_sequence: header.base_sequence.get(),
        record_count: header.last_offset_delta.get().saturating_add(1),
    }))
}

impl Partition {
    /// Phase one of a produce: validate and sequence. Returns once the offsets are fixed. An idempotent
    /// producer's retry of a batch already written returns the offsets it was first given and writes nothing.
    pub async fn append(&self, records: Bytes) -> Result<AppendInfo, KafkaError> {
        let Some(batch) = idempotent_batch(&records)? else {
            return self.append_to_log(records).await;
        };
        let Ok(_permit) = self.producer_lock.acquire_permit(1).await else {
            return Err(KafkaError::new(ErrorCode::NOT_LEADER_OR_FOLLOWER));
        };
        let now_ms = sluice_storage::now_ms();
        let check = self.producers.borrow().check(&batch, now_ms);
        match check.map_err(|code| {
            KafkaError::with_message(
                code,
                format!(
                    "producer {} epoch {} sequence {} refused",
                    batch.producer_id, batch.producer_epoch, batch.first_sequence
                ),
            )
        })? {
            SequenceCheck::Duplicate(known) => {
                log::debug!(
                    "{}-{}: producer {} epoch {} sequences {}..={} already at offsets {}..={}: not written again",
                    self.topic,
                    self.index,
                    batch.producer_id,
                    batch.producer_epoch,
                    known.first_sequence,
                    known.last_sequence,
                    known.first_offset,
                    known.last_offset
                );
                return Ok(AppendInfo {
                    base_offset: Offset(known.first_offset),
                    last_offset: Offset(known.last_offset),
                    append_time_ms: -1,
                    log_start_offset: self.log.log_start_offset(),
                });
            }
            SequenceCheck::Append => {}
        }
        let info = self.append_to_log(records).await?;
        self.producers.borrow_mut().record(&batch, info.base_offset.0, info.last_offset.0, now_ms);
        Ok(info)
    }

    async fn append_to_log(&self, records: Bytes) -> Result<AppendInfo, KafkaError> {
        let info = self
            .log
            .append(records, self.leader_epoch.get())
            .await
            .map_err(|error| from_log_error(&error))?;
        assert!(info.base_offset <= info.last_offset);
        assert!(self.log.high_watermark() <= self.log.log_end_offset());
        Ok(info)
    }

    /// Phase two: make the append visible (high watermark) and, for acks=all under the fsync policy, durable.
    pub async fn acknowledge(self: Rc<Self>, info: AppendInfo, acks: i16) -> PartitionResult {
        self.clone().snapshot_after_roll();
        let end = info.last_offset.next();
        let reply = PartitionReply::Appended {
            base_offset: info.base_offset.0,
            log_append_time_ms: info.append_time_ms,
            log_start_offset: info.log_start_offset.0,
        };
        match self.flush_policy {
            FlushPolicy::Interval => {
                self.advance_high_watermark(end);
                Ok(reply)
            }
            FlushPolicy::Fsync if acks == -1 => {
                self.log.wait_durable(end).await.map_err(|error| from_log_error(&error))?;
                self.advance_high_watermark(end);
                Ok(reply)
            }
            FlushPolicy::Fsync => {
                // acks=0/1 answer once sequenced; visibility still waits for the sync.
                let partition = self.clone();
                glommio::spawn_local(async move {
                    if partition.log.wait_durable(end).await.is_ok() {
                        partition.advance_high_watermark(end);
                    }
                })
                .detach();
                Ok(reply)
            }
        }
    }

    /// Phase two for the coordinator's own records: durable (fsynced) before the answer, whatever the flush
    /// policy, then visible.
    pub async fn acknowledge_durable(self: Rc<Self>, info: AppendInfo) -> Result<(), KafkaError> {
        let end = info.last_offset.next();
        self.log.wait_durable(end).await.map_err(|error| from_log_error(&error))?;
        self.advance_high_watermark(end);
        Ok(())
    }

    fn advance_high_watermark(&self, end: Offset) {
        if end > self.log.high_watermark() && end <= self.log.log_end_offset() {
            self.log.set_high_watermark(end);
            self.data_arrived.notify_all();
        }
    }

    pub async fn execute(&self, op: PartitionOp) -> PartitionResult {
        let log_error = |error: sluice_storage::LogError| from_log_error(&error);
        match op {
            PartitionOp::Append { .. } => Err(KafkaError::with_message(
                ErrorCode::UNKNOWN_SERVER_ERROR,
                "append must go through append()",
            )),
            PartitionOp::Read { offset, size_max, min_one } => {
                let read = self.log.read(Offset(offset), size_max, ReadBound::HighWatermark, min_one).await;
                let (batches, error) = match read {
                    Ok(batches) => (batches, ErrorCode::NONE),
                    Err(error) => {
                        let error = from_log_error(&error);
                        if error.code != ErrorCode::OFFSET_OUT_OF_RANGE {
                            return Err(error);
                        }
                        (Vec::new(), error.code)
                    }
                };
                Ok(PartitionReply::Read {
                    batches,
                    high_watermark: self.log.high_watermark().0,
                    log_start_offset: self.log.log_start_offset().0,
                    error,
                })
            }
            PartitionOp::ListOffset { timestamp } => self.list_offset(timestamp).await,
            PartitionOp::DeleteRecords { offset } => {
                let target = if offset == -1 { self.log.high_watermark() } else { Offset(offset) };
                let low_watermark = self.log.delete_before(target).await.map_err(log_error)?;
                Ok(PartitionReply::Deleted { low_watermark: low_watermark.0 })
            }
            PartitionOp::Describe => Ok(PartitionReply::Described {
                size: self.log.size(),
                offset_lag: self.log.log_end_offset().0 - self.log.high_watermark().0,
            }),
        }
    }

    /// Writes the producer state at the (closed) log's end (shutdown).
    fn write_producer_snapshot(&self) -> std::io::Result<()> {
        let bytes = (!self.producers.borrow().is_empty())
            .then(|| self.producers.borrow().encode_snapshot(self.log.log_end_offset().0));
        write_snapshot_file(self.log.directory(), bytes)
    }

    /// When the log has rolled since the last snapshot and idempotent producers are known, snapshots their state
    /// in the background: encoded under the producer lock (so it matches the log end exactly: no idempotent
    /// append is between its sequence check and its record), written on the blocking pool.
    fn snapshot_after_roll(self: Rc<Self>) {
        let active = self.log.active_segment_base();
        if active == self.snapshot_segment_base.get() || self.snapshot_running.get() {
            return;
        }
        self.snapshot_segment_base.set(active);
        if self.producers.borrow().is_empty() {
            return;
        }
        self.snapshot_running.set(true);
        glommio::spawn_local(async move {
            let bytes = match self.producer_lock.acquire_permit(1).await {
                Ok(_permit) => Some(self.producers.borrow().encode_snapshot(self.log.log_end_offset().0)),
                Err(_) => None,
            };
            if let Some(bytes) = bytes {
                let directory = self.log.directory().to_path_buf();
                let written = glommio::executor()
                    .spawn_blocking(move || write_snapshot_file(&directory, Some(bytes)))
                    .await;
                if let Err(error) = written {
                    log::warn!(
                        "{}-{}: producer snapshot at roll not written: {error}",
                        self.topic,
                        self.index
                    );
                }
            }
            self.snapshot_running.set(false);
        })
        .detach();
    }

    /// Rebuilds the producer state at open: from the last snapshot (written at each segment roll and at clean
    /// shutdown) plus the batches after it, or from the batch headers of the whole log when there is none or it
    /// lies past the recovered log end (a crash lost records it had counted). Bounded by the log's size;
    /// progress is logged every few seconds. A read error stops the scan with what was found so far.
    async fn load_producer_state(&self) {
        let started = std::time::Instant::now();
        let mut reported = started;
        let mut offset = self.log.log_start_offset();
        let end = self.log.log_end_offset();
        // A snapshot covers everything below its end offset: scan only the rest.
        let snapshot_path = self.log.directory().join(PRODUCER_SNAPSHOT_FILE);
        if let Ok(bytes) = std::fs::read(&snapshot_path) {
            let mut loaded = ProducerStateTable::new(self.producers.borrow().expiration_ms());
            match loaded.load_snapshot(&bytes) {
                Some(snapshot_end) if snapshot_end <= end.0 => {
                    offset = offset.max(sluice_storage::Offset(snapshot_end));
                    *self.producers.borrow_mut() = loaded;
                }
                _ => log::warn!(
                    "{}: unusable producer snapshot ignored; scanning the log",
                    snapshot_path.display()
                ),
            }
        }
        let mut scanned_size: u64 = 0;
        let now_ms = sluice_storage::now_ms();
        while offset < end {
            let batches = match self.log.read(offset, 4 << 20, ReadBound::LogEnd, true).await {
                Ok(batches) => batches,
                Err(error) => {
                    log::error!(
                        "{}-{}: producer state scan stopped at offset {}: {error}",
                        self.topic,
                        self.index,
                        offset.0
                    );
                    break;
                }
            };
            if batches.is_empty() {
                break;
            }
            {
                let mut producers = self.producers.borrow_mut();
                for bytes in &batches {
                    let Ok(header) = BatchHeader::parse(bytes) else {
                        continue;
                    };
                    let last_offset = header.last_offset();
                    if last_offset < offset {
                        continue;
                    }
                    scanned_size += bytes.len() as u64;
                    offset = last_offset.next();
                    if header.producer_id.get() < 0 || header.attributes.get() & ATTRIBUTE_CONTROL != 0 {
                        continue;
                    }
                    let batch = ProducerBatch {
                        producer_id: header.producer_id.get(),
                        producer_epoch: header.producer_epoch.get(),
                        first_sequence: header.base_sequence.get(),
                        record_count: header.last_offset_delta.get().saturating_add(1),
                    };
                    let written_ms = header.max_timestamp.get().min(now_ms);
                    producers.record(&batch, header.base_offset.get(), last_offset.0, written_ms);
                }
            }
            if reported.elapsed() >= std::time::Duration::from_secs(5) {
                reported = std::time::Instant::now();
                log::info!(
                    "{}-{}: producer state scan at offset {} of {} ({} MiB)",
                    self.topic,
                    self.index,
                    offset.0,
                    end.0,
                    scanned_size >> 20
                );
            }
            glommio::yield_if_needed().await;
        }
        let mut producers = self.producers.borrow_mut();
        producers.expire(now_ms);
        if !producers.is_empty() {
            log::info!(
                "{}-{}: {} producers loaded from {} MiB of batch headers in {:?}",
                self.topic,
                self.index,
                producers.len(),
                scanned_size >> 20,
                started.elapsed()
            );
        }
    }

    async fn list_offset(&self, timestamp: i64) -> PartitionResult {
        let high_watermark = self.log.high_watermark().0;
        let epoch = self.leader_epoch.get();
        let offset =
            |offset: i64, timestamp: i64| PartitionReply::Offset { offset, timestamp, leader_epoch: epoch };
        let not_found = PartitionReply::Offset { offset: -1, timestamp: -1, leader_epoch: -1 };
        let corrupt =
            |error: records::RecordError| KafkaError::with_message(ErrorCode::CORRUPT_MESSAGE, error.0);
        match timestamp {
            OFFSET_LATEST => Ok(offset(high_watermark, -1)),
            OFFSET_EARLIEST => Ok(offset(self.log.log_start_offset().0, -1)),
            OFFSET_MAX_TIMESTAMP => {
                let batch = self.log.max_timestamp_batch().await.map_err(|error| from_log_error(&error))?;
                match batch
                    .map(|batch| records::find_max_timestamp_record(&batch))
                    .transpose()
                    .map_err(corrupt)?
                {
                    Some(Some(found)) if found.offset < high_watermark => {
                        Ok(offset(found.offset, found.timestamp))
                    }
                    _ => Ok(not_found),
                }
            }
            timestamp if timestamp >= 0 => {
                let batch = self
                    .log
                    .find_batch_by_timestamp(timestamp)
                    .await
                    .map_err(|error| from_log_error(&error))?;
                let found = batch
                    .map(|batch| records::find_record_at_or_after(&batch, timestamp))
                    .transpose()
                    .map_err(corrupt)?;
                match found.flatten() {
                    Some(found) if found.offset < high_watermark => {
                        let start = self.log.log_start_offset().0;
                        Ok(offset(found.offset.max(start), found.timestamp))
                    }
                    _ => Ok(not_found),
                }
            }
            other => Err(KafkaError::with_message(
                ErrorCode::INVALID_REQUEST,
                format!("timestamp {other} is not valid"),
            )),
        }
    }
}

/// The partitions one shard owns.
pub struct PartitionManager {
    config: Arc<Config>,
    storage: DmaStorage,
    cache: BatchCache,
    shard_id: usize,
    shard_count: usize,
    partitions: RefCell<HashMap<(String, i32), Rc<Partition>>>,
}

impl PartitionManager {
    pub async fn new(
        config: Arc<Config>,
        shard_id: usize,
        shard_count: usize,
    ) -> Result<PartitionManager, String> {
        let storage = DmaStorage::new(&config.data_dir)
            .await
            .map_err(|error| format!("data directory {}: {error}", config.data_dir.display()))?;
        let cache = BatchCache::new((config.cache_size_max / shard_count).max(1 << 20));
        Ok(PartitionManager {
            config,
            storage,
            cache,
            shard_id,
            shard_count,
            partitions: RefCell::new(HashMap::new()),
        })
    }

    pub fn owns(&self, topic: &str, partition: i32) -> bool {
        shard_for(topic, partition, self.shard_count) == self.shard_id
    }

    pub fn get(&self, topic: &str, partition: i32) -> Option<Rc<Partition>> {
        self.partitions.borrow().get(&(topic.to_string(), partition)).cloned()
    }

    pub fn partition_count(&self) -> usize {
        self.partitions.borrow().len()
    }

    fn directory(&self, topic: &str, partition: i32) -> PathBuf {
        self.config.data_dir.join(format!("{topic}-{partition}"))
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
        let stale: Vec<(String, i32)> = self
            .partitions
            .borrow()
            .iter()
            .filter(|((topic, index), partition)| match table.get(topic) {
                Some(entry) => entry.topic_id != partition.topic_id || *index >= entry.partition_count,
                None => true,
            })
            .map(|(key, _)| key.clone())
            .collect();
        for key in stale {
            let removed = self.partitions.borrow_mut().remove(&key);
            if let Some(partition) = removed {
                partition.data_arrived.notify_all();
                let directory = self.directory(&key.0, key.1);
                let log = partition.log.clone();
                drop(partition);
                if let Err(error) = log.remove().await {
                    log::warn!("removing {}: {error}", directory.display());
                }
                let _ = std::fs::remove_dir(&directory);
            }
        }
        for entry in table.topics.values() {
            for index in 0..entry.partition_count {
                if !self.owns(&entry.name, index) {
                    continue;
                }
                if let Some(partition) = self.get(&entry.name, index) {
                    if let Err(error) = partition.log.update_config(self.log_config(entry)) {
                        log::warn!("config of {}-{index}: {error}", entry.name);
                    }
                    continue;
                }
                let directory = self.directory(&entry.name, index);
                let log = Log::open(
                    self.storage.clone(),
                    directory.clone(),
                    self.log_config(entry),
                    self.cache.clone(),
                )
                .await
                .map_err(|error| format!("opening partition log {}: {error}", directory.display()))?;
                let partition = Rc::new(Partition {
                    topic: entry.name.clone(),
                    index,
                    topic_id: entry.topic_id.clone(),
                    log,
                    leader_epoch: Cell::new(entry.leader_epoch),
                    data_arrived: Notify::default(),
                    flush_policy: self.config.flush_policy,
                    producers: RefCell::new(ProducerStateTable::new(
                        self.config.producer_id_expiration.as_millis().min(i64::MAX as u128) as i64,
                    )),
                    producer_lock: glommio::sync::Semaphore::new(1),
                    snapshot_segment_base: Cell::new(Offset(0)),
                    snapshot_running: Cell::new(false),
                });
                partition.snapshot_segment_base.set(partition.log.active_segment_base());
                partition.load_producer_state().await;
                self.partitions.borrow_mut().insert((entry.name.clone(), index), partition);
            }
        }
        Ok(())
    }

    /// Runs retention on every owned log (called on a timer).
    pub async fn enforce_retention(&self) {
        let logs: Vec<Rc<Partition>> = self.partitions.borrow().values().cloned().collect();
        let now_ms = sluice_storage::now_ms();
        for partition in logs {
            partition.producers.borrow_mut().expire(now_ms);
            if let Err(error) = partition.log.enforce_retention(now_ms).await {
                log::warn!("retention on {}-{}: {error}", partition.topic, partition.index);
            }
            glommio::yield_if_needed().await;
        }
    }

    /// Flushes, syncs and closes every owned log (shutdown).
    pub async fn close_all(&self) {
        let logs: Vec<Rc<Partition>> = self.partitions.borrow().values().cloned().collect();
        for partition in logs {
            // Bounded: a log whose close does not finish is reported and left (its acknowledged data is already
            // durable under the fsync policy; recovery handles the rest) instead of keeping the broker up.
            let closed = futures_lite::future::or(async { Some(partition.log.close().await) }, async {
                glommio::timer::sleep(LOG_CLOSE_TIMEOUT).await;
                None
            })
            .await;
            let Some(closed) = closed else {
                log::error!(
                    "closing {}-{}: not done after {LOG_CLOSE_TIMEOUT:?}; left",
                    partition.topic,
                    partition.index
                );
                continue;
            };
            if let Err(error) = closed {
                log::error!("closing {}-{}: {error}", partition.topic, partition.index);
            } else if let Err(error) = partition.write_producer_snapshot() {
                log::warn!("{}-{}: producer snapshot not written: {error}", partition.topic, partition.index);
            }
            partition.data_arrived.notify_all();
        }
    }
}
