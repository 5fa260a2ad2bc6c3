"""W2: async fan-in. Start N short children (``/bin/true``) from N tasks and
await them all, on asyncio and on trio, with every peer.

Two kinds of worker process run this module:

* ``timing``: one fresh interpreter per repetition and backend runs every
  peer of that backend (rotated order), so each ratio to the floor compares
  figures from one process. Nothing is sampled inside the timed region.
* ``memory``: one fresh interpreter per peer, so the peak RSS growth is that
  peer's alone (a process's peak RSS only ever grows, and memory freed by an
  earlier peer would otherwise be reused for free). OS threads are counted
  from ``/proc/self/task`` inside the event loop, right after each spawn.
"""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
import warnings
from collections.abc import Callable
from typing import Any

import _util
import anyio
import trio

from pidfd import AsyncPidFd

SIZES = {
    "default": {"sizes": [200, 1000], "reps": 5, "mem_reps": 2},
    "quick": {"sizes": [50, 200], "reps": 2, "mem_reps": 1},
}
BACKENDS = _util.BACKENDS

Peak = list  # one-element list holding the highest thread count seen


def _sample(peak: Peak | None) -> None:
    if peak is not None:
        peak[0] = max(peak[0], _util.threads())


# --- asyncio child watchers -------------------------------------------------
# Python 3.8-3.11 default to ThreadedChildWatcher (a thread per child);
# 3.12-3.13 default to PidfdChildWatcher where the kernel has pidfds; 3.14
# dropped watchers and uses a pidfd internally. Choosing one is deprecated
# from 3.12, so those warnings are silenced where we must choose.


def _watcher_api() -> bool:
    return sys.version_info < (3, 14) and hasattr(asyncio, "PidfdChildWatcher")


def _default_watcher_class() -> type | None:
    if not _watcher_api():
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return type(asyncio.get_event_loop_policy().get_child_watcher())


# Must be read before any peer installs another watcher.
DEFAULT_WATCHER = _default_watcher_class()


def _use_watcher(cls: type | None) -> None:
    if cls is None:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        asyncio.get_event_loop_policy().set_child_watcher(cls())


def default_label() -> str:
    name = DEFAULT_WATCHER.__name__ if DEFAULT_WATCHER else "built-in pidfd"
    return f"asyncio subprocess, default ({name})"


# --- one child, per peer ------------------------------------------------------


async def _asyncio_exec(peak: Peak | None) -> None:
    proc = await asyncio.create_subprocess_exec(_util.TRUE)
    _util.track(proc.pid)
    _sample(peak)
    await proc.wait()
    _util.reaped(proc.pid)


async def _anyio_open(peak: Peak | None) -> None:
    proc = await anyio.open_process([_util.TRUE], stdin=None, stdout=None, stderr=None)
    _util.track(proc.pid)
    _sample(peak)
    try:
        await proc.wait()
    finally:
        await proc.aclose()
    _util.reaped(proc.pid)


async def _trio_open(peak: Peak | None) -> None:
    proc = await trio.lowlevel.open_process([_util.TRUE])
    _util.track(proc.pid)
    _sample(peak)
    await proc.wait()
    _util.reaped(proc.pid)


async def _floor(peak: Peak | None) -> None:
    pid = _util.spawn([_util.TRUE])
    _sample(peak)
    fd = os.pidfd_open(pid)
    try:
        # Check first, then await readability: the same order as ours.
        while os.waitid(os.P_PIDFD, fd, os.WEXITED | os.WNOHANG) is None:
            await anyio.wait_readable(fd)
    finally:
        os.close(fd)
    _util.reaped(pid)


async def _wait_ours(pid: int) -> None:
    handle = AsyncPidFd.from_pid(pid)
    try:
        await handle.wait()
    finally:
        handle.close()
    _util.reaped(pid)


async def _ours(peak: Peak | None) -> None:
    pid = _util.spawn([_util.TRUE])
    _sample(peak)
    await _wait_ours(pid)


def _popen_true() -> int:
    proc = subprocess.Popen([_util.TRUE])
    _util.track(proc.pid)
    # We reap it through the pidfd; a returncode tells Popen never to try.
    proc.returncode = 0
    return proc.pid


async def _ours_popen_in_thread(peak: Peak | None) -> None:
    # Spawn as trio does: subprocess.Popen in a worker thread. Popen's
    # fork_exec releases the GIL (os.posix_spawn does not), so spawns
    # overlap on several cores. The wait is exactly ours.
    pid = await anyio.to_thread.run_sync(_popen_true)
    _sample(peak)
    await _wait_ours(pid)


