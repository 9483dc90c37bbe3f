//! The partition log: sequencing, the write-behind flusher with group commit, reads, lookups, truncation,
//! retention and recovery.
//!
//! A `Log` lives on the shard that owns the partition and is shared there by `Rc`. `append` sequences batches in
//! memory (offsets assigned, order fixed) and returns; one flusher task per log then writes everything pending in
//! one go with direct I/O and, under the fsync policy, one fdatasync — every append that arrived meanwhile rides
//! along (group commit). `wait_durable` waits for that. Truncation, deletion, retention and close are commands
//! the flusher runs between flushes, so only one task ever changes files.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::batch::{self, validate_record_set, BatchError, BatchHeader};
use crate::cache::BatchCache;
use crate::index::{relative, OffsetIndex, TimeIndex};
use crate::io::{Storage, StorageFile};
use crate::notify::Notify;
use crate::segment::{parse_segment_file_name, Accept, Segment, WriteSettings, INDEX_WRITE_BATCH_COUNT};
use crate::types::{now_ms, FilePosition, Offset};

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
    /// Consumers: only what the high watermark exposes.
    HighWatermark,
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
    /// A write or sync failed earlier; the log accepts no more appends until it is reopened.
    Poisoned(String),
    Io {
        operation: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    Closed,
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
                write!(formatter, "log is read-only after an I/O failure: {reason}")
            }
            LogError::Io { operation, path, source } => {
                write!(formatter, "{operation} {} failed: {source}", path.display())
            }
            LogError::Closed => write!(formatter, "log is closed"),
            LogError::InvalidConfig(reason) => write!(formatter, "invalid log configuration: {reason}"),
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

/// What recovery found, for logs and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub segment_count: usize,
    /// Bytes read by recovery scans (not the whole log).
    pub scanned_size: u64,
    /// Bytes cut off at the first invalid batch, including whole segments after it.
    pub truncated_size: u64,
    pub rebuilt_index_count: usize,
}

/// A read from disk (and a read-ahead chunk) is at most this large.
const READ_CHUNK_SIZE_MAX: usize = 4 << 20;

/// A flush round writes at most this many `write_size_max` buffers.
const FLUSH_ROUND_WRITE_COUNT: usize = 32;

const LOG_START_CHECKPOINT: &str = "log-start-offset.checkpoint";

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
    flusher: RefCell<Option<glommio::Task<()>>>,
    recovery: RecoveryReport,
    read_ahead: RefCell<ReadAhead>,
    /// Wakes readers waiting for a read-ahead to finish.
    read_ahead_done: Notify,
}

/// Sequential read-ahead for a reader catching up from disk. A fetch that had to read the disk leaves a frontier
/// (the offset and file position just past what it read); the log then reads the next chunk from there into the
/// shard's batch cache while the fetch's response travels and the consumer works, and each later fetch that reaches
/// the newest chunk starts the one after it. A fetch for an offset a running read-ahead covers waits for it instead
/// of reading the same bytes itself.
#[derive(Default)]
struct ReadAhead {
    frontier: Option<Frontier>,
    /// The offset the running read-ahead starts at.
    in_flight_from: Option<Offset>,
    /// The offset the newest read-ahead started at: a reader past it has begun on the newest chunk.
    newest_from: Option<Offset>,
    /// Bumped by truncation, deletion and close: a read-ahead started before must not fill the cache.
    generation: u64,
}

#[derive(Clone, Copy, Debug)]
struct Frontier {
    offset: Offset,
    segment_base: Offset,
    position: u64,
}

struct LogState<S: Storage> {
    segments: Vec<Segment<S>>,
    log_start_offset: Offset,
    /// Next offset to assign (the log end offset).
    next_offset: Offset,
    high_watermark: Offset,
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
    poisoned: Option<String>,
    /// `close` was called: no more appends.
    closing: bool,
    closed: bool,
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
}

#[derive(Default)]
struct CommandSlot {
    result: RefCell<Option<Result<(), String>>>,
}

thread_local! {
    static NEXT_LOG_ID: Cell<u64> = const { Cell::new(1) };
}

