//! One producer: a writer thread that makes messages, batches them per partition and sends Produce requests, and a
//! reader thread that takes the responses in order and records publish latency.
//!
//! The two share a bounded channel of in-flight requests. The writer pushes an entry before it writes each request,
//! so the channel's capacity plus the entry the reader holds is the number of requests in flight; when it is full,
//! the writer blocks — and, with a rate clock, the time it loses shows up as publish delay.
//!
//! A producer has one such connection (writer side plus reader thread) per broker that leads one of its topic's
//! partitions — one in all against a single broker — and sends each partition's batches to its leader's. A batch
//! answered with a stale-metadata error goes back to the writer over an unbounded channel (it holds at most the
//! batches of the requests in flight, since the writer drains it before every send), which refreshes the routing
//! (at most every 500 ms) and sends it again to the new leader, up to `RETRY_COUNT_MAX` times.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

use bytes::Bytes;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};

use crate::client::{topic_name, ClientError, Connection, RequestWriter, ResponseReader, Versions};
use crate::clock::{now_ns, sleep_until_ns, tighten_timer_slack, RateClock};
use crate::cluster::{error_action, ErrorAction, Metadata, NodeId, RoutingTable, NO_LEADER};
use crate::run::WorkerContext;
use crate::stats::{add, record_us, Latencies, Stats};
use crate::workload::{partition_for_key, KeyDistribution, Payloads, Rng, Workload};
use sluice_storage::records::{BatchBuilder, RECORD_FRAMING_SIZE_MAX};

/// Bytes of the send timestamp at the start of each payload (nanoseconds, little-endian).
pub const TIMESTAMP_SIZE: usize = 8;

/// What the reader needs to account for one request when its response arrives, and to send a batch again.
struct InFlight {
    correlation_id: i32,
    /// In request order; `send_times_ns` is in the same order.
    partitions: Vec<PartitionInFlight>,
    send_times_ns: Vec<u64>,
}

struct PartitionInFlight {
    partition: i32,
    record_count: u32,
    payload_bytes: u64,
    /// Times this batch was sent before, after stale-metadata errors.
    attempts: u32,
    batch: Bytes,
}

pub struct ProducerHandle {
    pub writer: JoinHandle<()>,
}

/// Starts producer `producer_index` on `topic`. `rate_per_s` is this producer's share (0 = as fast as possible).
pub fn start(
    context: WorkerContext,
    topic: String,
    producer_index: usize,
    rate_per_s: f64,
    start_ns: u64,
    payloads: Arc<Payloads>,
) -> ProducerHandle {
    let WorkerContext { workload, versions, stats, stop, metadata } = context;
    let writer = thread::Builder::new().name(format!("producer-{producer_index}")).spawn(move || {
        let mut producer =
            match Producer::connect(&workload, versions, &metadata, topic, producer_index, &payloads, &stats)
            {
                Ok(producer) => producer,
                Err(error) => {
                    stats.error(format!("producer {producer_index}: connect: {error}"));
                    return;
                }
            };
        if let Err(error) = producer.run(rate_per_s, start_ns, &stop) {
            stats.error(format!("producer {producer_index}: {error}"));
        }
        producer.close();
    });
    match writer {
        Ok(writer) => ProducerHandle { writer },
        Err(error) => {
            // Thread creation fails only when the process is out of resources; nothing sensible can continue.
            panic!("cannot start a producer thread: {error}")
        }
    }
}

/// One connection to a partition leader: the writer's half, and the reader thread that takes its acknowledgements.
struct LeaderConnection {
    writer: RequestWriter,
    /// None with acks=0, and once closing.
    in_flight: Option<SyncSender<InFlight>>,
    reader: Option<JoinHandle<()>>,
}

