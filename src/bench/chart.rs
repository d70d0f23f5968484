//! The benchmark as a picture: an SVG bar chart drawn from a JSON report
//! (`bench chart report.json docs/bench.svg`).
//!
//! One panel per scenario, one bar per variant. Bar length is throughput,
//! scaled within the panel; the label gives round trips per second, the
//! ratio to the scenario's baseline (the grey bar) and the p99 latency.

use std::fmt::Write as _;

use super::Report;
use crate::plumbing::logging::Count;

/// The narrowest label column; a longer variant name widens it.
const MIN_LABEL_WIDTH: f64 = 330.0;
/// Room for one character of a label at 13 px: a little more than the
/// average sans-serif character, so that a long name never runs into its bar.
const CHAR_WIDTH: f64 = 7.5;
const BAR_AREA: f64 = 330.0;
/// Room right of the longest bar for its figures.
const FIGURES_WIDTH: f64 = 440.0;
const ROW: f64 = 24.0;
const HEADER: f64 = 34.0;

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Draws the report.
pub fn svg(report: &Report) -> String {
    let mut scenarios: Vec<&str> = Vec::new();
    for row in &report.rows {
        if !scenarios.contains(&row.scenario.as_str()) {
            scenarios.push(&row.scenario);
        }
    }
    let height = 60.0 + scenarios.len() as f64 * HEADER + report.rows.len() as f64 * ROW + 20.0;
    let longest = report
        .rows
        .iter()
        .map(|row| row.variant.chars().count())
        .max()
        .unwrap_or_default();
    let label_width = (20.0 + longest as f64 * CHAR_WIDTH + 10.0).max(MIN_LABEL_WIDTH);
    let width = label_width + BAR_AREA + FIGURES_WIDTH;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="13">"#
    );
    let _ = writeln!(
        out,
        r##"<rect width="100%" height="100%" fill="#ffffff"/>"##
    );
    let m = &report.machine;
    let _ = writeln!(
        out,
        r#"<text x="10" y="22" font-size="16" font-weight="bold">zmq-reqrep: round trips per second (longer is better)</text>"#
    );
    let _ = writeln!(
        out,
        r##"<text x="10" y="42" fill="#555">{}, {}, {} build: {}</text>"##,
        Count::new(m.cores as u64, "core"),
        escape(&m.cpu),
        m.build,
        escape(&report.command)
    );
    let mut y = 60.0;
    for scenario in scenarios {
        let rows: Vec<_> = report
            .rows
            .iter()
            .filter(|r| r.scenario == scenario)
            .collect();
        let top = rows
            .iter()
            .map(|r| r.throughput)
            .fold(0.0_f64, f64::max)
            .max(1e-9);
        let _ = writeln!(
            out,
            r#"<text x="10" y="{}" font-weight="bold">{}</text>"#,
            y + 20.0,
            escape(scenario)
        );
        y += HEADER;
        for row in rows {
            let length = (row.throughput / top * BAR_AREA).max(1.0);
            let colour = if row.baseline { "#9e9e9e" } else { "#3b6fb6" };
            let ratio = if row.baseline {
                "baseline".to_string()
            } else {
                row.ratio
                    .map_or(String::new(), |r| format!("{r:.2}x baseline"))
            };
            let lost = if row.lost > 0 {
                format!(", {} LOST", row.lost)
            } else {
                String::new()
            };
            let memory = match (scenario, row.server_rss_mib) {
                ("scale", Some(mib)) => format!(", broker {mib:.1} MiB"),
                _ => String::new(),
            };
            let _ = writeln!(
                out,
                r#"<text x="20" y="{}">{}</text>"#,
                y + 15.0,
                escape(&row.variant)
            );
            let _ = writeln!(
                out,
                r#"<rect x="{label_width}" y="{}" width="{length:.1}" height="16" fill="{colour}"/>"#,
                y + 3.0
            );
            let _ = writeln!(
                out,
                r##"<text x="{:.1}" y="{}" fill="#222">{:.0}/s, {ratio}, p99 {:.2} ms{memory}{lost}</text>"##,
                label_width + length + 6.0,
                y + 15.0,
                row.throughput,
                row.latency.p99_ms
            );
            y += ROW;
        }
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::stats::Percentiles;
    use crate::bench::{Machine, Row};

    #[test]
    fn draws_one_bar_per_row_scaled_within_its_scenario() {
        let row = |variant: &str, throughput: f64, baseline: bool| Row {
            scenario: "reqrep".into(),
            variant: variant.into(),
            baseline,
            clients: 1,
            workers: 0,
            answered: 10,
            lost: 0,
            throughput,
            throughput_runs: vec![throughput],
            latency: Percentiles::default(),
            server_rss_mib: None,
            server_cpu_s: None,
            connect_s: None,
            ratio: Some(throughput / 100.0),
        };
        let report = Report {
            machine: Machine {
                cores: 2,
                cpu: "x<y".into(),
                kernel: "6".into(),
                build: "release".into(),
            },
            command: "bench reqrep".into(),
            rows: vec![row("bare", 100.0, true), row("suite", 50.0, false)],
        };
        let svg = svg(&report);
        assert_eq!(svg.matches("<rect x=").count(), 2);
        assert!(
            svg.contains(r#"width="330.0""#) && svg.contains(r#"width="165.0""#),
            "{svg}"
        );
        assert!(svg.contains("0.50x baseline"));
        assert!(svg.contains("x&lt;y"), "text is escaped");
    }

    #[test]
    fn a_long_variant_name_widens_the_label_column() {
        let long = "broker --mode proxy --io-threads 2, 10000 clients";
        let report = Report {
            machine: Machine {
                cores: 2,
                cpu: "cpu".into(),
                kernel: "6".into(),
                build: "release".into(),
            },
            command: "bench scale".into(),
            rows: vec![Row {
                scenario: "scale".into(),
                variant: long.into(),
                baseline: true,
                clients: 10_000,
                workers: 4,
                answered: 10,
                lost: 0,
                throughput: 100.0,
                throughput_runs: vec![100.0],
                latency: Percentiles::default(),
                server_rss_mib: None,
                server_cpu_s: None,
                connect_s: None,
                ratio: None,
            }],
        };
        let svg = svg(&report);
        let bar_x: f64 = svg
            .split(r#"<rect x=""#)
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .and_then(|x| x.parse().ok())
            .expect("a bar");
        // The label starts at x=20; its bar starts after its last character.
        assert!(bar_x >= 20.0 + long.len() as f64 * CHAR_WIDTH, "{svg}");
    }
}
