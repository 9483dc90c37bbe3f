//! `sluice`: start a broker (`sluice` or `sluice start`) with the embedded default configuration, a `--config` file
//! and flag overrides. Any start-up problem prints one line naming it and exits non-zero.
//!
//! The operator commands `sluice reassign` and `sluice elect-leaders` (`admin_cli`) speak the Kafka protocol to any
//! broker of a cluster; they start no broker.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use sluice_broker::admin_cli::{self, elect_leaders::ElectLeadersArgs, reassign::ReassignArgs};
use sluice_broker::config::{Config, ConfigOverrides};

#[derive(Parser, Debug)]
#[command(name = "sluice", version, about = "A Kafka-compatible streaming broker on thread-per-core shards")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    start: StartArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a single-node broker (the default).
    Start(StartArgs),
    /// Move partition replicas onto a broker (or as a plan file says), or cancel moves in progress.
    Reassign(ReassignArgs),
    /// Elect the preferred (or an unclean) leader of partitions.
    ElectLeaders(ElectLeadersArgs),
}

#[derive(Args, Debug, Default)]
struct StartArgs {
    /// TOML file with Kafka's configuration names (log.segment.bytes, num.partitions, ...).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on, HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    listen: Option<String>,
    /// Address clients are told to connect to, HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    advertised_listener: Option<String>,
    /// Directory for topic metadata and partition logs.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Number of shards (one executor per core); default: one per online core.
    #[arg(long, value_name = "N")]
    shards: Option<usize>,
    /// This broker's node id.
    #[arg(long, value_name = "N")]
    node_id: Option<i32>,
}

fn main() -> ExitCode {
    sluice_broker::alloc::keep_freed_memory();
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::Start(args)) => args,
        Some(Command::Reassign(args)) => {
            return admin_cli::exit_code("reassign", admin_cli::reassign::run(&args))
        }
        Some(Command::ElectLeaders(args)) => {
            return admin_cli::exit_code("elect-leaders", admin_cli::elect_leaders::run(&args))
        }
        None => cli.start,
    };
    sluice_broker::logging::init();
    let overrides = ConfigOverrides {
        listen: args.listen,
        advertised_listener: args.advertised_listener,
        data_dir: args.data_dir,
        shard_count: args.shards,
        node_id: args.node_id,
    };
    let config = match Config::load(args.config.as_deref(), &overrides) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("sluice: error: {error}");
            return ExitCode::from(2);
        }
    };
    match sluice_broker::server::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("sluice: error: {error}");
            ExitCode::FAILURE
        }
    }
}
