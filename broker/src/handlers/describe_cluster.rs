//! DescribeCluster (key 60), v0–1: a cluster of one broker that is also the controller.

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{DescribeClusterRequest, DescribeClusterResponse};

use super::{node, str_bytes, HandlerResult, RequestContext};
use crate::shard::Shard;

pub const CLUSTER_ID: &str = "sluice-single-node";

pub fn handle(shard: &Shard, context: &RequestContext, _body: DescribeClusterRequest) -> HandlerResult {
    let (host, port) = shard.config.advertised();
    let mut broker = DescribeClusterBroker::default();
    broker.broker_id = node(shard);
    broker.host = str_bytes(&host);
    broker.port = i32::from(port);
    let mut response = DescribeClusterResponse::default();
    response.cluster_id = str_bytes(CLUSTER_ID);
    response.controller_id = node(shard);
    response.brokers = vec![broker];
    if context.api_version >= 1 {
        // endpoint_type 1: brokers.
        response.endpoint_type = 1;
    }
    context.respond(&response)
}
