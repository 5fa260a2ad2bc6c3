"""`AsyncPidFd` on asyncio and trio (through anyio), and under plain asyncio.run:
waits, cancellation at each of wait()'s await points, close() under a waiting
task (from the loop or another thread), calls on a closed handle, and the slow
soak and thousands of concurrent waiters (``PIDFD_STRESS_WAITERS``)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest
import trio

import _helpers as rh
from _helpers import (
    SOAK_BATCH,
    SOAK_CYCLES,
    Accounting,
    Children,
    fd_target,
    is_pidfd_link,
    is_running,
    is_unreaped,
    nofile_at_least,
    open_fds,
    reaping_all,
    spawn_true,
    wait_until_closed,
    wait_zombie,
)
from pidfd import AsyncPidFd, ExitInfo, ExitStatus, PidFd

pytestmark = pytest.mark.anyio

SLEEP = "import time; time.sleep(30)"


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
        assert is_running(child.pid)
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
    assert is_running(child.pid)


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
    assert is_running(child.pid)


async def test_wait_timeout_raises_and_leaves_child_unreaped(spawn) -> None:
    child = spawn(SLEEP)
    async with AsyncPidFd.from_pid(child.pid) as handle:
        with anyio.fail_after(10), pytest.raises(TimeoutError) as excinfo:
            await handle.wait(timeout=0.05)
        assert str(excinfo.value) == (
            f"pid {child.pid} was still running after the 0.05s timeout; it has not been reaped"
        )
        assert is_running(child.pid)
        for timeout in (0, -1, -0.5, 0.05):
            # The sync call's message, word for word.
            for wait in (handle.wait, handle.wait_exit):
                with pytest.raises(TimeoutError) as async_error:
                    await wait(timeout=timeout)
                sync_wait = getattr(handle.sync, wait.__name__)
                with pytest.raises(TimeoutError) as sync_error:
                    sync_wait(timeout=timeout)
                assert str(async_error.value) == str(sync_error.value)
        assert is_running(child.pid)
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
        assert is_running(child.pid)


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
        assert is_running(child.pid)
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


# -- cancellation at each await point, on anyio ----------------------------------------


# wait() can be cancelled (1) before it takes its lock, (2) while it queues
# for the lock behind another waiter, and (3) while it awaits readability. Each
# case must leave the child unreaped, leak no fd, and let a later wait()
# return the status. A cancellation that lands once the child has exited must
# not lose the status either: a task either gets the ExitInfo or is
# cancelled with the child still reapable.

# Long enough for a task to reach its await point on a loaded machine.
SETTLE = 0.1


async def _blocked_on_lock(h: AsyncPidFd) -> None:
    """Yield until some task holds ``h``'s lock and waits on the fd."""
    with anyio.fail_after(5):
        while not h._waiting:
            await anyio.sleep(0.001)


async def _reaps_after_kill(h: AsyncPidFd, pid: int) -> None:
    """The handle still works: kill the child, and wait() returns its status."""
    assert is_unreaped(pid)
    h.kill()
    with anyio.fail_after(10):
        info = await h.wait()
    assert info.pid == pid
    assert info.status.signal == signal.SIGKILL
    assert not is_unreaped(pid)


async def _cancel_move_on_after(h: AsyncPidFd) -> None:
    with anyio.move_on_after(SETTLE) as scope:
        await h.wait()
    assert scope.cancelled_caught


async def _cancel_fail_after(h: AsyncPidFd) -> None:
    with pytest.raises(TimeoutError), anyio.fail_after(SETTLE):
        await h.wait()


async def _cancel_task_group(h: AsyncPidFd) -> None:
    reached: list[bool] = []

    async def waiter() -> None:
        reached.append(True)
        await h.wait()
        raise AssertionError("wait() returned on a running child")

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await _blocked_on_lock(h)
        tg.cancel_scope.cancel()
    assert reached


async def _cancel_scope_cancel(h: AsyncPidFd) -> None:
    async with anyio.create_task_group() as tg:
        scope = anyio.CancelScope()

        async def waiter() -> None:
            with scope:
                await h.wait()

        tg.start_soon(waiter)
        await _blocked_on_lock(h)
        scope.cancel()
    assert scope.cancelled_caught


ANYIO_STYLES: dict[str, Callable[[AsyncPidFd], Awaitable[None]]] = {
    "move_on_after": _cancel_move_on_after,
    "fail_after": _cancel_fail_after,
    "task_group": _cancel_task_group,
    "cancel_scope": _cancel_scope_cancel,
}


