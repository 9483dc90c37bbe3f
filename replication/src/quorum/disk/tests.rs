//! Crash consistency of the on-disk metadata log over `MemDir`, damaged files, and a round trip on real files.

use super::*;
use crate::quorum::storage::MemQuorumStorage;
use crate::sim::{seed, seeds, Prng};

fn entry(index: u64, term: u64, prng: &mut Prng) -> Entry {
    let size = prng.below(120) as usize;
    let data: Vec<u8> = (0..size).map(|_| prng.below(256) as u8).collect();
    Entry { index, term, data: data.into(), ..Entry::default() }
}

fn snapshot(index: u64, term: u64, conf_state: &ConfState, data: &[u8]) -> Snapshot {
    let mut snapshot = Snapshot::default();
    snapshot.mut_metadata().index = index;
    snapshot.mut_metadata().term = term;
    snapshot.mut_metadata().set_conf_state(conf_state.clone());
    snapshot.data = data.to_vec().into();
    snapshot
}

fn conf_state(voters: &[u64]) -> ConfState {
    ConfState { voters: voters.to_vec(), ..ConfState::default() }
}

/// What a crash may leave: the state at the last sync, then every prefix of the entries appended since (the only
/// writes that reach the disk before a sync), or, if the machine halted inside a sync or a checkpoint, the state
/// that sync would have made durable.
struct Expectation {
    synced: LogState,
    appended: Vec<Entry>,
    in_flight: Option<LogState>,
}

impl Expectation {
    fn allows(&self, recovered: &LogState) -> bool {
        if self.in_flight.as_ref() == Some(recovered) {
            return true;
        }
        let mut candidate = self.synced.clone();
        if &candidate == recovered {
            return true;
        }
        for entry in &self.appended {
            candidate.apply(&Write::Append(vec![entry.clone()]));
            if &candidate == recovered {
                return true;
            }
        }
        false
    }
}

/// One random write against the storage and the in-memory reference, as raft-rs would make it: entries only
/// after the commit index are replaced, commit never passes the last entry, snapshots at or below it.
fn random_write<D: QuorumDir>(
    prng: &mut Prng,
    storage: &mut DiskQuorumStorage<D>,
    reference: &mut MemQuorumStorage,
    expectation: &mut Expectation,
) -> Result<(), QuorumStorageError> {
    let live = reference.live().clone();
    let term = live.hard_state.term.max(live.term(live.last_index()).unwrap_or(0)).max(1);
    let commit = live.hard_state.commit;
    match prng.below(100) {
        0..=44 => {
            let start_low = (commit + 1).max(live.first_index());
            let start = if prng.chance(0.8) {
                live.last_index() + 1
            } else {
                prng.between(start_low, live.last_index() + 1)
            };
            let term = term + u64::from(prng.chance(0.2));
            let entries: Vec<Entry> =
                (0..1 + prng.below(3)).map(|offset| entry(start + offset, term, prng)).collect();
            reference.append(&entries)?;
            expectation.appended.extend(entries.iter().cloned());
            storage.append(&entries)
        }
        45..=64 => {
            let hard_state = HardState {
                term,
                vote: prng.below(4),
                commit: prng.between(commit, live.last_index()),
                ..HardState::default()
            };
            reference.set_hard_state(&hard_state)?;
            storage.set_hard_state(&hard_state)
        }
        65..=67 => {
            let conf = conf_state(&[1, 2, 3 + prng.below(3)]);
            reference.set_conf_state(&conf)?;
            storage.set_conf_state(&conf)
        }
        68..=89 => full_sync(storage, reference, expectation, |storage| storage.sync()),
        90..=96 if commit > live.snapshot_index() && commit <= live.last_index() => {
            let index = prng.between(live.snapshot_index() + 1, commit);
            let data = format!("image at {index}");
            let snapshot = snapshot(index, live.term(index).unwrap_or(0), &live.conf_state, data.as_bytes());
            reference.compact_to_snapshot(&snapshot)?;
            full_sync(storage, reference, expectation, |storage| storage.compact_to_snapshot(&snapshot))
        }
        _ => {
            let index = live.last_index().max(commit) + prng.between(1, 4);
            let snapshot = snapshot(index, term, &conf_state(&[1, 2, 3]), b"a leader's image");
            reference.install_snapshot(&snapshot)?;
            full_sync(storage, reference, expectation, |storage| storage.install_snapshot(&snapshot))
        }
    }
}

