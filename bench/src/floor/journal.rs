//! One core's file: record bytes appended with direct I/O and made durable by group commit.
//!
//! `Journal` copies bytes into one block-aligned buffer and writes it with `pwrite` on an `O_DIRECT` descriptor
//! whenever it is full, and at each commit the partial last block too (zero-padded; that block is kept in the buffer
//! and written again by the next commit, as Sluice's `SegmentWriter` keeps its tail block). The file grows with every
//! commit, as Sluice's segments do by default (`SegmentSpace::Grow`), so each fdatasync also commits the size change.
//!
//! `run_committer` is the core's one writer thread: it takes every submission waiting in its queue, appends their
//! records, writes, fdatasyncs once, and only then writes each submission's reply to its socket. Requests that arrive
//! while a sync runs wait in the queue for the next round: that is the whole group commit.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::TcpStream;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;

use bytes::Bytes;

/// The direct-I/O block: offsets, lengths and buffer addresses are multiples of it (the disk's 4 KiB physical block).
pub const BLOCK_SIZE: usize = 4096;
/// Bytes per write: Sluice's `write_size_max` default (1 MiB), so a busy round writes as Sluice's flusher does.
pub const WRITE_SIZE: usize = 1 << 20;
/// Submissions one round takes at most. Producers keep a few requests in flight per connection (sluice-bench: 5),
/// so a round normally takes everything waiting; the bound only keeps a flood from delaying every reply behind it.
const ROUND_COUNT_MAX: usize = 1024;

/// What a connection hands its core: record bytes to append and the reply frame to send once they are durable.
pub struct Submission {
    pub records: Vec<Bytes>,
    /// None for a Produce with acks=0.
    pub reply: Option<Reply>,
}

pub struct Reply {
    pub stream: Arc<TcpStream>,
    pub frame: Bytes,
}

/// Counters of one core's writer, read by the server's periodic stats line.
#[derive(Default)]
pub struct JournalStats {
    pub submission_count: AtomicU64,
    pub sync_count: AtomicU64,
    pub record_size: AtomicU64,
}

/// A block-aligned heap buffer, without `unsafe`: a `Vec` one block larger than needed, used from its first aligned
/// byte. The `Vec` is never resized, so the address stays put.
struct AlignedBuffer {
    storage: Vec<u8>,
    start: usize,
    size: usize,
}

impl AlignedBuffer {
    fn new(size: usize) -> Self {
        assert!(size.is_multiple_of(BLOCK_SIZE), "buffer size {size} is not a multiple of {BLOCK_SIZE}");
        let storage = vec![0u8; size + BLOCK_SIZE];
        let start = storage.as_ptr().align_offset(BLOCK_SIZE);
        assert!(start < BLOCK_SIZE, "no aligned start in a {BLOCK_SIZE}-byte margin");
        AlignedBuffer { storage, start, size }
    }

    fn bytes(&self) -> &[u8] {
        &self.storage[self.start..self.start + self.size]
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + self.size]
    }
}

fn align_down(value: usize) -> usize {
    value - value % BLOCK_SIZE
}

fn align_up(value: usize) -> usize {
    align_down(value + BLOCK_SIZE - 1)
}

pub struct Journal {
    file: File,
    buffer: AlignedBuffer,
    /// File position of the buffer's first byte: always block-aligned.
    position: u64,
    /// Bytes of the buffer that hold data (the kept tail block, then new bytes).
    filled: usize,
    /// Bytes at the start of the buffer already on disk (the kept tail block).
    written: usize,
    /// A write happened since the last fdatasync.
    unsynced: bool,
    /// Record bytes appended over the journal's life.
    appended_size: u64,
}

