//! `AdminClient`: a small blocking Kafka client for the operator commands.
//!
//! One request at a time over a std `TcpStream`, encoded by the `kafka-protocol` codec. Every connection asks
//! ApiVersions (v0, which every broker answers) first and each call picks the highest version both sides speak.
//! Every read and write is bounded by the call's deadline (the socket timeout is set to what is left of it before
//! each system call, so a broker that trickles bytes cannot stretch a call), and a response frame longer than
//! `FRAME_SIZE_MAX` is refused before anything is allocated for it.
//!
//! Admin requests (ElectLeaders, AlterPartitionReassignments, ListPartitionReassignments) go to the controller the
//! Metadata answer names, as Kafka's admin client sends them: a KRaft Kafka or a Sluice broker answers them from any
//! broker, a ZooKeeper-era Kafka only from its controller. NOT_CONTROLLER or a lost connection sends the request
//! again after a fresh Metadata, at most `CONTROLLER_ATTEMPT_COUNT_MAX` times; all three APIs may be repeated
//! (submitting the same target or election twice changes nothing the second time).

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::thread;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, MetadataRequest, MetadataResponse, RequestHeader,
    ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};

use super::view::ClusterView;

/// Largest response frame accepted. The biggest answers these commands read are Metadata and
/// ListPartitionReassignments for every partition of a cluster: about 50 bytes a partition at replication factor
/// 3, so 10 MB for 200,000 partitions. 64 MiB leaves six times that and still stops a garbage length from
/// allocating gigabytes.
pub const FRAME_SIZE_MAX: usize = 64 << 20;
/// A connection attempt to one address gives up after this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// What a call waits beyond the `timeout_ms` it gives the broker: the broker's answer to a request that timed out
/// on its side still has to travel back.
pub const RESPONSE_SLACK: Duration = Duration::from_secs(5);
/// Attempts of one admin request against NOT_CONTROLLER or a lost connection.
const CONTROLLER_ATTEMPT_COUNT_MAX: u32 = 3;
/// Pause before another attempt, so a controller election in progress can finish.
const CONTROLLER_RETRY_PAUSE: Duration = Duration::from_millis(500);
/// Kafka's NOT_CONTROLLER.
pub const NOT_CONTROLLER: i16 = 41;
const CLIENT_ID: &str = "sluice-admin";

#[derive(Debug)]
pub enum ClientError {
    Io { address: String, error: io::Error },
    TimedOut { address: String, what: &'static str },
    Closed { address: String },
    FrameTooLarge { address: String, size: i64 },
    Codec { api: String, message: String },
    CorrelationMismatch { address: String, expected: i32, received: i32 },
    Unsupported { address: String, api: String, broker: Option<(i16, i16)>, ours: (i16, i16) },
    NoBootstrap { servers: String, errors: Vec<String> },
}

impl fmt::Display for ClientError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Io { address, error } => write!(formatter, "{address}: {error}"),
            ClientError::TimedOut { address, what } => write!(formatter, "{address}: timed out {what}"),
            ClientError::Closed { address } => write!(formatter, "{address}: the broker closed the connection"),
            ClientError::FrameTooLarge { address, size } => write!(
                formatter,
                "{address}: response frame of {size} bytes is outside 0..={FRAME_SIZE_MAX} (not a Kafka broker?)"
            ),
            ClientError::Codec { api, message } => write!(formatter, "{api}: cannot decode the answer: {message}"),
            ClientError::CorrelationMismatch { address, expected, received } => {
                write!(formatter, "{address}: response correlation id {received}, expected {expected}")
            }
            ClientError::Unsupported { address, api, broker: None, .. } => {
                write!(formatter, "{address}: the broker does not support {api}")
            }
            ClientError::Unsupported { address, api, broker: Some((low, high)), ours: (ours_low, ours_high) } => {
                write!(
                    formatter,
                    "{address}: the broker speaks {api} versions {low}..={high}, sluice needs {ours_low}..={ours_high}"
                )
            }
            ClientError::NoBootstrap { servers, errors } => {
                write!(formatter, "no broker of {servers} answered: {}", errors.join("; "))
            }
        }
    }
}

