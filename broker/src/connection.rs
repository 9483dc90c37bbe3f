//! One client connection: read `i32 size` frames, decode, run each request as its own task, and write the
//! responses strictly in request order (a FIFO of response tasks). Produce requests are processed one after
//! another up to *sequenced* so that pipelined produces keep their order; everything after (durability,
//! replication) overlaps with later requests.
//!
//! Responses are lists of `Bytes` chunks written with `sendmsg` (vectored, no copy); when the socket is full the
//! writer falls back to glommio's readiness-driven write for one chunk, then resumes vectored writes.
//!
//! Limits (issue 13): the read buffer grows with the bytes that arrive, never to the size a frame announces; every
//! frame holds a share of the broker's request budget (`queued.max.request.bytes`, [`ConnectionLimits`]) from its
//! size prefix until its response is written, and a connection whose frame does not fit stops reading until it
//! does; connections beyond `max.connections` or `max.connections.per.ip` are closed at accept; a connection with
//! nothing in flight that sends nothing for `connections.max.idle.ms` is closed.

use std::cell::Cell;
use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::local_channel;
use glommio::net::TcpStream;
use kafka_protocol::messages::ApiKey;

use crate::codec::{self, CodecError};
use crate::config::Config;
use crate::handlers::{self, Response};
use crate::shard::Shard;
use crate::sync::{oneshot, Notify, OneshotReceiver};

/// The most bytes asked of the socket per read while a frame is still small; a larger frame's reads may ask for as
/// much as the buffer already holds (see [`fill_step`]).
const READ_CHUNK_SIZE: usize = 64 * 1024;
/// The fewest bytes asked of the socket per read, so that small pipelined requests arrive several to a read. Also a
/// new connection's buffer capacity: an idle connection costs one page of buffer, not a chunk.
const READ_STEP_MIN: usize = 4 * 1024;
/// iovecs per sendmsg call (well under IOV_MAX = 1024).
const IOVEC_COUNT_MAX: usize = 64;
/// How often a connection waiting for request budget looks again. Releases on its own shard wake it at once; this
/// bounds how late it notices one on another shard (glommio wakers cannot cross executors). Only waiting
/// connections poll, and only while the budget is exhausted.
const BUDGET_POLL_INTERVAL: Duration = Duration::from_millis(5);
/// A shard warns about refused connections at most this often (a flood of refusals must not flood the log).
const REFUSAL_WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// What a request task hands the writer.
pub type ResponseTask = glommio::Task<Result<Option<Response>, CodecError>>;

/// A request on its way to the writer: its response and its share of the request budget, given back once the
/// response is written (or the connection ends).
struct PendingResponse {
    task: ResponseTask,
    _permit: RequestPermit,
}

/// The limits every shard's connections share, one per broker: the request-byte budget
/// (`queued.max.request.bytes`) and the connection counts (`max.connections`, `max.connections.per.ip`). Created by
/// [`crate::server::start`] and handed to every shard as an `Arc`; the budget is one atomic for the whole broker
/// rather than a split per shard, so that one shard's connections may use what another's leave idle and a frame
/// up to `socket.request.max.bytes` fits whatever the shard count.
pub struct ConnectionLimits {
    /// `None`: unbounded (`-1`, Kafka's default).
    pub(crate) request_budget_size: Option<usize>,
    request_bytes_in_flight: AtomicUsize,
    connection_count_max: usize,
    connection_count_per_ip_max: usize,
    connection_count: AtomicUsize,
    /// Open connections per client address; an entry exists only while its count is above zero, so the map is
    /// bounded by `connection_count_max`.
    connection_count_per_ip: Mutex<HashMap<IpAddr, usize>>,
}

impl ConnectionLimits {
    /// `connection_count_max` is `max.connections` after [`crate::server`] bounded it by the descriptor limit.
    pub fn new(config: &Config, connection_count_max: usize) -> ConnectionLimits {
        if let Some(budget) = config.request_queued_size_max {
            // Config::build refuses a smaller budget: a frame that passes socket.request.max.bytes always fits.
            assert!(
                budget >= config.request_size_max,
                "queued.max.request.bytes {budget} < socket.request.max.bytes"
            );
        }
        assert!(connection_count_max >= 1, "max.connections bounded to zero");
        ConnectionLimits {
            request_budget_size: config.request_queued_size_max,
            request_bytes_in_flight: AtomicUsize::new(0),
            connection_count_max,
            connection_count_per_ip_max: config.connection_count_per_ip_max,
            connection_count: AtomicUsize::new(0),
            connection_count_per_ip: Mutex::new(HashMap::new()),
        }
    }

