//! Printing what the relay saw: one line per unit, for people or as JSON.
//!
//! The relay never formats or writes anything itself: it hands each event
//! to a [`Reporter`], which puts it in a bounded queue and returns at once.
//! A printer thread takes events from the queue, formats them and hands the
//! lines to the buffered output ([`crate::plumbing::output`], which never
//! waits for a reader either: past 1 MiB unread, it drops lines and says so
//! once they are read again). When the queue is full (more traffic than
//! the printer can format), an event is dropped and counted, never waited
//! for: the bytes are relayed all the same, and the printer says how many
//! events it could not print.
//!
//! For people, one line per unit: a greeting, a command, a whole message
//! (its frames joined by `+`, each with its flags, size and bytes on the
//! wire), a note, a connection opening or closing:
//!
//! ```text
//! #1 client > server  greeting  ZMTP 3.1, NULL, as-server 0  [ff 00 00 00 00 00 00 00 01 7f 03 01 4e 55 4c 4c 00 00 00 00 00 00 00 00 00 ... 64 bytes]
//! #1 client > server  READY  Socket-Type=REQ Identity=  [04 26 05 52 45 41 44 59 0b 53 6f 63 6b 65 74 2d 54 79 ... 40 bytes]
//! #1 client > server  message  b"" (MORE, 0 bytes: 01 00) + b"Hello" (5 bytes: 00 05 48 65 6c 6c 6f)
//! ```
//!
//! With `--json`, one object per event ([`fn@json`]).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use tracing::warn;

use super::decoder::{Command, Detail, Event, Frame, Greeting, Side, spaced_hex};
use crate::payload::show;
use crate::plumbing::logging::Count;

/// Events waiting for the printer before new ones are dropped.
pub const QUEUE: usize = 4096;

/// Frames of one message gathered on one line; a longer message goes on
/// over further lines.
pub const FRAMES_PER_LINE: usize = 16;

/// Body bytes shown as a byte string, and as hex, on a human line.
const SHOW_BODY: usize = 24;
const SHOW_HEX: usize = 16;

/// Greeting bytes shown as hex: the signature, the version and the start
/// of the mechanism's name.
const SHOW_GREETING: usize = 25;

/// What the relay reports.
#[derive(Debug)]
pub enum Report {
    /// A connection came in and the relay reached the server.
    Open {
        /// The connection's number.
        conn: u64,
        /// The client's address.
        client: String,
        /// The server's address.
        server: String,
    },
    /// Decoded from one direction.
    Event {
        /// The connection's number.
        conn: u64,
        /// Who sent it.
        from: Side,
        /// What it was.
        event: Event,
    },
    /// A connection ended.
    Close {
        /// The connection's number.
        conn: u64,
        /// Why.
        why: Closed,
    },
}

/// Why a connection ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Closed {
    /// That side closed its connection.
    HungUp(Side),
    /// Reading from, or writing to, that side failed: the error.
    Failed(Side, String),
    /// The relay was asked to stop.
    Stopped,
    /// The server could not be reached for a new client.
    Unreachable {
        /// The server's address, as given.
        to: String,
        /// The client's address.
        client: String,
        /// Why it could not be reached.
        error: String,
    },
    /// The process is out of file descriptors.
    Descriptors,
}

impl Closed {
    /// In words, calling the sides by `names`: `the worker hung up`.
    pub fn text(&self, names: &[String; 2]) -> String {
        let name = |side: &Side| match side {
            Side::Client => &names[0],
            Side::Server => &names[1],
        };
        match self {
            Closed::HungUp(side) => format!("the {} hung up", name(side)),
            Closed::Failed(side, error) => {
                format!("the {}'s connection failed ({error})", name(side))
            }
            Closed::Stopped => "the relay stopped".into(),
            Closed::Unreachable { to, client, error } => format!(
                "the {} at {to} cannot be reached ({error}), so the {}'s connection from \
                 {client} was closed; it will try again",
                names[1], names[0]
            ),
            Closed::Descriptors => "out of file descriptors".into(),
        }
    }
}

