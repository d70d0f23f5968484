//! `wire`, the relay that shows the bytes: against pyzmq peers (the course's
//! own library) and libzmq sockets of the test's own, with hostile peers,
//! and its decoder alone, fed real conversations cut every possible way.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use zmq_reqrep::wire::decoder::{Conversation, Detail, Event, MAX_BUFFERED, SHOWN, Side};

const WIRE: &str = env!("CARGO_BIN_EXE_wire");

// --- the relay binary ----------------------------------------------------------

/// Starts `wire` on a free port in front of `to`, with `extra` options:
/// (relay, the endpoint to connect to instead of `to`).
fn start_wire(to: &str, extra: &[&str]) -> (Proc, String) {
    let mut args = vec!["--listen", "tcp://127.0.0.1:*", "--to", to];
    args.extend_from_slice(extra);
    let wire = Proc::start(WIRE, &args);
    let endpoint = wire.wait_endpoints("listening on").remove(0);
    (wire, endpoint)
}

/// Stops the relay (SIGTERM: every line printed) and returns its JSON lines.
fn stop_json(wire: &mut Proc) -> Vec<Value> {
    wire.signal(libc::SIGTERM);
    wire.expect_exit(0, SOON);
    wire.stdout()
        .iter()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

/// The messages one side sent, as the relay reported them: the frames'
/// bodies in hex, grouped by message.
fn messages(events: &[Value], from: &str) -> Vec<Vec<String>> {
    let mut all = Vec::new();
    let mut message = Vec::new();
    for event in events
        .iter()
        .filter(|e| e["from"] == from && e["kind"] == "frame")
    {
        message.push(event["hex"].as_str().unwrap().to_string());
        if event["more"] == false {
            all.push(std::mem::take(&mut message));
        }
    }
    all
}

/// The commands one side sent: (name, the whole event).
fn commands<'a>(events: &'a [Value], from: &str) -> Vec<(&'a str, &'a Value)> {
    events
        .iter()
        .filter(|e| e["from"] == from && e["kind"] == "command")
        .map(|e| (e["name"].as_str().unwrap(), e))
        .collect()
}

fn greeting<'a>(events: &'a [Value], from: &str) -> &'a Value {
    events
        .iter()
        .find(|e| e["from"] == from && e["kind"] == "greeting")
        .unwrap_or_else(|| panic!("no greeting from the {from}: {events:#?}"))
}

/// The frames a pyzmq peer printed after `what` ("send" or "recv").
fn peer_frames(peer: &Proc, what: &str) -> Vec<Vec<String>> {
    peer.stdout()
        .iter()
        .filter_map(|line| line.strip_prefix(&format!("{what} ")))
        .map(|frames| frames.split(',').map(str::to_owned).collect())
        .collect()
}

