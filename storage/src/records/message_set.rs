//! Message sets of the formats before record batches: magic 0 (Kafka 0.8–0.9) and magic 1 (0.10, adds a
//! timestamp). Produce v0–2 carry them and Fetch v0–3 answer with them; the log holds only v2 batches, so the
//! broker converts up on append ([`message_set_to_batch`]) and down on fetch ([`batches_to_message_set`]).
//!
//! A message, big-endian: offset i64 · size i32 · crc u32 · magic i8 · attributes i8 · timestamp i64 (magic 1
//! only) · key (i32 length, -1 = null) · value (likewise). The CRC is plain CRC-32 (IEEE, not the batches'
//! CRC-32C) over magic..end. Attributes bits 0–2 are the codec (none, gzip, snappy, lz4; zstd came with magic 2)
//! and bit 3 (magic 1) the timestamp type. A compressed message is a *wrapper*: its value is a compressed
//! message set of inner messages. In magic 1 the inner offsets are relative (the wrapper carries the absolute
//! offset of the last inner message); in magic 0 they are absolute.
//!
//! Two codec quirks of old Kafka are kept: Java clients frame snappy the xerial way (written here, both read),
//! and Kafka before KIP-57 computed the lz4 frame's header checksum over the magic number too, which magic-0
//! readers expect (written that way for magic 0, either accepted).

use bytes::{BufMut, Bytes, BytesMut};

use super::builder::BatchBuilder;
use super::compression::{compress_into, inflate, Compression};
use super::{for_each_record, RecordError};
use crate::batch::BatchHeader;

pub const MAGIC_V0: i8 = 0;
pub const MAGIC_V1: i8 = 1;

/// Offset (8) and size (4) before every message: Kafka's `LOG_OVERHEAD`.
pub const LOG_OVERHEAD: usize = 12;
/// CRC (4), magic (1), attributes (1), key and value lengths (4 each): the smallest magic-0 message body.
const MESSAGE_OVERHEAD_V0: usize = 14;
/// Magic 1 adds the timestamp (8).
const MESSAGE_OVERHEAD_V1: usize = MESSAGE_OVERHEAD_V0 + 8;
/// Attributes bit 3 (magic 1): the timestamp is the broker's append time.
const ATTRIBUTE_LOG_APPEND_TIME: i8 = 0x08;
const ATTRIBUTES_CODEC_MASK: i8 = 0x07;
/// Java's `SnappyOutputStream` block size: old Java consumers read blocks of at most this.
const XERIAL_BLOCK_SIZE: usize = 32 << 10;

/// One message of a set, borrowed from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message<'a> {
    pub offset: i64,
    pub magic: i8,
    pub attributes: i8,
    /// -1 for magic 0 (no timestamp).
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
}

impl Message<'_> {
    pub fn compression(&self) -> Result<Compression, RecordError> {
        match Compression::from_attribute_bits(i16::from(self.attributes & ATTRIBUTES_CODEC_MASK))? {
            Compression::Zstd => Err(RecordError(format!(
                "magic {} message at offset {} is compressed with zstd, which needs magic 2",
                self.magic, self.offset
            ))),
            compression => Ok(compression),
        }
    }

    fn is_log_append_time(&self) -> bool {
        self.magic == MAGIC_V1 && self.attributes & ATTRIBUTE_LOG_APPEND_TIME != 0
    }
}

/// Why v2 batches could not be converted down: a batch that does not parse, or one whose codec the old
/// format cannot carry (zstd; Kafka answers UNSUPPORTED_COMPRESSION_TYPE).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConversionError {
    Corrupt(RecordError),
    UnsupportedCompression(Compression),
}

impl From<RecordError> for ConversionError {
    fn from(error: RecordError) -> ConversionError {
        ConversionError::Corrupt(error)
    }
}

