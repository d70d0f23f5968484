//! The reliable request: a REQ socket that gives up waiting and tries again
//! (the "Lazy Pirate" pattern of the ZeroMQ guide, chapter 4).
//!
//! A plain REQ socket waits for its reply forever. If the server dies with the
//! request in hand, or hangs, the client hangs with it, and because REQ must
//! alternate send and receive, it cannot even resend. The cure:
//!
//! 1. send the request and wait for the reply, but only for `--timeout-ms`;
//! 2. on a timeout, send the request again (to the next server, when there
//!    are several);
//! 3. after `--retries` further attempts, give up with an error.
//!
//! Two options of libzmq's REQ socket make step 2 possible and safe:
//!
//! - **ZMQ_REQ_RELAXED** lets the REQ send again although the last request
//!   got no reply (a strict REQ refuses with EFSM).
//! - **ZMQ_REQ_CORRELATE** puts a request id (4 bytes, a new one for every
//!   send) in front of the envelope: `[id, "", body]` instead of `["", body]`.
//!   A REP server returns the envelope with its reply, and a broker passes
//!   envelopes through untouched, so the reply carries the id home, and the
//!   REQ drops every reply whose id is not the one of its last send. A late
//!   reply to an abandoned request, or a second copy of a reply (a buggy or
//!   hostile peer sent it twice), can never be taken for the answer to a
//!   later request. Without it a REQ only checks that the reply came back
//!   over the connection the request left by, which a duplicate does.
//!
//! The guide's `lpclient` does step 2 differently: it closes the socket and
//! opens and connects a new one. That is safe as well (a late reply is
//! addressed to a socket that no longer exists). Here, with one server, the
//! socket stays, and a stale reply is recognised by its id, not by its
//! socket being gone; with several, the client does both (see below).
//!
//! This gives *at least once*, not exactly once: a resend may reach a server
//! that did the work already, or is still doing it, so the work may be done
//! twice, even though the client takes one reply. Work that must not be
//! repeated needs request ids the server remembers.
//!
//! ## Sending only to a server that is there
//!
//! A REQ socket takes a request whether a server is connected or not:
//! libzmq queues it, and sends it once a connection comes up. With no
//! server running, the client would wait out its timeout and report "no
//! reply" for a request that never left. So the client sends a request only
//! over a connection that is up, that is, whose ZeroMQ handshake is done
//! (the greetings and commands both sides exchange before any message, in
//! which each learns the other's socket type and security), and a request
//! that finds no server connected for a whole timeout is reported as
//! "could not send", not as unanswered. How the client knows: libzmq
//! reports each connection's events to a socket monitor, which a thread
//! reads (`src/security/handshake.rs`, which also explains a refusal); a
//! connection is up from its HANDSHAKE_SUCCEEDED event until its
//! DISCONNECTED.
//!
//! libzmq has an option for this, **ZMQ_IMMEDIATE** (queue messages only
//! for connections that are up), and the client does not set it, for a
//! reason worth knowing: in libzmq 4.3, when a connection of a socket with
//! ZMQ_IMMEDIATE ends, whatever arrived on it and was not read yet is
//! thrown away (`session_base.cpp`, `reconnect`). A server that replies and
//! then exits (or crashes) closes its connection right after its reply, and
//! a client whose own thread had not read the reply yet when libzmq saw the
//! connection end (it was busy, or not scheduled for a moment) would lose a
//! reply that had reached it: 3 and 5 in two series of 100 runs of
//! `reqrep_server --crash-after 1`, on a loaded machine. Without the option,
//! a reply stays in the socket until it is read, and none was lost in 200.
//!
//! ## Several servers
//!
//! With `--connect A,B`, the client opens one REQ socket per server and
//! takes turns itself: each request goes to the next server, in the order of
//! `--connect`, whose connection is up, and so does a resend, so with A hung
//! the resend reaches B. One REQ connected to both would take turns as well
//! (round robin over its connections), but it never says which server a
//! request went to, so the client could not tell which one failed to answer.
//!
//! And that matters when a server is stopped (SIGSTOP, `docker compose
//! pause`, a laptop's lid, a debugger) rather than dead: its kernel keeps its
//! connections open and takes in what is sent, so nothing tells it from a
//! slow server until libzmq's ZMTP heartbeats give up on it, after up to 40 s
//! (`src/plumbing/keepalive.rs`), and every request whose turn it is costs a
//! timeout. So after a timeout, the client closes that server's socket and
//! opens a new one (as the guide's `lpclient` does), and the server gets no
//! request until the new connection is up. A running server completes the
//! ZeroMQ handshake at once (its libzmq's I/O thread does, even while its
//! own loop is stuck: a stuck server still costs a timeout at each of its
//! turns); a stopped process cannot, whatever its kernel accepts. A stopped
//! server thus costs each client at most one timeout, and gets its turns
//! again as soon as it runs (the client logs `a new connection is up; back
//! in turn`). This is the first model of the guide's Freelance pattern
//! (chapter 4: try the next server, one socket each), with the handshake as
//! the sign of life a stopped process cannot fake; the guide's third model
//! pings its servers instead.
//!
//! The price: a reply to the closed socket is lost (the server's REP or
//! broker finds its peer gone, or the reply had arrived and goes with the
//! socket). The client takes the resend's reply, as it would with one
//! socket, where the REQ drops the late one for its old id; a server slower
//! than the timeout works for nothing either way.
//!
//! With one server, the one socket serves every request and every resend:
//! a resend to a hung server goes over the same connection, and a late
//! reply is told by its id.
//!
//! With `--timeout-ms 0` the socket waits forever: the naive client, kept so
//! that students can watch it hang first. It is a plain REQ, as the course's
//! pyzmq client is (no RELAXED, no CORRELATE, no waiting for a connection:
//! libzmq queues the request until one is up), one socket connected to every
//! server, which libzmq's REQ serves in turn: it sends exactly the same
//! bytes.

