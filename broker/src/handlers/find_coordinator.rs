//! FindCoordinator (key 10), v0–6: for a group (key type 0) this node is the coordinator — every group lives on
//! some shard of it, and a request reaching any shard is forwarded there ([`crate::group`]). Answering also
//! creates `__consumer_offsets` if needed, as Kafka does. Transactions (key type 1) are not supported: their keys
//! get COORDINATOR_NOT_AVAILABLE with a message saying so, as do share groups (key type 2, v6). v4 batches keys;
//! v5 and v6 only add error codes a group lookup never returns.
//!
//! Advertised even before groups existed because librdkafka enables LZ4 only when the broker advertises
//! FindCoordinator (`rdkafka_feature.c`, a proxy for brokers ≥ 0.8.2).

use std::rc::Rc;

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};

use super::{str_bytes, HandlerResult, RequestContext};
use crate::errors::{ErrorCode, KafkaError, ResponseError};
use crate::group;
use crate::shard::Shard;

const KEY_TYPE_GROUP: i8 = 0;

/// Where a key's coordinator is: (node id, host, port), or why there is none.
type Located = Result<(i32, String, u16), KafkaError>;

pub async fn handle(
    shard: &Rc<Shard>,
    context: &RequestContext,
    body: FindCoordinatorRequest,
) -> HandlerResult {
    let key_type = if context.api_version >= 1 { body.key_type } else { KEY_TYPE_GROUP };
    let located: Located = if key_type != KEY_TYPE_GROUP {
        Err(KafkaError::with_message(
            ResponseError::CoordinatorNotAvailable,
            format!("coordinator key type {key_type} is not supported by this broker (only groups, type 0)"),
        ))
    } else {
        let not_available =
            |message: String| KafkaError::with_message(ResponseError::CoordinatorNotAvailable, message);
        match super::bounded_in_cluster(shard, group::ensure_offsets_topic(shard)).await {
            Some(Ok(())) => {
                let (host, port) = shard.config.advertised();
                Ok((shard.config.node_id, host, port))
            }
            // A cluster's creation waits for the controller: the client retries (Kafka's answer meanwhile).
            Some(Err(error)) if shard.cluster.is_some() => {
                Err(not_available(error.message.unwrap_or_else(|| format!("{:?}", error.code))))
            }
            Some(Err(error)) => Err(error),
            None => Err(not_available(format!("{} is being created", group::OFFSETS_TOPIC))),
        }
    };
    let keys: Vec<String> = if context.api_version >= 4 {
        body.coordinator_keys.iter().map(|key| key.to_string()).collect()
    } else {
        vec![body.key.to_string()]
    };
    let located: Vec<Located> = keys.iter().map(|key| locate(shard, key, &located)).collect();
    context.respond(&encode(context.api_version, &keys, &located))
}

/// In a cluster, a group's coordinator is the leader of its `__consumer_offsets` partition, wherever that is.
fn locate(shard: &Shard, group: &str, located: &Located) -> Located {
    let found = located.clone()?;
    let table = shard.topics();
    let Some(view) = &table.cluster else { return Ok(found) };
    let count = table.get(group::OFFSETS_TOPIC).map_or(1, |entry| entry.partition_count);
    let index = group::offsets_partition(group, count);
    let leader =
        table.get(group::OFFSETS_TOPIC).and_then(|entry| entry.partition(index)).map(|p| p.leader().0);
    match leader.and_then(|leader| view.brokers.get(&leader)).filter(|broker| !broker.fenced) {
        Some(broker) => Ok((broker.id, broker.host.clone(), broker.port)),
        None => Err(KafkaError::with_message(
            ResponseError::CoordinatorNotAvailable,
            format!("{}-{index} has no leader", group::OFFSETS_TOPIC),
        )),
    }
}

fn encode(version: i16, keys: &[String], located: &[Located]) -> FindCoordinatorResponse {
    let mut response = FindCoordinatorResponse::default();
    let fields = |located: &Located| match located {
        Ok((node, host, port)) => (*node, host.clone(), i32::from(*port), ErrorCode::NONE, None),
        Err(error) => (-1, String::new(), -1, error.code, error.message.clone()),
    };
    if version >= 4 {
        response.coordinators = keys
            .iter()
            .zip(located)
            .map(|(key, located)| {
                let (node_id, host, port, error, message) = fields(located);
                let mut coordinator = Coordinator::default();
                coordinator.key = str_bytes(key);
                coordinator.node_id = BrokerId(node_id);
                coordinator.host = str_bytes(&host);
                coordinator.port = port;
                coordinator.error_code = error.code();
                coordinator.error_message = message.as_deref().map(str_bytes);
                coordinator
            })
            .collect();
    } else if let Some(located) = located.first() {
        let (node_id, host, port, error, message) = fields(located);
        response.error_code = error.code();
        if version >= 1 {
            response.error_message = message.as_deref().map(str_bytes);
        }
        response.node_id = BrokerId(node_id);
        response.host = str_bytes(&host);
        response.port = port;
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use kafka_protocol::messages::ApiKey;
    use kafka_protocol::protocol::Decodable;

    /// Every advertised version encodes and decodes back, found or not, one answer per key in v4.
    #[test]
    fn every_version_round_trips() {
        let keys = vec!["group-a".to_string(), "group-b".to_string()];
        let cases: [Located; 2] = [
            Ok((7, "127.0.0.1".to_string(), 9092)),
            Err(KafkaError::with_message(ResponseError::CoordinatorNotAvailable, "no")),
        ];
        for version in 0..=6 {
            for located in &cases {
                let context = RequestContext {
                    api_key: ApiKey::FindCoordinator,
                    api_version: version,
                    correlation_id: 3,
                };
                let all = vec![located.clone(); keys.len()];
                let response = context.respond(&encode(version, &keys, &all)).unwrap().unwrap();
                let mut frame: Bytes = response.chunks.concat().into();
                let _ = frame.split_to(4);
                let header =
                    crate::codec::decode_response_header(&mut frame, ApiKey::FindCoordinator, version)
                        .unwrap();
                assert_eq!(header.correlation_id, 3);
                let decoded = FindCoordinatorResponse::decode(&mut frame, version).unwrap();
                assert!(frame.is_empty(), "v{version}: trailing bytes");
                let expected =
                    if located.is_ok() { 0 } else { ResponseError::CoordinatorNotAvailable.code() };
                if version >= 4 {
                    assert_eq!(decoded.coordinators.len(), 2);
                    for coordinator in decoded.coordinators {
                        assert_eq!(coordinator.error_code, expected);
                        assert_eq!(coordinator.port, if located.is_ok() { 9092 } else { -1 });
                    }
                } else {
                    assert_eq!(decoded.error_code, expected);
                    assert_eq!(decoded.node_id.0, if located.is_ok() { 7 } else { -1 });
                }
            }
        }
    }
}
