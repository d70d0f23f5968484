//! The ZMTP decoder: bytes in, events out, one connection at a time.
//!
//! A [`Conversation`] is fed the bytes of each direction as they pass, in
//! chunks of any size, and reports what they are ([`Event`]): each side's
//! greeting, its handshake and control commands, and every message frame.
//! It is a pure state machine: no sockets, no clock, no threads. However
//! the bytes are cut, the same bytes give the same events.
//!
//! What a ZeroMQ connection carries (ZMTP 3.0 and 3.1, RFC 23 and 37):
//!
//! - a **greeting** of 64 bytes from each side: the signature `ff`, 8
//!   padding bytes and `7f`; the version (3, then 0 or 1); the security
//!   mechanism (`NULL`, `PLAIN`, `CURVE`) padded with zeros to 20 bytes; the
//!   as-server flag; 31 bytes of filler;
//! - **commands** (flag bit 2 set): `READY` with the socket's properties
//!   (`Socket-Type=REQ`), `PING`/`PONG` heartbeats, `ERROR`, and the
//!   handshakes of PLAIN (`HELLO`, `WELCOME`, `INITIATE`, `READY`) and CURVE;
//! - **frames**: a flags byte (bit 0 MORE: another frame of the same message
//!   follows; bit 1 LONG: the size takes 8 bytes instead of 1), the size,
//!   the body. A message is its frames up to the first without MORE.
//!
//! libzmq 4.3 (src/zmtp_engine.cpp) sends its greeting in steps: the first
//! 10 bytes at once, the version's major number once it has the peer's
//! signature, and the rest only once it knows the peer's major version. A
//! peer announcing ZMTP 2.0 (revision 1) or 1.0 (revision 0) gets a 12-byte
//! greeting ending in the socket type, and then frames in that older
//! format. So one direction's bytes can only be read knowing what the other
//! direction announced: the decoder sees both, and waits, holding at most
//! the 64 greeting bytes, when a greeting arrives before the other side's
//! version. ZMTP 2.0 frames are decoded (they are ZMTP 3's without commands,
//! and the first message is the socket's identity); ZMTP 1.0 and anything
//! that is not ZeroMQ get one [`Event::Note`] and are no longer decoded.
//!
//! Memory is bounded whatever a peer sends: the greeting (64 bytes), a
//! frame's header (9), the first [`SHOWN`] bytes of a frame's body, a whole
//! command up to [`COMMAND_LIMIT`] bytes (of a larger one, its first
//! [`SHOWN`]). A body is never kept beyond that: a 100 MB frame, or one
//! announcing 2^63 bytes, passes through and is reported by its size and
//! its first bytes. [`Conversation::buffered`] says how much is held.

use std::fmt;

/// Body bytes kept of each frame, to show (and the JSON `hex`).
pub const SHOWN: usize = 64;

/// Commands up to this size are decoded whole; larger ones by name only.
pub const COMMAND_LIMIT: usize = 4096;

/// Frames announcing more than this get a note of their own when their
/// header passes (their line comes once their first bytes are in).
pub const LARGE_FRAME: u64 = 1 << 20;

/// A ZMTP 3 greeting's length; ZMTP 2.0's is [`SHORT_GREETING`].
pub const GREETING: usize = 64;

/// The signature, the revision and the socket type: ZMTP 1.0 and 2.0.
pub const SHORT_GREETING: usize = 12;

/// The signature: `ff`, 8 bytes of padding, `7f`.
const SIGNATURE: usize = 10;

/// The most [`Conversation::buffered`] can ever report: both directions'
/// greetings and headers, and a whole command in each.
pub const MAX_BUFFERED: usize = 2 * (GREETING + 9 + COMMAND_LIMIT);

/// Flag bits of a frame (RFC 23).
const MORE: u8 = 0x01;
const LONG: u8 = 0x02;
const COMMAND: u8 = 0x04;

/// Which side of the relayed connection sent the bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    /// The side that connected to the relay.
    Client,
    /// The side the relay connected to (`--to`).
    Server,
}

impl Side {
    /// The other side.
    pub fn other(self) -> Side {
        match self {
            Side::Client => Side::Server,
            Side::Server => Side::Client,
        }
    }

