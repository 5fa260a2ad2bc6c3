"""Type stubs for ``pidfd._native``, the compiled core of async-pidfd.

Hand-written to match the PyO3 classes under ``src/`` exactly; ``python -m mypy.stubtest
pidfd._native`` checks them against the built module in CI. The classes are
created by the native module only (they have no public constructor) and
cannot be subclassed.
"""

import os
import resource
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal, Self, final

from _typeshed import HasFileno, StrOrBytesPath

__all__ = [
    "_REAP_GRACE",
    "ExecStatus",
    "ExitInfo",
    "ExitStatus",
    "PidFd",
    "ProcessInfo",
    "__version__",
    "_child_lifetime",
    "_child_subreaper",
    "_set_child_subreaper",
    "_set_returncode",
    "_spawn",
    "_spawn_plain",
    "_spawn_refused",
    "wait_any",
]

__version__: str
"""The package version, taken from ``Cargo.toml`` at build time."""

_REAP_GRACE: float
"""Internal: seconds ``wait_exit()`` gives a non-child's parent to reap it.

Shared by ``PidFd.wait_exit``, ``AsyncPidFd.wait_exit`` and the CLI.
"""

@final
class PidFd:
    """A race-free handle on a process (or, with ``thread=True``, on one thread).

    Unlike a numeric pid, an open handle can never come to refer to another
    process that reused the number. It owns a file descriptor: close it with
    :meth:`close` or a ``with`` block.

    Example::

        import subprocess
        from pidfd import PidFd

        child = subprocess.Popen(["true"])
        with PidFd.from_pid(child.pid) as handle:
            print(handle.wait().status)   # ExitStatus(code=0)
    """

    @staticmethod
    def from_pid(pid: int, *, thread: bool = False) -> PidFd:
        """Open a handle on process ``pid`` with ``pidfd_open(2)`` (Linux >= 5.3).

        For a child that has not been waited for this cannot race: its pid is
        not reused until it is reaped. With ``thread=True`` (``PIDFD_THREAD``,
        Linux >= 6.9) ``pid`` is a thread id and the handle refers to that
        thread. ``ProcessLookupError`` if there is no such process,
        ``ValueError`` for a pid <= 0, ``OSError(ENOSYS)`` on an older kernel.
        """

    @staticmethod
    def from_fd(fd: int) -> PidFd:
        """Adopt an existing pidfd, e.g. from ``os.pidfd_open()`` or ``SCM_RIGHTS``.

        On success the handle owns ``fd`` and will close it; on error ``fd`` is
        left open and still belongs to the caller. ``ValueError`` if ``fd`` is
        not a pidfd.
        """

    @staticmethod
    def from_socket_peer(sock: HasFileno | int) -> PidFd:
        """A handle on the process at the other end of a connected Unix socket.

        Uses ``SO_PEERPIDFD`` (Linux >= 6.5): who connected, without the pid
        race of ``SO_PEERCRED``. ``sock`` is a socket object or its fd.
        """

    @property
    def pid(self) -> int:
        """The process (or thread) id; still readable after :meth:`close`."""

    @property
    def thread(self) -> bool:
        """Whether the handle refers to a single thread (``thread=True``)."""

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""

    def fileno(self) -> int:
        """The raw fd, for ``select``, ``selectors`` or an event loop.

        It polls readable once the process has exited. ``ValueError`` once
        the handle is closed.
        """

    def close(self) -> None:
        """Close the fd. Idempotent.

        A call blocked in another thread keeps its own reference, so the fd
        number is released (and can be reused) only when that call returns.
        """

    def __enter__(self) -> Self:
        """Return the handle itself."""

    def __exit__(self, *_exc: object) -> Literal[False]:
        """Close the handle; exceptions propagate."""

    def wait(self, timeout: float | None = None) -> ExitInfo:
        """Block until the child exits, reap it and return its :class:`ExitInfo`.

        ``waitid(P_PIDFD)``, Linux >= 5.4. Releases the GIL while blocked. A
        signal handler that raises (Ctrl-C) interrupts the wait with that
        exception, and ``TimeoutError`` ends it after ``timeout`` seconds; in
        both cases the child stays unreaped. ``ChildProcessError`` if the
        process is not a child of this one, or was already reaped.
        """

    def _reap_blocking(self) -> ExitInfo:
        """For `pidfd.Popen.wait()` without a timeout: reap in one blocking ``waitid(2)``.

        The caller serialises reaps (the Popen's lock).
        """
    def _wait_exited(self, timeout: float | None) -> bool:
        """For `pidfd.Popen`: block until the process has exited, without reaping it.

        ``False`` once ``timeout`` seconds have passed first.
        """
    def try_wait(self) -> ExitInfo | None:
        """Reap the child if it has exited and return its :class:`ExitInfo`.

        ``None`` while it is still running. Never blocks.
        """

    def send_signal(self, sig: int, *, group: bool = False) -> None:
        """Send signal ``sig`` (an int or a ``signal.Signals``) through the pidfd.

        ``pidfd_send_signal(2)``, Linux >= 5.1: the signal reaches this process
        or fails with ``ProcessLookupError``, never a process that reused the
        pid. ``sig=0`` only checks that the process exists.

        ``group=True`` signals every process in the process group this one
        leads (whose id is its pid, as for a child started with
        ``start_new_session=True`` or ``process_group=0``), like
        ``os.killpg(pid, sig)`` but through the pidfd
        (``PIDFD_SIGNAL_PROCESS_GROUP``, Linux >= 6.9), so it can never reach
        a group that reuses the number -- also once the leader has exited or
        been reaped, while members remain. ``ProcessLookupError`` if no
        process is in that group (it leads none, or all have exited);
        ``OSError(ENOSYS)`` naming Linux 6.9 on an older kernel::

            child = subprocess.Popen(["sh", "-c", "sleep 60 & wait"], process_group=0)
            with PidFd.from_pid(child.pid) as handle:
                handle.send_signal(signal.SIGTERM, group=True)  # sh and sleep
                handle.wait()
        """

    def kill(self) -> None:
        """Send ``SIGKILL``."""

    def terminate(self) -> None:
        """Send ``SIGTERM``."""

    def is_alive(self) -> bool:
        """Whether the process is still running.

        ``False`` once it has exited, whether a zombie or reaped. Never blocks
        and never reaps; works for any process, not only children.
        """

    def wait_exit(self, timeout: float | None = None) -> ExitStatus | None:
        """Block until the process exits, child or not, without reaping it.

        Returns its :class:`ExitStatus` where the kernel can tell (a zombie
        child, peeked with ``WNOWAIT``; or ``PIDFD_INFO_EXIT``, Linux >= 6.15,
        once the process has been reaped), else ``None`` -- never a made-up
        status. ``TimeoutError`` after ``timeout`` seconds.
        """

    def exit_status(self) -> ExitStatus | None:
        """How the process ended, as :meth:`wait_exit` would say, without waiting.

        Never blocks and never reaps; works for any process, not only
        children. Returns its :class:`ExitStatus` where the kernel can tell,
        ``None`` where it never will (the status was discarded, or this
        kernel cannot report it) -- never a made-up status. While the answer
        is not settled, raises ``TimeoutError``: the process is still
        running, or it is a zombie that is not our child and whose parent has
        yet to reap it (Linux >= 6.15 reports the status once it does).

        Example::

            try:
                status = handle.exit_status()
            except TimeoutError:
                ...  # still running: ask again later, or wait_exit()
            else:
                print("unknown" if status is None else status.returncode)
        """

    def info(self) -> ProcessInfo:
        """What the kernel knows about the process (``PIDFD_GET_INFO``, Linux >= 6.13)."""

    def getfd(self, fd: int) -> int:
        """Duplicate the target process's file descriptor ``fd`` into this process.

        ``pidfd_getfd(2)``, Linux >= 5.6. The new fd is close-on-exec and the
        caller's to close. ``PermissionError`` without ptrace rights over the
        target.
        """

