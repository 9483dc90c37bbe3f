//! The quorum's storage seam: the Raft log, the hard state, the membership and the latest snapshot, with explicit
//! sync points. `QuorumStorage` is what the driver (`node.rs`) writes through; raft-rs reads through its
//! `raft::Storage` supertrait.
//!
//! Writes change what `raft::Storage` answers at once (raft-rs reads entries back before they are durable, as its
//! async-ready contract requires) and become durable only at the next `sync`. The driver never lets anything that
//! depends on a write — a vote or append acknowledgement, applying a committed entry — out before the sync that
//! covers it.
//!
//! `MemQuorumStorage` is the in-memory implementation for tests and the simulator. It keeps two states: `live`
//! (every write) and `durable` (writes up to the last sync), plus the journal of writes since that sync. A simulated
//! crash keeps `durable` plus a random prefix of the journal: a write-ahead log that persisted some of its unsynced
//! tail in order, never a later write without the earlier ones.

use std::fmt;

use raft::prelude::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};

use crate::sim::Prng;

/// An operating error of the storage: the broker's disk may fail; the in-memory one never does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QuorumStorageError {
    Io {
        operation: &'static str,
        reason: String,
    },
    /// Durable data failed its check at open (a bad checksum, a frame out of sequence, a missing file): reported,
    /// never cut, since a torn tail is cut only past what was synced.
    Corrupt {
        file: String,
        position: u64,
        reason: String,
    },
}

impl fmt::Display for QuorumStorageError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QuorumStorageError::Io { operation, reason } => {
                write!(formatter, "metadata log {operation}: {reason}")
            }
            QuorumStorageError::Corrupt { file, position, reason } => {
                write!(formatter, "metadata log corrupt: {file} at byte {position}: {reason}")
            }
        }
    }
}

impl std::error::Error for QuorumStorageError {}

/// The writes a quorum node makes. Each is atomic; they become durable in the order made.
pub trait QuorumStorage: raft::Storage {
    /// Appends `entries`, which continue the log or replace its suffix from `entries[0].index` on.
    fn append(&mut self, entries: &[Entry]) -> Result<(), QuorumStorageError>;
    fn set_hard_state(&mut self, hard_state: &HardState) -> Result<(), QuorumStorageError>;
    /// The membership at bootstrap (and after configuration changes).
    fn set_conf_state(&mut self, conf_state: &ConfState) -> Result<(), QuorumStorageError>;
    /// Replaces the whole log with a snapshot the leader sent.
    fn install_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), QuorumStorageError>;
    /// Records a snapshot of this node's own applied state and drops the entries it covers.
    fn compact_to_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), QuorumStorageError>;
    /// The sync point: every write made before the call is durable when it returns `Ok`.
    fn sync(&mut self) -> Result<(), QuorumStorageError>;
    /// The latest snapshot (an empty one at index 0 if none was taken), read at start to rebuild the image.
    fn latest_snapshot(&self) -> &Snapshot;
}

/// One write, as kept in `MemQuorumStorage`'s journal of unsynced writes.
#[derive(Clone, Debug)]
pub(crate) enum Write {
    Append(Vec<Entry>),
    HardState(HardState),
    ConfState(ConfState),
    InstallSnapshot(Snapshot),
    CompactToSnapshot(Snapshot),
}

/// One image of the storage: the snapshot, the entries after it, the hard state and the membership.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LogState {
    pub hard_state: HardState,
    pub conf_state: ConfState,
    /// Index 0 and no data before the first snapshot.
    pub snapshot: Snapshot,
    /// `entries[i].index == snapshot index + 1 + i`.
    pub entries: Vec<Entry>,
}

impl LogState {
    pub fn snapshot_index(&self) -> u64 {
        self.snapshot.get_metadata().index
    }

    pub fn first_index(&self) -> u64 {
        self.snapshot_index() + 1
    }

    pub fn last_index(&self) -> u64 {
        self.entries.last().map_or(self.snapshot_index(), |entry| entry.index)
    }

    /// The term of the entry at `index`, if this log still holds it (or its snapshot ends there).
    pub fn term(&self, index: u64) -> Option<u64> {
        if index == self.snapshot_index() {
            return Some(self.snapshot.get_metadata().term);
        }
        self.entry(index).map(|entry| entry.term)
    }