impl<S: Storage> Log<S> {
    /// Opens (recovering) or creates the log in `directory`, and starts its flusher on the current executor.
    pub async fn open(
        storage: S,
        directory: PathBuf,
        config: LogConfig,
        cache: BatchCache,
    ) -> Result<Log<S>, LogError> {
        config.validate().map_err(LogError::InvalidConfig)?;
        storage.create_dir_all(&directory).await.map_err(io_error("creating", &directory))?;
        let (mut segments, recovery) = recover(&storage, &directory, &config).await?;
        let checkpoint = read_log_start_checkpoint(&storage, &directory).await;
        let recovered_end = segments.last().map(|segment| segment.next_offset);
        if let (Some(start), Some(end)) = (checkpoint, recovered_end) {
            if start > end {
                // Everything below the recorded log start is deleted, and what lay above it was never synced:
                // start empty at the log start so that no offset below it is ever handed out again.
                log::warn!(
                    "{}: log ends at {end} below its start {start}; starting empty",
                    directory.display()
                );
                for segment in segments.drain(..) {
                    for path in Segment::<S>::paths(&directory, segment.base_offset) {
                        if storage.exists(&path).await {
                            storage.remove(&path).await.map_err(io_error("removing", &path))?;
                        }
                    }
                }
            }
        }
        if segments.is_empty() {
            let base = checkpoint.unwrap_or(Offset(0));
            let segment = Segment::create(&storage, &directory, base, now_ms())
                .await
                .map_err(io_error("creating a segment in", &directory))?;
            storage.sync_directory(&directory).await.map_err(io_error("syncing", &directory))?;
            segments.push(segment);
        }
        let active = segments.last_mut().expect("at least one segment");
        active.reopen_for_writing(&storage, &directory).await.map_err(io_error("reopening", &active.path))?;
        let next_offset = active.next_offset;
        let first_base = segments[0].base_offset;
        let log_start_offset =
            checkpoint.map_or(first_base, |offset| offset.max(first_base)).min(next_offset);
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
                high_watermark: next_offset,
                unflushed: VecDeque::new(),
                unflushed_size: 0,
                flushed_offset: next_offset,
                durable_offset: next_offset,
                unsynced_size: 0,
                last_sync: Instant::now(),
                sync_requested: false,
                commands: VecDeque::new(),
                poisoned: None,
                closing: false,
                closed: false,
            }),
            flusher_wakeup: Notify::default(),
            progress: Notify::default(),
            flusher: RefCell::new(None),
            recovery,
            read_ahead: RefCell::new(ReadAhead::default()),
            read_ahead_done: Notify::default(),
        });
        let task = glommio::spawn_local(run_flusher(inner.clone()));
        *inner.flusher.borrow_mut() = Some(task);
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

    pub fn high_watermark(&self) -> Offset {
        self.inner.state.borrow().high_watermark
    }

    /// Sets the high watermark; it never passes the log end offset and never goes below the log start.
    pub fn set_high_watermark(&self, offset: Offset) {
        let mut state = self.inner.state.borrow_mut();
        assert!(offset <= state.next_offset, "high watermark {offset} beyond log end {}", state.next_offset);
        state.high_watermark = offset.max(state.log_start_offset);
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

    /// Validates and sequences one or more v2 batches: assigns offsets, stamps baseOffset and the leader epoch in
    /// place, and queues them for the flusher. Returns once the order is fixed; see `wait_durable` for
    /// durability. Invalid input leaves the log unchanged.
    pub async fn append(&self, records: Bytes, leader_epoch: i32) -> Result<AppendInfo, LogError> {
        let summaries = validate_record_set(&records)?;
        let (batch_size_max, unflushed_size_max, timestamp_type) = {
            let config = self.inner.config.borrow();
            (config.batch_size_max, config.unflushed_size_max, config.timestamp_type)
        };
        if let Some(large) = summaries.iter().find(|summary| summary.size > batch_size_max) {
            return Err(LogError::BatchTooLarge { size: large.size, max: batch_size_max });
        }
        // Back-pressure: wait while the write-behind buffer is full (an empty buffer always takes one request).
        loop {
            {
                let state = self.inner.state.borrow();
                state.check_writable()?;
                if state.unflushed_size == 0 || state.unflushed_size + records.len() <= unflushed_size_max {
                    break;
                }
            }
            self.inner.flusher_wakeup.notify_all();
            self.inner.progress.notified().await;
        }

        let append_time_ms = now_ms();
        let mut bytes = batch::into_mut(records);
        let mut state = self.inner.state.borrow_mut();
        let base_offset = state.next_offset;
        let mut next_offset = base_offset;
        let mut placed = Vec::with_capacity(summaries.len());
        for summary in &summaries {
            let range = summary.position..summary.position + summary.size;
            batch::stamp_batch(&mut bytes[range.clone()], next_offset, leader_epoch);
            let mut max_timestamp = summary.max_timestamp;
            if timestamp_type == TimestampType::LogAppendTime {
                batch::stamp_log_append_time(&mut bytes[range.clone()], append_time_ms);
                max_timestamp = append_time_ms;
            }
            let last_offset = Offset(next_offset.0 + summary.offset_count - 1);
            placed.push((range, next_offset, last_offset, max_timestamp));
            next_offset = last_offset.next();
        }
        let bytes = bytes.freeze();
        for (range, base, last, max_timestamp) in placed {
            state.unflushed.push_back(PendingBatch {
                base_offset: base,
                last_offset: last,
                max_timestamp,
                bytes: bytes.slice(range),
            });
        }
        state.unflushed_size += bytes.len();
        state.next_offset = next_offset;
        let info = AppendInfo {
            base_offset,
            last_offset: Offset(next_offset.0 - 1),
            append_time_ms: if timestamp_type == TimestampType::LogAppendTime { append_time_ms } else { -1 },
            log_start_offset: state.log_start_offset,
        };
        drop(state);
        self.inner.flusher_wakeup.notify_all();
        Ok(info)
    }

    /// Waits until every offset below `offset_end` is written and fdatasync'd (forcing a sync under the interval
    /// policy).
    pub async fn wait_durable(&self, offset_end: Offset) -> Result<(), LogError> {
        loop {
            {
                let mut state = self.inner.state.borrow_mut();
                if offset_end > state.next_offset {
                    // Never appended, or removed by a truncation while waiting.
                    return Err(LogError::OffsetOutOfRange {
                        offset: offset_end,
                        log_start: state.log_start_offset,
                        log_end: state.next_offset,
                    });
                }
                if state.durable_offset >= offset_end {
                    return Ok(());
                }
                if let Some(reason) = &state.poisoned {
                    return Err(LogError::Poisoned(reason.clone()));
                }
                if state.closed {
                    return Err(LogError::Closed);
                }
                state.sync_requested = true;
            }
            self.inner.flusher_wakeup.notify_all();
            self.inner.progress.notified().await;
        }
    }

    /// Whole batches from the one holding `offset`, up to `size_max` bytes (at least one batch when `min_one`,
    /// Kafka's first-batch exception), never past `bound`. The first batch may start below `offset`.
    pub async fn read(
        &self,
        offset: Offset,
        size_max: usize,
        bound: ReadBound,
        min_one: bool,
    ) -> Result<Vec<Bytes>, LogError> {
        let (upper, log_start) = {
            let state = self.inner.state.borrow();
            let upper = match bound {
                ReadBound::HighWatermark => state.high_watermark,
                ReadBound::LogEnd => state.next_offset,
            };
            if offset < state.log_start_offset || offset > state.next_offset {
                return Err(LogError::OffsetOutOfRange {
                    offset,
                    log_start: state.log_start_offset,
                    log_end: state.next_offset,
                });
            }
            (upper, state.log_start_offset)
        };
        let _ = log_start;
        if offset >= upper {
            return Ok(Vec::new());
        }
        // 0. A running read-ahead from at or below `offset` is about to put it in the cache: wait for it rather than
        //    read the same bytes twice (a reader whose batch is cached already, such as one at the tail, goes on).
        //    Bounded: every read-ahead ends, and its guard clears the slot and notifies.
        while self.inner.read_ahead.borrow().in_flight_from.is_some_and(|from| from <= offset)
            && !self.inner.cache.contains(self.inner.id, offset)
        {
            self.inner.read_ahead_done.notified().await;
        }
        let mut budget = Budget { size_max, min_one, used: 0, upper };

        // 1. The shard cache (written batches), continuing into the unflushed queue.
        let mut batches = Vec::new();
        let mut next = offset;
        for (base, cached) in
            self.inner.cache.read(self.inner.id, offset, |base, bytes| budget.admit(base, bytes.len()))
        {
            let _ = base;
            next = cached.last_offset.next();
            batches.push(cached.bytes);
        }
        // 2. The unflushed queue.
        let from_memory = self.read_unflushed(next, &mut budget);
        let chunk_size = size_max.min(READ_CHUNK_SIZE_MAX);
        if batches.is_empty() && from_memory.is_empty() {
            // 3. Disk.
            let (batches, frontier) = self.read_disk(offset, &mut budget).await?;
            if let Some(frontier) = frontier {
                self.inner.read_ahead.borrow_mut().frontier = Some(frontier);
                start_read_ahead(&self.inner, chunk_size);
            }
            return Ok(batches);
        }
        if from_memory.is_empty() {
            // Served from the cache: a reader that has reached the newest read-ahead chunk gets the next one going.
            let reached = {
                let read_ahead = self.inner.read_ahead.borrow();
                read_ahead.newest_from.is_some_and(|from| next > from)
                    && read_ahead.frontier.is_some_and(|frontier| frontier.offset >= next)
            };
            if reached {
                start_read_ahead(&self.inner, chunk_size);
            }
        }
        batches.extend(from_memory);
        Ok(batches)
    }

    fn read_unflushed(&self, offset: Offset, budget: &mut Budget) -> Vec<Bytes> {
        let state = self.inner.state.borrow();
        let start = state.unflushed.partition_point(|batch| batch.last_offset < offset);
        let mut batches = Vec::new();
        for pending in state.unflushed.iter().skip(start) {
            if pending.base_offset > offset && batches.is_empty() {
                break; // a gap: the batch holding `offset` is not in memory
            }
            if !budget.admit(pending.base_offset, pending.bytes.len()) {
                break;
            }
            batches.push(pending.bytes.clone());
        }
        batches
    }

    /// Batches from the disk, and the frontier just past them (none when nothing was read).
    async fn read_disk(
        &self,
        offset: Offset,
        budget: &mut Budget,
    ) -> Result<(Vec<Bytes>, Option<Frontier>), LogError> {
        let mut target = offset;
        // Bounded by the segment count: each pass moves to a later segment.
        loop {
            let take_max = budget.size_max.saturating_sub(budget.used);
            let (segment_base, segment_file, position, size_hint, path, segment_size, segment_next) = {
                let state = self.inner.state.borrow();
                let index = state.segments.partition_point(|segment| segment.base_offset <= target);
                if index == 0 {
                    return Ok((Vec::new(), None));
                }
                let segment = &state.segments[index - 1];
                let (_, position) = segment.index.lookup(relative(segment.base_offset, target));
                let chunk_size = take_max.min(READ_CHUNK_SIZE_MAX) as u64;
                let size_hint = (segment.index.chunk_end(position.0, chunk_size) - position.0) as usize;
                let file = segment.file.clone();
                let (base, path) = (segment.base_offset, segment.path.clone());
                (base, file, position, size_hint, path, segment.size, segment.next_offset)
            };
            if target >= segment_next {
                let state = self.inner.state.borrow();
                match state.segments.iter().find(|segment| segment.base_offset > target) {
                    Some(next_segment) if segment_next <= next_segment.base_offset => {
                        target = next_segment.base_offset;
                        continue;
                    }
                    _ => return Ok((Vec::new(), None)),
                }
            }
            let mut next = target;
            let (batches, end) = read_segment_batches_to(
                &*segment_file,
                segment_size,
                position,
                size_hint,
                take_max,
                |header| {
                    if header.last_offset() < target {
                        Accept::Skip
                    } else if budget.admit(header.base_offset(), header.total_size()) {
                        next = header.last_offset().next();
                        Accept::Take
                    } else {
                        Accept::Stop
                    }
                },
            )
            .await
            .map_err(io_error("reading", &path))?;
            let frontier =
                (!batches.is_empty()).then_some(Frontier { offset: next, segment_base, position: end });
            return Ok((batches, frontier));
        }
    }

    /// The first batch whose max timestamp is ≥ `timestamp` (ListOffsets by time); the caller finds the exact
    /// record inside it.
    pub async fn find_batch_by_timestamp(&self, timestamp: i64) -> Result<Option<Bytes>, LogError> {
        let candidates: Vec<(ReadOnlySegment<S>, FilePosition, PathBuf)> = {
            let state = self.inner.state.borrow();
            state
                .segments
                .iter()
                .filter(|segment| {
                    segment.max_timestamp >= timestamp && segment.next_offset > state.log_start_offset
                })
                .map(|segment| {
                    let start = segment.time_index.scan_start(timestamp);
                    let (_, position) = segment.index.lookup(start);
                    let reader = ReadOnlySegment::<S> { file: segment.file.clone(), size: segment.size };
                    (reader, position, segment.path.clone())
                })
                .collect()
        };
        let log_start = self.log_start_offset();
        // Bounded by the segment count.
        for (segment, position, path) in candidates {
            let batches = segment
                .read_batches(position, 64 * 1024, |header| {
                    if header.max_timestamp.get() >= timestamp && header.last_offset() >= log_start {
                        Accept::TakeLast
                    } else {
                        Accept::Skip
                    }
                })
                .await
                .map_err(io_error("reading", &path))?;
            if let Some(batch) = batches.into_iter().next() {
                return Ok(Some(batch));
            }
        }
        let state = self.inner.state.borrow();
        Ok(state
            .unflushed
            .iter()
            .find(|batch| batch.max_timestamp >= timestamp)
            .map(|batch| batch.bytes.clone()))
    }

    /// The first batch holding the log's largest timestamp (ListOffsets MAX_TIMESTAMP).
    pub async fn max_timestamp_batch(&self) -> Result<Option<Bytes>, LogError> {
        let max_timestamp = {
            let state = self.inner.state.borrow();
            let on_disk = state.segments.iter().map(|segment| segment.max_timestamp).max().unwrap_or(-1);
            let in_memory = state.unflushed.iter().map(|batch| batch.max_timestamp).max().unwrap_or(-1);
            on_disk.max(in_memory)
        };
        if max_timestamp < 0 {
            return Ok(None);
        }
        self.find_batch_by_timestamp(max_timestamp).await
    }

    /// Seals the active segment and starts a new one at the log end (a no-op on an empty segment).
    pub async fn roll(&self) -> Result<(), LogError> {
        self.run_command(Command::Roll).await
    }

    /// Removes every batch holding an offset at or above `offset` (a straddling batch goes whole); the log end
    /// becomes the base offset of the first removed batch. Callers must not append concurrently.
    pub async fn truncate_to(&self, offset: Offset) -> Result<(), LogError> {
        self.run_command(Command::TruncateTo(offset)).await
    }

    /// DeleteRecords: moves the log start offset up to `offset` (at most the high watermark) and deletes the
    /// segments wholly below it. Returns the new log start offset.
    pub async fn delete_before(&self, offset: Offset) -> Result<Offset, LogError> {
        {
            let state = self.inner.state.borrow();
            if offset > state.high_watermark || offset < Offset(0) {
                return Err(LogError::OffsetOutOfRange {
                    offset,
                    log_start: state.log_start_offset,
                    log_end: state.high_watermark,
                });
            }
        }
        self.run_command(Command::DeleteBefore(offset)).await?;
        Ok(self.log_start_offset())
    }

    /// Deletes closed segments past `retention.ms` (by their largest timestamp) or beyond `retention.bytes`.
    pub async fn enforce_retention(&self, now_ms: i64) -> Result<(), LogError> {
        self.run_command(Command::Retention(now_ms)).await
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
        // Joined through a detached handle, so that dropping this future can never cancel the flusher.
        let task = self.inner.flusher.borrow_mut().take();
        if let Some(task) = task {
            task.detach().await;
        }
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
        let task = self.inner.flusher.borrow_mut().take();
        if let Some(task) = task {
            task.detach().await;
        }
        forget_read_ahead(&self.inner);
        self.inner.cache.remove_log(self.inner.id);
    }

    /// Closes the log and deletes its files (DeleteTopics).
    pub async fn remove(self) -> Result<(), LogError> {
        let _ = self.close().await;
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
                return result.map_err(LogError::Poisoned);
            }
            self.inner.progress.notified().await;
        }
    }
}

