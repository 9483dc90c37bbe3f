//! The Kafka codec seam: request headers and bodies in, response frames out. No I/O here and no panics on input:
//! every malformed byte becomes a [`CodecError`]. Bodies are decoded by the `kafka-protocol` crate from a `Bytes`
//! frame, which slices (never copies) `bytes` fields, so Produce records stay views of the request frame.
//! Fetch responses are the exception on the way out: [`crate::handlers::fetch`] writes them by hand so that
//! record batches go to the socket as their own `Bytes` chunks.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};

use crate::codec_legacy;

/// What the broker advertises and accepts: (API, lowest version, highest version). The lowest is what Kafka 3.9
/// accepted (versions Kafka 4 removed are decoded by [`crate::codec_legacy`]); the highest is Kafka 4.1's where
/// the `kafka-protocol` crate has it.
pub const SUPPORTED_APIS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 0, 13),
    (ApiKey::Fetch, 0, 18),
    (ApiKey::ListOffsets, 0, 10),
    (ApiKey::Metadata, 0, 13),
    (ApiKey::OffsetCommit, 0, 9),
    (ApiKey::OffsetFetch, 0, 9),
    (ApiKey::FindCoordinator, 0, 6),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::DescribeGroups, 0, 6),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 0, 7),
    (ApiKey::DeleteTopics, 0, 6),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::OffsetForLeaderEpoch, 0, 4),
    (ApiKey::DescribeConfigs, 0, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::DescribeLogDirs, 0, 4),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DescribeCluster, 0, 2),
    (ApiKey::DescribeQuorum, 0, 2),
    (ApiKey::InitProducerId, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::DescribeTopicPartitions, 0, 0),
    (ApiKey::ElectLeaders, 0, 2),
    (ApiKey::AlterPartitionReassignments, 0, 0),
    (ApiKey::ListPartitionReassignments, 0, 0),
];

pub fn advertised_range(api_key: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED_APIS.iter().find(|(key, _, _)| *key == api_key).map(|(_, min, max)| (*min, *max))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodecError {
    /// The frame is too short to hold a request header.
    Truncated {
        size: usize,
    },
    UnknownApiKey {
        api_key: i16,
    },
    /// A version outside what the broker serves; `correlation_id` lets ApiVersions still answer.
    UnsupportedVersion {
        api_key: ApiKey,
        api_version: i16,
        correlation_id: i32,
    },
    Malformed {
        api_key: i16,
        api_version: i16,
        reason: String,
    },
    Encode {
        api_key: ApiKey,
        api_version: i16,
        reason: String,
    },
}

impl std::fmt::Display for CodecError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CodecError::Truncated { size } => {
                write!(formatter, "request frame of {size} bytes has no full header")
            }
            CodecError::UnknownApiKey { api_key } => write!(formatter, "unknown API key {api_key}"),
            CodecError::UnsupportedVersion { api_key, api_version, .. } => {
                write!(formatter, "{api_key:?} version {api_version} is not supported")
            }
            CodecError::Malformed { api_key, api_version, reason } => {
                write!(formatter, "malformed request (API key {api_key} version {api_version}): {reason}")
            }
            CodecError::Encode { api_key, api_version, reason } => {
                write!(formatter, "cannot encode {api_key:?} v{api_version} response: {reason}")
            }
        }
    }
}

impl std::error::Error for CodecError {}

/// A decoded request: the header fields the broker needs and the body.
#[derive(Debug)]
pub struct Request {
    pub api_key: ApiKey,
    pub api_version: i16,
    pub correlation_id: i32,
    pub client_id: Option<String>,
    pub body: RequestKind,
}

/// Decodes one request frame (the bytes after the size prefix).
pub fn decode_request(frame: Bytes) -> Result<Request, CodecError> {
    if frame.len() < 8 {
        return Err(CodecError::Truncated { size: frame.len() });
    }
    let api_key_raw = i16::from_be_bytes([frame[0], frame[1]]);
    let api_version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let api_key =
        ApiKey::try_from(api_key_raw).map_err(|()| CodecError::UnknownApiKey { api_key: api_key_raw })?;
    let (min, max) = advertised_range(api_key).ok_or(CodecError::UnknownApiKey { api_key: api_key_raw })?;
    if api_version < min || api_version > max {
        return Err(CodecError::UnsupportedVersion { api_key, api_version, correlation_id });
    }
    let malformed = |reason: String| CodecError::Malformed { api_key: api_key_raw, api_version, reason };
    let mut buffer = frame;
    let header = RequestHeader::decode(&mut buffer, api_key.request_header_version(api_version))
        .map_err(|error| malformed(format!("header: {error}")))?;
    let body = if codec_legacy::is_legacy(api_key, api_version) {
        codec_legacy::decode_request(api_key, api_version, buffer).map_err(malformed)?
    } else {
        RequestKind::decode(api_key, &mut buffer, api_version)
            .map_err(|error| malformed(error.to_string()))?
    };
    Ok(Request {
        api_key,
        api_version,
        correlation_id,
        client_id: header.client_id.map(|client_id| client_id.to_string()),
        body,
    })
}

