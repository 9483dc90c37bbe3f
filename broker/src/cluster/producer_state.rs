//! Idempotent producer state of one partition: per producer id, its epoch and the last
//! [`BATCH_METADATA_MAX`] batches' sequence ranges and offsets. Owned by [`crate::cluster::partition::Partition`] (one
//! shard, no locking); pure logic with no I/O, so that the sequence rules are unit-tested here.
//!
//! The rules follow Kafka's `ProducerStateManager` (≥ 2.5):
//! - a batch whose epoch and exact sequence range match one of the last five is a **duplicate**: it is not
//!   written again and the client is answered with the offsets it was first given;
//! - an epoch older than the producer's current one is INVALID_PRODUCER_EPOCH;
//! - a newer epoch must start at sequence 0 (a reset), else OUT_OF_ORDER_SEQUENCE_NUMBER;
//! - in the same epoch the first sequence must follow the last one (`i32::MAX` is followed by 0), else
//!   OUT_OF_ORDER_SEQUENCE_NUMBER;
//! - a producer this partition does not know (never seen, or expired after `producer.id.expiration.ms`) may start
//!   only at sequence 0; any other sequence is UNKNOWN_PRODUCER_ID, on which clients reset their sequence.
//!
//! Batches with producer id -1 (non-idempotent) never reach this table.

use std::collections::{HashMap, VecDeque};

use crate::errors::{ErrorCode, ResponseError};

/// Batches remembered per producer: the most a client may have in flight (`max.in.flight` ≤ 5).
pub const BATCH_METADATA_MAX: usize = 5;

/// One batch as the table remembers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchMetadata {
    pub first_sequence: i32,
    pub last_sequence: i32,
    pub first_offset: i64,
    pub last_offset: i64,
}

/// The producer fields of one incoming batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerBatch {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub first_sequence: i32,
    /// Records in the batch (`lastOffsetDelta + 1`).
    pub record_count: i32,
}

impl ProducerBatch {
    /// The sequence of the batch's last record, wrapping after `i32::MAX` to 0 as Kafka does.
    pub fn last_sequence(&self) -> i32 {
        last_sequence(self.first_sequence, self.record_count)
    }
}

pub fn last_sequence(first_sequence: i32, record_count: i32) -> i32 {
    let last = i64::from(first_sequence) + i64::from(record_count.max(1)) - 1;
    (last % (i64::from(i32::MAX) + 1)) as i32
}

fn follows(last_sequence: i32, next_sequence: i32) -> bool {
    i64::from(next_sequence) == i64::from(last_sequence) + 1
        || (next_sequence == 0 && last_sequence == i32::MAX)
}

/// What to do with a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Write it.
    Append,
    /// Already written: answer with these offsets, write nothing.
    Duplicate(BatchMetadata),
}

#[derive(Clone, Debug)]
struct ProducerEntry {
    epoch: i16,
    batches: VecDeque<BatchMetadata>,
    /// When the producer last wrote (ms since the epoch), for expiration.
    last_write_ms: i64,
}

/// Every producer of one partition.
#[derive(Debug)]
pub struct ProducerStateTable {
    producers: HashMap<i64, ProducerEntry>,
    expiration_ms: i64,
}

