//! glommio direct-I/O files: the production implementation of the I/O seam.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;
use glommio::io::{DmaBuffer, DmaFile, OpenOptions};

use crate::invariant::Invariant;
use crate::io::{Storage, StorageFile};
use crate::open_files::OpenFiles;
use crate::types::BLOCK_SIZE;

/// Direct-I/O storage on the local file system. Create one per executor with [`DmaStorage::new`], which works around
/// glommio's polled-I/O probe (see below) for the data directory's device; its clones share the executor's cache of
/// open segment files.
#[derive(Clone, Debug)]
pub struct DmaStorage {
    open_files: OpenFiles<DmaStorageFile>,
    removals: Rc<Removals>,
}

/// The suffix a file gets once it is only waiting to be removed (see [`Storage::remove_in_background`]).
pub const REMOVED_SUFFIX: &str = ".deleted";
/// A file waiting for removal shrinks by this much at a time.
const REMOVAL_STEP_SIZE: u64 = 8 << 20;
/// The pause between two steps of one removal.
const REMOVAL_STEP_PAUSE: std::time::Duration = std::time::Duration::from_millis(5);
/// A file is not shrunk before it has waited this long: a read that opened it before it left its log (on the
/// blocking pool, through its own descriptor) has finished by then and saw the whole file.
const REMOVAL_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// The executor's queue of files to remove, worked through by one background task at a time.
///
/// Why gently: freeing a file's blocks is done by the file system inside the call, and on a file system mounted
/// with online discard (as this machine's ext4 is) each freed extent is also a discard the device must process:
/// unlinking a 256 MiB file took 57 ms here. A retention pass that unlinked its segments inline held each
/// partition's flusher (and so its acks=all answers) for the whole of it, and the device's discards delayed every
/// other partition's writes and syncs: workload (i)'s p99 jumped to 0.6–1.6 s in the second a pass ran. Shrinking
/// a file in `REMOVAL_STEP_SIZE` steps with a pause between spreads the same work over time, one file at a time
/// per shard, on the blocking pool.
#[derive(Debug, Default)]
struct Removals {
    /// Each file with the time it was queued.
    queue: std::cell::RefCell<std::collections::VecDeque<(std::time::Instant, PathBuf)>>,
    running: std::cell::Cell<bool>,
}

/// Name of the file that [`DmaStorage::new`] reads first on every executor.
pub const PROBE_FILE_NAME: &str = ".sluice-dma-probe";

impl DmaStorage {
    /// glommio decides whether a device supports polled I/O from the first readable DMA file an executor opens on
    /// it. When that file is empty (a new segment opened read+write), the probe misreads the device and every
    /// later DMA read from this executor fails with EOPNOTSUPP (os error 95). Opening and reading a non-empty file
    /// first settles the probe correctly, so every shard calls this before it opens any segment.
    ///
    /// `open_files_max` caps the segment files this executor keeps open when idle (see `open_files.rs`).
    pub async fn new(data_directory: &Path, open_files_max: usize) -> io::Result<DmaStorage> {
        std::fs::create_dir_all(data_directory)?;
        let probe_path = data_directory.join(PROBE_FILE_NAME);
        let probe_size = std::fs::metadata(&probe_path).map(|metadata| metadata.len()).unwrap_or(0);
        if probe_size < BLOCK_SIZE as u64 {
            std::fs::write(&probe_path, vec![0u8; BLOCK_SIZE])?;
        }
        let file = OpenOptions::new().read(true).dma_open(&probe_path).await.map_err(io::Error::from)?;
        let block = file.read_at_aligned(0, BLOCK_SIZE).await.map_err(io::Error::from)?;
        let _ = file.close().await;
        if block.len() != BLOCK_SIZE {
            return Err(io::Error::other(format!("probe file {} read short", probe_path.display())));
        }
        Ok(DmaStorage { open_files: OpenFiles::new(open_files_max), removals: Rc::default() })
    }

