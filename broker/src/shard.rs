//! `Shard`: the per-core state. One lives on each executor (as `Rc`); it holds this shard's copy of the topic
//! table, the partitions it owns, both halves of the channel mesh and the shutdown signal. Created by
//! [`crate::server`] once the mesh is joined; stopped when the server's shutdown flag is raised.
//!
//! Routing lives here: [`Shard::partition_call`] runs a partition operation on the owning shard, locally or over
//! the mesh, and [`Shard::admin`] sends topic changes to shard 0, the single writer of the topic table.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use glommio::channels::channel_mesh::{Receivers, Senders};
use glommio::channels::shared_channel::ConnectedReceiver;

use crate::config::Config;
use crate::errors::{ErrorCode, KafkaError};
use crate::group::{GroupCoordinator, GroupReply, OFFSETS_TOPIC};
use crate::mesh::{Envelope, ShardReply, ShardRequest, TopicChange};
use crate::partition::{Partition, PartitionManager, PartitionOp, PartitionResult};
use crate::placement::shard_for;
use crate::producer_ids::ProducerIdAllocator;
use crate::sync::{oneshot, Notify, OneshotReceiver, OneshotSender};
use crate::topics::{
    validate_topic_configs, validate_topic_name, TopicEntry, TopicTable, PARTITION_COUNT_MAX,
};

pub type RequestMesh = (Senders<Envelope<ShardRequest>>, Receivers<Envelope<ShardRequest>>);
/// One result per topic change, in request order.
pub type AdminResults = Vec<Result<(), KafkaError>>;
pub type ReplyMesh = (Senders<Envelope<ShardReply>>, Receivers<Envelope<ShardReply>>);

pub struct Shard {
    pub id: usize,
    pub count: usize,
    pub config: Arc<Config>,
    topics: RefCell<Arc<TopicTable>>,
    pub partitions: PartitionManager,
    request_senders: Senders<Envelope<ShardRequest>>,
    reply_senders: Senders<Envelope<ShardReply>>,
    pending: RefCell<HashMap<u64, OneshotSender<ShardReply>>>,
    next_request_id: Cell<u64>,
    /// Serialises topic changes on shard 0.
    admin_lock: glommio::sync::Semaphore,
    shutdown_requested: Cell<bool>,
    pub shutdown: Notify,
    connection_count: Cell<usize>,
    pub connections_changed: Notify,
    /// Shard 0 only: opened on first use.
    producer_ids: RefCell<Option<ProducerIdAllocator>>,
    /// The consumer groups this shard coordinates.
    pub groups: GroupCoordinator,
}

impl Shard {
    pub fn new(
        config: Arc<Config>,
        table: Arc<TopicTable>,
        partitions: PartitionManager,
        request_senders: Senders<Envelope<ShardRequest>>,
        reply_senders: Senders<Envelope<ShardReply>>,
    ) -> Shard {
        Shard {
            id: request_senders.peer_id(),
            count: request_senders.nr_consumers(),
            config,
            topics: RefCell::new(table),
            partitions,
            request_senders,
            reply_senders,
            pending: RefCell::new(HashMap::new()),
            next_request_id: Cell::new(1),
            admin_lock: glommio::sync::Semaphore::new(1),
            shutdown_requested: Cell::new(false),
            shutdown: Notify::default(),
            connection_count: Cell::new(0),
            connections_changed: Notify::default(),
            producer_ids: RefCell::new(None),
            groups: GroupCoordinator::default(),
        }
    }

    pub fn topics(&self) -> Arc<TopicTable> {
        self.topics.borrow().clone()
    }

    pub fn owner(&self, topic: &str, partition: i32) -> usize {
        shard_for(topic, partition, self.count)
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutdown_requested.get()
    }

    pub fn request_shutdown(&self) {
        self.shutdown_requested.set(true);
        self.shutdown.notify_all();
    }

    pub fn connection_opened(&self) {
        self.connection_count.set(self.connection_count.get() + 1);
    }

