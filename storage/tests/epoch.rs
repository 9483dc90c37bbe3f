//! The leader epoch cache of a log on the simulated disk: kept by appends (leader and replicated), truncation and
//! DeleteRecords, persisted in Kafka's checkpoint format, and consistent with the batches after a crash at any sync
//! point.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step is the test failing

mod common;

use bytes::Bytes;
use common::*;
use sluice_storage::batch::testing::make_batch;
use sluice_storage::epoch::LEADER_EPOCH_CHECKPOINT;
use sluice_storage::{EpochEntry, Log, Offset, SimStorage};

fn entries(log: &Log<SimStorage>) -> Vec<(i32, i64)> {
    log.leader_epochs().iter().map(|entry: &EpochEntry| (entry.epoch, entry.start_offset.0)).collect()
}

fn leader_epoch(batch: &[u8]) -> i32 {
    i32::from_be_bytes(batch[12..16].try_into().unwrap())
}

/// The entries a log's batches imply: each batch whose epoch is larger than every earlier one starts an entry.
fn entries_of(batches: &[Bytes]) -> Vec<(i32, i64)> {
    let mut entries: Vec<(i32, i64)> = Vec::new();
    for batch in batches {
        let epoch = leader_epoch(batch);
        if epoch >= 0 && entries.last().is_none_or(|&(latest, _)| epoch > latest) {
            entries.push((epoch, base_offset(batch).0));
        }
    }
    entries
}

#[test]
fn appends_record_new_epochs_and_answer_offset_for_leader_epoch() {
    run(|| async {
        let storage = SimStorage::new();
        let log = open(&storage, small_config()).await;
        assert_eq!(log.latest_leader_epoch(), None);
        assert_eq!(log.end_offset_for_leader_epoch(0), None);
        for epoch in [0, 0, 2, 2, 5] {
            log.append(make_batch(2, 10, 1), epoch).await.unwrap();
        }
        // An older epoch (a stale leader's append) does not go back in the cache.
        log.append(make_batch(2, 10, 1), 3).await.unwrap();
        assert_eq!(entries(&log), [(0, 0), (2, 4), (5, 8)]);
        assert_eq!(log.latest_leader_epoch(), Some(5));
        let cases =
            [(0, Some((0, 4))), (1, Some((0, 4))), (2, Some((2, 8))), (4, Some((2, 8))), (5, Some((5, 12)))];
        for (requested, expected) in cases {
            let found = log.end_offset_for_leader_epoch(requested).map(|(epoch, offset)| (epoch, offset.0));
            assert_eq!(found, expected, "epoch {requested}");
        }
        assert_eq!(log.end_offset_for_leader_epoch(6), None);
        log.wait_durable(log.log_end_offset()).await.unwrap();
        let file = storage.file_contents(&directory().join(LEADER_EPOCH_CHECKPOINT)).unwrap();
        assert_eq!(String::from_utf8(file).unwrap(), "0\n3\n0 0\n2 4\n5 8\n", "Kafka's checkpoint format");
        log.close().await.unwrap();
        let log = open(&storage, small_config()).await;
        assert_eq!(entries(&log), [(0, 0), (2, 4), (5, 8)], "loaded at open");
        log.close().await.unwrap();
    });
}

#[test]
fn truncation_and_delete_records_trim_the_cache_and_persist_it() {
    run(|| async {
        let storage = SimStorage::new();
        let log = open(&storage, small_config()).await;
        for epoch in [1, 1, 3, 3, 4, 4] {
            log.append(make_batch(1, 10, 1), epoch).await.unwrap();
        }
        assert_eq!(entries(&log), [(1, 0), (3, 2), (4, 4)]);
        log.wait_durable(Offset(6)).await.unwrap();
        // A follower truncating its divergent tail: the entry starting at the new end goes.
        log.truncate_to(Offset(4)).await.unwrap();
        assert_eq!(entries(&log), [(1, 0), (3, 2)]);
        assert_eq!(log.end_offset_for_leader_epoch(3), Some((3, Offset(4))));
        // The new leader's epoch starts at the truncated end.
        log.append(make_batch(1, 10, 1), 6).await.unwrap();
        assert_eq!(entries(&log), [(1, 0), (3, 2), (6, 4)]);
        log.delete_before(Offset(3)).await.unwrap();
        assert_eq!(entries(&log), [(3, 3), (6, 4)], "epoch 3 now starts at the new log start");
        log.close().await.unwrap();
        let log = open(&storage, small_config()).await;
        assert_eq!(entries(&log), [(3, 3), (6, 4)]);
        log.close().await.unwrap();
    });
}

