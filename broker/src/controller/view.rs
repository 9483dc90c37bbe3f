//! The shards' view of the metadata image: the image becomes a `TopicTable` (topics, per-partition replicas,
//! leader, ISR, epochs) with a `ClusterView` (brokers, active controller), which every handler already reads.

use std::sync::Arc;

use sluice_replication::metadata::MetadataImage;

use crate::cluster::topic_table::{BrokerView, ClusterView, PartitionAssignment, TopicEntry};
use crate::cluster::TopicTable;

pub fn table_from_image(image: &Arc<MetadataImage>, controller: Option<i32>) -> TopicTable {
    let topics = image
        .topics()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|partition| PartitionAssignment {
                    replicas: partition.replicas.iter().map(|node| node.0).collect(),
                    leader_epoch: partition.leader_epoch.0,
                    leader: Some(partition.leader.0),
                    isr: partition.isr.iter().map(|node| node.0).collect(),
                })
                .collect();
            let entry = TopicEntry::from_cluster(
                topic.name.clone(),
                topic.id.to_string(),
                topic.configs.clone(),
                partitions,
            );
            (topic.name.clone(), entry)
        })
        .collect();
    let brokers = image
        .brokers()
        .values()
        .map(|broker| {
            let registration = &broker.registration;
            let (host, port) = registration
                .listeners
                .first()
                .map_or((String::new(), 0), |listener| (listener.host.clone(), listener.port));
            let view = BrokerView {
                id: registration.broker.0,
                host,
                port,
                rack: registration.rack.clone(),
                fenced: broker.fenced,
            };
            (view.id, view)
        })
        .collect();
    TopicTable {
        version: image.applied_index(),
        topics,
        cluster: Some(Arc::new(ClusterView { brokers, controller, image: image.clone() })),
    }
}
