//! Who may join: ZeroMQ's access control (ZAP) and encryption (CURVE).
//!
//! By default a listening socket takes anyone who reaches its port: on a
//! classroom network, a classmate's stray worker can join the broker's
//! backend and answer other people's requests. ZeroMQ checks peers during
//! the handshake, before they may send a single message, in two layers:
//!
//! - a **mechanism** (RFC 23 and followers), chosen per socket: NULL (no
//!   credentials, the default), PLAIN (a user name and password, **sent in
//!   the clear**: access control, not secrecy), or CURVE (CurveZMQ: every
//!   message encrypted, the server proven by its public key, each client
//!   identified by its own);
//! - a **ZAP handler** (RFC 27), a REP socket in the same context that
//!   libzmq asks about each new peer: its address, and the credentials of
//!   its mechanism. Here it is [`zap`], and it checks `--allow`, the PLAIN
//!   users and the CURVE client keys, logging each refusal.
//!
//! A listening role opens a [`Gate`] before its sockets bind, and has the
//! gate protect each one. The roles do both inside their hardening step
//! ([`crate::plumbing::listener::Hardening`]); alone, they read:
//!
//! ```no_run
//! # fn run(args: &zmq_reqrep::plumbing::cli::ServerSecurityArgs) -> anyhow::Result<()> {
//! let ctx = zmq::Context::new();
//! let gate = zmq_reqrep::security::Gate::open(&ctx, args)?; // starts the ZAP handler
//! let socket = ctx.socket(zmq::REP)?;
//! gate.protect(&socket, "REP")?; // its mechanism, and "REP" in the refusal lines
//! socket.bind("tcp://*:5555")?;
//! # Ok(()) }
//! ```
//!
//! A connecting role reads its credentials once, and has every socket
//! present them before `connect` ([`credentials`]).
//!
//! | option | side | what it does |
//! |---|---|---|
//! | `--allow CIDR,...` | listening | only peers from these addresses ([`allow`]) |
//! | `--plain-users FILE` | listening | PLAIN: `user:password` lines ([`plain`]) |
//! | `--plain-user`, `--plain-password-file` | connecting | PLAIN credentials |
//! | `--curve-secret-key-file FILE` | both | CURVE: our secret key ([`curve`]) |
//! | `--curve-clients FILE` | listening | CURVE: the admitted client public keys |
//! | `--curve-server-key Z85` | connecting | CURVE: the server's public key |
//!
//! The address is checked first, then the credentials. PLAIN and CURVE
//! cannot both be set on one role (a socket has one mechanism). CURVE needs
//! a libzmq with libsodium: the `zmq` crate's bundled one has none, the
//! system's has (`cargo run --config .cargo/system-libzmq.toml`, and the
//! Docker image).
//!
//! | module | what it does |
//! |---|---|
//! | [`zap`] | the ZAP handler: the decision, and refusals logged without flooding |
//! | [`allow`] | CIDR blocks for `--allow` |
//! | [`plain`] | the users file and the password file |
//! | [`curve`] | keys in Z85, key files, the client key list |
//! | [`credentials`] | what a connecting socket presents |
//! | [`handshake`] | what a refused client can know, turned into a log line |

pub mod allow;
pub mod credentials;
pub mod curve;
pub mod handshake;
pub mod plain;
pub mod zap;

use std::ffi::OsStr;
use std::path::Path;

use tracing::info;

use self::curve::{ClientKeys, PublicKey, SecretKey};
use self::plain::Users;
use self::zap::{Expected, Policy};
use crate::plumbing::cli::ServerSecurityArgs;
use crate::plumbing::exit::UsageError;
use crate::plumbing::listener;
use crate::plumbing::logging::Count;

/// The listening sockets' access control: the running ZAP handler and the
/// mechanism every protected socket uses. Dropping it stops the handler, so
/// drop it after the sockets (declare it before them) and before the
/// context.
pub struct Gate {
    protected: Option<Protected>,
}

struct Protected {
    mechanism: ServerMechanism,
    _handler: zap::Handler,
}

enum ServerMechanism {
    Null,
    Plain,
    Curve {
        secret: SecretKey,
        public: PublicKey,
    },
}

impl Gate {
    /// Reads the options' files and, if any option is set, starts the ZAP
    /// handler in `ctx`. With none, the gate is open: sockets stay as
    /// libzmq makes them. A bad file or a bad combination of options is a
    /// usage error (exit 2).
    pub fn open(ctx: &zmq::Context, args: &ServerSecurityArgs) -> anyhow::Result<Gate> {
        let Some(Loaded {
            policy,
            mechanism,
            description,
        }) = load(args)?
        else {
            return Ok(Gate { protected: None });
        };
        let handler = zap::Handler::start(ctx, policy)?;
        if let ServerMechanism::Curve { public, .. } = &mechanism {
            info!("CURVE server, public key {public}: clients need it as --curve-server-key");
        }
        info!("who may join: {description}");
        Ok(Gate {
            protected: Some(Protected {
                mechanism,
                _handler: handler,
            }),
        })
    }

    /// Makes `socket` check its peers through the gate (call before
    /// `bind`). `kind` is its ZAP domain, which names it in refusal lines.
    pub fn protect(&self, socket: &zmq::Socket, kind: &'static str) -> zmq::Result<()> {
        let Some(protected) = &self.protected else {
            return Ok(());
        };
        // Also what makes libzmq ask the handler about NULL peers.
        socket.set_zap_domain(kind)?;
        match &protected.mechanism {
            ServerMechanism::Null => Ok(()),
            ServerMechanism::Plain => socket.set_plain_server(true),
            ServerMechanism::Curve { secret, .. } => {
                socket.set_curve_server(true)?;
                socket.set_curve_secretkey(secret.bytes())
            }
        }
    }
}

