//! The compose files on a real Docker engine: the lecture's experiments as
//! the students run them.
//!
//! Where no engine answers `docker info`, these tests print that they were
//! skipped; with REQUIRE_DOCKER=1 (set by `.ci/run`) they fail instead. The
//! image is built once per run; every stack gets its own project name and is
//! taken down (`down -v`) when its test ends, passed or failed. The stacks
//! run one at a time: on two cores, parallel stacks would make the timings
//! (the 3 s `stop`) meaningless.

mod common;

use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use common::skipped;

const BUILD_TIMEOUT: Duration = Duration::from_secs(20 * 60);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

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

fn ok(command: &mut Command, timeout: Duration) -> String {
    let output = run(command, timeout);
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    assert!(
        output.status.success(),
        "{command:?} failed: {}\n{}\n{}",
        output.status,
        text(&output.stdout),
        text(&output.stderr)
    );
    text(&output.stdout)
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
        skipped("no Docker engine answers `docker info` (.ci/run starts one)");
        return None;
    }
    let guard = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    IMAGE.get_or_init(|| {
        let started = Instant::now();
        ok(
            Command::new("docker").args([
                "build",
                "-t",
                "zmq-reqrep:latest",
                env!("CARGO_MANIFEST_DIR"),
            ]),
            BUILD_TIMEOUT,
        );
        eprintln!("image built in {:?}", started.elapsed());
    });
    Some(guard)
}

/// One compose project, taken down when dropped.
struct Stack {
    project: String,
    file: String,
    env: Vec<(String, String)>,
}

impl Stack {
    fn new(file: &str, test: &str, env: &[(&str, &str)]) -> Stack {
        Stack {
            project: format!("zr{}-{test}", std::process::id()),
            file: format!("{}/{file}", env!("CARGO_MANIFEST_DIR")),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("docker");
        command
            .args(["compose", "-p", &self.project, "-f", &self.file])
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        command
    }

    fn compose(&self, args: &[&str]) -> String {
        ok(&mut self.command(args), COMMAND_TIMEOUT)
    }

    /// The containers of one service, stopped ones included.
    fn containers(&self, service: &str) -> Vec<String> {
        self.compose(&["ps", "-a", "-q", service])
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    }

    /// Waits until `count` containers of `service` are in the state `want`
    /// reports, e.g. exited, or healthy.
    fn wait_for(
        &self,
        service: &str,
        count: usize,
        timeout: Duration,
        want: &dyn Fn(&State) -> bool,
    ) -> Vec<State> {
        let deadline = Instant::now() + timeout;
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
                "{service}: not {count} containers as wanted after {timeout:?}: {states:#?}\n{}",
                self.compose(&["logs", "--no-color"])
            );
            thread::sleep(Duration::from_millis(500));
        }
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
}

fn state(id: &str) -> State {
    let text = ok(
        Command::new("docker").args([
            "inspect",
            "-f",
            "{{.State.Status}} {{.State.ExitCode}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}",
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
    }
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

#[test]
fn reqrep_three_scaled_clients_each_get_five_replies_and_exit_0() {
    let Some(_engine) = engine() else { return };
    let stack = Stack::new(
        "docker-compose.reqrep.yml",
        "scale",
        &[("COUNT", "5"), ("INTERVAL_MS", "100")],
    );
    stack.compose(&["up", "-d", "--scale", "client=3"]);
    let clients = stack.wait_for("client", 3, Duration::from_secs(60), EXITED);
    assert_eq!(clients.len(), 3);
    for client in &clients {
        let log = logs(&client.id);
        assert_eq!(client.exit_code, 0, "{log}");
        assert_eq!(replies_in(&log), 5, "{log}");
        assert!(log.contains("done: 5 replies to 5 requests"), "{log}");
    }
}

#[test]
fn reqrep_clients_started_three_seconds_before_the_server_still_complete() {
    let Some(_engine) = engine() else { return };
    let stack = Stack::new(
        "docker-compose.reqrep.yml",
        "reversed",
        &[("COUNT", "5"), ("INTERVAL_MS", "100")],
    );
    // depends_on reversed by hand: the clients alone first...
    stack.compose(&["up", "-d", "--no-deps", "--scale", "client=2", "client"]);
    thread::sleep(Duration::from_secs(3));
    // ...and the server three seconds later.
    stack.compose(&["up", "-d", "--no-deps", "server"]);
    let clients = stack.wait_for("client", 2, Duration::from_secs(60), EXITED);
    for client in &clients {
        let log = logs(&client.id);
        assert_eq!(client.exit_code, 0, "{log}");
        assert_eq!(replies_in(&log), 5, "{log}");
    }
}

#[test]
fn broker_spreads_forty_requests_over_three_workers() {
    let Some(_engine) = engine() else { return };
    let stack = Stack::new(
        "docker-compose.broker.yml",
        "broker",
        &[("COUNT", "20"), ("INTERVAL_MS", "20")],
    );
    // Workers first, and only once all three are connected (healthy) the
    // clients: a DEALER hands requests only to workers already connected.
    stack.compose(&["up", "-d", "--scale", "worker=3", "broker", "worker"]);
    stack.wait_for("worker", 3, Duration::from_secs(60), &|s: &State| {
        s.health == "healthy"
    });
    stack.compose(&["up", "-d", "--no-deps", "--scale", "client=2", "client"]);
    let clients = stack.wait_for("client", 2, Duration::from_secs(60), EXITED);
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

#[test]
fn compose_stop_returns_within_three_seconds() {
    let Some(_engine) = engine() else { return };
    for (file, clients, env) in [
        ("docker-compose.reqrep.yml", "client=2", [("MODE", "proxy")]),
        ("docker-compose.broker.yml", "client=2", [("MODE", "lb")]),
    ] {
        let stack = Stack::new(file, "stop", &env);
        stack.compose(&["up", "-d", "--scale", clients]);
        // Running and answering: a client has printed its second reply.
        let deadline = Instant::now() + Duration::from_secs(60);
        while !stack
            .containers("client")
            .iter()
            .any(|id| replies_in(&logs(id)) >= 2)
        {
            assert!(
                Instant::now() < deadline,
                "{file}: no replies\n{}",
                stack.compose(&["logs", "--no-color"])
            );
            thread::sleep(Duration::from_millis(200));
        }
        let started = Instant::now();
        stack.compose(&["stop"]);
        let took = started.elapsed();
        eprintln!("{file}: docker compose stop took {took:?}");
        assert!(took < Duration::from_secs(3), "{file}: stop took {took:?}");
        for service in [
            "client",
            if file.contains("broker") {
                "broker"
            } else {
                "server"
            },
        ] {
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
