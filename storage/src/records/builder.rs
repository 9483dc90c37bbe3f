//! Building v2 batches: the load generator's producers, on their hot path, and the group coordinator, for its
//! records in `__consumer_offsets`.
//!
//! The builder appends records straight into the buffer that becomes the batch (or, when compressing, into a
//! scratch buffer that is compressed once at the end), fills the 61-byte header last and computes the CRC-32C
//! over `attributes..end`. A record's value may arrive in parts (a send timestamp, then a shared payload) that are
//! written one after the other, never joined first.

use bytes::{BufMut, Bytes, BytesMut};
use zerocopy::FromBytes;

use super::compression::{compress_into, Compression};
use super::varint::{put_varint, put_varlong, varint_size, varlong_size, VARINT_SIZE_MAX, VARLONG_SIZE_MAX};
use super::RecordError;
use crate::batch::{validate_batch, BatchHeader, BATCH_HEADER_SIZE, BATCH_LENGTH_OVERHEAD, CRC_RANGE_START};
use crate::invariant::Invariant;

/// Producers outside a leader's knowledge send -1; the log stamps the real epoch on append.
const PARTITION_LEADER_EPOCH_UNKNOWN: i32 = -1;
/// Not an idempotent producer: no producer id, epoch or sequence.
const PRODUCER_ID_NONE: i64 = -1;
const PRODUCER_EPOCH_NONE: i16 = -1;
const BASE_SEQUENCE_NONE: i32 = -1;
const MAGIC_V2: i8 = 2;

/// The most bytes a record written here takes besides its key and value: a length (5), attributes (1), a
/// timestamp delta (10), an offset delta and two field lengths (5 each) and a header count (1). Callers that
/// must keep a batch under a size add it to each record's key and value.
pub const RECORD_FRAMING_SIZE_MAX: usize = VARINT_SIZE_MAX + 1 + VARLONG_SIZE_MAX + 3 * VARINT_SIZE_MAX + 1;

/// Accumulates records for one partition and seals them into a v2 batch.
pub struct BatchBuilder {
    compression: Compression,
    /// Header placeholder followed by uncompressed records (no compression), or only the header (compression on).
    buffer: BytesMut,
    /// Uncompressed records when compressing; empty otherwise.
    records: Vec<u8>,
    record_count: u32,
    base_timestamp_ms: i64,
    max_timestamp_ms: i64,
}

impl BatchBuilder {
    /// A builder with room for `capacity` bytes of records before its buffer grows.
    pub fn new(compression: Compression, capacity: usize) -> BatchBuilder {
        let mut builder = BatchBuilder {
            compression,
            buffer: BytesMut::new(),
            records: Vec::new(),
            record_count: 0,
            base_timestamp_ms: 0,
            max_timestamp_ms: 0,
        };
        builder.reset(capacity);
        builder
    }

    fn reset(&mut self, capacity: usize) {
        assert!(self.buffer.is_empty());
        self.buffer.reserve(capacity + BATCH_HEADER_SIZE);
        self.buffer.put_bytes(0, BATCH_HEADER_SIZE);
        self.records.clear();
        self.record_count = 0;
    }

    pub fn is_empty(&self) -> bool {
        self.record_count == 0
    }

    pub fn record_count(&self) -> u32 {
        self.record_count
    }

    /// Uncompressed size of the records so far plus the header: what `batch.size` is compared with.
    pub fn size(&self) -> usize {
        self.buffer.len() + self.records.len()
    }

    /// Appends one record with CreateTime `timestamp_ms`. A null `value` is a tombstone; otherwise the value is
    /// the concatenation of its parts.
    #[inline]
    pub fn append(&mut self, timestamp_ms: i64, key: Option<&[u8]>, value: Option<&[&[u8]]>) {
        assert!(self.record_count < i32::MAX as u32, "a batch's record count is an i32");
        if self.record_count == 0 {
            self.base_timestamp_ms = timestamp_ms;
            self.max_timestamp_ms = timestamp_ms;
        }
        self.max_timestamp_ms = self.max_timestamp_ms.max(timestamp_ms);
        let value_size = value.map(|parts| parts.iter().map(|part| part.len()).sum::<usize>());
        let record = RecordFields {
            timestamp_delta: timestamp_ms - self.base_timestamp_ms,
            offset_delta: self.record_count as i32,
            key,
            key_length: field_length(key.map(<[u8]>::len)),
            value,
            value_length: field_length(value_size),
        };
        if self.compression == Compression::None {
            put_record(&mut self.buffer, &record);
        } else {
            put_record(&mut self.records, &record);
        }
        self.record_count += 1;
    }

    /// Seals the batch and starts an empty one with room for `next_capacity` bytes. Compression failure is an
    /// operating error (an encoder could run out of memory); the records are lost with it.
    pub fn finish(&mut self, next_capacity: usize) -> Result<Bytes, RecordError> {
        let batch = self.seal();
        // After a failed compression the buffer still holds the header placeholder and part of the output.
        self.buffer.clear();
        self.reset(next_capacity);
        batch
    }

