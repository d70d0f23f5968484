//! The request loop shared by `reqrep_client` and `broker_client`.
//!
//! Both are the same program: a REQ socket cannot tell a REP server from a
//! broker's ROUTER frontend, which is the point of a broker. The loop sends a
//! request, waits for its reply (see [`crate::lazy_pirate`] for the REQ
//! socket, one per server when there are several, and the retries), prints
//! one line, pauses `--interval-ms`, and goes again, `--count` times or
//! forever.
//!
//! Output, one line per reply, then a summary at the end:
//!
//! ```text
//! reqrep_client[laptop] #1 sent b"Hello" got b"World" in 0.412 ms
//! reqrep_client[laptop] done: 1 reply to 1 request, 0 resends, in 0.001 s, round trip avg 0.412 ms, max 0.412 ms
//! ```
//!
//! The summary counts the requests that left the client (a resend is not a
//! new request), and gives no average when no reply came ("no round trips").

use std::time::{Duration, Instant};

use tracing::info;

use crate::lazy_pirate::{Outcome, Policy, ReliableReq};
use crate::payload::{self, show, show_frames};
use crate::plumbing::cli::ClientArgs;
use crate::plumbing::logging::Count;
use crate::plumbing::output;
use crate::plumbing::shutdown::Shutdown;

/// Round-trip figures for the summary line.
#[derive(Debug, Default)]
struct RoundTrips {
    count: u64,
    total: Duration,
    max: Duration,
}

impl RoundTrips {
    fn record(&mut self, rtt: Duration) {
        self.count += 1;
        self.total += rtt;
        self.max = self.max.max(rtt);
    }

    fn average(&self) -> Option<Duration> {
        u32::try_from(self.count)
            .ok()
            .filter(|&count| count > 0)
            .map(|count| self.total / count)
    }
}

impl std::fmt::Display for RoundTrips {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.average() {
            Some(average) => write!(
                f,
                "round trip avg {} ms, max {} ms",
                Millis(average),
                Millis(self.max)
            ),
            None => f.write_str("no round trips"),
        }
    }
}

/// A duration in milliseconds with three decimals (`0.412`), formatted
/// from whole microseconds: cheaper than a float on the per-reply path.
struct Millis(Duration);

impl std::fmt::Display for Millis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let micros = self.0.as_micros();
        write!(f, "{}.{:03}", micros / 1000, micros % 1000)
    }
}

/// Runs the client until `--count` replies, Ctrl-C/SIGTERM, or a request
/// that goes unanswered after every retry (an error).
pub fn run(role: &str, args: &ClientArgs, shutdown: &Shutdown) -> anyhow::Result<()> {
    let request = payload::load(
        &args.message,
        args.message_file.as_deref(),
        "--message-file",
    )?;
    let interval = Duration::from_millis(args.interval_ms);
    // Formatted once, not for every reply line.
    let who = format!("{role}[{}]", args.name.name);
    let request_shown = show(&request).to_string();

    let ctx = zmq::Context::new();
    let policy = Policy::new(args.timeout_ms, args.retries);
    let mut req = ReliableReq::connect(&ctx, &args.connect, policy)?;
    info!("REQ connecting to {}", args.connect.join(", "));

    let mut round_trips = RoundTrips::default();
    let mut seq = 0u64;
    let started = Instant::now();
    let result = loop {
        if args.count > 0 && seq == args.count {
            break Ok(());
        }
        seq += 1;
        let asked = Instant::now();
        match req.request(&request, seq, shutdown) {
            Ok(Outcome::Reply(reply)) => {
                let rtt = asked.elapsed();
                round_trips.record(rtt);
                output::line(format_args!(
                    "{who} #{seq} sent {request_shown} got {} in {} ms",
                    show_frames(&reply),
                    Millis(rtt)
                ));
            }
            Ok(Outcome::Stopped) => break Ok(()),
            Err(error) => break Err(error),
        }
        // The pause is between requests: none after the last one.
        let last = args.count > 0 && seq == args.count;
        if !last && !interval.is_zero() && !shutdown.sleep(interval) {
            break Ok(());
        }
    };
    output::line(format_args!(
        "{who} done: {} to {}, {}, in {:.3} s, {round_trips}",
        Count::irregular(round_trips.count, "reply", "replies"),
        Count::new(req.sent(), "request"),
        Count::new(req.resends(), "resend"),
        started.elapsed().as_secs_f64(),
    ));
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_with_three_decimals() {
        assert_eq!(Millis(Duration::from_micros(412)).to_string(), "0.412");
        assert_eq!(
            Millis(Duration::from_micros(5_011_440)).to_string(),
            "5011.440"
        );
        assert_eq!(Millis(Duration::from_nanos(999)).to_string(), "0.000");
    }
}
