//! The benchmark behind `bench`: how fast each pattern is, side by side with
//! the baseline it is compared against, measured in one run.
//!
//! Every variant runs as separate processes ([`crate::plumbing::child`]) talking over
//! TCP on 127.0.0.1:
//! the real role binaries for the suite's own code paths, and the bench
//! binary itself (`bench peer ...`, see [`peers`]) for the baselines and the
//! load generators. Each variant runs `--repeat` times; a row reports the
//! run with the median throughput, and its ratio to the scenario's baseline.
//!
//! | module | what it does |
//! |---|---|
//! | [`scenarios`] | reqrep, broker, pipeline, balance, scale, failover |
//! | [`page`] | page: the lb broker with its live page watched, and without |
//! | [`wire`](mod@wire) | wire: round trips through the relay that shows the bytes, and without; its memory with 100 connections |
//! | [`curve`] | the keys of the CURVE variants of reqrep and broker |
//! | [`peers`] | the baselines (bare REQ/REP, raw TCP, `zmq::proxy`, ...) and load generators |
//! | [`stats`] | percentiles, medians |
//! | [`chart`] | the SVG chart drawn from a JSON report |

pub mod chart;
pub mod curve;
pub mod page;
pub mod peers;
pub mod scenarios;
pub mod stats;
pub mod wire;

use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use self::stats::Percentiles;
use crate::plumbing::logging::Count;

/// Sizes and settings of a benchmark run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Request payload size in bytes.
    pub size: usize,
    /// Lock-step round trips in the reqrep and pipeline scenarios.
    pub round_trips: u64,
    /// Clients in the broker, balance, page and failover scenarios.
    pub clients: usize,
    /// Workers in the broker, balance, scale, page and failover scenarios
    /// (balance takes at least 2).
    pub workers: usize,
    /// Requests per client in the broker, page and failover scenarios.
    pub requests: u64,
    /// Requests per client in the balance scenario.
    pub balance_requests: u64,
    /// Service time of the workers in the broker, page and failover
    /// scenarios (ms).
    pub work_ms: u64,
    /// Service time of the fast workers in the balance scenario (ms).
    pub fast_ms: u64,
    /// How many times slower the slow worker of the balance scenario is.
    pub slow_factor: u64,
    /// Requests a DEALER keeps in flight in the pipeline scenario.
    pub window: u64,
    /// Concurrent clients at each step of the scale scenario.
    pub scale_steps: Vec<usize>,
    /// Requests per step of the scale scenario, spread over its clients.
    pub scale_requests: u64,
    /// Runs of each variant; rows report the median.
    pub repeat: usize,
    /// How long each run asks at most (it also stops at its count).
    pub run: Duration,
    /// Broker kills in the failover scenario.
    pub kills: usize,
    /// The Lazy Pirate clients' timeout in the failover scenario.
    pub failover_timeout: Duration,
    /// Longest any one run may take before its unanswered requests count
    /// as lost.
    pub max_run: Duration,
}

/// One line of the table: a variant of a scenario, from its median run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    /// `reqrep`, `broker`, `pipeline`, `balance`, `scale`, `page` or `failover`.
    pub scenario: String,
    /// What ran.
    pub variant: String,
    /// The variant the others of its scenario are compared with.
    pub baseline: bool,
    /// Concurrent clients.
    pub clients: usize,
    /// Workers behind a broker (0 where there is none).
    pub workers: usize,
    /// Requests answered in the median run.
    pub answered: u64,
    /// Requests sent but never answered in the median run.
    pub lost: u64,
    /// Round trips per second of the median run.
    pub throughput: f64,
    /// Round trips per second of every run.
    pub throughput_runs: Vec<f64>,
    /// Latency percentiles of the median run (in the failover row of the
    /// kills: from each kill to each client's next reply, over all kills).
    pub latency: Percentiles,
    /// Peak resident memory of the server or broker process (MiB).
    pub server_rss_mib: Option<f64>,
    /// CPU time of the server or broker process (s).
    pub server_cpu_s: Option<f64>,
    /// With a fleet of clients, in the median run: from the first connect
    /// until every client had a reply to its first request (s), before the
    /// measured requests; the connection storm.
    #[serde(default)]
    pub connect_s: Option<f64>,
    /// Throughput divided by the baseline's.
    pub ratio: Option<f64>,
}

/// The machine a report was measured on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    /// CPUs available to the process.
    pub cores: usize,
    /// From /proc/cpuinfo.
    pub cpu: String,
    /// Kernel release.
    pub kernel: String,
    /// `release` or `debug`: debug figures mean little.
    pub build: String,
}

