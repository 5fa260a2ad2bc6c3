"""Helpers more than one test file needs, defined once: the one harness that
starts children (:class:`Children`, behind the ``children``, ``spawn`` and
``procs`` fixtures of conftest), checks of a child's state that never reap
it, fd and memory accounting, scripts run in a fresh interpreter or a private
pid namespace (with the pid-reuse steps they share), signals that interrupt a
blocking call, the soaks' sizes and accounting, the fds an exec'd program
inherits, exit-status constants and strategies, the running kernel, a raised
fd limit, and a task that waits until its handle is closed under it."""

from __future__ import annotations

import contextlib
import gc
import json
import os
import re
import resource
import select
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Sequence

import anyio
import pytest
from hypothesis import strategies as st

from pidfd import AsyncPidFd, PidFd

PY = sys.executable
SLEEP = shutil.which("sleep") or "/bin/sleep"
TRUE = shutil.which("true") or "/bin/true"

# Prepended to a process's code: wait until the test releases it.
WAIT_FOR_RELEASE = "import sys; sys.stdin.buffer.read(1)\n"


# -- starting children ----------------------------------------------------------


class Proc:
    """A process started by :meth:`Children.child` or :meth:`Children.grandchild`:
    ``pid``, and ``release()`` to let it finish.

    A *child* is started by the test process itself. A *non-child* is a
    grandchild: the test starts an intermediate Python process, which starts
    the grandchild, prints its pid, reaps it and prints its return code.
    Either one blocks on its stdin until the test calls :meth:`release`, so the
    test decides when it exits; closing stdin (at clean-up) releases it too.
    What either prints on stdout reaches the test through :meth:`readline`;
    the intermediate reports on its stderr, so the two never mix.
    """

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


