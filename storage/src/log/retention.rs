//! Removing data: truncation (a follower's divergent tail), DeleteRecords, time and size retention. Each runs as
//! a command on the flusher task, the only task that changes files.

use std::io;

use super::checkpoint::{lower_recovery_point, write_leader_epochs, write_log_start_checkpoint};
use super::read::read_segment_batches;
use super::read_ahead::forget_read_ahead;
use super::{io_error, Command, Log, LogError, LogInner};
use crate::index::relative;
use crate::invariant::Invariant;
use crate::io::{Storage, StorageFile};
use crate::segment::{Accept, Segment};
use crate::types::{FilePosition, Offset};

impl<S: Storage> Log<S> {
    /// Seals the active segment and starts a new one at the log end (a no-op on an empty segment).
    pub async fn roll(&self) -> Result<(), LogError> {
        self.run_command(Command::Roll).await
    }

    /// Removes every batch holding an offset at or above `offset` (a straddling batch goes whole); the log end
    /// becomes the base offset of the first removed batch. Callers must not append concurrently.
    pub async fn truncate_to(&self, offset: Offset) -> Result<(), LogError> {
        self.run_command(Command::TruncateTo(offset)).await
    }

    /// DeleteRecords: moves the log start offset up to `offset` (at most the log end; the replica layer keeps it
    /// at most the high watermark) and deletes the segments wholly below it. Returns the new log start offset.
    pub async fn delete_before(&self, offset: Offset) -> Result<Offset, LogError> {
        {
            let state = self.inner.state.borrow();
            if offset > state.next_offset || offset < Offset(0) {
                return Err(LogError::OffsetOutOfRange {
                    offset,
                    log_start: state.log_start_offset,
                    log_end: state.next_offset,
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
}

pub(super) async fn truncate<S: Storage>(inner: &LogInner<S>, offset: Offset) -> Result<(), LogError> {
    let (log_start, next_offset) = {
        let state = inner.state.borrow();
        (state.log_start_offset, state.next_offset)
    };
    if offset >= next_offset {
        return Ok(());
    }
    {
        // Truncation runs on a drained log (see `Command::needs_drained_log`).
        let state = inner.state.borrow();
        assert!(state.unflushed.is_empty(), "truncation with {} batches unwritten", state.unflushed.len());
        assert_eq!(state.durable_offset, next_offset, "truncation of an unsynced log");
    }
    // Before any file changes: the offsets from `offset` on will hold new batches that are not yet synced.
    lower_recovery_point(inner, offset).await?;
    truncate_drop_segments(inner, offset).await?;
    let mut segment = inner.state.borrow_mut().segments.pop().invariant("a segment remains");
    let result =
        truncate_segment(inner, &mut segment, offset).await.map_err(io_error("truncating", &segment.path));
    let new_end = segment.next_offset;
    inner.state.borrow_mut().segments.push(segment);
    result?;
    {
        let mut state = inner.state.borrow_mut();
        state.next_offset = new_end;
        state.flushed_offset = new_end;
        state.durable_offset = state.durable_offset.min(new_end);
        state.log_start_offset = log_start.min(new_end);
        state.update_epochs(|epochs| epochs.truncate_from_end(new_end));
        // The log ends at the target, or below it at the start of a batch that straddled it.
        assert!(new_end <= offset, "truncation to {offset} left the log end at {new_end}");
        assert!(
            state.durable_offset == new_end,
            "durable offset {} not clamped to {new_end}",
            state.durable_offset
        );
        state.assert_offsets();
    }
    // A batch straddling the target went whole: the log now ends below it.
    lower_recovery_point(inner, new_end).await?;
    forget_read_ahead(inner);
    inner.cache.remove_from(inner.id, new_end);
    if new_end < log_start {
        // The cut went below the log start (a straddling batch, or a target below it): the log now starts at its
        // new end, and the checkpoint must say so or a restart would resurrect the old start.
        write_log_start_checkpoint(inner).await?;
    }
    write_leader_epochs(inner).await
}

/// Drops whole segments at or above `offset`, newest first; keeps at least the first one.
async fn truncate_drop_segments<S: Storage>(inner: &LogInner<S>, offset: Offset) -> Result<(), LogError> {
    // Bounded by the segment count: each pass removes one.
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
        let Some(mut segment) = doomed else { return Ok(()) };
        let _ = segment.seal().await;
        segment.file.close().await;
        remove_segment_files(inner, segment.base_offset).await?;
    }
}

/// Cuts `segment` (taken out of the log state while its I/O runs) before the first batch holding an offset at
/// or above `offset`, and makes it the active segment again.
async fn truncate_segment<S: Storage>(
    inner: &LogInner<S>,
    segment: &mut Segment<S>,
    offset: Offset,
) -> io::Result<()> {
    if offset <= segment.base_offset {
        segment.truncate_at(0, segment.base_offset).await?;
    } else if let Some((position, base)) = truncate_segment_find_cut(segment, offset).await? {
        segment.truncate_at(position, base).await?;
        // The time index bounds the maximum only up to its last entry; rescan the rest for the rest.
        let from = segment.index.entries.last().map_or(0, |entry| entry.position as u64);
        let mut max_timestamp = segment.max_timestamp;
        let end = segment.readable_end(from);
        let file = segment.file.open().await?;
        read_segment_batches(&*file, end, FilePosition(from), 1 << 20, |header| {
            max_timestamp = max_timestamp.max(header.max_timestamp.get());
            Accept::Skip
        })
        .await?;
        segment.max_timestamp = max_timestamp;
    }
    segment.file.open().await?.sync().await?;
    segment.reopen_for_writing(&inner.storage, &inner.directory).await?;
    segment.write_indexes().await
}

/// The file position and base offset of the first batch in `segment` that holds an offset at or above `offset`.
pub(super) async fn truncate_segment_find_cut<S: Storage>(
    segment: &Segment<S>,
    offset: Offset,
) -> io::Result<Option<(u64, Offset)>> {
    let (_, lookup) = segment.index.lookup(relative(segment.base_offset, offset));
    let (position, end) = match segment.readable_span(offset, lookup.0) {
        Ok(span) => span,
        // The target lies in a corrupt range: cut where the range starts.
        Err(range) => return Ok(Some((range.position, range.base_offset))),
    };
    let mut cut = None;
    let mut scan_position = position;
    let file = segment.file.open().await?;
    let batches = read_segment_batches(&*file, end, FilePosition(position), 1 << 20, |header| {
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
    Ok(cut)
}

pub(super) async fn retention<S: Storage>(inner: &LogInner<S>, now: i64) -> Result<(), LogError> {
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
pub(super) async fn delete_segments_below_log_start<S: Storage>(inner: &LogInner<S>) -> Result<(), LogError> {
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
        // The descriptor goes before the name: an idle one now, one a reader holds when its read ends. The files
        // are freed in the background (`Storage::remove_in_background`): the flusher goes back to writing at once.
        segment.file.close().await;
        for path in Segment::<S>::paths(&inner.directory, segment.base_offset) {
            if inner.storage.exists(&path).await {
                inner.storage.remove_in_background(&path).await.map_err(io_error("removing", &path))?;
            }
        }
    }
    let log_start = {
        let mut state = inner.state.borrow_mut();
        let log_start = state.log_start_offset;
        // The epoch that held the new first offset now starts there (Kafka's truncateFromStart).
        state.update_epochs(|epochs| epochs.truncate_from_start(log_start));
        log_start
    };
    forget_read_ahead(inner);
    inner.cache.remove_below(inner.id, log_start);
    write_leader_epochs(inner).await
}

async fn remove_segment_files<S: Storage>(inner: &LogInner<S>, base_offset: Offset) -> Result<(), LogError> {
    for path in Segment::<S>::paths(&inner.directory, base_offset) {
        if inner.storage.exists(&path).await {
            inner.storage.remove(&path).await.map_err(io_error("removing", &path))?;
        }
    }
    Ok(())
}
