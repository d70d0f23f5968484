//! The ZAP handler: the one place that says yes or no to a new peer.
//!
//! ZAP (ZeroMQ Authentication Protocol, RFC 27) works like this: while a
//! peer's connection is in its handshake, libzmq sends a request to the
//! socket bound at `inproc://zeromq.zap.01` *in the same context*, and waits
//! for the reply before the connection may carry messages:
//!
//! ```text
//! request  ["1.0", id, domain, address, identity, mechanism, credentials...]
//! reply    ["1.0", id, status, status text, user id, metadata]
//! ```
//!
//! The domain is the listening socket's ZMQ_ZAP_DOMAIN ("REP", "frontend",
//! "backend": [`super::Gate::protect`] sets it), the address is the peer's IP
//! address, and the credentials depend on the mechanism: none for NULL,
//! user and password for PLAIN, the client's public key for CURVE. Status
//! 200 admits the peer; 400 refuses it, and libzmq sends the peer an ERROR
//! carrying just "400" and closes the connection. The status text stays
//! here, in this module's log line.
//!
//! When libzmq 4.3 asks, and what it does with no handler bound:
//!
//! | mechanism | asks the handler | no handler bound |
//! |---|---|---|
//! | NULL | only if the socket has a ZAP domain | admits everyone |
//! | PLAIN | always | refuses everyone |
//! | CURVE | always | admits any client key |
//!
//! So the handler must be bound before the listening sockets, and live as
//! long as they do: [`Handler`] binds in [`Handler::start`], in the caller's
//! thread, and its `Drop` stops the thread, after the sockets are gone.
//! (libzmq's ZMQ_ZAP_ENFORCE_DOMAIN would refuse peers when no handler is
//! bound, but the `zmq` crate 0.10 has no setter for it.)
//!
//! The handler runs inside every handshake, so it answers from memory only:
//! the files were read at start-up. Refusals are logged with the peer's
//! address and the socket's name, without letting a flood of them (a scan,
//! a classroom of misconfigured clients, a script retrying in a loop) flood
//! the log: see [`RefusalLog`].

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tracing::{debug, error, info, warn};

use super::allow::{self, Net};
use super::curve::{ClientKeys, PublicKey};
use super::plain::{Check, Users};
use crate::payload::text;
use crate::plumbing::logging::Count;
use crate::plumbing::shutdown::CHECK_INTERVAL_MS;

/// Where libzmq sends its ZAP requests (RFC 27).
pub const ENDPOINT: &str = "inproc://zeromq.zap.01";

/// What the handler checks, in this order: the address, then the credentials.
#[derive(Debug)]
pub struct Policy {
    /// Admitted address blocks; empty admits every address.
    pub allow: Vec<Net>,
    /// What the peers must present.
    pub credentials: Expected,
}

/// The credentials a peer must present.
#[derive(Debug)]
pub enum Expected {
    /// None (NULL): only the address is checked.
    Nothing,
    /// A user and password from the users file.
    Plain(Users),
    /// A CURVE client key: one of these, or with `None` any key (the
    /// connection is still encrypted, and the client still proves it holds
    /// the secret key of the public key it presents).
    Curve(Option<ClientKeys>),
}

/// The answer to one ZAP request.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Status 200, with the user id libzmq attaches to the peer's messages
    /// and a description for the log.
    Admit { user_id: String, who: String },
    /// Status 400.
    Refuse(Refusal),
}

/// Why a peer was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Its address is outside `--allow`.
    NotAllowed(String),
    /// libzmq gave no IP address (an ipc peer), so `--allow` cannot admit it.
    NoAddress,
    /// It authenticated with another mechanism than this socket expects.
    Mechanism { got: String, expected: &'static str },
    /// PLAIN, and no such user.
    UnknownUser(String),
    /// PLAIN, and not that user's password.
    WrongPassword(String),
    /// CURVE, and its public key is not in `--curve-clients`.
    UnlistedKey(String),
    /// Not a ZAP request libzmq would send.
    Malformed,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NotAllowed(allowed) => write!(f, "address not in --allow ({allowed})"),
            Refusal::NoAddress => f.write_str("no IP address to check against --allow"),
            Refusal::Mechanism { got, expected } => {
                write!(
                    f,
                    "it authenticated with {got}, this socket expects {expected}"
                )
            }
            Refusal::UnknownUser(user) => write!(f, "PLAIN user \"{user}\": unknown user"),
            Refusal::WrongPassword(user) => write!(f, "PLAIN user \"{user}\": wrong password"),
            Refusal::UnlistedKey(key) => {
                write!(f, "CURVE client key {key} not in --curve-clients")
            }
            Refusal::Malformed => f.write_str("malformed ZAP request"),
        }
    }
}

