//! Turning `errno` values into the Python exceptions users expect.
//!
//! One home for it, as psutil's `wrap_exceptions` is: after the generic
//! helpers, one function per system call (or per question asked of the
//! kernel) says what each errno means there, so `handle.rs` only makes the
//! calls and passes failures here.
//!
//! Every error keeps its errno: we raise `OSError(errno, message)`, and
//! CPython's `OSError.__new__` picks the subclass (`ProcessLookupError` for
//! `ESRCH`, `ChildProcessError` for `ECHILD`, `PermissionError` for `EPERM`,
//! …) and sets `.errno`. PyO3's generic `io::Error` conversion would lose
//! that for some errnos, so it is never used.

use std::fmt::Display;
use std::io;
use std::os::fd::BorrowedFd;

use pyo3::PyErr;
use pyo3::exceptions::{PyOSError, PyValueError};

use crate::kernel::{kernel_has_pidfd_thread, no_such_ioctl};
use crate::{procfs, sys};

/// `OSError(errno, message)`, which Python maps to the matching subclass.
pub fn os_error(errno: i32, message: impl Display) -> PyErr {
    PyOSError::new_err((errno, message.to_string()))
}

/// An `io::Error` from a system call, prefixed by what we were doing.
pub fn from_io(err: &io::Error, doing: impl Display) -> PyErr {
    match err.raw_os_error() {
        Some(errno) => os_error(errno, format!("{doing}: {}", strerror(errno))),
        None => PyOSError::new_err(format!("{doing}: {err}")),
    }
}

/// The feature is missing from the running kernel: `OSError(ENOSYS)` naming
/// the Linux version that has it.
pub fn needs_kernel(feature: &str, version: &str) -> PyErr {
    os_error(
        libc::ENOSYS,
        format!(
            "{feature} needs Linux >= {version}, but this kernel is {}",
            procfs::kernel_release()
        ),
    )
}

/// Every call on a closed handle.
pub fn closed(pid: i32) -> PyErr {
    PyValueError::new_err(format!(
        "operation on a closed PidFd (pid {pid}); open a new handle with PidFd.from_pid()"
    ))
}

/// The C library's text for `errno`, without the "(os error N)" suffix that
/// `io::Error`'s `Display` adds.
pub fn strerror(errno: i32) -> String {
    let text = io::Error::from_raw_os_error(errno).to_string();
    match text.rfind(" (os error") {
        Some(cut) => text[..cut].to_owned(),
        None => text,
    }
}

// -- one function per system call ------------------------------------------------

/// `pidfd_open(pid, flags)` failed; `thread` if `PIDFD_THREAD` was asked.
pub(crate) fn pidfd_open(e: &io::Error, pid: libc::pid_t, thread: bool) -> PyErr {
    match e.raw_os_error() {
        Some(libc::ESRCH) => os_error(
            libc::ESRCH,
            format!("no process with pid {pid} (it has exited and been reaped, or never existed)"),
        ),
        Some(libc::ENOSYS) => needs_kernel("pidfd_open(2)", "5.3"),
        Some(libc::EINVAL) if thread && !kernel_has_pidfd_thread() => {
            needs_kernel("PidFd.from_pid(pid, thread=True) (PIDFD_THREAD)", "6.9")
        }
        Some(libc::ENOENT) if thread => os_error(
            libc::ENOENT,
            format!("{pid} is not a thread id visible to this process"),
        ),
        // A thread that is not its group's leader: older kernels say
        // EINVAL, recent ones (6.18 at least) ENOENT. Anything else
        // with EINVAL is a process caught between exit and reap (it
        // has no thread group left): as good as gone, so ESRCH.
        Some(errno @ (libc::EINVAL | libc::ENOENT)) if !thread => match procfs::proc_tgid(pid) {
            Some(tgid) if tgid != pid => os_error(
                errno,
                format!(
                    "pid {pid} is a thread of process {tgid}, not a process; pass \
                     {tgid}, or thread=True for a handle on the thread"
                ),
            ),
            _ if errno == libc::EINVAL => os_error(
                libc::ESRCH,
                format!(
                    "no process with pid {pid}: it is exiting and being reaped, so no \
                     pidfd can be opened on it"
                ),
            ),
            _ => from_io(e, format_args!("pidfd_open({pid})")),
        },
        _ => from_io(e, format_args!("pidfd_open({pid})")),
    }
}

