//! Recovery at open: every segment is reopened, its indexes checked or rebuilt, and the log cut at the first
//! invalid batch.

use std::path::Path;

use super::checkpoint::read_log_start_checkpoint;
use super::{io_error, LogConfig, LogError, RecoveryReport};
use crate::batch::{self, BatchHeader};
use crate::epoch::{self, LeaderEpochCache};
use crate::index::{OffsetIndex, TimeIndex};
use crate::invariant::Invariant;
use crate::io::{Storage, StorageFile};
use crate::runtime::Clock;
use crate::segment::{parse_segment_file_name, Segment};
use crate::types::Offset;

/// Recovers the segments of `directory` and reconciles them with the log start checkpoint; the last segment is
/// reopened as the active one (created when there is none). Returns the segments, the report and the log start.
pub(super) async fn open_segments<S: Storage>(
    storage: &S,
    directory: &Path,
    config: &LogConfig,
    clock: &dyn Clock,
) -> Result<(Vec<Segment<S>>, RecoveryReport, Offset), LogError> {
    let (mut segments, recovery) = recover(storage, directory, config, clock).await?;
    let checkpoint = read_log_start_checkpoint(storage, directory).await;
    let recovered_end = segments.last().map(|segment| segment.next_offset);
    if let (Some(start), Some(end)) = (checkpoint, recovered_end) {
        if start > end {
            // Everything below the recorded log start is deleted, and what lay above it was never synced:
            // start empty at the log start so that no offset below it is ever handed out again.
            log::warn!("{}: log ends at {end} below its start {start}; starting empty", directory.display());
            for segment in segments.drain(..) {
                for path in Segment::<S>::paths(directory, segment.base_offset) {
                    if storage.exists(&path).await {
                        storage.remove(&path).await.map_err(io_error("removing", &path))?;
                    }
                }
            }
        }
    }
    if segments.is_empty() {
        let base = checkpoint.unwrap_or(Offset(0));
        let segment = Segment::create(storage, directory, base, clock.now_ms())
            .await
            .map_err(io_error("creating a segment in", directory))?;
        storage.sync_directory(directory).await.map_err(io_error("syncing", directory))?;
        segments.push(segment);
    }
    let active = segments.last_mut().invariant("at least one segment");
    active.reopen_for_writing(storage, directory).await.map_err(io_error("reopening", &active.path))?;
    let next_offset = active.next_offset;
    let first_base = segments[0].base_offset;
    let log_start_offset = checkpoint.map_or(first_base, |offset| offset.max(first_base)).min(next_offset);
    Ok((segments, recovery, log_start_offset))
}

/// Loads the leader epoch checkpoint and fits it to the recovered log: entries at or past the log end (their
/// batches were lost in a crash, or truncated after the file was written) go, and the first entry starts no lower
/// than the log start. Returns the cache and whether fitting changed it (then it is written at the next flush).
///
/// A missing or unreadable file starts an empty cache. Rebuilding it would take every batch header of the log, and
/// recovery reads only each segment's tail past its last index entry, so a rebuild would cost a read per batch of
/// the whole log at every such open. An empty cache is safe: OffsetForLeaderEpoch answers "undefined" and a follower
/// falls back to truncating at its high watermark, as Kafka's does.
pub(super) async fn open_leader_epochs<S: Storage>(
    storage: &S,
    directory: &Path,
    log_start: Offset,
    log_end: Offset,
) -> (LeaderEpochCache, bool) {
    let mut epochs = match epoch::read_checkpoint(storage, directory).await {
        Ok(Some(epochs)) => epochs,
        Ok(None) => {
            if log_end > log_start {
                log::warn!(
                    "{}: no leader epoch checkpoint; starting with an empty cache",
                    directory.display()
                );
            }
            LeaderEpochCache::default()
        }
        Err(reason) => {
            log::warn!(
                "{}: leader epoch checkpoint unreadable ({reason}); starting with an empty cache",
                directory.display()
            );
            LeaderEpochCache::default()
        }
    };
    let cut_end = epochs.truncate_from_end(log_end);
    let cut_start = epochs.truncate_from_start(log_start);
    (epochs, cut_end || cut_start)
}

