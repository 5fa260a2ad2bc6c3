"""The pytest plugin's transient cgroup v2 per test (``--pidfd-leaks-cgroup``).

Kept apart from `pidfd.pytest_plugin` so that the plugin module holds the
hooks and the checks; this one only moves pytest in and out of a cgroup and
kills what a test left in it.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from pidfd import _procfs


def cgroup2_mount() -> tuple[str, Path]:
    """(root inside the hierarchy, mount point) of the cgroup v2 mount."""
    for point, root, fstype in _procfs.mounts():
        if fstype == "cgroup2":
            return root, Path(point)
    raise OSError("no cgroup v2 (cgroup2) file system is mounted")


class Cgroups:
    """A transient cgroup v2 per test, a child of the one pytest runs in.

    For each test pytest moves itself into a fresh child cgroup, so that
    everything the test starts is born there, whatever it does afterwards;
    after teardown pytest moves back, and what is still in the test's cgroup
    was left by the test.
    """

    def __init__(self) -> None:
        root, mount = cgroup2_mount()
        path = _procfs.own_cgroup2()
        if path is None:
            raise OSError("pytest runs in no cgroup v2 (no 0:: line in /proc/self/cgroup)")
        inside = os.path.relpath(path, root)
        if inside.startswith(".."):
            raise OSError(f"pytest's cgroup {path} is outside the cgroup2 mount at {mount}")
        self.base = (mount / inside).resolve()
        self.current: Path | None = None
        self._count = 0
        # Fail now, not in the first test: can we make, enter and kill one?
        self.enter()
        try:
            if not (self.base / f"pidfd-leaks-{os.getpid()}-1" / "cgroup.kill").exists():
                raise OSError("cgroup.kill is missing (Linux >= 5.14 needed)")
        finally:
            self.leave()
            self.remove(kill=True)

    def enter(self) -> None:
        self._count += 1
        path = self.base / f"pidfd-leaks-{os.getpid()}-{self._count}"
        path.mkdir()
        self.current = path
        # Moves every thread of pytest: what any of them starts is born here.
        self._move([os.getpid()], path)

    def leave(self) -> None:
        self._move([os.getpid()], self.base)

    def procs(self) -> set[int]:
        if self.current is None:
            return set()
        return {int(w) for w in (self.current / "cgroup.procs").read_text().split()}

    def release(self, pids: set[int]) -> None:
        """Move ``pids`` out of the test's cgroup, to pytest's own."""
        self._move(sorted(pids), self.base)

    def remove(self, *, kill: bool) -> None:
        """Kill what is left (or, with ``kill`` false, move it out); remove the cgroup."""
        path, self.current = self.current, None
        if path is None:
            return
        if kill:
            (path / "cgroup.kill").write_text("1")
        else:
            self._move(
                sorted(int(w) for w in (path / "cgroup.procs").read_text().split()), self.base
            )
        deadline = time.monotonic() + 10
        while "populated 1" in (path / "cgroup.events").read_text():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{path} did not empty within 10 s")
            time.sleep(0.005)
        path.rmdir()

    @staticmethod
    def _move(pids: list[int], to: Path) -> None:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):  # gone meanwhile
                (to / "cgroup.procs").write_text(str(pid))
