"""getfd(), thread handles, from_fd() and from_socket_peer(), with send_signal on
each; their bad arguments, and getfd()'s result closed on exec."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import os
import signal
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest

from _helpers import PY, Children, Proc, fds_after_exec, kernel_at_least, proc_state
from pidfd import AsyncPidFd, ExitStatus, PidFd

HAS_INFO = kernel_at_least(6, 13)
HAS_INFO_EXIT = kernel_at_least(6, 15)
needs_thread = pytest.mark.kernel(6, 9, reason="PIDFD_THREAD")
needs_peerpidfd = pytest.mark.kernel(6, 5, reason="SO_PEERPIDFD")


def tgid_of(handle: PidFd | AsyncPidFd) -> int:
    """The thread group of a live handle's target: info() where the kernel has
    PIDFD_GET_INFO (6.13), else /proc (PIDFD_THREAD alone is 6.9)."""
    if HAS_INFO:
        tgid = handle.info().tgid
        assert tgid is not None
        return tgid
    with open(f"/proc/{handle.pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("Tgid:"))


def assert_cloexec(fd: int) -> None:
    assert not os.get_inheritable(fd)
    assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC


# --- getfd ------------------------------------------------------------------

# Two pipes in the target: it reads what we write into the first and has
# already written into the second; it prints the two fd numbers we need.
PIPES = """
import os
r1, w1 = os.pipe()
r2, w2 = os.pipe()
os.write(w2, b"from the target")
print(w1, r2, flush=True)
print(os.read(r1, 100).decode(), flush=True)
sys.stdin.buffer.read(1)
"""


def test_getfd_reads_and_writes_through_duplicates(procs, kind):
    proc = procs.start(kind, "import sys\n" + PIPES, wait_for_release=False)
    w1, r2 = map(int, proc.readline().split())
    with PidFd.from_pid(proc.pid) as handle:
        mine_w = handle.getfd(w1)
        mine_r = handle.getfd(r2)
    try:
        assert_cloexec(mine_w)
        assert_cloexec(mine_r)
        assert mine_w != mine_r
        os.write(mine_w, b"hello")
        assert proc.readline() == "hello\n"
        assert os.read(mine_r, 100) == b"from the target"
    finally:
        os.close(mine_w)
        os.close(mine_r)


def test_getfd_regular_file(procs, tmp_path):
    path = tmp_path / "data"
    path.write_bytes(b"0123456789")
    proc = procs.child(
        f"import os, sys\nfd = os.open({str(path)!r}, os.O_RDONLY)\nprint(fd, flush=True)\n"
        "sys.stdin.buffer.read(1)\n",
        wait_for_release=False,
    )
    target = int(proc.readline())
    with PidFd.from_pid(proc.pid) as handle:
        mine = handle.getfd(target)
    try:
        assert os.fstat(mine).st_ino == path.stat().st_ino
        assert os.pread(mine, 4, 3) == b"3456"
        assert_cloexec(mine)
    finally:
        os.close(mine)


def test_getfd_bad_fd(procs):
    proc = procs.child("")
    with PidFd.from_pid(proc.pid) as handle:
        with pytest.raises(OSError) as excinfo:
            handle.getfd(987)
        assert excinfo.value.errno == errno.EBADF
        assert "987" in str(excinfo.value) and str(proc.pid) in str(excinfo.value)
        for bad in (-1, 2**31, 2**40):
            with pytest.raises(ValueError, match="file descriptor"):
                handle.getfd(bad)
        with pytest.raises(TypeError):
            handle.getfd("0")  # type: ignore[arg-type]


def test_getfd_exited_process(procs):
    proc = procs.child("")
    with PidFd.from_pid(proc.pid) as handle:
        proc.release()
        handle.wait_exit(10)
        with pytest.raises(ProcessLookupError, match=str(proc.pid)):
            handle.getfd(0)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another user")
def test_getfd_permission_error_across_users():
    """A caller running as nobody may not take a root process's fds."""
    r, w = os.pipe()
    code = (
        "import os, sys\n"
        "from pidfd import PidFd\n"
        f"h = PidFd.from_pid({os.getpid()})\n"
        "os.setgroups([])\n"
        "os.setresgid(65534, 65534, 65534)\n"
        "os.setresuid(65534, 65534, 65534)\n"
        "try:\n"
        f"    h.getfd({w})\n"
        "except PermissionError as e:\n"
        "    print(e.errno, e)\n"
        "else:\n"
        "    print('no error')\n"
    )
    try:
        out = subprocess.run(
            [PY, "-c", code], capture_output=True, text=True, timeout=30, check=True
        )
    finally:
        os.close(r)
        os.close(w)
    assert out.stdout.startswith(f"{errno.EPERM} "), out.stdout + out.stderr
    assert "not permitted" in out.stdout and "ptrace" in out.stdout


