//! The records the group coordinator writes to `__consumer_offsets`, in Kafka's own layout so that Kafka's
//! tools (and anyone reading the topic with a consumer) can decode them:
//!
//! - offset commit: key v1 `(version: i16 = 1, group: string, topic: string, partition: i32)`, value v3
//!   `(version: i16 = 3, offset: i64, leader_epoch: i32, metadata: string, commit_timestamp: i64)`;
//! - group metadata: key v2 `(version: i16 = 2, group: string)`, value v3 `(version = 3, protocol_type: string,
//!   generation: i32, protocol: string?, leader: string?, current_state_timestamp: i64, members: [member])`, member
//!   `(member_id, group_instance_id?, client_id, client_host, rebalance_timeout: i32, session_timeout: i32,
//!   subscription: bytes, assignment: bytes)`.
//!
//! A null value is a tombstone: the commit or the group was deleted. Strings are i16-length-prefixed, bytes
//! i32-length-prefixed, arrays i32-counted (the non-flexible encoding). Decoding never panics and never trusts a
//! count beyond the bytes present.

use bytes::Bytes;

/// One decoded record of `__consumer_offsets`.
#[derive(Clone, Debug, PartialEq)]
pub enum StoredRecord {
    Offset { group: String, topic: String, partition: i32, value: Option<StoredOffset> },
    Group { group: String, value: Option<StoredGroup> },
}

#[derive(Clone, Debug, PartialEq)]
pub struct StoredOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct StoredGroup {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub state_timestamp_ms: i64,
    pub members: Vec<StoredMember>,
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct StoredMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub subscription: Bytes,
    pub assignment: Bytes,
}

const OFFSET_KEY_VERSION: i16 = 1;
const GROUP_KEY_VERSION: i16 = 2;
const OFFSET_VALUE_VERSION: i16 = 3;
const GROUP_VALUE_VERSION: i16 = 3;

pub fn offset_key(group: &str, topic: &str, partition: i32) -> Vec<u8> {
    let mut key = Vec::with_capacity(10 + group.len() + topic.len());
    key.extend_from_slice(&OFFSET_KEY_VERSION.to_be_bytes());
    put_string(&mut key, group);
    put_string(&mut key, topic);
    key.extend_from_slice(&partition.to_be_bytes());
    key
}

pub fn offset_value(value: &StoredOffset) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(26 + value.metadata.len());
    bytes.extend_from_slice(&OFFSET_VALUE_VERSION.to_be_bytes());
    bytes.extend_from_slice(&value.offset.to_be_bytes());
    bytes.extend_from_slice(&value.leader_epoch.to_be_bytes());
    put_string(&mut bytes, &value.metadata);
    bytes.extend_from_slice(&value.commit_timestamp_ms.to_be_bytes());
    bytes
}

pub fn group_key(group: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(4 + group.len());
    key.extend_from_slice(&GROUP_KEY_VERSION.to_be_bytes());
    put_string(&mut key, group);
    key
}

pub fn group_value(value: &StoredGroup) -> Vec<u8> {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&GROUP_VALUE_VERSION.to_be_bytes());
    put_string(&mut bytes, &value.protocol_type);
    bytes.extend_from_slice(&value.generation.to_be_bytes());
    put_nullable_string(&mut bytes, value.protocol.as_deref());
    put_nullable_string(&mut bytes, value.leader.as_deref());
    bytes.extend_from_slice(&value.state_timestamp_ms.to_be_bytes());
    bytes.extend_from_slice(&(value.members.len() as i32).to_be_bytes());
    for member in &value.members {
        put_string(&mut bytes, &member.member_id);
        put_nullable_string(&mut bytes, member.instance_id.as_deref());
        put_string(&mut bytes, &member.client_id);
        put_string(&mut bytes, &member.client_host);
        bytes.extend_from_slice(&member.rebalance_timeout_ms.to_be_bytes());
        bytes.extend_from_slice(&member.session_timeout_ms.to_be_bytes());
        put_bytes(&mut bytes, &member.subscription);
        put_bytes(&mut bytes, &member.assignment);
    }
    bytes
}

/// Decodes one record; `None` for a key this broker does not know (skipped on replay, as Kafka skips them).
pub fn decode(key: &[u8], value: Option<&[u8]>) -> Result<Option<StoredRecord>, String> {
    let mut reader = Reader { bytes: key };
    let version = reader.i16()?;
    match version {
        0 | 1 => {
            let group = reader.string()?;
            let topic = reader.string()?;
            let partition = reader.i32()?;
            let value = value.map(decode_offset_value).transpose()?;
            Ok(Some(StoredRecord::Offset { group, topic, partition, value }))
        }
        2 => {
            let group = reader.string()?;
            let value = value.map(decode_group_value).transpose()?;
            Ok(Some(StoredRecord::Group { group, value }))
        }
        _ => Ok(None),
    }
}

fn decode_offset_value(bytes: &[u8]) -> Result<StoredOffset, String> {
    let mut reader = Reader { bytes };
    let version = reader.i16()?;
    let offset = reader.i64()?;
    // v0/v2 have no leader epoch; v1 adds an expire timestamp after the commit timestamp.
    let leader_epoch = if version >= 3 { reader.i32()? } else { -1 };
    let metadata = reader.string()?;
    let commit_timestamp_ms = reader.i64()?;
    Ok(StoredOffset { offset, leader_epoch, metadata, commit_timestamp_ms })
}