struct Producer<'a> {
    workload: &'a Workload,
    versions: Versions,
    metadata: &'a Metadata,
    topic: String,
    producer_index: usize,
    payloads: &'a Payloads,
    stats: &'a Arc<Stats>,
    /// The leader of each of the topic's partitions, as of the last refresh this producer saw.
    leaders: Vec<NodeId>,
    routes: Arc<RoutingTable>,
    connections: BTreeMap<NodeId, LeaderConnection>,
    /// Batches the ack readers send back for another attempt.
    retry_sender: Sender<Sealed>,
    retry_receiver: Receiver<Sealed>,
    recorder: Arc<Mutex<Latencies>>,
    builders: Vec<BatchBuilder>,
    send_times_ns: Vec<Vec<u64>>,
    batch_bytes: Vec<u64>,
    /// When the oldest record of each open batch was appended; 0 = batch empty.
    open_since_ns: Vec<u64>,
    /// The minimum of `open_since_ns` over open batches (0 = none open): when linger expires.
    oldest_open_ns: u64,
    sticky_partition: i32,
    rng: Rng,
    message_index: u64,
    pending_delays_ns: Vec<u64>,
    sent_messages_unreported: u64,
    sent_bytes_unreported: u64,
}

impl<'a> Producer<'a> {
    fn connect(
        workload: &'a Workload,
        versions: Versions,
        metadata: &'a Metadata,
        topic: String,
        producer_index: usize,
        payloads: &'a Payloads,
        stats: &'a Arc<Stats>,
    ) -> Result<Self, ClientError> {
        let partition_count = workload.partition_count as usize;
        let batch_capacity = workload.batch_size.min(256 << 10);
        let (retry_sender, retry_receiver) = channel();
        let mut producer = Producer {
            workload,
            versions,
            metadata,
            topic,
            producer_index,
            payloads,
            stats,
            leaders: Vec::new(),
            routes: Arc::default(),
            connections: BTreeMap::new(),
            retry_sender,
            retry_receiver,
            recorder: stats.recorder(),
            builders: (0..partition_count)
                .map(|_| BatchBuilder::new(workload.compression, batch_capacity))
                .collect(),
            send_times_ns: vec![Vec::new(); partition_count],
            batch_bytes: vec![0; partition_count],
            open_since_ns: vec![0; partition_count],
            oldest_open_ns: 0,
            sticky_partition: (producer_index % partition_count) as i32,
            rng: Rng::new(0x5eed ^ producer_index as u64),
            message_index: producer_index as u64 * 7,
            pending_delays_ns: Vec::new(),
            sent_messages_unreported: 0,
            sent_bytes_unreported: 0,
        };
        producer.set_routes(metadata.table());
        // Connect to every leader now, before the rate clock starts, as the single connection always was.
        let all: Vec<i32> = (0..workload.partition_count).collect();
        for (node, _) in producer.routes.group_by_leader(&producer.topic, &all) {
            if let Some(address) = producer.routes.address(node).map(str::to_owned) {
                producer.open(node, &address)?;
            }
        }
        Ok(producer)
    }

    fn set_routes(&mut self, routes: Arc<RoutingTable>) {
        self.leaders = (0..self.workload.partition_count)
            .map(|partition| routes.leader(&self.topic, partition))
            .collect();
        self.routes = routes;
    }

    /// Opens the connection to leader `node`, and its acknowledgement reader unless acks=0.
    fn open(&mut self, node: NodeId, address: &str) -> Result<(), ClientError> {
        let Connection { writer, reader } = Connection::connect(address)?;
        let mut connection = LeaderConnection { writer, in_flight: None, reader: None };
        if self.workload.acks != 0 {
            // Capacity in_flight_max - 1: the reader holds one more entry while it waits for that response.
            let (sender, receiver) = sync_channel(self.workload.in_flight_max.saturating_sub(1));
            let stats = Arc::clone(self.stats);
            let recorder = Arc::clone(&self.recorder);
            let retries = self.retry_sender.clone();
            let version = self.versions.produce;
            let reader_thread = thread::Builder::new()
                .name(format!("producer-{}-acks", self.producer_index))
                .spawn(move || read_acks(reader, receiver, version, &stats, &recorder, &retries))
                .map_err(ClientError::Io)?;
            connection.in_flight = Some(sender);
            connection.reader = Some(reader_thread);
        }
        self.connections.insert(node, connection);
        Ok(())
    }

