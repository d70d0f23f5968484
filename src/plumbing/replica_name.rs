//! A replica's default name: the one Docker gave its container.
//!
//! Every log line names its replica (`worker[zmq-reqrep-worker-3]`). Outside
//! Docker the default is the host name. Inside a container the host name is
//! the container's id (`23cee8a41f0c`), while `docker compose ps`, `docker
//! kill` and the compose log prefix speak of `zmq-reqrep-worker-3`: a student
//! could not tell which line came from the replica they are about to kill.
//!
//! A container does not know its own name, but Docker's embedded DNS server
//! does. On a user-defined network (every compose project has one) the
//! container's `/etc/resolv.conf` names that server, `127.0.0.11`, and it
//! answers a reverse (PTR) query for the container's address with
//! `<container name>.<network name>`: `reqrep-worker-3.reqrep_default`.
//!
//! [`from_docker_dns`] asks exactly that at start-up, and only where it
//! applies: when `/etc/resolv.conf` names `127.0.0.11` (so not on a laptop,
//! nor in a container on Docker's default bridge). It drops the last label,
//! the network (compose names it `<project>_default`, without a dot). The
//! question goes over UDP to the local server and waits at most
//! [`TIMEOUT`]; any failure (no answer, no such name, a name that is not a
//! plain container name) leaves the caller with the host name.
//!
//! Docker Swarm is left to the host name. Its DNS learns a task's name
//! some time after the task's process has started, and, for a task with a
//! healthcheck (the workers have one), only once it is healthy: a worker
//! would start under its container's id, most clients under their names
//! (`zr_client.1.<task id>.zr_default`). Seen on Docker 20.10; one rule for
//! every replica reads better than a mixed log.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// Docker's embedded DNS server, as a container's resolv.conf names it.
const DOCKER_DNS: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 11);

/// The longest the lookup may delay a role's start. The server is local
/// and answers within a millisecond; this only bounds a broken one.
pub const TIMEOUT: Duration = Duration::from_millis(500);

/// DNS record type PTR, and class IN.
const PTR: u16 = 12;
const IN: u16 = 1;

/// The container's name, from Docker's embedded DNS; `None` outside a
/// container on a user-defined network, or if anything goes wrong.
pub fn from_docker_dns() -> Option<String> {
    let resolv = fs::read_to_string("/etc/resolv.conf").ok()?;
    if !names_docker_dns(&resolv) {
        return None;
    }
    let host = gethostname::gethostname().into_string().ok()?;
    let hosts = fs::read_to_string("/etc/hosts").ok()?;
    let address = own_address(&hosts, &host)?;
    let answer = ask_ptr(address, TIMEOUT)?;
    container_name(&answer)
}

/// Whether a resolv.conf sends queries to Docker's embedded server.
fn names_docker_dns(resolv: &str) -> bool {
    resolv.lines().any(|line| {
        let mut words = line.split_whitespace();
        words.next() == Some("nameserver") && words.next() == Some("127.0.0.11")
    })
}

/// The IPv4 address `/etc/hosts` gives the host name: Docker writes the
/// container's address there, under its id.
fn own_address(hosts: &str, host: &str) -> Option<Ipv4Addr> {
    hosts.lines().find_map(|line| {
        let line = line.split('#').next().unwrap_or_default();
        let mut words = line.split_whitespace();
        let address: Ipv4Addr = words.next()?.parse().ok()?;
        (!address.is_loopback() && words.any(|name| name == host)).then_some(address)
    })
}

/// One PTR query for `address` to Docker's server; the name it answers,
/// within `timeout`.
fn ask_ptr(address: Ipv4Addr, timeout: Duration) -> Option<String> {
    let deadline = Instant::now() + timeout;
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    socket.connect(SocketAddr::from((DOCKER_DNS, 53))).ok()?;
    let id = (std::process::id() & 0xffff) as u16;
    socket.send(&ptr_query(id, address)).ok()?;
    let mut buffer = [0u8; 512];
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        socket
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .ok()?;
        let size = socket.recv(&mut buffer).ok()?;
        match ptr_answer(&buffer[..size], id) {
            Answer::Name(name) => return Some(name),
            Answer::NoName => return None,
            // Not the answer to this query: keep waiting for it.
            Answer::Other => continue,
        }
    }
}

