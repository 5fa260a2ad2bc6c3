"""The ``pidfd`` command line: help, entry points, usage errors, DURATION and PID
parsing, and what every subcommand's messages and JSON obey.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

from _cli_helpers import (
    LIMIT,
    PIDFD,
    cli,
    py,
    started,
)
from pidfd._cli import main
from pidfd._native import _REAP_GRACE

# Each test runs the pidfd command in a child process (some call main() here
# with redirected stdio): four threads at once would stress no state of this
# process, only the machine.
pytestmark = pytest.mark.thread_unsafe(reason="runs the pidfd command as a child process")


# ---------------------------------------------------------------- help


@pytest.mark.parametrize("sub", [[], ["run"], ["wait"], ["info"]])
def test_help(sub: list[str]) -> None:
    result = cli(*sub, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: pidfd")
    if sub:
        assert "exit status:" in result.stdout


def test_python_dash_m_runs_the_same_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pidfd", "run", "--", sys.executable, "-c", "raise SystemExit(4)"],
        capture_output=True,
        text=True,
        timeout=LIMIT,
        check=False,
    )
    assert result.returncode == 4, result.stderr
    assert "exited with code 4" in result.stderr


def test_main_returns_128_plus_n_instead_of_dying() -> None:
    # main() is for Python callers: it must not kill the caller.
    code = (
        "import sys; from pidfd._cli import main; "
        "sys.exit(main(['run', '--', 'sh', '-c', 'kill -TERM $$']) + 1)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=LIMIT, check=False
    )
    assert result.returncode == 128 + signal.SIGTERM + 1, result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--json"], "no command given"),
        (["--bogus", "--", "true"], "unrecognized arguments: --bogus"),
        (["--timeout", "soon", "--", "true"], "not a number of seconds"),
    ],
)
def test_run_usage_error_is_125(args: list[str], message: str) -> None:
    # Not 2, which the command itself could have returned.
    result = cli("run", *args)
    assert result.returncode == 125
    assert message in result.stderr


def test_run_help_never_breaks_an_option_across_lines(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for columns in range(40, 121):
        monkeypatch.setenv("COLUMNS", str(columns))
        assert main(["run", "--help"]) == 0
        text = capsys.readouterr().out
        broken = [line for line in text.splitlines() if re.search(r"--[a-z]+-$", line)]
        assert not broken, (columns, broken)


def test_wait_help_states_the_real_reap_grace(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["wait", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert f"not reaped it {_REAP_GRACE:g} s after it exited" in text
    assert "half a second" not in text


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("2.5", 2.5), ("10s", 10.0), ("1m", 60.0), ("2h", 7200.0), ("1d", 86400.0)],
)
def test_durations_as_timeout_takes_them(text: str, seconds: float) -> None:
    from pidfd._cli.parser import duration

    assert duration(text) == seconds


@pytest.mark.parametrize("text", ["5x", "m", "-1s", "inf", ""])
def test_bad_durations_are_usage_errors(text: str) -> None:
    result = cli("run", "--kill-after", text, "--", "true")
    assert result.returncode == 125
    assert "--kill-after" in result.stderr


@pytest.mark.parametrize("sub", ["wait", "info"])
def test_pid_beyond_pid_t_is_a_usage_error(sub: str) -> None:
    result = cli(sub, "2147483648")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def test_info_extra_argument_shows_info_usage() -> None:
    result = cli("info", "1", "2")
    assert result.returncode == 2
    assert result.stderr.startswith("usage: pidfd info")


# Issue 22, messages and output: thread ids, non-UTF-8 arguments, JSON floats.
@pytest.fixture
def thread_id() -> Iterator[int]:
    """The id of a thread of this process that is not its leader."""
    import threading

    done = threading.Event()
    thread = threading.Thread(target=done.wait)
    thread.start()
    try:
        assert thread.native_id is not None
        yield thread.native_id
    finally:
        done.set()
        thread.join()


@pytest.mark.parametrize(("sub", "status"), [("wait", 2), ("info", 1)])
def test_thread_id_gets_advice_for_the_command_line(sub: str, status: int, thread_id: int) -> None:
    result = cli(sub, str(thread_id))
    assert result.returncode == status
    assert f"type: pidfd {sub} {os.getpid()}" in result.stderr
    assert "thread=True" not in result.stderr  # the Python API's option
    assert "none of the given PIDs names an existing process" not in result.stderr


def test_non_utf8_arguments_show_their_bytes() -> None:
    argv = [os.fsencode(a) for a in PIDFD]
    text = subprocess.run(
        [*argv, b"run", b"--", b"true", b"a\xff"], capture_output=True, timeout=LIMIT, check=False
    )
    assert b"command:                   true 'a\\xff'\n" in text.stderr
    report = subprocess.run(
        [*argv, b"run", b"--json", b"--", b"true", b"a\xff"],
        capture_output=True,
        timeout=LIMIT,
        check=False,
    )
    assert b"\\udcff" not in report.stdout  # a lone surrogate: strict JSON readers refuse it
    assert json.loads(report.stdout)["command"] == ["true", "a\\xff"]
    failed = subprocess.run(
        [*argv, b"run", b"--json", b"--", b"nosuch\xff"],
        capture_output=True,
        timeout=LIMIT,
        check=False,
    )
    assert failed.returncode == 127
    assert failed.stderr == b"pidfd: nosuch\\xff: No such file or directory\n"
    assert json.loads(failed.stdout)["command"] == ["nosuch\\xff"]
    extra = subprocess.run(
        [*argv, b"info", b"1", b"\xff"], capture_output=True, timeout=LIMIT, check=False
    )
    assert extra.stderr.endswith(b"pidfd info: error: unrecognized arguments: \\xff\n")


def test_every_json_float_is_rounded_to_microseconds() -> None:
    # Enough CPU time that user and system time are not round numbers.
    spin = "sum(range(3_000_000)); open('/dev/null').read()"
    run = cli("run", "--json", "--", sys.executable, "-c", spin)
    with started(py("import time; time.sleep(0.2)")) as child:
        wait = cli("wait", "--json", str(child.pid))
    for out in (run.stdout, wait.stdout):
        floats = re.findall(r"-?\d+\.\d+(?:e-?\d+)?", out)
        assert floats, out
        assert all(re.fullmatch(r"-?\d+\.\d{1,6}", f) for f in floats), floats
