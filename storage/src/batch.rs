//! Kafka record batch v2 headers: parsing through `zerocopy` big-endian types, validation, CRC-32C, and the
//! in-place stamping of the fields that sit before the CRC'd range.

use bytes::{Bytes, BytesMut};
use zerocopy::byteorder::big_endian::{I16, I32, I64, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::invariant::Invariant;
use crate::types::Offset;

/// The 61-byte header of a v2 record batch, exactly as it sits on the wire and on disk.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub struct BatchHeader {
    pub base_offset: I64,
    /// Bytes after this field: the whole batch is `batch_length + 12` bytes.
    pub batch_length: I32,
    pub partition_leader_epoch: I32,
    pub magic: i8,
    pub crc: U32,
    pub attributes: I16,
    pub last_offset_delta: I32,
    pub base_timestamp: I64,
    pub max_timestamp: I64,
    pub producer_id: I64,
    pub producer_epoch: I16,
    pub base_sequence: I32,
    pub record_count: I32,
}

pub const BATCH_HEADER_SIZE: usize = 61;
const _: () = assert!(size_of::<BatchHeader>() == BATCH_HEADER_SIZE);

/// Bytes before `batch_length`'s count starts: baseOffset (8) + batchLength (4).
pub const BATCH_LENGTH_OVERHEAD: usize = 12;
/// The CRC covers everything from `attributes` to the end of the batch.
pub(crate) const CRC_RANGE_START: usize = 21;
const MAGIC_V2: i8 = 2;
const ATTRIBUTE_TIMESTAMP_LOG_APPEND: i16 = 1 << 3;
/// A control batch carries transaction markers, not application records.
const ATTRIBUTE_CONTROL: i16 = 1 << 5;

/// Why a batch was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchError {
    /// Fewer bytes than a header, or than the header's length says.
    Truncated {
        needed: usize,
        available: usize,
    },
    BadLength {
        batch_length: i32,
    },
    BadMagic {
        magic: i8,
    },
    BadRecordCount {
        record_count: i32,
        last_offset_delta: i32,
    },
    BadCrc {
        stored: u32,
        computed: u32,
    },
    Empty,
}

impl std::fmt::Display for BatchError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BatchError::Truncated { needed, available } => {
                write!(formatter, "batch truncated: needs {needed} bytes, {available} available")
            }
            BatchError::BadLength { batch_length } => {
                write!(formatter, "batch length {batch_length} is below the 49-byte minimum")
            }
            BatchError::BadMagic { magic } => {
                write!(formatter, "batch magic {magic}, only magic 2 is accepted")
            }
            BatchError::BadRecordCount { record_count, last_offset_delta } => write!(
                formatter,
                "batch record count {record_count} with last offset delta {last_offset_delta} is inconsistent"
            ),
            BatchError::BadCrc { stored, computed } => {
                write!(formatter, "batch CRC-32C mismatch: stored {stored:#010x}, computed {computed:#010x}")
            }
            BatchError::Empty => write!(formatter, "no batches in the record set"),
        }
    }
}

impl std::error::Error for BatchError {}

impl BatchHeader {
    pub fn parse(bytes: &[u8]) -> Result<&BatchHeader, BatchError> {
        BatchHeader::ref_from_prefix(bytes)
            .map(|(header, _)| header)
            .map_err(|_| BatchError::Truncated { needed: BATCH_HEADER_SIZE, available: bytes.len() })
    }

    /// Total bytes of the batch, header included.
    pub fn total_size(&self) -> usize {
        self.batch_length.get().max(0) as usize + BATCH_LENGTH_OVERHEAD
    }

    pub fn base_offset(&self) -> Offset {
        Offset(self.base_offset.get())
    }

    pub fn last_offset(&self) -> Offset {
        Offset(self.base_offset.get() + self.last_offset_delta.get() as i64)
    }

    pub fn is_log_append_time(&self) -> bool {
        self.attributes.get() & ATTRIBUTE_TIMESTAMP_LOG_APPEND != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes.get() & ATTRIBUTE_CONTROL != 0
    }

    /// The codec's number, attributes bits 0–2 (`records::Compression` names them).
    pub fn compression(&self) -> i16 {
        self.attributes.get() & 0x7
    }

    /// Checks every field that can be checked without the payload.
    fn check_fields(&self, available: usize) -> Result<(), BatchError> {
        let batch_length = self.batch_length.get();
        if (batch_length as i64) < (BATCH_HEADER_SIZE - BATCH_LENGTH_OVERHEAD) as i64 {
            return Err(BatchError::BadLength { batch_length });
        }
        if self.magic != MAGIC_V2 {
            return Err(BatchError::BadMagic { magic: self.magic });
        }
        let needed = self.total_size();
        if needed > available {
            return Err(BatchError::Truncated { needed, available });
        }
        let record_count = self.record_count.get();
        let last_offset_delta = self.last_offset_delta.get();
        // Compaction may leave fewer records than the delta spans, never more.
        if record_count < 1 || last_offset_delta < 0 || last_offset_delta < record_count - 1 {
            return Err(BatchError::BadRecordCount { record_count, last_offset_delta });
        }
        Ok(())
    }
}

