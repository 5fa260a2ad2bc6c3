"""wait_any(): one poll over many handles, for sync supervisors; its bad
arguments, and one handle given many times."""

from __future__ import annotations

import os
import random
import resource
import subprocess

import pytest

import pidfd
from _helpers import Children, Interrupted, RaisingSignal, nofile_at_least, proc_state, wait_until
from pidfd import AsyncPidFd, PidFd, wait_any

N_PROCS = 300
N_QUICK = 30


class Sleepers:
    """``/bin/sleep`` children (cheap to start by the hundred), cleaned up."""

    def __init__(self) -> None:
        self.popens: list[subprocess.Popen] = []

    def start(self, seconds: float) -> tuple[subprocess.Popen, PidFd]:
        popen = subprocess.Popen(["sleep", str(seconds)])
        self.popens.append(popen)
        return popen, PidFd.from_pid(popen.pid)

    def close(self) -> None:
        for popen in self.popens:
            popen.kill()
        for popen in self.popens:
            popen.wait(10)


@pytest.fixture
def sleepers():
    s = Sleepers()
    try:
        yield s
    finally:
        s.close()


def test_many_handles_returns_only_exited_in_given_order(sleepers):
    rng = random.Random(1234)
    quick = set(rng.sample(range(N_PROCS), N_QUICK))
    handles = []
    for i in range(N_PROCS):
        # Lifetimes unrelated to list order, so "in order given" is tested.
        seconds = round(rng.uniform(0.0, 0.5), 3) if i in quick else 60
        handles.append(sleepers.start(seconds)[1])
    quick_handles = {id(handles[i]) for i in quick}
    try:
        remaining = list(handles)
        collected = 0
        while collected < N_QUICK:
            done = wait_any(remaining, timeout=20)
            assert done, "wait_any returned no handle"
            assert all(id(h) in quick_handles for h in done), "a sleeping process was returned"
            positions = [next(i for i, r in enumerate(remaining) if r is h) for h in done]
            assert positions == sorted(positions)
            for h in done:
                assert not h.is_alive()
                # Not reaped by wait_any: still a zombie, our wait() gets it.
                assert proc_state(h.pid) == "Z"
                assert h.wait(0).status.success
            done_ids = {id(h) for h in done}
            remaining = [h for h in remaining if id(h) not in done_ids]
            collected += len(done)
        assert collected == N_QUICK
        assert len(remaining) == N_PROCS - N_QUICK
        with pytest.raises(TimeoutError):
            wait_any(remaining, timeout=0)
    finally:
        for h in handles:
            h.close()


def test_thousands_of_handles(procs):
    """Thousands of fds in one poll: many handles on a few processes."""
    n = 4000
    with nofile_at_least(n + 200):
        running, exiting = procs.child(""), procs.child("")
        handles = [PidFd.from_pid(running.pid if i % 2 else exiting.pid) for i in range(n)]
        try:
            with pytest.raises(TimeoutError, match=f"{n} processes"):
                wait_any(handles, timeout=0.05)
            exiting.release()
            done = wait_any(handles, timeout=10)
            assert done == handles[0::2]
            assert all(h.pid == exiting.pid for h in done)
            assert exiting.popen.wait(10) == 0
        finally:
            for h in handles:
                h.close()


def test_already_exited_handles_returned_in_given_order(procs):
    a, b, c = (procs.child("") for _ in range(3))
    with PidFd.from_pid(a.pid) as ha, PidFd.from_pid(b.pid) as hb, PidFd.from_pid(c.pid) as hc:
        a.release()
        b.release()
        wait_until(lambda: proc_state(a.pid) == proc_state(b.pid) == "Z")
        assert wait_any([hb, hc, ha], timeout=0) == [hb, ha]
        assert wait_any([ha, hc, hb]) == [ha, hb]
        assert wait_any(iter([hc, hb])) == [hb]


def test_non_children(procs):
    gc = [procs.grandchild("") for _ in range(3)]
    handles = [PidFd.from_pid(p.pid) for p in gc]
    try:
        gc[1].release()
        assert wait_any(handles, timeout=10) == [handles[1]]
        assert gc[1].owner_returncode() == 0
    finally:
        for h in handles:
            h.close()


@pytest.mark.parametrize("timeout", [0, -1, 0.2])
def test_timeout(procs, timeout):
    p = procs.child("")
    with PidFd.from_pid(p.pid) as h:
        with pytest.raises(TimeoutError, match="1 process"):
            wait_any([h], timeout=timeout)
        assert h.is_alive()


def test_empty_is_refused():
    with pytest.raises(ValueError, match="at least one"):
        wait_any([])
    with pytest.raises(ValueError, match="at least one"):
        wait_any(iter(()), timeout=1)


def test_mixed_sync_and_async_returns_the_same_objects(procs):
    a, b = procs.child(""), procs.child("")
    sync = PidFd.from_pid(a.pid)
    asyn = AsyncPidFd.from_pid(b.pid)
    try:
        a.release()
        b.release()
        wait_until(lambda: proc_state(a.pid) == proc_state(b.pid) == "Z")
        done = wait_any([asyn, sync], timeout=10)
        assert len(done) == 2
        assert done[0] is asyn and done[1] is sync
        assert wait_any([sync])[0] is sync
    finally:
        sync.close()
        asyn.close()


