//! Producers that are not per topic (`--producers-total N`): N producer connections over all of the run's topics,
//! driven by a few threads (`--producer-threads`) rather than two threads per connection, so that a thousand
//! connections cost the load generator a thousand sockets and not two thousand threads on a two-core machine.
//!
//! Client `c` of N produces to a share of the topics (`client_topics`): topic `t` belongs to client `t mod N` when
//! there are at least as many topics as clients, else client `c` produces to topic `c mod topics` — the per-topic
//! producers' layout again. Within its topics a client takes each message's topic in turn (an application spreading
//! its events evenly) and its partition by the key distribution, as Kafka's partitioner does per topic: sticky
//! without keys, murmur2 with them. A client keeps one batch per partition open and sends all of them in one request
//! when its oldest has lingered `linger` (so a batch may leave before its own linger is up, never after), or one
//! batch alone when it is full.
//!
//! Each thread owns a contiguous range of clients and their share of the rate (`thread_rate`), one open-loop rate
//! clock for them all, and hands its due messages to its clients in turn. Requests are written with blocking writes;
//! acknowledgements are read as epoll reports the sockets readable (`recv` with MSG_DONTWAIT on the same blocking
//! socket), and the thread sleeps in `epoll_wait` with a timerfd armed for its next send or linger deadline, so an
//! acknowledgement is timed when it arrives, not when the thread next wakes to send. A client with `in_flight_max`
//! requests unanswered blocks its thread until one is answered (`HELD_SIZE_MAX`) — the time lost shows up as
//! publish delay.
//!
//! Limits: a single broker only (the run refuses `--producers-total` against a cluster), and a batch answered with an
//! error is counted as failed, not sent again.

use std::collections::VecDeque;
use std::io;
use std::net::TcpStream;
use std::ops::Range;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use bytes::Bytes;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};

use crate::client::{decode_response, frame_size, topic_name, ClientError, Connection, RequestWriter};
use crate::clock::{now_ns, RateClock};
use crate::producer::{ProducerHandle, TIMESTAMP_SIZE};
use crate::run::WorkerContext;
use crate::stats::{add, record_us, Latencies, Stats};
use crate::workload::{partition_for_key, KeyDistribution, Payloads, Rng, Workload};
use sluice_storage::records::{BatchBuilder, RECORD_FRAMING_SIZE_MAX};

/// Initial room of a client's open batch: a few 1 KiB messages. A batch grows as needed up to `batch_size`; a
/// thousand clients with a few open batches each must not reserve `batch_size` apiece.
const BATCH_CAPACITY_INITIAL: usize = 16 << 10;
/// The longest a thread sleeps in `epoll_wait` before it looks at the stop flag again.
const WAIT_MS_MAX: i32 = 100;
/// Events taken from epoll per wait.
const EVENT_COUNT_MAX: usize = 256;
/// The timerfd's epoll token; clients are tokens 0..clients.
const TIMER_TOKEN: u64 = u64::MAX;
/// Bytes one socket read may take: many produce responses, each about a hundred bytes.
const RECEIVE_CHUNK_SIZE: usize = 64 << 10;
/// `Client::slot_of` for a partition without an open batch.
const NO_SLOT: u32 = u32::MAX;
/// Bytes of sealed batches one connection may hold unsent while its requests in flight are at `in_flight_max`
/// before its thread waits for that connection's answers. None: holding them instead (Kafka's accumulator, where a
/// connection at its bound does not stop the others) kept the pool's threads awake for every answer and cost the
/// load generator twice the CPU at (g) and five times at (f) on this two-core machine, taken from the broker; a
/// connection at its bound makes its thread wait, and the time lost shows as publish delay.
const HELD_SIZE_MAX: usize = 0;

/// How many of the first `held` batches go into one request: at most `request_size_max` bytes (but at least one
/// batch), and no partition twice — a Produce request names each partition once.
fn request_prefix(held: &[(SentBatch, Bytes)], request_size_max: usize) -> usize {
    let mut size = 0;
    let mut named = std::collections::HashSet::with_capacity(held.len().min(4096));
    for (count, (sent, batch)) in held.iter().enumerate() {
        let repeated = !named.insert((sent.topic, sent.partition));
        if count > 0 && (size + batch.len() > request_size_max || repeated) {
            return count;
        }
        size += batch.len();
    }
    held.len()
}

/// The topics (indexes into the run's topic list) client `client_index` of `client_count` produces to.
pub fn client_topics(topic_count: usize, client_count: usize, client_index: usize) -> Vec<usize> {
    assert!(topic_count > 0 && client_count > 0 && client_index < client_count);
    if topic_count >= client_count {
        (client_index..topic_count).step_by(client_count).collect()
    } else {
        vec![client_index % topic_count]
    }
}

