"""fork/exec hygiene: pidfds never leak into exec'd programs, and a forked
child that uses its parent's handle gets a clear error, not a hang."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import textwrap

import pytest

import _helpers as rh
from _helpers import Children
from pidfd import AsyncPidFd, PidFd

# Lists every fd the exec'd program holds, with what it points to.
LIST_FDS = textwrap.dedent(
    """
    import json, os
    fds = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            fds[name] = os.readlink("/proc/self/fd/" + name)
        except OSError:
            pass
    print(json.dumps(fds))
    """
)


def _fds_after_exec() -> dict[int, str]:
    # close_fds=False: only FD_CLOEXEC stands between our fds and the child.
    out = subprocess.run(
        [sys.executable, "-c", LIST_FDS],
        close_fds=False,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    return {int(k): v for k, v in json.loads(out).items()}


def test_pidfd_is_close_on_exec(children: Children) -> None:
    pid = children.sleep(30)
    with PidFd.from_pid(pid) as h, AsyncPidFd.from_pid(pid) as a:
        for fd in (h.fileno(), a.fileno()):
            assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
        # A control fd without the flag does reach the child, so the check
        # below can tell a leak from an empty listing.
        r, w = os.pipe()
        os.set_inheritable(r, True)
        try:
            inherited = _fds_after_exec()
        finally:
            os.close(r)
            os.close(w)
        assert r in inherited
        assert h.fileno() not in inherited
        assert a.fileno() not in inherited
        assert not [t for t in inherited.values() if rh.is_pidfd_link(t)], inherited


def test_getfd_result_is_close_on_exec(children: Children) -> None:
    pid = children.sleep(30)
    with PidFd.from_pid(pid) as h:
        try:
            fd = h.getfd(0)
        except PermissionError as e:
            pytest.skip(f"pidfd_getfd not permitted here: {e}")
        try:
            assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
            assert fd not in _fds_after_exec()
        finally:
            os.close(fd)


# Runs in a fresh interpreter (forking pytest itself would copy its threads
# and state): fork, then use the parent's handle from the forked child.
FORKED_CHILD_SCRIPT = textwrap.dedent(
    r"""
    import json, os, signal, sys, time
    from pidfd import PidFd

    SLEEP = sys.argv[1]
    target = os.posix_spawn(SLEEP, [SLEEP, "30"], os.environ)
    handle = PidFd.from_pid(target)
    r, w = os.pipe()
    forked = os.fork()
    if forked == 0:
        os.close(r)
        report = {}
        for call in ("wait", "try_wait"):
            start = time.monotonic()
            try:
                getattr(handle, call)(*([5] if call == "wait" else []))
                report[call] = ["returned", None]
            except Exception as e:
                report[call] = [type(e).__name__, str(e)]
            report[call].append(time.monotonic() - start)
        try:
            handle.wait_exit(timeout=0.2)
            report["wait_exit"] = "returned"
        except TimeoutError:
            report["wait_exit"] = "TimeoutError"
        os.write(w, json.dumps(report).encode())
        os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.waitpid(forked, 0)
    # The parent still owns the child and its handle still works.
    handle.kill()
    status = handle.wait(timeout=5).status
    report = json.loads(data)
    report["parent_status"] = status.signal
    print(json.dumps(report))
    """
)


def test_forked_child_using_parents_handle_gets_clear_error() -> None:
    report = rh.run_script(
        FORKED_CHILD_SCRIPT, rh.SLEEP, what="forked child using its parent's handle"
    )
    for call in ("wait", "try_wait"):
        kind, message, seconds = report[call]
        assert kind == "ChildProcessError", report
        assert "not a child" in message, message
        assert seconds < 1.0, report
    # Waiting without reaping is fine for a non-child: it just times out.
    assert report["wait_exit"] == "TimeoutError"
    assert report["parent_status"] == 9