    pub fn connection_closed(&self) {
        self.connection_count.set(self.connection_count.get().saturating_sub(1));
        self.connections_changed.notify_all();
    }

    pub fn connection_count(&self) -> usize {
        self.connection_count.get()
    }

    /// Starts serving the mesh: one task per peer for requests and one for replies.
    pub fn serve_mesh(
        self: &Rc<Self>,
        mut request_receivers: Receivers<Envelope<ShardRequest>>,
        mut reply_receivers: Receivers<Envelope<ShardReply>>,
        queue: glommio::TaskQueueHandle,
    ) {
        for (_, receiver) in request_receivers.streams() {
            let shard = self.clone();
            let _ = glommio::spawn_local_into(shard.serve_peer_requests(receiver), queue)
                .map(|task| task.detach());
        }
        for (_, receiver) in reply_receivers.streams() {
            let shard = self.clone();
            let _ = glommio::spawn_local_into(shard.serve_peer_replies(receiver), queue)
                .map(|task| task.detach());
        }
    }

    async fn serve_peer_requests(self: Rc<Self>, receiver: ConnectedReceiver<Envelope<ShardRequest>>) {
        while let Some(envelope) = receiver.recv().await {
            let Envelope { id, from, body } = envelope;
            match body {
                // Appends are sequenced here, in channel order, before the next message from this peer is taken:
                // that keeps a connection's pipelined produce requests in the order it sent them.
                ShardRequest::Partition { topic, partition, op: PartitionOp::Append { records, acks } } => {
                    let result = match self.partitions.get(&topic, partition) {
                        None => Err(KafkaError::new(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION)),
                        Some(owned) => owned.append(records).await.map(|info| (owned, info)),
                    };
                    let shard = self.clone();
                    glommio::spawn_local(async move {
                        let reply = match result {
                            Ok((owned, info)) => owned.acknowledge(info, acks).await,
                            Err(error) => Err(error),
                        };
                        shard.reply(from, id, ShardReply::Partition(reply)).await;
                    })
                    .detach();
                }
                other => {
                    let shard = self.clone();
                    glommio::spawn_local(async move {
                        let reply = shard.serve(other).await;
                        shard.reply(from, id, reply).await;
                    })
                    .detach();
                }
            }
            glommio::yield_if_needed().await;
        }
    }

    async fn reply(&self, to: usize, id: u64, body: ShardReply) {
        if self.reply_senders.send_to(to, Envelope { id, from: self.id, body }).await.is_err() {
            log::warn!("shard {}: reply to shard {to} dropped (mesh closed)", self.id);
        }
    }

    async fn serve_peer_replies(self: Rc<Self>, receiver: ConnectedReceiver<Envelope<ShardReply>>) {
        while let Some(envelope) = receiver.recv().await {
            let waiter = self.pending.borrow_mut().remove(&envelope.id);
            // A missing waiter gave up (its request was cancelled); the reply is dropped.
            if let Some(waiter) = waiter {
                let _ = waiter.send(envelope.body);
            }
            glommio::yield_if_needed().await;
        }
    }

    /// Serves a request on this shard (from a peer or from a local caller).
    async fn serve(self: &Rc<Self>, request: ShardRequest) -> ShardReply {
        match request {
            ShardRequest::Partition { topic, partition, op } => {
                ShardReply::Partition(self.partition_local(&topic, partition, op).await)
            }
            ShardRequest::WaitForData { partitions, timeout } => {
                self.wait_for_data(&partitions, timeout).await;
                ShardReply::DataArrived
            }
            ShardRequest::Admin { changes, validate_only } => {
                // Boxed: admin_local calls every shard (this one included) through `call`, which leads back here.
                let admin: Pin<Box<dyn Future<Output = AdminResults> + '_>> =
                    Box::pin(self.admin_local(changes, validate_only));
                ShardReply::Admin(admin.await)
            }
            ShardRequest::ApplyTopics(table) => ShardReply::Applied(self.apply_topics(table).await),
            ShardRequest::AllocateProducerId => ShardReply::ProducerId(self.allocate_producer_id_local()),
            ShardRequest::Group(request) => {
                // Boxed for the same reason as admin: a group call may create __consumer_offsets.
                let serve: Pin<Box<dyn Future<Output = GroupReply> + '_>> =
                    Box::pin(self.groups.serve(self, request));
                ShardReply::Group(serve.await)
            }
        }
    }

