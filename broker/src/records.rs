//! Reading records inside a v2 batch, for the few places the broker must look past the batch header:
//! ListOffsets by timestamp and max timestamp, which name an exact record, and the group coordinator, which
//! replays its own records from `__consumer_offsets`. Compressed batches are inflated here (gzip, snappy raw or
//! xerial-framed, lz4 frame, zstd), with the inflated size bounded. [`encode_batch`] writes the coordinator's
//! batches. Batches on the produce and fetch paths are never parsed beyond their headers.

use std::io::Read;

use sluice_storage::{BatchHeader, BATCH_HEADER_SIZE};

/// A decompressed batch larger than this is refused (a zip bomb must not exhaust memory).
pub const INFLATED_SIZE_MAX: usize = 256 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordError(pub String);

impl std::fmt::Display for RecordError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.0)
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

/// Calls `visit` with each record of `batch` until it returns false. Under LogAppendTime every record carries
/// the batch's max timestamp (the broker's append time).
pub fn for_each_record(
    batch: &[u8],
    mut visit: impl FnMut(RecordView<'_>) -> bool,
) -> Result<(), RecordError> {
    let header = BatchHeader::parse(batch).map_err(|error| RecordError(error.to_string()))?;
    let total = header.total_size().min(batch.len());
    if total < BATCH_HEADER_SIZE {
        return Err(RecordError(format!("batch of {total} bytes is shorter than its header")));
    }
    let base_offset = header.base_offset.get();
    let base_timestamp = header.base_timestamp.get();
    let append_time = header.is_log_append_time().then(|| header.max_timestamp.get());
    let payload = &batch[BATCH_HEADER_SIZE..total];
    let inflated;
    let records: &[u8] = match header.compression() {
        0 => payload,
        codec => {
            inflated = inflate(codec, payload)?;
            &inflated
        }
    };
    let record_count = header.record_count.get().max(0) as usize;
    let mut cursor = Cursor { bytes: records, position: 0 };
    for _ in 0..record_count {
        let length = cursor.varint()?;
        let start = cursor.position;
        let end = start
            .checked_add(usize::try_from(length).map_err(|_| RecordError(format!("record length {length}")))?)
            .filter(|end| *end <= records.len())
            .ok_or_else(|| RecordError(format!("record length {length} runs past the batch")))?;
        let _attributes = cursor.byte()?;
        let timestamp_delta = cursor.varlong()?;
        let offset_delta = cursor.varint()?;
        let key = cursor.nullable_bytes(end)?;
        let value = cursor.nullable_bytes(end)?;
        let record = RecordView {
            offset: base_offset + offset_delta,
            timestamp: append_time.unwrap_or(base_timestamp + timestamp_delta),
            key,
            value,
        };
        if !visit(record) {
            return Ok(());
        }
        cursor.position = end;
    }
    Ok(())
}

/// Indexes (within their batch, as Kafka's `record_errors` count) of the records without a key in a record set
/// of one or more batches; a compacted topic refuses them.
pub fn keyless_records(record_set: &[u8]) -> Result<Vec<i32>, RecordError> {
    let mut keyless = Vec::new();
    let mut position = 0;
    while position < record_set.len() {
        let batch = &record_set[position..];
        let header = BatchHeader::parse(batch).map_err(|error| RecordError(error.to_string()))?;
        let size = header.total_size().min(batch.len());
        let base = header.base_offset.get();
        for_each_record(&batch[..size], |record| {
            if record.key.is_none() {
                keyless.push((record.offset - base) as i32);
            }
            true
        })?;
        position += size.max(1);
    }
    Ok(keyless)
}

/// An uncompressed v2 batch of `records` (key, value), CreateTime `timestamp_ms`, no producer id, base offset 0
/// (the log stamps the real one), CRC-32C set. Used for the coordinator's own records.
/// A record's key and value (either may be null).
pub type KeyValue<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

pub fn encode_batch(records: &[KeyValue<'_>], timestamp_ms: i64) -> bytes::Bytes {
    assert!(!records.is_empty(), "a batch holds at least one record");
    let mut body = Vec::new();
    let mut record = Vec::new();
    for (index, (key, value)) in records.iter().enumerate() {
        record.clear();
        record.push(0); // attributes
        put_varint(0, &mut record); // timestamp delta
        put_varint(index as i64, &mut record); // offset delta
        for field in [key, value] {
            match field {
                Some(bytes) => {
                    put_varint(bytes.len() as i64, &mut record);
                    record.extend_from_slice(bytes);
                }
                None => put_varint(-1, &mut record),
            }
        }
        put_varint(0, &mut record); // no headers
        put_varint(record.len() as i64, &mut body);
        body.extend_from_slice(&record);
    }
    let mut batch = Vec::with_capacity(BATCH_HEADER_SIZE + body.len());
    batch.extend_from_slice(&0i64.to_be_bytes()); // base offset
    batch.extend_from_slice(&((BATCH_HEADER_SIZE - 12 + body.len()) as i32).to_be_bytes());
    batch.extend_from_slice(&0i32.to_be_bytes()); // partition leader epoch
    batch.push(2); // magic
    batch.extend_from_slice(&0u32.to_be_bytes()); // CRC, below
    batch.extend_from_slice(&0i16.to_be_bytes()); // attributes
    batch.extend_from_slice(&(records.len() as i32 - 1).to_be_bytes());
    batch.extend_from_slice(&timestamp_ms.to_be_bytes());
    batch.extend_from_slice(&timestamp_ms.to_be_bytes());
    batch.extend_from_slice(&(-1i64).to_be_bytes()); // producer id
    batch.extend_from_slice(&(-1i16).to_be_bytes()); // producer epoch
    batch.extend_from_slice(&(-1i32).to_be_bytes()); // base sequence
    batch.extend_from_slice(&(records.len() as i32).to_be_bytes());
    batch.extend_from_slice(&body);
    let crc = crc32c::crc32c(&batch[21..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
    bytes::Bytes::from(batch)
}

/// Zig-zag varint, as record fields are written.
fn put_varint(value: i64, output: &mut Vec<u8>) {
    let mut encoded = ((value << 1) ^ (value >> 63)) as u64;
    loop {
        let byte = (encoded & 0x7f) as u8;
        encoded >>= 7;
        if encoded == 0 {
            output.push(byte);
            return;
        }
        output.push(byte | 0x80);
    }
}

fn inflate(codec: i16, payload: &[u8]) -> Result<Vec<u8>, RecordError> {
    let error = |name: &str, reason: String| RecordError(format!("cannot inflate {name} batch: {reason}"));
    let mut output = Vec::new();
    let limit = INFLATED_SIZE_MAX as u64 + 1;
    match codec {
        1 => {
            flate2::read::GzDecoder::new(payload)
                .take(limit)
                .read_to_end(&mut output)
                .map_err(|e| error("gzip", e.to_string()))?;
        }
        2 => output = inflate_snappy(payload).map_err(|reason| error("snappy", reason))?,
        3 => {
            lz4_flex::frame::FrameDecoder::new(payload)
                .take(limit)
                .read_to_end(&mut output)
                .map_err(|e| error("lz4", e.to_string()))?;
        }
        4 => {
            zstd::stream::read::Decoder::new(payload)
                .map_err(|e| error("zstd", e.to_string()))?
                .take(limit)
                .read_to_end(&mut output)
                .map_err(|e| error("zstd", e.to_string()))?;
        }
        other => return Err(RecordError(format!("unknown compression codec {other}"))),
    }
    if output.len() > INFLATED_SIZE_MAX {
        return Err(RecordError(format!("batch inflates past {INFLATED_SIZE_MAX} bytes")));
    }
    Ok(output)
}

/// Kafka's Java client frames snappy the xerial way (a magic header, then length-prefixed raw blocks);
/// librdkafka writes one raw block. Both are accepted.
fn inflate_snappy(payload: &[u8]) -> Result<Vec<u8>, String> {
    const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";
    const XERIAL_HEADER_SIZE: usize = 16;
    let raw_block = |block: &[u8]| -> Result<Vec<u8>, String> {
        let size = snap::raw::decompress_len(block).map_err(|e| e.to_string())?;
        if size > INFLATED_SIZE_MAX {
            return Err(format!("block inflates to {size} bytes"));
        }
        snap::raw::Decoder::new().decompress_vec(block).map_err(|e| e.to_string())
    };
    if !payload.starts_with(XERIAL_MAGIC) {
        return raw_block(payload);
    }
    let mut output = Vec::new();
    let mut position = XERIAL_HEADER_SIZE.min(payload.len());
    while position + 4 <= payload.len() {
        let size = u32::from_be_bytes([
            payload[position],
            payload[position + 1],
            payload[position + 2],
            payload[position + 3],
        ]) as usize;
        position += 4;
        let block =
            payload.get(position..position.saturating_add(size)).ok_or("block runs past the batch")?;
        output.extend_from_slice(&raw_block(block)?);
        if output.len() > INFLATED_SIZE_MAX {
            return Err("stream inflates too far".into());
        }
        position += size;
    }
    Ok(output)
}

struct Cursor<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Cursor<'a> {
    fn byte(&mut self) -> Result<u8, RecordError> {
        let byte = *self.bytes.get(self.position).ok_or_else(|| RecordError("record truncated".into()))?;
        self.position += 1;
        Ok(byte)
    }

    fn varlong(&mut self) -> Result<i64, RecordError> {
        let mut value: u64 = 0;
        for shift in (0..70).step_by(7) {
            let byte = self.byte()?;
            value |= u64::from(byte & 0x7f) << shift.min(63);
            if byte & 0x80 == 0 {
                // Zig-zag decoding.
                return Ok((value >> 1) as i64 ^ -((value & 1) as i64));
            }
        }
        Err(RecordError("varint longer than 10 bytes".into()))
    }

    fn varint(&mut self) -> Result<i64, RecordError> {
        self.varlong()
    }

    /// A varint length (-1: null) and that many bytes, which must end by `end`.
    fn nullable_bytes(&mut self, end: usize) -> Result<Option<&'a [u8]>, RecordError> {
        let length = self.varint()?;
        if length < 0 {
            return Ok(None);
        }
        let start = self.position;
        let stop = start
            .checked_add(length as usize)
            .filter(|stop| *stop <= end)
            .ok_or_else(|| RecordError(format!("field of {length} bytes runs past its record")))?;
        self.position = stop;
        Ok(Some(&self.bytes[start..stop]))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    use super::put_varint as zigzag;

    /// A v2 batch of records with the given timestamps (values "v<i>"), compressed with `codec`, valid CRC.
    pub(crate) fn batch(base_timestamp: i64, timestamps: &[i64], codec: i16) -> Vec<u8> {
        let mut records = Vec::new();
        for (index, timestamp) in timestamps.iter().enumerate() {
            let mut body = vec![0u8];
            zigzag(timestamp - base_timestamp, &mut body);
            zigzag(index as i64, &mut body);
            zigzag(-1, &mut body); // null key
            let value = format!("v{index}");
            zigzag(value.len() as i64, &mut body);
            body.extend_from_slice(value.as_bytes());
            zigzag(0, &mut body); // no headers
            zigzag(body.len() as i64, &mut records);
            records.extend_from_slice(&body);
        }
        let payload = match codec {
            0 => records,
            1 => {
                let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                std::io::Write::write_all(&mut encoder, &records).unwrap();
                encoder.finish().unwrap()
            }
            2 => snap::raw::Encoder::new().compress_vec(&records).unwrap(),
            3 => {
                let mut encoder = lz4_flex::frame::FrameEncoder::new(Vec::new());
                std::io::Write::write_all(&mut encoder, &records).unwrap();
                encoder.finish().unwrap()
            }
            4 => zstd::encode_all(&records[..], 1).unwrap(),
            _ => unreachable!(),
        };
        let max_timestamp = timestamps.iter().copied().max().unwrap_or(base_timestamp);
        let mut batch = Vec::new();
        batch.extend_from_slice(&0i64.to_be_bytes());
        batch.extend_from_slice(&((BATCH_HEADER_SIZE - 12 + payload.len()) as i32).to_be_bytes());
        batch.extend_from_slice(&0i32.to_be_bytes());
        batch.push(2);
        batch.extend_from_slice(&0u32.to_be_bytes());
        batch.extend_from_slice(&codec.to_be_bytes());
        batch.extend_from_slice(&(timestamps.len() as i32 - 1).to_be_bytes());
        batch.extend_from_slice(&base_timestamp.to_be_bytes());
        batch.extend_from_slice(&max_timestamp.to_be_bytes());
        batch.extend_from_slice(&(-1i64).to_be_bytes());
        batch.extend_from_slice(&(-1i16).to_be_bytes());
        batch.extend_from_slice(&(-1i32).to_be_bytes());
        batch.extend_from_slice(&(timestamps.len() as i32).to_be_bytes());
        batch.extend_from_slice(&payload);
        let crc = crc32c_of(&batch[21..]);
        batch[17..21].copy_from_slice(&crc.to_be_bytes());
        batch
    }

    fn crc32c_of(bytes: &[u8]) -> u32 {
        // Bitwise CRC-32C (Castagnoli), reflected polynomial 0x82F63B78: slow and obviously right, for tests.
        let mut crc = !0u32;
        for byte in bytes {
            crc ^= u32::from(*byte);
            for _ in 0..8 {
                crc = if crc & 1 != 0 { (crc >> 1) ^ 0x82F6_3B78 } else { crc >> 1 };
            }
        }
        !crc
    }

    #[test]
    fn finds_records_by_timestamp_in_every_codec() {
        for codec in 0..=4 {
            let bytes = batch(1000, &[1000, 1005, 1003, 1010], codec);
            let at = |timestamp| find_record_at_or_after(&bytes, timestamp).unwrap();
            assert_eq!(at(0), Some(RecordPosition { offset: 0, timestamp: 1000 }), "codec {codec}");
            assert_eq!(at(1004), Some(RecordPosition { offset: 1, timestamp: 1005 }), "codec {codec}");
            assert_eq!(at(1006), Some(RecordPosition { offset: 3, timestamp: 1010 }), "codec {codec}");
            assert_eq!(at(1011), None, "codec {codec}");
            let max = find_max_timestamp_record(&bytes).unwrap();
            assert_eq!(max, Some(RecordPosition { offset: 3, timestamp: 1010 }), "codec {codec}");
        }
    }

    #[test]
    fn encoded_batches_validate_and_read_back() {
        let key = b"k1".as_slice();
        let value = vec![7u8; 300];
        let bytes = encode_batch(&[(Some(key), Some(&value)), (Some(b"k2"), None), (None, Some(b""))], 1234);
        sluice_storage::batch::validate_batch(&bytes).expect("the log accepts it");
        let mut seen = Vec::new();
        for_each_record(&bytes, |record| {
            seen.push((
                record.offset,
                record.timestamp,
                record.key.map(<[u8]>::to_vec),
                record.value.map(<[u8]>::to_vec),
            ));
            true
        })
        .unwrap();
        assert_eq!(
            seen,
            vec![
                (0, 1234, Some(b"k1".to_vec()), Some(value.clone())),
                (1, 1234, Some(b"k2".to_vec()), None),
                (2, 1234, None, Some(Vec::new())),
            ]
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut bytes = batch(0, &[1, 2, 3], 1);
        let length = bytes.len();
        bytes[length - 5] ^= 0xff;
        bytes[70] ^= 0x55;
        let _ = find_record_at_or_after(&bytes, 2);
        assert!(find_record_at_or_after(&bytes[..30], 0).is_err());
    }
}
