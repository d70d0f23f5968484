//! `worker --mode lb`: a worker for the load-balancing broker.
//!
//! A plain REP worker cannot tell the broker it is idle, nor notice that the
//! broker has died. This one uses a DEALER socket, which may send whenever
//! it likes, and speaks the protocol of [`crate::protocol`]:
//!
//! 1. connect; once the connection is up, send READY with its name;
//! 2. receive `[client, "", body]`, work, and send back `[client, "", reply]`:
//!    the envelope, kept as it came, is the reply's return address;
//! 3. send a HEARTBEAT every `--heartbeat-ms` while connected, working or
//!    not; the broker sends its own;
//! 4. after 3 intervals without a word from the broker, wait (1 s, doubling
//!    up to 32 s), then open a new socket (Paranoid Pirate). libzmq
//!    reconnects a closed connection by itself, but a connection to a
//!    broker host that vanished without closing it would otherwise be
//!    waited on until TCP gives up, many minutes later. Hearing from the
//!    broker meanwhile cancels the new socket.
//!
//! Work never silences the worker. The loop below is the heart of it: one
//! `zmq::poll` wakes it for a message, a heartbeat due, or the end of the
//! work in progress. The simulated work (`--work-ms`) is a deadline in that
//! loop, not a sleep, so the worker keeps heartbeating and reading the
//! broker while it "works", and a request that takes minutes is no reason
//! for either side to think the other dead. A real worker would run its
//! handler on a thread of its own while this loop heartbeats; then
//! heartbeats prove the process alive, not the handler making progress, and
//! a handler that hangs needs a time limit of its own. `--hang-after`
//! freezes the whole loop instead, heartbeats included: a stuck process,
//! which the broker notices.
//!
//! The broker may have restarted, or forgotten the worker while one could
//! not hear the other: the worker sends READY again on every new
//! connection, when the broker answers after a silence, and after a pause
//! of its own (a stopped process), but only while it holds no request
//! from that broker, since READY means "idle" (see [`crate::protocol`]). A
//! request that arrives while the worker is busy (a broker that restarted
//! and took the worker for idle) is queued behind the current one.
//!
//! What the worker knows of its broker (socket, liveness, READY owed) lives
//! in one `Broker` value, so that a worker serving two brokers would hold
//! two of them, each with its own socket, READY, heartbeats and liveness.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::LINGER_MS;
use crate::envelope::{body_start, hex};
use crate::faults::Faults;
use crate::payload::show_frames;
use crate::plumbing::cli::Reply;
use crate::plumbing::connection::{Change, Watch};
use crate::plumbing::exit::UsageError;
use crate::plumbing::keepalive;
use crate::plumbing::logging::Count;
use crate::plumbing::shutdown::{CHECK_INTERVAL_MS, Shutdown};
use crate::protocol::{self, Backoff, Frames, HEARTBEAT, READY};
use crate::security::credentials::{self, explain_refusal};

/// Requests that may wait while the worker is busy; a correct broker sends
/// at most one more.
const MAX_QUEUED: usize = 8;

/// What the worker needs to know.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The broker's backend (`--connect`).
    pub endpoint: String,
    /// Announced in READY, so the broker's log names the worker.
    pub name: String,
    /// What to answer.
    pub reply: Reply,
    /// Simulated work per request.
    pub work: Duration,
    /// Interval between heartbeats (`--heartbeat-ms`).
    pub heartbeat: Duration,
}

/// A request being worked on: its frames, and when the work is done.
struct Job {
    frames: Vec<Vec<u8>>,
    done_at: Instant,
}

impl Job {
    fn client(&self) -> String {
        self.frames.first().map_or_else(String::new, |id| hex(id))
    }
}

