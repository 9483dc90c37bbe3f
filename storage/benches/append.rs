//! Storage benchmarks (issue: the partition log). Not timed tests: they print numbers for docs/benchmarks.md.
//!
//!   cargo bench -p sluice-storage --bench append -- [throughput|acked|recovery|all] [--dir DIR] [--size-gib N]
//!
//! * throughput — append 1 MiB and 16 KiB batches back to back vs raw glommio DMA writes of the same bytes
//!   (sequential `write_at`, one fdatasync at the end), in the same run, alternating, 3 rounds, medians.
//! * acked — acknowledged appends per second under fsync-before-ack with 1, 8 and 64 concurrent appenders, and
//!   the one-append-per-fsync rate with and without fallocate'd segment space.
//! * recovery — a child process fills a partition to N GiB (default 4) and is killed with SIGKILL; the time to
//!   reopen it is measured.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step is the test failing

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use glommio::io::OpenOptions;
use glommio::{LocalExecutorBuilder, Placement};
use sluice_storage::batch::testing::make_batch;
use sluice_storage::{BatchCache, DmaStorage, Durability, Log, LogConfig, Offset, SegmentSpace};

fn main() {
    let arguments: Vec<String> = std::env::args().skip(1).filter(|argument| argument != "--bench").collect();
    let option = |name: &str| {
        arguments
            .iter()
            .position(|argument| argument == name)
            .and_then(|index| arguments.get(index + 1))
            .cloned()
    };
    let directory = PathBuf::from(option("--dir").unwrap_or_else(|| "target/bench-storage".to_string()));
    let size_gib: u64 = option("--size-gib").and_then(|value| value.parse().ok()).unwrap_or(4);
    let mode = arguments.first().cloned().unwrap_or_else(|| "all".to_string());
    std::fs::create_dir_all(&directory).expect("bench directory");
    match mode.as_str() {
        "fill-child" => fill_child(&directory),
        "throughput" => throughput(&directory),
        "throughput-log" => {
            let path = fresh(&directory, "throughput");
            let rate = on_executor(move || log_append_rate(path, 1 << 20, 4 << 30));
            println!("log append, 1 MiB batches: {rate:.0} MB/s");
        }
        "acked" => acked(&directory),
        "recovery" => recovery(&directory, size_gib),
        "all" => {
            throughput(&directory);
            acked(&directory);
            recovery(&directory, size_gib);
        }
        other => panic!("unknown mode {other}"),
    }
}

fn on_executor<T: Send + 'static, F: std::future::Future<Output = T> + 'static>(
    body: impl FnOnce() -> F + Send + 'static,
) -> T {
    LocalExecutorBuilder::new(Placement::Fixed(0))
        .spawn(move || async move { body().await })
        .expect("executor")
        .join()
        .expect("executor thread")
}

fn log_config(durability: Durability) -> LogConfig {
    LogConfig { durability, retention_age_max: None, ..LogConfig::default() }
}

fn fresh(directory: &Path, name: &str) -> PathBuf {
    let path = directory.join(name);
    let _ = std::fs::remove_dir_all(&path);
    std::fs::create_dir_all(&path).expect("directory");
    path
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    values[values.len() / 2]
}

/// Appends `total` bytes of `batch_size` batches as fast as the log takes them; returns MB/s to durability.
async fn log_append_rate(directory: PathBuf, batch_size: usize, total: u64) -> f64 {
    let storage = DmaStorage::new(&directory, 1024).await.expect("storage");
    let durability = Durability::Interval { bytes: 256 << 20, interval: Duration::from_secs(10) };
    let mut config = log_config(durability);
    config.batch_size_max = 2 << 20;
    if let Ok(space) = std::env::var("SLUICE_BENCH_SPACE") {
        config.segment_space = match space.as_str() {
            "fallocate" => SegmentSpace::Fallocate { step: 8 << 20 },
            "prewrite" => SegmentSpace::Prewrite { step: 8 << 20 },
            _ => SegmentSpace::Grow,
        };
    }
    if let Some(size) = std::env::var("SLUICE_BENCH_WRITE_SIZE").ok().and_then(|value| value.parse().ok()) {
        config.write_size_max = size;
    }
    let log =
        Log::open(storage, directory.join("p-0"), config, BatchCache::new(64 << 20)).await.expect("open");
    let value_size = batch_size - 61 - 16;
    let template = make_batch(1, value_size, 0);
    let count = total / template.len() as u64;
    // Every batch is its own buffer, as request buffers from the network are, built before the clock starts so
    // that only the log's work is timed.
    let batches: Vec<Bytes> = (0..count).map(|_| Bytes::copy_from_slice(&template)).collect();
    let started = Instant::now();
    for batch in batches {
        log.append(batch, 0).await.expect("append");
    }
    log.wait_durable(log.log_end_offset()).await.expect("durable");
    let elapsed = started.elapsed();
    log.close().await.expect("close");
    (count * template.len() as u64) as f64 / elapsed.as_secs_f64() / 1e6
}

