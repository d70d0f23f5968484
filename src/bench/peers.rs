//! The baselines and load generators of the benchmark, run as child
//! processes of the bench binary itself (`bench peer <kind> ...`), so that
//! every variant of a scenario has the same shape: separate processes
//! talking over TCP on 127.0.0.1.
//!
//! Servers print `listening on <endpoint>` on stderr when ready and run
//! until killed. Clients print one JSON [`Outcome`] line on stdout (the
//! failover clients a [`Trace`]).
//!
//! Every load generator stops at its request count or, sooner, once it has
//! been asking for `run` (`bench --run-ms`): it sends no new request after
//! that and waits for those in flight. Every variant of a scenario gets the
//! same time, so their ratios compare like with like, and a fast variant
//! no longer makes the bench take minutes.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

use crate::lazy_pirate::{self, Policy, ReliableReq};
use crate::plumbing::shutdown::Shutdown;
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

/// `size` bytes of "HelloHello...", the request body of every load
/// generator (and of the role clients' `--message-file`).
pub(super) fn payload(size: usize) -> Vec<u8> {
    (0..size).map(|i| b"Hello"[i % 5]).collect()
}

fn listening(endpoint: &str) {
    eprintln!("listening on {endpoint}");
}

/// A bare REP socket: receive, answer `World`. The baseline for lock-step
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

