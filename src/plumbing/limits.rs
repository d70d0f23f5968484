//! Room for many connections: the open-files limit.
//!
//! Each TCP connection costs a file descriptor, and a broker's connection
//! monitor holds a second one per peer for a moment (see [`crate::plumbing::monitor`]).
//! Many systems start processes with a soft limit of 1024 (macOS: 256), far
//! below what the kernel allows (the hard limit); a broker facing a
//! thousand clients raises its soft limit to the hard one at start-up.

/// Raises the soft open-files limit to the hard limit, or logs why it could
/// not (the role still runs, with room for fewer peers).
pub fn raise_open_files() {
    if let Err(error) = try_raise_open_files() {
        tracing::warn!("cannot raise the open-files limit: {error}");
    }
}

/// Raises the soft open-files limit to the hard limit; returns the new soft
/// limit.
fn try_raise_open_files() -> std::io::Result<libc::rlim_t> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            limit = raised;
        }
    }
    Ok(limit.rlim_cur)
}
