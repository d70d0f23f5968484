//! CURVE keys: the server's key pair, the clients' key pairs, in Z85 text.
//!
//! CurveZMQ (RFC 26) encrypts every message of a connection, and proves the
//! server to the client: a client needs the server's *public* key before it
//! connects (`--curve-server-key`), and only the holder of the matching
//! secret key can complete the handshake. Each client has a key pair of its
//! own; the server admits the public keys listed in `--curve-clients`
//! (checked by the ZAP handler, [`super::zap`]).
//!
//! A key is 32 bytes, written as 40 characters of Z85 (ZeroMQ's base-85
//! text, RFC 32) on one line: `curve_keygen NAME` writes `NAME.key` (the
//! secret, readable by its owner only) and `NAME.pub`. The public key is
//! always derived from the secret one (libzmq's `zmq_curve_public`), so a
//! role never needs both files.
//!
//! The `zmq` crate's bundled libzmq is built without libsodium, so it has no
//! CURVE (`zmq::has("curve")` is false); a build against the system's libzmq
//! has it: `cargo run --config .cargo/system-libzmq.toml`. [`require`] turns
//! a CURVE option given to a build without it into a one-line usage error:
//! never a silent fallback to plaintext.

use std::collections::HashSet;
use std::ffi::{CStr, CString};
use std::fmt;
use std::path::Path;

use super::{file_usage, read_text};
use crate::plumbing::exit::UsageError;
use crate::plumbing::logging::Count;

/// Z85's 85 characters, in the order of their values (RFC 32).
const Z85: &[u8; 85] =
    b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";

/// A key's length in Z85 characters.
pub const KEY_CHARS: usize = 40;

/// Whether this build's libzmq can do CURVE.
pub fn available() -> bool {
    zmq::has("curve") == Some(true)
}

/// Why a CURVE option cannot be used by this build, and how to get one that can.
#[derive(Debug, Clone, Copy)]
pub struct NoCurve;

impl fmt::Display for NoCurve {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "this build's libzmq has no CURVE (the zmq crate bundles one built without \
             libsodium); build against the system's libzmq instead: apt-get install \
             libzmq3-dev, then cargo run --config .cargo/system-libzmq.toml (the Docker \
             image has CURVE)",
        )
    }
}

impl std::error::Error for NoCurve {}

/// Refuses a CURVE option (`option` given `value`) when the build has no CURVE.
pub fn require(option: &'static str, value: &str) -> Result<(), UsageError> {
    if available() {
        return Ok(());
    }
    Err(super::usage(option, value, NoCurve.to_string()))
}

