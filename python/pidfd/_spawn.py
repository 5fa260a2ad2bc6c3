"""The native spawn: ``clone3(CLONE_PIDFD)`` in place of ``_posixsubprocess.fork_exec``.

`pidfd.Popen` runs CPython's own ``_execute_child`` (every argument check,
the ``PATH`` search, the error pipe and the exceptions are the stock ones)
with `fork_exec` below in place of ``_posixsubprocess.fork_exec``. It takes
the same arguments and starts the child through ``_native._spawn``: the pidfd
comes from the clone, so there is no moment when the child exists without a
handle, even when ``SIGCHLD`` is ignored and the child exits at once.

It hands the work back to the stock ``fork_exec`` (nothing started yet) for
what the native spawn does not do: a ``preexec_fn`` (Python code in the
child), ``_USE_VFORK`` turned off, a kernel or sandbox without ``clone3``
(``ENOSYS``/``EPERM``) or, with ``close_fds``, without ``close_range``
(Linux 5.9), or with ``cgroup=`` a kernel before 5.7. ``die_with_parent``,
``no_new_privs`` and ``cgroup`` hold there too: the stock child sees to them
from a ``preexec_fn`` wrapped around the caller's (`with_lifetime`).

A spawn that must not wait for the child's exec (the event loop's) passes
``wait_exec=False``: the child reports on a pipe of its own, read once the
loop sees it readable (:func:`exec_error`).
"""

from __future__ import annotations

import builtins
import os
import subprocess
import sys
import threading
from typing import Any

from pidfd import _cgroupfs, _children, _compat
from pidfd._native import (
    ExecStatus,
    PidFd,
    _child_lifetime,
    _spawn,
    _spawn_plain,
    _spawn_refused,
)


class Request:
    """One spawn's wishes and outcome, for the `fork_exec` it reaches."""

    __slots__ = (
        "cgroup",
        "cgroup_path",
        "die_with_parent",
        "handle",
        "leads_group",
        "native",
        "no_new_privs",
        "status",
        "wait_exec",
    )

    def __init__(
        self, wait_exec: bool, *, die_with_parent: bool = False, no_new_privs: bool = False
    ) -> None:
        self.wait_exec = wait_exec
        #: Kill the child when this process dies (see `pidfd.Popen`).
        self.die_with_parent = die_with_parent
        #: ``PR_SET_NO_NEW_PRIVS`` in the child.
        self.no_new_privs = no_new_privs
        #: An open directory fd of the cgroup v2 to start the child in, -1
        #: for ours, and its path for messages.
        self.cgroup = -1
        self.cgroup_path = ""
        #: The child's PidFd, when the native spawn started it.
        self.handle: PidFd | None = None
        #: Its pending exec status (``wait_exec=False`` only).
        self.status: ExecStatus | None = None
        #: Whether the child was made to lead its own process group.
        self.leads_group = False
        #: Whether the native spawn started the child (even one whose exec
        #: then failed).
        self.native = False


_current = threading.local()
_SUBPROCESS = subprocess.__dict__

# uid_t and gid_t are 32 bits, and (uid_t)-1 means "no change".
_ID_LIMIT = 2**32 - 1


def _ids_in_range(gid: int | None, uid: int | None, groups: Any) -> bool:
    if gid is None and uid is None and groups is None:
        return True  # the common case, without building a list
    ids = [*(groups or ()), *(x for x in (gid, uid) if x is not None)]
    return all(0 <= i < _ID_LIMIT for i in ids)


