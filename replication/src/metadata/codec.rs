//! The binary encoding of metadata records and record batches: small, versioned, big-endian, and decoded without
//! panicking on any input (a corrupt entry is an error, never a crash).
//!
//! A batch (the data of one Raft entry) is `[format u8 = 1][record count u16][record]*`. A record is `[type u8]
//! [version u8][body]`; every type is at version 0 today, and a decoder refuses a type or version it does not know
//! rather than guess, so a newer node's record stops an older node loudly. The layout only grows: a new fact is a
//! new record type (`ReplicasChange`, type 10, came after types 1–9) or a new version of a type, and every type and
//! version ever written keeps its decoder, because the log is a file in users' data directories
//! (`old_format_batch_decodes` pins bytes written before type 10 existed). Strings are a u16 length and UTF-8 bytes,
//! optional values a 0/1 tag, lists a u32 count. Counts are checked against the bytes that remain before anything
//! is allocated, so a corrupt count cannot ask for gigabytes.
//!
//! Written here rather than with serde and a binary format because none is in the dependency graph, and the
//! layout of the metadata log is a file format that must not change when a crate upgrades.

use std::collections::BTreeMap;
use std::fmt;

use crate::metadata::records::{
    BrokerEpoch, BrokerRegistration, ConfigChange, ConfigResource, Listener, MetadataRecord, PartitionChange,
    PartitionRecord, ProducerIdsBlock, ReplicasChange, TopicId, TopicRecord,
};
use crate::types::{LeaderEpoch, NodeId};

/// The batch layout this code writes and reads.
pub const BATCH_FORMAT: u8 = 1;
/// Most records in one batch: a topic of 10,000 partitions (the start-up figure) plus its topic record.
pub const BATCH_RECORD_COUNT_MAX: usize = 16_384;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CodecError {
    Truncated {
        needed: usize,
        remaining: usize,
    },
    UnknownBatchFormat {
        format: u8,
    },
    UnknownRecordType {
        record_type: u8,
    },
    UnknownRecordVersion {
        record_type: u8,
        version: u8,
    },
    InvalidUtf8 {
        offset: usize,
    },
    InvalidTag {
        tag: u8,
        offset: usize,
    },
    CountTooLarge {
        count: usize,
        count_max: usize,
    },
    TrailingBytes {
        count: usize,
    },
    /// A snapshot's image decoded but breaks the image's own rules.
    InvalidImage {
        reason: String,
    },
}

impl fmt::Display for CodecError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecError::Truncated { needed, remaining } => {
                write!(formatter, "truncated: {needed} more bytes needed, {remaining} remain")
            }
            CodecError::UnknownBatchFormat { format } => write!(formatter, "unknown batch format {format}"),
            CodecError::UnknownRecordType { record_type } => {
                write!(formatter, "unknown record type {record_type}")
            }
            CodecError::UnknownRecordVersion { record_type, version } => {
                write!(formatter, "record type {record_type} has unknown version {version}")
            }
            CodecError::InvalidUtf8 { offset } => write!(formatter, "string at byte {offset} is not UTF-8"),
            CodecError::InvalidTag { tag, offset } => {
                write!(formatter, "tag {tag} at byte {offset} is not 0 or 1")
            }
            CodecError::CountTooLarge { count, count_max } => {
                write!(formatter, "count {count} exceeds the limit of {count_max}")
            }
            CodecError::TrailingBytes { count } => {
                write!(formatter, "{count} bytes left after the last field")
            }
            CodecError::InvalidImage { reason } => write!(formatter, "snapshot image is invalid: {reason}"),
        }
    }
}

impl std::error::Error for CodecError {}

/// Appends big-endian fields to a buffer.
#[derive(Debug, Default)]
pub struct Writer {
    bytes: Vec<u8>,
}

