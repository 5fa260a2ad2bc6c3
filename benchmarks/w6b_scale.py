"""W6b, scale: N processes with pipes open at once, on asyncio and on trio.

One fresh interpreter per (backend, peer, repetition), as in
W4. N ``cat`` children are started, each with its stdin and stdout on pipes
(stderr inherited), and all N are held open and alive at once on the one
event loop: each ``cat`` blocks reading its stdin. Then threads, open fds and
RSS are read (growth against the same interpreter before the run, after a
warm-up of 20), every child is released: a payload written to its stdin,
stdin closed, stdout read to end of file and checked, the child waited. A
task counts OS threads at every turn of the event loop for the whole run;
VmHWM gives the peak RSS. ``cat`` needs no time bound (W4's ``sleep 300``):
should this process die, its stdin pipes close and every ``cat`` exits.

Peers: ours ``pidfd.open_process(..., stdin=PIPE, stdout=PIPE)`` with its
streams; the floor ``os.posix_spawn`` + two ``os.pipe`` + ``AsyncPidFd``
with ``anyio.wait_readable``/``wait_writable`` on the raw fds.

Targets, per backend: all N alive at once with ours threads <= floor
threads, and ours RSS <= floor RSS + 5 MiB.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from typing import Any

import _util
import anyio

import pidfd
from pidfd import AsyncPidFd, PidFd

SIZES = {"default": {"n": 5000, "reps": 3}, "quick": {"n": 200, "reps": 1}}
BACKENDS = _util.BACKENDS

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
    pid, ends = _util.spawn_piped([CAT], (0, 1))
    in_w, out_r = ends[0], ends[1]
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


def run(cfg: dict) -> dict:
    backend, peer, n = cfg["backend"], cfg["peer"], cfg["n"]
    one = {"floor": _scale_floor, "ours": _scale_ours}[peer]
    _util.check_nproc(n, "--w6b-n")
    want = (FDS_PER_CHILD + 1) * n + 256
    limit = _util.raise_nofile(want)
    if limit < FDS_PER_CHILD * n + 128:
        raise RuntimeError(
            f"RLIMIT_NOFILE allows only {limit} fds, {FDS_PER_CHILD} a child are needed: "
            f"raise the hard limit (ulimit -Hn) or pass a smaller --w6b-n than {n}"
        )
    return _util.held_run(backend, _scale, one, n)


WORKERS = {"run": run}


# --- parent side: collect, analyse, targets, report ---------------------------------

S = _util.summary


def collect(cfg: dict, work: Callable[[str, dict], Any], stage: Callable[[str], None]) -> dict:
    n = cfg["n"]
    stage(f"W6b: {n} processes with pipes open at once ...")
    return {"n": n, "runs": _util.fresh_runs(cfg, SCALE_PEERS, work)}


def _analyse_backend(runs: dict) -> dict:
    out: dict[str, Any] = {
        peer: {
            "alive_at_hold": S([r["alive_at_hold"] for r in rs]),
            "peak_threads": S([r["peak_threads"] for r in rs]),
            "fds_growth": S([r["fds_growth"] for r in rs]),
            "rss_growth_mib": S([r["rss_growth_kib"] / 1024 for r in rs]),
            "peak_rss_growth_mib": S([r["peak_rss_growth_kib"] / 1024 for r in rs]),
            "open_all_s": S([r["open_all_s"] for r in rs]),
            "release_to_reaped_s": S([r["release_to_reaped_s"] for r in rs]),
        }
        for peer, rs in runs.items()
    }
    # Paired by repetition: floor and ours ran back to back.
    pairs = list(zip(runs["ours"], runs["floor"], strict=True))
    out["ours_minus_floor_rss_mib"] = S(
        [(o["rss_growth_kib"] - f["rss_growth_kib"]) / 1024 for o, f in pairs]
    )
    out["ours_minus_floor_peak_rss_mib"] = S(
        [(o["peak_rss_growth_kib"] - f["peak_rss_growth_kib"]) / 1024 for o, f in pairs]
    )
    return out


def analyse(raw: dict) -> dict:
    return {"n": raw["n"], **{b: _analyse_backend(raw["runs"][b]) for b in BACKENDS}}


# The RSS bound: the same 5 MiB as W4's (1 KiB a child at 5,000). A thread
# per child would cost far more (a Python thread blocked on an Event adds about
# 16 KiB of RSS: some 78 MiB at 5,000); what fits under the bound is our Process
# and stream objects against the floor's bare fds.
RSS_MIB = 5


def targets(a: dict, add: Callable[[str, bool, str], None]) -> None:
    n = a["n"]
    for backend in BACKENDS:
        ours, floor = a[backend]["ours"], a[backend]["floor"]
        alive = min(ours["alive_at_hold"]["min"], floor["alive_at_hold"]["min"])
        thr, floor_thr = ours["peak_threads"]["max"], floor["peak_threads"]["max"]
        add(
            f"W6b {backend}: {n} processes with pipes open at once, no thread per "
            "child (ours threads <= floor threads)",
            alive == n and thr <= floor_thr,
            f"alive at once: {alive:.0f} of {n} (fewest over runs and peers); peak threads "
            f"ours {thr:.0f}, floor {floor_thr:.0f}; fds growth ours "
            f"{ours['fds_growth']['max']:.0f}, floor {floor['fds_growth']['max']:.0f}",
        )
        d, p = a[backend]["ours_minus_floor_rss_mib"], a[backend]["ours_minus_floor_peak_rss_mib"]
        add(
            f"W6b {backend}: ours RSS <= floor RSS + {RSS_MIB} MiB ({n} processes with pipes held)",
            d["median"] <= RSS_MIB,
            f"ours - floor = {d['median']:+.2f} MiB (min {d['min']:+.2f}, max {d['max']:+.2f}); "
            f"at the peak of the whole run (not the target): {p['median']:+.2f} MiB",
        )


def report(a: dict, L: list[str]) -> None:
    L.append(
        f"### W6b: {a['n']} `cat` children with stdin and stdout on pipes, "
        "all alive at once on one event loop, then each fed, closed and waited"
    )
    L.append("")
    heads = ["backend", "peer", "alive at once", "peak threads", "fds growth"]
    heads += ["RSS growth MiB (held)", "peak RSS growth MiB", "open all s"]
    heads += ["release → all reaped s"]
    cols = [("alive_at_hold", ".0f"), ("peak_threads", ".0f"), ("fds_growth", ".0f")]
    cols += [("rss_growth_mib", ".1f"), ("peak_rss_growth_mib", ".1f"), ("open_all_s", ".2f")]
    cols += [("release_to_reaped_s", ".2f")]
    rows = ([b, p, *_util.cells(a[b][p], cols)] for b in BACKENDS for p in SCALE_PEERS)
    _util.table(L, heads, rows, text=2)
