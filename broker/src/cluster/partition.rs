//! `Partition`: one partition replica this shard owns — its storage `Log` (private: nothing outside this file
//! touches it), the replica seam ([`ReplicaState`]: log end, durable end, high watermark and the acknowledgement
//! rule), and the idempotent producers' state.
//!
//! Produce has one entry point, [`Partition::produce`], used by the Produce handler, the shard mesh and the group
//! coordinator alike. It returns at the first phase (*sequenced*: offsets fixed, order fixed) with a [`Produced`]
//! whose [`Produced::acknowledged`] is the second (*acknowledged*: as `acks` and the flush policy demand).
//!
//! Visibility: under `log.flush.policy = "fsync"` the high watermark moves only once the data is fdatasync'd, so a
//! consumer never reads a record a crash could take back; under "interval" it moves as soon as the append is
//! sequenced (Kafka's behaviour). Consumers and the group coordinator's replay read only below it. A ListOffsets,
//! Fetch or DeleteRecords that arrives while appends are sequenced but not yet durable first waits for their flush
//! ([`Partition::execute`]), so a client reads its own acks=1 writes as it would from Kafka.

mod replicated;

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use bytes::Bytes;
use sluice_replication::partition::{FetchRequest, PartitionReplica};
use sluice_replication::{AckWait, Acks, LeaderEpoch, ReplicaState, Role, TopicPartition, Visibility};
use sluice_storage::{AppendInfo, BatchHeader, Log, LogError, Offset, ReadBound, Storage};

use crate::cluster::producer_state::{ProducerBatch, ProducerStateTable, SequenceCheck};
use crate::errors::{from_log_error, ErrorCode, KafkaError, ResponseError};
use crate::records;
use crate::sync::Notify;

/// Per partition directory: the idempotent producers' state at the last segment roll or clean shutdown.
const PRODUCER_SNAPSHOT_FILE: &str = "producer-state.snapshot";

/// How much of the log one step of the producer-state scan at open reads.
const PRODUCER_SCAN_READ_SIZE: usize = 4 << 20;

/// ListOffsets' special timestamps.
pub const OFFSET_LATEST: i64 = -1;
pub const OFFSET_EARLIEST: i64 = -2;
pub const OFFSET_MAX_TIMESTAMP: i64 = -3;
/// v8 (KIP-405): the start of the local log, which without tiered storage is the log start.
pub const OFFSET_EARLIEST_LOCAL: i64 = -4;
/// v9 (KIP-1005): the last offset in tiered storage; without it Kafka answers offset -1, epoch -1.
pub const OFFSET_LATEST_TIERED: i64 = -5;

/// A partition operation that may run on another shard (produce has its own path, [`Partition::produce`]).
#[derive(Debug)]
pub enum PartitionOp {
    Read {
        offset: Offset,
        size_max: usize,
        min_one: bool,
    },
    ListOffset {
        timestamp: i64,
    },
    /// `None`: up to the high watermark (Kafka's offset -1).
    DeleteRecords {
        offset: Option<Offset>,
    },
    Describe,
    /// A follower's Fetch (cluster mode): answered from the log end, with the replication decision.
    ReplicaRead {
        request: FetchRequest,
        size_max: usize,
    },
}

#[derive(Debug, Clone)]
pub enum PartitionReply {
    Appended {
        base_offset: Offset,
        log_append_time_ms: i64,
        log_start_offset: Offset,
    },
    /// `error` is set (with empty `batches`) for OFFSET_OUT_OF_RANGE, so that the response still carries the
    /// high watermark and log start offset the client needs to reset.
    Read {
        batches: Vec<Bytes>,
        high_watermark: Offset,
        log_start_offset: Offset,
        error: ErrorCode,
    },
    /// `offset` and `timestamp` are -1 when no record matches (Kafka's answer).
    Offset {
        offset: i64,
        timestamp: i64,
        leader_epoch: LeaderEpoch,
    },
    Deleted {
        low_watermark: Offset,
    },
    Described {
        size: u64,
        offset_lag: i64,
    },
    /// The answer to a follower's Fetch: batches from its fetch offset, or where its log diverges (KIP-320).
    ReplicaRead {
        batches: Vec<Bytes>,
        high_watermark: Offset,
        log_start_offset: Offset,
        diverging: Option<(LeaderEpoch, Offset)>,
        error: ErrorCode,
    },
}

