//! Fault injection for the lecture's "what if the server dies?" experiment.
//!
//! `--crash-after N` ends the process with exit code 3 right after its Nth
//! reply, as a crash would (the reply itself still goes out). `--hang-after N`
//! keeps the process alive but never answers again, the harder failure: the
//! TCP connection stays up, so only a timeout can notice it: the client's,
//! or, for `worker --mode lb`, the broker's (a hung worker stops
//! heartbeating too).

use clap::Args;
use tracing::warn;

use crate::plumbing::exit::SimulatedCrash;
use crate::plumbing::logging::Count;
use crate::plumbing::shutdown::Shutdown;

/// The fault options of `reqrep_server` and `worker`.
#[derive(Args, Debug, Clone, Default)]
pub struct Faults {
    /// Exit with code 3 right after this many replies, as a crash would
    #[arg(long, env, value_parser = clap::value_parser!(u64).range(1..))]
    pub crash_after: Option<u64>,

    /// Stop answering after this many replies, but stay alive
    #[arg(long, env, value_parser = clap::value_parser!(u64).range(1..))]
    pub hang_after: Option<u64>,
}

impl Faults {
    /// Call before answering a request, with the number of replies sent so
    /// far. If the server should hang now, this waits until Ctrl-C/SIGTERM and
    /// returns `true`: the caller then stops without replying.
    pub fn hang_if_due(&self, replies: u64, shutdown: &Shutdown) -> bool {
        if self.hang_after != Some(replies) {
            return false;
        }
        warn!(
            "hanging after {} (--hang-after): alive, but answering no more",
            Count::irregular(replies, "reply", "replies")
        );
        shutdown.wait();
        true
    }

    /// Call after each reply with the number sent so far. Returns the
    /// simulated crash once it is due; the caller returns it as its error.
    pub fn crash_if_due(&self, replies: u64) -> Result<(), SimulatedCrash> {
        if self.crash_after == Some(replies) {
            warn!(
                "crashing after {} (--crash-after)",
                Count::irregular(replies, "reply", "replies")
            );
            return Err(SimulatedCrash {
                after_replies: replies,
            });
        }
        Ok(())
    }
}
