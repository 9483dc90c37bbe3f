//! What a run prints and writes: the progress line, the final table, `--json` and the `--plot` SVG.
//!
//! MB means 10^6 bytes throughout, as fio and iperf3 count, so that ratios against this machine's limits need no
//! conversion. Rates count payload bytes (message size × messages), as the OpenMessaging Benchmark does.

use std::fmt::Write as _;
use std::io;
use std::path::Path;

use hdrhistogram::Histogram;

use crate::memory::MemoryReport;
use crate::stats::{CounterSnapshot, Latencies};
use crate::timeline::Timeline;

/// Percentiles in every report: (JSON key, quantile, label).
pub const PERCENTILES: [(&str, f64, &str); 6] = [
    ("p50", 0.50, "p50"),
    ("p75", 0.75, "p75"),
    ("p95", 0.95, "p95"),
    ("p99", 0.99, "p99"),
    ("p999", 0.999, "p99.9"),
    ("p9999", 0.9999, "p99.99"),
];

pub struct Summary {
    pub label: String,
    pub description: String,
    pub publish_seconds: f64,
    pub consume_seconds: f64,
    pub counters: CounterSnapshot,
    pub backlog_messages: i64,
    pub latencies: Latencies,
    /// Broker CPU in cores (1.0 = one core busy) over the measured period, if `--broker-pid` was given.
    pub broker_cpu_cores: Option<f64>,
    /// Each `--broker-pid`'s share of `broker_cpu_cores`, in the order given (one entry against a single broker).
    pub broker_cpu_cores_each: Vec<Option<f64>>,
    pub generator_cpu_cores: Option<f64>,
    /// The whole machine's busy cores over the same period (all processes and the kernel's own work).
    pub machine_cpu_cores: Option<f64>,
    pub error_count: u64,
    pub errors: Vec<String>,
    pub message_size: usize,
    /// The broker's memory at the run's phases (steady runs with `--broker-pid`).
    pub memory: Option<MemoryReport>,
    /// Per-second points and the first/last windows (steady runs).
    pub timeline: Option<Timeline>,
}

impl Summary {
    pub fn publish_messages_per_s(&self) -> f64 {
        rate(self.counters.acked_messages as f64, self.publish_seconds)
    }

    pub fn publish_mb_per_s(&self) -> f64 {
        rate(self.counters.acked_bytes as f64 / 1e6, self.publish_seconds)
    }

    pub fn consume_messages_per_s(&self) -> f64 {
        rate(self.counters.consumed_messages as f64, self.consume_seconds)
    }

    pub fn consume_mb_per_s(&self) -> f64 {
        rate(self.counters.consumed_bytes as f64 / 1e6, self.consume_seconds)
    }

