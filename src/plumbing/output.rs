//! Standard output and standard error that never make the program wait for
//! whoever reads them: tracing-appender's non-blocking writer, one per
//! stream, within a bound of [`HIGH_WATER`] bytes.
//!
//! A client prints one line per reply and a server logs one line per
//! request. Writing each line straight to the terminal costs a system call
//! per message, which is measurable next to a loopback round trip of a few
//! tens of microseconds, and a reader that stops reading (a pipe nobody
//! reads, a terminal paused with Ctrl-S) would stop the socket loop with
//! it. So printing a line only hands it to a background thread (the
//! library's), which writes out what has gathered, in one system call for
//! many lines. Once [`HIGH_WATER`] bytes (or [`QUEUED_LINES`] lines) wait
//! for it, further lines are dropped and counted instead, and when the
//! output moves again one log line says how many were lost. At exit,
//! [`flush`] waits at most [`EXIT_WAIT`] for what is queued to be written.
//!
//! What this module adds to the library, and why:
//! - the bound in bytes: the library counts lines only, and a queue of
//!   lines of 7 KB each (a worker logging a 100-frame request) would hold
//!   70 MB before its 10,000-line bound dropped one;
//! - the wait at exit: the library's guard, when dropped, waits for its
//!   thread, and should the queue be full (a stuck reader) complains with
//!   `println!`, which blocks on that very reader. The guard is never
//!   dropped here; [`flush`] waits instead, with a deadline.

use std::fmt;
use std::io::{self, BufWriter, Write};
use std::mem::ManuallyDrop;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tracing::warn;
use tracing_appender::non_blocking::{NonBlocking, NonBlockingBuilder, WorkerGuard};

/// Past this much unwritten output, new lines are dropped (and counted).
pub const HIGH_WATER: usize = 1024 * 1024;

/// Past this many unwritten lines, too (short ones); the library's queue
/// has room for a few more, so that it never drops a line itself.
pub const QUEUED_LINES: usize = 16 * 1024;

/// How long [`flush`] waits for a reader that is not reading.
pub const EXIT_WAIT: Duration = Duration::from_secs(1);

/// Output handed to the writer thread and not written out yet, and what
/// was dropped; shared by the printing threads and the writer thread.
#[derive(Default)]
struct Queued {
    lines: AtomicUsize,
    bytes: AtomicUsize,
    /// Lines dropped since the last report.
    dropped: AtomicU64,
    /// Taken while waiting for `lines` to reach 0 (see [`flush`]).
    written: Mutex<()>,
    moved: Condvar,
}

impl Queued {
    /// Reserves room for one line of `len` bytes; `false` (and the line
    /// counted as dropped) if there is none.
    fn reserve(&self, len: usize) -> bool {
        let lines = self.lines.fetch_add(1, Ordering::AcqRel);
        let bytes = self.bytes.fetch_add(len, Ordering::AcqRel);
        if lines < QUEUED_LINES && bytes < HIGH_WATER {
            return true;
        }
        self.release(1, len);
        self.dropped.fetch_add(1, Ordering::Relaxed);
        false
    }

    fn release(&self, lines: usize, bytes: usize) {
        self.bytes.fetch_sub(bytes, Ordering::AcqRel);
        if self.lines.fetch_sub(lines, Ordering::AcqRel) == lines {
            // Empty now: wake whoever waits in `flush`.
            let _held = lock(&self.written);
            self.moved.notify_all();
        }
    }
}

/// A descriptor written with write(2), never closed: the standard ones
/// stay open for the process's life.
struct Descriptor(RawFd);

impl Write for Descriptor {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            // SAFETY: `buf` is valid for `buf.len()` bytes.
            let n = unsafe { libc::write(self.0, buf.as_ptr().cast(), buf.len()) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let error = io::Error::last_os_error();
            if error.kind() != io::ErrorKind::Interrupted {
                return Err(error);
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The writer thread's end: a buffer in front of the descriptor.
struct Sink {
    name: &'static str,
    out: BufWriter<Descriptor>,
    /// In the buffer, not flushed yet: lines, bytes.
    buffered: (usize, usize),
    queued: Arc<Queued>,
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.write(buf)
    }

    /// The thread hands over one line (one event) per call.
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.buffered.0 += 1;
        self.buffered.1 += buf.len();
        // A failed write (a closed pipe) loses those bytes; the program
        // carries on.
        let _ = self.out.write_all(buf);
        Ok(())
    }

    /// Called by the thread after each batch: the output has moved.
    fn flush(&mut self) -> io::Result<()> {
        let _ = self.out.flush();
        let (lines, bytes) = std::mem::take(&mut self.buffered);
        let dropped = self.queued.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            let noun = if dropped == 1 { "line" } else { "lines" };
            warn!(
                "{dropped} {noun} dropped from {}: nobody read it for a while (a full pipe or \
                 a paused terminal), and the program did not wait",
                self.name
            );
        }
        // Last: `flush` may return as soon as the count reaches 0.
        self.queued.release(lines, bytes);
        Ok(())
    }
}

