//! The broker's memory, from /proc, at the points of a run that tell what its partitions and connections cost:
//! before the run's topics exist (baseline), once they exist and are idle, once the idle connections are open, and
//! every second of the measured period. RSS (`VmRSS` of /proc/PID/status) is what the process holds resident;
//! PSS (`Pss` of /proc/PID/smaps_rollup) shares pages mapped by several processes out among them, and is read only at
//! the phase points (the kernel walks every mapping to compute it).
//!
//! The per-item figures are differences over counts: per idle partition = (after topics − baseline) / partitions,
//! per connection = (after idle connections − after topics) / idle connections, per active partition = (median during
//! the run − baseline) / partitions — the last includes whatever the load itself costs (its connections, requests in
//! flight, the broker's cache of recent batches), so it is an upper bound on a partition's own share.

use std::fmt::Write as _;
use std::fs;

/// One reading, summed over the brokers given.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemorySample {
    pub rss_kib: u64,
    /// None where smaps_rollup could not be read.
    pub pss_kib: Option<u64>,
}

impl MemorySample {
    /// RSS and PSS of every pid, summed; None if any broker's status cannot be read (a broker that exited).
    pub fn take(pids: &[u32]) -> Option<MemorySample> {
        let mut sample = MemorySample { rss_kib: 0, pss_kib: Some(0) };
        for &pid in pids {
            sample.rss_kib += rss_kib(pid)?;
            sample.pss_kib = match (sample.pss_kib, pss_kib(pid)) {
                (Some(sum), Some(pss)) => Some(sum + pss),
                _ => None,
            };
        }
        (!pids.is_empty()).then_some(sample)
    }
}

/// Resident set of every pid, summed (the cheap per-second reading).
pub fn rss_kib_sum(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&pid| rss_kib(pid)).sum()
}

pub fn rss_kib(pid: u32) -> Option<u64> {
    parse_kib_field(&fs::read_to_string(format!("/proc/{pid}/status")).ok()?, "VmRSS:")
}

pub fn pss_kib(pid: u32) -> Option<u64> {
    parse_kib_field(&fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?, "Pss:")
}

/// The value of a "Name:   1234 kB" line.
fn parse_kib_field(text: &str, name: &str) -> Option<u64> {
    let line = text.lines().find(|line| line.starts_with(name))?;
    line[name.len()..].split_whitespace().next()?.parse().ok()
}

/// (after − before) / count in KiB; None without both readings or with a zero count. Negative when memory fell
/// (an allocator returning pages): reported as measured rather than clamped.
pub fn per_item_kib(before_kib: Option<u64>, after_kib: Option<u64>, count: usize) -> Option<f64> {
    if count == 0 {
        return None;
    }
    Some((after_kib? as f64 - before_kib? as f64) / count as f64)
}

/// The median and the peak of the per-second readings.
pub fn median_and_peak(samples: &[u64]) -> (Option<u64>, Option<u64>) {
    if samples.is_empty() {
        return (None, None);
    }
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    (Some(sorted[sorted.len() / 2]), sorted.last().copied())
}

/// What a run learned about the broker's memory.
#[derive(Clone, Debug, Default)]
pub struct MemoryReport {
    pub baseline: Option<MemorySample>,
    pub after_topics: Option<MemorySample>,
    pub after_idle_connections: Option<MemorySample>,
    /// RSS each second of the measured period.
    pub during_run_rss_kib: Vec<u64>,
    pub after_run: Option<MemorySample>,
    pub partition_count: usize,
    pub idle_connection_count: usize,
    pub producer_connection_count: usize,
}

impl MemoryReport {
    pub fn per_idle_partition_kib(&self) -> Option<f64> {
        per_item_kib(rss(self.baseline), rss(self.after_topics), self.partition_count)
    }

    pub fn per_active_partition_kib(&self) -> Option<f64> {
        let (median, _) = median_and_peak(&self.during_run_rss_kib);
        per_item_kib(rss(self.baseline), median, self.partition_count)
    }

    pub fn per_idle_connection_kib(&self) -> Option<f64> {
        per_item_kib(rss(self.after_topics), rss(self.after_idle_connections), self.idle_connection_count)
    }

    /// (median during the run − after the idle connections) / producer connections: what a producing connection
    /// costs, with the load's own memory (requests in flight, cached batches) in it.
    pub fn per_producer_connection_kib(&self) -> Option<f64> {
        let (median, _) = median_and_peak(&self.during_run_rss_kib);
        let before = rss(self.after_idle_connections.or(self.after_topics));
        per_item_kib(before, median, self.producer_connection_count)
    }

