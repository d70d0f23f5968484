//! Command-line options shared by several roles.
//!
//! Every option also reads an environment variable named after it in upper
//! snake case (`--interval-ms` reads `INTERVAL_MS`), so a docker compose file
//! sets them under `environment:`. A value on the command line wins over the
//! variable. Defaults match the course's own Python programs: port 5555,
//! `Hello` and `World`, a request every 500 ms, forever.

use std::path::PathBuf;

use clap::Args;

use crate::payload;
use crate::plumbing::{endpoint, replica_name};

/// `--max-message-bytes` default: 1 MiB.
pub const DEFAULT_MAX_MESSAGE_BYTES: u64 = 1024 * 1024;

/// The replica's name, shown in every log line.
#[derive(Args, Debug, Clone)]
pub struct NameArg {
    /// Name shown in every log line [default: the host name; in a docker
    /// compose container, the container's name, such as zmq-reqrep-worker-3]
    #[arg(long, env, default_value_t = default_name(), hide_default_value = true)]
    pub name: String,
}

/// The container's name where Docker's DNS can tell it (see
/// [`replica_name`]), else the host name. A NAME variable makes the default
/// unused, so then nothing is asked.
fn default_name() -> String {
    let named = std::env::var_os("NAME").is_some_and(|name| !name.is_empty());
    (!named)
        .then(replica_name::from_docker_dns)
        .flatten()
        .unwrap_or_else(|| gethostname::gethostname().to_string_lossy().into_owned())
}

/// What a REQ client sends, how often, and how patiently.
#[derive(Args, Debug, Clone)]
pub struct ClientArgs {
    /// Server endpoint; repeat it or separate with commas to connect to
    /// several servers: the client then sends to each in turn
    #[arg(
        long,
        env,
        value_delimiter = ',',
        default_value = "tcp://localhost:5555",
        value_parser = endpoint::parse_connect,
        value_name = "ENDPOINT"
    )]
    pub connect: Vec<String>,

    /// Request payload (text)
    #[arg(long, env, default_value = "Hello")]
    pub message: String,

    /// Read the request payload from this file instead (any bytes)
    #[arg(long, env, value_name = "PATH", conflicts_with = "message")]
    pub message_file: Option<PathBuf>,

    /// Number of requests, then exit 0; 0 means forever, as in the course
    #[arg(long, env, default_value_t = 0)]
    pub count: u64,

    /// Pause between a reply and the next request, in milliseconds
    #[arg(long, env, default_value_t = 500)]
    pub interval_ms: u64,

    /// Give up waiting for a reply after this long and resend, to the next
    /// server if several are connected (the Lazy Pirate pattern); 0 waits
    /// forever, as a plain REQ does
    #[arg(long, env, default_value_t = 2500)]
    pub timeout_ms: u64,

    /// Further attempts at one request (resends, or further waits for a
    /// server to connect) before the client gives up and exits 1
    #[arg(long, env, default_value_t = 3)]
    pub retries: u32,

    #[command(flatten)]
    pub name: NameArg,
}

/// What a REP server or worker answers, and how it treats what it receives.
#[derive(Args, Debug, Clone)]
pub struct ReplyArgs {
    /// Reply payload (text)
    #[arg(long, env, default_value = "World")]
    pub reply: String,

    /// Read the reply payload from this file instead (any bytes)
    #[arg(long, env, value_name = "PATH", conflicts_with = "reply")]
    pub reply_file: Option<PathBuf>,

    /// Reply with the request itself, frame for frame, instead of --reply
    #[arg(long, env, conflicts_with_all = ["reply", "reply_file"])]
    pub echo: bool,

    /// Simulated work per request, in milliseconds
    #[arg(long, env, default_value_t = 0)]
    pub work_ms: u64,
}

impl ReplyArgs {
    /// The reply these options ask for.
    pub fn load(&self) -> anyhow::Result<Reply> {
        if self.echo {
            return Ok(Reply::Echo);
        }
        let reply = payload::load(&self.reply, self.reply_file.as_deref(), "--reply-file")?;
        Ok(Reply::Fixed(reply))
    }
}

/// What a server answers.
#[derive(Debug, Clone)]
pub enum Reply {
    /// The same payload to every request (`World`).
    Fixed(Vec<u8>),
    /// The request itself (`--echo`).
    Echo,
}

impl Reply {
    /// The frames answering `request`.
    pub fn to<'a>(&'a self, request: &'a [Vec<u8>]) -> Vec<&'a [u8]> {
        match self {
            Reply::Fixed(payload) => vec![payload.as_slice()],
            Reply::Echo => request.iter().map(Vec::as_slice).collect(),
        }
    }
}

