//! `sluice elect-leaders`: ElectLeaders (API 43, v1 or v2) for the named partitions or for all of them.
//!
//! Output, on stdout: one line per partition elected or failed, one line naming the partitions whose leader was
//! already the one the election would pick (ELECTION_NOT_NEEDED, which is not a failure, as in Kafka's
//! `kafka-leader-election.sh`), and a summary. The exit code is 0 unless a partition failed.

use std::collections::BTreeMap;
use std::time::Duration;

use clap::{Args, ValueEnum};
use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse};

use super::client::AdminClient;
use super::reassign::{timeout_ms, topic_name, DEFERRED_ROUND_COUNT_MAX, REQUEST_TIMED_OUT};
use super::{describe_code, CommandError};

/// Kafka's ELECTION_NOT_NEEDED.
const ELECTION_NOT_NEEDED: i16 = 84;
/// Partitions named on the ELECTION_NOT_NEEDED line at most; the count is always printed.
const NOT_NEEDED_SHOWN_MAX: usize = 50;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ElectionType {
    /// The first replica (the preferred leader) leads again, if it is in the ISR.
    Preferred,
    /// A replica outside the ISR may lead a partition that has no live ISR member (may lose acknowledged data).
    Unclean,
}

impl ElectionType {
    /// Kafka's `election_type` field: PREFERRED is 0, UNCLEAN is 1.
    fn code(self) -> i8 {
        match self {
            ElectionType::Preferred => 0,
            ElectionType::Unclean => 1,
        }
    }

    fn name(self) -> &'static str {
        match self {
            ElectionType::Preferred => "preferred",
            ElectionType::Unclean => "unclean",
        }
    }
}

#[derive(Args, Debug)]
pub struct ElectLeadersArgs {
    /// Any broker(s) of the cluster, HOST:PORT[,HOST:PORT...].
    #[arg(long, value_name = "HOST:PORT")]
    bootstrap_server: String,
    /// Which leader to elect.
    #[arg(long, value_enum, value_name = "TYPE")]
    election_type: ElectionType,
    /// A topic; each --topic pairs with the --partition in the same position (repeatable).
    #[arg(long = "topic", value_name = "T", conflicts_with = "all_topic_partitions")]
    topics: Vec<String>,
    /// A partition of the --topic in the same position (repeatable).
    #[arg(long = "partition", value_name = "P", conflicts_with = "all_topic_partitions")]
    partitions: Vec<i32>,
    /// Every partition of every topic.
    #[arg(long)]
    all_topic_partitions: bool,
    /// How long the broker may take, in seconds.
    #[arg(long, value_name = "S", default_value_t = 30)]
    timeout_s: u64,
}

/// Per-partition answers, by (topic, partition): the error code and message.
type Answers = BTreeMap<(String, i32), (i16, Option<String>)>;

pub fn run(args: &ElectLeadersArgs) -> Result<(), CommandError> {
    let named = named_partitions(args)?;
    let timeout = Duration::from_secs(args.timeout_s.max(1));
    let mut client = AdminClient::connect(&args.bootstrap_server, timeout)?;
    let mut answers = Answers::new();
    let mut asked = named;
    for round in 1..=DEFERRED_ROUND_COUNT_MAX {
        let answered = elect_once(&mut client, args.election_type, asked.as_deref(), timeout)?;
        // Partitions the broker deferred (REQUEST_TIMED_OUT: one request changes a bounded number) are asked again.
        let deferred: Vec<(String, i32)> = answered
            .iter()
            .filter(|(_, (code, _))| *code == REQUEST_TIMED_OUT)
            .map(|(key, _)| key.clone())
            .collect();
        answers.extend(answered);
        if deferred.is_empty() || round == DEFERRED_ROUND_COUNT_MAX {
            break;
        }
        asked = Some(deferred);
    }
    report(args.election_type, &answers)
}