    /// `client` or `server`, as the JSON says it.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Server => "server",
        }
    }

    fn index(self) -> usize {
        match self {
            Side::Client => 0,
            Side::Server => 1,
        }
    }
}

/// What passed, as the decoder understood it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A side's greeting.
    Greeting(Greeting),
    /// A command: handshake, heartbeat, error, subscription.
    Command(Command),
    /// A message frame.
    Frame(Frame),
    /// One line about the stream itself: not ZeroMQ, an older version, a
    /// frame too large to keep, a greeting cut short.
    Note(String),
}

/// A greeting, and what it tells about the rest of the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Greeting {
    /// The greeting's bytes, as sent (12 or 64).
    pub wire: Vec<u8>,
    /// The ZMTP version this side speaks from here on: `3.1`, `3.0`, `2.0`.
    pub version: String,
    /// The security mechanism (ZMTP 3 only).
    pub mechanism: Option<String>,
    /// The as-server byte (ZMTP 3 only). libzmq 4.3 always sends 0.
    pub as_server: Option<u8>,
    /// The socket type byte of a 12-byte greeting (ZMTP 1.0 and 2.0).
    pub socket_type: Option<u8>,
}

/// A command frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    /// Its name (`READY`), escaped if it is not plain text.
    pub name: String,
    /// The body's size, name included.
    pub size: u64,
    /// The frame as it went on the wire: header, then up to [`SHOWN`] bytes
    /// of the body.
    pub wire: Vec<u8>,
    /// What the body says.
    pub detail: Detail,
}

/// What a command's body says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Detail {
    /// Properties (READY; PLAIN's INITIATE): name and value, the value
    /// escaped as text and cut to [`SHOWN`] bytes.
    Properties(Vec<(String, String)>),
    /// PLAIN's HELLO: the user name in the clear, and the password's length
    /// (the password is on the wire in the clear too, but not shown here).
    PlainHello {
        /// The user name, escaped.
        username: String,
        /// How many bytes the password has.
        password_len: usize,
    },
    /// A heartbeat: the time to live (in tenths of a second) and the
    /// context the PONG must echo.
    Ping {
        /// Tenths of a second.
        ttl: u16,
        /// Up to 16 bytes.
        context: Vec<u8>,
    },
    /// The answer to a PING: its context.
    Pong {
        /// The PING's context.
        context: Vec<u8>,
    },
    /// The reason the other side gave up on the handshake (`400`).
    Error {
        /// The reason, escaped.
        reason: String,
    },
    /// SUBSCRIBE or CANCEL (ZMTP 3.1's PUB-SUB): the topic.
    Topic(Vec<u8>),
    /// CURVE: boxes and keys, nothing readable: its size only.
    Encrypted,
    /// A command with no body (PLAIN's WELCOME).
    Empty,
    /// A name this decoder does not know: its size only.
    Unknown,
    /// Larger than [`COMMAND_LIMIT`]: not decoded.
    TooLarge,
    /// Its body does not follow the command's layout.
    Malformed(String),
}

/// A message frame, reported once its first [`SHOWN`] bytes are in (at its
/// end, for a frame that small).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Another frame of the same message follows.
    pub more: bool,
    /// The size took 8 bytes (LONG).
    pub long: bool,
    /// The body's size.
    pub size: u64,
    /// The flags byte and the size, as sent (2 or 9 bytes).
    pub header: Vec<u8>,
    /// The body's first [`SHOWN`] bytes (all of it, if that small).
    pub head: Vec<u8>,
    /// The first frame of its message.
    pub first: bool,
}

impl Frame {
    /// The header and the bytes of the body kept: what went on the wire,
    /// cut after [`SHOWN`] bytes of body.
    pub fn wire(&self) -> Vec<u8> {
        [self.header.as_slice(), &self.head].concat()
    }
}

/// Both directions of one connection.
#[derive(Debug, Default)]
pub struct Conversation {
    sides: [Direction; 2],
}

/// How one direction's frames are laid out, once its greeting is over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mechanism {
    Null,
    Plain,
    Curve,
    Other,
}

