//! `worker --mode lb`: a worker for the load-balancing broker.
//!
//! A plain REP worker cannot tell the broker it is idle, nor notice that the
//! broker has died. This one uses a DEALER socket, which may send whenever
//! it likes, and speaks the protocol of [`crate::protocol`]:
//!
//! 1. connect and send READY with its name (a DEALER queues it until the
//!    connection is up, so the worker may start before the broker);
//! 2. receive `[client, "", body]`, work, and send back `[client, "", reply]`:
//!    the envelope, kept as it came, is the reply's return address;
//! 3. send a HEARTBEAT every `--heartbeat-ms`; the broker sends its own;
//! 4. after 3 intervals without a word from the broker, wait (1 s, doubling
//!    up to 32 s), then open a new socket and send READY again. Hearing from
//!    the broker meanwhile cancels the reconnection: libzmq reconnects the
//!    TCP connection by itself, and a restarted broker accepts the worker on
//!    its first heartbeat.

use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::envelope::{body_start, hex};
use crate::faults::Faults;
use crate::payload::show_frames;
use crate::plumbing::cli::Reply;
use crate::plumbing::exit::UsageError;
use crate::plumbing::keepalive;
use crate::plumbing::shutdown::{CHECK_INTERVAL_MS, Shutdown};
use crate::protocol::{self, Backoff, Frames, HEARTBEAT, READY};

/// What the worker needs to know.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The broker's backend (`--connect`).
    pub endpoint: String,
    /// Announced in READY, so the broker's log names the worker.
    pub name: String,
    /// What to answer.
    pub reply: Reply,
    /// Simulated work per request.
    pub work: Duration,
    /// Interval between heartbeats (`--heartbeat-ms`).
    pub heartbeat: Duration,
}

/// Serves requests from the broker until a stop is asked for; returns how
/// many replies it sent.
pub fn run(
    ctx: &zmq::Context,
    settings: &Settings,
    faults: &Faults,
    shutdown: &Shutdown,
) -> anyhow::Result<u64> {
    let expiry = protocol::expiry(settings.heartbeat);
    let mut backoff = Backoff::new();
    let mut socket = connect(ctx, settings)?;
    let mut last_heard = Instant::now();
    let mut next_heartbeat = Instant::now() + settings.heartbeat;
    let mut reconnect_at: Option<Instant> = None;
    let mut replies = 0u64;

    while !shutdown.requested() {
        match socket.recv_multipart(0) {
            Ok(frames) => {
                last_heard = Instant::now();
                if reconnect_at.take().is_some() {
                    info!("the broker answers again");
                }
                backoff.reset();
                match protocol::classify(&frames) {
                    Frames::Heartbeat => {}
                    Frames::Work => {
                        if faults.hang_if_due(replies, shutdown) {
                            break;
                        }
                        serve(&socket, &frames, settings, shutdown)?;
                        replies += 1;
                        faults.crash_if_due(replies)?;
                    }
                    Frames::Ready(_) | Frames::Malformed => {
                        warn!(
                            "unexpected message from the broker {}; ignored",
                            show_frames(&frames)
                        );
                    }
                }
            }
            Err(zmq::Error::EAGAIN | zmq::Error::EINTR) => {}
            Err(error) => return Err(error.into()),
        }

        let now = Instant::now();
        if now >= next_heartbeat {
            // Never wait here: with the broker gone, heartbeats just queue up
            // (to the high-water mark) for when it is back.
            let _ = socket.send(&[HEARTBEAT][..], zmq::DONTWAIT);
            next_heartbeat = now + settings.heartbeat;
        }
        if now.duration_since(last_heard) > expiry {
            match reconnect_at {
                None => {
                    let delay = backoff.next_delay();
                    warn!(
                        "broker silent for {:.1} s; reconnecting in {} s",
                        now.duration_since(last_heard).as_secs_f64(),
                        delay.as_secs()
                    );
                    reconnect_at = Some(now + delay);
                }
                Some(at) if now >= at => {
                    socket = connect(ctx, settings)?;
                    info!("reconnected to {} and sent READY again", settings.endpoint);
                    last_heard = now;
                    reconnect_at = None;
                }
                Some(_) => {}
            }
        }
    }
    Ok(replies)
}

/// Opens a DEALER to the broker and announces the worker with READY.
fn connect(ctx: &zmq::Context, settings: &Settings) -> anyhow::Result<zmq::Socket> {
    let socket = ctx.socket(zmq::DEALER)?;
    socket.set_linger(0)?; // a replaced socket's queued heartbeats are worthless
    let wake_ms = i32::try_from(settings.heartbeat.as_millis())
        .unwrap_or(CHECK_INTERVAL_MS)
        .clamp(1, CHECK_INTERVAL_MS);
    socket.set_rcvtimeo(wake_ms)?;
    // Besides our HEARTBEAT: ZMTP heartbeats, whatever --heartbeat-ms is.
    keepalive::enable(&socket)?;
    socket
        .connect(&settings.endpoint)
        .map_err(UsageError::at("--connect", &settings.endpoint))?;
    socket.send_multipart([&[READY][..], settings.name.as_bytes()], 0)?;
    Ok(socket)
}

/// Works on one request and sends the reply inside the request's envelope.
fn serve(
    socket: &zmq::Socket,
    frames: &[Vec<u8>],
    settings: &Settings,
    shutdown: &Shutdown,
) -> anyhow::Result<()> {
    // `classify` said Work, so there is an envelope.
    let body = body_start(frames).unwrap_or(frames.len());
    info!(
        "request {} from client {}",
        show_frames(&frames[body..]),
        hex(&frames[0])
    );
    shutdown.sleep(settings.work);
    let envelope = frames[..body].iter().map(Vec::as_slice);
    let reply = settings.reply.to(&frames[body..]);
    socket.send_multipart(envelope.chain(reply), 0)?;
    Ok(())
}
