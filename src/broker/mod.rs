//! The broker's two loops and what they share.
//!
//! `broker` binds a ROUTER frontend for clients and a backend for workers,
//! then hands both sockets to one of two loops:
//!
//! - [`proxy::run`] (`--mode proxy`, the default): the backend is a DEALER;
//!   requests go to connected workers in turn (round robin), exactly what
//!   `zmq::proxy` does. Works with any REP worker, the course's Python one too.
//! - [`lb::run`] (`--mode lb`): the backend is a ROUTER too; workers announce
//!   themselves, a request goes to the worker idle the longest, and heartbeats
//!   tell the broker which workers are alive (see [`crate::protocol`]).
//!
//! Both forward whole multipart messages, never splitting or reordering
//! frames, count messages (not frames), and log a summary at most once a
//! second while traffic flows.

pub mod lb;
pub mod proxy;

use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::envelope::{body_start, hex};

/// Messages handled per socket before the loop looks at the other one, so
/// that a flood on one side cannot starve the other.
const BURST: usize = 256;

/// How often the broker may log its traffic summary.
const REPORT_EVERY: Duration = Duration::from_secs(1);

/// Message counts, and the once-a-second summary line.
#[derive(Debug)]
pub struct Traffic {
    /// Requests taken from clients.
    pub requests_in: u64,
    /// Replies delivered to clients.
    pub replies_out: u64,
    /// Messages dropped with a warning (malformed, or for a vanished peer).
    pub dropped: u64,
    reported: (u64, u64, u64),
    last_report: Instant,
}

impl Traffic {
    fn new() -> Self {
        Self {
            requests_in: 0,
            replies_out: 0,
            dropped: 0,
            reported: (0, 0, 0),
            last_report: Instant::now(),
        }
    }

    fn counts(&self) -> (u64, u64, u64) {
        (self.requests_in, self.replies_out, self.dropped)
    }

    /// Logs what changed since the last line, if a second has passed.
    /// `extra` adds state to the line (idle workers, for instance).
    fn maybe_report(&mut self, now: Instant, extra: impl FnOnce() -> String) {
        if now.duration_since(self.last_report) < REPORT_EVERY || self.counts() == self.reported {
            return;
        }
        let (requests, replies, _) = self.reported;
        info!(
            "{} requests in, {} replies out in the last {:.1} s ({} / {} in total, {} dropped){}",
            self.requests_in - requests,
            self.replies_out - replies,
            now.duration_since(self.last_report).as_secs_f64(),
            self.requests_in,
            self.replies_out,
            self.dropped,
            extra()
        );
        self.reported = self.counts();
        self.last_report = now;
    }

    /// The summary logged when the broker stops.
    fn log_total(&self) {
        info!(
            "stopped: {} requests in, {} replies out, {} dropped",
            self.requests_in, self.replies_out, self.dropped
        );
    }
}

/// Receives every frame of one message without waiting. `Ok(None)` when no
/// message is queued.
fn recv_message(socket: &zmq::Socket) -> zmq::Result<Option<Vec<zmq::Message>>> {
    let mut frames = Vec::with_capacity(4);
    loop {
        let mut frame = zmq::Message::new();
        match socket.recv(&mut frame, zmq::DONTWAIT) {
            Ok(()) => {}
            // Frames of a message arrive together: only the first can be missing.
            Err(zmq::Error::EAGAIN) if frames.is_empty() => return Ok(None),
            Err(error) => return Err(error),
        }
        let more = frame.get_more();
        frames.push(frame);
        if !more {
            return Ok(Some(frames));
        }
    }
}

/// Why a message could not be sent.
#[derive(Debug, PartialEq, Eq)]
enum Refused {
    /// The peer's queue is full, or (DEALER) no peer is connected: try later.
    Busy,
    /// ROUTER_MANDATORY: no peer has that identity (it left, or never was).
    NoSuchPeer,
}

/// Sends `address` (if any) and then `frames`, as one message, without
/// waiting. When the socket refuses the message, `frames` come back intact
/// for a later try or another peer: only the first frame can be refused, and
/// it is sent as a copy.
fn send_message(
    socket: &zmq::Socket,
    address: Option<&[u8]>,
    mut frames: Vec<zmq::Message>,
) -> Result<(), (Refused, Vec<zmq::Message>)> {
    let first = match address {
        Some(address) => address.to_vec(),
        None if frames.is_empty() => return Ok(()),
        None => frames.remove(0).to_vec(),
    };
    let flags = zmq::DONTWAIT | if frames.is_empty() { 0 } else { zmq::SNDMORE };
    match socket.send(first.as_slice(), flags) {
        Ok(()) => {}
        Err(error) => {
            if address.is_none() {
                frames.insert(0, zmq::Message::from(first));
            }
            let refused = match error {
                zmq::Error::EHOSTUNREACH => Refused::NoSuchPeer,
                _ => Refused::Busy,
            };
            return Err((refused, frames));
        }
    }
    // Once the first frame is in, libzmq accepts the rest of the message.
    let last = frames.len().saturating_sub(1);
    for (i, frame) in frames.into_iter().enumerate() {
        let more = if i < last { zmq::SNDMORE } else { 0 };
        if let Err(error) = socket.send(frame, more) {
            warn!("message cut short while sending: {error}");
            break;
        }
    }
    Ok(())
}

/// Where a message came from, for warnings: its peer's IP address, which
/// libzmq attaches to every received frame as metadata.
fn peer_of(frames: &mut [zmq::Message]) -> String {
    frames
        .last_mut()
        .and_then(|frame| frame.gets("Peer-Address").map(str::to_owned))
        .unwrap_or_else(|| "an unknown address".into())
}

/// Receives the next client request that has a usable envelope (see
/// [`crate::envelope`]), counting it. Requests without one are dropped with
/// a warning: no REP worker could answer them. `Ok(None)` when no request is
/// queued.
fn next_request(
    frontend: &zmq::Socket,
    traffic: &mut Traffic,
) -> zmq::Result<Option<Vec<zmq::Message>>> {
    while let Some(mut request) = recv_message(frontend)? {
        if body_start(&request).is_some() {
            traffic.requests_in += 1;
            return Ok(Some(request));
        }
        traffic.dropped += 1;
        warn!(
            "request from {} dropped: no empty delimiter frame before the body \
             (a DEALER client must send one; a REQ adds it by itself)",
            peer_of(&mut request)
        );
    }
    Ok(None)
}

/// Sends a worker's reply, `[client identity, "", body...]`, to that client,
/// counting it, or says why it could not be delivered.
fn deliver_reply(frontend: &zmq::Socket, reply: Vec<zmq::Message>, traffic: &mut Traffic) {
    match send_message(frontend, None, reply) {
        Ok(()) => traffic.replies_out += 1,
        Err((Refused::NoSuchPeer, reply)) => {
            traffic.dropped += 1;
            // ROUTER_MANDATORY said so.
            let client = reply.first().map_or_else(String::new, |frame| hex(frame));
            warn!("reply for unknown client {client} dropped: that client is gone, or never was");
        }
        Err((Refused::Busy, _)) => {
            traffic.dropped += 1;
            warn!("reply dropped: the client's queue is full (it is not reading)");
        }
    }
}
