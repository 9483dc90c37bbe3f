//! `sluice reassign`: move partition replicas between brokers with AlterPartitionReassignments (API 45, v0),
//! follow them with ListPartitionReassignments (API 46, v0), or cancel them (a null target, KIP-455).
//!
//! Output, on stdout: the current assignment and the proposed one, each as one line of Kafka's reassignment JSON
//! (the first is the roll-back plan), then one line per partition with the broker's answer (`NAME (code)`), then,
//! with `--wait`, progress lines and each partition's final replicas and ISR. Errors are one line on stderr; the
//! exit code is 0 only if every partition succeeded (and, with `--wait`, finished with its target replicas).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use clap::Args;
use kafka_protocol::messages::alter_partition_reassignments_request::{
    ReassignablePartition, ReassignableTopic,
};
use kafka_protocol::messages::list_partition_reassignments_request::ListPartitionReassignmentsTopics;
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId,
    ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::client::AdminClient;
use super::plan::{self, Move, MoveRequest, PartitionTarget};
use super::{describe_code, plan_json, CommandError};

/// What the broker is given to answer one admin request (`timeout_ms`); the client waits a little longer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How often `--wait` asks which partitions are still moving.
const WAIT_POLL_INTERVAL: Duration = Duration::from_millis(500);
/// How long `--wait` gives the bootstrap broker's Metadata to show a finished move: brokers install the
/// controller's changes within a heartbeat or a metadata fetch (2 s by default), so 10 s is ample.
const METADATA_SETTLE_TIMEOUT: Duration = Duration::from_secs(10);
/// `--wait` prints progress when the count changes, and at least this often.
const WAIT_REPORT_INTERVAL: Duration = Duration::from_secs(5);
/// A reassignment file larger than this is refused before it is read: a plan for 200,000 partitions is ~14 MB.
const PLAN_FILE_SIZE_MAX: u64 = 64 << 20;
/// Rounds of resubmitting the partitions a broker deferred (REQUEST_TIMED_OUT: its plan reached its per-request
/// bound of changed partitions, and a retry carries them out against the next image).
pub const DEFERRED_ROUND_COUNT_MAX: usize = 5;
/// Kafka's REQUEST_TIMED_OUT, which Sluice also answers for partitions it deferred.
pub const REQUEST_TIMED_OUT: i16 = 7;

#[derive(Args, Debug)]
pub struct ReassignArgs {
    /// Any broker(s) of the cluster, HOST:PORT[,HOST:PORT...].
    #[arg(long, value_name = "HOST:PORT")]
    bootstrap_server: String,
    /// Move replicas onto broker N: its fair share, or every replica of --from-broker.
    #[arg(long, value_name = "N", conflicts_with_all = ["plan", "cancel"])]
    to_broker: Option<i32>,
    /// With --to-broker: move every replica broker M holds (of the selected topics) to N.
    #[arg(long, value_name = "M", requires = "to_broker")]
    from_broker: Option<i32>,
    /// Carry out a plan in Kafka's reassignment JSON ({"version":1,"partitions":[...]}).
    #[arg(long, value_name = "FILE")]
    plan: Option<PathBuf>,
    /// Cancel the reassignments in progress (of --plan's partitions, of --topic's, or all).
    #[arg(long)]
    cancel: bool,
    /// Only these topics (repeatable); default: every topic but the internal ones.
    #[arg(long = "topic", value_name = "T")]
    topics: Vec<String>,
    /// Print the plan and submit nothing.
    #[arg(long)]
    dry_run: bool,
    /// Wait until the partitions have finished moving, printing progress.
    #[arg(long)]
    wait: bool,
    /// How long --wait waits, in seconds.
    #[arg(long, value_name = "S", default_value_t = 300)]
    timeout_s: u64,
}

/// A partition: (topic, partition index).
type PartitionKey = (String, i32);
/// A partition and its target replicas, `None` to cancel its reassignment.
type Target = (PartitionKey, Option<Vec<i32>>);