/// Validates the header of the batch at the start of `bytes`, not its CRC-32C, and returns its total size: for
/// readers that chose not to pay for the CRC.
pub fn validate_batch_header(bytes: &[u8]) -> Result<(&BatchHeader, usize), BatchError> {
    let header = BatchHeader::parse(bytes)?;
    header.check_fields(bytes.len())?;
    Ok((header, header.total_size()))
}

/// Validates the batch at the start of `bytes` (header fields and CRC-32C) and returns its total size.
pub fn validate_batch(bytes: &[u8]) -> Result<(&BatchHeader, usize), BatchError> {
    let (header, size) = validate_batch_header(bytes)?;
    let computed = crc32c::crc32c(&bytes[CRC_RANGE_START..size]);
    let stored = header.crc.get();
    if computed != stored {
        return Err(BatchError::BadCrc { stored, computed });
    }
    Ok((header, size))
}

/// A validated summary of one batch in a record set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchSummary {
    /// Byte position of the batch inside the record set.
    pub position: usize,
    pub size: usize,
    pub offset_count: i64,
    pub record_count: i32,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
}

/// Validates every batch of a record set (one or more batches back to back) without changing anything. A
/// producer's batch must also number its records densely (`lastOffsetDelta == recordCount - 1`, as Kafka's
/// validator requires); only compaction may leave gaps, and only in batches already in a log.
pub fn validate_record_set(bytes: &[u8]) -> Result<Vec<BatchSummary>, BatchError> {
    let mut summaries = Vec::new();
    let mut position = 0;
    while position < bytes.len() {
        let (header, size) = validate_batch(&bytes[position..])?;
        if header.last_offset_delta.get() != header.record_count.get() - 1 {
            return Err(BatchError::BadRecordCount {
                record_count: header.record_count.get(),
                last_offset_delta: header.last_offset_delta.get(),
            });
        }
        summaries.push(BatchSummary {
            position,
            size,
            offset_count: header.last_offset_delta.get() as i64 + 1,
            record_count: header.record_count.get(),
            max_timestamp: header.max_timestamp.get(),
            producer_id: header.producer_id.get(),
            producer_epoch: header.producer_epoch.get(),
            base_sequence: header.base_sequence.get(),
        });
        position += size;
    }
    if summaries.is_empty() {
        return Err(BatchError::Empty);
    }
    Ok(summaries)
}

/// Writes baseOffset and partitionLeaderEpoch into a batch in place. Both sit before the CRC'd range, so the CRC
/// stays valid.
pub fn stamp_batch(batch: &mut [u8], base_offset: Offset, leader_epoch: i32) {
    let (header, _) = BatchHeader::mut_from_prefix(batch).invariant("stamp_batch on a validated batch");
    header.base_offset.set(base_offset.0);
    header.partition_leader_epoch.set(leader_epoch);
}

/// Switches a batch to LogAppendTime: sets the attribute bit and maxTimestamp, then recomputes the CRC, which
/// covers both.
pub fn stamp_log_append_time(batch: &mut [u8], append_time_ms: i64) {
    let size = {
        let (header, _) = BatchHeader::mut_from_prefix(batch).invariant("stamp on a validated batch");
        header.attributes.set(header.attributes.get() | ATTRIBUTE_TIMESTAMP_LOG_APPEND);
        header.max_timestamp.set(append_time_ms);
        header.total_size()
    };
    let crc = crc32c::crc32c(&batch[CRC_RANGE_START..size]);
    let (header, _) = BatchHeader::mut_from_prefix(batch).invariant("stamp on a validated batch");
    header.crc.set(crc);
}

/// Gets a uniquely owned, mutable view of `bytes` without copying when the caller held the only reference.
pub(crate) fn into_mut(bytes: Bytes) -> BytesMut {
    match bytes.try_into_mut() {
        Ok(unique) => unique,
        Err(shared) => BytesMut::from(&shared[..]),
    }
}

/// Iterates the whole batches at the front of a buffer without checking CRCs (for data the log already
/// validated, or that its reader validates next), and stops at a partial one: a Fetch response may end inside a
/// batch. A length below the header's yields a short slice, which the header's check refuses.
pub fn complete_batches(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = bytes;
    // Bounded: every pass takes at least `BATCH_LENGTH_OVERHEAD` bytes, or stops.
    std::iter::from_fn(move || {
        let header = BatchHeader::parse(rest).ok()?;
        let (batch, after) = rest.split_at_checked(header.total_size())?;
        rest = after;
        Some(batch)
    })
}

