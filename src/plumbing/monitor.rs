//! Making visible what libzmq drops before the application sees it.
//!
//! A listening socket refuses some peers inside libzmq, and the application
//! never hears of them: a peer that is not ZeroMQ at all (random bytes, an
//! HTTP request), a ZeroMQ socket of a type that cannot talk to this one
//! (a SUB dialling a REP), or a frame over `--max-message-bytes`
//! (ZMQ_MAXMSGSIZE), for which libzmq cuts the connection instead of
//! buffering the frame. A socket monitor (`zmq_socket_monitor`) is libzmq's
//! window on this: it reports each connection's events on an inproc PAIR
//! socket, which a thread here turns into log lines.
//!
//! The events carry a file descriptor, not the peer's address, and by the
//! time a `DISCONNECTED` event is read libzmq has already closed that
//! descriptor. So on `ACCEPTED` the thread keeps a duplicate of the
//! descriptor. The duplicate gives the peer's address, and at `DISCONNECTED`
//! it tells who ended the connection: if the peer is still there (no end of
//! file), libzmq cut it. With `HANDSHAKE_SUCCEEDED` telling whether the
//! ZeroMQ handshake was over, that makes four cases:
//!
//! | who closed | handshake over? | what it was | logged as |
//! |---|---|---|---|
//! | libzmq | yes | a frame over the size limit, a malformed frame, or a silent peer (heartbeats) | warning |
//! | libzmq | no | not ZMTP, or a socket type that cannot talk to this one | warning |
//! | the peer | no | an incompatible ZeroMQ socket refusing us, or a port scan | warning |
//! | the peer | yes | a normal goodbye | info |
//!
//! A connection cut during its handshake (`HANDSHAKE_FAILED_*`, emitted just
//! before its `DISCONNECTED`) is always a warning. libzmq emits
//! `HANDSHAKE_FAILED_NO_DETAIL` for a connection error (the peer hung up:
//! end of file reads as EPIPE, or ECONNRESET) or the handshake's time
//! limit. A socket-type mismatch that libzmq finds itself, in the peer's
//! READY, is a protocol error it reports with no event at all; but the peer
//! may find it first, in our READY, and hang up. A hang-up is also what a
//! peer that gave up waiting leaves: a worker whose connection the kernel
//! of a stopped broker (SIGSTOP, `docker pause`) had completed, and that
//! libzmq accepts only once the broker runs again. So the hint about a
//! mistaken socket type is kept for a hang-up from a peer that had answered
//! our greeting (its byte count, TCP_INFO) and, when that cannot be read,
//! for one that does not come right after this process was stopped. Right
//! after a stop no hint is given at all, and the connections accepted then
//! are logged without an address: their descriptors are closed and reused
//! so fast that a look at them could find another connection.
//!
//! A duplicate is a second descriptor per peer, and a listener facing
//! thousands of clients must not run out of descriptors for its own
//! connections: the thread keeps at most a quarter of the open-files limit
//! in duplicates ([`KEPT_SHARE`]), which leaves three quarters for the
//! connections. Past that, a peer's address is read and the duplicate
//! closed at once, and when such a peer leaves, the log cannot tell its own
//! goodbye from a cut by libzmq.
//!
//! Many peers at once (a class of 10,000 clients starting together) would
//! make as many lines: at most [`LINES_PER_SECOND`] connection lines a
//! second are logged one by one, and the rest are counted and summed up in
//! one line a second later. When libzmq cannot accept a connection at all
//! (`ACCEPT_FAILED`: no descriptor left, most often), one warning says
//! which limit it hit and how to raise it, repeated at most every
//! [`ACCEPT_FAILED_EVERY`] with a count: libzmq retries that accept in a
//! busy loop until a descriptor is free.
//!
//! This is best effort: a wrong-type ZeroMQ peer on the same machine can be
//! refused within microseconds, before this thread has read the ACCEPTED
//! event. It is still reported, as "a peer", without its address; and should
//! its descriptor number already belong to the next connection, the warning
//! may name that connection's address.

use std::collections::{HashMap, HashSet};
use std::io::ErrorKind;
use std::net::TcpStream;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use crate::plumbing::limits;
use crate::plumbing::logging::Count;

const EVENT_ACCEPTED: u16 = zmq::SocketEvent::ACCEPTED as u16;
const EVENT_DISCONNECTED: u16 = zmq::SocketEvent::DISCONNECTED as u16;
const EVENT_MONITOR_STOPPED: u16 = zmq::SocketEvent::MONITOR_STOPPED as u16;
const EVENT_HANDSHAKE_SUCCEEDED: u16 = zmq::SocketEvent::HANDSHAKE_SUCCEEDED as u16;
const EVENT_HANDSHAKE_FAILED_NO_DETAIL: u16 = zmq::SocketEvent::HANDSHAKE_FAILED_NO_DETAIL as u16;
const EVENT_HANDSHAKE_FAILED_PROTOCOL: u16 = zmq::SocketEvent::HANDSHAKE_FAILED_PROTOCOL as u16;
const EVENT_HANDSHAKE_FAILED_AUTH: u16 = zmq::SocketEvent::HANDSHAKE_FAILED_AUTH as u16;
const EVENT_ACCEPT_FAILED: u16 = zmq::SocketEvent::ACCEPT_FAILED as u16;

