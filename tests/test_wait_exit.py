"""is_alive() and wait_exit(): the exit of any process, never reaped by us.

Each behaviour runs for a child and for a non-child (a grandchild behind an
intermediate process), on the real kernel.
"""

from __future__ import annotations

import errno
import math
import os
import signal
import subprocess
import time

import anyio
import pytest

from _helpers import (
    PY,
    Interrupted,
    RaisingSignal,
    kernel_at_least,
    proc_state,
    wait_until,
)
from pidfd import AsyncPidFd, ExitStatus, PidFd

HAS_INFO_EXIT = kernel_at_least(6, 15)


# --- is_alive -------------------------------------------------------------


def test_is_alive_false_once_exited_zombie_then_reaped(procs, kind):
    proc = procs.start(kind, "import time; time.sleep(0.05)")
    with PidFd.from_pid(proc.pid) as handle:
        assert handle.is_alive()
        if kind == "child":
            proc.release()
            # Nobody reaps it yet: a zombie is not alive.
            wait_until(lambda: proc_state(proc.pid) == "Z")
            assert not handle.is_alive()
            assert proc.popen.wait(10) == 0
        else:
            proc.release()
            assert proc.owner_returncode() == 0
        assert proc_state(proc.pid) == ""
        assert not handle.is_alive()


def test_is_alive_stays_true_while_running(procs, kind):
    proc = procs.start(kind, "")
    with PidFd.from_pid(proc.pid) as handle:
        for _ in range(3):
            assert handle.is_alive()
        handle.kill()
        status = handle.wait_exit(10)
        assert not handle.is_alive()
        if kind == "child" or HAS_INFO_EXIT:
            assert status == ExitStatus.from_waitstatus(signal.SIGKILL)


@pytest.mark.parametrize(
    "call",
    [lambda h: h.is_alive(), lambda h: h.wait_exit(0), lambda h: h.exit_status()],
    ids=["is_alive", "wait_exit", "exit_status"],
)
def test_on_closed_handle_raises(procs, call):
    proc = procs.child("")
    handle = PidFd.from_pid(proc.pid)
    handle.close()
    with pytest.raises(ValueError, match="closed"):
        call(handle)


# --- wait_exit: children and subprocess.Popen -------------------------------


def test_wait_exit_child_then_popen_wait_gets_true_code(procs):
    proc = procs.child("sys.exit(7)")
    with PidFd.from_pid(proc.pid) as handle:
        proc.release()
        status = handle.wait_exit(10)
        assert status is not None
        assert (status.code, status.signal, status.returncode) == (7, None, 7)
        # Peeked, not reaped: the child is still a zombie for its owner.
        assert proc_state(proc.pid) == "Z"
        assert proc.popen.wait(10) == 7
        # And the answer does not change once the owner has reaped it.
        assert handle.wait_exit(0) == (status if HAS_INFO_EXIT else None)


def test_wait_exit_killed_child_then_popen_wait(procs):
    proc = procs.child("")
    with PidFd.from_pid(proc.pid) as handle:
        handle.terminate()
        status = handle.wait_exit(10)
        assert status is not None
        assert (status.code, status.signal) == (None, signal.SIGTERM)
        assert proc.popen.wait(10) == -signal.SIGTERM


def test_reaping_behind_popens_back_makes_its_returncode_0(procs):
    """The documented caveat: wait() reaps, so Popen can only guess 0."""
    proc = procs.child("sys.exit(3)")
    with PidFd.from_pid(proc.pid) as handle:
        proc.release()
        assert handle.wait(10).status.code == 3
    assert proc.popen.wait(10) == 0


def test_wait_exit_child_reaped_by_someone_else(procs):
    proc = procs.child("sys.exit(9)")
    with PidFd.from_pid(proc.pid) as handle:
        proc.release()
        _, waitstatus = os.waitpid(proc.pid, 0)
        assert os.waitstatus_to_exitcode(waitstatus) == 9
        status = handle.wait_exit(10)
        if HAS_INFO_EXIT:
            assert status is not None and status.code == 9
            assert status.waitstatus == waitstatus
        else:
            assert status is None