    /// Storage that skips the probe workaround: only for the regression test that shows the bug it avoids.
    #[doc(hidden)]
    pub fn without_probe_workaround() -> DmaStorage {
        DmaStorage { open_files: OpenFiles::new(1024), removals: Rc::default() }
    }
}

impl Storage for DmaStorage {
    type File = DmaStorageFile;

    fn open_files(&self) -> &OpenFiles<DmaStorageFile> {
        &self.open_files
    }

    /// One descriptor per open file: reads on the blocking pool use the same one (see `read_at`).
    async fn open(&self, path: &Path, create: bool) -> io::Result<DmaStorageFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .dma_open(path)
            .await
            .map_err(io::Error::from)?;
        Ok(DmaStorageFile { file: Rc::new(file), path: path.to_path_buf() })
    }

    async fn remove(&self, path: &Path) -> io::Result<()> {
        glommio::io::remove(path).await.map_err(io::Error::from)
    }

    async fn remove_in_background(&self, path: &Path) -> io::Result<()> {
        let mut doomed = path.as_os_str().to_owned();
        doomed.push(REMOVED_SUFFIX);
        let doomed = PathBuf::from(doomed);
        std::fs::rename(path, &doomed)?;
        self.removals.queue.borrow_mut().push_back((std::time::Instant::now(), doomed));
        if !self.removals.running.replace(true) {
            glommio::spawn_local(remove_queued(self.removals.clone())).detach();
        }
        Ok(())
    }

    async fn remove_leftovers(&self, directory: &Path) -> io::Result<()> {
        for entry in std::fs::read_dir(directory)? {
            let path = entry?.path();
            if path.to_string_lossy().ends_with(REMOVED_SUFFIX) {
                std::fs::remove_file(&path)?;
            }
        }
        Ok(())
    }

    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    async fn list(&self, directory: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(directory)? {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        Ok(names)
    }

    async fn create_dir_all(&self, directory: &Path) -> io::Result<()> {
        std::fs::create_dir_all(directory)
    }

    async fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    async fn sync_directory(&self, directory: &Path) -> io::Result<()> {
        std::fs::File::open(directory)?.sync_all()
    }
}

/// Works through the executor's removal queue, one file at a time, until it is empty.
async fn remove_queued(removals: Rc<Removals>) {
    // Bounded: each pass takes one file off the queue; the queue holds only files already dropped from their logs.
    loop {
        let next = removals.queue.borrow_mut().pop_front();
        let Some((queued, path)) = next else { break };
        let due = queued + REMOVAL_GRACE;
        let now = std::time::Instant::now();
        if due > now {
            glommio::timer::sleep(due - now).await;
        }
        match shrink_and_remove(&path).await {
            // Gone with its directory (a deleted topic's partitions are removed whole).
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => log::warn!("removing {}: {error} (a restart removes it)", path.display()),
            Ok(()) => {}
        }
    }
    removals.running.set(false);
}

/// Shrinks the file from its end in `REMOVAL_STEP_SIZE` steps, pausing between them, then removes it; each system
/// call on the blocking pool.
async fn shrink_and_remove(path: &Path) -> io::Result<()> {
    let owned = path.to_path_buf();
    let file = glommio::executor()
        .spawn_blocking(move || std::fs::OpenOptions::new().write(true).open(owned))
        .await?;
    let file = std::sync::Arc::new(file);
    let mut size = file.metadata()?.len();
    // Bounded: the size falls by a step each pass.
    while size > REMOVAL_STEP_SIZE {
        size -= REMOVAL_STEP_SIZE;
        let shrinking = file.clone();
        glommio::executor().spawn_blocking(move || shrinking.set_len(size)).await?;
        glommio::timer::sleep(REMOVAL_STEP_PAUSE).await;
    }
    drop(file);
    let owned = path.to_path_buf();
    glommio::executor().spawn_blocking(move || std::fs::remove_file(owned)).await
}

/// An open direct-I/O file: one descriptor, shared (`Rc`) with the reads in flight on the blocking pool so that it
/// stays open until the last of them returns.
pub struct DmaStorageFile {
    file: Rc<DmaFile>,
    path: PathBuf,
}

