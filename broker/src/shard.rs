//! `Shard`: the per-core state and the routing between shards. One lives on each executor (as `Rc`); it holds
//! this shard's copy of the topic table, the partitions it owns ([`PartitionManager`]), the consumer groups it
//! coordinates, its end of the [`Mesh`] and the shutdown signal. Created by [`crate::server`] once the mesh is
//! joined; stopped when the server's shutdown flag is raised.
//!
//! Routing: [`Shard::produce`] and [`Shard::partition_call`] run a partition operation on the owning shard, locally
//! or over the mesh; [`Shard::admin`] sends topic changes to shard 0, the single writer of the topic table, which
//! commits each new table in two phases (every shard opens what it adds, then the table is saved and installed);
//! [`Shard::group_call`] reaches a group's coordinator. The messages are [`ShardRequest`] and [`ShardReply`].

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use sluice_replication::{Acks, ShardId, TopicPartition};
use sluice_storage::{DmaStorage, Offset};

use crate::cluster::partition::{Partition, PartitionOp, PartitionResult};
use crate::cluster::placement::shard_for;
use crate::cluster::topic_table::{self, apply_change, TopicChange, TopicTable};
use crate::cluster::PartitionManager;
use crate::config::Config;
use crate::controller::Cluster;
use crate::errors::{KafkaError, ResponseError};
use crate::group::{GroupCoordinator, GroupHost, GroupReply, GroupRequest};
use crate::mesh::{Mesh, MeshError, ReplyTo};
use crate::producer_ids::ProducerIdAllocator;
use crate::sync::Notify;

/// A partition served by this process: the storage is glommio's direct I/O.
pub type OwnedPartition = Partition<DmaStorage>;
/// One result per topic change, in request order.
pub type AdminResults = Vec<Result<(), KafkaError>>;
/// Phase two of a produce routed through the shard (see [`Shard::produce`]).
pub type Acknowledgement = Pin<Box<dyn Future<Output = PartitionResult>>>;

#[derive(Debug)]
pub enum ShardRequest {
    /// Served by the partition's owner, in the order received from each peer (see [`Shard::produce`]).
    Produce {
        topic_partition: TopicPartition,
        records: Bytes,
        acks: Acks,
    },
    Partition {
        topic_partition: TopicPartition,
        op: PartitionOp,
    },
    /// Fetch long polling: complete when any of these partitions' high watermark passes its offset, or after
    /// `timeout`. The owner is woken by appends, never by polling.
    WaitForData {
        partitions: Vec<(TopicPartition, Offset)>,
        timeout: Duration,
        /// A follower's fetch: wait for the log end to pass the offset, not the high watermark.
        replica: bool,
    },
    /// Topic changes; only shard 0 serves these.
    Admin {
        changes: Vec<TopicChange>,
        validate_only: bool,
    },
    /// Phase one of a topic change from shard 0: open the partitions the new table adds, without serving them;
    /// the reply says whether every one opened.
    PrepareTopics(Arc<TopicTable>),
    /// Phase two, once shard 0 has saved the table: install it (serve the prepared partitions, remove deleted ones).
    InstallTopics(Arc<TopicTable>),
    /// The change was not committed: close and remove the partitions phase one opened.
    DiscardTopics,
    /// A new producer id; only shard 0 serves these (it owns the allocator).
    AllocateProducerId,
    /// A consumer-group call, served by the shard that coordinates the group.
    Group(GroupRequest),
}

#[derive(Debug)]
pub enum ShardReply {
    Partition(PartitionResult),
    DataArrived,
    Admin(AdminResults),
    Applied(Result<(), String>),
    ProducerId(Result<i64, KafkaError>),
    Group(GroupReply),
}

