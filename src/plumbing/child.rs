//! Child processes, for the benchmark (the real role binaries, and the
//! bench binary itself for the baselines, `bench peer ...`) and for the
//! integration tests, which wrap it in their own harness.
//!
//! A [`Child`] collects its stdout and stderr line by line, can wait for a
//! line (a readiness signal, never a sleep), reports its peak memory and CPU
//! time from `/proc`, and is killed when dropped.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};

/// Which output stream of a child.
#[derive(Clone, Copy, Debug)]
pub enum Stream {
    /// Standard output: a client's reply lines, a peer's result.
    Out,
    /// Standard error: the roles' log lines.
    Err,
}

/// The output of one stream so far. The reader thread only appends raw
/// chunks: splitting into lines happens when someone looks, so that reading
/// a chatty child costs the benchmark next to nothing while it measures.
#[derive(Default)]
struct Lines {
    state: Mutex<Output>,
    grew: Condvar,
}

#[derive(Default)]
struct Output {
    bytes: Vec<u8>,
    closed: bool,
}

impl Output {
    /// Complete lines (and the last one, once the stream has ended).
    fn lines(&self) -> Vec<String> {
        let complete = match self.bytes.iter().rposition(|&b| b == b'\n') {
            _ if self.closed => &self.bytes[..],
            Some(end) => &self.bytes[..end],
            None => &[],
        };
        String::from_utf8_lossy(complete)
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Lines {
    fn collect(mut stream: impl Read + Send + 'static) -> Arc<Lines> {
        let lines = Arc::new(Lines::default());
        let sink = Arc::clone(&lines);
        thread::spawn(move || {
            let mut chunk = vec![0u8; 64 * 1024];
            loop {
                match stream.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => {
                        sink.lock().bytes.extend_from_slice(&chunk[..n]);
                        sink.grew.notify_all();
                    }
                    Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            sink.lock().closed = true;
            sink.grew.notify_all();
        });
        lines
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Output> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running child process, killed when dropped.
pub struct Child {
    name: String,
    process: std::process::Child,
    stdout: Arc<Lines>,
    stderr: Arc<Lines>,
}

/// Where the role binaries are: next to the running executable (both live
/// in `target/release/` or `target/debug/`).
pub fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the bench executable")?;
    let dir = exe
        .parent()
        .ok_or_else(|| anyhow!("the bench executable has no directory"))?;
    Ok(dir.join(name))
}

impl Child {
    /// Starts `program` with `args`.
    pub fn spawn(program: &Path, args: &[String]) -> anyhow::Result<Child> {
        let mut command = Command::new(program);
        command.args(args);
        Child::start(command)
    }

    /// Starts a prepared command (its environment set up by the caller),
    /// with stdin closed and stdout and stderr collected.
    pub fn start(mut command: Command) -> anyhow::Result<Child> {
        let program = PathBuf::from(command.get_program());
        let args: Vec<String> = command
            .get_args()
            .map(|arg| arg.to_string_lossy().into_owned())
            .collect();
        let mut process = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let (Some(stdout), Some(stderr)) = (process.stdout.take(), process.stderr.take()) else {
            bail!("{}: no pipes to read from", program.display());
        };
        let name = format!(
            "{} {}",
            program
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default(),
            args.join(" ")
        );
        Ok(Child {
            name,
            process,
            stdout: Lines::collect(stdout),
            stderr: Lines::collect(stderr),
        })
    }

    /// The program and its arguments, for messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Starts a role binary (a sibling of this executable) with `args`.
    pub fn role(name: &str, args: &[String]) -> anyhow::Result<Child> {
        Child::spawn(&sibling(name)?, args)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.process.id()
    }

    fn stream(&self, stream: Stream) -> &Lines {
        match stream {
            Stream::Out => &self.stdout,
            Stream::Err => &self.stderr,
        }
    }

    /// Every line of `stream` so far.
    pub fn lines(&self, stream: Stream) -> Vec<String> {
        self.stream(stream).lock().lines()
    }

    /// Waits until `count` lines of `stream` contain `needle`.
    pub fn wait_for(
        &self,
        stream: Stream,
        needle: &str,
        count: usize,
        timeout: Duration,
    ) -> anyhow::Result<Vec<String>> {
        let lines = self.stream(stream);
        let deadline = Instant::now() + timeout;
        let mut state = lines.lock();
        loop {
            let found: Vec<String> = state
                .lines()
                .into_iter()
                .filter(|l| l.contains(needle))
                .collect();
            if found.len() >= count {
                return Ok(found);
            }
            let now = Instant::now();
            if now >= deadline || state.closed {
                drop(state);
                let tail: Vec<String> = self.lines(Stream::Err).into_iter().rev().take(5).collect();
                bail!(
                    "{}: no {count} lines with {needle:?} within {timeout:?}; last log lines: {tail:?}",
                    self.name
                );
            }
            state = lines
                .grew
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Waits for the process to end, at most `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.process.try_wait()? {
                // Let the readers take in what is left in the pipes.
                for lines in [&self.stdout, &self.stderr] {
                    let mut state = lines.lock();
                    let until = Instant::now() + Duration::from_secs(2);
                    while !state.closed && Instant::now() < until {
                        state = lines
                            .grew
                            .wait_timeout(state, Duration::from_millis(50))
                            .unwrap_or_else(|p| p.into_inner())
                            .0;
                    }
                }
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!("{} still running after {timeout:?}", self.name);
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Sends a signal (`libc::SIGTERM`, ...), if the process still runs.
    pub fn signal(&mut self, signal: libc::c_int) {
        if let Ok(None) = self.process.try_wait() {
            // SAFETY: kill(2) on our own child, not yet reaped, so its pid
            // cannot belong to anyone else.
            unsafe {
                libc::kill(self.process.id() as libc::pid_t, signal);
            }
        }
    }

    /// SIGKILL, and waits for the end.
    pub fn kill(&mut self) {
        let _ = self.process.kill();
        let _ = self.wait(Duration::from_secs(10));
    }

    /// SIGTERM, then SIGKILL if it has not ended within two seconds.
    pub fn stop(&mut self) {
        self.signal(libc::SIGTERM);
        if self.wait(Duration::from_secs(2)).is_err() {
            self.kill();
        }
    }

    /// Peak resident memory so far (VmHWM), in KiB, while it runs.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// CPU time used so far (user + system), while it runs.
    pub fn cpu_time(&self) -> Option<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).ok()?;
        // Fields after the command name, which is in parentheses and may hold spaces.
        let rest = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 =
            fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        // SAFETY: sysconf has no preconditions.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        (per_second > 0).then(|| Duration::from_secs_f64(ticks as f64 / per_second as f64))
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if let Ok(None) = self.process.try_wait() {
            let _ = self.process.kill();
            let _ = self.process.wait();
        }
    }
}
