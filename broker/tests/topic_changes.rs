//! Topic changes against the data directory, with the real broker in process (two shards): a CreateTopics whose
//! partitions cannot all be opened is not committed and leaves nothing behind; a deleted topic leaves no directory;
//! start-up removes what an interrupted change left and serves around a partition that cannot be opened.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step is the test failing

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use sluice_broker::config::{Config, ConfigOverrides};
use sluice_broker::server::{self, Broker};

/// Kafka's KAFKA_STORAGE_ERROR.
const KAFKA_STORAGE_ERROR: i16 = 56;
const SEGMENT_FILE: &str = "00000000000000000000.log";

fn call<R: Request + Encodable>(stream: &mut TcpStream, request: &R, version: i16) -> R::Response {
    let mut buffer = BytesMut::new();
    let mut header = RequestHeader::default();
    header.request_api_key = R::KEY;
    header.request_api_version = version;
    header.correlation_id = 1;
    header.client_id = Some(StrBytes::from_static_str("topic-changes"));
    header.encode(&mut buffer, R::header_version(version)).unwrap();
    request.encode(&mut buffer, version).unwrap();
    let mut message = (buffer.len() as i32).to_be_bytes().to_vec();
    message.extend_from_slice(&buffer);
    stream.write_all(&message).unwrap();
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).unwrap();
    let mut frame = vec![0u8; i32::from_be_bytes(size) as usize];
    stream.read_exact(&mut frame).unwrap();
    let mut frame = Bytes::from(frame);
    ResponseHeader::decode(&mut frame, <R::Response as HeaderVersion>::header_version(version)).unwrap();
    R::Response::decode(&mut frame, version).unwrap()
}

fn start(directory: &Path) -> (Broker, TcpStream) {
    let overrides = ConfigOverrides {
        listen: Some("127.0.0.1:0".into()),
        data_dir: Some(directory.to_path_buf()),
        shard_count: Some(2),
        ..Default::default()
    };
    let broker = server::start(Config::from_toml("", &overrides).unwrap()).unwrap();
    let stream = TcpStream::connect(broker.address).unwrap();
    (broker, stream)
}

fn stop(broker: Broker, stream: TcpStream) {
    drop(stream);
    broker.stop();
    broker.join();
}

