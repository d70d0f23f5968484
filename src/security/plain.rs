//! PLAIN: a user name and a password, checked by the server's ZAP handler.
//!
//! PLAIN (ZMTP's RFC 24) sends both **in the clear**: anyone who can see the
//! traffic (a shared Wi-Fi, a mirrored switch port) reads them. It keeps out
//! a classmate's stray worker, not an eavesdropper; CURVE ([`super::curve`])
//! is the mechanism that encrypts.
//!
//! The server reads its users from a file (`--plain-users`):
//!
//! ```text
//! # who may use the broker
//! alice:correct horse
//! worker:battery staple
//! ```
//!
//! one `user:password` per line, split at the first `:` (so a password may
//! contain `:`, a user name may not); blank lines and comment lines (`#`
//! first, after any spaces) are skipped. A client reads its password from a
//! file too (`--plain-password-file`, the first line), because a command
//! line is visible to every user of the machine (`ps`), and because that
//! is how Docker secrets arrive: as files.
//!
//! Both sides read a password by one rule (`file_lines`): a line's end
//! (`\n`, or `\r\n` from a Windows editor) is not part of the password, and
//! nothing else is removed. `alice:secret ` in the users file and `secret `
//! in the password file are the same password, `secret` with its space;
//! `secret` without it is another one. Two things the rule would turn into
//! a user nobody can be are refused when the server starts, naming the
//! line: a user name that starts or ends with a space or tab
//! (`alice :secret`, an indented line), and an empty password (`guest:`:
//! libzmq cannot send one, it takes 1 to 255 bytes).

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use super::{file_usage, read_text};
use crate::plumbing::exit::UsageError;

/// The longest user name or password PLAIN can carry (a one-byte length).
const MAX_BYTES: usize = 255;

/// The users a PLAIN server admits, with their passwords.
#[derive(Clone)]
pub struct Users(HashMap<String, String>);

impl fmt::Debug for Users {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the passwords.
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// What a PLAIN check found.
#[derive(Debug, PartialEq, Eq)]
pub enum Check {
    /// Right user, right password.
    Admitted,
    /// No such user.
    UnknownUser,
    /// The user exists; the password is not theirs.
    WrongPassword,
}

impl Users {
    /// Reads a users file (`option` names it in errors).
    pub fn read(option: &'static str, path: &Path) -> Result<Users, UsageError> {
        let text = read_text(option, path)?;
        Users::parse(&text).map_err(|reason| file_usage(option, path, reason))
    }

    fn parse(text: &str) -> Result<Users, String> {
        let mut users = HashMap::new();
        for (i, line) in file_lines(text).enumerate() {
            // Blank lines and comments hold no password: blanks around
            // them do not matter.
            let content = line.trim_start();
            if content.is_empty() || content.starts_with('#') {
                continue;
            }
            let number = i + 1;
            // The line itself is never quoted back: it holds a password.
            let Some((user, password)) = line.split_once(':') else {
                return Err(format!(
                    "line {number}: expected user:password, found no ':'"
                ));
            };
            if user.is_empty() {
                return Err(format!("line {number}: the user name before ':' is empty"));
            }
            if user.trim() != user {
                return Err(format!(
                    "line {number}: the user name '{}' starts or ends with a space or tab; \
                     nothing is trimmed from a line",
                    user.escape_debug()
                ));
            }
            if password.is_empty() {
                return Err(format!(
                    "line {number}: the password after ':' is empty, and libzmq cannot \
                     send an empty one"
                ));
            }
            if user.len() > MAX_BYTES || password.len() > MAX_BYTES {
                return Err(format!(
                    "line {number}: PLAIN carries at most {MAX_BYTES} bytes of user name and of password"
                ));
            }
            if users
                .insert(user.to_string(), password.to_string())
                .is_some()
            {
                return Err(format!("line {number}: user '{user}' appears twice"));
            }
        }
        if users.is_empty() {
            return Err("no user:password line: nobody could connect".into());
        }
        Ok(Users(users))
    }

