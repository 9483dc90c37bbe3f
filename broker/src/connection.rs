//! One client connection: read `i32 size` frames, decode, run each request as its own task, and write the
//! responses strictly in request order (a FIFO of response tasks). Produce requests are processed one after
//! another up to *sequenced* so that pipelined produces keep their order; everything after (durability,
//! replication) overlaps with later requests.
//!
//! Responses are lists of `Bytes` chunks written with `sendmsg` (vectored, no copy); when the socket is full the
//! writer falls back to glommio's readiness-driven write for one chunk, then resumes vectored writes.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::local_channel;
use glommio::net::TcpStream;
use kafka_protocol::messages::ApiKey;

use crate::codec::{self, CodecError};
use crate::handlers::{self, Response};
use crate::shard::Shard;
use crate::sync::oneshot;

/// Bytes asked of the socket per read; frames larger than this are read in several steps.
const READ_CHUNK_SIZE: usize = 64 * 1024;
/// iovecs per sendmsg call (well under IOV_MAX = 1024).
const IOVEC_COUNT_MAX: usize = 64;

/// What a request task hands the writer.
pub type ResponseTask = glommio::Task<Result<Option<Response>, CodecError>>;

#[allow(clippy::too_many_lines)] // over 70 lines before the limit; to be split
pub async fn serve(shard: Rc<Shard>, stream: TcpStream, queue: glommio::TaskQueueHandle) {
    shard.connection_opened();
    let peer = stream.peer_addr().map(|address| address.to_string()).unwrap_or_else(|_| "?".into());
    // Kafka's spelling of a member's host in DescribeGroups: "/" and the address.
    let client_host: Rc<str> = stream
        .peer_addr()
        .map(|address| format!("/{}", address.ip()))
        .unwrap_or_else(|_| "/unknown".into())
        .into();
    let _ = stream.set_nodelay(true);
    let fd = stream.as_raw_fd();
    let (mut reader, writer) = futures_lite::io::split(stream);
    let (response_sender, response_receiver) =
        local_channel::new_bounded::<ResponseTask>(shard.config.connection_inflight_max);
    let writer_task =
        glommio::spawn_local_into(write_responses(fd, writer, response_receiver, peer.clone()), queue);
    let mut buffer = BytesMut::with_capacity(READ_CHUNK_SIZE);
    loop {
        let frame = futures_lite::future::or(
            async { Some(read_frame(&shard, &mut reader, &mut buffer).await) },
            async {
                if !shard.is_shutting_down() {
                    shard.shutdown.notified().await;
                }
                None
            },
        )
        .await;
        let frame = match frame {
            None => break,           // shutdown: stop reading, finish what was read
            Some(Ok(None)) => break, // the client closed
            Some(Ok(Some(frame))) => frame,
            Some(Err(reason)) => {
                log::warn!("closing connection from {peer}: {reason}");
                break;
            }
        };
        let request = match codec::decode_request(frame) {
            Ok(request) => request,
            Err(CodecError::UnsupportedVersion { api_key: ApiKey::ApiVersions, correlation_id, .. }) => {
                // KIP-511: answer in the v0 layout so the client can retry with a version we know.
                let response = handlers::api_versions::unsupported_version_response(correlation_id);
                let task = glommio::spawn_local_into(async move { response.map(Some) }, queue);
                match task {
                    Ok(task) => {
                        if response_sender.send(task).await.is_err() {
                            break;
                        }
                    }
                    Err(_) => break,
                }
                continue;
            }
            Err(error) => {
                log::warn!("closing connection from {peer}: {error}");
                break;
            }
        };
        let is_produce = request.api_key == ApiKey::Produce;
        let (sequenced_sender, sequenced_receiver) = oneshot::<()>();
        let handler_shard = shard.clone();
        let host = client_host.clone();
        let task = glommio::spawn_local_into(
            async move { handlers::handle(&handler_shard, request, sequenced_sender, &host).await },
            queue,
        );
        let Ok(task) = task else { break };
        if response_sender.send(task).await.is_err() {
            break;
        }
        if is_produce {
            // The next request waits until this produce's offsets are fixed (or it failed).
            let _ = sequenced_receiver.await;
        }
        glommio::yield_if_needed().await;
    }
    drop(response_sender);
    if let Ok(task) = writer_task {
        task.await;
    }
    shard.connection_closed();
}

/// Reads one frame. `Ok(None)` is a clean close between frames.
async fn read_frame(
    shard: &Shard,
    reader: &mut (impl futures_lite::AsyncRead + Unpin),
    buffer: &mut BytesMut,
) -> Result<Option<Bytes>, String> {
    if !fill(reader, buffer, 4).await? {
        return if buffer.is_empty() {
            Ok(None)
        } else {
            Err("connection closed inside a frame header".into())
        };
    }
    let size = i32::from_be_bytes([buffer[0], buffer[1], buffer[2], buffer[3]]);
    if size < 0 || size as usize > shard.config.request_size_max {
        return Err(format!(
            "request frame of {size} bytes exceeds socket.request.max.bytes {}",
            shard.config.request_size_max
        ));
    }
    let size = size as usize;
    if !fill(reader, buffer, 4 + size).await? {
        return Err(format!("connection closed inside a {size}-byte frame"));
    }
    let _ = buffer.split_to(4);
    Ok(Some(buffer.split_to(size).freeze()))
}

/// Reads until `buffer` holds at least `size` bytes; false on end of stream.
async fn fill(
    reader: &mut (impl futures_lite::AsyncRead + Unpin),
    buffer: &mut BytesMut,
    size: usize,
) -> Result<bool, String> {
    while buffer.len() < size {
        let start = buffer.len();
        let want = (size - start).max(READ_CHUNK_SIZE);
        buffer.resize(start + want, 0);
        let read = reader.read(&mut buffer[start..]).await;
        match read {
            Ok(0) => {
                buffer.truncate(start);
                return Ok(false);
            }
            Ok(count) => buffer.truncate(start + count),
            Err(error) => {
                buffer.truncate(start);
                return Err(format!("read failed: {error}"));
            }
        }
    }
    Ok(true)
}

async fn write_responses(
    fd: RawFd,
    mut writer: futures_lite::io::WriteHalf<TcpStream>,
    receiver: local_channel::LocalReceiver<ResponseTask>,
    peer: String,
) {
    while let Some(task) = receiver.recv().await {
        match task.await {
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
