//! DescribeCluster (key 60), v0–1: the live brokers and the active controller (this broker alone on a single node).

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{DescribeClusterRequest, DescribeClusterResponse};

use kafka_protocol::messages::BrokerId;

use super::{brokers_and_controller, str_bytes, HandlerResult, RequestContext};
use crate::shard::Shard;

pub const CLUSTER_ID: &str = "sluice-single-node";

pub fn handle(shard: &Shard, context: &RequestContext, _body: DescribeClusterRequest) -> HandlerResult {
    let (brokers, controller) = brokers_and_controller(shard, &shard.topics());
    let mut response = DescribeClusterResponse::default();
    response.cluster_id = str_bytes(CLUSTER_ID);
    response.controller_id = BrokerId(controller);
    response.brokers = brokers
        .into_iter()
        .map(|(id, host, port, rack)| {
            let mut broker = DescribeClusterBroker::default();
            broker.broker_id = BrokerId(id);
            broker.host = str_bytes(&host);
            broker.port = i32::from(port);
            broker.rack = rack.as_deref().map(str_bytes);
            broker
        })
        .collect();
    if context.api_version >= 1 {
        // endpoint_type 1: brokers.
        response.endpoint_type = 1;
    }
    context.respond(&response)
}
