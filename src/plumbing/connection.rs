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

use crate::plumbing::monitor::{self, parse_event};
use std::collections::HashMap;

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
