//! Start-up and shutdown: checks the configuration against the machine (port, data directory), loads the topic
//! table, starts one pinned glommio executor per shard, and on SIGTERM/SIGINT stops accepting, lets in-flight
//! requests finish, closes every log and returns.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use glommio::channels::channel_mesh::MeshBuilder;
use glommio::{LocalExecutorBuilder, Placement};

/// Threads in each shard's blocking pool (cold reads, file removal).
const BLOCKING_THREADS: usize = 4;

use crate::config::Config;
use crate::connection::{self, ConnectionLimits, ShardConnections};
use sluice_replication::{NodeId, ShardId};

use crate::cluster::PartitionManager;
use crate::cluster::TopicTable;
use crate::controller::Cluster;
use crate::mesh::{Envelope, Mesh};
use crate::shard::{Shard, ShardReply, ShardRequest};

/// How long shutdown waits for connections to finish their in-flight requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for a shard's background loops (group timers, retention) to notice it.
const BACKGROUND_STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// How often each shard looks at the process-wide stop flag. Only shutdown uses this; request paths never poll.
const STOP_CHECK_INTERVAL: Duration = Duration::from_millis(50);
/// Pending connections per shard listener (glommio's own choice for its bind).
const LISTEN_BACKLOG: i32 = 1024;
/// How often retention runs.
const RETENTION_INTERVAL: Duration = Duration::from_secs(60);

/// A running broker (for tests and embedding): the bound address and a way to stop it.
pub struct Broker {
    pub address: SocketAddr,
    /// The open-file limit before and after start-up raised it.
    pub descriptor_limit: DescriptorLimit,
    /// The connection limits every shard shares (`max.connections` as bounded by the descriptor limit).
    pub connections: Arc<ConnectionLimits>,
    /// `log.segment.open.files.max` as applied: idle segment files kept open over all shards.
    pub open_files_max: usize,
    stop: Arc<AtomicBool>,
    handles: Vec<glommio::ExecutorJoinHandle<()>>,
    running: Arc<AtomicUsize>,
    /// Cluster mode: this node's membership (controller threads, heartbeats).
    pub cluster: Option<Arc<Cluster>>,
}

impl Broker {
    /// Asks every shard to stop: stop accepting, finish in-flight requests, close the logs.
    pub fn stop(&self) {
        if let Some(cluster) = &self.cluster {
            cluster.stop();
        }
        self.stop.store(true, Ordering::SeqCst);
    }

    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::SeqCst) > 0
    }

    /// Waits for every shard to finish.
    pub fn join(self) {
        for handle in self.handles {
            let _ = handle.join();
        }
    }
}

/// Runs a broker until SIGTERM or SIGINT.
pub fn run(config: Config) -> Result<(), String> {
    let signals = block_stop_signals()?;
    let broker = start(config)?;
    log::info!(
        "sluice listening on {} ({}; max.connections {}; log.segment.open.files.max {})",
        broker.address,
        broker.descriptor_limit,
        broker.connections.connection_count_max(),
        broker.open_files_max
    );
    loop {
        if let Some(signal) = wait_for_signal(&signals, Duration::from_millis(200)) {
            log::info!("signal {signal}: shutting down");
            break;
        }
        if !broker.is_running() {
            break;
        }
    }
    broker.stop();
    broker.join();
    log::info!("sluice stopped");
    Ok(())
}

