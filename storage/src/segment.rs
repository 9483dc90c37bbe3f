//! One segment: a `.log` file of batches with its in-memory offset and time indexes, the writer state of the
//! active segment, and the scan that recovery and lookups share.

use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;

use crate::batch::{validate_batch, BatchError, BatchHeader};
use crate::index::{relative, OffsetIndex, OffsetIndexEntry, TimeIndex, TimeIndexEntry};
use crate::index::{OFFSET_INDEX_ENTRY_SIZE, TIME_INDEX_ENTRY_SIZE};
use crate::invariant::Invariant;
use crate::io::{Storage, StorageFile};
use crate::log::SegmentSpace;
use crate::types::{align_down, align_up, Offset, BLOCK_SIZE};

pub(crate) const LOG_SUFFIX: &str = ".log";
pub(crate) const OFFSET_INDEX_SUFFIX: &str = ".index";
pub(crate) const TIME_INDEX_SUFFIX: &str = ".timeindex";

/// How much a recovery or lookup scan reads at a time.
const SCAN_CHUNK_SIZE: usize = 1 << 20;
/// Index entries are written behind the log once this many are new: one block's worth, so each index write is
/// a whole block and recovery never scans more than about `512 × index.interval.bytes` (2 MiB by default).
/// Concurrent direct-I/O writes per flush: enough to keep the disk busy while the next buffer is copied.
const WRITES_IN_FLIGHT: usize = 8;
pub(crate) const INDEX_WRITE_BATCH_COUNT: usize = BLOCK_SIZE / OFFSET_INDEX_ENTRY_SIZE;

pub(crate) fn segment_file_name(base_offset: Offset, suffix: &str) -> String {
    format!("{:020}{suffix}", base_offset.0)
}

/// Parses `00000000000000001234.log` into offset 1234.
pub(crate) fn parse_segment_file_name(name: &str) -> Option<Offset> {
    let stem = name.strip_suffix(LOG_SUFFIX)?;
    if stem.len() != 20 || !stem.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok().map(Offset)
}

pub(crate) struct Segment<S: Storage> {
    pub(crate) base_offset: Offset,
    pub(crate) path: PathBuf,
    pub(crate) file: Rc<S::File>,
    /// Bytes of batches written to the file (the file itself may be longer: preallocated space).
    pub(crate) size: u64,
    /// The offset after the last batch written.
    pub(crate) next_offset: Offset,
    pub(crate) index: OffsetIndex,
    pub(crate) time_index: TimeIndex,
    pub(crate) bytes_since_index_entry: u64,
    /// Largest batch max-timestamp in the segment, -1 when empty.
    pub(crate) max_timestamp: i64,
    /// Wall-clock creation time, for `segment.ms`.
    pub(crate) created_ms: i64,
    /// The active segment's write state; `None` once the segment is closed.
    pub(crate) writer: Option<SegmentWriter<S>>,
}

pub(crate) struct SegmentWriter<S: Storage> {
    /// Bytes of the partly filled last block, rewritten at the start of the next write.
    tail: Vec<u8>,
    /// File size reserved with fallocate so far.
    allocated_size: u64,
    index_file: S::File,
    time_index_file: S::File,
    index_persisted_count: usize,
    time_index_persisted_count: usize,
}

/// What a scan of a segment's batches found.
pub(crate) struct ScanOutcome {
    pub(crate) end_position: u64,
    pub(crate) next_offset: Offset,
    /// Why the scan stopped before the end of the file, if the bytes there were not a clean end.
    pub(crate) corruption: Option<BatchError>,
}

pub(crate) struct WriteSettings {
    pub(crate) index_interval_size: u32,
    pub(crate) write_size_max: usize,
    pub(crate) segment_space: crate::log::SegmentSpace,
}

impl<S: Storage> Segment<S> {
    pub(crate) fn paths(directory: &Path, base_offset: Offset) -> [PathBuf; 3] {
        [LOG_SUFFIX, OFFSET_INDEX_SUFFIX, TIME_INDEX_SUFFIX]
            .map(|suffix| directory.join(segment_file_name(base_offset, suffix)))
    }

    /// A segment with no batches and no writer, over an open `.log` file.
    pub(crate) fn empty(base_offset: Offset, path: PathBuf, file: S::File, created_ms: i64) -> Self {
        Segment {
            base_offset,
            path,
            file: Rc::new(file),
            size: 0,
            next_offset: base_offset,
            index: OffsetIndex::default(),
            time_index: TimeIndex::default(),
            bytes_since_index_entry: 0,
            max_timestamp: -1,
            created_ms,
            writer: None,
        }
    }

