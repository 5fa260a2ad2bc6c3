//! `_child_subreaper()` / `_set_child_subreaper()`: the process-wide
//! `PR_SET_CHILD_SUBREAPER` attribute, for `pidfd.Subreaper` (Python owns
//! the bookkeeping; this is only the switch).

use pyo3::prelude::*;

use crate::errors::from_io;
use crate::sys;

/// Whether this process is a child subreaper (`PR_GET_CHILD_SUBREAPER`).
#[pyfunction]
pub(crate) fn _child_subreaper() -> PyResult<bool> {
    sys::child_subreaper().map_err(|e| from_io(&e, "prctl(PR_GET_CHILD_SUBREAPER)"))
}

/// Make this process a child subreaper, or stop being one
/// (`PR_SET_CHILD_SUBREAPER`, Linux >= 3.4).
#[pyfunction]
pub(crate) fn _set_child_subreaper(on: bool) -> PyResult<()> {
    sys::set_child_subreaper(on).map_err(|e| {
        from_io(
            &e,
            format_args!("prctl(PR_SET_CHILD_SUBREAPER, {})", i32::from(on)),
        )
    })
}
