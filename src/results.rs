//! The result types: `ExitInfo` (what `waitid` reported) and `ExitStatus`
//! (the decoded status word).

use std::sync::OnceLock;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyTuple, PyType};

use crate::args::extract_int;
use crate::status::{self, Exit};
use crate::sys::ChildInfo;

/// `struct rusage` is plain integers; mark it shareable across threads.
#[derive(Clone, Copy)]
struct Rusage(libc::rusage);

/// How a child ended, as `waitid` reported it: the status, the stdlib's
/// `os.waitid_result` and `resource.struct_rusage`.
#[pyclass(module = "pidfd._native", frozen)]
pub struct ExitInfo {
    child: ChildInfo,
    // None: the kernel reaped the child itself (CLONE_AUTOREAP).
    rusage: Option<Rusage>,
    status: Exit,
    // Built on first access. A plain OnceLock filled with `set` (not
    // `PyOnceLock::get_or_init`, which detaches from the interpreter to wait
    // and doubled the cost of a first read): a racing thread at worst builds
    // a second copy and drops it.
    siginfo_obj: OnceLock<Py<PyAny>>,
    rusage_obj: OnceLock<Py<PyAny>>,
}

impl ExitInfo {
    pub(crate) fn new(child: ChildInfo, rusage: Option<libc::rusage>, status: Exit) -> Self {
        Self {
            child,
            rusage: rusage.map(Rusage),
            status,
            siginfo_obj: OnceLock::new(),
            rusage_obj: OnceLock::new(),
        }
    }
}

/// The value in `cell`, built by `make` on first use.
fn cached(
    py: Python<'_>,
    cell: &OnceLock<Py<PyAny>>,
    make: impl FnOnce() -> PyResult<Py<PyAny>>,
) -> PyResult<Py<PyAny>> {
    if let Some(value) = cell.get() {
        return Ok(value.clone_ref(py));
    }
    let value = make()?;
    // `set` never runs Python code, so it cannot deadlock against a thread
    // that holds the GIL; losing the race just drops our copy.
    let _ = cell.set(value.clone_ref(py));
    Ok(cell.get().map_or(value, |v| v.clone_ref(py)))
}

fn stdlib_type(
    py: Python<'_>,
    cell: &'static PyOnceLock<Py<PyType>>,
    module: &str,
    name: &str,
) -> PyResult<Py<PyType>> {
    cell.get_or_try_init(py, || {
        Ok::<_, PyErr>(
            py.import(module)?
                .getattr(name)?
                .cast_into::<PyType>()?
                .unbind(),
        )
    })
    .map(|t| t.clone_ref(py))
}

// CPU seconds and microseconds stay far below 2**52, where f64 is exact.
#[allow(clippy::cast_precision_loss)]
fn timeval_secs(tv: libc::timeval) -> f64 {
    tv.tv_sec as f64 + tv.tv_usec as f64 * 1e-6
}

#[pymethods]
impl ExitInfo {
    /// The decoded `ExitStatus`.
    #[getter]
    fn status(&self) -> ExitStatus {
        ExitStatus(self.status)
    }

    /// The pid that exited (`siginfo.si_pid`).
    #[getter]
    fn pid(&self) -> i32 {
        self.child.pid
    }

    /// The `siginfo_t` as the stdlib's own `os.waitid_result`.
    #[getter]
    fn siginfo(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        static TYPE: PyOnceLock<Py<PyType>> = PyOnceLock::new();
        cached(py, &self.siginfo_obj, || {
            let c = self.child;
            let ty = stdlib_type(py, &TYPE, "os", "waitid_result")?;
            Ok(ty
                .bind(py)
                .call1(((c.pid, c.uid, c.signo, c.status, c.code),))?
                .unbind())
        })
    }

