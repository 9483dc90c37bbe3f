//! The same storage on real files through glommio direct I/O: the probe workaround, and recovery after an
//! unclean stop, damaged durable data and a lost index.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step is the test failing

mod common;

use std::path::{Path, PathBuf};

use common::*;
use sluice_storage::batch::testing::make_batch;
use sluice_storage::dma::DmaStorage;
use sluice_storage::{BatchCache, Log, Offset, ReadBound, Storage, StorageFile};

fn scratch_directory() -> tempfile::TempDir {
    // Under the target directory: on the same (ext4) device as the build, never tmpfs, which refuses O_DIRECT.
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("scratch directory")
}

/// Opens an empty file read+write first (as a brand-new segment is), then reads a non-empty one with glommio's
/// own DMA read.
async fn read_after_opening_an_empty_file(storage: DmaStorage, directory: &Path) -> std::io::Result<usize> {
    let data_path = directory.join("data");
    std::fs::write(&data_path, vec![7u8; 8192]).unwrap();
    let empty = storage.open(&directory.join("empty"), true).await?;
    let data = glommio::io::OpenOptions::new().read(true).dma_open(&data_path).await?;
    let result = data.read_at_aligned(0, 4096).await.map(|bytes| bytes.len()).map_err(std::io::Error::from);
    let _ = empty.close().await;
    let _ = data.close().await;
    result
}

#[test]
fn glommio_probe_bug_is_real_and_worked_around() {
    // Without the workaround the first readable DMA file an executor opens decides polled-I/O support for the
    // device; an empty one makes every later DMA read fail with EOPNOTSUPP. This half documents the bug: if it
    // ever stops failing, glommio was fixed and the workaround can go.
    let scratch = scratch_directory();
    let directory = scratch.path().to_path_buf();
    let without = run(move || async move {
        read_after_opening_an_empty_file(DmaStorage::without_probe_workaround(), &directory).await
    });
    let error = without.expect_err("glommio's probe bug no longer reproduces");
    assert!(error.to_string().contains("os error 95"), "expected EOPNOTSUPP, got {error}");

    // With the workaround (`DmaStorage::new` reads a non-empty probe file first) the same sequence works.
    let scratch = scratch_directory();
    let directory = scratch.path().to_path_buf();
    let with = run(move || async move {
        let storage = DmaStorage::new(&directory, 8).await.unwrap();
        read_after_opening_an_empty_file(storage, &directory).await
    });
    assert_eq!(with.expect("read with the workaround"), 4096);
}

async fn open_dma(directory: &Path) -> Log<DmaStorage> {
    let storage = DmaStorage::new(directory, 8).await.unwrap();
    Log::open(storage, directory.join("topic-0"), small_config(), BatchCache::new(1 << 20)).await.unwrap()
}

fn newest_segment(directory: &Path, suffix: &str) -> PathBuf {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(directory.join("topic-0"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.to_string_lossy().ends_with(suffix))
        .collect();
    paths.sort();
    paths.pop().unwrap()
}

#[test]
fn real_files_recover_after_an_unclean_stop_damage_and_a_lost_index() {
    let scratch = scratch_directory();
    let directory = scratch.path().to_path_buf();
    run(move || async move {
        // Write, then stop without closing: preallocated space and unsealed indexes are left behind.
        let log = open_dma(&directory).await;
        let mut sent = Vec::new();
        for index in 0..300 {
            let batch = make_batch(1 + index % 3, 100 + (index as usize * 13) % 400, index as i64);
            let info = log.append(batch.clone(), 0).await.unwrap();
            sent.push((info.base_offset, batch));
        }
        log.wait_durable(log.log_end_offset()).await.unwrap();
        let end = log.log_end_offset();
        log.abandon().await;
        let active = newest_segment(&directory, ".log");
        assert!(std::fs::metadata(&active).unwrap().len() > 0);

        let log = open_dma(&directory).await;
        assert_eq!(log.log_end_offset(), end, "unclean stop: everything synced is back");
        let read = read_all(&log, Offset(0)).await;
        assert_eq!(read.len(), sent.len());
        for (stored, (offset, original)) in read.iter().zip(&sent) {
            assert_eq!(base_offset(stored), *offset);
            assert_eq!(unstamped(stored), unstamped(original));
        }
        log.close().await.unwrap();

        // Damage the last batch of the newest segment after a clean close: durable data, so recovery keeps it,
        // says so, and answers reads of it with an error; appends go on after it in a new segment.
        let active = newest_segment(&directory, ".log");
        let mut bytes = std::fs::read(&active).unwrap();
        let length = bytes.len();
        bytes[length - 3] ^= 0x40;
        std::fs::write(&active, &bytes).unwrap();
        let log = open_dma(&directory).await;
        let damaged = sent.last().unwrap().0;
        assert_eq!(log.log_end_offset(), end, "the durable end stays");
        assert_eq!(log.recovery_report().truncated_size, 0);
        assert_eq!(log.recovery_report().corrupt_ranges.len(), 1);
        let read = log.read(damaged, 1 << 16, ReadBound::LogEnd, true).await;
        assert!(matches!(read, Err(sluice_storage::LogError::Corrupt(_))), "{read:?}");
        log.close().await.unwrap();

        // Delete the oldest segment's index: rebuilt from the log.
        let mut indexes: Vec<PathBuf> = std::fs::read_dir(directory.join("topic-0"))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|extension| extension == "index"))
            .collect();
        indexes.sort();
        let original = std::fs::read(&indexes[0]).unwrap();
        std::fs::remove_file(&indexes[0]).unwrap();
        let log = open_dma(&directory).await;
        assert!(log.recovery_report().rebuilt_index_count >= 1);
        assert_eq!(std::fs::read(&indexes[0]).unwrap(), original, "rebuilt index matches the original");
        assert_eq!(read_until(&log, Offset(0), damaged).await.len(), sent.len() - 1);
        assert_eq!(log.recovery_report().corrupt_ranges.len(), 1, "the damage is found again");
        log.close().await.unwrap();
    });
}