impl std::fmt::Display for ConversionError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConversionError::Corrupt(error) => write!(formatter, "{error}"),
            ConversionError::UnsupportedCompression(compression) => {
                write!(formatter, "{compression} batches cannot be converted to message format v0 or v1")
            }
        }
    }
}

/// Reads the message at the front of `set`, checking its size, magic and CRC-32. `None` at the end of the set.
pub fn next_message<'a>(set: &mut &'a [u8]) -> Result<Option<Message<'a>>, RecordError> {
    if set.is_empty() {
        return Ok(None);
    }
    let Some((head, rest)) = set.split_first_chunk::<LOG_OVERHEAD>() else {
        return Err(RecordError(format!("message set ends with a partial message of {} bytes", set.len())));
    };
    let offset = i64::from_be_bytes(head[..8].try_into().unwrap_or_default());
    let size = i32::from_be_bytes(head[8..].try_into().unwrap_or_default());
    let Some((body, rest)) = usize::try_from(size).ok().and_then(|size| rest.split_at_checked(size)) else {
        return Err(RecordError(format!(
            "message at offset {offset} of {size} bytes runs past its set ({} bytes left)",
            rest.len()
        )));
    };
    *set = rest;
    parse_message_body(offset, body).map(Some)
}

fn parse_message_body(offset: i64, body: &[u8]) -> Result<Message<'_>, RecordError> {
    let short = || RecordError(format!("message at offset {offset} of {} bytes is truncated", body.len()));
    if body.len() < MESSAGE_OVERHEAD_V0 {
        return Err(short());
    }
    let crc = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
    let computed = crc32fast::hash(&body[4..]);
    if crc != computed {
        return Err(RecordError(format!(
            "message at offset {offset} has CRC-32 {crc:#010x}, its bytes give {computed:#010x}"
        )));
    }
    let magic = body[4] as i8;
    let attributes = body[5] as i8;
    let mut fields = &body[6..];
    let timestamp = match magic {
        MAGIC_V0 => -1,
        MAGIC_V1 => {
            let (timestamp, rest) = fields.split_first_chunk::<8>().ok_or_else(short)?;
            fields = rest;
            i64::from_be_bytes(*timestamp)
        }
        other => {
            return Err(RecordError(format!("message at offset {offset} has magic {other}, not 0 or 1")))
        }
    };
    let key = get_bytes(&mut fields).ok_or_else(short)?;
    let value = get_bytes(&mut fields).ok_or_else(short)?;
    if !fields.is_empty() {
        return Err(RecordError(format!(
            "message at offset {offset} has {} bytes past its value",
            fields.len()
        )));
    }
    Ok(Message { offset, magic, attributes, timestamp, key, value })
}

/// An i32 length (-1: null) and that many bytes; `None` when they run past `fields`.
fn get_bytes<'a>(fields: &mut &'a [u8]) -> Option<Option<&'a [u8]>> {
    let (length, rest) = fields.split_first_chunk::<4>()?;
    let length = i32::from_be_bytes(*length);
    if length < 0 {
        *fields = rest;
        return (length == -1).then_some(None);
    }
    let (bytes, rest) = rest.split_at_checked(length as usize)?;
    *fields = rest;
    Some(Some(bytes))
}

/// Appends one message. `timestamp` is ignored for magic 0.
pub fn put_message(
    output: &mut BytesMut,
    offset: i64,
    magic: i8,
    attributes: i8,
    timestamp: i64,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) {
    assert!(magic == MAGIC_V0 || magic == MAGIC_V1, "message sets are magic 0 or 1");
    let overhead = if magic == MAGIC_V0 { MESSAGE_OVERHEAD_V0 } else { MESSAGE_OVERHEAD_V1 };
    let size = overhead + key.map_or(0, <[u8]>::len) + value.map_or(0, <[u8]>::len);
    output.reserve(LOG_OVERHEAD + size);
    output.put_i64(offset);
    output.put_i32(i32::try_from(size).unwrap_or(i32::MAX));
    let crc_at = output.len();
    output.put_u32(0);
    output.put_i8(magic);
    output.put_i8(attributes);
    if magic == MAGIC_V1 {
        output.put_i64(timestamp);
    }
    for field in [key, value] {
        match field {
            Some(bytes) => {
                output.put_i32(i32::try_from(bytes.len()).unwrap_or(i32::MAX));
                output.put_slice(bytes);
            }
            None => output.put_i32(-1),
        }
    }
    let crc = crc32fast::hash(&output[crc_at + 4..]);
    output[crc_at..crc_at + 4].copy_from_slice(&crc.to_be_bytes());
    assert_eq!(output.len() - crc_at, size, "the message is as long as its size field says");
}

