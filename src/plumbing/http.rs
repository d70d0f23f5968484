//! A small HTTP/1.1 server, bounded in every way: GET and HEAD only, on a
//! few threads of its own (the broker's page, `broker --http`).
//!
//! It serves a fixed set of paths, each answered by a function called on
//! one of the server's threads, never on the caller's: a role's ZeroMQ loop
//! keeps its sockets to itself and never waits for a browser.
//!
//! Whoever reaches the port can send anything, so nothing here grows with
//! what a peer sends or how slowly it sends it:
//!
//! | bound | value | past it |
//! |---|---|---|
//! | threads | 1 accepting, [`HANDLERS`] answering | connections wait in a queue |
//! | connections waiting for a thread | [`QUEUED`] | `503 Service Unavailable` at once |
//! | refused connections being closed (below) | [`QUEUED`], each for at most `DRAIN_TIME` | closed at once |
//! | request head (request line and headers) | [`MAX_HEAD`] bytes, [`MAX_HEADERS`] headers | `431 Request Header Fields Too Large` |
//! | time to send the head, from the connection's arrival | [`READ_DEADLINE`] | `408 Request Timeout` |
//! | request body | never read (GET and HEAD have none) | |
//! | connection | one request, then `Connection: close` | |
//!
//! Any other method gets `405 Method Not Allowed`, an unknown path `404 Not
//! Found`, and bytes that are not HTTP `400 Bad Request`; each with one line
//! of text saying why. The parsing is httparse's (the parser under hyper):
//! this module only reads, bounds, routes and answers.
//!
//! An answer is not closed under the client's feet: closing a socket that
//! still holds unread bytes (the request) makes the kernel send a reset,
//! which a client may get instead of the answer (some TCP stacks throw
//! away what was not read yet) or right after it (Linux). So after
//! answering a request it has read, and after a 503, the server shuts
//! down its side (the client reads the answer, then the end), and reads
//! and throws away what the client still sends until the client closes,
//! bounded in bytes and time. (A client too slow to send its head, answered
//! 408, is not waited for again.) A 503 is written by the accepting
//! thread, which must not wait: its connection is then drained by one
//! more thread, which holds at most [`QUEUED`] of them.
//!
//! Every answer carries a Content-Security-Policy that lets a page load
//! nothing from anywhere: its inline script may only fetch from this same
//! server. A page that works here needs no network at all.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown as Direction, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use tracing::debug;

/// Threads answering requests.
pub const HANDLERS: usize = 4;
/// Accepted connections waiting for a free thread: enough for a class
/// opening the page at the same moment.
pub const QUEUED: usize = 64;
/// Largest request head (request line and headers), in bytes.
pub const MAX_HEAD: usize = 8 * 1024;
/// Most headers in a request.
pub const MAX_HEADERS: usize = 32;
/// Time a client has to send its whole request head, counted from its
/// connection's arrival, time in the queue included: connections that
/// send nothing cannot hold the threads for longer than this.
pub const READ_DEADLINE: Duration = Duration::from_secs(2);
/// Time a client has to take in the answer.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// After answering, what is still read (and thrown away) before closing:
/// closing a socket with unread bytes makes the kernel reset the
/// connection, and some TCP stacks discard an answer not yet read by the
/// client when the reset arrives (a 431 to a client still sending its
/// oversized head, a 503 to a client whose request came after it).
const DRAIN_BYTES: usize = 256 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(1);
/// How often the draining thread looks at the refused connections it holds.
const DRAIN_TICK: Duration = Duration::from_millis(10);

/// What a path serves.
#[derive(Debug, Clone)]
pub struct Body {
    /// `text/html; charset=utf-8`, `application/json`...
    pub content_type: &'static str,
    pub bytes: Vec<u8>,
}

/// What a server serves: its paths, and what answers a GET (or HEAD) of
/// one of them, called on the server's threads with the path (without
/// its query string).
pub struct Site {
    pub paths: &'static [&'static str],
    pub get: Box<dyn Fn(&str) -> Body + Send + Sync>,
}

