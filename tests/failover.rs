//! Issue 13, no single point of failure: two brokers side by side, workers
//! and clients connected to both, and either broker killed (SIGKILL) under
//! load. Every request is answered exactly once as far as each client can
//! tell, and the broker that comes back is served again.
//!
//! The first tests pin down the worker's side with brokers of the test's
//! own (ROUTER sockets), so that each event happens exactly when the test
//! says; the last ones run the real binaries, as the compose experiment
//! does.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;

const READY: u8 = 0x01;
const HEARTBEAT: u8 = 0x02;

/// The next message from a worker that is not a HEARTBEAT (within 10 s).
fn next_message(router: &zmq::Socket) -> Vec<Vec<u8>> {
    loop {
        let frames = router.recv_multipart(0).expect("a message from the worker");
        if frames[1..] != [vec![HEARTBEAT]] {
            return frames;
        }
    }
}

/// Everything but heartbeats that reaches each broker within `wait`,
/// while each heartbeats to its worker as a broker does (so that the
/// worker never finds it silent): `(router, worker id)` in, one list of
/// messages per broker out.
fn messages_within(brokers: &[(&zmq::Socket, &[u8])], wait: Duration) -> Vec<Vec<Vec<Vec<u8>>>> {
    let deadline = Instant::now() + wait;
    let mut got = vec![Vec::new(); brokers.len()];
    while Instant::now() < deadline {
        for (i, (router, worker)) in brokers.iter().enumerate() {
            let _ = router.send_multipart([*worker, &[HEARTBEAT][..]], zmq::DONTWAIT);
            while let Ok(frames) = router.recv_multipart(zmq::DONTWAIT) {
                if frames[1..] != [vec![HEARTBEAT]] {
                    got[i].push(frames);
                }
            }
        }
        thread::sleep(Duration::from_millis(50));
    }
    got
}

/// `[worker id, client, "", body]`, as a broker hands a request to a worker.
fn send_request(router: &zmq::Socket, worker: &[u8], client: &str, body: &str) {
    router
        .send_multipart([worker, client.as_bytes(), b"", body.as_bytes()], 0)
        .unwrap();
}

// --- the worker's side, against brokers of the test's own -------------------

#[test]
fn lb_worker_serves_two_brokers_and_queues_the_second_request_that_comes_at_once() {
    let ctx = zmq::Context::new();
    let (one, one_endpoint) = test_bound(&ctx, zmq::ROUTER, "tcp://127.0.0.1:*");
    let (two, two_endpoint) = test_bound(&ctx, zmq::ROUTER, "tcp://127.0.0.1:*");
    let worker = start_lb_worker(
        &format!("{one_endpoint},{two_endpoint}"),
        "w",
        "1000",
        &["--work-ms", "800"],
    );
    // Its own READY to each broker.
    let ready_one = next_message(&one);
    let ready_two = next_message(&two);
    assert_eq!(ready_one[1..], [vec![READY], b"w".to_vec()]);
    assert_eq!(ready_two[1..], [vec![READY], b"w".to_vec()]);
    let (id_one, id_two) = (ready_one[0].clone(), ready_two[0].clone());

    // Each broker takes the worker for idle: both hand it a request.
    send_request(&one, &id_one, "client-a", "from one");
    worker.wait_log("request b\"from one\" from client", SOON);
    send_request(&two, &id_two, "client-b", "from two");
    let queued = worker.wait_log("queued, next in line", SOON);
    assert!(queued.contains(&format!("via {two_endpoint}")), "{queued}");
    assert!(queued.contains(&format!("via {one_endpoint}")), "{queued}");

    // Each reply to the broker its request came from, in its envelope.
    assert_eq!(
        next_message(&one),
        [
            id_one.clone(),
            b"client-a".to_vec(),
            vec![],
            b"World".to_vec()
        ]
    );
    assert_eq!(
        next_message(&two),
        [
            id_two.clone(),
            b"client-b".to_vec(),
            vec![],
            b"World".to_vec()
        ]
    );
    // And then nothing but heartbeats: no second reply, and no READY (a
    // reply already says "idle" to the broker that gets it).
    let more = messages_within(
        &[(&one, &id_one), (&two, &id_two)],
        Duration::from_millis(1500),
    );
    assert!(
        more.iter().all(Vec::is_empty),
        "the brokers got more: {more:?}"
    );
    // Served one after the other: the second after the first's reply.
    let log = worker.stderr();
    let at = |needle: &str| log.iter().position(|line| line.contains(needle));
    assert!(at("request b\"from one\"") < at("request b\"from two\" from client"));
}

