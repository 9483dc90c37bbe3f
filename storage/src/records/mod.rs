//! Records inside v2 batches, for the few readers that look past the 61-byte header (`crate::batch`) and the
//! writers that build whole batches. One implementation serves the broker (ListOffsets by timestamp, keyless
//! records of compacted topics, the group coordinator's `__consumer_offsets`) and the load generator (its
//! producers' batches and its consumers' reading of fetched records).
//!
//! - [`for_each_record`] walks a batch's records, borrowing keys and values from the batch or from its inflated
//!   payload; [`find_record_at_or_after`], [`find_max_timestamp_record`] and [`keyless_records`] are built on it.
//! - [`BatchBuilder`] and [`encode_batch`] write batches, compressed or not.
//! - `compression`: the codecs, and inflation bounded by [`INFLATED_SIZE_MAX`].
//! - `varint`: Kafka's varints and varlongs.
//! - [`message_set`]: message formats v0 and v1 (Produce v0–2, Fetch v0–3), converted to and from v2 batches.
//!
//! Batches on the broker's produce and fetch paths are never parsed beyond their headers.

mod builder;
mod compression;
pub mod message_set;
mod varint;

pub use builder::{encode_batch, BatchBuilder, KeyValue, RECORD_FRAMING_SIZE_MAX};
pub use compression::{inflate, Compression, INFLATED_SIZE_MAX};
pub use varint::{
    get_varint, get_varint_unsigned, get_varlong, put_varint, put_varint_unsigned, put_varlong, varint_size,
    varint_unsigned_size, varlong_size, zigzag_decode, zigzag_encode, VARINT_SIZE_MAX, VARLONG_SIZE_MAX,
};

use crate::batch::{BatchError, BatchHeader, BATCH_HEADER_SIZE};

/// Why the records of a batch could not be read or written: a malformed record or varint, an unknown codec, a
/// payload that does not inflate or inflates too far. The message carries the numbers involved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordError(pub String);

impl RecordError {
    #[cold]
    fn new(message: &str) -> RecordError {
        RecordError(message.to_owned())
    }
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.0)
    }
}

impl std::error::Error for RecordError {}

impl From<BatchError> for RecordError {
    fn from(error: BatchError) -> RecordError {
        RecordError(error.to_string())
    }
}

/// An offset and its record's timestamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordPosition {
    pub offset: i64,
    pub timestamp: i64,
}

/// One record of a batch, borrowed from it (or from its inflated payload).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordView<'a> {
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
}

/// The first record in `batch` whose timestamp is at least `timestamp`.
pub fn find_record_at_or_after(batch: &[u8], timestamp: i64) -> Result<Option<RecordPosition>, RecordError> {
    let mut found = None;
    for_each_record(batch, |record| {
        if record.timestamp >= timestamp {
            found = Some(RecordPosition { offset: record.offset, timestamp: record.timestamp });
            return false;
        }
        true
    })?;
    Ok(found)
}

/// The first record in `batch` holding the batch's largest timestamp.
pub fn find_max_timestamp_record(batch: &[u8]) -> Result<Option<RecordPosition>, RecordError> {
    let mut best: Option<RecordPosition> = None;
    for_each_record(batch, |record| {
        if best.is_none_or(|best| record.timestamp > best.timestamp) {
            best = Some(RecordPosition { offset: record.offset, timestamp: record.timestamp });
        }
        true
    })?;
    Ok(best)
}

/// Indexes (within their batch, as Kafka's `record_errors` count) of the records without a key in a record set
/// of one or more batches; a compacted topic refuses them.
pub fn keyless_records(record_set: &[u8]) -> Result<Vec<i32>, RecordError> {
    let mut keyless = Vec::new();
    let mut position = 0;
    while position < record_set.len() {
        let batch = &record_set[position..];
        let header = BatchHeader::parse(batch)?;
        let size = header.total_size().min(batch.len());
        let base_offset = header.base_offset.get();
        for_each_record(&batch[..size], |record| {
            if record.key.is_none() {
                keyless.push(record.offset.wrapping_sub(base_offset) as i32);
            }
            true
        })?;
        // `for_each_record` refused a batch shorter than its header, so every pass moves on.
        assert!(size >= BATCH_HEADER_SIZE);
        position += size;
    }
    Ok(keyless)
}

