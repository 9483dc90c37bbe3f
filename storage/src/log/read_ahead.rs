//! Sequential read-ahead into the shard's batch cache for readers catching up from disk.

use std::rc::Rc;

use super::read::read_segment_batches_to;
use super::LogInner;
use crate::batch::BatchHeader;
use crate::io::Storage;
use crate::open_files::SegmentFile;
use crate::segment::Accept;
use crate::types::{FilePosition, Offset};

/// Sequential read-ahead for a reader catching up from disk. A fetch that had to read the disk leaves a frontier
/// (the offset and file position just past what it read); the log then reads the next chunk from there into the
/// shard's batch cache while the fetch's response travels and the consumer works, and each later fetch that reaches
/// the newest chunk starts the one after it. A fetch for an offset a running read-ahead covers waits for it instead
/// of reading the same bytes itself.
#[derive(Default)]
pub(super) struct ReadAhead {
    pub(super) frontier: Option<Frontier>,
    /// The offset the running read-ahead starts at.
    pub(super) in_flight_from: Option<Offset>,
    /// The offset the newest read-ahead started at: a reader past it has begun on the newest chunk.
    pub(super) newest_from: Option<Offset>,
    /// Bumped by truncation, deletion and close: a read-ahead started before must not fill the cache.
    pub(super) generation: u64,
}

#[derive(Clone, Copy, Debug)]
pub(super) struct Frontier {
    pub(super) offset: Offset,
    pub(super) segment_base: Offset,
    pub(super) position: u64,
}

/// Starts reading the chunk at the read-ahead frontier into the shard's cache, unless one is running, the shard's
/// read-ahead memory is spent, the frontier's data is already cached, or there is nothing written past it.
/// glommio runs a spawned task at once, so no borrow of the read-ahead state may be held by the caller.
pub(super) fn start_read_ahead<S: Storage>(inner: &Rc<LogInner<S>>, chunk_size: usize) {
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
        // A corrupt range stops read-ahead: the reader's own read there gets the error.
        let readable_end = segment.readable_end(frontier.position);
        if frontier.position >= readable_end {
            return;
        }
        let chunk_end = segment.index.chunk_end(frontier.position, chunk_size as u64);
        (segment.file.clone(), readable_end.min(chunk_end))
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
    let read = run_read_ahead(inner.clone(), file, end, frontier, size, generation);
    inner.runtime.spawner.spawn_detached(Box::pin(read));
}

async fn run_read_ahead<S: Storage>(
    inner: Rc<LogInner<S>>,
    file: SegmentFile<S>,
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
    // A file that cannot be opened ends the read-ahead: the reader's own read meets and reports the error.
    let Ok(file) = file.open().await else { return };
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
pub(super) fn forget_read_ahead<S: Storage>(inner: &LogInner<S>) {
    let mut read_ahead = inner.read_ahead.borrow_mut();
    read_ahead.generation += 1;
    read_ahead.frontier = None;
    read_ahead.newest_from = None;
}