/// Starts the shards and returns once every one listens (or the first start-up error).
pub fn start(config: Config) -> Result<Broker, String> {
    let address = probe_listen_address(config.listen)?;
    let config = Config { listen: address, ..config };
    prepare_data_dir(&config)?;
    let descriptor_limit = raise_descriptor_limit();
    let connections =
        Arc::new(ConnectionLimits::new(&config, connection_count_bound(&config, &descriptor_limit)));
    let open_files_max = open_file_count_bound(&config, &descriptor_limit);
    let cluster = if config.is_cluster() { Some(Cluster::start(&config)?) } else { None };
    let table = match &cluster {
        Some(cluster) => Arc::new(cluster.initial_table()),
        None => Arc::new(TopicTable::load(&config.data_dir, NodeId(config.node_id))?),
    };
    let shard_count = match config.shard_count {
        Some(count) => count,
        None => std::thread::available_parallelism().map(|count| count.get()).unwrap_or(1),
    };
    let cores = std::thread::available_parallelism().map(|count| count.get()).unwrap_or(1);
    let config = Arc::new(config);
    let stop = Arc::new(AtomicBool::new(false));
    let running = Arc::new(AtomicUsize::new(shard_count));
    let loaded = Arc::new(AtomicUsize::new(0));
    let drained = Arc::new(AtomicUsize::new(0));
    let request_mesh =
        MeshBuilder::<Envelope<ShardRequest>, _>::full(shard_count, config.shard_channel_capacity);
    let reply_mesh = MeshBuilder::<Envelope<ShardReply>, _>::full(shard_count, config.shard_channel_capacity);
    let (started_sender, started_receiver) = mpsc::channel::<Result<(), String>>();
    let shard_threads: ShardThreads = Arc::default();
    let mut handles = Vec::with_capacity(shard_count);
    for index in 0..shard_count {
        let context = ShardContext {
            config: config.clone(),
            table: table.clone(),
            stop: stop.clone(),
            running: running.clone(),
            loaded: loaded.clone(),
            drained: drained.clone(),
            shard_count,
            started: started_sender.clone(),
            connections: connections.clone(),
            open_files_max: (open_files_max / shard_count).max(1),
            cluster: cluster.clone(),
            threads: shard_threads.clone(),
        };
        let request_mesh = request_mesh.clone();
        let reply_mesh = reply_mesh.clone();
        let handle = LocalExecutorBuilder::new(Placement::Fixed(index % cores))
            .name(&format!("shard-{index}"))
            // Cold reads (O_DIRECT pread) run on the blocking pool: several threads let a fetch's partitions be
            // read from disk in parallel (glommio's default is one thread, pinned to the shard's core).
            .blocking_thread_pool_placement(glommio::PoolPlacement::Unbound(BLOCKING_THREADS))
            .spawn(move || async move {
                let running = context.running.clone();
                let started = context.started.clone();
                if let Err(error) = run_shard(context, request_mesh, reply_mesh).await {
                    let _ = started.send(Err(error));
                }
                running.fetch_sub(1, Ordering::SeqCst);
            })
            .map_err(|error| format!("cannot start shard {index}: {error}"))?;
        handles.push(handle);
    }
    drop(started_sender);
    let broker =
        Broker { address, descriptor_limit, connections, open_files_max, stop, handles, running, cluster };
    wait_until_started(broker, &started_receiver, shard_count, &shard_threads)
}

/// While start-up makes no progress for this long, the shards' threads are sent a signal (see
/// [`wake_shard_threads`]).
const START_KICK_INTERVAL: Duration = Duration::from_secs(2);

/// One broker's shard threads, for [`wake_shard_threads`] (registered by each shard as it starts).
type ShardThreads = Arc<std::sync::Mutex<Vec<libc::pthread_t>>>;

extern "C" fn ignore_signal(_: libc::c_int) {}

/// Registers the calling thread as a shard thread and, once per process, installs the no-op SIGURG handler
/// [`wake_shard_threads`] relies on.
fn register_shard_thread(threads: &ShardThreads) {
    static HANDLER: std::sync::Once = std::sync::Once::new();
    HANDLER.call_once(|| {
        // SAFETY: a zeroed sigaction with a handler that does nothing and no SA_RESTART: a blocked syscall of the
        // receiving thread returns EINTR, which glommio's reactor treats as a wake-up.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = ignore_signal as extern "C" fn(libc::c_int) as *const () as usize;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(libc::SIGURG, &action, std::ptr::null_mut());
        }
    });
    if let Ok(mut threads) = threads.lock() {
        // SAFETY: pthread_self has no preconditions.
        threads.push(unsafe { libc::pthread_self() });
    }
}

