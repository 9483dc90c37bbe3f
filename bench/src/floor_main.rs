//! `sluice-floor`: the latency floor server (see `sluice_bench::floor`). Runs until killed.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use sluice_bench::floor::{serve, FloorConfig};

#[derive(Parser, Debug)]
#[command(
    name = "sluice-floor",
    version,
    about = "A minimal Kafka Produce server: O_DIRECT append + group-committed fdatasync, nothing else"
)]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9092")]
    listen: String,
    /// Directory for the per-core files (core-<i>.log, truncated at start). Must support O_DIRECT (not tmpfs).
    #[arg(long)]
    data_dir: PathBuf,
    /// Writer threads, one file each (default: one per CPU, as Sluice runs one shard per core).
    #[arg(long)]
    cores: Option<usize>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let core_count = cli.cores.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    let listener = match TcpListener::bind(&cli.listen) {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("sluice-floor: cannot listen on {}: {error}", cli.listen);
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "sluice-floor: listening on {}, {core_count} core(s), files in {}",
        cli.listen,
        cli.data_dir.display()
    );
    let config = FloorConfig { data_dir: cli.data_dir, core_count };
    match serve(&listener, &config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("sluice-floor: {error}");
            ExitCode::FAILURE
        }
    }
}
