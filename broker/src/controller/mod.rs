//! Cluster mode: the metadata quorum and this broker's place in it, when `controller.quorum.voters` is set.
//!
//! - A voter runs the quorum's controller thread (`service.rs`): raft-rs over its `__cluster_metadata-0`
//!   directory, the controller listener on its own voter address, the active controller's duties when it leads.
//! - Every node runs a heartbeat thread (registration, then a heartbeat every `broker.heartbeat.interval.ms`;
//!   fenced brokers lead nothing) and, when it is not a voter, a metadata follower thread that fetches the image
//!   from the voters.
//! - Admin writes and producer-id blocks go to the active controller through one worker thread; shards await the
//!   answers without blocking their reactor.
//! - The image reaches the shards through [`MetadataCell`]: shard 0 turns each new image into a `TopicTable`
//!   (`view.rs`) and installs it on every shard in two phases, as a single-node broker installs a topic change.
//!
//! All of it is threads and blocking sockets, not glommio: the quorum's traffic is small and its fsyncs would stall
//! a shard's reactor.

pub mod client;
pub mod migration;
pub mod service;
pub mod view;
pub mod wire;

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_replication::metadata::{
    BrokerRegistration, ElectionPolicy, LeaderRebalanceConfig, Listener, MetadataImage,
};
use sluice_replication::quorum::node::QuorumConfig;
use sluice_replication::quorum::{DiskQuorumStorage, QuorumNode, QuorumOutput, StdDir};
use sluice_replication::NodeId;

use crate::cluster::TopicTable;
use crate::config::Config;
use client::ControllerClient;
use wire::{ControlRequest, ControlResponse};

/// The quorum's directory inside the data directory (Kafka's name for the metadata log's partition).
pub const METADATA_DIR: &str = "__cluster_metadata-0";
/// Admin calls waiting for the worker at most.
const ADMIN_QUEUE_CAPACITY: usize = 64;

/// The newest metadata image this node has, and who the active controller is; written by the controller or the
/// follower thread, read by shard 0, which is woken on each change.
#[derive(Debug)]
pub struct MetadataCell {
    latest: Mutex<(Arc<MetadataImage>, Option<i32>)>,
    changed_sender: flume::Sender<()>,
    changed: flume::Receiver<()>,
    /// The image index every shard has installed (heartbeats report it; the broker is unfenced once it reaches
    /// the broker's registration).
    installed: AtomicU64,
}

impl MetadataCell {
    pub fn new(image: Arc<MetadataImage>) -> MetadataCell {
        let (changed_sender, changed) = flume::bounded(1);
        MetadataCell {
            latest: Mutex::new((image, None)),
            changed_sender,
            changed,
            installed: AtomicU64::new(0),
        }
    }

    /// Keeps `image` if it is not older than the one held, and the controller id; wakes shard 0.
    pub fn publish(&self, image: Arc<MetadataImage>, controller: Option<i32>) {
        if let Ok(mut latest) = self.latest.lock() {
            if image.applied_index() >= latest.0.applied_index() {
                latest.0 = image;
            }
            latest.1 = controller;
        }
        let _ = self.changed_sender.try_send(());
    }