impl Machine {
    /// Describes this machine.
    pub fn this() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|line| {
                line.strip_prefix("model name")
                    .and_then(|rest| rest.split(':').nth(1))
            })
            .map(|name| name.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        Machine {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|k| k.trim().to_string())
                .unwrap_or_default(),
            build: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            }
            .into(),
        }
    }
}

/// A whole run: where, how, and the rows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// The machine.
    pub machine: Machine,
    /// The command line that produced it.
    pub command: String,
    /// One row per variant.
    pub rows: Vec<Row>,
}

impl Report {
    /// The table printed for humans.
    pub fn table(&self) -> String {
        let mut text = String::new();
        let m = &self.machine;
        let _ = writeln!(
            text,
            "{}, {}, Linux {}, {} build: {}",
            Count::new(m.cores as u64, "core"),
            m.cpu,
            m.kernel,
            m.build,
            self.command
        );
        let _ = writeln!(
            text,
            "{:<9} {:<48} {:>5} {:>4} {:>8} {:>5} {:>10} {:>8} {:>8} {:>8} {:>8} {:>7} {:>6} {:>6} {:>7}",
            "scenario",
            "variant",
            "cli",
            "wrk",
            "answered",
            "lost",
            "rt/s",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "p99.9 ms",
            "RSS MiB",
            "CPU s",
            "conn s",
            "ratio"
        );
        for row in &self.rows {
            let opt = |value: Option<f64>, digits: usize| {
                value.map_or("-".to_string(), |v| format!("{v:.digits$}"))
            };
            let ratio = match (row.baseline, row.ratio) {
                (true, _) => "base".to_string(),
                (false, ratio) => opt(ratio, 2),
            };
            let _ = writeln!(
                text,
                "{:<9} {:<48} {:>5} {:>4} {:>8} {:>5} {:>10.0} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>7} {:>6} {:>6} {:>7}",
                row.scenario,
                row.variant,
                row.clients,
                row.workers,
                row.answered,
                row.lost,
                row.throughput,
                row.latency.p50_ms,
                row.latency.p90_ms,
                row.latency.p99_ms,
                row.latency.p999_ms,
                opt(row.server_rss_mib, 1),
                opt(row.server_cpu_s, 2),
                opt(row.connect_s, 2),
                ratio
            );
        }
        text.push_str(&self.scale_checks());
        text
    }

    /// What the scale rows say against the broker's targets: nothing lost,
    /// memory per thousand clients, the connection storm, and throughput
    /// as clients grow (at 1,000 clients at least 0.8 of that at 100; at
    /// 10,000, 0.5). Empty without scale rows.
    fn scale_checks(&self) -> String {
        let rows: Vec<&Row> = self
            .rows
            .iter()
            .filter(|row| row.scenario == "scale")
            .collect();
        let Some(largest) = rows.iter().map(|row| row.clients).max() else {
            return String::new();
        };
        let mut text = String::from("scale:\n");
        let verdict = |ok: bool| if ok { "ok" } else { "MISSED" };
        for row in rows.iter().filter(|row| row.clients == largest) {
            let mode = row.variant.split(',').next().unwrap_or(&row.variant);
            let _ = write!(
                text,
                "  {mode}, {} clients: {} lost (target 0: {})",
                largest,
                row.lost,
                verdict(row.lost == 0)
            );
            if let Some(rss) = row.server_rss_mib {
                let _ = write!(
                    text,
                    "; broker peak RSS {rss:.0} MiB, {:.1} MiB per 1,000 clients (target under \
                     {RSS_TARGET_MIB} MiB: {})",
                    rss * 1000.0 / largest.max(1) as f64,
                    verdict(rss < RSS_TARGET_MIB)
                );
            }
            if let Some(connect) = row.connect_s {
                let _ = write!(
                    text,
                    "; all connected and answered once {connect:.2} s after the first connect"
                );
            }
            text.push('\n');
        }
        let lb = |clients: usize| {
            rows.iter()
                .find(|row| row.clients == clients && row.variant.contains("--mode lb"))
                .map(|row| row.throughput)
        };
        if let Some(hundred) = lb(100) {
            for (clients, target) in [(1_000, 0.8), (10_000, 0.5)] {
                if let Some(throughput) = lb(clients) {
                    let ratio = throughput / hundred.max(1e-9);
                    let _ = writeln!(
                        text,
                        "  lb throughput at {clients} clients: {ratio:.2} of that at 100 \
                         (target at least {target}: {})",
                        verdict(ratio >= target)
                    );
                }
            }
        }
        text
    }
}

/// The broker's peak memory that the scale scenario's largest step must
/// stay under (MiB).
pub const RSS_TARGET_MIB: f64 = 512.0;
