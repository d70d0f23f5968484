//! CurveZMQ: encrypted connections, the server proven by its public key,
//! each client admitted by its own (the guide's "Ironhouse").
//!
//! The `zmq` crate's bundled libzmq has no CURVE, so in the default build
//! these tests print `skipped: ...`, except the one that checks that a CURVE
//! option is then refused in one line. With the system libzmq
//! (`cargo test --config .cargo/system-libzmq.toml`) they run, and
//! REQUIRE_CURVE=1 (set by `.ci/run`) makes a build without CURVE fail them.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;

use common::*;
use zmq_reqrep::bench::Report;

const KEYGEN: &str = env!("CARGO_BIN_EXE_curve_keygen");
const BENCH: &str = env!("CARGO_BIN_EXE_bench");

/// Whether this build has CURVE; says so when it has not.
fn curve() -> bool {
    if zmq::has("curve") == Some(true) {
        return true;
    }
    if std::env::var("REQUIRE_CURVE").as_deref() == Ok("1") {
        panic!(
            "REQUIRE_CURVE=1 but this build's libzmq has no CURVE \
             (cargo test --config .cargo/system-libzmq.toml)"
        );
    }
    skipped(
        "this build's libzmq has no CURVE (cargo test --config .cargo/system-libzmq.toml runs it)",
    );
    false
}

/// Makes NAME.key and NAME.pub in `dir` with curve_keygen: (secret key
/// file, public key).
fn keypair(dir: &TempDir, name: &str) -> (String, String) {
    let mut keygen = Proc::start(KEYGEN, &[&dir.path(name)]);
    keygen.expect_exit(0, SOON);
    let public = fs::read_to_string(dir.dir().join(format!("{name}.pub"))).unwrap();
    (dir.path(&format!("{name}.key")), public.trim().to_string())
}

/// The keys of one test: a server, two admitted clients, one stranger.
struct Keys {
    dir: TempDir,
    server_secret: String,
    server_public: String,
    client_secret: String,
    worker_secret: String,
    stranger_secret: String,
    stranger_public: String,
    /// The file of admitted client keys (client and worker).
    clients: String,
}

impl Keys {
    fn new(test: &str) -> Keys {
        let dir = TempDir::new(test);
        let (server_secret, server_public) = keypair(&dir, "server");
        let (client_secret, client_public) = keypair(&dir, "client");
        let (worker_secret, worker_public) = keypair(&dir, "worker");
        let (stranger_secret, stranger_public) = keypair(&dir, "stranger");
        let clients = dir.file(
            "clients.txt",
            format!("# admitted\n{client_public}\n\n{worker_public}   # a worker\n"),
        );
        Keys {
            dir,
            server_secret,
            server_public,
            client_secret,
            worker_secret,
            stranger_secret,
            stranger_public,
            clients,
        }
    }

    fn server_options(&self) -> Vec<&str> {
        vec![
            "--curve-secret-key-file",
            &self.server_secret,
            "--curve-clients",
            &self.clients,
        ]
    }

    fn client_options<'a>(&'a self, secret: &'a str) -> Vec<&'a str> {
        vec![
            "--curve-server-key",
            &self.server_public,
            "--curve-secret-key-file",
            secret,
        ]
    }
}

/// A warning of the server's connection monitor about a failed handshake.
fn wait_handshake_warning(server: &Proc) {
    let line = server.wait_log("handshake", SOON);
    assert!(line.contains("WARN"), "{line}");
}

#[test]
fn without_curve_every_curve_option_says_how_to_get_it() {
    if zmq::has("curve") == Some(true) {
        skipped("this build has CURVE: its absence is checked in the default build");
        return;
    }
    let dir = TempDir::new("no-curve");
    let key = dir.file("any.key", format!("{}\n", "a".repeat(40)));
    let server_key = "a".repeat(40);
    let new = dir.path("new");
    let cases: Vec<(&str, Vec<&str>)> = vec![
        (
            SERVER,
            vec![
                "--bind",
                "tcp://127.0.0.1:*",
                "--curve-secret-key-file",
                &key,
            ],
        ),
        (
            BROKER,
            vec![
                "--frontend",
                "tcp://127.0.0.1:*",
                "--backend",
                "tcp://127.0.0.1:*",
                "--curve-secret-key-file",
                &key,
            ],
        ),
        (
            CLIENT,
            vec![
                "--curve-server-key",
                &server_key,
                "--curve-secret-key-file",
                &key,
            ],
        ),
        (
            BROKER_CLIENT,
            vec![
                "--curve-server-key",
                &server_key,
                "--curve-secret-key-file",
                &key,
            ],
        ),
        (
            WORKER,
            vec![
                "--curve-server-key",
                &server_key,
                "--curve-secret-key-file",
                &key,
            ],
        ),
        (
            WORKER,
            vec![
                "--mode",
                "lb",
                "--curve-server-key",
                &server_key,
                "--curve-secret-key-file",
                &key,
            ],
        ),
        (
            WORKER,
            vec![
                "--curve-server-key-file",
                &key,
                "--curve-secret-key-file",
                &key,
            ],
        ),
        (KEYGEN, vec![&new]),
    ];
    for (exe, args) in cases {
        let mut proc = Proc::start(exe, &args);
        expect_usage_error(&mut proc, &["no CURVE", ".cargo/system-libzmq.toml"]);
        // Nothing was sent in the clear instead.
        assert!(proc.stdout().is_empty(), "{exe}: {:#?}", proc.stdout());
    }
    assert!(!dir.dir().join("new.key").exists());
}

