//! A simulated disk for tests: each file has a *live* image (what reads see) and a *durable* image (what survives
//! a crash), plus injectable faults. Writes and truncations land in the live image at once and reach the durable
//! image only at the file's next `sync`. [`SimStorage::crash`] throws away what was not synced, except for a
//! seeded random prefix of the unsynced operations whose last one may be torn at 512-byte granularity — what a
//! real disk may leave behind after power loss.
//!
//! Simplification, stated once: creating and removing files is durable immediately (as if every directory
//! operation were followed by a directory fsync).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;

use crate::io::{Storage, StorageFile};
use crate::open_files::OpenFiles;

/// The granularity at which a crash can tear a write: one disk sector.
pub const SECTOR_SIZE: usize = 512;

#[derive(Clone)]
pub struct SimStorage {
    state: Rc<RefCell<SimState>>,
    open_files: OpenFiles<SimFile>,
}

/// The cap of [`SimStorage::new`]'s open-file cache: small, so that every simulated test also evicts and reopens
/// segment files (a log of one segment has three).
const SIM_OPEN_FILES_MAX: usize = 4;

impl Default for SimStorage {
    fn default() -> Self {
        SimStorage::with_open_files_max(SIM_OPEN_FILES_MAX)
    }
}

#[derive(Default)]
struct SimState {
    files: BTreeMap<PathBuf, Rc<RefCell<FileImages>>>,
    fail_next_write: bool,
    fail_next_sync: bool,
    fail_next_allocate: bool,
    /// No free blocks: creating a file, writing past a file's end and allocating fail with ENOSPC.
    disk_full: bool,
    /// No free descriptors: every open fails with EMFILE.
    descriptors_exhausted: bool,
    tear_next_write_sectors: Option<usize>,
    /// Successful syncs so far, across all files: the "sync points" of a workload.
    sync_count: u64,
    /// After this many successful syncs, every operation fails: the machine lost power.
    halt_after_sync_count: Option<u64>,
    halted: bool,
}

#[derive(Default)]
struct FileImages {
    live: Vec<u8>,
    durable: Vec<u8>,
    unsynced: Vec<Operation>,
}

#[derive(Clone)]
enum Operation {
    Write { position: usize, data: Vec<u8> },
    Truncate { size: usize },
}

impl Operation {
    fn apply(&self, image: &mut Vec<u8>) {
        match self {
            Operation::Write { position, data } => {
                let end = position + data.len();
                if image.len() < end {
                    image.resize(end, 0);
                }
                image[*position..end].copy_from_slice(data);
            }
            Operation::Truncate { size } => image.resize(*size, 0),
        }
    }
}

fn halted_error() -> io::Error {
    io::Error::other("simulated power cut: the disk no longer answers")
}

/// Linux's errno values, so that messages read as the real ones do ("No space left on device").
const ENOSPC: i32 = 28;
const EMFILE: i32 = 24;

impl SimStorage {
    pub fn new() -> SimStorage {
        SimStorage::default()
    }

    /// A simulated disk whose open-file cache keeps at most `files_max` idle files open.
    pub fn with_open_files_max(files_max: usize) -> SimStorage {
        SimStorage { state: Rc::default(), open_files: OpenFiles::new(files_max) }
    }

    /// The next write fails with an I/O error and changes nothing.
    pub fn fail_next_write(&self) {
        self.state.borrow_mut().fail_next_write = true;
    }

    /// The next sync fails with an I/O error, and the file's unsynced writes stay in the live image but never
    /// reach the durable one, not even through a later sync that succeeds: what Linux does when writeback fails
    /// (the pages are marked clean), the fsyncgate case. Only writing them again makes them durable.
    pub fn fail_next_sync(&self) {
        self.state.borrow_mut().fail_next_sync = true;
    }

    /// The next `allocate` (fallocate) fails with ENOSPC and changes nothing.
    pub fn fail_next_allocate(&self) {
        self.state.borrow_mut().fail_next_allocate = true;
    }

    /// Fills the disk (or frees it again): while full, creating a file, a write that extends a file and an
    /// allocation fail with ENOSPC, as on a full ext4; overwrites of existing bytes and syncs still work.
    pub fn set_disk_full(&self, full: bool) {
        self.state.borrow_mut().disk_full = full;
    }

    /// Runs out of file descriptors (or gets them back): while out, every open fails with EMFILE.
    pub fn set_descriptors_exhausted(&self, exhausted: bool) {
        self.state.borrow_mut().descriptors_exhausted = exhausted;
    }

    /// Clears every injected fault (not a halt): the disk has space and descriptors again.
    pub fn clear_faults(&self) {
        let mut state = self.state.borrow_mut();
        state.fail_next_write = false;
        state.fail_next_sync = false;
        state.fail_next_allocate = false;
        state.tear_next_write_sectors = None;
        state.disk_full = false;
        state.descriptors_exhausted = false;
    }

