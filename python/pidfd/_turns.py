"""Spawning on the event loop's thread without freezing the loop.

A native spawn takes some tens of microseconds of the loop's thread (the
clone, the pipes, the `Popen` around it) and never waits for the child's
exec. A burst of them must still leave the loop free, and must not flood the
CPUs with children on their way to exec while the loop's thread needs one.
So each event loop has one queue of spawns and two bounds:

* time: spawns run in slices of at most `SLICE` seconds of the loop's
  thread, the loop handed back between two slices;
* children: at most `IN_FLIGHT_PER_CPU` per CPU between their clone and the
  read of their exec status. The spawn that finds the bound reached waits
  for one of them to exec (`exec_done`); where none does for `STUCK`
  seconds (an exec stuck on a hung file system), one slice runs anyway.

One task at a time drives a slice: it waits for the loop to turn, runs the
queue's spawns in order, each in its requester's context, until a bound is
reached, wakes their requesters with the outcome, and hands the drive to
the next request still queued, whose task runs once the loop has turned
again. A spawn asked for while a slice is open and nothing waits runs at
once, and a child's exec makes room for the next spawn at once, in the same
turn when the slice's time allows. A burst so costs about one wake-up per
spawn, and the loop keeps running between slices.
"""

from __future__ import annotations

import contextvars
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

import anyio
import anyio.lowlevel

__all__ = ["IN_FLIGHT_PER_CPU", "SLICE", "STUCK", "exec_done", "in_turn"]

T = TypeVar("T")

# W7 measures the longest stall of a 1 ms heartbeat during a burst, W6 the
# parent CPU per child: more children on their way to exec at once cost less
# CPU per child (fewer, fuller turns of the loop) and stall the loop longer
# (they take the CPUs from its thread). Two per CPU is where the stall stays
# at the floor of starting the tasks at all (benchmarks/README.md, W6/W7).
SLICE = 0.0005
IN_FLIGHT_PER_CPU = 2
STUCK = 0.02

_perf = time.perf_counter


class _Request(Generic[T]):
    __slots__ = ("args", "call", "context", "done", "error", "finished", "result")

    def __init__(self, call: Callable[..., T], args: tuple[Any, ...]) -> None:
        self.call = call
        self.args = args
        self.context = contextvars.copy_context()
        self.done = anyio.Event()  # set when finished or given a role
        self.finished = False
        self.result: T | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.context.run(self.call, *self.args)
        except BaseException as exc:  # the requester's: raised in its task
            self.error = exc
        self.finished = True
        self.done.set()


