//! The broker's live page (`broker --http ADDR`): what the loop publishes,
//! and the HTTP side that serves it.
//!
//! ```text
//! broker loop ──(a snapshot, at most 5 times a second)──> Board ──> HTTP threads ──> browsers
//!                                                           ^
//! frontend and backend monitors ──(open connections)────────┘
//! ```
//!
//! The broker's loop owns its sockets and never waits for a browser. On
//! each turn it hands its counts to a [`Publisher`], which closes the
//! per-second count when a second is over, and every [`PUBLISH_EVERY`]
//! builds a [`Snapshot`] of what the loop already knows (the counts, the
//! workers, the idle queue) and swaps it into the [`Board`]: the lock is
//! held for the swap of one pointer, and only tried, so that the loop goes
//! on at once if an HTTP thread happens to hold it. The HTTP
//! threads ([`crate::plumbing::http`]) take the latest snapshot and turn
//! it into JSON on their own time. Everything on the page is bounded: the
//! per-second figures cover [`HISTORY`] seconds, the events are the last
//! [`EVENTS`], the lists show at most [`SHOWN`] workers.
//!
//! - `GET /`: the page, one self-contained file (`dashboard.html`: inline
//!   CSS and script, nothing loaded from anywhere), which asks for
//!   `/stats` every 400 ms and redraws itself.
//! - `GET /stats`: the same figures as JSON.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, TryLockError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::plumbing::http::{self, Body};
use crate::plumbing::monitor::OpenConnections;

/// How often the loop publishes a snapshot, at most.
pub const PUBLISH_EVERY: Duration = Duration::from_millis(200);
/// Seconds of per-second figures kept.
pub const HISTORY: usize = 60;
/// Events kept (the newest).
pub const EVENTS: usize = 50;
/// Workers, and idle queue places, shown at most.
pub const SHOWN: usize = 100;

/// The page: one file, built into the binary.
const PAGE: &str = include_str!("dashboard.html");

/// What the page shows that changes, as the loop last published it (what
/// does not, the mode and the broker's name, the [`Board`] holds).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Snapshot {
    /// Seconds since the loop started.
    pub uptime_s: f64,
    /// Requests taken from clients.
    pub requests: u64,
    /// Replies delivered to clients.
    pub replies: u64,
    /// Messages dropped (see the broker's warnings).
    pub dropped: u64,
    /// Requests and replies in each of the last [`HISTORY`] whole seconds,
    /// oldest first.
    pub per_second: PerSecond,
    /// The frontend is not being read: no worker can take a request (lb:
    /// none idle; proxy: none connected, or every one's queue full), so
    /// requests wait in libzmq's queues.
    pub frontend_paused: bool,
    /// lb: `--heartbeat-ms`.
    pub heartbeat_ms: Option<u64>,
    /// lb: the workers the broker knows, by name (at most [`SHOWN`]).
    pub workers: Vec<WorkerView>,
    /// lb: how many it knows (more than `workers` holds, past [`SHOWN`]).
    pub workers_known: usize,
    /// lb: the idle workers, the next to get a request first.
    pub idle_queue: Vec<String>,
    /// lb: requests answered by workers the broker has since forgotten.
    pub served_by_gone: u64,
    /// lb: the last [`EVENTS`] events, oldest first.
    pub events: Vec<Event>,
}

/// Per-second figures, oldest first.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PerSecond {
    pub requests: Vec<u64>,
    pub replies: Vec<u64>,
}

/// One worker, as the load-balancing broker knows it.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerView {
    /// From its READY (escaped); `None` until a READY names it.
    pub name: Option<String>,
    /// Its identity on the backend ROUTER, in hex.
    pub id: String,
    /// `idle`, `busy`, or `silent` (expired while holding a request: it
    /// gets no more work, its reply is still delivered if it comes).
    pub state: &'static str,
    /// Requests it answered.
    pub served: u64,
    /// Milliseconds since the broker last heard from it.
    pub last_heard_ms: u64,
}

/// What happened to a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A READY from a worker the broker did not know.
    Joined,
    /// A READY from a new connection, with the name of a worker that
    /// expired earlier; a READY or a heartbeat from a worker forgotten for
    /// its silence; or a heartbeat from a worker the broker did not know
    /// (it had announced itself to an earlier broker).
    Rejoined,
    /// A worker known by its heartbeats only, named by its READY.
    Named,
    /// Forgotten: silent too long while idle, or its connection closed.
    Expired,
    /// Silent too long while holding a request: no more work for it.
    Silent,
    /// Heard from again after going silent.
    Back,
}