@pytest.mark.anyio
@pytest.mark.parametrize("style", list(ANYIO_STYLES))
async def test_cancel_while_awaiting_readability(style: str, children: Children) -> None:
    pid = children.sleep(30)
    async with AsyncPidFd.from_pid(pid) as h:
        fds = open_fds()
        await ANYIO_STYLES[style](h)
        assert is_running(pid)
        assert open_fds() == fds
        assert not h._busy
        await _reaps_after_kill(h, pid)


@pytest.mark.anyio
async def test_cancel_before_the_lock_keeps_exited_child_reapable(children: Children) -> None:
    """Already cancelled when wait() starts, and the child is already a zombie:
    the status must end up with the caller or stay in the kernel."""
    pid = children.exited(code=3)
    async with AsyncPidFd.from_pid(pid) as h:
        fds = open_fds()
        got: list[ExitInfo] = []
        with anyio.CancelScope() as scope:
            scope.cancel()
            got.append(await h.wait())
        assert open_fds() == fds
        if got:
            assert got[0].status.code == 3
        else:
            # Cancelled at the first checkpoint, before reaping.
            assert is_unreaped(pid)
            with anyio.fail_after(5):
                assert (await h.wait()).status.code == 3
        assert not is_unreaped(pid)


@pytest.mark.anyio
async def test_cancel_before_the_lock_on_running_child(children: Children) -> None:
    pid = children.sleep(30)
    async with AsyncPidFd.from_pid(pid) as h:
        fds = open_fds()
        with anyio.CancelScope() as scope:
            scope.cancel()
            await h.wait()
        assert scope.cancelled_caught
        assert open_fds() == fds
        await _reaps_after_kill(h, pid)


@pytest.mark.anyio
async def test_cancel_while_queued_for_the_lock(children: Children) -> None:
    """Task B waits behind task A; cancelling B leaves A waiting and unharmed."""
    pid = children.sleep(30)
    async with AsyncPidFd.from_pid(pid) as h:
        fds = open_fds()
        results: dict[str, Any] = {}

        async def waiter(name: str, scope: anyio.CancelScope) -> None:
            with scope:
                results[name] = await h.wait()

        a, b = anyio.CancelScope(), anyio.CancelScope()
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter, "a", a)
            await _blocked_on_lock(h)
            tg.start_soon(waiter, "b", b)
            await anyio.sleep(SETTLE)
            assert h._idle.statistics().tasks_waiting == 1
            b.cancel()
            await anyio.sleep(SETTLE)
            assert b.cancelled_caught
            assert h._idle.statistics().tasks_waiting == 0
            assert is_running(pid)
            h.kill()
        assert results["a"].status.signal == signal.SIGKILL
        assert "b" not in results
        assert open_fds() == fds


@pytest.mark.anyio
async def test_cancel_both_queued_and_holder_then_wait_again(children: Children) -> None:
    pid = children.sleep(30)
    async with AsyncPidFd.from_pid(pid) as h:
        fds = open_fds()
        async with anyio.create_task_group() as tg:
            tg.start_soon(h.wait)
            await _blocked_on_lock(h)
            tg.start_soon(h.wait)
            await anyio.sleep(SETTLE)
            tg.cancel_scope.cancel()
        assert open_fds() == fds
        assert not h._busy
        await _reaps_after_kill(h, pid)


@pytest.mark.anyio
async def test_many_waiters_one_status_rest_child_process_error(children: Children) -> None:
    pid = children.sleep(0.3)
    async with AsyncPidFd.from_pid(pid) as h:
        outcomes: list[object] = []

        async def waiter() -> None:
            try:
                outcomes.append(await h.wait())
            except ChildProcessError as e:
                outcomes.append(e)

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for _ in range(5):
                    tg.start_soon(waiter)
        infos = [o for o in outcomes if isinstance(o, ExitInfo)]
        assert len(infos) == 1
        assert infos[0].status.code == 0
        assert len(outcomes) == 5


# -- closing the handle under a waiting task -------------------------------------------


async def _park_waiters(
    tg: anyio.abc.TaskGroup, h: AsyncPidFd, errors: list[BaseException], queued: bool
) -> None:
    """Start a task waiting on ``h`` (it holds the lock) and, if ``queued``, a
    second one behind it; each records the error a close under it raises."""
    tg.start_soon(wait_until_closed, h, errors)
    await _blocked_on_lock(h)
    if queued:
        tg.start_soon(wait_until_closed, h, errors)
        await anyio.sleep(SETTLE)


