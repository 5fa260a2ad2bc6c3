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

Targets (issue 18), per backend: ours <= 1.0x the fastest rival in wall
time and <= 0.8x in parent CPU per child, at every N, with one OS thread.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Callable
from typing import Any

import _util
import anyio
import trio
import w2_fanin

import pidfd
from pidfd import AsyncPidFd, PidFd

SIZES = {
    "default": {"sizes": [200, 2000], "reps": 3, "threads_n": 2000, "threads_of": "all"},
    "quick": {"sizes": [20, 50], "reps": 1, "threads_n": 50, "threads_of": "ours"},
}
BACKENDS = _util.BACKENDS
# Ours against the fastest rival of the same repetition.
WALL_TARGET = 1.0
CPU_TARGET = 0.8

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
    pid, ends = _util.spawn_piped(ARGV, (1, 2))
    out_r, err_r = ends[1], ends[2]
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


def rivals_of(backend: str) -> list[str]:
    return [p for p in peers(backend) if p not in (OURS, FLOOR)]


# --- running N at once ------------------------------------------------------------


def _once(
    backend: str, setup: Callable[[], None] | None, one: Callable[[], Any], n: int
) -> tuple[float, float]:
    return _util.run_at_once(backend, setup, one, n)


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


WORKERS = {"timing": run_timing, "threads": run_threads}


# --- parent side: collect, analyse, targets, report ---------------------------------

S = _util.summary


def collect(cfg: dict, work: Callable[[str, dict], Any], stage: Callable[[str], None]) -> dict:
    stage(f"W6: async run_process with pipes, N={cfg['sizes']}, timing ...")
    peer_names = {b: list(peers(b)) for b in BACKENDS}
    timing: dict[str, list] = {b: [] for b in BACKENDS}
    for rep in range(cfg["reps"]):
        for backend in BACKENDS:
            timing[backend].append(
                work("timing", {"backend": backend, "sizes": cfg["sizes"], "rotation": rep})
            )
    stage(f"W6: peak threads, N={cfg['threads_n']} ...")
    # One fresh interpreter per peer (--quick: ours only, to stay quick).
    threads = {
        b: {
            p: work("threads", {"backend": b, "peer": p, "n": cfg["threads_n"]})["peak_threads"]
            if cfg["threads_of"] == "all" or p == OURS
            else None
            for p in peer_names[b]
        }
        for b in BACKENDS
    }
    return {
        "sizes": cfg["sizes"],
        "threads_n": cfg["threads_n"],
        "peers": peer_names,
        "timing": timing,
        "threads": threads,
    }


def _analyse_n(raw: dict, backend: str, n: str) -> dict:
    runs = [t[n] for t in raw["timing"][backend]]
    rivals = rivals_of(backend)

    def ratios(peer: str, key: str) -> dict[str, dict]:
        return {
            "fastest": S([r[peer][key] / min(r[p][key] for p in rivals) for r in runs]),
            "floor": S([r[peer][key] / r[FLOOR][key] for r in runs]),
        }

    out = {}
    for peer in raw["peers"][backend]:
        wall, cpu = ratios(peer, "seconds"), ratios(peer, "cpu_us_per_child")
        out[peer] = {
            "seconds": S([r[peer]["seconds"] for r in runs]),
            "cpu_us_per_child": S([r[peer]["cpu_us_per_child"] for r in runs]),
            "wall_to_fastest_peer": wall["fastest"],
            "cpu_to_fastest_peer": cpu["fastest"],
            "wall_to_floor": wall["floor"],
            "cpu_to_floor": cpu["floor"],
            "peak_threads": raw["threads"][backend][peer],
        }
    return out


def analyse(raw: dict) -> dict:
    a: dict[str, Any] = {
        "sizes": raw["sizes"],
        "threads_n": raw["threads_n"],
        "ours": OURS,
        "floor": FLOOR,
    }
    for backend in BACKENDS:
        by_n = {n: _analyse_n(raw, backend, n) for n in map(str, raw["sizes"])}
        a[backend] = {"rivals": rivals_of(backend), "by_n": by_n}
    return a


def targets(a: dict, add: Callable[[str, bool, str], None]) -> None:
    for backend in BACKENDS:
        b = a[backend]
        for key, what, bound in (
            ("wall_to_fastest_peer", "wall", WALL_TARGET),
            ("cpu_to_fastest_peer", "parent CPU", CPU_TARGET),
        ):
            ratios = {n: b["by_n"][str(n)][OURS][key]["median"] for n in a["sizes"]}
            add(
                f"W6 {backend}: ours <= {bound}x the fastest of {', '.join(b['rivals'])} ({what})",
                all(r <= bound for r in ratios.values()),
                ", ".join(f"N={n}: {r:.3f}x" for n, r in ratios.items()),
            )
        thr = b["by_n"][str(a["sizes"][-1])][OURS]["peak_threads"]
        add(
            f"W6 {backend}: ours uses one OS thread ({a['threads_n']} at once)",
            thr == 1,
            f"peak threads {thr}",
        )


def report(a: dict, L: list[str]) -> None:
    for backend in BACKENDS:
        b = a[backend]
        L.append(
            f"### W6: N concurrent `run_process(['/bin/true'])`, stdout+stderr captured, "
            f"on {backend} (x fastest: ratio to the fastest of {', '.join(b['rivals'])} "
            f"in the same repetition)"
        )
        L.append("")
        heads = ["peer", "N", "wall s", "x fastest", "x floor", "parent CPU µs/child"]
        heads += ["x fastest", "x floor", f"peak threads (N={a['threads_n']})"]
        cols = [("seconds", ".3f"), ("wall_to_fastest_peer", ".2f"), ("wall_to_floor", ".2f")]
        cols += [("cpu_us_per_child", ".0f"), ("cpu_to_fastest_peer", ".2f")]
        cols += [("cpu_to_floor", ".2f")]
        rows = (
            [peer, str(n), *_util.cells(m, cols), "-" if thr is None else str(thr)]
            for peer in b["by_n"][str(a["sizes"][0])]
            for n in a["sizes"]
            for m in [b["by_n"][str(n)][peer]]
            for thr in [m["peak_threads"]]
        )
        _util.table(L, heads, rows)
