//! A run's phases. Steady state: consumers positioned, producers started, a warm-up whose numbers are discarded, then
//! the measured period, a progress line each second. Catch-up (`backlog_size > 0`): producers alone write the
//! backlog, stop, and consumers then read it from the earliest offset; the consume rate is over the catch-up only.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::client::{ClientError, Versions};
use crate::clock::now_ns;
use crate::cluster::{connect_any, Metadata};
use crate::cpu::{cpu_seconds, machine_busy_seconds};
use crate::memory::{rss_kib_sum, MemoryReport, MemorySample};
use crate::report::{progress_line, Summary};
use crate::stats::{CounterSnapshot, Latencies, Stats};
use crate::timeline::Timeline;
use crate::workload::{Payloads, StartOffset, Workload};
use crate::{consumer, pool, producer};

/// What every producer and consumer thread of a run shares.
#[derive(Clone)]
pub struct WorkerContext {
    pub workload: Arc<Workload>,
    pub versions: Versions,
    pub stats: Arc<Stats>,
    pub stop: Arc<AtomicBool>,
    /// Where each partition's leader is; refreshed by whichever worker meets a stale leader.
    pub metadata: Arc<Metadata>,
}

impl WorkerContext {
    /// One worker's share of the run's state.
    fn new(
        workload: &Arc<Workload>,
        versions: Versions,
        stats: &Arc<Stats>,
        stop: &Arc<AtomicBool>,
        metadata: &Arc<Metadata>,
    ) -> WorkerContext {
        WorkerContext {
            workload: Arc::clone(workload),
            versions,
            stats: Arc::clone(stats),
            stop: Arc::clone(stop),
            metadata: Arc::clone(metadata),
        }
    }
}

pub struct RunOptions {
    pub workload: Workload,
    pub warmup: Duration,
    pub duration: Duration,
    pub backlog_size: u64,
    pub drop_caches: bool,
    /// Payload bytes written to `<topic>-evict` between the backlog and its read (0 = none).
    pub evict_size: u64,
    /// Broker processes whose CPU use is reported (every broker of a local cluster; empty = none).
    pub broker_pids: Vec<u32>,
    /// Delete the run's topics once it is over.
    pub delete_topics: bool,
    /// Connections opened before the producers start that send one ApiVersions and then stay silent for the run.
    pub idle_connections: usize,
    /// Seconds of the first and last windows whose publish latencies are compared (0 = none).
    pub window_s: f64,
    pub label: String,
    pub description: String,
}

/// CPU seconds of each broker and of this process at one instant.
struct CpuSample {
    at: Instant,
    /// One entry per `--broker-pid`, in the order given.
    brokers_s: Vec<Option<f64>>,
    own_s: Option<f64>,
    /// The whole machine, every process and the kernel.
    machine_s: Option<f64>,
}

impl CpuSample {
    fn take(broker_pids: &[u32]) -> Self {
        CpuSample {
            at: Instant::now(),
            brokers_s: broker_pids.iter().map(|&pid| cpu_seconds(Some(pid))).collect(),
            own_s: cpu_seconds(None),
            machine_s: machine_busy_seconds(),
        }
    }

    /// (all brokers, own) cores used between `self` and `later`; the brokers' sum is `None` when there are none or
    /// any of them could not be read (a broker that exited would otherwise silently lower the sum).
    fn cores_until(&self, later: &CpuSample) -> (Option<f64>, Option<f64>) {
        let each = self.broker_cores_until(later);
        let brokers = if each.is_empty() { None } else { each.iter().copied().sum::<Option<f64>>() };
        let seconds = later.at.duration_since(self.at).as_secs_f64().max(1e-9);
        (brokers, cores(self.own_s, later.own_s, seconds))
    }

    /// Cores the whole machine was busy between `self` and `later`.
    fn machine_cores_until(&self, later: &CpuSample) -> Option<f64> {
        let seconds = later.at.duration_since(self.at).as_secs_f64().max(1e-9);
        cores(self.machine_s, later.machine_s, seconds)
    }

