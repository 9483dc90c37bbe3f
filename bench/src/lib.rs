//! Sluice bench: an OpenMessaging-Benchmark-style load generator (`sluice-bench`) that talks to any broker over the
//! Kafka wire protocol only — it never links the broker crate — so that one run can measure Sluice and a peer side
//! by side. It reports publish/consume rates, publish latency, publish delay and end-to-end latency percentiles from
//! HdrHistogram, and the broker's CPU use. The storage micro-benchmarks live in `storage/benches`.
//!
//! Code map: `batch` builds and reads v2 record batches; `client` frames requests over TCP and negotiates versions;
//! `cluster` routes each partition to its leader from Metadata; `frame` lets requests carry batches without copying;
//! `clock` is the monotonic clock and the open-loop rate clock; `workload` holds the options, payloads and the
//! partitioner; `producer` and `consumer` are the worker threads; `stats` the shared counters and histograms;
//! `pool` drives many producer connections from a few threads
//! (`--producers-total`); `run` drives a run's phases; `memory` samples the broker's RSS; `timeline` keeps latency
//! per second and the first/last windows; `ready` times a restarted broker's start-up (`--await-topics`); `report` prints and writes results; `cpu` reads /proc; `groups` measures the
//! group coordinator (`sluice-group-bench`); `floor` is the latency floor server (`sluice-floor`).

pub mod batch;
pub mod client;
pub mod clock;
pub mod cluster;
pub mod consumer;
pub mod cpu;
pub mod floor;
pub mod frame;
pub mod groups;
pub mod memory;
pub mod pool;
pub mod producer;
pub mod ready;
pub mod report;
pub mod run;
pub mod stats;
pub mod timeline;
pub mod workload;
