//! What a refused client can know, and says.
//!
//! A server that refuses a client does it during the ZeroMQ handshake, so
//! the client's connection never comes up. A REQ socket with ZMQ_IMMEDIATE
//! (see [`crate::lazy_pirate`]) then just waits for a connection, and the
//! client could only say "no reply": the reason is visible solely to a
//! socket monitor, which reports the handshake's failure:
//!
//! | event | value | what happened |
//! |---|---|---|
//! | HANDSHAKE_FAILED_AUTH | 400 | the server's ZAP handler refused us: our address, user, password or key |
//! | HANDSHAKE_FAILED_AUTH | 500 | the server's ZAP handler failed (an internal error) |
//! | HANDSHAKE_FAILED_PROTOCOL | 0x11000002 | the server uses another mechanism (NULL, PLAIN, CURVE) than we do |
//! | HANDSHAKE_FAILED_NO_DETAIL | errno | the server hung up mid-handshake: with CURVE, a wrong server key; or another mechanism, seen before its greeting was read |
//!
//! libzmq 4.3 gives up on a connection the server refused with an ERROR
//! (a ZAP status, a mechanism mismatch: the session ends as a protocol
//! error), but reconnects after a hang-up, every 100 ms by default, failing
//! the same way each time. [`watch`] starts a monitor on a connecting
//! socket and turns these events into one warning each, repeated at most
//! every [`REPEAT_EVERY`]. The thread ends when the socket is closed
//! (libzmq's MONITOR_STOPPED event): a socket takes its monitor with it.
//!
//! The names of libzmq's ZMTP and ZAP protocol error codes are in
//! [`crate::plumbing::monitor`] ([`protocol_error`]), for any monitor that
//! reports them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::plumbing::monitor::{self, MECHANISM_MISMATCH, errno_text, protocol_error};

/// Set once a server refused one of this process's sockets with a reason
/// (a ZAP status, a mechanism mismatch), which the warning has said: "is the
/// server running?" would then be the wrong question.
static REFUSED: AtomicBool = AtomicBool::new(false);

/// Whether a server refused one of this process's watched sockets with a
/// reason, which [`watch`] has logged.
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

/// Starts a thread that explains the handshake failures of a connecting
/// `socket` whose side uses `ours` (call before `connect`). A monitor that
/// cannot be started costs the explanations, not the connection: it is
/// reported and the role goes on.
pub fn watch(ctx: &zmq::Context, socket: &zmq::Socket, ours: Mechanism) {
    if let Err(error) = start(ctx, socket, ours) {
        warn!("cannot watch the handshakes ({error}): a refusal will show only as no reply");
    }
}

fn start(ctx: &zmq::Context, socket: &zmq::Socket, ours: Mechanism) -> anyhow::Result<()> {
    let events = EVENT_HANDSHAKE_FAILED_NO_DETAIL
        | EVENT_HANDSHAKE_SUCCEEDED
        | EVENT_HANDSHAKE_FAILED_PROTOCOL
        | EVENT_HANDSHAKE_FAILED_AUTH
        | EVENT_MONITOR_STOPPED;
    // The reader first, then the monitor: no monitor without a reader.
    let (receiver, endpoint) = monitor::receiver(ctx, "handshake")?;
    thread::Builder::new()
        .name("handshakes".into())
        .spawn(move || Reporter::new(ours).run(&receiver))?;
    socket.monitor(&endpoint, i32::from(events))?;
    Ok(())
}

/// Reads monitor events until the socket is closed.
struct Reporter {
    ours: Mechanism,
    /// The last warning, when it was given, and its repeats since.
    last: Option<(String, Instant, u64)>,
}

impl Reporter {
    fn new(ours: Mechanism) -> Reporter {
        Reporter { ours, last: None }
    }

    fn run(mut self, receiver: &zmq::Socket) {
        monitor::read_until_stopped(receiver, |kind, value, endpoint| {
            let endpoint = String::from_utf8_lossy(endpoint);
            match kind {
                EVENT_HANDSHAKE_SUCCEEDED => {
                    if self.last.take().is_some() {
                        info!("{endpoint}: handshake succeeded: the server lets us in now");
                    }
                }
                _ => {
                    if kind != EVENT_HANDSHAKE_FAILED_NO_DETAIL {
                        // An ERROR from the server: a refusal, not a hang-up.
                        REFUSED.store(true, Ordering::Relaxed);
                    }
                    if let Some(why) = explain(kind, value, self.ours) {
                        self.report(format!("{endpoint} {why}"), Instant::now());
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

/// What a handshake failure event means to a client using `ours`, as the
/// end of a sentence starting with the server's endpoint.
pub fn explain(event: u16, value: u32, ours: Mechanism) -> Option<String> {
    Some(match event {
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
        let mut reporter = Reporter::new(Mechanism::Plain);
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
}
