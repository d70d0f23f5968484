//! Issue 9, the broker and worker side: each defect a hard protocol review
//! found, reproduced with the real `broker` and `worker` on 127.0.0.1, and
//! test sockets of our own where a test needs a peer that misbehaves (a
//! worker answering twice, a client flooding, a broker that never answers).

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

const READY: u8 = 0x01;
const HEARTBEAT: u8 = 0x02;

/// A worker of the test's own speaking the lb protocol through a DEALER,
/// so that it can misbehave: it announces itself and then does what the
/// test says.
struct FakeWorker {
    socket: zmq::Socket,
}

impl FakeWorker {
    fn join(ctx: &zmq::Context, backend: &str, name: &str) -> FakeWorker {
        let socket = test_socket(ctx, zmq::DEALER);
        socket.connect(backend).unwrap();
        socket
            .send_multipart([&[READY][..], name.as_bytes()], 0)
            .unwrap();
        FakeWorker { socket }
    }

    /// The next request, skipping the broker's heartbeats.
    fn request(&self) -> Vec<Vec<u8>> {
        loop {
            let frames = self.socket.recv_multipart(0).expect("a request");
            if frames != [vec![HEARTBEAT]] {
                return frames;
            }
        }
    }

    fn send(&self, frames: &[&[u8]]) {
        self.socket.send_multipart(frames, 0).unwrap();
    }
}

/// A process whose stderr is a pipe that nobody reads (until `stop_and_read`), as
/// a role started by a supervisor that does not collect its output.
/// Killed when dropped.
struct Unread {
    child: std::process::Child,
}

impl Unread {
    fn start(exe: &str, args: &[&str]) -> Unread {
        let child = Command::new(exe)
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Unread { child }
    }

    /// Stops the process (SIGTERM) and returns everything it wrote to stderr.
    fn stop_and_read(mut self) -> Vec<u8> {
        let mut stderr = self.child.stderr.take().unwrap();
        let reader = thread::spawn(move || {
            let mut all = Vec::new();
            let _ = stderr.read_to_end(&mut all);
            all
        });
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + SOON;
        while self.child.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "no exit within {SOON:?} of SIGTERM"
            );
            thread::sleep(Duration::from_millis(20));
        }
        reader.join().unwrap()
    }
}

