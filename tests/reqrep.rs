//! The request-reply exercise: `reqrep_server` and `reqrep_client` as real
//! processes on 127.0.0.1, and the lecture's experiments with them.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn client_and_server_exchange_twenty_messages() {
    let (_server, endpoint) = start_server(&["--name", "s1"]);
    let mut client = Proc::start(
        CLIENT,
        &[
            "--connect",
            &endpoint,
            "--count",
            "20",
            "--interval-ms",
            "0",
            "--name",
            "c1",
        ],
    );
    client.expect_exit(0, SOON);

    let replies = reply_lines(&client);
    assert_eq!(replies.len(), 20, "{replies:#?}");
    for (i, line) in replies.iter().enumerate() {
        let expected = format!(
            "reqrep_client[c1] #{} sent b\"Hello\" got b\"World\" in ",
            i + 1
        );
        assert!(line.starts_with(&expected), "line {i}: {line}");
        assert!(line.ends_with(" ms"), "{line}");
    }
    let last = client.stdout().pop().unwrap();
    assert!(
        last.starts_with("reqrep_client[c1] done: 20 replies to 20 requests, 0 resends"),
        "{last}"
    );
}

#[test]
fn client_started_two_seconds_before_the_server_still_completes() {
    let endpoint = format!("tcp://127.0.0.1:{}", free_port());
    let mut client = Proc::start(
        CLIENT,
        &["--connect", &endpoint, "--count", "5", "--interval-ms", "0"],
    );
    client.wait_log("REQ connecting", SOON);
    // The experiment itself: the server comes up two seconds later.
    thread::sleep(Duration::from_secs(2));
    assert!(
        client.wait_exit(Duration::ZERO).is_none(),
        "client gave up before the server came"
    );
    assert!(reply_lines(&client).is_empty());

    let _server = Proc::start(SERVER, &["--bind", &endpoint]);
    client.expect_exit(0, SOON);
    assert_eq!(reply_lines(&client).len(), 5);
}

#[test]
fn five_clients_against_one_server_all_fifty_answered() {
    let (mut server, endpoint) = start_server(&[]);
    let mut clients: Vec<Proc> = (0..5)
        .map(|i| {
            let name = format!("c{i}");
            Proc::start(
                CLIENT,
                &[
                    "--connect",
                    &endpoint,
                    "--count",
                    "10",
                    "--interval-ms",
                    "0",
                    "--name",
                    &name,
                ],
            )
        })
        .collect();
    for client in &mut clients {
        client.expect_exit(0, SOON);
        assert_eq!(reply_lines(client).len(), 10);
    }
    server.signal(libc::SIGTERM);
    server.expect_exit(0, SOON);
    assert_eq!(served(&server), 50);
    assert_eq!(
        server
            .stderr()
            .iter()
            .filter(|l| l.contains("request b\"Hello\""))
            .count(),
        50
    );
}

#[test]
fn one_client_connected_to_three_servers_uses_every_one() {
    let mut servers: Vec<(Proc, String)> = (0..3)
        .map(|i| start_server(&["--name", &format!("s{i}")]))
        .collect();
    let endpoints: Vec<&str> = servers
        .iter()
        .map(|(_, endpoint)| endpoint.as_str())
        .collect();
    let connect = endpoints.join(",");
    let mut client = Proc::start(
        CLIENT,
        &[
            "--connect",
            &connect,
            "--count",
            "30",
            "--interval-ms",
            "20",
        ],
    );
    client.expect_exit(0, Duration::from_secs(20));
    assert_eq!(reply_lines(&client).len(), 30);

    let mut total = 0;
    for (server, _) in &mut servers {
        server.signal(libc::SIGTERM);
        server.expect_exit(0, SOON);
        let n = served(server);
        assert!(n > 0, "server {} answered nothing", server.label);
        total += n;
    }
    assert_eq!(total, 30);
}

/// A REP never reports a full queue: it drops the reply. At a mark of 32
/// (the listeners' own), it misjudged its queue full under a burst and lost
/// replies that the DEALER was reading all along (src/plumbing/listener.rs,
/// `REP_SNDHWM`).
#[test]
fn a_dealer_that_sends_two_thousand_requests_at_once_gets_every_reply() {
    let (_server, endpoint) = start_server(&[]);
    let ctx = zmq::Context::new();
    let dealer = ctx.socket(zmq::DEALER).unwrap();
    dealer.set_linger(0).unwrap();
    dealer.set_rcvtimeo(5_000).unwrap();
    dealer.connect(&endpoint).unwrap();
    const BURST: usize = 2000;
    // Twenty bursts: at the old mark, 2 runs of 3 lost replies.
    for burst in 0..20 {
        for i in 0..BURST {
            let body = format!("Hello {i}");
            dealer
                .send_multipart([&b""[..], body.as_bytes()], 0)
                .unwrap();
        }
        for i in 0..BURST {
            let reply = dealer.recv_multipart(0).unwrap_or_else(|error| {
                panic!("burst {burst}: reply {i} of {BURST} never came ({error})")
            });
            assert_eq!(reply, vec![b"".to_vec(), b"World".to_vec()]);
        }
    }
}

