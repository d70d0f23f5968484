//! The `page` scenario: what the live page (`broker --http`) costs the
//! load-balancing broker while people watch it.
//!
//! The same lb broker, workers and clients as the `broker` scenario's lb
//! row, three ways: without `--http` (the baseline); with `--http` and one
//! viewer doing what the page does in a browser (GET / once, then GET
//! /stats every 400 ms, the JSON parsed); and with 30 such viewers, a
//! class that opened the page on its laptops. The viewers run in a
//! process of their own (`bench peer viewer`), as a browser would.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};

use super::scenarios::{Broker, Once, READY_WITHIN, Run, Variant, fleet, measure, outcome, peer};
use super::{Options, Row};
use crate::plumbing::child::Stream;
use crate::plumbing::logging::Count;

/// How often the page asks for `/stats` (`POLL_MS` in dashboard.html).
pub const POLL_EVERY: Duration = Duration::from_millis(400);

/// The lb broker without and with its page watched.
pub fn page(options: &Options) -> anyhow::Result<Vec<Row>> {
    let variants = [
        (None, "broker --mode lb"),
        (Some(1), "the same, --http, 1 viewer polling"),
        (Some(30), "the same, --http, 30 viewers polling"),
    ]
    .into_iter()
    .map(|(viewers, name)| {
        let variant = Variant {
            scenario: "page",
            name: name.into(),
            baseline: viewers.is_none(),
            clients: options.clients,
            workers: options.workers,
        };
        let once: Once<'_> = Box::new(move || watched(viewers, options));
        (variant, once)
    })
    .collect();
    measure(variants, options)
}

/// One run: an lb broker, with its page and `viewers` viewers if given.
fn watched(viewers: Option<usize>, options: &Options) -> anyhow::Result<Run> {
    let page = match viewers {
        Some(_) => vec!["--http".into(), "127.0.0.1:0".into()],
        None => Vec::new(),
    };
    let (mut broker, frontend, backend) = Broker::Lb.start_with(page)?;
    let mut viewer = match viewers {
        Some(viewers) => {
            let line = broker
                .wait_for(Stream::Err, "live page on http://", 1, READY_WITHIN)?
                .remove(0);
            let address = line
                .split("http://")
                .nth(1)
                .and_then(|rest| rest.split('/').next())
                .ok_or_else(|| anyhow!("no address in {line:?}"))?
                .to_string();
            let viewers = viewers.to_string();
            let child = peer(&["viewer", "--address", &address, "--viewers", &viewers])?;
            child.wait_for(Stream::Err, "viewing", 1, READY_WITHIN)?;
            Some(child)
        }
        None => None,
    };
    let work = vec![options.work_ms; options.workers];
    let mut workers = Broker::Lb.workers(&broker, &backend, &work, None)?;
    let mut fleet = fleet(&frontend, options.clients, options.requests, options, &[])?;
    let run = Run::from_outcome(outcome(&mut fleet, options)?, &broker);
    if let Some(viewer) = &mut viewer {
        viewer.stop();
        let lines = viewer.lines(Stream::Out);
        if let Some(error) = lines.iter().find(|line| line.starts_with("error")) {
            bail!("a viewer of the page: {error}");
        }
    }
    for worker in &mut workers {
        worker.stop();
    }
    broker.stop();
    Ok(run)
}

/// `bench peer viewer`: `viewers` threads, each doing what the page does in
/// a browser: GET / once, then GET /stats at once and every
/// [`POLL_EVERY`], parsing the JSON. Says `viewing` on stderr once every
/// viewer has the page and its first figures, then prints `stats` on
/// stdout for each later answer (`error: ...` for a failure), until it is
/// killed.
pub fn viewer(address: &str, viewers: usize) -> anyhow::Result<()> {
    let (loaded, page_loads) = mpsc::channel();
    for _ in 0..viewers {
        let address = address.to_string();
        let loaded = loaded.clone();
        thread::spawn(move || {
            let stats = || {
                get(&address, "/stats").and_then(|body| {
                    serde_json::from_slice::<serde_json::Value>(&body).context("/stats is not JSON")
                })
            };
            // As the page does: its first /stats right after loading.
            let first = get(&address, "/").and_then(|_| stats());
            let _ = loaded.send(first.map(|_| ()));
            let mut next = Instant::now();
            loop {
                next += POLL_EVERY;
                thread::sleep(next.saturating_duration_since(Instant::now()));
                match stats() {
                    Ok(_) => println!("stats"),
                    Err(error) => println!("error: {error:#}"),
                }
            }
        });
    }
    for _ in 0..viewers {
        page_loads.recv()??;
    }
    eprintln!(
        "viewing http://{address}/ with {}",
        Count::new(viewers as u64, "viewer")
    );
    loop {
        thread::park();
    }
}

/// GET `path`: the body of a 200 answer.
fn get(address: &str, path: &str) -> anyhow::Result<Vec<u8>> {
    let mut stream =
        TcpStream::connect(address).with_context(|| format!("connecting to {address}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {address}\r\n\r\n")?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    let end = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("GET {path}: no HTTP answer"))?;
    if !answer.starts_with(b"HTTP/1.1 200 ") {
        let line = String::from_utf8_lossy(&answer[..end]);
        bail!("GET {path}: {}", line.lines().next().unwrap_or_default());
    }
    Ok(answer[end + 4..].to_vec())
}
