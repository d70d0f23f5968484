//! DEALER-DEALER: asynchronous, with no envelope at all.
//!
//! ```text
//! client DEALER (connect) ──[body] ×3──> server DEALER (bind)
//! ```
//!
//! Neither side adds or strips anything: what is sent is what arrives. Both
//! may send at any time. The catch: a DEALER cannot choose who gets a
//! message. With one client that is fine; with several, the server's
//! replies go round robin to whichever client is next, not to the one that
//! asked. Put a ROUTER on the server side when there are many clients.

use super::{End, reply_to, request};

/// Sends every request before reading any reply.
pub fn client(dealer: &End, count: usize) -> anyhow::Result<()> {
    for i in 1..=count {
        dealer.send(&[&request(i)])?;
    }
    for _ in 1..=count {
        dealer.recv()?;
    }
    Ok(())
}

/// Collects every request, then answers the last one first.
pub fn server(dealer: &End, count: usize) -> anyhow::Result<()> {
    let mut requests = Vec::with_capacity(count);
    for _ in 0..count {
        requests.push(dealer.recv()?);
    }
    dealer
        .note("no identity to answer to: with several clients these replies would go round robin");
    for request in requests.iter().rev() {
        let body = request.last().map(Vec::as_slice).unwrap_or_default();
        dealer.send(&[&reply_to(body)])?;
    }
    Ok(())
}