/// The response header version: ApiVersions always answers with header v0 (KIP-511), so that a client that sent
/// a version the broker does not know can still read the correlation id.
pub fn response_header_version(api_key: ApiKey, api_version: i16) -> i16 {
    if api_key == ApiKey::ApiVersions {
        0
    } else {
        api_key.response_header_version(api_version)
    }
}

/// Starts a response frame: a size placeholder and the response header. [`finish_frame`] patches the size.
pub fn begin_frame(api_key: ApiKey, api_version: i16, correlation_id: i32, capacity: usize) -> BytesMut {
    let mut buffer = BytesMut::with_capacity(capacity + 16);
    buffer.put_i32(0);
    buffer.put_i32(correlation_id);
    if response_header_version(api_key, api_version) >= 1 {
        // An empty tagged-field section.
        buffer.put_u8(0);
    }
    buffer
}

/// Writes the frame's size prefix from `frame_size`, the total of every chunk including the prefix itself.
pub fn finish_frame(head: &mut BytesMut, frame_size: usize) {
    let size = (frame_size - 4) as i32;
    head[0..4].copy_from_slice(&size.to_be_bytes());
}

/// Encodes a whole response frame with the codec (or, for versions it no longer has, [`codec_legacy`]).
pub fn encode_response<M: Encodable + 'static>(
    api_key: ApiKey,
    api_version: i16,
    correlation_id: i32,
    body: &M,
) -> Result<Bytes, CodecError> {
    let encode_error = |reason: String| CodecError::Encode { api_key, api_version, reason };
    if codec_legacy::is_legacy(api_key, api_version) {
        let mut buffer = begin_frame(api_key, api_version, correlation_id, 256);
        codec_legacy::encode_response(api_key, api_version, body, &mut buffer).map_err(encode_error)?;
        let frame_size = buffer.len();
        finish_frame(&mut buffer, frame_size);
        return Ok(buffer.freeze());
    }
    let size = body.compute_size(api_version).map_err(|error| encode_error(error.to_string()))?;
    let mut buffer = begin_frame(api_key, api_version, correlation_id, size);
    body.encode(&mut buffer, api_version).map_err(|error| encode_error(error.to_string()))?;
    let frame_size = buffer.len();
    finish_frame(&mut buffer, frame_size);
    Ok(buffer.freeze())
}

/// The header of an encoded response, for tests and the fuzz harness.
pub fn decode_response_header(
    frame: &mut Bytes,
    api_key: ApiKey,
    api_version: i16,
) -> Option<ResponseHeader> {
    ResponseHeader::decode(frame, response_header_version(api_key, api_version)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{ApiVersionsRequest, MetadataRequest};
    use kafka_protocol::protocol::StrBytes;

    fn frame<M: Encodable>(api_key: ApiKey, api_version: i16, correlation_id: i32, body: &M) -> Bytes {
        let mut buffer = BytesMut::new();
        let mut header = RequestHeader::default();
        header.request_api_key = api_key as i16;
        header.request_api_version = api_version;
        header.correlation_id = correlation_id;
        header.client_id = Some(StrBytes::from_static_str("test"));
        header.encode(&mut buffer, api_key.request_header_version(api_version)).unwrap();
        body.encode(&mut buffer, api_version).unwrap();
        buffer.freeze()
    }

    #[test]
    fn decodes_headers_of_flexible_and_classic_versions() {
        for version in [0, 3, 4] {
            let request =
                decode_request(frame(ApiKey::ApiVersions, version, 9, &ApiVersionsRequest::default()));
            let request = request.unwrap();
            assert_eq!(
                (request.api_key, request.api_version, request.correlation_id),
                (ApiKey::ApiVersions, version, 9)
            );
            assert_eq!(request.client_id.as_deref(), Some("test"));
        }
        for version in [0, 9, 12] {
            let request =
                decode_request(frame(ApiKey::Metadata, version, 1, &MetadataRequest::default())).unwrap();
            assert!(matches!(request.body, RequestKind::Metadata(_)));
        }
    }

    #[test]
    fn refuses_bad_frames_without_panicking() {
        assert_eq!(
            decode_request(Bytes::from_static(&[0, 18])).unwrap_err(),
            CodecError::Truncated { size: 2 }
        );
        assert!(matches!(
            decode_request(Bytes::from_static(&[0x7f, 0, 0, 0, 0, 0, 0, 1])),
            Err(CodecError::UnknownApiKey { .. })
        ));
        assert!(matches!(
            decode_request(Bytes::from_static(&[0, 18, 0, 9, 0, 0, 0, 5])),
            Err(CodecError::UnsupportedVersion { correlation_id: 5, .. })
        ));
        // Produce v14 is past Kafka 4.1's newest.
        assert!(matches!(
            decode_request(Bytes::from_static(&[0, 0, 0, 14, 0, 0, 0, 5])),
            Err(CodecError::UnsupportedVersion { .. })
        ));
        assert!(matches!(
            decode_request(Bytes::from_static(&[0, 3, 0, 1, 0, 0, 0, 5, 0])),
            Err(CodecError::Malformed { .. })
        ));
    }
}
