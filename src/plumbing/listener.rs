//! Hardening the sockets that bind: one [`Hardening`] per role, made
//! before its first socket, and one [`Hardening::apply`] per listening
//! socket, between creating the socket and binding it.
//!
//! A listening socket faces whoever connects to its port. The lesson only
//! needs `socket`, `bind`, `recv`, `send`; this module holds the rest, so
//! that a role reads as the pattern with one labelled hardening step:
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! # let (limits, security): (zmq_reqrep::plumbing::cli::LimitArgs, zmq_reqrep::plumbing::cli::ServerSecurityArgs) = todo!();
//! let ctx = zmq::Context::new();
//! let hardening = zmq_reqrep::plumbing::listener::Hardening::new(&ctx, &limits, &security)?;
//! let socket = hardening.apply(ctx.socket(zmq::REP)?, "REP")?;
//! socket.bind("tcp://*:5555")?;
//! # Ok(()) }
//! ```
//!
//! [`Hardening::new`] sets the context's I/O threads (`--io-threads`),
//! raises the open-files limit (a descriptor per peer), seeds the routing
//! ids (below) and opens the gate: who may join (`--allow`, PLAIN, CURVE).
//! The gate is src/security/'s: it builds on this module, which only
//! knows it through the [`OpenGate`] and [`Gate`] traits, implemented
//! there for the security options. [`Hardening::apply`] sets the
//! limits below, the linger, ZMTP heartbeats (src/plumbing/keepalive.rs),
//! the gate's checks, and starts the monitor that logs the peers libzmq
//! refuses or drops. Drop order matters and follows from declaration
//! order: the listeners first (each closes its socket and waits for its
//! monitor), then the hardening (which stops the gate's ZAP handler), then
//! the context.
//!
//! ## What one peer can make a listener hold
//!
//! libzmq reads each connection on its own and queues whole messages for
//! the application, per connection, up to the receive high-water mark
//! (ZMQ_RCVHWM); then it stops reading that connection, and TCP makes the
//! peer wait. Its default of 1000 messages let one client that pushed 1 MB
//! requests at a busy server, or at a broker with no worker free, grow the
//! process to 580 MiB. Here the mark is [`LISTEN_HWM`] messages each way,
//! so per connection libzmq holds at most
//!
//! - incoming: `LISTEN_HWM` + 2 messages (the queue, one message waiting to
//!   enter it, one being decoded), each frame at most `--max-message-bytes`:
//!   34 MiB for one-frame messages at the 1 MiB default (measured: a server
//!   or broker flooded by one such client peaks at about 40 MiB);
//! - outgoing: `LISTEN_HWM` messages of ours (replies, heartbeats), plus the
//!   one being encoded; a REP's mark is [`REP_SNDHWM`] (see there why);
//! - besides, the kernel buffers some MiB per TCP connection, not counted in
//!   the process's memory.
//!
//! The bound is per connection: a thousand clients may hold a thousand
//! times as much. And two limits belong to libzmq 4.3 itself, which no
//! option here can fix:
//!
//! - **ZMQ_MAXMSGSIZE limits one frame, not a message.** A peer may send
//!   frames under the limit, each flagged "more to come", without end.
//!   libzmq delivers a multipart message whole or not at all, so it buffers
//!   the frames until the last one, and the high-water mark (which counts
//!   whole messages) never stops it: one such peer can exhaust the memory.
//! - **Routing ids.** A ROUTER (and a REP, which is one inside) names each
//!   peer by a routing id, which the peer may choose itself (ZMQ_ROUTING_ID).
//!   A peer announcing an id already in use is not served at all: nothing it
//!   sends is delivered (ZMQ_ROUTER_HANDOVER would let it take the id over).
//!   A peer announcing an id that starts with a zero byte may take one that
//!   libzmq generates later for an anonymous peer (a zero byte and a 32-bit
//!   counter), and when that peer arrives libzmq 4.3 fails an assertion and
//!   aborts the process (`socket_base.cpp`, `add_out_pipe`). The counter
//!   starts at a value drawn from C's `rand()`, which libzmq 4.3 never
//!   seeds: every process would start from the same value, and one
//!   connection claiming it (`00 6b 8b 45 67` with glibc) would bring down a
//!   server at its next client. So [`Hardening::new`] seeds it
//!   before its first socket; each id a peer claims is then a 1 in 2^32 guess.

