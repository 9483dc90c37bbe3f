//! The directory the on-disk metadata log lives in, as a small synchronous seam: `QuorumDir`. `StdDir` is a real
//! directory through `std::fs` (blocking calls: the broker runs it on a thread of its own, never on a glommio
//! shard's reactor); `MemDir` is a simulated one for crash tests and the quorum simulation.
//!
//! `MemDir` keeps, per file, the bytes written (`live`) and the bytes as of its last `sync_file` (`durable`), and,
//! for the directory, the names as of the last `sync_dir` plus the journal of creations, renames and removals
//! since. A crash keeps each file's durable bytes plus a random prefix of what was appended after them, and the
//! durable names plus a random in-order prefix of the journal: what a journalling file system may leave after a
//! power cut, short of reordering appends within one file.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use crate::sim::Prng;

/// A flat directory of named files. Writes are visible to reads at once and durable only after `sync_file` (the
/// bytes) and `sync_dir` (the names).
pub trait QuorumDir {
    /// The names of the files in the directory, sorted.
    fn list(&self) -> io::Result<Vec<String>>;
    /// The whole file, or `None` if there is no such file.
    fn read(&self, name: &str) -> io::Result<Option<Vec<u8>>>;
    /// Creates `name` (replacing any file of that name) holding `bytes`.
    fn create(&mut self, name: &str, bytes: &[u8]) -> io::Result<()>;
    /// Appends to an existing file.
    fn append(&mut self, name: &str, bytes: &[u8]) -> io::Result<()>;
    /// Cuts an existing file to `size` bytes.
    fn truncate(&mut self, name: &str, size: u64) -> io::Result<()>;
    /// fdatasync: the file's bytes are durable when it returns.
    fn sync_file(&mut self, name: &str) -> io::Result<()>;
    /// Atomically replaces `to` with `from`.
    fn rename(&mut self, from: &str, to: &str) -> io::Result<()>;
    fn remove(&mut self, name: &str) -> io::Result<()>;
    /// fsync of the directory: creations, renames and removals so far are durable when it returns.
    fn sync_dir(&mut self) -> io::Result<()>;
}

/// A real directory. Keeps the files it writes open so that appends and syncs reuse the descriptor.
#[derive(Debug)]
pub struct StdDir {
    root: PathBuf,
    open: HashMap<String, File>,
}

impl StdDir {
    /// Opens (creating it if needed) the directory at `root`.
    pub fn open(root: &Path) -> io::Result<StdDir> {
        std::fs::create_dir_all(root)?;
        Ok(StdDir { root: root.to_path_buf(), open: HashMap::new() })
    }

    fn file(&mut self, name: &str) -> io::Result<&mut File> {
        if !self.open.contains_key(name) {
            let file = OpenOptions::new().read(true).append(true).open(self.root.join(name))?;
            self.open.insert(name.to_string(), file);
        }
        self.open.get_mut(name).ok_or_else(|| io::Error::other("descriptor cache lost a file"))
    }
}

impl QuorumDir for StdDir {
    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.root)? {
            if let Some(name) = entry?.file_name().to_str() {
                names.push(name.to_string());
            }
        }
        names.sort();
        Ok(names)
    }

    fn read(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        match std::fs::read(self.root.join(name)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error),
        }
    }

    fn create(&mut self, name: &str, bytes: &[u8]) -> io::Result<()> {
        self.open.remove(name);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .truncate(false)
            .open(self.root.join(name))?;
        file.set_len(0)?;
        file.write_all(bytes)?;
        self.open.insert(name.to_string(), file);
        Ok(())
    }

    fn append(&mut self, name: &str, bytes: &[u8]) -> io::Result<()> {
        self.file(name)?.write_all(bytes)
    }

    fn truncate(&mut self, name: &str, size: u64) -> io::Result<()> {
        self.file(name)?.set_len(size)
    }

    fn sync_file(&mut self, name: &str) -> io::Result<()> {
        self.file(name)?.sync_data()
    }

    fn rename(&mut self, from: &str, to: &str) -> io::Result<()> {
        self.open.remove(to);
        let file = self.open.remove(from);
        std::fs::rename(self.root.join(from), self.root.join(to))?;
        if let Some(file) = file {
            self.open.insert(to.to_string(), file);
        }
        Ok(())
    }

    fn remove(&mut self, name: &str) -> io::Result<()> {
        self.open.remove(name);
        std::fs::remove_file(self.root.join(name))
    }

    fn sync_dir(&mut self) -> io::Result<()> {
        File::open(&self.root)?.sync_all()
    }
}

#[derive(Clone, Debug, Default)]
struct MemInode {
    live: Vec<u8>,
    durable: Vec<u8>,
}

#[derive(Clone, Debug)]
enum NameChange {
    Create(String, usize),
    Rename(String, String),
    Remove(String),
}

fn apply_name_change(names: &mut BTreeMap<String, usize>, change: &NameChange) {
    match change {
        NameChange::Create(name, inode) => {
            names.insert(name.clone(), *inode);
        }
        NameChange::Rename(from, to) => {
            if let Some(inode) = names.remove(from) {
                names.insert(to.clone(), inode);
            }
        }
        NameChange::Remove(name) => {
            names.remove(name);
        }
    }
}

