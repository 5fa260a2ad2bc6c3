"""The synchronous handle, row by row of the API contract; then every bad
argument and timeout on each blocking call, every call on a closed handle,
fork and exec (no pidfd reaches an exec'd program; a forked child using its
parent's handle gets a clear error), the child's odd lives (auto-reaped,
reaped behind our back, stopped, a zombie, a reused pid), and the slow soak
and fd-limit cases (sizes from the environment, see ``_helpers.SOAK_CYCLES``).
"""

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
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest

import _helpers as rh
import pidfd
from _helpers import (
    REUSE_PID,
    SOAK_BATCH,
    SOAK_CYCLES,
    Accounting,
    Children,
    fds_after_exec,
    is_running,
    is_unreaped,
    kernel_at_least,
    reaping_all,
    spawn_true,
    wait_zombie,
)
from pidfd import AsyncPidFd, ExitInfo, PidFd

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


# -- bad arguments ---------------------------------------------------------------------


BAD_PIDS: list[tuple[object, tuple[type[BaseException], ...]]] = [
    (0, (ValueError,)),
    (-1, (ValueError,)),
    (-(2**31), (ValueError,)),
    (2**31, (OverflowError, ValueError)),
    (2**32 + 1, (OverflowError, ValueError)),  # would wrap to pid 1 as a u32
    (2**63, (OverflowError, ValueError)),
    (2**64 + 1, (OverflowError, ValueError)),
    (-(2**64), (OverflowError, ValueError)),
    (1.0, (TypeError,)),
    ("1", (TypeError,)),
    (b"1", (TypeError,)),
    (None, (TypeError,)),
    (True, (TypeError,)),
    (Decimal(1), (TypeError,)),
    ([1], (TypeError,)),
]


@pytest.mark.parametrize("opener", [PidFd.from_pid, AsyncPidFd.from_pid], ids=["sync", "async"])
@pytest.mark.parametrize(("pid", "expected"), BAD_PIDS, ids=[repr(p) for p, _ in BAD_PIDS])
def test_bad_pid(
    opener: Callable[[object], object], pid: object, expected: tuple[type[BaseException], ...]
) -> None:
    with pytest.raises(expected):
        opener(pid)


def test_pid_that_does_not_exist() -> None:
    with open("/proc/sys/kernel/pid_max") as f:
        pid_max = int(f.read())
    with pytest.raises(ProcessLookupError):
        PidFd.from_pid(pid_max + 1 if pid_max < 2**31 - 1 else 2**31 - 1)


BAD_SIGNALS: list[tuple[object, tuple[type[BaseException], ...]]] = [
    (-1, (ValueError,)),
    (65, (ValueError,)),
    (signal.SIGRTMAX + 1, (ValueError,)),
    (2**31, (ValueError, OverflowError)),
    (2**40, (ValueError, OverflowError)),
    (2**64 + 9, (ValueError, OverflowError)),  # would wrap to SIGKILL
    ("9", (TypeError,)),
    (9.0, (TypeError,)),
    (None, (TypeError,)),
    (True, (TypeError,)),
]


@pytest.mark.parametrize(("sig", "expected"), BAD_SIGNALS, ids=[repr(s) for s, _ in BAD_SIGNALS])
def test_bad_signal_is_refused_and_sends_nothing(
    sig: object, expected: tuple[type[BaseException], ...], children: Children
) -> None:
    pid = children.sleep(30)
    with PidFd.from_pid(pid) as h, AsyncPidFd.from_pid(pid) as a:
        with pytest.raises(expected):
            h.send_signal(sig)
        with pytest.raises(expected):
            a.send_signal(sig)
        assert rh.is_running(pid)


def test_signal_enum_and_zero_are_accepted(children: Children) -> None:
    pid = children.sleep(30)
    with PidFd.from_pid(pid) as h:
        h.send_signal(0)
        assert rh.is_running(pid)
        h.send_signal(signal.Signals.SIGTERM)
        assert h.wait(timeout=10).status.signal == signal.SIGTERM


# -- timeouts, on every blocking call --------------------------------------------------


TIMED: dict[str, Callable[[PidFd, object], Any]] = {
    "wait": lambda h, t: h.wait(timeout=t),
    "wait_exit": lambda h, t: h.wait_exit(timeout=t),
    "wait_any": lambda h, t: pidfd.wait_any([h], timeout=t),
}


@pytest.mark.parametrize("name", list(TIMED))
@pytest.mark.parametrize("timeout", [0, 0.0, -1, -1e300, -math.inf, 1e-12])
def test_zero_or_negative_timeout_checks_once(
    name: str, timeout: float, children: Children
) -> None:
    pid = children.sleep(30)
    with PidFd.from_pid(pid) as h:
        with pytest.raises(TimeoutError):
            TIMED[name](h, timeout)
        assert rh.is_running(pid)


