//! DeleteTopics (key 20), v1–6: by name, or by topic id from v6. Owners close and delete the logs.

use std::rc::Rc;

use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse};

use super::{str_bytes, topic_name, HandlerResult, RequestContext};
use crate::cluster::TopicChange;
use crate::errors::{KafkaError, ResponseError};
use crate::shard::Shard;

pub async fn handle(shard: &Rc<Shard>, context: &RequestContext, body: DeleteTopicsRequest) -> HandlerResult {
    let version = context.api_version;
    let table = shard.topics();
    // (name if known, topic id as requested)
    let requested: Vec<(Option<String>, [u8; 16])> = if version >= 6 {
        body.topics
            .iter()
            .map(|topic| match &topic.name {
                Some(name) => (Some(name.0.to_string()), [0; 16]),
                None => (
                    table.find_by_id(topic.topic_id.as_bytes()).map(|entry| entry.name.clone()),
                    *topic.topic_id.as_bytes(),
                ),
            })
            .collect()
    } else {
        body.topic_names.iter().map(|name| (Some(name.0.to_string()), [0; 16])).collect()
    };
    let changes: Vec<TopicChange> = requested
        .iter()
        .filter_map(|(name, _)| name.clone())
        .map(|name| TopicChange::Delete { name })
        .collect();
    let mut results = shard.admin(changes, false).await.into_iter();
    let mut responses = Vec::with_capacity(requested.len());
    for (name, topic_id) in requested {
        let result = match &name {
            Some(_) => results.next().unwrap_or(Err(KafkaError::new(ResponseError::UnknownServerError))),
            None => Err(KafkaError::new(ResponseError::UnknownTopicId)),
        };
        let mut response = DeletableTopicResult::default();
        response.name = name.as_deref().map(topic_name);
        if version >= 6 {
            response.topic_id = uuid::Uuid::from_bytes(topic_id);
        }
        if let Err(error) = result {
            response.error_code = error.code.code();
            if version >= 5 {
                response.error_message = error.message.as_deref().map(str_bytes);
            }
        }
        responses.push(response);
    }
    let mut response = DeleteTopicsResponse::default();
    response.responses = responses;
    context.respond(&response)
}
