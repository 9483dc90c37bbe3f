//! Where each partition lives. `RoutingTable` is built from one Metadata response: partition → leader node id →
//! `host:port`. `Metadata` is the run's shared copy of it, which every worker refreshes through when a broker answers
//! that it does not lead a partition — at most once per `REFRESH_INTERVAL` over the whole run, so a leader election
//! cannot turn a few hundred workers into a Metadata storm.
//!
//! A cluster of one (today's Sluice) routes every partition to the bootstrap address itself, not to the address the
//! broker advertises, so a single-broker run connects exactly where it always did.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteTopicsRequest, DeleteTopicsResponse, MetadataRequest, MetadataResponse,
};
use kafka_protocol::protocol::StrBytes;

use crate::client::{topic_name, ClientError, Connection, Versions};

pub type NodeId = i32;
/// Kafka's leader id for a partition that has none (an election is under way).
pub const NO_LEADER: NodeId = -1;

/// The Kafka error codes that mean "your metadata is stale": ask again, then retry at the (new) leader.
pub mod error_code {
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    pub const LEADER_NOT_AVAILABLE: i16 = 5;
    pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;
    pub const TOPIC_ALREADY_EXISTS: i16 = 36;
    pub const INVALID_REPLICATION_FACTOR: i16 = 38;
    pub const NOT_CONTROLLER: i16 = 41;
    pub const FENCED_LEADER_EPOCH: i16 = 74;
}

/// The shortest time between two Metadata requests of one run (Kafka's `retry.backoff.ms` is 100 ms per client; one
/// run is hundreds of clients' worth of connections, so it waits longer and shares the answer).
pub const REFRESH_INTERVAL: Duration = Duration::from_millis(500);
/// Attempts of one batch (or one partition's fetch) after a stale-metadata error before it counts as failed:
/// refreshes are at least `REFRESH_INTERVAL` apart, so 20 attempts ride out 10 s of leader election.
pub const RETRY_COUNT_MAX: u32 = 20;
/// DeleteTopics v6 names topics by id or name in a new shape; v1–5 take a list of names, which is all a run needs.
const DELETE_TOPICS_VERSION_MAX: i16 = 5;
/// How long topic creation, or a partition with leader -1, may wait for Metadata to show a leader.
pub const LEADER_WAIT_MAX: Duration = Duration::from_secs(30);