    pub fn connection_count_max(&self) -> usize {
        self.connection_count_max
    }

    pub fn connection_count(&self) -> usize {
        self.connection_count.load(Ordering::SeqCst)
    }

    pub fn request_bytes_in_flight(&self) -> usize {
        self.request_bytes_in_flight.load(Ordering::SeqCst)
    }

    /// A slot for one more connection from `ip`, or the sentence saying which limit refuses it.
    pub fn try_open(self: &Arc<Self>, ip: IpAddr) -> Result<ConnectionSlot, String> {
        let mut per_ip = self.connection_count_per_ip.lock().unwrap_or_else(PoisonError::into_inner);
        let total = self.connection_count.load(Ordering::SeqCst);
        if total >= self.connection_count_max {
            return Err(format!(
                "{total} connections are open, max.connections is {}",
                self.connection_count_max
            ));
        }
        let from_ip = per_ip.get(&ip).copied().unwrap_or(0);
        if from_ip >= self.connection_count_per_ip_max {
            return Err(format!(
                "{from_ip} connections from {ip} are open, max.connections.per.ip is {}",
                self.connection_count_per_ip_max
            ));
        }
        per_ip.insert(ip, from_ip + 1);
        self.connection_count.fetch_add(1, Ordering::SeqCst);
        Ok(ConnectionSlot { limits: self.clone(), ip })
    }

    /// Takes `size` bytes of the budget if they fit; never blocks.
    fn try_reserve_request(&self, size: usize) -> bool {
        let Some(budget) = self.request_budget_size else {
            self.request_bytes_in_flight.fetch_add(size, Ordering::SeqCst);
            return true;
        };
        self.request_bytes_in_flight
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                used.checked_add(size).filter(|total| *total <= budget)
            })
            .is_ok()
    }

    fn release_request(&self, size: usize) {
        let previous = self.request_bytes_in_flight.fetch_sub(size, Ordering::SeqCst);
        assert!(previous >= size, "request budget: releasing {size} bytes of {previous} in flight");
    }
}

/// One open connection's place in [`ConnectionLimits`]; dropping it (when the connection's task ends) frees it.
pub struct ConnectionSlot {
    limits: Arc<ConnectionLimits>,
    ip: IpAddr,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut per_ip = self.limits.connection_count_per_ip.lock().unwrap_or_else(PoisonError::into_inner);
        let from_ip = per_ip.get(&self.ip).copied().unwrap_or(0);
        assert!(from_ip >= 1, "connection from {} closed but none counted", self.ip);
        if from_ip == 1 {
            per_ip.remove(&self.ip);
        } else {
            per_ip.insert(self.ip, from_ip - 1);
        }
        let previous = self.limits.connection_count.fetch_sub(1, Ordering::SeqCst);
        assert!(previous >= 1, "connection closed but none counted");
    }
}

/// One shard's side of [`ConnectionLimits`]: it lives on that shard's executor (created by `server.rs` when the
/// shard starts serving, dropped when it stops). A budget release on this shard wakes this shard's waiting
/// connections at once; one on another shard is noticed within [`BUDGET_POLL_INTERVAL`]. Waiters on one shard are
/// not queued in order: a large frame may wait while smaller ones that fit go first (it proceeds as soon as the
/// bytes in flight drop low enough, which they do as responses are written).
pub struct ShardConnections {
    pub limits: Arc<ConnectionLimits>,
    released: Notify,
    refused_since_warning: Cell<u64>,
    last_warning: Cell<Option<Instant>>,
}

impl ShardConnections {
    pub fn new(limits: Arc<ConnectionLimits>) -> ShardConnections {
        ShardConnections {
            limits,
            released: Notify::default(),
            refused_since_warning: Cell::new(0),
            last_warning: Cell::new(None),
        }
    }

