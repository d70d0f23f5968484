//! # hwclient: the bare REQ client, ten requests and their replies
//!
//! The Rust twin of the course's Python client and of the ZeroMQ guide's
//! `hwclient.c`: a REQ socket connects, then sends "Hello" and waits for the
//! reply, ten times (the guide's count; the course's client goes on forever).
//! `src/bin/reqrep_client.rs` is the hardened version (a timeout, and a resend
//! when a reply is late, to the next server if there are several: the Lazy
//! Pirate pattern).
//!
//! ```text
//! cargo run --example hwserver                       # in a first terminal
//! cargo run --example hwclient                       # connects to tcp://localhost:5555
//! ```
//!
//! Start the client first if you like: `connect` succeeds without a server and
//! the first request leaves when one appears. But a plain REQ has no timeout:
//! if the server dies holding a request, this client waits forever.
//!
//! The first argument, if any, is the server's endpoint. Any error ends the
//! program with libzmq's one-line message, through `?`.

fn main() -> Result<(), zmq::Error> {
    let endpoint = std::env::args().nth(1);
    let endpoint = endpoint.as_deref().unwrap_or("tcp://localhost:5555");

    let context = zmq::Context::new();
    let socket = context.socket(zmq::REQ)?;
    socket.connect(endpoint)?;

    for request_nbr in 0..10 {
        println!("Sending request {request_nbr}...");
        // A REQ socket must send before it may receive, then receive exactly once.
        socket.send("Hello", 0)?;
        let reply = socket.recv_bytes(0)?;
        println!(
            "Received reply {request_nbr}: b\"{}\"",
            reply.escape_ascii()
        );
    }
    Ok(())
}
