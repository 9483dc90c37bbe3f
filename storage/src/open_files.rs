//! The per-shard bound on open segment files: a least-recently-used cache of file handles, as Kafka's and Redpanda's
//! descriptor caches are. A log names its files with [`SegmentFile`] handles, which hold no descriptor; a read, a
//! write or a sync asks the handle for the open file ([`SegmentFile::open`]), which comes from the cache or is opened
//! and put there, closing the least recently used idle files beyond the cap. A file is *in use* while a
//! [`FileHandle`] to it lives (a read in flight, a flush, a pinned unsynced write): the cache never closes such a
//! file, so an eviction never pulls a descriptor from under a read.
//!
//! The bound: the cache holds at most `files_max` files when at least that many are idle. When every cached file is
//! in use, [`SegmentFile::open`] waits until one is released; [`SegmentFile::open_nested`] (a caller that already
//! holds a file, such as a flush writing the indexes of the segment whose log it holds) opens over the cap instead,
//! so that holders never wait for each other. A task holds at most three files (a segment's log and its two
//! indexes), so the descriptors open at once stay below `3 × files_max` in the worst case and at `files_max` in the
//! steady state.
//!
//! Everything here is `!Send`: a cache belongs to the shard whose storage holds it.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use crate::io::{Storage, StorageFile};
use crate::notify::Notify;

/// The cache of one shard's open segment files (cloning shares it).
pub struct OpenFiles<F: StorageFile> {
    shared: Rc<OpenFilesShared<F>>,
}

impl<F: StorageFile> Clone for OpenFiles<F> {
    fn clone(&self) -> Self {
        OpenFiles { shared: self.shared.clone() }
    }
}

impl<F: StorageFile> fmt::Debug for OpenFiles<F> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "OpenFiles({:?})", self.stats())
    }
}

struct OpenFilesShared<F: StorageFile> {
    state: RefCell<OpenFilesState<F>>,
    /// Wakes openers waiting for a file in use to be released.
    released: Notify,
}

struct OpenFilesState<F: StorageFile> {
    files_max: usize,
    /// Open files by the key of their [`SegmentFile`].
    entries: HashMap<u64, CachedFile<F>>,
    /// Keys by the tick of their last use, oldest first.
    order: BTreeMap<u64, u64>,
    tick: u64,
    next_key: u64,
    /// Opens admitted by [`OpenFiles::reserve`] and not yet inserted: they count against the cap, so that openers
    /// woken together cannot all pass it while their opens are in flight.
    opening: usize,
    stats: OpenFilesStats,
}

struct CachedFile<F> {
    file: Rc<F>,
    tick: u64,
}

/// Counts for tests, logs and figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenFilesStats {
    /// Files open in the cache now.
    pub open_count: usize,
    /// Of those, files some reader or writer holds now.
    pub in_use_count: usize,
    pub files_max: usize,
    /// Files opened since the start (a hit opens nothing).
    pub opened_count: u64,
    /// Idle files closed to make room.
    pub evicted_count: u64,
    /// Opens that found every cached file in use and waited.
    pub waited_count: u64,
}

impl<F: StorageFile> OpenFiles<F> {
    /// A cache that keeps at most `files_max` (at least 1) idle files open.
    pub fn new(files_max: usize) -> OpenFiles<F> {
        let state = OpenFilesState {
            files_max: files_max.max(1),
            entries: HashMap::new(),
            order: BTreeMap::new(),
            tick: 0,
            next_key: 1,
            opening: 0,
            stats: OpenFilesStats::default(),
        };
        OpenFiles {
            shared: Rc::new(OpenFilesShared { state: RefCell::new(state), released: Notify::default() }),
        }
    }

    pub fn files_max(&self) -> usize {
        self.shared.state.borrow().files_max
    }

    /// Changes the cap; idle files beyond it are closed as files are next opened.
    pub fn set_files_max(&self, files_max: usize) {
        self.shared.state.borrow_mut().files_max = files_max.max(1);
    }

    pub fn stats(&self) -> OpenFilesStats {
        let state = self.shared.state.borrow();
        let in_use_count = state.entries.values().filter(|entry| Rc::strong_count(&entry.file) > 1).count();
        OpenFilesStats {
            open_count: state.entries.len(),
            in_use_count,
            files_max: state.files_max,
            ..state.stats
        }
    }