/// One line of the page's event list.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// When, in milliseconds since 1970 (the browser shows its local time).
    pub unix_ms: u64,
    pub kind: Kind,
    /// The worker's name, or its identity in hex.
    pub worker: String,
    /// The rest of the sentence.
    pub detail: String,
}

/// The last [`EVENTS`] events.
#[derive(Debug, Default)]
pub struct Journal {
    events: VecDeque<Event>,
}

impl Journal {
    /// Records an event, forgetting the oldest past [`EVENTS`].
    pub fn record(&mut self, kind: Kind, worker: &str, detail: impl Into<String>) {
        if self.events.len() == EVENTS {
            self.events.pop_front();
        }
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_millis() as u64);
        self.events.push_back(Event {
            unix_ms,
            kind,
            worker: worker.to_string(),
            detail: detail.into(),
        });
    }

    /// Whether a worker of this name expired among the events kept.
    pub fn expired_earlier(&self, worker: &str) -> bool {
        self.events
            .iter()
            .any(|event| event.kind == Kind::Expired && event.worker == worker)
    }

    /// The events kept, oldest first.
    pub fn to_vec(&self) -> Vec<Event> {
        self.events.iter().cloned().collect()
    }
}

/// Where the loop leaves its snapshots for the HTTP threads.
#[derive(Debug)]
pub struct Board {
    /// `lb` or `proxy`.
    mode: &'static str,
    /// The broker's `--name`.
    broker: String,
    latest: Mutex<Arc<Snapshot>>,
    /// Open connections on the frontend and the backend, counted by their
    /// monitors (`None` where no monitor runs).
    clients: Option<OpenConnections>,
    workers: Option<OpenConnections>,
}

/// The JSON of `/stats`: the broker, its latest snapshot, and the
/// connections counted now.
#[derive(Serialize)]
struct Stats<'a> {
    mode: &'static str,
    broker: &'a str,
    #[serde(flatten)]
    snapshot: &'a Snapshot,
    connections: Connections,
}

/// Open TCP connections to the broker's two ports.
#[derive(Serialize)]
struct Connections {
    /// To the frontend: clients.
    clients: Option<usize>,
    /// To the backend: workers.
    workers: Option<usize>,
}

impl Board {
    /// A board for a broker in `mode` (`lb`, `proxy`) named `broker`.
    pub fn new(
        mode: &'static str,
        broker: &str,
        clients: Option<OpenConnections>,
        workers: Option<OpenConnections>,
    ) -> Arc<Board> {
        Arc::new(Board {
            mode,
            broker: broker.to_string(),
            latest: Mutex::new(Arc::new(Snapshot::default())),
            clients,
            workers,
        })
    }

