//! The sparse offset index (`.index`) and time index (`.timeindex`) of one segment, in Kafka's file layouts:
//! an offset-index entry is (relative offset u32, file position u32), a time-index entry is (timestamp i64,
//! relative offset u32), all big-endian. Both are kept in memory; the files are written behind the log.

use crate::types::{FilePosition, Offset};

pub const OFFSET_INDEX_ENTRY_SIZE: usize = 8;
pub const TIME_INDEX_ENTRY_SIZE: usize = 12;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OffsetIndexEntry {
    /// Offset of the batch that starts at `position`, relative to the segment's base offset.
    pub relative_offset: u32,
    pub position: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeIndexEntry {
    /// Largest timestamp of every batch before `relative_offset` in the segment.
    pub timestamp: i64,
    pub relative_offset: u32,
}

#[derive(Clone, Debug, Default)]
pub struct OffsetIndex {
    pub entries: Vec<OffsetIndexEntry>,
}

impl OffsetIndex {
    /// Position of the last indexed batch that starts at or below `relative_offset` (0 when none does).
    pub fn lookup(&self, relative_offset: u32) -> (u32, FilePosition) {
        let index = self.entries.partition_point(|entry| entry.relative_offset <= relative_offset);
        match index {
            0 => (0, FilePosition(0)),
            _ => {
                let entry = self.entries[index - 1];
                (entry.relative_offset, FilePosition(entry.position as u64))
            }
        }
    }

    /// Where a read of at most `size` bytes from `position` should end: at the last indexed batch start inside
    /// that range, so that no partial batch is read and thrown away; `position + size` when the index knows none.
    pub fn chunk_end(&self, position: u64, size: u64) -> u64 {
        let at_most = position + size;
        let index = self.entries.partition_point(|entry| entry.position as u64 <= at_most);
        match self.entries[..index].last() {
            Some(entry) if entry.position as u64 > position => entry.position as u64,
            _ => at_most,
        }
    }

    pub fn push(&mut self, entry: OffsetIndexEntry) {
        if let Some(last) = self.entries.last() {
            assert!(entry.relative_offset > last.relative_offset && entry.position > last.position);
        }
        self.entries.push(entry);
    }

    pub fn truncate_from_position(&mut self, position: u64) {
        self.entries.retain(|entry| (entry.position as u64) < position);
    }

    pub fn encode(&self, from_entry_index: usize) -> Vec<u8> {
        let mut bytes = Vec::with_capacity((self.entries.len() - from_entry_index) * OFFSET_INDEX_ENTRY_SIZE);
        for entry in &self.entries[from_entry_index..] {
            bytes.extend_from_slice(&entry.relative_offset.to_be_bytes());
            bytes.extend_from_slice(&entry.position.to_be_bytes());
        }
        bytes
    }

    /// Parses entries while they stay strictly increasing and inside `log_size`; returns the index and whether the
    /// whole file was consumed that way (a closed segment's index must be).
    pub fn decode(bytes: &[u8], log_size: u64) -> (OffsetIndex, bool) {
        let mut index = OffsetIndex::default();
        let mut complete = bytes.len().is_multiple_of(OFFSET_INDEX_ENTRY_SIZE);
        for chunk in bytes.chunks_exact(OFFSET_INDEX_ENTRY_SIZE) {
            let entry = OffsetIndexEntry {
                relative_offset: u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]),
                position: u32::from_be_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]),
            };
            let increasing = index.entries.last().is_none_or(|last| {
                entry.relative_offset > last.relative_offset && entry.position > last.position
            });
            if !increasing || entry.position == 0 || entry.position as u64 >= log_size {
                complete = false;
                break;
            }
            index.entries.push(entry);
        }
        (index, complete)
    }
}

#[derive(Clone, Debug, Default)]
pub struct TimeIndex {
    pub entries: Vec<TimeIndexEntry>,
}

impl TimeIndex {
    /// The relative offset from which a scan for the first timestamp ≥ `timestamp` must start: every batch before
    /// it has a smaller timestamp.
    pub fn scan_start(&self, timestamp: i64) -> u32 {
        let index = self.entries.partition_point(|entry| entry.timestamp < timestamp);
        match index {
            0 => 0,
            _ => self.entries[index - 1].relative_offset,
        }
    }

    pub fn push(&mut self, entry: TimeIndexEntry) {
        if let Some(last) = self.entries.last() {
            assert!(entry.timestamp > last.timestamp && entry.relative_offset > last.relative_offset);
        }
        self.entries.push(entry);
    }

