//! The bare examples (`examples/`) as a student runs them: with each other,
//! and with the hardened roles they stand beside, on free ports of 127.0.0.1.
//!
//! `cargo test` builds the examples into `target/<profile>/examples/`, next
//! to the `deps/` folder holding this test's executable; that is where they
//! are found. The examples print nothing when they bind, and need not:
//! ZeroMQ's `connect` retries until the other side is there, so every test
//! starts its processes in any order and waits (boundedly) for the replies.

mod common;

use common::{
    BROKER_CLIENT, CLIENT, Proc, SERVER, SOON, WORKER, example, free_endpoint, reply_lines,
};

/// The ten "Received reply N: b\"World\"" lines of an `hwclient` that ended
/// with exit code 0.
fn expect_ten_replies(client: &mut Proc) {
    client.expect_exit(0, SOON);
    let replies: Vec<String> = client
        .stdout()
        .into_iter()
        .filter(|line| line.starts_with("Received reply "))
        .collect();
    let expected: Vec<String> = (0..10)
        .map(|n| format!("Received reply {n}: b\"World\""))
        .collect();
    assert_eq!(replies, expected, "{:?}", client.stdout());
}

#[test]
fn hwclient_started_before_hwserver_gets_its_ten_replies() {
    let endpoint = free_endpoint();
    // The client first: its connect succeeds with nobody listening yet.
    let mut client = Proc::start(&example("hwclient"), &[&endpoint]);
    client.wait_out_count("Sending request 0...", 1, SOON);
    let server = Proc::start(&example("hwserver"), &[&endpoint]);
    expect_ten_replies(&mut client);
    server.wait_out_count("Received request: b\"Hello\"", 10, SOON);
}

#[test]
fn hwclient_and_hwserver_interoperate_with_reqrep_server_and_reqrep_client() {
    // The bare client against the hardened server...
    let server = Proc::start(SERVER, &["--bind", "tcp://127.0.0.1:*"]);
    let server_endpoint = server.wait_endpoints("listening on").remove(0);
    let mut client = Proc::start(&example("hwclient"), &[&server_endpoint]);
    expect_ten_replies(&mut client);

    // ...and the hardened client against the bare server.
    let endpoint = free_endpoint();
    let bare_server = Proc::start(&example("hwserver"), &[&endpoint]);
    let mut hardened = Proc::start(CLIENT, &["--connect", &endpoint, "--count", "3"]);
    hardened.expect_exit(0, SOON);
    assert_eq!(reply_lines(&hardened).len(), 3, "{:?}", hardened.stdout());
    bare_server.wait_out_count("Received request: b\"Hello\"", 3, SOON);
}

#[test]
fn rrbroker_passes_every_request_to_the_rrworkers_and_shows_the_envelope() {
    let (frontend, backend) = (free_endpoint(), free_endpoint());
    let broker = Proc::start(&example("rrbroker"), &[&frontend, &backend]);
    let workers = [
        Proc::start(&example("rrworker"), &[&backend]),
        Proc::start(&example("rrworker"), &[&backend]),
    ];
    let mut client = Proc::start(&example("hwclient"), &[&frontend]);
    expect_ten_replies(&mut client);

    let served: usize = workers
        .iter()
        .map(|worker| {
            worker
                .stdout()
                .iter()
                .filter(|line| *line == "Received request: b\"Hello\"")
                .count()
        })
        .sum();
    assert_eq!(served, 10);
    // Through the broker, each message carries the REQ client's identity
    // (5 bytes from the ROUTER) and the empty delimiter before the body.
    for (direction, body) in [("request", "Hello"), ("reply", "World")] {
        for line in broker.wait_out_count(&format!("{direction}: "), 10, SOON) {
            let frames: Vec<&str> = line[direction.len() + 3..line.len() - 1]
                .split(", ")
                .collect();
            assert_eq!(frames.len(), 3, "{line}");
            assert_eq!(frames[1], "b\"\"", "{line}");
            assert_eq!(frames[2], format!("b\"{body}\""), "{line}");
        }
    }
}

#[test]
fn rrbroker_and_rrworker_interoperate_with_broker_worker_and_broker_client() {
    // The bare worker behind the hardened broker, the bare client in front.
    let (_broker, frontend, backend) = common::start_broker("proxy", &[]);
    let _worker = Proc::start(&example("rrworker"), &[&backend]);
    let mut client = Proc::start(&example("hwclient"), &[&frontend]);
    expect_ten_replies(&mut client);

    // The hardened worker and client on either side of the bare broker.
    let (frontend, backend) = (free_endpoint(), free_endpoint());
    let _bare_broker = Proc::start(&example("rrbroker"), &[&frontend, &backend]);
    let _hardened_worker = Proc::start(WORKER, &["--connect", &backend]);
    let mut hardened = Proc::start(BROKER_CLIENT, &["--connect", &frontend, "--count", "3"]);
    hardened.expect_exit(0, SOON);
    assert_eq!(reply_lines(&hardened).len(), 3, "{:?}", hardened.stdout());
}

#[test]
fn a_bad_endpoint_ends_every_example_with_one_line_and_exit_1() {
    for name in ["hwserver", "hwclient", "rrbroker", "rrworker"] {
        let mut proc = Proc::start(&example(name), &["nonsense"]);
        proc.expect_exit(1, SOON);
        assert_eq!(proc.stderr(), ["Error: Invalid argument"], "{name}");
    }
}
