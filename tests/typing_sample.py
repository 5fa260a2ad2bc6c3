"""A typed tour of the public API, checked by ``mypy --strict`` in CI.

Not a test module (pytest collects ``test_*.py`` only) and never run: it
exists so that a wrong or missing annotation in ``_native.pyi`` or the
Python package breaks the type check. ``assert_type`` pins each inferred
type exactly.
"""

from __future__ import annotations

import os
import resource
import signal
import socket
from typing import assert_type

import pidfd
from pidfd import AsyncPidFd, ExitInfo, ExitStatus, PidFd, ProcessInfo, wait_any


def sync_usage(pid: int) -> int:
    with PidFd.from_pid(pid) as handle:
        assert_type(handle, PidFd)
        assert_type(handle.pid, int)
        assert_type(handle.thread, bool)
        assert_type(handle.closed, bool)
        assert_type(handle.fileno(), int)
        assert_type(handle.is_alive(), bool)
        handle.send_signal(signal.SIGTERM)
        handle.send_signal(0)
        handle.terminate()
        handle.kill()
        assert_type(handle.try_wait(), "ExitInfo | None")
        assert_type(handle.wait_exit(timeout=1.5), "ExitStatus | None")
        info = handle.wait(timeout=None)
        assert_type(info, ExitInfo)
        assert_type(info.pid, int)
        assert_type(info.siginfo, os.waitid_result)
        assert_type(info.rusage, resource.struct_rusage)
        assert_type(info.rusage.ru_utime, float)
        return info.status.returncode


def status_fields(status: ExitStatus) -> None:
    assert_type(status.code, "int | None")
    assert_type(status.signal, "int | None")
    assert_type(status.success, bool)
    assert_type(status.core_dumped, bool)
    assert_type(status.returncode, int)
    assert_type(status.waitstatus, int)
    assert_type(ExitStatus.from_waitstatus(0), ExitStatus)
    assert_type(ExitStatus.from_siginfo(os.CLD_EXITED, 0), ExitStatus)
    assert_type(status == ExitStatus.from_waitstatus(0), bool)
    assert_type({status}, "set[ExitStatus]")


def process_info(handle: PidFd) -> int | None:
    info = handle.info()
    assert_type(info, ProcessInfo)
    assert_type(info.pid, int)
    assert_type(info.exit_status, "ExitStatus | None")
    assert_type(info.cgroupid, "int | None")
    return info.ppid


def other_constructors(sock: socket.socket, fd: int) -> list[PidFd]:
    thread = PidFd.from_pid(os.getpid(), thread=True)
    peer = PidFd.from_socket_peer(sock)
    by_fd = PidFd.from_socket_peer(sock.fileno())
    adopted = PidFd.from_fd(fd)
    assert_type(adopted.getfd(0), int)
    return [thread, peer, by_fd, adopted]


def many(handles: list[PidFd], mixed: list[PidFd | AsyncPidFd]) -> None:
    assert_type(wait_any(handles), "list[PidFd]")
    assert_type(wait_any(handles, timeout=0.5), "list[PidFd]")
    assert_type(wait_any(mixed), "list[PidFd | AsyncPidFd]")
    assert_type(pidfd.__version__, str)


async def async_usage(pid: int) -> ExitStatus:
    async with AsyncPidFd.from_pid(pid) as handle:
        assert_type(handle.sync, PidFd)
        assert_type(handle.try_wait(), "ExitInfo | None")
        assert_type(await handle.wait_exit(), "ExitStatus | None")
        info = await handle.wait()
        return info.status
