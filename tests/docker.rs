//! The compose files on a real Docker engine: the lecture's experiments as
//! the students run them.
//!
//! Where no engine answers `docker info`, these tests print that they were
//! skipped; with REQUIRE_DOCKER=1 (set by `.ci/run`) they fail instead.
//!
//! They never get in the way of an exercise a student has running, nor of
//! each other, nor of another checkout's tests on the same engine:
//! - the image is built once per run under a tag of this checkout's own
//!   (`zmq-reqrep:test-…`, through the files' IMAGE variable), never over
//!   the students' `zmq-reqrep`;
//! - every stack has its own project name and free host ports on 127.0.0.1
//!   (SERVER_PORTS, FRONTEND_PORT, BACKEND_PORT, HTTP_PORT, and BROKER1_...
//!   and BROKER2_FRONTEND_PORT and _BACKEND_PORT), never 5555 to 5558 nor
//!   8080;
//! - every stack is taken down (`down -v`) when its test ends, passed or
//!   failed; the variables the files pass through are cleared from what
//!   `docker compose` inherits, so a COUNT or RUST_LOG in the shell running
//!   `cargo test` changes nothing.
//!
//! The stacks run one at a time: on two cores, parallel stacks would make
//! the timings (the 3 s `stop`) meaningless.
//!
//! The Docker Swarm test deploys the broker file with `docker stack deploy`
//! on this engine as a one-node swarm: it runs `docker swarm init` if the
//! engine is in no swarm, and then leaves that swarm at the end, passed or
//! failed (never a swarm it found). Its stack is named `zr<pid>-…` like the
//! compose projects, and is removed, networks included, before the test
//! returns. Swarm publishes host ports on every interface, not 127.0.0.1
//! alone: the test's are free ports, never 5555/5556.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use common::{TempDir, free_port, skipped, test_req};

const BUILD_TIMEOUT: Duration = Duration::from_secs(20 * 60);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
/// Generous bound for containers to start, answer, or exit.
const STACK_TIMEOUT: Duration = Duration::from_secs(60);

const REQREP: &str = "docker-compose.reqrep.yml";
const BROKER: &str = "docker-compose.broker.yml";
const FAILOVER: &str = "docker-compose.failover.yml";

/// The host ports of the two brokers in [`FAILOVER`].
const FAILOVER_PORTS: [&str; 4] = [
    "BROKER1_FRONTEND_PORT",
    "BROKER1_BACKEND_PORT",
    "BROKER2_FRONTEND_PORT",
    "BROKER2_BACKEND_PORT",
];

/// The broker file's second file for Docker Swarm: host-mode ports.
const SWARM_HOST: &str = "docker-compose.broker.swarm-host.yml";

/// The broker file's addition for CurveZMQ: keys as Docker secrets.
const CURVE: &str = "docker-compose.curve.yml";

/// The two exercises' additions that put `wire` relays in the way.
const REQREP_WIRE: &str = "docker-compose.reqrep.wire.yml";
const BROKER_WIRE: &str = "docker-compose.broker.wire.yml";

/// The variables of the compose files that choose the image and the
/// published ports.
const SETTINGS: &[&str] = &[
    "IMAGE",
    "PUBLISH_IP",
    "SERVER_PORTS",
    "FRONTEND_PORT",
    "BACKEND_PORT",
    "HTTP_PORT",
    "BROKER1_FRONTEND_PORT",
    "BROKER1_BACKEND_PORT",
    "BROKER2_FRONTEND_PORT",
    "BROKER2_BACKEND_PORT",
    "COMPOSE_PROJECT_NAME",
    "COMPOSE_FILE",
    "WORKERS",
    "CLIENTS",
    "ENDPOINT_MODE",
    "KEYS_USER",
];

/// The variables the compose files pass through to the binaries. Neither
/// these nor [`SETTINGS`] may reach a test's stack unless the test sets them.
const PASSED_THROUGH: &[&str] = &[
    "COUNT",
    "INTERVAL_MS",
    "TIMEOUT_MS",
    "RETRIES",
    "MESSAGE",
    "REPLY",
    "ECHO",
    "WORK_MS",
    "CRASH_AFTER",
    "HANG_AFTER",
    "MODE",
    "HEARTBEAT_MS",
    "MAX_MESSAGE_BYTES",
    "RUST_LOG",
    "JSON",
];

/// Runs a command to the end, or kills it after `timeout`.
fn run(command: &mut Command, timeout: Duration) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {command:?}: {e}"));
    let (stdout, stderr) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let out = thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
    let err = thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} still running after {timeout:?}");
        }
        thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: out.join().unwrap().into_bytes(),
        stderr: err.join().unwrap().into_bytes(),
    }
}

/// Text as compose prints it, less the "erase line" escape (ESC [2K) that
/// compose 2.26 puts before log lines even when they go to a pipe.
fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).replace("\x1b[2K", "")
}

/// Runs a command that must succeed; returns its stdout and stderr.
fn ok_both(command: &mut Command, timeout: Duration) -> (String, String) {
    let output = run(command, timeout);
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert!(
        output.status.success(),
        "{command:?} failed: {}\n{stdout}\n{stderr}",
        output.status,
    );
    (stdout, stderr)
}

fn ok(command: &mut Command, timeout: Duration) -> String {
    ok_both(command, timeout).0
}

/// The image every stack runs: this checkout's own tag, so that two
/// checkouts testing on one engine never run each other's code.
fn image() -> String {
    let mut hasher = DefaultHasher::new();
    env!("CARGO_MANIFEST_DIR").hash(&mut hasher);
    format!("zmq-reqrep:test-{:08x}", hasher.finish() as u32)
}

/// Takes the one-stack-at-a-time lock if an engine answers and the image is
/// built; `None` (test skipped) without an engine, unless REQUIRE_DOCKER=1.
fn engine() -> Option<MutexGuard<'static, ()>> {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    static IMAGE: OnceLock<()> = OnceLock::new();
    let answers = run(Command::new("docker").arg("info"), COMMAND_TIMEOUT)
        .status
        .success();
    if !answers {
        if std::env::var("REQUIRE_DOCKER").as_deref() == Ok("1") {
            panic!("REQUIRE_DOCKER=1 but no Docker engine answers `docker info`");
        }
        skipped("no Docker engine answers `docker info` (.ci/run requires one)");
        return None;
    }
    let guard = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    IMAGE.get_or_init(|| {
        let started = Instant::now();
        ok(
            Command::new("docker").args(["build", "-t", &image(), env!("CARGO_MANIFEST_DIR")]),
            BUILD_TIMEOUT,
        );
        eprintln!("image {} built in {:?}", image(), started.elapsed());
    });
    Some(guard)
}

/// `count` consecutive host ports, all free on 127.0.0.1 a moment ago, as
/// compose's range syntax ("20100-20102").
fn free_port_range(count: u16) -> String {
    // Below the kernel's ephemeral range: a port from free_port() can be
    // taken, between the check and docker's bind, as the source port of any
    // outgoing connection on this machine (seen once); these cannot.
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u16, ephemeral_start.saturating_sub(count));
    assert!(
        low < high,
        "no room below the ephemeral ports ({ephemeral_start})"
    );
    let mut seed = std::hash::BuildHasher::hash_one(
        &std::collections::hash_map::RandomState::new(),
        std::process::id(),
    );
    for _ in 0..100 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let first = low + (seed >> 33) as u16 % (high - low);
        let last = first + (count - 1);
        if (first..=last).all(|port| TcpListener::bind(("127.0.0.1", port)).is_ok()) {
            return format!("{first}-{last}");
        }
    }
    panic!("no {count} consecutive free ports below {ephemeral_start} in 100 tries");
}

/// One compose project, taken down when dropped.
struct Stack {
    project: String,
    file: PathBuf,
    /// Further `-f` files, added to `file` in order.
    more_files: Vec<PathBuf>,
    /// `-p project` on every command; without it compose names the project
    /// itself, as it does for a student (from `name:` or the directory).
    explicit_project: bool,
    env: BTreeMap<String, String>,
}