#[test]
fn lb_worker_sends_no_reply_to_a_broker_restarted_since_the_request_came() {
    let ctx = zmq::Context::new();
    let endpoint = free_endpoint();
    let (broker, _) = test_bound(&ctx, zmq::ROUTER, &endpoint);
    let worker = start_lb_worker(&endpoint, "w", "1000", &["--work-ms", "1500"]);
    let id = next_message(&broker)[0].clone();
    send_request(&broker, &id, "client-a", "Hello");
    worker.wait_log("request b\"Hello\"", SOON);

    // The broker dies with the request, and a new one takes its place at
    // once, on the same address: it knows nothing of that request.
    drop(broker);
    worker.wait_log(
        &format!("connection to the broker at {endpoint} lost"),
        SOON,
    );
    let (restarted, _) = test_bound(&ctx, zmq::ROUTER, &endpoint);
    let ready = next_message(&restarted);
    assert_eq!(
        ready[1..],
        [vec![READY], b"w".to_vec()],
        "READY to the new broker"
    );
    let new_id = ready[0].clone();

    // The work done, the reply would be a stale one for the new broker.
    let said = worker.wait_log("not sent", SOON);
    assert!(said.contains("client 636c69656e742d61"), "{said}");
    let got = messages_within(&[(&restarted, &new_id)], Duration::from_millis(1000)).remove(0);
    assert!(
        got.iter().all(|frames| frames[1] == [READY]),
        "the restarted broker got {got:?}"
    );
}

#[test]
fn lb_worker_drops_the_queued_request_of_a_broker_that_died_meanwhile() {
    let ctx = zmq::Context::new();
    let (one, one_endpoint) = test_bound(&ctx, zmq::ROUTER, "tcp://127.0.0.1:*");
    let (two, two_endpoint) = test_bound(&ctx, zmq::ROUTER, "tcp://127.0.0.1:*");
    let worker = start_lb_worker(
        &format!("{one_endpoint},{two_endpoint}"),
        "w",
        "1000",
        &["--work-ms", "1500"],
    );
    let id_one = next_message(&one)[0].clone();
    let id_two = next_message(&two)[0].clone();
    send_request(&one, &id_one, "client-a", "first");
    worker.wait_log("request b\"first\"", SOON);
    send_request(&two, &id_two, "client-b", "second");
    worker.wait_log("queued, next in line", SOON);
    // Broker two dies with its request waiting in the worker.
    drop(two);
    worker.wait_log(
        &format!("connection to the broker at {two_endpoint} lost"),
        SOON,
    );

    assert_eq!(
        next_message(&one),
        [id_one, b"client-a".to_vec(), vec![], b"World".to_vec()]
    );
    let said = worker.wait_log("not served", SOON);
    assert!(said.contains(&two_endpoint), "{said}");
    // Its work was never started: the client resends it elsewhere.
    thread::sleep(Duration::from_millis(300));
    let log = worker.stderr();
    assert!(
        !log.iter()
            .any(|line| line.contains("request b\"second\" from")),
        "{log:#?}"
    );
}

#[test]
fn lb_worker_paused_for_less_than_three_heartbeats_still_announces_itself_again() {
    // A broker forgets a worker it has not heard from for 3 heartbeats,
    // counted from the worker's last message, which may have left up to a
    // heartbeat before the worker was stopped: a pause of 2.5 heartbeats
    // can be enough. (Seen: a worker resumed just after the broker expired
    // it, and stayed nameless there for good.)
    let ctx = zmq::Context::new();
    let (broker, endpoint) = test_bound(&ctx, zmq::ROUTER, "tcp://127.0.0.1:*");
    let mut worker = start_lb_worker(&endpoint, "w", "200", &[]);
    let id = next_message(&broker)[0].clone();
    // Heartbeats both ways for a while, as a broker's, so that the worker
    // finds nothing amiss before or after its pause...
    let before = messages_within(&[(&broker, &id)], Duration::from_millis(600)).remove(0);
    assert!(before.is_empty(), "{before:?}");
    // ...which comes right after one of its heartbeats: 2.5 heartbeats, so
    // that the broker hears nothing for 2.5 to 3.5.
    let mut next = broker.recv_multipart(0).expect("a heartbeat");
    for _ in 0..100 {
        if next[1..] == [vec![HEARTBEAT]] {
            break;
        }
        next = broker.recv_multipart(0).expect("a heartbeat");
    }
    assert_eq!(next[1..], [vec![HEARTBEAT]]);
    worker.signal(libc::SIGSTOP);
    let during = messages_within(&[(&broker, &id)], Duration::from_millis(500)).remove(0);
    worker.signal(libc::SIGCONT);
    assert!(during.is_empty(), "{during:?}");
    let got = messages_within(&[(&broker, &id)], Duration::from_millis(1000)).remove(0);
    assert!(
        got.iter()
            .any(|frames| frames[1..] == [vec![READY], b"w".to_vec()]),
        "no READY after the pause: {got:?}"
    );
}

