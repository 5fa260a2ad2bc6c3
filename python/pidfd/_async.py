"""`AsyncPidFd`: await a process's exit on any anyio backend, without threads.

A pidfd polls readable once its process exits, so waiting is just awaiting
readability (``anyio.wait_readable``) and then reaping with ``WNOHANG``.
That runs unchanged under ``asyncio.run``, ``trio.run`` and ``anyio.run``,
with no helper thread and no child watcher.
"""

from __future__ import annotations

import contextlib
import types
from typing import TYPE_CHECKING

import anyio

from pidfd._native import _REAP_GRACE, PidFd

if TYPE_CHECKING:
    import signal
    import socket

    from pidfd._native import ExitInfo, ExitStatus, ProcessInfo

__all__ = ["AsyncPidFd"]

# wait_exit() polls this often while a non-child's parent reaps it, for at
# most _REAP_GRACE seconds (the same grace as the sync side).
_REAP_POLL = 0.005


class AsyncPidFd:
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

    __slots__ = ("_lock", "_pidfd", "_waiting")

    def __init__(self, pidfd: PidFd) -> None:
        if not isinstance(pidfd, PidFd):
            raise TypeError(
                f"AsyncPidFd wraps a PidFd, not {type(pidfd).__name__}; "
                f"use AsyncPidFd.from_pid(pid)"
            )
        self._pidfd = pidfd
        # One task at a time awaits readability: anyio backends allow a single
        # waiter per fd and would raise BusyResourceError for a second one.
        self._lock = anyio.Lock()
        self._waiting = False

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
        return self._pidfd.fileno()

    async def _readable(self) -> None:
        self._waiting = True
        try:
            await anyio.wait_readable(self._pidfd.fileno())
        finally:
            self._waiting = False

    async def wait(self) -> ExitInfo:
        """Wait for the child to exit, reap it, and return its ``ExitInfo``.

        Never blocks the event loop. Cancelling it leaves the child unreaped
        and the handle usable: a later ``wait()`` still returns the status.
        ``ChildProcessError`` at once for a process that is not our child.
        """
        async with self._lock:
            while True:
                info = self._pidfd.try_wait()
                if info is not None:
                    return info
                # Readable means exited; a spurious wake-up just loops.
                await self._readable()

    async def wait_exit(self) -> ExitStatus | None:
        """Wait for the process — child or not — to exit, without reaping it.

        As :meth:`PidFd.wait_exit`: its ``ExitStatus`` where the kernel can
        tell, else ``None``.
        """
        async with self._lock:
            await self._readable()
            with anyio.move_on_after(_REAP_GRACE):
                while True:
                    settled, status = self._pidfd._exit_status_now()
                    if settled:
                        return status
                    await anyio.sleep(_REAP_POLL)
            return None

    def try_wait(self) -> ExitInfo | None:
        """Reap the child if it has exited; ``None`` while it runs."""
        return self._pidfd.try_wait()

    def is_alive(self) -> bool:
        """Whether the process is still running."""
        return self._pidfd.is_alive()

    def send_signal(self, sig: int | signal.Signals) -> None:
        """Send ``sig``; see :meth:`PidFd.send_signal`."""
        self._pidfd.send_signal(sig)

    def kill(self) -> None:
        """Send ``SIGKILL``."""
        self._pidfd.kill()

    def terminate(self) -> None:
        """Send ``SIGTERM``."""
        self._pidfd.terminate()

    def info(self) -> ProcessInfo:
        """What the kernel knows about the process; see :meth:`PidFd.info`."""
        return self._pidfd.info()

    def getfd(self, fd: int) -> int:
        """Duplicate the target's fd ``fd``; see :meth:`PidFd.getfd`."""
        return self._pidfd.getfd(fd)

    def close(self) -> None:
        """Close the handle. Idempotent.

        A task awaiting ``wait()`` is woken first (it raises
        ``anyio.ClosedResourceError``), so the event loop never watches a
        closed, possibly reused, fd number.
        """
        if self._waiting and not self._pidfd.closed:
            # Outside an event loop (e.g. from another thread) this raises
            # RuntimeError: there is no loop-side waiter we can reach from here.
            with contextlib.suppress(RuntimeError):
                anyio.notify_closing(self._pidfd.fileno())
        self._pidfd.close()

    def __enter__(self) -> AsyncPidFd:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> AsyncPidFd:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return "<Async" + repr(self._pidfd)[1:]
