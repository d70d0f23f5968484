//! ZMTP heartbeats: no connection stays idle long enough to be forgotten by
//! the network, and a peer that silently went away is noticed.
//!
//! A TCP connection on which nothing is sent looks the same whether the
//! peer is waiting or gone. Between the two ends, something may also forget
//! an idle connection: Docker Swarm's virtual IPs are Linux IPVS, which drops
//! a connection idle for 900 s from its table and stops forwarding its
//! packets (moby/moby#31208: across hosts, the connection then just hangs),
//! and NAT routers do the same after their own timeout. A worker waiting
//! for requests, or a client between requests, is exactly such a connection.
//!
//! [`enable`] sets libzmq's own heartbeats (ZMTP 3.1, libzmq 4.2 or later).
//! What libzmq 4.3 does with them (`stream_engine_base.cpp`,
//! `zmtp_engine.cpp`), on every connection of the socket, once its
//! handshake is done:
//!
//! - ZMQ_HEARTBEAT_IVL: it sends a PING command every [`INTERVAL`], whatever
//!   else is sent. The peer's libzmq answers with a PONG. Neither reaches
//!   the application. The connection is never idle for more than
//!   [`INTERVAL`].
//! - ZMQ_HEARTBEAT_TIMEOUT: when nothing at all (a message, a PONG) has come
//!   from the peer [`TIMEOUT`] after a PING, libzmq closes the connection. A
//!   socket that connected then connects again; one that bound forgets the
//!   peer, as if it had left.
//! - ZMQ_HEARTBEAT_TTL: each PING tells the peer to close the connection if
//!   nothing more comes from us within [`TTL`]. The peer needs no option
//!   for that: a plain REP worker, or the course's Python worker, connected
//!   to our broker also gives up on a broker that has gone silent, and
//!   connects again.
//!
//! So a dead peer (its machine off, the network cut, the process frozen) is
//! noticed within [`INTERVAL`] + [`TIMEOUT`].
//!
//! Why not TCP keepalive (ZMQ_TCP_KEEPALIVE_IDLE): its probes would keep
//! IPVS's entry fresh just as well, but the peer's kernel answers them, so a
//! process that is stopped (Ctrl-Z in its terminal, SIGSTOP, a debugger's
//! breakpoint) looks alive for ever. A PONG comes from the peer's libzmq.
//!
//! What heartbeats do not tell: whether the application is working. The
//! PONG comes from libzmq's I/O thread, so a worker stuck in its own loop
//! (`--hang-after`) still answers; the lb protocol's HEARTBEAT, sent by the
//! application, is for that (`src/protocol.rs`). And libzmq stops reading a
//! connection whose incoming queue is full (ZMQ_RCVHWM: 1000 messages by
//! default, 32 on the listening sockets, see `src/plumbing/listener.rs`),
//! PONGs included, so a peer whose messages wait unread for [`TIMEOUT`] is
//! dropped as if dead. A REQ client or a worker never has that many
//! waiting; a DEALER client keeping more than 32 requests in flight at a
//! broker with no worker free for that long would be dropped.

use std::time::Duration;

/// How often each connection sends a PING: far below IPVS's 900 s.
pub const INTERVAL: Duration = Duration::from_secs(10);

/// Silence after a PING that closes the connection.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// Silence after our PING that makes the peer close the connection.
pub const TTL: Duration = Duration::from_secs(30);

/// Turns on ZMTP heartbeats on `socket`. Call it before `bind` or
/// `connect`: libzmq copies a socket's options when it binds or connects.
pub fn enable(socket: &zmq::Socket) -> zmq::Result<()> {
    socket.set_heartbeat_ivl(millis(INTERVAL))?;
    socket.set_heartbeat_timeout(millis(TIMEOUT))?;
    socket.set_heartbeat_ttl(millis(TTL))
}

fn millis(duration: Duration) -> i32 {
    i32::try_from(duration.as_millis()).unwrap_or(i32::MAX)
}
