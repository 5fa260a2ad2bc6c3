"""info(): what PIDFD_GET_INFO reports, checked against os and /proc."""

from __future__ import annotations

import os
import signal

import anyio
import pytest

from _helpers import kernel_at_least, proc_state, wait_until
from pidfd import AsyncPidFd, ExitStatus, PidFd, ProcessInfo

pytestmark = pytest.mark.kernel(6, 13, reason="PIDFD_GET_INFO")
HAS_INFO_EXIT = kernel_at_least(6, 15)

FIELDS = [
    "pid",
    "tgid",
    "ppid",
    "ruid",
    "euid",
    "suid",
    "fsuid",
    "rgid",
    "egid",
    "sgid",
    "fsgid",
    "cgroupid",
    "exit_status",
    "coredump_mask",
    "coredump_signal",
    "supported_mask",
]
LIVE_ONLY = [f for f in FIELDS[:11] if f != "pid"]
HAS_COREDUMP = kernel_at_least(6, 16)

# include/uapi/linux/pidfd.h: request/result bits and coredump_mask bits.
INFO_PID, INFO_CREDS, INFO_CGROUPID, INFO_EXIT = 1, 2, 4, 8
INFO_COREDUMP, INFO_SUPPORTED_MASK, INFO_COREDUMP_SIGNAL, INFO_COREDUMP_CODE = 16, 32, 64, 128
COREDUMPED, COREDUMP_SKIP, COREDUMP_USER = 1, 2, 4


def proc_status(pid: int) -> dict[str, list[int]]:
    """Uid:, Gid:, Tgid:, PPid: lines of /proc/PID/status as int lists."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("Uid", "Gid", "Tgid", "PPid"):
                out[key] = [int(v) for v in value.split()]
    return out


def cgroup_inode(pid: int) -> int | None:
    """The inode of the process's cgroup v2 directory, if it can be seen."""
    mount = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            if right.split()[0] == "cgroup2":
                mount = left.split()[4]
                break
    if mount is None:
        return None
    with open(f"/proc/{pid}/cgroup") as f:
        paths = [line.split(":", 2)[2].strip() for line in f if line.startswith("0::")]
    if not paths:
        return None
    try:
        return os.stat(mount + paths[0].rstrip("/")).st_ino
    except OSError:
        return None


def assert_matches_proc(info: ProcessInfo, pid: int) -> None:
    st = proc_status(pid)
    assert info.pid == pid
    assert info.tgid == st["Tgid"][0]
    assert info.ppid == st["PPid"][0]
    assert [info.ruid, info.euid, info.suid, info.fsuid] == st["Uid"]
    assert [info.rgid, info.egid, info.sgid, info.fsgid] == st["Gid"]
    assert isinstance(info.cgroupid, int)
    expected = cgroup_inode(pid)
    if expected is not None:
        assert info.cgroupid == expected
    assert info.exit_status is None


def test_info_live_child_matches_os(procs):
    proc = procs.child("")
    with PidFd.from_pid(proc.pid) as handle:
        info = handle.info()
    assert (info.pid, info.tgid, info.ppid) == (proc.pid, proc.pid, os.getpid())
    assert (info.ruid, info.euid, info.suid) == os.getresuid()
    assert (info.rgid, info.egid, info.sgid) == os.getresgid()
    assert (info.fsuid, info.fsgid) == (os.geteuid(), os.getegid())
    assert_matches_proc(info, proc.pid)


@pytest.mark.skipif(os.geteuid() != 0, reason="setting distinct uids needs root")
def test_info_reports_each_credential_separately(procs):
    # Six different ids, so a field read from the wrong offset shows up.
    proc = procs.child(
        "import os\n"
        "os.setgroups([])\n"
        "os.setresgid(1001, 1002, 1003)\n"
        "os.setresuid(2001, 2002, 2003)\n"
        "print('ready', flush=True)\n"
        "sys.stdin.buffer.read(1)\n"
    )
    # Credentials change after the first release.
    proc.release()
    assert proc.readline() == "ready\n"
    with PidFd.from_pid(proc.pid) as handle:
        info = handle.info()
    assert (info.ruid, info.euid, info.suid, info.fsuid) == (2001, 2002, 2003, 2002)
    assert (info.rgid, info.egid, info.sgid, info.fsgid) == (1001, 1002, 1003, 1002)
    assert_matches_proc(info, proc.pid)


