//! Stopping on Ctrl-C and SIGTERM within a fraction of a second.
//!
//! Under Docker each role runs as PID 1, and a PID 1 that ignores SIGTERM
//! makes `docker compose stop` wait its full 10 s timeout and then kill it.
//! So every role installs [`Shutdown::on_signals`], and every blocking call
//! wakes up at least every [`CHECK_INTERVAL_MS`] to look at the flag: sockets
//! get `set_rcvtimeo(CHECK_INTERVAL_MS)`, sleeps go through
//! [`Shutdown::sleep`]. A blocking receive with a short timeout costs nothing
//! per message, unlike a `zmq::poll` before every receive.

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

    /// A flag that SIGINT (Ctrl-C) and SIGTERM (`docker stop`) set.
    pub fn on_signals() -> io::Result<Self> {
        let shutdown = Self::new();
        for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::flag::register(signal, Arc::clone(&shutdown.0))?;
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
