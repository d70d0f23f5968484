//! The legal request-reply socket pairs, each run end to end and traced
//! frame by frame (`socket_pairs <pair>`).
//!
//! ## The envelope rules this module shows
//!
//! Request-reply messages carry a return address, the *envelope*: zero or
//! more identity frames, then an empty *delimiter* frame, then the body.
//!
//! | socket | sends | receives |
//! |---|---|---|
//! | REQ | adds the delimiter: `[body]` leaves as `["", body]` | strips everything up to the delimiter |
//! | REP | puts back the envelope it saved from the request | saves the envelope, hands over the body |
//! | DEALER | frames as given: no envelope added | frames as they come: nothing stripped |
//! | ROUTER | takes the first frame as the peer's identity, to route | puts the sender's identity in front |
//!
//! So a DEALER talking to a REP must send the delimiter itself (the REP
//! expects a REQ's frames), and a ROUTER answering must give back the
//! identity frame it received. REQ and REP are *synchronous*: strictly one
//! request, then its reply. DEALER ("an asynchronous REQ") may send many
//! requests before reading any reply; ROUTER ("an asynchronous REP") may
//! answer them in any order, to any peer it has heard from.
//!
//! Each pair lives in its own module with a `client` and a `server`
//! function; [`End`] is one end of a pair: its socket, and the printing of
//! every frame it sends and receives.
//!
//! With `--wire` ([`Settings::wire`]), the client connects to a relay
//! ([`crate::wire`]) instead of the server, and the bytes that crossed
//! between the two sockets are printed after the pair's trace: what each
//! socket added (a REQ's delimiter) or kept for itself (a ROUTER's identity
//! frames never leave it).

pub mod dealer_dealer;
pub mod dealer_rep;
pub mod dealer_router;
pub mod invalid;
pub mod req_rep;
pub mod req_router;
pub mod router_router;

use std::fmt::Write as _;
use std::thread;
use std::time::Duration;

use anyhow::{Context as _, anyhow};

use crate::envelope::hex;
use crate::payload::show;
use crate::plumbing::output;

/// One of the six legal pairs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pair {
    /// REQ-REP: the synchronous original.
    ReqRep,
    /// DEALER-REP: an asynchronous client, a synchronous server.
    DealerRep,
    /// REQ-ROUTER: a synchronous client, an asynchronous server.
    ReqRouter,
    /// DEALER-ROUTER: asynchronous on both sides.
    DealerRouter,
    /// DEALER-DEALER: asynchronous, no envelope at all.
    DealerDealer,
    /// ROUTER-ROUTER: both sides address the other by identity.
    RouterRouter,
}

impl Pair {
    /// Every legal pair, in the lecture's order.
    pub const ALL: [Pair; 6] = [
        Pair::ReqRep,
        Pair::DealerRep,
        Pair::ReqRouter,
        Pair::DealerRouter,
        Pair::DealerDealer,
        Pair::RouterRouter,
    ];

    /// The client's and the server's socket types.
    pub fn sockets(self) -> (zmq::SocketType, zmq::SocketType) {
        match self {
            Pair::ReqRep => (zmq::REQ, zmq::REP),
            Pair::DealerRep => (zmq::DEALER, zmq::REP),
            Pair::ReqRouter => (zmq::REQ, zmq::ROUTER),
            Pair::DealerRouter => (zmq::DEALER, zmq::ROUTER),
            Pair::DealerDealer => (zmq::DEALER, zmq::DEALER),
            Pair::RouterRouter => (zmq::ROUTER, zmq::ROUTER),
        }
    }

    /// `DEALER-ROUTER`.
    pub fn title(self) -> String {
        let (client, server) = self.sockets();
        format!("{}-{}", kind_name(client), kind_name(server))
    }

