//! The batch compression codecs (attributes bits 0–2): compressing a builder's records, and inflating a batch's
//! payload with its size bounded, so that a small batch cannot make its reader allocate without limit.

use std::io::{Read, Write};

use bytes::{BufMut, BytesMut};

use super::RecordError;

/// A batch that inflates past this is refused: a zip bomb must not exhaust a shard's memory. Producers seal a
/// batch at `batch.size` (16 KiB by default) of *uncompressed* records and the broker accepts at most
/// `message.max.bytes` (1 MiB by default) per batch, so no client's batch comes near 256 MiB inflated, while a
/// few concurrent inflations of this size still fit beside a shard's cache.
pub const INFLATED_SIZE_MAX: usize = 256 << 20;

/// Compression codecs, numbered as in batch attributes bits 0–2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

const ATTRIBUTES_COMPRESSION_MASK: i16 = 0x7;

impl Compression {
    pub const ALL: [Compression; 5] =
        [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd];
    /// Kafka's `compression.type` names, in `ALL`'s order.
    pub const NAMES: [&'static str; 5] = ["none", "gzip", "snappy", "lz4", "zstd"];

    pub fn attribute_bits(self) -> i16 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }

    /// The codec of a batch's `attributes` (only bits 0–2 are read).
    pub fn from_attribute_bits(attributes: i16) -> Result<Compression, RecordError> {
        let bits = attributes & ATTRIBUTES_COMPRESSION_MASK;
        Compression::ALL
            .get(bits as usize)
            .copied()
            .ok_or_else(|| RecordError(format!("unknown compression codec {bits}")))
    }

    pub fn name(self) -> &'static str {
        Compression::NAMES[self.attribute_bits() as usize]
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.name())
    }
}

impl std::str::FromStr for Compression {
    type Err = RecordError;

    fn from_str(name: &str) -> Result<Compression, RecordError> {
        let index = Compression::NAMES.iter().position(|known| *known == name).ok_or_else(|| {
            RecordError(format!("unknown compression {name:?}, expected one of {:?}", Compression::NAMES))
        })?;
        Ok(Compression::ALL[index])
    }
}

/// Appends `records` compressed with `compression` to `output`. Compression failure is an operating error (an
/// encoder may run out of memory), never a panic.
pub(crate) fn compress_into(
    compression: Compression,
    records: &[u8],
    output: &mut BytesMut,
) -> Result<(), RecordError> {
    let error = |codec: &str, reason: String| RecordError(format!("cannot compress {codec} batch: {reason}"));
    let mut writer = output.writer();
    match compression {
        Compression::None => writer.write_all(records).map_err(|e| error("uncompressed", e.to_string()))?,
        Compression::Gzip => {
            let mut encoder = flate2::write::GzEncoder::new(writer, flate2::Compression::fast());
            encoder.write_all(records).map_err(|e| error("gzip", e.to_string()))?;
            encoder.finish().map_err(|e| error("gzip", e.to_string()))?;
        }
        Compression::Snappy => {
            // Raw snappy, as librdkafka writes it; every Kafka reader accepts it besides the xerial framing.
            let compressed = snap::raw::Encoder::new()
                .compress_vec(records)
                .map_err(|e| error("snappy", e.to_string()))?;
            writer.write_all(&compressed).map_err(|e| error("snappy", e.to_string()))?;
        }
        Compression::Lz4 => {
            let mut encoder = lz4_flex::frame::FrameEncoder::new(writer);
            encoder.write_all(records).map_err(|e| error("lz4", e.to_string()))?;
            encoder.finish().map_err(|e| error("lz4", e.to_string()))?;
        }
        Compression::Zstd => {
            let compressed = zstd::bulk::compress(records, 3).map_err(|e| error("zstd", e.to_string()))?;
            writer.write_all(&compressed).map_err(|e| error("zstd", e.to_string()))?;
        }
    }
    Ok(())
}

/// The records of a compressed batch payload, refused when they would inflate past [`INFLATED_SIZE_MAX`].
pub fn inflate(compression: Compression, payload: &[u8]) -> Result<Vec<u8>, RecordError> {
    inflate_bounded(compression, payload, INFLATED_SIZE_MAX)
}

/// [`inflate`] with the bound as an argument, so that tests can reach it without building a 256 MiB bomb.
pub(crate) fn inflate_bounded(
    compression: Compression,
    payload: &[u8],
    inflated_size_max: usize,
) -> Result<Vec<u8>, RecordError> {
    // Records compress about fourfold; starting there saves the decoder most of its regrowth.
    let mut output = Vec::with_capacity(payload.len().saturating_mul(4).min(inflated_size_max));
    // One byte past the bound is read so that "exactly at the bound" and "past it" can be told apart.
    let read_limit = inflated_size_max as u64 + 1;
    let read_bounded =
        |decoder: &mut dyn Read, output: &mut Vec<u8>| decoder.take(read_limit).read_to_end(output);
    let result = match compression {
        Compression::None => read_bounded(&mut &payload[..], &mut output),
        Compression::Gzip => read_bounded(&mut flate2::read::GzDecoder::new(payload), &mut output),
        Compression::Lz4 => read_bounded(&mut lz4_flex::frame::FrameDecoder::new(payload), &mut output),
        Compression::Zstd => zstd::stream::read::Decoder::new(payload)
            .and_then(|mut decoder| read_bounded(&mut decoder, &mut output)),
        Compression::Snappy => inflate_snappy(payload, inflated_size_max, &mut output)
            .map(|()| output.len())
            .map_err(std::io::Error::other),
    };
    if let Err(reason) = result {
        return Err(RecordError(format!(
            "cannot inflate {compression} batch of {} bytes: {reason}",
            payload.len()
        )));
    }
    if output.len() > inflated_size_max {
        return Err(RecordError(format!(
            "{compression} batch of {} bytes inflates past {inflated_size_max} bytes",
            payload.len()
        )));
    }
    Ok(output)
}