    async fn partition_local(&self, topic: &str, partition: i32, op: PartitionOp) -> PartitionResult {
        match self.partitions.get(topic, partition) {
            None => Err(KafkaError::new(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION)),
            Some(owned) => match op {
                PartitionOp::Append { records, acks } => {
                    let info = owned.append(records).await?;
                    owned.acknowledge(info, acks).await
                }
                op => owned.execute(op).await,
            },
        }
    }

    /// Sends `request` to shard `target` and returns, once it is queued, the future of its reply.
    pub async fn send(
        self: &Rc<Self>,
        target: usize,
        request: ShardRequest,
    ) -> Result<OneshotReceiver<ShardReply>, KafkaError> {
        assert_ne!(target, self.id, "local requests do not cross the mesh");
        let id = self.next_request_id.get();
        self.next_request_id.set(id + 1);
        let (sender, receiver) = oneshot();
        self.pending.borrow_mut().insert(id, sender);
        if self.request_senders.send_to(target, Envelope { id, from: self.id, body: request }).await.is_err()
        {
            self.pending.borrow_mut().remove(&id);
            return Err(KafkaError::with_message(ErrorCode::NOT_LEADER_OR_FOLLOWER, "shard mesh is closed"));
        }
        Ok(receiver)
    }

    /// Runs `request` on shard `target` and waits for its reply.
    pub async fn call(
        self: &Rc<Self>,
        target: usize,
        request: ShardRequest,
    ) -> Result<ShardReply, KafkaError> {
        if target == self.id {
            return match request {
                // Reads and waits may stop with their caller.
                request @ (ShardRequest::Partition { .. } | ShardRequest::WaitForData { .. }) => {
                    Ok(self.serve(request).await)
                }
                // Topic changes, producer ids and group operations change shared state: they run in their own task,
                // so a caller dropped half-way (its client vanished) cannot stop them half-done, just as a request
                // served for another shard runs to its end.
                request => {
                    let shard = self.clone();
                    glommio::spawn_local(async move { shard.serve(request).await }).detach().await.ok_or_else(
                        || {
                            KafkaError::with_message(
                                ErrorCode::UNKNOWN_SERVER_ERROR,
                                "shard task ended early",
                            )
                        },
                    )
                }
            };
        }
        let receiver = self.send(target, request).await?;
        receiver.await.ok_or_else(|| {
            KafkaError::with_message(ErrorCode::NOT_LEADER_OR_FOLLOWER, "owning shard went away")
        })
    }

    /// Runs a partition operation on the partition's owner.
    pub async fn partition_call(
        self: &Rc<Self>,
        topic: &str,
        partition: i32,
        op: PartitionOp,
    ) -> PartitionResult {
        let owner = self.owner(topic, partition);
        if owner == self.id {
            return self.partition_local(topic, partition, op).await;
        }
        let request = ShardRequest::Partition { topic: topic.to_string(), partition, op };
        match self.call(owner, request).await? {
            ShardReply::Partition(result) => result,
            other => Err(unexpected_reply(&other)),
        }
    }

    /// Local half of long polling: returns when any listed partition has data past its offset, or at `timeout`.
    pub async fn wait_for_data(&self, partitions: &[(String, i32, i64)], timeout: Duration) {
        let owned: Vec<(Rc<Partition>, i64)> = partitions
            .iter()
            .filter_map(|(topic, index, offset)| {
                self.partitions.get(topic, *index).map(|owned| (owned, *offset))
            })
            .collect();
        if owned.len() < partitions.len()
            || owned.iter().any(|(partition, offset)| partition.log.high_watermark().0 > *offset)
        {
            return;
        }
        let mut waits: Vec<_> =
            owned.iter().map(|(partition, _)| partition.data_arrived.notified()).collect();
        let any_arrived = std::future::poll_fn(|context| {
            for wait in waits.iter_mut() {
                if Pin::new(wait).poll(context).is_ready() {
                    return Poll::Ready(());
                }
            }
            Poll::Pending
        });
        let shutdown = self.shutdown.notified();
        futures_lite::future::or(futures_lite::future::or(any_arrived, shutdown), async {
            glommio::timer::sleep(timeout).await;
        })
        .await;
    }

