//! Buffered stdout and stderr, flushed every 100 ms and at exit, that never
//! make the program wait for whoever reads them.
//!
//! A client prints one line per reply and a server logs one line per request.
//! Writing each line straight to the terminal costs a system call per message,
//! which is measurable next to a loopback round trip of a few tens of
//! microseconds. So a line only goes into memory, a background thread writes
//! out what has gathered at least every [`FLUSH_INTERVAL`], and [`flush`]
//! empties it at exit. Under `docker compose logs` or in a terminal, 100 ms is
//! not noticeable.
//!
//! Printing never writes, so it never waits for the reader: a pipe nobody
//! reads (a supervisor that does not collect the output), or a terminal
//! paused with Ctrl-S, stalls the background thread, never a socket loop.
//! Once [`HIGH_WATER`] bytes wait in memory, further lines are dropped and
//! counted instead, and when the output moves again one log line says how
//! many were lost. At exit, [`flush`] waits at most [`EXIT_WAIT`] for a
//! reader.

use std::io;
use std::os::fd::RawFd;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use tracing::warn;

use crate::plumbing::logging::Count;

/// The longest a written line waits in memory.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);

/// Past this much unwritten output, new lines are dropped (and counted).
pub const HIGH_WATER: usize = 1024 * 1024;

/// How long [`flush`] waits for a reader that is not reading.
pub const EXIT_WAIT: Duration = Duration::from_secs(1);

/// The largest write that a pipe reported writable takes without waiting
/// (PIPE_BUF on Linux: a write up to this size fits in one free pipe page).
const SAFE_WRITE: usize = 4096;

/// One stream: the bytes not written yet, and the descriptor they go to.
struct Buffer {
    name: &'static str,
    fd: RawFd,
    /// Writes of any size are fine on a regular file: it never makes a
    /// writer wait for a reader.
    chunk: usize,
    /// What printing appends to; only ever held for a moment.
    pending: Mutex<Pending>,
    /// What the writer took from `pending` and has not written yet. Whoever
    /// writes holds this lock while taking `pending`, so chunks leave in
    /// order.
    writing: Mutex<Carry>,
}

#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    /// Lines dropped since the last report.
    dropped: u64,
}

#[derive(Default)]
struct Carry {
    bytes: Vec<u8>,
    written: usize,
}

impl Buffer {
    fn new(name: &'static str, fd: RawFd) -> Buffer {
        Buffer {
            name,
            fd,
            chunk: if is_regular_file(fd) {
                usize::MAX
            } else {
                SAFE_WRITE
            },
            pending: Mutex::new(Pending {
                bytes: Vec::with_capacity(64 * 1024),
                dropped: 0,
            }),
            writing: Mutex::new(Carry::default()),
        }
    }

    /// Appends one line (or one log event), or counts it as dropped when
    /// [`HIGH_WATER`] bytes already wait.
    fn append(&self, write: impl FnOnce(&mut Vec<u8>)) {
        let mut pending = lock(&self.pending);
        if pending.bytes.len() >= HIGH_WATER {
            pending.dropped += 1;
            return;
        }
        write(&mut pending.bytes);
    }

    /// Writes out whatever is pending, waiting for the reader until
    /// `deadline` at most. `true` once everything is out. A failed write (a
    /// closed pipe) loses those bytes; the program carries on.
    fn write_out(&self, deadline: Instant) -> bool {
        let Some(mut carry) = lock_until(&self.writing, deadline) else {
            return false; // another writer is stuck on the same reader
        };
        loop {
            if carry.written == carry.bytes.len() {
                let mut pending = lock(&self.pending);
                if pending.bytes.is_empty() {
                    return true;
                }
                carry.bytes.clear();
                carry.written = 0;
                std::mem::swap(&mut carry.bytes, &mut pending.bytes);
            }
            let Carry { bytes, written } = &mut *carry;
            let rest = &bytes[*written..];
            match write_some(self.fd, &rest[..rest.len().min(self.chunk)], deadline) {
                Ok(Some(n)) => *written += n,
                Ok(None) => return false,
                Err(_) => *written = bytes.len(),
            }
        }
    }