#[test]
fn lb_worker_does_not_call_a_broker_silent_that_has_just_answered_its_connection() {
    // Seen after `docker compose kill broker1` and `start broker1`: each lb
    // worker logged "connected to the broker ... again", then within a
    // second "broker silent", before the broker's first HEARTBEAT was due.
    // Its silence clock had started when it opened its new socket, seconds
    // before the broker came back.
    let ctx = zmq::Context::new();
    let endpoint = free_endpoint();
    let (broker, _) = test_bound(&ctx, zmq::ROUTER, &endpoint);
    // Expiry: 3 heartbeats, 6 s.
    let worker = start_lb_worker(&endpoint, "w", "2000", &[]);
    let id = next_message(&broker)[0].clone();
    broker.send_multipart([&id[..], &[HEARTBEAT]], 0).unwrap();
    drop(broker);
    // Found silent after the expiry, it opens a new socket 1 s later.
    worker.wait_log(
        &format!("reconnected to {endpoint} with a new socket"),
        Duration::from_secs(20),
    );
    // The broker comes back well inside the new socket's first expiry...
    thread::sleep(Duration::from_millis(4500));
    let (restarted, _) = test_bound(&ctx, zmq::ROUTER, &endpoint);
    let ready = next_message(&restarted);
    assert_eq!(ready[1..], [vec![READY], b"w".to_vec()]);
    let back = worker.wait_log(
        &format!("connected to the broker at {endpoint} again"),
        SOON,
    );
    // ...and sends its first HEARTBEAT a while after READY, as a broker
    // whose heartbeat timer runs on its own may, then every 1.8 s.
    let up = Instant::now();
    let mut next_heartbeat = up + Duration::from_millis(2500);
    while up.elapsed() < Duration::from_secs(4) {
        if Instant::now() >= next_heartbeat {
            restarted
                .send_multipart([&ready[0][..], &[HEARTBEAT]], 0)
                .unwrap();
            next_heartbeat += Duration::from_millis(1800);
        }
        while restarted.recv_multipart(zmq::DONTWAIT).is_ok() {}
        thread::sleep(Duration::from_millis(20));
    }
    let log = worker.stderr();
    let after = log
        .iter()
        .position(|line| *line == back)
        .expect("the line seen");
    let silent: Vec<&String> = log[after..]
        .iter()
        .filter(|line| line.contains("broker silent"))
        .collect();
    assert!(silent.is_empty(), "{silent:#?}");
}

#[test]
fn plain_worker_serves_two_brokers_each_reply_on_its_own_connection() {
    let ctx = zmq::Context::new();
    // Two DEALER backends, as two proxy brokers have.
    let backends: Vec<(zmq::Socket, String)> = (0..2)
        .map(|_| test_bound(&ctx, zmq::DEALER, "tcp://127.0.0.1:*"))
        .collect();
    let connect = format!("{},{}", backends[0].1, backends[1].1);
    let worker = Proc::start(WORKER, &["--connect", &connect, "--work-ms", "300"]);
    worker.wait_log("REP worker connecting to", SOON);
    // The DEALER queues a request until the worker's connection is up.
    for (i, (dealer, _)) in backends.iter().enumerate() {
        let client = format!("client-{i}");
        dealer
            .send_multipart([client.as_bytes(), b"", b"Hello"], 0)
            .unwrap();
    }
    for (i, (dealer, _)) in backends.iter().enumerate() {
        let reply = dealer.recv_multipart(0).expect("a reply");
        assert_eq!(
            reply,
            [
                format!("client-{i}").into_bytes(),
                vec![],
                b"World".to_vec()
            ]
        );
        dealer.set_rcvtimeo(700).unwrap();
        assert!(dealer.recv_multipart(0).is_err(), "a second reply");
    }
    worker.wait_log_count("request b\"Hello\"", 2, SOON);
}

#[test]
fn worker_refuses_an_endpoint_listed_twice() {
    for mode in ["plain", "lb"] {
        usage_error(
            WORKER,
            &[
                "--mode",
                mode,
                "--connect",
                "tcp://127.0.0.1:5999,tcp://127.0.0.1:5999",
            ],
            &[],
            &["listed twice", "'--connect'"],
        );
    }
}

// --- the real binaries: kill a broker under load -------------------------------

/// The request numbers of a client's reply lines, in the order printed.
fn replied(client: &Proc) -> Vec<u64> {
    reply_lines(client)
        .iter()
        .map(|line| {
            let seq = line.split_whitespace().find(|word| word.starts_with('#'));
            seq.and_then(|word| word[1..].parse().ok())
                .unwrap_or_else(|| panic!("no #N in {line:?}"))
        })
        .collect()
}

