//! `_native._spawn`: the clone3 spawn for `pidfd.Popen` and `open_process`.
//!
//! Takes what CPython's `_posixsubprocess.fork_exec` takes, already
//! converted by `python/pidfd/_spawn.py` (bytes, ints), and returns the
//! child's pid and a [`PidFd`] from the clone itself, or `None` where this
//! kernel or sandbox refuses `clone3` (the caller then spawns the stock way;
//! nothing was started).

use std::ffi::{CString, OsString};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::sync::Mutex;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyBytes, PyString};

use crate::handle::PidFd;
use crate::sys::spawn::{ERRPIPE_READ, ERRPIPE_WRITE, Launch, Plan, SpawnError, Spawned, spawn};

pub(crate) fn c_string(bytes: impl Into<Vec<u8>>) -> PyResult<CString> {
    // The message os.fsencode'd paths get from CPython's own converter.
    CString::new(bytes).map_err(|_| PyValueError::new_err("embedded null byte"))
}

// PyBackedBytes borrows each bytes object's buffer: a Vec<u8> would be
// extracted as a sequence of ints, one Python call per byte of every
// argument and environment entry.
fn c_strings(list: &[PyBackedBytes]) -> PyResult<Vec<CString>> {
    list.iter().map(|b| c_string(&**b)).collect()
}

/// `os.fsencode(obj)`: bytes as they are, str in the filesystem encoding
/// (PyO3's `OsString` is `PyUnicode_EncodeFSDefault`, what `os.fsencode`
/// calls), anything else (a path-like object) through `os.fsencode`
/// itself, for its own conversion and `TypeError`. Done here rather than by
/// `os.fsencode` in Python for each argument: that loop was a measurable
/// share of a spawn (W5).
pub(crate) fn fs_bytes(obj: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    if let Ok(b) = obj.cast::<PyBytes>() {
        Ok(b.as_bytes().to_vec())
    } else if obj.is_instance_of::<PyString>() {
        Ok(obj.extract::<OsString>()?.into_vec())
    } else {
        let encoded = obj.py().import("os")?.call_method1("fsencode", (obj,))?;
        Ok(encoded.cast::<PyBytes>()?.as_bytes().to_vec())
    }
}

/// An argument or path as `os.fsencode` gives it, as a C string.
pub(crate) fn fs_c_string(obj: &Bound<'_, PyAny>) -> PyResult<CString> {
    c_string(fs_bytes(obj)?)
}

/// The exec status of a child started without waiting for its exec: the
/// read end of its error pipe, and the memory the child reads until it has
/// exec'd. Await `fileno()` readable, then call `finish()`.
#[pyclass(module = "pidfd._native", frozen)]
pub struct ExecStatus {
    pending: Mutex<Option<(File, Launch)>>,
    fd: i32,
}

impl ExecStatus {
    fn drain(pending: Option<(File, Launch)>) -> Vec<u8> {
        let mut data = Vec::new();
        if let Some((mut pipe, launch)) = pending {
            // EOF comes when the child has exec'd (the write end is
            // close-on-exec) or exited after writing why not; only then is
            // the child done with the launch's memory.
            let _ = pipe.read_to_end(&mut data);
            drop(launch);
        }
        data
    }
}

#[pymethods]
impl ExecStatus {
    /// The error pipe's read end: readable once the child has exec'd or failed.
    fn fileno(&self) -> i32 {
        self.fd
    }

    /// Read the child's report (empty: it exec'd), release its memory and
    /// close the pipe. Blocks only until the child has exec'd or exited, so
    /// call it once `fileno()` is readable; later calls return `b""`.
    fn finish<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        let pending = self
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let data = py.detach(|| Self::drain(pending));
        PyBytes::new(py, &data)
    }
}

impl Drop for ExecStatus {
    fn drop(&mut self) {
        // Never free memory a child may still read: wait for its exec first.
        let pending = self
            .pending
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        Self::drain(pending);
    }
}

/// The child's lifetime settings where the stock spawn started it: called
/// from the `preexec_fn` that `pidfd._spawn` wraps around the caller's, with
/// the spawning process's pid (`die_with_parent`), 0 for none, and
/// `no_new_privs`.
#[pyfunction]
#[pyo3(signature = (parent, no_new_privs = false))]
pub fn _child_lifetime(parent: i32, no_new_privs: bool) -> PyResult<()> {
    crate::sys::child_lifetime(parent, no_new_privs)?;
    Ok(())
}

/// Whether `clone3` has been refused for good in this process (`ENOSYS`,
/// `EPERM`...): every later spawn goes the stock way.
#[pyfunction]
pub fn _spawn_refused() -> bool {
    crate::sys::spawn::refused_for_good()
}

