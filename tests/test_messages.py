"""Small promises about errors and warnings: each names what went wrong.

An unclosed handle warns as an unclosed file does; a closed handle refuses
``with``; a bad argument's error names the parameter; a zero or negative
timeout's ``TimeoutError`` does not claim a wait that never happened.
"""

from __future__ import annotations

import gc
import re
import subprocess
import sys
import warnings
from collections.abc import Callable

import pytest

import pidfd
from pidfd import AsyncPidFd, PidFd

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