/// A write that ends with everything durable: on success the reference's live state is the new synced state; a
/// halt inside it may leave that state or the old one.
fn full_sync<D: QuorumDir>(
    storage: &mut DiskQuorumStorage<D>,
    reference: &mut MemQuorumStorage,
    expectation: &mut Expectation,
    write: impl FnOnce(&mut DiskQuorumStorage<D>) -> Result<(), QuorumStorageError>,
) -> Result<(), QuorumStorageError> {
    reference.sync()?;
    let result = write(storage);
    match result {
        Ok(()) => {
            *expectation =
                Expectation { synced: reference.live().clone(), appended: Vec::new(), in_flight: None };
        }
        Err(_) => expectation.in_flight = Some(reference.live().clone()),
    }
    result
}

/// Runs random writes until `write_count` are done or the directory halts; returns the directory.
/// With `halt_after`, the directory stops after that many more operations.
fn run_until_crash(
    seed: u64,
    prng: &mut Prng,
    dir: MemDir,
    write_count: u64,
    halt_after: Option<u64>,
) -> (MemDir, Expectation) {
    let mut storage = DiskQuorumStorage::open(dir).unwrap_or_else(|error| panic!("seed {seed:#x}: {error}"));
    if let Some(count) = halt_after {
        storage.dir.halt_after(count);
    }
    let mut reference = MemQuorumStorage::new();
    // The reference starts from what recovery restored, as one synced write.
    let restored = storage.live().clone();
    if restored.snapshot_index() > 0 {
        reference.install_snapshot(&restored.snapshot).unwrap();
    }
    reference.append(&restored.entries).unwrap();
    reference.set_hard_state(&restored.hard_state).unwrap();
    reference.set_conf_state(&restored.conf_state).unwrap();
    reference.sync().unwrap();
    assert_eq!(reference.live(), &restored, "the reference rebuilt the recovered state");
    let mut expectation = Expectation { synced: restored.clone(), appended: Vec::new(), in_flight: None };
    let mut halted = false;
    for _ in 0..write_count {
        if random_write(prng, &mut storage, &mut reference, &mut expectation).is_err() {
            halted = true;
            break;
        }
        assert_eq!(
            storage.live(),
            reference.live(),
            "seed {seed:#x}: the disk storage reads what was written"
        );
    }
    if !halted {
        // A crash between writes keeps no in-flight sync.
        expectation.in_flight = None;
    }
    (storage.into_dir(), expectation)
}

// Random appends, hard states, memberships, syncs, compactions and installed snapshots, cut by a crash between
// writes or inside one (a halted directory), three crashes per seed: the reopened state is always the synced state
// plus a prefix of the entries appended since (or the state an interrupted sync was making durable), so every
// synced entry is there, the hard state is never older than synced and commit never passes the last entry.
#[test]
fn crash_at_random_points_keeps_the_synced_prefix() {
    let (mut torn_count, mut halted_count, mut leftover_count, mut recovered_entry_count) = (0, 0, 0, 0);
    let seed_list = seeds(300);
    for &seed in &seed_list {
        let mut prng = Prng::new(seed);
        let mut dir = MemDir::new();
        for round in 0..3 {
            let halt_after = prng.chance(0.5).then(|| prng.below(400));
            halted_count += u64::from(halt_after.is_some());
            let write_count = prng.below(150);
            let (written, expectation) = run_until_crash(seed, &mut prng, dir, write_count, halt_after);
            dir = written.crash(&mut prng);
            let reopened = DiskQuorumStorage::open(dir.clone())
                .unwrap_or_else(|error| panic!("seed {seed:#x} round {round}: reopening failed: {error}"));
            let recovered = reopened.live();
            assert!(
                expectation.allows(recovered),
                "seed {seed:#x} round {round}: recovered {recovered:?}\nsynced {:?}\nappended since {:?}",
                expectation.synced,
                expectation.appended
            );
            assert!(recovered.hard_state.commit <= recovered.last_index());
            let mut expected_names = vec![log_file_name(recovered.first_index()), STATE_FILE.to_string()];
            if recovered.snapshot_index() > 0 {
                expected_names.insert(1, snapshot_file_name(recovered.snapshot_index()));
            }
            assert_eq!(reopened.dir().list().unwrap(), expected_names, "seed {seed:#x}: files left over");
            torn_count += u64::from(reopened.recovery().torn_size > 0);
            leftover_count += reopened.recovery().leftover_file_count;
            recovered_entry_count += reopened.recovery().entry_frame_count;
            dir = reopened.into_dir();
        }
    }
    eprintln!(
        "{} seeds x 3 crashes: {halted_count} halts armed inside the writes, {torn_count} torn tails cut, \
         {leftover_count} leftover files removed, {recovered_entry_count} entry frames replayed",
        seed_list.len()
    );
    if seed_list.len() > 1 {
        assert!(torn_count > 0 && leftover_count > 0 && halted_count > 0, "the crashes missed a case");
    }
}

