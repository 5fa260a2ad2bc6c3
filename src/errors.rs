//! Turning `errno` values into the Python exceptions users expect.
//!
//! Every error keeps its errno: we raise `OSError(errno, message)`, and
//! CPython's `OSError.__new__` picks the subclass (`ProcessLookupError` for
//! `ESRCH`, `ChildProcessError` for `ECHILD`, `PermissionError` for `EPERM`,
//! …) and sets `.errno`. PyO3's generic `io::Error` conversion would lose
//! that for some errnos, so it is never used.

use std::fmt::Display;
use std::io;

use pyo3::PyErr;
use pyo3::exceptions::{PyOSError, PyValueError};

use crate::sys;

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
            sys::kernel_release()
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
