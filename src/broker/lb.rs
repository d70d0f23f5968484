//! `broker --mode lb`: the load-balancing broker of the lecture.
//!
//! ```text
//! REQ clients ──> ROUTER frontend │ broker │ ROUTER backend <── DEALER workers
//!                                   idle workers, least recently used first
//! ```
//!
//! Both sides are ROUTERs, so the broker chooses where each request goes
//! instead of leaving it to a DEALER's round robin:
//!
//! - a worker joins by sending READY and goes to the back of the idle queue;
//! - a request goes to the worker at the front, the one idle the longest
//!   (a FIFO queue, so work spreads evenly; a stack would wear out one worker);
//! - the broker keeps a copy of the request each busy worker holds, and
//!   forwards a reply only from the worker holding a request with that very
//!   envelope (client identity, and the request id a REQ with
//!   ZMQ_REQ_CORRELATE adds), which puts the worker at the back of the idle
//!   queue again; a duplicate, stale or forged reply is dropped, never taken
//!   for the answer to another request;
//! - while no worker is idle, the frontend is not read at all: requests wait
//!   in libzmq's queues inside the broker, the frontend ROUTER's pipe for
//!   each client connection (where a REQ client's request in flight waits);
//!   only a client with more in flight than the pipe's receive high-water
//!   mark (a DEALER) finds TCP's buffers and then its own send queue filling
//!   behind it: back-pressure, not an unbounded list here;
//! - heartbeats both ways, every `--heartbeat-ms`; a worker keeps sending
//!   them while it works. One not heard from for 3 intervals expires: an
//!   idle one is forgotten; a busy one gets no more work, but the broker
//!   keeps its request, because it *may* still be answered, until its
//!   connection closes.
//!
//! The broker never drops a request it could keep. A request that no idle
//! worker could take after all (gone, or not reading) is held, and the
//! frontend is not read until a worker is idle again. And the copy of a
//! request goes to the next idle worker when the worker holding it turns
//! out to be gone (its connection closed). A worker that took the request
//! and then lost its connection may have done the work already: like a
//! client's resend ([`crate::lazy_pirate`]), this is *at least once*, and a
//! request that must not be carried out twice needs an id its server
//! remembers. The client still gets one reply: only the worker now holding
//! the request may answer it.
//!
//! A READY from a worker that holds a request is no reason to hand the
//! request on: a worker sends READY only while it holds no request from
//! this broker, so this READY left the worker before the request reached
//! it (they crossed on the wire), and the worker will answer it.
//!
//! Why a request can go to a closed connection at all: ROUTER_MANDATORY
//! refuses a message for a peer only once the socket has processed that
//! peer's end (libzmq's `router.cpp`: the pipe is no longer active, or no
//! longer known). A worker's connection that closed a moment ago, its close
//! still on its way through libzmq's threads, takes the message, and
//! libzmq drops it with the pipe. The broker learns it at its next
//! heartbeat to that worker, which is then refused.
//!
//! A broker that was itself stopped (SIGSTOP, `docker compose pause`, a
//! debugger) or starved of CPU heard nothing meanwhile, through no fault of
//! its workers: the loop measures how late it runs, and counts that time in
//! no worker's silence. Its workers may have given up on it meanwhile and
//! opened new connections, so right after such a stop the broker checks its
//! workers' connections again, a tenth of a second later, instead of one
//! heartbeat later.
//!
//! The frames on the wire are described in [`crate::protocol`].

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::dashboard::{self, Journal, Kind, Publisher, Snapshot, WorkerView};
use super::{
    BURST, Problem, Refused, Traffic, deliver_reply, next_request, peer_of, recv_message,
    send_message,
};
use crate::envelope::{body_start, client_of, hex};
use crate::payload::{show, text};
use crate::plumbing::logging::Count;
use crate::plumbing::shutdown::{CHECK_INTERVAL_MS, Shutdown};
use crate::protocol::{self, Frames, HEARTBEAT, MISSED_HEARTBEATS};