@pytest.mark.anyio
@pytest.mark.parametrize("queued", [False, True], ids=["holder", "holder+queued"])
async def test_close_wakes_waiting_tasks(queued: bool, children: Children) -> None:
    pid = children.sleep(30)
    h = AsyncPidFd.from_pid(pid)
    errors: list[BaseException] = []
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await _park_waiters(tg, h, errors, queued)
            h.close()
    assert len(errors) == (2 if queued else 1)
    assert h.closed
    # The child was not touched: still running, still ours to reap.
    assert is_running(pid)


@pytest.mark.anyio
async def test_close_wakes_wait_exit(children: Children) -> None:
    pid = children.sleep(30)
    h = AsyncPidFd.from_pid(pid)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:

            async def waiter() -> None:
                with pytest.raises((ValueError, anyio.ClosedResourceError)):
                    await h.wait_exit()

            tg.start_soon(waiter)
            await _blocked_on_lock(h)
            h.close()
    assert is_running(pid)


@pytest.mark.anyio
@pytest.mark.parametrize("queued", [False, True], ids=["holder", "holder+queued"])
async def test_close_from_another_thread_wakes_waiting_tasks(
    queued: bool, children: Children
) -> None:
    """A supervisor thread closes the handle: the event loop must hear of it
    (else the waiter hangs and the loop watches a closed, reusable number)."""
    pid = children.sleep(30)
    h = AsyncPidFd.from_pid(pid)
    number = h.fileno()
    errors: list[BaseException] = []
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await _park_waiters(tg, h, errors, queued)
            await anyio.to_thread.run_sync(h.close)
            assert h.closed
            assert not is_pidfd_link(fd_target(number))
    assert len(errors) == (2 if queued else 1)
    assert is_running(pid)


# -- cancellation under plain asyncio and trio, without the anyio plugin ---------------


async def _cancel(task: asyncio.Future[Any]) -> None:
    """Cancel ``task`` and see it end in ``CancelledError``."""
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def _asyncio_task_cancel(h: AsyncPidFd) -> None:
    async def main() -> None:
        task = asyncio.ensure_future(h.wait())
        await asyncio.sleep(SETTLE)
        assert h._waiting
        await _cancel(task)

    asyncio.run(main())


def _asyncio_wait_for(h: AsyncPidFd) -> None:
    async def main() -> None:
        with pytest.raises((asyncio.TimeoutError, TimeoutError)):
            await asyncio.wait_for(h.wait(), SETTLE)

    asyncio.run(main())


def _asyncio_cancel_queued(h: AsyncPidFd) -> None:
    async def main() -> None:
        first = asyncio.ensure_future(h.wait())
        await asyncio.sleep(SETTLE)
        second = asyncio.ensure_future(h.wait())
        await asyncio.sleep(SETTLE)
        await _cancel(second)
        assert not first.done()
        await _cancel(first)

    asyncio.run(main())


def _trio_move_on_after(h: AsyncPidFd) -> None:
    async def main() -> None:
        with trio.move_on_after(SETTLE) as scope:
            await h.wait()
        assert scope.cancelled_caught

    trio.run(main)


def _trio_nursery_cancel(h: AsyncPidFd) -> None:
    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(h.wait)
            nursery.start_soon(h.wait)
            await trio.sleep(SETTLE)
            nursery.cancel_scope.cancel()

    trio.run(main)


PLAIN: dict[str, Callable[[AsyncPidFd], None]] = {
    "asyncio-task.cancel": _asyncio_task_cancel,
    "asyncio-wait_for": _asyncio_wait_for,
    "asyncio-cancel-queued": _asyncio_cancel_queued,
    "trio-move_on_after": _trio_move_on_after,
    "trio-nursery-cancel": _trio_nursery_cancel,
}


@pytest.mark.thread_unsafe(reason="counts the fds of the whole process")
@pytest.mark.parametrize("style", list(PLAIN))
def test_plain_loop_cancellation(style: str, children: Children) -> None:
    pid = children.sleep(30)
    # Opened outside any loop, so the same handle serves both runs below.
    with AsyncPidFd.from_pid(pid) as h:
        fds = open_fds()
        PLAIN[style](h)
        assert is_running(pid)
        assert open_fds() == fds
        h.kill()
        run = trio.run if style.startswith("trio") else lambda f: asyncio.run(f())
        info = run(h.wait)
        assert info.status.signal == signal.SIGKILL