/// The share of the open-files limit the monitor may hold in duplicate
/// descriptors: a quarter.
pub const KEPT_SHARE: u64 = 4;

/// Connection lines (a peer connected, disconnected, dropped) logged one by
/// one per second, at most; the others are counted and summed up.
pub const LINES_PER_SECOND: u32 = 100;

/// How often the warning about connections libzmq could not accept is
/// repeated while it goes on.
pub const ACCEPT_FAILED_EVERY: Duration = Duration::from_secs(10);

/// Starts a thread that logs the connections of `socket` (call before
/// `bind`), and returns its handle, or `None` if no thread could be started
/// (a warning says so, and the socket is then not monitored at all).
///
/// The thread reads events until the socket is destroyed: libzmq sends
/// `MONITOR_STOPPED` from the socket's destructor, which runs once the
/// socket is closed and its linger is over. Never earlier: libzmq 4.3 sends
/// monitor events with a blocking send, so an event nobody reads any more
/// would block the sender, and every socket of the context with it. And not
/// later: the thread's socket belongs to the context, which cannot be
/// terminated while it is open. [`Watch::join`] waits for the end.
///
/// `kind` names the socket in the log ("frontend", "REP"),
/// `max_message_bytes` is quoted when a peer is cut for an oversize frame,
/// and `hint` (the likely mistake and its fix, such as "if it was a plain
/// REP worker: ... start the workers with --mode lb"), if any, is added
/// to the first warning about a peer refused during its handshake; not to
/// one about a peer that hung up before the handshake ended, which says
/// nothing about its socket type (a worker giving up on a frozen broker).
pub fn watch(
    ctx: &zmq::Context,
    socket: &zmq::Socket,
    kind: &'static str,
    max_message_bytes: u64,
    hint: Option<&'static str>,
) -> zmq::Result<Option<Watch>> {
    let events = i32::from(
        EVENT_ACCEPTED
            | EVENT_DISCONNECTED
            | EVENT_HANDSHAKE_SUCCEEDED
            | EVENT_HANDSHAKE_FAILED_NO_DETAIL
            | EVENT_HANDSHAKE_FAILED_PROTOCOL
            | EVENT_HANDSHAKE_FAILED_AUTH
            | EVENT_ACCEPT_FAILED
            | EVENT_MONITOR_STOPPED,
    );
    // Duplicate descriptors kept at most (module header); the role has
    // raised the limit already.
    let keep_at_most = limits::open_files().map_or(256, |limit| limit.soft / KEPT_SHARE);
    // No monitor is started without a thread to read it.
    let (receiver, endpoint) = receiver(ctx, "monitor")?;
    // Woken at least this often, so that a longer gap means this process
    // was stopped (see `Watcher::woke`).
    receiver.set_rcvtimeo(i32::try_from(WAKE.as_millis()).unwrap_or(i32::MAX))?;
    let (done, finished) = mpsc::channel();
    let open = OpenConnections::default();
    let counted = open.clone();
    let spawned = thread::Builder::new()
        .name(format!("monitor-{kind}"))
        .spawn(move || {
            Watcher {
                kind,
                max_message_bytes,
                peers: HashMap::new(),
                in_handshake: HashSet::new(),
                keep_at_most,
                kept: 0,
                lines: Lines::default(),
                overflows: Overflows::new(),
                refused_accepts: None,
                handshake_failed: None,
                hint,
                open: counted,
                awake_at: Instant::now(),
                thawed_at: None,
            }
            .run(&receiver);
            // Close the socket before saying so: the context waits for it.
            drop(receiver);
            let _ = done.send(());
        });
    let thread = match spawned {
        Ok(thread) => thread,
        Err(error) => {
            warn!(
                "{kind}: cannot start the connection monitor ({error}); dropped peers will not be logged"
            );
            return Ok(None);
        }
    };
    socket.monitor(&endpoint, events)?;
    Ok(Some(Watch {
        thread,
        finished,
        open,
    }))
}

/// How many connections a monitored socket has open: accepted and not yet
/// disconnected, as far as its monitor thread has read the events (it
/// reads them as they come). Any peer counts, until libzmq drops it: one
/// that is not ZeroMQ at all is counted for the moment its handshake takes
/// to fail.
#[derive(Clone, Debug, Default)]
pub struct OpenConnections(Arc<AtomicUsize>);

