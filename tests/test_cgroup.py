"""`pidfd.Cgroup`: a tree that setsid()s and double-forks is killed, nothing is
left, the directory goes; the fallback kill; waiting for empty, sync and async.
"""

from __future__ import annotations

import ast
import contextlib
import errno
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import pidfd
from _seccomp import NR_CLONE3, SKIP_REASON, Rule, run_snippet
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


@pytest.mark.parametrize("joins", ["itself", "cgroup="])
def test_close_kills_a_setsid_double_forked_daemon_and_removes_the_cgroup(
    cg: Cgroup, joins: str
) -> None:
    if joins == "itself":
        shell = _daemon_tree(cg)
    else:
        # Born inside (cgroup=): the setsid'd, double-forked sleep is in the
        # cgroup from its first instruction.
        script = "setsid sh -c 'sleep 300 &'; sleep 300"
        shell = pidfd.Popen(["sh", "-c", script], cgroup=cg)
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
    with pytest.raises(
        ValueError, match=r"not a cgroup v2 directory.*cgroup v2 is mounted at"
    ) as e:
        Cgroup(parent=tmp_path)
    # Also an OSError naming the path, as every other bad cgroup path.
    assert isinstance(e.value, OSError)
    assert e.value.filename == str(tmp_path)
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


# -- cgroup= on the spawns: born inside, nothing forks outside first --------


def _own_cgroup_of(pid_output: bytes) -> str:
    """The ``0::`` path of a child's /proc/self/cgroup, as it printed it."""
    for line in pid_output.decode().splitlines():
        if line.startswith("0::"):
            return line[3:]
    raise AssertionError(f"no cgroup v2 line in {pid_output!r}")


