//! A minimal Kafka client: framing over a blocking TCP socket, version negotiation with ApiVersions, and
//! ListOffsets (Metadata and CreateTopics are in `cluster`). Requests and responses are encoded by the
//! `kafka-protocol` crate; record batches are ours (`batch.rs`).
//!
//! A connection splits into a `RequestWriter` and a `ResponseReader` so that one thread can keep several requests
//! in flight while another reads the answers, which Kafka returns in request order.

use std::fmt;
use std::io::{self, BufReader, Read};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use bytes::{BufMut, Bytes};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, ListOffsetsRequest, ListOffsetsResponse, RequestHeader,
    ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};

use crate::frame::SegmentedFrame;

/// Largest response frame accepted: a Fetch response is bounded by the `max_bytes` we ask for (50 MiB by default)
/// plus headers, so 256 MiB leaves room and still stops a garbage length from allocating gigabytes.
const FRAME_SIZE_MAX: usize = 256 << 20;
/// Socket reads and writes give up after this long, so a stalled broker ends a run instead of hanging it.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
const CLIENT_ID: &str = "sluice-bench";

#[derive(Debug)]
pub enum ClientError {
    Io(io::Error),
    Codec { api: &'static str, message: String },
    FrameTooLarge(usize),
    CorrelationMismatch { expected: i32, received: i32 },
    Unsupported { api: &'static str, broker_min: i16, broker_max: i16, ours_min: i16, ours_max: i16 },
    Broker { what: String, error_code: i16 },
}

impl fmt::Display for ClientError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Io(error) => write!(formatter, "I/O: {error}"),
            ClientError::Codec { api, message } => write!(formatter, "{api} codec: {message}"),
            ClientError::FrameTooLarge(size) => {
                write!(formatter, "response frame of {size} bytes exceeds the {FRAME_SIZE_MAX}-byte limit")
            }
            ClientError::CorrelationMismatch { expected, received } => {
                write!(formatter, "response correlation id {received}, expected {expected}")
            }
            ClientError::Unsupported { api, broker_min, broker_max, ours_min, ours_max } => write!(
                formatter,
                "{api}: broker supports versions {broker_min}..={broker_max}, sluice-bench needs {ours_min}..={ours_max}"
            ),
            ClientError::Broker { what, error_code } => write!(formatter, "{what}: Kafka error code {error_code}"),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<io::Error> for ClientError {
    fn from(error: io::Error) -> Self {
        ClientError::Io(error)
    }
}

/// The API versions both sides speak. Produce and Fetch stop at 12 because 13 names topics by id only.
#[derive(Debug, Clone, Copy)]
pub struct Versions {
    pub produce: i16,
    pub fetch: i16,
    pub metadata: i16,
    pub create_topics: i16,
    pub list_offsets: i16,
}

/// (API, lowest we can speak, highest we want).
const VERSIONS_OURS: [(ApiKey, &str, i16, i16); 5] = [
    (ApiKey::Produce, "Produce", 3, 12),
    (ApiKey::Fetch, "Fetch", 4, 12),
    (ApiKey::Metadata, "Metadata", 1, 12),
    (ApiKey::CreateTopics, "CreateTopics", 2, 7),
    (ApiKey::ListOffsets, "ListOffsets", 1, 7),
];

pub struct RequestWriter {
    stream: TcpStream,
    frame: SegmentedFrame,
    correlation_id_next: i32,
}

pub struct ResponseReader {
    reader: BufReader<TcpStream>,
}

pub struct Connection {
    pub writer: RequestWriter,
    pub reader: ResponseReader,
}

fn codec_error<E: fmt::Display>(api: &'static str) -> impl Fn(E) -> ClientError {
    move |error| ClientError::Codec { api, message: error.to_string() }
}

impl Connection {
    pub fn connect(address: &str) -> Result<Self, ClientError> {
        let socket_address = address.to_socket_addrs()?.next().ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, format!("{address} resolves to nothing"))
        })?;
        let stream = TcpStream::connect_timeout(&socket_address, Duration::from_secs(10))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        let read_half = stream.try_clone()?;
        Ok(Connection {
            writer: RequestWriter { stream, frame: SegmentedFrame::default(), correlation_id_next: 1 },
            reader: ResponseReader { reader: BufReader::with_capacity(256 << 10, read_half) },
        })
    }

    /// Splits the connection into its writer and the socket's read side without a buffer, for a thread that reads
    /// many connections' responses itself as they become readable (`pool`).
    pub fn into_writer_and_socket(self) -> (RequestWriter, TcpStream) {
        let Connection { writer, reader } = self;
        (writer, reader.reader.into_inner())
    }

    /// One request, one response.
    pub fn call<R: Request>(&mut self, request: &R, version: i16) -> Result<R::Response, ClientError> {
        let correlation_id = self.writer.send(request, version)?;
        self.reader.receive::<R>(version, correlation_id)
    }

    /// Asks the broker which versions it speaks (ApiVersions v0, which every broker answers) and picks the highest
    /// version of each API that both sides support.
    pub fn negotiate_versions(&mut self) -> Result<Versions, ClientError> {
        let response: ApiVersionsResponse = self.call(&ApiVersionsRequest::default(), 0)?;
        if response.error_code != 0 {
            return Err(ClientError::Broker { what: "ApiVersions".into(), error_code: response.error_code });
        }
        let mut chosen = [0i16; 5];
        for (slot, (key, name, ours_min, ours_max)) in chosen.iter_mut().zip(VERSIONS_OURS) {
            let broker = response.api_keys.iter().find(|api| api.api_key == key as i16);
            let (broker_min, broker_max) = broker.map_or((-1, -1), |api| (api.min_version, api.max_version));
            let version = broker_max.min(ours_max);
            if version < ours_min || version < broker_min {
                return Err(ClientError::Unsupported {
                    api: name,
                    broker_min,
                    broker_max,
                    ours_min,
                    ours_max,
                });
            }
            *slot = version;
        }
        Ok(Versions {
            produce: chosen[0],
            fetch: chosen[1],
            metadata: chosen[2],
            create_topics: chosen[3],
            list_offsets: chosen[4],
        })
    }
}

