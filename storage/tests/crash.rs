//! Crash consistency and damaged files on the simulated disk.
//!
//! The scripted workload is cut by a power failure at every one of its sync points in turn; after recovery the
//! log must be a prefix of what was written and must hold every batch that was acknowledged under the fsync
//! policy. Then: torn tails, bit flips, truncated and deleted index files, a segment cut mid-batch.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step is the test failing

mod common;

use std::path::PathBuf;

use bytes::Bytes;
use common::*;
use sluice_storage::batch::testing::make_batch;
use sluice_storage::{Offset, SegmentSpace, SimStorage};

fn workload_batch(index: usize) -> Bytes {
    make_batch(1 + (index % 3) as i32, 50 + (index * 37) % 700, index as i64)
}

const WORKLOAD_SIZE: usize = 60;

/// Runs the workload: sequential appends, each acknowledged after `wait_durable`, plus a burst of concurrent
/// ones so that group commit is crossed too. Returns the acknowledged end offset and the batches sent in
/// offset order.
async fn workload(storage: &SimStorage, space: SegmentSpace) -> (Offset, Vec<(Offset, Bytes)>) {
    let mut config = small_config();
    config.segment_space = space;
    let opened = sluice_storage::Log::open(
        storage.clone(),
        directory(),
        config,
        sluice_storage::BatchCache::new(1 << 20),
    )
    .await;
    let Ok(log) = opened else { return (Offset(0), Vec::new()) };
    let mut acknowledged = Offset(0);
    let mut sent = Vec::new();
    for index in 0..WORKLOAD_SIZE {
        let batch = workload_batch(index);
        let Ok(info) = log.append(batch.clone(), 0).await else { break };
        sent.push((info.base_offset, batch));
        if index % 10 == 9 {
            // A burst of 5 appends acknowledged by one wait: they share a sync.
            let mut last = info.last_offset;
            for extra in 0..5 {
                let batch = workload_batch(1000 + index * 5 + extra);
                let Ok(info) = log.append(batch.clone(), 0).await else { break };
                sent.push((info.base_offset, batch));
                last = info.last_offset;
            }
            if log.wait_durable(last.next()).await.is_err() {
                break;
            }
            acknowledged = last.next();
        } else {
            if log.wait_durable(info.last_offset.next()).await.is_err() {
                break;
            }
            acknowledged = info.last_offset.next();
        }
    }
    log.abandon().await;
    (acknowledged, sent)
}

async fn verify_prefix(storage: &SimStorage, acknowledged: Offset, sent: &[(Offset, Bytes)], context: &str) {
    let log = open(storage, small_config()).await;
    assert!(
        log.log_end_offset() >= acknowledged,
        "{context}: recovered end {} lost acknowledged data up to {acknowledged}",
        log.log_end_offset()
    );
    let read = read_all(&log, Offset(0)).await;
    assert!(read.len() <= sent.len(), "{context}: more batches than were written");
    for (stored, (offset, original)) in read.iter().zip(sent) {
        assert_eq!(base_offset(stored), *offset, "{context}");
        assert_eq!(unstamped(stored), unstamped(original), "{context}: batch at {offset} differs");
    }
    // The recovered log accepts appends at its end.
    let info = log.append(make_batch(1, 10, 0), 0).await.expect("append after recovery");
    assert_eq!(info.base_offset, log.log_end_offset().0.checked_sub(1).map(Offset).unwrap());
    log.wait_durable(log.log_end_offset()).await.expect("sync after recovery");
    log.close().await.unwrap();
}

#[test]
fn crash_at_every_sync_point_keeps_a_prefix_with_everything_acknowledged() {
    for space in SEGMENT_SPACES {
        run(move || async move {
            let dry = SimStorage::new();
            let (full_end, _) = workload(&dry, space).await;
            let sync_points = dry.sync_count();
            assert!(full_end.0 > WORKLOAD_SIZE as i64);
            eprintln!("crash consistency, {space:?}: {sync_points} sync points");
            for sync_point in 0..=sync_points {
                for seed in 0..3u64 {
                    let storage = SimStorage::new();
                    storage.halt_after_syncs(sync_point);
                    let (acknowledged, sent) = workload(&storage, space).await;
                    storage.crash(sync_point * 7 + seed);
                    let context = format!("{space:?}: crash after sync {sync_point}, seed {seed}");
                    verify_prefix(&storage, acknowledged, &sent, &context).await;
                }
            }
        });
    }
}

