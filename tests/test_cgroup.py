"""`pidfd.Cgroup`: a tree that setsid()s and double-forks is killed, nothing is
left, the directory goes; the fallback kill; waiting for empty, sync and async.
"""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import pidfd
from pidfd import Cgroup, PidFd

if TYPE_CHECKING:
    from collections.abc import Iterator

# Cgroups are this process's and the machine's state, not a thread's.
pytestmark = pytest.mark.thread_unsafe(reason="creates cgroups and moves processes")


def _skip_reason() -> str | None:
    try:
        Cgroup().close()
    except (ValueError, OSError) as e:
        return f"cannot make a cgroup v2 here: {e}"
    return None


@pytest.fixture(scope="module")
def cgroup_v2() -> None:
    """Skip, with the reason, where no writable cgroup v2 is to be had."""
    reason = _skip_reason()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture
def cg(cgroup_v2: None) -> Iterator[Cgroup]:
    group = Cgroup()
    try:
        yield group
    finally:
        # A failing test must not leave its processes or its directory.
        with contextlib.suppress(OSError):
            group.close()


# The shell puts itself in the cgroup before it forks, then starts a daemon
# that leaves its session (setsid) and whose parent exits at once (the
# inner sh), so the sleep is re-parented away from anything we know of.
def _daemon_tree(cg: Cgroup) -> subprocess.Popen[bytes]:
    script = f"echo $$ > {cg.path}/cgroup.procs; setsid sh -c 'sleep 300 &'; sleep 300"
    return subprocess.Popen(["sh", "-c", script])


def _tree_handles(cg: Cgroup, count: int) -> list[PidFd]:
    """Pidfds of the ``count`` processes in ``cg`` once they are all there."""
    while True:
        pids = cg.pids()
        # Both sleeps, the shell, and no inner sh (it has exited).
        names = [_comm(pid) for pid in pids]
        if len(pids) == count and names.count("sleep") == count - 1:
            return [PidFd.from_pid(pid) for pid in pids]
        time.sleep(0.01)


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _all_gone(handles: list[PidFd]) -> bool:
    try:
        return not any(h.is_alive() for h in handles)
    finally:
        for h in handles:
            h.close()


def test_close_kills_a_setsid_double_forked_daemon_and_removes_the_cgroup(cg: Cgroup) -> None:
    shell = _daemon_tree(cg)
    handles = _tree_handles(cg, 3)
    path = cg.path
    cg.close()
    assert shell.wait() == -9
    assert _all_gone(handles)
    assert not os.path.exists(path)
    assert cg.closed
    cg.close()  # idempotent


def test_kill_reaches_every_process_and_wait_empty_sees_it(cg: Cgroup) -> None:
    shell = _daemon_tree(cg)
    handles = _tree_handles(cg, 3)
    assert cg.populated
    assert cg.kill() == 3
    cg.wait_empty(timeout=30)
    assert not cg.populated
    assert cg.pids() == []
    assert shell.wait() == -9
    assert _all_gone(handles)
    assert cg.kill() == 0


def test_the_fallback_kill_freezes_signals_and_thaws(cg: Cgroup) -> None:
    cg._use_kill_file = False
    shell = _daemon_tree(cg)
    handles = _tree_handles(cg, 3)
    assert cg.kill() == 3
    cg.wait_empty(timeout=30)
    assert shell.wait() == -9
    assert _all_gone(handles)
    # Thawed again: a process added afterwards runs.
    assert cg._read("cgroup.freeze") in (None, "0\n")


def test_add_takes_a_handle_and_what_it_forks_afterwards(cg: Cgroup) -> None:
    # The child waits on stdin so that it forks only once it is in the cgroup.
    child = pidfd.Popen(
        ["sh", "-c", "read x; setsid sh -c 'sleep 300 &'; sleep 300"], stdin=pidfd.PIPE
    )
    assert child.stdin is not None
    with PidFd.from_pid(child.pid) as handle:
        cg.add(handle)
    child.stdin.write(b"go\n")
    child.stdin.close()
    handles = _tree_handles(cg, 3)
    cg.close()
    assert child.wait() == -9
    assert _all_gone(handles)


def test_add_refuses_a_process_that_has_exited(cg: Cgroup) -> None:
    child = pidfd.Popen(["true"])
    with PidFd.from_pid(child.pid) as handle:
        child.wait()
        with pytest.raises(ProcessLookupError, match="has exited"):
            cg.add(handle)
    with pytest.raises(ValueError, match="pid > 0"):
        cg.add(0)


def test_wait_empty_times_out_while_populated(cg: Cgroup) -> None:
    child = pidfd.Popen(["sleep", "300"])
    cg.add(child)
    with pytest.raises(TimeoutError, match="still had processes"):
        cg.wait_empty(timeout=0)
    cg.close()
    assert child.wait() == -9


@pytest.mark.anyio
async def test_wait_empty_async_wakes_when_the_last_process_leaves(cg: Cgroup) -> None:
    child = pidfd.Popen(["cat"], stdin=pidfd.PIPE)
    assert child.stdin is not None
    cg.add(child)
    with pytest.raises(TimeoutError):
        await cg.wait_empty_async(timeout=0)
    child.stdin.close()  # EOF: the child exits by itself
    await cg.wait_empty_async(timeout=30)
    assert not cg.populated
    assert child.wait() == 0


@pytest.mark.anyio
async def test_async_with_kills_the_daemon_and_removes_the_cgroup(cgroup_v2: None) -> None:
    async with Cgroup() as cg:
        shell = _daemon_tree(cg)
        handles = _tree_handles(cg, 3)
        path = cg.path
    assert shell.wait() == -9
    assert _all_gone(handles)
    assert not os.path.exists(path)


def test_totals_and_the_directory_fd(cg: Cgroup) -> None:
    child = pidfd.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read(); sum(range(10**6))"], stdin=pidfd.PIPE
    )
    cg.add(child)
    assert child.stdin is not None
    child.stdin.close()
    child.wait()
    usage = cg.cpu_usage_usec
    assert isinstance(usage, int)
    # Controllers decide: either a number or None, never an error.
    assert cg.memory_peak is None or cg.memory_peak > 0
    assert cg.pids_peak is None or cg.pids_peak >= 1
    fd = cg.fileno()
    assert stat.S_ISDIR(os.fstat(fd).st_mode)
    assert not os.get_inheritable(fd)
    assert os.fspath(cg) == cg.path
    assert os.path.samestat(os.fstat(fd), os.stat(cg.path))
    cg.close()
    with pytest.raises(ValueError, match="closed Cgroup"):
        cg.fileno()


def test_a_parent_that_does_not_exist(cgroup_v2: None, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Cgroup(parent=tmp_path / "nowhere")


def test_a_parent_that_is_not_cgroup_v2(cgroup_v2: None, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"is not a cgroup v2 directory.*cgroup v2 is mounted at"):
        Cgroup(parent=tmp_path)
    file = tmp_path / "file"
    file.write_text("")
    with pytest.raises(NotADirectoryError):
        Cgroup(parent=file)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another user")
def test_a_parent_this_user_may_not_write(cg: Cgroup) -> None:
    code = (
        "import os, sys, pidfd\n"
        "os.setgid(65534); os.setuid(65534)\n"
        "try:\n"
        "    pidfd.Cgroup(parent=sys.argv[1])\n"
        "except PermissionError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, cg.path], capture_output=True, text=True, check=True
    )
    assert f"cannot create a cgroup under {cg.path}" in out.stdout
    assert "delegate it" in out.stdout
