"""W3: wake-up latency, from a child's last moment to its waiter holding the status.

The child (``python -S -I``) sleeps briefly so that the waiter is parked,
writes ``clock_gettime_ns(CLOCK_MONOTONIC)`` to a pipe and calls
``os._exit``. The waiter stamps the same clock as soon as its wait returns
the status; the difference is the latency (it includes the kernel's exit
path, the same for every peer). Each round runs every peer once, in a
rotated order, each async peer in its own short event loop, so drift in the
machine's load spreads over all peers alike.

Non-child: an intermediate process starts the grandchild, reaps it when it
exits and lives on a little, as a supervisor would; we wait on the
grandchild with ``PidFd.wait_exit`` or ``psutil.Process.wait``. Both can
only learn the exit once that parent has reaped it, so its wake-up is part
of their latency. (Were the parent to exit at once after reaping, its own
exit would compete for the CPU and blur the figure.)

Targets: ours p50 <= 1.1x the floor (sync, asyncio, trio) and the non-child
wait <= 1.1x the child wait, each on the median of per-round ratios.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import _util
import anyio
import psutil
import trio
import w2_fanin

from pidfd import AsyncPidFd, PidFd

SIZES = {"default": {"rounds": 60, "chunks": 3}, "quick": {"rounds": 9, "chunks": 3}}

CHILD = (
    "import os, time\n"
    "{gate}"
    "time.sleep({delay})\n"
    "os.write(1, b'%d' % time.clock_gettime_ns(time.CLOCK_MONOTONIC))\n"
    "os._exit(0)\n"
)
INTERMEDIATE = (
    "import os, sys, time\n"
    "argv = [sys.executable, '-S', '-I', '-c', sys.argv[1]]\n"
    "pid = os.posix_spawn(sys.executable, argv, os.environ,\n"
    "                     file_actions=[(os.POSIX_SPAWN_DUP2, 3, 1),\n"
    "                                   (os.POSIX_SPAWN_DUP2, 4, 0)])\n"
    "os.write(1, b'%d' % pid)\n"
    "os.close(1)\n"
    "os.waitpid(pid, 0)\n"
    "time.sleep(0.05)\n"
    "os._exit(0)\n"
)


def _now() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def _argv(delay: float = 0.005) -> list[str]:
    return [sys.executable, "-S", "-I", "-c", CHILD.format(gate="", delay=delay)]


def _spawn_to(w: int) -> int:
    return _util.spawn(_argv(), [(os.POSIX_SPAWN_DUP2, w, 1)])


# --- sync peers: fn(w) -> wake stamp -----------------------------------------


def _blocking_waitid(w: int) -> int:
    pid = _spawn_to(w)
    os.waitid(os.P_PID, pid, os.WEXITED)
    t = _now()
    _util.reaped(pid)
    return t


def _ours_sync(w: int) -> int:
    pid = _spawn_to(w)
    with PidFd.from_pid(pid) as handle:
        handle.wait()
        t = _now()
    _util.reaped(pid)
    return t


# --- async peers: await fn(w) -> wake stamp -----------------------------------


async def _floor(w: int) -> int:
    pid = _spawn_to(w)
    fd = os.pidfd_open(pid)
    try:
        while os.waitid(os.P_PIDFD, fd, os.WEXITED | os.WNOHANG) is None:
            await anyio.wait_readable(fd)
        t = _now()
    finally:
        os.close(fd)
    _util.reaped(pid)
    return t


async def _ours_async(w: int) -> int:
    pid = _spawn_to(w)
    handle = AsyncPidFd.from_pid(pid)
    try:
        await handle.wait()
        t = _now()
    finally:
        handle.close()
    _util.reaped(pid)
    return t


async def _asyncio_exec(w: int) -> int:
    argv = _argv()
    proc = await asyncio.create_subprocess_exec(*argv, stdout=w)
    _util.track(proc.pid)
    await proc.wait()
    t = _now()
    _util.reaped(proc.pid)
    return t


async def _anyio_open(w: int) -> int:
    proc = await anyio.open_process(_argv(), stdin=None, stdout=w, stderr=None)
    _util.track(proc.pid)
    try:
        await proc.wait()
        t = _now()
    finally:
        await proc.aclose()
    _util.reaped(proc.pid)
    return t


async def _trio_open(w: int) -> int:
    proc = await trio.lowlevel.open_process(_argv(), stdout=w)
    _util.track(proc.pid)
    await proc.wait()
    t = _now()
    _util.reaped(proc.pid)
    return t


# name -> (backend or None for sync, watcher setup, fn)
Peer = tuple[Any, Any, Callable[..., Any]]


def child_peers() -> dict[str, Peer]:
    table: dict[str, Peer] = {
        "blocking os.waitid": (None, None, _blocking_waitid),
        "ours sync PidFd.wait": (None, None, _ours_sync),
    }
    default = w2_fanin.DEFAULT_WATCHER
    use = w2_fanin._use_watcher
    table["asyncio: " + w2_fanin.default_label()] = ("asyncio", lambda: use(default), _asyncio_exec)
    if w2_fanin._watcher_api() and default is not asyncio.PidfdChildWatcher:
        table["asyncio: asyncio subprocess, PidfdChildWatcher"] = (
            "asyncio",
            lambda: use(asyncio.PidfdChildWatcher),
            _asyncio_exec,
        )
    table["asyncio: anyio.open_process"] = ("asyncio", lambda: use(default), _anyio_open)
    table["asyncio: floor"] = ("asyncio", None, _floor)
    table["asyncio: ours AsyncPidFd.wait"] = ("asyncio", None, _ours_async)
    table["trio: trio.lowlevel.open_process"] = ("trio", None, _trio_open)
    table["trio: anyio.open_process"] = ("trio", None, _anyio_open)
    table["trio: floor"] = ("trio", None, _floor)
    table["trio: ours AsyncPidFd.wait"] = ("trio", None, _ours_async)
    return table


def _child_sample(peer: Peer) -> float:
    backend, setup, fn = peer
    r, w = os.pipe()
    try:
        if backend is None:
            wake = fn(w)
        else:
            if setup is not None:
                setup()
            wake = anyio.run(fn, w, backend=backend)
        os.close(w)
        w = -1
        stamp = int(os.read(r, 64))
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
    return (wake - stamp) / 1000.0  # microseconds


# --- non-child peers ----------------------------------------------------------


# Each opens its handle, then lets the grandchild go on, then waits.
def _nonchild_ours(pid: int, go: Callable[[], None]) -> None:
    with PidFd.from_pid(pid) as handle:
        go()
        handle.wait_exit()


def _nonchild_psutil(pid: int, go: Callable[[], None]) -> None:
    proc = psutil.Process(pid)
    go()
    proc.wait()


NONCHILD: dict[str, Callable[[int, Callable[[], None]], None]] = {
    "non-child: ours PidFd.wait_exit": _nonchild_ours,
    "non-child: psutil.Process.wait": _nonchild_psutil,
}


def _nonchild_sample(fn: Callable[[int, Callable[[], None]], None]) -> float:
    stamp_r, stamp_w = os.pipe()
    pid_r, pid_w = os.pipe()
    # The grandchild blocks reading this pipe until our handle is open, so it
    # cannot exit (and be reaped) before we look at it.
    go_r, go_w = os.pipe()
    try:
        child = CHILD.format(gate="os.read(0, 1)\n", delay=0.005)
        argv = [sys.executable, "-S", "-I", "-c", INTERMEDIATE, child]
        inter = _util.spawn(
            argv,
            [
                (os.POSIX_SPAWN_DUP2, stamp_w, 3),
                (os.POSIX_SPAWN_DUP2, pid_w, 1),
                (os.POSIX_SPAWN_DUP2, go_r, 4),
            ],
        )
        os.close(pid_w)
        pid_w = -1
        grandchild = int(os.read(pid_r, 64))
        _util.track(grandchild)
        fn(grandchild, lambda: os.write(go_w, b"g"))
        wake = _now()
        _util.reaped(grandchild)
        os.close(stamp_w)
        stamp_w = -1
        stamp = int(os.read(stamp_r, 64))
        os.waitpid(inter, 0)
        _util.reaped(inter)
    finally:
        for fd in (stamp_r, stamp_w, pid_r, pid_w, go_r, go_w):
            if fd >= 0:
                os.close(fd)
    return (wake - stamp) / 1000.0


def _percentiles(values: list[float], chunks: int) -> dict[str, Any]:
    size = max(1, len(values) // chunks)
    parts = [values[i : i + size] for i in range(0, len(values), size)]
    return {
        "p50": _util.percentile(values, 50),
        "p90": _util.percentile(values, 90),
        "p99": _util.percentile(values, 99),
        "p50_per_chunk": _util.summary([_util.percentile(p, 50) for p in parts]),
        "n": len(values),
    }


# Peers compared in a target run back to back in every round, so that each
# pair of samples sees the same machine load; the order inside a group and
# of the groups changes every round.
GROUPS = [
    [
        "blocking os.waitid",
        "ours sync PidFd.wait",
        "non-child: ours PidFd.wait_exit",
        "non-child: psutil.Process.wait",
    ],
    ["asyncio: floor", "asyncio: ours AsyncPidFd.wait"],
    ["trio: floor", "trio: ours AsyncPidFd.wait"],
]


def _order(names: list[str], rnd: int) -> list[str]:
    grouped = {n for g in GROUPS for n in g}
    slots: list[list[str]] = [_util.rotate(g, rnd) for g in GROUPS]
    slots += [[n] for n in names if n not in grouped]
    return [n for slot in _util.rotate(slots, rnd) for n in slot]


def run(cfg: dict) -> dict:
    rounds, chunks = cfg["rounds"], cfg["chunks"]
    peers = child_peers()
    samples: dict[str, list[float]] = {n: [] for n in [*peers, *NONCHILD]}
    names = list(samples)
    try:
        for name in names:  # warm-up, not recorded
            if name in peers:
                _child_sample(peers[name])
            else:
                _nonchild_sample(NONCHILD[name])
        for rnd in range(rounds):
            for name in _order(names, rnd):
                if name in peers:
                    samples[name].append(_child_sample(peers[name]))
                else:
                    samples[name].append(_nonchild_sample(NONCHILD[name]))
    finally:
        _util.kill_and_reap_all()
    return {
        "unit": "us",
        "rounds": rounds,
        "peers": {n: _percentiles(samples[n], chunks) for n in names},
        # In round order, so that samples of one round can be paired.
        "samples": samples,
    }


WORKERS = {"run": run}


# --- parent side: collect, analyse, targets, report, plot --------------------------


def collect(cfg: dict, work: Callable[[str, dict], Any], stage: Callable[[str], None]) -> dict:
    stage("W3: wake-up latency ...")
    return work("run", cfg)  # type: ignore[no-any-return]


def analyse(raw: dict) -> dict:
    return raw


def targets(a: dict, add: Callable[[str, bool, str], None]) -> None:
    peers, samples = a["peers"], a["samples"]

    def judge(name: str, mine: str, base: str) -> None:
        # Per round: both samples were taken back to back.
        r = _util.summary([x / y for x, y in zip(samples[mine], samples[base], strict=True)])
        add(
            name,
            r["median"] <= 1.1,
            f"{peers[mine]['p50']:.0f} us vs {peers[base]['p50']:.0f} us; median of per-round "
            f"ratios {r['median']:.3f}x (min {r['min']:.2f}, max {r['max']:.2f})",
        )

    judge("W3 sync: ours p50 <= 1.1x floor", "ours sync PidFd.wait", "blocking os.waitid")
    for b in _util.BACKENDS:
        judge(f"W3 {b}: ours p50 <= 1.1x floor", f"{b}: ours AsyncPidFd.wait", f"{b}: floor")
    judge(
        "W3 non-child as fast as child (ours wait_exit <= 1.1x ours wait, per round)",
        "non-child: ours PidFd.wait_exit",
        "ours sync PidFd.wait",
    )


def report(a: dict, L: list[str]) -> None:
    L.append(
        f"### W3: wake-up latency, µs from the child's last stamp to the waiter "
        f"holding the status ({a['rounds']} samples each)"
    )
    L.append("")
    _util.table(
        L,
        ["waiter", "p50", "p90", "p99", "p50 per third of the run"],
        (
            [
                name,
                *(f"{p[q]:.0f}" for q in ("p50", "p90", "p99")),
                _util.fmt(p["p50_per_chunk"], ".0f"),
            ]
            for name, p in a["peers"].items()
        ),
    )


PANELS = 1


def plot(axes: list, a: dict) -> None:
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    peers = a["peers"]
    names = list(peers)
    ax = axes[0]
    _util.hbars(
        ax,
        names,
        [peers[x]["p50_per_chunk"] for x in names],
        "µs (bar: p50 of each third of the run, median and range; dot: p90, cross: p99)",
        "W3: wake-up latency",
    )
    ax.plot([peers[x]["p90"] for x in names], list(range(len(names))), "k.", label="p90")
    ax.plot([peers[x]["p99"] for x in names], list(range(len(names))), "kx", label="p99")
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.set_xlim(200, 2 * max(peers[x]["p99"] for x in names))
