//! # socket_pairs: every legal request-reply pair, frame by frame
//!
//! The lecture lists the legal pairs (REQ-REP, DEALER-REP, REQ-ROUTER,
//! DEALER-ROUTER, DEALER-DEALER, ROUTER-ROUTER) and sums them up as
//! "DEALER is an async REQ, ROUTER an async REP". This program shows what
//! actually crosses the wire: each pair exchanges a few numbered messages
//! and every frame each side sends and receives is printed, labelled
//! `identity` (in hex), `delimiter` (the empty frame) or `body`.
//!
//! ```text
//! cargo run --bin socket_pairs -- all               # the six legal pairs
//! cargo run --bin socket_pairs -- dealer-router     # one of them
//! cargo run --bin socket_pairs -- invalid           # REQ-REQ, REP-REP, ... refused
//! cargo run --bin socket_pairs -- req-rep --wire    # and the bytes between the sockets
//!
//! # or the two ends in two terminals (or containers):
//! cargo run --bin socket_pairs -- dealer-router --role server --endpoint 'tcp://*:5555'
//! cargo run --bin socket_pairs -- dealer-router --role client --endpoint tcp://localhost:5555
//! ```
//!
//! What to look for: who adds the empty delimiter (REQ, or a DEALER talking
//! to a REP, by hand) and who strips it; the identity frame a ROUTER puts in
//! front of every message and needs back to reply; a DEALER sending all its
//! requests before the first reply; a ROUTER answering out of order.
//! With `--wire`, what each socket puts on the wire: the REQ's empty frame
//! (`01 00`) crossing, the ROUTER's identity frame never leaving it.
//!
//! The envelope rules are in `src/pairs/mod.rs`, each pair in its own
//! module there.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use zmq_reqrep::pairs::{self, Pair, Role, Settings};
use zmq_reqrep::plumbing::exit::{self, UsageError};

/// Runs the legal request-reply socket pairs and prints every frame.
#[derive(Parser, Debug)]
#[command(version, long_about = None)]
struct Args {
    #[command(subcommand)]
    pair: Which,

    /// Which end(s) to run: both (two threads over 127.0.0.1), or one end
    /// against another process
    #[arg(long, env, value_enum, default_value_t = RoleArg::Both, global = true)]
    role: RoleArg,

    /// With --role server, the endpoint to bind; with --role client, the
    /// endpoint to connect to
    #[arg(
        long,
        env,
        default_value = "tcp://localhost:5555",
        global = true,
        value_name = "ENDPOINT"
    )]
    endpoint: String,

    /// Requests the client sends
    #[arg(long, env, default_value_t = 3, global = true, value_parser = clap::value_parser!(u64).range(1..=100))]
    count: u64,

    /// Longest wait for any message, in ms [default: 5000, or 60000 with --role]
    #[arg(long, env, global = true)]
    timeout_ms: Option<u64>,

    /// Also show the bytes that crossed between the two sockets: the
    /// client connects through a relay (the `wire` program), whose lines
    /// follow each pair's trace
    #[arg(long, global = true, conflicts_with = "role")]
    wire: bool,
}

#[derive(Subcommand, Debug, Clone, Copy)]
enum Which {
    /// REQ-REP: synchronous both ways
    ReqRep,
    /// DEALER-REP: asynchronous client, the DEALER adds the delimiter
    DealerRep,
    /// REQ-ROUTER: the ROUTER sees the identity of who asked
    ReqRouter,
    /// DEALER-ROUTER: asynchronous both ways, replies out of order
    DealerRouter,
    /// DEALER-DEALER: no envelope at all
    DealerDealer,
    /// ROUTER-ROUTER: one side needs a known identity
    RouterRouter,
    /// The six legal pairs, one after the other
    All,
    /// The illegal pairs (REQ-REQ, REP-REP, REQ-DEALER, REP-ROUTER), refused by libzmq
    Invalid,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum RoleArg {
    Both,
    Client,
    Server,
}

fn main() -> ExitCode {
    // clap's own usage error for a bad subcommand: it lists the pairs.
    let args = Args::parse();
    zmq_reqrep::plumbing::logging::init("socket_pairs", "local");
    exit::report(run(&args))
}

fn run(args: &Args) -> anyhow::Result<()> {
    let role = match args.role {
        RoleArg::Both => Role::Both,
        RoleArg::Client => Role::Client,
        RoleArg::Server => Role::Server,
    };
    let default_ms = if role == Role::Both { 5_000 } else { 60_000 };
    let settings = Settings {
        count: args.count as usize,
        timeout: Duration::from_millis(args.timeout_ms.unwrap_or(default_ms)),
        endpoint: args.endpoint.clone(),
        wire: args.wire,
    };
    let chosen: Vec<Pair> = match args.pair {
        Which::ReqRep => vec![Pair::ReqRep],
        Which::DealerRep => vec![Pair::DealerRep],
        Which::ReqRouter => vec![Pair::ReqRouter],
        Which::DealerRouter => vec![Pair::DealerRouter],
        Which::DealerDealer => vec![Pair::DealerDealer],
        Which::RouterRouter => vec![Pair::RouterRouter],
        Which::All => Pair::ALL.to_vec(),
        Which::Invalid if args.wire => {
            return Err(UsageError::new(
                "--wire",
                "invalid",
                "the illegal pairs never exchange a message; --wire shows the six legal ones",
            )
            .into());
        }
        Which::Invalid => return pairs::invalid::run(Duration::from_millis(500)),
    };
    for pair in chosen {
        pairs::run(pair, role, &settings)?;
    }
    Ok(())
}