use std::hash::{BuildHasher, RandomState};
use std::ops::Deref;
use std::time::Duration;

use tracing::warn;

use crate::LINGER_MS;
use crate::plumbing::cli::LimitArgs;
#[cfg(doc)]
use crate::plumbing::cli::ServerSecurityArgs;
use crate::plumbing::keepalive;
use crate::plumbing::monitor::{self, OpenConnections, Watch};

/// Who may join a listening socket, as the role's security options have
/// set it up (src/security/ implements it: `security::Gate`).
pub trait Gate {
    /// Makes `socket` check its peers (call before `bind`); `kind` names it
    /// in the refusal lines.
    fn protect(&self, socket: &zmq::Socket, kind: &'static str) -> zmq::Result<()>;
}

/// A role's security options, which open its [`Gate`] (src/security/
/// implements it for [`ServerSecurityArgs`]).
pub trait OpenGate {
    /// Opens the gate in `ctx` (its ZAP handler, if it needs one). A bad
    /// security file or combination is a usage error (exit 2).
    fn open_gate(&self, ctx: &zmq::Context) -> anyhow::Result<Box<dyn Gate>>;
}

/// Pending connections a listening socket queues (ZMQ_BACKLOG). libzmq's
/// default of 100 drops the excess when a thousand clients connect at once,
/// and TCP retries a dropped connection only after a second.
pub const LISTEN_BACKLOG: i32 = 65535;

/// Messages a listening socket queues per connection, each way
/// (ZMQ_RCVHWM, ZMQ_SNDHWM); see the module header for what it bounds. A
/// REQ client has one request in flight, a lock-step worker one reply, so
/// this leaves ample room for a DEALER that keeps some requests in flight.
pub const LISTEN_HWM: i32 = 32;

/// A REP's outgoing mark (ZMQ_SNDHWM): libzmq's default, not
/// [`LISTEN_HWM`]. A REP never says its queue is full: it decides whether a
/// reply will go when it *receives* the request, and if its queue to that
/// peer looks full then, it drops the reply silently. It looks with a lag:
/// it learns how much its I/O thread has taken only every half-mark
/// messages, and then up to a millisecond late. At 32, a DEALER that sent
/// 1,000 requests at once to `reqrep_server` lost about a tenth of their
/// replies in 6 runs of 10, while it was reading them all. The price: a
/// peer that keeps sending requests and never reads the replies makes the
/// REP hold up to this many replies: a thousand `World`s are nothing; with
/// `--echo`, they are that peer's own requests, each up to
/// `--max-message-bytes`.
pub const REP_SNDHWM: i32 = 1000;

/// How long closing a listener may wait for its monitor thread: the
/// socket's linger, and a margin.
const MONITOR_JOIN: Duration = Duration::from_millis(LINGER_MS as u64 + 1000);

/// Seeds C's `rand()`, from which libzmq draws where a ROUTER's (or REP's)
/// generated routing ids start, with the randomness Rust's hash maps get
/// from the operating system. Call it once, before creating any socket:
/// the start is drawn when the socket is created.
fn seed_routing_ids() {
    let seed = RandomState::new().hash_one(std::process::id());
    // Keeping the low 32 bits is the point of the cast.
    // SAFETY: srand only sets libc's generator state; no socket is being
    // created on another thread at this point.
    unsafe { libc::srand(seed as libc::c_uint) };
}

/// A hardened listening socket, used as the socket itself (it dereferences
/// to [`zmq::Socket`]). Dropping it closes the socket, lets libzmq deliver
/// what is still queued (the linger), and waits for the monitor thread to
/// end, so that the context can then be dropped and terminated: keep the
/// context in a variable declared before the listener.
pub struct Listener {
    socket: Option<zmq::Socket>,
    watch: Option<Watch>,
    kind: &'static str,
}

/// The hardening every listening socket of one role gets (see the module
/// header). Declare it before the sockets, so that it is dropped after
/// them: it holds the ZAP handler they consult.
pub struct Hardening {
    ctx: zmq::Context,
    limits: LimitArgs,
    gate: Box<dyn Gate>,
}

impl Hardening {
    /// Sets the context's I/O threads (`--io-threads`), raises the
    /// open-files limit, seeds the routing ids and opens the gate (a ZAP
    /// handler in `ctx`, if any `security` option is set).
    /// Call it before the role creates its first socket. A bad security
    /// file or combination is a usage error (exit 2).
    pub fn new(
        ctx: &zmq::Context,
        limits: &LimitArgs,
        security: &impl OpenGate,
    ) -> anyhow::Result<Hardening> {
        ctx.set_io_threads(limits.io_threads)?; // before the first socket (the gate's)
        crate::plumbing::limits::raise_open_files(); // a descriptor per peer
        seed_routing_ids();
        let gate = security.open_gate(ctx)?;
        Ok(Hardening {
            ctx: ctx.clone(),
            limits: limits.clone(),
            gate,
        })
    }

