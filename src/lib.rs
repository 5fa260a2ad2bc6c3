//! `pidfd._native`: the PyO3 layer over [`sys`] and [`status`].
//!
//! Everything here is glue: argument checking, the interruptible blocking
//! loop, and building Python objects. System calls live in `sys.rs`, exit
//! decoding in `status.rs`, errno mapping in `errors.rs`.

#[cfg(not(target_os = "linux"))]
compile_error!(
    "async-pidfd only works on Linux: pidfd_open(2), waitid(P_PIDFD) and \
     pidfd_send_signal(2) exist nowhere else"
);

pub mod errors;
pub mod status;
pub mod sys;

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use pyo3::exceptions::{
    PyOverflowError, PyRuntimeError, PyTimeoutError, PyTypeError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyList, PyTuple, PyType};

use crate::errors::{closed, from_io, needs_kernel, os_error};
use crate::status::Exit;
use crate::sys::ChildInfo;

/// When a blocking call must give up.
#[derive(Clone, Copy, Debug)]
enum Deadline {
    Never,
    At(Instant),
}

impl Deadline {
    /// `None`, `inf` and anything too large for `Instant` wait forever; zero
    /// or negative checks once; NaN is refused.
    fn from_timeout(timeout: Option<f64>) -> PyResult<Self> {
        let Some(secs) = timeout else {
            return Ok(Self::Never);
        };
        if secs.is_nan() {
            return Err(PyValueError::new_err(
                "timeout must be a number of seconds or None, not NaN",
            ));
        }
        let now = Instant::now();
        if secs <= 0.0 {
            return Ok(Self::At(now));
        }
        Ok(Duration::try_from_secs_f64(secs)
            .ok()
            .and_then(|d| now.checked_add(d))
            .map_or(Self::Never, Self::At))
    }

    /// Time left, `None` for no limit.
    fn remaining(self) -> Option<Duration> {
        match self {
            Self::Never => None,
            Self::At(t) => Some(t.saturating_duration_since(Instant::now())),
        }
    }

    fn expired(self) -> bool {
        matches!(self, Self::At(t) if Instant::now() >= t)
    }

    fn earlier(self, other: Instant) -> Self {
        match self {
            Self::At(t) if t <= other => self,
            _ => Self::At(other),
        }
    }
}

/// The longest single `poll(2)` in the thread that runs Python's signal
/// handlers. A signal that lands after our last check but before the poll
/// is inside the kernel does not interrupt it (Python's C-level handler only
/// records it), so without a bound Ctrl-C could go unnoticed until the
/// timeout or the child's exit. Waking this often keeps that under 100 ms.
const SIGNAL_CHECK_INTERVAL: Duration = Duration::from_millis(50);

/// Polls `fds` until one is ready or the deadline passes, with the GIL
/// released. A signal interrupts the poll with `EINTR`: we then run Python's
/// signal handlers, propagate what they raise (Ctrl-C), and otherwise go on
/// with the time that is left (PEP 475). Returns whether any fd is ready.
fn poll_until(py: Python<'_>, fds: &mut [libc::pollfd], deadline: Deadline) -> PyResult<bool> {
    // Other threads never run handlers: they may block for the whole time.
    let slice = sys::is_initial_thread().then_some(SIGNAL_CHECK_INTERVAL);
    loop {
        let remaining = deadline.remaining();
        if remaining != Some(Duration::ZERO) {
            // A signal that landed after Python last checked but before we
            // block would otherwise wait for the next one to be noticed.
            py.check_signals()?;
        }
        let timeout = match (remaining, slice) {
            (Some(r), Some(s)) => Some(r.min(s)),
            (r, s) => r.or(s),
        };
        match py.detach(|| sys::poll(fds, timeout)) {
            Ok(0) if deadline.expired() => return Ok(false),
            // The slice ended, or woke a little early (timer rounding):
            // check for signals and sleep out the rest.
            Ok(0) => {}
            Ok(_) => return Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => py.check_signals()?,
            Err(e) => return Err(from_io(&e, "poll() on a pidfd failed")),
        }
    }
}