/// A running server; stopped when dropped.
pub struct Server {
    address: SocketAddr,
    stop: Arc<AtomicBool>,
    acceptor: Option<thread::JoinHandle<()>>,
}

impl Server {
    /// Binds `address` (`127.0.0.1:8080`, `0.0.0.0:8080`, `[::1]:0`,
    /// `localhost:8080`) and starts serving `site`. A bind error (a
    /// malformed or busy address) is returned at once, before any thread
    /// starts.
    pub fn start(address: &str, site: Site) -> io::Result<Server> {
        let site = Arc::new(site);
        let listener =
            TcpListener::bind(address.to_socket_addrs()?.collect::<Vec<_>>().as_slice())?;
        let address = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let (queue, waiting) = mpsc::sync_channel::<Arrival>(QUEUED);
        let waiting = Arc::new(Mutex::new(waiting));
        for i in 0..HANDLERS {
            let waiting = Arc::clone(&waiting);
            let site = Arc::clone(&site);
            thread::Builder::new()
                .name(format!("http-{i}"))
                .spawn(move || handle_queue(&waiting, &site))?;
        }
        let refused = Refused::default();
        {
            let refused = refused.clone();
            thread::Builder::new()
                .name("http-refused".into())
                .spawn(move || refused.drain())?;
        }
        let acceptor = {
            let stop = Arc::clone(&stop);
            thread::Builder::new()
                .name("http-accept".into())
                .spawn(move || accept(&listener, &queue, &refused, &stop))?
        };
        Ok(Server {
            address,
            stop,
            acceptor: Some(acceptor),
        })
    }

    /// Where it listens (with the port the system chose for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.address
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accepting thread, blocked in accept(); it then drops
        // the queue, and each answering thread ends after its connection.
        let mut wake = self.address;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake {
                SocketAddr::V4(_) => [127, 0, 0, 1].into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        let woken = TcpStream::connect_timeout(&wake, Duration::from_millis(500)).is_ok();
        // Not woken (an address this host cannot reach itself on): the
        // thread is left to the process's exit rather than waited for.
        if let (true, Some(acceptor)) = (woken, self.acceptor.take()) {
            let _ = acceptor.join();
        }
    }
}

/// A connection, and when it was accepted.
type Arrival = (TcpStream, Instant);

