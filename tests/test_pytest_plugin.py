"""The pytest plugin (``--pidfd-leaks``): each case runs a real inner pytest session.

Inner sessions run in a subprocess (``runpytest_subprocess``): the plugin sets
the child-subreaper flag and ends processes, which must not happen to the
pytest running these tests.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pidfd import PidFd
from pidfd._leak_cgroups import cgroup2_mount as _cgroup2_mount

pytest_plugins = ["pytester"]

# Each inner session starts a fresh interpreter; on a loaded machine that
# takes seconds, xdist's workers more.
INNER_TIMEOUT = 120

LEAKS = """
import pathlib, subprocess

def test_leaks():
    child = subprocess.Popen(["sleep", "60"])
    while not pathlib.Path(f"/proc/{child.pid}/cmdline").read_bytes().startswith(b"sleep"):
        pass  # until it has run exec, so that the report names it
    pathlib.Path("pids").write_text(str(child.pid))

def test_clean():
    subprocess.run(["true"], check=True)

def test_clean_too():
    child = subprocess.Popen(["sleep", "60"])
    child.kill()
    child.wait()
"""


def _is_sleep(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().startswith(b"sleep\0")
    except FileNotFoundError:
        return False


def _gone(pid: int) -> bool:
    """The process is gone (its pid free, or reused by something else)."""
    return not _is_sleep(pid)


def _end(pid: int) -> None:
    """Kill and reap a process an inner session left on purpose (report mode)."""
    if not _is_sleep(pid):
        return
    with contextlib.suppress(ProcessLookupError), PidFd.from_pid(pid) as handle:
        handle.kill()
        try:
            handle.wait(timeout=30)  # re-parented to us: this pytest is a subreaper
        except ChildProcessError:
            handle.wait_exit(timeout=30)


def _pids(pytester: pytest.Pytester, name: str = "pids") -> list[int]:
    return [int(word) for word in (pytester.path / name).read_text().split()]


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=INNER_TIMEOUT)


@contextlib.contextmanager
def _session(pytester: pytest.Pytester, *args: str) -> Iterator[tuple[pytest.RunResult, list[int]]]:
    """An inner session; then the processes its tests recorded in `pids` are ended."""
    result = _run(pytester, *args)
    pids = _pids(pytester)
    try:
        yield result, pids
    finally:
        for pid in pids:
            _end(pid)


WERROR = "error::pidfd.pytest_plugin.LeakedProcessWarning"


def test_report_warns_naming_the_process_and_the_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_report=LEAKS)
    with _session(pytester, "--pidfd-leaks=report") as (result, (pid,)):
        result.assert_outcomes(passed=3, warnings=1)
        result.stdout.fnmatch_lines(
            [
                "test_report.py::test_leaks",
                "*test_report.py:3: LeakedProcessWarning: the test test_report.py::test_leaks "
                "left 1 process behind:",
                f"    pid {pid} (child): sleep 60",
            ]
        )
        assert "test_clean" not in result.stdout.str()
        assert _is_sleep(pid)  # report only


def test_kill_ends_the_process(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_kill=LEAKS)
    with _session(pytester, "--pidfd-leaks=kill") as (result, (pid,)):
        result.assert_outcomes(passed=3, warnings=1)
        result.stdout.fnmatch_lines([f"    pid {pid} (child): sleep 60 -- ended by SIGTERM"])
        assert _gone(pid)


def test_fail_fails_that_test_only_set_in_the_ini_file(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_fail=LEAKS)
    pytester.makeini("[pytest]\npidfd_leaks = fail\n")
    with _session(pytester) as (result, (pid,)):
        # The teardown of the test that leaked errors; its call and the other tests pass.
        result.assert_outcomes(passed=3, errors=1)
        result.stdout.fnmatch_lines(
            [
                "*ERROR at teardown of test_leaks*",
                "the test test_fail.py::test_leaks left 1 process behind:",
                f"  pid {pid} (child): sleep 60 -- ended by SIGTERM",
            ]
        )
        assert result.ret == pytest.ExitCode.TESTS_FAILED
        assert _gone(pid)


def test_the_warning_can_be_made_an_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_werror=LEAKS)
    with _session(pytester, "--pidfd-leaks=kill", "-W", WERROR) as (result, (pid,)):
        result.assert_outcomes(passed=3, errors=1)
        assert _gone(pid)


def test_a_setsid_double_fork_daemon_is_found_and_ended(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_daemon="""
        import os, pathlib, subprocess, time

        def test_daemon():
            # sh forks a shell that leaves our session and starts sleep, then both exit.
            subprocess.run(
                ["sh", "-c", "setsid sh -c 'sleep 60 & echo $! > pids' &"], check=True
            )
            while not pathlib.Path("pids").exists() or not pathlib.Path("pids").read_text():
                time.sleep(0.01)
            pid = int(pathlib.Path("pids").read_text())
            # Until its parent has exited, it is not ours to find.
            while os.getpid() != int(open(f"/proc/{pid}/stat").read().rsplit(")")[1].split()[1]):
                time.sleep(0.01)
        """
    )
    with _session(pytester, "--pidfd-leaks=kill") as (result, (pid,)):
        result.assert_outcomes(passed=1, warnings=1)
        result.stdout.fnmatch_lines(
            [
                "*the test test_daemon.py::test_daemon left 1 process behind:",
                f"    pid {pid} (orphan): sleep 60 -- ended by SIGTERM",
            ]
        )
        assert _gone(pid)


# 204 tests that start processes in every common way and end them: not one is
# reported. The last test asserts what the flag is, so the same suite shows
# the plugin inactive too.
CLEAN_SUITE = """
import asyncio, os, signal, subprocess, sys, time
import pytest
import pidfd
from pidfd._native import _child_subreaper

