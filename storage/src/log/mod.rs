//! The partition log: sequencing, the write-behind flusher with group commit, reads, lookups, truncation,
//! retention and recovery.
//!
//! A `Log` lives on the shard that owns the partition and is shared there by `Rc`. `append` sequences batches in
//! memory (offsets assigned, order fixed) and returns; one flusher task per log then writes everything pending in
//! one go with direct I/O and, under the fsync policy, one fdatasync — every append that arrived meanwhile rides
//! along (group commit). `wait_durable` waits for that. Truncation, deletion, retention and close are commands
//! the flusher runs between flushes, so only one task ever changes files.
//!
//! This file holds the `Log` type, its settings, errors and shared state, and its opening, accessors and closing;
//! each concern's part of the public API sits in its own file beside it: `append.rs` (append, append_replicated,
//! wait_durable), `read.rs` (read and the timestamp lookups), `retention.rs` (roll, truncate_to, delete_before,
//! enforce_retention), and the internals `flusher.rs`, `read_ahead.rs`, `recovery.rs`, `checkpoint.rs`.

mod append;
mod checkpoint;
mod flusher;
mod read;
mod read_ahead;
mod recovery;
mod repair;
mod retention;

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::batch::BatchError;
use crate::cache::BatchCache;
use crate::epoch::{EpochEntry, LeaderEpochCache};
use crate::io::Storage;
use crate::notify::Notify;
use crate::runtime::{Clock, LogRuntime};
use crate::segment::Segment;
use crate::types::Offset;

use crate::invariant::Invariant;
use flusher::run_flusher;
use read_ahead::{forget_read_ahead, ReadAhead};
use recovery::{open_leader_epochs, open_segments};

/// When appended data becomes durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// `fsync`: every flush ends with an fdatasync, and `wait_durable` returns after it (Redpanda's default).
    Fsync,
    /// `interval`: data is written behind and fdatasync'd once `bytes` have accumulated or `interval` has passed,
    /// whichever is first (Kafka's `log.flush.interval.*` model). `wait_durable` still forces a sync.
    Interval { bytes: u64, interval: Duration },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimestampType {
    CreateTime,
    LogAppendTime,
}

/// Per-log settings; Kafka's names in the comments.
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// `segment.bytes`: a segment is rolled before it would grow past this.
    pub segment_size_max: u64,
    /// `segment.ms`: a segment older than this is rolled at the next append.
    pub segment_age_max: Duration,
    /// `retention.ms` (None = -1, unlimited).
    pub retention_age_max: Option<Duration>,
    /// `retention.bytes` (None = -1, unlimited).
    pub retention_size_max: Option<u64>,
    /// `index.interval.bytes`.
    pub index_interval_size: u32,
    pub durability: Durability,
    /// `message.timestamp.type`.
    pub timestamp_type: TimestampType,
    /// `max.message.bytes`: the largest batch accepted.
    pub batch_size_max: usize,
    /// Appends wait (back-pressure) while this many bytes are sequenced but not yet written.
    pub unflushed_size_max: usize,
    /// Largest single direct-I/O write.
    pub write_size_max: usize,
    /// How segment files get their space ahead of the data (see ARCHITECTURE.md, "segment space").
    pub segment_space: SegmentSpace,
}

impl LogConfig {
    /// Checks the limits the log relies on; the message names the setting.
    pub fn validate(&self) -> Result<(), String> {
        if self.segment_size_max < 4096 || self.segment_size_max > i32::MAX as u64 {
            return Err(format!(
                "segment.bytes {} must be between 4096 and {}",
                self.segment_size_max,
                i32::MAX
            ));
        }
        if self.write_size_max < crate::BLOCK_SIZE || !self.write_size_max.is_multiple_of(crate::BLOCK_SIZE) {
            return Err(format!("write size {} must be a positive multiple of 4096", self.write_size_max));
        }
        if self.index_interval_size == 0 {
            return Err("index.interval.bytes must be positive".into());
        }
        if self.batch_size_max == 0 || self.unflushed_size_max == 0 {
            return Err("max.message.bytes and the unflushed bound must be positive".into());
        }
        Ok(())
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        const DAY: Duration = Duration::from_secs(24 * 3600);
        LogConfig {
            segment_size_max: 1 << 30,
            segment_age_max: 7 * DAY,
            retention_age_max: Some(7 * DAY),
            retention_size_max: None,
            index_interval_size: 4096,
            durability: Durability::Fsync,
            timestamp_type: TimestampType::CreateTime,
            // Kafka's default message.max.bytes: 1 MiB plus the 12-byte log overhead.
            batch_size_max: 1_048_588,
            unflushed_size_max: 64 << 20,
            write_size_max: 1 << 20,
            segment_space: SegmentSpace::Grow,
        }
    }
}