    /// Cores used by each broker between `self` and `later`.
    fn broker_cores_until(&self, later: &CpuSample) -> Vec<Option<f64>> {
        assert_eq!(self.brokers_s.len(), later.brokers_s.len());
        let seconds = later.at.duration_since(self.at).as_secs_f64().max(1e-9);
        self.brokers_s
            .iter()
            .zip(&later.brokers_s)
            .map(|(&before, &after)| cores(before, after, seconds))
            .collect()
    }
}

fn cores(before_s: Option<f64>, after_s: Option<f64>, seconds: f64) -> Option<f64> {
    Some((after_s? - before_s?) / seconds)
}

pub fn run(options: RunOptions) -> Result<Summary, ClientError> {
    let workload = Arc::new(options.workload.clone());
    let (mut admin, address) = connect_any(&workload.bootstrap)?;
    let versions = admin.negotiate_versions()?;
    drop(admin);
    eprintln!(
        "sluice-bench: {address} speaks Produce v{}, Fetch v{}, Metadata v{}, CreateTopics v{}, ListOffsets v{}",
        versions.produce, versions.fetch, versions.metadata, versions.create_topics, versions.list_offsets
    );
    let mut memory = MemoryReport {
        baseline: MemorySample::take(&options.broker_pids),
        partition_count: workload.topics.len() * workload.partition_count as usize,
        idle_connection_count: options.idle_connections,
        producer_connection_count: producer_connection_count(&workload),
        ..MemoryReport::default()
    };
    let metadata = create_topics(&workload, versions, workload.topics.clone())?;
    if workload.producers_total > 0 && metadata.table().broker_count() > 1 {
        return Err(ClientError::Io(std::io::Error::other(
            "--producers-total drives connections to a single broker; this cluster has several",
        )));
    }
    memory.after_topics = sample_settled(&options.broker_pids);
    let idle = open_idle_connections(&address, options.idle_connections)?;
    if options.idle_connections > 0 {
        memory.after_idle_connections = sample_settled(&options.broker_pids);
    }
    let payloads = Arc::new(Payloads::new(workload.message_size, workload.random_ratio, 0xbe4c4));
    let stats = Stats::new();
    let summary = if options.backlog_size > 0 {
        run_catch_up(&options, &workload, versions, &payloads, &stats, &metadata)
    } else {
        let memory = (!options.broker_pids.is_empty()).then_some(memory);
        run_steady(&options, &workload, versions, &payloads, &stats, &metadata, memory)
    };
    drop(idle);
    if options.delete_topics {
        // After the summary is taken; a failure here costs the run nothing but disk space, so it is only reported.
        if let Err(error) = metadata.delete_topics() {
            eprintln!("sluice-bench: warning: could not delete the run's topics: {error}");
        }
    }
    if metadata.refresh_count() > 1 {
        eprintln!(
            "sluice-bench: metadata refreshed {} times after stale-leader errors",
            metadata.refresh_count() - 1
        );
    }
    summary
}

/// Producer connections of the run against a single broker.
fn producer_connection_count(workload: &Workload) -> usize {
    if workload.producers_total > 0 {
        workload.producers_total
    } else {
        workload.producers_per_topic * workload.topics.len()
    }
}

/// The brokers' memory a second from now, once what was just created has settled (None without `--broker-pid`).
fn sample_settled(broker_pids: &[u32]) -> Option<MemorySample> {
    if broker_pids.is_empty() {
        return None;
    }
    thread::sleep(Duration::from_secs(1));
    MemorySample::take(broker_pids)
}

/// Opens `count` connections to `address` that each send one ApiVersions and then stay silent; they stay open for
/// as long as the returned sockets live.
fn open_idle_connections(address: &str, count: usize) -> Result<Vec<std::net::TcpStream>, ClientError> {
    let mut sockets = Vec::with_capacity(count);
    for _ in 0..count {
        let mut connection = crate::client::Connection::connect(address)?;
        connection.negotiate_versions()?;
        sockets.push(connection.into_writer_and_socket().1);
    }
    if count > 0 {
        eprintln!("sluice-bench: {count} idle connections open");
    }
    Ok(sockets)
}

