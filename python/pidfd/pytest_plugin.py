"""The pytest plugin: no test leaves a process behind.

Installed with the wheel as the ``pytest11`` entry point ``pidfd`` and
inactive until asked: ``--pidfd-leaks=MODE`` or ``pidfd_leaks = MODE`` in
the ini file, MODE one of ``off`` (the default), ``report``, ``kill`` or
``fail``. Inactive, it registers its options and the ``pidfd_processes``
fixture and nothing else: no hook runs per test, the subreaper flag is left
alone.

Active, pytest becomes a child subreaper for the session, so a process that
a test started and whose parent then exited (a daemon's double fork, a
shell's background job) is re-parented to pytest and stays in view. After
each test's teardown every child of pytest that was not there before the
test began, and that no wider-scoped fixture started, is left over: alive or
an unreaped zombie. Children started while a class, module, package or
session fixture was set up belong to that fixture and are checked when it is
finalized instead.

Nothing is reaped while a test runs -- a test that waits for its children
with ``os.waitpid(-1, ...)`` sees exactly the children it would see without
the plugin, plus the orphans it left itself. Leftovers are held by pidfds
and reaped through them, one by one, never with ``waitpid(-1)``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shlex
import signal
import time
import warnings
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest

from pidfd import _children as _popen_children
from pidfd import _procfs
from pidfd._leak_cgroups import Cgroups as _Cgroups
from pidfd._native import ExitStatus, PidFd, _child_subreaper, _set_child_subreaper
from pidfd._native import wait_any as _wait_any
from pidfd._procfs import children as _children
from pidfd._subreaper import _still_our_child

__all__ = ["LeakedProcessWarning", "LeftProcess"]

MODES = ("off", "report", "kill", "fail")

# How often the teardown looks for processes adopted while it waits: a
# grandchild whose parent we just killed is re-parented to us without a
# wake-up on any pidfd we hold.
_RESCAN = 0.05

_PLUGIN_NAME = "pidfd-leaks"


class LeakedProcessWarning(pytest.PytestWarning):
    """A process a test (or a fixture) started was still there after it ended.

    Issued in ``report`` and ``kill`` mode; ``-W
    error::pidfd.pytest_plugin.LeakedProcessWarning`` turns it into a
    teardown error, as ``fail`` mode does.
    """

    __module__ = "pidfd.pytest_plugin"


@dataclasses.dataclass(frozen=True)
class LeftProcess:
    """One process a test started that has not been reaped.

    ``found`` says how it was found: ``"child"`` when a ``subprocess.Popen``
    (or :class:`pidfd.Popen`) of this interpreter holds it, ``"orphan"``
    otherwise -- re-parented to pytest when its parent exited, or started
    without a ``Popen`` (a bare ``os.fork``).
    """

    pid: int
    cmdline: str
    found: str
    zombie: bool

    def describe(self) -> str:
        state = ", a zombie" if self.zombie else ""
        return f"pid {self.pid} ({self.found}{state}): {self.cmdline}"


def _read_process(pid: int, popen_pids: set[int]) -> LeftProcess | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name sits in parentheses and may hold either: split at the last.
    comm = stat[stat.find("(") + 1 : stat.rfind(")")]
    state = stat.rsplit(")", 1)[1].split()[0]
    words = [w.decode(errors="replace") for w in raw.split(b"\0")[:-1]]
    cmdline = shlex.join(words) if words else f"[{comm}]"
    found = "child" if pid in popen_pids else "orphan"
    return LeftProcess(pid=pid, cmdline=cmdline, found=found, zombie=state == "Z")


def _popen_pids() -> set[int]:
    """The pids some live ``Popen`` object of this interpreter still owns."""
    import gc
    import subprocess

    pids = _popen_children.pids()
    # Only called when something was left: the walk costs what it costs.
    for obj in gc.get_objects():
        if isinstance(obj, subprocess.Popen) and obj.returncode is None:
            pids.add(obj.pid)
    return pids


def _describe(pids: set[int]) -> list[LeftProcess]:
    popen_pids = _popen_pids()
    found = (_read_process(pid, popen_pids) for pid in sorted(pids))
    return [p for p in found if p is not None]


def _end_all(
    pids: set[int], ignore: set[int], grace: float
) -> tuple[dict[int, str], list[LeftProcess]]:
    """End ``pids`` (our children) and whatever they leave: TERM, ``grace``, KILL.

    Each is held by a pidfd and reaped through it. Children adopted meanwhile
    (grandchildren re-parented as their parents die) that are not in
    ``ignore`` are ended too. Returns how each one ended, by pid, and what
    those adopted late were.
    """
    held: dict[int, PidFd] = {}
    ended: dict[int, str] = {}
    late: list[LeftProcess] = []

    def adopt(candidates: set[int], *, more: bool = True) -> list[PidFd]:
        new = []
        for pid in candidates:
            if pid in held or pid in ended or pid in ignore:
                continue
            try:
                handle = PidFd.from_pid(pid)
            except ProcessLookupError:
                continue
            if not _still_our_child(handle):
                handle.close()  # reaped meanwhile, the pid reused by a stranger
                continue
            if more:
                process = _read_process(pid, set())
                if process is not None:
                    late.append(dataclasses.replace(process, found="orphan, adopted meanwhile"))
            held[pid] = handle
            new.append(handle)
        return new

    def reap() -> None:
        for pid, handle in list(held.items()):
            try:
                info = handle.try_wait()
            except ChildProcessError:
                ended[pid] = "reaped by someone else"
            else:
                if info is None:
                    continue
                ended[pid] = _how(info.status)
            handle.close()
            del held[pid]

    def send(handles: list[PidFd], sig: int) -> None:
        for handle in handles:
            with contextlib.suppress(ProcessLookupError):
                handle.send_signal(sig)
                if sig == signal.SIGTERM:
                    handle.send_signal(signal.SIGCONT)  # a stopped one must see it

    try:
        adopt(pids, more=False)
        reap()  # zombies need no signal
        send(list(held.values()), signal.SIGTERM)
        deadline = time.monotonic() + grace
        killing = False
        while True:
            reap()
            new = adopt(_children())
            if not killing and time.monotonic() >= deadline:
                killing = True
                send(list(held.values()), signal.SIGKILL)
            else:
                send(new, signal.SIGKILL if killing else signal.SIGTERM)
            if not held:
                return ended, late
            wait = _RESCAN if killing else max(0.0, min(_RESCAN, deadline - time.monotonic()))
            with contextlib.suppress(TimeoutError):
                _wait_any(list(held.values()), wait)
    except BaseException:
        # Ctrl-C (or a timeout's exception) during the grace: no more grace.
        while held:
            send(list(held.values()), signal.SIGKILL)
            with contextlib.suppress(TimeoutError):
                _wait_any(list(held.values()), _RESCAN)
            reap()
            adopt(_children())
        raise
    finally:
        for handle in held.values():
            handle.close()


def _is_zombie(pid: int) -> bool:
    fields = _procfs.stat_fields(pid)
    return fields is not None and fields[:1] == ["Z"]


def _reap_zombies(pids: list[int]) -> None:
    for pid in pids:
        try:
            handle = PidFd.from_pid(pid)
        except ProcessLookupError:
            continue
        with handle, contextlib.suppress(ChildProcessError):
            if _still_our_child(handle):
                handle.try_wait()


def _how(status: ExitStatus) -> str:
    if status.signal is not None:
        return f"ended by {signal.Signals(status.signal).name}"
    return f"exited with {status.code}"


def _end_strays(pids: set[int], grace: float) -> dict[int, str]:
    """SIGTERM processes that are not our children; after ``grace``, say which
    ended. What is left is killed with its cgroup. They cannot be reaped here."""
    handles = []
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            handles.append(PidFd.from_pid(pid))
    try:
        for handle in handles:
            with contextlib.suppress(ProcessLookupError):
                handle.send_signal(signal.SIGTERM)
                handle.send_signal(signal.SIGCONT)
        deadline = time.monotonic() + grace
        while any(h.is_alive() for h in handles) and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                _wait_any([h for h in handles if h.is_alive()], deadline - time.monotonic())
        return {
            h.pid: "killed by cgroup.kill" if h.is_alive() else "ended after SIGTERM"
            for h in handles
        }
    finally:
        for handle in handles:
            handle.close()


@dataclasses.dataclass
class _Owner:
    """A wider-scoped fixture that started processes."""

    fixturedef: pytest.FixtureDef[object]
    pids: set[int]

    def name(self) -> str:
        return f"the {self.fixturedef.scope}-scoped fixture {self.fixturedef.argname!r}"


class _Checker:
    """The active plugin: one per session (per xdist worker)."""

    def __init__(self, mode: str, grace: float, rootpath: Path, cgroups: _Cgroups | None) -> None:
        self.mode = mode
        self.grace = grace
        self.rootpath = rootpath
        self.cgroups = cgroups
        self._before: set[int] | None = None
        self._owners: list[_Owner] = []
        self._due: list[_Owner] = []

    def owned(self) -> set[int]:
        return {pid for owner in self._owners for pid in owner.pids}

    def started_by_test(self) -> set[int]:
        """Children the current test started (so far), alive or zombie."""
        before = self._before if self._before is not None else set()
        return _children() - before - self.owned()

    # -- hooks ------------------------------------------------------------------------

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> Generator[None]:
        if self.cgroups is not None:
            self.cgroups.enter()
        self._before = _children() - self.owned()
        return (yield)

    @pytest.hookimpl(wrapper=True)
    def pytest_fixture_setup(
        self, fixturedef: pytest.FixtureDef[object], request: pytest.FixtureRequest
    ) -> Generator[None, object, object]:
        if fixturedef.scope == "function":
            return (yield)
        before = _children()
        in_cgroup = self.cgroups.procs() if self.cgroups is not None else set()
        try:
            return (yield)
        finally:
            # A fixture that requested another one inside its body: the
            # inner one has claimed its own already.
            new = _children() - before - self.owned()
            if self.cgroups is not None:
                # Not the test's: they outlive its cgroup.
                born = self.cgroups.procs() - in_cgroup - {os.getpid()}
                self.cgroups.release(born)
                new |= born - self.owned()
            if new:
                self._owners.append(_Owner(fixturedef, new))

    @pytest.hookimpl
    def pytest_fixture_post_finalizer(
        self, fixturedef: pytest.FixtureDef[object], request: pytest.FixtureRequest
    ) -> None:
        for owner in [o for o in self._owners if o.fixturedef is fixturedef]:
            self._owners.remove(owner)
            self._due.append(owner)

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_teardown(
        self, item: pytest.Item, nextitem: pytest.Item | None
    ) -> Generator[None]:
        try:
            return (yield)
        finally:
            # Also when a fixture's teardown failed: what it left is still left.
            if self.cgroups is not None:
                self.cgroups.leave()
            self._check(item)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        # Fixtures finalized by the session's end (after -x, Ctrl-C), and
        # any never finalized.
        self._due.extend(self._owners)
        self._owners.clear()
        failure = self._check(None, raise_=False)
        if failure is not None:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
            reporter = session.config.pluginmanager.get_plugin("terminalreporter")
            if reporter is not None:
                reporter.write_line(failure, red=True)

    # -- the check ----------------------------------------------------------------------

    def _find(
        self, item: pytest.Item | None, before: set[int] | None
    ) -> tuple[set[int], list[tuple[str, list[LeftProcess], object]]]:
        """Our children now, and what the test and the due fixtures left.

        An orphan left that has exited is a zombie only because pytest is
        the subreaper: without the plugin init would have reaped it, and no
        ``Popen`` is there to do it. It is reaped without a word, and its own
        children, re-parented to us as it exited, are looked at again.
        """
        while True:
            alive = _children()
            groups: list[tuple[str, list[LeftProcess], object]] = []
            if item is not None and before is not None:
                # The fixtures finalized in this teardown own theirs still.
                due = {pid for owner in self._due for pid in owner.pids}
                left = alive - before - self.owned() - due
                if left:
                    groups.append(
                        (f"the test {item.nodeid}", _describe(left), getattr(item, "obj", None))
                    )
            for owner in self._due:
                left = owner.pids & alive
                if left:
                    groups.append((owner.name(), _describe(left), owner.fixturedef.func))
            exited = [
                p.pid for _, found, _ in groups for p in found if p.zombie and p.found == "orphan"
            ]
            if not exited:
                return alive, [group for group in groups if group[1]]
            _reap_zombies(exited)

    def _check(self, item: pytest.Item | None, *, raise_: bool = True) -> str | None:
        """Find, report and (unless ``report``) end what was left; in ``fail``
        mode raise (or, with ``raise_`` false, return) the report."""
        before, self._before = self._before, None
        try:
            alive, groups = self._find(item, before)
            strays: set[int] = set()
            if self.cgroups is not None and item is not None:
                # In the test's cgroup and not our children: moved out of
                # our tree, to a subreaper of their own or to init.
                strays = self.cgroups.procs() - alive - self.owned()
                found = [
                    dataclasses.replace(p, found="in the test's cgroup") for p in _describe(strays)
                ]
                if found:
                    if groups and groups[0][0].startswith("the test "):
                        groups[0][1].extend(found)
                    else:
                        groups.insert(
                            0, (f"the test {item.nodeid}", found, getattr(item, "obj", None))
                        )
            return self._report(groups, alive, strays, raise_=raise_)
        finally:
            self._due.clear()
            if self.cgroups is not None:
                self.cgroups.remove(kill=self.mode != "report")

    def _report(
        self,
        groups: list[tuple[str, list[LeftProcess], object]],
        alive: set[int],
        strays: set[int],
        *,
        raise_: bool,
    ) -> str | None:
        if not groups:
            return None
        texts = []
        for who, found, source in groups:
            pids = {p.pid for p in found} - strays
            # What was there before, fixtures' and the other groups' own.
            ignore = alive - pids
            ended, late = _end_all(pids, ignore, self.grace) if self.mode != "report" else ({}, [])
            if self.mode != "report":
                ended.update(_end_strays({p.pid for p in found} & strays, self.grace))
            count = len(found) + len(late)
            lines = [f"{who} left {count} {'process' if count == 1 else 'processes'} behind:"]
            for process in [*found, *late]:
                how = ended.get(process.pid)
                lines.append(f"  {process.describe()}" + (f" -- {how}" if how else ""))
            text = "\n".join(lines)
            texts.append(text)
            if self.mode != "fail":
                # Pointing at the test (or fixture) that left them, as the
                # summary of any warning shows where it came from.
                # Relative to the rootdir, as pytest names tests.
                code = getattr(source, "__code__", None)
                filename, lineno = "<pytest session>", 0
                if code is not None:
                    path = Path(code.co_filename)
                    with contextlib.suppress(ValueError):
                        path = path.relative_to(self.rootpath)
                    filename, lineno = str(path), code.co_firstlineno
                warnings.warn_explicit(
                    LeakedProcessWarning(text), LeakedProcessWarning, filename, lineno
                )
        if self.mode != "fail" or not texts:
            return None
        failure = "\n".join(texts)
        if raise_:
            pytest.fail(failure, pytrace=False)
        return failure


# -- registration -----------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("pidfd", "leftover processes (async-pidfd)")
    group.addoption(
        "--pidfd-leaks",
        choices=MODES,
        default=None,
        metavar="MODE",
        help="find processes a test leaves behind: off (default), report (warn), "
        "kill (warn, then end them), fail (end them and fail the test). "
        "Ini: pidfd_leaks.",
    )
    group.addoption(
        "--pidfd-leaks-grace",
        type=float,
        default=None,
        metavar="SECONDS",
        help="seconds between SIGTERM and SIGKILL for a leftover process (default 2). "
        "Ini: pidfd_leaks_grace.",
    )
    group.addoption(
        "--pidfd-leaks-cgroup",
        action="store_true",
        default=False,
        help="run each test in a transient cgroup v2 of its own, so that a process it "
        "started is found wherever it moved in the tree. Ini: pidfd_leaks_cgroup.",
    )
    parser.addini("pidfd_leaks", "default for --pidfd-leaks", default="off")
    parser.addini("pidfd_leaks_grace", "default for --pidfd-leaks-grace", default="2")
    parser.addini(
        "pidfd_leaks_cgroup", "default for --pidfd-leaks-cgroup", type="bool", default=False
    )


def _mode(config: pytest.Config) -> str:
    mode = config.getoption("pidfd_leaks") or str(config.getini("pidfd_leaks")).strip() or "off"
    if mode not in MODES:
        raise pytest.UsageError(f"pidfd_leaks must be one of {', '.join(MODES)}, not {mode!r}")
    return mode


def _grace(config: pytest.Config) -> float:
    value = config.getoption("pidfd_leaks_grace")
    if value is None:
        text = str(config.getini("pidfd_leaks_grace"))
        try:
            value = float(text)
        except ValueError:
            raise pytest.UsageError(f"pidfd_leaks_grace must be seconds, not {text!r}") from None
    if not value >= 0:
        raise pytest.UsageError(f"pidfd leaks grace must be seconds >= 0, not {value!r}")
    return float(value)


def _ini_flag(config: pytest.Config, name: str) -> bool:
    return bool(config.getini(name))


def _is_xdist_controller(config: pytest.Config) -> bool:
    # A worker has `workerinput`; the controller has a dist mode and none.
    return not hasattr(config, "workerinput") and getattr(config.option, "dist", "no") != "no"


_SUBREAPER_KEY = pytest.StashKey[bool]()


def pytest_configure(config: pytest.Config) -> None:
    mode = _mode(config)
    cgroup = bool(config.getoption("pidfd_leaks_cgroup")) or _ini_flag(config, "pidfd_leaks_cgroup")
    if cgroup and mode == "off":
        raise pytest.UsageError("--pidfd-leaks-cgroup needs --pidfd-leaks=report, kill or fail")
    if mode == "off" or _is_xdist_controller(config):
        return
    cgroups = None
    if cgroup:
        try:
            cgroups = _Cgroups()
        except OSError as e:
            raise pytest.UsageError(
                f"--pidfd-leaks-cgroup: cannot run tests in a cgroup: {e}"
            ) from None
    checker = _Checker(mode, _grace(config), config.rootpath, cgroups)
    config.stash[_SUBREAPER_KEY] = _child_subreaper()
    _set_child_subreaper(True)
    config.pluginmanager.register(checker, _PLUGIN_NAME)


def pytest_unconfigure(config: pytest.Config) -> None:
    was = config.stash.get(_SUBREAPER_KEY, None)
    if was is not None:
        del config.stash[_SUBREAPER_KEY]
        _set_child_subreaper(was)


@pytest.fixture
def pidfd_processes(request: pytest.FixtureRequest) -> Iterator[Callable[[], list[LeftProcess]]]:
    """``pidfd_processes()`` lists the processes this test has started, alive now.

    Children of pytest that were not there when the test began (with the
    plugin active, orphans re-parented to pytest too), less zombies::

        def test_server(pidfd_processes):
            server = subprocess.Popen(["sleep", "60"])
            assert [p.pid for p in pidfd_processes()] == [server.pid]
            server.kill()
            server.wait()
            assert pidfd_processes() == []
    """
    checker = request.config.pluginmanager.get_plugin(_PLUGIN_NAME)
    if isinstance(checker, _Checker):
        started: Callable[[], set[int]] = checker.started_by_test
    else:
        at_start = _children()

        def started() -> set[int]:
            return _children() - at_start

    def alive() -> list[LeftProcess]:
        return [p for p in _describe(started()) if not p.zombie]

    yield alive