impl RequestWriter {
    /// The correlation id the next `send` will use.
    pub fn next_correlation_id(&self) -> i32 {
        self.correlation_id_next
    }

    /// Encodes and writes one request; returns its correlation id.
    pub fn send<R: Request>(&mut self, request: &R, version: i16) -> Result<i32, ClientError> {
        self.send_borrowing(request, version, &[])
    }

    /// Like `send`, but the request's fields that are exactly one of `borrowed` (record batches) are written from
    /// where they are instead of being copied into the frame.
    pub fn send_borrowing<R: Request>(
        &mut self,
        request: &R,
        version: i16,
        borrowed: &[Bytes],
    ) -> Result<i32, ClientError> {
        let api = api_name(R::KEY);
        let correlation_id = self.correlation_id_next;
        self.correlation_id_next = self.correlation_id_next.wrapping_add(1);
        let mut header = RequestHeader::default();
        header.request_api_key = R::KEY;
        header.request_api_version = version;
        header.correlation_id = correlation_id;
        header.client_id = Some(StrBytes::from_static_str(CLIENT_ID));
        let header_version = R::header_version(version);
        let size = header.compute_size(header_version).map_err(codec_error(api))?
            + request.compute_size(version).map_err(codec_error(api))?;
        let frame = &mut self.frame;
        frame.clear();
        for batch in borrowed {
            frame.allow_borrow(batch);
        }
        frame.put_i32(size as i32);
        header.encode(frame, header_version).map_err(codec_error(api))?;
        request.encode(frame, version).map_err(codec_error(api))?;
        assert_eq!(frame.len(), size + 4, "compute_size agrees with encode");
        frame.write_to(&mut self.stream)?;
        Ok(correlation_id)
    }
}

impl ResponseReader {
    /// Reads one response frame and checks its correlation id.
    pub fn receive<R: Request>(
        &mut self,
        version: i16,
        correlation_id: i32,
    ) -> Result<R::Response, ClientError> {
        let frame = self.receive_frame()?;
        decode_response::<R>(frame, version, correlation_id)
    }

