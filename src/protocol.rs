//! The load-balancing protocol spoken by `broker --mode lb` and
//! `worker --mode lb` (after the ZeroMQ guide's load-balancing broker and its
//! Paranoid Pirate heartbeats).
//!
//! The worker's socket is a DEALER connected to the broker's backend ROUTER,
//! so the broker sees every message with the worker's identity in front, and
//! the worker sees the broker's messages without it. A control message is
//! one frame, or two for READY, and its first frame is a single byte: it can
//! never be taken for a request or a reply, which always have at least three
//! frames (address, empty delimiter, body).
//!
//! ```text
//! worker → broker   READY       [0x01, name]        "I am idle, and my name is"
//! worker → broker   HEARTBEAT   [0x02]              "I am alive" (every interval)
//! worker → broker   reply       [client, "", body]  the envelope it was given
//! broker → worker   HEARTBEAT   [0x02]              "I am alive" (every interval)
//! broker → worker   request     [client, "", body]  work to do
//! ```
//!
//! A client's REQ with ZMQ_REQ_CORRELATE adds a request id frame, so the
//! envelope is `[client, request id, ""]`; the worker returns it whole, and
//! the broker forwards a reply only from the worker that holds a request
//! with that very envelope.
//!
//! READY means the worker holds no request from this broker: the worker
//! sends it on every new connection (the broker may be a new process) and
//! after a stop of its own long enough for the broker to forget it, but
//! never while it holds a request. A broker that forgot a worker for its
//! silence, its connection still open, takes it back at its next HEARTBEAT
//! under the name it had; one that hears a HEARTBEAT from a worker it never
//! knew (its READY went to an earlier broker) takes it in, idle and
//! nameless, until its READY names it. A broker counts its own stops in no
//! worker's silence.
//!
//! A worker may speak the protocol to several brokers at once (`worker
//! --mode lb --connect A,B`), over one DEALER each: every broker sees an
//! ordinary worker, with its own READY and heartbeats, and none knows of
//! the others. So READY means idle *for this broker*: the worker may be busy
//! with another broker's request, and queues this broker's request behind
//! it (see [`crate::lb_worker`]).
//!
//! Liveness: each side sends a HEARTBEAT every `--heartbeat-ms`, the worker
//! while it works too, and counts the other side dead after
//! [`MISSED_HEARTBEATS`] intervals without hearing anything from it (any
//! message counts). The broker then gives the worker no more work; the
//! worker opens a new socket and announces itself again, waiting longer
//! before each new attempt ([`Backoff`]).

use std::time::Duration;

/// First frame of a worker's READY message; its second frame is the name.
pub const READY: u8 = 0x01;

/// The only frame of a HEARTBEAT, either way.
pub const HEARTBEAT: u8 = 0x02;

/// Intervals of silence after which a peer counts as dead.
pub const MISSED_HEARTBEATS: u32 = 3;

/// A message between broker and worker, as its receiver classifies it.
#[derive(Debug, PartialEq, Eq)]
pub enum Frames<'a> {
    /// `[0x01, name]` (the name frame may be missing).
    Ready(&'a [u8]),
    /// `[0x02]`.
    Heartbeat,
    /// `[address..., "", body...]`: a request (to a worker) or a reply (from one).
    Work,
    /// Anything else.
    Malformed,
}

/// Classifies the frames of one message (without the worker identity the
/// broker's ROUTER puts in front).
pub fn classify<F: std::ops::Deref<Target = [u8]>>(frames: &[F]) -> Frames<'_> {
    match frames {
        [control] if **control == [HEARTBEAT] => Frames::Heartbeat,
        [control] if **control == [READY] => Frames::Ready(&[]),
        [control, name] if **control == [READY] => Frames::Ready(name),
        _ if crate::envelope::body_start(frames).is_some() => Frames::Work,
        _ => Frames::Malformed,
    }
}

/// Time without news after which a peer counts as dead.
pub fn expiry(heartbeat: Duration) -> Duration {
    heartbeat * MISSED_HEARTBEATS
}

/// The worker's wait before each reconnection: 1 s, doubling up to 32 s,
/// back to 1 s once the broker answers.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    /// First wait.
    pub const INITIAL: Duration = Duration::from_secs(1);
    /// Longest wait.
    pub const MAX: Duration = Duration::from_secs(32);

    /// Starts at [`Backoff::INITIAL`].
    pub fn new() -> Self {
        Self {
            next: Self::INITIAL,
        }
    }

    /// The wait before this attempt; the next one will be twice as long.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        delay
    }

    /// The broker answered: start again from [`Backoff::INITIAL`].
    pub fn reset(&mut self) {
        self.next = Self::INITIAL;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(parts: &[&[u8]]) -> Vec<Vec<u8>> {
        parts.iter().map(|part| part.to_vec()).collect()
    }

    #[test]
    fn tells_control_messages_from_work() {
        assert_eq!(classify(&frames(&[&[HEARTBEAT]])), Frames::Heartbeat);
        assert_eq!(classify(&frames(&[&[READY], b"w1"])), Frames::Ready(b"w1"));
        assert_eq!(classify(&frames(&[&[READY]])), Frames::Ready(b""));
        assert_eq!(classify(&frames(&[b"client", b"", b"Hello"])), Frames::Work);
        // A client whose identity happens to be 0x01 still sends work.
        assert_eq!(classify(&frames(&[&[READY], b"", b"Hello"])), Frames::Work);
    }

    #[test]
    fn refuses_anything_else() {
        assert_eq!(classify(&frames(&[b"Hello"])), Frames::Malformed);
        assert_eq!(classify(&frames(&[b"client", b"Hello"])), Frames::Malformed);
        assert_eq!(classify(&frames(&[&[0x03]])), Frames::Malformed);
        assert_eq!(classify::<Vec<u8>>(&[]), Frames::Malformed);
    }

    #[test]
    fn backoff_doubles_up_to_32_seconds_and_resets() {
        let mut backoff = Backoff::new();
        let delays: Vec<u64> = (0..8).map(|_| backoff.next_delay().as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 32, 32]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), Duration::from_secs(1));
    }
}
