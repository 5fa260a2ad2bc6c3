"""The synchronous handle, row by row of the API contract."""

from __future__ import annotations

import errno
import fcntl
import math
import os
import select
import selectors
import signal
import subprocess
import sys
import threading
import time

import pytest

from _helpers import is_unreaped
from pidfd import ExitInfo, PidFd

SLEEP = "import time; time.sleep(30)"


# -- opening -----------------------------------------------------------------


def test_from_pid_is_close_on_exec(spawn) -> None:
    child = spawn(SLEEP)
    with PidFd.from_pid(child.pid) as handle:
        assert handle.pid == child.pid
        assert fcntl.fcntl(handle.fileno(), fcntl.F_GETFD) & fcntl.FD_CLOEXEC


@pytest.mark.parametrize("pid", [0, -1, -(2**31)])
def test_from_pid_rejects_non_positive(pid: int) -> None:
    with pytest.raises(ValueError, match="positive"):
        PidFd.from_pid(pid)


@pytest.mark.parametrize("pid", [2**31, 2**32 + 1, 2**63, 2**64 + 1, -(2**70)])
def test_from_pid_never_wraps_out_of_range(pid: int) -> None:
    # 2**32 + 1 would wrap to pid 1 if truncated to 32 bits.
    with pytest.raises((OverflowError, ValueError)):
        PidFd.from_pid(pid)


@pytest.mark.parametrize("pid", [1.0, "1", None, b"1", True, [1]])
def test_from_pid_rejects_non_int(pid: object) -> None:
    with pytest.raises(TypeError, match="int"):
        PidFd.from_pid(pid)  # type: ignore[arg-type]


def test_from_pid_accepts_index_types(spawn) -> None:
    class Pid:
        def __init__(self, value: int) -> None:
            self.value = value

        def __index__(self) -> int:
            return self.value

    child = spawn(SLEEP)
    with PidFd.from_pid(Pid(child.pid)) as handle:  # type: ignore[arg-type]
        assert handle.pid == child.pid


def test_from_pid_no_such_process(spawn) -> None:
    child = spawn("pass")
    child.wait()
    with pytest.raises(ProcessLookupError) as excinfo:
        PidFd.from_pid(child.pid)
    assert excinfo.value.errno == errno.ESRCH
    assert str(child.pid) in str(excinfo.value)


def test_from_pid_of_exited_unreaped_child_still_works(spawn) -> None:
    child = spawn("raise SystemExit(4)")
    while not is_unreaped(child.pid) or _running(child.pid):
        time.sleep(0.01)
    with PidFd.from_pid(child.pid) as handle:
        assert handle.wait().status.code == 4


def _running(pid: int) -> bool:
    info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    return info is None


# -- fileno / close ------------------------------------------------------------


def test_fileno_polls_readable_at_exit(spawn) -> None:
    child = spawn("import time; time.sleep(0.2)")
    with PidFd.from_pid(child.pid) as handle:
        assert select.select([handle], [], [], 0)[0] == []
        with selectors.DefaultSelector() as sel:
            sel.register(handle, selectors.EVENT_READ)
            assert sel.select(timeout=10)
        assert handle.try_wait() is not None


def test_close_is_idempotent_and_pid_survives(spawn) -> None:
    child = spawn(SLEEP)
    handle = PidFd.from_pid(child.pid)
    fd = handle.fileno()
    assert not handle.closed
    handle.close()
    handle.close()
    assert handle.closed
    assert handle.pid == child.pid
    with pytest.raises(OSError) as excinfo:
        os.fstat(fd)
    assert excinfo.value.errno == errno.EBADF
    assert "closed" in repr(handle)


def test_context_manager_closes(spawn) -> None:
    child = spawn(SLEEP)
    with PidFd.from_pid(child.pid) as handle:
        assert not handle.closed
    assert handle.closed


@pytest.mark.parametrize(
    "call",
    [
        lambda h: h.fileno(),
        lambda h: h.wait(),
        lambda h: h.wait(timeout=0),
        lambda h: h.try_wait(),
        lambda h: h.send_signal(signal.SIGTERM),
        lambda h: h.kill(),
        lambda h: h.terminate(),
        lambda h: h.is_alive(),
        lambda h: h.wait_exit(timeout=0),
        lambda h: h.info(),
        lambda h: h.getfd(0),
    ],
    ids=[
        "fileno",
        "wait",
        "wait0",
        "try_wait",
        "send_signal",
        "kill",
        "terminate",
        "is_alive",
        "wait_exit",
        "info",
        "getfd",
    ],
)
def test_every_call_on_a_closed_handle_is_value_error(spawn, call) -> None:
    child = spawn(SLEEP)
    handle = PidFd.from_pid(child.pid)
    handle.close()
    with pytest.raises(ValueError, match="closed"):
        call(handle)
    # The child was not touched: still running, still ours to reap.
    assert _running(child.pid)