struct Budget {
    size_max: usize,
    min_one: bool,
    used: usize,
    upper: Offset,
}

impl Budget {
    fn admit(&mut self, base_offset: Offset, size: usize) -> bool {
        if base_offset >= self.upper {
            return false;
        }
        let first = self.used == 0;
        if self.used + size > self.size_max && !(first && self.min_one) {
            return false;
        }
        self.used += size;
        true
    }
}

/// A segment's file and written size, detached from the log state so reads need no borrow across awaits.
struct ReadOnlySegment<S: Storage> {
    file: Rc<S::File>,
    size: u64,
}

impl<S: Storage> ReadOnlySegment<S> {
    async fn read_batches(
        &self,
        position: FilePosition,
        size_hint: usize,
        accept: impl FnMut(&BatchHeader) -> Accept,
    ) -> io::Result<Vec<Bytes>> {
        read_segment_batches(&*self.file, self.size, position, size_hint, accept).await
    }
}

/// Reads whole batches from `position` while `accept` says yes, within `end` bytes of the file.
async fn read_segment_batches<F: StorageFile>(
    file: &F,
    end: u64,
    position: FilePosition,
    size_hint: usize,
    accept: impl FnMut(&BatchHeader) -> Accept,
) -> io::Result<Vec<Bytes>> {
    Ok(read_segment_batches_to(file, end, position, size_hint, usize::MAX, accept).await?.0)
}

