//! The reliable request: a REQ socket that gives up waiting and tries again
//! (the "Lazy Pirate" pattern of the ZeroMQ guide, chapter 4).
//!
//! A plain REQ socket waits for its reply forever. If the server dies with the
//! request in hand, or hangs, the client hangs with it, and because REQ must
//! alternate send and receive, it cannot even resend. The cure:
//!
//! 1. send the request and wait for the reply, but only for `--timeout-ms`;
//! 2. on a timeout, close the REQ socket (linger 0 throws the request away),
//!    open a new one, connect again and resend;
//! 3. after `--retries` resends, give up with an error.
//!
//! Closing the socket is what makes retries safe: a late reply to the
//! abandoned request is addressed to the old socket, which no longer exists,
//! so it can never be taken for the answer to a later request.
//!
//! With `--timeout-ms 0` the socket waits forever: the naive client, kept so
//! that students can watch it hang first.
//!
//! The socket is connected with ZMQ_IMMEDIATE: it only queues requests to
//! servers whose connection is up. Without it, a REQ connected to several
//! servers keeps queueing every n-th request for a dead one, in the hope that
//! it comes back.

use std::fmt;
use std::time::{Duration, Instant};

use tracing::{error, warn};

use crate::LINGER_MS;
use crate::plumbing::exit::UsageError;
use crate::plumbing::keepalive;
use crate::plumbing::shutdown::{CHECK_INTERVAL_MS, Shutdown};

/// How patient the client is.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    /// How long to wait for each reply; `None` waits forever.
    pub timeout: Option<Duration>,
    /// Resends of one request before giving up.
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

/// The last resend went unanswered too.
#[derive(Debug)]
pub struct GaveUp {
    /// The request's sequence number.
    pub seq: u64,
    /// Sends of the request, the first one included.
    pub attempts: u32,
    /// The wait for each.
    pub timeout: Duration,
    /// Where it was sent.
    pub endpoints: String,
}

impl fmt::Display for GaveUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no reply to request #{} from {} after {} attempts of {} ms each \
             (--timeout-ms, --retries); is the server running?",
            self.seq,
            self.endpoints,
            self.attempts,
            self.timeout.as_millis()
        )
    }
}

impl std::error::Error for GaveUp {}

/// A REQ socket that is replaced whenever a reply does not come in time.
pub struct ReliableReq {
    ctx: zmq::Context,
    endpoints: Vec<String>,
    policy: Policy,
    socket: zmq::Socket,
    resends: u64,
}

impl ReliableReq {
    /// Opens a REQ socket connected to every endpoint.
    pub fn connect(
        ctx: &zmq::Context,
        endpoints: &[String],
        policy: Policy,
    ) -> anyhow::Result<Self> {
        let socket = open(ctx, endpoints, policy)?;
        Ok(Self {
            ctx: ctx.clone(),
            endpoints: endpoints.to_vec(),
            policy,
            socket,
            resends: 0,
        })
    }

    /// Resends so far, over all requests.
    pub fn resends(&self) -> u64 {
        self.resends
    }

    /// Sends `request` (number `seq`, for the log) and returns its reply,
    /// resending on a new socket after each timeout.
    pub fn request(
        &mut self,
        request: &[u8],
        seq: u64,
        shutdown: &Shutdown,
    ) -> anyhow::Result<Outcome> {
        let mut attempt = 1;
        loop {
            let deadline = self.policy.timeout.map(|timeout| Instant::now() + timeout);
            if let Some(outcome) = self.exchange(request, deadline, shutdown)? {
                return Ok(outcome);
            }
            let timeout = self.policy.timeout.unwrap_or_default();
            let endpoints = self.endpoints.join(", ");
            if attempt > self.policy.retries {
                error!("request #{seq}: no reply after {attempt} attempts; giving up");
                return Err(GaveUp {
                    seq,
                    attempts: attempt,
                    timeout,
                    endpoints,
                }
                .into());
            }
            warn!(
                "request #{seq}: no reply within {} ms from {endpoints}; resending on a new \
                 socket ({attempt} of {} resends)",
                timeout.as_millis(),
                self.policy.retries
            );
            // Dropping the old socket (linger 0) discards the unanswered
            // request and any reply that might still come for it.
            self.socket = open(&self.ctx, &self.endpoints, self.policy)?;
            self.resends += 1;
            attempt += 1;
        }
    }

    /// One send and the wait for its reply. `Ok(None)` means the deadline
    /// passed first.
    fn exchange(
        &self,
        request: &[u8],
        deadline: Option<Instant>,
        shutdown: &Shutdown,
    ) -> anyhow::Result<Option<Outcome>> {
        let expired = || deadline.is_some_and(|deadline| Instant::now() >= deadline);
        // With ZMQ_IMMEDIATE the send waits while no server is connected.
        loop {
            if shutdown.requested() {
                return Ok(Some(Outcome::Stopped));
            }
            match self.socket.send(request, 0) {
                Ok(()) => break,
                Err(zmq::Error::EAGAIN | zmq::Error::EINTR) if expired() => return Ok(None),
                Err(zmq::Error::EAGAIN | zmq::Error::EINTR) => continue,
                Err(other) => return Err(other.into()),
            }
        }
        loop {
            if shutdown.requested() {
                return Ok(Some(Outcome::Stopped));
            }
            match self.socket.recv_multipart(0) {
                Ok(reply) => return Ok(Some(Outcome::Reply(reply))),
                Err(zmq::Error::EAGAIN | zmq::Error::EINTR) if expired() => return Ok(None),
                Err(zmq::Error::EAGAIN | zmq::Error::EINTR) => continue,
                Err(other) => return Err(other.into()),
            }
        }
    }
}

fn open(ctx: &zmq::Context, endpoints: &[String], policy: Policy) -> anyhow::Result<zmq::Socket> {
    // Wake up often enough to notice Ctrl-C and to keep the deadline.
    let wake_ms = policy.timeout.map_or(CHECK_INTERVAL_MS, |timeout| {
        i32::try_from(timeout.as_millis()).map_or(CHECK_INTERVAL_MS, |ms| ms.min(CHECK_INTERVAL_MS))
    });
    let socket = ctx.socket(zmq::REQ)?;
    // A retried socket must not linger: its unanswered request is abandoned.
    socket.set_linger(if policy.timeout.is_some() {
        0
    } else {
        LINGER_MS
    })?;
    socket.set_immediate(true)?;
    keepalive::enable(&socket)?; // an idle client keeps its connection
    socket.set_sndtimeo(wake_ms)?;
    socket.set_rcvtimeo(wake_ms)?;
    for endpoint in endpoints {
        socket
            .connect(endpoint)
            .map_err(UsageError::at("--connect", endpoint))?;
    }
    Ok(socket)
}
