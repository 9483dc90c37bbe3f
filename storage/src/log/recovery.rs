//! Recovery at open: every segment is reopened and its indexes checked or rebuilt; what may not have been synced
//! (from the recovery point on, nothing after a clean shutdown) is scanned and cut at the first invalid batch;
//! damage found in durable data is kept, reported and skipped, never cut.

use std::path::Path;

use super::checkpoint::{
    read_clean_shutdown, read_log_start_checkpoint, read_recovery_point, remove_clean_shutdown,
};
use super::{io_error, LogConfig, LogError, RecoveryReport};
use crate::batch::{self, BatchHeader};
use crate::epoch::{self, LeaderEpochCache};
use crate::index::{OffsetIndex, TimeIndex};
use crate::invariant::Invariant;
use crate::io::{Storage, StorageFile};
use crate::open_files::SegmentFile;
use crate::runtime::Clock;
use crate::segment::{parse_segment_file_name, ScanLimits, ScanOutcome, Segment};
use crate::types::Offset;

/// Recovers the segments of `directory` and reconciles them with the log start checkpoint; the last segment is
/// reopened as the active one (created when there is none). Returns the segments, the report and the log start.
///
/// What is durable decides what is scanned: after a clean shutdown (the marker holds the log end) everything is,
/// and each segment is read only from its last index entry; otherwise everything below the recovery point is,
/// and the data from there on is scanned whole. The marker is removed, durably, before the log writes again.
pub(super) async fn open_segments<S: Storage>(
    storage: &S,
    directory: &Path,
    config: &LogConfig,
    clock: &dyn Clock,
) -> Result<(Vec<Segment<S>>, RecoveryReport, Offset), LogError> {
    let clean_end = read_clean_shutdown(storage, directory).await;
    let recovery_point = match clean_end {
        Some(end) => Some(end),
        None => read_recovery_point(storage, directory).await,
    };
    // Without either file nothing is known to be durable: every batch may be a torn tail (the log of a version
    // that wrote neither, or one that never rolled nor closed).
    let durable_below = recovery_point.unwrap_or(Offset(0));
    let (mut segments, mut recovery) = recover(storage, directory, config, clock, durable_below).await?;
    recovery.clean_shutdown = clean_end.is_some();
    recovery.recovery_point = recovery_point;
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
    open_segments_active(
        storage,
        directory,
        &mut segments,
        checkpoint.unwrap_or(Offset(0)),
        durable_below,
        clock,
    )
    .await?;
    remove_clean_shutdown(storage, directory).await?;
    let next_offset = segments.last().invariant("at least one segment").next_offset;
    assert!(
        next_offset >= durable_below,
        "recovered log end {next_offset} below the durable {durable_below}"
    );
    let first_base = segments[0].base_offset;
    let log_start_offset = checkpoint.map_or(first_base, |offset| offset.max(first_base)).min(next_offset);
    Ok((segments, recovery, log_start_offset))
}

