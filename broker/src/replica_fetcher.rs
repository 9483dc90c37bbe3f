//! Cluster mode, the shard's side of replication: every installed image is applied to the partitions this shard
//! owns ([`Shard::apply_replication`]); a fetcher task per leader broker copies the partitions this shard follows
//! from it ([`Shard::fetch_from`]), in Kafka's protocol (Fetch v15 with the replica id and broker epoch, over one
//! connection per shard and leader); the replication driver ([`Shard::replication_driver`]) ticks every leader
//! (ISR shrink) and sends its AlterPartition requests to the controller.
//!
//! A fetcher whose leader refuses connections reports it to the controller (`BrokerUnreachable`), which probes and
//! fences a dead broker at once instead of after `broker.session.timeout.ms`: the fast path of a failover.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{
    ApiKey, BrokerId, FetchRequest, FetchResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use sluice_replication::metadata::BrokerEpoch;
use sluice_replication::partition::{
    AlterPartitionError, FetchAnswer, FetchError, FetchRequest as ReplicaFetch, ReplicationConfig,
};
use sluice_replication::{NodeId, Visibility};
use sluice_storage::Offset;

use crate::cluster::topic_table::{TopicSettings, TopicTable};
use crate::config::FlushPolicy;
use crate::controller::wire::{ControlRequest, ControlResponse};
use crate::controller::Cluster;
use crate::errors::ResponseError;
use crate::shard::{OwnedPartition, Shard};

/// Fetch v15: the first with `ReplicaState` (replica id and broker epoch, KIP-903) and topic ids.
const FETCH_VERSION: i16 = 15;
/// How long a follower's Fetch may wait at the leader for new data (Kafka's `replica.fetch.wait.max.ms`).
const FETCH_WAIT: Duration = Duration::from_millis(500);
/// Per partition and per response (Kafka's `replica.fetch.max.bytes` and `replica.fetch.response.max.bytes`).
const FETCH_PARTITION_SIZE_MAX: i32 = 1 << 20;
const FETCH_RESPONSE_SIZE_MAX: i32 = 10 << 20;
/// A response frame larger than this is refused (the response limit plus one oversized first batch).
const FRAME_SIZE_MAX: usize = 128 << 20;
/// Connecting, and answering beyond the fetch's own wait.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// After a failed connection, before the next attempt.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// After a response that refused every partition (Kafka's `replica.fetch.backoff.ms` is 1 s; metadata here
/// arrives within milliseconds).
const ERROR_BACKOFF: Duration = Duration::from_millis(100);
/// While every followed partition waits (unsynced data, a fetch in flight elsewhere).
const IDLE_PAUSE: Duration = Duration::from_millis(5);
/// A fetcher with nothing to follow from its leader for this long ends.
const FETCHER_IDLE_END: Duration = Duration::from_secs(5);
/// How often a fetcher may report its leader unreachable.
const REPORT_INTERVAL: Duration = Duration::from_millis(500);
/// How often the replication driver ticks every leader.
const DRIVER_TICK: Duration = Duration::from_millis(100);
/// An AlterPartition unanswered for this long is sent again (with the same proposal number).
const ALTER_RESEND: Duration = Duration::from_secs(3);
const ALTER_TIMEOUT: Duration = Duration::from_secs(10);

/// The replication settings of a partition of `entry`'s topic.
pub fn replication_config(
    shard: &Shard,
    configs: &std::collections::BTreeMap<String, String>,
) -> ReplicationConfig {
    ReplicationConfig {
        replica_lag_time_max: shard.config.replica_lag_time_max,
        min_insync_replicas: TopicSettings::resolve(&shard.config, configs).min_insync_replicas,
        request_timeout: ALTER_RESEND,
        visibility: match shard.config.flush_policy {
            FlushPolicy::Fsync => Visibility::Durable,
            FlushPolicy::Interval => Visibility::Sequenced,
        },
        broken_rule: None,
    }
}