/// Block-aligned heap memory for direct-I/O reads; owned, so `Bytes` can share it across threads. It is not
/// zeroed (zeroing 4 MiB per read cost 15% of the broker's CPU in a catch-up read): only the first `filled`
/// bytes, which a read wrote, are ever exposed.
struct AlignedMemory {
    pointer: std::ptr::NonNull<u8>,
    layout: std::alloc::Layout,
    filled: usize,
}

// SAFETY: the memory is uniquely owned heap memory with no thread affinity.
unsafe impl Send for AlignedMemory {}
// SAFETY: shared access is read-only (`AsRef`); the only mutable access takes `&mut self`.
unsafe impl Sync for AlignedMemory {}

impl AlignedMemory {
    fn new(size: usize) -> AlignedMemory {
        let layout = std::alloc::Layout::from_size_align(size.max(BLOCK_SIZE), BLOCK_SIZE)
            .invariant("block-aligned layout is valid");
        // SAFETY: the layout has a non-zero size.
        let pointer = unsafe { std::alloc::alloc(layout) };
        let pointer =
            std::ptr::NonNull::new(pointer).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        AlignedMemory { pointer, layout, filled: 0 }
    }

    /// preads into the memory from `position` until it is full or the file ends; the bytes read become visible.
    fn fill_from(&mut self, descriptor: RawFd, position: u64) -> io::Result<usize> {
        // SAFETY: the pointer and length describe memory this value owns; pread only writes into it.
        let read = unsafe { pread_full(descriptor, self.pointer.as_ptr(), self.layout.size(), position) }?;
        self.filled = read;
        Ok(read)
    }
}

impl AsRef<[u8]> for AlignedMemory {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: the first `filled` bytes were written by a read and are owned for the lifetime of `self`.
        unsafe { std::slice::from_raw_parts(self.pointer.as_ptr(), self.filled) }
    }
}

impl Drop for AlignedMemory {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this very layout.
        unsafe { std::alloc::dealloc(self.pointer.as_ptr(), self.layout) }
    }
}

/// pread until `size` bytes at `buffer` are filled or the end of the file; returns the bytes read.
///
/// # Safety
/// `buffer` must be valid for writes of `size` bytes for the duration of the call, and `descriptor` open.
unsafe fn pread_full(descriptor: RawFd, buffer: *mut u8, size: usize, position: u64) -> io::Result<usize> {
    let mut done = 0;
    // Bounded: every pass reads at least one byte or returns.
    while done < size {
        // SAFETY: `buffer + done .. buffer + size` is writable memory (the caller's promise).
        let count = unsafe {
            libc::pread(
                descriptor,
                buffer.add(done).cast(),
                size - done,
                (position + done as u64) as libc::off_t,
            )
        };
        match count {
            0 => break,
            count if count > 0 => done += count as usize,
            _ => {
                let error = io::Error::last_os_error();
                if error.kind() != io::ErrorKind::Interrupted {
                    return Err(error);
                }
            }
        }
        // O_DIRECT reads stop at block granularity; a short read means the end of the file.
        if done % BLOCK_SIZE != 0 {
            break;
        }
    }
    Ok(done)
}

/// A glommio DMA buffer, aligned for direct I/O.
pub struct AlignedBuffer(DmaBuffer);

impl AsRef<[u8]> for AlignedBuffer {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl AsMut<[u8]> for AlignedBuffer {
    fn as_mut(&mut self) -> &mut [u8] {
        self.0.as_bytes_mut()
    }
}

impl StorageFile for DmaStorageFile {
    type Buffer = AlignedBuffer;

    fn alloc_buffer(&self, size: usize) -> AlignedBuffer {
        assert!(size.is_multiple_of(BLOCK_SIZE), "buffer size {size} is not block aligned");
        AlignedBuffer(self.file.alloc_dma_buffer(size))
    }