pub struct Shard {
    pub id: ShardId,
    pub count: usize,
    pub config: Arc<Config>,
    topics: RefCell<Arc<TopicTable>>,
    pub partitions: PartitionManager<DmaStorage>,
    mesh: Rc<Mesh<ShardRequest, ShardReply>>,
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
    /// Cluster mode: this node's membership (`None` for a single-node broker).
    pub cluster: Option<Arc<Cluster>>,
    /// Woken whenever a newer topic table is installed on this shard.
    pub(crate) table_installed: Notify,
    /// Shard 0 in cluster mode: the rest of the producer-id block the controller gave, `[next, end)`.
    pub(crate) producer_id_block: Cell<(i64, i64)>,
    /// Cluster mode: the leaders a fetcher task of this shard copies from (see `replica_fetcher`).
    pub(crate) fetchers: RefCell<std::collections::BTreeSet<i32>>,
}

fn mesh_error(error: MeshError) -> KafkaError {
    match error {
        MeshError::Closed => {
            KafkaError::with_message(ResponseError::NotLeaderOrFollower, "shard mesh is closed")
        }
        MeshError::NoReply => {
            KafkaError::with_message(ResponseError::NotLeaderOrFollower, "owning shard went away")
        }
    }
}

fn unexpected_reply(reply: &ShardReply) -> KafkaError {
    KafkaError::with_message(ResponseError::UnknownServerError, format!("unexpected shard reply {reply:?}"))
}

fn unknown_partition() -> KafkaError {
    KafkaError::new(ResponseError::UnknownTopicOrPartition)
}

impl Shard {
    pub fn new(
        config: Arc<Config>,
        table: Arc<TopicTable>,
        partitions: PartitionManager<DmaStorage>,
        mesh: Rc<Mesh<ShardRequest, ShardReply>>,
        cluster: Option<Arc<Cluster>>,
    ) -> Shard {
        Shard {
            id: mesh.shard(),
            count: mesh.shard_count(),
            config,
            topics: RefCell::new(table),
            partitions,
            mesh,
            admin_lock: glommio::sync::Semaphore::new(1),
            shutdown_requested: Cell::new(false),
            shutdown: Notify::default(),
            connection_count: Cell::new(0),
            connections_changed: Notify::default(),
            producer_ids: RefCell::new(None),
            groups: GroupCoordinator::default(),
            cluster,
            table_installed: Notify::default(),
            producer_id_block: Cell::new((0, 0)),
            fetchers: RefCell::new(std::collections::BTreeSet::new()),
        }
    }

    /// Cluster mode: NOT_LEADER_OR_FOLLOWER when another broker (or none) leads the partition. Unknown partitions
    /// pass, to be answered as before.
    pub fn check_leader(&self, topic: &str, partition: i32) -> Result<(), KafkaError> {
        let table = self.topics();
        if table.cluster.is_none() {
            return Ok(());
        }
        match table.get(topic).and_then(|entry| entry.partition(partition)) {
            Some(assignment) if assignment.leader().0 != self.config.node_id => {
                Err(KafkaError::new(ResponseError::NotLeaderOrFollower))
            }
            _ => Ok(()),
        }
    }

    pub fn topics(&self) -> Arc<TopicTable> {
        self.topics.borrow().clone()
    }

    pub fn owner(&self, topic: &str, partition: i32) -> ShardId {
        ShardId(shard_for(topic, partition, self.count))
    }

    pub(crate) fn table_installed_notified(&self) -> crate::sync::Notified<'_> {
        self.table_installed.notified()
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

    /// Starts serving the mesh (see [`Mesh::serve`]).
    pub fn serve_mesh(
        self: &Rc<Self>,
        request_receivers: glommio::channels::channel_mesh::Receivers<crate::mesh::Envelope<ShardRequest>>,
        reply_receivers: glommio::channels::channel_mesh::Receivers<crate::mesh::Envelope<ShardReply>>,
        queue: glommio::TaskQueueHandle,
    ) {
        let shard = self.clone();
        self.mesh.serve(request_receivers, reply_receivers, queue, move |reply_to, request| {
            shard.clone().serve_peer_request(reply_to, request)
        });
    }