/// Creates `topics` and waits for a leader of each partition; prints where they are when there is more than one
/// broker.
fn create_topics(
    workload: &Workload,
    versions: Versions,
    topics: Vec<String>,
) -> Result<Arc<Metadata>, ClientError> {
    let metadata = Arc::new(Metadata::new(workload.bootstrap.clone(), versions, topics.clone()));
    let table = metadata.create_topics(
        workload.partition_count,
        workload.replication_factor,
        &workload.topic_configs,
    )?;
    if table.broker_count() > 1 {
        let all: Vec<i32> = (0..workload.partition_count).collect();
        let mut led: std::collections::BTreeMap<i32, usize> = std::collections::BTreeMap::new();
        for topic in &topics {
            for (node, partitions) in table.group_by_leader(topic, &all) {
                *led.entry(node).or_default() += partitions.len();
            }
        }
        let spread: Vec<String> = led
            .iter()
            .map(|(node, count)| format!("node {node} ({}) {count}", table.address(*node).unwrap_or("?")))
            .collect();
        eprintln!("sluice-bench: {} brokers; partitions led: {}", table.broker_count(), spread.join(", "));
    }
    Ok(metadata)
}

struct Workers {
    producers: Vec<producer::ProducerHandle>,
    consumers: Vec<JoinHandle<()>>,
}

