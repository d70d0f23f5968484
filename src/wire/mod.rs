//! The `wire` relay: what really travels between two ZeroMQ sockets.
//!
//! ZeroMQ speaks ZMTP over TCP. `wire` sits between a connecting socket and
//! the socket it connects to, copies every byte both ways unchanged, and
//! shows what passes: each side's greeting, the handshake commands
//! (`READY` with `Socket-Type=REQ`), and every frame of every message with
//! its flags, its size and its exact bytes. It answers the slide's
//! questions with the bytes themselves: there is no `b` on the wire (a
//! `Hello` is `00 05 48 65 6c 6c 6f`: flags, size, five bytes), a REQ puts
//! an empty frame before its request (`01 00`), a ROUTER's identity frame
//! exists only between the ROUTER and its application.
//!
//! | module | what it does |
//! |---|---|
//! | [`decoder`] | the ZMTP decoder: a pure state machine, bytes in, events out, bounded memory |
//! | [`relay`] | the TCP relay: accept, connect, copy both ways, decode after copying |
//! | [`mod@print`] | the lines for people and the JSON lines, from a printer thread the relay never waits for |
//!
//! [`start`] puts the three together: `src/bin/wire.rs` runs it until
//! Ctrl-C, and `socket_pairs --wire` puts one between the two sockets of a
//! pair.

pub mod decoder;
pub mod print;
pub mod relay;

use std::net::TcpListener;
use std::thread::{self, JoinHandle};

use self::print::{Format, Printer};
use self::relay::Summary;
use crate::plumbing::shutdown::Shutdown;

/// A relay running in threads of its own.
pub struct Running {
    relay: JoinHandle<std::io::Result<Summary>>,
    printer: Printer,
}

/// Starts relaying what `listener` accepts to `to` (`host:port`), printing
/// in `format` through `write`, until `shutdown`.
pub fn start(
    listener: TcpListener,
    to: &str,
    format: Format,
    write: impl FnMut(&str) + Send + 'static,
    shutdown: &Shutdown,
) -> std::io::Result<Running> {
    let (printer, reporter) = Printer::start(format, write);
    let (to, shutdown) = (to.to_string(), shutdown.clone());
    let relay = thread::Builder::new()
        .name("wire-relay".into())
        .spawn(move || relay::run(&listener, &to, &reporter, &shutdown))?;
    Ok(Running { relay, printer })
}

impl Running {
    /// Waits for the relay to stop (its shutdown must have been asked for)
    /// and for the printer to print all it was given: the connections it
    /// relayed, and how many events it could not print.
    pub fn wait(self) -> std::io::Result<(Summary, u64)> {
        let summary = self
            .relay
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the relay thread panicked")))?;
        Ok((summary, self.printer.finish()))
    }
}