/// Refuse frames larger than this: libzmq reads a frame's size first, and
/// drops the connection of a peer that announces a larger one, before
/// buffering it (ZMQ_MAXMSGSIZE). The limit is per frame, not per message:
/// a multipart message of many frames under it is accepted whole, whatever
/// its total (see `listener.rs` for what that means under a hostile peer).
#[derive(Args, Debug, Clone)]
pub struct LimitArgs {
    /// Largest frame accepted from a peer, in bytes (ZMQ_MAXMSGSIZE); a peer
    /// sending a larger one is disconnected. It limits each frame of a
    /// message, not a multipart message as a whole
    #[arg(
        long,
        env,
        default_value_t = DEFAULT_MAX_MESSAGE_BYTES,
        value_parser = clap::value_parser!(u64).range(1..=i64::MAX as u64)
    )]
    pub max_message_bytes: u64,

    /// libzmq I/O threads (ZMQ_IO_THREADS), which carry the connections.
    /// One serves a classroom best. For thousands of clients give 2: each
    /// thread keeps its connections' timers in one list, walked whenever a
    /// handshake ends or a heartbeat is answered, and 10,000 connections
    /// on one thread stall it for seconds every heartbeat interval (10 s)
    #[arg(long, env, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..=16))]
    pub io_threads: i32,
}

impl LimitArgs {
    /// The limit as libzmq's `set_maxmsgsize` takes it.
    pub fn as_maxmsgsize(&self) -> i64 {
        // The parser's range keeps the value within i64.
        i64::try_from(self.max_message_bytes).unwrap_or(i64::MAX)
    }
}

/// Who may connect to a listening role: checked during the ZeroMQ handshake
/// by the ZAP handler of `src/security/`. With none of these, anyone may.
/// An empty value (`ALLOW=` in a compose file) means the option is not set.
#[derive(Args, Debug, Clone, Default)]
pub struct ServerSecurityArgs {
    /// Admit peers only from these addresses: CIDR blocks or single
    /// addresses, IPv4 or IPv6 (10.0.0.0/8,192.168.1.20,::1); others are
    /// refused during the handshake, and logged
    #[arg(long, env, value_delimiter = ',', value_name = "CIDR")]
    pub allow: Vec<String>,

    /// Admit only PLAIN users listed in this file, one user:password per
    /// line (# starts a comment line). PLAIN sends the password in the
    /// clear: access control, not encryption (use CURVE for that)
    #[arg(long, env, value_name = "FILE", value_parser = path_or_empty)]
    pub plain_users: Option<PathBuf>,

    /// Encrypt every connection with CURVE, with this secret key (a file
    /// holding 40 Z85 characters, as curve_keygen writes); needs a build
    /// with CURVE (--config .cargo/system-libzmq.toml, or the Docker image)
    #[arg(long, env, value_name = "FILE", value_parser = path_or_empty)]
    pub curve_secret_key_file: Option<PathBuf>,

    /// Admit only the CURVE clients whose public keys this file lists, one
    /// per line (# starts a comment); without it, any client key
    #[arg(long, env, value_name = "FILE", value_parser = path_or_empty)]
    pub curve_clients: Option<PathBuf>,
}

/// What a connecting role presents to a server that checks its peers
/// (`src/security/credentials.rs`). With none of these, nothing (NULL).
/// An empty value means the option is not set.
#[derive(Args, Debug, Clone, Default)]
pub struct ClientSecurityArgs {
    /// PLAIN user name, for a server with --plain-users (with
    /// --plain-password-file). Sent in the clear, with the password
    #[arg(long, env, value_name = "NAME")]
    pub plain_user: Option<String>,

    /// File whose first line is the PLAIN password: a file, so that the
    /// password shows in no process list (and Docker secrets are files)
    #[arg(long, env, value_name = "FILE", value_parser = path_or_empty)]
    pub plain_password_file: Option<PathBuf>,

    /// The server's CURVE public key (40 Z85 characters, its .pub file):
    /// encrypt, and talk only to the holder of the matching secret key
    // '-' is a Z85 character: a key may start with it, and is still a value.
    #[arg(long, env, value_name = "Z85", allow_hyphen_values = true)]
    pub curve_server_key: Option<String>,

    /// The same, read from a file (the server's .pub): Z85 has '$' among its
    /// characters, which docker compose would expand in an environment value
    #[arg(long, env, value_name = "FILE", value_parser = path_or_empty)]
    pub curve_server_key_file: Option<PathBuf>,

    /// Our own CURVE secret key (a file of 40 Z85 characters); the server's
    /// --curve-clients must list its public key
    #[arg(long, env, value_name = "FILE", value_parser = path_or_empty)]
    pub curve_secret_key_file: Option<PathBuf>,
}

/// A path as given, empty included (clap's own parser refuses an empty
/// one): the security options treat an empty value as not set.
fn path_or_empty(value: &str) -> Result<PathBuf, std::convert::Infallible> {
    Ok(PathBuf::from(value))
}
