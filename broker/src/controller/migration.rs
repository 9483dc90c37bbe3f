//! A data directory written by a single-node Sluice (`topics.toml`) joins cluster mode with its topics and data:
//! the first time this node leads the quorum (registered), it writes the table's topics into the metadata log as
//! they were — same topic ids, partitions on this node, their leader epochs — so the logs on disk are served as
//! before. Topics the log already has (by name) are skipped, so a restart writes nothing twice.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use sluice_replication::metadata::{MetadataImage, MetadataRecord, PartitionRecord, TopicId, TopicRecord};
use sluice_replication::{LeaderEpoch, NodeId};

use super::MetadataCell;
use crate::cluster::TopicTable;
use crate::config::Config;

/// The records of every topic in `<data dir>/topics.toml` (none when there is no such file).
pub fn bootstrap_records(config: &Config) -> Result<Vec<MetadataRecord>, String> {
    let node = NodeId(config.node_id);
    let table = TopicTable::load(&config.data_dir, node)?;
    let mut records = Vec::new();
    for entry in table.topics.values() {
        let id = TopicId(u128::from_str_radix(&entry.topic_id, 16).unwrap_or(0));
        if id == TopicId::ZERO {
            return Err(format!("topics.toml: topic \"{}\" has no valid topic id", entry.name));
        }
        records.push(MetadataRecord::Topic(TopicRecord {
            name: entry.name.clone(),
            id,
            configs: entry.configs.clone(),
        }));
        for index in 0..entry.partition_count {
            records.push(MetadataRecord::Partition(PartitionRecord {
                topic_id: id,
                partition: index,
                replicas: vec![node],
                isr: vec![node],
                leader: node,
                // One past the epoch its batches carry: the cluster's leader of a new epoch (a new leader never
                // leads an epoch its log already holds).
                leader_epoch: LeaderEpoch(entry.leader_epoch(index).0.max(0) + 1),
                partition_epoch: 0,
            }));
        }
    }
    if !records.is_empty() {
        log::info!(
            "topics.toml holds {} topics: they join the metadata log once this node leads",
            table.topics.len()
        );
    }
    Ok(records)
}

/// How long start-up waits for the migrated topics to be committed: the node must first lead the quorum.
const MIGRATION_WAIT: Duration = Duration::from_secs(60);

/// Start-up of a migrating node: waits until the metadata log holds every topic of `topics.toml`, so no client
/// can create one of those names anew (with a new id) before the old one is written. A node that does not come
/// to lead within the bound stops with the reason.
pub fn wait_until_written(cell: &MetadataCell, bootstrap: &[MetadataRecord]) -> Result<(), String> {
    let deadline = Instant::now() + MIGRATION_WAIT;
    while !missing(&cell.latest().0, bootstrap).is_empty() {
        if Instant::now() >= deadline {
            return Err(format!(
                "the topics of topics.toml were not written into the metadata log within {} s: a single-node data \
                 directory joins as a cluster of one (controller.quorum.voters naming only this node)",
                MIGRATION_WAIT.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// The bootstrap records of topics the image does not have yet.
pub fn missing(image: &MetadataImage, bootstrap: &[MetadataRecord]) -> Vec<MetadataRecord> {
    let mut absent: BTreeSet<TopicId> = BTreeSet::new();
    bootstrap
        .iter()
        .filter(|record| match record {
            MetadataRecord::Topic(topic) => {
                let new = image.topic_by_name(&topic.name).is_none();
                if new {
                    absent.insert(topic.id);
                }
                new
            }
            MetadataRecord::Partition(partition) => absent.contains(&partition.topic_id),
            _ => false,
        })
        .cloned()
        .collect()
}
