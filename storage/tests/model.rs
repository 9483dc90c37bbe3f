//! Property test: seeded random sequences of append, read, roll, truncate, retention, DeleteRecords, crash,
//! reopen and injected storage faults (a failed write, sync or fallocate, a torn write, a full disk, no
//! descriptors), checked after every step against a reference model (a `Vec` of batches). A failure prints its seed;
//! `SLUICE_SEED=<seed> cargo test -p sluice-storage --test model` replays exactly that case.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step is the test failing

mod common;

use bytes::Bytes;
use common::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use sluice_storage::batch::testing::make_batch;
use sluice_storage::{Log, LogError, Offset, ReadBound, SimStorage};

const CASE_COUNT: u64 = 256;
const STEP_COUNT: usize = 250;

#[derive(Clone)]
struct ModelBatch {
    base: Offset,
    last: Offset,
    unstamped: Vec<u8>,
}

struct Model {
    batches: Vec<ModelBatch>,
    log_start: Offset,
    end: Offset,
}

impl Model {
    fn check_read(&self, offset: Offset, read: &[Bytes]) -> Result<(), String> {
        if offset == self.end {
            return if read.is_empty() { Ok(()) } else { Err(format!("read at end {offset} returned data")) };
        }
        let first = self.batches.iter().position(|batch| batch.last >= offset).ok_or("model has no batch")?;
        if read.is_empty() {
            return Err(format!("read at {offset} returned nothing (end {})", self.end));
        }
        for (index, stored) in read.iter().enumerate() {
            let expected =
                self.batches.get(first + index).ok_or_else(|| format!("read past the model at {offset}"))?;
            if base_offset(stored) != expected.base || unstamped(stored) != expected.unstamped {
                return Err(format!(
                    "read at {offset}: batch {index} is offset {} but the model has {}",
                    base_offset(stored),
                    expected.base
                ));
            }
        }
        Ok(())
    }

    fn drop_below(&mut self, log_start: Offset) -> Result<(), String> {
        if log_start < self.log_start {
            return Err(format!("log start went back from {} to {log_start}", self.log_start));
        }
        self.log_start = log_start;
        self.batches.retain(|batch| batch.last >= log_start);
        Ok(())
    }
}

async fn check_everything(log: &Log<SimStorage>, model: &Model) -> Result<(), String> {
    if log.log_end_offset() != model.end || log.log_start_offset() != model.log_start {
        return Err(format!(
            "log is [{}, {}), model is [{}, {})",
            log.log_start_offset(),
            log.log_end_offset(),
            model.log_start,
            model.end
        ));
    }
    let mut offset = model.log_start;
    // Bounded by the model's batch count.
    for _ in 0..=model.batches.len() {
        if offset >= model.end {
            return Ok(());
        }
        let read =
            log.read(offset, 4096, ReadBound::LogEnd, true).await.map_err(|error| error.to_string())?;
        model.check_read(offset, &read)?;
        offset = last_offset(read.last().expect("checked non-empty")).next();
    }
    Err("reads did not reach the end".into())
}

