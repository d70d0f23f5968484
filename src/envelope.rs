//! The ROUTER envelope: how a reply finds its way back.
//!
//! A REQ socket sends `[body]`, but what leaves it is `["", body]`: an empty
//! *delimiter* frame, then the body. A ROUTER that receives it puts the
//! sender's identity in front: `[identity, "", body]`. Everything before the
//! delimiter is the *envelope*, the return address; to answer, the ROUTER
//! is given the same frames back, takes the first one as the address, and
//! sends the rest to that peer, whose REQ strips the delimiter again.
//!
//! A broker keeps envelopes whole: a chain of ROUTERs simply stacks one
//! identity per hop before the delimiter. A message without a delimiter, or
//! with nothing after it, cannot be answered by a REP, and the broker drops it
//! with a warning instead of passing it on.

use std::fmt::Write as _;
use std::ops::Deref;

/// Where the body starts: the index just after the empty delimiter frame,
/// which must have at least one address frame before it and one body frame
/// after it. `None` for a message that has no valid envelope.
pub fn body_start<F: Deref<Target = [u8]>>(frames: &[F]) -> Option<usize> {
    let delimiter = frames.iter().skip(1).position(|frame| frame.is_empty())? + 1;
    (delimiter + 1 < frames.len()).then_some(delimiter + 1)
}

/// An identity frame in hex, as libzmq generates them: `0080000029`.
pub fn hex(identity: &[u8]) -> String {
    identity.iter().fold(
        String::with_capacity(identity.len() * 2),
        |mut text, byte| {
            let _ = write!(text, "{byte:02x}");
            text
        },
    )
}

/// Who a message passing a broker is from or for, for log lines: its first
/// frame in hex, the client's identity in a request or a reply (empty if
/// there is no frame).
pub fn client_of<F: Deref<Target = [u8]>>(frames: &[F]) -> String {
    frames.first().map_or_else(String::new, |id| hex(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(parts: &[&[u8]]) -> Vec<Vec<u8>> {
        parts.iter().map(|part| part.to_vec()).collect()
    }

    #[test]
    fn finds_the_body_after_the_delimiter() {
        assert_eq!(body_start(&frames(&[b"id", b"", b"Hello"])), Some(2));
        assert_eq!(
            body_start(&frames(&[b"id", b"", b""])),
            Some(2),
            "empty body is a body"
        );
        assert_eq!(
            body_start(&frames(&[b"a", b"b", b"", b"x", b"y"])),
            Some(3),
            "stacked envelope"
        );
    }

    #[test]
    fn refuses_messages_without_a_usable_envelope() {
        assert_eq!(
            body_start(&frames(&[b"id", b"Hello"])),
            None,
            "no delimiter"
        );
        assert_eq!(body_start(&frames(&[b"id", b""])), None, "no body");
        assert_eq!(body_start(&frames(&[b"", b"Hello"])), None, "no address");
        assert_eq!(body_start(&frames(&[b"id"])), None);
        assert_eq!(body_start::<Vec<u8>>(&[]), None);
    }

    #[test]
    fn shows_identities_in_hex() {
        assert_eq!(hex(&[0x00, 0x80, 0x00, 0x00, 0x29]), "0080000029");
    }
}
