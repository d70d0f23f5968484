//! DEALER-REP: an asynchronous client, a synchronous server.
//!
//! ```text
//! client DEALER (connect) ──["", body] ×3──> server REP (bind)
//! ```
//!
//! A DEALER sends frames exactly as given, but the REP expects what a REQ
//! would send: an empty delimiter, then the body. So the DEALER must add the
//! delimiter itself (without it, REP silently discards the message), and it
//! gets the delimiter back on each reply. The DEALER sends all its requests
//! before reading any reply; the REP still answers them one at a time, in
//! order.

use super::{End, request};

/// Sends every request first (with the delimiter a REP needs), then reads
/// every reply.
pub fn client(dealer: &End, count: usize) -> anyhow::Result<()> {
    dealer.note("a REP expects a REQ's frames, so the DEALER sends the empty delimiter itself");
    for i in 1..=count {
        dealer.send(&[b"", &request(i)])?;
    }
    for _ in 1..=count {
        dealer.recv()?;
    }
    Ok(())
}

/// The REP side is REQ-REP's, line for line: a REP cannot tell a DEALER
/// that sends the delimiter from a REQ.
pub fn server(rep: &End, count: usize) -> anyhow::Result<()> {
    super::req_rep::server(rep, count)
}