/// Settings of the load-balancing loop.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Interval between heartbeats (`--heartbeat-ms`).
    pub heartbeat: Duration,
}

/// How soon after a stop of its own the broker checks its workers'
/// connections again (see the module docs).
const RECHECK_AFTER_STOP: Duration = Duration::from_millis(100);

/// How many departed workers the broker remembers (see [`Departed`]).
const DEPARTED_KEPT: usize = 1024;

/// A request as it came from the frontend: `[client, ..., "", body...]`.
type Request = Vec<zmq::Message>;

/// The copy of a request that a worker holds, kept until it is answered.
#[derive(Debug)]
struct Held {
    frames: Vec<Vec<u8>>,
    /// Where the body starts: the frames before it are the envelope.
    body: usize,
}

impl Held {
    fn of(request: &Request) -> Held {
        Held {
            frames: request.iter().map(|frame| frame.to_vec()).collect(),
            body: body_start(request).unwrap_or(request.len()),
        }
    }

    fn client(&self) -> String {
        client_of(&self.frames)
    }

    /// The request again, to hand to another worker.
    fn into_request(self) -> Request {
        self.frames.into_iter().map(zmq::Message::from).collect()
    }
}

/// A worker the broker knows, keyed by its identity.
#[derive(Debug)]
struct Worker {
    /// From its READY; `None` while it is known by its heartbeats only.
    name: Option<String>,
    last_heard: Instant,
    /// [`Workers::away`] when it was last heard from: the broker's own
    /// stops since then are no silence of the worker's.
    away_then: Duration,
    /// The request it holds; `None` while idle.
    holds: Option<Held>,
    /// Expired while holding a request: it gets no work, but a reply it
    /// still sends for that request is delivered.
    silent: bool,
    /// Requests it answered (for the page).
    served: u64,
}

impl Worker {
    fn new(name: Option<String>, now: Instant, away: Duration) -> Worker {
        Worker {
            name,
            last_heard: now,
            away_then: away,
            holds: None,
            silent: false,
            served: 0,
        }
    }

    fn holds_envelope_of<F: std::ops::Deref<Target = [u8]>>(&self, reply: &[F]) -> bool {
        let (Some(held), Some(body)) = (&self.holds, body_start(reply)) else {
            return false;
        };
        held.body == body
            && held.frames[..held.body]
                .iter()
                .zip(reply)
                .all(|(a, b)| a[..] == b[..])
    }
}

/// Why a worker was forgotten.
#[derive(Debug, Clone)]
enum Departure {
    /// Its connection closed: anything still read from that identity was
    /// sent before, and is stale.
    Closed,
    /// Silent too long while idle, its connection still open: it may
    /// speak again, under the name it had.
    Expired(Option<String>),
}

/// The last [`DEPARTED_KEPT`] workers forgotten, and why: libzmq gives
/// every new connection a new identity, so a message from one of them is
/// either stale (sent before its connection closed, read after) or from a
/// worker that was forgotten for its silence and speaks again.
#[derive(Debug, Default)]
struct Departed {
    why: HashMap<Vec<u8>, Departure>,
    order: VecDeque<Vec<u8>>,
}

impl Departed {
    fn record(&mut self, id: &[u8], departure: Departure) {
        if self.order.len() == DEPARTED_KEPT {
            if let Some(oldest) = self.order.pop_front() {
                self.why.remove(&oldest);
            }
        }
        if self.why.insert(id.to_vec(), departure).is_none() {
            self.order.push_back(id.to_vec());
        }
    }

    fn get(&self, id: &[u8]) -> Option<&Departure> {
        self.why.get(id)
    }

    fn forget(&mut self, id: &[u8]) {
        if self.why.remove(id).is_some() {
            self.order.retain(|kept| kept != id);
        }
    }
}

