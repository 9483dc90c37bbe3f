//! Sluice replication: leader/follower log replication (ISR, high watermark, leader epochs, truncation after a
//! leader change) and the cluster-metadata state machine driven by a Raft quorum.
//!
//! This crate will be sans-I/O: its inputs are messages and ticks, its outputs are messages, storage operations
//! and commit notifications, so that whole clusters run deterministically in one thread under simulation tests.
//! It imports no runtime and no sockets. Nothing is built here yet; the single-node broker models its partitions
//! as a cluster of one so that this crate can slot in without reshaping the handlers.