#[derive(Debug, Default)]
enum State {
    /// Reading the greeting.
    #[default]
    Greeting,
    /// Expecting a frame's flags byte.
    Flags,
    /// Reading a frame's size (1 or 8 bytes).
    Size,
    /// Inside a frame's body.
    Body,
    /// No longer decoded: the bytes only pass.
    Opaque,
}

#[derive(Debug, Default)]
struct Direction {
    state: State,
    greeting: Vec<u8>,
    /// The revision byte of this side's greeting, once in.
    revision: Option<u8>,
    /// Whether the greeting waits for the other side's revision.
    waiting: bool,
    mechanism: Option<Mechanism>,
    /// The frame being read.
    header: Vec<u8>,
    size: u64,
    remaining: u64,
    body: Vec<u8>,
    /// How much of the body to keep: all of a command up to the limit,
    /// the head of anything else.
    keep: usize,
    reported: bool,
    /// The next frame starts a message.
    at_message_start: bool,
}

impl Conversation {
    /// A connection on which nothing has passed yet.
    pub fn new() -> Conversation {
        Conversation::default()
    }

    /// Decodes `bytes`, sent by `from`, reporting each event to `out`.
    /// Events of the other side may come too: a greeting that waited for
    /// this side's version.
    pub fn feed(&mut self, from: Side, bytes: &[u8], out: &mut impl FnMut(Side, Event)) {
        let mut rest = bytes;
        while !rest.is_empty() {
            let used = self.step(from, rest, out);
            rest = &rest[used..];
        }
    }

    /// `from` closed its side: a greeting it left unfinished is reported.
    pub fn finish(&mut self, from: Side, out: &mut impl FnMut(Side, Event)) {
        let side = &mut self.sides[from.index()];
        if matches!(side.state, State::Greeting) && !side.greeting.is_empty() {
            let got = side.greeting.len();
            side.state = State::Opaque;
            out(
                from,
                Event::Note(format!(
                    "hung up after {got} bytes of greeting ({}): no ZMTP handshake",
                    spaced_hex(&side.greeting)
                )),
            );
        }
    }

    /// Bytes held for decoding, both directions together: never more than
    /// [`MAX_BUFFERED`].
    pub fn buffered(&self) -> usize {
        self.sides
            .iter()
            .map(|side| side.greeting.capacity() + side.header.capacity() + side.body.capacity())
            .sum()
    }

    /// Decodes from the start of `bytes`; returns how many it used (at
    /// least one).
    fn step(&mut self, from: Side, bytes: &[u8], out: &mut impl FnMut(Side, Event)) -> usize {
        let peer_revision = self.sides[from.other().index()].revision;
        let side = &mut self.sides[from.index()];
        match side.state {
            State::Greeting => {
                let before = side.revision;
                let used = side.greeting_bytes(bytes, peer_revision, from, out);
                // This side's version just came: a greeting of the other side
                // that waited for it can now be read.
                if before.is_none() && side.revision.is_some() {
                    self.resume(from.other(), out);
                }
                used
            }
            State::Flags => {
                side.header.clear();
                side.header.push(bytes[0]);
                side.state = State::Size;
                1
            }
            State::Size => {
                let flags = side.header[0];
                let need = if flags & LONG != 0 { 9 } else { 2 };
                let take = (need - side.header.len()).min(bytes.len());
                side.header.extend_from_slice(&bytes[..take]);
                if side.header.len() == need {
                    side.start_body(from, out);
                }
                take
            }
            State::Body => {
                let take = usize::try_from(side.remaining)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                let room = side.keep - side.body.len();
                side.body.extend_from_slice(&bytes[..take.min(room)]);
                side.remaining -= take as u64;
                side.progress(from, out);
                take
            }
            State::Opaque => bytes.len(),
        }
    }

    /// Reads a greeting that waited for the other side's version.
    fn resume(&mut self, side: Side, out: &mut impl FnMut(Side, Event)) {
        let peer_revision = self.sides[side.other().index()].revision;
        let this = &mut self.sides[side.index()];
        if !this.waiting {
            return;
        }
        this.waiting = false;
        let held = std::mem::take(&mut this.greeting);
        this.greeting = Vec::with_capacity(GREETING);
        // Fed again from the start, now that the other side's version is
        // known; bytes past the greeting are frames.
        let mut rest = held.as_slice();
        while !rest.is_empty() {
            let used = match self.sides[side.index()].state {
                State::Greeting => {
                    self.sides[side.index()].greeting_bytes(rest, peer_revision, side, out)
                }
                _ => {
                    let remaining = rest.to_vec();
                    self.feed(side, &remaining, out);
                    rest.len()
                }
            };
            rest = &rest[used..];
        }
    }
}

