//! Behaviour of the partition log on the simulated disk: append and read, roll, indexes, truncation,
//! DeleteRecords, retention, timestamp lookup, reopen, poisoning.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step is the test failing

mod common;

use std::time::Duration;

use common::*;
use sluice_storage::batch::testing::make_batch;
use sluice_storage::{BatchCache, Log, LogConfig, LogError, Offset, ReadBound, SimStorage, TimestampType};

#[test]
fn appended_batches_read_back_with_their_offsets() {
    run(|| async {
        let storage = SimStorage::new();
        let log = open(&storage, small_config()).await;
        let first = log.append(make_batch(3, 10, 100), 5).await.unwrap();
        assert_eq!((first.base_offset, first.last_offset), (Offset(0), Offset(2)));
        let second = log.append(make_batch(2, 10, 200), 5).await.unwrap();
        assert_eq!((second.base_offset, second.last_offset), (Offset(3), Offset(4)));
        assert_eq!(log.log_end_offset(), Offset(5));
        log.wait_durable(Offset(5)).await.unwrap();
        let batches = log.read(Offset(1), 1 << 20, ReadBound::LogEnd, true).await.unwrap();
        assert_eq!(batches.len(), 2, "the first batch starts below the requested offset, as in Kafka");
        assert_eq!(base_offset(&batches[0]), Offset(0));
        assert_eq!(base_offset(&batches[1]), Offset(3));
        assert_eq!(i32::from_be_bytes(batches[1][12..16].try_into().unwrap()), 5, "leader epoch stamped");
        assert_eq!(unstamped(&batches[1]), unstamped(&make_batch(2, 10, 200)));
        // A bound (the replica layer's high watermark) limits consumer reads; past the log end it is the log end.
        let visible = log.read(Offset(0), 1 << 20, ReadBound::Below(Offset(3)), true).await.unwrap();
        assert_eq!(visible.len(), 1);
        assert!(log.read(Offset(3), 1 << 20, ReadBound::Below(Offset(3)), true).await.unwrap().is_empty());
        assert_eq!(log.read(Offset(0), 1 << 20, ReadBound::Below(Offset(99)), true).await.unwrap().len(), 2);
        assert!(matches!(
            log.read(Offset(6), 100, ReadBound::LogEnd, true).await,
            Err(LogError::OffsetOutOfRange { .. })
        ));
        log.close().await.unwrap();
    });
}

#[test]
fn size_budget_and_the_first_batch_exception() {
    run(|| async {
        let storage = SimStorage::new();
        let log = open(&storage, small_config()).await;
        for _ in 0..4 {
            log.append(make_batch(1, 1000, 1), 0).await.unwrap();
        }
        let size = make_batch(1, 1000, 1).len();
        let two = log.read(Offset(0), 2 * size + 10, ReadBound::LogEnd, false).await.unwrap();
        assert_eq!(two.len(), 2);
        assert!(log.read(Offset(0), 10, ReadBound::LogEnd, false).await.unwrap().is_empty());
        assert_eq!(log.read(Offset(0), 10, ReadBound::LogEnd, true).await.unwrap().len(), 1);
        log.close().await.unwrap();
    });
}

#[test]
fn invalid_batches_are_refused_and_change_nothing() {
    run(|| async {
        let storage = SimStorage::new();
        let mut config = small_config();
        config.batch_size_max = 2000;
        let log = open(&storage, config).await;
        log.append(make_batch(1, 10, 1), 0).await.unwrap();
        let mut corrupt = make_batch(1, 10, 1).to_vec();
        *corrupt.last_mut().unwrap() ^= 0xff;
        assert!(matches!(log.append(corrupt.into(), 0).await, Err(LogError::InvalidBatch(_))));
        assert!(matches!(
            log.append(make_batch(1, 3000, 1), 0).await,
            Err(LogError::BatchTooLarge { max: 2000, .. })
        ));
        assert_eq!(log.log_end_offset(), Offset(1));
        log.close().await.unwrap();
    });
}

