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
import subprocess
from typing import IO, Any, assert_type

import anyio.abc

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
        assert_type(info.rusage, resource.struct_rusage | None)
        if info.rusage is not None:
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


def popen_usage() -> int:
    # Typed as typeshed types subprocess.Popen: text or bytes from the arguments.
    text = pidfd.Popen(["ls"], stdout=subprocess.PIPE, text=True)
    assert_type(text, "pidfd.Popen[str]")
    assert_type(pidfd.Popen(["ls"], encoding="utf-8"), "pidfd.Popen[str]")
    assert_type(pidfd.Popen(["ls"], errors="replace"), "pidfd.Popen[str]")
    assert_type(pidfd.Popen(["ls"], universal_newlines=True), "pidfd.Popen[str]")
    raw = pidfd.Popen(["ls"], stdout=subprocess.PIPE)
    assert_type(raw, "pidfd.Popen[bytes]")
    flag: bool = True
    assert_type(pidfd.Popen("ls", shell=True, text=flag), pidfd.Popen[Any])
    stock: subprocess.Popen[str] = text  # usable wherever subprocess.Popen is
    assert_type(stock.communicate(timeout=1.0), tuple[str, str])
    assert_type(text.stdout, IO[str] | None)
    assert_type(raw.stdout, IO[bytes] | None)
    assert_type(text.pidfd, "PidFd | None")
    assert_type(text.rusage, "resource.struct_rusage | None")
    assert_type(text.exit_status, "ExitStatus | None")
    assert_type(text.poll(), "int | None")
    text.send_signal(signal.SIGTERM)
    text.terminate()
    text.kill()
    with raw:
        return raw.wait(timeout=1.5)


def run_usage() -> None:
    done = pidfd.run(["ls"], capture_output=True, text=True)
    assert_type(done, "pidfd.CompletedProcess[str]")
    assert_type(done.stdout, str)
    assert_type(pidfd.run(["ls"], check=True), "pidfd.CompletedProcess[bytes]")
    assert_type(pidfd.run(["ls"], input=b"x").stdout, bytes)
    assert_type(pidfd.run(["ls"], text=flag()), pidfd.CompletedProcess[Any])
    stock: subprocess.CompletedProcess[str] = done
    assert_type(stock.returncode, int)
    assert_type(done.rusage, "resource.struct_rusage | None")
    assert_type(done.exit_status, "ExitStatus | None")


def flag() -> bool:
    return True


async def async_process_usage() -> int:
    proc = await pidfd.open_process(["cat"], stdin=subprocess.PIPE, start_new_session=True)
    assert_type(proc, pidfd.Process)
    abstract: anyio.abc.Process = proc  # usable wherever anyio's Process is
    assert_type(abstract.returncode, "int | None")
    async with proc:
        assert_type(proc.pid, int)
        assert_type(proc.stdin, "anyio.abc.ByteSendStream | None")
        assert_type(proc.stdout, "anyio.abc.ByteReceiveStream | None")
        assert_type(proc.stderr, "anyio.abc.ByteReceiveStream | None")
        assert_type(proc.pidfd, "AsyncPidFd | None")
        assert_type(proc.popen, "pidfd.Popen[bytes]")
        if proc.stdin is not None:
            await proc.stdin.send(b"x")
        if proc.stdout is not None:
            assert_type(await proc.stdout.receive(), bytes)
        proc.send_signal(signal.SIGTERM)
        proc.terminate()
        proc.kill()
        code = await proc.wait()
        assert_type(code, int)
    assert_type(proc.rusage, "resource.struct_rusage | None")
    assert_type(proc.exit_status, "ExitStatus | None")
    done = await pidfd.run_process("ls", input=b"", check=False, cwd="/", env={"A": "b"})
    assert_type(done, "pidfd.CompletedProcess[bytes]")
    assert_type(done.stdout, bytes)
    assert_type(done.exit_status, "ExitStatus | None")
    await pidfd.run_process([b"ls", os.curdir], stdout=subprocess.DEVNULL, stderr=None)
    return code