def test_info_live_non_child(procs):
    proc = procs.grandchild("")
    with PidFd.from_pid(proc.pid) as handle:
        info = handle.info()
    assert info.ppid == proc.popen.pid != os.getpid()
    assert_matches_proc(info, proc.pid)


def test_info_zombie_child_has_exit_status_from_peek(procs):
    proc = procs.child("sys.exit(5)")
    with PidFd.from_pid(proc.pid) as handle:
        proc.release()
        wait_until(lambda: proc_state(proc.pid) == "Z")
        info = handle.info()
        assert info.exit_status == ExitStatus.from_waitstatus(5 << 8)
        # Still there to be asked about, and still reapable by its owner.
        assert (info.pid, info.tgid, info.ppid) == (proc.pid, proc.pid, os.getpid())
        assert isinstance(info.ruid, int)
        assert proc_state(proc.pid) == "Z"
    assert proc.popen.wait(10) == 5


@pytest.mark.parametrize("kind", ["child", "non-child"])
def test_info_reaped_process_keeps_only_cgroup_and_exit(procs, kind):
    if not HAS_INFO_EXIT:
        pytest.skip("a reaped process's info needs PIDFD_INFO_EXIT, Linux >= 6.15")
    proc = procs.child("") if kind == "child" else procs.grandchild("")
    with PidFd.from_pid(proc.pid) as handle:
        cgroupid = handle.info().cgroupid
        handle.kill()
        if kind == "child":
            assert proc.popen.wait(10) == -signal.SIGKILL
        else:
            assert proc.owner_returncode() == -signal.SIGKILL
        info = handle.info()
    assert info.pid == proc.pid
    assert info.cgroupid == cgroupid
    assert info.exit_status == ExitStatus.from_waitstatus(signal.SIGKILL)
    for name in LIVE_ONLY:
        assert getattr(info, name) is None, name


@pytest.mark.kernel(6, 9, reason="PIDFD_THREAD")
def test_info_thread_handle(procs):
    proc = procs.child(
        "import sys, threading\n"
        "def run():\n"
        "    print(threading.get_native_id(), flush=True)\n"
        "    sys.stdin.buffer.read(1)\n"
        "t = threading.Thread(target=run)\n"
        "t.start()\n"
        "t.join()\n",
        wait_for_release=False,
    )
    tid = int(proc.readline())
    assert tid != proc.pid
    with PidFd.from_pid(tid, thread=True) as handle:
        info = handle.info()
    assert (info.pid, info.tgid, info.ppid) == (tid, proc.pid, os.getpid())
    assert info.cgroupid is not None


def test_info_is_immutable(procs):
    proc = procs.child("")
    with PidFd.from_pid(proc.pid) as handle:
        info = handle.info()
    for name in FIELDS:
        with pytest.raises(AttributeError):
            setattr(info, name, 1)
    with pytest.raises(AttributeError):
        info.new_field = 1  # type: ignore[attr-defined]
    assert info.pid == proc.pid
    status = ExitStatus.from_waitstatus(0)
    with pytest.raises(AttributeError):
        status.code = 1  # type: ignore[misc]


def test_info_repr_names_the_fields(procs):
    proc = procs.child("")
    with PidFd.from_pid(proc.pid) as handle:
        text = repr(handle.info())
    assert text.startswith("ProcessInfo(")
    assert f"pid={proc.pid}" in text and f"ppid={os.getpid()}" in text
    assert "coredump_mask=" in text and "supported_mask=" in text


def test_info_on_closed_handle_raises(procs):
    proc = procs.child("")
    handle = PidFd.from_pid(proc.pid)
    handle.close()
    with pytest.raises(ValueError, match="closed"):
        handle.info()


@pytest.mark.anyio
async def test_async_info(procs):
    proc = procs.child("sys.exit(3)")
    with AsyncPidFd.from_pid(proc.pid) as handle:
        info = handle.info()
        assert (info.pid, info.ppid) == (proc.pid, os.getpid())
        assert info.exit_status is None
        proc.release()
        with anyio.fail_after(10):
            await handle.wait_exit()
        assert handle.info().exit_status == ExitStatus.from_waitstatus(3 << 8)
    assert proc.popen.wait(10) == 3


DUMP_OFF = "import resource\nresource.setrlimit(resource.RLIMIT_CORE, (0, 0))\n"
# prctl(PR_SET_DUMPABLE, 0): the process makes itself non-dumpable.
NOT_DUMPABLE = "import ctypes\nctypes.CDLL(None).prctl(4, 0, 0, 0, 0)\n"


