//! The scenarios, each with the baseline it is compared against (`page`,
//! the broker's live page, is in [`super::page`]).
//!
//! | scenario | baseline | compared |
//! |---|---|---|
//! | `reqrep` | bare libzmq REQ/REP ping-pong | `reqrep_server` + `reqrep_client`, also over CURVE; raw TCP ping-pong |
//! | `broker` | `zmq::proxy` with REP workers | `broker --mode proxy`, also over CURVE; `broker --mode lb` |
//! | `pipeline` | lock-step REQ to a ROUTER | a DEALER keeping `--window` requests in flight |
//! | `balance` | `broker --mode proxy` (round robin) | `broker --mode lb`, one worker 10x slower |
//! | `scale` | 1 client through `broker --mode lb` | 10, 100, 1,000, 10,000 concurrent clients (`bench all`: up to 1,000); `broker --mode proxy` at the largest step |
//! | `failover` | 1 `broker --mode lb` | 2 brokers, workers and clients on both; and one SIGKILLed again and again |
//!
//! The CURVE variants run only in a build with CURVE ([`super::curve`]).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};

use super::curve::Keys;
use super::peers::{self, Outcome};
use super::stats::{median_index, percentiles};
use super::{Options, Row};
use crate::plumbing::child::{Child, Stream};
use crate::plumbing::logging::Count;

/// What one run of a variant measured.
pub(super) struct Run {
    answered: u64,
    sent: u64,
    elapsed: Duration,
    /// While every client was busy: (duration, replies); see [`Outcome::window`].
    window: Option<(Duration, u64)>,
    rtts: Vec<Duration>,
    server_rss_kib: Option<u64>,
    server_cpu: Option<Duration>,
    /// The connection storm; see [`Outcome::connect_ns`].
    connect: Option<Duration>,
}

impl Run {
    fn throughput(&self) -> f64 {
        let (time, replies) = self.window.unwrap_or((self.elapsed, self.answered));
        replies as f64 / time.as_secs_f64().max(1e-9)
    }

    pub(super) fn from_outcome(outcome: Outcome, server: &Child) -> Run {
        Run {
            answered: outcome.rtts_ns.len() as u64,
            sent: outcome.sent,
            elapsed: Duration::from_nanos(outcome.elapsed_ns),
            window: outcome
                .window
                .map(|(ns, replies)| (Duration::from_nanos(ns), replies)),
            rtts: outcome
                .rtts_ns
                .into_iter()
                .map(Duration::from_nanos)
                .collect(),
            server_rss_kib: server.peak_rss_kib(),
            server_cpu: server.cpu_time(),
            connect: outcome.connect_ns.map(Duration::from_nanos),
        }
    }
}

/// Who is measured: a name, and the size of the set-up.
pub(super) struct Variant<'a> {
    pub(super) scenario: &'a str,
    pub(super) name: String,
    pub(super) baseline: bool,
    pub(super) clients: usize,
    pub(super) workers: usize,
}

/// How to run a variant once.
pub(super) type Once<'a> = Box<dyn FnMut() -> anyhow::Result<Run> + 'a>;

/// Runs every variant `options.repeat` times, in rounds (A, B, C, A, B, C,
/// ...) so that a machine getting busier or quieter during the benchmark
/// affects all variants alike, and reports each variant's median run.
pub(super) fn measure(
    mut variants: Vec<(Variant<'_>, Once<'_>)>,
    options: &Options,
) -> anyhow::Result<Vec<Row>> {
    let mut runs: Vec<Vec<Run>> = variants
        .iter()
        .map(|_| Vec::with_capacity(options.repeat))
        .collect();
    for round in 1..=options.repeat {
        for ((variant, once), runs) in variants.iter_mut().zip(&mut runs) {
            let run = once().with_context(|| format!("{} / {}", variant.scenario, variant.name))?;
            eprintln!(
                "bench: {} / {}: run {round} of {}: {:.0} round trips/s, {} lost",
                variant.scenario,
                variant.name,
                options.repeat,
                run.throughput(),
                run.sent.saturating_sub(run.answered)
            );
            runs.push(run);
        }
    }
    Ok(variants
        .into_iter()
        .zip(runs)
        .map(|((variant, _), runs)| row(variant, runs))
        .collect())
}

/// The row of a variant: its median run, and every run's throughput.
fn row(variant: Variant<'_>, runs: Vec<Run>) -> Row {
    let throughputs: Vec<f64> = runs.iter().map(Run::throughput).collect();
    let median = &runs[median_index(&throughputs)];
    Row {
        scenario: variant.scenario.to_string(),
        variant: variant.name,
        baseline: variant.baseline,
        clients: variant.clients,
        workers: variant.workers,
        answered: median.answered,
        lost: median.sent.saturating_sub(median.answered),
        throughput: median.throughput(),
        throughput_runs: throughputs,
        latency: percentiles(&median.rtts),
        server_rss_mib: median.server_rss_kib.map(|kib| kib as f64 / 1024.0),
        server_cpu_s: median.server_cpu.map(|cpu| cpu.as_secs_f64()),
        connect_s: median.connect.map(|connect| connect.as_secs_f64()),
        ratio: None,
    }
}