/// The `--topic`/`--partition` pairs, or `None` for `--all-topic-partitions`.
fn named_partitions(args: &ElectLeadersArgs) -> Result<Option<Vec<(String, i32)>>, CommandError> {
    if args.all_topic_partitions {
        return Ok(None);
    }
    if args.topics.is_empty() && args.partitions.is_empty() {
        return Err(CommandError::Usage(
            "say which partitions: --topic T --partition P (repeatable) or --all-topic-partitions".into(),
        ));
    }
    if args.topics.len() != args.partitions.len() {
        return Err(CommandError::Usage(format!(
            "{} --topic and {} --partition: each --topic needs the --partition in the same position",
            args.topics.len(),
            args.partitions.len()
        )));
    }
    if let Some(negative) = args.partitions.iter().find(|&&partition| partition < 0) {
        return Err(CommandError::Usage(format!("--partition {negative} is negative")));
    }
    Ok(Some(args.topics.iter().cloned().zip(args.partitions.iter().copied()).collect()))
}

fn elect_once(
    client: &mut AdminClient,
    election_type: ElectionType,
    partitions: Option<&[(String, i32)]>,
    timeout: Duration,
) -> Result<Answers, CommandError> {
    let topic_partitions = partitions.map(|pairs| {
        let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for (topic, partition) in pairs {
            let list = by_topic.entry(topic.as_str()).or_default();
            if !list.contains(partition) {
                list.push(*partition);
            }
        }
        by_topic
            .into_iter()
            .map(|(name, partitions)| {
                let mut entry = TopicPartitions::default();
                entry.topic = topic_name(name);
                entry.partitions = partitions;
                entry
            })
            .collect::<Vec<_>>()
    });
    let build = |_version: i16| {
        let mut request = ElectLeadersRequest::default();
        request.election_type = election_type.code();
        request.topic_partitions = topic_partitions.clone();
        request.timeout_ms = timeout_ms(timeout);
        request
    };
    // v0 has no election type (preferred only); v1 adds it and a top-level error code, v2 is v1 made flexible.
    let response: ElectLeadersResponse =
        client.call_controller((1, 2), build, |response: &ElectLeadersResponse| response.error_code)?;
    if response.error_code != 0 {
        return Err(CommandError::Cluster(format!(
            "ElectLeaders: {}",
            describe_code(response.error_code, None)
        )));
    }
    let mut answers = Answers::new();
    for topic in &response.replica_election_results {
        for partition in &topic.partition_result {
            let message = partition.error_message.as_ref().map(|text| text.as_str().to_owned());
            answers.insert(
                (topic.topic.0.as_str().to_owned(), partition.partition_id),
                (partition.error_code, message),
            );
        }
    }
    if let Some(pairs) = partitions {
        for key in pairs {
            answers
                .entry(key.clone())
                .or_insert((-1, Some("the broker's answer does not mention this partition".to_owned())));
        }
    }
    Ok(answers)
}

fn report(election_type: ElectionType, answers: &Answers) -> Result<(), CommandError> {
    let mut elected = 0;
    let mut failed = 0;
    let mut not_needed = Vec::new();
    for ((topic, partition), (code, message)) in answers {
        match *code {
            0 => {
                elected += 1;
                println!("  {topic}-{partition}: elected, {}", describe_code(0, None));
            }
            ELECTION_NOT_NEEDED => not_needed.push(format!("{topic}-{partition}")),
            code => {
                failed += 1;
                println!("  {topic}-{partition}: failed, {}", describe_code(code, message.as_deref()));
            }
        }
    }
    if !not_needed.is_empty() {
        let shown: Vec<&str> = not_needed.iter().take(NOT_NEEDED_SHOWN_MAX).map(String::as_str).collect();
        let more = if not_needed.len() > shown.len() { ", ..." } else { "" };
        println!(
            "  {} partitions already had the right leader ({}): {}{more}",
            not_needed.len(),
            describe_code(ELECTION_NOT_NEEDED, None),
            shown.join(", ")
        );
    }
    println!(
        "{} election: {elected} elected, {} not needed, {failed} failed",
        election_type.name(),
        not_needed.len()
    );
    if failed > 0 {
        return Err(CommandError::Failed(format!(
            "{failed} of {} partitions failed their election",
            answers.len()
        )));
    }
    Ok(())
}
