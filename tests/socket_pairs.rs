//! `socket_pairs`: the exact frames each side of every legal pair sees.

mod common;

use std::time::{Duration, Instant};

use common::*;

const SOCKET_PAIRS: &str = env!("CARGO_BIN_EXE_socket_pairs");

/// One traced message: (side, socket, "send"/"recv", frames as printed).
type Event = (String, String, String, String);

/// Runs `socket_pairs` to the end and returns its trace, with random
/// identities written `identity ID` (checked for consistency first).
fn run(args: &[&str]) -> (Vec<Event>, Vec<String>) {
    let mut proc = Proc::start(SOCKET_PAIRS, args);
    proc.expect_exit(0, SOON);
    let lines = proc.stdout();
    let events = lines
        .iter()
        .filter_map(|line| {
            let parts: Vec<&str> = line.split_whitespace().collect();
            if parts.len() < 4
                || !["client", "server"].contains(&parts[0])
                || !["send", "recv"].contains(&parts[2])
            {
                return None;
            }
            let frames = line.split_once(parts[2]).unwrap().1.trim().to_string();
            Some((
                parts[0].to_string(),
                parts[1].to_string(),
                parts[2].to_string(),
                normalize(&frames),
            ))
        })
        .collect();
    (events, lines)
}

/// `identity 0x0080000029 | ...` becomes `identity ID | ...`; identities
/// set by name (`identity 0x736572766572 (b"server")`) stay as they are.
fn normalize(frames: &str) -> String {
    frames
        .split(" | ")
        .map(|frame| match frame.strip_prefix("identity 0x") {
            Some(hex) if !hex.contains(' ') => "identity ID".to_string(),
            _ => frame.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

fn side(events: &[Event], who: &str) -> Vec<String> {
    events
        .iter()
        .filter(|(side, ..)| side == who)
        .map(|(_, socket, dir, frames)| format!("{socket} {dir} {frames}"))
        .collect()
}

fn body(text: &str) -> String {
    format!("body b\"{text}\"")
}

/// Asserts both sides' traces, line by line.
fn expect(pair: &str, client: &[String], server: &[String]) {
    let (events, lines) = run(&[pair]);
    assert_eq!(
        side(&events, "client"),
        client,
        "client side of {pair}:\n{}",
        lines.join("\n")
    );
    assert_eq!(
        side(&events, "server"),
        server,
        "server side of {pair}:\n{}",
        lines.join("\n")
    );
    // "Several requests in flight": for the asynchronous clients, every
    // send comes before the first receive.
    let client_dirs: Vec<&str> = client
        .iter()
        .map(|l| l.split(' ').nth(1).unwrap())
        .collect();
    if pair.starts_with("dealer") || pair == "router-router" {
        let first_recv = client_dirs.iter().position(|d| *d == "recv").unwrap();
        assert!(
            client_dirs[first_recv..].iter().all(|d| *d == "recv"),
            "{pair}: {client_dirs:?}"
        );
        assert!(
            first_recv >= 3,
            "{pair}: only {first_recv} requests in flight"
        );
    }
}

#[test]
fn req_rep_frames() {
    let client: Vec<String> = (1..=3)
        .flat_map(|i| {
            [
                format!("REQ send {}", body(&format!("Hello {i}"))),
                format!("REQ recv {}", body(&format!("World {i}"))),
            ]
        })
        .collect();
    let server: Vec<String> = (1..=3)
        .flat_map(|i| {
            [
                format!("REP recv {}", body(&format!("Hello {i}"))),
                format!("REP send {}", body(&format!("World {i}"))),
            ]
        })
        .collect();
    expect("req-rep", &client, &server);
}

#[test]
fn dealer_rep_frames_the_dealer_adds_the_delimiter() {
    let mut client: Vec<String> = (1..=3)
        .map(|i| format!("DEALER send delimiter | {}", body(&format!("Hello {i}"))))
        .collect();
    client.extend(
        (1..=3).map(|i| format!("DEALER recv delimiter | {}", body(&format!("World {i}")))),
    );
    let server: Vec<String> = (1..=3)
        .flat_map(|i| {
            [
                format!("REP recv {}", body(&format!("Hello {i}"))),
                format!("REP send {}", body(&format!("World {i}"))),
            ]
        })
        .collect();
    expect("dealer-rep", &client, &server);
}

#[test]
fn req_router_frames_the_router_sees_identity_and_delimiter() {
    let client: Vec<String> = (1..=3)
        .flat_map(|i| {
            [
                format!("REQ send {}", body(&format!("Hello {i}"))),
                format!("REQ recv {}", body(&format!("World {i}"))),
            ]
        })
        .collect();
    let server: Vec<String> = (1..=3)
        .flat_map(|i| {
            [
                format!(
                    "ROUTER recv identity ID | delimiter | {}",
                    body(&format!("Hello {i}"))
                ),
                format!(
                    "ROUTER send identity ID | delimiter | {}",
                    body(&format!("World {i}"))
                ),
            ]
        })
        .collect();
    expect("req-router", &client, &server);
}

#[test]
fn dealer_router_frames_no_delimiter_and_replies_out_of_order() {
    let mut client: Vec<String> = (1..=3)
        .map(|i| format!("DEALER send {}", body(&format!("Hello {i}"))))
        .collect();
    client.extend(
        (1..=3)
            .rev()
            .map(|i| format!("DEALER recv {}", body(&format!("World {i}")))),
    );
    let mut server: Vec<String> = (1..=3)
        .map(|i| format!("ROUTER recv identity ID | {}", body(&format!("Hello {i}"))))
        .collect();
    server.extend(
        (1..=3)
            .rev()
            .map(|i| format!("ROUTER send identity ID | {}", body(&format!("World {i}")))),
    );
    expect("dealer-router", &client, &server);
}

#[test]
fn dealer_dealer_frames_no_envelope_at_all() {
    let mut client: Vec<String> = (1..=3)
        .map(|i| format!("DEALER send {}", body(&format!("Hello {i}"))))
        .collect();
    client.extend(
        (1..=3)
            .rev()
            .map(|i| format!("DEALER recv {}", body(&format!("World {i}")))),
    );
    let mut server: Vec<String> = (1..=3)
        .map(|i| format!("DEALER recv {}", body(&format!("Hello {i}"))))
        .collect();
    server.extend(
        (1..=3)
            .rev()
            .map(|i| format!("DEALER send {}", body(&format!("World {i}")))),
    );
    expect("dealer-dealer", &client, &server);
}

#[test]
fn router_router_frames_with_a_known_identity() {
    let to_server = r#"identity 0x736572766572 (b"server") | delimiter"#;
    let mut client = vec![
        r#"ROUTER send identity 0x6e6f626f6479 (b"nobody") | delimiter | body b"anyone there?""#
            .to_string(),
    ];
    client.extend(
        (1..=3).map(|i| format!("ROUTER send {to_server} | {}", body(&format!("Hello {i}")))),
    );
    client.extend(
        (1..=3)
            .rev()
            .map(|i| format!("ROUTER recv {to_server} | {}", body(&format!("World {i}")))),
    );
    let mut server: Vec<String> = (1..=3)
        .map(|i| {
            format!(
                "ROUTER recv identity ID | delimiter | {}",
                body(&format!("Hello {i}"))
            )
        })
        .collect();
    server.extend((1..=3).rev().map(|i| {
        format!(
            "ROUTER send identity ID | delimiter | {}",
            body(&format!("World {i}"))
        )
    }));
    expect("router-router", &client, &server);
    let (_, lines) = run(&["router-router"]);
    assert!(
        lines.iter().any(|l| l.contains("EHOSTUNREACH")),
        "{lines:#?}"
    );
}

#[test]
fn a_router_replies_to_the_identity_it_received() {
    let mut proc = Proc::start(SOCKET_PAIRS, &["dealer-router"]);
    proc.expect_exit(0, SOON);
    let raw = proc.stdout();
    let ids: Vec<&str> = raw
        .iter()
        .filter(|l| {
            l.starts_with("server ROUTER") && (l.contains(" send ") || l.contains(" recv "))
        })
        .map(|l| {
            l.split("identity ")
                .nth(1)
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
        })
        .collect();
    assert_eq!(ids.len(), 6);
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
}

#[test]
fn all_runs_the_six_pairs_quickly() {
    let started = Instant::now();
    let (events, lines) = run(&["all"]);
    let took = started.elapsed();
    let titles: Vec<&String> = lines.iter().filter(|l| l.starts_with("== ")).collect();
    assert_eq!(titles.len(), 6, "{titles:#?}");
    for pair in [
        "REQ-REP",
        "DEALER-REP",
        "REQ-ROUTER",
        "DEALER-ROUTER",
        "DEALER-DEALER",
        "ROUTER-ROUTER",
    ] {
        assert!(
            titles.iter().any(|t| t.starts_with(&format!("== {pair}:"))),
            "{pair} missing"
        );
    }
    // Every request answered: 3 replies received by each of the six clients.
    let replies = events
        .iter()
        .filter(|(side, _, dir, _)| side == "client" && dir == "recv")
        .count();
    assert_eq!(replies, 18);
    assert!(took < Duration::from_secs(10), "took {took:?}");
}

#[test]
fn invalid_pairs_are_refused_within_the_time_bound() {
    let started = Instant::now();
    let mut proc = Proc::start(SOCKET_PAIRS, &["invalid"]);
    proc.expect_exit(0, Duration::from_secs(8));
    let took = started.elapsed();
    let lines = proc.stdout();
    for pair in ["REQ-REQ", "REP-REP", "REQ-DEALER", "REP-ROUTER"] {
        let verdict = lines
            .iter()
            .find(|l| l.starts_with(&format!("{pair}: not working: 0 messages delivered")))
            .unwrap_or_else(|| panic!("no verdict for {pair}: {lines:#?}"));
        assert!(verdict.contains("0 handshakes completed"), "{verdict}");
    }
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[test]
fn the_two_ends_can_run_in_two_processes() {
    let port = free_port();
    let bind = format!("tcp://127.0.0.1:{port}");
    let mut server = Proc::start(
        SOCKET_PAIRS,
        &[
            "dealer-router",
            "--role",
            "server",
            "--endpoint",
            &bind,
            "--count",
            "4",
        ],
    );
    let mut client = Proc::start(
        SOCKET_PAIRS,
        &[
            "dealer-router",
            "--role",
            "client",
            "--endpoint",
            &bind,
            "--count",
            "4",
        ],
    );
    client.expect_exit(0, SOON);
    server.expect_exit(0, SOON);
    let received: Vec<String> = client
        .stdout()
        .into_iter()
        .filter(|l| l.contains("DEALER recv"))
        .collect();
    assert_eq!(received.len(), 4);
    assert!(received[0].ends_with(r#"body b"World 4""#), "{received:#?}");
    let served = server
        .stdout()
        .into_iter()
        .filter(|l| l.contains("ROUTER recv  identity 0x"))
        .count();
    assert_eq!(served, 4);
}

#[test]
fn a_bad_subcommand_gets_clap_usage() {
    let mut proc = Proc::start(SOCKET_PAIRS, &["rep-rep"]);
    proc.expect_exit(2, SOON);
    let stderr = proc.stderr().join("\n");
    assert!(
        stderr.contains("unrecognized subcommand 'rep-rep'"),
        "{stderr}"
    );
    assert!(stderr.contains("Usage: socket_pairs"), "{stderr}");
}

/// The messages that crossed the wire from `sender`, as `socket_pairs
/// --wire` printed them: each frame's body as a byte string, `+` between.
fn wire_messages(lines: &[String], sender: &str) -> Vec<String> {
    let head = format!("wire   #1 {sender} > ");
    lines
        .iter()
        .filter(|line| line.starts_with(&head) && line.contains("  message  "))
        .map(|line| {
            let frames = line.split("  message  ").nth(1).unwrap();
            frames
                .split(" + ")
                .map(|frame| frame.split(" (").next().unwrap())
                .collect::<Vec<_>>()
                .join(" + ")
        })
        .collect()
}

#[test]
fn with_wire_each_pair_shows_what_its_sockets_add_and_keep() {
    let numbered = |text: &str, prefix: &str| -> Vec<String> {
        (1..=2)
            .map(|i| format!("{prefix}b\"{text} {i}\""))
            .collect()
    };
    let delimited = "b\"\" + ";
    // (pair, client's messages on the wire, server's, in the order sent)
    let cases = [
        (
            "req-rep",
            numbered("Hello", delimited),
            numbered("World", delimited),
        ),
        (
            "dealer-rep",
            numbered("Hello", delimited),
            numbered("World", delimited),
        ),
        (
            "req-router",
            numbered("Hello", delimited),
            numbered("World", delimited),
        ),
        ("dealer-router", numbered("Hello", ""), {
            let mut replies = numbered("World", "");
            replies.reverse();
            replies
        }),
        ("dealer-dealer", numbered("Hello", ""), {
            let mut replies = numbered("World", "");
            replies.reverse();
            replies
        }),
        ("router-router", numbered("Hello", delimited), {
            let mut replies = numbered("World", delimited);
            replies.reverse();
            replies
        }),
    ];
    for (pair, client, server) in cases {
        let mut proc = Proc::start(SOCKET_PAIRS, &[pair, "--wire", "--count", "2"]);
        proc.expect_exit(0, SOON);
        let lines = proc.stdout();
        let all = lines.join("\n");
        assert_eq!(wire_messages(&lines, "client"), client, "{pair}:\n{all}");
        assert_eq!(wire_messages(&lines, "server"), server, "{pair}:\n{all}");
        // No ROUTER's identity frame ever leaves it: the names the ROUTERs
        // route by are not on the wire.
        for name in ["server", "nobody"] {
            assert!(
                !lines
                    .iter()
                    .filter_map(|l| l.strip_prefix("wire")?.split("  message  ").nth(1))
                    .any(|frames| frames.contains(name)),
                "{pair}: {name} on the wire:\n{all}"
            );
        }
        // Each side announced its socket type.
        let kinds = pair.to_uppercase();
        let (client_kind, server_kind) = kinds.split_once('-').unwrap();
        assert!(
            all.contains(&format!(
                "client > server  READY  Socket-Type={client_kind} "
            )),
            "{all}"
        );
        assert!(
            all.contains(&format!(
                "server > client  READY  Socket-Type={server_kind} "
            )),
            "{all}"
        );
    }
}

#[test]
fn wire_needs_both_ends_and_a_legal_pair() {
    let mut proc = Proc::start(SOCKET_PAIRS, &["invalid", "--wire"]);
    expect_usage_error(&mut proc, &["--wire", "six legal"]);
    let mut proc = Proc::start(SOCKET_PAIRS, &["req-rep", "--wire", "--role", "client"]);
    proc.expect_exit(2, SOON);
}
