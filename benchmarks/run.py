"""Benchmarks for async-pidfd against every peer, in one run.

Usage::

    pip install '.[bench]'
    python benchmarks/run.py [--quick] [--out DIR] [--no-plot]

Prints Markdown tables and a MET / NOT MET line per target, writes
``DIR/latest.json`` and ``DIR/plot.png`` (default ``benchmarks/results``).
Installs nothing: it checks that the peers are importable and says how to
get them if not. See ``benchmarks/README.md`` for the method.

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

SIZES = {
    "default": {
        "w1": {"batch": 200, "reps": 15},
        "w2": {"sizes": [200, 1000], "reps": 5, "mem_reps": 2},
        "w3": {"rounds": 60, "chunks": 3},
        "w4": {"n": 5000, "reps": 3},
        "w5": {"sizes": [200, 2000], "reps": 3},
        "w6": {
            "sizes": [200, 2000],
            "reps": 3,
            "threads_n": 2000,
            "threads_of": "all",
        },
        "w6b": {"n": 5000, "reps": 3},
    },
    "quick": {
        "w1": {"batch": 50, "reps": 5},
        "w2": {"sizes": [50, 200], "reps": 2, "mem_reps": 1},
        "w3": {"rounds": 9, "chunks": 3},
        "w4": {"n": 300, "reps": 1},
        "w5": {"sizes": [20, 50], "reps": 1},
        "w6": {
            "sizes": [20, 50],
            "reps": 1,
            "threads_n": 50,
            "threads_of": "ours",
        },
        "w6b": {"n": 200, "reps": 1},
    },
}

BACKENDS = ("asyncio", "trio")
WORKLOADS = ("w1", "w2", "w3", "w4", "w5", "w6", "w6b")


# --- worker side ----------------------------------------------------------------


def worker_main(kind: str, cfg: dict, out: str) -> None:
    if kind == "w1":
        import w1_reap

        result: Any = w1_reap.run(cfg)
    elif kind == "w2-timing":
        import w2_fanin

        result = w2_fanin.run_timing(cfg)
    elif kind == "w2-memory":
        import w2_fanin

        result = w2_fanin.run_memory(cfg)
    elif kind == "w2-peers":
        import w2_fanin

        result = {b: list(w2_fanin.peers(b)) for b in BACKENDS}
    elif kind == "w3":
        import w3_latency

        result = w3_latency.run(cfg)
    elif kind == "w4":
        import w4_scale

        result = w4_scale.run(cfg)
    elif kind == "w5":
        import w5_popen

        result = w5_popen.run(cfg)
    elif kind == "w6-timing":
        import w6_async_spawn

        result = w6_async_spawn.run_timing(cfg)
    elif kind == "w6-threads":
        import w6_async_spawn

        result = w6_async_spawn.run_threads(cfg)
    elif kind == "w6b":
        import w6_async_spawn

        result = w6_async_spawn.run_scale(cfg)
    else:
        raise SystemExit(f"unknown worker kind {kind!r}")
    Path(out).write_text(json.dumps(result))


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


def collect(sizes: dict, only: tuple[str, ...] = WORKLOADS) -> dict:
    res: dict[str, Any] = {}
    t0 = time.monotonic()

    def stage(msg: str) -> None:
        _util.log(f"[{time.monotonic() - t0:5.0f} s] {msg}")

    if "w1" in only:
        stage("W1: sync reap of an exited child ...")
        res["w1"] = run_worker("w1", sizes["w1"])
    if "w2" in only:
        collect_w2(sizes, res, stage)
    if "w3" in only:
        stage("W3: wake-up latency ...")
        res["w3"] = run_worker("w3", sizes["w3"])
    if "w4" in only:
        collect_w4(sizes, res, stage)
    if "w5" in only:
        stage("W5: sync spawn+wait, pidfd.Popen vs subprocess ...")
        res["w5"] = run_worker("w5", sizes["w5"])
    if "w6" in only:
        collect_w6(sizes, res, stage)
    if "w6b" in only:
        collect_w6b(sizes, res, stage)
    stage("done")
    return res


def collect_w2(sizes: dict, res: dict, stage: Any) -> None:
    stage("W2: async fan-in, timing ...")
    w2 = sizes["w2"]
    peer_names = run_worker("w2-peers", {})
    timing: dict[str, list] = {b: [] for b in BACKENDS}
    for rep in range(w2["reps"]):
        for backend in BACKENDS:
            timing[backend].append(
                run_worker("w2-timing", {"backend": backend, "sizes": w2["sizes"], "rotation": rep})
            )
    stage("W2: async fan-in, threads and memory ...")
    memory: dict[str, dict[str, list]] = {b: {p: [] for p in peer_names[b]} for b in BACKENDS}
    for _rep in range(w2["mem_reps"]):
        for backend in BACKENDS:
            for peer in peer_names[backend]:
                memory[backend][peer].append(
                    run_worker(
                        "w2-memory", {"backend": backend, "peer": peer, "n": max(w2["sizes"])}
                    )
                )
    res["w2"] = {
        "sizes": w2["sizes"],
        "peers": peer_names,
        "timing": timing,
        "memory": memory,
        "memory_n": max(w2["sizes"]),
    }


def collect_w6(sizes: dict, res: dict, stage: Any) -> None:
    w6 = sizes["w6"]
    stage(f"W6: async run_process with pipes, N={w6['sizes']}, timing ...")
    import w6_async_spawn

    peer_names = {b: list(w6_async_spawn.peers(b)) for b in BACKENDS}
    timing: dict[str, list] = {b: [] for b in BACKENDS}
    for rep in range(w6["reps"]):
        for backend in BACKENDS:
            timing[backend].append(
                run_worker("w6-timing", {"backend": backend, "sizes": w6["sizes"], "rotation": rep})
            )
    stage(f"W6: peak threads, N={w6['threads_n']} ...")
    # One fresh interpreter per peer (--quick: ours only, to stay quick).
    threads = {
        b: {
            p: run_worker("w6-threads", {"backend": b, "peer": p, "n": w6["threads_n"]})[
                "peak_threads"
            ]
            if w6["threads_of"] == "all" or p == w6_async_spawn.OURS
            else None
            for p in peer_names[b]
        }
        for b in BACKENDS
    }
    res["w6"] = {
        "sizes": w6["sizes"],
        "threads_n": w6["threads_n"],
        "peers": peer_names,
        "timing": timing,
        "threads": threads,
    }


def collect_w6b(sizes: dict, res: dict, stage: Any) -> None:
    import w6_async_spawn

    n = sizes["w6b"]["n"]
    stage(f"W6b: {n} processes with pipes open at once ...")
    runs: dict[str, dict[str, list]] = {
        b: {p: [] for p in w6_async_spawn.SCALE_PEERS} for b in BACKENDS
    }
    for rep in range(sizes["w6b"]["reps"]):
        for backend in BACKENDS:
            for peer in _util.rotate(list(w6_async_spawn.SCALE_PEERS), rep):
                runs[backend][peer].append(
                    run_worker("w6b", {"backend": backend, "peer": peer, "n": n})
                )
    res["w6b"] = {"n": n, "runs": runs}


def collect_w4(sizes: dict, res: dict, stage: Any) -> None:
    stage(f"W4: scale, {sizes['w4']['n']} children ...")
    w4: dict[str, dict[str, list]] = {b: {"floor": [], "ours": []} for b in BACKENDS}
    for rep in range(sizes["w4"]["reps"]):
        for backend in BACKENDS:
            for peer in _util.rotate(["floor", "ours"], rep):
                w4[backend][peer].append(
                    run_worker("w4", {"backend": backend, "peer": peer, "n": sizes["w4"]["n"]})
                )
    res["w4"] = {"n": sizes["w4"]["n"], "runs": w4}


# --- analysis ---------------------------------------------------------------------

S = _util.summary


def analyse(raw: dict) -> dict:
    import w2_fanin  # for the floor / ours names only

    out: dict[str, Any] = {}
    if "w1" in raw:
        out["w1"] = raw["w1"]

    if "w2" in raw:
        w2 = raw["w2"]
        a2: dict[str, Any] = {}
        for backend in BACKENDS:
            a2[backend] = {}
            for n in map(str, w2["sizes"]):
                per_peer = {}
                for peer in w2["peers"][backend]:
                    runs = [t[n] for t in w2["timing"][backend]]
                    per_peer[peer] = {
                        "seconds": S([r[peer]["seconds"] for r in runs]),
                        "ratio_to_floor": S(
                            [r[peer]["seconds"] / r[w2_fanin.FLOOR]["seconds"] for r in runs]
                        ),
                        "cpu_us_per_child": S([r[peer]["cpu_us_per_child"] for r in runs]),
                        "cpu_ratio_to_floor": S(
                            [
                                r[peer]["cpu_us_per_child"] / r[w2_fanin.FLOOR]["cpu_us_per_child"]
                                for r in runs
                            ]
                        ),
                    }
                a2[backend][n] = per_peer
            a2[backend]["memory"] = {
                peer: {
                    "peak_threads": S([m["peak_threads"] for m in mem]),
                    "peak_rss_growth_mib": S([m["peak_rss_growth_kib"] / 1024 for m in mem]),
                }
                for peer, mem in w2["memory"][backend].items()
            }
        out["w2"] = {
            "sizes": w2["sizes"],
            "memory_n": w2["memory_n"],
            "floor": w2_fanin.FLOOR,
            "ours": w2_fanin.OURS,
            "backends": a2,
        }

    if "w3" in raw:
        out["w3"] = raw["w3"]

    if "w4" in raw:
        w4 = raw["w4"]
        a4: dict[str, Any] = {"n": w4["n"]}
        for backend in BACKENDS:
            runs = w4["runs"][backend]
            a4[backend] = {
                peer: {
                    "threads": S([r["threads"] for r in runs[peer]]),
                    "fds_growth": S([r["fds_growth"] for r in runs[peer]]),
                    "rss_growth_mib": S([r["rss_growth_kib"] / 1024 for r in runs[peer]]),
                    "kill_to_reaped_s": S([r["kill_to_reaped_s"] for r in runs[peer]]),
                }
                for peer in ("floor", "ours")
            }
            a4[backend]["ours_minus_floor_rss_mib"] = S(
                [
                    (o["rss_growth_kib"] - f["rss_growth_kib"]) / 1024
                    for o, f in zip(runs["ours"], runs["floor"], strict=True)
                ]
            )
            a4[backend]["ours_to_floor_reap_time"] = S(
                [
                    o["kill_to_reaped_s"] / f["kill_to_reaped_s"]
                    for o, f in zip(runs["ours"], runs["floor"], strict=True)
                ]
            )
        out["w4"] = a4
    if "w5" in raw:
        out["w5"] = raw["w5"]
    if "w6" in raw:
        out["w6"] = analyse_w6(raw["w6"])
    if "w6b" in raw:
        out["w6b"] = analyse_w6b(raw["w6b"])
    out["targets"] = targets(out)
    return out


def analyse_w6(w6: dict) -> dict:
    import w6_async_spawn

    a6: dict[str, Any] = {
        "sizes": w6["sizes"],
        "threads_n": w6["threads_n"],
        "ours": w6_async_spawn.OURS,
        "floor": w6_async_spawn.FLOOR,
    }
    for backend in BACKENDS:
        rivals = w6_async_spawn.rivals(backend)
        per_n = {}
        for n in map(str, w6["sizes"]):
            runs = [t[n] for t in w6["timing"][backend]]
            per_peer = {}
            for peer in w6["peers"][backend]:

                def ratio(key: str, ref: Any, peer: str = peer, runs: list = runs) -> dict:
                    return S([r[peer][key] / ref(r, key) for r in runs])

                def fastest(r: dict, key: str, rivals: list = rivals) -> float:
                    return min(r[p][key] for p in rivals)

                def floor(r: dict, key: str) -> float:
                    return r[w6_async_spawn.FLOOR][key]

                per_peer[peer] = {
                    "seconds": S([r[peer]["seconds"] for r in runs]),
                    "cpu_us_per_child": S([r[peer]["cpu_us_per_child"] for r in runs]),
                    "wall_to_fastest_peer": ratio("seconds", fastest),
                    "cpu_to_fastest_peer": ratio("cpu_us_per_child", fastest),
                    "wall_to_floor": ratio("seconds", floor),
                    "cpu_to_floor": ratio("cpu_us_per_child", floor),
                    "peak_threads": w6["threads"][backend][peer],
                }
            per_n[n] = per_peer
        a6[backend] = {"rivals": rivals, "by_n": per_n}
    return a6


def analyse_w6b(w6b: dict) -> dict:
    return {"n": w6b["n"], **{b: analyse_w6b_backend(w6b["runs"][b]) for b in BACKENDS}}


def analyse_w6b_backend(runs: dict) -> dict:
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


def targets(a: dict) -> list[dict]:
    import w2_fanin

    t: list[dict] = []

    def add(name: str, met: bool, detail: str) -> None:
        t.append({"target": name, "met": bool(met), "detail": detail})

    if "w1" in a:
        w1 = a["w1"]["ours_full_vs_stdlib"]
        add(
            "W1 ours (open+wait+close, status+rusage read) <= stdlib pidfd_open+waitid+close",
            w1["median"] <= 1.0,
            f"ratio {w1['median']:.3f} (min {w1['min']:.3f}, max {w1['max']:.3f})",
        )

    if "w2" in a:
        w2 = a["w2"]
        floor, ours = w2["floor"], w2["ours"]
        for backend in BACKENDS:
            b = w2["backends"][backend]
            ratios = {n: b[str(n)][ours]["ratio_to_floor"]["median"] for n in w2["sizes"]}
            cpu = {n: b[str(n)][ours]["cpu_ratio_to_floor"]["median"] for n in w2["sizes"]}
            add(
                f"W2 {backend}: ours <= 1.05x floor (total time)",
                all(r <= 1.05 for r in ratios.values()),
                ", ".join(f"N={n}: {r:.3f}x" for n, r in ratios.items())
                + "; parent CPU per child: "
                + ", ".join(f"N={n}: {r:.3f}x" for n, r in cpu.items()),
            )
            thr = b["memory"][ours]["peak_threads"]["max"]
            add(f"W2 {backend}: ours uses one OS thread", thr == 1, f"peak threads {thr}")
            rivals = [
                p
                for p in b["memory"]
                if p not in (floor, ours, w2_fanin.OURS_THREADED) and "PidfdChildWatcher" not in p
            ]
            lines, ok = [], True
            for n in w2["sizes"]:
                mine = b[str(n)][ours]["seconds"]["median"]
                for p in rivals:
                    theirs = b[str(n)][p]["seconds"]["median"]
                    ok &= mine < theirs
                    lines.append(f"N={n} vs {p}: {mine / theirs:.2f}x")
            if backend == "trio":
                med = {
                    (n, p): b[str(n)][p]["seconds"]["median"]
                    for n in w2["sizes"]
                    for p in [*rivals, w2_fanin.OURS_THREADED]
                }
                ratios = [
                    f"N={n} vs {p}: {med[n, w2_fanin.OURS_THREADED] / med[n, p]:.2f}x"
                    for n in w2["sizes"]
                    for p in rivals
                ]
                lines.append(
                    "(for insight, not the target: ours spawned as trio spawns vs those peers: "
                    + ", ".join(ratios)
                    + ")"
                )
            add(f"W2 {backend}: ours ahead of " + ", ".join(rivals), ok, "; ".join(lines))

    if "w3" in a:
        peers3 = a["w3"]["peers"]

        def p50(name: str) -> float:
            return peers3[name]["p50"]

        samples = a["w3"]["samples"]

        def paired(mine: str, base: str) -> dict:
            # Per round: both samples were taken back to back.
            return S([x / y for x, y in zip(samples[mine], samples[base], strict=True)])

        pairs = [("sync", "ours sync PidFd.wait", "blocking os.waitid")] + [
            (b, f"{b}: ours AsyncPidFd.wait", f"{b}: floor") for b in BACKENDS
        ]
        for label, mine, base in pairs:
            r = paired(mine, base)
            add(
                f"W3 {label}: ours p50 <= 1.1x floor",
                r["median"] <= 1.1,
                f"{p50(mine):.0f} us vs {p50(base):.0f} us; median of per-round ratios "
                f"{r['median']:.3f}x (min {r['min']:.2f}, max {r['max']:.2f})",
            )
        mine, base = "non-child: ours PidFd.wait_exit", "ours sync PidFd.wait"
        r = paired(mine, base)
        add(
            "W3 non-child as fast as child (ours wait_exit <= 1.1x ours wait, per round)",
            r["median"] <= 1.1,
            f"{p50(mine):.0f} us vs {p50(base):.0f} us; median of per-round ratios "
            f"{r['median']:.3f}x (min {r['min']:.2f}, max {r['max']:.2f})",
        )

    if "w4" in a:
        w4 = a["w4"]
        for backend in BACKENDS:
            b = w4[backend]
            thr = b["ours"]["threads"]["max"]
            floor_thr = b["floor"]["threads"]["max"]
            add(
                f"W4 {backend}: no thread per child (ours threads <= floor threads)",
                thr <= floor_thr,
                f"ours {thr}, floor {floor_thr}",
            )
            d = b["ours_minus_floor_rss_mib"]
            add(
                f"W4 {backend}: ours RSS <= floor RSS + 5 MiB ({w4['n']} children)",
                d["median"] <= 5,
                f"ours - floor = {d['median']:+.2f} MiB (min {d['min']:+.2f}, max {d['max']:+.2f})",
            )
    if "w5" in a:
        targets_w5(a["w5"], add)
    if "w6" in a:
        targets_w6(a["w6"], add)
    if "w6b" in a:
        targets_w6b(a["w6b"], add)
    return t


def targets_w6(w6: dict, add: Any) -> None:
    ours = w6["ours"]
    for backend in BACKENDS:
        b = w6[backend]
        for key, what in (("wall_to_fastest_peer", "wall"), ("cpu_to_fastest_peer", "parent CPU")):
            ratios = {n: b["by_n"][str(n)][ours][key]["median"] for n in w6["sizes"]}
            add(
                f"W6 {backend}: ours <= 1.0x the fastest of {', '.join(b['rivals'])} ({what})",
                all(r <= 1.0 for r in ratios.values()),
                ", ".join(f"N={n}: {r:.3f}x" for n, r in ratios.items()),
            )
        thr = b["by_n"][str(w6["sizes"][-1])][ours]["peak_threads"]
        add(
            f"W6 {backend}: ours uses one OS thread ({w6['threads_n']} at once)",
            thr == 1,
            f"peak threads {thr}",
        )


# W6b's RSS bound: the same 5 MiB as W4's (1 KiB a child at 5,000). A thread
# per child would cost far more (a Python thread blocked on an Event adds about
# 16 KiB of RSS: some 78 MiB at 5,000); what fits under the bound is our Process
# and stream objects against the floor's bare fds.
W6B_RSS_MIB = 5


def targets_w6b(w6b: dict, add: Any) -> None:
    for backend in BACKENDS:
        targets_w6b_backend(backend, w6b["n"], w6b[backend], add)


def targets_w6b_backend(backend: str, n: int, sc: dict, add: Any) -> None:
    ours, floor = sc["ours"], sc["floor"]
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
    d, p = sc["ours_minus_floor_rss_mib"], sc["ours_minus_floor_peak_rss_mib"]
    add(
        f"W6b {backend}: ours RSS <= floor RSS + {W6B_RSS_MIB} MiB ({n} processes with pipes held)",
        d["median"] <= W6B_RSS_MIB,
        f"ours - floor = {d['median']:+.2f} MiB (min {d['min']:+.2f}, max {d['max']:+.2f}); "
        f"at the peak of the whole run (not the target): {p['median']:+.2f} MiB",
    )


def targets_w5(w5: dict, add: Any) -> None:
    import w5_popen

    for peer, ref in ((w5_popen.OURS, w5_popen.BASELINE), (w5_popen.OURS_RUN, w5_popen.STOCK_RUN)):
        parts, ok = [], True
        for mode, by_n in w5["modes"].items():
            for n, per_peer in by_n.items():
                wall = per_peer[peer]["wall_ratio_to_ref"]["median"]
                cpu = per_peer[peer]["cpu_ratio_to_ref"]["median"]
                ok &= wall <= 1.05 and cpu <= 1.05
                # What the pidfd alone costs the stock class, for reading
                # the miss: a target below it needs a cheaper kernel.
                tax = per_peer[w5_popen.TAX]["cpu_ratio"]["median"]
                parts.append(
                    f"{mode} N={n}: wall {wall:.3f}x, CPU {cpu:.3f}x"
                    f" (stock + a pidfd alone: CPU {tax:.3f}x)"
                )
        add(f"W5 {peer} <= 1.05x {ref} (wall and parent CPU per child)", ok, "; ".join(parts))
    t = w5["timeout_cpu_s"]
    r = w5["timeout_cpu_ratio"]
    count, each = w5["timeout_waits"]["count"], w5["timeout_waits"]["each_s"]
    add(
        f"W5 {count} wait(timeout={each}) on a running child: ours uses less CPU than subprocess",
        r["median"] < 1.0,
        f"ours {t['pidfd.Popen']['median'] * 1e3:.2f} ms, subprocess "
        f"{t['subprocess.Popen']['median'] * 1e3:.2f} ms CPU in all "
        f"(ratio {r['median']:.2f}x, min {r['min']:.2f}, max {r['max']:.2f})",
    )


# --- report -------------------------------------------------------------------------


def fmt(s: dict, spec: str = ".2f", unit: str = "") -> str:
    return f"{s['median']:{spec}}{unit} ({s['min']:{spec}}-{s['max']:{spec}})"


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

    if "w1" in a:
        w1 = a["w1"]
        L.append(
            f"### W1: one sync reap of an exited child "
            f"(batches of {w1['batch']}, {w1['reps']} repetitions)"
        )
        L.append("")
        L.append("| method | ns per reap | x os.waitpid |")
        L.append("|---|---:|---:|")
        for name, m in w1["methods"].items():
            L.append(f"| {name} | {fmt(m['ns_per_reap'], '.0f')} | {fmt(m['ratio'])} |")
        L.append("")

    if "w2" in a:
        w2 = a["w2"]
        for backend in BACKENDS:
            b = w2["backends"][backend]
            L.append(f"### W2: async fan-in on {backend}")
            L.append("")
            L.append(
                f"| peer | N | total s | x floor | parent CPU µs/child | "
                f"peak threads (N={w2['memory_n']}) | peak RSS growth MiB (N={w2['memory_n']}) |"
            )
            L.append("|---|---:|---:|---:|---:|---:|---:|")
            for peer in b["memory"]:
                mem = b["memory"][peer]
                for n in w2["sizes"]:
                    t = b[str(n)][peer]
                    L.append(
                        f"| {peer} | {n} | {fmt(t['seconds'], '.3f')} | "
                        f"{fmt(t['ratio_to_floor'])} | {fmt(t['cpu_us_per_child'], '.0f')} | "
                        f"{fmt(mem['peak_threads'], '.0f')} | "
                        f"{fmt(mem['peak_rss_growth_mib'], '.1f')} |"
                    )
            L.append("")

    if "w3" in a:
        w3 = a["w3"]
        L.append(
            f"### W3: wake-up latency, µs from the child's last stamp to the waiter "
            f"holding the status ({w3['rounds']} samples each)"
        )
        L.append("")
        L.append("| waiter | p50 | p90 | p99 | p50 per third of the run |")
        L.append("|---|---:|---:|---:|---:|")
        for name, p in w3["peers"].items():
            L.append(
                f"| {name} | {p['p50']:.0f} | {p['p90']:.0f} | {p['p99']:.0f} | "
                f"{fmt(p['p50_per_chunk'], '.0f')} |"
            )
        L.append("")

    if "w4" in a:
        w4 = a["w4"]
        L.append(f"### W4: {w4['n']} children, one async waiter each, then all SIGKILLed")
        L.append("")
        L.append(
            "| backend | waiter | threads | fds growth | RSS growth MiB | kill → all reaped s |"
        )
        L.append("|---|---|---:|---:|---:|---:|")
        for backend in BACKENDS:
            for peer in ("floor", "ours"):
                m = w4[backend][peer]
                L.append(
                    f"| {backend} | {peer} | {fmt(m['threads'], '.0f')} | "
                    f"{fmt(m['fds_growth'], '.0f')} | {fmt(m['rss_growth_mib'], '.1f')} | "
                    f"{fmt(m['kill_to_reaped_s'], '.3f')} |"
                )
        L.append("")

    if "w5" in a:
        report_w5(a["w5"], L)
    if "w6" in a:
        report_w6(a["w6"], L)
    if "w6b" in a:
        report_w6b(a["w6b"], L)

    L.append("### Targets")
    L.append("")
    for t in a["targets"]:
        L.append(f"- **{'MET' if t['met'] else 'NOT MET'}** {t['target']}: {t['detail']}")
    return "\n".join(L)


def report_w5(w5: dict, L: list[str]) -> None:
    L.append(
        f"### W5: sync spawn + wait of /bin/true, one child at a time "
        f"({w5['reps']} repetitions; ratios to subprocess.Popen+wait, ours run() "
        f"to subprocess.run)"
    )
    L.append("")
    L.append("| peer | stdout | N | wall µs/child | x ref | parent CPU µs/child | x ref |")
    L.append("|---|---|---:|---:|---:|---:|---:|")
    for mode, by_n in w5["modes"].items():
        for n, per_peer in by_n.items():
            for peer, m in per_peer.items():
                L.append(
                    f"| {peer} | {mode} | {n} | {fmt(m['wall_us'], '.0f')} | "
                    f"{fmt(m['wall_ratio_to_ref'])} | {fmt(m['cpu_us'], '.0f')} | "
                    f"{fmt(m['cpu_ratio_to_ref'])} |"
                )
    t = w5["timeout_cpu_s"]
    count, each = w5["timeout_waits"]["count"], w5["timeout_waits"]["each_s"]
    L.append("")
    L.append(f"CPU of the parent over {count} `wait(timeout={each})` on a running child:")
    L.append("")
    L.append("| class | CPU ms in all |")
    L.append("|---|---:|")
    for cls, v in t.items():
        L.append(f"| {cls} | {v['median'] * 1e3:.2f} ({v['min'] * 1e3:.2f}-{v['max'] * 1e3:.2f}) |")
    L.append("")


def report_w6(w6: dict, L: list[str]) -> None:
    for backend in BACKENDS:
        b = w6[backend]
        L.append(
            f"### W6: N concurrent `run_process(['/bin/true'])`, stdout+stderr captured, "
            f"on {backend} (x fastest: ratio to the fastest of {', '.join(b['rivals'])} "
            f"in the same repetition)"
        )
        L.append("")
        L.append(
            "| peer | N | wall s | x fastest | x floor | parent CPU µs/child | x fastest | "
            f"x floor | peak threads (N={w6['threads_n']}) |"
        )
        L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for peer in b["by_n"][str(w6["sizes"][0])]:
            for n in w6["sizes"]:
                m = b["by_n"][str(n)][peer]
                L.append(
                    f"| {peer} | {n} | {fmt(m['seconds'], '.3f')} | "
                    f"{fmt(m['wall_to_fastest_peer'])} | {fmt(m['wall_to_floor'])} | "
                    f"{fmt(m['cpu_us_per_child'], '.0f')} | {fmt(m['cpu_to_fastest_peer'])} | "
                    f"{fmt(m['cpu_to_floor'])} | "
                    f"{'-' if m['peak_threads'] is None else m['peak_threads']} |"
                )
        L.append("")


def report_w6b(w6b: dict, L: list[str]) -> None:
    L.append(
        f"### W6b: {w6b['n']} `cat` children with stdin and stdout on pipes, "
        "all alive at once on one event loop, then each fed, closed and waited"
    )
    L.append("")
    L.append(
        "| backend | peer | alive at once | peak threads | fds growth | RSS growth MiB "
        "(held) | peak RSS growth MiB | open all s | release → all reaped s |"
    )
    L.append("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for backend in BACKENDS:
        sc = w6b[backend]
        for peer in ("floor", "ours"):
            m = sc[peer]
            L.append(
                f"| {backend} | {peer} | {fmt(m['alive_at_hold'], '.0f')} | "
                f"{fmt(m['peak_threads'], '.0f')} | {fmt(m['fds_growth'], '.0f')} | "
                f"{fmt(m['rss_growth_mib'], '.1f')} | {fmt(m['peak_rss_growth_mib'], '.1f')} | "
                f"{fmt(m['open_all_s'], '.2f')} | {fmt(m['release_to_reaped_s'], '.2f')} |"
            )
    L.append("")


def plot(a: dict, meta: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    fig, axes = plt.subplots(2, 2, figsize=(15, 10.5))

    def hbars(ax, labels, summaries, xlabel, title, highlight=("ours",), ref=None):
        meds = [s["median"] for s in summaries]
        lo = [s["median"] - s["min"] for s in summaries]
        hi = [s["max"] - s["median"] for s in summaries]
        colors = [
            "tab:orange" if any(h in lab for h in highlight) else "tab:blue" for lab in labels
        ]
        y = range(len(labels))
        ax.barh(list(y), meds, xerr=[lo, hi], color=colors, capsize=3)
        ax.set_yticks(list(y))
        ax.set_yticklabels(labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel(xlabel)
        ax.set_title(title, fontsize=10)
        if ref is not None:
            ax.axvline(ref, color="grey", linestyle="--", linewidth=1)
        ax.grid(axis="x", alpha=0.3)

    w1 = a["w1"]
    hbars(
        axes[0][0],
        list(w1["methods"]),
        [m["ratio"] for m in w1["methods"].values()],
        "x os.waitpid (same repetition), log scale; label: ns per reap",
        "W1: one sync reap of an exited child",
        ref=1.0,
    )
    axes[0][0].set_xscale("log")
    axes[0][0].set_xlim(0.5, 200)
    for i, m in enumerate(w1["methods"].values()):
        axes[0][0].text(
            m["ratio"]["max"] * 1.1,
            i,
            f"{m['ns_per_reap']['median']:.0f} ns",
            va="center",
            fontsize=8,
        )

    w2 = a["w2"]
    n = str(max(w2["sizes"]))
    labels, sums = [], []
    for backend in BACKENDS:
        b = w2["backends"][backend]
        for peer in b["memory"]:
            short = peer.split(":")[0]
            labels.append(f"{backend}: {short}")
            sums.append(b[n][peer]["ratio_to_floor"])
    hbars(
        axes[0][1],
        labels,
        sums,
        "total time x hand-written floor (same process)",
        f"W2: async fan-in of N={n} children",
        ref=1.0,
    )

    w3 = a["w3"]["peers"]
    names = list(w3)
    ax = axes[1][0]
    hbars(
        ax,
        names,
        [w3[x]["p50_per_chunk"] for x in names],
        "µs (bar: p50 of each third of the run, median and range; dot: p90, cross: p99)",
        "W3: wake-up latency",
    )
    ax.plot([w3[x]["p90"] for x in names], list(range(len(names))), "k.", label="p90")
    ax.plot([w3[x]["p99"] for x in names], list(range(len(names))), "kx", label="p99")
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.set_xlim(200, 2 * max(w3[x]["p99"] for x in names))

    w4 = a["w4"]
    ax = axes[1][1]
    labels = [f"{b}: {p}" for b in BACKENDS for p in ("floor", "ours")]
    hbars(
        ax,
        labels,
        [w4[b][p]["rss_growth_mib"] for b in BACKENDS for p in ("floor", "ours")],
        "RSS growth while holding, MiB (label: kill → all reaped)",
        f"W4: {w4['n']} children held, then killed",
    )
    for i, (b, p) in enumerate((b, p) for b in BACKENDS for p in ("floor", "ours")):
        ax.text(
            w4[b][p]["rss_growth_mib"]["median"],
            i,
            f"  {w4[b][p]['kill_to_reaped_s']['median']:.2f} s, "
            f"{w4[b][p]['threads']['max']:.0f} thread(s)",
            va="center",
            fontsize=8,
        )

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

    only = WORKLOADS
    if args.only:
        only = tuple(w.strip().lower() for w in args.only.split(","))
        unknown = [w for w in only if w not in WORKLOADS]
        if unknown:
            ap.error(f"unknown workload(s) {unknown}; choose from {', '.join(WORKLOADS)}")
    check_peers()
    become_subreaper()
    sizes = json.loads(json.dumps(SIZES["quick" if args.quick else "default"]))
    if args.w4_n:
        sizes["w4"]["n"] = args.w4_n
    if args.w6b_n:
        sizes["w6b"]["n"] = args.w6b_n
    meta = machine()
    meta["mode"] = "quick" if args.quick else "default"
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
    name = "latest.json" if only == WORKLOADS else f"only-{'-'.join(only)}.json"
    no_plot = args.no_plot or only != WORKLOADS
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
