//! Buffered stdout and stderr, flushed every 100 ms and at exit.
//!
//! A client prints one line per reply and a server logs one line per request.
//! Writing each line straight to the terminal costs a system call per message,
//! which is measurable next to a loopback round trip of a few tens of
//! microseconds. So a line only goes into memory, a background thread writes
//! out what has gathered at least every [`FLUSH_INTERVAL`], and [`flush`]
//! empties it at exit. Under `docker compose logs` or in a terminal, 100 ms is
//! not noticeable.
//!
//! The writing happens outside the lock that printing takes, so a slow
//! reader (a full pipe) delays the flusher, not the request loop. Only if a
//! megabyte piles up does the printing thread write it out itself: a reader
//! that cannot keep up slows the program down instead of filling memory.

use std::io::{self, Write};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::Duration;

/// The longest a written line waits in memory.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);

/// Past this much unwritten output, the printing thread writes it itself.
const HIGH_WATER: usize = 1024 * 1024;

/// One stream: the bytes not written yet, and where they go. Whoever writes
/// to `sink` holds its lock while taking `pending`, so chunks leave in order.
struct Buffer {
    pending: Mutex<Vec<u8>>,
    sink: Mutex<Box<dyn Write + Send>>,
}

impl Buffer {
    fn new(sink: Box<dyn Write + Send>) -> Buffer {
        Buffer {
            pending: Mutex::new(Vec::with_capacity(64 * 1024)),
            sink: Mutex::new(sink),
        }
    }

    /// Appends bytes; writes them out at once only past [`HIGH_WATER`].
    fn append(&self, write: impl FnOnce(&mut Vec<u8>)) {
        let full = {
            let mut pending = lock(&self.pending);
            write(&mut pending);
            pending.len() >= HIGH_WATER
        };
        if full {
            self.write_out();
        }
    }

    /// Writes out whatever is pending. A failed write (a closed pipe) loses
    /// those lines; the program carries on.
    fn write_out(&self) {
        let mut sink = lock(&self.sink);
        let chunk = std::mem::take(&mut *lock(&self.pending));
        if !chunk.is_empty() {
            let _ = sink.write_all(&chunk);
            let _ = sink.flush();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves bytes, nothing inconsistent:
    // keep going.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

struct Console {
    out: Buffer,
    err: Buffer,
}

fn console() -> &'static Console {
    static CONSOLE: OnceLock<Console> = OnceLock::new();
    CONSOLE.get_or_init(|| {
        // The flusher never has to stop: at exit `flush` empties whatever it
        // has not written yet. Should the thread fail to start, lines still
        // come out at the high-water mark and at exit: carry on without it.
        let _ = thread::Builder::new()
            .name("console-flush".into())
            .spawn(|| {
                loop {
                    thread::sleep(FLUSH_INTERVAL);
                    flush();
                }
            });
        Console {
            out: Buffer::new(Box::new(io::stdout())),
            err: Buffer::new(Box::new(io::stderr())),
        }
    })
}

/// One of the two buffered streams; `tracing` logs go to [`STDERR`].
#[derive(Clone, Copy, Debug)]
pub struct Stream(fn(&Console) -> &Buffer);

/// The buffered standard output (see the module docs).
pub const STDOUT: Stream = Stream(|console| &console.out);

/// The buffered standard error.
pub const STDERR: Stream = Stream(|console| &console.err);

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (self.0)(console()).append(|pending| pending.extend_from_slice(buf));
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        (self.0)(console()).write_out();
        Ok(())
    }
}

/// Prints one line to the buffered standard output.
pub fn line(text: std::fmt::Arguments<'_>) {
    console().out.append(|pending| {
        // Formatting into a Vec cannot fail.
        let _ = pending.write_fmt(text);
        pending.push(b'\n');
    });
}

/// Writes out everything buffered so far. Call it before the process exits.
pub fn flush() {
    let console = console();
    console.out.write_out();
    console.err.write_out();
}
