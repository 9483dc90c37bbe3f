//! The metadata log on disk: `DiskQuorumStorage`, a `QuorumStorage` over a `QuorumDir` — a small log of its own
//! rather than the storage crate's partition log, whose offsets, batches and glommio DMA files fit Kafka records,
//! not Raft entries, terms and hard state.
//!
//! Files (every integer little-endian; a *frame* is `[u32 payload length][u32 CRC-32C of the payload][payload]`):
//! - `log-<first index, 20 digits>`: append-only, one frame per `raft::Entry` (protobuf). An entry whose index is
//!   at or below the last one replaces the suffix from its index, as `append` does in memory, so a conflicting
//!   append is a plain append and any prefix of the file is a prefix of the writes.
//! - `snapshot-<index, 20 digits>`: one frame holding the `raft::Snapshot`.
//! - `state`: one frame holding the snapshot index, the log's synced size, the `HardState` and the `ConfState`.
//!   It names the current snapshot and log file, so replacing it (write `state.tmp`, fdatasync, rename, fsync the
//!   directory) is the commit point of every sync and of every compaction.
//!
//! `sync` fdatasyncs the log, then replaces `state` with the new hard state, membership and synced size. The hard
//! state is written only there, after the entries it may commit, so commit never passes the durable log.
//! Compacting to a snapshot (ours or the leader's) is a checkpoint, and a full sync: write the snapshot file and a
//! new log file holding the entries after it (each via a temporary name, fdatasync and rename), fsync the
//! directory, replace `state`, then remove the old files. A crash at any point leaves the old or the new state.
//!
//! Opening replays the log named by `state`. An invalid frame at or past the synced size is a torn tail, cut;
//! one below it is durable data gone bad: `QuorumStorageError::Corrupt`, never cut (the storage crate's rule).
//! Then what survived is synced, so that nothing the node reads back can vanish in a later crash, and files no
//! `state` names (an interrupted checkpoint's) are removed.
//!
//! Every call blocks on the file system: the broker runs this on a thread of its own (the metadata log is small
//! and written a few times per second), never on a glommio reactor. After a failed write or sync the storage
//! refuses every later write (fsyncgate: the page cache may have dropped the failed pages); reopening recovers.

mod dir;
#[cfg(test)]
mod tests;

pub use dir::{MemDir, QuorumDir, StdDir};

use protobuf::Message as _;
use raft::prelude::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState};

use crate::quorum::storage::{LogState, QuorumStorage, QuorumStorageError, Write};

pub const STATE_FILE: &str = "state";
const TEMPORARY_SUFFIX: &str = ".tmp";
const FRAME_HEADER_SIZE: usize = 8;
/// The state payload before the two protobuf messages: snapshot index, synced log size, and the length of the
/// hard state.
const STATE_FIXED_SIZE: usize = 8 + 8 + 4;

pub fn log_file_name(first_index: u64) -> String {
    format!("log-{first_index:020}")
}

pub fn snapshot_file_name(index: u64) -> String {
    format!("snapshot-{index:020}")
}

/// What opening found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Entry frames replayed from the log.
    pub entry_frame_count: u64,
    /// Bytes of torn tail cut from the log (all past the synced size).
    pub torn_size: u64,
    /// Files of an interrupted checkpoint, or temporaries, removed.
    pub leftover_file_count: usize,
}

/// The on-disk `QuorumStorage` (see the module comment).
#[derive(Debug)]
pub struct DiskQuorumStorage<D: QuorumDir> {
    dir: D,
    live: LogState,
    /// Bytes written to the current log file, and the part the `state` file says is synced.
    log_size: u64,
    log_synced_size: u64,
    /// The hard state or membership changed since `state` was last written.
    state_dirty: bool,
    /// The first failed write or sync; every later write is refused.
    failed: Option<String>,
    /// The state as of the last sync, kept only when asked for (the simulation's durability check).
    synced: Option<LogState>,
    recovery: RecoveryReport,
}

fn io_error(operation: &'static str) -> impl Fn(std::io::Error) -> QuorumStorageError {
    move |error| QuorumStorageError::Io { operation, reason: error.to_string() }
}