def _run():
    subprocess.run(["true"], check=True)

def _popen_killed():
    child = subprocess.Popen(["sleep", "60"])
    child.terminate()
    child.wait()

def _ours():
    pidfd.run(["true"], check=True)

def _fork_waitpid():
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)

def _wait_any_child():
    # A test that reaps "any child" gets its own: nothing else is ours now.
    pid = os.fork()
    if pid == 0:
        os._exit(3)
    assert os.waitpid(-1, 0) == (pid, 3 << 8)

def _background_job_waited():
    subprocess.run(["sh", "-c", "sleep 0 & wait"], check=True)

def _asyncio():
    async def main():
        child = await asyncio.create_subprocess_exec("true")
        await child.wait()
    asyncio.run(main())

def _subreaper_block():
    with pidfd.Subreaper(grace=5):
        subprocess.run(["sh", "-c", "sleep 60 &"], check=True)

def _orphan_that_exits():
    # Re-parented to pytest (a subreaper) or to init, it exits at once; only
    # the subreaper's zombie is left, which init would have reaped unseen.
    out = subprocess.run(["sh", "-c", "true & echo $!"], check=True, capture_output=True)
    stat = f"/proc/{int(out.stdout)}/stat"
    for _ in range(1000):
        try:
            with open(stat) as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    break
        except FileNotFoundError:
            break
        time.sleep(0.005)

KINDS = [_orphan_that_exits, _run, _popen_killed, _ours, _fork_waitpid, _wait_any_child,
         _background_job_waited, _asyncio, _subreaper_block]

@pytest.fixture
def server():
    child = subprocess.Popen(["sleep", "60"])
    yield child
    child.kill()
    child.wait()

@pytest.mark.parametrize("kind", KINDS * 22, ids=lambda f: f.__name__)
def test_spawn_and_end(kind):
    kind()

@pytest.mark.parametrize("n", range(4))
def test_fixture_ends_it(server, n):
    assert server.poll() is None

def test_flag(request):
    expected = request.config.getoption("pidfd_leaks", None) not in (None, "off")
    assert _child_subreaper() is expected
"""


PIDFD_PROCESSES = """
import pathlib, subprocess

def test_pidfd_processes(pidfd_processes):
    child = subprocess.Popen(["sleep", "60"])
    while not pathlib.Path(f"/proc/{child.pid}/cmdline").read_bytes().startswith(b"sleep"):
        pass  # until it has run exec, so that the report names it
    (process,) = pidfd_processes()
    assert (process.pid, process.cmdline, process.found) == (child.pid, "sleep 60", "child")
    child.kill()
    child.wait()
    assert pidfd_processes() == []