impl OpenConnections {
    /// The count now.
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// The monitor thread of one socket.
pub struct Watch {
    thread: thread::JoinHandle<()>,
    finished: mpsc::Receiver<()>,
    open: OpenConnections,
}

impl Watch {
    /// The socket's open connections, counted by this thread.
    pub fn open_connections(&self) -> OpenConnections {
        self.open.clone()
    }

    /// Waits, at most `within`, for the thread to end, which it does once
    /// its socket is closed and destroyed; `false` if it did not end in
    /// time (the thread is then left to the process's exit).
    pub fn join(self, within: Duration) -> bool {
        match self.finished.recv_timeout(within) {
            // Disconnected: the thread ended without saying so (a panic).
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                let _ = self.thread.join();
                true
            }
            Err(mpsc::RecvTimeoutError::Timeout) => false,
        }
    }
}

/// How a handshake failed, from its `HANDSHAKE_FAILED_*` event.
enum Failure {
    /// No detail but an errno (0 when there is none).
    NoDetail(u32),
    /// A ZMTP or ZAP protocol error code (`ZMQ_PROTOCOL_ERROR_*`).
    Protocol(u32),
    /// The ZAP handler's status code (400: refused).
    Auth(u32),
}

struct Watcher {
    kind: &'static str,
    max_message_bytes: u64,
    /// Accepted connections, by libzmq's descriptor.
    peers: HashMap<u32, Peer>,
    /// Those of `peers` whose handshake may not be over.
    in_handshake: HashSet<u32>,
    /// Duplicates kept at most, and kept now.
    keep_at_most: u64,
    kept: u64,
    /// The connection lines logged and held back this second.
    lines: Lines,
    /// Connections the kernel turned away, its queue full.
    overflows: Overflows,
    /// Accepts that failed (ACCEPT_FAILED): the last errno, when it was
    /// last logged, and how many failed since.
    refused_accepts: Option<(u32, Instant, u64)>,
    /// A handshake failure waiting for its connection's DISCONNECTED event.
    handshake_failed: Option<Failure>,
    /// Added to the first handshake-failure warning, then forgotten.
    hint: Option<&'static str>,
    /// `peers.len()`, for other threads.
    open: OpenConnections,
    /// When this thread last ran.
    awake_at: Instant,
    /// When this thread last ran again after this process was stopped.
    thawed_at: Option<Instant>,
}

struct Peer {
    /// `ip:port`, or "a peer" when it could not be read.
    address: String,
    /// Our duplicate of libzmq's descriptor; `None` if libzmq had closed it
    /// already when the ACCEPTED event was read, or if it was not kept.
    stream: Option<TcpStream>,
    /// Its address was read, but its duplicate not kept: a quarter of
    /// the open-files limit was in duplicates already (module header).
    unwatched: bool,
    /// Whether its ZeroMQ handshake completed (see `handshake_succeeded`).
    greeted: bool,
    /// Accepted right after this process was stopped: see `accepted`.
    late: bool,
}

impl Watcher {
    fn run(mut self, receiver: &zmq::Socket) {
        read_events(receiver, |event| {
            self.woke();
            if let Some((event, value, _)) = event {
                self.event(event, value);
            }
            let now = Instant::now();
            self.lines.tick(self.kind, now);
            self.overflows.check(self.kind, now);
        });
        self.lines.tick(self.kind, Instant::now() + LINES_WINDOW);
    }

    /// Notes a stop of this process (SIGSTOP, Ctrl-Z, `docker pause`):
    /// the thread is woken every [`WAKE`] at least, so a gap much longer
    /// than that means it could not run.
    fn woke(&mut self) {
        let now = Instant::now();
        if now.duration_since(std::mem::replace(&mut self.awake_at, now)) > STOPPED_AFTER {
            self.thawed_at = Some(now);
        }
    }

    /// Whether this process runs again since a moment only, after a stop:
    /// the connections its kernel queued meanwhile are being accepted, many
    /// of them abandoned by peers that gave up waiting.
    fn just_thawed(&self) -> bool {
        self.thawed_at
            .is_some_and(|thawed_at| thawed_at.elapsed() < THAWED_FOR)
    }

    fn event(&mut self, event: u16, value: u32) {
        match event {
            EVENT_ACCEPTED => self.accepted(value),
            EVENT_HANDSHAKE_SUCCEEDED => self.handshake_succeeded(),
            EVENT_HANDSHAKE_FAILED_NO_DETAIL => {
                self.handshake_failed = Some(Failure::NoDetail(value));
            }
            EVENT_HANDSHAKE_FAILED_PROTOCOL => {
                self.handshake_failed = Some(Failure::Protocol(value));
            }
            EVENT_HANDSHAKE_FAILED_AUTH => {
                self.handshake_failed = Some(Failure::Auth(value));
            }
            EVENT_DISCONNECTED => self.disconnected(value),
            EVENT_ACCEPT_FAILED => self.accept_failed(value),
            _ => {}
        }
    }

