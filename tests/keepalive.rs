//! ZMTP heartbeats (src/plumbing/keepalive.rs): a connection whose peer has
//! gone silent is closed within the heartbeat's bounds, whichever side set
//! them.
//!
//! A silent peer is a real process frozen with SIGSTOP: its kernel still
//! holds the TCP connection (and answers TCP), but nothing of it answers
//! ZeroMQ. Without heartbeats such a connection is never closed; these
//! tests would wait for it in vain, to a deadline.
//!
//! Linux only: two of them watch the frozen side's connections in
//! /proc/net/tcp, one reads TCP_INFO.
#![cfg(target_os = "linux")]

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::{BROKER_CLIENT, CLIENT, Proc, SOON, WORKER, example, free_port, start_broker};
use zmq_reqrep::plumbing::keepalive::{INTERVAL, TIMEOUT, TTL};

/// Time for a silent peer to be dropped: the next PING comes within
/// INTERVAL, then TIMEOUT (or TTL) passes; plus room for a loaded machine.
const DROPPED_WITHIN: Duration = Duration::from_secs(INTERVAL.as_secs() + TIMEOUT.as_secs() + 20);

/// TCP states in /proc/net/tcp.
const ESTABLISHED: &str = "01";
/// The other end has closed the connection, and the process owning this
/// end has not (it is frozen).
const CLOSE_WAIT: &str = "08";

/// Whether a connection whose local port is `port` is in `state`.
fn connection_in(port: u16, state: &str) -> bool {
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|table| {
        std::fs::read_to_string(table)
            .unwrap_or_default()
            .lines()
            .skip(1)
            .any(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let local_port = fields
                    .get(1)
                    .and_then(|local| local.rsplit(':').next())
                    .and_then(|hex| u16::from_str_radix(hex, 16).ok());
                local_port == Some(port) && fields.get(3) == Some(&state)
            })
    })
}

/// Waits until a connection to the frozen server on `port` is closed by
/// its peer; returns how long that took.
fn wait_closed(port: u16, frozen: Instant, what: &str) -> Duration {
    while !connection_in(port, CLOSE_WAIT) {
        assert!(
            frozen.elapsed() < DROPPED_WITHIN,
            "{what}: the connection to the frozen server (port {port}) is still open after {:?}",
            frozen.elapsed()
        );
        thread::sleep(Duration::from_millis(200));
    }
    frozen.elapsed()
}

/// The bare `hwserver` example: a REP socket with no options at all, so
/// that the connection's closing can only come from the connecting role's
/// own heartbeats. Returns the server, waiting for its first request, and
/// its port.
fn bare_server() -> (Proc, u16) {
    let port = free_port();
    let server = Proc::start(&example("hwserver"), &[&format!("tcp://127.0.0.1:{port}")]);
    (server, port)
}

#[test]
fn a_client_waiting_for_ever_drops_its_connection_to_a_frozen_server() {
    let (mut server, port) = bare_server();
    // --timeout-ms 0: the naive client, which waits for its reply for ever;
    // only heartbeats can close the connection.
    let _client = Proc::start(
        CLIENT,
        &[
            "--connect",
            &format!("tcp://127.0.0.1:{port}"),
            "--timeout-ms",
            "0",
        ],
    );
    server.wait_out_count("Received request", 2, SOON);
    server.signal(libc::SIGSTOP);
    let took = wait_closed(port, Instant::now(), "reqrep_client");
    eprintln!("the client closed its connection {took:?} after the server froze");
}

#[test]
fn an_lb_worker_drops_its_connection_to_a_frozen_peer_whatever_its_heartbeat_ms() {
    let (mut server, port) = bare_server();
    // Its own HEARTBEAT every 10 minutes: it would notice the silence after
    // half an hour. The ZMTP heartbeats do within a minute.
    let worker = Proc::start(
        WORKER,
        &[
            "--mode",
            "lb",
            "--heartbeat-ms",
            "600000",
            "--connect",
            &format!("tcp://127.0.0.1:{port}"),
        ],
    );
    worker.wait_log("lb worker connecting", SOON);
    // The bare REP server discards the READY, which has no envelope: the
    // only sign that the connection is up is the kernel's.
    let deadline = Instant::now() + SOON;
    while !connection_in(port, ESTABLISHED) {
        assert!(Instant::now() < deadline, "the worker never connected");
        thread::sleep(Duration::from_millis(50));
    }
    server.signal(libc::SIGSTOP);
    let took = wait_closed(port, Instant::now(), "worker --mode lb");
    eprintln!("the lb worker closed its connection {took:?} after its peer froze");
}