@pytest.mark.parametrize("name", list(TIMED))
@pytest.mark.parametrize("timeout", [0, -1, -math.inf])
def test_zero_or_negative_timeout_on_exited_child_returns(
    name: str, timeout: float, children: Children
) -> None:
    pid = children.exited(code=2)
    with PidFd.from_pid(pid) as h:
        result = TIMED[name](h, timeout)
        assert result is not None


@pytest.mark.parametrize("name", list(TIMED))
def test_nan_timeout_is_refused(name: str, children: Children) -> None:
    pid = children.exited()
    with PidFd.from_pid(pid) as h:
        with pytest.raises(ValueError, match="NaN"):
            TIMED[name](h, math.nan)
        assert rh.is_unreaped(pid)  # refused before doing anything


@pytest.mark.parametrize("name", list(TIMED))
@pytest.mark.parametrize("timeout", [math.inf, 1e300, 2.0**63, 1e18, 10**30])
def test_huge_timeout_waits(name: str, timeout: float, children: Children) -> None:
    pid = children.sleep(0.2)
    with PidFd.from_pid(pid) as h:
        result = TIMED[name](h, timeout)
        assert result is not None
        assert not h.is_alive()


@pytest.mark.parametrize("name", list(TIMED))
@pytest.mark.parametrize("timeout", ["1", b"1", [1], object()])
def test_timeout_of_wrong_type(name: str, timeout: object, children: Children) -> None:
    pid = children.exited()
    with PidFd.from_pid(pid) as h, pytest.raises(TypeError):
        TIMED[name](h, timeout)


# -- closed handles, every call --------------------------------------------------------


CLOSED_CALLS: dict[str, Callable[[PidFd], object]] = {
    "fileno": lambda h: h.fileno(),
    "wait": lambda h: h.wait(),
    "wait(timeout)": lambda h: h.wait(timeout=1),
    "try_wait": lambda h: h.try_wait(),
    "send_signal": lambda h: h.send_signal(0),
    "kill": lambda h: h.kill(),
    "terminate": lambda h: h.terminate(),
    "is_alive": lambda h: h.is_alive(),
    "wait_exit": lambda h: h.wait_exit(),
    "info": lambda h: h.info(),
    "getfd": lambda h: h.getfd(0),
    "wait_any": lambda h: pidfd.wait_any([h]),
}


@pytest.fixture
def closed_handle(children: Children) -> Iterator[tuple[PidFd, int]]:
    pid = children.sleep(30)
    h = PidFd.from_pid(pid)
    h.close()
    yield h, pid


@pytest.mark.parametrize("call", list(CLOSED_CALLS))
def test_closed_handle_raises_value_error(call: str, closed_handle: tuple[PidFd, int]) -> None:
    h, pid = closed_handle
    with pytest.raises(ValueError, match="closed"):
        CLOSED_CALLS[call](h)
    assert h.pid == pid
    assert h.closed
    h.close()  # idempotent
    assert "closed" in repr(h)
    assert rh.is_running(pid)


# -- fork and exec ---------------------------------------------------------------------


def test_pidfd_is_close_on_exec(children: Children) -> None:
    pid = children.sleep(30)
    with PidFd.from_pid(pid) as h, AsyncPidFd.from_pid(pid) as a:
        for fd in (h.fileno(), a.fileno()):
            assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
        # A control fd without the flag does reach the child, so the check
        # below can tell a leak from an empty listing.
        r, w = os.pipe()
        os.set_inheritable(r, True)
        try:
            inherited = fds_after_exec()
        finally:
            os.close(r)
            os.close(w)
        assert r in inherited
        assert h.fileno() not in inherited
        assert a.fileno() not in inherited
        assert not [t for t in inherited.values() if rh.is_pidfd_link(t)], inherited


# Runs in a fresh interpreter (forking pytest itself would copy its threads
# and state): fork, then use the parent's handle from the forked child.
FORKED_CHILD_SCRIPT = textwrap.dedent(
    r"""
    import json, os, signal, sys, time
    from pidfd import PidFd

    SLEEP = sys.argv[1]
    target = os.posix_spawn(SLEEP, [SLEEP, "30"], os.environ)
    handle = PidFd.from_pid(target)
    r, w = os.pipe()
    forked = os.fork()
    if forked == 0:
        os.close(r)
        report = {}
        for call in ("wait", "try_wait"):
            start = time.monotonic()
            try:
                getattr(handle, call)(*([5] if call == "wait" else []))
                report[call] = ["returned", None]
            except Exception as e:
                report[call] = [type(e).__name__, str(e)]
            report[call].append(time.monotonic() - start)
        try:
            handle.wait_exit(timeout=0.2)
            report["wait_exit"] = "returned"
        except TimeoutError:
            report["wait_exit"] = "TimeoutError"
        os.write(w, json.dumps(report).encode())
        os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.waitpid(forked, 0)
    # The parent still owns the child and its handle still works.
    handle.kill()
    status = handle.wait(timeout=5).status
    report = json.loads(data)
    report["parent_status"] = status.signal
    print(json.dumps(report))
    """
)