/// `PidFd.from_fd(raw)`: what the fd's `/proc` entries said, as a pid or
/// the error for a fd that is not open, not a pidfd, or names no process.
pub(crate) fn adopted_pid(raw: i32, found: io::Result<Option<i32>>) -> Result<libc::pid_t, PyErr> {
    let pid = found.map_err(|e| match e.raw_os_error() {
        // No /proc/self/fd entry: the number is not an open fd.
        Some(libc::ENOENT) => os_error(libc::EBADF, format!("fd {raw} is not open")),
        _ if e.kind() == io::ErrorKind::Unsupported => {
            needs_kernel("PidFd.from_fd() (the pid in a pidfd's fdinfo)", "5.5")
        }
        _ => from_io(&e, format_args!("fd {raw}")),
    })?;
    match pid {
        None => Err(PyValueError::new_err(format!(
            "fd {raw} is not a pidfd; open one with PidFd.from_pid(pid) or os.pidfd_open(pid)"
        ))),
        Some(-1) => Err(os_error(
            libc::ESRCH,
            format!("pidfd {raw} refers to a process that has already been reaped"),
        )),
        Some(0) => Err(PyValueError::new_err(format!(
            "pidfd {raw} refers to a process outside this process's pid namespace"
        ))),
        Some(pid) => Ok(pid),
    }
}

/// `getsockopt(SO_PEERPIDFD)` on socket `raw` failed.
pub(crate) fn peer_pidfd(e: &io::Error, raw: i32) -> PyErr {
    match e.raw_os_error() {
        // SOL_SOCKET options are handled by the core socket code for
        // every family: an unknown option number means an older kernel.
        // A socket without peer credentials (TCP, unconnected) is ENODATA.
        Some(libc::ENOPROTOOPT) => needs_kernel("PidFd.from_socket_peer() (SO_PEERPIDFD)", "6.5"),
        Some(libc::ENODATA) => os_error(
            libc::ENODATA,
            format!("fd {raw} has no peer process: it must be a connected AF_UNIX socket"),
        ),
        // A peer that exited and was reaped: ESRCH on recent kernels
        // (7.2); Debian's 6.12 answers EINVAL (no thread group left to
        // open a pidfd on), as the socket and option are valid here.
        Some(libc::ESRCH | libc::EINVAL) => peer_reaped(raw),
        _ => from_io(e, format_args!("getsockopt(SO_PEERPIDFD) on fd {raw}")),
    }
}

/// The pid of the peer pidfd taken from socket `raw`, from its fdinfo.
pub(crate) fn peer_pid(raw: i32, found: io::Result<Option<i32>>) -> Result<libc::pid_t, PyErr> {
    match found {
        Ok(Some(pid)) if pid > 0 => Ok(pid),
        Ok(Some(-1)) => Err(peer_reaped(raw)),
        Ok(_) => Err(os_error(
            libc::ESRCH,
            format!("the peer of socket fd {raw} is outside this process's pid namespace"),
        )),
        Err(e) => Err(from_io(&e, "reading the peer's pidfd")),
    }
}

fn peer_reaped(raw: i32) -> PyErr {
    os_error(
        libc::ESRCH,
        format!("the peer of socket fd {raw} has already exited and been reaped"),
    )
}

/// `pidfd_send_signal(fd, sig, 0)` to `pid` failed.
pub(crate) fn send_signal(e: &io::Error, pid: libc::pid_t, sig: libc::c_int) -> PyErr {
    match e.raw_os_error() {
        Some(libc::ESRCH) => os_error(
            libc::ESRCH,
            format!("pid {pid} has exited; signal {sig} was not sent"),
        ),
        Some(libc::ENOSYS) => needs_kernel("pidfd_send_signal(2)", "5.1"),
        Some(libc::EPERM) => os_error(
            libc::EPERM,
            format!("not permitted to send signal {sig} to pid {pid}"),
        ),
        _ => from_io(e, format_args!("pidfd_send_signal(pid {pid}, {sig})")),
    }
}

/// `pidfd_send_signal(fd, sig, PIDFD_SIGNAL_PROCESS_GROUP)` to the group
/// `pid` leads failed. `fd` is asked again, without the flag, to tell a
/// kernel that lacks the flag from a refusal of the handle itself.
pub(crate) fn signal_group(
    e: &io::Error,
    fd: BorrowedFd<'_>,
    pid: libc::pid_t,
    sig: libc::c_int,
) -> PyErr {
    match e.raw_os_error() {
        // The kernel looks for processes whose group id is this pid.
        Some(libc::ESRCH) => os_error(
            libc::ESRCH,
            format!(
                "no process is in the process group led by pid {pid}: it leads no group \
                 (start it with start_new_session=True or process_group=0 to make it \
                 lead one), or every member has exited; signal {sig} was not sent"
            ),
        ),
        // Before 6.9 any flag is EINVAL; ask without one to be sure the
        // flag, not the handle or namespace, is what was refused.
        Some(libc::EINVAL)
            if !matches!(
                sys::pidfd_send_signal(fd, 0, 0),
                Err(probe) if probe.raw_os_error() == Some(libc::EINVAL)
            ) =>
        {
            needs_group_signals()
        }
        Some(libc::ENOSYS) => needs_group_signals(),
        Some(libc::EPERM) => os_error(
            libc::EPERM,
            format!(
                "not permitted to send signal {sig} to any process in the group led by \
                 pid {pid}"
            ),
        ),
        _ => from_io(
            e,
            format_args!("pidfd_send_signal(pid {pid}, {sig}, PIDFD_SIGNAL_PROCESS_GROUP)"),
        ),
    }
}

