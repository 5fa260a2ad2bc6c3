"""Shared helpers for the benchmark workloads: statistics, process
bookkeeping and cleanup, reading this process's threads, fds, RSS and CPU,
resource limits, and the pieces of a report and a plot every workload uses.

Every child a workload starts is recorded in :data:`LIVE` until it is reaped,
so :func:`kill_and_reap_all` (called from ``finally`` blocks) can always kill
and reap what is left, even after Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

BACKENDS = ("asyncio", "trio")

TRUE = shutil.which("true") or "/bin/true"
SLEEP = shutil.which("sleep") or "/bin/sleep"

# pid -> None for every child started and not yet known to be reaped.
LIVE: dict[int, None] = {}


def spawn(argv: Sequence[str], file_actions: Sequence[tuple] = ()) -> int:
    """``os.posix_spawn`` ``argv`` (path = argv[0]) and record the child."""
    pid = os.posix_spawn(argv[0], list(argv), os.environ, file_actions=list(file_actions))
    LIVE[pid] = None
    return pid


def spawn_piped(argv: Sequence[str], child_fds: Sequence[int]) -> tuple[int, dict[int, int]]:
    """:func:`spawn` ``argv`` with each of ``child_fds`` (0, 1 or 2) on a pipe.

    Returns the pid and, per child fd, our end of its pipe, non-blocking (the
    write end for 0, the read end otherwise). Every fd is closed on failure.
    """
    ours: dict[int, int] = {}
    theirs: list[int] = []
    try:
        for fd in child_fds:
            r, w = os.pipe()
            ours[fd], other = (w, r) if fd == 0 else (r, w)
            theirs.append(other)
        actions = [(os.POSIX_SPAWN_DUP2, t, fd) for t, fd in zip(theirs, child_fds, strict=True)]
        pid = spawn(argv, actions)
    except BaseException:
        for fd in ours.values():
            os.close(fd)
        raise
    finally:
        for fd in theirs:
            os.close(fd)
    for fd in ours.values():
        os.set_blocking(fd, False)
    return pid, ours


def track(pid: int) -> None:
    """Record a child started by someone else (subprocess, asyncio, trio)."""
    LIVE[pid] = None


def reaped(pid: int) -> None:
    """Forget a child that has been reaped."""
    LIVE.pop(pid, None)


def kill_and_reap_all() -> None:
    """SIGKILL and reap every recorded child; tolerate ones already gone."""
    pids = list(LIVE)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for pid in pids:
        # ChildProcessError: a peer library (an asyncio watcher) reaped it.
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        LIVE.pop(pid, None)


def wait_zombies(pids: Iterable[int], timeout: float = 30.0) -> None:
    """Return once every pid is an exited, not yet reaped child."""
    deadline = time.monotonic() + timeout
    flags = os.WEXITED | os.WNOHANG | os.WNOWAIT
    for pid in pids:
        while os.waitid(os.P_PID, pid, flags) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"child {pid} did not exit within {timeout} s")
            time.sleep(0.0005)


def threads() -> int:
    """OS threads in this process right now (no sampler thread involved)."""
    return len(os.listdir("/proc/self/task"))


def fds() -> int:
    """Open file descriptors in this process right now."""
    return len(os.listdir("/proc/self/fd")) - 1  # minus the listdir's own fd


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def rss_kib() -> int:
    """Resident set size now, in KiB."""
    return _status_kib("VmRSS:")


def peak_rss_kib() -> int:
    """Peak resident set size since start or the last :func:`reset_peak_rss`."""
    return _status_kib("VmHWM:")


def reset_peak_rss() -> None:
    """Reset VmHWM to the current RSS (Linux >= 4.0); harmless if refused."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def cpu() -> float:
    """CPU seconds (user + system) of this process so far, every thread, no child."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def check_nproc(n: int, flag: str) -> None:
    """Stop with a message if RLIMIT_NPROC cannot hold ``n`` children at once."""
    nproc, _ = resource.getrlimit(resource.RLIMIT_NPROC)
    if nproc != resource.RLIM_INFINITY and nproc < n + 256:
        raise RuntimeError(
            f"RLIMIT_NPROC (ulimit -u) is {nproc}: too low for {n} children at once; "
            f"raise it or pass a smaller {flag}"
        )


def raise_nofile(want: int) -> int:
    """Raise the soft RLIMIT_NOFILE towards ``want`` within the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def summary(values: Sequence[float]) -> dict[str, float]:
    """Median with min and max, the shape of every figure we report."""
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of ``values``."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def time_peers(
    table: dict[str, tuple[Any, Any]],
    sizes: Sequence[int],
    order: Callable[[list[str]], list[str]],
    once: Callable[[Any, Any, int], tuple[float, float]],
) -> dict[str, dict[str, dict[str, float]]]:
    """Time every peer of ``table`` (name -> ``(setup, one)``) at each size.

    Each peer first runs once untimed (imports, watchers), then at every size
    in the order ``order(names)`` gives; ``once(setup, one, n)`` runs ``n``
    children and returns (wall seconds, parent CPU seconds). Every child left
    is killed and reaped however it ends.
    """
    out: dict[str, dict[str, dict[str, float]]] = {}
    try:
        for setup, one in table.values():
            once(setup, one, 20)  # warm-up
        for n in sizes:
            res = {}
            for name in order(list(table)):
                setup, one = table[name]
                wall, cpu = once(setup, one, n)
                res[name] = {"seconds": wall, "cpu_us_per_child": cpu / n * 1e6}
            out[str(n)] = res
    finally:
        kill_and_reap_all()
    return out


