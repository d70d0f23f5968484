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
//! - the broker remembers the envelope of the request each busy worker
//!   holds, and forwards a reply only from the worker holding a request with
//!   that very envelope (client identity, and the request id a REQ with
//!   ZMQ_REQ_CORRELATE adds), which puts the worker at the back of the idle
//!   queue again; a duplicate, stale or forged reply is dropped, never taken
//!   for the answer to another request;
//! - while no worker is idle, the frontend is not read at all: requests wait
//!   in libzmq's queues inside the broker, the frontend ROUTER's pipe for
//!   each client connection (where a REQ client's request in flight waits);
//!   only a client with more in flight than the pipe's receive high-water
//!   mark (a DEALER) finds TCP's buffers and then its own send queue filling
//!   behind it: back-pressure, not an unbounded list here. A request that
//!   no idle worker could take after all (gone, or not reading) is held, and
//!   the frontend is not read until a worker is idle again: the broker
//!   never drops a request it could keep;
//! - heartbeats both ways, every `--heartbeat-ms`; a worker keeps sending
//!   them while it works. One not heard from for 3 intervals expires: an
//!   idle one is forgotten; a busy one gets no more work, but the broker
//!   keeps its envelope, because the request *may* still be answered, until
//!   its connection closes (which the broker learns when a heartbeat to it
//!   is refused): only then is the request certainly lost.
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

/// A request as it came from the frontend: `[client, ..., "", body...]`.
type Request = Vec<zmq::Message>;

/// A worker the broker knows, keyed by its identity.
#[derive(Debug)]
struct Worker {
    /// From its READY; `None` while it is known by its heartbeats only.
    name: Option<String>,
    last_heard: Instant,
    /// The envelope (every frame up to the empty delimiter) of the request
    /// it holds; `None` while idle.
    holds: Option<Vec<Vec<u8>>>,
    /// Expired while holding a request: it gets no work, but a reply it
    /// still sends for that request is delivered.
    silent: bool,
    /// Requests it answered (for the page).
    served: u64,
}

impl Worker {
    fn holds_envelope_of<F: std::ops::Deref<Target = [u8]>>(&self, reply: &[F]) -> bool {
        let (Some(held), Some(body)) = (&self.holds, body_start(reply)) else {
            return false;
        };
        held.len() == body && held.iter().zip(reply).all(|(a, b)| a[..] == b[..])
    }
}

/// The workers and the queue of idle ones, least recently used first.
#[derive(Debug, Default)]
struct Workers {
    known: HashMap<Vec<u8>, Worker>,
    idle: VecDeque<Vec<u8>>,
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

