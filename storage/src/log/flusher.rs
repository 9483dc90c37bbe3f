//! The flusher: one task per log that writes the unflushed queue behind the appends (group commit), syncs under
//! the durability policy, rolls segments and runs the commands that change files.

use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;

use super::checkpoint::{
    write_clean_shutdown, write_leader_epochs, write_log_start_checkpoint, write_recovery_point,
};
use super::retention::{delete_segments_below_log_start, retention, truncate};
use super::{io_error, Command, CommandSlot, Durability, LogError, LogInner, LogState, PendingBatch};
use crate::batch::BatchHeader;
use crate::invariant::Invariant;
use crate::io::{Storage, StorageFile};
use crate::segment::{Segment, WriteSettings, INDEX_WRITE_BATCH_COUNT};
use crate::types::Offset;

/// A flush round writes at most this many `write_size_max` buffers.
const FLUSH_ROUND_WRITE_COUNT: usize = 32;

enum FlusherAction {
    Flush,
    Sync,
    Command(Command, Rc<CommandSlot>),
    Exit,
    Wait(Option<Duration>),
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
        inner.runtime.spawner.yield_if_needed().await;
    }
}

fn finish<S: Storage>(inner: &LogInner<S>, result: Result<(), LogError>) {
    if let Err(error) = result {
        let reason = error.to_string();
        log::error!("log {} poisoned: {reason}", inner.directory.display());
        let mut state = inner.state.borrow_mut();
        state.poisoned.get_or_insert(reason);
        // A poisoned log writes and syncs nothing more: its file need not stay pinned in the open-file cache.
        if let Some(writer) = state.segments.last_mut().and_then(|active| active.writer.as_mut()) {
            writer.unsynced_file = None;
        }
    }
    inner.progress.notify_all();
}

fn next_flusher_action<S: Storage>(inner: &LogInner<S>) -> FlusherAction {
    let now = inner.runtime.clock.now();
    let config = inner.config.borrow();
    let mut state = inner.state.borrow_mut();
    if state.poisoned.is_some() {
        return next_flusher_action_poisoned(inner, &mut state);
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

/// A poisoned log writes nothing more; commands still get an answer, and a close still closes.
fn next_flusher_action_poisoned<S: Storage>(inner: &LogInner<S>, state: &mut LogState<S>) -> FlusherAction {
    if let Some((command, slot)) = state.commands.pop_front() {
        if matches!(command, Command::Close) {
            state.closed = true;
        }
        *slot.result.borrow_mut() = Some(Err(state.poisoned.clone().unwrap_or_default()));
        inner.progress.notify_all();
        return FlusherAction::Wait(Some(Duration::ZERO));
    }
    if state.closed {
        FlusherAction::Exit
    } else {
        FlusherAction::Wait(None)
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
    write_leader_epochs(inner).await?;
    let mut group: Vec<Bytes> = Vec::new();
    let mut group_size = 0u64;
    let mut written = 0usize;
    for (index, batch) in pending.iter().enumerate() {
        let now_ms = inner.runtime.clock.now_ms();
        let needs_roll = {
            let mut state = inner.state.borrow_mut();
            let active = state.active();
            let size = active.size + group_size;
            size > 0
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
) -> Result<(), LogError> {
    if group.is_empty() {
        return Ok(());
    }
    let (segment_file, path) = {
        let state = inner.state.borrow();
        let active = state.segments.last().invariant("active segment");
        (active.file.clone(), active.path.clone())
    };
    // The flusher holds no other file here, so it may wait for room in the shard's open-file cache.
    let file = segment_file.open().await.map_err(io_error("opening", &path))?;
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

async fn sync_active<S: Storage>(inner: &LogInner<S>) -> Result<(), LogError> {
    let (file, path, flushed) = {
        let state = inner.state.borrow();
        let active = state.segments.last().invariant("active segment");
        (active.file.clone(), active.path.clone(), state.flushed_offset)
    };
    // Unsynced writes pinned the file in the cache (see `SegmentWriter::unsynced_file`): this is that descriptor.
    let open = file.open().await.map_err(io_error("opening", &path))?;
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
async fn roll<S: Storage>(inner: &LogInner<S>, base_offset: Offset) -> Result<(), LogError> {
    seal_active(inner).await?;
    write_recovery_point(inner, base_offset).await?;
    let segment =
        Segment::create(&inner.storage, &inner.directory, base_offset, inner.runtime.clock.now_ms())
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
            let mut result = seal_active(inner).await;
            if result.is_ok() {
                // Close runs on a drained log: everything up to the log end is synced now.
                let end = inner.state.borrow().next_offset;
                result = write_clean_shutdown(inner, end).await;
            }
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