/// The resends a client counted in its summary ("3 resends", "1 resend").
fn resends(client: &Proc) -> u64 {
    let summary = client
        .stdout()
        .into_iter()
        .find(|line| line.contains(" done: "))
        .expect("a summary line");
    let words: Vec<&str> = summary.split_whitespace().collect();
    let at = words
        .iter()
        .position(|word| word.starts_with("resend"))
        .unwrap_or_else(|| panic!("no resends in {summary:?}"));
    words[at - 1].parse().unwrap()
}

struct Failover {
    /// What the test measured, for its output.
    reregistered_after: Duration,
}

/// Two brokers in `mode`, two workers and three clients connected to both,
/// 100 requests each; broker 1 is SIGKILLed mid-run, then restarted on the
/// same ports.
fn kill_a_broker_under_load(mode: &str) -> Failover {
    const HEARTBEAT_MS: u64 = 250;
    let heartbeat = HEARTBEAT_MS.to_string();
    let ports: Vec<String> = (0..4).map(|_| free_endpoint()).collect();
    let (front1, back1, front2, back2) = (&ports[0], &ports[1], &ports[2], &ports[3]);
    let mut broker1 = start_broker_on(mode, front1, back1, &["--heartbeat-ms", &heartbeat]);
    let mut broker2 = start_broker_on(mode, front2, back2, &["--heartbeat-ms", &heartbeat]);
    let backends = format!("{back1},{back2}");
    let worker_mode = if mode == "lb" { "lb" } else { "plain" };
    let mut workers: Vec<Proc> = (1..=2)
        .map(|i| {
            Proc::start(
                WORKER,
                &[
                    "--connect",
                    &backends,
                    "--mode",
                    worker_mode,
                    "--heartbeat-ms",
                    &heartbeat,
                    // A little work: requests are in the brokers' and the
                    // workers' hands when broker 1 dies, and are resent.
                    "--work-ms",
                    "10",
                    "--name",
                    &format!("w{i}"),
                ],
            )
        })
        .collect();
    // Both workers joined both brokers.
    let joined = if mode == "lb" {
        ") ready"
    } else {
        "backend: 127.0.0.1"
    };
    broker1.wait_log_count(joined, 2, SOON);
    broker2.wait_log_count(joined, 2, SOON);

    let frontends = format!("{front1},{front2}");
    let mut clients: Vec<Proc> = (1..=3)
        .map(|i| {
            Proc::start(
                BROKER_CLIENT,
                &[
                    "--connect",
                    &frontends,
                    "--count",
                    "100",
                    // Back to back: a request of each client is almost
                    // always in a broker's or a worker's hands.
                    "--interval-ms",
                    "0",
                    "--timeout-ms",
                    "1000",
                    "--retries",
                    "3",
                    "--name",
                    &format!("c{i}"),
                ],
            )
        })
        .collect();
    for client in &clients {
        client.wait_out_count(" got ", 20, SOON);
    }
    broker1.signal(libc::SIGKILL);
    assert!(broker1.wait_exit(SOON).is_some());
    let at_kill: Vec<usize> = clients.iter().map(|c| reply_lines(c).len()).collect();
    // Served on by broker 2 alone for a while...
    for (client, &before) in clients.iter().zip(&at_kill) {
        assert!(before < 100, "the kill came too late: {at_kill:?}");
        client.wait_out_count(" got ", (before + 10).min(100), SOON);
    }
    // Requests it handed from a worker gone with them to another (at
    // least once: the first may have done the work too).
    let mut handed_on = broker1.log_lines("goes to the next idle worker").len();
    drop(broker1);

    // ...then broker 1 is back on the same ports, and the workers join it
    // again by themselves.
    let back = Instant::now();
    let broker1 = start_broker_on(mode, front1, back1, &["--heartbeat-ms", &heartbeat]);
    broker1.wait_log_count(joined, 2, SOON);
    let reregistered_after = back.elapsed();
    if mode == "lb" {
        for name in ["w1", "w2"] {
            broker1.wait_log(&format!("worker {name} ("), SOON);
        }
        assert!(
            reregistered_after <= Duration::from_millis(20 * HEARTBEAT_MS),
            "the workers joined the restarted broker only after {reregistered_after:?}"
        );
    }
    // A request through broker 1 alone is answered.
    let ctx = zmq::Context::new();
    let req = test_req(&ctx, front1);
    req.send("Hello", 0).unwrap();
    assert_eq!(req.recv_bytes(0).unwrap(), b"World");

    let mut delivered = 1; // that one
    let mut resent = 0;
    for client in &mut clients {
        client.expect_exit(0, Duration::from_secs(60));
        // One reply per request, in order: none lost, none taken twice.
        assert_eq!(
            replied(client),
            (1..=100).collect::<Vec<u64>>(),
            "{}",
            client.label
        );
        delivered += 100;
        resent += resends(client);
    }
    let served: Vec<u64> = workers
        .iter_mut()
        .map(|worker| {
            worker.signal(libc::SIGTERM);
            worker.expect_exit(0, SOON);
            served(worker)
        })
        .collect();
    let total: u64 = served.iter().sum();
    let mut broker1 = broker1;
    for broker in [&mut broker1, &mut broker2] {
        // Stopped: every line written.
        broker.signal(libc::SIGTERM);
        broker.expect_exit(0, SOON);
        handed_on += broker.log_lines("goes to the next idle worker").len();
    }
    // Every reply a client took was served once; a worker may also have
    // served a request whose reply died with broker 1, which its client
    // then resent (at most one per resend), or one that a broker handed on
    // from a worker gone with it (at most one per hand-over).
    let most = delivered + resent + handed_on as u64;
    assert!(
        (delivered..=most).contains(&total),
        "workers served {served:?}, {total} in all, for {delivered} replies, {resent} resends \
         and {handed_on} requests handed on"
    );
    assert!(
        served.iter().all(|&n| n > 0),
        "a worker served nothing: {served:?}"
    );
    // Broker 2 kept serving meanwhile, and still does.
    assert!(
        broker2
            .stderr()
            .iter()
            .any(|line| line.contains(" out in the last"))
    );
    eprintln!(
        "{mode}: replies at the kill {at_kill:?}; {resent} resends; workers served {served:?}; \
         workers back at the restarted broker after {reregistered_after:?}"
    );
    Failover { reregistered_after }
}