/// A shard reactor asleep in io_uring_enter sometimes misses the completion that should wake it during start-up
/// (seen under load: every shard asleep, start-up stalled until a SIGSTOP/SIGCONT interrupted the syscall). A
/// SIGURG to each shard thread interrupts the sleep; the reactor then looks at its rings again. Harmless to a shard
/// that was not stuck.
fn wake_shard_threads(threads: &ShardThreads) {
    let Ok(threads) = threads.lock() else { return };
    for thread in threads.iter() {
        // SAFETY: the threads are the shards' and run until the broker stops; start-up is still waiting for them.
        unsafe {
            libc::pthread_kill(*thread, libc::SIGURG);
        }
    }
}

/// Waits until every shard listens, then starts the cluster heartbeats (registration); the first start-up error
/// stops the shards started so far.
fn wait_until_started(
    broker: Broker,
    started: &mpsc::Receiver<Result<(), String>>,
    shard_count: usize,
    threads: &ShardThreads,
) -> Result<Broker, String> {
    let mut kicked = false;
    let mut ready = 0;
    while ready < shard_count {
        let failure = match started.recv_timeout(START_KICK_INTERVAL) {
            Ok(Ok(())) => {
                ready += 1;
                continue;
            }
            Ok(Err(error)) => error,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if !kicked {
                    log::warn!(
                        "start-up: no shard progress for {START_KICK_INTERVAL:?}; waking the shards' reactors \
                         (a missed wake-up in io_uring_enter; kept up every {START_KICK_INTERVAL:?} until started)"
                    );
                    kicked = true;
                }
                wake_shard_threads(threads);
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => "a shard stopped during start-up".into(),
        };
        broker.stop();
        broker.join();
        return Err(failure);
    }
    if let Some(cluster) = &broker.cluster {
        cluster.start_heartbeats()?;
    }
    Ok(broker)
}

struct ShardContext {
    config: Arc<Config>,
    table: Arc<TopicTable>,
    stop: Arc<AtomicBool>,
    running: Arc<AtomicUsize>,
    /// Shards that have opened every partition they own (the start-up barrier).
    loaded: Arc<AtomicUsize>,
    /// Shards that have stopped sending to the others (the shutdown barrier).
    drained: Arc<AtomicUsize>,
    shard_count: usize,
    started: mpsc::Sender<Result<(), String>>,
    connections: Arc<ConnectionLimits>,
    /// This shard's share of `log.segment.open.files.max`.
    open_files_max: usize,
    cluster: Option<Arc<Cluster>>,
    threads: ShardThreads,
}

/// A shard's life, in order. Each transition is logged; going back is a broken invariant.
///
/// - `Loading`: the mesh is joined and served (peers may already ask for partitions), owned partitions are
///   opened and their logs recovered; group coordinators replay in the background (COORDINATOR_LOAD_IN_PROGRESS
///   until done).
/// - `Loaded`: waits until every shard is loaded. Only then does any shard listen, so a client never reaches a
///   shard while another still opens a partition it would forward to (which answered
///   UNKNOWN_TOPIC_OR_PARTITION for a partition that exists).
/// - `Serving`: accepts connections until the stop signal.
/// - `Draining`: background loops stop, connections finish their in-flight requests, then every shard waits
///   until all have stopped sending to the others.
/// - `Closing`: logs are flushed, synced and closed. Then `Stopped`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum ShardPhase {
    Loading,
    Loaded,
    Serving,
    Draining,
    Closing,
    Stopped,
}

struct Lifecycle {
    shard: ShardId,
    phase: std::cell::Cell<ShardPhase>,
}

impl Lifecycle {
    fn enter(&self, phase: ShardPhase) {
        assert!(phase > self.phase.get(), "shard {}: {:?} after {:?}", self.shard, phase, self.phase.get());
        log::debug!("shard {}: {:?} -> {phase:?}", self.shard, self.phase.get());
        self.phase.set(phase);
    }
}