    async fn serve_peer_request(self: Rc<Self>, reply_to: ReplyTo, request: ShardRequest) {
        match request {
            // Sequenced here, in channel order, before the next message from this peer is taken: that keeps a
            // connection's pipelined produce requests in the order it sent them.
            ShardRequest::Produce { topic_partition, records, acks } => {
                let produced = match self.partitions.get(&topic_partition.topic, topic_partition.partition) {
                    None => Err(self.missing_partition(&topic_partition)),
                    Some(owned) => owned.produce(records, acks).await,
                };
                let shard = self.clone();
                glommio::spawn_local(async move {
                    let reply = match produced {
                        Ok(produced) => produced.acknowledged().await,
                        Err(error) => Err(error),
                    };
                    shard.mesh.reply(reply_to, ShardReply::Partition(reply)).await;
                })
                .detach();
            }
            other => {
                let shard = self.clone();
                glommio::spawn_local(async move {
                    let reply = shard.serve(other).await;
                    shard.mesh.reply(reply_to, reply).await;
                })
                .detach();
            }
        }
    }

    /// Serves a request on this shard (from a peer or from a local caller).
    async fn serve(self: &Rc<Self>, request: ShardRequest) -> ShardReply {
        match request {
            ShardRequest::Produce { topic_partition, records, acks } => {
                ShardReply::Partition(self.produce(&topic_partition, records, acks).await.await)
            }
            ShardRequest::Partition { topic_partition, op } => {
                ShardReply::Partition(self.partition_local(&topic_partition, op).await)
            }
            ShardRequest::WaitForData { partitions, timeout, replica } => {
                self.wait_for_data(&partitions, timeout, replica).await;
                ShardReply::DataArrived
            }
            ShardRequest::Admin { changes, validate_only } => {
                // Boxed: admin_local calls every shard (this one included) through `call`, which leads back here.
                let admin: Pin<Box<dyn Future<Output = AdminResults> + '_>> =
                    Box::pin(self.admin_local(changes, validate_only));
                ShardReply::Admin(admin.await)
            }
            ShardRequest::PrepareTopics(table) => ShardReply::Applied(self.partitions.prepare(&table).await),
            ShardRequest::InstallTopics(table) => {
                self.install_topics(table).await;
                ShardReply::Applied(Ok(()))
            }
            ShardRequest::DiscardTopics => {
                self.partitions.discard_prepared().await;
                ShardReply::Applied(Ok(()))
            }
            ShardRequest::AllocateProducerId => ShardReply::ProducerId(match self.cluster.clone() {
                Some(cluster) => self.allocate_producer_id_cluster(&cluster).await,
                None => self.allocate_producer_id_local(),
            }),
            ShardRequest::Group(request) => {
                // Boxed for the same reason as admin: a group call may create __consumer_offsets.
                let serve: Pin<Box<dyn Future<Output = GroupReply> + '_>> =
                    Box::pin(self.groups.serve(self, request));
                ShardReply::Group(serve.await)
            }
        }
    }

    async fn partition_local(&self, topic_partition: &TopicPartition, op: PartitionOp) -> PartitionResult {
        match self.partitions.get(&topic_partition.topic, topic_partition.partition) {
            None => Err(self.missing_partition(topic_partition)),
            Some(owned) => owned.execute(op).await,
        }
    }

    /// The answer for an owned partition that is not served: KAFKA_STORAGE_ERROR with the reason if it could not
    /// be opened, else UNKNOWN_TOPIC_OR_PARTITION.
    fn missing_partition(&self, topic_partition: &TopicPartition) -> KafkaError {
        match self.partitions.failure(topic_partition) {
            Some(reason) => KafkaError::with_message(ResponseError::KafkaStorageError, reason),
            None => unknown_partition(),
        }
    }