#[test]
fn segments_roll_at_their_size_and_reads_cross_them() {
    run(|| async {
        let storage = SimStorage::new();
        let log = open(&storage, small_config()).await;
        let mut sent = Vec::new();
        for index in 0..200 {
            let batch = make_batch(1 + index % 3, 100, index as i64);
            log.append(batch.clone(), 0).await.unwrap();
            sent.push(batch);
        }
        log.wait_durable(log.log_end_offset()).await.unwrap();
        assert!(log.segment_count() > 2, "16 KiB segments must have rolled, got {}", log.segment_count());
        let names = storage_names(&storage);
        assert!(names.iter().any(|name| name == "00000000000000000000.log"));
        assert!(names.iter().any(|name| name.ends_with(".timeindex")));
        let read = read_all(&log, Offset(0)).await;
        assert_eq!(read.len(), sent.len());
        for (stored, original) in read.iter().zip(&sent) {
            assert_eq!(unstamped(stored), unstamped(original));
        }
        // Every offset is found through the index, from disk once the cache is bypassed by a fresh open.
        log.close().await.unwrap();
        let log = open(&storage, small_config()).await;
        for offset in (0..log.log_end_offset().0).step_by(7) {
            let batches = log.read(Offset(offset), 1, ReadBound::LogEnd, true).await.unwrap();
            assert!(base_offset(&batches[0]) <= Offset(offset) && last_offset(&batches[0]) >= Offset(offset));
        }
        log.close().await.unwrap();
    });
}

fn storage_names(storage: &SimStorage) -> Vec<String> {
    let storage = storage.clone();
    futures_lite::future::block_on(sluice_storage::Storage::list(&storage, &directory())).unwrap()
}

#[test]
fn truncate_to_removes_the_suffix_and_appends_continue() {
    run(|| async {
        let storage = SimStorage::new();
        let log = open(&storage, small_config()).await;
        for _ in 0..100 {
            log.append(make_batch(2, 100, 5), 0).await.unwrap();
        }
        log.wait_durable(log.log_end_offset()).await.unwrap();
        log.truncate_to(Offset(101)).await.unwrap();
        assert_eq!(log.log_end_offset(), Offset(100), "the straddling batch 100..101 goes whole");
        let info = log.append(make_batch(1, 100, 5), 0).await.unwrap();
        assert_eq!(info.base_offset, Offset(100));
        log.wait_durable(log.log_end_offset()).await.unwrap();
        let read = read_all(&log, Offset(0)).await;
        assert_eq!(read.len(), 51);
        log.close().await.unwrap();
        let log = open(&storage, small_config()).await;
        assert_eq!(log.log_end_offset(), Offset(101));
        assert_eq!(read_all(&log, Offset(0)).await.len(), 51);
        log.truncate_to(Offset(0)).await.unwrap();
        assert_eq!(log.log_end_offset(), Offset(0));
        log.close().await.unwrap();
    });
}

#[test]
fn delete_before_and_retention_delete_whole_old_segments() {
    run(|| async {
        let storage = SimStorage::new();
        let log = open(&storage, small_config()).await;
        for _ in 0..150 {
            log.append(make_batch(1, 200, 1_000), 0).await.unwrap();
        }
        log.wait_durable(log.log_end_offset()).await.unwrap();
        let segments_before = log.segment_count();
        assert_eq!(log.delete_before(Offset(70)).await.unwrap(), Offset(70));
        assert!(matches!(
            log.read(Offset(69), 100, ReadBound::LogEnd, true).await,
            Err(LogError::OffsetOutOfRange { .. })
        ));
        assert!(log.segment_count() < segments_before);
        // The log start offset survives a restart even though it lies inside a segment.
        log.close().await.unwrap();
        let log = open(&storage, small_config()).await;
        assert_eq!(log.log_start_offset(), Offset(70));

        // Retention by size keeps the newest data within the bound, never deleting the active segment.
        let mut config = small_config();
        config.retention_size_max = Some(4 * 1024);
        log.update_config(config).unwrap();
        log.enforce_retention(sluice_storage::now_ms()).await.unwrap();
        assert!(log.size() <= 4 * 1024 + 16 * 1024, "size {} after retention", log.size());
        assert!(log.log_start_offset() > Offset(70));

        // Retention by time: batches stamped at t=1000 ms are far older than a week.
        let mut config = small_config();
        config.retention_age_max = Some(Duration::from_secs(7 * 24 * 3600));
        log.update_config(config).unwrap();
        log.enforce_retention(sluice_storage::now_ms()).await.unwrap();
        assert_eq!(log.segment_count(), 1, "only the active segment remains");
        let start = log.log_start_offset();
        assert_eq!(read_all(&log, start).await.len() as i64, log.log_end_offset().0 - start.0);
        log.close().await.unwrap();
    });
}

