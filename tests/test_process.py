"""`pidfd.open_process`, `pidfd.run_process`, `pidfd.Process` (API.md, "Async").

Run under anyio's asyncio and trio backends (the ``anyio_backend`` fixture in
conftest); one echo scenario, and the cancellations that must kill a child
ignoring SIGTERM and SIGINT (a real Ctrl-C among them), under plain
``asyncio.run`` or ``trio.run``; and the thread count in
a fresh interpreter under ``asyncio.run`` and ``trio.run`` (so that worker
threads left idle by other tests cannot hide or fake a thread of ours).

Sizes from the environment, as for the soaks of ``test_pidfd.py`` and
``test_async.py``:

- ``PIDFD_PROCESS_SOAK``: processes in the no-fd-left soak (default 400;
  `.ci/run` runs 2,000).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
import trio

import pidfd
import pidfd._popen
from _helpers import TRUE, is_running, is_unreaped, open_fds, wait_zombie
from _seccomp import NR_CLONE3, NR_PIDFD_OPEN, Rule, run_snippet
from _seccomp import SKIP_REASON as SECCOMP_SKIP

PROCESS_SOAK = int(os.environ.get("PIDFD_PROCESS_SOAK", "400"))

# A child that blocks until its stdin is closed, then exits with 0.
READ_STDIN = [sys.executable, "-c", "import sys; sys.stdin.buffer.read()"]
# Reads stdin to EOF, then stays: closing its stdin does not end it.
OUTLIVES_STDIN = [sys.executable, "-c", "import sys, time; sys.stdin.buffer.read(); time.sleep(60)"]
UPPER = [sys.executable, "-c", "import sys; sys.stdout.write(sys.stdin.read().upper())"]


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


async def read_all(stream: anyio.abc.ByteReceiveStream | None) -> bytes:
    assert stream is not None
    chunks = [chunk async for chunk in stream]
    return b"".join(chunks)


def no_zombie_children() -> bool:
    """True if no child of ours has exited unreaped."""
    try:
        return os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None
    except ChildProcessError:
        return True


@pytest.fixture
def processes() -> Iterator[list[pidfd.Process]]:
    """Processes a test starts; any left unreaped are killed and reaped."""
    made: list[pidfd.Process] = []
    yield made
    for proc in made:
        popen = proc.popen
        if popen.poll() is None:
            with contextlib.suppress(OSError):
                popen.kill()
            popen.wait()


# -- pipes --------------------------------------------------------------------------


@pytest.mark.anyio
async def test_echo_through_stdin_and_stdout(processes: list[pidfd.Process]) -> None:
    proc = await pidfd.open_process(UPPER)
    processes.append(proc)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    assert proc.pidfd is not None
    with anyio.fail_after(30):
        await proc.stdin.send(b"hello through a pidfd ")
        await proc.stdin.send(b"x" * 200_000)  # more than a pipe holds: awaits writability
        await proc.stdin.aclose()
        out = await read_all(proc.stdout)
        assert await proc.wait() == 0
    assert out == b"HELLO THROUGH A PIDFD " + b"X" * 200_000
    assert proc.returncode == 0
    assert proc.exit_status is not None and proc.exit_status.code == 0
    assert proc.rusage is not None
    assert proc.pidfd is None  # reaped: the handle is closed and forgotten
    await proc.aclose()


def test_echo_under_plain_asyncio_run() -> None:
    """No anyio runner: asyncio.run as a user calls it, run_process and open_process."""

    async def main() -> tuple[bytes, int, bytes, int | None]:
        async with await pidfd.open_process(UPPER) as proc:
            assert proc.stdin is not None
            await proc.stdin.send(b"abc")
            await proc.stdin.aclose()
            out = await read_all(proc.stdout)
            code = await proc.wait()
        done = await pidfd.run_process(UPPER, input=b"def")
        return out, code, done.stdout, done.exit_status and done.exit_status.code

    assert asyncio.run(main()) == (b"ABC", 0, b"DEF", 0)


@pytest.mark.anyio
async def test_grandchild_holding_stdout_does_not_delay_wait(
    processes: list[pidfd.Process],
) -> None:
    # The shell prints its background job's pid and exits; the job keeps
    # the stdout pipe open for 1000 s.
    proc = await pidfd.open_process(["sh", "-c", "sleep 1000 & echo $!"])
    processes.append(proc)
    assert proc.stdout is not None
    grandchild = int((await proc.stdout.receive()).split()[0])
    try:
        with anyio.fail_after(30):
            assert await proc.wait() == 0
        # The pipe is still held: wait() did not wait for end of file.
        os.kill(grandchild, 0)
        with anyio.fail_after(30):
            async with proc:  # aclose() does not wait for the pipe either
                pass
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(grandchild, signal.SIGKILL)


# -- cancellation ---------------------------------------------------------------------


@pytest.mark.anyio
async def test_cancelled_wait_leaves_the_process_running_and_unreaped(
    processes: list[pidfd.Process],
) -> None:
    proc = await pidfd.open_process(READ_STDIN)
    processes.append(proc)
    for _ in range(2):  # twice: the first cancelled wait must not break the next
        with anyio.move_on_after(0.1) as scope:
            await proc.wait()
        assert scope.cancelled_caught
        assert is_running(proc.pid) and is_unreaped(proc.pid)
        assert proc.returncode is None
        assert proc.pidfd is not None
    # Once it exits, nothing reaps it behind the user's back (no background
    # waiter left over from the cancelled waits): it stays a zombie, with
    # its status, until the next wait().
    assert proc.stdin is not None
    await proc.stdin.aclose()
    wait_zombie(proc.pid)
    await anyio.sleep(0.2)  # time for a leftover waiter, if there were one, to reap
    assert is_unreaped(proc.pid)
    with anyio.fail_after(30):
        assert await proc.wait() == 0
    assert not is_unreaped(proc.pid)


@pytest.mark.anyio
async def test_cancelling_run_process_kills_and_reaps(no_fd_leak: None) -> None:
    r, w = os.pipe()
    pid: int | None = None
    try:
        code = f"import os, time; os.write({w}, str(os.getpid()).encode()); time.sleep(1000)"
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: pidfd.run_process(python(code), pass_fds=[w]))
                await anyio.wait_readable(r)
                pid = int(os.read(r, 64))
                assert is_running(pid)  # control: it was our running child
                tg.cancel_scope.cancel()
        assert pid is not None
        assert not is_unreaped(pid)  # killed and reaped before the cancellation ended
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    finally:
        os.close(r)
        os.close(w)
        if pid is not None and is_unreaped(pid):  # pragma: no cover - the bug case
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


@pytest.mark.anyio
async def test_aclose_after_a_cancelled_wait_kills_and_reaps() -> None:
    before = open_fds()
    # A child that would exit 0 at stdin's EOF could beat the kill (aclose()
    # closes stdin first): this one waits on after EOF, so only a kill ends it.
    proc = await pidfd.open_process(OUTLIVES_STDIN, start_new_session=True)
    try:
        with anyio.move_on_after(0.1) as scope:
            await proc.wait()
        assert scope.cancelled_caught and is_running(proc.pid)
        # Leaving the block under a cancellation: aclose()'s wait is
        # cancelled, so it kills and reaps, then lets the cancellation go on.
        with anyio.CancelScope() as scope:
            async with proc:
                scope.cancel()
        assert scope.cancelled_caught
        assert proc.popen.returncode == -signal.SIGKILL
        assert not is_unreaped(proc.pid)
        assert open_fds() == before
    finally:
        if proc.popen.returncode is None:  # pragma: no cover - the bug case
            proc.popen.kill()
            proc.popen.wait()


# -- cancellation kills a child that ignores SIGTERM and SIGINT (issue 22) -------------


_STUBBORN = ["sh", "-c", "trap '' TERM INT; exec sleep 30"]


def _assert_reaped(pid: int) -> None:
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


async def _run_recording(pids: list[int]) -> None:
    async with await pidfd.open_process(_STUBBORN) as proc:
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
            await asyncio.wait_for(pidfd.run_process(_STUBBORN), 0.2)

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
        async with await pidfd.open_process(_STUBBORN) as proc:
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
        with pidfd.PidFd.from_pid(grandchild) as handle:
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


# -- streams ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_closing_a_receive_stream_wakes_its_reader(processes: list[pidfd.Process]) -> None:
    proc = await pidfd.open_process(READ_STDIN)
    processes.append(proc)
    assert proc.stdout is not None and proc.stdin is not None
    stdout = proc.stdout
    caught: list[BaseException] = []

    async def reader() -> None:
        try:
            await stdout.receive()
        except anyio.ClosedResourceError as exc:
            caught.append(exc)

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(reader)
            await anyio.wait_all_tasks_blocked()
            await stdout.aclose()
    assert len(caught) == 1
    with pytest.raises(anyio.ClosedResourceError):
        await stdout.receive()
    await proc.stdin.aclose()
    with anyio.fail_after(30):
        assert await proc.wait() == 0


@pytest.mark.anyio
async def test_closing_a_send_stream_wakes_its_writer(processes: list[pidfd.Process]) -> None:
    # A child that never reads: the pipe fills and send() blocks.
    proc = await pidfd.open_process(python("import time; time.sleep(1000)"))
    processes.append(proc)
    assert proc.stdin is not None
    stdin = proc.stdin
    caught: list[BaseException] = []

    async def writer() -> None:
        try:
            await stdin.send(b"x" * (4 << 20))
        except anyio.ClosedResourceError as exc:
            caught.append(exc)

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(writer)
            await anyio.wait_all_tasks_blocked()
            await stdin.aclose()
    assert len(caught) == 1
    proc.kill()
    with anyio.fail_after(30):
        assert await proc.wait() == -signal.SIGKILL


@pytest.mark.anyio
async def test_a_stream_cannot_be_read_by_two_tasks_at_once(
    processes: list[pidfd.Process],
) -> None:
    proc = await pidfd.open_process(READ_STDIN)
    processes.append(proc)
    assert proc.stdout is not None and proc.stdin is not None
    stdout = proc.stdout
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(stdout.receive)
            await anyio.wait_all_tasks_blocked()
            with pytest.raises(anyio.BusyResourceError):
                await stdout.receive()
            await proc.stdin.aclose()  # the child exits: the first reader sees EOF
            tg.cancel_scope.cancel()
        assert await proc.wait() == 0


# -- run_process ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_run_process_check_raises_with_the_output_attached() -> None:
    code = "import sys; print('out'); print('err', file=sys.stderr); raise SystemExit(3)"
    with pytest.raises(subprocess.CalledProcessError) as info:
        await pidfd.run_process(python(code))
    exc = info.value
    assert exc.returncode == 3
    assert exc.stdout == b"out\n" and exc.stderr == b"err\n"
    assert exc.cmd == python(code)

    done = await pidfd.run_process(python(code), check=False)
    assert isinstance(done, pidfd.CompletedProcess)
    assert (done.returncode, done.stdout, done.stderr) == (3, b"out\n", b"err\n")
    assert done.exit_status is not None and done.exit_status.code == 3
    assert done.rusage is not None


@pytest.mark.anyio
async def test_run_process_input_and_redirection(tmp_path: Any) -> None:
    done = await pidfd.run_process(UPPER, input=b"in")
    assert done.stdout == b"IN" and done.stderr == b""
    # A child that exits without reading its input is not an error.
    done = await pidfd.run_process([TRUE], input=b"y" * (1 << 20))
    assert done.returncode == 0
    with open(tmp_path / "out", "wb") as f:
        done = await pidfd.run_process(
            python("import sys; print('to file'); print('e', file=sys.stderr)"),
            stdout=f,
            stderr=subprocess.STDOUT,
        )
    assert done.stdout is None and done.stderr is None
    assert (tmp_path / "out").read_bytes() == b"to file\ne\n"


@pytest.mark.anyio
@pytest.mark.parametrize("first", ["stdout", "stderr"])
@pytest.mark.parametrize("feed", [None, b"x" * (1 << 20)])
async def test_run_process_reads_both_streams_at_once(first: str, feed: bytes | None) -> None:
    """A child that fills one pipe before it writes the other (and reads
    all its input first, when given some): neither read waits on the other."""
    other = "stderr" if first == "stdout" else "stdout"
    code = (
        "import sys; data = sys.stdin.buffer.read();"
        f" sys.{first}.buffer.write(b'a' * (1 << 20)); sys.{first}.flush();"
        f" sys.{other}.buffer.write(b'b' * (1 << 20) + data[:3])"
    )
    with anyio.fail_after(20):
        given = {"input": feed} if feed else {"stdin": subprocess.DEVNULL}
        done = await pidfd.run_process(python(code), **given)
    tail = feed[:3] if feed else b""
    assert getattr(done, first) == b"a" * (1 << 20)
    assert getattr(done, other) == b"b" * (1 << 20) + tail

    # Only stderr piped: read by this task alone.
    done = await pidfd.run_process(
        python("import sys; sys.stderr.write('e' * 100000)"), stdout=None
    )
    assert done.stdout is None and done.stderr == b"e" * 100000


# -- scale ----------------------------------------------------------------------------

THREADS_SCRIPT = r"""
import json, os, sys, threading
import pidfd

