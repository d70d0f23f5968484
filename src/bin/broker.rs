//! # broker: a ROUTER frontend for clients, a backend for workers
//!
//! The lecture's broker exercise. Clients connect to the frontend (5555),
//! workers to the backend (5556); only the broker binds. Clients and workers
//! know its address and nothing of each other, so either side can grow or
//! shrink without the other knowing.
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
//! `--http 127.0.0.1:8080` also serves a live page of the broker for the
//! projector (http://127.0.0.1:8080/): the workers, the idle queue, the
//! requests per second, the events; its figures as JSON at `/stats`
//! (`src/broker/dashboard.rs`). The compose file serves it on port 8080.
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
//! servers both depend on the broker?" Not to start: a ZeroMQ connect needs
//! nobody on the other side, and `depends_on` only orders the containers'
//! starts. They depend on its address, the one they all know, and on its
//! being alive (`docker-compose.failover.yml` runs two). The guide's
//! experiments (docs/experiments.md) start each side first and show what
//! changes: requests wait, and workers that connect late miss the first ones.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use tracing::info;

use zmq_reqrep::broker::dashboard::{self, Board, Publisher};
use zmq_reqrep::broker::{lb, proxy};
use zmq_reqrep::plumbing::cli::{LimitArgs, NameArg, ServerSecurityArgs};
use zmq_reqrep::plumbing::endpoint::{self, last_endpoint};
use zmq_reqrep::plumbing::exit::{self, UsageError};
use zmq_reqrep::plumbing::listener;
use zmq_reqrep::plumbing::shutdown::Shutdown;

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

    /// Serve a live page of the broker on this address: GET / is the page,
    /// GET /stats its figures as JSON. 127.0.0.1:8080 for this machine
    /// only; 0.0.0.0:8080 for other machines too (in a container, for its
    /// published port). Off unless given
    #[arg(long, env, value_name = "IP:PORT", value_parser = http_address)]
    http: Option<String>,

    #[command(flatten)]
    limit: LimitArgs,

    #[command(flatten)]
    security: ServerSecurityArgs,

    #[command(flatten)]
    name: NameArg,
}

/// An `--http` value: `IP:PORT` or `HOST:PORT` (resolved when bound);
/// empty (`HTTP=` in a compose file) means no page.
fn http_address(value: &str) -> Result<String, String> {
    if value.contains("://") {
        return Err("give IP:PORT, such as 127.0.0.1:8080, without a scheme".into());
    }
    let port = value
        .rsplit_once(':')
        .map(|(host, port)| (host, port.parse::<u16>()));
    match port {
        _ if value.is_empty() => Ok(String::new()),
        Some((host, Ok(_))) if !host.is_empty() => Ok(value.to_string()),
        _ => Err("expected IP:PORT, such as 127.0.0.1:8080 (port 0: any free port)".into()),
    }
}

fn main() -> ExitCode {
    let args: Args = exit::parse_args();
    zmq_reqrep::plumbing::logging::init("broker", &args.name.name);
    exit::report(run(&args))
}

fn run(args: &Args) -> anyhow::Result<()> {
    let shutdown = Shutdown::on_signals().context("installing the Ctrl-C/SIGTERM handler")?;
    let ctx = zmq::Context::new();
    // Hardening, one step (src/plumbing/listener.rs): who may join, limits,
    // heartbeats, monitors. Declared before the sockets, it is dropped after
    // them: they close first and let their last messages leave.
    let hardening = listener::Hardening::new(&ctx, &args.limit, &args.security)?;

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
            "if it was a plain REP worker: an lb broker's ROUTER backend cannot take one, \
             start the workers with --mode lb",
        ),
    };
    let frontend = hardening.apply(frontend, "frontend")?;
    let backend = hardening.apply_with_hint(backend, "backend", refused_hint)?;
    for socket in [&frontend, &backend] {
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
    // The live page (src/broker/dashboard.rs): its own threads read what
    // the loop publishes; the sockets stay in this thread. Stopped when
    // `server` is dropped, at the end of this function.
    let (page, server) = match args.http.as_deref().filter(|address| !address.is_empty()) {
        Some(address) => {
            let board = Board::new(
                match args.mode {
                    Mode::Proxy => "proxy",
                    Mode::Lb => "lb",
                },
                &args.name.name,
                frontend.open_connections(),
                backend.open_connections(),
            );
            let server = dashboard::serve(address, Arc::clone(&board))
                .map_err(|error| UsageError::new("--http", address, &error.to_string()))?;
            (Some(Publisher::new(board)), Some(server))
        }
        None => (None, None),
    };

    let (mode, backend_type) = match args.mode {
        Mode::Proxy => ("proxy", "DEALER"),
        Mode::Lb => ("load-balancing (lb)", "ROUTER"),
    };
    info!(
        "{mode} mode: frontend ROUTER on {}, backend {backend_type} on {}",
        last_endpoint(&frontend),
        last_endpoint(&backend)
    );
    if let Some(server) = &server {
        info!(
            "live page on http://{}/ (its figures as JSON at /stats)",
            server.local_addr()
        );
    }

    match args.mode {
        Mode::Proxy => proxy::run(&frontend, &backend, page, &shutdown)?,
        Mode::Lb => {
            let options = lb::Options {
                heartbeat: Duration::from_millis(args.heartbeat_ms),
            };
            lb::run(&frontend, &backend, options, page, &shutdown)?
        }
    };
    Ok(())
}
