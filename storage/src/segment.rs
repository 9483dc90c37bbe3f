//! One segment: a `.log` file of batches with its in-memory offset and time indexes, the writer state of the
//! active segment, and the scan that recovery and lookups share.

use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::batch::{validate_batch, BatchError, BatchHeader, BATCH_HEADER_SIZE};
use crate::index::{relative, OffsetIndex, OffsetIndexEntry, TimeIndex, TimeIndexEntry};
use crate::index::{OFFSET_INDEX_ENTRY_SIZE, TIME_INDEX_ENTRY_SIZE};
use crate::invariant::Invariant;
use crate::io::{Storage, StorageFile};
use crate::log::{CorruptRange, SegmentSpace};
use crate::open_files::{FileHandle, SegmentFile};
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
    /// The `.log` file by name: opened from the shard's cache for each read, write or sync (no descriptor held).
    pub(crate) file: SegmentFile<S>,
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
    /// Ranges of durable data that failed validation at open, by position; reads stop at them (see
    /// [`Segment::readable_span`]). Recovery rolls past a damaged last segment, so appends never follow damaged
    /// bytes; a truncation into a damaged segment may make it active again, and appends then follow its last
    /// valid batch.
    pub(crate) corrupt: Vec<CorruptRange>,
}

pub(crate) struct SegmentWriter<S: Storage> {
    /// Bytes of the partly filled last block, rewritten at the start of the next write.
    tail: Vec<u8>,
    /// File size reserved with fallocate so far.
    allocated_size: u64,
    index_file: SegmentFile<S>,
    time_index_file: SegmentFile<S>,
    index_persisted_count: usize,
    time_index_persisted_count: usize,
    /// The `.log` file while it holds writes not yet synced: pinned open in the cache, so that the fdatasync that
    /// makes them durable goes through the descriptor that wrote them (fsyncgate: a write-back error is reported
    /// to the descriptors open when it happens). Released by the sync (`sync_active`) or the seal.
    pub(crate) unsynced_file: Option<FileHandle<S::File>>,
}

/// The open files of a segment being sealed, held from [`SegmentWriter::open_for_seal`] through the seal.
pub(crate) struct SealFiles<S: Storage> {
    log: FileHandle<S::File>,
    index: FileHandle<S::File>,
    time_index: FileHandle<S::File>,
}

/// What a scan of a segment's batches found.
pub(crate) struct ScanOutcome {
    pub(crate) end_position: u64,
    pub(crate) next_offset: Offset,
    /// Why the scan stopped before the end of the file, if the bytes there were not a clean end: an invalid batch
    /// at or past the recovery point (damage below it is kept in `Segment::corrupt` and the scan goes on).
    pub(crate) corruption: Option<BatchError>,
    /// Bytes of valid batches at or past the recovery point: what may not have been synced.
    pub(crate) unsynced_size: u64,
}

/// The bounds of a recovery scan of one segment.
pub(crate) struct ScanLimits {
    pub(crate) file_size: u64,
    pub(crate) index_interval_size: u32,
    /// Every batch below this offset was durable: damage there is kept and reported, never cut.
    pub(crate) durable_below: Offset,
    /// The next segment's base offset, if one follows: the offset a corrupt range at this segment's end runs to.
    pub(crate) next_base: Option<Offset>,
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

