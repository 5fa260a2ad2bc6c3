"""Small promises about errors and warnings: each names what went wrong.

An unclosed handle warns as an unclosed file does; a closed handle refuses
``with``; a bad argument's error names the parameter; a zero or negative
timeout's ``TimeoutError`` does not claim a wait that never happened; and no
argument whatsoever (hypothesis) makes the Rust core panic (a panic would
surface as ``PanicException``, a ``BaseException`` that is not an
``Exception``): every bad one gets an ordinary exception.
"""

from __future__ import annotations

import gc
import os
import re
import signal
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import _helpers as rh
import pidfd
from _helpers import CLD_EXITED, HUGE, Children
from pidfd import AsyncPidFd, ExitStatus, PidFd

SLEEP = "import time; time.sleep(60)"


def _collect_unclosed(make: object) -> list[warnings.WarningMessage]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        handle = make()  # type: ignore[operator]
        del handle
        gc.collect()
    return [w for w in caught if issubclass(w.category, ResourceWarning)]


@pytest.mark.parametrize("cls", [PidFd, AsyncPidFd])
def test_unclosed_handle_warns_when_collected(spawn, cls: type[PidFd | AsyncPidFd]) -> None:
    child = spawn(SLEEP)
    caught = _collect_unclosed(lambda: cls.from_pid(child.pid))
    assert len(caught) == 1, caught
    message = str(caught[0].message)
    assert f"unclosed PidFd (pid {child.pid}," in message
    assert "close()" in message


@pytest.mark.parametrize("cls", [PidFd, AsyncPidFd])
def test_closed_handle_collected_quietly(spawn, cls: type[PidFd | AsyncPidFd]) -> None:
    child = spawn(SLEEP)

    def make() -> PidFd | AsyncPidFd:
        handle = cls.from_pid(child.pid)
        handle.close()
        return handle

    assert _collect_unclosed(make) == []
    with cls.from_pid(child.pid):
        pass
    assert _collect_unclosed(lambda: None) == []


