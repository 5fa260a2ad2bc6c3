"""Hostile input: every bad argument gets the documented exception, the exit
decoder agrees with the stdlib's ``os.W*`` macros, and no input whatsoever
makes the Rust core panic (a panic would surface as ``PanicException``, a
``BaseException`` that is not an ``Exception``)."""

from __future__ import annotations

import asyncio
import math
import os
import resource
import signal
import socket
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import _helpers as rh
import pidfd
from _helpers import Children
from pidfd import AsyncPidFd, ExitStatus, PidFd

CLD_EXITED, CLD_KILLED, CLD_DUMPED = 1, 2, 3


# --- documented exceptions for bad arguments ---------------------------------

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


BAD_FDS: list[tuple[object, tuple[type[BaseException], ...]]] = [
    (-1, (ValueError,)),
    (2**31, (ValueError, OverflowError)),
    (2**64 + 3, (ValueError, OverflowError)),
    ("3", (TypeError,)),
    (3.0, (TypeError,)),
    (None, (TypeError,)),
]


@pytest.mark.parametrize(("fd", "expected"), BAD_FDS, ids=[repr(f) for f, _ in BAD_FDS])
def test_bad_fd(fd: object, expected: tuple[type[BaseException], ...], children: Children) -> None:
    with pytest.raises(expected):
        PidFd.from_fd(fd)
    pid = children.sleep(30)
    with PidFd.from_pid(pid) as h, pytest.raises(expected):
        h.getfd(fd)


def test_from_fd_refuses_non_pidfds_and_leaves_them_open() -> None:
    r, w = os.pipe()
    try:
        with pytest.raises(ValueError, match="not a pidfd"):
            PidFd.from_fd(r)
        os.write(w, b"z")
        assert os.read(r, 1) == b"z"  # still ours, still open
    finally:
        os.close(r)
        os.close(w)
    # A number that is not open at all.
    with pytest.raises(OSError):
        PidFd.from_fd(r)


def test_from_socket_peer_bad_arguments() -> None:
    with pytest.raises(TypeError):
        PidFd.from_socket_peer("sock")
    with pytest.raises(TypeError):
        PidFd.from_socket_peer(None)
    with pytest.raises((ValueError, OverflowError)):
        PidFd.from_socket_peer(-5)
    r, w = os.pipe()
    try:
        with pytest.raises(OSError):
            PidFd.from_socket_peer(r)
    finally:
        os.close(r)
        os.close(w)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s, pytest.raises(OSError):
        PidFd.from_socket_peer(s)


# --- timeouts -----------------------------------------------------------------

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


# --- closed handles -----------------------------------------------------------

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


@pytest.mark.parametrize(
    "call",
    ["fileno", "try_wait", "send_signal", "kill", "terminate", "is_alive", "info", "getfd"],
)
def test_closed_async_handle_raises_value_error(call: str, children: Children) -> None:
    pid = children.sleep(30)
    a = AsyncPidFd.from_pid(pid)
    a.close()
    args = (0,) if call in ("send_signal", "getfd") else ()
    with pytest.raises(ValueError, match="closed"):
        getattr(a, call)(*args)
    assert a.pid == pid
    assert a.closed
    a.close()


@pytest.mark.parametrize("method", ["wait", "wait_exit"])
def test_closed_async_handle_awaits_raise_value_error(method: str, children: Children) -> None:
    pid = children.sleep(30)
    a = AsyncPidFd.from_pid(pid)
    a.close()

    async def main() -> None:
        with pytest.raises(ValueError, match="closed"):
            await getattr(a, method)()

    asyncio.run(main())