    /// Waits until `size` bytes fit in the budget and takes them. A frame never exceeds the whole budget
    /// (`Config::build` requires `queued.max.request.bytes >= socket.request.max.bytes`), so this ends once enough
    /// responses have been written.
    async fn reserve_request(self: &Rc<Self>, size: usize) -> RequestPermit {
        let mut logged = false;
        while !self.limits.try_reserve_request(size) {
            if !logged {
                log::debug!(
                    "a {size}-byte request waits for budget: {} bytes in flight",
                    self.limits.request_bytes_in_flight()
                );
                logged = true;
            }
            futures_lite::future::or(self.released.notified(), glommio::timer::sleep(BUDGET_POLL_INTERVAL))
                .await;
        }
        RequestPermit { connections: self.clone(), size }
    }

    /// Logs a refused connection, at most once per [`REFUSAL_WARNING_INTERVAL`] with the count since.
    pub fn refused(&self, peer: &str, reason: &str) {
        let refused = self.refused_since_warning.get() + 1;
        let due = self.last_warning.get().is_none_or(|last| last.elapsed() >= REFUSAL_WARNING_INTERVAL);
        if due {
            log::warn!(
                "refusing connection from {peer}: {reason} ({refused} refused since the last warning)"
            );
            self.last_warning.set(Some(Instant::now()));
            self.refused_since_warning.set(0);
        } else {
            self.refused_since_warning.set(refused);
        }
    }
}

/// `size` bytes of the request budget, held from a frame's size prefix until its response is written.
struct RequestPermit {
    connections: Rc<ShardConnections>,
    size: usize,
}

impl Drop for RequestPermit {
    fn drop(&mut self) {
        self.connections.limits.release_request(self.size);
        self.connections.released.notify_all();
    }
}

/// Serves one accepted connection until the client closes it, it breaks a rule, it idles out, or shutdown.
/// `slot` is its place under `max.connections`, given back when this returns.
pub async fn serve(
    shard: Rc<Shard>,
    stream: TcpStream,
    queue: glommio::TaskQueueHandle,
    connections: Rc<ShardConnections>,
    slot: ConnectionSlot,
) {
    let _slot = slot;
    shard.connection_opened();
    let peer = stream.peer_addr().map(|address| address.to_string()).unwrap_or_else(|_| "?".into());
    // Kafka's spelling of a member's host in DescribeGroups: "/" and the address.
    let client_host: Rc<str> = stream
        .peer_addr()
        .map(|address| format!("/{}", address.ip()))
        .unwrap_or_else(|_| "/unknown".into())
        .into();
    let _ = stream.set_nodelay(true);
    // A read that waits this long fails with TimedOut; `FrameReader::fill` then closes the connection if nothing
    // is in flight (a client waiting for a long poll or a slow response is not idle).
    if let Err(error) = stream.set_read_timeout(shard.config.connection_idle_max) {
        log::warn!("connection from {peer}: cannot set connections.max.idle.ms: {error}");
    }
    let fd = stream.as_raw_fd();
    let (reader, writer) = futures_lite::io::split(stream);
    let responses_pending = Rc::new(Cell::new(0usize));
    let (response_sender, response_receiver) =
        local_channel::new_bounded::<PendingResponse>(shard.config.connection_inflight_max);
    let writer_task = glommio::spawn_local_into(
        write_responses(fd, writer, response_receiver, peer.clone(), responses_pending.clone()),
        queue,
    );
    let mut frames = FrameReader {
        reader,
        fd: Some(fd),
        buffer: BytesMut::with_capacity(READ_STEP_MIN),
        request_size_max: shard.config.request_size_max,
        idle_max: shard.config.connection_idle_max,
        responses_pending,
        connections,
    };
    serve_requests(&shard, &mut frames, &response_sender, queue, &peer, &client_host).await;
    drop(frames);
    drop(response_sender);
    if let Ok(task) = writer_task {
        task.await;
    }
    shard.connection_closed();
}