fn accept(
    listener: &TcpListener,
    queue: &SyncSender<Arrival>,
    refused: &Refused,
    stop: &AtomicBool,
) {
    loop {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(error) => {
                if stop.load(Ordering::SeqCst) {
                    refused.stop();
                    return;
                }
                // Out of descriptors, most likely: let some close.
                debug!("http: accept failed: {error}");
                thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if stop.load(Ordering::SeqCst) {
            refused.stop();
            return;
        }
        match queue.try_send((stream, Instant::now())) {
            Ok(()) => {}
            Err(TrySendError::Full((stream, _))) => refused.add(busy(stream)),
            Err(TrySendError::Disconnected(_)) => {
                refused.stop();
                return;
            }
        }
    }
}

/// Every thread is busy and the queue is full: says so without waiting,
/// and shuts down the sending side; the connection is then to be drained.
fn busy(mut stream: TcpStream) -> TcpStream {
    const WHY: &[u8] = b"busy: try again later\n";
    let mut answer = head(503, "text/plain; charset=utf-8", WHY.len(), &[]);
    answer.extend_from_slice(WHY);
    // A fresh connection's send buffer is empty: this short write does
    // not block, and if it cannot be done at once it is not done at all.
    let _ = stream.set_nonblocking(true);
    let _ = stream.write_all(&answer);
    let _ = stream.shutdown(Direction::Write);
    stream
}

/// The refused connections (503) being drained before they close, shared
/// by the accepting thread, which adds them, and the draining thread.
#[derive(Clone, Default)]
struct Refused(Arc<(Mutex<RefusedState>, Condvar)>);

#[derive(Default)]
struct RefusedState {
    /// Handed over, not yet taken by the draining thread.
    new: Vec<TcpStream>,
    /// Held by either thread: at most [`QUEUED`].
    held: usize,
    stopped: bool,
}

impl Refused {
    /// Hands a refused connection (already answered, shut down for
    /// writing, non-blocking) to the draining thread; or, if that thread
    /// holds [`QUEUED`] already, closes it at once.
    fn add(&self, stream: TcpStream) {
        let (state, wake) = &*self.0;
        let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
        if state.held < QUEUED {
            state.held += 1;
            state.new.push(stream);
            wake.notify_one();
        }
    }

    /// Lets the draining thread end once it holds nothing more.
    fn stop(&self) {
        let (state, wake) = &*self.0;
        state.lock().unwrap_or_else(|p| p.into_inner()).stopped = true;
        wake.notify_one();
    }

    /// The draining thread: reads and throws away what each refused client
    /// still sends, and closes its connection once the client has closed
    /// its side, sent [`DRAIN_BYTES`], or had [`DRAIN_TIME`].
    fn drain(&self) {
        let (state, wake) = &*self.0;
        let lock = || state.lock().unwrap_or_else(|p| p.into_inner());
        let mut draining: Vec<Draining> = Vec::new();
        let mut sink = [0u8; 4096];
        loop {
            {
                // Nothing to drain: sleep until a connection is handed over.
                let mut state = lock();
                while draining.is_empty() && state.new.is_empty() {
                    if state.stopped {
                        return;
                    }
                    state = wake.wait(state).unwrap_or_else(|p| p.into_inner());
                }
                let until = Instant::now() + DRAIN_TIME;
                draining.extend(state.new.drain(..).map(|stream| Draining {
                    stream,
                    until,
                    read: 0,
                }));
            }
            let before = draining.len();
            draining.retain_mut(|connection| connection.goes_on(&mut sink));
            let closed = before - draining.len();
            if closed > 0 {
                lock().held -= closed;
            }
            if !draining.is_empty() {
                thread::sleep(DRAIN_TICK);
            }
        }
    }
}

/// A refused connection being drained; dropping it closes it.
struct Draining {
    stream: TcpStream,
    until: Instant,
    read: usize,
}

impl Draining {
    /// Reads what the client has sent so far; `false` once the connection
    /// may be closed.
    fn goes_on(&mut self, sink: &mut [u8]) -> bool {
        loop {
            if self.read >= DRAIN_BYTES || Instant::now() >= self.until {
                return false;
            }
            match self.stream.read(sink) {
                Ok(0) => return false, // the client has closed its side
                Ok(n) => self.read += n,
                Err(error) if error.kind() == ErrorKind::WouldBlock => return true,
                Err(error) if error.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        }
    }
}

fn handle_queue(waiting: &Mutex<Receiver<Arrival>>, site: &Site) {
    loop {
        // The lock is held while waiting, by one thread at a time: the
        // others wait for the lock instead, which is the same.
        let next = waiting.lock().unwrap_or_else(|p| p.into_inner()).recv();
        match next {
            Ok((stream, accepted)) => serve(stream, accepted + READ_DEADLINE, site),
            Err(_) => return, // the server is stopping
        }
    }
}

/// Why no request could be read.
#[derive(Debug, PartialEq, Eq)]
enum Unreadable {
    /// The client left before sending a whole head: nobody to answer.
    Gone,
    TooLarge,
    TooSlow,
    Malformed(String),
}

/// The parts of a request this server looks at.
#[derive(Debug, PartialEq, Eq)]
struct Request {
    method: String,
    path: String,
}

fn serve(mut stream: TcpStream, deadline: Instant, site: &Site) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let read = read_request(&mut stream, deadline);
    let answer = match read {
        Ok(ref request) => answer(request, site),
        Err(Unreadable::Gone) => return,
        Err(Unreadable::TooLarge) => Answer::error(
            431,
            &format!(
                "request head over {MAX_HEAD} bytes or {MAX_HEADERS} headers: this server \
                 takes no more"
            ),
        ),
        Err(Unreadable::TooSlow) => Answer::error(
            408,
            &format!(
                "no complete request within {} s",
                READ_DEADLINE.as_secs_f64()
            ),
        ),
        Err(Unreadable::Malformed(ref why)) => {
            Answer::error(400, &format!("not an HTTP/1.x request: {why}"))
        }
    };
    if answer.write(&mut stream).is_err() || read == Err(Unreadable::TooSlow) {
        // A client too slow to send its head is not waited for again.
        return;
    }
    // Done sending; take in what the client may still send, bounded, so
    // that closing does not reset the connection under the answer.
    let _ = stream.shutdown(Direction::Write);
    let deadline = Instant::now() + DRAIN_TIME;
    let mut drained = 0;
    let mut sink = [0u8; 4096];
    while drained < DRAIN_BYTES {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            break;
        }
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
}

/// Reads one request head, within [`MAX_HEAD`] bytes and by `deadline`.
fn read_request(
    stream: &mut impl ReadWithDeadline,
    deadline: Instant,
) -> Result<Request, Unreadable> {
    let mut buffer = vec![0u8; MAX_HEAD];
    let mut filled = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Unreadable::TooSlow);
        }
        let n = match stream.read_within(&mut buffer[filled..], left) {
            Ok(0) if filled == 0 => return Err(Unreadable::Gone),
            Ok(0) => {
                return Err(Unreadable::Malformed(
                    "the request ends before its headers do".into(),
                ));
            }
            Ok(n) => n,
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(Unreadable::TooSlow);
            }
            Err(error) if error.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return Err(Unreadable::Gone),
        };
        filled += n;
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&buffer[..filled]) {
            Ok(httparse::Status::Complete(_)) => {
                // A complete parse has both.
                let method = request.method.unwrap_or_default().to_string();
                let target = request.path.unwrap_or_default();
                let path = target
                    .split(['?', '#'])
                    .next()
                    .unwrap_or_default()
                    .to_string();
                return Ok(Request { method, path });
            }
            Ok(httparse::Status::Partial) if filled == MAX_HEAD => {
                return Err(Unreadable::TooLarge);
            }
            Ok(httparse::Status::Partial) => {}
            Err(httparse::Error::TooManyHeaders) => return Err(Unreadable::TooLarge),
            Err(error) => return Err(Unreadable::Malformed(error.to_string())),
        }
    }
}

