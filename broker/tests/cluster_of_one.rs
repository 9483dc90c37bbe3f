//! A cluster of one voter, in process: the quorum elects this node, it registers and is unfenced, and the cluster
//! answers are this node's — DescribeQuorum (KIP-595) names it leader with itself as the only voter and a high
//! watermark that grows with each metadata change; Metadata's controller is this node; a created topic's
//! partitions are led by it at a leader epoch; Produce to a partition answers; DescribeQuorum for another topic is
//! refused.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed step is the test failing

mod common;
use common::Client;

use std::time::{Duration, Instant};

use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

fn topic_name(value: &str) -> TopicName {
    TopicName(StrBytes::from_string(value.to_string()))
}

fn describe_quorum(client: &mut Client, topic: &str) -> DescribeQuorumResponse {
    let mut partition = PartitionData::default();
    partition.partition_index = 0;
    let mut data = TopicData::default();
    data.topic_name = topic_name(topic);
    data.partitions = vec![partition];
    let mut request = DescribeQuorumRequest::default();
    request.topics = vec![data];
    client.call(&request, 2)
}

fn create_topic(client: &mut Client, name: &str, partitions: i32) -> i16 {
    let mut topic = CreatableTopic::default();
    topic.name = topic_name(name);
    topic.num_partitions = partitions;
    topic.replication_factor = 1;
    let mut request = CreateTopicsRequest::default();
    request.topics = vec![topic];
    request.timeout_ms = 30_000;
    client.call(&request, 7).topics[0].error_code
}

#[test]
fn a_single_voter_leads_and_describes_its_quorum() {
    let quorum_port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let config = format!("\"node.id\" = 7\n\"controller.quorum.voters\" = \"7@127.0.0.1:{quorum_port}\"\n");
    let (broker, directory) = common::start_broker("cluster-of-one", &config);
    let mut client = Client::connect(broker.address, Duration::from_secs(30));

    // Until the quorum elected this node and it registered and was unfenced, creation is refused (no controller,
    // or no live broker for the replicas): bounded retries.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut created = create_topic(&mut client, "events", 3);
    while created != 0 {
        assert!([7, 38].contains(&created), "CreateTopics answered {created}");
        assert!(Instant::now() < deadline, "the cluster of one never accepted a topic");
        std::thread::sleep(Duration::from_millis(100));
        created = create_topic(&mut client, "events", 3);
    }

    let quorum = describe_quorum(&mut client, "__cluster_metadata");
    assert_eq!(quorum.error_code, 0);
    let partition = &quorum.topics[0].partitions[0];
    assert_eq!(partition.leader_id.0, 7);
    assert!(partition.leader_epoch >= 1, "the Raft term of an elected leader");
    let voters: Vec<i32> = partition.current_voters.iter().map(|voter| voter.replica_id.0).collect();
    assert_eq!(voters, vec![7]);
    let high_watermark = partition.high_watermark;
    assert!(high_watermark >= 3, "registration, unfence and the topic are committed: {high_watermark}");
    assert_eq!(quorum.nodes.len(), 1);
    assert_eq!(quorum.nodes[0].listeners[0].port, quorum_port);

    assert_eq!(create_topic(&mut client, "more", 1), 0);
    let later = describe_quorum(&mut client, "__cluster_metadata");
    assert!(
        later.topics[0].partitions[0].high_watermark > high_watermark,
        "a change moves the high watermark"
    );

    let mut request = MetadataRequest::default();
    request.topics = None;
    let metadata: MetadataResponse = client.call(&request, 12);
    assert_eq!(metadata.controller_id.0, 7);
    assert_eq!(metadata.brokers.iter().map(|broker| broker.node_id.0).collect::<Vec<_>>(), vec![7]);
    let events = metadata.topics.iter().find(|topic| topic.name == Some(topic_name("events"))).unwrap();
    assert_eq!(events.partitions.len(), 3);
    for partition in &events.partitions {
        assert_eq!((partition.error_code, partition.leader_id.0), (0, 7));
        assert_eq!(partition.replica_nodes.iter().map(|node| node.0).collect::<Vec<_>>(), vec![7]);
    }

    assert_eq!(describe_quorum(&mut client, "something-else").error_code, 3, "UNKNOWN_TOPIC_OR_PARTITION");
    broker.stop();
    broker.join();
    let _ = std::fs::remove_dir_all(directory);
}