/// Test hook: `SLUICE_TEST_SHARD_LOAD_DELAY_MS=<shard>:<ms>` holds one shard's loading back by that long, so a test
/// can show that no shard listens before every shard has loaded.
const LOAD_DELAY_VARIABLE: &str = "SLUICE_TEST_SHARD_LOAD_DELAY_MS";

fn test_load_delay(shard: ShardId) -> Option<Duration> {
    let value = std::env::var(LOAD_DELAY_VARIABLE).ok()?;
    let (target, delay) = value.split_once(':')?;
    (target.trim().parse::<usize>().ok()? == shard.0).then_some(())?;
    delay.trim().parse::<u64>().ok().map(Duration::from_millis)
}

/// A shard's background loops, stopped at shutdown.
struct Background {
    group_timers: glommio::Task<()>,
    retention: glommio::Task<()>,
    watcher: glommio::Task<()>,
}

async fn run_shard(
    context: ShardContext,
    request_mesh: MeshBuilder<Envelope<ShardRequest>, glommio::channels::channel_mesh::Full>,
    reply_mesh: MeshBuilder<Envelope<ShardReply>, glommio::channels::channel_mesh::Full>,
) -> Result<(), String> {
    register_shard_thread(&context.threads);
    // The mesh is joined first and unconditionally: a shard that failed before joining would hang the others.
    let (request_senders, request_receivers) =
        request_mesh.join().await.map_err(|_| "cannot join the shard request mesh".to_string())?;
    let (reply_senders, reply_receivers) =
        reply_mesh.join().await.map_err(|_| "cannot join the shard reply mesh".to_string())?;
    let mesh = Rc::new(Mesh::new(request_senders, reply_senders));
    let lifecycle = Lifecycle { shard: mesh.shard(), phase: std::cell::Cell::new(ShardPhase::Loading) };
    let executor = glommio::executor();
    // Connections get a latency-sensitive queue so that a busy one is preempted often; the mesh gets its own.
    let connection_queue = executor.create_task_queue(
        glommio::Shares::Static(1000),
        glommio::Latency::Matters(Duration::from_millis(1)),
        "connections",
    );
    let mesh_queue = executor.create_task_queue(
        glommio::Shares::Static(1000),
        glommio::Latency::Matters(Duration::from_millis(1)),
        "mesh",
    );

    let shard = run_shard_load(&context, mesh, request_receivers, reply_receivers, mesh_queue).await?;
    lifecycle.enter(ShardPhase::Loaded);
    if !run_shard_wait_all_loaded(&context).await {
        lifecycle.enter(ShardPhase::Stopped);
        return Err(format!("shard {}: stopped during start-up", shard.id));
    }
    let listener = bind_shard_listener(context.config.listen)
        .map_err(|error| format!("cannot listen on {}: {error}", context.config.listen))?;
    let _ = context.started.send(Ok(()));
    lifecycle.enter(ShardPhase::Serving);
    log::debug!("shard {} serving {} partitions", shard.id, shard.partitions.partition_count());
    let background = run_shard_background(&shard, &context);
    let connections = Rc::new(ShardConnections::new(context.connections.clone()));
    run_shard_accept(&shard, listener, connection_queue, &connections).await;

    lifecycle.enter(ShardPhase::Draining);
    run_shard_drain(&shard, &context, background).await;
    lifecycle.enter(ShardPhase::Closing);
    log::info!("shard {}: closing {} logs", shard.id, shard.partitions.partition_count());
    shard.partitions.close_all().await;
    lifecycle.enter(ShardPhase::Stopped);
    log::info!("shard {}: stopped", shard.id);
    Ok(())
}

