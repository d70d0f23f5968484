//! The broker's live page (`broker --http`): `/stats` after known runs in
//! both modes, and bad HTTP requests that must get a 4xx while the broker
//! goes on serving its clients. The HTTP client is a plain TcpStream: what
//! goes over the wire is exactly what the test wrote.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// An answer: status code, head, body.
struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

/// Sends `raw` as it is and reads the answer until the server closes.
fn exchange(page: &str, raw: &[u8]) -> Answer {
    let mut stream = TcpStream::connect(page).unwrap();
    stream.set_read_timeout(Some(SOON)).unwrap();
    stream.set_write_timeout(Some(SOON)).unwrap();
    // The server may answer (431) and stop reading before all is sent.
    let _ = stream.write_all(raw);
    let mut bytes = Vec::new();
    let _ = stream.read_to_end(&mut bytes);
    parse(&bytes)
}

fn parse(bytes: &[u8]) -> Answer {
    let end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head in {:?}", String::from_utf8_lossy(bytes)));
    let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    Answer {
        status,
        head,
        body: bytes[end + 4..].to_vec(),
    }
}

fn get(page: &str, path: &str) -> Answer {
    exchange(
        page,
        format!("GET {path} HTTP/1.1\r\nHost: {page}\r\n\r\n").as_bytes(),
    )
}

fn stats(page: &str) -> Value {
    let answer = get(page, "/stats");
    assert_eq!(answer.status, 200, "{}", answer.head);
    assert!(answer.head.contains("Content-Type: application/json"));
    serde_json::from_slice(&answer.body).expect("/stats is JSON")
}

