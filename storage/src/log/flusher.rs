//! The flusher: one task per log that writes the unflushed queue behind the appends (group commit), syncs under
//! the durability policy, rolls segments and runs the commands that change files.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::checkpoint::{
    write_clean_shutdown, write_leader_epochs, write_log_start_checkpoint, write_recovery_point,
};
use super::repair::repair;
use super::retention::{delete_segments_below_log_start, retention, truncate};
use super::SegmentSpace;
use super::{io_error, Command, CommandSlot, Durability, LogError, LogInner, LogState, PendingBatch};
use crate::batch::BatchHeader;
use crate::invariant::Invariant;
use crate::io::{Storage, StorageFile};
use crate::segment::{Segment, WriteSettings, INDEX_WRITE_BATCH_COUNT};
use crate::types::Offset;

/// A flush round writes at most this many `write_size_max` buffers.
const FLUSH_ROUND_WRITE_COUNT: usize = 32;

/// The first retry after a failure comes this soon: a descriptor or a few blocks freed by another partition are
/// often back within milliseconds. Each failed retry doubles the wait up to `RETRY_DELAY_MAX`.
const RETRY_DELAY_MIN: Duration = Duration::from_millis(1);
/// A disk that stays full costs each poisoned log one repair attempt (a read of its unsynced tail) this often.
const RETRY_DELAY_MAX: Duration = Duration::from_secs(2);

enum FlusherAction {
    Flush,
    Sync,
    Command(Command, Rc<CommandSlot>),
    /// Re-verify the tail of a poisoned log from disk and accept appends again (`repair.rs`).
    Repair,
    Exit,
    Wait(Option<Duration>),
}

/// How a flusher step failed. Errors before any byte reached the kernel (fallocate, opening a new segment,
/// a checkpoint written whole or not at all) leave the log's files as they were: `Transient`, the batches stay
/// queued and are retried. A failed write, sync or file change leaves the tail unknown (fsyncgate: after a failed
/// fdatasync nobody can say what is on disk): `Poisoning`, until `repair` re-verifies it.
pub(super) enum StepError {
    Transient(LogError),
    Poisoning(LogError),
}

impl From<LogError> for StepError {
    fn from(error: LogError) -> Self {
        StepError::Poisoning(error)
    }
}

impl StepError {
    fn into_error(self) -> LogError {
        match self {
            StepError::Transient(error) | StepError::Poisoning(error) => error,
        }
    }
}

/// The wait before retry number `failure_count` (1 after the first failure).
fn retry_delay(failure_count: u32) -> Duration {
    let doublings = failure_count.saturating_sub(1).min(16);
    RETRY_DELAY_MIN.saturating_mul(1 << doublings).min(RETRY_DELAY_MAX)
}