/// [`read_segment_batches`] for a caller that takes at most `take_max` bytes of batches (its budget; `accept` still
/// decides, and may let a first batch exceed it): no chunk is read past what could still be taken. Also returns the
/// file position just past the last batch taken (`position` if none).
async fn read_segment_batches_to<F: StorageFile>(
    file: &F,
    end: u64,
    position: FilePosition,
    size_hint: usize,
    take_max: usize,
    mut accept: impl FnMut(&BatchHeader) -> Accept,
) -> io::Result<(Vec<Bytes>, u64)> {
    let mut batches = Vec::new();
    let mut position = position.0;
    let mut taken_end = position;
    let mut taken = 0usize;
    // Bounded: every pass consumes at least one batch or stops.
    'chunks: while position < end {
        let left = take_max.saturating_sub(taken);
        if taken > 0 && left < batch::BATCH_HEADER_SIZE {
            break; // nothing more could be taken: do not read a chunk only to find that out
        }
        let chunk_size = (size_hint.min(left).max(64 * 1024) as u64).min(end - position) as usize;
        let chunk = file.read_at(position, chunk_size).await?;
        let mut cursor = 0;
        while let Ok(header) = BatchHeader::parse(&chunk[cursor..]) {
            let size = header.total_size();
            if size < batch::BATCH_HEADER_SIZE || position + (cursor + size) as u64 > end {
                break 'chunks;
            }
            let decision = accept(header);
            match decision {
                Accept::Skip => {}
                Accept::Stop => break 'chunks,
                Accept::Take | Accept::TakeLast => {
                    if cursor + size <= chunk.len() {
                        batches.push(chunk.slice(cursor..cursor + size));
                    } else {
                        let whole = file.read_at(position + cursor as u64, size).await?;
                        if whole.len() < size {
                            break 'chunks;
                        }
                        batches.push(whole);
                    }
                    taken_end = position + (cursor + size) as u64;
                    taken += size;
                    if decision == Accept::TakeLast {
                        break 'chunks;
                    }
                }
            }
            cursor += size;
            if cursor >= chunk.len() {
                break;
            }
        }
        if cursor == 0 {
            // A header that does not fit the chunk: read it whole next pass, or stop at a damaged one.
            let Ok(header) = BatchHeader::parse(&chunk) else { break };
            if header.total_size() <= chunk.len() {
                break;
            }
            let whole = file.read_at(position, header.total_size()).await?;
            let Ok(header) = BatchHeader::parse(&whole) else { break };
            if whole.len() < header.total_size() {
                break;
            }
            let decision = accept(header);
            match decision {
                Accept::Skip => {}
                Accept::Stop => break,
                Accept::Take | Accept::TakeLast => {
                    batches.push(whole.clone());
                    taken_end = position + whole.len() as u64;
                    taken += whole.len();
                    if decision == Accept::TakeLast {
                        break;
                    }
                }
            }
            position += whole.len() as u64;
            continue;
        }
        position += cursor as u64;
    }
    Ok((batches, taken_end))
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

    fn active(&mut self) -> &mut Segment<S> {
        self.segments.last_mut().expect("a log always has an active segment")
    }
}

enum FlusherAction {
    Flush,
    Sync,
    Command(Command, Rc<CommandSlot>),
    Exit,
    Wait(Option<Duration>),
}

async fn run_flusher<S: Storage>(inner: Rc<LogInner<S>>) {
    loop {
        let action = next_flusher_action(&inner);
        match action {
            FlusherAction::Exit => return,
            FlusherAction::Wait(timeout) => {
                let wakeup = inner.flusher_wakeup.notified();
                match timeout {
                    Some(timeout) => {
                        futures_lite::future::or(wakeup, glommio::timer::sleep(timeout)).await;
                    }
                    None => wakeup.await,
                }
            }
            FlusherAction::Flush => {
                let result = flush_unflushed(&inner).await;
                finish(&inner, result);
            }
            FlusherAction::Sync => {
                let result = sync_active(&inner).await;
                finish(&inner, result);
            }
            FlusherAction::Command(command, slot) => {
                let result = run_flusher_command(&inner, command).await;
                if let Err(error) = &result {
                    // A command that failed half-way may have left files and memory apart: stop writing.
                    let reason = error.to_string();
                    log::error!("log {} poisoned: {reason}", inner.directory.display());
                    inner.state.borrow_mut().poisoned.get_or_insert(reason);
                }
                *slot.result.borrow_mut() = Some(result.map_err(|error| error.to_string()));
                inner.progress.notify_all();
            }
        }
        glommio::yield_if_needed().await;
    }
}

fn finish<S: Storage>(inner: &LogInner<S>, result: Result<(), LogError>) {
    if let Err(error) = result {
        let reason = error.to_string();
        log::error!("log {} poisoned: {reason}", inner.directory.display());
        inner.state.borrow_mut().poisoned.get_or_insert(reason);
    }
    inner.progress.notify_all();
}