/// What a reply from a worker is to the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// The answer to the request that worker holds.
    Held,
    /// The same, from a worker that had been found silent.
    AfterSilence,
    /// Not the answer to anything that worker holds.
    NotHeld,
}

/// The workers, the idle queue, and the requests waiting for a worker.
#[derive(Debug)]
struct Workers {
    known: HashMap<Vec<u8>, Worker>,
    idle: VecDeque<Vec<u8>>,
    /// Requests no idle worker could take yet, oldest first; while there is
    /// one, the frontend is not read. At most one from the frontend, and one
    /// from each worker that was found gone holding a request.
    waiting: VecDeque<Request>,
    departed: Departed,
    heartbeat: Duration,
    /// When the loop is due to look at the clock next, at the latest: it is
    /// late by as much as this broker did not run (see
    /// [`Workers::on_time`]).
    due: Instant,
    /// How long in all this broker did not run.
    away: Duration,
    /// The last stop of this broker worth a line: when it ended, and how
    /// long it was.
    last_stop: Option<(Instant, Duration)>,
    /// After such a stop: when to check the workers' connections once more
    /// (see the module docs).
    recheck: Option<Instant>,
    /// What happened to workers lately, for the page.
    journal: Journal,
    /// Requests answered by workers since forgotten, for the page.
    served_by_gone: u64,
}

/// A worker's name, or its identity while it has none: the page's label
/// (log lines give both, see [`label`]).
fn shown(id: &[u8], name: Option<&str>) -> String {
    name.map_or_else(|| hex(id), str::to_string)
}

/// A worker as log lines name it: `name (identity)`, or its identity alone
/// while it has no name.
fn label(id: &[u8], name: Option<&str>) -> String {
    match name {
        Some(name) => format!("{name} ({})", hex(id)),
        None => hex(id),
    }
}

impl Workers {
    fn new(heartbeat: Duration) -> Workers {
        Workers {
            known: HashMap::new(),
            idle: VecDeque::new(),
            waiting: VecDeque::new(),
            departed: Departed::default(),
            heartbeat,
            due: Instant::now(),
            away: Duration::ZERO,
            last_stop: None,
            recheck: None,
            journal: Journal::default(),
            served_by_gone: 0,
        }
    }

    /// [`shown`], for a worker looked up by its identity.
    fn shown(&self, id: &[u8]) -> String {
        shown(id, self.name_of(id))
    }

    /// [`label`], for a worker looked up by its identity.
    fn label(&self, id: &[u8]) -> String {
        label(id, self.name_of(id))
    }

    fn name_of(&self, id: &[u8]) -> Option<&str> {
        self.known.get(id).and_then(|worker| worker.name.as_deref())
    }

    /// Looks at the clock, `now`, and counts as time this broker did not
    /// run however late that is (stopped, or starved of CPU): no worker
    /// could be heard meanwhile, so that time counts in no worker's silence.
    /// A stop of a heartbeat or more is said, and makes the broker check its
    /// workers' connections again soon.
    fn on_time(&mut self, now: Instant) {
        let late = now.saturating_duration_since(self.due);
        self.due = now;
        self.away += late;
        if late < self.heartbeat {
            return;
        }
        warn!(
            "stopped for {:.1} s (paused, or starved of CPU): its workers' silence meanwhile \
             was its own, and counts against none of them",
            late.as_secs_f64()
        );
        self.last_stop = Some((now, late));
        self.recheck = Some(now + RECHECK_AFTER_STOP);
    }

    /// The length of this broker's last stop, if it ended less than an
    /// expiry ago: a worker's connection closed since was most likely
    /// closed by the worker, which heard nothing from this broker.
    fn just_stopped(&self, now: Instant) -> Option<Duration> {
        let (ended, length) = self.last_stop?;
        (now.duration_since(ended) <= protocol::expiry(self.heartbeat)).then_some(length)
    }