@final
class ExitInfo:
    """How a child ended, as ``waitid(2)`` reported it when it was reaped.

    Example::

        info = PidFd.from_pid(child.pid).wait()
        print(info.status.returncode, info.rusage.ru_utime)
    """

    @property
    def status(self) -> ExitStatus:
        """The decoded :class:`ExitStatus`."""

    @property
    def pid(self) -> int:
        """The pid that exited (``siginfo.si_pid``)."""

    @property
    def siginfo(self) -> os.waitid_result:
        """The ``siginfo_t`` as the standard library's ``os.waitid_result``."""

    @property
    def rusage(self) -> resource.struct_rusage | None:
        """Resource usage of the child and its waited-for descendants.

        The standard library's ``resource.struct_rusage``, as ``os.wait4``
        returns it; ``None`` for a child the kernel reaped itself
        (``die_with_parent=True`` on Linux >= 7.1: ``CLONE_AUTOREAP``), whose
        usage no system call reports.
        """

@final
class ExitStatus:
    """How a process ended, decoded from the ``wait(2)`` status word.

    Equal (and hashing equal) when the status words are equal.

    Example::

        import os
        status = ExitStatus.from_waitstatus(os.system("exit 3"))
        print(status.code, status.returncode)   # 3 3
    """

    @staticmethod
    def from_waitstatus(waitstatus: int) -> ExitStatus:
        """From a ``wait(2)`` status word, e.g. ``os.waitpid(pid, 0)[1]``.

        ``ValueError`` for a stopped or continued status, or one out of range.
        """

    @staticmethod
    def from_siginfo(si_code: int, si_status: int) -> ExitStatus:
        """From ``si_code`` and ``si_status``, e.g. of an ``os.waitid()`` result."""

    @property
    def code(self) -> int | None:
        """The exit code if the process exited normally, else ``None``."""

    @property
    def signal(self) -> int | None:
        """The number of the signal that killed the process, else ``None``."""

    @property
    def success(self) -> bool:
        """``True`` for exit code 0."""

    @property
    def core_dumped(self) -> bool:
        """Whether the process dumped core when a signal killed it."""

    @property
    def returncode(self) -> int:
        """The ``subprocess`` convention: the exit code, or minus the signal number."""

    @property
    def waitstatus(self) -> int:
        """The ``wait(2)`` status word, for ``os.WIFEXITED`` and friends."""

    def __eq__(self, value: object, /) -> bool: ...
    def __hash__(self) -> int: ...