FLOOR = "floor: posix_spawn+pidfd_open+wait_readable+waitid"
OURS = "ours: posix_spawn+AsyncPidFd"
OURS_THREADED = "ours, spawned as trio does: to_thread(Popen)+AsyncPidFd"


def peers(backend: str) -> dict[str, tuple[Callable[[], None] | None, Callable[..., Any]]]:
    """name -> (setup run before the event loop starts, coroutine for one child)."""
    table: dict[str, tuple[Callable[[], None] | None, Callable[..., Any]]] = {}
    if backend == "asyncio":
        table[default_label()] = (lambda: _use_watcher(DEFAULT_WATCHER), _asyncio_exec)
        if _watcher_api() and DEFAULT_WATCHER is not asyncio.PidfdChildWatcher:
            table["asyncio subprocess, PidfdChildWatcher"] = (
                lambda: _use_watcher(asyncio.PidfdChildWatcher),
                _asyncio_exec,
            )
        # anyio on asyncio goes through asyncio's subprocess, so its watcher.
        table["anyio.open_process"] = (lambda: _use_watcher(DEFAULT_WATCHER), _anyio_open)
    else:
        table["anyio.open_process"] = (None, _anyio_open)
        table["trio.lowlevel.open_process"] = (None, _trio_open)
    table[FLOOR] = (None, _floor)
    table[OURS] = (None, _ours)
    table[OURS_THREADED] = (None, _ours_popen_in_thread)
    return table


def _once(
    backend: str,
    setup: Callable[[], None] | None,
    one: Callable[..., Any],
    n: int,
    peak: Peak | None = None,
) -> tuple[float, float]:
    return _util.run_at_once(backend, setup, one, n, peak)


def _order(names: list[str], rot: int) -> list[str]:
    """Peers rotated by ``rot``, with floor and ours kept next to each other
    (which one first alternates), so their ratio sees the same machine load."""
    others = [n for n in names if n not in (FLOOR, OURS)]
    pair = [FLOOR, OURS] if rot % 2 == 0 else [OURS, FLOOR]
    slots: list[Any] = [*others, pair]
    out: list[str] = []
    for item in _util.rotate(slots, rot):
        out.extend(item if isinstance(item, list) else [item])
    return out


def run_timing(cfg: dict) -> dict:
    backend, sizes, rot = cfg["backend"], cfg["sizes"], cfg["rotation"]
    return _util.time_peers(
        peers(backend),
        sizes,
        order=lambda names: _order(names, rot),
        once=lambda setup, one, n: _once(backend, setup, one, n),
    )


def run_memory(cfg: dict) -> dict:
    backend, peer, n = cfg["backend"], cfg["peer"], cfg["n"]
    setup, one = peers(backend)[peer]
    try:
        _once(backend, setup, one, 20)
        gc.collect()
        _util.reset_peak_rss()
        base = _util.rss_kib()
        peak: Peak = [_util.threads()]
        _once(backend, setup, one, n, peak)
        return {"peak_threads": peak[0], "peak_rss_growth_kib": _util.peak_rss_kib() - base}
    finally:
        _util.kill_and_reap_all()


WORKERS = {
    "timing": run_timing,
    "memory": run_memory,
    "peers": lambda cfg: {b: list(peers(b)) for b in BACKENDS},
}


# --- parent side: collect, analyse, targets, report, plot --------------------------

S = _util.summary


def collect(cfg: dict, work: Callable[[str, dict], Any], stage: Callable[[str], None]) -> dict:
    stage("W2: async fan-in, timing ...")
    peer_names = work("peers", {})
    timing: dict[str, list] = {b: [] for b in BACKENDS}
    for rep in range(cfg["reps"]):
        for backend in BACKENDS:
            timing[backend].append(
                work("timing", {"backend": backend, "sizes": cfg["sizes"], "rotation": rep})
            )
    stage("W2: async fan-in, threads and memory ...")
    n = max(cfg["sizes"])
    memory: dict[str, dict[str, list]] = {b: {p: [] for p in peer_names[b]} for b in BACKENDS}
    for _rep in range(cfg["mem_reps"]):
        for backend in BACKENDS:
            for peer in peer_names[backend]:
                memory[backend][peer].append(
                    work("memory", {"backend": backend, "peer": peer, "n": n})
                )
    return {
        "sizes": cfg["sizes"],
        "peers": peer_names,
        "timing": timing,
        "memory": memory,
        "memory_n": n,
    }