fn next_flusher_action<S: Storage>(inner: &LogInner<S>) -> FlusherAction {
    let config = inner.config.borrow();
    let mut state = inner.state.borrow_mut();
    if state.poisoned.is_some() {
        // Nothing more is written; commands still get an answer, and a close still closes.
        if let Some((command, slot)) = state.commands.pop_front() {
            if matches!(command, Command::Close) {
                state.closed = true;
            }
            *slot.result.borrow_mut() = Some(Err(state.poisoned.clone().unwrap_or_default()));
            inner.progress.notify_all();
            return FlusherAction::Wait(Some(Duration::ZERO));
        }
        return if state.closed { FlusherAction::Exit } else { FlusherAction::Wait(None) };
    }
    let has_unflushed = !state.unflushed.is_empty();
    let unsynced = state.durable_offset < state.flushed_offset;
    // Truncation and close need everything written and synced first; the other commands run between flushes,
    // so a steady stream of appends cannot starve them.
    let command_drains = state.commands.front().map(|(command, _)| command.needs_drained_log());
    let draining = command_drains == Some(true);
    if has_unflushed {
        let flush_now = draining
            || match config.durability {
                Durability::Fsync => true,
                Durability::Interval { interval, .. } => {
                    state.sync_requested
                        || state.closing
                        || state.unflushed_size >= config.write_size_max
                        || state.last_sync.elapsed() >= interval
                }
            };
        if flush_now {
            return FlusherAction::Flush;
        }
    }
    if unsynced {
        let sync_now = draining
            || match config.durability {
                Durability::Fsync => true,
                Durability::Interval { bytes, interval } => {
                    state.sync_requested
                        || state.closing
                        || state.unsynced_size >= bytes
                        || state.last_sync.elapsed() >= interval
                }
            };
        if sync_now {
            return FlusherAction::Sync;
        }
    }
    if command_drains == Some(false) || (draining && !has_unflushed && !unsynced) {
        let (command, slot) = state.commands.pop_front().expect("checked above");
        return FlusherAction::Command(command, slot);
    }
    if !has_unflushed && !unsynced {
        state.sync_requested = false;
        if state.closed {
            return FlusherAction::Exit;
        }
    }
    match config.durability {
        Durability::Interval { interval, .. } if has_unflushed || unsynced => {
            FlusherAction::Wait(Some(interval.saturating_sub(state.last_sync.elapsed())))
        }
        _ => FlusherAction::Wait(None),
    }
}

/// Writes every pending batch, rolling segments as needed; under the fsync policy, syncs once at the end.
async fn flush_unflushed<S: Storage>(inner: &LogInner<S>) -> Result<(), LogError> {
    let config = inner.config.borrow().clone();
    let settings = WriteSettings {
        index_interval_size: config.index_interval_size,
        write_size_max: config.write_size_max,
        segment_space: config.segment_space,
    };
    // A round takes a bounded slice of the queue so that written batches are released (and appenders waiting
    // on back-pressure resume) while later rounds are still being written.
    let round_size_max = config.write_size_max * FLUSH_ROUND_WRITE_COUNT;
    let pending: Vec<PendingBatch> = {
        let state = inner.state.borrow();
        let mut size = 0;
        state
            .unflushed
            .iter()
            .take_while(|batch| {
                let take = size == 0 || size + batch.bytes.len() <= round_size_max;
                size += batch.bytes.len();
                take
            })
            .cloned()
            .collect()
    };
    let mut group: Vec<Bytes> = Vec::new();
    let mut group_size = 0u64;
    let mut written = 0usize;
    for (index, batch) in pending.iter().enumerate() {
        let needs_roll = {
            let mut state = inner.state.borrow_mut();
            let active = state.active();
            let size = active.size + group_size;
            size > 0
                && (size + batch.bytes.len() as u64 > config.segment_size_max
                    || batch.last_offset.0 - active.base_offset.0 > i32::MAX as i64
                    || now_ms() - active.created_ms >= config.segment_age_max.as_millis() as i64)
        };
        if needs_roll {
            write_group(inner, &mut group, &settings).await?;
            mark_written(inner, &pending[written..index]);
            written = index;
            group_size = 0;
            roll(inner, batch.base_offset).await?;
        }
        group_size += batch.bytes.len() as u64;
        group.push(batch.bytes.clone());
    }
    write_group(inner, &mut group, &settings).await?;
    mark_written(inner, &pending[written..]);
    if config.durability == Durability::Fsync || inner.state.borrow().sync_requested {
        sync_active(inner).await?;
    }
    Ok(())
}

async fn write_group<S: Storage>(
    inner: &LogInner<S>,
    group: &mut Vec<Bytes>,
    settings: &WriteSettings,
) -> Result<(), LogError> {
    if group.is_empty() {
        return Ok(());
    }
    // The writer is taken out of the active segment while its I/O is in flight, so no borrow of the log state
    // spans an await; readers still see the segment, and these offsets in the unflushed queue.
    let (mut writer, file, size, path) = {
        let mut state = inner.state.borrow_mut();
        let active = state.active();
        (active.take_writer(), active.file.clone(), active.size, active.path.clone())
    };
    let mut result = writer.write(&file, size, group, settings).await;
    if result.is_ok() {
        let writes = {
            let mut state = inner.state.borrow_mut();
            let active = state.active();
            active.record_written(group, settings.index_interval_size);
            active.pending_index_writes(&writer, INDEX_WRITE_BATCH_COUNT)
        };
        if let Some(writes) = writes {
            result = writer.write_indexes(writes).await;
        }
    }
    inner.state.borrow_mut().active().writer = Some(writer);
    group.clear();
    result.map_err(io_error("writing", &path))
}

/// Seals the active segment in place (see `SegmentWriter::seal`); it stays readable.
async fn seal_active<S: Storage>(inner: &LogInner<S>) -> Result<(), LogError> {
    let (writer, file, size, path, writes, index_count, time_index_count) = {
        let mut state = inner.state.borrow_mut();
        let active = state.active();
        let writer = active.take_writer();
        let writes = active.pending_index_writes(&writer, 0);
        let counts = (active.index.entries.len(), active.time_index.entries.len());
        (writer, active.file.clone(), active.size, active.path.clone(), writes, counts.0, counts.1)
    };
    writer
        .seal(&file, size, writes, index_count, time_index_count)
        .await
        .map_err(io_error("sealing", &path))?;
    let mut state = inner.state.borrow_mut();
    state.durable_offset = state.durable_offset.max(state.flushed_offset);
    Ok(())
}

/// Moves written batches from the unflushed queue to the shard cache.
fn mark_written<S: Storage>(inner: &LogInner<S>, batches: &[PendingBatch]) {
    if batches.is_empty() {
        return;
    }
    let mut state = inner.state.borrow_mut();
    for batch in batches {
        let front = state.unflushed.pop_front().expect("written batches are pending");
        assert_eq!(front.base_offset, batch.base_offset);
        state.unflushed_size -= front.bytes.len();
        state.unsynced_size += front.bytes.len() as u64;
        state.flushed_offset = front.last_offset.next();
        inner.cache.insert(inner.id, front.base_offset, front.last_offset, front.bytes);
    }
    drop(state);
    inner.progress.notify_all();
}

