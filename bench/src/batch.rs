//! Record batch v2, built and read by hand so that the load generator spends its time on the wire, not in a codec.
//!
//! The builder appends records straight into the buffer that becomes the batch (or, when compressing, into a scratch
//! buffer that is compressed once at the end), fills the 61-byte header last and computes the CRC-32C over
//! `attributes..end`. The reader walks a Fetch response's concatenated batches, verifies each CRC, decompresses and
//! hands every record's value to a callback — which is how consumers find the send timestamp in the payload.

use std::fmt;
use std::io::{Read, Write};

use bytes::{BufMut, Bytes, BytesMut};

/// The fixed header of a v2 batch: baseOffset 8, batchLength 4, partitionLeaderEpoch 4, magic 1, crc 4,
/// attributes 2, lastOffsetDelta 4, baseTimestamp 8, maxTimestamp 8, producerId 8, producerEpoch 2,
/// baseSequence 4, recordCount 4.
pub const BATCH_HEADER_SIZE: usize = 61;
const _: () = assert!(8 + 4 + 4 + 1 + 4 + 2 + 4 + 8 + 8 + 8 + 2 + 4 + 4 == BATCH_HEADER_SIZE);

/// Bytes counted by batchLength start after baseOffset and batchLength themselves.
const BATCH_LENGTH_OFFSET: usize = 8;
const BATCH_LENGTH_EXCLUDED_SIZE: usize = 12;
const MAGIC_OFFSET: usize = 16;
const CRC_OFFSET: usize = 17;
/// The CRC covers everything from `attributes` to the end of the batch.
const CRC_START: usize = 21;
const ATTRIBUTES_OFFSET: usize = 21;
const LAST_OFFSET_DELTA_OFFSET: usize = 23;
const RECORD_COUNT_OFFSET: usize = 57;

/// Compression codecs, numbered as in batch attributes bits 0–2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    pub fn attribute_bits(self) -> i16 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }

    fn from_attribute_bits(bits: i16) -> Result<Self, BatchError> {
        match bits & 0x7 {
            0 => Ok(Compression::None),
            1 => Ok(Compression::Gzip),
            2 => Ok(Compression::Snappy),
            3 => Ok(Compression::Lz4),
            4 => Ok(Compression::Zstd),
            other => Err(BatchError::UnknownCompression(other)),
        }
    }
}

#[derive(Debug)]
pub enum BatchError {
    Truncated { needed: usize, available: usize },
    BadMagic(i8),
    CrcMismatch { stored: u32, computed: u32 },
    UnknownCompression(i16),
    Compression(String),
    BadRecord(&'static str),
}

impl fmt::Display for BatchError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BatchError::Truncated { needed, available } => {
                write!(formatter, "batch truncated: needs {needed} bytes, {available} available")
            }
            BatchError::BadMagic(magic) => write!(formatter, "batch magic {magic}, expected 2"),
            BatchError::CrcMismatch { stored, computed } => {
                write!(formatter, "batch CRC-32C {stored:#010x} stored, {computed:#010x} computed")
            }
            BatchError::UnknownCompression(bits) => write!(formatter, "unknown compression codec {bits}"),
            BatchError::Compression(message) => write!(formatter, "compression: {message}"),
            BatchError::BadRecord(what) => write!(formatter, "malformed record: {what}"),
        }
    }
}