/// `Loading`: the shard's state, the mesh served, every owned partition opened.
async fn run_shard_load(
    context: &ShardContext,
    mesh: Rc<Mesh<ShardRequest, ShardReply>>,
    request_receivers: glommio::channels::channel_mesh::Receivers<Envelope<ShardRequest>>,
    reply_receivers: glommio::channels::channel_mesh::Receivers<Envelope<ShardReply>>,
    mesh_queue: glommio::TaskQueueHandle,
) -> Result<Rc<Shard>, String> {
    let shard_id = mesh.shard();
    let storage = sluice_storage::DmaStorage::new(&context.config.data_dir, context.open_files_max)
        .await
        .map_err(|error| format!("data directory {}: {error}", context.config.data_dir.display()))?;
    let partitions = PartitionManager::new(context.config.clone(), storage, shard_id, context.shard_count);
    let shard = Rc::new(Shard::new(
        context.config.clone(),
        context.table.clone(),
        partitions,
        mesh,
        context.cluster.clone(),
    ));
    shard.serve_mesh(request_receivers, reply_receivers, mesh_queue);
    if let Some(delay) = test_load_delay(shard_id) {
        log::warn!("shard {shard_id}: loading held back by {delay:?} ({LOAD_DELAY_VARIABLE})");
        glommio::timer::sleep(delay).await;
    }
    shard.partitions.apply(&context.table).await?;
    Ok(shard)
}

/// `Loaded`: the start-up barrier. False if the broker was stopped meanwhile (another shard failed to load).
async fn run_shard_wait_all_loaded(context: &ShardContext) -> bool {
    context.loaded.fetch_add(1, Ordering::SeqCst);
    while context.loaded.load(Ordering::SeqCst) < context.shard_count {
        if context.stop.load(Ordering::SeqCst) {
            return false;
        }
        glommio::timer::sleep(Duration::from_millis(1)).await;
    }
    true
}

fn run_shard_background(shard: &Rc<Shard>, context: &ShardContext) -> Background {
    // Consumer groups: replay this shard's __consumer_offsets partitions (group calls answer
    // COORDINATOR_LOAD_IN_PROGRESS until done), then run the group timers until shutdown.
    let group_timers = {
        let shard = shard.clone();
        glommio::spawn_local(async move {
            shard.groups.load(&shard).await;
            shard.groups.run_timers(shard.clone()).await;
        })
    };
    let watcher = {
        let shard = shard.clone();
        let stop = context.stop.clone();
        glommio::spawn_local(async move {
            while !stop.load(Ordering::SeqCst) {
                glommio::timer::sleep(STOP_CHECK_INTERVAL).await;
            }
            shard.request_shutdown();
        })
    };
    // Retention runs in its own task: however long a pass takes, it never delays noticing the stop signal.
    let retention = {
        let shard = shard.clone();
        glommio::spawn_local(async move {
            while !shard.is_shutting_down() {
                futures_lite::future::or(
                    shard.shutdown.notified(),
                    glommio::timer::sleep(RETENTION_INTERVAL),
                )
                .await;
                if !shard.is_shutting_down() {
                    shard.partitions.enforce_retention().await;
                }
            }
        })
    };
    // Cluster mode: shard 0 installs each metadata image on every shard (it ends at the shutdown signal).
    if let (Some(cluster), 0) = (&context.cluster, shard.id.0) {
        glommio::spawn_local(shard.clone().follow_cluster_metadata(cluster.clone())).detach();
    }
    // Cluster mode: every shard ticks the partitions it leads and sends their ISR changes.
    if let Some(cluster) = &context.cluster {
        glommio::spawn_local(shard.clone().replication_driver(cluster.clone())).detach();
    }
    Background { group_timers, retention, watcher }
}

/// `Serving`: accepts connections until shutdown.
async fn run_shard_accept(
    shard: &Rc<Shard>,
    listener: glommio::net::TcpListener,
    connection_queue: glommio::TaskQueueHandle,
    connections: &Rc<ShardConnections>,
) {
    loop {
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            if !shard.is_shutting_down() {
                shard.shutdown.notified().await;
            }
            None
        })
        .await;
        match accepted {
            None => break,
            Some(Ok(stream)) => {
                // Over max.connections or max.connections.per.ip: closed at once, before any byte is read.
                let peer = stream.peer_addr();
                let ip = peer.as_ref().map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |address| address.ip());
                let slot = match connections.limits.try_open(ip) {
                    Ok(slot) => slot,
                    Err(reason) => {
                        let peer = peer.map_or_else(|_| "?".to_string(), |address| address.to_string());
                        connections.refused(&peer, &reason);
                        drop(stream);
                        continue;
                    }
                };
                let task =
                    connection::serve(shard.clone(), stream, connection_queue, connections.clone(), slot);
                if let Err(error) =
                    glommio::spawn_local_into(task, connection_queue).map(|task| task.detach())
                {
                    log::error!("shard {}: cannot spawn a connection task: {error}", shard.id);
                }
            }
            Some(Err(error)) => {
                log::warn!("shard {}: accept failed: {error}", shard.id);
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    drop(listener);
    log::info!("shard {}: stopped accepting", shard.id);
}

