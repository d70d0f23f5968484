//! Hostile input against every listening role: random bytes, ZeroMQ peers
//! of the wrong type, broken envelopes, replies for clients that do not
//! exist, oversize frames. Each must leave a warning in the log, and a
//! valid request right after it must succeed, while a naive client (which
//! would hang on a single lost reply) keeps being served throughout.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;

/// Random bytes (a fixed pseudo-random sequence) or any other non-ZMTP
/// data, sent to a ZeroMQ port once its monitor has seen the connection (so
/// that it knows our address) and its greeting has arrived. Returns our
/// local address, which the warning must name.
fn send_raw(log: &Proc, endpoint: &str, data: &[u8]) -> String {
    let address = endpoint.strip_prefix("tcp://").unwrap();
    let mut stream = TcpStream::connect(address).unwrap();
    let ours = stream.local_addr().unwrap().to_string();
    log.wait_log(&format!("{ours} connected"), SOON);
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut greeting = [0u8; 10];
    stream.read_exact(&mut greeting).expect("libzmq's greeting");
    assert_eq!(greeting[0], 0xff, "not a ZMTP greeting: {greeting:?}");
    stream.write_all(data).unwrap();
    // libzmq hangs up on garbage, or waits for more bytes: end our side.
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    ours
}

fn random_bytes(len: usize) -> Vec<u8> {
    let mut state: u32 = 0x2545_f491;
    (0..len)
        .map(|_| {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            (state >> 16) as u8
        })
        .collect()
}

/// A ZeroMQ socket of our own that connects to `endpoint`.
fn peer(ctx: &zmq::Context, kind: zmq::SocketType, endpoint: &str) -> zmq::Socket {
    let socket = ctx.socket(kind).unwrap();
    socket.set_linger(1000).unwrap();
    socket.set_sndtimeo(5000).unwrap();
    socket.set_rcvtimeo(5000).unwrap();
    socket.connect(endpoint).unwrap();
    socket
}

/// One valid request through a fresh REQ, which must be answered.
fn valid_request(ctx: &zmq::Context, endpoint: &str) {
    let req = test_req(ctx, endpoint);
    req.send("Hello", 0).unwrap();
    assert_eq!(
        req.recv_bytes(0)
            .expect("a valid request after hostile input"),
        b"World"
    );
}