/// A public key: safe to show, to log, to hand out.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// Reads 40 Z85 characters.
    pub fn parse(text: &str) -> Result<PublicKey, String> {
        decode_key(text).map(PublicKey)
    }

    /// The 32 bytes, as libzmq's socket options take them.
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Reads a public key file (a `.pub` that curve_keygen wrote): 40 Z85
    /// characters on its first line. Errors name `option` and the file.
    pub fn read(option: &'static str, path: &Path) -> Result<PublicKey, UsageError> {
        let text = read_text(option, path)?;
        PublicKey::parse(text.lines().next().unwrap_or("").trim()).map_err(|why| {
            file_usage(
                option,
                path,
                format!("expected a public key on the first line: {why}"),
            )
        })
    }

    /// The key a peer presented in a ZAP request, if it is one.
    pub fn from_bytes(bytes: &[u8]) -> Option<PublicKey> {
        bytes.try_into().ok().map(PublicKey)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&encode(&self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

/// A secret key: never shown, never logged.
#[derive(Clone)]
pub struct SecretKey([u8; 32]);

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

impl SecretKey {
    /// Reads 40 Z85 characters.
    pub fn parse(text: &str) -> Result<SecretKey, String> {
        decode_key(text).map(SecretKey)
    }

    /// Reads a secret key file: 40 Z85 characters on its first line.
    /// Errors name `option` and the file.
    pub fn read(option: &'static str, path: &Path) -> Result<SecretKey, UsageError> {
        let text = read_text(option, path)?;
        let line = text.lines().next().unwrap_or("").trim();
        // The text is a secret: say what is wrong with it, never quote it.
        SecretKey::parse(line).map_err(|_| {
            file_usage(
                option,
                path,
                format!(
                    "expected a secret key, {KEY_CHARS} Z85 characters on the first line \
                     (curve_keygen writes such files), found {}{}",
                    Count::new(line.chars().count() as u64, "character"),
                    if line.len() == KEY_CHARS {
                        " that are not all Z85"
                    } else {
                        ""
                    }
                ),
            )
        })
    }

    /// Reads a secret key file as [`SecretKey::read`] does, and derives
    /// its public key: a role's own key pair.
    pub fn read_pair(
        option: &'static str,
        path: &Path,
    ) -> Result<(SecretKey, PublicKey), UsageError> {
        let secret = SecretKey::read(option, path)?;
        let public = secret.public().map_err(|error| {
            file_usage(
                option,
                path,
                format!("cannot derive its public key: {error}"),
            )
        })?;
        Ok((secret, public))
    }

    /// The 32 bytes, as libzmq's socket options take them.
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The key as Z85 text, for its key file only.
    pub fn to_z85(&self) -> String {
        encode(&self.0)
    }

    /// The public key of this secret key (libzmq's `zmq_curve_public`).
    /// Fails with ENOTSUP in a build without CURVE.
    pub fn public(&self) -> zmq::Result<PublicKey> {
        let secret = CString::new(encode(&self.0)).map_err(|_| zmq::Error::EINVAL)?;
        let mut public = [0 as std::os::raw::c_char; KEY_CHARS + 1];
        // SAFETY: libzmq reads a NUL-terminated 40-character Z85 string and
        // writes 40 characters and a NUL into the 41-byte buffer.
        let rc = unsafe { zmq_curve_public(public.as_mut_ptr(), secret.as_ptr()) };
        if rc != 0 {
            // libzmq reports why in errno, as the C library does.
            let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
            return Err(zmq::Error::from_raw(errno));
        }
        // SAFETY: libzmq NUL-terminated the buffer.
        let text = unsafe { CStr::from_ptr(public.as_ptr()) };
        let text = text.to_str().map_err(|_| zmq::Error::EINVAL)?;
        PublicKey::parse(text).map_err(|_| zmq::Error::EINVAL)
    }
}

unsafe extern "C" {
    /// zmq_curve_public(3), from the libzmq the `zmq` crate links: zmq-sys
    /// 0.12 declares it but does not export it, and the `zmq` crate has no
    /// wrapper.
    fn zmq_curve_public(
        z85_public_key: *mut std::os::raw::c_char,
        z85_secret_key: *const std::os::raw::c_char,
    ) -> std::os::raw::c_int;
}

/// A new key pair from libzmq (`zmq_curve_keypair`, libsodium's random
/// numbers). Fails with ENOTSUP in a build without CURVE.
pub fn generate() -> zmq::Result<(PublicKey, SecretKey)> {
    let pair = zmq::CurveKeyPair::new()?;
    Ok((PublicKey(pair.public_key), SecretKey(pair.secret_key)))
}

/// The client keys a CURVE server admits (`--curve-clients`).
#[derive(Clone, Debug)]
pub struct ClientKeys(HashSet<PublicKey>);

impl ClientKeys {
    /// Reads a file of public keys: one per line; blank lines and comments
    /// (from a `#` that starts a line or follows a space) are skipped. `#`
    /// is a Z85 character, but no key starts with one: the first character
    /// of each 5-character group stands for at most 82 of Z85's 85 values,
    /// or the group would exceed 32 bits.
    pub fn read(option: &'static str, path: &Path) -> Result<ClientKeys, UsageError> {
        let text = read_text(option, path)?;
        ClientKeys::parse(&text).map_err(|why| file_usage(option, path, why))
    }

    fn parse(text: &str) -> Result<ClientKeys, String> {
        let mut keys = HashSet::new();
        for (i, line) in text.lines().enumerate() {
            let mut words = line.split_whitespace();
            let Some(first) = words.next().filter(|word| !word.starts_with('#')) else {
                continue;
            };
            let key = PublicKey::parse(first).map_err(|why| format!("line {}: {why}", i + 1))?;
            if words.next().is_some_and(|word| !word.starts_with('#')) {
                return Err(format!(
                    "line {}: one key per line (a comment after it starts with '#')",
                    i + 1
                ));
            }
            keys.insert(key);
        }
        if keys.is_empty() {
            return Err("no public key in the file: nobody could connect".into());
        }
        Ok(ClientKeys(keys))
    }

    /// Whether `key` is admitted.
    pub fn contains(&self, key: &PublicKey) -> bool {
        self.0.contains(key)
    }

    /// How many keys are admitted.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether none are (never, for a file that was read).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// 32 bytes as 40 Z85 characters.
fn encode(bytes: &[u8; 32]) -> String {
    let mut text = String::with_capacity(KEY_CHARS);
    for chunk in bytes.chunks(4) {
        let mut value = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        let mut digits = [0u8; 5];
        for digit in digits.iter_mut().rev() {
            *digit = Z85[(value % 85) as usize];
            value /= 85;
        }
        // Z85 characters are ASCII.
        text.extend(digits.iter().map(|&d| char::from(d)));
    }
    text
}

/// 40 Z85 characters as 32 bytes, explaining what is wrong otherwise.
fn decode_key(text: &str) -> Result<[u8; 32], String> {
    let count = text.chars().count();
    if count != KEY_CHARS {
        return Err(format!(
            "a key is {KEY_CHARS} Z85 characters, found {count}"
        ));
    }
    let mut key = [0u8; 32];
    for (chunk, out) in text.as_bytes().chunks(5).zip(key.chunks_mut(4)) {
        let mut value: u64 = 0;
        for &c in chunk {
            let digit = Z85.iter().position(|&z| z == c).ok_or_else(|| {
                format!(
                    "'{}' is not a Z85 character",
                    char::from(c).escape_default()
                )
            })?;
            value = value * 85 + digit as u64;
        }
        let value = u32::try_from(value).map_err(|_| {
            "not a Z85-encoded key (a group of 5 characters is too large)".to_string()
        })?;
        out.copy_from_slice(&value.to_be_bytes());
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 32's test vector, padded to a key's length.
    #[test]
    fn z85_matches_the_rfc_and_libzmq() {
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&[0x86, 0x4F, 0xD2, 0x6F, 0xB5, 0x59, 0xF7, 0x5B]);
        let text = encode(&bytes);
        assert!(text.starts_with("HelloWorld"), "{text}");
        assert_eq!(decode_key(&text).unwrap(), bytes);
        // libzmq's own encoder agrees, for every byte value.
        for seed in 0..=255u8 {
            let bytes: [u8; 32] =
                std::array::from_fn(|i| seed.wrapping_mul(31).wrapping_add(i as u8 * 7));
            assert_eq!(encode(&bytes), zmq::z85_encode(&bytes).unwrap());
            assert_eq!(decode_key(&encode(&bytes)).unwrap(), bytes);
        }
    }

    #[test]
    fn bad_keys_are_explained() {
        assert!(decode_key("short").unwrap_err().contains("found 5"));
        let with_space = format!("{} ", "a".repeat(39));
        assert!(
            decode_key(&with_space)
                .unwrap_err()
                .contains("' ' is not a Z85 character")
        );
        // 85^5 - 1 is past u32::MAX.
        assert!(
            decode_key(&"#".repeat(40))
                .unwrap_err()
                .contains("too large")
        );
        assert!(
            decode_key(&"é".repeat(40))
                .unwrap_err()
                .contains("not a Z85 character")
        );
    }

    #[test]
    fn no_key_starts_with_a_hash_so_comments_are_unambiguous() {
        assert!(encode(&[0xff; 32]).starts_with('%'), "the largest group");
        let key = PublicKey([7u8; 32]);
        let text = format!("# admitted keys\n\n{key}   # alice\n  # indented\n");
        let keys = ClientKeys::parse(&text).unwrap();
        assert_eq!(keys.len(), 1);
        assert!(keys.contains(&key));
        assert!(
            ClientKeys::parse("# none\n")
                .unwrap_err()
                .contains("no public key")
        );
        let error = ClientKeys::parse(&format!("{key}\nnope\n")).unwrap_err();
        assert!(error.starts_with("line 2:"), "{error}");
        let error = ClientKeys::parse(&format!("{key} {key}\n")).unwrap_err();
        assert!(error.contains("one key per line"), "{error}");
    }
}
