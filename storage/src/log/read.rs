//! Reads: from the shard cache, the unflushed queue, or the disk (leaving a frontier for read-ahead), and the
//! lookups by timestamp.

use std::io;
use std::path::PathBuf;

use bytes::Bytes;

use super::read_ahead::{start_read_ahead, Frontier};
use super::{io_error, Log, LogError, ReadBound};
use crate::batch::{self, BatchHeader};
use crate::index::relative;
use crate::io::{Storage, StorageFile};
use crate::open_files::SegmentFile;
use crate::segment::Accept;
use crate::types::{FilePosition, Offset};

/// A read from disk (and a read-ahead chunk) is at most this large.
const READ_CHUNK_SIZE_MAX: usize = 4 << 20;

impl<S: Storage> Log<S> {
    /// Whole batches from the one holding `offset`, up to `size_max` bytes (at least one batch when `min_one`,
    /// Kafka's first-batch exception), never past `bound`. The first batch may start below `offset`.
    pub async fn read(
        &self,
        offset: Offset,
        size_max: usize,
        bound: ReadBound,
        min_one: bool,
    ) -> Result<Vec<Bytes>, LogError> {
        let upper = self.read_upper(offset, bound)?;
        if offset >= upper {
            return Ok(Vec::new());
        }
        self.read_wait_for_read_ahead(offset).await;
        let mut budget = Budget { size_max, min_one, used: 0, upper };
        // 1. The shard cache (written batches), continuing into the unflushed queue.
        let (mut batches, next) = self.read_cached(offset, &mut budget);
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

    /// The offset reads stop below under `bound`, after checking that `offset` lies inside the log.
    fn read_upper(&self, offset: Offset, bound: ReadBound) -> Result<Offset, LogError> {
        let state = self.inner.state.borrow();
        if offset < state.log_start_offset || offset > state.next_offset {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start: state.log_start_offset,
                log_end: state.next_offset,
            });
        }
        Ok(match bound {
            ReadBound::Below(limit) => limit.min(state.next_offset),
            ReadBound::LogEnd => state.next_offset,
        })
    }

    /// A running read-ahead from at or below `offset` is about to put it in the cache: waits for it rather than
    /// read the same bytes twice (a reader whose batch is cached already, such as one at the tail, goes on).
    async fn read_wait_for_read_ahead(&self, offset: Offset) {
        // Bounded: every read-ahead ends, and its guard clears the slot and notifies.
        while self.inner.read_ahead.borrow().in_flight_from.is_some_and(|from| from <= offset)
            && !self.inner.cache.contains(self.inner.id, offset)
        {
            self.inner.read_ahead_done.notified().await;
        }
    }

    /// Batches from the shard cache starting at the one holding `offset`, and the offset just past them.
    fn read_cached(&self, offset: Offset, budget: &mut Budget) -> (Vec<Bytes>, Offset) {
        let mut batches = Vec::new();
        let mut next = offset;
        let cached =
            self.inner.cache.read(self.inner.id, offset, |base, bytes| budget.admit(base, bytes.len()));
        for (_, cached) in cached {
            next = cached.last_offset.next();
            batches.push(cached.bytes);
        }
        (batches, next)
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
                let (_, lookup) = segment.index.lookup(relative(segment.base_offset, target));
                // Around a corrupt range: start past one wholly before the target, stop at the next one.
                let (start, end) = segment.readable_span(target, lookup.0).map_err(LogError::Corrupt)?;
                let chunk_size = take_max.min(READ_CHUNK_SIZE_MAX) as u64;
                let size_hint = (segment.index.chunk_end(start, chunk_size).min(end) - start) as usize;
                let file = segment.file.clone();
                let (base, path) = (segment.base_offset, segment.path.clone());
                (base, file, FilePosition(start), size_hint, path, end, segment.next_offset)
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
            // Held for the read: the shard's open-file cache does not close it meanwhile.
            let segment_file = segment_file.open().await.map_err(io_error("opening", &path))?;
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
                    // A corrupt range ends the search in this segment: batches past it are not looked at.
                    let size = segment.readable_end(position.0);
                    let reader = ReadOnlySegment::<S> { file: segment.file.clone(), size };
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
    file: SegmentFile<S>,
    size: u64,
}

impl<S: Storage> ReadOnlySegment<S> {
    async fn read_batches(
        &self,
        position: FilePosition,
        size_hint: usize,
        accept: impl FnMut(&BatchHeader) -> Accept,
    ) -> io::Result<Vec<Bytes>> {
        let file = self.file.open().await?;
        read_segment_batches(&*file, self.size, position, size_hint, accept).await
    }
}

/// Reads whole batches from `position` while `accept` says yes, within `end` bytes of the file.
pub(super) async fn read_segment_batches<F: StorageFile>(
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
pub(super) async fn read_segment_batches_to<F: StorageFile>(
    file: &F,
    end: u64,
    position: FilePosition,
    size_hint: usize,
    take_max: usize,
    mut accept: impl FnMut(&BatchHeader) -> Accept,
) -> io::Result<(Vec<Bytes>, u64)> {
    let mut taken = Taken { batches: Vec::new(), end: position.0, size: 0 };
    let mut position = position.0;
    // Bounded: every pass consumes at least one batch or stops.
    'chunks: while position < end {
        let left = take_max.saturating_sub(taken.size);
        if taken.size > 0 && left < batch::BATCH_HEADER_SIZE {
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
                    let batch_end = position + (cursor + size) as u64;
                    if cursor + size <= chunk.len() {
                        taken.push(chunk.slice(cursor..cursor + size), batch_end);
                    } else {
                        let whole = file.read_at(position + cursor as u64, size).await?;
                        if whole.len() < size {
                            break 'chunks;
                        }
                        taken.push(whole, batch_end);
                    }
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
            // A header that does not fit the chunk: read the batch whole, or stop at a damaged one.
            match read_segment_batches_to_whole(file, position, &chunk, &mut accept, &mut taken).await? {
                Some(size) => position += size,
                None => break,
            }
            continue;
        }
        position += cursor as u64;
    }
    Ok((taken.batches, taken.end))
}

/// What a segment read has taken so far.
struct Taken {
    batches: Vec<Bytes>,
    /// The file position just past the last batch taken.
    end: u64,
    size: usize,
}

impl Taken {
    fn push(&mut self, batch: Bytes, end: u64) {
        self.size += batch.len();
        self.batches.push(batch);
        self.end = end;
    }
}

/// The batch at `position` whose header starts `chunk` but which is larger than it: reads it whole and offers it to
/// `accept`. Returns its size to step over, or `None` to stop (a damaged header or short file, a stop, a last take).
async fn read_segment_batches_to_whole<F: StorageFile>(
    file: &F,
    position: u64,
    chunk: &Bytes,
    accept: &mut impl FnMut(&BatchHeader) -> Accept,
    taken: &mut Taken,
) -> io::Result<Option<u64>> {
    let Ok(header) = BatchHeader::parse(chunk) else { return Ok(None) };
    if header.total_size() <= chunk.len() {
        return Ok(None);
    }
    let whole = file.read_at(position, header.total_size()).await?;
    let Ok(header) = BatchHeader::parse(&whole) else { return Ok(None) };
    if whole.len() < header.total_size() {
        return Ok(None);
    }
    let size = whole.len() as u64;
    let decision = accept(header);
    match decision {
        Accept::Skip => {}
        Accept::Stop => return Ok(None),
        Accept::Take => taken.push(whole, position + size),
        Accept::TakeLast => {
            taken.push(whole, position + size);
            return Ok(None);
        }
    }
    Ok(Some(size))
}
