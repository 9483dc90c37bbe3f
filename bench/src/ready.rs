//! `sluice-bench --await-topics N`: how long a broker that was just started takes to serve what it held — for
//! start-up and recovery times. From this call on (the caller starts it as it starts the broker) it measures until
//! the broker accepts a connection, until Metadata lists at least N topics of the prefix with a leader for every
//! partition, and until ListOffsets answers every one of their partitions without an error (the logs are open).

use std::thread;
use std::time::{Duration, Instant};

use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{
    BrokerId, ListOffsetsRequest, ListOffsetsResponse, MetadataRequest, MetadataResponse,
};

use crate::client::{topic_name, ClientError, Connection, Versions, OFFSET_LATEST};

/// How often a step that is not ready yet is asked again.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Milliseconds from the call to each step (`connect_ms`: the first connection whose ApiVersions is answered).
#[derive(Debug, Clone, Copy)]
pub struct Readiness {
    pub connect_ms: f64,
    pub metadata_ms: f64,
    pub list_offsets_ms: f64,
    pub topic_count: usize,
    pub partition_count: usize,
}

impl Readiness {
    pub fn to_json(&self) -> String {
        format!(
            "{{\"connect_ms\": {:.1}, \"metadata_ms\": {:.1}, \"ready_ms\": {:.1}, \"topics\": {}, \"partitions\": {}}}",
            self.connect_ms, self.metadata_ms, self.list_offsets_ms, self.topic_count, self.partition_count
        )
    }
}

/// Topics of `response` named `prefix…` whose every partition has a leader, with their partition counts.
pub fn ready_topics(response: &MetadataResponse, prefix: &str) -> Vec<(String, i32)> {
    response
        .topics
        .iter()
        .filter(|topic| topic.error_code == 0 && !topic.partitions.is_empty())
        .filter_map(|topic| {
            let name = topic.name.as_ref()?.0.as_str();
            let led = topic
                .partitions
                .iter()
                .all(|partition| partition.error_code == 0 && partition.leader_id.0 >= 0);
            (name.starts_with(prefix) && led).then(|| (name.to_owned(), topic.partitions.len() as i32))
        })
        .collect()
}

pub fn await_topics(
    address: &str,
    prefix: &str,
    topic_count: usize,
    timeout: Duration,
) -> Result<Readiness, ClientError> {
    let started = Instant::now();
    let deadline = started + timeout;
    let give_up = |what: &str| ClientError::Io(std::io::Error::other(format!("{what} within {timeout:?}")));
    // A broker just started (or one just killed whose listening socket the kernel has not yet let go of) may accept
    // a connection and then drop it, or refuse one: until ApiVersions is answered, every failure is retried.
    let (mut connection, versions, connect_ms) = loop {
        let attempt = Connection::connect(address).and_then(|mut connection| {
            let versions = connection.negotiate_versions()?;
            Ok((connection, versions))
        });
        match attempt {
            Ok((connection, versions)) => break (connection, versions, elapsed_ms(started)),
            Err(_) if Instant::now() < deadline => thread::sleep(POLL_INTERVAL),
            Err(error) => return Err(error),
        }
    };
    let topics = loop {
        let mut request = MetadataRequest::default();
        request.topics = None;
        let response: MetadataResponse = connection.call(&request, versions.metadata)?;
        let topics = ready_topics(&response, prefix);
        if topics.len() >= topic_count {
            break topics;
        }
        if Instant::now() >= deadline {
            return Err(give_up(&format!("{} of {topic_count} topics led", topics.len())));
        }
        thread::sleep(POLL_INTERVAL);
    };
    let metadata_ms = elapsed_ms(started);
    while !offsets_answered(&mut connection, &versions, &topics)? {
        if Instant::now() >= deadline {
            return Err(give_up("ListOffsets of every partition"));
        }
        thread::sleep(POLL_INTERVAL);
    }
    Ok(Readiness {
        connect_ms,
        metadata_ms,
        list_offsets_ms: elapsed_ms(started),
        topic_count: topics.len(),
        partition_count: topics.iter().map(|(_, partitions)| *partitions as usize).sum(),
    })
}

/// One ListOffsets (latest) for every partition of `topics`; whether all answered without an error.
fn offsets_answered(
    connection: &mut Connection,
    versions: &Versions,
    topics: &[(String, i32)],
) -> Result<bool, ClientError> {
    let mut request = ListOffsetsRequest::default();
    request.replica_id = BrokerId(-1);
    request.topics = topics
        .iter()
        .map(|(name, partitions)| {
            let mut topic = ListOffsetsTopic::default();
            topic.name = topic_name(name);
            topic.partitions = (0..*partitions)
                .map(|index| {
                    let mut partition = ListOffsetsPartition::default();
                    partition.partition_index = index;
                    partition.current_leader_epoch = -1;
                    partition.timestamp = OFFSET_LATEST;
                    partition
                })
                .collect();
            topic
        })
        .collect();
    let expected: usize = topics.iter().map(|(_, partitions)| *partitions as usize).sum();
    let response: ListOffsetsResponse = connection.call(&request, versions.list_offsets)?;
    let answered = response
        .topics
        .iter()
        .flat_map(|topic| topic.partitions.iter())
        .filter(|partition| partition.error_code == 0)
        .count();
    Ok(answered == expected)
}

fn elapsed_ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::metadata_response::{MetadataResponsePartition, MetadataResponseTopic};

    fn topic(name: &str, leaders: &[i32]) -> MetadataResponseTopic {
        let mut topic = MetadataResponseTopic::default();
        topic.name = Some(topic_name(name));
        topic.partitions = leaders
            .iter()
            .enumerate()
            .map(|(index, &leader)| {
                let mut partition = MetadataResponsePartition::default();
                partition.partition_index = index as i32;
                partition.leader_id = BrokerId(leader);
                partition
            })
            .collect();
        topic
    }

    #[test]
    fn only_fully_led_topics_of_the_prefix_are_ready() {
        // Proves a topic with a leaderless partition, a topic of another prefix and an empty one do not count.
        let mut response = MetadataResponse::default();
        response.topics = vec![
            topic("bench-f-1", &[0, 0, 0]),
            topic("bench-f-2", &[0, -1, 0]),
            topic("other-1", &[0]),
            topic("bench-f-3", &[]),
            topic("bench-f-4", &[0]),
        ];
        assert_eq!(
            ready_topics(&response, "bench-f-"),
            vec![("bench-f-1".to_owned(), 3), ("bench-f-4".to_owned(), 1)]
        );
    }
}