/// `Draining`: background loops end, connections finish, and every shard stops sending to the others.
async fn run_shard_drain(shard: &Rc<Shard>, context: &ShardContext, background: Background) {
    let shard_id = shard.id;
    background.watcher.await;
    // Background loops end at the shutdown signal; one that does not (a wedged operation) is abandoned after a
    // bound, named in the log, rather than holding the broker up.
    for (name, task) in [("group timers", background.group_timers), ("retention", background.retention)] {
        let ended = futures_lite::future::or(
            async {
                task.await;
                true
            },
            async {
                glommio::timer::sleep(BACKGROUND_STOP_TIMEOUT).await;
                false
            },
        )
        .await;
        if !ended {
            log::warn!("shard {shard_id}: {name} did not stop within {BACKGROUND_STOP_TIMEOUT:?}; abandoned");
        }
    }
    log::info!("shard {shard_id}: draining {} connections", shard.connection_count());
    // Drain: connections finish what they read, then close.
    let deadline = std::time::Instant::now() + DRAIN_TIMEOUT;
    while shard.connection_count() > 0 && std::time::Instant::now() < deadline {
        futures_lite::future::or(shard.connections_changed.notified(), async {
            glommio::timer::sleep(Duration::from_millis(100)).await;
        })
        .await;
    }
    if shard.connection_count() > 0 {
        log::warn!(
            "shard {shard_id}: {} connections still busy after {DRAIN_TIMEOUT:?}; closing anyway",
            shard.connection_count()
        );
    }
    // Every shard must stop sending to the others before any closes its logs.
    context.drained.fetch_add(1, Ordering::SeqCst);
    while context.drained.load(Ordering::SeqCst) < context.shard_count && std::time::Instant::now() < deadline
    {
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
}

/// A shard's listening socket: SO_REUSEPORT so that every shard listens on the same port (the kernel spreads
/// connections), and SO_REUSEADDR as well. Accepted connections inherit both; the second is what lets a restarted
/// broker bind while the connections the old process closed wait out TIME_WAIT on this port (60 s). Without it,
/// [`probe_listen_address`] (SO_REUSEADDR, no SO_REUSEPORT) conflicted with those TIME_WAIT sockets and a broker
/// stopped under connected clients could not start again for a minute.
fn bind_shard_listener(address: SocketAddr) -> std::io::Result<glommio::net::TcpListener> {
    use std::os::fd::{FromRawFd, IntoRawFd};
    let domain = if address.is_ipv6() { socket2::Domain::IPV6 } else { socket2::Domain::IPV4 };
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&address.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    // SAFETY: the descriptor is a listening TCP socket that this function owns and hands over whole.
    Ok(unsafe { glommio::net::TcpListener::from_raw_fd(socket.into_raw_fd()) })
}

/// The process's open-file limit (RLIMIT_NOFILE) as start-up found and left it. Every connection, segment file and
/// listener is a descriptor, and 20,000 idle connections exhausted them (issue 13). The soft limit is often 1,024
/// where the hard limit allows far more, so start-up raises the soft limit to the hard one and says so.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DescriptorLimit {
    pub soft_before: libc::rlim_t,
    pub soft: libc::rlim_t,
    pub hard: libc::rlim_t,
    /// Why the soft limit could not be raised, if it could not.
    pub problem: Option<String>,
}

