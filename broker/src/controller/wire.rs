//! The controller listener's protocol: what voters and brokers say to each other on the address of their
//! `controller.quorum.voters` entry. Kafka's KRaft speaks its own RPCs there (Vote, BeginQuorumEpoch, Fetch);
//! Sluice's quorum is raft-rs, whose messages it carries as they are (protobuf), next to a few request/response
//! calls: forwarded admin writes, broker heartbeats (registration included), metadata fetches for broker-only
//! nodes, and DescribeQuorum.
//!
//! A frame is `length: u32` (of what follows), `kind: u8`, then the body. Bodies use the metadata log's codec
//! (`sluice_replication::metadata::codec`), so records and registrations have one encoding.

use std::io::{Read, Write};

use protobuf::Message as _;
use raft::eraftpb::Message;
use sluice_replication::metadata::codec::{
    decode_config_resource, decode_registration, encode_config_resource, encode_registration, CodecError,
    Reader, Writer,
};
use sluice_replication::metadata::{
    AdminRequest, BrokerEpoch, BrokerRegistration, ReassignmentTarget, TopicId,
};
use sluice_replication::partition::AlterPartitionRequest;
use sluice_replication::{LeaderEpoch, NodeId};

/// Largest frame accepted: a metadata image of 100,000 partitions is a few MiB.
pub const FRAME_SIZE_MAX: usize = 256 << 20;

const KIND_RAFT: u8 = 1;
const KIND_REQUEST: u8 = 2;
const KIND_RESPONSE: u8 = 3;

