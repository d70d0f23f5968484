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

use super::{End, reply_to, request};

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

/// Answers each request as it comes: REP is synchronous, whoever asks.
pub fn server(rep: &End, count: usize) -> anyhow::Result<()> {
    for _ in 0..count {
        let request = rep.recv()?;
        let body = request.last().map(Vec::as_slice).unwrap_or_default();
        rep.send(&[&reply_to(body)])?;
    }
    Ok(())
}
