//! Checking Python arguments before they reach a system call: pids,
//! fds and signal numbers in range, ints that are really ints.

use std::fmt::Display;

use pyo3::exceptions::{PyOverflowError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBool;

/// A pid argument: a Python int that is a positive `pid_t`. An int too big
/// even for an `i64` gets the same message as one too big for a `pid_t`.
pub(crate) fn extract_pid(obj: &Bound<'_, PyAny>) -> PyResult<libc::pid_t> {
    match extract_int(obj, "pid") {
        Ok(pid) => check_pid(pid),
        Err(e) if e.is_instance_of::<PyOverflowError>(obj.py()) => Err(if obj.lt(0)? {
            not_positive(obj)
        } else {
            pid_too_large(obj)
        }),
        Err(e) => Err(e),
    }
}

fn check_pid(pid: i64) -> PyResult<libc::pid_t> {
    if pid <= 0 {
        return Err(not_positive(pid));
    }
    libc::pid_t::try_from(pid).map_err(|_| pid_too_large(pid))
}

fn not_positive(pid: impl Display) -> PyErr {
    PyValueError::new_err(format!(
        "pid must be a positive process id, not {pid} (0 and negative numbers name \
         process groups in kill(2), which a pidfd cannot refer to)"
    ))
}

fn pid_too_large(pid: impl Display) -> PyErr {
    PyOverflowError::new_err(format!(
        "pid {pid} is out of range: a pid_t is at most {}",
        libc::pid_t::MAX
    ))
}

/// A file descriptor: a C `int` from 0 up.
pub(crate) fn check_fd(fd: i64, what: &str) -> PyResult<libc::c_int> {
    if fd < 0 {
        return Err(PyValueError::new_err(format!(
            "{what} must be a non-negative file descriptor, not {fd}"
        )));
    }
    libc::c_int::try_from(fd).map_err(|_| {
        PyValueError::new_err(format!(
            "{what} {fd} is out of range: a file descriptor is a C int, at most {}",
            libc::c_int::MAX
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
    if obj.is_instance_of::<PyBool>() {
        return Err(PyTypeError::new_err(format!(
            "{name} must be an int, not bool"
        )));
    }
    obj.extract::<i64>().map_err(|e| {
        if e.is_instance_of::<PyOverflowError>(obj.py()) {
            PyOverflowError::new_err(format!("{name} {obj} is out of range"))
        } else {
            PyTypeError::new_err(format!("{name} must be an int, not {}", type_name(obj)))
        }
    })
}

/// A flag: `True` or `False` only, as the signature promises (an int here is
/// more often a misplaced positional argument than a deliberate truth value).
pub(crate) fn extract_bool(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<bool> {
    obj.cast::<PyBool>()
        .map(PyBoolMethods::is_true)
        .map_err(|_| {
            PyTypeError::new_err(format!(
                "{name} must be True or False, not {} ({obj:.40})",
                type_name(obj)
            ))
        })
}

/// A timeout in seconds: `None` for no limit, or any real number (int or
/// float); the error names the parameter, which PyO3's own does not.
pub(crate) fn extract_timeout(obj: Option<&Bound<'_, PyAny>>) -> PyResult<Option<f64>> {
    match obj {
        None => Ok(None),
        Some(obj) if obj.is_none() => Ok(None),
        Some(obj) => obj.extract::<f64>().map(Some).map_err(|_| {
            PyTypeError::new_err(format!(
                "timeout must be a number of seconds (int or float) or None, not {}",
                type_name(obj)
            ))
        }),
    }
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map_or_else(|_| "?".into(), |n| n.to_string())
}