    fn seal(&mut self) -> Result<Bytes, RecordError> {
        assert!(self.record_count > 0, "an empty batch is never sent");
        if self.compression != Compression::None {
            compress_into(self.compression, &self.records, &mut self.buffer)?;
        }
        let mut batch = self.buffer.split();
        let batch_length = i32::try_from(batch.len() - BATCH_LENGTH_OVERHEAD)
            .map_err(|_| RecordError(format!("batch of {} bytes exceeds an i32 length", batch.len())))?;
        {
            let (header, _) = BatchHeader::mut_from_prefix(&mut batch[..])
                .invariant("the buffer starts with the header's placeholder");
            header.base_offset.set(0); // the log assigns it
            header.batch_length.set(batch_length);
            header.partition_leader_epoch.set(PARTITION_LEADER_EPOCH_UNKNOWN);
            header.magic = MAGIC_V2;
            header.attributes.set(self.compression.attribute_bits());
            header.last_offset_delta.set(self.record_count as i32 - 1);
            header.base_timestamp.set(self.base_timestamp_ms);
            header.max_timestamp.set(self.max_timestamp_ms);
            header.producer_id.set(PRODUCER_ID_NONE);
            header.producer_epoch.set(PRODUCER_EPOCH_NONE);
            header.base_sequence.set(BASE_SEQUENCE_NONE);
            header.record_count.set(self.record_count as i32);
        }
        let crc = crc32c::crc32c(&batch[CRC_RANGE_START..]);
        BatchHeader::mut_from_prefix(&mut batch[..]).invariant("the header was just written").0.crc.set(crc);
        assert!(BatchHeader::parse(&batch).is_ok_and(|header| header.total_size() == batch.len()));
        debug_assert!(validate_batch(&batch).is_ok());
        Ok(batch.freeze())
    }
}

/// A key's or value's length field: its size, or -1 for null.
#[inline]
fn field_length(size: Option<usize>) -> i32 {
    match size {
        // A batch is bounded by an i32 length, so no field of one can be longer.
        Some(size) => i32::try_from(size).invariant("a record field is shorter than its batch's i32 length"),
        None => -1,
    }
}

struct RecordFields<'a> {
    timestamp_delta: i64,
    offset_delta: i32,
    key: Option<&'a [u8]>,
    key_length: i32,
    value: Option<&'a [&'a [u8]]>,
    value_length: i32,
}

impl RecordFields<'_> {
    /// Bytes after the record's own length: attributes, deltas, key, value and the header count.
    #[inline]
    fn body_size(&self) -> usize {
        1 + varlong_size(self.timestamp_delta)
            + varint_size(self.offset_delta)
            + varint_size(self.key_length)
            + self.key_length.max(0) as usize
            + varint_size(self.value_length)
            + self.value_length.max(0) as usize
            + varint_size(0)
    }
}

/// Generic over the target so that each `put_u8` is inlined: this runs once per message.
#[inline]
fn put_record<B: BufMut>(target: &mut B, record: &RecordFields<'_>) {
    let body_size = record.body_size();
    put_varint(target, i32::try_from(body_size).invariant("a record is shorter than its batch's i32 length"));
    target.put_u8(0); // attributes: none are defined for records
    put_varlong(target, record.timestamp_delta);
    put_varint(target, record.offset_delta);
    put_varint(target, record.key_length);
    if let Some(key) = record.key {
        target.put_slice(key);
    }
    put_varint(target, record.value_length);
    for part in record.value.unwrap_or_default() {
        target.put_slice(part);
    }
    put_varint(target, 0); // no headers
}

/// A record's key and value (either may be null).
pub type KeyValue<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

/// An uncompressed v2 batch of `records` (key, value), CreateTime `timestamp_ms`, no producer id, base offset 0
/// (the log stamps the real one), CRC-32C set. The group coordinator writes its own records with it.
pub fn encode_batch(records: &[KeyValue<'_>], timestamp_ms: i64) -> Bytes {
    assert!(!records.is_empty(), "a batch holds at least one record");
    let capacity = records
        .iter()
        .map(|(key, value)| {
            RECORD_FRAMING_SIZE_MAX + key.map_or(0, <[u8]>::len) + value.map_or(0, <[u8]>::len)
        })
        .sum();
    let mut builder = BatchBuilder::new(Compression::None, capacity);
    for (key, value) in records {
        builder.append(timestamp_ms, *key, value.as_ref().map(std::slice::from_ref));
    }
    match builder.seal() {
        Ok(batch) => batch,
        // Only compression can fail, and this batch is not compressed.
        Err(error) => unreachable!("an uncompressed batch failed to seal: {error}"),
    }
}