    pub fn print(&self) {
        let messages_per_request = if self.counters.produce_requests == 0 {
            0.0
        } else {
            self.counters.sent_messages as f64 / self.counters.produce_requests as f64
        };
        println!("== {} ({})", self.label, self.description);
        println!(
            "publish  {:>12.0} msg/s {:>9.1} MB/s over {:.1} s ({:.0} messages per produce request, {} failed, {} retries)",
            self.publish_messages_per_s(),
            self.publish_mb_per_s(),
            self.publish_seconds,
            messages_per_request,
            self.counters.failed_messages,
            self.counters.retries
        );
        println!(
            "consume  {:>12.0} msg/s {:>9.1} MB/s over {:.1} s, backlog at end {} messages",
            self.consume_messages_per_s(),
            self.consume_mb_per_s(),
            self.consume_seconds,
            self.backlog_messages
        );
        let cpu =
            |cores: Option<f64>| cores.map_or("n/a".to_owned(), |cores| format!("{:.0}%", cores * 100.0));
        let each = if self.broker_cpu_cores_each.len() > 1 {
            let shares: Vec<String> = self.broker_cpu_cores_each.iter().map(|&cores| cpu(cores)).collect();
            format!(" ({})", shares.join(" + "))
        } else {
            String::new()
        };
        println!(
            "cpu      broker {}{each} of one core, sluice-bench {}, whole machine {} (2 cores = 200%)",
            cpu(self.broker_cpu_cores),
            cpu(self.generator_cpu_cores),
            cpu(self.machine_cpu_cores)
        );
        println!(
            "{:<16} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}   (ms)",
            "latency", "p50", "p75", "p95", "p99", "p99.9", "p99.99", "max"
        );
        for (name, histogram) in self.series() {
            let mut line = format!("{name:<16}");
            if histogram.is_empty() {
                line.push_str("   (none)");
            } else {
                for (_, quantile, _) in PERCENTILES {
                    let _ = write!(line, " {:>9.3}", histogram.value_at_quantile(quantile) as f64 / 1000.0);
                }
                let _ = write!(line, " {:>9.3}", histogram.max() as f64 / 1000.0);
            }
            println!("{line}");
        }
        if let Some(memory) = &self.memory {
            let figure =
                |value: Option<f64>| value.map_or("n/a".to_owned(), |value| format!("{value:.1} KiB"));
            println!(
                "memory   broker RSS median {} MiB during the run; per idle partition {}, per active partition {}, \
                 per idle connection {}",
                crate::memory::median_and_peak(&memory.during_run_rss_kib).0.map_or(0, |kib| kib / 1024),
                figure(memory.per_idle_partition_kib()),
                figure(memory.per_active_partition_kib()),
                figure(memory.per_idle_connection_kib())
            );
        }
        if let Some(ratio) = self.timeline.as_ref().and_then(Timeline::p99_ratio) {
            println!("windows  publish p99 of the last window / the first: {ratio:.2}");
        }
        if self.error_count > 0 {
            println!("errors   {} (first: {})", self.error_count, self.errors.join("; "));
        }
    }

