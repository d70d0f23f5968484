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
//! second while traffic flows. With `--http`, both also publish what they
//! know to the broker's live page ([`dashboard`]) a few times a second.
//!
//! A message the broker cannot use is dropped and counted. The first of
//! each kind is logged at once, with where it came from; more of the same
//! kind within a second are only counted, and summed up in one line a
//! second later. A flood of bad messages thus costs a counter each, not a
//! log line each: the broker keeps serving everyone else.

pub mod dashboard;
pub mod lb;
pub mod proxy;

use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::envelope::{body_start, client_of};
use crate::plumbing::logging::Count;

/// Messages handled per socket before the loop looks at the other one, so
/// that a flood on one side cannot starve the other.
const BURST: usize = 256;

/// How often the broker may log its traffic summary, and each kind of
/// warning.
const REPORT_EVERY: Duration = Duration::from_secs(1);

/// Kinds of problem the broker warns about, each rate-limited on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Problem {
    /// A request with no empty delimiter frame (frontend).
    NoDelimiter,
    /// A reply for a client that is not connected (any more).
    UnknownClient,
    /// A reply for a client whose queue is full.
    ClientNotReading,
    /// A message from a worker that is no part of the protocol (lb).
    Malformed,
    /// A reply from a worker that does not hold that request (lb).
    NotHeld,
    /// An idle worker whose queue is full (lb).
    WorkerNotReading,
    /// A reply without an envelope (proxy).
    NoEnvelope,
}

impl Problem {
    const ALL: [Problem; 7] = [
        Problem::NoDelimiter,
        Problem::UnknownClient,
        Problem::ClientNotReading,
        Problem::Malformed,
        Problem::NotHeld,
        Problem::WorkerNotReading,
        Problem::NoEnvelope,
    ];

    /// What more of them were, for the summary line: one, and several.
    fn more(self) -> (&'static str, &'static str) {
        match self {
            Problem::NoDelimiter => (
                "more request without an empty delimiter dropped",
                "more requests without an empty delimiter dropped",
            ),
            Problem::UnknownClient => (
                "more reply for an unknown client dropped",
                "more replies for unknown clients dropped",
            ),
            Problem::ClientNotReading => (
                "more reply for a client not reading dropped",
                "more replies for clients not reading dropped",
            ),
            Problem::Malformed => (
                "more malformed message from a worker dropped",
                "more malformed messages from workers dropped",
            ),
            Problem::NotHeld => (
                "more reply from a worker not holding that request dropped",
                "more replies from workers not holding that request dropped",
            ),
            Problem::WorkerNotReading => (
                "more refusal by an idle worker not reading its queue",
                "more refusals by idle workers not reading their queue",
            ),
            Problem::NoEnvelope => (
                "more reply without an envelope dropped",
                "more replies without an envelope dropped",
            ),
        }
    }
}

/// One kind's rate limit: open for a second after a line was logged.
#[derive(Debug, Default, Clone)]
struct Window {
    since: Option<Instant>,
    /// Occurrences since, not logged yet.
    more: u64,
    /// The first of those, in full.
    first: Option<String>,
}

/// Warnings, at most one line per kind and second (see the module docs).
#[derive(Debug, Default)]
struct Warnings {
    windows: [Window; Problem::ALL.len()],
}

impl Warnings {
    /// Logs `line()` now if no warning of this kind was logged in the last
    /// second; otherwise counts it for the summary (`line` is then built
    /// only for the first one of the second).
    fn warn(&mut self, problem: Problem, line: impl FnOnce() -> String) {
        let window = &mut self.windows[problem as usize];
        if window.since.is_none() {
            warn!("{}", line());
            window.since = Some(Instant::now());
        } else {
            if window.first.is_none() {
                window.first = Some(line());
            }
            window.more += 1;
        }
    }

    /// Logs the summary of each kind whose second is over (of every kind,
    /// with `last`: the broker is stopping).
    fn tick(&mut self, now: Instant, last: bool) {
        for (problem, window) in Problem::ALL.iter().zip(&mut self.windows) {
            let Some(since) = window.since else { continue };
            let elapsed = now.duration_since(since);
            if elapsed < REPORT_EVERY && !last {
                continue;
            }
            if window.more == 0 {
                *window = Window::default();
                continue;
            }
            let first = window.first.take().unwrap_or_default();
            warn!("{}", summary(*problem, window.more, elapsed, &first));
            *window = Window {
                since: Some(now),
                ..Window::default()
            };
        }
    }
}

/// The line that sums up `more` warnings of one kind held back for
/// `elapsed`, quoting the `first` of them.
fn summary(problem: Problem, more: u64, elapsed: Duration, first: &str) -> String {
    let (one, many) = problem.more();
    let quoted = if more == 1 { "" } else { "; the first of them" };
    format!(
        "{} in the last {:.1} s{quoted}: {first}",
        Count::irregular(more, one, many),
        elapsed.as_secs_f64(),
    )
}

