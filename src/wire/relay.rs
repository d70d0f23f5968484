//! The relay: accepts TCP connections, opens one to the server for each,
//! and copies every byte both ways, unchanged.
//!
//! Each direction of each connection has a thread of its own that reads
//! what arrives, writes it on at once, and only then hands a copy to the
//! connection's [`Conversation`] to decode; the events go to a
//! [`Reporter`], which never waits. So the relay adds one read and one
//! write per chunk to a round trip, and nothing it prints can slow it
//! down.
//!
//! A side that closes its connection (end of stream) has its half closed
//! on the other side too, and the other direction goes on until it ends as
//! well; a connection that fails (reset, a write that cannot go through)
//! is closed both ways. A stop ([`Shutdown`]) closes every connection and
//! waits for its threads.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown as Close, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::decoder::{Conversation, Side};
use super::print::{Closed, Report, Reporter};
use crate::plumbing::shutdown::{CHECK_INTERVAL_MS, Shutdown};

/// How long the relay tries to reach the server for a new connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Bytes read at once from either side.
const CHUNK: usize = 16 * 1024;

/// The live connections' sockets, closed all at once on a stop.
type Live = Arc<Mutex<HashMap<u64, [TcpStream; 2]>>>;

/// What a relay did, once stopped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Connections accepted.
    pub connections: u64,
}

/// Relays every connection `listener` accepts to `to` (`host:port`),
/// reporting what passes, until `shutdown`.
pub fn run(
    listener: &TcpListener,
    to: &str,
    reporter: &Reporter,
    shutdown: &Shutdown,
) -> io::Result<Summary> {
    let live: Live = Arc::default();
    let mut threads: Vec<JoinHandle<()>> = Vec::new();
    let mut summary = Summary::default();
    while !shutdown.requested() {
        if !readable(listener, CHECK_INTERVAL_MS)? {
            continue;
        }
        let (client, address) = match listener.accept() {
            Ok(accepted) => accepted,
            // The connection went away before it was accepted, or the
            // process is out of descriptors for a moment: go on.
            Err(error) if transient(&error) => continue,
            Err(error) => return Err(error),
        };
        summary.connections += 1;
        let conn = summary.connections;
        let (to, reporter, live) = (to.to_string(), reporter.clone(), Arc::clone(&live));
        let shutdown = shutdown.clone();
        threads.retain(|thread| !thread.is_finished());
        let thread = thread::Builder::new()
            .name(format!("wire-{conn}"))
            .spawn(move || connection(conn, client, address, &to, &reporter, &live, &shutdown))?;
        threads.push(thread);
    }
    for [client, server] in lock(&live).values() {
        let _ = client.shutdown(Close::Both);
        let _ = server.shutdown(Close::Both);
    }
    for thread in threads {
        let _ = thread.join();
    }
    Ok(summary)
}

/// Waits up to `timeout_ms` for a connection to accept.
fn readable(listener: &TcpListener, timeout_ms: i32) -> io::Result<bool> {
    let mut poll = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, for the length we pass.
    let ready = unsafe { libc::poll(&mut poll, 1, timeout_ms) };
    if ready < 0 {
        let error = io::Error::last_os_error();
        return if error.kind() == io::ErrorKind::Interrupted {
            Ok(false)
        } else {
            Err(error)
        };
    }
    Ok(ready > 0)
}

fn transient(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::ECONNABORTED | libc::EMFILE | libc::ENFILE | libc::EINTR | libc::EAGAIN)
    ) || matches!(error.kind(), io::ErrorKind::Interrupted)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One connection, from its accept to its end.
fn connection(
    conn: u64,
    client: TcpStream,
    address: SocketAddr,
    to: &str,
    reporter: &Reporter,
    live: &Live,
    shutdown: &Shutdown,
) {
    let server = match reach(to) {
        Ok(server) => server,
        Err(error) => {
            let _ = client.shutdown(Close::Both);
            reporter.send(Report::Close {
                conn,
                why: Closed::Unreachable {
                    to: to.to_string(),
                    client: address.to_string(),
                    error: error.to_string().to_lowercase(),
                },
            });
            return;
        }
    };
    // Small messages must leave at once, as libzmq's own sockets do.
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let server_address = server
        .peer_addr()
        .map_or_else(|_| to.to_string(), |a| a.to_string());
    let (Ok(client_copy), Ok(server_copy)) = (client.try_clone(), server.try_clone()) else {
        reporter.send(Report::Close {
            conn,
            why: Closed::Descriptors,
        });
        return;
    };
    lock(live).insert(conn, [client_copy, server_copy]);
    // A stop that came while the server was being reached has closed the
    // connections it found, not this one.
    if shutdown.requested() {
        let _ = client.shutdown(Close::Both);
        let _ = server.shutdown(Close::Both);
    }
    reporter.send(Report::Open {
        conn,
        client: address.to_string(),
        server: server_address,
    });

    let conversation = Mutex::new(Conversation::new());
    let (from_server, to_client) = match (server.try_clone(), client.try_clone()) {
        (Ok(a), Ok(b)) => (a, b),
        _ => {
            lock(live).remove(&conn);
            reporter.send(Report::Close {
                conn,
                why: Closed::Descriptors,
            });
            return;
        }
    };
    let (client_end, server_end) = thread::scope(|scope| {
        let back = scope.spawn(|| {
            pump(
                conn,
                Side::Server,
                from_server,
                to_client,
                &conversation,
                reporter,
            )
        });
        let forth = pump(conn, Side::Client, client, server, &conversation, reporter);
        (forth, back.join().ok())
    });
    lock(live).remove(&conn);
    // Whichever ended first says why the connection ended.
    let first = match server_end {
        Some(server_end) if server_end.at < client_end.at => server_end,
        _ => client_end,
    };
    let why = match first {
        _ if shutdown.requested() => Closed::Stopped,
        Ending {
            side, error: None, ..
        } => Closed::HungUp(side),
        Ending {
            side,
            error: Some(error),
            ..
        } => Closed::Failed(side, error),
    };
    reporter.send(Report::Close { conn, why });
}