/// The read loop: frames in, request tasks out to the writer, until the connection ends.
async fn serve_requests<R: futures_lite::AsyncRead + Unpin>(
    shard: &Rc<Shard>,
    frames: &mut FrameReader<R>,
    response_sender: &local_channel::LocalSender<PendingResponse>,
    queue: glommio::TaskQueueHandle,
    peer: &str,
    client_host: &Rc<str>,
) {
    loop {
        let frame = futures_lite::future::or(async { Some(frames.next().await) }, async {
            if !shard.is_shutting_down() {
                shard.shutdown.notified().await;
            }
            None
        })
        .await;
        let (frame, permit) = match frame {
            None => break,           // shutdown: stop reading, finish what was read
            Some(Ok(None)) => break, // the client closed
            Some(Ok(Some(frame))) => frame,
            Some(Err(FrameError::Idle(idle))) => {
                log::debug!("closing connection from {peer}: idle for {idle:?} (connections.max.idle.ms)");
                break;
            }
            Some(Err(FrameError::Invalid(reason))) => {
                log::warn!("closing connection from {peer}: {reason}");
                break;
            }
        };
        let (task, sequenced) = match spawn_request(shard, frame, queue, client_host) {
            Ok(spawned) => spawned,
            Err(reason) => {
                log::warn!("closing connection from {peer}: {reason}");
                break;
            }
        };
        frames.responses_pending.set(frames.responses_pending.get() + 1);
        if response_sender.send(PendingResponse { task, _permit: permit }).await.is_err() {
            break;
        }
        if let Some(sequenced) = sequenced {
            // The next request waits until this produce's offsets are fixed (or it failed).
            let _ = sequenced.await;
        }
        glommio::yield_if_needed().await;
    }
}

/// Decodes a frame and spawns its handler. Returns the response task and, for a produce, the signal that it is
/// sequenced; an error (a malformed frame) costs the client its connection.
fn spawn_request(
    shard: &Rc<Shard>,
    frame: Bytes,
    queue: glommio::TaskQueueHandle,
    client_host: &Rc<str>,
) -> Result<(ResponseTask, Option<OneshotReceiver<()>>), String> {
    let request = match codec::decode_request(frame) {
        Ok(request) => request,
        Err(CodecError::UnsupportedVersion { api_key: ApiKey::ApiVersions, correlation_id, .. }) => {
            // KIP-511: answer in the v0 layout so the client can retry with a version we know.
            let response = handlers::api_versions::unsupported_version_response(correlation_id);
            let task = glommio::spawn_local_into(async move { response.map(Some) }, queue)
                .map_err(|error| format!("cannot spawn a request task: {error}"))?;
            return Ok((task, None));
        }
        Err(error) => return Err(error.to_string()),
    };
    let is_produce = request.api_key == ApiKey::Produce;
    let (sequenced_sender, sequenced_receiver) = oneshot::<()>();
    let handler_shard = shard.clone();
    let host = client_host.clone();
    let task = glommio::spawn_local_into(
        async move { handlers::handle(&handler_shard, request, sequenced_sender, &host).await },
        queue,
    )
    .map_err(|error| format!("cannot spawn a request task: {error}"))?;
    Ok((task, is_produce.then_some(sequenced_receiver)))
}

/// Why reading a frame ended the connection.
enum FrameError {
    /// Nothing arrived for `connections.max.idle.ms` while nothing was in flight.
    Idle(Duration),
    /// A broken rule or a failed read, in a sentence.
    Invalid(String),
}

/// Reads frames from one connection into a buffer that grows with what arrives.
struct FrameReader<R> {
    reader: R,
    /// The socket under `reader`, for [`FrameReader::receive_waiting`].
    fd: Option<RawFd>,
    buffer: BytesMut,
    request_size_max: usize,
    idle_max: Option<Duration>,
    /// Requests handed to the writer whose responses are not yet written.
    responses_pending: Rc<Cell<usize>>,
    connections: Rc<ShardConnections>,
}