fn hex(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

/// A pyzmq server (`wire_peers.py server KIND`): (peer, endpoint).
fn py_server(python: &str, kind: &str, options: &[&str]) -> (Proc, String) {
    let script = py_script("wire_peers.py");
    let mut args = vec!["-u", &script, "server", kind, "tcp://127.0.0.1:*"];
    args.extend_from_slice(options);
    let server = Proc::start(python, &args);
    let endpoint = server.wait_endpoints_out("listening on").remove(0);
    (server, endpoint)
}

/// A pyzmq client through `endpoint`, run to its end.
fn py_client(python: &str, kind: &str, endpoint: &str, count: u32, options: &[&str]) -> Proc {
    let script = py_script("wire_peers.py");
    let count = count.to_string();
    let mut args = vec!["-u", &script, "client", kind, endpoint, &count];
    args.extend_from_slice(options);
    let mut client = Proc::start(python, &args);
    client.expect_exit(0, SOON);
    client
}

#[test]
fn req_rep_the_req_adds_only_the_delimiter_and_there_is_no_b_on_the_wire() {
    let Some(python) = pyzmq() else { return };
    let (server, endpoint) = py_server(&python, "rep", &[]);
    let (mut wire, through) = start_wire(&endpoint, &["--json"]);
    let client = py_client(&python, "req", &through, 3, &[]);
    let events = stop_json(&mut wire);

    // What the peers sent and received...
    let sent = peer_frames(&client, "send");
    assert_eq!(sent, vec![vec![hex("Hello")]; 3]);
    assert_eq!(peer_frames(&server, "recv"), sent);
    assert_eq!(peer_frames(&client, "recv"), vec![vec![hex("World")]; 3]);
    // ...and what went between them: the same bodies, after an empty frame
    // (the delimiter) that neither application ever saw.
    assert_eq!(
        messages(&events, "client"),
        vec![vec![String::new(), hex("Hello")]; 3]
    );
    assert_eq!(
        messages(&events, "server"),
        vec![vec![String::new(), hex("World")]; 3]
    );
    let delimiter = events
        .iter()
        .find(|e| e["kind"] == "frame")
        .expect("a frame");
    assert_eq!(delimiter["more"], true);
    assert_eq!(delimiter["size"], 0);

    for (from, kind) in [("client", "REQ"), ("server", "REP")] {
        let greeting = greeting(&events, from);
        assert_eq!(greeting["mechanism"], "NULL");
        assert!(
            greeting["version"].as_str().unwrap().starts_with("3."),
            "{greeting}"
        );
        let ready = commands(&events, from);
        assert_eq!(ready[0].0, "READY", "{ready:?}");
        assert_eq!(ready[0].1["properties"]["Socket-Type"], kind);
    }
}

#[test]
fn dealer_router_the_routers_identity_frame_never_crosses_the_wire() {
    let Some(python) = pyzmq() else { return };
    let (server, endpoint) = py_server(&python, "router", &[]);
    let (mut wire, through) = start_wire(&endpoint, &["--json"]);
    let client = py_client(&python, "dealer", &through, 2, &[]);
    let events = stop_json(&mut wire);

    // A DEALER's frames cross exactly as given: no delimiter added.
    let sent = peer_frames(&client, "send");
    assert_eq!(sent, vec![vec![hex("Hello"), hex("again")]; 2]);
    assert_eq!(messages(&events, "client"), sent);
    // The ROUTER hands its application one frame more, in front: the
    // identity it gave the connection. It is not on the wire.
    let received = peer_frames(&server, "recv");
    assert_eq!(received.len(), 2);
    for message in &received {
        assert_eq!(message.len(), 3, "{message:?}");
        assert_eq!(message[1..], sent[0][..]);
    }
    let identity = &received[0][0];
    assert!(
        !events
            .iter()
            .any(|e| e["kind"] == "frame" && e["hex"] == identity.as_str()),
        "the identity {identity} was on the wire"
    );
    // The ROUTER's reply names the identity first: only the rest leaves.
    let replied = peer_frames(&server, "send");
    assert!(replied.iter().all(|m| m[0] == *identity));
    assert_eq!(messages(&events, "server"), vec![vec![hex("World")]; 2]);
    assert_eq!(peer_frames(&client, "recv"), vec![vec![hex("World")]; 2]);
    assert_eq!(
        commands(&events, "client")[0].1["properties"]["Socket-Type"],
        "DEALER"
    );
    assert_eq!(
        commands(&events, "server")[0].1["properties"]["Socket-Type"],
        "ROUTER"
    );
}

#[test]
fn a_routing_id_set_by_the_dealer_travels_in_its_ready_command() {
    let Some(python) = pyzmq() else { return };
    let (server, endpoint) = py_server(&python, "router", &[]);
    let (mut wire, through) = start_wire(&endpoint, &["--json"]);
    py_client(&python, "dealer", &through, 1, &["--identity", "alice"]);
    let events = stop_json(&mut wire);

    let ready = commands(&events, "client");
    assert_eq!(ready[0].0, "READY");
    assert_eq!(ready[0].1["properties"]["Identity"], "alice");
    // The ROUTER uses it as the identity frame, which still stays off the
    // wire: the client's message is the DEALER's two frames.
    assert_eq!(peer_frames(&server, "recv")[0][0], hex("alice"));
    assert_eq!(
        messages(&events, "client"),
        vec![vec![hex("Hello"), hex("again")]]
    );
}

#[test]
fn plain_shows_the_user_name_in_the_clear_and_the_relay_masks_the_password() {
    let Some(python) = pyzmq() else { return };
    let password = "s3cret-Passw0rd";
    let (_server, endpoint) = py_server(&python, "rep", &["--plain-server", "admin", password]);
    let (mut wire, through) = start_wire(&endpoint, &["--json"]);
    py_client(&python, "req", &through, 1, &["--plain", "admin", password]);
    let events = stop_json(&mut wire);

    for from in ["client", "server"] {
        assert_eq!(greeting(&events, from)["mechanism"], "PLAIN");
    }
    let client: Vec<&str> = commands(&events, "client").iter().map(|c| c.0).collect();
    let server: Vec<&str> = commands(&events, "server").iter().map(|c| c.0).collect();
    assert_eq!(client, ["HELLO", "INITIATE"]);
    assert_eq!(server, ["WELCOME", "READY"]);
    let hello = commands(&events, "client")[0].1;
    assert_eq!(hello["username"], "admin");
    assert_eq!(hello["password_len"], password.len());
    assert_eq!(
        commands(&events, "client")[1].1["properties"]["Socket-Type"],
        "REQ"
    );
    // PLAIN encrypts nothing: the messages are as readable as with NULL.
    assert_eq!(
        messages(&events, "client"),
        vec![vec![String::new(), hex("Hello")]]
    );
    // The password crossed in the clear, but the relay shows it to nobody.
    let all = wire.stdout().join("\n");
    assert!(
        !all.contains(password) && !all.contains(&hex(password)),
        "{all}"
    );
}

#[test]
fn curve_leaves_nothing_readable_but_the_command_names_and_sizes() {
    let Some(python) = pyzmq() else { return };
    let (server, endpoint) = py_server(&python, "rep", &["--curve-server"]);
    let key = server.wait_out_count("server key", 1, SOON)[0]
        .split_whitespace()
        .last()
        .unwrap()
        .to_string();
    let (mut wire, through) = start_wire(&endpoint, &["--json"]);
    py_client(&python, "req", &through, 2, &["--curve", &key]);
    let events = stop_json(&mut wire);

    for from in ["client", "server"] {
        assert_eq!(greeting(&events, from)["mechanism"], "CURVE");
    }
    let names = |from| -> Vec<&str> { commands(&events, from).iter().map(|c| c.0).collect() };
    // Each frame of a message is a box of its own: a REQ's request (the
    // delimiter and the body) is two MESSAGE commands.
    let message = ["MESSAGE"; 4];
    assert_eq!(
        names("client"),
        [&["HELLO", "INITIATE"][..], &message].concat()
    );
    assert_eq!(
        names("server"),
        [&["WELCOME", "READY"][..], &message].concat()
    );
    assert!(
        events
            .iter()
            .filter(|e| e["kind"] == "command")
            .all(|e| e["encrypted"] == true)
    );
    // No frame is readable, no body, no socket type.
    assert!(events.iter().all(|e| e["kind"] != "frame"));
    let all = wire.stdout().join("\n");
    for secret in ["Hello", "World", "REQ", "Socket-Type"] {
        assert!(!all.contains(&hex(secret)), "{secret} readable: {all}");
    }
}

/// A payload of `len` bytes from a seed, every byte value possible.
fn payload(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 56) as u8
        })
        .collect()
}