    /// One line on what the pair is for.
    pub fn summary(self) -> &'static str {
        match self {
            Pair::ReqRep => "synchronous: one request, then its reply, in lock step",
            Pair::DealerRep => {
                "asynchronous client, synchronous server: the DEALER adds the delimiter itself"
            }
            Pair::ReqRouter => "synchronous client, asynchronous server: the ROUTER sees who asked",
            Pair::DealerRouter => {
                "asynchronous both ways: many requests in flight, replies in any order"
            }
            Pair::DealerDealer => {
                "asynchronous, no envelope: fine for one peer, blind with several"
            }
            Pair::RouterRouter => "both sides route by identity: one side needs a known identity",
        }
    }
}

/// Which end(s) of a pair to run in this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Both ends, in two threads, over 127.0.0.1.
    Both,
    /// The client end only: connects to the endpoint.
    Client,
    /// The server end only: binds the endpoint.
    Server,
}

/// What a run needs besides the pair.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Requests the client sends.
    pub count: usize,
    /// Longest wait for any one message, so that no run can hang.
    pub timeout: Duration,
    /// Bind endpoint of the server (with `Role::Server`) or connect
    /// endpoint of the client (with `Role::Client`); ignored with `Both`.
    pub endpoint: String,
    /// With `Both`: put a relay between the two sockets and print the
    /// bytes that crossed it, after the pair's trace.
    pub wire: bool,
}

/// The name of a socket type as the lecture writes it.
pub fn kind_name(kind: zmq::SocketType) -> &'static str {
    match kind {
        zmq::REQ => "REQ",
        zmq::REP => "REP",
        zmq::DEALER => "DEALER",
        zmq::ROUTER => "ROUTER",
        _ => "other",
    }
}

/// One end of a pair: a socket, its side's name, and the trace of every
/// message it sends or receives, printed as it happens.
pub struct End {
    /// The ZeroMQ socket itself.
    pub socket: zmq::Socket,
    side: &'static str,
    kind: zmq::SocketType,
}

impl End {
    fn new(
        ctx: &zmq::Context,
        side: &'static str,
        kind: zmq::SocketType,
        timeout: Duration,
    ) -> anyhow::Result<End> {
        let socket = ctx.socket(kind)?;
        let timeout_ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        socket.set_rcvtimeo(timeout_ms)?;
        socket.set_sndtimeo(timeout_ms)?;
        socket.set_linger(0)?;
        Ok(End { socket, side, kind })
    }

    /// Prints the frames, then sends them as one message.
    pub fn send(&self, frames: &[&[u8]]) -> anyhow::Result<()> {
        self.print("send", frames.iter().copied());
        self.socket
            .send_multipart(frames.iter().copied(), 0)
            .with_context(|| format!("{} {} could not send", self.side, kind_name(self.kind)))
    }

    /// Prints the frames of a message sent directly on [`End::socket`].
    pub fn sent(&self, frames: &[&[u8]]) {
        self.print("send", frames.iter().copied());
    }

    /// Receives one message (all its frames) and prints it.
    pub fn recv(&self) -> anyhow::Result<Vec<Vec<u8>>> {
        let frames = self.socket.recv_multipart(0).map_err(|error| match error {
            zmq::Error::EAGAIN => anyhow!(
                "{} {} received nothing in time",
                self.side,
                kind_name(self.kind)
            ),
            other => anyhow!(
                "{} {} could not receive: {other}",
                self.side,
                kind_name(self.kind)
            ),
        })?;
        self.print("recv", frames.iter().map(Vec::as_slice));
        Ok(frames)
    }

    /// Prints a line of explanation, attributed to this end.
    pub fn note(&self, text: &str) {
        output::line(format_args!(
            "{:<6} {:<6} note  {text}",
            self.side,
            kind_name(self.kind)
        ));
    }

    fn print<'a>(&self, direction: &str, frames: impl Iterator<Item = &'a [u8]>) {
        let line = label_frames(self.kind, frames.collect::<Vec<_>>().as_slice());
        output::line(format_args!(
            "{:<6} {:<6} {direction}  {line}",
            self.side,
            kind_name(self.kind)
        ));
    }
}