#[allow(clippy::too_many_lines)] // over 70 lines before the limit; to be split
async fn run_case(seed: u64) -> Result<(), String> {
    let mut random = SmallRng::seed_from_u64(seed);
    let storage = SimStorage::new();
    let mut config = small_config();
    config.segment_space = SEGMENT_SPACES[random.random_range(0..SEGMENT_SPACES.len())];
    if random.random_bool(0.5) {
        config = relaxed(config);
    }
    let mut log = open(&storage, config.clone()).await;
    let mut model = Model { batches: Vec::new(), log_start: Offset(0), end: Offset(0) };
    for step in 0..STEP_COUNT {
        let choice = random.random_range(0..100);
        let outcome: Result<(), String> = async {
            match choice {
                0..=49 => {
                    let record_count = random.random_range(1..4);
                    let batch =
                        make_batch(record_count, random.random_range(0..600), random.random_range(0..1000));
                    let info = log.append(batch.clone(), 0).await.map_err(|error| error.to_string())?;
                    if info.base_offset != model.end {
                        return Err(format!(
                            "append got base {} but the model end is {}",
                            info.base_offset, model.end
                        ));
                    }
                    model.batches.push(ModelBatch {
                        base: info.base_offset,
                        last: info.last_offset,
                        unstamped: unstamped(&batch),
                    });
                    model.end = info.last_offset.next();
                    if random.random_bool(0.3) {
                        log.wait_durable(model.end).await.map_err(|error| error.to_string())?;
                    }
                    Ok(())
                }
                50..=61 => {
                    let offset = Offset(random.random_range(model.log_start.0..=model.end.0));
                    let read = log
                        .read(offset, random.random_range(1..8192), ReadBound::LogEnd, true)
                        .await
                        .map_err(|error| error.to_string())?;
                    model.check_read(offset, &read)
                }
                62..=64 => fault_step(&storage, &log, &mut model, &mut random).await,
                65..=69 => log.roll().await.map_err(|error| error.to_string()),
                70..=74 => {
                    let offset = Offset(random.random_range(model.log_start.0..=model.end.0));
                    log.truncate_to(offset).await.map_err(|error| error.to_string())?;
                    // Whole batches go: the first one holding an offset at or above the target and all after it.
                    if let Some(cut) = model.batches.iter().position(|batch| batch.last >= offset) {
                        let new_end = model.batches[cut].base;
                        model.batches.truncate(cut);
                        model.end = new_end;
                        model.log_start = model.log_start.min(new_end);
                    }
                    Ok(())
                }
                75..=79 => {
                    let mut config = config.clone();
                    config.retention_size_max = Some(random.random_range(0..64 * 1024));
                    log.update_config(config.clone()).map_err(|error| error.to_string())?;
                    log.enforce_retention(sluice_storage::now_ms())
                        .await
                        .map_err(|error| error.to_string())?;
                    log.update_config(small_config_like(&config)).map_err(|error| error.to_string())?;
                    model.drop_below(log.log_start_offset())
                }
                80..=84 => {
                    let offset = Offset(random.random_range(model.log_start.0..=model.end.0));
                    let start = log.delete_before(offset).await.map_err(|error| error.to_string())?;
                    if start != offset {
                        return Err(format!("delete_before({offset}) gave start {start}"));
                    }
                    model.drop_below(start)
                }
                85..=92 => {
                    let durable = log.durable_offset();
                    log.abandon().await;
                    storage.crash(random.random());
                    log = open(&storage, config.clone()).await;
                    // Acknowledged (synced) batches survive; what survives beyond them is a prefix of what was
                    // written.
                    if log.log_end_offset() < durable {
                        return Err(format!(
                            "crash lost synced data: end {} < durable {durable}",
                            log.log_end_offset()
                        ));
                    }
                    let end = log.log_end_offset();
                    if end < model.log_start {
                        return Err(format!(
                            "recovered end {end} is below the log start {}",
                            model.log_start
                        ));
                    }
                    let kept = if end == model.log_start {
                        0 // empty from the log start (which may lie inside a batch)
                    } else {
                        model
                            .batches
                            .iter()
                            .position(|batch| batch.last >= end)
                            .unwrap_or(model.batches.len())
                    };
                    if end != model.log_start && kept < model.batches.len() && model.batches[kept].base != end
                    {
                        return Err(format!("recovered end {end} is not a batch boundary"));
                    }
                    model.batches.truncate(kept);
                    model.end = end;
                    if log.log_start_offset() != model.log_start {
                        return Err(format!(
                            "log start {} after crash, model {}",
                            log.log_start_offset(),
                            model.log_start
                        ));
                    }
                    Ok(())
                }
                _ => {
                    log.close().await.map_err(|error| error.to_string())?;
                    log = open(&storage, config.clone()).await;
                    Ok(())
                }
            }
        }
        .await;
        if std::env::var("SLUICE_TRACE").is_ok() {
            eprintln!(
                "step {step} choice {choice}: log [{}, {}) segments {} model [{}, {})",
                log.log_start_offset(),
                log.log_end_offset(),
                log.segment_count(),
                model.log_start,
                model.end
            );
        }
        let checked = match outcome {
            Ok(()) => check_everything(&log, &model).await,
            Err(error) => Err(error),
        };
        if let Err(error) = checked {
            return Err(format!("seed {seed}, step {step} (choice {choice}): {error}"));
        }
    }
    log.close().await.map_err(|error| error.to_string())
}