pub type PartitionResult = Result<PartitionReply, KafkaError>;

/// One owned partition replica.
pub struct Partition<S: Storage> {
    topic_partition: TopicPartition,
    topic_id: String,
    log: Log<S>,
    replica: RefCell<ReplicaState>,
    /// Woken whenever the high watermark moves: Fetch long polling waits here.
    data_arrived: Notify,
    /// Idempotent producers' sequence state (see [`crate::cluster::producer_state`]).
    producers: RefCell<ProducerStateTable>,
    /// Held by an idempotent append from its sequence check until the producer state records it, so that a
    /// producer's pipelined batches are checked against each other in order even when the log makes an append
    /// wait (back-pressure). Appends without a producer id do not take it.
    producer_lock: glommio::sync::Semaphore,
    /// The active segment's base offset when the producer state was last snapshotted: a roll past it writes a
    /// new snapshot, so that recovery after a crash scans at most about one segment.
    snapshot_segment_base: Cell<Offset>,
    snapshot_running: Cell<bool>,
    /// A member of a cluster: it serves produce only once metadata makes it leader, and its high watermark comes
    /// from replication (see `replicated`).
    cluster_member: bool,
    /// Cluster mode: this replica's role and ISR state (sans-I/O, `sluice_replication::partition`); `None` until
    /// the metadata names this broker's current registration.
    replication: RefCell<Option<PartitionReplica>>,
    /// Woken on every append: a follower's Fetch waits for the log end to move, not the high watermark.
    log_grew: Notify,
    closed: Cell<bool>,
}

/// Phase one of a produce is done (the offsets are fixed); [`Produced::acknowledged`] is phase two.
pub struct Produced<S: Storage> {
    partition: Rc<Partition<S>>,
    info: AppendInfo,
    wait: AckWait,
    /// The leader epoch the append was sequenced in: a replicated acks=all fails if leadership moves meanwhile.
    epoch: LeaderEpoch,
    /// The broker's own records in a cluster: replicated, and fdatasync'd here too whatever the flush policy.
    durable_too: bool,
}

impl<S: Storage> Produced<S> {
    pub fn base_offset(&self) -> Offset {
        self.info.base_offset
    }

    /// Phase two: returns once the append is acknowledged as its `acks` and the flush policy demand.
    pub async fn acknowledged(self) -> PartitionResult {
        let end = self.info.last_offset.next();
        if self.wait == AckWait::HighWatermark {
            self.partition.wait_replicated(end, self.epoch).await?;
        }
        if self.wait == AckWait::Durable || self.durable_too {
            if let Err(error) = self.partition.log.wait_durable(end).await {
                // The producer hears of the failed flush; the batch stays queued and becomes durable once the
                // log writes again, and consumers must then see it even if nothing else is produced.
                self.partition.publish_when_durable(end);
                return Err(from_log_error(&error));
            }
            self.partition.durable(end);
        }
        Ok(PartitionReply::Appended {
            base_offset: self.info.base_offset,
            log_append_time_ms: self.info.append_time_ms,
            log_start_offset: self.info.log_start_offset,
        })
    }
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
            ResponseError::InvalidRecord,
            "an idempotent produce must carry exactly one batch per partition",
        ));
    }
    Ok(Some(producer_batch(header)))
}

fn producer_batch(header: &BatchHeader) -> ProducerBatch {
    ProducerBatch {
        producer_id: header.producer_id.get(),
        producer_epoch: header.producer_epoch.get(),
        first_sequence: header.base_sequence.get(),
        record_count: header.last_offset_delta.get().saturating_add(1),
    }
}