class Children:
    """Starts the processes a test needs and kills and reaps all of them after,
    even when the test fails half-way or reaped them itself.

    Three ways in, for three kinds of test:

    - :meth:`popen`: a ``subprocess.Popen`` of ``python -c code`` (or an argv),
      for tests that reap it through a pidfd (the ``spawn`` fixture);
    - :meth:`child`, :meth:`grandchild`, :meth:`start`: a :class:`Proc` held
      on its stdin until released, a child or a non-child (``procs``);
    - :meth:`spawn` and its shorthands :meth:`sleep`, :meth:`python`,
      :meth:`exited`: a bare pid from ``os.posix_spawn``. A ``Popen`` whose
      child we reap behind its back warns "still running" when it is
      collected, and warnings are errors in this project; so these children
      have no ``Popen``. Each is opened with the stdlib's own
      ``os.pidfd_open`` at spawn time, so clean-up kills and reaps it without
      trusting the code under test and without ever signalling a recycled pid.
    """

    def __init__(self) -> None:
        self._popens: list[subprocess.Popen] = []
        self._procs: list[subprocess.Popen] = []
        self._guards: list[PidFd] = []
        # pid -> the stdlib pidfd we opened while the child was certainly ours.
        self._fds: dict[int, int] = {}

    # ``spawn`` fixture: a Popen the test reaps through a pidfd.

    def popen(self, code: str | list[str], **kwargs: object) -> subprocess.Popen[bytes]:
        """``python -c code`` (or the argv list ``code``), ``Popen(**kwargs)``."""
        argv = [PY, "-c", code] if isinstance(code, str) else code
        proc = subprocess.Popen(argv, **kwargs)  # type: ignore[call-overload]
        self._popens.append(proc)
        return proc

    # ``procs`` fixture: children and grandchildren held on stdin.

    def child(self, code: str, *, wait_for_release: bool = True, **kw) -> Proc:
        """A direct child running ``code``."""
        prefix = WAIT_FOR_RELEASE if wait_for_release else ""
        popen = subprocess.Popen(
            [PY, "-c", prefix + code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, **kw
        )
        self._procs.append(popen)
        return Proc(popen.pid, popen, True)

    def start(self, kind: str, code: str, *, wait_for_release: bool = True) -> Proc:
        """A ``"child"`` or a ``"non-child"`` (grandchild) running ``code``."""
        start = self.child if kind == "child" else self.grandchild
        return start(code, wait_for_release=wait_for_release)

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
        self._procs.append(popen)
        assert popen.stderr is not None
        pid = int(popen.stderr.readline())
        # Its parent waits for it, so the pid cannot be reused before this.
        self._guards.append(PidFd.from_pid(pid))
        return Proc(pid, popen, False)

    # ``children`` fixture: bare pids from posix_spawn.

    def spawn(self, argv: Sequence[str], **kwargs: object) -> int:
        """``posix_spawn`` ``argv`` (looked up on PATH if not absolute)."""
        path = argv[0] if os.path.isabs(argv[0]) else shutil.which(argv[0])
        assert path is not None, argv[0]
        pid = os.posix_spawn(path, list(argv), os.environ, **kwargs)  # type: ignore[arg-type]
        self._fds[pid] = os.pidfd_open(pid)
        return pid

    def sleep(self, seconds: float = 30.0) -> int:
        """A child that sleeps ``seconds`` and exits 0."""
        return self.spawn([SLEEP, repr(seconds)])

    def python(self, code: str) -> int:
        """A ``sys.executable -c code`` child."""
        return self.spawn([PY, "-c", code])

    def exited(self, code: int = 0) -> int:
        """A child that has already exited with ``code`` and is a zombie now."""
        pid = self.spawn(["sh", "-c", f"exit {code}"]) if code else self.spawn([TRUE])
        wait_zombie(pid)
        return pid

    def close(self) -> None:
        """Kill and reap every process started here; never raise for one the
        test already reaped."""
        for popen in self._popens:
            _reap_quietly(popen)
            for stream in (popen.stdin, popen.stdout, popen.stderr):
                if stream is not None:
                    stream.close()
        for popen in self._procs:
            if popen.stdin is not None:
                with contextlib.suppress(OSError):
                    popen.stdin.close()
        for guard in self._guards:
            with contextlib.suppress(ProcessLookupError, ValueError):
                guard.kill()
            guard.close()
        for popen in self._procs:
            popen.kill()
            popen.wait(10)
            for pipe in (popen.stdout, popen.stderr):
                if pipe is not None:
                    pipe.close()
        for fd in self._fds.values():
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(fd, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                # Blocks until it is dead; ECHILD if the test reaped it.
                os.waitid(os.P_PIDFD, fd, os.WEXITED)
            os.close(fd)
        self._popens.clear()
        self._procs.clear()
        self._guards.clear()
        self._fds.clear()

    def __enter__(self) -> Children:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _reap_quietly(proc: subprocess.Popen[bytes]) -> None:
    """Kill and reap ``proc`` unless a test already did; never raise."""
    try:
        if proc.returncode is None:
            proc.kill()
    except ProcessLookupError:
        pass
    # ECHILD if the test reaped it through a pidfd: that is fine.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(proc.pid, 0)
    proc.returncode = proc.returncode if proc.returncode is not None else -9


def spawn_path(name: str) -> str:
    """The absolute path of program ``name``, for ``os.posix_spawn``."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"needs {name!r} on PATH")
    return path


# -- a child's state, never reaping it -------------------------------------------


def wait_zombie(pid: int, timeout: float = 10.0) -> None:
    """Block until child ``pid`` has exited, without reaping it."""
    deadline = time.monotonic() + timeout
    while os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
        assert time.monotonic() < deadline, f"child {pid} did not exit in {timeout}s"
        time.sleep(0.005)


def is_unreaped(pid: int) -> bool:
    """True while ``pid`` is still our child that nobody has reaped (running or zombie)."""
    try:
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    return True


def is_running(pid: int) -> bool:
    """True while child ``pid`` has not exited (checked without reaping)."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None


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


# -- fds and memory ----------------------------------------------------------------


def open_fds() -> set[int]:
    """The fd numbers this process has open right now."""
    return {int(name) for name in os.listdir("/proc/self/fd")}


def fd_target(fd: int) -> str | None:
    """What ``/proc/self/fd/FD`` links to, or ``None`` if the number is free."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except FileNotFoundError:
        return None


def is_pidfd_link(target: str | None) -> bool:
    return target is not None and (target == "anon_inode:[pidfd]" or target.startswith("pidfd:"))


def rss_bytes() -> int:
    """Resident set size of this process."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def readable_now(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


# -- signals that interrupt a blocking call ----------------------------------------


class Interrupted(Exception):
    """Raised by a test's own signal handler."""


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


# -- scripts in a fresh interpreter ------------------------------------------------


def run_script(script: str, *args: str, what: str) -> dict:
    """Run ``python -c script *args`` and return the JSON object it prints.

    Fails the test (instead of stalling it) if the script hangs, saying
    ``what`` hung; fails with the script's stderr if it exits non-zero.
    """
    try:
        proc = subprocess.run(
            [PY, "-c", script, *args],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{what} hung: {e.stderr!r}")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def run_in_pid_namespace(script: str, *args: str) -> dict:
    """Run ``python -c script *args`` as pid 1 of a private pid namespace.

    There, pids are few and handed out in order, so a script can make the
    kernel reuse a pid it just freed. Returns the JSON object the script
    prints. Skips where no namespace can be made: as root a pid namespace is
    enough; otherwise a user namespace makes us root inside it, where the
    distribution allows unprivileged ones.
    """
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("needs unshare(1) from util-linux to make a private pid namespace")
    refusals = []
    for userns in ([], ["--user", "--map-root-user"]):
        cmd = [unshare, *userns, "--pid", "--fork", "--mount-proc"]
        try:
            proc = subprocess.run(
                [*cmd, PY, "-c", script, *args],
                capture_output=True,
                text=True,
                timeout=45,
            )
        except subprocess.TimeoutExpired as e:
            pytest.fail(f"pid reuse script hung: {e.stderr!r}")
        if proc.returncode != 0 and "unshare failed" in proc.stderr:
            refusals.append(proc.stderr.strip())
            continue
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)
    pytest.skip(f"cannot create a pid namespace here: {refusals}")


# -- soaks: sizes, children, accounting -------------------------------------------

# The sizes come from the environment so that the normal run stays fast and
# .ci/run can run the soaks at the size the guarantees quote:
# PIDFD_SOAK_CYCLES, open/wait/close cycles per soak (default 400; .ci/run
# 50,000), and PIDFD_STRESS_WAITERS, concurrent async waiters in test_async.py
# (default 200; .ci/run 5,000).
SOAK_CYCLES = int(os.environ.get("PIDFD_SOAK_CYCLES", "400"))
# Children started at once: enough to keep both cores busy, few enough that
# a failure leaves little to clean up.
SOAK_BATCH = 50
# What a soak may add to this process's resident set.
RSS_BUDGET = 20 * 1024 * 1024


@contextlib.contextmanager
def reaping_all(pids: list[int]) -> Iterator[None]:
    """Whatever happens, leave no child of ``pids`` unreaped."""
    try:
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)


def spawn_true(n: int) -> list[int]:
    """Start ``n`` children of ``true`` (bare pids: the soak reaps them)."""
    return [os.posix_spawn(TRUE, [TRUE], os.environ) for _ in range(n)]


class Accounting:
    """fds and RSS before and after a soak, measured after a warm-up."""

    def __init__(self, label: str) -> None:
        self.label = label
        gc.collect()
        self.fds = open_fds()
        self.rss = rss_bytes()
        self.start = time.monotonic()

    def check(self, cycles: int) -> None:
        gc.collect()
        fds = open_fds()
        rss = rss_bytes()
        elapsed = time.monotonic() - self.start
        growth = rss - self.rss
        print(
            f"{self.label}: {cycles} cycles in {elapsed:.1f} s; "
            f"fds {len(self.fds)} -> {len(fds)}; "
            f"RSS {self.rss / 2**20:.1f} -> {rss / 2**20:.1f} MiB ({growth / 2**20:+.2f} MiB)"
        )
        assert fds == self.fds, f"fds leaked: {sorted(fds - self.fds)}"
        assert growth < RSS_BUDGET, f"RSS grew by {growth / 2**20:.1f} MiB"


# -- fork and exec ---------------------------------------------------------------------


# Lists every fd the exec'd program holds, with what it points to.
LIST_FDS = textwrap.dedent(
    """
    import json, os
    fds = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            fds[name] = os.readlink("/proc/self/fd/" + name)
        except OSError:
            pass
    print(json.dumps(fds))
    """
)


def fds_after_exec() -> dict[int, str]:
    # close_fds=False: only FD_CLOEXEC stands between our fds and the child.
    out = subprocess.run(
        [sys.executable, "-c", LIST_FDS],
        close_fds=False,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    return {int(k): v for k, v in json.loads(out).items()}


# -- exit statuses ---------------------------------------------------------------------


CLD_EXITED, CLD_KILLED, CLD_DUMPED = 1, 2, 3


CLD_EXITED, CLD_KILLED, CLD_DUMPED = 1, 2, 3


CLD_EXITED, CLD_KILLED, CLD_DUMPED = 1, 2, 3


HUGE = st.one_of(
    st.integers(),
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, -1, 2**31 - 1, 2**31, -(2**31), 2**32, 2**63 - 1, 2**63, 2**64]),
)