    /// Runs `request` on shard `target` and waits for its reply.
    pub async fn call(
        self: &Rc<Self>,
        target: ShardId,
        request: ShardRequest,
    ) -> Result<ShardReply, KafkaError> {
        if target != self.id {
            return self.mesh.call(target, request).await.map_err(mesh_error);
        }
        match request {
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
                    || KafkaError::with_message(ResponseError::UnknownServerError, "shard task ended early"),
                )
            }
        }
    }

    /// The one produce route. Phase one happens before this returns: on the owning shard the records are
    /// sequenced (offsets fixed); for another shard's partition the request is queued, in order, on the mesh
    /// (the owner sequences it in that order). The returned future is phase two, the acknowledgement.
    pub async fn produce(
        self: &Rc<Self>,
        topic_partition: &TopicPartition,
        records: Bytes,
        acks: Acks,
    ) -> Acknowledgement {
        let ready = |result: PartitionResult| -> Acknowledgement { Box::pin(std::future::ready(result)) };
        if let Err(error) = self.check_leader(&topic_partition.topic, topic_partition.partition) {
            return ready(Err(error));
        }
        let owner = self.owner(&topic_partition.topic, topic_partition.partition);
        if owner == self.id {
            return match self.partitions.get(&topic_partition.topic, topic_partition.partition) {
                None => ready(Err(self.missing_partition(topic_partition))),
                Some(owned) => match owned.produce(records, acks).await {
                    Ok(produced) => Box::pin(produced.acknowledged()),
                    Err(error) => ready(Err(error)),
                },
            };
        }
        let request = ShardRequest::Produce { topic_partition: topic_partition.clone(), records, acks };
        match self.mesh.send(owner, request).await {
            Ok(receiver) => Box::pin(async move {
                match receiver.await {
                    Some(ShardReply::Partition(result)) => result,
                    Some(other) => Err(unexpected_reply(&other)),
                    None => Err(mesh_error(MeshError::NoReply)),
                }
            }),
            Err(error) => ready(Err(mesh_error(error))),
        }
    }

    /// Runs a partition operation on the partition's owner.
    pub async fn partition_call(
        self: &Rc<Self>,
        topic: &str,
        partition: i32,
        op: PartitionOp,
    ) -> PartitionResult {
        // A follower's fetch is judged by the partition's own replication state (leader epoch, ISR).
        if !matches!(op, PartitionOp::ReplicaRead { .. }) {
            self.check_leader(topic, partition)?;
        }
        let topic_partition = TopicPartition::new(topic, partition);
        let owner = self.owner(topic, partition);
        if owner == self.id {
            return self.partition_local(&topic_partition, op).await;
        }
        match self.call(owner, ShardRequest::Partition { topic_partition, op }).await? {
            ShardReply::Partition(result) => result,
            other => Err(unexpected_reply(&other)),
        }
    }

    /// Local half of long polling: returns when any listed partition has data past its offset, or at `timeout`.
    pub async fn wait_for_data(
        &self,
        partitions: &[(TopicPartition, Offset)],
        timeout: Duration,
        replica: bool,
    ) {
        let owned: Vec<(Rc<OwnedPartition>, Offset)> = partitions
            .iter()
            .filter_map(|(key, offset)| {
                self.partitions.get(&key.topic, key.partition).map(|owned| (owned, *offset))
            })
            .collect();
        let past = |partition: &OwnedPartition, offset: Offset| {
            if replica {
                partition.log_end_offset() > offset
            } else {
                partition.high_watermark() > offset
            }
        };
        if owned.len() < partitions.len() || owned.iter().any(|(partition, offset)| past(partition, *offset))
        {
            return;
        }
        let mut waits: Vec<_> =
            owned
                .iter()
                .map(|(partition, _)| {
                    if replica {
                        partition.log_grew().notified()
                    } else {
                        partition.data_arrived().notified()
                    }
                })
                .collect();
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
    pub async fn admin(self: &Rc<Self>, changes: Vec<TopicChange>, validate_only: bool) -> AdminResults {
        let count = changes.len();
        match self.call(ShardId(0), ShardRequest::Admin { changes, validate_only }).await {
            Ok(ShardReply::Admin(results)) if results.len() == count => results,
            Ok(other) => vec![Err(unexpected_reply(&other)); count],
            Err(error) => vec![Err(error); count],
        }
    }

    /// Shard 0: applies changes to a copy of the table, commits it (see [`Shard::commit_topics`]), then answers.
    async fn admin_local(self: &Rc<Self>, changes: Vec<TopicChange>, validate_only: bool) -> AdminResults {
        assert_eq!(self.id, ShardId(0), "only shard 0 writes the topic table");
        let Ok(_permit) = self.admin_lock.acquire_permit(1).await else {
            return vec![Err(KafkaError::new(ResponseError::UnknownServerError)); changes.len()];
        };
        if let Some(cluster) = self.cluster.clone() {
            return self.admin_cluster(&cluster, changes, validate_only).await;
        }
        let node = sluice_replication::NodeId(self.config.node_id);
        let mut table = (*self.topics()).clone();
        let results: AdminResults = changes
            .into_iter()
            .map(|change| {
                apply_change(&self.config, node, &mut table, change)
                    .map_err(|error| topic_table::to_kafka_error(&error))
            })
            .collect();
        if validate_only || results.iter().all(|result| result.is_err()) {
            return results;
        }
        table.version += 1;
        if let Err(error) = self.commit_topics(Arc::new(table)).await {
            let failure = KafkaError::with_message(ResponseError::KafkaStorageError, error);
            return results.into_iter().map(|result| result.and(Err(failure.clone()))).collect();
        }
        results
    }

    /// Shard 0: commits a new table in two phases. Every shard first opens the partitions the table adds (not yet
    /// served); only when all did is the table saved — the commit point — and then installed on every shard. If
    /// any shard could not open its partitions (EMFILE, a file in the way), or the save failed, every shard closes
    /// and removes what it opened and the table is neither saved nor installed: a refused change leaves nothing
    /// behind, and the saved table only ever names partitions that opened. A crash between the phases leaves
    /// partition directories the saved table does not name; start-up removes them.
    async fn commit_topics(self: &Rc<Self>, table: Arc<TopicTable>) -> Result<(), String> {
        let prepared = self.call_every_shard(|| ShardRequest::PrepareTopics(table.clone())).await;
        let failure = match prepared {
            Err(error) => Some(error),
            Ok(()) => table.save(&self.config.data_dir).err(),
        };
        if let Some(error) = failure {
            log::error!("topic table version {} not committed: {error}", table.version);
            if let Err(discard) = self.call_every_shard(|| ShardRequest::DiscardTopics).await {
                log::error!("discarding the partitions of topic table version {}: {discard}", table.version);
            }
            return Err(error);
        }
        let installed = self.call_every_shard(|| ShardRequest::InstallTopics(table.clone())).await;
        installed.inspect_err(|error| {
            log::error!("installing topic table version {} (saved): {error}", table.version);
        })
    }

    /// Sends a request to every shard, this one included, one after another (each even after another failed);
    /// the first failure, if any.
    pub(crate) async fn call_every_shard(
        self: &Rc<Self>,
        request: impl Fn() -> ShardRequest,
    ) -> Result<(), String> {
        let mut first_failure = None;
        for target in 0..self.count {
            let failure = match self.call(ShardId(target), request()).await {
                Ok(ShardReply::Applied(Ok(()))) => continue,
                Ok(ShardReply::Applied(Err(error))) => error,
                Ok(other) => format!("{:?}", unexpected_reply(&other)),
                Err(error) => format!("{error:?}"),
            };
            first_failure.get_or_insert(format!("shard {target}: {failure}"));
        }
        first_failure.map_or(Ok(()), Err)
    }

    /// A producer id unique for the life of the data directory, from shard 0's allocator.
    pub async fn allocate_producer_id(self: &Rc<Self>) -> Result<i64, KafkaError> {
        match self.call(ShardId(0), ShardRequest::AllocateProducerId).await? {
            ShardReply::ProducerId(result) => result,
            other => Err(unexpected_reply(&other)),
        }
    }

    fn allocate_producer_id_local(&self) -> Result<i64, KafkaError> {
        assert_eq!(self.id, ShardId(0), "only shard 0 allocates producer ids");
        let storage_error = |error: String| {
            log::error!("{error}");
            KafkaError::with_message(ResponseError::KafkaStorageError, error)
        };
        let mut allocator = self.producer_ids.borrow_mut();
        if allocator.is_none() {
            *allocator = Some(ProducerIdAllocator::open(&self.config.data_dir).map_err(storage_error)?);
        }
        match allocator.as_ref() {
            Some(allocator) => allocator.allocate().map_err(storage_error),
            None => Err(KafkaError::new(ResponseError::UnknownServerError)),
        }
    }

    /// Phase two of a topic change: installs a newer table, serving the partitions phase one opened and removing
    /// the logs of deleted topics. The table is installed only once the partitions it names are open (or known
    /// not to open), so a request never sees a topic whose partition is not there yet.
    async fn install_topics(self: &Rc<Self>, table: Arc<TopicTable>) {
        if table.version < self.topics().version {
            return;
        }
        self.partitions.install(&table).await;
        if table.version >= self.topics().version {
            // Roles first (cluster mode): a request that sees the new table finds its leaders leading.
            self.apply_replication(&table);
            *self.topics.borrow_mut() = table;
            if self.cluster.is_some() {
                // Group coordinators follow their `__consumer_offsets` partitions' leadership.
                self.groups.follow_leadership(self);
            }
            self.table_installed.notify_all();
        }
    }

    /// Sends a group call to the shard that coordinates `group` and waits for the answer.
    pub async fn group_call(self: &Rc<Self>, group: &str, request: GroupRequest) -> GroupReply {
        let target = crate::group::coordinator_shard(self.as_ref(), group);
        // `call` runs a local group request in its own task too (never cancelled half-way by a vanished client).
        match self.call(target, ShardRequest::Group(request)).await {
            Ok(ShardReply::Group(reply)) => reply,
            Ok(other) => {
                log::error!("shard {}: unexpected reply to a group request: {other:?}", self.id);
                GroupReply::Error(ResponseError::CoordinatorNotAvailable.into())
            }
            Err(_) => GroupReply::Error(ResponseError::CoordinatorNotAvailable.into()),
        }
    }
}

impl GroupHost for Shard {
    type Storage = DmaStorage;

    fn config(&self) -> &Config {
        &self.config
    }

    fn shard_id(&self) -> ShardId {
        self.id
    }

    fn topics(&self) -> Arc<TopicTable> {
        Shard::topics(self)
    }

    fn owner(&self, topic: &str, partition: i32) -> ShardId {
        Shard::owner(self, topic, partition)
    }

    fn offsets_partition(&self, index: i32) -> Option<Rc<OwnedPartition>> {
        self.partitions.get(crate::cluster::OFFSETS_TOPIC, index)
    }

    fn groups(&self) -> &GroupCoordinator {
        &self.groups
    }

    fn is_shutting_down(&self) -> bool {
        Shard::is_shutting_down(self)
    }

    fn shutdown(&self) -> &Notify {
        &self.shutdown
    }

    fn clock(&self) -> &dyn sluice_storage::Clock {
        &sluice_storage::SystemClock
    }

    fn admin(self: &Rc<Self>, changes: Vec<TopicChange>) -> impl Future<Output = AdminResults> {
        Shard::admin(self, changes, false)
    }
}