impl<S: Storage> Partition<S> {
    /// A partition over a freshly opened (recovered) log. Call [`Partition::load_producer_state`] before serving.
    /// A `cluster_member` leads nothing until metadata says so ([`Partition::apply_metadata`]).
    pub fn new(
        topic_partition: TopicPartition,
        topic_id: String,
        log: Log<S>,
        leader_epoch: LeaderEpoch,
        visibility: Visibility,
        producer_expiration_ms: i64,
        cluster_member: bool,
    ) -> Partition<S> {
        let mut replica = ReplicaState::open(leader_epoch, visibility, log.log_end_offset());
        if cluster_member {
            replica.set_replicated();
            replica.become_follower(leader_epoch);
        }
        let snapshot_segment_base = log.active_segment_base();
        let partition = Partition {
            topic_partition,
            topic_id,
            log,
            replica: RefCell::new(replica),
            data_arrived: Notify::default(),
            producers: RefCell::new(ProducerStateTable::new(producer_expiration_ms)),
            producer_lock: glommio::sync::Semaphore::new(1),
            snapshot_segment_base: Cell::new(snapshot_segment_base),
            snapshot_running: Cell::new(false),
            cluster_member,
            replication: RefCell::new(None),
            log_grew: Notify::default(),
            closed: Cell::new(false),
        };
        partition.publish_high_watermark();
        partition
    }

    pub fn topic_partition(&self) -> &TopicPartition {
        &self.topic_partition
    }

    /// The clock this partition's log runs on (the system's, or a simulation's).
    pub fn clock(&self) -> std::rc::Rc<dyn sluice_storage::Clock> {
        self.log.clock()
    }

    pub fn topic_id(&self) -> &str {
        &self.topic_id
    }

    pub fn leader_epoch(&self) -> LeaderEpoch {
        self.replica.borrow().leader_epoch()
    }

    pub fn high_watermark(&self) -> Offset {
        self.replica.borrow().high_watermark()
    }

    pub fn log_start_offset(&self) -> Offset {
        self.log.log_start_offset()
    }

    pub fn log_end_offset(&self) -> Offset {
        self.log.log_end_offset()
    }

    /// Woken whenever the high watermark moves (and when the partition goes away).
    pub fn data_arrived(&self) -> &Notify {
        &self.data_arrived
    }

    /// The one produce path. Phase one: validate, check the idempotent producer's sequence, assign offsets.
    /// Returns once the offsets are fixed; an idempotent producer's retry of a batch already written returns the
    /// offsets it was first given and writes nothing.
    pub async fn produce(self: &Rc<Self>, records: Bytes, acks: Acks) -> Result<Produced<S>, KafkaError> {
        if self.cluster_member {
            self.check_replicated_produce(acks)?;
        }
        let epoch = self.leader_epoch();
        let info = self.sequence(records).await?;
        let wait = self.replica.borrow().ack_wait(acks);
        let end = info.last_offset.next();
        let background_sync = matches!(wait, AckWait::Sequenced | AckWait::HighWatermark);
        if background_sync && self.replica.borrow().visibility() == Visibility::Durable {
            // Answered once sequenced (or replicated), but visible only once durable here: wait for the sync in
            // the background.
            self.publish_when_durable(end);
        }
        self.clone().snapshot_after_roll();
        let durable_too = acks == Acks::Durable && wait == AckWait::HighWatermark;
        Ok(Produced { partition: self.clone(), info, wait, epoch, durable_too })
    }

    async fn sequence(&self, records: Bytes) -> Result<AppendInfo, KafkaError> {
        let Some(batch) = idempotent_batch(&records)? else {
            return self.append_to_log(records).await;
        };
        let Ok(_permit) = self.producer_lock.acquire_permit(1).await else {
            return Err(KafkaError::new(ResponseError::NotLeaderOrFollower));
        };
        let now_ms = self.log.clock().now_ms();
        let check = self.producers.borrow().check(&batch, now_ms);
        let check = check.map_err(|code| {
            KafkaError::with_message(
                code,
                format!(
                    "producer {} epoch {} sequence {} refused",
                    batch.producer_id, batch.producer_epoch, batch.first_sequence
                ),
            )
        })?;
        if let SequenceCheck::Duplicate(known) = check {
            log::debug!(
                "{}: producer {} epoch {} sequences {}..={} already at offsets {}..={}: not written again",
                self.topic_partition,
                batch.producer_id,
                batch.producer_epoch,
                known.first_sequence,
                known.last_sequence,
                known.first_offset,
                known.last_offset
            );
            assert!(known.last_offset < self.log.log_end_offset().0, "a duplicate lies inside the log");
            return Ok(AppendInfo {
                base_offset: Offset(known.first_offset),
                last_offset: Offset(known.last_offset),
                append_time_ms: -1,
                log_start_offset: self.log.log_start_offset(),
            });
        }
        let info = self.append_to_log(records).await?;
        self.producers.borrow_mut().record(&batch, info.base_offset.0, info.last_offset.0, now_ms);
        Ok(info)
    }