    fn new_key(&self) -> u64 {
        let mut state = self.shared.state.borrow_mut();
        state.next_key += 1;
        state.next_key
    }

    /// The cached file for `key`, marked as just used.
    fn lookup(&self, key: u64) -> Option<FileHandle<F>> {
        let mut state = self.shared.state.borrow_mut();
        state.tick += 1;
        let tick = state.tick;
        let entry = state.entries.get_mut(&key)?;
        let old_tick = std::mem::replace(&mut entry.tick, tick);
        let file = entry.file.clone();
        state.order.remove(&old_tick);
        state.order.insert(tick, key);
        Some(self.handle(file))
    }

    fn handle(&self, file: Rc<F>) -> FileHandle<F> {
        FileHandle { file: Some(file), files: self.shared.clone() }
    }

    /// True when a new file would go over the cap and no idle file can be closed for it.
    #[cfg(test)]
    fn must_wait(&self) -> bool {
        let state = self.shared.state.borrow();
        state.entries.len() + state.opening >= state.files_max
            && state.entries.values().all(|entry| Rc::strong_count(&entry.file) > 1)
    }

    /// Admits one open: when the cache is full, takes out the least recently used idle file for the caller to close.
    /// `None` when it is full of files in use and `over_cap` is false (the caller waits); with `over_cap` the open is
    /// admitted anyway. An admitted open must end in [`OpenFiles::insert`] or [`OpenFiles::cancel`].
    fn reserve(&self, over_cap: bool) -> Option<Vec<F>> {
        let mut state = self.shared.state.borrow_mut();
        let evicted = state.evict_idle(1);
        if evicted.is_empty() && state.entries.len() + state.opening >= state.files_max && !over_cap {
            return None;
        }
        state.opening += 1;
        Some(evicted)
    }

    fn cancel(&self) {
        let mut state = self.shared.state.borrow_mut();
        state.opening = state.opening.saturating_sub(1);
    }

    /// Puts a just-opened file (admitted by `reserve`) in the cache, and takes out idle files beyond the cap (ones
    /// that were in use when later files were admitted over it) for the caller to close. If another task cached the
    /// same key meanwhile, that file is used and `file` returned for closing.
    fn insert(&self, key: u64, file: F) -> (FileHandle<F>, Vec<F>) {
        self.cancel();
        if let Some(cached) = self.lookup(key) {
            return (cached, vec![file]);
        }
        let mut state = self.shared.state.borrow_mut();
        state.tick += 1;
        let tick = state.tick;
        let file = Rc::new(file);
        state.entries.insert(key, CachedFile { file: file.clone(), tick });
        state.order.insert(tick, key);
        state.stats.opened_count += 1;
        let excess = (state.entries.len() + state.opening).saturating_sub(state.files_max);
        let evicted = state.evict_idle(excess);
        drop(state);
        (self.handle(file), evicted)
    }

    /// Takes `key`'s file out of the cache; the caller closes it when it is idle (else its last holder drops it).
    fn remove(&self, key: u64) -> Option<Rc<F>> {
        let mut state = self.shared.state.borrow_mut();
        let entry = state.entries.remove(&key)?;
        state.order.remove(&entry.tick);
        Some(entry.file)
    }
}

impl<F: StorageFile> OpenFilesState<F> {
    /// Takes out up to `count` idle files, least recently used first, if the cache is at or over its cap.
    fn evict_idle(&mut self, count: usize) -> Vec<F> {
        if count == 0 || self.entries.len() + self.opening < self.files_max {
            return Vec::new();
        }
        // Oldest first; files in use are passed over (their holders keep them open).
        let idle: Vec<(u64, u64)> = self
            .order
            .iter()
            .filter(|(_, key)| self.entries.get(key).is_some_and(|entry| Rc::strong_count(&entry.file) == 1))
            .take(count)
            .map(|(tick, key)| (*tick, *key))
            .collect();
        let mut evicted = Vec::new();
        for (tick, key) in idle {
            self.order.remove(&tick);
            if let Some(entry) = self.entries.remove(&key) {
                // The cache held the only reference (checked above, nothing ran since).
                if let Ok(file) = Rc::try_unwrap(entry.file) {
                    evicted.push(file);
                }
            }
        }
        self.stats.evicted_count += evicted.len() as u64;
        evicted
    }
}