def test_wait_any_bad_arguments(children: Children) -> None:
    with pytest.raises(ValueError):
        pidfd.wait_any([])
    with pytest.raises(TypeError):
        pidfd.wait_any(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        pidfd.wait_any([os.getpid()])  # type: ignore[list-item]
    pid = children.sleep(30)
    with PidFd.from_pid(pid) as h:
        with pytest.raises(TypeError):
            pidfd.wait_any([h, "x"])  # type: ignore[list-item]
        with pytest.raises(TimeoutError):
            pidfd.wait_any(iter([h, h]), timeout=0)


def test_wait_any_with_the_same_handle_many_times(children: Children) -> None:
    """Repeats must not count against RLIMIT_NOFILE (poll(2) refuses more
    entries than that with EINVAL): each fd is polled once."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    pid = children.sleep(0.2)
    with PidFd.from_pid(pid) as h:
        a = AsyncPidFd(h)
        handles: list[PidFd | AsyncPidFd] = [h, a] * (soft // 2 + 10)
        with pytest.raises(TimeoutError):
            pidfd.wait_any(handles, timeout=0)
        done = pidfd.wait_any(handles, timeout=10)
        # Every entry is reported, as the object given, in order.
        assert len(done) == len(handles)
        assert all(x is y for x, y in zip(done, handles, strict=True))


def test_async_pidfd_wraps_only_pidfd() -> None:
    for bad in (None, 1, "1", object()):
        with pytest.raises(TypeError):
            AsyncPidFd(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("ws", [-1, 0x10000, 0x7F, 0x137F, 0xFFFF, 2**31, 2**64, 1.0, "0", None])
def test_from_waitstatus_refuses_non_exits(ws: object) -> None:
    with pytest.raises((ValueError, OverflowError, TypeError)):
        ExitStatus.from_waitstatus(ws)


# --- property tests: the decoder against the stdlib -----------------------------


def _agrees_with_stdlib(status: ExitStatus) -> None:
    ws = status.waitstatus
    assert os.WIFEXITED(ws) == (status.code is not None)
    assert os.WIFSIGNALED(ws) == (status.signal is not None)
    assert not os.WIFSTOPPED(ws)
    assert os.waitstatus_to_exitcode(ws) == status.returncode
    if status.code is not None:
        assert os.WEXITSTATUS(ws) == status.code
        assert status.success == (status.code == 0)
        assert not status.core_dumped
    else:
        assert os.WTERMSIG(ws) == status.signal
        assert os.WCOREDUMP(ws) == status.core_dumped
        assert not status.success
    assert ExitStatus.from_waitstatus(ws) == status
    assert hash(ExitStatus.from_waitstatus(ws)) == hash(status)
    assert "ExitStatus(" in repr(status)


@given(st.integers(0, 255))
def test_from_siginfo_exited_matches_os_macros(code: int) -> None:
    status = ExitStatus.from_siginfo(CLD_EXITED, code)
    assert status.code == code
    assert status.signal is None
    _agrees_with_stdlib(status)


@given(st.sampled_from([CLD_KILLED, CLD_DUMPED]), st.integers(1, 64))
def test_from_siginfo_killed_matches_os_macros(si_code: int, sig: int) -> None:
    status = ExitStatus.from_siginfo(si_code, sig)
    assert status.signal == sig
    assert status.code is None
    assert status.core_dumped == (si_code == CLD_DUMPED)
    assert status.returncode == -sig
    _agrees_with_stdlib(status)


@given(st.integers(0, 0xFFFF))
def test_from_waitstatus_matches_os_macros(ws: int) -> None:
    exits = os.WIFEXITED(ws) or os.WIFSIGNALED(ws)
    try:
        status = ExitStatus.from_waitstatus(ws)
    except ValueError:
        assert not exits, hex(ws)
        return
    assert exits, hex(ws)
    assert status.waitstatus == ws
    assert os.waitstatus_to_exitcode(ws) == status.returncode
    if os.WIFEXITED(ws):
        assert status.code == os.WEXITSTATUS(ws)
    else:
        assert status.signal == os.WTERMSIG(ws)
        assert status.core_dumped == os.WCOREDUMP(ws)


@given(st.integers(0, 255), st.sampled_from([CLD_EXITED, CLD_KILLED, CLD_DUMPED]))
def test_real_waitstatus_round_trips(value: int, si_code: int) -> None:
    """What wait4(2) would have reported for the same exit decodes the same."""
    assume(si_code == CLD_EXITED or 1 <= value <= 64)
    from_siginfo = ExitStatus.from_siginfo(si_code, value)
    ws = value << 8 if si_code == CLD_EXITED else value | (0x80 if si_code == CLD_DUMPED else 0)
    assert ExitStatus.from_waitstatus(ws) == from_siginfo


HUGE = st.one_of(
    st.integers(),
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, -1, 2**31 - 1, 2**31, -(2**31), 2**32, 2**63 - 1, 2**63, 2**64]),
)


def _no_panic(call: Callable[[], object]) -> object:
    """Run ``call``; the only acceptable failures are ordinary exceptions."""
    try:
        return call()
    except (ValueError, OverflowError, TypeError) as e:
        return e
    except BaseException as e:
        assert type(e).__name__ != "PanicException", repr(e)
        raise


@given(HUGE, HUGE)
def test_from_siginfo_never_panics(si_code: int, si_status: int) -> None:
    result = _no_panic(lambda: ExitStatus.from_siginfo(si_code, si_status))
    if isinstance(result, ExitStatus):
        assert si_code in (CLD_EXITED, CLD_KILLED, CLD_DUMPED)
        _agrees_with_stdlib(result)
    else:
        assert isinstance(result, (ValueError, OverflowError))


@given(HUGE)
def test_from_waitstatus_never_panics(ws: int) -> None:
    result = _no_panic(lambda: ExitStatus.from_waitstatus(ws))
    if isinstance(result, ExitStatus):
        assert result.waitstatus == ws
        assert os.WIFEXITED(ws) or os.WIFSIGNALED(ws)
    else:
        assert isinstance(result, (ValueError, OverflowError))


# --- fuzzing the Python surface with arbitrary objects ----------------------------


class Weird:
    """An object with hostile dunders: it claims to be an int and a float."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __index__(self) -> int:
        return self.value

    def __int__(self) -> int:
        return self.value

    def __float__(self) -> float:
        return float(self.value)


class Exploding:
    def __index__(self) -> int:
        raise RuntimeError("boom from __index__")

    def __float__(self) -> float:
        raise RuntimeError("boom from __float__")

    def fileno(self) -> int:
        raise RuntimeError("boom from fileno")


ANYTHING = st.one_of(
    HUGE,
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
    st.binary(max_size=5),
    st.none(),
    st.booleans(),
    st.lists(st.integers(-3, 3), max_size=3),
    st.tuples(st.integers(-3, 3)),
    st.sampled_from(list(signal.Signals)),
    st.builds(Weird, st.integers(-(2**65), 2**65)),
    st.just(Exploding()),
    st.just(object()),
    st.fractions(),
    st.decimals(allow_nan=True),
    st.complex_numbers(),
)


def _ok_error(e: BaseException) -> bool:
    """An exception a caller could reasonably get for a bad argument."""
    return isinstance(e, (ValueError, TypeError, OverflowError, OSError, RuntimeError))


def _run_fuzz(call: Callable[[], object]) -> object:
    try:
        return call()
    except Exception as e:
        assert _ok_error(e), repr(e)
        return e
    except BaseException as e:
        assert type(e).__name__ != "PanicException", repr(e)
        raise


class Targets:
    """One running child, one zombie child and a non-child, opened once for a
    whole hypothesis run."""

    def __init__(self, children: Children) -> None:
        self.running_pid = children.sleep(60)
        self.running = PidFd.from_pid(self.running_pid)
        self.zombie_pid = children.exited(code=1)
        self.zombie = PidFd.from_pid(self.zombie_pid)
        self.foreign = PidFd.from_pid(os.getppid())

    def close(self) -> None:
        for h in (self.running, self.zombie, self.foreign):
            h.close()


@pytest.fixture
def targets(children: Children) -> Iterator[Targets]:
    t = Targets(children)
    try:
        yield t
    finally:
        t.close()


def _not_an_open_pidfd(x: object) -> bool:
    """from_fd() takes ownership: never hand it a pidfd some handle owns."""
    try:
        n = int(x.__index__()) if hasattr(x, "__index__") else None  # type: ignore[union-attr]
    except Exception:
        return True
    return n is None or not rh.is_pidfd_link(rh.fd_target(n) if 0 <= n < 2**31 else None)


FUZZ_SETTINGS = settings(
    max_examples=int(os.environ.get("PIDFD_FUZZ_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@FUZZ_SETTINGS
@given(x=ANYTHING)
def test_fuzz_constructors(x: object, targets: Targets) -> None:
    for opener in (PidFd.from_pid, AsyncPidFd.from_pid):
        result = _run_fuzz(lambda opener=opener: opener(x))
        if isinstance(result, (PidFd, AsyncPidFd)):
            result.close()
    assume(_not_an_open_pidfd(x))
    result = _run_fuzz(lambda: PidFd.from_fd(x))
    assert not isinstance(result, PidFd), "adopted something that is not a pidfd"
    result = _run_fuzz(lambda: PidFd.from_socket_peer(x))
    if isinstance(result, PidFd):
        result.close()
    _run_fuzz(lambda: AsyncPidFd(x))  # type: ignore[arg-type]


@FUZZ_SETTINGS
@given(x=ANYTHING)
def test_fuzz_methods(x: object, targets: Targets) -> None:
    # Arbitrary signals go only to the zombie, which can no longer act on
    # them (the non-child is our parent, which must not get SIGKILL).
    _run_fuzz(lambda: targets.zombie.send_signal(x))
    # Timeouts: the zombie answers at once whatever the value, and the
    # non-child is refused before any waiting.
    _run_fuzz(lambda: targets.zombie.wait_exit(timeout=x))
    _run_fuzz(lambda: targets.foreign.wait(timeout=x))
    _run_fuzz(lambda: pidfd.wait_any([targets.zombie], timeout=x))
    _run_fuzz(lambda: pidfd.wait_any(x))  # type: ignore[arg-type]
    dup = _run_fuzz(lambda: targets.running.getfd(x))
    if isinstance(dup, int):
        os.close(dup)
    _run_fuzz(lambda: ExitStatus.from_waitstatus(x))
    _run_fuzz(lambda: ExitStatus.from_siginfo(x, x))
    _run_fuzz(lambda: ExitStatus.from_siginfo(CLD_EXITED, x))
    # The fuzzing left the handles as they were.
    assert rh.is_running(targets.running_pid)
    assert rh.is_unreaped(targets.zombie_pid)
    assert targets.running.is_alive()