    pub fn latest(&self) -> (Arc<MetadataImage>, Option<i32>) {
        match self.latest.lock() {
            Ok(latest) => latest.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Resolves when something was published since the last call.
    pub async fn changed(&self) -> bool {
        self.changed.recv_async().await.is_ok()
    }

    pub fn set_installed(&self, index: u64) {
        self.installed.fetch_max(index, Ordering::Relaxed);
    }

    pub fn installed(&self) -> u64 {
        self.installed.load(Ordering::Relaxed)
    }
}

type AdminJob = (ControlRequest, Duration, flume::Sender<Result<ControlResponse, String>>);

/// This node's membership of the cluster, shared by every shard.
#[derive(Debug)]
pub struct Cluster {
    pub node: i32,
    pub cell: Arc<MetadataCell>,
    client: Arc<ControllerClient>,
    admin: SyncSender<AdminJob>,
    registration: BrokerRegistration,
    broker_epoch: Arc<AtomicU64>,
    fenced: Arc<AtomicBool>,
    stopping: Arc<AtomicBool>,
    heartbeat_interval: Duration,
}

impl Cluster {
    /// Opens the quorum (a voter) or fetches the first image (a broker-only node) and starts the controller
    /// threads. Heartbeats start later, with [`Cluster::start_heartbeats`], once the broker serves.
    pub fn start(config: &Config) -> Result<Arc<Cluster>, String> {
        let voters: Vec<(i32, String)> =
            config.quorum_voters.iter().map(|voter| (voter.id, voter.address())).collect();
        let client = Arc::new(ControllerClient::new(voters.clone()));
        let (host, port) = config.advertised();
        let registration = BrokerRegistration {
            broker: NodeId(config.node_id),
            incarnation: random_u128(),
            listeners: vec![Listener { name: "PLAINTEXT".into(), host, port }],
            rack: config.broker_rack.clone(),
        };
        let cell = match config.own_voter() {
            Some(own) => {
                let node = open_quorum(config)?;
                let cell = Arc::new(MetadataCell::new(node.image().clone()));
                client.use_local_view(cell.clone());
                let bootstrap = migration::bootstrap_records(config)?;
                let peers = voters.iter().filter(|(id, _)| *id != own.id).cloned().collect();
                service::start(
                    node,
                    &own.address(),
                    peers,
                    service::ControllerPolicy {
                        session_timeout: config.broker_session_timeout,
                        election: ElectionPolicy { unclean_default: config.unclean_leader_election },
                        rebalance: LeaderRebalanceConfig {
                            enabled: config.auto_leader_rebalance,
                            imbalance_per_broker_percentage: config.leader_imbalance_percentage,
                            check_interval: config.leader_imbalance_check_interval,
                            ..LeaderRebalanceConfig::default()
                        },
                    },
                    cell.clone(),
                    bootstrap.clone(),
                    registration.clone(),
                )?;
                migration::wait_until_written(&cell, &bootstrap)?;
                cell
            }
            None => {
                let cell = Arc::new(MetadataCell::new(Arc::new(MetadataImage::empty())));
                fetch_metadata_once(&client, &cell, Duration::from_secs(5));
                cell
            }
        };
        let (admin, jobs) = sync_channel::<AdminJob>(ADMIN_QUEUE_CAPACITY);
        let worker_client = client.clone();
        spawn("sluice-admin", move || {
            while let Ok((request, timeout, reply)) = jobs.recv() {
                let _ = reply.send(worker_client.call(&request, timeout, Duration::ZERO));
            }
        })?;
        let cluster = Arc::new(Cluster {
            node: config.node_id,
            cell,
            client,
            admin,
            registration,
            broker_epoch: Arc::new(AtomicU64::new(0)),
            fenced: Arc::new(AtomicBool::new(true)),
            stopping: Arc::new(AtomicBool::new(false)),
            heartbeat_interval: config.broker_heartbeat_interval,
        });
        if config.own_voter().is_none() {
            let follower = cluster.clone();
            spawn("sluice-metadata", move || follower.follow_metadata())?;
        }
        Ok(cluster)
    }

    /// The table the shards load at start: the image this node has now.
    pub fn initial_table(&self) -> TopicTable {
        let (image, controller) = self.cell.latest();
        view::table_from_image(&image, controller)
    }

    pub fn start_heartbeats(self: &Arc<Self>) -> Result<(), String> {
        let cluster = self.clone();
        spawn("sluice-heartbeat", move || cluster.heartbeat_loop())
    }

    /// Sends `request` to the active controller from the admin worker and awaits the answer.
    pub async fn call(&self, request: ControlRequest, timeout: Duration) -> Result<ControlResponse, String> {
        let (reply, answer) = flume::bounded(1);
        self.admin
            .try_send((request, timeout, reply))
            .map_err(|_| "too many metadata requests are waiting for the controller".to_string())?;
        answer.recv_async().await.map_err(|_| "the admin worker stopped".to_string())?
    }

    /// This process's registration incarnation: an image names this broker as it runs now only with it.
    pub fn incarnation(&self) -> u128 {
        self.registration.incarnation
    }

    pub fn broker_epoch(&self) -> u64 {
        self.broker_epoch.load(Ordering::Relaxed)
    }

    pub fn is_fenced(&self) -> bool {
        self.fenced.load(Ordering::Relaxed)
    }

    /// Controlled shutdown, the short form: asks the controller to fence this broker at once (its partitions'
    /// leadership moves or goes offline now, not after a session timeout) and stops heartbeating.
    pub fn stop(&self) {
        if self.stopping.swap(true, Ordering::SeqCst) || self.broker_epoch() == 0 {
            return;
        }
        let request = self.heartbeat_request(true);
        match self.client.call(&request, Duration::from_secs(2), Duration::ZERO) {
            Ok(ControlResponse::Heartbeat { .. }) => log::info!("fenced by the controller for shutdown"),
            Ok(other) => log::warn!("shutdown: the controller answered {other:?}"),
            Err(error) => log::warn!("shutdown: {error}"),
        }
    }

    fn heartbeat_request(&self, want_fence: bool) -> ControlRequest {
        ControlRequest::Heartbeat {
            registration: self.registration.clone(),
            broker_epoch: self.broker_epoch(),
            metadata_offset: self.cell.installed(),
            want_fence,
        }
    }

    fn heartbeat_loop(&self) {
        let mut warned_at: Option<Instant> = None;
        let mut warn = |message: String| {
            if warned_at.is_none_or(|at| at.elapsed() > Duration::from_secs(10)) {
                log::warn!("{message}");
                warned_at = Some(Instant::now());
            }
        };
        while !self.stopping.load(Ordering::SeqCst) {
            let request = self.heartbeat_request(false);
            match self.client.call(
                &request,
                self.heartbeat_interval.max(Duration::from_secs(1)),
                Duration::ZERO,
            ) {
                Ok(ControlResponse::Heartbeat { broker_epoch, fenced }) => {
                    let before = self.broker_epoch.swap(broker_epoch, Ordering::Relaxed);
                    let was_fenced = self.fenced.swap(fenced, Ordering::Relaxed);
                    if before != broker_epoch {
                        log::info!("registered with the controller: broker epoch {broker_epoch}");
                    }
                    if was_fenced && !fenced {
                        log::info!("unfenced: this broker may lead partitions");
                    }
                }
                Ok(ControlResponse::Error { code, message }) => {
                    warn(format!("heartbeat refused ({code}): {message}"))
                }
                Ok(other) => warn(format!("heartbeat: unexpected answer {other:?}")),
                Err(error) => warn(format!("heartbeat: {error}")),
            }
            // Fenced (starting, or catching up): heartbeat often, so the unfence follows the catch-up closely.
            let pause = if self.is_fenced() { Duration::from_millis(200) } else { self.heartbeat_interval };
            sleep_unless(&self.stopping, pause);
        }
    }

    /// A broker-only node: long-polls the voters for a newer image.
    fn follow_metadata(&self) {
        while !self.stopping.load(Ordering::SeqCst) {
            if !fetch_metadata_once(&self.client, &self.cell, Duration::from_secs(5)) {
                sleep_unless(&self.stopping, Duration::from_millis(500));
            }
        }
    }
}

/// One metadata fetch; false when no voter answered.
fn fetch_metadata_once(client: &ControllerClient, cell: &MetadataCell, timeout: Duration) -> bool {
    let applied_index = cell.latest().0.applied_index();
    let wait = Duration::from_secs(1);
    let request = ControlRequest::FetchMetadata { applied_index, wait_ms: wait.as_millis() as u32 };
    match client.call(&request, timeout, wait) {
        Ok(ControlResponse::Metadata { image: Some(bytes) }) => match MetadataImage::decode(&bytes) {
            Ok(image) => {
                cell.publish(Arc::new(image), client.leader_hint());
                true
            }
            Err(error) => {
                log::warn!("metadata fetch: a malformed image: {error}");
                false
            }
        },
        Ok(ControlResponse::Metadata { image: None }) => {
            if cell.latest().1 != client.leader_hint() {
                cell.publish(cell.latest().0, client.leader_hint());
            }
            true
        }
        Ok(other) => {
            log::warn!("metadata fetch: unexpected answer {other:?}");
            false
        }
        Err(error) => {
            log::debug!("metadata fetch: {error}");
            false
        }
    }
}

fn sleep_unless(stopping: &AtomicBool, pause: Duration) {
    let until = Instant::now() + pause;
    while !stopping.load(Ordering::SeqCst) {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}

fn spawn(name: &str, body: impl FnOnce() + Send + 'static) -> Result<(), String> {
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(body)
        .map(drop)
        .map_err(|error| format!("cannot start thread {name}: {error}"))
}

/// Opens this voter's quorum storage and node, applying what its log already committed.
fn open_quorum(config: &Config) -> Result<service::DiskNode, String> {
    let path = config.data_dir.join(METADATA_DIR);
    let dir = StdDir::open(&path).map_err(|error| format!("cannot open {}: {error}", path.display()))?;
    let storage = DiskQuorumStorage::open(dir)
        .map_err(|error| format!("cannot open the metadata log {}: {error}", path.display()))?;
    let voters = config.quorum_voters.iter().map(|voter| NodeId(voter.id)).collect();
    let mut quorum_config = QuorumConfig::new(NodeId(config.node_id), voters, Vec::new());
    quorum_config.jitter_seed = random_u128() as u64;
    // Ticks of `service::TICK`: the election timeout and as much jitter; leader heartbeats well inside it.
    let election_tick =
        (config.quorum_election_timeout.as_millis() / service::TICK.as_millis()).max(2) as usize;
    quorum_config.election_tick = election_tick;
    quorum_config.election_jitter_tick_count = election_tick;
    quorum_config.heartbeat_tick = (election_tick / 5).max(1);
    let mut node = QuorumNode::open(quorum_config, storage)
        .map_err(|error| format!("cannot start the metadata quorum from {}: {error}", path.display()))?;
    // One tick hands over the entries the log already committed (its first Ready), the sync applies them: the
    // shards then load with the image as this node last knew it, not only as of the latest snapshot.
    let mut out = QuorumOutput::default();
    node.tick(&mut out).map_err(|error| format!("metadata quorum: {error}"))?;
    node.sync(&mut out).map_err(|error| format!("metadata quorum: {error}"))?;
    log::info!("metadata quorum: {} opened, image at index {}", path.display(), node.image().applied_index());
    Ok(node)
}

/// Random bits from the OS (through `RandomState`'s keys), for incarnation ids and the election jitter.
fn random_u128() -> u128 {
    let mut value = 0u128;
    for _ in 0..2 {
        let half = std::collections::hash_map::RandomState::new().build_hasher().finish();
        value = (value << 64) | u128::from(half);
    }
    value
}
