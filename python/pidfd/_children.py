"""The registry of live `pidfd.Popen` children, by pid.

A `Popen` registers its child when it starts it; the entry goes when the
object is collected. `pidfd.Subreaper` leaves these pids alone (their Popen
reaps them), and the pytest plugin counts them as the test's own.
"""

from __future__ import annotations

import weakref
from typing import Any

_by_pid: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()


def register(pid: int, popen: Any) -> None:
    """Record ``popen`` as the owner of child ``pid`` while it lives."""
    _by_pid[pid] = popen


def owner(pid: int) -> Any:
    """The live `pidfd.Popen` that started ``pid``, or ``None``."""
    return _by_pid.get(pid)


def pids() -> set[int]:
    """The pids of every child a live `pidfd.Popen` started."""
    return set(_by_pid)
