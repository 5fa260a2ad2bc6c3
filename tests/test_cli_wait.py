"""`pidfd wait`: waiting for processes that are not our children, without reaping them."""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import sys
from typing import Any

import pytest

from _cli_helpers import (
    BLOCKED,
    LIMIT,
    PIDFD,
    PTY,
    cli,
    missing_pid,
    on_pty,
    py,
    read_all,
    read_until,
    started,
)
from _helpers import kernel_at_least

# Each test runs the pidfd command in a child process: four threads at once
# would stress no state of this process, only the machine.
pytestmark = pytest.mark.thread_unsafe(reason="runs the pidfd command as a child process")


def test_wait_ctrl_c_reports_then_dies_by_sigint() -> None:
    with started(py(BLOCKED.format(code=0)), stdin=subprocess.PIPE) as child:
        with on_pty(
            [*PIDFD, "wait", str(child.pid)], stdin=PTY, stdout=subprocess.PIPE, stderr=PTY
        ) as (proc, master):
            seen = read_until(master, b"waiting for 1 of 1")
            os.write(master, b"\x03")
            seen += read_all(master)
            assert proc.wait(timeout=LIMIT) == -signal.SIGINT
        assert child.poll() is None  # the watched process was not touched
    assert f"interrupted; still running: {child.pid}" in seen.decode()


# ---------------------------------------------------------------- wait