#[test]
fn lb_either_broker_can_be_killed_under_load_and_nothing_is_lost() {
    let failover = kill_a_broker_under_load("lb");
    assert!(failover.reregistered_after > Duration::ZERO);
}

#[test]
fn proxy_either_broker_can_be_killed_under_load_and_nothing_is_lost() {
    kill_a_broker_under_load("proxy");
}

#[test]
fn clients_resend_to_the_broker_that_is_alive() {
    // The failover itself, seen from a client: a request that died with
    // its broker costs one timeout, and its resend is answered by the other.
    let ports: Vec<String> = (0..4).map(|_| free_endpoint()).collect();
    let mut broker1 = start_broker_on("lb", &ports[0], &ports[1], &["--heartbeat-ms", "1000"]);
    let broker2 = start_broker_on("lb", &ports[2], &ports[3], &["--heartbeat-ms", "1000"]);
    // Broker 1's only worker takes long: the request is in its hands when
    // broker 1 dies. Broker 2 has a quick one.
    let _slow = start_lb_worker(&ports[1], "slow", "1000", &["--work-ms", "5000"]);
    let _quick = start_lb_worker(&ports[3], "quick", "1000", &[]);
    broker1.wait_log("worker slow (", SOON);
    broker2.wait_log("worker quick (", SOON);
    let frontends = format!("{},{}", ports[0], ports[2]);
    let mut client = Proc::start(
        BROKER_CLIENT,
        &[
            "--connect",
            &frontends,
            "--count",
            "4",
            "--interval-ms",
            "0",
            "--timeout-ms",
            "1500",
        ],
    );
    // Round robin: one of the first two requests goes to broker 1.
    broker1.wait_log("1 request in", SOON);
    broker1.signal(libc::SIGKILL);
    client.expect_exit(0, Duration::from_secs(30));
    assert_eq!(replied(&client), [1, 2, 3, 4]);
    assert_eq!(resends(&client), 1, "{:#?}", client.stdout());
    let timeouts: Vec<String> = client
        .stderr()
        .into_iter()
        .filter(|line| line.contains("no reply within"))
        .collect();
    assert_eq!(timeouts.len(), 1, "{timeouts:#?}");
}

// --- issue 20: a broker stopped (SIGSTOP), as `docker compose pause` does ------

/// The total replies a broker counted, from its last traffic line
/// ("... (12 / 10 in total, 0 dropped) ..."); 0 before its first one.
fn replies_out(broker: &Proc) -> u64 {
    broker
        .log_lines(" in total, ")
        .last()
        .and_then(|line| {
            let totals = line.split(" in total").next()?.rsplit('(').next()?;
            totals.split(" / ").nth(1)?.trim().parse().ok()
        })
        .unwrap_or(0)
}

