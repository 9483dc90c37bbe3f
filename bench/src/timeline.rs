//! Latency over time: one point per second of the measured period (publish rate, publish p50/p99/p99.9, end-to-end
//! p99, the broker's RSS), and with `--window-s W` the publish latency of the first and the last W seconds as whole
//! histograms, so that "p99 of the last five minutes against the first five" is a percentile of each window's
//! messages, not a mean of per-second percentiles. `--plot-series` draws the points as an SVG line chart.
//!
//! A second's latencies are those acknowledged during it (measured from each message's send), so a stall shows in
//! the second its acknowledgements finally arrive.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

use crate::report::{histogram_json, xml_escape};
use crate::stats::{latency_histogram, Latencies};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SeriesPoint {
    /// Seconds since the measured period began, at the end of this interval.
    pub at_s: f64,
    pub publish_mb_per_s: f64,
    pub publish_p50_us: u64,
    pub publish_p99_us: u64,
    pub publish_p999_us: u64,
    pub e2e_p99_us: u64,
    pub broker_rss_kib: Option<u64>,
}

/// Whether an interval ending `end_s` into a measured period of `duration_s` belongs to the first and to the last
/// window of `window_s`: interval (end−1, end] is in the first when end ≤ window, in the last when end > duration −
/// window. With window ≥ duration both hold for every interval.
pub fn window_membership(end_s: f64, duration_s: f64, window_s: f64) -> (bool, bool) {
    // A tick lands a few milliseconds after each whole second; round so that second 300 is the 300th interval.
    let end = end_s.round();
    (end <= window_s, end > duration_s - window_s)
}

/// The per-second points and the two windows.
pub struct Timeline {
    pub points: Vec<SeriesPoint>,
    pub window_s: f64,
    pub duration_s: f64,
    pub first: Histogram<u64>,
    pub last: Histogram<u64>,
}

impl Timeline {
    pub fn new(duration_s: f64, window_s: f64) -> Self {
        Timeline {
            points: Vec::new(),
            window_s,
            duration_s,
            first: latency_histogram(),
            last: latency_histogram(),
        }
    }

    /// Adds one measured interval ending `end_s` into the period. A sliver at the very start (the tick that begins
    /// the period) is no second of its own and is left out.
    pub fn add(&mut self, end_s: f64, interval: &Latencies, publish_mb_per_s: f64, rss_kib: Option<u64>) {
        if end_s < 0.5 {
            return;
        }
        let publish = &interval.publish_latency;
        let at = |quantile: f64| if publish.is_empty() { 0 } else { publish.value_at_quantile(quantile) };
        let e2e = &interval.e2e_latency;
        self.points.push(SeriesPoint {
            at_s: end_s,
            publish_mb_per_s,
            publish_p50_us: at(0.5),
            publish_p99_us: at(0.99),
            publish_p999_us: at(0.999),
            e2e_p99_us: if e2e.is_empty() { 0 } else { e2e.value_at_quantile(0.99) },
            broker_rss_kib: rss_kib,
        });
        if self.window_s > 0.0 {
            let (first, last) = window_membership(end_s, self.duration_s, self.window_s);
            if first {
                let _ = self.first.add(publish);
            }
            if last {
                let _ = self.last.add(publish);
            }
        }
    }

    /// Acknowledgements that arrive after the period (of messages sent in it) belong to its last window.
    pub fn add_tail(&mut self, interval: &Latencies) {
        if self.window_s > 0.0 {
            let _ = self.last.add(&interval.publish_latency);
        }
    }

    /// p99 of the last window over p99 of the first.
    pub fn p99_ratio(&self) -> Option<f64> {
        if self.first.is_empty() || self.last.is_empty() {
            return None;
        }
        Some(self.last.value_at_quantile(0.99) as f64 / self.first.value_at_quantile(0.99).max(1) as f64)
    }

    /// `"series": [...]` and, with a window, `"windows": {...}` (no trailing comma).
    pub fn to_json(&self) -> String {
        let mut json = String::from("  \"series\": [");
        for (index, point) in self.points.iter().enumerate() {
            let _ = write!(
                json,
                "{}\n    {{\"t\": {:.1}, \"publish_mb_per_s\": {:.2}, \"p50_us\": {}, \"p99_us\": {}, \"p999_us\": {}, \
                 \"e2e_p99_us\": {}, \"rss_kib\": {}}}",
                if index == 0 { "" } else { "," },
                point.at_s,
                point.publish_mb_per_s,
                point.publish_p50_us,
                point.publish_p99_us,
                point.publish_p999_us,
                point.e2e_p99_us,
                point.broker_rss_kib.map_or("null".to_owned(), |rss| rss.to_string())
            );
        }
        json.push_str("\n  ]");
        if self.window_s > 0.0 {
            let _ = write!(
                json,
                ",\n  \"windows\": {{\"window_s\": {}, \"first_publish_latency_us\": {}, \"last_publish_latency_us\": {}, \
                 \"p99_ratio\": {}}}",
                self.window_s,
                histogram_json(&self.first),
                histogram_json(&self.last),
                self.p99_ratio().map_or("null".to_owned(), |ratio| format!("{ratio:.3}"))
            );
        }
        json
    }

