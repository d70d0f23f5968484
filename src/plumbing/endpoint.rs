//! Checking ZeroMQ endpoints before libzmq sees them.
//!
//! libzmq is lenient in ways that surprise students: it binds
//! `tcp://*:99999` to port 34463 (99999 modulo 65536) and accepts
//! `connect("tcp://localhost:5555x")`, which then never connects. So every
//! `--bind` and `--connect` value goes through [`parse_bind`] or
//! [`parse_connect`] first, and a mistake is reported at start-up, naming the
//! option. A host name that does not resolve yet is *not* a mistake: under
//! docker compose, names appear when their container starts, and libzmq keeps
//! retrying the connection in the background.

/// Transports a role can use (`inproc` only makes sense inside one process).
const TRANSPORTS: [&str; 3] = ["tcp", "ipc", "inproc"];

/// Which end of the connection an endpoint is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// `bind`: the address is local; `*` means every interface and, as the
    /// port, any free port (libzmq's ephemeral port).
    Bind,
    /// `connect`: the address names the peer.
    Connect,
}

/// Checks one endpoint, explaining what is wrong with it.
pub fn check(endpoint: &str, side: Side) -> Result<(), String> {
    let Some((transport, address)) = endpoint.split_once("://") else {
        return Err("expected transport://address, for example tcp://localhost:5555".into());
    };
    if !TRANSPORTS.contains(&transport) {
        return Err(format!(
            "unknown transport '{transport}' (use tcp://, ipc:// or inproc://)"
        ));
    }
    if address.is_empty() {
        return Err(format!("nothing after {transport}://"));
    }
    if transport == "tcp" {
        check_tcp(address, side)?;
    }
    Ok(())
}

fn check_tcp(address: &str, side: Side) -> Result<(), String> {
    let Some((host, port)) = address.rsplit_once(':') else {
        return Err(format!(
            "missing port: write tcp://{address}:5555, for example"
        ));
    };
    if host.is_empty() {
        return Err("missing host before the port".into());
    }
    if side == Side::Connect && host == "*" {
        return Err(
            "connect needs a host name or address; '*' only means 'every interface' for bind"
                .into(),
        );
    }
    if side == Side::Bind && port == "*" {
        return Ok(());
    }
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("port '{port}' is not a number"));
    }
    match port.parse::<u32>() {
        Ok(1..=65535) => Ok(()),
        _ => Err(format!("port {port} is out of range (1-65535)")),
    }
}

/// A clap value parser for `--bind`-like options.
pub fn parse_bind(endpoint: &str) -> Result<String, String> {
    check(endpoint, Side::Bind).map(|()| endpoint.to_owned())
}

/// A clap value parser for `--connect`-like options.
pub fn parse_connect(endpoint: &str) -> Result<String, String> {
    check(endpoint, Side::Connect).map(|()| endpoint.to_owned())
}

/// The address a socket actually listens on (`tcp://0.0.0.0:5555`), which
/// differs from the `--bind` value when that used `*` as the port.
pub fn last_endpoint(socket: &zmq::Socket) -> String {
    match socket.get_last_endpoint() {
        Ok(Ok(endpoint)) => endpoint,
        _ => "(unknown endpoint)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_what_the_course_uses() {
        for ok in [
            "tcp://*:5555",
            "tcp://0.0.0.0:5556",
            "tcp://127.0.0.1:*",
            "ipc:///tmp/reqrep",
            "inproc://workers",
        ] {
            assert_eq!(check(ok, Side::Bind), Ok(()), "{ok}");
        }
        for ok in [
            "tcp://localhost:5555",
            "tcp://server:5555",
            "tcp://[::1]:5555",
            "tcp://not-resolvable-yet:5555",
        ] {
            assert_eq!(check(ok, Side::Connect), Ok(()), "{ok}");
        }
    }

    #[test]
    fn rejects_what_libzmq_lets_through_or_misreads() {
        let cases = [
            ("tcp://*:99999", Side::Bind, "out of range"),
            ("tcp://*:0", Side::Bind, "out of range"),
            ("tcp://localhost:99999", Side::Connect, "out of range"),
            ("tcp://localhost:5555x", Side::Connect, "not a number"),
            ("tcp://localhost", Side::Connect, "missing port"),
            ("tcp://:5555", Side::Connect, "missing host"),
            ("tcp://*:5555", Side::Connect, "'*'"),
            ("tcp://localhost:*", Side::Connect, "not a number"),
            (
                "udp://localhost:5555",
                Side::Connect,
                "unknown transport 'udp'",
            ),
            ("localhost:5555", Side::Connect, "expected transport://"),
            ("ipc://", Side::Bind, "nothing after"),
        ];
        for (endpoint, side, expected) in cases {
            let error = check(endpoint, side).expect_err(endpoint);
            assert!(error.contains(expected), "{endpoint}: {error}");
        }
    }
}