/// Names each frame of a message as the application sees it on a socket of
/// type `kind`: `identity 0x...`, `delimiter`, or `body b"..."`.
///
/// On a ROUTER the first frame is always an identity (put there by the
/// ROUTER on receipt, or read by it to route on sending); identity frames
/// continue up to the delimiter. On DEALER, REQ and REP sockets there is no
/// identity: an empty frame is a delimiter the application handles itself
/// (REQ and REP never show theirs), anything else is body.
pub fn label_frames(kind: zmq::SocketType, frames: &[&[u8]]) -> String {
    let delimiter = frames.iter().position(|frame| frame.is_empty());
    let mut text = String::new();
    for (i, frame) in frames.iter().enumerate() {
        if i > 0 {
            text.push_str(" | ");
        }
        let is_identity = kind == zmq::ROUTER && (i == 0 || delimiter.is_some_and(|d| i < d));
        if is_identity {
            let _ = write!(text, "identity 0x{}", hex(frame));
            if frame.iter().all(|byte| byte.is_ascii_alphanumeric()) && !frame.is_empty() {
                let _ = write!(text, " ({})", show(frame));
            }
        } else if frame.is_empty() && Some(i) == delimiter {
            text.push_str("delimiter");
        } else {
            let _ = write!(text, "body {}", show(frame));
        }
    }
    text
}

/// Runs one pair (or one end of it) and prints the lesson.
pub fn run(pair: Pair, role: Role, settings: &Settings) -> anyhow::Result<()> {
    let (client_kind, server_kind) = pair.sockets();
    output::line(format_args!("== {}: {} ==", pair.title(), pair.summary()));
    let ctx = zmq::Context::new();
    let server_end = || End::new(&ctx, "server", server_kind, settings.timeout);
    let client_end = || End::new(&ctx, "client", client_kind, settings.timeout);
    let count = settings.count;
    let mut relayed = None;
    let result = match role {
        Role::Server => {
            let server = server_end()?;
            prepare_server(pair, &server)?;
            server.socket.bind(&settings.endpoint).map_err(
                crate::plumbing::exit::UsageError::at("--endpoint", &settings.endpoint),
            )?;
            server_side(pair, &server, count)
        }
        Role::Client => {
            let client = client_end()?;
            client.socket.connect(&settings.endpoint).map_err(
                crate::plumbing::exit::UsageError::at("--endpoint", &settings.endpoint),
            )?;
            client_side(pair, &client, count)
        }
        Role::Both => {
            let server = server_end()?;
            prepare_server(pair, &server)?;
            server.socket.bind("tcp://127.0.0.1:*")?;
            let mut endpoint = crate::plumbing::endpoint::last_endpoint(&server.socket);
            if settings.wire {
                let relay = Relay::start(&endpoint)?;
                endpoint = relay.endpoint.clone();
                relayed = Some(relay);
            }
            let client = client_end()?;
            client.socket.connect(&endpoint)?;
            thread::scope(|scope| {
                let served = scope.spawn(move || server_side(pair, &server, count));
                let asked = client_side(pair, &client, count);
                let served = served
                    .join()
                    .unwrap_or_else(|_| Err(anyhow!("the server thread failed")));
                asked.and(served)
            })
        }
    };
    if let Some(relay) = relayed {
        relay.print()?;
    }
    output::line(format_args!(""));
    result
}