/// The clients thread `thread_index` of `thread_count` drives: contiguous ranges whose sizes differ by at most one.
pub fn thread_clients(client_count: usize, thread_count: usize, thread_index: usize) -> Range<usize> {
    assert!(thread_count > 0 && thread_index < thread_count);
    let start = client_count * thread_index / thread_count;
    let end = client_count * (thread_index + 1) / thread_count;
    start..end
}

/// A thread's share of the run's rate: the rate times its share of the clients, so that every client is offered
/// the same rate whichever thread drives it (0 = as fast as possible stays 0).
pub fn thread_rate(rate_per_s: f64, client_count: usize, thread_client_count: usize) -> f64 {
    rate_per_s * thread_client_count as f64 / client_count as f64
}

/// Starts the run's `client_count` pooled producers on `thread_count` threads (at most one per client).
pub fn start(
    context: &WorkerContext,
    client_count: usize,
    thread_count: usize,
    start_ns: u64,
    payloads: &Arc<Payloads>,
) -> Vec<ProducerHandle> {
    let thread_count = thread_count.clamp(1, client_count);
    (0..thread_count)
        .map(|thread_index| {
            let context = context.clone();
            let payloads = Arc::clone(payloads);
            let clients = thread_clients(client_count, thread_count, thread_index);
            let rate = thread_rate(context.workload.rate_per_s, client_count, clients.len());
            let spawned = thread::Builder::new().name(format!("pool-{thread_index}")).spawn(move || {
                let stats = Arc::clone(&context.stats);
                if let Err(error) = run_thread(&context, clients, client_count, rate, start_ns, &payloads) {
                    stats.error(format!("producer pool thread {thread_index}: {error}"));
                }
            });
            match spawned {
                Ok(writer) => ProducerHandle { writer },
                // Thread creation fails only when the process is out of resources; nothing sensible can continue.
                Err(error) => panic!("cannot start a producer pool thread: {error}"),
            }
        })
        .collect()
}

/// One batch being filled.
struct OpenBatch {
    topic: usize,
    /// Index of `topic` among its client's topics.
    topic_local: usize,
    partition: i32,
    builder: BatchBuilder,
    send_times_ns: Vec<u64>,
    payload_bytes: u64,
}

/// One batch of a request in flight.
struct SentBatch {
    topic: usize,
    partition: i32,
    record_count: u32,
    payload_bytes: u64,
    send_times_ns: Vec<u64>,
}

struct InFlight {
    correlation_id: i32,
    batches: Vec<SentBatch>,
}

/// One producer connection and its batching state.
struct Client {
    /// Index among all the run's pooled clients (names it in errors).
    index: usize,
    /// Index among its thread's clients: its epoll token and its place in the linger queue.
    local: usize,
    /// Indexes into the run's topics.
    topics: Vec<usize>,
    topic_cursor: usize,
    /// Sticky partition of each of `topics` (keys none).
    sticky: Vec<i32>,
    writer: RequestWriter,
    socket: TcpStream,
    read_buffer: Vec<u8>,
    in_flight: VecDeque<InFlight>,
    /// Sealed batches waiting for room in flight, oldest first, and their bytes.
    held: VecDeque<(SentBatch, Bytes)>,
    held_size: usize,
    open: Vec<OpenBatch>,
    /// Where each (own topic, partition)'s open batch is in `open` (`NO_SLOT` = none): a connection of (f) has
    /// 2,500 partitions, and a batch is looked up for every message.
    slot_of: Vec<u32>,
    /// When the first of the open batches was opened; 0 = none open.
    oldest_open_ns: u64,
    rng: Rng,
    message_index: u64,
    dead: bool,
}

impl Client {
    fn slot_key(&self, topic_local: usize, partition: i32) -> usize {
        topic_local * (self.slot_of.len() / self.topics.len()) + partition as usize
    }

    fn push_open(&mut self, batch: OpenBatch) -> usize {
        let key = self.slot_key(batch.topic_local, batch.partition);
        assert_eq!(self.slot_of[key], NO_SLOT, "one open batch per partition");
        self.slot_of[key] = self.open.len() as u32;
        self.open.push(batch);
        self.open.len() - 1
    }

    /// Removes open batch `slot`; the last one takes its place.
    fn take_open(&mut self, slot: usize) -> OpenBatch {
        let batch = self.open.swap_remove(slot);
        let key = self.slot_key(batch.topic_local, batch.partition);
        self.slot_of[key] = NO_SLOT;
        if let Some(moved) = self.open.get(slot) {
            let moved_key = self.slot_key(moved.topic_local, moved.partition);
            self.slot_of[moved_key] = slot as u32;
        }
        batch
    }
}