    pub fn entry(&self, index: u64) -> Option<&Entry> {
        let offset = index.checked_sub(self.first_index())?;
        self.entries.get(usize::try_from(offset).ok()?)
    }

    pub(crate) fn apply(&mut self, write: &Write) {
        match write {
            Write::Append(entries) => self.append(entries),
            Write::HardState(hard_state) => self.hard_state = hard_state.clone(),
            Write::ConfState(conf_state) => self.conf_state = conf_state.clone(),
            Write::InstallSnapshot(snapshot) => {
                let metadata = snapshot.get_metadata();
                self.hard_state.term = self.hard_state.term.max(metadata.term);
                self.hard_state.commit = self.hard_state.commit.max(metadata.index);
                self.conf_state = metadata.get_conf_state().clone();
                self.entries.clear();
                self.snapshot = snapshot.clone();
            }
            Write::CompactToSnapshot(snapshot) => {
                let index = snapshot.get_metadata().index;
                assert!(
                    index > self.snapshot_index() && index <= self.last_index(),
                    "snapshot at {index} outside the log ({}, {}]",
                    self.snapshot_index(),
                    self.last_index()
                );
                assert_eq!(self.term(index), Some(snapshot.get_metadata().term), "snapshot term at {index}");
                self.entries.drain(..(index - self.snapshot_index()) as usize);
                self.snapshot = snapshot.clone();
            }
        }
        assert!(self.entries.first().is_none_or(|entry| entry.index == self.first_index()));
    }

    fn append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        assert!(
            first.index >= self.first_index() && first.index <= self.last_index() + 1,
            "append at {} to a log holding [{}, {}]",
            first.index,
            self.first_index(),
            self.last_index()
        );
        self.entries.truncate((first.index - self.first_index()) as usize);
        self.entries.extend_from_slice(entries);
    }
}

/// An in-memory `QuorumStorage` with a durable and a volatile part (see the module comment).
#[derive(Clone, Debug, Default)]
pub struct MemQuorumStorage {
    live: LogState,
    durable: LogState,
    /// Writes since the last sync, in order; `live` is `durable` with all of them applied.
    unsynced: Vec<Write>,
    sync_count: u64,
}

impl MemQuorumStorage {
    pub fn new() -> MemQuorumStorage {
        MemQuorumStorage::default()
    }

    /// What survives a sync: the state after the last `sync`.
    pub fn durable(&self) -> &LogState {
        &self.durable
    }

    pub fn live(&self) -> &LogState {
        &self.live
    }

    pub fn unsynced_write_count(&self) -> usize {
        self.unsynced.len()
    }

    pub fn sync_count(&self) -> u64 {
        self.sync_count
    }

    /// The storage after a power cut: the durable state plus a random prefix of the unsynced writes (possibly
    /// none, possibly all), which becomes the new durable state.
    pub fn crash(&self, prng: &mut Prng) -> MemQuorumStorage {
        let kept = prng.below(self.unsynced.len() as u64 + 1) as usize;
        let mut durable = self.durable.clone();
        for write in &self.unsynced[..kept] {
            durable.apply(write);
        }
        MemQuorumStorage { live: durable.clone(), durable, unsynced: Vec::new(), sync_count: self.sync_count }
    }

    fn write(&mut self, write: Write) -> Result<(), QuorumStorageError> {
        self.live.apply(&write);
        self.unsynced.push(write);
        Ok(())
    }
}

impl QuorumStorage for MemQuorumStorage {
    fn append(&mut self, entries: &[Entry]) -> Result<(), QuorumStorageError> {
        self.write(Write::Append(entries.to_vec()))
    }

    fn set_hard_state(&mut self, hard_state: &HardState) -> Result<(), QuorumStorageError> {
        self.write(Write::HardState(hard_state.clone()))
    }

    fn set_conf_state(&mut self, conf_state: &ConfState) -> Result<(), QuorumStorageError> {
        self.write(Write::ConfState(conf_state.clone()))
    }

    fn install_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), QuorumStorageError> {
        self.write(Write::InstallSnapshot(snapshot.clone()))
    }

    fn compact_to_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), QuorumStorageError> {
        self.write(Write::CompactToSnapshot(snapshot.clone()))
    }

    fn sync(&mut self) -> Result<(), QuorumStorageError> {
        for write in self.unsynced.drain(..) {
            self.durable.apply(&write);
        }
        self.sync_count += 1;
        Ok(())
    }

    fn latest_snapshot(&self) -> &Snapshot {
        &self.live.snapshot
    }
}