/// Injects one fault, appends through it (each append is refused, or sequenced and kept), then clears it:
/// the log must then make everything it sequenced durable by itself (retry or repair), at the offsets it gave.
async fn fault_step(
    storage: &SimStorage,
    log: &Log<SimStorage>,
    model: &mut Model,
    random: &mut SmallRng,
) -> Result<(), String> {
    match random.random_range(0..6) {
        0 => storage.fail_next_write(),
        1 => storage.fail_next_sync(),
        2 => storage.tear_next_write(random.random_range(0..8)),
        3 => storage.fail_next_allocate(),
        4 => storage.set_descriptors_exhausted(true),
        _ => storage.set_disk_full(true),
    }
    for _ in 0..random.random_range(1..4) {
        let batch =
            make_batch(random.random_range(1..4), random.random_range(0..600), random.random_range(0..1000));
        match log.append(batch.clone(), 0).await {
            Ok(info) => {
                if info.base_offset != model.end {
                    return Err(format!(
                        "append got base {} but the model end is {}",
                        info.base_offset, model.end
                    ));
                }
                model.batches.push(ModelBatch {
                    base: info.base_offset,
                    last: info.last_offset,
                    unstamped: unstamped(&batch),
                });
                model.end = info.last_offset.next();
                // May fail: the fault is still there.
                let _ = log.wait_durable(model.end).await;
            }
            Err(LogError::Poisoned(_) | LogError::Stalled(_)) => {}
            Err(error) => return Err(format!("append during a fault: {error}")),
        }
    }
    storage.clear_faults();
    let end = model.end;
    let settled =
        futures_lite::future::or(async { Some(log.wait_durable_through_failures(end).await) }, async {
            glommio::timer::sleep(std::time::Duration::from_secs(10)).await;
            None
        })
        .await;
    match settled {
        Some(Ok(())) => {}
        Some(Err(error)) => return Err(format!("not durable after the fault cleared: {error}")),
        None => return Err(format!("not durable 10 s after the fault cleared: {:?}", log.poisoned())),
    }
    // Durable, but a repair may still be due (a poisoning that struck after the last batch was synced).
    for _ in 0..1000 {
        if log.poisoned().is_none() {
            return Ok(());
        }
        glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
    }
    Err(format!("still poisoned 10 s after the fault cleared: {:?}", log.poisoned()))
}

fn small_config_like(config: &sluice_storage::LogConfig) -> sluice_storage::LogConfig {
    let mut config = config.clone();
    config.retention_size_max = None;
    config
}

#[test]
fn random_operations_match_the_reference_model() {
    let seeds: Vec<u64> = match std::env::var("SLUICE_SEED") {
        Ok(seed) => vec![seed.parse().expect("SLUICE_SEED is a number")],
        Err(_) => (0..CASE_COUNT).collect(),
    };
    for (index, seed) in seeds.iter().copied().enumerate() {
        if index % 32 == 0 {
            eprintln!("model: case {index}/{} (seed {seed})", seeds.len());
        }
        let result = run(move || run_case(seed));
        if let Err(error) = result {
            panic!("{error}\nreplay with: SLUICE_SEED={seed} cargo test -p sluice-storage --test model");
        }
    }
}