fn corrupt(file: &str, position: usize, reason: impl Into<String>) -> QuorumStorageError {
    QuorumStorageError::Corrupt { file: file.to_string(), position: position as u64, reason: reason.into() }
}

fn encode<M: protobuf::Message>(message: &M) -> Result<Vec<u8>, QuorumStorageError> {
    message
        .write_to_bytes()
        .map_err(|error| QuorumStorageError::Io { operation: "encode", reason: error.to_string() })
}

/// Appends one frame around `payload`.
pub fn frame(payload: &[u8], out: &mut Vec<u8>) {
    let length = u32::try_from(payload.len());
    assert!(length.is_ok(), "a frame of {} bytes does not fit its u32 length", payload.len());
    out.extend_from_slice(&length.unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// The payload of the frame at `position` and the position after it, or why there is no valid frame there.
pub fn read_frame(bytes: &[u8], position: usize) -> Result<(&[u8], usize), String> {
    let rest = &bytes[position..];
    if rest.len() < FRAME_HEADER_SIZE {
        return Err(format!("{} bytes left, less than a frame header", rest.len()));
    }
    let length = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    let checksum = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
    if length > rest.len() - FRAME_HEADER_SIZE {
        return Err(format!("frame of {length} bytes with only {} left", rest.len() - FRAME_HEADER_SIZE));
    }
    let payload = &rest[FRAME_HEADER_SIZE..FRAME_HEADER_SIZE + length];
    let actual = crc32c::crc32c(payload);
    if actual != checksum {
        return Err(format!("checksum {actual:#010x} where the frame says {checksum:#010x}"));
    }
    Ok((payload, position + FRAME_HEADER_SIZE + length))
}

/// A file that must hold exactly one frame (`state`, a snapshot).
fn read_single_frame<'a>(name: &str, bytes: &'a [u8]) -> Result<&'a [u8], QuorumStorageError> {
    let (payload, end) = read_frame(bytes, 0).map_err(|reason| corrupt(name, 0, reason))?;
    if end != bytes.len() {
        return Err(corrupt(name, end, format!("{} bytes after the frame", bytes.len() - end)));
    }
    Ok(payload)
}

/// The contents of the `state` file.
#[derive(Clone, Debug, Default, PartialEq)]
struct DiskState {
    snapshot_index: u64,
    log_synced_size: u64,
    hard_state: HardState,
    conf_state: ConfState,
}

impl DiskState {
    fn encode(&self) -> Result<Vec<u8>, QuorumStorageError> {
        let hard_state = encode(&self.hard_state)?;
        let conf_state = encode(&self.conf_state)?;
        let mut payload = Vec::with_capacity(STATE_FIXED_SIZE + hard_state.len() + conf_state.len());
        payload.extend_from_slice(&self.snapshot_index.to_le_bytes());
        payload.extend_from_slice(&self.log_synced_size.to_le_bytes());
        payload.extend_from_slice(&(hard_state.len() as u32).to_le_bytes());
        payload.extend_from_slice(&hard_state);
        payload.extend_from_slice(&conf_state);
        let mut bytes = Vec::with_capacity(FRAME_HEADER_SIZE + payload.len());
        frame(&payload, &mut bytes);
        Ok(bytes)
    }

    fn decode(bytes: &[u8]) -> Result<DiskState, QuorumStorageError> {
        let payload = read_single_frame(STATE_FILE, bytes)?;
        let bad = |reason: String| corrupt(STATE_FILE, FRAME_HEADER_SIZE, reason);
        if payload.len() < STATE_FIXED_SIZE {
            return Err(bad(format!("{} bytes, less than {STATE_FIXED_SIZE}", payload.len())));
        }
        let word = |at: usize| {
            let mut array = [0u8; 8];
            array.copy_from_slice(&payload[at..at + 8]);
            u64::from_le_bytes(array)
        };
        let hard_state_size =
            u32::from_le_bytes([payload[16], payload[17], payload[18], payload[19]]) as usize;
        if hard_state_size > payload.len() - STATE_FIXED_SIZE {
            return Err(bad(format!("hard state of {hard_state_size} bytes overruns the payload")));
        }
        let (hard_state, conf_state) = payload[STATE_FIXED_SIZE..].split_at(hard_state_size);
        Ok(DiskState {
            snapshot_index: word(0),
            log_synced_size: word(8),
            hard_state: HardState::parse_from_bytes(hard_state).map_err(|error| bad(error.to_string()))?,
            conf_state: ConfState::parse_from_bytes(conf_state).map_err(|error| bad(error.to_string()))?,
        })
    }
}