use std::fmt;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::LINGER_MS;
use crate::plumbing::connection::{Link, Links};
use crate::plumbing::exit::UsageError;
use crate::plumbing::keepalive;
use crate::plumbing::logging::Count;
use crate::plumbing::shutdown::{CHECK_INTERVAL_MS, Shutdown};
use crate::security::{credentials, handshake};

/// How patient the client is.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    /// How long to wait for each reply (and for a server to send to);
    /// `None` waits forever.
    pub timeout: Option<Duration>,
    /// Further attempts at one request before giving up.
    pub retries: u32,
}

impl Policy {
    /// `--timeout-ms` and `--retries`, with 0 ms meaning "wait forever".
    pub fn new(timeout_ms: u64, retries: u32) -> Self {
        let timeout = (timeout_ms > 0).then(|| Duration::from_millis(timeout_ms));
        Self { timeout, retries }
    }
}

/// What became of one request.
#[derive(Debug)]
pub enum Outcome {
    /// The reply's frames.
    Reply(Vec<Vec<u8>>),
    /// Ctrl-C or SIGTERM arrived while waiting.
    Stopped,
}

/// Why the client gave up on a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unanswered {
    /// No attempt could send it: no server was connected.
    NeverSent,
    /// It was sent (at least once) and no reply came; `then_unconnected`
    /// says that the last attempt found no server connected.
    NoReply {
        /// The last attempt could not send it.
        then_unconnected: bool,
    },
}

/// The last attempt at a request failed too.
#[derive(Debug)]
pub struct GaveUp {
    /// The request's sequence number.
    pub seq: u64,
    /// Attempts at the request, the first one included.
    pub attempts: u32,
    /// The wait of each.
    pub timeout: Duration,
    /// Where it was to be sent.
    pub endpoints: String,
    /// Whether it ever left.
    pub why: Unanswered,
}