@final
class ProcessInfo:
    """What ``PIDFD_GET_INFO`` reported about a process.

    Fields the kernel did not report are ``None``: once a process has been
    reaped only ``cgroupid`` and ``exit_status`` remain.

    Example::

        info = PidFd.from_pid(os.getpid()).info()
        print(info.ppid == os.getppid())   # True
    """

    @property
    def pid(self) -> int:
        """The pid the handle refers to."""

    @property
    def tgid(self) -> int | None:
        """Thread-group id, i.e. the process id (differs from ``pid`` for a thread)."""

    @property
    def ppid(self) -> int | None:
        """The parent's pid."""

    @property
    def ruid(self) -> int | None:
        """Real user id."""

    @property
    def euid(self) -> int | None:
        """Effective user id."""

    @property
    def suid(self) -> int | None:
        """Saved set-user-id."""

    @property
    def fsuid(self) -> int | None:
        """Filesystem user id."""

    @property
    def rgid(self) -> int | None:
        """Real group id."""

    @property
    def egid(self) -> int | None:
        """Effective group id."""

    @property
    def sgid(self) -> int | None:
        """Saved set-group-id."""

    @property
    def fsgid(self) -> int | None:
        """Filesystem group id."""

    @property
    def cgroupid(self) -> int | None:
        """The cgroup v2 id."""

    @property
    def exit_status(self) -> ExitStatus | None:
        """How the process ended, once it has exited and the kernel can tell."""

    @property
    def coredump_mask(self) -> int | None:
        """``PIDFD_COREDUMP*`` bits (``PIDFD_INFO_COREDUMP``, Linux >= 6.16).

        For a live process, how a dump would be taken: 4 (``PIDFD_COREDUMP_USER``)
        or 2 (``PIDFD_COREDUMP_SKIP``, not dumpable); after a recorded crash
        1 (``PIDFD_COREDUMPED``) with the rights the dump was taken with.
        """

    @property
    def coredump_signal(self) -> int | None:
        """The signal that made it dump core, 0 if none (kernels after 6.18)."""

    @property
    def coredump_code(self) -> int | None:
        """That signal's ``si_code``, 0 if none (kernels after 6.18)."""

    @property
    def supported_mask(self) -> int | None:
        """The ``PIDFD_INFO_*`` bits this kernel knows (kernels after 6.18)."""

