//! # hwserver: the bare REP server, the pattern and nothing else
//!
//! The Rust twin of the course's Python server and of the ZeroMQ guide's
//! `hwserver.c` (less its one-second sleep): a REP socket binds, then
//! receives a request and sends its one reply, forever.
//! `src/bin/reqrep_server.rs` is the same loop, hardened (limits, logs, Ctrl-C,
//! fault injection); start here.
//!
//! ```text
//! cargo run --example hwserver                       # binds tcp://*:5555
//! cargo run --example hwclient                       # in a second terminal
//! ```
//!
//! The first argument, if any, is the endpoint to bind (`tcp://127.0.0.1:6000`).
//! Any error (a bad endpoint, a port in use) ends the program with libzmq's
//! one-line message, through `?`: that is all the handling a bare example gets.

fn main() -> Result<(), zmq::Error> {
    let endpoint = std::env::args().nth(1);
    let endpoint = endpoint.as_deref().unwrap_or("tcp://*:5555");

    let context = zmq::Context::new();
    let socket = context.socket(zmq::REP)?;
    socket.bind(endpoint)?;

    loop {
        // A REP socket must receive before it may send, then send exactly once.
        let request = socket.recv_bytes(0)?;
        // ZeroMQ moves bytes: show them as a Rust byte string, as Python shows b'Hello'.
        println!("Received request: b\"{}\"", request.escape_ascii());
        socket.send("World", 0)?;
    }
}