    /// Records news from a worker; `None` if the worker is unknown. A
    /// worker that had expired while busy is trusted again.
    fn heard(&mut self, id: &[u8], now: Instant) -> Option<&mut Worker> {
        // Two fields borrowed apart: the journal is written while the
        // worker is held, without looking it up twice.
        let Workers { known, journal, .. } = self;
        let worker = known.get_mut(id)?;
        worker.last_heard = now;
        if worker.silent {
            worker.silent = false;
            let client = worker.holds.as_deref().map(client_of).unwrap_or_default();
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

    /// READY: the worker is idle and tells its name. It joins, or is named
    /// if it was known by its heartbeats only. A READY from a worker that
    /// holds a request means it has dropped that request (it restarted).
    fn ready(&mut self, id: &[u8], name: &[u8], now: Instant) {
        // The name comes from the network: escaped, it cannot carry
        // terminal control sequences into the log.
        let name = text(name).to_string();
        let Some(worker) = self.heard(id, now) else {
            let (kind, how) = if self.journal.expired_earlier(&name) {
                (
                    Kind::Rejoined,
                    "announced itself again (READY), on a new connection",
                )
            } else {
                (Kind::Joined, "announced itself (READY)")
            };
            self.journal.record(kind, &name, how);
            self.known.insert(
                id.to_vec(),
                Worker {
                    name: Some(name),
                    last_heard: now,
                    holds: None,
                    silent: false,
                    served: 0,
                },
            );
            self.idle.push_back(id.to_vec());
            info!("worker {} ready", self.label(id));
            return;
        };
        let renamed = worker.name.as_deref() != Some(name.as_str());
        worker.name = Some(name);
        let dropped = worker.holds.take();
        if let Some(envelope) = dropped {
            self.idle.push_back(id.to_vec());
            warn!(
                "worker {} announced itself idle while holding a request from client {}: that \
                 request is lost (a client with a timeout resends it)",
                self.label(id),
                client_of(&envelope)
            );
            let shown = self.shown(id);
            self.journal.record(
                Kind::Restarted,
                &shown,
                format!(
                    "announced itself idle while holding a request from client {}: that request \
                     is lost",
                    client_of(&envelope)
                ),
            );
        } else if renamed {
            info!("worker {} ready", self.label(id));
            let shown = self.shown(id);
            self.journal
                .record(Kind::Named, &shown, format!("is the name of {}", hex(id)));
        }
    }

    /// HEARTBEAT: news from a known worker. An unknown one joins, idle:
    /// after a broker restart, a running worker's READY went to the old
    /// broker, and its heartbeats may come before its next READY.
    fn heartbeat(&mut self, id: &[u8], now: Instant) {
        if self.heard(id, now).is_some() {
            return;
        }
        self.known.insert(
            id.to_vec(),
            Worker {
                name: None,
                last_heard: now,
                holds: None,
                silent: false,
                served: 0,
            },
        );
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

    /// A reply from worker `id`: `true` if it answers the request that
    /// worker holds, which makes the worker idle again.
    fn answered<F: std::ops::Deref<Target = [u8]>>(
        &mut self,
        id: &[u8],
        reply: &[F],
        now: Instant,
    ) -> bool {
        let Workers {
            known,
            idle,
            journal,
            ..
        } = self;
        let Some(worker) = known.get_mut(id) else {
            return false;
        };
        worker.last_heard = now;
        if !worker.holds_envelope_of(reply) {
            return false;
        }
        let envelope = worker.holds.take().unwrap_or_default();
        worker.served += 1;
        if std::mem::take(&mut worker.silent) {
            let name = worker.name.as_deref();
            info!(
                "worker {} answered after all: the reply for client {} is delivered",
                label(id, name),
                client_of(&envelope)
            );
            journal.record(Kind::Back, &shown(id, name), "answered after all");
        }
        idle.push_back(id.to_vec());
        true
    }

    /// Expires the workers silent for longer than `expiry`.
    fn expire_silent(&mut self, now: Instant, expiry: Duration, heartbeat: Duration) {
        let why = || {
            format!(
                "silent for {:.1} s ({MISSED_HEARTBEATS} heartbeats of {} ms)",
                expiry.as_secs_f64(),
                heartbeat.as_millis()
            )
        };
        let silent: Vec<Vec<u8>> = self
            .known
            .iter()
            .filter(|(_, w)| !w.silent && now.duration_since(w.last_heard) > expiry)
            .map(|(id, _)| id.clone())
            .collect();
        for id in silent {
            let label = self.label(&id);
            let shown = self.shown(&id);
            let Some(worker) = self.known.get_mut(&id) else {
                continue;
            };
            match &worker.holds {
                None => {
                    self.forget(&id);
                    warn!("worker {label} expired: {}", why());
                    self.journal.record(Kind::Expired, &shown, why());
                }
                Some(envelope) => {
                    worker.silent = true;
                    let client = client_of(envelope);
                    warn!(
                        "worker {label} expired: {} while holding a request from client {client}, \
                         which may be lost (a client with a timeout resends it); its reply is \
                         still delivered if it comes",
                        why(),
                    );
                    self.journal.record(
                        Kind::Silent,
                        &shown,
                        format!(
                            "{} while holding a request from client {client}: no more work \
                             for it",
                            why()
                        ),
                    );
                }
            }
        }
    }

    /// The worker's connection is closed (the backend refused to send to
    /// it): forgets it, and says whether a request went with it.
    fn gone(&mut self, id: &[u8]) {
        let label = self.label(id);
        let shown = self.shown(id);
        match self.forget(id).and_then(|worker| worker.holds) {
            Some(envelope) => {
                let client = client_of(&envelope);
                warn!(
                    "worker {label} expired: its connection is closed; the request it held from \
                     client {client} is lost (a client with a timeout resends it)"
                );
                self.journal.record(
                    Kind::Expired,
                    &shown,
                    format!(
                        "its connection is closed; the request it held from client {client} \
                         is lost"
                    ),
                );
            }
            None => {
                warn!("worker {label} expired: its connection is closed");
                self.journal
                    .record(Kind::Expired, &shown, "its connection is closed");
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
        let body = body_start(&request).unwrap_or(request.len());
        let envelope: Vec<Vec<u8>> = request[..body].iter().map(|frame| frame.to_vec()).collect();
        for _ in 0..self.idle.len() {
            let Some(id) = self.idle.pop_front() else {
                break;
            };
            match send_message(backend, Some(&id), request) {
                Ok(()) => {
                    if let Some(worker) = self.known.get_mut(&id) {
                        worker.holds = Some(envelope);
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
    let mut workers = Workers::default();
    let expiry = protocol::expiry(options.heartbeat);
    let mut next_heartbeat = Instant::now() + options.heartbeat;
    // A request no idle worker could take; while there is one, the
    // frontend is not read.
    let mut held: Option<Request> = None;

    while !shutdown.requested() {
        // Back-pressure: read requests only while some worker is idle.
        let front_events = if held.is_none() && !workers.idle.is_empty() {
            zmq::POLLIN
        } else {
            zmq::PollEvents::empty()
        };
        let mut items = [
            frontend.as_poll_item(front_events),
            backend.as_poll_item(zmq::POLLIN),
        ];
        let until_heartbeat = next_heartbeat.saturating_duration_since(Instant::now());
        // Rounded up, not to spin through the last fraction of a millisecond.
        let timeout = until_heartbeat
            .as_micros()
            .div_ceil(1000)
            .min(CHECK_INTERVAL_MS as u128) as i64;
        match zmq::poll(&mut items, timeout) {
            Ok(_) | Err(zmq::Error::EINTR) => {}
            Err(error) => return Err(error),
        }

        if items[1].is_readable() {
            from_workers(backend, frontend, &mut workers, &mut traffic)?;
        }
        if let Some(request) = held.take() {
            let client = client_of(&request);
            held = match workers.dispatch(backend, request, &mut traffic) {
                Ok(()) => {
                    info!("the held request from client {client} went to a worker now idle");
                    None
                }
                Err(request) => Some(request),
            };
        }
        if items[0].is_readable() && held.is_none() {
            held = to_workers(frontend, backend, &mut workers, &mut traffic)?;
        }

        let now = Instant::now();
        if now >= next_heartbeat {
            send_heartbeats(backend, &mut workers);
            next_heartbeat = now + options.heartbeat;
        }
        workers.expire_silent(now, expiry, options.heartbeat);
        traffic.tick(now, || {
            format!(
                "; idle workers: {} of {}",
                workers.idle.len(),
                workers.known.len()
            )
        });
        if let Some(page) = &mut page {
            // The same condition as the frontend's poll flags above.
            let paused = held.is_some() || workers.idle.is_empty();
            page.tick(now, traffic.counts(), |snapshot| {
                snapshot.heartbeat_ms = Some(options.heartbeat.as_millis() as u64);
                snapshot.frontend_paused = paused;
                workers.show(snapshot, now);
            });
        }
    }
    if let Some(request) = held {
        let client = client_of(&request);
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
            Frames::Work if workers.answered(&id, &frames, now) => {
                deliver_reply(frontend, frames, traffic);
            }
            Frames::Work => {
                let label = workers.label(&id);
                traffic.drop(Problem::NotHeld, || {
                    format!(
                        "reply from worker {label} at {} for client {} dropped: that worker \
                         holds no request with this envelope (a duplicate, stale or forged reply)",
                        peer_of(&mut frames),
                        client_of(&frames)
                    )
                });
            }
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
/// first. Returns the request no idle worker could take, if any.
fn to_workers(
    frontend: &zmq::Socket,
    backend: &zmq::Socket,
    workers: &mut Workers,
    traffic: &mut Traffic,
) -> zmq::Result<Option<Request>> {
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
            return Ok(Some(request));
        }
    }
    Ok(None)
}

/// Tells every worker the broker is alive; forgets those whose connection is gone.
fn send_heartbeats(backend: &zmq::Socket, workers: &mut Workers) {
    let mut gone = Vec::new();
    for id in workers.known.keys() {
        let heartbeat = vec![zmq::Message::from(&[HEARTBEAT][..])];
        if let Err((Refused::NoSuchPeer, _)) = send_message(backend, Some(id), heartbeat) {
            gone.push(id.clone());
        }
    }
    for id in gone {
        workers.gone(&id);
    }
}