/// What a pool thread shares among its clients.
struct Pool<'a> {
    workload: &'a Workload,
    produce_version: i16,
    stats: &'a Stats,
    payloads: &'a Payloads,
    recorder: Arc<Mutex<Latencies>>,
    /// Builders of sealed batches, kept for the next batch to open.
    spare: Vec<BatchBuilder>,
    /// (deadline, client, opened at): when a client's open batches linger out, in time order.
    lingers: VecDeque<(u64, usize, u64)>,
    pending_delays_ns: Vec<u64>,
    /// The buffer every socket read of this thread goes through.
    chunk: Vec<u8>,
}

fn connect_clients(
    context: &WorkerContext,
    clients: Range<usize>,
    client_count: usize,
) -> Result<Vec<Client>, ClientError> {
    let workload = &context.workload;
    let table = context.metadata.table();
    let mut connected = Vec::with_capacity(clients.len());
    for (local, index) in clients.enumerate() {
        let topics = client_topics(workload.topics.len(), client_count, index);
        let leader = table.leader(&workload.topics[topics[0]], 0);
        let address = table.address(leader).map(str::to_owned).ok_or_else(|| ClientError::Broker {
            what: format!("{}/0 has no leader", workload.topics[topics[0]]),
            error_code: crate::cluster::error_code::LEADER_NOT_AVAILABLE,
        })?;
        let (writer, socket) = Connection::connect(&address)?.into_writer_and_socket();
        let sticky = (0..topics.len()).map(|_| (index % workload.partition_count as usize) as i32).collect();
        let topic_count = topics.len();
        connected.push(Client {
            index,
            local,
            topics,
            topic_cursor: 0,
            sticky,
            writer,
            socket,
            read_buffer: Vec::new(),
            in_flight: VecDeque::new(),
            held: VecDeque::new(),
            held_size: 0,
            open: Vec::new(),
            slot_of: vec![NO_SLOT; topic_count * workload.partition_count as usize],
            oldest_open_ns: 0,
            rng: Rng::new(0x9001 ^ index as u64),
            message_index: index as u64 * 7,
            dead: false,
        });
    }
    Ok(connected)
}

fn run_thread(
    context: &WorkerContext,
    clients: Range<usize>,
    client_count: usize,
    rate_per_s: f64,
    start_ns: u64,
    payloads: &Payloads,
) -> Result<(), ClientError> {
    let mut clients = connect_clients(context, clients, client_count)?;
    let waiter = Waiter::new(&clients)?;
    let mut pool = Pool {
        workload: &context.workload,
        produce_version: context.versions.produce,
        stats: &context.stats,
        payloads,
        recorder: context.stats.recorder(),
        spare: Vec::new(),
        lingers: VecDeque::new(),
        pending_delays_ns: Vec::new(),
        chunk: vec![0; RECEIVE_CHUNK_SIZE],
    };
    let result = pool.drive(&mut clients, &waiter, rate_per_s, start_ns, &context.stop);
    pool.finish(&mut clients);
    result
}