    /// The latest snapshot.
    pub fn latest(&self) -> Arc<Snapshot> {
        Arc::clone(&self.latest.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// `/stats`.
    fn stats_json(&self) -> Vec<u8> {
        let snapshot = self.latest();
        let stats = Stats {
            mode: self.mode,
            broker: &self.broker,
            snapshot: &snapshot,
            connections: Connections {
                clients: self.clients.as_ref().map(OpenConnections::get),
                workers: self.workers.as_ref().map(OpenConnections::get),
            },
        };
        // Serializing plain data to memory cannot fail.
        serde_json::to_vec(&stats).unwrap_or_default()
    }
}

/// Serves the page of `board` on `address` until the server is dropped.
pub fn serve(address: &str, board: Arc<Board>) -> std::io::Result<http::Server> {
    let get = move |path: &str| match path {
        "/stats" => Body {
            content_type: "application/json",
            bytes: board.stats_json(),
        },
        _ => Body {
            content_type: "text/html; charset=utf-8",
            bytes: PAGE.as_bytes().to_vec(),
        },
    };
    let site = http::Site {
        paths: &["/", "/stats"],
        get: Box::new(get),
    };
    http::Server::start(address, site)
}

/// The loop's side of the board: when to publish, and the per-second
/// figures, sampled once a second.
#[derive(Debug)]
pub struct Publisher {
    board: Arc<Board>,
    started: Instant,
    next: Instant,
    /// The start of the second being counted, and the counts then.
    second: (Instant, u64, u64),
    history: VecDeque<(u64, u64)>,
}

impl Publisher {
    pub fn new(board: Arc<Board>) -> Publisher {
        let now = Instant::now();
        Publisher {
            board,
            started: now,
            next: now,
            second: (now, 0, 0),
            history: VecDeque::with_capacity(HISTORY),
        }
    }

    /// Called on every turn of the loop with the counts so far: closes the
    /// second if one is over (two comparisons, most turns), and publishes
    /// the counts and whatever `fill` adds (the workers, in lb mode) if
    /// [`PUBLISH_EVERY`] has passed. The snapshot is built here, in the
    /// loop, from what the loop holds, and the lock is never waited for:
    /// if an HTTP thread holds it this instant, the snapshot is dropped and
    /// the next one is tried on the next turn.
    pub fn tick(
        &mut self,
        now: Instant,
        (requests, replies, dropped): (u64, u64, u64),
        fill: impl FnOnce(&mut Snapshot),
    ) {
        while now.duration_since(self.second.0) >= Duration::from_secs(1) {
            let (start, at_requests, at_replies) = self.second;
            if self.history.len() == HISTORY {
                self.history.pop_front();
            }
            self.history
                .push_back((requests - at_requests, replies - at_replies));
            // Seconds without a turn of the loop count as idle ones (the
            // loop turns at least every 100 ms, so this is for safety).
            self.second = (start + Duration::from_secs(1), requests, replies);
        }
        if now < self.next {
            return;
        }
        let mut snapshot = Snapshot {
            uptime_s: now.duration_since(self.started).as_secs_f64(),
            requests,
            replies,
            dropped,
            per_second: PerSecond {
                requests: self.history.iter().map(|(r, _)| *r).collect(),
                replies: self.history.iter().map(|(_, r)| *r).collect(),
            },
            ..Snapshot::default()
        };
        fill(&mut snapshot);
        let old = match self.board.latest.try_lock() {
            Ok(mut latest) => std::mem::replace(&mut *latest, Arc::new(snapshot)),
            Err(TryLockError::Poisoned(poisoned)) => {
                std::mem::replace(&mut *poisoned.into_inner(), Arc::new(snapshot))
            }
            Err(TryLockError::WouldBlock) => return,
        };
        // The old snapshot is freed after the lock is released (unless an
        // HTTP thread still holds it, which then frees it).
        drop(old);
        self.next = now + PUBLISH_EVERY;
    }
}

impl Snapshot {
    /// Sets the workers shown: at most [`SHOWN`] of them, sorted by name
    /// (then identity) so that the page's rows stay in place.
    pub fn set_workers(&mut self, mut workers: Vec<WorkerView>) {
        self.workers_known = workers.len();
        workers.sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id)));
        workers.truncate(SHOWN);
        self.workers = workers;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_each_second_and_keeps_a_minute() {
        let board = Board::new("proxy", "b", None, None);
        let mut publisher = Publisher::new(Arc::clone(&board));
        let start = publisher.started;
        for second in 1..=70u64 {
            let now = start + Duration::from_secs(second);
            publisher.tick(now, (second * 10, second * 9, 0), |_| {});
        }
        let latest = board.latest();
        assert_eq!(latest.per_second.requests.len(), HISTORY);
        assert!(latest.per_second.requests.iter().all(|&n| n == 10));
        assert!(latest.per_second.replies.iter().all(|&n| n == 9));
        assert_eq!((latest.requests, latest.replies), (700, 630));
    }

    #[test]
    fn keeps_the_last_events() {
        let mut journal = Journal::default();
        journal.record(Kind::Expired, "w1", "its connection is closed");
        for i in 0..EVENTS {
            journal.record(Kind::Joined, &format!("w{i}"), "");
        }
        assert_eq!(journal.to_vec().len(), EVENTS);
        assert!(!journal.expired_earlier("w1"), "the oldest event went");
    }

    #[test]
    fn stats_are_json_with_the_connections() {
        let board = Board::new("lb", "b", None, Some(OpenConnections::default()));
        let json: serde_json::Value = serde_json::from_slice(&board.stats_json()).unwrap();
        assert_eq!(json["mode"], "lb");
        assert_eq!(json["broker"], "b");
        assert_eq!(json["connections"]["clients"], serde_json::Value::Null);
        assert_eq!(json["connections"]["workers"], 0);
        assert!(json["workers"].as_array().unwrap().is_empty());
    }
}