/// One open file of the cache, held by a reader or writer: while any handle to it lives the cache does not close
/// it. Dropping the last one makes it idle again (and wakes openers waiting for room).
pub struct FileHandle<F: StorageFile> {
    file: Option<Rc<F>>,
    files: Rc<OpenFilesShared<F>>,
}

impl<F: StorageFile> Clone for FileHandle<F> {
    fn clone(&self) -> Self {
        FileHandle { file: self.file.clone(), files: self.files.clone() }
    }
}

impl<F: StorageFile> Deref for FileHandle<F> {
    type Target = F;

    fn deref(&self) -> &F {
        // Only `drop` takes the file out.
        match &self.file {
            Some(file) => file,
            None => unreachable!("a file handle is used after its drop"),
        }
    }
}

impl<F: StorageFile> Drop for FileHandle<F> {
    fn drop(&mut self) {
        drop(self.file.take());
        self.files.released.notify_all();
    }
}

/// A segment file (`.log`, `.index` or `.timeindex`) by name: no descriptor of its own. [`SegmentFile::open`]
/// gives the open file from the shard's cache. Cloning shares the name; when the last clone goes (the segment was
/// deleted, the log closed) its cached file is closed.
pub(crate) struct SegmentFile<S: Storage> {
    inner: Rc<SegmentFileInner<S>>,
}

impl<S: Storage> Clone for SegmentFile<S> {
    fn clone(&self) -> Self {
        SegmentFile { inner: self.inner.clone() }
    }
}

struct SegmentFileInner<S: Storage> {
    storage: S,
    path: PathBuf,
    key: u64,
}

impl<S: Storage> Drop for SegmentFileInner<S> {
    fn drop(&mut self) {
        // No await here: the file is dropped (glommio closes a dropped file's descriptor in its next I/O cycle)
        // unless a reader still holds it, whose handle then drops it. Paths that can, close first (`close`).
        drop(self.storage.open_files().remove(self.key));
    }
}

impl<S: Storage> SegmentFile<S> {
    /// The file at `path`, which must exist when it is opened.
    pub(crate) fn new(storage: &S, path: PathBuf) -> SegmentFile<S> {
        let key = storage.open_files().new_key();
        SegmentFile { inner: Rc::new(SegmentFileInner { storage: storage.clone(), path, key }) }
    }

    /// Creates the file at `path` empty (truncating an old one) and caches it open, for the writes that follow.
    pub(crate) async fn create(storage: &S, path: PathBuf) -> io::Result<SegmentFile<S>> {
        SegmentFile::create_with(storage, path, true).await
    }

    /// Opens the file at `path` as it is, creating it empty only when it is missing, and caches it open: for the
    /// repair of a poisoned log, which keeps the index files it has (emptying them would need space again).
    pub(crate) async fn open_existing(storage: &S, path: PathBuf) -> io::Result<SegmentFile<S>> {
        SegmentFile::create_with(storage, path, false).await
    }