impl Pool<'_> {
    fn drive(
        &mut self,
        clients: &mut [Client],
        waiter: &Waiter,
        rate_per_s: f64,
        start_ns: u64,
        stop: &AtomicBool,
    ) -> Result<(), ClientError> {
        let linger_ns = self.workload.linger.as_nanos() as u64;
        let mut clock = (rate_per_s > 0.0).then(|| RateClock::new(start_ns, rate_per_s));
        let mut cursor = 0usize;
        while !stop.load(Ordering::Relaxed) {
            let now = now_ns();
            match &mut clock {
                Some(clock) => {
                    while clock.peek_ns() <= now {
                        let intended_ns = clock.next_intended_ns();
                        let send_ns = now_ns();
                        self.pending_delays_ns.push(send_ns.saturating_sub(intended_ns));
                        self.send_message(clients, cursor, send_ns, linger_ns);
                        cursor = (cursor + 1) % clients.len();
                    }
                }
                None => {
                    for _ in 0..64 {
                        self.send_message(clients, cursor, now_ns(), linger_ns);
                        cursor = (cursor + 1) % clients.len();
                    }
                }
            }
            let now = now_ns();
            while let Some(&(deadline_ns, client, opened_ns)) = self.lingers.front() {
                if deadline_ns > now {
                    break;
                }
                self.lingers.pop_front();
                if clients[client].oldest_open_ns == opened_ns {
                    self.flush_all(&mut clients[client]);
                }
            }
            self.report_delays();
            if clients.iter().all(|client| client.dead) {
                return Err(ClientError::Io(io::Error::other("every connection of this thread failed")));
            }
            let next_ns = match (&clock, self.lingers.front()) {
                (None, _) => now,
                (Some(clock), linger) => {
                    linger.map_or(clock.peek_ns(), |&(deadline, ..)| deadline.min(clock.peek_ns()))
                }
            };
            for client in waiter.wait_until(next_ns)? {
                self.read_ready(&mut clients[client]);
            }
        }
        Ok(())
    }

    /// Appends the next message of `clients[index]` to its batch, sending the batch alone first if it is full.
    fn send_message(&mut self, clients: &mut [Client], index: usize, send_ns: u64, linger_ns: u64) {
        let workload = self.workload;
        let payloads = self.payloads;
        let client = &mut clients[index];
        if client.dead {
            add(&self.stats.counters.failed_messages, 1);
            return;
        }
        let topic_local = client.topic_cursor;
        client.topic_cursor = (client.topic_cursor + 1) % client.topics.len();
        let key = match workload.key_distribution {
            KeyDistribution::None => None,
            KeyDistribution::RoundRobin => Some(payloads.key(client.message_index as usize)),
            KeyDistribution::Random => Some(payloads.key(client.rng.below(payloads.key_count()))),
        };
        let partition = match key {
            Some(key) => partition_for_key(key, workload.partition_count),
            None => client.sticky[topic_local],
        };
        let value = payloads.value(client.message_index);
        client.message_index += 1;
        let slot = self.open_slot(client, topic_local, partition);
        let record_size_max = value.len() + key.map_or(0, <[u8]>::len) + RECORD_FRAMING_SIZE_MAX;
        let open = &client.open[slot];
        let slot = if !open.builder.is_empty() && open.builder.size() + record_size_max > workload.batch_size
        {
            let sealed = self.seal(client, slot);
            self.send_request(client, vec![sealed]);
            if client.open.is_empty() {
                client.oldest_open_ns = 0;
            }
            self.open_slot(client, topic_local, partition)
        } else {
            slot
        };
        self.append(client, slot, key, value, send_ns, linger_ns);
    }

    /// The open batch of `client`'s topic `topic_local`, `partition`: its slot, opened if there is none.
    fn open_slot(&mut self, client: &mut Client, topic_local: usize, partition: i32) -> usize {
        let key = client.slot_key(topic_local, partition);
        if client.slot_of[key] != NO_SLOT {
            return client.slot_of[key] as usize;
        }
        let builder = self
            .spare
            .pop()
            .unwrap_or_else(|| BatchBuilder::new(self.workload.compression, BATCH_CAPACITY_INITIAL));
        client.push_open(OpenBatch {
            topic: client.topics[topic_local],
            topic_local,
            partition,
            builder,
            send_times_ns: Vec::new(),
            payload_bytes: 0,
        })
    }

    fn append(
        &mut self,
        client: &mut Client,
        slot: usize,
        key: Option<&[u8]>,
        value: &[u8],
        send_ns: u64,
        linger_ns: u64,
    ) {
        let timestamp = send_ns.to_le_bytes();
        let (prefix, rest) = if value.len() >= TIMESTAMP_SIZE {
            (&timestamp[..], &value[TIMESTAMP_SIZE..])
        } else {
            (&[][..], value)
        };
        let open = &mut client.open[slot];
        open.builder.append((send_ns / 1_000_000) as i64, key, Some(&[prefix, rest]));
        open.send_times_ns.push(send_ns);
        open.payload_bytes += value.len() as u64;
        if client.oldest_open_ns == 0 {
            client.oldest_open_ns = send_ns;
            self.lingers.push_back((send_ns + linger_ns, client.local, send_ns));
        }
    }

    /// Seals open batch `slot` of `client`, moving its topic's sticky partition on.
    fn seal(&mut self, client: &mut Client, slot: usize) -> (SentBatch, Bytes) {
        let mut open = client.take_open(slot);
        let record_count = open.builder.record_count();
        let batch = match open.builder.finish(BATCH_CAPACITY_INITIAL) {
            Ok(batch) => Some(batch),
            Err(error) => {
                self.stats.error(format!("record batch: {error}"));
                None
            }
        };
        self.spare.push(open.builder);
        if self.workload.key_distribution == KeyDistribution::None {
            let local = open.topic_local;
            if client.sticky[local] == open.partition {
                client.sticky[local] = (open.partition + 1) % self.workload.partition_count;
            }
        }
        let sent = SentBatch {
            topic: open.topic,
            partition: open.partition,
            record_count,
            payload_bytes: open.payload_bytes,
            send_times_ns: open.send_times_ns,
        };
        (sent, batch.unwrap_or_default())
    }

    /// Sends every open batch of `client` (or holds them while its requests in flight are at the bound).
    fn flush_all(&mut self, client: &mut Client) {
        client.oldest_open_ns = 0;
        let mut sealed = Vec::with_capacity(client.open.len());
        while !client.open.is_empty() {
            sealed.push(self.seal(client, client.open.len() - 1));
        }
        if !sealed.is_empty() {
            self.send_request(client, sealed);
        }
    }

    /// Sends sealed batches behind any `client` still holds, in requests as `request_prefix` cuts them, waiting for
    /// answers while the connection has `in_flight_max` requests unanswered (see `HELD_SIZE_MAX`).
    fn send_request(&mut self, client: &mut Client, batches: Vec<(SentBatch, Bytes)>) {
        if client.dead {
            let record_count: u64 = batches.iter().map(|(sent, _)| sent.record_count as u64).sum();
            add(&self.stats.counters.failed_messages, record_count);
            return;
        }
        client.held_size += batches.iter().map(|(_, batch)| batch.len()).sum::<usize>();
        client.held.extend(batches);
        while client.held_size > HELD_SIZE_MAX && !client.dead {
            if client.in_flight.len() >= self.workload.in_flight_max {
                self.read_blocking(client);
            }
            self.send_held(client);
        }
        self.send_held(client);
    }

    /// Sends `client`'s held batches, oldest first, while it has room in flight: each request at most
    /// `request_size_max` bytes of batches (at least one) and each partition at most once.
    fn send_held(&mut self, client: &mut Client) {
        while !client.held.is_empty() && client.in_flight.len() < self.workload.in_flight_max && !client.dead
        {
            let count = request_prefix(client.held.make_contiguous(), self.workload.request_size_max);
            let batches: Vec<(SentBatch, Bytes)> = client.held.drain(..count).collect();
            client.held_size -= batches.iter().map(|(_, batch)| batch.len()).sum::<usize>();
            self.write_request(client, batches);
        }
    }

    fn write_request(&mut self, client: &mut Client, batches: Vec<(SentBatch, Bytes)>) {
        let counters = &self.stats.counters;
        let record_count: u64 = batches.iter().map(|(sent, _)| sent.record_count as u64).sum();
        let request = self.produce_request(&batches);
        let borrowed: Vec<Bytes> = batches.iter().map(|(_, batch)| batch.clone()).collect();
        let correlation_id = client.writer.next_correlation_id();
        add(&counters.sent_messages, record_count);
        add(&counters.sent_bytes, batches.iter().map(|(sent, _)| sent.payload_bytes).sum());
        add(&counters.produce_requests, 1);
        if let Err(error) = client.writer.send_borrowing(&request, self.produce_version, &borrowed) {
            self.stats.error(format!("pooled producer {}: send: {error}", client.index));
            add(&counters.failed_messages, record_count);
            self.kill(client);
            return;
        }
        let batches: Vec<SentBatch> = batches.into_iter().map(|(sent, _)| sent).collect();
        if self.workload.acks == 0 {
            add(&counters.acked_messages, record_count);
            add(&counters.acked_bytes, batches.iter().map(|sent| sent.payload_bytes).sum());
        } else {
            client.in_flight.push_back(InFlight { correlation_id, batches });
        }
    }

    fn produce_request(&self, batches: &[(SentBatch, Bytes)]) -> ProduceRequest {
        let mut topic_data: Vec<TopicProduceData> = Vec::new();
        let mut topic_of: Vec<usize> = Vec::new();
        for (sent, batch) in batches {
            let slot = match topic_of.iter().position(|&topic| topic == sent.topic) {
                Some(slot) => slot,
                None => {
                    let mut data = TopicProduceData::default();
                    data.name = topic_name(&self.workload.topics[sent.topic]);
                    topic_data.push(data);
                    topic_of.push(sent.topic);
                    topic_data.len() - 1
                }
            };
            let mut partition_data = PartitionProduceData::default();
            partition_data.index = sent.partition;
            partition_data.records = Some(batch.clone());
            topic_data[slot].partition_data.push(partition_data);
        }
        let mut request = ProduceRequest::default();
        request.acks = self.workload.acks;
        request.timeout_ms = self.workload.request_timeout_ms;
        request.topic_data = topic_data;
        request
    }

    /// Reads what `client`'s socket holds without blocking and accounts every complete response.
    fn read_ready(&mut self, client: &mut Client) {
        if client.dead {
            return;
        }
        match receive_available(client.socket.as_raw_fd(), &mut client.read_buffer, &mut self.chunk) {
            Ok(true) => {
                self.take_responses(client);
                self.send_held(client);
            }
            Ok(false) => {
                self.take_responses(client);
                self.stats
                    .error(format!("pooled producer {}: the broker closed the connection", client.index));
                self.kill(client);
            }
            Err(error) => {
                self.stats.error(format!("pooled producer {}: receive: {error}", client.index));
                self.kill(client);
            }
        }
    }

    /// Blocks until `client` has at least one more response (bounded by the socket's read timeout).
    fn read_blocking(&mut self, client: &mut Client) {
        let answered = client.in_flight.len();
        while client.in_flight.len() == answered && !client.dead {
            match receive_blocking(&mut client.socket, &mut client.read_buffer) {
                Ok(()) => self.take_responses(client),
                Err(error) => {
                    self.stats.error(format!("pooled producer {}: receive: {error}", client.index));
                    self.kill(client);
                }
            }
        }
    }

    fn take_responses(&mut self, client: &mut Client) {
        let mut consumed = 0;
        let ack_ns = now_ns();
        let recorder = Arc::clone(&self.recorder);
        let mut latencies = recorder.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        loop {
            let buffer = &client.read_buffer[consumed..];
            let size = match frame_size(buffer) {
                Ok(Some(size)) if buffer.len() >= 4 + size => size,
                Ok(_) => break,
                Err(error) => {
                    self.stats.error(format!("pooled producer {}: {error}", client.index));
                    drop(latencies);
                    return self.kill(client);
                }
            };
            let frame = Bytes::copy_from_slice(&buffer[4..4 + size]);
            consumed += 4 + size;
            let Some(entry) = client.in_flight.pop_front() else {
                self.stats.error(format!("pooled producer {}: a response nothing asked for", client.index));
                drop(latencies);
                return self.kill(client);
            };
            match decode_response::<ProduceRequest>(frame, self.produce_version, entry.correlation_id) {
                Ok(response) => self.record_response(&response, entry, ack_ns, &mut latencies),
                Err(error) => {
                    self.stats.error(format!("pooled producer {}: produce response: {error}", client.index));
                    client.in_flight.push_front(entry);
                    drop(latencies);
                    return self.kill(client);
                }
            }
        }
        client.read_buffer.drain(..consumed);
    }

    fn record_response(
        &self,
        response: &ProduceResponse,
        entry: InFlight,
        ack_ns: u64,
        latencies: &mut Latencies,
    ) {
        let counters = &self.stats.counters;
        for sent in entry.batches {
            let topic = &self.workload.topics[sent.topic];
            let error_code = response
                .responses
                .iter()
                .filter(|answer| answer.name.0.as_str() == topic.as_str())
                .flat_map(|answer| answer.partition_responses.iter())
                .find(|answer| answer.index == sent.partition)
                .map_or(-1, |answer| answer.error_code);
            if error_code == 0 {
                for &send_ns in &sent.send_times_ns {
                    record_us(&mut latencies.publish_latency, ack_ns.saturating_sub(send_ns));
                }
                add(&counters.acked_messages, sent.record_count as u64);
                add(&counters.acked_bytes, sent.payload_bytes);
            } else {
                add(&counters.failed_messages, sent.record_count as u64);
                self.stats.error(format!("produce to {topic}/{}: error code {error_code}", sent.partition));
            }
        }
    }

    /// Marks `client` dead: what it had in flight and open is counted as failed, and its later messages too.
    fn kill(&mut self, client: &mut Client) {
        client.dead = true;
        let counters = &self.stats.counters;
        for entry in client.in_flight.drain(..) {
            add(&counters.failed_messages, entry.batches.iter().map(|sent| sent.record_count as u64).sum());
        }
        for open in client.open.drain(..) {
            add(&counters.failed_messages, open.builder.record_count() as u64);
        }
        client.slot_of.fill(NO_SLOT);
        for (sent, _) in client.held.drain(..) {
            add(&counters.failed_messages, sent.record_count as u64);
        }
        client.held_size = 0;
        client.oldest_open_ns = 0;
    }

    fn report_delays(&mut self) {
        if self.pending_delays_ns.is_empty() {
            return;
        }
        let mut latencies = self.recorder.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for &delay in &self.pending_delays_ns {
            record_us(&mut latencies.publish_delay, delay);
        }
        self.pending_delays_ns.clear();
    }

    /// Sends what is open and waits for every answer (each read bounded by the socket's timeout).
    fn finish(&mut self, clients: &mut [Client]) {
        self.report_delays();
        for client in clients.iter_mut() {
            self.flush_all(client);
        }
        for client in clients.iter_mut() {
            while (!client.in_flight.is_empty() || !client.held.is_empty()) && !client.dead {
                if client.in_flight.len() >= self.workload.in_flight_max || client.held.is_empty() {
                    self.read_blocking(client);
                }
                self.send_held(client);
            }
        }
    }
}

