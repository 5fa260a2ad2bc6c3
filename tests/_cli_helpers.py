"""What the tests of the ``pidfd`` command share (tests/test_cli*.py).

The command under test is the console script installed next to this
interpreter (the venv's), else ``python -m pidfd``. Children that must stay
alive until the test is ready block on a pipe instead of sleeping, so no
test depends on timing except the ``--timeout`` cases.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import select
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_script = Path(sys.executable).with_name("pidfd")
PIDFD = [str(_script)] if _script.exists() else [sys.executable, "-m", "pidfd"]

# Generous: a loaded CI machine can take a while to start Python.
LIMIT = 20.0


def cli(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run ``pidfd ARGS`` to completion; capture stdout and stderr as text."""
    return subprocess.run(
        [*PIDFD, *args], capture_output=True, text=True, timeout=LIMIT, check=False, **kwargs
    )


def py(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


@contextlib.contextmanager
def started(argv: list[str], **kwargs: Any) -> Iterator[subprocess.Popen[bytes]]:
    """Popen that is always killed and reaped, its pipes closed, even on failure."""
    with subprocess.Popen(argv, **kwargs) as proc:
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def read_until(fd: int, needle: bytes, timeout: float = LIMIT) -> bytes:
    """Read from ``fd`` until ``needle`` shows up; fail on EOF or timeout."""
    data = b""
    deadline = time.monotonic() + timeout
    while needle not in data:
        left = deadline - time.monotonic()
        assert left > 0, f"timed out waiting for {needle!r}; got {data!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the pty's other side is closed
                chunk = b""
            assert chunk, f"EOF before {needle!r}; got {data!r}"
            data += chunk
    return data


def read_all(fd: int, timeout: float = LIMIT) -> bytes:
    """Read ``fd`` to EOF (or EIO, for a pty whose slave side has closed)."""
    data = b""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"timed out reading; got {data!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                return data
            if not chunk:
                return data
            data += chunk


def last_json(stdout: str) -> dict[str, Any]:
    """The JSON report: the last line (the command's own output comes first)."""
    result: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    return result


def missing_pid() -> int:
    """A pid that cannot exist: pids are always below kernel.pid_max."""
    return int(Path("/proc/sys/kernel/pid_max").read_text())


# A child that waits until its stdin closes, then exits with the code given.
BLOCKED = "import sys; sys.stdin.read(); sys.exit({code})"


# A session leader whose controlling terminal is the pty fd argv[1], which
# then execs argv[2:]: the terminal's foreground group is that process's.
CTTY = (
    "import fcntl, os, sys, termios; os.setsid(); fd = int(sys.argv[1]); "
    "fcntl.ioctl(fd, termios.TIOCSCTTY, 0); fd > 2 and os.close(fd); "
    "os.execvp(sys.argv[2], sys.argv[2:])"
)
PTY = object()  # stands for the pty's slave side in on_pty()'s stdio arguments


@contextlib.contextmanager
def on_pty(
    argv: list[str], *, keep_open: bool = False, **stdio: Any
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """Start ``argv`` on a new pty as its controlling terminal; yield (proc, master fd).

    ``stdin``/``stdout``/``stderr`` given as :data:`PTY` are the terminal;
    anything else is passed to Popen as it is. ``keep_open`` keeps our own
    copy of the terminal open, so that reading the master does not fail
    with EIO while no process has it open (reads then never see EOF).
    """
    master, slave = pty.openpty()
    try:
        kwargs = {k: (slave if v is PTY else v) for k, v in stdio.items()}
        with started(
            [sys.executable, "-c", CTTY, str(slave), *argv], pass_fds=(slave,), **kwargs
        ) as proc:
            if not keep_open:
                os.close(slave)
                slave = -1
            yield proc, master
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)


SLOW = "import time; time.sleep(1.6)"  # outlives RUN_STATUS_DELAY (1 s)
