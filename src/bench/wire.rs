//! The `wire` scenario: what the relay that shows the bytes (`wire`) costs.
//!
//! It is a teaching tool, and its cost is stated, not hidden: the same
//! bare libzmq REQ/REP round trips as the `reqrep` baseline, directly (the
//! baseline) and through `wire` printing every message, in the same run;
//! then 100 lock-step clients through one relay, for its memory with 100
//! connections (the RSS column is the relay's there, the REP's in the
//! baseline). The relay's lines go to a pipe the bench reads, as they would
//! to `docker compose logs`.
//!
//! So that `bench all` stays short, the two round-trip variants run
//! `--repeat` times up to 3, and the 100 connections once.

use super::scenarios::{Once, Run, Variant, endpoints, fleet, measure, outcome, peer};
use super::{Options, Row};
use crate::plumbing::child::{Child, Stream};

/// Connections in the memory row.
pub const CONNECTIONS: usize = 100;

/// Direct round trips, round trips through `wire`, and `wire` with 100
/// connections.
pub fn wire(options: &Options) -> anyhow::Result<Vec<Row>> {
    let variant = |name: &str, baseline, clients| Variant {
        scenario: "wire",
        name: name.into(),
        baseline,
        clients,
        workers: 0,
    };
    let direct: Once<'_> = Box::new(|| round_trips(false, options));
    let relayed: Once<'_> = Box::new(|| round_trips(true, options));
    let short = Options {
        repeat: options.repeat.min(3),
        ..options.clone()
    };
    let mut rows = measure(
        vec![
            (variant("bare libzmq REQ/REP, direct", true, 1), direct),
            (variant("the same through wire", false, 1), relayed),
        ],
        &short,
    )?;
    let many: Once<'_> = Box::new(|| many_connections(options));
    let once = Options {
        repeat: 1,
        ..options.clone()
    };
    let name = format!("wire, {CONNECTIONS} clients through it");
    rows.extend(measure(
        vec![(variant(&name, false, CONNECTIONS), many)],
        &once,
    )?);
    Ok(rows)
}

/// A bare REP, and `wire` in front of it: (rep, wire, the relay's endpoint).
fn rep_behind_wire() -> anyhow::Result<(Child, Child, String)> {
    let rep = peer(&["rep-bare", "--bind", "tcp://127.0.0.1:*"])?;
    let endpoint = endpoints(&rep, "listening on")?.remove(0);
    let args = ["--listen", "tcp://127.0.0.1:*", "--to", &endpoint].map(String::from);
    let wire = Child::role("wire", &args)?;
    let through = endpoints(&wire, "listening on")?.remove(0);
    Ok((rep, wire, through))
}

/// Lock-step round trips of a bare REQ to a bare REP, through `wire` or not.
fn round_trips(through_wire: bool, options: &Options) -> anyhow::Result<Run> {
    let (mut rep, mut wire, endpoint) = if through_wire {
        let (rep, wire, through) = rep_behind_wire()?;
        (rep, Some(wire), through)
    } else {
        let rep = peer(&["rep-bare", "--bind", "tcp://127.0.0.1:*"])?;
        let endpoint = endpoints(&rep, "listening on")?.remove(0);
        (rep, None, endpoint)
    };
    let (count, size) = (options.round_trips.to_string(), options.size.to_string());
    let run_ms = options.run.as_millis().to_string();
    let mut client = peer(&[
        "req-bare",
        "--connect",
        &endpoint,
        "--count",
        &count,
        "--size",
        &size,
        "--run-ms",
        &run_ms,
    ])?;
    let outcome = outcome(&mut client, options)?;
    // The memory and CPU of the relay where there is one.
    let run = Run::from_outcome(outcome, wire.as_ref().unwrap_or(&rep));
    if let Some(wire) = &mut wire {
        wire.stop();
        if wire.lines(Stream::Out).is_empty() {
            anyhow::bail!("wire printed nothing");
        }
    }
    rep.stop();
    Ok(run)
}

/// [`CONNECTIONS`] lock-step clients through one relay.
fn many_connections(options: &Options) -> anyhow::Result<Run> {
    let (mut rep, mut wire, through) = rep_behind_wire()?;
    let per_client = (options.requests / 10).max(1);
    let mut clients = fleet(&through, CONNECTIONS, per_client, options, &[])?;
    let run = Run::from_outcome(outcome(&mut clients, options)?, &wire);
    wire.stop();
    rep.stop();
    Ok(run)
}
