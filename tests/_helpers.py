"""Helpers more than one test file needs, defined once: the running kernel,
a raised fd limit, a task that waits until its handle is closed under it, and
the pid-reuse steps of the scripts that run in a private pid namespace."""

from __future__ import annotations

import contextlib
import os
import re
import resource
import textwrap
from collections.abc import Iterator

import anyio
import pytest

from pidfd import AsyncPidFd


def kernel() -> tuple[int, int]:
    """The running kernel's ``(major, minor)``, e.g. ``(6, 18)`` for 6.18.44-fc."""
    m = re.match(r"(\d+)\.(\d+)", os.uname().release)
    assert m is not None, os.uname().release
    return int(m[1]), int(m[2])


def kernel_at_least(major: int, minor: int) -> bool:
    """Whether the running kernel is at least ``major.minor``. To skip a whole
    test below a kernel, mark it ``@pytest.mark.kernel(major, minor)``."""
    return kernel() >= (major, minor)


@contextlib.contextmanager
def nofile_at_least(n: int) -> Iterator[None]:
    """Raise the soft RLIMIT_NOFILE to ``n`` for the block (restored after);
    skip the test if the hard limit is below ``n``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= n:
        yield
        return
    if hard != resource.RLIM_INFINITY and hard < n:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is below the {n} fds this test needs")
    resource.setrlimit(resource.RLIMIT_NOFILE, (n, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def wait_until_closed(handle: AsyncPidFd, errors: list[BaseException]) -> None:
    """``await handle.wait()``; record the error a ``close()`` under it raises
    (``ValueError`` or ``anyio.ClosedResourceError``). Any other outcome
    propagates, so a test that expects the close to end the wait sees it."""
    try:
        await handle.wait()
    except (ValueError, anyio.ClosedResourceError) as e:
        errors.append(e)


# Source to put in front of a script run by
# ``_reliability_helpers.run_in_pid_namespace``: there, as pid 1 of a fresh pid
# namespace, the script may steer the next pid (ns_last_pid belongs to that
# namespace alone) without touching the host.
#
# It defines ``report`` (the dict the script prints as JSON at the end),
# ``spawn_sleeper()`` (a ``sleep 30`` child; the script's first argument
# names the program) and ``reuse_pid()``.
REUSE_PID = textwrap.dedent(
    r"""
    import json, os, signal, sys, time

    SLEEP = sys.argv[1]
    report = {}

    def spawn_sleeper():
        return os.posix_spawn(SLEEP, [SLEEP, "30"], os.environ)

    def reuse_pid(old, spawn, report):
        '''Have ``spawn()`` start a process that gets the freed pid ``old``:
        through ns_last_pid, else by forking until the number comes round
        again. Returns its pid, or None (any other process it started is
        killed and reaped); ``report["method"]`` says how it went.'''
        new = None
        try:
            with open("/proc/sys/kernel/ns_last_pid", "w") as f:
                f.write(str(old - 1))
            new = spawn()
            report["method"] = "ns_last_pid"
        except OSError:
            pass
        if new != old:
            if new is not None:
                os.kill(new, signal.SIGKILL)
                os.waitpid(new, 0)
                new = None
            report["method"] = "cycling"
            deadline = time.monotonic() + 20
            forks = 0
            while forks < 40000 and time.monotonic() < deadline:
                child = os.fork()
                if child == 0:
                    os._exit(0)
                os.waitpid(child, 0)
                forks += 1
                if child == old - 1:
                    new = spawn()
                    break
            report["forks"] = forks
        if new is not None and new != old:
            os.kill(new, signal.SIGKILL)
            os.waitpid(new, 0)
            new = None
        return new
    """
)