impl Direction {
    /// Takes greeting bytes; returns how many it used.
    fn greeting_bytes(
        &mut self,
        bytes: &[u8],
        peer_revision: Option<u8>,
        from: Side,
        out: &mut impl FnMut(Side, Event),
    ) -> usize {
        if self.greeting.capacity() == 0 {
            self.greeting.reserve_exact(GREETING);
        }
        let mut used = 0;
        while used < bytes.len() && self.greeting.len() < GREETING {
            self.greeting.push(bytes[used]);
            used += 1;
            if self.decide(peer_revision, from, out) {
                return used;
            }
        }
        used
    }

    /// Looks at the greeting so far: `true` once it is over (decoded, or
    /// given up on).
    fn decide(
        &mut self,
        peer_revision: Option<u8>,
        from: Side,
        out: &mut impl FnMut(Side, Event),
    ) -> bool {
        let g = &self.greeting;
        let got = g.len();
        if got < SIGNATURE {
            return false;
        }
        if got == SIGNATURE {
            if g[0] != 0xff {
                let text = crate::payload::text(g);
                return self.give_up(
                    from,
                    out,
                    format!(
                        "not ZMTP 3 or 2.0: the first bytes are {} (\"{text}\"), not the \
                         signature ff ... 7f; libzmq would take them for ZMTP 1.0. Relayed, \
                         not decoded",
                        spaced_hex(g)
                    ),
                );
            }
            if g[9] & 0x01 == 0 {
                return self.give_up(
                    from,
                    out,
                    format!(
                        "ZMTP 1.0 without a version (first bytes {}): relayed, not decoded",
                        spaced_hex(g)
                    ),
                );
            }
            return false;
        }
        let revision = g[SIGNATURE];
        self.revision = Some(revision);
        if got < SHORT_GREETING {
            return false;
        }
        // How long is this greeting, and what follows it?
        let short = match (revision, peer_revision) {
            (0 | 1, _) => true,
            // libzmq answers an older peer in the older format.
            (_, Some(0 | 1)) => true,
            (_, Some(_)) => false,
            // Not known yet: wait for it, unless the whole ZMTP 3 greeting
            // is here already (a peer that sends it all at once).
            (_, None) => {
                if got < GREETING {
                    self.waiting = true;
                    return false;
                }
                false
            }
        };
        if short {
            let speaks = match (revision, peer_revision) {
                (0, _) | (_, Some(0)) => "1.0",
                _ => "2.0",
            };
            self.waiting = false;
            let greeting = Greeting {
                wire: g.clone(),
                version: speaks.into(),
                mechanism: None,
                as_server: None,
                socket_type: Some(g[11]),
            };
            out(from, Event::Greeting(greeting));
            if revision >= 2 {
                out(
                    from,
                    Event::Note(format!(
                        "speaks ZMTP 3 but answers a ZMTP {speaks} peer in {speaks}: its \
                         greeting ends with its socket type"
                    )),
                );
            }
            if speaks == "1.0" {
                self.state = State::Opaque;
                out(
                    from,
                    Event::Note("ZMTP 1.0 frames: relayed, not decoded".into()),
                );
            } else {
                self.mechanism = Some(Mechanism::Null);
                self.start_frames();
            }
            return true;
        }
        if got < GREETING {
            return false;
        }
        self.waiting = false;
        let name_bytes: Vec<u8> = g[12..32]
            .iter()
            .copied()
            .take_while(|&byte| byte != 0)
            .collect();
        let mechanism = crate::payload::text(&name_bytes).to_string();
        self.mechanism = Some(match mechanism.as_str() {
            "NULL" => Mechanism::Null,
            "PLAIN" => Mechanism::Plain,
            "CURVE" => Mechanism::Curve,
            _ => Mechanism::Other,
        });
        let minor = g[11];
        let version = match revision {
            3 => format!("3.{minor}"),
            // libzmq reads any other revision as ZMTP 3.1.
            other => format!("3.1 (revision {other})"),
        };
        let greeting = Greeting {
            wire: g.clone(),
            version,
            mechanism: Some(mechanism),
            as_server: Some(g[32]),
            socket_type: None,
        };
        out(from, Event::Greeting(greeting));
        self.start_frames();
        true
    }