/// Serves requests from the broker until a stop is asked for; returns how
/// many replies it sent.
pub fn run(
    ctx: &zmq::Context,
    settings: &Settings,
    faults: &Faults,
    shutdown: &Shutdown,
) -> anyhow::Result<u64> {
    let mut broker = Broker::connect(ctx, settings)?;
    let mut job: Option<Job> = None;
    let mut queued: VecDeque<Vec<Vec<u8>>> = VecDeque::new();
    let mut replies = 0u64;
    let mut dropped_while_busy = 0u64;

    'serving: while !shutdown.requested() {
        let now = Instant::now();
        let wake = job.as_ref().map_or(broker.next_wake(), |job| {
            job.done_at.min(broker.next_wake())
        });
        // Rounded up: rounded down, the last fraction of a millisecond of
        // work would be spent polling in a busy loop.
        let timeout = wake
            .saturating_duration_since(now)
            .as_micros()
            .div_ceil(1000)
            .min(CHECK_INTERVAL_MS as u128) as i64;
        let mut items = [
            broker.socket.as_poll_item(zmq::POLLIN),
            broker.watch.socket().as_poll_item(zmq::POLLIN),
        ];
        match zmq::poll(&mut items, timeout) {
            Ok(_) | Err(zmq::Error::EINTR) => {}
            Err(error) => return Err(error.into()),
        }
        let (readable, changed) = (items[0].is_readable(), items[1].is_readable());
        if changed {
            broker.connection_changed();
        }
        if readable {
            for frames in broker.receive()? {
                if job.is_none() {
                    job = Some(start(frames, settings));
                    if faults.hang_if_due(replies, shutdown) {
                        break 'serving;
                    }
                } else if queued.len() < MAX_QUEUED {
                    info!(
                        "request from client {} arrived while busy (the broker took this worker \
                         for idle: did it restart?); queued",
                        frames.first().map_or_else(String::new, |id| hex(id))
                    );
                    queued.push_back(frames);
                } else {
                    dropped_while_busy += 1;
                    if dropped_while_busy == 1 {
                        warn!(
                            "request from client {} dropped: {} already queued while busy \
                             (more are only counted)",
                            frames.first().map_or_else(String::new, |id| hex(id)),
                            Count::new(MAX_QUEUED as u64, "request")
                        );
                    }
                }
            }
        }

        let now = Instant::now();
        if job.as_ref().is_some_and(|job| now >= job.done_at) && !shutdown.requested() {
            if let Some(done) = job.take() {
                broker.send_reply(&done.frames, settings)?;
                replies += 1;
                faults.crash_if_due(replies)?;
            }
            if let Some(frames) = queued.pop_front() {
                job = Some(start(frames, settings));
                if faults.hang_if_due(replies, shutdown) {
                    break;
                }
            } else if dropped_while_busy > 0 {
                warn!(
                    "{} dropped while busy, the queue full",
                    Count::new(std::mem::take(&mut dropped_while_busy), "request")
                );
            }
        }
        broker.tick(now, job.is_some())?;
    }

    if let Some(job) = job {
        info!(
            "stopped mid-request from client {}; no reply sent",
            job.client()
        );
    }
    if !queued.is_empty() {
        info!(
            "{} waiting behind it not served",
            Count::new(queued.len() as u64, "request")
        );
    }
    Ok(replies)
}

/// Begins the work on a request.
fn start(frames: Vec<Vec<u8>>, settings: &Settings) -> Job {
    // `classify` said Work, so there is an envelope.
    let body = body_start(&frames).unwrap_or(frames.len());
    info!(
        "request {} from client {}",
        show_frames(&frames[body..]),
        hex(&frames[0])
    );
    Job {
        frames,
        done_at: Instant::now() + settings.work,
    }
}