    /// libzmq could not accept a connection: said once, then at most every
    /// [`ACCEPT_FAILED_EVERY`] with a count, for libzmq retries at once
    /// (the connection waits in the kernel's queue meanwhile).
    fn accept_failed(&mut self, errno: u32) {
        let now = Instant::now();
        if let Some((last, at, more)) = &mut self.refused_accepts {
            if *last == errno && now.duration_since(*at) < ACCEPT_FAILED_EVERY {
                *more += 1;
                return;
            }
        }
        let again = match self.refused_accepts.take() {
            Some((_, at, more)) if more > 0 => format!(
                " ({} more since the last such line, {:.0} s ago)",
                Count::new(more, "failure"),
                now.duration_since(at).as_secs_f64()
            ),
            _ => String::new(),
        };
        warn!(
            "{}: cannot accept a connection ({}): {}{again}",
            self.kind,
            errno_text(errno),
            accept_failure_advice(errno, self.peers.len())
        );
        self.refused_accepts = Some((errno, now, 0));
    }

    fn accepted(&mut self, fd: u32) {
        // Right after a stop, libzmq accepts what the kernel queued
        // meanwhile, and most of it was given up on: those descriptors are
        // closed at once and their numbers reused, often before this
        // thread reads the ACCEPTED events. A duplicate made now could be
        // another connection's, with its address and its byte count: no
        // address is read, and no hint is given, for these.
        if self.just_thawed() {
            debug!(
                "{}: a peer connected right after this process was stopped (its address \
                 is not read: the descriptor may be another connection's by now)",
                self.kind
            );
            self.insert(
                fd,
                Peer {
                    address: "a peer".into(),
                    stream: None,
                    unwatched: false,
                    greeted: false,
                    late: true,
                },
            );
            return;
        }
        let peer = match duplicate(fd) {
            Some(stream) => {
                let address = stream.peer_addr().map_or_else(
                    |_| "a local peer".to_string(),
                    |address| address.to_string(),
                );
                let kind = self.kind;
                self.lines
                    .info(Held::Connected, || format!("{kind}: {address} connected"));
                // Within the share of the limit, keep it; past it, close it
                // now.
                let keep = self.kept < self.keep_at_most;
                self.kept += u64::from(keep);
                Peer {
                    address,
                    stream: keep.then_some(stream),
                    unwatched: !keep,
                    greeted: false,
                    late: false,
                }
            }
            // Refused so fast that libzmq closed it before this thread
            // could look: only a failed handshake is that quick.
            None => Peer {
                address: "a peer".into(),
                stream: None,
                unwatched: false,
                greeted: false,
                late: false,
            },
        };
        self.insert(fd, peer);
    }

    fn insert(&mut self, fd: u32, peer: Peer) {
        self.overflows.accepted += 1;
        self.peers.insert(fd, peer);
        self.in_handshake.insert(fd);
        self.open.0.store(self.peers.len(), Ordering::Relaxed);
    }

    /// The event does not say which connection completed its handshake.
    /// With one connection still in its handshake, it is that one; with
    /// several, all get the benefit of the doubt (no false alarm, at the
    /// price of missing a refusal among simultaneous arrivals).
    fn handshake_succeeded(&mut self) {
        for fd in self.in_handshake.drain() {
            if let Some(peer) = self.peers.get_mut(&fd) {
                peer.greeted = true;
            }
        }
    }