#[derive(Debug)]
pub enum Frame {
    /// One raft-rs message between voters; never answered.
    Raft(Message),
    Request {
        correlation: u64,
        request: ControlRequest,
    },
    Response {
        correlation: u64,
        response: ControlResponse,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ControlRequest {
    /// An admin write, answered once committed (or at once when `validate_only`).
    Admin {
        request: AdminRequest,
        validate_only: bool,
    },
    /// A broker's heartbeat; with `broker_epoch` 0 (or an unknown incarnation) it registers the broker first.
    Heartbeat {
        registration: BrokerRegistration,
        broker_epoch: u64,
        metadata_offset: u64,
        want_fence: bool,
    },
    /// The image, when the responder's is newer than `applied_index`; else waits up to `wait_ms` for one.
    FetchMetadata {
        applied_index: u64,
        wait_ms: u32,
    },
    DescribeQuorum,
    /// KIP-497's AlterPartition: a leader proposes a new ISR for one partition; answered `Done` once committed
    /// (or at once when it was already), or `Error` with Kafka's code.
    AlterPartition {
        topic_id: TopicId,
        partition: i32,
        request: AlterPartitionRequest,
    },
    /// ElectLeaders (`election`: Kafka's 0 preferred, 1 unclean; `None`: every partition).
    ElectLeaders {
        election: i8,
        partitions: Option<Vec<(String, i32)>>,
    },
    /// AlterPartitionReassignments: a target replica list per partition, `None` to cancel (KIP-455).
    AlterReassignments {
        targets: Vec<ReassignmentTarget>,
    },
    /// A broker could not reach `broker`'s Kafka listener (connection refused or reset): evidence of a dead
    /// process, faster than a missed heartbeat. The controller decides (see `service`).
    BrokerUnreachable {
        reporter: NodeId,
        broker: NodeId,
        broker_epoch: BrokerEpoch,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VoterState {
    pub id: i32,
    /// The last log index known replicated on that voter (its log end, less one).
    pub matched: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuorumState {
    pub leader: i32,
    pub term: u64,
    pub commit_index: u64,
    pub voters: Vec<VoterState>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ControlResponse {
    /// An admin write committed at `index` (0 for a validation only).
    Done {
        index: u64,
    },
    /// A producer-id block now belongs to the caller.
    ProducerIds {
        first: i64,
        size: i32,
    },
    Heartbeat {
        broker_epoch: u64,
        fenced: bool,
    },
    /// `None`: nothing newer within the wait.
    Metadata {
        image: Option<Vec<u8>>,
    },
    Quorum(QuorumState),
    /// Only the active controller serves this; `leader` is who is, when known.
    NotController {
        leader: Option<i32>,
    },
    /// Per-partition answers (ElectLeaders, AlterPartitionReassignments), committed at `index`: topic,
    /// partition, Kafka's code and its sentence.
    PartitionResults {
        index: u64,
        results: Vec<(String, i32, i16, String)>,
    },
    /// Refused: a Kafka error code and the sentence for the client.
    Error {
        code: i16,
        message: String,
    },
}

#[derive(Debug)]
pub enum WireError {
    Io(std::io::Error),
    TooLarge(usize),
    Codec(CodecError),
    Kind(u8),
    Raft(String),
}

impl std::fmt::Display for WireError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::Io(error) => write!(formatter, "{error}"),
            WireError::TooLarge(size) => write!(formatter, "frame of {size} bytes exceeds {FRAME_SIZE_MAX}"),
            WireError::Codec(error) => write!(formatter, "malformed frame: {error}"),
            WireError::Kind(kind) => write!(formatter, "unknown frame kind {kind}"),
            WireError::Raft(error) => write!(formatter, "malformed raft message: {error}"),
        }
    }
}

impl From<std::io::Error> for WireError {
    fn from(error: std::io::Error) -> WireError {
        WireError::Io(error)
    }
}

impl From<CodecError> for WireError {
    fn from(error: CodecError) -> WireError {
        WireError::Codec(error)
    }
}

/// The frame's bytes, length prefix included.
pub fn encode(frame: &Frame) -> Vec<u8> {
    let mut writer = Writer::new();
    match frame {
        Frame::Raft(message) => {
            writer.u8(KIND_RAFT);
            let mut bytes = writer.into_bytes();
            // A message that cannot be encoded is a bug in raft-rs's types; an empty body is refused by the peer.
            bytes.extend(message.write_to_bytes().unwrap_or_default());
            return prefixed(bytes);
        }
        Frame::Request { correlation, request } => {
            writer.u8(KIND_REQUEST);
            writer.u64(*correlation);
            encode_request(&mut writer, request);
        }
        Frame::Response { correlation, response } => {
            writer.u8(KIND_RESPONSE);
            writer.u64(*correlation);
            encode_response(&mut writer, response);
        }
    }
    prefixed(writer.into_bytes())
}

fn prefixed(body: Vec<u8>) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(body.len() + 4);
    bytes.extend_from_slice(&(body.len() as u32).to_be_bytes());
    bytes.extend(body);
    bytes
}

pub fn write_frame(stream: &mut impl Write, frame: &Frame) -> Result<(), WireError> {
    stream.write_all(&encode(frame))?;
    Ok(())
}

/// Reads one frame; `Ok(None)` at a clean end of stream.
pub fn read_frame(stream: &mut impl Read) -> Result<Option<Frame>, WireError> {
    let mut prefix = [0u8; 4];
    match stream.read_exact(&mut prefix) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(error.into()),
    }
    let size = u32::from_be_bytes(prefix) as usize;
    if size == 0 || size > FRAME_SIZE_MAX {
        return Err(WireError::TooLarge(size));
    }
    let mut body = vec![0u8; size];
    stream.read_exact(&mut body)?;
    decode(&body).map(Some)
}

pub fn decode(body: &[u8]) -> Result<Frame, WireError> {
    let mut reader = Reader::new(body);
    let frame = match reader.u8()? {
        KIND_RAFT => {
            let message =
                Message::parse_from_bytes(&body[1..]).map_err(|error| WireError::Raft(error.to_string()))?;
            return Ok(Frame::Raft(message));
        }
        KIND_REQUEST => {
            let correlation = reader.u64()?;
            Frame::Request { correlation, request: decode_request(&mut reader)? }
        }
        KIND_RESPONSE => {
            let correlation = reader.u64()?;
            Frame::Response { correlation, response: decode_response(&mut reader)? }
        }
        kind => return Err(WireError::Kind(kind)),
    };
    reader.finish()?;
    Ok(frame)
}

const REQUEST_CREATE_TOPIC: u8 = 1;
const REQUEST_DELETE_TOPIC: u8 = 2;
const REQUEST_CREATE_PARTITIONS: u8 = 3;
const REQUEST_ALTER_CONFIGS: u8 = 4;
const REQUEST_REGISTER_BROKER: u8 = 5;
const REQUEST_ALLOCATE_PRODUCER_IDS: u8 = 6;
const REQUEST_HEARTBEAT: u8 = 7;
const REQUEST_FETCH_METADATA: u8 = 8;
const REQUEST_DESCRIBE_QUORUM: u8 = 9;
const REQUEST_ALTER_PARTITION: u8 = 10;
const REQUEST_BROKER_UNREACHABLE: u8 = 11;
const REQUEST_ELECT_LEADERS: u8 = 12;
const REQUEST_ALTER_REASSIGNMENTS: u8 = 13;

fn encode_request(writer: &mut Writer, request: &ControlRequest) {
    match request {
        ControlRequest::Admin { request, validate_only } => {
            encode_admin(writer, request);
            writer.bool(*validate_only);
        }
        ControlRequest::Heartbeat { registration, broker_epoch, metadata_offset, want_fence } => {
            writer.u8(REQUEST_HEARTBEAT);
            encode_registration(writer, registration);
            writer.u64(*broker_epoch);
            writer.u64(*metadata_offset);
            writer.bool(*want_fence);
        }
        ControlRequest::FetchMetadata { applied_index, wait_ms } => {
            writer.u8(REQUEST_FETCH_METADATA);
            writer.u64(*applied_index);
            writer.i32(*wait_ms as i32);
        }
        ControlRequest::DescribeQuorum => writer.u8(REQUEST_DESCRIBE_QUORUM),
        ControlRequest::AlterPartition { topic_id, partition, request } => {
            writer.u8(REQUEST_ALTER_PARTITION);
            writer.u128(topic_id.0);
            writer.i32(*partition);
            writer.u64(request.sequence);
            writer.i32(request.leader.0);
            writer.u64(request.broker_epoch.0);
            writer.i32(request.leader_epoch.0);
            writer.i32(request.partition_epoch);
            writer.nodes(&request.isr);
        }
        ControlRequest::ElectLeaders { election, partitions } => {
            writer.u8(REQUEST_ELECT_LEADERS);
            writer.u8(*election as u8);
            writer.bool(partitions.is_some());
            if let Some(partitions) = partitions {
                writer.count(partitions.len());
                for (topic, partition) in partitions {
                    writer.str(topic);
                    writer.i32(*partition);
                }
            }
        }
        ControlRequest::AlterReassignments { targets } => {
            writer.u8(REQUEST_ALTER_REASSIGNMENTS);
            writer.count(targets.len());
            for ((topic, partition), target) in targets {
                writer.str(topic);
                writer.i32(*partition);
                writer.bool(target.is_some());
                if let Some(target) = target {
                    writer.nodes(target);
                }
            }
        }
        ControlRequest::BrokerUnreachable { reporter, broker, broker_epoch } => {
            writer.u8(REQUEST_BROKER_UNREACHABLE);
            writer.i32(reporter.0);
            writer.i32(broker.0);
            writer.u64(broker_epoch.0);
        }
    }
}

fn encode_admin(writer: &mut Writer, request: &AdminRequest) {
    match request {
        AdminRequest::CreateTopic { name, id, partition_count, replication_factor, configs, assignment } => {
            writer.u8(REQUEST_CREATE_TOPIC);
            writer.str(name);
            writer.u128(id.0);
            writer.i32(*partition_count);
            writer.i32(i32::from(*replication_factor));
            writer.string_map(configs);
            encode_assignment(writer, assignment.as_deref());
        }
        AdminRequest::DeleteTopic { name } => {
            writer.u8(REQUEST_DELETE_TOPIC);
            writer.str(name);
        }
        AdminRequest::CreatePartitions { name, partition_count, assignment } => {
            writer.u8(REQUEST_CREATE_PARTITIONS);
            writer.str(name);
            writer.i32(*partition_count);
            encode_assignment(writer, assignment.as_deref());
        }
        AdminRequest::AlterConfigs { resource, changes } => {
            writer.u8(REQUEST_ALTER_CONFIGS);
            encode_config_resource(writer, resource);
            writer.count(changes.len());
            for (key, value) in changes {
                writer.str(key);
                writer.option_str(value.as_deref());
            }
        }
        AdminRequest::RegisterBroker(registration) => {
            writer.u8(REQUEST_REGISTER_BROKER);
            encode_registration(writer, registration);
        }
        AdminRequest::AllocateProducerIds { broker, broker_epoch } => {
            writer.u8(REQUEST_ALLOCATE_PRODUCER_IDS);
            writer.i32(broker.0);
            writer.u64(broker_epoch.0);
        }
    }
}

fn encode_assignment(writer: &mut Writer, assignment: Option<&[Vec<NodeId>]>) {
    writer.bool(assignment.is_some());
    if let Some(assignment) = assignment {
        writer.count(assignment.len());
        for replicas in assignment {
            writer.nodes(replicas);
        }
    }
}

fn decode_assignment(reader: &mut Reader<'_>) -> Result<Option<Vec<Vec<NodeId>>>, CodecError> {
    if !reader.bool()? {
        return Ok(None);
    }
    let count = reader.count(4)?;
    Ok(Some((0..count).map(|_| reader.nodes()).collect::<Result<Vec<_>, _>>()?))
}

fn decode_request(reader: &mut Reader<'_>) -> Result<ControlRequest, WireError> {
    let kind = reader.u8()?;
    let admin = |request: AdminRequest, reader: &mut Reader<'_>| -> Result<ControlRequest, WireError> {
        Ok(ControlRequest::Admin { request, validate_only: reader.bool()? })
    };
    match kind {
        REQUEST_CREATE_TOPIC => {
            let name = reader.string()?;
            let id = TopicId(reader.u128()?);
            let partition_count = reader.i32()?;
            let replication_factor = i16::try_from(reader.i32()?).unwrap_or(i16::MAX);
            let configs = reader.string_map()?;
            let assignment = decode_assignment(reader)?;
            let request = AdminRequest::CreateTopic {
                name,
                id,
                partition_count,
                replication_factor,
                configs,
                assignment,
            };
            admin(request, reader)
        }
        REQUEST_DELETE_TOPIC => admin(AdminRequest::DeleteTopic { name: reader.string()? }, reader),
        REQUEST_CREATE_PARTITIONS => {
            let name = reader.string()?;
            let partition_count = reader.i32()?;
            let assignment = decode_assignment(reader)?;
            admin(AdminRequest::CreatePartitions { name, partition_count, assignment }, reader)
        }
        REQUEST_ALTER_CONFIGS => {
            let resource = decode_config_resource(reader)?;
            let count = reader.count(3)?;
            let changes = (0..count)
                .map(|_| Ok((reader.string()?, reader.option_string()?)))
                .collect::<Result<Vec<_>, CodecError>>()?;
            admin(AdminRequest::AlterConfigs { resource, changes }, reader)
        }
        REQUEST_REGISTER_BROKER => admin(AdminRequest::RegisterBroker(decode_registration(reader)?), reader),
        REQUEST_ALLOCATE_PRODUCER_IDS => {
            let broker = NodeId(reader.i32()?);
            let broker_epoch = BrokerEpoch(reader.u64()?);
            admin(AdminRequest::AllocateProducerIds { broker, broker_epoch }, reader)
        }
        REQUEST_HEARTBEAT => Ok(ControlRequest::Heartbeat {
            registration: decode_registration(reader)?,
            broker_epoch: reader.u64()?,
            metadata_offset: reader.u64()?,
            want_fence: reader.bool()?,
        }),
        REQUEST_FETCH_METADATA => Ok(ControlRequest::FetchMetadata {
            applied_index: reader.u64()?,
            wait_ms: reader.i32()?.max(0) as u32,
        }),
        REQUEST_DESCRIBE_QUORUM => Ok(ControlRequest::DescribeQuorum),
        REQUEST_ALTER_PARTITION => decode_alter_partition(reader),
        REQUEST_ELECT_LEADERS => decode_elect_leaders(reader),
        REQUEST_ALTER_REASSIGNMENTS => decode_alter_reassignments(reader),
        REQUEST_BROKER_UNREACHABLE => Ok(ControlRequest::BrokerUnreachable {
            reporter: NodeId(reader.i32()?),
            broker: NodeId(reader.i32()?),
            broker_epoch: BrokerEpoch(reader.u64()?),
        }),
        kind => Err(WireError::Kind(kind)),
    }
}