async fn sync_active<S: Storage>(inner: &LogInner<S>) -> Result<(), LogError> {
    let (file, path, flushed) = {
        let state = inner.state.borrow();
        let active = state.segments.last().expect("active segment");
        (active.file.clone(), active.path.clone(), state.flushed_offset)
    };
    file.sync().await.map_err(io_error("syncing", &path))?;
    let mut state = inner.state.borrow_mut();
    state.durable_offset = state.durable_offset.max(flushed);
    state.unsynced_size = 0;
    state.last_sync = Instant::now();
    state.sync_requested = false;
    Ok(())
}

/// Seals the active segment (synced) and starts a new one at `base_offset`.
async fn roll<S: Storage>(inner: &LogInner<S>, base_offset: Offset) -> Result<(), LogError> {
    seal_active(inner).await?;
    let segment = Segment::create(&inner.storage, &inner.directory, base_offset, now_ms())
        .await
        .map_err(io_error("creating a segment in", &inner.directory))?;
    // The new files' directory entries must be durable before anything in them is acknowledged.
    inner.storage.sync_directory(&inner.directory).await.map_err(io_error("syncing", &inner.directory))?;
    inner.state.borrow_mut().segments.push(segment);
    Ok(())
}

async fn run_flusher_command<S: Storage>(inner: &LogInner<S>, command: Command) -> Result<(), LogError> {
    match command {
        Command::Close => {
            let result = seal_active(inner).await;
            inner.state.borrow_mut().closed = true;
            result
        }
        Command::TruncateTo(offset) => truncate(inner, offset).await,
        Command::Roll => {
            let (flushed_offset, empty) = {
                let mut state = inner.state.borrow_mut();
                let flushed_offset = state.flushed_offset;
                (flushed_offset, state.active().size == 0)
            };
            if empty {
                return Ok(());
            }
            // Batches still queued go to the new segment, which starts after the last written one.
            roll(inner, flushed_offset).await
        }
        Command::DeleteBefore(offset) => {
            {
                let mut state = inner.state.borrow_mut();
                state.log_start_offset = state.log_start_offset.max(offset);
            }
            write_log_start_checkpoint(inner).await?;
            delete_segments_below_log_start(inner).await
        }
        Command::Retention(now) => retention(inner, now).await,
    }
}

async fn truncate<S: Storage>(inner: &LogInner<S>, offset: Offset) -> Result<(), LogError> {
    let (log_start, next_offset) = {
        let state = inner.state.borrow();
        (state.log_start_offset, state.next_offset)
    };
    if offset >= next_offset {
        return Ok(());
    }
    // Drop whole segments at or above the offset, newest first; keep at least the first one.
    loop {
        let doomed = {
            let mut state = inner.state.borrow_mut();
            let count = state.segments.len();
            if count > 1 && state.segments[count - 1].base_offset >= offset {
                state.segments.pop()
            } else {
                None
            }
        };
        let Some(mut segment) = doomed else { break };
        let _ = segment.seal().await;
        remove_segment_files(inner, segment.base_offset).await?;
    }
    let mut segment = inner.state.borrow_mut().segments.pop().expect("a segment remains");
    let path = segment.path.clone();
    let result: Result<(), LogError> = async {
        if offset <= segment.base_offset {
            segment.truncate_at(0, segment.base_offset).await?;
        } else {
            // Find the first batch that holds an offset at or above the target.
            let (_, position) = segment.index.lookup(relative(segment.base_offset, offset));
            let mut cut = None;
            let mut scan_position = position.0;
            let batches = read_segment_batches(&*segment.file, segment.size, position, 1 << 20, |header| {
                if header.last_offset() >= offset {
                    cut = Some((scan_position, header.base_offset()));
                    Accept::Stop
                } else {
                    scan_position += header.total_size() as u64;
                    Accept::Skip
                }
            })
            .await?;
            debug_assert!(batches.is_empty());
            if let Some((position, base)) = cut {
                segment.truncate_at(position, base).await?;
                // The time index bounds the maximum only up to its last entry; rescan the rest for the rest.
                let from =
                    FilePosition(segment.index.entries.last().map_or(0, |entry| entry.position as u64));
                let mut max_timestamp = segment.max_timestamp;
                read_segment_batches(&*segment.file, segment.size, from, 1 << 20, |header| {
                    max_timestamp = max_timestamp.max(header.max_timestamp.get());
                    Accept::Skip
                })
                .await?;
                segment.max_timestamp = max_timestamp;
            }
        }
        segment.file.sync().await?;
        segment.reopen_for_writing(&inner.storage, &inner.directory).await?;
        segment.write_indexes().await
    }
    .await
    .map_err(io_error("truncating", &path));
    let new_end = segment.next_offset;
    inner.state.borrow_mut().segments.push(segment);
    result?;
    {
        let mut state = inner.state.borrow_mut();
        state.next_offset = new_end;
        state.flushed_offset = new_end;
        state.durable_offset = state.durable_offset.min(new_end);
        state.high_watermark = state.high_watermark.min(new_end);
        state.log_start_offset = log_start.min(new_end);
    }
    forget_read_ahead(inner);
    inner.cache.remove_from(inner.id, new_end);
    if new_end < log_start {
        // The cut went below the log start (a straddling batch, or a target below it): the log now starts at its
        // new end, and the checkpoint must say so or a restart would resurrect the old start.
        write_log_start_checkpoint(inner).await?;
    }
    Ok(())
}

async fn retention<S: Storage>(inner: &LogInner<S>, now: i64) -> Result<(), LogError> {
    let config = inner.config.borrow().clone();
    let new_start = {
        let state = inner.state.borrow();
        let closed = &state.segments[..state.segments.len() - 1];
        let mut total: u64 = state.segments.iter().map(|segment| segment.size).sum();
        let mut deleted_until = None;
        for segment in closed {
            let expired = config
                .retention_age_max
                .is_some_and(|age| segment.max_timestamp < now - age.as_millis() as i64);
            let oversized = config.retention_size_max.is_some_and(|size| total - segment.size >= size);
            if !(expired || oversized) {
                break;
            }
            total -= segment.size;
            deleted_until = Some(segment.next_offset);
        }
        deleted_until
    };
    if let Some(offset) = new_start {
        {
            let mut state = inner.state.borrow_mut();
            state.log_start_offset = state.log_start_offset.max(offset);
        }
        delete_segments_below_log_start(inner).await?;
    }
    Ok(())
}

