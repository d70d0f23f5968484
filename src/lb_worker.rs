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
//! 4. after 3 intervals without a word from the broker (or since its
//!    connection came up), wait (1 s, doubling up to 32 s), then open a new
//!    socket (Paranoid Pirate). libzmq reconnects a closed connection by
//!    itself, but a connection to a broker host that vanished without
//!    closing it would otherwise be waited on until TCP gives up, many
//!    minutes later. Hearing from the broker, or a connection to it coming
//!    up, meanwhile cancels the new socket. Time this worker itself did not
//!    run (stopped, or starved of CPU) counts in no silence of the broker's,
//!    as the broker counts its own stops in no worker's.
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
//! connection and after a pause of its own (a stopped process), but only
//! while it holds no request from that broker, since READY means "idle"
//! (see [`crate::protocol`]). A request that arrives while the worker is
//! busy (a broker that restarted and took the worker for idle) is queued
//! behind the current one.
//!
//! A broker that answers again after a silence, on the same connection,
//! gets no READY: it is the same broker process, which either still knows
//! this worker (a broker that was stopped itself holds its own silence
//! against no worker) or forgot it for its silence and takes it back, name
//! and all, at its next HEARTBEAT. A READY then would be useless, and
//! confusing: right after a stop, the broker hands out the requests waiting
//! for it, and a READY crossing one of them on the wire says "idle" while
//! the request is on its way (the broker copes: it still expects the
//! reply).
//!
//! ## Several brokers
//!
//! With several `--connect` endpoints (two brokers side by side, so that
//! neither is a single point of failure) the worker opens one DEALER per
//! broker and speaks the protocol to each on its own: each broker has its
//! own READY, heartbeats, liveness and back-off, held in one `Broker`
//! value, and the log lines about a broker name its endpoint. The brokers
//! know nothing of each other.
//!
//! Each broker counts the worker idle once it has had the reply to its own
//! last request, so two brokers may hand it a request at the same time.
//! The second one is queued and served next, in the order they came: a
//! broker sends no more until it has its reply, so at most one request per
//! other broker waits. Nothing is lost or answered twice; the price is that
//! the second request waits for the first one's work (`--work-ms`) while
//! another worker may be idle. Refusing it instead would need a "busy"
//! message that the protocol does not have.
//!
//! A reply goes back over the very connection its request came in on. If
//! that connection has closed since (its broker was killed or restarted,
//! and a new broker process knows nothing of the request), the reply is
//! not sent, and a request still queued from it is not worked on: the
//! client resends it after its timeout, and the resend reaches the other
//! broker. The sockets have ZMQ_IMMEDIATE for the same reason: libzmq then
//! queues nothing for a broker while no connection to it is up (a send
//! fails at once, instead of waiting for whichever broker process listens
//! at that address next), and throws away what arrived on a connection
//! that broke before it was read.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::LINGER_MS;
use crate::envelope::{body_start, client_of};
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

/// Requests from one broker that may wait while the worker is busy; a
/// correct broker sends at most one more.
const MAX_QUEUED: usize = 8;

/// What the worker needs to know.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The brokers' backends (`--connect`), one DEALER each.
    pub endpoints: Vec<String>,
    /// Announced in READY, so the broker's log names the worker.
    pub name: String,
    /// What to answer.
    pub reply: Reply,
    /// Simulated work per request.
    pub work: Duration,
    /// Interval between heartbeats (`--heartbeat-ms`).
    pub heartbeat: Duration,
}

/// A request, and where it came from.
struct Request {
    frames: Vec<Vec<u8>>,
    /// Which broker (its index in [`Settings::endpoints`]).
    broker: usize,
    /// Which of that broker's connections (see `Broker::connection`).
    connection: u64,
}

impl Request {
    fn client(&self) -> String {
        client_of(&self.frames)
    }
}

/// A request being worked on, and when the work is done.
struct Job {
    request: Request,
    done_at: Instant,
}

