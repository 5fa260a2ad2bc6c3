"""Race-free process handles for Linux, for sync code, asyncio and trio.

A :class:`PidFd` refers to one process for as long as it is open: unlike a
numeric pid, it can never come to mean another process that reused the
number. Wait for it (:meth:`PidFd.wait`), signal it
(:meth:`PidFd.send_signal`), or await it without threads with
:class:`AsyncPidFd` under asyncio, trio or anyio::

    import subprocess
    from pidfd import PidFd

    child = subprocess.Popen(["true"])
    with PidFd.from_pid(child.pid) as handle:
        print(handle.wait().status)   # ExitStatus(code=0)
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TypeVar

if not sys.platform.startswith("linux"):  # pragma: no cover - exercised on other OSes
    raise ImportError(
        f"async-pidfd needs Linux (pidfd_open, waitid(P_PIDFD), pidfd_send_signal); "
        f"this is {sys.platform!r}. For portable process handling use subprocess, "
        f"asyncio.subprocess or psutil."
    )

from pidfd._async import AsyncPidFd
from pidfd._native import (
    ExitInfo,
    ExitStatus,
    PidFd,
    ProcessInfo,
    __version__,
)
from pidfd._native import wait_any as _wait_any
from pidfd._popen import CompletedProcess, Popen, run
from pidfd._process import Process, open_process, run_process
from pidfd._subreaper import Subreaper

__all__ = [
    "AsyncPidFd",
    "CompletedProcess",
    "ExitInfo",
    "ExitStatus",
    "PidFd",
    "Popen",
    "Process",
    "ProcessInfo",
    "Subreaper",
    "__version__",
    "open_process",
    "run",
    "run_process",
    "wait_any",
]


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
    done = _wait_any(natives, timeout)
    done_ids = {id(h) for h in done}
    return [h for h, n in zip(handles, natives, strict=True) if id(n) in done_ids]