/// Calls `visit` with each record of `batch` until it returns false. Under LogAppendTime every record carries
/// the batch's max timestamp (the broker's append time). The CRC is not checked here: callers read batches the
/// log validated, or validate them first.
#[inline]
pub fn for_each_record(
    batch: &[u8],
    mut visit: impl FnMut(RecordView<'_>) -> bool,
) -> Result<(), RecordError> {
    let header = BatchHeader::parse(batch)?;
    let total = header.total_size().min(batch.len());
    if total < BATCH_HEADER_SIZE {
        return Err(RecordError(format!(
            "batch of {total} bytes is shorter than its {BATCH_HEADER_SIZE}-byte header"
        )));
    }
    let base_offset = header.base_offset.get();
    let base_timestamp = header.base_timestamp.get();
    let append_time = header.is_log_append_time().then(|| header.max_timestamp.get());
    let payload = &batch[BATCH_HEADER_SIZE..total];
    let inflated;
    let mut records: &[u8] = match Compression::from_attribute_bits(header.compression())? {
        Compression::None => payload,
        compression => {
            inflated = inflate(compression, payload)?;
            &inflated
        }
    };
    let record_count = header.record_count.get().max(0);
    for record_index in 0..record_count {
        let length = get_varint(&mut records)?;
        let Some((mut record, rest)) =
            usize::try_from(length).ok().and_then(|length| records.split_at_checked(length))
        else {
            return Err(RecordError(format!(
                "record {record_index} of {length} bytes runs past its batch ({} bytes left)",
                records.len()
            )));
        };
        records = rest;
        let Some((_attributes, fields)) = record.split_first() else {
            return Err(RecordError(format!("record {record_index} is empty")));
        };
        record = fields;
        let timestamp_delta = get_varlong(&mut record)?;
        let offset_delta = get_varint(&mut record)?;
        let key = get_nullable_bytes(&mut record, record_index)?;
        let value = get_nullable_bytes(&mut record, record_index)?;
        // Headers follow; no reader here needs them, and the record's length already bounds them.
        let view = RecordView {
            offset: base_offset.wrapping_add(i64::from(offset_delta)),
            timestamp: append_time.unwrap_or(base_timestamp.wrapping_add(timestamp_delta)),
            key,
            value,
        };
        if !visit(view) {
            return Ok(());
        }
    }
    Ok(())
}

/// A varint length (-1: null) and that many bytes, from the front of `record`.
#[inline]
fn get_nullable_bytes<'a>(record: &mut &'a [u8], record_index: i32) -> Result<Option<&'a [u8]>, RecordError> {
    let length = get_varint(record)?;
    if length < 0 {
        return Ok(None);
    }
    let Some((field, rest)) = record.split_at_checked(length as usize) else {
        return Err(RecordError(format!(
            "record {record_index}: a field of {length} bytes runs past the record ({} bytes left)",
            record.len()
        )));
    };
    *record = rest;
    Ok(Some(field))
}

#[cfg(test)]
mod tests {
    use super::compression::inflate_bounded;
    use super::*;
    use crate::batch::validate_batch;

    /// A v2 batch of records with the given CreateTime timestamps (null keys, values "v<i>"), compressed with
    /// `compression`.
    pub(crate) fn batch(timestamps: &[i64], compression: Compression) -> Vec<u8> {
        let mut builder = BatchBuilder::new(compression, 1024);
        for (index, timestamp) in timestamps.iter().enumerate() {
            builder.append(*timestamp, None, Some(&[format!("v{index}").as_bytes()]));
        }
        builder.finish(0).unwrap().to_vec()
    }

    /// A record's offset, timestamp, key and value, owned, for comparing.
    type OwnedRecord = (i64, i64, Option<Vec<u8>>, Option<Vec<u8>>);

    /// Every record of `batch`.
    fn read_all(batch: &[u8]) -> Vec<OwnedRecord> {
        let mut seen = Vec::new();
        for_each_record(batch, |record| {
            seen.push((
                record.offset,
                record.timestamp,
                record.key.map(<[u8]>::to_vec),
                record.value.map(<[u8]>::to_vec),
            ));
            true
        })
        .unwrap();
        seen
    }

