//! One producer: a writer thread that makes messages, batches them per partition and sends Produce requests, and a
//! reader thread that takes the responses in order and records publish latency.
//!
//! The two share a bounded channel of in-flight requests. The writer pushes an entry before it writes each request,
//! so the channel's capacity plus the entry the reader holds is the number of requests in flight; when it is full,
//! the writer blocks — and, with a rate clock, the time it loses shows up as publish delay.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

use bytes::Bytes;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};

use crate::client::{topic_name, ClientError, Connection, ResponseReader, Versions};
use crate::clock::{now_ns, sleep_until_ns, tighten_timer_slack, RateClock};
use crate::run::WorkerContext;
use crate::stats::{add, record_us, Latencies, Stats};
use crate::workload::{partition_for_key, KeyDistribution, Payloads, Rng, Workload};
use sluice_storage::records::{BatchBuilder, RECORD_FRAMING_SIZE_MAX};

/// Bytes of the send timestamp at the start of each payload (nanoseconds, little-endian).
pub const TIMESTAMP_SIZE: usize = 8;

/// What the reader needs to account for one request when its response arrives.
struct InFlight {
    correlation_id: i32,
    /// (partition, message count, payload bytes) in request order; `send_times_ns` is in the same order.
    partitions: Vec<(i32, u32, u64)>,
    send_times_ns: Vec<u64>,
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
    let WorkerContext { workload, versions, stats, stop } = context;
    let writer = thread::Builder::new().name(format!("producer-{producer_index}")).spawn(move || {
        let mut producer =
            match Producer::connect(&workload, versions, topic, producer_index, &payloads, &stats) {
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

struct Producer<'a> {
    workload: &'a Workload,
    versions: Versions,
    topic: String,
    payloads: &'a Payloads,
    stats: &'a Stats,
    connection_writer: crate::client::RequestWriter,
    in_flight: Option<SyncSender<InFlight>>,
    reader: Option<JoinHandle<()>>,
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
        topic: String,
        producer_index: usize,
        payloads: &'a Payloads,
        stats: &'a Arc<Stats>,
    ) -> Result<Self, ClientError> {
        let connection = Connection::connect(&workload.bootstrap)?;
        let Connection { writer, reader } = connection;
        let partition_count = workload.partition_count as usize;
        let batch_capacity = workload.batch_size.min(256 << 10);
        let mut producer = Producer {
            workload,
            versions,
            topic,
            payloads,
            stats,
            connection_writer: writer,
            in_flight: None,
            reader: None,
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
        if workload.acks != 0 {
            // Capacity in_flight_max - 1: the reader holds one more entry while it waits for that response.
            let (sender, receiver) = sync_channel(workload.in_flight_max.saturating_sub(1));
            let stats = Arc::clone(stats);
            let recorder = Arc::clone(&producer.recorder);
            let version = versions.produce;
            let reader_thread = thread::Builder::new()
                .name(format!("producer-{producer_index}-acks"))
                .spawn(move || read_acks(reader, receiver, version, &stats, &recorder))
                .map_err(ClientError::Io)?;
            producer.in_flight = Some(sender);
            producer.reader = Some(reader_thread);
        }
        Ok(producer)
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
        let batch = self.seal(partition)?;
        self.send_request(vec![batch])?;
        self.recompute_oldest();
        Ok(())
    }

    /// Sends every open batch, as few requests as `request_size_max` allows.
    fn flush_all(&mut self) -> Result<(), ClientError> {
        let mut request = Vec::new();
        let mut request_size = 0;
        for partition in 0..self.builders.len() {
            if self.builders[partition].is_empty() {
                continue;
            }
            let sealed = self.seal(partition)?;
            if !request.is_empty() && request_size + sealed.batch.len() > self.workload.request_size_max {
                self.send_request(std::mem::take(&mut request))?;
                request_size = 0;
            }
            request_size += sealed.batch.len();
            request.push(sealed);
        }
        if !request.is_empty() {
            self.send_request(request)?;
        }
        self.oldest_open_ns = 0;
        self.report_delays();
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
            record_count,
            payload_bytes: std::mem::take(&mut self.batch_bytes[partition]),
            send_times_ns: std::mem::take(&mut self.send_times_ns[partition]),
            batch,
        })
    }

    fn send_request(&mut self, sealed: Vec<Sealed>) -> Result<(), ClientError> {
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
            partition_data.records = Some(batch.batch);
            topic_data.partition_data.push(partition_data);
            in_flight.partitions.push((batch.partition, batch.record_count, batch.payload_bytes));
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
        in_flight.correlation_id = self.connection_writer.next_correlation_id();
        if let Some(sender) = &self.in_flight {
            if sender.send(in_flight).is_err() {
                return Err(ClientError::Io(std::io::Error::other("the acknowledgement reader stopped")));
            }
            self.connection_writer.send_borrowing(&request, self.versions.produce, &borrowed)?;
        } else {
            // acks=0: no response will come; count the messages as acknowledged once written.
            let (messages, bytes) = totals(&in_flight);
            self.connection_writer.send_borrowing(&request, self.versions.produce, &borrowed)?;
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
        self.in_flight = None; // the reader drains what is in flight, then sees the channel close
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

struct Sealed {
    partition: i32,
    record_count: u32,
    payload_bytes: u64,
    send_times_ns: Vec<u64>,
    batch: Bytes,
}

fn totals(in_flight: &InFlight) -> (u64, u64) {
    in_flight
        .partitions
        .iter()
        .fold((0, 0), |(messages, bytes), &(_, count, size)| (messages + count as u64, bytes + size))
}

/// The reader thread: one response per in-flight entry, in order.
fn read_acks(
    mut reader: ResponseReader,
    in_flight: Receiver<InFlight>,
    version: i16,
    stats: &Stats,
    recorder: &Mutex<Latencies>,
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
        record_response(&response, &entry, ack_ns, stats, recorder);
    }
}

fn record_response(
    response: &ProduceResponse,
    entry: &InFlight,
    ack_ns: u64,
    stats: &Stats,
    recorder: &Mutex<Latencies>,
) {
    let counters = &stats.counters;
    let mut latencies = match recorder.lock() {
        Ok(latencies) => latencies,
        Err(poisoned) => poisoned.into_inner(),
    };
    let mut send_time_index = 0usize;
    for &(partition, count, bytes) in &entry.partitions {
        let error_code = response
            .responses
            .iter()
            .flat_map(|topic| topic.partition_responses.iter())
            .find(|answer| answer.index == partition)
            .map_or(-1, |answer| answer.error_code);
        let send_times = &entry.send_times_ns[send_time_index..send_time_index + count as usize];
        send_time_index += count as usize;
        if error_code == 0 {
            for &send_ns in send_times {
                record_us(&mut latencies.publish_latency, ack_ns.saturating_sub(send_ns));
            }
            add(&counters.acked_messages, count as u64);
            add(&counters.acked_bytes, bytes);
        } else {
            add(&counters.failed_messages, count as u64);
            stats.error(format!("produce to partition {partition}: error code {error_code}"));
        }
    }
}
