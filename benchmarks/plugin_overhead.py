"""The cost of the pytest plugin: a suite of trivial tests with and without it.

Target (issue 20): a 500-test suite of trivial tests costs at most 5% more
wall time with ``--pidfd-leaks=kill`` than with the plugin off. Each
repetition runs the same generated suite as a fresh ``python -m pytest``
three times -- the plugin not loaded (``-p no:pidfd``), off, and kill, in an
order rotated between repetitions -- and takes the ratios of the wall times
within the repetition; the ratios are then summarised (median, min-max).
Whole runs are timed, interpreter start and collection included, since that
is what a user waits for.

Self-contained, runnable alone::

    python benchmarks/plugin_overhead.py            # 9 repetitions, ~1-2 min on 2 cores idle
    python benchmarks/plugin_overhead.py --reps 3   # quicker, noisier
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET = 1.05


def make_suite(root: Path, tests: int, per_file: int = 100) -> None:
    """``tests`` trivial test functions, ``per_file`` to a module."""
    for start in range(0, tests, per_file):
        body = "".join(
            f"def test_{n}():\n    assert True\n\n\n"
            for n in range(start, min(tests, start + per_file))
        )
        (root / f"test_m{start // per_file}.py").write_text(body)
    # An ini of its own, so that no configuration above the folder applies.
    (root / "pytest.ini").write_text("[pytest]\n")


def run_once(root: Path, mode: str, tests: int) -> float:
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    # "absent": the plugin not loaded at all, to show what being installed costs.
    argv += ["-p", "no:pidfd"] if mode == "absent" else [f"--pidfd-leaks={mode}"]
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=root, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0 or f"{tests} passed" not in done.stdout:
        raise SystemExit(f"the inner suite failed ({mode}):\n{done.stdout}\n{done.stderr}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=9, help="repetitions (default 9)")
    parser.add_argument("--tests", type=int, default=500, help="trivial tests (default 500)")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="pidfd-plugin-bench-") as tmp:
        root = Path(tmp)
        make_suite(root, args.tests)
        run_once(root, "off", args.tests)  # warm the page cache and the bytecode
        absent: list[float] = []
        off: list[float] = []
        kill: list[float] = []
        ratios: list[float] = []
        installed: list[float] = []
        modes = ["absent", "off", "kill"]
        for rep in range(args.reps):
            order = modes[rep % 3 :] + modes[: rep % 3]  # rotated
            times = {mode: run_once(root, mode, args.tests) for mode in order}
            absent.append(times["absent"])
            off.append(times["off"])
            kill.append(times["kill"])
            ratios.append(times["kill"] / times["off"])
            installed.append(times["off"] / times["absent"])

    def summary(values: list[float], fmt: str) -> str:
        return (
            f"{format(statistics.median(values), fmt)} "
            f"({format(min(values), fmt)}-{format(max(values), fmt)})"
        )

    per_test_us = [(k - o) / args.tests * 1e6 for k, o in zip(kill, off, strict=True)]
    ratio = statistics.median(ratios)
    print(f"{args.tests} trivial tests, {args.reps} repetitions, median (min-max)\n")
    print("| run | wall time, s |")
    print("|---|---|")
    print(f"| plugin not loaded (-p no:pidfd) | {summary(absent, '.3f')} |")
    print(f"| plugin off (installed, not asked) | {summary(off, '.3f')} |")
    print(f"| --pidfd-leaks=kill | {summary(kill, '.3f')} |")
    print(f"| ratio kill / off | {summary(ratios, '.3f')} |")
    print(f"| extra per test, us | {summary(per_test_us, '.0f')} |")
    print(f"| ratio off / not loaded | {summary(installed, '.3f')} |")
    verdict = "MET" if ratio <= TARGET else "NOT MET"
    print(f"\n**{verdict}**: kill / off = {ratio:.3f} (target <= {TARGET})")
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {"tests": args.tests, "absent": absent, "off": off, "kill": kill, "ratios": ratios},
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
