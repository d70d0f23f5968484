//! The pairs that do not work: REQ-REQ, REP-REP, REQ-DEALER, REP-ROUTER.
//!
//! Every ZeroMQ connection starts with a handshake in which each side
//! announces its socket type (ZMTP's `Socket-Type` property), and libzmq
//! closes the connection when the two types cannot talk: a REQ only talks to
//! REP and ROUTER, a REP only to REQ and DEALER. Nothing an application
//! sends can ever cross. A socket monitor on the bound side makes the
//! refusal visible: the connection is accepted, its handshake never
//! completes, and the connecting side, told it broke the protocol, does not
//! try again.
//!
//! Each pair gets a fixed time to try, so that `socket_pairs invalid` always
//! ends: a REQ or a DEALER queues a request, a REP cannot send first (it
//! must receive a request), a ROUTER has nobody to address.

use std::time::{Duration, Instant};

use super::kind_name;
use crate::plumbing::logging::Count;
use crate::plumbing::output;

/// The illegal pairs shown, (bound side, connecting side).
pub const PAIRS: [(zmq::SocketType, zmq::SocketType); 4] = [
    (zmq::REQ, zmq::REQ),
    (zmq::REP, zmq::REP),
    (zmq::REQ, zmq::DEALER),
    (zmq::REP, zmq::ROUTER),
];

/// Tries every illegal pair for `wait` each and prints what happened.
pub fn run(wait: Duration) -> anyhow::Result<()> {
    output::line(format_args!(
        "== invalid pairs: libzmq refuses mismatched socket types in the handshake =="
    ));
    let ctx = zmq::Context::new();
    for (bound, connecting) in PAIRS {
        try_pair(&ctx, bound, connecting, wait)?;
    }
    output::line(format_args!(""));
    Ok(())
}

fn try_pair(
    ctx: &zmq::Context,
    bound_kind: zmq::SocketType,
    connecting_kind: zmq::SocketType,
    wait: Duration,
) -> anyhow::Result<()> {
    let title = format!("{}-{}", kind_name(bound_kind), kind_name(connecting_kind));
    let bound = ctx.socket(bound_kind)?;
    bound.set_linger(0)?;
    // The monitor reports the bound socket's connections on an inproc PAIR.
    let monitor_endpoint = format!("inproc://invalid-{title}");
    bound.monitor(&monitor_endpoint, zmq::SocketEvent::ALL as i32)?;
    let monitor = ctx.socket(zmq::PAIR)?;
    monitor.set_linger(0)?;
    monitor.connect(&monitor_endpoint)?;
    bound.bind("tcp://127.0.0.1:*")?;
    let endpoint = crate::plumbing::endpoint::last_endpoint(&bound);

    let connecting = ctx.socket(connecting_kind)?;
    connecting.set_linger(0)?;
    connecting.connect(&endpoint)?;

    for (socket, kind, side) in [
        (&connecting, connecting_kind, "connecting"),
        (&bound, bound_kind, "bound"),
    ] {
        let outcome = match kind {
            zmq::REQ | zmq::DEALER => match socket.send("Hello", zmq::DONTWAIT) {
                Ok(()) => "queued a request for a peer that will never take it".to_string(),
                Err(zmq::Error::EAGAIN) => {
                    "has no peer to send to (EAGAIN): no handshake ever completed".to_string()
                }
                Err(error) => format!("could not send ({error})"),
            },
            zmq::REP => match socket.send("World", zmq::DONTWAIT) {
                Err(zmq::Error::EFSM) => {
                    "may not send first (EFSM): it waits for a request".to_string()
                }
                other => format!("send returned {other:?}"),
            },
            _ => {
                socket.set_router_mandatory(true)?;
                match socket.send_multipart([&b"anyone"[..], b"World"], zmq::DONTWAIT) {
                    Err(zmq::Error::EHOSTUNREACH) => {
                        "knows no peer to address (EHOSTUNREACH)".to_string()
                    }
                    other => format!("send returned {other:?}"),
                }
            }
        };
        output::line(format_args!(
            "{title}: {side} {}: {outcome}",
            kind_name(kind)
        ));
    }

    // Watch both sockets and the monitor for `wait`.
    let (mut delivered, mut accepted, mut greeted) = (0, 0, 0);
    let deadline = Instant::now() + wait;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let mut items = [
            bound.as_poll_item(zmq::POLLIN),
            connecting.as_poll_item(zmq::POLLIN),
            monitor.as_poll_item(zmq::POLLIN),
        ];
        zmq::poll(&mut items, left.as_millis().max(1) as i64)?;
        for (item, socket) in items[..2].iter().zip([&bound, &connecting]) {
            if item.is_readable() && socket.recv_multipart(zmq::DONTWAIT).is_ok() {
                delivered += 1;
            }
        }
        if items[2].is_readable() {
            let event = monitor.recv_multipart(0)?;
            match event_number(&event) {
                Some(e) if e == zmq::SocketEvent::ACCEPTED as u16 => accepted += 1,
                Some(e) if e == zmq::SocketEvent::HANDSHAKE_SUCCEEDED as u16 => greeted += 1,
                _ => {}
            }
        }
    }
    // Close the monitored socket, then read its monitor up to the last event
    // (MONITOR_STOPPED): libzmq 4.3 sends monitor events with a blocking
    // send, so an event with no reader left would block libzmq's own
    // threads, and with them every socket of the context.
    drop(connecting);
    drop(bound);
    monitor.set_rcvtimeo(1000)?;
    while let Ok(event) = monitor.recv_multipart(0) {
        if event_number(&event) == Some(zmq::SocketEvent::MONITOR_STOPPED as u16) {
            break;
        }
    }

    let verdict = if delivered == 0 && greeted == 0 {
        "not working"
    } else {
        "WORKING?!"
    };
    output::line(format_args!(
        "{title}: {verdict}: {} delivered in {} ms; the monitor saw {} accepted, {} \
         completed: libzmq refused the socket types",
        Count::new(delivered, "message"),
        wait.as_millis(),
        Count::new(accepted, "connection"),
        Count::new(greeted, "handshake"),
    ));
    Ok(())
}

/// The event number at the start of a monitor message.
fn event_number(event: &[Vec<u8>]) -> Option<u16> {
    let head = event.first()?.get(..2)?;
    Some(u16::from_le_bytes([head[0], head[1]]))
}
