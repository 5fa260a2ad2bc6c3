"""The native spawn (clone3 with CLONE_PIDFD): what it starts, what it
reports, and that it never leaves the event loop waiting for an exec.

Each outcome is held against stock `subprocess.Popen` on the same input:
the native path must be indistinguishable but for the pidfd.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

import pidfd
from conftest import open_fds

PY = sys.executable
LEADS_SESSION = [PY, "-c", "import os; print(os.getsid(0) == os.getpid())"]
LEADS_GROUP = [PY, "-c", "import os; print(os.getpgid(0) == os.getpid())"]


def outcome(popen_class: Any, args: Any, **kwargs: Any) -> tuple[Any, ...]:
    """What starting ``args`` gives: the exception (type, errno, filename)
    or the exit code and output."""
    try:
        p = popen_class(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kwargs)
    except (OSError, subprocess.SubprocessError, ValueError, TypeError, IndexError) as e:
        return (type(e), getattr(e, "errno", None), getattr(e, "filename", None), str(e))
    out, _ = p.communicate(timeout=60)
    return (p.returncode, out)


def test_native_spawn_is_used() -> None:
    p = pidfd.Popen(["/bin/true"])
    assert p.spawn_path == "clone3"
    assert p.pidfd is not None
    assert p.wait() == 0


CASES: list[tuple[str, Any, dict[str, Any]]] = [
    ("missing program", ["no-such-program-xyz"], {}),
    ("missing path", ["/no/such/dir/prog"], {}),
    ("not executable", ["/etc/hostname"], {}),
    ("a directory", ["/"], {}),
    ("cwd missing", ["/bin/true"], {"cwd": "/no/such/dir"}),
    ("cwd a file", ["/bin/true"], {"cwd": "/etc/hostname"}),
    ("empty PATH", ["true"], {"env": {"PATH": ""}}),
    ("PATH search", ["sh", "-c", "echo $0 $FOO"], {"env": {"PATH": "/usr/bin:/bin", "FOO": "x"}}),
    ("nul in arg", ["/bin/echo", "a\0b"], {}),
    ("nul in env", ["/bin/true"], {"env": {"A": "b\0c"}}),
    ("= in env name", ["/bin/true"], {"env": {"A=B": "c"}}),
    ("bad arg type", ["/bin/echo", 3], {}),
    ("shell", "echo shell $((1+2)); exit 7", {"shell": True}),
    ("cwd", ["/bin/pwd"], {"cwd": "/"}),
    ("umask", ["sh", "-c", "umask"], {"umask": 0o27}),
    (
        "new session",
        [PY, "-c", "import os; print(os.getsid(0) == os.getpid())"],
        {"start_new_session": True},
    ),
    (
        "process group",
        [PY, "-c", "import os; print(os.getpgid(0) == os.getpid())"],
        {"process_group": 0},
    ),
    ("restore signals", ["sh", "-c", "grep SigIgn /proc/self/status"], {"restore_signals": True}),
    ("keep signals", ["sh", "-c", "grep SigIgn /proc/self/status"], {"restore_signals": False}),
    ("no close_fds", ["sh", "-c", "ls /proc/self/fd | wc -l"], {"close_fds": False}),
    ("bytes args", [b"/bin/echo", b"\xff"], {}),
    ("path-like", [Path("/bin/echo"), Path("x")], {}),
    ("undecodable str arg", ["/bin/echo", "a\udcff"], {}),
    ("path-like cwd", ["/bin/pwd"], {"cwd": Path("/")}),
    ("bytes cwd", ["/bin/pwd"], {"cwd": b"/"}),
    ("bad cwd type", ["/bin/pwd"], {"cwd": 3}),
    ("negative pass_fds", ["/bin/true"], {"pass_fds": (-1,)}),
    ("pass_fds beyond an int", ["/bin/true"], {"pass_fds": (2**40,)}),
    ("PATH entry with a slash", ["sh", "-c", "echo $0"], {"env": {"PATH": "/bin/"}}),
    ("PATH entry empty", ["true"], {"env": {"PATH": ":/bin"}}),
    ("bytes env", ["/bin/sh", "-c", "echo $A"], {"env": {b"A": b"b"}}),
    ("path-like env value", ["/bin/sh", "-c", "echo $A"], {"env": {"A": Path("/x")}}),
    ("stdin devnull", ["/bin/true"], {"stdin": subprocess.DEVNULL}),
]


class _Iterable:
    """Arguments as an iterable that is neither a list nor a tuple."""

    def __init__(self, items: list[str]) -> None:
        self.items = items

    def __iter__(self) -> Any:
        return iter(self.items)


# The argument forms Popen takes (open_process takes others), which the
# plain spawn handles in Rust (src/execute.rs).
POPEN_CASES: list[tuple[str, Any, dict[str, Any]]] = [
    ("a str program", "/bin/true", {}),
    ("a bytes program", b"/bin/true", {}),
    ("a tuple", ("/bin/echo", "t"), {}),
    ("an iterable", _Iterable(["/bin/echo", "i"]), {}),
    ("not iterable", 3, {}),
    ("empty args", [], {}),
    ("shell with executable", "echo $0", {"shell": True, "executable": "/bin/bash"}),
    ("path-like with shell", Path("/bin/true"), {"shell": True}),
    ("executable given", ["name-as-argv0", "x"], {"executable": "/bin/echo"}),
    ("pass_fds kept", ["/bin/sh", "-c", "test -e /proc/self/fd/0"], {"pass_fds": (0, 0)}),
]


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [c[1:] for c in CASES + POPEN_CASES],
    ids=[c[0] for c in CASES + POPEN_CASES],
)
def test_same_outcome_as_subprocess(args: Any, kwargs: dict[str, Any]) -> None:
    before = open_fds()
    ours = outcome(pidfd.Popen, args, **kwargs)
    assert open_fds() == before, "the native spawn leaked an fd"
    assert ours == outcome(subprocess.Popen, args, **kwargs)


def test_exec_failure_reaps_the_child() -> None:
    """The failed child is reaped before the exception: no zombie is left."""
    children = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children")
    before = children.read_text().split()
    for _ in range(20):
        with pytest.raises(FileNotFoundError):
            pidfd.Popen(["no-such-program-xyz"])
    assert children.read_text().split() == before


def test_pass_fds_and_close_fds() -> None:
    r, w = os.pipe()
    other_r, other_w = os.pipe()
    os.set_inheritable(other_w, True)  # inheritable, but not passed: closed
    try:
        probe = f"import os; os.write({w}, b'ok'); print(os.path.exists('/proc/self/fd/{other_w}'))"
        done = pidfd.run([PY, "-c", probe], pass_fds=[w], capture_output=True, text=True)
        assert done.stdout.strip() == "False"
        assert os.read(r, 2) == b"ok"
    finally:
        for fd in (r, w, other_r, other_w):
            os.close(fd)


def test_standard_streams_swapped() -> None:
    """A child end that sits on another standard fd is not overwritten by
    the dups (stdout to fd 2, stderr to fd 1), as CPython's child guards."""
    code = "import sys; sys.stdout.write('out'); sys.stderr.write('err')"
    for cls in (pidfd.Popen, subprocess.Popen):
        with open(os.devnull, "rb") as devnull:
            r1, w1 = os.pipe()
            r2, w2 = os.pipe()
            p = cls([PY, "-c", code], stdin=devnull, stdout=w2, stderr=w1)
            os.close(w1)
            os.close(w2)
            assert p.wait() == 0
            got = (os.read(r1, 10), os.read(r2, 10))
            os.close(r1)
            os.close(r2)
            assert got == (b"err", b"out"), cls