    fn disconnected(&mut self, fd: u32) {
        let kind = self.kind;
        let removed = self.peers.remove(&fd);
        self.in_handshake.remove(&fd);
        self.open.0.store(self.peers.len(), Ordering::Relaxed);
        if removed.as_ref().is_some_and(|peer| peer.stream.is_some()) {
            self.kept -= 1;
        }
        let Some(Peer {
            address,
            stream,
            unwatched,
            greeted,
            late,
        }) = removed
        else {
            self.lines.info(Held::Disconnected, || {
                format!("{kind}: a peer disconnected")
            });
            return;
        };
        let max = Count::new(self.max_message_bytes, "byte");
        match self.handshake_failed.take() {
            // The ZAP handler refused it, and has logged who and why
            // (src/security/), rate-limited: saying it again here would
            // undo that limit.
            Some(Failure::Auth(status)) => {
                debug!("{kind}: {address} refused by the ZAP handler (status {status})");
                return;
            }
            Some(Failure::Protocol(MECHANISM_MISMATCH)) => {
                self.lines.warn(|| {
                    format!(
                        "{kind}: dropped {address}: it uses another security mechanism than \
                         this socket (NULL, PLAIN or CURVE)"
                    )
                });
                return;
            }
            Some(Failure::Protocol(code)) => {
                self.lines.warn(|| {
                    format!(
                        "{kind}: dropped {address}: ZeroMQ handshake failed ({})",
                        protocol_error(code)
                    )
                });
                return;
            }
            // A connection error or a timeout. A socket-type mismatch that
            // libzmq finds here, in the peer's READY, is a protocol error it
            // reports with no HANDSHAKE_FAILED event (mechanism.cpp,
            // stream_engine_base.cpp); but the peer finds the mismatch in
            // our READY too, and when that comes first it hangs up before
            // sending its own, and this is what is left of it.
            Some(Failure::NoDetail(errno)) => {
                let reason = errno_text(errno);
                // tcp.cpp reads end of file as EPIPE; ECONNRESET is the
                // same hang-up, abrupt.
                let hung_up = matches!(i32::try_from(errno), Ok(libc::EPIPE | libc::ECONNRESET));
                let sent = stream.as_ref().and_then(bytes_received);
                let (what, hint) = match sent {
                    // Other network errors, and the handshake's time limit
                    // (ZMQ_HANDSHAKE_IVL, 30 s), whose errno is whatever
                    // the I/O thread saw last.
                    _ if !hung_up => (
                        "the connection failed before the handshake ended (a network error, \
                         or no complete handshake within 30 s)",
                        String::new(),
                    ),
                    // It read our greeting and answered it: a ZeroMQ peer
                    // that refused us, for our socket type most likely.
                    Some(sent) if sent >= GREETING_BYTES => (
                        "the peer answered our greeting, then closed the connection (a socket \
                         type that cannot talk to this one, a peer that gave up or closed its \
                         socket, or not a ZeroMQ peer)",
                        self.take_hint(),
                    ),
                    // It gave up without a word, or after the 10 bytes a
                    // ZeroMQ socket sends first: a worker that waited in
                    // vain for a stopped (paused) broker, whose kernel had
                    // accepted the connection all the same, or a port scan.
                    // Its mode is not in question: no hint.
                    Some(_) => (
                        "the peer closed the connection before it answered our greeting (it \
                         gave up waiting, or it is not a ZeroMQ peer)",
                        String::new(),
                    ),
                    // Closed too fast to be looked at, as the connections
                    // given up on while this process was stopped are (they
                    // waited in the kernel's backlog, their peer gone,
                    // until it ran again): right after a stop, no hint.
                    None if late || self.just_thawed() => (
                        "the peer closed the connection before the handshake ended (it gave \
                         up waiting while this process was stopped, or it is not a ZeroMQ \
                         peer)",
                        String::new(),
                    ),
                    None => (
                        "the peer closed the connection before the handshake ended (a socket \
                         type that cannot talk to this one, it gave up waiting, or it is not a \
                         ZeroMQ peer)",
                        self.take_hint(),
                    ),
                };
                self.lines.warn(|| {
                    format!(
                        "{kind}: dropped {address}: ZeroMQ handshake failed ({reason}): \
                         {what}{hint}"
                    )
                });
                return;
            }
            None => {}
        }
        if unwatched {
            // Its address is known, but not who closed the connection.
            if greeted {
                self.lines.info(Held::Disconnected, || {
                    format!(
                        "{kind}: {address} disconnected, or libzmq cut it (with this many \
                         connections open, who closed one is not checked)"
                    )
                });
            } else {
                let hint = self.take_hint();
                self.lines.warn(|| {
                    format!(
                        "{kind}: dropped {address} during its handshake: not a ZeroMQ peer, a \
                         socket type that cannot talk to this one, or it hung up{hint}"
                    )
                });
            }
            return;
        }
        let Some(stream) = stream else {
            if late {
                if greeted {
                    self.lines.info(Held::Disconnected, || {
                        format!("{kind}: a peer disconnected")
                    });
                } else {
                    self.lines.warn(|| {
                        format!(
                            "{kind}: dropped a peer during its handshake, accepted right after \
                             this process was stopped: most likely one that gave up waiting \
                             meanwhile"
                        )
                    });
                }
            } else if greeted {
                self.lines.warn(|| {
                    format!(
                        "{kind}: a peer left before this process could read its address (it \
                         stayed only a moment, or this process was busy), or libzmq dropped it \
                         for a frame over --max-message-bytes ({max}) or a malformed frame"
                    )
                });
            } else {
                let hint = self.take_hint();
                self.lines.warn(|| {
                    format!(
                        "{kind}: dropped a peer during its handshake, too fast to read its \
                         address: not a ZeroMQ peer, or a socket type that cannot talk to this \
                         one{hint}"
                    )
                });
            }
            return;
        };
        // Unread bytes, or none but no end of file either: libzmq closed the
        // connection while the peer was still there.
        let mut byte = [0u8; 1];
        let cut_by_libzmq = match stream.peek(&mut byte) {
            Ok(unread) => unread > 0,
            Err(error) => error.kind() == ErrorKind::WouldBlock,
        };
        let hint = if greeted {
            String::new()
        } else {
            self.take_hint()
        };
        match (cut_by_libzmq, greeted) {
            // After the handshake, libzmq only checks frames (their syntax
            // and ZMQ_MAXMSGSIZE) and, with heartbeats on, that the peer
            // answers them (src/plumbing/keepalive.rs).
            (true, true) => self.lines.warn(|| {
                format!(
                    "{kind}: dropped {address} after its handshake: a frame over \
                     --max-message-bytes ({max}), a malformed frame, or silence after \
                     a heartbeat (a frozen or unreachable peer)"
                )
            }),
            (true, false) => self.lines.warn(|| {
                format!(
                    "{kind}: dropped {address}: it broke the ZeroMQ handshake (not a ZeroMQ \
                     peer, or a socket type that cannot talk to this one){hint}"
                )
            }),
            // A ZeroMQ socket of an incompatible type refuses us too, and a
            // port scan just leaves.
            (false, false) => self.lines.warn(|| {
                format!(
                    "{kind}: dropped {address}: it hung up during the ZeroMQ handshake \
                     (a socket type that cannot talk to this one, or not a ZeroMQ peer){hint}"
                )
            }),
            (false, true) => self.lines.info(Held::Disconnected, || {
                format!("{kind}: {address} disconnected")
            }),
        }
    }
}