impl Writer {
    pub fn new() -> Writer {
        Writer::default()
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    pub fn u8(&mut self, value: u8) {
        self.bytes.push(value);
    }

    pub fn u16(&mut self, value: u16) {
        self.bytes.extend_from_slice(&value.to_be_bytes());
    }

    pub fn i32(&mut self, value: i32) {
        self.bytes.extend_from_slice(&value.to_be_bytes());
    }

    pub fn u64(&mut self, value: u64) {
        self.bytes.extend_from_slice(&value.to_be_bytes());
    }

    pub fn i64(&mut self, value: i64) {
        self.bytes.extend_from_slice(&value.to_be_bytes());
    }

    pub fn u128(&mut self, value: u128) {
        self.bytes.extend_from_slice(&value.to_be_bytes());
    }

    pub fn bool(&mut self, value: bool) {
        self.u8(u8::from(value));
    }

    /// A list count. Lists in metadata are far below u32::MAX; more is a bug in the caller.
    pub fn count(&mut self, count: usize) {
        let count = u32::try_from(count);
        assert!(count.is_ok(), "a metadata list exceeds u32::MAX items");
        self.bytes.extend_from_slice(&count.unwrap_or(u32::MAX).to_be_bytes());
    }

    /// Strings in metadata are names, hosts and config values, all far below 64 KiB; the controller refuses longer
    /// ones before they reach a record, so a longer one here is a bug.
    pub fn str(&mut self, value: &str) {
        let length = u16::try_from(value.len());
        assert!(length.is_ok(), "a metadata string of {} bytes exceeds 65,535", value.len());
        self.u16(length.unwrap_or(u16::MAX));
        self.bytes.extend_from_slice(value.as_bytes());
    }

    pub fn option_str(&mut self, value: Option<&str>) {
        match value {
            Some(text) => {
                self.u8(1);
                self.str(text);
            }
            None => self.u8(0),
        }
    }

    pub fn nodes(&mut self, nodes: &[NodeId]) {
        self.count(nodes.len());
        for node in nodes {
            self.i32(node.0);
        }
    }

    pub fn string_map(&mut self, map: &BTreeMap<String, String>) {
        self.count(map.len());
        for (key, value) in map {
            self.str(key);
            self.str(value);
        }
    }
}

/// Reads big-endian fields from a slice; every read checks the remaining length first.
#[derive(Debug)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, position: 0 }
    }

    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.position
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        let slice = self.slice(N)?;
        let mut array = [0u8; N];
        array.copy_from_slice(slice);
        Ok(array)
    }

    fn slice(&mut self, length: usize) -> Result<&'a [u8], CodecError> {
        if self.remaining() < length {
            return Err(CodecError::Truncated { needed: length, remaining: self.remaining() });
        }
        let slice = &self.bytes[self.position..self.position + length];
        self.position += length;
        Ok(slice)
    }

    pub fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.take::<1>()?[0])
    }

    pub fn u16(&mut self) -> Result<u16, CodecError> {
        Ok(u16::from_be_bytes(self.take()?))
    }

    pub fn i32(&mut self) -> Result<i32, CodecError> {
        Ok(i32::from_be_bytes(self.take()?))
    }

    pub fn u64(&mut self) -> Result<u64, CodecError> {
        Ok(u64::from_be_bytes(self.take()?))
    }

    pub fn i64(&mut self) -> Result<i64, CodecError> {
        Ok(i64::from_be_bytes(self.take()?))
    }

    pub fn u128(&mut self) -> Result<u128, CodecError> {
        Ok(u128::from_be_bytes(self.take()?))
    }

    pub fn bool(&mut self) -> Result<bool, CodecError> {
        let offset = self.position;
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            tag => Err(CodecError::InvalidTag { tag, offset }),
        }
    }

    /// A list count, refused when even `item_size_min` bytes per item cannot fit in what remains.
    pub fn count(&mut self, item_size_min: usize) -> Result<usize, CodecError> {
        let count = u32::from_be_bytes(self.take()?) as usize;
        let count_max = self.remaining() / item_size_min.max(1);
        if count > count_max {
            return Err(CodecError::CountTooLarge { count, count_max });
        }
        Ok(count)
    }

    pub fn string(&mut self) -> Result<String, CodecError> {
        let length = usize::from(self.u16()?);
        let offset = self.position;
        let bytes = self.slice(length)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| CodecError::InvalidUtf8 { offset })
    }

    pub fn option_string(&mut self) -> Result<Option<String>, CodecError> {
        Ok(if self.bool()? { Some(self.string()?) } else { None })
    }

    pub fn nodes(&mut self) -> Result<Vec<NodeId>, CodecError> {
        let count = self.count(4)?;
        (0..count).map(|_| self.i32().map(NodeId)).collect()
    }

    pub fn string_map(&mut self) -> Result<BTreeMap<String, String>, CodecError> {
        let count = self.count(4)?;
        let mut map = BTreeMap::new();
        for _ in 0..count {
            let key = self.string()?;
            map.insert(key, self.string()?);
        }
        Ok(map)
    }

    pub fn finish(&self) -> Result<(), CodecError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(CodecError::TrailingBytes { count }),
        }
    }
}