    /// The next write stores only its first `sectors` 512-byte sectors, then fails.
    pub fn tear_next_write(&self, sectors: usize) {
        self.state.borrow_mut().tear_next_write_sectors = Some(sectors);
    }

    /// Flips one bit in both images of a file, as a decaying disk would.
    pub fn flip_bit(&self, path: &Path, position: usize, bit: u8) {
        let state = self.state.borrow();
        let file = state.files.get(path).unwrap_or_else(|| panic!("flip_bit: no file {}", path.display()));
        let mut images = file.borrow_mut();
        if position < images.live.len() {
            images.live[position] ^= 1 << bit;
        }
        if position < images.durable.len() {
            images.durable[position] ^= 1 << bit;
        }
    }

    /// Cuts a file's both images to `size` bytes (a segment cut mid-batch, an index file shortened).
    pub fn cut_file(&self, path: &Path, size: usize) {
        let state = self.state.borrow();
        let file = state.files.get(path).unwrap_or_else(|| panic!("cut_file: no file {}", path.display()));
        let mut images = file.borrow_mut();
        images.live.truncate(size);
        images.durable.truncate(size);
    }

    /// Successful syncs so far.
    pub fn sync_count(&self) -> u64 {
        self.state.borrow().sync_count
    }

    /// After `count` more successful syncs every operation fails, until [`SimStorage::crash`].
    pub fn halt_after_syncs(&self, count: u64) {
        let mut state = self.state.borrow_mut();
        state.halt_after_sync_count = Some(state.sync_count + count);
        if count == 0 {
            state.halted = true;
        }
    }

    pub fn is_halted(&self) -> bool {
        self.state.borrow().halted
    }

    /// Power loss and reboot: each file keeps its durable image plus, independently for each unsynced write
    /// (chosen from `seed`), the whole write, a sector-torn part of it, or nothing. Clears faults and the halt.
    pub fn crash(&self, seed: u64) {
        let mut random = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next_random = move |bound: usize| -> usize {
            random ^= random << 13;
            random ^= random >> 7;
            random ^= random << 17;
            (random % (bound as u64 + 1)) as usize
        };
        let mut state = self.state.borrow_mut();
        for file in state.files.values() {
            let mut images = file.borrow_mut();
            let mut image = images.durable.clone();
            let operations = std::mem::take(&mut images.unsynced);
            // Unsynced writes may reach the disk in any order: each is kept whole, torn at a sector boundary, or
            // lost, independently (holes included). Truncations apply in order.
            for operation in &operations {
                match operation {
                    Operation::Write { position, data } => match next_random(2) {
                        0 => {}
                        1 => operation.apply(&mut image),
                        _ => {
                            let sectors = next_random(data.len().div_ceil(SECTOR_SIZE));
                            let size = (sectors * SECTOR_SIZE).min(data.len());
                            Operation::Write { position: *position, data: data[..size].to_vec() }
                                .apply(&mut image);
                        }
                    },
                    Operation::Truncate { .. } => operation.apply(&mut image),
                }
            }
            images.live = image.clone();
            images.durable = image;
        }
        state.fail_next_write = false;
        state.fail_next_sync = false;
        state.fail_next_allocate = false;
        state.tear_next_write_sectors = None;
        state.halt_after_sync_count = None;
        state.halted = false;
    }

    /// The live bytes of a file, for assertions.
    pub fn file_contents(&self, path: &Path) -> Option<Vec<u8>> {
        self.state.borrow().files.get(path).map(|file| file.borrow().live.clone())
    }

    fn check_halted(&self) -> io::Result<()> {
        check_halted(&self.state)
    }
}

fn check_halted(state: &RefCell<SimState>) -> io::Result<()> {
    if state.borrow().halted {
        return Err(halted_error());
    }
    Ok(())
}

impl Storage for SimStorage {
    type File = SimFile;

    fn open_files(&self) -> &OpenFiles<SimFile> {
        &self.open_files
    }

    async fn open(&self, path: &Path, create: bool) -> io::Result<SimFile> {
        self.check_halted()?;
        let mut state = self.state.borrow_mut();
        if state.descriptors_exhausted {
            return Err(io::Error::from_raw_os_error(EMFILE));
        }
        if state.disk_full && create && !state.files.contains_key(path) {
            return Err(io::Error::from_raw_os_error(ENOSPC));
        }
        let images = match state.files.get(path) {
            Some(images) => images.clone(),
            None if create => {
                let images = Rc::new(RefCell::new(FileImages::default()));
                state.files.insert(path.to_path_buf(), images.clone());
                images
            }
            None => {
                return Err(io::Error::new(io::ErrorKind::NotFound, format!("{} not found", path.display())))
            }
        };
        Ok(SimFile { state: self.state.clone(), images })
    }

    async fn remove(&self, path: &Path) -> io::Result<()> {
        self.check_halted()?;
        match self.state.borrow_mut().files.remove(path) {
            Some(_) => Ok(()),
            None => Err(io::Error::new(io::ErrorKind::NotFound, format!("{} not found", path.display()))),
        }
    }