/// Sets each row's ratio to its scenario's baseline.
pub fn with_ratios(mut rows: Vec<Row>) -> Vec<Row> {
    let bases: Vec<(String, f64)> = rows
        .iter()
        .filter(|row| row.baseline)
        .map(|row| (row.scenario.clone(), row.throughput))
        .collect();
    for row in &mut rows {
        if let Some((_, base)) = bases.iter().find(|(scenario, _)| *scenario == row.scenario) {
            row.ratio = Some(row.throughput / base.max(1e-9));
        }
    }
    rows
}

// --- processes ---------------------------------------------------------------

/// Starts `bench peer <args>` (the baselines and load generators).
pub(super) fn peer(args: &[&str]) -> anyhow::Result<Child> {
    let exe = std::env::current_exe()?;
    let mut all = vec!["peer".to_string()];
    all.extend(args.iter().map(|a| a.to_string()));
    Child::spawn(&exe, &all)
}

fn role(name: &str, args: &[&str]) -> anyhow::Result<Child> {
    Child::role(
        name,
        &args.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
    )
}

pub(super) const READY_WITHIN: Duration = Duration::from_secs(10);

/// The tcp endpoints in the first log line containing `needle`, as
/// 127.0.0.1 addresses.
pub(super) fn endpoints(child: &Child, needle: &str) -> anyhow::Result<Vec<String>> {
    let line = child
        .wait_for(Stream::Err, needle, 1, READY_WITHIN)?
        .remove(0);
    let found: Vec<String> = line
        .split_whitespace()
        .filter_map(|word| word.trim_end_matches(',').strip_prefix("tcp://"))
        .filter_map(|address| address.rsplit(':').next())
        .map(|port| format!("tcp://127.0.0.1:{port}"))
        .collect();
    if found.is_empty() {
        bail!("no endpoint in {line:?}");
    }
    Ok(found)
}

fn port_of(endpoint: &str) -> anyhow::Result<u16> {
    endpoint
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| anyhow!("no port in {endpoint}"))
}

/// Connections established *to* `port` on this machine (the connecting
/// ends), from /proc/net/tcp: how many workers a broker's backend has.
fn established_to(port: u16) -> usize {
    let wanted = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .map(|table| {
            table
                .lines()
                .skip(1)
                .filter(|line| {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    fields.len() > 3 && fields[2].ends_with(&wanted) && fields[3] == "01"
                })
                .count()
        })
        .sum()
}