// Record type numbers: part of the log's format, never reused.
const TYPE_REGISTER_BROKER: u8 = 1;
const TYPE_FENCE_BROKER: u8 = 2;
const TYPE_UNFENCE_BROKER: u8 = 3;
const TYPE_TOPIC: u8 = 4;
const TYPE_PARTITION: u8 = 5;
const TYPE_PARTITION_CHANGE: u8 = 6;
const TYPE_CONFIG: u8 = 7;
const TYPE_REMOVE_TOPIC: u8 = 8;
const TYPE_PRODUCER_IDS: u8 = 9;
const TYPE_REPLICAS_CHANGE: u8 = 10;
/// Every record type is at its first version.
const RECORD_VERSION: u8 = 0;

/// The data of one Raft entry: the records applied together.
pub fn encode_batch(records: &[MetadataRecord]) -> Vec<u8> {
    assert!(records.len() <= BATCH_RECORD_COUNT_MAX, "a batch of {} records is too large", records.len());
    let mut writer = Writer::new();
    writer.u8(BATCH_FORMAT);
    writer.u16(records.len() as u16);
    for record in records {
        encode_record(&mut writer, record);
    }
    writer.into_bytes()
}

pub fn decode_batch(bytes: &[u8]) -> Result<Vec<MetadataRecord>, CodecError> {
    let mut reader = Reader::new(bytes);
    let format = reader.u8()?;
    if format != BATCH_FORMAT {
        return Err(CodecError::UnknownBatchFormat { format });
    }
    let count = usize::from(reader.u16()?);
    // Each record is at least its two header bytes.
    if count > reader.remaining() / 2 {
        return Err(CodecError::CountTooLarge { count, count_max: reader.remaining() / 2 });
    }
    let records = (0..count).map(|_| decode_record(&mut reader)).collect::<Result<Vec<_>, _>>()?;
    reader.finish()?;
    Ok(records)
}

pub fn encode_record(writer: &mut Writer, record: &MetadataRecord) {
    match record {
        MetadataRecord::RegisterBroker(registration) => {
            header(writer, TYPE_REGISTER_BROKER);
            encode_registration(writer, registration);
        }
        MetadataRecord::FenceBroker { broker, epoch } | MetadataRecord::UnfenceBroker { broker, epoch } => {
            let fence = matches!(record, MetadataRecord::FenceBroker { .. });
            header(writer, if fence { TYPE_FENCE_BROKER } else { TYPE_UNFENCE_BROKER });
            writer.i32(broker.0);
            writer.u64(epoch.0);
        }
        MetadataRecord::Topic(topic) => {
            header(writer, TYPE_TOPIC);
            writer.str(&topic.name);
            writer.u128(topic.id.0);
            writer.string_map(&topic.configs);
        }
        MetadataRecord::Partition(partition) => {
            header(writer, TYPE_PARTITION);
            writer.u128(partition.topic_id.0);
            writer.i32(partition.partition);
            writer.nodes(&partition.replicas);
            writer.nodes(&partition.isr);
            writer.i32(partition.leader.0);
            writer.i32(partition.leader_epoch.0);
            writer.i32(partition.partition_epoch);
        }
        MetadataRecord::PartitionChange(change) => {
            header(writer, TYPE_PARTITION_CHANGE);
            writer.u128(change.topic_id.0);
            writer.i32(change.partition);
            writer.i32(change.leader.0);
            writer.nodes(&change.isr);
            writer.i32(change.leader_epoch.0);
            writer.i32(change.partition_epoch);
        }
        MetadataRecord::ReplicasChange(change) => {
            header(writer, TYPE_REPLICAS_CHANGE);
            writer.u128(change.topic_id.0);
            writer.i32(change.partition);
            writer.nodes(&change.replicas);
            writer.nodes(&change.adding_replicas);
            writer.nodes(&change.removing_replicas);
            writer.i32(change.leader.0);
            writer.nodes(&change.isr);
            writer.i32(change.leader_epoch.0);
            writer.i32(change.partition_epoch);
        }
        MetadataRecord::Config(change) => {
            header(writer, TYPE_CONFIG);
            encode_config_resource(writer, &change.resource);
            writer.str(&change.key);
            writer.option_str(change.value.as_deref());
        }
        MetadataRecord::RemoveTopic { id } => {
            header(writer, TYPE_REMOVE_TOPIC);
            writer.u128(id.0);
        }
        MetadataRecord::ProducerIds(block) => {
            header(writer, TYPE_PRODUCER_IDS);
            writer.i32(block.broker.0);
            writer.u64(block.broker_epoch.0);
            writer.i64(block.first_producer_id);
            writer.i32(block.size);
        }
    }
}