/// A stream whose reads give up at a deadline (a TcpStream, or a test's
/// bytes).
trait ReadWithDeadline {
    fn read_within(&mut self, buffer: &mut [u8], left: Duration) -> io::Result<usize>;
}

impl ReadWithDeadline for TcpStream {
    fn read_within(&mut self, buffer: &mut [u8], left: Duration) -> io::Result<usize> {
        self.set_read_timeout(Some(left))?;
        self.read(buffer)
    }
}

/// A response, before it is written.
struct Answer {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
    /// HEAD: the headers of the GET answer, without its body.
    head_only: bool,
    allow: bool,
}

impl Answer {
    fn error(status: u16, why: &str) -> Answer {
        Answer {
            status,
            content_type: "text/plain; charset=utf-8",
            body: format!("{why}\n").into_bytes(),
            head_only: false,
            allow: status == 405,
        }
    }

    fn write(&self, stream: &mut impl Write) -> io::Result<()> {
        let extra: &[&str] = if self.allow {
            &["Allow: GET, HEAD"]
        } else {
            &[]
        };
        let mut bytes = head(self.status, self.content_type, self.body.len(), extra);
        if !self.head_only {
            bytes.extend_from_slice(&self.body);
        }
        stream.write_all(&bytes)?;
        stream.flush()
    }
}