/// Group signals are missing from the running kernel.
fn needs_group_signals() -> PyErr {
    needs_kernel(
        "send_signal(sig, group=True) (PIDFD_SIGNAL_PROCESS_GROUP)",
        "6.9",
    )
}

/// `waitid(P_PIDFD)` on `pid` failed with anything but `EINTR` and `ECHILD`
/// (for which see [`no_child`]).
pub(crate) fn waitid(e: &io::Error, pid: libc::pid_t) -> PyErr {
    match e.raw_os_error() {
        // Our idtype and options are all valid on any kernel
        // that knows P_PIDFD, so EINVAL means it does not.
        Some(libc::EINVAL) => needs_kernel("waitid(P_PIDFD)", "5.4"),
        _ => from_io(e, format_args!("waitid() on pid {pid}")),
    }
}

/// `ECHILD` from `waitid` on `pid`: say which of the possible reasons it
/// is. `reaped_here` if a `wait()` on this handle reaped the child;
/// `parent` reads the process's parent, race-free, where it can.
pub(crate) fn no_child(
    pid: libc::pid_t,
    reaped_here: bool,
    parent: impl FnOnce() -> Option<libc::pid_t>,
) -> PyErr {
    let me = sys::getpid();
    let message = if reaped_here {
        format!(
            "pid {pid} was already reaped by an earlier wait() on this handle, which \
             returned its ExitInfo; a process can be reaped only once"
        )
    } else if sys::sigchld_ignored() {
        format!(
            "pid {pid} cannot be reaped: SIGCHLD is ignored in this process (SIG_IGN or \
             SA_NOCLDWAIT), so the kernel reaps children itself and discards their status; \
             restore signal.signal(signal.SIGCHLD, signal.SIG_DFL) before starting \
             children, or use wait_exit()"
        )
    } else {
        match parent() {
            Some(parent) if parent != me => format!(
                "pid {pid} is not a child of this process (its parent is pid {parent}), so \
                 wait() and try_wait() cannot reap it; use wait_exit() to wait for any \
                 process without reaping it"
            ),
            _ => format!(
                "pid {pid} has already been reaped, by something else in this process \
                 (os.waitpid(), subprocess, asyncio, or another handle), so its status \
                 is no longer available to wait(); wait_exit() can still report it \
                 on Linux >= 6.15"
            ),
        }
    };
    os_error(libc::ECHILD, message)
}

/// `ioctl(PIDFD_GET_INFO)` for `PidFd.info()` on `pid` failed.
pub(crate) fn get_info(e: &io::Error, pid: libc::pid_t) -> PyErr {
    match e.raw_os_error() {
        _ if no_such_ioctl(e) => needs_kernel("PidFd.info() (PIDFD_GET_INFO)", "6.13"),
        Some(libc::ESRCH) => os_error(
            libc::ESRCH,
            format!(
                "pid {pid} has been reaped and this kernel keeps nothing about it; \
                 PIDFD_INFO_EXIT needs Linux >= 6.15"
            ),
        ),
        _ => from_io(e, format_args!("PIDFD_GET_INFO on pid {pid}")),
    }
}

/// `pidfd_getfd(fd, target)` on `pid` failed; `exited` asks whether the
/// process has exited.
pub(crate) fn getfd(
    e: &io::Error,
    pid: libc::pid_t,
    target: i32,
    exited: impl FnOnce() -> bool,
) -> PyErr {
    match e.raw_os_error() {
        Some(libc::EPERM) => os_error(
            libc::EPERM,
            format!(
                "not permitted to take fd {target} from pid {pid}: pidfd_getfd needs \
                 ptrace access (same user and a permissive kernel.yama.ptrace_scope, \
                 or CAP_SYS_PTRACE)"
            ),
        ),
        // An exited process has closed all its fds: 5.10 says EBADF
        // where later kernels say ESRCH, so ask which it is.
        Some(libc::EBADF) if exited() => os_error(libc::ESRCH, format!("pid {pid} has exited")),
        Some(libc::EBADF) => os_error(libc::EBADF, format!("pid {pid} has no open fd {target}")),
        Some(libc::ESRCH) => os_error(libc::ESRCH, format!("pid {pid} has exited")),
        Some(libc::ENOSYS) => needs_kernel("pidfd_getfd(2)", "5.6"),
        _ => from_io(e, format_args!("pidfd_getfd(pid {pid}, fd {target})")),
    }
}
