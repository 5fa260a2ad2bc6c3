"""`pidfd.Popen`: start a process on a pidfd from birth (`pidfd.run` is in `_run`).

`Popen` is `subprocess.Popen` with the waiting and the signalling moved onto
a pidfd. Spawning stays CPython's own `_execute_child`, so every option
behaves as the standard library documents it, with `_spawn`'s clone3 in
place of its `fork_exec` where it can: the pidfd then comes from the clone.
On the stock path it is opened as that call returns, while the child is
ours and unreaped. It is closed once the child has been reaped.

What changes, compared with `subprocess.Popen`:

- `wait(timeout)` blocks in `poll(2)` on the pidfd (GIL released, Ctrl-C
  interrupts it) instead of sleeping in a loop, and reaps with
  `waitid(P_PIDFD)`, which also yields the child's resource usage; `wait()`
  with no timeout blocks in that `waitid` itself, as the stock class blocks
  in `waitpid`.
- `send_signal` goes through `pidfd_send_signal(2)`: it can never reach a
  process that reused the pid, even when something else in the program
  reaped the child behind our back.
- When the child was reaped behind our back (or auto-reaped because
  `SIGCHLD` is ignored), `returncode` is the true one where the kernel keeps
  it (`PIDFD_INFO_EXIT`, Linux >= 6.15); otherwise 0, as `subprocess` says,
  and `exit_status` stays `None` so the two cases can be told apart.

Where `pidfd_open` is refused (an old kernel, a sandbox, `EMFILE`), `pidfd`
is `None` and the object behaves as `subprocess.Popen`, reaping with
``os.wait4`` so that `rusage` and `exit_status` are still set.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import operator
import os
import subprocess
import time
from typing import TYPE_CHECKING, Any, AnyStr, Literal, overload

from pidfd import _cgroupfs, _children, _compat, _spawn
from pidfd._groups import GroupSignals, check_signal_range
from pidfd._native import ExecStatus, ExitStatus, PidFd, _set_returncode

if TYPE_CHECKING:
    import resource
    import threading
    from collections.abc import Sequence

    from _typeshed import StrOrBytesPath

    from pidfd._native import ExitInfo

    _Cmd = StrOrBytesPath | Sequence[StrOrBytesPath]

__all__ = ["Popen"]


class RusageOnRead:
    """A ``rusage`` attribute built from the reap's `ExitInfo` on first read
    (a ``struct_rusage`` costs more than the reap itself); set, it is plain."""

    _exit_info: ExitInfo | None = None
    _rusage: resource.struct_rusage | None = None

    @property
    def rusage(self) -> resource.struct_rusage | None:
        """The child's ``resource.struct_rusage`` (as ``os.wait4`` returns
        it) once reaped here; ``None`` before, and where it cannot be known
        (something else reaped the child)."""
        if self._rusage is None and self._exit_info is not None:
            self._rusage = self._exit_info.rusage
        return self._rusage

    @rusage.setter
    def rusage(self, value: resource.struct_rusage | None) -> None:
        self._exit_info = None
        self._rusage = value


class Popen(RusageOnRead, GroupSignals, subprocess.Popen[AnyStr]):
    """`subprocess.Popen` on a pidfd: race-free waits and signals, with rusage.

    Takes every argument `subprocess.Popen` takes, with the same meaning,
    and is used the same way::

        import pidfd

        with pidfd.Popen(["sh", "-c", "exit 3"]) as proc:
            print(proc.wait())   # 3
        print(proc.exit_status, proc.pidfd)   # ExitStatus(code=3) None

    It adds three attributes to those of `subprocess.Popen`: ``pidfd``,
    ``rusage`` and ``exit_status``, and three keywords (the how-to "Make sure
    nothing outlives your program" has the details):

    - ``die_with_parent=True``: the child is SIGKILLed when this process
      dies, even by SIGKILL. Linux >= 7.1 (root, or with ``no_new_privs``):
      ``CLONE_PIDFD_AUTOKILL``, so also when ``self.pidfd`` is closed while
      it runs, and the kernel reaps it (``wait()`` reads the status through
      the pidfd; ``rusage`` is ``None``). Before: ``PR_SET_PDEATHSIG`` in the
      child, which fires when the spawning *thread* exits and which exec of
      a set-user-ID program clears.
    - ``no_new_privs=True``: ``PR_SET_NO_NEW_PRIVS`` in the child (with a
      ``preexec_fn``, after it, as ``PR_SET_PDEATHSIG``).
    - ``cgroup=`` (a path, an open directory fd or a :class:`pidfd.Cgroup`):
      the child starts in that cgroup v2 (``CLONE_INTO_CGROUP``; the stock
      path moves it first thing). ``FileNotFoundError``,
      ``NotADirectoryError``, ``ValueError`` (not cgroup v2),
      ``PermissionError`` or ``OSError`` (the kernel refused: ``EBUSY``, not
      a leaf) say what is wrong, and then no child was started.

    Thread-safe as `subprocess.Popen` is: reaping is serialised by the same
    ``_waitpid_lock``, which an untimed ``wait()`` holds while it blocks (as
    the stock one does); ``poll()`` and a timed ``wait()`` never wait for it.
    """

    if TYPE_CHECKING:
        # Typeshed's overloads bind ``self: subprocess.Popen[str]``, which
        # mypy does not carry over to a subclass (every call would come out
        # as Popen[str]), so the text/bytes choice is restated here. The
        # other arguments are passed on unchecked; at run time they are
        # subprocess.Popen's own, and wrong ones raise TypeError there.
        @overload
        def __init__(
            self: Popen[str], args: _Cmd, *popenargs: Any, text: Literal[True], **kwargs: Any
        ) -> None: ...
        @overload
        def __init__(
            self: Popen[str], args: _Cmd, *popenargs: Any, encoding: str, **kwargs: Any
        ) -> None: ...
        @overload
        def __init__(
            self: Popen[str], args: _Cmd, *popenargs: Any, errors: str, **kwargs: Any
        ) -> None: ...
        @overload
        def __init__(
            self: Popen[str],
            args: _Cmd,
            *popenargs: Any,
            universal_newlines: Literal[True],
            **kwargs: Any,
        ) -> None: ...
        @overload
        def __init__(
            self: Popen[bytes],
            args: _Cmd,
            *popenargs: Any,
            text: Literal[False] | None = None,
            encoding: None = None,
            errors: None = None,
            universal_newlines: Literal[False] | None = None,
            **kwargs: Any,
        ) -> None: ...
        @overload
        def __init__(self: Popen[Any], args: _Cmd, *popenargs: Any, **kwargs: Any) -> None: ...
        def __init__(self, args: _Cmd, *popenargs: Any, **kwargs: Any) -> None: ...

        # subprocess.Popen's private state that we share (not in typeshed).
        _waitpid_lock: threading.Lock

    else:

        def __init__(
            self,
            args: _Cmd,
            *popenargs: Any,
            die_with_parent: bool = False,
            no_new_privs: bool = False,
            cgroup: Any = None,
            **kwargs: Any,
        ) -> None:
            # Our own keywords, for the spawn (_execute_child) to read; left
            # to the class defaults when not given.
            if die_with_parent:
                self._die_with_parent = True
            if no_new_privs:
                self._no_new_privs = True
            if cgroup is not None:
                self._cgroup = cgroup
            super().__init__(args, *popenargs, **kwargs)

    # Class-level defaults, so that they exist even when spawning failed
    # (``__del__`` and ``__repr__`` still run then).
    #: The :class:`PidFd` of the child from spawn until it is reaped; ``None``
    #: after that, and ``None`` from the start where the kernel or a sandbox
    #: refused ``pidfd_open`` (then everything works as in `subprocess.Popen`).
    pidfd: PidFd | None = None
    #: The decoded :class:`ExitStatus` once the child has been reaped; ``None``
    #: while it runs and where its true status is unknown (then
    #: ``returncode`` is 0, as `subprocess` reports it).
    exit_status: ExitStatus | None = None
    # True from the moment a pidfd is opened, and still True once it has
    # been closed after the reap (never falling back to a bare pid). False
    # where pidfd_open was refused or our _execute_child never ran: stock.
    _on_pidfd: bool = False
    # Whether the child led its own process group when it was started
    # (start_new_session=True, process_group=0, or preexec_fn=os.setsid).
    _leads_group: bool = False

    # A property, not the stock plain attribute: setting it closes the
    # pidfd, because code outside may set it after reaping the child itself
    # (asyncio's subprocess transport does, after its os.waitpid()); our own
    # reaps close it the same way.
    _returncode: int | None = None

    if TYPE_CHECKING:

        @property
        def returncode(self) -> int | None: ...
        @returncode.setter
        def returncode(self, value: int | None) -> None: ...

    else:
        # Getter and setter are C (attrgetter, _native._set_returncode), not
        # methods: the stock class reads returncode a dozen times per child
        # and sets it twice, and Python-level accessors were a measurable
        # share of a spawn's parent CPU (W5). The setter stores the value
        # and, for an exit code, calls _close_pidfd() while pidfd is set.
        returncode = property(
            operator.attrgetter("_returncode"),
            _set_returncode,
            doc="As in `subprocess.Popen`: the exit code, ``-signal``, or ``None``.",
        )

    def __del__(self, *args: Any, **kwargs: Any) -> None:
        if self._returncode is not None:
            return  # reaped: the stock __del__ would find nothing to do
        # The stock __del__ warns once about a child still running, then
        # keeps the object in subprocess._active so that a later Popen reaps
        # it (through our pidfd). Not kept (the warning was raised as an
        # error): close the pidfd here, quietly, so the one warning is the
        # stock one and not a second "unclosed PidFd" about a handle the user
        # never opened. Kept: _close_abandoned() closes it at exit.
        try:
            super().__del__(*args, **kwargs)
        finally:
            if self.pidfd is not None:
                kept = getattr(subprocess, "_active", None) or ()
                if not any(p is self for p in kept):
                    self._close_pidfd()

    # -- spawning -----------------------------------------------------------

    # Whether the spawn waits for the child's exec (False: the event loop's
    # Process, which awaits the exec status itself).
    _wait_exec = True
    # The exec status of a child started with _wait_exec False, until read.
    _exec_status: ExecStatus | None = None
    _spawn_path = "subprocess"
    _die_with_parent = False
    _no_new_privs = False
    _cgroup: Any = None

    @property
    def spawn_path(self) -> str:
        """How the child was started: ``"clone3"`` (the native spawn, its
        pidfd from the clone itself) or ``"subprocess"`` (CPython's own
        ``_execute_child``, then ``pidfd_open``: with a ``preexec_fn``, or
        where the kernel or a sandbox refuses ``clone3``)."""
        return self._spawn_path

    def _execute_child(self, *args: Any, **kwargs: Any) -> None:
        # CPython's own spawning, on the native clone3 where it can (see
        # pidfd._spawn). When it returns without raising, the child exists
        # and has not been reaped; when it raises, the child has already
        # been reaped and there is nothing to hold.
        if (
            not (kwargs or self._die_with_parent or self._no_new_privs)
            and self._cgroup is None
            and _spawn.execute_plain(self, args, self._wait_exec)
        ):
            return
        request = _spawn.Request(
            self._wait_exec,
            die_with_parent=self._die_with_parent,
            no_new_privs=self._no_new_privs,
        )
        owned = False
        if self._cgroup is not None:
            # Checked (and opened) before anything starts.
            request.cgroup, owned, request.cgroup_path = _cgroupfs.open_target(self._cgroup)
        try:
            _spawn.execute_child(self, request, *args, **kwargs)
        finally:
            if request.native:
                self._spawn_path = "clone3"
            if owned:
                os.close(request.cgroup)
        if request.handle is not None:
            self._hold(request.handle, request.leads_group, request.status)
            return
        _children.register(self.pid, self)
        # The stock spawn: the child has exec'd, so whatever made it a group
        # leader (setsid/setpgid in the forked child) has run; unreaped, its
        # pid is still its own, so this reads its group and nobody else's.
        with contextlib.suppress(OSError):
            self._leads_group = os.getpgid(self.pid) == self.pid
        try:
            self.pidfd = PidFd.from_pid(self.pid)
        except OSError:
            # ENOSYS (kernel < 5.3), EPERM/ENOSYS from a seccomp filter,
            # EMFILE/ENFILE/ENOMEM: carry on as stock subprocess.Popen. ESRCH
            # is the one window that stays open on this path: SIGCHLD is
            # ignored and the child has already exited and been reaped by the
            # kernel (see docs/howto/replace-popen.md); stock waiting then
            # reports 0.
            return
        self._on_pidfd = True

    def _hold(self, handle: PidFd, leads_group: bool, status: ExecStatus | None = None) -> None:
        """Keep the native spawn's ``handle`` (and the exec ``status`` it may
        still have to report) for the child just started."""
        _children.register(self.pid, self)
        self.pidfd = handle
        self._exec_status = status
        self._leads_group = leads_group
        self._on_pidfd = True

    def _close_pidfd(self) -> None:
        """Close the pidfd once the child has been reaped, and forget it.

        Called once per pidfd: by the ``returncode`` setter (with
        ``_waitpid_lock`` held, unless code outside set ``returncode``), when
        going back to stock waiting, or for a child dropped while running. A
        private hook for wrappers that handed the fd to an event loop:
        override it to tell the loop first (e.g.
        ``anyio.notify_closing(self.pidfd)``), then call
        ``super()._close_pidfd()``.
        """
        # The returncode setter (src/popen.rs) does the same inline, unless
        # a subclass overrides this method.
        handle = self.pidfd
        if handle is not None:
            self.pidfd = None
            handle.close()

    def _leave_pidfd(self) -> None:
        """Go back to stock waiting and signalling (waitid(P_PIDFD) refused,
        or the user closed our handle). Caller holds ``_waitpid_lock``; the
        child is unreaped, so its pid is still its own."""
        self._on_pidfd = False
        self._close_pidfd()

    # -- recording an exit ----------------------------------------------------

    def _record_reaped_elsewhere(self, handle: PidFd, deadstate: int | None) -> None:
        """The child was reaped behind our back, or auto-reaped (SIGCHLD ignored).

        Caller holds _waitpid_lock. The kernel keeps the status for a pidfd
        opened before the reap on Linux >= 6.15; otherwise we report what
        `subprocess` does (0, or ``deadstate`` from ``__del__``) and leave
        ``exit_status`` as ``None``.
        """
        status: ExitStatus | None
        try:
            status = handle.exit_status()
        except (OSError, ValueError):  # TimeoutError (not settled) included
            status = None
        self.exit_status = status
        if status is not None:
            self.returncode = status.returncode
        else:
            self.returncode = deadstate if deadstate is not None else 0
        # Setting returncode has closed the pidfd.

    def _reap(self, deadstate: int | None, block: bool = False) -> None:
        """One reap through the pidfd, if it is still open: non-blocking, or
        with ``block`` until the child exits (``PidFd._reap_blocking``).

        Caller holds ``_waitpid_lock`` and has seen ``returncode`` unset.
        """
        handle = self.pidfd
        if handle is None:
            # Reaped by us before, but the caller reset returncode (as some
            # code does to force a re-poll): the child is certainly gone.
            status = self.exit_status
            self.returncode = status.returncode if status is not None else 0
            return
        try:
            info = handle._reap_blocking() if block else handle.try_wait()
        except (OSError, ValueError) as e:
            self._reap_failed(handle, e, deadstate)
        else:
            if info is not None:
                self._exit_info = info
                status = self.exit_status = info.status
                self.returncode = status.returncode  # which closes the pidfd

    def _reap_failed(self, handle: PidFd, error: Exception, deadstate: int | None) -> None:
        """What a reap through ``handle`` that raised ``error`` means.

        ``ChildProcessError``: reaped behind our back, or by the kernel.
        ``ENOSYS``: waitid(P_PIDFD) refused (Linux 5.3 has pidfd_open but
        not P_PIDFD; a sandbox may refuse it); ``ValueError``: someone closed
        our handle; either way, wait the stock way from now on. Anything
        else is not the wait's: the exception a signal handler raised while
        it blocked (a TimeoutError from an alarm), re-raised for the caller,
        as the stock wait lets it through. Caller holds ``_waitpid_lock``.
        """
        if isinstance(error, ChildProcessError):
            self._record_reaped_elsewhere(handle, deadstate)
        elif _handle_gone(handle, error):
            self._leave_pidfd()
        else:
            raise error

    # -- the stock paths (no pidfd) ---------------------------------------------

    def _waitpid_recording(self, pid: int, options: int) -> tuple[int, int]:
        """``os.waitpid`` for the stock paths, through ``os.wait4``.

        Without a pidfd we still reap with the same call the stock class
        makes, but ``wait4`` also hands back the child's resource usage, so
        ``rusage`` and ``exit_status`` are set on every path, not only on the
        pidfd one. Caller holds ``_waitpid_lock``.
        """
        got, sts, usage = os.wait4(pid, options)
        if got == self.pid:
            self.rusage = usage
            self.exit_status = ExitStatus.from_waitstatus(sts)
        return got, sts

    def _try_wait(self, wait_flags: int) -> tuple[int, int]:
        # The stock method (the blocking reap of _wait), on _waitpid_recording.
        try:
            return self._waitpid_recording(self.pid, wait_flags)
        except ChildProcessError:
            # SIGCHLD ignored, or reaped behind our back: the stock class
            # reports status 0 and so do we; nothing is known of the exit.
            return self.pid, 0

    # -- the stock hooks, on 3.11 to 3.14 ----------------------------------------

    def _internal_poll(
        self, _deadstate: int | None = None, *args: Any, **kwargs: Any
    ) -> int | None:
        # Called by poll(), __del__ and subprocess._cleanup(); the extra
        # arguments are the default-argument tricks each CPython version uses
        # to stay usable during interpreter shutdown, passed on as given.
        if self.returncode is None and self._on_pidfd:
            if not self._waitpid_lock.acquire(False):
                # Another thread is reaping right now; we know nothing yet.
                return None
            try:
                if self.returncode is None and self._on_pidfd:
                    self._reap(_deadstate)
            finally:
                self._waitpid_lock.release()
        if self.returncode is None and not self._on_pidfd:
            if not args:
                # The stock poll reaps with the waitpid its default argument
                # holds; hand it ours, which also records rusage and
                # exit_status.
                _compat.poll_kwargs(kwargs, self._waitpid_recording)
            return super()._internal_poll(_deadstate, *args, **kwargs)  # type: ignore[misc, no-any-return]
        return self.returncode

    def _wait(self, timeout: float | None) -> int:
        if self._returncode is not None:
            return self._returncode
        if timeout is None and self._on_pidfd:
            # No deadline: as subprocess blocks in waitpid holding the lock,
            # block in one waitid(P_PIDFD) that also reaps (GIL released,
            # Ctrl-C raises here, leaving the child unreaped).
            with self._waitpid_lock:
                if self._returncode is None and self._on_pidfd:
                    self._reap(None, block=True)
            if self._returncode is not None:
                return self._returncode
        deadline = None if timeout is None else time.monotonic() + timeout
        # What TimeoutExpired reports (only raised when there is a deadline).
        limit = 0.0 if timeout is None else timeout
        remaining = timeout
        while True:
            handle = self.pidfd if self._on_pidfd else None
            if handle is not None and (remaining is None or remaining > 0):
                # poll(2) until the pidfd is readable, i.e. the child has
                # exited (at once if it has): GIL released, signal handlers
                # run (Ctrl-C raises here, leaving the child unreaped). Never
                # under the lock. On a timeout: one last look below, then
                # TimeoutExpired.
                try:
                    handle._wait_exited(remaining)
                except ValueError:
                    # Closed meanwhile by another thread that reaped it;
                    # otherwise a signal handler's exception.
                    if not handle.closed:
                        raise
            if self._on_pidfd and self._waitpid_lock.acquire(deadline is None):
                # Timed: never wait for a thread blocked in an untimed wait
                # (it holds the lock until the child exits and reaps it).
                try:
                    if self._returncode is None and self._on_pidfd:
                        self._reap(None)
                finally:
                    self._waitpid_lock.release()
            if self._returncode is not None:
                return self._returncode
            remaining = None if deadline is None else deadline - time.monotonic()
            if not self._on_pidfd:
                return super()._wait(remaining)  # type: ignore[misc, no-any-return]
            if remaining is not None and remaining <= 0:
                raise subprocess.TimeoutExpired(self.args, limit)

    def send_signal(self, sig: int, *, group: bool = False) -> None:
        """Send ``sig`` to the child through its pidfd; nothing once it has exited.

        Never reaches another process that reused the pid: the signal goes
        through ``pidfd_send_signal(2)``, which fails (silently here, as
        `subprocess` is silent) once the child is gone, however it was reaped.

        With ``group=True``, to every process in the group the child leads
        (start it with ``start_new_session=True`` or ``process_group=0``),
        including members that outlive it, and also while it is an unreaped
        zombie; see :meth:`PidFd.send_signal`. Where the kernel lacks group
        signals (Linux < 6.9) it falls back to ``os.killpg`` while the child
        leads its group and is unreaped -- its pid then still pins the group
        id, so the signal cannot reach a recycled group. It raises
        ``ProcessLookupError`` once the child has been reaped (the group id
        may name another group by then) or when it leads no group, and
        ``OSError(ENOSYS)`` naming Linux 6.9 where no safe way exists.
        """
        if group:
            self._signal_group(sig)
            return
        if not self._on_pidfd:
            super().send_signal(sig)
            return
        # As the stock class does: reap a zombie first, so that returncode
        # is up to date and a dead child is not signalled.
        self.poll()
        if self.returncode is not None:
            return
        if not self._on_pidfd:
            # poll() found our handle closed by the user: stock from now on.
            super().send_signal(sig)
            return
        handle = self.pidfd
        if handle is None:  # pragma: no cover - poll() sets returncode then
            return
        check_signal_range(sig)
        try:
            handle.send_signal(sig)
        except ProcessLookupError:
            # Exited (or reaped behind our back) since the poll: signalling
            # a finished child does nothing, as in subprocess.
            pass
        except ValueError:
            if self.returncode is None and not self._on_pidfd:
                # The user closed our handle; poll() went back to stock.
                super().send_signal(sig)
            # Otherwise another thread reaped the child and closed it.

    # terminate() and kill() are the stock ones: both call send_signal().


# The errnos with which a wait through the pidfd is refused for good
# (EINVAL comes as ENOSYS, "needs Linux 5.4"; EBADF: the fd number was
# closed behind the handle's back).
_REFUSED = frozenset({errno.ENOSYS, errno.EPERM, errno.EINVAL, errno.EBADF})


def _handle_gone(handle: PidFd, error: Exception) -> bool:
    """Whether ``error``, raised by a wait on ``handle``, means that waiting
    through the pidfd cannot work (refused, or the handle closed), rather
    than being a signal handler's exception passing through."""
    if isinstance(error, ValueError):
        return handle.closed
    return isinstance(error, OSError) and error.errno in _REFUSED


# Popen._close_pidfd as defined above: the returncode setter
# (src/popen.rs) closes the pidfd itself only while a Popen's class still
# has this very function, and calls the method otherwise.
_INLINE_CLOSE = Popen._close_pidfd


def _close_abandoned() -> None:
    """At exit, close the pidfds of children dropped while still running.

    The stock ``__del__`` has warned about each of them once and kept it in
    ``subprocess._active`` to be reaped later; left open, its pidfd would
    warn a second time as the interpreter shuts down.
    """
    for popen in list(getattr(subprocess, "_active", None) or ()):
        if isinstance(popen, Popen):
            popen._close_pidfd()


atexit.register(_close_abandoned)
