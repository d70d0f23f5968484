//! Who may join: `--allow` and PLAIN credentials, checked by the ZAP handler
//! of `src/security/`, with pyzmq peers (tests/py/secure_peers.py) and our
//! own roles on the other side.
//!
//! A peer from another address comes from 127.0.0.2: libzmq picks the source
//! address of a connection with `tcp://127.0.0.2:0;127.0.0.1:PORT`, and the
//! whole of 127.0.0.0/8 is this machine. The pyzmq tests are skipped, with a
//! note, where no Python with pyzmq is found; `.ci/run` sets REQUIRE_PYZMQ=1.

mod common;

use std::time::Instant;

use common::*;

const USERS: &str = "# who may use the server\nalice:secret\n\nbob:pa:ss\n";

/// The same endpoint, connected to from 127.0.0.2.
fn from_127_0_0_2(endpoint: &str) -> String {
    let port = endpoint.rsplit(':').next().unwrap();
    format!("tcp://127.0.0.2:0;127.0.0.1:{port}")
}

/// A knocker: a new connection, refused, again and again (for at most 30 s,
/// or until dropped); returned once the first refusal is seen.
fn py_knocker(python: &str, endpoint: &str, options: &[&str], expect: &str) -> Proc {
    let script = py_script("secure_peers.py");
    let mut args = vec!["-u", script.as_str(), "knock", endpoint, "30"];
    args.extend_from_slice(options);
    let knocker = Proc::start(python, &args);
    knocker.wait_out_count(expect, 1, SOON);
    knocker
}

/// A client that will not be let in: waits for its refusal, leaves it waiting.
fn py_refused(python: &str, endpoint: &str, options: &[&str], expect: &str) -> Proc {
    let mut all = vec!["--timeout-ms", "50000"];
    all.extend_from_slice(options);
    let client = py_secure_client(python, endpoint, 1, &all);
    client.wait_out_count(expect, 1, SOON);
    client
}

fn py_served(python: &str, endpoint: &str, count: u32, options: &[&str]) {
    let mut client = py_secure_client(python, endpoint, count, options);
    client.expect_exit(0, SOON);
    let replies = client
        .stdout()
        .iter()
        .filter(|line| line.ends_with("got b'World'"))
        .count();
    assert_eq!(replies, count as usize, "{:#?}", client.stdout());
}

/// Our own reqrep_client, `count` requests, few retries.
fn our_client(endpoint: &str, count: u32, options: &[&str]) -> Proc {
    let count = count.to_string();
    let mut args = vec![
        "--connect",
        endpoint,
        "--count",
        count.as_str(),
        "--interval-ms",
        "0",
        "--timeout-ms",
        "1500",
        "--retries",
        "0",
    ];
    args.extend_from_slice(options);
    Proc::start(CLIENT, &args)
}