class _Turns:
    """One event loop's spawn queue and its bounds."""

    __slots__ = (
        "driver",
        "in_flight",
        "last_progress",
        "limit",
        "queue",
        "slice_end",
        "watcher",
    )

    def __init__(self) -> None:
        self.queue: deque[_Request[Any]] = deque()
        self.driver: _Request[Any] | None = None  # drives at the next turn
        self.watcher: _Request[Any] | None = None  # watches for stuck execs
        self.slice_end = 0.0
        self.last_progress = 0.0
        self.in_flight = 0
        self.limit = IN_FLIGHT_PER_CPU * (os.cpu_count() or 1)

    def open_now(self) -> bool:
        """May a spawn run at once, ahead of nothing?"""
        return (
            self.driver is None
            and not self.queue
            and self.in_flight < self.limit
            and _perf() < self.slice_end
        )

    def _run_queued(self, end: float) -> None:
        queue = self.queue
        while queue and self.in_flight < self.limit and _perf() < end:
            self._run(queue.popleft())

    def _run(self, request: _Request[Any]) -> None:
        request.run()
        if request.error is None:
            self.in_flight += 1

    def run_slice(self) -> None:
        """The driver's slice, once the loop has turned: the queue's first
        request whatever the bounds (a stuck exec must not stop the queue),
        then more until a bound is reached."""
        self.driver = None
        self.last_progress = now = _perf()
        self.slice_end = end = now + SLICE
        if self.queue:
            self._run(self.queue.popleft())
        self._run_queued(end)
        self.hand_on()

    def hand_on(self) -> None:
        """Who goes on: the queue's first drives at the next turn if a child
        may start; else one request watches for execs that never come."""
        queue = self.queue
        if not queue or self.driver is not None:
            return
        if self.in_flight < self.limit:
            self.driver = head = queue[0]
            head.done.set()
        elif self.watcher is None:
            # The last queued stays queued longest: one watcher per burst.
            self.watcher = tail = queue[-1]
            tail.done.set()

    def exec_done(self) -> None:
        self.in_flight -= 1
        self.last_progress = _perf()
        if self.queue and self.driver is None:
            self._run_queued(self.slice_end)
            self.hand_on()

    def leave(self, request: _Request[Any]) -> None:
        """A requester is done with the queue: withdrawn if its request has
        not run (it was cancelled), and out of any role it held."""
        held = self.watcher is request or self.driver is request
        if request.finished and not held:
            return
        if not request.finished:
            self.queue.remove(request)
        if self.watcher is request:
            self.watcher = None
        if self.driver is request:
            self.driver = None
        self.hand_on()

    async def watch(self, request: _Request[Any]) -> None:
        """As the watcher: wait, and while children before exec hold every
        place and none has exec'd for `STUCK` seconds, have a slice run."""
        try:
            while not request.finished and self.driver is not request:
                if not self.queue or self.in_flight < self.limit or self.driver is not None:
                    break  # not held up: hand_on() sees to it
                wait = self.last_progress + STUCK - _perf()
                if wait <= 0:
                    self.last_progress = _perf()
                    self.driver = head = self.queue[0]
                    head.done.set()
                    continue
                request.done = anyio.Event()
                with anyio.move_on_after(wait):
                    await request.done.wait()
        finally:
            if self.watcher is request:
                self.watcher = None
                self.hand_on()


_TURNS: anyio.lowlevel.RunVar[_Turns] = anyio.lowlevel.RunVar("pidfd_spawn_turns")


def _turns() -> _Turns:
    try:
        return _TURNS.get()
    except LookupError:
        turns = _Turns()
        _TURNS.set(turns)
        return turns


def exec_done() -> None:
    """A child that `in_turn` started has exec'd, failed to, or is gone."""
    _turns().exec_done()


async def in_turn(
    call: Callable[..., T], args: tuple[Any, ...], abandon: Callable[[T], Awaitable[None]]
) -> T:
    """``call(*args)`` on the loop's thread in this loop's spawn turn; the
    caller calls `exec_done` once the child it made has exec'd.

    A checkpoint for cancellation before the call. Cancelled once the call
    has run on its behalf, ``abandon(result)`` is awaited (the requester
    owns what the call made) before the cancellation goes on.
    """
    await anyio.lowlevel.checkpoint_if_cancelled()
    turns = _turns()
    if turns.open_now():
        result = call(*args)
        turns.in_flight += 1
        return result
    request = _Request(call, args)
    turns.queue.append(request)
    try:
        if turns.driver is None:
            if turns.in_flight < turns.limit:
                turns.driver = request
                await anyio.lowlevel.checkpoint()  # the loop turns, then we drive
            elif turns.watcher is None:
                turns.watcher = request
        while not request.finished:
            if turns.driver is request:
                turns.run_slice()
            elif turns.watcher is request:
                await turns.watch(request)
            else:
                if request.done.is_set():
                    request.done = anyio.Event()
                await request.done.wait()
    except BaseException:
        turns.leave(request)
        if request.finished and request.error is None:
            try:
                await abandon(request.result)  # type: ignore[arg-type]
            finally:
                turns.exec_done()
        raise
    turns.leave(request)
    error, request.error = request.error, None
    if error is not None:
        try:
            raise error
        finally:
            del error
    return request.result  # type: ignore[return-value]