N = int(sys.argv[2])
peak = {"threads": 0, "tasks": 0, "samples": 0}

def sample():
    peak["threads"] = max(peak["threads"], threading.active_count())
    peak["tasks"] = max(peak["tasks"], len(os.listdir("/proc/self/task")))
    peak["samples"] += 1

async def one(i):
    # Alive long enough that every wait() really waits (on the pidfd, or on
    # a thread if it ever did), not just polls a child that already exited.
    done = await pidfd.run_process(["sleep", "0.5"], input=b"x")
    sample()
    return done.exit_status.code

if sys.argv[1] == "asyncio":
    import asyncio
    async def main():
        async def sampler(stop):
            while not stop.is_set():
                sample()
                await asyncio.sleep(0)
        stop = asyncio.Event()
        task = asyncio.create_task(sampler(stop))
        codes = await asyncio.gather(*(one(i) for i in range(N)))
        stop.set()
        await task
        return codes
    codes = asyncio.run(main())
else:
    import trio
    async def main():
        codes = []
        async def run(i):
            codes.append(await one(i))
        async def sampler(stop):
            while not stop.is_set():
                sample()
                await trio.sleep(0)
        stop = trio.Event()
        async with trio.open_nursery() as outer:
            outer.start_soon(sampler, stop)
            async with trio.open_nursery() as nursery:
                for i in range(N):
                    nursery.start_soon(run, i)
            stop.set()
        return codes
    codes = trio.run(main)