fn scratch(name: &str) -> PathBuf {
    let directory = std::env::temp_dir().join(format!("sluice-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&directory);
    std::fs::create_dir_all(&directory).unwrap();
    directory
}

fn create_topic(stream: &mut TcpStream, name: &'static str, partition_count: i32) -> i16 {
    let mut topic = CreatableTopic::default();
    topic.name = TopicName(StrBytes::from_static_str(name));
    topic.num_partitions = partition_count;
    topic.replication_factor = 1;
    let mut create = CreateTopicsRequest::default();
    create.topics = vec![topic];
    create.timeout_ms = 10_000;
    call(stream, &create, 5).topics[0].error_code
}

fn delete_topic(stream: &mut TcpStream, name: &'static str) -> i16 {
    let mut delete = DeleteTopicsRequest::default();
    delete.topic_names = vec![TopicName(StrBytes::from_static_str(name))];
    delete.timeout_ms = 10_000;
    call(stream, &delete, 4).responses[0].error_code
}

/// The error code of ListOffsets (latest) for each partition of `name`.
fn list_offsets(stream: &mut TcpStream, name: &'static str, partition_count: i32) -> Vec<i16> {
    let mut topic = ListOffsetsTopic::default();
    topic.name = TopicName(StrBytes::from_static_str(name));
    topic.partitions = (0..partition_count)
        .map(|index| {
            let mut partition = ListOffsetsPartition::default();
            partition.partition_index = index;
            partition.timestamp = -1;
            partition
        })
        .collect();
    let mut request = ListOffsetsRequest::default();
    request.replica_id = BrokerId(-1);
    request.topics = vec![topic];
    let response = call(stream, &request, 5);
    response.topics[0].partitions.iter().map(|partition| partition.error_code).collect()
}

/// Names in `directory` starting with `prefix`, sorted.
fn entries(directory: &Path, prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(directory)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(prefix))
        .collect();
    names.sort();
    names
}

fn saved_table(directory: &Path) -> String {
    std::fs::read_to_string(directory.join("topics.toml")).unwrap_or_default()
}

/// A file where one partition's directory should be makes the create fail with KAFKA_STORAGE_ERROR: the table
/// is not saved, the partitions that did open are removed, the file is left as it was, and once it is gone the
/// same create succeeds and the broker restarts on the directory.
#[test]
fn a_create_that_cannot_open_its_partitions_is_not_committed() {
    let directory = scratch("create-fails");
    let (broker, mut stream) = start(&directory);
    std::fs::write(directory.join("blocked-3"), b"in the way").unwrap();

    assert_eq!(create_topic(&mut stream, "blocked", 8), KAFKA_STORAGE_ERROR);
    assert!(!saved_table(&directory).contains("blocked"), "the refused topic was saved");
    assert_eq!(entries(&directory, "blocked"), vec!["blocked-3".to_string()], "partitions left behind");
    assert_eq!(std::fs::read(directory.join("blocked-3")).unwrap(), b"in the way");
    assert_eq!(list_offsets(&mut stream, "blocked", 8), vec![3; 8], "the topic is unknown");

    std::fs::remove_file(directory.join("blocked-3")).unwrap();
    assert_eq!(create_topic(&mut stream, "blocked", 8), 0);
    assert!(saved_table(&directory).contains("blocked"));
    assert_eq!(list_offsets(&mut stream, "blocked", 8), vec![0; 8]);
    stop(broker, stream);

    let (broker, mut stream) = start(&directory);
    assert_eq!(list_offsets(&mut stream, "blocked", 8), vec![0; 8]);
    stop(broker, stream);
    std::fs::remove_dir_all(&directory).unwrap();
}

/// A deleted topic leaves no directory, and start-up removes what an interrupted change left (a directory
/// marked for deletion, partition directories the table does not name) but nothing else, and serves every
/// partition but one whose directory is a file, which answers KAFKA_STORAGE_ERROR.
#[test]
fn start_up_removes_leftovers_and_serves_around_a_partition_that_cannot_open() {
    let directory = scratch("leftovers");
    let (broker, mut stream) = start(&directory);
    assert_eq!(create_topic(&mut stream, "kept", 4), 0);
    assert_eq!(create_topic(&mut stream, "deleted", 4), 0);
    assert_eq!(entries(&directory, "deleted").len(), 4);
    assert_eq!(delete_topic(&mut stream, "deleted"), 0);
    assert_eq!(entries(&directory, "deleted"), Vec::<String>::new(), "the deleted topic left directories");
    stop(broker, stream);

    // What a broker killed during changes leaves, and what is not the broker's to remove.
    let segment_in = |name: &str| {
        std::fs::create_dir_all(directory.join(name)).unwrap();
        std::fs::write(directory.join(name).join(SEGMENT_FILE), b"").unwrap();
    };
    segment_in("deleted-0"); // deleted from the table, files not yet removed
    segment_in("kept-9"); // past the topic's partition count: a creation never committed
    segment_in("kept-0.0123456789abcdef0123456789abcdef-delete"); // renamed for deletion, not yet removed
    segment_in("notes"); // not a partition directory
    std::fs::create_dir_all(directory.join("deleted-1")).unwrap(); // no segment: not recognisably a log
    std::fs::write(directory.join("deleted-2"), b"a file").unwrap(); // not a directory
    std::fs::remove_dir_all(directory.join("kept-1")).unwrap();
    std::fs::write(directory.join("kept-1"), b"in the way").unwrap(); // a partition that cannot open

    let (broker, mut stream) = start(&directory);
    let mut expected = vec![0; 4];
    expected[1] = KAFKA_STORAGE_ERROR;
    assert_eq!(list_offsets(&mut stream, "kept", 4), expected);
    assert_eq!(entries(&directory, "deleted"), vec!["deleted-1".to_string(), "deleted-2".to_string()]);
    assert_eq!(
        entries(&directory, "kept"),
        vec!["kept-0", "kept-1", "kept-2", "kept-3"].into_iter().map(String::from).collect::<Vec<_>>()
    );
    assert!(directory.join("kept-1").is_file());
    assert!(directory.join("notes").join(SEGMENT_FILE).is_file());
    stop(broker, stream);
    std::fs::remove_dir_all(&directory).unwrap();
}