    /// Creates a new, empty active segment.
    pub(crate) async fn create(
        storage: &S,
        directory: &Path,
        base_offset: Offset,
        now_ms: i64,
    ) -> io::Result<Self> {
        let [path, index_path, time_index_path] = Self::paths(directory, base_offset);
        let file = storage.open(&path, true).await?;
        file.truncate(0).await?;
        let index_file = storage.open(&index_path, true).await?;
        index_file.truncate(0).await?;
        let time_index_file = storage.open(&time_index_path, true).await?;
        time_index_file.truncate(0).await?;
        let mut segment = Segment::empty(base_offset, path, file, now_ms);
        segment.writer = Some(SegmentWriter {
            tail: Vec::new(),
            allocated_size: 0,
            index_file,
            time_index_file,
            index_persisted_count: 0,
            time_index_persisted_count: 0,
        });
        Ok(segment)
    }

    /// Makes a recovered segment the active one again: reloads its tail block and reopens its index files.
    pub(crate) async fn reopen_for_writing(&mut self, storage: &S, directory: &Path) -> io::Result<()> {
        if self.writer.is_some() {
            return Ok(());
        }
        let [_, index_path, time_index_path] = Self::paths(directory, self.base_offset);
        let tail_start = align_down(self.size);
        let tail = self.file.read_at(tail_start, (self.size - tail_start) as usize).await?;
        if tail.len() as u64 != self.size - tail_start {
            return Err(io::Error::other(format!("{}: tail block read short", self.path.display())));
        }
        let allocated_size = self.file.size().await?;
        let index_file = storage.open(&index_path, true).await?;
        index_file.truncate(0).await?;
        let time_index_file = storage.open(&time_index_path, true).await?;
        time_index_file.truncate(0).await?;
        // The index files are rewritten from the in-memory entries, which recovery validated; emptied first so
        // that no stale entry survives past the rewritten ones.
        self.writer = Some(SegmentWriter {
            tail: tail.to_vec(),
            allocated_size,
            index_file,
            time_index_file,
            index_persisted_count: 0,
            time_index_persisted_count: 0,
        });
        Ok(())
    }

    /// Takes the active segment's writer out so that its writes can run without a borrow of the log state;
    /// readers keep seeing the segment (its index and written size) meanwhile.
    pub(crate) fn take_writer(&mut self) -> SegmentWriter<S> {
        self.writer.take().invariant("take_writer on a closed segment")
    }

    /// Records batches that `SegmentWriter::write` put in the file: size, offsets, index entries.
    pub(crate) fn record_written(&mut self, batches: &[Bytes], index_interval_size: u32) {
        for batch in batches {
            let header = BatchHeader::parse(batch).invariant("sequenced batches are valid");
            self.record_batch(header, batch.len() as u64, index_interval_size);
        }
    }

    fn record_batch(&mut self, header: &BatchHeader, size: u64, index_interval_size: u32) {
        let relative_offset = relative(self.base_offset, header.base_offset());
        let indexed = self.index.entries.last().is_some_and(|entry| entry.relative_offset >= relative_offset);
        if !indexed && self.bytes_since_index_entry >= index_interval_size as u64 && self.size > 0 {
            self.index.push(OffsetIndexEntry { relative_offset, position: self.size as u32 });
            let newer = self.time_index.entries.last().is_none_or(|last| self.max_timestamp > last.timestamp);
            let time_indexed =
                self.time_index.entries.last().is_some_and(|entry| entry.relative_offset >= relative_offset);
            if newer && !time_indexed && self.max_timestamp >= 0 {
                self.time_index.push(TimeIndexEntry { timestamp: self.max_timestamp, relative_offset });
            }
            self.bytes_since_index_entry = 0;
        }
        self.bytes_since_index_entry += size;
        self.size += size;
        self.max_timestamp = self.max_timestamp.max(header.max_timestamp.get());
        self.next_offset = header.last_offset().next();
    }