/// [`complete_batches`] as `Bytes` that share `bytes`' buffer.
pub fn split_batches(bytes: &Bytes) -> impl Iterator<Item = Bytes> + '_ {
    complete_batches(bytes).map(|batch| bytes.slice_ref(batch))
}

#[cfg(test)]
mod tests {
    use super::testing::make_batch;
    use super::*;

    #[test]
    fn valid_batch_passes_and_reports_its_fields() {
        let batch = make_batch(3, 10, 1_000);
        let (header, size) = validate_batch(&batch).unwrap();
        assert_eq!(size, batch.len());
        assert_eq!(header.record_count.get(), 3);
        assert_eq!(header.last_offset_delta.get(), 2);
        assert_eq!(header.max_timestamp.get(), 1_000);
    }

    #[test]
    fn every_kind_of_damage_is_a_typed_error() {
        let good = make_batch(2, 5, 7);
        let check = |mutate: &dyn Fn(&mut Vec<u8>), expected: &dyn Fn(&BatchError) -> bool| {
            let mut bytes = good.to_vec();
            mutate(&mut bytes);
            let error = validate_batch(&bytes).unwrap_err();
            assert!(expected(&error), "unexpected error {error:?}");
        };
        check(&|bytes| bytes.truncate(30), &|error| matches!(error, BatchError::Truncated { .. }));
        check(&|bytes| bytes.truncate(bytes.len() - 1), &|error| {
            matches!(error, BatchError::Truncated { .. })
        });
        check(&|bytes| bytes[16] = 1, &|error| matches!(error, BatchError::BadMagic { magic: 1 }));
        check(&|bytes| bytes[8..12].copy_from_slice(&10i32.to_be_bytes()), &|error| {
            matches!(error, BatchError::BadLength { batch_length: 10 })
        });
        check(&|bytes| bytes[57..61].copy_from_slice(&0i32.to_be_bytes()), &|error| {
            matches!(error, BatchError::BadRecordCount { .. })
        });
        check(&|bytes| *bytes.last_mut().unwrap() ^= 1, &|error| matches!(error, BatchError::BadCrc { .. }));
        assert_eq!(validate_record_set(&[]), Err(BatchError::Empty));
    }

    #[test]
    fn stamping_keeps_the_crc_valid() {
        let mut batch = make_batch(4, 3, 9).to_vec();
        stamp_batch(&mut batch, Offset(1234), 7);
        let (header, _) = validate_batch(&batch).unwrap();
        assert_eq!(header.base_offset(), Offset(1234));
        assert_eq!(header.last_offset(), Offset(1237));
        assert_eq!(header.partition_leader_epoch.get(), 7);
        stamp_log_append_time(&mut batch, 55);
        let (header, _) = validate_batch(&batch).unwrap();
        assert!(header.is_log_append_time());
        assert_eq!(header.max_timestamp.get(), 55);
    }

    #[test]
    fn record_sets_split_into_their_batches() {
        let mut joined = make_batch(1, 1, 1).to_vec();
        joined.extend_from_slice(&make_batch(2, 2, 2));
        let summaries = validate_record_set(&joined).unwrap();
        assert_eq!(summaries.len(), 2);
        assert_eq!(summaries[1].position, summaries[0].size);
        assert_eq!(summaries[1].offset_count, 2);
        let partial = &joined[..joined.len() - 1];
        assert_eq!(complete_batches(partial).count(), 1);
        assert_eq!(complete_batches(&joined[..BATCH_HEADER_SIZE - 1]).count(), 0);
        let joined = Bytes::from(joined);
        assert_eq!(split_batches(&joined).count(), 2);
    }

    #[test]
    fn known_crc32c_vector() {
        // Pins the crate to the Castagnoli polynomial: CRC-32C("123456789") = 0xE3069283.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
    }
}

/// Builders of valid batches for tests and benchmarks of this crate and the ones above it.
#[doc(hidden)]
pub mod testing {
    use super::*;
    use crate::records::{BatchBuilder, Compression};

    /// Builds a valid uncompressed batch holding `record_count` records with `value_size`-byte values.
    pub fn make_batch(record_count: i32, value_size: usize, timestamp: i64) -> Bytes {
        let mut builder = BatchBuilder::new(Compression::None, record_count as usize * (value_size + 8));
        let mut value = vec![0u8; value_size];
        for index in 0..record_count {
            value.fill((index % 251) as u8);
            builder.append(timestamp, None, Some(&[&value]));
        }
        builder.finish(0).invariant("an uncompressed batch seals")
    }
}