    fn series(&self) -> [(&'static str, &Histogram<u64>); 3] {
        [
            ("publish latency", &self.latencies.publish_latency),
            ("publish delay", &self.latencies.publish_delay),
            ("end-to-end", &self.latencies.e2e_latency),
        ]
    }

    pub fn to_json(&self) -> String {
        let mut json = String::from("{\n");
        let _ = writeln!(json, "  \"label\": {},", json_string(&self.label));
        let _ = writeln!(json, "  \"description\": {},", json_string(&self.description));
        let _ = writeln!(json, "  \"mb\": \"10^6 bytes of payload\",");
        let _ = writeln!(json, "  \"message_size\": {},", self.message_size);
        let _ = writeln!(json, "  \"publish_seconds\": {:.3},", self.publish_seconds);
        let _ = writeln!(json, "  \"consume_seconds\": {:.3},", self.consume_seconds);
        let _ = writeln!(json, "  \"publish_msgs_per_s\": {:.1},", self.publish_messages_per_s());
        let _ = writeln!(json, "  \"publish_mb_per_s\": {:.3},", self.publish_mb_per_s());
        let _ = writeln!(json, "  \"consume_msgs_per_s\": {:.1},", self.consume_messages_per_s());
        let _ = writeln!(json, "  \"consume_mb_per_s\": {:.3},", self.consume_mb_per_s());
        let _ = writeln!(json, "  \"published_messages\": {},", self.counters.acked_messages);
        let _ = writeln!(json, "  \"consumed_messages\": {},", self.counters.consumed_messages);
        let _ = writeln!(json, "  \"failed_messages\": {},", self.counters.failed_messages);
        let _ = writeln!(json, "  \"produce_requests\": {},", self.counters.produce_requests);
        let _ = writeln!(json, "  \"fetch_requests\": {},", self.counters.fetch_requests);
        let _ = writeln!(json, "  \"retries\": {},", self.counters.retries);
        let _ = writeln!(json, "  \"backlog_messages\": {},", self.backlog_messages);
        let _ = writeln!(json, "  \"broker_cpu_cores\": {},", json_option(self.broker_cpu_cores));
        let each: Vec<String> = self.broker_cpu_cores_each.iter().map(|&cores| json_option(cores)).collect();
        let _ = writeln!(json, "  \"broker_cpu_cores_each\": [{}],", each.join(", "));
        let _ = writeln!(json, "  \"generator_cpu_cores\": {},", json_option(self.generator_cpu_cores));
        let _ = writeln!(json, "  \"machine_cpu_cores\": {},", json_option(self.machine_cpu_cores));
        let _ = writeln!(json, "  \"error_count\": {},", self.error_count);
        let errors: Vec<String> = self.errors.iter().map(|error| json_string(error)).collect();
        let _ = writeln!(json, "  \"errors\": [{}],", errors.join(", "));
        let keys = ["publish_latency_us", "publish_delay_us", "e2e_latency_us"];
        for (key, (_, histogram)) in keys.iter().zip(self.series()) {
            let _ = writeln!(json, "  \"{key}\": {},", histogram_json(histogram));
        }
        if let Some(memory) = &self.memory {
            let _ = writeln!(json, "  \"memory\": {},", memory.to_json());
        }
        match &self.timeline {
            Some(timeline) => json.push_str(&timeline.to_json()),
            None => json.push_str("  \"series\": []"),
        }
        json.push_str("\n}\n");
        json
    }

    /// A percentile chart of the three latencies: x is the percentile on the usual 1/(1-p) log scale (so the tail
    /// gets room), y is milliseconds on a log scale (so p50 and max both stay readable).
    #[allow(clippy::too_many_lines)] // over 70 lines before the limit; to be split
    pub fn to_svg(&self) -> String {
        const WIDTH: f64 = 1040.0;
        const HEIGHT: f64 = 520.0;
        const LEFT: f64 = 80.0;
        const RIGHT: f64 = 250.0;
        const TOP: f64 = 76.0;
        const BOTTOM: f64 = 60.0;
        /// Up to 99.9999%: 10^6 on the 1/(1-p) axis.
        const X_DECADES: f64 = 6.0;
        let colors = ["#1f77b4", "#ff7f0e", "#2ca02c"];
        let plot_width = WIDTH - LEFT - RIGHT;
        let plot_height = HEIGHT - TOP - BOTTOM;
        let series: Vec<(&str, &Histogram<u64>, &str)> = self
            .series()
            .into_iter()
            .zip(colors)
            .filter(|((_, histogram), _)| !histogram.is_empty())
            .map(|((name, histogram), color)| (name, histogram, color))
            .collect();
        let low_us = series.iter().map(|(_, histogram, _)| histogram.min().max(1)).min().unwrap_or(1);
        let high_us = series.iter().map(|(_, histogram, _)| histogram.max().max(2)).max().unwrap_or(1000);
        let y_low = ((low_us as f64 / 1000.0).log10()).floor();
        let y_high = ((high_us as f64 / 1000.0).log10()).ceil().max(y_low + 1.0);
        let x_at = |decades: f64| LEFT + plot_width * decades / X_DECADES;
        let y_at = |ms: f64| TOP + plot_height * (1.0 - (ms.max(1e-3).log10() - y_low) / (y_high - y_low));
        let mut svg = String::new();
        let _ = writeln!(
            svg,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
        let _ = writeln!(
            svg,
            r#"<text x="{LEFT}" y="24" font-size="16" font-weight="bold">{}</text>"#,
            xml_escape(&self.label)
        );
        let rates = format!(
            "publish {:.1} MB/s ({:.0} msg/s), consume {:.1} MB/s, broker CPU {}",
            self.publish_mb_per_s(),
            self.publish_messages_per_s(),
            self.consume_mb_per_s(),
            self.broker_cpu_cores.map_or("n/a".to_owned(), |cores| format!("{:.0}%", cores * 100.0))
        );
        for (index, line) in [self.description.as_str(), rates.as_str()].iter().enumerate() {
            let _ = writeln!(
                svg,
                r##"<text x="{LEFT}" y="{}" fill="#555" font-size="11">{}</text>"##,
                42 + 15 * index,
                xml_escape(line)
            );
        }
        for decade in 0..=(X_DECADES as i32) {
            let x = x_at(decade as f64);
            let label = match decade {
                0 => "0%".to_owned(),
                1 => "90%".to_owned(),
                2 => "99%".to_owned(),
                _ => format!("99.{}%", "9".repeat(decade as usize - 2)),
            };
            let _ = writeln!(
                svg,
                r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/>"##,
                TOP + plot_height
            );
            let _ = writeln!(
                svg,
                r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{label}</text>"#,
                TOP + plot_height + 18.0
            );
        }
        let mut decade = y_low;
        while decade <= y_high {
            let ms = 10f64.powf(decade);
            let y = y_at(ms);
            let label = if ms >= 1.0 { format!("{ms:.0} ms") } else { format!("{ms} ms") };
            let _ = writeln!(
                svg,
                r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/>"##,
                LEFT + plot_width
            );
            let _ = writeln!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{label}</text>"#,
                LEFT - 6.0,
                y + 4.0
            );
            decade += 1.0;
        }
        let _ = writeln!(
            svg,
            r##"<rect x="{LEFT}" y="{TOP}" width="{plot_width}" height="{plot_height}" fill="none" stroke="#333"/>"##
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile</text>"#,
            LEFT + plot_width / 2.0,
            HEIGHT - 14.0
        );
        let _ = writeln!(
            svg,
            r#"<text x="18" y="{:.1}" transform="rotate(-90 18 {:.1})" text-anchor="middle">latency (log scale)</text>"#,
            TOP + plot_height / 2.0,
            TOP + plot_height / 2.0
        );
        for (index, (name, histogram, color)) in series.iter().enumerate() {
            let mut points = String::new();
            for step in 0..=(X_DECADES as i32 * 20) {
                let decades = step as f64 / 20.0;
                let quantile = 1.0 - 10f64.powf(-decades);
                // The right edge is the maximum, so the chart and the legend agree on it.
                let value_us = if step == X_DECADES as i32 * 20 {
                    histogram.max()
                } else {
                    histogram.value_at_quantile(quantile)
                };
                let ms = value_us as f64 / 1000.0;
                let _ = write!(points, "{:.1},{:.1} ", x_at(decades), y_at(ms));
            }
            let _ = writeln!(
                svg,
                r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{points}"/>"#
            );
            let legend_y = TOP + 20.0 + 40.0 * index as f64;
            let legend_x = LEFT + plot_width + 16.0;
            let _ = writeln!(
                svg,
                r#"<line x1="{legend_x}" y1="{legend_y}" x2="{:.1}" y2="{legend_y}" stroke="{color}" stroke-width="3"/>"#,
                legend_x + 24.0
            );
            let _ =
                writeln!(svg, r#"<text x="{:.1}" y="{:.1}">{name}</text>"#, legend_x + 30.0, legend_y + 4.0);
            let detail = format!(
                "p99 {:.2} ms, max {:.2} ms",
                histogram.value_at_quantile(0.99) as f64 / 1000.0,
                histogram.max() as f64 / 1000.0
            );
            let _ = writeln!(
                svg,
                r##"<text x="{:.1}" y="{:.1}" fill="#555" font-size="11">{detail}</text>"##,
                legend_x + 30.0,
                legend_y + 18.0
            );
        }
        svg.push_str("</svg>\n");
        svg
    }
}

pub fn write_file(path: &Path, contents: &str) -> io::Result<()> {
    std::fs::write(path, contents)
}

fn rate(amount: f64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        amount / seconds
    } else {
        0.0
    }
}

pub fn histogram_json(histogram: &Histogram<u64>) -> String {
    let mut json = String::from("{");
    for (key, quantile, _) in PERCENTILES {
        let value = if histogram.is_empty() { 0 } else { histogram.value_at_quantile(quantile) };
        let _ = write!(json, "\"{key}\": {value}, ");
    }
    let _ = write!(
        json,
        "\"max\": {}, \"mean\": {:.1}, \"count\": {}}}",
        if histogram.is_empty() { 0 } else { histogram.max() },
        if histogram.is_empty() { 0.0 } else { histogram.mean() },
        histogram.len()
    );
    json
}

fn json_option(value: Option<f64>) -> String {
    value.map_or("null".to_owned(), |value| format!("{value:.3}"))
}

pub fn json_string(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for character in text.chars() {
        match character {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\n' => quoted.push_str("\\n"),
            character if (character as u32) < 0x20 => {
                let _ = write!(quoted, "\\u{:04x}", character as u32);
            }
            character => quoted.push(character),
        }
    }
    quoted.push('"');
    quoted
}

pub fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The per-second progress line.
pub fn progress_line(
    elapsed_s: f64,
    phase: &str,
    interval: &CounterSnapshot,
    interval_s: f64,
    backlog: i64,
    latencies: &Latencies,
    broker_cpu_cores: Option<f64>,
) -> String {
    let p99_ms = |histogram: &Histogram<u64>| {
        if histogram.is_empty() {
            "-".to_owned()
        } else {
            format!("{:.2}", histogram.value_at_quantile(0.99) as f64 / 1000.0)
        }
    };
    let mut line = format!(
        "{elapsed_s:6.1}s {phase:<8} pub {:>9.0} msg/s {:>8.1} MB/s | cons {:>9.0} msg/s {:>8.1} MB/s | backlog {:>9} | p99 ms pub {} delay {} e2e {}",
        rate(interval.acked_messages as f64, interval_s),
        rate(interval.acked_bytes as f64 / 1e6, interval_s),
        rate(interval.consumed_messages as f64, interval_s),
        rate(interval.consumed_bytes as f64 / 1e6, interval_s),
        backlog,
        p99_ms(&latencies.publish_latency),
        p99_ms(&latencies.publish_delay),
        p99_ms(&latencies.e2e_latency),
    );
    if let Some(cores) = broker_cpu_cores {
        let _ = write!(line, " | broker cpu {:.0}%", cores * 100.0);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::latency_histogram;

    fn summary() -> Summary {
        let mut latencies = Latencies::new();
        for value in 1..=10_000u64 {
            latencies.publish_latency.record(value).unwrap();
            latencies.e2e_latency.record(value * 2).unwrap();
        }
        Summary {
            label: "test \"run\"".into(),
            description: "unit".into(),
            publish_seconds: 2.0,
            consume_seconds: 2.0,
            counters: CounterSnapshot { acked_messages: 2000, acked_bytes: 4_000_000, ..Default::default() },
            backlog_messages: 0,
            latencies,
            broker_cpu_cores: Some(1.5),
            broker_cpu_cores_each: vec![Some(1.5)],
            generator_cpu_cores: None,
            machine_cpu_cores: None,
            error_count: 0,
            errors: Vec::new(),
            message_size: 2000,
            memory: None,
            timeline: None,
        }
    }

    #[test]
    fn json_has_the_required_keys_and_values() {
        // Proves the --json contract: rates and the three latency objects with p50, p99, p999, p9999 and max.
        let json = summary().to_json();
        assert!(json.contains("\"publish_msgs_per_s\": 1000.0,"), "{json}");
        assert!(json.contains("\"publish_mb_per_s\": 2.000,"));
        assert!(json.contains("\"consume_mb_per_s\": 0.000,"));
        assert!(json.contains("\"label\": \"test \\\"run\\\"\""));
        for key in ["publish_latency_us", "publish_delay_us", "e2e_latency_us"] {
            assert!(json.contains(&format!("\"{key}\": {{\"p50\": ")), "{key}");
        }
        assert!(json.contains("\"p9999\": 9999, \"max\": 10007"), "{json}");
        assert!(json.trim_end().ends_with('}'));
    }

    #[test]
    fn svg_draws_one_line_per_non_empty_series() {
        // Proves the chart skips the empty publish-delay series and is a closed SVG document.
        let svg = summary().to_svg();
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("99.99%"));
        let _ = latency_histogram();
    }
}