    fn give_up(&mut self, from: Side, out: &mut impl FnMut(Side, Event), note: String) -> bool {
        self.state = State::Opaque;
        out(from, Event::Note(note));
        true
    }

    fn start_frames(&mut self) {
        self.state = State::Flags;
        self.at_message_start = true;
        self.header.reserve_exact(9);
    }

    /// The header is in: size the body and see what to keep of it.
    fn start_body(&mut self, from: Side, out: &mut impl FnMut(Side, Event)) {
        let flags = self.header[0];
        self.size = if flags & LONG != 0 {
            u64::from_be_bytes(self.header[1..9].try_into().unwrap_or([0; 8]))
        } else {
            u64::from(self.header[1])
        };
        self.remaining = self.size;
        let limit = if flags & COMMAND != 0 && self.size <= COMMAND_LIMIT as u64 {
            COMMAND_LIMIT
        } else {
            SHOWN
        };
        self.keep = usize::try_from(self.size).unwrap_or(usize::MAX).min(limit);
        self.body = Vec::with_capacity(self.keep);
        self.reported = false;
        self.state = State::Body;
        if self.size > LARGE_FRAME {
            let what = if flags & COMMAND != 0 {
                "command"
            } else {
                "frame"
            };
            out(
                from,
                Event::Note(format!(
                    "a {what} of {} bytes: relayed as it passes, only its first {SHOWN} bytes \
                     kept, to show",
                    self.size
                )),
            );
        }
        self.progress(from, out);
    }

    /// Reports the frame once enough of it is in; moves on at its end.
    fn progress(&mut self, from: Side, out: &mut impl FnMut(Side, Event)) {
        if !self.reported && self.body.len() == self.keep {
            self.reported = true;
            let event = self.event();
            out(from, event);
        }
        if self.remaining == 0 {
            let flags = self.header[0];
            if flags & COMMAND == 0 {
                self.at_message_start = flags & MORE == 0;
            }
            self.body = Vec::new();
            self.state = State::Flags;
        }
    }

    /// The event for the frame being read, from what is kept of it.
    fn event(&self) -> Event {
        let flags = self.header[0];
        let mechanism = self.mechanism.unwrap_or(Mechanism::Other);
        let wire = [
            self.header.as_slice(),
            &self.body[..self.body.len().min(SHOWN)],
        ]
        .concat();
        if flags & COMMAND != 0 {
            return Event::Command(command(&self.body, self.size, wire, mechanism));
        }
        // libzmq 4.3 sends CURVE's MESSAGE as a plain frame whose body
        // starts with the command's name: the real frames are inside.
        if mechanism == Mechanism::Curve && self.body.starts_with(b"\x07MESSAGE") {
            return Event::Command(Command {
                name: "MESSAGE".into(),
                size: self.size,
                wire,
                detail: Detail::Encrypted,
            });
        }
        Event::Frame(Frame {
            more: flags & MORE != 0,
            long: flags & LONG != 0,
            size: self.size,
            header: self.header.clone(),
            head: self.body[..self.body.len().min(SHOWN)].to_vec(),
            first: self.at_message_start,
        })
    }
}