@pytest.mark.thread_unsafe(reason="sets SIGCHLD to SIG_IGN")
def test_wait_exit_child_auto_reaped_with_sigchld_ignored(procs):
    old = signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    try:
        proc = procs.child("sys.exit(4)")
        with PidFd.from_pid(proc.pid) as handle:
            proc.release()
            status = handle.wait_exit(10)
            # The kernel reaped it at once: no zombie to peek at, but the
            # pidfd still learns the status where PIDFD_INFO_EXIT exists.
            assert proc_state(proc.pid) == ""
            assert status == (ExitStatus.from_waitstatus(4 << 8) if HAS_INFO_EXIT else None)
    finally:
        signal.signal(signal.SIGCHLD, old)
    assert signal.getsignal(signal.SIGCHLD) == old


# --- wait_exit: non-children ------------------------------------------------


@pytest.mark.parametrize(
    ("code", "expected"),
    [("sys.exit(5)", (5, None)), ("sys.exit(0)", (0, None)), ("kill", (None, signal.SIGKILL))],
    ids=["exit-5", "exit-0", "sigkill"],
)
def test_wait_exit_non_child_true_status(procs, code, expected):
    if not HAS_INFO_EXIT:
        pytest.skip("PIDFD_INFO_EXIT needs Linux >= 6.15")
    proc = procs.grandchild("" if code == "kill" else code)
    with PidFd.from_pid(proc.pid) as handle:
        if code == "kill":
            handle.kill()
        else:
            proc.release()
        status = handle.wait_exit(10)
        assert status is not None
        assert (status.code, status.signal) == expected
        # Its real parent saw the same thing.
        assert status.returncode == proc.owner_returncode()


def test_wait_exit_non_child_never_invents_a_status(procs):
    """Where the kernel cannot tell, the answer is None, never 0 or 255."""
    proc = procs.grandchild("sys.exit(6)")
    with PidFd.from_pid(proc.pid) as handle:
        proc.release()
        status = handle.wait_exit(10)
        assert status is None if not HAS_INFO_EXIT else status.code == 6


# --- timeouts and interruption ------------------------------------------------


def test_wait_exit_timeout(procs, kind):
    proc = procs.start(kind, "")
    with PidFd.from_pid(proc.pid) as handle:
        with pytest.raises(TimeoutError, match=str(proc.pid)):
            handle.wait_exit(0.2)
        assert handle.is_alive()
        if kind == "child":
            assert proc.popen.poll() is None


@pytest.mark.parametrize("timeout", [0, -1.0])
def test_wait_exit_zero_timeout_checks_once(procs, kind, timeout):
    proc = procs.start(kind, "sys.exit(2)")
    with PidFd.from_pid(proc.pid) as handle:
        with pytest.raises(TimeoutError):
            handle.wait_exit(timeout)
        proc.release()
        if kind == "child":
            wait_until(lambda: proc_state(proc.pid) == "Z")
        else:
            wait_until(lambda: proc_state(proc.pid) == "")
            # Give the intermediate's wait() time to finish reaping.
            wait_until(lambda: not handle.is_alive())
        status = handle.wait_exit(timeout)
        if kind == "child" or HAS_INFO_EXIT:
            assert status is not None and status.code == 2
        else:
            assert status is None


def test_wait_exit_nan_timeout_refused(procs):
    proc = procs.child("")
    with PidFd.from_pid(proc.pid) as handle, pytest.raises(ValueError, match="NaN"):
        handle.wait_exit(math.nan)


@pytest.mark.thread_unsafe(reason="sets a signal handler")
def test_wait_exit_interrupted_by_raising_signal_handler(procs, kind):
    proc = procs.start(kind, "")
    with PidFd.from_pid(proc.pid) as handle:
        with RaisingSignal(0.2), pytest.raises(Interrupted):
            handle.wait_exit(20)
        assert handle.is_alive()
        proc.release()
        status = handle.wait_exit(10)
        if kind == "child" or HAS_INFO_EXIT:
            assert status is not None and status.success


def test_wait_exit_not_reaped_so_wait_still_works(procs):
    proc = procs.child("sys.exit(12)")
    with PidFd.from_pid(proc.pid) as handle:
        proc.release()
        assert handle.wait_exit(10).code == 12
        assert handle.wait_exit(10).code == 12
        info = handle.wait(10)
        assert info.status.code == 12
        with pytest.raises(ChildProcessError) as excinfo:
            handle.wait(0)
        assert excinfo.value.errno == errno.ECHILD
    # wait() reaped it, so Popen cannot: the stdlib then reports 0.
    assert proc.popen.wait(10) == 0