    /// A segment with no batches and no writer, over its `.log` file.
    pub(crate) fn empty(base_offset: Offset, file: SegmentFile<S>, created_ms: i64) -> Self {
        Segment {
            base_offset,
            path: file.path().to_path_buf(),
            file,
            size: 0,
            next_offset: base_offset,
            index: OffsetIndex::default(),
            time_index: TimeIndex::default(),
            bytes_since_index_entry: 0,
            max_timestamp: -1,
            created_ms,
            writer: None,
            corrupt: Vec::new(),
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
        let file = SegmentFile::create(storage, path).await?;
        let index_file = SegmentFile::create(storage, index_path).await?;
        let time_index_file = SegmentFile::create(storage, time_index_path).await?;
        let mut segment = Segment::empty(base_offset, file, now_ms);
        segment.writer = Some(SegmentWriter {
            tail: Vec::new(),
            allocated_size: 0,
            index_file,
            time_index_file,
            index_persisted_count: 0,
            time_index_persisted_count: 0,
            unsynced_file: None,
        });
        Ok(segment)
    }

    /// Makes a recovered segment the active one again: reloads its tail block and reopens its index files.
    pub(crate) async fn reopen_for_writing(&mut self, storage: &S, directory: &Path) -> io::Result<()> {
        self.reopen_for_writing_with(storage, directory, true).await
    }

    /// [`Segment::reopen_for_writing`] that leaves the index files as they are (`empty_indexes` false): the repair
    /// of a poisoned log keeps them, as they hold nothing its rewrite of the same batches at the same positions
    /// contradicts, and truncating them would need space again to rewrite them. The next index write rewrites
    /// them from their first block, over blocks they already own.
    pub(crate) async fn reopen_for_writing_with(
        &mut self,
        storage: &S,
        directory: &Path,
        empty_indexes: bool,
    ) -> io::Result<()> {
        if self.writer.is_some() {
            return Ok(());
        }
        let [_, index_path, time_index_path] = Self::paths(directory, self.base_offset);
        let tail_start = align_down(self.size);
        let (tail, allocated_size) = {
            let file = self.file.open().await?;
            let tail = file.read_at(tail_start, (self.size - tail_start) as usize).await?;
            (tail, file.size().await?)
        };
        if tail.len() as u64 != self.size - tail_start {
            return Err(io::Error::other(format!("{}: tail block read short", self.path.display())));
        }
        // Through the shard's open-file cache, as every segment file: `create` empties the file, `open_existing`
        // keeps what it holds (creating it only when it is missing).
        let (index_file, time_index_file) = if empty_indexes {
            // The index files are rewritten from the in-memory entries, which recovery validated; emptied first
            // so that no stale entry survives past the rewritten ones.
            (
                SegmentFile::create(storage, index_path).await?,
                SegmentFile::create(storage, time_index_path).await?,
            )
        } else {
            (
                SegmentFile::open_existing(storage, index_path).await?,
                SegmentFile::open_existing(storage, time_index_path).await?,
            )
        };
        self.writer = Some(SegmentWriter {
            tail: tail.to_vec(),
            allocated_size,
            index_file,
            time_index_file,
            index_persisted_count: 0,
            time_index_persisted_count: 0,
            unsynced_file: None,
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
        let files = writer.open_for_seal(&self.file).await?;
        writer.seal(files, self.size, writes, self.index.entries.len(), self.time_index.entries.len()).await
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
        self.file.open().await?.truncate(position).await?;
        self.cut_in_memory(position, next_offset).await;
        Ok(())
    }

    /// [`Segment::truncate_at`] that leaves the file as it is: the bytes past `position` are to be written again,
    /// the same, by the repair of a poisoned log (which must not need space to succeed).
    pub(crate) async fn cut_in_memory(&mut self, position: u64, next_offset: Offset) {
        assert!(position <= self.size);
        self.size = position;
        self.next_offset = next_offset;
        self.index.truncate_from_position(position);
        self.corrupt.retain(|range| range.position < position);
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
    }

    /// Validates batches from `position` (a batch boundary holding `self.next_offset`) to the end of the file,
    /// rebuilding index entries on the way. Stops at the first zero-length header (a clean end in preallocated
    /// space) or the first invalid batch at or past `limits.durable_below` (reported as corruption: the caller
    /// cuts there). An invalid batch, or zeros, below `durable_below` is damage to durable data: the range up to
    /// the next valid batch (or the end of the file) goes to `self.corrupt` and the scan goes on after it.
    pub(crate) async fn scan_recover(
        &mut self,
        position: u64,
        limits: &ScanLimits,
    ) -> io::Result<ScanOutcome> {
        let mut position = position;
        let mut unsynced_size = 0;
        self.size = position;
        // Bounded: each pass ends the scan or skips a corrupt range of at least one byte.
        let corruption = loop {
            let stop = self.scan_recover_run(position, limits, &mut unsynced_size).await?;
            let error = match stop {
                Some(error) => error,
                None if self.size < limits.file_size && self.next_offset < limits.durable_below => {
                    // Zeros where durable batches should be: a lost or zeroed block.
                    BatchError::BadLength { batch_length: 0 }
                }
                None => break None,
            };
            if self.next_offset >= limits.durable_below {
                break Some(error); // a torn or never-synced tail: the caller cuts here
            }
            position = self.scan_recover_skip(limits, &error).await?;
            if position >= limits.file_size {
                break None;
            }
        };
        assert!(self.size <= limits.file_size, "scan of {} ran past the file", self.path.display());
        Ok(ScanOutcome { end_position: self.size, next_offset: self.next_offset, corruption, unsynced_size })
    }

    /// One stretch of valid batches from `position`: returns why it stopped (`None` at a clean end or the end
    /// of the file), with `self.size` and `self.next_offset` just past the last valid batch.
    async fn scan_recover_run(
        &mut self,
        position: u64,
        limits: &ScanLimits,
        unsynced_size: &mut u64,
    ) -> io::Result<Option<BatchError>> {
        let file_size = limits.file_size;
        let mut position = position;
        let mut expected_offset = self.next_offset;
        let file = self.file.open().await?;
        // Bounded: each pass consumes at least one batch or stops.
        while position < file_size {
            let chunk = file.read_at(position, SCAN_CHUNK_SIZE.min((file_size - position) as usize)).await?;
            let mut cursor = 0usize;
            while cursor < chunk.len() {
                let rest = &chunk[cursor..];
                if rest.len() >= 12 && rest[..12].iter().all(|byte| *byte == 0) {
                    return Ok(None); // zeroed (preallocated or never written) space: the clean end
                }
                let header = match validate_batch(rest) {
                    Ok((header, _)) => *header,
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
                        let whole = file.read_at(position, needed).await?;
                        match validate_batch(&whole) {
                            Ok((header, _)) => *header,
                            Err(error) => return Ok(Some(error)),
                        }
                    }
                    Err(error) => return Ok(Some(error)),
                };
                if let Err(error) = scan_recover_check_offset(&header, expected_offset) {
                    return Ok(Some(error));
                }
                let size = header.total_size();
                self.record_batch(&header, size as u64, limits.index_interval_size);
                if header.base_offset() >= limits.durable_below {
                    *unsynced_size += size as u64;
                }
                expected_offset = header.last_offset().next();
                cursor += size;
            }
            if cursor == 0 {
                break;
            }
            position += cursor as u64;
        }
        Ok(None)
    }

    /// Records the invalid batch at `self.size` (below the recovery point: durable data) as a corrupt range up to
    /// the next valid batch, or to the end of the file; logs it once and returns where the scan goes on.
    async fn scan_recover_skip(&mut self, limits: &ScanLimits, error: &BatchError) -> io::Result<u64> {
        let position = self.size;
        let base_offset = self.next_offset;
        let found = self.scan_recover_resync(position + 1, limits, base_offset).await?;
        let (end_position, end_offset) = found.unwrap_or_else(|| {
            // Nothing valid follows: the range holds every offset up to the next segment, or up to the durable
            // log end in the last segment, so that none of them is handed out again.
            (limits.file_size, limits.next_base.unwrap_or(limits.durable_below).max(base_offset))
        });
        let range = CorruptRange {
            segment_path: self.path.clone(),
            segment_base: self.base_offset,
            position,
            size: end_position - position,
            base_offset,
            end_offset,
        };
        log::error!("{range}: {error}; kept, reads of these offsets fail and none is reused");
        self.corrupt.push(range);
        self.bytes_since_index_entry += end_position - position;
        self.size = end_position;
        self.next_offset = end_offset;
        Ok(end_position)
    }

    /// The first position at or after `from` where a whole valid batch (header fields and CRC-32C) starts whose
    /// base offset lies after `after` and before the next segment's base: where the log goes on after a corrupt
    /// range. Batches are stored back to back with no alignment, so every byte position is a candidate; most fail
    /// at the magic byte. A batch stored inside a record's value could pass too: the offset bounds make that
    /// unlikely, and such a wrong guess costs unreadable offsets, never a reused one.
    async fn scan_recover_resync(
        &self,
        from: u64,
        limits: &ScanLimits,
        after: Offset,
    ) -> io::Result<Option<(u64, Offset)>> {
        let file_size = limits.file_size;
        // Offsets in one segment span at most i32::MAX (the flusher rolls before that): with the bounds below,
        // a random 64-bit base offset in garbage passes with a chance of about 2^-33.
        let plausible = |header: &BatchHeader| {
            let base = header.base_offset();
            header.magic == 2
                && base > after
                && base.0 - self.base_offset.0 <= i32::MAX as i64
                && limits.next_base.is_none_or(|next| base < next)
        };
        let mut chunk_start = from;
        let file = self.file.open().await?;
        // Bounded: each pass moves `chunk_start` forward by at least one byte or returns.
        while chunk_start + BATCH_HEADER_SIZE as u64 <= file_size {
            let size = SCAN_CHUNK_SIZE.min((file_size - chunk_start) as usize);
            let chunk = file.read_at(chunk_start, size).await?;
            let candidate_count = chunk.len().saturating_sub(BATCH_HEADER_SIZE - 1);
            for cursor in 0..candidate_count {
                let Ok(header) = BatchHeader::parse(&chunk[cursor..]) else { break };
                if !plausible(header) {
                    continue;
                }
                let (position, needed) = (chunk_start + cursor as u64, header.total_size());
                let valid = if cursor + needed <= chunk.len() {
                    validate_batch(&chunk[cursor..]).is_ok()
                } else if position + needed as u64 <= file_size {
                    let whole = file.read_at(position, needed).await?;
                    validate_batch(&whole).is_ok()
                } else {
                    false
                };
                if valid {
                    return Ok(Some((position, header.base_offset())));
                }
            }
            if candidate_count == 0 {
                break;
            }
            chunk_start += candidate_count as u64;
        }
        Ok(None)
    }

    /// Where a read for `target` may go in this segment, around its corrupt ranges: the range holding `target`
    /// as the error, or the file span to read — from `from` (the index lookup's position) or the end of the last
    /// range wholly before `target`, to the first range after it or the segment's end.
    pub(crate) fn readable_span(&self, target: Offset, from: u64) -> Result<(u64, u64), CorruptRange> {
        let mut span = (from, self.size);
        for range in &self.corrupt {
            if range.contains(target) {
                return Err(range.clone());
            }
            if range.end_offset <= target {
                span.0 = span.0.max(range.position + range.size);
            } else if range.position >= span.0 {
                span.1 = span.1.min(range.position);
            }
        }
        Ok(span)
    }

    /// Where a read from `position` must stop: the first corrupt range at or after it, or the segment's end.
    pub(crate) fn readable_end(&self, position: u64) -> u64 {
        self.corrupt
            .iter()
            .map(|range| range.position)
            .filter(|start| *start >= position)
            .fold(self.size, u64::min)
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
        file: &FileHandle<S::File>,
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
        // Pinned from the first write on, whether it succeeds or not: a failed write poisons the log, and the pin
        // goes with the writer then.
        self.unsynced_file = Some(file.clone());
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

    /// Makes room for data up to `end` per the segment-space policy, before `write` hands any byte to the kernel,
    /// so a caller can tell a failed allocation (nothing written) from a failed write.
    pub(crate) async fn reserve(
        &mut self,
        file: &FileHandle<S::File>,
        end: u64,
        settings: &WriteSettings,
    ) -> io::Result<()> {
        if align_up(end) > self.allocated_size {
            self.prepare_space(file, align_up(end), settings).await?;
        }
        Ok(())
    }

    /// Makes room up to at least `end` per the segment-space policy.
    async fn prepare_space(
        &mut self,
        file: &FileHandle<S::File>,
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

    /// Writes index bytes behind the log. The index files are opened from the cache without waiting for room (the
    /// caller may hold the log file) and are not pinned while unsynced: the seal syncs them through whatever
    /// descriptor is open then, and recovery checks an index against the log before trusting it, so a write lost
    /// with an evicted descriptor would cost an index rebuild, never data.
    pub(crate) async fn write_indexes(&mut self, writes: IndexWrites) -> io::Result<()> {
        // Time index first: an offset-index entry on disk then implies the time entries before it are too.
        if !writes.time_index.1.is_empty() {
            write_block_range(&*self.time_index_file.open_nested().await?, writes.time_index).await?;
        }
        self.time_index_persisted_count = writes.time_index_count;
        if !writes.index.1.is_empty() {
            write_block_range(&*self.index_file.open_nested().await?, writes.index).await?;
        }
        self.index_persisted_count = writes.index_count;
        Ok(())
    }

    /// Opens both index files (from the shard's cache, over the cap: the caller holds the `.log`), for a caller to
    /// hold through [`SegmentWriter::write_indexes`], whose own opens are then cache hits: a failure here (EMFILE,
    /// for files the cache had closed) comes before any index byte is written.
    pub(crate) async fn open_indexes(&self) -> io::Result<[FileHandle<S::File>; 2]> {
        Ok([self.index_file.open_nested().await?, self.time_index_file.open_nested().await?])
    }

    /// Opens (from the shard's cache) every file [`SegmentWriter::seal`] touches, before it changes any: held
    /// through the seal, so a shortage of descriptors (EMFILE, for a file the cache had closed) fails here with
    /// nothing changed and the writer intact. The `.log` is the pinned descriptor if its last writes are unsynced;
    /// the caller holds no other file (the index files go over the cap, as nested opens).
    pub(crate) async fn open_for_seal(&self, file: &SegmentFile<S>) -> io::Result<SealFiles<S>> {
        let log = match &self.unsynced_file {
            Some(pinned) => pinned.clone(),
            None => file.open().await?,
        };
        let index = self.index_file.open_nested().await?;
        let time_index = self.time_index_file.open_nested().await?;
        Ok(SealFiles { log, index, time_index })
    }

    /// Seals the files (opened by [`SegmentWriter::open_for_seal`]): indexes at their exact sizes and synced,
    /// preallocated log space released, log synced through the descriptor that wrote it. The index files are
    /// closed after it: a closed segment's indexes live in memory and need no descriptor.
    pub(crate) async fn seal(
        mut self,
        files: SealFiles<S>,
        size: u64,
        writes: Option<IndexWrites>,
        index_count: usize,
        time_index_count: usize,
    ) -> io::Result<()> {
        let SealFiles { log, index, time_index } = files;
        if let Some(writes) = writes {
            // Its opens are cache hits: the files are held.
            self.write_indexes(writes).await?;
        }
        let sizes = [
            (index_count * OFFSET_INDEX_ENTRY_SIZE) as u64,
            (time_index_count * TIME_INDEX_ENTRY_SIZE) as u64,
        ];
        for ((index_file, open), size) in
            [(&self.index_file, index), (&self.time_index_file, time_index)].into_iter().zip(sizes)
        {
            open.truncate(size).await?;
            open.sync().await?;
            drop(open);
            index_file.close().await;
        }
        drop(self.unsynced_file.take());
        log.truncate(size).await?;
        log.sync().await
    }

    /// Drops the write state without writing (a truncation rewrites the indexes from memory afterwards).
    pub(crate) async fn discard(self) {
        self.index_file.close().await;
        self.time_index_file.close().await;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::SimStorage;

    fn range(position: u64, size: u64, base_offset: i64, end_offset: i64) -> CorruptRange {
        CorruptRange {
            segment_path: PathBuf::from("/sim/00000000000000000000.log"),
            segment_base: Offset(0),
            position,
            size,
            base_offset: Offset(base_offset),
            end_offset: Offset(end_offset),
        }
    }

    #[test]
    fn reads_go_around_corrupt_ranges() {
        let storage = SimStorage::new();
        let path = PathBuf::from("/sim/00000000000000000000.log");
        let file = futures_lite::future::block_on(SegmentFile::create(&storage, path)).unwrap();
        let mut segment: Segment<SimStorage> = Segment::empty(Offset(0), file, 0);
        segment.size = 10_000;
        segment.corrupt = vec![range(2_000, 500, 20, 25), range(6_000, 4_000, 60, 100)];
        // (target offset, index lookup position) → the span to read, or the index of the range that holds it.
        let check = |target: i64, from: u64, expected: Result<(u64, u64), usize>| {
            let span = segment.readable_span(Offset(target), from);
            let expected = expected.map_err(|index| segment.corrupt[index].clone());
            assert_eq!(span, expected, "target {target} from {from}");
        };
        check(5, 0, Ok((0, 2_000)));
        check(19, 1_000, Ok((1_000, 2_000)));
        check(20, 1_000, Err(0));
        check(24, 1_000, Err(0));
        // Past the first range: a lookup before it starts at its end.
        check(25, 1_000, Ok((2_500, 6_000)));
        check(40, 3_000, Ok((3_000, 6_000)));
        check(60, 5_000, Err(1));
        check(99, 5_000, Err(1));
        assert_eq!(segment.readable_end(0), 2_000);
        assert_eq!(segment.readable_end(2_500), 6_000);
        assert_eq!(segment.readable_end(6_000), 6_000);
    }
}
