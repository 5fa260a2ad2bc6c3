"""The ``/proc`` reads of the Python side, each parsed in one place.

Only what a pidfd cannot tell: which processes are our children (for
:class:`pidfd.Subreaper`), our controlling terminal (for the CLI's status
line), which process a thread id belongs to (for the CLI's advice), and
where our cgroup v2 lives (for :class:`pidfd.Cgroup`).
A pid read here is only a hint: whoever acts on it opens a pidfd first.
"""

from __future__ import annotations

import os
import re

__all__ = [
    "children",
    "controlling_tty",
    "mounts",
    "own_cgroup2",
    "stat_fields",
    "thread_group",
]


def stat_fields(pid: int | str = "self") -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command name, or None if it is gone.

    The command name (field 2) may hold spaces and parentheses, so the
    fields are split after the last ``)``: index 0 is the state (field 3 of
    proc(5)), 1 the ppid, 2 the pgrp, 3 the session, 4 tty_nr.
    """
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            text = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    _, paren, rest = text.rpartition(")")
    return rest.split() if paren else None


def _children_by_proc_children() -> set[int] | None:
    """Our children from ``/proc/self/task/*/children`` (``CONFIG_PROC_CHILDREN``)."""
    found: set[int] = set()
    seen_a_file = False
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/children", encoding="ascii") as f:
                text = f.read()
        except FileNotFoundError:
            # The thread has exited, or the kernel lacks the file.
            continue
        seen_a_file = True
        found.update(int(word) for word in text.split())
    return found if seen_a_file else None


def _children_by_scan() -> set[int]:
    """Our children by reading every ``/proc/PID/stat`` (the slow fallback)."""
    me = os.getpid()
    found: set[int] = set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        fields = stat_fields(name)
        if fields is not None and len(fields) > 1 and int(fields[1]) == me:
            found.add(int(name))
    return found


def children() -> set[int]:
    """The pids of this process's children (of any of its threads)."""
    found = _children_by_proc_children()
    return found if found is not None else _children_by_scan()


def controlling_tty() -> tuple[int, int] | None:
    """(major, minor) of this process's controlling terminal, or None."""
    try:
        fields = stat_fields()
        tty_nr = 0 if fields is None else int(fields[4])
    except (OSError, ValueError, IndexError):
        return None
    if tty_nr == 0:
        return None
    # The kernel's new_encode_dev(): minor bits 0-7 and 20-31, major 8-19.
    return (tty_nr >> 8) & 0xFFF, (tty_nr & 0xFF) | ((tty_nr >> 12) & 0xFFF00)


def thread_group(tid: int) -> int | None:
    """The process (thread group id) that thread ``tid`` belongs to, or None.

    ``/proc/TID`` is not listed for a thread that is not a group leader, but
    it can be opened; its ``status`` says ``Tgid``.
    """
    try:
        with open(f"/proc/{tid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Tgid:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _unescape_mount_field(field: str) -> str:
    """A mountinfo path field with the kernel's octal escapes (``\\040``) undone."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mounts() -> list[tuple[str, str, str]]:
    """``(mount point, root within the filesystem, fs type)`` of each mount.

    From ``/proc/self/mountinfo`` (proc(5)): field 4 is the root, field 5
    the mount point, and the fs type follows the ``-`` separator.
    """
    found: list[tuple[str, str, str]] = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            fields = line.split()
            try:
                sep = fields.index("-", 6)
                root, point, fstype = fields[3], fields[4], fields[sep + 1]
            except (ValueError, IndexError):
                continue
            found.append((_unescape_mount_field(point), _unescape_mount_field(root), fstype))
    return found


def own_cgroup2() -> str | None:
    """This process's cgroup v2 path (the ``0::/path`` line), or None on v1 only."""
    try:
        with open("/proc/self/cgroup", encoding="utf-8", errors="surrogateescape") as f:
            for line in f:
                if line.startswith("0::"):
                    return line[3:].rstrip("\n")
    except FileNotFoundError:
        return None
    return None