impl std::fmt::Display for DescriptorLimit {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.problem {
            Some(problem) => write!(
                formatter,
                "open files: soft limit {} (cannot raise it to the hard limit {}: {problem})",
                self.soft, self.hard
            ),
            None if self.soft_before < self.soft => write!(
                formatter,
                "open files: soft limit raised from {} to {} (the hard limit)",
                self.soft_before, self.soft
            ),
            None => write!(formatter, "open files: soft limit {} (the hard limit {})", self.soft, self.hard),
        }
    }
}

/// Raises the soft RLIMIT_NOFILE to the hard limit (or to the kernel's `fs.nr_open` when the hard limit is
/// unlimited, since the soft limit may not exceed it). A failure is reported in the result, not fatal: the broker
/// still runs, with `max.connections` bounded by the lower limit.
fn raise_descriptor_limit() -> DescriptorLimit {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one rlimit into the struct it is given, which lives for the whole call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        let problem = std::io::Error::last_os_error().to_string();
        return DescriptorLimit { soft_before: 1024, soft: 1024, hard: 1024, problem: Some(problem) };
    }
    let soft_before = limit.rlim_cur;
    let mut target = limit.rlim_max;
    if target == libc::RLIM_INFINITY {
        target = std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|text| text.trim().parse::<libc::rlim_t>().ok())
            .unwrap_or(1 << 20);
    }
    let hard = target;
    if limit.rlim_cur >= target {
        return DescriptorLimit { soft_before, soft: soft_before, hard, problem: None };
    }
    let raised = libc::rlimit { rlim_cur: target, rlim_max: limit.rlim_max };
    // SAFETY: setrlimit only reads the struct it is given, which lives for the whole call.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        let problem = std::io::Error::last_os_error().to_string();
        return DescriptorLimit { soft_before, soft: soft_before, hard, problem: Some(problem) };
    }
    DescriptorLimit { soft_before, soft: hard, hard, problem: None }
}

/// `max.connections` as the broker applies it: the configured value, but never more than the descriptors left
/// after [`descriptor_reserve`]; `-1` (the default) means exactly that bound. A configured value above it is
/// lowered with a warning, since accepting past it would fail with EMFILE in the middle of serving instead.
fn connection_count_bound(config: &Config, limit: &DescriptorLimit) -> usize {
    let soft = usize::try_from(limit.soft).unwrap_or(usize::MAX);
    let bound = soft.saturating_sub(descriptor_reserve(soft)).max(1);
    match config.connection_count_max {
        None => bound,
        Some(count) if count > bound => {
            log::warn!(
                "max.connections {count} lowered to {bound}: the open-file limit is {soft}, less {} kept for files",
                descriptor_reserve(soft)
            );
            bound
        }
        Some(count) => count,
    }
}

/// `log.segment.open.files.max` as the broker applies it: the configured value, or by default (`-1`) half of
/// [`descriptor_reserve`], which leaves the other half for what the cache may hold beyond its cap while files are in
/// use (see storage's `open_files.rs`), recovery's index reads, checkpoints, listeners and io_uring.
fn open_file_count_bound(config: &Config, limit: &DescriptorLimit) -> usize {
    let soft = usize::try_from(limit.soft).unwrap_or(usize::MAX);
    config.segment_open_files_max.unwrap_or_else(|| (descriptor_reserve(soft) / 2).max(1))
}

/// Descriptors kept back from connections for everything else the broker opens: segment and index files, the data
/// directory, one listener per shard, io_uring rings and eventfds, the blocking pool. A tenth of the limit, at least
/// 1,024 — but at most half, so that a small limit still leaves room for connections.
fn descriptor_reserve(limit: usize) -> usize {
    (limit / 10).max(1024).min(limit / 2)
}

/// Fails with one clear line if the address is taken; resolves port 0 to a concrete port.
/// The probe binds without SO_REUSEPORT, so it also fails when another SO_REUSEPORT listener (a second
/// broker) holds the port, which the shards' own SO_REUSEPORT binds would silently share. It has SO_REUSEADDR
/// (Rust's std sets it), as the shards' sockets do, so a previous run's TIME_WAIT connections do not count.
fn probe_listen_address(address: SocketAddr) -> Result<SocketAddr, String> {
    let probe = std::net::TcpListener::bind(address)
        .map_err(|error| format!("cannot listen on {address}: {error}"))?;
    probe.local_addr().map_err(|error| format!("cannot listen on {address}: {error}"))
}

