//! The shard's open-file cache on real files: many logs of many segments through a cache of a few files keep at most
//! that many descriptors open (counted in /proc/self/fd, so a second descriptor per file would show), while reads of
//! every segment — after their files were closed — return exactly the bytes written.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step is the test failing

mod common;

use std::path::Path;

use common::*;
use sluice_storage::batch::testing::make_batch;
use sluice_storage::dma::DmaStorage;
use sluice_storage::{BatchCache, Log, LogConfig, Offset, ReadBound, Storage};

const FILES_MAX: usize = 6;
const LOG_COUNT: usize = 4;

/// Descriptors of this process open on files under `directory`.
fn descriptors_under(directory: &Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter(|target| target.starts_with(directory))
        .count()
}

fn check_bound(storage: &DmaStorage, directory: &Path, when: &str) {
    let stats = storage.open_files().stats();
    assert!(stats.open_count <= FILES_MAX, "{when}: {stats:?}");
    let descriptors = descriptors_under(directory);
    assert!(
        descriptors <= FILES_MAX,
        "{when}: {descriptors} descriptors open under the data directory, cap {FILES_MAX}"
    );
}

async fn open_logs(storage: &DmaStorage, directory: &Path, config: &LogConfig) -> Vec<Log<DmaStorage>> {
    let mut logs = Vec::new();
    for index in 0..LOG_COUNT {
        let path = directory.join(format!("topic-{index}"));
        logs.push(Log::open(storage.clone(), path, config.clone(), BatchCache::new(1 << 20)).await.unwrap());
    }
    logs
}

#[test]
fn many_segments_through_a_small_cache_stay_within_its_cap_and_read_back_exactly() {
    let scratch = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let directory = scratch.path().canonicalize().unwrap();
    run(move || async move {
        let config = small_config();
        let storage = DmaStorage::new(&directory, FILES_MAX).await.unwrap();
        let logs = open_logs(&storage, &directory, &config).await;
        // Appends go round the logs, so every flush opens a file another log's flush let go.
        let mut sent: Vec<Vec<(Offset, bytes::Bytes)>> = vec![Vec::new(); LOG_COUNT];
        for round in 0..300 {
            for (index, log) in logs.iter().enumerate() {
                let batch = make_batch(
                    1 + round % 3,
                    300 + (round as usize * 53 + index * 7) % 700,
                    i64::from(round),
                );
                let info = log.append(batch.clone(), 0).await.unwrap();
                log.wait_durable(log.log_end_offset()).await.unwrap();
                sent[index].push((info.base_offset, batch));
            }
            check_bound(&storage, &directory, &format!("appending, round {round}"));
        }
        let segment_count: usize = logs.iter().map(|log| log.segment_count()).sum();
        assert!(segment_count >= 10 * FILES_MAX, "only {segment_count} segments");
        for log in &logs {
            log.close().await.unwrap();
        }
        drop(logs);
        check_bound(&storage, &directory, "after close");

        // Reopened (recovery reads every segment through the cache) with empty batch caches: every read goes to disk.
        let logs = open_logs(&storage, &directory, &config).await;
        check_bound(&storage, &directory, "after recovery");
        let evicted_before = storage.open_files().stats().evicted_count;
        for (log, sent) in logs.iter().zip(&sent) {
            for (offset, original) in sent {
                let read = log.read(*offset, 1, ReadBound::LogEnd, true).await.unwrap();
                assert_eq!(base_offset(&read[0]), *offset);
                assert_eq!(unstamped(&read[0]), unstamped(original), "batch at {offset}");
            }
            check_bound(&storage, &directory, "reading");
        }
        let stats = storage.open_files().stats();
        assert!(
            stats.evicted_count > evicted_before,
            "reads of {segment_count} segments closed no file: {stats:?}"
        );
        // Reads in flight at once, over every segment of every log: each holds its file, the cache closes only idle
        // ones, and every read gets its bytes.
        let reads = logs.iter().zip(&sent).flat_map(|(log, sent)| {
            sent.iter().step_by(7).map(move |(offset, original)| {
                let log = log.clone();
                let (offset, original) = (*offset, original.clone());
                glommio::spawn_local(async move {
                    let read = log.read(offset, 1, ReadBound::LogEnd, true).await.unwrap();
                    assert_eq!(unstamped(&read[0]), unstamped(&original), "concurrent read at {offset}");
                })
            })
        });
        for read in reads.collect::<Vec<_>>() {
            read.await;
        }
        for log in &logs {
            log.close().await.unwrap();
        }
        check_bound(&storage, &directory, "at the end");
    });
}