impl std::error::Error for BatchError {}

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
    pub fn new(compression: Compression, capacity: usize) -> Self {
        let mut builder = BatchBuilder {
            compression,
            buffer: BytesMut::with_capacity(capacity + BATCH_HEADER_SIZE),
            records: Vec::new(),
            record_count: 0,
            base_timestamp_ms: 0,
            max_timestamp_ms: 0,
        };
        builder.reset(capacity);
        builder
    }

    fn reset(&mut self, capacity: usize) {
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

    /// Appends one record. `value_prefix` is written first and then `value_rest`, so that a send timestamp can
    /// precede a shared payload without copying the payload twice.
    pub fn append(&mut self, timestamp_ms: i64, key: Option<&[u8]>, value_prefix: &[u8], value_rest: &[u8]) {
        if self.record_count == 0 {
            self.base_timestamp_ms = timestamp_ms;
            self.max_timestamp_ms = timestamp_ms;
        }
        let timestamp_delta = timestamp_ms - self.base_timestamp_ms;
        self.max_timestamp_ms = self.max_timestamp_ms.max(timestamp_ms);
        let offset_delta = self.record_count as i64;
        let value_size = value_prefix.len() + value_rest.len();
        let key_size = key.map_or(0, <[u8]>::len);
        let key_length: i64 = key.map_or(-1, |key| key.len() as i64);
        let body_size = 1
            + varlong_size(timestamp_delta)
            + varlong_size(offset_delta)
            + varlong_size(key_length)
            + key_size
            + varlong_size(value_size as i64)
            + value_size
            + 1;
        let record = RecordFields { body_size, timestamp_delta, offset_delta, key, key_length, value_size };
        if self.compression == Compression::None {
            put_record(&mut self.buffer, &record, value_prefix, value_rest);
        } else {
            put_record(&mut self.records, &record, value_prefix, value_rest);
        }
        self.record_count += 1;
    }

    /// Seals the batch and starts an empty one with room for `next_capacity` bytes. Compression failure is an
    /// operating error (an encoder could run out of memory); the records are lost with it.
    pub fn finish(&mut self, next_capacity: usize) -> Result<Bytes, BatchError> {
        assert!(self.record_count > 0, "an empty batch is never sent");
        if self.compression != Compression::None {
            compress_into(self.compression, &self.records, &mut self.buffer)?;
        }
        let mut batch = self.buffer.split();
        let batch_length = (batch.len() - BATCH_LENGTH_EXCLUDED_SIZE) as i32;
        let header = &mut batch[..BATCH_HEADER_SIZE];
        header[0..8].copy_from_slice(&0i64.to_be_bytes()); // base offset: the broker assigns it
        header[BATCH_LENGTH_OFFSET..12].copy_from_slice(&batch_length.to_be_bytes());
        header[12..16].copy_from_slice(&(-1i32).to_be_bytes()); // partition leader epoch
        header[MAGIC_OFFSET] = 2;
        header[ATTRIBUTES_OFFSET..23].copy_from_slice(&self.compression.attribute_bits().to_be_bytes());
        header[LAST_OFFSET_DELTA_OFFSET..27].copy_from_slice(&(self.record_count as i32 - 1).to_be_bytes());
        header[27..35].copy_from_slice(&self.base_timestamp_ms.to_be_bytes());
        header[35..43].copy_from_slice(&self.max_timestamp_ms.to_be_bytes());
        header[43..51].copy_from_slice(&(-1i64).to_be_bytes()); // producer id: not idempotent
        header[51..53].copy_from_slice(&(-1i16).to_be_bytes()); // producer epoch
        header[53..57].copy_from_slice(&(-1i32).to_be_bytes()); // base sequence
        header[RECORD_COUNT_OFFSET..61].copy_from_slice(&(self.record_count as i32).to_be_bytes());
        let crc = crc32c::crc32c(&batch[CRC_START..]);
        batch[CRC_OFFSET..CRC_START].copy_from_slice(&crc.to_be_bytes());
        self.reset(next_capacity);
        Ok(batch.freeze())
    }
}

struct RecordFields<'a> {
    body_size: usize,
    timestamp_delta: i64,
    offset_delta: i64,
    key: Option<&'a [u8]>,
    key_length: i64,
    value_size: usize,
}

/// Generic over the target so that each `put_u8` is inlined: this runs once per message.
#[inline]
fn put_record<B: BufMut>(target: &mut B, record: &RecordFields<'_>, value_prefix: &[u8], value_rest: &[u8]) {
    put_varlong(target, record.body_size as i64);
    target.put_u8(0);
    put_varlong(target, record.timestamp_delta);
    put_varlong(target, record.offset_delta);
    put_varlong(target, record.key_length);
    if let Some(key) = record.key {
        target.put_slice(key);
    }
    put_varlong(target, record.value_size as i64);
    target.put_slice(value_prefix);
    target.put_slice(value_rest);
    target.put_u8(0); // no headers
}

fn compress_into(compression: Compression, records: &[u8], out: &mut BytesMut) -> Result<(), BatchError> {
    let error = |error: std::io::Error| BatchError::Compression(error.to_string());
    let mut writer = out.writer();
    match compression {
        Compression::None => writer.write_all(records).map_err(error)?,
        Compression::Gzip => {
            let mut encoder = flate2::write::GzEncoder::new(writer, flate2::Compression::fast());
            encoder.write_all(records).map_err(error)?;
            encoder.finish().map_err(error)?;
        }
        Compression::Snappy => {
            // Raw snappy, as librdkafka writes it; every Kafka reader accepts it besides the xerial framing.
            let compressed = snap::raw::Encoder::new()
                .compress_vec(records)
                .map_err(|error| BatchError::Compression(error.to_string()))?;
            writer.write_all(&compressed).map_err(error)?;
        }
        Compression::Lz4 => {
            let mut encoder = lz4_flex::frame::FrameEncoder::new(writer);
            encoder.write_all(records).map_err(error)?;
            encoder.finish().map_err(|error| BatchError::Compression(error.to_string()))?;
        }
        Compression::Zstd => {
            let compressed = zstd::bulk::compress(records, 3).map_err(error)?;
            writer.write_all(&compressed).map_err(error)?;
        }
    }
    Ok(())
}

