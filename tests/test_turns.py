"""The event loop's spawn turns (`pidfd._turns`), with stand-in spawns.

Each stand-in "spawn" records itself and returns a token; its requester
says when the "child" has exec'd (`exec_done`). What is held: first come,
first spawned, each in its requester's context; never more children before
exec than the bound, yet a child that never execs does not stop the queue;
a cancelled request either never runs or has what it made abandoned; an
error reaches its own requester only. Counted, never timed.
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from pidfd import _turns

pytestmark = pytest.mark.anyio

WHO: contextvars.ContextVar[int] = contextvars.ContextVar("who", default=-1)


class Spawns:
    """Stand-in spawns: ``ran`` holds (request, context value) in call order."""

    def __init__(self) -> None:
        self.ran: list[tuple[int, int]] = []
        self.abandoned: list[int] = []
        self.before_exec = 0
        self.most_before_exec = 0
        self.fail: set[int] = set()

    def call(self, i: int) -> int:
        if i in self.fail:
            raise ValueError(f"request {i} refused")
        self.ran.append((i, WHO.get()))
        self.before_exec += 1
        self.most_before_exec = max(self.most_before_exec, self.before_exec)
        return i

    def exec_done(self) -> None:
        self.before_exec -= 1
        _turns.exec_done()

    async def abandon(self, token: int) -> None:
        self.abandoned.append(token)
        self.before_exec -= 1


def set_limit(n: int) -> list[tuple[Any, int]]:
    turns = _turns._turns()
    old = turns.limit
    turns.limit = n
    return [(turns, old)]


def restore(saved: list[tuple[Any, int]]) -> None:
    for turns, old in saved:
        assert not turns.queue and turns.in_flight == 0, (list(turns.queue), turns.in_flight)
        assert turns.driver is None and turns.watcher is None
        turns.limit = old


async def run_all(one: Callable[[int], Awaitable[None]], n: int, limit: int) -> None:
    """``one(i)`` for each ``i < n``, started at once, with ``limit``
    children before exec at most."""
    saved = set_limit(limit)
    try:
        async with anyio.create_task_group() as tg:
            for i in range(n):
                tg.start_soon(one, i)
    finally:
        restore(saved)


async def test_first_come_first_spawned_each_in_its_own_context() -> None:
    spawns = Spawns()
    arrived: list[int] = []

    async def one(i: int) -> None:
        WHO.set(i)
        arrived.append(i)  # no checkpoint between this and the queue
        await _turns.in_turn(spawns.call, (i,), spawns.abandon)
        await anyio.lowlevel.checkpoint()
        spawns.exec_done()

    await run_all(one, 300, limit=1000)
    assert [i for i, _ in spawns.ran] == arrived
    assert all(i == who for i, who in spawns.ran)


async def test_never_more_children_before_exec_than_the_bound() -> None:
    spawns = Spawns()

    async def one(i: int) -> None:
        await _turns.in_turn(spawns.call, (i,), spawns.abandon)
        for _ in range(i % 4):  # the "execs" finish out of order
            await anyio.lowlevel.checkpoint()
        spawns.exec_done()

    await run_all(one, 100, limit=3)
    assert len(spawns.ran) == 100
    assert spawns.most_before_exec == 3


async def test_a_child_that_never_execs_does_not_stop_the_queue() -> None:
    """The bound is reached by a child stuck before exec: after STUCK
    seconds without progress the next spawn runs anyway."""
    spawns = Spawns()
    saved = set_limit(1)
    stuck = await _turns.in_turn(spawns.call, (0,), spawns.abandon)
    try:
        with anyio.fail_after(10):
            after = await _turns.in_turn(spawns.call, (1,), spawns.abandon)
        assert (stuck, after) == (0, 1)
        spawns.exec_done()
        spawns.exec_done()
    finally:
        restore(saved)


async def wait_queued(n: int) -> None:
    with anyio.fail_after(10):
        while len(_turns._turns().queue) < n:
            await anyio.lowlevel.checkpoint()


async def test_cancelled_while_queued_never_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_turns, "STUCK", 3600.0)  # the held place stays held
    spawns = Spawns()
    saved = set_limit(1)
    scope = anyio.CancelScope()

    async def queued() -> None:
        with scope:
            await _turns.in_turn(spawns.call, (1,), spawns.abandon)

    try:
        await _turns.in_turn(spawns.call, (0,), spawns.abandon)  # holds the place
        async with anyio.create_task_group() as tg:
            tg.start_soon(queued)
            await wait_queued(1)
            scope.cancel()
        assert scope.cancelled_caught
        spawns.exec_done()
        await _turns.in_turn(spawns.call, (2,), spawns.abandon)
        spawns.exec_done()
    finally:
        restore(saved)
    assert [i for i, _ in spawns.ran] == [0, 2]
    assert spawns.abandoned == []


async def test_cancelled_after_its_spawn_ran_abandons_what_it_made(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two queued requests are run by another task (an exec that makes room
    runs the queue at once while the slice is open), and each spawn cancels
    its own requester before it resumes: what each made is abandoned."""
    monkeypatch.setattr(_turns, "STUCK", 3600.0)
    spawns = Spawns()
    saved = set_limit(1)
    scopes = {1: anyio.CancelScope(), 2: anyio.CancelScope()}

    def call(i: int) -> int:
        scopes[i].cancel()  # its requester will resume cancelled
        return spawns.call(i)

    async def queued(i: int) -> None:
        with scopes[i]:
            await _turns.in_turn(call, (i,), spawns.abandon)
            spawns.exec_done()  # pragma: no cover - cancelled above

    try:
        await _turns.in_turn(spawns.call, (0,), spawns.abandon)  # holds the place
        async with anyio.create_task_group() as tg:
            tg.start_soon(queued, 1)
            tg.start_soon(queued, 2)
            await wait_queued(2)
            turns = _turns._turns()
            turns.limit = 2
            turns.slice_end = _turns._perf() + 3600  # the slice is open
            spawns.exec_done()  # runs both queued spawns here, at once
            assert [i for i, _ in spawns.ran] in ([0, 1, 2], [0, 2, 1])
    finally:
        restore(saved)
    assert all(scope.cancelled_caught for scope in scopes.values())
    assert sorted(spawns.abandoned) == [1, 2] and spawns.before_exec == 0


async def test_an_error_reaches_its_own_requester_only() -> None:
    spawns = Spawns()
    spawns.fail = {3}
    outcomes: dict[int, object] = {}

    async def one(i: int) -> None:
        try:
            outcomes[i] = await _turns.in_turn(spawns.call, (i,), spawns.abandon)
        except ValueError as exc:
            outcomes[i] = str(exc)
            return
        spawns.exec_done()

    await run_all(one, 6, limit=1000)
    assert outcomes == {0: 0, 1: 1, 2: 2, 3: "request 3 refused", 4: 4, 5: 5}