/// A `wire` relay between the two ends of a pair, in this process.
struct Relay {
    /// Where the client connects instead of the server.
    endpoint: String,
    running: crate::wire::Running,
    shutdown: crate::plumbing::shutdown::Shutdown,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Relay {
    /// Starts relaying from a free port to the server at `server`.
    fn start(server: &str) -> anyhow::Result<Relay> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let endpoint = format!("tcp://{}", listener.local_addr()?);
        let to = crate::wire::relay::connect_address(server).map_err(anyhow::Error::msg)?;
        let shutdown = crate::plumbing::shutdown::Shutdown::new();
        let lines = std::sync::Arc::<std::sync::Mutex<Vec<String>>>::default();
        let kept = std::sync::Arc::clone(&lines);
        let format = crate::wire::print::Format {
            prefix: "wire   ".into(),
            connections: false,
            ..Default::default()
        };
        let keep = move |line: &str| {
            kept.lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .push(line.to_owned());
        };
        let running = crate::wire::start(listener, &to, format, keep, &shutdown)?;
        Ok(Relay {
            endpoint,
            running,
            shutdown,
            lines,
        })
    }

    /// Stops the relay and prints what crossed it.
    fn print(self) -> anyhow::Result<()> {
        self.shutdown.trigger();
        self.running.wait()?;
        output::line(format_args!(
            "-- on the wire: the bytes between the two sockets, through a relay --"
        ));
        let lines = self
            .lines
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for line in lines.iter() {
            output::line(format_args!("{line}"));
        }
        Ok(())
    }
}

/// Settings a server needs before it binds (ROUTER-ROUTER's known identity).
fn prepare_server(pair: Pair, server: &End) -> anyhow::Result<()> {
    if pair == Pair::RouterRouter {
        server.socket.set_identity(router_router::SERVER_IDENTITY)?;
    }
    Ok(())
}

fn client_side(pair: Pair, end: &End, count: usize) -> anyhow::Result<()> {
    match pair {
        Pair::ReqRep => req_rep::client(end, count),
        Pair::DealerRep => dealer_rep::client(end, count),
        Pair::ReqRouter => req_router::client(end, count),
        Pair::DealerRouter => dealer_router::client(end, count),
        Pair::DealerDealer => dealer_dealer::client(end, count),
        Pair::RouterRouter => router_router::client(end, count),
    }
}

fn server_side(pair: Pair, end: &End, count: usize) -> anyhow::Result<()> {
    match pair {
        Pair::ReqRep => req_rep::server(end, count),
        Pair::DealerRep => dealer_rep::server(end, count),
        Pair::ReqRouter => req_router::server(end, count),
        Pair::DealerRouter => dealer_router::server(end, count),
        Pair::DealerDealer => dealer_dealer::server(end, count),
        Pair::RouterRouter => router_router::server(end, count),
    }
}

/// `Hello 1`, `Hello 2`, ...: numbered so that replies can be matched.
pub fn request(i: usize) -> Vec<u8> {
    format!("Hello {i}").into_bytes()
}

/// The reply to a numbered request: `World 1` for `Hello 1`.
pub fn reply_to(request: &[u8]) -> Vec<u8> {
    let number = request.strip_prefix(b"Hello ").unwrap_or(request);
    [b"World ".as_slice(), number].concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_frames_as_each_socket_type_sees_them() {
        let id: &[u8] = &[0x00, 0x80, 0x00, 0x41, 0xa7];
        assert_eq!(
            label_frames(zmq::ROUTER, &[id, b"", b"Hello 1"]),
            r#"identity 0x00800041a7 | delimiter | body b"Hello 1""#
        );
        assert_eq!(
            label_frames(zmq::ROUTER, &[id, b"Hello 1"]),
            r#"identity 0x00800041a7 | body b"Hello 1""#
        );
        assert_eq!(
            label_frames(zmq::ROUTER, &[b"server", b"", b"x"]),
            r#"identity 0x736572766572 (b"server") | delimiter | body b"x""#
        );
        assert_eq!(
            label_frames(zmq::DEALER, &[b"", b"Hello 1"]),
            r#"delimiter | body b"Hello 1""#
        );
        assert_eq!(label_frames(zmq::REQ, &[b"World 1"]), r#"body b"World 1""#);
    }

    #[test]
    fn replies_match_their_requests() {
        assert_eq!(reply_to(&request(3)), b"World 3");
    }
}
