//! # rrworker: the bare worker, a REP socket that connects to a broker
//!
//! The Rust twin of the course's Python worker and of the ZeroMQ guide's
//! `rrworker.c`: `hwserver` with `connect` in place of `bind`. The broker is the one
//! well-known address; workers come and go behind it, and its DEALER hands
//! each connected worker requests in turn. `src/bin/worker.rs` is the hardened
//! version (and speaks the load-balancing protocol with `--mode lb`).
//!
//! ```text
//! cargo run --example rrbroker                       # in a first terminal
//! cargo run --example rrworker                       # connects to tcp://localhost:5556
//! cargo run --example hwclient                       # in a third terminal
//! ```
//!
//! The first argument, if any, is the broker's backend endpoint. Any error
//! ends the program with libzmq's one-line message, through `?`.

fn main() -> Result<(), zmq::Error> {
    let endpoint = std::env::args().nth(1);
    let endpoint = endpoint.as_deref().unwrap_or("tcp://localhost:5556");

    let context = zmq::Context::new();
    let socket = context.socket(zmq::REP)?;
    socket.connect(endpoint)?;

    loop {
        let request = socket.recv_bytes(0)?;
        println!("Received request: b\"{}\"", request.escape_ascii());
        socket.send("World", 0)?;
    }
}