impl Stack {
    /// A stack of one of the repository's files, under the project name
    /// `zr<pid>-<test>`, with free host ports and the test image.
    fn new(file: &str, test: &str, env: &[(&str, &str)]) -> Stack {
        let project = format!("zr{}-{test}", std::process::id());
        Stack::with(
            Path::new(env!("CARGO_MANIFEST_DIR")).join(file),
            project,
            true,
            env,
        )
    }

    fn with(file: PathBuf, project: String, explicit: bool, env: &[(&str, &str)]) -> Stack {
        let mut vars: BTreeMap<String, String> = [
            ("IMAGE", image()),
            ("SERVER_PORTS", free_port().to_string()),
            ("FRONTEND_PORT", free_port().to_string()),
            ("BACKEND_PORT", free_port().to_string()),
            ("HTTP_PORT", free_port().to_string()),
        ]
        .into_iter()
        .chain(FAILOVER_PORTS.map(|name| (name, free_port().to_string())))
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        vars.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Stack {
            project,
            file,
            more_files: Vec::new(),
            explicit_project: explicit,
            env: vars,
        }
    }

    fn var(&self, name: &str) -> &str {
        &self.env[name]
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("docker");
        command.arg("compose");
        if self.explicit_project {
            command.args(["-p", &self.project]);
        }
        command.arg("-f").arg(&self.file);
        for file in &self.more_files {
            command.arg("-f").arg(file);
        }
        command.args(args);
        for name in SETTINGS.iter().chain(PASSED_THROUGH) {
            command.env_remove(name);
        }
        command.envs(&self.env);
        command
    }

    fn compose(&self, args: &[&str]) -> String {
        ok(&mut self.command(args), COMMAND_TIMEOUT)
    }

    /// The containers of one service, stopped ones included.
    fn containers(&self, service: &str) -> Vec<String> {
        self.container_ids(&["ps", "-a", "-q", service])
    }

    /// Every container of the project, stopped ones included.
    fn all_containers(&self) -> Vec<String> {
        self.container_ids(&["ps", "-a", "-q"])
    }

    fn container_ids(&self, ps: &[&str]) -> Vec<String> {
        self.compose(ps)
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    }

    fn logs(&self) -> String {
        self.compose(&["logs", "--no-color"])
    }

    /// Waits until `count` containers of `service` are in the state `want`
    /// reports, e.g. exited, or healthy.
    fn wait_for(&self, service: &str, count: usize, want: &dyn Fn(&State) -> bool) -> Vec<State> {
        let deadline = Instant::now() + STACK_TIMEOUT;
        loop {
            let states: Vec<State> = self
                .containers(service)
                .iter()
                .map(|id| state(id))
                .collect();
            if states.iter().filter(|s| want(s)).count() >= count {
                return states;
            }
            assert!(
                Instant::now() < deadline,
                "{service}: not {count} containers as wanted after {STACK_TIMEOUT:?}: {states:#?}\n{}",
                self.logs()
            );
            thread::sleep(Duration::from_millis(500));
        }
    }

    /// `up -d`, then waits for the one client to exit: its state and its
    /// log.
    fn up_until_the_client_exits(&self) -> (State, String) {
        self.compose(&["up", "-d"]);
        let client = self.wait_for("client", 1, EXITED).remove(0);
        let log = logs(&client.id);
        (client, log)
    }

    /// Waits until the logs of `service` have `count` lines containing
    /// `needle` (a readiness signal); returns those lines.
    fn wait_log(&self, service: &str, needle: &str, count: usize) -> Vec<String> {
        let deadline = Instant::now() + STACK_TIMEOUT;
        loop {
            let lines: Vec<String> = self
                .compose(&["logs", "--no-color", service])
                .lines()
                .filter(|line| line.contains(needle))
                .map(str::to_owned)
                .collect();
            if lines.len() >= count {
                return lines;
            }
            assert!(
                Instant::now() < deadline,
                "{service}: not {count} log lines with {needle:?} after {STACK_TIMEOUT:?}\n{}",
                self.logs()
            );
            thread::sleep(Duration::from_millis(300));
        }
    }

    /// The host address a replica's container port is published on
    /// ("127.0.0.1:40123").
    fn published(&self, service: &str, index: usize, port: u16) -> String {
        self.compose(&[
            "port",
            "--index",
            &index.to_string(),
            service,
            &port.to_string(),
        ])
        .trim()
        .to_string()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let down = run(
            &mut self.command(&["down", "-v", "--remove-orphans", "-t", "1"]),
            COMMAND_TIMEOUT,
        );
        if !down.status.success() {
            eprintln!(
                "down failed for {}: {}",
                self.project,
                String::from_utf8_lossy(&down.stderr)
            );
        }
    }
}

#[derive(Debug)]
struct State {
    id: String,
    status: String,
    exit_code: i32,
    health: String,
    started_at: String,
    project: String,
}

fn state(id: &str) -> State {
    let text = ok(
        Command::new("docker").args([
            "inspect",
            "-f",
            "{{.State.Status}} {{.State.ExitCode}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}} {{.State.StartedAt}} {{index .Config.Labels \"com.docker.compose.project\"}}",
            id,
        ]),
        COMMAND_TIMEOUT,
    );
    let words: Vec<&str> = text.split_whitespace().collect();
    State {
        id: id.to_string(),
        status: words[0].to_string(),
        exit_code: words[1].parse().unwrap(),
        health: words[2].to_string(),
        started_at: words[3].to_string(),
        project: words[4].to_string(),
    }
}

/// The environment a container was started with, as NAME=value lines.
fn container_env(id: &str) -> Vec<String> {
    ok(
        Command::new("docker").args([
            "inspect",
            "-f",
            "{{range .Config.Env}}{{println .}}{{end}}",
            id,
        ]),
        COMMAND_TIMEOUT,
    )
    .lines()
    .map(str::to_owned)
    .collect()
}

fn logs(id: &str) -> String {
    let output = run(Command::new("docker").args(["logs", id]), COMMAND_TIMEOUT);
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    text
}

fn replies_in(log: &str) -> usize {
    log.lines()
        .filter(|line| line.contains(" got b\"World\""))
        .count()
}

const EXITED: &dyn Fn(&State) -> bool = &|s: &State| s.status == "exited";
const RUNNING: &dyn Fn(&State) -> bool = &|s: &State| s.status == "running";

/// Sends `Hello` from a REQ socket of the test's own and expects `World`.
fn ask(endpoint: &str) {
    let ctx = zmq::Context::new();
    let socket = test_req(&ctx, endpoint);
    socket.send("Hello", 0).unwrap();
    let reply = socket
        .recv_bytes(0)
        .unwrap_or_else(|e| panic!("no reply from {endpoint}: {e}"));
    assert_eq!(reply, b"World", "from {endpoint}");
}

#[test]
fn reqrep_one_server_answers_a_req_socket_on_the_host_at_its_published_port() {
    let Some(_engine) = engine() else { return };
    // The course's Python client connects to tcp://localhost:5555: with one
    // server, the published port is SERVER_PORTS exactly (here a free port
    // in place of 5555), on 127.0.0.1.
    let stack = Stack::new(REQREP, "hostport", &[]);
    stack.compose(&["up", "-d", "server"]);
    stack.wait_log("server", "listening on", 1);
    let port = stack.var("SERVER_PORTS");
    assert_eq!(
        stack.published("server", 1, 5555),
        format!("127.0.0.1:{port}")
    );
    for _ in 0..3 {
        ask(&format!("tcp://127.0.0.1:{port}"));
    }
}