#[test]
fn a_thousand_round_trips_through_the_relay_are_byte_identical_to_direct_ones() {
    let ctx = zmq::Context::new();
    let (rep, endpoint) = test_bound(&ctx, zmq::REP, "tcp://127.0.0.1:*");
    let echo = thread::spawn(move || {
        // Echoes 2000 requests: 1000 direct, 1000 through the relay.
        for _ in 0..2000 {
            let Ok(request) = rep.recv_multipart(0) else {
                return;
            };
            rep.send_multipart(request, 0).unwrap();
        }
    });
    let (mut wire, through) = start_wire(&endpoint, &["--json"]);
    let sizes: Vec<usize> = (0..1000)
        .map(|i| [0, 1, 5, 255, 256, 1000][i % 6] + i % 7)
        .collect();
    let round_trips = |target: &str| -> Vec<Vec<u8>> {
        let req = test_req(&ctx, target);
        sizes
            .iter()
            .enumerate()
            .map(|(i, &len)| {
                req.send(payload(i as u64, len), 0).unwrap();
                req.recv_bytes(0).unwrap()
            })
            .collect()
    };
    let direct = round_trips(&endpoint);
    let relayed = round_trips(&through);
    echo.join().unwrap();
    let sent: Vec<Vec<u8>> = (0..1000).map(|i| payload(i as u64, sizes[i])).collect();
    assert_eq!(direct, sent);
    assert_eq!(relayed, direct);

    // And --json reported each of them, frame by frame: the delimiter, then
    // the body's size and first 64 bytes, both ways.
    let events = stop_json(&mut wire);
    for from in ["client", "server"] {
        let seen = messages(&events, from);
        assert_eq!(seen.len(), 1000, "{from}");
        let sizes_seen: Vec<u64> = events
            .iter()
            .filter(|e| e["from"] == from && e["kind"] == "frame" && e["more"] == false)
            .map(|e| e["size"].as_u64().unwrap())
            .collect();
        assert_eq!(
            sizes_seen,
            sizes.iter().map(|&s| s as u64).collect::<Vec<_>>()
        );
        for (message, body) in seen.iter().zip(&sent) {
            let head = &body[..body.len().min(SHOWN)];
            assert_eq!(
                message,
                &vec![String::new(), zmq_reqrep::envelope::hex(head)]
            );
        }
    }
}