    async fn append_to_log(&self, records: Bytes) -> Result<AppendInfo, KafkaError> {
        let epoch = self.leader_epoch();
        let info = self.log.append(records, epoch.0).await.map_err(|error| from_log_error(&error))?;
        assert!(info.base_offset <= info.last_offset, "an append covers at least one offset");
        assert!(info.last_offset < self.log.log_end_offset(), "the log end is past what was appended");
        let moved = self.replica.borrow_mut().sequenced(self.log.log_end_offset());
        if moved.is_some() {
            self.publish_high_watermark();
        }
        self.log_grew.notify_all();
        if self.cluster_member {
            self.leader_log_moved();
        }
        Ok(info)
    }

    /// Follows the partition's leader of `leader_epoch` from now on: appends come only through
    /// [`Partition::append_replicated`] and the high watermark only from the leader. (Replication will drive this;
    /// the two-node simulation does today.)
    pub fn become_follower(&self, leader_epoch: LeaderEpoch) {
        self.replica.borrow_mut().become_follower(leader_epoch);
    }

    /// Leads from `leader_epoch` on: the batches appended from now are stamped with it.
    pub fn become_leader(&self, leader_epoch: LeaderEpoch) {
        self.replica.borrow_mut().become_leader(leader_epoch);
    }

    /// A follower's append: batches copied from the leader keep the leader's offsets and epochs. Returns once they
    /// are durable here under `fsync` (a follower's progress must then mean "durable here"), then takes the
    /// leader's high watermark.
    /// The idempotent producers' state follows the copied batches, so a retry after a failover is deduplicated.
    pub async fn append_replicated(
        &self,
        records: Bytes,
        leader_high_watermark: Offset,
    ) -> Result<AppendInfo, KafkaError> {
        assert_eq!(
            self.replica.borrow().role(),
            Role::Follower,
            "{} is not a follower",
            self.topic_partition
        );
        let info =
            self.log.append_replicated(records.clone()).await.map_err(|error| from_log_error(&error))?;
        let batches: Vec<Bytes> = sluice_storage::batch::split_batches(&records).collect();
        self.load_producer_state_record(&batches, info.base_offset, self.log.clock().now_ms());
        self.replica.borrow_mut().sequenced(self.log.log_end_offset());
        let end = info.last_offset.next();
        // Under `fsync` what a follower reports in its next Fetch must be durable here; under `interval` (Kafka's
        // behaviour) it counts once written, and the log flushes on its own schedule.
        if self.replica.borrow().visibility() == Visibility::Durable {
            self.log.wait_durable(end).await.map_err(|error| from_log_error(&error))?;
            self.replica.borrow_mut().durable(end);
        }
        self.follower_high_watermark(leader_high_watermark);
        Ok(info)
    }

    /// A follower learned the leader's high watermark. A replica that was made leader while its append awaited (a
    /// reassignment completing on it, an election) ignores the old leader's figure: as leader it computes its own
    /// from the ISR. (`append_replicated` checks the role before its awaits, not after.)
    pub fn follower_high_watermark(&self, leader_high_watermark: Offset) {
        if self.replica.borrow().role() != Role::Follower {
            log::info!(
                "{}: made leader while a fetched append was in flight; the old leader's high watermark {} is ignored",
                self.topic_partition,
                leader_high_watermark
            );
            return;
        }
        if self.replica.borrow_mut().follower_high_watermark(leader_high_watermark).is_some() {
            self.publish_high_watermark();
        }
    }

    /// A follower's fetch from this leader: batches up to the log end (followers read above the high watermark).
    pub async fn read_replica(&self, offset: Offset, size_max: usize) -> Result<Vec<Bytes>, KafkaError> {
        self.log.read(offset, size_max, ReadBound::LogEnd, true).await.map_err(|error| from_log_error(&error))
    }

    /// Moves the high watermark to `end` once the log has made it durable, through failed flushes and repairs;
    /// the task ends when the log closes or truncates below `end`.
    fn publish_when_durable(self: &Rc<Self>, end: Offset) {
        let partition = self.clone();
        glommio::spawn_local(async move {
            if partition.log.wait_durable_through_failures(end).await.is_ok() {
                partition.durable(end);
            }
        })
        .detach();
    }

