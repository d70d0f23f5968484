//! # rrbroker: the bare request-reply broker, ROUTER in front, DEALER behind
//!
//! The Rust twin of the course's Python broker and of the ZeroMQ guide's
//! `rrbroker.c`.
//! Clients (REQ) connect to the frontend, workers (REP) to the backend; the
//! broker binds both and passes every message across, whole. The ROUTER puts
//! the client's identity in front of each request, and takes it off the reply
//! to route it back; the DEALER hands requests to the connected workers in
//! turn. Each message is printed, one line listing its frames, so you see
//! that envelope: `[b"\x00k\x8bEg", b"", b"Hello"]`.
//! `src/bin/broker.rs` is the hardened version, with a load-balancing mode.
//!
//! ```text
//! cargo run --example rrbroker                       # ROUTER tcp://*:5555, DEALER tcp://*:5556
//! cargo run --example rrworker                       # in two or three terminals
//! cargo run --example hwclient                       # in another one
//! ```
//!
//! Arguments, if any: the frontend endpoint, then the backend endpoint. Any
//! error ends the program with libzmq's one-line message, through `?`.

fn main() -> Result<(), zmq::Error> {
    let mut args = std::env::args().skip(1);
    let frontend_endpoint = args.next().unwrap_or_else(|| "tcp://*:5555".into());
    let backend_endpoint = args.next().unwrap_or_else(|| "tcp://*:5556".into());

    let context = zmq::Context::new();
    let frontend = context.socket(zmq::ROUTER)?;
    let backend = context.socket(zmq::DEALER)?;
    frontend.bind(&frontend_endpoint)?;
    backend.bind(&backend_endpoint)?;

    // The heart of a broker: wait until either side has a message, pass it on.
    loop {
        let mut items = [
            frontend.as_poll_item(zmq::POLLIN),
            backend.as_poll_item(zmq::POLLIN),
        ];
        zmq::poll(&mut items, -1)?;
        if items[0].is_readable() {
            forward("request", &frontend, &backend)?;
        }
        if items[1].is_readable() {
            forward("reply", &backend, &frontend)?;
        }
    }
}

/// Moves one message, every frame of it, from one socket to the other.
fn forward(what: &str, from: &zmq::Socket, to: &zmq::Socket) -> Result<(), zmq::Error> {
    let frames = from.recv_multipart(0)?;
    let shown: Vec<String> = frames
        .iter()
        .map(|frame| format!("b\"{}\"", frame.escape_ascii()))
        .collect();
    println!("{what}: [{}]", shown.join(", "));
    to.send_multipart(frames, 0)
}