impl<R: futures_lite::AsyncRead + Unpin> FrameReader<R> {
    /// The next frame and its share of the request budget; `Ok(None)` is a clean close between frames. The budget
    /// is taken after the size prefix and before the body: a connection whose frame does not fit reads nothing
    /// more until other requests' responses are written (back-pressure, not failure).
    async fn next(&mut self) -> Result<Option<(Bytes, RequestPermit)>, FrameError> {
        if !self.fill(4).await? {
            return if self.buffer.is_empty() {
                Ok(None)
            } else {
                Err(FrameError::Invalid("connection closed inside a frame header".into()))
            };
        }
        let size = i32::from_be_bytes([self.buffer[0], self.buffer[1], self.buffer[2], self.buffer[3]]);
        if size < 0 || size as usize > self.request_size_max {
            return Err(FrameError::Invalid(format!(
                "request frame of {size} bytes exceeds socket.request.max.bytes {}",
                self.request_size_max
            )));
        }
        let size = size as usize;
        let permit = self.connections.reserve_request(size).await;
        // Under a bounded request budget the permit already holds `size` bytes of it, so the frame's room may be
        // taken at once: one allocation per frame instead of a buffer doubling (and copying) as bytes arrive.
        // Without a budget the room follows what arrives (see `fill_step`).
        if self.connections.limits.request_budget_size.is_some() {
            self.buffer.reserve((4 + size).saturating_sub(self.buffer.len()));
        }
        if !self.fill(4 + size).await? {
            return Err(FrameError::Invalid(format!("connection closed inside a {size}-byte frame")));
        }
        let _ = self.buffer.split_to(4);
        let frame = self.buffer.split_to(size).freeze();
        assert_eq!(frame.len(), size, "frame split short");
        self.next_detach_buffer(size);
        Ok(Some((frame, permit)))
    }

    /// After a large frame is split off, the buffer's remainder still points into that frame's allocation and
    /// would keep all of it (every page the frame touched) alive for as long as the connection lives, or reuse it
    /// in place once the frame is dropped. The remainder is at most [`READ_STEP_MIN`] bytes (reads never ask for
    /// more than a frame still needs unless that is under one step), so moving it to a fresh buffer is cheap.
    fn next_detach_buffer(&mut self, frame_size: usize) {
        if frame_size + 4 > READ_CHUNK_SIZE || self.buffer.capacity() > READ_CHUNK_SIZE {
            let mut fresh = BytesMut::with_capacity(self.buffer.len().max(READ_STEP_MIN));
            fresh.extend_from_slice(&self.buffer);
            self.buffer = fresh;
        }
    }

    /// Reads until the buffer holds at least `size` bytes; false on end of stream. Each read asks for
    /// [`fill_step`] bytes, so the buffer follows what has arrived. Bytes already waiting in the socket are
    /// received straight into the buffer's spare room ([`FrameReader::receive_waiting`]); only when none are does
    /// the stream's read wait for them, into at most [`READ_STEP_MIN`] zeroed bytes. (Zeroing each read's whole
    /// step first, as before, zeroed a large frame's room again after every short read: `memset` was 4% of the
    /// broker's CPU under workload (a).)
    async fn fill(&mut self, size: usize) -> Result<bool, FrameError> {
        while self.buffer.len() < size {
            let start = self.buffer.len();
            let step = fill_step(start, size);
            match self.receive_waiting(step) {
                Some(Ok(0)) => return Ok(false),
                Some(Ok(_)) => continue,
                Some(Err(error)) => return Err(FrameError::Invalid(format!("read failed: {error}"))),
                None => {}
            }
            self.buffer.resize(start + step.min(READ_STEP_MIN), 0);
            let read = self.reader.read(&mut self.buffer[start..]).await;
            match read {
                Ok(0) => {
                    self.buffer.truncate(start);
                    return Ok(false);
                }
                Ok(count) => self.buffer.truncate(start + count),
                Err(error) if error.kind() == io::ErrorKind::TimedOut => {
                    self.buffer.truncate(start);
                    match self.idle_max {
                        Some(idle) if self.responses_pending.get() == 0 => {
                            return Err(FrameError::Idle(idle))
                        }
                        _ => {} // a response is still on its way: not idle, keep waiting
                    }
                }
                Err(error) => {
                    self.buffer.truncate(start);
                    return Err(FrameError::Invalid(format!("read failed: {error}")));
                }
            }
        }
        Ok(true)
    }
}