    /// Records news from a worker; `None` if the worker is unknown. A
    /// worker that had expired while busy is trusted again.
    fn heard(&mut self, id: &[u8], now: Instant) -> Option<&mut Worker> {
        // Two fields borrowed apart: the journal is written while the
        // worker is held, without looking it up twice.
        let Workers {
            known,
            journal,
            away,
            ..
        } = self;
        let worker = known.get_mut(id)?;
        worker.last_heard = now;
        worker.away_then = *away;
        if worker.silent {
            worker.silent = false;
            let client = worker.holds.as_ref().map(Held::client).unwrap_or_default();
            let name = worker.name.as_deref();
            info!(
                "worker {} is heard from again, still holding the request from client {client}",
                label(id, name)
            );
            journal.record(
                Kind::Back,
                &shown(id, name),
                format!("heard from again, still holding the request from client {client}"),
            );
        }
        Some(worker)
    }

    /// Whether a message from `id` is stale: sent before its connection
    /// closed, and read after the broker forgot it for that (see
    /// [`Departed`]). Such a message says nothing about any worker.
    fn stale(&self, id: &[u8]) -> bool {
        !self.known.contains_key(id) && matches!(self.departed.get(id), Some(Departure::Closed))
    }

    /// The name a worker forgotten for its silence had, if `id` is one.
    fn expired_name(&mut self, id: &[u8]) -> Option<Option<String>> {
        let Some(Departure::Expired(name)) = self.departed.get(id) else {
            return None;
        };
        let name = name.clone();
        self.departed.forget(id);
        Some(name)
    }

    /// READY: the worker is idle and tells its name. It joins, or is named
    /// if it was known by its heartbeats only. A READY from a worker that
    /// holds a request crossed that request on the way (see the module
    /// docs).
    fn ready(&mut self, id: &[u8], name: &[u8], now: Instant) {
        if self.stale(id) {
            return;
        }
        // The name comes from the network: escaped, it cannot carry
        // terminal control sequences into the log.
        let name = text(name).to_string();
        let Some(worker) = self.heard(id, now) else {
            let (kind, how) = if self.expired_name(id).is_some() {
                (
                    Kind::Rejoined,
                    "announced itself again (READY) after it expired",
                )
            } else if self.journal.expired_earlier(&name) {
                (
                    Kind::Rejoined,
                    "announced itself again (READY), on a new connection",
                )
            } else {
                (Kind::Joined, "announced itself (READY)")
            };
            self.journal.record(kind, &name, how);
            self.known
                .insert(id.to_vec(), Worker::new(Some(name), now, self.away));
            self.idle.push_back(id.to_vec());
            info!("worker {} ready", self.label(id));
            return;
        };
        let renamed = worker.name.as_deref() != Some(name.as_str());
        worker.name = Some(name);
        // A worker sends READY only while it holds no request from this
        // broker: this one left before the request arrived, and the worker
        // answers the request once it has it. It stays busy meanwhile.
        if let Some(held) = &worker.holds {
            let client = held.client();
            info!(
                "worker {} announced itself idle (READY) while holding a request from client \
                 {client}: the READY left it before the request arrived; its reply is still \
                 expected",
                self.label(id),
            );
        }
        if renamed {
            info!("worker {} ready", self.label(id));
            let shown = self.shown(id);
            self.journal
                .record(Kind::Named, &shown, format!("is the name of {}", hex(id)));
        }
    }

