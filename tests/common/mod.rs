//! Test harness: real binaries as child processes, on 127.0.0.1.
//!
//! - [`Proc`] starts a role (through the library's [`Child`]), collects its
//!   stdout and stderr line by line, and kills it when dropped, so a failing
//!   assertion never leaves a process behind.
//! - Waiting is always for a line the process prints (a readiness signal),
//!   bounded by a deadline; a timeout fails the test with everything the
//!   process printed so far.
//! - Listening roles bind `tcp://127.0.0.1:*` (any free port) and the test
//!   reads the port from their "listening" line; where a port must be known
//!   before its server starts, [`free_port`] asks the kernel for one.

#![allow(dead_code)] // each test file uses a different part of the harness

use std::net::TcpListener;
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::Duration;

use zmq_reqrep::plumbing::child::{Child, Stream};

pub const SERVER: &str = env!("CARGO_BIN_EXE_reqrep_server");
pub const CLIENT: &str = env!("CARGO_BIN_EXE_reqrep_client");
pub const BROKER: &str = env!("CARGO_BIN_EXE_broker");
pub const WORKER: &str = env!("CARGO_BIN_EXE_worker");
pub const BROKER_CLIENT: &str = env!("CARGO_BIN_EXE_broker_client");

/// Generous bound for anything that should take milliseconds.
pub const SOON: Duration = Duration::from_secs(10);

/// A running role; killed (SIGKILL) and reaped when dropped, with all it
/// printed shown if the test is failing.
pub struct Proc {
    pub label: String,
    child: Child,
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
            .envs(env.iter().copied());
        let child = Child::start(command).unwrap_or_else(|e| panic!("{e:#}"));
        Proc {
            label: child.name().to_string(),
            child,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    pub fn stdout(&self) -> Vec<String> {
        self.child.lines(Stream::Out)
    }

    pub fn stderr(&self) -> Vec<String> {
        self.child.lines(Stream::Err)
    }

    fn describe(&self) -> String {
        format!(
            "--- {} ---\nstdout:\n{}\nstderr:\n{}",
            self.label,
            self.stdout().join("\n"),
            self.stderr().join("\n")
        )
    }

    fn wait_for(
        &self,
        stream: Stream,
        needle: &str,
        count: usize,
        timeout: Duration,
    ) -> Vec<String> {
        self.child
            .wait_for(stream, needle, count, timeout)
            .unwrap_or_else(|e| panic!("{e:#}\n{}", self.describe()))
    }

    /// Waits for a stderr (log) line containing `needle`; returns it.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> String {
        self.wait_log_count(needle, 1, timeout).remove(0)
    }

    /// Waits for `count` stderr lines containing `needle`.
    pub fn wait_log_count(&self, needle: &str, count: usize, timeout: Duration) -> Vec<String> {
        self.wait_for(Stream::Err, needle, count, timeout)
    }

    /// Waits for `count` stdout lines containing `needle`.
    pub fn wait_out_count(&self, needle: &str, count: usize, timeout: Duration) -> Vec<String> {
        self.wait_for(Stream::Out, needle, count, timeout)
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
        self.child.wait(timeout).ok()
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

    pub fn signal(&mut self, signal: i32) {
        self.child.signal(signal);
    }

    pub fn kill(&mut self) {
        self.child.kill();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("{}", self.describe());
        }
        // Dropping `child` kills the process if it still runs.
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

/// The reply lines a client printed.
pub fn reply_lines(client: &Proc) -> Vec<String> {
    client
        .stdout()
        .into_iter()
        .filter(|line| line.contains(" got "))
        .collect()
}

/// Starts a broker in `mode` on free ports: (broker, frontend, backend).
pub fn start_broker(mode: &str, extra: &[&str]) -> (Proc, String, String) {
    let mut args = vec![
        "--mode",
        mode,
        "--frontend",
        "tcp://127.0.0.1:*",
        "--backend",
        "tcp://127.0.0.1:*",
    ];
    args.extend_from_slice(extra);
    let broker = Proc::start(BROKER, &args);
    let mut endpoints = broker.wait_endpoints("frontend ROUTER on");
    let backend = endpoints.pop().unwrap();
    let frontend = endpoints.pop().unwrap();
    (broker, frontend, backend)
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

/// Waits for a broker started with `--http 127.0.0.1:0` to log its page,
/// and returns the page's address (`127.0.0.1:PORT`).
pub fn wait_page(broker: &Proc) -> String {
    let line = broker.wait_log("live page on http://", SOON);
    let after = line.split("http://").nth(1).unwrap();
    after.split('/').next().unwrap().to_string()
}