    async fn create_with(storage: &S, path: PathBuf, empty: bool) -> io::Result<SegmentFile<S>> {
        let segment_file = SegmentFile::new(storage, path);
        let files = storage.open_files();
        close_all(segment_file.reserve(true).await).await;
        let file = match storage.open(&segment_file.inner.path, true).await {
            Ok(file) => file,
            Err(error) => {
                files.cancel();
                return Err(error);
            }
        };
        let truncated = if empty { file.truncate(0).await } else { Ok(()) };
        let (handle, evicted) = files.insert(segment_file.inner.key, file);
        close_all(evicted).await;
        drop(handle);
        truncated.map(|()| segment_file)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The open file, from the cache or opened now; waits while every cached file is in use and the cache is full.
    pub(crate) async fn open(&self) -> io::Result<FileHandle<S::File>> {
        self.open_with(true).await
    }

    /// [`SegmentFile::open`] for a caller that holds another file of the cache already: never waits (a holder
    /// waiting for room could wait for itself), and may go over the cap for as long as the handle lives.
    pub(crate) async fn open_nested(&self) -> io::Result<FileHandle<S::File>> {
        self.open_with(false).await
    }

    async fn open_with(&self, may_wait: bool) -> io::Result<FileHandle<S::File>> {
        let files = self.inner.storage.open_files();
        if let Some(handle) = files.lookup(self.inner.key) {
            return Ok(handle);
        }
        let evicted = self.reserve(!may_wait).await;
        // Another task may have opened it while this one waited.
        if let Some(handle) = files.lookup(self.inner.key) {
            files.cancel();
            close_all(evicted).await;
            return Ok(handle);
        }
        close_all(evicted).await;
        let file = match self.inner.storage.open(&self.inner.path, false).await {
            Ok(file) => file,
            Err(error) => {
                files.cancel();
                return Err(error);
            }
        };
        let (handle, evicted) = files.insert(self.inner.key, file);
        close_all(evicted).await;
        Ok(handle)
    }

    /// Admits one open (see [`OpenFiles::reserve`]), waiting while the cache is full of files in use unless
    /// `over_cap`. Returns idle files taken out for room, to close.
    async fn reserve(&self, over_cap: bool) -> Vec<S::File> {
        let files = self.inner.storage.open_files();
        let mut waited = false;
        // Bounded: files in use are released when the read, flush or sync holding them ends.
        loop {
            let released = files.shared.released.notified();
            if let Some(evicted) = files.reserve(over_cap) {
                return evicted;
            }
            if !waited {
                waited = true;
                files.shared.state.borrow_mut().stats.waited_count += 1;
            }
            released.await;
        }
    }

    /// Closes the cached file now if nobody holds it (else its last holder's drop closes it); a later `open`
    /// opens it again. For segment removal and log close, so the descriptor goes before the name does.
    pub(crate) async fn close(&self) {
        let Some(file) = self.inner.storage.open_files().remove(self.inner.key) else { return };
        if let Ok(file) = Rc::try_unwrap(file) {
            let _ = file.close().await;
        }
    }
}

/// Closes files the cache let go. A failed close loses nothing: every write the log relies on was synced through
/// the same inode before its acknowledgement, whichever descriptor did it.
async fn close_all<F: StorageFile>(files: Vec<F>) {
    for file in files {
        let _ = file.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::SimStorage;
    use futures_lite::future::block_on;

    fn names(storage: &SimStorage, count: usize) -> Vec<SegmentFile<SimStorage>> {
        (0..count)
            .map(|index| {
                let path = PathBuf::from(format!("/sim/{index:020}.log"));
                block_on(SegmentFile::create(storage, path)).unwrap()
            })
            .collect()
    }

    /// Idle files beyond the cap are closed oldest first; a file in use is never closed, and a cached file is not
    /// opened twice.
    #[test]
    fn least_recently_used_idle_files_are_closed_beyond_the_cap() {
        let storage = SimStorage::with_open_files_max(3);
        let files = names(&storage, 5);
        let stats = storage.open_files().stats();
        assert_eq!((stats.open_count, stats.opened_count, stats.evicted_count), (3, 5, 2));
        // Hold file 0 (reopened), then touch 1..5: 0 stays open throughout.
        let held = block_on(files[0].open()).unwrap();
        for file in &files[1..] {
            drop(block_on(file.open()).unwrap());
            assert!(storage.open_files().stats().open_count <= 3);
        }
        assert_eq!(storage.open_files().stats().in_use_count, 1);
        let opened = storage.open_files().stats().opened_count;
        drop(block_on(files[0].open()).unwrap());
        assert_eq!(storage.open_files().stats().opened_count, opened, "a held file is still cached");
        drop(held);
        // Dropping a name closes its file.
        drop(files);
        assert_eq!(storage.open_files().stats().open_count, 0);
    }

    /// With every cached file in use, a nested open goes over the cap, and the cap is restored once they are idle.
    #[test]
    fn nested_opens_go_over_the_cap_only_while_held() {
        let storage = SimStorage::with_open_files_max(2);
        let files = names(&storage, 4);
        let held: Vec<_> = files[..2].iter().map(|file| block_on(file.open()).unwrap()).collect();
        assert!(storage.open_files().must_wait());
        let nested = block_on(files[2].open_nested()).unwrap();
        assert_eq!(storage.open_files().stats().open_count, 3);
        drop((held, nested));
        drop(block_on(files[3].open()).unwrap());
        assert_eq!(storage.open_files().stats().open_count, 2);
    }
}
