//! Test harness: real binaries as child processes, on 127.0.0.1.
//!
//! - [`Proc`] starts a role, collects its stdout and stderr line by line, and
//!   kills it when dropped, so a failing assertion never leaves a process
//!   behind.
//! - Waiting is always for a line the process prints (a readiness signal),
//!   bounded by a deadline; a timeout fails the test with everything the
//!   process printed so far.
//! - Listening roles bind `tcp://127.0.0.1:*` (any free port) and the test
//!   reads the port from their "listening" line; where a port must be known
//!   before its server starts, [`free_port`] asks the kernel for one.

#![allow(dead_code)] // each test file uses a different part of the harness

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub const SERVER: &str = env!("CARGO_BIN_EXE_reqrep_server");
pub const CLIENT: &str = env!("CARGO_BIN_EXE_reqrep_client");
pub const BROKER: &str = env!("CARGO_BIN_EXE_broker");
pub const WORKER: &str = env!("CARGO_BIN_EXE_worker");
pub const BROKER_CLIENT: &str = env!("CARGO_BIN_EXE_broker_client");

/// Generous bound for anything that should take milliseconds.
pub const SOON: Duration = Duration::from_secs(10);

/// Lines of one output stream, appended by a reader thread.
#[derive(Default)]
struct Lines {
    lines: Mutex<(Vec<String>, bool)>, // (lines, stream closed)
    grew: Condvar,
}

impl Lines {
    fn collect(stream: impl Read + Send + 'static) -> Arc<Lines> {
        let lines = Arc::new(Lines::default());
        let sink = Arc::clone(&lines);
        thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                sink.lines.lock().unwrap().0.push(line);
                sink.grew.notify_all();
            }
            sink.lines.lock().unwrap().1 = true;
            sink.grew.notify_all();
        });
        lines
    }

    fn snapshot(&self) -> Vec<String> {
        self.lines.lock().unwrap().0.clone()
    }

    /// Waits until `count` lines match, or the deadline passes.
    fn wait_count(
        &self,
        pred: &dyn Fn(&str) -> bool,
        count: usize,
        deadline: Instant,
    ) -> Result<Vec<String>, Vec<String>> {
        let mut guard = self.lines.lock().unwrap();
        loop {
            let matching: Vec<String> = guard.0.iter().filter(|l| pred(l)).cloned().collect();
            if matching.len() >= count {
                return Ok(matching);
            }
            let now = Instant::now();
            if now >= deadline || guard.1 {
                return Err(guard.0.clone());
            }
            guard = self.grew.wait_timeout(guard, deadline - now).unwrap().0;
        }
    }
}

/// A running role; killed (SIGKILL) and reaped when dropped.
pub struct Proc {
    pub label: String,
    child: Child,
    stdout: Arc<Lines>,
    stderr: Arc<Lines>,
    status: Option<ExitStatus>,
}

impl Proc {
    /// Starts `exe` with `args`, with a clean environment: no option can be
    /// set behind the test's back by a variable of the machine running it.
    pub fn start(exe: &str, args: &[&str]) -> Proc {
        Self::start_with_env(exe, args, &[])
    }

