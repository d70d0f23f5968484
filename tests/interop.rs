//! Interoperability with the course's own kind of programs: plain pyzmq peers
//! (tests/py/course_peers.py) at the other end of every Rust role.
//!
//! Skipped, with a note, where no Python with pyzmq is found; `.ci/run`
//! installs pyzmq in a virtual environment and sets REQUIRE_PYZMQ=1, so CI
//! always runs them.

mod common;

use common::*;

fn py(python: &str, args: &[&str]) -> Proc {
    let script = py_script("course_peers.py");
    let mut all = vec!["-u", script.as_str()];
    all.extend_from_slice(args);
    Proc::start(python, &all)
}

#[test]
fn pyzmq_client_talks_to_reqrep_server() {
    let Some(python) = pyzmq() else { return };
    let server = Proc::start(SERVER, &["--bind", "tcp://127.0.0.1:*"]);
    let endpoint = server.wait_endpoints("REP listening on").remove(0);

    let mut client = py(&python, &["req-client", &endpoint, "3"]);
    client.expect_exit(0, SOON);
    let lines = client.stdout();
    for i in 1..=3 {
        let expected = format!("#{i} sent b'Hello' got b'World'");
        assert!(lines.contains(&expected), "{expected:?} not in {lines:#?}");
    }
    server.wait_log_count(r#"request b"Hello""#, 3, SOON);

    // Bytes that are not UTF-8 arrive as they are, shown escaped.
    let mut client = py(&python, &["req-client", &endpoint, "1", "ff00c328"]);
    client.expect_exit(0, SOON);
    assert_eq!(client.stdout()[0], r"#1 sent b'\xff\x00\xc3(' got b'World'");
    server.wait_log(r#"request b"\xff\x00\xc3(""#, SOON);
}

#[test]
fn reqrep_client_talks_to_pyzmq_server() {
    let Some(python) = pyzmq() else { return };
    let server = py(&python, &["rep-server", "tcp://127.0.0.1:*"]);
    let endpoint = server.wait_endpoints_out("listening on").remove(0);

    let mut client = Proc::start(
        CLIENT,
        &["--connect", &endpoint, "--count", "3", "--interval-ms", "0"],
    );
    client.expect_exit(0, SOON);
    let replies: Vec<String> = client
        .stdout()
        .into_iter()
        .filter(|l| l.contains(" got "))
        .collect();
    assert_eq!(replies.len(), 3);
    assert!(
        replies
            .iter()
            .all(|l| l.contains(r#"sent b"Hello" got b"World""#)),
        "{replies:#?}"
    );
    server.wait_out_count("server received b'Hello'", 3, SOON);
}

#[test]
fn pyzmq_workers_and_clients_work_through_broker() {
    let Some(python) = pyzmq() else { return };
    let broker = Proc::start(
        BROKER,
        &[
            "--frontend",
            "tcp://127.0.0.1:*",
            "--backend",
            "tcp://127.0.0.1:*",
        ],
    );
    let endpoints = broker.wait_endpoints("frontend ROUTER on");
    let workers: Vec<Proc> = ["pw1", "pw2"]
        .iter()
        .map(|name| py(&python, &["worker", &endpoints[1], name]))
        .collect();
    for worker in &workers {
        worker.wait_out_count("connecting to", 1, SOON);
    }
    // A DEALER only hands work to workers already connected.
    broker.wait_log_count("backend: 127.0.0.1", 2, SOON);

    let mut clients: Vec<Proc> = (0..2)
        .map(|_| py(&python, &["req-client", &endpoints[0], "10"]))
        .collect();
    for client in &mut clients {
        client.expect_exit(0, SOON);
        assert_eq!(
            client
                .stdout()
                .iter()
                .filter(|l| l.ends_with("got b'World'"))
                .count(),
            10
        );
    }
    for (worker, name) in workers.iter().zip(["pw1", "pw2"]) {
        let served = worker
            .stdout()
            .iter()
            .filter(|l| l.starts_with(name))
            .count();
        assert!(served > 0, "python worker {name} got no request");
    }
}

#[test]
fn worker_and_broker_client_work_through_pyzmq_broker() {
    let Some(python) = pyzmq() else { return };
    let broker = py(
        &python,
        &["broker", "tcp://127.0.0.1:*", "tcp://127.0.0.1:*"],
    );
    let endpoints = broker.wait_endpoints_out("broker on");
    let mut workers: Vec<Proc> = ["w1", "w2"]
        .iter()
        .map(|name| Proc::start(WORKER, &["--connect", &endpoints[1], "--name", name]))
        .collect();
    for worker in &workers {
        worker.wait_log("REP worker connecting", SOON);
    }
    let mut client = Proc::start(
        BROKER_CLIENT,
        &[
            "--connect",
            &endpoints[0],
            "--count",
            "10",
            "--interval-ms",
            "10",
        ],
    );
    client.expect_exit(0, SOON);
    let replies = client
        .stdout()
        .iter()
        .filter(|l| l.contains(r#"got b"World""#))
        .count();
    assert_eq!(replies, 10);
    let mut total = 0;
    for worker in &mut workers {
        worker.signal(libc::SIGTERM);
        worker.expect_exit(0, SOON);
        total += served(worker);
    }
    assert_eq!(total, 10);
}
