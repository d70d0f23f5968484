//! What a refused client can know, and says.
//!
//! A server that refuses a client does it during the ZeroMQ handshake, so
//! the client's connection never comes up. The Lazy Pirate client sends
//! only over a connection whose handshake is done (see
//! [`crate::lazy_pirate`]), so it just waits for one, and could only say
//! "could not send": the reason is visible solely to a socket monitor,
//! which reports the handshake's failure:
//!
//! | event | value | what happened |
//! |---|---|---|
//! | HANDSHAKE_FAILED_AUTH | 400 | the server's ZAP handler refused us: our address, user, password or key |
//! | HANDSHAKE_FAILED_AUTH | 500 | the server's ZAP handler failed (an internal error) |
//! | HANDSHAKE_FAILED_PROTOCOL | 0x11000002 | the server uses another mechanism (NULL, PLAIN, CURVE) than we do |
//! | HANDSHAKE_FAILED_NO_DETAIL | errno | the server hung up mid-handshake: with CURVE, a wrong server key; or another mechanism, seen before its greeting was read |
//! | HANDSHAKE_FAILED_NO_DETAIL | EAGAIN, or any after ZMQ_HANDSHAKE_IVL | the handshake did not finish in time (30 s by default): the server's machine took the connection, but the server did not answer: stopped (SIGSTOP, `docker compose pause`), overloaded, or not a ZeroMQ peer |
//!
//! libzmq reports its handshake timer as a failure "without detail" too,
//! with whatever errno its I/O thread set last: most often EAGAIN, left by
//! a read that found nothing to read, which a real connection error never
//! carries (libzmq takes it for "nothing yet", not for an error). So a
//! failure with EAGAIN, or one that came as late as the time limit after
//! the connection was made, is told as a handshake that ran out of time.
//!
//! libzmq 4.3 gives up on a connection the server refused with an ERROR
//! (a ZAP status, a mechanism mismatch: the session ends as a protocol
//! error), but reconnects after a hang-up, every 100 ms by default, failing
//! the same way each time. [`watch_linked`] starts a monitor on a connecting
//! socket and turns these events into one warning each, repeated at most
//! every [`REPEAT_EVERY`]. The thread ends when the socket is closed
//! (libzmq's MONITOR_STOPPED event): a socket takes its monitor with it.
//!
//! libzmq allows one monitor per socket, and the client needs a second
//! thing from it: whether a connection is up, to send only over one. So
//! [`watch_linked`] also keeps a [`Link`] up to date (up when a handshake
//! succeeds, down when its connection closes), which the client reads.
//!
//! The names of libzmq's ZMTP and ZAP protocol error codes are in
//! [`crate::plumbing::monitor`] ([`protocol_error`]), for any monitor that
//! reports them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::plumbing::connection::Link;
use crate::plumbing::monitor::{self, MECHANISM_MISMATCH, errno_text, protocol_error};

/// Set once a server refused one of this process's sockets with a reason
/// (a ZAP status, a mechanism mismatch), which the warning has said: "is the
/// server running?" would then be the wrong question.
static REFUSED: AtomicBool = AtomicBool::new(false);

/// Whether a server refused one of this process's watched sockets with a
/// reason, which [`watch_linked`] has logged.
pub fn refused() -> bool {
    REFUSED.load(Ordering::Relaxed)
}

/// Which mechanism our side of a connection uses: the hint depends on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mechanism {
    /// No credentials.
    Null,
    /// A user and a password, in the clear.
    Plain,
    /// CURVE keys: encrypted.
    Curve,
}

impl Mechanism {
    fn name(self) -> &'static str {
        match self {
            Mechanism::Null => "NULL, no credentials",
            Mechanism::Plain => "PLAIN",
            Mechanism::Curve => "CURVE",
        }
    }
}

/// How often the same failure is reported again while it goes on.
pub const REPEAT_EVERY: Duration = Duration::from_secs(10);

const EVENT_HANDSHAKE_FAILED_NO_DETAIL: u16 = zmq::SocketEvent::HANDSHAKE_FAILED_NO_DETAIL as u16;
const EVENT_HANDSHAKE_SUCCEEDED: u16 = zmq::SocketEvent::HANDSHAKE_SUCCEEDED as u16;
const EVENT_HANDSHAKE_FAILED_PROTOCOL: u16 = zmq::SocketEvent::HANDSHAKE_FAILED_PROTOCOL as u16;
const EVENT_HANDSHAKE_FAILED_AUTH: u16 = zmq::SocketEvent::HANDSHAKE_FAILED_AUTH as u16;
const EVENT_MONITOR_STOPPED: u16 = zmq::SocketEvent::MONITOR_STOPPED as u16;
const EVENT_CONNECTED: u16 = zmq::SocketEvent::CONNECTED as u16;
const EVENT_DISCONNECTED: u16 = zmq::SocketEvent::DISCONNECTED as u16;