#[test]
fn the_broker_drops_a_frozen_worker_says_why_and_takes_it_back_once_thawed() {
    let (broker, frontend, backend) = start_broker("proxy", &[]);
    // A plain REP worker: it sets no heartbeat of its own.
    let mut worker = Proc::start(WORKER, &["--connect", &backend]);
    broker.wait_log("backend: 127.0.0.1:", SOON);
    let mut client = Proc::start(BROKER_CLIENT, &["--connect", &frontend, "--count", "1"]);
    client.expect_exit(0, SOON);

    worker.signal(libc::SIGSTOP);
    let frozen = Instant::now();
    let line = broker.wait_log("silence after a heartbeat", DROPPED_WITHIN);
    eprintln!(
        "the broker dropped the frozen worker {:?} after it froze: {line}",
        frozen.elapsed()
    );
    assert!(line.contains("backend: dropped 127.0.0.1:"), "{line}");

    // Thawed, the worker finds its connection closed, connects again, and
    // serves.
    worker.signal(libc::SIGCONT);
    broker.wait_log_count("backend: 127.0.0.1:", 2, SOON);
    let mut client = Proc::start(BROKER_CLIENT, &["--connect", &frontend, "--count", "1"]);
    client.expect_exit(0, SOON);
}

/// Bytes received so far on the TCP connection `fd` (TCP_INFO).
fn bytes_received(fd: i32) -> u64 {
    // SAFETY: tcp_info is plain integers, for which all zeros is valid.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `info`; `fd` is
    // libzmq's open connection (or getsockopt fails with EBADF).
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "TCP_INFO: {}", std::io::Error::last_os_error());
    info.tcpi_bytes_received
}

/// A monitor event: (event, value).
fn next_event(monitor: &zmq::Socket) -> Option<(u16, u32)> {
    let frames = monitor.recv_multipart(0).ok()?;
    let head = frames.first()?;
    Some((
        u16::from_le_bytes(head.get(0..2)?.try_into().ok()?),
        u32::from_le_bytes(head.get(2..6)?.try_into().ok()?),
    ))
}

#[test]
fn a_peer_that_sets_no_heartbeat_drops_a_frozen_broker_within_the_ttl() {
    let (mut broker, _frontend, backend) = start_broker("proxy", &[]);
    // What the course's Python worker is: a REP socket with no options. The
    // test watches its connection's events.
    let ctx = zmq::Context::new();
    let peer = ctx.socket(zmq::REP).unwrap();
    peer.set_linger(0).unwrap();
    let events = zmq::SocketEvent::CONNECTED as u16
        | zmq::SocketEvent::HANDSHAKE_SUCCEEDED as u16
        | zmq::SocketEvent::DISCONNECTED as u16;
    peer.monitor("inproc://peer", i32::from(events)).unwrap();
    let monitor = ctx.socket(zmq::PAIR).unwrap();
    monitor.set_rcvtimeo(1000).unwrap();
    monitor.connect("inproc://peer").unwrap();
    peer.connect(&backend).unwrap();

    let deadline = Instant::now() + SOON;
    let mut fd = None;
    loop {
        match next_event(&monitor) {
            Some((event, value)) if event == zmq::SocketEvent::CONNECTED as u16 => {
                fd = Some(value as i32);
            }
            Some((event, _)) if event == zmq::SocketEvent::HANDSHAKE_SUCCEEDED as u16 => break,
            _ => {}
        }
        assert!(Instant::now() < deadline, "no handshake with the broker");
    }
    let fd = fd.expect("a CONNECTED event before the handshake");

    // The TTL arrives with the broker's PINGs: freeze the broker only once
    // one has come (nothing else is sent on this connection: no requests).
    let handshaken = bytes_received(fd);
    let deadline = Instant::now() + INTERVAL + SOON;
    while bytes_received(fd) == handshaken {
        assert!(
            Instant::now() < deadline,
            "no heartbeat from the broker in {:?}",
            INTERVAL + SOON
        );
        thread::sleep(Duration::from_millis(100));
    }
    broker.signal(libc::SIGSTOP);
    let frozen = Instant::now();
    loop {
        if let Some((event, _)) = next_event(&monitor) {
            if event == zmq::SocketEvent::DISCONNECTED as u16 {
                break;
            }
        }
        assert!(
            frozen.elapsed() < TTL + SOON,
            "the peer still holds its connection to the frozen broker after {:?}",
            frozen.elapsed()
        );
    }
    eprintln!(
        "the peer dropped the frozen broker {:?} after it froze",
        frozen.elapsed()
    );
}
