//! # broker_client: a REQ client that talks to a broker instead of a server
//!
//! The broker exercise: clients connect to the broker's ROUTER frontend
//! (port 5555), workers to its backend (port 5556), and neither knows the
//! other's address. Only the broker binds: both sides know its address
//! alone, so either side can be scaled without telling the other.
//!
//! This is the same program as `reqrep_client`, and that is the lesson: to a
//! REQ socket, a broker's ROUTER frontend looks exactly like a REP server.
//! The ROUTER adds the envelope (the client's identity) on the way in and
//! strips it on the way out, so the client never sees it.
//!
//! ```text
//! cargo run --bin broker                             # ROUTER :5555, DEALER :5556
//! cargo run --bin worker                             # REP, connects to :5556
//! cargo run --bin broker_client -- --count 5         # REQ, connects to :5555
//! ```
//!
//! or all three in containers: `docker compose -f docker-compose.broker.yml up`.
//!
//! The loop lives in `src/client.rs`; the REQ socket and its retries (which
//! matter here when a worker dies with a request in hand) in
//! `src/lazy_pirate.rs`.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;

use zmq_reqrep::client;
use zmq_reqrep::plumbing::cli::{ClientArgs, ClientSecurityArgs};
use zmq_reqrep::plumbing::exit;
use zmq_reqrep::plumbing::shutdown::Shutdown;

/// A REQ client of the broker: connects to its frontend and asks.
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
    zmq_reqrep::plumbing::logging::init("broker_client", &args.client.name.name);
    exit::report(run(&args))
}

fn run(args: &Args) -> anyhow::Result<()> {
    let shutdown = Shutdown::on_signals().context("installing the Ctrl-C/SIGTERM handler")?;
    // What the REQ socket presents to the server (src/security/).
    zmq_reqrep::security::credentials::install(&args.security)?;
    client::run("broker_client", &args.client, &shutdown)
}
