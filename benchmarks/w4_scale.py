"""W4: scale. Hold N sleeping children with one async waiter each, measure
threads, RSS growth and fds while holding, then SIGKILL them all and time
until every one has been reaped.

Each (backend, peer) repetition is a fresh interpreter: RSS is compared
between processes that did nothing else, floor and ours alternating.

Targets, per backend: no thread per child (ours threads <= floor threads)
and ours RSS <= floor RSS + 5 MiB.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import Any

import _util
import anyio

from pidfd import AsyncPidFd

SIZES = {"default": {"n": 5000, "reps": 3}, "quick": {"n": 300, "reps": 1}}
BACKENDS = _util.BACKENDS

# A bound on how long a child could outlive a benchmark that was killed
# without a chance to clean up (SIGKILL of the whole run).
SLEEP_SECONDS = "300"


async def _floor(pid: int, parked: list[int]) -> None:
    fd = os.pidfd_open(pid)
    try:
        parked[0] += 1
        while os.waitid(os.P_PIDFD, fd, os.WEXITED | os.WNOHANG) is None:
            await anyio.wait_readable(fd)
    finally:
        os.close(fd)
    _util.reaped(pid)


async def _ours(pid: int, parked: list[int]) -> None:
    handle = AsyncPidFd.from_pid(pid)
    try:
        parked[0] += 1
        await handle.wait()
    finally:
        handle.close()
    _util.reaped(pid)


PEERS = {"floor": _floor, "ours": _ours}


async def _hold_and_kill(holder, n: int, base: dict[str, int], out: dict) -> None:
    pids = [_util.spawn([_util.SLEEP, SLEEP_SECONDS]) for _ in range(n)]
    parked = [0]
    async with anyio.create_task_group() as tg:
        for pid in pids:
            tg.start_soon(holder, pid, parked)
        while parked[0] < n:
            await anyio.sleep(0.01)
        await anyio.sleep(0.1)  # let the last ones reach their await
        out["threads"] = _util.threads()
        out["fds_growth"] = _util.fds() - base["fds"]
        out["rss_growth_kib"] = _util.rss_kib() - base["rss"]
        t0 = time.perf_counter()
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
    out["kill_to_reaped_s"] = time.perf_counter() - t0


def run(cfg: dict) -> dict:
    backend, peer, n = cfg["backend"], cfg["peer"], cfg["n"]
    holder = PEERS[peer]
    _util.check_nproc(n, "--w4-n")
    limit = _util.raise_nofile(n + 256)
    if limit < n + 64:
        raise RuntimeError(f"RLIMIT_NOFILE allows only {limit} fds; lower --w4-n below {n}")
    return _util.held_run(backend, _hold_and_kill, holder, n)


WORKERS = {"run": run}


# --- parent side: collect, analyse, targets, report, plot --------------------------

S = _util.summary


def collect(cfg: dict, work: Callable[[str, dict], Any], stage: Callable[[str], None]) -> dict:
    n = cfg["n"]
    stage(f"W4: scale, {n} children ...")
    return {"n": n, "runs": _util.fresh_runs(cfg, PEERS, work)}


def analyse(raw: dict) -> dict:
    a: dict[str, Any] = {"n": raw["n"]}
    for backend in BACKENDS:
        runs = raw["runs"][backend]
        a[backend] = {
            peer: {
                "threads": S([r["threads"] for r in runs[peer]]),
                "fds_growth": S([r["fds_growth"] for r in runs[peer]]),
                "rss_growth_mib": S([r["rss_growth_kib"] / 1024 for r in runs[peer]]),
                "kill_to_reaped_s": S([r["kill_to_reaped_s"] for r in runs[peer]]),
            }
            for peer in PEERS
        }
        pairs = list(zip(runs["ours"], runs["floor"], strict=True))
        a[backend]["ours_minus_floor_rss_mib"] = S(
            [(o["rss_growth_kib"] - f["rss_growth_kib"]) / 1024 for o, f in pairs]
        )
        a[backend]["ours_to_floor_reap_time"] = S(
            [o["kill_to_reaped_s"] / f["kill_to_reaped_s"] for o, f in pairs]
        )
    return a


def targets(a: dict, add: Callable[[str, bool, str], None]) -> None:
    for backend in BACKENDS:
        b = a[backend]
        thr, floor_thr = b["ours"]["threads"]["max"], b["floor"]["threads"]["max"]
        add(
            f"W4 {backend}: no thread per child (ours threads <= floor threads)",
            thr <= floor_thr,
            f"ours {thr}, floor {floor_thr}",
        )
        d = b["ours_minus_floor_rss_mib"]
        add(
            f"W4 {backend}: ours RSS <= floor RSS + 5 MiB ({a['n']} children)",
            d["median"] <= 5,
            f"ours - floor = {d['median']:+.2f} MiB (min {d['min']:+.2f}, max {d['max']:+.2f})",
        )


def report(a: dict, L: list[str]) -> None:
    L.append(f"### W4: {a['n']} children, one async waiter each, then all SIGKILLed")
    L.append("")
    heads = ["backend", "waiter", "threads", "fds growth", "RSS growth MiB", "kill → all reaped s"]
    cols = [("threads", ".0f"), ("fds_growth", ".0f"), ("rss_growth_mib", ".1f")]
    cols += [("kill_to_reaped_s", ".3f")]
    rows = ([b, p, *_util.cells(a[b][p], cols)] for b in BACKENDS for p in PEERS)
    _util.table(L, heads, rows, text=2)


PANELS = 1


def plot(axes: list, a: dict) -> None:
    ax = axes[0]
    cells = [(b, p) for b in BACKENDS for p in PEERS]
    _util.hbars(
        ax,
        [f"{b}: {p}" for b, p in cells],
        [a[b][p]["rss_growth_mib"] for b, p in cells],
        "RSS growth while holding, MiB (label: kill → all reaped)",
        f"W4: {a['n']} children held, then killed",
    )
    for i, (b, p) in enumerate(cells):
        ax.text(
            a[b][p]["rss_growth_mib"]["median"],
            i,
            f"  {a[b][p]['kill_to_reaped_s']['median']:.2f} s, "
            f"{a[b][p]['threads']['max']:.0f} thread(s)",
            va="center",
            fontsize=8,
        )
