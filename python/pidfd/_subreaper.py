"""`pidfd.Subreaper`: adopt, hold and reap the descendants orphaned in a block.

A process that forks and lets its child exit (a daemon's double fork, a
shell's background job, a test helper that outlives its test) leaves an
orphan. Normally init adopts it and nobody the program knows of ever sees
it again. With ``PR_SET_CHILD_SUBREAPER`` set, this process adopts it
instead: it becomes our child, so we can hold it with a pidfd, signal it
race-free, and reap it.

What counts as an orphan here, and why: the kernel does not say whether a
child of ours was forked by us or adopted, so the block takes the children
it did not start out with and that no :class:`pidfd.Popen` (or
:class:`pidfd.Process`) owns. It never waits with ``waitid(P_ALL)`` or
``waitpid(-1)``, which would reap children the rest of the program still
expects to reap; each orphan is reaped through its own pidfd.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from typing import TYPE_CHECKING

import anyio

from pidfd import _children, _procfs
from pidfd._closing import Closing
from pidfd._native import ExitStatus, PidFd, _child_subreaper, _set_child_subreaper
from pidfd._native import wait_any as _wait_any

if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Self

__all__ = ["Subreaper"]

# The prctl attribute is per process, the blocks may nest or overlap across
# threads: the first in turns it on (unless it already was), the last out
# restores it. Orphans are claimed by one block each.
_lock = threading.Lock()
_depth = 0
_was_subreaper = False
_claimed: set[int] = set()

# How often close() looks for newly adopted processes while it waits: a
# descendant whose parent (not ours) dies is re-parented to us without any
# wake-up on a pidfd we hold.
_RESCAN = 0.05


async def _await_any(handles: list[PidFd], timeout: float) -> None:
    """Return once any of ``handles`` has exited, or after ``timeout`` seconds."""
    with anyio.move_on_after(timeout):
        async with anyio.create_task_group() as tg:

            async def one(handle: PidFd) -> None:
                await anyio.wait_readable(handle.fileno())
                tg.cancel_scope.cancel()

            for handle in handles:
                tg.start_soon(one, handle)


def _still_our_child(handle: PidFd) -> bool:
    """True if ``handle`` names an unreaped child of ours (race-free: a pidfd)."""
    try:
        os.waitid(os.P_PIDFD, handle.fileno(), os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    return True


class Subreaper(Closing):
    """Adopt and reap every descendant orphaned inside a ``with`` block.

    While the block runs this process is a child subreaper
    (``PR_SET_CHILD_SUBREAPER``, Linux >= 3.4): a descendant whose parent
    exits -- a daemon that double-forked, a background job of a shell that
    has finished -- is re-parented to us instead of to init. On the way out
    each adopted process still running gets ``SIGTERM`` (and ``SIGCONT``, so
    a stopped one wakes to take it), then ``SIGKILL`` after ``grace``
    seconds; all are reaped (no zombie is left) and the previous subreaper
    setting is restored::

        import pidfd

        with pidfd.Subreaper(grace=1.0) as reaper:
            # sh starts a daemon that leaves its group and session, and exits
            pidfd.run(["sh", "-c", "setsid sleep 60 &"])
            print(len(reaper.orphans()))   # 1
        print(list(reaper.reaped.values()))   # [ExitStatus(signal=15)]

    Which children it takes: those this process did not have when the
    block began, and that no :class:`pidfd.Popen` or :class:`pidfd.Process`
    owns (their own ``wait()`` reaps them). It never calls
    ``waitpid(-1)``: each orphan is held by its own pidfd and reaped through
    it. A child you start inside the block with ``subprocess``, ``asyncio``
    or ``os.fork`` and leave running at the end counts as left behind, and
    is terminated and reaped with the rest: wait for it inside the block, or
    start it with ``pidfd``.

    Something else in the program that reaps any child (a ``SIGCHLD``
    handler calling ``os.waitpid(-1, ...)``) may reap an orphan first; its
    status is then reported where the kernel keeps it
    (``PIDFD_INFO_EXIT``, Linux >= 6.15) and ``None`` otherwise.

    Use it from one thread. ``close()`` (leaving the block) blocks for up to
    ``grace`` seconds plus the time the kills take, with the GIL released;
    Ctrl-C there sends ``SIGKILL`` to what is left, reaps it, and raises. In
    async code use ``async with`` (:meth:`aclose`): the grace period is then
    awaited on the pidfds under asyncio or trio, never blocking the loop.
    """

    def __init__(self, *, grace: float = 2.0) -> None:
        if isinstance(grace, bool) or not isinstance(grace, int | float):
            raise TypeError(f"grace must be a number of seconds, not {type(grace).__name__}")
        if not grace >= 0:  # also refuses NaN
            raise ValueError(f"grace must be a number of seconds >= 0, not {grace!r}")
        #: Seconds between ``SIGTERM`` and ``SIGKILL`` when the block ends.
        self.grace = float(grace)
        #: Every adopted process this block reaped, by pid, in order: its
        #: :class:`ExitStatus`, or ``None`` where something else reaped it
        #: and the kernel could not say how it ended.
        self.reaped: dict[int, ExitStatus | None] = {}
        #: The last signal this block sent to each adopted process, by pid.
        self.signalled: dict[int, int] = {}
        self._held: dict[int, PidFd] = {}
        self._at_entry: set[int] = set()
        self._active = False

    # -- the block ----------------------------------------------------------------

    def __enter__(self) -> Self:
        """Become a child subreaper (unless already one) and start the block."""
        global _depth, _was_subreaper
        if self._active:
            raise RuntimeError("this Subreaper is already active; make a new one per block")
        # Before the switch: nothing can have been adopted yet.
        at_entry = _procfs.children()
        with _lock:
            if _depth == 0:
                _was_subreaper = _child_subreaper()
                if not _was_subreaper:
                    _set_child_subreaper(True)
            _depth += 1
        self._active = True
        self._at_entry = at_entry
        return self

    def close(self) -> None:
        """Terminate, reap and release every adopted process; restore the setting.

        Idempotent. ``SIGTERM`` and ``SIGCONT`` to each one still running (and
        to each one adopted meanwhile, as its parent dies), ``SIGKILL`` to what is left
        after ``grace`` seconds, until no adopted process remains.
        """
        if not self._active:
            return
        try:
            for wait in self._tear_down():
                self._wait_held(wait)
        except BaseException:
            # Ctrl-C (or any error) during the grace period: no more grace.
            self._kill_remaining()
            raise
        finally:
            self._release()

    async def _close_async(self) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """:meth:`close` for async code: the grace period never blocks the event loop.

        The exits are awaited on the pidfds (``anyio.wait_readable``), under
        asyncio or trio. If it is cancelled, what is left gets ``SIGKILL``
        and is reaped (shielded), and the cancellation goes on.
        """
        if not self._active:
            return
        try:
            for wait in self._tear_down():
                await _await_any(list(self._held.values()), wait)
        except BaseException:
            with anyio.CancelScope(shield=True):
                # SIGKILL is not ignorable: these waits are short.
                self._kill_remaining()
            raise
        finally:
            self._release()

    def _release(self) -> None:
        global _depth
        for pid, handle in self._held.items():
            handle.close()
            _claimed.discard(pid)
        self._held.clear()
        self._active = False
        with _lock:
            _depth -= 1
            if _depth == 0 and not _was_subreaper:
                _set_child_subreaper(False)

    # -- while it runs --------------------------------------------------------------

    def orphans(self) -> list[PidFd]:
        """The processes adopted so far and not yet reaped, each held by a pidfd.

        Looks for new ones first. The handles belong to this object (it
        closes them at the end); signal them or wait on them with
        :func:`pidfd.wait_any`, and reap with :meth:`reap`.
        """
        self._check_active()
        self._adopt()
        return list(self._held.values())

    def reap(self) -> dict[int, ExitStatus | None]:
        """Reap the adopted processes that have exited, without blocking.

        Returns what was reaped now, by pid (also kept in :attr:`reaped`).
        Calling it now and then inside a long block keeps exited orphans
        from lingering as zombies until the end.
        """
        self._check_active()
        self._adopt()
        return self._reap_exited()

    # -- internals ----------------------------------------------------------------------

    def _check_active(self) -> None:
        if not self._active:
            raise ValueError(
                "the Subreaper is not active: use it as `with pidfd.Subreaper() as r:`"
            )

    def _adopt(self) -> list[PidFd]:
        """Hold every new orphan with a pidfd; return the ones found now."""
        new: list[PidFd] = []
        for pid in _procfs.children():
            if pid in self._held or pid in self._at_entry or pid in _claimed:
                continue
            if _children.owner(pid) is not None:
                continue  # a pidfd.Popen's own child: it reaps it
            try:
                handle = PidFd.from_pid(pid)
            except ProcessLookupError:
                continue  # gone, reaped by something else
            if not _still_our_child(handle):
                # Reaped by something else between the listing and the
                # open, and the pid already reused by a stranger.
                handle.close()
                continue
            _claimed.add(pid)
            self._held[pid] = handle
            new.append(handle)
        return new

    def _reap_exited(self) -> dict[int, ExitStatus | None]:
        done: dict[int, ExitStatus | None] = {}
        for pid, handle in list(self._held.items()):
            status: ExitStatus | None
            try:
                info = handle.try_wait()
            except ChildProcessError:
                # Reaped behind our back: the kernel may still know how it
                # ended. Either way it is gone, and no longer ours to hold
                # (reaped, so the answer is settled: no TimeoutError).
                status = handle.exit_status()
            else:
                if info is None:
                    continue
                status = info.status
            done[pid] = status
            handle.close()
            del self._held[pid]
            _claimed.discard(pid)
        self.reaped.update(done)
        return done

    def _signal(self, handles: list[PidFd], sig: int) -> None:
        for handle in handles:
            with contextlib.suppress(ProcessLookupError):
                handle.send_signal(sig)
                self.signalled[handle.pid] = sig
                if sig == signal.SIGTERM:
                    # A stopped process keeps SIGTERM pending until the
                    # SIGKILL: wake it, as timeout(1) does.
                    handle.send_signal(signal.SIGCONT)

    def _wait_held(self, timeout: float) -> None:
        """Block (GIL released) up to ``timeout`` seconds for any held process to exit."""
        with contextlib.suppress(TimeoutError):
            _wait_any(list(self._held.values()), timeout)

    def _tear_down(self) -> Iterator[float]:
        """The way out, as steps: each value yielded means "wait up to this
        long for any held process to exit", so that sync and async code
        share one sequence."""
        self._adopt()
        self._reap_exited()
        self._signal(list(self._held.values()), signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        killing = False
        while True:
            # Reap, then look: whatever we reaped had its children re-parented
            # to us before it became a zombie, so the look finds them.
            self._reap_exited()
            new = self._adopt()
            if not killing and time.monotonic() >= deadline:
                killing = True
                self._signal(list(self._held.values()), signal.SIGKILL)
            else:
                self._signal(new, signal.SIGKILL if killing else signal.SIGTERM)
            if not self._held:
                # Nothing adopted is left, and the look above came after
                # the last reap: no descendant remains.
                return
            yield _RESCAN if killing else max(0.0, min(_RESCAN, deadline - time.monotonic()))

    def _kill_remaining(self) -> None:
        # No exception may stop this: each orphan is killed and reaped.
        while True:
            self._reap_exited()
            self._adopt()
            if not self._held:
                return
            self._signal(list(self._held.values()), signal.SIGKILL)
            self._wait_held(_RESCAN)

    def __repr__(self) -> str:
        state = "active" if self._active else "inactive"
        return f"<pidfd.Subreaper {state} held={sorted(self._held)} reaped={len(self.reaped)}>"