    /// Index bytes not yet in the index files, from the block that holds the first new entry; `None` when fewer
    /// than `count_min` entries are new.
    pub(crate) fn pending_index_writes(
        &self,
        writer: &SegmentWriter<S>,
        count_min: usize,
    ) -> Option<IndexWrites> {
        if self.index.entries.len() - writer.index_persisted_count < count_min.max(1)
            && self.time_index.entries.len() == writer.time_index_persisted_count
        {
            return None;
        }
        let encode = |bytes: Vec<u8>, persisted_size: usize| {
            let start = align_down(persisted_size as u64) as usize;
            (start as u64, bytes[start.min(bytes.len())..].to_vec())
        };
        Some(IndexWrites {
            index: encode(self.index.encode(0), writer.index_persisted_count * OFFSET_INDEX_ENTRY_SIZE),
            index_count: self.index.entries.len(),
            time_index: encode(
                self.time_index.encode(0),
                writer.time_index_persisted_count * TIME_INDEX_ENTRY_SIZE,
            ),
            time_index_count: self.time_index.entries.len(),
        })
    }

    /// Seals a segment this caller owns (see `SegmentWriter::seal`); a closed segment is left as it is.
    pub(crate) async fn seal(&mut self) -> io::Result<()> {
        let Some(writer) = self.writer.take() else { return Ok(()) };
        let writes = self.pending_index_writes(&writer, 0);
        writer
            .seal(&self.file, self.size, writes, self.index.entries.len(), self.time_index.entries.len())
            .await
    }

    /// Writes every index entry not yet in the index files.
    pub(crate) async fn write_indexes(&mut self) -> io::Result<()> {
        let mut writer = self.take_writer();
        let result = match self.pending_index_writes(&writer, 0) {
            Some(writes) => writer.write_indexes(writes).await,
            None => Ok(()),
        };
        self.writer = Some(writer);
        result
    }

    /// Cuts the segment at `position` (a batch boundary) whose first offset is `next_offset`.
    pub(crate) async fn truncate_at(&mut self, position: u64, next_offset: Offset) -> io::Result<()> {
        assert!(position <= self.size);
        self.file.truncate(position).await?;
        self.size = position;
        self.next_offset = next_offset;
        self.index.truncate_from_position(position);
        self.time_index.truncate_from_offset(relative(self.base_offset, next_offset));
        self.bytes_since_index_entry = match self.index.entries.last() {
            Some(entry) => position - entry.position as u64,
            None => position,
        };
        // Timestamps of the removed batches may have raised the maximum; the recorded entries bound it below.
        self.max_timestamp = self.time_index.entries.last().map_or(-1, |entry| entry.timestamp);
        if let Some(writer) = self.writer.take() {
            // reopen_for_writing reloads the new tail block and rewrites the index files from memory.
            writer.discard().await;
        }
        Ok(())
    }

    /// Validates batches from `position` (a batch boundary holding `offset`) to the end of the file, rebuilding
    /// index entries on the way. Stops at the first zero-length header (a clean end in preallocated space) or the
    /// first invalid batch (reported as corruption).
    pub(crate) async fn scan_recover(
        &mut self,
        position: u64,
        file_size: u64,
        index_interval_size: u32,
    ) -> io::Result<ScanOutcome> {
        let mut position = position;
        let mut expected_offset = self.next_offset;
        let mut corruption = None;
        self.size = position;
        'chunks: while position < file_size {
            let chunk =
                self.file.read_at(position, SCAN_CHUNK_SIZE.min((file_size - position) as usize)).await?;
            let mut cursor = 0usize;
            while cursor < chunk.len() {
                let rest = &chunk[cursor..];
                if rest.len() >= 12 && rest[..12].iter().all(|byte| *byte == 0) {
                    break 'chunks; // zeroed (preallocated or never written) space: the clean end
                }
                let header = match validate_batch(rest) {
                    Ok((header, _)) => header,
                    Err(BatchError::Truncated { needed, .. })
                        if cursor > 0 && position + cursor as u64 + needed as u64 <= file_size =>
                    {
                        break; // the batch continues in the next chunk
                    }
                    Err(BatchError::Truncated { needed, .. })
                        if cursor == 0
                            && needed > SCAN_CHUNK_SIZE
                            && position + needed as u64 <= file_size =>
                    {
                        // A batch larger than a chunk: read it whole.
                        match self
                            .scan_recover_whole(position, needed, expected_offset, index_interval_size)
                            .await?
                        {
                            Ok((size, next_offset)) => {
                                expected_offset = next_offset;
                                position += size;
                                continue 'chunks;
                            }
                            Err(error) => {
                                corruption = Some(error);
                                break 'chunks;
                            }
                        }
                    }
                    Err(error) => {
                        corruption = Some(error);
                        break 'chunks;
                    }
                };
                if let Err(error) = scan_recover_check_offset(header, expected_offset) {
                    corruption = Some(error);
                    break 'chunks;
                }
                let header = *header;
                let size = header.total_size();
                self.record_batch(&header, size as u64, index_interval_size);
                expected_offset = header.last_offset().next();
                cursor += size;
            }
            if cursor == 0 {
                break;
            }
            position += cursor as u64;
        }
        Ok(ScanOutcome { end_position: self.size, next_offset: self.next_offset, corruption })
    }

    /// Validates and records the batch of `size` bytes at `position`, read whole because it is larger than a scan
    /// chunk. Returns its size and the offset after it, or why it ends the log.
    async fn scan_recover_whole(
        &mut self,
        position: u64,
        size: usize,
        expected_offset: Offset,
        index_interval_size: u32,
    ) -> io::Result<Result<(u64, Offset), BatchError>> {
        let whole = self.file.read_at(position, size).await?;
        let header = match validate_batch(&whole) {
            Ok((header, _)) => *header,
            Err(error) => return Ok(Err(error)),
        };
        if let Err(error) = scan_recover_check_offset(&header, expected_offset) {
            return Ok(Err(error));
        }
        self.record_batch(&header, size as u64, index_interval_size);
        Ok(Ok((size as u64, header.last_offset().next())))
    }
}