fn wait_established(port: u16, count: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + READY_WITHIN;
    while established_to(port) < count {
        if Instant::now() >= deadline {
            bail!(
                "only {} of {} connected to port {port}",
                established_to(port),
                Count::new(count as u64, "worker")
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// A baseline server peer and a load-generating client peer (given
/// `--connect` to the server): one run.
fn peer_pair(server_args: &[&str], client_args: &[&str], options: &Options) -> anyhow::Result<Run> {
    let mut server = peer(server_args)?;
    let endpoint = endpoints(&server, "listening on")?.remove(0);
    let mut args = client_args.to_vec();
    let run_ms = options.run.as_millis().to_string();
    args.extend(["--connect", endpoint.as_str(), "--run-ms", &run_ms]);
    let mut client = peer(&args)?;
    let run = Run::from_outcome(outcome(&mut client, options)?, &server);
    server.stop();
    Ok(run)
}

/// A load generator the bench waits for: one peer process, or a fleet of
/// them ([`Fleet`]).
pub(super) trait LoadGenerator {
    /// Waits for the end of the run and reads what was measured.
    fn outcome(&mut self, options: &Options) -> anyhow::Result<Outcome>;
}

/// Waits for a load generator and reads its JSON outcome.
pub(super) fn outcome(peer: &mut impl LoadGenerator, options: &Options) -> anyhow::Result<Outcome> {
    peer.outcome(options)
}

impl LoadGenerator for Child {
    fn outcome(&mut self, options: &Options) -> anyhow::Result<Outcome> {
        let status = self.wait(options.max_run).map_err(|_| {
            anyhow!(
                "{}: still running after --max-seconds {}{}",
                self.name(),
                options.max_run.as_secs(),
                last_words(self)
            )
        })?;
        let Some(last) = self.lines(Stream::Out).pop() else {
            bail!(
                "{}: {} without printing its outcome{}",
                self.name(),
                ended(status),
                last_words(self)
            );
        };
        serde_json::from_str(&last).with_context(|| {
            format!(
                "{}: reading its outcome {last:?}{}",
                self.name(),
                last_words(self)
            )
        })
    }
}

/// How a process ended, for a message: "exited with code 1", "killed by
/// signal 9".
fn ended(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        (None, None) => format!("ended ({status})"),
    }
}

/// The last line a child wrote on stderr (its error line, or its last log
/// line), as the end of a message.
fn last_words(child: &Child) -> String {
    child
        .lines(Stream::Err)
        .into_iter()
        .rev()
        .find(|line| !line.trim().is_empty())
        .map_or_else(String::new, |line| {
            format!("; its last line: {}", unprefixed(&line))
        })
}

/// A child's line without its own `error: `, which the bench's adds again.
fn unprefixed(line: &str) -> &str {
    let line = line.trim();
    line.strip_prefix("error: ").unwrap_or(line)
}

/// Fails with one clear line if `server` (a broker, a server) has ended,
/// as it should not have during a run.
pub(super) fn still_running(server: &mut Child, what: &str) -> anyhow::Result<()> {
    match server.wait(Duration::ZERO) {
        Ok(status) => bail!(
            "the {what} {} during the run{}",
            ended(status),
            last_words(server)
        ),
        Err(_) => Ok(()),
    }
}

/// Adds the server's last warning, if it logged one, to a failed run's
/// error: what the broker saw of the failure (refused connections, no
/// room for more descriptors) is often its cause.
fn with_server_warning(error: anyhow::Error, server: &Child) -> anyhow::Error {
    let warning = server
        .lines(Stream::Err)
        .into_iter()
        .rev()
        .find(|line| line.contains(" WARN ") || line.contains("ERROR"));
    match warning {
        Some(line) => anyhow!("{error:#} (the server's last warning: {})", line.trim()),
        None => error,
    }
}

/// The request payload options of the role clients for `size` bytes.
fn message_args(size: usize) -> anyhow::Result<Vec<String>> {
    if size == 5 {
        return Ok(vec!["--message".into(), "Hello".into()]);
    }
    let path: PathBuf =
        std::env::temp_dir().join(format!("zmq-reqrep-bench-{}-{size}", std::process::id()));
    if !path.exists() {
        std::fs::write(&path, super::peers::payload(size))?;
    }
    Ok(vec!["--message-file".into(), path.display().to_string()])
}

/// Round trips of role clients (`reqrep_client`, `broker_client`), read from
/// their output: "#N sent ... in 0.123 ms" and "done: A replies to S
/// requests, R resends, in E s, ...".
struct ClientReport {
    rtts: Vec<Duration>,
    answered: u64,
    sent: u64,
    elapsed: Duration,
}

fn client_report(child: &Child) -> anyhow::Result<ClientReport> {
    let lines = child.lines(Stream::Out);
    let mut rtts = Vec::new();
    for line in lines.iter().filter(|l| l.contains(" got ")) {
        let ms = line
            .rsplit(" in ")
            .next()
            .and_then(|rest| rest.strip_suffix(" ms"))
            .and_then(|n| n.parse::<f64>().ok())
            .ok_or_else(|| anyhow!("no round trip in {line:?}"))?;
        rtts.push(Duration::from_secs_f64(ms / 1e3));
    }
    let summary = lines
        .iter()
        .find(|l| l.contains(" done: "))
        .ok_or_else(|| anyhow!("no summary line"))?;
    let words: Vec<&str> = summary.split_whitespace().collect();
    let number = |after: &str| -> anyhow::Result<f64> {
        let at = words
            .iter()
            .position(|w| *w == after)
            .ok_or_else(|| anyhow!("no {after:?} in {summary:?}"))?;
        Ok(words
            .get(at + 1)
            .and_then(|w| w.trim_end_matches(',').parse().ok())
            .unwrap_or(0.0))
    };
    Ok(ClientReport {
        rtts,
        answered: number("done:")? as u64,
        sent: number("to")? as u64,
        elapsed: Duration::from_secs_f64(number("in")?),
    })
}

// --- reqrep ------------------------------------------------------------------

/// Lock-step REQ/REP: the suite's binaries against bare libzmq and raw TCP.
pub fn reqrep(options: &Options) -> anyhow::Result<Vec<Row>> {
    let count = options.round_trips.to_string();
    let size = options.size.to_string();
    let message = message_args(options.size)?;
    let variant = |name: &str, baseline| Variant {
        scenario: "reqrep",
        name: name.into(),
        baseline,
        clients: 1,
        workers: 0,
    };

    let bare: Once<'_> = Box::new(|| {
        peer_pair(
            &["rep-bare", "--bind", "tcp://127.0.0.1:*"],
            &["req-bare", "--count", &count, "--size", &size],
            options,
        )
    });
    let suite: Once<'_> =
        Box::new(|| suite_round_trips(options, &count, &message, Logging::PerRequest, None));
    let quiet: Once<'_> =
        Box::new(|| suite_round_trips(options, &count, &message, Logging::WarningsOnly, None));
    let tcp: Once<'_> = Box::new(|| {
        peer_pair(
            &["tcp-server", "--bind", "127.0.0.1:0", "--size", &size],
            &["tcp-client", "--count", &count, "--size", &size],
            options,
        )
    });
    let keys = Keys::make()?;
    let mut variants = vec![
        (variant("bare libzmq REQ/REP (baseline)", true), bare),
        (variant("reqrep_server + reqrep_client", false), suite),
    ];
    if let Some(keys) = &keys {
        let (count, message) = (&count, &message);
        let curve: Once<'_> = Box::new(move || {
            suite_round_trips(options, count, message, Logging::PerRequest, Some(keys))
        });
        variants.push((variant("the same, CURVE (encrypted)", false), curve));
    }
    variants.push((variant("the same, server with RUST_LOG=warn", false), quiet));
    variants.push((variant("raw TCP ping-pong, TCP_NODELAY", false), tcp));
    measure(variants, options)
}

/// Whether `reqrep_server` logs each request (the default) or only warnings.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Logging {
    PerRequest,
    WarningsOnly,
}

