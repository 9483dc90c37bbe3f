//! Repair of a poisoned log without a restart. A failed write, sync or file change leaves the active segment's
//! tail unknown (after a failed fdatasync nobody can say which written bytes are on disk: fsyncgate). The flusher
//! retries, with backoff, what a restart would do for this one log: reopen the active segment and re-verify it
//! from its last durable point as recovery at open does, then write everything past that point again and sync it
//! through the ordinary flush. Nothing sequenced is dropped: the batches re-read from disk and those still queued
//! keep their offsets, so no offset handed out is ever reused and everything acknowledged stays.

use std::collections::VecDeque;

use super::read::read_segment_batches;
use super::read_ahead::forget_read_ahead;
use super::recovery::{recover_segment, SegmentPlace};
use super::retention::truncate_segment_find_cut;
use super::{io_error, LogError, LogInner, PendingBatch, RecoveryReport};
use crate::batch::BatchHeader;
use crate::invariant::Invariant;
use crate::io::Storage;
use crate::segment::{parse_segment_file_name, Accept, Segment};
use crate::types::{FilePosition, Offset};

/// Re-verifies the active segment from disk and makes the log writable again; on error nothing in memory has
/// changed and the flusher tries again later.
pub(super) async fn repair<S: Storage>(inner: &LogInner<S>) -> Result<(), LogError> {
    let (base_offset, durable_offset, created_ms, old_writer, old_file, truncating, recovery_point) = {
        let mut state = inner.state.borrow_mut();
        let (durable_offset, truncating, recovery_point) =
            (state.durable_offset, state.truncating, state.recovery_point);
        let active = state.active();
        (
            active.base_offset,
            durable_offset,
            active.created_ms,
            active.writer.take(),
            active.file.clone(),
            truncating,
            recovery_point,
        )
    };
    // Everything durable lies in the active segment or before it: a roll syncs the old segment before it starts
    // a new one, and truncation leaves the durable offset at the new end.
    assert!(durable_offset >= base_offset, "durable offset {durable_offset} below the active segment");
    // A truncation that failed half-way may have cut durable batches: trust only the recovery point it lowered
    // before changing any file, as a restart would.
    let durable_below = if truncating {
        durable_offset.min(recovery_point.unwrap_or(base_offset)).max(base_offset)
    } else {
        durable_offset
    };
    if let Some(writer) = old_writer {
        writer.discard().await;
    }
    // Reopened as a restart would: the descriptor that saw the failure leaves the shard's open-file cache (now, or
    // when a read that holds it ends), and the re-verification below opens the file again through the cache.
    old_file.close().await;
    drop(old_file);
    let config = inner.config.borrow().clone();
    let place = SegmentPlace { base_offset, is_last: true, next_base: None, durable_below };
    let mut report = RecoveryReport::default();
    let recovered =
        recover_segment(&inner.storage, &inner.directory, &config, &place, &mut report, &mut Vec::new())
            .await?;
    let mut segment = recovered.segment;
    segment.created_ms = created_ms;
    if let Some(range) = segment.corrupt.first() {
        // Durable data gone bad under the active segment: appends must not follow it, and rolling past it is
        // what a restart does (`open_segments_active`).
        return Err(LogError::Corrupt(range.clone()));
    }
    remove_orphan_segments(inner, base_offset).await?;
    let plan = repair_plan(inner, durable_below, segment.next_offset)?;
    let rewritten = reread_tail(&mut segment, plan.rewrite_from).await?;
    // Nothing here needs free space: on a disk that is still full the repair succeeds and the next write fails
    // again, with a longer backoff (it is reset only by a flush that succeeds).
    segment
        .reopen_for_writing_with(&inner.storage, &inner.directory, false)
        .await
        .map_err(io_error("reopening", &segment.path))?;
    repair_install(inner, segment, plan, rewritten, report.scanned_size);
    Ok(())
}

/// What the repaired log looks like: where the rewrite starts and where the log ends.
struct RepairPlan {
    /// The durable offset after the repair: the rewrite of the tail starts here.
    rewrite_from: Offset,
    /// The log end after the repair: the old one, or what is on disk after a failed truncation.
    next_offset: Offset,
    /// The segment on disk ends here.
    disk_end: Offset,
    truncating: bool,
}

/// Checks what the disk holds (`disk_end`) against memory. The disk must hold everything that was written
/// (`flushed_offset`) and nothing that was never sequenced; a truncation that failed half-way is the exception,
/// and its log end is taken from the disk.
fn repair_plan<S: Storage>(
    inner: &LogInner<S>,
    durable_below: Offset,
    disk_end: Offset,
) -> Result<RepairPlan, LogError> {
    let state = inner.state.borrow();
    let (durable, flushed, next) = (state.durable_offset, state.flushed_offset, state.next_offset);
    if state.truncating {
        return Ok(RepairPlan {
            rewrite_from: durable_below.min(disk_end),
            next_offset: disk_end.min(next),
            disk_end,
            truncating: true,
        });
    }
    if disk_end < flushed || disk_end > next {
        return Err(LogError::Poisoned(format!(
            "the disk holds the active segment up to offset {disk_end}, but batches up to {flushed} were written \
             and {next} sequenced; the log stays read-only"
        )));
    }
    Ok(RepairPlan { rewrite_from: durable, next_offset: next, disk_end, truncating: false })
}