fn segment_path(base: i64, suffix: &str) -> PathBuf {
    directory().join(format!("{base:020}{suffix}"))
}

/// Writes `count` batches (rolling several segments) and closes the log cleanly.
async fn written_log(storage: &SimStorage, count: usize) -> Vec<(Offset, Bytes)> {
    let log = open(storage, small_config()).await;
    let mut sent = Vec::new();
    for index in 0..count {
        let batch = workload_batch(index);
        let info = log.append(batch.clone(), 0).await.unwrap();
        sent.push((info.base_offset, batch));
    }
    log.wait_durable(log.log_end_offset()).await.unwrap();
    log.close().await.unwrap();
    sent
}

fn segment_bases(storage: &SimStorage) -> Vec<i64> {
    let mut bases: Vec<i64> =
        futures_lite::future::block_on(sluice_storage::Storage::list(storage, &directory()))
            .unwrap()
            .iter()
            .filter_map(|name| name.strip_suffix(".log").and_then(|stem| stem.parse().ok()))
            .collect();
    bases.sort();
    bases
}

#[test]
fn a_torn_tail_write_is_cut_off_and_reported() {
    run(|| async {
        let storage = SimStorage::new();
        let log = open(&storage, small_config()).await;
        for index in 0..5 {
            log.append(workload_batch(index), 0).await.unwrap();
        }
        log.wait_durable(log.log_end_offset()).await.unwrap();
        let acknowledged = log.log_end_offset();
        storage.tear_next_write(1);
        log.append(make_batch(3, 2000, 1), 0).await.unwrap();
        assert!(log.wait_durable(log.log_end_offset()).await.is_err());
        log.abandon().await;
        storage.crash(1);
        let log = open(&storage, small_config()).await;
        assert_eq!(log.log_end_offset(), acknowledged);
        assert!(log.recovery_report().scanned_size > 0);
        log.close().await.unwrap();
    });
}

#[test]
fn a_bit_flip_in_the_active_segment_truncates_there() {
    run(|| async {
        let storage = SimStorage::new();
        let sent = written_log(&storage, 40).await;
        let bases = segment_bases(&storage);
        let last = *bases.last().unwrap();
        let path = segment_path(last, ".log");
        let contents = storage.file_contents(&path).unwrap();
        // Flip a bit inside the last batch's payload.
        storage.flip_bit(&path, contents.len() - 5, 3);
        let log = open(&storage, small_config()).await;
        let report = log.recovery_report().clone();
        assert!(report.truncated_size > 0, "the damaged batch is reported: {report:?}");
        let (last_base, _) = sent.last().unwrap();
        assert_eq!(log.log_end_offset(), *last_base, "cut exactly at the damaged batch");
        verify_read(&log, &sent).await;
        log.close().await.unwrap();
    });
}

async fn verify_read(log: &sluice_storage::Log<SimStorage>, sent: &[(Offset, Bytes)]) {
    let read = read_all(log, log.log_start_offset()).await;
    for (stored, (offset, original)) in read.iter().zip(sent) {
        assert_eq!(base_offset(stored), *offset);
        assert_eq!(unstamped(stored), unstamped(original));
    }
}