impl<D: QuorumDir> DiskQuorumStorage<D> {
    /// Opens the metadata log in `dir`: an empty directory starts an empty log, else recovery (see the module
    /// comment) restores the snapshot, the hard state, the membership and the entries.
    pub fn open(mut dir: D) -> Result<DiskQuorumStorage<D>, QuorumStorageError> {
        let mut leftover_file_count = 0;
        for name in dir.list().map_err(io_error("list"))? {
            if name.ends_with(TEMPORARY_SUFFIX) {
                dir.remove(&name).map_err(io_error("remove"))?;
                leftover_file_count += 1;
            }
        }
        let state = match dir.read(STATE_FILE).map_err(io_error("read"))? {
            Some(bytes) => DiskState::decode(&bytes)?,
            None => Self::open_create(&mut dir)?,
        };
        let mut storage = DiskQuorumStorage {
            dir,
            live: LogState {
                hard_state: state.hard_state.clone(),
                conf_state: state.conf_state.clone(),
                ..LogState::default()
            },
            log_size: 0,
            log_synced_size: state.log_synced_size,
            state_dirty: false,
            failed: None,
            synced: None,
            recovery: RecoveryReport { leftover_file_count, ..RecoveryReport::default() },
        };
        storage.open_snapshot(state.snapshot_index)?;
        storage.open_log()?;
        storage.open_finish()?;
        Ok(storage)
    }

    /// A directory with no `state`: a new log, unless a snapshot says this is a log that lost its state.
    fn open_create(dir: &mut D) -> Result<DiskState, QuorumStorageError> {
        let names = dir.list().map_err(io_error("list"))?;
        if let Some(name) = names.iter().find(|name| name.starts_with("snapshot-")) {
            return Err(corrupt(name, 0, "a snapshot but no state file"));
        }
        let state = DiskState::default();
        dir.create(&log_file_name(1), &[]).map_err(io_error("create"))?;
        dir.sync_file(&log_file_name(1)).map_err(io_error("sync"))?;
        write_state_file(dir, &state)?;
        Ok(state)
    }

    fn open_snapshot(&mut self, index: u64) -> Result<(), QuorumStorageError> {
        if index == 0 {
            return Ok(());
        }
        let name = snapshot_file_name(index);
        let bytes =
            self.dir.read(&name).map_err(io_error("read"))?.ok_or_else(|| corrupt(&name, 0, "missing"))?;
        let payload = read_single_frame(&name, &bytes)?;
        let snapshot = Snapshot::parse_from_bytes(payload)
            .map_err(|error| corrupt(&name, FRAME_HEADER_SIZE, error.to_string()))?;
        if snapshot.get_metadata().index != index {
            return Err(corrupt(&name, 0, format!("holds a snapshot at {}", snapshot.get_metadata().index)));
        }
        self.live.snapshot = snapshot;
        Ok(())
    }

    /// Replays the current log file, cutting a torn tail past the synced size and reporting damage below it.
    fn open_log(&mut self) -> Result<(), QuorumStorageError> {
        let name = self.log_name();
        let bytes =
            self.dir.read(&name).map_err(io_error("read"))?.ok_or_else(|| corrupt(&name, 0, "missing"))?;
        let synced_size = self.log_synced_size as usize;
        if bytes.len() < synced_size {
            return Err(corrupt(
                &name,
                bytes.len(),
                format!("file ends before its synced size {synced_size}"),
            ));
        }
        let mut position = 0;
        while position < bytes.len() {
            match self.open_log_entry(&bytes, position) {
                Ok(next) => {
                    position = next;
                    self.recovery.entry_frame_count += 1;
                }
                Err(reason) if position < synced_size => return Err(corrupt(&name, position, reason)),
                Err(_) => break,
            }
        }
        if position < bytes.len() {
            self.recovery.torn_size = (bytes.len() - position) as u64;
            self.dir.truncate(&name, position as u64).map_err(io_error("truncate"))?;
            self.dir.sync_file(&name).map_err(io_error("sync"))?;
        }
        self.log_size = position as u64;
        Ok(())
    }

