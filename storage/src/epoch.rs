//! The leader epoch cache of a partition (Kafka's `LeaderEpochFileCache`, KIP-101): which leader epoch began at which
//! offset, so that a follower can ask the leader where its epoch ended (OffsetForLeaderEpoch) and truncate exactly
//! the records that diverged, instead of trusting the high watermark.
//!
//! Persisted as Kafka's `leader-epoch-checkpoint` text file: the version (`0`), the entry count, then one
//! `epoch startOffset` line per entry. A new file is written whole to a temporary name, synced, renamed over the
//! old one and the directory synced, so a crash leaves either the old or the new file, never a mix.

use std::fmt::Write as _;
use std::io;
use std::path::Path;

use crate::io::{Storage, StorageFile};
use crate::types::{align_up, Offset};

pub const LEADER_EPOCH_CHECKPOINT: &str = "leader-epoch-checkpoint";
const LEADER_EPOCH_CHECKPOINT_TEMPORARY: &str = "leader-epoch-checkpoint.tmp";
const CHECKPOINT_VERSION: u32 = 0;
/// An entry count past this is a damaged file, not a partition with that many leader changes: every entry costs
/// an election, and a million of them is beyond any partition's life. It bounds the memory a damaged file can ask
/// for.
const ENTRY_COUNT_MAX: usize = 1_000_000;

/// Leader epoch `epoch` wrote its first record at `start_offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: i32,
    pub start_offset: Offset,
}

/// Entries ordered by epoch and start offset, both strictly increasing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaderEpochCache {
    entries: Vec<EpochEntry>,
}

impl LeaderEpochCache {
    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    pub fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|entry| entry.epoch)
    }

    /// Records that `epoch` starts at `start_offset`. As in Kafka, entries that conflict with the new one (an epoch
    /// at or above it, or a start offset at or past it) are removed first, so the order holds whatever the input.
    /// A negative epoch (a batch without one) changes nothing. Returns whether the cache changed.
    pub fn assign(&mut self, epoch: i32, start_offset: Offset) -> bool {
        if epoch < 0 || start_offset.0 < 0 {
            return false;
        }
        let needed = self
            .entries
            .last()
            .is_none_or(|latest| latest.epoch != epoch || start_offset < latest.start_offset);
        if !needed {
            return false;
        }
        let kept =
            self.entries.partition_point(|entry| entry.epoch < epoch && entry.start_offset < start_offset);
        if kept < self.entries.len() {
            log::warn!(
                "leader epoch {epoch} at {start_offset} removes conflicting entries {:?}",
                &self.entries[kept..]
            );
        }
        self.entries.truncate(kept);
        self.entries.push(EpochEntry { epoch, start_offset });
        self.assert_ordered();
        true
    }

    /// The log was truncated to end at `end_offset`: entries starting at or past it go. Returns whether any did.
    pub fn truncate_from_end(&mut self, end_offset: Offset) -> bool {
        let kept = self.entries.partition_point(|entry| entry.start_offset < end_offset);
        let changed = kept < self.entries.len();
        self.entries.truncate(kept);
        changed
    }

    /// The log now starts at `start_offset`: entries starting at or below it go, and the last of them comes back
    /// starting at `start_offset` (its epoch still covers the new first records). Kafka's `truncateFromStart`.
    pub fn truncate_from_start(&mut self, start_offset: Offset) -> bool {
        let removed = self.entries.partition_point(|entry| entry.start_offset <= start_offset);
        if removed == 0 {
            return false;
        }
        let epoch = self.entries[removed - 1].epoch;
        let unchanged = removed == 1 && self.entries[0].start_offset == start_offset;
        self.entries.drain(..removed);
        self.entries.insert(0, EpochEntry { epoch, start_offset });
        self.assert_ordered();
        !unchanged
    }

    /// Kafka's OffsetForLeaderEpoch on this cache: the largest known epoch at or below `requested_epoch`, and where
    /// it ended, which is the start of the next larger epoch, or `log_end` for the latest epoch. `None` is Kafka's
    /// UNDEFINED_EPOCH/UNDEFINED_EPOCH_OFFSET: an empty cache, a negative request, or a request above every known
    /// epoch. A request below every known epoch answers with the requested epoch and the first entry's start, as
    /// Kafka does.
    pub fn end_offset_for(&self, requested_epoch: i32, log_end: Offset) -> Option<(i32, Offset)> {
        if requested_epoch < 0 {
            return None;
        }
        if self.latest_epoch() == Some(requested_epoch) {
            return Some((requested_epoch, log_end));
        }
        let higher = self.entries.partition_point(|entry| entry.epoch <= requested_epoch);
        let next = self.entries.get(higher)?;
        match higher.checked_sub(1) {
            Some(floor) => Some((self.entries[floor].epoch, next.start_offset)),
            None => Some((requested_epoch, next.start_offset)),
        }
    }

    /// The checkpoint file's text.
    pub fn encode(&self) -> String {
        let mut text = format!("{CHECKPOINT_VERSION}\n{}\n", self.entries.len());
        for entry in &self.entries {
            let _ = writeln!(text, "{} {}", entry.epoch, entry.start_offset);
        }
        text
    }

    /// Parses a checkpoint file; the error says what is wrong with it.
    pub fn decode(text: &str) -> Result<LeaderEpochCache, String> {
        let mut lines = text.lines();
        let version = lines.next().ok_or("empty file")?;
        if version.trim() != CHECKPOINT_VERSION.to_string() {
            return Err(format!("version {version:?}, expected {CHECKPOINT_VERSION}"));
        }
        let count_line = lines.next().ok_or("no entry count")?;
        let count: usize = count_line.trim().parse().map_err(|_| format!("entry count {count_line:?}"))?;
        if count > ENTRY_COUNT_MAX {
            return Err(format!("entry count {count} exceeds {ENTRY_COUNT_MAX}"));
        }
        let mut entries: Vec<EpochEntry> = Vec::with_capacity(count);
        for index in 0..count {
            let line = lines.next().ok_or_else(|| format!("{count} entries announced, {index} present"))?;
            let mut fields = line.split_whitespace();
            let (Some(epoch), Some(offset), None) = (fields.next(), fields.next(), fields.next()) else {
                return Err(format!("entry line {line:?}"));
            };
            let epoch: i32 = epoch.parse().map_err(|_| format!("epoch {epoch:?}"))?;
            let offset: i64 = offset.parse().map_err(|_| format!("start offset {offset:?}"))?;
            let entry = EpochEntry { epoch, start_offset: Offset(offset) };
            let ordered = entries
                .last()
                .is_none_or(|previous| previous.epoch < epoch && previous.start_offset < entry.start_offset);
            if epoch < 0 || offset < 0 || !ordered {
                return Err(format!("entry {epoch} {offset} out of order or negative"));
            }
            entries.push(entry);
        }
        if lines.any(|line| !line.trim().is_empty()) {
            return Err(format!("more than the {count} entries announced"));
        }
        Ok(LeaderEpochCache { entries })
    }

    fn assert_ordered(&self) {
        for pair in self.entries.windows(2) {
            assert!(
                pair[0].epoch < pair[1].epoch && pair[0].start_offset < pair[1].start_offset,
                "leader epoch entries out of order: {pair:?}"
            );
        }
    }
}