fn pollfd(fd: &OwnedFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    }
}

/// Whether the process has exited: a pidfd polls readable from the moment
/// the whole thread group is gone (zombie or reaped).
fn has_exited(fd: &OwnedFd) -> PyResult<bool> {
    let mut fds = [pollfd(fd, libc::POLLIN)];
    sys::poll(&mut fds, Some(Duration::ZERO))
        .map(|n| n > 0)
        .map_err(|e| from_io(&e, "poll() on a pidfd failed"))
}

/// Whether the process has also been reaped: pidfs kernels (Linux ≥ 6.9)
/// add `POLLHUP` once the task is released.
fn has_been_reaped(fd: &OwnedFd) -> bool {
    let mut fds = [pollfd(fd, 0)];
    matches!(sys::poll(&mut fds, Some(Duration::ZERO)), Ok(n) if n > 0)
        && fds[0].revents & libc::POLLHUP != 0
}

/// `(major, minor)` of the running kernel, read once.
fn kernel_version() -> (u32, u32) {
    static VERSION: OnceLock<(u32, u32)> = OnceLock::new();
    *VERSION.get_or_init(|| {
        let release = sys::kernel_release();
        let mut parts = release
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|p| p.parse().ok());
        (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
    })
}

/// Whether the kernel knows `PIDFD_THREAD` (Linux ≥ 6.9), asked by opening
/// the calling thread with it: a thread that is certainly alive, so `EINVAL`
/// can only mean an unknown flag.
fn kernel_has_pidfd_thread() -> bool {
    !matches!(
        sys::pidfd_open(sys::gettid(), sys::PIDFD_THREAD),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL)
    )
}

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
const REAP_GRACE: Duration = Duration::from_secs(2);