/// `reqrep_client` against `reqrep_server`, both the real binaries, over
/// CURVE if given keys.
fn suite_round_trips(
    options: &Options,
    count: &str,
    message: &[String],
    logging: Logging,
    curve: Option<&Keys>,
) -> anyhow::Result<Run> {
    let mut server = if logging == Logging::PerRequest {
        let mut args = vec!["--bind".to_string(), "tcp://127.0.0.1:*".to_string()];
        args.extend(curve.map(Keys::server_args).unwrap_or_default());
        Child::role("reqrep_server", &args)?
    } else {
        let mut command =
            std::process::Command::new(crate::plumbing::child::sibling("reqrep_server")?);
        command
            .args(["--bind", "tcp://127.0.0.1:*"])
            .env("RUST_LOG", "warn,reqrep_server=warn");
        Child::start(command)?
    };
    let endpoint = match logging {
        Logging::PerRequest => endpoints(&server, "REP listening on")?.remove(0),
        // Silent at info level: the listening port comes from /proc instead.
        Logging::WarningsOnly => listening_port_of(&server)?,
    };
    let mut args = vec![
        "--connect",
        endpoint.as_str(),
        "--count",
        count,
        "--interval-ms",
        "0",
    ];
    args.extend(message.iter().map(String::as_str));
    let curve_args = curve.map(Keys::client_args).unwrap_or_default();
    args.extend(curve_args.iter().map(String::as_str));
    let mut client = role("reqrep_client", &args)?;
    // The client has no time limit of its own: stopped (SIGTERM) once the
    // run's time is up, it ends the request in hand and prints its summary.
    let capped = client.wait(options.run).is_err();
    if capped {
        client.signal(libc::SIGTERM);
    }
    client.wait(options.max_run)?;
    let report = client_report(&client)?;
    let run = Run {
        answered: report.answered,
        // The request the stop cut short left, but nobody waits for it: a
        // Lazy Pirate client that lost one would have said so and failed.
        sent: if capped { report.answered } else { report.sent },
        elapsed: report.elapsed,
        window: None,
        rtts: report.rtts,
        server_rss_kib: server.peak_rss_kib(),
        server_cpu: server.cpu_time(),
        connect: None,
    };
    server.stop();
    Ok(run)
}

/// The TCP port `child` listens on, from /proc/net/tcp (state 0A, LISTEN)
/// and the socket inodes among its open descriptors.
fn listening_port_of(child: &Child) -> anyhow::Result<String> {
    let deadline = Instant::now() + READY_WITHIN;
    loop {
        let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{}/fd", child.pid()))?
            .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
            .filter_map(|link| {
                let link = link.to_string_lossy().into_owned();
                Some(
                    link.strip_prefix("socket:[")?
                        .strip_suffix(']')?
                        .to_string(),
                )
            })
            .collect();
        let table = std::fs::read_to_string("/proc/net/tcp")?;
        let port = table.lines().skip(1).find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let listening = fields.get(3) == Some(&"0A")
                && fields
                    .get(9)
                    .is_some_and(|inode| inodes.iter().any(|i| i == inode));
            listening.then(|| {
                fields[1]
                    .rsplit(':')
                    .next()
                    .and_then(|hex| u16::from_str_radix(hex, 16).ok())
            })?
        });
        if let Some(port) = port {
            return Ok(format!("tcp://127.0.0.1:{port}"));
        }
        if Instant::now() >= deadline {
            bail!("{} is not listening", child.name());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

// --- broker, balance, scale ------------------------------------------------

/// Which broker sits between the clients and the workers.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Broker {
    /// libzmq's `zmq::proxy` (run by `bench peer proxy`), with REP workers.
    Libzmq,
    /// `broker --mode proxy`, with REP workers.
    Proxy,
    /// `broker --mode lb`, with `worker --mode lb`.
    Lb,
}

impl Broker {
    /// Starts the broker, a CURVE server if given keys (ours only).
    fn start(self, curve: Option<&Keys>) -> anyhow::Result<(Child, String, String)> {
        self.start_with(curve.map(Keys::server_args).unwrap_or_default())
    }

    /// Starts the broker on free ports with `extra` options (ours only):
    /// (broker, frontend, backend).
    pub(super) fn start_with(self, extra: Vec<String>) -> anyhow::Result<(Child, String, String)> {
        let any = "tcp://127.0.0.1:*";
        let ours = |mode: &str| {
            let mut args: Vec<String> = ["--mode", mode, "--frontend", any, "--backend", any]
                .map(String::from)
                .into();
            args.extend(extra);
            Child::role("broker", &args)
        };
        let (child, needle) = match self {
            Broker::Libzmq => (
                peer(&["proxy", "--frontend", any, "--backend", any])?,
                "listening on",
            ),
            Broker::Proxy => (ours("proxy")?, "frontend ROUTER on"),
            Broker::Lb => (ours("lb")?, "frontend ROUTER on"),
        };
        let found = endpoints(&child, needle)?;
        let [frontend, backend] = <[String; 2]>::try_from(found)
            .map_err(|f| anyhow!("expected two endpoints, got {f:?}"))?;
        Ok((child, frontend, backend))
    }

