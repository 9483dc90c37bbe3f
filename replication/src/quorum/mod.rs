//! The metadata quorum: raft-rs (`raft::RawNode`) driven by the rules of REPLICATION_FACTS.md §1 (`node`), over a
//! storage seam with explicit sync points (`storage`; on disk in `disk`), carrying batches of metadata records
//! whose committed entries build the `MetadataImage`. No clock, thread or socket: the broker (or the simulator)
//! feeds messages, ticks, proposals and syncs, and carries out what comes back.

pub mod disk;
pub mod node;
#[cfg(test)]
mod simulation;
pub mod storage;

pub use disk::{DiskQuorumStorage, MemDir, QuorumDir, RecoveryReport, StdDir};
pub use node::{
    node_id, raft_id, Applied, AppliedKind, BrokenRule, ProposalError, ProposalId, QuorumConfig, QuorumError,
    QuorumNode, QuorumOutput,
};
pub use storage::{LogState, MemQuorumStorage, QuorumStorage, QuorumStorageError};
