//! glommio direct-I/O files: the production implementation of the I/O seam.

use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use glommio::io::{DmaBuffer, DmaFile, OpenOptions};

use crate::io::{Storage, StorageFile};
use crate::types::BLOCK_SIZE;

/// Direct-I/O storage on the local file system. Create one per executor with [`DmaStorage::new`], which works around
/// glommio's polled-I/O probe (see below) for the data directory's device.
#[derive(Clone, Debug)]
pub struct DmaStorage {
    _private: (),
}

/// Name of the file that [`DmaStorage::new`] reads first on every executor.
pub const PROBE_FILE_NAME: &str = ".sluice-dma-probe";

impl DmaStorage {
    /// glommio decides whether a device supports polled I/O from the first readable DMA file an executor opens on
    /// it. When that file is empty (a new segment opened read+write), the probe misreads the device and every
    /// later DMA read from this executor fails with EOPNOTSUPP (os error 95). Opening and reading a non-empty file
    /// first settles the probe correctly, so every shard calls this before it opens any segment.
    pub async fn new(data_directory: &Path) -> io::Result<DmaStorage> {
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
        Ok(DmaStorage { _private: () })
    }

    /// Storage that skips the probe workaround: only for the regression test that shows the bug it avoids.
    #[doc(hidden)]
    pub fn without_probe_workaround() -> DmaStorage {
        DmaStorage { _private: () }
    }
}

impl Storage for DmaStorage {
    type File = DmaStorageFile;

    async fn open(&self, path: &Path, create: bool) -> io::Result<DmaStorageFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .dma_open(path)
            .await
            .map_err(io::Error::from)?;
        Ok(DmaStorageFile { file, path: path.to_path_buf() })
    }

    async fn remove(&self, path: &Path) -> io::Result<()> {
        glommio::io::remove(path).await.map_err(io::Error::from)
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
}

pub struct DmaStorageFile {
    file: DmaFile,
    path: PathBuf,
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
        let result = self.file.read_at(position, size).await.map_err(io::Error::from)?;
        // glommio's ReadResult is tied to this executor (it is !Send), while batches cross shards as `Bytes`; this
        // one copy on the cold-read path is the price until the seam can read into caller-owned aligned memory.
        Ok(Bytes::copy_from_slice(&result))
    }

    async fn sync(&self) -> io::Result<()> {
        self.file.fdatasync().await.map_err(io::Error::from)
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

    async fn close(self) -> io::Result<()> {
        self.file.close().await.map_err(io::Error::from)
    }
}
