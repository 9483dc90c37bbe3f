//! The file-I/O seam. Every byte the log moves goes through these two traits, which have two implementations:
//! [`crate::dma::DmaStorage`] (glommio direct I/O on real files) and [`crate::sim::SimStorage`] (an in-memory disk
//! with a live and a durable image and injectable faults, for crash-consistency tests).
//!
//! The futures are not `Send`: a file belongs to the shard that opened it.

#![allow(async_fn_in_trait)]

use std::io;
use std::path::Path;

use bytes::Bytes;

use crate::open_files::OpenFiles;

/// A directory tree of files: how the log creates, lists and deletes its segment files. One value (and its clones)
/// per shard: it also holds the shard's cache of open segment files, [`OpenFiles`].
pub trait Storage: Clone + 'static {
    type File: StorageFile;

    /// The shard's bounded cache of open segment files (see `open_files.rs`): segments open their files through
    /// it, never with [`Storage::open`] directly.
    fn open_files(&self) -> &OpenFiles<Self::File>;

    /// Opens a file for direct reads and writes, creating it (empty) when `create` is set.
    async fn open(&self, path: &Path, create: bool) -> io::Result<Self::File>;
    async fn remove(&self, path: &Path) -> io::Result<()>;
    /// Removes a file nothing reads or writes any more (a segment retention or DeleteRecords dropped), without
    /// making the caller wait for the file system to free its blocks. By default at once, as `remove`.
    /// [`crate::dma::DmaStorage`] renames it out of the log's sight (`<name>.deleted`, which recovery ignores and
    /// `remove_leftovers` clears) and frees it gradually in the background.
    async fn remove_in_background(&self, path: &Path) -> io::Result<()> {
        self.remove(path).await
    }
    /// Removes what [`Storage::remove_in_background`] left in `directory` when the process stopped first.
    async fn remove_leftovers(&self, _directory: &Path) -> io::Result<()> {
        Ok(())
    }
    /// Renames `from` to `to`, replacing `to` atomically; durable once the directory is synced.
    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Names (not paths) of the entries of `directory`.
    async fn list(&self, directory: &Path) -> io::Result<Vec<String>>;
    async fn create_dir_all(&self, directory: &Path) -> io::Result<()>;
    async fn exists(&self, path: &Path) -> bool;
    /// fsync of the directory itself, so that files created in it survive a crash.
    async fn sync_directory(&self, directory: &Path) -> io::Result<()>;
}

/// One open file. Writes take block-aligned buffers at block-aligned positions (direct I/O rules).
pub trait StorageFile: 'static {
    /// A block-aligned buffer that `write_at` consumes.
    type Buffer: AsRef<[u8]> + AsMut<[u8]> + 'static;

    /// A buffer of `size` bytes (contents unspecified: the caller fills all of it); `size` is a multiple of
    /// [`crate::BLOCK_SIZE`].
    fn alloc_buffer(&self, size: usize) -> Self::Buffer;
    async fn write_at(&self, buffer: Self::Buffer, position: u64) -> io::Result<()>;
    /// Reads up to `size` bytes at any position; fewer are returned at the end of the file.
    async fn read_at(&self, position: u64, size: usize) -> io::Result<Bytes>;
    /// fdatasync: everything written before it is durable when it returns.
    async fn sync(&self) -> io::Result<()>;
    async fn truncate(&self, size: u64) -> io::Result<()>;
    /// Reserves space for `[0, size)` and extends the file size to `size` (fallocate).
    async fn allocate(&self, size: u64) -> io::Result<()>;
    async fn size(&self) -> io::Result<u64>;
    async fn close(self) -> io::Result<()>;
}