/// Decodes a command's body (whole, or its first bytes if it is larger
/// than [`COMMAND_LIMIT`]).
fn command(body: &[u8], size: u64, mut wire: Vec<u8>, mechanism: Mechanism) -> Command {
    let whole = body.len() as u64 == size;
    let (name, data) = match body.split_first() {
        Some((&len, rest)) if rest.len() >= len as usize => {
            let (name, data) = rest.split_at(len as usize);
            (crate::payload::text(name).to_string(), data)
        }
        _ => {
            return Command {
                name: "?".into(),
                size,
                wire,
                detail: Detail::Malformed("no command name".into()),
            };
        }
    };
    let detail = if !whole {
        Detail::TooLarge
    } else {
        match (name.as_str(), mechanism) {
            ("READY", Mechanism::Curve)
            | ("HELLO" | "WELCOME" | "INITIATE", Mechanism::Curve)
            | ("MESSAGE", _) => Detail::Encrypted,
            ("READY", _) | ("INITIATE", Mechanism::Plain) => properties(data),
            ("HELLO", Mechanism::Plain) => {
                let detail = plain_hello(data);
                if let Detail::PlainHello { password_len, .. } = &detail {
                    // The password travels in the clear; it is not shown.
                    let header = if wire[0] & LONG != 0 { 9 } else { 2 };
                    let start = header + body.len() - password_len;
                    for byte in wire.iter_mut().skip(start) {
                        *byte = b'*';
                    }
                }
                detail
            }
            ("WELCOME", Mechanism::Plain) if data.is_empty() => Detail::Empty,
            ("ERROR", _) => match data.split_first() {
                Some((&len, reason)) if reason.len() == len as usize => Detail::Error {
                    reason: crate::payload::text(reason).to_string(),
                },
                _ => Detail::Malformed("the reason's length does not match".into()),
            },
            ("PING", _) if data.len() >= 2 => Detail::Ping {
                ttl: u16::from_be_bytes([data[0], data[1]]),
                context: data[2..].to_vec(),
            },
            ("PONG", _) => Detail::Pong {
                context: data.to_vec(),
            },
            ("SUBSCRIBE" | "CANCEL", _) => Detail::Topic(data.to_vec()),
            _ => Detail::Unknown,
        }
    };
    Command {
        name,
        size,
        wire,
        detail,
    }
}

/// ZMTP properties: a 1-byte name length, the name, a 4-byte value length
/// (network order), the value; again and again.
fn properties(mut data: &[u8]) -> Detail {
    let mut found = Vec::new();
    while let Some((&len, rest)) = data.split_first() {
        let Some((name, rest)) = rest.split_at_checked(len as usize) else {
            return Detail::Malformed("a property name runs past the end".into());
        };
        let Some((value_len, rest)) = rest.split_at_checked(4) else {
            return Detail::Malformed("a property has no value length".into());
        };
        let value_len =
            u32::from_be_bytes([value_len[0], value_len[1], value_len[2], value_len[3]]);
        let Some((value, rest)) = rest.split_at_checked(value_len as usize) else {
            return Detail::Malformed("a property value runs past the end".into());
        };
        found.push((
            crate::payload::text(name).to_string(),
            crate::payload::text(value).to_string(),
        ));
        data = rest;
    }
    Detail::Properties(found)
}

/// PLAIN's HELLO: user name and password, each after a 1-byte length.
fn plain_hello(data: &[u8]) -> Detail {
    let Some((&len, rest)) = data.split_first() else {
        return Detail::Malformed("no user name".into());
    };
    let Some((username, rest)) = rest.split_at_checked(len as usize) else {
        return Detail::Malformed("the user name runs past the end".into());
    };
    match rest.split_first() {
        Some((&len, password)) if password.len() == len as usize => Detail::PlainHello {
            username: crate::payload::text(username).to_string(),
            password_len: password.len(),
        },
        _ => Detail::Malformed("the password's length does not match".into()),
    }
}

/// `ff 00 7f`: bytes as hex, spaced.
pub fn spaced_hex(bytes: &[u8]) -> SpacedHex<'_> {
    SpacedHex(bytes)
}

/// Displays bytes as two hex digits each, separated by spaces.
pub struct SpacedHex<'a>(&'a [u8]);

