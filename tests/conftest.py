"""Shared fixtures: children that are always cleaned up (one harness,
:class:`_helpers.Children`), fd accounting, the anyio backends, and the
``kernel`` and ``thread_unsafe`` markers."""

from __future__ import annotations

import inspect
import signal
import subprocess
from collections.abc import Callable, Iterator

import anyio
import pytest

from _helpers import Children, kernel, kernel_at_least, open_fds

# A non-interactive shell that starts a job in the background (nohup, `&`, some
# CI runners) hands it SIGINT ignored, and children inherit that. Python then
# installs no KeyboardInterrupt handler, and a child cannot die of SIGINT.
# Tests of Ctrl-C and of death by signal need the ordinary disposition; a
# Python-level handler here also gives every exec'd child SIG_DFL back.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
# nohup hands SIGHUP ignored the same way, and `pidfd run` rightly leaves an
# inherited SIG_IGN alone (it neither forwards the signal nor dies of it),
# which a test of forwarding SIGHUP would take for a bug.
if signal.getsignal(signal.SIGHUP) == signal.SIG_IGN:
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


@pytest.fixture
def children() -> Iterator[Children]:
    """The test's :class:`~_helpers.Children`: every process started through it
    is killed and reaped after the test. ``spawn`` and ``procs`` are ways into
    the same one."""
    with Children() as c:
        yield c


@pytest.fixture
def spawn(children: Children) -> Callable[..., subprocess.Popen[bytes]]:
    """``spawn(code)`` starts ``python -c code`` (or an argv list) and cleans up after.

    Children are started with ``subprocess.Popen`` but the tests reap them
    through pidfds, so cleanup tolerates an already-reaped child.
    """
    return children.popen


@pytest.fixture
def no_fd_leak() -> Iterator[None]:
    """Fail the test if it leaves more fds open than it found."""
    before = open_fds()
    yield
    leaked = open_fds() - before
    # listdir's own directory fd is closed by the time we look again.
    assert not leaked, f"fds leaked: {sorted(leaked)}"


@pytest.fixture
def restore_signals() -> Iterator[None]:
    """Put back, after the test, the handlers of the signals tests set
    (SIGINT, SIGUSR1, SIGALRM, SIGCHLD), and cancel any interval timer."""
    saved = {
        s: signal.getsignal(s)
        for s in (signal.SIGINT, signal.SIGUSR1, signal.SIGALRM, signal.SIGCHLD)
    }
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        for s, h in saved.items():
            signal.signal(s, h)


class Ticker:
    """A heartbeat for an event loop: ``tg.start_soon(ticker.run)``, then read
    ``ticker.count``, which grows every 10 ms for as long as the loop runs."""

    def __init__(self) -> None:
        self.count = 0

    async def run(self) -> None:
        while True:
            self.count += 1
            await anyio.sleep(0.01)


@pytest.fixture
def ticker() -> Ticker:
    """A fresh :class:`Ticker`, to show that a wait did not block the loop."""
    return Ticker()


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Run every ``@pytest.mark.anyio`` test under asyncio and under trio."""
    return str(request.param)


@pytest.fixture
def procs(children: Children) -> Children:
    """Children and grandchildren held on stdin until released
    (:meth:`~_helpers.Children.start`); all reaped after."""
    return children


@pytest.fixture(params=["child", "non-child"])
def kind(request: pytest.FixtureRequest) -> str:
    """Run a test once on a child of ours and once on an unrelated process."""
    return str(request.param)


# scripts/free-threaded's thread-stress run (pytest-run-parallel) runs every
# test on several threads at once. A test that owns state of the whole
# process runs on one thread there instead, marked `thread_unsafe` with the
# reason; without the plugin the marker does nothing.
_PROCESS_WIDE_FIXTURES = {
    "no_fd_leak": "counts the fds of the whole process",
    "restore_signals": "sets signal handlers",
    "sigchld_ignored": "sets SIGCHLD to SIG_IGN",
}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "kernel(major, minor, reason=None): skip below Linux major.minor; reason names "
        "what needs it (e.g. reason='PIDFD_GET_INFO')",
    )
    config.addinivalue_line(
        "markers",
        "thread_unsafe(reason): owns process-wide state (signal handlers, SIGCHLD, "
        "rlimits, the fd table): one thread at a time under pytest-run-parallel",
    )


def kernel_skip_reason(item: pytest.Item) -> str | None:
    """Why ``item`` cannot run here, from its ``@pytest.mark.kernel`` marks
    (on the test, its class and its module; any one above the running kernel
    skips it), or ``None``."""
    for mark in item.iter_markers("kernel"):
        major, minor = mark.args
        if not kernel_at_least(major, minor):
            what = mark.kwargs.get("reason")
            needs = f"needs Linux >= {major}.{minor}"
            running = "{}.{}".format(*kernel())
            return f"{what + ' ' if what else ''}{needs} (running {running})"
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        # A skip mark, as skipif gave: the report names the test's own line.
        too_old = kernel_skip_reason(item)
        if too_old is not None:
            item.add_marker(pytest.mark.skip(reason=too_old))
        if item.get_closest_marker("thread_unsafe") is not None:
            continue
        reason = None
        if inspect.iscoroutinefunction(getattr(item, "obj", None)):
            # The anyio plugin runs the coroutine itself; pytest-run-parallel
            # wraps the function in a synchronous one and never awaits it.
            reason = "an async test (pytest-run-parallel cannot run a coroutine)"
        for name in getattr(item, "fixturenames", ()):
            reason = reason or _PROCESS_WIDE_FIXTURES.get(name)
        if reason is not None:
            item.add_marker(pytest.mark.thread_unsafe(reason=reason))
