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

use anyhow::{Context as _, anyhow, bail};
use serde::{Deserialize, Serialize};

use crate::lazy_pirate::{self, Policy, ReliableReq};
use crate::plumbing::logging::Count;
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
    /// With a fleet: from its first connect until every client had a reply
    /// to its first request (the connection storm), before the measured
    /// requests.
    #[serde(default)]
    pub connect_ns: Option<u64>,
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
        connect_ns: None,
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
        connect_ns: None,
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
        connect_ns: None,
    }
    .print()
}

/// Clients one `bench peer fleet` process runs at most: the bench starts
/// as many fleet processes as a step needs. Each client holds two
/// descriptors (its TCP connection and its socket's mailbox, an eventfd),
/// so 2,500 clients need some 5,000, far below a common open-files limit
/// of 20,000, where 10,000 clients in one process would not fit.
pub const CLIENTS_PER_FLEET: usize = 2_500;

/// Sockets per libzmq context: a context refuses its 1024th socket
/// (ZMQ_MAX_SOCKETS, 1023 by default, which the zmq crate cannot change).
const SOCKETS_PER_CONTEXT: usize = 1_000;

/// Descriptors a context holds besides its sockets' (mailboxes and pollers
/// of the context, its reaper and its I/O thread).
const DESCRIPTORS_PER_CONTEXT: u64 = 5;

/// What a fleet prints on stderr once every client had its first reply.
pub const CONNECTED: &str = "connected:";

/// How long the fleet waits for readiness at most, so that it looks at the
/// clock (the stall, the run's end) at least this often.
const TICK: Duration = Duration::from_millis(100);

/// Lock-step clients in one process: each a DEALER speaking as a REQ would
/// (`["", body]`), connected to every endpoint in `connect`.
///
/// Readiness comes from an epoll set holding each socket's ZMQ_FD (its
/// mailbox), so that a round costs the clients that have a reply, not all
/// of them: `zmq::poll` over 10,000 sockets asks each one every time, and
/// the load generator, not the broker, would be what is measured.
struct Clients {
    sockets: Vec<zmq::Socket>,
    /// Dropped after the sockets (they hold the contexts as well).
    _contexts: Vec<zmq::Context>,
    epoll: std::os::fd::OwnedFd,
    request: Vec<u8>,
}

impl Clients {
    /// Creates `count` sockets presenting `credentials`, not connected yet.
    fn new(count: usize, size: usize, credentials: &Credentials) -> anyhow::Result<Clients> {
        use std::os::fd::FromRawFd;
        let contexts: Vec<zmq::Context> = (0..count.div_ceil(SOCKETS_PER_CONTEXT))
            .map(|_| zmq::Context::new())
            .collect();
        // SAFETY: epoll_create1 has no preconditions; a descriptor it
        // returns is ours alone.
        let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epoll < 0 {
            return Err(std::io::Error::last_os_error()).context("creating an epoll set");
        }
        // SAFETY: a new descriptor, owned by nothing else.
        let epoll = unsafe { std::os::fd::OwnedFd::from_raw_fd(epoll) };
        let mut sockets = Vec::with_capacity(count);
        for i in 0..count {
            let socket = contexts[i / SOCKETS_PER_CONTEXT]
                .socket(zmq::DEALER)
                .map_err(|error| too_many(error, i, count))?;
            socket.set_linger(0)?;
            credentials.apply(&socket)?;
            watch_readable(&epoll, socket.get_fd()?, i)?;
            sockets.push(socket);
        }
        Ok(Clients {
            sockets,
            _contexts: contexts,
            epoll,
            request: payload(size),
        })
    }

    fn connect(&self, connect: &str) -> anyhow::Result<()> {
        for socket in &self.sockets {
            for endpoint in connect.split(',') {
                socket
                    .connect(endpoint)
                    .with_context(|| format!("connecting to {endpoint}"))?;
            }
        }
        Ok(())
    }

    fn ask(&self, client: usize) -> zmq::Result<()> {
        self.sockets[client].send_multipart([&b""[..], &self.request], 0)
    }

