//! `broker --mode proxy`: the ROUTER/DEALER forwarder of the lecture.
//!
//! ```text
//! REQ clients ──> ROUTER frontend │ broker │ DEALER backend ──> REP workers
//! ```
//!
//! A request arrives at the ROUTER as `[client identity, "", body]`. The
//! DEALER passes it to the next connected worker in turn (round robin); the
//! worker's REP strips the envelope, remembers it, and puts it back on the
//! reply. The reply comes back through the DEALER as the same three frames,
//! and the ROUTER uses the first one to pick the client. The broker never
//! looks inside: this is what `zmq::proxy(frontend, backend)` does, written
//! out so that it can count, log and stop on Ctrl-C.
//!
//! Round robin is blind to how workers are doing. A worker that crashes is
//! dropped from the turn when its connection closes (the requests it held, or
//! that were queued for it, are lost with it), but a slow or hung one keeps
//! its connection and keeps getting its share of requests, which queue up
//! for it (until its queue reaches the high-water mark, when the DEALER
//! skips it). `--mode lb` ([`super::lb`]) fixes that.
//!
//! A DEALER does not tell which peer a message came from, so this loop
//! cannot check that a reply comes from the worker that got the request, as
//! the lb broker does: a buggy or hostile worker's duplicate or forged reply
//! is forwarded to whichever client its envelope names. A REP worker cannot
//! send one (its socket allows one reply per request, in the request's own
//! envelope), and a client whose REQ uses ZMQ_REQ_CORRELATE drops a reply
//! that does not carry its current request id (see `lazy_pirate`). Keeping a
//! table of the envelopes in flight here would catch duplicates, but not a
//! reply from the wrong worker, and would cost a lookup per message in the
//! loop meant to match `zmq::proxy`: this broker does not try.

use std::collections::HashSet;
use std::time::Instant;

use tracing::warn;

use super::dashboard::Publisher;
use super::{
    BURST, Problem, Traffic, deliver_reply, next_request, peer_of, recv_message, send_message,
};
use crate::envelope::body_start;
use crate::payload::text;
use crate::plumbing::shutdown::{CHECK_INTERVAL_MS, Shutdown};
use crate::protocol::{self, Frames};

/// How many lb workers' names the broker remembers, to warn once per worker.
const LB_WORKERS_REMEMBERED: usize = 1024;

/// Forwards between a bound ROUTER `frontend` and a bound DEALER `backend`
/// until a stop is asked for, publishing its counts to `page` (`--http`),
/// if given, a few times a second; returns the message counts.
///
/// The frontend should have ZMQ_ROUTER_MANDATORY set, so that a reply for a
/// client that has gone is reported instead of silently dropped.
pub fn run(
    frontend: &zmq::Socket,
    backend: &zmq::Socket,
    mut page: Option<Publisher>,
    shutdown: &Shutdown,
) -> zmq::Result<Traffic> {
    let mut traffic = Traffic::new();
    let mut lb_workers = LbWorkers::default();
    // A request the DEALER could not take yet (no worker connected, or all
    // of their queues full). While it waits, the frontend is not read: the
    // clients' requests wait in libzmq's queues, not in ours.
    let mut waiting: Option<Vec<zmq::Message>> = None;

    while !shutdown.requested() {
        let (front_events, back_events) = match waiting {
            None => (zmq::POLLIN, zmq::POLLIN),
            Some(_) => (zmq::PollEvents::empty(), zmq::POLLIN | zmq::POLLOUT),
        };
        let mut items = [
            frontend.as_poll_item(front_events),
            backend.as_poll_item(back_events),
        ];
        match zmq::poll(&mut items, i64::from(CHECK_INTERVAL_MS)) {
            Ok(_) | Err(zmq::Error::EINTR) => {}
            Err(error) => return Err(error),
        }

        if items[1].is_writable() {
            if let Some(request) = waiting.take() {
                waiting = forward_request(backend, request);
            }
        }
        if items[1].is_readable() {
            forward_replies(backend, frontend, &mut traffic, &mut lb_workers)?;
        }
        if items[0].is_readable() && waiting.is_none() {
            waiting = forward_requests(frontend, backend, &mut traffic)?;
        }
        let now = Instant::now();
        traffic.tick(now, String::new);
        if let Some(page) = &mut page {
            let paused = waiting.is_some();
            page.tick(now, traffic.counts(), |snapshot| {
                snapshot.frontend_paused = paused;
            });
        }
    }
    traffic.log_total();
    Ok(traffic)
}