/// Non-ZMTP bytes and wrong-type ZeroMQ peers on `endpoint`, each followed
/// by a valid request; `log` is the listening role.
fn not_zeromq_and_wrong_types(ctx: &zmq::Context, log: &Proc, endpoint: &str, valid: &dyn Fn()) {
    let ours = send_raw(log, endpoint, &random_bytes(256));
    log.wait_log(&format!("dropped {ours}"), SOON);
    valid();

    let ours = send_raw(log, endpoint, b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    log.wait_log(&format!("dropped {ours}"), SOON);
    valid();

    for kind in [zmq::SUB, zmq::PUSH, zmq::PAIR] {
        wrong_type(ctx, log, endpoint, kind);
        valid();
    }
}

/// A ZeroMQ peer whose socket type cannot talk to the one at `endpoint`.
/// Refused within microseconds, it may be logged without its address.
fn wrong_type(ctx: &zmq::Context, log: &Proc, endpoint: &str, kind: zmq::SocketType) {
    let before = dropped(log);
    let wrong = peer(ctx, kind, endpoint);
    let deadline = std::time::Instant::now() + SOON;
    while dropped(log) == before {
        assert!(
            std::time::Instant::now() < deadline,
            "no warning for a {kind:?} peer"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(wrong);
}

fn dropped(log: &Proc) -> usize {
    log.stderr()
        .iter()
        .filter(|l| l.contains(" WARN ") && l.contains(": dropped "))
        .count()
}

/// A one-frame message over the 1 MiB default of --max-message-bytes from a `kind` peer.
fn oversize(
    ctx: &zmq::Context,
    log: &Proc,
    endpoint: &str,
    kind: zmq::SocketType,
    valid: &dyn Fn(),
) {
    // Send only once the monitor has seen the connection, or a cut within
    // microseconds may come before it could read our address.
    let connected = |log: &Proc| {
        log.stderr()
            .iter()
            .filter(|l| l.contains(" connected"))
            .count()
    };
    let before = connected(log);
    let big = peer(ctx, kind, endpoint);
    log.wait_log_count(" connected", before + 1, SOON);
    big.send(vec![b'x'; 2 * 1024 * 1024], 0).unwrap();
    log.wait_log(
        "after its handshake: a frame over --max-message-bytes (1048576 bytes)",
        SOON,
    );
    drop(big);
    valid();
}

/// A client that keeps asking throughout. With `--timeout-ms 0` it is the
/// naive REQ, which would hang on a single lost reply.
fn sentinel(exe: &str, endpoint: &str, timeout_ms: &str) -> Proc {
    let client = Proc::start(
        exe,
        &[
            "--connect",
            endpoint,
            "--interval-ms",
            "20",
            "--timeout-ms",
            timeout_ms,
            "--name",
            "sentinel",
        ],
    );
    client.wait_out_count(" got ", 1, SOON);
    client
}

/// The sentinel must still be served (ten more replies), and must have had
/// at most `max_resends` requests resent.
fn sentinel_was_never_let_down(mut client: Proc, max_resends: u64) {
    let so_far = client.stdout().len();
    client.wait_out_count(" got ", so_far + 10, SOON);
    client.signal(libc::SIGTERM);
    client.expect_exit(0, SOON);
    let summary = client.stdout().pop().unwrap();
    // "client[sentinel] done: N replies to M requests, R resends, ..."
    let words: Vec<&str> = summary.split_whitespace().collect();
    let number = |i: usize| words[i].trim_end_matches(',').parse::<u64>().unwrap();
    let (replies, requests, resends) = (number(2), number(5), number(7));
    // The request in flight at SIGTERM may go unanswered.
    assert!(requests - replies <= 1, "{summary}");
    assert!(resends <= max_resends, "{summary}");
    eprintln!("{summary}");
}

/// A worker with bugs: it answers every request properly, but also sends a
/// reply for a client that never existed and a reply with no envelope. It
/// keeps serving until `stop` (or 30 s), so in proxy mode, where the
/// broker's DEALER hands it requests too, nobody's request is lost to it.
fn buggy_worker(
    endpoint: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<()> {
    use std::sync::atomic::Ordering;
    std::thread::spawn(move || {
        let ctx = zmq::Context::new();
        let fake = peer(&ctx, zmq::DEALER, &endpoint);
        fake.set_rcvtimeo(20).unwrap();
        fake.send_multipart([&b"\x00\xde\xad\xbe\xef"[..], b"", b"World"], 0)
            .unwrap();
        fake.send("World", 0).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !stop.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
            if let Ok(mut request) = fake.recv_multipart(0) {
                if let Some(body) = request.last_mut() {
                    *body = b"World".to_vec();
                }
                fake.send_multipart(request, 0).unwrap();
            }
        }
    })
}

#[test]
fn reqrep_server_survives_hostile_peers() {
    let server = Proc::start(SERVER, &["--bind", "tcp://127.0.0.1:*"]);
    let endpoint = server.wait_endpoints("REP listening on").remove(0);
    let ctx = zmq::Context::new();
    let valid = || valid_request(&ctx, &endpoint);
    let watcher = sentinel(CLIENT, &endpoint, "0");

    not_zeromq_and_wrong_types(&ctx, &server, &endpoint, &valid);
    // A REP peer: REP cannot talk to REP.
    wrong_type(&ctx, &server, &endpoint, zmq::REP);
    valid();

    // Broken envelopes from a DEALER. Without the empty delimiter, the REP
    // socket discards the message inside libzmq (the application never sees
    // it, so nothing can be logged); with an extra frame before it, the
    // frame is kept as part of the return address and comes back.
    let dealer = peer(&ctx, zmq::DEALER, &endpoint);
    dealer.send("no delimiter", 0).unwrap();
    dealer.send_multipart(["extra", "", "Hello"], 0).unwrap();
    let reply = dealer.recv_multipart(0).expect("the extra frame's reply");
    assert_eq!(reply, vec![b"extra".to_vec(), vec![], b"World".to_vec()]);
    valid();

    oversize(&ctx, &server, &endpoint, zmq::REQ, &valid);
    sentinel_was_never_let_down(watcher, 0);
}

fn broker_survives_hostile_peers(mode: &str, worker_mode: &str, max_resends: u64) {
    let (broker, frontend, backend) = start_broker(mode, &[]);
    let _worker = Proc::start(WORKER, &["--connect", &backend, "--mode", worker_mode]);
    let ctx = zmq::Context::new();
    let valid = || valid_request(&ctx, &frontend);
    let watcher = sentinel(BROKER_CLIENT, &frontend, "2000");

    // Clients' side.
    not_zeromq_and_wrong_types(&ctx, &broker, &frontend, &valid);
    let dealer = peer(&ctx, zmq::DEALER, &frontend);
    dealer.send("no delimiter", 0).unwrap();
    broker.wait_log("dropped: no empty delimiter frame before the body", SOON);
    dealer.send_multipart(["extra", "", "Hello"], 0).unwrap();
    let reply = dealer.recv_multipart(0).expect("the extra frame's reply");
    assert_eq!(reply, vec![b"extra".to_vec(), vec![], b"World".to_vec()]);
    valid();
    oversize(&ctx, &broker, &frontend, zmq::REQ, &valid);

    // Workers' side.
    not_zeromq_and_wrong_types(&ctx, &broker, &backend, &valid);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let buggy = buggy_worker(backend.clone(), stop.clone());
    // The lb broker forwards a reply only from the worker holding that
    // request; the proxy's DEALER cannot tell, and the client is unknown.
    let forged = if mode == "lb" {
        "for client 00deadbeef dropped: that worker holds no request"
    } else {
        "reply for unknown client 00deadbeef dropped"
    };
    broker.wait_log(forged, SOON);
    let warning = if mode == "lb" {
        "neither READY, HEARTBEAT nor a reply"
    } else {
        "it has no envelope"
    };
    broker.wait_log(warning, SOON);
    valid();
    // In proxy mode this peer is handed requests as soon as it connects,
    // and one may be lost with it when libzmq cuts it: the sentinel then
    // resends (round robin is blind; that is what lb mode fixes).
    oversize(&ctx, &broker, &backend, zmq::DEALER, &valid);

    sentinel_was_never_let_down(watcher, max_resends);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    buggy.join().unwrap();
}

#[test]
fn proxy_broker_survives_hostile_peers() {
    broker_survives_hostile_peers("proxy", "plain", 1);
}

#[test]
fn lb_broker_survives_hostile_peers() {
    broker_survives_hostile_peers("lb", "lb", 0);
}

/// Resident memory of process `pid` from /proc: (now, peak), in KiB.
fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse::<u64>().ok())
            .unwrap()
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// A client that pushes up to 600 requests of 1 MB (under the 1 MiB
/// default of --max-message-bytes) at a listener that is not reading them,
/// and never reads a reply. Returns how many libzmq took before pushing
/// back (2 s without room for one more).
fn flood(ctx: &zmq::Context, endpoint: &str) -> usize {
    let dealer = ctx.socket(zmq::DEALER).unwrap();
    dealer.set_linger(0).unwrap();
    dealer.set_sndhwm(2).unwrap(); // the backlog is the listener's, not ours
    dealer.set_sndtimeo(2000).unwrap();
    dealer.connect(endpoint).unwrap();
    let body = vec![b'x'; 1_000_000];
    let mut sent = 0;
    while sent < 600 {
        match dealer.send_multipart([&b""[..], &body], 0) {
            Ok(()) => sent += 1,
            Err(zmq::Error::EAGAIN) => break,
            Err(other) => panic!("flood: {other}"),
        }
    }
    sent
}

/// Floods `listener` (see [`flood`]) and returns its peak resident memory
/// in MiB once it has stopped growing (1 s without 1 MiB more, at most
/// 30 s).
fn peak_under_flood(ctx: &zmq::Context, listener: &Proc, endpoint: &str, what: &str) -> u64 {
    let sent = flood(ctx, endpoint);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut last = rss_kib(listener.pid()).0;
    let mut steady_since = std::time::Instant::now();
    while steady_since.elapsed() < Duration::from_secs(1) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        let now = rss_kib(listener.pid()).0;
        if now > last + 1024 {
            steady_since = std::time::Instant::now();
        }
        last = last.max(now);
    }
    let peak_mib = rss_kib(listener.pid()).1 / 1024;
    eprintln!("{what}: took {sent} requests of 1 MB, peak RSS {peak_mib} MiB");
    peak_mib
}

/// Generous: the high-water marks allow some 32 MiB per connection; without
/// them a listener took 600 MiB from one client.
const FLOOD_BOUND_MIB: u64 = 150;

#[test]
fn defect_7_one_flooding_client_cannot_grow_a_listener_without_bound() {
    let ctx = zmq::Context::new();
    let mut peaks = Vec::new();

    // A REP server busy on a long request: the flood's own first one.
    let server = Proc::start(
        SERVER,
        &["--bind", "tcp://127.0.0.1:*", "--work-ms", "60000"],
    );
    let endpoint = server.wait_endpoints("REP listening on").remove(0);
    peaks.push((
        "reqrep_server, busy",
        peak_under_flood(&ctx, &server, &endpoint, "reqrep_server"),
    ));

    // Brokers with no worker to hand the requests to.
    for mode in ["proxy", "lb"] {
        let (broker, frontend, _backend) = start_broker(mode, &[]);
        let what = format!("broker --mode {mode}, no worker");
        peaks.push((
            if mode == "proxy" {
                "broker proxy"
            } else {
                "broker lb"
            },
            peak_under_flood(&ctx, &broker, &frontend, &what),
        ));
    }
    for (what, peak) in peaks {
        assert!(
            peak < FLOOD_BOUND_MIB,
            "{what}: peak RSS {peak} MiB under one flooding client"
        );
    }
}

/// The routing id libzmq 4.3 gives the first anonymous peer of a process
/// whose `rand()` was never seeded (glibc): a zero byte, then the first
/// 32-bit value it draws.
const PREDICTABLE_ROUTING_ID: [u8; 5] = [0x00, 0x6b, 0x8b, 0x45, 0x67];

/// A peer that claims the routing id the next client would be given (and
/// is served, so it is surely known by then), then a valid request from
/// that next client.
fn claim_the_next_routing_id(ctx: &zmq::Context, endpoint: &str) {
    let thief = ctx.socket(zmq::DEALER).unwrap();
    thief.set_linger(0).unwrap();
    thief.set_rcvtimeo(10_000).unwrap();
    thief.set_identity(&PREDICTABLE_ROUTING_ID).unwrap();
    thief.connect(endpoint).unwrap();
    thief.send_multipart([&b""[..], b"Hello"], 0).unwrap();
    let reply = thief.recv_multipart(0).expect("the claiming peer's reply");
    assert_eq!(reply, vec![vec![], b"World".to_vec()]);
    valid_request(ctx, endpoint);
}

#[test]
fn defect_7_a_predictable_routing_id_cannot_bring_a_listener_down() {
    let ctx = zmq::Context::new();
    let server = Proc::start(SERVER, &["--bind", "tcp://127.0.0.1:*"]);
    let endpoint = server.wait_endpoints("REP listening on").remove(0);
    claim_the_next_routing_id(&ctx, &endpoint);

    for (mode, worker_mode) in [("proxy", "plain"), ("lb", "lb")] {
        let (_broker, frontend, backend) = start_broker(mode, &[]);
        let _worker = Proc::start(WORKER, &["--connect", &backend, "--mode", worker_mode]);
        claim_the_next_routing_id(&ctx, &frontend);
    }
}