#[test]
fn reqrep_three_servers_on_a_port_range_serve_three_clients_five_replies_each() {
    let Some(_engine) = engine() else { return };
    let range = free_port_range(3);
    let stack = Stack::new(
        REQREP,
        "scale",
        &[
            ("SERVER_PORTS", &range),
            ("COUNT", "5"),
            ("INTERVAL_MS", "100"),
        ],
    );
    stack.compose(&["up", "-d", "--scale", "client=3", "--scale", "server=3"]);
    let clients = stack.wait_for("client", 3, EXITED);
    assert_eq!(clients.len(), 3);
    for client in &clients {
        let log = logs(&client.id);
        assert_eq!(client.exit_code, 0, "{log}");
        assert_eq!(replies_in(&log), 5, "{log}");
        assert!(log.contains("done: 5 replies to 5 requests"), "{log}");
    }

    // Each replica owns one port of the range, and answers the host there.
    let (first, last) = range.split_once('-').unwrap();
    let (first, last): (u16, u16) = (first.parse().unwrap(), last.parse().unwrap());
    let mut ports = BTreeSet::new();
    for index in 1..=3 {
        let published = stack.published("server", index, 5555);
        let port: u16 = published
            .strip_prefix("127.0.0.1:")
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| panic!("server {index} published on {published:?}"));
        assert!((first..=last).contains(&port), "{port} not in {range}");
        ports.insert(port);
        ask(&format!("tcp://127.0.0.1:{port}"));
    }
    assert_eq!(ports.len(), 3, "{ports:?}");

    // Docker's DNS answers the service name with every replica's address.
    let (hosts, _) = ok_both(
        &mut stack.command(&[
            "run",
            "--rm",
            "--no-deps",
            "client",
            "getent",
            "ahosts",
            "server",
        ]),
        COMMAND_TIMEOUT,
    );
    let addresses: BTreeSet<&str> = hosts
        .lines()
        .filter(|line| line.contains("STREAM"))
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    assert_eq!(addresses.len(), 3, "{hosts}");
}

#[test]
fn reqrep_clients_started_before_the_server_still_complete() {
    let Some(_engine) = engine() else { return };
    let stack = Stack::new(
        REQREP,
        "reversed",
        &[("COUNT", "5"), ("INTERVAL_MS", "100")],
    );
    // depends_on reversed by hand: the clients alone first...
    stack.compose(&["up", "-d", "--no-deps", "--scale", "client=2", "client"]);
    stack.wait_log("client", "connecting to tcp://server:5555", 2);
    // ...and the server once they are running.
    stack.compose(&["up", "-d", "--no-deps", "server"]);
    let clients = stack.wait_for("client", 2, EXITED);
    for client in &clients {
        let log = logs(&client.id);
        assert_eq!(client.exit_code, 0, "{log}");
        assert_eq!(replies_in(&log), 5, "{log}");
    }
}

/// The variables each service passes through from the shell, besides its
/// fixed endpoints. Each must be one the role's binary reads.
const KNOBS: &[(&str, &str, &str, &[&str])] = &[
    (
        REQREP,
        "server",
        common::SERVER,
        &[
            "REPLY",
            "ECHO",
            "WORK_MS",
            "CRASH_AFTER",
            "HANG_AFTER",
            "MAX_MESSAGE_BYTES",
        ],
    ),
    (
        REQREP,
        "client",
        common::CLIENT,
        &["MESSAGE", "COUNT", "INTERVAL_MS", "TIMEOUT_MS", "RETRIES"],
    ),
    (
        BROKER,
        "broker",
        common::BROKER,
        &["MODE", "HEARTBEAT_MS", "MAX_MESSAGE_BYTES"],
    ),
    (
        BROKER,
        "worker",
        common::WORKER,
        &[
            "MODE",
            "HEARTBEAT_MS",
            "REPLY",
            "ECHO",
            "WORK_MS",
            "CRASH_AFTER",
            "HANG_AFTER",
        ],
    ),
    (
        BROKER,
        "client",
        common::BROKER_CLIENT,
        &["MESSAGE", "COUNT", "INTERVAL_MS", "TIMEOUT_MS", "RETRIES"],
    ),
    (
        FAILOVER,
        "broker1",
        common::BROKER,
        &["MODE", "HEARTBEAT_MS", "MAX_MESSAGE_BYTES"],
    ),
    (
        FAILOVER,
        "broker2",
        common::BROKER,
        &["MODE", "HEARTBEAT_MS", "MAX_MESSAGE_BYTES"],
    ),
    (
        FAILOVER,
        "worker",
        common::WORKER,
        &[
            "MODE",
            "HEARTBEAT_MS",
            "REPLY",
            "ECHO",
            "WORK_MS",
            "CRASH_AFTER",
            "HANG_AFTER",
        ],
    ),
    (
        FAILOVER,
        "client",
        common::BROKER_CLIENT,
        &["MESSAGE", "COUNT", "INTERVAL_MS", "TIMEOUT_MS", "RETRIES"],
    ),
];

#[test]
fn every_knob_reaches_exactly_the_services_that_read_it() {
    let Some(_engine) = engine() else { return };
    for file in [REQREP, BROKER, FAILOVER] {
        // Every variable set, each to a value of its own...
        let values: Vec<(String, String)> = PASSED_THROUGH
            .iter()
            .map(|name| (name.to_string(), format!("v-{name}")))
            .collect();
        let env: Vec<(&str, &str)> = values
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let stack = Stack::new(file, "config", &env);
        let config: serde_json::Value =
            serde_json::from_str(&stack.compose(&["config", "--format", "json"])).unwrap();
        for &(_, service, binary, knobs) in KNOBS.iter().filter(|k| k.0 == file) {
            let environment = config["services"][service]["environment"]
                .as_object()
                .unwrap_or_else(|| panic!("{file}: {service} has no environment"));
            // ...reaches a service, with its value, if and only if it is one
            // of that service's knobs (RUST_LOG goes everywhere).
            let passed: BTreeSet<&str> = environment
                .iter()
                .filter(|(name, value)| value.as_str() == Some(&format!("v-{name}")))
                .map(|(name, _)| name.as_str())
                .collect();
            let expected: BTreeSet<&str> = knobs.iter().copied().chain(["RUST_LOG"]).collect();
            assert_eq!(passed, expected, "{file}: {service}");
            // And the binary reads each of them.
            let help = ok(
                Command::new(binary).arg("--help").env_clear(),
                COMMAND_TIMEOUT,
            );
            for knob in knobs {
                assert!(
                    help.contains(&format!("[env: {knob}=")),
                    "{binary} reads no {knob}"
                );
            }
        }
    }
}

#[test]
fn reqrep_knobs_from_the_shell_change_what_the_containers_do() {
    let Some(_engine) = engine() else { return };
    // The server hangs after two replies; the client waits 500 ms, resends
    // once, then gives up with exit code 1.
    let stack = Stack::new(
        REQREP,
        "knobs",
        &[
            ("HANG_AFTER", "2"),
            ("COUNT", "5"),
            ("INTERVAL_MS", "50"),
            ("TIMEOUT_MS", "500"),
            ("RETRIES", "1"),
        ],
    );
    let (client, log) = stack.up_until_the_client_exits();
    assert_eq!(client.exit_code, 1, "{log}");
    assert_eq!(replies_in(&log), 2, "{log}");
    assert!(log.contains("error: no reply to request #3"), "{log}");
    stack.wait_log("server", "hanging after 2 replies", 1);
    // A variable the shell does not set stays unset: compose lists it bare
    // ("REPLY") in the container's configuration, and the engine leaves such
    // an entry out of the process's environment. The binary's own default
    // applies (the client sent its default "Hello").
    assert!(log.contains(" sent b\"Hello\" "), "{log}");
    let server = stack.containers("server").remove(0);
    assert!(container_env(&server).contains(&"REPLY".to_string()));
    let environ = ok(
        Command::new("docker").args(["exec", &server, "cat", "/proc/1/environ"]),
        COMMAND_TIMEOUT,
    );
    let environ: Vec<&str> = environ.split('\0').collect();
    assert!(environ.contains(&"HANG_AFTER=2"), "{environ:?}");
    assert!(
        !environ.iter().any(|var| var.starts_with("REPLY")),
        "{environ:?}"
    );
}

