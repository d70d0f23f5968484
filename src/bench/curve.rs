//! The CURVE variants: what encryption costs.
//!
//! The `reqrep` and `broker` scenarios run once more with every connection
//! encrypted (CurveZMQ) and every client key checked by the ZAP handler
//! (`--curve-clients`), next to their plaintext rows in the same run, so
//! the ratio between the two is CURVE's price on this machine. The keys
//! are made for the run, in a private temporary directory removed after.
//!
//! A build without CURVE (the `zmq` crate's bundled libzmq) leaves these
//! variants out, and says so once.

use std::fs::DirBuilder;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Once;

use anyhow::Context as _;

use crate::security::curve;

/// A server key pair and one client key pair, as files the roles read.
pub struct Keys {
    dir: PathBuf,
    server_secret: PathBuf,
    server_public: String,
    client_secret: PathBuf,
    clients: PathBuf,
}

impl Keys {
    /// Fresh keys, or `None` (said once on stderr) in a build without CURVE.
    pub fn make() -> anyhow::Result<Option<Keys>> {
        if !curve::available() {
            static SAID: Once = Once::new();
            SAID.call_once(|| {
                eprintln!(
                    "bench: this build has no CURVE, so the CURVE variants are left out \
                     (run the bench with --config .cargo/system-libzmq.toml)"
                );
            });
            return Ok(None);
        }
        let dir =
            std::env::temp_dir().join(format!("zmq-reqrep-bench-keys-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        // Readable by this user only: it holds secret keys.
        DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        // Made first, so that its Drop removes the directory on any error.
        let mut keys = Keys {
            server_secret: dir.join("server.key"),
            client_secret: dir.join("client.key"),
            clients: dir.join("clients.txt"),
            server_public: String::new(),
            dir,
        };
        let (server_public, server_secret) = curve::generate()?;
        let (client_public, client_secret) = curve::generate()?;
        write(&keys.server_secret, &server_secret.to_z85())?;
        write(&keys.client_secret, &client_secret.to_z85())?;
        write(&keys.clients, &client_public.to_string())?;
        keys.server_public = server_public.to_string();
        Ok(Some(keys))
    }

    /// The options of a listening role (`reqrep_server`, `broker`).
    pub fn server_args(&self) -> Vec<String> {
        vec![
            "--curve-secret-key-file".into(),
            self.server_secret.display().to_string(),
            "--curve-clients".into(),
            self.clients.display().to_string(),
        ]
    }

    /// The options of a connecting role or peer (every client and worker
    /// shares the one client key).
    pub fn client_args(&self) -> Vec<String> {
        vec![
            "--curve-server-key".into(),
            self.server_public.clone(),
            "--curve-secret-key-file".into(),
            self.client_secret.display().to_string(),
        ]
    }
}

impl Drop for Keys {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn write(path: &Path, line: &str) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    writeln!(file, "{line}").with_context(|| format!("writing {}", path.display()))
}
