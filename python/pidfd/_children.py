"""The registry of running `pidfd.Popen` children, by pid.

A `Popen` registers its child when it starts it. `owner` and `pids` answer
only for children not yet reaped: an entry whose Popen has recorded an exit
(or been collected) reads as absent, and such entries are swept out as the
registry grows. `pidfd.Subreaper` leaves these pids alone (their Popen reaps
them), and the pytest plugin counts them as the test's own.

A plain dict of weak references, swept now and then, rather than a
`weakref.WeakValueDictionary` or a removal at each reap: this runs once per
spawn, and both of those cost more than the rest of a reap's bookkeeping
together (W5 in ``benchmarks/``).
"""

from __future__ import annotations

import weakref
from typing import Any

# pid -> a weak reference to its Popen.
_by_pid: dict[int, weakref.ref[Any]] = {}
# The registry size below which no sweep runs.
_SWEEP_FROM = 256
# The size of the registry at which the next registration calls _sweep().
_sweep_at = _SWEEP_FROM


def _running(ref: weakref.ref[Any]) -> Any:
    popen = ref()
    return popen if popen is not None and popen.returncode is None else None


def _sweep() -> None:
    """Drop the entries of reaped or collected Popens (amortised: the next
    sweep comes once the registry has doubled)."""
    global _sweep_at
    # One comprehension, not a _running() call per entry: a sweep looks at
    # every entry, and comes about once per 256 spawns.
    done = [pid for pid, ref in _by_pid.items() if (p := ref()) is None or p.returncode is not None]
    for pid in done:
        del _by_pid[pid]
    _sweep_at = max(_SWEEP_FROM, 2 * len(_by_pid))


def register(pid: int, popen: Any) -> None:
    """Record ``popen`` as the owner of child ``pid`` until it is reaped."""
    _by_pid[pid] = weakref.ref(popen)
    if len(_by_pid) >= _sweep_at:
        _sweep()


def owner(pid: int) -> Any:
    """The live `pidfd.Popen` whose unreaped child ``pid`` is, or ``None``."""
    ref = _by_pid.get(pid)
    return None if ref is None else _running(ref)


def pids() -> set[int]:
    """The pids of every child a live `pidfd.Popen` started and has not reaped."""
    return {pid for pid, ref in list(_by_pid.items()) if _running(ref) is not None}
