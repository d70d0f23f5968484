//! Room for many connections: the open-files limit and the listen backlog.
//!
//! Each TCP connection costs a file descriptor. A listening role holds one
//! per peer, and its connection monitor a second one for as many peers as
//! a quarter of the limit allows (see [`crate::plumbing::monitor`]); a
//! process that
//! *opens* many libzmq sockets holds two per socket: its connection, and
//! its mailbox (an eventfd through which libzmq's I/O thread wakes the
//! socket). Many systems start processes with a soft limit of 1024 (macOS:
//! 256), far below what the kernel allows (the hard limit): [`raise_open_files`]
//! lifts the soft limit to the hard one at start-up. Only root (with
//! CAP_SYS_RESOURCE) can raise the hard limit itself: `ulimit -Hn` in a
//! root shell, `LimitNOFILE=` in a systemd unit, `ulimits: nofile:` in a
//! compose file, `--ulimit nofile=N:N` for `docker run`.
//!
//! Connections that arrive all at once wait in the kernel's accept queue,
//! whose length is the listen backlog a socket asks for (ZMQ_BACKLOG),
//! capped by `net.core.somaxconn` without a word; past it the kernel turns
//! connections away (`sysctl -w net.core.somaxconn=N` raises it, `sysctls:`
//! in a compose file for a container). [`backlog_cap`] reads that cap and
//! [`listen_overflows`] the kernel's count of connections turned away, so
//! that a listener can say when it bites.

use std::io;

/// A process's open-files limit (RLIMIT_NOFILE).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenFiles {
    /// What the process may open now (`ulimit -n`).
    pub soft: u64,
    /// What the soft limit may be raised to without root (`ulimit -Hn`).
    pub hard: u64,
}

impl OpenFiles {
    /// How to get more, as the end of a sentence.
    pub fn how_to_raise(&self) -> String {
        if self.soft < self.hard {
            format!("raise it with `ulimit -n {}`", self.hard)
        } else {
            format!(
                "{} is also the hard limit, which only root can raise (`ulimit -Hn`, \
                 LimitNOFILE= for a systemd unit, `--ulimit nofile=N:N` for docker run)",
                self.soft
            )
        }
    }
}

/// The open-files limit now.
pub fn open_files() -> io::Result<OpenFiles> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(OpenFiles {
        soft: limit.rlim_cur,
        hard: limit.rlim_max,
    })
}

/// Raises the soft open-files limit to the hard limit, or logs why it could
/// not (the role still runs, with room for fewer peers).
pub fn raise_open_files() {
    if let Err(error) = try_raise_open_files() {
        tracing::warn!("cannot raise the open-files limit: {error}");
    }
}

/// Raises the soft open-files limit to the hard limit; returns the limit
/// then in force.
pub fn try_raise_open_files() -> io::Result<OpenFiles> {
    let limit = open_files()?;
    if limit.soft >= limit.hard {
        return Ok(limit);
    }
    let raised = libc::rlimit {
        rlim_cur: limit.hard,
        rlim_max: limit.hard,
    };
    // SAFETY: setrlimit only reads the struct given.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(OpenFiles {
        soft: limit.hard,
        hard: limit.hard,
    })
}

/// The descriptors this process has open now, counted in /proc/self/fd
/// (Linux); `None` where that cannot be read.
pub fn open_files_in_use() -> Option<u64> {
    // The directory's own descriptor is counted too: take it off.
    let entries = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    Some(entries.saturating_sub(1))
}

/// `net.core.somaxconn`, the kernel's cap on every listen backlog (Linux);
/// `None` where it cannot be read.
pub fn backlog_cap() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// How many times the kernel turned a connection away because a listening
/// socket's accept queue was full (TcpExt ListenOverflows in
/// /proc/net/netstat): a count for the whole network namespace (a
/// container's own, or the host's), since it started. `None` where it
/// cannot be read.
pub fn listen_overflows() -> Option<u64> {
    let netstat = std::fs::read_to_string("/proc/net/netstat").ok()?;
    // Two lines per protocol: the names, then the values.
    let mut tcp_ext = netstat.lines().filter(|line| line.starts_with("TcpExt:"));
    let (names, values) = (tcp_ext.next()?, tcp_ext.next()?);
    let at = names
        .split_whitespace()
        .position(|name| name == "ListenOverflows")?;
    values.split_whitespace().nth(at)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_advice_depends_on_the_hard_limit() {
        let below = OpenFiles {
            soft: 1024,
            hard: 4096,
        };
        assert_eq!(below.how_to_raise(), "raise it with `ulimit -n 4096`");
        let at = OpenFiles {
            soft: 4096,
            hard: 4096,
        };
        assert!(at.how_to_raise().starts_with("4096 is also the hard limit"));
    }

    #[test]
    fn the_limit_is_read_and_raised_to_the_hard_one() {
        let raised = try_raise_open_files().unwrap();
        assert_eq!(raised.soft, raised.hard);
        assert_eq!(open_files().unwrap(), raised);
        assert!(open_files_in_use().unwrap() >= 3);
    }

    #[test]
    fn the_kernel_counts_are_read() {
        assert!(backlog_cap().unwrap() >= 128);
        assert!(listen_overflows().is_some());
    }
}
