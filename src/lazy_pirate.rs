//! The reliable request: a REQ socket that gives up waiting and tries again
//! (the "Lazy Pirate" pattern of the ZeroMQ guide, chapter 4).
//!
//! A plain REQ socket waits for its reply forever. If the server dies with the
//! request in hand, or hangs, the client hangs with it, and because REQ must
//! alternate send and receive, it cannot even resend. The cure:
//!
//! 1. send the request and wait for the reply, but only for `--timeout-ms`;
//! 2. on a timeout, send the request again, on the same socket;
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
//! addressed to a socket that no longer exists). Here the socket stays, and a
//! stale reply is recognised by its id, not by its socket being gone.
//!
//! This gives *at least once*, not exactly once: a resend may reach a server
//! that did the work already, or is still doing it, so the work may be done
//! twice, even though the client takes one reply. Work that must not be
//! repeated needs request ids the server remembers.
//!
//! The socket is connected with ZMQ_IMMEDIATE: it only queues a request to a
//! server whose connection is up (its ZeroMQ handshake done). Without it, a
//! request for a server that is down would wait in the socket for it to come
//! back, and cost a timeout. With it, a request that finds no server
//! connected waits to be sent, which the client reports as "could not send"
//! rather than as a request that went unanswered. It has a price, in libzmq
//! 4.3: when a connection breaks, the messages that arrived on it and were
//! not read yet are thrown away (`socket_base.cpp`, `hiccuped`). So a reply
//! from a server that crashes right after sending it may be lost here, and
//! the client resends it, as for any other missing reply.
//!
//! ## Several servers
//!
//! With `--connect A,B`, the client opens one such REQ socket per server and
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
//! timeout. So after a timeout, the client replaces that server's connection
//! by a new one, and the server gets no request until the new one is up. A
//! running server completes the ZeroMQ handshake at once (its libzmq's I/O
//! thread does, even while its own loop is stuck: a stuck server still
//! costs a timeout at each of its turns); a stopped process cannot,
//! whatever its kernel accepts. A stopped server thus costs each client at
//! most one timeout, and gets its turns again as soon as it runs (the client
//! logs `a new connection is up; back in turn`). This is the first model of
//! the guide's Freelance pattern (chapter 4: try the next server, one socket
//! each), with the handshake as the sign of life a stopped process cannot
//! fake; the guide's third model pings its servers instead.
//!
//! The price: a reply still on its way over the replaced connection has
//! nowhere to go, and is dropped on the server's side (a REP or a broker
//! sends it to a peer that is gone). The client takes the resend's reply, as
//! it would with one socket, where the REQ drops the late one for its old
//! id; a server slower than the timeout works for nothing either way.
//!
//! With `--timeout-ms 0` the socket waits forever: the naive client, kept so
//! that students can watch it hang first. It is a plain REQ, as the course's
//! pyzmq client is (none of the three options above), one socket connected
//! to every server, which libzmq's REQ serves in turn: it sends exactly the
//! same bytes, and it never loses a reply that reached it.

use std::fmt;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::LINGER_MS;
use crate::plumbing::exit::UsageError;
use crate::plumbing::keepalive;
use crate::plumbing::logging::Count;
use crate::plumbing::shutdown::{CHECK_INTERVAL_MS, Shutdown};

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
    /// The one endpoint this socket is connected to, when there is a socket
    /// per server; `None` for one socket connected to every endpoint.
    endpoint: Option<String>,
    /// Its connection was replaced after a timeout, and it has not had a
    /// request since: the log says so when it gets one again. (What keeps
    /// requests from it meanwhile is ZMQ_IMMEDIATE: see [`Server::can_send`].)
    replaced: bool,
}

impl Server {
    /// Whether a request can leave now: with ZMQ_IMMEDIATE, only once a
    /// connection has completed its ZeroMQ handshake.
    fn can_send(&self) -> bool {
        self.socket
            .get_events()
            .is_ok_and(|events| events.contains(zmq::POLLOUT))
    }
}

/// The REQ socket(s), kept for every request and every resend: one
/// connected to every server, or one per server (see the module docs).
pub struct ReliableReq {
    endpoints: String,
    policy: Policy,
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
        let mut servers = Vec::with_capacity(groups.len());
        for group in groups {
            let socket = open(ctx, policy, wake_ms)?;
            for endpoint in group {
                socket
                    .connect(endpoint)
                    .map_err(UsageError::at("--connect", endpoint))?;
            }
            servers.push(Server {
                socket,
                endpoint: one_each.then(|| group[0].clone()),
                replaced: false,
            });
        }
        Ok(Self {
            endpoints: endpoints.join(", "),
            policy,
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
                self.replace_connection(server)?;
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
        // With ZMQ_IMMEDIATE the send waits while no server is connected.
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
        if let [only] = self.servers.as_slice() {
            // One socket: libzmq picks the server, and the send waits
            // (ZMQ_SNDTIMEO) while none is connected.
            return match only.socket.send(request, 0) {
                Ok(()) => Ok(Some(0)),
                Err(zmq::Error::EAGAIN | zmq::Error::EINTR) => Ok(None),
                Err(other) => Err(other.into()),
            };
        }
        // A socket per server: the next one in turn whose connection is up.
        let count = self.servers.len();
        for step in 0..count {
            let index = (self.next + step) % count;
            let server = &mut self.servers[index];
            if !server.can_send() {
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
                Err(zmq::Error::EAGAIN | zmq::Error::EINTR) => continue,
                Err(other) => return Err(other.into()),
            }
        }
        // None connected: wait for one, as a blocking send would.
        let mut items: Vec<zmq::PollItem> = self
            .servers
            .iter()
            .map(|server| server.socket.as_poll_item(zmq::POLLOUT))
            .collect();
        match zmq::poll(&mut items, i64::from(self.wake_ms)) {
            Ok(_) | Err(zmq::Error::EINTR) => Ok(None),
            Err(other) => Err(other.into()),
        }
    }

    /// The server at `index` gave no reply in time. With a socket per
    /// server, its connection is replaced by a new one, and it gets no
    /// request until that one is up (see the module docs).
    fn replace_connection(&mut self, index: usize) -> anyhow::Result<()> {
        let server = &mut self.servers[index];
        let Some(endpoint) = &server.endpoint else {
            return Ok(());
        };
        server.socket.disconnect(endpoint)?;
        server.socket.connect(endpoint)?;
        server.replaced = true;
        info!(
            "{endpoint} gets no more requests until a new connection to it is up (its ZeroMQ \
             handshake done, which a stopped process cannot do)"
        );
        Ok(())
    }
}

/// A REQ socket for `policy`, not connected yet.
fn open(ctx: &zmq::Context, policy: Policy, wake_ms: i32) -> anyhow::Result<zmq::Socket> {
    let socket = ctx.socket(zmq::REQ)?;
    if policy.timeout.is_some() {
        socket.set_req_relaxed(true)?; // may resend without a reply
        socket.set_req_correlate(true)?; // and knows which reply is whose
        socket.set_immediate(true)?; // queues only to connected servers
        // At exit, a request nobody answered in time is not worth waiting for.
        socket.set_linger(0)?;
    } else {
        socket.set_linger(LINGER_MS)?;
    }
    socket.set_sndtimeo(wake_ms)?;
    socket.set_rcvtimeo(wake_ms)?;
    keepalive::enable(&socket)?; // an idle client keeps its connection (src/plumbing/keepalive.rs)
    // What the server may ask for, and a watch that explains a refusal (src/security/).
    crate::security::credentials::present(ctx, &socket)?;
    Ok(socket)
}
