//! The benchmark at a tiny size: every scenario runs, its JSON parses, and
//! no request is lost. No speed is asserted here: figures live in the
//! benchmark's output, not in tests.

mod common;

use std::time::Duration;

use common::*;
use zmq_reqrep::bench::Report;

const BENCH: &str = env!("CARGO_BIN_EXE_bench");

#[test]
fn every_scenario_runs_at_a_tiny_size_and_loses_nothing() {
    let mut bench = Proc::start(BENCH, &["all", "--tiny", "--json"]);
    bench.expect_exit(0, Duration::from_secs(120));
    let report: Report = serde_json::from_str(&bench.stdout().join("\n")).expect("the JSON report");

    for scenario in [
        "reqrep", "broker", "pipeline", "balance", "scale", "page", "failover", "wire",
    ] {
        let rows: Vec<_> = report
            .rows
            .iter()
            .filter(|r| r.scenario == scenario)
            .collect();
        assert!(rows.len() >= 2, "{scenario}: {rows:#?}");
        assert_eq!(
            rows.iter().filter(|r| r.baseline).count(),
            1,
            "{scenario}: one baseline"
        );
    }
    for row in &report.rows {
        let what = format!("{} / {}", row.scenario, row.variant);
        assert_eq!(row.lost, 0, "{what} lost requests");
        assert!(row.answered > 0 && row.throughput > 0.0, "{what}: {row:?}");
        assert!(
            row.latency.p50_ms > 0.0 && row.latency.p50_ms <= row.latency.p999_ms,
            "{what}: {row:?}"
        );
        assert!(row.ratio.is_some(), "{what}: no ratio");
    }
    // `bench all` leaves out the 10,000-client step (`bench scale` runs
    // it): lb at every step, and proxy at the largest.
    let scale: Vec<(usize, bool)> = report
        .rows
        .iter()
        .filter(|r| r.scenario == "scale")
        .map(|r| (r.clients, r.variant.contains("--mode lb")))
        .collect();
    assert_eq!(
        scale,
        [
            (1, true),
            (10, true),
            (100, true),
            (1000, true),
            (1000, false)
        ]
    );
    for thousand in report
        .rows
        .iter()
        .filter(|r| r.scenario == "scale" && r.clients == 1000)
    {
        assert_eq!(
            thousand.answered, 1000,
            "one request from each of 1000 clients: {thousand:?}"
        );
        assert!(
            thousand.server_rss_mib.is_some(),
            "the broker's peak RSS is reported"
        );
        assert!(
            thousand.connect_s.is_some_and(|s| s > 0.0),
            "the connection storm is timed: {thousand:?}"
        );
    }
    // Brokers SIGKILLed under Lazy Pirate clients: nothing lost (checked
    // above, with every row), and every client answered after each kill.
    let kills: Vec<_> = report
        .rows
        .iter()
        .filter(|r| r.scenario == "failover" && r.variant.contains("SIGKILLs"))
        .collect();
    assert_eq!(kills.len(), 2, "{kills:#?}");
}

#[test]
fn the_chart_is_drawn_from_a_json_report() {
    let dir = TempDir::new("chart");
    let mut bench = Proc::start(BENCH, &["pipeline", "--tiny", "--json"]);
    bench.expect_exit(0, SOON);
    let json = dir.file("report.json", bench.stdout().join("\n"));
    let svg = dir.path("chart.svg");
    let mut chart = Proc::start(BENCH, &["chart", &json, &svg]);
    chart.expect_exit(0, SOON);
    let drawing = std::fs::read_to_string(&svg).unwrap();
    assert!(drawing.starts_with("<svg"), "{drawing}");
    assert!(drawing.contains("DEALER, 16 in flight"), "{drawing}");
}

/// `bench` under an open-files limit of 1024 (its children inherit it):
/// a scale step of 1,000 clients does not fit in the load generator, and
/// the bench says so in one line naming the limit and how to raise it,
/// instead of "the peer printed no outcome".
#[test]
fn a_limit_that_says_no_is_one_clear_line() {
    let mut bench = Proc::start(
        "/bin/sh",
        &[
            "-c",
            "ulimit -Sn 1024 && ulimit -Hn 1024 && exec \"$@\"",
            "sh",
            BENCH,
            "scale",
            "--scale-steps",
            "1000",
            "--tiny",
        ],
    );
    bench.expect_exit(1, Duration::from_secs(60));
    let errors: Vec<String> = bench
        .stderr()
        .into_iter()
        .filter(|line| line.starts_with("error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    let line = &errors[0];
    for needle in [
        "scale / broker --mode lb, 1000 clients",
        "1000 clients need about",
        "this process may open 1024 (the open-files limit)",
        "ulimit",
    ] {
        assert!(line.contains(needle), "{needle:?} in {line}");
    }
}
