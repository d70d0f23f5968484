//! # bench: how fast is ZeroMQ request-reply, and what do the patterns cost?
//!
//! Runs each scenario side by side with its baseline, as real processes on
//! 127.0.0.1, and prints one table (`--json` for machines):
//!
//! ```text
//! cargo run --release --bin bench -- all                 # every scenario, under two minutes
//! cargo run --release --bin bench -- broker --clients 8  # one scenario, other sizes
//! cargo run --release --bin bench -- scale               # 1 to 10,000 clients, about a minute
//! cargo run --release --bin bench -- all --json > report.json
//! cargo run --release --bin bench -- chart report.json docs/bench.svg
//! ```
//!
//! | scenario | question | baseline |
//! |---|---|---|
//! | `reqrep` | does the suite's code add anything to a round trip? and CURVE? | bare libzmq REQ/REP (and raw TCP) |
//! | `broker` | what does a broker hop cost? and CURVE on both hops? | `zmq::proxy` |
//! | `pipeline` | what does "DEALER is asynchronous" buy? | lock-step REQ |
//! | `balance` | what does load balancing buy with one slow worker? | round robin |
//! | `scale` | do 10,000 clients get through one broker, how fast, in how much memory? | 1 client |
//! | `page` | what does the live page (`broker --http`) cost while watched? | the lb broker without it |
//! | `failover` | what do two brokers cost, and what does a broker's death cost? | 1 broker |
//! | `wire` | what does the relay that shows the bytes cost a round trip, and memory? | bare REQ/REP, direct |
//!
//! The role binaries (`reqrep_server`, `broker`, ...) are run from the same
//! directory as this one; run through `cargo run`, the bench builds them
//! first. The CURVE rows need a build with CURVE (`cargo run --release
//! --config .cargo/system-libzmq.toml --bin bench -- ...`); others leave them
//! out. The machine is noisy: compare ratios measured in one run, and prefer
//! `--repeat` (default 5, rows report the median run). Each run asks for
//! `--run-ms` at most (or its request count, if that comes first), so every
//! variant of a scenario is measured over the same time. The code is in
//! `src/bench/`.
//!
//! `scale` runs 1, 10, 100, 1,000 and 10,000 concurrent lock-step clients
//! through `broker --mode lb`, and through `--mode proxy` at the largest
//! step (`bench all` stops at 1,000, to stay under two minutes). The clients
//! are `bench peer fleet` processes of 2,500 clients at most, which all
//! connect at once and are measured only once each has had a first reply
//! (the `conn s` column: how long that connection storm took). Steps over
//! 2,500 clients start the broker with `--io-threads 2`. After the table, a
//! `scale:` block sets the rows against the broker's targets: nothing lost,
//! peak memory under 512 MiB, and at least 0.8 of the throughput at 100
//! clients with 1,000, 0.5 with 10,000. Where a limit of the system stops a
//! run (open files, the listen backlog), the error says which and how to
//! raise it.
//!
//! `failover` has two kinds of rows. The first two compare throughput with
//! one lb broker and with two (workers and clients connected to both). The
//! last two come from one run in which Lazy Pirate clients (the suite's own
//! `ReliableReq`, `--failover-timeout-ms`) ask through two brokers while
//! one of them is SIGKILLed `--kills` times (the first, then the second, and
//! so on), each time left dead for one client timeout and 200 ms more, and
//! started again on its ports. Their latency columns are not round trips but, over every
//! kill and client, the time from the kill to the client's next reply, and
//! the longest the client waited for a reply until the broker was back.
//! `lost` counts the requests a client gave up on: it must be 0.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};

use zmq_reqrep::bench::{self, Options, Report, peers, scenarios};
use zmq_reqrep::plumbing::cli::ClientSecurityArgs;
use zmq_reqrep::plumbing::exit;
use zmq_reqrep::security::credentials::Credentials;