/// Calls `visit` with every message of `set`, the inner messages of compressed wrappers in place of their
/// wrapper. Inner messages' offsets are as written (relative in magic 1); a LogAppendTime wrapper's timestamp
/// replaces its inner messages'.
pub fn for_each_message(set: &[u8], mut visit: impl FnMut(&Message<'_>)) -> Result<(), RecordError> {
    let mut rest = set;
    while let Some(message) = next_message(&mut rest)? {
        let compression = message.compression()?;
        if compression == Compression::None {
            visit(&message);
            continue;
        }
        let inner_set = inflate_wrapper(&message, compression)?;
        let mut inner_rest = &inner_set[..];
        while let Some(mut inner) = next_message(&mut inner_rest)? {
            if inner.compression()? != Compression::None {
                return Err(RecordError(format!(
                    "wrapper message at offset {} holds a compressed message",
                    message.offset
                )));
            }
            if message.is_log_append_time() {
                inner.timestamp = message.timestamp;
                inner.attributes |= ATTRIBUTE_LOG_APPEND_TIME;
            }
            visit(&inner);
        }
    }
    Ok(())
}

fn inflate_wrapper(message: &Message<'_>, compression: Compression) -> Result<Vec<u8>, RecordError> {
    let payload = message.value.unwrap_or_default();
    if compression == Compression::Lz4 && message.magic == MAGIC_V0 {
        let mut fixed = payload.to_vec();
        set_lz4_header_checksum(&mut fixed, false)?;
        return inflate(compression, &fixed);
    }
    inflate(compression, payload)
}

/// Rewrites an lz4 frame's header checksum: Kafka's pre-KIP-57 value (over the magic number and descriptor)
/// when `broken`, else the frame format's (over the descriptor only).
fn set_lz4_header_checksum(frame: &mut [u8], broken: bool) -> Result<(), RecordError> {
    /// Magic (4), FLG (1), BD (1).
    const DESCRIPTOR_START: usize = 4;
    const FLAG_CONTENT_SIZE: u8 = 0x08;
    const FLAG_DICTIONARY_ID: u8 = 0x01;
    let flags = *frame.get(DESCRIPTOR_START).ok_or_else(|| RecordError("lz4 frame truncated".into()))?;
    let mut checksum_at = DESCRIPTOR_START + 2;
    if flags & FLAG_CONTENT_SIZE != 0 {
        checksum_at += 8;
    }
    if flags & FLAG_DICTIONARY_ID != 0 {
        checksum_at += 4;
    }
    if frame.len() <= checksum_at {
        return Err(RecordError(format!("lz4 frame of {} bytes has no header checksum", frame.len())));
    }
    let hashed = if broken { &frame[..checksum_at] } else { &frame[DESCRIPTOR_START..checksum_at] };
    frame[checksum_at] = (twox_hash::XxHash32::oneshot(0, hashed) >> 8) as u8;
    Ok(())
}

/// The compressed value of a wrapper message holding `inner_set`, in the framing old readers expect.
fn compress_wrapper(compression: Compression, magic: i8, inner_set: &[u8]) -> Result<Vec<u8>, RecordError> {
    let mut output = BytesMut::new();
    match compression {
        Compression::Snappy => {
            output.put_slice(b"\x82SNAPPY\x00");
            output.put_i32(1); // version
            output.put_i32(1); // minimum compatible version
            for block in inner_set.chunks(XERIAL_BLOCK_SIZE) {
                let compressed = snap::raw::Encoder::new()
                    .compress_vec(block)
                    .map_err(|error| RecordError(format!("cannot compress snappy block: {error}")))?;
                output.put_u32(u32::try_from(compressed.len()).unwrap_or(u32::MAX));
                output.put_slice(&compressed);
            }
        }
        Compression::Lz4 => {
            compress_into(compression, inner_set, &mut output)?;
            set_lz4_header_checksum(&mut output, magic == MAGIC_V0)?;
        }
        _ => compress_into(compression, inner_set, &mut output)?,
    }
    Ok(output.to_vec())
}

/// Converts a Produce v0–2 message set into one v2 batch (base offset 0: the log assigns offsets), compressed
/// with the codec of its wrapper messages (the last one's, should they differ), as Kafka's up-conversion does.
/// Timestamps are the messages' own (magic 1, CreateTime), else `now_ms` (magic 0 carries none; a
/// LogAppendTime message takes the broker's).
pub fn message_set_to_batch(set: &[u8], now_ms: i64) -> Result<Bytes, RecordError> {
    let mut compression = Compression::None;
    let mut rest = set;
    while let Some(message) = next_message(&mut rest)? {
        let codec = message.compression()?;
        if codec != Compression::None {
            compression = codec;
        }
    }
    let mut builder = BatchBuilder::new(compression, set.len());
    for_each_message(set, |message| {
        let timestamp = if message.magic == MAGIC_V0 || message.is_log_append_time() {
            now_ms
        } else {
            message.timestamp
        };
        builder.append(timestamp, message.key, message.value.as_ref().map(std::slice::from_ref));
    })?;
    if builder.is_empty() {
        return Err(RecordError(format!("message set of {} bytes holds no message", set.len())));
    }
    builder.finish(0)
}

/// Converts the v2 batches of `batches` (a read's result: a trailing partial batch is ignored) down to a
/// message set of `magic`, appended to `output`, as Kafka answers Fetch v0–3: control batches and records
/// below `offset_min` are left out, headers dropped, a compressed batch becomes one wrapper message of the same
/// codec. Whole messages are added while `output` stays within `size_max`; if not even the first fits, its
/// first `size_max` bytes are sent (old clients detect the partial message and fetch with a larger limit).
pub fn batches_to_message_set(
    batches: &[u8],
    magic: i8,
    offset_min: i64,
    size_max: usize,
    output: &mut BytesMut,
) -> Result<(), ConversionError> {
    let start = output.len();
    let mut rest = batches;
    while let Ok(header) = BatchHeader::parse(rest) {
        let Some((batch, after)) = rest.split_at_checked(header.total_size()) else { break };
        rest = after;
        if header.is_control() || header.last_offset().0 < offset_min {
            continue;
        }
        let compression = Compression::from_attribute_bits(header.compression())?;
        if compression == Compression::Zstd {
            return Err(ConversionError::UnsupportedCompression(compression));
        }
        let messages = convert_batch(batch, header, compression, magic, offset_min)?;
        let written = output.len() - start;
        if written + messages.len() > size_max {
            if written == 0 {
                output.put_slice(&messages[..size_max.min(messages.len())]);
            }
            break;
        }
        output.put_slice(&messages);
    }
    assert!(output.len() - start <= size_max);
    Ok(())
}

/// One v2 batch as messages of `magic`: one per record, or one wrapper around them when compressed.
fn convert_batch(
    batch: &[u8],
    header: &BatchHeader,
    compression: Compression,
    magic: i8,
    offset_min: i64,
) -> Result<BytesMut, RecordError> {
    let timestamp_type =
        if magic == MAGIC_V1 && header.is_log_append_time() { ATTRIBUTE_LOG_APPEND_TIME } else { 0 };
    let mut messages = BytesMut::with_capacity(batch.len() + 64);
    let mut first_offset = None;
    let mut last_offset = offset_min;
    for_each_record(batch, |record| {
        if record.offset < offset_min {
            return true;
        }
        let first = *first_offset.get_or_insert(record.offset);
        last_offset = record.offset;
        // Inside a magic-1 wrapper offsets are relative; the wrapper's own offset makes them absolute.
        let offset = if compression != Compression::None && magic == MAGIC_V1 {
            record.offset - first
        } else {
            record.offset
        };
        put_message(&mut messages, offset, magic, timestamp_type, record.timestamp, record.key, record.value);
        true
    })?;
    if compression == Compression::None || first_offset.is_none() {
        return Ok(messages);
    }
    let value = compress_wrapper(compression, magic, &messages)?;
    let mut wrapper = BytesMut::with_capacity(value.len() + LOG_OVERHEAD + MESSAGE_OVERHEAD_V1);
    let attributes = timestamp_type | compression.attribute_bits() as i8;
    put_message(&mut wrapper, last_offset, magic, attributes, header.max_timestamp.get(), None, Some(&value));
    Ok(wrapper)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::compression::tests::xerial;
    use std::io::Write;

    /// A message written field by field from the format description, independent of `put_message`.
    fn message(
        offset: i64,
        magic: i8,
        attributes: i8,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
    ) -> Vec<u8> {
        let mut body = vec![magic as u8, attributes as u8];
        if magic == 1 {
            body.extend_from_slice(&timestamp.to_be_bytes());
        }
        for field in [key, value] {
            match field {
                Some(bytes) => {
                    body.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
                    body.extend_from_slice(bytes);
                }
                None => body.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&body);
        let mut framed = offset.to_be_bytes().to_vec();
        framed.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
        framed.extend_from_slice(&hasher.finalize().to_be_bytes());
        framed.extend_from_slice(&body);
        framed
    }

    /// Three inner messages: a keyed one, a null key, a null value (tombstone).
    fn inner_set(magic: i8, relative: bool) -> Vec<u8> {
        let base = if relative { 0 } else { 40 };
        [
            message(base, magic, 0, 1_000, Some(b"k0"), Some(b"v0")),
            message(base + 1, magic, 0, 1_001, None, Some(b"v1")),
            message(base + 2, magic, 0, 1_002, Some(b"k2"), None),
        ]
        .concat()
    }

    /// The compressed payload of a wrapper, as old producers wrote it for `magic`.
    fn compressed(compression: Compression, magic: i8, data: &[u8]) -> Vec<u8> {
        match compression {
            Compression::Gzip => {
                let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                encoder.write_all(data).unwrap();
                encoder.finish().unwrap()
            }
            Compression::Snappy => xerial(data, 1024),
            Compression::Lz4 => {
                let mut encoder = lz4_flex::frame::FrameEncoder::new(Vec::new());
                encoder.write_all(data).unwrap();
                let mut frame = encoder.finish().unwrap();
                if magic == 0 {
                    // Pre-KIP-57 Kafka: the header checksum covers the magic number too (no flags set: 6 bytes).
                    assert_eq!(frame[4] & 0x09, 0);
                    frame[6] = (twox_hash::XxHash32::oneshot(0, &frame[..6]) >> 8) as u8;
                }
                frame
            }
            other => panic!("{other} has no old-format framing here"),
        }
    }

    /// Every (offset, timestamp, key, value) of a v2 batch.
    type Owned = (i64, i64, Option<Vec<u8>>, Option<Vec<u8>>);
    fn batch_records(batch: &[u8]) -> Vec<Owned> {
        let mut records = Vec::new();
        for_each_record(batch, |record| {
            records.push((
                record.offset,
                record.timestamp,
                record.key.map(<[u8]>::to_vec),
                record.value.map(<[u8]>::to_vec),
            ));
            true
        })
        .unwrap();
        records
    }

    fn expected(timestamps: [i64; 3]) -> Vec<Owned> {
        vec![
            (0, timestamps[0], Some(b"k0".to_vec()), Some(b"v0".to_vec())),
            (1, timestamps[1], None, Some(b"v1".to_vec())),
            (2, timestamps[2], Some(b"k2".to_vec()), None),
        ]
    }

    const NOW: i64 = 7_777;

    #[test]
    fn uncompressed_message_sets_become_one_v2_batch() {
        // Proves both magics convert up with keys, nulls and timestamps (magic 0 takes the broker's clock).
        for (magic, timestamps) in [(0, [NOW; 3]), (1, [1_000, 1_001, 1_002])] {
            let batch = message_set_to_batch(&inner_set(magic, false), NOW).unwrap();
            crate::batch::validate_batch(&batch).unwrap();
            let header = BatchHeader::parse(&batch).unwrap();
            assert_eq!(header.compression(), 0);
            assert_eq!(header.record_count.get(), 3);
            assert_eq!(batch_records(&batch), expected(timestamps), "magic {magic}");
        }
    }

    #[test]
    fn compressed_wrappers_convert_up_keeping_their_codec() {
        // Proves gzip, xerial and raw snappy, lz4 (with magic 0's broken header checksum) wrappers unwrap into
        // a v2 batch of the same codec, for both magics.
        for magic in [0i8, 1] {
            for compression in [Compression::Gzip, Compression::Snappy, Compression::Lz4] {
                let inner = inner_set(magic, magic == 1);
                let attributes = compression.attribute_bits() as i8;
                let mut payloads = vec![compressed(compression, magic, &inner)];
                if compression == Compression::Snappy {
                    payloads.push(snap::raw::Encoder::new().compress_vec(&inner).unwrap());
                }
                for payload in payloads {
                    let set = message(2, magic, attributes, 1_002, None, Some(&payload));
                    let batch = message_set_to_batch(&set, NOW).unwrap();
                    crate::batch::validate_batch(&batch).unwrap();
                    let header = BatchHeader::parse(&batch).unwrap();
                    assert_eq!(
                        header.compression(),
                        compression.attribute_bits(),
                        "{compression} magic {magic}"
                    );
                    let timestamps = if magic == 0 { [NOW; 3] } else { [1_000, 1_001, 1_002] };
                    assert_eq!(batch_records(&batch), expected(timestamps), "{compression} magic {magic}");
                }
            }
        }
    }

    #[test]
    fn a_log_append_time_wrapper_takes_the_broker_clock() {
        // Proves inner timestamps of a LogAppendTime wrapper are not taken as the records' create times.
        let payload = compressed(Compression::Gzip, 1, &inner_set(1, true));
        let set = message(2, 1, 0x08 | 1, 5, None, Some(&payload));
        let batch = message_set_to_batch(&set, NOW).unwrap();
        assert_eq!(batch_records(&batch), expected([NOW; 3]));
    }

    #[test]
    fn damaged_message_sets_are_refused() {
        // Proves a bad CRC, truncation, an unknown magic, zstd, nested compression and emptiness are errors.
        let good = inner_set(1, false);
        let mut bad_crc = good.clone();
        let last = bad_crc.len() - 1;
        bad_crc[last] ^= 1;
        assert!(message_set_to_batch(&bad_crc, NOW).unwrap_err().0.contains("CRC-32"));
        assert!(message_set_to_batch(&good[..good.len() - 3], NOW).is_err());
        assert!(message_set_to_batch(&message(0, 2, 0, 0, None, Some(b"x")), NOW).is_err());
        assert!(message_set_to_batch(&message(0, 1, 4, 0, None, Some(b"x")), NOW)
            .unwrap_err()
            .0
            .contains("zstd"));
        let nested_inner = message(0, 1, 1, 0, None, Some(&compressed(Compression::Gzip, 1, &good)));
        let nested = message(0, 1, 1, 0, None, Some(&compressed(Compression::Gzip, 1, &nested_inner)));
        assert!(message_set_to_batch(&nested, NOW).is_err());
        assert!(message_set_to_batch(&[], NOW).is_err());
        assert!(message_set_to_batch(&message(0, 1, 1, 0, None, Some(b"not gzip")), NOW).is_err());
    }

    /// A hand-written reader of message sets: (absolute offset, timestamp, key, value) per message, inner
    /// offsets resolved, every CRC checked; also the codec of each top-level message.
    fn read_message_set(set: &[u8], magic: i8) -> (Vec<Owned>, Vec<i8>) {
        let mut messages = Vec::new();
        let mut codecs = Vec::new();
        let mut rest = set;
        while !rest.is_empty() {
            let offset = i64::from_be_bytes(rest[..8].try_into().unwrap());
            let size = i32::from_be_bytes(rest[8..12].try_into().unwrap()) as usize;
            let body = &rest[12..12 + size];
            rest = &rest[12 + size..];
            assert_eq!(u32::from_be_bytes(body[..4].try_into().unwrap()), crc32fast::hash(&body[4..]));
            assert_eq!(body[4] as i8, magic);
            let attributes = body[5] as i8;
            let timestamp = if magic == 1 { i64::from_be_bytes(body[6..14].try_into().unwrap()) } else { -1 };
            let mut fields = &body[if magic == 1 { 14 } else { 6 }..];
            let key = get_bytes(&mut fields).unwrap().map(<[u8]>::to_vec);
            let value = get_bytes(&mut fields).unwrap().map(<[u8]>::to_vec);
            codecs.push(attributes & 7);
            if attributes & 7 == 0 {
                messages.push((offset, timestamp, key, value));
                continue;
            }
            let payload = value.unwrap();
            let inflated = match attributes & 7 {
                1 => {
                    let mut out = Vec::new();
                    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&payload[..]), &mut out)
                        .unwrap();
                    out
                }
                2 => {
                    assert!(payload.starts_with(b"\x82SNAPPY\x00"), "old clients get xerial framing");
                    inflate(Compression::Snappy, &payload).unwrap()
                }
                3 => {
                    let expected_checksum = if magic == 0 {
                        twox_hash::XxHash32::oneshot(0, &payload[..6])
                    } else {
                        twox_hash::XxHash32::oneshot(0, &payload[4..6])
                    };
                    assert_eq!(
                        payload[6],
                        (expected_checksum >> 8) as u8,
                        "magic {magic} lz4 header checksum"
                    );
                    let mut fixed = payload.clone();
                    fixed[6] = (twox_hash::XxHash32::oneshot(0, &payload[4..6]) >> 8) as u8;
                    inflate(Compression::Lz4, &fixed).unwrap()
                }
                other => panic!("codec {other}"),
            };
            let (inner, _) = read_message_set(&inflated, magic);
            let last_inner = inner.last().unwrap().0;
            for (inner_offset, inner_timestamp, key, value) in inner {
                let absolute = if magic == 1 { offset - last_inner + inner_offset } else { inner_offset };
                messages.push((absolute, inner_timestamp, key, value));
            }
        }
        (messages, codecs)
    }

    /// Two v2 batches at offsets 10.. and 13.. of `compression`.
    fn log_batches(compression: Compression) -> Vec<u8> {
        let mut log = Vec::new();
        for (base, first_timestamp) in [(10i64, 2_000i64), (13, 3_000)] {
            let mut builder = BatchBuilder::new(compression, 256);
            builder.append(first_timestamp, Some(b"k0"), Some(&[b"v0"]));
            builder.append(first_timestamp + 1, None, Some(&[b"v1"]));
            builder.append(first_timestamp + 2, Some(b"k2"), None);
            let mut batch = builder.finish(0).unwrap().to_vec();
            crate::batch::stamp_batch(&mut batch, crate::types::Offset(base), 0);
            log.extend_from_slice(&batch);
        }
        log
    }

    fn log_expected(magic: i8) -> Vec<Owned> {
        let timestamp = |t: i64| if magic == 1 { t } else { -1 };
        let mut all = Vec::new();
        for (base, first) in [(10i64, 2_000i64), (13, 3_000)] {
            all.push((base, timestamp(first), Some(b"k0".to_vec()), Some(b"v0".to_vec())));
            all.push((base + 1, timestamp(first + 1), None, Some(b"v1".to_vec())));
            all.push((base + 2, timestamp(first + 2), Some(b"k2".to_vec()), None));
        }
        all
    }

    #[test]
    fn v2_batches_convert_down_with_every_old_codec() {
        // Proves down-conversion to magic 0 and 1 keeps offsets, keys, values, timestamps (magic 1) and the
        // codec (one wrapper per batch, in the framing old readers expect), with valid CRC-32s.
        for magic in [0i8, 1] {
            for compression in [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4] {
                let log = log_batches(compression);
                let mut output = BytesMut::new();
                batches_to_message_set(&log, magic, 0, usize::MAX, &mut output).unwrap();
                let (messages, codecs) = read_message_set(&output, magic);
                assert_eq!(messages, log_expected(magic), "{compression} magic {magic}");
                let wrappers = if compression == Compression::None { 6 } else { 2 };
                assert_eq!(codecs, vec![compression.attribute_bits() as i8; wrappers]);
            }
        }
    }

    #[test]
    fn down_conversion_honours_the_fetch_offset_and_size_limit() {
        // Proves records below the fetch offset are left out, whole messages stop at the limit, a first message
        // larger than the limit is sent partially, a trailing partial batch is ignored, and zstd is refused.
        let log = log_batches(Compression::None);
        let mut output = BytesMut::new();
        batches_to_message_set(&log[..log.len() - 5], 1, 11, usize::MAX, &mut output).unwrap();
        let (messages, _) = read_message_set(&output, 1);
        assert_eq!(messages, log_expected(1)[1..3].to_vec());

        let one_message = LOG_OVERHEAD + MESSAGE_OVERHEAD_V1 + 4;
        let mut output = BytesMut::new();
        batches_to_message_set(&log, 1, 0, one_message * 2 + 10, &mut output).unwrap();
        // The first batch's three messages do not fit together, so nothing of it beyond a partial is sent.
        assert_eq!(output.len(), one_message * 2 + 10);
        let mut output = BytesMut::new();
        batches_to_message_set(&log, 1, 0, one_message * 3 + 4, &mut output).unwrap();
        assert_eq!(read_message_set(&output, 1).0, log_expected(1)[..3].to_vec());

        let zstd = log_batches(Compression::Zstd);
        assert_eq!(
            batches_to_message_set(&zstd, 1, 0, usize::MAX, &mut BytesMut::new()),
            Err(ConversionError::UnsupportedCompression(Compression::Zstd))
        );
    }

    #[test]
    fn message_sets_round_trip_through_the_log_format() {
        // Proves up- then down-conversion gives back the producer's messages, with every old codec.
        for compression in [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4] {
            let inner = inner_set(1, true);
            let set = if compression == Compression::None {
                inner.clone()
            } else {
                message(
                    2,
                    1,
                    compression.attribute_bits() as i8,
                    1_002,
                    None,
                    Some(&compressed(compression, 1, &inner)),
                )
            };
            let mut batch = message_set_to_batch(&set, NOW).unwrap().to_vec();
            crate::batch::stamp_batch(&mut batch, crate::types::Offset(100), 0);
            let mut output = BytesMut::new();
            batches_to_message_set(&batch, 1, 0, usize::MAX, &mut output).unwrap();
            let got = read_message_set(&output, 1).0;
            let want: Vec<Owned> =
                expected([1_000, 1_001, 1_002]).into_iter().map(|(o, t, k, v)| (o + 100, t, k, v)).collect();
            assert_eq!(got, want, "{compression}");
        }
    }
}