/// A DNS query (RFC 1035, section 4.1) for the PTR record of `address`:
/// `d.c.b.a.in-addr.arpa` for a.b.c.d, recursion desired.
fn ptr_query(id: u16, address: Ipv4Addr) -> Vec<u8> {
    let mut query = Vec::with_capacity(64);
    query.extend_from_slice(&id.to_be_bytes());
    query.extend_from_slice(&0x0100u16.to_be_bytes()); // a standard query, RD
    query.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]); // one question
    let octets = address.octets();
    for label in octets
        .iter()
        .rev()
        .map(u8::to_string)
        .chain(["in-addr".into(), "arpa".into()])
    {
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    query.push(0);
    query.extend_from_slice(&PTR.to_be_bytes());
    query.extend_from_slice(&IN.to_be_bytes());
    query
}

/// What an answer says.
#[derive(Debug, PartialEq)]
enum Answer {
    /// The name of its first PTR record.
    Name(String),
    /// The answer to our query, without a name: an error (NXDOMAIN), or no
    /// PTR record.
    NoName,
    /// Not the answer to our query, or unreadable.
    Other,
}

/// What the answer to query `id` says.
fn ptr_answer(message: &[u8], id: u16) -> Answer {
    let Some(header) = message.get(..12) else {
        return Answer::Other;
    };
    let flags = u16::from_be_bytes([header[2], header[3]]);
    let is_response = flags & 0x8000 != 0;
    if u16::from_be_bytes([header[0], header[1]]) != id || !is_response {
        return Answer::Other;
    }
    if flags & 0x000f != 0 {
        return Answer::NoName;
    }
    match first_ptr(message) {
        Some(Some(name)) => Answer::Name(name),
        Some(None) => Answer::NoName,
        None => Answer::Other,
    }
}

/// The name of the first PTR record of a well-formed answer (`Some(None)`
/// without one); `None` if the answer cannot be read.
fn first_ptr(message: &[u8]) -> Option<Option<String>> {
    let questions = u16::from_be_bytes([*message.get(4)?, *message.get(5)?]);
    let answers = u16::from_be_bytes([*message.get(6)?, *message.get(7)?]);
    let mut at = 12;
    for _ in 0..questions {
        at = read_name(message, at)?.1 + 4; // type and class
    }
    for _ in 0..answers {
        let (_, after_name) = read_name(message, at)?;
        let fixed = message.get(after_name..after_name + 10)?;
        let kind = u16::from_be_bytes([fixed[0], fixed[1]]);
        let length = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
        let data = after_name + 10;
        if kind == PTR {
            return read_name(message, data).map(|(name, _)| Some(name));
        }
        at = data + length;
    }
    Some(None)
}

/// A domain name at `at`, labels joined with dots, following compression
/// pointers (at most a few: a loop of pointers ends in `None`); and where
/// the data after the name (in place, not after a pointer) begins.
fn read_name(message: &[u8], mut at: usize) -> Option<(String, usize)> {
    let mut labels: Vec<String> = Vec::new();
    let mut resume = None;
    for _ in 0..32 {
        let length = *message.get(at)?;
        match length {
            0 => return Some((labels.join("."), resume.unwrap_or(at + 1))),
            0xc0..=0xff => {
                let low = *message.get(at + 1)?;
                resume.get_or_insert(at + 2);
                at = usize::from(u16::from_be_bytes([length & 0x3f, low]));
            }
            1..=63 => {
                let label = message.get(at + 1..at + 1 + usize::from(length))?;
                labels.push(String::from_utf8(label.to_vec()).ok()?);
                at += 1 + usize::from(length);
            }
            _ => return None,
        }
    }
    None
}