impl Shard {
    /// Applies `table`'s image to every partition this shard owns (roles, epochs, ISR), then starts a fetcher for
    /// every leader it now follows. Nothing is applied until the image holds this process's own registration.
    pub(crate) fn apply_replication(self: &Rc<Self>, table: &TopicTable) {
        let (Some(cluster), Some(view)) = (self.cluster.as_ref(), table.cluster.as_ref()) else { return };
        let me = NodeId(self.config.node_id);
        let image = &view.image;
        let registered =
            image.broker(me).is_some_and(|broker| broker.registration.incarnation == cluster.incarnation());
        if !registered {
            return;
        }
        for partition in self.partitions.all() {
            let key = partition.topic_partition();
            let Some(entry) = table.get(&key.topic) else { continue };
            let Some(topic) = image.topic_by_name(&key.topic) else { continue };
            let Some(state) =
                usize::try_from(key.partition).ok().and_then(|index| topic.partitions.get(index))
            else {
                continue;
            };
            partition.apply_metadata(me, state, image, replication_config(self, &entry.configs));
        }
        self.start_fetchers();
    }

    /// Starts a fetcher for each leader a partition here follows and none fetches from yet.
    fn start_fetchers(self: &Rc<Self>) {
        let leaders: std::collections::BTreeSet<NodeId> =
            self.partitions.all().iter().filter_map(|partition| partition.followed_leader()).collect();
        for leader in leaders {
            if self.fetchers.borrow_mut().insert(leader.0) {
                glommio::spawn_local(self.clone().fetch_from(leader)).detach();
            }
        }
    }

    /// One leader's fetcher: while partitions here follow `leader`, sends them in one Fetch, hands each answer to
    /// its partition (appends run concurrently, each returning once durable), and fetches again.
    async fn fetch_from(self: Rc<Self>, leader: NodeId) {
        log::debug!("shard {}: fetcher for leader {} started", self.id, leader.0);
        let mut connection: Option<TcpStream> = None;
        let mut correlation = 0i32;
        let mut idle_since: Option<Instant> = None;
        let mut reported_at: Option<Instant> = None;
        while !self.is_shutting_down() {
            let Some(wanted) = self.fetchable(leader) else {
                let since = *idle_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= FETCHER_IDLE_END {
                    break;
                }
                glommio::timer::sleep(Duration::from_millis(100)).await;
                continue;
            };
            idle_since = None;
            if wanted.is_empty() {
                glommio::timer::sleep(IDLE_PAUSE).await;
                continue;
            }
            let table = self.topics();
            let address = table
                .cluster
                .as_ref()
                .and_then(|view| view.brokers.get(&leader.0))
                .map(|broker| format!("{}:{}", broker.host, broker.port));
            let answered = match address {
                None => Err(std::io::Error::new(std::io::ErrorKind::NotFound, "leader not registered")),
                Some(address) => {
                    correlation = correlation.wrapping_add(1);
                    self.fetch_once(&mut connection, &address, &table, &wanted, correlation).await
                }
            };
            match answered {
                Ok(response) => {
                    if !self.apply_fetch_response(leader, &table, wanted, response).await {
                        // Every partition was refused (an epoch this broker's metadata has not caught up with,
                        // a leader that no longer leads): wait for metadata instead of asking again at once.
                        glommio::timer::sleep(ERROR_BACKOFF).await;
                    }
                }
                Err(error) => {
                    connection = None;
                    for (partition, _) in &wanted {
                        partition.abandon_fetch();
                    }
                    let refused = matches!(
                        error.kind(),
                        std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::ConnectionReset
                    );
                    if refused && reported_at.is_none_or(|at| at.elapsed() >= REPORT_INTERVAL) {
                        reported_at = Some(Instant::now());
                        self.report_unreachable(leader, &table);
                    }
                    log::debug!("shard {}: fetch from leader {}: {error}", self.id, leader.0);
                    glommio::timer::sleep(RETRY_PAUSE).await;
                }
            }
        }
        self.fetchers.borrow_mut().remove(&leader.0);
        log::debug!("shard {}: fetcher for leader {} ended", self.id, leader.0);
        // A partition may have started following this leader as the fetcher ended.
        if !self.is_shutting_down() {
            self.start_fetchers();
        }
    }

    /// The partitions here that follow `leader` and want a Fetch now; `None` when none follows it any more.
    fn fetchable(&self, leader: NodeId) -> Option<Vec<(Rc<OwnedPartition>, ReplicaFetch)>> {
        let followed: Vec<Rc<OwnedPartition>> = self
            .partitions
            .all()
            .into_iter()
            .filter(|partition| partition.followed_leader() == Some(leader))
            .collect();
        if followed.is_empty() {
            return None;
        }
        Some(
            followed
                .into_iter()
                .filter_map(|partition| partition.follower_fetch().map(|request| (partition, request)))
                .collect(),
        )
    }