#[test]
fn allow_list_refuses_a_pyzmq_peer_from_outside_and_serves_one_inside() {
    let Some(python) = pyzmq() else { return };
    let (server, endpoint) = start_server(&["--allow", "127.0.0.1"]);

    let _outside = py_refused(
        &python,
        &from_127_0_0_2(&endpoint),
        &[],
        "handshake failed: auth 400",
    );
    let line = server.wait_log("REP: refused 127.0.0.2", SOON);
    assert!(line.contains("WARN") && line.contains("--allow"), "{line}");

    py_served(&python, &endpoint, 2, &[]);
    server.wait_log_count(r#"request b"Hello""#, 2, SOON);
    assert_eq!(server.log_lines(r#"request b"Hello""#).len(), 2);
}

#[test]
fn allow_list_takes_cidrs_and_our_refused_client_says_why() {
    let (server, endpoint) = start_server(&["--allow", "192.168.0.0/16,127.0.0.1/32"]);

    let mut outside = our_client(&from_127_0_0_2(&endpoint), 1, &[]);
    outside.expect_exit(1, SOON);
    let why = outside.log_lines("refused us");
    assert!(
        why.iter()
            .any(|line| line.contains("400") && line.contains("--allow")),
        "{why:#?}"
    );
    // Its last word names the refusal, not a server that might be down.
    let error = outside.stderr().pop().unwrap_or_default();
    assert!(
        error.starts_with("error: could not send request #1:")
            && error.contains("refused this client")
            && !error.contains("is the server running"),
        "{error}"
    );
    server.wait_log("REP: refused 127.0.0.2", SOON);

    let mut inside = our_client(&endpoint, 2, &[]);
    inside.expect_exit(0, SOON);
    assert_eq!(reply_lines(&inside).len(), 2);
}

#[test]
fn plain_credentials_right_wrong_and_missing_from_pyzmq() {
    let Some(python) = pyzmq() else { return };
    let dir = TempDir::new("plain-py");
    let users = dir.file("users.txt", USERS);
    let (server, endpoint) = start_server(&["--plain-users", &users]);

    py_served(&python, &endpoint, 2, &["--plain", "alice", "secret"]);
    // Only the first ':' separates the user from the password.
    py_served(&python, &endpoint, 1, &["--plain", "bob", "pa:ss"]);

    let wrong = py_refused(
        &python,
        &endpoint,
        &["--plain", "alice", "guess"],
        "handshake failed: auth 400",
    );
    server.wait_log(
        r#"REP: refused 127.0.0.1: PLAIN user "alice": wrong password"#,
        SOON,
    );
    drop(wrong);
    let unknown = py_refused(
        &python,
        &endpoint,
        &["--plain", "mallory", "secret"],
        "handshake failed: auth 400",
    );
    server.wait_log(r#"PLAIN user "mallory": unknown user"#, SOON);
    drop(unknown);

    // No credentials at all: the client speaks NULL, the server PLAIN, and
    // libzmq ends the handshake before any ZAP request (mechanism mismatch);
    // the client notices the mismatch or the hang-up, whichever comes first.
    let _missing = py_refused(&python, &endpoint, &[], "handshake failed");
    server.wait_log("handshake", SOON);
    // Nobody but the right users ever got a reply.
    server.wait_log_count(r#"request b"Hello""#, 3, SOON);
    assert_eq!(server.log_lines(r#"request b"Hello""#).len(), 3);
}

#[test]
fn plain_credentials_right_wrong_and_missing_from_our_client() {
    let dir = TempDir::new("plain-ours");
    let users = dir.file("users.txt", USERS);
    let right = dir.file("alice.password", "secret\n");
    let wrong = dir.file("guess.password", "guess\n");
    let (server, endpoint) = start_server(&["--plain-users", &users]);

    let mut client = our_client(
        &endpoint,
        2,
        &["--plain-user", "alice", "--plain-password-file", &right],
    );
    client.expect_exit(0, SOON);
    assert_eq!(reply_lines(&client).len(), 2);

    let mut client = our_client(
        &endpoint,
        1,
        &["--plain-user", "alice", "--plain-password-file", &wrong],
    );
    client.expect_exit(1, SOON);
    let why = client.log_lines("refused us");
    assert!(
        why.iter()
            .any(|line| line.contains("400") && line.contains("--plain-user")),
        "{why:#?}"
    );
    server.wait_log(r#"PLAIN user "alice": wrong password"#, SOON);

    let mut client = our_client(&endpoint, 1, &[]);
    client.expect_exit(1, SOON);
    let why = client.log_lines("security mechanism");
    assert!(!why.is_empty(), "{:#?}", client.stderr());
}

/// One rule for a password, on both sides: a line's end (`\n` or `\r\n`)
/// is not part of it, and nothing else is removed. So `alice:secret ` in
/// the users file is the password `secret ` with its space: a password
/// file holding `secret ` logs in, as pyzmq does when given `secret `, and
/// `secret` alone is a wrong password.
#[test]
fn a_password_ending_in_a_space_logs_in_on_both_sides() {
    let dir = TempDir::new("plain-space");
    let users = dir.file("users.txt", "alice:secret \r\nbob: two words\n");
    let (server, endpoint) = start_server(&["--plain-users", &users]);

    for (user, file, admitted) in [
        ("alice", "secret \n", true),
        ("alice", "secret ", true),
        ("alice", "secret \r\n", true),
        ("bob", " two words\n", true),
        ("alice", "secret\n", false),
        ("bob", "two words\n", false),
    ] {
        let password = dir.file("password", file);
        let mut client = our_client(
            &endpoint,
            1,
            &["--plain-user", user, "--plain-password-file", &password],
        );
        let status = client.wait_exit(SOON).expect("the client ends");
        assert_eq!(
            status.code(),
            Some(if admitted { 0 } else { 1 }),
            "{user} with a password file holding {file:?}: {:#?}",
            client.stderr()
        );
    }
    server.wait_log_count(r#"request b"Hello""#, 4, SOON);
    let wrong = server.log_lines("wrong password");
    assert!(
        wrong.iter().any(|l| l.contains(r#"PLAIN user "alice""#))
            && wrong.iter().any(|l| l.contains(r#"PLAIN user "bob""#)),
        "{wrong:#?}"
    );

    let Some(python) = pyzmq() else { return };
    py_served(&python, &endpoint, 1, &["--plain", "alice", "secret "]);
    let _refused = py_refused(
        &python,
        &endpoint,
        &["--plain", "alice", "secret"],
        "handshake failed: auth 400",
    );
    assert_eq!(server.log_lines(r#"request b"Hello""#).len(), 5);
}

#[test]
fn the_address_is_checked_before_the_password() {
    let Some(python) = pyzmq() else { return };
    let dir = TempDir::new("allow-plain");
    let users = dir.file("users.txt", USERS);
    let (server, endpoint) = start_server(&["--allow", "127.0.0.1", "--plain-users", &users]);

    let _outside = py_refused(
        &python,
        &from_127_0_0_2(&endpoint),
        &["--plain", "alice", "secret"],
        "handshake failed: auth 400",
    );
    let line = server.wait_log("REP: refused 127.0.0.2", SOON);
    assert!(line.contains("--allow"), "{line}");
    py_served(&python, &endpoint, 1, &["--plain", "alice", "secret"]);
}

#[test]
fn refused_peers_never_disturb_an_admitted_client_nor_flood_the_log() {
    let Some(python) = pyzmq() else { return };
    let dir = TempDir::new("sentinel");
    let users = dir.file("users.txt", USERS);
    let password = dir.file("alice.password", "secret");
    let (server, endpoint) = start_server(&["--allow", "127.0.0.1", "--plain-users", &users]);

    let sentinel = Proc::start(
        CLIENT,
        &[
            "--connect",
            &endpoint,
            "--interval-ms",
            "20",
            "--timeout-ms",
            "2000",
            "--plain-user",
            "alice",
            "--plain-password-file",
            &password,
        ],
    );
    sentinel.wait_out_count(" got ", 5, SOON);

    // Three knockers, each refused many times a second.
    let started = Instant::now();
    let knockers = [
        py_knocker(
            &python,
            &endpoint,
            &["--plain", "alice", "guess"],
            "auth 400",
        ),
        py_knocker(&python, &endpoint, &["--plain", "eve", "x"], "auth 400"),
        py_knocker(
            &python,
            &from_127_0_0_2(&endpoint),
            &["--plain", "alice", "secret"],
            "auth 400",
        ),
    ];
    // Repeats are counted, and summed up at most once a second.
    server.wait_log("not logged one by one", SOON);
    let served_so_far = reply_lines(&sentinel).len();
    sentinel.wait_out_count(" got ", served_so_far + 20, SOON);
    let knocked_for = started.elapsed();
    drop(knockers);

    assert!(
        sentinel.log_lines("WARN").is_empty() && sentinel.log_lines("ERROR").is_empty(),
        "the admitted client noticed the knockers: {:#?}",
        sentinel.stderr()
    );
    // One line for each knocker, with its address and reason; the rest in
    // summaries, of which there is at most one a second.
    let one_by_one = server.log_lines("REP: refused ");
    assert_eq!(one_by_one.len(), 3, "{one_by_one:#?}");
    for (needle, reason) in [
        ("127.0.0.1", "wrong password"),
        ("127.0.0.1", "unknown user"),
        ("127.0.0.2", "--allow"),
    ] {
        assert!(
            one_by_one
                .iter()
                .any(|l| l.contains(needle) && l.contains(reason)),
            "{needle} {reason}: {one_by_one:#?}"
        );
    }
    let summaries = server.log_lines("not logged one by one");
    let seconds = knocked_for.as_secs() + 2;
    assert!(
        summaries.len() as u64 <= seconds,
        "{} summaries in about {seconds} s: {summaries:#?}",
        summaries.len()
    );
}

#[test]
fn the_broker_checks_clients_and_workers_and_names_the_side() {
    let dir = TempDir::new("broker-plain");
    let users = dir.file("users.txt", "client:c-pass\nworker:w-pass\n");
    let client_password = dir.file("client.password", "c-pass\n");
    let worker_password = dir.file("worker.password", "w-pass\n");
    let wrong_password = dir.file("wrong.password", "nope\n");
    let (broker, frontend, backend) = start_broker("proxy", &["--plain-users", &users]);

    let _worker = Proc::start(
        WORKER,
        &[
            "--connect",
            &backend,
            "--plain-user",
            "worker",
            "--plain-password-file",
            &worker_password,
        ],
    );
    broker.wait_log(
        r#"backend: admitted 127.0.0.1 as PLAIN user "worker""#,
        SOON,
    );
    let mut client = Proc::start(
        BROKER_CLIENT,
        &[
            "--connect",
            &frontend,
            "--count",
            "3",
            "--interval-ms",
            "0",
            "--plain-user",
            "client",
            "--plain-password-file",
            &client_password,
        ],
    );
    client.expect_exit(0, SOON);
    assert_eq!(reply_lines(&client).len(), 3);

    let _intruder = Proc::start(
        WORKER,
        &[
            "--connect",
            &backend,
            "--plain-user",
            "worker",
            "--plain-password-file",
            &wrong_password,
        ],
    );
    broker.wait_log(
        r#"backend: refused 127.0.0.1: PLAIN user "worker": wrong password"#,
        SOON,
    );
    let mut stranger = our_client(
        &frontend,
        1,
        &[
            "--plain-user",
            "client",
            "--plain-password-file",
            &wrong_password,
        ],
    );
    stranger.expect_exit(1, SOON);
    broker.wait_log(
        r#"frontend: refused 127.0.0.1: PLAIN user "client": wrong password"#,
        SOON,
    );
}

#[test]
fn the_zap_handler_never_holds_up_an_exit() {
    let dir = TempDir::new("exit");
    let users = dir.file("users.txt", USERS);
    let (mut server, _) = start_server(&["--allow", "127.0.0.1", "--plain-users", &users]);
    server.signal(libc::SIGTERM);
    server.expect_exit(0, SOON);

    let (mut broker, _, _) = start_broker("lb", &["--allow", "127.0.0.0/8"]);
    broker.signal(libc::SIGTERM);
    broker.expect_exit(0, SOON);
}

#[test]
fn bad_security_options_are_one_line_and_exit_2() {
    let dir = TempDir::new("bad-options");
    let bind = ["--bind", "tcp://127.0.0.1:*"];
    let with_bind = |more: &[&'static str]| -> Vec<&'static str> {
        let mut all = bind.to_vec();
        all.extend_from_slice(more);
        all
    };
    usage_error(
        SERVER,
        &with_bind(&["--allow", "10.0.0.1/8"]),
        &[],
        &["--allow", "10.0.0.0/8"],
    );
    usage_error(
        SERVER,
        &with_bind(&["--allow", "300.1.1.1"]),
        &[],
        &["--allow", "300.1.1.1"],
    );
    usage_error(
        SERVER,
        &with_bind(&["--allow", "::1/129"]),
        &[],
        &["--allow", "129"],
    );

    let missing = dir.path("missing.txt");
    usage_error(
        SERVER,
        &[&bind[..], &["--plain-users", &missing]].concat(),
        &[],
        &["--plain-users", "missing.txt"],
    );
    let malformed = dir.file("malformed.txt", "alice:secret\n# fine\nhunter2\n");
    let said = usage_error(
        SERVER,
        &[&bind[..], &["--plain-users", &malformed]].concat(),
        &[],
        &["malformed.txt", "line 3"],
    );
    assert!(!said.contains("hunter2"), "a password was echoed: {said}");
    // Nothing is trimmed: a user name with a space, or an empty password,
    // would be a user nobody can log in as.
    for (file, text, says) in [
        (
            "spaced.txt",
            "alice :secret\n",
            "line 1: the user name 'alice '",
        ),
        (
            "empty.txt",
            "alice:secret\nguest:\n",
            "line 2: the password",
        ),
    ] {
        let users = dir.file(file, text);
        let said = usage_error(
            SERVER,
            &[&bind[..], &["--plain-users", &users]].concat(),
            &[],
            &[file, says],
        );
        assert!(!said.contains("secret"), "a password was echoed: {said}");
    }

    let users = dir.file("users.txt", USERS);
    let key = dir.file("server.key", "a".repeat(40));
    usage_error(
        SERVER,
        &[
            &bind[..],
            &["--plain-users", &users, "--curve-secret-key-file", &key],
        ]
        .concat(),
        &[],
        &["--plain-users", "--curve-secret-key-file"],
    );
    usage_error(
        CLIENT,
        &["--plain-user", "alice"],
        &[],
        &["--plain-password-file"],
    );
    let password = dir.file("p", "secret");
    usage_error(
        CLIENT,
        &[
            "--plain-user",
            "alice",
            "--plain-password-file",
            &password,
            "--curve-server-key",
            &"a".repeat(40),
            "--curve-secret-key-file",
            &key,
        ],
        &[],
        &["--plain-user", "--curve-server-key"],
    );
    let empty = dir.file("empty.password", "\n");
    usage_error(
        WORKER,
        &["--plain-user", "w", "--plain-password-file", &empty],
        &[],
        &["--plain-password-file", "empty"],
    );
}

#[test]
fn empty_security_variables_mean_no_access_control() {
    // What a compose file passes for an unset `${ALLOW:-}`.
    let server = Proc::start_with_env(
        SERVER,
        &["--bind", "tcp://127.0.0.1:*"],
        &[
            ("ALLOW", ""),
            ("PLAIN_USERS", ""),
            ("CURVE_SECRET_KEY_FILE", ""),
            ("CURVE_CLIENTS", ""),
        ],
    );
    let endpoint = server.wait_endpoints("REP listening on").remove(0);
    let mut client = Proc::start_with_env(
        CLIENT,
        &["--connect", &endpoint, "--count", "1"],
        &[
            ("PLAIN_USER", ""),
            ("PLAIN_PASSWORD_FILE", ""),
            ("CURVE_SERVER_KEY", ""),
            ("CURVE_SECRET_KEY_FILE", ""),
        ],
    );
    client.expect_exit(0, SOON);
    assert!(
        server.log_lines("who may join").is_empty(),
        "{:#?}",
        server.stderr()
    );
}

#[test]
fn allow_comes_from_the_environment_too() {
    let server = Proc::start_with_env(
        SERVER,
        &["--bind", "tcp://127.0.0.1:*"],
        &[("ALLOW", "10.0.0.0/8,127.0.0.1")],
    );
    let endpoint = server.wait_endpoints("REP listening on").remove(0);
    server.wait_log("who may join", SOON);
    let mut outside = our_client(&from_127_0_0_2(&endpoint), 1, &[]);
    outside.expect_exit(1, SOON);
    server.wait_log("REP: refused 127.0.0.2", SOON);
}

/// An IPv4 address written in its IPv4-mapped IPv6 form, as libzmq shows
/// an IPv4 peer of an IPv6 socket, is that IPv4 address: a single one
/// (`::ffff:127.0.0.1`) or a block (`::ffff:127.0.0.0/104`, 127.0.0.0/8).
#[test]
fn allow_takes_ipv4_addresses_in_their_ipv6_mapped_form() {
    let (server, endpoint) = start_server(&["--allow", "::ffff:127.0.0.1"]);
    let who = server.wait_log("who may join", SOON);
    assert!(who.ends_with("from 127.0.0.1/32"), "{who}");
    let mut inside = our_client(&endpoint, 1, &[]);
    inside.expect_exit(0, SOON);
    let mut outside = our_client(&from_127_0_0_2(&endpoint), 1, &[]);
    outside.expect_exit(1, SOON);
    server.wait_log(
        "REP: refused 127.0.0.2: address not in --allow (127.0.0.1/32)",
        SOON,
    );

    let (server, endpoint) = start_server(&["--allow", "::ffff:127.0.0.0/104"]);
    let who = server.wait_log("who may join", SOON);
    assert!(who.ends_with("from 127.0.0.0/8"), "{who}");
    for endpoint in [endpoint.clone(), from_127_0_0_2(&endpoint)] {
        let mut client = our_client(&endpoint, 1, &[]);
        client.expect_exit(0, SOON);
    }
    assert!(
        server.log_lines("refused").is_empty(),
        "{:#?}",
        server.stderr()
    );
}

/// A list of no one (only blanks and commas) is a mistake, not a list
/// that lets everyone in: exit code 2 and one line, from the command line
/// and from the environment. An empty value stays "not set".
#[test]
fn an_allow_list_of_no_address_is_a_usage_error() {
    let bind = ["--bind", "tcp://127.0.0.1:*"];
    for value in [" , ", ",", " "] {
        usage_error(
            SERVER,
            &[&bind[..], &["--allow", value]].concat(),
            &[],
            &["--allow", "lists no address"],
        );
        usage_error(
            SERVER,
            &bind,
            &[("ALLOW", value)],
            &["--allow", "lists no address"],
        );
    }
    usage_error(
        BROKER,
        &[
            "--frontend",
            "tcp://127.0.0.1:*",
            "--backend",
            "tcp://127.0.0.1:*",
            "--allow",
            " , ",
        ],
        &[],
        &["--allow", "lists no address"],
    );
}