/// The broker, as this worker sees it: the socket to it and what the
/// worker knows of it.
struct Broker {
    ctx: zmq::Context,
    endpoint: String,
    name: String,
    heartbeat: Duration,
    // Declared before `watch`, so dropped (closed) before it: see `Watch`.
    socket: zmq::Socket,
    watch: Watch,
    /// Any message from the broker counts as a sign of life.
    last_heard: Instant,
    next_heartbeat: Instant,
    /// When the current connection came up; `None` while there is none.
    up_since: Option<Instant>,
    /// Whether a HEARTBEAT came on it: an lb broker sends one every
    /// interval, a proxy broker's DEALER never does.
    heard_heartbeat: bool,
    told_not_lb: bool,
    told_unexpected: bool,
    /// READY is due: the connection is new, or the broker answered after a
    /// silence and may have forgotten this worker.
    owes_ready: bool,
    /// When a new socket is due, once the broker was found silent.
    reconnect_at: Option<Instant>,
    backoff: Backoff,
    /// The previous tick: a long gap means this process was stopped
    /// (SIGSTOP, `docker pause`) or starved, and silent meanwhile.
    last_tick: Instant,
}

impl Broker {
    /// Opens a DEALER to the broker's backend.
    fn connect(ctx: &zmq::Context, settings: &Settings) -> anyhow::Result<Broker> {
        let (socket, watch) = open(ctx, &settings.endpoint)?;
        let now = Instant::now();
        Ok(Broker {
            ctx: ctx.clone(),
            endpoint: settings.endpoint.clone(),
            name: settings.name.clone(),
            heartbeat: settings.heartbeat,
            socket,
            watch,
            last_heard: now,
            next_heartbeat: now + settings.heartbeat,
            up_since: None,
            heard_heartbeat: false,
            told_not_lb: false,
            told_unexpected: false,
            owes_ready: false,
            reconnect_at: None,
            backoff: Backoff::new(),
            last_tick: now,
        })
    }

    /// The next time [`Broker::tick`] has something to do.
    fn next_wake(&self) -> Instant {
        let next = self
            .reconnect_at
            .unwrap_or(self.last_heard + protocol::expiry(self.heartbeat));
        next.min(self.next_heartbeat)
    }

    /// Acts on the connection's news.
    fn connection_changed(&mut self) {
        for change in self.watch.changes() {
            match change {
                Change::Up { first } => {
                    self.up_since = Some(Instant::now());
                    self.heard_heartbeat = false;
                    self.owes_ready = true;
                    if !first {
                        info!(
                            "connected to the broker at {} again; announcing this worker with \
                             READY",
                            self.endpoint
                        );
                    }
                }
                Change::Down => {
                    self.up_since = None;
                    info!(
                        "connection to the broker at {} lost; libzmq reconnects by itself",
                        self.endpoint
                    );
                }
                Change::Refused => match explain_refusal(self.watch.handshake_failure()) {
                    Some(why) => warn!("the broker at {} {why}", self.endpoint),
                    None => warn!(
                        "{} refused this worker during the ZeroMQ handshake: not a broker's \
                         backend (a socket type that cannot talk to a DEALER, or not ZeroMQ)",
                        self.endpoint
                    ),
                },
            }
        }
    }

    /// The requests among the messages waiting (without waiting for more);
    /// heartbeats only count as signs of life.
    fn receive(&mut self) -> anyhow::Result<Vec<Vec<Vec<u8>>>> {
        let mut requests = Vec::new();
        loop {
            let frames = match self.socket.recv_multipart(zmq::DONTWAIT) {
                Ok(frames) => frames,
                Err(zmq::Error::EAGAIN | zmq::Error::EINTR) => break,
                Err(error) => return Err(error.into()),
            };
            let now = Instant::now();
            if self.reconnect_at.take().is_some() {
                info!("the broker answers again");
                // It may have forgotten this worker meanwhile.
                self.owes_ready = true;
            }
            self.last_heard = now;
            self.backoff.reset();
            match protocol::classify(&frames) {
                Frames::Heartbeat => self.heard_heartbeat = true,
                Frames::Work => requests.push(frames),
                Frames::Ready(_) | Frames::Malformed => {
                    if !std::mem::replace(&mut self.told_unexpected, true) {
                        warn!(
                            "unexpected message from the broker {}; ignored (and any more \
                             like it, silently)",
                            show_frames(&frames)
                        );
                    }
                }
            }
        }
        Ok(requests)
    }

