"""W7: loop stall. How long the event loop stops while N processes start at once.

A heartbeat task sleeps 1 ms at a time and records the gap between its
wake-ups. Once it ticks, N tasks each ``await run_process(["/bin/true"])``
(stdout and stderr captured) start in one task group, and every gap from
then until the last child has been reaped is kept: a loop that never stalls
shows gaps of about 1 ms, and a spawn that blocks the loop thread until its
child has exec'd shows up as one long gap. Reported per backend, peer and
N: the longest gap and the p99 of the gaps (with fewer than 100 heartbeats in
the window, the p99 is the longest gap).

One fresh interpreter per repetition and backend runs every peer (rotated
order) after a warm-up of 20 each, as in W6. Peers, on asyncio and trio:
ours ``pidfd.run_process``, ``anyio.run_process``; on asyncio
``asyncio.create_subprocess_exec(stdout=PIPE, stderr=PIPE)`` +
``communicate()`` (default child watcher), on trio
``trio.run_process(capture_stdout=True, capture_stderr=True)``.

Target (issue 18): ours' longest gap <= 2 ms at N = 200, on each backend
(the median over repetitions of each run's longest gap).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import _util
import anyio
import w6_async_spawn

SIZES = {"default": {"sizes": [200, 2000], "reps": 3}, "quick": {"sizes": [50], "reps": 1}}
BACKENDS = _util.BACKENDS

HEARTBEAT_S = 0.001
# The longest gap ours may leave at TARGET_N children started at once.
TARGET_MS = 2.0
TARGET_N = 200

OURS = w6_async_spawn.OURS


def peers(backend: str) -> dict[str, tuple[Callable[[], None] | None, Callable[[], Any]]]:
    """W6's peers, without its floor: name -> (setup, coroutine for one child)."""
    table = w6_async_spawn.peers(backend)
    del table[w6_async_spawn.FLOOR]
    return table


async def _stall(one: Callable[[], Any], n: int) -> list[float]:
    gaps: list[float] = []
    done = False
    last = time.perf_counter()

    async def heartbeat() -> None:
        nonlocal last
        while not done:
            await anyio.sleep(HEARTBEAT_S)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    async with anyio.create_task_group() as outer:
        outer.start_soon(heartbeat)
        await anyio.sleep(0.05)  # the heartbeat is ticking
        del gaps[:]  # keep only what overlaps the children
        async with anyio.create_task_group() as tg:
            for _ in range(n):
                tg.start_soon(one)
        gaps.append(time.perf_counter() - last)  # the gap still open at the end
        done = True
    return gaps


def _once(backend: str, setup: Callable[[], None] | None, one: Callable[[], Any], n: int) -> dict:
    if setup is not None:
        setup()
    gaps = anyio.run(_stall, one, n, backend=backend)
    return {
        "max_gap_ms": max(gaps) * 1e3,
        "p99_gap_ms": _util.percentile(gaps, 99) * 1e3,
        "beats": len(gaps),
    }


def run(cfg: dict) -> dict:
    backend, sizes, rot = cfg["backend"], cfg["sizes"], cfg["rotation"]
    _util.raise_nofile(8 * max(sizes) + 1024)
    table = peers(backend)
    out: dict[str, dict[str, dict]] = {}
    try:
        for setup, one in table.values():
            _once(backend, setup, one, 20)  # warm-up
        for n in sizes:
            out[str(n)] = {}
            for name in _util.rotate(list(table), rot):
                setup, one = table[name]
                out[str(n)][name] = _once(backend, setup, one, n)
    finally:
        _util.kill_and_reap_all()
    return out


WORKERS = {"run": run}


# --- parent side: collect, analyse, targets, report, plot --------------------------


def collect(cfg: dict, work: Callable[[str, dict], Any], stage: Callable[[str], None]) -> dict:
    stage(f"W7: loop stall while N={cfg['sizes']} processes start at once ...")
    runs: dict[str, list] = {b: [] for b in BACKENDS}
    for rep in range(cfg["reps"]):
        for backend in BACKENDS:
            runs[backend].append(
                work("run", {"backend": backend, "sizes": cfg["sizes"], "rotation": rep})
            )
    return {"sizes": cfg["sizes"], "runs": runs}


def analyse(raw: dict) -> dict:
    a: dict[str, Any] = {"sizes": raw["sizes"], "ours": OURS, "heartbeat_ms": HEARTBEAT_S * 1e3}
    for backend in BACKENDS:
        runs = raw["runs"][backend]
        a[backend] = {
            n: {
                peer: {
                    key: _util.summary([r[n][peer][key] for r in runs])
                    for key in ("max_gap_ms", "p99_gap_ms", "beats")
                }
                for peer in runs[0][n]
            }
            for n in map(str, raw["sizes"])
        }
    return a


def targets(a: dict, add: Callable[[str, bool, str], None]) -> None:
    # At TARGET_N, or (--quick) at the largest N run below it.
    below = [n for n in a["sizes"] if n <= TARGET_N]
    n = str(max(below) if below else min(a["sizes"]))
    for backend in BACKENDS:
        by_peer = a[backend][n]
        mine = by_peer[OURS]["max_gap_ms"]
        others = ", ".join(
            f"{p} {m['max_gap_ms']['median']:.1f} ms" for p, m in by_peer.items() if p != OURS
        )
        add(
            f"W7 {backend}: ours longest loop stall <= {TARGET_MS:g} ms at N={TARGET_N} "
            f"(1 ms heartbeat)",
            mine["median"] <= TARGET_MS,
            ("" if n == str(TARGET_N) else f"judged at N={n}, the run's largest N <= {TARGET_N}; ")
            + f"N={n}: ours {_util.fmt(mine, '.1f')} ms, p99 "
            f"{by_peer[OURS]['p99_gap_ms']['median']:.1f} ms; {others}",
        )


def report(a: dict, L: list[str]) -> None:
    L.append(
        f"### W7: loop stall, gaps between the wake-ups of a {a['heartbeat_ms']:g} ms "
        "heartbeat while N `run_process(['/bin/true'])` start at once"
    )
    L.append("")
    heads = ["backend", "peer", "N", "longest gap ms", "p99 gap ms", "heartbeats"]
    cols = [("max_gap_ms", ".1f"), ("p99_gap_ms", ".1f"), ("beats", ".0f")]
    rows = (
        [b, peer, n, *_util.cells(m, cols)]
        for b in BACKENDS
        for n in map(str, a["sizes"])
        for peer, m in a[b][n].items()
    )
    _util.table(L, heads, rows, text=2)


PANELS = 2  # one per N (the first two sizes)


def plot(axes: list, a: dict) -> None:
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    for ax in axes[len(a["sizes"]) :]:
        ax.axis("off")  # --quick runs one N
    for ax, n in zip(axes, map(str, a["sizes"]), strict=False):
        cells = [(b, p) for b in BACKENDS for p in a[b][n]]
        _util.hbars(
            ax,
            [f"{b}: {p}" for b, p in cells],
            [a[b][n][p]["max_gap_ms"] for b, p in cells],
            f"longest gap of a 1 ms heartbeat, ms, log scale (dashed: the {TARGET_MS:g} ms target)",
            f"W7: loop stall while N={n} processes start at once",
            ref=TARGET_MS,
        )
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.set_xlim(0.5, 2 * max(a[b][n][p]["max_gap_ms"]["max"] for b, p in cells))