/// A TCP server of the test's own that sends back whatever it reads.
fn tcp_echo() -> (String, thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let handle = thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(SOON)).unwrap();
        let mut buffer = [0; 8192];
        while let Ok(n) = stream.read(&mut buffer) {
            if n == 0 || stream.write_all(&buffer[..n]).is_err() {
                break;
            }
        }
    });
    (address, handle)
}

#[test]
fn any_bytes_cross_unchanged_and_a_stranger_gets_one_line() {
    let (address, echo) = tcp_echo();
    let (mut wire, through) = start_wire(&format!("tcp://{address}"), &[]);
    let mut stream = TcpStream::connect(through.trim_start_matches("tcp://")).unwrap();
    stream.set_read_timeout(Some(SOON)).unwrap();
    let mut sent = b"GET / HTTP/1.1\r\n\r\n".to_vec();
    sent.extend(payload(7, 1 << 20));
    let writer = {
        let mut stream = stream.try_clone().unwrap();
        let sent = sent.clone();
        thread::spawn(move || {
            // In uneven pieces, as a real peer writes.
            for (i, piece) in sent.chunks(1000 + 7).enumerate() {
                stream.write_all(piece).unwrap();
                if i % 100 == 0 {
                    stream.flush().unwrap();
                }
            }
            stream.shutdown(std::net::Shutdown::Write).unwrap();
        })
    };
    let mut back = Vec::new();
    stream.read_to_end(&mut back).unwrap();
    writer.join().unwrap();
    echo.join().unwrap();
    assert!(back == sent, "{} bytes back of {}", back.len(), sent.len());

    wire.signal(libc::SIGTERM);
    wire.expect_exit(0, SOON);
    let lines = wire.stdout();
    let notes: Vec<&String> = lines.iter().filter(|l| l.contains("not ZMTP")).collect();
    // One line for the stranger, one for the echo (it sends the same).
    assert_eq!(notes.len(), 2, "{lines:#?}");
    assert!(
        notes[0].contains("47 45 54 20 2f 20 48 54 54 50"),
        "{notes:?}"
    );
    assert!(notes[0].contains("GET / HTTP"), "{notes:?}");
}

/// Peak resident memory of a process (VmHWM), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A TCP server of the test's own that reads and forgets everything.
fn tcp_sink() -> (String, thread::JoinHandle<u64>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let handle = thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(SOON)).unwrap();
        // A ZMTP 3 greeting, so that the other side's greeting is read.
        let mut greeting = vec![0xff, 0, 0, 0, 0, 0, 0, 0, 1, 0x7f, 3, 1];
        greeting.extend(b"NULL");
        greeting.resize(64, 0);
        stream.write_all(&greeting).unwrap();
        let mut total = 0;
        let mut buffer = vec![0; 64 * 1024];
        while let Ok(n) = stream.read(&mut buffer) {
            if n == 0 {
                break;
            }
            total += n as u64;
        }
        total
    });
    (address, handle)
}