#[test]
fn timestamp_lookup_finds_the_first_batch_at_or_after() {
    run(|| async {
        let storage = SimStorage::new();
        let log = open(&storage, small_config()).await;
        for index in 0..300i64 {
            log.append(make_batch(1, 100, 10_000 + index * 10), 0).await.unwrap();
        }
        log.wait_durable(log.log_end_offset()).await.unwrap();
        log.close().await.unwrap();
        let log = open(&storage, small_config()).await;
        let check = |timestamp: i64, expected: Option<i64>| {
            let log = log.clone();
            async move {
                let found = log.find_batch_by_timestamp(timestamp).await.unwrap();
                assert_eq!(found.map(|batch| base_offset(&batch).0), expected, "timestamp {timestamp}");
            }
        };
        check(0, Some(0)).await;
        check(10_000, Some(0)).await;
        check(10_001, Some(1)).await;
        check(10_500, Some(50)).await;
        check(12_990, Some(299)).await;
        check(12_991, None).await;
        let max = log.max_timestamp_batch().await.unwrap().unwrap();
        assert_eq!(base_offset(&max), Offset(299));
        log.close().await.unwrap();
    });
}

#[test]
fn log_append_time_is_stamped_with_a_valid_crc() {
    run(|| async {
        let storage = SimStorage::new();
        let mut config = small_config();
        config.timestamp_type = TimestampType::LogAppendTime;
        let log = open(&storage, config).await;
        let before = sluice_storage::now_ms();
        let info = log.append(make_batch(2, 10, 5), 0).await.unwrap();
        assert!(info.append_time_ms >= before);
        let batches = log.read(Offset(0), 1 << 20, ReadBound::LogEnd, true).await.unwrap();
        let (header, _) = sluice_storage::batch::validate_batch(&batches[0]).unwrap();
        assert!(header.is_log_append_time());
        assert_eq!(header.max_timestamp.get(), info.append_time_ms);
        log.close().await.unwrap();
    });
}

#[test]
fn a_failed_write_or_sync_poisons_appends_but_not_reads() {
    for fail_sync in [false, true] {
        run(move || async move {
            let storage = SimStorage::new();
            let log = open(&storage, small_config()).await;
            log.append(make_batch(1, 10, 1), 0).await.unwrap();
            log.wait_durable(Offset(1)).await.unwrap();
            if fail_sync {
                storage.fail_next_sync();
            } else {
                storage.fail_next_write();
            }
            log.append(make_batch(1, 10, 1), 0).await.unwrap();
            let error = log.wait_durable(Offset(2)).await.unwrap_err();
            assert!(matches!(error, LogError::Poisoned(_)), "{error}");
            let reason = error.to_string();
            assert!(reason.contains("simulated"), "the error says why: {reason}");
            assert!(matches!(log.append(make_batch(1, 10, 1), 0).await, Err(LogError::Poisoned(_))));
            let batches = log.read(Offset(0), 1 << 20, ReadBound::LogEnd, true).await.unwrap();
            assert_eq!(batches.len(), 2, "reads keep working, unwritten batches from memory");
            log.abandon().await;
        });
    }
}