/// Reads what the socket holds now (MSG_DONTWAIT) through `chunk`; false when the peer has closed it. A read that
/// does not fill `chunk` has taken everything there was, so it ends without a second call to learn EAGAIN (epoll,
/// level-triggered, reports the socket again if more has come).
fn receive_available(fd: RawFd, buffer: &mut Vec<u8>, chunk: &mut [u8]) -> io::Result<bool> {
    loop {
        // SAFETY: `chunk` is a live, writable buffer of the length passed; `fd` is an open socket the caller owns.
        let received = unsafe { libc::recv(fd, chunk.as_mut_ptr().cast(), chunk.len(), libc::MSG_DONTWAIT) };
        if received > 0 {
            buffer.extend_from_slice(&chunk[..received as usize]);
            if (received as usize) < chunk.len() {
                return Ok(true);
            }
            continue;
        }
        if received == 0 {
            return Ok(false);
        }
        let error = io::Error::last_os_error();
        return match error.kind() {
            io::ErrorKind::WouldBlock => Ok(true),
            io::ErrorKind::Interrupted => continue,
            _ => Err(error),
        };
    }
}

/// One blocking read (the socket's read timeout bounds it).
fn receive_blocking(socket: &mut TcpStream, buffer: &mut Vec<u8>) -> io::Result<()> {
    use std::io::Read;
    let mut chunk = [0u8; 16 << 10];
    let received = socket.read(&mut chunk)?;
    if received == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the broker closed the connection"));
    }
    buffer.extend_from_slice(&chunk[..received]);
    Ok(())
}