/// The kernel's count of connections turned away for a full accept queue
/// ([`limits::listen_overflows`]), looked at once a second: when it grew
/// while this socket was accepting connections, most likely they were
/// this socket's (the count covers the whole host, or container).
struct Overflows {
    /// The count when last looked at, and when that was.
    last: Option<(u64, Instant)>,
    /// Connections accepted since.
    accepted: u64,
    /// When the last warning was logged, and the overflows since.
    warned: Option<(Instant, u64)>,
}

impl Overflows {
    fn new() -> Overflows {
        Overflows {
            last: limits::listen_overflows().map(|count| (count, Instant::now())),
            accepted: 0,
            warned: None,
        }
    }

    fn check(&mut self, kind: &str, now: Instant) {
        let Some((before, at)) = self.last else {
            return;
        };
        let elapsed = now.duration_since(at);
        if elapsed < LINES_WINDOW {
            return;
        }
        let Some(count) = limits::listen_overflows() else {
            self.last = None;
            return;
        };
        self.last = Some((count, now));
        let turned_away = count.saturating_sub(before);
        let accepted = std::mem::take(&mut self.accepted);
        if turned_away == 0 || accepted == 0 {
            return;
        }
        // One line at most every ACCEPT_FAILED_EVERY, counting the others.
        if let Some((warned_at, more)) = &mut self.warned {
            if now.duration_since(*warned_at) < ACCEPT_FAILED_EVERY {
                *more += turned_away;
                return;
            }
        }
        let since = match self.warned.take() {
            Some((warned_at, more)) if more > 0 => format!(
                " ({more} more since the last such line, {:.0} s ago)",
                now.duration_since(warned_at).as_secs_f64()
            ),
            _ => String::new(),
        };
        let (queue, advice) = match limits::backlog_cap() {
            Some(cap) if cap < LISTEN_BACKLOG_ASKED => (
                format!(" (it holds {cap}: net.core.somaxconn caps the backlog)"),
                "; raise it with `sysctl -w net.core.somaxconn=65535` (in a container: \
                 `sysctls:` in its compose file)",
            ),
            _ => (String::new(), "; the process accepts as fast as it can"),
        };
        warn!(
            "{kind}: the kernel turned away {} in the last {:.1} s, its queue of connections \
             waiting to be accepted full{queue}{since}: TCP tries each such connection \
             again after 1 s, then 3 s, 7 s...{advice}",
            Count::new(turned_away, "connection attempt"),
            elapsed.as_secs_f64()
        );
        self.warned = Some((now, 0));
    }
}

/// The backlog the listening sockets ask for (see
/// [`crate::plumbing::listener::LISTEN_BACKLOG`]).
const LISTEN_BACKLOG_ASKED: u64 = crate::plumbing::listener::LISTEN_BACKLOG as u64;

/// Which connection line was held back (see [`Lines`]).
#[derive(Clone, Copy)]
enum Held {
    Connected,
    Disconnected,
    Dropped,
}

/// How long one window of [`LINES_PER_SECOND`] lasts.
const LINES_WINDOW: Duration = Duration::from_secs(1);

/// The connection lines of the current second: at most
/// [`LINES_PER_SECOND`] are logged, the rest counted and summed up once
/// the second is over.
#[derive(Default)]
struct Lines {
    /// When the current second began: its first line.
    since: Option<Instant>,
    logged: u32,
    /// Held back: connected, disconnected, dropped (warnings).
    held: [u64; 3],
}