/// A reassignment in progress, as ListPartitionReassignments describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Ongoing {
    replicas: Vec<i32>,
    adding: Vec<i32>,
    removing: Vec<i32>,
}

/// One partition's answer to AlterPartitionReassignments.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Outcome {
    topic: String,
    partition: i32,
    code: i16,
    message: Option<String>,
}

pub fn run(args: &ReassignArgs) -> Result<(), CommandError> {
    if args.to_broker.is_none() && args.plan.is_none() && !args.cancel {
        return Err(CommandError::Usage("say what to move: --to-broker N, --plan FILE or --cancel".into()));
    }
    let mut client = AdminClient::connect(&args.bootstrap_server, REQUEST_TIMEOUT)?;
    if args.cancel {
        return run_cancel(&mut client, args);
    }
    let moves = planned_moves(&client, args)?;
    if moves.is_empty() {
        println!("nothing to reassign");
        return Ok(());
    }
    let current: Vec<PartitionTarget> = moves.iter().map(Move::current_target).collect();
    let proposed: Vec<PartitionTarget> = moves.iter().map(Move::new_target).collect();
    println!("Current partition replica assignment (save it to roll back with --plan):");
    println!("{}", plan_json::to_json(&current));
    println!("Proposed partition reassignment:");
    println!("{}", plan_json::to_json(&proposed));
    if args.dry_run {
        println!("dry run: nothing submitted");
        return Ok(());
    }
    let targets: Vec<Target> = proposed
        .iter()
        .map(|target| ((target.topic.clone(), target.partition), Some(target.replicas.clone())))
        .collect();
    let outcomes = submit(&mut client, &targets)?;
    println!("Submitted {} partition reassignments:", outcomes.len());
    for (each, outcome) in moves.iter().zip(&outcomes) {
        println!(
            "  {}-{} {:?} -> {:?}: {}",
            each.topic,
            each.partition,
            each.current,
            each.target,
            describe_code(outcome.code, outcome.message.as_deref())
        );
    }
    let accepted: Vec<&Move> =
        moves.iter().zip(&outcomes).filter(|(_, outcome)| outcome.code == 0).map(|(each, _)| each).collect();
    let failed = moves.len() - accepted.len();
    if args.wait && !accepted.is_empty() {
        let keys: BTreeSet<PartitionKey> =
            accepted.iter().map(|each| (each.topic.clone(), each.partition)).collect();
        wait_until_done(&mut client, &keys, Duration::from_secs(args.timeout_s))?;
        check_final_replicas(&mut client, &accepted)?;
    }
    if failed > 0 {
        return Err(CommandError::Failed(format!("{failed} of {} partitions were refused", moves.len())));
    }
    Ok(())
}

/// The moves `--to-broker` computes or `--plan` reads, checked against the cluster.
fn planned_moves(client: &AdminClient, args: &ReassignArgs) -> Result<Vec<Move>, CommandError> {
    if let Some(to_broker) = args.to_broker {
        let request = MoveRequest { to_broker, from_broker: args.from_broker, topics: args.topics.clone() };
        let plan = plan::plan_move_to_broker(client.view(), &request).map_err(CommandError::Usage)?;
        for note in &plan.notes {
            println!("note: {note}");
        }
        return Ok(plan.moves);
    }
    let Some(path) = &args.plan else { return Ok(Vec::new()) };
    moves_from_plan_file(client, path, &args.topics)
}

/// The moves a reassignment file asks for, checked against the cluster; errors name the file.
fn moves_from_plan_file(
    client: &AdminClient,
    path: &Path,
    topics: &[String],
) -> Result<Vec<Move>, CommandError> {
    let targets = read_plan(path)?;
    plan::moves_from_targets(client.view(), &targets, topics)
        .map_err(|reason| CommandError::Usage(format!("{}: {reason}", path.display())))
}

