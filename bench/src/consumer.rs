//! One consumer: a thread that owns a fixed set of partitions (no consumer group yet), finds their start offsets with
//! ListOffsets, and long-polls them with Fetch, one request in flight, as Kafka consumers do per broker, each sent before the
//! previous response's records are parsed. Every record
//! whose payload starts with a send timestamp yields an end-to-end latency.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse};

use crate::batch::{next_offset_after, read_batches};
use crate::client::{
    list_offsets, topic_name, ClientError, Connection, Versions, OFFSET_EARLIEST, OFFSET_LATEST,
};
use crate::clock::now_ns;
use crate::producer::TIMESTAMP_SIZE;
use crate::run::WorkerContext;
use crate::stats::{add, record_us, Stats};
use crate::workload::{StartOffset, Workload};

const OFFSET_OUT_OF_RANGE: i16 = 1;

/// Starts a consumer of `partitions` of `topic`; `ready` is set once its start offsets are known, so that the run
/// can start producers only after every consumer is positioned (OMB's order).
pub fn start(
    context: WorkerContext,
    topic: String,
    consumer_index: usize,
    partitions: Vec<i32>,
    ready: Arc<std::sync::atomic::AtomicUsize>,
) -> JoinHandle<()> {
    let WorkerContext { workload, versions, stats, stop } = context;
    let spawned = thread::Builder::new().name(format!("consumer-{consumer_index}")).spawn(move || {
        if let Err(error) = run(&workload, versions, &topic, &partitions, &stats, &stop, &ready) {
            stats.error(format!("consumer {consumer_index}: {error}"));
        }
    });
    match spawned {
        Ok(handle) => handle,
        Err(error) => panic!("cannot start a consumer thread: {error}"),
    }
}

#[allow(clippy::too_many_lines)] // over 70 lines before the limit; to be split
fn run(
    workload: &Workload,
    versions: Versions,
    topic: &str,
    partitions: &[i32],
    stats: &Stats,
    stop: &AtomicBool,
    ready: &std::sync::atomic::AtomicUsize,
) -> Result<(), ClientError> {
    let mut connection = Connection::connect(&workload.bootstrap);
    let start_timestamp = match workload.start_offset {
        StartOffset::Earliest => OFFSET_EARLIEST,
        StartOffset::Latest => OFFSET_LATEST,
    };
    let positioned = match &mut connection {
        Ok(connection) => list_offsets(connection, &versions, topic, partitions, start_timestamp),
        Err(_) => Ok(Vec::new()),
    };
    ready.fetch_add(1, Ordering::SeqCst); // even on failure, so the run does not wait for a dead consumer
    let mut connection = connection?;
    let mut offsets = positioned?;
    let recorder = stats.recorder();
    let counters = &stats.counters;
    // Fetches are pipelined with processing, as the Java consumer does before it hands records to the application
    // (and librdkafka with its prefetch queue): as soon as a response arrives, the next offsets are read from the
    // batch headers and the next Fetch is sent; the records are parsed while the broker works on it. Still one
    // request in flight.
    let mut correlation_id =
        connection.writer.send(&fetch_request(workload, topic, partitions, &offsets), versions.fetch)?;
    loop {
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
            correlation_id = connection
                .writer
                .send(&fetch_request(workload, topic, partitions, &offsets), versions.fetch)?;
            continue;
        }
        // Where this response leaves each partition; errors are handled here, before the next request goes out.
        let fetch_offsets = offsets.clone();
        for partition_data in response.responses.iter().flat_map(|topic| topic.partitions.iter()) {
            let Some(slot) =
                partitions.iter().position(|&partition| partition == partition_data.partition_index)
            else {
                continue;
            };
            if partition_data.error_code == OFFSET_OUT_OF_RANGE {
                let reset = list_offsets(
                    &mut connection,
                    &versions,
                    topic,
                    &partitions[slot..=slot],
                    OFFSET_EARLIEST,
                )?;
                offsets[slot] = reset.first().copied().unwrap_or(0);
                continue;
            }
            if partition_data.error_code != 0 {
                stats.error(format!(
                    "fetch {topic}/{}: error code {}",
                    partition_data.partition_index, partition_data.error_code
                ));
                continue;
            }
            if let Some(next) = partition_data.records.as_deref().and_then(next_offset_after) {
                offsets[slot] = offsets[slot].max(next);
            }
        }
        correlation_id =
            connection.writer.send(&fetch_request(workload, topic, partitions, &offsets), versions.fetch)?;

        let mut latencies = match recorder.lock() {
            Ok(latencies) => latencies,
            Err(poisoned) => poisoned.into_inner(),
        };
        for partition_data in response.responses.iter().flat_map(|topic| topic.partitions.iter()) {
            let Some(slot) =
                partitions.iter().position(|&partition| partition == partition_data.partition_index)
            else {
                continue;
            };
            if partition_data.error_code != 0 {
                continue;
            }
            let Some(records) = &partition_data.records else {
                continue;
            };
            let fetch_offset = fetch_offsets[slot];
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

fn fetch_request(workload: &Workload, topic: &str, partitions: &[i32], offsets: &[i64]) -> FetchRequest {
    let mut fetch_topic = FetchTopic::default();
    fetch_topic.topic = topic_name(topic);
    fetch_topic.partitions = partitions
        .iter()
        .zip(offsets)
        .map(|(&partition, &offset)| {
            let mut entry = FetchPartition::default();
            entry.partition = partition;
            entry.current_leader_epoch = -1;
            entry.fetch_offset = offset;
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
