"""What `pidfd run` reports, as typed objects, and the parts every command shares.

Every result has one object, and that object writes both its text
(``format()``) and its JSON (``to_json()``), so the two can never disagree
(`wait` and `info` keep their own small ones, on the same pieces).
Two rules hold for every JSON value here: seconds are rounded to the
microsecond (:func:`seconds`), and a command's arguments go through
:func:`~pidfd._cli.terminal.printable`, so that bytes that are not UTF-8
show as ``\\xff`` instead of lone surrogates.
"""

from __future__ import annotations

import json
import shlex
import signal
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pidfd._cli.terminal import PROG, printable, silence_stdout

if TYPE_CHECKING:
    import resource

    from pidfd import ExitInfo, ExitStatus, Subreaper

JSON = dict[str, Any]


def seconds(value: float) -> float:
    """A duration for JSON: microseconds, as the kernel's rusage has them."""
    return round(value, 6)


def signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        if signal.SIGRTMIN <= sig <= signal.SIGRTMAX:
            return f"SIGRTMIN+{sig - signal.SIGRTMIN}"
        return f"signal {sig}"


def shell_status(status: ExitStatus) -> int:
    """The exit status a shell would report: the code, or 128 + signal."""
    if status.code is not None:
        return int(status.code)
    return 128 + int(status.signal or 0)


@dataclass(frozen=True)
class Ending:
    """How a process ended, as far as it is known (``status`` None: unknown)."""

    status: ExitStatus | None

    def format(self) -> str:
        status = self.status
        if status is None:
            return "exited, status unknown"
        if status.code is not None:
            return f"exited with code {status.code}"
        assert status.signal is not None
        core = ", core dumped" if status.core_dumped else ""
        return f"killed by signal {status.signal} ({signal_name(status.signal)}){core}"

    def to_json(self) -> JSON:
        status = self.status
        if status is None:
            return {
                "status_known": False,
                "exit_code": None,
                "signal": None,
                "signal_name": None,
                "core_dumped": None,
            }
        return {
            "status_known": True,
            "exit_code": status.code,
            "signal": status.signal,
            "signal_name": None if status.signal is None else signal_name(status.signal),
            "core_dumped": status.core_dumped,
        }


# -- pidfd run -----------------------------------------------------------------


@dataclass(frozen=True)
class SignalReceived:
    """A signal pidfd run got while the command ran, and whether it passed it on."""

    name: str
    sent: bool

    def format(self) -> str:
        what = "forwarded" if self.sent else "from the terminal, not forwarded"
        return f"  signal received:           {self.name} ({what})"

    def to_json(self) -> JSON:
        return {"signal": self.name, "sent": self.sent}


@dataclass
class Supervision:
    """What the supervisor did while the command ran (filled in as it happens)."""

    timed_out: bool = False
    sigkill_sent: bool = False
    received: list[SignalReceived] = field(default_factory=list)


@dataclass(frozen=True)
class Descendant:
    """One process --kill-tree found after the command, and how it ended."""

    pid: int
    ending: Ending
    signal_sent: int | None

    def to_json(self) -> JSON:
        sent = None if self.signal_sent is None else signal_name(self.signal_sent)
        return {"pid": self.pid, **self.ending.to_json(), "signal_sent": sent}

    @property
    def kind(self) -> str:
        """Which count it adds to: the keys of :meth:`TreeReport.counts`."""
        status = self.ending.status
        if status is None:
            return "unknown"
        if status.signal is None:
            return "exited"
        if status.signal == signal.SIGTERM:
            return "sigterm"
        if status.signal == signal.SIGKILL:
            return "sigkill"
        return "other_signal"


# The counts in JSON order, with their words in the text report's order.
_TREE_KINDS = ("exited", "sigterm", "sigkill", "other_signal", "unknown")
_TREE_WORDS = (
    ("sigterm", "ended by SIGTERM"),
    ("sigkill", "killed by SIGKILL"),
    ("exited", "exited on their own"),
    ("other_signal", "died of another signal"),
    ("unknown", "ended, status unknown"),
)


@dataclass(frozen=True)
class TreeReport:
    """What --kill-tree found and did: every descendant left behind, in reaping order."""

    descendants: tuple[Descendant, ...]

    @classmethod
    def of(cls, reaper: Subreaper) -> TreeReport:
        return cls(
            tuple(
                Descendant(pid, Ending(status), reaper.signalled.get(pid))
                for pid, status in reaper.reaped.items()
            )
        )

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(_TREE_KINDS, 0)
        for descendant in self.descendants:
            counts[descendant.kind] += 1
        return counts

    def format(self) -> str:
        if not self.descendants:
            return "none"
        counts = self.counts()
        parts = [f"{counts[key]} {label}" for key, label in _TREE_WORDS if counts[key]]
        return f"{len(self.descendants)} ({', '.join(parts)})"

    def to_json(self) -> JSON:
        return {
            "left": len(self.descendants),
            **self.counts(),
            "ended": [d.to_json() for d in self.descendants],
        }