#[test]
fn broker_mode_lb_reaches_the_broker_and_the_workers() {
    let Some(_engine) = engine() else { return };
    // A REP worker never sends READY, so an lb broker would never hand it a
    // request: the replies show that MODE reached both sides.
    let stack = Stack::new(
        BROKER,
        "lb",
        &[
            ("MODE", "lb"),
            ("HEARTBEAT_MS", "300"),
            ("COUNT", "3"),
            ("INTERVAL_MS", "50"),
        ],
    );
    let (client, log) = stack.up_until_the_client_exits();
    assert_eq!(client.exit_code, 0, "{log}");
    assert_eq!(replies_in(&log), 3, "{log}");
    for id in stack.containers("worker") {
        let env = container_env(&id);
        for var in ["MODE=lb", "HEARTBEAT_MS=300"] {
            assert!(env.contains(&var.to_string()), "{env:?}");
        }
    }
}

#[test]
fn broker_spreads_forty_requests_over_three_workers() {
    let Some(_engine) = engine() else { return };
    let stack = Stack::new(BROKER, "broker", &[("COUNT", "20"), ("INTERVAL_MS", "20")]);
    // Workers first, and only once all three are connected (healthy) the
    // clients: a DEALER hands requests only to workers already connected.
    stack.compose(&["up", "-d", "--scale", "worker=3", "broker", "worker"]);
    stack.wait_for("worker", 3, &|s: &State| s.health == "healthy");
    stack.compose(&["up", "-d", "--no-deps", "--scale", "client=2", "client"]);
    let clients = stack.wait_for("client", 2, EXITED);
    let mut answered = 0;
    for client in &clients {
        let log = logs(&client.id);
        assert_eq!(client.exit_code, 0, "{log}");
        answered += replies_in(&log);
    }
    assert_eq!(answered, 40);
    let served: Vec<usize> = stack
        .containers("worker")
        .iter()
        .map(|id| {
            logs(id)
                .lines()
                .filter(|l| l.contains(" request b\"Hello\""))
                .count()
        })
        .collect();
    assert_eq!(served.iter().sum::<usize>(), 40, "{served:?}");
    assert!(
        served.iter().filter(|&&n| n > 0).count() >= 2,
        "requests not spread: {served:?}"
    );
    eprintln!("requests per worker: {served:?}");
}

/// A container's name, as `docker ps` and `docker kill` know it.
fn container_name(id: &str) -> String {
    ok(
        Command::new("docker").args(["inspect", "-f", "{{.Name}}", id]),
        COMMAND_TIMEOUT,
    )
    .trim()
    .trim_start_matches('/')
    .to_string()
}

#[test]
fn each_replica_names_itself_as_compose_named_its_container() {
    let Some(_engine) = engine() else { return };
    let stack = Stack::new(BROKER, "names", &[("COUNT", "2"), ("INTERVAL_MS", "20")]);
    stack.compose(&["up", "-d", "--scale", "worker=3", "--scale", "client=2"]);
    stack.wait_for("client", 2, EXITED);
    // Each log line carries the name `docker compose ps` lists, the one
    // `docker kill` takes (`zr123-names-worker-3`), not the container's id.
    for service in ["broker", "worker", "client"] {
        for id in stack.containers(service) {
            let name = container_name(&id);
            assert!(
                name.starts_with(&format!("{}-{service}-", stack.project)),
                "{name}"
            );
            let role = match service {
                "client" => "broker_client",
                role => role,
            };
            let log = logs(&id);
            let tag = format!("{role}[{name}]");
            assert!(log.contains(&tag), "{tag} not in the log of {id}:\n{log}");
            assert!(!log.contains(&format!("[{}]", &id[..12])), "{log}");
        }
    }
    // Outside a compose network (Docker's default bridge, no embedded DNS)
    // the host name stays the default.
    let plain = run(
        Command::new("docker").args([
            "run",
            "--rm",
            "--hostname",
            "plain-host",
            &image(),
            "reqrep_client",
            "--connect",
            "tcp://127.0.0.1:9",
            "--count",
            "1",
            "--timeout-ms",
            "100",
            "--retries",
            "0",
        ]),
        COMMAND_TIMEOUT,
    );
    let out = format!("{}{}", text(&plain.stdout), text(&plain.stderr));
    assert_eq!(plain.status.code(), Some(1), "{out}");
    assert!(
        out.contains("reqrep_client[plain-host] done: 0 replies"),
        "{out}"
    );
}

#[test]
fn the_two_exercises_are_separate_projects_with_both_files_side_by_side() {
    let Some(_engine) = engine() else { return };
    // Both files in one directory, named by compose as a student's are:
    // exercise 1 by its `name:`, exercise 2 after the directory. The only
    // change: exercise 1's name gets the test's prefix, so that a student's
    // own "reqrep" project is never touched.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir_name = format!("zr{}-projects", std::process::id());
    let dir = TempDir::named(&dir_name);
    let dir = dir.dir();
    let reqrep_text = std::fs::read_to_string(root.join(REQREP)).unwrap();
    assert_eq!(
        reqrep_text.lines().filter(|l| *l == "name: reqrep").count(),
        1,
        "{REQREP} should have the top-level `name: reqrep`"
    );
    let reqrep_name = format!("zr{}-reqrep", std::process::id());
    std::fs::write(
        dir.join(REQREP),
        reqrep_text.replace("name: reqrep", &format!("name: {reqrep_name}")),
    )
    .unwrap();
    let broker_text = std::fs::read_to_string(root.join(BROKER)).unwrap();
    assert!(
        !broker_text.lines().any(|l| l.starts_with("name:")),
        "{BROKER} must have no `name:` (docker stack deploy rejects it)"
    );
    std::fs::write(dir.join(BROKER), broker_text).unwrap();

    let exercise1 = Stack::with(dir.join(REQREP), reqrep_name.clone(), false, &[]);
    let exercise2 = Stack::with(dir.join(BROKER), dir_name.clone(), false, &[]);
    exercise1.compose(&["up", "-d"]);
    exercise1.wait_log("client", " got b\"World\"", 1);
    let before: Vec<State> = exercise1
        .containers("client")
        .iter()
        .map(|id| state(id))
        .collect();

    // Exercise 2 up: exercise 1's client is neither recreated nor restarted.
    exercise2.compose(&["up", "-d"]);
    exercise2.wait_log("client", " got b\"World\"", 1);
    let after: Vec<State> = exercise1
        .containers("client")
        .iter()
        .map(|id| state(id))
        .collect();
    assert_eq!(before.len(), 1);
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].id, before[0].id);
    assert_eq!(after[0].started_at, before[0].started_at);
    assert_eq!(after[0].project, reqrep_name);
    for id in exercise2.containers("client") {
        assert_eq!(state(&id).project, dir_name);
    }

    // Exercise 2 down: exercise 1 runs on, whole.
    exercise2.compose(&["down", "-t", "1"]);
    assert!(exercise2.all_containers().is_empty());
    exercise1.wait_for("server", 1, RUNNING);
    exercise1.wait_for("client", 1, RUNNING);
}