def wait_any(handles: Iterable[PidFd], timeout: float | None = None) -> list[PidFd]:
    """Block until at least one handle's process has exited; return those that have.

    The exited handles come back as the same objects, in the order given.
    One ``poll(2)`` watches them all; nothing is reaped. ``TimeoutError`` if
    none exits within ``timeout`` seconds, ``ValueError`` for no handles.
    """

def _child_subreaper() -> bool:
    """Whether this process is a child subreaper (``PR_GET_CHILD_SUBREAPER``)."""

def _set_child_subreaper(on: bool) -> None:
    """Turn the process-wide ``PR_SET_CHILD_SUBREAPER`` attribute on or off.

    Linux >= 3.4. Private: :class:`pidfd.Subreaper` owns the setting.
    """

@final
class ExecStatus:
    """A child started without waiting for its exec: its error pipe, and
    the memory it reads until it has exec'd. Private to ``pidfd._spawn``."""

    def fileno(self) -> int:
        """The error pipe's read end: readable once the child exec'd or failed."""

    def finish(self) -> bytes:
        """The child's report (empty if it exec'd); releases what it used."""

def _child_lifetime(parent: int, no_new_privs: bool = False) -> None:
    """The lifetime settings of a child the stock spawn forked, from its
    ``preexec_fn``: ``PR_SET_PDEATHSIG(SIGKILL)`` and the check that
    ``parent`` (non-zero) is still its parent; ``PR_SET_NO_NEW_PRIVS``
    with ``no_new_privs``. Private to ``pidfd._spawn``."""

def _set_returncode(popen: Any, value: int | None) -> None:
    """``pidfd.Popen.returncode``'s setter: stores ``value`` and, for an
    exit code while ``popen.pidfd`` is set, closes it as
    ``Popen._close_pidfd`` does (inline while the class has
    ``pidfd._popen._INLINE_CLOSE``, else by calling the method). Private
    to ``pidfd._popen``."""

def _spawn_refused() -> bool:
    """Whether ``clone3`` was refused for good in this process. Private."""

def _spawn_plain(
    cmd: Any,
    executable: Any,
    shell: str | None,
    cwd: Any,
    env: Any,
    close_fds: bool,
    pass_fds: Any,
    keep_fds: Callable[[Any], list[int]],
    std_fds: tuple[int, int, int, int, int, int],
    restore_signals: bool,
    setsid: bool,
    pgid: int,
    umask: int,
    chdir_marker: bool,
    wait_exec: bool = True,
) -> tuple[int, PidFd, bytes | ExecStatus | None, Any] | None:
    """The stock ``_execute_child``'s argument work (argument forms, shell,
    ``sys.audit``, env list, ``PATH`` search, ``pass_fds`` through
    ``keep_fds``), then ``_spawn`` without an error pipe: ``(pid, handle,
    report, program)``, or ``None`` where ``clone3`` is refused. Without
    ``wait_exec``, ``report`` is the child's `ExecStatus`, returned before
    its exec. Private to ``pidfd._spawn.execute_plain``."""

def _spawn(
    argv: Sequence[StrOrBytesPath],
    executables: Sequence[bytes],
    close_fds: bool,
    keep: Sequence[int],
    cwd: StrOrBytesPath | None,
    env: list[bytes] | None,
    fds: tuple[int, int, int, int, int, int, int, int],
    restore_signals: bool,
    setsid: bool,
    pgid: int,
    gid: int | None,
    groups: Sequence[int] | None,
    uid: int | None,
    umask: int,
    wait_exec: bool,
    chdir_marker: bool,
    *,
    die_with_parent: bool = False,
    no_new_privs: bool = False,
    cgroup: int = ...,
) -> tuple[int, PidFd, ExecStatus | bytes | None] | None:
    """Start a child with ``clone3(CLONE_PIDFD)``; ``None`` where refused.

    The third item: the pending `ExecStatus` (``wait_exec=False``), the
    child's failure report (no error pipe: both of its fds ``-1``), or ``None``.

    Private: ``pidfd._spawn.fork_exec`` passes ``_posixsubprocess.fork_exec``'s
    arguments on.
    """