    pub fn start_with_env(exe: &str, args: &[&str], env: &[(&str, &str)]) -> Proc {
        let mut command = Command::new(exe);
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting {exe}: {e}"));
        let stdout = Lines::collect(child.stdout.take().unwrap());
        let stderr = Lines::collect(child.stderr.take().unwrap());
        let label = format!(
            "{} {}",
            PathBuf::from(exe).file_name().unwrap().to_string_lossy(),
            args.join(" ")
        );
        Proc {
            label,
            child,
            stdout,
            stderr,
            status: None,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn stdout(&self) -> Vec<String> {
        self.stdout.snapshot()
    }

    pub fn stderr(&self) -> Vec<String> {
        self.stderr.snapshot()
    }

    fn describe(&self) -> String {
        format!(
            "--- {} ---\nstdout:\n{}\nstderr:\n{}",
            self.label,
            self.stdout().join("\n"),
            self.stderr().join("\n")
        )
    }

    /// Waits for a stderr (log) line containing `needle`; returns it.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> String {
        self.wait_log_count(needle, 1, timeout).remove(0)
    }

    /// Waits for `count` stderr lines containing `needle`.
    pub fn wait_log_count(&self, needle: &str, count: usize, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        self.stderr
            .wait_count(&|line| line.contains(needle), count, deadline)
            .unwrap_or_else(|_| {
                panic!(
                    "no {count} log lines with {needle:?} within {timeout:?}\n{}",
                    self.describe()
                )
            })
    }

    /// Waits for `count` stdout lines containing `needle`.
    pub fn wait_out_count(&self, needle: &str, count: usize, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        self.stdout
            .wait_count(&|line| line.contains(needle), count, deadline)
            .unwrap_or_else(|_| {
                panic!(
                    "no {count} stdout lines with {needle:?} within {timeout:?}\n{}",
                    self.describe()
                )
            })
    }

    /// Waits for a log line containing `needle` and returns the tcp
    /// endpoints in it ("listening on tcp://0.0.0.0:40123"), with 127.0.0.1
    /// as host.
    pub fn wait_endpoints(&self, needle: &str) -> Vec<String> {
        endpoints_in(&self.wait_log(needle, SOON))
    }

    /// The same, for a line on stdout (the Python peers print there).
    pub fn wait_endpoints_out(&self, needle: &str) -> Vec<String> {
        endpoints_in(&self.wait_out_count(needle, 1, SOON)[0])
    }

    /// Waits for the process to exit, at most `timeout`; `None` if it is
    /// still running then.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.status {
                return Some(status);
            }
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.status = Some(status);
                // Let the reader threads drain what is left in the pipes.
                let end = Instant::now() + Duration::from_secs(2);
                let _ = self.stdout.wait_count(&|_| false, 1, end);
                let _ = self.stderr.wait_count(&|_| false, 1, end);
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for the exit and asserts its code.
    pub fn expect_exit(&mut self, code: i32, timeout: Duration) {
        match self.wait_exit(timeout) {
            Some(status) => assert_eq!(
                status.code(),
                Some(code),
                "exit status {status}\n{}",
                self.describe()
            ),
            None => panic!("still running after {timeout:?}\n{}", self.describe()),
        }
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.pid(), signal);
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.wait_exit(SOON);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if thread::panicking() {
            eprintln!("{}", self.describe());
        }
    }
}

fn endpoints_in(line: &str) -> Vec<String> {
    line.split_whitespace()
        .filter_map(|word| word.trim_end_matches(',').strip_prefix("tcp://"))
        .map(|address| {
            let port = address.rsplit(':').next().unwrap();
            format!("tcp://127.0.0.1:{port}")
        })
        .collect()
}

/// A TCP port that was free a moment ago (for servers that must start on a
/// port the test chose in advance).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A REQ socket of the test's own, connected to `endpoint`, with timeouts so
/// that a missing reply fails the test instead of hanging it.
pub fn test_req(ctx: &zmq::Context, endpoint: &str) -> zmq::Socket {
    let socket = ctx.socket(zmq::REQ).unwrap();
    socket.set_linger(0).unwrap();
    socket.set_rcvtimeo(10_000).unwrap();
    socket.set_sndtimeo(10_000).unwrap();
    socket.connect(endpoint).unwrap();
    socket
}

/// The number in "served N requests" (the summary a server logs at exit).
pub fn served(proc: &Proc) -> u64 {
    let line = proc.wait_log("served ", SOON);
    let after = line.split("served ").nth(1).unwrap();
    after.split_whitespace().next().unwrap().parse().unwrap()
}

/// Python with pyzmq, for interoperability tests: `$PYTHON`, else the
/// project's `.venv` (see the README), else `python3`. `None` (with a note on
/// stderr) if none can import zmq, unless REQUIRE_PYZMQ=1 demands it.
pub fn pyzmq() -> Option<String> {
    let venv = format!("{}/.venv/bin/python", env!("CARGO_MANIFEST_DIR"));
    let python = std::env::var("PYTHON").unwrap_or_else(|_| {
        if std::path::Path::new(&venv).exists() {
            venv
        } else {
            "python3".into()
        }
    });
    let works = Command::new(&python)
        .args(["-c", "import zmq"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if works {
        return Some(python);
    }
    if std::env::var("REQUIRE_PYZMQ").as_deref() == Ok("1") {
        panic!("REQUIRE_PYZMQ=1 but {python} cannot import zmq (set PYTHON to a venv's python)");
    }
    skipped(&format!(
        "{python} with pyzmq not found (set PYTHON=/path/to/venv/bin/python)"
    ));
    None
}

/// Says on the real stderr, past the test harness's capture, that a test
/// did not run and why.
pub fn skipped(why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "skipped: {why}");
}

/// Path of a peer script under tests/py/.
pub fn py_script(name: &str) -> String {
    format!("{}/tests/py/{name}", env!("CARGO_MANIFEST_DIR"))
}
