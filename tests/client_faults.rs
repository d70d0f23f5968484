//! The Lazy Pirate client under the faults of issue 9: a peer that answers
//! twice, a hung server among healthy ones, nothing to connect to, a broker
//! that takes requests but has no worker, and the lines it prints about them;
//! and a server stopped for longer than the ZeroMQ handshake may take.
//!
//! The "servers" here are often the test's own sockets, so that each fault
//! happens exactly when the test says.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::*;
use zmq_reqrep::plumbing::connection::Links;
use zmq_reqrep::security::handshake::{self, Mechanism};

/// Answers `request` (as a ROUTER received it) with `body`, in the same
/// envelope: everything up to the empty delimiter goes back as it came.
fn answer(router: &zmq::Socket, request: &[Vec<u8>], body: &str) {
    let envelope = &request[..request.len() - 1];
    let mut reply: Vec<&[u8]> = envelope.iter().map(Vec::as_slice).collect();
    reply.push(body.as_bytes());
    router.send_multipart(reply, 0).unwrap();
}

#[test]
fn defect_2_a_duplicate_reply_is_never_taken_for_a_later_request() {
    // The test is a hostile server: it answers request #1 twice, and the
    // second copy arrives while the client waits for the reply to #2.
    let ctx = zmq::Context::new();
    let (router, endpoint) = test_bound(&ctx, zmq::ROUTER, "tcp://127.0.0.1:*");
    let mut client = Proc::start(
        CLIENT,
        &[
            "--connect",
            &endpoint,
            "--count",
            "3",
            "--interval-ms",
            "0",
            "--timeout-ms",
            "5000",
        ],
    );
    let first = router.recv_multipart(0).expect("request #1");
    answer(&router, &first, "World 1");
    let second = router.recv_multipart(0).expect("request #2");
    answer(&router, &first, "EVIL"); // reply #1 again
    answer(&router, &second, "World 2");
    let third = router.recv_multipart(0).expect("request #3");
    answer(&router, &third, "World 3");

    client.expect_exit(0, SOON);
    let replies = reply_lines(&client);
    assert!(
        replies.iter().all(|line| !line.contains("EVIL")),
        "a duplicate of reply #1 was taken for a later request: {replies:#?}"
    );
    assert_eq!(replies.len(), 3, "{replies:#?}");
    for (i, line) in replies.iter().enumerate() {
        let expected = format!("#{n} sent b\"Hello\" got b\"World {n}\"", n = i + 1);
        assert!(line.contains(&expected), "{line}");
    }
}

#[test]
fn defect_3_a_retry_reaches_the_other_server() {
    let (_hung, hung_endpoint) = start_server(&["--hang-after", "1", "--name", "A"]);
    let (mut healthy, healthy_endpoint) = start_server(&["--name", "B"]);
    let connect = format!("{hung_endpoint},{healthy_endpoint}");
    let mut client = Proc::start(
        CLIENT,
        &[
            "--connect",
            &connect,
            "--count",
            "40",
            "--interval-ms",
            "0",
            "--timeout-ms",
            "300",
        ],
    );
    // About half the requests go to A first and wait 300 ms each.
    client.expect_exit(0, Duration::from_secs(60));
    assert_eq!(reply_lines(&client).len(), 40);
    let resends = client
        .stderr()
        .iter()
        .filter(|line| line.contains("no reply within 300 ms"))
        .count();
    assert!(resends > 0, "A was never asked: the test proves nothing");
    healthy.signal(libc::SIGTERM);
    healthy.expect_exit(0, SOON);
    assert!(served(&healthy) >= 39, "B served {}", served(&healthy));
}

#[test]
fn defect_9_nothing_connected_is_reported_as_such_not_as_no_reply() {
    let absent = free_endpoint();
    let mut client = Proc::start(
        CLIENT,
        &[
            "--connect",
            &absent,
            "--count",
            "1",
            "--timeout-ms",
            "200",
            "--retries",
            "1",
        ],
    );
    client.expect_exit(1, SOON);
    let log = client.stderr();
    assert!(
        log.iter().all(|line| !line.contains("no reply within")),
        "a request that never left was reported unanswered: {log:#?}"
    );
    client.wait_log(
        &format!("could not send request #1: no server connected at {absent}"),
        SOON,
    );
    let error = log.last().unwrap();
    assert!(
        error.starts_with(&format!(
            "error: could not send request #1: no server connected at {absent}"
        )),
        "{error}"
    );
    let summary = client.stdout().pop().unwrap();
    assert!(
        summary.contains("done: 0 replies to 0 requests, 0 resends"),
        "{summary}"
    );
}

#[test]
fn defect_9_a_broker_without_workers_is_not_taken_for_a_dead_server() {
    let (_broker, frontend, _backend) = start_broker("proxy", &[]);
    let mut client = Proc::start(
        BROKER_CLIENT,
        &[
            "--connect",
            &frontend,
            "--count",
            "1",
            "--timeout-ms",
            "300",
            "--retries",
            "1",
        ],
    );
    client.expect_exit(1, SOON);
    client.wait_log("request #1: no reply within 300 ms", SOON);
    let error = client.stderr().pop().unwrap();
    assert!(
        !error.contains("is the server running?"),
        "the broker took the request; it is running: {error}"
    );
    assert!(
        error.contains(
            "sent, but not answered (a server busy or hung, or a broker without workers)"
        ),
        "{error}"
    );
}