    /// Hardens `socket` before its `bind` (options, heartbeats, the gate's
    /// checks, a monitor); `kind` names it in the log and as its ZAP domain
    /// ("REP", "frontend", "backend").
    pub fn apply(&self, socket: zmq::Socket, kind: &'static str) -> anyhow::Result<Listener> {
        self.apply_with_hint(socket, kind, None)
    }

    /// [`Hardening::apply`], with a hint for the first peer refused during
    /// its handshake (see [`monitor::watch`]): the likely mistake and its
    /// fix.
    pub fn apply_with_hint(
        &self,
        socket: zmq::Socket,
        kind: &'static str,
        refused_hint: Option<&'static str>,
    ) -> anyhow::Result<Listener> {
        socket.set_linger(LINGER_MS)?; // at exit, give the last reply a moment, never hang
        socket.set_backlog(LISTEN_BACKLOG)?; // many clients connecting at once
        socket.set_maxmsgsize(self.limits.as_maxmsgsize())?; // refuse oversize frames
        socket.set_rcvhwm(LISTEN_HWM)?; // bounded memory per peer (module header)
        let rep = socket.get_socket_type()? == zmq::REP;
        socket.set_sndhwm(if rep { REP_SNDHWM } else { LISTEN_HWM })?; // a REP drops when full (above)
        keepalive::enable(&socket)?; // drop silent peers; peers drop us if we go silent
        self.gate.protect(&socket, kind)?; // who may join
        let watch = monitor::watch(
            &self.ctx,
            &socket,
            kind,
            self.limits.max_message_bytes,
            refused_hint,
        )?;
        Ok(Listener {
            socket: Some(socket),
            watch,
            kind,
        })
    }
}

impl Listener {
    /// The socket's open connections, as its monitor counts them; `None`
    /// if the monitor could not be started.
    pub fn open_connections(&self) -> Option<OpenConnections> {
        self.watch.as_ref().map(Watch::open_connections)
    }
}

impl Deref for Listener {
    type Target = zmq::Socket;

    fn deref(&self) -> &zmq::Socket {
        // Only `drop` takes the socket out.
        self.socket
            .as_ref()
            .expect("a listener has its socket until dropped")
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        // zmq_close returns at once; libzmq delivers what is queued (for up
        // to the linger) and then destroys the socket, which sends the
        // monitor its MONITOR_STOPPED event, and the monitor thread ends.
        drop(self.socket.take());
        let Some(watch) = self.watch.take() else {
            return;
        };
        if !watch.join(MONITOR_JOIN) {
            warn!(
                "{}: the connection monitor did not stop within {} ms; exiting without it",
                self.kind,
                MONITOR_JOIN.as_millis()
            );
        }
    }
}
