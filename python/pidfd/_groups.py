"""Signalling the process group a `pidfd.Popen`'s child leads, safely on every kernel.

``send_signal(sig, group=True)`` goes through the pidfd
(``PIDFD_SIGNAL_PROCESS_GROUP``, Linux >= 6.9); before that kernel, or once
the pidfd is gone, through ``os.killpg`` -- but only while the leader is
unreaped, when its pid still pins the group id. `GroupSignals` holds those
methods for `pidfd.Popen`, whose state (``pidfd``, ``_waitpid_lock``...)
they read.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import threading

    from pidfd._native import PidFd


# How long a group signal waits for a Popen's lock before it goes ahead.
LOCK_PATIENCE = 0.05


def check_signal_range(sig: int) -> None:
    """Refuse a signal number no process can be sent, as ``os.kill`` does."""
    if isinstance(sig, int) and not 0 <= sig <= signal.SIGRTMAX:
        # The errno os.kill gives for the same mistake, with the range.
        raise OSError(
            errno.EINVAL,
            f"signal number {sig} is out of range: use 1..{int(signal.SIGRTMAX)} "
            f"(e.g. signal.SIGTERM), or 0 to check that the process exists",
        )


class GroupSignals:
    """The process-group half of `pidfd.Popen`'s signalling (a mixin)."""

    if TYPE_CHECKING:
        # The Popen state these methods read.
        pid: int
        pidfd: PidFd | None
        returncode: int | None
        _on_pidfd: bool
        _leads_group: bool
        _waitpid_lock: threading.Lock

        def send_signal(self, sig: int, *, group: bool = False) -> None: ...
        def kill(self) -> None: ...

    def _reaped_error(self, how: str) -> ProcessLookupError:
        return ProcessLookupError(
            errno.ESRCH,
            f"pid {self.pid} {how}, so the process group it led can no longer be "
            f"signalled safely (its id may name another group now); signal the "
            f"group before reaping the leader",
        )

    def _signal_group(self, sig: int) -> None:
        """``send_signal(sig, group=True)``: the pidfd first, then ``killpg``."""
        check_signal_range(sig)
        # No poll() first, unlike a plain signal: reaping a zombie leader
        # would free the group id while members may still run.
        handle = self.pidfd
        if self._on_pidfd and handle is not None:
            try:
                handle.send_signal(sig, group=True)
            except ValueError:
                # Closed: by another thread that reaped the child, or by the
                # user. The fallback's own check under the lock tells which.
                pass
            except OSError as exc:
                if exc.errno != errno.ENOSYS:
                    raise
            else:
                return
        # Reaped already (the pidfd is gone), or no group signals (ENOSYS,
        # before Linux 6.9): the fallback refuses a reaped leader itself.
        self._killpg_while_unreaped(sig)

    def _killpg_while_unreaped(self, sig: int) -> None:
        """The fallback for kernels without group signals (or without a pidfd).

        ``killpg`` names the group by number; that number is safe only while
        the leader is unreaped, so the check and the signal happen under
        ``_waitpid_lock``, which every reap by this object takes.
        """
        # A non-blocking reap holds the lock for a moment; an untimed wait()
        # (ours or the stock one) holds it until the child exits, which it
        # then reaps at once: not got within LOCK_PATIENCE, signalling
        # without the lock is the race subprocess.Popen.send_signal has, no
        # wider.
        locked = self._waitpid_lock.acquire(timeout=LOCK_PATIENCE)
        try:
            if self.returncode is not None:
                raise self._reaped_error("has been reaped")
            try:
                # WNOWAIT: look, never reap. ECHILD: reaped behind our back.
                os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                raise self._reaped_error("was reaped by something else in this program") from None
            if os.getpgid(self.pid) != self.pid:
                # What the kernel's group signal says on Linux >= 6.9, on
                # every kernel: no group has this unreaped child's pid as its
                # id (one could only be the child's own), so there is no
                # group to signal. Not the ENOSYS below: nothing is missing.
                raise ProcessLookupError(
                    errno.ESRCH,
                    f"pid {self.pid} leads no process group (start it with "
                    f"start_new_session=True or process_group=0 to make it lead one); "
                    f"signal {sig} was not sent",
                )
            # Unreaped and its own group's leader: the group id is its pid.
            os.killpg(self.pid, sig)
        finally:
            if locked:
                self._waitpid_lock.release()

    def _kill_for_exit(self) -> None:
        """SIGKILL the child on the way out -- first its whole group, if it
        leads one, while it is unreaped and so still pins the group id."""
        if self._leads_group:
            # Nothing left in the group, not permitted, or no safe way:
            # the leader itself is still killed below.
            with contextlib.suppress(OSError):
                self.send_signal(signal.SIGKILL, group=True)
        self.kill()