"""


def test_no_false_positives_over_a_suite_that_spawns_and_reaps(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_clean=CLEAN_SUITE, test_fixture=PIDFD_PROCESSES)
    result = _run(pytester, "--pidfd-leaks=fail", "-W", "error")
    result.assert_outcomes(passed=204)
    assert "LeakedProcessWarning" not in result.stdout.str()


def _normalized(result: pytest.RunResult) -> list[str]:
    return [re.sub(r" in [0-9.]+s", " in Ns", line) for line in result.outlines]


def test_inactive_changes_nothing_and_sets_no_subreaper(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_clean=CLEAN_SUITE)
    # The plugin loaded (the entry point) but not asked, against not loaded at all;
    # -q: the header's list of plugins differs by its name, and only there.
    loaded = _run(pytester, "-q")
    absent = _run(pytester, "-q", "-p", "no:pidfd")
    loaded.assert_outcomes(passed=203)
    assert _normalized(loaded) == _normalized(absent)
    # test_flag asserted PR_GET_CHILD_SUBREAPER == 0 in the loaded-but-off session.


def test_pidfd_processes_works_with_the_plugin_off(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_fixture=PIDFD_PROCESSES)
    _run(pytester).assert_outcomes(passed=1)


@pytest.mark.parametrize("cgroup", [[], ["--pidfd-leaks-cgroup"]], ids=["subreaper", "cgroup"])
def test_a_session_fixtures_processes_are_its_own(
    pytester: pytest.Pytester, cgroup: list[str]
) -> None:
    if cgroup:
        _skip_without_cgroups(pytester)
    pytester.makeconftest(
        """
        import pathlib, subprocess
        import pytest

        @pytest.fixture(scope="session")
        def left_running():
            child = subprocess.Popen(["sleep", "60"])
            while not pathlib.Path(f"/proc/{child.pid}/cmdline").read_bytes().startswith(b"sleep"):
                pass  # until it has run exec, so that the report names it
            pathlib.Path("pids").write_text(str(child.pid))
            yield child

        @pytest.fixture(scope="module")
        def ended_in_teardown():
            child = subprocess.Popen(["sleep", "60"])
            yield child
            child.terminate()
            child.wait()
        """
    )
    pytester.makepyfile(
        test_one="""
        def test_a(left_running, ended_in_teardown):
            assert left_running.poll() is None

        def test_b(left_running, ended_in_teardown):
            assert left_running.poll() is None
        """,
        test_two="""
        def test_c(left_running):
            assert left_running.poll() is None

        def test_d():
            pass
        """,
    )
    with _session(pytester, "--pidfd-leaks=kill", *cgroup) as (result, (pid,)):
        result.assert_outcomes(passed=4, warnings=1)
        result.stdout.fnmatch_lines(
            [
                "*conftest.py:4: LeakedProcessWarning: the session-scoped fixture 'left_running' "
                "left 1 process behind:",
                f"    pid {pid} (child): sleep 60 -- ended by SIGTERM",
            ]
        )
        assert "the test" not in result.stdout.str()
        assert _gone(pid)


def test_xdist_each_worker_checks_its_own_tests(pytester: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    pytester.makeconftest(
        """
        import os, pathlib

        def pytest_sessionfinish(session):
            config = session.config
            role = config.workerinput["workerid"] if hasattr(config, "workerinput") else "main"
            active = config.pluginmanager.has_plugin("pidfd-leaks")
            with open("roles", "a") as f:
                f.write(f"{role}={active}\\n")
        """
    )
    pytester.makepyfile(
        test_many="""
        import os, pathlib, subprocess, time
        import pytest

        @pytest.mark.parametrize("n", range(6))
        def test_leaks(n):
            child = subprocess.Popen(["sleep", "60"])
            while not pathlib.Path(f"/proc/{child.pid}/cmdline").read_bytes().startswith(b"sleep"):
                pass  # until it has run exec, so that the report names it
            with open("pids", "a") as f:
                f.write(f"{child.pid}\\n")
            time.sleep(0.2)  # so that both workers get some
        """
    )
    with _session(pytester, "-n", "2", "--pidfd-leaks=kill") as (result, pids):
        result.assert_outcomes(passed=6, warnings=6)
        for pid in pids:
            result.stdout.fnmatch_lines([f"    pid {pid} (child): sleep 60 -- ended by SIGTERM"])
            assert _gone(pid)
        roles = sorted((pytester.path / "roles").read_text().split())
        assert roles == ["gw0=True", "gw1=True", "main=False"]


def test_the_children_of_a_timed_out_test_are_ended(pytester: pytest.Pytester) -> None:
    pytest.importorskip("pytest_timeout")
    pytester.makepyfile(
        test_slow="""
        import pathlib, subprocess, time
        import pytest

        @pytest.mark.timeout(1, method="signal")
        def test_hangs():
            child = subprocess.Popen(["sleep", "60"])
            while not pathlib.Path(f"/proc/{child.pid}/cmdline").read_bytes().startswith(b"sleep"):
                pass  # until it has run exec, so that the report names it
            pathlib.Path("pids").write_text(str(child.pid))
            time.sleep(60)
        """
    )
    with _session(pytester, "--pidfd-leaks=fail") as (result, (pid,)):
        result.assert_outcomes(failed=1, errors=1)
        result.stdout.fnmatch_lines(
            [
                "*ERROR at teardown of test_hangs*",
                f"  pid {pid} (child): sleep 60 -- ended by SIGTERM",
                "*Failed: Timeout*",
            ]
        )
        assert _gone(pid)


def _skip_without_cgroups(pytester: pytest.Pytester) -> None:
    """Skip unless an inner session can run its tests in cgroups here."""
    pytester.makepyfile(test_probe="def test_probe(): pass")
    probe = _run(pytester, "--pidfd-leaks=kill", "--pidfd-leaks-cgroup", "test_probe.py")
    (pytester.path / "test_probe.py").unlink()
    if probe.ret == pytest.ExitCode.USAGE_ERROR:
        pytest.skip(probe.stderr.str().strip())
    probe.assert_outcomes(passed=1)


ESCAPES = """
import os, pathlib, subprocess, time
from pidfd._native import _set_child_subreaper