#[test]
fn unaligned_reads_return_exactly_the_bytes_asked_for_and_stop_at_the_end() {
    let scratch = scratch_directory();
    let directory = scratch.path().to_path_buf();
    run(move || async move {
        let storage = DmaStorage::new(&directory, 8).await.unwrap();
        let pattern: Vec<u8> = (0..10_000u32).map(|index| (index % 251) as u8).collect();
        let path = directory.join("pattern");
        std::fs::write(&path, &pattern).unwrap();
        let file = storage.open(&path, false).await.unwrap();
        for (position, size) in
            [(0usize, 10usize), (5000, 3000), (4095, 2), (8191, 1809), (9000, 4000), (12_000, 10)]
        {
            let read = file.read_at(position as u64, size).await.unwrap();
            let end = (position + size).min(pattern.len());
            let expected = if position < pattern.len() { &pattern[position..end] } else { &[][..] };
            assert_eq!(&read[..], expected, "read_at({position}, {size})");
        }
        file.close().await.unwrap();
    });
}

/// Read-ahead on real files, where a read-ahead is really in flight on the blocking pool when the next read comes:
/// two readers catching up at once, from the start and from the middle, each get every batch exactly once, in
/// order, with the bytes that were written — whether a read waited for a read-ahead, hit the cache, or went to disk.
#[test]
fn concurrent_catch_up_readers_get_every_batch_once_with_read_ahead_in_flight() {
    let scratch = scratch_directory();
    let directory = scratch.path().to_path_buf();
    run(move || async move {
        let config = sluice_storage::LogConfig { segment_size_max: 1 << 20, ..small_config() };
        let storage = DmaStorage::new(&directory, 8).await.unwrap();
        let log = Log::open(storage.clone(), directory.clone(), config.clone(), BatchCache::new(8 << 20))
            .await
            .unwrap();
        let mut sent = Vec::new();
        for index in 0..3000 {
            let batch = make_batch(1 + index % 3, 200 + (index as usize * 37) % 900, index as i64);
            let info = log.append(batch.clone(), 0).await.unwrap();
            sent.push((info.base_offset, batch));
        }
        log.wait_durable(log.log_end_offset()).await.unwrap();
        log.close().await.unwrap();

        // Reopened with an empty cache: everything comes from disk or from read-ahead.
        let cache = BatchCache::new(8 << 20);
        let log = Log::open(storage, directory.clone(), config, cache.clone()).await.unwrap();
        assert!(log.segment_count() > 2);
        let end = log.log_end_offset();
        let middle = sent[sent.len() / 2].0;
        let reader = |from: Offset| {
            let log = log.clone();
            glommio::spawn_local(async move {
                let mut batches = Vec::new();
                let mut offset = from;
                // Bounded: every read returns at least one batch.
                while offset < end {
                    let chunk = log.read(offset, 64 * 1024, ReadBound::LogEnd, true).await.unwrap();
                    assert!(!chunk.is_empty(), "nothing read at {offset}");
                    offset = last_offset(chunk.last().unwrap()).next();
                    batches.extend(chunk);
                }
                batches
            })
        };
        let (from_start, from_middle) = futures_lite::future::zip(reader(Offset(0)), reader(middle)).await;
        for (read, expected) in [(from_start, &sent[..]), (from_middle, &sent[sent.len() / 2..])] {
            assert_eq!(read.len(), expected.len());
            for (stored, (offset, original)) in read.iter().zip(expected) {
                assert_eq!(base_offset(stored), *offset);
                assert_eq!(unstamped(stored), unstamped(original));
            }
        }
        let stats = cache.stats();
        assert!(
            stats.hits > stats.misses,
            "sequential readers should mostly be served by read-ahead: {stats:?}"
        );
        log.close().await.unwrap();
    });
}