    fn receive_frame(&mut self) -> Result<Bytes, ClientError> {
        let mut size_bytes = [0u8; 4];
        self.reader.read_exact(&mut size_bytes)?;
        let size = i32::from_be_bytes(size_bytes);
        let size = usize::try_from(size).map_err(|_| ClientError::FrameTooLarge(0))?;
        if size > FRAME_SIZE_MAX {
            return Err(ClientError::FrameTooLarge(size));
        }
        // read_to_end fills spare capacity without zeroing it first: a 4 MiB fetch response is not memset.
        let mut frame = Vec::with_capacity(size);
        (&mut self.reader).take(size as u64).read_to_end(&mut frame)?;
        if frame.len() != size {
            return Err(ClientError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("connection closed {} bytes into a {size}-byte frame", frame.len()),
            )));
        }
        Ok(Bytes::from(frame))
    }
}

/// Decodes one response frame (without its size prefix) and checks its correlation id.
pub fn decode_response<R: Request>(
    mut frame: Bytes,
    version: i16,
    correlation_id: i32,
) -> Result<R::Response, ClientError> {
    let api = api_name(R::KEY);
    let header_version = <R::Response as kafka_protocol::protocol::HeaderVersion>::header_version(version);
    let header = ResponseHeader::decode(&mut frame, header_version).map_err(codec_error(api))?;
    if header.correlation_id != correlation_id {
        return Err(ClientError::CorrelationMismatch {
            expected: correlation_id,
            received: header.correlation_id,
        });
    }
    R::Response::decode(&mut frame, version).map_err(codec_error(api))
}

/// The size of the first response frame in `buffer` (after its 4-byte size prefix), if the prefix is there.
pub fn frame_size(buffer: &[u8]) -> Result<Option<usize>, ClientError> {
    let Some(prefix) = buffer.get(..4) else {
        return Ok(None);
    };
    let size = i32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
    let size = usize::try_from(size).map_err(|_| ClientError::FrameTooLarge(0))?;
    if size > FRAME_SIZE_MAX {
        return Err(ClientError::FrameTooLarge(size));
    }
    Ok(Some(size))
}

fn api_name(key: i16) -> &'static str {
    match ApiKey::try_from(key) {
        Ok(ApiKey::Produce) => "Produce",
        Ok(ApiKey::Fetch) => "Fetch",
        Ok(ApiKey::Metadata) => "Metadata",
        Ok(ApiKey::CreateTopics) => "CreateTopics",
        Ok(ApiKey::ListOffsets) => "ListOffsets",
        Ok(ApiKey::ApiVersions) => "ApiVersions",
        _ => "request",
    }
}

pub fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_owned()))
}

/// Kafka's special ListOffsets timestamps.
pub const OFFSET_LATEST: i64 = -1;
pub const OFFSET_EARLIEST: i64 = -2;

/// The offset at `timestamp` (OFFSET_EARLIEST or OFFSET_LATEST) of each listed partition, in the same order.
pub fn list_offsets(
    connection: &mut Connection,
    versions: &Versions,
    topic: &str,
    partitions: &[i32],
    timestamp: i64,
) -> Result<Vec<i64>, ClientError> {
    let mut request_topic = ListOffsetsTopic::default();
    request_topic.name = topic_name(topic);
    request_topic.partitions = partitions
        .iter()
        .map(|&partition| {
            let mut entry = ListOffsetsPartition::default();
            entry.partition_index = partition;
            entry.current_leader_epoch = -1;
            entry.timestamp = timestamp;
            entry
        })
        .collect();
    let mut request = ListOffsetsRequest::default();
    request.replica_id = kafka_protocol::messages::BrokerId(-1);
    request.topics = vec![request_topic];
    let response: ListOffsetsResponse = connection.call(&request, versions.list_offsets)?;
    let mut offsets = Vec::with_capacity(partitions.len());
    for &partition in partitions {
        let found = response
            .topics
            .iter()
            .flat_map(|topic| topic.partitions.iter())
            .find(|entry| entry.partition_index == partition);
        match found {
            Some(entry) if entry.error_code == 0 => offsets.push(entry.offset),
            Some(entry) => {
                return Err(ClientError::Broker {
                    what: format!("ListOffsets {topic}/{partition}"),
                    error_code: entry.error_code,
                })
            }
            None => {
                return Err(ClientError::Broker {
                    what: format!("ListOffsets {topic}/{partition} missing"),
                    error_code: 3,
                })
            }
        }
    }
    Ok(offsets)
}