impl<R> FrameReader<R> {
    /// Receives up to `step` bytes that are already waiting in the socket, without waiting, straight into the
    /// buffer's spare capacity (grown to hold them): no zeros are written first. `None` when nothing is waiting
    /// (or the reader has no socket of its own, as in tests): the caller then waits through the stream.
    fn receive_waiting(&mut self, step: usize) -> Option<std::io::Result<usize>> {
        let fd = self.fd?;
        self.buffer.reserve(step);
        let spare = self.buffer.spare_capacity_mut();
        let size = spare.len().min(step);
        // SAFETY: `spare` is memory this buffer owns and nothing else refers to; the kernel writes at most `size`
        // bytes into it. The descriptor is the connection's socket, open while `reader` (its read half) lives.
        let count = unsafe { libc::recv(fd, spare.as_mut_ptr().cast(), size, libc::MSG_DONTWAIT) };
        if count < 0 {
            let error = std::io::Error::last_os_error();
            return match error.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => None,
                _ => Some(Err(error)),
            };
        }
        let count = count as usize;
        assert!(count <= size, "recv wrote {count} bytes into {size}");
        // SAFETY: recv initialised the `count` bytes that follow the buffer's current length.
        unsafe { self.buffer.set_len(self.buffer.len() + count) };
        Some(Ok(count))
    }
}

/// Bytes to ask the socket for when the buffer holds `buffered` and needs `needed`: what is missing, but at least
/// [`READ_STEP_MIN`] and at most the larger of [`READ_CHUNK_SIZE`] and `buffered`. The buffer at most doubles per
/// read, so its size follows the bytes received (within twice, plus a chunk) and never the size a frame announces;
/// a large frame still arrives in few reads (about log2 of its size in growth steps, then chunks as large as the
/// buffer).
fn fill_step(buffered: usize, needed: usize) -> usize {
    needed.saturating_sub(buffered).clamp(READ_STEP_MIN, READ_CHUNK_SIZE.max(buffered))
}

/// Writes responses in request order. Each request's budget permit is dropped (given back) once its response is
/// written; what is left in the channel when this stops is dropped with it.
async fn write_responses(
    fd: RawFd,
    mut writer: futures_lite::io::WriteHalf<TcpStream>,
    receiver: local_channel::LocalReceiver<PendingResponse>,
    peer: String,
    responses_pending: Rc<Cell<usize>>,
) {
    while let Some(pending) = receiver.recv().await {
        match pending.task.await {
            Ok(Some(response)) => {
                if let Err(error) = write_chunks(fd, &mut writer, &response.chunks).await {
                    log::debug!("connection from {peer}: write failed: {error}");
                    break;
                }
            }
            Ok(None) => {} // acks=0 produce: no response
            Err(error) => {
                log::error!("closing connection from {peer}: {error}");
                break;
            }
        }
        // Written: the request is no longer in flight (its permit goes with `pending`, here).
        responses_pending.set(responses_pending.get().saturating_sub(1));
    }
    let _ = writer.close().await;
}

/// Writes every chunk in order.
pub async fn write_chunks(
    fd: RawFd,
    writer: &mut (impl futures_lite::AsyncWrite + Unpin),
    chunks: &[Bytes],
) -> io::Result<()> {
    let mut index = 0;
    let mut offset = 0;
    while index < chunks.len() {
        if offset >= chunks[index].len() {
            index += 1;
            offset = 0;
            continue;
        }
        let written = match send_vectored(fd, &chunks[index..], offset) {
            Ok(written) => written,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                // Let glommio wait for the socket to drain, writing part of the current chunk.
                let written = writer.write(&chunks[index][offset..]).await?;
                if written == 0 {
                    return Err(io::ErrorKind::WriteZero.into());
                }
                written
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => 0,
            Err(error) => return Err(error),
        };
        let mut remaining = written;
        while remaining > 0 && index < chunks.len() {
            let available = chunks[index].len() - offset;
            if remaining >= available {
                remaining -= available;
                index += 1;
                offset = 0;
            } else {
                offset += remaining;
                remaining = 0;
            }
        }
    }
    Ok(())
}