/// Starts a thread that explains the handshake failures of a connecting
/// `socket` whose side uses `ours` (call before `connect`), and keeps
/// `link` up to date: up while a connection of `socket` has completed its
/// handshake. Should no monitor
/// start, `link` counts as always up (a request then waits in libzmq's
/// queue for a connection, as with a plain socket), and a warning says so.
pub fn watch_linked(ctx: &zmq::Context, socket: &zmq::Socket, ours: Mechanism, link: &Link) {
    if let Err(error) = start(ctx, socket, ours, Some(link.clone())) {
        link.unwatched();
        warn!(
            "cannot watch the connections ({error}): requests go out whether a server is \
             connected or not, and a refusal will show only as no reply"
        );
    }
}

fn start(
    ctx: &zmq::Context,
    socket: &zmq::Socket,
    ours: Mechanism,
    link: Option<Link>,
) -> anyhow::Result<()> {
    let events = EVENT_HANDSHAKE_FAILED_NO_DETAIL
        | EVENT_HANDSHAKE_SUCCEEDED
        | EVENT_HANDSHAKE_FAILED_PROTOCOL
        | EVENT_HANDSHAKE_FAILED_AUTH
        | EVENT_CONNECTED
        | EVENT_DISCONNECTED
        | EVENT_MONITOR_STOPPED;
    // Read here: a socket may not be used from the reporter's thread.
    let limit = socket
        .get_handshake_ivl()
        .ok()
        .and_then(|ms| u64::try_from(ms).ok())
        .filter(|&ms| ms > 0)
        .map(Duration::from_millis);
    // The reader first, then the monitor: no monitor without a reader.
    let (receiver, endpoint) = monitor::receiver(ctx, "handshake")?;
    let reporter = Reporter::new(ours, limit, link);
    thread::Builder::new()
        .name("handshakes".into())
        .spawn(move || reporter.run(&receiver))?;
    socket.monitor(&endpoint, i32::from(events))?;
    Ok(())
}

/// What the last warning was about, for the line that says it is over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Trouble {
    /// The server refused us, or hung up.
    Refused,
    /// The handshake did not finish in time.
    TimedOut,
}

/// Reads monitor events until the socket is closed.
struct Reporter {
    ours: Mechanism,
    /// The socket's ZMQ_HANDSHAKE_IVL (`None`: no limit).
    limit: Option<Duration>,
    link: Option<Link>,
    /// When each endpoint's connection in handshake was made.
    connected_at: HashMap<Vec<u8>, Instant>,
    /// The last warning, when it was given, and its repeats since.
    last: Option<(String, Instant, u64)>,
    trouble: Trouble,
}

impl Reporter {
    fn new(ours: Mechanism, limit: Option<Duration>, link: Option<Link>) -> Reporter {
        Reporter {
            ours,
            limit,
            link,
            connected_at: HashMap::new(),
            last: None,
            trouble: Trouble::Refused,
        }
    }

    fn run(mut self, receiver: &zmq::Socket) {
        monitor::read_until_stopped(receiver, |kind, value, endpoint| {
            if let Some(link) = &self.link {
                link.record(kind, endpoint);
            }
            let now = Instant::now();
            match kind {
                EVENT_CONNECTED => {
                    self.connected_at.insert(endpoint.to_vec(), now);
                }
                EVENT_DISCONNECTED => {
                    self.connected_at.remove(endpoint);
                }
                EVENT_HANDSHAKE_SUCCEEDED => {
                    self.connected_at.remove(endpoint);
                    if self.last.take().is_some() {
                        let endpoint = String::from_utf8_lossy(endpoint);
                        match self.trouble {
                            Trouble::Refused => {
                                info!("{endpoint}: handshake succeeded: the server lets us in now")
                            }
                            Trouble::TimedOut => {
                                info!("{endpoint}: handshake succeeded: the server answers now")
                            }
                        }
                    }
                }
                _ => {
                    let lasted = self
                        .connected_at
                        .get(endpoint)
                        .map(|&at| now.duration_since(at));
                    let endpoint = String::from_utf8_lossy(endpoint);
                    if kind == EVENT_HANDSHAKE_FAILED_NO_DETAIL
                        && ran_out_of_time(value, lasted, self.limit)
                    {
                        self.trouble = Trouble::TimedOut;
                        self.report(format!("{endpoint} {}", out_of_time(self.limit)), now);
                        return;
                    }
                    if kind != EVENT_HANDSHAKE_FAILED_NO_DETAIL {
                        // An ERROR from the server: a refusal, not a hang-up.
                        REFUSED.store(true, Ordering::Relaxed);
                    }
                    if let Some(why) = explain(kind, value, self.ours) {
                        self.trouble = Trouble::Refused;
                        self.report(format!("{endpoint} {why}"), now);
                    }
                }
            }
        });
    }