    fn worker_mode(self) -> &'static str {
        if self == Broker::Lb { "lb" } else { "plain" }
    }

    /// Starts one worker per service time, and waits until all are connected
    /// (and, for lb, announced): requests only go to workers already there.
    pub(super) fn workers(
        self,
        broker: &Child,
        backend: &str,
        work_ms: &[u64],
        curve: Option<&Keys>,
    ) -> anyhow::Result<Vec<Child>> {
        self.workers_on(&[(broker, backend)], work_ms, curve)
    }

    /// The same with every worker connected to each of several brokers
    /// (`(broker, backend)`), and waited for at each.
    fn workers_on(
        self,
        brokers: &[(&Child, &str)],
        work_ms: &[u64],
        curve: Option<&Keys>,
    ) -> anyhow::Result<Vec<Child>> {
        let backends = brokers
            .iter()
            .map(|(_, backend)| *backend)
            .collect::<Vec<&str>>()
            .join(",");
        let backend = backends.as_str();
        let workers = work_ms
            .iter()
            .enumerate()
            .map(|(i, work)| {
                let mut args: Vec<String> = [
                    "--connect",
                    backend,
                    "--mode",
                    self.worker_mode(),
                    "--work-ms",
                    &work.to_string(),
                    "--name",
                    &format!("w{i}"),
                ]
                .map(String::from)
                .into();
                args.extend(curve.map(Keys::client_args).unwrap_or_default());
                Child::role("worker", &args)
            })
            .collect::<anyhow::Result<Vec<Child>>>()?;
        for (broker, backend) in brokers {
            wait_established(port_of(backend)?, work_ms.len())?;
            if self == Broker::Lb {
                broker.wait_for(Stream::Err, " ready", work_ms.len(), READY_WITHIN)?;
            }
        }
        Ok(workers)
    }
}

/// Lock-step clients through a broker: as many `bench peer fleet`
/// processes as they need ([`peers::CLIENTS_PER_FLEET`] each, at most),
/// started together once each has connected all of its clients.
pub(super) struct Fleet {
    processes: Vec<Child>,
}

/// Starts `clients` lock-step clients (`bench peer fleet` processes),
/// `requests` each, at the broker frontends `connect` (separated by
/// commas), for `options.run` at most, with `extra` options (CURVE keys).
/// They connect at once; [`LoadGenerator::outcome`] starts their requests.
pub(super) fn fleet(
    connect: &str,
    clients: usize,
    requests: u64,
    options: &Options,
    extra: &[String],
) -> anyhow::Result<Fleet> {
    let count = clients.div_ceil(peers::CLIENTS_PER_FLEET).max(1);
    let requests = requests.to_string();
    let size = options.size.to_string();
    let stall = options.max_run.as_secs().max(1).to_string();
    let run_ms = options.run.as_millis().to_string();
    let processes = (0..count)
        .map(|k| {
            // Shares as equal as can be: 10,000 in four, 2,600 as 1,300 twice.
            let share = (clients * (k + 1) / count - clients * k / count).to_string();
            let mut args = vec![
                "fleet",
                "--wait-for-go",
                "--run-ms",
                &run_ms,
                "--connect",
                connect,
                "--clients",
                &share,
                "--requests",
                &requests,
                "--size",
                &size,
                "--stall-s",
                &stall,
            ];
            args.extend(extra.iter().map(String::as_str));
            peer(&args)
        })
        .collect::<anyhow::Result<Vec<Child>>>()?;
    Ok(Fleet { processes })
}

impl LoadGenerator for Fleet {
    /// Waits until every process has connected its clients, starts them
    /// together (SIGUSR1), and merges their outcomes: throughput over the
    /// window in which all clients of all processes were asking (each
    /// process's replies in the shortest window, at its own steady rate),
    /// the connection storm the longest of theirs.
    fn outcome(&mut self, options: &Options) -> anyhow::Result<Outcome> {
        for process in &self.processes {
            // A little longer than the fleet's own stall, so that its
            // line says why it gave up.
            let within = options.max_run + Duration::from_secs(5);
            if let Err(error) = process.wait_for(Stream::Err, peers::CONNECTED, 1, within) {
                let said = process
                    .lines(Stream::Err)
                    .into_iter()
                    .rev()
                    .find(|line| line.starts_with("error:"));
                return Err(match said {
                    Some(line) => anyhow!("{}: {}", process.name(), unprefixed(&line)),
                    None => error,
                });
            }
        }
        for process in &mut self.processes {
            process.signal(libc::SIGUSR1);
        }
        let mut outcomes = Vec::with_capacity(self.processes.len());
        for process in &mut self.processes {
            outcomes.push(LoadGenerator::outcome(process, options)?);
        }
        Ok(merge(outcomes))
    }
}

/// One outcome from the outcomes of fleets that ran together.
fn merge(outcomes: Vec<Outcome>) -> Outcome {
    let shortest = outcomes
        .iter()
        .filter_map(|outcome| outcome.window)
        .map(|(ns, _)| ns)
        .min();
    let window = shortest.map(|shortest| {
        let replies: f64 = outcomes
            .iter()
            .filter_map(|outcome| outcome.window)
            .map(|(ns, replies)| replies as f64 * shortest as f64 / ns.max(1) as f64)
            .sum();
        (shortest, replies.round() as u64)
    });
    let mut merged = Outcome {
        elapsed_ns: outcomes.iter().map(|o| o.elapsed_ns).max().unwrap_or(0),
        rtts_ns: Vec::with_capacity(outcomes.iter().map(|o| o.rtts_ns.len()).sum()),
        sent: outcomes.iter().map(|o| o.sent).sum(),
        window,
        connect_ns: outcomes.iter().filter_map(|o| o.connect_ns).max(),
    };
    for outcome in outcomes {
        merged.rtts_ns.extend(outcome.rtts_ns);
    }
    merged
}

