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
//!   got no reply (a strict REQ refuses with EFSM). A REQ hands its requests
//!   to its connected servers in turn (round robin), so the resend goes to
//!   the *next* server: with `--connect A,B` and A hung, the retry reaches B.
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
//! addressed to a socket that no longer exists), but a new socket's round
//! robin starts afresh, and its request goes to whichever server it reached
//! first, which may be the hung one again: an earlier version of this client
//! did so, and connected to a hung and a healthy server it gave up within
//! five requests. Here one socket stays, so a resend moves on to the next
//! server, and a stale reply is recognised by its id, not by its socket
//! being gone.
//!
//! This gives *at least once*, not exactly once: a resend may reach a server
//! that did the work already, or is still doing it, so the work may be done
//! twice, even though the client takes one reply. Work that must not be
//! repeated needs request ids the server remembers.
//!
//! The socket is connected with ZMQ_IMMEDIATE: it only queues requests to
//! servers whose connection is up. Without it, a REQ connected to several
//! servers keeps queueing every n-th request for a dead one, in the hope that
//! it comes back, and each of those requests costs a timeout. With it, a
//! request that finds no server connected waits to be sent, which the client
//! reports as "could not send" rather than as a request that went
//! unanswered. It has a price, in libzmq 4.3: when a connection breaks, the
//! messages that arrived on it and were not read yet are thrown away
//! (`socket_base.cpp`, `hiccuped`). So a reply from a server that crashes
//! right after sending it may be lost here, and the client resends it, as
//! for any other missing reply.
//!
//! With `--timeout-ms 0` the socket waits forever: the naive client, kept so
//! that students can watch it hang first. It is a plain REQ, as the course's
//! pyzmq client is (none of the three options above): it sends exactly the
//! same bytes, and it never loses a reply that reached it.

use std::fmt;
use std::time::{Duration, Instant};

use tracing::warn;

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
    /// Sent; no reply within the wait.
    NoReply,
    Stopped,
}

/// One REQ socket, kept for every request and every resend.
pub struct ReliableReq {
    endpoints: String,
    policy: Policy,
    socket: zmq::Socket,
    sent: u64,
    resends: u64,
}

impl ReliableReq {
    /// Opens a REQ socket connected to every endpoint.
    pub fn connect(
        ctx: &zmq::Context,
        endpoints: &[String],
        policy: Policy,
    ) -> anyhow::Result<Self> {
        let socket = ctx.socket(zmq::REQ)?;
        // Wake up often enough to notice Ctrl-C and to keep the deadline.
        let wake_ms = policy.timeout.map_or(CHECK_INTERVAL_MS, |timeout| {
            i32::try_from(timeout.as_millis())
                .map_or(CHECK_INTERVAL_MS, |ms| ms.min(CHECK_INTERVAL_MS))
        });
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
        for endpoint in endpoints {
            socket
                .connect(endpoint)
                .map_err(UsageError::at("--connect", endpoint))?;
        }
        Ok(Self {
            endpoints: endpoints.join(", "),
            policy,
            socket,
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
        loop {
            if shutdown.requested() {
                return Ok(Attempt::Stopped);
            }
            match self.socket.send(request, 0) {
                Ok(()) => break,
                Err(zmq::Error::EAGAIN | zmq::Error::EINTR) if expired(send_by) => {
                    return Ok(Attempt::NotSent);
                }
                Err(zmq::Error::EAGAIN | zmq::Error::EINTR) => continue,
                Err(other) => return Err(other.into()),
            }
        }
        if *ever_sent {
            self.resends += 1;
        } else {
            self.sent += 1;
            *ever_sent = true;
        }
        let reply_by = deadline();
        loop {
            if shutdown.requested() {
                return Ok(Attempt::Stopped);
            }
            // CORRELATE: replies to earlier sends are dropped inside libzmq.
            match self.socket.recv_multipart(0) {
                Ok(reply) => return Ok(Attempt::Reply(reply)),
                Err(zmq::Error::EAGAIN | zmq::Error::EINTR) if expired(reply_by) => {
                    return Ok(Attempt::NoReply);
                }
                Err(zmq::Error::EAGAIN | zmq::Error::EINTR) => continue,
                Err(other) => return Err(other.into()),
            }
        }
    }
}
