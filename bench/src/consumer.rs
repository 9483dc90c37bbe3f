//! One consumer: a thread that owns a fixed set of partitions (no consumer group yet) and fetches them from their
//! leaders. It runs one *session* per leader broker — a thread with its own connection that finds its partitions'
//! start offsets with ListOffsets and long-polls them with Fetch, one request in flight, as Kafka consumers do per
//! broker, each sent before the previous response's records are parsed. Against a single broker that is one session
//! and one connection, as before. Every record whose payload starts with a send timestamp yields an end-to-end
//! latency.
//!
//! A partition whose fetch answers with a stale-metadata error is parked for `REFRESH_INTERVAL`, then looked up in
//! refreshed metadata: it resumes in the same session if that broker still leads it, or is handed (with its offset)
//! to the consumer thread, which gives it to the session of the new leader, starting one if needed.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::thread::{self, JoinHandle, Scope, ScopedJoinHandle};
use std::time::{Duration, Instant};

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse};

use crate::batch::{next_offset_after, read_batches};
use crate::client::{list_offsets, topic_name, ClientError, Connection, OFFSET_EARLIEST, OFFSET_LATEST};
use crate::clock::now_ns;
use crate::cluster::{error_action, ErrorAction, Metadata, NodeId, REFRESH_INTERVAL};
use crate::producer::TIMESTAMP_SIZE;
use crate::run::WorkerContext;
use crate::stats::{add, record_us};
use crate::workload::{StartOffset, Workload};

const OFFSET_OUT_OF_RANGE: i16 = 1;
/// How long an idle session or the consumer thread sleeps between looks at its inbox and the stop flag.
const IDLE_POLL: Duration = Duration::from_millis(20);

/// ListOffsets for a session's start, asked again every `REFRESH_INTERVAL`, at most `RETRY_COUNT_MAX` times, while
/// the answer is a stale-metadata error: in a cluster, Metadata may name a partition's leader a moment before that
/// broker has installed the partition (UNKNOWN_TOPIC_OR_PARTITION), and a consumer that gave up there would serve
/// none of its partitions for the whole run.
fn list_offsets_when_ready(
    connection: &mut Connection,
    versions: &crate::client::Versions,
    topic: &str,
    partitions: &[i32],
    timestamp: i64,
) -> Result<Vec<i64>, ClientError> {
    let mut attempts = 0;
    loop {
        match list_offsets(connection, versions, topic, partitions, timestamp) {
            Err(ClientError::Broker { error_code, .. })
                if error_action(error_code, attempts) == ErrorAction::RetryAfterRefresh =>
            {
                attempts += 1;
                thread::sleep(REFRESH_INTERVAL);
            }
            result => return result,
        }
    }
}

/// A partition a session fetches: where it is, and how many stale-metadata errors in a row it has had.
#[derive(Clone, Copy, Debug)]
struct Position {
    partition: i32,
    offset: i64,
    attempts: u32,
}

/// A partition waiting for metadata before it is fetched again.
struct Parked {
    position: Position,
    until: Instant,
}

/// Starts a consumer of `partitions` of `topic`; `ready` is counted once its start offsets are known, so that the
/// run can start producers only after every consumer is positioned (OMB's order).
pub fn start(
    context: WorkerContext,
    topic: String,
    consumer_index: usize,
    partitions: Vec<i32>,
    ready: std::sync::Arc<AtomicUsize>,
) -> JoinHandle<()> {
    let spawned = thread::Builder::new().name(format!("consumer-{consumer_index}")).spawn(move || {
        let consumer = Consumer { context: &context, topic: &topic, consumer_index };
        if let Err(error) = consumer.run(&partitions, &ready) {
            context.stats.error(format!("consumer {consumer_index}: {error}"));
        }
    });
    match spawned {
        Ok(handle) => handle,
        Err(error) => panic!("cannot start a consumer thread: {error}"),
    }
}

struct Consumer<'a> {
    context: &'a WorkerContext,
    topic: &'a str,
    consumer_index: usize,
}

/// A running session as the consumer thread sees it.
struct SessionHandle<'scope> {
    inbox: Sender<Position>,
    thread: ScopedJoinHandle<'scope, ()>,
}