/// `clients` lock-step clients (`bench peer fleet` processes), `requests`
/// each, through `broker`, to workers with the given service times; every
/// connection over CURVE if given keys.
fn through_broker(
    broker_kind: Broker,
    work_ms: &[u64],
    clients: usize,
    requests: u64,
    options: &Options,
    curve: Option<&Keys>,
) -> anyhow::Result<Run> {
    let extra = curve.map(Keys::server_args).unwrap_or_default();
    through_broker_with(
        broker_kind,
        extra,
        work_ms,
        clients,
        requests,
        options,
        curve,
    )
}

/// [`through_broker`], the broker started with `extra` options (ours only).
fn through_broker_with(
    broker_kind: Broker,
    extra: Vec<String>,
    work_ms: &[u64],
    clients: usize,
    requests: u64,
    options: &Options,
    curve: Option<&Keys>,
) -> anyhow::Result<Run> {
    let (mut broker, frontend, backend) = broker_kind.start_with(extra)?;
    let mut workers = broker_kind.workers(&broker, &backend, work_ms, curve)?;
    let curve_args = curve.map(Keys::client_args).unwrap_or_default();
    let mut fleet = fleet(&frontend, clients, requests, options, &curve_args)?;
    // A broker that died is the cause of whatever the clients saw.
    let outcome = outcome(&mut fleet, options);
    still_running(&mut broker, "broker")?;
    let outcome = outcome.map_err(|error| with_server_warning(error, &broker))?;
    let run = Run::from_outcome(outcome, &broker);
    for worker in &mut workers {
        worker.stop();
    }
    broker.stop();
    Ok(run)
}

/// Clients through a broker to identical workers: ours in both modes against
/// libzmq's own forwarder, and ours over CURVE.
pub fn broker(options: &Options) -> anyhow::Result<Vec<Row>> {
    let work = vec![options.work_ms; options.workers];
    let keys = Keys::make()?;
    let mut kinds = vec![
        (
            "zmq::proxy (libzmq's forwarder)",
            Broker::Libzmq,
            true,
            None,
        ),
        ("broker --mode proxy", Broker::Proxy, false, None),
    ];
    if let Some(keys) = &keys {
        kinds.push((
            "broker --mode proxy, CURVE",
            Broker::Proxy,
            false,
            Some(keys),
        ));
    }
    kinds.push(("broker --mode lb", Broker::Lb, false, None));
    let variants = kinds
        .into_iter()
        .map(|(name, kind, baseline, curve)| {
            let variant = Variant {
                scenario: "broker",
                name: name.into(),
                baseline,
                clients: options.clients,
                workers: options.workers,
            };
            let work = work.clone();
            let once: Once<'_> = Box::new(move || {
                through_broker(
                    kind,
                    &work,
                    options.clients,
                    options.requests,
                    options,
                    curve,
                )
            });
            (variant, once)
        })
        .collect();
    measure(variants, options)
}

/// One worker `slow_factor` times slower than the others: round robin
/// against load balancing.
pub fn balance(options: &Options) -> anyhow::Result<Vec<Row>> {
    let mut work = vec![options.fast_ms; options.workers.max(2)];
    work[0] = options.fast_ms * options.slow_factor;
    let workers = work.len();
    let variants = [
        ("broker --mode proxy", Broker::Proxy, true),
        ("broker --mode lb", Broker::Lb, false),
    ]
    .into_iter()
    .map(|(mode, kind, baseline)| {
        let name = format!("{mode}, 1 worker {}x slower", options.slow_factor);
        let variant = Variant {
            scenario: "balance",
            name,
            baseline,
            clients: options.clients,
            workers,
        };
        let work = work.clone();
        let once: Once<'_> = Box::new(move || {
            through_broker(
                kind,
                &work,
                options.clients,
                options.balance_requests,
                options,
                None,
            )
        });
        (variant, once)
    })
    .collect();
    measure(variants, options)
}

/// The steps of `bench scale` when `--scale-steps` is not given; `bench
/// all` leaves out the last one, to stay under two minutes.
pub const SCALE_STEPS: [usize; 5] = [1, 10, 100, 1_000, 10_000];

/// Steps with more clients than this start the broker with `--io-threads
/// 2`, as its help advises for thousands of clients: on one I/O thread,
/// libzmq's timer list of 10,000 connections stalls the broker for
/// seconds at every heartbeat (src/plumbing/cli.rs). Smaller steps run it
/// as a classroom does, with one.
pub const ONE_IO_THREAD_UP_TO: usize = 2_500;

/// Concurrent lock-step clients through `broker --mode lb`, one row per
/// step of `options.scale_steps`, and through `broker --mode proxy` at the
/// largest step. Each step's clients connect all at once (the connection
/// storm, its time in the `conn s` column) before their requests are
/// measured.
pub fn scale(options: &Options) -> anyhow::Result<Vec<Row>> {
    let largest = options.scale_steps.iter().copied().max().unwrap_or(0);
    let mut steps: Vec<(Broker, usize)> = options
        .scale_steps
        .iter()
        .map(|&clients| (Broker::Lb, clients))
        .collect();
    steps.push((Broker::Proxy, largest));
    let variants = steps
        .into_iter()
        .enumerate()
        .map(|(i, (kind, clients))| {
            let mode = if kind == Broker::Lb { "lb" } else { "proxy" };
            let (extra, threads) = if clients > ONE_IO_THREAD_UP_TO {
                (
                    vec!["--io-threads".to_string(), "2".into()],
                    " --io-threads 2",
                )
            } else {
                (Vec::new(), "")
            };
            let variant = Variant {
                scenario: "scale",
                name: format!(
                    "broker --mode {mode}{threads}, {}",
                    Count::new(clients as u64, "client")
                ),
                baseline: i == 0,
                clients,
                workers: options.workers,
            };
            let per_client = (options.scale_requests / clients.max(1) as u64).max(1);
            let once: Once<'_> = Box::new(move || {
                through_broker_with(
                    kind,
                    extra.clone(),
                    &vec![0; options.workers],
                    clients,
                    per_client,
                    options,
                    None,
                )
            });
            (variant, once)
        })
        .collect();
    measure(variants, options)
}