    /// Sends topic changes to shard 0 and returns one result per change.
    pub async fn admin(
        self: &Rc<Self>,
        changes: Vec<TopicChange>,
        validate_only: bool,
    ) -> Vec<Result<(), KafkaError>> {
        let count = changes.len();
        match self.call(0, ShardRequest::Admin { changes, validate_only }).await {
            Ok(ShardReply::Admin(results)) if results.len() == count => results,
            Ok(other) => vec![Err(unexpected_reply(&other)); count],
            Err(error) => vec![Err(error); count],
        }
    }

    /// Shard 0: applies changes to a copy of the table, persists it, hands it to every shard, then answers.
    async fn admin_local(
        self: &Rc<Self>,
        changes: Vec<TopicChange>,
        validate_only: bool,
    ) -> Vec<Result<(), KafkaError>> {
        assert_eq!(self.id, 0, "only shard 0 writes the topic table");
        let Ok(_permit) = self.admin_lock.acquire_permit(1).await else {
            return vec![Err(KafkaError::new(ErrorCode::UNKNOWN_SERVER_ERROR)); changes.len()];
        };
        let mut table = (*self.topics()).clone();
        let results: Vec<Result<(), KafkaError>> =
            changes.into_iter().map(|change| apply_change(&self.config, &mut table, change)).collect();
        if validate_only || results.iter().all(|result| result.is_err()) {
            return results;
        }
        table.version += 1;
        if let Err(error) = table.save(&self.config.data_dir) {
            log::error!("{error}");
            let failure = KafkaError::with_message(ErrorCode::KAFKA_STORAGE_ERROR, error);
            return results.into_iter().map(|result| result.and(Err(failure.clone()))).collect();
        }
        let table = Arc::new(table);
        let mut failures = Vec::new();
        for target in 0..self.count {
            match self.call(target, ShardRequest::ApplyTopics(table.clone())).await {
                Ok(ShardReply::Applied(Ok(()))) => {}
                Ok(ShardReply::Applied(Err(error))) => failures.push(error),
                Ok(other) => failures.push(format!("{:?}", unexpected_reply(&other))),
                Err(error) => failures.push(format!("{error:?}")),
            }
        }
        if let Some(error) = failures.first() {
            log::error!("applying topic table version {}: {error}", table.version);
            let failure = KafkaError::with_message(ErrorCode::KAFKA_STORAGE_ERROR, error.clone());
            return results.into_iter().map(|result| result.and(Err(failure.clone()))).collect();
        }
        results
    }

    /// A producer id unique for the life of the data directory, from shard 0's allocator.
    pub async fn allocate_producer_id(self: &Rc<Self>) -> Result<i64, KafkaError> {
        match self.call(0, ShardRequest::AllocateProducerId).await? {
            ShardReply::ProducerId(result) => result,
            other => Err(unexpected_reply(&other)),
        }
    }

    fn allocate_producer_id_local(&self) -> Result<i64, KafkaError> {
        assert_eq!(self.id, 0, "only shard 0 allocates producer ids");
        let storage_error = |error: String| {
            log::error!("{error}");
            KafkaError::with_message(ErrorCode::KAFKA_STORAGE_ERROR, error)
        };
        let mut allocator = self.producer_ids.borrow_mut();
        if allocator.is_none() {
            *allocator = Some(ProducerIdAllocator::open(&self.config.data_dir).map_err(storage_error)?);
        }
        match allocator.as_ref() {
            Some(allocator) => allocator.allocate().map_err(storage_error),
            None => Err(KafkaError::new(ErrorCode::UNKNOWN_SERVER_ERROR)),
        }
    }

