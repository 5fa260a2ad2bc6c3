//! `pidfd._native`: the PyO3 layer over [`sys`] and [`status`].
//!
//! One concern a file:
//! - `sys/`: every system call, and the only `unsafe` code;
//! - `procfs.rs`: safe reads of `/proc` (one `/proc/PID/stat` parser);
//! - `status.rs`: pure decoding of exit statuses (unit-tested in Rust);
//! - `errors.rs`: errno → the Python exception users expect, one function
//!   per system call;
//! - `args.rs`: checking Python arguments before they reach a syscall;
//! - `kernel.rs`: what the running kernel is and knows;
//! - `wait.rs`: the interruptible, GIL-releasing blocking wait;
//! - `handle.rs`: the `PidFd` class;
//! - `results.rs`: `ExitInfo` and `ExitStatus`;
//! - `info.rs`: `ProcessInfo`, built from the kernel's answer;
//! - `wait_any.rs`: `wait_any()`;
//! - `subreaper.rs`: the `PR_SET_CHILD_SUBREAPER` switch;
//! - `execute.rs`: `_execute_child`'s argument work, for the plain spawn;
//! - `popen.rs`: the per-child steps of `pidfd.Popen` worth a builtin;
//! - this file: the module itself.

#[cfg(not(target_os = "linux"))]
compile_error!(
    "async-pidfd only works on Linux: pidfd_open(2), waitid(P_PIDFD) and \
     pidfd_send_signal(2) exist nowhere else"
);

mod args;
pub mod errors;
mod execute;
mod handle;
mod info;
mod kernel;
mod popen;
mod procfs;
mod results;
mod spawn;
pub mod status;
mod subreaper;
pub mod sys;
mod wait;
mod wait_any;

use pyo3::prelude::*;

use crate::handle::{PidFd, REAP_GRACE};
use crate::info::ProcessInfo;
use crate::results::{ExitInfo, ExitStatus};

/// Race-free Linux process handles.
// `gil_used = false`: safe on free-threaded CPython, because nothing here
// relies on the GIL for exclusion. Every pyclass is `frozen` (methods get
// `&self` only, so PyO3 needs no borrow flag); a `PidFd`'s only mutable state
// is its fd, behind a `Mutex<Option<Arc<OwnedFd>>>` (a call clones the `Arc`,
// so `close()` from another thread cannot free a number still in use), and
// the `reaped` flag, a `Mutex<bool>` held across the non-blocking reaping
// `waitid`. `ExitInfo` caches its stdlib objects in `OnceLock`s, the stdlib
// types sit in `PyOnceLock`s and the kernel version in a `OnceLock`, all
// thread-safe. Two threads reaping one child race in the kernel's `waitid`,
// which lets exactly one win; the other gets `ECHILD`, as sequential calls
// would, and the flag (set in the same step as the winning reap) tells it
// that this handle reaped the child. Run on CPython 3.14t: see
// docs/guarantees-interpreters.md.
#[pymodule(gil_used = false)]
mod _native {
    #[pymodule_export]
    use super::execute::_spawn_plain;
    #[pymodule_export]
    use super::popen::_set_returncode;
    #[pymodule_export]
    use super::spawn::{_child_lifetime, _spawn, _spawn_refused, ExecStatus};
    #[pymodule_export]
    use super::subreaper::{_child_subreaper, _set_child_subreaper};
    #[pymodule_export]
    use super::{ExitInfo, ExitStatus, PidFd, ProcessInfo, wait_any::wait_any};

    #[pymodule_init]
    fn init(m: &pyo3::Bound<'_, pyo3::types::PyModule>) -> pyo3::PyResult<()> {
        use pyo3::types::PyModuleMethods;
        m.add("__version__", env!("CARGO_PKG_VERSION"))?;
        // One grace period for every wait_exit(), sync, async and the CLI.
        m.add("_REAP_GRACE", super::REAP_GRACE.as_secs_f64())
    }
}