#[test]
fn interval_policy_acknowledges_before_sync_and_syncs_on_demand() {
    run(|| async {
        let storage = SimStorage::new();
        let log = open(&storage, relaxed(small_config())).await;
        let syncs_before = storage.sync_count();
        for _ in 0..10 {
            log.append(make_batch(1, 10, 1), 0).await.unwrap();
        }
        glommio::timer::sleep(Duration::from_millis(20)).await;
        assert_eq!(
            storage.sync_count(),
            syncs_before,
            "no sync before the interval under the relaxed policy"
        );
        log.wait_durable(Offset(10)).await.unwrap();
        assert!(storage.sync_count() > syncs_before);
        log.close().await.unwrap();
    });
}

#[test]
fn concurrent_appenders_share_syncs() {
    run(|| async {
        let storage = SimStorage::new();
        let log = open(&storage, small_config()).await;
        let syncs_before = storage.sync_count();
        let mut tasks = Vec::new();
        for _ in 0..32 {
            let log = log.clone();
            tasks.push(glommio::spawn_local(async move {
                let info = log.append(make_batch(1, 10, 1), 0).await.unwrap();
                log.wait_durable(info.last_offset.next()).await.unwrap();
            }));
        }
        for task in tasks {
            task.await;
        }
        let syncs = storage.sync_count() - syncs_before;
        assert!(syncs < 8, "32 concurrent appends took {syncs} syncs: group commit is not grouping");
        log.close().await.unwrap();
    });
}

#[test]
fn segments_roll_when_older_than_segment_ms() {
    run(|| async {
        let storage = SimStorage::new();
        let mut config = small_config();
        config.segment_age_max = Duration::from_millis(30);
        let log = open(&storage, config).await;
        log.append(make_batch(1, 10, 1), 0).await.unwrap();
        log.wait_durable(Offset(1)).await.unwrap();
        log.append(make_batch(1, 10, 1), 0).await.unwrap();
        log.wait_durable(Offset(2)).await.unwrap();
        assert_eq!(log.segment_count(), 1, "a young segment is not rolled");
        glommio::timer::sleep(Duration::from_millis(50)).await;
        log.append(make_batch(1, 10, 1), 0).await.unwrap();
        log.wait_durable(Offset(3)).await.unwrap();
        assert_eq!(log.segment_count(), 2, "the next append after segment.ms rolls");
        assert_eq!(read_all(&log, Offset(0)).await.len(), 3);
        log.close().await.unwrap();
    });
}

#[test]
fn a_poisoned_log_still_closes_and_a_failed_roll_poisons_without_panicking() {
    run(|| async {
        let storage = SimStorage::new();
        let log = open(&storage, small_config()).await;
        log.append(make_batch(1, 10, 1), 0).await.unwrap();
        log.wait_durable(Offset(1)).await.unwrap();
        // The roll's first sync fails: the command reports it and the log refuses further appends.
        storage.fail_next_sync();
        assert!(log.roll().await.is_err());
        assert!(matches!(log.append(make_batch(1, 10, 1), 0).await, Err(LogError::Poisoned(_))));
        assert_eq!(log.read(Offset(0), 1 << 20, ReadBound::LogEnd, true).await.unwrap().len(), 1);
        // Closing a poisoned log returns (with the reason) instead of hanging.
        let closed = futures_lite::future::or(async { Some(log.close().await) }, async {
            glommio::timer::sleep(Duration::from_secs(5)).await;
            None
        })
        .await;
        assert!(closed.expect("close of a poisoned log hung").is_err());
    });
}

#[test]
fn sparse_offset_deltas_from_a_producer_are_refused() {
    run(|| async {
        let storage = SimStorage::new();
        let log = open(&storage, small_config()).await;
        let mut batch = make_batch(1, 10, 1).to_vec();
        // last_offset_delta = i32::MAX on a one-record batch: would overflow the segment's relative offsets.
        batch[23..27].copy_from_slice(&i32::MAX.to_be_bytes());
        let crc = crc32c::crc32c(&batch[21..]);
        batch[17..21].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(log.append(batch.into(), 0).await, Err(LogError::InvalidBatch(_))));
        assert_eq!(log.log_end_offset(), Offset(0));
        log.close().await.unwrap();
    });
}

