//! Bytes stay bytes: the answer to "what is the `b` before the string".
//!
//! ZeroMQ moves frames of bytes and knows nothing about text. pyzmq hands
//! them to Python as `bytes` objects, which Python prints as `b'World'` (the
//! `b` is Python's notation, not pyzmq's); this suite prints the same payload as a Rust
//! byte-string literal, `b"World"`. Printable ASCII shows as itself, anything
//! else as an escape (`\n`, `\xff`), so a non-UTF-8 payload is shown safely
//! and exactly, and decoding to text happens only on the screen.

use std::fmt;
use std::path::Path;

use crate::plumbing::exit::UsageError;

/// Payloads up to this many bytes are shown whole.
const SHOW_WHOLE: usize = 64;
/// Longer payloads show this many leading bytes and their length.
const SHOW_HEAD: usize = 32;

/// Displays bytes as a Rust byte-string literal: `b"World"`, `b"\xff\x00"`.
/// Payloads longer than 64 bytes are cut: `b"AAAA..."... (524288 bytes)`.
pub struct Shown<'a>(&'a [u8]);

/// Shows one frame (see [`Shown`]).
pub fn show(bytes: &[u8]) -> Shown<'_> {
    Shown(bytes)
}

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("b\"")?;
        if self.0.len() <= SHOW_WHOLE {
            escape(self.0, f)?;
            f.write_str("\"")
        } else {
            escape(&self.0[..SHOW_HEAD], f)?;
            write!(f, "\"... ({} bytes)", self.0.len())
        }
    }
}

/// Writes `bytes` escaped as inside a Rust byte-string literal (what
/// `escape_ascii` does), passing runs of plain characters through in one
/// piece: servers log every request, so this is on the hot path.
fn escape(bytes: &[u8], f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let plain = |byte: &u8| matches!(byte, b' '..=b'~') && !matches!(byte, b'"' | b'\'' | b'\\');
    let mut rest = bytes;
    while !rest.is_empty() {
        let run = rest
            .iter()
            .position(|byte| !plain(byte))
            .unwrap_or(rest.len());
        let (run_bytes, after) = rest.split_at(run);
        // A run of printable ASCII is valid UTF-8.
        f.write_str(std::str::from_utf8(run_bytes).map_err(|_| fmt::Error)?)?;
        if let Some((&byte, tail)) = after.split_first() {
            write!(f, "{}", byte.escape_ascii())?;
            rest = tail;
        } else {
            rest = after;
        }
    }
    Ok(())
}

/// Displays bytes that are meant as text (a worker's name) without quotes,
/// escaped like [`show`]: whatever a peer sends, no control character
/// reaches the terminal.
pub struct Text<'a>(&'a [u8]);

/// Shows peer-supplied text safely (see [`Text`]).
pub fn text(bytes: &[u8]) -> Text<'_> {
    Text(bytes)
}

impl fmt::Display for Text<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        escape(&self.0[..self.0.len().min(SHOW_WHOLE)], f)
    }
}

/// Displays a whole message: one frame as [`show`] does, several as a list.
pub struct ShownFrames<'a>(&'a [Vec<u8>]);

/// Shows every frame of a message (see [`ShownFrames`]).
pub fn show_frames(frames: &[Vec<u8>]) -> ShownFrames<'_> {
    ShownFrames(frames)
}

impl fmt::Display for ShownFrames<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            [single] => show(single).fmt(f),
            frames => {
                f.write_str("[")?;
                for (i, frame) in frames.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    show(frame).fmt(f)?;
                }
                f.write_str("]")
            }
        }
    }
}

/// The payload a role sends: the text option, or the file when one is given
/// (any bytes at all, for binary payloads). A file that cannot be read is a
/// usage error naming `option` (`--message-file`), as a bad value is.
pub fn load(text: &str, file: Option<&Path>, option: &'static str) -> Result<Vec<u8>, UsageError> {
    match file {
        Some(path) => std::fs::read(path).map_err(|error| {
            UsageError::new(option, &path.display().to_string(), &error.to_string())
        }),
        None => Ok(text.as_bytes().to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shows_rust_byte_string_literals() {
        assert_eq!(show(b"World").to_string(), r#"b"World""#);
        assert_eq!(show(b"").to_string(), r#"b"""#);
        assert_eq!(show(b"\xff\x00a\n\"").to_string(), r#"b"\xff\x00a\n\"""#);
        assert_eq!(show("olá".as_bytes()).to_string(), r#"b"ol\xc3\xa1""#);
    }

    #[test]
    fn escapes_exactly_as_escape_ascii_does() {
        let every_byte: Vec<u8> = (0..=255).collect();
        for chunk in every_byte.chunks(64) {
            assert_eq!(
                show(chunk).to_string(),
                format!("b\"{}\"", chunk.escape_ascii())
            );
        }
    }

    #[test]
    fn shows_peer_text_without_control_characters() {
        assert_eq!(text(b"w1").to_string(), "w1");
        assert_eq!(text(b"\x1b[31mred").to_string(), r"\x1b[31mred");
    }

    #[test]
    fn cuts_long_payloads_and_gives_their_length() {
        let shown = show(&[b'A'; 1000]).to_string();
        assert_eq!(shown, format!("b\"{}\"... (1000 bytes)", "A".repeat(32)));
    }

    #[test]
    fn shows_multipart_messages_as_lists() {
        let frames = vec![b"a".to_vec(), vec![], b"b".to_vec()];
        assert_eq!(show_frames(&frames).to_string(), r#"[b"a", b"", b"b"]"#);
        assert_eq!(show_frames(&frames[..1]).to_string(), r#"b"a""#);
    }
}
