//! # broker: a ROUTER frontend for clients, a backend for workers
//!
//! The lecture's broker exercise. Clients connect to the frontend (5555),
//! workers to the backend (5556); only the broker binds, so both clients and
//! workers depend on it (`depends_on: [broker]` in the compose file), and
//! either side can grow or shrink without the other knowing.
//!
//! ```text
//! cargo run --bin broker                              # ROUTER :5555, DEALER :5556
//! cargo run --bin worker                              # run 2 or 3 of these
//! cargo run --bin broker_client -- --count 10
//!
//! cargo run --bin broker -- --mode lb                 # load balancing, heartbeats
//! cargo run --bin worker -- --mode lb
//! ```
//!
//! or in containers: `docker compose -f docker-compose.broker.yml up`.
//!
//! Two modes, one file each under `src/broker/`:
//! - `--mode proxy` (default, `proxy.rs`): ROUTER frontend + DEALER backend,
//!   what `zmq::proxy` does. The DEALER hands requests to connected workers in
//!   turn, fast or slow. A worker that crashes leaves the turn when its
//!   connection closes (losing the requests it held); a hung one keeps its
//!   connection, so it keeps getting its share. Any REP worker will do.
//! - `--mode lb` (`lb.rs`): ROUTER on both sides. Workers (`worker --mode lb`)
//!   announce themselves with READY, each request goes to the worker idle the
//!   longest, only the worker holding a request may answer it, and heartbeats
//!   both ways find dead and hung workers. The frames of that protocol are
//!   documented in `src/protocol.rs`:
//!
//! ```text
//! worker → broker   READY       [0x01, name]
//! worker → broker   HEARTBEAT   [0x02]
//! worker → broker   reply       [client id, "", body]
//! broker → worker   HEARTBEAT   [0x02]
//! broker → worker   request     [client id, "", body]
//! ```
//!
//! Slide questions it answers: "more server replicas?" (scale the workers:
//! the broker spreads requests over all of them) and "why do clients and
//! servers both depend on the broker?" (it is the only one that binds).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use tracing::info;

use zmq_reqrep::broker::{lb, proxy};
use zmq_reqrep::plumbing::cli::{LimitArgs, NameArg, ServerSecurityArgs};
use zmq_reqrep::plumbing::endpoint::{self, last_endpoint};
use zmq_reqrep::plumbing::exit::{self, UsageError};
use zmq_reqrep::plumbing::listener;
use zmq_reqrep::plumbing::shutdown::Shutdown;
use zmq_reqrep::security::Gate;

/// How the broker picks a worker for each request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// ROUTER/DEALER forwarder: round robin over connected REP workers
    Proxy,
    /// Load balancing: least recently used idle worker, READY and heartbeats
    Lb,
}

/// A request-reply broker: clients connect to the frontend, workers to the backend.
#[derive(Parser, Debug)]
#[command(version, long_about = None)]
struct Args {
    /// Endpoint the clients connect to (ROUTER)
    #[arg(long, env, default_value = "tcp://*:5555", value_parser = endpoint::parse_bind, value_name = "ENDPOINT")]
    frontend: String,

    /// Endpoint the workers connect to (DEALER in proxy mode, ROUTER in lb mode)
    #[arg(long, env, default_value = "tcp://*:5556", value_parser = endpoint::parse_bind, value_name = "ENDPOINT")]
    backend: String,

    /// How requests are spread over the workers
    #[arg(long, env, value_enum, default_value_t = Mode::Proxy)]
    mode: Mode,

    /// Heartbeat interval in lb mode, in milliseconds; a worker silent for
    /// 3 intervals is forgotten
    #[arg(long, env, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    heartbeat_ms: u64,

    #[command(flatten)]
    limit: LimitArgs,

    #[command(flatten)]
    security: ServerSecurityArgs,

    #[command(flatten)]
    name: NameArg,
}

fn main() -> ExitCode {
    let args: Args = exit::parse_args();
    zmq_reqrep::plumbing::logging::init("broker", &args.name.name);
    exit::report(run(&args))
}

fn run(args: &Args) -> anyhow::Result<()> {
    let shutdown = Shutdown::on_signals().context("installing the Ctrl-C/SIGTERM handler")?;
    listener::seed_routing_ids(); // before any socket (src/plumbing/listener.rs)
    let ctx = zmq::Context::new();
    zmq_reqrep::plumbing::limits::raise_open_files(); // a descriptor per client
    // Who may join (src/security/): a ZAP handler, started before the binds.
    let gate = Gate::open(&ctx, &args.security)?;

    // Clients' REQ sockets connect here. The ROUTER prepends each client's
    // identity to its requests and uses it to route the replies back.
    let frontend = ctx.socket(zmq::ROUTER)?;
    // Workers connect here: a DEALER hands out requests in turn; a ROUTER
    // lets the broker choose the worker itself.
    let backend = ctx.socket(match args.mode {
        Mode::Proxy => zmq::DEALER,
        Mode::Lb => zmq::ROUTER,
    })?;
    // What a peer refused by the backend most likely is, and the fix.
    let refused_hint = match args.mode {
        Mode::Proxy => None,
        Mode::Lb => Some(
            "a plain REP worker cannot join an lb broker's ROUTER backend: start the workers \
             with --mode lb",
        ),
    };
    // Hardening, one step (src/plumbing/listener.rs): limits, linger, a
    // monitor. Dropped at the end, before `ctx`, each closes its socket and
    // lets the last messages leave.
    let frontend = listener::harden(&ctx, frontend, "frontend", &args.limit)?;
    let backend = listener::harden_with_hint(&ctx, backend, "backend", &args.limit, refused_hint)?;
    for (socket, kind) in [(&frontend, "frontend"), (&backend, "backend")] {
        gate.protect(socket, kind)?;
        if socket.get_socket_type()? == zmq::ROUTER {
            // Report a message for a peer that is gone instead of dropping it silently.
            socket.set_router_mandatory(true)?;
        }
    }
    frontend
        .bind(&args.frontend)
        .map_err(UsageError::at("--frontend", &args.frontend))?;
    backend
        .bind(&args.backend)
        .map_err(UsageError::at("--backend", &args.backend))?;
    let (mode, backend_type) = match args.mode {
        Mode::Proxy => ("proxy", "DEALER"),
        Mode::Lb => ("load-balancing (lb)", "ROUTER"),
    };
    info!(
        "{mode} mode: frontend ROUTER on {}, backend {backend_type} on {}",
        last_endpoint(&frontend),
        last_endpoint(&backend)
    );

    match args.mode {
        Mode::Proxy => proxy::run(&frontend, &backend, &shutdown)?,
        Mode::Lb => {
            let options = lb::Options {
                heartbeat: Duration::from_millis(args.heartbeat_ms),
            };
            lb::run(&frontend, &backend, options, &shutdown)?
        }
    };
    Ok(())
}