    /// Publish p50, p99 and p99.9 per second on a log scale over time, with the two windows shaded.
    pub fn to_svg(&self, title: &str, description: &str) -> String {
        const WIDTH: f64 = 1040.0;
        const HEIGHT: f64 = 520.0;
        const LEFT: f64 = 80.0;
        const RIGHT: f64 = 250.0;
        const TOP: f64 = 76.0;
        const BOTTOM: f64 = 60.0;
        let plot_width = WIDTH - LEFT - RIGHT;
        let plot_height = HEIGHT - TOP - BOTTOM;
        let span_s = self.points.last().map_or(1.0, |point| point.at_s).max(self.duration_s).max(1.0);
        let values = self.points.iter().flat_map(|point| [point.publish_p50_us, point.publish_p999_us]);
        let (low_us, high_us) = values
            .filter(|&value| value > 0)
            .fold((u64::MAX, 0), |(low, high), value| (low.min(value), high.max(value)));
        let (low_us, high_us) = if high_us == 0 { (1000, 10_000) } else { (low_us, high_us) };
        let y_low = (low_us as f64 / 1000.0).log10().floor();
        let y_high = (high_us as f64 / 1000.0).log10().ceil().max(y_low + 1.0);
        let x_at = |seconds: f64| LEFT + plot_width * seconds / span_s;
        let y_at = |ms: f64| TOP + plot_height * (1.0 - (ms.max(1e-3).log10() - y_low) / (y_high - y_low));
        let mut svg = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" viewBox=\"0 0 {WIDTH} \
             {HEIGHT}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" \
             fill=\"white\"/>\n<text x=\"{LEFT}\" y=\"24\" font-size=\"16\" font-weight=\"bold\">{}</text>\n\
             <text x=\"{LEFT}\" y=\"42\" fill=\"#555\" font-size=\"11\">{}</text>\n",
            xml_escape(title),
            xml_escape(description)
        );
        if let Some(ratio) = self.p99_ratio() {
            let _ = writeln!(
                svg,
                r##"<text x="{LEFT}" y="57" fill="#555" font-size="11">p99 first {:.0} s {:.2} ms, last {:.0} s {:.2} ms: ratio {ratio:.2}</text>"##,
                self.window_s,
                self.first.value_at_quantile(0.99) as f64 / 1000.0,
                self.window_s,
                self.last.value_at_quantile(0.99) as f64 / 1000.0
            );
            for (start, end) in [(0.0, self.window_s), (self.duration_s - self.window_s, self.duration_s)] {
                let _ = writeln!(
                    svg,
                    r##"<rect x="{:.1}" y="{TOP}" width="{:.1}" height="{plot_height}" fill="#f3f3f3"/>"##,
                    x_at(start.max(0.0)),
                    x_at(end.min(span_s)) - x_at(start.max(0.0))
                );
            }
        }
        draw_axes(&mut svg, span_s, y_low, y_high, &x_at, &y_at);
        draw_lines(&mut svg, &self.points, LEFT + plot_width + 16.0, TOP, &x_at, &y_at);
        svg.push_str("</svg>\n");
        svg
    }
}

/// Which value of a point a line draws.
type PointValue = fn(&SeriesPoint) -> u64;