#[test]
fn a_frame_announcing_2_63_bytes_and_100_mb_of_it_cost_no_memory() {
    let (address, sink) = tcp_sink();
    let (mut wire, through) = start_wire(&format!("tcp://{address}"), &[]);
    let before = peak_rss_kib(wire.pid());
    let mut stream = TcpStream::connect(through.trim_start_matches("tcp://")).unwrap();
    let mut greeting = vec![0xff, 0, 0, 0, 0, 0, 0, 0, 1, 0x7f, 3, 1];
    greeting.extend(b"NULL");
    greeting.resize(64, 0);
    stream.write_all(&greeting).unwrap();
    // LONG, 2^63 bytes announced; then 100 MB of it.
    stream
        .write_all(&[0x02, 0x80, 0, 0, 0, 0, 0, 0, 0])
        .unwrap();
    let chunk = vec![b'x'; 1 << 20];
    for _ in 0..100 {
        stream.write_all(&chunk).unwrap();
    }
    let peak = peak_rss_kib(wire.pid());
    // Closed only once the server's greeting is read: a socket closed with
    // unread bytes resets its connection, and a reset drops what is still
    // in flight.
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    stream.set_read_timeout(Some(SOON)).unwrap();
    let mut greeting_back = Vec::new();
    stream.read_to_end(&mut greeting_back).unwrap();
    assert_eq!(greeting_back.len(), 64);
    let relayed = sink.join().unwrap();
    assert_eq!(relayed, 64 + 9 + 100 * (1 << 20));
    // The relay kept none of it: a few MiB at most for its buffers.
    assert!(
        peak < before + 8 * 1024,
        "RSS went from {before} KiB to {peak} KiB"
    );
    wire.signal(libc::SIGTERM);
    wire.expect_exit(0, SOON);
    let lines = wire.stdout();
    let large: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("9223372036854775808 bytes"))
        .collect();
    // One line when its header passes, one with its first bytes.
    assert_eq!(large.len(), 2, "{lines:#?}");
    assert!(large[0].contains("relayed as it passes"), "{large:?}");
}

#[test]
fn nobody_reading_the_output_costs_lines_never_a_round_trip() {
    let ctx = zmq::Context::new();
    let (rep, endpoint) = test_bound(&ctx, zmq::REP, "tcp://127.0.0.1:*");
    // stdout a pipe that nobody reads: it fills after 64 KiB.
    let mut wire = Command::new(WIRE)
        .args(["--listen", "tcp://127.0.0.1:*", "--to", &endpoint])
        .env_clear()
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut stderr = wire.stderr.take().unwrap();
    let mut wire = Kill(wire);
    let mut line = Vec::new();
    let mut byte = [0];
    while !String::from_utf8_lossy(&line).contains("listening on") {
        line.clear();
        while stderr.read(&mut byte).unwrap() == 1 && byte[0] != b'\n' {
            line.push(byte[0]);
        }
    }
    let text = String::from_utf8_lossy(&line).to_string();
    let port = text
        .split("127.0.0.1:")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .to_string();
    let echo = thread::spawn(move || {
        while let Ok(request) = rep.recv_multipart(0) {
            rep.send_multipart(request, 0).unwrap();
        }
    });
    // 5000 round trips print far more than the pipe and the relay's output
    // buffer hold: every one must still be answered.
    let req = test_req(&ctx, &format!("tcp://127.0.0.1:{port}"));
    let body = vec![b'z'; 200];
    for i in 0..5000 {
        req.send(&body, 0).unwrap();
        assert_eq!(
            req.recv_bytes(0)
                .unwrap_or_else(|e| panic!("round trip {i}: {e}")),
            body
        );
    }
    drop(req);
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(wire.0.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + SOON;
    while wire.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "wire did not stop");
        thread::sleep(Duration::from_millis(20));
    }
    drop(echo);
}

