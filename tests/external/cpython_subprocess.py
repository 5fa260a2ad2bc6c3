"""CPython's own ``test_subprocess``, run against ``pidfd.Popen``: the external bar.

For every CPython >= 3.11 found on this machine that ships its ``test``
package, run ``test.test_subprocess`` twice -- once as it is, once with
``subprocess.Popen`` replaced by ``pidfd.Popen`` before the test module is
imported -- and compare the outcome of every test: each test that passes
with the stock class must pass with ours, and each skip must be the same
skip. Tests that cannot apply to a pidfd-based Popen are listed below in
``NOT_APPLICABLE`` with the reason; nothing is dropped silently.

Interpreters looked for: ``$PYENV_ROOT/versions/3.*`` (default
``~/.pyenv``), ``python3.11`` .. ``python3.19`` on ``PATH``, ``python3`` and
the interpreter running this script. Each is identified by what it reports
about itself, so one found twice runs once. Debian and Ubuntu ship the test
package separately (``libpython3.X-testsuite``); an interpreter without it
is listed as skipped, with that reason.

Usage::

    python tests/external/cpython_subprocess.py --wheel dist/async_pidfd-*.whl
    python tests/external/cpython_subprocess.py            # an importable pidfd
    python tests/external/cpython_subprocess.py --python python3.12 -k test_wait

With ``--wheel``, each interpreter gets a fresh virtualenv with the wheel
installed from it (its dependencies come from the package index). Without,
the ``pidfd`` and ``anyio`` this script can import (e.g. an editable
install: the extension is abi3, so one build serves every version) are put
on the path of a fresh virtualenv. Both runs of one interpreter go side by
side; the whole thing takes about 40 s per interpreter. A free-threaded
CPython runs only with ``--wheel`` naming the version-specific wheel built
for it (``scripts/free-threaded`` does so for 3.14t); the abi3 one cannot
load there. Exit status 0 when
every interpreter met the bar, 1 when one did not, 2 when none was found.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import unittest
from pathlib import Path
from typing import Any

# test id suffix (Class.method) -> why the test cannot pass with pidfd.Popen.
NOT_APPLICABLE: dict[str, str] = {
    "POSIXProcessTestCase.test_stopped": (
        "mocks os.waitpid() to return a WIFSTOPPED status and expects wait() to "
        "decode it; pidfd.Popen reaps with waitid(P_PIDFD, WEXITED), which never "
        "reports a stopped child, so the mock is never consulted and the real "
        "exit status (0) is returned"
    ),
}

# One whole run of test_subprocess must not take longer than this.
RUN_TIMEOUT = 600

# What a child interpreter reports about itself.
PROBE = textwrap.dedent(
    """
    import json, sys, sysconfig
    try:
        import test.test_subprocess  # noqa: F401
        has_tests = True
    except Exception as e:
        has_tests = repr(e)
    print(json.dumps({
        "version": list(sys.version_info[:3]),
        "implementation": sys.implementation.name,
        "base_prefix": sys.base_prefix,
        "executable": sys.executable,
        "gil_disabled": bool(sysconfig.get_config_var("Py_GIL_DISABLED")),
        "has_tests": has_tests,
    }))
    """
)


# -- the driver: runs inside the interpreter under test --------------------------


# The share of pidfd.Popen children that must be started by the native
# (clone3) spawn rather than the stock fallback.
NATIVE_SHARE = 0.90

# The test running now, for the spawn counter.
_current_test = [""]


class _Recorder(unittest.TestResult):
    """Keeps one outcome per test id."""

    def __init__(self) -> None:
        super().__init__()
        self.outcomes: dict[str, list[str]] = {}

    def startTest(self, test: unittest.TestCase) -> None:
        _current_test[0] = test.id()
        super().startTest(test)

    def _set(self, test: unittest.TestCase, outcome: str, detail: str = "") -> None:
        key = test.id()
        # A failing subtest makes the whole test fail; never overwrite that.
        if self.outcomes.get(key, [""])[0] in ("fail", "error"):
            return
        self.outcomes[key] = [outcome, detail]

    def addSuccess(self, test: unittest.TestCase) -> None:
        self.outcomes.setdefault(test.id(), ["pass", ""])

    def addFailure(self, test: unittest.TestCase, err: object) -> None:
        self._set(test, "fail", self._exc_info_to_string(err, test))  # type: ignore[arg-type]

    def addError(self, test: unittest.TestCase, err: object) -> None:
        self._set(test, "error", self._exc_info_to_string(err, test))  # type: ignore[arg-type]

    def addSkip(self, test: unittest.TestCase, reason: str) -> None:
        self._set(test, "skip", reason)

    def addExpectedFailure(self, test: unittest.TestCase, err: object) -> None:
        self._set(test, "xfail")

    def addUnexpectedSuccess(self, test: unittest.TestCase) -> None:
        self._set(test, "xpass")

    def addSubTest(self, test: unittest.TestCase, subtest: unittest.TestCase, err: object) -> None:
        if err is not None:
            kind = "fail" if issubclass(err[0], test.failureException) else "error"  # type: ignore[index]
            self._set(test, kind, self._exc_info_to_string(err, test))  # type: ignore[arg-type]


def driver(mode: str, out: str, patterns: list[str]) -> None:
    """Run test.test_subprocess in this interpreter; write outcomes to ``out``."""
    import faulthandler
    import subprocess as sp

    faulthandler.dump_traceback_later(RUN_TIMEOUT - 30, exit=True)
    info: dict[str, object] = {"mode": mode}
    if mode == "pidfd":
        import pidfd

        reaped = [0]
        close = pidfd.Popen._close_pidfd

        def counting(self: pidfd.Popen[bytes]) -> None:
            reaped[0] += 1
            close(self)

        pidfd.Popen._close_pidfd = counting  # type: ignore[method-assign]
        spawns = {"clone3": 0, "subprocess": 0}
        fallbacks: dict[str, list[object]] = {}
        execute = pidfd.Popen._execute_child

        def spawning(self: pidfd.Popen[bytes], *args: object, **kwargs: object) -> None:
            try:
                execute(self, *args, **kwargs)
            finally:
                path = self.spawn_path
                spawns[path] = spawns.get(path, 0) + 1
                if path != "clone3":
                    entry = fallbacks.setdefault(_current_test[0], [why_stock(args), 0])
                    entry[1] += 1  # type: ignore[operator]

        pidfd.Popen._execute_child = spawning  # type: ignore[method-assign]
        sp.Popen = pidfd.Popen  # type: ignore[misc]
        info["pidfd"] = pidfd.__file__
    from test import test_subprocess

    loader = unittest.TestLoader()
    if patterns:
        loader.testNamePatterns = [p if "*" in p else f"*{p}*" for p in patterns]
    suite = loader.loadTestsFromModule(test_subprocess)
    result = _Recorder()
    suite.run(result)
    if mode == "pidfd":
        info["reaped_through_pidfd"] = reaped[0]
        info["popen_was_ours"] = sp.Popen is pidfd.Popen
        info["spawns"] = spawns
        info["fallbacks"] = fallbacks
    info["outcomes"] = result.outcomes
    Path(out).write_text(json.dumps(info))


def why_stock(args: tuple[object, ...]) -> str:
    """Why a spawn (``_execute_child``'s arguments) took the stock path."""
    import _posixsubprocess
    import subprocess as sp

    if len(args) > 2 and args[2] is not None:
        return "preexec_fn (Python code in the child)"
    if sp.__dict__.get("_fork_exec") is not _posixsubprocess.fork_exec:
        return "subprocess._fork_exec is mocked (the test checks its calls)"
    if not sp.__dict__.get("_USE_VFORK", True):
        return "subprocess._USE_VFORK is off"
    return "the spawn raised before the child was started, or clone3 was refused"


# -- the runner ----------------------------------------------------------------------


def probe(exe: str) -> dict[str, object] | str:
    try:
        proc = subprocess.run([exe, "-I", "-c", PROBE], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"cannot run: {e}"
    if proc.returncode != 0:
        return f"cannot run: {proc.stderr.strip().splitlines()[-1:] or proc.returncode}"
    found: dict[str, object] = json.loads(proc.stdout)
    return found


def candidates(explicit: list[str]) -> list[str]:
    if explicit:
        return [shutil.which(e) or e for e in explicit]
    found: list[str] = []
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    found += sorted(glob.glob(os.path.join(root, "versions", "3.*", "bin", "python3")))
    for minor in range(11, 20):
        path = shutil.which(f"python3.{minor}")
        if path:
            found.append(path)
    for name in ("python3",):
        path = shutil.which(name)
        if path:
            found.append(path)
    found.append(sys.executable)
    return found


def wheel_unfit(found: dict[str, object], wheel: str | None) -> str | None:
    """Why the module under test cannot load in this interpreter, or ``None``.

    The abi3 wheel (and an editable build) serves every CPython >= 3.11 with
    a GIL; a free-threaded one needs the version-specific wheel built for it
    (``cp314-cp314t``, as scripts/free-threaded builds), given as ``--wheel``.
    """
    version: list[int] = found["version"]  # type: ignore[assignment]
    # name-version(-build)?-python-abi-platform.whl
    abi = Path(wheel).name.split("-")[-2] if wheel else "abi3"
    own = f"cp{version[0]}{version[1]}t"
    if found["gil_disabled"]:
        if abi == own:
            return None
        if wheel:
            return f"free-threaded, cannot load a {abi} wheel (needs a {own} one)"
        return f"free-threaded, cannot load the abi3 extension (pass --wheel with a {own} wheel)"
    if abi != "abi3":
        return f"the wheel is built for {abi} only"
    return None


def make_env(py: str, workdir: Path, wheel: str | None) -> str:
    """A fresh virtualenv for ``py`` with pidfd importable; returns its python."""
    venv = workdir / "venv"
    vpy = str(venv / "bin" / "python")
    if wheel:
        subprocess.run([py, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [vpy, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", wheel],
            check=True,
        )
    else:
        subprocess.run([py, "-m", "venv", "--without-pip", str(venv)], check=True)
        import anyio

        import pidfd

        dirs = {
            str(Path(pidfd.__file__).resolve().parent.parent),
            str(Path(anyio.__file__).resolve().parent.parent),
        }
        site = subprocess.run(
            [vpy, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        Path(site, "_pidfd_under_test.pth").write_text("\n".join(sorted(dirs)) + "\n")
    return vpy


def run_mode(vpy: str, mode: str, workdir: Path, patterns: list[str]) -> dict[str, object]:
    out = workdir / f"{mode}.json"
    cmd = [vpy, __file__, "--driver", mode, str(out), *(["-k", *patterns] if patterns else [])]
    # Each mode in a folder of its own: the two run side by side, and some
    # tests create fixed names in the working directory (tempcwd).
    cwd = workdir / f"cwd-{mode}"
    cwd.mkdir(exist_ok=True)
    # Its own session: a test that signals its process group stays inside.
    proc = subprocess.run(
        cmd,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        start_new_session=True,
    )
    if not out.exists():
        raise RuntimeError(
            f"the {mode} run died (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n"
            f"{proc.stderr[-3000:]}"
        )
    result: dict[str, object] = json.loads(out.read_text())
    return result


def not_applicable(test_id: str) -> str | None:
    for suffix, reason in NOT_APPLICABLE.items():
        if test_id.endswith(suffix):
            return reason
    return None


def compare(stock: dict[str, list[str]], ours: dict[str, list[str]]) -> tuple[list[str], list[str]]:
    """Problems (the bar is missed) and notes (listed, or failing in both)."""
    problems: list[str] = []
    notes: list[str] = []
    for test_id in sorted(set(stock) | set(ours)):
        s = stock.get(test_id, ["missing", ""])
        o = ours.get(test_id, ["missing", ""])
        reason = not_applicable(test_id)
        if reason is not None:
            notes.append(f"not applicable: {test_id}: stock {s[0]}, ours {o[0]} ({reason})")
            continue
        if s[0] == "pass" and o[0] != "pass":
            problems.append(f"{test_id}: passes with stock, {o[0]} with pidfd.Popen\n{o[1]}")
        elif s[0] == "skip" and o != s:
            problems.append(f"{test_id}: stock skips ({s[1]!r}), ours {o[0]} {o[1]!r}")
        elif s[0] != "skip" and o[0] == "skip":
            problems.append(f"{test_id}: stock {s[0]}, ours skips ({o[1]!r})")
        elif s[0] in ("fail", "error", "missing"):
            notes.append(f"stock {s[0]} (not held against us): {test_id}: ours {o[0]}")
    return problems, notes


def check(py: str, label: str, wheel: str | None, patterns: list[str]) -> bool:
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="pidfd-cpython-") as tmp:
        work = Path(tmp)
        vpy = make_env(py, work, wheel)
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            runs = {m: pool.submit(run_mode, vpy, m, work, patterns) for m in ("stock", "pidfd")}
            stock, ours = runs["stock"].result(), runs["pidfd"].result()
        s_out: dict[str, list[str]] = stock["outcomes"]  # type: ignore[assignment]
        o_out: dict[str, list[str]] = ours["outcomes"]  # type: ignore[assignment]
        problems, notes = compare(s_out, o_out)
        if not ours.get("popen_was_ours") or not ours.get("reaped_through_pidfd"):
            problems.append(f"pidfd.Popen was not exercised: {ours.get('reaped_through_pidfd')}")
        spawns: dict[str, int] = ours.get("spawns") or {}  # type: ignore[assignment]
        fallbacks: dict[str, list[Any]] = ours.get("fallbacks") or {}  # type: ignore[assignment]
        total = sum(spawns.values())
        native = spawns.get("clone3", 0)
        share = native / total if total else 0.0
        if share < NATIVE_SHARE:
            problems.append(
                f"only {native} of {total} pidfd.Popen children ({share:.0%}) took the native "
                f"spawn; the bar is {NATIVE_SHARE:.0%}"
            )
        # A test that failed with ours may be a timing flake: rerun those alone.
        retry = [p.split(":", 1)[0] for p in problems if p.startswith("test.")]
        if retry:
            again = run_mode(vpy, "pidfd", work, [t.rsplit(".", 1)[-1] for t in retry])
            a_out: dict[str, list[str]] = again["outcomes"]  # type: ignore[assignment]
            still = []
            for p in problems:
                test_id = p.split(":", 1)[0]
                if test_id in a_out and a_out[test_id][0] == s_out.get(test_id, [""])[0]:
                    first = (p.strip().splitlines() or [""])[-1]
                    notes.append(f"flaky, passed when rerun alone: {test_id} (first run: {first})")
                else:
                    still.append(p)
            problems = still
    counts: dict[str, int] = {}
    for outcome, _ in o_out.values():
        counts[outcome] = counts.get(outcome, 0) + 1
    summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    print(
        f"\n--- {label}: {len(o_out)} tests with pidfd.Popen ({summary}); "
        f"{ours.get('reaped_through_pidfd')} children reaped through a pidfd"
    )
    print(
        f"--- {label}: {native} of {total} pidfd.Popen children ({share:.1%}) started by the "
        f"native clone3 spawn; the stock spawn in {len(fallbacks)} tests:"
    )
    by_reason: dict[str, list[str]] = {}
    for test_id, (reason, n) in sorted(fallbacks.items(), key=lambda kv: -kv[1][1]):
        by_reason.setdefault(reason, []).append(f"{test_id.rsplit('.', 1)[-1]} ({n})")
    for reason, tests in sorted(by_reason.items()):
        more = ", ..." if len(tests) > 8 else ""
        print(f"    {reason}: {len(tests)} tests: {', '.join(tests[:8])}{more}")
    for n in notes:
        print(f"    note: {n}")
    for p in problems:
        print(f"    PROBLEM: {p}")
    elapsed = time.monotonic() - start
    print(f"--- {label}: {'MET' if not problems else 'NOT MET'} ({elapsed:.0f} s)")
    return not problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wheel", help="install this wheel in each interpreter's venv")
    parser.add_argument("--python", action="append", default=[], help="only these interpreters")
    parser.add_argument("-k", dest="patterns", nargs="+", default=[], help="only tests matching")
    parser.add_argument("--driver", nargs=2, metavar=("MODE", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.driver:
        driver(args.driver[0], args.driver[1], args.patterns)
        return 0
    wheel = os.path.abspath(args.wheel) if args.wheel else None

    chosen: dict[tuple[object, ...], tuple[str, str]] = {}
    skipped: list[str] = []
    for exe in candidates(args.python):
        found = probe(exe)
        if isinstance(found, str):
            skipped.append(f"{exe}: {found}")
            continue
        version = tuple(found["version"])  # type: ignore[arg-type]
        label = f"CPython {'.'.join(map(str, version))} ({found['executable']})"
        key = (found["base_prefix"], version, found["gil_disabled"])
        if key in chosen:
            continue
        if found["implementation"] != "cpython" or version < (3, 11):
            skipped.append(f"{label}: not CPython >= 3.11")
        elif (unfit := wheel_unfit(found, wheel)) is not None:
            skipped.append(f"{label}: {unfit}")
        elif found["has_tests"] is not True:
            skipped.append(
                f"{label}: no test package ({found['has_tests']}); on Debian/Ubuntu install "
                f"libpython3.{version[1]}-testsuite"
            )
        else:
            chosen[key] = (str(found["executable"]), label)
            continue
        chosen.setdefault(key, ("", label))  # remember, so it is reported once

    runnable = [(exe, label) for exe, label in chosen.values() if exe]
    print("CPython test_subprocess against pidfd.Popen")
    print("found:")
    for _, label in runnable:
        print(f"    {label}")
    print("skipped:")
    for s in skipped or ["(none)"]:
        print(f"    {s}")
    print("not applicable (listed, with the reason):")
    for t, r in NOT_APPLICABLE.items():
        print(f"    {t}: {r}")
    if not runnable:
        print("no CPython >= 3.11 with its test package was found", file=sys.stderr)
        return 2
    ok = True
    for exe, label in runnable:
        try:
            ok &= check(exe, label, wheel, args.patterns)
        except (RuntimeError, subprocess.SubprocessError) as e:
            print(f"--- {label}: NOT MET: {e}")
            ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