/// A DEALER keeping requests in flight against lock-step REQ, both to the
/// same ROUTER.
pub fn pipeline(options: &Options) -> anyhow::Result<Vec<Row>> {
    let count = options.round_trips.to_string();
    let size = options.size.max(8).to_string();
    let window = options.window.to_string();
    let clients: [(String, Vec<&str>, bool); 2] = [
        (
            "REQ, lock step".into(),
            vec!["req-bare", "--count", &count, "--size", &size],
            true,
        ),
        (
            format!("DEALER, {} in flight", options.window),
            vec![
                "dealer-pipeline",
                "--count",
                &count,
                "--window",
                &window,
                "--size",
                &size,
            ],
            false,
        ),
    ];
    let variants = clients
        .into_iter()
        .map(|(name, args, baseline)| {
            let variant = Variant {
                scenario: "pipeline",
                name,
                baseline,
                clients: 1,
                workers: 0,
            };
            let once: Once<'_> = Box::new(move || {
                peer_pair(
                    &["router-echo", "--bind", "tcp://127.0.0.1:*"],
                    &args,
                    options,
                )
            });
            (variant, once)
        })
        .collect();
    measure(variants, options)
}

// --- failover ------------------------------------------------------------------

/// An `lb` broker on endpoints chosen in advance, so that it can be
/// started again on them.
fn lb_broker_on(frontend: &str, backend: &str) -> anyhow::Result<Child> {
    let broker = role(
        "broker",
        &["--mode", "lb", "--frontend", frontend, "--backend", backend],
    )?;
    broker.wait_for(Stream::Err, "frontend ROUTER on", 1, READY_WITHIN)?;
    Ok(broker)
}

/// `tcp://127.0.0.1:<a port that was free a moment ago>`.
fn free_endpoint() -> anyhow::Result<String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    Ok(format!("tcp://127.0.0.1:{port}"))
}

/// The fleet through two lb brokers at once: every worker and every client
/// connected to both. The broker figures are the sum of both's CPU and the
/// larger peak memory.
fn through_two_brokers(work_ms: &[u64], options: &Options) -> anyhow::Result<Run> {
    let (mut one, front1, back1) = Broker::Lb.start(None)?;
    let (mut two, front2, back2) = Broker::Lb.start(None)?;
    let mut workers = Broker::Lb.workers_on(
        &[(&one, back1.as_str()), (&two, back2.as_str())],
        work_ms,
        None,
    )?;
    let frontends = format!("{front1},{front2}");
    let mut fleet = fleet(&frontends, options.clients, options.requests, options, &[])?;
    let mut run = Run::from_outcome(outcome(&mut fleet, options)?, &one);
    run.server_rss_kib = run.server_rss_kib.max(two.peak_rss_kib());
    run.server_cpu = match (run.server_cpu, two.cpu_time()) {
        (Some(a), Some(b)) => Some(a + b),
        (a, b) => a.or(b),
    };
    for worker in &mut workers {
        worker.stop();
    }
    one.stop();
    two.stop();
    Ok(run)
}

/// Two brokers against one: what the second broker costs while both live;
/// then one of them SIGKILLed, again and again, under Lazy Pirate clients:
/// how long a client waits from a kill to its next reply, and whether any
/// request is lost.
pub fn failover(options: &Options) -> anyhow::Result<Vec<Row>> {
    let work = vec![options.work_ms; options.workers];
    let variant = |name: &str, baseline| Variant {
        scenario: "failover",
        name: name.into(),
        baseline,
        clients: options.clients,
        workers: options.workers,
    };
    let one: Once<'_> = Box::new(|| {
        through_broker(
            Broker::Lb,
            &work,
            options.clients,
            options.requests,
            options,
            None,
        )
    });
    let two: Once<'_> = Box::new(|| through_two_brokers(&work, options));
    let mut rows = measure(
        vec![
            (variant("1 broker --mode lb", true), one),
            (variant("2 brokers --mode lb (all on both)", false), two),
        ],
        options,
    )?;
    rows.extend(kills(options)?);
    Ok(rows)
}

/// How long the killed broker stays dead beyond one client timeout: long
/// enough for every request it held to be resent to the other broker.
const DEAD_FOR: Duration = Duration::from_millis(200);

/// Time for the clients to use both brokers again between kills.
const SETTLE: Duration = Duration::from_millis(300);