/// Moves up to [`BURST`] requests from clients to workers. Returns the one
/// the backend refused, if any.
fn forward_requests(
    frontend: &zmq::Socket,
    backend: &zmq::Socket,
    traffic: &mut Traffic,
) -> zmq::Result<Option<Vec<zmq::Message>>> {
    let mut budget = BURST;
    while let Some(request) = next_request(frontend, traffic, &mut budget)? {
        if let Some(refused) = forward_request(backend, request) {
            return Ok(Some(refused));
        }
    }
    Ok(None)
}

/// Hands one request to the DEALER; gives it back if no worker can take it.
fn forward_request(backend: &zmq::Socket, request: Vec<zmq::Message>) -> Option<Vec<zmq::Message>> {
    match send_message(backend, None, request) {
        Ok(()) => None,
        Err((_, request)) => Some(request),
    }
}

/// The `worker --mode lb` peers that reached this broker by mistake: they
/// speak the lb protocol (READY, HEARTBEAT), which a DEALER backend cannot
/// answer. Each is named in one warning, not one per message.
#[derive(Debug, Default)]
struct LbWorkers {
    named: HashSet<Vec<u8>>,
    warned: bool,
}

impl LbWorkers {
    /// A READY (`Some(name)`) or a HEARTBEAT (`None`) from `peer`.
    fn noticed(&mut self, name: Option<&[u8]>, peer: impl FnOnce() -> String) {
        let new = match name {
            Some(name) if self.named.len() < LB_WORKERS_REMEMBERED => {
                self.named.insert(name.to_vec())
            }
            _ => !self.warned,
        };
        if !new {
            return;
        }
        self.warned = true;
        let who = match name {
            Some(name) => format!("an lb worker (READY from {} at {})", text(name), peer()),
            None => format!("an lb worker (HEARTBEAT from {})", peer()),
        };
        warn!(
            "{who} reached a proxy broker, whose DEALER backend can neither choose workers nor \
             answer heartbeats: start the broker with --mode lb (or the workers without it)"
        );
    }
}

/// Moves up to [`BURST`] replies from workers back to their clients.
fn forward_replies(
    backend: &zmq::Socket,
    frontend: &zmq::Socket,
    traffic: &mut Traffic,
    lb_workers: &mut LbWorkers,
) -> zmq::Result<()> {
    for _ in 0..BURST {
        let Some(mut reply) = recv_message(backend)? else {
            break;
        };
        if body_start(&reply).is_some() {
            // Counted, and warned about if it cannot be delivered.
            let _ = deliver_reply(frontend, reply, traffic);
            continue;
        }
        match protocol::classify(&reply) {
            // Not replies, and no client waits for them: not counted as
            // dropped, or the summary would report them every second.
            Frames::Ready(name) => {
                let name = name.to_vec();
                lb_workers.noticed(Some(&name), || peer_of(&mut reply));
            }
            Frames::Heartbeat => lb_workers.noticed(None, || peer_of(&mut reply)),
            _ => traffic.drop(Problem::NoEnvelope, || {
                format!(
                    "reply from worker {} dropped: it has no envelope (client identity, \
                     empty delimiter) to route it back",
                    peer_of(&mut reply)
                )
            }),
        }
    }
    Ok(())
}