    /// The connection `partition`'s batches go to: its leader's, opened if new. A partition without a leader waits
    /// for Metadata to show one (bounded by `LEADER_WAIT_MAX`), blocking this producer as a full buffer would.
    fn leader_for(&mut self, partition: i32) -> Result<NodeId, ClientError> {
        let node = self.leaders.get(partition as usize).copied().unwrap_or(NO_LEADER);
        if node != NO_LEADER && self.connections.contains_key(&node) {
            return Ok(node);
        }
        let (node, address) = match self.routes.address(node) {
            Some(address) => (node, address.to_owned()),
            None => {
                let found = self.metadata.wait_for_leader(&self.topic, partition)?;
                self.set_routes(self.metadata.table());
                found
            }
        };
        if !self.connections.contains_key(&node) {
            self.open(node, &address)?;
        }
        Ok(node)
    }

    fn run(&mut self, rate_per_s: f64, start_ns: u64, stop: &AtomicBool) -> Result<(), ClientError> {
        let linger_ns = self.workload.linger.as_nanos() as u64;
        if rate_per_s <= 0.0 {
            while !stop.load(Ordering::Relaxed) {
                // Check the stop flag once per 64 messages: an atomic load per message is cheap, but not free.
                for _ in 0..64 {
                    let send_ns = now_ns();
                    self.send_message(send_ns)?;
                    if self.oldest_open_ns != 0 && send_ns >= self.oldest_open_ns + linger_ns {
                        self.flush_all()?;
                    }
                }
            }
        } else {
            tighten_timer_slack();
            let mut clock = RateClock::new(start_ns, rate_per_s);
            while !stop.load(Ordering::Relaxed) {
                let intended_ns = clock.peek_ns();
                let linger_deadline_ns =
                    if self.oldest_open_ns == 0 { u64::MAX } else { self.oldest_open_ns + linger_ns };
                if linger_deadline_ns <= intended_ns {
                    sleep_until_ns(linger_deadline_ns);
                    self.flush_all()?;
                    continue;
                }
                sleep_until_ns(intended_ns);
                // Send every message that is due now; each records how late it went out.
                let now = now_ns();
                while clock.peek_ns() <= now {
                    let intended_ns = clock.next_intended_ns();
                    let send_ns = now_ns();
                    self.pending_delays_ns.push(send_ns.saturating_sub(intended_ns));
                    self.send_message(send_ns)?;
                    if self.pending_delays_ns.len() >= 4096 {
                        self.report_delays();
                    }
                }
            }
        }
        self.flush_all()
    }

    /// Appends one message to its partition's batch, sending that batch first if the message would overflow it.
    fn send_message(&mut self, send_ns: u64) -> Result<(), ClientError> {
        let workload = self.workload;
        let partition = match workload.key_distribution {
            KeyDistribution::None => None,
            KeyDistribution::RoundRobin => Some(self.message_index as usize),
            KeyDistribution::Random => Some(self.rng.below(self.payloads.key_count())),
        };
        let payloads = self.payloads;
        let key = partition.map(|key_index| payloads.key(key_index));
        let partition = match key {
            Some(key) => partition_for_key(key, workload.partition_count),
            None => self.sticky_partition,
        } as usize;
        let value = payloads.value(self.message_index);
        self.message_index += 1;
        let record_size_max = value.len() + key.map_or(0, <[u8]>::len) + RECORD_FRAMING_SIZE_MAX;
        if !self.builders[partition].is_empty()
            && self.builders[partition].size() + record_size_max > workload.batch_size
        {
            self.flush_partition(partition)?;
        }
        let timestamp = send_ns.to_le_bytes();
        let (prefix, rest) = if value.len() >= TIMESTAMP_SIZE {
            (&timestamp[..], &value[TIMESTAMP_SIZE..])
        } else {
            (&[][..], value)
        };
        self.builders[partition].append((send_ns / 1_000_000) as i64, key, Some(&[prefix, rest]));
        self.send_times_ns[partition].push(send_ns);
        self.batch_bytes[partition] += value.len() as u64;
        if self.open_since_ns[partition] == 0 {
            self.open_since_ns[partition] = send_ns;
            if self.oldest_open_ns == 0 {
                self.oldest_open_ns = send_ns;
            }
        }
        self.sent_messages_unreported += 1;
        self.sent_bytes_unreported += value.len() as u64;
        Ok(())
    }