/// Waits until `broker` has counted `more` replies beyond `since`.
fn wait_replies_out(broker: &Proc, since: u64, more: u64) {
    let deadline = Instant::now() + SOON;
    while replies_out(broker) < since + more {
        assert!(
            Instant::now() < deadline,
            "{} counted {} replies, not {} more than {since}: {:#?}",
            broker.label,
            replies_out(broker),
            more,
            broker.stderr()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_client_of_two_brokers_pays_one_timeout_for_a_stopped_broker() {
    // A stopped broker keeps its connections open, and a REQ that hands
    // its requests in turn to both brokers sends every other request into
    // it, each costing a timeout, until the ZMTP heartbeats give up on it
    // (up to 40 s). One timeout must be enough to steer clear of it until
    // it runs again.
    let (mut broker1, front1, back1) = start_broker("proxy", &[]);
    let (broker2, front2, back2) = start_broker("proxy", &[]);
    let _worker = Proc::start(WORKER, &["--connect", &format!("{back1},{back2}")]);
    broker1.wait_log("backend: 127.0.0.1", SOON);
    broker2.wait_log("backend: 127.0.0.1", SOON);
    let mut client = Proc::start(
        BROKER_CLIENT,
        &[
            "--connect",
            &format!("{front1},{front2}"),
            "--interval-ms",
            "0",
            "--timeout-ms",
            "500",
            "--retries",
            "3",
        ],
    );
    client.wait_out_count(" got ", 10, SOON);
    wait_replies_out(&broker1, 0, 1);
    stop_for(&mut broker1, Duration::from_secs(4));
    // Broker 1 serves again, in turn with broker 2.
    let resumed_with = replies_out(&broker1);
    wait_replies_out(&broker1, resumed_with, 5);
    let got = reply_lines(&client).len();
    client.wait_out_count(" got ", got + 10, SOON);
    client.signal(libc::SIGTERM);
    client.expect_exit(0, SOON);
    let timeouts = client.log_lines("no reply within");
    assert!(timeouts.len() <= 1, "{timeouts:#?}");
    let replied = replied(&client);
    assert_eq!(replied, (1..=replied.len() as u64).collect::<Vec<u64>>());
}

/// When a log line was written: its timestamp (`2026-12-06T10:21:30.843560Z`,
/// UTC) as a `SystemTime`.
fn logged_at(line: &str) -> SystemTime {
    let stamp = line.split_whitespace().next().unwrap_or_default();
    let parse = || -> Option<SystemTime> {
        let (date, time) = stamp.strip_suffix('Z')?.split_once('T')?;
        let mut ymd = date.split('-').map(|part| part.parse::<i64>());
        let (y, m, d) = (ymd.next()?.ok()?, ymd.next()?.ok()?, ymd.next()?.ok()?);
        let (hms, fraction) = time.split_once('.')?;
        let mut hms = hms.split(':').map(|part| part.parse::<i64>());
        let (h, min, s) = (hms.next()?.ok()?, hms.next()?.ok()?, hms.next()?.ok()?);
        let micros: u64 = format!("{fraction:0<6}")[..6].parse().ok()?;
        // Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        let secs = u64::try_from(days * 86_400 + h * 3600 + min * 60 + s).ok()?;
        Some(UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros))
    };
    parse().unwrap_or_else(|| panic!("no timestamp in {line:?}"))
}

#[test]
fn log_timestamps_are_read_as_utc() {
    let at = logged_at("2026-12-06T10:21:30.843560Z  WARN broker[b1] x");
    assert_eq!(
        at.duration_since(UNIX_EPOCH).unwrap(),
        Duration::from_micros(1_796_552_490_843_560)
    );
}

/// A client's timeout: when its wait ended, and how long it was.
struct Timeout {
    ended: SystemTime,
    waited: Duration,
    line: String,
}

fn timeouts(client: &Proc) -> Vec<Timeout> {
    client
        .log_lines(": no reply within ")
        .into_iter()
        .map(|line| {
            let ms = line
                .split("no reply within ")
                .nth(1)
                .and_then(|rest| rest.split(" ms").next())
                .and_then(|ms| ms.parse().ok())
                .unwrap_or_else(|| panic!("no wait in {line:?}"));
            Timeout {
                ended: logged_at(&line),
                waited: Duration::from_millis(ms),
                line,
            }
        })
        .collect()
}

/// What a broker may not say after its own stop: a judgement of a worker.
const BLAME: [&str; 5] = [
    " expired",
    "silent for",
    "lost",
    "rejoined",
    "on its heartbeat",
];

/// How long after it runs again a broker may still take to answer a
/// request its clients sent while it was stopped: it serves first the
/// copies they resent meanwhile (one per timeout, each taking --work-ms),
/// and an lb broker may first hand a request to a connection its worker
/// had closed, and learn it at the heartbeat it sends 100 ms later.
const GRACE: Duration = Duration::from_millis(1500);

/// The windows in which this test process did not run for half a second or
/// more: the machine starved it (a loaded CI runner, or a host that stops
/// the machine), and most likely every process on it. A timeout, or a
/// broker's judgement of a worker, in such a window is not the doing of a
/// broker's pause: it is reported, but apart.
#[derive(Clone, Default)]
struct Starved(Arc<Mutex<Vec<(SystemTime, SystemTime)>>>);

impl Starved {
    /// Watches from a thread of its own until `done` is set.
    fn watch(&self, done: Arc<AtomicBool>) -> thread::JoinHandle<()> {
        let windows = Arc::clone(&self.0);
        thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                let before = Instant::now();
                thread::sleep(Duration::from_millis(25));
                let took = before.elapsed();
                if took >= Duration::from_millis(500) {
                    let now = SystemTime::now();
                    windows.lock().unwrap().push((now - took, now));
                }
            }
        })
    }

    /// Whether `[from, to]` meets a window, or the `after` that follows it.
    fn during(&self, from: SystemTime, to: SystemTime, after: Duration) -> bool {
        let windows = self.0.lock().unwrap();
        windows
            .iter()
            .any(|&(start, end)| from <= end + after && to >= start)
    }
}

