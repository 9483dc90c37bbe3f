//! Shared measurements: counters every worker bumps, and per-thread histograms the reporter drains each second.
//!
//! Each worker thread owns one `Recorder` behind its own mutex and locks it once per request or response, never per
//! message, so the threads do not contend; the reporter locks each in turn once a second, merges the interval into
//! its totals and resets it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use hdrhistogram::Histogram;

/// Histograms hold microseconds from 1 µs to one hour at 3 significant digits (0.1% resolution): an hour is far
/// beyond any run, and `saturating_record` pins anything larger to the top instead of losing it.
const LATENCY_US_MAX: u64 = 3_600_000_000;

pub fn latency_histogram() -> Histogram<u64> {
    match Histogram::new_with_bounds(1, LATENCY_US_MAX, 3) {
        Ok(histogram) => histogram,
        Err(error) => unreachable!("constant histogram bounds are valid: {error:?}"),
    }
}

/// The three latencies the benchmark reports, in microseconds.
#[derive(Clone)]
pub struct Latencies {
    /// Send (handing the message to the batcher) to acknowledgement.
    pub publish_latency: Histogram<u64>,
    /// Intended send time from the rate clock to actual send: only for rate-limited producers.
    pub publish_delay: Histogram<u64>,
    /// Send to the consumer reading it, from the timestamp at the start of the payload.
    pub e2e_latency: Histogram<u64>,
}

impl Latencies {
    pub fn new() -> Self {
        Latencies {
            publish_latency: latency_histogram(),
            publish_delay: latency_histogram(),
            e2e_latency: latency_histogram(),
        }
    }

    pub fn add(&mut self, other: &Latencies) {
        // Same bounds on both sides, so adding cannot fail; saturate rather than panic if it ever did.
        let _ = self.publish_latency.add(&other.publish_latency);
        let _ = self.publish_delay.add(&other.publish_delay);
        let _ = self.e2e_latency.add(&other.e2e_latency);
    }

    pub fn reset(&mut self) {
        self.publish_latency.reset();
        self.publish_delay.reset();
        self.e2e_latency.reset();
    }
}

impl Default for Latencies {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Default)]
pub struct Counters {
    pub sent_messages: AtomicU64,
    pub sent_bytes: AtomicU64,
    pub acked_messages: AtomicU64,
    pub acked_bytes: AtomicU64,
    pub failed_messages: AtomicU64,
    pub consumed_messages: AtomicU64,
    pub consumed_bytes: AtomicU64,
    pub produce_requests: AtomicU64,
    pub fetch_requests: AtomicU64,
    /// Batches sent again, and partition fetches repeated, after a stale-metadata error (see `cluster`).
    pub retries: AtomicU64,
}

/// A point-in-time copy of the counters, for rates over an interval.
#[derive(Clone, Copy, Debug, Default)]
pub struct CounterSnapshot {
    pub sent_messages: u64,
    pub sent_bytes: u64,
    pub acked_messages: u64,
    pub acked_bytes: u64,
    pub failed_messages: u64,
    pub consumed_messages: u64,
    pub consumed_bytes: u64,
    pub produce_requests: u64,
    pub fetch_requests: u64,
    pub retries: u64,
}

impl CounterSnapshot {
    pub fn since(&self, earlier: &CounterSnapshot) -> CounterSnapshot {
        CounterSnapshot {
            sent_messages: self.sent_messages - earlier.sent_messages,
            sent_bytes: self.sent_bytes - earlier.sent_bytes,
            acked_messages: self.acked_messages - earlier.acked_messages,
            acked_bytes: self.acked_bytes - earlier.acked_bytes,
            failed_messages: self.failed_messages - earlier.failed_messages,
            consumed_messages: self.consumed_messages - earlier.consumed_messages,
            consumed_bytes: self.consumed_bytes - earlier.consumed_bytes,
            produce_requests: self.produce_requests - earlier.produce_requests,
            fetch_requests: self.fetch_requests - earlier.fetch_requests,
            retries: self.retries - earlier.retries,
        }
    }
}

pub struct Stats {
    pub counters: Counters,
    recorders: Mutex<Vec<Arc<Mutex<Latencies>>>>,
    errors: Mutex<ErrorLog>,
}

#[derive(Default)]
struct ErrorLog {
    count: u64,
    first: Vec<String>,
}

/// Distinct error messages kept for the final report; the rest are only counted.
const ERROR_MESSAGES_KEPT_MAX: usize = 8;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A worker that panicked while holding the lock left plain counts behind, which are still worth reading.
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Stats {
    pub fn new() -> Arc<Self> {
        Arc::new(Stats {
            counters: Counters::default(),
            recorders: Mutex::new(Vec::new()),
            errors: Mutex::default(),
        })
    }

    /// A recorder for one worker thread, registered for draining.
    pub fn recorder(&self) -> Arc<Mutex<Latencies>> {
        let recorder = Arc::new(Mutex::new(Latencies::new()));
        lock(&self.recorders).push(Arc::clone(&recorder));
        recorder
    }

    /// Merges every worker's interval histograms into `into` and resets them.
    pub fn drain(&self, into: &mut Latencies) {
        for recorder in lock(&self.recorders).iter() {
            let mut latencies = lock(recorder);
            into.add(&latencies);
            latencies.reset();
        }
    }

    pub fn snapshot(&self) -> CounterSnapshot {
        let counters = &self.counters;
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        CounterSnapshot {
            sent_messages: load(&counters.sent_messages),
            sent_bytes: load(&counters.sent_bytes),
            acked_messages: load(&counters.acked_messages),
            acked_bytes: load(&counters.acked_bytes),
            failed_messages: load(&counters.failed_messages),
            consumed_messages: load(&counters.consumed_messages),
            consumed_bytes: load(&counters.consumed_bytes),
            produce_requests: load(&counters.produce_requests),
            fetch_requests: load(&counters.fetch_requests),
            retries: load(&counters.retries),
        }
    }

    pub fn error(&self, message: String) {
        let mut errors = lock(&self.errors);
        errors.count += 1;
        if errors.first.len() < ERROR_MESSAGES_KEPT_MAX && !errors.first.contains(&message) {
            eprintln!("sluice-bench: {message}");
            errors.first.push(message);
        }
    }

    pub fn errors(&self) -> (u64, Vec<String>) {
        let errors = lock(&self.errors);
        (errors.count, errors.first.clone())
    }
}

pub fn record_us(histogram: &mut Histogram<u64>, nanoseconds: u64) {
    histogram.saturating_record((nanoseconds / 1000).max(1));
}

pub fn add(counter: &AtomicU64, value: u64) {
    counter.fetch_add(value, Ordering::Relaxed);
}
