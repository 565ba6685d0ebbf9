//! The benchmark's outputs: a table for people, JSON for machines, an SVG of each hop's
//! latency distribution.

use crate::latency::Summary;
use serde::Serialize;
use std::fmt::Write as _;

#[derive(Debug, Clone, Serialize)]
pub struct Hop {
    pub name: &'static str,
    /// How it is measured, in words.
    pub how: &'static str,
    pub summary: Summary,
    /// Samples in ns, for the plot (not serialised: the JSON carries percentiles).
    #[serde(skip)]
    pub samples_ns: Vec<u64>,
}

impl Hop {
    pub fn new(name: &'static str, how: &'static str, mut samples_ns: Vec<u64>) -> Self {
        let summary = Summary::of_ns(&mut samples_ns);
        Self { name, how, summary, samples_ns }
    }
}

fn ms(us: f64) -> f64 {
    us / 1000.0
}

pub fn hop_table(hops: &[Hop]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{:<36} {:>8} {:>9} {:>9} {:>9}", "hop", "samples", "p50 ms", "p99 ms", "max ms");
    for h in hops {
        let s = h.summary;
        let _ = writeln!(
            out,
            "{:<36} {:>8} {:>9.2} {:>9.2} {:>9.2}",
            h.name,
            s.count,
            ms(s.p50_us),
            ms(s.p99_us),
            ms(s.max_us)
        );
    }
    out
}

/// Cumulative distribution of every hop on a logarithmic time axis.
pub fn svg(hops: &[Hop], title: &str) -> String {
    const W: f64 = 900.0;
    const H: f64 = 480.0;
    const LEFT: f64 = 60.0;
    const RIGHT: f64 = 260.0;
    const TOP: f64 = 40.0;
    const BOTTOM: f64 = 50.0;
    const COLORS: [&str; 8] =
        ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"];
    let (lo, hi) = (0.01f64.log10(), 1000f64.log10()); // 10 µs .. 1 s, in ms
    let x = |ms: f64| LEFT + (ms.max(0.01).log10() - lo) / (hi - lo) * (W - LEFT - RIGHT);
    let y = |q: f64| TOP + (1.0 - q) * (H - TOP - BOTTOM);
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(out, r#"<text x="{LEFT}" y="22" font-size="15">{}</text>"#, escape(title));
    for decade in [0.01, 0.1, 1.0, 10.0, 100.0, 1000.0] {
        let xd = x(decade);
        let _ = writeln!(
            out,
            r##"<line x1="{xd:.1}" y1="{TOP}" x2="{xd:.1}" y2="{:.1}" stroke="#ddd"/><text x="{xd:.1}" y="{:.1}" text-anchor="middle">{decade} ms</text>"##,
            H - BOTTOM,
            H - BOTTOM + 16.0
        );
    }
    for q in [0.0, 0.5, 0.9, 0.99, 1.0] {
        let yq = y(q);
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" y1="{yq:.1}" x2="{:.1}" y2="{yq:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" text-anchor="end">{q}</text>"##,
            W - RIGHT,
            LEFT - 6.0,
            yq + 4.0
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">latency (log scale)</text><text x="14" y="{:.1}" transform="rotate(-90 14 {:.1})" text-anchor="middle">fraction of frames ≤ x</text>"#,
        (LEFT + W - RIGHT) / 2.0,
        H - 12.0,
        H / 2.0,
        H / 2.0
    );
    for (i, hop) in hops.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let ly = TOP + 10.0 + i as f64 * 34.0;
        let lx = W - RIGHT + 12.0;
        let figures = if hop.samples_ns.is_empty() {
            "no samples".to_string()
        } else {
            format!("p50 {:.2} · p99 {:.2} ms", ms(hop.summary.p50_us), ms(hop.summary.p99_us))
        };
        let _ = writeln!(
            out,
            r##"<rect x="{lx:.1}" y="{:.1}" width="14" height="4" fill="{color}"/><text x="{:.1}" y="{ly:.1}">{}</text><text x="{:.1}" y="{:.1}" fill="#555">{figures}</text>"##,
            ly - 4.0,
            lx + 20.0,
            escape(hop.name),
            lx + 20.0,
            ly + 14.0,
        );
        let mut sorted = hop.samples_ns.clone();
        sorted.sort_unstable();
        if sorted.is_empty() {
            continue;
        }
        // At most ~400 points per curve: the shape is all a reader needs.
        let step = (sorted.len() / 400).max(1);
        let points: Vec<String> = sorted
            .iter()
            .enumerate()
            .step_by(step)
            .chain(std::iter::once((sorted.len() - 1, &sorted[sorted.len() - 1])))
            .map(|(k, &ns)| {
                format!("{:.1},{:.1}", x(ns as f64 / 1e6), y((k + 1) as f64 / sorted.len() as f64))
            })
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            points.join(" ")
        );
    }
    out.push_str("</svg>\n");
    out
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_and_plot_carry_every_hop() {
        let hops = vec![
            Hop::new("a → b", "x", (1..=100).map(|i| i * 100_000).collect()),
            Hop::new("b <c>", "y", vec![]),
        ];
        let table = hop_table(&hops);
        assert!(table.contains("a → b"), "{table}");
        assert!(table.contains("5.00"), "p50 of 0.1..10 ms is 5 ms: {table}");
        let svg = svg(&hops, "t");
        assert_eq!(svg.matches("<polyline").count(), 1, "no curve for a hop without samples");
        assert!(svg.contains("b &lt;c&gt;"));
        assert!(svg.trim_end().ends_with("</svg>"));
    }
}
