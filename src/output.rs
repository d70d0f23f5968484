//! Buffered stdout and stderr, flushed every 100 ms and at exit.
//!
//! A client prints one line per reply and a server logs one line per request.
//! Writing each line straight to the terminal costs a system call per message,
//! which is measurable next to a loopback round trip of a few tens of
//! microseconds. So every line goes into a buffer, a background thread flushes
//! it at least every [`FLUSH_INTERVAL`], and [`flush`] empties it at exit.
//! Under `docker compose logs` or in a terminal, 100 ms is not noticeable.

use std::io::{self, BufWriter, Write};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::Duration;

/// The longest a written line waits in the buffer.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);

const BUFFER_BYTES: usize = 64 * 1024;

struct Console {
    out: Mutex<BufWriter<io::Stdout>>,
    err: Mutex<BufWriter<io::Stderr>>,
}

fn console() -> &'static Console {
    static CONSOLE: OnceLock<Console> = OnceLock::new();
    CONSOLE.get_or_init(|| {
        // The flusher never has to stop: at exit `flush` empties whatever it
        // has not written yet. Should the thread fail to start, lines still
        // come out when the buffer fills and at exit, so carry on without it.
        let _ = thread::Builder::new()
            .name("console-flush".into())
            .spawn(|| {
                loop {
                    thread::sleep(FLUSH_INTERVAL);
                    flush();
                }
            });
        Console {
            out: Mutex::new(BufWriter::with_capacity(BUFFER_BYTES, io::stdout())),
            err: Mutex::new(BufWriter::with_capacity(BUFFER_BYTES, io::stderr())),
        }
    })
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave a BufWriter inconsistent
    // enough to matter for console output: keep writing.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Writes to the buffered standard output (see the module docs).
pub struct Stdout;

/// Writes to the buffered standard error; `tracing` logs go here.
pub struct Stderr;

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        lock(&console().out).write(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        lock(&console().out).write_all(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        lock(&console().out).flush()
    }
}

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        lock(&console().err).write(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        lock(&console().err).write_all(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        lock(&console().err).flush()
    }
}

/// Prints one line to the buffered standard output.
///
/// A closed pipe (`reqrep_client | head`) is not worth dying for: the line is
/// dropped and the client carries on with its requests.
pub fn line(text: std::fmt::Arguments<'_>) {
    let mut out = lock(&console().out);
    let _ = out.write_fmt(text);
    let _ = out.write_all(b"\n");
}

/// Writes out everything buffered so far. Call it before the process exits.
pub fn flush() {
    let console = console();
    let _ = lock(&console.out).flush();
    let _ = lock(&console.err).flush();
}