/// Opens every segment of `directory`. Closed segments keep their indexes when those are valid (rebuilt
/// otherwise); each segment is scanned only from its last index entry, so the work is proportional to the index
/// interval times the segment count, not to the log size. The log is cut at the first invalid batch.
pub(super) async fn recover<S: Storage>(
    storage: &S,
    directory: &Path,
    config: &LogConfig,
    clock: &dyn Clock,
) -> Result<(Vec<Segment<S>>, RecoveryReport), LogError> {
    let names = storage.list(directory).await.map_err(io_error("listing", directory))?;
    let mut bases: Vec<Offset> = names.iter().filter_map(|name| parse_segment_file_name(name)).collect();
    bases.sort();
    let mut report = RecoveryReport::default();
    let mut segments: Vec<Segment<S>> = Vec::with_capacity(bases.len());
    let mut rewrite_bases = Vec::new();
    let started = clock.now();
    for (position_in_log, &base_offset) in bases.iter().enumerate() {
        let is_last = position_in_log + 1 == bases.len();
        let recovered = recover_segment(
            storage,
            directory,
            config,
            base_offset,
            is_last,
            &mut report,
            &mut rewrite_bases,
        )
        .await?;
        let mut segment = recovered.segment;
        let continuous = segments.last().is_none_or(|previous| previous.next_offset <= base_offset);
        if !continuous {
            log::warn!("{}: overlaps the previous segment; dropped", segment.path.display());
            report.truncated_size += recovered.file_size;
            let _ = storage.remove(&segment.path).await;
            continue;
        }
        if segment.size == 0 && !is_last {
            // An empty closed segment holds nothing; it is a leftover of an interrupted roll.
            for path in Segment::<S>::paths(directory, base_offset) {
                let _ = storage.remove(&path).await;
            }
            continue;
        }
        segment.created_ms = clock.now_ms();
        segments.push(segment);
        if recovered.corrupt {
            // Everything after the first invalid batch goes, including later segments.
            recover_remove_segments(storage, directory, &bases[position_in_log + 1..], &mut report).await;
            break;
        }
    }
    recover_rewrite_indexes(storage, directory, &mut segments, &rewrite_bases).await?;
    report.segment_count = segments.len();
    if !bases.is_empty() {
        log::info!(
            "{}: recovered {} segments in {:?} (scanned {} bytes, cut {} bytes, rebuilt {} indexes)",
            directory.display(),
            report.segment_count,
            clock.now().saturating_duration_since(started),
            report.scanned_size,
            report.truncated_size,
            report.rebuilt_index_count
        );
    }
    Ok((segments, report))
}

/// One segment as recovery left it, before the checks against its neighbours.
struct RecoveredSegment<S: Storage> {
    segment: Segment<S>,
    /// The file's size before any cut.
    file_size: u64,
    /// An invalid batch ended the scan: nothing after it in the log is kept.
    corrupt: bool,
}

