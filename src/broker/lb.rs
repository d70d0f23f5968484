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
//! - its reply puts the worker at the back of the queue again;
//! - while no worker is idle, the frontend is not read at all: requests wait
//!   in the clients' own queues (back-pressure), not in an unbounded list here;
//! - heartbeats both ways, every `--heartbeat-ms`: a worker not heard from for
//!   3 intervals is forgotten, and so is one whose connection is gone.
//!
//! The frames on the wire are described in [`crate::protocol`].

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::{
    BURST, Refused, Traffic, deliver_reply, next_request, peer_of, recv_message, send_message,
};
use crate::envelope::hex;
use crate::payload::{show, text};
use crate::plumbing::shutdown::{CHECK_INTERVAL_MS, Shutdown};
use crate::protocol::{self, Frames, HEARTBEAT, MISSED_HEARTBEATS};

/// Settings of the load-balancing loop.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Interval between heartbeats (`--heartbeat-ms`).
    pub heartbeat: Duration,
}

/// A worker the broker knows, keyed by its identity.
#[derive(Debug)]
struct Worker {
    name: String,
    last_heard: Instant,
    /// Serving a request (so not in the idle queue).
    busy: bool,
}

/// The workers and the queue of idle ones, least recently used first.
#[derive(Debug, Default)]
struct Workers {
    known: HashMap<Vec<u8>, Worker>,
    idle: VecDeque<Vec<u8>>,
}

impl Workers {
    fn label(&self, id: &[u8]) -> String {
        match self.known.get(id) {
            Some(worker) if !worker.name.is_empty() => format!("{} ({})", worker.name, hex(id)),
            _ => hex(id),
        }
    }

    /// Records news from a known worker; `false` if the worker is unknown.
    fn heard(&mut self, id: &[u8], now: Instant) -> bool {
        match self.known.get_mut(id) {
            Some(worker) => {
                worker.last_heard = now;
                true
            }
            None => false,
        }
    }

    /// Lets a worker join, idle, on its READY (`ready` is its name) or on a
    /// HEARTBEAT (`None`): after a broker restart, the running workers'
    /// first messages are heartbeats, their READY went to the old broker.
    /// Replies and malformed messages never make a peer a worker.
    fn join(&mut self, id: &[u8], ready: Option<&[u8]>, now: Instant) {
        if self.heard(id, now) {
            return;
        }
        let how = match ready {
            Some(_) => "ready",
            None => "rejoined (it announced itself to an earlier broker)",
        };
        // The name comes from the network: escaped, it cannot carry
        // terminal control sequences into the log.
        let name = ready.map(|name| text(name).to_string()).unwrap_or_default();
        self.known.insert(
            id.to_vec(),
            Worker {
                name,
                last_heard: now,
                busy: true,
            },
        );
        info!("worker {} {how}", self.label(id));
        self.set_idle(id);
    }

    /// Puts a busy worker at the back of the idle queue.
    fn set_idle(&mut self, id: &[u8]) {
        if let Some(worker) = self.known.get_mut(id) {
            if worker.busy {
                worker.busy = false;
                self.idle.push_back(id.to_vec());
            }
        }
    }

    /// Forgets a dead worker, saying why.
    fn expire(&mut self, id: &[u8], why: &str) {
        let label = self.label(id);
        if let Some(worker) = self.known.remove(id) {
            self.idle.retain(|idle| idle != id);
            let lost = if worker.busy {
                "; its request is lost, and the client will resend it"
            } else {
                ""
            };
            warn!("worker {label} expired: {why}{lost}");
        }
    }
}