/// Whether a produce or fetch error means the partition's leader may have moved.
pub fn refresh_on_error(code: i16) -> bool {
    matches!(
        code,
        error_code::UNKNOWN_TOPIC_OR_PARTITION
            | error_code::LEADER_NOT_AVAILABLE
            | error_code::NOT_LEADER_OR_FOLLOWER
            | error_code::NOT_CONTROLLER
            | error_code::FENCED_LEADER_EPOCH
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorAction {
    /// No error.
    Done,
    /// Refresh metadata, then send again to whoever leads the partition now.
    RetryAfterRefresh,
    /// Count it as failed.
    Fail,
}

/// What to do with a batch (or a partition's fetch) that came back with `code` after `attempts` earlier retries.
pub fn error_action(code: i16, attempts: u32) -> ErrorAction {
    if code == 0 {
        ErrorAction::Done
    } else if refresh_on_error(code) && attempts < RETRY_COUNT_MAX {
        ErrorAction::RetryAfterRefresh
    } else {
        ErrorAction::Fail
    }
}

/// Whether a Metadata request may go out now, the last one having gone at `last`.
pub fn refresh_due(last: Option<Instant>, now: Instant) -> bool {
    last.is_none_or(|last| now.saturating_duration_since(last) >= REFRESH_INTERVAL)
}

/// Splits `--bootstrap`'s comma-separated `HOST:PORT` list.
pub fn parse_bootstrap(list: &str) -> Result<Vec<String>, String> {
    let mut addresses = Vec::new();
    for address in list.split(',').map(str::trim) {
        let port = address.rsplit_once(':').map(|(host, port)| (host, port.parse::<u16>()));
        match port {
            Some((host, Ok(_))) if !host.is_empty() => addresses.push(address.to_owned()),
            _ => return Err(format!("--bootstrap: {address:?} is not HOST:PORT")),
        }
    }
    Ok(addresses)
}

/// Partition → leader → address, as one Metadata response told it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutingTable {
    addresses: BTreeMap<NodeId, String>,
    /// Topic → leader of each partition (index = partition), `NO_LEADER` where there is none or its broker is not
    /// listed.
    leaders: HashMap<String, Vec<NodeId>>,
}

impl RoutingTable {
    /// `bootstrap` is the address list the run was given: a cluster of one that was reached through a single
    /// bootstrap address is routed to that address, whatever it advertises.
    pub fn from_metadata(response: &MetadataResponse, bootstrap: &[String]) -> Self {
        let single = response.brokers.len() == 1 && bootstrap.len() == 1;
        let addresses: BTreeMap<NodeId, String> = response
            .brokers
            .iter()
            .map(|broker| {
                let address = if single {
                    bootstrap[0].clone()
                } else if broker.host.contains(':') {
                    format!("[{}]:{}", broker.host.as_str(), broker.port)
                } else {
                    format!("{}:{}", broker.host.as_str(), broker.port)
                };
                (broker.node_id.0, address)
            })
            .collect();
        let mut leaders = HashMap::new();
        for topic in &response.topics {
            let Some(name) = &topic.name else { continue };
            if topic.error_code != 0 {
                continue;
            }
            let partition_count =
                topic.partitions.iter().map(|partition| partition.partition_index + 1).max().unwrap_or(0);
            let mut topic_leaders = vec![NO_LEADER; partition_count.max(0) as usize];
            for partition in &topic.partitions {
                let leader = partition.leader_id.0;
                if partition.error_code == 0 && addresses.contains_key(&leader) {
                    if let Some(slot) = topic_leaders.get_mut(partition.partition_index as usize) {
                        *slot = leader;
                    }
                }
            }
            leaders.insert(name.0.as_str().to_owned(), topic_leaders);
        }
        RoutingTable { addresses, leaders }
    }

    pub fn broker_count(&self) -> usize {
        self.addresses.len()
    }

    pub fn address(&self, node: NodeId) -> Option<&str> {
        self.addresses.get(&node).map(String::as_str)
    }

    /// The leader of `topic`/`partition`, `NO_LEADER` if unknown.
    pub fn leader(&self, topic: &str, partition: i32) -> NodeId {
        self.leaders
            .get(topic)
            .and_then(|leaders| leaders.get(usize::try_from(partition).ok()?))
            .copied()
            .unwrap_or(NO_LEADER)
    }

    /// The partitions of `0..partition_count` that have no leader.
    pub fn leaderless(&self, topic: &str, partition_count: i32) -> Vec<i32> {
        (0..partition_count).filter(|&partition| self.leader(topic, partition) == NO_LEADER).collect()
    }

    /// `partitions` grouped by leader, in node order; partitions without one under `NO_LEADER`.
    pub fn group_by_leader(&self, topic: &str, partitions: &[i32]) -> BTreeMap<NodeId, Vec<i32>> {
        let mut groups: BTreeMap<NodeId, Vec<i32>> = BTreeMap::new();
        for &partition in partitions {
            groups.entry(self.leader(topic, partition)).or_default().push(partition);
        }
        groups
    }
}

/// The first of `addresses` that accepts a connection.
pub fn connect_any(addresses: &[String]) -> Result<(Connection, String), ClientError> {
    let mut last_error = None;
    for address in addresses {
        match Connection::connect(address) {
            Ok(connection) => return Ok((connection, address.clone())),
            Err(error) => last_error = Some(error),
        }
    }
    Err(last_error.unwrap_or_else(|| ClientError::Io(std::io::Error::other("no bootstrap address"))))
}

/// The run's shared routing table and its rate-limited refresh. Lives for the run, shared by every worker thread.
pub struct Metadata {
    bootstrap: Vec<String>,
    versions: Versions,
    topics: Vec<String>,
    state: Mutex<MetadataState>,
}

struct MetadataState {
    table: Arc<RoutingTable>,
    refreshed_at: Option<Instant>,
    refresh_count: u64,
}

impl Metadata {
    /// A cache of `topics`' routing, empty until the first `refresh`.
    pub fn new(bootstrap: Vec<String>, versions: Versions, topics: Vec<String>) -> Self {
        Metadata {
            bootstrap,
            versions,
            topics,
            state: Mutex::new(MetadataState {
                table: Arc::new(RoutingTable::default()),
                refreshed_at: None,
                refresh_count: 0,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, MetadataState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn table(&self) -> Arc<RoutingTable> {
        Arc::clone(&self.lock().table)
    }

    /// Metadata requests sent so far.
    pub fn refresh_count(&self) -> u64 {
        self.lock().refresh_count
    }

    /// Asks the cluster again if the last ask was at least `REFRESH_INTERVAL` ago, else returns the table as it is.
    /// The lock is held while asking, so workers that hit the same stale leader together share one answer.
    pub fn refresh(&self) -> Result<Arc<RoutingTable>, ClientError> {
        let mut state = self.lock();
        if refresh_due(state.refreshed_at, Instant::now()) {
            state.refreshed_at = Some(Instant::now());
            state.refresh_count += 1;
            let table = self.ask(&state.table)?;
            state.table = Arc::new(table);
        }
        Ok(Arc::clone(&state.table))
    }

    /// Sleeps until a refresh is due, then refreshes: for a worker whose retry would otherwise go to the same stale
    /// leader again at once.
    pub fn refresh_when_due(&self) -> Result<Arc<RoutingTable>, ClientError> {
        let refreshed_at = self.lock().refreshed_at;
        if let Some(last) = refreshed_at {
            let due = last + REFRESH_INTERVAL;
            let now = Instant::now();
            if due > now {
                thread::sleep(due - now);
            }
        }
        self.refresh()
    }

    /// The leader of `topic`/`partition` and its address, refreshing until there is one, for at most
    /// `LEADER_WAIT_MAX`.
    pub fn wait_for_leader(&self, topic: &str, partition: i32) -> Result<(NodeId, String), ClientError> {
        let deadline = Instant::now() + LEADER_WAIT_MAX;
        let mut table = self.table();
        loop {
            let leader = table.leader(topic, partition);
            if let Some(address) = table.address(leader) {
                return Ok((leader, address.to_owned()));
            }
            if Instant::now() >= deadline {
                return Err(ClientError::Broker {
                    what: format!("{topic}/{partition} has no leader in Metadata after {LEADER_WAIT_MAX:?}"),
                    error_code: error_code::LEADER_NOT_AVAILABLE,
                });
            }
            table = self.refresh_when_due()?;
        }
    }

    /// Refreshes until every partition of every topic has a leader, for at most `LEADER_WAIT_MAX`.
    pub fn wait_for_all_leaders(&self, partition_count: i32) -> Result<Arc<RoutingTable>, ClientError> {
        let deadline = Instant::now() + LEADER_WAIT_MAX;
        loop {
            let table = self.refresh_when_due()?;
            let missing: Vec<String> = self
                .topics
                .iter()
                .flat_map(|topic| {
                    table.leaderless(topic, partition_count).into_iter().map(move |p| format!("{topic}/{p}"))
                })
                .collect();
            if missing.is_empty() {
                return Ok(table);
            }
            if Instant::now() >= deadline {
                return Err(ClientError::Broker {
                    what: format!(
                        "{} partition(s) still have no leader in Metadata after {LEADER_WAIT_MAX:?} (first: {})",
                        missing.len(),
                        missing[..missing.len().min(5)].join(", ")
                    ),
                    error_code: error_code::LEADER_NOT_AVAILABLE,
                });
            }
        }
    }

    /// Creates the topics (an existing one is fine) with `replication_factor` replicas per partition and `configs`
    /// (Kafka's topic config names) through any reachable bootstrap broker — a cluster forwards admin requests to its
    /// controller — then waits until every partition has a leader.
    pub fn create_topics(
        &self,
        partition_count: i32,
        replication_factor: i16,
        configs: &[(String, String)],
    ) -> Result<Arc<RoutingTable>, ClientError> {
        let deadline = Instant::now() + LEADER_WAIT_MAX;
        let (mut connection, _) = connect_any(&self.bootstrap)?;
        for topic in &self.topics {
            let mut creatable = CreatableTopic::default();
            creatable.name = topic_name(topic);
            creatable.num_partitions = partition_count;
            creatable.replication_factor = replication_factor;
            creatable.configs = configs
                .iter()
                .map(|(name, value)| {
                    let mut config = CreatableTopicConfig::default();
                    config.name = StrBytes::from_string(name.clone());
                    config.value = Some(StrBytes::from_string(value.clone()));
                    config
                })
                .collect();
            let mut request = CreateTopicsRequest::default();
            request.topics = vec![creatable];
            request.timeout_ms = 30_000;
            loop {
                let response: CreateTopicsResponse =
                    connection.call(&request, self.versions.create_topics)?;
                let code = response
                    .topics
                    .iter()
                    .map(|result| result.error_code)
                    .find(|&code| code != 0 && code != error_code::TOPIC_ALREADY_EXISTS)
                    .unwrap_or(0);
                if code == 0 {
                    break;
                }
                // A controller election under way, or a cluster just started whose brokers have not all
                // registered yet (fewer live brokers than replicas): ask again shortly, within the same bound.
                let retry = refresh_on_error(code) || code == error_code::INVALID_REPLICATION_FACTOR;
                if !retry || Instant::now() >= deadline {
                    return Err(ClientError::Broker {
                        what: format!("CreateTopics {topic}"),
                        error_code: code,
                    });
                }
                thread::sleep(REFRESH_INTERVAL);
            }
        }
        drop(connection);
        self.wait_for_all_leaders(partition_count)
    }

    /// Deletes the run's topics through any reachable bootstrap broker (a cluster forwards it to its controller), so
    /// that runs against one long-lived cluster do not fill its disks. DeleteTopics v1–5 (topic names); a broker that
    /// does not speak it, or an error per topic, is an error naming the topic.
    pub fn delete_topics(&self) -> Result<(), ClientError> {
        let (mut connection, _) = connect_any(&self.bootstrap)?;
        let versions: ApiVersionsResponse = connection.call(&ApiVersionsRequest::default(), 0)?;
        let api = versions.api_keys.iter().find(|api| api.api_key == ApiKey::DeleteTopics as i16);
        let (broker_min, broker_max) = api.map_or((-1, -1), |api| (api.min_version, api.max_version));
        let version = broker_max.min(DELETE_TOPICS_VERSION_MAX);
        if version < 1 || version < broker_min {
            return Err(ClientError::Unsupported {
                api: "DeleteTopics",
                broker_min,
                broker_max,
                ours_min: 1,
                ours_max: DELETE_TOPICS_VERSION_MAX,
            });
        }
        let mut request = DeleteTopicsRequest::default();
        request.topic_names = self.topics.iter().map(|topic| topic_name(topic)).collect();
        request.timeout_ms = 30_000;
        let response: DeleteTopicsResponse = connection.call(&request, version)?;
        for result in &response.responses {
            if result.error_code != 0 && result.error_code != error_code::UNKNOWN_TOPIC_OR_PARTITION {
                let name = result.name.as_ref().map_or("?", |name| name.0.as_str());
                return Err(ClientError::Broker {
                    what: format!("DeleteTopics {name}"),
                    error_code: result.error_code,
                });
            }
        }
        Ok(())
    }

    /// One Metadata request, to the first broker that answers: the known brokers first, then the bootstrap list.
    fn ask(&self, known: &RoutingTable) -> Result<RoutingTable, ClientError> {
        let mut candidates: Vec<String> = known.addresses.values().cloned().collect();
        for address in &self.bootstrap {
            if !candidates.contains(address) {
                candidates.push(address.clone());
            }
        }
        let mut request = MetadataRequest::default();
        request.topics = Some(
            self.topics
                .iter()
                .map(|topic| {
                    let mut request_topic = MetadataRequestTopic::default();
                    request_topic.name = Some(topic_name(topic));
                    request_topic
                })
                .collect(),
        );
        request.allow_auto_topic_creation = false;
        let mut last_error = None;
        for address in &candidates {
            let answer = Connection::connect(address)
                .and_then(|mut connection| connection.call(&request, self.versions.metadata));
            match answer {
                Ok(response) => return Ok(RoutingTable::from_metadata(&response, &self.bootstrap)),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error
            .unwrap_or_else(|| ClientError::Io(std::io::Error::other("no broker to ask for Metadata"))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::metadata_response::{
        MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
    };
    use kafka_protocol::messages::BrokerId;
    use kafka_protocol::protocol::StrBytes;

    fn broker(node: i32, host: &'static str, port: i32) -> MetadataResponseBroker {
        let mut broker = MetadataResponseBroker::default();
        broker.node_id = BrokerId(node);
        broker.host = StrBytes::from_static_str(host);
        broker.port = port;
        broker
    }

    /// `leaders[i]` = (leader, error code) of partition i.
    fn topic(name: &str, leaders: &[(i32, i16)]) -> MetadataResponseTopic {
        let mut topic = MetadataResponseTopic::default();
        topic.name = Some(topic_name(name));
        topic.partitions = leaders
            .iter()
            .enumerate()
            .map(|(index, &(leader, code))| {
                let mut partition = MetadataResponsePartition::default();
                partition.partition_index = index as i32;
                partition.leader_id = BrokerId(leader);
                partition.error_code = code;
                partition
            })
            .collect();
        topic
    }

    fn bootstrap(list: &str) -> Vec<String> {
        parse_bootstrap(list).unwrap()
    }

    #[test]
    fn routing_table_maps_partitions_to_their_leaders_addresses() {
        // Proves partition → leader → host:port from a three-broker answer, with a leaderless partition, one led by
        // an unlisted broker, an IPv6 host, and a topic that failed.
        let mut response = MetadataResponse::default();
        response.brokers =
            vec![broker(1, "127.0.0.11", 9092), broker(2, "127.0.0.12", 9093), broker(3, "::1", 9094)];
        let mut failed = topic("gone", &[(1, 0)]);
        failed.error_code = error_code::UNKNOWN_TOPIC_OR_PARTITION;
        response.topics = vec![
            topic("t", &[(1, 0), (2, 0), (-1, error_code::LEADER_NOT_AVAILABLE), (3, 0), (7, 0), (2, 0)]),
            failed,
        ];
        let table = RoutingTable::from_metadata(&response, &bootstrap("seed:9092"));
        assert_eq!(table.broker_count(), 3);
        let route = |partition| {
            let leader = table.leader("t", partition);
            (leader, table.address(leader).map(str::to_owned))
        };
        assert_eq!(route(0), (1, Some("127.0.0.11:9092".to_owned())));
        assert_eq!(route(1), (2, Some("127.0.0.12:9093".to_owned())));
        assert_eq!(route(2), (NO_LEADER, None));
        assert_eq!(route(3), (3, Some("[::1]:9094".to_owned())));
        assert_eq!(route(4), (NO_LEADER, None), "leader 7 is not in the brokers list");
        assert_eq!(route(6), (NO_LEADER, None), "past the last partition");
        assert_eq!(table.leader("gone", 0), NO_LEADER);
        assert_eq!(table.leaderless("t", 6), vec![2, 4]);
        let groups = table.group_by_leader("t", &[0, 1, 2, 3, 5]);
        let expected: BTreeMap<NodeId, Vec<i32>> =
            [(NO_LEADER, vec![2]), (1, vec![0]), (2, vec![1, 5]), (3, vec![3])].into_iter().collect();
        assert_eq!(groups, expected);
    }

    #[test]
    fn cluster_of_one_routes_to_the_bootstrap_address() {
        // Proves a single broker reached through one bootstrap address is used there, whatever it advertises, so
        // today's single-broker runs connect exactly where they did; with two bootstrap addresses it is not.
        let mut response = MetadataResponse::default();
        response.brokers = vec![broker(0, "advertised.example", 19092)];
        response.topics = vec![topic("t", &[(0, 0), (0, 0)])];
        let table = RoutingTable::from_metadata(&response, &bootstrap("127.0.0.1:9092"));
        assert_eq!(table.address(table.leader("t", 1)), Some("127.0.0.1:9092"));
        let table = RoutingTable::from_metadata(&response, &bootstrap("127.0.0.1:9092,127.0.0.1:9093"));
        assert_eq!(table.address(table.leader("t", 1)), Some("advertised.example:19092"));
    }

    #[test]
    fn stale_metadata_errors_retry_a_bounded_number_of_times() {
        // Proves which error codes refresh and retry, that other errors fail at once, and that retries stop.
        let cases = [
            (0, 0, ErrorAction::Done),
            (error_code::NOT_LEADER_OR_FOLLOWER, 0, ErrorAction::RetryAfterRefresh),
            (error_code::LEADER_NOT_AVAILABLE, 3, ErrorAction::RetryAfterRefresh),
            (error_code::UNKNOWN_TOPIC_OR_PARTITION, 0, ErrorAction::RetryAfterRefresh),
            (error_code::FENCED_LEADER_EPOCH, RETRY_COUNT_MAX - 1, ErrorAction::RetryAfterRefresh),
            (error_code::NOT_CONTROLLER, 0, ErrorAction::RetryAfterRefresh),
            (error_code::NOT_LEADER_OR_FOLLOWER, RETRY_COUNT_MAX, ErrorAction::Fail),
            (1, 0, ErrorAction::Fail),  // OFFSET_OUT_OF_RANGE: not a routing problem
            (10, 0, ErrorAction::Fail), // MESSAGE_TOO_LARGE
            (56, 0, ErrorAction::Fail), // KAFKA_STORAGE_ERROR
            (-1, 0, ErrorAction::Fail), // no answer for the partition
        ];
        for (code, attempts, expected) in cases {
            assert_eq!(error_action(code, attempts), expected, "code {code} after {attempts} attempts");
        }
    }

    #[test]
    fn refreshes_are_at_least_the_interval_apart() {
        // Proves the rate limit: the first refresh is always due, the next only once REFRESH_INTERVAL has passed.
        let start = Instant::now();
        assert!(refresh_due(None, start));
        assert!(!refresh_due(Some(start), start));
        assert!(!refresh_due(Some(start), start + REFRESH_INTERVAL - Duration::from_millis(1)));
        assert!(refresh_due(Some(start), start + REFRESH_INTERVAL));
        // A clock read before `last` (another thread refreshed meanwhile) is not due, and does not panic.
        assert!(!refresh_due(Some(start + Duration::from_secs(1)), start));
    }

    #[test]
    fn bootstrap_list_parses() {
        // Proves one address, a list with spaces, and IPv6 parse, and malformed entries are refused.
        assert_eq!(bootstrap("127.0.0.1:9092"), vec!["127.0.0.1:9092"]);
        assert_eq!(bootstrap("a:1, b:2,[::1]:3"), vec!["a:1", "b:2", "[::1]:3"]);
        for bad in ["", "host", "host:", ":9092", "a:1,,b:2", "host:99999"] {
            assert!(parse_bootstrap(bad).is_err(), "{bad:?}");
        }
    }
}