impl Lines {
    /// Whether one more line may be logged now; counts it as `held` if not.
    fn admit(&mut self, held: Held) -> bool {
        self.since.get_or_insert_with(Instant::now);
        if self.logged < LINES_PER_SECOND {
            self.logged += 1;
            return true;
        }
        self.held[held as usize] += 1;
        false
    }

    fn info(&mut self, held: Held, line: impl FnOnce() -> String) {
        if self.admit(held) {
            info!("{}", line());
        }
    }

    fn warn(&mut self, line: impl FnOnce() -> String) {
        if self.admit(Held::Dropped) {
            warn!("{}", line());
        }
    }

    /// Once the second is over: the summary of the lines held back, if
    /// any, and a new second.
    fn tick(&mut self, kind: &str, now: Instant) {
        let Some(since) = self.since else { return };
        let elapsed = now.saturating_duration_since(since);
        if elapsed < LINES_WINDOW {
            return;
        }
        let [connected, disconnected, dropped] = std::mem::take(&mut self.held);
        *self = Lines::default();
        if connected + disconnected + dropped == 0 {
            return;
        }
        let parts: Vec<String> = [
            (connected, "connected"),
            (disconnected, "disconnected"),
            (dropped, "dropped"),
        ]
        .into_iter()
        .filter(|&(count, _)| count > 0)
        .map(|(count, what)| format!("{count} {what}"))
        .collect();
        let line = format!(
            "{kind}: {} in the last {:.1} s, not logged one by one (at most \
             {LINES_PER_SECOND} connection lines a second are)",
            parts.join(", "),
            elapsed.as_secs_f64()
        );
        if dropped > 0 {
            warn!("{line}");
        } else {
            info!("{line}");
        }
    }
}

impl Watcher {
    /// The hint for a refused peer, the first time (the peer may well try
    /// again every 100 ms); empty after that.
    /// Never right after a stop: see `accepted`.
    fn take_hint(&mut self) -> String {
        if self.just_thawed() {
            return String::new();
        }
        self.hint
            .take()
            .map(|hint| format!("; {hint}"))
            .unwrap_or_default()
    }
}

/// A PAIR socket connected to a fresh inproc endpoint, to receive the events
/// of a monitor that the caller then starts on that endpoint
/// (`socket.monitor(&endpoint, events)`). Connected first, as inproc
/// allows, so that no event is ever sent before anyone listens: libzmq 4.3
/// sends them with a blocking send. `name` goes into the endpoint.
pub(crate) fn receiver(ctx: &zmq::Context, name: &str) -> zmq::Result<(zmq::Socket, String)> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let endpoint = format!("inproc://{name}-{}", NEXT.fetch_add(1, Ordering::Relaxed));
    let receiver = ctx.socket(zmq::PAIR)?;
    receiver.set_linger(0)?;
    receiver.connect(&endpoint)?;
    Ok((receiver, endpoint))
}

/// Hands each event that arrives on `receiver` to `each` (event, value,
/// the endpoint of its connection), waiting for them, until the watched
/// socket is destroyed (MONITOR_STOPPED) or the context ends.
pub(crate) fn read_until_stopped(receiver: &zmq::Socket, mut each: impl FnMut(u16, u32, &[u8])) {
    read_events(receiver, |event| {
        if let Some((event, value, endpoint)) = event {
            each(event, value, endpoint);
        }
    });
}

/// [`read_until_stopped`], also calling `each` with `None` when the
/// receiver's ZMQ_RCVTIMEO passes without an event.
fn read_events(receiver: &zmq::Socket, mut each: impl FnMut(Option<(u16, u32, &[u8])>)) {
    loop {
        let frames = match receiver.recv_multipart(0) {
            Ok(frames) => frames,
            Err(zmq::Error::EINTR) => continue,
            Err(zmq::Error::EAGAIN) => {
                each(None);
                continue;
            }
            // ETERM: the context is ending with the process.
            Err(_) => return,
        };
        let Some((event, value)) = parse_event(&frames) else {
            continue;
        };
        if event == EVENT_MONITOR_STOPPED {
            return;
        }
        each(Some((
            event,
            value,
            frames.get(1).map_or(&[], Vec::as_slice),
        )));
    }
}

/// The event number and value of a monitor message (zmq_socket_monitor(3)):
/// its first frame, 2 bytes of event and 4 of value, little-endian.
pub(crate) fn parse_event(frames: &[Vec<u8>]) -> Option<(u16, u32)> {
    let head = frames.first()?;
    let event = u16::from_le_bytes(head.get(0..2)?.try_into().ok()?);
    let value = u32::from_le_bytes(head.get(2..6)?.try_into().ok()?);
    Some((event, value))
}

/// The monitor thread's longest wait for an event.
const WAKE: Duration = Duration::from_secs(1);

/// A gap this long between two wakes of the monitor thread means that the
/// process was stopped (or starved of CPU that long).
const STOPPED_AFTER: Duration = Duration::from_secs(3);