def test_caught_signals_are_default_in_the_child() -> None:
    """A Python handler in the parent is not the child's: the child starts
    with SIGUSR1's default action (it dies of it), SIG_IGN stays ignored."""
    old_usr1 = signal.signal(signal.SIGUSR1, lambda *_: None)
    old_usr2 = signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    try:
        code = "grep -E 'SigIgn|SigCgt' /proc/self/status; kill -USR1 $$; echo survived"
        done = pidfd.run(["sh", "-c", code], capture_output=True, text=True)
    finally:
        signal.signal(signal.SIGUSR1, old_usr1)
        signal.signal(signal.SIGUSR2, old_usr2)
    assert done.returncode == -signal.SIGUSR1, done
    ignored = int(done.stdout.split("SigIgn:")[1].split()[0], 16)
    assert ignored & (1 << (signal.SIGUSR2 - 1))


def test_signal_mask_is_restored_in_the_child() -> None:
    """Signals are blocked across the clone, never in the exec'd program."""
    done = pidfd.run(["grep", "SigBlk", "/proc/self/status"], capture_output=True, text=True)
    assert int(done.stdout.split()[1], 16) == 0, done.stdout


def test_sigchld_ignored_every_child_has_its_pidfd() -> None:
    """With SIGCHLD ignored the kernel reaps a child the moment it exits; a
    pidfd opened after the spawn (the stock path) comes too late for some
    that exit at once. The clone returns ours: never late."""
    old = signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    missing = []
    try:
        for _ in range(1000):
            p = pidfd.Popen(["/bin/true"])
            if p.pidfd is None:
                missing.append(p.pid)
            p.wait()
            assert p.pidfd is None  # closed once the exit is known
    finally:
        signal.signal(signal.SIGCHLD, old)
    assert missing == []