/// Two lb brokers, workers on both, and Lazy Pirate clients (the suite's
/// own `ReliableReq`) on both; `options.kills` times, one broker (first
/// one, then the other) is SIGKILLed, left dead for one client timeout,
/// and started again on its ports. Two rows of the same run: their latency
/// columns are, over every kill and client, the time from the kill to the
/// client's next reply, and the longest the client waited for a reply
/// until the broker was back.
fn kills(options: &Options) -> anyhow::Result<Vec<Row>> {
    let endpoints = [
        (free_endpoint()?, free_endpoint()?),
        (free_endpoint()?, free_endpoint()?),
    ];
    let mut brokers = [
        lb_broker_on(&endpoints[0].0, &endpoints[0].1)?,
        lb_broker_on(&endpoints[1].0, &endpoints[1].1)?,
    ];
    let work = vec![options.work_ms; options.workers];
    let mut workers = Broker::Lb.workers_on(
        &[
            (&brokers[0], endpoints[0].1.as_str()),
            (&brokers[1], endpoints[1].1.as_str()),
        ],
        &work,
        None,
    )?;
    let frontends = format!("{},{}", endpoints[0].0, endpoints[1].0);
    let timeout_ms = options.failover_timeout.as_millis().to_string();
    let (clients, size) = (options.clients.to_string(), options.size.to_string());
    let mut fleet = peer(&[
        "failover-clients",
        "--connect",
        &frontends,
        "--clients",
        &clients,
        "--timeout-ms",
        &timeout_ms,
        "--retries",
        "3",
        "--size",
        &size,
    ])?;
    fleet.wait_for(Stream::Err, "running", 1, READY_WITHIN)?;

    let mut killed_at = Vec::with_capacity(options.kills);
    for kill in 0..options.kills {
        let victim = kill % 2;
        std::thread::sleep(SETTLE);
        killed_at.push(super::peers::unix_ns());
        brokers[victim].kill();
        std::thread::sleep(options.failover_timeout + DEAD_FOR);
        let (frontend, backend) = &endpoints[victim];
        brokers[victim] = lb_broker_on(frontend, backend)?;
        // Back in service once the workers have joined it again.
        brokers[victim].wait_for(Stream::Err, " ready", work.len(), READY_WITHIN)?;
        eprintln!(
            "bench: failover / kill {} of {}: broker {} killed and started again",
            kill + 1,
            options.kills,
            victim + 1
        );
    }
    std::thread::sleep(SETTLE);
    fleet.signal(libc::SIGTERM);
    fleet.wait(options.max_run)?;
    let last = fleet
        .lines(Stream::Out)
        .pop()
        .ok_or_else(|| anyhow!("the failover clients printed no trace"))?;
    let trace: super::peers::Trace = serde_json::from_str(&last)
        .with_context(|| format!("reading the failover clients' trace {last:?}"))?;
    for worker in &mut workers {
        worker.stop();
    }
    for broker in &mut brokers {
        broker.stop();
    }

    // For each kill and each client: the wait until its next reply, and
    // the longest wait for a reply from the kill until the broker is back.
    // They differ: a client may get a reply from the other broker at once,
    // and still send its next request into the dead connection, in the
    // moment before libzmq has seen it close.
    let horizon = (options.failover_timeout + DEAD_FOR).as_nanos() as u64;
    let mut next = Vec::with_capacity(killed_at.len() * trace.replies_at_unix_ns.len());
    let mut longest = Vec::with_capacity(next.capacity());
    for &kill in &killed_at {
        for replies in &trace.replies_at_unix_ns {
            let mut after = replies.iter().filter(|&&at| at > kill).peekable();
            let Some(&&first) = after.peek() else {
                bail!("a client had no reply after a kill");
            };
            next.push(Duration::from_nanos(first - kill));
            let (mut previous, mut wait) = (kill, 0);
            for &at in after {
                wait = wait.max(at - previous);
                previous = at;
                if at > kill + horizon {
                    break;
                }
            }
            longest.push(Duration::from_nanos(wait));
        }
    }
    let answered = trace.rtts_ns.len() as u64;
    let elapsed = Duration::from_nanos(trace.elapsed_ns);
    let throughput = answered as f64 / elapsed.as_secs_f64().max(1e-9);
    let ms = |samples: &[Duration]| {
        samples
            .iter()
            .max()
            .copied()
            .unwrap_or_default()
            .as_secs_f64()
            * 1e3
    };
    let (to_next, to_longest) = (percentiles(&next), percentiles(&longest));
    let waited_a_timeout = longest
        .iter()
        .filter(|&&wait| wait >= options.failover_timeout)
        .count();
    eprintln!(
        "bench: failover / {} x {}: from a kill to the next reply p50 {:.1} ms, \
         p99 {:.1} ms, max {:.1} ms; longest wait for a reply p50 {:.1} ms, p99 {:.1} ms, \
         max {:.1} ms; {waited_a_timeout} of {} waited a timeout; {}, {} lost",
        Count::new(killed_at.len() as u64, "kill"),
        Count::new(trace.replies_at_unix_ns.len() as u64, "client"),
        to_next.p50_ms,
        to_next.p99_ms,
        ms(&next),
        to_longest.p50_ms,
        to_longest.p99_ms,
        ms(&longest),
        longest.len(),
        Count::new(trace.resends, "resend"),
        trace.lost
    );
    let row = |what: &str, latency| Row {
        scenario: "failover".into(),
        variant: format!(
            "{}; p = {what}",
            Count::new(killed_at.len() as u64, "SIGKILL")
        ),
        baseline: false,
        clients: options.clients,
        workers: options.workers,
        answered,
        lost: trace.lost,
        throughput,
        throughput_runs: vec![throughput],
        latency,
        server_rss_mib: None,
        server_cpu_s: None,
        connect_s: None,
        ratio: None,
    };
    Ok(vec![
        row("kill to next reply", to_next),
        row("longest wait", to_longest),
    ])
}