/// A batch from before a truncation left in space never rewritten, or a damaged baseOffset (it sits outside the
/// CRC): either way the log cannot continue at a batch that does not start at the expected offset.
fn scan_recover_check_offset(header: &BatchHeader, expected_offset: Offset) -> Result<(), BatchError> {
    if header.base_offset() == expected_offset {
        return Ok(());
    }
    Err(BatchError::BadRecordCount {
        record_count: header.record_count.get(),
        last_offset_delta: header.last_offset_delta.get(),
    })
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Accept {
    /// Not wanted, keep scanning.
    Skip,
    Take,
    /// Take this one and stop.
    TakeLast,
    Stop,
}

/// Index-file bytes to write: (file position, bytes) for each index, and the entry counts they bring the files to.
pub(crate) struct IndexWrites {
    index: (u64, Vec<u8>),
    index_count: usize,
    time_index: (u64, Vec<u8>),
    time_index_count: usize,
}

impl<S: Storage> SegmentWriter<S> {
    /// Writes batches at `size` (the segment's written size): the kept tail block plus the batches, copied into
    /// aligned buffers of at most `write_size_max` bytes. The new partial last block is kept for the next call.
    pub(crate) async fn write(
        &mut self,
        file: &Rc<S::File>,
        size: u64,
        batches: &[Bytes],
        settings: &WriteSettings,
    ) -> io::Result<()> {
        let data_size: u64 = batches.iter().map(|batch| batch.len() as u64).sum();
        let start_position = align_down(size);
        assert_eq!(
            self.tail.len() as u64,
            size - start_position,
            "tail block out of step with the segment size"
        );
        let end_position = size + data_size;
        if data_size == 0 {
            return Ok(());
        }
        if align_up(end_position) > self.allocated_size {
            self.prepare_space(file, align_up(end_position), settings).await?;
        }
        let mut sources = std::iter::once(&self.tail[..]).chain(batches.iter().map(|batch| &batch[..]));
        let mut source: &[u8] = &[];
        let mut position = start_position;
        let mut remaining = (end_position - start_position) as usize;
        let mut new_tail = Vec::new();
        // Up to WRITES_IN_FLIGHT writes run while the next buffer is being filled, so copying overlaps the disk.
        let mut in_flight: std::collections::VecDeque<glommio::Task<io::Result<()>>> =
            std::collections::VecDeque::new();
        let mut result = Ok(());
        // Bounded: each pass writes at least one block.
        while remaining > 0 {
            // Writes end on multiples of write_size_max in the file, as a plain sequential writer's would.
            let to_boundary = settings.write_size_max - (position % settings.write_size_max as u64) as usize;
            let buffer_size = align_up(remaining.min(to_boundary) as u64) as usize;
            let fill_size = buffer_size.min(remaining);
            let mut buffer = file.alloc_buffer(buffer_size);
            write_fill(&mut buffer.as_mut()[..fill_size], &mut source, &mut sources);
            buffer.as_mut()[fill_size..].fill(0);
            if fill_size == remaining {
                let tail_start = align_down(fill_size as u64) as usize;
                new_tail = buffer.as_ref()[tail_start..fill_size].to_vec();
            }
            if in_flight.len() >= WRITES_IN_FLIGHT {
                let oldest = in_flight.pop_front().invariant("non-empty");
                result = result.and(oldest.await);
            }
            let task_file = file.clone();
            in_flight
                .push_back(glommio::spawn_local(async move { task_file.write_at(buffer, position).await }));
            // Let the write task run now so its I/O is submitted before the next buffer is copied.
            futures_lite::future::yield_now().await;
            position += buffer_size as u64;
            remaining -= fill_size;
        }
        for task in in_flight {
            result = result.and(task.await);
        }
        result?;
        self.tail = new_tail;
        Ok(())
    }

    /// Makes room up to at least `end` per the segment-space policy.
    async fn prepare_space(
        &mut self,
        file: &Rc<S::File>,
        end: u64,
        settings: &WriteSettings,
    ) -> io::Result<()> {
        match settings.segment_space {
            SegmentSpace::Grow => self.allocated_size = end,
            SegmentSpace::Fallocate { step } => {
                let target = end.max(self.allocated_size + step);
                file.allocate(target).await?;
                self.allocated_size = target;
            }
            SegmentSpace::Prewrite { step } => {
                // Zeros from the first block past the data: the tail block itself is always rewritten with data.
                let mut position = align_up(self.allocated_size);
                let target = align_up(end.max(self.allocated_size + step));
                // Bounded: each pass writes at least one block.
                while position < target {
                    let size = ((target - position) as usize).min(settings.write_size_max);
                    let mut buffer = file.alloc_buffer(size);
                    buffer.as_mut().fill(0);
                    file.write_at(buffer, position).await?;
                    position += size as u64;
                }
                file.sync().await?;
                self.allocated_size = target;
            }
        }
        Ok(())
    }

    pub(crate) async fn write_indexes(&mut self, writes: IndexWrites) -> io::Result<()> {
        // Time index first: an offset-index entry on disk then implies the time entries before it are too.
        write_block_range(&self.time_index_file, writes.time_index).await?;
        self.time_index_persisted_count = writes.time_index_count;
        write_block_range(&self.index_file, writes.index).await?;
        self.index_persisted_count = writes.index_count;
        Ok(())
    }

    /// Seals the files: indexes at their exact sizes and synced, preallocated log space released, log synced.
    pub(crate) async fn seal(
        mut self,
        file: &S::File,
        size: u64,
        writes: Option<IndexWrites>,
        index_count: usize,
        time_index_count: usize,
    ) -> io::Result<()> {
        if let Some(writes) = writes {
            self.write_indexes(writes).await?;
        }
        self.index_file.truncate((index_count * OFFSET_INDEX_ENTRY_SIZE) as u64).await?;
        self.index_file.sync().await?;
        self.index_file.close().await?;
        self.time_index_file.truncate((time_index_count * TIME_INDEX_ENTRY_SIZE) as u64).await?;
        self.time_index_file.sync().await?;
        self.time_index_file.close().await?;
        file.truncate(size).await?;
        file.sync().await
    }

    pub(crate) async fn discard(self) {
        let _ = self.index_file.close().await;
        let _ = self.time_index_file.close().await;
    }
}

/// Fills `target` from `source` and then from `sources` in order, leaving `source` at the first byte not copied.
fn write_fill<'a>(target: &mut [u8], source: &mut &'a [u8], sources: &mut impl Iterator<Item = &'a [u8]>) {
    let mut filled = 0;
    // Bounded: each pass copies at least one byte or moves to the next source.
    while filled < target.len() {
        if source.is_empty() {
            *source = sources.next().invariant("sources hold exactly the bytes to write");
            continue;
        }
        let take = source.len().min(target.len() - filled);
        target[filled..filled + take].copy_from_slice(&source[..take]);
        filled += take;
        *source = &source[take..];
    }
}

/// Writes `(position, bytes)` to a file as whole blocks (the last one zero-padded).
async fn write_block_range<F: StorageFile>(file: &F, (position, bytes): (u64, Vec<u8>)) -> io::Result<()> {
    if bytes.is_empty() {
        return Ok(());
    }
    let mut buffer = file.alloc_buffer(align_up(bytes.len() as u64) as usize);
    buffer.as_mut()[..bytes.len()].copy_from_slice(&bytes);
    buffer.as_mut()[bytes.len()..].fill(0);
    file.write_at(buffer, position).await
}
