//! # zmq_reqrep: ZeroMQ request-reply, runnable and tested
//!
//! The Rust companion of a distributed-systems lecture on ZeroMQ's
//! request-reply pattern. The binaries in `src/bin/` are the lessons, one
//! role each; this library holds what several roles share, each module named
//! for what it does:
//!
//! | module | what it does |
//! |---|---|
//! | [`cli`] | command-line options shared by several roles, each with its environment variable |
//! | [`endpoint`] | checks `--bind`/`--connect` values before libzmq sees them |
//! | [`payload`] | shows bytes as Rust byte-string literals (`b"World"`), loads payload files |
//! | [`logging`] | one log line per event, naming the role and the replica |
//! | [`output`] | buffered stdout/stderr, flushed every 100 ms and at exit |
//! | [`shutdown`] | Ctrl-C and SIGTERM stop every role within a second |
//! | [`exit`] | one-line errors and exit codes (2 for a bad command line) |
//! | [`faults`] | `--crash-after` and `--hang-after`, for the "server dies" experiment |
//! | [`monitor`] | logs the peers libzmq refuses (bad handshakes, oversize messages) |
//! | [`lazy_pirate`] | the reliable REQ request: timeout, new socket, resend |
//! | [`client`] | the request loop of `reqrep_client` and `broker_client` |
//! | [`envelope`] | the ROUTER envelope: identity frames, empty delimiter, body |
//! | [`broker`] | the broker's loops: `proxy` (round robin) and `lb` (load balancing) |
//! | [`protocol`] | READY and HEARTBEAT: the load-balancing broker's wire protocol |
//! | [`lb_worker`] | the worker side of that protocol, with reconnection and back-off |
//! | [`pairs`] | the legal socket pairs, traced frame by frame (`socket_pairs`) |
//! | [`limits`] | raises the open-files limit, for brokers facing many clients |
//! | [`bench`] | the benchmark behind `bench`: scenarios, baselines, report, chart |
//! | [`child`] | child processes that report their output lines, memory and CPU (bench and tests) |

pub mod bench;
pub mod broker;
pub mod child;
pub mod cli;
pub mod client;
pub mod endpoint;
pub mod envelope;
pub mod exit;
pub mod faults;
pub mod lazy_pirate;
pub mod lb_worker;
pub mod limits;
pub mod logging;
pub mod monitor;
pub mod output;
pub mod pairs;
pub mod payload;
pub mod protocol;
pub mod shutdown;

/// How long a closing socket may keep trying to deliver what it has queued
/// (ms). Short enough that no role hangs at exit, long enough for a last
/// reply to leave.
pub const LINGER_MS: i32 = 200;

/// Pending connections a listening socket queues (ZMQ_BACKLOG). libzmq's
/// default of 100 drops the excess when a thousand clients connect at once,
/// and TCP retries a dropped connection only after a second.
pub const LISTEN_BACKLOG: i32 = 1024;
