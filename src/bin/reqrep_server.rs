//! # reqrep_server: a REP socket that binds and answers every request
//!
//! The lecture's first exercise: a REP server binds, a REQ client connects,
//! the client speaks first. A REP socket is strict: it must receive a request
//! before it may send, and send exactly one reply before it may receive again.
//! libzmq remembers who asked, so the reply goes back to the right client even
//! with many clients connected: they are served one request at a time, in
//! turn (fair queueing).
//!
//! Run it with the client in two terminals:
//!
//! ```text
//! cargo run --bin reqrep_server                      # REP, binds tcp://*:5555
//! cargo run --bin reqrep_client -- --count 5         # REQ, connects to localhost:5555
//! ```
//!
//! or both in containers: `docker compose -f docker-compose.reqrep.yml up`.
//!
//! Slide questions it answers:
//! - "what is the `b` before the string?" Requests are logged as Rust
//!   byte-string literals (`b"Hello"`): ZeroMQ moves bytes, not text.
//! - "and if the server dies and comes back?" `--crash-after N` exits after N
//!   replies, `--hang-after N` stops answering but stays alive; restart it and
//!   watch what the client does (see `reqrep_client --timeout-ms`).
//! - "more server replicas?" Start several on different ports and give the
//!   client each of them with `--connect`: its REQ socket takes turns.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use tracing::{info, warn};

use zmq_reqrep::faults::Faults;
use zmq_reqrep::payload::show_frames;
use zmq_reqrep::plumbing::cli::{LimitArgs, NameArg, ReplyArgs, ServerSecurityArgs};
use zmq_reqrep::plumbing::endpoint::{self, last_endpoint};
use zmq_reqrep::plumbing::exit::{self, UsageError};
use zmq_reqrep::plumbing::listener;
use zmq_reqrep::plumbing::logging::Count;
use zmq_reqrep::plumbing::shutdown::{self, CHECK_INTERVAL_MS, Shutdown};

/// A REP server: binds, then answers each request with one reply.
#[derive(Parser, Debug)]
#[command(version, long_about = None)]
struct Args {
    /// Endpoint to bind ('*' means every interface)
    #[arg(long, env, default_value = "tcp://*:5555", value_parser = endpoint::parse_bind, value_name = "ENDPOINT")]
    bind: String,

    #[command(flatten)]
    reply: ReplyArgs,

    #[command(flatten)]
    faults: Faults,

    #[command(flatten)]
    limit: LimitArgs,

    #[command(flatten)]
    security: ServerSecurityArgs,

    #[command(flatten)]
    name: NameArg,
}

fn main() -> ExitCode {
    let args: Args = exit::parse_args();
    zmq_reqrep::plumbing::logging::init("reqrep_server", &args.name.name);
    exit::report(run(&args))
}

fn run(args: &Args) -> anyhow::Result<()> {
    let shutdown = Shutdown::on_signals().context("installing the Ctrl-C/SIGTERM handler")?;
    let reply = args.reply.load()?;
    let work = Duration::from_millis(args.reply.work_ms);

    let ctx = zmq::Context::new();
    // Hardening, one step (src/plumbing/listener.rs): who may join, limits,
    // heartbeats, a monitor. Declared before the socket, it is dropped
    // after it: the socket closes first and lets its last reply leave.
    let hardening = listener::Hardening::new(&ctx, &args.limit, &args.security)?;

    // The pattern: a REP socket, bound to a well-known address.
    let socket = hardening.apply(ctx.socket(zmq::REP)?, "REP")?;
    socket.set_rcvtimeo(CHECK_INTERVAL_MS)?; // wake up to notice Ctrl-C
    socket
        .bind(&args.bind)
        .map_err(UsageError::at("--bind", &args.bind))?;
    info!("REP listening on {}", last_endpoint(&socket));

    // Receive a request, send its one reply, again and again.
    let mut replies = 0u64;
    while let Some(request) = shutdown.recv_multipart(&socket)? {
        info!("request {}", show_frames(&request));
        if args.faults.hang_if_due(replies, &shutdown) {
            break;
        }
        // Stopped while working: the work is not done, so no reply says it is.
        if !work.is_zero() && !shutdown.sleep(work) {
            warn!("stopped mid-request; no reply sent");
            break;
        }
        shutdown::send_multipart(&socket, &reply.to(&request))?;
        replies += 1;
        args.faults.crash_if_due(replies)?;
    }
    info!("served {}", Count::new(replies, "request"));
    Ok(())
}
