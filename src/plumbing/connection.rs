//! What becomes of a connecting socket's connection: up, refused, lost.
//!
//! A socket that `connect`s never says whether anything answered: libzmq
//! connects in the background, reconnects by itself, and queues messages
//! meanwhile. A worker needs to know more: a new connection may lead to a
//! restarted broker that has never heard of it (so it announces itself
//! again), and a broker of the wrong kind refuses it during the ZeroMQ
//! handshake (so it says so, once, instead of waiting in silence).
//!
//! A socket monitor (`zmq_socket_monitor`) reports each connection's events
//! on an inproc PAIR socket. [`Watch`] reads them without a thread of its
//! own, in the role's loop: poll [`Watch::socket`] with the other sockets
//! (or call [`Watch::changes`] on every turn), and act on what it returns.
//!
//! A refusal is a connection that closes before its handshake succeeded.
//! libzmq 4.3 checks the peer's socket type (a REP cannot talk to a ROUTER)
//! when the peer's READY command arrives; on a mismatch it closes the
//! connection without any HANDSHAKE_FAILED event, and, having treated it as
//! a protocol error, does not reconnect. Should the other side refuse first,
//! this one sees it hang up (HANDSHAKE_FAILED_NO_DETAIL) and libzmq
//! reconnects every 100 ms (ZMQ_RECONNECT_IVL) to be refused again: either
//! way, [`Change::Refused`] is reported once per [`Watch`].
//!
//! A socket may connect to several endpoints (a worker serving two brokers):
//! each event names the endpoint of its connection, and the state is kept
//! for each endpoint, so that one connection coming up cannot hide
//! another's refusal.
//!
//! A role that reads the monitor in a thread of its own instead (the
//! client's handshake watch, `security::handshake`, which must read every
//! event as it comes) keeps the same knowledge in a [`Link`]: the thread
//! records each connection that comes up or closes, and the role asks
//! whether one is up, or waits until one of its sockets has one
//! ([`Links::wait_for_any`]).

use crate::plumbing::monitor::{self, parse_event};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Something that happened to the watched socket's connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A connection completed its ZeroMQ handshake (the first one, or a
    /// reconnection, perhaps to a new process).
    Up,
    /// The connection closed after its handshake.
    Down,
    /// The peer closed the connection during the handshake: not a ZeroMQ
    /// peer, or one of a socket type that cannot talk to this one.
    Refused,
}

/// The monitor of one connecting socket (see the module docs).
///
/// Drop the watched socket before its `Watch`: libzmq sends the events
/// with a blocking send, and a watched socket outliving its reader could
/// make libzmq's I/O thread wait (until the context ends).
pub struct Watch {
    events: zmq::Socket,
    /// Per endpoint (as libzmq names it in the event): (in handshake, up).
    endpoints: HashMap<Vec<u8>, (bool, bool)>,
    refused: bool,
    /// The last HANDSHAKE_FAILED_* event and its value, for
    /// [`Watch::handshake_failure`].
    failure: Option<(u16, u32)>,
}

impl Watch {
    /// Starts watching `socket`; call before `connect`.
    pub fn new(ctx: &zmq::Context, socket: &zmq::Socket) -> zmq::Result<Watch> {
        let mask = zmq::SocketEvent::CONNECTED as u16
            | zmq::SocketEvent::HANDSHAKE_SUCCEEDED as u16
            | zmq::SocketEvent::HANDSHAKE_FAILED_NO_DETAIL as u16
            | zmq::SocketEvent::HANDSHAKE_FAILED_PROTOCOL as u16
            | zmq::SocketEvent::HANDSHAKE_FAILED_AUTH as u16
            | zmq::SocketEvent::DISCONNECTED as u16;
        let (events, endpoint) = monitor::receiver(ctx, "connection")?;
        socket.monitor(&endpoint, i32::from(mask))?;
        Ok(Watch {
            events,
            endpoints: HashMap::new(),
            refused: false,
            failure: None,
        })
    }

    /// The socket the events arrive on, to poll with the role's sockets.
    pub fn socket(&self) -> &zmq::Socket {
        &self.events
    }

    /// Whether a connection is up (its handshake done, not closed since).
    pub fn is_up(&self) -> bool {
        self.endpoints.values().any(|&(_, up)| up)
    }

    /// The last handshake failure libzmq reported (a `HANDSHAKE_FAILED_*`
    /// event and its value), which says why a peer refused this socket when
    /// it did so with a reason (a ZAP status, a mechanism mismatch): see
    /// `security::handshake::explain`. `None` when the refusal came without
    /// one (a socket type mismatch closes the connection without an event).
    pub fn handshake_failure(&self) -> Option<(u16, u32)> {
        self.failure
    }

    /// What happened since the last call, in order, without waiting.
    pub fn changes(&mut self) -> Vec<Change> {
        let mut changes = Vec::new();
        while let Ok(frames) = self.events.recv_multipart(zmq::DONTWAIT) {
            let Some((event, value)) = parse_event(&frames) else {
                continue;
            };
            let endpoint = frames.get(1).cloned().unwrap_or_default();
            if let Some(change) = self.apply(event, value, endpoint) {
                changes.push(change);
            }
        }
        changes
    }