impl ProducerStateTable {
    pub fn new(expiration_ms: i64) -> ProducerStateTable {
        ProducerStateTable { producers: HashMap::new(), expiration_ms }
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn expiration_ms(&self) -> i64 {
        self.expiration_ms
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    fn live(&self, producer_id: i64, now_ms: i64) -> Option<&ProducerEntry> {
        self.producers
            .get(&producer_id)
            .filter(|entry| now_ms.saturating_sub(entry.last_write_ms) < self.expiration_ms)
    }

    /// Checks `batch` against the producer's state without changing it.
    pub fn check(&self, batch: &ProducerBatch, now_ms: i64) -> Result<SequenceCheck, ErrorCode> {
        let last_sequence = batch.last_sequence();
        let Some(entry) = self.live(batch.producer_id, now_ms) else {
            return if batch.first_sequence == 0 {
                Ok(SequenceCheck::Append)
            } else {
                Err(ResponseError::UnknownProducerId.into())
            };
        };
        if batch.producer_epoch < entry.epoch {
            return Err(ResponseError::InvalidProducerEpoch.into());
        }
        if batch.producer_epoch > entry.epoch {
            return if batch.first_sequence == 0 {
                Ok(SequenceCheck::Append)
            } else {
                Err(ResponseError::OutOfOrderSequenceNumber.into())
            };
        }
        if let Some(duplicate) = entry.batches.iter().find(|known| {
            known.first_sequence == batch.first_sequence && known.last_sequence == last_sequence
        }) {
            return Ok(SequenceCheck::Duplicate(*duplicate));
        }
        match entry.batches.back() {
            Some(last) if follows(last.last_sequence, batch.first_sequence) => Ok(SequenceCheck::Append),
            // An epoch known only from a reset with nothing written yet cannot happen: entries are created by
            // writes. Be lenient like Kafka and accept a start at 0.
            None if batch.first_sequence == 0 => Ok(SequenceCheck::Append),
            _ => Err(ResponseError::OutOfOrderSequenceNumber.into()),
        }
    }

    /// Records a written batch (after [`Self::check`] said `Append`, or while rebuilding from the log).
    pub fn record(&mut self, batch: &ProducerBatch, first_offset: i64, last_offset: i64, now_ms: i64) {
        let metadata = BatchMetadata {
            first_sequence: batch.first_sequence,
            last_sequence: batch.last_sequence(),
            first_offset,
            last_offset,
        };
        let entry = self.producers.entry(batch.producer_id).or_insert_with(|| ProducerEntry {
            epoch: batch.producer_epoch,
            batches: VecDeque::with_capacity(BATCH_METADATA_MAX),
            last_write_ms: now_ms,
        });
        if entry.epoch != batch.producer_epoch {
            entry.epoch = batch.producer_epoch;
            entry.batches.clear();
        }
        if entry.batches.len() == BATCH_METADATA_MAX {
            entry.batches.pop_front();
        }
        entry.batches.push_back(metadata);
        entry.last_write_ms = entry.last_write_ms.max(now_ms);
    }

    /// Forgets producers that have not written for `producer.id.expiration.ms`; returns how many.
    pub fn expire(&mut self, now_ms: i64) -> usize {
        let before = self.producers.len();
        let expiration_ms = self.expiration_ms;
        self.producers.retain(|_, entry| now_ms.saturating_sub(entry.last_write_ms) < expiration_ms);
        before - self.producers.len()
    }
}

/// The snapshot file's first bytes; the version follows.
const SNAPSHOT_MAGIC: &[u8; 4] = b"SLPS";
const SNAPSHOT_VERSION: u8 = 1;

impl ProducerStateTable {
    /// The table as of log end `end_offset`, in a self-checking byte format (CRC-32C at the end): written at clean
    /// shutdown so that the next open scans only the batches after `end_offset` instead of the whole log.
    pub fn encode_snapshot(&self, end_offset: i64) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(17 + self.producers.len() * 64);
        bytes.extend_from_slice(SNAPSHOT_MAGIC);
        bytes.push(SNAPSHOT_VERSION);
        bytes.extend_from_slice(&end_offset.to_be_bytes());
        bytes.extend_from_slice(&(self.producers.len() as u32).to_be_bytes());
        for (producer_id, entry) in &self.producers {
            bytes.extend_from_slice(&producer_id.to_be_bytes());
            bytes.extend_from_slice(&entry.epoch.to_be_bytes());
            bytes.extend_from_slice(&entry.last_write_ms.to_be_bytes());
            bytes.push(entry.batches.len() as u8);
            for batch in &entry.batches {
                bytes.extend_from_slice(&batch.first_sequence.to_be_bytes());
                bytes.extend_from_slice(&batch.last_sequence.to_be_bytes());
                bytes.extend_from_slice(&batch.first_offset.to_be_bytes());
                bytes.extend_from_slice(&batch.last_offset.to_be_bytes());
            }
        }
        let crc = crc32c::crc32c(&bytes);
        bytes.extend_from_slice(&crc.to_be_bytes());
        bytes
    }

    /// Loads a snapshot written by [`Self::encode_snapshot`]; returns its end offset, or `None` (and leaves the
    /// table as it was) when the bytes are damaged or of another version.
    pub fn load_snapshot(&mut self, bytes: &[u8]) -> Option<i64> {
        let (body, crc) = bytes.split_at_checked(bytes.len().checked_sub(4)?)?;
        if crc32c::crc32c(body) != u32::from_be_bytes(crc.try_into().ok()?) {
            return None;
        }
        let mut reader = SnapshotReader { bytes: body };
        if reader.take(4)? != SNAPSHOT_MAGIC || reader.take(1)?[0] != SNAPSHOT_VERSION {
            return None;
        }
        let end_offset = reader.i64()?;
        let count = reader.u32()? as usize;
        let mut producers = HashMap::with_capacity(count.min(body.len() / 19));
        for _ in 0..count {
            let producer_id = reader.i64()?;
            let epoch = i16::from_be_bytes(reader.take(2)?.try_into().ok()?);
            let last_write_ms = reader.i64()?;
            let batch_count = reader.take(1)?[0] as usize;
            if batch_count > BATCH_METADATA_MAX {
                return None;
            }
            let mut batches = VecDeque::with_capacity(BATCH_METADATA_MAX);
            for _ in 0..batch_count {
                batches.push_back(BatchMetadata {
                    first_sequence: reader.i32()?,
                    last_sequence: reader.i32()?,
                    first_offset: reader.i64()?,
                    last_offset: reader.i64()?,
                });
            }
            producers.insert(producer_id, ProducerEntry { epoch, batches, last_write_ms });
        }
        if !reader.bytes.is_empty() {
            return None;
        }
        self.producers = producers;
        Some(end_offset)
    }
}

struct SnapshotReader<'a> {
    bytes: &'a [u8],
}