/// The leader epoch checkpoint on real files: direct-I/O block writes cut to the text, renamed into place, read
/// back by Kafka's tools' rules (plain text, no padding) and loaded at reopen.
#[test]
fn leader_epoch_checkpoint_on_real_files() {
    let scratch = scratch_directory();
    let directory = scratch.path().to_path_buf();
    run(move || async move {
        let log = open_dma(&directory).await;
        for epoch in [0, 4, 4, 9] {
            log.append(make_batch(2, 100, 1), epoch).await.unwrap();
        }
        log.wait_durable(log.log_end_offset()).await.unwrap();
        log.close().await.unwrap();
        let path = directory.join("topic-0").join(sluice_storage::epoch::LEADER_EPOCH_CHECKPOINT);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "0\n3\n0 0\n4 2\n9 6\n");
        let log = open_dma(&directory).await;
        assert_eq!(log.end_offset_for_leader_epoch(4), Some((4, Offset(6))));
        assert_eq!(log.latest_leader_epoch(), Some(9));
        log.close().await.unwrap();
    });
}

/// Segments retention drops leave the log's sight at once (renamed `*.deleted`, which recovery ignores) and are
/// freed in the background; what a stop leaves behind is cleared when the log opens again, and the log holds the
/// same batches.
#[test]
fn retention_frees_segments_in_the_background_and_a_restart_clears_leftovers() {
    let scratch = scratch_directory();
    let directory = scratch.path().to_path_buf();
    let partition = directory.join("topic-0");
    let config = sluice_storage::LogConfig { retention_size_max: Some(32 * 1024), ..small_config() };
    let (start, end, leftover) = run({
        let directory = directory.clone();
        let partition = partition.clone();
        move || async move {
            let storage = DmaStorage::new(&directory, 8).await.unwrap();
            let log = Log::open(storage, partition.clone(), config.clone(), BatchCache::new(1 << 20))
                .await
                .unwrap();
            for _ in 0..40 {
                let info = log.append(make_batch(4, 1000, 1), 0).await.unwrap();
                log.wait_durable(info.last_offset.next()).await.unwrap();
            }
            log.enforce_retention(i64::MAX).await.unwrap();
            let start = log.log_start_offset();
            let end = log.log_end_offset();
            // At once: no dropped segment keeps its name.
            let names = file_names(&partition);
            let logs: Vec<&String> = names.iter().filter(|name| name.ends_with(".log")).collect();
            assert!(logs.len() < 6, "retention kept {logs:?}");
            // Within the grace period and the steps, the background removal frees every dropped file.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            while file_names(&partition).iter().any(|name| name.ends_with(".deleted")) {
                assert!(std::time::Instant::now() < deadline, "dropped segments still there after 30 s");
                glommio::timer::sleep(std::time::Duration::from_millis(50)).await;
            }
            // A file a stop left behind is removed when the log opens again.
            std::fs::write(partition.join("00000000000000000000.log.deleted"), vec![0u8; 4096]).unwrap();
            log.close().await.unwrap();
            let storage = DmaStorage::new(&directory, 8).await.unwrap();
            let reopened =
                Log::open(storage, partition.clone(), config, BatchCache::new(1 << 20)).await.unwrap();
            assert_eq!((reopened.log_start_offset(), reopened.log_end_offset()), (start, end));
            let leftover = file_names(&partition).iter().any(|name| name.ends_with(".deleted"));
            reopened.close().await.unwrap();
            (start, end, leftover)
        }
    });
    assert!(start > Offset(0), "retention dropped nothing (log start {start:?})");
    assert_eq!(end, Offset(160));
    assert!(!leftover, "a leftover *.deleted file survived the reopen");
}

fn file_names(directory: &Path) -> Vec<String> {
    std::fs::read_dir(directory)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}