#[test]
fn defect_9_a_missing_payload_file_is_a_usage_error_naming_the_option() {
    let missing = "/nonexistent/payload";
    for (exe, args) in [
        (CLIENT, ["--message-file", missing, "--count", "1"]),
        (BROKER_CLIENT, ["--message-file", missing, "--count", "1"]),
        (
            SERVER,
            ["--reply-file", missing, "--bind", "tcp://127.0.0.1:*"],
        ),
    ] {
        usage_error(exe, &args, &[], &[args[0], missing]);
    }
}

#[test]
fn defect_9_summaries_count_in_the_singular_and_skip_an_empty_average() {
    let (mut server, endpoint) = start_server(&[]);
    let mut client = Proc::start(CLIENT, &["--connect", &endpoint, "--count", "1"]);
    client.expect_exit(0, SOON);
    let summary = client.stdout().pop().unwrap();
    assert!(
        summary.contains("done: 1 reply to 1 request, 0 resends, in "),
        "{summary}"
    );
    server.signal(libc::SIGTERM);
    server.expect_exit(0, SOON);
    server.wait_log("served 1 request", SOON);
    assert!(
        server
            .stderr()
            .iter()
            .all(|line| !line.contains("1 requests")),
        "{:#?}",
        server.stderr()
    );

    // No reply at all: there is no average to give.
    let absent = free_endpoint();
    let mut client = Proc::start(CLIENT, &["--connect", &absent]);
    client.wait_log("REQ connecting", SOON);
    client.signal(libc::SIGTERM);
    client.expect_exit(0, SOON);
    let summary = client.stdout().pop().unwrap();
    assert!(summary.contains("done: 0 replies"), "{summary}");
    assert!(!summary.contains("avg"), "{summary}");
    assert!(summary.contains("no round trips"), "{summary}");
}

/// `--count N` ends with its Nth reply: the pause of `--interval-ms` is
/// between requests, not after the last one. Measured without a clock:
/// the pause asked for is ten minutes, the test waits at most 10 s for
/// the exit, so a client that still pauses after its reply fails here
/// whatever the machine's load.
#[test]
fn a_counted_client_ends_at_its_last_reply_without_a_last_pause() {
    let (server, endpoint) = start_server(&[]);
    let mut client = Proc::start(
        CLIENT,
        &[
            "--connect",
            &endpoint,
            "--count",
            "1",
            "--interval-ms",
            "600000",
        ],
    );
    client.expect_exit(0, SOON);
    assert_eq!(reply_lines(&client).len(), 1);
    server.wait_log(r#"request b"Hello""#, SOON);
}

/// What this test process logs through `tracing`, kept in memory: the
/// handshake watch runs here, in a thread of the library's, and logs there.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// The process's log (set up once: a process has one global logger).
    fn log() -> Captured {
        static LOG: OnceLock<Captured> = OnceLock::new();
        LOG.get_or_init(|| {
            let log = Captured::default();
            let writer = log.clone();
            tracing_subscriber::fmt()
                .with_ansi(false)
                .with_writer(move || writer.clone())
                .init();
            log
        })
        .clone()
    }

    fn lines(&self) -> Vec<String> {
        let bytes = self.0.lock().unwrap();
        String::from_utf8_lossy(&bytes)
            .lines()
            .map(String::from)
            .collect()
    }

    /// The first line containing `needle`, waiting up to `timeout`.
    fn wait_for(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.lines().into_iter().find(|line| line.contains(needle)) {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} within {timeout:?}: {:#?}",
                self.lines()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A connection to a stopped server (SIGSTOP, `docker compose pause`): its
/// kernel takes the connection, nobody answers the ZeroMQ greeting, and
/// libzmq gives up when ZMQ_HANDSHAKE_IVL runs out (30 s by default), then
/// tries again. The client's handshake watch says so, and not that the
/// server hung up or uses another security mechanism; and once the server
/// runs again, that it answers now, and the connection is up.
///
/// The roles do not expose ZMQ_HANDSHAKE_IVL, so the test opens the
/// client's socket itself, with 500 ms, and starts the library's watch on
/// it, as `reqrep_client` does on its own.
#[test]
fn a_stopped_server_is_reported_as_out_of_handshake_time_not_as_hanging_up() {
    let log = Captured::log();
    let (mut server, endpoint) = start_server(&[]);
    server.signal(libc::SIGSTOP);
    wait_stopped(server.pid());

    let ctx = zmq::Context::new();
    let req = test_socket(&ctx, zmq::REQ);
    req.set_handshake_ivl(500).unwrap();
    let links = Links::new();
    let link = links.link();
    handshake::watch_linked(&ctx, &req, Mechanism::Null, &link);
    req.connect(&endpoint).unwrap();

    let line = log.wait_for(" did not complete the ZeroMQ handshake", SOON);
    assert!(
        line.contains(&format!(
            "{endpoint} did not complete the ZeroMQ handshake within 500 ms (ZMQ_HANDSHAKE_IVL)"
        )),
        "{line}"
    );
    assert!(line.contains("it may be stopped"), "{line}");
    assert!(
        log.lines()
            .iter()
            .all(|line| !line.contains("hung up") && !line.contains("security mechanism")),
        "{:#?}",
        log.lines()
    );
    assert!(!link.is_up(), "up without a handshake");

    server.signal(libc::SIGCONT);
    assert!(
        links.wait_for_any(&[&link], SOON),
        "no connection up after the server ran again"
    );
    log.wait_for(
        &format!("{endpoint}: handshake succeeded: the server answers now"),
        SOON,
    );
    req.send("Hello", 0).unwrap();
    assert_eq!(req.recv_bytes(0).unwrap(), b"World");
}