    /// The log is durable up to `end`: the replica may commit it.
    fn durable(&self, end: Offset) {
        let moved = self.replica.borrow_mut().durable(end);
        if moved.is_some() {
            self.publish_high_watermark();
        }
        if self.cluster_member {
            self.leader_log_moved();
        }
    }

    /// The high watermark moved: wake long polls.
    fn publish_high_watermark(&self) {
        self.data_arrived.notify_all();
    }

    pub async fn execute(&self, op: PartitionOp) -> PartitionResult {
        let settle = match op {
            PartitionOp::Describe | PartitionOp::ReplicaRead { .. } => false,
            // A fetch below the high watermark has committed data to return now: it need not wait for a sync
            // (under load every fetch would otherwise queue behind one). At or past it, it waits, so a client
            // fetching what it just wrote gets it.
            PartitionOp::Read { offset, .. } => offset >= self.high_watermark(),
            PartitionOp::ListOffset { .. } | PartitionOp::DeleteRecords { .. } => true,
        };
        if settle {
            self.settle().await;
        }
        match op {
            PartitionOp::Read { offset, size_max, min_one } => {
                Ok(self.read(offset, size_max, min_one).await?)
            }
            PartitionOp::ListOffset { timestamp } => self.list_offset(timestamp).await,
            PartitionOp::DeleteRecords { offset } => {
                let target = offset.unwrap_or_else(|| self.high_watermark());
                let low_watermark = self.delete_records(target).await?;
                Ok(PartitionReply::Deleted { low_watermark })
            }
            PartitionOp::Describe => Ok(PartitionReply::Described {
                size: self.log.size(),
                offset_lag: self.log.log_end_offset().0 - self.high_watermark().0,
            }),
            PartitionOp::ReplicaRead { request, size_max } => self.replica_read(&request, size_max).await,
        }
    }

    /// Read-your-writes: a ListOffsets, Fetch or DeleteRecords that arrives after an append was sequenced (and
    /// perhaps answered, acks=0/1) but before it is durable waits for that append's flush, so that it answers with
    /// the high watermark past it, as Kafka's single replica does, while consumers still never read what a crash
    /// could take back. Only under `fsync` visibility is anything sequenced above the high watermark; the wait is
    /// one group-commit sync (typically well under a millisecond). A log that cannot sync (poisoned, closed)
    /// answers with the high watermark it has.
    async fn settle(&self) {
        let end = self.replica.borrow().log_end();
        if self.high_watermark() >= end || self.replica.borrow().role() != Role::Leader {
            return;
        }
        match self.log.wait_durable(end).await {
            Ok(()) => self.durable(end),
            Err(error) => log::debug!("{}: read not settled at {end}: {error}", self.topic_partition),
        }
        assert!(self.high_watermark() <= self.log.log_end_offset(), "the high watermark passed the log end");
    }

    /// A consumer's read: committed batches only (below the high watermark).
    async fn read(
        &self,
        offset: Offset,
        size_max: usize,
        min_one: bool,
    ) -> Result<PartitionReply, KafkaError> {
        let (batches, error) = match self.read_committed(offset, size_max, min_one).await {
            Ok(batches) => (batches, ErrorCode::NONE),
            Err(error) if error.code == ResponseError::OffsetOutOfRange => (Vec::new(), error.code),
            Err(error) => return Err(error),
        };
        Ok(PartitionReply::Read {
            batches,
            high_watermark: self.high_watermark(),
            log_start_offset: self.log.log_start_offset(),
            error,
        })
    }

    /// Where a scan that failed at `offset` can go on: the end of the nearest corrupt range at or after it (damage
    /// found at open in durable data, kept and reported, never cut — see storage's `CorruptRange`). `None` when no
    /// such range explains the failure. Always past `offset`, so a scan that skips with it moves forward.
    pub fn past_corrupt_range(&self, offset: Offset) -> Option<Offset> {
        let report = self.log.recovery_report();
        let range = report
            .corrupt_ranges
            .iter()
            .filter(|range| range.end_offset > offset)
            .min_by_key(|range| range.base_offset)?;
        log::error!(
            "{}: scan skips offsets {} to {}: {range}",
            self.topic_partition,
            offset,
            range.end_offset
        );
        Some(range.end_offset)
    }