    /// How many users there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none (never, for a file that was read).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Checks a user name and password as a client sent them.
    pub fn check(&self, user: &[u8], password: &[u8]) -> Check {
        let known = std::str::from_utf8(user)
            .ok()
            .and_then(|user| self.0.get(user));
        match known {
            None => Check::UnknownUser,
            Some(expected) if same_bytes(expected.as_bytes(), password) => Check::Admitted,
            Some(_) => Check::WrongPassword,
        }
    }
}

/// Compares two byte strings without stopping at the first difference, so
/// that the time a check takes says nothing about how much of a guessed
/// password was right.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let mut difference = u8::from(a.len() != b.len());
    for (x, y) in a.iter().zip(b) {
        difference |= x ^ y;
    }
    difference == 0
}

/// The lines of a users file or a password file, each without its line
/// end (`\n` or `\r\n`), and with nothing else removed: the one rule by
/// which both sides read a password (see the module header).
fn file_lines(text: &str) -> std::str::Lines<'_> {
    text.lines()
}

/// Reads a client's password file: its first line, without the line end
/// and with nothing else removed (`file_lines`).
pub fn read_password(option: &'static str, path: &Path) -> Result<String, UsageError> {
    let text = read_text(option, path)?;
    let password = file_lines(&text).next().unwrap_or("");
    if password.is_empty() {
        return Err(file_usage(
            option,
            path,
            "the file is empty (the password is its first line)",
        ));
    }
    if password.len() > MAX_BYTES {
        return Err(file_usage(
            option,
            path,
            format!("PLAIN carries at most {MAX_BYTES} bytes of password"),
        ));
    }
    Ok(password.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_files_take_comments_blank_lines_and_colons_in_passwords() {
        let users =
            Users::parse("# team\nalice:secret\n\n  \t\n  # indented\nbob:pa:ss\r\n").unwrap();
        assert_eq!(users.len(), 2);
        assert_eq!(users.check(b"alice", b"secret"), Check::Admitted);
        assert_eq!(users.check(b"bob", b"pa:ss"), Check::Admitted);
        assert_eq!(users.check(b"alice", b"secre"), Check::WrongPassword);
        assert_eq!(users.check(b"alice", b"secret!"), Check::WrongPassword);
        assert_eq!(users.check(b"alice", b""), Check::WrongPassword);
        assert_eq!(users.check(b"eve", b"secret"), Check::UnknownUser);
        assert_eq!(users.check(b"\xff", b"secret"), Check::UnknownUser);
    }

    #[test]
    fn a_password_loses_its_line_end_and_nothing_else_on_both_sides() {
        let users = Users::parse("alice:secret \ncarol:\tx\t\r\n").unwrap();
        assert_eq!(users.check(b"alice", b"secret "), Check::Admitted);
        assert_eq!(users.check(b"alice", b"secret"), Check::WrongPassword);
        assert_eq!(users.check(b"carol", b"\tx\t"), Check::Admitted);
        for (file, password) in [
            ("secret \n", "secret "),
            ("secret ", "secret "),
            (" secret\r\n", " secret"),
            ("secret\nsecond line\n", "secret"),
        ] {
            assert_eq!(file_lines(file).next(), Some(password), "{file:?}");
        }
    }
    #[test]
    fn malformed_users_files_name_the_line_and_never_the_password() {
        let cases = [
            ("alice:secret\nhunter2\n", "line 2: expected user:password"),
            (":secret\n", "line 1: the user name before ':' is empty"),
            ("a:1\na:2\n", "line 2: user 'a' appears twice"),
            ("# nobody\n\n", "no user:password line"),
            (
                "alice :secret\n",
                "line 1: the user name 'alice ' starts or ends with",
            ),
            (
                "  alice:secret\n",
                "line 1: the user name '  alice' starts or ends with",
            ),
            (
                "alice:secret\nguest:\n",
                "line 2: the password after ':' is empty",
            ),
        ];
        for (text, expected) in cases {
            let error = Users::parse(text).expect_err(text);
            assert!(error.contains(expected), "{text:?}: {error}");
            assert!(
                !error.contains("hunter2") && !error.contains("secret"),
                "{error}"
            );
        }
        let long = format!("u:{}", "x".repeat(256));
        assert!(Users::parse(&long).unwrap_err().contains("255"));
    }

    #[test]
    fn debug_output_shows_no_password() {
        let users = Users::parse("alice:secret").unwrap();
        let shown = format!("{users:?}");
        assert!(
            shown.contains("alice") && !shown.contains("secret"),
            "{shown}"
        );
    }
}