    fn flush_partition(&mut self, partition: usize) -> Result<(), ClientError> {
        let mut outgoing = Outgoing::new();
        self.queue_retries(&mut outgoing)?;
        let batch = self.seal(partition)?;
        self.queue(&mut outgoing, batch)?;
        self.send_outgoing(outgoing)?;
        self.recompute_oldest();
        Ok(())
    }

    /// Sends every open batch, as few requests per leader as `request_size_max` allows.
    fn flush_all(&mut self) -> Result<(), ClientError> {
        let mut outgoing = Outgoing::new();
        self.queue_retries(&mut outgoing)?;
        for partition in 0..self.builders.len() {
            if self.builders[partition].is_empty() {
                continue;
            }
            let sealed = self.seal(partition)?;
            self.queue(&mut outgoing, sealed)?;
        }
        self.send_outgoing(outgoing)?;
        self.oldest_open_ns = 0;
        self.report_delays();
        Ok(())
    }

    /// Adds `batch` to its leader's next request, sending that request first if the batch would overflow it.
    fn queue(&mut self, outgoing: &mut Outgoing, batch: Sealed) -> Result<(), ClientError> {
        let node = self.leader_for(batch.partition)?;
        let (request, request_size) = outgoing.entry(node).or_default();
        if !request.is_empty() && *request_size + batch.batch.len() > self.workload.request_size_max {
            let full = std::mem::take(request);
            *request_size = 0;
            self.send_request(node, full)?;
        }
        let (request, request_size) = outgoing.entry(node).or_default();
        *request_size += batch.batch.len();
        request.push(batch);
        Ok(())
    }

    fn send_outgoing(&mut self, outgoing: Outgoing) -> Result<(), ClientError> {
        for (node, (request, _)) in outgoing {
            if !request.is_empty() {
                self.send_request(node, request)?;
            }
        }
        Ok(())
    }

    /// Queues the batches the ack readers sent back, after refreshing the routing (waiting until a refresh is due,
    /// so that a retry does not go straight back to the broker that just refused it).
    fn queue_retries(&mut self, outgoing: &mut Outgoing) -> Result<(), ClientError> {
        let Ok(first) = self.retry_receiver.try_recv() else {
            return Ok(());
        };
        self.set_routes(self.metadata.refresh_when_due()?);
        let mut retry = Some(first);
        while let Some(batch) = retry {
            self.queue(outgoing, batch)?;
            retry = self.retry_receiver.try_recv().ok();
        }
        Ok(())
    }

    fn recompute_oldest(&mut self) {
        self.oldest_open_ns =
            self.open_since_ns.iter().copied().filter(|&since| since != 0).min().unwrap_or(0);
    }