/// Asks for `/stats` until `done` holds, for at most `within`: the broker
/// publishes what it knows a few times a second.
fn stats_until(page: &str, within: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let stats = stats(page);
        if done(&stats) {
            return stats;
        }
        assert!(
            Instant::now() < deadline,
            "never came true; last /stats: {stats:#}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// Requests served, by worker name.
fn served(stats: &Value) -> BTreeMap<String, u64> {
    stats["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["name"].as_str().unwrap().to_string(),
                w["served"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn event_of(stats: &Value, kind: &str, worker: &str) -> bool {
    stats["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["kind"] == kind && e["worker"] == worker)
}

fn twenty_requests(frontend: &str) {
    let mut client = Proc::start(
        BROKER_CLIENT,
        &["--connect", frontend, "--count", "20", "--interval-ms", "0"],
    );
    client.expect_exit(0, SOON);
    assert_eq!(reply_lines(&client).len(), 20);
}

#[test]
fn lb_stats_count_twenty_requests_by_worker_and_drop_a_killed_worker() {
    let (broker, frontend, backend) =
        start_broker("lb", &["--http", "127.0.0.1:0", "--heartbeat-ms", "200"]);
    let page = wait_page(&broker);
    let _alpha = start_lb_worker(&backend, "alpha", "200", &[]);
    let mut beta = start_lb_worker(&backend, "beta", "200", &[]);
    broker.wait_log_count(" ready", 2, SOON);

    twenty_requests(&frontend);
    let after = stats_until(&page, SOON, |s| s["replies"] == 20);
    assert_eq!(after["mode"], "lb");
    assert_eq!(after["requests"], 20);
    assert_eq!(after["workers_known"], 2);
    let by_name = served(&after);
    assert_eq!(
        by_name.keys().collect::<Vec<_>>(),
        ["alpha", "beta"],
        "{after:#}"
    );
    assert_eq!(by_name.values().sum::<u64>(), 20, "{after:#}");
    assert!(by_name.values().all(|&n| n > 0), "both worked: {after:#}");
    for worker in after["workers"].as_array().unwrap() {
        assert_eq!(worker["state"], "idle", "{after:#}");
        assert!(worker["last_heard_ms"].as_u64().unwrap() < 5_000);
    }
    let mut idle: Vec<&str> = after["idle_queue"]
        .as_array()
        .unwrap()
        .iter()
        .map(|name| name.as_str().unwrap())
        .collect();
    idle.sort_unstable();
    assert_eq!(idle, ["alpha", "beta"]);
    assert!(event_of(&after, "joined", "alpha") && event_of(&after, "joined", "beta"));
    assert_eq!(after["connections"]["workers"], 2, "{after:#}");

    // A client connected now is counted, as an open frontend connection.
    let ctx = zmq::Context::new();
    let sentinel = test_req(&ctx, &frontend);
    sentinel.send("ping", 0).unwrap();
    assert_eq!(sentinel.recv_bytes(0).unwrap(), b"World");
    let before = stats_until(&page, SOON, |s| {
        s["connections"]["clients"] == 1 && s["replies"] == 21
    });

    // Killed: its connection closes, the broker forgets it at its next
    // heartbeat, and what it served is counted apart.
    let beta_served = served(&before)["beta"];
    beta.kill();
    let gone = stats_until(&page, SOON, |s| !served(s).contains_key("beta"));
    assert_eq!(gone["workers_known"], 1, "{gone:#}");
    assert!(event_of(&gone, "expired", "beta"), "{gone:#}");
    assert_eq!(gone["served_by_gone"], beta_served, "{gone:#}");
    assert_eq!(
        served(&gone)["alpha"] + beta_served,
        21,
        "the 20 and the sentinel's: {gone:#}"
    );
    assert_eq!(gone["idle_queue"], serde_json::json!(["alpha"]));
    stats_until(&page, SOON, |s| s["connections"]["workers"] == 1);

    // A worker by the same name, back: it rejoins.
    let _beta_again = start_lb_worker(&backend, "beta", "200", &[]);
    let back = stats_until(&page, SOON, |s| served(s).contains_key("beta"));
    assert!(event_of(&back, "rejoined", "beta"), "{back:#}");
}

#[test]
fn proxy_stats_show_the_totals_and_the_connections_on_both_sides() {
    let (broker, frontend, backend) = start_broker("proxy", &["--http", "127.0.0.1:0"]);
    let page = wait_page(&broker);
    let _workers: Vec<Proc> = (0..2)
        .map(|_| Proc::start(WORKER, &["--connect", &backend]))
        .collect();
    broker.wait_log_count("backend: 127.0.0.1", 2, SOON);

    twenty_requests(&frontend);
    // The per-second counts cover whole seconds: wait for that one to end.
    let after = stats_until(&page, SOON, |s| {
        let sum = |series: &str| {
            s["per_second"][series]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n.as_u64().unwrap())
                .sum::<u64>()
        };
        sum("requests") == 20 && sum("replies") == 20
    });
    assert_eq!(after["mode"], "proxy");
    assert_eq!(
        (&after["requests"], &after["replies"]),
        (&20.into(), &20.into())
    );
    assert_eq!(after["dropped"], 0);
    assert_eq!(after["connections"]["workers"], 2, "{after:#}");
    assert_eq!(
        after["workers"],
        serde_json::json!([]),
        "a DEALER names no worker"
    );

    let page_answer = get(&page, "/");
    assert_eq!(page_answer.status, 200);
    let html = String::from_utf8(page_answer.body).unwrap();
    assert!(html.contains("--mode lb") && html.contains("/stats"));
    let head = exchange(&page, b"HEAD /stats HTTP/1.1\r\n\r\n");
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty(), "HEAD has no body");
}

#[test]
fn bad_http_requests_get_a_4xx_and_the_broker_keeps_serving() {
    let (broker, frontend, backend) = start_broker("lb", &["--http", "127.0.0.1:0"]);
    let page = wait_page(&broker);
    let _worker = Proc::start(WORKER, &["--connect", &backend, "--mode", "lb"]);
    broker.wait_log(" ready", SOON);
    let ctx = zmq::Context::new();
    let sentinel = test_req(&ctx, &frontend);
    let mut answered = 0;
    let mut still_served = |what: &str| {
        sentinel.send("ping", 0).unwrap();
        let reply = sentinel.recv_bytes(0);
        assert!(reply.is_ok(), "no reply after {what}");
        answered += 1;
    };

    let huge = format!(
        "GET / HTTP/1.1\r\nX-Huge: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let bad: [(&str, &[u8], u16); 6] = [
        ("garbage", b"\x16\x03\x01\x00\xff\xfe garbage\r\n\r\n", 400),
        ("an unknown path", b"GET /nope HTTP/1.1\r\n\r\n", 404),
        (
            "a POST",
            b"POST /stats HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi",
            405,
        ),
        ("a DELETE of the page", b"DELETE / HTTP/1.1\r\n\r\n", 405),
        ("a huge header", huge.as_bytes(), 431),
        ("HTTP/0.9", b"GET /\r\n\r\n", 400),
    ];
    for (what, raw, status) in bad {
        let answer = exchange(&page, raw);
        assert_eq!(answer.status, status, "{what}: {}", answer.head);
        let why = String::from_utf8_lossy(&answer.body);
        assert_eq!(
            why.lines().count(),
            1,
            "{what}: one line saying why: {why:?}"
        );
        still_served(what);
    }

    // Requests that never end, more of them than the
    // server has threads and queue: the excess is refused at once (503),
    // the rest time out (408), and then the page answers again.
    let idle: Vec<TcpStream> = (0..100)
        .map(|_| {
            let mut stream = TcpStream::connect(&page).unwrap();
            stream.set_read_timeout(Some(SOON)).unwrap();
            stream.write_all(b"GET / HT").ok();
            stream
        })
        .collect();
    still_served("100 idle connections");
    let mut statuses: Vec<u16> = idle
        .into_iter()
        .map(|mut stream| {
            let mut bytes = Vec::new();
            let _ = stream.read_to_end(&mut bytes);
            parse(&bytes).status
        })
        .collect();
    statuses.sort_unstable();
    statuses.dedup();
    assert!(
        statuses.iter().all(|s| *s == 408 || *s == 503) && statuses.contains(&503),
        "{statuses:?}"
    );
    let after = stats_until(&page, SOON, |s| s["replies"] == answered);
    assert_eq!(after["dropped"], 0);
    assert!(
        broker
            .stderr()
            .iter()
            .all(|line| !line.contains("panicked"))
    );
}

#[test]
fn a_busy_or_malformed_http_address_is_a_usage_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap().to_string();
    for (value, says) in [
        (busy.as_str(), "address already in use"),
        ("8080", "expected IP:PORT"),
        ("http://127.0.0.1:8080", "without a scheme"),
    ] {
        usage_error(
            BROKER,
            &[
                "--frontend",
                "tcp://127.0.0.1:*",
                "--backend",
                "tcp://127.0.0.1:*",
                "--http",
                value,
            ],
            &[],
            &["--http", says],
        );
    }
}

/// Past its threads and its queue the page refuses a request at once, and
/// the refusal arrives whole: a 503, then an orderly end of the
/// connection, never a reset. Each client writes its whole request as soon
/// as it is connected, as Python's http.client does, while the broker is
/// stopped (SIGSTOP): every request is then already waiting in the kernel
/// when the server accepts its connection and refuses it, the case in
/// which closing at once, with the request unread, resets the connection.
#[test]
fn a_refused_request_gets_a_whole_503_and_an_orderly_end() {
    use zmq_reqrep::plumbing::http::{HANDLERS, QUEUED};
    let (mut broker, _frontend, _backend) = start_broker("lb", &["--http", "127.0.0.1:0"]);
    let page = wait_page(&broker);
    // Connections that send nothing hold every thread and fill the queue,
    // for READ_DEADLINE (2 s) from their arrival.
    let _held: Vec<TcpStream> = (0..HANDLERS + QUEUED)
        .map(|_| TcpStream::connect(&page).unwrap())
        .collect();
    broker.signal(libc::SIGSTOP);
    wait_stopped(broker.pid());
    let request =
        format!("GET /stats HTTP/1.1\r\nHost: {page}\r\nAccept-Encoding: identity\r\n\r\n");
    let clients: Vec<TcpStream> = (0..8)
        .map(|_| {
            let mut stream = TcpStream::connect(&page).unwrap();
            stream.set_read_timeout(Some(SOON)).unwrap();
            stream.write_all(request.as_bytes()).unwrap();
            stream
        })
        .collect();
    broker.signal(libc::SIGCONT);
    let mut statuses = Vec::new();
    for (i, mut stream) in clients.into_iter().enumerate() {
        let mut bytes = Vec::new();
        let end = stream.read_to_end(&mut bytes);
        let answer = parse(&bytes);
        statuses.push(answer.status);
        if answer.status != 503 {
            continue;
        }
        assert_eq!(answer.body, b"busy: try again later\n", "client {i}");
        assert!(
            end.is_ok(),
            "client {i}: a 503, then {end:?} instead of the end of the connection"
        );
    }
    // Every connection beyond the threads and the queue is refused. Should
    // a thread take its first held connection late, as many later ones may
    // still find room in the queue (at most HANDLERS): they are answered
    // once a held connection's 2 s are up, and are not this test's subject.
    assert!(
        statuses.iter().filter(|s| **s == 503).count() >= 8 - HANDLERS,
        "{statuses:?}"
    );
}
