//! InitProducerId (key 22), v0–4: a new producer id with epoch 0 for an idempotent (non-transactional) producer.
//! Ids come from shard 0's allocator ([`crate::producer_ids`]), unique for the life of the data directory.
//!
//! As in Kafka, a request without a transactional id always gets a fresh id, even when it names its current id
//! and epoch (v3+, KIP-360): the old id's sequences are simply abandoned. Transactions are not supported: a request
//! with a transactional id is answered UNSUPPORTED_VERSION, which clients treat as fatal for the transactional
//! producer rather than retrying forever (FindCoordinator already answers COORDINATOR_NOT_AVAILABLE for them).

use std::rc::Rc;

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use super::{HandlerResult, RequestContext};
use crate::errors::ResponseError;
use crate::shard::Shard;

pub async fn handle(
    shard: &Rc<Shard>,
    context: &RequestContext,
    body: InitProducerIdRequest,
) -> HandlerResult {
    let mut response = InitProducerIdResponse::default();
    response.producer_id = ProducerId(-1);
    response.producer_epoch = -1;
    let transactional = body.transactional_id.as_ref().is_some_and(|id| !id.0.is_empty());
    if transactional {
        response.error_code = ResponseError::UnsupportedVersion.code();
        return context.respond(&response);
    }
    match shard.allocate_producer_id().await {
        Ok(id) => {
            response.producer_id = ProducerId(id);
            response.producer_epoch = 0;
        }
        Err(error) => response.error_code = error.code.code(),
    }
    context.respond(&response)
}
