//! Follower appends (`Log::append_replicated`) on the simulated disk: batches are stored exactly as the leader
//! wrote them, a gap or an overlap is refused without changing the log, and what was acknowledged survives a crash.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step is the test failing

mod common;

use bytes::Bytes;
use common::*;
use sluice_storage::batch::stamp_batch;
use sluice_storage::batch::testing::make_batch;
use sluice_storage::{LogError, Offset, SimStorage};

/// Batches as a leader's log holds them: contiguous offsets from `from`, leader epochs rising every 4 batches.
fn leader_batches(from: Offset, count: usize) -> Vec<Bytes> {
    let mut offset = from;
    (0..count)
        .map(|index| {
            let mut batch =
                make_batch(1 + (index % 3) as i32, 40 + (index * 29) % 300, index as i64).to_vec();
            stamp_batch(&mut batch, offset, 1 + (index / 4) as i32);
            offset = last_offset(&batch).next();
            Bytes::from(batch)
        })
        .collect()
}

fn joined(batches: &[Bytes]) -> Bytes {
    Bytes::from(batches.concat())
}

fn leader_epoch(batch: &[u8]) -> i32 {
    i32::from_be_bytes(batch[12..16].try_into().unwrap())
}

#[test]
fn replicated_batches_are_stored_exactly_as_the_leader_wrote_them() {
    run(|| async {
        let storage = SimStorage::new();
        let log = open(&storage, small_config()).await;
        let batches = leader_batches(Offset(0), 40);
        let mut appended = 0;
        // Record sets of 1 to 5 batches, as a fetch response would bring them.
        for size in (1..=5).cycle() {
            if appended == batches.len() {
                break;
            }
            let set = &batches[appended..(appended + size).min(batches.len())];
            let info = log.append_replicated(joined(set)).await.unwrap();
            assert_eq!(info.base_offset, base_offset(&set[0]));
            assert_eq!(info.last_offset, last_offset(set.last().unwrap()));
            assert_eq!(info.append_time_ms, -1);
            appended += set.len();
        }
        let end = last_offset(batches.last().unwrap()).next();
        assert_eq!(log.log_end_offset(), end);
        log.wait_durable(end).await.unwrap();
        assert!(log.segment_count() > 1, "the follower rolled segments as the leader did");
        let stored = read_all(&log, Offset(0)).await;
        assert_eq!(stored, batches, "offsets, epochs and CRCs are the leader's, byte for byte");
        log.close().await.unwrap();
    });
}

#[test]
fn a_gap_or_an_overlap_is_refused_and_changes_nothing() {
    run(|| async {
        let storage = SimStorage::new();
        let log = open(&storage, small_config()).await;
        let batches = leader_batches(Offset(0), 6);
        log.append_replicated(joined(&batches[..2])).await.unwrap();
        let end = log.log_end_offset();
        let expected = base_offset(&batches[2]);
        assert_eq!(end, expected);
        let check = |result: Result<_, LogError>, base: Offset| match result {
            Err(LogError::UnexpectedOffset { expected: reported, base_offset }) => {
                assert_eq!((reported, base_offset), (expected, base));
            }
            other => panic!("expected UnexpectedOffset at {base}, got {other:?}"),
        };
        // A gap at the log end, an overlap with what is stored, and a gap inside the record set.
        check(log.append_replicated(batches[3].clone()).await, base_offset(&batches[3]));
        check(log.append_replicated(batches[1].clone()).await, base_offset(&batches[1]));
        let inner_gap = joined(&[batches[2].clone(), batches[4].clone()]);
        match log.append_replicated(inner_gap).await {
            Err(LogError::UnexpectedOffset { expected, base_offset: base }) => {
                assert_eq!((expected, base), (base_offset(&batches[3]), base_offset(&batches[4])));
            }
            other => panic!("expected a gap inside the record set, got {other:?}"),
        }
        // Damaged input is refused as `append` refuses it.
        let mut damaged = batches[2].to_vec();
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        assert!(matches!(log.append_replicated(damaged.into()).await, Err(LogError::InvalidBatch(_))));
        assert!(matches!(log.append_replicated(Bytes::new()).await, Err(LogError::InvalidBatch(_))));
        let mut config = small_config();
        config.batch_size_max = 16;
        log.update_config(config).unwrap();
        assert!(matches!(
            log.append_replicated(batches[2].clone()).await,
            Err(LogError::BatchTooLarge { .. })
        ));
        log.update_config(small_config()).unwrap();
        assert_eq!(log.log_end_offset(), end, "refused appends change nothing");
        // The log continues where it was.
        log.append_replicated(joined(&batches[2..])).await.unwrap();
        log.wait_durable(log.log_end_offset()).await.unwrap();
        assert_eq!(read_all(&log, Offset(0)).await, batches);
        log.close().await.unwrap();
    });
}

#[test]
fn a_compacted_batch_with_offset_gaps_inside_is_accepted() {
    run(|| async {
        let storage = SimStorage::new();
        let log = open(&storage, small_config()).await;
        // Two records left of a batch that spanned offsets 0..=4: compaction keeps the delta, drops records.
        let mut batch = make_batch(2, 10, 1).to_vec();
        batch[23..27].copy_from_slice(&4i32.to_be_bytes());
        let crc = crc32c::crc32c(&batch[21..]);
        batch[17..21].copy_from_slice(&crc.to_be_bytes());
        let info = log.append_replicated(batch.into()).await.unwrap();
        assert_eq!((info.base_offset, info.last_offset), (Offset(0), Offset(4)));
        assert_eq!(log.log_end_offset(), Offset(5));
        log.close().await.unwrap();
    });
}

#[test]
fn acknowledged_replicated_batches_survive_a_crash_and_the_follower_continues() {
    for seed in 0..8u64 {
        run(move || async move {
            let storage = SimStorage::new();
            let batches = leader_batches(Offset(0), 30);
            let log = open(&storage, small_config()).await;
            log.append_replicated(joined(&batches[..20])).await.unwrap();
            let acknowledged = log.log_end_offset();
            log.wait_durable(acknowledged).await.unwrap();
            // Unacknowledged: may or may not survive, but only as a prefix.
            log.append_replicated(joined(&batches[20..])).await.unwrap();
            log.abandon().await;
            storage.crash(seed);

            let log = open(&storage, small_config()).await;
            let end = log.log_end_offset();
            assert!(
                end >= acknowledged,
                "seed {seed}: recovered end {end} below acknowledged {acknowledged}"
            );
            let stored = read_all(&log, Offset(0)).await;
            assert_eq!(stored[..], batches[..stored.len()], "seed {seed}: a prefix of the leader's batches");
            assert!(stored
                .iter()
                .zip(&batches)
                .all(|(left, right)| leader_epoch(left) == leader_epoch(right)));
            // The follower fetches on from its recovered end.
            let next = batches.iter().position(|batch| base_offset(batch) == end).unwrap_or(batches.len());
            if next < batches.len() {
                log.append_replicated(joined(&batches[next..])).await.unwrap();
            }
            log.wait_durable(log.log_end_offset()).await.unwrap();
            assert_eq!(read_all(&log, Offset(0)).await, batches, "seed {seed}");
            log.close().await.unwrap();
        });
    }
}
