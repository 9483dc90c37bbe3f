//! Recovery at open: every segment is reopened, its indexes checked or rebuilt, and the log cut at the first
//! invalid batch.

use std::path::Path;
use std::time::Instant;

use super::{io_error, LogConfig, LogError, RecoveryReport};
use crate::batch::{self, BatchHeader};
use crate::index::{OffsetIndex, TimeIndex};
use crate::io::{Storage, StorageFile};
use crate::segment::{parse_segment_file_name, Segment};
use crate::types::{now_ms, Offset};

/// Opens every segment of `directory`. Closed segments keep their indexes when those are valid (rebuilt
/// otherwise); each segment is scanned only from its last index entry, so the work is proportional to the index
/// interval times the segment count, not to the log size. The log is cut at the first invalid batch.
pub(super) async fn recover<S: Storage>(
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
