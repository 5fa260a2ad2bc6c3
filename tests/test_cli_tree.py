"""`pidfd run --kill-tree`: every descendant ended and reaped, and how --kill-after
applies to them.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from _cli_helpers import (
    LIMIT,
    PIDFD,
    cli,
    started,
)
from pidfd import PidFd, _procfs

# Each test runs the pidfd command in a child process: four threads at once
# would stress no state of this process, only the machine.
pytestmark = pytest.mark.thread_unsafe(reason="runs the pidfd command as a child process")


# ------------------------------------------------------------- --kill-tree

# The command leaves three descendants behind and prints their pids on
# stderr: a daemon that left its group and session (setsid), a plain
# background job, and (with IGNORING) one that ignores SIGTERM.
LEAVES = "setsid sleep 60 & echo $! >&2; sleep 60 & echo $! >&2"
# The shell ignores SIGTERM before it forks, so the job inherits that from birth.
IGNORING = "trap '' TERM; sleep 60 & echo $! >&2"


def _pids(stderr: str) -> list[int]:
    return [int(word) for word in stderr.split() if word.isdigit()]


def _ended(pid: int) -> bool:
    # Reaped by pidfd run: gone from /proc (a zombie would still be listed).
    return not Path(f"/proc/{pid}").exists()


def test_run_kill_tree_ends_and_reaps_every_descendant() -> None:
    result = cli("run", "--kill-tree", "--json", "--", "sh", "-c", LEAVES)
    assert result.returncode == 0, result.stderr
    left = _pids(result.stderr)
    assert len(left) == 2
    tree = json.loads(result.stdout)["kill_tree"]
    assert tree["left"] == 2 and tree["sigterm"] == 2, tree
    assert sorted(e["pid"] for e in tree["ended"]) == sorted(left)
    assert all(e["signal_sent"] == "SIGTERM" for e in tree["ended"])
    assert all(_ended(pid) for pid in left)


def test_run_kill_tree_kills_what_ignores_sigterm_after_kill_after() -> None:
    result = cli("run", "--kill-tree", "--kill-after", "0.3s", "--json", "--", "sh", "-c", IGNORING)
    assert result.returncode == 0, result.stderr
    (pid,) = _pids(result.stderr)
    tree = json.loads(result.stdout)["kill_tree"]
    assert tree["sigkill"] == 1 and tree["left"] == 1, tree
    assert tree["ended"][0]["signal_name"] == "SIGKILL"
    assert _ended(pid)


def test_run_kill_tree_on_timeout() -> None:
    result = cli(
        "run", "--kill-tree", "--timeout", "0.5", "--json", "--",
        "sh", "-c", "setsid sleep 60 & echo $! >&2; exec sleep 60",
    )  # fmt: skip
    assert result.returncode == 124, result.stderr
    (pid,) = _pids(result.stderr)
    report = json.loads(result.stdout)
    assert report["timed_out"] is True
    assert report["kill_tree"]["left"] == 1 and report["kill_tree"]["sigterm"] == 1
    assert _ended(pid)


def test_run_kill_tree_text_report_counts_them() -> None:
    result = cli(
        "run", "--kill-tree", "--kill-after", "0.3", "--", "sh", "-c", LEAVES + "; " + IGNORING
    )
    assert result.returncode == 0, result.stderr
    assert "descendants left behind:   3 (2 ended by SIGTERM, 1 killed by SIGKILL)" in result.stderr
    assert all(_ended(pid) for pid in _pids(result.stderr.split("pidfd:")[0]))


def test_run_without_kill_tree_leaves_them() -> None:
    # Its output away from our pipes, which it would otherwise hold open.
    script = "setsid sleep 60 >/dev/null 2>&1 & echo $! >&2"
    result = cli("run", "--json", "--", "sh", "-c", script)
    assert result.returncode == 0, result.stderr
    (pid,) = _pids(result.stderr)
    assert json.loads(result.stdout)["kill_tree"] is None
    try:
        assert not _ended(pid)  # the daemon lives on: what --kill-tree is for
    finally:
        with contextlib.suppress(ProcessLookupError), PidFd.from_pid(pid) as daemon:
            daemon.kill()


# --kill-after 0 disables SIGKILL (timeout(1)), for the descendants too.
def test_kill_after_zero_never_sigkills_the_tree() -> None:
    # The job ignores SIGTERM and ends on its own a moment later.
    script = "trap '' TERM; sleep 0.5 & echo $! >&2"
    result = cli("run", "--kill-tree", "--kill-after", "0", "--json", "--", "sh", "-c", script)
    assert result.returncode == 0, result.stderr
    tree = json.loads(result.stdout)["kill_tree"]
    assert tree["left"] == 1 and tree["exited"] == 1 and tree["sigkill"] == 0, tree


def test_a_signal_cuts_the_tree_teardown_short() -> None:
    # With --kill-after 0 nothing ends a job that ignores SIGTERM but a
    # signal to pidfd: its teardown must take one (SIGTERM here).
    argv = [*PIDFD, "run", "--kill-tree", "--kill-after", "0", "--json", "--"]
    argv += ["sh", "-c", "trap '' TERM; sleep 60 >/dev/null 2>&1 & echo $$ $! >&2"]
    with started(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stderr is not None and proc.stdout is not None
        shell, job = map(int, proc.stderr.readline().split())
        # In the teardown: the command is reaped, its job adopted by pidfd.
        deadline = time.monotonic() + LIMIT
        while Path(f"/proc/{shell}").exists() or (_procfs.stat_fields(job) or ["", ""])[1] != str(
            proc.pid
        ):
            assert time.monotonic() < deadline, "pidfd never reaped the command"
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=LIMIT)
    assert proc.returncode == 0
    tree = json.loads(out)["kill_tree"]
    assert tree["left"] == 1 and tree["sigkill"] == 1, tree
    assert _ended(job)