#[test]
fn the_broker_exercise_over_curve_serves_its_keys_and_refuses_an_unknown_one() {
    let Some(_engine) = engine() else { return };
    // The files side by side with a keys/ of the test's own, as a student
    // has them after the commands of docker-compose.curve.yml's header.
    let dir = TempDir::named(&format!("zr{}-curve", std::process::id()));
    let repository = Path::new(env!("CARGO_MANIFEST_DIR"));
    for file in [BROKER, CURVE] {
        std::fs::copy(repository.join(file), dir.dir().join(file)).unwrap();
    }
    let keys = dir.dir().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    // SAFETY: getuid and getgid only read the process's ids.
    let user = unsafe { format!("{}:{}", libc::getuid(), libc::getgid()) };
    for name in ["broker", "worker", "client", "mallory"] {
        ok(
            Command::new("docker")
                .args(["run", "--rm", "--user", &user, "-v"])
                .arg(format!("{}:/keys", keys.display()))
                .args([&image(), "curve_keygen", &format!("/keys/{name}")]),
            COMMAND_TIMEOUT,
        );
    }
    let public = |name: &str| std::fs::read_to_string(keys.join(format!("{name}.pub"))).unwrap();
    std::fs::write(
        keys.join("clients.txt"),
        public("worker") + &public("client"),
    )
    .unwrap();

    let mut stack = Stack::with(
        dir.dir().join(BROKER),
        format!("zr{}-curve", std::process::id()),
        true,
        &[("KEYS_USER", &user), ("COUNT", "3"), ("INTERVAL_MS", "50")],
    );
    stack.more_files.push(dir.dir().join(CURVE));
    let (client, log) = stack.up_until_the_client_exits();
    assert_eq!(client.exit_code, 0, "{log}");
    assert_eq!(replies_in(&log), 3, "{log}");
    assert!(log.contains("CURVE client, public key"), "{log}");
    let client_key = public("client");
    assert!(
        stack
            .wait_log("broker", "as CURVE client", 2)
            .iter()
            .any(|line| line.contains(client_key.trim())),
        "{}",
        stack.logs()
    );

    // A client with a key the broker does not list: refused, and both say so.
    let mallory = keys.join("mallory.key");
    let refused = run(
        &mut stack.command(&[
            "run",
            "--rm",
            "--no-deps",
            "-v",
            &format!("{}:/run/secrets/mallory_key:ro", mallory.display()),
            "-e",
            "CURVE_SECRET_KEY_FILE=/run/secrets/mallory_key",
            "-e",
            "COUNT=1",
            "-e",
            "RETRIES=0",
            "client",
        ]),
        COMMAND_TIMEOUT,
    );
    let said = text(&refused.stdout) + &text(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{said}");
    assert!(said.contains("refused us (ZAP status 400)"), "{said}");
    assert_eq!(replies_in(&said), 0, "{said}");
    stack.wait_log("broker", "not in --curve-clients", 1);
}

#[test]
fn the_broker_file_stays_one_that_docker_stack_deploy_accepts() {
    // `docker stack config` validates a file against the schema of `docker
    // stack deploy` (no `name:`, `pull_policy`, `host_ip`...), on the client
    // side: no engine, no swarm. The command came with docker CLI 23.0.
    let has_it = run(
        Command::new("docker").args(["stack", "config", "--help"]),
        COMMAND_TIMEOUT,
    )
    .status
    .success();
    if !has_it {
        skipped("this docker CLI has no `docker stack config` (CLI 23.0 or later has)");
        return;
    }
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join(BROKER);
    let mut command = Command::new("docker");
    command.args(["stack", "config", "-c"]).arg(&file);
    for name in SETTINGS.iter().chain(PASSED_THROUGH) {
        command.env_remove(name);
    }
    let config = ok(&mut command, COMMAND_TIMEOUT);
    for service in ["broker:", "worker:", "client:"] {
        assert!(config.contains(service), "{config}");
    }

    // With the second file, its host-mode ports replace the first file's
    // (merged by published port), at the same FRONTEND_PORT, BACKEND_PORT
    // and HTTP_PORT.
    let mut command = Command::new("docker");
    command
        .args(["stack", "config", "-c"])
        .arg(&file)
        .arg("-c")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join(SWARM_HOST));
    for name in SETTINGS.iter().chain(PASSED_THROUGH) {
        command.env_remove(name);
    }
    command.envs([
        ("ENDPOINT_MODE", "dnsrr"),
        ("FRONTEND_PORT", "40001"),
        ("BACKEND_PORT", "40002"),
        ("HTTP_PORT", "40003"),
    ]);
    let config = ok(&mut command, COMMAND_TIMEOUT);
    assert!(config.contains("endpoint_mode: dnsrr"), "{config}");
    assert_eq!(config.matches("mode: host").count(), 3, "{config}");
    assert!(!config.contains("mode: ingress"), "{config}");
    for port in ["published: 40001", "published: 40002", "published: 40003"] {
        assert!(config.contains(port), "{config}");
    }
}

/// An image tag removed when dropped.
struct Tag(String);

impl Drop for Tag {
    fn drop(&mut self) {
        let _ = run(
            Command::new("docker").args(["image", "rm", &self.0]),
            COMMAND_TIMEOUT,
        );
    }
}

#[test]
fn a_cold_up_builds_the_image_once_and_pulls_nothing() {
    let Some(_engine) = engine() else { return };
    for (file, extra) in [
        (REQREP, &[][..]),
        // This file must stay readable by `docker stack deploy`, which has
        // no `pull_policy`: compose tries the registry for a missing image
        // (see the file's header). No registry here, so no pull.
        (BROKER, &["--pull", "never"][..]),
        (FAILOVER, &[][..]),
    ] {
        // An image tag that does not exist yet: what compose sees on a
        // fresh clone. The build itself is quick, from the layers cached by
        // the test image's build.
        let tag = Tag(format!("{}-once{}", image(), std::process::id()));
        let stack = Stack::new(file, "once", &[("IMAGE", &tag.0)]);
        let mut args = vec!["up", "--no-start"];
        args.extend_from_slice(extra);
        let (stdout, stderr) = ok_both(&mut stack.command(&args), BUILD_TIMEOUT);
        let output = format!("{stdout}{stderr}");
        let builds = output
            .lines()
            .filter(|line| line.contains(&format!("naming to docker.io/library/{}", tag.0)))
            .count();
        assert_eq!(builds, 1, "{file}: {builds} builds\n{output}");
        assert!(!output.contains("Pulling"), "{file}\n{output}");
        drop(stack);
    }
}

#[test]
fn compose_stop_returns_within_three_seconds() {
    let Some(_engine) = engine() else { return };
    for (file, env) in [(REQREP, [("MODE", "proxy")]), (BROKER, [("MODE", "lb")])] {
        let stack = Stack::new(file, "stop", &env);
        stack.compose(&["up", "-d", "--scale", "client=2"]);
        // Running and answering: a client has printed its second reply.
        let deadline = Instant::now() + STACK_TIMEOUT;
        while !stack
            .containers("client")
            .iter()
            .any(|id| replies_in(&logs(id)) >= 2)
        {
            assert!(
                Instant::now() < deadline,
                "{file}: no replies\n{}",
                stack.logs()
            );
            thread::sleep(Duration::from_millis(200));
        }
        let started = Instant::now();
        stack.compose(&["stop"]);
        let took = started.elapsed();
        eprintln!("{file}: docker compose stop took {took:?}");
        assert!(took < Duration::from_secs(3), "{file}: stop took {took:?}");
        for service in ["client", if file == BROKER { "broker" } else { "server" }] {
            for id in stack.containers(service) {
                let state = state(&id);
                assert_eq!(
                    state.exit_code,
                    0,
                    "{service} did not stop cleanly on SIGTERM: {state:?}\n{}",
                    logs(&id)
                );
            }
        }
    }
}

/// `GET path` over a plain TcpStream: the status code and the body.
fn http_get(address: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(COMMAND_TIMEOUT)).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {address}\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok());
    (status.unwrap_or(0), body.to_string())
}