/// How a segment file's space is prepared ahead of the writes that fill it. The choice matters for fsync
/// latency on ext4: an fdatasync after a write that grows the file or fills fallocate'd (unwritten) extents
/// must commit a journal transaction, while one after overwriting already-written blocks need not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentSpace {
    /// Nothing: every write past the end grows the file.
    Grow,
    /// fallocate `step` bytes at a time ahead of the data.
    Fallocate { step: u64 },
    /// Write zeros `step` bytes at a time ahead of the data and sync them, so data writes become overwrites.
    Prewrite { step: u64 },
}

/// Where reads stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadBound {
    /// Only batches below this offset (consumers read below the high watermark, which the replica layer above
    /// storage keeps); clamped to the log end.
    Below(Offset),
    /// Followers and tools: everything sequenced.
    LogEnd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: Offset,
    pub last_offset: Offset,
    /// The broker time stamped into the batches under LogAppendTime, else -1.
    pub append_time_ms: i64,
    pub log_start_offset: Offset,
}

#[derive(Debug)]
pub enum LogError {
    InvalidBatch(BatchError),
    BatchTooLarge {
        size: usize,
        max: usize,
    },
    OffsetOutOfRange {
        offset: Offset,
        log_start: Offset,
        log_end: Offset,
    },
    InvalidConfig(String),
    /// A replicated batch does not continue the log: a gap (`base_offset` above `expected`) or an overlap (below).
    UnexpectedOffset {
        expected: Offset,
        base_offset: Offset,
    },
    /// A write or sync failed: what is on disk past the durable offset is unknown, and the log accepts no appends
    /// until its flusher has re-verified the tail from disk (`repair.rs`), which it retries with backoff.
    Poisoned(String),
    /// A flush failed before any byte reached the kernel (no space to allocate, no descriptor for a new segment):
    /// nothing on disk changed, the batches stay queued, and the flusher retries at the next append or timer.
    Stalled(String),
    Io {
        operation: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    Closed,
    /// The offsets asked for lie in a byte range of a segment that held durable data and failed validation at
    /// open (a bit flip, a damaged sector). The batches before and after it read normally; the offsets in it
    /// are never handed out again.
    Corrupt(CorruptRange),
}

impl fmt::Display for LogError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogError::InvalidBatch(error) => write!(formatter, "invalid record batch: {error}"),
            LogError::BatchTooLarge { size, max } => {
                write!(formatter, "batch of {size} bytes exceeds max.message.bytes {max}")
            }
            LogError::OffsetOutOfRange { offset, log_start, log_end } => {
                write!(formatter, "offset {offset} is outside the log [{log_start}, {log_end}]")
            }
            LogError::Poisoned(reason) => {
                write!(
                    formatter,
                    "log is read-only after an I/O failure, until its tail is re-verified: {reason}"
                )
            }
            LogError::Stalled(reason) => {
                write!(formatter, "log write failed before reaching the disk, will be retried: {reason}")
            }
            LogError::Io { operation, path, source } => {
                write!(formatter, "{operation} {} failed: {source}", path.display())
            }
            LogError::Closed => write!(formatter, "log is closed"),
            LogError::Corrupt(range) => write!(formatter, "{range}"),
            LogError::InvalidConfig(reason) => write!(formatter, "invalid log configuration: {reason}"),
            LogError::UnexpectedOffset { expected, base_offset } => {
                let kind = if base_offset > expected { "a gap" } else { "an overlap" };
                write!(
                    formatter,
                    "replicated batch at offset {base_offset} where the log expects {expected} ({kind})"
                )
            }
        }
    }
}