    fn open_log_entry(&mut self, bytes: &[u8], position: usize) -> Result<usize, String> {
        let (payload, next) = read_frame(bytes, position)?;
        let entry = Entry::parse_from_bytes(payload).map_err(|error| error.to_string())?;
        if entry.index < self.live.first_index() || entry.index > self.live.last_index() + 1 {
            return Err(format!(
                "entry {} outside the log's [{}, {}]",
                entry.index,
                self.live.first_index(),
                self.live.last_index() + 1
            ));
        }
        self.live.apply(&Write::Append(vec![entry]));
        Ok(next)
    }

    /// Checks what recovery restored, syncs it and removes the files no `state` names.
    fn open_finish(&mut self) -> Result<(), QuorumStorageError> {
        let commit = self.live.hard_state.commit;
        if commit > self.live.last_index() {
            let reason = format!("commit {commit} past the last entry {}", self.live.last_index());
            return Err(corrupt(STATE_FILE, 0, reason));
        }
        if self.log_size != self.log_synced_size {
            self.state_dirty = true;
            self.sync()?;
        }
        let keep = [STATE_FILE.to_string(), self.log_name(), snapshot_file_name(self.live.snapshot_index())];
        let mut removed = false;
        for name in self.dir.list().map_err(io_error("list"))? {
            if !keep.contains(&name) && (name.starts_with("log-") || name.starts_with("snapshot-")) {
                self.dir.remove(&name).map_err(io_error("remove"))?;
                self.recovery.leftover_file_count += 1;
                removed = true;
            }
        }
        if removed {
            self.dir.sync_dir().map_err(io_error("sync directory"))?;
        }
        Ok(())
    }

    /// Keeps the state as of each sync, for `synced` (the simulation's durability check).
    pub fn track_synced(&mut self) {
        self.synced = Some(self.live.clone());
    }

    /// The state as of the last sync, if `track_synced` was called: what a crash must preserve.
    pub fn synced(&self) -> Option<&LogState> {
        self.synced.as_ref()
    }

    /// Everything written, synced or not, as raft-rs reads it.
    pub fn live(&self) -> &LogState {
        &self.live
    }

    pub fn recovery(&self) -> &RecoveryReport {
        &self.recovery
    }

    pub fn dir(&self) -> &D {
        &self.dir
    }

    pub fn into_dir(self) -> D {
        self.dir
    }

    fn log_name(&self) -> String {
        log_file_name(self.live.first_index())
    }

    fn check_usable(&self, operation: &'static str) -> Result<(), QuorumStorageError> {
        match &self.failed {
            None => Ok(()),
            Some(reason) => {
                Err(QuorumStorageError::Io { operation, reason: format!("an earlier failure: {reason}") })
            }
        }
    }

    /// Runs one step that touches the disk; a failure disables every later write.
    fn guard<T>(
        &mut self,
        step: impl FnOnce(&mut Self) -> Result<T, QuorumStorageError>,
    ) -> Result<T, QuorumStorageError> {
        let result = step(self);
        if let Err(error) = &result {
            self.failed = Some(error.to_string());
        }
        result
    }

    fn write_state(&mut self) -> Result<(), QuorumStorageError> {
        let state = DiskState {
            snapshot_index: self.live.snapshot_index(),
            log_synced_size: self.log_size,
            hard_state: self.live.hard_state.clone(),
            conf_state: self.live.conf_state.clone(),
        };
        write_state_file(&mut self.dir, &state)?;
        self.log_synced_size = self.log_size;
        self.state_dirty = false;
        if let Some(synced) = &mut self.synced {
            *synced = self.live.clone();
        }
        Ok(())
    }