fn read_plan(path: &Path) -> Result<Vec<PartitionTarget>, CommandError> {
    let unreadable = |error: std::io::Error| CommandError::Usage(format!("{}: {error}", path.display()));
    let file = File::open(path).map_err(unreadable)?;
    let mut text = String::new();
    // One byte past the bound tells a file at the bound from a larger one without trusting its metadata.
    file.take(PLAN_FILE_SIZE_MAX + 1).read_to_string(&mut text).map_err(unreadable)?;
    if text.len() as u64 > PLAN_FILE_SIZE_MAX {
        return Err(CommandError::Usage(format!(
            "{}: larger than {PLAN_FILE_SIZE_MAX} bytes",
            path.display()
        )));
    }
    plan_json::from_json(&text).map_err(|reason| CommandError::Usage(format!("{}: {reason}", path.display())))
}

/// `--cancel`: null targets for the selected partitions that have a reassignment in progress.
fn run_cancel(client: &mut AdminClient, args: &ReassignArgs) -> Result<(), CommandError> {
    let selection = match &args.plan {
        Some(path) => {
            let moves = moves_from_plan_file(client, path, &args.topics)?;
            Some(moves.into_iter().map(|each| (each.topic, each.partition)).collect::<BTreeSet<_>>())
        }
        None if !args.topics.is_empty() => {
            let topics = plan::select_topics(client.view(), &args.topics).map_err(CommandError::Usage)?;
            let view = client.view();
            Some(
                topics
                    .iter()
                    .flat_map(|&topic| {
                        view.topics[topic].partitions.keys().map(move |&index| (topic.to_owned(), index))
                    })
                    .collect(),
            )
        }
        None => None,
    };
    let ongoing = list_ongoing(client, selection.as_ref())?;
    let cancelled: Vec<PartitionKey> = ongoing.into_keys().collect();
    if cancelled.is_empty() {
        println!("no reassignment in progress among the selected partitions");
        return Ok(());
    }
    println!("Reassignments in progress to cancel:");
    for (topic, partition) in &cancelled {
        println!("  {topic}-{partition}");
    }
    if args.dry_run {
        println!("dry run: nothing submitted");
        return Ok(());
    }
    let targets: Vec<Target> = cancelled.iter().map(|key| (key.clone(), None)).collect();
    let outcomes = submit(client, &targets)?;
    println!("Cancelled:");
    for outcome in &outcomes {
        println!(
            "  {}-{}: {}",
            outcome.topic,
            outcome.partition,
            describe_code(outcome.code, outcome.message.as_deref())
        );
    }
    let failed = outcomes.iter().filter(|outcome| outcome.code != 0).count();
    if args.wait {
        let keys: BTreeSet<PartitionKey> = outcomes
            .iter()
            .filter(|outcome| outcome.code == 0)
            .map(|outcome| (outcome.topic.clone(), outcome.partition))
            .collect();
        wait_until_done(client, &keys, Duration::from_secs(args.timeout_s))?;
    }
    if failed > 0 {
        return Err(CommandError::Failed(format!(
            "{failed} of {} cancellations were refused",
            outcomes.len()
        )));
    }
    Ok(())
}

/// Sends the targets (`None`: cancel) and returns one outcome per target, in the same order. Partitions the
/// broker deferred (REQUEST_TIMED_OUT) are sent again, up to `DEFERRED_ROUND_COUNT_MAX` rounds.
fn submit(client: &mut AdminClient, targets: &[Target]) -> Result<Vec<Outcome>, CommandError> {
    let mut outcomes: BTreeMap<PartitionKey, Outcome> = BTreeMap::new();
    let mut pending: Vec<&Target> = targets.iter().collect();
    for round in 1..=DEFERRED_ROUND_COUNT_MAX {
        let answered = submit_once(client, &pending)?;
        let mut deferred = Vec::new();
        for (entry, outcome) in pending.iter().zip(answered) {
            if outcome.code == REQUEST_TIMED_OUT && round < DEFERRED_ROUND_COUNT_MAX {
                deferred.push(*entry);
            }
            outcomes.insert(entry.0.clone(), outcome);
        }
        if deferred.is_empty() {
            break;
        }
        pending = deferred;
    }
    Ok(targets.iter().filter_map(|(key, _)| outcomes.remove(key)).collect())
}

