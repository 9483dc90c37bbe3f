//! The floor server end to end over loopback, driven by sluice-bench's own client code.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step is the test failing

use std::net::TcpListener;
use std::path::PathBuf;
use std::thread;

use bytes::Bytes;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use sluice_bench::client::{topic_name, Connection};
use sluice_bench::cluster::Metadata;
use sluice_bench::floor::{serve, FloorConfig};
use sluice_storage::records::{BatchBuilder, Compression};

fn start_floor(name: &str) -> (String, PathBuf) {
    let data_dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("floor-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data_dir);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let config = FloorConfig { data_dir: data_dir.clone(), core_count: 2 };
    thread::spawn(move || serve(&listener, &config));
    (address, data_dir)
}

fn batch(fill: u8, count: usize) -> Bytes {
    let mut builder = BatchBuilder::new(Compression::None, 64 << 10);
    for _ in 0..count {
        builder.append(1, None, Some(&[&[fill; 1000][..]]));
    }
    builder.finish(64 << 10).unwrap()
}

fn produce_request(topic: &str, acks: i16, batches: &[(i32, Bytes)]) -> ProduceRequest {
    let mut topic_data = TopicProduceData::default();
    topic_data.name = topic_name(topic);
    for (partition, records) in batches {
        let mut data = PartitionProduceData::default();
        data.index = *partition;
        data.records = Some(records.clone());
        topic_data.partition_data.push(data);
    }
    let mut request = ProduceRequest::default();
    request.acks = acks;
    request.timeout_ms = 30_000;
    request.topic_data = vec![topic_data];
    request
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}

#[test]
fn sluice_bench_can_route_and_produce_to_the_floor_and_the_bytes_are_on_disk() {
    // Proves version negotiation, CreateTopics and Metadata satisfy sluice-bench's routing, Produce is answered
    // with increasing base offsets from the record counter, an acks=0 request gets no answer yet is written, and
    // every batch is in a core file byte for byte once its answer (or a later one on the connection) arrived.
    let (address, data_dir) = start_floor("route");
    let mut connection = Connection::connect(&address).unwrap();
    let versions = connection.negotiate_versions().unwrap();
    assert_eq!((versions.produce, versions.metadata, versions.create_topics), (12, 12, 7));
    let topic = "floor-test".to_owned();
    let metadata = Metadata::new(vec![address.clone()], versions, vec![topic.clone()]);
    let table = metadata.create_topics(16, 1, &[]).unwrap();
    assert!(table.leaderless(&topic, 16).is_empty(), "every partition has the floor as its leader");
    assert_eq!(table.address(table.leader(&topic, 15)), Some(address.as_str()));

    let mut producer = Connection::connect(&address).unwrap();
    let silent = batch(0xa5, 7);
    let correlation_id =
        producer.writer.send(&produce_request(&topic, 0, &[(3, silent.clone())]), versions.produce);
    assert!(correlation_id.is_ok());
    let first = batch(0x5a, 10);
    let second = batch(0x3c, 5);
    for version in [3, versions.produce] {
        let request = produce_request(&topic, -1, &[(0, first.clone()), (9, second.clone())]);
        let response: ProduceResponse = producer.call(&request, version).unwrap();
        let partitions = &response.responses[0].partition_responses;
        assert_eq!(partitions.iter().map(|p| (p.index, p.error_code)).collect::<Vec<_>>(), [(0, 0), (9, 0)]);
        assert_eq!(partitions[1].base_offset - partitions[0].base_offset, 10, "v{version}");
    }
    let mut on_disk = Vec::new();
    for entry in std::fs::read_dir(&data_dir).unwrap() {
        on_disk.extend(std::fs::read(entry.unwrap().path()).unwrap());
    }
    for (name, records) in [("acks=0", &silent), ("first", &first), ("second", &second)] {
        assert!(contains(&on_disk, records), "{name} batch on disk");
    }
    std::fs::remove_dir_all(&data_dir).unwrap();
}

#[test]
fn unknown_topics_are_reported_and_unserved_apis_close_the_connection() {
    // Proves Metadata for a topic never created answers UNKNOWN_TOPIC_OR_PARTITION (sluice-bench then waits), and
    // a Fetch — advertised only for version negotiation — ends the connection rather than hanging it.
    let (address, data_dir) = start_floor("unknown");
    let mut connection = Connection::connect(&address).unwrap();
    let versions = connection.negotiate_versions().unwrap();
    let mut request = kafka_protocol::messages::MetadataRequest::default();
    let mut requested = kafka_protocol::messages::metadata_request::MetadataRequestTopic::default();
    requested.name = Some(topic_name("never-created"));
    request.topics = Some(vec![requested]);
    let response = connection.call(&request, versions.metadata).unwrap();
    assert_eq!(response.topics[0].error_code, 3);
    let fetch = kafka_protocol::messages::FetchRequest::default();
    assert!(connection.call(&fetch, versions.fetch).is_err(), "the floor closes the connection on Fetch");
    std::fs::remove_dir_all(&data_dir).unwrap();
}