fn header(writer: &mut Writer, record_type: u8) {
    writer.u8(record_type);
    writer.u8(RECORD_VERSION);
}

pub fn encode_registration(writer: &mut Writer, registration: &BrokerRegistration) {
    writer.i32(registration.broker.0);
    writer.u128(registration.incarnation);
    writer.count(registration.listeners.len());
    for listener in &registration.listeners {
        writer.str(&listener.name);
        writer.str(&listener.host);
        writer.u16(listener.port);
    }
    writer.option_str(registration.rack.as_deref());
}

pub fn decode_registration(reader: &mut Reader<'_>) -> Result<BrokerRegistration, CodecError> {
    let broker = NodeId(reader.i32()?);
    let incarnation = reader.u128()?;
    // A listener is at least two empty strings and a port.
    let count = reader.count(6)?;
    let mut listeners = Vec::with_capacity(count);
    for _ in 0..count {
        listeners.push(Listener { name: reader.string()?, host: reader.string()?, port: reader.u16()? });
    }
    Ok(BrokerRegistration { broker, incarnation, listeners, rack: reader.option_string()? })
}

pub fn encode_config_resource(writer: &mut Writer, resource: &ConfigResource) {
    match resource {
        ConfigResource::Broker(broker) => {
            writer.u8(0);
            writer.i32(broker.0);
        }
        ConfigResource::Topic(name) => {
            writer.u8(1);
            writer.str(name);
        }
    }
}

pub fn decode_config_resource(reader: &mut Reader<'_>) -> Result<ConfigResource, CodecError> {
    let offset = reader.position;
    match reader.u8()? {
        0 => Ok(ConfigResource::Broker(NodeId(reader.i32()?))),
        1 => Ok(ConfigResource::Topic(reader.string()?)),
        tag => Err(CodecError::InvalidTag { tag, offset }),
    }
}