/// Raw glommio DMA: sequential `write_at` of `write_size` buffers, one fdatasync at the end; MB/s.
async fn raw_write_rate(directory: PathBuf, write_size: usize, total: u64) -> f64 {
    let _ = DmaStorage::new(&directory, 1024).await.expect("probe");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .dma_open(directory.join("raw"))
        .await
        .expect("raw file");
    let count = total / write_size as u64;
    let started = Instant::now();
    for index in 0..count {
        let mut buffer = file.alloc_dma_buffer(write_size);
        buffer.as_bytes_mut().fill((index % 251) as u8);
        file.write_at(buffer, index * write_size as u64).await.expect("write");
    }
    file.fdatasync().await.expect("sync");
    let elapsed = started.elapsed();
    file.close().await.expect("close");
    (count * write_size as u64) as f64 / elapsed.as_secs_f64() / 1e6
}

fn throughput(directory: &Path) {
    const TOTAL: u64 = 2 << 30;
    println!("== append throughput: {} GiB per run, 3 rounds, medians (MB/s)", TOTAL >> 30);
    for batch_size in [1 << 20, 16 << 10] {
        let (mut log_rates, mut raw_same, mut raw_mib) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..3 {
            let path = fresh(directory, "throughput");
            log_rates.push(on_executor(move || log_append_rate(path, batch_size, TOTAL)));
            let path = fresh(directory, "throughput");
            raw_same.push(on_executor(move || raw_write_rate(path, batch_size, TOTAL)));
            let path = fresh(directory, "throughput");
            raw_mib.push(on_executor(move || raw_write_rate(path, 1 << 20, TOTAL)));
            eprintln!(
                "  round {round}: batch {batch_size} B: log {:.0}, raw same-size writes {:.0}, raw 1 MiB writes {:.0}",
                log_rates[round], raw_same[round], raw_mib[round]
            );
        }
        let (log_rate, same, mib) = (median(log_rates), median(raw_same), median(raw_mib));
        println!(
            "batch {:>7} B: log {log_rate:.0} MB/s | raw {batch_size}-byte writes {same:.0} MB/s ({:.0}%) | raw 1 MiB writes {mib:.0} MB/s ({:.0}%)",
            batch_size,
            100.0 * log_rate / same,
            100.0 * log_rate / mib
        );
    }
    let _ = std::fs::remove_dir_all(directory.join("throughput"));
}

/// `appenders` tasks each append a 1 KiB batch and wait for its fsync, for `duration`; acknowledged appends/s
/// and the p50/p99 acknowledgement latency in µs.
async fn acked_rate(
    directory: PathBuf,
    appenders: usize,
    segment_space: SegmentSpace,
    duration: Duration,
) -> (f64, u64, u64) {
    let storage = DmaStorage::new(&directory, 1024).await.expect("storage");
    let mut config = log_config(Durability::Fsync);
    config.segment_space = segment_space;
    let log =
        Log::open(storage, directory.join("p-0"), config, BatchCache::new(64 << 20)).await.expect("open");
    let template = make_batch(1, 1000, 0);
    let histogram =
        Rc::new(std::cell::RefCell::new(hdrhistogram::Histogram::<u64>::new(3).expect("histogram")));
    let deadline = Instant::now() + duration;
    let mut tasks = Vec::new();
    for _ in 0..appenders {
        let (log, template, histogram) = (log.clone(), template.clone(), histogram.clone());
        tasks.push(glommio::spawn_local(async move {
            let mut count = 0u64;
            while Instant::now() < deadline {
                let started = Instant::now();
                let info = log.append(Bytes::copy_from_slice(&template), 0).await.expect("append");
                log.wait_durable(info.last_offset.next()).await.expect("durable");
                histogram.borrow_mut().record(started.elapsed().as_micros() as u64).expect("record");
                count += 1;
            }
            count
        }));
    }
    let started = Instant::now();
    let mut total = 0;
    for task in tasks {
        total += task.await;
    }
    let elapsed = started.elapsed();
    log.close().await.expect("close");
    let histogram = histogram.borrow();
    (
        total as f64 / elapsed.as_secs_f64(),
        histogram.value_at_quantile(0.5),
        histogram.value_at_quantile(0.99),
    )
}