    /// Sends one Fetch for `wanted` and reads its answer (connecting first if needed).
    async fn fetch_once(
        &self,
        connection: &mut Option<TcpStream>,
        address: &str,
        table: &TopicTable,
        wanted: &[(Rc<OwnedPartition>, ReplicaFetch)],
        correlation: i32,
    ) -> std::io::Result<FetchResponse> {
        if connection.is_none() {
            let stream =
                TcpStream::connect_timeout(address, CONNECT_TIMEOUT).await.map_err(std::io::Error::from)?;
            let _ = stream.set_nodelay(true);
            *connection = Some(stream);
        }
        let Some(stream) = connection.as_mut() else {
            return Err(std::io::Error::new(std::io::ErrorKind::NotConnected, "no connection"));
        };
        let frame = encode_fetch(self, table, wanted, correlation)?;
        let exchange = async {
            stream.write_all(&frame).await?;
            read_response(stream, correlation).await
        };
        let timeout = FETCH_WAIT + ANSWER_TIMEOUT;
        futures_lite::future::or(exchange, async {
            glommio::timer::sleep(timeout).await;
            Err(std::io::Error::new(std::io::ErrorKind::TimedOut, format!("no answer within {timeout:?}")))
        })
        .await
    }

    /// Hands each partition its answer; appends and truncations run concurrently and are awaited together.
    /// False when every partition was refused with an error.
    async fn apply_fetch_response(
        &self,
        leader: NodeId,
        table: &TopicTable,
        wanted: Vec<(Rc<OwnedPartition>, ReplicaFetch)>,
        response: FetchResponse,
    ) -> bool {
        let mut answers: BTreeMap<(String, i32), (FetchAnswer, Option<Bytes>, Offset)> = BTreeMap::new();
        for topic in response.responses {
            let Some(entry) = table.find_by_id(topic.topic_id.as_bytes()) else { continue };
            for partition in topic.partitions {
                let answer = if partition.error_code != 0 {
                    FetchAnswer::Error(fetch_error(partition.error_code))
                } else if partition.diverging_epoch.epoch >= 0 {
                    FetchAnswer::Diverging {
                        epoch: sluice_replication::LeaderEpoch(partition.diverging_epoch.epoch),
                        end_offset: Offset(partition.diverging_epoch.end_offset),
                    }
                } else {
                    FetchAnswer::Records {
                        from: Offset(-1),
                        high_watermark: Offset(partition.high_watermark),
                    }
                };
                answers.insert(
                    (entry.name.clone(), partition.partition_index),
                    (answer, partition.records, Offset(partition.log_start_offset)),
                );
            }
        }
        let any_answered = answers.values().any(|(answer, _, _)| !matches!(answer, FetchAnswer::Error(_)));
        let mut tasks = Vec::with_capacity(wanted.len());
        for (partition, request) in wanted {
            let key = partition.topic_partition().clone();
            let Some((answer, records, log_start)) = answers.remove(&(key.topic.to_string(), key.partition))
            else {
                partition.abandon_fetch();
                continue;
            };
            let answer = match answer {
                FetchAnswer::Records { high_watermark, .. } => {
                    FetchAnswer::Records { from: request.fetch_offset, high_watermark }
                }
                other => other,
            };
            tasks.push(glommio::spawn_local(async move {
                if let Err(error) = partition.on_fetch_answer(leader, &request, answer, records).await {
                    log::warn!("{key}: replicating from leader {}: {error:?}", leader.0);
                    partition.abandon_fetch();
                    return;
                }
                partition.follow_log_start(log_start).await;
            }));
        }
        for task in tasks {
            task.await;
        }
        any_answered
    }

    /// Tells the controller that `leader` refused a connection (it probes and fences a dead broker).
    fn report_unreachable(&self, leader: NodeId, table: &TopicTable) {
        let Some(cluster) = self.cluster.clone() else { return };
        let Some(broker) = table.cluster.as_ref().and_then(|view| view.image.broker(leader).cloned()) else {
            return;
        };
        if broker.fenced {
            return;
        }
        let request = ControlRequest::BrokerUnreachable {
            reporter: NodeId(self.config.node_id),
            broker: leader,
            broker_epoch: broker.epoch,
        };
        log::info!("leader {} refuses connections: reported to the controller", leader.0);
        glommio::spawn_local(async move {
            if let Err(error) = cluster.call(request, Duration::from_secs(2)).await {
                log::debug!("reporting broker {} unreachable: {error}", leader.0);
            }
        })
        .detach();
    }