impl<'a> SnapshotReader<'a> {
    fn take(&mut self, count: usize) -> Option<&'a [u8]> {
        let (taken, rest) = self.bytes.split_at_checked(count)?;
        self.bytes = rest;
        Some(taken)
    }

    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }

    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY_MS: i64 = 86_400_000;

    fn batch(epoch: i16, first_sequence: i32, record_count: i32) -> ProducerBatch {
        ProducerBatch { producer_id: 7, producer_epoch: epoch, first_sequence, record_count }
    }

    /// Checks and, if accepted, records at `*offset`; returns the outcome.
    fn append(
        table: &mut ProducerStateTable,
        batch: ProducerBatch,
        offset: &mut i64,
    ) -> Result<SequenceCheck, ErrorCode> {
        let outcome = table.check(&batch, 0)?;
        if outcome == SequenceCheck::Append {
            let last = *offset + i64::from(batch.record_count) - 1;
            table.record(&batch, *offset, last, 0);
            *offset = last + 1;
        }
        Ok(outcome)
    }

    #[test]
    fn in_order_batches_are_appended_and_retries_are_duplicates() {
        let mut table = ProducerStateTable::new(DAY_MS);
        let mut offset = 100;
        assert_eq!(append(&mut table, batch(0, 0, 10), &mut offset), Ok(SequenceCheck::Append));
        assert_eq!(append(&mut table, batch(0, 10, 5), &mut offset), Ok(SequenceCheck::Append));
        assert_eq!(offset, 115);
        let expected =
            BatchMetadata { first_sequence: 0, last_sequence: 9, first_offset: 100, last_offset: 109 };
        assert_eq!(append(&mut table, batch(0, 0, 10), &mut offset), Ok(SequenceCheck::Duplicate(expected)));
        assert_eq!(offset, 115, "a duplicate is not written");
        // A range that overlaps but does not match a remembered batch is out of order.
        assert_eq!(
            append(&mut table, batch(0, 5, 10), &mut offset),
            Err(ResponseError::OutOfOrderSequenceNumber.into())
        );
    }

    #[test]
    fn only_the_last_five_batches_are_remembered() {
        let mut table = ProducerStateTable::new(DAY_MS);
        let mut offset = 0;
        for sequence in 0..6 {
            assert_eq!(append(&mut table, batch(0, sequence, 1), &mut offset), Ok(SequenceCheck::Append));
        }
        assert!(matches!(append(&mut table, batch(0, 1, 1), &mut offset), Ok(SequenceCheck::Duplicate(_))));
        assert_eq!(
            append(&mut table, batch(0, 0, 1), &mut offset),
            Err(ResponseError::OutOfOrderSequenceNumber.into())
        );
    }

    #[test]
    fn a_gap_is_out_of_order() {
        let mut table = ProducerStateTable::new(DAY_MS);
        let mut offset = 0;
        append(&mut table, batch(0, 0, 10), &mut offset).unwrap();
        assert_eq!(
            append(&mut table, batch(0, 11, 1), &mut offset),
            Err(ResponseError::OutOfOrderSequenceNumber.into())
        );
        assert_eq!(offset, 10);
    }

    #[test]
    fn epochs_fence_and_reset() {
        let mut table = ProducerStateTable::new(DAY_MS);
        let mut offset = 0;
        append(&mut table, batch(3, 0, 10), &mut offset).unwrap();
        assert_eq!(
            append(&mut table, batch(2, 10, 1), &mut offset),
            Err(ResponseError::InvalidProducerEpoch.into())
        );
        assert_eq!(
            append(&mut table, batch(4, 10, 1), &mut offset),
            Err(ResponseError::OutOfOrderSequenceNumber.into())
        );
        assert_eq!(append(&mut table, batch(4, 0, 1), &mut offset), Ok(SequenceCheck::Append));
        assert_eq!(
            append(&mut table, batch(3, 10, 1), &mut offset),
            Err(ResponseError::InvalidProducerEpoch.into())
        );
        assert_eq!(append(&mut table, batch(4, 1, 1), &mut offset), Ok(SequenceCheck::Append));
    }

    #[test]
    fn unknown_producers_start_at_zero() {
        let mut table = ProducerStateTable::new(DAY_MS);
        let mut offset = 0;
        assert_eq!(
            append(&mut table, batch(0, 5, 1), &mut offset),
            Err(ResponseError::UnknownProducerId.into())
        );
        assert_eq!(append(&mut table, batch(0, 0, 1), &mut offset), Ok(SequenceCheck::Append));
    }

    #[test]
    fn expired_producers_are_unknown() {
        let mut table = ProducerStateTable::new(1000);
        table.record(&batch(0, 0, 10), 0, 9, 0);
        assert_eq!(table.check(&batch(0, 10, 1), 999), Ok(SequenceCheck::Append));
        assert_eq!(table.check(&batch(0, 10, 1), 1000), Err(ResponseError::UnknownProducerId.into()));
        assert_eq!(table.expire(1000), 1);
        assert!(table.is_empty());
    }

    #[test]
    fn sequences_wrap_after_i32_max() {
        assert_eq!(last_sequence(i32::MAX, 1), i32::MAX);
        assert_eq!(last_sequence(i32::MAX, 2), 0);
        assert_eq!(last_sequence(i32::MAX - 1, 5), 2);
        let mut table = ProducerStateTable::new(DAY_MS);
        table.record(&batch(0, i32::MAX - 9, 10), 0, 9, 0);
        let mut offset = 10;
        assert_eq!(append(&mut table, batch(0, 0, 3), &mut offset), Ok(SequenceCheck::Append));
        // A batch straddling the wrap.
        table.record(&batch(1, i32::MAX - 1, 4), 20, 23, 0);
        assert_eq!(table.check(&batch(1, 2, 1), 0), Ok(SequenceCheck::Append));
        assert!(matches!(table.check(&batch(1, i32::MAX - 1, 4), 0), Ok(SequenceCheck::Duplicate(_))));
    }

    #[test]
    fn snapshots_round_trip_and_damaged_ones_are_refused() {
        let mut table = ProducerStateTable::new(60_000);
        for index in 0..7 {
            let batch = ProducerBatch {
                producer_id: 9,
                producer_epoch: 2,
                first_sequence: index * 3,
                record_count: 3,
            };
            table.record(&batch, 100 + i64::from(index) * 3, 102 + i64::from(index) * 3, 1_000);
        }
        let other = ProducerBatch { producer_id: 4, producer_epoch: 0, first_sequence: 0, record_count: 1 };
        table.record(&other, 500, 500, 2_000);
        let bytes = table.encode_snapshot(501);
        let mut loaded = ProducerStateTable::new(60_000);
        assert_eq!(loaded.load_snapshot(&bytes), Some(501));
        assert_eq!(loaded.len(), 2);
        // The retry of the last batch is still recognised after the round trip.
        let retry = ProducerBatch { producer_id: 9, producer_epoch: 2, first_sequence: 18, record_count: 3 };
        assert_eq!(loaded.check(&retry, 1_500), table.check(&retry, 1_500));
        assert!(matches!(loaded.check(&retry, 1_500), Ok(SequenceCheck::Duplicate(_))));
        for damaged in [&bytes[..bytes.len() - 1], &bytes[1..]] {
            let mut fresh = ProducerStateTable::new(60_000);
            assert_eq!(fresh.load_snapshot(damaged), None);
            assert!(fresh.is_empty());
        }
        let mut flipped = bytes.clone();
        flipped[20] ^= 1;
        assert_eq!(ProducerStateTable::new(1).load_snapshot(&flipped), None);
    }
}