pub fn decode_record(reader: &mut Reader<'_>) -> Result<MetadataRecord, CodecError> {
    let record_type = reader.u8()?;
    let version = reader.u8()?;
    if !(TYPE_REGISTER_BROKER..=TYPE_REPLICAS_CHANGE).contains(&record_type) {
        return Err(CodecError::UnknownRecordType { record_type });
    }
    if version != RECORD_VERSION {
        return Err(CodecError::UnknownRecordVersion { record_type, version });
    }
    let record = match record_type {
        TYPE_REGISTER_BROKER => MetadataRecord::RegisterBroker(decode_registration(reader)?),
        TYPE_FENCE_BROKER => {
            MetadataRecord::FenceBroker { broker: NodeId(reader.i32()?), epoch: BrokerEpoch(reader.u64()?) }
        }
        TYPE_UNFENCE_BROKER => {
            MetadataRecord::UnfenceBroker { broker: NodeId(reader.i32()?), epoch: BrokerEpoch(reader.u64()?) }
        }
        TYPE_TOPIC => MetadataRecord::Topic(TopicRecord {
            name: reader.string()?,
            id: TopicId(reader.u128()?),
            configs: reader.string_map()?,
        }),
        TYPE_PARTITION => MetadataRecord::Partition(PartitionRecord {
            topic_id: TopicId(reader.u128()?),
            partition: reader.i32()?,
            replicas: reader.nodes()?,
            isr: reader.nodes()?,
            leader: NodeId(reader.i32()?),
            leader_epoch: LeaderEpoch(reader.i32()?),
            partition_epoch: reader.i32()?,
        }),
        TYPE_PARTITION_CHANGE => MetadataRecord::PartitionChange(PartitionChange {
            topic_id: TopicId(reader.u128()?),
            partition: reader.i32()?,
            leader: NodeId(reader.i32()?),
            isr: reader.nodes()?,
            leader_epoch: LeaderEpoch(reader.i32()?),
            partition_epoch: reader.i32()?,
        }),
        TYPE_CONFIG => MetadataRecord::Config(ConfigChange {
            resource: decode_config_resource(reader)?,
            key: reader.string()?,
            value: reader.option_string()?,
        }),
        TYPE_REMOVE_TOPIC => MetadataRecord::RemoveTopic { id: TopicId(reader.u128()?) },
        TYPE_PRODUCER_IDS => MetadataRecord::ProducerIds(ProducerIdsBlock {
            broker: NodeId(reader.i32()?),
            broker_epoch: BrokerEpoch(reader.u64()?),
            first_producer_id: reader.i64()?,
            size: reader.i32()?,
        }),
        _ => MetadataRecord::ReplicasChange(ReplicasChange {
            topic_id: TopicId(reader.u128()?),
            partition: reader.i32()?,
            replicas: reader.nodes()?,
            adding_replicas: reader.nodes()?,
            removing_replicas: reader.nodes()?,
            leader: NodeId(reader.i32()?),
            isr: reader.nodes()?,
            leader_epoch: LeaderEpoch(reader.i32()?),
            partition_epoch: reader.i32()?,
        }),
    };
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::Prng;

    pub(crate) fn sample_records() -> Vec<MetadataRecord> {
        let topic_id = TopicId(0x1234_5678_9abc_def0_1122_3344_5566_7788);
        vec![
            MetadataRecord::RegisterBroker(BrokerRegistration {
                broker: NodeId(1),
                incarnation: 77,
                listeners: vec![Listener { name: "PLAINTEXT".into(), host: "127.0.0.1".into(), port: 9092 }],
                rack: Some("rack-a".into()),
            }),
            MetadataRecord::FenceBroker { broker: NodeId(1), epoch: BrokerEpoch(5) },
            MetadataRecord::UnfenceBroker { broker: NodeId(1), epoch: BrokerEpoch(5) },
            MetadataRecord::Topic(TopicRecord {
                name: "orders".into(),
                id: topic_id,
                configs: BTreeMap::from([("retention.ms".into(), "1000".into())]),
            }),
            MetadataRecord::Partition(PartitionRecord {
                topic_id,
                partition: 0,
                replicas: vec![NodeId(1), NodeId(2)],
                isr: vec![NodeId(1)],
                leader: NodeId(1),
                leader_epoch: LeaderEpoch(0),
                partition_epoch: 0,
            }),
            MetadataRecord::PartitionChange(PartitionChange {
                topic_id,
                partition: 0,
                leader: NodeId::NONE,
                isr: vec![],
                leader_epoch: LeaderEpoch(1),
                partition_epoch: 1,
            }),
            MetadataRecord::ReplicasChange(ReplicasChange {
                topic_id,
                partition: 0,
                replicas: vec![NodeId(3), NodeId(1), NodeId(2)],
                adding_replicas: vec![NodeId(3)],
                removing_replicas: vec![NodeId(2)],
                leader: NodeId(1),
                isr: vec![NodeId(1), NodeId(2)],
                leader_epoch: LeaderEpoch(2),
                partition_epoch: 2,
            }),
            MetadataRecord::Config(ConfigChange {
                resource: ConfigResource::Topic("orders".into()),
                key: "cleanup.policy".into(),
                value: None,
            }),
            MetadataRecord::Config(ConfigChange {
                resource: ConfigResource::Broker(NodeId(2)),
                key: "log.retention.ms".into(),
                value: Some("5".into()),
            }),
            MetadataRecord::RemoveTopic { id: topic_id },
            MetadataRecord::ProducerIds(ProducerIdsBlock {
                broker: NodeId(1),
                broker_epoch: BrokerEpoch(5),
                first_producer_id: 1000,
                size: 1000,
            }),
        ]
    }

    // Every record type survives a round trip, alone and in one batch.
    #[test]
    fn round_trip_every_record_type() {
        let records = sample_records();
        for record in &records {
            let bytes = encode_batch(std::slice::from_ref(record));
            assert_eq!(decode_batch(&bytes).unwrap(), vec![record.clone()]);
        }
        assert_eq!(decode_batch(&encode_batch(&records)).unwrap(), records);
        assert_eq!(decode_batch(&encode_batch(&[])).unwrap(), vec![]);
    }

    // Pins the layout of one record: the log is a file format.
    #[test]
    fn golden_bytes() {
        let record = MetadataRecord::FenceBroker { broker: NodeId(3), epoch: BrokerEpoch(0x0102) };
        let bytes = encode_batch(&[record]);
        assert_eq!(bytes, [1, 0, 1, 2, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 1, 2]);
    }

    // A batch written before `ReplicasChange` existed (a `PartitionChange` and a `Partition`, bytes captured from the
    // encoder at commit 23b1052) still decodes to the same records: the log in users' data directories stays
    // readable.
    #[test]
    fn old_format_batch_decodes() {
        let hex = "010002060000000000000000000000000000000007000000000000000000000001000000000000000100000001050000\
                   000000000000000000000000000007000000010000000200000000000000010000000200000000000000010000000000\
                   00000000000000";
        let bytes: Vec<u8> =
            (0..hex.len()).step_by(2).map(|at| u8::from_str_radix(&hex[at..at + 2], 16).unwrap()).collect();
        let topic_id = TopicId(7);
        let expected = vec![
            MetadataRecord::PartitionChange(PartitionChange {
                topic_id,
                partition: 0,
                leader: NodeId(0),
                isr: vec![NodeId(0)],
                leader_epoch: LeaderEpoch(1),
                partition_epoch: 1,
            }),
            MetadataRecord::Partition(PartitionRecord {
                topic_id,
                partition: 1,
                replicas: vec![NodeId(0), NodeId(1)],
                isr: vec![NodeId(0), NodeId(1)],
                leader: NodeId(0),
                leader_epoch: LeaderEpoch(0),
                partition_epoch: 0,
            }),
        ];
        assert_eq!(decode_batch(&bytes).unwrap(), expected);
        assert_eq!(encode_batch(&expected), bytes, "the old records' encoding changed");
    }

    // Pins the layout of the record added after the first format.
    #[test]
    fn golden_bytes_replicas_change() {
        let record = MetadataRecord::ReplicasChange(ReplicasChange {
            topic_id: TopicId(1),
            partition: 2,
            replicas: vec![NodeId(3)],
            adding_replicas: vec![NodeId(3)],
            removing_replicas: vec![],
            leader: NodeId(3),
            isr: vec![NodeId(3)],
            leader_epoch: LeaderEpoch(4),
            partition_epoch: 5,
        });
        let mut expected = vec![1, 0, 1, 10, 0];
        expected.extend_from_slice(&1u128.to_be_bytes());
        for word in [2, 1, 3, 1, 3, 0, 3, 1, 3, 4, 5] {
            expected.extend_from_slice(&(word as u32).to_be_bytes());
        }
        assert_eq!(encode_batch(&[record]), expected);
    }

    // Unknown formats, types and versions are refused by name; every truncation and random corruption of a valid
    // batch decodes to an error or some batch, never a panic.
    #[test]
    fn malformed_input_is_an_error() {
        let bytes = encode_batch(&sample_records());
        assert_eq!(decode_batch(&[2, 0, 0]), Err(CodecError::UnknownBatchFormat { format: 2 }));
        assert_eq!(decode_batch(&[1, 0, 1, 99, 0]), Err(CodecError::UnknownRecordType { record_type: 99 }));
        assert_eq!(
            decode_batch(&[1, 0, 1, 2, 7]),
            Err(CodecError::UnknownRecordVersion { record_type: 2, version: 7 })
        );
        let mut trailing = encode_batch(&[]);
        trailing.push(0);
        assert_eq!(decode_batch(&trailing), Err(CodecError::TrailingBytes { count: 1 }));
        for length in 0..bytes.len() {
            assert!(decode_batch(&bytes[..length]).is_err(), "a batch cut at {length} bytes decoded");
        }
        let seed = crate::sim::seed();
        let mut prng = Prng::new(seed);
        for _ in 0..2_000 {
            let mut corrupt = bytes.clone();
            let index = prng.below(corrupt.len() as u64) as usize;
            corrupt[index] = prng.next_u64() as u8;
            let _ = decode_batch(&corrupt);
        }
    }
}