    /// Every shard in cluster mode, for the life of the broker: ticks the partitions it leads (ISR shrink after
    /// `replica.lag.time.max.ms`) and sends their AlterPartition requests, one at a time.
    pub async fn replication_driver(self: Rc<Self>, cluster: Arc<Cluster>) {
        while !self.is_shutting_down() {
            futures_lite::future::or(self.shutdown.notified(), glommio::timer::sleep(DRIVER_TICK)).await;
            for partition in self.partitions.all() {
                if self.is_shutting_down() {
                    return;
                }
                let Some(request) = partition.replication_tick() else { continue };
                let key = partition.topic_partition().clone();
                let table = self.topics();
                let Some(topic_id) = table
                    .cluster
                    .as_ref()
                    .and_then(|view| view.image.topic_by_name(&key.topic))
                    .map(|t| t.id)
                else {
                    continue;
                };
                log::info!(
                    "{key}: proposing ISR {:?} (partition epoch {})",
                    request.isr,
                    request.partition_epoch
                );
                let call = ControlRequest::AlterPartition { topic_id, partition: key.partition, request };
                let ControlRequest::AlterPartition { request, .. } = &call else { continue };
                let request = request.clone();
                match cluster.call(call, ALTER_TIMEOUT).await {
                    Ok(ControlResponse::Done { .. }) => {}
                    Ok(ControlResponse::Error { code, message }) => {
                        log::warn!("{key}: AlterPartition refused ({code}): {message}");
                        partition.on_alter_partition_answer(&request, Err(&alter_error(code, &request)));
                    }
                    Ok(other) => log::warn!("{key}: AlterPartition: unexpected answer {other:?}"),
                    Err(error) => log::warn!("{key}: AlterPartition: {error}"),
                }
                glommio::yield_if_needed().await;
            }
        }
    }
}

/// Kafka's code as the sans-I/O core's refusal.
fn alter_error(
    code: i16,
    request: &sluice_replication::partition::AlterPartitionRequest,
) -> AlterPartitionError {
    match ResponseError::try_from_code(code) {
        Some(ResponseError::UnknownTopicOrPartition) => AlterPartitionError::UnknownTopicOrPartition,
        Some(ResponseError::StaleBrokerEpoch) => AlterPartitionError::StaleBrokerEpoch,
        Some(ResponseError::FencedLeaderEpoch) => AlterPartitionError::FencedLeaderEpoch,
        Some(ResponseError::IneligibleReplica) => AlterPartitionError::IneligibleReplica {
            replica: request.isr.last().copied().unwrap_or(NodeId::NONE),
        },
        Some(ResponseError::InvalidRequest) => AlterPartitionError::InvalidRequest,
        // Anything else proves nothing about whether it was applied: metadata settles it.
        _ => AlterPartitionError::InvalidUpdateVersion,
    }
}

fn fetch_error(code: i16) -> FetchError {
    match ResponseError::try_from_code(code) {
        Some(ResponseError::FencedLeaderEpoch) => FetchError::FencedLeaderEpoch,
        Some(ResponseError::UnknownLeaderEpoch) => FetchError::UnknownLeaderEpoch,
        Some(ResponseError::OffsetOutOfRange) => FetchError::OffsetOutOfRange,
        _ => FetchError::NotLeaderOrFollower,
    }
}

