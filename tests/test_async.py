"""`AsyncPidFd` on asyncio and trio (through anyio), and under plain asyncio.run."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import anyio
import pytest

from _helpers import wait_until_closed
from pidfd import AsyncPidFd, ExitInfo, ExitStatus, PidFd

pytestmark = pytest.mark.anyio

SLEEP = "import time; time.sleep(30)"


def running(pid: int) -> bool:
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None


async def test_wait_does_not_block_the_loop(spawn, ticker) -> None:
    child = spawn("import time; time.sleep(0.3)")
    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker.run)
        async with AsyncPidFd.from_pid(child.pid) as handle:
            info = await handle.wait()
        tg.cancel_scope.cancel()
    assert isinstance(info, ExitInfo) and info.status.success
    assert ticker.count >= 10


async def test_already_exited_child_returns_at_once(spawn) -> None:
    child = spawn("raise SystemExit(5)")
    async with AsyncPidFd.from_pid(child.pid) as handle:
        while handle.is_alive():
            await anyio.sleep(0.01)
        with anyio.fail_after(1):
            assert (await handle.wait()).status.code == 5


async def test_cancellation_leaves_child_unreaped_and_handle_usable(spawn) -> None:
    child = spawn("import time; time.sleep(0.4)")
    async with AsyncPidFd.from_pid(child.pid) as handle:
        with anyio.move_on_after(0.05) as scope:
            await handle.wait()
        assert scope.cancelled_caught
        assert running(child.pid)
        info = await handle.wait()
    assert info.status.success


async def test_concurrent_waiters_exactly_one_wins(spawn) -> None:
    child = spawn("import time; time.sleep(0.2)")
    results: list[object] = []

    async def waiter(handle: AsyncPidFd) -> None:
        try:
            results.append(await handle.wait())
        except ChildProcessError as exc:
            results.append(exc)

    async with AsyncPidFd.from_pid(child.pid) as handle:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for _ in range(5):
                    tg.start_soon(waiter, handle)
    infos = [r for r in results if isinstance(r, ExitInfo)]
    errors = [r for r in results if isinstance(r, ChildProcessError)]
    assert len(infos) == 1 and len(errors) == 4
    assert infos[0].status.success


async def test_not_our_child_fails_at_once() -> None:
    async with AsyncPidFd.from_pid(1) as handle:
        with anyio.fail_after(1), pytest.raises(ChildProcessError, match="wait_exit"):
            await handle.wait()


async def test_close_while_waiting_ends_the_wait(spawn) -> None:
    child = spawn(SLEEP)
    handle = AsyncPidFd.from_pid(child.pid)
    outcome: list[BaseException] = []
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(wait_until_closed, handle, outcome)
            await anyio.sleep(0.05)
            handle.close()
    assert len(outcome) == 1
    assert running(child.pid)


async def test_close_while_waiting_says_what_happened(spawn) -> None:
    child = spawn(SLEEP)
    handle = AsyncPidFd.from_pid(child.pid)
    caught: list[anyio.ClosedResourceError] = []

    async def waiter() -> None:
        try:
            await handle.wait()
        except anyio.ClosedResourceError as exc:
            caught.append(exc)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await anyio.wait_all_tasks_blocked()
            handle.close()
    assert len(caught) == 1
    assert str(caught[0]) == (
        f"AsyncPidFd (pid {child.pid}) was closed while this task awaited the "
        f"process's exit; this wait reaped nothing"
    )
    assert running(child.pid)


async def test_wait_timeout_raises_and_leaves_child_unreaped(spawn) -> None:
    child = spawn(SLEEP)
    async with AsyncPidFd.from_pid(child.pid) as handle:
        with anyio.fail_after(10), pytest.raises(TimeoutError) as excinfo:
            await handle.wait(timeout=0.05)
        assert str(excinfo.value) == (
            f"pid {child.pid} was still running after the 0.05s timeout; it has not been reaped"
        )
        assert running(child.pid)
        for timeout in (0, -1, -0.5, 0.05):
            # The sync call's message, word for word.
            for wait in (handle.wait, handle.wait_exit):
                with pytest.raises(TimeoutError) as async_error:
                    await wait(timeout=timeout)
                sync_wait = getattr(handle.sync, wait.__name__)
                with pytest.raises(TimeoutError) as sync_error:
                    sync_wait(timeout=timeout)
                assert str(async_error.value) == str(sync_error.value)
        assert running(child.pid)
        handle.kill()
        info = await handle.wait(timeout=30)  # still usable, and reaps
        assert info.status.signal == signal.SIGKILL


async def test_wait_timeout_returns_the_exit_in_time(spawn) -> None:
    child = spawn("raise SystemExit(4)")
    async with AsyncPidFd.from_pid(child.pid) as handle:
        assert (await handle.wait(timeout=30)).status.code == 4
    child = spawn("raise SystemExit(5)")
    async with AsyncPidFd.from_pid(child.pid) as handle:
        while handle.is_alive():
            await anyio.sleep(0.01)
        assert (await handle.wait(timeout=0)).status.code == 5
    child = spawn("raise SystemExit(6)")
    async with AsyncPidFd.from_pid(child.pid) as handle:
        assert await handle.wait_exit(timeout=30) == ExitStatus.from_waitstatus(6 << 8)
        assert await handle.wait_exit(timeout=0) == ExitStatus.from_waitstatus(6 << 8)
        assert (await handle.wait(timeout=float("inf"))).status.code == 6


@pytest.mark.parametrize("bad", ["1", b"1", [1], object()])
async def test_wait_timeout_type_and_nan_errors_are_the_sync_ones(spawn, bad: object) -> None:
    child = spawn(SLEEP)
    async with AsyncPidFd.from_pid(child.pid) as handle:
        with pytest.raises(TypeError) as async_error:
            await handle.wait(timeout=bad)  # type: ignore[arg-type]
        with pytest.raises(TypeError) as sync_error:
            handle.sync.wait(timeout=bad)  # type: ignore[arg-type]
        assert str(async_error.value) == str(sync_error.value)
        with pytest.raises(ValueError, match="NaN"):
            await handle.wait(timeout=float("nan"))
        assert running(child.pid)


async def test_sync_calls_mirror_pidfd(spawn) -> None:
    child = spawn(SLEEP)
    async with AsyncPidFd.from_pid(child.pid) as handle:
        assert handle.pid == child.pid
        assert isinstance(handle.sync, PidFd)
        assert handle.fileno() == handle.sync.fileno()
        assert handle.try_wait() is None
        assert handle.is_alive()
        handle.send_signal(signal.SIGUSR1)
        assert (await handle.wait()).status.signal == signal.SIGUSR1
    assert handle.closed
    assert handle.pid == child.pid
    with pytest.raises(ValueError, match="closed"):
        await handle.wait()
    with pytest.raises(ValueError, match="closed"):
        handle.fileno()


@pytest.mark.parametrize(
    ("method", "sig"), [("kill", signal.SIGKILL), ("terminate", signal.SIGTERM)]
)
async def test_kill_and_terminate(spawn, method: str, sig: int) -> None:
    child = spawn(SLEEP)
    with AsyncPidFd.from_pid(child.pid) as handle:
        getattr(handle, method)()
        assert (await handle.wait()).status.signal == sig


async def test_bad_pid_errors_match_sync() -> None:
    with pytest.raises(ValueError):
        AsyncPidFd.from_pid(0)
    with pytest.raises(TypeError):
        AsyncPidFd.from_pid("1")  # type: ignore[arg-type]
    with pytest.raises(OverflowError):
        AsyncPidFd.from_pid(2**64 + 1)


async def test_many_children_one_loop(spawn) -> None:
    children = [spawn(f"raise SystemExit({i})") for i in range(50)]
    codes: dict[int, int | None] = {}

    async def one(i: int, pid: int) -> None:
        async with AsyncPidFd.from_pid(pid) as handle:
            codes[i] = (await handle.wait()).status.code

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for i, child in enumerate(children):
                tg.start_soon(one, i, child.pid)
    assert codes == {i: i for i in range(50)}


def test_asyncio_task_cancel_then_rewait(spawn) -> None:
    child = spawn("import time; time.sleep(0.3)")

    async def main() -> ExitInfo:
        handle = AsyncPidFd.from_pid(child.pid)
        task = asyncio.ensure_future(handle.wait())
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert running(child.pid)
        try:
            return await asyncio.wait_for(handle.wait(), 10)
        finally:
            handle.close()

    assert asyncio.run(main()).status.success


def os_threads() -> int:
    return len(os.listdir("/proc/self/task"))


@pytest.mark.parametrize("runner", ["asyncio", "trio"])
def test_no_helper_thread_while_waiting(spawn, runner: str) -> None:
    # Plain asyncio.run / trio.run: anyio's pytest runner for trio uses guest
    # mode, which has an I/O thread of its own and would blur the count.
    children = [spawn("import time; time.sleep(0.3)") for _ in range(20)]
    counts: list[int] = []

    async def main() -> list[int | None]:
        before = os_threads()
        handles = [AsyncPidFd.from_pid(c.pid) for c in children]
        results: list[int | None] = []

        async def one(handle: AsyncPidFd) -> None:
            results.append((await handle.wait()).status.code)
            counts.append(os_threads() - before)

        async with anyio.create_task_group() as tg:
            for handle in handles:
                tg.start_soon(one, handle)
            await anyio.sleep(0.1)
            counts.append(os_threads() - before)
        for handle in handles:
            handle.close()
        return results

    if runner == "asyncio":
        results = asyncio.run(main())
    else:
        trio = pytest.importorskip("trio")
        results = trio.run(main)
    assert results == [0] * 20
    assert counts and max(counts) == 0


def test_wrapping_requires_a_pidfd() -> None:
    with pytest.raises(TypeError, match="PidFd"):
        AsyncPidFd(3)  # type: ignore[arg-type]


def test_repr(spawn) -> None:
    child = spawn(SLEEP)
    with AsyncPidFd.from_pid(child.pid) as handle:
        assert repr(handle).startswith(f"<AsyncPidFd pid={child.pid} fd=")
    assert sys.modules["pidfd"].AsyncPidFd is AsyncPidFd