fn submit_once(client: &mut AdminClient, targets: &[&Target]) -> Result<Vec<Outcome>, CommandError> {
    let mut by_topic: BTreeMap<&str, Vec<ReassignablePartition>> = BTreeMap::new();
    for ((topic, partition), replicas) in targets.iter().copied() {
        let mut entry = ReassignablePartition::default();
        entry.partition_index = *partition;
        entry.replicas = replicas.as_ref().map(|ids| ids.iter().copied().map(BrokerId).collect());
        by_topic.entry(topic.as_str()).or_default().push(entry);
    }
    let build = |_version: i16| {
        let mut request = AlterPartitionReassignmentsRequest::default();
        request.timeout_ms = timeout_ms(REQUEST_TIMEOUT);
        request.topics = by_topic
            .iter()
            .map(|(&name, partitions)| {
                let mut topic = ReassignableTopic::default();
                topic.name = topic_name(name);
                topic.partitions = partitions.clone();
                topic
            })
            .collect();
        request
    };
    let response: AlterPartitionReassignmentsResponse =
        client.call_controller((0, 0), build, |response: &AlterPartitionReassignmentsResponse| {
            response.error_code
        })?;
    if response.error_code != 0 {
        return Err(CommandError::Cluster(format!(
            "AlterPartitionReassignments: {}",
            describe_code(response.error_code, response.error_message.as_ref().map(|text| text.as_str()))
        )));
    }
    let mut answers: BTreeMap<(&str, i32), (i16, Option<String>)> = BTreeMap::new();
    for topic in &response.responses {
        for partition in &topic.partitions {
            let message = partition.error_message.as_ref().map(|text| text.as_str().to_owned());
            answers
                .insert((topic.name.0.as_str(), partition.partition_index), (partition.error_code, message));
        }
    }
    Ok(targets
        .iter()
        .map(|((topic, partition), _)| {
            let (code, message) = answers
                .get(&(topic.as_str(), *partition))
                .cloned()
                .unwrap_or((-1, Some("the broker's answer does not mention this partition".into())));
            Outcome { topic: topic.clone(), partition: *partition, code, message }
        })
        .collect())
}

/// The reassignments in progress among `selection` (all
/// of the cluster's if `None`).
fn list_ongoing(
    client: &mut AdminClient,
    selection: Option<&BTreeSet<PartitionKey>>,
) -> Result<BTreeMap<PartitionKey, Ongoing>, CommandError> {
    let topics = selection.map(|keys| {
        let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for (topic, partition) in keys {
            by_topic.entry(topic.as_str()).or_default().push(*partition);
        }
        by_topic
            .into_iter()
            .map(|(name, partitions)| {
                let mut topic = ListPartitionReassignmentsTopics::default();
                topic.name = topic_name(name);
                topic.partition_indexes = partitions;
                topic
            })
            .collect::<Vec<_>>()
    });
    let build = |_version: i16| {
        let mut request = ListPartitionReassignmentsRequest::default();
        request.timeout_ms = timeout_ms(REQUEST_TIMEOUT);
        request.topics = topics.clone();
        request
    };
    let response: ListPartitionReassignmentsResponse =
        client.call_controller((0, 0), build, |response: &ListPartitionReassignmentsResponse| {
            response.error_code
        })?;
    if response.error_code != 0 {
        return Err(CommandError::Cluster(format!(
            "ListPartitionReassignments: {}",
            describe_code(response.error_code, response.error_message.as_ref().map(|text| text.as_str()))
        )));
    }
    let ids = |list: &[BrokerId]| list.iter().map(|id| id.0).collect::<Vec<i32>>();
    let mut ongoing = BTreeMap::new();
    for topic in &response.topics {
        for partition in &topic.partitions {
            let key = (topic.name.0.as_str().to_owned(), partition.partition_index);
            if selection.is_none_or(|keys| keys.contains(&key)) {
                let state = Ongoing {
                    replicas: ids(&partition.replicas),
                    adding: ids(&partition.adding_replicas),
                    removing: ids(&partition.removing_replicas),
                };
                ongoing.insert(key, state);
            }
        }
    }
    Ok(ongoing)
}