# --- async ----------------------------------------------------------------


@pytest.mark.anyio
async def test_async_wait_exit_child_then_popen(procs):
    proc = procs.child("sys.exit(21)")
    with AsyncPidFd.from_pid(proc.pid) as handle:
        assert handle.is_alive()
        proc.release()
        status = await handle.wait_exit()
        assert status is not None and status.code == 21
        assert not handle.is_alive()
        assert proc_state(proc.pid) == "Z"
    assert proc.popen.wait(10) == 21


@pytest.mark.anyio
async def test_async_wait_exit_non_child(procs):
    proc = procs.grandchild("sys.exit(22)")
    with AsyncPidFd.from_pid(proc.pid) as handle:
        assert handle.is_alive()
        proc.release()
        with anyio.fail_after(10):
            status = await handle.wait_exit()
        assert not handle.is_alive()
        if HAS_INFO_EXIT:
            assert status is not None and status.code == 22
        else:
            assert status is None
    assert proc.owner_returncode() == 22


@pytest.mark.anyio
async def test_async_wait_exit_does_not_block_the_loop(procs, ticker):
    proc = procs.child("import time; time.sleep(0.3)")
    with AsyncPidFd.from_pid(proc.pid) as handle:
        proc.release()
        async with anyio.create_task_group() as tg:
            tg.start_soon(ticker.run)
            with anyio.fail_after(10):
                status = await handle.wait_exit()
            tg.cancel_scope.cancel()
    assert status is not None and status.success
    # The ticker ran all along: some 30 ticks in 0.3 s, so at least a few.
    assert ticker.count >= 5
    assert proc.popen.wait(10) == 0


@pytest.mark.anyio
async def test_async_wait_exit_cancelled_then_reused(procs):
    proc = procs.child("sys.exit(8)")
    with AsyncPidFd.from_pid(proc.pid) as handle:
        with anyio.move_on_after(0.1) as scope:
            await handle.wait_exit()
        assert scope.cancelled_caught
        proc.release()
        with anyio.fail_after(10):
            status = await handle.wait_exit()
        assert status is not None and status.code == 8
    assert proc.popen.wait(10) == 8


def test_sync_wait_exit_in_fresh_interpreter():
    """The Popen recipe from the README, run as users would."""
    code = (
        "import subprocess, sys\n"
        "from pidfd import PidFd\n"
        "p = subprocess.Popen([sys.executable, '-c', 'raise SystemExit(3)'])\n"
        "with PidFd.from_pid(p.pid) as h:\n"
        "    print(h.wait_exit().code, p.wait())\n"
    )
    out = subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=30, check=True)
    assert out.stdout.split() == ["3", "3"]


# --- a non-child whose parent does not reap it --------------------------------

# The intermediate starts a grandchild that exits at once with 5, reports its
# pid, and reaps it only when told to (a byte on its stdin).
LAZY_PARENT = (
    "import subprocess, sys\n"
    "p = subprocess.Popen([sys.executable, '-c', 'raise SystemExit(5)'],"
    " stdin=subprocess.DEVNULL)\n"
    "print(p.pid, flush=True)\n"
    "sys.stdin.buffer.read(1)\n"
    "print(p.wait(), flush=True)\n"
)


