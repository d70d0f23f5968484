//! Test harness: real binaries as child processes, on 127.0.0.1.
//!
//! - [`Proc`] starts a role (through the library's [`Child`]), collects its
//!   stdout and stderr line by line, and kills it when dropped, so a failing
//!   assertion never leaves a process behind.
//! - Waiting is always for a line the process prints (a readiness signal),
//!   bounded by a deadline; a timeout fails the test with everything the
//!   process printed so far.
//! - Listening roles bind `tcp://127.0.0.1:*` (any free port) and the test
//!   reads the port from their "listening" line ([`start_server`],
//!   [`start_broker`]); where a port must be known before its server starts,
//!   [`free_port`] asks the kernel for one ([`start_broker_on`]).
//! - The test's own sockets ([`test_socket`], [`test_bound`], [`test_req`])
//!   time out rather than hang; its files live in a [`TempDir`], removed
//!   even when the test fails.
//! - [`usage_error`] checks what every bad command line must give: exit
//!   code 2 and one line, `error: ...`.

#![allow(dead_code)] // each test file uses a different part of the harness

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

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

    /// The stderr (log) lines printed so far that contain `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        self.stderr()
            .into_iter()
            .filter(|line| line.contains(needle))
            .collect()
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

/// `tcp://127.0.0.1:PORT` at a port that was free a moment ago.
pub fn free_endpoint() -> String {
    format!("tcp://127.0.0.1:{}", free_port())
}

/// A socket of the test's own, with timeouts so that a missing message
/// fails the test instead of hanging it, and no linger at its end.
pub fn test_socket(ctx: &zmq::Context, kind: zmq::SocketType) -> zmq::Socket {
    let socket = ctx.socket(kind).unwrap();
    socket.set_linger(0).unwrap();
    socket.set_rcvtimeo(10_000).unwrap();
    socket.set_sndtimeo(10_000).unwrap();
    socket
}

/// A [`test_socket`] bound to `endpoint` (`tcp://127.0.0.1:*` for any free
/// port); returns it and the endpoint it is bound to.
pub fn test_bound(
    ctx: &zmq::Context,
    kind: zmq::SocketType,
    endpoint: &str,
) -> (zmq::Socket, String) {
    let socket = test_socket(ctx, kind);
    socket.bind(endpoint).unwrap();
    let endpoint = socket.get_last_endpoint().unwrap().unwrap();
    (socket, endpoint)
}