impl Journal {
    /// Creates (or truncates) `path` for direct I/O.
    pub fn create(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)?;
        Ok(Journal {
            file,
            buffer: AlignedBuffer::new(WRITE_SIZE),
            position: 0,
            filled: 0,
            written: 0,
            unsynced: false,
            appended_size: 0,
        })
    }

    /// Record bytes appended so far (the file's logical size; the file itself ends on a block boundary).
    pub fn appended_size(&self) -> u64 {
        self.appended_size
    }

    /// Copies `data` behind what is there, writing every buffer that fills.
    pub fn append(&mut self, mut data: &[u8]) -> io::Result<()> {
        self.appended_size += data.len() as u64;
        while !data.is_empty() {
            let take = (WRITE_SIZE - self.filled).min(data.len());
            self.buffer.bytes_mut()[self.filled..self.filled + take].copy_from_slice(&data[..take]);
            self.filled += take;
            data = &data[take..];
            if self.filled == WRITE_SIZE {
                self.file.write_all_at(self.buffer.bytes(), self.position)?;
                self.position += WRITE_SIZE as u64;
                self.filled = 0;
                self.written = 0;
                self.unsynced = true;
            }
        }
        Ok(())
    }

    /// Writes what is buffered (the last block zero-padded) and fdatasyncs, if anything was appended since the last
    /// commit. Afterwards every appended byte is durable.
    pub fn commit(&mut self) -> io::Result<()> {
        if self.filled > self.written {
            let padded = align_up(self.filled);
            self.buffer.bytes_mut()[self.filled..padded].fill(0);
            self.file.write_all_at(&self.buffer.bytes()[..padded], self.position)?;
            self.unsynced = true;
            // Keep the partial last block at the buffer's start: the next commit writes it again, longer.
            let tail_start = align_down(self.filled);
            self.buffer.bytes_mut().copy_within(tail_start..self.filled, 0);
            self.position += tail_start as u64;
            self.filled -= tail_start;
            self.written = self.filled;
        }
        if self.unsynced {
            self.file.sync_data()?;
            self.unsynced = false;
        }
        assert_eq!(
            self.position + self.filled as u64,
            self.appended_size,
            "buffer position out of step with the bytes appended"
        );
        Ok(())
    }
}

/// The core's writer loop: rounds of (take all waiting submissions, append, write, fdatasync, reply), until every
/// sender is gone. An I/O error ends it: a floor that went on answering without writing would be no floor.
pub fn run_committer(
    mut journal: Journal,
    submissions: &Receiver<Submission>,
    stats: &JournalStats,
) -> io::Result<()> {
    let mut round: Vec<Submission> = Vec::new();
    while let Ok(first) = submissions.recv() {
        round.push(first);
        while round.len() < ROUND_COUNT_MAX {
            match submissions.try_recv() {
                Ok(submission) => round.push(submission),
                Err(_) => break,
            }
        }
        let before = journal.appended_size();
        for records in round.iter().flat_map(|submission| submission.records.iter()) {
            journal.append(records)?;
        }
        let synced = journal.appended_size() > before;
        journal.commit()?;
        stats.submission_count.fetch_add(round.len() as u64, Ordering::Relaxed);
        stats.sync_count.fetch_add(u64::from(synced), Ordering::Relaxed);
        stats.record_size.fetch_add(journal.appended_size() - before, Ordering::Relaxed);
        for reply in round.drain(..).filter_map(|submission| submission.reply) {
            // A client that went away only loses its own answer; its reader thread sees the closed socket.
            let _ = (&*reply.stream).write_all(&reply.frame);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn scratch_file(name: &str) -> PathBuf {
        // Under the target directory: O_DIRECT needs a real file system (tmpfs refuses it).
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/floor-tests");
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(format!("{name}-{}", std::process::id()))
    }

    #[test]
    fn appends_of_any_size_land_contiguously_on_disk() {
        // Proves the file holds exactly the appended bytes in order — across partial blocks rewritten by later
        // commits, full 1 MiB buffers, and commits with nothing new — followed only by zero padding.
        let path = scratch_file("contiguous");
        let mut journal = Journal::create(&path).unwrap();
        let mut expected = Vec::new();
        let sizes = [1usize, 4095, 4096, 100, 3 << 20, 5000, 0, 1 << 20, 17];
        for (index, size) in sizes.iter().enumerate() {
            let data: Vec<u8> = (0..*size).map(|byte| (byte * 31 + index * 7) as u8 | 1).collect();
            journal.append(&data).unwrap();
            expected.extend_from_slice(&data);
            if index % 2 == 0 {
                journal.commit().unwrap();
            }
        }
        journal.commit().unwrap();
        journal.commit().unwrap();
        let on_disk = std::fs::read(&path).unwrap();
        assert_eq!(on_disk.len(), align_up(expected.len()));
        assert_eq!(&on_disk[..expected.len()], &expected[..]);
        assert!(on_disk[expected.len()..].iter().all(|&byte| byte == 0));
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn aligned_buffer_starts_on_a_block() {
        // Proves the safe aligned allocation really is aligned, as O_DIRECT requires.
        for _ in 0..8 {
            let buffer = AlignedBuffer::new(BLOCK_SIZE * 2);
            assert_eq!(buffer.bytes().as_ptr() as usize % BLOCK_SIZE, 0);
            assert_eq!(buffer.bytes().len(), BLOCK_SIZE * 2);
        }
    }
}
