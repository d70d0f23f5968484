//! The connecting side: what a client or worker presents to the server.
//!
//! A role reads its credentials once, at start-up ([`install`]), and every
//! socket it then opens presents them ([`apply`], one call before
//! `connect`): the load-balancing worker opens a DEALER per broker,
//! and a new one whenever a broker has fallen silent, and each must carry
//! the same credentials as the first. A process is one party, with one set
//! of credentials, like its one name in the log; so they are kept here, for
//! the life of the process.
//!
//! | options | mechanism | the server must have |
//! |---|---|---|
//! | none | NULL | nothing, or only `--allow` |
//! | `--plain-user`, `--plain-password-file` | PLAIN, in the clear | `--plain-users` |
//! | `--curve-server-key` (or `-file`), `--curve-secret-key-file` | CURVE, encrypted | `--curve-secret-key-file` |

use std::path::Path;
use std::sync::OnceLock;

use tracing::info;

use super::curve::{self, PublicKey, SecretKey};
use super::handshake::{self, Mechanism};
use super::{given, plain, shown, usage};
use crate::plumbing::cli::ClientSecurityArgs;
use crate::plumbing::exit::UsageError;

/// What a connecting socket presents.
#[derive(Clone, Debug)]
pub enum Credentials {
    /// Nothing (NULL).
    Null,
    /// A user name and password (PLAIN).
    Plain {
        /// The user name.
        user: String,
        /// The password.
        password: String,
    },
    /// CURVE keys: the server's public key, and our own pair.
    Curve {
        /// Whom we expect to talk to.
        server: PublicKey,
        /// Ours, derived from the secret key.
        public: PublicKey,
        /// Ours, from `--curve-secret-key-file`.
        secret: SecretKey,
    },
}

static INSTALLED: OnceLock<Credentials> = OnceLock::new();

impl Credentials {
    /// Reads the options' files and checks that the options go together.
    pub fn load(args: &ClientSecurityArgs) -> Result<Credentials, UsageError> {
        let user = given(args.plain_user.as_deref());
        let password_file = given(args.plain_password_file.as_deref());
        let secret_file = given(args.curve_secret_key_file.as_deref());
        // The server's key, as text or as a file: (option, value as given).
        let server_key = match (
            given(args.curve_server_key.as_deref()),
            given(args.curve_server_key_file.as_deref()),
        ) {
            (Some(_), Some(file)) => {
                return Err(usage(
                    "--curve-server-key-file",
                    shown(file),
                    "give the server's key once: --curve-server-key or --curve-server-key-file",
                ));
            }
            (Some(key), None) => Some(("--curve-server-key", key.to_string())),
            (None, Some(file)) => Some(("--curve-server-key-file", shown(file))),
            (None, None) => None,
        };
        let plain = user
            .map(|user| ("--plain-user", user.to_string()))
            .or_else(|| password_file.map(|file| ("--plain-password-file", shown(file))));
        if let (Some((option, value)), true) =
            (plain, server_key.is_some() || secret_file.is_some())
        {
            return Err(usage(
                option,
                value,
                "a connection has one mechanism: PLAIN or CURVE (--curve-server-key, \
                 --curve-secret-key-file), not both",
            ));
        }
        // A CURVE option to a build without CURVE: say so before reading it.
        if let Some((option, value)) = &server_key {
            curve::require(option, value)?;
        } else if let Some(file) = secret_file {
            curve::require("--curve-secret-key-file", &shown(file))?;
        }
        let needs = |option, value: String, other: &str| {
            usage(option, value, format!("it needs {other} too"))
        };
        match (user, password_file, server_key, secret_file) {
            (Some(user), Some(file), ..) => Ok(Credentials::Plain {
                user: user.to_string(),
                password: plain::read_password("--plain-password-file", file)?,
            }),
            (Some(user), None, ..) => {
                Err(needs("--plain-user", user.into(), "--plain-password-file"))
            }
            (None, Some(file), ..) => {
                Err(needs("--plain-password-file", shown(file), "--plain-user"))
            }
            (None, None, Some((option, value)), Some(file)) => {
                let server = if option == "--curve-server-key" {
                    PublicKey::parse(&value).map_err(|why| usage(option, value, why))?
                } else {
                    PublicKey::read(option, Path::new(&value))?
                };
                let (secret, public) = SecretKey::read_pair("--curve-secret-key-file", file)?;
                Ok(Credentials::Curve {
                    server,
                    public,
                    secret,
                })
            }
            (None, None, Some((option, value)), None) => {
                Err(needs(option, value, "--curve-secret-key-file"))
            }
            (None, None, None, Some(file)) => Err(needs(
                "--curve-secret-key-file",
                shown(file),
                "--curve-server-key",
            )),
            (None, None, None, None) => Ok(Credentials::Null),
        }
    }

    /// The mechanism these credentials use.
    pub fn mechanism(&self) -> Mechanism {
        match self {
            Credentials::Null => Mechanism::Null,
            Credentials::Plain { .. } => Mechanism::Plain,
            Credentials::Curve { .. } => Mechanism::Curve,
        }
    }

    /// Sets the socket options that make `socket` present these
    /// credentials (before `connect`: libzmq reads them for each new
    /// connection).
    pub fn apply(&self, socket: &zmq::Socket) -> zmq::Result<()> {
        match self {
            Credentials::Null => Ok(()),
            Credentials::Plain { user, password } => {
                socket.set_plain_username(Some(user))?;
                socket.set_plain_password(Some(password))
            }
            Credentials::Curve {
                server,
                public,
                secret,
            } => {
                socket.set_curve_serverkey(server.bytes())?;
                socket.set_curve_publickey(public.bytes())?;
                socket.set_curve_secretkey(secret.bytes())
            }
        }
    }
}

/// Reads the credentials options of a connecting role, once, before its
/// first socket; says in the log what it will present.
pub fn install(args: &ClientSecurityArgs) -> Result<(), UsageError> {
    let credentials = Credentials::load(args)?;
    match &credentials {
        Credentials::Null => {}
        Credentials::Plain { user, .. } => {
            info!("presenting PLAIN user \"{user}\" (PLAIN sends the password in the clear)")
        }
        Credentials::Curve { server, public, .. } => {
            info!("CURVE client, public key {public}; expecting the server key {server}")
        }
    }
    // A second call keeps the first credentials: a process is one party.
    let _ = INSTALLED.set(credentials);
    Ok(())
}

/// Gives a connecting `socket` the credentials [`install`] read (none if it
/// was not called); returns their mechanism, for
/// [`handshake::explain`]. Call before `connect`.
pub fn apply(socket: &zmq::Socket) -> zmq::Result<Mechanism> {
    let credentials = INSTALLED.get().unwrap_or(&Credentials::Null);
    credentials.apply(socket)?;
    Ok(credentials.mechanism())
}

/// Why a peer refused a socket that presented the installed credentials,
/// from the last handshake failure its connection watch saw
/// ([`crate::plumbing::connection::Watch::handshake_failure`]); `None` when
/// libzmq gave no reason.
pub fn explain_refusal(failure: Option<(u16, u32)>) -> Option<String> {
    let ours = INSTALLED
        .get()
        .map_or(Mechanism::Null, Credentials::mechanism);
    failure.and_then(|(event, value)| handshake::explain(event, value, ours))
}