/// Issue 20, "done when": `brokers` brokers in `mode` (1 or 2), two
/// workers and two clients connected to all of them, and the brokers
/// stopped in turn (SIGSTOP, as `docker compose pause` does) for each of
/// `pauses`, then resumed. Nothing may be lost or crossed, a client may
/// time out only because of a pause (once per pause with two brokers), and
/// no broker may blame a worker for its own silence. Returns what went
/// wrong, if anything.
fn stop_brokers_under_load(
    mode: &str,
    brokers: usize,
    pauses: &[Duration],
    starved: &Starved,
) -> Vec<String> {
    const TIMEOUT_MS: u64 = 2000;
    // Ports of their own choosing (`*`): no broker is started again on them.
    let mut stoppable = Vec::with_capacity(brokers);
    let (mut frontends, mut backends) = (Vec::new(), Vec::new());
    for _ in 0..brokers {
        let (broker, frontend, backend) = start_broker(mode, &[]);
        stoppable.push(broker);
        frontends.push(frontend);
        backends.push(backend);
    }
    let backends = backends.join(",");
    let worker_mode = if mode == "lb" { "lb" } else { "plain" };
    let workers: Vec<Proc> = (1..=2)
        .map(|i| {
            Proc::start(
                WORKER,
                &[
                    "--connect",
                    &backends,
                    "--mode",
                    worker_mode,
                    "--echo",
                    "--work-ms",
                    "100",
                    "--name",
                    &format!("w{i}"),
                ],
            )
        })
        .collect();
    let joined = if mode == "lb" {
        ") ready"
    } else {
        "backend: 127.0.0.1"
    };
    for broker in &stoppable {
        broker.wait_log_count(joined, 2, SOON);
    }
    let timeout = TIMEOUT_MS.to_string();
    let frontends = frontends.join(",");
    let mut clients: Vec<Proc> = (1..=2)
        .map(|i| {
            Proc::start(
                BROKER_CLIENT,
                &[
                    "--connect",
                    &frontends,
                    "--message",
                    &format!("c{i}"),
                    "--interval-ms",
                    "0",
                    "--timeout-ms",
                    &timeout,
                    // Enough for the longest pause of a lone broker.
                    "--retries",
                    "10",
                    "--name",
                    &format!("c{i}"),
                ],
            )
        })
        .collect();
    for client in &clients {
        client.wait_out_count(" got ", 5, SOON);
    }

    let mut stops = Vec::with_capacity(pauses.len());
    for (i, &pause) in pauses.iter().enumerate() {
        let victim = i % brokers;
        let (stopped, resumed) = stop_for(&mut stoppable[victim], pause);
        stops.push((victim, stopped, resumed));
        // Running again: it serves its clients again, and they go on.
        let counted = replies_out(&stoppable[victim]);
        wait_replies_out(&stoppable[victim], counted, 4);
        for client in &clients {
            let got = reply_lines(client).len();
            client.wait_out_count(" got ", got + 4, SOON);
        }
    }

    for client in &mut clients {
        client.signal(libc::SIGTERM);
        client.expect_exit(0, SOON);
    }
    // The brokers' whole logs: stopped, each has written every line. (The
    // workers' logs are not read: they are killed when dropped.)
    for broker in &mut stoppable {
        broker.signal(libc::SIGTERM);
        broker.expect_exit(0, SOON);
    }

    let mut problems = Vec::new();
    for client in &clients {
        // Every request answered, in order, with its own echo.
        let replied = replied(client);
        if replied != (1..=replied.len() as u64).collect::<Vec<u64>>() {
            problems.push(format!("{}: replies {replied:?}", client.label));
        }
        for line in reply_lines(client) {
            let sent = line
                .split(" sent ")
                .nth(1)
                .and_then(|s| s.split(" got ").next());
            let got = line
                .split(" got ")
                .nth(1)
                .and_then(|s| s.split(" in ").next());
            if sent != got {
                problems.push(format!("crossed: {line}"));
            }
        }
        // Each timeout is a pause's doing: its wait overlapped a stop and
        // ended soon after the broker ran again.
        let mut per_stop = vec![0; stops.len()];
        // The latest a timeout came after its broker ran again, for the
        // output.
        let mut latest = Duration::ZERO;
        for timeout in timeouts(client) {
            let began = timeout.ended - timeout.waited;
            if starved.during(began, timeout.ended, GRACE) {
                eprintln!(
                    "{mode} x {brokers}, {}: the machine starved this test meanwhile: {}",
                    client.label, timeout.line
                );
                continue;
            }
            let during = stops.iter().position(|&(_, stopped, resumed)| {
                began < resumed && timeout.ended > stopped && timeout.ended <= resumed + GRACE
            });
            match during {
                Some(stop) => {
                    per_stop[stop] += 1;
                    let after = timeout.ended.duration_since(stops[stop].2);
                    latest = latest.max(after.unwrap_or_default());
                }
                None => problems.push(format!(
                    "{}: a timeout while every broker ran: {}",
                    client.label, timeout.line
                )),
            }
        }
        if brokers > 1 {
            for (stop, &count) in per_stop.iter().enumerate() {
                if count > 1 {
                    problems.push(format!(
                        "{}: {count} timeouts during stop {} ({:?})",
                        client.label,
                        stop + 1,
                        pauses[stop]
                    ));
                }
            }
        }
        eprintln!(
            "{mode} x {brokers}, {}: timeouts per stop {per_stop:?}, the latest {latest:?} \
             after its broker ran again",
            client.label
        );
    }
    for broker in &stoppable {
        for line in broker.stderr() {
            if !BLAME.iter().any(|word| line.contains(word)) {
                continue;
            }
            // A worker starved of CPU is silent indeed: an expiry after the
            // machine starved everyone is no verdict on a broker's pause.
            let at = logged_at(&line);
            if starved.during(at, at, Duration::from_secs(3)) {
                eprintln!("{mode} x {brokers}: the machine starved this test before: {line}");
                continue;
            }
            problems.push(format!("{}: {line}", broker.label));
        }
    }
    if !problems.is_empty() {
        // What every process said, to tell what happened.
        for process in stoppable.iter().chain(&workers).chain(&clients) {
            eprintln!(
                "--- {mode} x {brokers}: {} ---\n{}",
                process.label,
                process.stderr().join("\n")
            );
        }
    }
    problems
        .into_iter()
        .map(|problem| format!("{mode} x {brokers}: {problem}"))
        .collect()
}