/// The container's name in Docker's answer, `<container>.<network>`, the
/// network dropped. `None` for anything but a plain container name, and for
/// a Swarm task's (`zr_worker.1.<task id of 25 characters>`): see the
/// module's documentation.
fn container_name(answer: &str) -> Option<String> {
    let answer = answer.strip_suffix('.').unwrap_or(answer);
    let (container, _network) = answer.rsplit_once('.')?;
    let plain = |c: char| c.is_ascii_alphanumeric() || "_.-".contains(c);
    if container.is_empty() || !container.chars().all(plain) {
        return None;
    }
    let swarm_task = container.split('.').nth(2).is_some_and(|id| {
        id.len() == 25
            && id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    });
    (!swarm_task).then(|| container.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_resolv_conf_naming_dockers_server_applies() {
        assert!(names_docker_dns("nameserver 127.0.0.11\noptions ndots:0\n"));
        assert!(!names_docker_dns("nameserver 10.0.2.3\n"));
        assert!(!names_docker_dns(
            "# nameserver 127.0.0.11\nnameserver 1.1.1.1\n"
        ));
    }

    #[test]
    fn the_own_address_is_the_host_names_line_in_etc_hosts() {
        let hosts =
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n172.21.0.2\t9891d0c5d2c3\n";
        assert_eq!(
            own_address(hosts, "9891d0c5d2c3"),
            Some(Ipv4Addr::new(172, 21, 0, 2))
        );
        assert_eq!(own_address(hosts, "localhost"), None);
        assert_eq!(own_address(hosts, "other"), None);
    }

    #[test]
    fn the_query_asks_for_the_reversed_address_in_in_addr_arpa() {
        let query = ptr_query(0x1234, Ipv4Addr::new(172, 21, 0, 2));
        let mut want = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        want.extend_from_slice(b"\x012\x010\x0221\x03172\x07in-addr\x04arpa\x00\x00\x0c\x00\x01");
        assert_eq!(query, want);
    }

    /// The answer Docker 20.10's server gave to such a query, with the
    /// question repeated and the name in the answer pointing back to it.
    fn answer(id: u16, name: &str) -> Vec<u8> {
        let mut message = ptr_query(id, Ipv4Addr::new(172, 21, 0, 2));
        message[2] = 0x81; // a response, RD
        message[3] = 0x80; // RA, no error
        message[7] = 1; // one answer
        message.extend_from_slice(&[0xc0, 12]); // the name of the question
        message.extend_from_slice(&[0, 12, 0, 1, 0, 0, 2, 88]); // PTR, IN, TTL 600
        let mut data = Vec::new();
        for label in name.split('.') {
            data.push(label.len() as u8);
            data.extend_from_slice(label.as_bytes());
        }
        data.push(0);
        message.extend_from_slice(&(data.len() as u16).to_be_bytes());
        message.extend_from_slice(&data);
        message
    }

    #[test]
    fn the_answer_gives_the_name_of_its_ptr_record() {
        let message = answer(7, "reqrep-worker-3.reqrep_default");
        assert_eq!(
            ptr_answer(&message, 7),
            Answer::Name("reqrep-worker-3.reqrep_default".into())
        );
        assert_eq!(
            ptr_answer(&message, 8),
            Answer::Other,
            "another query's answer"
        );
        let mut failed = message.clone();
        failed[3] = 0x83; // NXDOMAIN: not known yet, under Swarm
        assert_eq!(ptr_answer(&failed, 7), Answer::NoName);
        let mut empty = ptr_query(7, Ipv4Addr::new(172, 21, 0, 2));
        empty[2] = 0x81;
        assert_eq!(ptr_answer(&empty, 7), Answer::NoName, "no answer record");
    }

    #[test]
    fn a_truncated_or_looping_answer_is_no_name_and_no_panic() {
        let message = answer(7, "reqrep-worker-3.reqrep_default");
        for end in 0..message.len() {
            assert_eq!(
                ptr_answer(&message[..end], 7),
                Answer::Other,
                "cut at {end}"
            );
        }
        let mut looping = message.clone();
        let pointer = looping.len() - 2 - "reqrep-worker-3.reqrep_default".len();
        looping[pointer] = 0xc0; // a pointer to itself
        looping[pointer + 1] = pointer as u8;
        assert_eq!(ptr_answer(&looping, 7), Answer::Other);
    }

    #[test]
    fn the_network_is_dropped_and_a_swarm_task_keeps_its_host_name() {
        let name = |answer| container_name(answer);
        assert_eq!(
            name("reqrep-worker-3.reqrep_default").as_deref(),
            Some("reqrep-worker-3")
        );
        assert_eq!(
            name("zmq-reqrep-client-run-5d0f1e2a3b4c.zmq-reqrep_default.").as_deref(),
            Some("zmq-reqrep-client-run-5d0f1e2a3b4c")
        );
        assert_eq!(
            name("zr_worker.1.rlp5pt03eartutgzztga91ily.zr_default"),
            None,
            "a Swarm task"
        );
        assert_eq!(name("no-network"), None);
        assert_eq!(name("bad name.net"), None);
        assert_eq!(name(".net"), None);
    }
}