/// Kafka's Java client frames snappy the xerial way (a 16-byte header, then big-endian length-prefixed raw
/// blocks); librdkafka writes one raw block. Both are accepted. Each block's inflated size is read from its
/// preamble and checked before anything is allocated for it.
fn inflate_snappy(payload: &[u8], inflated_size_max: usize, output: &mut Vec<u8>) -> Result<(), String> {
    const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";
    /// Magic (8), version (4), minimum compatible version (4).
    const XERIAL_HEADER_SIZE: usize = 16;
    let inflate_block = |block: &[u8], output: &mut Vec<u8>| -> Result<(), String> {
        let size = snap::raw::decompress_len(block).map_err(|e| e.to_string())?;
        if output.len().saturating_add(size) > inflated_size_max {
            return Err(format!("stream inflates past {inflated_size_max} bytes"));
        }
        let start = output.len();
        output.resize(start + size, 0);
        let written =
            snap::raw::Decoder::new().decompress(block, &mut output[start..]).map_err(|e| e.to_string())?;
        output.truncate(start + written);
        Ok(())
    };
    if !payload.starts_with(XERIAL_MAGIC) {
        return inflate_block(payload, output);
    }
    let mut rest = payload.get(XERIAL_HEADER_SIZE..).ok_or("xerial header truncated")?;
    while !rest.is_empty() {
        let Some((size, after)) = rest.split_first_chunk::<4>() else {
            return Err(format!("xerial block size truncated to {} bytes", rest.len()));
        };
        let size = u32::from_be_bytes(*size) as usize;
        let Some((block, after)) = after.split_at_checked(size) else {
            return Err(format!("xerial block of {size} bytes runs past the batch ({} left)", after.len()));
        };
        inflate_block(block, output)?;
        rest = after;
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The xerial framing of `records`, split into blocks of `block_size` as the Java client does.
    pub(crate) fn xerial(records: &[u8], block_size: usize) -> Vec<u8> {
        let mut framed = b"\x82SNAPPY\x00".to_vec();
        framed.extend_from_slice(&1i32.to_be_bytes()); // version
        framed.extend_from_slice(&1i32.to_be_bytes()); // minimum compatible version
        for block in records.chunks(block_size) {
            let compressed = snap::raw::Encoder::new().compress_vec(block).unwrap();
            framed.extend_from_slice(&(compressed.len() as u32).to_be_bytes());
            framed.extend_from_slice(&compressed);
        }
        framed
    }

    #[test]
    fn every_codec_inflates_what_it_compressed() {
        // Proves compress_into and inflate are inverses for each codec, xerial snappy included.
        let records: Vec<u8> = (0..100_000u32).map(|index| (index % 97) as u8).collect();
        for compression in Compression::ALL {
            let mut compressed = BytesMut::new();
            compress_into(compression, &records, &mut compressed).unwrap();
            assert_eq!(inflate(compression, &compressed).unwrap(), records, "{compression}");
        }
        assert_eq!(inflate(Compression::Snappy, &xerial(&records, 32 << 10)).unwrap(), records);
    }

    #[test]
    fn decompression_bombs_are_refused_by_every_codec() {
        // Proves a payload that inflates one byte past the bound is refused, and one that reaches it exactly is
        // not, for every codec (the bound is small here; `records` tests the real one).
        let bound = 64 << 10;
        for compression in Compression::ALL.into_iter().skip(1) {
            for (size, accepted) in [(bound, true), (bound + 1, false), (bound * 64, false)] {
                let zeros = vec![0u8; size];
                let mut compressed = BytesMut::new();
                compress_into(compression, &zeros, &mut compressed).unwrap();
                let result = inflate_bounded(compression, &compressed, bound);
                assert_eq!(result.is_ok(), accepted, "{compression} inflating to {size}: {result:?}");
            }
        }
        let bomb = xerial(&vec![0u8; bound * 4], 32 << 10);
        assert!(inflate_bounded(Compression::Snappy, &bomb, bound).is_err());
    }

    #[test]
    fn truncated_or_garbage_payloads_are_errors() {
        // Proves a damaged payload is an error for every codec, never a panic.
        let records = vec![5u8; 10_000];
        for compression in Compression::ALL.into_iter().skip(1) {
            let mut compressed = BytesMut::new();
            compress_into(compression, &records, &mut compressed).unwrap();
            let half = &compressed[..compressed.len() / 2];
            assert!(inflate(compression, half).is_err(), "{compression} truncated");
            assert!(inflate(compression, &[0xa5; 64]).is_err(), "{compression} garbage");
        }
        let framed = xerial(&records, 4096);
        assert!(inflate(Compression::Snappy, &framed[..framed.len() - 3]).is_err());
        assert!(inflate(Compression::Snappy, &framed[..18]).is_err());
    }

    #[test]
    fn names_and_attribute_bits_round_trip() {
        // Proves the codec numbering of the attributes and the `compression.type` names agree with ALL.
        for compression in Compression::ALL {
            assert_eq!(Compression::from_attribute_bits(compression.attribute_bits()).unwrap(), compression);
            assert_eq!(compression.name().parse::<Compression>().unwrap(), compression);
        }
        // Bits above 2 belong to other attributes (timestamp type, transactional, control).
        assert_eq!(Compression::from_attribute_bits(0x28 | 3).unwrap(), Compression::Lz4);
        assert!(Compression::from_attribute_bits(5).is_err());
        assert!("brotli".parse::<Compression>().is_err());
    }
}