# -- the kernel, limits, async waits --------------------------------------------------


def kernel() -> tuple[int, int]:
    """The running kernel's ``(major, minor)``, e.g. ``(6, 18)`` for 6.18.44-fc."""
    m = re.match(r"(\d+)\.(\d+)", os.uname().release)
    assert m is not None, os.uname().release
    return int(m[1]), int(m[2])


def kernel_at_least(major: int, minor: int) -> bool:
    """Whether the running kernel is at least ``major.minor``. To skip a whole
    test below a kernel, mark it ``@pytest.mark.kernel(major, minor)``."""
    return kernel() >= (major, minor)


@contextlib.contextmanager
def nofile_at_least(n: int) -> Iterator[None]:
    """Raise the soft RLIMIT_NOFILE to ``n`` for the block (restored after);
    skip the test if the hard limit is below ``n``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= n:
        yield
        return
    if hard != resource.RLIM_INFINITY and hard < n:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is below the {n} fds this test needs")
    resource.setrlimit(resource.RLIMIT_NOFILE, (n, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def wait_until_closed(handle: AsyncPidFd, errors: list[BaseException]) -> None:
    """``await handle.wait()``; record the error a ``close()`` under it raises
    (``ValueError`` or ``anyio.ClosedResourceError``). Any other outcome
    propagates, so a test that expects the close to end the wait sees it."""
    try:
        await handle.wait()
    except (ValueError, anyio.ClosedResourceError) as e:
        errors.append(e)


# Source to put in front of a script run by
# :func:`run_in_pid_namespace`: there, as pid 1 of a fresh pid
# namespace, the script may steer the next pid (ns_last_pid belongs to that
# namespace alone) without touching the host.
#
# It defines ``report`` (the dict the script prints as JSON at the end),
# ``spawn_sleeper()`` (a ``sleep 30`` child; the script's first argument
# names the program) and ``reuse_pid()``.
REUSE_PID = textwrap.dedent(
    r"""
    import json, os, signal, sys, time

    SLEEP = sys.argv[1]
    report = {}

    def spawn_sleeper():
        return os.posix_spawn(SLEEP, [SLEEP, "30"], os.environ)

    def reuse_pid(old, spawn, report):
        '''Have ``spawn()`` start a process that gets the freed pid ``old``:
        through ns_last_pid, else by forking until the number comes round
        again. Returns its pid, or None (any other process it started is
        killed and reaped); ``report["method"]`` says how it went.'''
        new = None
        try:
            with open("/proc/sys/kernel/ns_last_pid", "w") as f:
                f.write(str(old - 1))
            new = spawn()
            report["method"] = "ns_last_pid"
        except OSError:
            pass
        if new != old:
            if new is not None:
                os.kill(new, signal.SIGKILL)
                os.waitpid(new, 0)
                new = None
            report["method"] = "cycling"
            deadline = time.monotonic() + 20
            forks = 0
            while forks < 40000 and time.monotonic() < deadline:
                child = os.fork()
                if child == 0:
                    os._exit(0)
                os.waitpid(child, 0)
                forks += 1
                if child == old - 1:
                    new = spawn()
                    break
            report["forks"] = forks
        if new is not None and new != old:
            os.kill(new, signal.SIGKILL)
            os.waitpid(new, 0)
            new = None
        return new
    """
)