    /// Logs `line` unless it was the last one, logged under [`REPEAT_EVERY`] ago.
    fn report(&mut self, line: String, now: Instant) {
        if let Some((last, at, repeats)) = &mut self.last {
            if *last == line && now.duration_since(*at) < REPEAT_EVERY {
                *repeats += 1;
                return;
            }
            if *last == line {
                warn!("{line} (again, {} more times)", *repeats + 1);
                *at = now;
                *repeats = 0;
                return;
            }
        }
        warn!("{line}");
        self.last = Some((line, now, 0));
    }
}

/// Whether a handshake that failed without detail (errno `errno`) ran out
/// of time, rather than being cut: its errno is EAGAIN, which no connection
/// error carries, or it `lasted` (from the connection to the failure) about
/// as long as the socket's ZMQ_HANDSHAKE_IVL, `limit`. (See the module docs.)
fn ran_out_of_time(errno: u32, lasted: Option<Duration>, limit: Option<Duration>) -> bool {
    let eagain = u32::try_from(libc::EAGAIN).is_ok_and(|eagain| errno == eagain);
    // A tenth of the limit below it: the thread reads both events late.
    let late = match (lasted, limit) {
        (Some(lasted), Some(limit)) => lasted >= limit - limit / 10,
        _ => false,
    };
    eagain || late
}

/// Whether a handshake failure `event` (with its `value`) is the peer
/// hanging up, not the handshake's time limit running out: a hang-up is
/// what a peer that found our socket type unfit leaves.
pub fn hung_up(event: u16, value: u32) -> bool {
    event == EVENT_HANDSHAKE_FAILED_NO_DETAIL && !ran_out_of_time(value, None, None)
}

/// A handshake that did not finish within `limit` (ZMQ_HANDSHAKE_IVL), as
/// the end of a sentence starting with the server's endpoint.
fn out_of_time(limit: Option<Duration>) -> String {
    let within = match limit {
        Some(limit) if limit.subsec_millis() == 0 => format!("{} s", limit.as_secs()),
        Some(limit) => format!("{} ms", limit.as_millis()),
        None => "the time allowed".to_string(),
    };
    format!(
        "did not complete the ZeroMQ handshake within {within} (ZMQ_HANDSHAKE_IVL): the \
         connection was made, but the server did not answer in time; it may be stopped \
         (SIGSTOP, docker compose pause) or overloaded; libzmq tries again"
    )
}