#[test]
fn replicated_appends_carry_the_leaders_epochs() {
    run(|| async {
        let leader_storage = SimStorage::new();
        let leader = open(&leader_storage, small_config()).await;
        for epoch in [1, 1, 2, 7, 7] {
            leader.append(make_batch(2, 20, 1), epoch).await.unwrap();
        }
        let batches = read_all(&leader, Offset(0)).await;
        let follower_storage = SimStorage::new();
        let follower = open(&follower_storage, small_config()).await;
        follower.append_replicated(Bytes::from(batches.concat())).await.unwrap();
        assert_eq!(entries(&follower), entries(&leader));
        assert_eq!(entries(&follower), [(1, 0), (2, 4), (7, 6)]);
        follower.close().await.unwrap();
        leader.close().await.unwrap();
    });
}

#[test]
fn a_missing_or_damaged_checkpoint_starts_an_empty_cache() {
    run(|| async {
        let storage = SimStorage::new();
        let log = open(&storage, small_config()).await;
        log.append(make_batch(1, 10, 1), 2).await.unwrap();
        log.close().await.unwrap();
        let path = directory().join(LEADER_EPOCH_CHECKPOINT);
        storage.flip_bit(&path, 0, 0); // version "0" becomes "1"
        let log = open(&storage, small_config()).await;
        assert_eq!(entries(&log), [], "an unreadable checkpoint is not trusted");
        log.append(make_batch(1, 10, 1), 3).await.unwrap();
        assert_eq!(entries(&log), [(3, 1)]);
        log.close().await.unwrap();
        let log = open(&storage, small_config()).await;
        assert_eq!(entries(&log), [(3, 1)], "the next write replaced the damaged file");
        log.close().await.unwrap();
    });
}

/// Appends with rising epochs, each acknowledged after `wait_durable`; returns the acknowledged end.
async fn epoch_workload(storage: &SimStorage) -> Offset {
    let Ok(log) =
        Log::open(storage.clone(), directory(), small_config(), sluice_storage::BatchCache::new(1 << 20))
            .await
    else {
        return Offset(0);
    };
    let mut acknowledged = Offset(0);
    for index in 0..24 {
        let Ok(info) = log.append(make_batch(1 + (index % 2), 300, 1), index / 3).await else { break };
        if log.wait_durable(info.last_offset.next()).await.is_err() {
            break;
        }
        acknowledged = info.last_offset.next();
    }
    log.abandon().await;
    acknowledged
}

/// A crash at every sync point leaves a cache that says exactly what the recovered batches say: the checkpoint is
/// written before the batches that start an epoch, and entries past the recovered end are dropped at open.
#[test]
fn after_a_crash_at_any_sync_point_the_cache_matches_the_batches() {
    run(|| async {
        let dry = SimStorage::new();
        epoch_workload(&dry).await;
        let sync_points = dry.sync_count();
        for sync_point in 0..=sync_points {
            for seed in 0..2u64 {
                let storage = SimStorage::new();
                storage.halt_after_syncs(sync_point);
                let acknowledged = epoch_workload(&storage).await;
                storage.crash(sync_point * 5 + seed);
                let log = open(&storage, small_config()).await;
                assert!(
                    log.log_end_offset() >= acknowledged,
                    "sync point {sync_point}: acknowledged data lost"
                );
                let batches = read_all(&log, Offset(0)).await;
                assert_eq!(entries(&log), entries_of(&batches), "sync point {sync_point}, seed {seed}");
                log.close().await.unwrap();
            }
        }
    });
}