/// Writes `cache` as `directory`'s checkpoint: whole to a temporary file, synced, renamed over the old file, and
/// the directory synced, so that a crash at any point leaves the old file or the new one.
pub async fn write_checkpoint<S: Storage>(
    storage: &S,
    directory: &Path,
    cache: &LeaderEpochCache,
) -> io::Result<()> {
    let temporary = directory.join(LEADER_EPOCH_CHECKPOINT_TEMPORARY);
    let text = cache.encode();
    let file = storage.open(&temporary, true).await?;
    // Direct I/O writes whole blocks: write the text padded with zeros, then cut the file to the text.
    let mut buffer = file.alloc_buffer(align_up(text.len() as u64) as usize);
    buffer.as_mut().fill(0);
    buffer.as_mut()[..text.len()].copy_from_slice(text.as_bytes());
    file.truncate(0).await?;
    file.write_at(buffer, 0).await?;
    file.truncate(text.len() as u64).await?;
    file.sync().await?;
    file.close().await?;
    storage.rename(&temporary, &directory.join(LEADER_EPOCH_CHECKPOINT)).await?;
    storage.sync_directory(directory).await
}

/// Reads `directory`'s checkpoint: `Ok(None)` when there is none, `Err` (saying why) when it cannot be used.
pub async fn read_checkpoint<S: Storage>(
    storage: &S,
    directory: &Path,
) -> Result<Option<LeaderEpochCache>, String> {
    let path = directory.join(LEADER_EPOCH_CHECKPOINT);
    if !storage.exists(&path).await {
        return Ok(None);
    }
    let file = storage.open(&path, false).await.map_err(|error| format!("opening: {error}"))?;
    let size = file.size().await.map_err(|error| format!("sizing: {error}"))?;
    // Twenty digits and a space per field bound a line; a larger file is damaged.
    let size_max = 64 * (ENTRY_COUNT_MAX as u64 + 2);
    if size > size_max {
        return Err(format!("{size} bytes exceeds {size_max}"));
    }
    let bytes = file.read_at(0, size as usize).await.map_err(|error| format!("reading: {error}"))?;
    let _ = file.close().await;
    let text = std::str::from_utf8(&bytes).map_err(|_| "not UTF-8 text".to_string())?;
    LeaderEpochCache::decode(text).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(entries: &[(i32, i64)]) -> LeaderEpochCache {
        let mut cache = LeaderEpochCache::default();
        for &(epoch, offset) in entries {
            assert!(cache.assign(epoch, Offset(offset)));
        }
        cache
    }

    fn pairs(cache: &LeaderEpochCache) -> Vec<(i32, i64)> {
        cache.entries().iter().map(|entry| (entry.epoch, entry.start_offset.0)).collect()
    }

    /// OffsetForLeaderEpoch answers as Kafka's `LeaderEpochFileCacheTest` expects.
    #[test]
    fn end_offset_for_follows_kafka() {
        let cache = cache(&[(2, 6), (4, 11), (7, 20)]);
        let log_end = Offset(25);
        let cases: [(i32, Option<(i32, i64)>); 9] = [
            (-1, None),
            (0, Some((0, 6))), // below every epoch: the requested epoch, ending where the first starts
            (2, Some((2, 11))),
            (3, Some((2, 11))), // unknown epoch between two: the floor epoch
            (4, Some((4, 20))),
            (5, Some((4, 20))),
            (7, Some((7, 25))), // the latest epoch ends at the log end
            (8, None),          // above every epoch
            (100, None),
        ];
        for (requested, expected) in cases {
            let found = cache.end_offset_for(requested, log_end).map(|(epoch, offset)| (epoch, offset.0));
            assert_eq!(found, expected, "requested epoch {requested}");
        }
        assert_eq!(LeaderEpochCache::default().end_offset_for(0, log_end), None);
    }

    #[test]
    fn assign_keeps_the_order_and_ignores_repeats() {
        let mut cache = cache(&[(1, 0), (3, 10)]);
        assert!(!cache.assign(3, Offset(15)), "the same epoch later changes nothing");
        assert!(!cache.assign(-1, Offset(20)), "a batch without an epoch changes nothing");
        // A lower epoch, or a start at or before a later entry's, removes the conflicting entries.
        assert!(cache.assign(2, Offset(12)));
        assert_eq!(pairs(&cache), [(1, 0), (2, 12)]);
        assert!(cache.assign(5, Offset(5)));
        assert_eq!(pairs(&cache), [(1, 0), (5, 5)]);
    }

    #[test]
    fn truncation_from_either_end() {
        let mut cache = cache(&[(1, 0), (2, 10), (4, 20)]);
        assert!(!cache.truncate_from_end(Offset(21)));
        assert!(cache.truncate_from_end(Offset(20)), "an entry starting at the new end goes");
        assert_eq!(pairs(&cache), [(1, 0), (2, 10)]);
        assert!(!cache.truncate_from_start(Offset(0)));
        assert!(cache.truncate_from_start(Offset(15)), "epoch 2 now starts at the log start");
        assert_eq!(pairs(&cache), [(2, 15)]);
        let mut cache = self::cache(&[(1, 0), (2, 10)]);
        assert!(cache.truncate_from_start(Offset(10)));
        assert_eq!(pairs(&cache), [(2, 10)]);
        assert!(cache.truncate_from_end(Offset(10)));
        assert!(cache.entries().is_empty());
    }

    #[test]
    fn checkpoint_text_round_trips_and_damage_is_refused() {
        let cache = cache(&[(0, 0), (3, 1500), (9, 2_000_000_000_000)]);
        let text = cache.encode();
        assert_eq!(text, "0\n3\n0 0\n3 1500\n9 2000000000000\n", "Kafka's leader-epoch-checkpoint format");
        assert_eq!(LeaderEpochCache::decode(&text), Ok(cache));
        assert_eq!(LeaderEpochCache::decode("0\n0\n"), Ok(LeaderEpochCache::default()));
        for damaged in [
            "",
            "1\n0\n",
            "0\n",
            "0\nx\n",
            "0\n2\n0 0\n",
            "0\n1\n0\n",
            "0\n1\n0 0 0\n",
            "0\n2\n3 10\n2 20\n",
            "0\n2\n2 20\n3 10\n",
            "0\n1\n-1 0\n",
            "0\n1\n0 0\n1 5\n",
            "0\n99999999999\n",
        ] {
            assert!(LeaderEpochCache::decode(damaged).is_err(), "{damaged:?} accepted");
        }
    }

    /// The file survives a reopen on the simulated disk, a crash keeps the old or the new file, and an
    /// interrupted write (a leftover temporary file) leaves the old one readable.
    #[test]
    fn checkpoint_file_is_replaced_atomically() {
        glommio::LocalExecutor::default().run(async {
            let storage = crate::SimStorage::new();
            let directory = Path::new("/sim/topic-0");
            assert_eq!(read_checkpoint(&storage, directory).await, Ok(None));
            let old = cache(&[(0, 0), (1, 7)]);
            write_checkpoint(&storage, directory, &old).await.unwrap();
            assert_eq!(read_checkpoint(&storage, directory).await, Ok(Some(old.clone())));
            storage.crash(1);
            assert_eq!(read_checkpoint(&storage, directory).await, Ok(Some(old.clone())));
            let new = cache(&[(0, 0), (1, 7), (2, 40)]);
            // Power fails right after the temporary file's sync, before the rename.
            storage.halt_after_syncs(1);
            assert!(write_checkpoint(&storage, directory, &new).await.is_err(), "halted before the rename");
            storage.crash(2);
            assert_eq!(read_checkpoint(&storage, directory).await, Ok(Some(old)));
            write_checkpoint(&storage, directory, &new).await.unwrap();
            storage.crash(3);
            assert_eq!(read_checkpoint(&storage, directory).await, Ok(Some(new)));
        });
    }
}