#[test]
fn the_broker_page_is_published_and_names_the_lb_workers() {
    let Some(_engine) = engine() else { return };
    let stack = Stack::new(
        BROKER,
        "page",
        &[("MODE", "lb"), ("COUNT", "6"), ("INTERVAL_MS", "20")],
    );
    stack.compose(&["up", "-d", "--scale", "worker=2", "broker", "worker"]);
    stack.wait_log("broker", " ready", 2);
    stack.compose(&["up", "-d", "--no-deps", "client"]);
    let client = stack.wait_for("client", 1, EXITED).remove(0);
    assert_eq!(client.exit_code, 0, "{}", logs(&client.id));

    let page = stack.published("broker", 1, 8080);
    assert_eq!(page, format!("127.0.0.1:{}", stack.var("HTTP_PORT")));
    let (status, html) = http_get(&page, "/");
    assert_eq!(status, 200);
    assert!(html.contains("/stats"), "{html}");
    // The broker publishes a few times a second: the last reply shows soon.
    let deadline = Instant::now() + STACK_TIMEOUT;
    let stats = loop {
        let (status, body) = http_get(&page, "/stats");
        assert_eq!(status, 200, "{body}");
        let stats: serde_json::Value = serde_json::from_str(&body).unwrap();
        if stats["replies"] == 6 {
            break stats;
        }
        assert!(Instant::now() < deadline, "{stats:#}");
        thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(stats["mode"], "lb");
    // A worker's name is its container's, as `docker compose ps` lists it.
    let names: Vec<String> = stack
        .containers("worker")
        .iter()
        .map(|id| container_name(id))
        .collect();
    let workers = stats["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 2, "{stats:#}");
    for worker in workers {
        let name = worker["name"].as_str().unwrap();
        assert!(names.iter().any(|n| n == name), "{name} in {names:?}");
    }
    let served: u64 = workers.iter().map(|w| w["served"].as_u64().unwrap()).sum();
    assert_eq!(served, 6, "{stats:#}");
}

/// The request numbers of the reply lines in a client's log, in order.
fn reply_numbers(log: &str) -> Vec<u64> {
    log.lines()
        .filter(|line| line.contains(" got b\"World\""))
        .filter_map(|line| {
            let seq = line.split_whitespace().find(|word| word.starts_with('#'))?;
            seq[1..].parse().ok()
        })
        .collect()
}

#[test]
fn failover_kill_broker1_while_the_clients_run_then_start_it_again() {
    let Some(_engine) = engine() else { return };
    // The lecture's experiment, with short timeouts and heartbeats: the
    // default MODE of this file, lb.
    let stack = Stack::new(
        FAILOVER,
        "failover",
        &[
            ("COUNT", "40"),
            ("INTERVAL_MS", "100"),
            ("TIMEOUT_MS", "1000"),
            ("HEARTBEAT_MS", "300"),
        ],
    );
    // Workers first, and the clients once both workers are connected to
    // both brokers (healthy).
    stack.compose(&["up", "-d", "broker1", "broker2", "worker"]);
    stack.wait_for("worker", 2, &|s: &State| s.health == "healthy");
    stack.wait_log("broker1", ") ready", 2);
    stack.wait_log("broker2", ") ready", 2);
    stack.compose(&["up", "-d", "--no-deps", "client"]);
    let clients = stack.containers("client");
    assert_eq!(clients.len(), 2);
    let replies_of = |id: &str| replies_in(&logs(id));
    let wait_replies = |count: usize| {
        let deadline = Instant::now() + STACK_TIMEOUT;
        while !clients.iter().all(|id| replies_of(id) >= count) {
            assert!(
                Instant::now() < deadline,
                "not {count} replies each\n{}",
                stack.logs()
            );
            thread::sleep(Duration::from_millis(200));
        }
    };
    wait_replies(5);

    stack.compose(&["kill", "broker1"]);
    let at_kill: Vec<usize> = clients.iter().map(|id| replies_of(id)).collect();
    assert!(at_kill.iter().all(|&n| n < 40), "too late: {at_kill:?}");
    // Broker2 alone serves the clients on...
    wait_replies(at_kill.iter().max().unwrap() + 5);
    // ...and a new broker1 process is joined again by both workers (the
    // log keeps the first process's two lines).
    stack.compose(&["start", "broker1"]);
    stack.wait_log("broker1", ") ready", 4);
    ask(&format!(
        "tcp://127.0.0.1:{}",
        stack.var("BROKER1_FRONTEND_PORT")
    ));

    stack.wait_for("client", 2, EXITED);
    for id in &clients {
        let log = logs(id);
        assert_eq!(state(id).exit_code, 0, "{log}");
        // Every request answered once, in order.
        assert_eq!(reply_numbers(&log), (1..=40).collect::<Vec<u64>>(), "{log}");
    }
    eprintln!("replies at the kill: {at_kill:?}");
}

// --- Docker Swarm ----------------------------------------------------------

/// Fails the test under REQUIRE_DOCKER=1; otherwise notes that it was skipped.
fn required(why: &str) {
    if std::env::var("REQUIRE_DOCKER").as_deref() == Ok("1") {
        panic!("REQUIRE_DOCKER=1 but {why}");
    }
    skipped(why);
}

/// This engine as a one-node swarm manager. Leaves the swarm when dropped
/// if, and only if, it was created here, and no other stack runs on it
/// (another checkout's test may have found it and deployed since).
struct Swarm {
    created: bool,
    /// Whether the bridge that Swarm creates for its containers' way out
    /// was there before: `swarm leave` keeps it, so the test removes it.
    had_gwbridge: bool,
}

impl Swarm {
    fn state() -> String {
        ok(
            Command::new("docker").args([
                "info",
                "--format",
                "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}} {{.Swarm.Nodes}}",
            ]),
            COMMAND_TIMEOUT,
        )
        .trim()
        .to_string()
    }

    fn join() -> Option<Swarm> {
        let mut state = Swarm::state();
        let had_gwbridge = run(
            Command::new("docker").args(["network", "inspect", "docker_gwbridge"]),
            COMMAND_TIMEOUT,
        )
        .status
        .success();
        let mut created = false;
        let mut init_error = String::new();
        if state.starts_with("inactive") {
            let init = run(
                Command::new("docker").args(["swarm", "init", "--advertise-addr", "127.0.0.1"]),
                COMMAND_TIMEOUT,
            );
            // Another test may have made it a swarm in the meantime.
            created = init.status.success();
            init_error = text(&init.stderr);
            state = Swarm::state();
        }
        if state != "active true 1" {
            required(&format!(
                "this engine is not the manager of a one-node swarm (\"{state}\": \
                 node state, manager, nodes); the Swarm test needs one, or none {init_error}"
            ));
            return None;
        }
        Some(Swarm {
            created,
            had_gwbridge,
        })
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        if !self.created {
            return;
        }
        let stacks = run(
            Command::new("docker").args(["stack", "ls", "--format", "{{.Name}}"]),
            COMMAND_TIMEOUT,
        );
        let others = String::from_utf8_lossy(&stacks.stdout).trim().to_string();
        if !others.is_empty() {
            eprintln!("not leaving the swarm this test created: stacks still on it: {others}");
            return;
        }
        let leave = run(
            Command::new("docker").args(["swarm", "leave", "--force"]),
            COMMAND_TIMEOUT,
        );
        if !leave.status.success() {
            eprintln!(
                "docker swarm leave failed: {}",
                String::from_utf8_lossy(&leave.stderr)
            );
        } else if !self.had_gwbridge {
            let _ = run(
                Command::new("docker").args(["network", "rm", "docker_gwbridge"]),
                COMMAND_TIMEOUT,
            );
        }
    }
}

/// The major version of the docker CLI (20 for "20.10.24+dfsg1").
fn cli_major() -> u32 {
    let version = ok(
        Command::new("docker").args(["version", "--format", "{{.Client.Version}}"]),
        COMMAND_TIMEOUT,
    );
    version
        .trim()
        .split('.')
        .next()
        .and_then(|major| major.parse().ok())
        .unwrap_or_else(|| panic!("docker CLI version {version:?}"))
}

/// A task of a Swarm service, from `docker inspect --type task`.
#[derive(Debug)]
struct Task {
    slot: u32,
    /// running, complete, failed, starting (not healthy yet)...
    state: String,
    /// The container's exit code; `None` while it has not exited.
    exit_code: Option<i32>,
    container: String,
    error: String,
}

impl Task {
    fn ended(&self) -> bool {
        ["complete", "failed", "rejected", "shutdown", "orphaned"].contains(&self.state.as_str())
    }

    /// Running: for a service with a healthcheck, also healthy.
    fn running(&self) -> bool {
        self.state == "running"
    }

    /// The replica's name in its log lines: its hostname, the container's
    /// short id.
    fn name(&self) -> &str {
        &self.container[..self.container.len().min(12)]
    }
}

/// One `docker stack deploy` of the broker file with its host-mode second
/// file, removed (networks included) when dropped.
struct SwarmStack {
    name: String,
    files: Vec<PathBuf>,
    env: BTreeMap<String, String>,
    /// Copies of the files with a `version:` line, for a CLI older than 23.
    _copies: Option<TempDir>,
}

impl SwarmStack {
    fn new(test: &str, env: &[(&str, &str)]) -> SwarmStack {
        let name = format!("zr{}-{test}", std::process::id());
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files: Vec<PathBuf> = [BROKER, SWARM_HOST].iter().map(|f| root.join(f)).collect();
        // Docker CLI 20.10 reads no Compose file without `version:`, which
        // the files leave out because compose warns about it (see the
        // broker file's header, which tells the students the same).
        let copies = (cli_major() < 23).then(|| {
            let dir = TempDir::named(&format!("{name}-files"));
            for file in &mut files {
                let text = std::fs::read_to_string(&*file).unwrap();
                let copy = dir.dir().join(file.file_name().unwrap());
                std::fs::write(&copy, format!("version: \"3.8\"\n{text}")).unwrap();
                *file = copy;
            }
            eprintln!("docker CLI older than 23.0: deploying copies with `version: \"3.8\"`");
            dir
        });
        let mut vars: BTreeMap<String, String> = [
            ("IMAGE", image()),
            ("FRONTEND_PORT", free_port().to_string()),
            ("BACKEND_PORT", free_port().to_string()),
            ("HTTP_PORT", free_port().to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        vars.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        SwarmStack {
            name,
            files,
            env: vars,
            _copies: copies,
        }
    }

    fn service(&self, service: &str) -> String {
        format!("{}_{service}", self.name)
    }

    /// `docker stack deploy`, with the stack's variables and no others.
    fn deploy(&self) {
        let mut command = Command::new("docker");
        // The image is this checkout's, on this node only: no registry to
        // ask for its digest.
        command.args(["stack", "deploy", "--resolve-image", "never"]);
        for file in &self.files {
            command.arg("-c").arg(file);
        }
        command.arg(&self.name);
        for name in SETTINGS.iter().chain(PASSED_THROUGH) {
            command.env_remove(name);
        }
        command.envs(&self.env);
        ok(&mut command, COMMAND_TIMEOUT);
    }

    /// `docker service scale -d`: without -d the command would wait for
    /// every replica to be running, which a finished client never is again.
    fn scale(&self, service: &str, replicas: usize) {
        ok(
            Command::new("docker").args([
                "service",
                "scale",
                "-d",
                &format!("{}={replicas}", self.service(service)),
            ]),
            COMMAND_TIMEOUT,
        );
    }

    fn inspect(&self, service: &str, format: &str) -> serde_json::Value {
        let text = ok(
            Command::new("docker").args([
                "service",
                "inspect",
                "--format",
                format,
                &self.service(service),
            ]),
            COMMAND_TIMEOUT,
        );
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
    }

    /// Every task of a service, past ones included.
    fn tasks(&self, service: &str) -> Vec<Task> {
        let ids = ok(
            Command::new("docker").args([
                "service",
                "ps",
                "--quiet",
                "--no-trunc",
                &self.service(service),
            ]),
            COMMAND_TIMEOUT,
        );
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if ids.is_empty() {
            return Vec::new();
        }
        ok(
            Command::new("docker")
                .args([
                    "inspect",
                    "--type",
                    "task",
                    "--format",
                    "{{.Slot}} {{.Status.State}} {{with .Status.ContainerStatus}}{{.ExitCode}} \
                     {{.ContainerID}}{{else}}- -{{end}} {{.Status.Err}}",
                ])
                .args(&ids),
            COMMAND_TIMEOUT,
        )
        .lines()
        .map(|line| {
            let mut words = line.splitn(5, ' ');
            let mut next = || words.next().unwrap_or_default().to_string();
            let (slot, state, exit_code, container, error) =
                (next(), next(), next(), next(), next());
            Task {
                slot: slot.parse().unwrap_or_else(|_| panic!("task {line:?}")),
                state,
                exit_code: exit_code.parse().ok(),
                container: if container == "-" {
                    String::new()
                } else {
                    container
                },
                error,
            }
        })
        .collect()
    }

    /// Waits until `count` tasks of `service` are as wanted; returns them all.
    fn wait_tasks(&self, service: &str, count: usize, want: fn(&Task) -> bool) -> Vec<Task> {
        let deadline = Instant::now() + STACK_TIMEOUT;
        loop {
            let tasks = self.tasks(service);
            if tasks.iter().filter(|t| want(t)).count() >= count {
                return tasks;
            }
            assert!(
                Instant::now() < deadline,
                "{service}: not {count} tasks as wanted after {STACK_TIMEOUT:?}: {tasks:#?}\n{}",
                self.logs("broker") + &self.logs("worker") + &self.logs("client")
            );
            thread::sleep(Duration::from_millis(500));
        }
    }

    /// What the replicas of a service printed, stdout and stderr.
    fn logs(&self, service: &str) -> String {
        let output = run(
            Command::new("docker").args(["service", "logs", "--raw", &self.service(service)]),
            COMMAND_TIMEOUT,
        );
        text(&output.stdout) + &text(&output.stderr)
    }

    /// The stack's networks and containers, which `docker stack rm` removes
    /// in the background.
    fn leftovers(&self) -> Vec<String> {
        let label = format!("label=com.docker.stack.namespace={}", self.name);
        let mut found = Vec::new();
        for kind in ["network", "container"] {
            let output = run(
                Command::new("docker").args([kind, "ls", "--all", "--quiet", "--filter", &label]),
                COMMAND_TIMEOUT,
            );
            found.extend(
                text(&output.stdout)
                    .split_whitespace()
                    .map(|id| format!("{kind} {id}")),
            );
        }
        found
    }
}

impl Drop for SwarmStack {
    fn drop(&mut self) {
        let started = Instant::now();
        let rm = run(
            Command::new("docker").args(["stack", "rm", &self.name]),
            COMMAND_TIMEOUT,
        );
        if !rm.status.success() {
            eprintln!(
                "docker stack rm {} failed: {}",
                self.name,
                String::from_utf8_lossy(&rm.stderr)
            );
        }
        let deadline = Instant::now() + STACK_TIMEOUT;
        loop {
            let left = self.leftovers();
            if left.is_empty() {
                eprintln!("stack {} removed in {:?}", self.name, started.elapsed());
                return;
            }
            if Instant::now() >= deadline {
                eprintln!(
                    "stack {} still has after {STACK_TIMEOUT:?}: {left:?}",
                    self.name
                );
                return;
            }
            thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The lines of a log that a replica named `name` printed for `role`.
fn lines_of<'a>(log: &'a str, role: &str, name: &str) -> Vec<&'a str> {
    let tag = format!("{role}[{name}]");
    log.lines().filter(|line| line.contains(&tag)).collect()
}

#[test]
fn swarm_stack_scales_and_every_client_gets_every_reply_and_ends_once() {
    let Some(_engine) = engine() else { return };
    // Declared before the stack, so dropped after it: the stack is gone
    // before the swarm is left.
    let Some(_swarm) = Swarm::join() else { return };
    const COUNT: usize = 5;
    // DNS round robin and host-mode ports: this kernel has no IPVS, which
    // Swarm's virtual IPs and routing mesh need. A generous client timeout:
    // the first clients may start before any worker has connected, and
    // their requests wait in the broker until one does.
    let stack = SwarmStack::new(
        "swarm",
        &[
            ("ENDPOINT_MODE", "dnsrr"),
            ("WORKERS", "2"),
            ("CLIENTS", "2"),
            ("COUNT", &COUNT.to_string()),
            ("INTERVAL_MS", "20"),
            ("TIMEOUT_MS", "10000"),
        ],
    );
    let started = Instant::now();
    stack.deploy();
    let deployed = started.elapsed();

    // Both files and both variables reached Swarm: dnsrr, the second file's
    // host-mode ports on the free ports, and clients that are not restarted.
    let endpoint = stack.inspect("broker", "{{json .Spec.EndpointSpec}}");
    assert_eq!(endpoint["Mode"], "dnsrr", "{endpoint}");
    let mut ports: Vec<(u64, u64, &str)> = endpoint["Ports"]
        .as_array()
        .unwrap_or_else(|| panic!("no ports: {endpoint}"))
        .iter()
        .map(|p| {
            (
                p["TargetPort"].as_u64().unwrap(),
                p["PublishedPort"].as_u64().unwrap(),
                p["PublishMode"].as_str().unwrap(),
            )
        })
        .collect();
    ports.sort();
    let port = |name: &str| stack.env[name].parse::<u64>().unwrap();
    assert_eq!(
        ports,
        [
            (5555, port("FRONTEND_PORT"), "host"),
            (5556, port("BACKEND_PORT"), "host"),
            (8080, port("HTTP_PORT"), "host")
        ],
        "{endpoint}"
    );
    let restart = stack.inspect("client", "{{json .Spec.TaskTemplate.RestartPolicy}}");
    assert_eq!(restart["Condition"], "none", "{restart}");

    // WORKERS=2: two workers, healthy (connected to the broker's backend).
    stack.wait_tasks("worker", 2, Task::running);
    let workers_up = started.elapsed();
    stack.wait_tasks("client", 2, Task::ended);
    let answered = started.elapsed();
    // The broker's frontend, published by its node, answers the host.
    ask(&format!("tcp://127.0.0.1:{}", stack.env["FRONTEND_PORT"]));

    // docker service scale: a third worker, then two more clients.
    stack.scale("worker", 3);
    stack.wait_tasks("worker", 3, Task::running);
    stack.scale("client", 4);
    let clients = stack.wait_tasks("client", 4, Task::ended);

    // Four clients, one task each: none was started again after it ended,
    // and each ended with exit code 0 after all its replies.
    let log = stack.logs("client");
    let slots: BTreeSet<u32> = clients.iter().map(|t| t.slot).collect();
    assert_eq!(clients.len(), 4, "{clients:#?}\n{log}");
    assert_eq!(slots, BTreeSet::from([1, 2, 3, 4]), "{clients:#?}");
    for client in &clients {
        let lines = lines_of(&log, "broker_client", client.name());
        assert_eq!(
            (client.state.as_str(), client.exit_code),
            ("complete", Some(0)),
            "{client:?} (task error: {:?})\n{}",
            client.error,
            lines.join("\n")
        );
        let replies = lines
            .iter()
            .filter(|l| l.contains(" got b\"World\""))
            .count();
        assert_eq!(replies, COUNT, "{client:?}\n{}", lines.join("\n"));
        let done = format!("done: {COUNT} replies to {COUNT} requests");
        assert!(
            lines.iter().any(|l| l.contains(&done)),
            "{client:?}\n{}",
            lines.join("\n")
        );
    }

    // The broker spread the requests over the three workers: the last two
    // clients' ten requests go round robin over all of them.
    let log = stack.logs("worker");
    let workers: Vec<Task> = stack
        .tasks("worker")
        .into_iter()
        .filter(Task::running)
        .collect();
    let served: Vec<usize> = workers
        .iter()
        .map(|w| {
            lines_of(&log, "worker", w.name())
                .iter()
                .filter(|l| l.contains(" request b\"Hello\""))
                .count()
        })
        .collect();
    assert_eq!(workers.len(), 3, "{workers:#?}");
    assert!(
        served.iter().sum::<usize>() >= 4 * COUNT,
        "{served:?}\n{log}"
    );
    assert!(served.iter().all(|&n| n > 0), "{served:?}\n{log}");
    eprintln!(
        "swarm: `docker stack deploy` returned in {deployed:?}; 2 workers running (healthy) \
         after {workers_up:?}; 2 clients done ({} replies) after {answered:?}; requests per \
         worker in the end: {served:?}",
        2 * COUNT
    );
}

/// The lines of `service`'s logs that report a message sent by `sender`,
/// from the message on: `b"" (MORE, 0 bytes: 01 00) + b"Hello" (...)`.
fn wire_messages(stack: &Stack, service: &str, sender: &str) -> Vec<String> {
    stack
        .compose(&["logs", "--no-color", service])
        .lines()
        .filter(|line| line.contains(&format!(" {sender} > ")))
        .filter_map(|line| line.split("  message  ").nth(1))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_wire_files_show_the_clients_leg_without_the_identity_and_the_workers_with_it() {
    let Some(_engine) = engine() else { return };
    let repository = Path::new(env!("CARGO_MANIFEST_DIR"));
    let hello = r#"b"Hello" (5 bytes: 00 05 48 65 6c 6c 6f)"#;
    let delimiter = r#"b"" (MORE, 0 bytes: 01 00)"#;

    // Exercise 1: client -> wire -> server.
    let mut stack = Stack::new(REQREP, "wire1", &[("COUNT", "3"), ("INTERVAL_MS", "50")]);
    stack.more_files.push(repository.join(REQREP_WIRE));
    let (client, log) = stack.up_until_the_client_exits();
    assert_eq!(client.exit_code, 0, "{log}");
    assert_eq!(replies_in(&log), 3, "{log}");
    stack.wait_log("wire", "server > client  message", 3);
    let requests = wire_messages(&stack, "wire", "client");
    assert_eq!(
        requests,
        vec![format!("{delimiter} + {hello}"); 3],
        "{}",
        stack.logs()
    );
    drop(stack);

    // Exercise 2: client -> wire-client -> broker, worker -> wire-worker ->
    // broker. The workers first, healthy (connected through their relay),
    // then the client: a request only goes to a worker connected by then.
    let mut stack = Stack::new(BROKER, "wire2", &[("COUNT", "3"), ("INTERVAL_MS", "50")]);
    stack.more_files.push(repository.join(BROKER_WIRE));
    stack.compose(&["up", "-d", "broker", "worker"]);
    stack.wait_for("worker", 1, &|s: &State| s.health == "healthy");
    let (client, log) = stack.up_until_the_client_exits();
    assert_eq!(client.exit_code, 0, "{log}");
    assert_eq!(replies_in(&log), 3, "{log}");
    stack.wait_log("wire-worker", "worker > broker  message", 3);
    // The client's leg: what the REQ sent, the delimiter and the body.
    let client_leg = wire_messages(&stack, "wire-client", "client");
    assert_eq!(
        client_leg,
        vec![format!("{delimiter} + {hello}"); 3],
        "{}",
        stack.logs()
    );
    // The worker's leg: one frame more in front, the identity the broker's
    // frontend ROUTER gave the client, the same for the three requests.
    let worker_leg = wire_messages(&stack, "wire-worker", "broker");
    assert_eq!(worker_leg.len(), 3, "{}", stack.logs());
    let identities: BTreeSet<&str> = worker_leg
        .iter()
        .map(|message| {
            let (identity, rest) = message.split_once(" + ").unwrap();
            assert_eq!(rest, format!("{delimiter} + {hello}"), "{message}");
            assert!(identity.contains("(MORE, 5 bytes: 01 05 00 "), "{identity}");
            identity
        })
        .collect();
    assert_eq!(identities.len(), 1, "{worker_leg:#?}");
    // And the reply carries it back, to the broker only.
    let replies = wire_messages(&stack, "wire-worker", "worker");
    assert!(
        replies
            .iter()
            .all(|r| r.starts_with(identities.first().unwrap())),
        "{replies:#?}"
    );
    let to_client = wire_messages(&stack, "wire-client", "broker");
    assert!(
        to_client.iter().all(|r| r.starts_with(delimiter)),
        "{to_client:#?}"
    );
}
