//! Logging set-up: one line per event, naming the role and the replica.
//!
//! Every role calls [`init`] first. Log lines go to the buffered standard
//! error (see [`crate::output`]) and read
//!
//! ```text
//! 2026-11-26T17:21:11.372487Z  INFO reqrep_server[3f2a1c9b7d10] request b"Hello"
//! ```
//!
//! so that `docker compose logs` of five replicas reads like a conversation
//! between named parties (under compose the name defaults to the container
//! id). `RUST_LOG` chooses the level, `info` by default.

use std::fmt;
use std::io::IsTerminal;
use std::sync::OnceLock;

use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
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
        .event_format(RoleLine)
        .with_writer(|| crate::output::Stderr)
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
        SystemTime.format_time(&mut writer)?;
        let who = WHO.get().map_or("?", String::as_str);
        write!(writer, " {:>5} {who} ", event.metadata().level())?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}
