"""Benchmarks for async-pidfd against every peer, in one run.

Usage::

    pip install '.[bench]'
    python benchmarks/run.py [--quick] [--out DIR] [--no-plot]

Prints Markdown tables and a MET / NOT MET line per target, writes
``DIR/latest.json`` and ``DIR/plot.png`` (default ``benchmarks/results``).
Installs nothing: it checks that the peers are importable and says how to
get them if not. See ``benchmarks/README.md`` for the method.

This file holds only the registry (``WORKLOADS``: workload -> module) and
the driver; each ``wN_*.py`` holds one workload whole (sizes, the run in a
worker, analysis, targets, report, plot panels), ``_util.py`` what they share.

Each workload runs in worker processes started from this script (in their
own session, so Ctrl-C reaches only us and we stop them in order). Workers
kill and reap every child they start in ``finally`` blocks; should a worker
die anyway, this process - a child subreaper - kills its process group and
reaps what is left.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import importlib.util
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _util  # noqa: E402

NEEDED = {
    "pidfd": "this project (pip install '.[bench]' from the repository root)",
    "anyio": "anyio",
    "trio": "trio",
    "psutil": "psutil",
    "matplotlib": "matplotlib",
}

# The registry: workload -> its module. Each module holds the workload whole:
# ``SIZES`` (default and --quick), ``WORKERS`` (what runs in a fresh worker
# process, by kind), and for this process ``collect``, ``analyse``,
# ``targets`` and ``report``, and optionally ``plot`` on ``PANELS`` axes.
WORKLOADS = {
    "w1": "w1_reap",
    "w2": "w2_fanin",
    "w3": "w3_latency",
    "w4": "w4_scale",
    "w5": "w5_popen",
    "w6": "w6_async_spawn",
    "w6b": "w6b_scale",
    "w7": "w7_stall",
}


def module(key: str) -> Any:
    return importlib.import_module(WORKLOADS[key])


# --- worker side ----------------------------------------------------------------


def worker_main(kind: str, cfg: dict, out: str) -> None:
    key, _, name = kind.partition(":")
    if key not in WORKLOADS or name not in module(key).WORKERS:
        raise SystemExit(f"unknown worker kind {kind!r}")
    Path(out).write_text(json.dumps(module(key).WORKERS[name](cfg)))


# --- parent side ----------------------------------------------------------------


def check_peers() -> None:
    missing = [m for m in NEEDED if importlib.util.find_spec(m) is None]
    if missing:
        print(
            "missing: " + ", ".join(missing) + "\n"
            "The benchmarks install nothing themselves. From the repository root run\n"
            "    pip install '.[bench]'\n"
            "and try again.",
            file=sys.stderr,
        )
        raise SystemExit(2)
    if not hasattr(os, "pidfd_open"):
        raise SystemExit("os.pidfd_open is missing: the floor and stdlib peers need Linux >= 5.3")


def become_subreaper() -> None:
    # PR_SET_CHILD_SUBREAPER: orphans of a worker that died become our
    # children, so we can reap them instead of leaving them to init.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)


def reap_orphans(timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            time.sleep(0.01)


def stop_worker(proc: subprocess.Popen, clean: bool) -> None:
    if proc.poll() is None:
        # Its own finally blocks kill and reap its children.
        proc.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=30)
    if not clean:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        reap_orphans()


def run_worker(kind: str, cfg: dict) -> Any:
    fd, path = tempfile.mkstemp(prefix="pidfd-bench-", suffix=".json")
    os.close(fd)
    argv = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        kind,
        "--cfg",
        json.dumps(cfg),
        "--result",
        path,
    ]
    clean = False
    proc = subprocess.Popen(argv, start_new_session=True)
    try:
        rc = proc.wait()
        if rc != 0:
            raise RuntimeError(f"worker {kind} {cfg} failed with exit status {rc}")
        clean = True
        return json.loads(Path(path).read_text())
    finally:
        stop_worker(proc, clean)
        os.unlink(path)


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from importlib.metadata import version

    import anyio  # noqa: F401
    import psutil
    import trio

    import pidfd

    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "versions": {
            "async-pidfd": pidfd.__version__,
            "anyio": version("anyio"),
            "trio": trio.__version__,
            "psutil": psutil.__version__,
        },
    }


def collect(sizes: dict, only: tuple[str, ...]) -> dict:
    res: dict[str, Any] = {}
    t0 = time.monotonic()

    def stage(msg: str) -> None:
        _util.log(f"[{time.monotonic() - t0:5.0f} s] {msg}")

    for key in only:

        def work(name: str, cfg: dict, key: str = key) -> Any:
            return run_worker(f"{key}:{name}", cfg)

        res[key] = module(key).collect(sizes[key], work, stage)
    stage("done")
    return res


def analyse(raw: dict) -> dict:
    out: dict[str, Any] = {key: module(key).analyse(r) for key, r in raw.items()}
    t: list[dict] = []

    def add(name: str, met: bool, detail: str) -> None:
        t.append({"target": name, "met": bool(met), "detail": detail})

    for key in raw:
        module(key).targets(out[key], add)
    out["targets"] = t
    return out


def report(a: dict, meta: dict) -> str:
    L: list[str] = []
    L.append(
        f"Machine: {meta['nproc']} CPUs, {meta['cpu']}, Linux {meta['kernel']}, "
        f"{meta['implementation']} {meta['python']}; "
        + ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
    )
    L.append(
        f"Load average (1, 5, 15 min) before the run: {meta['loadavg_before']}, "
        f"after: {meta['loadavg_after']}; run took {meta['seconds']} s."
    )
    L.append(
        "Figures: median (min-max) over repetitions; ratios are taken within one "
        "process and one repetition, then summarised."
    )
    L.append("")
    for key in WORKLOADS:
        if key in a:
            module(key).report(a[key], L)
    L.append("### Targets")
    L.append("")
    for t in a["targets"]:
        L.append(f"- **{'MET' if t['met'] else 'NOT MET'}** {t['target']}: {t['detail']}")
    return "\n".join(L)


def plot(a: dict, meta: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    drawn = [k for k in WORKLOADS if k in a and hasattr(module(k), "plot")]
    panels = sum(module(k).PANELS for k in drawn)
    rows = (panels + 1) // 2
    fig, grid = plt.subplots(rows, 2, figsize=(15, 5.25 * rows), squeeze=False)
    axes = [ax for row in grid for ax in row]
    for ax in axes[panels:]:
        ax.axis("off")
    for key in drawn:
        mod = module(key)
        mod.plot(axes[: mod.PANELS], a[key])
        axes = axes[mod.PANELS :]
    fig.suptitle(
        f"async-pidfd benchmarks: {meta['nproc']} CPUs, {meta['cpu']}, "
        f"Linux {meta['kernel']}, Python {meta['python']} "
        f"(bars: median, whiskers: min-max)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--quick",
        action="store_true",
        help="small sizes, for a smoke test (figures are not meaningful)",
    )
    ap.add_argument(
        "--out", type=Path, default=HERE / "results", help="directory for latest.json and plot.png"
    )
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument("--w4-n", type=int, help="children in W4 (default 5000)")
    ap.add_argument(
        "--w6b-n", type=int, help="processes with pipes held at once in W6b (default 5000)"
    )
    ap.add_argument(
        "--only",
        help="comma-separated workloads to run (e.g. w5); writes DIR/only-<names>.json, no plot",
    )
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--cfg", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:
        worker_main(args.worker, json.loads(args.cfg), args.result)
        return 0

    only = tuple(WORKLOADS)
    if args.only:
        only = tuple(w.strip().lower() for w in args.only.split(","))
        unknown = [w for w in only if w not in WORKLOADS]
        if unknown:
            ap.error(f"unknown workload(s) {unknown}; choose from {', '.join(WORKLOADS)}")
    check_peers()
    become_subreaper()
    mode = "quick" if args.quick else "default"
    sizes = {key: dict(module(key).SIZES[mode]) for key in WORKLOADS}
    if args.w4_n:
        sizes["w4"]["n"] = args.w4_n
    if args.w6b_n:
        sizes["w6b"]["n"] = args.w6b_n
    meta = machine()
    meta["mode"] = mode
    meta["sizes"] = sizes
    started = time.monotonic()
    meta["loadavg_before"] = [round(x, 2) for x in os.getloadavg()]
    try:
        raw = collect(sizes, only)
    except KeyboardInterrupt:
        print("interrupted; every child has been killed and reaped", file=sys.stderr)
        return 130
    meta["seconds"] = round(time.monotonic() - started, 1)
    meta["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    a = analyse(raw)
    text = report(a, meta)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    # A partial run never overwrites the full one, nor draws its plot.
    name = "latest.json" if only == tuple(WORKLOADS) else f"only-{'-'.join(only)}.json"
    no_plot = args.no_plot or only != tuple(WORKLOADS)
    (args.out / name).write_text(
        json.dumps({"machine": meta, "results": a, "raw": raw}, indent=1) + "\n"
    )
    if not no_plot:
        plot(a, meta, args.out / "plot.png")
    print(
        f"\nwrote {args.out / name}"
        + ("" if no_plot else f" and {args.out / 'plot.png'}")
        + f" in {meta['seconds']} s",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