/// Polls ListPartitionReassignments every `WAIT_POLL_INTERVAL` until none of `keys` is listed, or `timeout`.
fn wait_until_done(
    client: &mut AdminClient,
    keys: &BTreeSet<PartitionKey>,
    timeout: Duration,
) -> Result<(), CommandError> {
    let started = Instant::now();
    let deadline = started + timeout;
    let mut reported: Option<(usize, Instant)> = None;
    loop {
        let ongoing = list_ongoing(client, Some(keys))?;
        let now = Instant::now();
        let elapsed_s = now.duration_since(started).as_secs_f64();
        if ongoing.is_empty() {
            println!("done: {} partitions finished moving in {elapsed_s:.1} s", keys.len());
            return Ok(());
        }
        let due = reported.is_none_or(|(count, at)| {
            count != ongoing.len() || now.duration_since(at) >= WAIT_REPORT_INTERVAL
        });
        if due {
            println!(
                "waiting: {} of {} partitions still moving ({elapsed_s:.1} s)",
                ongoing.len(),
                keys.len()
            );
            reported = Some((ongoing.len(), now));
        }
        if now >= deadline {
            let names: Vec<String> = ongoing
                .iter()
                .take(20)
                .map(|((topic, partition), state)| {
                    format!("{topic}-{partition} (replicas {:?}, adding {:?})", state.replicas, state.adding)
                })
                .collect();
            return Err(CommandError::Failed(format!(
                "timed out after {} s with {} of {} partitions still moving: {}{}",
                timeout.as_secs(),
                ongoing.len(),
                keys.len(),
                names.join(", "),
                if ongoing.len() > names.len() { ", ..." } else { "" }
            )));
        }
        // The last poll comes at the deadline itself, so a move finishing just before it still counts.
        thread::sleep(WAIT_POLL_INTERVAL.min(deadline.saturating_duration_since(now)));
    }
}

/// After `--wait`: each moved partition's replicas, leader and ISR from the bootstrap broker's Metadata. A broker
/// other than the controller installs the completed reassignment a moment after the controller stops listing it,
/// so Metadata is asked again every `WAIT_POLL_INTERVAL` for up to `METADATA_SETTLE_TIMEOUT`; a partition whose
/// replicas are still not its target then (someone cancelled or replaced it) fails the command.
fn check_final_replicas(client: &mut AdminClient, moves: &[&Move]) -> Result<(), CommandError> {
    let deadline = Instant::now() + METADATA_SETTLE_TIMEOUT;
    loop {
        let view = client.refresh()?;
        let settled =
            moves.iter().all(|each| view.replicas(&each.topic, each.partition) == Some(&each.target[..]));
        if settled || Instant::now() + WAIT_POLL_INTERVAL > deadline {
            break;
        }
        thread::sleep(WAIT_POLL_INTERVAL);
    }
    let view = client.view();
    let mut wrong = 0;
    for each in moves {
        let state = view.topics.get(&each.topic).and_then(|topic| topic.partitions.get(&each.partition));
        match state {
            Some(state) if state.replicas == each.target => println!(
                "  {}-{}: replicas {:?} leader {} isr {:?}",
                each.topic, each.partition, state.replicas, state.leader, state.isr
            ),
            Some(state) => {
                wrong += 1;
                println!(
                    "  {}-{}: replicas {:?}, not the target {:?} (leader {} isr {:?})",
                    each.topic, each.partition, state.replicas, each.target, state.leader, state.isr
                );
            }
            None => {
                wrong += 1;
                println!("  {}-{}: no longer in the cluster's metadata", each.topic, each.partition);
            }
        }
    }
    if wrong > 0 {
        return Err(CommandError::Failed(format!(
            "{wrong} of {} partitions did not end with their target replicas (Metadata of {})",
            moves.len(),
            client.bootstrap_address()
        )));
    }
    Ok(())
}

pub fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_owned()))
}

pub fn timeout_ms(timeout: Duration) -> i32 {
    i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX)
}