fn decode_group_value(bytes: &[u8]) -> Result<StoredGroup, String> {
    let mut reader = Reader { bytes };
    let version = reader.i16()?;
    if !(0..=3).contains(&version) {
        return Err(format!("group metadata value version {version} is not supported"));
    }
    let protocol_type = reader.string()?;
    let generation = reader.i32()?;
    let protocol = reader.nullable_string()?;
    let leader = reader.nullable_string()?;
    let state_timestamp_ms = if version >= 2 { reader.i64()? } else { -1 };
    let count = reader.i32()?;
    let mut members = Vec::new();
    for _ in 0..count.max(0) {
        let member_id = reader.string()?;
        let instance_id = if version >= 3 { reader.nullable_string()? } else { None };
        let client_id = reader.string()?;
        let client_host = reader.string()?;
        let rebalance_timeout_ms = if version >= 1 { reader.i32()? } else { -1 };
        let session_timeout_ms = reader.i32()?;
        let subscription = Bytes::copy_from_slice(reader.bytes()?);
        let assignment = Bytes::copy_from_slice(reader.bytes()?);
        members.push(StoredMember {
            member_id,
            instance_id,
            client_id,
            client_host,
            rebalance_timeout_ms,
            session_timeout_ms,
            subscription,
            assignment,
        });
    }
    Ok(StoredGroup { protocol_type, generation, protocol, leader, state_timestamp_ms, members })
}

fn put_string(output: &mut Vec<u8>, text: &str) {
    let bytes = &text.as_bytes()[..text.len().min(i16::MAX as usize)];
    output.extend_from_slice(&(bytes.len() as i16).to_be_bytes());
    output.extend_from_slice(bytes);
}

fn put_nullable_string(output: &mut Vec<u8>, text: Option<&str>) {
    match text {
        Some(text) => put_string(output, text),
        None => output.extend_from_slice(&(-1i16).to_be_bytes()),
    }
}

fn put_bytes(output: &mut Vec<u8>, bytes: &[u8]) {
    output.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
    output.extend_from_slice(bytes);
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize) -> Result<&'a [u8], String> {
        if self.bytes.len() < count {
            return Err(format!("record truncated: {count} bytes wanted, {} left", self.bytes.len()));
        }
        let (head, rest) = self.bytes.split_at(count);
        self.bytes = rest;
        Ok(head)
    }

    fn i16(&mut self) -> Result<i16, String> {
        let bytes = self.take(2)?;
        Ok(i16::from_be_bytes([bytes[0], bytes[1]]))
    }

    fn i32(&mut self) -> Result<i32, String> {
        let bytes = self.take(4)?;
        Ok(i32::from_be_bytes(bytes.try_into().map_err(|_| "short i32")?))
    }

    fn i64(&mut self) -> Result<i64, String> {
        let bytes = self.take(8)?;
        Ok(i64::from_be_bytes(bytes.try_into().map_err(|_| "short i64")?))
    }

    fn nullable_string(&mut self) -> Result<Option<String>, String> {
        let length = self.i16()?;
        if length < 0 {
            return Ok(None);
        }
        let bytes = self.take(length as usize)?;
        String::from_utf8(bytes.to_vec()).map(Some).map_err(|_| "string is not UTF-8".to_string())
    }

    fn string(&mut self) -> Result<String, String> {
        self.nullable_string()?.ok_or_else(|| "null where a string is required".to_string())
    }

    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let length = self.i32()?;
        if length < 0 {
            return Ok(&[]);
        }
        self.take(length as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_round_trip_and_tombstones_decode() {
        let value =
            StoredOffset { offset: 42, leader_epoch: 3, metadata: "m".into(), commit_timestamp_ms: 99 };
        let key = offset_key("g", "orders", 7);
        let encoded = offset_value(&value);
        assert_eq!(
            decode(&key, Some(&encoded)).unwrap(),
            Some(StoredRecord::Offset {
                group: "g".into(),
                topic: "orders".into(),
                partition: 7,
                value: Some(value)
            })
        );
        assert_eq!(
            decode(&key, None).unwrap(),
            Some(StoredRecord::Offset {
                group: "g".into(),
                topic: "orders".into(),
                partition: 7,
                value: None
            })
        );
    }

    #[test]
    fn groups_round_trip() {
        let value = StoredGroup {
            protocol_type: "consumer".into(),
            generation: 5,
            protocol: Some("range".into()),
            leader: Some("m-1".into()),
            state_timestamp_ms: 10,
            members: vec![StoredMember {
                member_id: "m-1".into(),
                instance_id: Some("static-1".into()),
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                rebalance_timeout_ms: 300_000,
                session_timeout_ms: 45_000,
                subscription: Bytes::from_static(b"sub"),
                assignment: Bytes::from_static(b"assign"),
            }],
        };
        let decoded = decode(&group_key("g"), Some(&group_value(&value))).unwrap();
        assert_eq!(decoded, Some(StoredRecord::Group { group: "g".into(), value: Some(value) }));
    }

    #[test]
    fn truncated_or_garbled_records_are_errors() {
        let value = StoredGroup { protocol_type: "consumer".into(), ..Default::default() };
        let encoded = group_value(&value);
        for cut in 0..encoded.len() {
            assert!(decode(&group_key("g"), Some(&encoded[..cut])).is_err(), "cut at {cut}");
        }
        assert!(decode(&[0, 1, 0x7f, 0xff], None).is_err());
        assert_eq!(decode(&[0, 9], None).unwrap(), None, "unknown key versions are skipped");
        // A member count far beyond the bytes present fails on the first missing member, allocating nothing.
        let mut huge = encoded.clone();
        let count_at = huge.len() - 4;
        huge[count_at..].copy_from_slice(&i32::MAX.to_be_bytes());
        assert!(decode(&group_key("g"), Some(&huge)).is_err());
    }
}