/// Benchmarks the request-reply patterns against their baselines.
#[derive(Parser, Debug)]
#[command(version, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Every scenario, one after the other
    All(RunArgs),
    /// REQ/REP round trips: the suite's binaries, bare libzmq, raw TCP
    Reqrep(RunArgs),
    /// Clients through a broker: ours in both modes, and zmq::proxy
    Broker(RunArgs),
    /// A DEALER with requests in flight against lock-step REQ
    Pipeline(RunArgs),
    /// One slow worker among fast ones: round robin against load balancing
    Balance(RunArgs),
    /// 1 to 10,000 concurrent clients through the lb broker (and proxy at the largest step)
    Scale(RunArgs),
    /// The lb broker with its live page watched (--http), and without
    Page(RunArgs),
    /// Two lb brokers against one, and one of them SIGKILLed again and again
    Failover(RunArgs),
    /// Round trips through the wire relay against direct ones; its memory
    Wire(RunArgs),
    /// Draw the SVG chart of a JSON report
    Chart {
        /// A report written by `--json`
        json: PathBuf,
        /// Where to write the SVG
        svg: PathBuf,
    },
    /// A baseline or load generator, started by the bench itself
    #[command(hide = true, subcommand)]
    Peer(Peer),
}

#[derive(Args, Debug, Clone)]
struct RunArgs {
    /// Request payload size, in bytes
    #[arg(long, default_value_t = 5)]
    size: usize,
    /// Round trips in the reqrep and pipeline scenarios
    #[arg(long, default_value_t = 20_000)]
    round_trips: u64,
    /// Clients in the broker, balance, page and failover scenarios
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Workers in the broker, balance, scale, page and failover scenarios
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Requests per client in the broker, page and failover scenarios
    #[arg(long, default_value_t = 5_000)]
    requests: u64,
    /// Requests per client in the balance scenario
    #[arg(long, default_value_t = 200)]
    balance_requests: u64,
    /// Service time of every worker in the broker, page and failover
    /// scenarios (ms)
    #[arg(long, default_value_t = 0)]
    work_ms: u64,
    /// Service time of the fast workers in the balance scenario (ms)
    #[arg(long, default_value_t = 1)]
    fast_ms: u64,
    /// The slow worker of the balance scenario is this many times slower
    #[arg(long, default_value_t = 10)]
    slow_factor: u64,
    /// Requests in flight for the DEALER of the pipeline scenario
    #[arg(long, default_value_t = 16)]
    window: u64,
    /// Concurrent clients at each step of the scale scenario [default:
    /// 1,10,100,1000,10000; with `all`, 1,10,100,1000]
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u64).range(1..=100_000))]
    scale_steps: Option<Vec<u64>>,
    /// Requests per step of the scale scenario, spread over its clients
    #[arg(long, default_value_t = 20_000)]
    scale_requests: u64,
    /// Runs of each variant; the table shows the median run
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=20))]
    repeat: u64,
    /// Each run sends no new request after this long (ms), even short of
    /// its count: the same time for every variant of a scenario
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    run_ms: u64,
    /// Broker kills in the failover scenario (alternately one broker, then
    /// the other)
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=1000))]
    kills: u64,
    /// The Lazy Pirate clients' --timeout-ms in the failover scenario: what
    /// a request that dies with its broker costs
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..))]
    failover_timeout_ms: u64,
    /// Longest one run may take; requests unanswered by then count as lost
    #[arg(long, default_value_t = 60)]
    max_seconds: u64,
    /// Tiny sizes, one run each: checks that everything works, measures nothing
    #[arg(long)]
    tiny: bool,
    /// Print the report as JSON instead of the table
    #[arg(long)]
    json: bool,
}

impl RunArgs {
    /// The options; `all` for `bench all`, which leaves the 10,000-client
    /// step out unless `--scale-steps` asks for it.
    fn options(&self, all: bool) -> Options {
        let default_steps = if all {
            &scenarios::SCALE_STEPS[..scenarios::SCALE_STEPS.len() - 1]
        } else {
            &scenarios::SCALE_STEPS[..]
        };
        let mut options = Options {
            size: self.size,
            round_trips: self.round_trips,
            clients: self.clients,
            workers: self.workers,
            requests: self.requests,
            balance_requests: self.balance_requests,
            work_ms: self.work_ms,
            fast_ms: self.fast_ms,
            slow_factor: self.slow_factor,
            window: self.window,
            scale_steps: self.scale_steps.as_ref().map_or_else(
                || default_steps.to_vec(),
                |steps| steps.iter().map(|&n| n as usize).collect(),
            ),
            scale_requests: self.scale_requests,
            repeat: self.repeat as usize,
            run: Duration::from_millis(self.run_ms),
            kills: self.kills as usize,
            failover_timeout: Duration::from_millis(self.failover_timeout_ms),
            max_run: Duration::from_secs(self.max_seconds),
        };
        if self.tiny {
            options.round_trips = 200;
            options.requests = 50;
            options.balance_requests = 20;
            options.scale_requests = 200;
            options.repeat = 1;
            options.kills = 2;
        }
        options
    }
}

