//! # zmq_reqrep: ZeroMQ request-reply, runnable and tested
//!
//! The Rust companion of a distributed-systems lecture on ZeroMQ's
//! request-reply pattern. The binaries in `src/bin/` are the lessons, one
//! role each; this library holds what several roles share, each module named
//! for what it does.
//!
//! Lessons, the patterns the lecture is about:
//!
//! | module | what it does |
//! |---|---|
//! | [`lazy_pirate`] | the reliable REQ request: timeout, resend to the next server, stale replies told apart by id |
//! | [`client`] | the request loop of `reqrep_client` and `broker_client` |
//! | [`envelope`] | the ROUTER envelope: identity frames, empty delimiter, body |
//! | [`broker`] | the broker's loops: `proxy` (round robin) and `lb` (load balancing); its live page (`--http`) |
//! | [`protocol`] | READY and HEARTBEAT: the load-balancing broker's wire protocol |
//! | [`lb_worker`] | the worker side of that protocol, with reconnection and back-off, for one broker or several |
//! | [`pairs`] | the legal socket pairs, traced frame by frame (`socket_pairs`) |
//! | [`security`] | who may join: `--allow`, PLAIN and CURVE, checked by a ZAP handler |
//! | [`payload`] | shows bytes as Rust byte-string literals (`b"World"`), loads payload files |
//! | [`faults`] | `--crash-after` and `--hang-after`, for the "server dies" experiment |
//! | [`wire`] | the bytes between two sockets: a ZMTP decoder and the relay that shows them (`wire`) |
//!
//! Apart from the lessons:
//!
//! | module | what it does |
//! |---|---|
//! | [`plumbing`] | what every role needs and no lesson is about: options, endpoints, the listening sockets' hardening, heartbeats, monitors, logs, output, shutdown, exit codes, the page's HTTP server (its own table lists them) |
//! | [`bench`](mod@bench) | the benchmark behind `bench`: scenarios, baselines, report, chart |

pub mod bench;
pub mod broker;
pub mod client;
pub mod envelope;
pub mod faults;
pub mod lazy_pirate;
pub mod lb_worker;
pub mod pairs;
pub mod payload;
pub mod plumbing;
pub mod protocol;
pub mod security;
pub mod wire;

/// How long a closing socket may keep trying to deliver what it has queued
/// (ms). Short enough that no role hangs at exit, long enough for a last
/// reply to leave.
pub const LINGER_MS: i32 = 200;