@pytest.mark.parametrize(
    ("kwargs", "path"),
    [
        ({}, "clone3"),
        ({"preexec_fn": os.getpid}, "subprocess"),
        ({"close_fds": False, "start_new_session": True, "umask": 0o22}, "clone3"),
        ({"user": os.getuid(), "group": os.getgid(), "extra_groups": [os.getgid()]}, "clone3"),
    ],
    ids=["plain", "preexec_fn", "options", "credentials"],
)
def test_spawn_path_says_which_spawn_started_the_child(kwargs: dict[str, Any], path: str) -> None:
    p = pidfd.Popen(["/bin/true"], **kwargs)
    assert p.spawn_path == path
    assert p.wait() == 0


def test_mocked_fork_exec_is_called(monkeypatch: pytest.MonkeyPatch) -> None:
    """Code that replaces subprocess._fork_exec (a test checking its calls)
    gets its replacement called: the native spawn steps aside."""
    calls = []

    def fake(*args: Any) -> int:
        calls.append(args)
        raise RuntimeError("fake fork_exec")

    monkeypatch.setattr(subprocess, "_fork_exec", fake)
    with pytest.raises(RuntimeError, match="fake fork_exec"):
        # A cwd: CPython 3.13 would use posix_spawn (not _fork_exec) without.
        pidfd.Popen(["/bin/true"], cwd="/")
    assert len(calls) == 1


# -- the event loop's spawn ------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(("args", "kwargs"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_open_process_same_outcome_as_subprocess(args: Any, kwargs: dict[str, Any]) -> None:
    kwargs = dict(kwargs)
    kwargs.pop("shell", None)  # a str command is run by the shell in open_process
    if {"restore_signals", "close_fds"} & kwargs.keys():
        pytest.skip("not an open_process argument (anyio's has neither)")
    before = open_fds()
    try:
        done = await pidfd.run_process(args, stderr=subprocess.STDOUT, check=False, **kwargs)
    except (OSError, subprocess.SubprocessError, ValueError, TypeError, IndexError) as e:
        ours: tuple[Any, ...] = (type(e), getattr(e, "errno", None), getattr(e, "filename", None))
    else:
        ours = (done.returncode, done.stdout)
    assert open_fds() == before, "the spawn leaked an fd"
    stock = outcome(subprocess.Popen, args, shell=isinstance(args, str), **kwargs)
    assert ours == (stock[:3] if len(stock) == 4 else stock)


@pytest.mark.anyio
async def test_sigchld_ignored_open_process_holds_pidfds() -> None:
    old = signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    try:
        for _ in range(100):
            async with await pidfd.open_process(["/bin/true"]) as process:
                assert process.pidfd is not None
                await process.wait()
    finally:
        signal.signal(signal.SIGCHLD, old)


@pytest.mark.anyio
async def test_a_burst_of_spawns_takes_turns_with_the_loop() -> None:
    """200 spawns at once: another task runs between them (it is not kept
    waiting until all have started). Counted in turns, not timed."""
    started = 0
    seen: list[int] = []

    async def one() -> None:
        nonlocal started
        async with await pidfd.open_process(["/bin/true"]) as process:
            started += 1
            await process.wait()

    async def watcher() -> None:
        while started < 200:
            seen.append(started)
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        tg.start_soon(watcher)
        for _ in range(200):
            tg.start_soon(one)
    # The watcher saw the count at many points in between, not 0 then 200.
    assert len({n for n in seen if 0 < n < 200}) > 20, sorted(set(seen))[:40]


def my_children() -> list[str]:
    return Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").read_text().split()


@pytest.mark.anyio
async def test_cancelled_start_kills_and_reaps() -> None:
    """Cancelled once the child exists (between the clone and the return of
    open_process): the child is killed and reaped, no fd is left."""
    before_fds, before = open_fds(), my_children()
    scope = anyio.CancelScope()
    result: list[object] = []

    async def starter() -> None:
        with scope:
            result.append(await pidfd.open_process(["sleep", "30"]))

    async with anyio.create_task_group() as tg:
        tg.start_soon(starter)
        with anyio.fail_after(30):
            while my_children() == before:
                await anyio.lowlevel.checkpoint()
        scope.cancel()
    assert result == [] and scope.cancelled_caught
    assert my_children() == before
    assert open_fds() == before_fds


def test_errno_of_exec_failure_is_exact(tmp_path: Path) -> None:
    program = tmp_path / "not-executable"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o644)
    with pytest.raises(PermissionError) as info:
        pidfd.Popen([str(program)])
    assert info.value.errno == errno.EACCES and info.value.filename == str(program)
