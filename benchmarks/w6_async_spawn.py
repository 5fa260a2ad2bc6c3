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
import shutil
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
    return _util.time_peers(
        peers(backend),
        sizes,
        order=lambda names: _util.rotate(names, rot),
        once=lambda setup, one, n: _once(backend, setup, one, n),
    )


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


# --- W6b, scale: N processes with pipes open at once ------------------------------------
#
# ``run_scale`` (W6b): one fresh interpreter per (backend, peer, repetition), as in
# W4. N ``cat`` children are started, each with its stdin and stdout on pipes
# (stderr inherited), and all N are held open and alive at once on the one
# event loop: each ``cat`` blocks reading its stdin. Then threads, open fds and
# RSS are read (growth against the same interpreter before the run, after a
# warm-up of 20), every child is released: a payload written to its stdin,
# stdin closed, stdout read to end of file and checked, the child waited. A
# task counts OS threads at every turn of the event loop for the whole run;
# VmHWM gives the peak RSS. ``cat`` needs no time bound (W4's ``sleep 300``):
# should this process die, its stdin pipes close and every ``cat`` exits.
#
# Peers: ours ``pidfd.open_process(..., stdin=PIPE, stdout=PIPE)`` with its
# streams; the floor ``os.posix_spawn`` + two ``os.pipe`` + ``AsyncPidFd``
# with ``anyio.wait_readable``/``wait_writable`` on the raw fds.

SCALE_PEERS = ("floor", "ours")
PAYLOAD = b"ping\n"
CAT = shutil.which("cat") or "/bin/cat"
# fds per child: the pidfd and two pipe ends held, two more for a moment.
FDS_PER_CHILD = 3


class _Scale:
    """What the N tasks share: how many are open, the release, the results."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.opened = 0
        self.done = 0
        self.release = anyio.Event()
        self.bad: list[str] = []

    def check(self, pid: int, output: bytes, code: int) -> None:
        _util.reaped(pid)
        self.done += 1
        if output != PAYLOAD or code != 0:
            self.bad.append(f"pid {pid}: output {output!r}, exit {code}")


async def _scale_ours(s: _Scale) -> None:
    proc = await pidfd.open_process(
        [CAT], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None
    )
    _util.track(proc.pid)
    async with proc:  # on any failure: streams closed, the child killed and reaped
        assert proc.stdin is not None and proc.stdout is not None
        s.opened += 1
        await s.release.wait()
        await proc.stdin.send(PAYLOAD)
        await proc.stdin.aclose()
        output = b""
        async for chunk in proc.stdout:
            output += chunk
        code = await proc.wait()
    s.check(proc.pid, output, code)


async def _scale_floor(s: _Scale) -> None:
    in_r, in_w = os.pipe()
    try:
        out_r, out_w = os.pipe()
    except BaseException:
        os.close(in_r)
        os.close(in_w)
        raise
    try:
        actions = [(os.POSIX_SPAWN_DUP2, in_r, 0), (os.POSIX_SPAWN_DUP2, out_w, 1)]
        pid = _util.spawn([CAT], actions)
    except BaseException:
        os.close(in_w)
        os.close(out_r)
        raise
    finally:
        os.close(in_r)
        os.close(out_w)
    os.set_blocking(in_w, False)
    os.set_blocking(out_r, False)
    handle = AsyncPidFd(PidFd.from_pid(pid))
    try:
        s.opened += 1
        await s.release.wait()
        view = memoryview(PAYLOAD)
        while view:
            try:
                view = view[os.write(in_w, view) :]
            except BlockingIOError:
                await anyio.wait_writable(in_w)
        os.close(in_w)
        in_w = -1
        output = b""
        while True:
            try:
                chunk = os.read(out_r, 65536)
            except BlockingIOError:
                await anyio.wait_readable(out_r)
                continue
            if not chunk:
                break
            output += chunk
        info = await handle.wait()
    finally:
        if in_w >= 0:
            os.close(in_w)
        os.close(out_r)
        handle.close()  # a child still running here is killed by kill_and_reap_all
    s.check(pid, output, info.status.returncode)


async def _scale(one: Callable[[_Scale], Any], n: int, base: dict[str, int], out: dict) -> None:
    s = _Scale(n)
    peak = [_util.threads()]
    t0 = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(n):
            tg.start_soon(one, s)
        while s.opened < n:
            peak[0] = max(peak[0], _util.threads())
            await anyio.sleep(0)
        out["open_all_s"] = time.perf_counter() - t0
        await anyio.sleep(0.1)  # let the last ones reach their await
        out["alive_at_hold"] = sum(1 for pid in _util.LIVE if _alive(pid))
        out["threads_at_hold"] = _util.threads()
        out["fds_growth"] = _util.fds() - base["fds"]
        out["rss_growth_kib"] = _util.rss_kib() - base["rss"]
        t1 = time.perf_counter()
        s.release.set()
        while s.done < n:
            peak[0] = max(peak[0], _util.threads())
            await anyio.sleep(0)
    out["release_to_reaped_s"] = time.perf_counter() - t1
    out["peak_threads"] = peak[0]
    out["peak_rss_growth_kib"] = _util.peak_rss_kib() - base["rss"]
    if s.bad:
        raise RuntimeError(f"{len(s.bad)} of {n} children went wrong, e.g. {s.bad[0]}")


def _alive(pid: int) -> bool:
    """The child has not exited (it is neither gone nor a zombie)."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None


def run_scale(cfg: dict) -> dict:
    backend, peer, n = cfg["backend"], cfg["peer"], cfg["n"]
    one = {"floor": _scale_floor, "ours": _scale_ours}[peer]
    nproc, _ = resource.getrlimit(resource.RLIMIT_NPROC)
    if nproc != resource.RLIM_INFINITY and nproc < n + 256:
        raise RuntimeError(
            f"RLIMIT_NPROC (ulimit -u) is {nproc}: too low for {n} children at once; "
            f"raise it or pass a smaller --w6b-n"
        )
    want = (FDS_PER_CHILD + 1) * n + 256
    limit = _util.raise_nofile(want)
    if limit < FDS_PER_CHILD * n + 128:
        raise RuntimeError(
            f"RLIMIT_NOFILE allows only {limit} fds, {FDS_PER_CHILD} a child are needed: "
            f"raise the hard limit (ulimit -Hn) or pass a smaller --w6b-n than {n}"
        )
    try:
        anyio.run(
            _scale, one, 20, {"fds": _util.fds(), "rss": _util.rss_kib()}, {}, backend=backend
        )
        gc.collect()
        _util.reset_peak_rss()
        base = {"fds": _util.fds(), "rss": _util.rss_kib()}
        out: dict = {"n": n}
        anyio.run(_scale, one, n, base, out, backend=backend)
        return out
    finally:
        _util.kill_and_reap_all()
