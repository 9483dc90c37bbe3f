//! Sluice bench: an OpenMessaging-Benchmark-style load generator (`sluice-bench`) that talks to any broker over the
//! Kafka wire protocol only — it never links the broker crate — so that one run can measure Sluice and a peer side
//! by side. It will report publish/consume rates, publish latency, publish delay and end-to-end latency
//! percentiles from HdrHistogram. The storage micro-benchmarks live in `storage/benches` meanwhile.