#[test]
fn a_server_that_cannot_be_reached_closes_the_clients_connection_in_one_line() {
    let nobody = free_endpoint();
    let (mut wire, through) = start_wire(&nobody, &[]);
    let mut stream = TcpStream::connect(through.trim_start_matches("tcp://")).unwrap();
    stream.set_read_timeout(Some(SOON)).unwrap();
    let mut buffer = [0; 16];
    // The relay closes the client's connection: end of stream.
    assert_eq!(stream.read(&mut buffer).unwrap_or(0), 0);
    let line = wire.wait_out_count("cannot be reached", 1, SOON).remove(0);
    assert!(line.contains("connection refused"), "{line}");
    wire.signal(libc::SIGINT);
    wire.expect_exit(0, SOON);
}

#[test]
fn bad_command_lines_get_one_line_and_exit_2() {
    let to = "tcp://127.0.0.1:5555";
    for (args, needle) in [
        (vec!["--listen", "udp://*:5554"], "unknown transport"),
        (vec!["--listen", "ipc:///tmp/x"], "TCP connections only"),
        (vec!["--listen", "tcp://*:99999"], "out of range"),
        (vec!["--to", "tcp://*:5555"], "'*'"),
        (vec!["--names", "worker"], "two names"),
    ] {
        let mut full = args.clone();
        if !full.contains(&"--to") {
            full.extend(["--to", to]);
        }
        usage_error(WIRE, &full, &[], &[needle]);
    }
    // A port in use.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = format!("tcp://{}", taken.local_addr().unwrap());
    usage_error(
        WIRE,
        &["--listen", &listen, "--to", to],
        &[],
        &["--listen", "address already in use"],
    );
}

// --- the decoder alone ------------------------------------------------------------

/// What a [`Recorder`] saw: who sent which bytes, in order.
type Log = Arc<Mutex<Vec<(Side, Vec<u8>)>>>;

/// A TCP forwarder of the test's own that records what passes, in the order
/// it passes: the raw material of the decoder's tests.
struct Recorder {
    address: String,
    log: Log,
}

impl Recorder {
    fn new(to: String) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = format!("tcp://{}", listener.local_addr().unwrap());
        let log: Log = Arc::default();
        let shared = Arc::clone(&log);
        thread::spawn(move || {
            let Ok((client, _)) = listener.accept() else {
                return;
            };
            let server = TcpStream::connect(to.trim_start_matches("tcp://")).unwrap();
            for (side, from, to) in [
                (
                    Side::Client,
                    client.try_clone().unwrap(),
                    server.try_clone().unwrap(),
                ),
                (Side::Server, server, client),
            ] {
                let log = Arc::clone(&shared);
                thread::spawn(move || copy(side, from, to, &log));
            }
        });
        Recorder { address, log }
    }

    fn segments(&self) -> Vec<(Side, Vec<u8>)> {
        self.log.lock().unwrap().clone()
    }
}