/// Deletes closed segments whose every offset is below the log start offset.
async fn delete_segments_below_log_start<S: Storage>(inner: &LogInner<S>) -> Result<(), LogError> {
    loop {
        let doomed = {
            let mut state = inner.state.borrow_mut();
            let log_start = state.log_start_offset;
            if state.segments.len() > 1 && state.segments[0].next_offset <= log_start {
                Some(state.segments.remove(0))
            } else {
                None
            }
        };
        let Some(segment) = doomed else { break };
        let _ = segment.file.clone();
        remove_segment_files(inner, segment.base_offset).await?;
    }
    let log_start = inner.state.borrow().log_start_offset;
    forget_read_ahead(inner);
    inner.cache.remove_below(inner.id, log_start);
    Ok(())
}

async fn remove_segment_files<S: Storage>(inner: &LogInner<S>, base_offset: Offset) -> Result<(), LogError> {
    for path in Segment::<S>::paths(&inner.directory, base_offset) {
        if inner.storage.exists(&path).await {
            inner.storage.remove(&path).await.map_err(io_error("removing", &path))?;
        }
    }
    Ok(())
}

async fn write_log_start_checkpoint<S: Storage>(inner: &LogInner<S>) -> Result<(), LogError> {
    let path = inner.directory.join(LOG_START_CHECKPOINT);
    let offset = inner.state.borrow().log_start_offset;
    let file = inner.storage.open(&path, true).await.map_err(io_error("opening", &path))?;
    // One sector holds the value and its CRC, so a torn write is detected rather than misread.
    let mut buffer = file.alloc_buffer(crate::BLOCK_SIZE);
    buffer.as_mut().fill(0);
    buffer.as_mut()[..8].copy_from_slice(&offset.0.to_be_bytes());
    let crc = crc32c::crc32c(&buffer.as_ref()[..8]);
    buffer.as_mut()[8..12].copy_from_slice(&crc.to_be_bytes());
    file.write_at(buffer, 0).await.map_err(io_error("writing", &path))?;
    file.sync().await.map_err(io_error("syncing", &path))?;
    file.close().await.map_err(io_error("closing", &path))
}

async fn read_log_start_checkpoint<S: Storage>(storage: &S, directory: &Path) -> Option<Offset> {
    let path = directory.join(LOG_START_CHECKPOINT);
    if !storage.exists(&path).await {
        return None;
    }
    let file = storage.open(&path, false).await.ok()?;
    let bytes = file.read_at(0, 12).await.ok()?;
    let _ = file.close().await;
    if bytes.len() < 12 || crc32c::crc32c(&bytes[..8]) != u32::from_be_bytes(bytes[8..12].try_into().ok()?) {
        log::warn!("{}: checkpoint unreadable, using the first segment's base offset", path.display());
        return None;
    }
    Some(Offset(i64::from_be_bytes(bytes[..8].try_into().ok()?)))
}

/// Opens every segment of `directory`. Closed segments keep their indexes when those are valid (rebuilt
/// otherwise); each segment is scanned only from its last index entry, so the work is proportional to the index
/// interval times the segment count, not to the log size. The log is cut at the first invalid batch.
async fn recover<S: Storage>(
    storage: &S,
    directory: &Path,
    config: &LogConfig,
) -> Result<(Vec<Segment<S>>, RecoveryReport), LogError> {
    let names = storage.list(directory).await.map_err(io_error("listing", directory))?;
    let mut bases: Vec<Offset> = names.iter().filter_map(|name| parse_segment_file_name(name)).collect();
    bases.sort();
    let mut report = RecoveryReport::default();
    let mut segments: Vec<Segment<S>> = Vec::with_capacity(bases.len());
    let mut rewrite_bases = Vec::new();
    let started = Instant::now();
    for (position_in_log, &base_offset) in bases.iter().enumerate() {
        let [path, index_path, time_index_path] = Segment::<S>::paths(directory, base_offset);
        let file = storage.open(&path, false).await.map_err(io_error("opening", &path))?;
        let file_size = file.size().await.map_err(io_error("sizing", &path))?;
        let mut segment: Segment<S> = Segment::empty(base_offset, path.clone(), file, now_ms());
        let is_last = position_in_log + 1 == bases.len();
        let index = read_index(storage, &index_path, file_size).await;
        let mut scan_from = (0u64, base_offset);
        match index {
            Some((index, complete)) if complete || is_last => {
                if let Some(entry) = index.entries.last().copied() {
                    // Check that the last entry really points at the batch it names.
                    let header_bytes =
                        StorageFile::read_at(&*segment.file, entry.position as u64, batch::BATCH_HEADER_SIZE)
                            .await
                            .map_err(io_error("reading", &path))?;
                    let matches = BatchHeader::parse(&header_bytes).is_ok_and(|header| {
                        header.base_offset() == Offset(base_offset.0 + entry.relative_offset as i64)
                    });
                    // A missing time index makes the whole index suspect: rebuild both from the log.
                    let time_index_bytes = read_whole(storage, &time_index_path).await;
                    if let (true, Some(time_index_bytes)) = (matches, time_index_bytes) {
                        scan_from =
                            (entry.position as u64, Offset(base_offset.0 + entry.relative_offset as i64));
                        segment.time_index = TimeIndex::decode(&time_index_bytes, entry.relative_offset + 1);
                        segment.index = index;
                    } else {
                        report.rebuilt_index_count += 1;
                        rewrite_bases.push(base_offset);
                    }
                }
            }
            _ => {
                report.rebuilt_index_count += 1;
                rewrite_bases.push(base_offset);
            }
        }
        // Rebuilding from position 0 re-creates index entries as it scans; resuming keeps the loaded ones.
        segment.next_offset = scan_from.1;
        segment.max_timestamp = segment.time_index.entries.last().map_or(-1, |entry| entry.timestamp);
        segment.bytes_since_index_entry = 0;
        let outcome = segment
            .scan_recover(scan_from.0, file_size, config.index_interval_size)
            .await
            .map_err(io_error("scanning", &path))?;
        report.scanned_size += outcome.end_position - scan_from.0;
        if let Some(error) = &outcome.corruption {
            // Cut the file too, so that later writes are never followed by the old garbage.
            segment.file.truncate(outcome.end_position).await.map_err(io_error("truncating", &path))?;
            segment.file.sync().await.map_err(io_error("syncing", &path))?;
            rewrite_bases.push(base_offset);
            let lost = file_size - outcome.end_position;
            report.truncated_size += lost;
            log::warn!(
                "{}: truncating at position {} (offset {}): {error}; {lost} bytes cut",
                path.display(),
                outcome.end_position,
                outcome.next_offset
            );
        }
        if is_last && outcome.corruption.is_none() && outcome.end_position < file_size {
            // A clean end before the file's end: preallocated zeros, or a hole left by unsynced writes with
            // stale bytes after it. Cut them so that later writes are never followed by old data.
            segment.file.truncate(outcome.end_position).await.map_err(io_error("truncating", &path))?;
            segment.file.sync().await.map_err(io_error("syncing", &path))?;
        }
        let continuous = segments.last().is_none_or(|previous| previous.next_offset <= base_offset);
        if !continuous {
            log::warn!("{}: overlaps the previous segment; dropped", path.display());
            report.truncated_size += file_size;
            let _ = storage.remove(&path).await;
            continue;
        }
        if segment.size == 0 && !is_last {
            // An empty closed segment holds nothing; it is a leftover of an interrupted roll.
            let _ = storage.remove(&path).await;
            let _ = storage.remove(&index_path).await;
            let _ = storage.remove(&time_index_path).await;
            continue;
        }
        segment.created_ms = now_ms();
        let corrupt = outcome.corruption.is_some();
        segments.push(segment);
        if corrupt {
            // Everything after the first invalid batch goes, including later segments.
            for &later in &bases[position_in_log + 1..] {
                for later_path in Segment::<S>::paths(directory, later) {
                    if let Ok(file) = storage.open(&later_path, false).await {
                        if later_path.extension().is_some_and(|extension| extension == "log") {
                            report.truncated_size += file.size().await.unwrap_or(0);
                        }
                        let _ = file.close().await;
                    }
                    let _ = storage.remove(&later_path).await;
                }
            }
            break;
        }
    }
    // Closed segments whose index was rebuilt or whose tail was cut get index files that match memory again;
    // the last segment becomes the active one and rewrites its indexes from memory anyway.
    let closed_count = segments.len().saturating_sub(1);
    for segment in &mut segments[..closed_count] {
        if rewrite_bases.contains(&segment.base_offset) {
            let path = segment.path.clone();
            segment.reopen_for_writing(storage, directory).await.map_err(io_error("reopening", &path))?;
            segment.seal().await.map_err(io_error("rewriting the indexes of", &path))?;
        }
    }
    report.segment_count = segments.len();
    if !bases.is_empty() {
        log::info!(
            "{}: recovered {} segments in {:?} (scanned {} bytes, cut {} bytes, rebuilt {} indexes)",
            directory.display(),
            report.segment_count,
            started.elapsed(),
            report.scanned_size,
            report.truncated_size,
            report.rebuilt_index_count
        );
    }
    Ok((segments, report))
}