/// Reads the batches from `from` to the segment's end back from disk (validated by the recovery scan), and cuts
/// the segment before them in memory: they are written again, to the same place, and synced by the next flush,
/// as nothing tells whether the failed sync made them durable.
async fn reread_tail<S: Storage>(
    segment: &mut Segment<S>,
    from: Offset,
) -> Result<Vec<PendingBatch>, LogError> {
    let path = segment.path.clone();
    let Some((position, base)) =
        truncate_segment_find_cut(segment, from).await.map_err(io_error("reading", &path))?
    else {
        return Ok(Vec::new());
    };
    assert_eq!(base, from, "the durable offset {from} is not a batch boundary");
    let batches = {
        // Held for the read only, through the shard's open-file cache like every segment file.
        let file = segment.file.open().await.map_err(io_error("opening", &path))?;
        read_segment_batches(&*file, segment.size, FilePosition(position), 1 << 20, |_| Accept::Take)
            .await
            .map_err(io_error("reading", &path))?
    };
    let mut pending = Vec::with_capacity(batches.len());
    let mut expected = from;
    for bytes in batches {
        let header = BatchHeader::parse(&bytes).invariant("the recovery scan validated these batches");
        assert_eq!(
            header.base_offset(),
            expected,
            "re-read batches of {} are not contiguous",
            path.display()
        );
        expected = header.last_offset().next();
        pending.push(PendingBatch {
            base_offset: header.base_offset(),
            last_offset: header.last_offset(),
            max_timestamp: header.max_timestamp.get(),
            bytes,
        });
    }
    assert_eq!(expected, segment.next_offset, "re-read {} up to {expected}, not its end", path.display());
    segment.cut_in_memory(position, from).await;
    Ok(pending)
}

/// Files of segments after the active one are what a roll that failed after creating them left: nothing was ever
/// written to them (a segment joins the log only once its files exist durably).
async fn remove_orphan_segments<S: Storage>(
    inner: &LogInner<S>,
    active_base: Offset,
) -> Result<(), LogError> {
    let names = inner.storage.list(&inner.directory).await.map_err(io_error("listing", &inner.directory))?;
    for base in names.iter().filter_map(|name| parse_segment_file_name(name)) {
        if base > active_base {
            for path in Segment::<S>::paths(&inner.directory, base) {
                if inner.storage.exists(&path).await {
                    inner.storage.remove(&path).await.map_err(io_error("removing", &path))?;
                }
            }
        }
    }
    Ok(())
}

/// Puts the re-verified segment in place of the active one and queues the re-read batches ahead of those never
/// written; the log is writable again.
fn repair_install<S: Storage>(
    inner: &LogInner<S>,
    segment: Segment<S>,
    plan: RepairPlan,
    rewritten: Vec<PendingBatch>,
    scanned_size: u64,
) {
    let mut state = inner.state.borrow_mut();
    let (rewritten_count, rewritten_size) =
        (rewritten.len(), rewritten.iter().map(|batch| batch.bytes.len()).sum::<usize>());
    let mut unflushed: VecDeque<PendingBatch> = rewritten.into();
    // Batches a failed write left whole on disk were re-read; the queue keeps only those after them.
    let queued: Vec<PendingBatch> =
        state.unflushed.drain(..).filter(|batch| batch.base_offset >= plan.disk_end).collect();
    unflushed.extend(queued);
    let mut expected = plan.rewrite_from;
    for batch in &unflushed {
        assert_eq!(batch.base_offset, expected, "repaired queue is not contiguous at {expected}");
        expected = batch.last_offset.next();
    }
    assert_eq!(expected, plan.next_offset, "repaired queue ends at {expected}, not the log end");
    state.segments.pop();
    state.segments.push(segment);
    state.unflushed_size = unflushed.iter().map(|batch| batch.bytes.len()).sum();
    state.unflushed = unflushed;
    state.durable_offset = plan.rewrite_from;
    state.flushed_offset = plan.rewrite_from;
    state.next_offset = plan.next_offset;
    state.unsynced_size = 0;
    if plan.truncating {
        let end = plan.next_offset;
        state.log_start_offset = state.log_start_offset.min(end);
        state.update_epochs(|epochs| epochs.truncate_from_end(end));
        state.truncating = false;
    }
    // The leader epoch checkpoint is written again at the next flush, in case its last write was the failure.
    state.epochs_version += 1;
    state.assert_offsets();
    drop(state);
    inner.cache.remove_from(inner.id, plan.rewrite_from);
    forget_read_ahead(inner);
    log::info!(
        "log {}: repaired: re-verified {scanned_size} bytes from offset {}, writing again {rewritten_count} \
         batches ({rewritten_size} bytes) read back from disk and the queue up to offset {}",
        inner.directory.display(),
        plan.rewrite_from,
        plan.next_offset
    );
}