#[test]
fn damage_in_a_closed_segment_tail_drops_everything_after_it() {
    run(|| async {
        let storage = SimStorage::new();
        let sent = written_log(&storage, 80).await;
        let bases = segment_bases(&storage);
        assert!(bases.len() >= 3, "need several segments, got {bases:?}");
        let path = segment_path(bases[0], ".log");
        let size = storage.file_contents(&path).unwrap().len();
        storage.flip_bit(&path, size - 3, 0);
        let log = open(&storage, small_config()).await;
        assert!(log.log_end_offset() < Offset(bases[1]));
        assert_eq!(segment_bases(&storage).len(), 1, "later segments are removed");
        verify_read(&log, &sent).await;
        assert!(log.recovery_report().truncated_size > 0);
        log.close().await.unwrap();
    });
}

#[test]
fn missing_truncated_or_garbled_indexes_are_rebuilt() {
    for damage in ["delete", "cut", "garble", "delete-timeindex"] {
        run(move || async move {
            let storage = SimStorage::new();
            let sent = written_log(&storage, 80).await;
            let bases = segment_bases(&storage);
            let index_path = segment_path(bases[0], ".index");
            let original_index = storage.file_contents(&index_path).unwrap();
            assert!(original_index.len() >= 16, "closed segment has index entries");
            match damage {
                "delete" => {
                    futures_lite::future::block_on(sluice_storage::Storage::remove(&storage, &index_path))
                        .unwrap()
                }
                "cut" => storage.cut_file(&index_path, 5),
                "garble" => storage.flip_bit(&index_path, original_index.len() - 2, 7),
                _ => futures_lite::future::block_on(sluice_storage::Storage::remove(
                    &storage,
                    &segment_path(bases[0], ".timeindex"),
                ))
                .unwrap(),
            }
            let log = open(&storage, small_config()).await;
            if damage != "delete-timeindex" {
                assert!(
                    log.recovery_report().rebuilt_index_count >= 1,
                    "{damage}: {:?}",
                    log.recovery_report()
                );
                assert_eq!(
                    storage.file_contents(&index_path).unwrap(),
                    original_index,
                    "{damage}: index rewritten"
                );
            }
            assert_eq!(
                log.log_end_offset(),
                sent.last().map(|(offset, batch)| last_offset_of(*offset, batch)).unwrap()
            );
            verify_read(&log, &sent).await;
            // Timestamp lookups still work through the rebuilt or partial time index.
            let found = log.find_batch_by_timestamp(30).await.unwrap().unwrap();
            assert!(base_offset(&found) <= Offset(60));
            log.close().await.unwrap();
        });
    }
}

fn last_offset_of(base: Offset, batch: &[u8]) -> Offset {
    let delta = i32::from_be_bytes(batch[23..27].try_into().unwrap());
    Offset(base.0 + delta as i64 + 1)
}

#[test]
fn a_segment_cut_mid_batch_is_recovered_to_the_last_whole_batch() {
    run(|| async {
        let storage = SimStorage::new();
        let sent = written_log(&storage, 30).await;
        let bases = segment_bases(&storage);
        let path = segment_path(*bases.last().unwrap(), ".log");
        let size = storage.file_contents(&path).unwrap().len();
        storage.cut_file(&path, size - 20);
        let log = open(&storage, small_config()).await;
        assert_eq!(log.log_end_offset(), sent.last().unwrap().0);
        assert_eq!(log.recovery_report().truncated_size as usize, sent.last().unwrap().1.len() - 20);
        verify_read(&log, &sent).await;
        log.close().await.unwrap();
    });
}

#[test]
fn recovery_scans_only_the_tails_not_the_whole_log() {
    run(|| async {
        let storage = SimStorage::new();
        let mut config = small_config();
        config.segment_size_max = 256 * 1024;
        let log = open(&storage, config.clone()).await;
        for index in 0..2000 {
            log.append(workload_batch(index), 0).await.unwrap();
        }
        log.wait_durable(log.log_end_offset()).await.unwrap();
        let total = log.size();
        log.close().await.unwrap();
        let log = open(&storage, config).await;
        let report = log.recovery_report().clone();
        assert!(report.segment_count >= 3);
        assert!(
            report.scanned_size * 10 < total,
            "recovery scanned {} of {total} bytes: it should read only each segment's tail",
            report.scanned_size
        );
        log.close().await.unwrap();
    });
}
