//! `sluice-bench`: offer a workload to any Kafka-compatible broker and report throughput and latency percentiles.
//! Options follow the OpenMessaging Benchmark's workload and driver settings; see `sluice-bench --help`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::Parser;
use sluice_bench::cluster::parse_bootstrap;
use sluice_bench::report::write_file;
use sluice_bench::run::{run, RunOptions};
use sluice_bench::workload::{KeyDistribution, StartOffset, Workload};
use sluice_storage::records::Compression;

#[derive(Parser, Debug)]
#[command(
    name = "sluice-bench",
    version,
    about = "An OpenMessaging-style load generator for Kafka-compatible brokers"
)]
struct Cli {
    /// Bootstrap brokers, HOST:PORT[,HOST:PORT...]. The first that answers is asked for Metadata; each partition is
    /// then produced to and fetched from its leader, with every producer and consumer keeping one connection per
    /// leader broker (one in all against a single broker, which is used at the bootstrap address given). A response
    /// that says the leader moved (NOT_LEADER_OR_FOLLOWER, LEADER_NOT_AVAILABLE, UNKNOWN_TOPIC_OR_PARTITION,
    /// FENCED_LEADER_EPOCH, NOT_CONTROLLER) refreshes Metadata, at most every 500 ms, and the batch or fetch is
    /// retried at the new leader, at most 20 times (counted as retries in the report); a partition without a leader
    /// waits for one for at most 30 s. Topics are created through any bootstrap broker, and the run starts once
    /// Metadata shows a leader for every partition (at most 30 s).
    #[arg(long, default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// Number of topics; each gets its own producers and consumers.
    #[arg(long, default_value_t = 1)]
    topics: usize,
    /// Partitions per topic.
    #[arg(long, default_value_t = 16)]
    partitions: i32,
    /// Replicas per partition of the topics created (at most the cluster's live brokers).
    #[arg(long, default_value_t = 1)]
    replication_factor: i16,
    /// A topic config for CreateTopics, KEY=VALUE with Kafka's name (e.g. min.insync.replicas=2); repeatable.
    #[arg(long = "topic-config", value_name = "KEY=VALUE", value_parser = parse_topic_config)]
    topic_configs: Vec<(String, String)>,
    /// Topic names are PREFIX-<run id>-<index>, fresh for every run.
    #[arg(long, default_value = "sluice-bench")]
    topic_prefix: String,
    /// Payload bytes per message (the first 8 carry the send timestamp).
    #[arg(long, default_value_t = 1024)]
    message_size: usize,
    /// Share of each payload that is random bytes; the rest is zeros (sets how well it compresses).
    #[arg(long, default_value_t = 1.0)]
    random_ratio: f64,
    /// Key distribution: none (sticky partitioner), round-robin or random keys (murmur2 partitioner).
    #[arg(long, value_enum, default_value_t = KeyDistribution::None)]
    keys: KeyDistribution,
    /// Producers per topic (one connection each per leader broker).
    #[arg(long, default_value_t = 1)]
    producers: usize,
    /// Producer connections over all topics instead of --producers per topic: connection c of N produces to the
    /// topics t with t mod N = c (or, with fewer topics than connections, to topic c mod topics), each message to
    /// the next of its topics and a partition by --keys. They share --rate evenly and are driven by
    /// --producer-threads threads, not two threads each. Single broker only; a batch answered with an error counts
    /// as failed (no retry).
    #[arg(long, default_value_t = 0)]
    producers_total: usize,
    /// Threads driving --producers-total connections (at most one per connection).
    #[arg(long, default_value_t = 4)]
    producer_threads: usize,
    /// Connections opened after the topics are created that send one ApiVersions and then stay silent for the run
    /// (their broker memory is reported with --broker-pid).
    #[arg(long, default_value_t = 0)]
    idle_connections: usize,
    /// Consumers per topic (one connection each per leader broker; the topic's partitions are dealt among them).
    #[arg(long, default_value_t = 1)]
    consumers: usize,
    /// Messages per second over all producers; 0 = as fast as possible. Otherwise open loop: each message has an
    /// intended send time and any lateness is reported as publish delay.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Alternative to --rate: megabytes (10^6) of payload per second over all producers.
    #[arg(long)]
    rate_mb: Option<f64>,
    /// Seconds of warm-up whose measurements are discarded.
    #[arg(long, default_value_t = 5.0)]
    warmup: f64,
    /// Seconds measured.
    #[arg(long, default_value_t = 60.0)]
    duration: f64,
    /// Produce acks: 0, 1 or -1 (all).
    #[arg(long, default_value_t = 1, allow_hyphen_values = true)]
    acks: i16,
    /// Batch compression, as Kafka's compression.type names it.
    #[arg(
        long,
        default_value_t = Compression::None,
        value_parser = PossibleValuesParser::new(Compression::NAMES).try_map(|name| name.parse::<Compression>()),
    )]
    compression: Compression,
    /// How long a partition's batch may wait for more messages (Kafka linger.ms).
    #[arg(long, default_value_t = 1.0)]
    linger_ms: f64,
    /// Bytes per partition batch before it is sent (Kafka batch.size). At most message.max.bytes of the broker.
    #[arg(long, default_value_t = 1 << 20)]
    batch_size: usize,
    /// Bytes of batches combined into one Produce request when several partitions are ready.
    #[arg(long, default_value_t = 4 << 20)]
    request_size_max: usize,
    /// Produce requests in flight per producer connection.
    #[arg(long, default_value_t = 5)]
    in_flight_max: usize,
    #[arg(long, default_value_t = 30_000)]
    request_timeout_ms: i32,
    /// Fetch max_bytes for the whole response.
    #[arg(long, default_value_t = 50 << 20)]
    fetch_size_max: i32,
    /// Fetch partition_max_bytes.
    #[arg(long, default_value_t = 1 << 20)]
    fetch_partition_size_max: i32,
    /// Fetch max_wait_ms: how long the broker may hold a fetch that has less than --fetch-size-min.
    #[arg(long, default_value_t = 500)]
    fetch_wait_ms_max: i32,
    #[arg(long, default_value_t = 1)]
    fetch_size_min: i32,
    /// Where consumers start: earliest or latest offset.
    #[arg(long, value_enum, default_value_t = StartOffset::Latest)]
    consume_from: StartOffset,
    /// Catch-up mode: write this many payload bytes with no consumer running, then read them all from the earliest
    /// offset and report the consume rate of that read.
    #[arg(long, default_value_t = 0)]
    backlog_size: u64,
    /// In catch-up mode, drop the page cache (root only) between writing and reading the backlog.
    #[arg(long)]
    drop_caches: bool,
    /// In catch-up mode, after the backlog, write this many payload bytes to a second topic (`<topic>-evict`), so
    /// that a broker's own memory of recent batches holds that data rather than the backlog's tail.
    #[arg(long, default_value_t = 0)]
    evict_size: u64,
    /// Skip CRC-32C checks of fetched batches.
    #[arg(long)]
    no_verify_crc: bool,
    /// Broker process ids, PID[,PID...], to report their CPU use from /proc: the sum and each broker's share (every
    /// broker of a local cluster).
    #[arg(long, value_delimiter = ',')]
    broker_pid: Vec<u32>,
    /// Delete the run's topics when it is over (DeleteTopics), so that many runs against one cluster do not fill
    /// its disks.
    #[arg(long)]
    delete_topics: bool,
    /// Name printed in reports and charts.
    #[arg(long, default_value = "sluice-bench")]
    label: String,
    /// Write results as JSON.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write a latency-percentile chart (SVG).
    #[arg(long, value_name = "FILE")]
    plot: Option<PathBuf>,
    /// Write publish p50, p99 and p99.9 per second over the measured period (SVG).
    #[arg(long, value_name = "FILE")]
    plot_series: Option<PathBuf>,
    /// Compare the publish latency of the first and the last this many seconds of the measured period (JSON
    /// `windows`, with `p99_ratio` = last p99 / first p99).
    #[arg(long, default_value_t = 0.0)]
    window_s: f64,
    /// Run no workload: wait until the broker at --bootstrap serves Metadata for at least this many topics named
    /// --topic-prefix… with a leader for each partition, and ListOffsets for all their partitions; print the
    /// milliseconds to each step as JSON (for start-up and recovery times; start it as the broker starts).
    #[arg(long, value_name = "N")]
    await_topics: Option<usize>,
    /// How long --await-topics waits before it fails.
    #[arg(long, default_value_t = 600.0)]
    await_timeout_s: f64,
}