fn decode_elect_leaders(reader: &mut Reader<'_>) -> Result<ControlRequest, WireError> {
    let election = reader.u8()? as i8;
    let partitions = if reader.bool()? {
        let count = reader.count(6)?;
        Some(
            (0..count)
                .map(|_| Ok((reader.string()?, reader.i32()?)))
                .collect::<Result<Vec<_>, CodecError>>()?,
        )
    } else {
        None
    };
    Ok(ControlRequest::ElectLeaders { election, partitions })
}

fn decode_alter_reassignments(reader: &mut Reader<'_>) -> Result<ControlRequest, WireError> {
    let count = reader.count(7)?;
    let targets = (0..count)
        .map(|_| {
            let key = (reader.string()?, reader.i32()?);
            let target = if reader.bool()? { Some(reader.nodes()?) } else { None };
            Ok((key, target))
        })
        .collect::<Result<Vec<_>, CodecError>>()?;
    Ok(ControlRequest::AlterReassignments { targets })
}

fn decode_alter_partition(reader: &mut Reader<'_>) -> Result<ControlRequest, WireError> {
    let topic_id = TopicId(reader.u128()?);
    let partition = reader.i32()?;
    let request = AlterPartitionRequest {
        sequence: reader.u64()?,
        leader: NodeId(reader.i32()?),
        broker_epoch: BrokerEpoch(reader.u64()?),
        leader_epoch: LeaderEpoch(reader.i32()?),
        partition_epoch: reader.i32()?,
        isr: reader.nodes()?,
    };
    Ok(ControlRequest::AlterPartition { topic_id, partition, request })
}

