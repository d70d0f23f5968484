//! Two thousand clients through one broker, every one of them answered, in
//! both modes: the limits that gave way past a thousand clients (a broker
//! out of descriptors, a load generator out of sockets) cannot come back.
//!
//! The broker runs with an open-files limit of 3,500, below the 4,000 that
//! two descriptors per client would need (its connection, and a duplicate
//! its monitor keeps): a broker that spends one descriptor per client on
//! watching them cannot accept them all. The clients are the benchmark's
//! own load generator (`bench peer fleet`), in one process: each a DEALER
//! speaking as a REQ would, all connecting at once, two requests each.
//!
//! Not a timing test: how fast they are answered is the benchmark's
//! business (`bench scale`); here every bound is generous, and only the
//! count of replies is checked.

mod common;

use std::time::Duration;

use common::*;
use zmq_reqrep::bench::peers::{CONNECTED, Outcome};

const BENCH: &str = env!("CARGO_BIN_EXE_bench");

const CLIENTS: usize = 2_000;
const REQUESTS: u64 = 2;

/// The broker's open-files limit (soft and hard): room for 2,000
/// connections and some, not for a second descriptor each.
const BROKER_OPEN_FILES: u32 = 3_500;

#[test]
fn two_thousand_clients_through_an_lb_broker_are_all_answered() {
    through_broker("lb");
}

#[test]
fn two_thousand_clients_through_a_proxy_broker_are_all_answered() {
    through_broker("proxy");
}

fn through_broker(mode: &str) {
    let limit = BROKER_OPEN_FILES.to_string();
    // The shell lowers the limit for the broker it then becomes.
    let broker = Proc::start(
        "/bin/sh",
        &[
            "-c",
            "ulimit -Sn \"$1\" && ulimit -Hn \"$1\" && shift && exec \"$@\"",
            "sh",
            &limit,
            BROKER,
            "--mode",
            mode,
            "--frontend",
            "tcp://127.0.0.1:*",
            "--backend",
            "tcp://127.0.0.1:*",
        ],
    );
    let mut endpoints = broker.wait_endpoints("frontend ROUTER on");
    let backend = endpoints.pop().unwrap();
    let frontend = endpoints.pop().unwrap();
    let _workers: Vec<Proc> = (0..2)
        .map(|i| match mode {
            "lb" => start_lb_worker(&backend, &format!("w{i}"), "1000", &[]),
            _ => Proc::start(WORKER, &["--connect", &backend]),
        })
        .collect();
    // Both workers there before the first request: in lb mode they say
    // READY, in proxy mode the broker's monitor sees them connect.
    match mode {
        "lb" => broker.wait_log_count(" ready", 2, SOON),
        _ => broker.wait_log_count("backend: 127.0.0.1:", 2, SOON),
    };

    let clients = CLIENTS.to_string();
    let requests = REQUESTS.to_string();
    let mut fleet = Proc::start(
        BENCH,
        &[
            "peer",
            "fleet",
            "--connect",
            &frontend,
            "--clients",
            &clients,
            "--requests",
            &requests,
            "--size",
            "5",
            // Gives up after a minute without a reply; never stops early.
            "--stall-s",
            "60",
            "--run-ms",
            "600000",
        ],
    );
    fleet.expect_exit(0, Duration::from_secs(180));
    let connected = fleet.wait_log(CONNECTED, SOON);
    assert!(
        connected.contains(&format!("{CLIENTS} clients answered once")),
        "{connected}"
    );
    let outcome: Outcome =
        serde_json::from_str(fleet.stdout().last().expect("the fleet prints its outcome"))
            .expect("the fleet's outcome");
    // Lock step: a client asks again only once answered, so every client
    // answered every time is exactly this many replies.
    let expected = CLIENTS as u64 * REQUESTS;
    assert_eq!(outcome.sent, expected);
    assert_eq!(outcome.rtts_ns.len() as u64, expected);
    // And the broker never had to turn a connection down.
    let refused: Vec<String> = broker.log_lines("cannot accept a connection");
    assert!(refused.is_empty(), "{refused:?}");
}