/// An epoll set of a thread's client sockets plus a timerfd for its next deadline.
struct Waiter {
    epoll: OwnedFd,
    timer: OwnedFd,
    /// The deadline the timer is armed for (`now_ns` scale; 0 = none): the same deadline is not armed twice.
    armed_ns: std::cell::Cell<u64>,
}

impl Waiter {
    fn new(clients: &[Client]) -> io::Result<Self> {
        // SAFETY: epoll_create1 and timerfd_create take flags only; a non-negative result is a new descriptor we own.
        let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epoll < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `epoll` was just returned by epoll_create1 and nothing else owns it.
        let epoll = unsafe { OwnedFd::from_raw_fd(epoll) };
        // SAFETY: as above, for timerfd_create.
        let timer =
            unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_CLOEXEC | libc::TFD_NONBLOCK) };
        if timer < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `timer` was just returned by timerfd_create and nothing else owns it.
        let timer = unsafe { OwnedFd::from_raw_fd(timer) };
        let waiter = Waiter { epoll, timer, armed_ns: std::cell::Cell::new(0) };
        waiter.add(waiter.timer.as_raw_fd(), TIMER_TOKEN)?;
        for (position, client) in clients.iter().enumerate() {
            waiter.add(client.socket.as_raw_fd(), position as u64)?;
        }
        Ok(waiter)
    }

    fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut event = libc::epoll_event { events: libc::EPOLLIN as u32, u64: token };
        // SAFETY: both descriptors are open; `event` is a valid epoll_event for the call's duration.
        let result = unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event) };
        if result < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits until `deadline_ns` (`now_ns`'s scale), a readable socket, or `WAIT_MS_MAX`; returns the readable
    /// clients' positions. A deadline already past only polls.
    fn wait_until(&self, deadline_ns: u64) -> io::Result<Vec<usize>> {
        let now = now_ns();
        let timeout_ms = if deadline_ns <= now {
            0
        } else if deadline_ns == self.armed_ns.get() {
            WAIT_MS_MAX
        } else {
            self.armed_ns.set(deadline_ns);
            let wait_ns = deadline_ns - now;
            let spec = libc::itimerspec {
                it_interval: libc::timespec { tv_sec: 0, tv_nsec: 0 },
                it_value: libc::timespec {
                    tv_sec: (wait_ns / 1_000_000_000) as libc::time_t,
                    tv_nsec: (wait_ns % 1_000_000_000) as libc::c_long,
                },
            };
            // SAFETY: the timer descriptor is open; `spec` is valid and the old value is not asked for.
            if unsafe { libc::timerfd_settime(self.timer.as_raw_fd(), 0, &spec, std::ptr::null_mut()) } < 0 {
                return Err(io::Error::last_os_error());
            }
            WAIT_MS_MAX
        };
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; EVENT_COUNT_MAX];
        // SAFETY: `events` has room for the count passed; the epoll descriptor is open.
        let count = unsafe {
            libc::epoll_wait(self.epoll.as_raw_fd(), events.as_mut_ptr(), EVENT_COUNT_MAX as i32, timeout_ms)
        };
        if count < 0 {
            let error = io::Error::last_os_error();
            return if error.kind() == io::ErrorKind::Interrupted { Ok(Vec::new()) } else { Err(error) };
        }
        let mut ready = Vec::with_capacity(count as usize);
        for event in &events[..count as usize] {
            let token = event.u64;
            if token == TIMER_TOKEN {
                let mut expirations = [0u8; 8];
                // SAFETY: reads 8 bytes into a buffer of 8; the timer is non-blocking, so at worst EAGAIN.
                unsafe { libc::read(self.timer.as_raw_fd(), expirations.as_mut_ptr().cast(), 8) };
            } else {
                ready.push(token as usize);
            }
        }
        Ok(ready)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_are_dealt_to_clients() {
        // Proves every topic goes to exactly one client when topics outnumber clients, and that with fewer topics
        // than clients every client has one topic and every topic gets clients.
        let dealt: Vec<Vec<usize>> = (0..4).map(|client| client_topics(10, 4, client)).collect();
        assert_eq!(dealt[0], vec![0, 4, 8]);
        assert_eq!(dealt[3], vec![3, 7]);
        let mut all: Vec<usize> = dealt.concat();
        all.sort_unstable();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
        assert_eq!(client_topics(1, 1000, 999), vec![0]);
        assert_eq!(client_topics(3, 7, 5), vec![2]);
        assert_eq!(client_topics(1000, 4, 1).len(), 250);
    }

    #[test]
    fn clients_are_split_evenly_over_threads() {
        // Proves the ranges cover every client once, in order, and differ in size by at most one.
        for (client_count, thread_count) in [(1000, 4), (7, 3), (4, 4), (5, 1)] {
            let ranges: Vec<Range<usize>> =
                (0..thread_count).map(|thread| thread_clients(client_count, thread_count, thread)).collect();
            assert_eq!(ranges.first().unwrap().start, 0);
            assert_eq!(ranges.last().unwrap().end, client_count);
            for pair in ranges.windows(2) {
                assert_eq!(pair[0].end, pair[1].start);
            }
            let sizes: Vec<usize> = ranges.iter().map(ExactSizeIterator::len).collect();
            assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1, "{sizes:?}");
        }
    }

    #[test]
    fn rate_is_shared_by_clients_not_threads() {
        // Proves a thread with more clients gets proportionally more of the rate, and the shares add up.
        let (client_count, thread_count, rate) = (7, 3, 70_000.0);
        let shares: Vec<f64> = (0..thread_count)
            .map(|thread| {
                thread_rate(rate, client_count, thread_clients(client_count, thread_count, thread).len())
            })
            .collect();
        assert_eq!(shares, vec![20_000.0, 20_000.0, 30_000.0]);
        assert!((shares.iter().sum::<f64>() - rate).abs() < 1e-6);
        assert_eq!(thread_rate(0.0, 4, 2), 0.0);
    }

    #[test]
    fn held_batches_leave_in_requests_of_bounded_size_naming_each_partition_once() {
        // Proves the size bound (with at least one batch even when it alone is over), and that a second batch of a
        // partition waits for the next request.
        let batch = |topic: usize, partition: i32, size: usize| {
            let sent =
                SentBatch { topic, partition, record_count: 1, payload_bytes: 1, send_times_ns: vec![0] };
            (sent, Bytes::from(vec![0u8; size]))
        };
        let held =
            vec![batch(0, 0, 100), batch(0, 1, 100), batch(1, 0, 100), batch(0, 0, 100), batch(0, 2, 100)];
        assert_eq!(request_prefix(&held, 1000), 3, "topic 0 partition 0 is already in the request");
        assert_eq!(request_prefix(&held, 250), 2);
        assert_eq!(request_prefix(&held[3..], 1000), 2);
        assert_eq!(request_prefix(&[batch(0, 0, 5000), batch(0, 1, 10)], 1000), 1);
        assert_eq!(request_prefix(&[], 1000), 0);
    }

    #[test]
    fn nonblocking_receive_returns_what_is_there_and_sees_the_close() {
        // Proves MSG_DONTWAIT reads on a blocking socket: bytes sent arrive, an empty socket does not block, and a
        // closed peer reads as false.
        use std::io::Write;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let mut buffer = Vec::new();
        let mut chunk = vec![0u8; 4];
        assert!(receive_available(server.as_raw_fd(), &mut buffer, &mut chunk).unwrap());
        assert!(buffer.is_empty());
        client.write_all(b"hello, world").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(receive_available(server.as_raw_fd(), &mut buffer, &mut chunk).unwrap());
        assert_eq!(buffer, b"hello, world", "reads of a full chunk go on until the socket is empty");
        drop(client);
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!receive_available(server.as_raw_fd(), &mut buffer, &mut chunk).unwrap());
    }
}