    /// Resource usage of the child and its waited-for descendants, as the
    /// stdlib's own `resource.struct_rusage` (what `os.wait4` returns);
    /// `None` for a child the kernel reaped itself (`die_with_parent` on
    /// Linux >= 7.1), whose usage no call reports.
    #[getter]
    fn rusage(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        static TYPE: PyOnceLock<Py<PyType>> = PyOnceLock::new();
        let Some(Rusage(r)) = self.rusage else {
            return Ok(py.None());
        };
        cached(py, &self.rusage_obj, || {
            let ty = stdlib_type(py, &TYPE, "resource", "struct_rusage")?;
            let mut fields = vec![
                timeval_secs(r.ru_utime).into_pyobject(py)?.into_any(),
                timeval_secs(r.ru_stime).into_pyobject(py)?.into_any(),
            ];
            for v in [
                r.ru_maxrss,
                r.ru_ixrss,
                r.ru_idrss,
                r.ru_isrss,
                r.ru_minflt,
                r.ru_majflt,
                r.ru_nswap,
                r.ru_inblock,
                r.ru_oublock,
                r.ru_msgsnd,
                r.ru_msgrcv,
                r.ru_nsignals,
                r.ru_nvcsw,
                r.ru_nivcsw,
            ] {
                fields.push(v.into_pyobject(py)?.into_any());
            }
            let fields = PyTuple::new(py, fields)?;
            Ok(ty.bind(py).call1((fields,))?.unbind())
        })
    }

    fn __repr__(&self) -> String {
        format!(
            "ExitInfo(pid={}, status={})",
            self.child.pid,
            ExitStatus(self.status).__repr__()
        )
    }
}

/// How a process ended, decoded from the `wait(2)` status word.
#[pyclass(module = "pidfd._native", frozen, eq, hash)]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExitStatus(pub(crate) Exit);

#[pymethods]
impl ExitStatus {
    /// From a `wait(2)` status word, e.g. `os.waitpid(pid, 0)[1]`.
    #[staticmethod]
    fn from_waitstatus(waitstatus: &Bound<'_, PyAny>) -> PyResult<Self> {
        let ws = extract_int(waitstatus, "waitstatus")?;
        let exit = i32::try_from(ws).ok().map(Exit).filter(|e| {
            (0..=0xffff).contains(&e.0) && (e.code().is_some() || e.signal().is_some())
        });
        exit.map(Self).ok_or_else(|| {
            PyValueError::new_err(format!(
                "{ws:#x} is not the status word of an exited or killed process \
                 (a stopped or continued status, or out of range)"
            ))
        })
    }

    /// From `si_code` and `si_status`, e.g. of an `os.waitid()` result.
    #[staticmethod]
    fn from_siginfo(si_code: &Bound<'_, PyAny>, si_status: &Bound<'_, PyAny>) -> PyResult<Self> {
        let code = extract_int(si_code, "si_code")?;
        let st = extract_int(si_status, "si_status")?;
        let narrow = |v: i64| i32::try_from(v).unwrap_or(i32::MIN);
        status::waitstatus_from_siginfo(narrow(code), narrow(st))
            .map(|ws| Self(Exit(ws)))
            .map_err(|e| PyValueError::new_err(e.to_string()))
    }

    /// The exit code if the process exited normally, else `None`.
    #[getter]
    fn code(&self) -> Option<i32> {
        self.0.code()
    }

    /// The signal that killed the process, else `None`.
    #[getter]
    fn signal(&self) -> Option<i32> {
        self.0.signal()
    }

    /// `True` for exit code 0.
    #[getter]
    fn success(&self) -> bool {
        self.0.code() == Some(0)
    }

    /// Whether the process dumped core when it was killed.
    #[getter]
    fn core_dumped(&self) -> bool {
        self.0.core_dumped()
    }

    /// `subprocess` convention: the exit code, or minus the signal number.
    #[getter]
    fn returncode(&self) -> i32 {
        self.0.returncode()
    }

    /// The `wait(2)` status word, for `os.WIFEXITED` and friends.
    #[getter]
    fn waitstatus(&self) -> i32 {
        self.0.waitstatus()
    }

    pub(crate) fn __repr__(&self) -> String {
        match (self.0.code(), self.0.signal()) {
            (Some(code), _) => format!("ExitStatus(code={code})"),
            (None, Some(sig)) if self.0.core_dumped() => {
                format!("ExitStatus(signal={sig}, core_dumped=True)")
            }
            (None, Some(sig)) => format!("ExitStatus(signal={sig})"),
            (None, None) => format!("ExitStatus(waitstatus={:#x})", self.0.waitstatus()),
        }
    }
}
