"""`pidfd run --cgroup` (and `--kill-tree`'s cgroup): a setsid + double-fork
daemon dies when the command ends, times out or is interrupted; the report
has the tree's totals; without a cgroup, --kill-tree says why and walks.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from _cli_helpers import LIMIT, PIDFD, cli, read_until, started
from pidfd import Cgroup, _procfs

pytestmark = pytest.mark.thread_unsafe(reason="runs the pidfd command as a child process")

# The daemon leaves the session, its parent (the inner sh) exits at once, and
# it holds none of our pipes; its pid goes to stderr.
DAEMON = "setsid sh -c 'sleep 300 >/dev/null 2>&1 & echo $! >&2'"


@pytest.fixture(autouse=True, scope="module")
def cgroup_v2() -> None:
    """Skip, with the reason, where no writable cgroup v2 is to be had."""
    try:
        Cgroup().close()
    except (ValueError, OSError) as e:
        pytest.skip(f"cannot make a cgroup v2 here: {e}")


def _pids(stderr: str) -> list[int]:
    return [int(word) for word in stderr.split() if word.isdigit()]


def _dead(pid: int) -> bool:
    # Killed and re-parented to init: gone, or a zombie until init reaps it.
    fields = _procfs.stat_fields(pid)
    return fields is None or fields[0] in ("Z", "X")


def test_cgroup_kills_a_setsid_double_forked_daemon_and_removes_the_cgroup() -> None:
    result = cli("run", "--cgroup", "--json", "--", "sh", "-c", DAEMON)
    assert result.returncode == 0, result.stderr
    (pid,) = _pids(result.stderr)
    report = json.loads(result.stdout)
    cg = report["cgroup"]
    assert cg["killed"] == 1 and cg["removed"] is True, cg
    assert not os.path.exists(cg["path"])
    assert _dead(pid)
    assert isinstance(cg["cpu_s"], float)
    assert cg["memory_peak_bytes"] is None or cg["memory_peak_bytes"] > 0
    assert report["kill_tree"] is None


def test_cgroup_on_timeout() -> None:
    result = cli(
        "run",
        "--cgroup",
        "--timeout",
        "0.5",
        "--json",
        "--",
        "sh",
        "-c",
        DAEMON + "; exec sleep 60",
    )
    assert result.returncode == 124, result.stderr
    (pid,) = _pids(result.stderr)
    report = json.loads(result.stdout)
    assert report["timed_out"] is True
    assert report["cgroup"]["killed"] == 1
    assert _dead(pid)


def test_cgroup_on_a_signal_to_pidfd() -> None:
    argv = [
        *PIDFD,
        "run",
        "--cgroup",
        "--json",
        "--",
        "sh",
        "-c",
        DAEMON + "; echo up >&2; exec sleep 60",
    ]
    with started(argv, stdout=-1, stderr=-1) as proc:
        assert proc.stderr is not None and proc.stdout is not None
        text = read_until(proc.stderr.fileno(), b"up\n").decode()
        proc.send_signal(signal.SIGINT)  # a kill(1), not the terminal: forwarded
        out = proc.stdout.read().decode()
        proc.wait()
    (pid,) = _pids(text)
    report = json.loads(out)
    assert report["signal_name"] == "SIGINT"
    assert report["cgroup"]["killed"] == 1
    assert _dead(pid)


def test_cgroup_text_report_has_the_tree_totals() -> None:
    result = cli("run", "--cgroup", "--", "sh", "-c", DAEMON)
    assert result.returncode == 0, result.stderr
    assert "  tree (cgroup) killed:      1\n" in result.stderr
    assert "  tree CPU time:             " in result.stderr
    assert "  tree peak memory:          " in result.stderr


def test_kill_tree_uses_a_cgroup_too() -> None:
    result = cli("run", "--kill-tree", "--json", "--", "sh", "-c", DAEMON)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    # The walk ends the daemon first (SIGTERM), the cgroup finds none left.
    assert report["kill_tree"]["left"] == 1
    assert report["cgroup"]["killed"] == 0 and report["cgroup"]["removed"] is True
    assert "--kill-tree: no cgroup" not in result.stderr


def _in_a_full_cgroup(*args: str) -> subprocess.CompletedProcess[str]:
    """``pidfd ARGS`` run inside a cgroup that may have no child cgroup."""
    with Cgroup() as full:
        Path(full.path, "cgroup.max.descendants").write_text("0\n")
        # The shell moves itself in, then becomes pidfd.
        script = f'echo $$ > {full.path}/cgroup.procs && exec "$@"'
        return cli_argv(["sh", "-c", script, "sh", *PIDFD, *args])


def cli_argv(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=LIMIT, check=False)


def test_where_no_cgroup_can_be_made() -> None:
    result = _in_a_full_cgroup("run", "--cgroup", "--", "true")
    assert result.returncode == 125
    assert "--cgroup: cannot create a cgroup under" in result.stderr
    assert "cgroup.max.descendants" in result.stderr
    result = _in_a_full_cgroup("run", "--kill-tree", "--json", "--", "sh", "-c", DAEMON)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if "--kill-tree: no cgroup" in line]
    assert len(lines) == 1 and "ending the tree by the walk alone" in lines[0]
    report = json.loads(result.stdout)
    assert report["cgroup"] is None
    assert report["kill_tree"]["left"] == 1
    (pid,) = _pids(result.stderr.replace(lines[0], ""))
    assert not Path(f"/proc/{pid}").exists()