@pytest.mark.kernel(6, 16, reason="PIDFD_INFO_COREDUMP")
@pytest.mark.parametrize(
    ("setup", "expected"),
    [("", COREDUMP_USER), (NOT_DUMPABLE, COREDUMP_SKIP)],
    ids=["dumpable", "not-dumpable"],
)
def test_info_live_coredump_mask_says_how_a_dump_would_be_taken(procs, setup, expected):
    # A live process: the rights a dump would be taken with (as the user), or
    # that it would be skipped once the process made itself non-dumpable.
    proc = procs.child(setup + "print('ready', flush=True)\nsys.stdin.buffer.read(1)\n")
    proc.release()
    assert proc.readline() == "ready\n"
    with PidFd.from_pid(proc.pid) as handle:
        info = handle.info()
    assert info.coredump_mask == expected
    assert_matches_proc(info, proc.pid)


@pytest.mark.skipif(HAS_COREDUMP, reason="checks a kernel older than 6.16")
def test_info_without_coredump_support_reports_none(procs):
    proc = procs.child("")
    with PidFd.from_pid(proc.pid) as handle:
        info = handle.info()
    assert info.coredump_mask is None
    assert info.coredump_signal is None
    assert info.supported_mask is None


@pytest.mark.kernel(6, 16, reason="PIDFD_INFO_COREDUMP")
@pytest.mark.parametrize(
    ("code", "signo"),
    [
        ("sys.exit(0)", None),
        (DUMP_OFF + "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)", signal.SIGSEGV),
        (DUMP_OFF + "import os\nos.abort()", signal.SIGABRT),
    ],
    ids=["exit", "SIGSEGV-no-core", "SIGABRT-no-core"],
)
def test_info_reaped_process_that_made_no_core(procs, code, signo):
    # RLIMIT_CORE 0 (or a plain exit): no core was written, so the kernel never
    # reports PIDFD_COREDUMPED, whatever else it knows.
    proc = procs.child(code)
    with PidFd.from_pid(proc.pid) as handle:
        proc.release()
        status = proc.popen.wait(10)
        info = handle.info()
    assert status == (-signo if signo else 0)
    assert info.exit_status is not None
    assert info.exit_status.signal == signo
    assert info.exit_status.core_dumped is False
    # 6.18 reports the mask (0) after the reap; 7.2 reports no coredump
    # fields at all for a process that made no dump (both measured).
    assert info.coredump_mask is None or info.coredump_mask & COREDUMPED == 0
    assert info.coredump_signal in (None, 0)
    assert info.coredump_code in (None, 0)


# 6.18 does not report it and 7.2 does (both measured); 6.19 by the patches' dates.
@pytest.mark.kernel(6, 19, reason="PIDFD_INFO_SUPPORTED_MASK")
def test_info_supported_mask_names_the_fields_the_kernel_knows(procs):
    proc = procs.child("")
    with PidFd.from_pid(proc.pid) as handle:
        info = handle.info()
    assert info.supported_mask is not None
    known = (
        INFO_PID
        | INFO_CREDS
        | INFO_CGROUPID
        | INFO_EXIT
        | INFO_COREDUMP
        | INFO_SUPPORTED_MASK
        | INFO_COREDUMP_SIGNAL
        | INFO_COREDUMP_CODE
    )
    assert info.supported_mask & known == known
    # A live process has dumped nothing: no signal or code, or not reported
    # (7.2 leaves both out for it, measured).
    assert info.coredump_signal in (None, 0)
    assert info.coredump_code in (None, 0)


def test_info_newer_fields_are_none_or_consistent(procs):
    # Every kernel: a field is None exactly when the kernel did not report it,
    # and a kernel that reports supported_mask lists each field it filled.
    proc = procs.child("")
    with PidFd.from_pid(proc.pid) as handle:
        info = handle.info()
    if info.supported_mask is not None:
        filled = INFO_PID | INFO_CREDS | INFO_SUPPORTED_MASK
        if info.coredump_mask is not None:
            filled |= INFO_COREDUMP
        if info.coredump_signal is not None:
            filled |= INFO_COREDUMP_SIGNAL
        if info.coredump_code is not None:
            filled |= INFO_COREDUMP_CODE
        assert info.supported_mask & filled == filled
    if info.coredump_signal is not None:
        assert info.coredump_mask is not None
    assert (info.coredump_mask is not None) == HAS_COREDUMP