    /// Like every directory operation here, the rename is durable at once (the simulated crash keeps or loses file
    /// contents, not names), which models a synced directory.
    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.check_halted()?;
        let mut state = self.state.borrow_mut();
        let Some(images) = state.files.remove(from) else {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("{} not found", from.display())));
        };
        state.files.insert(to.to_path_buf(), images);
        Ok(())
    }

    async fn list(&self, directory: &Path) -> io::Result<Vec<String>> {
        self.check_halted()?;
        let state = self.state.borrow();
        Ok(state
            .files
            .keys()
            .filter(|path| path.parent() == Some(directory))
            .filter_map(|path| path.file_name().map(|name| name.to_string_lossy().into_owned()))
            .collect())
    }

    async fn create_dir_all(&self, _directory: &Path) -> io::Result<()> {
        self.check_halted()
    }

    async fn exists(&self, path: &Path) -> bool {
        self.state.borrow().files.contains_key(path)
    }

    async fn sync_directory(&self, _directory: &Path) -> io::Result<()> {
        self.check_halted()
    }
}

/// An open simulated file.
pub struct SimFile {
    state: Rc<RefCell<SimState>>,
    images: Rc<RefCell<FileImages>>,
}

impl StorageFile for SimFile {
    type Buffer = Vec<u8>;

    fn alloc_buffer(&self, size: usize) -> Vec<u8> {
        assert!(size.is_multiple_of(crate::BLOCK_SIZE), "buffer size {size} is not block aligned");
        vec![0; size]
    }

    async fn write_at(&self, buffer: Vec<u8>, position: u64) -> io::Result<()> {
        assert!(position.is_multiple_of(crate::BLOCK_SIZE as u64), "unaligned direct write at {position}");
        check_halted(&self.state)?;
        let (fail, tear, full) = {
            let mut state = self.state.borrow_mut();
            (
                std::mem::take(&mut state.fail_next_write),
                state.tear_next_write_sectors.take(),
                state.disk_full,
            )
        };
        if fail {
            return Err(io::Error::other("simulated write failure"));
        }
        if full && position as usize + buffer.len() > self.images.borrow().live.len() {
            return Err(io::Error::from_raw_os_error(ENOSPC));
        }
        let mut data = buffer;
        if let Some(sectors) = tear {
            data.truncate((sectors * SECTOR_SIZE).min(data.len()));
        }
        let operation = Operation::Write { position: position as usize, data };
        let mut images = self.images.borrow_mut();
        operation.apply(&mut images.live);
        images.unsynced.push(operation);
        if tear.is_some() {
            return Err(io::Error::other("simulated torn write"));
        }
        Ok(())
    }

    async fn read_at(&self, position: u64, size: usize) -> io::Result<Bytes> {
        check_halted(&self.state)?;
        let images = self.images.borrow();
        let start = (position as usize).min(images.live.len());
        let end = (start + size).min(images.live.len());
        Ok(Bytes::copy_from_slice(&images.live[start..end]))
    }

    async fn sync(&self) -> io::Result<()> {
        check_halted(&self.state)?;
        {
            let mut state = self.state.borrow_mut();
            if std::mem::take(&mut state.fail_next_sync) {
                self.images.borrow_mut().unsynced.clear();
                return Err(io::Error::other("simulated fdatasync failure"));
            }
        }
        {
            let mut images = self.images.borrow_mut();
            let operations = std::mem::take(&mut images.unsynced);
            for operation in &operations {
                operation.apply(&mut images.durable);
            }
        }
        let mut state = self.state.borrow_mut();
        state.sync_count += 1;
        if state.halt_after_sync_count.is_some_and(|limit| state.sync_count >= limit) {
            state.halted = true;
        }
        Ok(())
    }

    async fn truncate(&self, size: u64) -> io::Result<()> {
        check_halted(&self.state)?;
        let operation = Operation::Truncate { size: size as usize };
        let mut images = self.images.borrow_mut();
        operation.apply(&mut images.live);
        images.unsynced.push(operation);
        Ok(())
    }

    async fn allocate(&self, size: u64) -> io::Result<()> {
        check_halted(&self.state)?;
        {
            let mut state = self.state.borrow_mut();
            let full = state.disk_full && (self.images.borrow().live.len() as u64) < size;
            if std::mem::take(&mut state.fail_next_allocate) || full {
                return Err(io::Error::from_raw_os_error(ENOSPC));
            }
        }
        let mut images = self.images.borrow_mut();
        if (images.live.len() as u64) < size {
            let operation = Operation::Truncate { size: size as usize };
            operation.apply(&mut images.live);
            images.unsynced.push(operation);
        }
        Ok(())
    }

    async fn size(&self) -> io::Result<u64> {
        check_halted(&self.state)?;
        Ok(self.images.borrow().live.len() as u64)
    }

    async fn close(self) -> io::Result<()> {
        Ok(())
    }
}