fn acked(directory: &Path) {
    println!("== acknowledged appends/s under fsync-before-ack (1 KiB batches, 5 s each, 3 rounds, medians)");
    let duration = Duration::from_secs(5);
    let mut results = Vec::new();
    const STEP: u64 = 8 << 20;
    for (appenders, segment_space, label) in [
        (1, SegmentSpace::Grow, "1 appender, file grows per write"),
        (1, SegmentSpace::Fallocate { step: STEP }, "1 appender, fallocate 8 MiB ahead"),
        (1, SegmentSpace::Prewrite { step: STEP }, "1 appender, zeros pre-written 8 MiB ahead"),
        (8, SegmentSpace::Grow, "8 appenders, file grows"),
        (64, SegmentSpace::Grow, "64 appenders, file grows"),
    ] {
        let mut rates = Vec::new();
        let mut p50s = Vec::new();
        let mut p99s = Vec::new();
        for _ in 0..3 {
            let path = fresh(directory, "acked");
            let (rate, p50, p99) = on_executor(move || acked_rate(path, appenders, segment_space, duration));
            rates.push(rate);
            p50s.push(p50 as f64);
            p99s.push(p99 as f64);
        }
        let rate = median(rates);
        println!(
            "{label:<50} {rate:>9.0} acked/s   ack p50 {:>6.0} µs  p99 {:>6.0} µs",
            median(p50s),
            median(p99s)
        );
        results.push(rate);
    }
    println!("64 appenders / 1 appender (file grows in both): {:.1}x", results[4] / results[0]);
    let _ = std::fs::remove_dir_all(directory.join("acked"));
}

/// Child process: fills `directory/recovery/p-0` with 1 MiB batches under the fsync policy, printing the
/// durable size as it goes, until killed.
fn fill_child(directory: &Path) {
    let directory = directory.join("recovery");
    on_executor(move || async move {
        let storage = DmaStorage::new(&directory, 1024).await.expect("storage");
        let mut config = log_config(Durability::Fsync);
        config.batch_size_max = 2 << 20;
        let log =
            Log::open(storage, directory.join("p-0"), config, BatchCache::new(64 << 20)).await.expect("open");
        let template = make_batch(1, (1 << 20) - 100, 0);
        let mut written = 0u64;
        // Runs until the parent's SIGKILL; bounded by the parent's size target.
        loop {
            let mut last = Offset(0);
            for _ in 0..32 {
                last = log.append(Bytes::copy_from_slice(&template), 0).await.expect("append").last_offset;
                written += template.len() as u64;
            }
            log.wait_durable(last.next()).await.expect("durable");
            println!("{written}");
        }
    });
}

fn recovery(directory: &Path, size_gib: u64) {
    use std::io::BufRead;
    let target = size_gib << 30;
    println!("== recovery of a {size_gib} GiB partition after SIGKILL (3 rounds of reopen)");
    let _ = fresh(directory, "recovery");
    let mut child = std::process::Command::new(std::env::current_exe().expect("exe"))
        .arg("fill-child")
        .arg("--dir")
        .arg(directory)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("child");
    let stdout = child.stdout.take().expect("stdout");
    let mut last_report = 0;
    for line in std::io::BufReader::new(stdout).lines() {
        let written: u64 = line.expect("line").trim().parse().expect("number");
        if written >= last_report + (1 << 30) {
            eprintln!("  filled {} GiB", written >> 30);
            last_report = written;
        }
        if written >= target {
            break;
        }
    }
    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped yet.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGKILL);
    }
    let _ = child.wait();
    let partition = directory.join("recovery");
    let mut times = Vec::new();
    for round in 0..3 {
        let path = partition.clone();
        let (elapsed, end, scanned, segments) = on_executor(move || async move {
            let started = Instant::now();
            let storage = DmaStorage::new(&path, 1024).await.expect("storage");
            let log =
                Log::open(storage, path.join("p-0"), log_config(Durability::Fsync), BatchCache::new(1 << 20))
                    .await
                    .expect("open");
            let elapsed = started.elapsed();
            let report = log.recovery_report().clone();
            let end = log.log_end_offset();
            log.abandon().await;
            (elapsed, end, report.scanned_size, report.segment_count)
        });
        eprintln!(
            "  round {round}: {elapsed:?}, end offset {end}, {segments} segments, scanned {scanned} bytes"
        );
        times.push(elapsed.as_secs_f64() * 1000.0);
    }
    let size: u64 = std::fs::read_dir(partition.join("p-0"))
        .expect("dir")
        .map(|entry| entry.expect("entry").metadata().expect("metadata").len())
        .sum();
    println!(
        "recovery of {:.2} GiB on disk: median {:.1} ms (first, cold: {:.1} ms)",
        size as f64 / (1u64 << 30) as f64,
        median(times.clone()),
        times[0]
    );
    let _ = std::fs::remove_dir_all(&partition);
}
