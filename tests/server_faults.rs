//! How `reqrep_server` ends, under the faults of issue 9: a crash right
//! after a reply.

mod common;

use std::time::{Duration, Instant};

use common::*;

fn start_server(extra: &[&str]) -> (Proc, String) {
    let mut args = vec!["--bind", "tcp://127.0.0.1:*"];
    args.extend_from_slice(extra);
    let server = Proc::start(SERVER, &args);
    let endpoint = server.wait_endpoints("REP listening on").remove(0);
    (server, endpoint)
}

/// The client is the naive one (`--timeout-ms 0`), a plain REQ like the
/// course's pyzmq client: the Lazy Pirate client's ZMQ_IMMEDIATE lets libzmq
/// drop a reply that arrived just before its connection broke (see
/// `src/lazy_pirate.rs`), which it then resends, and no test of the server
/// could be told from that.
#[test]
fn defect_5_the_reply_sent_just_before_a_crash_always_arrives() {
    const RUNS: usize = 20;
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut delivered = 0;
    let mut lost = Vec::new();
    for run in 1..=RUNS {
        assert!(Instant::now() < deadline, "out of time after {run} runs");
        let (mut server, endpoint) = start_server(&["--crash-after", "1"]);
        let mut client = Proc::start(
            CLIENT,
            &["--connect", &endpoint, "--count", "1", "--timeout-ms", "0"],
        );
        // The server crashes (exit 3) right after its one reply...
        server.expect_exit(3, SOON);
        // ...and the client has it, or waits for ever (killed after 3 s).
        match client.wait_exit(Duration::from_secs(3)) {
            Some(status) if status.success() && reply_lines(&client).len() == 1 => delivered += 1,
            other => lost.push((run, other.and_then(|status| status.code()))),
        }
    }
    assert_eq!(
        delivered, RUNS,
        "replies lost in runs (run, client exit code; None: still waiting) {lost:?}"
    );
}