def with_lifetime(preexec_fn: Any, request: Request) -> Any:
    """``preexec_fn`` extended with the request's lifetime settings, for a
    child that the stock spawn forks: the caller's function runs first (an
    ``os.setuid`` in it would clear the parent-death signal), then what the
    native child does after its id changes. ``preexec_fn`` itself where the
    request asks for nothing."""
    if not (request.die_with_parent or request.no_new_privs or request.cgroup >= 0):
        return preexec_fn
    parent = os.getpid() if request.die_with_parent else 0
    no_new_privs = request.no_new_privs
    cgroup = request.cgroup

    def preexec() -> None:
        if cgroup >= 0:
            # First, as the native child is born there: whatever the
            # caller's function forks is inside.
            _cgroupfs.join_from_child(cgroup)
        if preexec_fn is not None:
            preexec_fn()
        if parent or no_new_privs:
            _child_lifetime(parent, no_new_privs)

    return preexec


def _stock(args: tuple[Any, ...], request: Request) -> int:
    """The stock ``fork_exec`` for ``args``, its ``preexec_fn`` (the 22nd)
    extended by `with_lifetime`."""
    preexec_fn = with_lifetime(args[21], request)
    return _compat.STOCK_FORK_EXEC(*args[:21], preexec_fn, *args[22:])


# Set once the native spawn has been refused (no clone3, a seccomp filter,
# close_fds without close_range): the refusal holds for the whole process.
_refused = False


def native_refused() -> bool:
    """Whether this process's spawns now go the stock way (``clone3`` refused)."""
    return _refused


# The largest fd number fork_exec takes (a C int).
_FD_LIMIT = 2**31 - 1


def _check_fds_to_keep(keep: Any) -> None:
    """``fork_exec``'s check of its sorted ``fds_to_keep``, and its message."""
    if keep and (keep[0] < 0 or keep[-1] > _FD_LIMIT):
        raise ValueError("bad value(s) in fds_to_keep")


def fds_to_keep(pass_fds: Any) -> list[int]:
    """The stock method's sorted ``fds_to_keep`` for ``pass_fds``, checked
    as ``fork_exec`` checks it."""
    keep = sorted(map(int, set(pass_fds)))
    _check_fds_to_keep(keep)
    return keep


def fork_exec(*args: Any) -> int:
    """``_posixsubprocess.fork_exec``, natively where it can (see the module)."""
    request: Request | None = getattr(_current, "request", None)
    if request is None or len(args) != _compat.FORK_EXEC_ARGS:
        return _compat.STOCK_FORK_EXEC(*args)
    (
        argv,
        executable_list,
        close_fds,
        pass_fds,
        cwd,
        env_list,
        p2cread,
        p2cwrite,
        c2pread,
        c2pwrite,
        errread,
        errwrite,
        errpipe_read,
        errpipe_write,
        restore_signals,
        call_setsid,
        pgid_to_set,
        gid,
        extra_groups,
        uid,
        child_umask,
        preexec_fn,
        allow_vfork,
    ) = args
    if preexec_fn is not None or not allow_vfork or not _ids_in_range(gid, uid, extra_groups):
        # An id out of range: the stock call raises its own ValueError.
        return _stock(args, request)
    _check_fds_to_keep(pass_fds)
    try:
        spawned = _spawn(
            argv,
            executable_list,
            bool(close_fds),
            pass_fds,
            cwd,
            env_list,
            (p2cread, p2cwrite, c2pread, c2pwrite, errread, errwrite, errpipe_read, errpipe_write),
            bool(restore_signals),
            bool(call_setsid),
            pgid_to_set,
            gid,
            extra_groups,
            uid,
            child_umask,
            request.wait_exec,
            _compat.CHDIR_MARKER,
            die_with_parent=request.die_with_parent,
            no_new_privs=request.no_new_privs,
            cgroup=request.cgroup,
        )
    except OSError as e:
        if request.cgroup >= 0 and (better := _cgroupfs.refused(e, request.cgroup_path)):
            raise better from None
        raise
    if spawned is None:
        # Refused for the whole process, or (a kernel before 5.7) only
        # for spawns into a cgroup.
        if request.cgroup < 0 or _spawn_refused():
            global _refused
            _refused = True
        return _stock(args, request)
    if not request.wait_exec:
        # The child reports on a pipe of its own (see _native._spawn) and no
        # writer of this one is left, so the stock read meets EOF at once;
        # non-blocking, it is not a read an event loop's watchdog flags.
        os.set_blocking(errpipe_read, False)
    pid, request.handle, status = spawned
    if isinstance(status, ExecStatus):
        request.status = status
    request.native = True
    request.leads_group = bool(call_setsid) or pgid_to_set == 0
    return pid