impl std::error::Error for LogError {}

impl From<BatchError> for LogError {
    fn from(error: BatchError) -> Self {
        LogError::InvalidBatch(error)
    }
}

fn io_error<'path>(operation: &'static str, path: &'path Path) -> impl FnOnce(io::Error) -> LogError + 'path {
    move |source| LogError::Io { operation, path: path.to_path_buf(), source }
}

/// A byte range of a segment that held durable data and failed validation at open. It is kept, never cut: reads of
/// its offsets fail with [`LogError::Corrupt`], reads around it work, and its offsets are never reused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CorruptRange {
    pub segment_path: PathBuf,
    pub segment_base: Offset,
    /// File position of the first bad byte (where the invalid batch starts).
    pub position: u64,
    /// Bytes from `position` to the next valid batch, or to the segment's end when none follows.
    pub size: u64,
    /// The first offset the range holds (the offset the invalid batch should have started at).
    pub base_offset: Offset,
    /// The offset just past the range: the next valid batch's base offset, the next segment's base offset, or
    /// the durable log end.
    pub end_offset: Offset,
}

impl CorruptRange {
    pub fn contains(&self, offset: Offset) -> bool {
        self.base_offset <= offset && offset < self.end_offset
    }
}

impl fmt::Display for CorruptRange {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{}: {} corrupt bytes at position {} hold offsets {} to {} (durable data that failed validation)",
            self.segment_path.display(),
            self.size,
            self.position,
            self.base_offset,
            self.end_offset
        )
    }
}

/// What recovery found, for logs and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub segment_count: usize,
    /// Bytes read by recovery scans (not the whole log): each durable segment from its last index entry (or whole
    /// when its index is rebuilt), and the data that may not have been synced.
    pub scanned_size: u64,
    /// Of `scanned_size`, the bytes of valid batches at or past the recovery point: data that may not have been
    /// synced before the log stopped. Zero after a clean shutdown.
    pub unsynced_scanned_size: u64,
    /// Bytes cut off at the first invalid batch past the recovery point, including whole segments after it.
    pub truncated_size: u64,
    pub rebuilt_index_count: usize,
    /// The log was closed cleanly (the clean-shutdown marker was there): everything in it was durable.
    pub clean_shutdown: bool,
    /// Everything below this offset was durable when the log stopped (the recovery point checkpoint, or the log
    /// end recorded at a clean shutdown); `None` when neither file was there, and then every batch may be unsynced.
    pub recovery_point: Option<Offset>,
    /// Damage found in durable data: kept, reported, and answered with [`LogError::Corrupt`] on reads.
    pub corrupt_ranges: Vec<CorruptRange>,
}

/// A partition log. Cloning shares it (shard-local `Rc`).
pub struct Log<S: Storage> {
    inner: Rc<LogInner<S>>,
}

impl<S: Storage> Clone for Log<S> {
    fn clone(&self) -> Self {
        Log { inner: self.inner.clone() }
    }
}

struct LogInner<S: Storage> {
    id: u64,
    storage: S,
    directory: PathBuf,
    config: RefCell<LogConfig>,
    cache: BatchCache,
    state: RefCell<LogState<S>>,
    /// Wakes the flusher: new appends, a sync request, a command.
    flusher_wakeup: Notify,
    /// Wakes waiters: data written or synced, space freed, a command done, the log poisoned.
    progress: Notify,
    /// The flusher task has not ended yet (it clears this, and notifies `progress`, however it ends).
    flusher_running: Cell<bool>,
    recovery: RecoveryReport,
    read_ahead: RefCell<ReadAhead>,
    /// Wakes readers waiting for a read-ahead to finish.
    read_ahead_done: Notify,
    runtime: LogRuntime,
}