/// A simulated directory with live and durable images (see the module comment). `halt_after` makes every
/// operation from the given one on fail, as if the machine stopped there; `crash` then gives the disk after it.
#[derive(Clone, Debug, Default)]
pub struct MemDir {
    inodes: Vec<MemInode>,
    live_names: BTreeMap<String, usize>,
    durable_names: BTreeMap<String, usize>,
    journal: Vec<NameChange>,
    operations_left: Option<u64>,
    operation_count: u64,
}

impl MemDir {
    pub fn new() -> MemDir {
        MemDir::default()
    }

    /// Every mutating operation after the next `count` fails.
    pub fn halt_after(&mut self, count: u64) {
        self.operations_left = Some(count);
    }

    /// Mutating operations so far (to choose a `halt_after` point).
    pub fn operation_count(&self) -> u64 {
        self.operation_count
    }

    /// The disk after a power cut (see the module comment); nothing is halted on it.
    pub fn crash(&self, prng: &mut Prng) -> MemDir {
        let kept = prng.below(self.journal.len() as u64 + 1) as usize;
        let mut names = self.durable_names.clone();
        for change in &self.journal[..kept] {
            apply_name_change(&mut names, change);
        }
        let inodes = self
            .inodes
            .iter()
            .map(|inode| {
                let mut bytes = inode.durable.clone();
                if inode.live.starts_with(&inode.durable) {
                    let extra = prng.below((inode.live.len() - inode.durable.len()) as u64 + 1) as usize;
                    bytes.extend_from_slice(&inode.live[inode.durable.len()..inode.durable.len() + extra]);
                } else if prng.chance(0.5) {
                    // A truncation not yet synced: either image may be on the platter.
                    bytes = inode.live.clone();
                }
                MemInode { live: bytes.clone(), durable: bytes }
            })
            .collect();
        MemDir {
            inodes,
            live_names: names.clone(),
            durable_names: names,
            journal: Vec::new(),
            operations_left: None,
            operation_count: 0,
        }
    }

    /// Flips one bit of a file, in both images (damage on the platter).
    pub fn flip_bit(&mut self, name: &str, position: usize, bit: u8) {
        let inode = &mut self.inodes[self.live_names[name]];
        inode.live[position] ^= 1 << bit;
        if position < inode.durable.len() {
            inode.durable[position] ^= 1 << bit;
        }
    }

    /// The file's size as written.
    pub fn file_size(&self, name: &str) -> Option<usize> {
        self.live_names.get(name).map(|&inode| self.inodes[inode].live.len())
    }

    fn operate(&mut self) -> io::Result<()> {
        if let Some(left) = &mut self.operations_left {
            if *left == 0 {
                return Err(io::Error::other("simulated machine halted"));
            }
            *left -= 1;
        }
        self.operation_count += 1;
        Ok(())
    }

    fn inode(&mut self, name: &str) -> io::Result<&mut MemInode> {
        let index = *self
            .live_names
            .get(name)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no file {name}")))?;
        Ok(&mut self.inodes[index])
    }

    fn change_names(&mut self, change: NameChange) {
        apply_name_change(&mut self.live_names, &change);
        self.journal.push(change);
    }
}

impl QuorumDir for MemDir {
    fn list(&self) -> io::Result<Vec<String>> {
        Ok(self.live_names.keys().cloned().collect())
    }

    fn read(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        Ok(self.live_names.get(name).map(|&inode| self.inodes[inode].live.clone()))
    }

    fn create(&mut self, name: &str, bytes: &[u8]) -> io::Result<()> {
        self.operate()?;
        self.inodes.push(MemInode { live: bytes.to_vec(), durable: Vec::new() });
        self.change_names(NameChange::Create(name.to_string(), self.inodes.len() - 1));
        Ok(())
    }

    fn append(&mut self, name: &str, bytes: &[u8]) -> io::Result<()> {
        self.operate()?;
        self.inode(name)?.live.extend_from_slice(bytes);
        Ok(())
    }

    fn truncate(&mut self, name: &str, size: u64) -> io::Result<()> {
        self.operate()?;
        self.inode(name)?.live.truncate(size as usize);
        Ok(())
    }

    fn sync_file(&mut self, name: &str) -> io::Result<()> {
        self.operate()?;
        let inode = self.inode(name)?;
        inode.durable = inode.live.clone();
        Ok(())
    }

    fn rename(&mut self, from: &str, to: &str) -> io::Result<()> {
        self.operate()?;
        self.inode(from)?;
        self.change_names(NameChange::Rename(from.to_string(), to.to_string()));
        Ok(())
    }

    fn remove(&mut self, name: &str) -> io::Result<()> {
        self.operate()?;
        self.inode(name)?;
        self.change_names(NameChange::Remove(name.to_string()));
        Ok(())
    }

    fn sync_dir(&mut self) -> io::Result<()> {
        self.operate()?;
        self.durable_names = self.live_names.clone();
        self.journal.clear();
        Ok(())
    }
}