    fn seal(&mut self, partition: usize) -> Result<Sealed, ClientError> {
        let record_count = self.builders[partition].record_count();
        let batch = self.builders[partition]
            .finish(self.workload.batch_size.min(256 << 10))
            .map_err(|error| ClientError::Codec { api: "record batch", message: error.to_string() })?;
        self.open_since_ns[partition] = 0;
        if self.workload.key_distribution == KeyDistribution::None
            && partition as i32 == self.sticky_partition
        {
            self.sticky_partition = (self.sticky_partition + 1) % self.workload.partition_count;
        }
        Ok(Sealed {
            partition: partition as i32,
            attempts: 0,
            record_count,
            payload_bytes: std::mem::take(&mut self.batch_bytes[partition]),
            send_times_ns: std::mem::take(&mut self.send_times_ns[partition]),
            batch,
        })
    }

    fn send_request(&mut self, node: NodeId, sealed: Vec<Sealed>) -> Result<(), ClientError> {
        let Some(connection) = self.connections.get_mut(&node) else {
            unreachable!("queue opened the connection to leader {node}")
        };
        let mut topic_data = TopicProduceData::default();
        topic_data.name = topic_name(&self.topic);
        let mut in_flight = InFlight {
            correlation_id: 0,
            partitions: Vec::with_capacity(sealed.len()),
            send_times_ns: Vec::new(),
        };
        let borrowed: Vec<Bytes> = sealed.iter().map(|batch| batch.batch.clone()).collect();
        for batch in sealed {
            let mut partition_data = PartitionProduceData::default();
            partition_data.index = batch.partition;
            partition_data.records = Some(batch.batch.clone());
            topic_data.partition_data.push(partition_data);
            // The batch stays referenced until acknowledged, so that a stale leader's refusal can be sent again.
            in_flight.partitions.push(PartitionInFlight {
                partition: batch.partition,
                record_count: batch.record_count,
                payload_bytes: batch.payload_bytes,
                attempts: batch.attempts,
                batch: batch.batch,
            });
            if in_flight.send_times_ns.is_empty() {
                in_flight.send_times_ns = batch.send_times_ns;
            } else {
                in_flight.send_times_ns.extend_from_slice(&batch.send_times_ns);
            }
        }
        let mut request = ProduceRequest::default();
        request.acks = self.workload.acks;
        request.timeout_ms = self.workload.request_timeout_ms;
        request.topic_data = vec![topic_data];
        let counters = &self.stats.counters;
        add(&counters.sent_messages, std::mem::take(&mut self.sent_messages_unreported));
        add(&counters.sent_bytes, std::mem::take(&mut self.sent_bytes_unreported));
        add(&counters.produce_requests, 1);
        // The correlation id is the writer's next one; reserve the in-flight slot before writing so that the reader
        // always finds the entry for the response it reads.
        in_flight.correlation_id = connection.writer.next_correlation_id();
        if let Some(sender) = &connection.in_flight {
            if sender.send(in_flight).is_err() {
                return Err(ClientError::Io(std::io::Error::other("the acknowledgement reader stopped")));
            }
            connection.writer.send_borrowing(&request, self.versions.produce, &borrowed)?;
        } else {
            // acks=0: no response will come; count the messages as acknowledged once written.
            let (messages, bytes) = totals(&in_flight);
            connection.writer.send_borrowing(&request, self.versions.produce, &borrowed)?;
            add(&counters.acked_messages, messages);
            add(&counters.acked_bytes, bytes);
        }
        Ok(())
    }

    fn report_delays(&mut self) {
        if self.pending_delays_ns.is_empty() {
            return;
        }
        let mut latencies = match self.recorder.lock() {
            Ok(latencies) => latencies,
            Err(poisoned) => poisoned.into_inner(),
        };
        for &delay in &self.pending_delays_ns {
            record_us(&mut latencies.publish_delay, delay);
        }
        self.pending_delays_ns.clear();
    }

    fn close(mut self) {
        self.report_delays();
        for connection in self.connections.values_mut() {
            connection.in_flight = None; // the reader drains what is in flight, then sees the channel close
        }
        for connection in self.connections.values_mut() {
            if let Some(reader) = connection.reader.take() {
                let _ = reader.join();
            }
        }
        // Batches refused by a stale leader after the last flush were never acknowledged.
        for batch in self.retry_receiver.try_iter() {
            add(&self.stats.counters.failed_messages, batch.record_count as u64);
        }
    }
}