/// The fields of a ZAP request that the policy looks at.
#[derive(Debug)]
pub struct Request<'a> {
    /// The listening socket's ZAP domain.
    pub domain: &'a [u8],
    /// The peer's IP address, as text.
    pub address: &'a [u8],
    /// "NULL", "PLAIN" or "CURVE".
    pub mechanism: &'a [u8],
    /// Mechanism-specific: nothing, [user, password], or [public key].
    pub credentials: &'a [Vec<u8>],
}

impl<'a> Request<'a> {
    /// Reads a request as the REP socket delivers it (the delimiter gone).
    fn parse(frames: &'a [Vec<u8>]) -> Option<Request<'a>> {
        match frames {
            [
                version,
                _id,
                domain,
                address,
                _identity,
                mechanism,
                credentials @ ..,
            ] if version.as_slice() == b"1.0" => Some(Request {
                domain,
                address,
                mechanism,
                credentials,
            }),
            _ => None,
        }
    }
}

impl Policy {
    /// Decides on one request: the address first, then the credentials.
    pub fn decide(&self, request: &Request<'_>) -> Verdict {
        if !self.allow.is_empty() {
            let address = std::str::from_utf8(request.address)
                .ok()
                .and_then(allow::parse_peer);
            match address {
                None => return Verdict::Refuse(Refusal::NoAddress),
                Some(ip) if !self.allow.iter().any(|net| net.contains(ip)) => {
                    return Verdict::Refuse(Refusal::NotAllowed(self.allowed()));
                }
                Some(_) => {}
            }
        }
        let expected = match self.credentials {
            Expected::Nothing => "NULL",
            Expected::Plain(_) => "PLAIN",
            Expected::Curve(_) => "CURVE",
        };
        if request.mechanism != expected.as_bytes() {
            return Verdict::Refuse(Refusal::Mechanism {
                got: text(request.mechanism).to_string(),
                expected,
            });
        }
        match (&self.credentials, request.credentials) {
            (Expected::Nothing, _) => Verdict::Admit {
                user_id: String::new(),
                who: String::new(),
            },
            (Expected::Plain(users), [user, password]) => {
                let shown = text(user).to_string();
                match users.check(user, password) {
                    Check::Admitted => Verdict::Admit {
                        who: format!(" as PLAIN user \"{shown}\""),
                        user_id: shown,
                    },
                    Check::UnknownUser => Verdict::Refuse(Refusal::UnknownUser(shown)),
                    Check::WrongPassword => Verdict::Refuse(Refusal::WrongPassword(shown)),
                }
            }
            (Expected::Curve(listed), [key]) => match PublicKey::from_bytes(key) {
                Some(key) if listed.as_ref().is_none_or(|keys| keys.contains(&key)) => {
                    Verdict::Admit {
                        who: format!(" as CURVE client {key}"),
                        user_id: key.to_string(),
                    }
                }
                Some(key) => Verdict::Refuse(Refusal::UnlistedKey(key.to_string())),
                None => Verdict::Refuse(Refusal::Malformed),
            },
            _ => Verdict::Refuse(Refusal::Malformed),
        }
    }