@pytest.fixture
def lazy_parent():
    parent = subprocess.Popen(
        [PY, "-c", LAZY_PARENT], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        yield parent
    finally:
        parent.kill()
        parent.wait(10)
        parent.stdin.close()
        parent.stdout.close()


@pytest.mark.thread_unsafe(reason="reads its fixture process's one line")
def test_wait_exit_non_child_zombie_left_unreaped(lazy_parent):
    """Exited but not reaped by its parent: wait_exit() still returns, with
    None after a grace period (bounded by the timeout), and the true status
    once the parent reaps it."""
    gpid = int(lazy_parent.stdout.readline())
    # Our pidfd on the zombie: it cannot be reaped or reused until its parent waits.
    with PidFd.from_pid(gpid) as handle:
        wait_until(lambda: proc_state(gpid) == "Z")
        assert not handle.is_alive()
        start = time.monotonic()
        assert handle.wait_exit(0.2) is None
        assert time.monotonic() - start < 1.5
        start = time.monotonic()
        assert handle.wait_exit() is None
        # The grace period: long enough for a loaded parent, but it ends.
        # (Without PIDFD_INFO_EXIT there is nothing to wait for.)
        assert (0.4 if HAS_INFO_EXIT else 0) <= time.monotonic() - start < 10
        lazy_parent.stdin.write("x")
        lazy_parent.stdin.flush()
        assert lazy_parent.stdout.readline() == "5\n"
        status = handle.wait_exit(10)
        assert status == (ExitStatus.from_waitstatus(5 << 8) if HAS_INFO_EXIT else None)


@pytest.mark.anyio
async def test_async_wait_exit_non_child_zombie_left_unreaped(lazy_parent):
    gpid = int(lazy_parent.stdout.readline())
    with AsyncPidFd.from_pid(gpid) as handle:
        wait_until(lambda: proc_state(gpid) == "Z")
        with anyio.fail_after(10):
            assert await handle.wait_exit() is None
        lazy_parent.stdin.write("x")
        lazy_parent.stdin.flush()
        assert lazy_parent.stdout.readline() == "5\n"
        with anyio.fail_after(10):
            status = await handle.wait_exit()
        assert status == (ExitStatus.from_waitstatus(5 << 8) if HAS_INFO_EXIT else None)


# --- exit_status: wait_exit()'s answer, without waiting ----------------------


def test_exit_status_while_running_raises_timeout_and_reaps_nothing(procs, kind):
    proc = procs.start(kind, "")
    with PidFd.from_pid(proc.pid) as handle:
        with pytest.raises(TimeoutError, match=rf"pid {proc.pid} is still running"):
            handle.exit_status()
        handle.kill()
        assert handle.wait_exit(10) is not None or not HAS_INFO_EXIT
        status = handle.exit_status()
        if kind == "child":
            # A zombie child, peeked: still there for its owner to reap.
            assert proc_state(proc.pid) == "Z"
            assert status == ExitStatus.from_waitstatus(signal.SIGKILL)
            assert proc.popen.wait(10) == -signal.SIGKILL
        else:
            assert status == (ExitStatus.from_waitstatus(signal.SIGKILL) if HAS_INFO_EXIT else None)


def test_exit_status_child_reaped_by_someone_else(procs):
    proc = procs.child("sys.exit(9)")
    with PidFd.from_pid(proc.pid) as handle:
        proc.release()
        _, waitstatus = os.waitpid(proc.pid, 0)
        # Reaped: settled at once, the true status or None, never 0.
        status = handle.exit_status()
        assert status == (ExitStatus.from_waitstatus(waitstatus) if HAS_INFO_EXIT else None)


@pytest.mark.thread_unsafe(reason="reads its fixture process's one line")
def test_exit_status_non_child_zombie_is_not_settled_until_reaped(lazy_parent):
    gpid = int(lazy_parent.stdout.readline())
    with PidFd.from_pid(gpid) as handle:
        wait_until(lambda: proc_state(gpid) == "Z")
        if HAS_INFO_EXIT:
            # Exited, but the status comes once its parent reaps it.
            with pytest.raises(TimeoutError, match="has exited but its parent has not reaped"):
                handle.exit_status()
        else:
            assert handle.exit_status() is None
        lazy_parent.stdin.write("x")
        lazy_parent.stdin.flush()
        assert lazy_parent.stdout.readline() == "5\n"
        wait_until(lambda: proc_state(gpid) == "")
        status = handle.exit_status()
        assert status == (ExitStatus.from_waitstatus(5 << 8) if HAS_INFO_EXIT else None)


@pytest.mark.anyio
async def test_async_exit_status_as_sync(procs):
    proc = procs.child("sys.exit(3)")
    with AsyncPidFd.from_pid(proc.pid) as handle:
        with pytest.raises(TimeoutError, match="still running"):
            handle.exit_status()
        proc.release()
        with anyio.fail_after(10):
            assert await handle.wait_exit() == ExitStatus.from_waitstatus(3 << 8)
        assert handle.exit_status() == ExitStatus.from_waitstatus(3 << 8)
        assert proc.popen.wait(10) == 3
