"""Supervising groups and trees: kill before reap, and the subreaper.

A leader started with ``start_new_session=True`` (or ``process_group=0``)
starts a member of its own group and tells the test the member's pid
through a pipe; the member is a grandchild of the test, reachable only
through the group. Each test fails if the member survives the way out.
"""

from __future__ import annotations

import errno
import os
import select
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from functools import partial
from subprocess import DEVNULL
from typing import TYPE_CHECKING

import anyio
import pytest

import pidfd
from _seccomp import NR_PIDFD_SEND_SIGNAL, SKIP_REASON, Rule, run_snippet
from pidfd import PidFd

if TYPE_CHECKING:
    from conftest import Ticker


@pytest.fixture
def pid_pipe() -> Iterator[tuple[int, int]]:
    """A pipe on which the leader writes its member's pid (its stdout)."""
    r, w = os.pipe()
    yield r, w
    os.close(r)
    os.close(w)


def _read_pid(fd: int, timeout: float) -> int | None:
    ready, _, _ = select.select([fd], [], [], timeout)
    if not ready:
        return None
    return int(os.read(fd, 64).split()[0])


def _gone(member: PidFd) -> bool:
    """Whether the member is dead within a generous bound (never a live one)."""
    try:
        member.wait_exit(timeout=20)
    except TimeoutError:
        member.kill()  # do not leave it behind
        return False
    return not member.is_alive()


def test_run_timeout_kills_the_whole_group_before_reaping(pid_pipe: tuple[int, int]) -> None:
    r, w = pid_pipe
    script = "sleep 60 & echo $!; wait"
    # The timeout must fire after the leader has started its member: if it
    # fires first (a very loaded machine), try again with a longer one.
    for timeout in (2.0, 10.0, 30.0):
        outcome: list[BaseException] = []

        def run(timeout: float = timeout, outcome: list[BaseException] = outcome) -> None:
            try:
                pidfd.run(["sh", "-c", script], timeout=timeout, start_new_session=True, stdout=w)
            except BaseException as exc:
                outcome.append(exc)

        thread = threading.Thread(target=run)
        thread.start()
        member_pid = _read_pid(r, timeout + 5)
        member = PidFd.from_pid(member_pid) if member_pid is not None else None
        thread.join()
        assert outcome and isinstance(outcome[0], subprocess.TimeoutExpired), outcome
        if member is not None:
            break
    else:
        pytest.fail("the leader never started its member")
    with member:
        assert _gone(member), "the member of the timed-out leader's group survived"


@pytest.mark.anyio
async def test_run_process_cancelled_kills_the_whole_group(pid_pipe: tuple[int, int]) -> None:
    r, w = pid_pipe
    command = ["sh", "-c", "sleep 60 & echo $!; wait"]
    async with anyio.create_task_group() as tg:
        tg.start_soon(partial(pidfd.run_process, command, process_group=0, stdout=w))
        with anyio.fail_after(30):
            await anyio.wait_readable(r)
        member = PidFd.from_pid(int(os.read(r, 64).split()[0]))
        tg.cancel_scope.cancel()
    with member:
        assert _gone(member), "the member of the cancelled leader's group survived"


@pytest.mark.anyio
async def test_aclose_after_a_cancelled_wait_kills_the_group_of_a_zombie_leader() -> None:
    # The leader has exited but is unreaped; a cancelled wait must signal
    # its group before reaping it (reaping first frees the group id, and
    # the old code reaped first and then found nothing to kill).
    proc = await pidfd.open_process(
        ["sh", "-c", "sleep 60 & echo $!"], start_new_session=True, stdin=subprocess.DEVNULL
    )
    assert proc.stdout is not None and proc.pidfd is not None
    line = b""
    while not line.endswith(b"\n"):
        line += await proc.stdout.receive()
    with PidFd.from_pid(int(line)) as member:
        assert await proc.pidfd.wait_exit() is not None  # a zombie now
        with anyio.CancelScope() as scope:
            scope.cancel()
            await proc.aclose()
        assert proc.returncode == 0  # reaped, with its own status
        assert _gone(member), "the member of the zombie leader's group survived"


# -- pidfd.Subreaper --------------------------------------------------------------

# A classic daemon: fork, setsid, fork again, the middle one exits; the
# daemon writes its pid on stdout (the test's pipe) and sleeps. `ignore_term`
# makes it ignore SIGTERM.
DAEMON = """
import os, signal, sys, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        if {ignore_term}:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        os.write(1, b"%d\\n" % os.getpid())
        time.sleep(60)
    os._exit(0)
os.wait()
"""