struct LogState<S: Storage> {
    segments: Vec<Segment<S>>,
    log_start_offset: Offset,
    /// Next offset to assign (the log end offset).
    next_offset: Offset,
    /// Sequenced batches not yet written, oldest first.
    unflushed: VecDeque<PendingBatch>,
    unflushed_size: usize,
    /// Everything below this is written to a file.
    flushed_offset: Offset,
    /// Everything below this is fdatasync'd.
    durable_offset: Offset,
    unsynced_size: u64,
    last_sync: Instant,
    sync_requested: bool,
    commands: VecDeque<(Command, Rc<CommandSlot>)>,
    /// A write, sync or file change failed: appends are refused until `repair` has re-verified the tail.
    poisoned: Option<String>,
    /// The last flush failed before handing any byte to the kernel; cleared by the next one that succeeds.
    stalled: Option<String>,
    /// Bumped by every failed flush (stalled or poisoned): a `wait_durable` that sees it move fails.
    failure_count: u64,
    /// When the flusher next retries after a failure (a stalled flush or the repair of a poisoned log), and how
    /// many retries in a row have failed (the backoff's exponent).
    retry_at: Instant,
    retry_failure_count: u32,
    /// An append arrived since the last failure: a stalled flusher retries at once rather than at `retry_at`.
    retry_requested: bool,
    /// Set while a truncation changes files: if it fails half-way, the repair takes the log end from disk.
    truncating: bool,
    /// Times a poisoned log was repaired without a restart.
    repair_count: u64,
    /// `close` was called: no more appends.
    closing: bool,
    closed: bool,
    /// Which leader epoch started where, as sequenced (ahead of the checkpoint file).
    epochs: LeaderEpochCache,
    /// Bumped by every change of `epochs`; the flusher writes the checkpoint while it is ahead of
    /// `epochs_persisted_version`.
    epochs_version: u64,
    epochs_persisted_version: u64,
    /// The recovery point checkpoint as on disk: every batch below it is durable. Written at each roll and at
    /// close, lowered by truncation (see `checkpoint.rs`).
    recovery_point: Option<Offset>,
}

#[derive(Clone)]
struct PendingBatch {
    base_offset: Offset,
    last_offset: Offset,
    max_timestamp: i64,
    bytes: Bytes,
}

enum Command {
    Roll,
    TruncateTo(Offset),
    DeleteBefore(Offset),
    Retention(i64),
    Close,
}

impl Command {
    fn needs_drained_log(&self) -> bool {
        matches!(self, Command::TruncateTo(_) | Command::Close)
    }

    /// Deletion below the log start touches only closed segments and checkpoints, never the active segment's
    /// tail: it runs on a poisoned log too (DeleteRecords and retention can free space while the log waits for
    /// its repair), and its failure poisons nothing.
    fn leaves_tail_alone(&self) -> bool {
        matches!(self, Command::DeleteBefore(_) | Command::Retention(_))
    }
}

#[derive(Default)]
struct CommandSlot {
    result: RefCell<Option<Result<(), LogError>>>,
}

thread_local! {
    static NEXT_LOG_ID: Cell<u64> = const { Cell::new(1) };
}

impl<S: Storage> Log<S> {
    /// Opens (recovering) or creates the log in `directory`, and starts its flusher on the current executor, with
    /// the system clock and glommio (`LogRuntime::default`).
    pub async fn open(
        storage: S,
        directory: PathBuf,
        config: LogConfig,
        cache: BatchCache,
    ) -> Result<Log<S>, LogError> {
        Log::open_with_runtime(storage, directory, config, cache, LogRuntime::default()).await
    }