#[derive(Subcommand, Debug)]
enum Peer {
    RepBare {
        #[arg(long)]
        bind: String,
    },
    ReqBare {
        #[arg(long)]
        connect: String,
        #[arg(long)]
        count: u64,
        #[arg(long)]
        size: usize,
        #[arg(long)]
        run_ms: u64,
    },
    TcpServer {
        #[arg(long)]
        bind: String,
        #[arg(long)]
        size: usize,
    },
    TcpClient {
        #[arg(long)]
        connect: String,
        #[arg(long)]
        count: u64,
        #[arg(long)]
        size: usize,
        #[arg(long)]
        run_ms: u64,
    },
    Proxy {
        #[arg(long)]
        frontend: String,
        #[arg(long)]
        backend: String,
    },
    RouterEcho {
        #[arg(long)]
        bind: String,
    },
    DealerPipeline {
        #[arg(long)]
        connect: String,
        #[arg(long)]
        count: u64,
        #[arg(long)]
        window: u64,
        #[arg(long)]
        size: usize,
        #[arg(long)]
        run_ms: u64,
    },
    Viewer {
        #[arg(long)]
        address: String,
        #[arg(long)]
        viewers: usize,
    },
    Fleet {
        #[arg(long)]
        connect: String,
        #[arg(long)]
        clients: usize,
        #[arg(long)]
        requests: u64,
        #[arg(long)]
        size: usize,
        #[arg(long)]
        stall_s: u64,
        #[arg(long)]
        run_ms: u64,
        /// Once connected, wait for SIGUSR1 before the measured requests
        #[arg(long)]
        wait_for_go: bool,
        /// CURVE: the server's public key (with --curve-secret-key-file);
        /// it may start with '-', a Z85 character
        #[arg(long, allow_hyphen_values = true)]
        curve_server_key: Option<String>,
        /// CURVE: the clients' secret key file
        #[arg(long)]
        curve_secret_key_file: Option<PathBuf>,
    },
    FailoverClients {
        #[arg(long)]
        connect: String,
        #[arg(long)]
        clients: usize,
        #[arg(long)]
        timeout_ms: u64,
        #[arg(long)]
        retries: u32,
        #[arg(long)]
        size: usize,
    },
}

fn main() -> ExitCode {
    let cli: Cli = exit::parse_args();
    exit::report(run(cli.command))
}