    /// `--allow`, shortened for a log line.
    fn allowed(&self) -> String {
        let shown: Vec<String> = self.allow.iter().take(3).map(Net::to_string).collect();
        match self.allow.len() {
            n if n > 3 => format!("{} and {} more", shown.join(", "), n - 3),
            _ => shown.join(", "),
        }
    }
}

/// The running handler; dropping it stops the thread and waits for it.
pub struct Handler {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Handler {
    /// Binds the handler's REP socket in `ctx` (here, so that it is bound
    /// before this returns and before any listening socket binds) and
    /// starts the thread that answers on it.
    pub fn start(ctx: &zmq::Context, policy: Policy) -> anyhow::Result<Handler> {
        let socket = ctx.socket(zmq::REP)?;
        socket.set_linger(0)?;
        // Wake up to notice a stop, as every loop of the suite does.
        socket.set_rcvtimeo(CHECK_INTERVAL_MS)?;
        socket
            .bind(ENDPOINT)
            .with_context(|| format!("binding the ZAP handler at {ENDPOINT}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = thread::Builder::new()
            .name("zap".into())
            .spawn({
                let stop = Arc::clone(&stop);
                move || serve(&socket, &policy, &stop)
            })
            .context("starting the ZAP handler's thread")?;
        Ok(Handler {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Handler {
    /// Stops the thread within [`CHECK_INTERVAL_MS`]: its socket holds a
    /// clone of the context, which cannot end while the thread lives.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The handler's loop: one reply per request, until asked to stop.
fn serve(socket: &zmq::Socket, policy: &Policy, stop: &AtomicBool) {
    let mut log = RefusalLog::new(Instant::now());
    while !stop.load(Ordering::SeqCst) {
        match socket.recv_multipart(0) {
            Ok(request) => {
                let reply = answer(policy, &request, &mut log);
                if let Err(error) = socket.send_multipart(reply, 0) {
                    warn!("ZAP handler: a reply could not be sent ({error})");
                }
            }
            Err(zmq::Error::EAGAIN | zmq::Error::EINTR) => {}
            // The context is ending with the process.
            Err(zmq::Error::ETERM) => break,
            Err(error) => {
                // Keep the socket bound but unanswered: new handshakes then
                // wait and time out, instead of finding no handler and (for
                // NULL and CURVE) passing unchecked.
                error!("ZAP handler failed ({error}): no new peer can join until a restart");
                while !stop.load(Ordering::SeqCst) {
                    thread::sleep(Duration::from_millis(CHECK_INTERVAL_MS as u64));
                }
                break;
            }
        }
        if let Some(summary) = log.summary(Instant::now()) {
            warn!("{summary}");
        }
    }
    if let Some(summary) = log.flush(Instant::now()) {
        warn!("{summary}");
    }
}

/// The reply frames to one request, logging the verdict.
fn answer(policy: &Policy, request: &[Vec<u8>], log: &mut RefusalLog) -> Vec<Vec<u8>> {
    let id = request.get(1).cloned().unwrap_or_default();
    let reply = |status: &str, status_text: &str, user_id: &str| {
        vec![
            b"1.0".to_vec(),
            id.clone(),
            status.as_bytes().to_vec(),
            status_text.as_bytes().to_vec(),
            user_id.as_bytes().to_vec(),
            Vec::new(),
        ]
    };
    let Some(parsed) = Request::parse(request) else {
        warn!("ZAP handler: a malformed request, refused");
        return reply("500", "malformed ZAP request", "");
    };
    // A bug in a check must refuse the peer, never end the handler.
    let verdict = match panic::catch_unwind(AssertUnwindSafe(|| policy.decide(&parsed))) {
        Ok(verdict) => verdict,
        Err(_) => {
            error!("ZAP handler: the check failed; peer refused");
            return reply("500", "internal error", "");
        }
    };
    let domain = text(parsed.domain);
    let address = match parsed.address {
        [] => "a peer without an IP address".to_string(),
        address => text(address).to_string(),
    };
    match verdict {
        Verdict::Admit { user_id, who } => {
            if who.is_empty() {
                debug!("{domain}: admitted {address}");
            } else {
                info!("{domain}: admitted {address}{who}");
            }
            reply("200", "OK", &user_id)
        }
        Verdict::Refuse(refusal) => {
            let line = format!("{domain}: refused {address}: {refusal}");
            if log.record(Instant::now(), &line, &format!("{address} ({domain})")) {
                warn!("{line}");
            }
            reply("400", &refusal.to_string(), "")
        }
    }
}

/// Refusals logged one line each until they repeat or pile up, then in a
/// summary at most once a second.
///
/// libzmq does not reconnect a connection that was refused, but a client
/// that opens a new socket after each failure (as the guide's `lpclient`
/// does), a script in a loop, a scan or a classroom of misconfigured
/// workers can be refused many times a second. So a refusal gets a line of its own only if
/// the same line was not logged in the last [`REPEAT_QUIET`] and fewer than
/// [`FIRST_LINES`] lines were logged this second; the others are counted,
/// and summed up with their addresses once the second is over.
#[derive(Debug)]
pub struct RefusalLog {
    window_start: Instant,
    shown: usize,
    held: u64,
    held_from: BTreeSet<String>,
    /// More distinct addresses were held than [`REMEMBERED`].
    held_from_overflow: bool,
    recent: HashMap<String, Instant>,
}

/// Lines of their own per second, at most.
pub const FIRST_LINES: usize = 5;
/// The same refusal (socket, address, reason) is logged again after this.
pub const REPEAT_QUIET: Duration = Duration::from_secs(60);
/// How long the log counts before it sums up.
pub const WINDOW: Duration = Duration::from_secs(1);
/// Lines remembered for [`REPEAT_QUIET`], and addresses for a summary, at
/// most: a flood of distinct ones is counted instead.
const REMEMBERED: usize = 4096;
/// Addresses named in a summary, at most.
const NAMED: usize = 3;

impl RefusalLog {
    /// An empty log whose first second starts `now`.
    pub fn new(now: Instant) -> RefusalLog {
        RefusalLog {
            window_start: now,
            shown: 0,
            held: 0,
            held_from: BTreeSet::new(),
            held_from_overflow: false,
            recent: HashMap::new(),
        }
    }

    /// Records a refusal: `true` if its `line` should be logged now,
    /// `false` if it was counted for the next summary under `from`.
    pub fn record(&mut self, now: Instant, line: &str, from: &str) -> bool {
        let repeated = self
            .recent
            .get(line)
            .is_some_and(|&at| now.duration_since(at) < REPEAT_QUIET);
        let room = self.shown < FIRST_LINES && self.recent.len() < REMEMBERED;
        if !repeated && room {
            self.shown += 1;
            self.recent.insert(line.to_string(), now);
            return true;
        }
        self.held += 1;
        if self.held_from.len() < REMEMBERED {
            self.held_from.insert(from.to_string());
        } else if !self.held_from.contains(from) {
            self.held_from_overflow = true;
        }
        false
    }

    /// The summary of the refusals counted in the second that ended, if
    /// one has ended; starts the next.
    pub fn summary(&mut self, now: Instant) -> Option<String> {
        if now.duration_since(self.window_start) < WINDOW {
            return None;
        }
        self.flush(now)
    }

    /// The summary of what was counted so far, if anything (for a stop).
    pub fn flush(&mut self, now: Instant) -> Option<String> {
        let seconds = now.duration_since(self.window_start).as_secs_f64();
        let held = std::mem::take(&mut self.held);
        let from = std::mem::take(&mut self.held_from);
        let overflow = std::mem::take(&mut self.held_from_overflow);
        self.window_start = now;
        self.shown = 0;
        self.recent
            .retain(|_, &mut at| now.duration_since(at) < REPEAT_QUIET);
        if held == 0 {
            return None;
        }
        let named: Vec<&str> = from.iter().take(NAMED).map(String::as_str).collect();
        let others = match (from.len().saturating_sub(NAMED), overflow) {
            (0, _) => String::new(),
            (n, false) => format!(" and {n} more"),
            (n, true) => format!(" and over {n} more"),
        };
        Some(format!(
            "{} in the last {seconds:.1} s, not logged one by one: {}{others}",
            Count::new(held, "more refusal"),
            named.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::allow::parse_net;

    fn request<'a>(
        mechanism: &'a [u8],
        address: &'a [u8],
        credentials: &'a [Vec<u8>],
    ) -> Request<'a> {
        Request {
            domain: b"REP",
            address,
            mechanism,
            credentials,
        }
    }

    fn plain_users() -> Users {
        let dir = std::env::temp_dir().join(format!("zap-users-{}", std::process::id()));
        std::fs::write(&dir, "alice:secret\n").unwrap();
        let users = Users::read("--plain-users", &dir).unwrap();
        let _ = std::fs::remove_file(&dir);
        users
    }

    #[test]
    fn the_address_is_checked_first_then_the_credentials() {
        let policy = Policy {
            allow: vec![
                parse_net("127.0.0.1").unwrap(),
                parse_net("10.0.0.0/8").unwrap(),
            ],
            credentials: Expected::Plain(plain_users()),
        };
        let right = [b"alice".to_vec(), b"secret".to_vec()];
        let wrong = [b"alice".to_vec(), b"guess".to_vec()];
        assert_eq!(
            policy.decide(&request(b"PLAIN", b"10.9.9.9", &right)),
            Verdict::Admit {
                user_id: "alice".into(),
                who: " as PLAIN user \"alice\"".into()
            }
        );
        assert_eq!(
            policy.decide(&request(b"PLAIN", b"127.0.0.2", &right)),
            Verdict::Refuse(Refusal::NotAllowed("127.0.0.1/32, 10.0.0.0/8".into()))
        );
        assert_eq!(
            policy.decide(&request(b"PLAIN", b"127.0.0.1", &wrong)),
            Verdict::Refuse(Refusal::WrongPassword("alice".into()))
        );
        assert_eq!(
            policy.decide(&request(b"PLAIN", b"", &right)),
            Verdict::Refuse(Refusal::NoAddress)
        );
        let nameless = [b"\x1b[2J".to_vec(), b"x".to_vec()];
        assert_eq!(
            policy.decide(&request(b"PLAIN", b"127.0.0.1", &nameless)),
            Verdict::Refuse(Refusal::UnknownUser(r"\x1b[2J".into())),
            "a peer's bytes reach the log escaped"
        );
        assert_eq!(
            policy.decide(&request(b"NULL", b"127.0.0.1", &[])),
            Verdict::Refuse(Refusal::Mechanism {
                got: "NULL".into(),
                expected: "PLAIN"
            })
        );
        assert_eq!(
            policy.decide(&request(b"PLAIN", b"127.0.0.1", &right[..1])),
            Verdict::Refuse(Refusal::Malformed)
        );
    }

    #[test]
    fn curve_keys_are_admitted_if_listed_or_if_there_is_no_list() {
        let listed = PublicKey::from_bytes(&[1; 32]).unwrap();
        let dir = std::env::temp_dir().join(format!("zap-keys-{}", std::process::id()));
        std::fs::write(&dir, format!("{listed}\n")).unwrap();
        let keys = ClientKeys::read("--curve-clients", &dir).unwrap();
        let _ = std::fs::remove_file(&dir);
        let policy = Policy {
            allow: Vec::new(),
            credentials: Expected::Curve(Some(keys)),
        };
        let verdict = policy.decide(&request(b"CURVE", b"::1", &[vec![1; 32]]));
        assert!(matches!(verdict, Verdict::Admit { .. }), "{verdict:?}");
        let stranger = PublicKey::from_bytes(&[2; 32]).unwrap();
        assert_eq!(
            policy.decide(&request(b"CURVE", b"::1", &[vec![2; 32]])),
            Verdict::Refuse(Refusal::UnlistedKey(stranger.to_string()))
        );
        let open = Policy {
            allow: Vec::new(),
            credentials: Expected::Curve(None),
        };
        let verdict = open.decide(&request(b"CURVE", b"::1", &[vec![2; 32]]));
        assert!(matches!(verdict, Verdict::Admit { .. }), "{verdict:?}");
    }

    #[test]
    fn requests_are_read_as_rfc_27_lays_them_out() {
        let frames: Vec<Vec<u8>> = [
            "1.0",
            "1",
            "REP",
            "127.0.0.1",
            "",
            "PLAIN",
            "alice",
            "secret",
        ]
        .iter()
        .map(|f| f.as_bytes().to_vec())
        .collect();
        let parsed = Request::parse(&frames).unwrap();
        assert_eq!(parsed.domain, b"REP");
        assert_eq!(parsed.credentials.len(), 2);
        assert!(Request::parse(&frames[..5]).is_none());
        let mut other_version = frames.clone();
        other_version[0] = b"2.0".to_vec();
        assert!(Request::parse(&other_version).is_none());
    }

    #[test]
    fn a_flood_of_refusals_becomes_one_summary_a_second() {
        let start = Instant::now();
        let mut log = RefusalLog::new(start);
        let at = |ms: u64| start + Duration::from_millis(ms);
        // The first refusal of each kind is shown; its repeats are counted.
        assert!(log.record(
            at(0),
            "REP: refused 10.0.0.1: wrong password",
            "10.0.0.1 (REP)"
        ));
        assert!(!log.record(
            at(100),
            "REP: refused 10.0.0.1: wrong password",
            "10.0.0.1 (REP)"
        ));
        assert!(log.record(
            at(150),
            "REP: refused 10.0.0.2: wrong password",
            "10.0.0.2 (REP)"
        ));
        assert_eq!(log.summary(at(900)), None, "not before the second is over");
        let summary = log.summary(at(1000)).unwrap();
        assert_eq!(
            summary,
            "1 more refusal in the last 1.0 s, not logged one by one: 10.0.0.1 (REP)"
        );
        // A repeat stays quiet for a minute, a new one gets its line.
        assert!(!log.record(
            at(1100),
            "REP: refused 10.0.0.1: wrong password",
            "10.0.0.1 (REP)"
        ));
        assert!(log.record(
            at(61_000),
            "REP: refused 10.0.0.1: wrong password",
            "10.0.0.1 (REP)"
        ));
        // A scan from many addresses: five lines, then counting.
        let mut log = RefusalLog::new(start);
        let shown = (0..100)
            .filter(|i| {
                let address = format!("10.0.1.{i}");
                log.record(at(10), &format!("refused {address}"), &address)
            })
            .count();
        assert_eq!(shown, FIRST_LINES);
        let summary = log.summary(at(1500)).unwrap();
        assert!(
            summary.starts_with("95 more refusals in the last 1.5 s")
                && summary.ends_with("and 92 more"),
            "{summary}"
        );
        assert_eq!(log.summary(at(3000)), None, "nothing new, nothing said");
        assert!(
            log.record(at(3001), "refused 10.0.1.200", "10.0.1.200"),
            "the budget is per second"
        );
    }
}