impl fmt::Display for GaveUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (seq, endpoints) = (self.seq, &self.endpoints);
        let attempts = Count::new(u64::from(self.attempts), "attempt");
        let ms = self.timeout.as_millis();
        match self.why {
            Unanswered::NeverSent if crate::security::handshake::refused() => write!(
                f,
                "could not send request #{seq}: {endpoints} refused this client during the \
                 ZeroMQ handshake ({attempts}, each waiting {ms} ms; the warning above says why)"
            ),
            Unanswered::NeverSent => write!(
                f,
                "could not send request #{seq}: no server connected at {endpoints} \
                 ({attempts}, each waiting {ms} ms for a connection; --timeout-ms, \
                 --retries); is the server running, and is the address right?"
            ),
            Unanswered::NoReply { then_unconnected } => {
                write!(
                    f,
                    "no reply to request #{seq} from {endpoints} after {attempts}, \
                     each waiting {ms} ms (--timeout-ms, --retries): sent, but not answered \
                     (a server busy or hung, or a broker without workers)"
                )?;
                if then_unconnected {
                    f.write_str("; then no server was connected at all")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for GaveUp {}

/// What one attempt came to.
enum Attempt {
    Reply(Vec<Vec<u8>>),
    /// No server was connected for the whole wait.
    NotSent,
    /// Sent (to the server at this index of [`ReliableReq::servers`]); no
    /// reply within the wait.
    NoReply(usize),
    Stopped,
}

/// A REQ socket and the server(s) it is connected to.
struct Server {
    socket: zmq::Socket,
    /// Whether its connection is up, as its monitor's thread sees it (see
    /// the module docs).
    link: Link,
    /// The one endpoint this socket is connected to, when there is a socket
    /// per server; `None` for one socket connected to every endpoint.
    endpoint: Option<String>,
    /// It replaced a socket that got no reply in time, and has not had a
    /// request yet: the log says so when it gets one.
    replaced: bool,
}

impl Server {
    /// A REQ socket for `policy`, watched, connected to `endpoints`.
    fn open(
        ctx: &zmq::Context,
        links: &Links,
        policy: Policy,
        wake_ms: i32,
        endpoints: &[String],
        own: bool,
    ) -> anyhow::Result<Server> {
        let socket = ctx.socket(zmq::REQ)?;
        if policy.timeout.is_some() {
            socket.set_req_relaxed(true)?; // may resend without a reply
            socket.set_req_correlate(true)?; // and knows which reply is whose
            // At exit, a request nobody answered in time is not worth waiting for.
            socket.set_linger(0)?;
        } else {
            socket.set_linger(LINGER_MS)?;
        }
        socket.set_sndtimeo(wake_ms)?;
        socket.set_rcvtimeo(wake_ms)?;
        keepalive::enable(&socket)?; // an idle client keeps its connection (src/plumbing/keepalive.rs)
        // What the server may ask for (src/security/), and the monitor that
        // says whether a connection is up and explains a refusal.
        let mechanism = credentials::apply(&socket)?;
        let link = links.link();
        handshake::watch_linked(ctx, &socket, mechanism, &link);
        for endpoint in endpoints {
            socket
                .connect(endpoint)
                .map_err(UsageError::at("--connect", endpoint))?;
        }
        Ok(Server {
            socket,
            link,
            endpoint: own.then(|| endpoints[0].clone()),
            replaced: false,
        })
    }
}

/// The REQ socket(s), kept for every request and every resend: one
/// connected to every server, or one per server (see the module docs).
pub struct ReliableReq {
    ctx: zmq::Context,
    endpoints: String,
    policy: Policy,
    /// The connection state of every socket's connections.
    links: Links,
    servers: Vec<Server>,
    /// Whose turn it is, with a socket per server.
    next: usize,
    /// How long a blocking send or receive waits before looking at the
    /// clock and the stop flag again.
    wake_ms: i32,
    sent: u64,
    resends: u64,
}

impl ReliableReq {
    /// Opens the REQ socket(s): one connected to every endpoint, or, with a
    /// timeout and several endpoints, one connected to each.
    pub fn connect(
        ctx: &zmq::Context,
        endpoints: &[String],
        policy: Policy,
    ) -> anyhow::Result<Self> {
        // Wake up often enough to notice Ctrl-C and to keep the deadline.
        let wake_ms = policy.timeout.map_or(CHECK_INTERVAL_MS, |timeout| {
            i32::try_from(timeout.as_millis())
                .map_or(CHECK_INTERVAL_MS, |ms| ms.min(CHECK_INTERVAL_MS))
        });
        let one_each = policy.timeout.is_some() && endpoints.len() > 1;
        let groups: Vec<&[String]> = if one_each {
            endpoints.chunks(1).collect()
        } else {
            vec![endpoints]
        };
        let links = Links::new();
        let servers = groups
            .into_iter()
            .map(|group| Server::open(ctx, &links, policy, wake_ms, group, one_each))
            .collect::<anyhow::Result<Vec<Server>>>()?;
        Ok(Self {
            ctx: ctx.clone(),
            endpoints: endpoints.join(", "),
            policy,
            links,
            servers,
            next: 0,
            wake_ms,
            sent: 0,
            resends: 0,
        })
    }

    /// Requests that left the client, each counted once however often it
    /// was resent.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Resends so far, over all requests.
    pub fn resends(&self) -> u64 {
        self.resends
    }

    /// Sends `request` (number `seq`, for the log) and returns its reply,
    /// resending after each timeout.
    pub fn request(
        &mut self,
        request: &[u8],
        seq: u64,
        shutdown: &Shutdown,
    ) -> anyhow::Result<Outcome> {
        let mut attempt = 1;
        let mut ever_sent = false;
        loop {
            let missed = match self.attempt(request, &mut ever_sent, shutdown)? {
                Attempt::Reply(reply) => return Ok(Outcome::Reply(reply)),
                Attempt::Stopped => return Ok(Outcome::Stopped),
                missed => missed,
            };
            let timeout = self.policy.timeout.unwrap_or_default();
            let not_sent = matches!(missed, Attempt::NotSent);
            if attempt > self.policy.retries {
                let why = if ever_sent {
                    Unanswered::NoReply {
                        then_unconnected: not_sent,
                    }
                } else {
                    Unanswered::NeverSent
                };
                return Err(GaveUp {
                    seq,
                    attempts: attempt,
                    timeout,
                    endpoints: self.endpoints.clone(),
                    why,
                }
                .into());
            }
            let ms = timeout.as_millis();
            let retries = Count::irregular(u64::from(self.policy.retries), "retry", "retries");
            if not_sent && crate::security::handshake::refused() {
                warn!(
                    "could not send request #{seq}: refused at the handshake (see above), no \
                     server connected at {} within {ms} ms; trying again ({attempt} of {retries})",
                    self.endpoints
                );
            } else if not_sent {
                warn!(
                    "could not send request #{seq}: no server connected at {} within {ms} ms; \
                     trying again ({attempt} of {retries})",
                    self.endpoints
                );
            } else {
                warn!(
                    "request #{seq}: no reply within {ms} ms; resending ({attempt} of {retries})"
                );
            }
            if let Attempt::NoReply(server) = missed {
                self.replace_socket(server)?;
            }
            attempt += 1;
        }
    }

    /// One send and the wait for its reply, each bounded by the timeout.
    fn attempt(
        &mut self,
        request: &[u8],
        ever_sent: &mut bool,
        shutdown: &Shutdown,
    ) -> anyhow::Result<Attempt> {
        let timeout = self.policy.timeout;
        let deadline = move || timeout.map(|timeout| Instant::now() + timeout);
        let expired =
            |deadline: Option<Instant>| deadline.is_some_and(|deadline| Instant::now() >= deadline);
        // The send waits while no server is connected.
        let send_by = deadline();
        let server = loop {
            if shutdown.requested() {
                return Ok(Attempt::Stopped);
            }
            match self.send(request)? {
                Some(server) => break server,
                None if expired(send_by) => return Ok(Attempt::NotSent),
                None => continue,
            }
        };
        if *ever_sent {
            self.resends += 1;
        } else {
            self.sent += 1;
            *ever_sent = true;
        }
        let reply_by = deadline();
        let socket = &self.servers[server].socket;
        loop {
            if shutdown.requested() {
                return Ok(Attempt::Stopped);
            }
            // CORRELATE: replies to earlier sends are dropped inside libzmq.
            match socket.recv_multipart(0) {
                Ok(reply) => return Ok(Attempt::Reply(reply)),
                Err(zmq::Error::EAGAIN | zmq::Error::EINTR) if expired(reply_by) => {
                    return Ok(Attempt::NoReply(server));
                }
                Err(zmq::Error::EAGAIN | zmq::Error::EINTR) => continue,
                Err(other) => return Err(other.into()),
            }
        }
    }

    /// Sends `request` to the server whose turn it is, waiting up to
    /// `wake_ms` for one to be connected; returns which one took it.
    fn send(&mut self, request: &[u8]) -> anyhow::Result<Option<usize>> {
        if self.policy.timeout.is_none() {
            // The naive client's plain REQ: libzmq picks the server, and
            // queues the request until a connection is up.
            return match self.servers[0].socket.send(request, 0) {
                Ok(()) => Ok(Some(0)),
                Err(zmq::Error::EAGAIN | zmq::Error::EINTR) => Ok(None),
                Err(other) => Err(other.into()),
            };
        }
        // The next server in turn whose connection is up.
        let count = self.servers.len();
        let mut full = false;
        for step in 0..count {
            let index = (self.next + step) % count;
            let server = &mut self.servers[index];
            if !server.link.is_up() {
                continue;
            }
            if std::mem::take(&mut server.replaced) {
                info!(
                    "{}: a new connection is up; back in turn",
                    server.endpoint.as_deref().unwrap_or_default()
                );
            }
            match server.socket.send(request, zmq::DONTWAIT) {
                Ok(()) => {
                    self.next = (index + 1) % count;
                    return Ok(Some(index));
                }
                Err(zmq::Error::EAGAIN | zmq::Error::EINTR) => full = true,
                Err(other) => return Err(other.into()),
            }
        }
        if full {
            // Connected, but a queue is full (or a signal came): wait for
            // room on a connected one.
            let mut items: Vec<zmq::PollItem> = self
                .servers
                .iter()
                .filter(|server| server.link.is_up())
                .map(|server| server.socket.as_poll_item(zmq::POLLOUT))
                .collect();
            return match zmq::poll(&mut items, i64::from(self.wake_ms)) {
                Ok(_) | Err(zmq::Error::EINTR) => Ok(None),
                Err(other) => Err(other.into()),
            };
        }
        // None connected: wait until one is.
        let links: Vec<&Link> = self.servers.iter().map(|server| &server.link).collect();
        let wake = Duration::from_millis(u64::try_from(self.wake_ms).unwrap_or_default());
        self.links.wait_for_any(&links, wake);
        Ok(None)
    }

    /// The server at `index` gave no reply in time. With a socket per
    /// server, its socket is closed and a new one opened, and it gets no
    /// request until the new connection is up (see the module docs).
    fn replace_socket(&mut self, index: usize) -> anyhow::Result<()> {
        let Some(endpoint) = self.servers[index].endpoint.clone() else {
            return Ok(());
        };
        let mut fresh = Server::open(
            &self.ctx,
            &self.links,
            self.policy,
            self.wake_ms,
            std::slice::from_ref(&endpoint),
            true,
        )?;
        fresh.replaced = true;
        // The old socket closes here, with whatever it held.
        self.servers[index] = fresh;
        info!(
            "{endpoint} gets no more requests until a new connection to it is up (its ZeroMQ \
             handshake done, which a stopped process cannot do)"
        );
        Ok(())
    }
}