/// One polyline per percentile over time, and its legend entry at `legend_x`.
fn draw_lines(
    svg: &mut String,
    points: &[SeriesPoint],
    legend_x: f64,
    top: f64,
    x_at: &dyn Fn(f64) -> f64,
    y_at: &dyn Fn(f64) -> f64,
) {
    let series: [(&str, &str, PointValue); 3] = [
        ("publish p50", "#1f77b4", |point| point.publish_p50_us),
        ("publish p99", "#ff7f0e", |point| point.publish_p99_us),
        ("publish p99.9", "#d62728", |point| point.publish_p999_us),
    ];
    for (index, (name, color, value)) in series.iter().enumerate() {
        let mut line = String::new();
        for point in points.iter().filter(|point| value(point) > 0) {
            let _ = write!(line, "{:.1},{:.1} ", x_at(point.at_s), y_at(value(point) as f64 / 1000.0));
        }
        let _ =
            writeln!(svg, r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{line}"/>"#);
        let legend_y = top + 20.0 + 30.0 * index as f64;
        let _ = writeln!(
            svg,
            r#"<line x1="{legend_x}" y1="{legend_y}" x2="{:.1}" y2="{legend_y}" stroke="{color}" stroke-width="3"/><text x="{:.1}" y="{:.1}">{name}</text>"#,
            legend_x + 24.0,
            legend_x + 30.0,
            legend_y + 4.0
        );
    }
}

fn draw_axes(
    svg: &mut String,
    span_s: f64,
    y_low: f64,
    y_high: f64,
    x_at: &dyn Fn(f64) -> f64,
    y_at: &dyn Fn(f64) -> f64,
) {
    let (left, right, top, bottom) =
        (x_at(0.0), x_at(span_s), y_at(10f64.powf(y_high)), y_at(10f64.powf(y_low)));
    let step_s = [1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0]
        .into_iter()
        .find(|step| span_s / step <= 12.0)
        .unwrap_or(1200.0);
    let mut seconds = 0.0;
    while seconds <= span_s + 1e-9 {
        let x = x_at(seconds);
        let label =
            if step_s >= 60.0 { format!("{:.0} min", seconds / 60.0) } else { format!("{seconds:.0} s") };
        let _ = writeln!(
            svg,
            r##"<line x1="{x:.1}" y1="{top:.1}" x2="{x:.1}" y2="{bottom:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{label}</text>"##,
            bottom + 18.0
        );
        seconds += step_s;
    }
    let mut decade = y_low;
    while decade <= y_high {
        let ms = 10f64.powf(decade);
        let y = y_at(ms);
        let label = if ms >= 1.0 { format!("{ms:.0} ms") } else { format!("{ms} ms") };
        let _ = writeln!(
            svg,
            r##"<line x1="{left:.1}" y1="{y:.1}" x2="{right:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{label}</text>"##,
            left - 6.0,
            y + 4.0
        );
        decade += 1.0;
    }
    let _ = writeln!(
        svg,
        r##"<rect x="{left:.1}" y="{top:.1}" width="{:.1}" height="{:.1}" fill="none" stroke="#333"/><text x="{:.1}" y="{:.1}" text-anchor="middle">time into the measured period</text>"##,
        right - left,
        bottom - top,
        (left + right) / 2.0,
        bottom + 40.0
    );
    let middle = (top + bottom) / 2.0;
    let _ = writeln!(
        svg,
        r#"<text x="18" y="{middle:.1}" transform="rotate(-90 18 {middle:.1})" text-anchor="middle">publish latency (log scale)</text>"#
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interval(latency_us: u64) -> Latencies {
        let mut latencies = Latencies::new();
        for _ in 0..100 {
            latencies.publish_latency.record(latency_us).unwrap();
        }
        latencies
    }

    #[test]
    fn windows_take_the_first_and_last_seconds() {
        // Proves interval membership at the edges, with tick jitter, and when the window covers the whole period.
        assert_eq!(window_membership(1.004, 1800.0, 300.0), (true, false));
        assert_eq!(window_membership(300.01, 1800.0, 300.0), (true, false));
        assert_eq!(window_membership(301.0, 1800.0, 300.0), (false, false));
        assert_eq!(window_membership(1500.0, 1800.0, 300.0), (false, false));
        assert_eq!(window_membership(1501.02, 1800.0, 300.0), (false, true));
        assert_eq!(window_membership(1800.0, 1800.0, 300.0), (false, true));
        assert_eq!(window_membership(5.0, 10.0, 20.0), (true, true));
    }

    #[test]
    fn window_p99_ratio_compares_whole_windows() {
        // Proves the ratio is last-window p99 over first-window p99 of the messages in each, and that seconds
        // between the windows count in neither.
        let mut timeline = Timeline::new(6.0, 2.0);
        for (second, latency_us) in
            [(1.0, 1000), (2.0, 1000), (3.0, 50_000), (4.0, 50_000), (5.0, 2000), (6.0, 2000)]
        {
            timeline.add(second, &interval(latency_us), 10.0, Some(1));
        }
        timeline.add(0.01, &interval(9_000_000), 0.0, None);
        assert_eq!(timeline.points.len(), 6, "the sliver at the start is no point");
        assert_eq!(timeline.first.len(), 200);
        assert_eq!(timeline.last.len(), 200);
        let ratio = timeline.p99_ratio().unwrap();
        assert!((ratio - 2.0).abs() < 0.01, "{ratio}");
        let json = timeline.to_json();
        assert!(json.contains("\"p99_ratio\": 2.00"), "{json}");
        assert!(json.contains("\"t\": 3.0, \"publish_mb_per_s\": 10.00, \"p50_us\": 50"), "{json}");
        let svg = timeline.to_svg("t", "d");
        assert_eq!(svg.matches("<polyline").count(), 3);
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(Timeline::new(6.0, 0.0).p99_ratio(), None);
    }
}