    /// HEARTBEAT: news from a known worker. A worker forgotten for its
    /// silence rejoins, idle, under the name it had. An unknown one joins,
    /// idle and nameless: after a broker restart, a running worker's READY
    /// went to the old broker, and its heartbeats may come before its next
    /// READY.
    fn heartbeat(&mut self, id: &[u8], now: Instant) {
        if self.heard(id, now).is_some() || self.stale(id) {
            return;
        }
        if let Some(name) = self.expired_name(id) {
            self.known
                .insert(id.to_vec(), Worker::new(name, now, self.away));
            self.idle.push_back(id.to_vec());
            let shown = self.shown(id);
            self.journal.record(
                Kind::Rejoined,
                &shown,
                "heard from again after it expired: idle again",
            );
            info!(
                "worker {} is heard from again after it expired: idle again",
                self.label(id)
            );
            return;
        }
        self.known
            .insert(id.to_vec(), Worker::new(None, now, self.away));
        self.idle.push_back(id.to_vec());
        self.journal.record(
            Kind::Rejoined,
            &hex(id),
            "rejoined on its heartbeat (it announced itself to an earlier broker)",
        );
        info!(
            "worker {} rejoined on its heartbeat (it announced itself to an earlier broker); \
             its name comes with its next READY",
            hex(id)
        );
    }

    /// A reply from worker `id`: whether it answers the request that worker
    /// holds, which makes the worker idle again.
    fn answered<F: std::ops::Deref<Target = [u8]>>(
        &mut self,
        id: &[u8],
        reply: &[F],
        now: Instant,
    ) -> Answer {
        let away = self.away;
        let Some(worker) = self.known.get_mut(id) else {
            return Answer::NotHeld;
        };
        worker.last_heard = now;
        worker.away_then = away;
        if !worker.holds_envelope_of(reply) {
            return Answer::NotHeld;
        }
        worker.holds = None;
        worker.served += 1;
        let silent = std::mem::take(&mut worker.silent);
        self.idle.push_back(id.to_vec());
        if silent {
            Answer::AfterSilence
        } else {
            Answer::Held
        }
    }

    /// Says what became of the reply of a worker that had been found
    /// silent, once the broker has tried to deliver it.
    fn answered_after_all(&mut self, id: &[u8], client: &str, delivered: Result<(), Refused>) {
        let label = self.label(id);
        let shown = self.shown(id);
        match delivered {
            Ok(()) => {
                info!(
                    "worker {label} answered after all: the reply for client {client} is delivered"
                );
                self.journal
                    .record(Kind::Back, &shown, "answered after all");
            }
            Err(refused) => {
                let why = match refused {
                    Refused::NoSuchPeer => "is gone",
                    Refused::Busy => "is not reading",
                };
                info!(
                    "worker {label} answered after all, but client {client} {why}: the reply is \
                     dropped"
                );
                self.journal.record(
                    Kind::Back,
                    &shown,
                    format!("answered after all, but client {client} {why}"),
                );
            }
        }
    }

    /// Expires the workers silent for longer than `expiry`, counting none
    /// of the time this broker itself did not run.
    fn expire_silent(&mut self, now: Instant, expiry: Duration) {
        let silent: Vec<Vec<u8>> = self
            .known
            .iter()
            .filter(|(_, w)| {
                let stopped_since = self.away.saturating_sub(w.away_then);
                !w.silent
                    && now
                        .duration_since(w.last_heard)
                        .saturating_sub(stopped_since)
                        > expiry
            })
            .map(|(id, _)| id.clone())
            .collect();
        let why = format!(
            "silent for {:.1} s ({MISSED_HEARTBEATS} heartbeats of {} ms)",
            expiry.as_secs_f64(),
            self.heartbeat.as_millis()
        );
        for id in silent {
            let label = self.label(&id);
            let shown = self.shown(&id);
            let why = why.clone();
            let Some(worker) = self.known.get_mut(&id) else {
                continue;
            };
            match &worker.holds {
                None => {
                    let name = worker.name.clone();
                    self.forget(&id);
                    self.departed.record(&id, Departure::Expired(name));
                    warn!("worker {label} expired: {why}");
                    self.journal.record(Kind::Expired, &shown, why);
                }
                Some(held) => {
                    worker.silent = true;
                    let client = held.client();
                    warn!(
                        "worker {label} expired: {why} while holding a request from client \
                         {client}, which may be lost (a client with a timeout resends it); its \
                         reply is still delivered if it comes",
                    );
                    self.journal.record(
                        Kind::Silent,
                        &shown,
                        format!(
                            "{why} while holding a request from client {client}: no more work \
                             for it"
                        ),
                    );
                }
            }
        }
    }