/// Serves requests from every broker until a stop is asked for; returns
/// how many replies it sent.
pub fn run(
    ctx: &zmq::Context,
    settings: &Settings,
    faults: &Faults,
    shutdown: &Shutdown,
) -> anyhow::Result<u64> {
    anyhow::ensure!(!settings.endpoints.is_empty(), "no broker to connect to");
    let mut brokers = settings
        .endpoints
        .iter()
        .map(|endpoint| Broker::connect(ctx, endpoint, settings))
        .collect::<anyhow::Result<Vec<Broker>>>()?;
    // With one broker, the log lines need not say which.
    let several = brokers.len() > 1;
    let mut job: Option<Job> = None;
    let mut queued: VecDeque<Request> = VecDeque::new();
    let mut replies = 0u64;
    let mut dropped_while_busy = 0u64;

    'serving: while !shutdown.requested() {
        let now = Instant::now();
        let mut wake = brokers.iter().map(Broker::next_wake).min().unwrap_or(now);
        if let Some(job) = &job {
            wake = wake.min(job.done_at);
        }
        // Rounded up: rounded down, the last fraction of a millisecond of
        // work would be spent polling in a busy loop.
        let timeout = wake
            .saturating_duration_since(now)
            .as_micros()
            .div_ceil(1000)
            .min(CHECK_INTERVAL_MS as u128) as i64;
        let mut items: Vec<zmq::PollItem> = brokers
            .iter()
            .flat_map(|broker| {
                [
                    broker.socket.as_poll_item(zmq::POLLIN),
                    broker.watch.socket().as_poll_item(zmq::POLLIN),
                ]
            })
            .collect();
        match zmq::poll(&mut items, timeout) {
            Ok(_) | Err(zmq::Error::EINTR) => {}
            Err(error) => return Err(error.into()),
        }
        let readable: Vec<bool> = items.chunks(2).map(|pair| pair[0].is_readable()).collect();
        drop(items);

        for (index, is_readable) in readable.into_iter().enumerate() {
            let broker = &mut brokers[index];
            // Its connection's news first, every time, right before its
            // requests: a connection is reported lost before anything can
            // come on the next one, so each request is stamped with the
            // connection it came on. (Should a reconnection fall in the
            // instant between the two, a request may be stamped wrongly: its
            // reply is then not sent, or reaches a broker that drops it, and
            // the client resends, as for any lost reply.)
            broker.connection_changed();
            if !is_readable {
                continue;
            }
            let connection = broker.connection;
            for frames in broker.receive()? {
                let request = Request {
                    frames,
                    broker: index,
                    connection,
                };
                let Some(busy) = &job else {
                    job = Some(start(request, settings, several.then_some(&brokers)));
                    if faults.hang_if_due(replies, shutdown) {
                        break 'serving;
                    }
                    continue;
                };
                if queued.iter().filter(|r| r.broker == index).count() >= MAX_QUEUED {
                    dropped_while_busy += 1;
                    if dropped_while_busy == 1 {
                        warn!(
                            "request from client {} dropped: {} from {} already queued while \
                             busy (more are only counted)",
                            request.client(),
                            Count::new(MAX_QUEUED as u64, "request"),
                            brokers[index].endpoint
                        );
                    }
                } else if busy.request.broker == index {
                    info!(
                        "request from client {} arrived while busy with one from the same \
                         broker{} (it took this worker for idle: did it restart?); queued",
                        request.client(),
                        via(several, &brokers[index])
                    );
                    queued.push_back(request);
                } else {
                    info!(
                        "request from client {}{} arrived while busy with one{}; queued, \
                         next in line",
                        request.client(),
                        via(true, &brokers[index]),
                        via(true, &brokers[busy.request.broker])
                    );
                    queued.push_back(request);
                }
            }
        }

        let now = Instant::now();
        if job.as_ref().is_some_and(|job| now >= job.done_at) && !shutdown.requested() {
            if let Some(done) = job.take() {
                if brokers[done.request.broker].send_reply(&done.request, settings)? {
                    replies += 1;
                    faults.crash_if_due(replies)?;
                }
            }
            while let Some(request) = queued.pop_front() {
                let broker = &brokers[request.broker];
                if request.connection != broker.connection {
                    info!(
                        "request from client {} not served: the connection to the broker at \
                         {} it came on has closed since (the client resends it)",
                        request.client(),
                        broker.endpoint
                    );
                    continue;
                }
                job = Some(start(request, settings, several.then_some(&brokers)));
                if faults.hang_if_due(replies, shutdown) {
                    break 'serving;
                }
                break;
            }
            if job.is_none() && dropped_while_busy > 0 {
                warn!(
                    "{} dropped while busy, the queue full",
                    Count::new(std::mem::take(&mut dropped_while_busy), "request")
                );
            }
        }
        for (index, broker) in brokers.iter_mut().enumerate() {
            // READY means idle: never while a request from this broker, on
            // its current connection, is in hand or waiting. One from a
            // closed connection is no request of the broker there now.
            let from_here = |request: &Request| {
                request.broker == index && request.connection == broker.connection
            };
            let holding = job.as_ref().is_some_and(|job| from_here(&job.request))
                || queued.iter().any(from_here);
            broker.tick(now, holding)?;
        }
    }

    if let Some(job) = job {
        info!(
            "stopped mid-request from client {}; no reply sent",
            job.request.client()
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

/// " via tcp://…", naming the broker in a log line when there are several.
fn via(several: bool, broker: &Broker) -> String {
    if several {
        format!(" via {}", broker.endpoint)
    } else {
        String::new()
    }
}

/// Begins the work on a request; `brokers` to name its broker in the log.
fn start(request: Request, settings: &Settings, brokers: Option<&[Broker]>) -> Job {
    // `classify` said Work, so there is an envelope.
    let frames = &request.frames;
    let body = body_start(frames).unwrap_or(frames.len());
    info!(
        "request {} from client {}{}",
        show_frames(&frames[body..]),
        request.client(),
        brokers.map_or_else(String::new, |brokers| via(true, &brokers[request.broker]))
    );
    Job {
        request,
        done_at: Instant::now() + settings.work,
    }
}

/// A broker, as this worker sees it: the socket to it and what the worker
/// knows of it.
struct Broker {
    ctx: zmq::Context,
    endpoint: String,
    name: String,
    heartbeat: Duration,
    // Declared before `watch`, so dropped (closed) before it: see `Watch`.
    socket: zmq::Socket,
    watch: Watch,
    /// Counts the connections lost and the sockets replaced: a request
    /// keeps the value it arrived with, and its reply is sent only while
    /// the value is the same, over the same connection.
    connection: u64,
    /// Any message from the broker counts as a sign of life, and so does a
    /// connection to it completing its handshake.
    last_heard: Instant,
    next_heartbeat: Instant,
    /// When the current connection came up; `None` while there is none.
    up_since: Option<Instant>,
    /// Whether any connection to this broker, on any socket, ever came up.
    ever_up: bool,
    /// Whether a HEARTBEAT came on it: an lb broker sends one every
    /// interval, a proxy broker's DEALER never does.
    heard_heartbeat: bool,
    told_not_lb: bool,
    told_unexpected: bool,
    /// READY is due: the connection is new, or this worker was stopped
    /// long enough for the broker to forget it.
    owes_ready: bool,
    /// When a new socket is due, once the broker was found silent.
    reconnect_at: Option<Instant>,
    backoff: Backoff,
    /// The previous tick: a long gap means this process was stopped
    /// (SIGSTOP, `docker pause`) or starved, and silent meanwhile.
    last_tick: Instant,
}

impl Broker {
    /// Opens a DEALER to the backend of the broker at `endpoint`.
    fn connect(ctx: &zmq::Context, endpoint: &str, settings: &Settings) -> anyhow::Result<Broker> {
        let (socket, watch) = open(ctx, endpoint)?;
        let now = Instant::now();
        Ok(Broker {
            ctx: ctx.clone(),
            endpoint: endpoint.to_owned(),
            name: settings.name.clone(),
            heartbeat: settings.heartbeat,
            socket,
            watch,
            connection: 0,
            last_heard: now,
            next_heartbeat: now + settings.heartbeat,
            up_since: None,
            ever_up: false,
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
                Change::Up => {
                    let now = Instant::now();
                    self.up_since = Some(now);
                    // A completed ZeroMQ handshake is the broker process
                    // answering, and its first HEARTBEAT is due up to an
                    // interval after our READY (it heartbeats on a timer of
                    // its own): the silence is counted from here, not from
                    // when the socket was opened, maybe seconds before the
                    // broker came back. The new socket a silence had made
                    // due is no longer needed. This hides no hung broker:
                    // a frozen process completes no handshake, and one whose
                    // loop hangs (libzmq's I/O thread still shakes hands) is
                    // found silent one expiry after each new connection.
                    self.last_heard = now;
                    self.reconnect_at = None;
                    self.heard_heartbeat = false;
                    self.owes_ready = true;
                    // Counted over every socket: a replaced socket's first
                    // connection is a return too.
                    if std::mem::replace(&mut self.ever_up, true) {
                        info!(
                            "connected to the broker at {} again; announcing this worker with \
                             READY",
                            self.endpoint
                        );
                    }
                }
                Change::Down => {
                    self.up_since = None;
                    self.connection += 1;
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
                // No READY (see the module docs).
                info!("the broker at {} answers again", self.endpoint);
            }
            self.last_heard = now;
            self.backoff.reset();
            match protocol::classify(&frames) {
                Frames::Heartbeat => self.heard_heartbeat = true,
                Frames::Work => requests.push(frames),
                Frames::Ready(_) | Frames::Malformed => {
                    if !std::mem::replace(&mut self.told_unexpected, true) {
                        warn!(
                            "unexpected message from the broker at {} {}; ignored (and any \
                             more like it, silently)",
                            self.endpoint,
                            show_frames(&frames)
                        );
                    }
                }
            }
        }
        Ok(requests)
    }

    /// Sends the reply to `request` inside the request's envelope, over
    /// the connection the request came on; `false` if it is gone. Never
    /// waits: the other brokers' heartbeats must not wait behind it.
    fn send_reply(&self, request: &Request, settings: &Settings) -> anyhow::Result<bool> {
        let lost = |why: &str| {
            info!(
                "reply to client {} not sent: {why} (the client resends the request)",
                request.client()
            );
            Ok(false)
        };
        if request.connection != self.connection {
            return lost(&format!(
                "the connection to the broker at {} that brought the request has closed since, \
                 and the broker process holding the request with it",
                self.endpoint
            ));
        }
        let frames = &request.frames;
        let body = body_start(frames).unwrap_or(frames.len());
        let envelope = frames[..body].iter().map(Vec::as_slice);
        let reply = settings.reply.to(&frames[body..]);
        match self
            .socket
            .send_multipart(envelope.chain(reply), zmq::DONTWAIT)
        {
            Ok(()) => Ok(true),
            // ZMQ_IMMEDIATE: no connection (it has just broken), or its
            // queue is full.
            Err(zmq::Error::EAGAIN) => lost(&format!(
                "the connection to the broker at {} takes nothing now",
                self.endpoint
            )),
            Err(error) => Err(error.into()),
        }
    }

    /// Heartbeats, the READY owed, and liveness. `holding`: the worker
    /// holds a request from this broker, so it is not idle.
    fn tick(&mut self, now: Instant, holding: bool) -> anyhow::Result<()> {
        let expiry = protocol::expiry(self.heartbeat);
        // Stopped or starved for more than two intervals: its last message
        // may have left up to an interval before, so the broker may have
        // heard nothing for three, and forgotten this worker.
        let forgotten_after = self.heartbeat * (protocol::MISSED_HEARTBEATS - 1);
        let gap = now.duration_since(std::mem::replace(&mut self.last_tick, now));
        if gap > forgotten_after {
            self.owes_ready = true;
        }
        // The loop comes here at least every CHECK_INTERVAL_MS: beyond
        // that (and a margin), the worker itself did not run, and heard
        // nothing through no fault of the broker. That time counts in no
        // silence of the broker's (what the broker sent meanwhile was read
        // just before, in `receive`).
        let own_stop = gap.saturating_sub(Duration::from_millis(2 * CHECK_INTERVAL_MS as u64));
        if !own_stop.is_zero() {
            self.last_heard = (self.last_heard + own_stop).min(now);
            self.reconnect_at = self.reconnect_at.map(|at| at + own_stop);
        }
        let up = self.watch.is_up();
        // READY first: a new broker then learns the worker's name before
        // its first heartbeat.
        if self.owes_ready && up && !holding {
            let ready = [&[READY][..], self.name.as_bytes()];
            if self.socket.send_multipart(ready, zmq::DONTWAIT).is_ok() {
                self.owes_ready = false;
            }
        }
        if now >= self.next_heartbeat {
            // Only on a live connection (ZMQ_IMMEDIATE queues nothing
            // without one), and never waiting.
            if up {
                let _ = self.socket.send(&[HEARTBEAT][..], zmq::DONTWAIT);
            }
            self.next_heartbeat = now + self.heartbeat;
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
                    ""
                } else {
                    " (no connection: is it running?)"
                };
                warn!(
                    "broker silent for {:.1} s at {}{why}; reconnecting in {} s",
                    silent_for.as_secs_f64(),
                    self.endpoint,
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
                // Nothing that came on the old socket can be answered on
                // this one.
                self.connection += 1;
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
    // Sends go only to a live connection; what a broken one brought and was
    // not read yet is thrown away (see the module docs).
    socket.set_immediate(true)?;
    // Besides our HEARTBEAT: ZMTP heartbeats, whatever --heartbeat-ms is.
    keepalive::enable(&socket)?;
    credentials::apply(&socket)?; // src/security/: what the broker may ask for
    let watch = Watch::new(ctx, &socket)?;
    socket
        .connect(endpoint)
        .map_err(UsageError::at("--connect", endpoint))?;
    Ok((socket, watch))
}
