//! The baselines and load generators of the benchmark, run as child
//! processes of the bench binary itself (`bench peer <kind> ...`), so that
//! every variant of a scenario has the same shape: separate processes
//! talking over TCP on 127.0.0.1.
//!
//! Servers print `listening on <endpoint>` on stderr when ready and run
//! until killed. Clients print one JSON [`Outcome`] line on stdout.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

use crate::security::credentials::Credentials;

/// What a load-generating peer measured.
#[derive(Debug, Serialize, Deserialize)]
pub struct Outcome {
    /// From the first request sent to the last reply received.
    pub elapsed_ns: u64,
    /// Round-trip time of each answered request.
    pub rtts_ns: Vec<u64>,
    /// Requests sent.
    pub sent: u64,
    /// With several clients: until when all of them were still asking (the
    /// first one to finish ends the window), and the replies in it. Counting
    /// only that window keeps the lonely tail of the last clients out of the
    /// throughput.
    #[serde(default)]
    pub window: Option<(u64, u64)>,
}

impl Outcome {
    fn print(&self) -> anyhow::Result<()> {
        println!("{}", serde_json::to_string(self)?);
        Ok(())
    }
}

fn ns(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

fn payload(size: usize) -> Vec<u8> {
    (0..size).map(|i| b"Hello"[i % 5]).collect()
}

fn listening(endpoint: &str) {
    eprintln!("listening on {endpoint}");
}

/// A bare REP socket: receive, answer `World`. The ceiling for lock-step
/// REQ/REP: the least code libzmq can be driven with.
pub fn rep_bare(bind: &str) -> anyhow::Result<()> {
    let ctx = zmq::Context::new();
    let rep = ctx.socket(zmq::REP)?;
    rep.bind(bind)?;
    listening(&crate::plumbing::endpoint::last_endpoint(&rep));
    let mut message = zmq::Message::new();
    loop {
        rep.recv(&mut message, 0)?;
        rep.send("World", 0)?;
    }
}

/// A bare REQ socket: `count` lock-step round trips of `size` bytes.
pub fn req_bare(connect: &str, count: u64, size: usize) -> anyhow::Result<()> {
    let ctx = zmq::Context::new();
    let req = ctx.socket(zmq::REQ)?;
    req.set_linger(0)?;
    req.connect(connect)?;
    let request = payload(size);
    let mut reply = zmq::Message::new();
    let mut rtts = Vec::with_capacity(count as usize);
    let started = Instant::now();
    for _ in 0..count {
        let asked = Instant::now();
        req.send(&request[..], 0)?;
        req.recv(&mut reply, 0)?;
        rtts.push(ns(asked.elapsed()));
    }
    Outcome {
        elapsed_ns: ns(started.elapsed()),
        rtts_ns: rtts,
        sent: count,
        window: None,
    }
    .print()
}

/// A plain TCP server: read `size` bytes, answer 5. The transport's limit.
pub fn tcp_server(bind: &str, size: usize) -> anyhow::Result<()> {
    let listener = TcpListener::bind(bind).with_context(|| format!("binding {bind}"))?;
    listening(&format!("tcp://{}", listener.local_addr()?));
    let (mut stream, _) = listener.accept()?;
    stream.set_nodelay(true)?;
    let mut request = vec![0u8; size];
    loop {
        if stream.read_exact(&mut request).is_err() {
            return Ok(()); // the client is done
        }
        stream.write_all(b"World")?;
    }
}

/// A plain TCP client (TCP_NODELAY): `count` lock-step round trips.
pub fn tcp_client(connect: &str, count: u64, size: usize) -> anyhow::Result<()> {
    let address = connect.strip_prefix("tcp://").unwrap_or(connect);
    let mut stream =
        TcpStream::connect(address).with_context(|| format!("connecting to {address}"))?;
    stream.set_nodelay(true)?;
    let request = payload(size);
    let mut reply = [0u8; 5];
    let mut rtts = Vec::with_capacity(count as usize);
    let started = Instant::now();
    for _ in 0..count {
        let asked = Instant::now();
        stream.write_all(&request)?;
        stream.read_exact(&mut reply)?;
        rtts.push(ns(asked.elapsed()));
    }
    Outcome {
        elapsed_ns: ns(started.elapsed()),
        rtts_ns: rtts,
        sent: count,
        window: None,
    }
    .print()
}

/// libzmq's built-in forwarder, `zmq::proxy(ROUTER, DEALER)`: the ceiling
/// for the broker.
pub fn proxy(frontend: &str, backend: &str) -> anyhow::Result<()> {
    let ctx = zmq::Context::new();
    let front = ctx.socket(zmq::ROUTER)?;
    let back = ctx.socket(zmq::DEALER)?;
    front.bind(frontend)?;
    back.bind(backend)?;
    listening(&format!(
        "{} {}",
        crate::plumbing::endpoint::last_endpoint(&front),
        crate::plumbing::endpoint::last_endpoint(&back)
    ));
    zmq::proxy(&front, &back)?;
    Ok(())
}

/// A ROUTER that answers every message at once with the same frames: an
/// asynchronous server for the pipelining scenario.
pub fn router_echo(bind: &str) -> anyhow::Result<()> {
    let ctx = zmq::Context::new();
    let router = ctx.socket(zmq::ROUTER)?;
    router.bind(bind)?;
    listening(&crate::plumbing::endpoint::last_endpoint(&router));
    loop {
        let message = router.recv_multipart(0)?;
        router.send_multipart(message, 0)?;
    }
}

/// A DEALER keeping `window` requests in flight, `count` in all. Each body
/// starts with its sequence number, which the echoed reply brings back.
pub fn dealer_pipeline(connect: &str, count: u64, window: u64, size: usize) -> anyhow::Result<()> {
    let ctx = zmq::Context::new();
    let dealer = ctx.socket(zmq::DEALER)?;
    dealer.set_linger(0)?;
    dealer.set_rcvtimeo(10_000)?;
    dealer.connect(connect)?;
    let padding = payload(size.saturating_sub(8));
    let mut sent_at = Vec::with_capacity(count as usize);
    let mut rtts = Vec::with_capacity(count as usize);
    let started = Instant::now();
    let mut sent = 0u64;
    while (rtts.len() as u64) < count {
        while sent < count && sent - (rtts.len() as u64) < window {
            sent_at.push(Instant::now());
            dealer.send_multipart([&sent.to_le_bytes()[..], &padding], 0)?;
            sent += 1;
        }
        let reply = match dealer.recv_multipart(0) {
            Ok(reply) => reply,
            Err(zmq::Error::EAGAIN) => break, // lost: reported by the count
            Err(error) => return Err(error.into()),
        };
        let seq = reply
            .first()
            .and_then(|frame| frame.get(..8))
            .map(|bytes| u64::from_le_bytes(bytes.try_into().unwrap_or_default()));
        match seq.and_then(|seq| sent_at.get(seq as usize)) {
            Some(at) => rtts.push(ns(at.elapsed())),
            None => bail!("a reply without a known sequence number"),
        }
    }
    Outcome {
        elapsed_ns: ns(started.elapsed()),
        rtts_ns: rtts,
        sent,
        window: None,
    }
    .print()
}

/// `clients` lock-step clients in one process, each a DEALER speaking as a
/// REQ would (`["", body]`), `requests` each, through a broker, presenting
/// `credentials`. Stops when all are answered or nothing has moved for
/// `stall`.
pub fn fleet(
    connect: &str,
    clients: usize,
    requests: u64,
    size: usize,
    stall: Duration,
    credentials: &Credentials,
) -> anyhow::Result<()> {
    // libzmq allows 1023 sockets per context by default: spread them.
    const PER_CONTEXT: usize = 500;
    let contexts: Vec<zmq::Context> = (0..clients.div_ceil(PER_CONTEXT))
        .map(|_| zmq::Context::new())
        .collect();
    let mut sockets = Vec::with_capacity(clients);
    for i in 0..clients {
        let socket = contexts[i / PER_CONTEXT].socket(zmq::DEALER)?;
        socket.set_linger(0)?;
        credentials.apply(&socket)?;
        socket.connect(connect)?;
        sockets.push(socket);
    }
    let body = payload(size);
    let mut asked = vec![Instant::now(); clients];
    let mut sent = vec![0u64; clients];
    let mut finished: Vec<Option<Duration>> = vec![None; clients];
    let mut rtts = Vec::with_capacity(clients * requests as usize);
    let mut answered_at = Vec::with_capacity(clients * requests as usize);
    let started = Instant::now();
    for (i, socket) in sockets.iter().enumerate() {
        asked[i] = Instant::now();
        socket.send_multipart([&b""[..], &body], 0)?;
        sent[i] = 1;
    }
    let total = clients as u64 * requests;
    let mut last_progress = Instant::now();
    while (rtts.len() as u64) < total && last_progress.elapsed() < stall {
        let mut items: Vec<zmq::PollItem> = sockets
            .iter()
            .map(|s| s.as_poll_item(zmq::POLLIN))
            .collect();
        zmq::poll(&mut items, 100)?;
        let ready: Vec<usize> = items
            .iter()
            .enumerate()
            .filter(|(_, item)| item.is_readable())
            .map(|(i, _)| i)
            .collect();
        drop(items);
        for i in ready {
            while let Ok(_reply) = sockets[i].recv_multipart(zmq::DONTWAIT) {
                rtts.push(ns(asked[i].elapsed()));
                answered_at.push(started.elapsed());
                last_progress = Instant::now();
                if sent[i] < requests {
                    asked[i] = Instant::now();
                    sockets[i].send_multipart([&b""[..], &body], 0)?;
                    sent[i] += 1;
                } else {
                    finished[i] = Some(started.elapsed());
                }
            }
        }
    }
    let elapsed = started.elapsed();
    let first_done = finished.iter().flatten().min().copied().unwrap_or(elapsed);
    let in_window = answered_at.iter().filter(|&&at| at <= first_done).count() as u64;
    Outcome {
        elapsed_ns: ns(elapsed),
        rtts_ns: rtts,
        sent: sent.iter().sum(),
        window: Some((ns(first_done), in_window)),
    }
    .print()
}