def _analyse_n(raw: dict, backend: str, n: str) -> dict:
    runs = [t[n] for t in raw["timing"][backend]]
    out = {}
    for peer in raw["peers"][backend]:
        out[peer] = {
            "seconds": S([r[peer]["seconds"] for r in runs]),
            "ratio_to_floor": S([r[peer]["seconds"] / r[FLOOR]["seconds"] for r in runs]),
            "cpu_us_per_child": S([r[peer]["cpu_us_per_child"] for r in runs]),
            "cpu_ratio_to_floor": S(
                [r[peer]["cpu_us_per_child"] / r[FLOOR]["cpu_us_per_child"] for r in runs]
            ),
        }
    return out


def analyse(raw: dict) -> dict:
    backends: dict[str, Any] = {}
    for backend in BACKENDS:
        b: dict[str, Any] = {n: _analyse_n(raw, backend, n) for n in map(str, raw["sizes"])}
        b["memory"] = {
            peer: {
                "peak_threads": S([m["peak_threads"] for m in mem]),
                "peak_rss_growth_mib": S([m["peak_rss_growth_kib"] / 1024 for m in mem]),
            }
            for peer, mem in raw["memory"][backend].items()
        }
        backends[backend] = b
    return {
        "sizes": raw["sizes"],
        "memory_n": raw["memory_n"],
        "floor": FLOOR,
        "ours": OURS,
        "backends": backends,
    }


def targets(a: dict, add: Callable[[str, bool, str], None]) -> None:
    for backend in BACKENDS:
        b = a["backends"][backend]
        ratios = {n: b[str(n)][OURS]["ratio_to_floor"]["median"] for n in a["sizes"]}
        cpu = {n: b[str(n)][OURS]["cpu_ratio_to_floor"]["median"] for n in a["sizes"]}
        add(
            f"W2 {backend}: ours <= 1.05x floor (total time)",
            all(r <= 1.05 for r in ratios.values()),
            ", ".join(f"N={n}: {r:.3f}x" for n, r in ratios.items())
            + "; parent CPU per child: "
            + ", ".join(f"N={n}: {r:.3f}x" for n, r in cpu.items()),
        )
        thr = b["memory"][OURS]["peak_threads"]["max"]
        add(f"W2 {backend}: ours uses one OS thread", thr == 1, f"peak threads {thr}")
        _target_ahead(a, backend, add)


def _target_ahead(a: dict, backend: str, add: Callable[[str, bool, str], None]) -> None:
    b = a["backends"][backend]
    rivals = [
        p
        for p in b["memory"]
        if p not in (FLOOR, OURS, OURS_THREADED) and "PidfdChildWatcher" not in p
    ]
    med = {
        (n, p): b[str(n)][p]["seconds"]["median"]
        for n in a["sizes"]
        for p in [*rivals, OURS, OURS_THREADED]
    }
    ok = all(med[n, OURS] < med[n, p] for n in a["sizes"] for p in rivals)
    lines = [f"N={n} vs {p}: {med[n, OURS] / med[n, p]:.2f}x" for n in a["sizes"] for p in rivals]
    if backend == "trio":
        ratios = [
            f"N={n} vs {p}: {med[n, OURS_THREADED] / med[n, p]:.2f}x"
            for n in a["sizes"]
            for p in rivals
        ]
        lines.append(
            "(for insight, not the target: ours spawned as trio spawns vs those peers: "
            + ", ".join(ratios)
            + ")"
        )
    add(f"W2 {backend}: ours ahead of " + ", ".join(rivals), ok, "; ".join(lines))


def report(a: dict, L: list[str]) -> None:
    for backend in BACKENDS:
        b = a["backends"][backend]
        L.append(f"### W2: async fan-in on {backend}")
        L.append("")
        heads = ["peer", "N", "total s", "x floor", "parent CPU µs/child"]
        heads += [f"peak threads (N={a['memory_n']})", f"peak RSS growth MiB (N={a['memory_n']})"]
        t_cols = [("seconds", ".3f"), ("ratio_to_floor", ".2f"), ("cpu_us_per_child", ".0f")]
        mem_cols = [("peak_threads", ".0f"), ("peak_rss_growth_mib", ".1f")]
        rows = (
            [peer, str(n), *_util.cells(b[str(n)][peer], t_cols), *_util.cells(mem, mem_cols)]
            for peer, mem in b["memory"].items()
            for n in a["sizes"]
        )
        _util.table(L, heads, rows)


PANELS = 1


def plot(axes: list, a: dict) -> None:
    n = str(max(a["sizes"]))
    labels, sums = [], []
    for backend in BACKENDS:
        b = a["backends"][backend]
        for peer in b["memory"]:
            labels.append(f"{backend}: {peer.split(':')[0]}")
            sums.append(b[n][peer]["ratio_to_floor"])
    _util.hbars(
        axes[0],
        labels,
        sums,
        "total time x hand-written floor (same process)",
        f"W2: async fan-in of N={n} children",
        ref=1.0,
    )
