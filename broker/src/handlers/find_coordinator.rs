//! FindCoordinator (key 10), v0–4: answered, always, with COORDINATOR_NOT_AVAILABLE, because this broker has no
//! group or transaction coordinator yet (consumer groups are their own issue).
//!
//! Why advertise an API that only says "not available": librdkafka enables LZ4 only when the broker advertises
//! FindCoordinator v0 (`rdkafka_feature.c`: the LZ4 feature "depends" on it, a proxy for brokers ≥ 0.8.2), so
//! without it every librdkafka producer asked for lz4 silently sends uncompressed batches — the same kind of
//! quirk as KAFKA-18659 for Produce v0. The answer is a well-formed error that clients retry on, not a lie: no
//! node is named as a coordinator that would then be asked for JoinGroup or OffsetCommit.

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};

use super::{str_bytes, HandlerResult, RequestContext};
use crate::errors::ErrorCode;

const NOT_AVAILABLE_MESSAGE: &str = "this broker has no group or transaction coordinator yet";

pub fn handle(context: &RequestContext, body: FindCoordinatorRequest) -> HandlerResult {
    let mut response = FindCoordinatorResponse::default();
    if context.api_version >= 4 {
        // v4 batches keys: one entry per key asked for.
        response.coordinators = body
            .coordinator_keys
            .into_iter()
            .map(|key| {
                let mut coordinator = Coordinator::default();
                coordinator.key = key;
                coordinator.node_id = BrokerId(-1);
                coordinator.host = str_bytes("");
                coordinator.port = -1;
                coordinator.error_code = ErrorCode::COORDINATOR_NOT_AVAILABLE.code();
                coordinator.error_message = Some(str_bytes(NOT_AVAILABLE_MESSAGE));
                coordinator
            })
            .collect();
    } else {
        response.error_code = ErrorCode::COORDINATOR_NOT_AVAILABLE.code();
        if context.api_version >= 1 {
            response.error_message = Some(str_bytes(NOT_AVAILABLE_MESSAGE));
        }
        response.node_id = BrokerId(-1);
        response.host = str_bytes("");
        response.port = -1;
    }
    context.respond(&response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use kafka_protocol::messages::ApiKey;
    use kafka_protocol::protocol::Decodable;

    /// Every advertised version encodes and decodes back to COORDINATOR_NOT_AVAILABLE for every key.
    #[test]
    fn every_version_says_not_available() {
        for version in 0..=4 {
            let context =
                RequestContext { api_key: ApiKey::FindCoordinator, api_version: version, correlation_id: 3 };
            let mut request = FindCoordinatorRequest::default();
            request.key = str_bytes("group-a");
            request.coordinator_keys = vec![str_bytes("group-a"), str_bytes("group-b")];
            let response = handle(&context, request).unwrap().unwrap();
            let mut frame: Bytes = response.chunks.concat().into();
            let _ = frame.split_to(4);
            let header =
                crate::codec::decode_response_header(&mut frame, ApiKey::FindCoordinator, version).unwrap();
            assert_eq!(header.correlation_id, 3);
            let decoded = FindCoordinatorResponse::decode(&mut frame, version).unwrap();
            assert!(frame.is_empty(), "v{version}: trailing bytes");
            if version >= 4 {
                assert_eq!(decoded.coordinators.len(), 2);
                for coordinator in decoded.coordinators {
                    assert_eq!(coordinator.error_code, ErrorCode::COORDINATOR_NOT_AVAILABLE.code());
                }
            } else {
                assert_eq!(decoded.error_code, ErrorCode::COORDINATOR_NOT_AVAILABLE.code());
            }
        }
    }
}