fn copy(side: Side, mut from: TcpStream, mut to: TcpStream, log: &Mutex<Vec<(Side, Vec<u8>)>>) {
    let _ = to.set_nodelay(true);
    let mut buffer = [0; 4096];
    loop {
        match from.read(&mut buffer) {
            Ok(0) | Err(_) => {
                let _ = to.shutdown(std::net::Shutdown::Write);
                return;
            }
            Ok(n) => {
                // Recorded before it goes on, so the order is the real one.
                log.lock().unwrap().push((side, buffer[..n].to_vec()));
                if to.write_all(&buffer[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

/// Feeds the segments in order, each cut into pieces by `cut`.
fn decode(segments: &[(Side, Vec<u8>)], mut cut: impl FnMut(usize) -> usize) -> Vec<(Side, Event)> {
    let mut conversation = Conversation::new();
    let mut events = Vec::new();
    for (side, bytes) in segments {
        let mut rest = bytes.as_slice();
        while !rest.is_empty() {
            let n = cut(rest.len()).clamp(1, rest.len());
            conversation.feed(*side, &rest[..n], &mut |s, e| events.push((s, e)));
            assert!(conversation.buffered() <= MAX_BUFFERED);
            rest = &rest[n..];
        }
    }
    events
}

/// The same segments, split at one global byte offset.
fn split_at(segments: &[(Side, Vec<u8>)], mut offset: usize) -> Vec<(Side, Vec<u8>)> {
    let mut out = Vec::new();
    for (side, bytes) in segments {
        if offset > 0 && offset < bytes.len() {
            out.push((*side, bytes[..offset].to_vec()));
            out.push((*side, bytes[offset..].to_vec()));
        } else {
            out.push((*side, bytes.clone()));
        }
        offset = offset.saturating_sub(bytes.len());
    }
    out
}

/// Checks the decoder on a recorded conversation: cut at every point, byte
/// by byte, and in 300 random chunkings, it gives the same events.
fn same_events_however_cut(segments: &[(Side, Vec<u8>)]) -> Vec<(Side, Event)> {
    let whole = decode(segments, |len| len);
    let total: usize = segments.iter().map(|(_, b)| b.len()).sum();
    for offset in 1..total {
        let cut = split_at(segments, offset);
        assert_eq!(decode(&cut, |len| len), whole, "cut at byte {offset}");
    }
    assert_eq!(decode(segments, |_| 1), whole, "byte by byte");
    for seed in 0..300u64 {
        let mut state = seed + 1;
        let chunked = decode(segments, |len| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            1 + (state as usize) % len.min(if seed % 2 == 0 { 9 } else { 200 })
        });
        assert_eq!(chunked, whole, "random chunks, seed {seed}");
    }
    whole
}

#[test]
fn the_decoder_gives_the_same_events_however_a_real_conversation_is_cut() {
    let ctx = zmq::Context::new();
    let (router, endpoint) = test_bound(&ctx, zmq::ROUTER, "tcp://127.0.0.1:*");
    router.set_heartbeat_ivl(20).unwrap();
    let recorder = Recorder::new(endpoint);
    let dealer = test_socket(&ctx, zmq::DEALER);
    dealer.set_identity(b"alice").unwrap();
    dealer.set_heartbeat_ivl(20).unwrap();
    dealer.connect(&recorder.address).unwrap();
    let long = payload(1, 1000);
    let bodies: [&[u8]; 4] = [b"", b"Hello", &long, "olá".as_bytes()];
    for body in bodies {
        dealer.send_multipart([&b""[..], body], 0).unwrap();
        let request = router.recv_multipart(0).unwrap();
        assert_eq!(request[0], b"alice");
        router.send_multipart(&request, 0).unwrap();
        dealer.recv_multipart(0).unwrap();
    }
    // Heartbeats: a few PINGs and PONGs both ways.
    thread::sleep(Duration::from_millis(120));
    drop(dealer);
    let segments = recorder.segments();
    let events = same_events_however_cut(&segments);

    let names: BTreeSet<String> = events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Command(c) => Some(c.name.clone()),
            _ => None,
        })
        .collect();
    assert!(
        names.contains("READY") && names.contains("PING") && names.contains("PONG"),
        "{names:?}"
    );
    let ready = events.iter().find_map(|(side, e)| match e {
        Event::Command(c) if *side == Side::Client && c.name == "READY" => Some(c),
        _ => None,
    });
    assert!(
        matches!(&ready.unwrap().detail, Detail::Properties(p) if p.contains(&("Identity".into(), "alice".into()))),
        "{ready:?}"
    );
    let frames: Vec<_> = events
        .iter()
        .filter_map(|(side, e)| match e {
            Event::Frame(f) if *side == Side::Client => Some(f),
            _ => None,
        })
        .collect();
    assert_eq!(frames.len(), 8);
    let long_frame = frames[5];
    assert!(long_frame.long && long_frame.size == 1000);
    assert_eq!(long_frame.header, [0x02, 0, 0, 0, 0, 0, 0, 0x03, 0xe8]);
    assert_eq!(long_frame.head, long[..SHOWN]);
    assert_eq!(frames[7].head, "olá".as_bytes());
}

#[test]
fn a_zmtp_2_peer_and_libzmq_agree_on_2_0_and_the_decoder_follows() {
    // A ZMTP 2.0 REQ of the test's own, as libzmq 3.x spoke it, against
    // today's libzmq: the REP answers in 2.0.
    let ctx = zmq::Context::new();
    let (rep, endpoint) = test_bound(&ctx, zmq::REP, "tcp://127.0.0.1:*");
    let recorder = Recorder::new(endpoint);
    let mut old = TcpStream::connect(recorder.address.trim_start_matches("tcp://")).unwrap();
    old.set_read_timeout(Some(SOON)).unwrap();
    // Signature, revision 1 (ZMTP 2.0), socket type 3 (REQ); an empty
    // identity message; the request [b"", b"Hello"].
    old.write_all(b"\xff\0\0\0\0\0\0\0\x01\x7f\x01\x03\x00\x00\x01\x00\x00\x05Hello")
        .unwrap();
    let request = rep.recv_multipart(0).unwrap();
    assert_eq!(request, vec![b"Hello".to_vec()]);
    rep.send("World", 0).unwrap();
    // The REP's greeting (12 bytes), its identity message, and the reply.
    let mut answer = vec![0; 12 + 2 + 2 + 7];
    old.read_exact(&mut answer).unwrap();
    assert_eq!(answer[10], 3, "libzmq still says 3, then its socket type");
    assert_eq!(answer[11], 4, "REP");
    assert_eq!(&answer[16..], b"\x00\x05World");
    drop(old);
    let segments = recorder.segments();
    let events = same_events_however_cut(&segments);
    let versions: Vec<(Side, String)> = events
        .iter()
        .filter_map(|(side, e)| match e {
            Event::Greeting(g) => Some((*side, g.version.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(versions.len(), 2, "{events:#?}");
    assert!(versions.iter().all(|(_, v)| v == "2.0"), "{versions:?}");
    let server_frames: Vec<Vec<u8>> = events
        .iter()
        .filter_map(|(side, e)| match e {
            Event::Frame(f) if *side == Side::Server => Some(f.head.clone()),
            _ => None,
        })
        .collect();
    // The identity message (empty), then the reply.
    assert_eq!(server_frames, vec![vec![], vec![], b"World".to_vec()]);
}

#[test]
fn hostile_bytes_never_panic_and_never_grow_the_decoder_past_its_bound() {
    let mut greeting = vec![0xff, 0, 0, 0, 0, 0, 0, 0, 1, 0x7f, 3, 1];
    greeting.extend(b"NULL");
    greeting.resize(64, 0);
    let mut cases: Vec<Vec<(Side, Vec<u8>)>> = Vec::new();
    // Random bytes, from the first byte or after a greeting, both ways.
    for seed in 0..200u64 {
        let noise = payload(seed, 2000);
        let mut after = greeting.clone();
        after.extend(&noise);
        cases.push(vec![
            (Side::Client, noise.clone()),
            (Side::Server, noise.clone()),
        ]);
        cases.push(vec![
            (Side::Server, greeting.clone()),
            (Side::Client, after),
        ]);
    }
    // Every truncated greeting.
    for len in 0..64 {
        cases.push(vec![(Side::Client, greeting[..len].to_vec())]);
    }
    // Absurd sizes: the largest LONG frame and command, and a command that
    // says its name runs past its end.
    for frame in [
        vec![0x02, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        vec![0x06, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        vec![0x04, 0x03, 0xff, 0x41, 0x42],
        vec![
            0x04, 0x10, 0x05, b'R', b'E', b'A', b'D', b'Y', 0xff, 1, 2, 3, 4, 5, 6, 7, 8, 9,
        ],
    ] {
        let mut stream = greeting.clone();
        stream.extend(&frame);
        stream.extend(payload(3, 5000));
        cases.push(vec![
            (Side::Server, greeting.clone()),
            (Side::Client, stream),
        ]);
    }
    for case in &cases {
        let mut conversation = Conversation::new();
        for (side, bytes) in case {
            for piece in bytes.chunks(37) {
                conversation.feed(*side, piece, &mut |_, _| {});
                assert!(conversation.buffered() <= MAX_BUFFERED);
            }
        }
        for side in [Side::Client, Side::Server] {
            conversation.finish(side, &mut |_, _| {});
        }
    }
    // A truncated greeting says so once its sender hangs up.
    let mut conversation = Conversation::new();
    let mut notes = Vec::new();
    conversation.feed(Side::Client, &greeting[..20], &mut |_, e| notes.push(e));
    conversation.finish(Side::Client, &mut |_, e| notes.push(e));
    assert!(
        matches!(&notes[..], [Event::Note(n)] if n.contains("after 20 bytes of greeting")),
        "{notes:?}"
    );
}