#[allow(clippy::too_many_lines)] // over 70 lines before the limit; to be split
fn main() -> ExitCode {
    let cli = Cli::parse();
    raise_open_file_limit();
    if let Some(topic_count) = cli.await_topics {
        return await_topics(&cli, topic_count);
    }
    if let Err(problem) = validate(&cli) {
        eprintln!("sluice-bench: error: {problem}");
        return ExitCode::from(2);
    }
    let rate_per_s = match cli.rate_mb {
        Some(megabytes) => megabytes * 1e6 / cli.message_size as f64,
        None => cli.rate,
    };
    let run_id = format!("{:x}", sluice_bench::clock::now_ns() / 1_000_000 % 0xff_ffff);
    let topics = (0..cli.topics).map(|index| format!("{}-{run_id}-{index}", cli.topic_prefix)).collect();
    let workload = Workload {
        bootstrap: match parse_bootstrap(&cli.bootstrap) {
            Ok(addresses) => addresses,
            Err(problem) => {
                eprintln!("sluice-bench: error: {problem}");
                return ExitCode::from(2);
            }
        },
        topics,
        partition_count: cli.partitions,
        replication_factor: cli.replication_factor,
        topic_configs: cli.topic_configs.clone(),
        message_size: cli.message_size,
        random_ratio: cli.random_ratio,
        key_distribution: cli.keys,
        producers_per_topic: cli.producers,
        producers_total: cli.producers_total,
        producer_threads: cli.producer_threads,
        consumers_per_topic: cli.consumers,
        rate_per_s,
        acks: cli.acks,
        compression: cli.compression,
        linger: Duration::from_secs_f64(cli.linger_ms / 1000.0),
        batch_size: cli.batch_size,
        request_size_max: cli.request_size_max,
        in_flight_max: cli.in_flight_max,
        request_timeout_ms: cli.request_timeout_ms,
        fetch_size_max: cli.fetch_size_max,
        fetch_partition_size_max: cli.fetch_partition_size_max,
        fetch_wait_ms_max: cli.fetch_wait_ms_max,
        fetch_size_min: cli.fetch_size_min,
        start_offset: cli.consume_from,
        verify_crc: !cli.no_verify_crc,
    };
    let rate_text = if rate_per_s > 0.0 {
        format!("{:.0} msg/s ({:.1} MB/s)", rate_per_s, rate_per_s * cli.message_size as f64 / 1e6)
    } else {
        "max rate".to_owned()
    };
    let description = format!(
        "{} topic(s) × {} partitions{}, {} B messages, {} producers, {} consumers{}, {}, acks={}, {:?}, linger {} ms, batch {} B{}",
        cli.topics,
        cli.partitions,
        replication_text(&cli),
        cli.message_size,
        if cli.producers_total > 0 { cli.producers_total } else { cli.producers * cli.topics },
        cli.consumers * cli.topics,
        if cli.idle_connections > 0 { format!(", {} idle connections", cli.idle_connections) } else { String::new() },
        rate_text,
        cli.acks,
        cli.compression,
        cli.linger_ms,
        cli.batch_size,
        if cli.backlog_size > 0 { format!(", catch-up of {} MB", cli.backlog_size / 1_000_000) } else { String::new() }
    );
    let options = RunOptions {
        workload,
        warmup: Duration::from_secs_f64(cli.warmup),
        duration: Duration::from_secs_f64(cli.duration),
        backlog_size: cli.backlog_size,
        drop_caches: cli.drop_caches,
        evict_size: cli.evict_size,
        broker_pids: cli.broker_pid.clone(),
        delete_topics: cli.delete_topics,
        idle_connections: cli.idle_connections,
        window_s: cli.window_s,
        label: cli.label.clone(),
        description,
    };
    let summary = match run(options) {
        Ok(summary) => summary,
        Err(error) => {
            eprintln!("sluice-bench: error: {error}");
            return ExitCode::FAILURE;
        }
    };
    summary.print();
    if let Some(path) = &cli.json {
        if let Err(error) = write_file(path, &summary.to_json()) {
            eprintln!("sluice-bench: error: cannot write {}: {error}", path.display());
            return ExitCode::FAILURE;
        }
    }
    if let Some(path) = &cli.plot {
        if let Err(error) = write_file(path, &summary.to_svg()) {
            eprintln!("sluice-bench: error: cannot write {}: {error}", path.display());
            return ExitCode::FAILURE;
        }
    }
    if let (Some(path), Some(timeline)) = (&cli.plot_series, &summary.timeline) {
        if let Err(error) = write_file(path, &timeline.to_svg(&summary.label, &summary.description)) {
            eprintln!("sluice-bench: error: cannot write {}: {error}", path.display());
            return ExitCode::FAILURE;
        }
    }
    if summary.counters.acked_messages == 0 {
        eprintln!("sluice-bench: error: no message was acknowledged");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// `--await-topics`: prints the readiness JSON, or fails.
fn await_topics(cli: &Cli, topic_count: usize) -> ExitCode {
    let address = cli.bootstrap.split(',').next().unwrap_or_default().trim();
    let timeout = Duration::from_secs_f64(cli.await_timeout_s.max(0.0));
    match sluice_bench::ready::await_topics(address, &cli.topic_prefix, topic_count, timeout) {
        Ok(readiness) => {
            println!("{}", readiness.to_json());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("sluice-bench: error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Raises the soft open-file limit to the hard one: a run with a thousand producer and a thousand idle connections
/// needs more descriptors than the usual soft limit of 1,024.
fn raise_open_file_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit read and write the one struct passed, which lives across both calls.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// `KEY=VALUE` of `--topic-config`.
fn parse_topic_config(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("{text:?} is not KEY=VALUE")),
    }
}

/// ", RF 3 (min.insync.replicas=2)" for the run's description; nothing at the default of one replica and no configs.
fn replication_text(cli: &Cli) -> String {
    let configs: Vec<String> =
        cli.topic_configs.iter().map(|(key, value)| format!("{key}={value}")).collect();
    match (cli.replication_factor, configs.is_empty()) {
        (1, true) => String::new(),
        (factor, true) => format!(", RF {factor}"),
        (factor, false) => format!(", RF {factor} ({})", configs.join(", ")),
    }
}

fn validate(cli: &Cli) -> Result<(), String> {
    if cli.topics == 0 || cli.partitions <= 0 || cli.producers == 0 || cli.replication_factor <= 0 {
        return Err("--topics, --partitions, --producers and --replication-factor must be at least 1".into());
    }
    if !(0.0..=1.0).contains(&cli.random_ratio) {
        return Err(format!("--random-ratio {} is outside 0..=1", cli.random_ratio));
    }
    if ![0, 1, -1].contains(&cli.acks) {
        return Err(format!("--acks {} is not 0, 1 or -1", cli.acks));
    }
    if cli.in_flight_max == 0 || cli.in_flight_max > 1024 {
        return Err(format!("--in-flight-max {} is outside 1..=1024", cli.in_flight_max));
    }
    if cli.batch_size < 1024 || cli.request_size_max < cli.batch_size {
        return Err(format!(
            "--batch-size {} must be at least 1024 and at most --request-size-max {}",
            cli.batch_size, cli.request_size_max
        ));
    }
    if cli.producers_total > 0 && (cli.producer_threads == 0 || cli.backlog_size > 0) {
        return Err("--producers-total needs --producer-threads of at least 1 and no --backlog-size".into());
    }
    if cli.window_s < 0.0 || cli.window_s > cli.duration {
        return Err(format!("--window-s {} is outside 0..=--duration {}", cli.window_s, cli.duration));
    }
    if cli.rate < 0.0 || cli.warmup < 0.0 || cli.duration <= 0.0 || cli.linger_ms < 0.0 {
        return Err(
            "--rate, --warmup and --linger-ms must not be negative, --duration must be positive".into()
        );
    }
    Ok(())
}
