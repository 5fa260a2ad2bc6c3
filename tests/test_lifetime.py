"""Children that cannot outlive their owner: ``die_with_parent=True``.

Each test starts an *owner* Python process, which starts three children (a
plain one, one that ignores SIGTERM, one that called ``setsid()``), waits
until each says it is ready, and prints their pids. The test opens a pidfd
on each while the owner lives (so no recycled pid can stand in for them),
SIGKILLs the owner, and polls the pidfds until every child has exited. A
dead child may stay a zombie under a slow init: a pidfd counts it as exited,
``/proc`` would not.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator

import pytest

import pidfd
from _helpers import kernel_at_least
from pidfd import PidFd

# The children: each says "ready" on stdout once it is what it should be.
CHILDREN = [
    "import time; print('ready', flush=True); time.sleep(600)",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
    " print('ready', flush=True); time.sleep(600)",
    "import os, time; os.setsid(); print('ready', flush=True); time.sleep(600)",
]

# How the owner starts them (mode and die are filled in), then prints their
# pids and sleeps.
OWNER = textwrap.dedent(
    """
    import json, subprocess, sys, threading, time
    import pidfd

    children = {children!r}
    mode, die = {mode!r}, {die!r}
    pids = []

    def popen(preexec=None):
        for code in children:
            p = pidfd.Popen(
                [sys.executable, "-c", code],
                stdout=subprocess.PIPE,
                die_with_parent=die,
                preexec_fn=preexec,
            )
            assert p.stdout.readline() == b"ready\\n"
            pids.append(p.pid)

    async def open_all():
        kept = []
        for code in children:
            proc = await pidfd.open_process(
                [sys.executable, "-c", code], stderr=None, die_with_parent=die
            )
            line = b""
            while not line.endswith(b"\\n"):
                line += await proc.stdout.receive()
            assert line == b"ready\\n", line
            kept.append(proc)
            pids.append(proc.pid)
        print(json.dumps(pids), flush=True)
        import anyio
        await anyio.sleep(600)

    if mode == "popen":
        popen()
    elif mode == "preexec":
        popen(preexec=lambda: None)
    elif mode == "thread":
        # The spawning thread lives until the test says "exit" on stdin.
        spawned, release = threading.Event(), threading.Event()

        def spawner():
            popen()
            spawned.set()
            release.wait()

        t = threading.Thread(target=spawner)
        t.start()
        spawned.wait()
        print(json.dumps(pids), flush=True)
        assert sys.stdin.readline() == "exit\\n"
        release.set()
        t.join()
    elif mode in ("asyncio", "trio"):
        import anyio
        anyio.run(open_all, backend=mode)
    print(json.dumps(pids), flush=True)
    time.sleep(600)
    """
)

# Generous: a loaded CI machine under TCG is slow. Not a speed check.
DEADLINE = 30.0


def start_owner(mode: str, die: bool) -> tuple[subprocess.Popen[bytes], list[PidFd]]:
    script = OWNER.format(children=CHILDREN, mode=mode, die=die)
    owner = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    _owners.append(owner)
    assert owner.stdout is not None
    line = owner.stdout.readline()
    assert line, f"the owner printed nothing (exit {owner.wait()})"
    pids = json.loads(line)
    assert len(pids) == len(CHILDREN)
    # The owner is alive and has not reaped them: these are our children.
    return owner, [PidFd.from_pid(pid) for pid in pids]


def kill_owner(owner: subprocess.Popen[bytes]) -> None:
    owner.send_signal(signal.SIGKILL)
    owner.wait()
    assert owner.stdin is not None and owner.stdout is not None
    owner.stdin.close()
    owner.stdout.close()


def alive_after(handles: list[PidFd], deadline: float) -> list[int]:
    """The pids still running once all have exited or ``deadline`` s passed."""
    end = time.monotonic() + deadline
    while True:
        alive = [h.pid for h in handles if h.is_alive()]
        if not alive or time.monotonic() > end:
            return alive
        time.sleep(0.02)


@pytest.fixture
def cleanup() -> Iterator[list[PidFd]]:
    """Handles to kill and close after the test, and the owners with them."""
    handles: list[PidFd] = []
    yield handles
    for owner in _owners:
        if owner.returncode is None:
            kill_owner(owner)
    _owners.clear()
    for h in handles:
        if h.is_alive():
            h.send_signal(signal.SIGKILL)
        h.close()


_owners: list[subprocess.Popen[bytes]] = []


@pytest.mark.parametrize("mode", ["popen", "preexec", "thread", "asyncio", "trio"])
def test_children_die_with_their_sigkilled_owner(mode: str, cleanup: list[PidFd]) -> None:
    # popen: the native clone3 spawn; preexec: the stock fallback (a
    # preexec_fn); thread: spawned from a thread that has exited by the time
    # the owner dies (the children die with the thread already: the
    # documented trap); asyncio/trio: open_process.
    owner, handles = start_owner(mode, die=True)
    cleanup.extend(handles)
    if mode == "thread":
        assert [h.is_alive() for h in handles] == [True] * len(CHILDREN)
        assert owner.stdin is not None
        owner.stdin.write(b"exit\n")
        owner.stdin.flush()
        # The owner lives on; its spawning thread has gone. CLONE_PIDFD_AUTOKILL
        # ties the child to the pidfd, not to a thread: no trap there.
        if AUTOKILL:
            time.sleep(1)
            assert [h.is_alive() for h in handles] == [True] * len(CHILDREN)
        else:
            assert alive_after(handles, DEADLINE) == []
        assert owner.poll() is None
    kill_owner(owner)
    assert alive_after(handles, DEADLINE) == []


@pytest.mark.parametrize("mode", ["popen", "asyncio"])
def test_without_the_option_children_outlive_their_owner(mode: str, cleanup: list[PidFd]) -> None:
    owner, handles = start_owner(mode, die=False)
    cleanup.extend(handles)
    kill_owner(owner)
    # The parent-death signal is sent as the owner exits, before its wait()
    # returns: any that were coming have been sent. Look again a little later.
    time.sleep(0.5)
    assert [h.is_alive() for h in handles] == [True] * len(CHILDREN)


# -- no_new_privs ---------------------------------------------------------------

READ_NNP = [sys.executable, "-c", "print(open('/proc/self/status').read())"]


def no_new_privs_of(status: bytes | str) -> int:
    text = status.decode() if isinstance(status, bytes) else status
    (line,) = [x for x in text.splitlines() if x.startswith("NoNewPrivs:")]
    return int(line.split()[1])


@pytest.mark.parametrize("preexec", [False, True], ids=["native", "preexec_fn"])
@pytest.mark.parametrize("nnp", [False, True])
def test_no_new_privs_on_popen(preexec: bool, nnp: bool) -> None:
    done = pidfd.run(
        READ_NNP,
        capture_output=True,
        no_new_privs=nnp,
        preexec_fn=(lambda: None) if preexec else None,
        check=True,
    )
    assert no_new_privs_of(done.stdout) == int(nnp)
    # The option is the child's: this process keeps its own.
    with open("/proc/self/status") as f:
        assert no_new_privs_of(f.read()) == 0


@pytest.mark.anyio
async def test_no_new_privs_on_run_process() -> None:
    done = await pidfd.run_process(READ_NNP, no_new_privs=True)
    assert no_new_privs_of(done.stdout) == 1
    assert no_new_privs_of((await pidfd.run_process(READ_NNP)).stdout) == 0


# Linux >= 7.1 and root (CAP_SYS_ADMIN; unprivileged needs no_new_privs too):
# die_with_parent is CLONE_PIDFD_AUTOKILL with CLONE_AUTOREAP. The kernel
# reaps the child itself, so it is no waitable child of ours, and releasing
# the clone's pidfd kills it.
# Whether die_with_parent takes CLONE_PIDFD_AUTOKILL here (root: no
# no_new_privs needed).
AUTOKILL = kernel_at_least(7, 1) and os.geteuid() == 0


def autokill(test: Callable[..., None]) -> Callable[..., None]:
    test = pytest.mark.kernel(7, 1, reason="CLONE_PIDFD_AUTOKILL")(test)
    reason = "AUTOKILL without no_new_privs needs root"
    return pytest.mark.skipif(os.geteuid() != 0, reason=reason)(test)


def zombie_left(die_with_parent: bool) -> bool:
    """Whether a child that has exited stays a zombie until we wait."""
    with pidfd.Popen(["true"], die_with_parent=die_with_parent) as p:
        assert p.pidfd is not None
        watcher = PidFd.from_fd(os.dup(p.pidfd.fileno()))
        with watcher:
            watcher.wait_exit(timeout=10)  # exited; nothing has waited yet
        left = os.path.exists(f"/proc/{p.pid}")
        assert p.wait(timeout=10) == 0
    return left


@autokill
def test_autokill_child_leaves_no_zombie() -> None:
    assert zombie_left(die_with_parent=False)  # the control
    assert not zombie_left(die_with_parent=True)


@autokill
@pytest.mark.parametrize("nnp", [False, True])
def test_autokill_child_wait_reads_its_status_from_the_pidfd(nnp: bool) -> None:
    with pidfd.Popen(
        ["sh", "-c", "read x; exit 7"],
        stdin=subprocess.PIPE,
        die_with_parent=True,
        no_new_privs=nnp,
    ) as p:
        assert p.spawn_path == "clone3"
        assert p.poll() is None
    # Leaving the block closed stdin: the shell exits 7.
    assert p.returncode == 7
    assert p.exit_status is not None and p.exit_status.code == 7
    assert p.rusage is None  # no wait4: the kernel keeps no usage for it
    killed = pidfd.Popen(["sleep", "30"], die_with_parent=True)
    killed.kill()
    assert killed.wait(timeout=10) == -signal.SIGKILL


@autokill
def test_autokill_child_dies_when_its_clone_pidfd_is_closed() -> None:
    p = pidfd.Popen(["sleep", "30"], die_with_parent=True)
    assert p.pidfd is not None
    watcher = PidFd.from_pid(p.pid)  # a pidfd_open'd one does not arm it
    with watcher:
        p.pidfd.close()
        status = watcher.wait_exit(timeout=10)
        assert status is not None and status.signal == signal.SIGKILL
    with contextlib.suppress(OSError):
        p.wait(timeout=10)


@autokill
@pytest.mark.anyio
async def test_autokill_child_is_awaited_by_run_process() -> None:
    done = await pidfd.run_process(["sh", "-c", "exit 5"], die_with_parent=True, check=False)
    assert done.returncode == 5
    assert done.rusage is None
    async with await pidfd.open_process(["sleep", "30"], die_with_parent=True) as process:
        process.kill()
        assert await process.wait() == -signal.SIGKILL
