//! The Lazy Pirate client under the faults of issue 9: a peer that answers
//! twice, a hung server among healthy ones, nothing to connect to, a broker
//! that takes requests but has no worker, and the lines it prints about them.
//!
//! The "servers" here are often the test's own sockets, so that each fault
//! happens exactly when the test says.

mod common;

use std::time::Duration;

use common::*;

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