/// Makes the last segment the active one. A new segment is started when there is none, when the last one holds
/// a corrupt range (appends never follow damaged bytes, and the damage stays where the next open finds it again),
/// or when the log ends below what was durable (a segment file went missing): the new one starts at the durable
/// end, so no offset handed out before is handed out again.
async fn open_segments_active<S: Storage>(
    storage: &S,
    directory: &Path,
    segments: &mut Vec<Segment<S>>,
    log_start: Offset,
    durable_below: Offset,
    clock: &dyn Clock,
) -> Result<(), LogError> {
    let new_base = match segments.last() {
        None => Some(log_start.max(durable_below)),
        Some(last) if !last.corrupt.is_empty() || last.next_offset < durable_below => {
            if last.next_offset < durable_below {
                log::warn!(
                    "{}: recovered log end {} is below the recovery point {durable_below}; continuing there",
                    directory.display(),
                    last.next_offset
                );
            }
            let base = last.next_offset.max(durable_below);
            assert!(base > last.base_offset, "a new segment at {base} would replace {}", last.path.display());
            Some(base)
        }
        Some(_) => None,
    };
    if let Some(base) = new_base {
        let segment = Segment::create(storage, directory, base, clock.now_ms())
            .await
            .map_err(io_error("creating a segment in", directory))?;
        storage.sync_directory(directory).await.map_err(io_error("syncing", directory))?;
        segments.push(segment);
    }
    let active = segments.last_mut().invariant("at least one segment");
    active.reopen_for_writing(storage, directory).await.map_err(io_error("reopening", &active.path))
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

/// Opens every segment of `directory`. Each segment keeps its indexes when those are valid (rebuilt otherwise)
/// and is scanned from its last index entry below `durable_below`: a durable closed segment only from its last
/// entry (work proportional to the index interval times the segment count, not to the log size), data from the
/// recovery point on whole. The log is cut at the first invalid batch at or past `durable_below`; an invalid
/// batch below it is durable data gone bad, kept as a corrupt range of its segment.
pub(super) async fn recover<S: Storage>(
    storage: &S,
    directory: &Path,
    config: &LogConfig,
    clock: &dyn Clock,
    durable_below: Offset,
) -> Result<(Vec<Segment<S>>, RecoveryReport), LogError> {
    // Files a removal in the background had not finished (they are invisible to the listing below anyway).
    if let Err(error) = storage.remove_leftovers(directory).await {
        log::warn!("{}: leftover removed segment files stay: {error}", directory.display());
    }
    let names = storage.list(directory).await.map_err(io_error("listing", directory))?;
    let mut bases: Vec<Offset> = names.iter().filter_map(|name| parse_segment_file_name(name)).collect();
    bases.sort();
    let mut report = RecoveryReport::default();
    let mut segments: Vec<Segment<S>> = Vec::with_capacity(bases.len());
    let mut rewrite_bases = Vec::new();
    let started = clock.now();
    for (position_in_log, &base_offset) in bases.iter().enumerate() {
        let is_last = position_in_log + 1 == bases.len();
        let next_base = bases.get(position_in_log + 1).copied();
        let place = SegmentPlace { base_offset, is_last, next_base, durable_below };
        let recovered =
            recover_segment(storage, directory, config, &place, &mut report, &mut rewrite_bases).await?;
        let mut segment = recovered.segment;
        let continuous = segments.last().is_none_or(|previous| previous.next_offset <= base_offset);
        if !continuous {
            log::warn!("{}: overlaps the previous segment; dropped", segment.path.display());
            report.truncated_size += recovered.file_size;
            segment.file.close().await;
            let _ = storage.remove(&segment.path).await;
            continue;
        }
        if segment.size == 0 && !is_last {
            // An empty closed segment holds nothing; it is a leftover of an interrupted roll.
            segment.file.close().await;
            for path in Segment::<S>::paths(directory, base_offset) {
                let _ = storage.remove(&path).await;
            }
            continue;
        }
        segment.created_ms = clock.now_ms();
        report.corrupt_ranges.extend(segment.corrupt.iter().cloned());
        segments.push(segment);
        if recovered.cut {
            // Everything after the first invalid batch past the recovery point goes, including later segments.
            recover_remove_segments(storage, directory, &bases[position_in_log + 1..], &mut report).await;
            break;
        }
    }
    recover_rewrite_indexes(storage, directory, &mut segments, &rewrite_bases).await?;
    report.segment_count = segments.len();
    if !bases.is_empty() {
        log::info!(
            "{}: recovered {} segments in {:?} (scanned {} bytes, {} of them past the recovery point; cut {} \
             bytes, rebuilt {} indexes, {} corrupt ranges kept)",
            directory.display(),
            report.segment_count,
            clock.now().saturating_duration_since(started),
            report.scanned_size,
            report.unsynced_scanned_size,
            report.truncated_size,
            report.rebuilt_index_count,
            report.corrupt_ranges.len()
        );
    }
    Ok((segments, report))
}

/// Where a segment sits in the log, for its recovery.
pub(super) struct SegmentPlace {
    pub(super) base_offset: Offset,
    pub(super) is_last: bool,
    /// The base offset of the segment after it, if any.
    pub(super) next_base: Option<Offset>,
    /// Every batch below this offset was durable before the log stopped.
    pub(super) durable_below: Offset,
}

/// One segment as recovery left it, before the checks against its neighbours.
pub(super) struct RecoveredSegment<S: Storage> {
    pub(super) segment: Segment<S>,
    /// The file's size before any cut.
    pub(super) file_size: u64,
    /// An invalid batch past the recovery point ended the scan and the file was cut there: nothing after it in
    /// the log is kept.
    pub(super) cut: bool,
}

/// Opens one segment, loads its indexes (or schedules their rebuild in `rewrite_bases`), scans it from its last
/// index entry below the recovery point and cuts the file at the end of its valid batches past it.
pub(super) async fn recover_segment<S: Storage>(
    storage: &S,
    directory: &Path,
    config: &LogConfig,
    place: &SegmentPlace,
    report: &mut RecoveryReport,
    rewrite_bases: &mut Vec<Offset>,
) -> Result<RecoveredSegment<S>, LogError> {
    let base_offset = place.base_offset;
    let [path, index_path, time_index_path] = Segment::<S>::paths(directory, base_offset);
    let file = SegmentFile::new(storage, path.clone());
    let file_size = {
        let open = file.open().await.map_err(io_error("opening", &path))?;
        open.size().await.map_err(io_error("sizing", &path))?
    };
    // The creation time is set again, from the log's clock, once the segment is kept.
    let mut segment: Segment<S> = Segment::empty(base_offset, file, 0);
    let index = match read_index(storage, &index_path, file_size).await {
        Some((index, complete)) if complete || place.is_last => Some(index),
        _ => None,
    };
    let scan_from = match index {
        Some(index) => {
            recover_segment_index(storage, &mut segment, index, &time_index_path, place.durable_below).await?
        }
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
    let limits = ScanLimits {
        file_size,
        index_interval_size: config.index_interval_size,
        durable_below: place.durable_below,
        next_base: place.next_base,
    };
    let outcome = segment.scan_recover(scan_from.0, &limits).await.map_err(io_error("scanning", &path))?;
    report.scanned_size += outcome.end_position - scan_from.0;
    report.unsynced_scanned_size += outcome.unsynced_size;
    if !segment.corrupt.is_empty() {
        // Index files of a damaged segment stay as they were, so that the next open finds the damage again
        // (from the same last index entry, or by the same rebuild) rather than reading into it.
        rewrite_bases.retain(|base| *base != base_offset);
    }
    let cut =
        recover_segment_cut(&mut segment, file_size, place.is_last, &outcome, report, rewrite_bases).await?;
    Ok(RecoveredSegment { segment, file_size, cut })
}

/// After corruption past the recovery point, cuts the file too, so that later writes are never followed by the old
/// garbage. A clean end before the last file's end is preallocated zeros, or a hole left by unsynced writes with
/// stale bytes after it: cut those as well. Returns whether the scan stopped at corruption.
async fn recover_segment_cut<S: Storage>(
    segment: &mut Segment<S>,
    file_size: u64,
    is_last: bool,
    outcome: &ScanOutcome,
    report: &mut RecoveryReport,
    rewrite_bases: &mut Vec<Offset>,
) -> Result<bool, LogError> {
    if let Some(error) = &outcome.corruption {
        rewrite_bases.push(segment.base_offset);
        let lost = file_size - outcome.end_position;
        report.truncated_size += lost;
        log::warn!(
            "{}: truncating at position {} (offset {}): {error}; {lost} bytes past the recovery point cut",
            segment.path.display(),
            outcome.end_position,
            outcome.next_offset
        );
    }
    let corrupt = outcome.corruption.is_some();
    if corrupt || (is_last && outcome.end_position < file_size) {
        let path = &segment.path;
        let file = segment.file.open().await.map_err(io_error("opening", path))?;
        file.truncate(outcome.end_position).await.map_err(io_error("truncating", path))?;
        file.sync().await.map_err(io_error("syncing", path))?;
    }
    Ok(corrupt)
}

/// Adopts a loaded offset index (its entries below the recovery point) and its time index when the last entry
/// really points at the batch it names; returns where the scan resumes (file position, offset), or `None` when
/// both indexes must be rebuilt.
/// An index with no entries resumes nowhere but is not a rebuild either: the scan starts at 0 and adds entries.
async fn recover_segment_index<S: Storage>(
    storage: &S,
    segment: &mut Segment<S>,
    index: OffsetIndex,
    time_index_path: &Path,
    durable_below: Offset,
) -> Result<Option<(u64, Offset)>, LogError> {
    let base_offset = segment.base_offset;
    let mut index = index;
    // Entries at or past the recovery point may point past data that never reached the disk (unsynced writes
    // land in any order): the scan starts below it and re-creates them.
    index.entries.retain(|entry| Offset(base_offset.0 + entry.relative_offset as i64) < durable_below);
    let Some(entry) = index.entries.last().copied() else {
        return Ok(Some((0, base_offset)));
    };
    let file = segment.file.open().await.map_err(io_error("opening", &segment.path))?;
    let header_bytes = StorageFile::read_at(&*file, entry.position as u64, batch::BATCH_HEADER_SIZE)
        .await
        .map_err(io_error("reading", &segment.path))?;
    drop(file);
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
        if rewrite_bases.contains(&segment.base_offset) && segment.corrupt.is_empty() {
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
