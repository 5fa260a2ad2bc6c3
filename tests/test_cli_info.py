"""`pidfd info`: what PIDFD_GET_INFO reports, as text and JSON."""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest

from _cli_helpers import (
    BLOCKED,
    cli,
    missing_pid,
    py,
    started,
)

# Each test runs the pidfd command in a child process: four threads at once
# would stress no state of this process, only the machine.
pytestmark = pytest.mark.thread_unsafe(reason="runs the pidfd command as a child process")


# ---------------------------------------------------------------- info


def _info_or_skip(*args: str) -> subprocess.CompletedProcess[str]:
    result = cli("info", *args)
    if result.returncode != 0 and "needs Linux" in result.stderr:
        pytest.skip(f"kernel without PIDFD_GET_INFO: {result.stderr.strip()}")
    return result


def test_info_json_for_this_process() -> None:
    result = _info_or_skip("--json", str(os.getpid()))
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["pid"] == info["tgid"] == os.getpid()
    assert info["ppid"] == os.getppid()
    assert (info["ruid"], info["euid"]) == (os.getuid(), os.geteuid())
    assert (info["rgid"], info["egid"]) == (os.getgid(), os.getegid())
    assert info["alive"] is True
    assert info["exit"] is None


def test_info_text_for_an_exited_child_of_another() -> None:
    with started(py(BLOCKED.format(code=0)), stdin=subprocess.PIPE) as child:
        running = _info_or_skip(str(child.pid))
        assert child.stdin is not None
        child.stdin.close()
        # Wait for the exit without reaping, so the zombie is still there.
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
        exited = cli("info", str(child.pid))
    assert running.returncode == 0, running.stderr
    assert "state:" in running.stdout and "running" in running.stdout
    assert re.search(rf"^parent pid: +{os.getpid()}$", running.stdout, re.M)
    assert exited.returncode == 0, exited.stderr
    # Not pidfd's child, and not reaped yet: the kernel cannot tell the status.
    assert "exited, status unknown" in exited.stdout


def test_info_missing_pid() -> None:
    result = cli("info", str(missing_pid()))
    assert result.returncode == 1
    assert "no such process" in result.stderr
