//! # reqrep_client: a REQ socket that connects and asks, again and again
//!
//! The other half of the lecture's first exercise. A REQ socket is strict:
//! it must send before it may receive, and receive the reply before it may
//! send again. So the client speaks first, and one request at a time.
//!
//! Run it with the server in two terminals:
//!
//! ```text
//! cargo run --bin reqrep_server
//! cargo run --bin reqrep_client -- --count 5         # 5 requests, then exit 0
//! ```
//!
//! or both in containers: `docker compose -f docker-compose.reqrep.yml up`.
//!
//! Slide questions it answers:
//! - "start order reversed?" Start the client first: ZeroMQ connects in the
//!   background and the first request goes out when the server appears, if
//!   it appears within the client's patience (`--timeout-ms` times 1 +
//!   `--retries`: 10 s by default; `--timeout-ms 0` waits for ever).
//! - "what is the `b` before the string?" Each reply line shows the payloads
//!   as Rust byte-string literals (`b"World"`): ZeroMQ moves bytes, not text.
//! - "more server replicas?" `--connect` several servers (repeat the flag or
//!   separate with commas): the requests go to each in turn (the client
//!   has one REQ socket per server and takes turns itself; the naive one,
//!   `--timeout-ms 0`, has one REQ connected to all, which takes turns).
//! - "and if the server dies?" By default the client waits `--timeout-ms`,
//!   then resends, `--retries` times, to the next server when it is
//!   connected to several (the Lazy Pirate pattern). `--timeout-ms 0` shows
//!   the naive REQ, which waits forever.
//!
//! The loop lives in `src/client.rs`, shared with `broker_client`; the REQ
//! socket and its retries in `src/lazy_pirate.rs`.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;

use zmq_reqrep::client;
use zmq_reqrep::plumbing::cli::{ClientArgs, ClientSecurityArgs};
use zmq_reqrep::plumbing::exit;
use zmq_reqrep::plumbing::shutdown::Shutdown;

/// A REQ client: connects, sends a request, prints the reply, repeats.
#[derive(Parser, Debug)]
#[command(version, long_about = None)]
struct Args {
    #[command(flatten)]
    client: ClientArgs,

    #[command(flatten)]
    security: ClientSecurityArgs,
}

fn main() -> ExitCode {
    let args: Args = exit::parse_args();
    zmq_reqrep::plumbing::logging::init("reqrep_client", &args.client.name.name);
    exit::report(run(&args))
}

fn run(args: &Args) -> anyhow::Result<()> {
    let shutdown = Shutdown::on_signals().context("installing the Ctrl-C/SIGTERM handler")?;
    // What the REQ socket presents to the server (src/security/).
    zmq_reqrep::security::credentials::install(&args.security)?;
    client::run("reqrep_client", &args.client, &shutdown)
}