impl raft::Storage for MemQuorumStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(self.live.raft_initial_state())
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        self.live.raft_entries(low, high, max_size.into())
    }

    fn term(&self, index: u64) -> raft::Result<u64> {
        self.live.raft_term(index)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.live.first_index())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.live.last_index())
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        self.live.raft_snapshot(request_index)
    }
}

/// `raft::Storage`'s answers over one `LogState`, shared by every `QuorumStorage`.
impl LogState {
    pub(crate) fn raft_initial_state(&self) -> RaftState {
        RaftState::new(self.hard_state.clone(), self.conf_state.clone())
    }

    pub(crate) fn raft_entries(
        &self,
        low: u64,
        high: u64,
        max_size: Option<u64>,
    ) -> raft::Result<Vec<Entry>> {
        if low < self.first_index() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last_index() + 1 || low > high {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let start = (low - self.first_index()) as usize;
        let mut entries = self.entries[start..start + (high - low) as usize].to_vec();
        raft::util::limit_size(&mut entries, max_size);
        Ok(entries)
    }

    pub(crate) fn raft_term(&self, index: u64) -> raft::Result<u64> {
        if index < self.snapshot_index() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        self.term(index).ok_or(raft::Error::Store(StorageError::Unavailable))
    }

    pub(crate) fn raft_snapshot(&self, request_index: u64) -> raft::Result<Snapshot> {
        if self.snapshot.get_metadata().index < request_index {
            return Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable));
        }
        Ok(self.snapshot.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::Storage;

    fn entry(index: u64, term: u64) -> Entry {
        Entry { index, term, ..Entry::default() }
    }

    fn snapshot(index: u64, term: u64) -> Snapshot {
        let mut snapshot = Snapshot::default();
        snapshot.mut_metadata().index = index;
        snapshot.mut_metadata().term = term;
        snapshot
    }

    // Writes are readable at once, durable only after sync; a crash keeps the durable state plus an in-order
    // prefix of the unsynced writes, every possible prefix for some draw.
    #[test]
    fn crash_keeps_a_prefix_of_unsynced_writes() {
        let mut storage = MemQuorumStorage::new();
        storage.append(&[entry(1, 1), entry(2, 1)]).unwrap();
        storage.sync().unwrap();
        storage.append(&[entry(3, 1)]).unwrap();
        storage.set_hard_state(&HardState { term: 1, vote: 1, commit: 3, ..HardState::default() }).unwrap();
        assert_eq!(storage.last_index().unwrap(), 3);
        assert_eq!(storage.durable().last_index(), 2);
        let mut seen = std::collections::BTreeSet::new();
        let mut prng = Prng::new(crate::sim::seed());
        for _ in 0..200 {
            let after = storage.crash(&mut prng);
            let state = (after.durable().last_index(), after.durable().hard_state.commit);
            assert!([(2, 0), (3, 0), (3, 3)].contains(&state), "{state:?} is not a prefix");
            assert_eq!(after.live().last_index(), after.durable().last_index());
            seen.insert(state);
        }
        assert_eq!(seen.len(), 3);
    }

    // Appending over a suffix replaces it; compaction keeps the term of the snapshot's index and refuses reads
    // below it; installing a snapshot empties the log.
    #[test]
    fn append_compact_install() {
        let mut storage = MemQuorumStorage::new();
        storage.append(&[entry(1, 1), entry(2, 1), entry(3, 1)]).unwrap();
        storage.append(&[entry(2, 2)]).unwrap();
        assert_eq!((storage.last_index().unwrap(), storage.term(2).unwrap()), (2, 2));
        storage.compact_to_snapshot(&snapshot(1, 1)).unwrap();
        assert_eq!(storage.first_index().unwrap(), 2);
        assert_eq!(storage.term(1).unwrap(), 1);
        assert_eq!(storage.term(0), Err(raft::Error::Store(StorageError::Compacted)));
        let context = GetEntriesContext::empty(false);
        assert_eq!(storage.entries(1, 3, None, context), Err(raft::Error::Store(StorageError::Compacted)));
        storage.install_snapshot(&snapshot(10, 3)).unwrap();
        assert_eq!((storage.first_index().unwrap(), storage.last_index().unwrap()), (11, 10));
        assert_eq!(storage.initial_state().unwrap().hard_state.commit, 10);
    }
}