#[test]
fn a_durability_wait_for_truncated_offsets_fails_instead_of_hanging() {
    run(|| async {
        let storage = SimStorage::new();
        let log = open(&storage, relaxed(small_config())).await;
        for _ in 0..10 {
            log.append(make_batch(1, 10, 1), 0).await.unwrap();
        }
        log.wait_durable(Offset(10)).await.unwrap();
        log.truncate_to(Offset(5)).await.unwrap();
        assert!(matches!(log.wait_durable(Offset(8)).await, Err(LogError::OffsetOutOfRange { .. })));
        log.close().await.unwrap();
    });
}

/// A reader catching up from disk: after its first disk read the log reads ahead into the shard cache, so later
/// sequential reads are cache hits; every batch still comes back exactly once and in order, across segment rolls,
/// and a truncation in the middle of the read-ahead never lets a stale batch be served.
#[test]
fn sequential_disk_reads_are_read_ahead_and_truncation_drops_what_was_read_ahead() {
    run(|| async {
        let storage = SimStorage::new();
        let config = LogConfig { segment_size_max: 256 * 1024, ..small_config() };
        let log = open(&storage, config.clone()).await;
        let mut sent = Vec::new();
        for index in 0..400 {
            let batch = make_batch(1 + index % 2, 1000, index as i64);
            log.append(batch.clone(), 0).await.unwrap();
            sent.push(batch);
        }
        log.wait_durable(log.log_end_offset()).await.unwrap();
        log.close().await.unwrap();
        assert!(storage_names(&storage).iter().filter(|name| name.ends_with(".log")).count() > 2);

        // Reopened: nothing is cached, so the first read goes to disk.
        let cache = BatchCache::new(4 << 20);
        let log = Log::open(storage.clone(), directory(), config.clone(), cache.clone()).await.unwrap();
        let mut read = Vec::new();
        let mut offset = Offset(0);
        // Bounded: every read returns at least one batch.
        while offset < log.log_end_offset() {
            let batches = log.read(offset, 16 * 1024, ReadBound::LogEnd, true).await.unwrap();
            assert!(!batches.is_empty(), "nothing read at {offset}");
            assert_eq!(
                base_offset(&batches[0]),
                offset,
                "a sequential reader gets the batch it asked for first"
            );
            offset = last_offset(batches.last().unwrap()).next();
            read.extend(batches);
        }
        assert_eq!(read.len(), sent.len());
        for (stored, original) in read.iter().zip(&sent) {
            assert_eq!(unstamped(stored), unstamped(original));
        }
        let stats = cache.stats();
        assert!(
            stats.hits * 2 > stats.hits + stats.misses,
            "most sequential reads must be served by read-ahead: {stats:?}"
        );

        // Read part of the way (starting a read-ahead past it), truncate below that, write different batches: the
        // reader sees only the new ones.
        let middle = Offset(300);
        let batches = log.read(middle, 16 * 1024, ReadBound::LogEnd, true).await.unwrap();
        let after = last_offset(batches.last().unwrap()).next();
        let _ = log.read(after, 16 * 1024, ReadBound::LogEnd, true).await.unwrap();
        log.truncate_to(middle).await.unwrap();
        let mut replacement = Vec::new();
        for index in 0..50 {
            let batch = make_batch(3, 700, 10_000 + index);
            log.append(batch.clone(), 0).await.unwrap();
            replacement.push(batch);
        }
        log.wait_durable(log.log_end_offset()).await.unwrap();
        let mut offset = middle;
        let mut read = Vec::new();
        while offset < log.log_end_offset() {
            let batches = log.read(offset, 16 * 1024, ReadBound::LogEnd, true).await.unwrap();
            offset = last_offset(batches.last().unwrap()).next();
            read.extend(batches);
        }
        assert_eq!(read.len(), replacement.len());
        for (stored, original) in read.iter().zip(&replacement) {
            assert_eq!(unstamped(stored), unstamped(original));
        }
        log.close().await.unwrap();
    });
}
