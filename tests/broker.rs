//! The broker exercise: `broker`, `worker` and `broker_client` as real
//! processes on 127.0.0.1, in both broker modes.

mod common;

use common::*;

/// Three echoing workers and four clients with 10 requests each, every
/// client sending its own message: all 40 answered, each by the message its
/// own client sent, and every worker did some of the work.
fn forty_requests_reach_every_worker_and_return_to_their_client(
    mode: &str,
    worker_mode: &str,
    ready: &str,
) {
    let (broker, frontend, backend) = start_broker(mode, &[]);
    let mut workers: Vec<Proc> = (1..=3)
        .map(|i| {
            Proc::start(
                WORKER,
                &[
                    "--connect",
                    &backend,
                    "--mode",
                    worker_mode,
                    "--echo",
                    "--name",
                    &format!("w{i}"),
                ],
            )
        })
        .collect();
    // Requests only go to workers the broker already knows.
    broker.wait_log_count(ready, 3, SOON);

    let mut clients: Vec<Proc> = (1..=4)
        .map(|i| {
            let message = format!("from client {i}");
            Proc::start(
                BROKER_CLIENT,
                &[
                    "--connect",
                    &frontend,
                    "--count",
                    "10",
                    "--interval-ms",
                    "5",
                    "--message",
                    &message,
                ],
            )
        })
        .collect();
    for (i, client) in clients.iter_mut().enumerate() {
        client.expect_exit(0, SOON);
        let own = format!(
            r#"sent b"from client {n}" got b"from client {n}""#,
            n = i + 1
        );
        let replies: Vec<String> = client
            .stdout()
            .into_iter()
            .filter(|l| l.contains(" got "))
            .collect();
        assert_eq!(replies.len(), 10, "{replies:#?}");
        assert!(
            replies.iter().all(|l| l.contains(&own)),
            "a reply went to the wrong client: {replies:#?}"
        );
    }
    let mut total = 0;
    for worker in &mut workers {
        worker.signal(libc::SIGTERM);
        worker.expect_exit(0, SOON);
        let n = served(worker);
        assert!(n > 0, "{} served nothing", worker.label);
        total += n;
    }
    assert_eq!(total, 40);
    broker.wait_log("40 / 40 in total", SOON);
}

#[test]
fn proxy_broker_spreads_forty_requests_over_three_workers() {
    forty_requests_reach_every_worker_and_return_to_their_client(
        "proxy",
        "plain",
        "backend: 127.0.0.1",
    );
}

#[test]
fn lb_broker_spreads_forty_requests_over_three_workers() {
    forty_requests_reach_every_worker_and_return_to_their_client("lb", "lb", " ready");
}
