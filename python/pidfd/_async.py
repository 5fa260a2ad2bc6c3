"""`AsyncPidFd`: await a process's exit on any anyio backend, without threads.

A pidfd polls readable once its process exits, so waiting is just awaiting
readability (``anyio.wait_readable``) and then reaping with ``WNOHANG``.
That runs unchanged under ``asyncio.run``, ``trio.run`` and ``anyio.run``,
with no helper thread and no child watcher.
"""

from __future__ import annotations

import asyncio
import contextlib
import decimal
import math
import threading
from typing import TYPE_CHECKING

import anyio
import anyio.from_thread
import anyio.lowlevel

from pidfd._closing import Closing
from pidfd._native import _REAP_GRACE, PidFd

if TYPE_CHECKING:
    import signal
    import socket

    from pidfd._native import ExitInfo, ExitStatus, ProcessInfo

__all__ = ["AsyncPidFd"]

# wait_exit() polls this often while a non-child's parent reaps it, for at
# most _REAP_GRACE seconds (the same grace as the sync side).
_REAP_POLL = 0.005


def _check_timeout(timeout: object) -> float | None:
    """A ``timeout=`` as the native waits take it: ``None`` or ``inf`` for
    no limit, else seconds; the same ``TypeError`` and NaN ``ValueError``."""
    if timeout is None:
        return None
    if isinstance(timeout, str | bytes | bytearray) or not (
        hasattr(type(timeout), "__float__") or hasattr(type(timeout), "__index__")
    ):
        raise TypeError(
            f"timeout must be a number of seconds (int or float) or None, "
            f"not {type(timeout).__name__}"
        )
    secs = float(timeout)  # type: ignore[arg-type]
    if math.isnan(secs):
        raise ValueError("timeout must be a number of seconds or None, not NaN")
    return None if secs == math.inf else secs


def _seconds(secs: float) -> str:
    """``secs`` as the native messages print it: shortest, no exponent."""
    if secs.is_integer():
        return str(int(secs))
    return format(decimal.Decimal(repr(secs)), "f")


def _timeout_phrase(secs: float) -> str:
    """The native ``timeout_phrase``: a zero or negative timeout checked once."""
    if secs > 0:
        return f"after the {_seconds(secs)}s timeout"
    return f"when checked (timeout={_seconds(secs)} checks once, without waiting)"


def _timeout_error(pid: int, secs: float) -> TimeoutError:
    """The ``TimeoutError`` of the native waits, word for word."""
    return TimeoutError(
        f"pid {pid} was still running {_timeout_phrase(secs)}; it has not been reaped"
    )