def _reaped_by_someone(handle: PidFd) -> bool:
    # waitid(P_PIDFD) fails with ECHILD once the child has been reaped; a
    # zombie would still be reported (WNOWAIT: nothing is reaped here).
    try:
        os.waitid(os.P_PIDFD, handle.fileno(), os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return False


def _start_daemon(w: int, r: int, *, ignore_term: bool = False) -> int:
    code = DAEMON.format(ignore_term=ignore_term)
    done = pidfd.run([sys.executable, "-c", code], stdout=w)
    assert done.returncode == 0
    pid = _read_pid(r, 30)
    assert pid is not None
    return pid


@pytest.mark.thread_unsafe(reason="the child-subreaper flag is process-wide")
def test_subreaper_adopts_and_reaps_a_double_forked_daemon(pid_pipe: tuple[int, int]) -> None:
    r, w = pid_pipe
    with pidfd.Subreaper(grace=10) as reaper:
        daemon = _start_daemon(w, r)
        held = reaper.orphans()
        assert [h.pid for h in held] == [daemon]  # re-parented to us, not to init
        mine = PidFd.from_pid(daemon)  # safe: it is our unreaped child
    with mine:
        assert reaper.reaped == {daemon: pidfd.ExitStatus.from_waitstatus(signal.SIGTERM)}
        assert reaper.signalled == {daemon: signal.SIGTERM}
        assert not mine.is_alive()
        assert _reaped_by_someone(mine)  # no zombie left
    assert all(h.closed for h in held)


@pytest.mark.thread_unsafe(reason="the child-subreaper flag is process-wide")
def test_subreaper_kills_what_ignores_sigterm_after_the_grace(pid_pipe: tuple[int, int]) -> None:
    r, w = pid_pipe
    with pidfd.Subreaper(grace=0.5) as reaper:
        daemon = _start_daemon(w, r, ignore_term=True)
    status = reaper.reaped[daemon]
    assert status is not None and status.signal == signal.SIGKILL
    assert reaper.signalled[daemon] == signal.SIGKILL


@pytest.mark.thread_unsafe(reason="the child-subreaper flag is process-wide")
def test_subreaper_wakes_a_stopped_orphan_to_take_sigterm(pid_pipe: tuple[int, int]) -> None:
    # A stopped process holds SIGTERM pending until SIGKILL; SIGCONT after
    # the SIGTERM (as timeout(1) sends) lets it end by the SIGTERM, well
    # inside the grace.
    r, w = pid_pipe
    with pidfd.Subreaper(grace=30) as reaper:
        daemon = _start_daemon(w, r)
        os.kill(daemon, signal.SIGSTOP)  # safe: our unreaped child
        os.waitid(os.P_PID, daemon, os.WSTOPPED | os.WNOWAIT)
    status = reaper.reaped[daemon]
    assert status == pidfd.ExitStatus.from_waitstatus(signal.SIGTERM)


@pytest.mark.thread_unsafe(reason="the child-subreaper flag is process-wide")
def test_subreaper_reaps_the_orphans_of_orphans(pid_pipe: tuple[int, int]) -> None:
    # A daemonised shell with a child of its own: when SIGTERM ends the
    # shell, its child is re-parented to us in turn, and is ended too.
    r, w = pid_pipe
    with pidfd.Subreaper(grace=10) as reaper:
        pidfd.run(["sh", "-c", "setsid sh -c 'sleep 60 & echo $!; wait' &"], stdout=w)
        grandchild = _read_pid(r, 30)  # started: the shell has forked it
        (shell,) = reaper.orphans()
    assert list(reaper.reaped) == [shell.pid, grandchild], reaper
    assert all(s is not None and s.signal == signal.SIGTERM for s in reaper.reaped.values())


@pytest.mark.thread_unsafe(reason="the child-subreaper flag is process-wide")
def test_subreaper_leaves_other_children_to_their_owners() -> None:
    before = subprocess.Popen(["sleep", "60"])  # a child from before the block
    try:
        with pidfd.Subreaper(grace=10) as reaper:
            inside = pidfd.Popen(["sleep", "60"])  # owned by its pidfd.Popen
            reaper.reap()
            assert reaper.orphans() == []
        assert reaper.reaped == {}
        assert before.poll() is None and inside.poll() is None
        inside.kill()
        assert inside.wait() == -signal.SIGKILL  # its own status: not reaped behind its back
    finally:
        before.kill()
    assert before.wait() == -signal.SIGKILL


@pytest.mark.thread_unsafe(reason="the child-subreaper flag is process-wide")
def test_subreaper_reap_collects_exited_orphans_during_the_block() -> None:
    with pidfd.Subreaper(grace=10) as reaper:
        pidfd.run(["sh", "-c", "setsid sh -c 'exit 7' &"])
        (orphan,) = reaper.orphans()  # re-parented when sh exited
        pidfd.wait_any([orphan], timeout=30)
        assert reaper.reap() == {orphan.pid: pidfd.ExitStatus.from_waitstatus(7 << 8)}
        assert orphan.closed
        assert reaper.orphans() == []
    assert reaper.signalled == {}  # nothing was left to signal


@pytest.mark.thread_unsafe(reason="the child-subreaper flag is process-wide")
@pytest.mark.parametrize("before", [False, True])
def test_subreaper_restores_the_previous_setting(before: bool) -> None:
    from pidfd._native import _child_subreaper, _set_child_subreaper

    # Set here, not assumed: `--pidfd-leaks` makes pytest itself a subreaper.
    outside = _child_subreaper()
    _set_child_subreaper(before)
    try:
        with pidfd.Subreaper():
            assert _child_subreaper() is True
            with pidfd.Subreaper():
                assert _child_subreaper() is True
            assert _child_subreaper() is True  # the outer block still needs it
        assert _child_subreaper() is before
    finally:
        _set_child_subreaper(outside)


@pytest.mark.thread_unsafe(reason="the child-subreaper flag is process-wide")
@pytest.mark.parametrize("grace", [-1.0, float("nan")])
def test_subreaper_grace_is_checked(grace: float) -> None:
    with pytest.raises(ValueError, match="grace"):
        pidfd.Subreaper(grace=grace)


@pytest.mark.thread_unsafe(reason="the child-subreaper flag is process-wide")
def test_subreaper_outside_its_block() -> None:
    reaper = pidfd.Subreaper()
    with pytest.raises(ValueError, match="not active"):
        reaper.orphans()
    reaper.close()  # idempotent, harmless


@pytest.mark.thread_unsafe(reason="the child-subreaper flag is process-wide")
@pytest.mark.anyio
async def test_subreaper_async_with_awaits_the_grace(pid_pipe: tuple[int, int]) -> None:
    r, w = pid_pipe
    async with pidfd.Subreaper(grace=0.3) as reaper:
        await pidfd.run_process(
            [sys.executable, "-c", DAEMON.format(ignore_term=True)], stdout=w, stderr=DEVNULL
        )
        daemon = _read_pid(r, 30)
    status = reaper.reaped[daemon]  # type: ignore[index]
    assert status is not None and status.signal == signal.SIGKILL
    assert reaper.signalled[daemon] == signal.SIGKILL  # type: ignore[index]


@pytest.mark.thread_unsafe(reason="the child-subreaper flag is process-wide")
@pytest.mark.anyio
async def test_subreaper_aclose_does_not_block_the_loop(
    pid_pipe: tuple[int, int], ticker: Ticker
) -> None:
    r, w = pid_pipe
    async with anyio.create_task_group() as tg:
        reaper = pidfd.Subreaper(grace=0.5)
        async with reaper:
            await pidfd.run_process(
                [sys.executable, "-c", DAEMON.format(ignore_term=True)], stdout=w, stderr=DEVNULL
            )
            assert _read_pid(r, 30) is not None
            tg.start_soon(ticker.run)
            await anyio.sleep(0)
            before = ticker.count
        # The grace period (0.5 s, SIGTERM ignored) passed while the ticker ran.
        assert ticker.count > before + 1
        tg.cancel_scope.cancel()
    assert [s.signal for s in reaper.reaped.values() if s is not None] == [signal.SIGKILL]


@pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or "")
def test_run_timeout_kills_the_group_before_linux_6_9() -> None:
    # No PIDFD_SIGNAL_PROCESS_GROUP (a 6.8 kernel refuses the flag with
    # EINVAL): the leader is still unreaped when the group is killed, so
    # the killpg fallback applies, and the member must not survive.
    code = """
        import json, os, select, subprocess
        import pidfd

        def alive(pid):
            try:
                with open(f"/proc/{pid}/stat") as f:
                    return f.read().rsplit(")", 1)[1].split()[0] not in "ZX"
            except FileNotFoundError:
                return False

        r, w = os.pipe()
        for timeout in (2.0, 10.0, 30.0):
            try:
                pidfd.run(["sh", "-c", "sleep 60 & echo $!; wait"], timeout=timeout,
                          start_new_session=True, stdout=w)
            except subprocess.TimeoutExpired:
                pass
            if select.select([r], [], [], 0)[0]:
                member = int(os.read(r, 64).split()[0])
                break
        for _ in range(2000):  # init reaps it: look until it is gone
            if not alive(member):
                break
            select.select([], [], [], 0.01)
        print(json.dumps({"member_alive": alive(member)}))
        if alive(member):
            os.kill(member, 9)
        """
    out = run_snippet(
        code, [Rule(NR_PIDFD_SEND_SIGNAL, errno.EINVAL, arg=3, value=4, any_bits=True)]
    )
    assert out == {"member_alive": False}