    /// After `live` took a new snapshot: the checkpoint of the module comment.
    fn checkpoint(&mut self, old_snapshot_index: u64, old_log_name: &str) -> Result<(), QuorumStorageError> {
        let index = self.live.snapshot_index();
        let mut snapshot = Vec::new();
        frame(&encode(&self.live.snapshot)?, &mut snapshot);
        write_file_atomic(&mut self.dir, &snapshot_file_name(index), &snapshot)?;
        let mut log = Vec::new();
        for entry in &self.live.entries {
            frame(&encode(entry)?, &mut log);
        }
        let log_name = self.log_name();
        write_file_atomic(&mut self.dir, &log_name, &log)?;
        self.dir.sync_dir().map_err(io_error("sync directory"))?;
        self.log_size = log.len() as u64;
        self.write_state()?;
        if old_log_name != self.log_name() {
            self.dir.remove(old_log_name).map_err(io_error("remove"))?;
        }
        if old_snapshot_index != 0 && old_snapshot_index != index {
            self.dir.remove(&snapshot_file_name(old_snapshot_index)).map_err(io_error("remove"))?;
        }
        Ok(())
    }

    fn snapshot_write(&mut self, write: Write) -> Result<(), QuorumStorageError> {
        self.check_usable("snapshot")?;
        let (old_snapshot_index, old_log_name) = (self.live.snapshot_index(), self.log_name());
        self.live.apply(&write);
        self.guard(|storage| storage.checkpoint(old_snapshot_index, &old_log_name))
    }
}

/// Creates `name` through a temporary file, fdatasynced and renamed over it (the directory is not synced).
fn write_file_atomic<D: QuorumDir>(dir: &mut D, name: &str, bytes: &[u8]) -> Result<(), QuorumStorageError> {
    let temporary = format!("{name}{TEMPORARY_SUFFIX}");
    dir.create(&temporary, bytes).map_err(io_error("create"))?;
    dir.sync_file(&temporary).map_err(io_error("sync"))?;
    dir.rename(&temporary, name).map_err(io_error("rename"))
}

/// Replaces `state`: the commit point.
fn write_state_file<D: QuorumDir>(dir: &mut D, state: &DiskState) -> Result<(), QuorumStorageError> {
    write_file_atomic(dir, STATE_FILE, &state.encode()?)?;
    dir.sync_dir().map_err(io_error("sync directory"))
}

impl<D: QuorumDir> QuorumStorage for DiskQuorumStorage<D> {
    fn append(&mut self, entries: &[Entry]) -> Result<(), QuorumStorageError> {
        self.check_usable("append")?;
        let mut bytes = Vec::new();
        for entry in entries {
            frame(&encode(entry)?, &mut bytes);
        }
        let name = self.log_name();
        self.guard(|storage| storage.dir.append(&name, &bytes).map_err(io_error("append")))?;
        self.log_size += bytes.len() as u64;
        self.live.apply(&Write::Append(entries.to_vec()));
        Ok(())
    }

    fn set_hard_state(&mut self, hard_state: &HardState) -> Result<(), QuorumStorageError> {
        self.check_usable("set hard state")?;
        self.live.apply(&Write::HardState(hard_state.clone()));
        self.state_dirty = true;
        Ok(())
    }

    fn set_conf_state(&mut self, conf_state: &ConfState) -> Result<(), QuorumStorageError> {
        self.check_usable("set membership")?;
        self.live.apply(&Write::ConfState(conf_state.clone()));
        self.state_dirty = true;
        Ok(())
    }

    fn install_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), QuorumStorageError> {
        self.snapshot_write(Write::InstallSnapshot(snapshot.clone()))
    }

    fn compact_to_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), QuorumStorageError> {
        self.snapshot_write(Write::CompactToSnapshot(snapshot.clone()))
    }

    fn sync(&mut self) -> Result<(), QuorumStorageError> {
        self.check_usable("sync")?;
        if self.log_size == self.log_synced_size && !self.state_dirty {
            return Ok(());
        }
        let name = self.log_name();
        self.guard(|storage| {
            if storage.log_size != storage.log_synced_size {
                storage.dir.sync_file(&name).map_err(io_error("sync"))?;
            }
            storage.write_state()
        })
    }

    fn latest_snapshot(&self) -> &Snapshot {
        &self.live.snapshot
    }
}

impl<D: QuorumDir> raft::Storage for DiskQuorumStorage<D> {
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