impl std::error::Error for ClientError {}

fn codec_error<E: fmt::Display>(key: i16) -> impl Fn(E) -> ClientError {
    move |error| ClientError::Codec { api: api_name(key), message: error.to_string() }
}

fn api_name(key: i16) -> String {
    match ApiKey::try_from(key) {
        Ok(api) => format!("{api:?}"),
        Err(()) => format!("API {key}"),
    }
}

/// One broker connection with the versions it speaks.
pub struct Connection {
    stream: TcpStream,
    address: String,
    correlation_id_next: i32,
    /// API key → (lowest, highest) version, from its ApiVersions answer.
    versions: BTreeMap<i16, (i16, i16)>,
}

impl Connection {
    /// Connects to `address` (HOST:PORT) and asks its ApiVersions, all before `deadline`.
    pub fn open(address: &str, deadline: Instant) -> Result<Connection, ClientError> {
        let io_error = |error| ClientError::Io { address: address.to_owned(), error };
        let socket_addresses = address.to_socket_addrs().map_err(io_error)?;
        let mut last_error = io::Error::new(io::ErrorKind::NotFound, "resolves to no address");
        let mut connected = None;
        for socket_address in socket_addresses {
            let remaining = remaining(deadline, address, "connecting")?;
            match TcpStream::connect_timeout(&socket_address, remaining.min(CONNECT_TIMEOUT)) {
                Ok(stream) => {
                    connected = Some(stream);
                    break;
                }
                Err(error) => last_error = error,
            }
        }
        let stream = connected.ok_or_else(|| io_error(last_error))?;
        stream.set_nodelay(true).map_err(io_error)?;
        let mut connection = Connection {
            stream,
            address: address.to_owned(),
            correlation_id_next: 1,
            versions: BTreeMap::new(),
        };
        let answer: ApiVersionsResponse = connection.call(&ApiVersionsRequest::default(), 0, deadline)?;
        if answer.error_code != 0 {
            return Err(ClientError::Io {
                address: address.to_owned(),
                error: io::Error::other(format!(
                    "ApiVersions answered {}",
                    super::error_name(answer.error_code)
                )),
            });
        }
        connection.versions =
            answer.api_keys.iter().map(|api| (api.api_key, (api.min_version, api.max_version))).collect();
        Ok(connection)
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    /// The highest version of `R` in `ours` (lowest, highest) that this broker speaks too.
    pub fn version<R: Request>(&self, ours: (i16, i16)) -> Result<i16, ClientError> {
        let broker = self.versions.get(&R::KEY).copied();
        let unsupported = || ClientError::Unsupported {
            address: self.address.clone(),
            api: api_name(R::KEY),
            broker,
            ours,
        };
        let (low, high) = broker.ok_or_else(unsupported)?;
        let version = high.min(ours.1);
        if version < ours.0 || version < low {
            return Err(unsupported());
        }
        Ok(version)
    }

    /// One request and its response, both before `deadline`.
    pub fn call<R: Request>(
        &mut self,
        request: &R,
        version: i16,
        deadline: Instant,
    ) -> Result<R::Response, ClientError> {
        let api = || api_name(R::KEY);
        let correlation_id = self.correlation_id_next;
        self.correlation_id_next = self.correlation_id_next.wrapping_add(1);
        let mut header = RequestHeader::default();
        header.request_api_key = R::KEY;
        header.request_api_version = version;
        header.correlation_id = correlation_id;
        header.client_id = Some(StrBytes::from_static_str(CLIENT_ID));
        let header_version = R::header_version(version);
        let mut frame = BytesMut::new();
        frame.put_i32(0); // the size, filled in below
        header.encode(&mut frame, header_version).map_err(codec_error(R::KEY))?;
        request.encode(&mut frame, version).map_err(codec_error(R::KEY))?;
        let size = i32::try_from(frame.len() - 4).map_err(|_| ClientError::Codec {
            api: api(),
            message: format!("request of {} bytes", frame.len()),
        })?;
        frame[..4].copy_from_slice(&size.to_be_bytes());
        self.write_all_by(&frame, deadline)?;

        let mut response = self.read_frame_by(deadline)?;
        let header_version = <R::Response as HeaderVersion>::header_version(version);
        let header = ResponseHeader::decode(&mut response, header_version).map_err(codec_error(R::KEY))?;
        if header.correlation_id != correlation_id {
            return Err(ClientError::CorrelationMismatch {
                address: self.address.clone(),
                expected: correlation_id,
                received: header.correlation_id,
            });
        }
        R::Response::decode(&mut response, version).map_err(codec_error(R::KEY))
    }

    fn write_all_by(&mut self, mut bytes: &[u8], deadline: Instant) -> Result<(), ClientError> {
        while !bytes.is_empty() {
            let left = remaining(deadline, &self.address, "sending a request")?;
            self.stream.set_write_timeout(Some(left)).map_err(|error| self.io_error(error))?;
            match self.stream.write(bytes) {
                Ok(0) => return Err(ClientError::Closed { address: self.address.clone() }),
                Ok(written) => bytes = &bytes[written..],
                Err(error) if retry_io(&error) => {}
                Err(error) => return Err(self.io_error(error)),
            }
        }
        Ok(())
    }

    fn read_frame_by(&mut self, deadline: Instant) -> Result<Bytes, ClientError> {
        let mut size_bytes = [0u8; 4];
        self.read_exact_by(&mut size_bytes, deadline)?;
        let size = i32::from_be_bytes(size_bytes);
        let size = usize::try_from(size)
            .ok()
            .filter(|&size| size <= FRAME_SIZE_MAX)
            .ok_or(ClientError::FrameTooLarge { address: self.address.clone(), size: i64::from(size) })?;
        let mut frame = vec![0u8; size];
        self.read_exact_by(&mut frame, deadline)?;
        Ok(Bytes::from(frame))
    }

    fn read_exact_by(&mut self, buffer: &mut [u8], deadline: Instant) -> Result<(), ClientError> {
        let mut filled = 0;
        while filled < buffer.len() {
            let left = remaining(deadline, &self.address, "waiting for the response")?;
            self.stream.set_read_timeout(Some(left)).map_err(|error| self.io_error(error))?;
            match self.stream.read(&mut buffer[filled..]) {
                Ok(0) => return Err(ClientError::Closed { address: self.address.clone() }),
                Ok(read) => filled += read,
                Err(error) if retry_io(&error) => {}
                Err(error) => return Err(self.io_error(error)),
            }
        }
        Ok(())
    }

    fn io_error(&self, error: io::Error) -> ClientError {
        ClientError::Io { address: self.address.clone(), error }
    }
}

/// Interrupted system calls and timeouts of one `read`/`write` go round again; the deadline decides when to stop.
fn retry_io(error: &io::Error) -> bool {
    matches!(error.kind(), io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

/// What is left until `deadline`, or TimedOut (a zero socket timeout would mean "wait forever").
fn remaining(deadline: Instant, address: &str, what: &'static str) -> Result<Duration, ClientError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left < Duration::from_millis(1) {
        return Err(ClientError::TimedOut { address: address.to_owned(), what });
    }
    Ok(left)
}

/// A connection to the cluster: one bootstrap broker, and the controller once an admin request needs it.
pub struct AdminClient {
    bootstrap: Connection,
    controller: Option<Connection>,
    /// Each call's deadline: the `timeout_ms` given to the broker plus `RESPONSE_SLACK`.
    call_timeout: Duration,
    view: ClusterView,
}

impl AdminClient {
    /// Connects to the first broker of `servers` (`HOST:PORT[,HOST:PORT...]`) that answers ApiVersions and reads
    /// the cluster's Metadata.
    pub fn connect(servers: &str, request_timeout: Duration) -> Result<AdminClient, ClientError> {
        let call_timeout = request_timeout + RESPONSE_SLACK;
        let mut errors = Vec::new();
        for address in servers.split(',').map(str::trim).filter(|address| !address.is_empty()) {
            match Connection::open(address, Instant::now() + call_timeout) {
                Ok(bootstrap) => {
                    let mut client = AdminClient {
                        bootstrap,
                        controller: None,
                        call_timeout,
                        view: ClusterView::default(),
                    };
                    client.refresh()?;
                    return Ok(client);
                }
                Err(error) => errors.push(error.to_string()),
            }
        }
        if errors.is_empty() {
            errors.push("no HOST:PORT given".to_owned());
        }
        Err(ClientError::NoBootstrap { servers: servers.to_owned(), errors })
    }

    /// The bootstrap broker's `host:port`, whose Metadata `view` is.
    pub fn bootstrap_address(&self) -> &str {
        self.bootstrap.address()
    }

    /// The cluster as the last Metadata answer described it.
    pub fn view(&self) -> &ClusterView {
        &self.view
    }

    /// Asks the bootstrap broker for Metadata of every topic again.
    pub fn refresh(&mut self) -> Result<&ClusterView, ClientError> {
        let version = self.bootstrap.version::<MetadataRequest>((1, 12))?;
        let mut request = MetadataRequest::default();
        request.topics = None; // every topic
        request.allow_auto_topic_creation = false;
        let deadline = Instant::now() + self.call_timeout;
        let response: MetadataResponse = self.bootstrap.call(&request, version, deadline)?;
        self.view = ClusterView::from_metadata(&response);
        Ok(&self.view)
    }

    /// Sends an admin request to the controller; `ours` is the range of versions we can build, `build` makes the
    /// request for the version chosen and `top_level_error` reads the response's error code. NOT_CONTROLLER or a
    /// lost connection sends it again after a fresh Metadata, at most `CONTROLLER_ATTEMPT_COUNT_MAX` times.
    pub fn call_controller<R: Request>(
        &mut self,
        ours: (i16, i16),
        build: impl Fn(i16) -> R,
        top_level_error: impl Fn(&R::Response) -> i16,
    ) -> Result<R::Response, ClientError> {
        let mut attempt = 1;
        loop {
            let deadline = Instant::now() + self.call_timeout;
            let connection = self.controller_connection();
            let version = connection.version::<R>(ours)?;
            let result = connection.call(&build(version), version, deadline);
            let retry = match &result {
                Ok(response) => top_level_error(response) == NOT_CONTROLLER,
                Err(ClientError::Io { .. } | ClientError::Closed { .. }) => true,
                Err(_) => false,
            };
            if !retry || attempt >= CONTROLLER_ATTEMPT_COUNT_MAX {
                return result;
            }
            attempt += 1;
            self.controller = None;
            thread::sleep(CONTROLLER_RETRY_PAUSE);
            // A bootstrap broker that itself went away ends the command here rather than on the next attempt.
            self.refresh()?;
        }
    }

    /// The controller's connection, opened on first use; the bootstrap broker when the controller is unknown, is
    /// the bootstrap broker itself, or cannot be reached (a KRaft Kafka or a Sluice broker answers admin requests
    /// from any broker; an old Kafka then says NOT_CONTROLLER, which the caller reports).
    fn controller_connection(&mut self) -> &mut Connection {
        let address = self.view.brokers.get(&self.view.controller_id).cloned();
        let wanted = match address {
            Some(address) if address != self.bootstrap.address => Some(address),
            _ => None,
        };
        match wanted {
            None => &mut self.bootstrap,
            Some(address) => {
                let reusable = self.controller.as_ref().is_some_and(|open| open.address == address);
                if !reusable {
                    self.controller = Connection::open(&address, Instant::now() + self.call_timeout).ok();
                }
                match self.controller.as_mut() {
                    Some(connection) => connection,
                    None => &mut self.bootstrap,
                }
            }
        }
    }
}