# The stock method's shell for shell=True.
_SHELL = "/system/bin/sh" if hasattr(sys, "getandroidapilevel") else "/bin/sh"
_STOCK_CLOSE_PIPE_FDS = subprocess.Popen._close_pipe_fds  # type: ignore[attr-defined]


def execute_plain(popen: Any, args: tuple[Any, ...], wait_exec: bool = True) -> bool:
    """The stock ``_execute_child(*args)`` for ``popen`` (a `pidfd.Popen`),
    done here in full for the common case. True once the child has exec'd
    and ``popen`` holds its handle (``pidfd``, registered in `_children`);
    without ``wait_exec``, once the child exists, ``popen._exec_status``
    holding what its caller awaits (as `pidfd.open_process` does).

    False (nothing started) where the case is not that common one --
    a ``preexec_fn``, credentials, ``_USE_VFORK`` off, a mocked
    ``_fork_exec``, a CPython whose method this module does not know -- or
    where ``clone3`` is refused: then `execute_child` does the work.

    Without credentials the child runs in our memory until it has exec'd
    (``CLONE_VM | CLONE_VFORK``), so it reports a failure there
    (``_native._spawn`` without error-pipe fds) instead of on the stock pipe, which is
    never made: one pipe, three closes and a read fewer per spawn, and no
    copy of the stock method run around the clone. What it raises, audits
    and leaves behind is the stock method's, case for case (the stock one
    runs ``sys.audit("subprocess.Popen", ...)`` before it forks, and so does
    this; only a first refusal of ``clone3`` audits twice).
    """
    global _refused
    # The stock method as this module knows it, _fork_exec unmocked (a
    # test's mock must see its calls) and _USE_VFORK on (off, subprocess
    # forks, and so does the stock path). Checked here, not in a helper:
    # this runs once per spawn, and each Python call is a share of W5.
    if (
        _refused
        or not _compat.KNOWN_EXECUTE_CHILD
        or len(args) != _compat.EXECUTE_CHILD_ARGS
        or _SUBPROCESS.get("_fork_exec") is not _compat.STOCK_FORK_EXEC
        or not _SUBPROCESS.get("_USE_VFORK")
    ):
        return False
    cmd, executable, preexec_fn, close_fds, pass_fds, cwd, env, _, _, shell = args[:10]
    # p2cread, p2cwrite, c2pread, c2pwrite, errread, errwrite: fork_exec's.
    std_fds = args[10:16]
    restore_signals, gid, gids, uid, umask, start_new_session, process_group = args[16:]
    if not (preexec_fn is None and gid is None and gids is None and uid is None):
        return False
    # The stock method's argument work (argument forms, shell, audit event,
    # env list, PATH search, pass_fds), in Rust; see src/execute.rs.
    spawned = _spawn_plain(
        cmd,
        executable,
        _SHELL if shell else None,
        cwd,
        env,
        bool(close_fds),
        pass_fds,
        fds_to_keep,
        std_fds,
        bool(restore_signals),
        bool(start_new_session),
        process_group,
        umask,
        _compat.CHDIR_MARKER,
        wait_exec,
    )
    if spawned is None:
        if _spawn_refused():
            _refused = True
        return False
    popen.pid, handle, report, program = spawned
    popen._child_created = True
    # Started natively, even if its exec is about to be reported failed.
    popen._spawn_path = "clone3"
    if type(popen)._close_pipe_fds is _STOCK_CLOSE_PIPE_FDS:
        # The stock _close_pipe_fds (POSIX) inline, without the ExitStack it
        # builds: about ten Python calls per spawn with a pipe (W5). Each
        # close is tried, in the stock order (devnull, then errwrite,
        # c2pwrite, p2cread), and the last error raised, as the stack would.
        p2cread, p2cwrite, c2pread, c2pwrite, errread, errwrite = std_fds
        devnull = getattr(popen, "_devnull", None)
        child_ends = [] if devnull is None else [devnull]
        if errwrite != -1 and errread != -1 and errwrite != devnull:
            child_ends.append(errwrite)
        if c2pwrite != -1 and c2pread != -1 and c2pwrite != devnull:
            child_ends.append(c2pwrite)
        if p2cread != -1 and p2cwrite != -1 and p2cread != devnull:
            child_ends.append(p2cread)
        error: OSError | None = None
        for fd in child_ends:
            try:
                os.close(fd)
            except OSError as e:
                error = e
        popen._closed_child_pipe_fds = True
        if error is not None:
            raise error
    else:
        popen._close_pipe_fds(*std_fds)
    if not isinstance(report, bytes):
        # Popen._hold's work, done here for the same reason as the checks.
        _children.register(popen.pid, popen)
        if report is not None:
            popen._exec_status = report  # not waited for: the caller awaits it
        popen.pidfd = handle
        popen._leads_group = bool(start_new_session) or process_group == 0
        popen._on_pidfd = True
        return True
    # The child failed before or at exec and has exited: reaped before the
    # exception, as subprocess reaps its own.
    with handle:
        try:
            info = handle.wait()
        except ChildProcessError:
            pass  # SIGCHLD ignored: the kernel reaped it
        else:
            popen.returncode = info.status.returncode
    raise exec_error(report, program, cwd)