print(json.dumps({"codes": codes, **peak}))
"""


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_200_concurrent_run_process_on_one_thread(backend: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", THREADS_SCRIPT, backend, "200"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["codes"] == [0] * 200
    assert out["samples"] > 200  # sampled while the processes ran, not only after
    assert out["threads"] == 1, out
    assert out["tasks"] == 1, out  # no OS thread outside threading's view either


@pytest.mark.slow
@pytest.mark.anyio
async def test_soak_leaves_no_fd_and_no_zombie() -> None:
    async def one() -> None:
        done = await pidfd.run_process([TRUE], input=b"")
        assert done.returncode == 0

    await one()  # warm-up: lazily opened loop fds (epoll, wake-up pipe) exist now
    # Garbage from earlier tests closes its fds when collected; collect it now
    # so that it does not do so mid-soak (seen on 3.13: two fds gone "after").
    gc.collect()
    before = open_fds()
    batch = 50
    for start in range(0, PROCESS_SOAK, batch):
        async with anyio.create_task_group() as tg:
            for _ in range(min(batch, PROCESS_SOAK - start)):
                tg.start_soon(one)
    assert open_fds() == before
    assert no_zombie_children()


# -- where pidfd_open is refused ----------------------------------------------------------


class _RefusedPidFd:
    """Stands in for ``PidFd`` in ``pidfd._popen``: ``pidfd_open`` gives ENOSYS."""

    @staticmethod
    def from_pid(pid: int, *, thread: bool = False) -> Any:
        raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))


@pytest.fixture
def pidfd_open_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # As a kernel before clone3 and pidfd_open (5.3): the stock spawn, no pidfd.
    monkeypatch.setattr(pidfd._spawn, "_spawn", lambda *args, **kwargs: None)
    monkeypatch.setattr(pidfd._spawn, "_spawn_plain", lambda *args, **kwargs: None)
    monkeypatch.setattr(pidfd._popen, "PidFd", _RefusedPidFd)
    # The refusal this sets is the whole process's: undone after the test.
    monkeypatch.setattr(pidfd._spawn, "_refused", False)


@pytest.mark.anyio
@pytest.mark.usefixtures("pidfd_open_refused")
async def test_falls_back_where_pidfd_open_is_refused(processes: list[pidfd.Process]) -> None:
    proc = await pidfd.open_process(UPPER)
    processes.append(proc)
    assert proc.pidfd is None and proc.popen.pidfd is None  # really without a pidfd
    assert proc.stdin is not None
    with anyio.fail_after(30):
        await proc.stdin.send(b"fallback")
        await proc.stdin.aclose()
        assert await read_all(proc.stdout) == b"FALLBACK"
        assert await proc.wait() == 0

    # A cancelled wait leaves the child unreaped here too.
    proc = await pidfd.open_process(READ_STDIN)
    processes.append(proc)
    with anyio.move_on_after(0.1) as scope:
        await proc.wait()
    assert scope.cancelled_caught and is_running(proc.pid) and is_unreaped(proc.pid)
    proc.terminate()
    wait_zombie(proc.pid)
    await anyio.sleep(0.2)  # the abandoned worker thread must not reap it
    assert is_unreaped(proc.pid)
    with anyio.fail_after(30):
        assert await proc.wait() == -signal.SIGTERM

    with pytest.raises(subprocess.CalledProcessError) as info:
        await pidfd.run_process(python("print('o'); raise SystemExit(5)"))
    assert info.value.returncode == 5 and info.value.stdout == b"o\n"


SECCOMP_FALLBACK = r"""
import asyncio, subprocess, sys
import trio
import pidfd