# -- wait ----------------------------------------------------------------------


def test_wait_returns_exit_info_and_reaps(spawn) -> None:
    child = spawn("raise SystemExit(3)")
    with PidFd.from_pid(child.pid) as handle:
        info = handle.wait()
    assert isinstance(info, ExitInfo)
    assert info.status.code == 3
    assert info.pid == child.pid
    assert not is_unreaped(child.pid)


def test_wait_releases_the_gil(spawn) -> None:
    child = spawn("import time; time.sleep(0.5)")
    ticks = 0
    stop = threading.Event()

    def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            time.sleep(0.01)

    thread = threading.Thread(target=ticker)
    thread.start()
    try:
        with PidFd.from_pid(child.pid) as handle:
            handle.wait(timeout=10)
    finally:
        stop.set()
        thread.join()
    # Held GIL would have frozen the ticker for the whole half second.
    assert ticks >= 10


def test_wait_timeout_leaves_child_unreaped(spawn) -> None:
    child = spawn(SLEEP)
    with PidFd.from_pid(child.pid) as handle:
        start = time.monotonic()
        with pytest.raises(TimeoutError, match="still running"):
            handle.wait(timeout=0.2)
        assert 0.15 <= time.monotonic() - start < 5
        assert _running(child.pid)
        handle.kill()
        assert handle.wait(timeout=10).status.signal == signal.SIGKILL


@pytest.mark.parametrize("timeout", [0, 0.0, -1, -math.inf])
def test_wait_zero_or_negative_checks_once(spawn, timeout: float) -> None:
    child = spawn(SLEEP)
    with PidFd.from_pid(child.pid) as handle:
        with pytest.raises(TimeoutError):
            handle.wait(timeout=timeout)
        handle.kill()
        # And the same call returns at once once the child has exited.
        while handle.is_alive():
            time.sleep(0.01)
        assert handle.wait(timeout=timeout).status.signal == signal.SIGKILL


@pytest.mark.parametrize("timeout", [None, math.inf, 1e300, 2.0**63, sys.float_info.max])
def test_wait_forever_timeouts(spawn, timeout: float | None) -> None:
    child = spawn("import time; time.sleep(0.1)")
    with PidFd.from_pid(child.pid) as handle:
        assert handle.wait(timeout=timeout).status.success


def test_wait_nan_timeout_is_value_error(spawn) -> None:
    child = spawn(SLEEP)
    with PidFd.from_pid(child.pid) as handle:
        with pytest.raises(ValueError, match="NaN"):
            handle.wait(timeout=math.nan)
        with pytest.raises(TypeError):
            handle.wait(timeout="1")  # type: ignore[arg-type]


@pytest.mark.thread_unsafe(reason="sends SIGINT to this process")
def test_ctrl_c_interrupts_wait_and_leaves_child_unreaped(spawn) -> None:
    child = spawn(SLEEP)
    timer = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT))
    with PidFd.from_pid(child.pid) as handle:
        timer.start()
        start = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            handle.wait()
        elapsed = time.monotonic() - start
        timer.join()
        assert elapsed < 5
        assert _running(child.pid)
        handle.terminate()
        assert handle.wait(timeout=10).status.signal == signal.SIGTERM


@pytest.mark.thread_unsafe(reason="sets the SIGALRM handler and timer")
def test_raising_signal_handler_interrupts_wait(spawn) -> None:
    class Alarm(Exception):
        pass

    def handler(signum: int, frame: object) -> None:
        raise Alarm

    child = spawn(SLEEP)
    old = signal.signal(signal.SIGALRM, handler)
    try:
        with PidFd.from_pid(child.pid) as handle:
            signal.setitimer(signal.ITIMER_REAL, 0.1)
            with pytest.raises(Alarm):
                handle.wait(timeout=20)
            assert _running(child.pid)
            handle.kill()
            handle.wait(timeout=10)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def test_already_reaped_elsewhere_is_child_process_error(spawn) -> None:
    child = spawn("pass")
    with PidFd.from_pid(child.pid) as handle:
        child.wait()  # reaps behind the handle's back
        with pytest.raises(ChildProcessError) as excinfo:
            handle.wait()
    assert excinfo.value.errno == errno.ECHILD
    assert "already been reaped" in str(excinfo.value)