impl fmt::Display for SpacedHex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, byte) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn greeting(mechanism: &str, minor: u8) -> Vec<u8> {
        let mut g = vec![0xff, 0, 0, 0, 0, 0, 0, 0, 1, 0x7f, 3, minor];
        let mut name = mechanism.as_bytes().to_vec();
        name.resize(20, 0);
        g.extend(name);
        g.push(0);
        g.resize(64, 0);
        g
    }

    fn run(chunks: &[(Side, &[u8])]) -> Vec<(Side, Event)> {
        let mut conversation = Conversation::new();
        let mut events = Vec::new();
        for (side, bytes) in chunks {
            conversation.feed(*side, bytes, &mut |side, event| events.push((side, event)));
        }
        events
    }

    #[test]
    fn a_req_greeting_ready_and_two_frames() {
        let ready =
            b"\x04\x26\x05READY\x0bSocket-Type\x00\x00\x00\x03REQ\x08Identity\x00\x00\x00\x00";
        let mut stream = greeting("NULL", 1);
        stream.extend_from_slice(&ready[..]);
        stream.extend_from_slice(b"\x01\x00\x00\x05Hello");
        let events = run(&[
            (Side::Server, &greeting("NULL", 1)),
            (Side::Client, &stream),
        ]);
        let client: Vec<&Event> = events
            .iter()
            .filter(|(side, _)| *side == Side::Client)
            .map(|(_, e)| e)
            .collect();
        assert_eq!(client.len(), 4, "{events:#?}");
        let Event::Greeting(g) = client[0] else {
            panic!()
        };
        assert_eq!(g.version, "3.1");
        assert_eq!(g.mechanism.as_deref(), Some("NULL"));
        let Event::Command(c) = client[1] else {
            panic!()
        };
        assert_eq!(c.name, "READY");
        assert_eq!(
            c.detail,
            Detail::Properties(vec![
                ("Socket-Type".into(), "REQ".into()),
                ("Identity".into(), String::new())
            ])
        );
        let Event::Frame(delimiter) = client[2] else {
            panic!()
        };
        assert!(delimiter.more && delimiter.first && delimiter.size == 0);
        assert_eq!(delimiter.wire(), [1, 0]);
        let Event::Frame(body) = client[3] else {
            panic!()
        };
        assert!(!body.more && !body.first);
        assert_eq!(body.head, b"Hello");
    }

    #[test]
    fn a_greeting_waits_for_the_other_sides_version() {
        // The server sends everything at once before the client has said
        // anything: nothing can be decided until the client's version.
        let mut server = greeting("NULL", 1);
        server.truncate(40);
        let events = run(&[(Side::Server, &server)]);
        assert!(events.is_empty(), "{events:?}");
        let mut conversation = Conversation::new();
        let mut events = Vec::new();
        conversation.feed(Side::Server, &server, &mut |s, e| events.push((s, e)));
        // A ZMTP 2.0 client: the server's first 12 bytes were its greeting.
        conversation.feed(
            Side::Client,
            b"\xff\0\0\0\0\0\0\0\x01\x7f\x01\x03",
            &mut |s, e| events.push((s, e)),
        );
        let greetings: Vec<&Greeting> = events
            .iter()
            .filter_map(|(_, e)| match e {
                Event::Greeting(g) => Some(g),
                _ => None,
            })
            .collect();
        assert_eq!(greetings.len(), 2, "{events:#?}");
        assert!(greetings.iter().all(|g| g.version == "2.0"));
    }

    #[test]
    fn absurd_sizes_keep_only_the_head() {
        let mut stream = greeting("NULL", 1);
        stream.extend_from_slice(&[0x02, 0x80, 0, 0, 0, 0, 0, 0, 0]);
        stream.extend(std::iter::repeat_n(b'x', 100_000));
        let mut conversation = Conversation::new();
        let mut events = Vec::new();
        conversation.feed(Side::Server, &greeting("NULL", 1), &mut |_, _| {});
        conversation.feed(Side::Client, &stream, &mut |_, e| events.push(e));
        assert!(conversation.buffered() <= MAX_BUFFERED);
        assert!(
            matches!(&events[1], Event::Note(n) if n.contains("9223372036854775808 bytes")),
            "{events:?}"
        );
        assert!(matches!(&events[2], Event::Frame(f) if f.head.len() == SHOWN && f.long));
    }

    #[test]
    fn not_zeromq_is_said_once() {
        let events = run(&[(Side::Client, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")]);
        assert_eq!(events.len(), 1);
        assert!(matches!(&events[0].1, Event::Note(n) if n.contains("GET / HTT")));
    }
}