/// Connects to `to` (`host:port`), trying each of its addresses.
fn reach(to: &str) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    for address in to.to_socket_addrs()? {
        match TcpStream::connect_timeout(&address, CONNECT_TIMEOUT) {
            Ok(stream) => return Ok(stream),
            Err(error) => last = error,
        }
    }
    Err(last)
}

/// How one direction ended.
#[derive(Debug)]
struct Ending {
    /// When.
    at: Instant,
    /// The side whose end it was: the sender, at the end of its stream or
    /// when reading from it failed; the receiver, when writing to it did.
    side: Side,
    /// The failure, if it was one (`None`: an end of stream).
    error: Option<String>,
}

/// Copies `from`'s bytes to `to` until `from` ends, decoding them after
/// they have gone on.
fn pump(
    conn: u64,
    side: Side,
    mut from: TcpStream,
    mut to: TcpStream,
    conversation: &Mutex<Conversation>,
    reporter: &Reporter,
) -> Ending {
    let mut buffer = vec![0; CHUNK];
    let mut report = |from: Side, event| reporter.send(Report::Event { conn, from, event });
    let ending = loop {
        let n = match from.read(&mut buffer) {
            Ok(0) => {
                lock(conversation).finish(side, &mut report);
                // The other side reads the end of the stream in turn.
                let _ = to.shutdown(Close::Write);
                return Ending {
                    at: Instant::now(),
                    side,
                    error: None,
                };
            }
            Ok(n) => n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => break (side, error),
        };
        if let Err(error) = to.write_all(&buffer[..n]) {
            break (side.other(), error);
        }
        lock(conversation).feed(side, &buffer[..n], &mut report);
    };
    let _ = from.shutdown(Close::Both);
    let _ = to.shutdown(Close::Both);
    let (side, error) = ending;
    Ending {
        at: Instant::now(),
        side,
        error: Some(error.to_string().to_lowercase()),
    }
}

/// `tcp://*:5555` as an address to bind: `0.0.0.0:5555` (`*` as the port:
/// any free port).
pub fn bind_address(endpoint: &str) -> Result<String, String> {
    let address = tcp_address(endpoint)?;
    let (host, port) = address.rsplit_once(':').unwrap_or((address, ""));
    let host = if host == "*" { "0.0.0.0" } else { host };
    let port = if port == "*" { "0" } else { port };
    Ok(format!("{host}:{port}"))
}

/// `tcp://server:5555` as an address to connect to: `server:5555`.
pub fn connect_address(endpoint: &str) -> Result<String, String> {
    tcp_address(endpoint).map(str::to_owned)
}

fn tcp_address(endpoint: &str) -> Result<&str, String> {
    match endpoint.split_once("://") {
        Some(("tcp", address)) => Ok(address),
        Some((transport, _)) => Err(format!(
            "the relay copies TCP connections only, not {transport}://"
        )),
        None => Err("expected tcp://host:port".into()),
    }
}

/// A listener for `endpoint` (checked by the caller).
pub fn listen(endpoint: &str) -> io::Result<TcpListener> {
    let address = bind_address(endpoint).map_err(io::Error::other)?;
    TcpListener::bind(address)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_become_socket_addresses() {
        assert_eq!(bind_address("tcp://*:5555").unwrap(), "0.0.0.0:5555");
        assert_eq!(bind_address("tcp://127.0.0.1:*").unwrap(), "127.0.0.1:0");
        assert_eq!(connect_address("tcp://server:5555").unwrap(), "server:5555");
        assert!(connect_address("ipc:///tmp/x").unwrap_err().contains("TCP"));
    }
}