@pytest.mark.parametrize("filter_", ["ignore", "always", "error"])
def test_unclosed_temporary_keeps_the_exception_it_raised(filter_: str) -> None:
    # A call on a handle nobody holds raises, and the handle is dropped while
    # that exception propagates: the caller must get that exception (here
    # ChildProcessError), never a SystemError from the warning in between.
    code = (
        "import os\n"
        "from pidfd import PidFd\n"
        "try:\n"
        "    PidFd.from_pid(os.getppid()).try_wait()\n"
        "except Exception as e:\n"
        "    print(type(e).__name__)\n"
    )
    out = subprocess.run(
        [sys.executable, "-W", f"{filter_}::ResourceWarning", "-c", code],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == "ChildProcessError\n", (out.stdout, out.stderr)


def test_unclosed_handle_under_error_filter_is_reported_not_raised(tmp_path) -> None:
    # -W error turns the warning into an exception, which a destructor
    # cannot raise: it is reported as unraisable, as for an unclosed file.
    code = (
        "import os, gc\n"
        "from pidfd import PidFd\n"
        "h = PidFd.from_pid(os.getpid())\n"
        "del h\n"
        "gc.collect()\n"
        "print('survived')\n"
    )
    out = subprocess.run(
        [sys.executable, "-W", "error::ResourceWarning", "-c", code],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == "survived\n"
    assert "ResourceWarning: unclosed PidFd" in out.stderr


@pytest.mark.parametrize("cls", [PidFd, AsyncPidFd])
def test_with_on_a_closed_handle_is_value_error(spawn, cls: type[PidFd | AsyncPidFd]) -> None:
    child = spawn(SLEEP)
    handle = cls.from_pid(child.pid)
    handle.close()
    with pytest.raises(ValueError, match=rf"closed {cls.__name__} \(pid {child.pid}\)"), handle:
        pass


@pytest.mark.anyio
async def test_async_with_on_a_closed_handle_is_value_error(spawn) -> None:
    child = spawn(SLEEP)
    handle = AsyncPidFd.from_pid(child.pid)
    handle.close()
    with pytest.raises(ValueError, match="closed AsyncPidFd"):
        async with handle:
            pass


@pytest.mark.parametrize(
    "call",
    ["fileno", "try_wait", "is_alive", "kill", "terminate", "info", "signal", "getfd"],
)
def test_closed_async_handle_names_itself(spawn, call: str) -> None:
    child = spawn(SLEEP)
    handle = AsyncPidFd.from_pid(child.pid)
    handle.close()
    calls = {
        "signal": lambda: handle.send_signal(0),
        "getfd": lambda: handle.getfd(0),
    }
    with pytest.raises(ValueError) as excinfo:
        (calls[call] if call in calls else getattr(handle, call))()
    message = str(excinfo.value)
    assert f"closed AsyncPidFd (pid {child.pid})" in message
    assert "AsyncPidFd.from_pid()" in message
    assert "PidFd.from_pid()" not in message.replace("AsyncPidFd.from_pid()", "")


@pytest.mark.anyio
async def test_closed_async_handle_names_itself_in_waits(spawn) -> None:
    child = spawn(SLEEP)
    handle = AsyncPidFd.from_pid(child.pid)
    handle.close()
    for wait in (handle.wait, handle.wait_exit):
        with pytest.raises(ValueError, match="closed AsyncPidFd"):
            await wait()


def _timed_waits(handle: PidFd) -> tuple[Callable[..., object], ...]:
    """The calls that take ``timeout=``: on ``handle`` and through ``wait_any``."""
    return (
        handle.wait,
        handle.wait_exit,
        lambda timeout: pidfd.wait_any([handle], timeout),
    )


@pytest.mark.parametrize("bad", ["1", b"1", [1], object()])
def test_timeout_type_error_names_the_parameter(spawn, bad: object) -> None:
    child = spawn(SLEEP)
    with PidFd.from_pid(child.pid) as handle:
        for call in _timed_waits(handle):
            with pytest.raises(TypeError, match=r"^timeout must be a number of seconds"):
                call(timeout=bad)  # type: ignore[operator]
            assert handle.is_alive()


@pytest.mark.parametrize("bad", [1, 0, "yes", None.__class__])
def test_thread_flag_type_error_is_readable(spawn, bad: object) -> None:
    child = spawn(SLEEP)
    for cls in (PidFd, AsyncPidFd):
        with pytest.raises(TypeError, match=r"^thread must be True or False, not "):
            cls.from_pid(child.pid, thread=bad)  # type: ignore[arg-type]


def test_thread_flag_keeps_its_default_in_the_signature() -> None:
    import inspect

    assert str(inspect.signature(PidFd.from_pid)) == "(pid, *, thread=False)"


@pytest.mark.parametrize("timeout", [0, -1, -0.5])
def test_zero_or_negative_timeout_does_not_claim_a_wait(spawn, timeout: float) -> None:
    child = spawn(SLEEP)
    with PidFd.from_pid(child.pid) as handle:
        for call in _timed_waits(handle):
            with pytest.raises(TimeoutError) as excinfo:
                call(timeout=timeout)  # type: ignore[operator]
            message = str(excinfo.value)
            assert "0s timeout" not in message
            assert "s timeout" not in message
            assert f"timeout={timeout:g} checks once, without waiting" in message


def test_positive_timeout_names_its_length(spawn) -> None:
    child = spawn(SLEEP)
    with PidFd.from_pid(child.pid) as handle:
        with pytest.raises(TimeoutError, match=r"after the 0\.05s timeout"):
            handle.wait(timeout=0.05)
        with pytest.raises(TimeoutError, match=r"had exited after the 0\.05s timeout"):
            pidfd.wait_any([handle], timeout=0.05)


def test_subreaper_grace_of_wrong_type_is_a_type_error() -> None:
    import pidfd

    with pytest.raises(TypeError, match="grace must be a number of seconds, not str"):
        pidfd.Subreaper(grace="1")  # type: ignore[arg-type]


@pytest.mark.parametrize("pid", [2**31, 2**63, 2**64, 2**100])
def test_pid_too_large_names_the_pid_t_limit(pid: int) -> None:
    # Beyond an i64 the same message as beyond a pid_t, not a bare "out of range".
    with pytest.raises(OverflowError) as excinfo:
        PidFd.from_pid(pid)
    assert str(excinfo.value) == f"pid {pid} is out of range: a pid_t is at most 2147483647"


@pytest.mark.parametrize("fd", [2**31, 2**40])
def test_fd_too_large_is_out_of_range_not_negative(fd: int) -> None:
    with pytest.raises(ValueError) as excinfo:
        PidFd.from_fd(fd)
    message = str(excinfo.value)
    assert "non-negative" not in message
    assert message == f"fd {fd} is out of range: a file descriptor is a C int, at most 2147483647"


DROP_RUNNING = """
import asyncio, gc, os, signal, sys
import pidfd

async def open_one():
    return (await pidfd.open_process([sys.executable, "-c", "import time; time.sleep(60)"])).pid

if sys.argv[1] == "popen":
    pid = pidfd.Popen([sys.executable, "-c", "import time; time.sleep(60)"]).pid
else:
    pid = asyncio.run(open_one())
gc.collect()
os.kill(pid, signal.SIGKILL)
print("dropped")
"""


@pytest.mark.parametrize("filter_", ["always", "error"])
@pytest.mark.parametrize("what", ["popen", "open_process"])
def test_dropping_a_running_child_warns_once(what: str, filter_: str) -> None:
    # The stock "subprocess N is still running", and no second warning
    # about an unclosed PidFd the user never opened: neither when the object
    # is kept for a later reap (the warning shown) nor when the warning was
    # raised as an error in __del__ (the object then collected at once).
    out = subprocess.run(
        [sys.executable, "-W", f"{filter_}::ResourceWarning", "-c", DROP_RUNNING, what],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == "dropped\n", out.stderr
    warned = re.findall(r"ResourceWarning: (?!Enable tracemalloc)", out.stderr)
    assert len(warned) == 1, out.stderr
    assert "is still running" in out.stderr
    assert "unclosed PidFd" not in out.stderr


# -- any argument at all: an ordinary exception, never a panic -------------------------


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
