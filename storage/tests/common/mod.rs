//! Shared helpers for the storage integration tests.
#![allow(dead_code)]

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use glommio::{LocalExecutorBuilder, Placement};
use sluice_storage::{BatchCache, Durability, Log, LogConfig, Offset, ReadBound, SegmentSpace, Storage};

/// Runs `body` to completion on a fresh glommio executor (every test gets its own reactor).
pub fn run<T, F>(body: impl FnOnce() -> F + Send + 'static) -> T
where
    T: Send + 'static,
    F: Future<Output = T> + 'static,
{
    LocalExecutorBuilder::new(Placement::Unbound)
        .spawn(move || async move { body().await })
        .expect("spawn executor")
        .join()
        .expect("executor thread")
}

/// Small segments and a dense index so that a few hundred batches exercise rolls and index lookups.
pub fn small_config() -> LogConfig {
    LogConfig {
        segment_size_max: 16 * 1024,
        index_interval_size: 512,
        retention_age_max: None,
        segment_space: SegmentSpace::Grow,
        write_size_max: 8 * 1024,
        durability: Durability::Fsync,
        ..LogConfig::default()
    }
}

/// The three ways of preparing segment space, for tests that must hold under each.
pub const SEGMENT_SPACES: [SegmentSpace; 3] = [
    SegmentSpace::Grow,
    SegmentSpace::Fallocate { step: 8 * 1024 },
    SegmentSpace::Prewrite { step: 8 * 1024 },
];

pub fn relaxed(mut config: LogConfig) -> LogConfig {
    config.durability = Durability::Interval { bytes: 1 << 20, interval: Duration::from_secs(3600) };
    config
}

pub fn directory() -> PathBuf {
    PathBuf::from("/sim/topic-0")
}

pub async fn open<S: Storage>(storage: &S, config: LogConfig) -> Log<S> {
    Log::open(storage.clone(), directory(), config, BatchCache::new(1 << 20)).await.expect("open log")
}

/// Reads every batch from `from` to the log end, following segments.
pub async fn read_all<S: Storage>(log: &Log<S>, from: Offset) -> Vec<Bytes> {
    read_until(log, from, log.log_end_offset()).await
}

/// Reads every batch whose base offset lies in `[from, end)`, following segments.
pub async fn read_until<S: Storage>(log: &Log<S>, from: Offset, end: Offset) -> Vec<Bytes> {
    let mut batches = Vec::new();
    let mut offset = from;
    // Bounded: each read returns at least one batch or the loop stops.
    while offset < end {
        let chunk = log.read(offset, 64 * 1024, ReadBound::Below(end), true).await.expect("read");
        let Some(last) = chunk.last() else {
            panic!("read at {offset} returned nothing before the end {end}")
        };
        offset = last_offset(last).next();
        batches.extend(chunk);
    }
    batches
}

pub fn base_offset(batch: &[u8]) -> Offset {
    Offset(i64::from_be_bytes(batch[0..8].try_into().unwrap()))
}

pub fn last_offset(batch: &[u8]) -> Offset {
    let delta = i32::from_be_bytes(batch[23..27].try_into().unwrap());
    Offset(base_offset(batch).0 + delta as i64)
}

/// A batch's bytes with the broker-stamped fields (baseOffset, partitionLeaderEpoch) cleared, for comparing what
/// was sent with what was stored.
pub fn unstamped(batch: &[u8]) -> Vec<u8> {
    let mut bytes = batch.to_vec();
    bytes[0..8].fill(0);
    bytes[12..16].fill(0);
    bytes
}
