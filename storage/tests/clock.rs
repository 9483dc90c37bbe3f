//! The log reads time only from the clock it was opened with: segment.ms rolls, the flush interval and
//! LogAppendTime follow a `ManualClock`, with no real waiting for them.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step is the test failing

mod common;

use std::rc::Rc;
use std::time::Duration;

use common::*;
use sluice_storage::batch::testing::make_batch;
use sluice_storage::{
    BatchCache, GlommioSpawner, Log, LogConfig, LogRuntime, ManualClock, Offset, SimStorage, TimestampType,
};

const HOUR: Duration = Duration::from_secs(3600);

async fn open_with_clock(
    storage: &SimStorage,
    config: LogConfig,
    clock: &Rc<ManualClock>,
) -> Log<SimStorage> {
    let runtime = LogRuntime { clock: clock.clone(), spawner: Rc::new(GlommioSpawner) };
    Log::open_with_runtime(storage.clone(), directory(), config, BatchCache::new(1 << 20), runtime)
        .await
        .expect("open log")
}

#[test]
fn segments_roll_by_the_injected_clock() {
    run(|| async {
        let storage = SimStorage::new();
        let clock = Rc::new(ManualClock::new(1_000_000));
        let mut config = small_config();
        config.segment_age_max = HOUR;
        let log = open_with_clock(&storage, config, &clock).await;
        log.append(make_batch(1, 10, 1), 0).await.unwrap();
        log.wait_durable(Offset(1)).await.unwrap();
        clock.advance(HOUR / 2);
        log.append(make_batch(1, 10, 1), 0).await.unwrap();
        log.wait_durable(Offset(2)).await.unwrap();
        assert_eq!(log.segment_count(), 1, "half of segment.ms later: no roll");
        clock.advance(HOUR / 2);
        log.append(make_batch(1, 10, 1), 0).await.unwrap();
        log.wait_durable(Offset(3)).await.unwrap();
        assert_eq!(log.segment_count(), 2, "segment.ms later, by the log's clock: rolled");
        log.close().await.unwrap();
    });
}

#[test]
fn the_flush_interval_is_measured_on_the_injected_clock() {
    run(|| async {
        let storage = SimStorage::new();
        let clock = Rc::new(ManualClock::new(0));
        let mut config = relaxed(small_config());
        config.durability = sluice_storage::Durability::Interval { bytes: 1 << 30, interval: HOUR };
        let log = open_with_clock(&storage, config, &clock).await;
        log.append(make_batch(1, 10, 1), 0).await.unwrap();
        glommio::timer::sleep(Duration::from_millis(10)).await;
        assert_eq!(log.durable_offset(), Offset(0), "within the interval nothing is synced");
        clock.advance(HOUR);
        // The next append wakes the flusher, which finds the interval passed and writes and syncs both.
        log.append(make_batch(1, 10, 1), 0).await.unwrap();
        for _ in 0..100 {
            if log.durable_offset() == Offset(2) {
                break;
            }
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(log.durable_offset(), Offset(2), "synced without wait_durable once the interval passed");
        log.close().await.unwrap();
    });
}

#[test]
fn log_append_time_comes_from_the_injected_clock() {
    run(|| async {
        let storage = SimStorage::new();
        let clock = Rc::new(ManualClock::new(1_234_567));
        let mut config = small_config();
        config.timestamp_type = TimestampType::LogAppendTime;
        let log = open_with_clock(&storage, config, &clock).await;
        let info = log.append(make_batch(2, 10, 5), 0).await.unwrap();
        assert_eq!(info.append_time_ms, 1_234_567);
        assert_eq!(log.clock().now_ms(), 1_234_567);
        log.close().await.unwrap();
    });
}
