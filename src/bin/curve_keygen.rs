//! # curve_keygen: a CURVE key pair, as two files
//!
//! CurveZMQ gives the server a key pair, and each client one of its own. The
//! secret key stays with its owner; the public key is handed out: the
//! server's to every client (`--curve-server-key`), each client's to the
//! server (a line of its `--curve-clients` file).
//!
//! ```text
//! mkdir -p keys
//! cargo run --config .cargo/system-libzmq.toml --bin curve_keygen -- keys/broker
//! cargo run --config .cargo/system-libzmq.toml --bin curve_keygen -- keys/alice
//! ```
//!
//! writes `keys/broker.key` (the secret key, readable by its owner only) and
//! `keys/broker.pub` (the public key), 40 Z85 characters on one line each.
//! An existing pair is never overwritten unless `--force` is given. In a
//! container, as the user who owns the directory:
//!
//! ```text
//! docker run --rm --user "$(id -u):$(id -g)" -v "$PWD/keys:/keys" zmq-reqrep curve_keygen /keys/broker
//! ```
//!
//! The keys come from libzmq (`zmq_curve_keypair`, libsodium's random
//! numbers), so this needs a build with CURVE, like the roles that use them.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;

use zmq_reqrep::plumbing::exit::{self, UsageError};
use zmq_reqrep::security::curve;

/// Writes a new CURVE key pair: NAME.key (secret, mode 0600) and NAME.pub.
#[derive(Parser, Debug)]
#[command(version, long_about = None)]
struct Args {
    /// Path and name of the pair, without extension (keys/broker)
    #[arg(value_name = "NAME")]
    name: PathBuf,

    /// Replace an existing pair
    #[arg(long)]
    force: bool,
}

fn main() -> ExitCode {
    let args: Args = exit::parse_args();
    exit::report(run(&args))
}

fn run(args: &Args) -> anyhow::Result<()> {
    curve::require("NAME", &args.name.display().to_string())?;
    let secret_path = with_extension(&args.name, "key");
    let public_path = with_extension(&args.name, "pub");
    if !args.force {
        for path in [&secret_path, &public_path] {
            if path.exists() {
                return Err(UsageError {
                    option: "NAME",
                    value: args.name.display().to_string(),
                    reason: format!(
                        "{} exists: not overwritten (--force replaces the pair)",
                        path.display()
                    ),
                }
                .into());
            }
        }
    }
    let (public, secret) = curve::generate()?;
    // The secret key first: a pair without it is worthless, and a public
    // key without its secret would mislead.
    write(&secret_path, &secret.to_z85(), 0o600, args.force)?;
    write(&public_path, &public.to_string(), 0o644, args.force)?;
    println!(
        "{}: the secret key, readable by its owner only",
        secret_path.display()
    );
    println!("{}: {public}", public_path.display());
    Ok(())
}

/// `keys/broker` + `key` = `keys/broker.key` (even if NAME has a dot).
fn with_extension(name: &Path, extension: &str) -> PathBuf {
    let mut path = name.as_os_str().to_owned();
    path.push(".");
    path.push(extension);
    PathBuf::from(path)
}

/// Writes `key` and a line end to `path`, created with `mode` (less what
/// the umask takes away) so that it never exists with looser permissions,
/// not even for a moment. Without `replace`, an existing file is an error;
/// with it, the new file is written beside it and renamed over it.
fn write(path: &Path, key: &str, mode: u32, replace: bool) -> anyhow::Result<()> {
    let usage = |error: std::io::Error| {
        let mut reason = error.to_string().to_lowercase();
        if error.kind() == std::io::ErrorKind::NotFound {
            if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
                reason.push_str(&format!(
                    "; create the directory first: mkdir -p {}",
                    dir.display()
                ));
            }
        }
        UsageError {
            option: "NAME",
            value: path.display().to_string(),
            reason,
        }
    };
    let target = if replace {
        let mut temporary = path.as_os_str().to_owned();
        temporary.push(format!(".new-{}", std::process::id()));
        PathBuf::from(temporary)
    } else {
        path.to_path_buf()
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&target)
        .map_err(usage)?;
    let written = file
        .write_all(format!("{key}\n").as_bytes())
        .and_then(|()| file.sync_all());
    if let Err(error) = written {
        let _ = fs::remove_file(&target);
        return Err(usage(error).into());
    }
    if replace {
        fs::rename(&target, path).map_err(|error| {
            let _ = fs::remove_file(&target);
            usage(error)
        })?;
    }
    Ok(())
}