/// Each configuration's stops, 20 in all, of 5 to 8 s.
const PAUSES_MS: [u64; 5] = [5000, 6500, 8000, 5750, 7250];

#[test]
fn brokers_stopped_and_resumed_under_load_lose_nothing_and_blame_no_one() {
    // The four configurations at once, each on its own ports: the test
    // takes as long as one of them.
    let configurations = [("lb", 1), ("lb", 2), ("proxy", 1), ("proxy", 2)];
    let starved = Starved::default();
    let done = Arc::new(AtomicBool::new(false));
    let watch = starved.watch(Arc::clone(&done));
    let runs: Vec<_> = configurations
        .iter()
        .map(|&(mode, brokers)| {
            let starved = starved.clone();
            thread::spawn(move || {
                let pauses: Vec<Duration> = PAUSES_MS
                    .iter()
                    .map(|&ms| Duration::from_millis(ms))
                    .collect();
                stop_brokers_under_load(mode, brokers, &pauses, &starved)
            })
        })
        .collect();
    let mut problems = Vec::new();
    for (run, (mode, brokers)) in runs.into_iter().zip(configurations) {
        match run.join() {
            Ok(found) => problems.extend(found),
            Err(_) => problems.push(format!("{mode} x {brokers}: failed (see above)")),
        }
    }
    done.store(true, Ordering::Relaxed);
    watch.join().unwrap();
    eprintln!(
        "the machine starved this test {} times",
        starved.0.lock().unwrap().len()
    );
    assert!(problems.is_empty(), "{problems:#?}");
}