    /// Receives the replies waiting for `client`; how many there were.
    /// Receiving until there is none also makes libzmq clear the socket's
    /// ZMQ_FD, so that it signals again for the next reply.
    fn replies(&self, client: usize) -> zmq::Result<usize> {
        let mut count = 0;
        loop {
            match self.sockets[client].recv_multipart(zmq::DONTWAIT) {
                Ok(_) => count += 1,
                Err(zmq::Error::EAGAIN) => return Ok(count),
                Err(error) => return Err(error),
            }
        }
    }

    /// The clients whose socket has news (its ZMQ_FD is readable), waiting
    /// [`TICK`] at most; `woken` is the caller's buffer.
    fn woken(&self, woken: &mut Vec<libc::epoll_event>) -> std::io::Result<Vec<usize>> {
        use std::os::fd::AsRawFd;
        woken.resize(1024, libc::epoll_event { events: 0, u64: 0 });
        // SAFETY: the buffer holds `woken.len()` events.
        let ready = unsafe {
            libc::epoll_wait(
                self.epoll.as_raw_fd(),
                woken.as_mut_ptr(),
                woken.len() as i32,
                TICK.as_millis() as i32,
            )
        };
        if ready < 0 {
            let error = std::io::Error::last_os_error();
            return match error.kind() {
                std::io::ErrorKind::Interrupted => Ok(Vec::new()),
                _ => Err(error),
            };
        }
        Ok(woken[..ready as usize]
            .iter()
            .map(|event| event.u64 as usize)
            .collect())
    }

    /// Until every request in flight is answered, or nothing has come for
    /// `stall`: each reply to client `i` goes to `answered(i)`, which says
    /// whether that client asks again. Returns the requests left unanswered.
    fn exchange(
        &self,
        mut in_flight: usize,
        stall: Duration,
        mut answered: impl FnMut(usize) -> bool,
    ) -> anyhow::Result<usize> {
        let mut woken = Vec::new();
        let mut last_progress = Instant::now();
        while in_flight > 0 && last_progress.elapsed() < stall {
            for client in self.woken(&mut woken)? {
                // A reply may come while we send the next request: receive
                // until none is left.
                loop {
                    let replies = self.replies(client)?;
                    if replies == 0 {
                        break;
                    }
                    last_progress = Instant::now();
                    for _ in 0..replies {
                        in_flight = in_flight.saturating_sub(1);
                        if answered(client) {
                            self.ask(client)?;
                            in_flight += 1;
                        }
                    }
                }
            }
        }
        Ok(in_flight)
    }
}

/// Registers `fd` (a socket's ZMQ_FD) in `epoll`, tagged `client`.
fn watch_readable(epoll: &std::os::fd::OwnedFd, fd: i32, client: usize) -> anyhow::Result<()> {
    use std::os::fd::AsRawFd;
    let mut event = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: client as u64,
    };
    // SAFETY: a valid epoll set, a descriptor libzmq keeps open for the
    // socket's life, and an event we own.
    if unsafe { libc::epoll_ctl(epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event) } != 0 {
        return Err(std::io::Error::last_os_error()).context("watching a socket's ZMQ_FD");
    }
    Ok(())
}

/// A socket that could not be created: libzmq says EMFILE both when the
/// process is out of descriptors and when the context is out of sockets.
fn too_many(error: zmq::Error, index: usize, count: usize) -> anyhow::Error {
    let open = crate::plumbing::limits::open_files_in_use()
        .map_or_else(String::new, |open| format!("; {open} descriptors are open"));
    let limit = crate::plumbing::limits::open_files()
        .map_or_else(|_| String::new(), |limit| format!(" of {}", limit.soft));
    anyhow!(
        "creating client {} of {count}: {error}{open}{limit}",
        index + 1
    )
}