fn run(command: Command) -> anyhow::Result<()> {
    type Scenario = fn(&Options) -> anyhow::Result<Vec<bench::Row>>;
    let all = matches!(command, Command::All(_));
    let (args, chosen): (RunArgs, Vec<Scenario>) = match command {
        Command::Peer(peer) => return run_peer(peer),
        Command::Chart { json, svg } => {
            let text = std::fs::read_to_string(&json)
                .with_context(|| format!("reading {}", json.display()))?;
            let report: Report = serde_json::from_str(&text)
                .with_context(|| format!("parsing {}", json.display()))?;
            return std::fs::write(&svg, bench::chart::svg(&report))
                .with_context(|| format!("writing {}", svg.display()));
        }
        Command::All(args) => (
            args,
            vec![
                scenarios::reqrep,
                scenarios::broker,
                scenarios::pipeline,
                scenarios::balance,
                scenarios::scale,
                bench::page::page,
                scenarios::failover,
                bench::wire::wire,
            ],
        ),
        Command::Reqrep(args) => (args, vec![scenarios::reqrep]),
        Command::Broker(args) => (args, vec![scenarios::broker]),
        Command::Pipeline(args) => (args, vec![scenarios::pipeline]),
        Command::Balance(args) => (args, vec![scenarios::balance]),
        Command::Scale(args) => (args, vec![scenarios::scale]),
        Command::Page(args) => (args, vec![bench::page::page]),
        Command::Failover(args) => (args, vec![scenarios::failover]),
        Command::Wire(args) => (args, vec![bench::wire::wire]),
    };
    build_roles()?;
    zmq_reqrep::plumbing::limits::raise_open_files();
    if cfg!(debug_assertions) && !args.tiny {
        eprintln!("bench: this is a debug build; for figures that mean something, use --release");
    }
    let options = args.options(all);
    let mut rows = Vec::new();
    for scenario in chosen {
        rows.extend(scenario(&options)?);
    }
    let report = Report {
        machine: bench::Machine::this(),
        command: std::env::args().skip(1).collect::<Vec<_>>().join(" "),
        rows: scenarios::with_ratios(rows),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

/// Makes sure the role binaries next to this one exist and are current:
/// under `cargo run`, builds them with the same profile; otherwise checks.
fn build_roles() -> anyhow::Result<()> {
    if let (Ok(cargo), Ok(manifest)) =
        (std::env::var("CARGO"), std::env::var("CARGO_MANIFEST_PATH"))
    {
        let profile = if cfg!(debug_assertions) {
            "dev"
        } else {
            "release"
        };
        eprintln!("bench: cargo build --profile {profile} --bins (the roles it runs)");
        let mut build = std::process::Command::new(cargo);
        build.args([
            "build",
            "--quiet",
            "--bins",
            "--profile",
            profile,
            "--manifest-path",
            &manifest,
        ]);
        // Run with --config .cargo/system-libzmq.toml (so from its target
        // directory), the roles must be built the same way, next to it.
        let system = Path::new(&manifest).with_file_name(".cargo/system-libzmq.toml");
        let target_dir = std::env::current_exe()?
            .parent()
            .and_then(Path::parent)
            .map(Path::to_path_buf);
        if target_dir.is_some_and(|dir| dir.ends_with("target/system-libzmq")) {
            build.arg("--config").arg(&system);
        }
        let status = build.status().context("running cargo build")?;
        if !status.success() {
            bail!("cargo build --bins failed");
        }
    }
    for role in [
        "reqrep_server",
        "reqrep_client",
        "broker",
        "worker",
        "broker_client",
        "wire",
    ] {
        let path = zmq_reqrep::plumbing::child::sibling(role)?;
        if !path.exists() {
            bail!(
                "{} is missing: build the roles first (cargo build --release --bins)",
                path.display()
            );
        }
    }
    Ok(())
}

fn run_peer(peer: Peer) -> anyhow::Result<()> {
    match peer {
        Peer::RepBare { bind } => peers::rep_bare(&bind),
        Peer::ReqBare {
            connect,
            count,
            size,
            run_ms,
        } => peers::req_bare(&connect, count, size, Duration::from_millis(run_ms)),
        Peer::TcpServer { bind, size } => peers::tcp_server(&bind, size),
        Peer::TcpClient {
            connect,
            count,
            size,
            run_ms,
        } => peers::tcp_client(&connect, count, size, Duration::from_millis(run_ms)),
        Peer::Proxy { frontend, backend } => peers::proxy(&frontend, &backend),
        Peer::RouterEcho { bind } => peers::router_echo(&bind),
        Peer::Viewer { address, viewers } => bench::page::viewer(&address, viewers),
        Peer::DealerPipeline {
            connect,
            count,
            window,
            size,
            run_ms,
        } => peers::dealer_pipeline(&connect, count, window, size, Duration::from_millis(run_ms)),
        Peer::Fleet {
            connect,
            clients,
            requests,
            size,
            stall_s,
            run_ms,
            wait_for_go,
            curve_server_key,
            curve_secret_key_file,
        } => {
            let credentials = Credentials::load(&ClientSecurityArgs {
                curve_server_key,
                curve_secret_key_file,
                ..ClientSecurityArgs::default()
            })?;
            peers::fleet(
                &connect,
                clients,
                requests,
                size,
                Duration::from_secs(stall_s),
                Duration::from_millis(run_ms),
                &credentials,
                wait_for_go,
            )
        }
        Peer::FailoverClients {
            connect,
            clients,
            timeout_ms,
            retries,
            size,
        } => peers::failover_clients(&connect, clients, timeout_ms, retries, size),
    }
}