UPPER = [sys.executable, "-c", "import sys; sys.stdout.write(sys.stdin.read().upper())"]

async def main():
    async with await pidfd.open_process(UPPER) as proc:
        had_pidfd = proc.pidfd is not None
        await proc.stdin.send(b"seccomp")
        await proc.stdin.aclose()
        out = await proc.stdout.receive()
        code = await proc.wait()
    done = await pidfd.run_process(["sh", "-c", "echo ok; exit 0"])
    return [had_pidfd, out.decode(), code, done.stdout.decode()]

report(lambda: [asyncio.run(main()), trio.run(main)])
"""


@pytest.mark.skipif(SECCOMP_SKIP is not None, reason=SECCOMP_SKIP or "")
def test_falls_back_where_the_kernel_refuses_pidfd_open() -> None:
    """The real refusal (a seccomp filter: ENOSYS from clone3 and pidfd_open,
    as before Linux 5.3), both loops; pidfd_open refused alone does not
    matter to the native spawn, whose pidfd comes from clone3."""
    out = run_snippet(
        SECCOMP_FALLBACK, [Rule(NR_CLONE3, errno.ENOSYS), Rule(NR_PIDFD_OPEN, errno.ENOSYS)]
    )
    assert out["ok"], out
    expected = [False, "SECCOMP", 0, "ok\n"]
    assert out["value"] == repr([expected, expected]), out
    out = run_snippet(SECCOMP_FALLBACK, [Rule(NR_PIDFD_OPEN, errno.ENOSYS)])
    assert out["ok"], out
    expected = [True, "SECCOMP", 0, "ok\n"]
    assert out["value"] == repr([expected, expected]), out
    # Control: unfiltered, the same snippet has a pidfd.
    out = run_snippet(SECCOMP_FALLBACK, [])
    assert out["value"] == repr([[True, *expected[1:]]] * 2), out


# -- bad input ---------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"command": ""}, ValueError, "command is empty"),
        ({"command": []}, ValueError, "command is empty"),
        ({"command": 42}, TypeError, "not int"),
        ({"command": None}, TypeError, "not NoneType"),
        ({"command": ["echo", 1]}, TypeError, r"str, bytes or os.PathLike, not int \(1\)"),
        ({"command": ["/nonexistent/program"]}, FileNotFoundError, "/nonexistent/program"),
        ({"stdin": "input.txt"}, TypeError, "stdin must be subprocess.PIPE"),
        ({"stdin": -7}, ValueError, "stdin=-7 is not an fd"),
        ({"stdout": subprocess.STDOUT}, ValueError, "only valid for stderr"),
        ({"cwd": "/nonexistent/dir"}, FileNotFoundError, "/nonexistent/dir"),
    ],
    ids=[
        "empty-str",
        "empty-list",
        "int",
        "None",
        "int-arg",
        "missing-program",
        "stdin-str",
        "stdin-negative",
        "stdout-STDOUT",
        "missing-cwd",
    ],
)
async def test_bad_arguments_raise_clearly(
    kwargs: dict[str, Any], exc: type[Exception], match: str, no_fd_leak: None
) -> None:
    kwargs = {"command": [TRUE], **kwargs}
    command = kwargs.pop("command")
    with pytest.raises(exc, match=match):
        await pidfd.open_process(command, **kwargs)
    with pytest.raises(exc, match=match):
        await pidfd.run_process(command, **kwargs)
    assert no_zombie_children()


@pytest.mark.anyio
async def test_run_process_bad_input_raises_clearly(no_fd_leak: None) -> None:
    with pytest.raises(TypeError, match=r"input must be bytes, not str \(encode it"):
        await pidfd.run_process(["cat"], input="text")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="only one of stdin and input"):
        await pidfd.run_process(["cat"], input=b"x", stdin=subprocess.DEVNULL)
    assert no_zombie_children()


@pytest.mark.anyio
@pytest.mark.parametrize("name", ["preexec_fn", "shell", "bufsize"])
async def test_a_keyword_that_is_not_a_spawn_option_is_refused(name: str) -> None:
    # **options takes any name at run time; a preexec_fn reaching Popen would
    # run Python in a forked child on the event loop's thread.
    with pytest.raises(TypeError, match=f"unexpected keyword argument '{name}'.*spawn keywords"):
        await pidfd.open_process(["true"], **{name: None})  # type: ignore[misc]
    with pytest.raises(TypeError, match=f"unexpected keyword argument '{name}'"):
        await pidfd.run_process(["true"], **{name: None})  # type: ignore[misc]