/// The hardening of the listening roles (src/plumbing/listener.rs) opens
/// the gate through these: plumbing stands below security and knows it
/// only as a trait.
impl listener::OpenGate for ServerSecurityArgs {
    fn open_gate(&self, ctx: &zmq::Context) -> anyhow::Result<Box<dyn listener::Gate>> {
        Ok(Box::new(Gate::open(ctx, self)?))
    }
}

impl listener::Gate for Gate {
    fn protect(&self, socket: &zmq::Socket, kind: &'static str) -> zmq::Result<()> {
        Gate::protect(self, socket, kind)
    }
}

/// What the options ask for, read and checked.
struct Loaded {
    policy: Policy,
    mechanism: ServerMechanism,
    /// Who may join, for the log.
    description: String,
}

/// Reads the options and their files; `None` if no option is set.
fn load(args: &ServerSecurityArgs) -> Result<Option<Loaded>, UsageError> {
    let allow = args
        .allow
        .iter()
        .map(|entry| entry.trim())
        .filter(|entry| !entry.is_empty())
        .map(|entry| allow::parse_net(entry).map_err(|why| usage("--allow", entry, why)))
        .collect::<Result<Vec<_>, _>>()?;
    // An empty value (`ALLOW=`) is no list at all; a value with nothing but
    // blanks and commas in it is a list of no one, which would otherwise
    // let everyone in.
    let written = args.allow.join(",");
    if allow.is_empty() && !written.is_empty() {
        return Err(usage(
            "--allow",
            written,
            "it lists no address; to let any address in, leave --allow out (or ALLOW empty)",
        ));
    }
    let plain_users = given(args.plain_users.as_deref());
    let secret_file = given(args.curve_secret_key_file.as_deref());
    let clients_file = given(args.curve_clients.as_deref());
    if allow.is_empty() && plain_users.is_none() && secret_file.is_none() && clients_file.is_none()
    {
        return Ok(None);
    }
    if let (Some(users), true) = (plain_users, secret_file.is_some() || clients_file.is_some()) {
        return Err(usage(
            "--plain-users",
            shown(users),
            "a socket has one mechanism: PLAIN or CURVE (--curve-secret-key-file, \
             --curve-clients), not both",
        ));
    }
    // A CURVE option to a build without CURVE: say so before reading it.
    if let Some(file) = secret_file {
        curve::require("--curve-secret-key-file", &shown(file))?;
    } else if let Some(file) = clients_file {
        curve::require("--curve-clients", &shown(file))?;
    }
    let (credentials, mechanism, who) = match (plain_users, secret_file, clients_file) {
        (Some(file), ..) => {
            let users = Users::read("--plain-users", file)?;
            let who = format!(
                "{} of {} (PLAIN sends passwords in the clear)",
                Count::new(users.len() as u64, "PLAIN user"),
                shown(file)
            );
            (Expected::Plain(users), ServerMechanism::Plain, who)
        }
        (None, Some(file), clients_file) => {
            let (secret, public) = SecretKey::read_pair("--curve-secret-key-file", file)?;
            let (clients, who) = match clients_file {
                Some(file) => {
                    let keys = ClientKeys::read("--curve-clients", file)?;
                    let who = format!(
                        "{} of {}",
                        Count::new(keys.len() as u64, "CURVE client key"),
                        shown(file)
                    );
                    (Some(keys), who)
                }
                None => (
                    None,
                    "any CURVE client key (no --curve-clients)".to_string(),
                ),
            };
            (
                Expected::Curve(clients),
                ServerMechanism::Curve { secret, public },
                who,
            )
        }
        (None, None, Some(file)) => {
            return Err(usage(
                "--curve-clients",
                shown(file),
                "it needs --curve-secret-key-file too: only a CURVE server has client keys to check",
            ));
        }
        (None, None, None) => (
            Expected::Nothing,
            ServerMechanism::Null,
            "any peer, no credentials".to_string(),
        ),
    };
    let from = if allow.is_empty() {
        "any address".to_string()
    } else {
        allow
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    Ok(Some(Loaded {
        policy: Policy { allow, credentials },
        mechanism,
        description: format!("{who}, from {from}"),
    }))
}

/// An option's value, unless it is unset or empty: under docker compose,
/// `ALLOW: ${ALLOW:-}` sets an empty variable, which clap passes on.
fn given<T: AsRef<OsStr> + ?Sized>(value: Option<&T>) -> Option<&T> {
    value.filter(|value| !value.as_ref().is_empty())
}

/// A path for a message.
fn shown(path: &Path) -> String {
    path.display().to_string()
}

/// A usage error (exit 2): `cannot use 'VALUE' for 'OPTION': REASON`.
fn usage(option: &'static str, value: impl Into<String>, reason: impl Into<String>) -> UsageError {
    UsageError {
        option,
        value: value.into(),
        reason: reason.into(),
    }
}

/// The same, for the file `path` that `option` names.
fn file_usage(option: &'static str, path: &Path, reason: impl Into<String>) -> UsageError {
    usage(option, shown(path), reason)
}

/// Reads the text file `option` names; one that cannot be read is a usage
/// error saying why.
fn read_text(option: &'static str, path: &Path) -> Result<String, UsageError> {
    std::fs::read_to_string(path)
        .map_err(|error| file_usage(option, path, error.to_string().to_lowercase()))
}
