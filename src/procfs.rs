//! What `/proc` says: plain file reads and their parsing, no system call
//! wrappers and no `unsafe` (those live in [`crate::sys`]).
//!
//! Every read here is racy on its own: a pid read from `/proc` may name
//! another process by the time it is used. Callers either confirm through a
//! pidfd afterwards ([`proc_ppid`]) or use the answer for a message only.

use std::io;
use std::os::fd::RawFd;

/// The fields of `/proc/PID/stat` that we read. See proc_pid_stat(5).
#[derive(Debug, PartialEq, Eq)]
pub struct Stat {
    /// The state letter: `R`, `S`, `D`, `Z` (zombie), `T` (stopped), ...
    pub state: char,
    /// The parent's pid.
    pub ppid: libc::pid_t,
}

/// Parse the text of `/proc/PID/stat`.
///
/// The second field, the command name in parentheses, may itself contain
/// spaces and parentheses, so the fields resume after the *last* `)`:
/// state, then ppid.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some(Stat { state, ppid })
}

/// `/proc/PID/stat` of `pid`, parsed; `None` if it cannot be read.
pub fn stat(pid: libc::pid_t) -> Option<Stat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The parent pid of `pid` from `/proc/PID/stat`, or `None` if it cannot
/// be read. Racy on its own: the caller confirms the pidfd still refers to a
/// live process afterwards.
pub fn proc_ppid(pid: libc::pid_t) -> Option<libc::pid_t> {
    stat(pid).map(|s| s.ppid)
}

/// The thread-group id of thread `tid` from `/proc/TID/status`, or `None`
/// if it cannot be read. For error messages only: racy, like any `/proc` read.
pub fn proc_tgid(tid: libc::pid_t) -> Option<libc::pid_t> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Tgid:"))?
        .trim()
        .parse()
        .ok()
}

/// What `/proc/self/fdinfo/FD` says about `fd`: `Ok(None)` if it is not a
/// pidfd, else the pid it refers to in our pid namespace (`-1` once the
/// process has been reaped, `0` if it lives in a namespace we cannot see).
///
/// Pidfds are the only fds whose link reads `anon_inode:[pidfd]` (or
/// `pidfd:[…]` on pidfs kernels that dropped the compatibility name); their
/// fdinfo has carried a `Pid:` line since Linux 5.5. A pidfd without one
/// fails with [`io::ErrorKind::Unsupported`].
pub fn fdinfo_pid(raw: RawFd) -> io::Result<Option<i32>> {
    let link = std::fs::read_link(format!("/proc/self/fd/{raw}"))?;
    let link = link.to_string_lossy();
    if !(link == "anon_inode:[pidfd]" || link.starts_with("pidfd:")) {
        return Ok(None);
    }
    let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{raw}"))?;
    text.lines()
        .find_map(|line| line.strip_prefix("Pid:"))
        .and_then(|v| v.trim().parse().ok())
        .map(Some)
        .ok_or_else(|| io::Error::new(io::ErrorKind::Unsupported, "no Pid: line in pidfd fdinfo"))
}

/// The kernel release, e.g. `"6.1.0-18-amd64"`, for error messages.
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "unknown".to_owned(), |s| s.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use super::*;
    use crate::sys::{getpid, pidfd_open};

    #[test]
    fn proc_ppid_reads_parent() {
        assert_eq!(
            proc_ppid(getpid()),
            Some(std::os::unix::process::parent_id() as libc::pid_t)
        );
    }

    #[test]
    fn stat_fields_resume_after_the_last_parenthesis() {
        let text = "4242 (a) b (c) d) S 17 4242 4242 0 -1 4194560 ...";
        assert_eq!(
            parse_stat(text),
            Some(Stat {
                state: 'S',
                ppid: 17
            })
        );
        assert_eq!(parse_stat("4242 (no close"), None);
        assert_eq!(parse_stat("4242 (x) Z"), None);
        // The test binary's main thread may be running or asleep while
        // this test's thread reads it: alive either way, never a zombie.
        let state = stat(getpid()).map(|s| s.state);
        assert!(matches!(state, Some('R' | 'S')), "{state:?}");
    }

    #[test]
    fn fdinfo_names_the_pid_of_a_pidfd_only() {
        let fd = pidfd_open(getpid(), 0).expect("self");
        assert_eq!(fdinfo_pid(fd.as_raw_fd()).expect("fdinfo"), Some(getpid()));
        let file = std::fs::File::open("/proc/self/stat").expect("open");
        assert_eq!(fdinfo_pid(file.as_raw_fd()).expect("fdinfo"), None);
    }
}
