//! Logging set-up: one line per event, naming the role and the replica.
//!
//! Every role calls [`init`] first. Log lines go to the buffered standard
//! error (see [`crate::plumbing::output`]) and read
//!
//! ```text
//! 2026-11-26T17:21:11.372487Z  INFO reqrep_server[3f2a1c9b7d10] request b"Hello"
//! ```
//!
//! so that `docker compose logs` of five replicas reads like a conversation
//! between named parties (under compose the name defaults to the container
//! id). `RUST_LOG` chooses the level, `info` by default.

use std::cell::RefCell;
use std::fmt;
use std::io::IsTerminal;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

static WHO: OnceLock<String> = OnceLock::new();

/// Installs the global log subscriber; every line will start with
/// `role[name]`. Calling it again keeps the first set-up.
pub fn init(role: &str, name: &str) {
    if WHO.set(format!("{role}[{name}]")).is_err() {
        return;
    }
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Fails only if another subscriber is installed already; keep that one.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        // Sanitizing every field for terminal escapes costs a scan of each
        // line; nothing here logs raw peer-supplied text instead: payloads
        // and names from the network are escaped (`payload::show`,
        // `payload::text`) before they reach a log line.
        .with_ansi_sanitization(false)
        .event_format(RoleLine)
        .with_writer(|| crate::plumbing::output::STDERR)
        .try_init();
}

/// `<time> <LEVEL> <role>[<name>] <message>`
struct RoleLine;

impl<S, N> FormatEvent<S, N> for RoleLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write_timestamp(&mut writer)?;
        let who = WHO.get().map_or("?", String::as_str);
        write!(writer, " {:>5} {who} ", event.metadata().level())?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// Writes the current UTC time as `2026-11-26T18:07:00.005072Z`.
///
/// Formatting a full date for every line cost as much as the rest of a
/// server's request handling, so the `YYYY-MM-DDTHH:MM:SS` part is kept per
/// thread and redone only when the second changes.
fn write_timestamp(writer: &mut Writer<'_>) -> fmt::Result {
    thread_local! {
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let seconds = now.as_secs();
    SECOND.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.0 != seconds {
            *cache = (seconds, utc_seconds(seconds));
        }
        writer.write_str(&cache.1)?;
        // ".005072Z", digit by digit: cheaper than the formatting machinery.
        let mut fraction = *b".000000Z";
        let mut micros = now.subsec_micros();
        for digit in fraction[1..7].iter_mut().rev() {
            *digit = b'0' + (micros % 10) as u8;
            micros /= 10;
        }
        writer.write_str(std::str::from_utf8(&fraction).map_err(|_| fmt::Error)?)
    })
}

/// `YYYY-MM-DDTHH:MM:SS` of a Unix time (days to civil date after Howard
/// Hinnant's algorithm, for the proleptic Gregorian calendar).
fn utc_seconds(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let (hour, minute, second) = (unix % 86_400 / 3600, unix % 3600 / 60, unix % 60);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}")
}

/// A count with its noun, singular or plural: `1 request`, `2 requests`.
/// Log lines and summaries use it, so that nobody reads "1 requests".
#[derive(Clone, Copy, Debug)]
pub struct Count<'a> {
    n: u64,
    one: &'a str,
    many: &'a str,
}

impl<'a> Count<'a> {
    /// `n` of a noun whose plural adds an `s`: `Count::new(2, "request")`.
    pub fn new(n: u64, one: &'a str) -> Self {
        Count { n, one, many: "" }
    }

    /// `n` of a noun with its own plural: `Count::irregular(2, "reply", "replies")`.
    pub fn irregular(n: u64, one: &'a str, many: &'a str) -> Self {
        Count { n, one, many }
    }
}

impl fmt::Display for Count<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.n, self.many) {
            (1, _) => write!(f, "1 {}", self.one),
            (n, "") => write!(f, "{n} {}s", self.one),
            (n, many) => write!(f, "{n} {many}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Count, utc_seconds};

    #[test]
    fn counts_take_singular_or_plural() {
        assert_eq!(Count::new(1, "request").to_string(), "1 request");
        assert_eq!(Count::new(0, "request").to_string(), "0 requests");
        assert_eq!(Count::new(2, "resend").to_string(), "2 resends");
        assert_eq!(
            Count::irregular(1, "reply", "replies").to_string(),
            "1 reply"
        );
        assert_eq!(
            Count::irregular(3, "reply", "replies").to_string(),
            "3 replies"
        );
    }

    #[test]
    fn formats_utc_dates() {
        assert_eq!(utc_seconds(0), "1970-01-01T00:00:00");
        assert_eq!(utc_seconds(951_782_400), "2000-02-29T00:00:00");
        assert_eq!(utc_seconds(1_795_716_420), "2026-11-26T18:07:00");
        assert_eq!(utc_seconds(4_107_542_399), "2100-02-28T23:59:59");
    }
}
