//! DEALER-ROUTER: asynchronous on both sides.
//!
//! ```text
//! client DEALER (connect) ──[body] ×3──> server ROUTER (bind)
//! ```
//!
//! With no REQ or REP anywhere, nobody needs a delimiter: the DEALER sends
//! bare bodies, and the ROUTER receives `[identity, body]`. The DEALER sends
//! all its requests before reading any reply; the ROUTER collects them all
//! and answers in reverse order, to show that replies may come back in any
//! order. Matching replies to requests is now the application's job (here,
//! by the number in the body).

use super::{End, reply_to, request};

/// Sends every request before reading any reply.
pub fn client(dealer: &End, count: usize) -> anyhow::Result<()> {
    dealer
        .note("sends every request before reading any reply; no delimiter: no REQ/REP in the way");
    for i in 1..=count {
        dealer.send(&[&request(i)])?;
    }
    for _ in 1..=count {
        dealer.recv()?;
    }
    Ok(())
}

/// Collects every request, then answers the last one first.
pub fn server(router: &End, count: usize) -> anyhow::Result<()> {
    let mut requests = Vec::with_capacity(count);
    for _ in 0..count {
        requests.push(router.recv()?);
    }
    router.note("answers in reverse order: the identity frame routes each reply");
    for request in requests.iter().rev() {
        let (identity, body) = (
            &request[0],
            request.last().map(Vec::as_slice).unwrap_or_default(),
        );
        router.send(&[identity, &reply_to(body)])?;
    }
    Ok(())
}
