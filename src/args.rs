//! Checking Python arguments before they reach a system call: pids,
//! fds and signal numbers in range, ints that are really ints.

use pyo3::exceptions::{PyOverflowError, PyTypeError, PyValueError};
use pyo3::prelude::*;

pub(crate) fn check_pid(pid: i64) -> PyResult<libc::pid_t> {
    if pid <= 0 {
        return Err(PyValueError::new_err(format!(
            "pid must be a positive process id, not {pid} (0 and negative numbers name \
             process groups in kill(2), which a pidfd cannot refer to)"
        )));
    }
    libc::pid_t::try_from(pid).map_err(|_| {
        PyOverflowError::new_err(format!(
            "pid {pid} is out of range: a pid_t is at most {}",
            libc::pid_t::MAX
        ))
    })
}

pub(crate) fn check_fd(fd: i64, what: &str) -> PyResult<libc::c_int> {
    libc::c_int::try_from(fd)
        .ok()
        .filter(|fd| *fd >= 0)
        .ok_or_else(|| {
            PyValueError::new_err(format!(
                "{what} must be a non-negative file descriptor, not {fd}"
            ))
        })
}

pub(crate) fn check_signal(sig: i64) -> PyResult<libc::c_int> {
    let max = libc::SIGRTMAX();
    libc::c_int::try_from(sig)
        .ok()
        .filter(|s| (0..=max).contains(s))
        .ok_or_else(|| {
            PyValueError::new_err(format!(
                "signal number {sig} is out of range: use 1..{max} (e.g. signal.SIGTERM), \
                 or 0 to only check that the process exists"
            ))
        })
}

/// Python ints only (anything with `__index__`): no floats, strings or
/// bools, which would otherwise hide a caller's bug.
pub(crate) fn extract_int(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<i64> {
    if obj.is_instance_of::<pyo3::types::PyBool>() {
        return Err(PyTypeError::new_err(format!(
            "{name} must be an int, not bool"
        )));
    }
    obj.extract::<i64>().map_err(|e| {
        if e.is_instance_of::<PyOverflowError>(obj.py()) {
            PyOverflowError::new_err(format!("{name} {obj} is out of range"))
        } else {
            let tname = obj
                .get_type()
                .name()
                .map_or_else(|_| "?".into(), |n| n.to_string());
            PyTypeError::new_err(format!("{name} must be an int, not {tname}"))
        }
    })
}