/// One non-blocking `sendmsg` of up to [`IOVEC_COUNT_MAX`] chunks, the first from `offset`.
fn send_vectored(fd: RawFd, chunks: &[Bytes], offset: usize) -> io::Result<usize> {
    let mut iovecs: Vec<libc::iovec> = Vec::with_capacity(chunks.len().min(IOVEC_COUNT_MAX));
    for (position, chunk) in chunks.iter().take(IOVEC_COUNT_MAX).enumerate() {
        let slice = if position == 0 { &chunk[offset..] } else { &chunk[..] };
        if slice.is_empty() {
            continue;
        }
        iovecs.push(libc::iovec { iov_base: slice.as_ptr() as *mut libc::c_void, iov_len: slice.len() });
    }
    if iovecs.is_empty() {
        return Ok(0);
    }
    // SAFETY: msghdr is plain data; zeroed is a valid empty header before the fields below are set.
    let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
    header.msg_iov = iovecs.as_mut_ptr();
    header.msg_iovlen = iovecs.len() as _;
    // SAFETY: every iovec points into a `Bytes` in `chunks`, borrowed for the whole call; the kernel only reads them.
    let sent = unsafe { libc::sendmsg(fd, &header, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sent as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigOverrides;

    fn limits_from(text: &str, connection_count_max: usize) -> Arc<ConnectionLimits> {
        let config = Config::from_toml(text, &ConfigOverrides::default()).unwrap();
        Arc::new(ConnectionLimits::new(&config, connection_count_max))
    }

    /// Reads follow what has arrived: a 100 MiB announcement costs one chunk until bytes come, and the buffer at
    /// most doubles per read.
    #[test]
    fn fill_step_grows_with_bytes_received_not_announced() {
        const MIB: usize = 1 << 20;
        let cases = [
            // (buffered, needed, expected step)
            (0, 4, READ_STEP_MIN), // a header: one small read may bring several requests
            (4, 4 + 100 * MIB, READ_CHUNK_SIZE), // a 100 MiB announcement: one chunk, not 100 MiB
            (4 + 100, 4 + 200, READ_STEP_MIN), // the rest of a small frame, at least a step
            (MIB, 4 + 100 * MIB, MIB), // 1 MiB received: ask for at most as much again
            (100 * MIB - 10, 4 + 100 * MIB, READ_STEP_MIN), // the tail of a frame
            (READ_CHUNK_SIZE, READ_CHUNK_SIZE + 10, READ_STEP_MIN),
        ];
        for (buffered, needed, expected) in cases {
            assert_eq!(fill_step(buffered, needed), expected, "buffered {buffered}, needed {needed}");
        }
    }

    /// The budget takes what fits, refuses what would pass it, and takes again once bytes are given back.
    #[test]
    fn request_budget_refuses_past_the_limit_until_released() {
        let limits = limits_from("\"queued.max.request.bytes\" = 104857600", 10);
        assert!(limits.try_reserve_request(60 << 20));
        assert!(!limits.try_reserve_request(50 << 20));
        assert!(limits.try_reserve_request(40 << 20));
        assert_eq!(limits.request_bytes_in_flight(), 100 << 20);
        assert!(!limits.try_reserve_request(1));
        limits.release_request(60 << 20);
        assert!(limits.try_reserve_request(50 << 20));
        assert_eq!(limits.request_bytes_in_flight(), 90 << 20);
        let unbounded = limits_from("\"queued.max.request.bytes\" = -1", 10);
        assert!(unbounded.try_reserve_request(usize::MAX / 2));
    }

    /// `max.connections` counts every address, `max.connections.per.ip` each one; a dropped slot frees its place.
    #[test]
    fn connection_slots_are_bounded_in_total_and_per_address() {
        let limits = limits_from("\"max.connections.per.ip\" = 2", 3);
        let first: IpAddr = "127.0.0.1".parse().unwrap();
        let second: IpAddr = "127.0.0.2".parse().unwrap();
        let a = limits.try_open(first).unwrap();
        let _b = limits.try_open(first).unwrap();
        let error = limits.try_open(first).err().unwrap();
        assert!(error.contains("max.connections.per.ip is 2"), "{error}");
        let _c = limits.try_open(second).unwrap();
        let error = limits.try_open(second).err().unwrap();
        assert!(error.contains("max.connections is 3"), "{error}");
        drop(a);
        assert_eq!(limits.connection_count(), 2);
        let _d = limits.try_open(second).unwrap();
        assert_eq!(limits.connection_count(), 3);
    }
}