/// A directory with synced entries 1..=20 (term 1, commit 10), a snapshot at 5 and unsynced entries 21..=25.
fn written_dir() -> (MemDir, LogState) {
    let mut prng = Prng::new(seed());
    let mut storage = DiskQuorumStorage::open(MemDir::new()).unwrap();
    storage.set_conf_state(&conf_state(&[1, 2, 3])).unwrap();
    storage.append(&(1..=10).map(|index| entry(index, 1, &mut prng)).collect::<Vec<_>>()).unwrap();
    storage.set_hard_state(&HardState { term: 1, vote: 1, commit: 10, ..HardState::default() }).unwrap();
    storage.sync().unwrap();
    storage.compact_to_snapshot(&snapshot(5, 1, &conf_state(&[1, 2, 3]), b"image")).unwrap();
    storage.append(&(11..=20).map(|index| entry(index, 1, &mut prng)).collect::<Vec<_>>()).unwrap();
    storage.sync().unwrap();
    let synced = storage.live().clone();
    storage.append(&(21..=25).map(|index| entry(index, 1, &mut prng)).collect::<Vec<_>>()).unwrap();
    (storage.into_dir(), synced)
}

fn current_log(dir: &MemDir) -> String {
    dir.list().unwrap().into_iter().find(|name| name.starts_with("log-")).unwrap()
}

// A torn tail (the unsynced last entries cut mid-frame, or garbage after them) is cut at open, and the entries
// before it stay; the cut is synced, so a second open finds a clean log.
#[test]
fn torn_tail_is_cut() {
    let (dir, synced) = written_dir();
    let log = current_log(&dir);
    let full_size = dir.file_size(&log).unwrap();
    for cut in [1, 7, 30] {
        let mut damaged = dir.clone();
        damaged.truncate(&log, (full_size - cut) as u64).unwrap();
        let reopened = DiskQuorumStorage::open(damaged).unwrap();
        assert!(reopened.recovery().torn_size > 0, "cut {cut}");
        assert!(reopened.live().last_index() >= synced.last_index() && reopened.live().last_index() < 25);
        assert_eq!(reopened.live().entry(20), synced.entry(20));
        let again = DiskQuorumStorage::open(reopened.into_dir()).unwrap();
        assert_eq!(again.recovery().torn_size, 0);
    }
    let mut garbage = dir.clone();
    garbage.append(&log, &[0xAB; 13]).unwrap();
    let reopened = DiskQuorumStorage::open(garbage).unwrap();
    assert_eq!(reopened.recovery().torn_size, 13);
    assert_eq!(reopened.live().last_index(), 25);
}