#[test]
fn keygen_writes_a_secret_only_its_owner_can_read_and_never_overwrites_by_default() {
    if !curve() {
        return;
    }
    let dir = TempDir::new("keygen");
    let (secret_file, public) = keypair(&dir, "broker");
    let mode = fs::metadata(&secret_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{mode:o}");
    let secret = fs::read_to_string(&secret_file).unwrap();
    assert_eq!(secret.trim().len(), 40);
    assert_eq!(public.len(), 40);
    // The public key belongs to the secret one.
    let derived = zmq_reqrep::security::curve::SecretKey::parse(secret.trim())
        .unwrap()
        .public()
        .unwrap();
    assert_eq!(derived.to_string(), public);

    usage_error(
        KEYGEN,
        &[&dir.path("broker")],
        &[],
        &["broker.key", "--force"],
    );
    assert_eq!(
        fs::read_to_string(&secret_file).unwrap(),
        secret,
        "overwritten"
    );

    let mut forced = Proc::start(KEYGEN, &[&dir.path("broker"), "--force"]);
    forced.expect_exit(0, SOON);
    assert_ne!(fs::read_to_string(&secret_file).unwrap(), secret);
    let mode = fs::metadata(&secret_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{mode:o} after --force");

    // A directory that does not exist yet: one line that says to make it.
    let missing = dir.path("keys");
    usage_error(
        KEYGEN,
        &[&format!("{missing}/client")],
        &[],
        &["client.key", &format!("mkdir -p {missing}")],
    );
}

#[test]
fn pyzmq_curve_clients_right_key_served_the_rest_refused_and_logged() {
    if !curve() {
        return;
    }
    let Some(python) = pyzmq() else { return };
    let keys = Keys::new("curve-py");
    let (server, endpoint) = start_server(&keys.server_options());
    server.wait_log(&format!("public key {}", keys.server_public), SOON);

    let mut right = py_secure_client(
        &python,
        &endpoint,
        2,
        &["--curve", &keys.server_public, &keys.client_secret],
    );
    right.expect_exit(0, SOON);
    assert_eq!(
        right
            .stdout()
            .iter()
            .filter(|l| l.ends_with("got b'World'"))
            .count(),
        2
    );

    let unlisted = py_secure_client(
        &python,
        &endpoint,
        1,
        &[
            "--timeout-ms",
            "50000",
            "--curve",
            &keys.server_public,
            &keys.stranger_secret,
        ],
    );
    unlisted.wait_out_count("handshake failed: auth 400", 1, SOON);
    let line = server.wait_log("REP: refused 127.0.0.1: CURVE client key", SOON);
    assert!(
        line.contains(&keys.stranger_public) && line.contains("--curve-clients"),
        "{line}"
    );
    drop(unlisted);

    // A wrong server key: the server cannot open the client's HELLO and
    // hangs up, before any ZAP request; its connection monitor logs it.
    let wrong_server = py_secure_client(
        &python,
        &endpoint,
        1,
        &[
            "--timeout-ms",
            "50000",
            "--curve",
            &keys.stranger_public,
            &keys.client_secret,
        ],
    );
    wrong_server.wait_out_count("handshake failed: no detail", 1, SOON);
    wait_handshake_warning(&server);
    drop(wrong_server);

    // Plaintext: a mechanism mismatch, or the hang-up that follows it.
    let plaintext = py_secure_client(&python, &endpoint, 1, &["--timeout-ms", "50000"]);
    plaintext.wait_out_count("handshake failed", 1, SOON);
    drop(plaintext);
    // Only the admitted client's two requests ever reached the server.
    server.wait_log_count(r#"request b"Hello""#, 2, SOON);
    assert_eq!(server.log_lines(r#"request b"Hello""#).len(), 2);
}

#[test]
fn our_client_and_workers_talk_to_our_broker_over_curve_in_both_modes() {
    if !curve() {
        return;
    }
    let keys = Keys::new("curve-broker");
    for mode in ["proxy", "lb"] {
        let (broker, frontend, backend) = start_broker(mode, &keys.server_options());
        // The workers read the server's key from its .pub file, through
        // the environment, as a compose file with Docker secrets would.
        let server_pub = keys.dir.path("server.pub");
        let worker_env = [
            ("CURVE_SERVER_KEY_FILE", server_pub.as_str()),
            ("CURVE_SECRET_KEY_FILE", keys.worker_secret.as_str()),
        ];
        let worker_args = ["--connect", backend.as_str(), "--mode", mode];
        let _workers: Vec<Proc> = (0..2)
            .map(|_| Proc::start_with_env(WORKER, &worker_args, &worker_env))
            .collect();
        broker.wait_log_count("backend: admitted 127.0.0.1 as CURVE client", 2, SOON);

        let mut client_args = vec![
            "--connect",
            frontend.as_str(),
            "--count",
            "5",
            "--interval-ms",
            "0",
        ];
        client_args.extend(keys.client_options(&keys.client_secret));
        let mut client = Proc::start(BROKER_CLIENT, &client_args);
        client.expect_exit(0, SOON);
        assert_eq!(reply_lines(&client).len(), 5, "{mode}");
        broker.wait_log("frontend: admitted 127.0.0.1 as CURVE client", SOON);
    }
}

#[test]
fn our_client_with_an_unlisted_key_says_it_was_refused() {
    if !curve() {
        return;
    }
    let keys = Keys::new("curve-ours");
    let (server, endpoint) = start_server(&keys.server_options());
    let mut args = vec![
        "--connect",
        endpoint.as_str(),
        "--count",
        "1",
        "--timeout-ms",
        "1500",
        "--retries",
        "0",
    ];
    args.extend(keys.client_options(&keys.stranger_secret));
    let mut client = Proc::start(CLIENT, &args);
    client.expect_exit(1, SOON);
    let why = client.log_lines("refused us");
    assert!(
        why.iter()
            .any(|l| l.contains("400") && l.contains("--curve-clients")),
        "{:#?}",
        client.stderr()
    );
    server.wait_log(&format!("CURVE client key {}", keys.stranger_public), SOON);

    // A wrong server key: the server hangs up without a word.
    let mut args = vec![
        "--connect",
        endpoint.as_str(),
        "--count",
        "1",
        "--timeout-ms",
        "1500",
        "--retries",
        "0",
    ];
    args.extend([
        "--curve-server-key",
        keys.stranger_public.as_str(),
        "--curve-secret-key-file",
        keys.client_secret.as_str(),
    ]);
    let mut client = Proc::start(CLIENT, &args);
    client.expect_exit(1, SOON);
    let why = client.log_lines("--curve-server-key");
    assert!(!why.is_empty(), "{:#?}", client.stderr());
}

#[test]
fn an_admitted_client_keeps_being_served_while_refused_ones_knock() {
    if !curve() {
        return;
    }
    let Some(python) = pyzmq() else { return };
    let keys = Keys::new("curve-sentinel");
    let (server, endpoint) = start_server(&keys.server_options());
    let mut args = vec![
        "--connect",
        endpoint.as_str(),
        "--interval-ms",
        "20",
        "--timeout-ms",
        "2000",
    ];
    args.extend(keys.client_options(&keys.client_secret));
    let sentinel = Proc::start(CLIENT, &args);
    sentinel.wait_out_count(" got ", 5, SOON);

    // New connections again and again, each refused.
    let knock = |options: &[&str], expect: &str| {
        let script = py_script("secure_peers.py");
        let mut args = vec!["-u", script.as_str(), "knock", endpoint.as_str(), "30"];
        args.extend_from_slice(options);
        let knocker = Proc::start(&python, &args);
        knocker.wait_out_count(expect, 1, SOON);
        knocker
    };
    let knockers = [
        knock(
            &["--curve", &keys.server_public, &keys.stranger_secret],
            "auth 400",
        ),
        knock(
            &["--curve", &keys.stranger_public, &keys.client_secret],
            "no detail",
        ),
        // Plaintext: the server hangs up on the mechanism mismatch, and the
        // client may notice the mismatch or the hang-up first.
        knock(&[], "handshake failed"),
    ];
    server.wait_log("not logged one by one", SOON);
    let so_far = reply_lines(&sentinel).len();
    sentinel.wait_out_count(" got ", so_far + 20, SOON);
    drop(knockers);
    assert!(
        sentinel.log_lines("WARN").is_empty() && sentinel.log_lines("ERROR").is_empty(),
        "{:#?}",
        sentinel.stderr()
    );
}

#[test]
fn curve_key_mistakes_are_one_line_and_exit_2() {
    if !curve() {
        return;
    }
    let keys = Keys::new("curve-mistakes");
    let bind = ["--bind", "tcp://127.0.0.1:*"];
    let short = keys.dir.file("short.key", "a".repeat(39));
    let server_pub = keys.dir.path("server.pub");
    let bad_clients = keys.dir.file(
        "bad-clients.txt",
        format!("{}\nnot-a-key\n", keys.server_public),
    );
    let cases: Vec<(&str, Vec<&str>, Vec<&str>)> = vec![
        (
            SERVER,
            [&bind[..], &["--curve-secret-key-file", &short]].concat(),
            vec!["short.key", "40"],
        ),
        (
            SERVER,
            [
                &bind[..],
                &[
                    "--curve-secret-key-file",
                    &keys.server_secret,
                    "--curve-clients",
                    &bad_clients,
                ],
            ]
            .concat(),
            vec!["bad-clients.txt", "line 2"],
        ),
        (
            SERVER,
            [&bind[..], &["--curve-clients", &keys.clients]].concat(),
            vec!["--curve-clients", "--curve-secret-key-file"],
        ),
        (
            CLIENT,
            vec![
                "--curve-server-key",
                "too-short",
                "--curve-secret-key-file",
                &keys.client_secret,
            ],
            vec!["--curve-server-key", "40"],
        ),
        (
            CLIENT,
            vec![
                "--curve-server-key",
                &keys.server_public,
                "--curve-server-key-file",
                &server_pub,
                "--curve-secret-key-file",
                &keys.client_secret,
            ],
            vec!["--curve-server-key-file", "once"],
        ),
        (
            CLIENT,
            vec![
                "--curve-server-key-file",
                &short,
                "--curve-secret-key-file",
                &keys.client_secret,
            ],
            vec!["--curve-server-key-file", "short.key", "public key"],
        ),
        (
            CLIENT,
            vec!["--curve-server-key", &keys.server_public],
            vec!["--curve-server-key", "--curve-secret-key-file"],
        ),
    ];
    for (exe, args, needles) in cases {
        usage_error(exe, &args, &[], &needles);
    }
}

#[test]
fn the_bench_measures_curve_next_to_plaintext() {
    if !curve() {
        return;
    }
    for scenario in ["reqrep", "broker"] {
        let mut bench = Proc::start(BENCH, &[scenario, "--tiny", "--json"]);
        bench.expect_exit(0, std::time::Duration::from_secs(120));
        let report: Report =
            serde_json::from_str(&bench.stdout().join("\n")).expect("the JSON report");
        let curve_rows: Vec<_> = report
            .rows
            .iter()
            .filter(|row| row.variant.contains("CURVE"))
            .collect();
        assert_eq!(curve_rows.len(), 1, "{scenario}: {:#?}", report.rows);
        let row = curve_rows[0];
        assert_eq!(row.lost, 0, "{row:?}");
        assert!(row.answered > 0 && row.ratio.is_some(), "{row:?}");
    }
}

#[test]
fn a_server_key_starting_with_a_dash_is_a_value_not_an_option() {
    if !curve() {
        return;
    }
    // '-' is a Z85 character: about one public key in 83 starts with it.
    let dir = TempDir::new("curve-dash");
    let (public, secret) = (0..10_000)
        .map(|_| zmq_reqrep::security::curve::generate().unwrap())
        .find(|(public, _)| public.to_string().starts_with('-'))
        .expect("a public key starting with '-' in 10000 tries");
    let server_key = dir.file("server.key", format!("{}\n", secret.to_z85()));
    let (client_secret, _) = keypair(&dir, "client");
    let (server, endpoint) = start_server(&["--curve-secret-key-file", &server_key]);
    server.wait_log(&format!("public key {public}"), SOON);
    let server_public = public.to_string();
    let mut client = Proc::start(
        CLIENT,
        &[
            "--connect",
            &endpoint,
            "--count",
            "1",
            "--curve-server-key",
            &server_public,
            "--curve-secret-key-file",
            &client_secret,
        ],
    );
    client.expect_exit(0, SOON);
    assert_eq!(reply_lines(&client).len(), 1);
}
