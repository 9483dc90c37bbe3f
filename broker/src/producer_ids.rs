//! The producer id allocator: ids unique for the life of the data directory. Lives on shard 0 only; other shards
//! ask it over the mesh ([`crate::mesh::ShardRequest::AllocateProducerId`]).
//!
//! Ids are handed out from blocks of [`BLOCK_SIZE`]. Before the first id of a block is handed out, the end of the
//! block is written to `<data>/producer-ids` atomically (temporary file, fsync, rename, directory fsync), so a
//! restart, even after a crash, starts from a block no id was ever given from. At most one block's worth of ids is
//! skipped per restart. The block is the unit a cluster controller would hand out (Kafka's
//! `AllocateProducerIds`): only [`ProducerIdAllocator::reserve_block`] would change.

use std::cell::Cell;
use std::io::Write;
use std::path::{Path, PathBuf};

pub const BLOCK_SIZE: i64 = 1000;
const FILE_NAME: &str = "producer-ids";

pub struct ProducerIdAllocator {
    data_dir: PathBuf,
    /// The next id to hand out.
    next: Cell<i64>,
    /// The end (exclusive) of the block reserved on disk.
    block_end: Cell<i64>,
}

impl ProducerIdAllocator {
    /// Reads the reserved position (0 when the file does not exist yet).
    pub fn open(data_dir: &Path) -> Result<ProducerIdAllocator, String> {
        let path = data_dir.join(FILE_NAME);
        let start = match std::fs::read_to_string(&path) {
            Ok(text) => text
                .trim()
                .parse::<i64>()
                .ok()
                .filter(|value| *value >= 0)
                .ok_or_else(|| format!("{} is corrupt: {:?}", path.display(), text.trim()))?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => 0,
            Err(error) => return Err(format!("cannot read {}: {error}", path.display())),
        };
        Ok(ProducerIdAllocator {
            data_dir: data_dir.to_path_buf(),
            next: Cell::new(start),
            block_end: Cell::new(start),
        })
    }

    /// The next producer id. Blocking file I/O on the executor thread is accepted here: once per block.
    pub fn allocate(&self) -> Result<i64, String> {
        if self.next.get() >= self.block_end.get() {
            self.reserve_block()?;
        }
        let id = self.next.get();
        self.next.set(id + 1);
        Ok(id)
    }

    fn reserve_block(&self) -> Result<(), String> {
        let end = self
            .next
            .get()
            .checked_add(BLOCK_SIZE)
            .ok_or_else(|| "producer ids are exhausted".to_string())?;
        let path = self.data_dir.join(FILE_NAME);
        let temporary = self.data_dir.join(format!("{FILE_NAME}.tmp"));
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::File::create(&temporary)?;
            file.write_all(format!("{end}\n").as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&temporary, &path)?;
            std::fs::File::open(&self.data_dir)?.sync_all()
        };
        write().map_err(|error| format!("cannot write {}: {error}", path.display()))?;
        log::info!("producer ids {}..{end} reserved", self.next.get());
        self.block_end.set(end);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_never_reused_across_restarts() {
        let directory = std::env::temp_dir().join(format!("sluice-producer-ids-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&directory);
        std::fs::create_dir_all(&directory).unwrap();
        let allocator = ProducerIdAllocator::open(&directory).unwrap();
        let first: Vec<i64> = (0..3).map(|_| allocator.allocate().unwrap()).collect();
        assert_eq!(first, vec![0, 1, 2]);
        drop(allocator);
        let allocator = ProducerIdAllocator::open(&directory).unwrap();
        assert_eq!(allocator.allocate().unwrap(), BLOCK_SIZE);
        for _ in 0..BLOCK_SIZE {
            allocator.allocate().unwrap();
        }
        assert_eq!(allocator.allocate().unwrap(), 2 * BLOCK_SIZE + 1);
        drop(allocator);
        let allocator = ProducerIdAllocator::open(&directory).unwrap();
        assert_eq!(allocator.allocate().unwrap(), 3 * BLOCK_SIZE);
        std::fs::remove_dir_all(&directory).unwrap();
    }
}