// A flipped bit in synced data — anywhere in the synced part of the log, the state file or the snapshot — is
// reported as `Corrupt` and the log is left as it was, never cut; the same flip past the synced size is a torn
// tail.
#[test]
fn flipped_bit_in_synced_data_is_reported() {
    let (dir, synced) = written_dir();
    let log = current_log(&dir);
    let mut prng = Prng::new(seed());
    let synced_size =
        DiskState::decode(&dir.read(STATE_FILE).unwrap().unwrap()).unwrap().log_synced_size as usize;
    assert!(synced_size > 0);
    for _ in 0..40 {
        let position = prng.below(synced_size as u64) as usize;
        let mut damaged = dir.clone();
        damaged.flip_bit(&log, position, prng.below(8) as u8);
        let before = damaged.read(&log).unwrap();
        match DiskQuorumStorage::open(damaged.clone()) {
            Err(QuorumStorageError::Corrupt { file, .. }) => assert_eq!(file, log),
            other => panic!("flip at {position} of {synced_size} synced bytes: {other:?}"),
        }
        assert_eq!(damaged.read(&log).unwrap(), before, "the damaged log was changed");
    }
    for name in [STATE_FILE.to_string(), snapshot_file_name(5)] {
        let size = dir.file_size(&name).unwrap();
        let mut damaged = dir.clone();
        damaged.flip_bit(&name, prng.below(size as u64) as usize, 3);
        let result = DiskQuorumStorage::open(damaged);
        assert!(matches!(result, Err(QuorumStorageError::Corrupt { .. })), "{name}: {result:?}");
    }
    let mut damaged = dir.clone();
    damaged.flip_bit(&log, synced_size + 2, 0);
    let reopened = DiskQuorumStorage::open(damaged).unwrap();
    assert_eq!(reopened.live().last_index(), synced.last_index());
    assert!(reopened.recovery().torn_size > 0);
}

// After a failed write the storage refuses every later write (the page cache may have dropped what failed), and
// reopening recovers the synced state.
#[test]
fn failed_write_disables_the_storage() {
    let mut prng = Prng::new(seed());
    let mut storage = DiskQuorumStorage::open(MemDir::new()).unwrap();
    storage.append(&[entry(1, 1, &mut prng)]).unwrap();
    storage.sync().unwrap();
    storage.dir.halt_after(1);
    storage.append(&[entry(2, 1, &mut prng)]).unwrap();
    assert!(storage.sync().is_err());
    storage.dir.halt_after(1_000);
    assert!(storage.append(&[entry(3, 1, &mut prng)]).is_err());
    assert!(storage.sync().is_err());
    assert!(storage.set_hard_state(&HardState::default()).is_err());
    let reopened = DiskQuorumStorage::open(storage.into_dir()).unwrap();
    assert!(reopened.live().last_index() >= 1);
}

// On real files in a temporary directory: writes, a compaction, more writes and a sync come back whole after
// reopening, and the directory holds only the state, the current log and the current snapshot.
#[test]
fn real_files_round_trip() {
    let root = tempfile::tempdir().unwrap();
    let mut prng = Prng::new(seed());
    let mut storage = DiskQuorumStorage::open(StdDir::open(root.path()).unwrap()).unwrap();
    storage.set_conf_state(&conf_state(&[1, 2, 3])).unwrap();
    storage.append(&(1..=30).map(|index| entry(index, 1, &mut prng)).collect::<Vec<_>>()).unwrap();
    storage.append(&(25..=40).map(|index| entry(index, 2, &mut prng)).collect::<Vec<_>>()).unwrap();
    storage.set_hard_state(&HardState { term: 2, vote: 2, commit: 30, ..HardState::default() }).unwrap();
    storage.sync().unwrap();
    storage.compact_to_snapshot(&snapshot(20, 1, &conf_state(&[1, 2, 3]), b"image at 20")).unwrap();
    storage.append(&(41..=45).map(|index| entry(index, 2, &mut prng)).collect::<Vec<_>>()).unwrap();
    storage.set_hard_state(&HardState { term: 2, vote: 2, commit: 44, ..HardState::default() }).unwrap();
    storage.sync().unwrap();
    let written = storage.live().clone();
    drop(storage);
    let reopened = DiskQuorumStorage::open(StdDir::open(root.path()).unwrap()).unwrap();
    assert_eq!(reopened.live(), &written);
    assert_eq!((reopened.live().first_index(), reopened.live().last_index()), (21, 45));
    assert_eq!(reopened.live().term(30), Some(2));
    assert_eq!(reopened.recovery(), &RecoveryReport { entry_frame_count: 25, ..RecoveryReport::default() });
    let names = reopened.dir().list().unwrap();
    assert_eq!(names, vec![log_file_name(21), snapshot_file_name(20), STATE_FILE.to_string()]);
}
