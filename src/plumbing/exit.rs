//! How a role ends: one line on stderr and an exit code a script can test.
//!
//! | code | meaning |
//! |------|---------|
//! | 0 | finished (`--count` reached) or stopped by Ctrl-C / SIGTERM |
//! | 1 | failed while running (for example a client that gave up) |
//! | 2 | bad command line: a malformed endpoint, a port in use, a bad number |
//! | 3 | a crash simulated on purpose with `--crash-after` |
//! | 130, 143 | forced by a second Ctrl-C (130) or SIGTERM (143) during the stop: 128 + the signal's number |
//!
//! A student who mistypes an endpoint reads one line such as
//! `error: invalid value 'tcp://*:99999' for '--bind': port 99999 is out of range (1-65535)`,
//! never a backtrace.

use std::fmt;
use std::process::ExitCode;

use clap::Parser;

use crate::plumbing::logging::Count;

/// A value given on the command line (or in its environment variable) that
/// cannot be used, found after parsing: a port already taken, say.
#[derive(Debug)]
pub struct UsageError {
    /// The option, as typed: `--bind`.
    pub option: &'static str,
    /// The value it was given.
    pub value: String,
    /// Why it cannot be used.
    pub reason: String,
}

impl UsageError {
    /// Turns a failed `bind`/`connect` into a usage error naming the option:
    /// `socket.bind(&ep).map_err(UsageError::at("--bind", &ep))?`.
    pub fn at(option: &'static str, value: &str) -> impl FnOnce(zmq::Error) -> UsageError {
        let value = value.to_owned();
        move |error| UsageError {
            option,
            value,
            reason: error.message().to_lowercase(),
        }
    }
}

impl UsageError {
    /// A value that cannot be used, for a reason found after parsing (a file
    /// that cannot be read, say).
    pub fn new(option: &'static str, value: &str, reason: &str) -> UsageError {
        let mut chars = reason.chars();
        let reason = match chars.next() {
            // "No such file or directory" reads as the rest of the line.
            Some(first) => first.to_lowercase().chain(chars).collect(),
            None => String::new(),
        };
        UsageError {
            option,
            value: value.to_owned(),
            reason,
        }
    }
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot use '{}' for '{}': {}",
            self.value, self.option, self.reason
        )
    }
}

impl std::error::Error for UsageError {}

/// The crash asked for with `--crash-after N`.
#[derive(Debug)]
pub struct SimulatedCrash {
    /// How many replies were sent before the crash.
    pub after_replies: u64,
}

impl fmt::Display for SimulatedCrash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "simulated crash after {} (--crash-after)",
            Count::irregular(self.after_replies, "reply", "replies")
        )
    }
}

impl std::error::Error for SimulatedCrash {}

/// Parses the command line and its environment variables.
///
/// `--help` and `--version` print and exit 0. Any other problem prints clap's
/// diagnosis, which names the option and the value, on one line, and exits 2.
pub fn parse_args<T: Parser>() -> T {
    match T::try_parse() {
        Ok(args) => args,
        Err(error) if !error.use_stderr() => error.exit(),
        Err(error) => {
            eprintln!("{} (see --help)", one_line(&error.to_string()));
            std::process::exit(2);
        }
    }
}

/// clap's diagnosis without its usage and help hints, on one line: the
/// first paragraph, which holds the error and any list of the possible
/// values (`error: invalid value 'foo' for '--mode <MODE>' [possible values:
/// proxy, lb]`).
fn one_line(diagnosis: &str) -> String {
    let paragraph: Vec<&str> = diagnosis
        .lines()
        .map(str::trim)
        .take_while(|line| !line.is_empty())
        .collect();
    if paragraph.is_empty() {
        "error: bad command line".into()
    } else {
        paragraph.join(" ")
    }
}

/// Ends `main`: flushes buffered output, prints an error as one line, and
/// picks the exit code from the table above.
pub fn report(result: anyhow::Result<()>) -> ExitCode {
    crate::plumbing::output::flush();
    let Err(error) = result else {
        return ExitCode::SUCCESS;
    };
    eprintln!("error: {error:#}");
    if error.chain().any(|cause| cause.is::<UsageError>()) {
        ExitCode::from(2)
    } else if error.chain().any(|cause| cause.is::<SimulatedCrash>()) {
        ExitCode::from(3)
    } else {
        ExitCode::from(1)
    }
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn a_simulated_crash_counts_its_replies_in_the_singular_too() {
        let one = super::SimulatedCrash { after_replies: 1 };
        assert_eq!(
            one.to_string(),
            "simulated crash after 1 reply (--crash-after)"
        );
        let two = super::SimulatedCrash { after_replies: 2 };
        assert_eq!(
            two.to_string(),
            "simulated crash after 2 replies (--crash-after)"
        );
    }

    #[test]
    fn keeps_the_possible_values_and_drops_the_hints() {
        let clap = "error: invalid value 'foo' for '--mode <MODE>'\n  [possible values: proxy, lb]\n\n\
                    For more information, try '--help'.\n";
        assert_eq!(
            one_line(clap),
            "error: invalid value 'foo' for '--mode <MODE>' [possible values: proxy, lb]"
        );
        let clap = "error: unexpected argument '--foo' found\n\n  tip: to pass '--foo' as a value, \
                    use '-- --foo'\n\nUsage: broker [OPTIONS]\n";
        assert_eq!(one_line(clap), "error: unexpected argument '--foo' found");
        assert_eq!(one_line(""), "error: bad command line");
    }
}