/// A REQ [`test_socket`] connected to `endpoint`.
pub fn test_req(ctx: &zmq::Context, endpoint: &str) -> zmq::Socket {
    let socket = test_socket(ctx, zmq::REQ);
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

/// Starts a reqrep_server on a free port with `extra` options: (server,
/// endpoint).
pub fn start_server(extra: &[&str]) -> (Proc, String) {
    let mut args = vec!["--bind", "tcp://127.0.0.1:*"];
    args.extend_from_slice(extra);
    let server = Proc::start(SERVER, &args);
    let endpoint = server.wait_endpoints("REP listening on").remove(0);
    (server, endpoint)
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

/// Starts a broker in `mode` on endpoints chosen in advance, so that it can
/// be started again on the same ones, with `extra` options.
pub fn start_broker_on(mode: &str, frontend: &str, backend: &str, extra: &[&str]) -> Proc {
    let mut args = vec!["--mode", mode, "--frontend", frontend, "--backend", backend];
    args.extend_from_slice(extra);
    let broker = Proc::start(BROKER, &args);
    broker.wait_log("frontend ROUTER on", SOON);
    broker
}

/// Starts `worker --mode lb` named `name`, connected to `connect` (one
/// backend, or several separated by commas), with `extra` options.
pub fn start_lb_worker(connect: &str, name: &str, heartbeat_ms: &str, extra: &[&str]) -> Proc {
    let mut args = vec![
        "--connect",
        connect,
        "--mode",
        "lb",
        "--name",
        name,
        "--heartbeat-ms",
        heartbeat_ms,
    ];
    args.extend_from_slice(extra);
    Proc::start(WORKER, &args)
}

/// Runs `exe` with `args` (and `env`) to its end, which must be a usage
/// error (see [`expect_usage_error`]); returns its one line.
pub fn usage_error(exe: &str, args: &[&str], env: &[(&str, &str)], needles: &[&str]) -> String {
    let mut proc = Proc::start_with_env(exe, args, env);
    usage_error_of(&mut proc, &format!("{exe} {args:?}"), needles)
}

/// Waits for `proc` to end with a usage error: exit code 2 and exactly one
/// line on stderr, `error: ...`, containing every one of `needles`; returns
/// that line.
pub fn expect_usage_error(proc: &mut Proc, needles: &[&str]) -> String {
    let label = proc.label.clone();
    usage_error_of(proc, &label, needles)
}

fn usage_error_of(proc: &mut Proc, what: &str, needles: &[&str]) -> String {
    proc.expect_exit(2, SOON);
    let mut stderr = proc.stderr();
    assert_eq!(
        stderr.len(),
        1,
        "{what}: expected one line, got {stderr:#?}"
    );
    let line = stderr.remove(0);
    assert!(line.starts_with("error: "), "{what}: {line}");
    for needle in needles {
        assert!(line.contains(needle), "{what}: {needle:?} not in {line}");
    }
    line
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

/// A pyzmq REQ client with security options (`secure_peers.py req-client`):
/// `count` requests to `endpoint`.
pub fn py_secure_client(python: &str, endpoint: &str, count: u32, options: &[&str]) -> Proc {
    let script = py_script("secure_peers.py");
    let count = count.to_string();
    let mut args = vec![
        "-u",
        script.as_str(),
        "req-client",
        endpoint,
        count.as_str(),
    ];
    args.extend_from_slice(options);
    Proc::start(python, &args)
}

/// Path of an example (`examples/`) built by `cargo test`: in
/// `target/<profile>/examples/`, next to the `deps/` folder holding the
/// test's own executable.
pub fn example(name: &str) -> String {
    let test_exe = std::env::current_exe().expect("the test's own path");
    // target/<profile>/deps/TEST-HASH -> target/<profile>/examples/NAME
    let path: PathBuf = test_exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("examples").join(name))
        .expect("the test runs from target/<profile>/deps/");
    assert!(
        path.exists(),
        "{} is missing: a plain `cargo test` builds the examples; with a filter \
         such as `--test examples`, run `cargo build --examples` first",
        path.display()
    );
    path.to_string_lossy().into_owned()
}

/// A directory of the test's own under the system's temporary directory,
/// empty when made and removed, with all it holds, when dropped (a failing
/// test included).
pub struct TempDir(PathBuf);

impl TempDir {
    /// `zmq-reqrep-<pid>-<name>`.
    pub fn new(name: &str) -> TempDir {
        TempDir::named(&format!("zmq-reqrep-{}-{name}", std::process::id()))
    }

    /// Exactly `dir_name`: docker compose names a project after the
    /// directory of its file.
    pub fn named(dir_name: &str) -> TempDir {
        let path = std::env::temp_dir().join(dir_name);
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.0
    }

    /// The path of `name` in the directory, as text for a command line.
    pub fn path(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }

    /// Writes `contents` to `name` in the directory; returns its path.
    pub fn file(&self, name: &str, contents: impl AsRef<[u8]>) -> String {
        std::fs::write(self.0.join(name), contents).unwrap();
        self.path(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Waits for a broker started with `--http 127.0.0.1:0` to log its page,
/// and returns the page's address (`127.0.0.1:PORT`).
pub fn wait_page(broker: &Proc) -> String {
    let line = broker.wait_log("live page on http://", SOON);
    let after = line.split("http://").nth(1).unwrap();
    after.split('/').next().unwrap().to_string()
}

/// Waits (at most 10 s) until every thread of process `pid` is stopped:
/// SIGSTOP is delivered after `kill` returns.
pub fn wait_stopped(pid: u32) {
    let deadline = Instant::now() + SOON;
    let all_stopped = || {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the process's threads");
        tasks.flatten().all(|task| {
            // "pid (name) STATE ...": the state follows the last ')'.
            std::fs::read_to_string(task.path().join("stat")).is_ok_and(|stat| {
                stat.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('T')
            })
        })
    };
    while !all_stopped() {
        assert!(
            Instant::now() < deadline,
            "process {pid} not stopped within {SOON:?}"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// Stops `proc` (SIGSTOP, as `docker compose pause` freezes a container)
/// for `pause`, counted from the moment all its threads are stopped, then
/// lets it run again (SIGCONT). Returns when it was stopped and resumed.
pub fn stop_for(
    proc: &mut Proc,
    pause: Duration,
) -> (std::time::SystemTime, std::time::SystemTime) {
    proc.signal(libc::SIGSTOP);
    wait_stopped(proc.pid());
    let stopped = std::time::SystemTime::now();
    thread::sleep(pause);
    let resumed = std::time::SystemTime::now();
    proc.signal(libc::SIGCONT);
    (stopped, resumed)
}