def execute_child(popen: subprocess.Popen[Any], request: Request, *args: Any) -> None:
    """Run the stock ``_execute_child`` for ``popen`` with `fork_exec`.

    Falls back to the stock method, untouched, where `_compat` cannot
    provide the copy. On an exception the native handle (if any) is closed;
    the stock code has reaped the failed child already.
    """
    ours = _compat.execute_child_on(fork_exec)
    if ours is None:
        # args: those of the stock method, preexec_fn the third.
        if len(args) > 2:
            args = (*args[:2], with_lifetime(args[2], request), *args[3:])
        _compat.stock_execute_child(popen, *args)
        return
    outer = getattr(_current, "request", None)
    _current.request = request
    try:
        ours(popen, *args)
    except BaseException:
        if request.status is not None:
            request.status.finish()
        if request.handle is not None:
            request.handle.close()
            request.handle = None
        raise
    finally:
        _current.request = outer


def exec_error(data: bytes, executable: Any, cwd: Any) -> BaseException:
    """The exception `subprocess` raises for a child that reported ``data``
    on its error pipe (CPython's format: ``OSError:<hex errno>:[noexec]``)."""
    try:
        name, hex_errno, message = data.split(b":", 2)
        text = message.decode()
    except ValueError:
        return subprocess.SubprocessError(f"Bad exception data from child: {data!r}")
    kind = getattr(builtins, name.decode("ascii", "replace"), subprocess.SubprocessError)
    if isinstance(kind, type) and issubclass(kind, OSError) and hex_errno:
        number = int(hex_errno, 16)
        reason = os.strerror(number) if number else ""
        if text == "noexec:chdir" or (text == "noexec" and not _compat.CHDIR_MARKER):
            # The failure was chdir(cwd) (before 3.13, any failure before
            # exec is reported so).
            return kind(number, reason, cwd)
        if text == "noexec":
            return kind(number, reason)
        return kind(number, reason, executable)
    if isinstance(kind, type) and issubclass(kind, BaseException):
        return kind(text)
    return subprocess.SubprocessError(text)  # pragma: no cover - not a class