/// A bare REQ socket: `count` lock-step round trips of `size` bytes, for
/// `run` at most.
pub fn req_bare(connect: &str, count: u64, size: usize, run: Duration) -> anyhow::Result<()> {
    let ctx = zmq::Context::new();
    let req = ctx.socket(zmq::REQ)?;
    req.set_linger(0)?;
    req.connect(connect)?;
    let request = payload(size);
    let mut reply = zmq::Message::new();
    let mut rtts = Vec::with_capacity(count as usize);
    let started = Instant::now();
    // At least one, however short `run` is.
    while (rtts.len() as u64) < count && (rtts.is_empty() || started.elapsed() < run) {
        let asked = Instant::now();
        req.send(&request[..], 0)?;
        req.recv(&mut reply, 0)?;
        rtts.push(ns(asked.elapsed()));
    }
    Outcome {
        elapsed_ns: ns(started.elapsed()),
        sent: rtts.len() as u64,
        rtts_ns: rtts,
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

/// A plain TCP client (TCP_NODELAY): `count` lock-step round trips, for
/// `run` at most.
pub fn tcp_client(connect: &str, count: u64, size: usize, run: Duration) -> anyhow::Result<()> {
    let address = connect.strip_prefix("tcp://").unwrap_or(connect);
    let mut stream =
        TcpStream::connect(address).with_context(|| format!("connecting to {address}"))?;
    stream.set_nodelay(true)?;
    let request = payload(size);
    let mut reply = [0u8; 5];
    let mut rtts = Vec::with_capacity(count as usize);
    let started = Instant::now();
    // At least one, however short `run` is.
    while (rtts.len() as u64) < count && (rtts.is_empty() || started.elapsed() < run) {
        let asked = Instant::now();
        stream.write_all(&request)?;
        stream.read_exact(&mut reply)?;
        rtts.push(ns(asked.elapsed()));
    }
    Outcome {
        elapsed_ns: ns(started.elapsed()),
        sent: rtts.len() as u64,
        rtts_ns: rtts,
        window: None,
    }
    .print()
}

/// libzmq's built-in forwarder, `zmq::proxy(ROUTER, DEALER)`: the baseline
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

/// A DEALER keeping `window` requests in flight, `count` in all, sending
/// for `run` at most. Each body starts with its sequence number, which the
/// echoed reply brings back.
pub fn dealer_pipeline(
    connect: &str,
    count: u64,
    window: u64,
    size: usize,
    run: Duration,
) -> anyhow::Result<()> {
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
    loop {
        while sent < count
            && sent - (rtts.len() as u64) < window
            && (sent == 0 || started.elapsed() < run)
        {
            sent_at.push(Instant::now());
            dealer.send_multipart([&sent.to_le_bytes()[..], &padding], 0)?;
            sent += 1;
        }
        if rtts.len() as u64 == sent {
            break;
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
/// REQ would (`["", body]`), `requests` each (asking for `run` at most),
/// through a broker, presenting `credentials`. `connect` may name several
/// brokers, separated by commas: each DEALER connects to all, and sends to
/// them in turn. Stops when all are answered or nothing has moved for
/// `stall`.
pub fn fleet(
    connect: &str,
    clients: usize,
    requests: u64,
    size: usize,
    stall: Duration,
    run: Duration,
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
        for endpoint in connect.split(',') {
            socket.connect(endpoint)?;
        }
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
    let mut last_progress = Instant::now();
    // Until every request sent is answered: each client has one in flight
    // until it stops asking.
    while sent.iter().sum::<u64>() > rtts.len() as u64 && last_progress.elapsed() < stall {
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
                if sent[i] < requests && started.elapsed() < run {
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

/// What the failover clients saw: for each client, when each reply came
/// (on the wall clock, which the bench shares with this process, so that
/// it can set them against the moments it killed a broker).
#[derive(Debug, Serialize, Deserialize)]
pub struct Trace {
    /// From the first request to the last reply.
    pub elapsed_ns: u64,
    /// Per client: the time of each reply, in ns since the Unix epoch.
    pub replies_at_unix_ns: Vec<Vec<u64>>,
    /// Round-trip time of each answered request, resends included.
    pub rtts_ns: Vec<u64>,
    /// Requests sent.
    pub sent: u64,
    /// Resends after a timeout.
    pub resends: u64,
    /// Requests given up after every retry: lost.
    pub lost: u64,
}

/// Nanoseconds since the Unix epoch, the clock shared with the bench.
pub fn unix_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, ns)
}

/// `clients` lock-step Lazy Pirate clients, each the suite's own
/// [`ReliableReq`] (a REQ socket with ZMQ_REQ_RELAXED and
/// ZMQ_REQ_CORRELATE for each broker in `connect`), asking until
/// SIGTERM; then prints its [`Trace`]. Prints `running` on stderr once
/// every client has had a reply.
pub fn failover_clients(
    connect: &str,
    clients: usize,
    timeout_ms: u64,
    retries: u32,
    size: usize,
) -> anyhow::Result<()> {
    let shutdown = Shutdown::on_signals()?;
    let endpoints: Vec<String> = connect.split(',').map(str::to_owned).collect();
    let ctx = zmq::Context::new();
    let body = payload(size);
    let started = Instant::now();
    let (first_replies, first_reply) = std::sync::mpsc::channel();
    let policy = Policy::new(timeout_ms, retries);
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (ctx, endpoints, body, shutdown) = (
                ctx.clone(),
                endpoints.clone(),
                body.clone(),
                shutdown.clone(),
            );
            let first_replies = first_replies.clone();
            std::thread::spawn(move || {
                one_failover_client(&ctx, &endpoints, policy, &body, &shutdown, &first_replies)
            })
        })
        .collect();
    drop(first_replies);
    for _ in 0..clients {
        if first_reply.recv().is_err() {
            break;
        }
    }
    eprintln!("running");
    let mut trace = Trace {
        elapsed_ns: 0,
        replies_at_unix_ns: Vec::with_capacity(clients),
        rtts_ns: Vec::new(),
        sent: 0,
        resends: 0,
        lost: 0,
    };
    for thread in threads {
        let joined = thread
            .join()
            .map_err(|_| anyhow::anyhow!("a failover client panicked"))?;
        let client = joined?;
        trace.replies_at_unix_ns.push(client.replies_at);
        trace.rtts_ns.extend(client.rtts);
        // A request cut short by SIGTERM left, but nobody waits for it.
        trace.sent += client.sent;
        trace.resends += client.resends;
        trace.lost += client.lost;
    }
    trace.elapsed_ns = ns(started.elapsed());
    println!("{}", serde_json::to_string(&trace)?);
    Ok(())
}

/// What one failover client saw (see [`Trace`]).
#[derive(Default)]
struct OneClient {
    replies_at: Vec<u64>,
    rtts: Vec<u64>,
    sent: u64,
    resends: u64,
    lost: u64,
}

/// One of [`failover_clients`]: lock-step requests until `shutdown`; says
/// on `first_reply` when it has had its first reply.
fn one_failover_client(
    ctx: &zmq::Context,
    endpoints: &[String],
    policy: Policy,
    body: &[u8],
    shutdown: &Shutdown,
    first_reply: &std::sync::mpsc::Sender<()>,
) -> anyhow::Result<OneClient> {
    let mut req = ReliableReq::connect(ctx, endpoints, policy)?;
    let mut client = OneClient::default();
    let mut seq = 0;
    while !shutdown.requested() {
        seq += 1;
        let asked = Instant::now();
        match req.request(body, seq, shutdown) {
            Ok(lazy_pirate::Outcome::Reply(_)) => {
                client.rtts.push(ns(asked.elapsed()));
                client.replies_at.push(unix_ns());
                if client.replies_at.len() == 1 {
                    let _ = first_reply.send(());
                }
            }
            Ok(lazy_pirate::Outcome::Stopped) => break,
            // Given up after every retry: lost; the next request goes on.
            Err(error) if error.is::<lazy_pirate::GaveUp>() => client.lost += 1,
            Err(error) => return Err(error),
        }
    }
    (client.sent, client.resends) = (req.sent(), req.resends());
    Ok(client)
}
