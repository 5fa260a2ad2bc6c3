"""`wait_any`: one blocking wait over many handles, sync or async.

The native ``wait_any`` polls ``PidFd`` objects only; this wrapper also takes
``AsyncPidFd`` (by its underlying ``PidFd``) and hands back the objects it
was given.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from pidfd._async import AsyncPidFd
from pidfd._native import PidFd
from pidfd._native import wait_any as _native_wait_any

__all__ = ["wait_any"]

# Bound to the union so that a list of PidFd comes back as list[PidFd], and a
# mixed list as the union.
_Handle = TypeVar("_Handle", bound="PidFd | AsyncPidFd")


def wait_any(handles: Iterable[_Handle], timeout: float | None = None) -> list[_Handle]:
    """Block until at least one handle's process has exited; return those that have.

    ``handles`` is any iterable of :class:`PidFd` or :class:`AsyncPidFd`; the
    result lists the exited ones, as the same objects, in the order given.
    One ``poll(2)`` watches them all, so thousands of handles cost no
    threads. Nothing is reaped: call ``wait()`` on each to collect it.
    ``TimeoutError`` if none exits within ``timeout`` seconds. Releases the
    GIL and is interruptible by Ctrl-C like :meth:`PidFd.wait`::

        done = wait_any(handles, timeout=5.0)
        for h in done:
            print(h.pid, h.wait().status)
    """
    handles = list(handles)
    natives = [h._pidfd if isinstance(h, AsyncPidFd) else h for h in handles]
    done = _native_wait_any(natives, timeout)
    done_ids = {id(h) for h in done}
    return [h for h, n in zip(handles, natives, strict=True) if id(n) in done_ids]