impl<'a> Consumer<'a> {
    /// Starts a session per leader of `partitions`, counts `ready` once all are positioned, then routes partitions
    /// that change leader until the run stops or every session has ended.
    fn run(&self, partitions: &[i32], ready: &AtomicUsize) -> Result<(), ClientError> {
        let metadata = &*self.context.metadata;
        let mut groups = metadata.table().group_by_leader(self.topic, partitions);
        // The run waited for every leader; one may have gone since.
        if let Some(leaderless) = groups.remove(&crate::cluster::NO_LEADER) {
            for partition in leaderless {
                let (node, _) = ready_counted_if_err(metadata.wait_for_leader(self.topic, partition), ready)?;
                groups.entry(node).or_default().push(partition);
            }
        }
        let (handoff_sender, handoff_receiver) = channel::<Position>();
        thread::scope(|scope| {
            let (ready_sender, ready_receiver) = channel::<()>();
            let mut sessions: BTreeMap<NodeId, SessionHandle<'_>> = BTreeMap::new();
            for (node, group) in groups {
                let started =
                    self.spawn_session(scope, node, group, &handoff_sender, Some(ready_sender.clone()));
                sessions.insert(node, ready_counted_if_err(started, ready)?);
            }
            drop(ready_sender);
            // Each session reports once positioned (or failed); bounded as the run's own wait is.
            let deadline = Instant::now() + Duration::from_secs(10);
            for _ in 0..sessions.len() {
                let left = deadline.saturating_duration_since(Instant::now());
                if ready_receiver.recv_timeout(left).is_err() {
                    break;
                }
            }
            ready.fetch_add(1, Ordering::SeqCst); // even if a session failed, so the run does not wait for it
            self.route_handoffs(scope, &mut sessions, &handoff_sender, &handoff_receiver);
            Ok(())
        })
    }

    fn route_handoffs<'scope>(
        &'scope self,
        scope: &'scope Scope<'scope, '_>,
        sessions: &mut BTreeMap<NodeId, SessionHandle<'scope>>,
        handoff_sender: &Sender<Position>,
        handoff_receiver: &Receiver<Position>,
    ) {
        let context = self.context;
        loop {
            let position = match handoff_receiver.recv_timeout(IDLE_POLL) {
                Ok(position) => position,
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                    if context.stop.load(Ordering::Relaxed)
                        || sessions.values().all(|session| session.thread.is_finished())
                    {
                        return;
                    }
                    continue;
                }
            };
            let node = match context.metadata.wait_for_leader(self.topic, position.partition) {
                Ok((node, _)) => node,
                Err(error) => {
                    context
                        .stats
                        .error(format!("consumer {}: gives up on a partition: {error}", self.consumer_index));
                    continue;
                }
            };
            let delivered = sessions.get(&node).is_some_and(|session| session.inbox.send(position).is_ok());
            if !delivered {
                match self.spawn_session(scope, node, Vec::new(), handoff_sender, None) {
                    Ok(session) => {
                        // A fresh session's inbox is open: it reads it before its first fetch.
                        let _ = session.inbox.send(position);
                        sessions.insert(node, session);
                    }
                    Err(error) => context.stats.error(format!("consumer {}: {error}", self.consumer_index)),
                }
            }
        }
    }

    fn spawn_session<'scope>(
        &'scope self,
        scope: &'scope Scope<'scope, '_>,
        node: NodeId,
        partitions: Vec<i32>,
        handoff: &Sender<Position>,
        ready: Option<Sender<()>>,
    ) -> Result<SessionHandle<'scope>, ClientError> {
        let (inbox, inbox_receiver) = channel();
        let handoff = handoff.clone();
        let thread = thread::Builder::new()
            .name(format!("consumer-{}-{node}", self.consumer_index))
            .spawn_scoped(scope, move || {
                let session = Session { consumer: self, node, inbox: inbox_receiver, handoff };
                if let Err(error) = session.run(&partitions, ready) {
                    self.context.stats.error(format!("consumer {}: {error}", self.consumer_index));
                }
            })
            .map_err(ClientError::Io)?;
        Ok(SessionHandle { inbox, thread })
    }
}

/// Counts `ready` when `result` is an error: a consumer that fails before it is positioned must not hold the run.
fn ready_counted_if_err<T>(result: Result<T, ClientError>, ready: &AtomicUsize) -> Result<T, ClientError> {
    if result.is_err() {
        ready.fetch_add(1, Ordering::SeqCst);
    }
    result
}

/// One connection to one leader, fetching the partitions it leads.
struct Session<'a> {
    consumer: &'a Consumer<'a>,
    node: NodeId,
    /// Partitions handed over from other sessions.
    inbox: Receiver<Position>,
    /// Partitions that moved to another leader, for the consumer thread to route.
    handoff: Sender<Position>,
}