    /// The worker's connection is closed (the backend refused to send to
    /// it): forgets it, and hands the request it held, if any, to the next
    /// idle worker.
    fn gone(&mut self, id: &[u8]) {
        // A stop may have come between the refused send and here: said
        // first, so that this line can tell.
        let now = Instant::now();
        self.on_time(now);
        let label = self.label(id);
        let shown = self.shown(id);
        let Some(worker) = self.forget(id) else {
            return;
        };
        self.departed.record(id, Departure::Closed);
        // Right after a stop of this broker, the likely story is the
        // worker's: it heard nothing, and opened a new connection.
        let what = match self.just_stopped(now) {
            Some(stop) => format!(
                "left: its connection is closed (this broker was stopped for {:.1} s just \
                 before, and a worker that hears nothing from its broker opens a new connection)",
                stop.as_secs_f64()
            ),
            None => "expired: its connection is closed".to_string(),
        };
        match worker.holds {
            Some(held) => {
                let client = held.client();
                self.waiting.push_front(held.into_request());
                warn!(
                    "worker {label} {what}; the request it held from client {client} goes to \
                     the next idle worker"
                );
                self.journal.record(
                    Kind::Expired,
                    &shown,
                    format!(
                        "{what}; the request it held from client {client} goes to the next \
                         idle worker"
                    ),
                );
            }
            None => {
                warn!("worker {label} {what}");
                self.journal.record(Kind::Expired, &shown, what);
            }
        }
    }

    fn forget(&mut self, id: &[u8]) -> Option<Worker> {
        let worker = self.known.remove(id)?;
        if worker.holds.is_none() {
            self.idle.retain(|idle| idle != id);
        }
        self.served_by_gone += worker.served;
        Some(worker)
    }

    /// The workers, the idle queue and the events, for the page.
    fn show(&self, snapshot: &mut Snapshot, now: Instant) {
        let workers = self
            .known
            .iter()
            .map(|(id, worker)| WorkerView {
                name: worker.name.clone(),
                id: hex(id),
                state: match (&worker.holds, worker.silent) {
                    (None, _) => "idle",
                    (Some(_), false) => "busy",
                    (Some(_), true) => "silent",
                },
                served: worker.served,
                last_heard_ms: now.saturating_duration_since(worker.last_heard).as_millis() as u64,
            })
            .collect();
        snapshot.set_workers(workers);
        snapshot.idle_queue = self
            .idle
            .iter()
            .take(dashboard::SHOWN)
            .map(|id| self.shown(id))
            .collect();
        snapshot.served_by_gone = self.served_by_gone;
        snapshot.events = self.journal.to_vec();
    }

    /// Hands `request` to the idle worker waiting longest. Gives the request
    /// back if no idle worker can take it: every one turned out to be gone,
    /// or not reading its queue.
    fn dispatch(
        &mut self,
        backend: &zmq::Socket,
        mut request: Request,
        traffic: &mut Traffic,
    ) -> Result<(), Request> {
        for _ in 0..self.idle.len() {
            let Some(id) = self.idle.pop_front() else {
                break;
            };
            // The copy, made before the request leaves: the worker may be
            // gone, and the request then goes to another one.
            let held = Held::of(&request);
            match send_message(backend, Some(&id), request) {
                Ok(()) => {
                    if let Some(worker) = self.known.get_mut(&id) {
                        worker.holds = Some(held);
                    }
                    return Ok(());
                }
                Err((Refused::NoSuchPeer, back)) => {
                    self.gone(&id);
                    request = back;
                }
                Err((Refused::Busy, back)) => {
                    traffic.warnings.warn(Problem::WorkerNotReading, || {
                        format!(
                            "worker {} is idle but not reading its queue; trying another",
                            self.label(&id)
                        )
                    });
                    self.idle.push_back(id);
                    request = back;
                }
            }
        }
        Err(request)
    }

