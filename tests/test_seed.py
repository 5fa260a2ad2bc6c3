"""Python counterparts of the reference crate's doc examples and tests.

Each test names the seed test or example it mirrors; together they pin the
behaviour the port promises to keep.
"""

from __future__ import annotations

import asyncio
import errno
import subprocess

import anyio
import pytest

from pidfd import AsyncPidFd, ExitStatus, PidFd


def spawn_and_status(argv: list[str]) -> ExitStatus:
    child = subprocess.Popen(argv)
    with PidFd.from_pid(child.pid) as handle:
        status = handle.wait().status
    child.returncode = status.returncode  # reaped through the pidfd
    return status


async def async_spawn_and_status(argv: list[str], **popen_kwargs: object) -> ExitStatus:
    child = subprocess.Popen(argv, **popen_kwargs)  # type: ignore[call-overload]
    try:
        async with AsyncPidFd.from_pid(child.pid) as handle:
            status = (await handle.wait()).status
        child.returncode = status.returncode
        return status
    finally:
        if child.returncode is None:
            child.kill()
            child.wait()
        if child.stdin is not None:
            child.stdin.close()


# Seed: the sync doc example (true, then `kill -9 $$`).
def test_sync_doc_example() -> None:
    assert spawn_and_status(["/bin/true"]).code == 0
    assert spawn_and_status(["/bin/sh", "-c", "kill -9 $$"]).signal == 9


# Seed: `test`.
def test_true_false_and_killed() -> None:
    status = spawn_and_status(["/bin/true"])
    assert (status.code, status.signal) == (0, None)
    status = spawn_and_status(["/bin/false"])
    assert (status.code, status.signal) == (1, None)
    status = spawn_and_status(["/bin/sh", "-c", "kill -9 $$"])
    assert (status.code, status.signal) == (None, 9)


# Seed: `test_wait_twice`.
def test_wait_twice() -> None:
    child = subprocess.Popen(["/bin/true"])
    with PidFd.from_pid(child.pid) as handle:
        assert handle.wait().status.success
        with pytest.raises(ChildProcessError) as excinfo:
            handle.wait()
    child.returncode = 0
    assert excinfo.value.errno == errno.ECHILD


# Seed: the async doc example and `test_async` (true and false, joined).
@pytest.mark.anyio
async def test_async_zip() -> None:
    results: dict[str, ExitStatus] = {}

    async def run(name: str, argv: list[str]) -> None:
        results[name] = await async_spawn_and_status(argv)

    async with anyio.create_task_group() as tg:
        tg.start_soon(run, "true", ["/bin/true"])
        tg.start_soon(run, "false", ["/bin/false"])
    assert results["true"].code == 0
    assert results["false"].code == 1


# Seed: `test_async_concurrent` — a race between a child blocked on stdin and
# /bin/false: the first to finish wins, the loser is cancelled.
@pytest.mark.anyio
async def test_async_concurrent() -> None:
    winner: list[ExitStatus] = []

    async with anyio.create_task_group() as tg:

        async def race(argv: list[str], **kwargs: object) -> None:
            winner.append(await async_spawn_and_status(argv, **kwargs))
            tg.cancel_scope.cancel()

        tg.start_soon(lambda: race(["/bin/sh", "-c", "read line"], stdin=subprocess.PIPE))
        tg.start_soon(lambda: race(["/bin/false"]))
    assert len(winner) == 1
    assert winner[0].code == 1


# Seed: `test_async_wait_twice`.
@pytest.mark.anyio
async def test_async_wait_twice() -> None:
    child = subprocess.Popen(["/bin/true"])
    async with AsyncPidFd.from_pid(child.pid) as handle:
        assert (await handle.wait()).status.success
        with pytest.raises(ChildProcessError) as excinfo:
            await handle.wait()
    child.returncode = 0
    assert excinfo.value.errno == errno.ECHILD


# The async example again, under a plain asyncio.run (no anyio runner).
def test_async_doc_example_under_asyncio_run() -> None:
    async def main() -> tuple[ExitStatus, ExitStatus]:
        return await asyncio.gather(
            async_spawn_and_status(["/bin/true"]),
            async_spawn_and_status(["/bin/false"]),
        )

    first, second = asyncio.run(main())
    assert (first.code, second.code) == (0, 1)


def test_async_doc_example_under_trio_run() -> None:
    trio = pytest.importorskip("trio")

    async def main() -> list[ExitStatus]:
        out: list[ExitStatus] = []

        async def one(argv: list[str]) -> None:
            out.append(await async_spawn_and_status(argv))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(one, ["/bin/true"])
            nursery.start_soon(one, ["/bin/false"])
        return out

    assert sorted(s.code for s in trio.run(main)) == [0, 1]


def test_import_elsewhere_than_linux_is_a_clear_import_error() -> None:
    code = "import sys; sys.platform = 'darwin'; import pidfd"
    result = subprocess.run(
        [__import__("sys").executable, "-c", code], capture_output=True, text=True, timeout=30
    )
    assert result.returncode != 0
    assert "ImportError: async-pidfd needs Linux" in result.stderr
