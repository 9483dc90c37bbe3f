//! Vocabulary types shared by the whole log. A Kafka offset and a byte position in a file are different things,
//! so they are different types.

use std::fmt;

/// A Kafka record offset: the index of a record in its partition, starting at 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Offset(pub i64);

impl Offset {
    pub fn next(self) -> Offset {
        Offset(self.0 + 1)
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(formatter)
    }
}

/// A byte position inside one segment file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FilePosition(pub u64);

impl fmt::Display for FilePosition {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(formatter)
    }
}

/// Direct I/O unit: every write starts at a multiple of this and has a length that is a multiple of it.
/// 4 KiB is the physical block size of this machine's virtio disk and the common ext4/xfs block size.
pub const BLOCK_SIZE: usize = 4096;

pub(crate) fn align_down(value: u64) -> u64 {
    value & !(BLOCK_SIZE as u64 - 1)
}

pub(crate) fn align_up(value: u64) -> u64 {
    align_down(value + BLOCK_SIZE as u64 - 1)
}

/// Milliseconds since the Unix epoch, as Kafka timestamps are.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as i64)
        .unwrap_or(0)
}