    /// Hands the requests waiting for a worker to idle ones, oldest first,
    /// as long as some worker takes them.
    fn dispatch_waiting(&mut self, backend: &zmq::Socket, traffic: &mut Traffic) {
        while !self.idle.is_empty() {
            let Some(request) = self.waiting.pop_front() else {
                break;
            };
            let client = client_of(&request);
            match self.dispatch(backend, request, traffic) {
                Ok(()) => {
                    info!("the held request from client {client} went to a worker now idle");
                }
                Err(request) => {
                    self.waiting.push_front(request);
                    break;
                }
            }
        }
    }
}

/// Balances requests from a bound ROUTER `frontend` over the workers of a
/// bound ROUTER `backend` until a stop is asked for, publishing what it
/// knows to `page` (`--http`), if given, a few times a second.
///
/// Both sockets should have ZMQ_ROUTER_MANDATORY set: sending to an identity
/// that is not connected then fails, which tells the broker a worker (or a
/// client) has gone, instead of the message vanishing.
pub fn run(
    frontend: &zmq::Socket,
    backend: &zmq::Socket,
    options: Options,
    mut page: Option<Publisher>,
    shutdown: &Shutdown,
) -> zmq::Result<Traffic> {
    let mut traffic = Traffic::new();
    let mut workers = Workers::new(options.heartbeat);
    let expiry = protocol::expiry(options.heartbeat);
    let mut next_heartbeat = Instant::now() + options.heartbeat;

    while !shutdown.requested() {
        let now = Instant::now();
        workers.on_time(now);
        // Back-pressure: read requests only while some worker is idle.
        let front_events = if workers.waiting.is_empty() && !workers.idle.is_empty() {
            zmq::POLLIN
        } else {
            zmq::PollEvents::empty()
        };
        let mut items = [
            frontend.as_poll_item(front_events),
            backend.as_poll_item(zmq::POLLIN),
        ];
        let next_check = workers
            .recheck
            .map_or(next_heartbeat, |at| at.min(next_heartbeat));
        // Rounded up, not to spin through the last fraction of a millisecond.
        let timeout = next_check
            .saturating_duration_since(now)
            .as_micros()
            .div_ceil(1000)
            .min(CHECK_INTERVAL_MS as u128) as i64;
        workers.due = now + Duration::from_millis(timeout as u64);
        match zmq::poll(&mut items, timeout) {
            Ok(_) | Err(zmq::Error::EINTR) => {}
            Err(error) => return Err(error),
        }
        // A stop during the poll, counted before anything is read.
        let now = Instant::now();
        workers.on_time(now);

        if items[1].is_readable() {
            from_workers(backend, frontend, &mut workers, &mut traffic)?;
        }
        workers.dispatch_waiting(backend, &mut traffic);
        if items[0].is_readable() && workers.waiting.is_empty() {
            to_workers(frontend, backend, &mut workers, &mut traffic)?;
        }

        // A stop during the work above, counted before anyone is judged:
        // silence is measured up to this `now`, whatever comes after it.
        let now = Instant::now();
        workers.on_time(now);
        let heartbeat_due = now >= next_heartbeat;
        if heartbeat_due || workers.recheck.is_some_and(|at| now >= at) {
            send_heartbeats(backend, &mut workers);
            workers.dispatch_waiting(backend, &mut traffic);
            if heartbeat_due {
                next_heartbeat = now + options.heartbeat;
            }
            // Done, unless a stop during the heartbeats asked for another.
            if workers.recheck.is_some_and(|at| at <= now) {
                workers.recheck = None;
            }
        }
        workers.expire_silent(now, expiry);
        traffic.tick(now, || {
            format!(
                "; idle workers: {} of {}",
                workers.idle.len(),
                workers.known.len()
            )
        });
        if let Some(page) = &mut page {
            // The same condition as the frontend's poll flags above.
            let paused = !workers.waiting.is_empty() || workers.idle.is_empty();
            page.tick(now, traffic.counts(), |snapshot| {
                snapshot.heartbeat_ms = Some(options.heartbeat.as_millis() as u64);
                snapshot.frontend_paused = paused;
                workers.show(snapshot, now);
            });
        }
    }
    for request in &workers.waiting {
        let client = client_of(request);
        info!("a request from client {client} was still held (no idle worker); not served");
    }
    traffic.log_total();
    Ok(traffic)
}