def test_forked_child_using_parents_handle_gets_clear_error() -> None:
    report = rh.run_script(
        FORKED_CHILD_SCRIPT, rh.SLEEP, what="forked child using its parent's handle"
    )
    for call in ("wait", "try_wait"):
        kind, message, seconds = report[call]
        assert kind == "ChildProcessError", report
        assert "not a child" in message, message
        assert seconds < 1.0, report
    # Waiting without reaping is fine for a non-child: it just times out.
    assert report["wait_exit"] == "TimeoutError"
    assert report["parent_status"] == 9


# -- the child's life: auto-reaped, reaped behind our back, stopped, zombie, reused pid ---


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


# -- soak and the fd limit (slow) ------------------------------------------------------


def _sync_cycle(pid: int, k: int) -> None:
    """One open/wait/close cycle; every fourth one takes an error path."""
    h = PidFd.from_pid(pid)
    try:
        if k % 4 == 1:
            # Reaped behind our back: the ECHILD path and its diagnosis.
            os.waitpid(pid, 0)
            with pytest.raises(ChildProcessError):
                h.wait()
        elif k % 4 == 2:
            status = h.wait_exit(timeout=10)
            assert status is not None
            assert status.code == 0
            info = h.wait(timeout=10)
            assert info.status.code == 0
        elif k % 4 == 3:
            h.close()
            with pytest.raises(ValueError):
                h.wait()
            os.waitpid(pid, 0)
        else:
            info = h.wait()
            assert isinstance(info, ExitInfo)
            assert info.status.code == 0
            # Build the stdlib objects too: they are cached on the ExitInfo.
            assert info.siginfo.si_pid == pid
            assert info.rusage.ru_utime >= 0
    finally:
        h.close()


@pytest.mark.slow
def test_sync_soak_no_fd_or_memory_leak() -> None:
    # Warm-up: first-call caches (stdlib types, kernel version) are not leaks.
    pids = spawn_true(SOAK_BATCH)
    with reaping_all(pids):
        for k, pid in enumerate(pids):
            _sync_cycle(pid, k)
    acct = Accounting("sync soak")
    done = 0
    while done < SOAK_CYCLES:
        pids = spawn_true(min(SOAK_BATCH, SOAK_CYCLES - done))
        with reaping_all(pids):
            for pid in pids:
                _sync_cycle(pid, done)
                done += 1
    acct.check(done)


EMFILE_SCRIPT = textwrap.dedent(
    r"""
    import errno, json, os, resource, sys, time
    from pidfd import AsyncPidFd, PidFd

    SLEEP = sys.argv[1]
    target = os.posix_spawn(SLEEP, [SLEEP, "30"], os.environ)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 8, hard))
    report = {}
    handles = []
    start = time.monotonic()
    for opener in (PidFd.from_pid, AsyncPidFd.from_pid):
        try:
            for _ in range(100):
                handles.append(opener(target))
            report[opener.__qualname__] = "no error"
        except OSError as e:
            report[opener.__qualname__] = [e.errno == errno.EMFILE, type(e).__name__, str(e)]
    report["seconds"] = time.monotonic() - start
    report["opened"] = len(handles)
    # Freeing one fd is enough to work again.
    handles.pop().close()
    with PidFd.from_pid(target) as h:
        h.kill()
        report["status"] = h.wait(timeout=10).status.signal
    for h in handles:
        h.close()
    print(json.dumps(report))
    """
)


@pytest.mark.slow
def test_low_fd_limit_gives_emfile_not_a_hang() -> None:
    report = rh.run_script(EMFILE_SCRIPT, rh.SLEEP, what="opening handles at the fd limit")
    for opener in ("PidFd.from_pid", "AsyncPidFd.from_pid"):
        is_emfile, kind, message = report[opener]
        assert is_emfile, report
        assert kind == "OSError", report
        assert "pidfd_open" in message, report
    assert 0 < report["opened"] < 100
    assert report["seconds"] < 5
    assert report["status"] == signal.SIGKILL