/// The Fetch frame (size prefix, header, body) for `wanted`, topics named by id.
fn encode_fetch(
    shard: &Shard,
    table: &TopicTable,
    wanted: &[(Rc<OwnedPartition>, ReplicaFetch)],
    correlation: i32,
) -> std::io::Result<Bytes> {
    let invalid = |error: String| std::io::Error::new(std::io::ErrorKind::InvalidData, error);
    let mut topics: Vec<FetchTopic> = Vec::new();
    for (partition, request) in wanted {
        let key = partition.topic_partition();
        let Some(entry) = table.get(&key.topic) else { continue };
        let topic_id = uuid::Uuid::from_bytes(entry.topic_uuid());
        let mut fetch = FetchPartition::default();
        fetch.partition = key.partition;
        fetch.current_leader_epoch = request.current_leader_epoch.0;
        fetch.fetch_offset = request.fetch_offset.0;
        fetch.last_fetched_epoch = request.last_fetched_epoch.0;
        fetch.log_start_offset = -1;
        fetch.partition_max_bytes = FETCH_PARTITION_SIZE_MAX;
        match topics.iter_mut().find(|topic| topic.topic_id == topic_id) {
            Some(topic) => topic.partitions.push(fetch),
            None => {
                let mut topic = FetchTopic::default();
                topic.topic_id = topic_id;
                topic.partitions.push(fetch);
                topics.push(topic);
            }
        }
    }
    let broker_epoch = wanted.first().map_or(BrokerEpoch(0), |(_, request)| request.replica_epoch);
    let mut body = FetchRequest::default();
    body.replica_state.replica_id = BrokerId(shard.config.node_id);
    body.replica_state.replica_epoch = i64::try_from(broker_epoch.0).unwrap_or(i64::MAX);
    body.max_wait_ms = FETCH_WAIT.as_millis() as i32;
    body.min_bytes = 1;
    body.max_bytes = FETCH_RESPONSE_SIZE_MAX;
    body.session_id = 0;
    body.session_epoch = -1;
    body.topics = topics;
    let mut header = RequestHeader::default();
    header.request_api_key = ApiKey::Fetch as i16;
    header.request_api_version = FETCH_VERSION;
    header.correlation_id = correlation;
    header.client_id = Some(StrBytes::from_string(format!("sluice-replica-{}", shard.config.node_id)));
    let header_version = ApiKey::Fetch.request_header_version(FETCH_VERSION);
    let size = header.compute_size(header_version).map_err(|error| invalid(error.to_string()))?
        + body.compute_size(FETCH_VERSION).map_err(|error| invalid(error.to_string()))?;
    let mut frame = BytesMut::with_capacity(size + 4);
    frame.put_i32(size as i32);
    header.encode(&mut frame, header_version).map_err(|error| invalid(error.to_string()))?;
    body.encode(&mut frame, FETCH_VERSION).map_err(|error| invalid(error.to_string()))?;
    Ok(frame.freeze())
}

async fn read_response(stream: &mut TcpStream, correlation: i32) -> std::io::Result<FetchResponse> {
    let invalid = |error: String| std::io::Error::new(std::io::ErrorKind::InvalidData, error);
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).await?;
    let size =
        usize::try_from(i32::from_be_bytes(size)).map_err(|_| invalid("negative frame size".into()))?;
    if size > FRAME_SIZE_MAX {
        return Err(invalid(format!("a fetch response of {size} bytes")));
    }
    let mut frame = BytesMut::zeroed(size);
    stream.read_exact(&mut frame).await?;
    let mut frame = frame.freeze();
    let header_version = ApiKey::Fetch.response_header_version(FETCH_VERSION);
    let header =
        ResponseHeader::decode(&mut frame, header_version).map_err(|error| invalid(error.to_string()))?;
    if header.correlation_id != correlation {
        return Err(invalid(format!("answer {} to request {correlation}", header.correlation_id)));
    }
    FetchResponse::decode(&mut frame, FETCH_VERSION).map_err(|error| invalid(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_codes_map_to_alter_partition_refusals() {
        let request = sluice_replication::partition::AlterPartitionRequest {
            sequence: 1,
            leader: NodeId(1),
            broker_epoch: BrokerEpoch(3),
            leader_epoch: sluice_replication::LeaderEpoch(2),
            partition_epoch: 4,
            isr: vec![NodeId(1), NodeId(2)],
        };
        let code = |error: ResponseError| error.code();
        assert_eq!(
            alter_error(code(ResponseError::StaleBrokerEpoch), &request),
            AlterPartitionError::StaleBrokerEpoch
        );
        assert_eq!(
            alter_error(code(ResponseError::IneligibleReplica), &request),
            AlterPartitionError::IneligibleReplica { replica: NodeId(2) }
        );
        assert_eq!(
            alter_error(code(ResponseError::InvalidRequest), &request),
            AlterPartitionError::InvalidRequest
        );
        // A timeout or an unknown code proves nothing: the pending change waits for metadata.
        assert_eq!(
            alter_error(code(ResponseError::RequestTimedOut), &request),
            AlterPartitionError::InvalidUpdateVersion
        );
        assert_eq!(fetch_error(code(ResponseError::FencedLeaderEpoch)), FetchError::FencedLeaderEpoch);
        assert_eq!(fetch_error(code(ResponseError::UnknownServerError)), FetchError::NotLeaderOrFollower);
    }
}