@pytest.mark.anyio
async def test_async_getfd_and_is_alive(procs):
    proc = procs.child("import sys\n" + PIPES, wait_for_release=False)
    _w1, r2 = map(int, proc.readline().split())
    with AsyncPidFd.from_pid(proc.pid) as handle:
        assert handle.is_alive()
        mine = handle.getfd(r2)
        try:
            assert os.read(mine, 100) == b"from the target"
            assert_cloexec(mine)
        finally:
            os.close(mine)
        handle.kill()
        with anyio.fail_after(10):
            status = await handle.wait_exit()
        assert status == ExitStatus.from_waitstatus(signal.SIGKILL)
        assert not handle.is_alive()
    assert proc.popen.wait(10) == -signal.SIGKILL


# --- thread handles ---------------------------------------------------------

# A second thread that blocks SIGUSR1 (so a signal sent to it stays pending
# where /proc shows it), reports its id and waits to be released.
THREAD = """
import signal, sys, threading
def run():
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    print(threading.get_native_id(), flush=True)
    sys.stdin.buffer.read(1)
t = threading.Thread(target=run)
t.start()
t.join()
print("joined", flush=True)
sys.stdin.buffer.read(1)
"""


def pending_signals(pid: int, tid: int) -> tuple[int, int]:
    """(thread-private, process-wide) pending signal masks from /proc."""
    masks = {}
    with open(f"/proc/{pid}/task/{tid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("SigPnd", "ShdPnd"):
                masks[key] = int(value, 16)
    return masks["SigPnd"], masks["ShdPnd"]


@needs_thread
def test_thread_handle(procs):
    proc = procs.child(THREAD, wait_for_release=False)
    tid = int(proc.readline())
    assert tid != proc.pid
    with PidFd.from_pid(tid, thread=True) as th, PidFd.from_pid(proc.pid) as process:
        assert th.thread and th.pid == tid and not process.thread
        assert th.is_alive()
        assert tgid_of(th) == proc.pid
        assert "thread" in repr(th)

        th.send_signal(signal.SIGUSR1)
        bit = 1 << (signal.SIGUSR1 - 1)
        private, shared = pending_signals(proc.pid, tid)
        assert private & bit and not shared & bit
        with pytest.raises(ValueError, match="thread"):
            th.wait(0)
        with pytest.raises(ValueError, match="thread"):
            th.try_wait()

        proc.release()
        assert proc.readline() == "joined\n"
        status = th.wait_exit(10)
        assert not th.is_alive()
        # The thread is gone, its process is not.
        assert process.is_alive()
        if HAS_INFO_EXIT:
            # What the kernel records for a thread that returned normally.
            assert status == ExitStatus.from_waitstatus(0)
        with pytest.raises(ProcessLookupError):
            th.send_signal(signal.SIGUSR1)


@needs_thread
def test_thread_id_without_thread_flag_is_a_clear_error(procs):
    proc = procs.child(THREAD, wait_for_release=False)
    tid = int(proc.readline())
    with pytest.raises(OSError) as excinfo:
        PidFd.from_pid(tid)
    assert excinfo.value.errno in (errno.EINVAL, errno.ENOENT)
    message = str(excinfo.value)
    assert f"{tid} is a thread of process {proc.pid}" in message
    assert "thread=True" in message


@needs_thread
def test_thread_handle_on_a_process_leader(procs):
    """thread=True on a process id: a handle on its main thread."""
    proc = procs.child("")
    with PidFd.from_pid(proc.pid, thread=True) as th:
        assert th.thread and th.pid == proc.pid
        assert tgid_of(th) == proc.pid


@needs_thread
def test_from_fd_keeps_thread_flag(procs):
    proc = procs.child(THREAD, wait_for_release=False)
    tid = int(proc.readline())
    raw = os.pidfd_open(tid, os.O_EXCL)  # PIDFD_THREAD
    with PidFd.from_fd(raw) as th:
        assert th.thread and th.pid == tid
        assert tgid_of(th) == proc.pid
        th.send_signal(signal.SIGUSR1)
        bit = 1 << (signal.SIGUSR1 - 1)
        private, shared = pending_signals(proc.pid, tid)
        assert private & bit and not shared & bit


@pytest.mark.anyio
@needs_thread
async def test_async_thread_handle(procs):
    proc = procs.child(THREAD, wait_for_release=False)
    tid = int(proc.readline())
    with AsyncPidFd.from_pid(tid, thread=True) as th:
        assert th.thread and th.is_alive()
        assert tgid_of(th) == proc.pid
        proc.release()
        with anyio.fail_after(10):
            await th.wait_exit()
        assert not th.is_alive()
        assert proc.popen.poll() is None


# --- from_fd ----------------------------------------------------------------


def test_from_fd_adopts_and_owns(procs, kind):
    proc = procs.start(kind, "")
    raw = os.pidfd_open(proc.pid)
    handle = PidFd.from_fd(raw)
    try:
        assert handle.pid == proc.pid
        assert handle.fileno() == raw
        assert not handle.thread
        assert handle.is_alive()
        handle.terminate()
        status = handle.wait_exit(10)
        if kind == "child" or HAS_INFO_EXIT:
            assert status == ExitStatus.from_waitstatus(signal.SIGTERM)
        assert proc.owner_returncode() == -signal.SIGTERM
    finally:
        handle.close()
    with pytest.raises(OSError) as excinfo:
        os.fstat(raw)
    assert excinfo.value.errno == errno.EBADF


def test_from_fd_child_can_be_reaped(procs):
    proc = procs.child("sys.exit(17)")
    with PidFd.from_fd(os.pidfd_open(proc.pid)) as handle:
        proc.release()
        assert handle.wait(10).status.code == 17


def test_from_fd_rejects_a_pipe_and_leaves_it_open():
    r, w = os.pipe()
    try:
        for fd in (r, w):
            with pytest.raises(ValueError, match="not a pidfd"):
                PidFd.from_fd(fd)
        os.write(w, b"still open")
        assert os.read(r, 100) == b"still open"
    finally:
        os.close(r)
        os.close(w)


def test_from_fd_rejects_a_regular_file(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"x")
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(ValueError, match="not a pidfd"):
            PidFd.from_fd(fd)
        assert os.read(fd, 1) == b"x"
    finally:
        os.close(fd)


@pytest.mark.parametrize("fd", [-1, -(2**40), 2**31, 2**40])
def test_from_fd_out_of_range(fd):
    with pytest.raises(ValueError, match="file descriptor"):
        PidFd.from_fd(fd)


def test_from_fd_far_out_of_range():
    with pytest.raises((ValueError, OverflowError)):
        PidFd.from_fd(2**100)


def test_from_fd_not_open():
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    with pytest.raises(OSError) as excinfo:
        PidFd.from_fd(w)
    assert excinfo.value.errno == errno.EBADF
    assert f"fd {w}" in str(excinfo.value)


def test_from_fd_of_a_reaped_process(procs):
    proc = procs.child("")
    raw = os.pidfd_open(proc.pid)
    try:
        proc.release()
        assert proc.popen.wait(10) == 0
        with pytest.raises(ProcessLookupError, match="reaped"):
            PidFd.from_fd(raw)
        # Refused, so still ours to close.
        os.fstat(raw)
    finally:
        os.close(raw)


@pytest.mark.parametrize("bad", [1.0, "3", None])
def test_from_fd_type_errors(bad):
    with pytest.raises(TypeError):
        PidFd.from_fd(bad)  # type: ignore[arg-type]


# --- from_socket_peer ---------------------------------------------------------


@needs_peerpidfd
def test_socket_peer_of_a_socketpair_is_us():
    a, b = socket.socketpair()
    with a, b, PidFd.from_socket_peer(a) as mine, PidFd.from_socket_peer(b.fileno()) as also:
        assert mine.pid == also.pid == os.getpid()
        assert mine.is_alive()
        mine.send_signal(0)


# A client that connects, says hello, waits for one byte and exits 4.
CLIENT = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1] if len(sys.argv) > 1 else {path!r})
s.sendall(b"h")
s.recv(1)
sys.exit(4)
"""


@contextlib.contextmanager
def unix_client(
    tmp_path: Path, start: Callable[[str], Proc]
) -> Iterator[tuple[Proc, socket.socket]]:
    """Listen on a Unix socket, ``start(CLIENT)`` a process that connects to
    it, and yield that process and our end of its connection (10 s timeouts)."""
    path = str(tmp_path / "sock")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(path)
        server.listen()
        server.settimeout(10)
        proc = start(CLIENT.format(path=path))
        # A blocking accept() is fine, also in async tests: the client connects at once.
        conn, _ = server.accept()
        with conn:
            conn.settimeout(10)
            yield proc, conn


@needs_peerpidfd
def test_socket_peer_of_a_unix_server(procs, kind, tmp_path):
    start = functools.partial(procs.start, kind, wait_for_release=False)
    with unix_client(tmp_path, start) as (proc, conn):
        assert conn.recv(1) == b"h"
        with PidFd.from_socket_peer(conn) as peer:
            assert peer.pid == proc.pid
            if kernel_at_least(6, 13):
                assert peer.info().pid == proc.pid
            assert peer.is_alive()
            conn.sendall(b"!")
            status = peer.wait_exit(10)
            assert not peer.is_alive()
            if kind == "child" or HAS_INFO_EXIT:
                assert status is not None and status.code == 4
        assert proc.owner_returncode() == 4


@needs_peerpidfd
def test_socket_peer_send_signal(procs, tmp_path):
    start = functools.partial(procs.grandchild, wait_for_release=False)
    with unix_client(tmp_path, start) as (proc, conn), PidFd.from_socket_peer(conn) as peer:
        assert peer.pid == proc.pid
        peer.kill()
        status = peer.wait_exit(10)
        if HAS_INFO_EXIT:
            assert status == ExitStatus.from_waitstatus(signal.SIGKILL)
    assert proc.owner_returncode() == -signal.SIGKILL


@pytest.mark.anyio
@needs_peerpidfd
async def test_socket_peer_async(procs, tmp_path):
    start = functools.partial(procs.child, wait_for_release=False)
    with unix_client(tmp_path, start) as (proc, conn), AsyncPidFd.from_socket_peer(conn) as peer:
        assert peer.pid == proc.pid
        conn.sendall(b"!")
        with anyio.fail_after(10):
            status = await peer.wait_exit()
    assert isinstance(status, ExitStatus) and status.code == 4
    assert proc_state(proc.pid) == "Z"
    assert proc.popen.wait(10) == 4


@needs_peerpidfd
def test_socket_peer_of_tcp_is_a_clear_error():
    server = socket.create_server(("127.0.0.1", 0))
    with server, socket.create_connection(server.getsockname(), timeout=10) as client:
        conn, _ = server.accept()
        with conn:
            for sock in (client, conn):
                with pytest.raises(OSError) as excinfo:
                    PidFd.from_socket_peer(sock)
                assert excinfo.value.errno == errno.ENODATA
                assert "connected AF_UNIX socket" in str(excinfo.value)


@needs_peerpidfd
def test_socket_peer_of_an_unconnected_unix_socket():
    with socket.socket(socket.AF_UNIX) as sock:
        with pytest.raises(OSError) as excinfo:
            PidFd.from_socket_peer(sock)
        assert excinfo.value.errno == errno.ENODATA


@pytest.mark.parametrize("bad", ["sock", 1.5, None, object(), b"x"])
def test_socket_peer_type_error(bad):
    with pytest.raises(TypeError, match="socket"):
        PidFd.from_socket_peer(bad)


def test_socket_peer_of_a_non_socket_fd():
    r, w = os.pipe()
    try:
        with pytest.raises(OSError) as excinfo:
            PidFd.from_socket_peer(r)
        assert excinfo.value.errno == errno.ENOTSOCK
        with open(os.devnull) as f, pytest.raises(OSError) as excinfo:
            PidFd.from_socket_peer(f)
        assert excinfo.value.errno == errno.ENOTSOCK
    finally:
        os.close(r)
        os.close(w)


@needs_peerpidfd
def test_socket_peer_that_exited_and_was_reaped(procs, tmp_path):
    start = functools.partial(procs.child, wait_for_release=False)
    with unix_client(tmp_path, start) as (proc, conn):
        conn.sendall(b"!")
        assert proc.popen.wait(10) == 4
        with pytest.raises(ProcessLookupError, match="exited and been reaped"):
            PidFd.from_socket_peer(conn)


def test_is_alive_on_a_fd_closed_behind_the_handle_raises_ebadf() -> None:
    # poll() answers a closed fd with POLLNVAL, which once read as "exited":
    # is_alive() must fail as wait() does, not say False for a live process.
    child = subprocess.Popen(["sleep", "30"])
    try:
        handle = PidFd.from_pid(child.pid)
        fd = handle.fileno()
        os.close(fd)
        with pytest.raises(OSError) as caught:
            handle.is_alive()
        assert caught.value.errno == errno.EBADF
        assert "closed" in str(caught.value)
        # Give the handle a fd of our own at that number to close, so its
        # close() cannot reach an unrelated file.
        stand_in = os.open(os.devnull, os.O_RDONLY)
        assert stand_in == fd
        handle.close()
    finally:
        child.kill()
        child.wait()


# -- bad arguments to from_fd, getfd and from_socket_peer ------------------------------


BAD_FDS: list[tuple[object, tuple[type[BaseException], ...]]] = [
    (-1, (ValueError,)),
    (2**31, (ValueError, OverflowError)),
    (2**64 + 3, (ValueError, OverflowError)),
    ("3", (TypeError,)),
    (3.0, (TypeError,)),
    (None, (TypeError,)),
]


@pytest.mark.parametrize(("fd", "expected"), BAD_FDS, ids=[repr(f) for f, _ in BAD_FDS])
def test_bad_fd(fd: object, expected: tuple[type[BaseException], ...], children: Children) -> None:
    with pytest.raises(expected):
        PidFd.from_fd(fd)
    pid = children.sleep(30)
    with PidFd.from_pid(pid) as h, pytest.raises(expected):
        h.getfd(fd)


def test_from_fd_refuses_non_pidfds_and_leaves_them_open() -> None:
    r, w = os.pipe()
    try:
        with pytest.raises(ValueError, match="not a pidfd"):
            PidFd.from_fd(r)
        os.write(w, b"z")
        assert os.read(r, 1) == b"z"  # still ours, still open
    finally:
        os.close(r)
        os.close(w)
    # A number that is not open at all.
    with pytest.raises(OSError):
        PidFd.from_fd(r)


def test_from_socket_peer_bad_arguments() -> None:
    with pytest.raises(TypeError):
        PidFd.from_socket_peer("sock")
    with pytest.raises(TypeError):
        PidFd.from_socket_peer(None)
    with pytest.raises((ValueError, OverflowError)):
        PidFd.from_socket_peer(-5)
    r, w = os.pipe()
    try:
        with pytest.raises(OSError):
            PidFd.from_socket_peer(r)
    finally:
        os.close(r)
        os.close(w)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s, pytest.raises(OSError):
        PidFd.from_socket_peer(s)


# -- fork and exec ---------------------------------------------------------------------


def test_getfd_result_is_close_on_exec(children: Children) -> None:
    pid = children.sleep(30)
    with PidFd.from_pid(pid) as h:
        try:
            fd = h.getfd(0)
        except PermissionError as e:
            pytest.skip(f"pidfd_getfd not permitted here: {e}")
        try:
            assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
            assert fd not in fds_after_exec()
        finally:
            os.close(fd)
