"""Shared helpers for the reliability suite (``tests/test_reliability_*.py``).

Children are started with ``os.posix_spawn`` rather than ``subprocess.Popen``:
a ``Popen`` whose child we reap behind its back warns "still running" when it
is collected, and warnings are errors in this project. Every child is also
opened with the stdlib's own ``os.pidfd_open`` at spawn time, so cleanup can
kill and reap it without trusting the code under test and without ever
signalling a recycled pid.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence

import pytest

SLEEP = shutil.which("sleep") or "/bin/sleep"
TRUE = shutil.which("true") or "/bin/true"


def spawn_path(name: str) -> str:
    """The absolute path of program ``name``, for ``os.posix_spawn``."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"needs {name!r} on PATH")
    return path


class Children:
    """Spawns children and guarantees they are killed and reaped afterwards."""

    def __init__(self) -> None:
        # pid -> the stdlib pidfd we opened while the child was certainly ours.
        self._fds: dict[int, int] = {}

    def spawn(self, argv: Sequence[str], **kwargs: object) -> int:
        """``posix_spawn`` ``argv`` (looked up on PATH if not absolute)."""
        path = argv[0] if os.path.isabs(argv[0]) else shutil.which(argv[0])
        assert path is not None, argv[0]
        pid = os.posix_spawn(path, list(argv), os.environ, **kwargs)  # type: ignore[arg-type]
        self._fds[pid] = os.pidfd_open(pid)
        return pid

    def sleep(self, seconds: float = 30.0) -> int:
        """A child that sleeps ``seconds`` and exits 0."""
        return self.spawn([SLEEP, repr(seconds)])

    def python(self, code: str) -> int:
        """A ``sys.executable -c code`` child."""
        return self.spawn([sys.executable, "-c", code])

    def exited(self, code: int = 0) -> int:
        """A child that has already exited with ``code`` and is a zombie now."""
        pid = self.spawn(["sh", "-c", f"exit {code}"]) if code else self.spawn([TRUE])
        wait_zombie(pid)
        return pid

    def cleanup(self) -> None:
        for fd in self._fds.values():
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(fd, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                # Blocks until it is dead; ECHILD if the test reaped it.
                os.waitid(os.P_PIDFD, fd, os.WEXITED)
            os.close(fd)
        self._fds.clear()


@pytest.fixture(name="children")
def children_fixture() -> Iterator[Children]:
    """Use as ``children = children_fixture`` in a test module."""
    c = Children()
    try:
        yield c
    finally:
        c.cleanup()


def wait_zombie(pid: int, timeout: float = 10.0) -> None:
    """Block until child ``pid`` has exited, without reaping it."""
    deadline = time.monotonic() + timeout
    while os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
        assert time.monotonic() < deadline, f"child {pid} did not exit in {timeout}s"
        time.sleep(0.005)


def is_unreaped(pid: int) -> bool:
    """True while ``pid`` is still our child that nobody has reaped (running or zombie)."""
    try:
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    return True


def is_running(pid: int) -> bool:
    """True while child ``pid`` has not exited (checked without reaping)."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None


def open_fds() -> set[int]:
    """The fd numbers open in this process right now."""
    return {int(n) for n in os.listdir("/proc/self/fd")}


def fd_target(fd: int) -> str | None:
    """What ``/proc/self/fd/FD`` links to, or ``None`` if the number is free."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except FileNotFoundError:
        return None


def is_pidfd_link(target: str | None) -> bool:
    return target is not None and (target == "anon_inode:[pidfd]" or target.startswith("pidfd:"))


def rss_bytes() -> int:
    """Resident set size of this process."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def readable_now(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


def run_script(script: str, *args: str, what: str) -> dict:
    """Run ``python -c script *args`` and return the JSON object it prints.

    Fails the test (instead of stalling it) if the script hangs, saying
    ``what`` hung; fails with the script's stderr if it exits non-zero.
    """
    try:
        proc = subprocess.run(
            [sys.executable, "-c", script, *args],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{what} hung: {e.stderr!r}")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def run_in_pid_namespace(script: str, *args: str) -> dict:
    """Run ``python -c script *args`` as pid 1 of a private pid namespace.

    There, pids are few and handed out in order, so a script can make the
    kernel reuse a pid it just freed. Returns the JSON object the script
    prints. Skips where no namespace can be made: as root a pid namespace is
    enough; otherwise a user namespace makes us root inside it, where the
    distribution allows unprivileged ones.
    """
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("needs unshare(1) from util-linux to make a private pid namespace")
    refusals = []
    for userns in ([], ["--user", "--map-root-user"]):
        cmd = [unshare, *userns, "--pid", "--fork", "--mount-proc"]
        try:
            proc = subprocess.run(
                [*cmd, sys.executable, "-c", script, *args],
                capture_output=True,
                text=True,
                timeout=45,
            )
        except subprocess.TimeoutExpired as e:
            pytest.fail(f"pid reuse script hung: {e.stderr!r}")
        if proc.returncode != 0 and "unshare failed" in proc.stderr:
            refusals.append(proc.stderr.strip())
            continue
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)
    pytest.skip(f"cannot create a pid namespace here: {refusals}")
