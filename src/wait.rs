//! The interruptible blocking wait: `poll(2)` on pidfds with the GIL
//! released, Python's signal handlers run on `EINTR` and every
//! [`SIGNAL_CHECK_INTERVAL`] in the main thread, and a deadline.

use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use pyo3::exceptions::{PyTimeoutError, PyValueError};
use pyo3::prelude::*;

use crate::errors::{from_io, os_error};
use crate::sys;

/// When a blocking call must give up.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Deadline {
    Never,
    At(Instant),
}

impl Deadline {
    /// `None`, `inf` and anything too large for `Instant` wait forever; zero
    /// or negative checks once; NaN is refused.
    pub(crate) fn from_timeout(timeout: Option<f64>) -> PyResult<Self> {
        let Some(secs) = timeout else {
            return Ok(Self::Never);
        };
        if secs.is_nan() {
            return Err(PyValueError::new_err(
                "timeout must be a number of seconds or None, not NaN",
            ));
        }
        let now = Instant::now();
        if secs <= 0.0 {
            return Ok(Self::At(now));
        }
        Ok(Duration::try_from_secs_f64(secs)
            .ok()
            .and_then(|d| now.checked_add(d))
            .map_or(Self::Never, Self::At))
    }

    /// Time left, `None` for no limit.
    pub(crate) fn remaining(self) -> Option<Duration> {
        match self {
            Self::Never => None,
            Self::At(t) => Some(t.saturating_duration_since(Instant::now())),
        }
    }

    pub(crate) fn expired(self) -> bool {
        matches!(self, Self::At(t) if Instant::now() >= t)
    }

    pub(crate) fn earlier(self, other: Instant) -> Self {
        match self {
            Self::At(t) if t <= other => self,
            _ => Self::At(other),
        }
    }
}

/// The longest single `poll(2)` in the thread that runs Python's signal
/// handlers. A signal that lands after our last check but before the poll
/// is inside the kernel does not interrupt it (Python's C-level handler only
/// records it), so without a bound Ctrl-C could go unnoticed until the
/// timeout or the child's exit. Waking this often keeps that under 100 ms.
const SIGNAL_CHECK_INTERVAL: Duration = Duration::from_millis(50);

/// Polls `fds` until one is ready or the deadline passes, with the GIL
/// released. A signal interrupts the poll with `EINTR`: we then run Python's
/// signal handlers, propagate what they raise (Ctrl-C), and otherwise go on
/// with the time that is left (PEP 475). Returns whether any fd is ready.
pub(crate) fn poll_until(
    py: Python<'_>,
    fds: &mut [libc::pollfd],
    deadline: Deadline,
) -> PyResult<bool> {
    // Other threads never run handlers: they may block for the whole time.
    let slice = sys::is_initial_thread().then_some(SIGNAL_CHECK_INTERVAL);
    loop {
        let remaining = deadline.remaining();
        if remaining != Some(Duration::ZERO) {
            // A signal that landed after Python last checked but before we
            // block would otherwise wait for the next one to be noticed.
            py.check_signals()?;
        }
        let timeout = match (remaining, slice) {
            (Some(r), Some(s)) => Some(r.min(s)),
            (r, s) => r.or(s),
        };
        match py.detach(|| sys::poll(fds, timeout)) {
            Ok(0) if deadline.expired() => return Ok(false),
            // The slice ended, or woke a little early (timer rounding):
            // check for signals and sleep out the rest.
            Ok(0) => {}
            Ok(_) => return Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => py.check_signals()?,
            Err(e) => return Err(from_io(&e, "poll() on a pidfd failed")),
        }
    }
}

pub(crate) fn pollfd(fd: &OwnedFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    }
}

/// Whether the process has exited: a pidfd polls readable from the moment
/// the whole thread group is gone (zombie or reaped).
pub(crate) fn has_exited(fd: &OwnedFd) -> PyResult<bool> {
    let mut fds = [pollfd(fd, libc::POLLIN)];
    let ready = sys::poll(&mut fds, Some(Duration::ZERO))
        .map_err(|e| from_io(&e, "poll() on a pidfd failed"))?;
    // poll() reports a closed fd as POLLNVAL, not as an error: without this
    // a handle whose fd was closed behind its back (`os.close(h.fileno())`)
    // would read as exited, where wait() raises EBADF.
    if ready > 0 && fds[0].revents & libc::POLLNVAL != 0 {
        return Err(os_error(
            libc::EBADF,
            "poll() on a pidfd: Bad file descriptor (the handle's fd was closed \
             behind its back, e.g. by os.close(fileno()); use close() instead)",
        ));
    }
    Ok(ready > 0)
}

/// Whether the process has also been reaped: pidfs kernels (Linux ≥ 6.9)
/// add `POLLHUP` once the task is released.
pub(crate) fn has_been_reaped(fd: &OwnedFd) -> bool {
    let mut fds = [pollfd(fd, 0)];
    matches!(sys::poll(&mut fds, Some(Duration::ZERO)), Ok(n) if n > 0)
        && fds[0].revents & libc::POLLHUP != 0
}

pub(crate) fn timeout_error(pid: libc::pid_t, timeout: Option<f64>) -> PyErr {
    PyTimeoutError::new_err(format!(
        "pid {pid} was still running {}; it has not been reaped",
        timeout_phrase(timeout)
    ))
}

/// "after the 1.5s timeout", or for zero and negative timeouts, which check
/// once without waiting, a phrase that does not claim a wait took place.
pub(crate) fn timeout_phrase(timeout: Option<f64>) -> String {
    match timeout {
        Some(secs) if secs > 0.0 => format!("after the {secs}s timeout"),
        Some(secs) => format!("when checked (timeout={secs} checks once, without waiting)"),
        None => "when checked".to_owned(),
    }
}