fn decompress(compression: Compression, payload: &[u8]) -> Result<Vec<u8>, BatchError> {
    let error = |error: std::io::Error| BatchError::Compression(error.to_string());
    let mut out = Vec::with_capacity(payload.len() * 4);
    match compression {
        Compression::None => out.extend_from_slice(payload),
        Compression::Gzip => {
            flate2::read::GzDecoder::new(payload).read_to_end(&mut out).map_err(error)?;
        }
        Compression::Snappy => out = decompress_snappy(payload)?,
        Compression::Lz4 => {
            lz4_flex::frame::FrameDecoder::new(payload).read_to_end(&mut out).map_err(error)?;
        }
        Compression::Zstd => {
            zstd::stream::read::Decoder::new(payload).map_err(error)?.read_to_end(&mut out).map_err(error)?;
        }
    }
    Ok(out)
}

/// Snappy in Kafka is raw, or xerial-framed (the Java producer): a 16-byte header, then (size, block) pairs.
fn decompress_snappy(payload: &[u8]) -> Result<Vec<u8>, BatchError> {
    const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";
    let raw = |block: &[u8]| {
        snap::raw::Decoder::new()
            .decompress_vec(block)
            .map_err(|error| BatchError::Compression(error.to_string()))
    };
    if !payload.starts_with(XERIAL_MAGIC) {
        return raw(payload);
    }
    let mut out = Vec::new();
    let mut rest = payload.get(16..).ok_or(BatchError::BadRecord("xerial header"))?;
    while !rest.is_empty() {
        let size_bytes: [u8; 4] = rest
            .get(..4)
            .and_then(|s| s.try_into().ok())
            .ok_or(BatchError::BadRecord("xerial block size"))?;
        let size = u32::from_be_bytes(size_bytes) as usize;
        let block = rest.get(4..4 + size).ok_or(BatchError::BadRecord("xerial block"))?;
        out.extend_from_slice(&raw(block)?);
        rest = &rest[4 + size..];
    }
    Ok(out)
}

/// What a reader learns from one batch header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSummary {
    pub base_offset: i64,
    pub last_offset_delta: i32,
    pub record_count: i32,
    pub size: usize,
}

impl BatchSummary {
    pub fn next_offset(&self) -> i64 {
        self.base_offset + self.last_offset_delta as i64 + 1
    }
}

/// Walks the complete batches at the front of `data` (a Fetch response may end in a partial one, which is skipped),
/// calling `on_value` with each record's offset and value. Returns the summaries of the batches read.
pub fn read_batches(
    data: &[u8],
    verify_crc: bool,
    mut on_value: impl FnMut(i64, &[u8]),
) -> Result<Vec<BatchSummary>, BatchError> {
    let mut summaries = Vec::new();
    let mut rest = data;
    while rest.len() >= BATCH_HEADER_SIZE {
        let batch_length = i32::from_be_bytes(field(rest, BATCH_LENGTH_OFFSET)?);
        if batch_length < (BATCH_HEADER_SIZE - BATCH_LENGTH_EXCLUDED_SIZE) as i32 {
            return Err(BatchError::BadRecord("batch length below the header size"));
        }
        let size = batch_length as usize + BATCH_LENGTH_EXCLUDED_SIZE;
        if rest.len() < size {
            break; // partial trailing batch: fetch again from its offset
        }
        let batch = &rest[..size];
        rest = &rest[size..];
        let magic = batch[MAGIC_OFFSET] as i8;
        if magic != 2 {
            return Err(BatchError::BadMagic(magic));
        }
        if verify_crc {
            let stored = u32::from_be_bytes(field(batch, CRC_OFFSET)?);
            let computed = crc32c::crc32c(&batch[CRC_START..]);
            if stored != computed {
                return Err(BatchError::CrcMismatch { stored, computed });
            }
        }
        let base_offset = i64::from_be_bytes(field(batch, 0)?);
        let attributes = i16::from_be_bytes(field(batch, ATTRIBUTES_OFFSET)?);
        let summary = BatchSummary {
            base_offset,
            last_offset_delta: i32::from_be_bytes(field(batch, LAST_OFFSET_DELTA_OFFSET)?),
            record_count: i32::from_be_bytes(field(batch, RECORD_COUNT_OFFSET)?),
            size,
        };
        // Control batches (bit 5) carry transaction markers, not application records.
        if attributes & 0x20 == 0 {
            let compression = Compression::from_attribute_bits(attributes)?;
            let payload = &batch[BATCH_HEADER_SIZE..];
            if compression == Compression::None {
                read_records(payload, summary.record_count, base_offset, &mut on_value)?;
            } else {
                let records = decompress(compression, payload)?;
                read_records(&records, summary.record_count, base_offset, &mut on_value)?;
            }
        }
        summaries.push(summary);
    }
    Ok(summaries)
}

