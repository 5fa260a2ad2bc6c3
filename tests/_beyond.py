"""Spawning children and non-children for the "beyond the seed" tests.

A *child* is started by the test process itself. A *non-child* is a
grandchild: the test starts an intermediate Python process, which starts the
grandchild, prints its pid, reaps it and prints its return code. Either one
blocks on its stdin until the test calls :meth:`Proc.release`, so the test
decides when it exits; closing stdin (at clean-up) releases it too. What
either prints on stdout reaches the test through :meth:`Proc.readline`; the
intermediate reports on its stderr, so the two never mix.

Every process is killed and reaped by :meth:`Procs.close`, even when a test
fails half-way.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable

from pidfd import PidFd

PY = sys.executable

# Prepended to a process's code: wait until the test releases it.
WAIT_FOR_RELEASE = "import sys; sys.stdin.buffer.read(1)\n"


class Proc:
    """A process under test: ``pid``, and ``release()`` to let it finish."""

    def __init__(self, pid: int, popen: subprocess.Popen, is_child: bool) -> None:
        self.pid = pid
        # For a child, the process itself; for a grandchild, its parent.
        self.popen = popen
        self.is_child = is_child

    def release(self) -> None:
        """Let the process run past its ``sys.stdin.buffer.read(1)``."""
        assert self.popen.stdin is not None
        self.popen.stdin.write(b"x")
        self.popen.stdin.flush()

    def readline(self) -> str:
        """The next line the process printed on stdout."""
        assert self.popen.stdout is not None
        return self.popen.stdout.readline().decode()

    def owner_returncode(self, timeout: float = 10.0) -> int:
        """The return code the process's parent got when it reaped it."""
        if self.is_child:
            return self.popen.wait(timeout)
        assert self.popen.stderr is not None
        # The grandchild shares this stderr: the intermediate's line is last.
        self.popen.wait(timeout)
        return int(self.popen.stderr.read().splitlines()[-1])


class Procs:
    """Starts children and grandchildren, and cleans all of them up."""

    def __init__(self) -> None:
        self._popens: list[subprocess.Popen] = []
        self._guards: list[PidFd] = []

    def child(self, code: str, *, wait_for_release: bool = True, **kw) -> Proc:
        """A direct child running ``code``."""
        prefix = WAIT_FOR_RELEASE if wait_for_release else ""
        popen = subprocess.Popen(
            [PY, "-c", prefix + code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, **kw
        )
        self._popens.append(popen)
        return Proc(popen.pid, popen, True)

    def start(self, kind: str, code: str, *, wait_for_release: bool = True) -> Proc:
        """A ``"child"`` or a ``"non-child"`` (grandchild) running ``code``."""
        spawn = self.child if kind == "child" else self.grandchild
        return spawn(code, wait_for_release=wait_for_release)

    def grandchild(self, code: str, *, wait_for_release: bool = True) -> Proc:
        """A non-child running ``code``: the child of an intermediate process."""
        prefix = WAIT_FOR_RELEASE if wait_for_release else ""
        inner = prefix + code
        middle = (
            "import subprocess, sys\n"
            f"p = subprocess.Popen([sys.executable, '-c', {inner!r}])\n"
            "print(p.pid, file=sys.stderr, flush=True)\n"
            "print(p.wait(), file=sys.stderr, flush=True)\n"
        )
        popen = subprocess.Popen(
            [PY, "-c", middle],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self._popens.append(popen)
        assert popen.stderr is not None
        pid = int(popen.stderr.readline())
        # Its parent waits for it, so the pid cannot be reused before this.
        self._guards.append(PidFd.from_pid(pid))
        return Proc(pid, popen, False)

    def close(self) -> None:
        for popen in self._popens:
            if popen.stdin is not None:
                with contextlib.suppress(OSError):
                    popen.stdin.close()
        for guard in self._guards:
            with contextlib.suppress(ProcessLookupError, ValueError):
                guard.kill()
            guard.close()
        for popen in self._popens:
            popen.kill()
            popen.wait(10)
            for pipe in (popen.stdout, popen.stderr):
                if pipe is not None:
                    pipe.close()

    def __enter__(self) -> Procs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def proc_state(pid: int) -> str:
    """The state letter of ``pid`` in /proc (``"Z"`` for a zombie), ``""`` once gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return ""
    return stat[stat.rfind(")") + 2]


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``predicate`` until true; ``AssertionError`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"condition not met within {timeout}s"
        time.sleep(0.01)


class Interrupted(Exception):
    """Raised by the test signal handler."""


class RaisingSignal:
    """Send ``SIGUSR1`` to the main thread after ``delay`` s; its handler raises.

    SIGUSR1, not SIGALRM: pytest-timeout owns SIGALRM. ``pthread_kill`` makes
    sure the signal lands on the thread blocked in the call under test.
    """

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self._old: object = None
        self._timer: threading.Timer | None = None

    def _handler(self, signum: int, frame: object) -> None:
        raise Interrupted(signum)

    def __enter__(self) -> RaisingSignal:
        self._old = signal.signal(signal.SIGUSR1, self._handler)
        main = threading.main_thread().ident
        assert main is not None
        self._timer = threading.Timer(self.delay, signal.pthread_kill, (main, signal.SIGUSR1))
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._timer is not None
        self._timer.cancel()
        self._timer.join()
        signal.signal(signal.SIGUSR1, self._old)  # type: ignore[arg-type]