/// Spawn through `clone3(CLONE_PIDFD)`; see the module docs.
///
/// `chdir_marker`: report a failed `chdir` as `noexec:chdir`, as CPython
/// 3.13 and later do. `fds` is `(p2cread, p2cwrite, c2pread, c2pwrite, errread, errwrite,
/// errpipe_read, errpipe_write)` as `fork_exec` takes them. With
/// `wait_exec`, returns once the child has exec'd (its failure is on
/// `errpipe_read`, for `subprocess` to read) and the third item is `None`;
/// without, at once, the child reporting on a pipe of its own (an
/// [`ExecStatus`]) after closing `errpipe_write`. `die_with_parent`: the
/// child is cloned with `CLONE_PIDFD_AUTOKILL` on Linux >= 7.1 (the handle
/// returned is then one of a child the kernel reaps itself), else gets
/// `PR_SET_PDEATHSIG(SIGKILL)` and ends at once if this process died before
/// that (see `sys::child`); `no_new_privs`:
/// `PR_SET_NO_NEW_PRIVS` in the child; `cgroup`: an open directory fd of
/// the cgroup v2 the child starts in (`CLONE_INTO_CGROUP`), `-1` for ours.
/// A cgroup the kernel refuses raises `OSError` with its errno (nothing
/// started); one this kernel cannot clone into returns `None` like a
/// refused `clone3`, for this spawn only.
///
/// With no error pipe (`errpipe_read` and `errpipe_write` both -1; only
/// with `wait_exec` and no `gid`, `groups` or `uid`), the child reports a
/// failure in our memory, which it shares (`CLONE_VM`) until it has exec'd
/// or exited: no pipe is made, read or closed. The third item is then that
/// report, CPython's error-pipe bytes (the child has exited, unreaped), or
/// `None` when it exec'd.
#[pyfunction]
#[pyo3(signature = (argv, executables, close_fds, keep, cwd, env, fds, restore_signals, setsid, pgid, gid, groups, uid, umask, wait_exec, chdir_marker, *, die_with_parent = false, no_new_privs = false, cgroup = -1))]
// The flat signature mirrors _posixsubprocess.fork_exec, whose arguments the
// Python side passes on one for one.
#[allow(
    clippy::too_many_arguments,
    clippy::type_complexity,
    clippy::fn_params_excessive_bools
)]
pub fn _spawn(
    py: Python<'_>,
    argv: Vec<Bound<'_, PyAny>>,
    executables: Vec<PyBackedBytes>,
    close_fds: bool,
    keep: Vec<i32>,
    cwd: Option<Bound<'_, PyAny>>,
    env: Option<Vec<PyBackedBytes>>,
    fds: [i32; 8],
    restore_signals: bool,
    setsid: bool,
    pgid: i32,
    gid: Option<u32>,
    groups: Option<Vec<u32>>,
    uid: Option<u32>,
    umask: i32,
    wait_exec: bool,
    chdir_marker: bool,
    die_with_parent: bool,
    no_new_privs: bool,
    cgroup: i32,
) -> PyResult<Option<Started>> {
    let plan = Plan {
        argv: argv.iter().map(fs_c_string).collect::<PyResult<_>>()?,
        executables: c_strings(&executables)?,
        env: env.as_deref().map(c_strings).transpose()?,
        cwd: cwd.as_ref().map(fs_c_string).transpose()?,
        keep,
        close_fds,
        chdir_marker,
        fds,
        close_first: [-1, -1],
        restore_signals,
        setsid,
        pgid,
        gid,
        groups,
        uid,
        umask,
        die_with_parent,
        no_new_privs,
        cgroup,
    };
    start(py, plan, wait_exec)
}

/// What a started child comes back as to Python: its pid, its handle, and
/// its exec status or report (see [`_spawn`]).
pub(crate) type Started = (i32, PidFd, Option<Py<PyAny>>);

/// Start `plan` (see [`_spawn`] for `wait_exec` and the error pipe);
/// `None` where `clone3` is refused.
pub(crate) fn start(py: Python<'_>, mut plan: Plan, wait_exec: bool) -> PyResult<Option<Started>> {
    let fds = plan.fds;
    let mut status_pipe: Option<(OwnedFd, OwnedFd)> = None;
    if !wait_exec {
        // The child reports on a pipe of its own, read when the loop says it
        // is readable. The caller's error pipe must see EOF at once instead,
        // so no writer of it may be left, in the child either: before the
        // clone, its write end's number becomes a close-on-exec copy of our
        // read end (the caller closes it as it would have closed the write
        // end), which the child closes first.
        // Without an error pipe of the caller's (`_spawn_plain`), there is
        // nothing to replace.
        let (r, w) = crate::sys::pipe_high()?;
        let callers = plan.fds[ERRPIPE_WRITE];
        if callers >= 0 {
            crate::sys::replace_fd(r.as_fd(), callers)?;
            plan.close_first = [callers, -1];
        }
        plan.fds[ERRPIPE_WRITE] = w.as_raw_fd();
        if let Err(at) = plan.keep.binary_search(&w.as_raw_fd()) {
            plan.keep.insert(at, w.as_raw_fd());
        }
        status_pipe = Some((r, w));
    }
    let result = py.detach(|| spawn(plan, wait_exec));
    if let (Err(SpawnError::Unsupported(_)), Some(_), true) =
        (&result, &status_pipe, fds[ERRPIPE_WRITE] >= 0)
    {
        // Nothing started, and the caller spawns the stock way next: give
        // its two numbers a fresh error pipe in place of the one we took.
        let (fresh_r, fresh_w) = crate::sys::pipe_high()?;
        crate::sys::replace_fd(fresh_r.as_fd(), fds[ERRPIPE_READ])?;
        crate::sys::replace_fd(fresh_w.as_fd(), fds[ERRPIPE_WRITE])?;
    }
    match result {
        Ok(Spawned {
            pid: child,
            pidfd: fd,
            launch,
            autokill,
        }) => {
            let report = launch.report();
            let status = if let Some((r, w)) = status_pipe {
                drop(w);
                let fd = r.as_raw_fd();
                let pending = Mutex::new(Some((File::from(r), launch)));
                Some(
                    ExecStatus { pending, fd }
                        .into_pyobject(py)?
                        .into_any()
                        .unbind(),
                )
            } else if report.is_empty() {
                None
            } else {
                Some(PyBytes::new(py, report).into_any().unbind())
            };
            let handle = if autokill {
                PidFd::autoreaped(fd, child)
            } else {
                PidFd::new(fd, child, false)
            };
            Ok(Some((child, handle, status)))
        }
        Err(SpawnError::Unsupported(_)) => Ok(None),
        Err(SpawnError::Os(e)) => Err(e.into()),
    }
}