def test_wait_non_children_reports_their_status() -> None:
    # The test is the parent; pidfd wait is not, so it can only watch. It
    # reports the status once the parent (this test) reaps, where the kernel
    # can tell (PIDFD_INFO_EXIT, Linux >= 6.15), else "unknown".
    kw: dict[str, Any] = {"stdin": subprocess.PIPE}
    with (
        started(py(BLOCKED.format(code=7)), **kw) as a,
        started(py(BLOCKED.format(code=0)), **kw) as b,
        started(
            [*PIDFD, "wait", "--json", "--progress", str(a.pid), str(b.pid)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        ) as waiter,
    ):
        assert waiter.stdout is not None and waiter.stderr is not None
        # --progress draws the status line once both handles are open.
        read_until(waiter.stderr.fileno(), b"waiting for 2 of 2")
        assert a.stdin is not None and b.stdin is not None
        a.stdin.close()
        assert a.wait(timeout=LIMIT) == 7
        b.kill()
        assert b.wait(timeout=LIMIT) == -signal.SIGKILL
        out, err = waiter.communicate(timeout=LIMIT)
    assert waiter.returncode == 0, err
    records = {r["pid"]: r for r in map(json.loads, out.decode().splitlines())}
    assert set(records) == {a.pid, b.pid}
    if kernel_at_least(6, 15):
        assert records[a.pid]["exit_code"] == 7
        assert records[b.pid]["signal"] == signal.SIGKILL
        assert records[b.pid]["signal_name"] == "SIGKILL"
    else:
        # Never a made-up status where the kernel cannot tell.
        assert not records[a.pid]["status_known"]
        assert records[a.pid]["exit_code"] is None


def test_wait_never_invents_a_status() -> None:
    # The parent (this test) does not reap its exited child while pidfd
    # waits: the kernel cannot tell a non-parent the status of a zombie,
    # so after its grace period pidfd reports it as unknown.
    with started(py(BLOCKED.format(code=9)), stdin=subprocess.PIPE) as child:
        with started(
            [*PIDFD, "wait", "--json", "--progress", str(child.pid)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        ) as waiter:
            assert waiter.stderr is not None and child.stdin is not None
            read_until(waiter.stderr.fileno(), b"waiting for 1 of 1")
            child.stdin.close()
            out, err = waiter.communicate(timeout=LIMIT)
        # Only now is it reaped, with its real status.
        assert child.wait(timeout=LIMIT) == 9
    assert waiter.returncode == 0, err
    record = json.loads(out)
    assert record["pid"] == child.pid
    assert record["status_known"] is False
    assert record["exit_code"] is None and record["signal"] is None


def test_wait_text_output_and_missing_pid() -> None:
    gone = missing_pid()
    with (
        started(py(BLOCKED.format(code=3)), stdin=subprocess.PIPE) as child,
        started(
            [*PIDFD, "wait", "--progress", str(gone), str(child.pid)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        ) as waiter,
    ):
        assert waiter.stdout is not None and waiter.stderr is not None
        seen = read_until(waiter.stderr.fileno(), b"waiting for 1 of 1")
        assert f"pid {gone}: no such process".encode() in seen
        assert child.stdin is not None
        child.stdin.close()
        assert child.wait(timeout=LIMIT) == 3
        out, _ = waiter.communicate(timeout=LIMIT)
    assert waiter.returncode == 0  # the missing pid is reported, not fatal
    line = out.decode().strip()
    if kernel_at_least(6, 15):
        assert line == f"pid {child.pid} exited with code 3"
    else:
        assert line == f"pid {child.pid} exited, status unknown"


def test_wait_only_missing_pids_is_a_usage_error() -> None:
    result = cli("wait", str(missing_pid()))
    assert result.returncode == 2
    assert "no such process" in result.stderr
    assert result.stdout == ""


def test_wait_count_returns_after_n() -> None:
    kw: dict[str, Any] = {"stdin": subprocess.PIPE}
    with (
        started(py(BLOCKED.format(code=1)), **kw) as first,
        started(py(BLOCKED.format(code=0)), **kw) as second,
        started(py(BLOCKED.format(code=0)), **kw) as third,
    ):
        pids = [str(p.pid) for p in (first, second, third)]
        with started(
            [*PIDFD, "wait", "--count", "1", "--progress", *pids],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        ) as waiter:
            assert waiter.stderr is not None
            read_until(waiter.stderr.fileno(), b"waiting for 3 of 3")
            assert second.stdin is not None
            second.stdin.close()
            assert second.wait(timeout=LIMIT) == 0
            out, err = waiter.communicate(timeout=LIMIT)
        assert waiter.returncode == 0, err
        assert out.decode().startswith(f"pid {second.pid} exited")
        assert len(out.decode().splitlines()) == 1
        assert first.poll() is None and third.poll() is None


def test_wait_timeout_exit_status() -> None:
    with started(py(BLOCKED.format(code=0)), stdin=subprocess.PIPE) as child:
        result = cli("wait", "--timeout", "0.3", str(child.pid))
        assert child.poll() is None
    assert result.returncode == 3
    assert "timed out" in result.stderr
    assert str(child.pid) in result.stderr
    assert result.stdout == ""


def test_wait_for_already_exited_child_of_another() -> None:
    # Exited and reaped before pidfd looks: reported as missing.
    proc = subprocess.run([sys.executable, "-c", "pass"], check=True, timeout=LIMIT)
    assert proc.returncode == 0
    with started(py(BLOCKED.format(code=0)), stdin=subprocess.PIPE) as child:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=LIMIT)
        result = cli("wait", str(child.pid))
    assert result.returncode == 2
    assert f"pid {child.pid}: no such process" in result.stderr


def test_wait_status_line_on_a_terminal() -> None:
    master, slave = pty.openpty()
    try:
        with (
            started(py(BLOCKED.format(code=0)), stdin=subprocess.PIPE) as child,
            started(
                [*PIDFD, "wait", str(child.pid)], stdout=subprocess.PIPE, stderr=slave
            ) as waiter,
        ):
            os.close(slave)
            slave = -1
            shown = read_until(master, b"waiting for 1 of 1")
            assert child.stdin is not None
            child.stdin.close()
            child.wait(timeout=LIMIT)
            out, _ = waiter.communicate(timeout=LIMIT)
            rest = read_all(master)
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    assert waiter.returncode == 0
    assert str(child.pid).encode() in shown
    assert (shown + rest).endswith(b"\r\x1b[K")  # erased before the result
    assert out.decode().startswith(f"pid {child.pid} exited")
