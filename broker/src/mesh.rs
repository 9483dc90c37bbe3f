//! Messages between shards. Requests go to the shard that owns a partition (or to shard 0 for topic changes);
//! replies come back on a second mesh so that a full request channel can never block a reply. Both meshes are
//! bounded (`shard.channel.capacity`). Record bytes travel as `Bytes`: only a reference count crosses cores.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::errors::KafkaError;
use crate::group::{GroupReply, GroupRequest};
use crate::partition::{PartitionOp, PartitionResult};
use crate::topics::TopicTable;

/// A request or reply with the id the sender waits on.
#[derive(Debug)]
pub struct Envelope<T> {
    pub id: u64,
    pub from: usize,
    pub body: T,
}

#[derive(Debug)]
pub enum ShardRequest {
    Partition {
        topic: String,
        partition: i32,
        op: PartitionOp,
    },
    /// Fetch long polling: complete when any of these partitions' high watermark passes its offset, or after
    /// `timeout`. The owner is woken by appends, never by polling.
    WaitForData {
        partitions: Vec<(String, i32, i64)>,
        timeout: Duration,
    },
    /// Topic changes; only shard 0 serves these.
    Admin {
        changes: Vec<TopicChange>,
        validate_only: bool,
    },
    /// Shard 0 hands every shard the new table; the reply says the shard has opened or removed its logs.
    ApplyTopics(Arc<TopicTable>),
    /// A new producer id; only shard 0 serves these (it owns the allocator).
    AllocateProducerId,
    /// A consumer-group call, served by the shard that coordinates the group.
    Group(GroupRequest),
}

#[derive(Debug)]
pub enum ShardReply {
    Partition(PartitionResult),
    DataArrived,
    Admin(Vec<Result<(), KafkaError>>),
    Applied(Result<(), String>),
    ProducerId(Result<i64, KafkaError>),
    Group(GroupReply),
}

/// One change to the topic table.
#[derive(Debug, Clone)]
pub enum TopicChange {
    Create {
        name: String,
        partition_count: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
    },
    Delete {
        name: String,
    },
    /// Grow to `partition_count` partitions.
    AddPartitions {
        name: String,
        partition_count: i32,
    },
    /// Set (`Some`) or remove (`None`) topic configs; `replace` first clears every override (AlterConfigs).
    AlterConfigs {
        name: String,
        configs: Vec<(String, Option<String>)>,
        replace: bool,
    },
}