async def _at_once(one: Callable[..., Any], n: int, args: tuple) -> None:
    import anyio

    async with anyio.create_task_group() as tg:
        for _ in range(n):
            tg.start_soon(one, *args)


def run_at_once(
    backend: str, setup: Callable[[], None] | None, one: Callable[..., Any], n: int, *args: Any
) -> tuple[float, float]:
    """Run ``setup``, then ``n`` tasks of ``one(*args)`` started at once on a
    fresh ``backend`` event loop; (wall seconds, parent CPU seconds) of the loop."""
    import gc

    import anyio

    if setup is not None:
        setup()
    gc.collect()
    cpu0, t0 = cpu(), time.perf_counter()
    anyio.run(_at_once, one, n, args, backend=backend)
    return time.perf_counter() - t0, cpu() - cpu0


def held_run(backend: str, main: Callable[..., Any], one: Callable[..., Any], n: int) -> dict:
    """``main(one, n, base, out)`` on a fresh ``backend`` event loop after a
    warm-up of 20; ``base`` holds this process's fds and RSS just before, and
    the peak RSS is reset then. Returns ``out`` (with ``n``); every child
    left is killed and reaped however it ends."""
    import gc

    import anyio

    try:
        anyio.run(main, one, 20, {"fds": fds(), "rss": rss_kib()}, {}, backend=backend)
        gc.collect()
        reset_peak_rss()
        base = {"fds": fds(), "rss": rss_kib()}
        out: dict = {"n": n}
        anyio.run(main, one, n, base, out, backend=backend)
        return out
    finally:
        kill_and_reap_all()


def fresh_runs(
    cfg: dict, peers: Sequence[str], work: Callable[[str, dict], Any]
) -> dict[str, dict[str, list]]:
    """Parent side of :func:`held_run` workloads: one fresh worker per
    (repetition, backend, peer), the peers in a rotated order; backend ->
    peer -> that worker's result, one per repetition."""
    runs: dict[str, dict[str, list]] = {b: {p: [] for p in peers} for b in BACKENDS}
    for rep in range(cfg["reps"]):
        for backend in BACKENDS:
            for peer in rotate(list(peers), rep):
                runs[backend][peer].append(
                    work("run", {"backend": backend, "peer": peer, "n": cfg["n"]})
                )
    return runs


def rotate(items: Sequence, by: int) -> list:
    """``items`` rotated left by ``by``: each repetition runs peers in a new order."""
    if not items:
        return []
    by %= len(items)
    return list(items[by:]) + list(items[:by])


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --- report and plot -----------------------------------------------------------------


def fmt(s: dict, spec: str = ".2f", unit: str = "") -> str:
    """A :func:`summary` as ``median (min-max)``."""
    return f"{s['median']:{spec}}{unit} ({s['min']:{spec}}-{s['max']:{spec}})"


def cells(m: dict, cols: Sequence[tuple[str, str]]) -> list[str]:
    """``fmt(m[key], spec)`` for each ``(key, spec)`` of ``cols``: a table row's figures."""
    return [fmt(m[key], spec) for key, spec in cols]


def table(L: list[str], heads: Sequence[str], rows: Iterable[Sequence[str]], text: int = 1) -> None:
    """A Markdown table on ``L``, then a blank line: the first ``text``
    columns left-aligned, the figures after them right-aligned."""
    L.append("| " + " | ".join(heads) + " |")
    L.append("|" + "|".join(["---"] * text + ["---:"] * (len(heads) - text)) + "|")
    L.extend("| " + " | ".join(row) + " |" for row in rows)
    L.append("")


def hbars(
    ax: Any,
    labels: Sequence[str],
    summaries: Sequence[dict],
    xlabel: str,
    title: str,
    highlight: Sequence[str] = ("ours",),
    ref: float | None = None,
) -> None:
    """Horizontal bars of medians with min-max whiskers, ours in orange."""
    meds = [s["median"] for s in summaries]
    lo = [s["median"] - s["min"] for s in summaries]
    hi = [s["max"] - s["median"] for s in summaries]
    colors = ["tab:orange" if any(h in lab for h in highlight) else "tab:blue" for lab in labels]
    y = list(range(len(labels)))
    ax.barh(y, meds, xerr=[lo, hi], color=colors, capsize=3)
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    if ref is not None:
        ax.axvline(ref, color="grey", linestyle="--", linewidth=1)
    ax.grid(axis="x", alpha=0.3)
