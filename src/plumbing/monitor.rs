//! Making visible what libzmq drops before the application sees it.
//!
//! A listening socket refuses some peers inside libzmq, and the application
//! never hears of them: a peer that is not ZeroMQ at all (random bytes, an
//! HTTP request), a ZeroMQ socket of a type that cannot talk to this one
//! (a SUB dialling a REP), or a message over `--max-message-bytes`
//! (ZMQ_MAXMSGSIZE), for which libzmq cuts the connection instead of
//! buffering the message. A socket monitor (`zmq_socket_monitor`) is libzmq's
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
//! | libzmq | yes | a message over the size limit, a malformed frame, or a silent peer (heartbeats) | warning |
//! | libzmq | no | not ZMTP, or a socket type that cannot talk to this one | warning |
//! | the peer | no | an incompatible ZeroMQ socket refusing us, or a port scan | warning |
//! | the peer | yes | a normal goodbye | info |
//!
//! A connection cut during its handshake (`HANDSHAKE_FAILED_*`, emitted just
//! before its `DISCONNECTED`) is always a warning.
//!
//! This is best effort: a wrong-type ZeroMQ peer on the same machine can be
//! refused within microseconds, before this thread has read the ACCEPTED
//! event. It is still reported, as "a peer", without its address; and should
//! its descriptor number already belong to the next connection, the warning
//! may name that connection's address.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::TcpStream;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

use tracing::{debug, info, warn};

const EVENT_ACCEPTED: u16 = zmq::SocketEvent::ACCEPTED as u16;
const EVENT_DISCONNECTED: u16 = zmq::SocketEvent::DISCONNECTED as u16;
const EVENT_MONITOR_STOPPED: u16 = zmq::SocketEvent::MONITOR_STOPPED as u16;
const EVENT_HANDSHAKE_SUCCEEDED: u16 = zmq::SocketEvent::HANDSHAKE_SUCCEEDED as u16;
const EVENT_HANDSHAKE_FAILED_NO_DETAIL: u16 = zmq::SocketEvent::HANDSHAKE_FAILED_NO_DETAIL as u16;
const EVENT_HANDSHAKE_FAILED_PROTOCOL: u16 = zmq::SocketEvent::HANDSHAKE_FAILED_PROTOCOL as u16;
const EVENT_HANDSHAKE_FAILED_AUTH: u16 = zmq::SocketEvent::HANDSHAKE_FAILED_AUTH as u16;

/// Starts a thread that logs the connections of `socket` (call before `bind`).
///
/// The thread reads events until the socket is closed (`MONITOR_STOPPED`)
/// or the context ends, never earlier: libzmq 4.3 sends monitor events from
/// its I/O thread with a blocking send, so an event nobody reads any more
/// would block that thread, and every socket of the context with it.
///
/// `kind` names the socket in the log ("frontend", "REP"), and
/// `max_message_bytes` is quoted when a peer is cut for an oversize message.
/// The thread ends by itself when the socket is closed.
pub fn watch(
    ctx: &zmq::Context,
    socket: &zmq::Socket,
    kind: &'static str,
    max_message_bytes: u64,
) -> zmq::Result<()> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let endpoint = format!("inproc://monitor-{}", NEXT.fetch_add(1, Ordering::Relaxed));
    let events = i32::from(
        EVENT_ACCEPTED
            | EVENT_DISCONNECTED
            | EVENT_HANDSHAKE_SUCCEEDED
            | EVENT_HANDSHAKE_FAILED_NO_DETAIL
            | EVENT_HANDSHAKE_FAILED_PROTOCOL
            | EVENT_HANDSHAKE_FAILED_AUTH,
    );
    socket.monitor(&endpoint, events)?;
    // Connect here, not in the thread, so that no event is sent before
    // anyone listens (the monitor drops events nobody receives).
    let receiver = ctx.socket(zmq::PAIR)?;
    receiver.set_linger(0)?;
    receiver.connect(&endpoint)?;
    let spawned = thread::Builder::new()
        .name(format!("monitor-{kind}"))
        .spawn(move || {
            Watcher {
                kind,
                max_message_bytes,
                peers: HashMap::new(),
                handshake_failed: None,
            }
            .run(&receiver);
        });
    if let Err(error) = spawned {
        warn!(
            "{kind}: cannot start the connection monitor ({error}); dropped peers will not be logged"
        );
    }
    Ok(())
}

struct Watcher {
    kind: &'static str,
    max_message_bytes: u64,
    /// Accepted connections, by libzmq's descriptor.
    peers: HashMap<u32, Peer>,
    /// A handshake failure waiting for its connection's DISCONNECTED event.
    handshake_failed: Option<String>,
}

struct Peer {
    /// `ip:port`, or "a peer" when it could not be read.
    address: String,
    /// Our duplicate of libzmq's descriptor; `None` if libzmq had closed it
    /// already when the ACCEPTED event was read.
    stream: Option<TcpStream>,
    /// Whether its ZeroMQ handshake completed (see `handshake_succeeded`).
    greeted: bool,
}