impl Session<'_> {
    #[allow(clippy::too_many_lines)] // over 70 lines before the limit; to be split
    fn run(&self, partitions: &[i32], ready: Option<Sender<()>>) -> Result<(), ClientError> {
        let WorkerContext { workload, versions, stats, stop, metadata } = self.consumer.context;
        let topic = self.consumer.topic;
        let address = metadata.table().address(self.node).map(str::to_owned);
        let mut connection = match address {
            Some(address) => Connection::connect(&address),
            None => Err(ClientError::Broker {
                what: format!("broker {} is not in Metadata", self.node),
                error_code: crate::cluster::error_code::LEADER_NOT_AVAILABLE,
            }),
        };
        let start_timestamp = match workload.start_offset {
            StartOffset::Earliest => OFFSET_EARLIEST,
            StartOffset::Latest => OFFSET_LATEST,
        };
        let positioned = match &mut connection {
            Ok(connection) if !partitions.is_empty() => {
                list_offsets_when_ready(connection, versions, topic, partitions, start_timestamp)
            }
            _ => Ok(Vec::new()),
        };
        if let Some(ready) = ready {
            let _ = ready.send(()); // even on failure, so the run does not wait for a dead consumer
        }
        let mut connection = connection?;
        let mut active: Vec<Position> = partitions
            .iter()
            .zip(positioned?)
            .map(|(&partition, offset)| Position { partition, offset, attempts: 0 })
            .collect();
        let mut parked: Vec<Parked> = Vec::new();
        let recorder = stats.recorder();
        let counters = &stats.counters;
        // Fetches are pipelined with processing, as the Java consumer does before it hands records to the
        // application (and librdkafka with its prefetch queue): as soon as a response arrives, the next offsets are
        // read from the batch headers and the next Fetch is sent; the records are parsed while the broker works on
        // it. Still one request in flight.
        self.adopt(&mut active, &mut parked)?;
        let mut in_flight = self.send(&mut connection, &active)?;
        loop {
            let Some((correlation_id, sent)) = in_flight.take() else {
                // Nothing to fetch here at the moment: wait for a handed-over or unparked partition.
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                if let Ok(position) = self.inbox.recv_timeout(IDLE_POLL) {
                    active.push(position);
                }
                self.adopt(&mut active, &mut parked)?;
                in_flight = self.send(&mut connection, &active)?;
                continue;
            };
            let response: FetchResponse =
                connection.reader.receive::<FetchRequest>(versions.fetch, correlation_id)?;
            add(&counters.fetch_requests, 1);
            let receive_ns = now_ns();
            if stop.load(Ordering::Relaxed) {
                break;
            }
            if response.error_code != 0 {
                stats.error(format!("fetch: error code {}", response.error_code));
                thread::sleep(Duration::from_millis(10));
                in_flight = self.send(&mut connection, &active)?;
                continue;
            }
            // Where this response leaves each partition; errors are handled here, before the next request goes out.
            for partition_data in response.responses.iter().flat_map(|topic| topic.partitions.iter()) {
                let Some(slot) =
                    active.iter().position(|position| position.partition == partition_data.partition_index)
                else {
                    continue;
                };
                let code = partition_data.error_code;
                if code == OFFSET_OUT_OF_RANGE {
                    let reset = list_offsets(
                        &mut connection,
                        versions,
                        topic,
                        &[active[slot].partition],
                        OFFSET_EARLIEST,
                    )?;
                    active[slot].offset = reset.first().copied().unwrap_or(0);
                    continue;
                }
                match error_action(code, active[slot].attempts) {
                    ErrorAction::Done => {
                        active[slot].attempts = 0;
                        if let Some(next) = partition_data.records.as_deref().and_then(next_offset_after) {
                            active[slot].offset = active[slot].offset.max(next);
                        }
                    }
                    ErrorAction::RetryAfterRefresh => {
                        add(&counters.retries, 1);
                        let mut position = active.remove(slot);
                        position.attempts += 1;
                        parked.push(Parked { position, until: Instant::now() + REFRESH_INTERVAL });
                    }
                    ErrorAction::Fail => {
                        let retried = active[slot].attempts;
                        stats.error(format!(
                            "fetch {topic}/{}: error code {code}",
                            partition_data.partition_index
                        ));
                        if retried > 0 {
                            // A partition whose leader stays wrong for RETRY_COUNT_MAX refreshes is given up.
                            active.remove(slot);
                        }
                    }
                }
            }
            self.adopt(&mut active, &mut parked)?;
            in_flight = self.send(&mut connection, &active)?;

            let mut latencies = match recorder.lock() {
                Ok(latencies) => latencies,
                Err(poisoned) => poisoned.into_inner(),
            };
            for partition_data in response.responses.iter().flat_map(|topic| topic.partitions.iter()) {
                if partition_data.error_code != 0 {
                    continue;
                }
                let Some(fetch_offset) = sent
                    .iter()
                    .find(|position| position.partition == partition_data.partition_index)
                    .map(|position| position.offset)
                else {
                    continue;
                };
                let Some(records) = &partition_data.records else {
                    continue;
                };
                let mut message_count = 0u64;
                let mut byte_count = 0u64;
                read_batches(records, workload.verify_crc, |offset, value| {
                    // A broker may return the whole batch that contains the fetch offset; skip what came before it.
                    if offset < fetch_offset {
                        return;
                    }
                    message_count += 1;
                    byte_count += value.len() as u64;
                    if let Some(timestamp) = value.get(..TIMESTAMP_SIZE) {
                        let mut bytes = [0u8; TIMESTAMP_SIZE];
                        bytes.copy_from_slice(timestamp);
                        let send_ns = u64::from_le_bytes(bytes);
                        record_us(&mut latencies.e2e_latency, receive_ns.saturating_sub(send_ns));
                    }
                })
                .map_err(|error| ClientError::Codec { api: "record batch", message: error.to_string() })?;
                add(&counters.consumed_messages, message_count);
                add(&counters.consumed_bytes, byte_count);
            }
        }
        Ok(())
    }

    /// Takes partitions handed over from other sessions, and looks up parked ones whose wait is over in refreshed
    /// metadata: back to fetching if this broker still leads them, parked again if none does, else handed off.
    fn adopt(&self, active: &mut Vec<Position>, parked: &mut Vec<Parked>) -> Result<(), ClientError> {
        active.extend(self.inbox.try_iter());
        if parked.is_empty() {
            return Ok(());
        }
        let now = Instant::now();
        if parked.iter().all(|entry| entry.until > now) {
            return Ok(());
        }
        let metadata: &Metadata = &self.consumer.context.metadata;
        let table = metadata.refresh()?;
        let mut index = 0;
        while index < parked.len() {
            if parked[index].until > now {
                index += 1;
                continue;
            }
            let mut position = parked.swap_remove(index).position;
            let leader = table.leader(self.consumer.topic, position.partition);
            if leader == self.node {
                active.push(position);
            } else if table.address(leader).is_some() {
                if self.handoff.send(position).is_err() {
                    // The consumer thread has stopped: the run is ending.
                    return Ok(());
                }
            } else if error_action(crate::cluster::error_code::LEADER_NOT_AVAILABLE, position.attempts)
                == ErrorAction::RetryAfterRefresh
            {
                position.attempts += 1;
                add(&self.consumer.context.stats.counters.retries, 1);
                parked.push(Parked { position, until: now + REFRESH_INTERVAL });
            } else {
                self.consumer.context.stats.error(format!(
                    "fetch {}/{}: no leader after {} retries",
                    self.consumer.topic, position.partition, position.attempts
                ));
            }
        }
        Ok(())
    }

    /// Sends the next Fetch for `active`, if any; returns its correlation id and the positions it asked from.
    fn send(
        &self,
        connection: &mut Connection,
        active: &[Position],
    ) -> Result<Option<(i32, Vec<Position>)>, ClientError> {
        if active.is_empty() {
            return Ok(None);
        }
        let WorkerContext { workload, versions, .. } = self.consumer.context;
        let request = fetch_request(workload, self.consumer.topic, active);
        let correlation_id = connection.writer.send(&request, versions.fetch)?;
        Ok(Some((correlation_id, active.to_vec())))
    }
}

fn fetch_request(workload: &Workload, topic: &str, positions: &[Position]) -> FetchRequest {
    let mut fetch_topic = FetchTopic::default();
    fetch_topic.topic = topic_name(topic);
    fetch_topic.partitions = positions
        .iter()
        .map(|position| {
            let mut entry = FetchPartition::default();
            entry.partition = position.partition;
            entry.current_leader_epoch = -1;
            entry.fetch_offset = position.offset;
            entry.last_fetched_epoch = -1;
            entry.log_start_offset = -1;
            entry.partition_max_bytes = workload.fetch_partition_size_max;
            entry
        })
        .collect();
    let mut request = FetchRequest::default();
    request.replica_id = BrokerId(-1);
    request.max_wait_ms = workload.fetch_wait_ms_max;
    request.min_bytes = workload.fetch_size_min;
    request.max_bytes = workload.fetch_size_max;
    request.isolation_level = 0;
    request.session_id = 0;
    request.session_epoch = -1;
    request.topics = vec![fetch_topic];
    request
}