    pub fn to_json(&self) -> String {
        let (median, peak) = median_and_peak(&self.during_run_rss_kib);
        let mut json = String::from("{");
        let number = |value: Option<u64>| value.map_or("null".to_owned(), |value| value.to_string());
        let real = |value: Option<f64>| value.map_or("null".to_owned(), |value| format!("{value:.1}"));
        for (key, sample) in [
            ("baseline", self.baseline),
            ("after_topics", self.after_topics),
            ("after_idle_connections", self.after_idle_connections),
            ("after_run", self.after_run),
        ] {
            let _ = write!(
                json,
                "\"{key}_kib\": {}, \"{key}_pss_kib\": {}, ",
                number(sample.map(|sample| sample.rss_kib)),
                number(sample.and_then(|sample| sample.pss_kib))
            );
        }
        let _ = write!(
            json,
            "\"during_run_median_kib\": {}, \"during_run_peak_kib\": {}, \"partitions\": {}, \"idle_connections\": {}, \
             \"producer_connections\": {}, \"per_idle_partition_kib\": {}, \"per_active_partition_kib\": {}, \
             \"per_idle_connection_kib\": {}, \"per_producer_connection_kib\": {}}}",
            number(median),
            number(peak),
            self.partition_count,
            self.idle_connection_count,
            self.producer_connection_count,
            real(self.per_idle_partition_kib()),
            real(self.per_active_partition_kib()),
            real(self.per_idle_connection_kib()),
            real(self.per_producer_connection_kib()),
        );
        json
    }
}

fn rss(sample: Option<MemorySample>) -> Option<u64> {
    sample.map(|sample| sample.rss_kib)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(rss_kib: u64) -> Option<MemorySample> {
        Some(MemorySample { rss_kib, pss_kib: None })
    }

    #[test]
    fn parses_proc_fields() {
        // Proves the kB value is taken from the named line only, and a missing line is None.
        let status = "Name:\tsluice\nVmPeak:\t  900 kB\nVmRSS:\t  123456 kB\nRssAnon:\t 1 kB\n";
        assert_eq!(parse_kib_field(status, "VmRSS:"), Some(123_456));
        assert_eq!(parse_kib_field(status, "VmSwap:"), None);
        let rollup =
            "55d0-7ffd ---p 00000000 00:00 0 [rollup]\nRss:  2000 kB\nPss:  1500 kB\nPss_Anon: 1 kB\n";
        assert_eq!(parse_kib_field(rollup, "Pss:"), Some(1500));
    }

    #[test]
    fn per_item_figures_are_differences_over_counts() {
        // Proves the arithmetic of each figure, including a fall in memory, and that a missing reading or a zero
        // count yields nothing rather than a division by zero.
        let report = MemoryReport {
            baseline: sample(100_000),
            after_topics: sample(150_000),
            after_idle_connections: sample(152_000),
            during_run_rss_kib: vec![400_000, 160_000, 300_000],
            after_run: None,
            partition_count: 10_000,
            idle_connection_count: 1_000,
            producer_connection_count: 4,
        };
        assert_eq!(report.per_idle_partition_kib(), Some(5.0));
        assert_eq!(report.per_active_partition_kib(), Some(20.0));
        assert_eq!(report.per_idle_connection_kib(), Some(2.0));
        assert_eq!(report.per_producer_connection_kib(), Some(37_000.0));
        assert_eq!(per_item_kib(Some(10), Some(4), 2), Some(-3.0));
        assert_eq!(per_item_kib(None, Some(4), 2), None);
        assert_eq!(per_item_kib(Some(1), Some(4), 0), None);
        let json = report.to_json();
        assert!(
            json.contains("\"during_run_median_kib\": 300000, \"during_run_peak_kib\": 400000"),
            "{json}"
        );
        assert!(json.contains("\"per_idle_partition_kib\": 5.0"), "{json}");
        assert!(json.contains("\"after_run_kib\": null"), "{json}");
    }

    #[test]
    fn reads_this_process() {
        // Proves /proc parsing works on a live process: this test's own RSS is positive.
        let pid = std::process::id();
        assert!(rss_kib(pid).unwrap() > 0);
        assert!(MemorySample::take(&[pid]).unwrap().rss_kib > 0);
        assert_eq!(MemorySample::take(&[]), None);
        assert_eq!(median_and_peak(&[]), (None, None));
    }
}
