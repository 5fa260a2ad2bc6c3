"""`pidfd.Cgroup`: a transient cgroup v2 that nothing started in it can escape.

A process tree can leave any walk of ``/proc``: a daemon that calls
``setsid()`` and double-forks is, for a moment, nobody's child we know of.
A cgroup holds every process started in it whatever it forks or however it
is re-parented, so killing the cgroup kills the whole tree (``cgroup.kill``,
Linux 5.14), and ``cgroup.events`` says when it is empty. Pure Python: the
cgroup is a directory, its interface is files.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import select
import signal
import time
from typing import TYPE_CHECKING, Protocol, TypeVar

import anyio

from pidfd._async import _check_timeout
from pidfd._cgroupfs import DELEGATE_HINT, check_cgroup2_dir, own_cgroup_dir
from pidfd._closing import Closing
from pidfd._native import PidFd

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

__all__ = ["Cgroup"]

# How long close() waits for the killed processes to leave before rmdir,
# and how long the fallback kill waits for the freeze to take.
_CLOSE_WAIT = 5.0
_FREEZE_WAIT = 1.0

_counter = itertools.count()
_T = TypeVar("_T")


class _HasPid(Protocol):
    @property
    def pid(self) -> int: ...


class Cgroup(Closing):
    """A transient child cgroup v2; killing it kills every process in it.

    Creates a new, uniquely named cgroup under this process's own cgroup v2
    (``/proc/self/cgroup``'s ``0::`` path under the ``cgroup2`` mount found
    in ``/proc/self/mountinfo``) or under ``parent``. Put processes in with
    :meth:`add`, or pass it as ``cgroup=`` to a spawn; whatever they fork
    stays in it, whether it calls ``setsid()`` or double-forks::

        import pidfd

        with pidfd.Cgroup() as cg:
            child = pidfd.Popen(["sh", "-c", "setsid sleep 60 & sleep 60"])
            cg.add(child)      # what it forks from now on is in cg too
            ...
        # leaving the block killed both sleeps and removed the cgroup
        child.wait()

    :meth:`add` moves a process that is already running: what it forked
    before stays where it was. A spawn with ``cgroup=`` has no such window.

    :meth:`close` (leaving the block) kills what is left (:meth:`kill`),
    waits until the cgroup is empty (at most a few seconds) and removes it.
    The killed processes that are our children still need reaping by their
    owners (``Popen.wait()``); the cgroup no longer counts them.

    Errors: a ``parent`` that does not exist raises ``FileNotFoundError``;
    one that is not on cgroup v2 (or no cgroup v2 at all) ``ValueError`` (for a
    path, one that is also an ``OSError`` naming it)
    saying where cgroup v2 is mounted, if anywhere; one this process may
    not write ``PermissionError`` naming the path and what to delegate.
    """

    def __init__(self, parent: str | os.PathLike[str] | None = None) -> None:
        base = own_cgroup_dir() if parent is None else check_cgroup2_dir(os.fspath(parent))
        name = f"pidfd-{os.getpid()}-{next(_counter)}-{os.urandom(3).hex()}"
        path = os.path.join(base, name)
        try:
            os.mkdir(path, 0o755)
        except PermissionError as e:
            raise PermissionError(
                e.errno,
                f"cannot create a cgroup under {base}: {e.strerror}; {DELEGATE_HINT}",
                base,
            ) from None
        except OSError as e:
            # EROFS (a read-only cgroup2 mount), EAGAIN...
            limit = ""
            if e.errno == errno.EAGAIN:
                limit = " (its cgroup.max.descendants or cgroup.max.depth)"
            raise OSError(
                e.errno, f"cannot create a cgroup under {base}{limit}: {e.strerror}", base
            ) from None
        self._path = path
        try:
            self._fd: int | None = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except BaseException:
            os.rmdir(path)
            raise
        # Chosen once: cgroup.kill (Linux 5.14) or the freeze-and-signal
        # fallback. Tests set it False to exercise the fallback.
        self._use_kill_file = self._exists("cgroup.kill")
        self._hosts_us = False

    # -- the directory --------------------------------------------------

    @property
    def path(self) -> str:
        """The cgroup's directory."""
        return self._path

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has removed the cgroup."""
        return self._fd is None

    def fileno(self) -> int:
        """An ``O_DIRECTORY | O_CLOEXEC`` fd of the cgroup's directory (for ``cgroup=``)."""
        return self._dirfd()

    def __fspath__(self) -> str:
        return self._path

    def _dirfd(self) -> int:
        if self._fd is None:
            raise ValueError(f"I/O operation on a closed Cgroup ({self._path})")
        return self._fd

    def _exists(self, name: str) -> bool:
        try:
            os.stat(name, dir_fd=self._dirfd())
        except FileNotFoundError:
            return False
        return True

    def _read(self, name: str) -> str | None:
        """The text of one interface file, or None where it does not exist."""
        try:
            fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=self._dirfd())
        except FileNotFoundError:
            return None
        with open(fd, encoding="ascii", errors="replace") as f:
            return f.read()

    def _write(self, name: str, text: str) -> None:
        fd = os.open(name, os.O_WRONLY | os.O_CLOEXEC, dir_fd=self._dirfd())
        try:
            os.write(fd, text.encode("ascii"))
        finally:
            os.close(fd)

    def _keyed(self, name: str, key: str) -> int | None:
        """One ``key value`` line of a flat-keyed file, or None."""
        text = self._read(name)
        if text is None:
            return None
        for line in text.splitlines():
            k, _, v = line.partition(" ")
            if k == key:
                return int(v)
        return None

    def _single(self, name: str) -> int | None:
        text = self._read(name)
        return None if text is None else int(text.strip())

    # -- processes ------------------------------------------------------

    def add(self, process: int | _HasPid) -> None:
        """Move a running process (a pid, or anything with ``.pid``) into the cgroup.

        Writes its pid to ``cgroup.procs``; all its threads move with it.
        A bare number may name another process by then if the one you meant
        exited and was reaped; a :class:`pidfd.Popen` child cannot be
        (unreaped, its pid stays its own), and a :class:`pidfd.PidFd` is
        checked to be alive after the move, so a reused pid raises
        ``ProcessLookupError`` rather than pass unnoticed.
        """
        pid = process if isinstance(process, int) else process.pid
        if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
            raise ValueError(f"add() takes a pid > 0 or a process handle, not {process!r}")
        try:
            self._write("cgroup.procs", f"{pid}\n")
        except ProcessLookupError:
            raise ProcessLookupError(
                errno.ESRCH, f"pid {pid} has exited; it cannot join {self._path}"
            ) from None
        except PermissionError as e:
            raise PermissionError(
                e.errno,
                f"cannot move pid {pid} into {self._path}: {e.strerror}; this needs write "
                f"access to cgroup.procs of the closest common ancestor of both cgroups",
                os.path.join(self._path, "cgroup.procs"),
            ) from None
        if isinstance(process, PidFd) and not process.is_alive():
            raise ProcessLookupError(
                errno.ESRCH, f"pid {pid} has exited; it cannot join {self._path}"
            )

    def _spawn_inside(self, spawn: Callable[[], _T]) -> _T:
        """``spawn()`` with this process inside the cgroup, then back where it was.

        What ``spawn`` starts is born in the cgroup, with no window in which
        it could fork outside (as ``add()`` after a spawn has), for a spawn
        that cannot be given the cgroup (``os.posix_spawn``). It moves the
        whole process, so it is only for a single-threaded one (the CLI).
        Both moves need write access to our own cgroup's ``cgroup.procs``
        (the common ancestor), so the second fails only if that changed in
        between; we are then still inside, :meth:`kill` and :meth:`close`
        refuse (they would kill us too), and ``OSError`` says so.
        """
        home = own_cgroup_dir()
        self.add(os.getpid())
        self._hosts_us = True
        try:
            return spawn()
        finally:
            fd = os.open(os.path.join(home, "cgroup.procs"), os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, f"{os.getpid()}\n".encode("ascii"))
            finally:
                os.close(fd)
            self._hosts_us = False

    def _check_not_hosting(self) -> None:
        if self._hosts_us:
            raise OSError(
                errno.EBUSY, f"this process is still inside {self._path}; it will not kill it"
            )

    def _dirs(self) -> Iterator[str]:
        """This cgroup and every cgroup under it, as paths relative to it, deepest last."""
        yield "."
        for top, dirs, _files in os.walk(self._path):
            for d in dirs:
                yield os.path.relpath(os.path.join(top, d), self._path)

    def pids(self) -> list[int]:
        """The pids of every process in the cgroup and in cgroups under it.

        A snapshot: a pid read here is a hint; act on it through a pidfd.
        """
        found: list[int] = []
        for d in self._dirs():
            text = self._read(os.path.join(d, "cgroup.procs"))
            if text is not None:
                found.extend(int(word) for word in text.split())
        return found

    @property
    def populated(self) -> bool:
        """True while any process is in the cgroup or under it (``cgroup.events``)."""
        return self._keyed("cgroup.events", "populated") == 1

    def kill(self) -> int:
        """SIGKILL every process in the cgroup (and under it) at once.

        Through ``cgroup.kill`` (Linux 5.14), which also reaches a process
        forked while the kill runs. Where that file is missing: freeze the
        cgroup (``cgroup.freeze``, Linux 5.2) so nothing forks, SIGKILL each
        pid through a pidfd, thaw, and repeat until no process is left.
        Returns how many processes were in it when the kill began. The
        processes may take a moment to leave: see :meth:`wait_empty`.
        """
        self._check_not_hosting()
        before = self.pids()
        if not before:
            return 0
        if self._use_kill_file:
            self._write("cgroup.kill", "1")
        else:
            self._kill_by_signal()
        return len(before)

    def _kill_by_signal(self) -> None:
        freezable = self._exists("cgroup.freeze")
        for _ in range(100):
            if freezable:
                self._write("cgroup.freeze", "1")
                self._wait_event("frozen", _FREEZE_WAIT)
            try:
                pids = self.pids()
                for pid in pids:
                    try:
                        with PidFd.from_pid(pid) as handle:
                            # A fatal signal reaches a frozen task: it dies
                            # without being thawed first.
                            handle.send_signal(signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            finally:
                if freezable:
                    self._write("cgroup.freeze", "0")
            if not pids:
                return
            with contextlib.suppress(TimeoutError):
                self.wait_empty(timeout=0.1)
            if not self.populated:
                return

    # -- waiting --------------------------------------------------------

    def _open_events(self) -> int:
        return os.open("cgroup.events", os.O_RDONLY | os.O_CLOEXEC, dir_fd=self._dirfd())

    @staticmethod
    def _event_value(fd: int, key: str) -> int | None:
        # Reading the file from the start also re-arms its notification.
        text = os.pread(fd, 4096, 0).decode("ascii", "replace")
        for line in text.splitlines():
            k, _, v = line.partition(" ")
            if k == key:
                return int(v)
        return None

    def _wait_event(self, key: str, timeout: float | None, want: int = 1) -> bool:
        """Until ``cgroup.events`` shows ``key want``, or ``timeout``; True if it did.

        The kernel notifies a change of ``cgroup.events`` as ``POLLPRI``
        (with ``POLLERR``) on an open fd of it (kernfs_generic_poll), until
        that fd reads the file again.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        fd = self._open_events()
        try:
            poller = select.poll()
            poller.register(fd, select.POLLPRI)
            while self._event_value(fd, key) != want:
                if deadline is None:
                    ms = None
                else:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    ms = max(1, int(left * 1000))
                poller.poll(ms)
            return True
        finally:
            os.close(fd)

    def wait_empty(self, timeout: float | None = None) -> None:
        """Block until no process is left in the cgroup (``populated 0``).

        Waits on ``cgroup.events`` with ``poll(POLLPRI)``, no busy loop.
        ``timeout`` (seconds) raises ``TimeoutError`` if it is still
        populated then; ``None`` waits for ever.
        """
        secs = _check_timeout(timeout)
        if not self._wait_event("populated", secs, want=0):
            raise self._timeout_error(secs)

    async def wait_empty_async(self, timeout: float | None = None) -> None:
        """:meth:`wait_empty` for asyncio or trio (through anyio), without a thread.

        The event loop cannot wait for ``POLLPRI`` (anyio's ``wait_readable``
        watches readability only), so the ``cgroup.events`` fd goes into an
        epoll set registered for ``EPOLLPRI``; the epoll fd itself becomes
        readable when the file changes, and that is what the loop awaits.
        """
        secs = _check_timeout(timeout)
        fd = self._open_events()
        ep = select.epoll()
        try:
            ep.register(fd, select.EPOLLPRI)
            with anyio.move_on_after(secs if secs is not None else float("inf")) as scope:
                while self._event_value(fd, "populated") != 0:
                    await anyio.wait_readable(ep.fileno())
                    ep.poll(0)
                return
            if scope.cancelled_caught:
                raise self._timeout_error(secs)
        finally:
            ep.close()
            os.close(fd)

    def _timeout_error(self, secs: float | None) -> TimeoutError:
        return TimeoutError(f"{self._path} still had processes in it after {secs}s")

    # -- totals ---------------------------------------------------------

    @property
    def cpu_usage_usec(self) -> int | None:
        """CPU time of every process that ran in the cgroup, in µs (``cpu.stat``)."""
        return self._keyed("cpu.stat", "usage_usec")

    @property
    def memory_peak(self) -> int | None:
        """Peak memory in bytes (``memory.peak``, Linux 5.19); None without the controller."""
        return self._single("memory.peak")

    @property
    def pids_peak(self) -> int | None:
        """Most processes at once (``pids.peak``); None without the pids controller."""
        return self._single("pids.peak")

    # -- the end --------------------------------------------------------

    def _remove(self) -> None:
        # Cgroups the processes made under ours go first, deepest first.
        for d in sorted(self._dirs(), key=lambda d: d.count("/"), reverse=True):
            if d != ".":
                with contextlib.suppress(FileNotFoundError):
                    os.rmdir(os.path.join(self._path, d))
        # Removed first: if rmdir fails, the cgroup stays open (not closed).
        os.rmdir(self._path)
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def _kill_left(self) -> bool:
        """Start closing: whether anything was left to kill (and was killed)."""
        self._check_not_hosting()
        if not self.populated:
            return False
        self.kill()
        return True

    def close(self) -> None:
        """Kill what is left, wait (a few seconds at most) until empty, remove the cgroup.

        Idempotent. If processes are still in it after the wait, the
        directory cannot be removed: ``OSError`` (``EBUSY``) says so.
        """
        if self._fd is None:
            return
        if self._kill_left():
            with contextlib.suppress(TimeoutError):
                self.wait_empty(_CLOSE_WAIT)
        self._remove()

    async def aclose(self) -> None:
        """:meth:`close` with the wait awaited under asyncio or trio."""
        if self._fd is None:
            return
        if self._kill_left():
            with contextlib.suppress(TimeoutError):
                await self.wait_empty_async(_CLOSE_WAIT)
        self._remove()

    def _check_open(self) -> None:
        self._dirfd()

    async def _close_async(self) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        state = "closed" if self._fd is None else "open"
        return f"<pidfd.Cgroup {self._path!r} {state}>"
