//! # worker: a server that connects to a broker instead of binding
//!
//! In the broker exercise the workers are the servers, but they *connect*
//! (to the broker's backend, port 5556), so any number of them can come and
//! go while clients keep one address: the broker's.
//!
//! ```text
//! cargo run --bin broker
//! cargo run --bin worker -- --name w1                 # in two or three terminals
//! cargo run --bin broker_client -- --count 10
//! ```
//!
//! or in containers: `docker compose -f docker-compose.broker.yml up --scale worker=3`.
//!
//! Two modes:
//! - plain (default): a REP socket, exactly `reqrep_server` with `connect`
//!   instead of `bind`. The loop is below. The broker's DEALER backend hands
//!   it requests in turn, like the course's Python worker. A REP cannot talk
//!   to the ROUTER backend of `broker --mode lb`: libzmq refuses the
//!   connection during the handshake, and the worker says so.
//! - `--mode lb`: a DEALER that speaks the load-balancing broker's protocol
//!   (READY, heartbeats, also while working, reconnection with back-off);
//!   see `src/lb_worker.rs`. Use it with `broker --mode lb`.
//!
//! `--crash-after N` and `--hang-after N` make it die or freeze, for the
//! "what if a server dies?" experiment. Stopped (Ctrl-C, SIGTERM) in the
//! middle of `--work-ms`, a worker sends no reply: the work was not done;
//! stopped while it sends a reply, it lets that reply leave, then exits 0.
//!
//! ## Two brokers, no single point of failure
//!
//! `--connect` takes several backends (repeated, or separated by commas),
//! and the worker serves every broker it is connected to, so that either
//! broker may die while the other goes on (`docker-compose.failover.yml`):
//!
//! ```text
//! cargo run --bin worker -- --connect tcp://localhost:5556,tcp://localhost:5558
//! ```
//!
//! - plain: one REP socket connected to both. A REP fair-queues: it takes
//!   one request at a time, from each connection that has one in turn, and
//!   sends the reply back over the connection its request came in on (the
//!   envelope it kept says which). When both brokers hand it a request at
//!   once, the second waits in libzmq's queue for its connection until the
//!   first is answered. A proxy broker's DEALER does not know the worker is
//!   busy, so round robin may still queue requests behind a slow worker.
//! - `--mode lb`: one DEALER per broker, each with its own READY,
//!   heartbeats, liveness and reconnection back-off; a request from one
//!   broker that comes while the worker serves the other's is queued and
//!   served next (see `src/lb_worker.rs`).
//!
//! Both set ZMQ_IMMEDIATE: a request that came from a broker that has died
//! since, and was not read yet, is thrown away rather than worked on, and a
//! reply for a broker whose connection broke is dropped rather than kept
//! for whichever process listens at its address next. The client resends
//! either request after its timeout, and the resend reaches the broker that
//! is alive.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use tracing::{info, warn};

use zmq_reqrep::LINGER_MS;
use zmq_reqrep::faults::Faults;
use zmq_reqrep::lb_worker;
use zmq_reqrep::payload::show_frames;
use zmq_reqrep::plumbing::cli::{ClientSecurityArgs, NameArg, ReplyArgs};
use zmq_reqrep::plumbing::connection::{Change, Watch};
use zmq_reqrep::plumbing::endpoint;
use zmq_reqrep::plumbing::exit::{self, UsageError};
use zmq_reqrep::plumbing::logging::Count;
use zmq_reqrep::plumbing::shutdown::{self, CHECK_INTERVAL_MS, Shutdown};
use zmq_reqrep::security::credentials::{self, explain_refusal};
use zmq_reqrep::security::handshake;

/// Which broker the worker is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// REP socket, for `broker --mode proxy` (or any ROUTER/DEALER broker)
    #[value(alias = "proxy")]
    Plain,
    /// DEALER with READY and heartbeats, for `broker --mode lb`
    Lb,
}

/// A worker: connects to a broker's backend and answers requests.
#[derive(Parser, Debug)]
#[command(version, long_about = None)]
struct Args {
    /// The broker's backend endpoint; repeat it or separate with commas to
    /// serve several brokers at once
    #[arg(
        long,
        env,
        value_delimiter = ',',
        default_value = "tcp://localhost:5556",
        value_parser = endpoint::parse_connect,
        value_name = "ENDPOINT"
    )]
    connect: Vec<String>,

    /// Which broker protocol to speak ("proxy" also means plain, so that
    /// one MODE variable can set broker and workers alike)
    #[arg(long, env, value_enum, default_value_t = Mode::Plain)]
    mode: Mode,

    /// Heartbeat interval in lb mode, in milliseconds (use the broker's value)
    #[arg(long, env, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    heartbeat_ms: u64,

    #[command(flatten)]
    reply: ReplyArgs,

    #[command(flatten)]
    faults: Faults,

    #[command(flatten)]
    security: ClientSecurityArgs,

    #[command(flatten)]
    name: NameArg,
}

