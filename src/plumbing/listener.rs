//! Hardening a socket that binds: one call, [`harden`], made between
//! creating the socket and binding it.
//!
//! A listening socket faces whoever connects to its port. The lesson only
//! needs `socket`, `bind`, `recv`, `send`; this module holds the rest, so
//! that a role reads as the pattern with one labelled hardening step.

use crate::LINGER_MS;
use crate::plumbing::cli::LimitArgs;
use crate::plumbing::{keepalive, monitor};

/// Pending connections a listening socket queues (ZMQ_BACKLOG). libzmq's
/// default of 100 drops the excess when a thousand clients connect at once,
/// and TCP retries a dropped connection only after a second.
pub const LISTEN_BACKLOG: i32 = 1024;

/// Sets the options a listening socket needs before `bind` (ZMTP
/// heartbeats among them), and starts the monitor that logs the peers
/// libzmq refuses or drops. `kind` names the socket in
/// the log ("REP", "frontend", "backend").
pub fn harden(
    ctx: &zmq::Context,
    socket: &zmq::Socket,
    kind: &'static str,
    limits: &LimitArgs,
) -> zmq::Result<()> {
    socket.set_linger(LINGER_MS)?; // at exit, give the last reply a moment, never hang
    socket.set_backlog(LISTEN_BACKLOG)?; // many clients connecting at once
    socket.set_maxmsgsize(limits.as_maxmsgsize())?; // refuse oversize messages
    keepalive::enable(socket)?; // drop silent peers; peers drop us if we go silent
    monitor::watch(ctx, socket, kind, limits.max_message_bytes)
}