/// One stream: the library's queue to its writer thread, and the count of
/// what is in it.
struct Channel {
    queue: NonBlocking,
    queued: Arc<Queued>,
    /// Never dropped (see the module header).
    _guard: ManuallyDrop<WorkerGuard>,
}

impl Channel {
    fn new(name: &'static str, fd: RawFd) -> Channel {
        let queued = Arc::new(Queued::default());
        let sink = Sink {
            name,
            out: BufWriter::with_capacity(64 * 1024, Descriptor(fd)),
            buffered: (0, 0),
            queued: Arc::clone(&queued),
        };
        let (queue, guard) = NonBlockingBuilder::default()
            .lossy(true)
            // Room for lines reserved at the same moment by several threads.
            .buffered_lines_limit(QUEUED_LINES + 1024)
            .thread_name(&format!("{name}-writer"))
            .finish(sink);
        Channel {
            queue,
            queued,
            _guard: ManuallyDrop::new(guard),
        }
    }

    /// Hands `bytes` (one line, or one log event) to the writer thread, or
    /// drops and counts it if [`HIGH_WATER`] is reached.
    fn send(&self, bytes: &[u8]) {
        if self.queued.reserve(bytes.len()) {
            // Lossy, and never full: room was reserved above.
            let _ = self.queue.clone().write(bytes);
        }
    }

    /// Waits until everything handed over is written out, until `deadline`
    /// at most; `true` if it was.
    fn wait_written(&self, deadline: Instant) -> bool {
        let mut held = lock(&self.queued.written);
        loop {
            if self.queued.lines.load(Ordering::Acquire) == 0 {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            held = self
                .queued
                .moved
                .wait_timeout(held, left)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock leaves a count, nothing inconsistent.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

struct Console {
    out: Channel,
    err: Channel,
}

fn console() -> &'static Console {
    static CONSOLE: OnceLock<Console> = OnceLock::new();
    CONSOLE.get_or_init(|| Console {
        out: Channel::new("stdout", libc::STDOUT_FILENO),
        err: Channel::new("stderr", libc::STDERR_FILENO),
    })
}

/// One of the two streams; `tracing` logs go to [`STDERR`].
#[derive(Clone, Copy, Debug)]
pub struct Stream(fn(&Console) -> &Channel);

/// The standard output, through its writer thread (see the module docs).
pub const STDOUT: Stream = Stream(|console| &console.out);

/// The standard error, through its writer thread.
pub const STDERR: Stream = Stream(|console| &console.err);

impl Write for Stream {
    /// `buf` is one line, or one log event (tracing writes each event with
    /// one call).
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (self.0)(console()).send(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        (self.0)(console()).wait_written(Instant::now() + EXIT_WAIT);
        Ok(())
    }
}

/// Prints one line to the standard output.
pub fn line(text: fmt::Arguments<'_>) {
    let mut bytes = Vec::with_capacity(64);
    // Formatting into a Vec cannot fail.
    let _ = bytes.write_fmt(text);
    bytes.push(b'\n');
    console().out.send(&bytes);
}

/// Writes out everything printed so far, waiting at most [`EXIT_WAIT`] in
/// all for a reader. Call it before the process exits.
pub fn flush() {
    let deadline = Instant::now() + EXIT_WAIT;
    let console = console();
    // Standard output first: its drop notice, if any, goes to stderr.
    console.out.wait_written(deadline);
    console.err.wait_written(deadline);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::FromRawFd;

    fn pipe() -> (RawFd, std::fs::File) {
        let mut fds = [0; 2];
        // SAFETY: pipe fills the two descriptors it creates.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: the read end is ours alone.
        (fds[1], unsafe { std::fs::File::from_raw_fd(fds[0]) })
    }

    #[test]
    fn printing_never_waits_for_a_reader() {
        let (write_end, mut read_end) = pipe();
        let channel = Channel::new("test", write_end);
        let line = [b'x'; 99];
        let mut with_newline = line.to_vec();
        with_newline.push(b'\n');
        let started = Instant::now();
        // 3 MiB of lines, with nobody reading the pipe.
        for _ in 0..32 * 1024 {
            channel.send(&with_newline);
        }
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(!channel.wait_written(Instant::now() + Duration::from_millis(50)));
        let dropped = channel.queued.dropped.load(Ordering::Relaxed);
        assert!(dropped > 16 * 1024, "{dropped} lines dropped");

        // A reader comes: everything kept comes out, whole lines, in order.
        let reader = std::thread::spawn(move || {
            let mut all = Vec::new();
            read_end.read_to_end(&mut all).unwrap();
            all
        });
        assert!(channel.wait_written(Instant::now() + Duration::from_secs(10)));
        // SAFETY: everything is written; closing our write end (which the
        // writer thread keeps, unused now) lets the reader see the end.
        unsafe { libc::close(write_end) };
        let all = reader.join().unwrap();
        assert_eq!(all.len() as u64, (32 * 1024 - dropped) * 100);
        assert!(
            all.chunks(100)
                .all(|chunk| chunk[..99] == line && chunk[99] == b'\n')
        );
    }
}
