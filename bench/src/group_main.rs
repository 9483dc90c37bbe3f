//! `sluice-group-bench`: the group coordinator's figures — rebalance latency in a group of N members when one
//! joins, and OffsetCommit requests answered per second. See `sluice_bench::groups`.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use sluice_bench::groups::{commit_rate, rebalance_latency};

#[derive(Parser, Debug)]
#[command(name = "sluice-group-bench", version, about = "Consumer-group coordinator benchmarks")]
struct Cli {
    #[arg(long, default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// Members already in the group when the new one joins.
    #[arg(long, default_value_t = 10)]
    members: usize,
    /// Join rounds measured (each: a member joins, then leaves again).
    #[arg(long, default_value_t = 20)]
    rounds: usize,
    /// Heartbeat interval of the members (how soon they notice a rebalance).
    #[arg(long, default_value_t = 10)]
    heartbeat_ms: u64,
    /// Concurrent committing connections, one measurement each.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    commit_clients: Vec<usize>,
    /// Seconds per commit measurement.
    #[arg(long, default_value_t = 5.0)]
    commit_seconds: f64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let run_id = std::process::id();
    if cli.rounds > 0 {
        let group = format!("rebalance-bench-{run_id}");
        match rebalance_latency(
            &cli.bootstrap,
            &group,
            cli.members,
            cli.rounds,
            Duration::from_millis(cli.heartbeat_ms),
        ) {
            Ok(mut samples) => {
                samples.sort();
                let ms = |d: Duration| d.as_secs_f64() * 1e3;
                println!(
                    "rebalance: {} members + 1 joining, heartbeat {} ms, {} rounds: JoinGroup -> all SyncGroup \
                     median {:.1} ms, min {:.1} ms, p90 {:.1} ms, max {:.1} ms",
                    cli.members,
                    cli.heartbeat_ms,
                    samples.len(),
                    ms(samples[samples.len() / 2]),
                    ms(samples[0]),
                    ms(samples[samples.len() * 9 / 10]),
                    ms(samples[samples.len() - 1])
                );
            }
            Err(error) => {
                eprintln!("sluice-group-bench: rebalance: {error}");
                return ExitCode::FAILURE;
            }
        }
    }
    for clients in &cli.commit_clients {
        let topic = format!("commit-bench-{run_id}");
        match commit_rate(&cli.bootstrap, &topic, *clients, Duration::from_secs_f64(cli.commit_seconds)) {
            Ok(rate) => {
                println!("offset commits: {clients} clients, one request in flight each: {rate:.0} commits/s")
            }
            Err(error) => {
                eprintln!("sluice-group-bench: commits: {error}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