/// Handles up to [`BURST`] messages from workers: READY, HEARTBEAT, replies.
fn from_workers(
    backend: &zmq::Socket,
    frontend: &zmq::Socket,
    workers: &mut Workers,
    traffic: &mut Traffic,
) -> zmq::Result<()> {
    for _ in 0..BURST {
        let Some(mut frames) = recv_message(backend)? else {
            break;
        };
        let now = Instant::now();
        let id = frames.remove(0).to_vec();
        match protocol::classify(&frames) {
            Frames::Ready(name) => workers.ready(&id, name, now),
            Frames::Heartbeat => workers.heartbeat(&id, now),
            Frames::Work => match workers.answered(&id, &frames, now) {
                Answer::Held => {
                    let _ = deliver_reply(frontend, frames, traffic);
                }
                Answer::AfterSilence => {
                    let client = client_of(&frames);
                    let delivered = deliver_reply(frontend, frames, traffic);
                    workers.answered_after_all(&id, &client, delivered);
                }
                Answer::NotHeld => {
                    let label = workers.label(&id);
                    traffic.drop(Problem::NotHeld, || {
                        format!(
                            "reply from worker {label} at {} for client {} dropped: that worker \
                             holds no request with this envelope (a duplicate, stale or forged \
                             reply)",
                            peer_of(&mut frames),
                            client_of(&frames)
                        )
                    });
                }
            },
            Frames::Malformed => {
                workers.heard(&id, now);
                let label = workers.label(&id);
                traffic.drop(Problem::Malformed, || {
                    let first = frames
                        .first()
                        .map_or_else(String::new, |frame| show(frame).to_string());
                    format!(
                        "worker {label} from {} sent a message that is neither READY, HEARTBEAT \
                         nor a reply with an envelope ({}, first {first}); dropped",
                        peer_of(&mut frames),
                        Count::new(frames.len() as u64, "frame")
                    )
                });
            }
        }
    }
    Ok(())
}

/// Hands up to [`BURST`] requests to idle workers, least recently used
/// first. The request no idle worker could take, if any, waits in
/// [`Workers::waiting`].
fn to_workers(
    frontend: &zmq::Socket,
    backend: &zmq::Socket,
    workers: &mut Workers,
    traffic: &mut Traffic,
) -> zmq::Result<()> {
    let mut budget = BURST;
    while !workers.idle.is_empty() {
        let Some(request) = next_request(frontend, traffic, &mut budget)? else {
            break;
        };
        if let Err(request) = workers.dispatch(backend, request, traffic) {
            let client = client_of(&request);
            info!(
                "request from client {client} held: no idle worker could take it; the \
                 frontend waits until one is idle"
            );
            workers.waiting.push_back(request);
            break;
        }
    }
    Ok(())
}

/// Tells every worker the broker is alive; forgets those whose connection
/// is gone, handing the requests they held to the next idle workers.
fn send_heartbeats(backend: &zmq::Socket, workers: &mut Workers) {
    let mut gone = Vec::new();
    for id in workers.known.keys() {
        let heartbeat = vec![zmq::Message::from(&[HEARTBEAT][..])];
        if let Err((Refused::NoSuchPeer, _)) = send_message(backend, Some(id), heartbeat) {
            gone.push(id.clone());
        }
    }
    // All of them forgotten before any request is handed on: none goes to
    // another gone worker.
    for id in gone {
        workers.gone(&id);
    }
}
