"""Cancellation of ``AsyncPidFd.wait()`` at each of its await points.

``wait()`` can be cancelled (1) before it takes its lock, (2) while it queues
for the lock behind another waiter, and (3) while it awaits readability. Each
case must leave the child unreaped, leak no fd, and let a later ``wait()``
return the status. A cancellation that lands once the child has exited must
not lose the status either: a task either gets the ``ExitInfo`` or is
cancelled with the child still reapable.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest
import trio

import pidfd as pidfd_mod
from _helpers import (
    Children,
    fd_target,
    is_pidfd_link,
    is_running,
    is_unreaped,
    open_fds,
    wait_until_closed,
    wait_zombie,
)
from pidfd import AsyncPidFd, ExitInfo

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


# --- anyio: each cancellation style at the readability await point ---------


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


# --- closing the handle under a waiting task ---------------------------------


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


# --- plain asyncio and trio, without the anyio plugin ------------------------


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


# -- issue 22: leaving run_process / open_process on a cancellation kills the child --

_STUBBORN = ["sh", "-c", "trap '' TERM INT; exec sleep 30"]


def _assert_reaped(pid: int) -> None:
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


async def _run_recording(pids: list[int]) -> None:
    async with await pidfd_mod.open_process(_STUBBORN) as proc:
        pids.append(proc.pid)
        await proc.wait()


@pytest.mark.parametrize("way", ["cancel", "wait_for", "timeout", "move_on_after", "fail_after"])
def test_asyncio_cancellation_kills_a_stubborn_child(way: str) -> None:
    pids: list[int] = []

    async def main() -> None:
        if way == "cancel":
            task = asyncio.ensure_future(_run_recording(pids))
            await asyncio.sleep(0.2)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        elif way == "wait_for":
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(_run_recording(pids), 0.2)
        elif way == "timeout":
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.2):
                    await _run_recording(pids)
        elif way == "move_on_after":
            with anyio.move_on_after(0.2):
                await _run_recording(pids)
        else:
            with pytest.raises(TimeoutError):
                with anyio.fail_after(0.2):
                    await _run_recording(pids)

    start = time.monotonic()
    asyncio.run(main())
    assert time.monotonic() - start < 10  # the child sleeps 30 s
    assert len(pids) == 1
    _assert_reaped(pids[0])


def test_asyncio_wait_for_run_process_kills_a_stubborn_child() -> None:
    async def main() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(pidfd_mod.run_process(_STUBBORN), 0.2)

    start = time.monotonic()
    asyncio.run(main())
    assert time.monotonic() - start < 10


def test_trio_move_on_after_kills_a_stubborn_child() -> None:
    pids: list[int] = []

    async def main() -> None:
        with trio.move_on_after(0.2):
            await _run_recording(pids)

    trio.run(main)
    _assert_reaped(pids[0])


def test_keyboard_interrupt_in_block_kills_a_stubborn_child() -> None:
    pids: list[int] = []

    async def main() -> None:
        async with await pidfd_mod.open_process(_STUBBORN) as proc:
            pids.append(proc.pid)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        asyncio.run(main())
    _assert_reaped(pids[0])


SIGINT_SCRIPT = """
import asyncio, os, sys
import pidfd

# The grandchild prints its pid on our stdout (inherited), then ignores the
# signals a polite teardown would send.
command = ["sh", "-c", "echo $$; trap '' TERM INT; exec sleep 30"]
try:
    asyncio.run(pidfd.run_process(command, stdout=None))
except KeyboardInterrupt:
    try:
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        print("a child is left", flush=True)
    except ChildProcessError:
        print("no child left", flush=True)
    raise
"""


def test_real_sigint_under_asyncio_run_kills_and_reaps_a_stubborn_child() -> None:
    # Ctrl-C as a terminal delivers it: a real SIGINT to a process inside
    # asyncio.run(run_process(...)), whose child ignores SIGINT and SIGTERM.
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-c", SIGINT_SCRIPT],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        grandchild = int(proc.stdout.readline())
        # Running, and its parent has not reaped it: the pid is still its own.
        with pidfd_mod.PidFd.from_pid(grandchild) as handle:
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=20)  # the grandchild sleeps 30 s
            assert proc.returncode == -signal.SIGINT, err
            assert "KeyboardInterrupt" in err
            assert out == "no child left\n", err  # killed, and reaped by its parent
            assert not handle.is_alive()
    finally:
        if proc.poll() is None:  # pragma: no cover - the bug case
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