fn prepare_data_dir(config: &Config) -> Result<(), String> {
    let directory = &config.data_dir;
    let problem =
        |error: std::io::Error| format!("data directory {} is not writable: {error}", directory.display());
    std::fs::create_dir_all(directory).map_err(problem)?;
    let probe = directory.join(".sluice-write-probe");
    std::fs::write(&probe, b"probe").map_err(problem)?;
    std::fs::remove_file(&probe).map_err(problem)?;
    // Written here, once, so that shards starting together only ever read it (see storage's DmaStorage::new).
    let dma_probe = directory.join(sluice_storage::dma::PROBE_FILE_NAME);
    if std::fs::metadata(&dma_probe).map(|metadata| metadata.len()).unwrap_or(0)
        < sluice_storage::BLOCK_SIZE as u64
    {
        std::fs::write(&dma_probe, vec![0u8; sluice_storage::BLOCK_SIZE]).map_err(problem)?;
    }
    Ok(())
}

/// Blocks SIGTERM and SIGINT in this thread and every thread it starts later, so that only `wait_for_signal`
/// sees them.
fn block_stop_signals() -> Result<libc::sigset_t, String> {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it before use, and pthread_sigmask only reads it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        let result = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if result != 0 {
            return Err(format!("cannot block signals: error {result}"));
        }
        Ok(set)
    }
}

fn wait_for_signal(set: &libc::sigset_t, timeout: Duration) -> Option<i32> {
    let timeout =
        libc::timespec { tv_sec: timeout.as_secs() as libc::time_t, tv_nsec: timeout.subsec_nanos() as _ };
    // SAFETY: `set` was initialised by block_stop_signals; a null siginfo pointer is allowed.
    let signal = unsafe { libc::sigtimedwait(set, std::ptr::null_mut(), &timeout) };
    (signal > 0).then_some(signal)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reserve is a tenth of the limit, at least 1,024, at most half.
    #[test]
    fn descriptor_reserve_leaves_room_for_files_and_connections() {
        let cases = [(20, 10), (1024, 512), (4096, 1024), (20_000, 2000), (1 << 20, (1 << 20) / 10)];
        for (limit, expected) in cases {
            assert_eq!(descriptor_reserve(limit), expected, "limit {limit}");
        }
    }

    /// `-1` takes the descriptor bound; a value under it is kept; a value over it is lowered to it.
    #[test]
    fn max_connections_is_bounded_by_the_descriptor_limit() {
        let limit = DescriptorLimit { soft_before: 1024, soft: 20_000, hard: 20_000, problem: None };
        let config =
            |text: &str| Config::from_toml(text, &crate::config::ConfigOverrides::default()).unwrap();
        assert_eq!(connection_count_bound(&config(""), &limit), 18_000);
        assert_eq!(connection_count_bound(&config("\"max.connections\" = 500"), &limit), 500);
        assert_eq!(connection_count_bound(&config("\"max.connections\" = 2147483647"), &limit), 18_000);
        assert_eq!(limit.to_string(), "open files: soft limit raised from 1024 to 20000 (the hard limit)");
    }

    /// `-1` takes half the descriptor reserve; a value set is kept.
    #[test]
    fn open_segment_files_default_to_half_the_descriptor_reserve() {
        let limit = DescriptorLimit { soft_before: 20_000, soft: 20_000, hard: 20_000, problem: None };
        let config =
            |text: &str| Config::from_toml(text, &crate::config::ConfigOverrides::default()).unwrap();
        assert_eq!(open_file_count_bound(&config(""), &limit), 1000);
        assert_eq!(open_file_count_bound(&config("\"log.segment.open.files.max\" = 64"), &limit), 64);
    }
}
