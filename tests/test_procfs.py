"""The /proc reads the Python side shares (pidfd._procfs): one stat parser."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from pidfd import _procfs

# A command name that looks like the end of the name and more fields.
TRICKY = "x) R 1 2 (y"


@pytest.fixture
def tricky_child() -> Iterator[subprocess.Popen[bytes]]:
    """A child that renames itself to TRICKY, then waits for its stdin to close."""
    code = (
        "import sys\n"
        f"open('/proc/self/comm', 'w').write({TRICKY!r})\n"
        "print('ready', flush=True)\n"
        "sys.stdin.read()\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert child.stdout is not None and child.stdin is not None
    assert child.stdout.readline() == b"ready\n"
    yield child
    child.stdin.close()
    child.wait()
    child.stdout.close()


def test_stat_fields_after_the_last_paren(tricky_child: subprocess.Popen[bytes]) -> None:
    fields = _procfs.stat_fields(tricky_child.pid)
    assert fields is not None
    state, ppid = fields[0], int(fields[1])
    assert state in "RSD"
    assert ppid == os.getpid()


def test_stat_fields_of_a_missing_pid_is_none() -> None:
    assert _procfs.stat_fields(2**22 + 12345) is None  # above the default pid_max


def test_children_both_ways(tricky_child: subprocess.Popen[bytes]) -> None:
    assert tricky_child.pid in _procfs.children()
    assert tricky_child.pid in _procfs._children_by_scan()


def test_thread_group_of_a_thread() -> None:
    started = threading.Event()
    done = threading.Event()

    def body() -> None:
        started.set()
        done.wait()

    thread = threading.Thread(target=body)
    thread.start()
    try:
        started.wait()
        assert thread.native_id is not None
        assert _procfs.thread_group(thread.native_id) == os.getpid()
    finally:
        done.set()
        thread.join()
    assert _procfs.thread_group(os.getpid()) == os.getpid()


def test_controlling_tty_is_a_device_number_or_none() -> None:
    tty = _procfs.controlling_tty()
    assert tty is None or (tty[0] >= 0 and tty[1] >= 0)
