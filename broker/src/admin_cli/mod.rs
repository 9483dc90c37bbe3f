//! Operator commands of the `sluice` binary (`sluice reassign`, `sluice elect-leaders`), which speak only the Kafka
//! protocol to a cluster's brokers, so they work against Kafka as well as Sluice.
//!
//! - `client.rs` — `AdminClient`: a small blocking Kafka client (one request at a time over a std `TcpStream`,
//!   every read and write bounded by a deadline, frames capped), which sends admin requests to the controller the
//!   Metadata answer names, as Kafka's own admin client does.
//! - `view.rs` — `ClusterView`: brokers, controller and partition replicas from one Metadata answer.
//! - `plan.rs` — the pure computation of a reassignment that moves replicas onto a broker.
//! - `plan_json.rs` and `json.rs` — Kafka's reassignment JSON (`{"version":1,"partitions":[...]}`), printed and
//!   parsed by a bounded reader of our own (the broker crate has no JSON dependency).
//! - `reassign.rs`, `elect_leaders.rs` — the two commands.
//!
//! Nothing here runs inside a broker: these are plain threads and blocking sockets of a short-lived process.

pub mod client;
pub mod elect_leaders;
pub mod json;
pub mod plan;
pub mod plan_json;
pub mod reassign;
pub mod view;

use std::fmt;
use std::process::ExitCode;

use kafka_protocol::error::ResponseError;

/// Why a command stopped. Each is printed as one line on stderr; the variant decides the exit code.
#[derive(Debug)]
pub enum CommandError {
    /// The command line or a file it names is wrong (exit code 2, as clap's own usage errors).
    Usage(String),
    /// The cluster could not be reached or answered something unusable (exit code 1).
    Cluster(String),
    /// The request went through but some partitions failed or did not finish in time; their lines were already
    /// printed on stdout (exit code 1).
    Failed(String),
}

impl fmt::Display for CommandError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandError::Usage(text) | CommandError::Cluster(text) | CommandError::Failed(text) => {
                formatter.write_str(text)
            }
        }
    }
}

impl From<client::ClientError> for CommandError {
    fn from(error: client::ClientError) -> Self {
        CommandError::Cluster(error.to_string())
    }
}

/// The exit code of a command's result, after printing an error as one line `sluice <command>: error: ...`.
pub fn exit_code(command: &str, result: Result<(), CommandError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("sluice {command}: error: {error}");
            match error {
                CommandError::Usage(_) => ExitCode::from(2),
                CommandError::Cluster(_) | CommandError::Failed(_) => ExitCode::FAILURE,
            }
        }
    }
}

/// Kafka's name of an error code as its own tools print it (`NONE`, `ELECTION_NOT_NEEDED`), from the codec's
/// `ResponseError` names (`ElectionNotNeeded`); a code the codec does not know is `UNKNOWN_CODE_<n>`.
pub fn error_name(code: i16) -> String {
    match ResponseError::try_from_code(code) {
        None => "NONE".to_owned(),
        Some(ResponseError::Unknown(code)) => format!("UNKNOWN_CODE_{code}"),
        Some(error) => upper_snake(&format!("{error:?}")),
    }
}

/// `NotLeaderOrFollower` → `NOT_LEADER_OR_FOLLOWER`.
fn upper_snake(camel: &str) -> String {
    let mut text = String::with_capacity(camel.len() + 8);
    for (index, character) in camel.chars().enumerate() {
        if character.is_ascii_uppercase() && index > 0 {
            text.push('_');
        }
        text.push(character.to_ascii_uppercase());
    }
    text
}

/// One partition's outcome as the commands print it: `NONE (0)`, or `NAME (code): message`.
pub fn describe_code(code: i16, message: Option<&str>) -> String {
    match message.filter(|text| !text.is_empty()) {
        Some(text) => format!("{} ({code}): {text}", error_name(code)),
        None => format!("{} ({code})", error_name(code)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_names_are_kafkas() {
        for (code, name) in [
            (0, "NONE"),
            (-1, "UNKNOWN_SERVER_ERROR"),
            (3, "UNKNOWN_TOPIC_OR_PARTITION"),
            (6, "NOT_LEADER_OR_FOLLOWER"),
            (39, "INVALID_REPLICA_ASSIGNMENT"),
            (41, "NOT_CONTROLLER"),
            (60, "REASSIGNMENT_IN_PROGRESS"),
            (84, "ELECTION_NOT_NEEDED"),
            (85, "NO_REASSIGNMENT_IN_PROGRESS"),
            (9999, "UNKNOWN_CODE_9999"),
        ] {
            assert_eq!(error_name(code), name, "code {code}");
        }
        assert_eq!(describe_code(0, Some("")), "NONE (0)");
        assert_eq!(describe_code(39, Some("bad")), "INVALID_REPLICA_ASSIGNMENT (39): bad");
    }
}
