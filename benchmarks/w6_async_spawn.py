"""W6: async spawn + wait with pipes. N concurrent ``await run_process(["/bin/true"])``
(stdout and stderr captured) on asyncio and on trio, with every peer.

Peers, each starting the child, reading its stdout and stderr to end of file
and reaping it: ours ``pidfd.run_process``; ``anyio.run_process`` (on
asyncio it goes through asyncio's subprocess, so its child watcher);
``asyncio.create_subprocess_exec`` + ``communicate()`` with the default
watcher (``ThreadedChildWatcher``, a thread per child, on 3.8-3.11); and
``trio.run_process(capture_stdout=True, capture_stderr=True)``. The floor:
``os.posix_spawn`` with two pipes of its own, each read to end of file with
``anyio.wait_readable`` + ``os.read``, and ``AsyncPidFd.wait()``.

As in W2, two kinds of worker process run this module:

* ``timing``: one fresh interpreter per repetition and backend runs every
  peer of that backend (rotated order), so each ratio compares figures from
  one process and one repetition. Wall time is ``perf_counter`` around the
  event loop run; parent CPU is ``getrusage(RUSAGE_SELF)`` (every thread of
  ours, no child). Nothing is sampled inside the timed region.
* ``threads``: one fresh interpreter per peer, so idle threads one peer
  leaves behind are not counted against another. A task counts OS threads
  (``/proc/self/task``) at every turn of the event loop while the N
  children run.
"""

from __future__ import annotations

import asyncio
import gc
import os
import resource
import subprocess
import time
from collections.abc import Callable
from typing import Any

import _util
import anyio
import trio
import w2_fanin

import pidfd
from pidfd import AsyncPidFd, PidFd

OURS = "ours pidfd.run_process"
FLOOR = "floor: posix_spawn+pipes+AsyncPidFd"
ANYIO = "anyio.run_process"
ASYNCIO = "asyncio.create_subprocess_exec+communicate"
TRIO = "trio.run_process"

ARGV = [_util.TRUE]


# --- one child, per peer ------------------------------------------------------


async def _ours() -> None:
    await pidfd.run_process(ARGV)


async def _anyio() -> None:
    await anyio.run_process(ARGV)


async def _asyncio() -> None:
    proc = await asyncio.create_subprocess_exec(
        *ARGV, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    _util.track(proc.pid)
    await proc.communicate()
    _util.reaped(proc.pid)


async def _trio() -> None:
    await trio.run_process(ARGV, capture_stdout=True, capture_stderr=True)


async def _drain(fd: int) -> None:
    try:
        while True:
            try:
                if not os.read(fd, 65536):
                    return
            except BlockingIOError:
                await anyio.wait_readable(fd)
    finally:
        os.close(fd)


async def _floor() -> None:
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        actions = [(os.POSIX_SPAWN_DUP2, out_w, 1), (os.POSIX_SPAWN_DUP2, err_w, 2)]
        pid = _util.spawn(ARGV, actions)
    finally:
        os.close(out_w)
        os.close(err_w)
    os.set_blocking(out_r, False)
    os.set_blocking(err_r, False)
    handle = AsyncPidFd(PidFd.from_pid(pid))
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_drain, out_r)
            tg.start_soon(_drain, err_r)
            await handle.wait()
    finally:
        handle.close()
    _util.reaped(pid)


def peers(backend: str) -> dict[str, tuple[Callable[[], None] | None, Callable[[], Any]]]:
    """name -> (setup run before the event loop starts, coroutine for one child)."""

    def default() -> None:
        # anyio on asyncio goes through asyncio's subprocess: the same watcher.
        w2_fanin._use_watcher(w2_fanin.DEFAULT_WATCHER)

    table: dict[str, tuple[Callable[[], None] | None, Callable[[], Any]]] = {OURS: (None, _ours)}
    if backend == "asyncio":
        table[ANYIO] = (default, _anyio)
        table[ASYNCIO] = (default, _asyncio)
    else:
        table[ANYIO] = (None, _anyio)
        table[TRIO] = (None, _trio)
    table[FLOOR] = (None, _floor)
    return table


def rivals(backend: str) -> list[str]:
    return [p for p in peers(backend) if p not in (OURS, FLOOR)]


# --- running N at once ------------------------------------------------------------


async def _all(one: Callable[[], Any], n: int) -> None:
    async with anyio.create_task_group() as tg:
        for _ in range(n):
            tg.start_soon(one)


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _once(
    backend: str, setup: Callable[[], None] | None, one: Callable[[], Any], n: int
) -> tuple[float, float]:
    if setup is not None:
        setup()
    gc.collect()
    cpu0, t0 = _cpu(), time.perf_counter()
    anyio.run(_all, one, n, backend=backend)
    return time.perf_counter() - t0, _cpu() - cpu0


def run_timing(cfg: dict) -> dict:
    backend, sizes, rot = cfg["backend"], cfg["sizes"], cfg["rotation"]
    _util.raise_nofile(8 * max(sizes) + 1024)
    table = peers(backend)
    out: dict[str, dict[str, dict[str, float]]] = {}
    try:
        for setup, one in table.values():
            _once(backend, setup, one, 20)  # warm-up: imports, watchers
        for n in sizes:
            res = {}
            for name in _util.rotate(list(table), rot):
                setup, one = table[name]
                wall, cpu = _once(backend, setup, one, n)
                res[name] = {"seconds": wall, "cpu_us_per_child": cpu / n * 1e6}
            out[str(n)] = res
    finally:
        _util.kill_and_reap_all()
    return out


def run_threads(cfg: dict) -> dict:
    backend, peer, n = cfg["backend"], cfg["peer"], cfg["n"]
    _util.raise_nofile(8 * n + 1024)
    setup, one = peers(backend)[peer]
    peak = [_util.threads()]
    done = [0]

    async def counted() -> None:
        await one()
        done[0] += 1

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for _ in range(n):
                tg.start_soon(counted)
            while done[0] < n:
                peak[0] = max(peak[0], _util.threads())
                await anyio.sleep(0)

    try:
        _once(backend, setup, one, 20)
        if setup is not None:
            setup()
        anyio.run(main, backend=backend)
    finally:
        _util.kill_and_reap_all()
    return {"peak_threads": peak[0]}