/// How the lines look.
#[derive(Clone, Debug)]
pub struct Format {
    /// JSON lines instead of lines for people.
    pub json: bool,
    /// What to call the client and the server on lines for people (the
    /// JSON says `client` and `server`).
    pub names: [String; 2],
    /// Put before every line (`socket_pairs` puts `wire   `).
    pub prefix: String,
    /// Print connections opening and closing.
    pub connections: bool,
}

impl Default for Format {
    fn default() -> Format {
        Format {
            json: false,
            names: ["client".into(), "server".into()],
            prefix: String::new(),
            connections: true,
        }
    }
}

/// The relay's end of the queue: never waits.
#[derive(Clone, Debug)]
pub struct Reporter {
    queue: SyncSender<Report>,
    dropped: Arc<AtomicU64>,
}

impl Reporter {
    /// Queues `report`, or counts it as dropped if the queue is full.
    pub fn send(&self, report: Report) {
        if self.queue.try_send(report).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The printer thread.
pub struct Printer {
    thread: JoinHandle<()>,
    dropped: Arc<AtomicU64>,
}

impl Printer {
    /// Starts the printer, writing each line with `write`; returns it and
    /// the [`Reporter`] the relay gives its events to. The printer ends
    /// once every clone of the reporter is gone.
    pub fn start(format: Format, write: impl FnMut(&str) + Send + 'static) -> (Printer, Reporter) {
        let (queue, events) = mpsc::sync_channel(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&dropped);
        let thread = thread::Builder::new()
            .name("wire-printer".into())
            .spawn(move || print_all(events, format, write, &counted))
            .expect("starting the printer thread");
        let reporter = Reporter {
            queue,
            dropped: Arc::clone(&dropped),
        };
        (Printer { thread, dropped }, reporter)
    }

    /// Waits for the printer to print what it has (every reporter must be
    /// dropped first); returns how many events were dropped in all.
    pub fn finish(self) -> u64 {
        let _ = self.thread.join();
        self.dropped.load(Ordering::Relaxed)
    }
}

/// The printer thread's loop.
fn print_all(
    events: Receiver<Report>,
    format: Format,
    mut write: impl FnMut(&str),
    dropped: &AtomicU64,
) {
    let mut lines = Lines::new(format);
    let mut told = 0;
    let mut next_check = Instant::now() + Duration::from_secs(1);
    loop {
        match events.recv_timeout(Duration::from_millis(200)) {
            Ok(report) => {
                for line in lines.lines(report) {
                    write(&line);
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if Instant::now() >= next_check {
            next_check = Instant::now() + Duration::from_secs(1);
            let now = dropped.load(Ordering::Relaxed);
            if now > told {
                warn!(
                    "{} not printed: the printer fell behind and the relay did not wait for it \
                     (the bytes were relayed all the same)",
                    Count::new(now - told, "event")
                );
                told = now;
            }
        }
    }
    let now = dropped.load(Ordering::Relaxed);
    if now > told {
        warn!(
            "{} not printed: the printer fell behind and the relay did not wait for it (the \
             bytes were relayed all the same)",
            Count::new(now - told, "event")
        );
    }
}

/// Turns reports into lines, gathering the frames of each message.
pub struct Lines {
    format: Format,
    /// Frames of a message whose last frame has not come yet.
    pending: HashMap<(u64, Side), Vec<Frame>>,
}

impl Lines {
    /// Lines in `format`.
    pub fn new(format: Format) -> Lines {
        Lines {
            format,
            pending: HashMap::new(),
        }
    }

    /// The lines `report` completes (none, one, or a few).
    pub fn lines(&mut self, report: Report) -> Vec<String> {
        if self.format.json {
            return json(&report)
                .map(|value| format!("{}{value}", self.format.prefix))
                .into_iter()
                .collect();
        }
        let mut lines = Vec::new();
        match report {
            Report::Open {
                conn,
                client,
                server,
            } => {
                if self.format.connections {
                    let [client_name, server_name] = &self.format.names;
                    lines.push(format!(
                        "#{conn} {client_name} {client} connected; relayed to {server_name} {server}"
                    ));
                }
            }
            Report::Close { conn, why } => {
                // A message cut short by the close: show what came of it.
                for side in [Side::Client, Side::Server] {
                    if let Some(frames) = self.pending.remove(&(conn, side)) {
                        let head = self.head(conn, side);
                        lines.push(format!("{head}message, cut short  {}", message(&frames)));
                    }
                }
                if self.format.connections {
                    lines.push(format!("#{conn} closed: {}", why.text(&self.format.names)));
                }
            }
            Report::Event { conn, from, event } => {
                let head = self.head(conn, from);
                match event {
                    Event::Greeting(greeting) => {
                        lines.push(format!("{head}greeting  {}", describe_greeting(&greeting)));
                    }
                    Event::Command(command) => {
                        lines.push(format!("{head}{}", describe_command(&command)));
                    }
                    Event::Note(note) => lines.push(format!("{head}{note}")),
                    Event::Frame(frame) => {
                        let key = (conn, from);
                        let frames = self.pending.entry(key).or_default();
                        let last = !frame.more;
                        frames.push(frame);
                        if last || frames.len() == FRAMES_PER_LINE {
                            let frames = self.pending.remove(&key).unwrap_or_default();
                            let what = if frames[0].first {
                                "message"
                            } else {
                                "message, continued"
                            };
                            let more = if last { "" } else { " + ..." };
                            lines.push(format!("{head}{what}  {}{more}", message(&frames)));
                        }
                    }
                }
            }
        }
        lines
            .into_iter()
            .map(|line| format!("{}{line}", self.format.prefix))
            .collect()
    }

    /// `#1 client > server  `
    fn head(&self, conn: u64, from: Side) -> String {
        let [client, server] = &self.format.names;
        let (sender, receiver) = match from {
            Side::Client => (client, server),
            Side::Server => (server, client),
        };
        format!("#{conn} {sender} > {receiver}  ")
    }
}

/// `ZMTP 3.1, NULL, as-server 0  [ff 00 ... 64 bytes]`
fn describe_greeting(greeting: &Greeting) -> String {
    let mut text = format!("ZMTP {}", greeting.version);
    if let Some(mechanism) = &greeting.mechanism {
        let _ = write!(text, ", {mechanism}");
    }
    if let Some(as_server) = greeting.as_server {
        let _ = write!(text, ", as-server {as_server}");
    }
    if let Some(kind) = greeting.socket_type {
        let _ = write!(text, ", socket type {}", socket_type(kind));
    }
    if greeting.version == "2.0" {
        text.push_str(" (no commands; the first message is the socket's identity)");
    }
    let wire = &greeting.wire;
    let _ = write!(text, "  [{}]", cut_hex(wire, SHOW_GREETING, wire.len()));
    text
}

/// The name of a ZMTP socket type number (RFC 23 for 2.0's byte).
pub fn socket_type(kind: u8) -> String {
    let names = [
        "PAIR", "PUB", "SUB", "REQ", "REP", "DEALER", "ROUTER", "PULL", "PUSH", "XPUB", "XSUB",
        "STREAM",
    ];
    names
        .get(usize::from(kind))
        .map_or_else(|| format!("{kind} (unknown)"), |name| name.to_string())
}

/// `READY  Socket-Type=REQ Identity=  [04 26 05 ...]`
fn describe_command(command: &Command) -> String {
    let mut text = command.name.clone();
    match &command.detail {
        Detail::Properties(properties) => {
            text.push(' ');
            for (name, value) in properties {
                let _ = write!(text, " {name}={value}");
            }
        }
        Detail::PlainHello {
            username,
            password_len,
        } => {
            let _ = write!(
                text,
                "  username={username} password={} (in the clear on the wire; masked here)",
                "*".repeat(*password_len)
            );
        }
        Detail::Ping { ttl, context } => {
            let _ = write!(
                text,
                "  ttl {}.{} s, context {}",
                ttl / 10,
                ttl % 10,
                show(context)
            );
        }
        Detail::Pong { context } => {
            let _ = write!(text, "  context {}", show(context));
        }
        Detail::Error { reason } => {
            let _ = write!(text, "  reason \"{reason}\"");
        }
        Detail::Topic(topic) => {
            let _ = write!(text, "  topic {}", show(topic));
        }
        Detail::Encrypted => {
            let _ = write!(text, "  (encrypted, {} bytes)", command.size);
        }
        Detail::Empty => text.push_str("  (empty)"),
        Detail::Unknown => {
            let _ = write!(
                text,
                "  (a command this relay does not know, {} bytes)",
                command.size
            );
        }
        Detail::TooLarge => {
            let _ = write!(text, "  ({} bytes: too large to decode here)", command.size);
        }
        Detail::Malformed(why) => {
            let _ = write!(text, "  (malformed: {why})");
        }
    }
    let header = header_len(&command.wire);
    let total = (header as u64).saturating_add(command.size);
    let total = usize::try_from(total).unwrap_or(usize::MAX);
    let shown = header + SHOW_HEX;
    let _ = write!(text, "  [{}]", cut_hex(&command.wire, shown, total));
    text
}

/// A message's frames on one line: `b"" (MORE, 0 bytes: 01 00) + ...`.
fn message(frames: &[Frame]) -> String {
    let mut text = String::new();
    for (i, frame) in frames.iter().enumerate() {
        if i > 0 {
            text.push_str(" + ");
        }
        let head = &frame.head[..frame.head.len().min(SHOW_BODY)];
        let _ = write!(text, "{}", show(head));
        if frame.size > head.len() as u64 {
            text.push_str("...");
        }
        text.push_str(" (");
        if frame.more {
            text.push_str("MORE, ");
        }
        if frame.long {
            text.push_str("LONG, ");
        }
        let wire = frame.wire();
        let total = (frame.header.len() as u64).saturating_add(frame.size);
        let _ = write!(
            text,
            "{}: {})",
            Count::new(frame.size, "byte"),
            cut_hex(
                &wire,
                frame.header.len() + SHOW_HEX,
                usize::try_from(total).unwrap_or(usize::MAX)
            )
        );
    }
    text
}

/// The header's length in a frame's bytes (2, or 9 when LONG).
fn header_len(wire: &[u8]) -> usize {
    match wire.first() {
        Some(flags) if flags & 0x02 != 0 => 9,
        _ => 2,
    }
}

/// Hex of the first `shown` of `bytes`, with the total length when that
/// is not all: `02 00 ... 41 41 ... 1009 bytes`.
fn cut_hex(bytes: &[u8], shown: usize, total: usize) -> String {
    let shown = shown.min(bytes.len());
    if shown >= total {
        spaced_hex(&bytes[..total.min(bytes.len())]).to_string()
    } else {
        format!("{} ... {total} bytes", spaced_hex(&bytes[..shown]))
    }
}

/// One event as a JSON object (`None` for nothing to say):
///
/// `{"conn": 1, "from": "client", "kind": "frame", "more": true, "long":
/// false, "size": 0, "hex": ""}`
///
/// `kind` is `greeting` (with `version`, and `mechanism` and `as_server`
/// for ZMTP 3, `socket_type` for 2.0), `command` (`name`, and
/// `properties`, `username`/`password_len`, `ttl`/`context`, `reason`,
/// `topic`, `encrypted` as they apply), `frame` (`more`, `long`), `note`
/// (`text`), `open` (`client`, `server`: addresses) or `close` (`text`).
/// `size` is the body's size and `hex` the body in hex, cut at 64 bytes (a
/// greeting's `hex` is the whole greeting; PLAIN's password is masked).
pub fn json(report: &Report) -> Option<Value> {
    let mut object = Map::new();
    match report {
        Report::Open {
            conn,
            client,
            server,
        } => {
            object.insert("conn".into(), json!(conn));
            object.insert("kind".into(), json!("open"));
            object.insert("client".into(), json!(client));
            object.insert("server".into(), json!(server));
        }
        Report::Close { conn, why } => {
            object.insert("conn".into(), json!(conn));
            object.insert("kind".into(), json!("close"));
            let names = ["client".to_string(), "server".to_string()];
            object.insert("text".into(), json!(why.text(&names)));
        }
        Report::Event { conn, from, event } => {
            object.insert("conn".into(), json!(conn));
            object.insert("from".into(), json!(from.as_str()));
            match event {
                Event::Greeting(greeting) => {
                    object.insert("kind".into(), json!("greeting"));
                    object.insert("version".into(), json!(greeting.version));
                    if let Some(mechanism) = &greeting.mechanism {
                        object.insert("mechanism".into(), json!(mechanism));
                    }
                    if let Some(as_server) = greeting.as_server {
                        object.insert("as_server".into(), json!(as_server));
                    }
                    if let Some(kind) = greeting.socket_type {
                        object.insert("socket_type".into(), json!(socket_type(kind)));
                    }
                    object.insert("size".into(), json!(greeting.wire.len()));
                    object.insert("hex".into(), json!(hex(&greeting.wire)));
                }
                Event::Command(command) => {
                    object.insert("kind".into(), json!("command"));
                    object.insert("name".into(), json!(command.name));
                    match &command.detail {
                        Detail::Properties(properties) => {
                            let map: Map<String, Value> = properties
                                .iter()
                                .map(|(name, value)| (name.clone(), json!(value)))
                                .collect();
                            object.insert("properties".into(), Value::Object(map));
                        }
                        Detail::PlainHello {
                            username,
                            password_len,
                        } => {
                            object.insert("username".into(), json!(username));
                            object.insert("password_len".into(), json!(password_len));
                        }
                        Detail::Ping { ttl, context } => {
                            object.insert("ttl".into(), json!(ttl));
                            object.insert("context".into(), json!(hex(context)));
                        }
                        Detail::Pong { context } => {
                            object.insert("context".into(), json!(hex(context)));
                        }
                        Detail::Error { reason } => {
                            object.insert("reason".into(), json!(reason));
                        }
                        Detail::Topic(topic) => {
                            object.insert("topic".into(), json!(hex(topic)));
                        }
                        Detail::Encrypted => {
                            object.insert("encrypted".into(), json!(true));
                        }
                        Detail::Malformed(why) => {
                            object.insert("malformed".into(), json!(why));
                        }
                        Detail::Empty | Detail::Unknown | Detail::TooLarge => {}
                    }
                    object.insert("size".into(), json!(command.size));
                    let body = &command.wire[header_len(&command.wire).min(command.wire.len())..];
                    object.insert("hex".into(), json!(hex(body)));
                }
                Event::Frame(frame) => {
                    object.insert("kind".into(), json!("frame"));
                    object.insert("more".into(), json!(frame.more));
                    object.insert("long".into(), json!(frame.long));
                    object.insert("size".into(), json!(frame.size));
                    object.insert("hex".into(), json!(hex(&frame.head)));
                }
                Event::Note(note) => {
                    object.insert("kind".into(), json!("note"));
                    object.insert("text".into(), json!(note));
                }
            }
        }
    }
    Some(Value::Object(object))
}

/// Lower-case hex, no spaces.
fn hex(bytes: &[u8]) -> String {
    crate::envelope::hex(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(more: bool, first: bool, body: &[u8]) -> Report {
        Report::Event {
            conn: 1,
            from: Side::Client,
            event: Event::Frame(Frame {
                more,
                long: false,
                size: body.len() as u64,
                header: vec![u8::from(more), body.len() as u8],
                head: body.to_vec(),
                first,
            }),
        }
    }

    #[test]
    fn the_frames_of_a_message_share_a_line() {
        let mut lines = Lines::new(Format::default());
        assert!(lines.lines(frame(true, true, b"")).is_empty());
        assert_eq!(
            lines.lines(frame(false, false, b"Hello")),
            vec![
                "#1 client > server  message  b\"\" (MORE, 0 bytes: 01 00) + b\"Hello\" \
                 (5 bytes: 00 05 48 65 6c 6c 6f)"
                    .to_string()
            ]
        );
    }

    #[test]
    fn json_frames_say_what_the_issue_says() {
        let value = json(&frame(true, true, b"")).unwrap();
        assert_eq!(
            value,
            json!({"conn": 1, "from": "client", "kind": "frame", "more": true, "long": false, "size": 0, "hex": ""})
        );
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let (done, wait) = mpsc::channel::<()>();
        let (printer, reporter) = Printer::start(Format::default(), move |_| {
            // A printer that cannot print until told.
            let _ = wait.recv_timeout(Duration::from_secs(10));
        });
        let started = Instant::now();
        for _ in 0..QUEUE * 2 + 10 {
            reporter.send(frame(false, true, b"x"));
        }
        assert!(started.elapsed() < Duration::from_secs(5));
        drop(reporter);
        for _ in 0..QUEUE * 3 {
            let _ = done.send(());
        }
        let dropped = printer.finish();
        assert!(dropped >= QUEUE as u64 - 1, "{dropped} dropped");
    }
}