    async fn write_at(&self, buffer: AlignedBuffer, position: u64) -> io::Result<()> {
        let size = buffer.0.len();
        let written = self.file.write_at(buffer.0, position).await.map_err(io::Error::from)?;
        if written != size {
            return Err(io::Error::other(format!(
                "short write to {}: {written} of {size} bytes at {position}",
                self.path.display()
            )));
        }
        Ok(())
    }

    async fn read_at(&self, position: u64, size: usize) -> io::Result<Bytes> {
        // glommio's own reads land in executor-bound (`!Send`) buffers, while batches must cross shards as
        // `Bytes`; so the read goes into memory this crate owns, on glommio's blocking-thread pool, and the
        // batches are then sliced out of it without a copy.
        if size == 0 {
            return Ok(Bytes::new());
        }
        let start = position - position % BLOCK_SIZE as u64;
        let lead = (position - start) as usize;
        let aligned_size = (lead + size).div_ceil(BLOCK_SIZE) * BLOCK_SIZE;
        // The pread runs on another thread with the file's own descriptor. A detached task holds the file (and so
        // the descriptor) until the pread has returned, even if this read is dropped meanwhile: a closed and reused
        // descriptor number can never be read from.
        let file = self.file.clone();
        let read = glommio::spawn_local(async move {
            let descriptor = file.as_raw_fd();
            let outcome = glommio::executor()
                .spawn_blocking(move || {
                    let mut buffer = AlignedMemory::new(aligned_size);
                    let result = buffer.fill_from(descriptor, start);
                    (buffer, result)
                })
                .await;
            drop(file);
            outcome
        })
        .detach();
        let (buffer, result) = read.await.ok_or_else(|| io::Error::other("read task cancelled"))?;
        let read_size = result.map_err(|error| {
            io::Error::new(error.kind(), format!("reading {} at {position}: {error}", self.path.display()))
        })?;
        let available = read_size.saturating_sub(lead).min(size);
        if available == 0 {
            return Ok(Bytes::new());
        }
        Ok(Bytes::from_owner(buffer).slice(lead..lead + available))
    }

    /// On glommio's blocking-thread pool, not through io_uring: io_uring hands every fdatasync to its worker threads
    /// (io-wq), and those run only on the core of the shard that created them (Linux pins them with it, and
    /// `IORING_REGISTER_IOWQ_AFF` did not move them, seen on 6.18): a shard busy with requests then held its own
    /// syncs back — under workload (c) a flush round's write + sync took 5–16 ms on average. The pool's threads may
    /// run on any core. As with `read_at`, a detached task holds the file until the call has returned.
    async fn sync(&self) -> io::Result<()> {
        let file = self.file.clone();
        let sync = glommio::spawn_local(async move {
            let descriptor = file.as_raw_fd();
            let outcome = glommio::executor()
                .spawn_blocking(move || {
                    // SAFETY: the descriptor stays open while this runs: the task holds its file until it returns.
                    if unsafe { libc::fdatasync(descriptor) } == 0 {
                        Ok(())
                    } else {
                        Err(io::Error::last_os_error())
                    }
                })
                .await;
            drop(file);
            outcome
        })
        .detach();
        let result = sync.await.ok_or_else(|| io::Error::other("sync task cancelled"))?;
        result.map_err(|error| {
            io::Error::new(error.kind(), format!("syncing {}: {error}", self.path.display()))
        })
    }

    async fn truncate(&self, size: u64) -> io::Result<()> {
        self.file.truncate(size).await.map_err(io::Error::from)
    }

    async fn allocate(&self, size: u64) -> io::Result<()> {
        self.file.pre_allocate(size, false).await.map_err(io::Error::from)
    }

    async fn size(&self) -> io::Result<u64> {
        self.file.file_size().await.map_err(io::Error::from)
    }

    /// Closes the descriptor now, or, while a read in flight still holds it, when that read returns.
    async fn close(self) -> io::Result<()> {
        self.file.close_rc().await.map(drop).map_err(io::Error::from)
    }
}