    fn apply(&mut self, event: u16, value: u32, endpoint: Vec<u8>) -> Option<Change> {
        const CONNECTED: u16 = zmq::SocketEvent::CONNECTED as u16;
        const HANDSHAKE_SUCCEEDED: u16 = zmq::SocketEvent::HANDSHAKE_SUCCEEDED as u16;
        const DISCONNECTED: u16 = zmq::SocketEvent::DISCONNECTED as u16;
        let (in_handshake, up) = self.endpoints.entry(endpoint).or_default();
        match event {
            CONNECTED => {
                *in_handshake = true;
                None
            }
            HANDSHAKE_SUCCEEDED => {
                *in_handshake = false;
                *up = true;
                Some(Change::Up)
            }
            DISCONNECTED if *in_handshake => {
                *in_handshake = false;
                (!std::mem::replace(&mut self.refused, true)).then_some(Change::Refused)
            }
            DISCONNECTED => std::mem::take(up).then_some(Change::Down),
            // A HANDSHAKE_FAILED_* event comes just before its DISCONNECTED.
            _ => {
                self.failure = Some((event, value));
                None
            }
        }
    }
}

/// The links of one role's sockets: they share a bell, so that the role
/// can wait for whichever connection comes up first.
#[derive(Clone, Default)]
pub struct Links(Arc<Bell>);

/// Rung whenever a link changes.
#[derive(Default)]
struct Bell {
    lock: Mutex<()>,
    changed: Condvar,
}

/// Whether one socket's connections are up, as the thread that reads its
/// monitor records them (see the module docs).
#[derive(Clone)]
pub struct Link {
    state: Arc<Mutex<LinkState>>,
    bell: Arc<Bell>,
}

#[derive(Default)]
struct LinkState {
    /// The endpoints whose connection completed its handshake and has not
    /// closed since.
    up: HashSet<Vec<u8>>,
    /// Nothing watches the socket: it is taken as connected.
    unwatched: bool,
}

/// A lock that a thread which panicked while holding it does not poison:
/// the state it guards is a set of flags, valid at every step.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Links {
    /// Links for a new set of sockets.
    pub fn new() -> Links {
        Links::default()
    }

    /// The link of a new socket: down until a connection completes its
    /// handshake.
    pub fn link(&self) -> Link {
        Link {
            state: Arc::default(),
            bell: Arc::clone(&self.0),
        }
    }

    /// Waits at most `timeout` until one of `links` (made by these
    /// `Links`) is up; returns whether one is.
    pub fn wait_for_any(&self, links: &[&Link], timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        // The bell's lock is held from each look until the wait: a change
        // recorded in between rings only once the wait has begun.
        let mut guard = lock(&self.0.lock);
        loop {
            if links.iter().any(|link| link.is_up()) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            guard = self
                .0
                .changed
                .wait_timeout(guard, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

impl Link {
    /// Whether a connection is up (its handshake done, not closed since),
    /// or nothing watches the socket.
    pub fn is_up(&self) -> bool {
        let state = lock(&self.state);
        state.unwatched || !state.up.is_empty()
    }

    /// Records a monitor event of the socket's connection to `endpoint`:
    /// HANDSHAKE_SUCCEEDED brings it up, DISCONNECTED takes it down, and
    /// the other events change nothing.
    pub fn record(&self, event: u16, endpoint: &[u8]) {
        const HANDSHAKE_SUCCEEDED: u16 = zmq::SocketEvent::HANDSHAKE_SUCCEEDED as u16;
        const DISCONNECTED: u16 = zmq::SocketEvent::DISCONNECTED as u16;
        let changed = {
            let mut state = lock(&self.state);
            match event {
                HANDSHAKE_SUCCEEDED => state.up.insert(endpoint.to_vec()),
                DISCONNECTED => state.up.remove(endpoint),
                _ => false,
            }
        };
        if changed {
            self.ring();
        }
    }

    /// No monitor watches the socket (none could be started): from now on
    /// it counts as connected, and a request sent to it waits in libzmq's
    /// queue until a connection is up, as with a plain socket.
    pub fn unwatched(&self) {
        lock(&self.state).unwatched = true;
        self.ring();
    }

    fn ring(&self) {
        // Taking the lock orders this change after any look in progress.
        drop(lock(&self.bell.lock));
        self.bell.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UP: u16 = zmq::SocketEvent::HANDSHAKE_SUCCEEDED as u16;
    const DOWN: u16 = zmq::SocketEvent::DISCONNECTED as u16;
    const CONNECTED: u16 = zmq::SocketEvent::CONNECTED as u16;

    #[test]
    fn a_link_is_up_from_a_handshake_to_the_close_of_that_connection() {
        let links = Links::new();
        let link = links.link();
        assert!(!link.is_up());
        link.record(CONNECTED, b"tcp://a");
        assert!(!link.is_up(), "connected, but no handshake yet");
        link.record(UP, b"tcp://a");
        link.record(UP, b"tcp://b");
        link.record(DOWN, b"tcp://a");
        assert!(link.is_up(), "b is still up");
        link.record(DOWN, b"tcp://b");
        assert!(!link.is_up());
        // A connection that closes during its handshake was never up.
        link.record(DOWN, b"tcp://c");
        assert!(!link.is_up());
        link.unwatched();
        assert!(link.is_up());
    }

    #[test]
    fn a_wait_ends_when_a_link_comes_up_in_another_thread() {
        let links = Links::new();
        let (first, second) = (links.link(), links.link());
        assert!(!links.wait_for_any(&[&first, &second], Duration::from_millis(20)));
        let recorder = second.clone();
        let thread = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            recorder.record(UP, b"tcp://b");
        });
        // Far longer than the thread takes: a wait that missed the bell
        // would last all of it.
        let waited = Instant::now();
        assert!(links.wait_for_any(&[&first, &second], Duration::from_secs(60)));
        assert!(waited.elapsed() < Duration::from_secs(30));
        thread.join().unwrap();
    }
}