class AsyncPidFd(Closing):
    """An asynchronous handle on a process, built on :class:`PidFd`.

    Every non-blocking call is the native handle's; only the waits are async.
    Concurrent ``wait()`` calls on one handle are served one at a time: the
    first to get the status reaps the child, the rest then get
    ``ChildProcessError``, as a second sync ``wait()`` would.

    Example::

        import anyio, subprocess
        from pidfd import AsyncPidFd

        async def main():
            child = subprocess.Popen(["sleep", "0.1"])
            async with AsyncPidFd.from_pid(child.pid) as handle:
                info = await handle.wait()
            print(info.status)

        anyio.run(main)
    """

    __slots__ = (
        "_busy",
        "_guard",
        "_idle",
        "_loop_thread",
        "_pidfd",
        "_token",
        "_waiting",
    )

    def __init__(self, pidfd: PidFd) -> None:
        if not isinstance(pidfd, PidFd):
            raise TypeError(
                f"AsyncPidFd wraps a PidFd, not {type(pidfd).__name__}; "
                f"use AsyncPidFd.from_pid(pid)"
            )
        self._pidfd = pidfd
        # One task at a time awaits readability: anyio backends allow a single
        # waiter per fd and would raise BusyResourceError for a second one.
        # A flag, not an anyio.Lock: a Lock per handle cost ~1.5 KiB (8 MiB
        # for 5,000 handles) and a checkpoint per wait. The Event that queues
        # a second waiter is made only when there is one.
        self._busy = False
        self._idle: anyio.Event | None = None
        self._waiting = False
        # Where the current waiter runs (anyio's token for its event loop), so
        # that close() from another thread can have that loop drop the fd
        # before it is closed. _guard makes
        # "start waiting" and "close unless someone waits" atomic, so a close
        # from another thread cannot slip in between a waiter taking the fd
        # number and registering it with its loop. Reentrant, so a signal
        # handler that closes the handle cannot deadlock on it.
        self._token: anyio.lowlevel.EventLoopToken | None = None
        self._loop_thread: int | None = None
        self._guard = threading.RLock()

    @classmethod
    def from_pid(cls, pid: int, *, thread: bool = False) -> AsyncPidFd:
        """Open a handle on ``pid``; see :meth:`PidFd.from_pid`."""
        return cls(PidFd.from_pid(pid, thread=thread))

    @classmethod
    def from_fd(cls, fd: int) -> AsyncPidFd:
        """Adopt an existing pidfd; see :meth:`PidFd.from_fd`."""
        return cls(PidFd.from_fd(fd))

    @classmethod
    def from_socket_peer(cls, sock: socket.socket | int) -> AsyncPidFd:
        """A handle on a Unix socket's peer; see :meth:`PidFd.from_socket_peer`."""
        return cls(PidFd.from_socket_peer(sock))

    @property
    def pid(self) -> int:
        """The process id (still readable after ``close()``)."""
        return self._pidfd.pid

    @property
    def thread(self) -> bool:
        """Whether the handle refers to one thread."""
        return self._pidfd.thread

    @property
    def closed(self) -> bool:
        """Whether ``close()`` has been called."""
        return self._pidfd.closed

    @property
    def sync(self) -> PidFd:
        """The underlying synchronous :class:`PidFd` (same fd, same state)."""
        return self._pidfd

    def fileno(self) -> int:
        """The raw fd; readable once the process has exited."""
        return self._open().fileno()

    def _open(self) -> PidFd:
        """The native handle, or ``ValueError`` naming this class if closed.

        The native error would name ``PidFd``, which an ``AsyncPidFd`` user
        never opened.
        """
        if self._pidfd.closed:
            raise ValueError(
                f"operation on a closed AsyncPidFd (pid {self.pid}); open a new handle "
                f"with AsyncPidFd.from_pid()"
            )
        return self._pidfd

    async def _queue(self) -> None:
        """Wait until no other task is inside wait() / wait_exit()."""
        while self._busy:
            if self._idle is None:
                self._idle = anyio.Event()
            await self._idle.wait()

    def _release(self) -> None:
        self._busy = False
        idle, self._idle = self._idle, None
        if idle is not None:
            idle.set()

    async def _readable(self) -> None:
        with self._guard:
            fd = self._open().fileno()
            self._token = anyio.lowlevel.current_token()
            self._loop_thread = threading.get_ident()
            self._waiting = True
        try:
            # Registers fd with the loop before yielding to it, so a close
            # handed to the loop runs after the registration.
            await anyio.wait_readable(fd)
        except anyio.ClosedResourceError:
            # anyio's own has no message; say what happened.
            raise anyio.ClosedResourceError(
                f"AsyncPidFd (pid {self.pid}) was closed while this task awaited "
                f"the process's exit; this wait reaped nothing"
            ) from None
        finally:
            self._waiting = False

    async def wait(self, timeout: float | None = None) -> ExitInfo:
        """Wait for the child to exit, reap it, and return its ``ExitInfo``.

        Never blocks the event loop. Cancelling it leaves the child unreaped
        and the handle usable: a later ``wait()`` still returns the status.
        ``ChildProcessError`` at once for a process that is not our child.
        ``timeout`` is as for :meth:`PidFd.wait`: ``TimeoutError`` once it
        has passed, the child left unreaped (zero or negative checks once).
        Closing the handle meanwhile raises ``anyio.ClosedResourceError``.
        """
        secs = _check_timeout(timeout)
        if secs is None:
            return await self._wait()
        if secs <= 0:
            await anyio.lowlevel.checkpoint_if_cancelled()
            info = self._open().try_wait()
            if info is None:
                raise _timeout_error(self.pid, secs)
            return info
        with anyio.move_on_after(secs):
            return await self._wait()
        raise _timeout_error(self.pid, secs)

    async def _wait(self) -> ExitInfo:
        # A wait() that is already cancelled must not reap: raise before
        # touching the child (a check, not a yield, so it stays cheap).
        await anyio.lowlevel.checkpoint_if_cancelled()
        if self._busy:
            await self._queue()
        # No await between the check and here: the handle is ours.
        self._busy = True
        try:
            while True:
                info = self._open().try_wait()
                if info is not None:
                    return info
                # Readable means exited; a spurious wake-up just loops.
                await self._readable()
        finally:
            self._release()

    async def _wait_readable_once(self) -> None:
        """Await the fd's readability once, one task at a time, reaping nothing.

        For owners that reap by other means (``pidfd.Process`` reaps through
        its ``Popen``): returns when the process has exited, or - for a task
        that queued behind another - when that task's turn is over, so the
        caller re-checks before waiting again. ``ClosedResourceError`` if the
        handle is closed meanwhile.
        """
        if self._busy:
            await self._queue()
            return
        self._busy = True
        try:
            await self._readable()
        finally:
            self._release()

    async def wait_exit(self, timeout: float | None = None) -> ExitStatus | None:
        """Wait for the process — child or not — to exit, without reaping it.

        As :meth:`PidFd.wait_exit`: its ``ExitStatus`` where the kernel can
        tell, else ``None``; ``TimeoutError`` once ``timeout`` has passed.
        """
        secs = _check_timeout(timeout)
        if secs is None:
            return await self._wait_exit()
        if secs <= 0:
            await anyio.lowlevel.checkpoint_if_cancelled()
            if self._open().is_alive():
                raise _timeout_error(self.pid, secs)
            return await self._wait_exit()
        with anyio.move_on_after(secs):
            return await self._wait_exit()
        raise _timeout_error(self.pid, secs)

    async def _wait_exit(self) -> ExitStatus | None:
        await anyio.lowlevel.checkpoint_if_cancelled()
        if self._busy:
            await self._queue()
        self._busy = True
        try:
            await self._readable()
            with anyio.move_on_after(_REAP_GRACE):
                while True:
                    try:
                        return self._open().exit_status()
                    except TimeoutError:  # a zombie its parent has yet to reap
                        await anyio.sleep(_REAP_POLL)
            return None
        finally:
            self._release()

    def try_wait(self) -> ExitInfo | None:
        """Reap the child if it has exited; ``None`` while it runs."""
        return self._open().try_wait()

    def is_alive(self) -> bool:
        """Whether the process is still running."""
        return self._open().is_alive()

    def exit_status(self) -> ExitStatus | None:
        """How it ended, as :meth:`wait_exit` would say, without waiting.

        See :meth:`PidFd.exit_status`: never blocks, never reaps; ``None``
        where the status will never be known, ``TimeoutError`` while the
        answer is not settled.
        """
        return self._open().exit_status()

    def send_signal(self, sig: int | signal.Signals, *, group: bool = False) -> None:
        """Send ``sig`` (``group=True``: to its group); see :meth:`PidFd.send_signal`."""
        self._open().send_signal(sig, group=group)

    def kill(self) -> None:
        """Send ``SIGKILL``."""
        self._open().kill()

    def terminate(self) -> None:
        """Send ``SIGTERM``."""
        self._open().terminate()

    def info(self) -> ProcessInfo:
        """What the kernel knows about the process; see :meth:`PidFd.info`."""
        return self._open().info()

    def getfd(self, fd: int) -> int:
        """Duplicate the target's fd ``fd``; see :meth:`PidFd.getfd`."""
        return self._open().getfd(fd)

    def close(self) -> None:
        """Close the handle. Idempotent.

        A task awaiting ``wait()`` is woken first (it raises
        ``anyio.ClosedResourceError``), so the event loop never watches a
        closed, possibly reused, fd number. Called from another thread, the
        close is handed to that task's event loop and this call returns once
        it is done, like ``anyio.from_thread.run_sync``.
        """
        with self._guard:
            if not (self._waiting and threading.get_ident() != self._loop_thread):
                if self._waiting and not self._pidfd.closed:
                    # RuntimeError: the waiter's loop is not running (stopped
                    # with the task pending): nothing polls the fd to tell.
                    with contextlib.suppress(RuntimeError):
                        anyio.notify_closing(self._pidfd.fileno())
                self._pidfd.close()
                return
        self._close_in_loop()

    def _close_in_loop(self) -> None:
        token = self._token
        assert token is not None  # set by the waiter, under _guard
        loop = token.native_token
        # anyio waits for the loop to run the call, without limit: an asyncio
        # loop that has stopped (not closed) with the waiter still pending
        # would never run it. Nothing polls the fd then; close it here. (A
        # loop that stops in the microseconds between this check and anyio
        # queueing the call is not covered: anyio offers no timeout.)
        if isinstance(loop, asyncio.AbstractEventLoop) and not loop.is_running():
            self._pidfd.close()
            return
        try:
            anyio.from_thread.run_sync(self.close, token=token)
        except anyio.RunFinishedError:
            # The run is over, and with it every watcher of the fd.
            self._pidfd.close()

    def _check_open(self) -> None:
        self._open()

    def __repr__(self) -> str:
        return "<Async" + repr(self._pidfd)[1:]
