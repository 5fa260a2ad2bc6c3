"""The registry of running `pidfd.Popen` children, by pid.

A `Popen` registers its child when it starts it and forgets it when it
records the child's exit (every reap sets ``returncode``); an entry of an
object collected before that reads as absent. `pidfd.Subreaper` leaves these
pids alone (their Popen reaps them), and the pytest plugin counts them as the
test's own.

A plain dict of weak references rather than a `weakref.WeakValueDictionary`:
this runs once per spawn and once per reap, and the dictionary's
per-entry callback objects cost more than the rest of the bookkeeping
together (W5 in ``benchmarks/``).
"""

from __future__ import annotations

import weakref
from typing import Any

_by_pid: dict[int, weakref.ref[Any]] = {}


def register(pid: int, popen: Any) -> None:
    """Record ``popen`` as the owner of child ``pid`` until `forget`."""
    _by_pid[pid] = weakref.ref(popen)


def forget(pid: int, popen: Any) -> None:
    """Drop ``pid``'s entry if it is still ``popen``'s (the child is reaped)."""
    ref = _by_pid.get(pid)
    if ref is not None and ((current := ref()) is popen or current is None):
        del _by_pid[pid]


def owner(pid: int) -> Any:
    """The live `pidfd.Popen` that started ``pid``, or ``None``."""
    ref = _by_pid.get(pid)
    return None if ref is None else ref()


def pids() -> set[int]:
    """The pids of every child a live `pidfd.Popen` started and has not reaped."""
    live = set()
    for pid, ref in list(_by_pid.items()):
        if ref() is None:
            _by_pid.pop(pid, None)
        else:
            live.add(pid)
    return live