/// Opens one segment, loads its indexes (or schedules their rebuild in `rewrite_bases`), scans it from its last
/// index entry and cuts the file at the end of its valid batches.
async fn recover_segment<S: Storage>(
    storage: &S,
    directory: &Path,
    config: &LogConfig,
    base_offset: Offset,
    is_last: bool,
    report: &mut RecoveryReport,
    rewrite_bases: &mut Vec<Offset>,
) -> Result<RecoveredSegment<S>, LogError> {
    let [path, index_path, time_index_path] = Segment::<S>::paths(directory, base_offset);
    let file = storage.open(&path, false).await.map_err(io_error("opening", &path))?;
    let file_size = file.size().await.map_err(io_error("sizing", &path))?;
    // The creation time is set again, from the log's clock, once the segment is kept.
    let mut segment: Segment<S> = Segment::empty(base_offset, path.clone(), file, 0);
    let index = match read_index(storage, &index_path, file_size).await {
        Some((index, complete)) if complete || is_last => Some(index),
        _ => None,
    };
    let scan_from = match index {
        Some(index) => recover_segment_index(storage, &mut segment, index, &time_index_path).await?,
        None => None,
    };
    let scan_from = scan_from.unwrap_or_else(|| {
        report.rebuilt_index_count += 1;
        rewrite_bases.push(base_offset);
        (0, base_offset)
    });
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
    // After corruption, cut the file too, so that later writes are never followed by the old garbage. A clean end
    // before the last file's end is preallocated zeros, or a hole left by unsynced writes with stale bytes after
    // it: cut those as well.
    let corrupt = outcome.corruption.is_some();
    if corrupt || (is_last && outcome.end_position < file_size) {
        segment.file.truncate(outcome.end_position).await.map_err(io_error("truncating", &path))?;
        segment.file.sync().await.map_err(io_error("syncing", &path))?;
    }
    Ok(RecoveredSegment { segment, file_size, corrupt })
}

/// Adopts a loaded offset index and its time index when the last index entry really points at the batch it
/// names; returns where the scan resumes (file position, offset), or `None` when both indexes must be rebuilt.
/// An index with no entries resumes nowhere but is not a rebuild either: the scan starts at 0 and adds entries.
async fn recover_segment_index<S: Storage>(
    storage: &S,
    segment: &mut Segment<S>,
    index: OffsetIndex,
    time_index_path: &Path,
) -> Result<Option<(u64, Offset)>, LogError> {
    let base_offset = segment.base_offset;
    let Some(entry) = index.entries.last().copied() else {
        return Ok(Some((0, base_offset)));
    };
    let header_bytes = StorageFile::read_at(&*segment.file, entry.position as u64, batch::BATCH_HEADER_SIZE)
        .await
        .map_err(io_error("reading", &segment.path))?;
    let entry_offset = Offset(base_offset.0 + entry.relative_offset as i64);
    let matches = BatchHeader::parse(&header_bytes).is_ok_and(|header| header.base_offset() == entry_offset);
    // A missing time index makes the whole index suspect: rebuild both from the log.
    let time_index_bytes = read_whole(storage, time_index_path).await;
    let (true, Some(time_index_bytes)) = (matches, time_index_bytes) else {
        return Ok(None);
    };
    segment.time_index = TimeIndex::decode(&time_index_bytes, entry.relative_offset + 1);
    segment.index = index;
    Ok(Some((entry.position as u64, entry_offset)))
}

/// Removes the files of segments that follow a corrupt one, counting their log bytes as cut.
async fn recover_remove_segments<S: Storage>(
    storage: &S,
    directory: &Path,
    bases: &[Offset],
    report: &mut RecoveryReport,
) {
    for &base in bases {
        for path in Segment::<S>::paths(directory, base) {
            if let Ok(file) = storage.open(&path, false).await {
                if path.extension().is_some_and(|extension| extension == "log") {
                    report.truncated_size += file.size().await.unwrap_or(0);
                }
                let _ = file.close().await;
            }
            let _ = storage.remove(&path).await;
        }
    }
}

/// Closed segments whose index was rebuilt or whose tail was cut get index files that match memory again; the
/// last segment becomes the active one and rewrites its indexes from memory anyway.
async fn recover_rewrite_indexes<S: Storage>(
    storage: &S,
    directory: &Path,
    segments: &mut [Segment<S>],
    rewrite_bases: &[Offset],
) -> Result<(), LogError> {
    let closed_count = segments.len().saturating_sub(1);
    for segment in &mut segments[..closed_count] {
        if rewrite_bases.contains(&segment.base_offset) {
            let path = segment.path.clone();
            segment.reopen_for_writing(storage, directory).await.map_err(io_error("reopening", &path))?;
            segment.seal().await.map_err(io_error("rewriting the indexes of", &path))?;
        }
    }
    Ok(())
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