/// Says whether `clients` clients fit in this process's open-files limit,
/// before any is created: one clear line instead of a failure half-way.
fn check_open_files(clients: usize) -> anyhow::Result<()> {
    use crate::plumbing::limits;
    let limit = limits::try_raise_open_files()?;
    let contexts = clients.div_ceil(SOCKETS_PER_CONTEXT) as u64;
    let in_use = limits::open_files_in_use().unwrap_or(16);
    let needed = 2 * clients as u64 + DESCRIPTORS_PER_CONTEXT * contexts + in_use + 1;
    if needed > limit.soft {
        bail!(
            "{clients} clients need about {needed} open files (each a TCP connection and a \
             libzmq mailbox), and this process may open {} (the open-files limit): {}, or \
             run fewer clients per process (the bench runs {CLIENTS_PER_FLEET})",
            limit.soft,
            limit.how_to_raise()
        );
    }
    Ok(())
}

/// `clients` lock-step clients in one process (see `Clients`), through
/// a broker, presenting `credentials`. `connect` may name several brokers,
/// separated by commas: each client connects to all, and libzmq sends to
/// them in turn.
///
/// First the connection storm: every client connects and sends one
/// request, and once each has had its reply the fleet prints
/// [`CONNECTED`] and the time that took on stderr. Then, at once or, with
/// `wait_for_go`, on SIGUSR1 (so that the bench starts several fleets
/// together), the measured part: `requests` each, asking for `run` at most.
/// Stops when all are answered or nothing has moved for `stall`, and
/// prints its [`Outcome`].
#[allow(clippy::too_many_arguments)]
pub fn fleet(
    connect: &str,
    clients: usize,
    requests: u64,
    size: usize,
    stall: Duration,
    run: Duration,
    credentials: &Credentials,
    wait_for_go: bool,
) -> anyhow::Result<()> {
    // Installed before anyone can send it: SIGUSR1 would end the process.
    let mut go = signal_hook::iterator::Signals::new([signal_hook::consts::SIGUSR1])?;
    check_open_files(clients)?;
    let fleet = Clients::new(clients, size, credentials)?;

    let storm = Instant::now();
    fleet.connect(connect)?;
    for client in 0..clients {
        fleet.ask(client)?;
    }
    let unanswered = fleet.exchange(clients, stall, |_| false)?;
    if unanswered > 0 {
        bail!(
            "{unanswered} of {} had no reply to their first request within {} s: not \
             connected (the broker's log says why: open files, its listen backlog), or no \
             worker answered",
            Count::new(clients as u64, "client"),
            stall.as_secs()
        );
    }
    let connect_ns = ns(storm.elapsed());
    eprintln!(
        "{CONNECTED} {} answered once, {:.0} ms after the first connect",
        Count::new(clients as u64, "client"),
        connect_ns as f64 / 1e6
    );
    if wait_for_go {
        go.forever().next();
    }

    let mut asked = vec![Instant::now(); clients];
    let mut sent = vec![0u64; clients];
    let mut finished: Option<Duration> = None;
    let mut rtts = Vec::with_capacity(clients * requests as usize);
    let mut answered_at = Vec::with_capacity(clients * requests as usize);
    let started = Instant::now();
    for client in 0..clients {
        asked[client] = Instant::now();
        fleet.ask(client)?;
        sent[client] = 1;
    }
    fleet.exchange(clients, stall, |client| {
        let now = Instant::now();
        rtts.push(ns(now - asked[client]));
        let at = now - started;
        answered_at.push(at);
        if sent[client] < requests && at < run {
            asked[client] = now;
            sent[client] += 1;
            true
        } else {
            // The first client to finish ends the window in which all
            // were asking.
            finished.get_or_insert(at);
            false
        }
    })?;
    let elapsed = started.elapsed();
    let first_done = finished.unwrap_or(elapsed);
    let in_window = answered_at.iter().filter(|&&at| at <= first_done).count() as u64;
    Outcome {
        elapsed_ns: ns(elapsed),
        rtts_ns: rtts,
        sent: sent.iter().sum(),
        window: Some((ns(first_done), in_window)),
        connect_ns: Some(connect_ns),
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
