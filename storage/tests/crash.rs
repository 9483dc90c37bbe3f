//! Crash consistency and damaged files on the simulated disk.
//!
//! The scripted workload is cut by a power failure at every one of its sync points in turn; after recovery the
//! log must be a prefix of what was written and must hold every batch that was acknowledged under the fsync
//! policy. Then: torn tails, bit flips, truncated and deleted index files, a segment cut mid-batch; damage past
//! the recovery point is cut, damage to durable data is kept, reported and read as an error, never cut.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step is the test failing

mod common;

use std::path::PathBuf;

use bytes::Bytes;
use common::*;
use sluice_storage::batch::testing::make_batch;
use sluice_storage::{CorruptRange, LogError, Offset, ReadBound, SegmentSpace, SimStorage};

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

/// How a test's log stopped before it is damaged and reopened.
#[derive(Clone, Copy, Debug)]
enum Stop {
    /// `close`: everything synced, the clean-shutdown marker written.
    Close,
    /// A power cut after every append was synced: no marker, the recovery point at the last roll.
    Crash,
}

/// Writes `count` batches (rolling several segments) and closes the log cleanly.
async fn written_log(storage: &SimStorage, count: usize) -> Vec<(Offset, Bytes)> {
    written_log_stopped(storage, count, Stop::Close).await
}

/// Writes `count` batches (rolling several segments), all synced, and stops the log as `stop` says.
async fn written_log_stopped(storage: &SimStorage, count: usize, stop: Stop) -> Vec<(Offset, Bytes)> {
    let log = open(storage, small_config()).await;
    let mut sent = Vec::new();
    for index in 0..count {
        let batch = workload_batch(index);
        let info = log.append(batch.clone(), 0).await.unwrap();
        sent.push((info.base_offset, batch));
    }
    log.wait_durable(log.log_end_offset()).await.unwrap();
    match stop {
        Stop::Close => log.close().await.unwrap(),
        Stop::Crash => {
            log.abandon().await;
            storage.crash(count as u64);
        }
    }
    sent
}

/// The log end after the batches in `sent`.
fn end_of(sent: &[(Offset, Bytes)]) -> Offset {
    sent.last().map(|(offset, batch)| last_offset_of(*offset, batch)).unwrap()
}

/// Bytes of the batches of `sent` whose base offset is at or above `from`.
fn sizes(sent: &[(Offset, Bytes)], from: Offset) -> u64 {
    sent.iter().filter(|(offset, _)| *offset >= from).map(|(_, batch)| batch.len() as u64).sum()
}

/// The batches of `sent` in the segment at `base` (ending before `next_base`), with their file positions.
fn segment_batches(sent: &[(Offset, Bytes)], base: i64, next_base: i64) -> Vec<(u64, Offset, Bytes)> {
    let mut position = 0;
    let mut batches = Vec::new();
    for (offset, batch) in sent.iter().filter(|(offset, _)| offset.0 >= base && offset.0 < next_base) {
        batches.push((position, *offset, batch.clone()));
        position += batch.len() as u64;
    }
    batches
}

/// Reads at `offset` must fail with exactly `range`.
async fn assert_corrupt_read(log: &sluice_storage::Log<SimStorage>, offset: Offset, range: &CorruptRange) {
    match log.read(offset, 64 * 1024, ReadBound::LogEnd, true).await {
        Err(LogError::Corrupt(found)) => assert_eq!(&found, range, "read at {offset}"),
        Err(other) => panic!("read at {offset} in a corrupt range: {other}"),
        Ok(batches) => panic!("read at {offset} in a corrupt range returned {} batches", batches.len()),
    }
}