def test_asyncio_cancel_after_exit_never_loses_the_status(children: Children) -> None:
    """Cancel in the very iteration the pidfd turns readable."""

    async def main() -> None:
        for _ in range(20):
            pid = children.sleep(30)
            async with AsyncPidFd.from_pid(pid) as h:
                task = asyncio.ensure_future(h.wait())
                await asyncio.sleep(0.02)
                os.kill(pid, signal.SIGKILL)
                # Block the loop until the child is a zombie: the fd is now
                # readable and the reader callback will fire next iteration.
                wait_zombie(pid)
                task.cancel()
                try:
                    info = await task
                except asyncio.CancelledError:
                    assert is_unreaped(pid)
                    info = await h.wait()
                assert info.status.signal == signal.SIGKILL
                assert not is_unreaped(pid)

    asyncio.run(main())


def test_trio_cancel_after_exit_never_loses_the_status(children: Children) -> None:
    async def main() -> None:
        for _ in range(20):
            pid = children.sleep(30)
            async with AsyncPidFd.from_pid(pid) as h:
                got: list[ExitInfo] = []
                async with trio.open_nursery() as nursery:

                    async def waiter(h: AsyncPidFd, got: list[ExitInfo]) -> None:
                        got.append(await h.wait())

                    nursery.start_soon(waiter, h, got)
                    await trio.sleep(0.02)
                    os.kill(pid, signal.SIGKILL)
                    wait_zombie(pid)
                    nursery.cancel_scope.cancel()
                if not got:
                    assert is_unreaped(pid)
                    got.append(await h.wait())
                assert got[0].status.signal == signal.SIGKILL
                assert not is_unreaped(pid)

    trio.run(main)


def _run_in(kind: str, fn: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(fn()) if kind == "asyncio" else trio.run(fn)  # type: ignore[arg-type]


@pytest.mark.parametrize("first", ["asyncio", "trio"])
@pytest.mark.parametrize("then", ["asyncio", "trio"])
@pytest.mark.parametrize("made", ["outside", "inside"])
def test_handle_reused_across_event_loops(
    first: str, then: str, made: str, children: Children
) -> None:
    """A handle cancelled in one run (and backend) still works in the next,
    whether it was opened outside any loop or inside the first one."""
    pid = children.sleep(30)

    async def open_handle() -> AsyncPidFd:
        return AsyncPidFd.from_pid(pid)

    h = AsyncPidFd.from_pid(pid) if made == "outside" else _run_in(first, open_handle)
    with h:

        async def cancelled_wait() -> None:
            with anyio.move_on_after(SETTLE):
                await h.wait()

        _run_in(first, cancelled_wait)
        assert is_running(pid)
        h.kill()

        async def wait() -> ExitInfo:
            with anyio.fail_after(10):
                return await h.wait()

        assert _run_in(then, wait).status.signal == signal.SIGKILL


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_close_from_another_thread_at_any_moment(backend: str, children: Children) -> None:
    """close() from a supervisor thread just before, during or after a loop
    thread starts waiting: the wait always ends, with one of the documented
    errors, and the child is never touched."""
    pid = children.sleep(30)
    outcomes: dict[str, int] = {}
    for i in range(150):
        h = AsyncPidFd.from_pid(pid)
        started = threading.Event()
        result: list[str] = []

        async def main(
            h: AsyncPidFd = h, started: threading.Event = started, result: list[str] = result
        ) -> None:
            started.set()
            try:
                with anyio.fail_after(5):
                    await h.wait()
            except (ValueError, anyio.ClosedResourceError, TimeoutError) as e:
                result.append(type(e).__name__)

        loop_thread = threading.Thread(target=anyio.run, args=(main,), kwargs={"backend": backend})
        loop_thread.start()
        started.wait()
        # Spin (not sleep) for 0-200 us to land all around the registration.
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < (i % 20) * 1e-5:
            pass
        h.close()
        loop_thread.join(10)
        assert not loop_thread.is_alive()
        (kind,) = result
        outcomes[kind] = outcomes.get(kind, 0) + 1
    assert "TimeoutError" not in outcomes, outcomes
    assert is_running(pid)


def test_close_from_another_thread_while_the_waiters_loop_is_stopped(
    children: Children,
) -> None:
    """An asyncio loop stopped with a waiter still pending never runs a close
    handed to it: close() from another thread must not wait for it forever."""
    pid = children.sleep(30)
    h = AsyncPidFd.from_pid(pid)
    loop = asyncio.new_event_loop()
    try:
        task = loop.create_task(h.wait())
        loop.run_until_complete(asyncio.sleep(SETTLE))
        assert h._waiting and not loop.is_running()
        closer = threading.Thread(target=h.close)
        closer.start()
        closer.join(10)
        assert not closer.is_alive(), "close() from another thread hung"
        assert h.closed
        task.cancel()
        loop.run_until_complete(asyncio.gather(task, return_exceptions=True))
    finally:
        loop.close()
    assert is_running(pid)


# -- closed handles, every call --------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    ["fileno", "try_wait", "send_signal", "kill", "terminate", "is_alive", "info", "getfd"],
)
def test_closed_async_handle_raises_value_error(call: str, children: Children) -> None:
    pid = children.sleep(30)
    a = AsyncPidFd.from_pid(pid)
    a.close()
    args = (0,) if call in ("send_signal", "getfd") else ()
    with pytest.raises(ValueError, match="closed"):
        getattr(a, call)(*args)
    assert a.pid == pid
    assert a.closed
    a.close()