pub(super) async fn run_flusher<S: Storage>(inner: Rc<LogInner<S>>) {
    /// Tells `close` and `abandon` that the flusher has ended, however it ends.
    struct Exit<'a, S: Storage>(&'a LogInner<S>);
    impl<S: Storage> Drop for Exit<'_, S> {
        fn drop(&mut self) {
            self.0.flusher_running.set(false);
            self.0.progress.notify_all();
        }
    }
    let _exit = Exit(&inner);
    loop {
        let action = next_flusher_action(&inner);
        match action {
            FlusherAction::Exit => return,
            FlusherAction::Wait(timeout) => {
                let wakeup = inner.flusher_wakeup.notified();
                match timeout {
                    Some(timeout) => {
                        futures_lite::future::or(wakeup, inner.runtime.spawner.sleep(timeout)).await;
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
                let result = match result {
                    Ok(()) => Ok(()),
                    // A command that failed half-way may have left files and memory apart: stop writing.
                    Err(StepError::Poisoning(error)) => Err(poison(&inner, error)),
                    Err(StepError::Transient(error)) => Err(error),
                };
                *slot.result.borrow_mut() = Some(result);
                inner.progress.notify_all();
            }
            FlusherAction::Repair => {
                let result = repair(&inner).await;
                finish_repair(&inner, result);
            }
        }
        inner.runtime.spawner.yield_if_needed().await;
    }
}

/// Records a flush's outcome: success clears a stall and the backoff; a failure stalls or poisons the log and
/// schedules the retry.
fn finish<S: Storage>(inner: &LogInner<S>, result: Result<(), StepError>) {
    match result {
        Ok(()) => {
            let mut state = inner.state.borrow_mut();
            if let Some(reason) = state.stalled.take() {
                log::info!("log {}: writing again after: {reason}", inner.directory.display());
            }
            state.retry_failure_count = 0;
        }
        // A close cannot wait for a disk that may never come back: a failure while closing poisons.
        Err(StepError::Transient(error)) if !inner.state.borrow().closing => {
            let reason = error.to_string();
            let mut state = inner.state.borrow_mut();
            if state.stalled.is_none() {
                log::warn!(
                    "log {}: write failed before reaching the disk: {reason}",
                    inner.directory.display()
                );
            }
            state.stalled = Some(reason);
            state.failure_count += 1;
            schedule_retry(inner, &mut state);
        }
        Err(error) => {
            poison(inner, error.into_error());
        }
    }
    inner.progress.notify_all();
}

/// Poisons the log (appends refused, the tail to be re-verified by `repair`) and returns the error for whoever
/// asked.
fn poison<S: Storage>(inner: &LogInner<S>, error: LogError) -> LogError {
    let reason = error.to_string();
    let mut state = inner.state.borrow_mut();
    if state.poisoned.is_none() {
        log::error!("log {} poisoned until its tail is re-verified: {reason}", inner.directory.display());
    }
    state.poisoned.get_or_insert(reason);
    state.stalled = None;
    // A poisoned log writes and syncs nothing until its repair, which re-verifies the tail through a descriptor of
    // its own: the file need not stay pinned in the open-file cache meanwhile. (A stalled log keeps its pin: its
    // unsynced writes are still to be synced through the descriptor that wrote them.)
    if let Some(writer) = state.segments.last_mut().and_then(|active| active.writer.as_mut()) {
        writer.unsynced_file = None;
    }
    state.failure_count += 1;
    schedule_retry(inner, &mut state);
    error
}

fn schedule_retry<S: Storage>(inner: &LogInner<S>, state: &mut LogState<S>) {
    state.retry_failure_count = state.retry_failure_count.saturating_add(1);
    state.retry_at = inner.runtime.clock.now() + retry_delay(state.retry_failure_count);
    state.retry_requested = false;
}

fn finish_repair<S: Storage>(inner: &LogInner<S>, result: Result<(), LogError>) {
    let mut state = inner.state.borrow_mut();
    match result {
        Ok(()) => {
            // The backoff stays: only a flush that succeeds resets it, so a disk that is still full costs one
            // repair per (growing) delay, not a busy loop of repairs and failed writes.
            state.poisoned = None;
            state.repair_count += 1;
        }
        Err(error) => {
            log::warn!(
                "log {}: repair attempt {} failed, retrying in {:?}: {error}",
                inner.directory.display(),
                state.retry_failure_count,
                retry_delay(state.retry_failure_count + 1)
            );
            schedule_retry(inner, &mut state);
        }
    }
    drop(state);
    inner.progress.notify_all();
}

/// While a stalled log's retry is not due, it neither writes nor syncs: how long until it is, or `None` when the
/// flusher may write now (no stall, an append asked for a retry, or the time has come).
fn stall_remaining<S: Storage>(state: &LogState<S>, now: Instant) -> Option<Duration> {
    if state.stalled.is_none() || state.retry_requested || state.closing || now >= state.retry_at {
        return None;
    }
    Some(state.retry_at - now)
}

fn next_flusher_action<S: Storage>(inner: &LogInner<S>) -> FlusherAction {
    let now = inner.runtime.clock.now();
    let config = inner.config.borrow();
    let mut state = inner.state.borrow_mut();
    if state.poisoned.is_some() {
        return next_flusher_action_poisoned(inner, &mut state, now);
    }
    // Truncation and close need everything written and synced first; the other commands run between flushes,
    // so a steady stream of appends cannot starve them.
    let command_drains = state.commands.front().map(|(command, _)| command.needs_drained_log());
    if let Some(remaining) = stall_remaining(&state, now) {
        if command_drains == Some(false) {
            let (command, slot) = state.commands.pop_front().invariant("checked above");
            return FlusherAction::Command(command, slot);
        }
        return FlusherAction::Wait(Some(remaining));
    }
    state.retry_requested = false;
    let has_unflushed = !state.unflushed.is_empty();
    let unsynced = state.durable_offset < state.flushed_offset;
    let draining = command_drains == Some(true);
    if has_unflushed {
        let flush_now = draining
            || match config.durability {
                Durability::Fsync => true,
                Durability::Interval { interval, .. } => {
                    state.sync_requested
                        || state.closing
                        || state.unflushed_size >= config.write_size_max
                        || now.saturating_duration_since(state.last_sync) >= interval
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
                        || now.saturating_duration_since(state.last_sync) >= interval
                }
            };
        if sync_now {
            return FlusherAction::Sync;
        }
    }
    if command_drains == Some(false) || (draining && !has_unflushed && !unsynced) {
        let (command, slot) = state.commands.pop_front().invariant("checked above");
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
            FlusherAction::Wait(Some(interval.saturating_sub(now.saturating_duration_since(state.last_sync))))
        }
        _ => FlusherAction::Wait(None),
    }
}

