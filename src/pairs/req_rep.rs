//! REQ-REP: the synchronous original.
//!
//! ```text
//! client REQ (connect) ──["", body]──> server REP (bind)
//! ```
//!
//! Neither application ever sees an envelope: the REQ adds the empty
//! delimiter on the wire and strips it from the reply; the REP saves it
//! with the request and puts it back on the reply. Strict lock step: a REQ
//! that sends twice, or a REP that receives twice, gets an error (EFSM).

use super::{End, reply_to, request};

/// Sends each request and waits for its reply before the next.
pub fn client(req: &End, count: usize) -> anyhow::Result<()> {
    req.note("sends [body]; REQ adds the empty delimiter on the wire, and waits for the reply");
    for i in 1..=count {
        req.send(&[&request(i)])?;
        req.recv()?;
    }
    Ok(())
}

/// Answers each request as it comes.
pub fn server(rep: &End, count: usize) -> anyhow::Result<()> {
    for _ in 0..count {
        let request = rep.recv()?;
        let body = request.last().map(Vec::as_slice).unwrap_or_default();
        rep.send(&[&reply_to(body)])?;
    }
    Ok(())
}