    /// [`Log::open`] with the clock every time reading of the log uses and the spawner of its background tasks.
    pub async fn open_with_runtime(
        storage: S,
        directory: PathBuf,
        config: LogConfig,
        cache: BatchCache,
        runtime: LogRuntime,
    ) -> Result<Log<S>, LogError> {
        config.validate().map_err(LogError::InvalidConfig)?;
        storage.create_dir_all(&directory).await.map_err(io_error("creating", &directory))?;
        let clock = &*runtime.clock;
        let (segments, recovery, log_start_offset) =
            open_segments(&storage, &directory, &config, clock).await?;
        let recovery_point = recovery.recovery_point;
        let next_offset = segments.last().invariant("at least one segment").next_offset;
        let (epochs, epochs_changed) =
            open_leader_epochs(&storage, &directory, log_start_offset, next_offset).await;
        let id = NEXT_LOG_ID.with(|next| {
            let id = next.get();
            next.set(id + 1);
            id
        });
        let inner = Rc::new(LogInner {
            id,
            storage,
            directory,
            config: RefCell::new(config),
            cache,
            state: RefCell::new(LogState {
                segments,
                log_start_offset,
                next_offset,
                unflushed: VecDeque::new(),
                unflushed_size: 0,
                flushed_offset: next_offset,
                durable_offset: next_offset,
                unsynced_size: 0,
                last_sync: runtime.clock.now(),
                sync_requested: false,
                commands: VecDeque::new(),
                poisoned: None,
                stalled: None,
                failure_count: 0,
                retry_at: runtime.clock.now(),
                retry_failure_count: 0,
                retry_requested: false,
                truncating: false,
                repair_count: 0,
                closing: false,
                closed: false,
                epochs,
                epochs_version: u64::from(epochs_changed),
                epochs_persisted_version: 0,
                recovery_point,
            }),
            flusher_wakeup: Notify::default(),
            progress: Notify::default(),
            flusher_running: Cell::new(true),
            recovery,
            read_ahead: RefCell::new(ReadAhead::default()),
            read_ahead_done: Notify::default(),
            runtime,
        });
        inner.runtime.spawner.spawn_detached(Box::pin(run_flusher(inner.clone())));
        Ok(Log { inner })
    }

