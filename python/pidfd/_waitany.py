"""`wait_any` and `async_wait_any`: one wait over many handles, sync or async.

The native ``wait_any`` polls ``PidFd`` objects only; these wrappers also
take ``AsyncPidFd`` (by its underlying ``PidFd``) and hand back the objects
they were given.
"""

from __future__ import annotations

import select
from collections.abc import Iterable
from typing import TypeVar

import anyio
import anyio.lowlevel

from pidfd._async import AsyncPidFd, _check_timeout, _timeout_phrase
from pidfd._native import PidFd
from pidfd._native import wait_any as _native_wait_any

__all__ = ["async_wait_any", "wait_any"]

# Bound to the union so that a list of PidFd comes back as list[PidFd], and a
# mixed list as the union.
_Handle = TypeVar("_Handle", bound="PidFd | AsyncPidFd")


def _natives(handles: list[_Handle]) -> list[PidFd]:
    return [h._pidfd if isinstance(h, AsyncPidFd) else h for h in handles]


def _pick(handles: list[_Handle], natives: list[PidFd], done: list[PidFd]) -> list[_Handle]:
    done_ids = {id(h) for h in done}
    return [h for h, n in zip(handles, natives, strict=True) if id(n) in done_ids]


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

    It blocks the calling thread: called from a coroutine, it stalls the
    whole event loop until a process exits. There, ``await``
    :func:`async_wait_any` instead.
    """
    handles = list(handles)
    natives = _natives(handles)
    return _pick(handles, natives, _native_wait_any(natives, timeout))


async def async_wait_any(handles: Iterable[_Handle], timeout: float | None = None) -> list[_Handle]:
    """Wait until at least one handle's process has exited, without blocking the loop.

    The async counterpart of :func:`wait_any`, under asyncio, trio or anyio:
    the same arguments, the same result (the exited handles, as the objects
    given, in order) and the same errors. Nothing is reaped. One ``epoll``
    fd watches every handle and is itself awaited, so thousands of handles
    cost one fd, no task or thread each. Cancelling it leaves every process
    as it was::

        done = await async_wait_any(handles, timeout=5.0)
        for h in done:
            print(h.pid, (await h.wait()).status)
    """
    secs = _check_timeout(timeout)
    handles = list(handles)
    natives = _natives(handles)
    await anyio.lowlevel.checkpoint_if_cancelled()
    if secs is not None and secs <= 0:
        # Check once, with the native TimeoutError.
        return _pick(handles, natives, _native_wait_any(natives, secs))
    try:
        # Also refuses what the sync call refuses (no handles, a closed one).
        return _pick(handles, natives, _native_wait_any(natives, 0))
    except TimeoutError:
        pass
    with select.epoll() as watched:
        for fd in {n.fileno() for n in natives}:
            watched.register(fd, select.EPOLLIN)
        with anyio.move_on_after(secs if secs is not None else float("inf")):
            while True:
                # Readable once any registered pidfd is: one of them exited.
                await anyio.wait_readable(watched.fileno())
                try:
                    return _pick(handles, natives, _native_wait_any(natives, 0))
                except TimeoutError:
                    continue
    assert secs is not None  # only a finite timeout ends the scope
    raise TimeoutError(f"none of the {len(handles)} processes had exited {_timeout_phrase(secs)}")
