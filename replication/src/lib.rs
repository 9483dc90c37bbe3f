//! Sluice replication: leader/follower log replication (ISR, high watermark, leader epochs, truncation after a
//! leader change) and the cluster-metadata state machine driven by a Raft quorum.
//!
//! The crate is sans-I/O: its inputs are messages and ticks, its outputs are messages, storage operations and
//! commit notifications, so that whole clusters run deterministically in one thread under simulation tests. It
//! imports no runtime, opens no socket, starts no thread and reads no clock.
//!
//! What exists today: the metadata quorum's core (not yet run by the broker) and the ground the ISR data path will
//! stand on:
//! - `metadata`: KRaft-like metadata records, their versioned encoding, the immutable `MetadataImage` that
//!   validates every transition, and the controller that turns admin requests into records.
//! - `quorum`: the Raft driver around tikv's `raft::RawNode` over a storage seam with explicit sync points, the
//!   metadata log on disk behind that seam (`quorum::disk`, over a small synchronous directory seam: real files via
//!   blocking `std::fs` — the one place this crate touches a file, meant for a thread of its own — or a simulated
//!   directory), and its deterministic simulation (tests only).
//! - `partition`: the ISR data path of one partition replica (issue 16) — the leader's follower tracking, high
//!   watermark, ISR shrink/expand via AlterPartition and Fetch answers with diverging epochs; the follower's fetch
//!   and truncation decisions; roles from metadata; the controller's AlterPartition check — and its deterministic
//!   simulation with brokers, a controller and an idempotent acks=all producer (tests only). Not yet wired.
//! - `replica`: one replica's offsets (log end, durable end, high watermark) and the acknowledgement rule — the
//!   seam the broker's partition layer calls; a cluster of one today, where ISR replication plugs in next.
//! - `types`: the vocabulary — `NodeId`, `ShardId`, `LeaderEpoch`, `TopicPartition` — plus `Offset`, re-exported
//!   from `sluice-storage`, where it is defined once.
//! - `seams`: what a driver provides and what a state machine is. `Clock` (monotonic and wall time), `MessageBus`
//!   (a bounded, unreliable mailbox between nodes, generic over the message type), `ReplicaLog` (log end offset,
//!   durable end offset, append replicated batches, truncate), and `Node` with its bounded `Outbox`: the shape of
//!   every state machine here, driven by `on_message` and `on_tick`. The broker implements the driver side over
//!   glommio; nothing here does.
//! - `sim`: the deterministic simulator. `SimNetwork` (seeded loss, duplication, delay and hence reordering,
//!   one- and two-way partitions, a bounded queue whose drops are counted), `SimClock`, the `Prng`, `SimLog` (a
//!   `ReplicaLog` with written and durable images; a crash loses the unsynced suffix), and `Simulation`, which
//!   steps nodes one callback at a time from a seed (`SLUICE_SEED` replays one) and runs an invariant `Checker`
//!   after every step.
//!
//! The single-node broker models its partitions as a cluster of one so that the protocols can slot in without
//! reshaping the handlers.
//!
//! `sluice-storage` is a dependency only for `Offset`. It brings glommio into this crate's build graph, so "imports
//! no runtime" is a rule about this crate's code, kept by review: nothing here may name `sluice_storage::Log` or
//! any other I/O type of storage.

pub mod metadata;
pub mod partition;
pub mod quorum;
pub mod replica;
pub mod seams;
pub mod sim;
pub mod types;

pub use replica::{AckWait, Acks, ReplicaState, Role, Visibility};
pub use seams::{Clock, Envelope, MessageBus, Node, Outbox, ReplicaLog, SendError};
pub use sluice_storage::Offset;
pub use types::{LeaderEpoch, NodeId, ShardId, TopicPartition};
