//! Plumbing: what every role needs and no lesson is about.
//!
//! The lessons (the binaries, and the library modules named after a pattern)
//! use these pieces without having to read them. Plumbing imports nothing
//! of `security`, which builds on it (the listeners' gate is a trait here,
//! implemented there).
//!
//! | module | what it does |
//! |---|---|
//! | [`cli`] | command-line options shared by several roles, each with its environment variable |
//! | [`endpoint`] | checks `--bind`/`--connect` values before libzmq sees them |
//! | [`listener`] | the listening roles' hardening, one step: I/O threads, open-files limit, routing ids, who may join (a gate src/security/ provides), frame limit, high-water marks, linger, heartbeats, the monitor; closing in order |
//! | [`keepalive`] | ZMTP heartbeats: no connection idle long enough to be forgotten, dead peers noticed |
//! | [`monitor`] | logs the peers libzmq refuses or drops (bad handshakes, oversize frames, silent peers), connections it cannot accept, connection storms |
//! | [`connection`] | what becomes of a connecting socket's connection: up, refused, lost |
//! | [`replica_name`] | a replica's default name: under Docker, its container's name (`zmq-reqrep-worker-3`), from Docker's DNS |
//! | [`logging`] | one log line per event, naming the role and the replica |
//! | [`output`] | buffered stdout/stderr, flushed every 100 ms and at exit, never waiting for a reader |
//! | [`shutdown`] | Ctrl-C and SIGTERM stop every role within a second |
//! | [`exit`] | one-line errors and exit codes (2 for a bad command line) |
//! | [`http`] | a small HTTP server bounded in every way, for the broker's page (`--http`) |
//! | [`limits`] | the open-files limit (raised) and the listen backlog's cap, for brokers facing many clients |
//! | [`child`] | child processes that report their output lines, memory and CPU (bench and tests) |

pub mod child;
pub mod cli;
pub mod connection;
pub mod endpoint;
pub mod exit;
pub mod http;
pub mod keepalive;
pub mod limits;
pub mod listener;
pub mod logging;
pub mod monitor;
pub mod output;
pub mod replica_name;
pub mod shutdown;
