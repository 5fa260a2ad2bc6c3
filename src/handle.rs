//! `PidFd`: the race-free handle on one process (or one thread).

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use pyo3::exceptions::{
    PyResourceWarning, PyRuntimeError, PyTimeoutError, PyTypeError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::args::{
    check_fd, check_signal, extract_bool, extract_int, extract_pid, extract_timeout,
};
use crate::errors::{self, closed};
use crate::info::ProcessInfo;
use crate::kernel::{kernel_version, no_such_ioctl};
use crate::procfs;
use crate::results::{ExitInfo, ExitStatus};
use crate::status::{self, Exit};
use crate::sys::{self, ChildInfo};
use crate::wait::{Deadline, has_been_reaped, has_exited, poll_until, pollfd, timeout_error};

/// What `wait_exit()` can say about a process that has exited.
enum ExitState {
    /// Final: the status, or `None` if the kernel will never tell it.
    Settled(Option<Exit>),
    /// A non-child zombie: once its parent reaps it, a kernel with
    /// `PIDFD_INFO_EXIT` can report the status.
    Pending,
}

/// How long `wait_exit()` gives a non-child's parent to reap it, so that
/// `PIDFD_INFO_EXIT` can report the status, before answering `None`.
/// A parent normally reaps within microseconds, but on a loaded machine its
/// wake-up can lag well past half a second, and answering `None` then would
/// hide a status the kernel was about to report.
pub(crate) const REAP_GRACE: Duration = Duration::from_secs(2);

/// A race-free handle on a process (or, with `thread=True`, one thread).
///
/// Unlike a pid, an open handle never comes to mean another process that
/// reused the number. Open one with `PidFd.from_pid(pid)`; close it with
/// `close()` or a `with` block.
// The fd sits in an `Arc` behind a mutex: a call in flight holds its own
// reference, so `close()` from another thread drops our reference but the
// fd number stays allocated (and cannot be reused for something else) until
// that call returns.
#[pyclass(module = "pidfd._native", frozen)]
pub struct PidFd {
    fd: Mutex<Option<Arc<OwnedFd>>>,
    pid: libc::pid_t,
    thread: bool,
    /// Set once a `wait()` on this handle has reaped the child, to tell
    /// "you already have its status" from "someone else reaped it". Held
    /// across the reaping `waitid` (which never blocks: `WNOHANG`), so that
    /// the reap and its record are one step: without the GIL, a thread that
    /// lost the race could otherwise read the flag before the winner set it.
    reaped: Mutex<bool>,
    /// The kernel reaps the child itself (`CLONE_AUTOREAP`, with
    /// `CLONE_PIDFD_AUTOKILL`): `wait()` reads its status from the pidfd.
    autoreaped: bool,
}

impl PidFd {
    pub(crate) fn new(fd: OwnedFd, pid: libc::pid_t, thread: bool) -> Self {
        Self {
            fd: Mutex::new(Some(Arc::new(fd))),
            pid,
            thread,
            reaped: Mutex::new(false),
            autoreaped: false,
        }
    }

    /// The clone pidfd of a child the kernel reaps itself (see `autoreaped`).
    pub(crate) fn autoreaped(fd: OwnedFd, pid: libc::pid_t) -> Self {
        let mut handle = Self::new(fd, pid, false);
        handle.autoreaped = true;
        handle
    }

    /// Our own reference to the fd for the length of one call.
    pub(crate) fn fd(&self) -> PyResult<Arc<OwnedFd>> {
        self.fd
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or_else(|| closed(self.pid))
    }

    fn refuse_thread(&self, call: &str) -> PyResult<()> {
        if self.thread {
            return Err(PyValueError::new_err(format!(
                "{call} reaps a child process, but this handle refers to thread {} \
                 (opened with thread=True); use wait_exit() or open the process with \
                 PidFd.from_pid(pid)",
                self.pid
            )));
        }
        Ok(())
    }

    /// One `waitid(WNOHANG)`: the child's status if it has exited (reaping
    /// it), `None` while it runs.
    fn reap_now(&self, fd: &OwnedFd) -> PyResult<Option<(ChildInfo, Option<libc::rusage>)>> {
        let mut reaped = self.reaped.lock().unwrap_or_else(PoisonError::into_inner);
        if self.autoreaped {
            return self.autoreaped_exit(fd, &mut reaped);
        }
        loop {
            match sys::waitid_pidfd(fd.as_fd(), libc::WNOHANG) {
                Ok(Some((child, rusage))) => {
                    *reaped = true;
                    return Ok(Some((child, Some(rusage))));
                }
                Ok(None) => return Ok(None),
                Err(e) => match e.raw_os_error() {
                    Some(libc::EINTR) => {}
                    Some(libc::ECHILD) => {
                        let ours = *reaped;
                        drop(reaped);
                        return Err(errors::no_child(self.pid, ours, || self.parent(fd)));
                    }
                    _ => return Err(errors::waitid(&e, self.pid)),
                },
            }
        }
    }

    /// `wait()`'s loop: reap once exited, polling until then or `deadline` (`None`).
    fn poll_then_reap(
        &self,
        py: Python<'_>,
        fd: &OwnedFd,
        deadline: Deadline,
    ) -> PyResult<Option<Py<ExitInfo>>> {
        loop {
            if let Some((child, rusage)) = self.reap_now(fd)? {
                return Self::exit_info(py, child, rusage).map(Some);
            }
            if !poll_until(py, &mut [pollfd(fd, libc::POLLIN)], deadline)? {
                return Ok(None);
            }
        }
    }

    /// `reap_now` for a child the kernel reaped itself: its status from
    /// `PIDFD_INFO_EXIT` once it has exited (Linux 7.1 has it: it came with
    /// `CLONE_AUTOREAP`); no resource usage, which only `wait4` reports.
    fn autoreaped_exit(
        &self,
        fd: &OwnedFd,
        reaped: &mut bool,
    ) -> PyResult<Option<(ChildInfo, Option<libc::rusage>)>> {
        if *reaped {
            return Err(errors::no_child(self.pid, true, || None));
        }
        if !has_exited(fd)? {
            return Ok(None);
        }
        let info = sys::pidfd_get_info(fd.as_fd(), sys::PIDFD_INFO_EXIT)
            .map_err(|e| errors::get_info(&e, self.pid))?;
        if info.mask & sys::PIDFD_INFO_EXIT == 0 {
            return Err(PyRuntimeError::new_err(format!(
                "pid {} was reaped by the kernel (CLONE_AUTOREAP) but PIDFD_INFO_EXIT \
                 has no status for it",
                self.pid
            )));
        }
        let Some((code, status)) = Exit(info.exit_code).siginfo() else {
            return Err(PyRuntimeError::new_err(format!(
                "unexpected PIDFD_INFO_EXIT status {:#x} for pid {}",
                info.exit_code, self.pid
            )));
        };
        *reaped = true;
        let child = ChildInfo {
            pid: self.pid,
            uid: info.ruid,
            signo: libc::SIGCHLD,
            status,
            code,
        };
        Ok(Some((child, None)))
    }

    /// `send_signal(sig, group=True)`: the group this process leads.
    fn signal_group(&self, fd: &OwnedFd, sig: libc::c_int) -> PyResult<()> {
        sys::pidfd_send_signal(fd.as_fd(), sig, sys::PIDFD_SIGNAL_PROCESS_GROUP)
            .map_err(|e| errors::signal_group(&e, fd.as_fd(), self.pid, sig))
    }

    /// The parent of the process, read race-free: `PIDFD_GET_INFO` where the
    /// kernel has it, else `/proc` confirmed by a signal-0 probe on the pidfd
    /// (which fails once the process has been reaped, so the pid read cannot
    /// have been reused).
    fn parent(&self, fd: &OwnedFd) -> Option<libc::pid_t> {
        match sys::pidfd_get_info(fd.as_fd(), sys::PIDFD_INFO_PID) {
            Ok(info) => (info.mask & sys::PIDFD_INFO_PID != 0).then_some(info.ppid as libc::pid_t),
            // No PIDFD_GET_INFO: before 6.11 the pidfd has no ioctls
            // (ENOTTY); 6.12 (measured) answers an unknown one with EINVAL.
            Err(e) if no_such_ioctl(&e) => {
                let parent = procfs::proc_ppid(self.pid)?;
                sys::pidfd_send_signal(fd.as_fd(), 0, 0).ok()?;
                Some(parent)
            }
            Err(_) => None,
        }
    }

    fn exit_info(
        py: Python<'_>,
        child: ChildInfo,
        rusage: Option<libc::rusage>,
    ) -> PyResult<Py<ExitInfo>> {
        let status = status::waitstatus_from_siginfo(child.code, child.status)
            .map_err(|e| PyRuntimeError::new_err(format!("unexpected siginfo from waitid: {e}")))?;
        Py::new(py, ExitInfo::new(child, rusage, Exit(status)))
    }

    /// A zombie child's status, peeked with `WNOWAIT` so that it stays
    /// reapable by its owner; `None` for anything else.
    fn peek_child_exit(&self, fd: &OwnedFd) -> Option<Exit> {
        if self.thread {
            return None;
        }
        let (child, _) = sys::waitid_pidfd(fd.as_fd(), libc::WNOHANG | libc::WNOWAIT).ok()??;
        status::waitstatus_from_siginfo(child.code, child.status)
            .ok()
            .map(Exit)
    }

    /// Where `wait_exit()` stands once the process has exited.
    fn exit_state(&self, fd: &OwnedFd) -> ExitState {
        if let Some(exit) = self.peek_child_exit(fd) {
            return ExitState::Settled(Some(exit));
        }
        // Ask "reaped?" before asking for the status: the parent may reap
        // between the two calls, and a status query that saw a zombie
        // followed by a POLLHUP would wrongly settle on None. Reaped first
        // means the kernel has already recorded the exit for the query.
        let reaped = has_been_reaped(fd);
        match sys::pidfd_get_info(fd.as_fd(), sys::PIDFD_INFO_EXIT) {
            Ok(info) if info.mask & sys::PIDFD_INFO_EXIT != 0 => {
                ExitState::Settled(Some(Exit(info.exit_code)))
            }
            // No PIDFD_INFO_EXIT in this kernel: the status cannot be learned.
            Err(e) if no_such_ioctl(&e) => ExitState::Settled(None),
            _ if kernel_version() < (6, 15) || reaped => ExitState::Settled(None),
            _ => ExitState::Pending,
        }
    }
}

/// An unclosed handle warns when collected, as an unclosed file does, so
/// that a leaked fd shows up under `-W error` or `python -X dev`.
// In Rust rather than a Python `__del__`: `PidFd` is a native class, and
// only its own `Drop` sees every handle, including those created by
// `from_fd`/`from_socket_peer` and those held inside `AsyncPidFd`, `Popen`
// and `Process`. The fd is closed either way (`OwnedFd` closes on drop).
impl Drop for PidFd {
    fn drop(&mut self) {
        let open = self
            .fd
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(fd) = open else { return };
        let message = format!(
            "unclosed PidFd (pid {}, fd {}); close it with close() or a with block",
            self.pid,
            fd.as_raw_fd()
        );
        drop(fd);
        // `None` while the interpreter is finalizing: nothing to warn then.
        Python::try_attach(|py| {
            let category = py.get_type::<PyResourceWarning>();
            let Ok(message) = CString::new(message) else {
                return;
            };
            // A handle is often dropped while an exception propagates (a
            // call on a temporary handle raised): set it aside for the
            // warning and put it back, or the warning machinery would see it
            // and the caller would get a SystemError instead.
            let pending = PyErr::take(py);
            // An error here is the warning turned into one (`-W error`);
            // a destructor cannot raise, so report it as CPython does for
            // an unclosed file.
            if let Err(e) = PyErr::warn(py, category.as_any(), &message, 1) {
                e.write_unraisable(py, None);
            }
            if let Some(pending) = pending {
                pending.restore(py);
            }
        });
    }
}

#[pymethods]
impl PidFd {
    /// Open a handle on process `pid` with `pidfd_open(2)` (Linux ≥ 5.3).
    ///
    /// For a child you have not yet waited for, this cannot race: its pid
    /// is not reused until it is reaped. With `thread=True` (Linux ≥ 6.9),
    /// `pid` is a thread id and the handle refers to that one thread.
    #[staticmethod]
    // `thread` is taken as any object so that a non-bool gets an error
    // naming it; the signature users see keeps the real default.
    #[pyo3(signature = (pid, *, thread = None), text_signature = "(pid, *, thread=False)")]
    fn from_pid(pid: &Bound<'_, PyAny>, thread: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let pid = extract_pid(pid)?;
        let thread = thread.map_or(Ok(false), |t| extract_bool(t, "thread"))?;
        let flags = if thread { sys::PIDFD_THREAD } else { 0 };
        let fd = sys::pidfd_open(pid, flags).map_err(|e| errors::pidfd_open(&e, pid, thread))?;
        Ok(Self::new(fd, pid, thread))
    }

    /// Adopt an existing pidfd, e.g. from `os.pidfd_open()` or received over a
    /// Unix socket. On success the handle owns `fd` and closes it; on error
    /// `fd` is left untouched and still yours.
    #[staticmethod]
    fn from_fd(fd: &Bound<'_, PyAny>) -> PyResult<Self> {
        let raw = check_fd(extract_int(fd, "fd")?, "fd")?;
        let pid = errors::adopted_pid(raw, procfs::fdinfo_pid(raw))?;
        let thread = sys::fd_flags(raw).is_ok_and(|f| f & libc::O_EXCL != 0);
        Ok(Self::new(sys::adopt_fd(raw), pid, thread))
    }

    /// A handle on the process at the other end of a connected Unix socket
    /// (`SO_PEERPIDFD`, Linux ≥ 6.5): who connected, without the pid race of
    /// `SO_PEERCRED`. `sock` is a socket object or its fd.
    #[staticmethod]
    fn from_socket_peer(sock: &Bound<'_, PyAny>) -> PyResult<Self> {
        let raw = if sock.hasattr("fileno")? {
            extract_int(&sock.call_method0("fileno")?, "sock.fileno()")?
        } else if sock.is_instance_of::<pyo3::types::PyInt>() {
            extract_int(sock, "sock")?
        } else {
            return Err(PyTypeError::new_err(format!(
                "sock must be a socket object or a file descriptor, not {}",
                sock.get_type().name()?
            )));
        };
        let raw = check_fd(raw, "sock")?;
        let fd = sys::peer_pidfd(raw).map_err(|e| errors::peer_pidfd(&e, raw))?;
        let pid = errors::peer_pid(raw, procfs::fdinfo_pid(fd.as_raw_fd()))?;
        Ok(Self::new(fd, pid, false))
    }

    /// The process id this handle refers to (still readable after `close()`).
    #[getter]
    fn pid(&self) -> libc::pid_t {
        self.pid
    }

    /// Whether this handle refers to a single thread (`thread=True`).
    #[getter]
    fn thread(&self) -> bool {
        self.thread
    }

    /// Whether `close()` has been called.
    #[getter]
    fn closed(&self) -> bool {
        self.fd
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_none()
    }

    /// The raw fd, for `select`, `selectors`, `loop.add_reader` or
    /// `anyio.wait_readable`. It polls readable once the process exits.
    fn fileno(&self) -> PyResult<i32> {
        Ok(self.fd()?.as_raw_fd())
    }

    /// Close the fd. Idempotent. A call blocked in another thread keeps its
    /// own reference, so the fd number is released only when it returns.
    fn close(&self) {
        drop(
            self.fd
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
    }

    /// Return the handle itself; `ValueError` if it is closed.
    fn __enter__(slf: Bound<'_, Self>) -> PyResult<Bound<'_, Self>> {
        slf.get().fd()?;
        Ok(slf)
    }

    /// Close the handle; an exception in the `with` body propagates.
    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, _exc: &Bound<'_, PyTuple>) -> bool {
        self.close();
        false
    }

    fn __repr__(&self) -> String {
        let kind = if self.thread { " thread" } else { "" };
        match self
            .fd
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            Some(fd) => format!("<PidFd pid={}{kind} fd={}>", self.pid, fd.as_raw_fd()),
            None => format!("<PidFd pid={}{kind} closed>", self.pid),
        }
    }

    /// Block until the child exits, reap it, and return its `ExitInfo`.
    ///
    /// Releases the GIL while blocked. A signal handler that raises (Ctrl-C)
    /// interrupts it with that exception and leaves the child unreaped; so
    /// does `TimeoutError` when `timeout` seconds pass.
    #[pyo3(signature = (timeout = None))]
    fn wait(&self, py: Python<'_>, timeout: Option<&Bound<'_, PyAny>>) -> PyResult<Py<ExitInfo>> {
        let timeout = extract_timeout(timeout)?;
        let deadline = Deadline::from_timeout(timeout)?;
        self.refuse_thread("wait()")?;
        let fd = self.fd()?;
        self.poll_then_reap(py, &fd, deadline)?
            .ok_or_else(|| timeout_error(self.pid, timeout))
    }

    /// For `pidfd.Popen.wait()` without a timeout, under the Popen's lock (as
    /// `subprocess` blocks in `waitpid`): reap in one blocking `waitid(2)`,
    /// not `wait()`'s poll then reap (W5). GIL released, signal handlers run
    /// on `EINTR`; a signal landing just before the call is acted on when it
    /// returns (the stdlib's window; `wait()`'s poll wakes up for it).
    fn _reap_blocking(&self, py: Python<'_>) -> PyResult<Py<ExitInfo>> {
        self.refuse_thread("wait()")?;
        let fd = self.fd()?;
        if self.autoreaped || sys::children_autoreaped() {
            // No reap to block in: the kernel reaps it. Poll, then read.
            return self
                .poll_then_reap(py, &fd, Deadline::Never)?
                .ok_or_else(|| timeout_error(self.pid, None));
        }
        loop {
            py.check_signals()?;
            // Not under `self.reaped`, which would stall a GIL-holding
            // `try_wait`: the Popen's lock serialises its reaps.
            match py.detach(|| sys::waitid_pidfd(fd.as_fd(), 0)) {
                Ok(Some((child, rusage))) => {
                    *self.reaped.lock().unwrap_or_else(PoisonError::into_inner) = true;
                    return Self::exit_info(py, child, Some(rusage));
                }
                Ok(None) => {} // not without WNOHANG: the kernel waits for one
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) if e.raw_os_error() == Some(libc::ECHILD) => {
                    let ours = *self.reaped.lock().unwrap_or_else(PoisonError::into_inner);
                    return Err(errors::no_child(self.pid, ours, || self.parent(&fd)));
                }
                Err(e) => return Err(errors::waitid(&e, self.pid)),
            }
        }
    }

    /// For `pidfd.Popen.wait(timeout)`: poll as `wait()` does until exited,
    /// not reaping (Popen does, under its lock); `False` once timed out.
    fn _wait_exited(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let deadline = Deadline::from_timeout(timeout)?;
        let fd = self.fd()?;
        poll_until(py, &mut [pollfd(&fd, libc::POLLIN)], deadline)
    }

    /// Reap the child if it has exited and return its `ExitInfo`; `None`
    /// while it is still running. Never blocks.
    fn try_wait(&self, py: Python<'_>) -> PyResult<Option<Py<ExitInfo>>> {
        self.refuse_thread("try_wait()")?;
        let fd = self.fd()?;
        self.reap_now(&fd)?
            .map(|(child, rusage)| Self::exit_info(py, child, rusage))
            .transpose()
    }

    /// Send signal `sig` with `pidfd_send_signal(2)` (Linux ≥ 5.1): never
    /// reaches a process that merely reuses the pid. With `group=True`, to
    /// every process in the group this process leads
    /// (`PIDFD_SIGNAL_PROCESS_GROUP`, Linux ≥ 6.9).
    #[pyo3(signature = (sig, *, group = false))]
    fn send_signal(&self, sig: &Bound<'_, PyAny>, group: bool) -> PyResult<()> {
        let sig = check_signal(extract_int(sig, "sig")?)?;
        let fd = self.fd()?;
        if group {
            return self.signal_group(&fd, sig);
        }
        sys::pidfd_send_signal(fd.as_fd(), sig, 0)
            .map_err(|e| errors::send_signal(&e, self.pid, sig))
    }

    /// Send `SIGKILL`.
    fn kill(&self, py: Python<'_>) -> PyResult<()> {
        self.send_signal(&libc::SIGKILL.into_pyobject(py)?.into_any(), false)
    }

    /// Send `SIGTERM`.
    fn terminate(&self, py: Python<'_>) -> PyResult<()> {
        self.send_signal(&libc::SIGTERM.into_pyobject(py)?.into_any(), false)
    }

    /// Whether the process is still running: `False` once it has exited,
    /// zombie or reaped. Never blocks, never reaps.
    fn is_alive(&self) -> PyResult<bool> {
        Ok(!has_exited(&*self.fd()?)?)
    }

    /// Block until the process exits — child or not — without reaping it.
    ///
    /// Returns its `ExitStatus` where the kernel can tell: for a zombie child
    /// (peeked with `WNOWAIT`, so its owner still reaps it), or from
    /// `PIDFD_INFO_EXIT` (Linux ≥ 6.15) once it has been reaped. Returns
    /// `None` where the status cannot be known; never a made-up value.
    #[pyo3(signature = (timeout = None))]
    fn wait_exit(
        &self,
        py: Python<'_>,
        timeout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Option<ExitStatus>> {
        let timeout = extract_timeout(timeout)?;
        let deadline = Deadline::from_timeout(timeout)?;
        let fd = self.fd()?;
        if !poll_until(py, &mut [pollfd(&fd, libc::POLLIN)], deadline)? {
            return Err(timeout_error(self.pid, timeout));
        }
        // Exited. A non-child's status appears once its parent reaps it
        // (POLLHUP), which is normally at once; give it a moment.
        let grace = deadline.earlier(Instant::now() + REAP_GRACE);
        loop {
            if let ExitState::Settled(exit) = self.exit_state(&fd) {
                return Ok(exit.map(ExitStatus));
            }
            if !poll_until(py, &mut [pollfd(&fd, 0)], grace)? {
                return Ok(None);
            }
        }
    }

    /// What the kernel knows about the process (`PIDFD_GET_INFO`,
    /// Linux ≥ 6.13).
    fn info(&self, py: Python<'_>) -> PyResult<ProcessInfo> {
        let fd = self.fd()?;
        let info = sys::pidfd_get_info(fd.as_fd(), ProcessInfo::REQUEST)
            .map_err(|e| errors::get_info(&e, self.pid))?;
        // A zombie child's status is there to peek even where the kernel
        // does not report it (before 6.15, or until the child is reaped).
        let peeked = if info.mask & sys::PIDFD_INFO_EXIT == 0 {
            self.peek_child_exit(&fd)
        } else {
            None
        };
        ProcessInfo::new(py, self.pid, &info, peeked)
    }

    /// Duplicate the target process's file descriptor `fd` into this process
    /// (`pidfd_getfd(2)`, Linux ≥ 5.6). The new fd is close-on-exec and yours
    /// to close. Needs ptrace rights over the target, else `PermissionError`.
    fn getfd(&self, fd: &Bound<'_, PyAny>) -> PyResult<i32> {
        let target = check_fd(extract_int(fd, "fd")?, "fd")?;
        let pidfd = self.fd()?;
        let new = sys::pidfd_getfd(pidfd.as_fd(), target).map_err(|e| {
            errors::getfd(&e, self.pid, target, || has_exited(&pidfd).unwrap_or(false))
        })?;
        Ok(sys::release_fd(new))
    }

    /// How the process ended, as `wait_exit()` would answer, but without
    /// waiting: never blocks, never reaps, child or not.
    ///
    /// Returns its `ExitStatus` where the kernel can tell, or `None` where
    /// it never will; while the answer is not settled yet, `TimeoutError`:
    /// the process is still running, or it is a zombie that is not our child
    /// and whose parent has yet to reap it, on a kernel (Linux ≥ 6.15) that
    /// reports the status once it does.
    fn exit_status(&self) -> PyResult<Option<ExitStatus>> {
        let fd = self.fd()?;
        if !has_exited(&fd)? {
            return Err(PyTimeoutError::new_err(format!(
                "pid {} is still running; its exit status is not known yet",
                self.pid
            )));
        }
        match self.exit_state(&fd) {
            ExitState::Settled(exit) => Ok(exit.map(ExitStatus)),
            ExitState::Pending => Err(PyTimeoutError::new_err(format!(
                "pid {} has exited but its parent has not reaped it yet; its exit status \
                 is known once it does",
                self.pid
            ))),
        }
    }
}