/// A poisoned log writes nothing until its repair: deletions below the log start still run, other commands get
/// the reason, a close still closes, and the repair is tried when its backoff has passed.
fn next_flusher_action_poisoned<S: Storage>(
    inner: &LogInner<S>,
    state: &mut LogState<S>,
    now: Instant,
) -> FlusherAction {
    if let Some((command, slot)) = state.commands.pop_front() {
        if command.leaves_tail_alone() {
            return FlusherAction::Command(command, slot);
        }
        if matches!(command, Command::Close) {
            state.closed = true;
        }
        *slot.result.borrow_mut() = Some(Err(LogError::Poisoned(state.poisoned.clone().unwrap_or_default())));
        inner.progress.notify_all();
        return FlusherAction::Wait(Some(Duration::ZERO));
    }
    if state.closed {
        FlusherAction::Exit
    } else if state.closing {
        FlusherAction::Wait(None)
    } else if now >= state.retry_at {
        FlusherAction::Repair
    } else {
        FlusherAction::Wait(Some(state.retry_at - now))
    }
}

/// Writes every pending batch, rolling segments as needed; under the fsync policy, syncs once at the end.
async fn flush_unflushed<S: Storage>(inner: &LogInner<S>) -> Result<(), StepError> {
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
    // Written whole to a temporary file and renamed: a failure leaves the old checkpoint, and the log's files.
    write_leader_epochs(inner).await.map_err(StepError::Transient)?;
    let mut group: Vec<Bytes> = Vec::new();
    let mut group_size = 0u64;
    let mut written = 0usize;
    for (index, batch) in pending.iter().enumerate() {
        let now_ms = inner.runtime.clock.now_ms();
        let needs_roll = {
            let mut state = inner.state.borrow_mut();
            let active = state.active();
            let size = active.size + group_size;
            // A sealed active segment is what a roll that could not create the next one leaves behind.
            let sealed = active.writer.is_none() && group_size == 0;
            sealed
                || size > 0
                    && (size + batch.bytes.len() as u64 > config.segment_size_max
                        || batch.last_offset.0 - active.base_offset.0 > i32::MAX as i64
                        || now_ms - active.created_ms >= config.segment_age_max.as_millis() as i64)
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
) -> Result<(), StepError> {
    if group.is_empty() {
        return Ok(());
    }
    let (segment_file, path) = {
        let state = inner.state.borrow();
        let active = state.segments.last().invariant("active segment");
        (active.file.clone(), active.path.clone())
    };
    // The flusher holds no other file here, so it may wait for room in the shard's open-file cache. A failed open
    // (EMFILE after an eviction) has handed no byte to the kernel: the log stalls and retries.
    let file =
        segment_file.open().await.map_err(|error| StepError::Transient(io_error("opening", &path)(error)))?;
    // The writer is taken out of the active segment while its I/O is in flight, so no borrow of the log state
    // spans an await; readers still see the segment, and these offsets in the unflushed queue.
    let (mut writer, size, next_offset) = {
        let mut state = inner.state.borrow_mut();
        let active = state.active();
        (active.take_writer(), active.size, active.next_offset)
    };
    // Paired with the append's check after stamping: what goes to disk continues the segment, header by header.
    let mut expected_offset = next_offset;
    for batch in group.iter() {
        let header = BatchHeader::parse(batch).ok();
        assert!(
            header.is_some_and(
                |header| header.base_offset() == expected_offset && header.total_size() == batch.len()
            ),
            "batch to write at {expected_offset} does not continue segment {}",
            path.display()
        );
        expected_offset = header.map_or(expected_offset, |header| header.last_offset().next());
    }
    let group_size: u64 = group.iter().map(|batch| batch.len() as u64).sum();
    // Space first: a fallocate that fails has handed no byte of the batches to the kernel.
    if let Err(error) = writer.reserve(&file, size + group_size, settings).await {
        inner.state.borrow_mut().active().writer = Some(writer);
        let error = io_error("allocating space in", &path)(error);
        return Err(match settings.segment_space {
            SegmentSpace::Prewrite { .. } => StepError::Poisoning(error),
            SegmentSpace::Grow | SegmentSpace::Fallocate { .. } => StepError::Transient(error),
        });
    }
    let mut result = writer.write(&file, size, group, settings).await;
    if result.is_ok() {
        let writes = {
            let mut state = inner.state.borrow_mut();
            let active = state.active();
            active.record_written(group, settings.index_interval_size);
            assert_eq!(active.size, size + group_size, "segment size after a write");
            assert_eq!(active.next_offset, expected_offset, "segment end after a write");
            active.pending_index_writes(&writer, INDEX_WRITE_BATCH_COUNT)
        };
        if let Some(writes) = writes {
            match writer.open_indexes().await {
                Ok(held) => {
                    result = writer.write_indexes(writes).await;
                    drop(held);
                }
                // No descriptor for an index file the cache had closed (EMFILE): nothing of the indexes is written
                // now, the log's batches are. The next write or the seal writes the entries from where the files
                // end (the persisted counts did not move); recovery checks an index against the log anyway.
                Err(error) => log::warn!(
                    "log {}: index writes deferred, opening the index files failed: {error}",
                    inner.directory.display()
                ),
            }
        }
    }
    inner.state.borrow_mut().active().writer = Some(writer);
    group.clear();
    Ok(result.map_err(io_error("writing", &path))?)
}

/// Seals the active segment in place (see `SegmentWriter::seal`); it stays readable. One a failed roll left
/// sealed is left as it is.
async fn seal_active<S: Storage>(inner: &LogInner<S>) -> Result<(), StepError> {
    let (writer, file, size, path, writes, index_count, time_index_count) = {
        let mut state = inner.state.borrow_mut();
        let active = state.active();
        let Some(writer) = active.writer.take() else {
            // Sealed (synced) by the failed roll, and nothing is written to a sealed segment since.
            state.durable_offset = state.durable_offset.max(state.flushed_offset);
            state.assert_offsets();
            return Ok(());
        };
        let writes = active.pending_index_writes(&writer, 0);
        let counts = (active.index.entries.len(), active.time_index.entries.len());
        (writer, active.file.clone(), active.size, active.path.clone(), writes, counts.0, counts.1)
    };
    // Every file the seal touches is opened first and held through it: no descriptor for one (EMFILE, after the
    // cache closed it) changes nothing, the writer goes back and the log stalls; a roll is then retried whole.
    let files = match writer.open_for_seal(&file).await {
        Ok(files) => files,
        Err(error) => {
            inner.state.borrow_mut().active().writer = Some(writer);
            return Err(StepError::Transient(io_error("opening", &path)(error)));
        }
    };
    writer
        .seal(files, size, writes, index_count, time_index_count)
        .await
        .map_err(io_error("sealing", &path))?;
    let mut state = inner.state.borrow_mut();
    state.durable_offset = state.durable_offset.max(state.flushed_offset);
    state.assert_offsets();
    Ok(())
}

/// Moves written batches from the unflushed queue to the shard cache.
fn mark_written<S: Storage>(inner: &LogInner<S>, batches: &[PendingBatch]) {
    if batches.is_empty() {
        return;
    }
    let mut state = inner.state.borrow_mut();
    for batch in batches {
        let front = state.unflushed.pop_front().invariant("written batches are pending");
        assert_eq!(front.base_offset, batch.base_offset);
        // Written in order, with no gap: the written offset only moves forward, one batch at a time.
        assert_eq!(
            front.base_offset, state.flushed_offset,
            "written batch does not continue the written offset"
        );
        assert!(state.unflushed_size >= front.bytes.len(), "unflushed size below a pending batch's size");
        state.unflushed_size -= front.bytes.len();
        state.unsynced_size += front.bytes.len() as u64;
        state.flushed_offset = front.last_offset.next();
        inner.cache.insert(inner.id, front.base_offset, front.last_offset, front.bytes);
    }
    assert_eq!(
        state.unflushed.is_empty(),
        state.unflushed_size == 0,
        "unflushed size out of step with the queue"
    );
    state.assert_offsets();
    drop(state);
    inner.progress.notify_all();
}

async fn sync_active<S: Storage>(inner: &LogInner<S>) -> Result<(), StepError> {
    let (file, path, flushed) = {
        let state = inner.state.borrow();
        let active = state.segments.last().invariant("active segment");
        (active.file.clone(), active.path.clone(), state.flushed_offset)
    };
    // Unsynced writes pinned the file in the cache (see `SegmentWriter::unsynced_file`): this is that descriptor,
    // and the open a cache hit. One that fails all the same has synced nothing: the log stalls, not poisons.
    let open = file.open().await.map_err(|error| StepError::Transient(io_error("opening", &path)(error)))?;
    open.sync().await.map_err(io_error("syncing", &path))?;
    drop(open);
    let mut state = inner.state.borrow_mut();
    if let Some(writer) = state.active().writer.as_mut() {
        writer.unsynced_file = None; // everything it wrote is durable: the cache may close it when idle
    }
    state.durable_offset = state.durable_offset.max(flushed);
    state.assert_offsets();
    state.unsynced_size = 0;
    state.last_sync = inner.runtime.clock.now();
    state.sync_requested = false;
    Ok(())
}

/// Seals the active segment (synced) and starts a new one at `base_offset`. The recovery point moves to the new
/// segment in between: everything before it is durable now, and a crash after the new segment exists must find
/// the recovery point already there, so that no segment after the recovery point's is ever durable data.
///
/// Once the old segment is sealed, a failure to record the recovery point or to create the new segment's files
/// (no descriptor, no inode) has changed no byte of the log: the roll is retried at the next flush, which finds
/// the active segment sealed.
async fn roll<S: Storage>(inner: &LogInner<S>, base_offset: Offset) -> Result<(), StepError> {
    seal_active(inner).await?;
    write_recovery_point(inner, base_offset).await.map_err(StepError::Transient)?;
    let created =
        Segment::create(&inner.storage, &inner.directory, base_offset, inner.runtime.clock.now_ms()).await;
    let segment = match created {
        Ok(segment) => segment,
        Err(error) => {
            // Half-created files hold nothing; the retry creates them again.
            for path in Segment::<S>::paths(&inner.directory, base_offset) {
                let _ = inner.storage.remove(&path).await;
            }
            return Err(StepError::Transient(io_error("creating a segment in", &inner.directory)(error)));
        }
    };
    // The new files' directory entries must be durable before anything in them is acknowledged.
    inner.storage.sync_directory(&inner.directory).await.map_err(io_error("syncing", &inner.directory))?;
    inner.state.borrow_mut().segments.push(segment);
    Ok(())
}

async fn run_flusher_command<S: Storage>(inner: &LogInner<S>, command: Command) -> Result<(), StepError> {
    match command {
        Command::Close => {
            // A close cannot wait for descriptors that may never come back: any failure here poisons.
            let mut result = seal_active(inner).await.map_err(StepError::into_error);
            if result.is_ok() {
                // Close runs on a drained log: everything up to the log end is synced now.
                let end = inner.state.borrow().next_offset;
                result = write_clean_shutdown(inner, end).await;
            }
            inner.state.borrow_mut().closed = true;
            Ok(result?)
        }
        Command::TruncateTo(offset) => {
            inner.state.borrow_mut().truncating = true;
            let result = truncate(inner, offset).await;
            // Left set on failure: the repair then takes the log end from disk.
            inner.state.borrow_mut().truncating = result.is_err();
            Ok(result?)
        }
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
            let previous = {
                let mut state = inner.state.borrow_mut();
                let previous = state.log_start_offset;
                state.log_start_offset = previous.max(offset);
                previous
            };
            if let Err(error) = write_log_start_checkpoint(inner).await {
                // Nothing deleted, nothing recorded: as if the request had not come.
                inner.state.borrow_mut().log_start_offset = previous;
                return Err(StepError::Transient(error));
            }
            // A segment whose files could not be removed is already out of the log: a restart finds it below
            // the recorded log start and removes it then.
            delete_segments_below_log_start(inner).await.map_err(StepError::Transient)
        }
        Command::Retention(now) => retention(inner, now).await.map_err(StepError::Transient),
    }
}
