//! `wait_any()`: one `poll(2)` over many handles.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, RawFd};

use pyo3::exceptions::{PyTimeoutError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyList;

use crate::args::extract_timeout;
use crate::handle::PidFd;
use crate::wait::{Deadline, poll_until, pollfd, timeout_phrase};

/// Wait until at least one handle's process has exited and return those that
/// have, in the order given; one `poll(2)` over all of them, no threads.
#[pyfunction]
#[pyo3(signature = (handles, timeout = None))]
pub(crate) fn wait_any(
    py: Python<'_>,
    handles: &Bound<'_, PyAny>,
    timeout: Option<&Bound<'_, PyAny>>,
) -> PyResult<Py<PyList>> {
    let timeout = extract_timeout(timeout)?;
    let deadline = Deadline::from_timeout(timeout)?;
    let mut items = Vec::new();
    for item in handles.try_iter()? {
        let item = item?;
        let handle = item.cast::<PidFd>().map_err(|_| {
            PyTypeError::new_err(format!(
                "wait_any() takes PidFd or AsyncPidFd handles, not {}",
                item.get_type()
                    .name()
                    .map_or_else(|_| "?".into(), |n| n.to_string())
            ))
        })?;
        let fd = handle.get().fd()?;
        items.push((handle.clone().unbind(), fd));
    }
    if items.is_empty() {
        return Err(PyValueError::new_err(
            "wait_any() needs at least one handle; with none it would wait forever",
        ));
    }
    // Each fd once: poll(2) refuses more entries than RLIMIT_NOFILE with
    // EINVAL, and a caller may well list the same handle many times.
    let mut slot_of: HashMap<RawFd, usize> = HashMap::with_capacity(items.len());
    let mut fds: Vec<libc::pollfd> = Vec::with_capacity(items.len());
    let slots: Vec<usize> = items
        .iter()
        .map(|(_, fd)| {
            *slot_of.entry(fd.as_raw_fd()).or_insert_with(|| {
                fds.push(pollfd(fd, libc::POLLIN));
                fds.len() - 1
            })
        })
        .collect();
    if !poll_until(py, &mut fds, deadline)? {
        return Err(PyTimeoutError::new_err(format!(
            "none of the {} processes had exited {}",
            items.len(),
            timeout_phrase(timeout)
        )));
    }
    let done = PyList::empty(py);
    for ((handle, _), slot) in items.iter().zip(slots) {
        if fds[slot].revents != 0 {
            done.append(handle)?;
        }
    }
    Ok(done.unbind())
}
