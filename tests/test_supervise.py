"""Supervising groups and trees: kill before reap, and the subreaper.

A leader started with ``start_new_session=True`` (or ``process_group=0``)
starts a member of its own group and tells the test the member's pid
through a pipe; the member is a grandchild of the test, reachable only
through the group. Each test fails if the member survives the way out.
"""

from __future__ import annotations

import os
import select
import subprocess
import threading
from collections.abc import Iterator
from functools import partial

import anyio
import pytest

import pidfd
from pidfd import PidFd


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
