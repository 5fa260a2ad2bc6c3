"""W1: the cost of one synchronous reap of a child that has already exited.

Each repetition spawns a batch of ``/bin/true`` children per method, waits
until every one of them is a zombie (checked with ``waitid(WNOWAIT)``, which
does not reap), and only then times reaping the whole batch with
``perf_counter_ns``. Spawning is never inside the timed region. Methods run
in a rotated order each repetition, and each repetition's figures are turned
into ratios to ``os.waitpid`` from that same repetition.

Target: ours (open, wait, close, status and rusage read) <= the stdlib
triple ``pidfd_open`` + ``waitid`` + ``close``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import _util
import psutil

from pidfd import PidFd


def _waitpid(pids: list[int]) -> None:
    for pid in pids:
        os.waitpid(pid, 0)


def _wait4(pids: list[int]) -> None:
    for pid in pids:
        os.wait4(pid, 0)


def _stdlib_pidfd(pids: list[int]) -> None:
    for pid in pids:
        fd = os.pidfd_open(pid)
        os.waitid(os.P_PIDFD, fd, os.WEXITED)
        os.close(fd)


def _psutil(pids: list[int]) -> None:
    for pid in pids:
        psutil.Process(pid).wait()


def _ours(pids: list[int]) -> None:
    for pid in pids:
        handle = PidFd.from_pid(pid)
        handle.wait()
        handle.close()


def _ours_full(pids: list[int]) -> None:
    for pid in pids:
        handle = PidFd.from_pid(pid)
        info = handle.wait()
        handle.close()
        info.status  # noqa: B018 - reading them is the point
        info.rusage  # noqa: B018


SIZES = {"default": {"batch": 200, "reps": 15}, "quick": {"batch": 50, "reps": 5}}

BASELINE = "os.waitpid"
METHODS: dict[str, Callable[[list[int]], None]] = {
    BASELINE: _waitpid,
    "os.wait4": _wait4,
    "stdlib pidfd_open+waitid+close": _stdlib_pidfd,
    "psutil.Process.wait": _psutil,
    "ours PidFd wait+close": _ours,
    "ours PidFd wait+close, status+rusage read": _ours_full,
}


def run(cfg: dict) -> dict:
    batch, reps = cfg["batch"], cfg["reps"]
    names = list(METHODS)
    per_reap: dict[str, list[float]] = {n: [] for n in names}
    ratio: dict[str, list[float]] = {n: [] for n in names}
    try:
        # One untimed round so every code path is warm.
        for fn in METHODS.values():
            pids = [_util.spawn([_util.TRUE]) for _ in range(10)]
            _util.wait_zombies(pids)
            fn(pids)
            for pid in pids:
                _util.reaped(pid)
        for rep in range(reps):
            this: dict[str, float] = {}
            for name in _util.rotate(names, rep):
                pids = [_util.spawn([_util.TRUE]) for _ in range(batch)]
                _util.wait_zombies(pids)
                fn = METHODS[name]
                t0 = time.perf_counter_ns()
                fn(pids)
                elapsed = time.perf_counter_ns() - t0
                for pid in pids:
                    _util.reaped(pid)
                this[name] = elapsed / batch
            for name in names:
                per_reap[name].append(this[name])
                ratio[name].append(this[name] / this[BASELINE])
    finally:
        _util.kill_and_reap_all()
    return {
        "batch": batch,
        "reps": reps,
        "baseline": BASELINE,
        "methods": {
            n: {"ns_per_reap": _util.summary(per_reap[n]), "ratio": _util.summary(ratio[n])}
            for n in names
        },
        # Per-repetition ratio of ours (full) to the stdlib triple, for the target.
        "ours_full_vs_stdlib": _util.summary(
            [
                a / b
                for a, b in zip(
                    per_reap["ours PidFd wait+close, status+rusage read"],
                    per_reap["stdlib pidfd_open+waitid+close"],
                    strict=True,
                )
            ]
        ),
    }


WORKERS = {"run": run}


# --- parent side: collect, analyse, targets, report, plot --------------------------


def collect(cfg: dict, work: Callable[[str, dict], Any], stage: Callable[[str], None]) -> dict:
    stage("W1: sync reap of an exited child ...")
    return work("run", cfg)  # type: ignore[no-any-return]


def analyse(raw: dict) -> dict:
    return raw


def targets(a: dict, add: Callable[[str, bool, str], None]) -> None:
    r = a["ours_full_vs_stdlib"]
    add(
        "W1 ours (open+wait+close, status+rusage read) <= stdlib pidfd_open+waitid+close",
        r["median"] <= 1.0,
        f"ratio {r['median']:.3f} (min {r['min']:.3f}, max {r['max']:.3f})",
    )


def report(a: dict, L: list[str]) -> None:
    fmt = _util.fmt
    L.append(
        f"### W1: one sync reap of an exited child "
        f"(batches of {a['batch']}, {a['reps']} repetitions)"
    )
    L.append("")
    _util.table(
        L,
        ["method", "ns per reap", "x os.waitpid"],
        ([name, fmt(m["ns_per_reap"], ".0f"), fmt(m["ratio"])] for name, m in a["methods"].items()),
    )


PANELS = 1


def plot(axes: list, a: dict) -> None:
    ax = axes[0]
    _util.hbars(
        ax,
        list(a["methods"]),
        [m["ratio"] for m in a["methods"].values()],
        "x os.waitpid (same repetition), log scale; label: ns per reap",
        "W1: one sync reap of an exited child",
        ref=1.0,
    )
    ax.set_xscale("log")
    ax.set_xlim(0.5, 200)
    for i, m in enumerate(a["methods"].values()):
        ax.text(
            m["ratio"]["max"] * 1.1,
            i,
            f"{m['ns_per_reap']['median']:.0f} ns",
            va="center",
            fontsize=8,
        )