/// Stored batches equal the sent ones, in order.
fn assert_same(read: &[Bytes], sent: &[(Offset, Bytes)], context: &str) {
    assert_eq!(read.len(), sent.len(), "{context}: batch count");
    for (stored, (offset, original)) in read.iter().zip(sent) {
        assert_eq!(base_offset(stored), *offset, "{context}");
        assert_eq!(unstamped(stored), unstamped(original), "{context}: batch at {offset} differs");
    }
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

/// After a crash, the active segment lies past the recovery point (its last roll): a bad batch there is a torn
/// or never-synced tail and is cut, as before.
#[test]
fn a_bit_flip_past_the_recovery_point_truncates_there() {
    run(|| async {
        let storage = SimStorage::new();
        let sent = written_log_stopped(&storage, 40, Stop::Crash).await;
        let bases = segment_bases(&storage);
        let last = *bases.last().unwrap();
        let path = segment_path(last, ".log");
        // The file runs past the data (zeros up to a block): flip a bit inside the last batch's payload.
        let data_end = sizes(&sent, Offset(last)) as usize;
        storage.flip_bit(&path, data_end - 5, 3);
        let log = open(&storage, small_config()).await;
        let report = log.recovery_report().clone();
        assert_eq!(report.recovery_point, Some(Offset(last)), "{report:?}");
        assert!(report.truncated_size > 0, "the damaged batch is reported: {report:?}");
        assert!(report.corrupt_ranges.is_empty(), "{report:?}");
        let (last_base, _) = sent.last().unwrap();
        assert_eq!(log.log_end_offset(), *last_base, "cut exactly at the damaged batch");
        verify_read(&log, &sent).await;
        log.close().await.unwrap();
    });
}

/// Truncation lowers the recovery point: the batches written after it at the freed offsets are not durable yet,
/// and a torn one among them is cut after a crash, not kept as damaged durable data with the old end forced back.
#[test]
fn truncation_lowers_the_recovery_point() {
    run(|| async {
        let storage = SimStorage::new();
        written_log(&storage, 80).await;
        let bases = segment_bases(&storage);
        assert!(bases.len() >= 3, "need several segments, got {bases:?}");
        let log = open(&storage, small_config()).await;
        log.truncate_to(Offset(bases[1] + 1)).await.unwrap();
        let end = log.log_end_offset();
        for index in 0..3 {
            log.append(workload_batch(index), 0).await.unwrap();
        }
        log.wait_durable(log.log_end_offset()).await.unwrap();
        let acknowledged = log.log_end_offset();
        storage.tear_next_write(1);
        log.append(make_batch(3, 2000, 1), 0).await.unwrap();
        assert!(log.wait_durable(log.log_end_offset()).await.is_err());
        log.abandon().await;
        storage.crash(3);
        let log = open(&storage, small_config()).await;
        let report = log.recovery_report().clone();
        assert!(report.recovery_point.is_some_and(|offset| offset <= end), "{report:?}");
        assert!(report.corrupt_ranges.is_empty(), "{report:?}");
        assert_eq!(log.log_end_offset(), acknowledged, "{report:?}");
        log.close().await.unwrap();
    });
}

/// After a clean close every byte was durable: a bad last batch of the last segment is kept as a corrupt range,
/// the log end stays where it was, and appends go on in a new segment after it.
#[test]
fn a_bit_flip_in_the_last_segment_after_a_clean_close_is_kept() {
    run(|| async {
        let storage = SimStorage::new();
        let sent = written_log(&storage, 40).await;
        let end = end_of(&sent);
        let bases = segment_bases(&storage);
        let last = *bases.last().unwrap();
        let path = segment_path(last, ".log");
        let size = storage.file_contents(&path).unwrap().len();
        storage.flip_bit(&path, size - 5, 3);
        let log = open(&storage, small_config()).await;
        let report = log.recovery_report().clone();
        assert!(report.clean_shutdown);
        assert_eq!(report.truncated_size, 0, "{report:?}");
        let (damaged, _) = sent.last().unwrap().clone();
        let range = &report.corrupt_ranges[..];
        assert_eq!(range.len(), 1, "{report:?}");
        let range = &range[0];
        assert_eq!(
            (range.base_offset, range.end_offset, range.position + range.size),
            (damaged, end, size as u64)
        );
        assert_eq!(log.log_end_offset(), end, "the durable end stays");
        assert_corrupt_read(&log, damaged, range).await;
        assert_same(
            &read_until(&log, Offset(0), damaged).await,
            &sent[..sent.len() - 1],
            "before the damage",
        );
        let info = log.append(make_batch(1, 10, 0), 0).await.unwrap();
        assert_eq!(info.base_offset, end, "no offset is reused");
        assert_eq!(log.active_segment_base(), end, "appends never follow damaged bytes");
        log.close().await.unwrap();
    });
}

/// The issue's first case: a flipped byte in the last batch of an older, closed segment. Durable data (after a
/// clean close, and below the recovery point after a crash): every later segment and offset is kept, the bad batch
/// reads as an error, reads around it work, appends continue at the old end, and the next open finds it again.
#[test]
fn damage_in_a_closed_segment_is_kept_reported_and_skipped() {
    for stop in [Stop::Close, Stop::Crash] {
        run(move || async move {
            let storage = SimStorage::new();
            let sent = written_log_stopped(&storage, 80, stop).await;
            let end = end_of(&sent);
            let bases = segment_bases(&storage);
            assert!(bases.len() >= 3, "need several segments, got {bases:?}");
            let path = segment_path(bases[0], ".log");
            let size = storage.file_contents(&path).unwrap().len();
            storage.flip_bit(&path, size - 3, 0);
            let damaged_index = sent.iter().rposition(|(offset, _)| offset.0 < bases[1]).unwrap();
            let damaged = sent[damaged_index].0;

            let log = open(&storage, small_config()).await;
            let report = log.recovery_report().clone();
            let context = format!("{stop:?}: {report:?}");
            assert_eq!(report.truncated_size, 0, "{context}");
            assert_eq!(segment_bases(&storage)[..bases.len()], bases[..], "{context}: every segment kept");
            assert_eq!(log.log_end_offset(), end, "{context}");
            assert_eq!(report.corrupt_ranges.len(), 1, "{context}");
            let range = report.corrupt_ranges[0].clone();
            let expected = (Offset(bases[0]), damaged, Offset(bases[1]), size as u64);
            assert_eq!(
                (range.segment_base, range.base_offset, range.end_offset, range.position + range.size),
                expected
            );
            assert_eq!(range.size as usize, sent[damaged_index].1.len());

            assert_corrupt_read(&log, damaged, &range).await;
            assert_corrupt_read(&log, Offset(bases[1] - 1), &range).await;
            assert_same(&read_until(&log, Offset(0), damaged).await, &sent[..damaged_index], "before");
            assert_same(&read_all(&log, Offset(bases[1])).await, &sent[damaged_index + 1..], "after");
            let found = log.find_batch_by_timestamp(damaged_index as i64 + 1).await.unwrap().unwrap();
            assert_eq!(base_offset(&found), Offset(bases[1]), "time lookups step over the damage");

            let info = log.append(make_batch(1, 10, 0), 0).await.unwrap();
            assert_eq!(info.base_offset, end, "{context}: appends continue at the old end");
            log.wait_durable(log.log_end_offset()).await.unwrap();
            log.close().await.unwrap();
            let log = open(&storage, small_config()).await;
            assert_eq!(log.recovery_report().corrupt_ranges, [range], "found again at the next open");
            assert_eq!(log.log_end_offset(), end.next());
            log.close().await.unwrap();
        });
    }
}

/// The issue's second case: a closed segment's index is garbled and a byte in a batch in its middle flipped. The
/// rebuild scans the segment from position 0 and must not cut there: the bad batch alone becomes a corrupt range,
/// the scan resumes at the next valid batch, and everything after it reads.
#[test]
fn a_garbled_index_over_a_damaged_segment_is_rebuilt_around_the_damage() {
    for stop in [Stop::Close, Stop::Crash] {
        run(move || async move {
            let storage = SimStorage::new();
            let sent = written_log_stopped(&storage, 80, stop).await;
            let end = end_of(&sent);
            let bases = segment_bases(&storage);
            assert!(bases.len() >= 3, "need several segments, got {bases:?}");
            let in_segment = segment_batches(&sent, bases[0], bases[1]);
            assert!(in_segment.len() >= 5, "{} batches in the first segment", in_segment.len());
            let middle = in_segment.len() / 2;
            let (position, damaged, batch) = in_segment[middle].clone();
            let path = segment_path(bases[0], ".log");
            storage.flip_bit(&path, position as usize + 70, 5);
            let index_path = segment_path(bases[0], ".index");
            let index_size = storage.file_contents(&index_path).unwrap().len();
            storage.flip_bit(&index_path, index_size - 2, 7);

            let log = open(&storage, small_config()).await;
            let report = log.recovery_report().clone();
            let context = format!("{stop:?}: {report:?}");
            assert!(report.rebuilt_index_count >= 1, "{context}");
            assert_eq!(report.truncated_size, 0, "{context}");
            assert_eq!(log.log_end_offset(), end, "{context}");
            assert_eq!(segment_bases(&storage)[..bases.len()], bases[..], "{context}: every segment kept");
            let range = report.corrupt_ranges[..].first().cloned().unwrap();
            assert_eq!(report.corrupt_ranges.len(), 1, "{context}");
            let next = in_segment[middle + 1].1;
            assert_eq!(
                (range.position, range.size, range.base_offset, range.end_offset),
                (position, batch.len() as u64, damaged, next)
            );

            let damaged_index = sent.iter().position(|(offset, _)| *offset == damaged).unwrap();
            assert_corrupt_read(&log, damaged, &range).await;
            assert_same(&read_until(&log, Offset(0), damaged).await, &sent[..damaged_index], "before");
            assert_same(&read_all(&log, next).await, &sent[damaged_index + 1..], "after, same segment on");
            let info = log.append(make_batch(1, 10, 0), 0).await.unwrap();
            assert_eq!(info.base_offset, end, "appends continue at the old end");
            log.close().await.unwrap();
            // The damaged segment's index stays as found, so the next open rebuilds it and finds the damage again.
            let log = open(&storage, small_config()).await;
            assert_eq!(log.recovery_report().corrupt_ranges, [range]);
            log.close().await.unwrap();
        });
    }
}

/// After a crash only what may not have been synced is scanned whole: the batches past the recovery point (the
/// last roll, or the end at the last clean close); durable segments are read only from their last index entry.
/// After a clean close nothing is past it.
#[test]
fn recovery_scans_only_past_the_recovery_point() {
    run(|| async {
        let storage = SimStorage::new();
        let config = small_config();
        let log = open(&storage, config.clone()).await;
        let mut sent = Vec::new();
        for index in 0..300 {
            let batch = workload_batch(index);
            sent.push((log.append(batch.clone(), 0).await.unwrap().base_offset, batch));
        }
        log.wait_durable(log.log_end_offset()).await.unwrap();
        let (active_base, segment_count, end) =
            (log.active_segment_base(), log.segment_count(), log.log_end_offset());
        assert!(segment_count >= 5);
        log.abandon().await;
        storage.crash(1);

        let log = open(&storage, config.clone()).await;
        let report = log.recovery_report().clone();
        assert!(!report.clean_shutdown);
        assert_eq!(report.recovery_point, Some(active_base), "{report:?}");
        assert_eq!(report.unsynced_scanned_size, sizes(&sent, active_base), "{report:?}");
        // Each closed segment from its last index entry: at most an index interval and one batch.
        let checked_size_max = (segment_count as u64 - 1) * (config.index_interval_size as u64 + 4096);
        assert!(report.scanned_size - report.unsynced_scanned_size <= checked_size_max, "{report:?}");
        assert_eq!(log.log_end_offset(), end);
        log.close().await.unwrap();

        let log = open(&storage, config.clone()).await;
        let report = log.recovery_report().clone();
        assert!(report.clean_shutdown);
        assert_eq!((report.recovery_point, report.unsynced_scanned_size), (Some(end), 0), "{report:?}");
        // Appends after a clean open, then a crash: only they are past the recovery point.
        for index in 300..320 {
            let batch = workload_batch(index);
            sent.push((log.append(batch.clone(), 0).await.unwrap().base_offset, batch));
        }
        log.wait_durable(log.log_end_offset()).await.unwrap();
        let (active_base, later_end) = (log.active_segment_base(), log.log_end_offset());
        log.abandon().await;
        storage.crash(2);
        let log = open(&storage, config).await;
        let report = log.recovery_report().clone();
        let recovery_point = report.recovery_point.unwrap();
        assert_eq!(recovery_point, end.max(active_base), "{report:?}");
        assert_eq!(report.unsynced_scanned_size, sizes(&sent, recovery_point), "{report:?}");
        assert_eq!(log.log_end_offset(), later_end);
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

/// After a crash, a last segment cut mid-batch past the recovery point goes back to its last whole batch.
#[test]
fn a_segment_cut_mid_batch_is_recovered_to_the_last_whole_batch() {
    run(|| async {
        let storage = SimStorage::new();
        let sent = written_log_stopped(&storage, 30, Stop::Crash).await;
        let bases = segment_bases(&storage);
        let last = *bases.last().unwrap();
        let path = segment_path(last, ".log");
        let data_end = sizes(&sent, Offset(last)) as usize;
        storage.cut_file(&path, data_end - 20);
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
        assert!(report.clean_shutdown && report.unsynced_scanned_size == 0, "{report:?}");
        assert!(
            report.scanned_size * 10 < total,
            "recovery scanned {} of {total} bytes: it should read only each segment's tail",
            report.scanned_size
        );
        log.close().await.unwrap();
    });
}

/// The issue's reproduction at its scale: 10,000 records of 1 KiB with 1 MiB segments, a clean stop, one byte
/// flipped in the last batch of an older closed segment with four segments after it (then the same with its index
/// garbled too). Start-up used to cut there and delete the later segments (4,016 and 4,464 records); now only the
/// damaged batch's five records are unreadable, every later record reads, and appends continue at the old end.
#[test]
fn the_issue_scenario_loses_only_the_damaged_batch() {
    for garble_index in [false, true] {
        run(move || async move {
            let storage = SimStorage::new();
            let mut config = small_config();
            config.segment_size_max = 1 << 20;
            config.index_interval_size = 4096;
            config.write_size_max = 1 << 20;
            let log = open(&storage, config.clone()).await;
            for index in 0..2_000 {
                log.append(make_batch(5, 1024, index), 0).await.unwrap();
            }
            log.wait_durable(log.log_end_offset()).await.unwrap();
            let end = log.log_end_offset();
            assert_eq!(end, Offset(10_000));
            log.close().await.unwrap();
            let bases = segment_bases(&storage);
            assert!(bases.len() >= 6, "{bases:?}");
            let damaged_base = bases[bases.len() - 5];
            let path = segment_path(damaged_base, ".log");
            let size = storage.file_contents(&path).unwrap().len();
            storage.flip_bit(&path, size - 100, 2);
            if garble_index {
                let index_path = segment_path(damaged_base, ".index");
                let index_size = storage.file_contents(&index_path).unwrap().len();
                storage.flip_bit(&index_path, index_size - 3, 7);
            }

            let log = open(&storage, config).await;
            let report = log.recovery_report().clone();
            let context = format!("garbled index {garble_index}: {report:?}");
            assert_eq!(report.rebuilt_index_count, usize::from(garble_index), "{context}");
            assert_eq!((report.truncated_size, report.corrupt_ranges.len()), (0, 1), "{context}");
            let range = report.corrupt_ranges[0].clone();
            assert_eq!(range.end_offset.0 - range.base_offset.0, 5, "one batch of five records: {context}");
            assert_eq!(log.log_end_offset(), end, "{context}");
            assert_eq!(segment_bases(&storage), bases, "{context}: every segment kept");
            let later = read_all(&log, range.end_offset).await;
            assert_eq!(
                later.iter().map(|batch| last_offset(batch).0 + 1 - base_offset(batch).0).sum::<i64>(),
                end.0 - range.end_offset.0,
                "{context}: every later record reads"
            );
            assert_eq!(
                read_until(&log, Offset(0), range.base_offset).await.len() as i64 * 5,
                range.base_offset.0
            );
            assert_eq!(log.append(make_batch(1, 10, 0), 0).await.unwrap().base_offset, end, "{context}");
            log.close().await.unwrap();
        });
    }
}
