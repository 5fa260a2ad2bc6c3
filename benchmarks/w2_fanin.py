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
import resource
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import _util
import anyio
import trio

from pidfd import AsyncPidFd

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


async def _ours(peak: Peak | None) -> None:
    pid = _util.spawn([_util.TRUE])
    _sample(peak)
    handle = AsyncPidFd.from_pid(pid)
    try:
        await handle.wait()
    finally:
        handle.close()
    _util.reaped(pid)


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
    handle = AsyncPidFd.from_pid(pid)
    try:
        await handle.wait()
    finally:
        handle.close()
    _util.reaped(pid)


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


async def _fan_in(one: Callable[..., Any], n: int, peak: Peak | None) -> None:
    async with anyio.create_task_group() as tg:
        for _ in range(n):
            tg.start_soon(one, peak)


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _once(
    backend: str,
    setup: Callable[[], None] | None,
    one: Callable[..., Any],
    n: int,
    peak: Peak | None = None,
) -> tuple[float, float]:
    if setup is not None:
        setup()
    gc.collect()
    cpu0, t0 = _cpu(), time.perf_counter()
    anyio.run(_fan_in, one, n, peak, backend=backend)
    return time.perf_counter() - t0, _cpu() - cpu0


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