def test_not_our_child_fails_at_once_pointing_to_wait_exit() -> None:
    # pid 1 is never our child.
    with PidFd.from_pid(1) as handle:
        start = time.monotonic()
        for call in (handle.wait, handle.try_wait):
            with pytest.raises(ChildProcessError) as excinfo:
                call()
            assert excinfo.value.errno == errno.ECHILD
            assert "not a child" in str(excinfo.value)
            assert "wait_exit()" in str(excinfo.value)
        assert time.monotonic() - start < 1


@pytest.mark.thread_unsafe(reason="sets SIGCHLD to SIG_IGN")
def test_auto_reaped_child_says_sigchld_is_ignored() -> None:
    old = signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    try:
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.2)"])
        with PidFd.from_pid(child.pid) as handle, pytest.raises(ChildProcessError) as excinfo:
            handle.wait(timeout=10)
        child.returncode = 0  # already gone: keep Popen from trying
    finally:
        signal.signal(signal.SIGCHLD, old)
    assert "SIGCHLD is ignored" in str(excinfo.value)


def test_error_messages_differ_by_cause(spawn) -> None:
    texts = set()
    child = spawn("pass")
    with PidFd.from_pid(child.pid) as handle:
        handle.wait()
        with pytest.raises(ChildProcessError) as excinfo:
            handle.wait()
        texts.add(str(excinfo.value).replace(str(child.pid), "N"))
    child = spawn("pass")
    with PidFd.from_pid(child.pid) as handle:
        child.wait()
        with pytest.raises(ChildProcessError) as excinfo:
            handle.wait()
        texts.add(str(excinfo.value).replace(str(child.pid), "N"))
    with PidFd.from_pid(1) as handle, pytest.raises(ChildProcessError) as excinfo:
        handle.wait()
    texts.add(str(excinfo.value).replace("1", "N"))
    assert len(texts) == 3


# -- try_wait --------------------------------------------------------------------


def test_try_wait_none_while_running_then_reaps(spawn) -> None:
    child = spawn("import sys; sys.stdin.read(); raise SystemExit(6)", stdin=subprocess.PIPE)
    with PidFd.from_pid(child.pid) as handle:
        assert handle.try_wait() is None
        assert handle.try_wait() is None
        child.stdin.close()
        select.select([handle], [], [], 10)
        info = handle.try_wait()
        assert info is not None and info.status.code == 6
        with pytest.raises(ChildProcessError, match="earlier wait"):
            handle.try_wait()


# -- signals ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "expected"),
    [("kill", signal.SIGKILL), ("terminate", signal.SIGTERM)],
)
def test_kill_and_terminate(spawn, method: str, expected: int) -> None:
    child = spawn(SLEEP)
    with PidFd.from_pid(child.pid) as handle:
        getattr(handle, method)()
        assert handle.wait(timeout=10).status.signal == expected


@pytest.mark.parametrize("sig", [signal.SIGUSR1, int(signal.SIGUSR1)])
def test_send_signal_accepts_signals_members_and_ints(spawn, sig: int) -> None:
    child = spawn(SLEEP)
    with PidFd.from_pid(child.pid) as handle:
        handle.send_signal(sig)
        status = handle.wait(timeout=10).status
    assert status.signal == signal.SIGUSR1
    assert status.returncode == -signal.SIGUSR1


def test_signal_zero_checks_existence(spawn) -> None:
    child = spawn(SLEEP)
    with PidFd.from_pid(child.pid) as handle:
        handle.send_signal(0)
        assert handle.is_alive()
        handle.kill()
        handle.wait(timeout=10)
        with pytest.raises(ProcessLookupError) as excinfo:
            handle.send_signal(0)
    assert excinfo.value.errno == errno.ESRCH


@pytest.mark.parametrize("sig", [-1, 65, 1000, 2**40])
def test_send_signal_rejects_bad_numbers(spawn, sig: int) -> None:
    child = spawn(SLEEP)
    with PidFd.from_pid(child.pid) as handle, pytest.raises((ValueError, OverflowError)):
        handle.send_signal(sig)


@pytest.mark.parametrize("sig", ["9", 9.0, None])
def test_send_signal_rejects_non_int(spawn, sig: object) -> None:
    child = spawn(SLEEP)
    with PidFd.from_pid(child.pid) as handle, pytest.raises(TypeError):
        handle.send_signal(sig)  # type: ignore[arg-type]


def test_signal_after_exit_is_process_lookup_error(spawn) -> None:
    child = spawn("pass")
    with PidFd.from_pid(child.pid) as handle:
        handle.wait(timeout=10)
        with pytest.raises(ProcessLookupError, match="has exited"):
            handle.terminate()


def test_repr_names_pid_and_fd(spawn) -> None:
    child = spawn(SLEEP)
    with PidFd.from_pid(child.pid) as handle:
        assert repr(handle) == f"<PidFd pid={child.pid} fd={handle.fileno()}>"