    /// Batches from `offset`, below the high watermark only (consumers, and the group coordinator's replay).
    pub async fn read_committed(
        &self,
        offset: Offset,
        size_max: usize,
        min_one: bool,
    ) -> Result<Vec<Bytes>, KafkaError> {
        let bound = self.high_watermark();
        let batches = self
            .log
            .read(offset, size_max, ReadBound::Below(bound), min_one)
            .await
            .map_err(|error| from_log_error(&error))?;
        if let Some(last) = batches.last().and_then(|batch| BatchHeader::parse(batch).ok()) {
            assert!(last.last_offset() < bound, "a read below {bound} returned batch {last:?}");
        }
        Ok(batches)
    }

    /// Deletes every record below `offset` (DeleteRecords, the coordinator's checkpoint). Returns the new log start.
    pub async fn delete_records(&self, offset: Offset) -> Result<Offset, KafkaError> {
        if offset > self.high_watermark() {
            return Err(from_log_error(&LogError::OffsetOutOfRange {
                offset,
                log_start: self.log.log_start_offset(),
                log_end: self.high_watermark(),
            }));
        }
        let low_watermark = self.log.delete_before(offset).await.map_err(|error| from_log_error(&error))?;
        assert!(low_watermark <= self.high_watermark(), "the log start passed the high watermark");
        self.replica.borrow_mut().log_start_moved(low_watermark);
        Ok(low_watermark)
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
                    log::warn!("{}: producer snapshot at roll not written: {error}", self.topic_partition);
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
    pub async fn load_producer_state(&self) {
        let clock = self.log.clock();
        let started = clock.now();
        let mut reported = started;
        let end = self.log.log_end_offset();
        let mut offset = self.log.log_start_offset().max(self.load_producer_state_snapshot(end));
        let mut scanned_size: u64 = 0;
        let now_ms = self.log.clock().now_ms();
        while offset < end {
            // The whole log, not only what is committed: a batch's sequence counts once it is in the log.
            let batches = match self.log.read(offset, PRODUCER_SCAN_READ_SIZE, ReadBound::LogEnd, true).await
            {
                Ok(batches) if !batches.is_empty() => batches,
                Ok(_) => break,
                Err(error) => {
                    // Damage in durable data costs only its own range: the producers after it are still loaded.
                    if let Some(next) = self.past_corrupt_range(offset) {
                        offset = next;
                        continue;
                    }
                    log::error!(
                        "{}: producer state scan stopped at offset {offset}: {error}",
                        self.topic_partition
                    );
                    break;
                }
            };
            let (next, size) = self.load_producer_state_record(&batches, offset, now_ms);
            assert!(next > offset, "the producer state scan moves forward");
            offset = next;
            scanned_size += size;
            if clock.now().duration_since(reported) >= std::time::Duration::from_secs(5) {
                reported = clock.now();
                log::info!(
                    "{}: producer state scan at offset {offset} of {end} ({} MiB)",
                    self.topic_partition,
                    scanned_size >> 20
                );
            }
            glommio::yield_if_needed().await;
        }
        let mut producers = self.producers.borrow_mut();
        producers.expire(now_ms);
        if !producers.is_empty() {
            log::info!(
                "{}: {} producers loaded from {} MiB of batch headers in {:?}",
                self.topic_partition,
                producers.len(),
                scanned_size >> 20,
                clock.now().duration_since(started)
            );
        }
    }

    /// Loads the snapshot if it is usable; returns the offset the scan continues from (0 without one).
    fn load_producer_state_snapshot(&self, end: Offset) -> Offset {
        let snapshot_path = self.log.directory().join(PRODUCER_SNAPSHOT_FILE);
        let Ok(bytes) = std::fs::read(&snapshot_path) else {
            return Offset(0);
        };
        let mut loaded = ProducerStateTable::new(self.producers.borrow().expiration_ms());
        match loaded.load_snapshot(&bytes) {
            Some(snapshot_end) if snapshot_end <= end.0 => {
                *self.producers.borrow_mut() = loaded;
                Offset(snapshot_end)
            }
            _ => {
                log::warn!(
                    "{}: unusable producer snapshot ignored; scanning the log",
                    snapshot_path.display()
                );
                Offset(0)
            }
        }
    }

    /// Records the producers of `batches` (read from `offset`); returns the offset after them and the bytes seen.
    fn load_producer_state_record(
        &self,
        batches: &[Bytes],
        mut offset: Offset,
        now_ms: i64,
    ) -> (Offset, u64) {
        let mut scanned_size = 0u64;
        let mut producers = self.producers.borrow_mut();
        for bytes in batches {
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
            let written_ms = header.max_timestamp.get().min(now_ms);
            producers.record(&producer_batch(header), header.base_offset.get(), last_offset.0, written_ms);
        }
        (offset, scanned_size)
    }

    async fn list_offset(&self, timestamp: i64) -> PartitionResult {
        let high_watermark = self.high_watermark().0;
        let epoch = self.leader_epoch();
        let offset =
            |offset: i64, timestamp: i64| PartitionReply::Offset { offset, timestamp, leader_epoch: epoch };
        let not_found = PartitionReply::Offset { offset: -1, timestamp: -1, leader_epoch: LeaderEpoch::NONE };
        let corrupt =
            |error: records::RecordError| KafkaError::with_message(ResponseError::CorruptMessage, error.0);
        let found = match timestamp {
            OFFSET_LATEST => return Ok(offset(high_watermark, -1)),
            OFFSET_EARLIEST | OFFSET_EARLIEST_LOCAL => return Ok(offset(self.log.log_start_offset().0, -1)),
            OFFSET_LATEST_TIERED => return Ok(not_found),
            OFFSET_MAX_TIMESTAMP => {
                let batch = self.log.max_timestamp_batch().await.map_err(|error| from_log_error(&error))?;
                batch.map(|batch| records::find_max_timestamp_record(&batch)).transpose().map_err(corrupt)?
            }
            timestamp if timestamp >= 0 => {
                let batch = self
                    .log
                    .find_batch_by_timestamp(timestamp)
                    .await
                    .map_err(|error| from_log_error(&error))?;
                batch
                    .map(|batch| records::find_record_at_or_after(&batch, timestamp))
                    .transpose()
                    .map_err(corrupt)?
            }
            other => {
                return Err(KafkaError::with_message(
                    ResponseError::InvalidRequest,
                    format!("timestamp {other} is not valid"),
                ))
            }
        };
        match found.flatten() {
            Some(found) if found.offset < high_watermark => {
                let start = self.log.log_start_offset().0;
                let position = if timestamp >= 0 { found.offset.max(start) } else { found.offset };
                Ok(offset(position, found.timestamp))
            }
            _ => Ok(not_found),
        }
    }

    /// Flushes, syncs and closes the log, then writes the producer snapshot (shutdown). Bounded by `timeout`: a
    /// log whose close does not finish is reported and left (its acknowledged data is already durable under the
    /// fsync policy; recovery handles the rest) instead of keeping the broker up.
    pub async fn close(&self, timeout: std::time::Duration) {
        self.closed.set(true);
        self.data_arrived.notify_all();
        let closed = futures_lite::future::or(async { Some(self.log.close().await) }, async {
            glommio::timer::sleep(timeout).await;
            None
        })
        .await;
        match closed {
            None => log::error!("closing {}: not done after {timeout:?}; left", self.topic_partition),
            Some(Err(error)) => log::error!("closing {}: {error}", self.topic_partition),
            Some(Ok(())) => {
                if let Err(error) = self.write_producer_snapshot() {
                    log::warn!("{}: producer snapshot not written: {error}", self.topic_partition);
                }
            }
        }
        self.data_arrived.notify_all();
    }

    /// Removes the log's files (the topic was deleted or re-created under a new id).
    pub async fn remove(&self) -> Result<(), LogError> {
        self.closed.set(true);
        self.data_arrived.notify_all();
        self.log.clone().remove().await
    }

    /// Expires idle producers and applies the time and size retention (called on a timer).
    pub async fn enforce_retention(&self, now_ms: i64) -> Result<(), LogError> {
        self.producers.borrow_mut().expire(now_ms);
        self.log.enforce_retention(now_ms).await?;
        self.replica.borrow_mut().log_start_moved(self.log.log_start_offset());
        Ok(())
    }

    pub fn update_config(&self, config: sluice_storage::LogConfig) -> Result<(), LogError> {
        self.log.update_config(config)
    }
}

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
