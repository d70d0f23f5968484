//! Stopping on Ctrl-C and SIGTERM within a fraction of a second.
//!
//! Under Docker each role runs as PID 1, and a PID 1 that ignores SIGTERM
//! makes `docker compose stop` wait its full 10 s timeout and then kill it.
//! So every role installs [`Shutdown::on_signals`], and every blocking call
//! wakes up at least every [`CHECK_INTERVAL_MS`] to look at the flag: sockets
//! get `set_rcvtimeo(CHECK_INTERVAL_MS)`, sleeps go through
//! [`Shutdown::sleep`]. A blocking receive with a short timeout costs nothing
//! per message, unlike a `zmq::poll` before every receive.
//!
//! The first signal asks for that orderly stop. A second one, should the
//! stop take too long, ends the process at once, with one line on stderr
//! and the exit code a shell gives a process killed by that signal: 130
//! after Ctrl-C (SIGINT), 143 after SIGTERM. Nothing more is logged then,
//! nor delivered: what libzmq still had queued is lost.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// How often a waiting role checks whether it was asked to stop (ms).
pub const CHECK_INTERVAL_MS: i32 = 100;

/// A stop flag shared by the main loop, its helpers and the signal handlers.
#[derive(Clone, Debug, Default)]
pub struct Shutdown(Arc<AtomicBool>);

impl Shutdown {
    /// A flag that only [`Shutdown::trigger`] sets (for in-process use).
    pub fn new() -> Self {
        Self::default()
    }

    /// A flag that SIGINT (Ctrl-C) and SIGTERM (`docker stop`) set; the
    /// second of them ends the process at once (see the module header).
    pub fn on_signals() -> io::Result<Self> {
        let shutdown = Self::new();
        let program = std::env::args_os()
            .next()
            .map(std::path::PathBuf::from)
            .and_then(|path| {
                path.file_name()
                    .map(|name| name.to_string_lossy().into_owned())
            })
            .unwrap_or_else(|| "zmq_reqrep".into());
        for (signal, name) in [
            (signal_hook::consts::SIGINT, "SIGINT, Ctrl-C"),
            (signal_hook::consts::SIGTERM, "SIGTERM"),
        ] {
            let code = 128 + signal;
            // Formatted now: a signal handler may not allocate.
            let line = format!(
                "{program}: second stop signal ({name}): exiting at once, exit code {code}\n"
            )
            .into_bytes();
            let flag = Arc::clone(&shutdown.0);
            let handler = move || {
                if flag.swap(true, Ordering::SeqCst) {
                    // SAFETY: write(2) on a byte buffer we own is
                    // async-signal-safe; a short or failed write is harmless.
                    unsafe { libc::write(libc::STDERR_FILENO, line.as_ptr().cast(), line.len()) };
                    signal_hook::low_level::exit(code);
                }
            };
            // SAFETY: the handler only swaps an atomic flag, writes a
            // prepared buffer and calls _exit, all async-signal-safe.
            unsafe { signal_hook::low_level::register(signal, handler) }?;
        }
        Ok(shutdown)
    }

    /// Asks every loop holding this flag to stop.
    pub fn trigger(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether a stop was asked for.
    pub fn requested(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// Sleeps for `duration`, returning early (with `false`) on a stop.
    pub fn sleep(&self, duration: Duration) -> bool {
        let deadline = Instant::now() + duration;
        loop {
            if self.requested() {
                return false;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            thread::sleep(left.min(Duration::from_millis(CHECK_INTERVAL_MS as u64)));
        }
    }

    /// Waits until a stop is asked for (a hung server's only activity).
    pub fn wait(&self) {
        while self.sleep(Duration::from_secs(3600)) {}
    }

    /// Receives one whole message (all its frames), waiting until one comes
    /// or a stop is asked for (`Ok(None)`, even if messages are waiting).
    ///
    /// The socket must have a receive timeout (`set_rcvtimeo`), so that the
    /// wait wakes up to look at the flag.
    pub fn recv_multipart(&self, socket: &zmq::Socket) -> zmq::Result<Option<Vec<Vec<u8>>>> {
        loop {
            if self.requested() {
                return Ok(None);
            }
            match socket.recv_multipart(0) {
                Ok(frames) => return Ok(Some(frames)),
                Err(zmq::Error::EAGAIN | zmq::Error::EINTR) => continue,
                Err(other) => return Err(other),
            }
        }
    }
}

/// Sends `frames` as one message. A signal (Ctrl-C, SIGTERM) that comes
/// during a send makes libzmq give up on it with EINTR before it took the
/// frame, which is no error: the frame is sent again, so that a reply for
/// work that was done leaves before the role looks at the stop.
pub fn send_multipart(socket: &zmq::Socket, frames: &[&[u8]]) -> zmq::Result<()> {
    for (i, frame) in frames.iter().enumerate() {
        let more = if i + 1 < frames.len() {
            zmq::SNDMORE
        } else {
            0
        };
        loop {
            match socket.send(*frame, more) {
                Ok(()) => break,
                Err(zmq::Error::EINTR) => continue,
                Err(other) => return Err(other),
            }
        }
    }
    Ok(())
}
