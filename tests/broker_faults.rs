//! Issue 9, the broker and worker side: each defect a hard protocol review
//! found, reproduced with the real `broker` and `worker` on 127.0.0.1, and
//! test sockets of our own where a test needs a peer that misbehaves (a
//! worker answering twice, a client flooding, a broker that never answers).

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

fn socket(ctx: &zmq::Context, kind: zmq::SocketType) -> zmq::Socket {
    let socket = ctx.socket(kind).unwrap();
    socket.set_linger(0).unwrap();
    socket.set_rcvtimeo(10_000).unwrap();
    socket.set_sndtimeo(10_000).unwrap();
    socket
}

/// A process whose stderr is a pipe that nobody reads (until `stop_and_read`), as
/// a role started by a supervisor that does not collect its output.
/// Killed when dropped.
struct Unread {
    child: std::process::Child,
}

impl Unread {
    fn start(exe: &str, args: &[&str]) -> Unread {
        let child = Command::new(exe)
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Unread { child }
    }

    /// Stops the process (SIGTERM) and returns everything it wrote to stderr.
    fn stop_and_read(mut self) -> Vec<u8> {
        let mut stderr = self.child.stderr.take().unwrap();
        let reader = thread::spawn(move || {
            let mut all = Vec::new();
            let _ = stderr.read_to_end(&mut all);
            all
        });
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + SOON;
        while self.child.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "no exit within {SOON:?} of SIGTERM"
            );
            thread::sleep(Duration::from_millis(20));
        }
        reader.join().unwrap()
    }
}

impl Drop for Unread {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Worker log lines of 7 KB each (a request of 100 frames), with stderr
/// never read: past the pipe's 64 KiB and the 1 MiB buffer, lines must be
/// dropped, not the worker stopped.
#[test]
fn defect_6_output_never_blocks_a_socket_loop() {
    let ctx = zmq::Context::new();
    // The test is the broker: a DEALER that REP workers connect to.
    let broker = socket(&ctx, zmq::DEALER);
    broker.bind("tcp://127.0.0.1:*").unwrap();
    let endpoint = broker.get_last_endpoint().unwrap().unwrap();
    let worker = Unread::start(WORKER, &["--connect", &endpoint, "--echo"]);
    let frame = vec![b'x'; 64];
    let mut request: Vec<&[u8]> = vec![b""];
    request.extend(std::iter::repeat_n(frame.as_slice(), 100));
    broker.set_rcvtimeo(5000).unwrap();
    for i in 0..400 {
        broker.send_multipart(&request, 0).unwrap();
        let reply = broker.recv_multipart(0);
        assert!(reply.is_ok(), "no reply to request {i} within 5 s");
    }
    let log = worker.stop_and_read();
    let text = String::from_utf8_lossy(&log);
    assert!(
        text.contains("dropped"),
        "{}",
        text.lines().last().unwrap_or("")
    );
}
