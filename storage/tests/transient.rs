//! Transient storage errors on the simulated disk: failures before any byte reaches the kernel (fallocate, no
//! descriptor for a new segment) stall a log without poisoning it; a failed write or sync poisons it until the
//! flusher has re-verified its tail from disk, which it does by itself once the fault clears. Either way no
//! sequenced batch is lost, no offset is reused, and whatever was acknowledged survives a crash.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step is the test failing

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use sluice_storage::batch::testing::make_batch;
use sluice_storage::{BatchCache, Log, LogConfig, LogError, Offset, SegmentSpace, SimStorage};

/// Waits (a bounded while) until everything below `end` is durable, through failures and repairs.
async fn settle(log: &Log<SimStorage>, end: Offset) {
    let waited =
        futures_lite::future::or(async { Some(log.wait_durable_through_failures(end).await) }, async {
            glommio::timer::sleep(Duration::from_secs(10)).await;
            None
        })
        .await;
    waited.expect("the log did not recover within 10 s").expect("durable after the fault cleared");
}

/// Waits (a bounded while) until the log is no longer poisoned.
async fn wait_repaired(log: &Log<SimStorage>) {
    for _ in 0..1000 {
        if log.poisoned().is_none() {
            return;
        }
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    panic!("not repaired within 10 s: {:?}", log.poisoned());
}

/// Appends `count` batches and returns what was sent, with the offsets the log gave them.
async fn append_some(log: &Log<SimStorage>, count: usize, seed: u64) -> Vec<(Offset, Bytes)> {
    let mut sent = Vec::new();
    for index in 0..count {
        let batch = make_batch(2, 300, (seed * 1000 + index as u64) as i64);
        let info = log.append(batch.clone(), 0).await.unwrap();
        sent.push((info.base_offset, batch));
    }
    sent
}

/// Every batch sent is in the log once, in order, at its offset, with the bytes sent.
async fn verify_all(log: &Log<SimStorage>, sent: &[(Offset, Bytes)]) {
    let stored = read_all(log, Offset(0)).await;
    assert_eq!(stored.len(), sent.len(), "batch count");
    for ((offset, batch), stored) in sent.iter().zip(&stored) {
        assert_eq!(base_offset(stored), *offset, "offset of a stored batch");
        assert_eq!(unstamped(stored), unstamped(batch), "bytes of the batch at {offset}");
    }
    let mut expected = Offset(0);
    for (offset, batch) in sent {
        assert_eq!(*offset, expected, "offsets handed out are contiguous, none reused");
        expected = last_offset(batch).0.checked_add(offset.0).map(Offset).unwrap().next();
    }
}

/// After a power cut, the log holds at least every batch below `acknowledged`, as sent.
async fn verify_after_crash(
    storage: &SimStorage,
    log: Log<SimStorage>,
    config: LogConfig,
    sent: &[(Offset, Bytes)],
) {
    let acknowledged = log.durable_offset();
    log.abandon().await;
    storage.crash(7);
    let log = open(storage, config).await;
    assert!(
        log.log_end_offset() >= acknowledged,
        "acknowledged data lost: {} < {acknowledged}",
        log.log_end_offset()
    );
    let kept: Vec<_> = sent.iter().filter(|(offset, _)| *offset < log.log_end_offset()).cloned().collect();
    verify_all(&log, &kept).await;
    log.close().await.unwrap();
}

#[test]
fn a_failed_fallocate_stalls_without_poisoning_and_the_next_append_succeeds() {
    run(|| async {
        let storage = SimStorage::new();
        let mut config = small_config();
        config.segment_space = SegmentSpace::Fallocate { step: 8 * 1024 };
        let log = open(&storage, config.clone()).await;
        let mut sent = append_some(&log, 3, 1).await;
        log.wait_durable(log.log_end_offset()).await.unwrap();
        // Enough bytes to need more space than the first allocation reserved.
        storage.fail_next_allocate();
        sent.extend(append_some(&log, 20, 2).await);
        let error = log.wait_durable(log.log_end_offset()).await.unwrap_err();
        assert!(matches!(error, LogError::Stalled(_)), "{error}");
        assert!(error.to_string().contains("No space left on device"), "{error}");
        assert_eq!(log.poisoned(), None, "an allocation failure changed no byte: no poisoning");
        // The next append is accepted and retries the write at once: it and the stalled ones become durable.
        sent.extend(append_some(&log, 1, 3).await);
        log.wait_durable(log.log_end_offset()).await.unwrap();
        assert_eq!((log.stalled(), log.repair_count()), (None, 0));
        verify_all(&log, &sent).await;
        verify_after_crash(&storage, log, config, &sent).await;
    });
}

#[test]
fn no_descriptor_for_a_new_segment_stalls_the_roll_without_poisoning() {
    run(|| async {
        let storage = SimStorage::new();
        let config = small_config();
        let log = open(&storage, config.clone()).await;
        let mut sent = append_some(&log, 10, 1).await;
        log.wait_durable(log.log_end_offset()).await.unwrap();
        let segments_before = log.segment_count();
        storage.set_descriptors_exhausted(true);
        // More than a segment's worth: the flush must roll, and opening the new segment's files fails (EMFILE).
        sent.extend(append_some(&log, 40, 2).await);
        let error = log.wait_durable(log.log_end_offset()).await.unwrap_err();
        assert!(matches!(error, LogError::Stalled(_)), "{error}");
        assert!(error.to_string().contains("Too many open files"), "{error}");
        assert_eq!(log.poisoned(), None);
        // Still out of descriptors: the next append is accepted, and its own attempt fails again.
        sent.extend(append_some(&log, 1, 3).await);
        assert!(matches!(log.wait_durable(log.log_end_offset()).await, Err(LogError::Stalled(_))));
        storage.set_descriptors_exhausted(false);
        sent.extend(append_some(&log, 1, 4).await);
        log.wait_durable(log.log_end_offset()).await.unwrap();
        assert!(log.segment_count() > segments_before, "the roll went through once descriptors came back");
        assert_eq!(log.repair_count(), 0, "never poisoned, never repaired");
        verify_all(&log, &sent).await;
        // The sealed segment and the new one reopen cleanly.
        log.close().await.unwrap();
        let log = open(&storage, config.clone()).await;
        verify_all(&log, &sent).await;
        verify_after_crash(&storage, log, config, &sent).await;
    });
}

/// Opens another log on the same simulated disk and makes one batch durable in it: its files push the first
/// log's out of the shard's open-file cache (4 files in `SimStorage::new`).
async fn other_log(storage: &SimStorage, index: usize, config: &LogConfig) -> Log<SimStorage> {
    let path = std::path::PathBuf::from(format!("/sim/other-{index}"));
    let log = Log::open(storage.clone(), path, config.clone(), BatchCache::new(1 << 20)).await.unwrap();
    append_some(&log, 1, 100 + index as u64).await;
    log.wait_durable(log.log_end_offset()).await.unwrap();
    log
}

/// With the open-file cache a descriptor is needed not only for a new segment but to reopen a file the cache
/// closed: the index files at a roll's seal, the active `.log` at a flush. EMFILE there changes nothing on disk
/// either, so it stalls the log (never poisons it), and the log goes on once descriptors are back.
#[test]
fn no_descriptor_to_reopen_a_file_the_cache_closed_stalls_without_poisoning() {
    run(|| async {
        let storage = SimStorage::new();
        let config = small_config();
        let log = open(&storage, config.clone()).await;
        let mut sent = append_some(&log, 10, 1).await;
        log.wait_durable(log.log_end_offset()).await.unwrap();
        // Another log's three files close the least recently used of this one: its index files, untouched since
        // the segment was created (index entries are written at the seal).
        let mut others = vec![other_log(&storage, 0, &config).await];
        let segments_before = log.segment_count();
        storage.set_descriptors_exhausted(true);
        // A segment's worth: the flush rolls, and the seal needs the index files again.
        sent.extend(append_some(&log, 30, 2).await);
        let error = log.wait_durable(log.log_end_offset()).await.unwrap_err();
        assert!(matches!(error, LogError::Stalled(_)), "{error}");
        assert!(error.to_string().contains("Too many open files"), "{error}");
        assert_eq!(log.poisoned(), None);
        storage.set_descriptors_exhausted(false);
        sent.extend(append_some(&log, 1, 3).await);
        log.wait_durable(log.log_end_offset()).await.unwrap();
        assert!(log.segment_count() > segments_before, "the roll went through once descriptors came back");
        // Four other logs close every file of this one, the active `.log` too: the next flush must reopen it.
        for index in 1..5 {
            others.push(other_log(&storage, index, &config).await);
        }
        storage.set_descriptors_exhausted(true);
        sent.extend(append_some(&log, 1, 4).await);
        let error = log.wait_durable(log.log_end_offset()).await.unwrap_err();
        assert!(matches!(error, LogError::Stalled(_)), "{error}");
        assert_eq!(log.poisoned(), None);
        storage.set_descriptors_exhausted(false);
        sent.extend(append_some(&log, 1, 5).await);
        log.wait_durable(log.log_end_offset()).await.unwrap();
        assert_eq!(log.repair_count(), 0, "never poisoned, never repaired");
        verify_all(&log, &sent).await;
        for other in others {
            other.close().await.unwrap();
        }
        log.close().await.unwrap();
        let log = open(&storage, config.clone()).await;
        verify_all(&log, &sent).await;
        verify_after_crash(&storage, log, config, &sent).await;
    });
}

#[test]
fn a_full_disk_at_write_poisons_until_space_is_freed_then_the_log_repairs_itself() {
    run(|| async {
        let storage = SimStorage::new();
        let config = small_config();
        let log = open(&storage, config.clone()).await;
        let mut sent = append_some(&log, 5, 1).await;
        log.wait_durable(log.log_end_offset()).await.unwrap();
        let acknowledged = log.durable_offset();
        // The log start checkpoint exists before the disk fills (creating a file needs space; rewriting it not).
        log.delete_before(Offset(0)).await.unwrap();
        storage.set_disk_full(true);
        sent.extend(append_some(&log, 20, 2).await);
        let sequenced = log.log_end_offset();
        let error = log.wait_durable(sequenced).await.unwrap_err();
        assert!(matches!(error, LogError::Poisoned(_)), "{error}");
        assert!(error.to_string().contains("No space left on device"), "{error}");
        assert!(matches!(log.append(make_batch(1, 10, 1), 0).await, Err(LogError::Poisoned(_))));
        // DeleteRecords works on the poisoned log: it is how an operator frees space.
        assert_eq!(log.delete_before(Offset(0)).await.unwrap(), Offset(0));
        // While the disk stays full the repairs succeed and the writes fail again, with a growing backoff.
        glommio::timer::sleep(Duration::from_millis(100)).await;
        assert!(log.poisoned().is_some() || log.repair_count() > 0);
        assert_eq!(log.durable_offset(), acknowledged);
        assert_eq!(log.log_end_offset(), sequenced, "nothing sequenced is dropped");
        storage.set_disk_full(false);
        settle(&log, sequenced).await;
        assert_eq!(log.poisoned(), None);
        assert!(log.repair_count() >= 1);
        sent.extend(append_some(&log, 3, 3).await);
        log.wait_durable(log.log_end_offset()).await.unwrap();
        verify_all(&log, &sent).await;
        verify_after_crash(&storage, log, config, &sent).await;
    });
}

/// fsyncgate: after a failed fdatasync the kernel may have dropped the written pages, and a later sync then
/// succeeds without them. The simulated disk does exactly that, so only a repair that writes the tail again makes
/// the batches durable: the crash at the end finds them.
#[test]
fn a_failed_sync_poisons_and_the_repair_writes_the_tail_again() {
    for segment_space in SEGMENT_SPACES {
        run(move || async move {
            let storage = SimStorage::new();
            let mut config = small_config();
            config.segment_space = segment_space;
            let log = open(&storage, config.clone()).await;
            let mut sent = append_some(&log, 5, 1).await;
            log.wait_durable(log.log_end_offset()).await.unwrap();
            storage.fail_next_sync();
            sent.extend(append_some(&log, 4, 2).await);
            let sequenced = log.log_end_offset();
            let error = log.wait_durable(sequenced).await.unwrap_err();
            assert!(matches!(error, LogError::Poisoned(_)), "{error}");
            // The fault was one sync: the repair comes by itself, within the first retries.
            settle(&log, sequenced).await;
            assert_eq!(log.repair_count(), 1);
            sent.extend(append_some(&log, 2, 3).await);
            log.wait_durable(log.log_end_offset()).await.unwrap();
            verify_all(&log, &sent).await;
            assert_eq!(log.durable_offset(), log.log_end_offset());
            verify_after_crash(&storage, log, config, &sent).await;
        });
    }
}

#[test]
fn a_torn_write_poisons_and_the_repair_cuts_the_torn_bytes_and_writes_them_again() {
    run(|| async {
        let storage = SimStorage::new();
        let config = small_config();
        let log = open(&storage, config.clone()).await;
        let mut sent = append_some(&log, 5, 1).await;
        log.wait_durable(log.log_end_offset()).await.unwrap();
        storage.tear_next_write(1);
        sent.extend(append_some(&log, 6, 2).await);
        let sequenced = log.log_end_offset();
        assert!(matches!(log.wait_durable(sequenced).await, Err(LogError::Poisoned(_))));
        settle(&log, sequenced).await;
        assert_eq!(log.repair_count(), 1);
        verify_all(&log, &sent).await;
        verify_after_crash(&storage, log, config, &sent).await;
    });
}

/// A failed sync while a roll seals the old segment leaves the log without a writer; the repair reopens it.
#[test]
fn a_failed_sync_during_a_roll_is_repaired() {
    run(|| async {
        let storage = SimStorage::new();
        let config = small_config();
        let log = open(&storage, config.clone()).await;
        let mut sent = append_some(&log, 3, 1).await;
        log.wait_durable(log.log_end_offset()).await.unwrap();
        storage.fail_next_sync();
        assert!(log.roll().await.is_err());
        wait_repaired(&log).await;
        log.roll().await.unwrap();
        sent.extend(append_some(&log, 40, 2).await);
        log.wait_durable(log.log_end_offset()).await.unwrap();
        verify_all(&log, &sent).await;
        log.close().await.unwrap();
        let log = open(&storage, config.clone()).await;
        verify_all(&log, &sent).await;
        verify_after_crash(&storage, log, config, &sent).await;
    });
}