/// Each leader's next request: its batches and their bytes.
type Outgoing = BTreeMap<NodeId, (Vec<Sealed>, usize)>;

struct Sealed {
    partition: i32,
    /// Times this batch was sent before (see `PartitionInFlight::attempts`).
    attempts: u32,
    record_count: u32,
    payload_bytes: u64,
    send_times_ns: Vec<u64>,
    batch: Bytes,
}

fn totals(in_flight: &InFlight) -> (u64, u64) {
    in_flight.partitions.iter().fold((0, 0), |(messages, bytes), partition| {
        (messages + partition.record_count as u64, bytes + partition.payload_bytes)
    })
}

/// The reader thread: one response per in-flight entry, in order.
fn read_acks(
    mut reader: ResponseReader,
    in_flight: Receiver<InFlight>,
    version: i16,
    stats: &Stats,
    recorder: &Mutex<Latencies>,
    retries: &Sender<Sealed>,
) {
    let counters = &stats.counters;
    while let Ok(entry) = in_flight.recv() {
        let response = match reader.receive::<ProduceRequest>(version, entry.correlation_id) {
            Ok(response) => response,
            Err(error) => {
                stats.error(format!("produce response: {error}"));
                // The stream is out of step after a failed read: count this and everything queued as failed and
                // stop, which makes the writer's next send fail and end the producer.
                add(&counters.failed_messages, totals(&entry).0);
                while let Ok(queued) = in_flight.try_recv() {
                    add(&counters.failed_messages, totals(&queued).0);
                }
                return;
            }
        };
        let ack_ns = now_ns();
        record_response(&response, entry, ack_ns, stats, recorder, retries);
    }
}

fn record_response(
    response: &ProduceResponse,
    entry: InFlight,
    ack_ns: u64,
    stats: &Stats,
    recorder: &Mutex<Latencies>,
    retries: &Sender<Sealed>,
) {
    let counters = &stats.counters;
    let mut latencies = match recorder.lock() {
        Ok(latencies) => latencies,
        Err(poisoned) => poisoned.into_inner(),
    };
    let mut send_time_index = 0usize;
    for sent in entry.partitions {
        let partition = sent.partition;
        let count = sent.record_count as usize;
        let error_code = response
            .responses
            .iter()
            .flat_map(|topic| topic.partition_responses.iter())
            .find(|answer| answer.index == partition)
            .map_or(-1, |answer| answer.error_code);
        let send_times = &entry.send_times_ns[send_time_index..send_time_index + count];
        send_time_index += count;
        match error_action(error_code, sent.attempts) {
            ErrorAction::Done => {
                for &send_ns in send_times {
                    record_us(&mut latencies.publish_latency, ack_ns.saturating_sub(send_ns));
                }
                add(&counters.acked_messages, count as u64);
                add(&counters.acked_bytes, sent.payload_bytes);
            }
            ErrorAction::RetryAfterRefresh => {
                add(&counters.retries, 1);
                let retry = Sealed {
                    partition,
                    attempts: sent.attempts + 1,
                    record_count: sent.record_count,
                    payload_bytes: sent.payload_bytes,
                    send_times_ns: send_times.to_vec(),
                    batch: sent.batch,
                };
                if retries.send(retry).is_err() {
                    // The writer has closed: nobody will send it again.
                    add(&counters.failed_messages, count as u64);
                }
            }
            ErrorAction::Fail => {
                add(&counters.failed_messages, count as u64);
                let retried = if sent.attempts > 0 {
                    format!(" after {} retries", sent.attempts)
                } else {
                    String::new()
                };
                stats.error(format!("produce to partition {partition}: error code {error_code}{retried}"));
            }
        }
    }
}
