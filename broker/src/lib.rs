//! Sluice's broker: the only crate that touches the network or names glommio executors.
//!
//! Entry points: [`server::run`] starts the shards for a [`config::Config`]; [`connection`] frames requests and
//! keeps responses in order; [`handlers`] holds one file per Kafka API; [`shard::Shard`] is the per-core state;
//! [`group`] is the consumer-group coordinator; [`admin_cli`] holds the operator commands (a blocking Kafka client).
//!
//! **Architecture invariant:** storage errors become Kafka error codes only in [`errors`].
//! **Architecture invariant:** only the shard that owns a partition (see [`placement`]) touches its log.

pub mod admin_cli;
pub mod alloc;
pub mod cluster;
pub mod codec;
pub mod codec_legacy;
pub mod config;
pub mod connection;
pub mod controller;
pub mod errors;
pub mod group;
pub mod handlers;
pub mod logging;
pub mod mesh;
pub mod producer_ids;
pub mod records;
pub mod replica_fetcher;
pub mod server;
pub mod shard;
pub mod shard_cluster;
pub mod sync;
