"""``send_signal(sig, group=True)``: the group a process leads, race-free.

Each test starts a leader in a new process group (``process_group=0``)
that starts a member of its own group, so the member is a grandchild of
the test, reachable only through the group.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from typing import Any

import pytest

import pidfd
from _seccomp import NR_PIDFD_SEND_SIGNAL, SKIP_REASON, Rule, run_snippet
from pidfd import AsyncPidFd, PidFd

# The leader prints its member's pid, then waits for stdin to close.
LEADER = (
    "import subprocess, sys; "
    "m = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
    "print(m.pid, flush=True); sys.stdin.read()"
)


def _alive(pid: int) -> bool:
    # The member is not our child: /proc shows whether it is still running.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def _start_py_leader() -> tuple[subprocess.Popen[bytes], int]:
    """A LEADER in a group of its own, and the pid of the member it started."""
    leader = subprocess.Popen(
        [sys.executable, "-c", LEADER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        process_group=0,
    )
    assert leader.stdout is not None
    return leader, int(leader.stdout.readline())


def _close(proc: subprocess.Popen[bytes]) -> None:
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            stream.close()


def _wait_gone(handle: PidFd) -> None:
    handle.wait_exit(timeout=20)


def _group_or_skip(handle: PidFd | AsyncPidFd, sig: int) -> None:
    try:
        handle.send_signal(sig, group=True)
    except OSError as exc:
        if exc.errno == errno.ENOSYS:
            pytest.skip(str(exc))
        raise


def test_group_signal_reaches_a_grandchild_in_the_leaders_group() -> None:
    leader, member_pid = _start_py_leader()
    with PidFd.from_pid(leader.pid) as handle, PidFd.from_pid(member_pid) as member:
        try:
            _group_or_skip(handle, signal.SIGKILL)
            _wait_gone(member)  # fails with TimeoutError if the member was missed
            assert handle.wait(timeout=20).status.signal == signal.SIGKILL
        finally:
            if member.is_alive():
                member.kill()
            if leader.poll() is None:
                leader.kill()
            leader.wait()
            _close(leader)


def test_group_signal_while_the_leader_is_a_zombie_reaches_a_live_member() -> None:
    # The leader exits at once, leaving its member running in its group;
    # unreaped, it pins the group id. The pidfd still names the group.
    leader, member_pid = _start_py_leader()
    assert leader.stdin is not None
    with PidFd.from_pid(leader.pid) as handle, PidFd.from_pid(member_pid) as member:
        try:
            leader.stdin.close()
            assert handle.wait_exit(timeout=20) is not None  # a zombie now
            assert _alive(member_pid)
            _group_or_skip(handle, signal.SIGTERM)
            _wait_gone(member)
            assert not _alive(member_pid)
            assert handle.wait(timeout=20).status.code == 0  # reaped only now
        finally:
            if member.is_alive():
                member.kill()
            leader.returncode = 0
            _close(leader)


def test_group_signal_on_a_process_that_leads_no_group() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    with PidFd.from_pid(child.pid) as handle:
        try:
            # pytest.skip() (ENOSYS) is no ProcessLookupError: it goes through.
            with pytest.raises(ProcessLookupError, match="leads no group") as raised:
                _group_or_skip(handle, signal.SIGTERM)
            # One readable sentence: no run of source indentation inside it.
            assert "  " not in str(raised.value), raised.value
            assert handle.is_alive()  # nothing was sent to it
        finally:
            child.kill()
            child.wait()


@pytest.mark.anyio
async def test_async_group_signal() -> None:
    leader, member_pid = _start_py_leader()
    member = PidFd.from_pid(member_pid)
    try:
        async with AsyncPidFd.from_pid(leader.pid) as handle:
            _group_or_skip(handle, signal.SIGKILL)
            assert (await handle.wait()).status.signal == signal.SIGKILL
        _wait_gone(member)
    finally:
        if member.is_alive():
            member.kill()
        member.close()
        leader.returncode = -9
        _close(leader)


@pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or "")
def test_group_signal_before_linux_6_9_names_the_version() -> None:
    # A 6.8 kernel refuses any pidfd_send_signal flag with EINVAL; the
    # filter does that for PIDFD_SIGNAL_PROCESS_GROUP (bit 2 of argument 3).
    code = """
        import os, signal, subprocess, sys
        from pidfd import PidFd
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                                 process_group=0)
        h = PidFd.from_pid(child.pid)
        report(lambda: h.send_signal(signal.SIGTERM, group=True))
        assert h.is_alive()
        h.kill(); h.wait()
        """
    out = run_snippet(
        code, [Rule(NR_PIDFD_SEND_SIGNAL, errno.EINVAL, arg=3, value=4, any_bits=True)]
    )
    assert out["ok"] is False
    assert out["errno"] == errno.ENOSYS, out
    assert "Linux >= 6.9" in out["message"] and "group=True" in out["message"]


def test_group_flag_is_keyword_only() -> None:
    with PidFd.from_pid(os.getpid()) as handle, pytest.raises(TypeError):
        handle.send_signal(0, True)  # type: ignore[misc]


# -- pidfd.Popen and pidfd.Process ----------------------------------------------

# The leader prints its member's pid and waits for stdin to close (or, with
# EXIT_AT_ONCE, exits at once and leaves the member running in its group).
SH_LEADER = "sleep 60 & echo $!; read x"
SH_EXIT_AT_ONCE = "sleep 60 & echo $!"


def _start_leader(script: str, **kwargs: Any) -> tuple[pidfd.Popen[bytes], PidFd]:
    proc = pidfd.Popen(
        ["sh", "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, **kwargs
    )
    assert proc.stdout is not None
    member = PidFd.from_pid(int(proc.stdout.readline()))
    return proc, member


def _finish(proc: pidfd.Popen[bytes], member: PidFd) -> None:
    if member.is_alive():
        member.kill()
    member.close()
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    _close(proc)


def test_popen_group_signal_reaches_a_grandchild() -> None:
    proc, member = _start_leader(SH_LEADER, process_group=0)
    try:
        proc.send_signal(signal.SIGKILL, group=True)
        _wait_gone(member)  # TimeoutError if the member was missed
        assert proc.wait(timeout=20) == -signal.SIGKILL
    finally:
        _finish(proc, member)


def test_popen_group_signal_while_the_leader_is_a_zombie() -> None:
    # Popen must not reap the exited leader before signalling (a plain
    # send_signal polls first): its unreaped pid is what pins the group id.
    proc, member = _start_leader(SH_EXIT_AT_ONCE, start_new_session=True)
    try:
        assert proc.pidfd is not None
        assert proc.pidfd.wait_exit(timeout=20) is not None  # a zombie now
        assert _alive(member.pid)
        proc.send_signal(signal.SIGTERM, group=True)
        _wait_gone(member)
        assert proc.wait(timeout=20) == 0
    finally:
        _finish(proc, member)


def test_popen_group_signal_after_the_reap_is_refused() -> None:
    proc, member = _start_leader(SH_EXIT_AT_ONCE, process_group=0)
    try:
        assert proc.wait(timeout=20) == 0
        with pytest.raises(ProcessLookupError, match="has been reaped"):
            proc.send_signal(signal.SIGTERM, group=True)
        assert _alive(member.pid)  # nothing was sent to anyone
    finally:
        _finish(proc, member)


def test_popen_group_signal_on_a_child_that_leads_no_group() -> None:
    proc = pidfd.Popen(["sleep", "60"])
    try:
        # The same answer with the kernel's group signal (6.9) and with the
        # killpg fallback before it (measured on Debian's 5.10 and 6.1; the
        # seccomp test above imitates it on a newer kernel).
        with pytest.raises(ProcessLookupError, match=r"leads no (process )?group"):
            proc.send_signal(signal.SIGTERM, group=True)
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()


def test_popen_plain_signal_still_silent_after_exit() -> None:
    proc = pidfd.Popen(["true"])
    proc.wait()
    proc.send_signal(signal.SIGTERM)  # subprocess's rule: nothing, no error
    with pytest.raises(TypeError):
        proc.send_signal(signal.SIGTERM, True)  # type: ignore[misc]


@pytest.mark.anyio
async def test_process_group_signal_reaches_a_grandchild() -> None:
    async with await pidfd.open_process(["sh", "-c", SH_LEADER], process_group=0) as proc:
        assert proc.stdout is not None
        line = b""
        while not line.endswith(b"\n"):
            line += await proc.stdout.receive()
        with PidFd.from_pid(int(line)) as member:
            try:
                proc.send_signal(signal.SIGKILL, group=True)
                assert await proc.wait() == -signal.SIGKILL
                _wait_gone(member)
            finally:
                if member.is_alive():
                    member.kill()


@pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or "")
def test_popen_group_signal_before_linux_6_9_falls_back_to_killpg() -> None:
    code = """
        import json, os, signal, subprocess
        import pidfd
        from pidfd import PidFd
        out = {}

        def start(script, **kw):
            p = pidfd.Popen(["sh", "-c", script], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, **kw)
            return p, PidFd.from_pid(int(p.stdout.readline()))

        # A leader, unreaped: killpg stands in and reaches the member.
        p, m = start("sleep 60 & echo $!; read x", process_group=0)
        p.send_signal(signal.SIGKILL, group=True)
        m.wait_exit(timeout=20)
        out["member_alive"] = m.is_alive()
        out["leader"] = p.wait()
        # Reaped by us: the group id is no longer pinned.
        try:
            p.send_signal(signal.SIGTERM, group=True)
        except ProcessLookupError as e:
            out["after_reap"] = str(e)
        # A zombie leader reaped behind Popen's back: refused too.
        z, zm = start("sleep 60 & echo $!", start_new_session=True)
        z.pidfd.wait_exit(timeout=20)
        os.waitid(os.P_PID, z.pid, os.WEXITED)
        try:
            z.send_signal(signal.SIGTERM, group=True)
        except ProcessLookupError as e:
            out["behind"] = str(e)
        out["zm_alive"] = zm.is_alive()
        zm.kill()
        # Not a leader: no group to signal, as Linux >= 6.9 would say.
        q = pidfd.Popen(["sleep", "60"])
        try:
            q.send_signal(signal.SIGTERM, group=True)
        except ProcessLookupError as e:
            out["no_group"] = [e.errno, str(e)]
        out["q_running"] = q.poll() is None
        q.kill(); q.wait()
        # Another thread blocked in an untimed wait() holds Popen's lock
        # until the exit: the group signal goes ahead without it instead of
        # waiting for that exit (which would never come).
        import threading
        w, wm = start("sleep 60 & echo $!; read x", process_group=0)
        waiter = threading.Thread(target=w.wait)
        waiter.start()
        w.send_signal(signal.SIGKILL, group=True)
        wm.wait_exit(timeout=20)
        out["waited_member_alive"] = wm.is_alive()
        waiter.join(20)
        out["waited_leader"] = w.returncode
        print(json.dumps(out))
        """
    out = run_snippet(
        code, [Rule(NR_PIDFD_SEND_SIGNAL, errno.EINVAL, arg=3, value=4, any_bits=True)]
    )
    assert out["member_alive"] is False
    assert out["leader"] == -signal.SIGKILL
    assert "has been reaped" in out["after_reap"]
    assert "reaped by something else" in out["behind"]
    assert out["zm_alive"] is True  # the refused signal went nowhere
    err, message = out["no_group"]
    assert err == errno.ESRCH
    assert "leads no process group" in message
    assert out["q_running"] is True
    assert out["waited_member_alive"] is False
    assert out["waited_leader"] == -signal.SIGKILL