/// What a handshake failure event means to a client using `ours`, as the
/// end of a sentence starting with the server's endpoint.
pub fn explain(event: u16, value: u32, ours: Mechanism) -> Option<String> {
    Some(match event {
        // libzmq's handshake timer (see the module docs).
        EVENT_HANDSHAKE_FAILED_NO_DETAIL if ran_out_of_time(value, None, None) => out_of_time(None),
        EVENT_HANDSHAKE_FAILED_AUTH if value == 400 => {
            let hint = match ours {
                Mechanism::Null => "our address is not in its --allow",
                Mechanism::Plain => {
                    "wrong --plain-user or --plain-password-file, or our address is not in its --allow"
                }
                Mechanism::Curve => {
                    "our public key is not in its --curve-clients, or our address is not in its --allow"
                }
            };
            format!("refused us (ZAP status 400): {hint}")
        }
        EVENT_HANDSHAKE_FAILED_AUTH => format!(
            "could not check our credentials (ZAP status {value}): a problem on the server's side"
        ),
        EVENT_HANDSHAKE_FAILED_PROTOCOL if value == MECHANISM_MISMATCH => {
            let hint = match ours {
                Mechanism::Null => {
                    "it wants a user and password (--plain-user, --plain-password-file) or \
                     CURVE keys (--curve-server-key, --curve-secret-key-file)"
                }
                Mechanism::Plain => "it wants CURVE keys, or no credentials at all",
                Mechanism::Curve => "it wants PLAIN, or no credentials at all",
            };
            format!(
                "uses another security mechanism than ours ({}): {hint}",
                ours.name()
            )
        }
        EVENT_HANDSHAKE_FAILED_PROTOCOL => {
            format!("broke off the handshake: {}", protocol_error(value))
        }
        // A server that finds our mechanism is not its own hangs up, and
        // we may see the hang-up before we read its greeting: then this is
        // all we learn of a mismatch.
        EVENT_HANDSHAKE_FAILED_NO_DETAIL => match ours {
            Mechanism::Curve => "hung up during the CURVE handshake: is --curve-server-key \
                                 the server's public key, and does the server use CURVE?"
                .to_string(),
            _ => format!(
                "hung up during the ZeroMQ handshake ({}): it may use another security \
                 mechanism than ours ({}), or be a socket of a type that cannot talk to ours",
                errno_text(value),
                ours.name()
            ),
        },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_says_what_to_check() {
        let auth = |ours| explain(EVENT_HANDSHAKE_FAILED_AUTH, 400, ours).unwrap();
        assert!(auth(Mechanism::Null).contains("--allow"));
        assert!(auth(Mechanism::Plain).contains("--plain-user"));
        assert!(auth(Mechanism::Curve).contains("--curve-clients"));
        let mismatch = explain(
            EVENT_HANDSHAKE_FAILED_PROTOCOL,
            MECHANISM_MISMATCH,
            Mechanism::Null,
        );
        assert!(
            mismatch
                .unwrap()
                .contains("another security mechanism than ours (NULL")
        );
        let hung_up = explain(EVENT_HANDSHAKE_FAILED_NO_DETAIL, 0, Mechanism::Curve).unwrap();
        assert!(hung_up.contains("--curve-server-key"));
        assert!(explain(EVENT_HANDSHAKE_SUCCEEDED, 0, Mechanism::Null).is_none());
        assert_eq!(protocol_error(0x1100_0001).split(" (").count(), 3);
        assert!(protocol_error(0x1000_0013).ends_with("(0x10000013)"));
    }

    #[test]
    fn a_failure_repeating_every_100_ms_is_reported_every_10_s() {
        let mut reporter = Reporter::new(Mechanism::Plain, None, None);
        let start = Instant::now();
        for tenth in 0..=100u64 {
            reporter.report(
                "x refused us".into(),
                start + Duration::from_millis(tenth * 100),
            );
        }
        let (_, at, repeats) = reporter.last.unwrap();
        assert_eq!(at, start + REPEAT_EVERY, "reported again after 10 s");
        assert_eq!(repeats, 0);
    }

    #[test]
    fn a_handshake_out_of_time_is_told_from_a_hang_up() {
        let eagain = u32::try_from(libc::EAGAIN).unwrap();
        let epipe = u32::try_from(libc::EPIPE).unwrap();
        let limit = Some(Duration::from_secs(30));
        // libzmq's timer, with the errno of its last read: EAGAIN.
        assert!(ran_out_of_time(eagain, None, None));
        assert!(ran_out_of_time(
            eagain,
            Some(Duration::from_millis(5)),
            limit
        ));
        // The timer with another errno left over: told by how long it took.
        assert!(ran_out_of_time(epipe, Some(Duration::from_secs(30)), limit));
        assert!(ran_out_of_time(
            0,
            Some(Duration::from_millis(29_500)),
            limit
        ));
        // A hang-up (EPIPE: end of file) before the limit.
        assert!(!ran_out_of_time(
            epipe,
            Some(Duration::from_millis(3)),
            limit
        ));
        assert!(!ran_out_of_time(epipe, None, limit));
        assert!(!ran_out_of_time(epipe, Some(Duration::from_secs(40)), None));

        let timed_out = explain(EVENT_HANDSHAKE_FAILED_NO_DETAIL, eagain, Mechanism::Null).unwrap();
        assert!(
            timed_out.starts_with("did not complete the ZeroMQ handshake within the time allowed"),
            "{timed_out}"
        );
        assert!(!timed_out.contains("security mechanism"), "{timed_out}");
        // Even with CURVE: a stopped server says nothing about our keys.
        let curve = explain(EVENT_HANDSHAKE_FAILED_NO_DETAIL, eagain, Mechanism::Curve).unwrap();
        assert!(!curve.contains("--curve-server-key"), "{curve}");
        let hung_up = explain(EVENT_HANDSHAKE_FAILED_NO_DETAIL, epipe, Mechanism::Null).unwrap();
        assert!(
            hung_up.starts_with("hung up during the ZeroMQ handshake"),
            "{hung_up}"
        );
        assert!(out_of_time(limit).contains("within 30 s (ZMQ_HANDSHAKE_IVL)"));
        assert!(out_of_time(Some(Duration::from_millis(300))).contains("within 300 ms"));
    }
}
