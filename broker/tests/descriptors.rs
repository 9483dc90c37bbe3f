//! File descriptors are contained (issue 13, item 3), seen from outside the real `sluice` process: with 2,000
//! partitions, each holding a record, and `log.segment.open.files.max` = 500, the broker's descriptors (counted in
//! /proc/<pid>/fd) stay at that cap plus a few, under half a descriptor per partition (before, each partition held
//! six: .log, .index and .timeindex, each opened twice), before and after a restart, and every partition's record
//! still reads back although most of their files were closed meanwhile.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step is the test failing

mod common;
use common::Client;

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use sluice_storage::batch::testing::make_batch;

const PARTITION_COUNT: i32 = 2000;
const TOPIC: &str = "descriptors";
/// `log.segment.open.files.max` for the test (set, so that the bound does not depend on the machine's limit).
const OPEN_FILES_MAX: usize = 500;
/// Descriptors allowed per partition, everything counted (sockets, io_uring, listeners); the old code held 6.
const DESCRIPTORS_PER_PARTITION_MAX: f64 = 0.5;

/// The real binary on a free port, killed when dropped.
struct Process {
    child: Child,
    address: SocketAddr,
}

impl Process {
    fn start(directory: &Path) -> Process {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let address: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let config = directory.with_extension("toml");
        std::fs::write(&config, format!("\"log.segment.open.files.max\" = {OPEN_FILES_MAX}\n")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["--listen", &address.to_string(), "--shards", "2", "--config"])
            .arg(&config)
            .arg("--data-dir")
            .arg(directory)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        while TcpStream::connect(address).is_err() {
            assert!(Instant::now() < deadline, "the broker did not listen within 120 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        Process { child, address }
    }

    /// Descriptors the process holds now, and how many of them are files under `directory`.
    fn descriptors(&self, directory: &Path) -> (usize, usize) {
        let targets: Vec<PathBuf> = std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .unwrap()
            .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
            .collect();
        let under = targets.iter().filter(|target| target.starts_with(directory)).count();
        (targets.len(), under)
    }

    /// SIGTERM and wait: a clean stop.
    fn stop(mut self) {
        // SAFETY: kill only sends a signal to the child this value owns.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "the broker did not stop within 120 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn create_topic(client: &mut Client) {
    let mut creatable = CreatableTopic::default();
    creatable.name = TopicName(StrBytes::from_static_str(TOPIC));
    creatable.num_partitions = PARTITION_COUNT;
    creatable.replication_factor = 1;
    let mut create = CreateTopicsRequest::default();
    create.topics = vec![creatable];
    create.timeout_ms = 120_000;
    assert_eq!(
        client.call(&create, 7).topics[0].error_code,
        0,
        "CreateTopics of {PARTITION_COUNT} partitions"
    );
}

/// One record in every partition, acknowledged once durable.
fn produce_everywhere(client: &mut Client) {
    let mut data = TopicProduceData::default();
    data.name = TopicName(StrBytes::from_static_str(TOPIC));
    data.partition_data = (0..PARTITION_COUNT)
        .map(|index| {
            let mut partition = PartitionProduceData::default();
            partition.index = index;
            partition.records = Some(make_batch(1, 100, i64::from(index)));
            partition
        })
        .collect();
    let mut produce = ProduceRequest::default();
    produce.acks = -1;
    produce.timeout_ms = 120_000;
    produce.topic_data = vec![data];
    for partition in &client.call(&produce, 8).responses[0].partition_responses {
        assert_eq!(partition.error_code, 0, "produce to partition {}", partition.index);
    }
}

/// Fetches every partition from offset 0 until each has returned its one record; returns the first record batch
/// of each partition.
fn fetch_everywhere(client: &mut Client) -> BTreeMap<i32, Bytes> {
    let mut found = BTreeMap::new();
    // Bounded: each round either returns records or the test fails after 50 rounds.
    for _ in 0..50 {
        let mut topic = FetchTopic::default();
        topic.topic = TopicName(StrBytes::from_static_str(TOPIC));
        topic.partitions = (0..PARTITION_COUNT)
            .filter(|index| !found.contains_key(index))
            .map(|index| {
                let mut partition = FetchPartition::default();
                partition.partition = index;
                partition.partition_max_bytes = 1 << 20;
                partition
            })
            .collect();
        let mut request = FetchRequest::default();
        request.max_wait_ms = 500;
        request.min_bytes = 1;
        request.max_bytes = 50 << 20;
        request.session_epoch = -1;
        request.topics = vec![topic];
        let response = client.call(&request, 12);
        for partition in response.responses.iter().flat_map(|topic| &topic.partitions) {
            assert_eq!(partition.error_code, 0, "fetch of partition {}", partition.partition_index);
            if let Some(records) = partition.records.as_ref().filter(|records| !records.is_empty()) {
                found.insert(partition.partition_index, records.clone());
            }
        }
        if found.len() == PARTITION_COUNT as usize {
            return found;
        }
    }
    panic!("only {} of {PARTITION_COUNT} partitions returned their record", found.len());
}

fn check_descriptors(process: &Process, directory: &Path, when: &str) {
    let (total, under) = process.descriptors(directory);
    let per_partition = total as f64 / f64::from(PARTITION_COUNT);
    println!("{when}: {total} descriptors ({under} on data files) for {PARTITION_COUNT} partitions: {per_partition:.3} each");
    assert!(under <= OPEN_FILES_MAX, "{when}: {under} data files open, cap {OPEN_FILES_MAX}");
    assert!(
        per_partition < DESCRIPTORS_PER_PARTITION_MAX,
        "{when}: {total} descriptors for {PARTITION_COUNT} partitions ({per_partition:.2} each)"
    );
}

#[test]
fn two_thousand_partitions_hold_less_than_one_descriptor_each_and_read_back() {
    let directory = std::env::temp_dir().join(format!("sluice-descriptors-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&directory);
    std::fs::create_dir_all(&directory).unwrap();
    let directory = directory.canonicalize().unwrap();

    let process = Process::start(&directory);
    let mut client = Client::connect(process.address, Duration::from_secs(120));
    create_topic(&mut client);
    check_descriptors(&process, &directory, "after CreateTopics");
    produce_everywhere(&mut client);
    check_descriptors(&process, &directory, "after a record in each");
    drop(client);
    process.stop();

    let process = Process::start(&directory);
    check_descriptors(&process, &directory, "after restart");
    let mut client = Client::connect(process.address, Duration::from_secs(120));
    let records = fetch_everywhere(&mut client);
    for (index, batch) in &records {
        let expected = make_batch(1, 100, i64::from(*index));
        // Everything after the broker-stamped base offset and partition leader epoch is the producer's.
        assert_eq!(batch[..expected.len()].len(), expected.len(), "partition {index}");
        assert_eq!(&batch[17..expected.len()], &expected[17..], "partition {index}: the record written");
    }
    check_descriptors(&process, &directory, "after reading every partition");
    drop(client);
    process.stop();
    let _ = std::fs::remove_dir_all(&directory);
    let _ = std::fs::remove_file(directory.with_extension("toml"));
}