    #[test]
    fn finds_records_by_timestamp_in_every_codec() {
        for compression in Compression::ALL {
            let bytes = batch(&[1000, 1005, 1003, 1010], compression);
            let at = |timestamp| find_record_at_or_after(&bytes, timestamp).unwrap();
            assert_eq!(at(0), Some(RecordPosition { offset: 0, timestamp: 1000 }), "{compression}");
            assert_eq!(at(1004), Some(RecordPosition { offset: 1, timestamp: 1005 }), "{compression}");
            assert_eq!(at(1006), Some(RecordPosition { offset: 3, timestamp: 1010 }), "{compression}");
            assert_eq!(at(1011), None, "{compression}");
            let max = find_max_timestamp_record(&bytes).unwrap();
            assert_eq!(max, Some(RecordPosition { offset: 3, timestamp: 1010 }), "{compression}");
        }
    }

    #[test]
    fn encoded_batches_validate_and_read_back() {
        let key = b"k1".as_slice();
        let value = vec![7u8; 300];
        let bytes = encode_batch(&[(Some(key), Some(&value)), (Some(b"k2"), None), (None, Some(b""))], 1234);
        validate_batch(&bytes).expect("the log accepts it");
        assert_eq!(
            read_all(&bytes),
            vec![
                (0, 1234, Some(b"k1".to_vec()), Some(value.clone())),
                (1, 1234, Some(b"k2".to_vec()), None),
                (2, 1234, None, Some(Vec::new())),
            ]
        );
    }

    #[test]
    fn batches_round_trip_through_every_codec() {
        // Proves that what the builder writes, compressed with each codec, reads back as the same records: keys
        // null or not, values null, empty, whole or in parts, timestamps out of order, a valid CRC.
        let values: Vec<Vec<u8>> = (0..200).map(|index| vec![index as u8; index * 13]).collect();
        let mut expected = Vec::new();
        for compression in Compression::ALL {
            let mut builder = BatchBuilder::new(compression, 64);
            expected.clear();
            for (index, value) in values.iter().enumerate() {
                let timestamp = 1_700_000_000_000 + (index as i64 * 7919) % 1000;
                let key = (index % 3 != 0).then(|| format!("key-{index}").into_bytes());
                let (head, tail) = value.split_at(value.len().min(5));
                let parts: &[&[u8]] = &[head, tail];
                let value_present = index % 11 != 5;
                builder.append(timestamp, key.as_deref(), value_present.then_some(parts));
                expected.push((index as i64, timestamp, key, value_present.then(|| value.clone())));
            }
            assert_eq!(builder.record_count(), 200);
            let bytes = builder.finish(64).unwrap();
            let (header, size) = validate_batch(&bytes).unwrap();
            assert_eq!(size, bytes.len());
            assert_eq!(Compression::from_attribute_bits(header.compression()).unwrap(), compression);
            assert_eq!(header.max_timestamp.get(), expected.iter().map(|record| record.1).max().unwrap());
            assert_eq!(read_all(&bytes), expected, "{compression}");
            assert!(builder.is_empty(), "finish starts a new batch");
        }
    }

    #[test]
    fn xerial_framed_snappy_batches_read_back() {
        // Proves a batch as Kafka's Java client frames snappy (xerial blocks) reads like a raw-snappy one.
        let raw = batch(&[10, 20, 30], Compression::None);
        let mut framed = raw[..BATCH_HEADER_SIZE].to_vec();
        framed.extend_from_slice(&compression::tests::xerial(&raw[BATCH_HEADER_SIZE..], 7));
        let length = (framed.len() - crate::batch::BATCH_LENGTH_OVERHEAD) as i32;
        framed[8..12].copy_from_slice(&length.to_be_bytes());
        framed[21..23].copy_from_slice(&Compression::Snappy.attribute_bits().to_be_bytes());
        assert_eq!(read_all(&framed), read_all(&raw));
    }

