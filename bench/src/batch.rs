//! Reading the record batches of a Fetch response: walk the concatenated batches, verify each CRC if asked, and
//! hand every record's value to a callback — which is how consumers find the send timestamp in the payload.
//! Batches are built, and records parsed and inflated, by `sluice_storage::records`, the codec the broker uses.

use sluice_storage::batch::{complete_batches, validate_batch, validate_batch_header};
use sluice_storage::records::{for_each_record, RecordError};
use sluice_storage::BatchHeader;

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

/// Walks the complete batches at the front of `data`, calling `on_value` with each record's offset and value (an
/// empty slice for a null value). Returns the summaries of the batches read.
pub fn read_batches(
    data: &[u8],
    verify_crc: bool,
    mut on_value: impl FnMut(i64, &[u8]),
) -> Result<Vec<BatchSummary>, RecordError> {
    let mut summaries = Vec::new();
    for batch in complete_batches(data) {
        let (header, size) = if verify_crc { validate_batch(batch)? } else { validate_batch_header(batch)? };
        // Control batches carry transaction markers, not application records.
        if !header.is_control() {
            for_each_record(batch, |record| {
                on_value(record.offset, record.value.unwrap_or_default());
                true
            })?;
        }
        summaries.push(BatchSummary {
            base_offset: header.base_offset.get(),
            last_offset_delta: header.last_offset_delta.get(),
            record_count: header.record_count.get(),
            size,
        });
    }
    Ok(summaries)
}

/// The offset after the last complete batch at the front of `data`, from the batch headers alone (no record is
/// parsed): where the next fetch of that partition starts. None when `data` holds no complete batch.
pub fn next_offset_after(data: &[u8]) -> Option<i64> {
    let last = complete_batches(data).last()?;
    BatchHeader::parse(last).ok().map(|header| header.last_offset().next().0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use sluice_storage::records::{BatchBuilder, Compression};

    fn build(compression: Compression, values: &[&[u8]], keys: &[Option<&[u8]>]) -> Bytes {
        let mut builder = BatchBuilder::new(compression, 1024);
        for (value, key) in values.iter().zip(keys) {
            let (prefix, rest) = value.split_at(value.len().min(3));
            builder.append(1_700_000_000_000, *key, Some(&[prefix, rest]));
        }
        builder.finish(1024).unwrap()
    }

    #[test]
    fn batch_round_trips_with_every_codec_and_a_valid_crc() {
        // Proves that what the builder writes, the reader returns unchanged, for each codec, with the CRC checked.
        let values: Vec<Vec<u8>> = (0..50).map(|index| vec![index as u8; 10 + index * 7]).collect();
        let value_refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
        let keys: Vec<Option<&[u8]>> =
            (0..50).map(|index| if index % 2 == 0 { Some(&b"key"[..]) } else { None }).collect();
        for compression in Compression::ALL {
            let batch = build(compression, &value_refs, &keys);
            let mut seen = Vec::new();
            let summaries =
                read_batches(&batch, true, |offset, value| seen.push((offset, value.to_vec()))).unwrap();
            assert_eq!(summaries.len(), 1, "{compression:?}");
            assert_eq!(summaries[0].record_count, 50);
            assert_eq!(summaries[0].next_offset(), 50);
            assert_eq!(summaries[0].size, batch.len());
            assert_eq!(next_offset_after(&batch), Some(50));
            assert_eq!(seen.len(), 50);
            for (index, (offset, value)) in seen.iter().enumerate() {
                assert_eq!(*offset, index as i64);
                assert_eq!(value, &values[index], "{compression:?} record {index}");
            }
        }
    }

    #[test]
    fn corrupted_byte_fails_the_crc() {
        // Proves the reader rejects a batch whose CRC-covered bytes changed, and reads it when told not to check.
        let batch = build(Compression::None, &[b"payload-bytes"], &[None]);
        let mut corrupt = batch.to_vec();
        let last = corrupt.len() - 2;
        corrupt[last] ^= 0xff;
        let error = read_batches(&corrupt, true, |_, _| {}).unwrap_err();
        assert!(error.0.contains("CRC-32C mismatch"), "{error}");
        assert_eq!(read_batches(&corrupt, false, |_, _| {}).unwrap().len(), 1);
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
        assert_eq!(next_offset_after(&data), Some(1));
        assert_eq!(next_offset_after(&data[..40]), None);
    }

    #[test]
    fn a_length_below_the_header_is_an_error() {
        // Proves a batch whose length cannot hold its own header is refused rather than skipped or looped on.
        let mut batch = build(Compression::None, &[b"one"], &[None]).to_vec();
        batch[8..12].copy_from_slice(&10i32.to_be_bytes());
        assert!(read_batches(&batch, false, |_, _| {}).is_err());
    }
}