@pytest.mark.parametrize("form", ["Cgroup", "path", "fd"])
@pytest.mark.parametrize("path", ["clone3", "subprocess"])
def test_popen_starts_the_child_inside_the_cgroup(cg: Cgroup, form: str, path: str) -> None:
    fd = os.open(cg.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        target = {"Cgroup": cg, "path": cg.path, "fd": fd}[form]
        # A preexec_fn takes the stock spawn, which moves the child first.
        extra = {"preexec_fn": lambda: None} if path == "subprocess" else {}
        out = subprocess.PIPE
        with pidfd.Popen(["cat", "/proc/self/cgroup"], stdout=out, cgroup=target, **extra) as p:
            assert p.stdout is not None
            printed = p.stdout.read()
        assert p.spawn_path == path
        assert _own_cgroup_of(printed).endswith("/" + os.path.basename(cg.path))
        # Only the cgroup's own fd is the caller's to close.
        assert os.fstat(fd)
    finally:
        os.close(fd)


@pytest.mark.anyio
async def test_open_process_and_run_process_take_cgroup(cg: Cgroup) -> None:
    done = await pidfd.run_process(["cat", "/proc/self/cgroup"], cgroup=cg)
    assert _own_cgroup_of(done.stdout).endswith("/" + os.path.basename(cg.path))
    async with await pidfd.open_process(["sleep", "30"], cgroup=cg.path) as process:
        assert cg.pids() == [process.pid]
        process.kill()
        await process.wait()


def _bad_cgroup(tmp_path: Path, cg: Cgroup, kind: str) -> object:
    if kind == "missing":
        return tmp_path / "nowhere"
    if kind == "file":
        (tmp_path / "file").write_text("")
        return tmp_path / "file"
    if kind == "not-cgroup2":
        return tmp_path
    if kind == "closed":
        closed = Cgroup()
        closed.close()
        return closed
    if kind == "bad-fd":
        r, w = os.pipe()
        os.close(r)
        os.close(w)
        return r
    if kind == "file-fd":
        return os.open(os.devnull, os.O_RDONLY)
    return True


@pytest.mark.parametrize(
    ("kind", "error", "message"),
    [
        ("missing", FileNotFoundError, "does not exist; create it first"),
        ("file", NotADirectoryError, "must be a cgroup v2 directory"),
        ("not-cgroup2", ValueError, r"not a cgroup v2 directory.*cgroup v2 is mounted at"),
        ("closed", ValueError, "closed Cgroup"),
        ("bad-fd", OSError, "is not an open file descriptor"),
        ("file-fd", NotADirectoryError, "is not a directory fd of a cgroup v2"),
        ("bool", TypeError, "cgroup= must be a cgroup v2 directory.*not bool"),
    ],
)
def test_a_bad_cgroup_is_refused_before_anything_starts(
    cg: Cgroup, tmp_path: Path, kind: str, error: type[Exception], message: str
) -> None:
    target = _bad_cgroup(tmp_path, cg, kind)
    marker = tmp_path / "started"
    try:
        with pytest.raises(error, match=message):
            pidfd.Popen(["touch", str(marker)], cgroup=target)
    finally:
        if kind == "file-fd":
            os.close(target)  # type: ignore[arg-type]
    time.sleep(0.1)
    assert not marker.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another user")
def test_a_cgroup_this_user_may_not_write_is_refused(cg: Cgroup, tmp_path: Path) -> None:
    marker = tmp_path / "started"
    code = (
        "import os, sys, pidfd\n"
        "os.setgid(65534); os.setuid(65534)\n"
        "try:\n"
        "    pidfd.Popen(['touch', sys.argv[2]], cgroup=sys.argv[1])\n"
        "except PermissionError as e:\n"
        "    print(e)\n"
    )
    os.chmod(tmp_path, 0o777)
    out = subprocess.run(
        [sys.executable, "-c", code, cg.path, str(marker)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert f"cannot start a process in {cg.path}" in out.stdout, out
    assert "delegate it" in out.stdout
    time.sleep(0.1)
    assert not marker.exists()


def test_a_cgroup_the_kernel_refuses_says_why(
    cg: Cgroup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # EBUSY (a cgroup with controllers enabled for its children) needs a
    # controller delegated below the root, which the test machine may not
    # have: the clone's answer is imitated, the message and cleanup are ours.
    def busy(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EBUSY, os.strerror(errno.EBUSY))

    monkeypatch.setattr(pidfd._spawn, "_spawn", busy)
    before = set(os.listdir(f"/proc/{os.getpid()}/fd"))
    with pytest.raises(OSError, match=r"cannot start the child in cgroup .*only a leaf") as info:
        pidfd.Popen(["true"], cgroup=cg.path, stdout=subprocess.PIPE)
    assert info.value.errno == errno.EBUSY
    assert info.value.filename == cg.path
    assert set(os.listdir(f"/proc/{os.getpid()}/fd")) == before


CGROUP_WITHOUT_CLONE_INTO_CGROUP = """
import os, sys, pidfd
from pidfd import _native
path = sys.argv[1]
def run():
    with pidfd.Popen(["cat", "/proc/self/cgroup"], cgroup=path, stdout=pidfd.PIPE) as p:
        printed = p.stdout.read()
    first = (p.spawn_path, printed.decode().endswith(os.path.basename(path) + "\\n"),
             _native._spawn_refused())
    with pidfd.Popen(["true"]) as q:
        q.wait()
    return {"first": first, "then": (q.spawn_path, _native._spawn_refused())}
report(run)
"""


@pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or "")
def test_a_kernel_that_cannot_clone_into_a_cgroup_moves_the_child(cg: Cgroup) -> None:
    # EINVAL from clone3 is what a kernel before 5.7 says to CLONE_INTO_CGROUP.
    # With a cgroup asked for it falls back for that spawn only (the stock
    # child moves itself in); a plain spawn's EINVAL is then for good.
    out = run_snippet(
        CGROUP_WITHOUT_CLONE_INTO_CGROUP.replace("sys.argv[1]", repr(cg.path)),
        [Rule(NR_CLONE3, errno.EINVAL)],
    )
    assert out["ok"], out
    v = ast.literal_eval(out["value"])
    assert v["first"] == ("subprocess", True, False), v
    assert v["then"] == ("subprocess", True), v


def _cgroup_v1_dir() -> str | None:
    """A cgroup v1 hierarchy's directory, where the machine mounts one."""
    from pidfd import _procfs

    return next((point for point, _, fstype in _procfs.mounts() if fstype == "cgroup"), None)


def test_a_cgroup_v1_directory_is_refused_before_anything_starts(
    cgroup_v2: None, tmp_path: Path
) -> None:
    v1 = _cgroup_v1_dir()
    if v1 is None:
        pytest.skip("no cgroup v1 hierarchy is mounted here")
    marker = tmp_path / "started"
    with pytest.raises(OSError, match=r"not a cgroup v2 directory \(it is on cgroup mounted at"):
        pidfd.Popen(["touch", str(marker)], cgroup=v1)
    time.sleep(0.1)
    assert not marker.exists()
