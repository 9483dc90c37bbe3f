//! The partition layer: what a broker holds of the cluster's partitions, below routing and the handlers.
//!
//! - [`topic_table`]: the topic table (topics, per-partition assignments and leader epochs, configs) and its
//!   state machine, with its own error enum.
//! - [`partition`]: one owned partition replica — its private log, the replica seam (high watermark and the
//!   acknowledgement rule from `sluice_replication`), idempotent producers; the one produce entry point.
//! - [`manager`]: the partitions one shard owns, generic over the storage seam.
//! - [`placement`]: partition → shard. [`producer_state`]: idempotent producers' sequences.
//!
//! **Architecture invariant:** only [`partition`] touches a partition's `Log`; nothing here imports routing,
//! the mesh, the group coordinator or the handlers.

pub mod manager;
pub mod partition;
pub mod placement;
pub mod producer_state;
pub mod topic_table;

pub use manager::PartitionManager;
pub use partition::{Partition, PartitionOp, PartitionReply, PartitionResult, Produced};
pub use topic_table::{TopicChange, TopicTable, TopicTableError, OFFSETS_TOPIC};