fn check_pid(pid: i64) -> PyResult<libc::pid_t> {
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

fn check_fd(fd: i64, what: &str) -> PyResult<libc::c_int> {
    libc::c_int::try_from(fd)
        .ok()
        .filter(|fd| *fd >= 0)
        .ok_or_else(|| {
            PyValueError::new_err(format!(
                "{what} must be a non-negative file descriptor, not {fd}"
            ))
        })
}

fn check_signal(sig: i64) -> PyResult<libc::c_int> {
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
    /// "you already have its status" from "someone else reaped it".
    reaped: AtomicBool,
}

impl PidFd {
    fn new(fd: OwnedFd, pid: libc::pid_t, thread: bool) -> Self {
        Self {
            fd: Mutex::new(Some(Arc::new(fd))),
            pid,
            thread,
            reaped: AtomicBool::new(false),
        }
    }

    /// Our own reference to the fd for the length of one call.
    fn fd(&self) -> PyResult<Arc<OwnedFd>> {
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

    /// One `waitid(WNOHANG)`: the child's status if it has exited (reaping it
    /// unless `peek`), `None` while it runs.
    fn reap_now(&self, fd: &OwnedFd, peek: bool) -> PyResult<Option<(ChildInfo, libc::rusage)>> {
        let options = libc::WNOHANG | if peek { libc::WNOWAIT } else { 0 };
        loop {
            match sys::waitid_pidfd(fd.as_fd(), options) {
                Ok(Some(found)) => {
                    if !peek {
                        self.reaped.store(true, Ordering::Release);
                    }
                    return Ok(Some(found));
                }
                Ok(None) => return Ok(None),
                Err(e) => match e.raw_os_error() {
                    Some(libc::EINTR) => {}
                    Some(libc::ECHILD) => return Err(self.no_child_error(fd)),
                    // Our idtype and options are all valid on any kernel
                    // that knows P_PIDFD, so EINVAL means it does not.
                    Some(libc::EINVAL) => return Err(needs_kernel("waitid(P_PIDFD)", "5.4")),
                    _ => return Err(from_io(&e, format_args!("waitid() on pid {}", self.pid))),
                },
            }
        }
    }

    /// The parent of the process, read race-free: `PIDFD_GET_INFO` where the
    /// kernel has it, else `/proc` confirmed by a signal-0 probe on the pidfd
    /// (which fails once the process has been reaped, so the pid read cannot
    /// have been reused).
    fn parent(&self, fd: &OwnedFd) -> Option<libc::pid_t> {
        match sys::pidfd_get_info(fd.as_fd(), sys::PIDFD_INFO_PID) {
            Ok(info) => (info.mask & sys::PIDFD_INFO_PID != 0).then_some(info.ppid as libc::pid_t),
            Err(e) if e.raw_os_error() == Some(libc::ENOTTY) => {
                let parent = sys::proc_ppid(self.pid)?;
                sys::pidfd_send_signal(fd.as_fd(), 0).ok()?;
                Some(parent)
            }
            Err(_) => None,
        }
    }

    /// `ECHILD` from `waitid`: say which of the possible reasons it is.
    fn no_child_error(&self, fd: &OwnedFd) -> PyErr {
        let pid = self.pid;
        let me = sys::getpid();
        let message = if self.reaped.load(Ordering::Acquire) {
            format!(
                "pid {pid} was already reaped by an earlier wait() on this handle, which \
                 returned its ExitInfo; a process can be reaped only once"
            )
        } else if sys::sigchld_ignored() {
            format!(
                "pid {pid} cannot be reaped: SIGCHLD is ignored in this process (SIG_IGN or \
                 SA_NOCLDWAIT), so the kernel reaps children itself and discards their status; \
                 restore signal.signal(signal.SIGCHLD, signal.SIG_DFL) before starting \
                 children, or use wait_exit()"
            )
        } else {
            match self.parent(fd) {
                Some(parent) if parent != me => format!(
                    "pid {pid} is not a child of this process (its parent is pid {parent}), so \
                     wait() and try_wait() cannot reap it; use wait_exit() to wait for any \
                     process without reaping it"
                ),
                _ => format!(
                    "pid {pid} has already been reaped, by something else in this process \
                     (os.waitpid(), subprocess, asyncio, or another handle), so its status \
                     is no longer available to wait(); wait_exit() can still report it \
                     on Linux >= 6.15"
                ),
            }
        };
        os_error(libc::ECHILD, message)
    }

    fn exit_info(py: Python<'_>, child: ChildInfo, rusage: libc::rusage) -> PyResult<Py<ExitInfo>> {
        let status = status::waitstatus_from_siginfo(child.code, child.status)
            .map_err(|e| PyRuntimeError::new_err(format!("unexpected siginfo from waitid: {e}")))?;
        Py::new(
            py,
            ExitInfo {
                child,
                rusage: Rusage(rusage),
                status: Exit(status),
                siginfo_obj: OnceLock::new(),
                rusage_obj: OnceLock::new(),
            },
        )
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
            Err(e) if e.raw_os_error() == Some(libc::ENOTTY) => ExitState::Settled(None),
            _ if kernel_version() < (6, 15) || reaped => ExitState::Settled(None),
            _ => ExitState::Pending,
        }
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
    #[pyo3(signature = (pid, *, thread = false))]
    fn from_pid(pid: &Bound<'_, PyAny>, thread: bool) -> PyResult<Self> {
        let pid = extract_int(pid, "pid")?;
        let pid = check_pid(pid)?;
        let flags = if thread { sys::PIDFD_THREAD } else { 0 };
        match sys::pidfd_open(pid, flags) {
            Ok(fd) => Ok(Self::new(fd, pid, thread)),
            Err(e) => Err(match e.raw_os_error() {
                Some(libc::ESRCH) => os_error(
                    libc::ESRCH,
                    format!(
                        "no process with pid {pid} (it has exited and been reaped, or never existed)"
                    ),
                ),
                Some(libc::ENOSYS) => needs_kernel("pidfd_open(2)", "5.3"),
                Some(libc::EINVAL) if thread && !kernel_has_pidfd_thread() => {
                    needs_kernel("PidFd.from_pid(pid, thread=True) (PIDFD_THREAD)", "6.9")
                }
                Some(libc::ENOENT) if thread => os_error(
                    libc::ENOENT,
                    format!("{pid} is not a thread id visible to this process"),
                ),
                // A thread that is not its group's leader: older kernels say
                // EINVAL, recent ones (6.18 at least) ENOENT.
                Some(errno @ (libc::EINVAL | libc::ENOENT)) if !thread => match sys::proc_tgid(pid)
                {
                    Some(tgid) if tgid != pid => os_error(
                        errno,
                        format!(
                            "pid {pid} is a thread of process {tgid}, not a process; pass \
                             {tgid}, or thread=True for a handle on the thread"
                        ),
                    ),
                    _ => from_io(&e, format_args!("pidfd_open({pid})")),
                },
                _ => from_io(&e, format_args!("pidfd_open({pid})")),
            }),
        }
    }

    /// Adopt an existing pidfd, e.g. from `os.pidfd_open()` or received over a
    /// Unix socket. On success the handle owns `fd` and closes it; on error
    /// `fd` is left untouched and still yours.
    #[staticmethod]
    fn from_fd(fd: &Bound<'_, PyAny>) -> PyResult<Self> {
        let raw = check_fd(extract_int(fd, "fd")?, "fd")?;
        let pid = sys::fdinfo_pid(raw).map_err(|e| match e.raw_os_error() {
            // No /proc/self/fd entry: the number is not an open fd.
            Some(libc::ENOENT) => os_error(libc::EBADF, format!("fd {raw} is not open")),
            _ if e.kind() == std::io::ErrorKind::Unsupported => {
                needs_kernel("PidFd.from_fd() (the pid in a pidfd's fdinfo)", "5.5")
            }
            _ => from_io(&e, format_args!("fd {raw}")),
        })?;
        let pid = match pid {
            None => {
                return Err(PyValueError::new_err(format!(
                    "fd {raw} is not a pidfd; open one with PidFd.from_pid(pid) or os.pidfd_open(pid)"
                )));
            }
            Some(-1) => {
                return Err(os_error(
                    libc::ESRCH,
                    format!("pidfd {raw} refers to a process that has already been reaped"),
                ));
            }
            Some(0) => {
                return Err(PyValueError::new_err(format!(
                    "pidfd {raw} refers to a process outside this process's pid namespace"
                )));
            }
            Some(pid) => pid,
        };
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
        let fd = sys::peer_pidfd(raw).map_err(|e| match e.raw_os_error() {
            // SOL_SOCKET options are handled by the core socket code for
            // every family: an unknown option number means an older kernel.
            // A socket without peer credentials (TCP, unconnected) is ENODATA.
            Some(libc::ENOPROTOOPT) => {
                needs_kernel("PidFd.from_socket_peer() (SO_PEERPIDFD)", "6.5")
            }
            Some(libc::ENODATA) => os_error(
                libc::ENODATA,
                format!("fd {raw} has no peer process: it must be a connected AF_UNIX socket"),
            ),
            Some(libc::ESRCH) => os_error(
                libc::ESRCH,
                format!("the peer of socket fd {raw} has already exited and been reaped"),
            ),
            _ => from_io(&e, format_args!("getsockopt(SO_PEERPIDFD) on fd {raw}")),
        })?;
        let pid = match sys::fdinfo_pid(fd.as_raw_fd()) {
            Ok(Some(pid)) if pid > 0 => pid,
            Ok(Some(-1)) => {
                return Err(os_error(
                    libc::ESRCH,
                    format!("the peer of socket fd {raw} has already exited and been reaped"),
                ));
            }
            Ok(_) => {
                return Err(os_error(
                    libc::ESRCH,
                    format!("the peer of socket fd {raw} is outside this process's pid namespace"),
                ));
            }
            Err(e) => return Err(from_io(&e, "reading the peer's pidfd")),
        };
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

    /// Return the handle itself.
    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
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
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Py<ExitInfo>> {
        let deadline = Deadline::from_timeout(timeout)?;
        self.refuse_thread("wait()")?;
        let fd = self.fd()?;
        loop {
            if let Some((child, rusage)) = self.reap_now(&fd, false)? {
                return Self::exit_info(py, child, rusage);
            }
            if !poll_until(py, &mut [pollfd(&fd, libc::POLLIN)], deadline)? {
                return Err(timeout_error(self.pid, timeout));
            }
        }
    }

    /// Reap the child if it has exited and return its `ExitInfo`; `None`
    /// while it is still running. Never blocks.
    fn try_wait(&self, py: Python<'_>) -> PyResult<Option<Py<ExitInfo>>> {
        self.refuse_thread("try_wait()")?;
        let fd = self.fd()?;
        self.reap_now(&fd, false)?
            .map(|(child, rusage)| Self::exit_info(py, child, rusage))
            .transpose()
    }

    /// Send signal `sig` with `pidfd_send_signal(2)` (Linux ≥ 5.1): never
    /// reaches a process that merely reuses the pid.
    fn send_signal(&self, sig: &Bound<'_, PyAny>) -> PyResult<()> {
        let sig = check_signal(extract_int(sig, "sig")?)?;
        let fd = self.fd()?;
        sys::pidfd_send_signal(fd.as_fd(), sig).map_err(|e| match e.raw_os_error() {
            Some(libc::ESRCH) => os_error(
                libc::ESRCH,
                format!("pid {} has exited; signal {sig} was not sent", self.pid),
            ),
            Some(libc::ENOSYS) => needs_kernel("pidfd_send_signal(2)", "5.1"),
            Some(libc::EPERM) => os_error(
                libc::EPERM,
                format!("not permitted to send signal {sig} to pid {}", self.pid),
            ),
            _ => from_io(
                &e,
                format_args!("pidfd_send_signal(pid {}, {sig})", self.pid),
            ),
        })
    }

    /// Send `SIGKILL`.
    fn kill(&self, py: Python<'_>) -> PyResult<()> {
        self.send_signal(&libc::SIGKILL.into_pyobject(py)?.into_any())
    }

    /// Send `SIGTERM`.
    fn terminate(&self, py: Python<'_>) -> PyResult<()> {
        self.send_signal(&libc::SIGTERM.into_pyobject(py)?.into_any())
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
    fn wait_exit(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<ExitStatus>> {
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
        let want = sys::PIDFD_INFO_PID
            | sys::PIDFD_INFO_CREDS
            | sys::PIDFD_INFO_CGROUPID
            | sys::PIDFD_INFO_EXIT;
        let info = sys::pidfd_get_info(fd.as_fd(), want).map_err(|e| match e.raw_os_error() {
            Some(libc::ENOTTY | libc::EINVAL) => {
                needs_kernel("PidFd.info() (PIDFD_GET_INFO)", "6.13")
            }
            Some(libc::ESRCH) => os_error(
                libc::ESRCH,
                format!(
                    "pid {} has been reaped and this kernel keeps nothing about it; \
                     PIDFD_INFO_EXIT needs Linux >= 6.15",
                    self.pid
                ),
            ),
            _ => from_io(&e, format_args!("PIDFD_GET_INFO on pid {}", self.pid)),
        })?;
        let has = |bit| info.mask & bit != 0;
        let exit = if has(sys::PIDFD_INFO_EXIT) {
            Some(Exit(info.exit_code))
        } else {
            self.peek_child_exit(&fd)
        };
        let pid = has(sys::PIDFD_INFO_PID);
        let creds = has(sys::PIDFD_INFO_CREDS);
        let opt = |present: bool, v: u32| present.then_some(v);
        Ok(ProcessInfo {
            pid: self.pid,
            tgid: opt(pid, info.tgid),
            ppid: opt(pid, info.ppid),
            ruid: opt(creds, info.ruid),
            euid: opt(creds, info.euid),
            suid: opt(creds, info.suid),
            fsuid: opt(creds, info.fsuid),
            rgid: opt(creds, info.rgid),
            egid: opt(creds, info.egid),
            sgid: opt(creds, info.sgid),
            fsgid: opt(creds, info.fsgid),
            cgroupid: has(sys::PIDFD_INFO_CGROUPID).then_some(info.cgroupid),
            exit_status: exit.map(|e| Py::new(py, ExitStatus(e))).transpose()?,
        })
    }

    /// Duplicate the target process's file descriptor `fd` into this process
    /// (`pidfd_getfd(2)`, Linux ≥ 5.6). The new fd is close-on-exec and yours
    /// to close. Needs ptrace rights over the target, else `PermissionError`.
    fn getfd(&self, fd: &Bound<'_, PyAny>) -> PyResult<i32> {
        let target = check_fd(extract_int(fd, "fd")?, "fd")?;
        let pidfd = self.fd()?;
        let pid = self.pid;
        match sys::pidfd_getfd(pidfd.as_fd(), target) {
            Ok(new) => Ok(sys::release_fd(new)),
            Err(e) => Err(match e.raw_os_error() {
                Some(libc::EPERM) => os_error(
                    libc::EPERM,
                    format!(
                        "not permitted to take fd {target} from pid {pid}: pidfd_getfd needs \
                         ptrace access (same user and a permissive kernel.yama.ptrace_scope, \
                         or CAP_SYS_PTRACE)"
                    ),
                ),
                Some(libc::EBADF) => {
                    os_error(libc::EBADF, format!("pid {pid} has no open fd {target}"))
                }
                Some(libc::ESRCH) => os_error(libc::ESRCH, format!("pid {pid} has exited")),
                Some(libc::ENOSYS) => needs_kernel("pidfd_getfd(2)", "5.6"),
                _ => from_io(&e, format_args!("pidfd_getfd(pid {pid}, fd {target})")),
            }),
        }
    }

    /// For the async wrapper: `wait_exit()`'s answer without blocking.
    /// `(True, status)` once settled, `(False, None)` while still running or
    /// while a non-child zombie may yet be reaped by its parent.
    fn _exit_status_now(&self) -> PyResult<(bool, Option<ExitStatus>)> {
        let fd = self.fd()?;
        if !has_exited(&fd)? {
            return Ok((false, None));
        }
        Ok(match self.exit_state(&fd) {
            ExitState::Settled(exit) => (true, exit.map(ExitStatus)),
            ExitState::Pending => (false, None),
        })
    }
}

fn timeout_error(pid: libc::pid_t, timeout: Option<f64>) -> PyErr {
    PyTimeoutError::new_err(format!(
        "pid {pid} was still running after the {}s timeout; it has not been reaped",
        timeout.unwrap_or(0.0).max(0.0)
    ))
}

/// Python ints only (anything with `__index__`): no floats, strings or
/// bools, which would otherwise hide a caller's bug.
fn extract_int(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<i64> {
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

/// Wait until at least one handle's process has exited and return those that
/// have, in the order given; one `poll(2)` over all of them, no threads.
#[pyfunction]
#[pyo3(signature = (handles, timeout = None))]
fn wait_any(
    py: Python<'_>,
    handles: &Bound<'_, PyAny>,
    timeout: Option<f64>,
) -> PyResult<Py<PyList>> {
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
            "none of the {} processes exited within the {}s timeout",
            items.len(),
            timeout.unwrap_or(0.0).max(0.0)
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

/// `struct rusage` is plain integers; mark it shareable across threads.
#[derive(Clone, Copy)]
struct Rusage(libc::rusage);

/// How a child ended, as `waitid` reported it: the status, the stdlib's
/// `os.waitid_result` and `resource.struct_rusage`.
#[pyclass(module = "pidfd._native", frozen)]
pub struct ExitInfo {
    child: ChildInfo,
    rusage: Rusage,
    status: Exit,
    // Built on first access. A plain OnceLock filled with `set` (not
    // `PyOnceLock::get_or_init`, which detaches from the interpreter to wait
    // and doubled the cost of a first read): a racing thread at worst builds
    // a second copy and drops it.
    siginfo_obj: OnceLock<Py<PyAny>>,
    rusage_obj: OnceLock<Py<PyAny>>,
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
    /// stdlib's own `resource.struct_rusage` (what `os.wait4` returns).
    #[getter]
    fn rusage(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        static TYPE: PyOnceLock<Py<PyType>> = PyOnceLock::new();
        cached(py, &self.rusage_obj, || {
            let r = self.rusage.0;
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
pub struct ExitStatus(Exit);

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

    fn __repr__(&self) -> String {
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

/// What `PIDFD_GET_INFO` reported. Fields the kernel did not report are
/// `None`: once a process has been reaped only `cgroupid` and `exit_status`
/// remain.
#[pyclass(module = "pidfd._native", frozen, get_all)]
pub struct ProcessInfo {
    /// The pid the handle refers to.
    pid: i32,
    /// Thread-group id: the process id (differs from `pid` for a thread).
    tgid: Option<u32>,
    /// The parent's pid.
    ppid: Option<u32>,
    /// Real uid.
    ruid: Option<u32>,
    /// Effective uid.
    euid: Option<u32>,
    /// Saved set-user-id.
    suid: Option<u32>,
    /// Filesystem uid.
    fsuid: Option<u32>,
    /// Real gid.
    rgid: Option<u32>,
    /// Effective gid.
    egid: Option<u32>,
    /// Saved set-group-id.
    sgid: Option<u32>,
    /// Filesystem gid.
    fsgid: Option<u32>,
    /// cgroup v2 id.
    cgroupid: Option<u64>,
    /// How it ended, once it has exited and the kernel can tell.
    exit_status: Option<Py<ExitStatus>>,
}

#[pymethods]
impl ProcessInfo {
    fn __repr__(&self, py: Python<'_>) -> String {
        let opt = |v: Option<u32>| v.map_or_else(|| "None".to_owned(), |v| v.to_string());
        let exit = self
            .exit_status
            .as_ref()
            .map_or_else(|| "None".to_owned(), |e| e.get().__repr__());
        let _ = py;
        format!(
            "ProcessInfo(pid={}, tgid={}, ppid={}, ruid={}, euid={}, rgid={}, egid={}, cgroupid={}, exit_status={exit})",
            self.pid,
            opt(self.tgid),
            opt(self.ppid),
            opt(self.ruid),
            opt(self.euid),
            opt(self.rgid),
            opt(self.egid),
            self.cgroupid
                .map_or_else(|| "None".to_owned(), |v| v.to_string()),
        )
    }
}

/// Race-free Linux process handles.
// `gil_used = false`: safe on free-threaded CPython, because nothing here
// relies on the GIL for exclusion. Every pyclass is `frozen` (methods get
// `&self` only, so PyO3 needs no borrow flag); a `PidFd`'s only mutable state
// is its fd, behind a `Mutex<Option<Arc<OwnedFd>>>` (a call clones the `Arc`,
// so `close()` from another thread cannot free a number still in use), and
// the `reaped` flag, an `AtomicBool`. `ExitInfo` caches its stdlib objects in
// `PyOnceLock`s and the kernel version sits in a `OnceLock`, both thread-safe.
// Two threads reaping one child race in the kernel's `waitid`, which lets
// exactly one win; the other gets `ECHILD`, as sequential calls would.
#[pymodule(gil_used = false)]
mod _native {
    #[pymodule_export]
    use super::{ExitInfo, ExitStatus, PidFd, ProcessInfo, wait_any};

    #[pymodule_init]
    fn init(m: &pyo3::Bound<'_, pyo3::types::PyModule>) -> pyo3::PyResult<()> {
        use pyo3::types::PyModuleMethods;
        m.add("__version__", env!("CARGO_PKG_VERSION"))?;
        // One grace period for every wait_exit(), sync, async and the CLI.
        m.add("_REAP_GRACE", super::REAP_GRACE.as_secs_f64())
    }
}