const RESPONSE_DONE: u8 = 1;
const RESPONSE_PRODUCER_IDS: u8 = 2;
const RESPONSE_HEARTBEAT: u8 = 3;
const RESPONSE_METADATA: u8 = 4;
const RESPONSE_QUORUM: u8 = 5;
const RESPONSE_NOT_CONTROLLER: u8 = 6;
const RESPONSE_ERROR: u8 = 7;
const RESPONSE_PARTITION_RESULTS: u8 = 8;

fn encode_response(writer: &mut Writer, response: &ControlResponse) {
    match response {
        ControlResponse::Done { index } => {
            writer.u8(RESPONSE_DONE);
            writer.u64(*index);
        }
        ControlResponse::ProducerIds { first, size } => {
            writer.u8(RESPONSE_PRODUCER_IDS);
            writer.i64(*first);
            writer.i32(*size);
        }
        ControlResponse::Heartbeat { broker_epoch, fenced } => {
            writer.u8(RESPONSE_HEARTBEAT);
            writer.u64(*broker_epoch);
            writer.bool(*fenced);
        }
        ControlResponse::Metadata { image } => {
            writer.u8(RESPONSE_METADATA);
            writer.bool(image.is_some());
            if let Some(image) = image {
                writer.count(image.len());
                for byte in image {
                    writer.u8(*byte);
                }
            }
        }
        ControlResponse::Quorum(state) => {
            writer.u8(RESPONSE_QUORUM);
            writer.i32(state.leader);
            writer.u64(state.term);
            writer.u64(state.commit_index);
            writer.count(state.voters.len());
            for voter in &state.voters {
                writer.i32(voter.id);
                writer.u64(voter.matched);
            }
        }
        ControlResponse::NotController { leader } => {
            writer.u8(RESPONSE_NOT_CONTROLLER);
            writer.i32(leader.unwrap_or(-1));
        }
        ControlResponse::PartitionResults { index, results } => {
            writer.u8(RESPONSE_PARTITION_RESULTS);
            writer.u64(*index);
            writer.count(results.len());
            for (topic, partition, code, message) in results {
                writer.str(topic);
                writer.i32(*partition);
                writer.i32(i32::from(*code));
                writer.str(message);
            }
        }
        ControlResponse::Error { code, message } => {
            writer.u8(RESPONSE_ERROR);
            writer.i32(i32::from(*code));
            writer.str(message);
        }
    }
}

