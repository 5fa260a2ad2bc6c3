"""The "needs Linux >= X" paths, run by making the kernel answer as an old one.

Each case runs a snippet in a child process under a seccomp filter that
makes one system call, ioctl request, flag or socket option fail with the
errno the older kernel gives (see ``_seccomp.py``). Every case also runs
without the filter, to show that the filter alone makes the difference.
"""

from __future__ import annotations

import errno
import os
from typing import NamedTuple

import pytest

from _helpers import kernel_at_least
from _seccomp import (
    NR_GETSOCKOPT,
    NR_IOCTL,
    NR_PIDFD_GETFD,
    NR_PIDFD_OPEN,
    NR_PIDFD_SEND_SIGNAL,
    NR_WAITID,
    P_PIDFD,
    PIDFD_GET_INFO,
    PIDFD_THREAD,
    SKIP_REASON,
    SO_PEERPIDFD,
    Rule,
    run_snippet,
)

pytestmark = pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or "")

RELEASE = os.uname().release

# A child to wait for, inside the snippet.
CHILD = (
    "import subprocess, sys\np = subprocess.Popen([sys.executable, '-c', 'raise SystemExit(5)'])\n"
)
# A non-child to wait for: a grandchild that its own parent reaps. It exits
# with 5 once the snippet writes a byte to m.stdin (which it inherits).
NON_CHILD = r"""
import subprocess, sys
inner = "import sys; sys.stdin.read(1); sys.exit(5)"
mid = (
    "import subprocess, sys\n"
    f"p = subprocess.Popen([sys.executable, '-c', {inner!r}])\n"
    "print(p.pid, flush=True)\n"
    "p.wait()\n"
)
m = subprocess.Popen([sys.executable, "-c", mid], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
gpid = int(m.stdout.readline())
"""
NON_CHILD_END = "m.stdin.close(); m.wait(); m.stdout.close()\n"


class Case(NamedTuple):
    code: str
    rule: Rule
    version: str
    # What the snippet returns with no filter, or None for "any success".
    baseline: object | None = None
    # The kernel the unfiltered run needs, as (major, minor).
    needs: tuple[int, int] = (5, 4)