fn answer(request: &Request, site: &Site) -> Answer {
    if !site.paths.contains(&request.path.as_str()) {
        // Whatever the method.
        let shown = crate::payload::text(request.path.as_bytes());
        return Answer::error(
            404,
            &format!("no page at {shown}: there is {}", site.paths.join(" and ")),
        );
    }
    let head_only = match request.method.as_str() {
        "GET" => false,
        "HEAD" => true,
        other => {
            let shown = crate::payload::text(other.as_bytes());
            return Answer::error(
                405,
                &format!("method {shown} not allowed: this server only reads (GET, HEAD)"),
            );
        }
    };
    let body = (site.get)(&request.path);
    Answer {
        status: 200,
        content_type: body.content_type,
        body: body.bytes,
        head_only,
        allow: false,
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// The status line and headers of an answer.
fn head(status: u16, content_type: &str, length: usize, extra: &[&str]) -> Vec<u8> {
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\n\
         Content-Type: {content_type}\r\n\
         Content-Length: {length}\r\n\
         Cache-Control: no-store\r\n\
         X-Content-Type-Options: nosniff\r\n\
         Content-Security-Policy: default-src 'none'; script-src 'unsafe-inline'; \
         style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; \
         form-action 'none'; frame-ancestors 'none'\r\n\
         Connection: close\r\n",
        reason(status)
    );
    for line in extra {
        head.push_str(line);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    head.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes arriving in the given pieces; then, if the flag says so, the
    /// end of the stream, and otherwise nothing more (the deadline passes).
    struct Pieces(Vec<Vec<u8>>, bool);

    impl ReadWithDeadline for Pieces {
        fn read_within(&mut self, buffer: &mut [u8], _: Duration) -> io::Result<usize> {
            if self.0.is_empty() {
                return if self.1 {
                    Ok(0)
                } else {
                    Err(ErrorKind::WouldBlock.into())
                };
            }
            let piece = &mut self.0[0];
            let n = piece.len().min(buffer.len());
            buffer[..n].copy_from_slice(&piece[..n]);
            piece.drain(..n);
            if piece.is_empty() {
                self.0.remove(0);
            }
            Ok(n)
        }
    }

    fn read(pieces: &[&[u8]], ends: bool) -> Result<Request, Unreadable> {
        read_request(
            &mut Pieces(pieces.iter().map(|p| p.to_vec()).collect(), ends),
            Instant::now() + READ_DEADLINE,
        )
    }

    #[test]
    fn reads_a_request_sent_in_pieces() {
        let request = read(
            &[b"GET /stats?x=1 HT", b"TP/1.1\r\nHost: a\r\n", b"\r\n"],
            false,
        );
        assert_eq!(
            request,
            Ok(Request {
                method: "GET".into(),
                path: "/stats".into()
            })
        );
    }

    #[test]
    fn bounds_the_head() {
        let huge = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(read(&[huge.as_bytes()], true), Err(Unreadable::TooLarge));
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X{i}: y\r\n")).collect();
        let many = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(read(&[many.as_bytes()], true), Err(Unreadable::TooLarge));
    }

    #[test]
    fn tells_garbage_silence_and_a_vanished_client_apart() {
        assert!(matches!(
            read(&[b"\x16\x03\x01\x02\x00\x01\x00"], true),
            Err(Unreadable::Malformed(_))
        ));
        assert!(matches!(
            read(&[b"GET / HTTP/1.1\r\n"], true),
            Err(Unreadable::Malformed(_))
        ));
        assert_eq!(read(&[b"GET / HT"], false), Err(Unreadable::TooSlow));
        assert_eq!(read(&[], true), Err(Unreadable::Gone));
    }

    #[test]
    fn routes_methods_and_paths() {
        let site = Site {
            paths: &["/"],
            get: Box::new(|_| Body {
                content_type: "text/plain",
                bytes: b"hi".to_vec(),
            }),
        };
        let request = |method: &str, path: &str| Request {
            method: method.into(),
            path: path.into(),
        };
        assert_eq!(answer(&request("GET", "/"), &site).status, 200);
        let head = answer(&request("HEAD", "/"), &site);
        assert!(head.head_only && head.status == 200);
        assert_eq!(answer(&request("POST", "/"), &site).status, 405);
        assert_eq!(answer(&request("POST", "/nope"), &site).status, 404);
        assert_eq!(answer(&request("GET", "/nope"), &site).status, 404);
    }
}
