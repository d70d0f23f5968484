//! REQ-ROUTER: a synchronous client, an asynchronous server.
//!
//! ```text
//! client REQ (connect) ──["", body]──> server ROUTER (bind)
//! ```
//!
//! The ROUTER shows the envelope a REP would hide: it puts the client's
//! identity in front of what the REQ sent, `[identity, "", body]`. To
//! answer, the ROUTER sends the identity first (it is read to pick the
//! connection, not sent on), then the delimiter the REQ expects, then the
//! body. This is how a broker's frontend talks to REQ clients.

use super::{End, reply_to, request};

/// Sends each request and waits for its reply before the next.
pub fn client(req: &End, count: usize) -> anyhow::Result<()> {
    for i in 1..=count {
        req.send(&[&request(i)])?;
        req.recv()?;
    }
    Ok(())
}

/// Answers each request to the identity it came from.
pub fn server(router: &End, count: usize) -> anyhow::Result<()> {
    router
        .note("receives [identity, \"\", body]; replies [identity, \"\", reply] to route it back");
    for _ in 0..count {
        let request = router.recv()?;
        let (identity, body) = (
            &request[0],
            request.last().map(Vec::as_slice).unwrap_or_default(),
        );
        router.send(&[identity, b"", &reply_to(body)])?;
    }
    Ok(())
}