fn main() -> ExitCode {
    let args: Args = exit::parse_args();
    zmq_reqrep::plumbing::logging::init("worker", &args.name.name);
    exit::report(run(&args))
}

fn run(args: &Args) -> anyhow::Result<()> {
    let shutdown = Shutdown::on_signals().context("installing the Ctrl-C/SIGTERM handler")?;
    let reply = args.reply.load()?;
    let work = Duration::from_millis(args.reply.work_ms);
    // What every socket presents to the broker (src/security/).
    zmq_reqrep::security::credentials::install(&args.security)?;
    let ctx = zmq::Context::new();
    let endpoints = args.connect.join(", ");
    if let Some(twice) = listed_twice(&args.connect) {
        return Err(UsageError {
            option: "--connect",
            value: twice.to_owned(),
            reason: "listed twice: connect to each broker once".into(),
        }
        .into());
    }

    let replies = match args.mode {
        Mode::Lb => {
            info!("lb worker connecting to {endpoints}");
            let settings = lb_worker::Settings {
                endpoints: args.connect.clone(),
                name: args.name.name.clone(),
                reply,
                work,
                heartbeat: Duration::from_millis(args.heartbeat_ms),
            };
            lb_worker::run(&ctx, &settings, &args.faults, &shutdown)?
        }
        Mode::Plain => {
            // The same REP loop as reqrep_server; only `connect` differs.
            // (`watch` is declared first so that it is dropped last, after
            // the socket it watches.)
            let mut watch;
            let socket = ctx.socket(zmq::REP)?;
            socket.set_linger(LINGER_MS)?;
            socket.set_rcvtimeo(CHECK_INTERVAL_MS)?; // wake up to notice Ctrl-C
            socket.set_immediate(true)?; // nothing kept for a dead broker (see above)
            credentials::apply(&socket)?; // src/security/: what the broker may ask for
            watch = Watch::new(&ctx, &socket)?; // says so if the broker refuses a REP
            for endpoint in &args.connect {
                socket
                    .connect(endpoint)
                    .map_err(UsageError::at("--connect", endpoint))?;
            }
            info!("REP worker connecting to {endpoints}");

            let mut replies = 0u64;
            let who = match args.connect.as_slice() {
                [one] => format!("the broker at {one}"),
                _ => format!("a broker at one of {endpoints}"),
            };
            while let Some(request) = next_request(&socket, &mut watch, &shutdown, &who)? {
                info!("request {}", show_frames(&request));
                if args.faults.hang_if_due(replies, &shutdown) {
                    break;
                }
                if !shutdown.sleep(work) {
                    // Stopped before the work was done: no reply, rather
                    // than one that pretends it was.
                    info!("stopped mid-request; no reply sent");
                    break;
                }
                shutdown::send_multipart(&socket, &reply.to(&request))?;
                replies += 1;
                args.faults.crash_if_due(replies)?;
            }
            replies
        }
    };
    info!("served {}", Count::new(replies, "request"));
    Ok(())
}

/// An endpoint that `--connect` lists more than once: a second connection
/// to one broker would make it count this worker twice.
fn listed_twice(endpoints: &[String]) -> Option<&str> {
    endpoints
        .iter()
        .enumerate()
        .find(|(i, endpoint)| endpoints[..*i].contains(endpoint))
        .map(|(_, endpoint)| endpoint.as_str())
}

/// The next request for the REP worker, or `None` once a stop is asked
/// for. Meanwhile, says once if a broker refused the connection: a REP
/// cannot talk to the ROUTER backend of `broker --mode lb`, and libzmq
/// then gives up without a word.
fn next_request(
    socket: &zmq::Socket,
    watch: &mut Watch,
    shutdown: &Shutdown,
    who: &str,
) -> zmq::Result<Option<Vec<Vec<u8>>>> {
    while !shutdown.requested() {
        if watch.changes().contains(&Change::Refused) {
            let failure = watch.handshake_failure();
            // The broker hung up: when it found our REP type unfit before
            // we found its ROUTER, this is all we learn of it.
            let hung_up = failure.is_some_and(|(event, value)| handshake::hung_up(event, value));
            match explain_refusal(failure) {
                Some(why) if hung_up => warn!(
                    "{who} {why}; if it is a broker started with --mode lb, start this worker \
                     with --mode lb too"
                ),
                // A ZAP refusal or a mechanism mismatch says why.
                Some(why) => warn!("{who} {why}"),
                // A socket type mismatch closes the connection without a reason.
                None => warn!(
                    "{who} refused this REP worker during the ZeroMQ handshake: a REP worker \
                     can join a broker whose backend is a DEALER (--mode proxy); for a broker \
                     started with --mode lb, start this worker with --mode lb"
                ),
            }
        }
        match socket.recv_multipart(0) {
            Ok(frames) => return Ok(Some(frames)),
            Err(zmq::Error::EAGAIN | zmq::Error::EINTR) => {}
            Err(other) => return Err(other),
        }
    }
    Ok(None)
}