    pub fn directory(&self) -> &Path {
        &self.inner.directory
    }

    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.inner.recovery
    }

    pub fn config(&self) -> LogConfig {
        self.inner.config.borrow().clone()
    }

    /// New settings apply from the next append, roll or retention pass.
    pub fn update_config(&self, config: LogConfig) -> Result<(), LogError> {
        config.validate().map_err(LogError::InvalidConfig)?;
        *self.inner.config.borrow_mut() = config;
        Ok(())
    }

    pub fn log_start_offset(&self) -> Offset {
        self.inner.state.borrow().log_start_offset
    }

    pub fn log_end_offset(&self) -> Offset {
        self.inner.state.borrow().next_offset
    }

    /// Everything below this offset has been fdatasync'd.
    pub fn durable_offset(&self) -> Offset {
        self.inner.state.borrow().durable_offset
    }

    /// Bytes of batches in the log, written or not.
    pub fn size(&self) -> u64 {
        let state = self.inner.state.borrow();
        state.segments.iter().map(|segment| segment.size).sum::<u64>() + state.unflushed_size as u64
    }

    /// Base offset of the active (newest) segment: it changes when the log rolls.
    pub fn active_segment_base(&self) -> Offset {
        self.inner.state.borrow().segments.last().map_or(Offset(0), |segment| segment.base_offset)
    }

    pub fn segment_count(&self) -> usize {
        self.inner.state.borrow().segments.len()
    }

    pub fn poisoned(&self) -> Option<String> {
        self.inner.state.borrow().poisoned.clone()
    }

    /// Why the last flush failed before reaching the disk, while its batches wait for a retry.
    pub fn stalled(&self) -> Option<String> {
        self.inner.state.borrow().stalled.clone()
    }

    /// How many times this log was repaired after being poisoned (see `repair.rs`).
    pub fn repair_count(&self) -> u64 {
        self.inner.state.borrow().repair_count
    }

    /// The leader epoch of the newest sequenced batch that carried one, if any.
    pub fn latest_leader_epoch(&self) -> Option<i32> {
        self.inner.state.borrow().epochs.latest_epoch()
    }

    /// OffsetForLeaderEpoch (KIP-101): the largest epoch at or below `epoch` this log knows and the offset where it
    /// ended (the start of the next larger epoch, or the log end for the latest). `None` is Kafka's undefined
    /// answer. See [`LeaderEpochCache::end_offset_for`].
    pub fn end_offset_for_leader_epoch(&self, epoch: i32) -> Option<(i32, Offset)> {
        let state = self.inner.state.borrow();
        state.epochs.end_offset_for(epoch, state.next_offset)
    }

    /// The leader epoch entries, oldest first.
    pub fn leader_epochs(&self) -> Vec<EpochEntry> {
        self.inner.state.borrow().epochs.entries().to_vec()
    }

    /// Flushes and syncs everything, seals the active segment and stops the flusher. Reads keep working.
    pub async fn close(&self) -> Result<(), LogError> {
        {
            let mut state = self.inner.state.borrow_mut();
            if state.closed || state.closing {
                return Ok(());
            }
            state.closing = true;
        }
        let result = self.run_command(Command::Close).await;
        self.wait_for_flusher_exit().await;
        forget_read_ahead(&self.inner);
        self.inner.cache.remove_log(self.inner.id);
        result
    }

    /// Stops the flusher without writing anything more (a simulated crash in tests).
    pub async fn abandon(&self) {
        {
            let mut state = self.inner.state.borrow_mut();
            state.closed = true;
            state.poisoned.get_or_insert_with(|| "abandoned".to_string());
        }
        self.inner.flusher_wakeup.notify_all();
        self.wait_for_flusher_exit().await;
        forget_read_ahead(&self.inner);
        self.inner.cache.remove_log(self.inner.id);
    }

    /// Closes the log and deletes its files (DeleteTopics).
    pub async fn remove(self) -> Result<(), LogError> {
        let _ = self.close().await;
        // Descriptors before names (files in use by a read close when it ends).
        let files: Vec<_> =
            self.inner.state.borrow().segments.iter().map(|segment| segment.file.clone()).collect();
        for file in files {
            file.close().await;
        }
        let names = self
            .inner
            .storage
            .list(&self.inner.directory)
            .await
            .map_err(io_error("listing", &self.inner.directory))?;
        for name in names {
            let path = self.inner.directory.join(&name);
            self.inner.storage.remove(&path).await.map_err(io_error("removing", &path))?;
        }
        Ok(())
    }

    /// Waits for the flusher task to end. The task is detached, so dropping this wait never cancels it.
    async fn wait_for_flusher_exit(&self) {
        // Bounded: a closed log's flusher exits once nothing is pending, and an abandoned one at once.
        while self.inner.flusher_running.get() {
            self.inner.progress.notified().await;
        }
    }

    /// The clock this log reads; callers of `enforce_retention` can take `now_ms` from it.
    pub fn clock(&self) -> Rc<dyn Clock> {
        self.inner.runtime.clock.clone()
    }

    async fn run_command(&self, command: Command) -> Result<(), LogError> {
        let slot = Rc::new(CommandSlot::default());
        {
            let mut state = self.inner.state.borrow_mut();
            if state.closed {
                return Err(LogError::Closed);
            }
            state.commands.push_back((command, slot.clone()));
        }
        self.inner.flusher_wakeup.notify_all();
        loop {
            if let Some(result) = slot.result.borrow_mut().take() {
                return result;
            }
            self.inner.progress.notified().await;
        }
    }
}

impl<S: Storage> LogState<S> {
    fn check_writable(&self) -> Result<(), LogError> {
        if let Some(reason) = &self.poisoned {
            return Err(LogError::Poisoned(reason.clone()));
        }
        if self.closing || self.closed {
            return Err(LogError::Closed);
        }
        Ok(())
    }

    /// The order of the log's offsets: synced ≤ written ≤ log end, the high watermark and the log start within the
    /// log end. Cheap, so it runs in release after every change of these offsets.
    fn assert_offsets(&self) {
        assert!(
            self.durable_offset <= self.flushed_offset && self.flushed_offset <= self.next_offset,
            "offsets out of order: durable {} written {} log end {}",
            self.durable_offset,
            self.flushed_offset,
            self.next_offset
        );
        assert!(
            self.log_start_offset <= self.next_offset,
            "log start {} past the log end",
            self.log_start_offset
        );
    }

    /// Applies `change` to the leader epoch cache; a change makes the flusher write the checkpoint.
    fn update_epochs(&mut self, change: impl FnOnce(&mut LeaderEpochCache) -> bool) {
        if change(&mut self.epochs) {
            self.epochs_version += 1;
        }
    }

    fn active(&mut self) -> &mut Segment<S> {
        self.segments.last_mut().invariant("a log always has an active segment")
    }
}
