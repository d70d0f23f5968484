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
//! Round robin is blind: a slow or dead worker gets its share of requests
//! anyway. `--mode lb` ([`super::lb`]) fixes that.

use std::time::Instant;

use tracing::warn;

use super::{BURST, Traffic, deliver_reply, next_request, peer_of, recv_message, send_message};
use crate::envelope::body_start;
use crate::plumbing::shutdown::{CHECK_INTERVAL_MS, Shutdown};

/// Forwards between a bound ROUTER `frontend` and a bound DEALER `backend`
/// until a stop is asked for; returns the message counts.
///
/// The frontend should have ZMQ_ROUTER_MANDATORY set, so that a reply for a
/// client that has gone is reported instead of silently dropped.
pub fn run(
    frontend: &zmq::Socket,
    backend: &zmq::Socket,
    shutdown: &Shutdown,
) -> zmq::Result<Traffic> {
    let mut traffic = Traffic::new();
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
            forward_replies(backend, frontend, &mut traffic)?;
        }
        if items[0].is_readable() && waiting.is_none() {
            waiting = forward_requests(frontend, backend, &mut traffic)?;
        }
        traffic.maybe_report(Instant::now(), String::new);
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
    for _ in 0..BURST {
        let Some(request) = next_request(frontend, traffic)? else {
            break;
        };
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

/// Moves up to [`BURST`] replies from workers back to their clients.
fn forward_replies(
    backend: &zmq::Socket,
    frontend: &zmq::Socket,
    traffic: &mut Traffic,
) -> zmq::Result<()> {
    for _ in 0..BURST {
        let Some(mut reply) = recv_message(backend)? else {
            break;
        };
        if body_start(&reply).is_none() {
            traffic.dropped += 1;
            warn!(
                "reply from worker {} dropped: it has no envelope (client identity, \
                 empty delimiter) to route it back",
                peer_of(&mut reply)
            );
            continue;
        }
        deliver_reply(frontend, reply, traffic);
    }
    Ok(())
}