    #[test]
    fn header_fields_match_the_kafka_layout() {
        // Proves the header bytes at the offsets Kafka reads: length, magic, attributes, counts, CRC-32C range.
        let mut builder = BatchBuilder::new(Compression::Lz4, 0);
        builder.append(5, None, Some(&[b"hello"]));
        builder.append(9, None, Some(&[b"world"]));
        let batch = builder.finish(0).unwrap();
        assert_eq!(i64::from_be_bytes(batch[0..8].try_into().unwrap()), 0);
        assert_eq!(i32::from_be_bytes(batch[8..12].try_into().unwrap()) as usize, batch.len() - 12);
        assert_eq!(i32::from_be_bytes(batch[12..16].try_into().unwrap()), -1);
        assert_eq!(batch[16], 2);
        assert_eq!(i16::from_be_bytes(batch[21..23].try_into().unwrap()), 3);
        assert_eq!(i32::from_be_bytes(batch[23..27].try_into().unwrap()), 1);
        assert_eq!(i64::from_be_bytes(batch[27..35].try_into().unwrap()), 5);
        assert_eq!(i64::from_be_bytes(batch[35..43].try_into().unwrap()), 9);
        assert_eq!(i64::from_be_bytes(batch[43..51].try_into().unwrap()), -1);
        assert_eq!(i16::from_be_bytes(batch[51..53].try_into().unwrap()), -1);
        assert_eq!(i32::from_be_bytes(batch[53..57].try_into().unwrap()), -1);
        assert_eq!(i32::from_be_bytes(batch[57..61].try_into().unwrap()), 2);
        let stored = u32::from_be_bytes(batch[17..21].try_into().unwrap());
        assert_eq!(stored, crc32c::crc32c(&batch[21..]));
    }

    #[test]
    fn keyless_records_are_counted_within_their_batch() {
        // Proves the indexes restart at each batch of a record set and name only the records without a key.
        let mut record_set =
            encode_batch(&[(Some(b"a"), Some(b"1")), (None, Some(b"2")), (None, None)], 1).to_vec();
        record_set.extend_from_slice(&encode_batch(&[(None, Some(b"3")), (Some(b"b"), None)], 2));
        assert_eq!(keyless_records(&record_set).unwrap(), vec![1, 2, 0]);
        assert!(keyless_records(&record_set[..40]).is_err());
    }

    #[test]
    fn a_decompression_bomb_is_refused() {
        // Proves the real bound: a zstd batch of a few hundred KiB that would inflate to INFLATED_SIZE_MAX + 1
        // bytes of records is an error, not an allocation of its inflated size. The zeros are streamed into the
        // encoder, never held whole.
        use std::io::Read;
        let mut payload = Vec::new();
        let zeros = std::io::repeat(0).take(INFLATED_SIZE_MAX as u64 + 1);
        zstd::stream::copy_encode(zeros, &mut payload, 1).unwrap();
        assert!(payload.len() < 1 << 20, "the bomb is small: {} bytes", payload.len());
        let mut batch = batch(&[1], Compression::None)[..BATCH_HEADER_SIZE].to_vec();
        batch.extend_from_slice(&payload);
        let length = (batch.len() - crate::batch::BATCH_LENGTH_OVERHEAD) as i32;
        batch[8..12].copy_from_slice(&length.to_be_bytes());
        batch[21..23].copy_from_slice(&Compression::Zstd.attribute_bits().to_be_bytes());
        let error = for_each_record(&batch, |_| true).unwrap_err();
        assert!(error.0.contains("inflates past"), "{error}");
        assert!(inflate_bounded(Compression::Zstd, &payload, INFLATED_SIZE_MAX + 1).is_ok());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        // Proves damaged batches in every codec yield errors or records, never a panic, and that a batch cut
        // inside its header is an error.
        for compression in Compression::ALL {
            let good = batch(&[1, 2, 3], compression);
            for position in 0..good.len() {
                for flip in [0x01, 0x55, 0xff] {
                    let mut bytes = good.clone();
                    bytes[position] ^= flip;
                    let _ = find_record_at_or_after(&bytes, 2);
                    let _ = keyless_records(&bytes);
                }
            }
            assert!(find_record_at_or_after(&good[..30], 0).is_err());
        }
        let mut unknown_codec = batch(&[1], Compression::None);
        unknown_codec[22] = 6;
        assert!(for_each_record(&unknown_codec, |_| true).is_err());
    }
}