/// How long after a stop the connections its kernel queued meanwhile may
/// still be arriving.
const THAWED_FOR: Duration = Duration::from_secs(2);

/// A ZMTP 3 greeting's size (RFC 23): a peer that sent this much had read
/// ours and answered it. A ZeroMQ socket sends the first 10 bytes (the
/// signature) before it has heard a word.
const GREETING_BYTES: u64 = 64;

/// How many bytes the peer sent on the connection, as the kernel counts
/// them (TCP_INFO, Linux 4.1 or later); `None` where that cannot be read.
#[cfg(target_os = "linux")]
fn bytes_received(stream: &TcpStream) -> Option<u64> {
    use std::os::fd::AsRawFd;
    let mut info = std::mem::MaybeUninit::<libc::tcp_info>::zeroed();
    let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::tcp_info>()).ok()?;
    // SAFETY: getsockopt writes at most `len` bytes into `info`, which is
    // that big, and says in `len` how many it wrote.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    // An older kernel fills less of the struct: the count may be missing.
    let needed =
        std::mem::offset_of!(libc::tcp_info, tcpi_bytes_received) + std::mem::size_of::<u64>();
    if rc != 0 || usize::try_from(len).ok()? < needed {
        return None;
    }
    // SAFETY: zeroed, then filled by the kernel: every field is an integer.
    Some(unsafe { info.assume_init() }.tcpi_bytes_received)
}

#[cfg(not(target_os = "linux"))]
fn bytes_received(_: &TcpStream) -> Option<u64> {
    None
}

/// ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH: the peer's NULL, PLAIN or
/// CURVE is not this socket's.
pub const MECHANISM_MISMATCH: u32 = 0x1100_0002;

/// A libzmq protocol error code (the value of a HANDSHAKE_FAILED_PROTOCOL
/// event, `ZMQ_PROTOCOL_ERROR_*` in zmq.h) in words.
pub fn protocol_error(code: u32) -> String {
    let words = match code {
        0x1000_0001 => "an unexpected ZMTP command",
        0x1000_0002 => "ZMTP commands out of sequence",
        0x1000_0003 => "a failed key exchange",
        0x1000_0011..=0x1000_0017 => "a malformed ZMTP command",
        0x1000_0018 => "invalid metadata in the handshake",
        0x1100_0001 => {
            "a CURVE message that did not decrypt (a wrong server key on the client's side?)"
        }
        MECHANISM_MISMATCH => {
            "the two sides use different security mechanisms (NULL, PLAIN, CURVE)"
        }
        0x2000_0000..=0x2000_0005 => "a malformed reply from the ZAP handler",
        _ => "a ZeroMQ protocol error",
    };
    format!("{words} ({code:#x})")
}

/// What an ACCEPT_FAILED event's errno means for a listener holding
/// `open` connections, and what to do about it.
fn accept_failure_advice(errno: u32, open: usize) -> String {
    let peers = Count::new(open as u64, "connection");
    match i32::try_from(errno) {
        Ok(libc::EMFILE) => {
            let limit = match limits::open_files() {
                Ok(limit) => format!(
                    "this process has used up its open-files limit of {} with {peers} open; {}",
                    limit.soft,
                    limit.how_to_raise()
                ),
                Err(_) => {
                    format!("this process has used up its open-files limit with {peers} open")
                }
            };
            format!(
                "{limit}. The connection waits in the kernel's queue until a descriptor is \
                 free, and libzmq retries the accept meanwhile, in a busy loop"
            )
        }
        Ok(libc::ENFILE) => "the whole system is out of file descriptors (fs.file-max)".into(),
        Ok(libc::ENOBUFS | libc::ENOMEM) => "the kernel is out of memory for sockets".into(),
        _ => format!("libzmq gave up on one connection, with {peers} open"),
    }
}

/// The errno a monitor event carries, in words.
pub(crate) fn errno_text(errno: u32) -> String {
    match i32::try_from(errno) {
        Ok(0) | Err(_) => "no detail".to_string(),
        Ok(code) => std::io::Error::from_raw_os_error(code).to_string(),
    }
}

/// Duplicates libzmq's descriptor, if it is still open, so that the socket
/// outlives libzmq's close long enough to be inspected.
fn duplicate(fd: u32) -> Option<TcpStream> {
    let fd = RawFd::try_from(fd).ok()?;
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) only reads the descriptor table; on a
    // descriptor that is already closed it fails with EBADF.
    let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if copy < 0 {
        debug!("connection {fd} closed before the monitor saw it");
        return None;
    }
    // SAFETY: `copy` is a new descriptor that nothing else owns.
    let owned = unsafe { OwnedFd::from_raw_fd(copy) };
    let stream = TcpStream::from(owned);
    // libzmq made the socket non-blocking already (the flag is shared by
    // both descriptors); make sure, so that `peek` can never block.
    stream.set_nonblocking(true).ok()?;
    Some(stream)
}