    pub fn truncate_from_offset(&mut self, relative_offset: u32) {
        self.entries.retain(|entry| entry.relative_offset < relative_offset);
    }

    pub fn encode(&self, from_entry_index: usize) -> Vec<u8> {
        let mut bytes = Vec::with_capacity((self.entries.len() - from_entry_index) * TIME_INDEX_ENTRY_SIZE);
        for entry in &self.entries[from_entry_index..] {
            bytes.extend_from_slice(&entry.timestamp.to_be_bytes());
            bytes.extend_from_slice(&entry.relative_offset.to_be_bytes());
        }
        bytes
    }

    /// Parses entries while both fields stay strictly increasing and offsets stay below `relative_offset_end`.
    pub fn decode(bytes: &[u8], relative_offset_end: u32) -> TimeIndex {
        let mut index = TimeIndex::default();
        for chunk in bytes.chunks_exact(TIME_INDEX_ENTRY_SIZE) {
            let entry = TimeIndexEntry {
                timestamp: i64::from_be_bytes([
                    chunk[0], chunk[1], chunk[2], chunk[3], chunk[4], chunk[5], chunk[6], chunk[7],
                ]),
                relative_offset: u32::from_be_bytes([chunk[8], chunk[9], chunk[10], chunk[11]]),
            };
            let increasing = index.entries.last().is_none_or(|last| {
                entry.timestamp > last.timestamp && entry.relative_offset > last.relative_offset
            });
            if !increasing || entry.relative_offset == 0 || entry.relative_offset >= relative_offset_end {
                break;
            }
            index.entries.push(entry);
        }
        index
    }
}

pub(crate) fn relative(base_offset: Offset, offset: Offset) -> u32 {
    let delta = offset.0 - base_offset.0;
    assert!(
        (0..=u32::MAX as i64).contains(&delta),
        "offset {offset} is outside the segment at {base_offset}"
    );
    delta as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offset_index(pairs: &[(u32, u32)]) -> OffsetIndex {
        let mut index = OffsetIndex::default();
        for &(relative_offset, position) in pairs {
            index.push(OffsetIndexEntry { relative_offset, position });
        }
        index
    }

    #[test]
    fn offset_lookup_finds_the_last_entry_at_or_below() {
        let index = offset_index(&[(10, 4100), (25, 8300), (40, 12_500)]);
        let check = |target: u32, expected: (u32, u64)| {
            let (relative_offset, position) = index.lookup(target);
            assert_eq!((relative_offset, position.0), expected, "lookup({target})");
        };
        check(0, (0, 0));
        check(9, (0, 0));
        check(10, (10, 4100));
        check(24, (10, 4100));
        check(25, (25, 8300));
        check(1000, (40, 12_500));
    }

    #[test]
    fn offset_index_round_trips_and_rejects_garbage() {
        let index = offset_index(&[(3, 5000), (9, 9000)]);
        let bytes = index.encode(0);
        let (decoded, complete) = OffsetIndex::decode(&bytes, 10_000);
        assert!(complete);
        assert_eq!(decoded.entries, index.entries);
        // A position past the log's end is corrupt; decoding stops there.
        let (decoded, complete) = OffsetIndex::decode(&bytes, 8_000);
        assert!(!complete);
        assert_eq!(decoded.entries.len(), 1);
        // Zero-filled preallocated space ends the index.
        let mut padded = bytes.clone();
        padded.extend_from_slice(&[0; 16]);
        let (decoded, complete) = OffsetIndex::decode(&padded, 10_000);
        assert!(!complete);
        assert_eq!(decoded.entries.len(), 2);
        // A torn entry makes the file incomplete.
        let (_, complete) = OffsetIndex::decode(&bytes[..12], 10_000);
        assert!(!complete);
    }

    #[test]
    fn time_index_scan_start() {
        let mut index = TimeIndex::default();
        index.push(TimeIndexEntry { timestamp: 100, relative_offset: 5 });
        index.push(TimeIndexEntry { timestamp: 200, relative_offset: 9 });
        assert_eq!(index.scan_start(50), 0);
        assert_eq!(index.scan_start(100), 0);
        assert_eq!(index.scan_start(101), 5);
        assert_eq!(index.scan_start(250), 9);
        let decoded = TimeIndex::decode(&index.encode(0), 10);
        assert_eq!(decoded.entries, index.entries);
        assert_eq!(TimeIndex::decode(&index.encode(0), 9).entries.len(), 1);
    }
}
