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
//! it tells who ended the connection:
//!
//! - the peer closed it (end of file waiting): a normal goodbye, logged at info;
//! - libzmq closed it while the peer was still sending (unread bytes): a
//!   message over the size limit, or another protocol error, a warning;
//! - libzmq closed it with the peer silent: a refused handshake (not ZMTP, or
//!   an incompatible socket type), a warning.
//!
//! A connection cut during its handshake (`HANDSHAKE_FAILED_*`, emitted just
//! before its `DISCONNECTED`) is always a warning.

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
const EVENT_HANDSHAKE_FAILED_NO_DETAIL: u16 = zmq::SocketEvent::HANDSHAKE_FAILED_NO_DETAIL as u16;
const EVENT_HANDSHAKE_FAILED_PROTOCOL: u16 = zmq::SocketEvent::HANDSHAKE_FAILED_PROTOCOL as u16;
const EVENT_HANDSHAKE_FAILED_AUTH: u16 = zmq::SocketEvent::HANDSHAKE_FAILED_AUTH as u16;

/// Starts a thread that logs the connections of `socket` (call before `bind`).
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
    address: String,
    /// Our duplicate of libzmq's descriptor (None if it was already closed).
    stream: Option<TcpStream>,
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
        let stream = duplicate(fd);
        let address = match stream.as_ref().map(TcpStream::peer_addr) {
            Some(Ok(address)) => address.to_string(),
            _ => "a local peer".to_string(),
        };
        info!("{}: {address} connected", self.kind);
        self.peers.insert(fd, Peer { address, stream });
    }

    fn disconnected(&mut self, fd: u32) {
        let (address, stream) = match self.peers.remove(&fd) {
            Some(peer) => (peer.address, peer.stream),
            None => ("a peer".to_string(), None),
        };
        let kind = self.kind;
        if let Some(reason) = self.handshake_failed.take() {
            warn!(
                "{kind}: dropped {address}: ZeroMQ handshake failed ({reason}); \
                 not a ZeroMQ peer, or a socket type that cannot talk to this one"
            );
            return;
        }
        let mut byte = [0u8; 1];
        match stream.map(|stream| stream.peek(&mut byte)) {
            Some(Ok(0)) => info!("{kind}: {address} disconnected"),
            Some(Ok(_)) => warn!(
                "{kind}: dropped {address} in the middle of its data: a message over \
                 --max-message-bytes ({} bytes) or another ZeroMQ protocol error",
                self.max_message_bytes
            ),
            Some(Err(error)) if error.kind() == ErrorKind::WouldBlock => warn!(
                "{kind}: dropped {address}: it broke the ZeroMQ protocol (not a ZeroMQ \
                 peer, or a socket type that cannot talk to this one)"
            ),
            // Reset by the peer, or no duplicate to look at: nothing to blame.
            _ => info!("{kind}: {address} disconnected"),
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