def test_closed_handle_is_refused(procs):
    p = procs.child("")
    with PidFd.from_pid(p.pid) as open_handle:
        closed = PidFd.from_pid(p.pid)
        closed.close()
        with pytest.raises(ValueError, match="closed"):
            wait_any([open_handle, closed], timeout=0)
        closed_async = AsyncPidFd.from_pid(p.pid)
        closed_async.close()
        with pytest.raises(ValueError, match="closed"):
            wait_any([closed_async], timeout=0)


@pytest.mark.parametrize("bad", [None, 3, "pid", object()])
def test_not_a_handle_is_refused(procs, bad):
    p = procs.child("")
    with PidFd.from_pid(p.pid) as h, pytest.raises(TypeError):
        wait_any([h, bad], timeout=0)


def test_nan_timeout_is_refused(procs):
    p = procs.child("")
    with PidFd.from_pid(p.pid) as h, pytest.raises(ValueError, match="NaN"):
        wait_any([h], timeout=float("nan"))


@pytest.mark.thread_unsafe(reason="sets a signal handler")
def test_interrupted_by_raising_signal_handler(procs):
    p = procs.child("")
    with PidFd.from_pid(p.pid) as h:
        with RaisingSignal(0.2), pytest.raises(Interrupted):
            wait_any([h], timeout=20)
        assert h.is_alive()
        p.release()
        assert wait_any([h], timeout=10) == [h]
        assert h.wait(0).status.success


# -- bad arguments ---------------------------------------------------------------------


def test_wait_any_bad_arguments(children: Children) -> None:
    with pytest.raises(ValueError):
        pidfd.wait_any([])
    with pytest.raises(TypeError):
        pidfd.wait_any(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        pidfd.wait_any([os.getpid()])  # type: ignore[list-item]
    pid = children.sleep(30)
    with PidFd.from_pid(pid) as h:
        with pytest.raises(TypeError):
            pidfd.wait_any([h, "x"])  # type: ignore[list-item]
        with pytest.raises(TimeoutError):
            pidfd.wait_any(iter([h, h]), timeout=0)


def test_wait_any_with_the_same_handle_many_times(children: Children) -> None:
    """Repeats must not count against RLIMIT_NOFILE (poll(2) refuses more
    entries than that with EINVAL): each fd is polled once."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    pid = children.sleep(0.2)
    with PidFd.from_pid(pid) as h:
        a = AsyncPidFd(h)
        handles: list[PidFd | AsyncPidFd] = [h, a] * (soft // 2 + 10)
        with pytest.raises(TimeoutError):
            pidfd.wait_any(handles, timeout=0)
        done = pidfd.wait_any(handles, timeout=10)
        # Every entry is reported, as the object given, in order.
        assert len(done) == len(handles)
        assert all(x is y for x, y in zip(done, handles, strict=True))


# -- async_wait_any ----------------------------------------------------------------


@pytest.mark.anyio
async def test_async_wait_any_returns_the_exited_without_blocking(sleepers, ticker) -> None:
    import anyio

    from pidfd import async_wait_any

    _, slow = sleepers.start(30)
    _, quick = sleepers.start(0.3)
    handles = [slow, AsyncPidFd(quick)]
    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker.run)
        with anyio.fail_after(20):
            done = await async_wait_any(handles)
        tg.cancel_scope.cancel()
    assert done == [handles[1]]
    assert ticker.count >= 10  # the loop ran meanwhile
    assert slow.is_alive()
    assert quick.wait().status.success  # nothing was reaped
    slow.close()
    quick.close()


@pytest.mark.anyio
async def test_async_wait_any_timeout_and_errors_match_the_sync_call(sleepers) -> None:
    from pidfd import async_wait_any

    _, a = sleepers.start(30)
    _, b = sleepers.start(30)
    with pytest.raises(
        TimeoutError, match=r"^none of the 2 processes had exited after the 0\.05s timeout$"
    ):
        await async_wait_any([a, b], timeout=0.05)
    with pytest.raises(TimeoutError, match=r"timeout=0 checks once"):
        await async_wait_any([a, b], timeout=0)
    with pytest.raises(ValueError, match="at least one handle"):
        await async_wait_any([])
    with pytest.raises(TypeError, match="PidFd or AsyncPidFd"):
        await async_wait_any([a, 3])  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"^timeout must be a number of seconds"):
        await async_wait_any([a], timeout="1")  # type: ignore[arg-type]
    assert a.is_alive() and b.is_alive()
    a.close()
    b.close()


@pytest.mark.anyio
async def test_async_wait_any_cancelled_leaves_everything_as_it_was(sleepers) -> None:
    import anyio

    from pidfd import async_wait_any

    _, a = sleepers.start(30)
    with anyio.move_on_after(0.05) as scope:
        await async_wait_any([a, a])
    assert scope.cancelled_caught
    assert a.is_alive() and not a.closed
    a.kill()
    with anyio.fail_after(20):
        assert await async_wait_any([a, a]) == [a, a]
    assert a.wait().status.signal == 9
    a.close()