/// Message counts, the once-a-second summary line, and rate-limited warnings.
#[derive(Debug)]
pub struct Traffic {
    /// Requests taken from clients.
    pub requests_in: u64,
    /// Replies delivered to clients.
    pub replies_out: u64,
    /// Messages dropped (malformed, unexpected, or for a vanished peer),
    /// each counted and warned about (at most one line a second per kind).
    pub dropped: u64,
    reported: (u64, u64, u64),
    last_report: Instant,
    warnings: Warnings,
}

impl Traffic {
    fn new() -> Self {
        Self {
            requests_in: 0,
            replies_out: 0,
            dropped: 0,
            reported: (0, 0, 0),
            last_report: Instant::now(),
            warnings: Warnings::default(),
        }
    }

    fn counts(&self) -> (u64, u64, u64) {
        (self.requests_in, self.replies_out, self.dropped)
    }

    /// Counts a dropped message and warns about it (rate-limited).
    fn drop(&mut self, problem: Problem, line: impl FnOnce() -> String) {
        self.dropped += 1;
        self.warnings.warn(problem, line);
    }

    /// Logs what changed since the last line, if a second has passed, and
    /// the warnings held back. `extra` adds state to the line (idle
    /// workers, for instance).
    fn tick(&mut self, now: Instant, extra: impl FnOnce() -> String) {
        self.warnings.tick(now, false);
        if now.duration_since(self.last_report) < REPORT_EVERY || self.counts() == self.reported {
            return;
        }
        let (requests, replies, _) = self.reported;
        info!(
            "{} in, {} out in the last {:.1} s ({} / {} in total, {} dropped){}",
            Count::new(self.requests_in - requests, "request"),
            Count::irregular(self.replies_out - replies, "reply", "replies"),
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
    fn log_total(&mut self) {
        self.warnings.tick(Instant::now(), true);
        info!(
            "stopped: {} in, {} out, {} dropped",
            Count::new(self.requests_in, "request"),
            Count::irregular(self.replies_out, "reply", "replies"),
            self.dropped
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
            // A signal (Ctrl-C, SIGTERM) came during the call: the loop
            // looks at the stop flag soon; this frame is still there.
            Err(zmq::Error::EINTR) => continue,
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
/// a (rate-limited) warning: no REP worker could answer them. `Ok(None)`
/// when no request is queued, or once `budget` messages were read: a flood
/// of bad requests must not keep the loop from its other socket.
fn next_request(
    frontend: &zmq::Socket,
    traffic: &mut Traffic,
    budget: &mut usize,
) -> zmq::Result<Option<Vec<zmq::Message>>> {
    while *budget > 0 {
        let Some(mut request) = recv_message(frontend)? else {
            break;
        };
        *budget -= 1;
        if body_start(&request).is_some() {
            traffic.requests_in += 1;
            return Ok(Some(request));
        }
        traffic.drop(Problem::NoDelimiter, || {
            format!(
                "request from {} dropped: no empty delimiter frame before the body \
                 (a DEALER client must send one; a REQ adds it by itself)",
                peer_of(&mut request)
            )
        });
    }
    Ok(None)
}

/// Sends a worker's reply, `[client identity, "", body...]`, to that client,
/// counting it, or says why it could not be delivered (and returns why).
fn deliver_reply(
    frontend: &zmq::Socket,
    reply: Vec<zmq::Message>,
    traffic: &mut Traffic,
) -> Result<(), Refused> {
    match send_message(frontend, None, reply) {
        Ok(()) => {
            traffic.replies_out += 1;
            Ok(())
        }
        // ROUTER_MANDATORY said so.
        Err((Refused::NoSuchPeer, reply)) => {
            traffic.drop(Problem::UnknownClient, || {
                let client = client_of(&reply);
                format!(
                    "reply for unknown client {client} dropped: that client is gone, or never was"
                )
            });
            Err(Refused::NoSuchPeer)
        }
        Err((Refused::Busy, reply)) => {
            traffic.drop(Problem::ClientNotReading, || {
                let client = client_of(&reply);
                format!("reply for client {client} dropped: its queue is full (it is not reading)")
            });
            Err(Refused::Busy)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_counts_in_the_singular_too() {
        let second = Duration::from_secs(1);
        assert_eq!(
            summary(
                Problem::NoDelimiter,
                1,
                second,
                "request from 10.0.0.1 dropped"
            ),
            "1 more request without an empty delimiter dropped in the last 1.0 s: request \
             from 10.0.0.1 dropped"
        );
        assert_eq!(
            summary(
                Problem::UnknownClient,
                2,
                second,
                "reply for unknown client 00 dropped"
            ),
            "2 more replies for unknown clients dropped in the last 1.0 s; the first of them: \
             reply for unknown client 00 dropped"
        );
        for problem in Problem::ALL {
            let one = summary(problem, 1, second, "x");
            let many = summary(problem, 2, second, "x");
            assert_ne!(one[2..], many[2..], "{problem:?}: {one}");
        }
    }
}