@dataclass(frozen=True)
class CgroupReport:
    """The tree's totals from its transient cgroup (--cgroup), read before removal.

    ``None`` where the kernel does not keep the number: peak memory needs
    the memory controller enabled for the cgroup (``memory.peak``), peak
    processes the pids controller (``pids.peak``).
    """

    path: str
    cpu_usage_usec: int | None
    memory_peak: int | None
    pids_peak: int | None
    #: Processes still in the cgroup when the command ended, all SIGKILLed.
    killed: int
    removed: bool

    def to_json(self) -> JSON:
        usec = self.cpu_usage_usec
        return {
            "path": self.path,
            "cpu_s": None if usec is None else seconds(usec / 1e6),
            "memory_peak_bytes": self.memory_peak,
            "pids_peak": self.pids_peak,
            "killed": self.killed,
            "removed": self.removed,
        }

    def lines(self) -> list[str]:
        usec = self.cpu_usage_usec
        cpu = "unknown" if usec is None else f"{seconds(usec / 1e6):.3f} s"
        mem = self.memory_peak
        peak = "unknown (no memory controller)" if mem is None else f"{mem // 1024} KiB"
        gone = "" if self.removed else " (the cgroup could not be removed)"
        return [
            f"  tree (cgroup) killed:      {self.killed}{gone}",
            f"  tree CPU time:             {cpu}",
            f"  tree peak memory:          {peak}",
        ]


def _command(cmd: list[str]) -> list[str]:
    return [printable(arg) for arg in cmd]


@dataclass(frozen=True)
class RunReport:
    """How the command ended and what it used: `pidfd run`'s report."""

    command: list[str]
    info: ExitInfo
    elapsed: float
    #: What `pidfd run` exits with (124 after --timeout).
    exit_status: int
    supervision: Supervision
    tree: TreeReport | None
    cgroup: CgroupReport | None = None

    @property
    def command_exit_status(self) -> int:
        """The command's own status, as a shell reports it."""
        return shell_status(self.info.status)

    @property
    def _rusage(self) -> resource.struct_rusage:
        ru = self.info.rusage
        if ru is None:  # pragma: no cover - our handle comes from pidfd_open
            raise RuntimeError("the command's resource usage is unknown (reaped by the kernel)")
        return ru

    def to_json(self) -> JSON:
        ru = self._rusage
        ending = Ending(self.info.status).to_json()
        del ending["status_known"]  # always known for our own child
        sup = self.supervision
        return {
            "command": _command(self.command),
            "pid": self.info.pid,
            **ending,
            "returncode": self.info.status.returncode,
            "exit_status": self.exit_status,
            "command_exit_status": self.command_exit_status,
            "timed_out": sup.timed_out,
            "sigkill_sent": sup.sigkill_sent,
            "signals_received": [s.to_json() for s in sup.received],
            "elapsed_s": seconds(self.elapsed),
            "rusage": {
                "user_cpu_s": seconds(ru.ru_utime),
                "system_cpu_s": seconds(ru.ru_stime),
                "max_rss_kib": ru.ru_maxrss,
                "minor_faults": ru.ru_minflt,
                "major_faults": ru.ru_majflt,
                "voluntary_context_switches": ru.ru_nvcsw,
                "involuntary_context_switches": ru.ru_nivcsw,
                "block_input_ops": ru.ru_inblock,
                "block_output_ops": ru.ru_oublock,
            },
            "kill_tree": None if self.tree is None else self.tree.to_json(),
            "cgroup": None if self.cgroup is None else self.cgroup.to_json(),
        }

    def format(self) -> str:
        ru = self._rusage
        sup = self.supervision
        lines = [f"{PROG}: command {Ending(self.info.status).format()}"]
        own = ""
        if self.exit_status != self.command_exit_status:
            own = f" (timed out; the command's own: {self.command_exit_status})"
        if sup.timed_out:
            kill = ", then SIGKILL" if sup.sigkill_sent else ""
            lines.append(f"  timed out:                 SIGTERM sent{kill}")
        lines += [s.format() for s in sup.received]
        if self.tree is not None:
            lines.append(f"  descendants left behind:   {self.tree.format()}")
        if self.cgroup is not None:
            lines += self.cgroup.lines()
        # From the JSON's rounded seconds, so that both say the same.
        lines += [
            f"  command:                   {shlex.join(_command(self.command))}",
            f"  pid:                       {self.info.pid}",
            f"  elapsed (wall clock):      {seconds(self.elapsed):.3f} s",
            f"  user CPU time:             {seconds(ru.ru_utime):.3f} s",
            f"  system CPU time:           {seconds(ru.ru_stime):.3f} s",
            f"  max resident set size:     {ru.ru_maxrss} KiB",
            f"  page faults (minor/major): {ru.ru_minflt} / {ru.ru_majflt}",
            f"  context switches:          {ru.ru_nvcsw} voluntary / {ru.ru_nivcsw} involuntary",
            f"  block I/O (in/out):        {ru.ru_inblock} / {ru.ru_oublock}",
            f"  exit status:               {self.exit_status}{own}",
        ]
        return "\n".join(lines)


@dataclass(frozen=True)
class StartFailure:
    """The command could not be started: `pidfd run`'s report then."""

    command: list[str]
    error: str
    errno: int | None
    exit_status: int

    def format(self) -> str:
        return f"{printable(self.command[0])}: {self.error}"

    def to_json(self) -> JSON:
        return {
            "command": _command(self.command),
            "started": False,
            "error": self.error,
            "errno": self.errno,
            "exit_status": self.exit_status,
        }


def emit_run_report(report: RunReport | StartFailure, *, as_json: bool) -> None:
    """Print the report; a reader that went away does not change the exit status.

    As text it goes to stderr; a StartFailure has said so there already.
    """
    try:
        if as_json:
            print(json.dumps(report.to_json()), flush=True)
        elif sys.stderr is not None and isinstance(report, RunReport):
            # sys.stderr is None when started with 2>&-.
            sys.stderr.write(report.format() + "\n")
            sys.stderr.flush()
    except OSError:
        # EPIPE (`pidfd run --json -- seq 1 100000 | head -1`) or a closed
        # fd: the command's status is what the caller asked for, and it
        # stands. stdout is pointed at /dev/null so that the flush at exit
        # cannot fail again and print a traceback.
        silence_stdout()