def test_escapes_the_subreaper():
    pathlib.Path("pytest-pid").write_text(str(os.getpid()))
    # Without the flag, the daemon goes to init: only the cgroup still knows it.
    _set_child_subreaper(False)
    try:
        daemon = "setsid sleep 60 > /dev/null 2>&1 & echo $!"
        out = subprocess.run(["sh", "-c", daemon], check=True, capture_output=True).stdout
    finally:
        _set_child_subreaper(True)
    pid = int(out)
    pathlib.Path("pids").write_text(str(pid))
    while not pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"sleep"):
        pass  # until it has run exec, so that the report names it
"""


@pytest.mark.parametrize("mode", ["report", "kill"])
def test_cgroup_finds_a_process_that_left_the_tree(pytester: pytest.Pytester, mode: str) -> None:
    _skip_without_cgroups(pytester)
    pytester.makepyfile(test_escapes=ESCAPES)
    with _session(pytester, f"--pidfd-leaks={mode}", "--pidfd-leaks-cgroup") as (result, (pid,)):
        result.assert_outcomes(passed=1, warnings=1)
        ended = " -- ended after SIGTERM" if mode == "kill" else ""
        result.stdout.fnmatch_lines([f"    pid {pid} (in the test's cgroup): sleep 60{ended}"])
        assert _gone(pid) is (mode == "kill")
        # Each test's cgroup is gone too, in both modes.
        inner = (pytester.path / "pytest-pid").read_text()
        with open("/proc/self/cgroup", encoding="utf-8") as f:
            own = next(line[3:].strip() for line in f if line.startswith("0::"))
        root, mount = _cgroup2_mount()
        base = mount / os.path.relpath(own, root)
        assert list(base.glob(f"pidfd-leaks-{inner}-*")) == []


def test_cgroup_option_needs_a_mode(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x="def test_x(): pass")
    pytester.makeini("[pytest]\npidfd_leaks_cgroup = true\n")
    result = _run(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--pidfd-leaks-cgroup needs --pidfd-leaks=report, kill or fail*"])


def test_a_wrong_mode_in_the_ini_file_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x="def test_x(): pass")
    pytester.makeini("[pytest]\npidfd_leaks = loud\n")
    result = _run(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*pidfd_leaks must be one of off, report, kill, fail*"])


def test_unconfigure_restores_the_flag(pytester: pytest.Pytester) -> None:
    # The flag was set before pytest started: it stays set after.
    pytester.makepyfile(
        test_x="""
        from pidfd._native import _child_subreaper

        def test_x():
            assert _child_subreaper() is True
        """
    )
    script = Path(pytester.path / "outer.py")
    script.write_text(
        "import sys, pytest\n"
        "from pidfd._native import _child_subreaper, _set_child_subreaper\n"
        "_set_child_subreaper(True)\n"
        "rc = pytest.main(['-p', 'no:cacheprovider', '--pidfd-leaks=kill', 'test_x.py'])\n"
        "assert _child_subreaper() is True\n"
        "_set_child_subreaper(False)\n"
        "rc2 = pytest.main(['-p', 'no:cacheprovider', '--pidfd-leaks=kill', 'test_x.py'])\n"
        "assert _child_subreaper() is False\n"
        "sys.exit(rc or rc2)\n"
    )
    result = pytester.run(sys.executable, str(script), timeout=INNER_TIMEOUT)
    assert result.ret == 0, result.stdout.str()