    fn take_dropped(&self) -> u64 {
        std::mem::take(&mut lock(&self.pending).dropped)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves bytes, nothing inconsistent:
    // keep going.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The lock, if it can be had before `deadline`.
fn lock_until<T>(mutex: &Mutex<T>, deadline: Instant) -> Option<MutexGuard<'_, T>> {
    loop {
        match mutex.try_lock() {
            Ok(guard) => return Some(guard),
            Err(std::sync::TryLockError::Poisoned(poisoned)) => return Some(poisoned.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) if Instant::now() >= deadline => return None,
            Err(std::sync::TryLockError::WouldBlock) => thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// Writes some of `bytes` once `fd` can take them without blocking,
/// waiting until `deadline` at most: `Ok(None)` if it could not by then.
fn write_some(fd: RawFd, bytes: &[u8], deadline: Instant) -> io::Result<Option<usize>> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut poll = libc::pollfd {
            fd,
            events: libc::POLLOUT,
            revents: 0,
        };
        let timeout = i32::try_from(left.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: one valid pollfd, for the length we pass.
        let ready = unsafe { libc::poll(&mut poll, 1, timeout) };
        if ready < 0 {
            let error = io::Error::last_os_error();
            if error.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(error);
        }
        if ready == 0 {
            return Ok(None);
        }
        // Writable, or an error or hang-up that the write will report.
        // SAFETY: `bytes` is valid for `bytes.len()` bytes.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n >= 0 {
            return Ok(Some(n as usize));
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

fn is_regular_file(fd: RawFd) -> bool {
    // SAFETY: fstat only fills the struct we hand it.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::fstat(fd, &mut stat) } == 0;
    ok && (stat.st_mode & libc::S_IFMT) == libc::S_IFREG
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
        // come out at exit: carry on without it.
        let _ = thread::Builder::new()
            .name("console-flush".into())
            .spawn(|| {
                loop {
                    thread::sleep(FLUSH_INTERVAL);
                    flush_until(Instant::now() + FLUSH_INTERVAL);
                }
            });
        Console {
            out: Buffer::new("stdout", libc::STDOUT_FILENO),
            err: Buffer::new("stderr", libc::STDERR_FILENO),
        }
    })
}

/// Writes out both streams, waiting for readers until `deadline` at most,
/// and says how many lines were dropped once a stream has caught up.
fn flush_until(deadline: Instant) {
    let console = console();
    for buffer in [&console.out, &console.err] {
        if buffer.write_out(deadline) {
            let dropped = buffer.take_dropped();
            if dropped > 0 {
                warn!(
                    "{} dropped from {}: nobody read it for a while (a full pipe or a paused \
                     terminal), and the program did not wait",
                    Count::new(dropped, "line"),
                    buffer.name
                );
            }
        }
    }
    // The notes went to stderr.
    console.err.write_out(deadline);
}

/// One of the two buffered streams; `tracing` logs go to [`STDERR`].
#[derive(Clone, Copy, Debug)]
pub struct Stream(fn(&Console) -> &Buffer);

/// The buffered standard output (see the module docs).
pub const STDOUT: Stream = Stream(|console| &console.out);

/// The buffered standard error.
pub const STDERR: Stream = Stream(|console| &console.err);

impl io::Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (self.0)(console()).append(|pending| pending.extend_from_slice(buf));
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        (self.0)(console()).write_out(Instant::now() + EXIT_WAIT);
        Ok(())
    }
}

/// Prints one line to the buffered standard output.
pub fn line(text: std::fmt::Arguments<'_>) {
    console().out.append(|pending| {
        // Formatting into a Vec cannot fail.
        let _ = io::Write::write_fmt(pending, text);
        pending.push(b'\n');
    });
}

/// Writes out everything buffered so far, waiting at most [`EXIT_WAIT`]
/// for a reader. Call it before the process exits.
pub fn flush() {
    flush_until(Instant::now() + EXIT_WAIT);
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
        let buffer = Buffer::new("test", write_end);
        let line = [b'x'; 99];
        let started = Instant::now();
        // 3 MiB of lines, with nobody reading the pipe.
        for _ in 0..32 * 1024 {
            buffer.append(|pending| {
                pending.extend_from_slice(&line);
                pending.push(b'\n');
            });
        }
        assert!(!buffer.write_out(Instant::now() + Duration::from_millis(50)));
        assert!(started.elapsed() < Duration::from_secs(5));
        let dropped = buffer.take_dropped();
        assert!(dropped > 16 * 1024, "{dropped} lines dropped");

        // A reader comes: everything kept comes out, whole lines, in order.
        let reader = thread::spawn(move || {
            let mut all = Vec::new();
            read_end.read_to_end(&mut all).unwrap();
            all
        });
        assert!(buffer.write_out(Instant::now() + Duration::from_secs(10)));
        // SAFETY: closing our write end lets the reader see the end.
        unsafe { libc::close(write_end) };
        let all = reader.join().unwrap();
        assert_eq!(all.len() as u64, (32 * 1024 - dropped) * 100);
        assert!(
            all.chunks(100)
                .all(|chunk| chunk[..99] == line && chunk[99] == b'\n')
        );
    }
}