    /// Installs a newer table and opens or removes this shard's logs to match.
    pub async fn apply_topics(&self, table: Arc<TopicTable>) -> Result<(), String> {
        if table.version < self.topics().version {
            return Ok(());
        }
        *self.topics.borrow_mut() = table.clone();
        self.partitions.apply(&table).await
    }
}

fn unexpected_reply(reply: &ShardReply) -> KafkaError {
    KafkaError::with_message(ErrorCode::UNKNOWN_SERVER_ERROR, format!("unexpected shard reply {reply:?}"))
}

/// Applies one change to `table`, or says why not with Kafka's error code.
fn apply_change(config: &Config, table: &mut TopicTable, change: TopicChange) -> Result<(), KafkaError> {
    match change {
        TopicChange::Create { name, partition_count, replication_factor, configs } => {
            validate_topic_name(&name)
                .map_err(|error| KafkaError::with_message(ErrorCode::INVALID_TOPIC_EXCEPTION, error))?;
            if table.get(&name).is_some() {
                return Err(KafkaError::with_message(
                    ErrorCode::TOPIC_ALREADY_EXISTS,
                    format!("topic \"{name}\" already exists"),
                ));
            }
            let partition_count =
                if partition_count == -1 { config.partition_count_default } else { partition_count };
            if !(1..=PARTITION_COUNT_MAX).contains(&partition_count) {
                return Err(KafkaError::with_message(
                    ErrorCode::INVALID_PARTITIONS,
                    format!("partition count {partition_count} is outside 1..={PARTITION_COUNT_MAX}"),
                ));
            }
            if replication_factor != -1 && replication_factor != 1 {
                return Err(KafkaError::with_message(
                    ErrorCode::INVALID_REPLICATION_FACTOR,
                    format!("replication factor {replication_factor}: this cluster has one broker"),
                ));
            }
            validate_topic_configs(&configs)
                .map_err(|error| KafkaError::with_message(ErrorCode::INVALID_CONFIG, error))?;
            table.topics.insert(name.clone(), TopicEntry::new(&name, partition_count, configs));
            Ok(())
        }
        TopicChange::Delete { name } | TopicChange::AddPartitions { name, .. } if name == OFFSETS_TOPIC => {
            Err(KafkaError::with_message(
                ErrorCode::INVALID_TOPIC_EXCEPTION,
                format!("{OFFSETS_TOPIC} is internal: its partitions place the consumer groups"),
            ))
        }
        TopicChange::Delete { name } => match table.topics.remove(&name) {
            Some(_) => Ok(()),
            None => Err(KafkaError::new(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION)),
        },
        TopicChange::AddPartitions { name, partition_count } => {
            let entry =
                table.topics.get_mut(&name).ok_or(KafkaError::new(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION))?;
            if partition_count <= entry.partition_count || partition_count > PARTITION_COUNT_MAX {
                return Err(KafkaError::with_message(
                    ErrorCode::INVALID_PARTITIONS,
                    format!(
                        "topic \"{name}\" has {} partitions; the new count {partition_count} must be larger and at most {PARTITION_COUNT_MAX}",
                        entry.partition_count
                    ),
                ));
            }
            entry.partition_count = partition_count;
            Ok(())
        }
        TopicChange::AlterConfigs { name, configs, replace } => {
            let entry =
                table.topics.get_mut(&name).ok_or(KafkaError::new(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION))?;
            let mut updated = if replace { Default::default() } else { entry.configs.clone() };
            for (key, value) in configs {
                match value {
                    Some(value) => {
                        updated.insert(key, value);
                    }
                    None => {
                        updated.remove(&key);
                    }
                }
            }
            validate_topic_configs(&updated)
                .map_err(|error| KafkaError::with_message(ErrorCode::INVALID_CONFIG, error))?;
            entry.configs = updated;
            Ok(())
        }
    }
}