@pytest.mark.parametrize("method", ["wait", "wait_exit"])
def test_closed_async_handle_awaits_raise_value_error(method: str, children: Children) -> None:
    pid = children.sleep(30)
    a = AsyncPidFd.from_pid(pid)
    a.close()

    async def main() -> None:
        with pytest.raises(ValueError, match="closed"):
            await getattr(a, method)()

    asyncio.run(main())


def test_async_pidfd_wraps_only_pidfd() -> None:
    for bad in (None, 1, "1", object()):
        with pytest.raises(TypeError):
            AsyncPidFd(bad)  # type: ignore[arg-type]


# -- soak and thousands of waiters (slow) ----------------------------------------------


STRESS_WAITERS = int(os.environ.get("PIDFD_STRESS_WAITERS", "200"))


async def _async_cycle(pid: int, k: int) -> None:
    async with AsyncPidFd.from_pid(pid) as h:
        if k % 3 == 1:
            status = await h.wait_exit()
            assert status is not None
            assert status.code == 0
        elif k % 3 == 2:
            # Cancelled once before the status is collected.
            with anyio.CancelScope() as scope:
                scope.cancel()
                await h.wait()
        info = await h.wait()
        assert info.status.code == 0


@pytest.mark.anyio
@pytest.mark.slow
async def test_async_soak_no_fd_or_memory_leak(anyio_backend: str) -> None:
    async def batch(pids: list[int], first: int) -> None:
        async with anyio.create_task_group() as tg:
            for i, pid in enumerate(pids):
                tg.start_soon(_async_cycle, pid, first + i)

    pids = spawn_true(SOAK_BATCH)
    with reaping_all(pids):
        await batch(pids, 0)
    acct = Accounting(f"async soak ({anyio_backend})")
    done = 0
    with anyio.fail_after(max(60.0, SOAK_CYCLES / 50)):
        while done < SOAK_CYCLES:
            pids = spawn_true(min(SOAK_BATCH, SOAK_CYCLES - done))
            with reaping_all(pids):
                await batch(pids, done)
            done += len(pids)
    acct.check(done)


@pytest.mark.anyio
@pytest.mark.slow
async def test_thousands_of_concurrent_async_waiters(anyio_backend: str) -> None:
    n = STRESS_WAITERS
    # Every child blocks reading one shared pipe; closing our end lets them
    # all exit at once, while every waiter is parked on its own pidfd.
    r, w = os.pipe()
    pids: list[int] = []
    with nofile_at_least(n + 256), reaping_all(pids):
        try:
            cat = rh.spawn_path("cat")
            for _ in range(n):
                pids.append(
                    os.posix_spawn(
                        cat, [cat], os.environ, file_actions=[(os.POSIX_SPAWN_DUP2, r, 0)]
                    )
                )
        finally:
            os.close(r)
        fds = open_fds() - {w}  # w is closed below
        handles = [AsyncPidFd.from_pid(pid) for pid in pids]
        results: dict[int, int | None] = {}

        async def waiter(h: AsyncPidFd) -> None:
            results[h.pid] = (await h.wait()).status.code

        start = time.monotonic()
        try:
            with anyio.fail_after(120):
                async with anyio.create_task_group() as tg:
                    for h in handles:
                        tg.start_soon(waiter, h)
                    # Let every task park on its fd before releasing them.
                    while sum(h._waiting for h in handles) < n:
                        await anyio.sleep(0.01)
                    assert not results
                    os.close(w)
                    w = -1
        finally:
            if w >= 0:
                os.close(w)
            for h in handles:
                h.close()
        elapsed = time.monotonic() - start
        print(f"{n} concurrent async waiters ({anyio_backend}): all reaped in {elapsed:.2f} s")
        assert results == dict.fromkeys(pids, 0)
        assert all(not rh.is_unreaped(pid) for pid in pids)
        assert open_fds() == fds