/// The offset after the last complete batch at the front of `data`, from the batch headers alone (no record is
/// parsed): where the next fetch of that partition starts. None when `data` holds no complete batch.
pub fn next_offset_after(data: &[u8]) -> Option<i64> {
    let mut rest = data;
    let mut next = None;
    // Bounded: every pass consumes one batch of at least a header's size, or stops.
    while rest.len() >= BATCH_HEADER_SIZE {
        let batch_length = i32::from_be_bytes(field(rest, BATCH_LENGTH_OFFSET).ok()?);
        if batch_length < (BATCH_HEADER_SIZE - BATCH_LENGTH_EXCLUDED_SIZE) as i32 {
            break;
        }
        let size = batch_length as usize + BATCH_LENGTH_EXCLUDED_SIZE;
        if rest.len() < size {
            break;
        }
        let base_offset = i64::from_be_bytes(field(rest, 0).ok()?);
        let last_offset_delta = i32::from_be_bytes(field(rest, LAST_OFFSET_DELTA_OFFSET).ok()?);
        next = Some(base_offset + last_offset_delta as i64 + 1);
        rest = &rest[size..];
    }
    next
}

fn field<const N: usize>(data: &[u8], offset: usize) -> Result<[u8; N], BatchError> {
    data.get(offset..offset + N)
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or(BatchError::Truncated { needed: offset + N, available: data.len() })
}

fn read_records(
    mut data: &[u8],
    record_count: i32,
    base_offset: i64,
    on_value: &mut impl FnMut(i64, &[u8]),
) -> Result<(), BatchError> {
    for _ in 0..record_count.max(0) {
        let length = get_varlong(&mut data)?;
        let length = usize::try_from(length).map_err(|_| BatchError::BadRecord("negative record length"))?;
        let mut record = data.get(..length).ok_or(BatchError::BadRecord("record past batch end"))?;
        data = &data[length..];
        record = record.get(1..).ok_or(BatchError::BadRecord("record attributes"))?;
        let _timestamp_delta = get_varlong(&mut record)?;
        let offset_delta = get_varlong(&mut record)?;
        let key_length = get_varlong(&mut record)?;
        if key_length > 0 {
            record = record.get(key_length as usize..).ok_or(BatchError::BadRecord("key past record end"))?;
        }
        let value_length = get_varlong(&mut record)?;
        let value = if value_length >= 0 {
            record.get(..value_length as usize).ok_or(BatchError::BadRecord("value past record end"))?
        } else {
            &[]
        };
        on_value(base_offset + offset_delta, value);
    }
    Ok(())
}

/// Zig-zag varint size, as Kafka's record fields use.
pub fn varlong_size(value: i64) -> usize {
    let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
    let mut size = 1;
    while zigzag >= 0x80 {
        zigzag >>= 7;
        size += 1;
    }
    size
}

pub fn put_varlong(buffer: &mut (impl BufMut + ?Sized), value: i64) {
    let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
    while zigzag >= 0x80 {
        buffer.put_u8((zigzag as u8) | 0x80);
        zigzag >>= 7;
    }
    buffer.put_u8(zigzag as u8);
}