/// Balances requests from a bound ROUTER `frontend` over the workers of a
/// bound ROUTER `backend` until a stop is asked for.
///
/// Both sockets should have ZMQ_ROUTER_MANDATORY set: sending to an identity
/// that is not connected then fails, which tells the broker a worker (or a
/// client) has gone, instead of the message vanishing.
pub fn run(
    frontend: &zmq::Socket,
    backend: &zmq::Socket,
    options: Options,
    shutdown: &Shutdown,
) -> zmq::Result<Traffic> {
    let mut traffic = Traffic::new();
    let mut workers = Workers::default();
    let expiry = protocol::expiry(options.heartbeat);
    let mut next_heartbeat = Instant::now() + options.heartbeat;

    while !shutdown.requested() {
        // Back-pressure: read requests only while some worker is idle.
        let front_events = if workers.idle.is_empty() {
            zmq::PollEvents::empty()
        } else {
            zmq::POLLIN
        };
        let mut items = [
            frontend.as_poll_item(front_events),
            backend.as_poll_item(zmq::POLLIN),
        ];
        let until_heartbeat = next_heartbeat.saturating_duration_since(Instant::now());
        let timeout = until_heartbeat.as_millis().min(CHECK_INTERVAL_MS as u128) as i64;
        match zmq::poll(&mut items, timeout) {
            Ok(_) | Err(zmq::Error::EINTR) => {}
            Err(error) => return Err(error),
        }

        if items[1].is_readable() {
            from_workers(backend, frontend, &mut workers, &mut traffic)?;
        }
        if items[0].is_readable() {
            to_workers(frontend, backend, &mut workers, &mut traffic)?;
        }

        let now = Instant::now();
        if now >= next_heartbeat {
            send_heartbeats(backend, &mut workers);
            next_heartbeat = now + options.heartbeat;
        }
        let silent: Vec<Vec<u8>> = workers
            .known
            .iter()
            .filter(|(_, worker)| now.duration_since(worker.last_heard) > expiry)
            .map(|(id, _)| id.clone())
            .collect();
        for id in silent {
            let why = format!(
                "silent for {:.1} s ({MISSED_HEARTBEATS} heartbeats of {} ms)",
                expiry.as_secs_f64(),
                options.heartbeat.as_millis()
            );
            workers.expire(&id, &why);
        }
        traffic.maybe_report(now, || {
            format!(
                "; {} of {} workers idle",
                workers.idle.len(),
                workers.known.len()
            )
        });
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
            Frames::Ready(name) => {
                workers.join(&id, Some(name), now);
                // A READY from a worker thought busy: it restarted its socket.
                workers.set_idle(&id);
            }
            Frames::Heartbeat => workers.join(&id, None, now),
            Frames::Work => {
                if workers.heard(&id, now) {
                    workers.set_idle(&id);
                }
                deliver_reply(frontend, frames, traffic);
            }
            Frames::Malformed => {
                traffic.dropped += 1;
                workers.heard(&id, now);
                let first = frames
                    .first()
                    .map_or_else(String::new, |frame| show(frame).to_string());
                warn!(
                    "worker {} from {} sent a message that is neither READY, HEARTBEAT nor a \
                     reply with an envelope ({} frames, first {first}); dropped",
                    workers.label(&id),
                    peer_of(&mut frames),
                    frames.len()
                );
            }
        }
    }
    Ok(())
}

/// Hands up to [`BURST`] requests to idle workers, least recently used first.
fn to_workers(
    frontend: &zmq::Socket,
    backend: &zmq::Socket,
    workers: &mut Workers,
    traffic: &mut Traffic,
) -> zmq::Result<()> {
    for _ in 0..BURST {
        if workers.idle.is_empty() {
            break;
        }
        let Some(mut request) = next_request(frontend, traffic)? else {
            break;
        };
        loop {
            let Some(id) = workers.idle.pop_front() else {
                traffic.dropped += 1;
                warn!("request dropped: every idle worker turned out to be gone");
                break;
            };
            match send_message(backend, Some(&id), request) {
                Ok(()) => {
                    if let Some(worker) = workers.known.get_mut(&id) {
                        worker.busy = true;
                    }
                    break;
                }
                Err((Refused::NoSuchPeer, back)) => {
                    workers.expire(&id, "its connection is closed");
                    request = back;
                }
                Err((Refused::Busy, _)) => {
                    traffic.dropped += 1;
                    warn!(
                        "request dropped: worker {} is not reading its queue",
                        workers.label(&id)
                    );
                    workers.idle.push_back(id);
                    break;
                }
            }
        }
    }
    Ok(())
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
        workers.expire(&id, "its connection is closed");
    }
}
