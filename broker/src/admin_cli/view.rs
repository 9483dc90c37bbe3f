//! `ClusterView`: what one Metadata answer says about a cluster, in plain types the plan computation and the
//! commands read (no codec types past this file).

use std::collections::BTreeMap;

use kafka_protocol::messages::MetadataResponse;

/// Brokers by node id with their advertised `host:port`, the controller id (-1 if none) and every topic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterView {
    pub brokers: BTreeMap<i32, String>,
    pub controller_id: i32,
    pub topics: BTreeMap<String, TopicView>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopicView {
    pub internal: bool,
    pub error_code: i16,
    pub partitions: BTreeMap<i32, PartitionView>,
}

/// One partition: its replicas in order (the first is the preferred leader), the current leader and ISR.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartitionView {
    pub leader: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
}

impl ClusterView {
    pub fn from_metadata(response: &MetadataResponse) -> ClusterView {
        let brokers = response
            .brokers
            .iter()
            .map(|broker| (broker.node_id.0, format!("{}:{}", broker.host.as_str(), broker.port)))
            .collect();
        let mut topics = BTreeMap::new();
        for topic in &response.topics {
            // A topic known only by id (Metadata v10+ may answer so) has no name to reassign it by.
            let Some(name) = &topic.name else { continue };
            let partitions = topic
                .partitions
                .iter()
                .map(|partition| {
                    let view = PartitionView {
                        leader: partition.leader_id.0,
                        replicas: partition.replica_nodes.iter().map(|id| id.0).collect(),
                        isr: partition.isr_nodes.iter().map(|id| id.0).collect(),
                    };
                    (partition.partition_index, view)
                })
                .collect();
            let view = TopicView { internal: topic.is_internal, error_code: topic.error_code, partitions };
            topics.insert(name.0.as_str().to_owned(), view);
        }
        ClusterView { brokers, controller_id: response.controller_id.0, topics }
    }

    /// The replicas of `topic`'s `partition`, if the cluster has it.
    pub fn replicas(&self, topic: &str, partition: i32) -> Option<&[i32]> {
        let partition = self.topics.get(topic)?.partitions.get(&partition)?;
        Some(&partition.replicas)
    }

    /// The broker ids, for messages: `[1, 2, 3]`.
    pub fn broker_ids(&self) -> Vec<i32> {
        self.brokers.keys().copied().collect()
    }
}
