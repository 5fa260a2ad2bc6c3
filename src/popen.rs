//! What `pidfd.Popen`'s every child runs through, written here rather than
//! in Python because it runs several times per child: W5 in `benchmarks/`
//! counts each Python call around a spawn.

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

/// The setter of `pidfd.Popen.returncode`: stores the value in
/// `_returncode` and, for an exit code while the pidfd is still held,
/// closes it as `_close_pidfd()` does. A builtin, so that the stock class's
/// `self.returncode = ...` (twice per child) runs no Python frame of its
/// own; a subclass that overrides `_close_pidfd` (a hook) has it called.
#[pyfunction]
pub fn _set_returncode(popen: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>) -> PyResult<()> {
    static BASE_CLOSE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let py = popen.py();
    popen.setattr(intern!(py, "_returncode"), value)?;
    if value.is_none() {
        return Ok(());
    }
    let pidfd = intern!(py, "pidfd");
    let handle = popen.getattr(pidfd)?;
    if handle.is_none() {
        return Ok(());
    }
    let close = intern!(py, "_close_pidfd");
    let base = BASE_CLOSE.get_or_try_init(py, || {
        // Taken by the module as it defined the class: whatever replaces
        // Popen._close_pidfd later (a subclass, a test's counter) is called.
        let module = py.import("pidfd._popen")?;
        Ok::<_, PyErr>(module.getattr("_INLINE_CLOSE")?.unbind())
    })?;
    if popen.get_type().getattr(close)?.is(base) {
        // Popen._close_pidfd itself, inline.
        popen.setattr(pidfd, py.None())?;
        handle.call_method0(intern!(py, "close"))?;
    } else {
        popen.call_method0(close)?;
    }
    Ok(())
}
