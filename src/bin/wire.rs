//! # wire: see the frames on the wire
//!
//! The slide asks "what is the `b` before the string?", and calls DEALER an
//! asynchronous REQ and ROUTER an asynchronous REP. The answers are in the
//! bytes two sockets exchange, and this program shows them: it is a relay
//! that the client connects to instead of the server. For each connection
//! it opens one to the server, copies every byte both ways unchanged, and
//! prints, one line each, what passed:
//!
//! ```text
//! #1 client > server  greeting  ZMTP 3.1, NULL, as-server 0  [ff 00 00 00 00 00 00 00 01 7f 03 01 4e 55 4c 4c 00 00 00 00 00 00 00 00 00 ... 64 bytes]
//! #1 client > server  READY  Socket-Type=REQ Identity=  [04 26 05 52 45 41 44 59 0b 53 6f 63 6b 65 74 2d 54 79 ... 40 bytes]
//! #1 client > server  message  b"" (MORE, 0 bytes: 01 00) + b"Hello" (5 bytes: 00 05 48 65 6c 6c 6f)
//! #1 server > client  message  b"" (MORE, 0 bytes: 01 00) + b"World" (5 bytes: 00 05 57 6f 72 6c 64)
//! ```
//!
//! What to look for: each side's greeting (`ff ... 7f`, the version, the
//! security mechanism), then each socket announcing its type (`READY`),
//! then the messages. A frame is a flags byte (`01`: MORE, another frame of
//! the same message follows; `02`: LONG, the size takes 8 bytes), its size
//! and its bytes: `Hello` travels as `00 05 48 65 6c 6c 6f`, with no `b`
//! anywhere (that is how Python and Rust *print* bytes). The REQ puts an
//! empty frame, `01 00`, before its request: the delimiter. Through a
//! broker, the worker's side shows one frame more in front, the identity
//! the broker's ROUTER added: it exists only on the broker's other side.
//!
//! Run it between a server and a client, in three terminals:
//!
//! ```text
//! cargo run --bin reqrep_server                                  # REP on 5555
//! cargo run --bin wire -- --listen 'tcp://*:5554' --to tcp://localhost:5555
//! cargo run --bin reqrep_client -- --connect tcp://localhost:5554 --timeout-ms 0 --count 3
//! ```
//!
//! (`--timeout-ms 0`: a plain REQ, as the course's Python client; the
//! suite's client otherwise puts a request id of 4 bytes in front of each
//! request, one frame more on the wire: see `src/lazy_pirate.rs`.)
//!
//! or in the exercises' containers, each with a second file that puts a
//! relay in the way (the client's, and the workers', connections go through
//! it):
//!
//! ```text
//! docker compose -f docker-compose.reqrep.yml -f docker-compose.reqrep.wire.yml up
//! docker compose -f docker-compose.broker.yml -f docker-compose.broker.wire.yml up
//! ```
//!
//! `--json` prints the same events as JSON lines, for tools and tests. The
//! relay never changes a byte and never waits for its printing (a reader
//! that does not keep up costs lines, counted, not speed), holds a bounded
//! amount of memory per connection whatever a peer sends, and says in one
//! line what it cannot decode (ZMTP 1.0, something that is not ZeroMQ).
//! The decoder, the relay and the printing are in `src/wire/`.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use tracing::info;

use zmq_reqrep::plumbing::cli::NameArg;
use zmq_reqrep::plumbing::endpoint;
use zmq_reqrep::plumbing::exit::{self, UsageError};
use zmq_reqrep::plumbing::logging::Count;
use zmq_reqrep::plumbing::output;
use zmq_reqrep::plumbing::shutdown::Shutdown;
use zmq_reqrep::wire::{self, print::Format, relay};

/// A relay between ZeroMQ sockets that prints every byte it passes on.
#[derive(Parser, Debug)]
#[command(version, long_about = None)]
struct Args {
    /// Where the relay listens: give this endpoint to the connecting
    /// socket instead of the server's ('*' means every interface)
    #[arg(long, env, default_value = "tcp://*:5554", value_parser = parse_listen, value_name = "ENDPOINT")]
    listen: String,

    /// The server the relay connects to, once for each connection it accepts
    #[arg(long, env, default_value = "tcp://localhost:5555", value_parser = parse_to, value_name = "ENDPOINT")]
    to: String,

    /// Print JSON lines on stdout, one object per event, instead of lines
    /// for people
    #[arg(long, env)]
    json: bool,

    /// What the lines for people call the side that connects to the relay
    /// and the side the relay connects to (the JSON says client and server)
    #[arg(long, env, default_value = "client,server", value_parser = parse_names, value_name = "CLIENT,SERVER")]
    names: Names,

    #[command(flatten)]
    name: NameArg,
}

fn main() -> ExitCode {
    let args: Args = exit::parse_args();
    zmq_reqrep::plumbing::logging::init("wire", &args.name.name);
    exit::report(run(&args))
}

fn run(args: &Args) -> anyhow::Result<()> {
    let shutdown = Shutdown::on_signals().context("installing the Ctrl-C/SIGTERM handler")?;

    // Listen where the client will connect; reach the server for each
    // connection; copy and show.
    let listener = relay::listen(&args.listen)
        .map_err(|error| UsageError::new("--listen", &args.listen, &error.to_string()))?;
    let listening = listener.local_addr()?;
    info!("listening on tcp://{listening}, relaying to {}", args.to);
    let to = relay::connect_address(&args.to).map_err(anyhow::Error::msg)?;
    let format = Format {
        json: args.json,
        names: args.names.0.clone(),
        ..Format::default()
    };
    let print = |line: &str| output::line(format_args!("{line}"));
    let running = wire::start(listener, &to, format, print, &shutdown)?;

    // Until Ctrl-C or SIGTERM.
    let (summary, dropped) = running.wait()?;
    info!(
        "stopped after {}{}",
        Count::new(summary.connections, "connection"),
        if dropped > 0 {
            format!(", {} not printed", Count::new(dropped, "event"))
        } else {
            String::new()
        }
    );
    Ok(())
}

fn parse_listen(value: &str) -> Result<String, String> {
    endpoint::parse_bind(value)?;
    relay::bind_address(value)?;
    Ok(value.to_owned())
}

fn parse_to(value: &str) -> Result<String, String> {
    endpoint::parse_connect(value)?;
    relay::connect_address(value)?;
    Ok(value.to_owned())
}

/// The two sides' names.
#[derive(Clone, Debug)]
struct Names([String; 2]);

fn parse_names(value: &str) -> Result<Names, String> {
    match value.split_once(',') {
        Some((client, server))
            if !client.is_empty() && !server.is_empty() && !server.contains(',') =>
        {
            Ok(Names([client.to_owned(), server.to_owned()]))
        }
        _ => Err("expected two names separated by a comma, for example worker,broker".into()),
    }
}
