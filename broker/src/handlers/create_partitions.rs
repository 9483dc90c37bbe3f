//! CreatePartitions (key 37), v0–3: grow a topic's partition count.

use std::rc::Rc;

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};

use super::{str_bytes, HandlerResult, RequestContext};
use crate::cluster::TopicChange;
use crate::errors::{KafkaError, ResponseError};
use crate::shard::Shard;

pub async fn handle(
    shard: &Rc<Shard>,
    context: &RequestContext,
    body: CreatePartitionsRequest,
) -> HandlerResult {
    let changes = body
        .topics
        .iter()
        .map(|topic| TopicChange::AddPartitions {
            name: topic.name.0.to_string(),
            partition_count: topic.count,
        })
        .collect();
    let results = shard.admin(changes, body.validate_only).await;
    let mut response = CreatePartitionsResponse::default();
    response.results = body
        .topics
        .iter()
        .zip(
            results
                .into_iter()
                .chain(std::iter::repeat(Err(KafkaError::new(ResponseError::UnknownServerError)))),
        )
        .map(|(topic, result)| {
            let mut result_entry = CreatePartitionsTopicResult::default();
            result_entry.name = topic.name.clone();
            if let Err(error) = result {
                result_entry.error_code = error.code.code();
                result_entry.error_message = error.message.as_deref().map(str_bytes);
            }
            result_entry
        })
        .collect();
    context.respond(&response)
}
