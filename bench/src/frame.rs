//! A request buffer that lets `kafka-protocol` encode a Produce request without copying its record batches.
//!
//! The codec writes every `bytes` field with `put_slice`. This buffer knows the batches the request carries (they
//! are `Bytes` the producer built); when `put_slice` is handed exactly one of them — same address, same length — it
//! ends the current envelope chunk and keeps a reference to the batch instead of copying it. The frame is then one
//! vectored write of envelope chunks and batches. At 1 GB/s that is one memcpy of every produced byte saved, on two
//! cores the load generator shares with the broker.

use std::io::{self, IoSlice, Write};

use bytes::buf::UninitSlice;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::protocol::buf::ByteBufMut;

/// Slices shorter than this are copied: referencing them would cost more than the copy.
const BORROW_SIZE_MIN: usize = 1024;

#[derive(Default)]
pub struct SegmentedFrame {
    /// The envelope bytes written since the last borrowed batch.
    head: BytesMut,
    /// Finished envelope chunks and borrowed batches, in frame order.
    segments: Vec<Bytes>,
    /// Bytes in `segments`.
    segments_size: usize,
    /// Batches that may be borrowed rather than copied.
    borrowable: Vec<Bytes>,
}

impl SegmentedFrame {
    pub fn clear(&mut self) {
        self.head.clear();
        self.segments.clear();
        self.segments_size = 0;
        self.borrowable.clear();
    }

    /// Registers a batch the next encode may reference instead of copying.
    pub fn allow_borrow(&mut self, batch: &Bytes) {
        self.borrowable.push(batch.clone());
    }

    pub fn len(&self) -> usize {
        self.segments_size + self.head.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Overwrites bytes already written to the current envelope chunk (the frame's size prefix).
    pub fn head_mut(&mut self) -> &mut [u8] {
        &mut self.head
    }

    /// Writes the whole frame with as few system calls as the kernel allows.
    pub fn write_to(&mut self, stream: &mut impl Write) -> io::Result<()> {
        let tail = self.head.split().freeze();
        let mut slices: Vec<IoSlice<'_>> = self
            .segments
            .iter()
            .chain(std::iter::once(&tail))
            .filter(|segment| !segment.is_empty())
            .map(|segment| IoSlice::new(segment))
            .collect();
        let mut remaining: &mut [IoSlice<'_>] = &mut slices;
        while !remaining.is_empty() {
            let written = stream.write_vectored(remaining)?;
            if written == 0 {
                return Err(io::Error::new(io::ErrorKind::WriteZero, "socket accepted no bytes"));
            }
            IoSlice::advance_slices(&mut remaining, written);
        }
        Ok(())
    }

    fn end_head(&mut self) {
        if !self.head.is_empty() {
            let chunk = self.head.split().freeze();
            self.segments_size += chunk.len();
            self.segments.push(chunk);
        }
    }
}

// SAFETY: every method delegates to the inner `BytesMut`, which upholds BufMut's contract; `put_slice` either
// delegates or appends a whole initialised `Bytes` to `segments`, which `chunk_mut` never exposes.
unsafe impl BufMut for SegmentedFrame {
    fn remaining_mut(&self) -> usize {
        self.head.remaining_mut()
    }

    unsafe fn advance_mut(&mut self, count: usize) {
        // SAFETY: the caller initialised `count` bytes of the chunk `chunk_mut` returned, which is `head`'s.
        unsafe { self.head.advance_mut(count) }
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        self.head.chunk_mut()
    }

    fn put_slice(&mut self, source: &[u8]) {
        if source.len() >= BORROW_SIZE_MIN {
            let found = self
                .borrowable
                .iter()
                .position(|batch| batch.as_ptr() == source.as_ptr() && batch.len() == source.len());
            if let Some(index) = found {
                let batch = self.borrowable.swap_remove(index);
                self.end_head();
                self.segments_size += batch.len();
                self.segments.push(batch);
                return;
            }
        }
        self.head.extend_from_slice(source);
    }
}

impl ByteBufMut for SegmentedFrame {
    fn offset(&self) -> usize {
        self.len()
    }

    fn seek(&mut self, offset: usize) {
        // The Produce, Fetch and admin request encoders never seek; only record-batch encoding (which we do not
        // use) does. Seeking inside the current chunk still works.
        assert!(offset >= self.segments_size, "seek into a finished segment at {offset}");
        self.head.seek(offset - self.segments_size);
    }

    fn range(&mut self, range: std::ops::Range<usize>) -> &mut [u8] {
        assert!(range.start >= self.segments_size, "range into a finished segment at {}", range.start);
        let shift = self.segments_size;
        self.head.range(range.start - shift..range.end - shift)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::ProduceRequest;
    use kafka_protocol::protocol::{Encodable, StrBytes};
    use sluice_storage::records::{BatchBuilder, Compression};

    #[test]
    fn borrowed_encoding_matches_copied_encoding_byte_for_byte() {
        // Proves the segmented frame writes exactly what kafka-protocol writes into a plain buffer, for a flexible
        // and a non-flexible Produce version, while actually borrowing the batches.
        let batches: Vec<Bytes> = (0..3)
            .map(|index| {
                let mut builder = BatchBuilder::new(Compression::None, 4096);
                for _ in 0..10 {
                    builder.append(1, None, Some(&[&[index as u8; 8], &[7u8; 500]]));
                }
                builder.finish(4096).unwrap()
            })
            .collect();
        let mut topic = TopicProduceData::default();
        topic.name = kafka_protocol::messages::TopicName(StrBytes::from_static_str("topic"));
        for (index, batch) in batches.iter().enumerate() {
            let mut partition = PartitionProduceData::default();
            partition.index = index as i32;
            partition.records = Some(batch.clone());
            topic.partition_data.push(partition);
        }
        let mut request = ProduceRequest::default();
        request.acks = -1;
        request.timeout_ms = 1000;
        request.topic_data = vec![topic];
        for version in [7, 9, 11] {
            let mut plain = BytesMut::new();
            request.encode(&mut plain, version).unwrap();
            let mut frame = SegmentedFrame::default();
            for batch in &batches {
                frame.allow_borrow(batch);
            }
            request.encode(&mut frame, version).unwrap();
            assert!(frame.segments.len() >= 3, "batches were borrowed (v{version})");
            assert_eq!(frame.len(), plain.len());
            let mut written = Vec::new();
            frame.write_to(&mut written).unwrap();
            assert_eq!(written, plain.to_vec(), "v{version}");
        }
    }
}