    /// Sends the reply to `request` inside the request's envelope.
    fn send_reply(&self, request: &[Vec<u8>], settings: &Settings) -> anyhow::Result<()> {
        let body = body_start(request).unwrap_or(request.len());
        let envelope = request[..body].iter().map(Vec::as_slice);
        let reply = settings.reply.to(&request[body..]);
        self.socket.send_multipart(envelope.chain(reply), 0)?;
        Ok(())
    }

    /// Heartbeats, the READY owed, and liveness. `holding`: the worker
    /// holds a request from this broker, so it is not idle.
    fn tick(&mut self, now: Instant, holding: bool) -> anyhow::Result<()> {
        let expiry = protocol::expiry(self.heartbeat);
        if now.duration_since(std::mem::replace(&mut self.last_tick, now)) > expiry {
            // Silent that long, this worker may have been forgotten.
            self.owes_ready = true;
        }
        let up = self.watch.is_up();
        if now >= self.next_heartbeat {
            // Only on a live connection: heartbeats queued while there is
            // none would reach the next broker stale, ahead of READY. And
            // never wait here.
            if up {
                let _ = self.socket.send(&[HEARTBEAT][..], zmq::DONTWAIT);
            }
            self.next_heartbeat = now + self.heartbeat;
        }
        if self.owes_ready && up && !holding {
            let ready = [&[READY][..], self.name.as_bytes()];
            if self.socket.send_multipart(ready, zmq::DONTWAIT).is_ok() {
                self.owes_ready = false;
            }
        }

        if let Some(since) = self.up_since {
            if !self.heard_heartbeat && !self.told_not_lb && now.duration_since(since) > expiry {
                self.told_not_lb = true;
                warn!(
                    "connected to {} for {:.1} s without a HEARTBEAT: is the broker running \
                     with --mode lb? (a proxy broker never sends one; for it, start this worker \
                     without --mode lb)",
                    self.endpoint,
                    now.duration_since(since).as_secs_f64()
                );
            }
        }
        let silent_for = now.duration_since(self.last_heard);
        if silent_for <= expiry {
            return Ok(());
        }
        match self.reconnect_at {
            None => {
                let delay = self.backoff.next_delay();
                let why = if up {
                    String::new()
                } else {
                    format!(" (no connection to {}: is it running?)", self.endpoint)
                };
                warn!(
                    "broker silent for {:.1} s{why}; reconnecting in {} s",
                    silent_for.as_secs_f64(),
                    delay.as_secs()
                );
                self.reconnect_at = Some(now + delay);
            }
            Some(at) if now >= at => {
                // The old socket's queued heartbeats are worthless.
                self.socket.set_linger(0)?;
                let (socket, watch) = open(&self.ctx, &self.endpoint)?;
                // In this order: the old socket closes before its watch.
                self.socket = socket;
                self.watch = watch;
                self.up_since = None;
                self.last_heard = now;
                self.reconnect_at = None;
                info!(
                    "reconnected to {} with a new socket; READY follows once it is up",
                    self.endpoint
                );
            }
            Some(_) => {}
        }
        Ok(())
    }
}

/// A DEALER to `endpoint`, and the watch on its connection.
fn open(ctx: &zmq::Context, endpoint: &str) -> anyhow::Result<(zmq::Socket, Watch)> {
    let socket = ctx.socket(zmq::DEALER)?;
    socket.set_linger(LINGER_MS)?; // at exit, give the last reply a moment
    // Besides our HEARTBEAT: ZMTP heartbeats, whatever --heartbeat-ms is.
    keepalive::enable(&socket)?;
    credentials::apply(&socket)?; // src/security/: what the broker may ask for
    let watch = Watch::new(ctx, &socket)?;
    socket
        .connect(endpoint)
        .map_err(UsageError::at("--connect", endpoint))?;
    Ok((socket, watch))
}
