//! The cost of message formats v0/v1 (Produce v0–2, Fetch v0–3): conversion of v2 batches down to message sets
//! and of message sets up to v2 batches, per codec, in MB/s of v2 batch bytes on one core. Not a timed test: it
//! prints numbers for docs/benchmarks.md.
//!
//!   cargo bench -p sluice-storage --bench message_set
//!
//! The workload: batches of 100 records of 200-byte values and 16-byte keys (~16 KiB uncompressed, Java's
//! default `batch.size`), 64 MiB of them per codec, values half repetitive so compression has work to do.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: a failed step is the run failing

use std::time::Instant;

use bytes::BytesMut;
use sluice_storage::records::message_set::{batches_to_message_set, message_set_to_batch, MAGIC_V1};
use sluice_storage::{BatchBuilder, Compression};

const RECORDS_PER_BATCH: usize = 100;
const VALUE_SIZE: usize = 200;
const LOG_SIZE: usize = 64 << 20;

fn main() {
    println!("codec    v2 bytes  down MB/s  (out bytes)  up MB/s");
    for compression in [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4] {
        let (log, record_bytes) = build_log(compression);
        // Down: the whole log as Fetch v2–3 answers it (magic 1), in 1 MiB reads as a consumer fetches.
        let started = Instant::now();
        let mut converted = 0usize;
        let mut sets = Vec::new();
        for chunk in split_reads(&log, 1 << 20) {
            let mut output = BytesMut::with_capacity(chunk.len() + chunk.len() / 4);
            batches_to_message_set(chunk, MAGIC_V1, 0, usize::MAX, &mut output).unwrap();
            converted += output.len();
            sets.push(output);
        }
        let down = started.elapsed();
        // Up: each of those message sets as a Produce v2 request's records.
        let started = Instant::now();
        for set in &sets {
            std::hint::black_box(message_set_to_batch(set, 0).unwrap());
        }
        let up = started.elapsed();
        let megabytes = log.len() as f64 / 1e6;
        println!(
            "{:<8} {:>9} {:>10.0} {:>12} {:>8.0}   (records {} MB uncompressed)",
            compression.name(),
            log.len(),
            megabytes / down.as_secs_f64(),
            converted,
            megabytes / up.as_secs_f64(),
            record_bytes / 1_000_000,
        );
    }
}

/// v2 batches of `compression` totalling about [`LOG_SIZE`] uncompressed, and their uncompressed record bytes.
fn build_log(compression: Compression) -> (Vec<u8>, usize) {
    let mut log = Vec::new();
    let mut record_bytes = 0;
    let mut index = 0u64;
    while record_bytes < LOG_SIZE {
        let mut builder = BatchBuilder::new(compression, 32 << 10);
        for _ in 0..RECORDS_PER_BATCH {
            let key = format!("key-{index:012}");
            let mut value = format!("value {index} ").repeat(VALUE_SIZE / 8).into_bytes();
            value.truncate(VALUE_SIZE / 2);
            value.extend(
                (0..VALUE_SIZE / 2)
                    .map(|byte| (index.wrapping_mul(2654435761).wrapping_add(byte as u64) >> 7) as u8),
            );
            builder.append(1_700_000_000_000 + index as i64, Some(key.as_bytes()), Some(&[&value]));
            record_bytes += key.len() + value.len();
            index += 1;
        }
        let mut batch = builder.finish(0).unwrap().to_vec();
        let base = (index - RECORDS_PER_BATCH as u64) as i64;
        sluice_storage::batch::stamp_batch(&mut batch, sluice_storage::Offset(base), 0);
        log.extend_from_slice(&batch);
    }
    (log, record_bytes)
}

/// The log cut at batch boundaries into reads of about `size` bytes.
fn split_reads(log: &[u8], size: usize) -> Vec<&[u8]> {
    let mut reads = Vec::new();
    let mut start = 0;
    let mut position = 0;
    while position < log.len() {
        let header = sluice_storage::batch::BatchHeader::parse(&log[position..]).unwrap();
        position += header.total_size();
        if position - start >= size || position == log.len() {
            reads.push(&log[start..position]);
            start = position;
        }
    }
    reads
}
