"""Process edge cases: auto-reaped children, children reaped behind our back,
zombies, stopped children, early exits and recycled pids."""

from __future__ import annotations

import os
import signal
import textwrap
import threading
import time
from collections.abc import Iterator

import pytest

import _helpers as rh
from _helpers import REUSE_PID, Children, is_running, is_unreaped, kernel_at_least, wait_zombie
from pidfd import ExitInfo, PidFd


@pytest.fixture
def sigchld_ignored() -> Iterator[None]:
    old = signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGCHLD, old)


def test_sigchld_ignored_wait_says_why(children: Children, sigchld_ignored: None) -> None:
    pid = children.spawn(["sh", "-c", "sleep 0.1; exit 7"])
    with PidFd.from_pid(pid) as h:
        with pytest.raises(ChildProcessError, match="SIGCHLD is ignored") as err:
            h.wait(timeout=10)
        assert err.value.errno == 10  # ECHILD
        assert not is_unreaped(pid)  # the kernel reaped it itself
        with pytest.raises(ChildProcessError, match="SIGCHLD"):
            h.try_wait()


def test_sigchld_ignored_wait_exit_still_reports(children: Children, sigchld_ignored: None) -> None:
    pid = children.spawn(["sh", "-c", "sleep 0.1; exit 7"])
    with PidFd.from_pid(pid) as h:
        status = h.wait_exit(timeout=10)
        if kernel_at_least(6, 15):
            assert status is not None
            assert status.code == 7
        else:
            # Without PIDFD_INFO_EXIT the status is gone; never made up.
            assert status is None


def test_already_reaped_by_waitpid(children: Children) -> None:
    pid = children.spawn([rh.TRUE])
    with PidFd.from_pid(pid) as h:
        os.waitpid(pid, 0)
        with pytest.raises(ChildProcessError, match="already been reaped") as reaped:
            h.wait(timeout=5)
        with pytest.raises(ChildProcessError, match="already been reaped"):
            h.try_wait()
    parent = PidFd.from_pid(os.getppid())
    with parent, pytest.raises(ChildProcessError, match="not a child") as not_child:
        parent.wait(timeout=5)
    assert str(reaped.value) != str(not_child.value)
    assert "not a child" not in str(reaped.value)


def test_zombie_is_reaped_by_try_wait(children: Children) -> None:
    pid = children.exited(code=5)
    with PidFd.from_pid(pid) as h:
        assert not h.is_alive()
        assert is_unreaped(pid)
        info = h.try_wait()
        assert isinstance(info, ExitInfo)
        assert info.status.code == 5
        assert info.pid == pid
        assert not is_unreaped(pid)
        with pytest.raises(ChildProcessError, match="earlier wait"):
            h.try_wait()


def test_stopped_child_is_not_an_exit(children: Children) -> None:
    pid = children.sleep(0.3)
    with PidFd.from_pid(pid) as h:
        h.send_signal(signal.SIGSTOP)
        # Make sure the stop has happened before we look.
        os.waitid(os.P_PID, pid, os.WSTOPPED | os.WNOWAIT)
        assert h.try_wait() is None
        assert h.is_alive()
        with pytest.raises(TimeoutError):
            h.wait(timeout=0.5)  # longer than the child's own 0.3 s
        with pytest.raises(TimeoutError):
            h.wait_exit(timeout=0.1)
        result: list[object] = []
        waiter = threading.Thread(target=lambda: result.append(h.wait(timeout=10)))
        waiter.start()
        time.sleep(0.2)
        assert waiter.is_alive(), "wait() returned for a stopped child"
        h.send_signal(signal.SIGCONT)
        waiter.join(10)
        (info,) = result
        assert isinstance(info, ExitInfo)
        assert info.status.code == 0


def test_exit_between_from_pid_and_wait(children: Children) -> None:
    pid = children.spawn(["sh", "-c", "exit 4"])
    h = PidFd.from_pid(pid)
    wait_zombie(pid)
    with h:
        assert not h.is_alive()
        status = h.wait_exit(timeout=5)
        assert status is not None
        assert status.code == 4
        assert is_unreaped(pid)  # wait_exit only peeked
        assert h.wait(timeout=5).status.code == 4


def test_killed_between_from_pid_and_wait(children: Children) -> None:
    pid = children.sleep(30)
    with PidFd.from_pid(pid) as h:
        os.kill(pid, signal.SIGKILL)
        wait_zombie(pid)
        info = h.wait(timeout=0)  # exited already: no waiting needed
        assert info.status.signal == signal.SIGKILL
        assert info.status.returncode == -signal.SIGKILL


def test_signal_after_exit_but_before_reap(children: Children) -> None:
    """A zombie still holds its pid: signalling it is not an error in the
    kernel's eyes, and it must not reach anyone else either."""
    pid = children.exited()
    with PidFd.from_pid(pid) as h:
        h.send_signal(0)
        assert is_unreaped(pid)
        h.wait(timeout=5)
        with pytest.raises(ProcessLookupError):
            h.send_signal(signal.SIGTERM)


# Runs as pid 1 of a fresh pid namespace, where it may steer the next pid
# (ns_last_pid belongs to that namespace alone) without touching the host.
PID_REUSE_SCRIPT = REUSE_PID + textwrap.dedent(
    r"""
    from pidfd import PidFd

    old = spawn_sleeper()
    handle = PidFd.from_pid(old)
    os.kill(old, signal.SIGKILL)
    os.waitpid(old, 0)  # reaped behind the handle's back: the pid is free

    new = reuse_pid(old, spawn_sleeper, report)
    if new != old:
        report["reused"] = False
        print(json.dumps(report))
        sys.exit(0)

    report["reused"] = True
    report["pid"] = new
    try:
        handle.send_signal(signal.SIGTERM)
        report["send_signal"] = "no error"
    except ProcessLookupError as e:
        report["send_signal"] = type(e).__name__
    time.sleep(0.2)
    # Still running: the SIGTERM (which would kill a sleep) never reached it.
    report["new_alive"] = os.waitid(os.P_PID, new, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None
    report["old_handle_alive"] = handle.is_alive()
    try:
        handle.wait(timeout=1)
        report["old_handle_wait"] = "returned"
    except ChildProcessError:
        report["old_handle_wait"] = "ChildProcessError"
    handle.close()
    with PidFd.from_pid(new) as fresh:
        fresh.kill()
        report["new_status"] = fresh.wait(timeout=5).status.signal
    print(json.dumps(report))
    """
)


def test_pid_reuse_send_signal_never_reaches_new_process() -> None:
    report = rh.run_in_pid_namespace(PID_REUSE_SCRIPT, rh.SLEEP)
    if not report["reused"]:
        pytest.skip(f"pid not reused within the bound: {report}")
    assert report["send_signal"] == "ProcessLookupError", report
    assert report["new_alive"] is True, report
    assert report["old_handle_alive"] is False, report
    assert report["old_handle_wait"] == "ChildProcessError", report
    assert report["new_status"] == signal.SIGKILL, report


def test_running_child_is_reported_running(children: Children) -> None:
    """Control for the helpers used above: they tell running from reaped."""
    pid = children.sleep(30)
    assert is_running(pid)
    assert is_unreaped(pid)
    os.kill(pid, signal.SIGKILL)
    wait_zombie(pid)
    assert not is_running(pid)
    assert is_unreaped(pid)