async fn read_index<S: Storage>(storage: &S, path: &Path, log_size: u64) -> Option<(OffsetIndex, bool)> {
    let bytes = read_whole(storage, path).await?;
    Some(OffsetIndex::decode(&bytes, log_size))
}

async fn read_whole<S: Storage>(storage: &S, path: &Path) -> Option<Vec<u8>> {
    if !storage.exists(path).await {
        return None;
    }
    let file = storage.open(path, false).await.ok()?;
    let size = file.size().await.ok()?;
    let bytes = file.read_at(0, size as usize).await.ok()?;
    let _ = file.close().await;
    Some(bytes.to_vec())
}

/// Starts reading the chunk at the read-ahead frontier into the shard's cache, unless one is running, the shard's
/// read-ahead memory is spent, the frontier's data is already cached, or there is nothing written past it.
/// glommio runs a spawned task at once, so no borrow of the read-ahead state may be held by the caller.
fn start_read_ahead<S: Storage>(inner: &Rc<LogInner<S>>, chunk_size: usize) {
    let mut read_ahead = inner.read_ahead.borrow_mut();
    if read_ahead.in_flight_from.is_some() {
        return;
    }
    let Some(mut frontier) = read_ahead.frontier else { return };
    let (file, end) = {
        let state = inner.state.borrow();
        let Some(index) =
            state.segments.iter().position(|segment| segment.base_offset == frontier.segment_base)
        else {
            read_ahead.frontier = None;
            return;
        };
        let mut segment = &state.segments[index];
        if frontier.position >= segment.size {
            // Past this segment's written end: go on at the next segment's start, if the log goes on there.
            match state.segments.get(index + 1) {
                Some(next)
                    if segment.next_offset <= frontier.offset || next.base_offset <= frontier.offset =>
                {
                    frontier =
                        Frontier { offset: frontier.offset, segment_base: next.base_offset, position: 0 };
                    segment = next;
                }
                _ => return,
            }
        }
        if frontier.position >= segment.size {
            return;
        }
        let chunk_end = segment.index.chunk_end(frontier.position, chunk_size as u64);
        (segment.file.clone(), segment.size.min(chunk_end))
    };
    if inner.cache.contains(inner.id, frontier.offset) {
        return;
    }
    let size = (end - frontier.position) as usize; // end is at most one chunk past the frontier
    if !inner.cache.reserve_read_ahead(size) {
        return;
    }
    read_ahead.frontier = Some(frontier);
    read_ahead.in_flight_from = Some(frontier.offset);
    read_ahead.newest_from = Some(frontier.offset);
    let generation = read_ahead.generation;
    drop(read_ahead);
    glommio::spawn_local(run_read_ahead(inner.clone(), file, end, frontier, size, generation)).detach();
}

async fn run_read_ahead<S: Storage>(
    inner: Rc<LogInner<S>>,
    file: Rc<S::File>,
    end: u64,
    frontier: Frontier,
    size: usize,
    generation: u64,
) {
    /// Clears the running slot, returns the memory and wakes waiting readers however the read-ahead ends.
    struct Done<'a, S: Storage> {
        inner: &'a LogInner<S>,
        size: usize,
    }
    impl<S: Storage> Drop for Done<'_, S> {
        fn drop(&mut self) {
            self.inner.read_ahead.borrow_mut().in_flight_from = None;
            self.inner.cache.release_read_ahead(self.size);
            self.inner.read_ahead_done.notify_all();
        }
    }
    let _done = Done { inner: &inner, size };
    let mut used = 0;
    let result =
        read_segment_batches_to(&*file, end, FilePosition(frontier.position), size, size, |header| {
            if used + header.total_size() <= size {
                used += header.total_size();
                Accept::Take
            } else {
                Accept::Stop
            }
        })
        .await;
    // A failed read-ahead leaves nothing behind: the reader's own read meets and reports the error.
    let Ok((batches, taken_end)) = result else { return };
    let mut read_ahead = inner.read_ahead.borrow_mut();
    if read_ahead.generation != generation || batches.is_empty() {
        return;
    }
    let mut next = frontier.offset;
    for batch in batches {
        let Ok(header) = BatchHeader::parse(&batch) else { break };
        let (base, last) = (header.base_offset(), header.last_offset());
        inner.cache.insert(inner.id, base, last, batch);
        next = last.next();
    }
    read_ahead.frontier =
        Some(Frontier { offset: next, segment_base: frontier.segment_base, position: taken_end });
}

/// Truncation, deletion or close: what the read-ahead knows of the files is stale.
fn forget_read_ahead<S: Storage>(inner: &LogInner<S>) {
    let mut read_ahead = inner.read_ahead.borrow_mut();
    read_ahead.generation += 1;
    read_ahead.frontier = None;
    read_ahead.newest_from = None;
}
