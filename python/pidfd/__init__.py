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

if not sys.platform.startswith("linux"):  # pragma: no cover - exercised on other OSes
    raise ImportError(
        f"async-pidfd needs Linux (pidfd_open, waitid(P_PIDFD), pidfd_send_signal); "
        f"this is {sys.platform!r}. For portable process handling use subprocess, "
        f"asyncio.subprocess or psutil."
    )

from subprocess import (
    DEVNULL,
    PIPE,
    STDOUT,
    CalledProcessError,
    SubprocessError,
    TimeoutExpired,
)

from pidfd._async import AsyncPidFd
from pidfd._calls import call, check_call, check_output
from pidfd._cgroup import Cgroup
from pidfd._native import (
    ExitInfo,
    ExitStatus,
    PidFd,
    ProcessInfo,
    __version__,
)
from pidfd._popen import Popen
from pidfd._process import Process, open_process, run_process
from pidfd._run import CompletedProcess, run
from pidfd._subreaper import Subreaper
from pidfd._waitany import async_wait_any, wait_any

# The subprocess names a caller of Popen/run reaches for, so that
# ``import pidfd as subprocess`` works: the stock objects themselves, so
# ``except subprocess.TimeoutExpired`` and ``except pidfd.TimeoutExpired``
# catch the same thing.
__all__ = [
    "DEVNULL",
    "PIPE",
    "STDOUT",
    "AsyncPidFd",
    "CalledProcessError",
    "Cgroup",
    "CompletedProcess",
    "ExitInfo",
    "ExitStatus",
    "PidFd",
    "Popen",
    "Process",
    "ProcessInfo",
    "SubprocessError",
    "Subreaper",
    "TimeoutExpired",
    "__version__",
    "async_wait_any",
    "call",
    "check_call",
    "check_output",
    "open_process",
    "run",
    "run_process",
    "wait_any",
]


def __dir__() -> list[str]:
    # Only the public API (and the module's own dunders), not the helpers
    # imported above such as ``sys``; submodules stay importable by name.
    return sorted({*__all__, "__doc__", "__file__", "__name__", "__path__", "__spec__"})