CASES = {
    "pidfd_open-ENOSYS": Case(
        "from pidfd import PidFd\nreport(lambda: PidFd.from_pid(os.getpid()).pid)",
        Rule(NR_PIDFD_OPEN, errno.ENOSYS),
        "5.3",
    ),
    "pidfd_send_signal-ENOSYS": Case(
        "from pidfd import PidFd\nh = PidFd.from_pid(os.getpid())\n"
        "report(lambda: h.send_signal(0))",
        Rule(NR_PIDFD_SEND_SIGNAL, errno.ENOSYS),
        "5.1",
    ),
    "pidfd_getfd-ENOSYS": Case(
        "from pidfd import PidFd\nh = PidFd.from_pid(os.getpid())\n"
        "report(lambda: os.close(h.getfd(0)))",
        Rule(NR_PIDFD_GETFD, errno.ENOSYS),
        "5.6",
    ),
    "waitid-P_PIDFD-EINVAL-wait": Case(
        CHILD + "from pidfd import PidFd\nh = PidFd.from_pid(p.pid)\n"
        "report(lambda: h.wait(10).status.code)\np.wait()",
        Rule(NR_WAITID, errno.EINVAL, arg=0, value=P_PIDFD),
        "5.4",
        5,
    ),
    "waitid-P_PIDFD-EINVAL-try_wait": Case(
        CHILD + "from pidfd import PidFd\nh = PidFd.from_pid(p.pid)\n"
        "report(lambda: h.try_wait() and None)\np.wait()",
        Rule(NR_WAITID, errno.EINVAL, arg=0, value=P_PIDFD),
        "5.4",
    ),
    "PIDFD_GET_INFO-ENOTTY": Case(
        "from pidfd import PidFd\nh = PidFd.from_pid(os.getpid())\n"
        "report(lambda: h.info().ppid == os.getppid())",
        Rule(NR_IOCTL, errno.ENOTTY, arg=1, value=PIDFD_GET_INFO),
        "6.13",
        True,
        (6, 13),
    ),
    # 6.12 has pidfd ioctls, but not this one: EINVAL.
    "PIDFD_GET_INFO-EINVAL": Case(
        "from pidfd import PidFd\nh = PidFd.from_pid(os.getpid())\n"
        "report(lambda: h.info().ppid == os.getppid())",
        Rule(NR_IOCTL, errno.EINVAL, arg=1, value=PIDFD_GET_INFO),
        "6.13",
        True,
        (6, 13),
    ),
    "PIDFD_THREAD-EINVAL": Case(
        "import threading\nfrom pidfd import PidFd\n"
        "report(lambda: PidFd.from_pid(threading.get_native_id(), thread=True).thread)",
        Rule(NR_PIDFD_OPEN, errno.EINVAL, arg=1, value=PIDFD_THREAD, any_bits=True),
        "6.9",
        True,
        (6, 9),
    ),
    "SO_PEERPIDFD-ENOPROTOOPT": Case(
        "import socket\nfrom pidfd import PidFd\na, b = socket.socketpair()\n"
        "report(lambda: PidFd.from_socket_peer(a).pid == os.getpid())",
        Rule(NR_GETSOCKOPT, errno.ENOPROTOOPT, arg=2, value=SO_PEERPIDFD),
        "6.5",
        True,
        (6, 5),
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_old_kernel_error_names_the_version(name):
    case = CASES[name]
    out = run_snippet(case.code, [case.rule])
    assert not out["ok"], out
    assert out["type"] == "OSError"
    assert out["errno"] == errno.ENOSYS
    assert f"needs Linux >= {case.version}" in out["message"]
    assert f"this kernel is {RELEASE}" in out["message"]


@pytest.mark.parametrize("name", list(CASES))
def test_same_snippet_works_without_the_filter(name):
    case = CASES[name]
    if not kernel_at_least(*case.needs):
        pytest.skip(f"needs Linux >= {case.needs[0]}.{case.needs[1]} unfiltered")
    out = run_snippet(case.code, [])
    assert out["ok"], out
    if case.baseline is not None:
        assert out["value"] == case.baseline


def test_filter_for_one_flag_leaves_plain_pidfd_open_alone():
    rule = Rule(NR_PIDFD_OPEN, errno.EINVAL, arg=1, value=PIDFD_THREAD, any_bits=True)
    out = run_snippet(
        "from pidfd import PidFd\nreport(lambda: PidFd.from_pid(os.getpid()).thread)", [rule]
    )
    assert out == {"ok": True, "value": False}


# What a kernel without PIDFD_GET_INFO answers it: ENOTTY before 6.11 (no
# pidfd ioctls at all), EINVAL on 6.12 (measured: docs/kernels.md).
NO_GET_INFO = [errno.ENOTTY, errno.EINVAL]


@pytest.mark.parametrize("no_info", NO_GET_INFO, ids=errno.errorcode.get)
def test_wait_exit_non_child_without_pidfd_get_info_is_none(no_info):
    """No PIDFD_GET_INFO: the status of a non-child cannot be known, so None."""
    code = (
        NON_CHILD + "from pidfd import PidFd\n"
        "h = PidFd.from_pid(gpid)\n"
        "m.stdin.write(b'x'); m.stdin.flush()\n"
        "report(lambda: h.wait_exit(10))\n" + NON_CHILD_END
    )
    rule = Rule(NR_IOCTL, no_info, arg=1, value=PIDFD_GET_INFO)
    assert run_snippet(code, [rule]) == {"ok": True, "value": None}
    if kernel_at_least(6, 15):
        # Unfiltered, this kernel tells the true status.
        assert run_snippet(code, []) == {"ok": True, "value": "ExitStatus(code=5)"}


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_async_wait_exit_non_child_without_pidfd_get_info_is_none(backend):
    code = (
        NON_CHILD + "import anyio\nfrom pidfd import AsyncPidFd\n"
        "async def main():\n"
        "    h = AsyncPidFd.from_pid(gpid)\n"
        "    m.stdin.write(b'x'); m.stdin.flush()\n"
        "    with anyio.fail_after(10):\n"
        "        return await h.wait_exit()\n"
        f"report(lambda: anyio.run(main, backend={backend!r}))\n" + NON_CHILD_END
    )
    rule = Rule(NR_IOCTL, errno.ENOTTY, arg=1, value=PIDFD_GET_INFO)
    assert run_snippet(code, [rule]) == {"ok": True, "value": None}


def test_wait_exit_child_needs_no_pidfd_get_info():
    """The WNOWAIT peek works on any pidfd kernel: a child's status is known."""
    code = (
        CHILD + "from pidfd import PidFd\nh = PidFd.from_pid(p.pid)\n"
        "report(lambda: (h.wait_exit(10).code, p.wait()))\n"
    )
    rule = Rule(NR_IOCTL, errno.ENOTTY, arg=1, value=PIDFD_GET_INFO)
    assert run_snippet(code, [rule]) == {"ok": True, "value": "(5, 5)"}


@pytest.mark.parametrize("no_info", NO_GET_INFO, ids=errno.errorcode.get)
def test_wait_on_non_child_without_pidfd_get_info_says_not_a_child(no_info):
    """The ECHILD message finds the parent through /proc when the ioctl is missing."""
    code = (
        NON_CHILD + "from pidfd import PidFd\n"
        "h = PidFd.from_pid(gpid)\n"
        "report(lambda: h.wait(0))\n" + NON_CHILD_END
    )
    rule = Rule(NR_IOCTL, no_info, arg=1, value=PIDFD_GET_INFO)
    out = run_snippet(code, [rule])
    assert out["type"] == "ChildProcessError" and out["errno"] == errno.ECHILD
    assert "is not a child of this process" in out["message"]
    assert "wait_exit()" in out["message"]


def test_info_on_reaped_process_without_info_exit():
    """Before Linux 6.15 a reaped process answers ESRCH: say what is missing."""
    code = (
        CHILD + "from pidfd import PidFd\nh = PidFd.from_pid(p.pid)\np.wait()\n"
        "report(lambda: h.info())\n"
    )
    # Emulate 6.13/6.14: the ioctl exists, but knows nothing of dead processes.
    rule = Rule(NR_IOCTL, errno.ESRCH, arg=1, value=PIDFD_GET_INFO)
    out = run_snippet(code, [rule])
    assert out["type"] == "ProcessLookupError" and out["errno"] == errno.ESRCH
    assert "needs Linux >= 6.15" in out["message"]


# --- errnos that differ between kernels for the same situation ---------------


def test_getfd_on_an_exited_process_answering_ebadf_is_process_lookup_error():
    """5.10 answers EBADF for an exited process (its fds are closed), not ESRCH."""
    code = (
        CHILD + "from pidfd import PidFd\nh = PidFd.from_pid(p.pid)\n"
        "h.wait_exit(10)\nreport(lambda: h.getfd(0))\np.wait()\n"
    )
    out = run_snippet(code, [Rule(NR_PIDFD_GETFD, errno.EBADF)])
    assert out["type"] == "ProcessLookupError" and out["errno"] == errno.ESRCH, out
    assert "has exited" in out["message"]


def test_getfd_ebadf_on_a_live_process_names_the_fd():
    code = (
        "import subprocess, sys\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import sys; sys.stdin.read()'],"
        " stdin=subprocess.PIPE)\n"
        "from pidfd import PidFd\nh = PidFd.from_pid(p.pid)\n"
        "report(lambda: h.getfd(0))\np.stdin.close(); p.wait()\n"
    )
    out = run_snippet(code, [Rule(NR_PIDFD_GETFD, errno.EBADF)])
    assert out["type"] == "OSError" and out["errno"] == errno.EBADF, out
    assert "has no open fd 0" in out["message"]


def test_socket_peer_reaped_answering_einval_is_process_lookup_error():
    """6.12 answers EINVAL for SO_PEERPIDFD once the peer is reaped (7.2: ESRCH)."""
    code = (
        "import socket\nfrom pidfd import PidFd\na, b = socket.socketpair()\n"
        "report(lambda: PidFd.from_socket_peer(a))\n"
    )
    rule = Rule(NR_GETSOCKOPT, errno.EINVAL, arg=2, value=SO_PEERPIDFD)
    out = run_snippet(code, [rule])
    assert out["type"] == "ProcessLookupError" and out["errno"] == errno.ESRCH, out
    assert "exited and been reaped" in out["message"]


def test_pidfd_open_einval_between_exit_and_reap_is_process_lookup_error():
    """pidfd_open's EINVAL for a process with no thread group left: it is gone.

    The kernel gives it in the moment between a process's exit and its reaping;
    the filter gives it for a pid whose process was reaped (no /proc entry).
    """
    code = (
        CHILD + "pid = p.pid\np.wait()\nfrom pidfd import PidFd\n"
        "report(lambda: PidFd.from_pid(pid))\n"
    )
    out = run_snippet(code, [Rule(NR_PIDFD_OPEN, errno.EINVAL)])
    assert out["type"] == "ProcessLookupError" and out["errno"] == errno.ESRCH, out
    assert "no process with pid" in out["message"]