pub fn get_varlong(data: &mut &[u8]) -> Result<i64, BatchError> {
    let mut zigzag: u64 = 0;
    for index in 0..10 {
        let (&byte, rest) = data.split_first().ok_or(BatchError::BadRecord("varint past end"))?;
        *data = rest;
        zigzag |= ((byte & 0x7f) as u64) << (7 * index);
        if byte & 0x80 == 0 {
            return Ok(((zigzag >> 1) as i64) ^ -((zigzag & 1) as i64));
        }
    }
    Err(BatchError::BadRecord("varint longer than 10 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(compression: Compression, values: &[&[u8]], keys: &[Option<&[u8]>]) -> Bytes {
        let mut builder = BatchBuilder::new(compression, 1024);
        for (value, key) in values.iter().zip(keys) {
            builder.append(
                1_700_000_000_000,
                *key,
                &value[..value.len().min(3)],
                &value[value.len().min(3)..],
            );
        }
        builder.finish(1024).unwrap()
    }

    #[test]
    fn varlong_round_trips_at_every_width() {
        // Proves put/get/size agree, including the zig-zag extremes.
        for value in [0i64, 1, -1, 63, -64, 64, 300, -300, i32::MAX as i64, i64::MAX, i64::MIN] {
            let mut buffer = Vec::new();
            put_varlong(&mut buffer, value);
            assert_eq!(buffer.len(), varlong_size(value), "size of {value}");
            let mut slice = &buffer[..];
            assert_eq!(get_varlong(&mut slice).unwrap(), value);
            assert!(slice.is_empty());
        }
    }

    #[test]
    fn batch_round_trips_with_every_codec_and_a_valid_crc() {
        // Proves that what the builder writes, the reader returns unchanged, for each codec, with the CRC checked.
        let values: Vec<Vec<u8>> = (0..50).map(|index| vec![index as u8; 10 + index * 7]).collect();
        let value_refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
        let keys: Vec<Option<&[u8]>> =
            (0..50).map(|index| if index % 2 == 0 { Some(&b"key"[..]) } else { None }).collect();
        for compression in
            [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd]
        {
            let batch = build(compression, &value_refs, &keys);
            let mut seen = Vec::new();
            let summaries =
                read_batches(&batch, true, |offset, value| seen.push((offset, value.to_vec()))).unwrap();
            assert_eq!(summaries.len(), 1, "{compression:?}");
            assert_eq!(summaries[0].record_count, 50);
            assert_eq!(summaries[0].next_offset(), 50);
            assert_eq!(summaries[0].size, batch.len());
            assert_eq!(seen.len(), 50);
            for (index, (offset, value)) in seen.iter().enumerate() {
                assert_eq!(*offset, index as i64);
                assert_eq!(value, &values[index], "{compression:?} record {index}");
            }
        }
    }

    #[test]
    fn header_fields_match_the_kafka_layout() {
        // Proves the header bytes at the offsets Kafka reads: length, magic, attributes, counts, CRC-32C range.
        let batch = build(Compression::Lz4, &[b"hello", b"world"], &[None, None]);
        assert_eq!(i32::from_be_bytes(batch[8..12].try_into().unwrap()) as usize, batch.len() - 12);
        assert_eq!(batch[16], 2);
        assert_eq!(i16::from_be_bytes(batch[21..23].try_into().unwrap()), 3);
        assert_eq!(i32::from_be_bytes(batch[23..27].try_into().unwrap()), 1);
        assert_eq!(i64::from_be_bytes(batch[43..51].try_into().unwrap()), -1);
        assert_eq!(i32::from_be_bytes(batch[57..61].try_into().unwrap()), 2);
        let stored = u32::from_be_bytes(batch[17..21].try_into().unwrap());
        assert_eq!(stored, crc32c::crc32c(&batch[21..]));
    }

    #[test]
    fn corrupted_byte_fails_the_crc() {
        // Proves the reader rejects a batch whose CRC-covered bytes changed.
        let batch = build(Compression::None, &[b"payload-bytes"], &[None]);
        let mut corrupt = batch.to_vec();
        let last = corrupt.len() - 2;
        corrupt[last] ^= 0xff;
        assert!(matches!(read_batches(&corrupt, true, |_, _| {}), Err(BatchError::CrcMismatch { .. })));
    }

    #[test]
    fn partial_trailing_batch_is_skipped() {
        // Proves a Fetch response cut inside its last batch yields the complete batches only.
        let first = build(Compression::None, &[b"one"], &[None]);
        let second = build(Compression::None, &[b"two", b"three"], &[None, None]);
        let mut data = first.to_vec();
        data.extend_from_slice(&second[..second.len() - 1]);
        let summaries = read_batches(&data, true, |_, _| {}).unwrap();
        assert_eq!(summaries.len(), 1);
    }

    #[test]
    fn known_crc32c_vector() {
        // Pins the crate to the Castagnoli polynomial: CRC-32C("123456789") = 0xE3069283.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
    }
}
