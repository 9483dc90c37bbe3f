//! The start-up lifecycle: no shard listens until every shard has opened the partitions it owns. Shard 1's loading
//! is held back (the server's `SLUICE_TEST_SHARD_LOAD_DELAY_MS` hook); a client that connects the moment the port
//! accepts, and asks for the end offset of every partition, must find every partition — before the lifecycle, shard
//! 0 listened as soon as its own partitions were open and answered UNKNOWN_TOPIC_OR_PARTITION for shard 1's.
//! (Its own test binary: the hook is a process-wide environment variable.)
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step is the test failing

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use sluice_broker::config::{Config, ConfigOverrides};
use sluice_broker::server;

const TOPIC: &str = "startup";
const PARTITION_COUNT: i32 = 16;
const LOAD_DELAY: Duration = Duration::from_millis(1500);

/// One request and its response; `None` if the connection failed (start-up's probe of the port can accept and
/// drop a connection for an instant before the shards listen).
fn try_call<R: Request + Encodable>(
    stream: &mut TcpStream,
    request: &R,
    version: i16,
) -> Option<R::Response> {
    let mut buffer = BytesMut::new();
    let mut header = RequestHeader::default();
    header.request_api_key = R::KEY;
    header.request_api_version = version;
    header.correlation_id = 1;
    header.client_id = Some(StrBytes::from_static_str("startup"));
    header.encode(&mut buffer, R::header_version(version)).unwrap();
    request.encode(&mut buffer, version).unwrap();
    let mut message = (buffer.len() as i32).to_be_bytes().to_vec();
    message.extend_from_slice(&buffer);
    stream.write_all(&message).ok()?;
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).ok()?;
    let mut frame = vec![0u8; i32::from_be_bytes(size) as usize];
    stream.read_exact(&mut frame).ok()?;
    let mut frame = Bytes::from(frame);
    ResponseHeader::decode(&mut frame, <R::Response as HeaderVersion>::header_version(version)).unwrap();
    Some(R::Response::decode(&mut frame, version).unwrap())
}

fn call<R: Request + Encodable>(stream: &mut TcpStream, request: &R, version: i16) -> R::Response {
    try_call(stream, request, version).expect("the broker answers")
}

fn config(directory: &std::path::Path, listen: SocketAddr) -> Config {
    let overrides = ConfigOverrides {
        listen: Some(listen.to_string()),
        data_dir: Some(directory.to_path_buf()),
        shard_count: Some(2),
        ..Default::default()
    };
    Config::from_toml("", &overrides).unwrap()
}

fn list_latest_offsets(stream: &mut TcpStream) -> Option<Vec<(i32, i16)>> {
    let mut request = ListOffsetsRequest::default();
    request.replica_id = BrokerId(-1);
    let mut topic = ListOffsetsTopic::default();
    topic.name = TopicName(StrBytes::from_static_str(TOPIC));
    topic.partitions = (0..PARTITION_COUNT)
        .map(|index| {
            let mut partition = ListOffsetsPartition::default();
            partition.partition_index = index;
            partition.timestamp = -1;
            partition
        })
        .collect();
    request.topics = vec![topic];
    let response = try_call(stream, &request, 5)?;
    Some(
        response.topics[0]
            .partitions
            .iter()
            .map(|partition| (partition.partition_index, partition.error_code))
            .collect(),
    )
}

#[test]
fn no_shard_listens_before_every_shard_has_loaded() {
    let directory = std::env::temp_dir().join(format!("sluice-startup-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&directory);
    // A topic whose partitions spread over both shards.
    let broker = server::start(config(&directory, "127.0.0.1:0".parse().unwrap())).unwrap();
    let address = broker.address;
    let mut stream = TcpStream::connect(address).unwrap();
    let mut create = CreateTopicsRequest::default();
    let mut topic = CreatableTopic::default();
    topic.name = TopicName(StrBytes::from_static_str(TOPIC));
    topic.num_partitions = PARTITION_COUNT;
    topic.replication_factor = 1;
    create.topics = vec![topic];
    create.timeout_ms = 10_000;
    assert_eq!(call(&mut stream, &create, 5).topics[0].error_code, 0);
    drop(stream);
    broker.stop();
    broker.join();

    // Restart on the same port with shard 1's loading held back; connect as soon as anything listens.
    std::env::set_var("SLUICE_TEST_SHARD_LOAD_DELAY_MS", format!("1:{}", LOAD_DELAY.as_millis()));
    let started = Instant::now();
    let restart = std::thread::spawn(move || server::start(config(&directory, address)));
    let (answers, connected_after) = loop {
        assert!(started.elapsed() < Duration::from_secs(60), "the broker never answered");
        if let Ok(mut stream) = TcpStream::connect(address) {
            let connected_after = started.elapsed();
            stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            if let Some(answers) = list_latest_offsets(&mut stream) {
                break (answers, connected_after);
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    assert_eq!(answers.len(), PARTITION_COUNT as usize);
    for (index, error_code) in answers {
        assert_eq!(
            error_code, 0,
            "partition {index} answered error {error_code} right after the port opened"
        );
    }
    assert!(
        connected_after >= LOAD_DELAY,
        "the port accepted after {connected_after:?}, before shard 1 finished loading ({LOAD_DELAY:?})"
    );
    let broker = restart.join().unwrap().unwrap();
    broker.stop();
    broker.join();
}
