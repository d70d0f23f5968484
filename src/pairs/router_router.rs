//! ROUTER-ROUTER: both sides address the other by identity.
//!
//! ```text
//! client ROUTER (connect) ──[b"server", "", body] ×3──> server ROUTER (bind, identity b"server")
//! ```
//!
//! A ROUTER can only send to a peer whose identity it knows, and it learns
//! identities from messages it receives. Two ROUTERs would each wait for
//! the other to speak first, so one side, here the server, sets a known
//! identity with `set_identity` before it binds; the client uses that name
//! as the first frame.
//!
//! A message to an identity nobody has is dropped without a word, which is
//! how ROUTER protects itself from slow or vanished peers. With
//! ZMQ_ROUTER_MANDATORY the send fails with EHOSTUNREACH instead: the
//! client shows both, then waits for its connection to the server to be up
//! (the same EHOSTUNREACH until then) before its real requests.

use std::time::{Duration, Instant};

use anyhow::bail;

use super::{End, reply_to, request};

/// The server's identity, set before it binds: the name the client sends to.
pub const SERVER_IDENTITY: &[u8] = b"server";

/// Shows sends to an unknown identity, then sends every request before
/// reading any reply.
pub fn client(router: &End, count: usize) -> anyhow::Result<()> {
    router.send(&[b"nobody", b"", b"anyone there?"])?;
    router.note("sent to identity b\"nobody\": no such peer, so ROUTER dropped it silently");
    router.socket.set_router_mandatory(true)?;
    match router
        .socket
        .send_multipart([&b"nobody"[..], b"", b"anyone there?"], 0)
    {
        Err(zmq::Error::EHOSTUNREACH) => {
            router.note(
                "with ZMQ_ROUTER_MANDATORY the same send fails: EHOSTUNREACH (host unreachable)",
            );
        }
        other => bail!("a send to an unknown identity with ROUTER_MANDATORY returned {other:?}"),
    }

    // Until the handshake with the server is over, its identity is unknown
    // too: keep getting EHOSTUNREACH, then the first request goes through.
    let first = request(1);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut waited = false;
    while let Err(zmq::Error::EHOSTUNREACH) = router
        .socket
        .send_multipart([SERVER_IDENTITY, b"", &first], 0)
    {
        if Instant::now() >= deadline {
            bail!("the server's identity never became reachable");
        }
        waited = true;
        std::thread::sleep(Duration::from_millis(5));
    }
    if waited {
        router.note("EHOSTUNREACH until the connection to b\"server\" was up");
    }
    router.sent(&[SERVER_IDENTITY, b"", &first]);
    for i in 2..=count {
        router.send(&[SERVER_IDENTITY, b"", &request(i)])?;
    }
    for _ in 1..=count {
        router.recv()?;
    }
    Ok(())
}

/// Collects every request, then answers the last one first, to each
/// request's identity.
pub fn server(router: &End, count: usize) -> anyhow::Result<()> {
    let mut requests = Vec::with_capacity(count);
    for _ in 0..count {
        requests.push(router.recv()?);
    }
    for request in requests.iter().rev() {
        let (identity, body) = (
            &request[0],
            request.last().map(Vec::as_slice).unwrap_or_default(),
        );
        router.send(&[identity, b"", &reply_to(body)])?;
    }
    Ok(())
}