impl Watcher {
    fn run(mut self, receiver: &zmq::Socket) {
        loop {
            let frames = match receiver.recv_multipart(0) {
                Ok(frames) => frames,
                Err(zmq::Error::EINTR) => continue,
                // ETERM: the context is ending with the process.
                Err(_) => return,
            };
            let Some((event, value)) = parse_event(&frames) else {
                continue;
            };
            match event {
                EVENT_ACCEPTED => self.accepted(value),
                EVENT_HANDSHAKE_SUCCEEDED => self.handshake_succeeded(),
                EVENT_HANDSHAKE_FAILED_NO_DETAIL => {
                    self.handshake_failed = Some(errno_text(value));
                }
                EVENT_HANDSHAKE_FAILED_PROTOCOL => {
                    self.handshake_failed = Some(format!("ZMTP protocol error {value:#x}"));
                }
                EVENT_HANDSHAKE_FAILED_AUTH => {
                    self.handshake_failed = Some(format!("authentication failed ({value})"));
                }
                EVENT_DISCONNECTED => self.disconnected(value),
                EVENT_MONITOR_STOPPED => return,
                _ => {}
            }
        }
    }

    fn accepted(&mut self, fd: u32) {
        let peer = match duplicate(fd) {
            Some(stream) => {
                let address = stream.peer_addr().map_or_else(
                    |_| "a local peer".to_string(),
                    |address| address.to_string(),
                );
                info!("{}: {address} connected", self.kind);
                Peer {
                    address,
                    stream: Some(stream),
                    greeted: false,
                }
            }
            // Refused so fast that libzmq closed it before this thread
            // could look: only a failed handshake is that quick.
            None => Peer {
                address: "a peer".into(),
                stream: None,
                greeted: false,
            },
        };
        self.peers.insert(fd, peer);
    }

    /// The event does not say which connection completed its handshake.
    /// With one connection still in its handshake, it is that one; with
    /// several, all get the benefit of the doubt (no false alarm, at the
    /// price of missing a refusal among simultaneous arrivals).
    fn handshake_succeeded(&mut self) {
        for peer in self.peers.values_mut() {
            peer.greeted = true;
        }
    }

    fn disconnected(&mut self, fd: u32) {
        let kind = self.kind;
        let Some(Peer {
            address,
            stream,
            greeted,
        }) = self.peers.remove(&fd)
        else {
            info!("{kind}: a peer disconnected");
            return;
        };
        if let Some(reason) = self.handshake_failed.take() {
            warn!(
                "{kind}: dropped {address}: ZeroMQ handshake failed ({reason}); \
                 not a ZeroMQ peer, or a socket type that cannot talk to this one"
            );
            return;
        }
        let Some(stream) = stream else {
            let max = self.max_message_bytes;
            if greeted {
                warn!(
                    "{kind}: lost a peer right after its handshake, too fast to read its \
                     address: it left at once, or libzmq dropped it for a message over \
                     --max-message-bytes ({max} bytes) or a malformed frame"
                );
            } else {
                warn!(
                    "{kind}: dropped a peer during its handshake, too fast to read its \
                     address: not a ZeroMQ peer, or a socket type that cannot talk to this one"
                );
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
        match (cut_by_libzmq, greeted) {
            // After the handshake, libzmq only checks frames (their syntax
            // and ZMQ_MAXMSGSIZE) and, with heartbeats on, that the peer
            // answers them (src/plumbing/keepalive.rs).
            (true, true) => warn!(
                "{kind}: dropped {address} after its handshake: a message over \
                 --max-message-bytes ({} bytes), a malformed frame, or silence after \
                 a heartbeat (a frozen or unreachable peer)",
                self.max_message_bytes
            ),
            (true, false) => warn!(
                "{kind}: dropped {address}: it broke the ZeroMQ handshake (not a ZeroMQ \
                 peer, or a socket type that cannot talk to this one)"
            ),
            // A ZeroMQ socket of an incompatible type refuses us too, and a
            // port scan just leaves.
            (false, false) => warn!(
                "{kind}: dropped {address}: it hung up during the ZeroMQ handshake \
                 (a socket type that cannot talk to this one, or not a ZeroMQ peer)"
            ),
            (false, true) => info!("{kind}: {address} disconnected"),
        }
    }
}

/// The event number and value of a monitor message (zmq_socket_monitor(3)).
fn parse_event(frames: &[Vec<u8>]) -> Option<(u16, u32)> {
    let head = frames.first()?;
    let event = u16::from_le_bytes(head.get(0..2)?.try_into().ok()?);
    let value = u32::from_le_bytes(head.get(2..6)?.try_into().ok()?);
    Some((event, value))
}

fn errno_text(errno: u32) -> String {
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