impl Drop for Unread {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// --- defect 1 ---------------------------------------------------------------

#[test]
fn defect_1_busy_lb_worker_is_not_declared_dead() {
    // Heartbeats every 200 ms, so 600 ms of silence would mean death; each
    // request takes 1.5 s of work.
    let (broker, frontend, backend) = start_broker("lb", &["--heartbeat-ms", "200"]);
    let worker = start_lb_worker(&backend, "busy", "200", &["--work-ms", "1500"]);
    broker.wait_log("worker busy (", SOON);
    let mut client = Proc::start(
        BROKER_CLIENT,
        &[
            "--connect",
            &frontend,
            "--count",
            "2",
            "--interval-ms",
            "0",
            "--timeout-ms",
            "0",
        ],
    );
    client.expect_exit(0, Duration::from_secs(30));
    assert_eq!(reply_lines(&client).len(), 2);
    // The worker never stopped heartbeating, so neither side saw silence,
    // and nothing was said to be lost or forgotten.
    for word in [" expired", "rejoined", "lost", "silent"] {
        assert_eq!(broker.log_lines(word), Vec::<String>::new(), "{word}");
        assert_eq!(worker.log_lines(word), Vec::<String>::new(), "{word}");
    }
}

// --- defect 2 ---------------------------------------------------------------

#[test]
fn defect_2_lb_broker_forwards_a_reply_only_from_the_worker_holding_the_request() {
    let (broker, frontend, backend) = start_broker("lb", &[]);
    let ctx = zmq::Context::new();
    let a = FakeWorker::join(&ctx, &backend, "a");
    broker.wait_log("worker a (", SOON);
    let b = FakeWorker::join(&ctx, &backend, "b");
    broker.wait_log("worker b (", SOON);
    // A DEALER client sees every reply the broker forwards, wanted or not.
    let client = test_socket(&ctx, zmq::DEALER);
    client.connect(&frontend).unwrap();

    // "one" goes to a, the worker idle the longest.
    client.send_multipart(["", "one"], 0).unwrap();
    let one = a.request();
    assert_eq!(one[1..], [b"".to_vec(), b"one".to_vec()]);
    let client_id = one[0].clone();
    // b holds nothing, yet forges a reply for that client...
    b.send(&[&client_id, b"", b"forged by b"]);
    // ...a answers properly, and then a second time.
    a.send(&[&client_id, b"", b"reply to one"]);
    a.send(&[&client_id, b"", b"reply to one, again"]);

    // Every reply the client gets, until (and with) the one whose body is
    // `last`. Replies from different workers may come in either order;
    // those from one worker come in the order it sent them.
    let mut got = Vec::new();
    let mut receive_until = |last: &str| loop {
        let frames = client.recv_multipart(0).expect("a reply");
        let body = String::from_utf8_lossy(frames.last().unwrap()).into_owned();
        got.push(body.clone());
        if body == last {
            break;
        }
    };

    // A request id frame in the envelope, as a REQ with ZMQ_REQ_CORRELATE
    // sends: the whole envelope must match, not just the client's identity.
    client
        .send_multipart([&b"\x00\x00\x00\x07"[..], b"", b"two"], 0)
        .unwrap();
    let two = b.request();
    assert_eq!(two[1], b"\x00\x00\x00\x07");
    b.send(&[&client_id, b"\x00\x00\x00\x08", b"", b"wrong request id"]);
    b.send(&[&client_id, b"\x00\x00\x00\x07", b"", b"reply to two"]);
    // b's forged reply went before this one: it has been handled.
    receive_until("reply to two");

    // a again: its duplicate went before this reply.
    client.send_multipart(["", "three"], 0).unwrap();
    let three = a.request();
    assert_eq!(three[2], b"three");
    a.send(&[&client_id, b"", b"reply to three"]);
    receive_until("reply to three");

    got.sort();
    assert_eq!(got, ["reply to one", "reply to three", "reply to two"]);
    broker.wait_log("holds no request", SOON);
}

// --- defect 4 ---------------------------------------------------------------

#[test]
fn defect_4_lb_broker_holds_a_request_until_a_worker_is_idle() {
    // Long heartbeats: the broker still counts the killed worker as idle
    // when the request comes, and learns otherwise only by sending to it.
    let (broker, frontend, backend) = start_broker("lb", &["--heartbeat-ms", "5000"]);
    let mut first = start_lb_worker(&backend, "first", "5000", &[]);
    broker.wait_log("worker first (", SOON);
    first.signal(libc::SIGKILL);
    assert!(first.wait_exit(SOON).is_some());

    // The naive client: no timeout, so a dropped request hangs it for good.
    let mut client = Proc::start(
        BROKER_CLIENT,
        &["--connect", &frontend, "--count", "1", "--timeout-ms", "0"],
    );
    broker.wait_log(" expired", SOON);
    thread::sleep(Duration::from_millis(300));
    let _second = start_lb_worker(&backend, "second", "5000", &[]);
    client.expect_exit(0, SOON);
    assert_eq!(reply_lines(&client).len(), 1);
}

// --- defect 6 ---------------------------------------------------------------

#[test]
fn defect_6_a_flood_of_bad_requests_does_not_stall_the_broker() {
    let frontend = free_endpoint();
    let backend = free_endpoint();
    // The broker's log goes to a pipe nobody reads.
    let broker = Unread::start(
        BROKER,
        &[
            "--mode",
            "lb",
            "--frontend",
            &frontend,
            "--backend",
            &backend,
        ],
    );
    let _worker = start_lb_worker(&backend, "w", "1000", &[]);
    let ctx = zmq::Context::new();
    let sentinel = test_socket(&ctx, zmq::REQ);
    sentinel.connect(&frontend).unwrap();
    // The first round trip says the broker and its worker are ready.
    sentinel.send("Hello", 0).unwrap();
    assert_eq!(sentinel.recv_bytes(0).expect("first reply"), b"World");

    // 100 000 requests without the empty delimiter, as fast as a DEALER can.
    let done = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let flood = {
        let (done, sent, frontend) = (done.clone(), sent.clone(), frontend.clone());
        thread::spawn(move || {
            let ctx = zmq::Context::new();
            let dealer = test_socket(&ctx, zmq::DEALER);
            dealer.connect(&frontend).unwrap();
            let deadline = Instant::now() + Duration::from_secs(60);
            for _ in 0..100_000 {
                if Instant::now() > deadline || dealer.send("no delimiter", 0).is_err() {
                    break;
                }
                sent.fetch_add(1, Ordering::Relaxed);
            }
            // A valid request last: its reply says the broker has read
            // every bad one before it (one connection's messages stay in
            // order).
            dealer.set_rcvtimeo(30_000).unwrap();
            dealer.send_multipart(["", "last"], 0).unwrap();
            let reply = dealer
                .recv_multipart(0)
                .expect("the reply to the last request");
            assert_eq!(reply, [b"".to_vec(), b"World".to_vec()]);
            done.store(true, Ordering::SeqCst);
        })
    };
    // Meanwhile the sentinel keeps being served, each reply within 3 s.
    sentinel.set_rcvtimeo(3000).unwrap();
    let mut round_trips = 0;
    while !done.load(Ordering::SeqCst) || round_trips < 20 {
        assert!(round_trips < 100_000, "bounded");
        sentinel.send("Hello", 0).unwrap();
        let reply = sentinel.recv_bytes(0);
        assert!(
            reply.is_ok(),
            "the sentinel went unanswered for 3 s after {round_trips} round trips, \
             {} bad requests sent",
            sent.load(Ordering::Relaxed)
        );
        round_trips += 1;
    }
    flood.join().unwrap();
    assert_eq!(sent.load(Ordering::Relaxed), 100_000);

    let log = broker.stop_and_read();
    let text = String::from_utf8_lossy(&log);
    assert!(
        log.len() < 256 * 1024,
        "{} bytes of log for 100 000 bad requests",
        log.len()
    );
    assert!(text.contains("no empty delimiter"), "{text}");
    assert!(text.contains("100000 dropped"), "{text}");
    eprintln!(
        "{round_trips} sentinel round trips during the flood; {} bytes of log",
        log.len()
    );
}

/// Worker log lines of 7 KB each (a request of 100 frames), with stderr
/// never read: past the pipe's 64 KiB and the 1 MiB buffer, lines must be
/// dropped, not the worker stopped.
#[test]
fn defect_6_output_never_blocks_a_socket_loop() {
    let ctx = zmq::Context::new();
    // The test is the broker: a DEALER that REP workers connect to.
    let (broker, endpoint) = test_bound(&ctx, zmq::DEALER, "tcp://127.0.0.1:*");
    let worker = Unread::start(WORKER, &["--connect", &endpoint, "--echo"]);
    let frame = vec![b'x'; 64];
    let mut request: Vec<&[u8]> = vec![b""];
    request.extend(std::iter::repeat_n(frame.as_slice(), 100));
    broker.set_rcvtimeo(5000).unwrap();
    for i in 0..400 {
        broker.send_multipart(&request, 0).unwrap();
        let reply = broker.recv_multipart(0);
        assert!(reply.is_ok(), "no reply to request {i} within 5 s");
    }
    let log = worker.stop_and_read();
    let text = String::from_utf8_lossy(&log);
    assert!(
        text.contains("dropped"),
        "{}",
        text.lines().last().unwrap_or("")
    );
}

// --- defect 8 ---------------------------------------------------------------

#[test]
fn defect_8_lb_broker_and_rep_worker_each_say_what_is_wrong() {
    let (broker, _frontend, backend) = start_broker("lb", &[]);
    let worker = Proc::start(WORKER, &["--connect", &backend, "--mode", "plain"]);
    let said = broker.wait_log("start the workers with --mode lb", SOON);
    assert!(said.contains("REP worker"), "{said}");
    // Whichever side finds the mismatch first: refused, or hung up on.
    let said = worker.wait_log("--mode lb", SOON);
    assert!(
        said.contains("refused") || said.contains("hung up"),
        "{said}"
    );
    // One line each, not one per attempt.
    thread::sleep(Duration::from_secs(1));
    assert_eq!(broker.log_lines("--mode lb").len(), 1);
    assert_eq!(worker.log_lines("--mode lb").len(), 1);
}

#[test]
fn defect_8_proxy_broker_and_lb_worker_each_say_what_is_wrong() {
    let (broker, frontend, backend) = start_broker("proxy", &[]);
    let worker = start_lb_worker(&backend, "w1", "200", &[]);
    let said = broker.wait_log("start the broker with --mode lb", SOON);
    assert!(said.contains("w1"), "{said}");
    worker.wait_log("is the broker running with --mode lb?", SOON);
    // The worker finds the broker silent, opens a new socket and sends
    // READY again; its next reply comes after that READY.
    worker.wait_log("reconnected", SOON);
    // The broker's DEALER deals to every pipe it still has: once it has
    // seen the old connection go, the request cannot go down that pipe.
    broker.wait_log("disconnected", SOON);
    let ctx = zmq::Context::new();
    let req = test_req(&ctx, &frontend);
    req.send("Hello", 0).unwrap();
    assert_eq!(req.recv_bytes(0).unwrap(), b"World");
    assert_eq!(broker.log_lines("--mode lb").len(), 1);
    assert_eq!(worker.log_lines("--mode lb").len(), 1);
    assert_eq!(broker.log_lines("no envelope"), Vec::<String>::new());
}

#[test]
fn lb_broker_does_not_blame_the_mode_of_a_peer_that_hung_up_before_the_handshake() {
    // Seen after `docker compose pause broker1` / `unpause`: the lb workers
    // gave up on connections the frozen broker had not answered, and the
    // broker, once thawed, told them to use --mode lb, which they did. A
    // stopped process's kernel still completes TCP connects into the listen
    // backlog; libzmq accepts them once the process runs again and finds the
    // peer gone (HANDSHAKE_FAILED_NO_DETAIL, EPIPE).
    let (mut broker, _frontend, backend) = start_broker("lb", &[]);
    let address = backend.trim_start_matches("tcp://").to_string();
    broker.signal(libc::SIGSTOP);
    let stopped_at = Instant::now();
    wait_stopped(broker.pid());
    // A port scan, or a peer that gave up without a word...
    let scan = std::net::TcpStream::connect_timeout(&address.parse().unwrap(), SOON);
    drop(scan.expect("the kernel completes the connect for a stopped broker"));
    // ...and a ZeroMQ socket that gave up after its first 10 bytes, as an
    // lb worker giving up on a frozen broker does.
    let ctx = zmq::Context::new();
    let dealer = test_socket(&ctx, zmq::DEALER);
    dealer.connect(&backend).unwrap();
    // Stopped for a few seconds, as the workers' give-up takes: the
    // broker's monitor tells a stop from a quiet moment by its length.
    thread::sleep(Duration::from_secs(4).saturating_sub(stopped_at.elapsed()));
    drop(dealer);
    // Closed for sure: ending the context waits for its sockets' end.
    drop(ctx);
    broker.signal(libc::SIGCONT);
    for said in broker.wait_log_count("backend: dropped", 2, SOON) {
        assert!(!said.contains("--mode lb"), "{said}");
        assert!(said.contains("closed the connection"), "{said}");
    }
}

#[test]
fn after_a_stop_the_broker_names_no_address_it_cannot_trust() {
    // Seen after `docker compose unpause` of an lb broker: the monitor read
    // the ACCEPTED events of the connections given up on during the stop
    // after libzmq had closed them and reused their descriptors, and logged
    // other connections' addresses (even a client's, on the backend), and
    // their byte counts, which brought back the --mode lb hint.
    let (mut broker, frontend, backend) = start_broker("lb", &[]);
    let backend_address: std::net::SocketAddr =
        backend.trim_start_matches("tcp://").parse().unwrap();
    let frontend_address: std::net::SocketAddr =
        frontend.trim_start_matches("tcp://").parse().unwrap();
    broker.signal(libc::SIGSTOP);
    let stopped_at = Instant::now();
    wait_stopped(broker.pid());
    // Peers that give up on the backend while the broker is stopped...
    const GAVE_UP: usize = 12;
    for _ in 0..GAVE_UP {
        let given_up = std::net::TcpStream::connect_timeout(&backend_address, SOON);
        drop(given_up.expect("the kernel completes the connect for a stopped broker"));
    }
    // ...and clients that wait on the frontend, whose connections take the
    // descriptors freed once the broker runs again.
    let waiting: Vec<std::net::TcpStream> = (0..GAVE_UP)
        .map(|_| std::net::TcpStream::connect_timeout(&frontend_address, SOON).unwrap())
        .collect();
    let waiting_ports: Vec<String> = waiting
        .iter()
        .map(|stream| format!(":{} ", stream.local_addr().unwrap().port()))
        .collect();
    thread::sleep(Duration::from_secs(4).saturating_sub(stopped_at.elapsed()));
    broker.signal(libc::SIGCONT);
    for said in broker.wait_log_count("backend: dropped", GAVE_UP, SOON) {
        assert!(said.contains("backend: dropped a peer"), "{said}");
        assert!(!said.contains("--mode lb"), "{said}");
        for port in &waiting_ports {
            assert!(!said.contains(port.trim_end()), "{said}");
        }
    }
    drop(waiting);
}

// --- defect 9 ---------------------------------------------------------------

#[test]
fn defect_9_lb_worker_stopped_mid_request_sends_no_reply() {
    let ctx = zmq::Context::new();
    let (router, endpoint) = test_bound(&ctx, zmq::ROUTER, "tcp://127.0.0.1:*");
    let mut worker = start_lb_worker(&endpoint, "w", "1000", &["--work-ms", "5000"]);
    let ready = router.recv_multipart(0).unwrap();
    assert_eq!(ready[1..], [vec![READY], b"w".to_vec()]);
    router
        .send_multipart([&ready[0][..], b"client", b"", b"Hello"], 0)
        .unwrap();
    worker.wait_log("request b\"Hello\"", SOON);
    worker.signal(libc::SIGTERM);
    worker.expect_exit(0, SOON);
    worker.wait_log("no reply sent", SOON);
    assert_eq!(served(&worker), 0);
    router.set_rcvtimeo(500).unwrap();
    while let Ok(frames) = router.recv_multipart(0) {
        assert_eq!(frames[1..], [vec![HEARTBEAT]], "only heartbeats");
    }
}

#[test]
fn defect_9_plain_worker_stopped_mid_request_sends_no_reply() {
    let ctx = zmq::Context::new();
    let (dealer, endpoint) = test_bound(&ctx, zmq::DEALER, "tcp://127.0.0.1:*");
    let mut worker = Proc::start(WORKER, &["--connect", &endpoint, "--work-ms", "5000"]);
    dealer.send_multipart(["", "Hello"], 0).unwrap();
    worker.wait_log("request b\"Hello\"", SOON);
    worker.signal(libc::SIGTERM);
    worker.expect_exit(0, SOON);
    worker.wait_log("no reply sent", SOON);
    assert_eq!(served(&worker), 0);
    dealer.set_rcvtimeo(500).unwrap();
    assert!(dealer.recv_multipart(0).is_err(), "a reply was sent");
}

#[test]
fn defect_9_lb_worker_announces_its_name_again_to_a_restarted_broker() {
    let frontend = free_endpoint();
    let backend = free_endpoint();
    let mut broker = start_broker_on("lb", &frontend, &backend, &[]);
    let _worker = start_lb_worker(&backend, "w1", "1000", &[]);
    broker.wait_log("worker w1 (", SOON);
    broker.signal(libc::SIGKILL);
    assert!(broker.wait_exit(SOON).is_some());
    // Back at once: well within the 3 s the worker needs to find it silent.
    let broker = start_broker_on("lb", &frontend, &backend, &[]);
    broker.wait_log("worker w1 (", SOON);
    let mut client = Proc::start(
        BROKER_CLIENT,
        &["--connect", &frontend, "--count", "1", "--timeout-ms", "0"],
    );
    client.expect_exit(0, SOON);
}

#[test]
fn defect_9_log_lines_count_in_words() {
    let (mut broker, frontend, backend) = start_broker("lb", &[]);
    broker.wait_log("load-balancing (lb) mode: frontend ROUTER on", SOON);
    let mut worker = start_lb_worker(&backend, "w", "1000", &[]);
    broker.wait_log("worker w (", SOON);
    let mut client = Proc::start(
        BROKER_CLIENT,
        &["--connect", &frontend, "--count", "1", "--timeout-ms", "0"],
    );
    client.expect_exit(0, SOON);
    broker.wait_log("1 request in, 1 reply out in the last", SOON);
    worker.signal(libc::SIGTERM);
    worker.expect_exit(0, SOON);
    worker.wait_log("served 1 request", SOON);
    assert!(worker.log_lines("served 1 requests").is_empty());
    broker.signal(libc::SIGTERM);
    broker.expect_exit(0, SOON);
    broker.wait_log("stopped: 1 request in, 1 reply out, 0 dropped", SOON);

    let (broker, _, _) = start_broker("proxy", &[]);
    broker.wait_log("proxy mode: frontend ROUTER on", SOON);
}

#[test]
fn defect_1_a_busy_worker_found_silent_may_still_answer() {
    let (broker, frontend, backend) = start_broker("lb", &["--heartbeat-ms", "200"]);
    let ctx = zmq::Context::new();
    // It never heartbeats: a worker stuck in its work, as far as the
    // broker can tell.
    let stuck = FakeWorker::join(&ctx, &backend, "stuck");
    broker.wait_log("worker stuck (", SOON);
    let client = test_req(&ctx, &frontend);
    client.send("Hello", 0).unwrap();
    let request = stuck.request();
    let expired = broker.wait_log(" expired", SOON);
    assert!(expired.contains("may be lost"), "{expired}");
    // It was not dead after all: the reply still reaches the client.
    let envelope: Vec<&[u8]> = request[..2].iter().map(Vec::as_slice).collect();
    stuck.send(&[envelope[0], envelope[1], b"late"]);
    assert_eq!(client.recv_bytes(0).unwrap(), b"late");
    broker.wait_log("answered after all", SOON);
}

#[test]
fn lb_broker_takes_a_worker_known_by_its_heartbeats_and_learns_its_name_from_ready() {
    let (broker, frontend, backend) = start_broker("lb", &[]);
    let ctx = zmq::Context::new();
    // As a worker whose READY went to an earlier broker.
    let worker = test_socket(&ctx, zmq::DEALER);
    worker.connect(&backend).unwrap();
    worker.send(&[HEARTBEAT][..], 0).unwrap();
    broker.wait_log("rejoined on its heartbeat", SOON);
    let client = test_req(&ctx, &frontend);
    client.send("Hello", 0).unwrap();
    let mut request = loop {
        let frames = worker.recv_multipart(0).unwrap();
        if frames != [vec![HEARTBEAT]] {
            break frames;
        }
    };
    *request.last_mut().unwrap() = b"World".to_vec();
    worker.send_multipart(&request, 0).unwrap();
    assert_eq!(client.recv_bytes(0).unwrap(), b"World");
    worker.send_multipart([&[READY][..], b"late"], 0).unwrap();
    broker.wait_log("worker late (", SOON);
}

#[test]
fn defect_9_lb_worker_paused_for_a_while_announces_its_name_again() {
    let (broker, _frontend, backend) = start_broker("lb", &["--heartbeat-ms", "200"]);
    let mut worker = start_lb_worker(&backend, "w", "200", &[]);
    broker.wait_log("worker w (", SOON);
    // Stopped (as `docker pause` does) long enough to be forgotten.
    worker.signal(libc::SIGSTOP);
    broker.wait_log(" expired", SOON);
    worker.signal(libc::SIGCONT);
    broker.wait_log_count(") ready", 2, SOON);
}

// --- issue 20: a broker that stalls, and what it knows of its workers ---------

#[test]
fn lb_broker_hands_the_request_of_a_worker_gone_with_it_to_another_worker() {
    // The first worker takes the request and dies with it. The client has
    // no timeout (a naive REQ cannot resend): only the broker can save the
    // request, by handing it to the second worker, idle all along.
    let (broker, frontend, backend) = start_broker("lb", &["--heartbeat-ms", "300"]);
    let mut first = start_lb_worker(&backend, "first", "300", &["--work-ms", "60000"]);
    broker.wait_log("worker first (", SOON);
    let second = start_lb_worker(&backend, "second", "300", &[]);
    broker.wait_log("worker second (", SOON);
    let mut client = Proc::start(
        BROKER_CLIENT,
        &["--connect", &frontend, "--count", "1", "--timeout-ms", "0"],
    );
    first.wait_log("request b\"Hello\"", SOON);
    first.signal(libc::SIGKILL);
    assert!(first.wait_exit(SOON).is_some());
    client.expect_exit(0, SOON);
    assert_eq!(reply_lines(&client).len(), 1);
    second.wait_log("request b\"Hello\"", SOON);
    let gone = broker.wait_log("worker first (", SOON);
    assert!(!gone.contains("lost"), "{gone}");
    let said = broker.wait_log("its connection is closed", SOON);
    assert!(said.contains("goes to the next idle worker"), "{said}");
}

#[test]
fn lb_broker_still_expects_the_reply_of_a_worker_whose_ready_crossed_the_request() {
    // A worker sends READY only while it holds no request from the broker,
    // but the broker may hand it one at that very moment: READY and the
    // request cross on the wire. The worker answers the request; the
    // broker must take that reply, not call the request lost.
    let (broker, frontend, backend) = start_broker("lb", &[]);
    let ctx = zmq::Context::new();
    let a = FakeWorker::join(&ctx, &backend, "a");
    broker.wait_log("worker a (", SOON);
    let b = FakeWorker::join(&ctx, &backend, "b");
    broker.wait_log("worker b (", SOON);
    let client = test_req(&ctx, &frontend);
    client.send("Hello", 0).unwrap();
    let request = a.request();
    // The READY a sent before the request reached it...
    a.send(&[&[READY][..], b"a"]);
    let said = broker.wait_log("while holding a request", SOON);
    assert!(!said.contains("lost"), "{said}");
    // ...and then its reply.
    a.send(&[&request[0], &request[1], b"from a"]);
    assert_eq!(client.recv_bytes(0).unwrap(), b"from a");
    // The request went to no one else.
    b.socket.set_rcvtimeo(500).unwrap();
    while let Ok(frames) = b.socket.recv_multipart(0) {
        assert_eq!(frames, [vec![HEARTBEAT]], "b got more than heartbeats");
    }
}

/// Lines in which a broker judges a worker: none may follow a stop of the
/// broker itself.
const BLAME: [&str; 5] = [
    " expired",
    "silent for",
    "lost",
    "rejoined",
    "idle while holding",
];

#[test]
fn lb_broker_stopped_blames_no_worker_for_its_own_silence() {
    // Heartbeats every 200 ms: the broker forgets a worker after 0.6 s of
    // silence, and the worker opens a new connection after 0.6 s + 1 s.
    // Stopped for 1.2 s, the broker finds the worker on its old connection
    // (which the worker kept); for 2.5 s, on a new one.
    let (mut broker, frontend, backend) = start_broker("lb", &["--heartbeat-ms", "200"]);
    let worker = start_lb_worker(&backend, "w", "200", &[]);
    broker.wait_log("worker w (", SOON);
    let ctx = zmq::Context::new();
    for pause in [1200, 2500] {
        stop_for(&mut broker, Duration::from_millis(pause));
        let client = test_req(&ctx, &frontend);
        client.send("Hello", 0).unwrap();
        assert_eq!(client.recv_bytes(0).unwrap(), b"World");
    }
    worker.wait_log("reconnected to", SOON);
    // Its whole log: stopped, it has written every line.
    broker.signal(libc::SIGTERM);
    broker.expect_exit(0, SOON);
    let log = broker.stderr();
    let blamed: Vec<&String> = log
        .iter()
        .filter(|line| BLAME.iter().any(|word| line.contains(word)))
        .collect();
    assert!(blamed.is_empty(), "{blamed:#?}");
    // Every worker it knows has a name: it never took one in by a stale
    // heartbeat.
    assert!(
        log.iter().all(|line| !line.contains("on its heartbeat")),
        "{log:#?}"
    );
    // What it does say: that it was stopped itself (twice at least: a
    // loaded machine may starve it of CPU as well).
    let stops = broker.log_lines("] stopped for");
    assert!(stops.len() >= 2, "{stops:#?}");
}

#[test]
fn lb_broker_says_a_late_reply_is_delivered_only_once_it_is() {
    let (broker, frontend, backend) = start_broker("lb", &["--heartbeat-ms", "200"]);
    let ctx = zmq::Context::new();
    // It never heartbeats: found silent with the request in hand.
    let stuck = FakeWorker::join(&ctx, &backend, "stuck");
    broker.wait_log("worker stuck (", SOON);
    let client = test_req(&ctx, &frontend);
    client.send("Hello", 0).unwrap();
    let request = stuck.request();
    broker.wait_log("may be lost", SOON);
    // The client gives up and leaves before the late reply comes.
    drop(client);
    broker.wait_log("frontend: 127.0.0.1", SOON);
    broker.wait_log(" disconnected", SOON);
    stuck.send(&[&request[0], &request[1], b"late"]);
    let said = broker.wait_log("answered after all", SOON);
    assert!(!said.contains("is delivered"), "{said}");
    assert!(said.contains("is gone"), "{said}");
}