#[test]
fn empty_binary_and_large_payloads_reach_the_server_byte_for_byte() {
    let (server, endpoint) = start_server(&["--echo"]);
    let large: Vec<u8> = (0..512 * 1024).map(|i| (i * 7 % 251) as u8).collect();
    let ctx = zmq::Context::new();
    let req = test_req(&ctx, &endpoint);
    for payload in [Vec::new(), vec![0xff, 0x00, 0xfe, b'\n'], large] {
        req.send(&payload[..], 0).unwrap();
        let reply = req.recv_multipart(0).expect("echo reply");
        assert_eq!(reply, vec![payload.clone()], "{} bytes", payload.len());
    }
    server.wait_log(r#"request b"""#, SOON);
    server.wait_log(r#"request b"\xff\x00\xfe\n""#, SOON);
    server.wait_log("(524288 bytes)", SOON);
}

#[test]
fn empty_binary_and_large_payloads_leave_the_client_byte_for_byte() {
    let dir = TempDir::new("payload");
    let large: Vec<u8> = (0..512 * 1024).map(|i| (i * 13 % 256) as u8).collect();
    let cases: [(&str, Vec<u8>, &str); 3] = [
        ("empty", Vec::new(), r#"got b"" in"#),
        (
            "binary",
            vec![0xc3, 0x28, 0x00, b'"'],
            r#"got b"\xc3(\x00\"" in"#,
        ),
        ("large", large, "(524288 bytes) in"),
    ];
    let ctx = zmq::Context::new();
    for (name, payload, shown) in cases {
        let (rep, endpoint) = test_bound(&ctx, zmq::REP, "tcp://127.0.0.1:*");
        let file = dir.file(name, &payload);

        let mut client = Proc::start(
            CLIENT,
            &[
                "--connect",
                &endpoint,
                "--message-file",
                &file,
                "--count",
                "1",
            ],
        );
        let request = rep.recv_multipart(0).expect("the client's request");
        assert_eq!(request, vec![payload.clone()], "{name}: request bytes");
        rep.send(&payload[..], 0).unwrap();
        client.expect_exit(0, SOON);
        let line = reply_lines(&client).pop().unwrap_or_default();
        assert!(line.contains(shown), "{name}: {line}");
    }
}

/// Starts `exe`, lets it show it is running, sends SIGTERM, and checks it
/// ends with code 0 within one second, printing `summary`.
fn stops_on_sigterm(mut proc: Proc, ready: &str, summary: &str) {
    proc.wait_log(ready, SOON);
    let sent = Instant::now();
    proc.signal(libc::SIGTERM);
    let status = proc.wait_exit(Duration::from_secs(1));
    let took = sent.elapsed();
    assert!(
        status.is_some(),
        "{} still running 1 s after SIGTERM",
        proc.label
    );
    assert_eq!(status.unwrap().code(), Some(0), "{}", proc.label);
    let all: Vec<String> = proc.stdout().into_iter().chain(proc.stderr()).collect();
    assert!(
        all.iter().any(|line| line.contains(summary)),
        "{}: no {summary:?} in {all:#?}",
        proc.label
    );
    eprintln!("{} stopped {took:?} after SIGTERM", proc.label);
}

#[test]
fn every_role_stops_on_sigterm_within_a_second_with_its_summary() {
    let (server, endpoint) = start_server(&[]);
    let client = Proc::start(CLIENT, &["--connect", &endpoint]);
    client.wait_out_count(" got ", 1, SOON);
    stops_on_sigterm(client, "REQ connecting", "done: ");
    stops_on_sigterm(server, "REP listening", "served ");

    // A client still waiting for a server that never came.
    let absent = format!("tcp://127.0.0.1:{}", free_port());
    stops_on_sigterm(
        Proc::start(CLIENT, &["--connect", &absent]),
        "REQ connecting",
        "done: 0 replies",
    );
    stops_on_sigterm(
        Proc::start(CLIENT, &["--connect", &absent, "--timeout-ms", "0"]),
        "REQ connecting",
        "done: 0 replies",
    );

    for mode in ["proxy", "lb"] {
        let (broker, frontend, backend) = start_broker(mode, &[]);
        let worker_mode = if mode == "proxy" { "plain" } else { "lb" };
        let worker = Proc::start(WORKER, &["--connect", &backend, "--mode", worker_mode]);
        let client = Proc::start(BROKER_CLIENT, &["--connect", &frontend]);
        client.wait_out_count(" got ", 1, SOON);
        stops_on_sigterm(client, "REQ connecting", "done: ");
        stops_on_sigterm(worker, "worker connecting", "served ");
        stops_on_sigterm(broker, "frontend ROUTER on", "stopped: ");
    }
}

#[test]
fn bad_command_lines_exit_2_naming_the_option_and_value() {
    usage_error(
        SERVER,
        &["--bind", "tcp://*:99999"],
        &[],
        &["--bind", "99999", "out of range"],
    );
    usage_error(
        SERVER,
        &["--bind", "tcp://127.0.0.1"],
        &[],
        &["--bind", "missing port"],
    );
    usage_error(SERVER, &["--bind", "udp://*:5555"], &[], &["--bind", "udp"]);
    usage_error(SERVER, &["--work-ms", "soon"], &[], &["--work-ms", "soon"]);
    usage_error(
        SERVER,
        &["--max-message-bytes", "0"],
        &[],
        &["--max-message-bytes", "0"],
    );
    usage_error(
        SERVER,
        &["--crash-after", "0"],
        &[],
        &["--crash-after", "0"],
    );
    usage_error(
        CLIENT,
        &["--connect", "tcp://localhost"],
        &[],
        &["--connect", "missing port"],
    );
    usage_error(
        CLIENT,
        &["--connect", "tcp://localhost:5555x"],
        &[],
        &["--connect", "5555x"],
    );
    usage_error(
        CLIENT,
        &["--connect", "tcp://*:5555"],
        &[],
        &["--connect", "'*'"],
    );
    usage_error(CLIENT, &["--count", "abc"], &[], &["--count", "abc"]);
    usage_error(
        CLIENT,
        &[],
        &[("INTERVAL_MS", "-5")],
        &["--interval-ms", "-5"],
    );
    usage_error(
        CLIENT,
        &[],
        &[("CONNECT", "tcp://a:1,tcp://b:70000")],
        &["--connect", "70000"],
    );
    usage_error(
        BROKER_CLIENT,
        &["--timeout-ms", "x"],
        &[],
        &["--timeout-ms", "x"],
    );
    usage_error(
        BROKER,
        &["--mode", "fast"],
        &[],
        &["--mode", "fast", "[possible values: proxy, lb]"],
    );
    usage_error(
        BROKER,
        &["--backend", "tcp://*:"],
        &[],
        &["--backend", "not a number"],
    );
    usage_error(
        WORKER,
        &["--heartbeat-ms", "0"],
        &[],
        &["--heartbeat-ms", "0"],
    );
    usage_error(
        WORKER,
        &["--connect", "tcp://localhost:0"],
        &[],
        &["--connect", "out of range"],
    );

    // A port that is taken is only found when binding.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("tcp://127.0.0.1:{}", taken.local_addr().unwrap().port());
    usage_error(
        SERVER,
        &["--bind", &endpoint],
        &[],
        &["--bind", &endpoint, "address already in use"],
    );
    usage_error(
        BROKER,
        &["--frontend", "tcp://127.0.0.1:*", "--backend", &endpoint],
        &[],
        &["--backend", &endpoint, "address already in use"],
    );
}

#[test]
fn an_unresolvable_host_is_a_request_that_cannot_be_sent_not_a_usage_error() {
    let mut client = Proc::start(
        CLIENT,
        &[
            "--connect",
            "tcp://no-such-host.invalid:5555",
            "--count",
            "1",
            "--timeout-ms",
            "200",
            "--retries",
            "1",
        ],
    );
    client.expect_exit(1, SOON);
    let last = client.stderr().pop().unwrap();
    assert!(
        last.starts_with(
            "error: could not send request #1: no server connected at tcp://no-such-host.invalid:5555"
        ),
        "{last}"
    );
    assert!(
        last.contains("(2 attempts, each waiting 200 ms for a connection"),
        "{last}"
    );
    client.wait_log("trying again (1 of 1 retry)", SOON);
}
