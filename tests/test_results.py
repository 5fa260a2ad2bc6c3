"""`ExitInfo` and `ExitStatus`: the stdlib types and the decoded status, checked
against the stdlib's ``os.W*`` macros for every input (hypothesis), and never
a Rust panic whatever the numbers."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from collections.abc import Callable

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from _helpers import CLD_DUMPED, CLD_EXITED, CLD_KILLED, HUGE
from pidfd import ExitStatus, PidFd


def reap(argv: list[str], **kwargs: object):
    child = subprocess.Popen(argv, **kwargs)  # type: ignore[call-overload]
    with PidFd.from_pid(child.pid) as handle:
        info = handle.wait(timeout=30)
    child.returncode = info.status.returncode
    return child, info


def test_siginfo_is_the_stdlib_waitid_result() -> None:
    child, info = reap([sys.executable, "-c", "raise SystemExit(9)"])
    siginfo = info.siginfo
    assert isinstance(siginfo, os.waitid_result)
    assert siginfo.si_pid == child.pid == info.pid
    assert siginfo.si_uid == os.getuid()
    assert siginfo.si_signo == signal.SIGCHLD
    assert siginfo.si_status == 9
    assert siginfo.si_code == os.CLD_EXITED
    assert info.siginfo is siginfo  # built once


def test_siginfo_for_a_killed_child() -> None:
    _, info = reap(["/bin/sh", "-c", "kill -TERM $$"])
    assert info.siginfo.si_code == os.CLD_KILLED
    assert info.siginfo.si_status == signal.SIGTERM


def test_rusage_is_the_stdlib_struct_rusage_like_wait4() -> None:
    # Burn a measurable amount of CPU and memory in the child.
    code = "b = bytearray(64 << 20); sum(range(3_000_000))"
    _, info = reap([sys.executable, "-c", code])
    ru = info.rusage
    assert isinstance(ru, resource.struct_rusage)
    assert isinstance(ru.ru_utime, float) and isinstance(ru.ru_stime, float)
    assert ru.ru_utime + ru.ru_stime > 0.01
    assert ru.ru_maxrss > 64 * 1024  # KiB, as wait4 reports it
    # Not one fault a 4 KiB page: kernels with large folios (Debian's 7.2
    # measured 993 faults for this child) map memory in bigger pieces.
    # Any Python start-up still takes hundreds, and a zeroed struct none.
    assert ru.ru_minflt > 100

    # The same workload reaped by os.wait4 gives figures of the same size.
    pid = os.posix_spawn(sys.executable, [sys.executable, "-c", code], os.environ)
    _, _, ru4 = os.wait4(pid, 0)
    assert 0.5 < ru.ru_maxrss / ru4.ru_maxrss < 2


@pytest.mark.parametrize("code", [0, 1, 2, 42, 127, 255])
def test_exit_codes(code: int) -> None:
    _, info = reap([sys.executable, "-c", f"raise SystemExit({code})"])
    status = info.status
    assert status.code == code
    assert status.signal is None
    assert status.success is (code == 0)
    assert not status.core_dumped
    assert status.returncode == code
    ws = status.waitstatus
    assert os.WIFEXITED(ws) and os.WEXITSTATUS(ws) == code
    assert os.waitstatus_to_exitcode(ws) == code


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGUSR2])
def test_killed_by_signal(sig: signal.Signals) -> None:
    _, info = reap(["/bin/sh", "-c", f"kill -{int(sig)} $$"])
    status = info.status
    assert (status.code, status.signal) == (None, sig)
    assert not status.success
    assert status.returncode == -sig
    ws = status.waitstatus
    assert os.WIFSIGNALED(ws) and os.WTERMSIG(ws) == sig
    assert os.waitstatus_to_exitcode(ws) == -sig


def test_core_dump(tmp_path) -> None:
    def allow_core() -> None:
        resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY,) * 2)

    with open("/proc/sys/kernel/core_pattern") as f:
        pattern = f.read().strip()
    if pattern.startswith("|"):
        pytest.skip(f"core dumps go to a helper ({pattern!r}) that may drop them")
    _, info = reap(["/bin/sh", "-c", "kill -SEGV $$"], cwd=tmp_path, preexec_fn=allow_core)
    status = info.status
    if not status.core_dumped:
        pytest.skip("the kernel did not write a core here (filesystem or limits)")
    assert info.siginfo.si_code == os.CLD_DUMPED
    assert status.signal == signal.SIGSEGV
    assert status.waitstatus & 0x80
    assert os.WCOREDUMP(status.waitstatus)
    assert "core_dumped=True" in repr(status)


def test_equality_hash_and_repr() -> None:
    a = ExitStatus.from_waitstatus(3 << 8)
    b = ExitStatus.from_siginfo(os.CLD_EXITED, 3)
    c = ExitStatus.from_siginfo(os.CLD_KILLED, 9)
    assert a == b and hash(a) == hash(b)
    assert a != c
    assert len({a, b, c}) == 2
    assert repr(a) == "ExitStatus(code=3)"
    assert repr(c) == "ExitStatus(signal=9)"
    assert a != 3 << 8  # not equal to a bare int


def test_from_waitstatus_matches_real_children() -> None:
    for argv in (["/bin/true"], ["/bin/false"], ["/bin/sh", "-c", "kill -9 $$"]):
        pid = os.posix_spawn(argv[0], argv, os.environ)
        _, ws = os.waitpid(pid, 0)
        _, info = reap(argv)
        assert ExitStatus.from_waitstatus(ws) == info.status


@pytest.mark.parametrize("ws", [-1, 0x10000, 0x137F, 0xFFFF, 2**40])
def test_from_waitstatus_rejects_non_exits(ws: int) -> None:
    # 0x137f is "stopped by SIGSTOP", 0xffff is "continued".
    with pytest.raises((ValueError, OverflowError)):
        ExitStatus.from_waitstatus(ws)


@pytest.mark.parametrize(
    ("si_code", "si_status"),
    [
        (os.CLD_STOPPED, 19),
        (os.CLD_CONTINUED, 18),
        (os.CLD_EXITED, 256),
        (os.CLD_KILLED, 0),
        (0, 0),
    ],
)
def test_from_siginfo_rejects_non_exits(si_code: int, si_status: int) -> None:
    with pytest.raises(ValueError):
        ExitStatus.from_siginfo(si_code, si_status)


def test_exit_info_repr() -> None:
    child, info = reap(["/bin/false"])
    assert repr(info) == f"ExitInfo(pid={child.pid}, status=ExitStatus(code=1))"


# -- the decoder against the stdlib's os.W* macros (property tests) --------------------


@pytest.mark.parametrize("ws", [-1, 0x10000, 0x7F, 0x137F, 0xFFFF, 2**31, 2**64, 1.0, "0", None])
def test_from_waitstatus_refuses_non_exits(ws: object) -> None:
    with pytest.raises((ValueError, OverflowError, TypeError)):
        ExitStatus.from_waitstatus(ws)


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