fn start_consumers(
    workload: &Arc<Workload>,
    versions: Versions,
    stats: &Arc<Stats>,
    stop: &Arc<AtomicBool>,
    metadata: &Arc<Metadata>,
) -> Vec<JoinHandle<()>> {
    let ready = Arc::new(AtomicUsize::new(0));
    let mut consumers = Vec::new();
    for topic in &workload.topics {
        for consumer_index in 0..workload.consumers_per_topic {
            // Partitions dealt round-robin, as a group's round-robin assignor would.
            let partitions: Vec<i32> = (0..workload.partition_count)
                .filter(|partition| *partition as usize % workload.consumers_per_topic == consumer_index)
                .collect();
            if partitions.is_empty() {
                continue;
            }
            let context = WorkerContext::new(workload, versions, stats, stop, metadata);
            consumers.push(consumer::start(
                context,
                topic.clone(),
                consumers.len(),
                partitions,
                Arc::clone(&ready),
            ));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while ready.load(Ordering::SeqCst) < consumers.len() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
    consumers
}

fn start_producers(
    workload: &Arc<Workload>,
    versions: Versions,
    payloads: &Arc<Payloads>,
    stats: &Arc<Stats>,
    stop: &Arc<AtomicBool>,
    metadata: &Arc<Metadata>,
) -> Vec<producer::ProducerHandle> {
    if workload.producers_total > 0 {
        let context = WorkerContext::new(workload, versions, stats, stop, metadata);
        // Connecting a thousand sockets takes longer than four: the clocks start once all could be connected.
        let start_ns = now_ns() + 20_000_000 + workload.producers_total as u64 * 200_000;
        return pool::start(
            &context,
            workload.producers_total,
            workload.producer_threads,
            start_ns,
            payloads,
        );
    }
    let producer_count = workload.topics.len() * workload.producers_per_topic;
    let rate_each = workload.rate_per_s / producer_count as f64;
    // Every producer's rate clock starts at the same instant, a little ahead so that connecting does not count.
    let start_ns = now_ns() + 20_000_000;
    let mut producers = Vec::new();
    for topic in &workload.topics {
        for _ in 0..workload.producers_per_topic {
            let context = WorkerContext::new(workload, versions, stats, stop, metadata);
            producers.push(producer::start(
                context,
                topic.clone(),
                producers.len(),
                rate_each,
                start_ns,
                Arc::clone(payloads),
            ));
        }
    }
    producers
}

fn join(workers: Workers) {
    for producer in workers.producers {
        let _ = producer.writer.join();
    }
    for consumer in workers.consumers {
        let _ = consumer.join();
    }
}

fn backlog(snapshot: &CounterSnapshot) -> i64 {
    snapshot.acked_messages as i64 - snapshot.consumed_messages as i64
}

#[allow(clippy::too_many_lines)] // over 70 lines before the limit; to be split
fn run_steady(
    options: &RunOptions,
    workload: &Arc<Workload>,
    versions: Versions,
    payloads: &Arc<Payloads>,
    stats: &Arc<Stats>,
    metadata: &Arc<Metadata>,
    mut memory: Option<MemoryReport>,
) -> Result<Summary, ClientError> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut timeline = Timeline::new(options.duration.as_secs_f64(), options.window_s);
    let consumers = start_consumers(workload, versions, stats, &stop, metadata);
    let producers = start_producers(workload, versions, payloads, stats, &stop, metadata);
    let started = Instant::now();
    let measure_from = started + options.warmup;
    let measure_until = measure_from + options.duration;
    let mut totals = Latencies::new();
    let mut interval = Latencies::new();
    let mut measuring = false;
    let mut baseline = stats.snapshot();
    let mut cpu_start = CpuSample::take(&options.broker_pids);
    let mut previous = stats.snapshot();
    let mut previous_cpu = CpuSample::take(&options.broker_pids);
    let mut next_tick = started + Duration::from_secs(1);
    loop {
        let now = Instant::now();
        let wake = next_tick.min(if measuring { measure_until } else { measure_from });
        if wake > now {
            thread::sleep(wake - now);
        }
        let now = Instant::now();
        if !measuring && now >= measure_from {
            // Warm-up over: discard its histograms, start counting from here.
            stats.drain(&mut interval);
            interval.reset();
            baseline = stats.snapshot();
            cpu_start = CpuSample::take(&options.broker_pids);
            measuring = true;
        }
        if now >= next_tick || now >= measure_until {
            let snapshot = stats.snapshot();
            let cpu = CpuSample::take(&options.broker_pids);
            stats.drain(&mut interval);
            let (broker_cores, _) = previous_cpu.cores_until(&cpu);
            let phase = if measuring { "measure" } else { "warm-up" };
            eprintln!(
                "{}",
                progress_line(
                    now.duration_since(started).as_secs_f64(),
                    phase,
                    &snapshot.since(&previous),
                    cpu.at.duration_since(previous_cpu.at).as_secs_f64(),
                    backlog(&snapshot),
                    &interval,
                    broker_cores
                )
            );
            if measuring {
                totals.add(&interval);
                let rss_kib = rss_kib_sum(&options.broker_pids);
                if let (Some(memory), Some(rss_kib)) = (&mut memory, rss_kib) {
                    memory.during_run_rss_kib.push(rss_kib);
                }
                let interval_s = cpu.at.duration_since(previous_cpu.at).as_secs_f64().max(1e-9);
                let mb_per_s = snapshot.since(&previous).acked_bytes as f64 / 1e6 / interval_s;
                timeline.add(
                    now.saturating_duration_since(measure_from).as_secs_f64(),
                    &interval,
                    mb_per_s,
                    rss_kib,
                );
            }
            interval.reset();
            previous = snapshot;
            previous_cpu = cpu;
            next_tick += Duration::from_secs(1);
        }
        if measuring && now >= measure_until {
            break;
        }
        if workers_all_finished(&producers, &consumers) {
            stats.error("every producer and consumer stopped early".to_owned());
            break;
        }
    }
    let end = stats.snapshot();
    let cpu_end = CpuSample::take(&options.broker_pids);
    stop.store(true, Ordering::Relaxed);
    join(Workers { producers, consumers });
    // Acknowledgements and reads of messages sent during the measured period arrive after it; keep their latencies.
    stats.drain(&mut interval);
    if measuring {
        totals.add(&interval);
        timeline.add_tail(&interval);
    }
    if let Some(memory) = &mut memory {
        memory.after_run = MemorySample::take(&options.broker_pids);
    }
    let measured = end.since(&baseline);
    let seconds = cpu_end.at.duration_since(cpu_start.at).as_secs_f64();
    let (broker_cpu_cores, generator_cpu_cores) = cpu_start.cores_until(&cpu_end);
    let broker_cpu_cores_each = cpu_start.broker_cores_until(&cpu_end);
    let machine_cpu_cores = cpu_start.machine_cores_until(&cpu_end);
    let (error_count, errors) = stats.errors();
    Ok(Summary {
        label: options.label.clone(),
        description: options.description.clone(),
        publish_seconds: seconds,
        consume_seconds: seconds,
        counters: measured,
        backlog_messages: backlog(&end),
        latencies: totals,
        broker_cpu_cores,
        broker_cpu_cores_each,
        generator_cpu_cores,
        machine_cpu_cores,
        error_count,
        errors,
        message_size: workload.message_size,
        memory,
        timeline: Some(timeline),
    })
}

fn workers_all_finished(producers: &[producer::ProducerHandle], consumers: &[JoinHandle<()>]) -> bool {
    producers.iter().all(|producer| producer.writer.is_finished())
        && consumers.iter().all(JoinHandle::is_finished)
}

#[allow(clippy::too_many_lines)] // over 70 lines before the limit; to be split
fn run_catch_up(
    options: &RunOptions,
    workload: &Arc<Workload>,
    versions: Versions,
    payloads: &Arc<Payloads>,
    stats: &Arc<Stats>,
    metadata: &Arc<Metadata>,
) -> Result<Summary, ClientError> {
    // Phase 1: producers alone write the backlog.
    let stop_producers = Arc::new(AtomicBool::new(false));
    let producers = start_producers(workload, versions, payloads, stats, &stop_producers, metadata);
    let started = Instant::now();
    let cpu_publish_start = CpuSample::take(&options.broker_pids);
    let mut totals = Latencies::new();
    let mut interval = Latencies::new();
    let mut previous = stats.snapshot();
    let mut previous_cpu = CpuSample::take(&options.broker_pids);
    let time_limit = options.warmup + options.duration.max(Duration::from_secs(10)) * 4;
    loop {
        thread::sleep(Duration::from_secs(1));
        let snapshot = stats.snapshot();
        let cpu = CpuSample::take(&options.broker_pids);
        stats.drain(&mut interval);
        eprintln!(
            "{}",
            progress_line(
                started.elapsed().as_secs_f64(),
                "backlog",
                &snapshot.since(&previous),
                cpu.at.duration_since(previous_cpu.at).as_secs_f64(),
                backlog(&snapshot),
                &interval,
                previous_cpu.cores_until(&cpu).0
            )
        );
        totals.add(&interval);
        interval.reset();
        previous = snapshot;
        previous_cpu = cpu;
        if snapshot.acked_bytes >= options.backlog_size {
            break;
        }
        if started.elapsed() > time_limit || producers.iter().all(|producer| producer.writer.is_finished()) {
            stats.error(format!(
                "backlog of {} bytes not written within {:?}",
                options.backlog_size, time_limit
            ));
            break;
        }
    }
    stop_producers.store(true, Ordering::Relaxed);
    join(Workers { producers, consumers: Vec::new() });
    stats.drain(&mut interval);
    totals.add(&interval);
    let published = stats.snapshot();
    let cpu_publish_end = CpuSample::take(&options.broker_pids);
    let publish_seconds = cpu_publish_end.at.duration_since(cpu_publish_start.at).as_secs_f64();
    if options.evict_size > 0 {
        evict(options, workload, versions, payloads, stats)?;
    }
    if options.drop_caches {
        drop_page_cache(stats);
    }
    // Phase 2: consumers read the whole backlog from the start.
    let mut consume_workload = (**workload).clone();
    consume_workload.start_offset = StartOffset::Earliest;
    let consume_workload = Arc::new(consume_workload);
    let stop_consumers = Arc::new(AtomicBool::new(false));
    let consume_started = Instant::now();
    let cpu_consume_start = CpuSample::take(&options.broker_pids);
    let consumers = start_consumers(&consume_workload, versions, stats, &stop_consumers, metadata);
    let consume_limit = options.duration.max(Duration::from_secs(10)) * 4;
    loop {
        thread::sleep(Duration::from_millis(200));
        let snapshot = stats.snapshot();
        if snapshot.consumed_messages >= published.acked_messages {
            break;
        }
        if consume_started.elapsed() > consume_limit || consumers.iter().all(JoinHandle::is_finished) {
            stats.error(format!(
                "catch-up read {} of {} messages within {:?}",
                snapshot.consumed_messages, published.acked_messages, consume_limit
            ));
            break;
        }
        if previous_cpu.at.elapsed() >= Duration::from_secs(1) {
            let cpu = CpuSample::take(&options.broker_pids);
            eprintln!(
                "{}",
                progress_line(
                    started.elapsed().as_secs_f64(),
                    "catch-up",
                    &snapshot.since(&previous),
                    cpu.at.duration_since(previous_cpu.at).as_secs_f64(),
                    backlog(&snapshot),
                    &Latencies::new(),
                    previous_cpu.cores_until(&cpu).0
                )
            );
            previous = snapshot;
            previous_cpu = cpu;
        }
    }
    let end = stats.snapshot();
    let cpu_consume_end = CpuSample::take(&options.broker_pids);
    let consume_seconds = consume_started.elapsed().as_secs_f64();
    stop_consumers.store(true, Ordering::Relaxed);
    join(Workers { producers: Vec::new(), consumers });
    // End-to-end latency of a backlog is its age, not a latency; drop it.
    stats.drain(&mut interval);
    let mut counters = end;
    counters.acked_messages = published.acked_messages;
    counters.acked_bytes = published.acked_bytes;
    let (broker_cpu_cores, generator_cpu_cores) = cpu_consume_start.cores_until(&cpu_consume_end);
    let broker_cpu_cores_each = cpu_consume_start.broker_cores_until(&cpu_consume_end);
    let machine_cpu_cores = cpu_consume_start.machine_cores_until(&cpu_consume_end);
    let (error_count, errors) = stats.errors();
    Ok(Summary {
        label: options.label.clone(),
        description: options.description.clone(),
        publish_seconds,
        consume_seconds,
        counters,
        backlog_messages: backlog(&end),
        latencies: totals,
        broker_cpu_cores,
        broker_cpu_cores_each,
        generator_cpu_cores,
        machine_cpu_cores,
        error_count,
        errors,
        message_size: workload.message_size,
        memory: None,
        timeline: None,
    })
}

/// Empties the page cache so that a catch-up read comes from the disk for brokers that read through it (Sluice
/// reads with O_DIRECT and needs this less). Needs root; failure is reported, not fatal.
/// Writes `evict_size` payload bytes to a second topic per backlog topic, counted apart from the run's figures:
/// afterwards a broker's cache of recent batches (Sluice's is first in, first out) holds them, not the backlog.
fn evict(
    options: &RunOptions,
    workload: &Arc<Workload>,
    versions: Versions,
    payloads: &Arc<Payloads>,
    stats: &Arc<Stats>,
) -> Result<(), ClientError> {
    let mut evict_workload = (**workload).clone();
    evict_workload.topics = workload.topics.iter().map(|topic| format!("{topic}-evict")).collect();
    let metadata = create_topics(workload, versions, evict_workload.topics.clone())?;
    let evict_workload = Arc::new(evict_workload);
    let evict_stats = Stats::new();
    let stop = Arc::new(AtomicBool::new(false));
    let producers = start_producers(&evict_workload, versions, payloads, &evict_stats, &stop, &metadata);
    let started = Instant::now();
    let time_limit = options.warmup + options.duration.max(Duration::from_secs(10)) * 4;
    // Bounded by the time limit.
    loop {
        thread::sleep(Duration::from_millis(200));
        let written = evict_stats.snapshot().acked_bytes;
        if written >= options.evict_size {
            eprintln!(
                "{:6.1}s evict    wrote {} MB to the eviction topic",
                started.elapsed().as_secs_f64(),
                written / 1_000_000
            );
            break;
        }
        if started.elapsed() > time_limit || producers.iter().all(|producer| producer.writer.is_finished()) {
            stats.error(format!(
                "eviction data of {} bytes not written within {time_limit:?}",
                options.evict_size
            ));
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    join(Workers { producers, consumers: Vec::new() });
    Ok(())
}

fn drop_page_cache(stats: &Stats) {
    // SAFETY: sync() takes no arguments and only schedules dirty pages for writing.
    unsafe { libc::sync() };
    if let Err(error) = std::fs::write("/proc/sys/vm/drop_caches", "1\n") {
        stats.error(format!("cannot drop the page cache: {error}"));
    }
}
