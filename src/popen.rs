//! What `pidfd.Popen`'s every child runs through, written here rather than
//! in Python because it runs several times per child: W5 in `benchmarks/`
//! counts each Python call around a spawn.

use pyo3::intern;
use pyo3::prelude::*;

/// The setter of `pidfd.Popen.returncode`: stores the value in
/// `_returncode` and, for an exit code while the pidfd is still held, calls
/// `_close_pidfd()` (a hook subclasses override). A builtin, so that the
/// stock class's `self.returncode = ...` (twice per child) runs no Python
/// frame of its own.
#[pyfunction]
pub fn _set_returncode(popen: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>) -> PyResult<()> {
    let py = popen.py();
    popen.setattr(intern!(py, "_returncode"), value)?;
    if !value.is_none() && !popen.getattr(intern!(py, "pidfd"))?.is_none() {
        popen.call_method0(intern!(py, "_close_pidfd"))?;
    }
    Ok(())
}