fn decode_response(reader: &mut Reader<'_>) -> Result<ControlResponse, WireError> {
    Ok(match reader.u8()? {
        RESPONSE_DONE => ControlResponse::Done { index: reader.u64()? },
        RESPONSE_PRODUCER_IDS => ControlResponse::ProducerIds { first: reader.i64()?, size: reader.i32()? },
        RESPONSE_HEARTBEAT => {
            ControlResponse::Heartbeat { broker_epoch: reader.u64()?, fenced: reader.bool()? }
        }
        RESPONSE_METADATA => {
            let image = if reader.bool()? {
                let count = reader.count(1)?;
                Some((0..count).map(|_| reader.u8()).collect::<Result<Vec<u8>, _>>()?)
            } else {
                None
            };
            ControlResponse::Metadata { image }
        }
        RESPONSE_QUORUM => {
            let leader = reader.i32()?;
            let term = reader.u64()?;
            let commit_index = reader.u64()?;
            let count = reader.count(12)?;
            let voters = (0..count)
                .map(|_| Ok(VoterState { id: reader.i32()?, matched: reader.u64()? }))
                .collect::<Result<Vec<_>, CodecError>>()?;
            ControlResponse::Quorum(QuorumState { leader, term, commit_index, voters })
        }
        RESPONSE_NOT_CONTROLLER => {
            let leader = reader.i32()?;
            ControlResponse::NotController { leader: (leader >= 0).then_some(leader) }
        }
        RESPONSE_PARTITION_RESULTS => {
            let index = reader.u64()?;
            let count = reader.count(14)?;
            let results = (0..count)
                .map(|_| {
                    let topic = reader.string()?;
                    let partition = reader.i32()?;
                    let code = i16::try_from(reader.i32()?).unwrap_or(-1);
                    Ok((topic, partition, code, reader.string()?))
                })
                .collect::<Result<Vec<_>, CodecError>>()?;
            ControlResponse::PartitionResults { index, results }
        }
        RESPONSE_ERROR => {
            let code = i16::try_from(reader.i32()?).unwrap_or(-1);
            ControlResponse::Error { code, message: reader.string()? }
        }
        kind => return Err(WireError::Kind(kind)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_replication::metadata::Listener;

    fn round_trip(frame: Frame) -> Frame {
        let bytes = encode(&frame);
        let mut cursor = std::io::Cursor::new(bytes);
        let decoded = read_frame(&mut cursor).unwrap().unwrap();
        assert_eq!(cursor.position() as usize, cursor.get_ref().len());
        decoded
    }

    /// The replication calls (issue 16) round-trip too.
    #[test]
    fn replication_requests_round_trip() {
        let requests = vec![
            ControlRequest::AlterPartition {
                topic_id: TopicId(u128::MAX - 3),
                partition: 7,
                request: AlterPartitionRequest {
                    sequence: 3,
                    leader: NodeId(2),
                    broker_epoch: BrokerEpoch(41),
                    leader_epoch: LeaderEpoch(5),
                    partition_epoch: 9,
                    isr: vec![NodeId(2), NodeId(0)],
                },
            },
            ControlRequest::BrokerUnreachable {
                reporter: NodeId(1),
                broker: NodeId(3),
                broker_epoch: BrokerEpoch(17),
            },
            ControlRequest::ElectLeaders { election: 1, partitions: Some(vec![("t".into(), 3)]) },
            ControlRequest::ElectLeaders { election: 0, partitions: None },
            ControlRequest::AlterReassignments {
                targets: vec![(("t".into(), 0), Some(vec![NodeId(4), NodeId(1)])), (("u".into(), 2), None)],
            },
        ];
        for request in requests {
            match round_trip(Frame::Request { correlation: 5, request: request.clone() }) {
                Frame::Request { correlation: 5, request: decoded } => assert_eq!(decoded, request),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn requests_and_responses_round_trip() {
        let registration = BrokerRegistration {
            broker: NodeId(2),
            incarnation: 77,
            listeners: vec![Listener { name: "PLAINTEXT".into(), host: "127.0.0.1".into(), port: 9092 }],
            rack: Some("a".into()),
        };
        let requests = vec![
            ControlRequest::Admin {
                request: AdminRequest::CreateTopic {
                    name: "t".into(),
                    id: TopicId(5),
                    partition_count: 3,
                    replication_factor: 2,
                    configs: [("retention.ms".to_string(), "1".to_string())].into(),
                    assignment: Some(vec![vec![NodeId(1), NodeId(2)]; 3]),
                },
                validate_only: true,
            },
            ControlRequest::Admin {
                request: AdminRequest::DeleteTopic { name: "t".into() },
                validate_only: false,
            },
            ControlRequest::Heartbeat {
                registration,
                broker_epoch: 9,
                metadata_offset: 12,
                want_fence: false,
            },
            ControlRequest::FetchMetadata { applied_index: 4, wait_ms: 1000 },
            ControlRequest::DescribeQuorum,
        ];
        for (correlation, request) in requests.into_iter().enumerate() {
            let correlation = correlation as u64;
            match round_trip(Frame::Request { correlation, request: request.clone() }) {
                Frame::Request { correlation: got, request: decoded } => {
                    assert_eq!((got, decoded), (correlation, request));
                }
                other => panic!("{other:?}"),
            }
        }
        let responses = vec![
            ControlResponse::Done { index: 3 },
            ControlResponse::ProducerIds { first: 1000, size: 1000 },
            ControlResponse::Heartbeat { broker_epoch: 3, fenced: true },
            ControlResponse::Metadata { image: Some(vec![1, 2, 3]) },
            ControlResponse::Metadata { image: None },
            ControlResponse::Quorum(QuorumState {
                leader: 1,
                term: 4,
                commit_index: 9,
                voters: vec![VoterState { id: 1, matched: 9 }],
            }),
            ControlResponse::NotController { leader: None },
            ControlResponse::Error { code: 7, message: "no".into() },
            ControlResponse::PartitionResults {
                index: 12,
                results: vec![("t".into(), 1, 0, String::new()), ("t".into(), 2, 84, "not needed".into())],
            },
        ];
        for response in responses {
            match round_trip(Frame::Response { correlation: 1, response: response.clone() }) {
                Frame::Response { response: decoded, .. } => assert_eq!(decoded, response),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn bad_frames_are_refused() {
        assert!(matches!(decode(&[9]), Err(WireError::Kind(9))));
        let mut huge = std::io::Cursor::new(vec![0xff, 0xff, 0xff, 0xff, 1]);
        assert!(matches!(read_frame(&mut huge), Err(WireError::TooLarge(_))));
        let mut empty = std::io::Cursor::new(Vec::<u8>::new());
        assert!(read_frame(&mut empty).unwrap().is_none());
    }
}
