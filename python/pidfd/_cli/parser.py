"""The command line: the parser, its DURATION and PID types, the exit statuses."""

from __future__ import annotations

import argparse
import math
import sys
import textwrap
from typing import Any, NamedTuple, NoReturn

from pidfd import __version__, _procfs
from pidfd._cli.terminal import PROG
from pidfd._native import _REAP_GRACE

# Exit statuses of `pidfd run` itself, as env(1), nohup(1) and timeout(1)
# use them, so that a script can tell them from the command's own.
RUN_TIMED_OUT = 124
RUN_FAILED = 125
RUN_NOT_EXECUTABLE = 126
RUN_NOT_FOUND = 127

# Exit statuses of `pidfd wait` (timeout 3 as util-linux waitpid(1) has it).
WAIT_OK = 0
WAIT_FAILED = 1
WAIT_USAGE = 2
WAIT_TIMEOUT = 3

# Exit statuses of `pidfd info`.
INFO_OK = 0
INFO_FAILED = 1

# How long `wait` gives an exited process's parent to reap it, so that the
# kernel can report the status (as PidFd.wait_exit() does). Many processes
# exiting at once share one grace period.
REAP_GRACE = _REAP_GRACE


class Outcome(NamedTuple):
    """How the command line ends: an exit status, or death by a signal."""

    status: int
    die_by: int | None = None


class Parser(argparse.ArgumentParser):
    """argparse with a per-subcommand exit status for usage errors.

    ``pidfd run`` must not answer a typo with 2, which the command itself
    could have returned; it uses 125 as env(1) and timeout(1) do.
    """

    usage_status = 2

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(self.usage_status, f"{self.prog}: error: {message}\n")


# timeout(1)'s DURATION suffixes: seconds (the default), minutes, hours, days.
# Longer than any run (about 68 years) and within what sigtimedwait() takes.
MAX_DURATION = float(2**31 - 1)
# The largest pid_t.
PID_MAX = 2**31 - 1
_DURATION_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def duration(text: str) -> float:
    """argparse type: a DURATION as timeout(1) takes it: ``2.5``, ``10s``, ``1m``, ``1d``."""
    number, unit = text.strip(), 1.0
    if number[-1:].lower() in _DURATION_UNITS:
        number, unit = number[:-1], _DURATION_UNITS[number[-1].lower()]
    try:
        value = float(number) * unit
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a number of seconds: {text!r} (a DURATION is a number with an optional "
            f"suffix s, m, h or d, as in timeout(1): 30, 2.5s, 1m)"
        ) from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, not {text!r}")
    # Clamped, as timeout(1) does: a kernel wait cannot be longer anyway.
    return min(value, MAX_DURATION)


def _whole(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None


def _positive_int(text: str) -> int:
    value = _whole(text, "a whole number")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _pid(text: str) -> int:
    value = _whole(text, "a process id")
    if value < 1:
        raise argparse.ArgumentTypeError(f"a process id is a positive number, not {value}")
    if value > PID_MAX:
        raise argparse.ArgumentTypeError(f"not a process id: {value} (a pid is at most {PID_MAX})")
    return value


RUN_EPILOG = f"""\
The report goes to stderr (with --json, one JSON object on stdout, after
anything the command printed there). SIGINT, SIGTERM, SIGHUP and SIGQUIT
sent to pidfd are passed on to the command; a Ctrl-C from the terminal
reaches the command directly and is not sent twice.

exit status:
  N        the command exited with code N
  128+N    the command was killed by signal N: pidfd reports, then dies by
           the same signal, as timeout(1) does (a shell shows 128+N)
  {RUN_TIMED_OUT}      --timeout fired (the command's own status is in the report;
           --preserve-status exits with it instead)
  {RUN_FAILED}      pidfd run itself failed (bad usage, kernel without pidfd)
  {RUN_NOT_EXECUTABLE}      the command was found but could not be executed
  {RUN_NOT_FOUND}      the command was not found

With --kill-tree, pidfd run is a child subreaper (PR_SET_CHILD_SUBREAPER)
while the command runs: whatever the command leaves behind is re-parented
to pidfd instead of init, so it can be found and ended after the command.
It also runs the command in a transient cgroup where one can be made (as
--cgroup), which ends whatever the walk could not find; where none can be
made it says why in one line and ends the tree by the walk alone.

examples:
  pidfd run -- python3 -c "print('hello')"
  pidfd run --timeout 10 --kill-after 2 -- make test
  pidfd run --kill-tree --kill-after 1s -- ./test-with-helper-daemons.sh
  pidfd run --cgroup -- ./starts-a-daemon.sh
  pidfd run --json -- sort big.txt -o sorted.txt
"""

WAIT_EPILOG = f"""\
Each process is reported on stdout as it exits. Nothing is reaped, so its
parent still collects its status as usual; once the parent has done so,
which normally happens at once, Linux >= 6.15 tells pidfd wait the status
too. If the parent has not reaped it {REAP_GRACE:g} s after it exited, or the kernel
is older, the status is reported as unknown: never guessed.

exit status:
  {WAIT_OK}  every process waited for (or --count of them) has exited; a PID
     that does not exist is reported on stderr and not waited for
  {WAIT_FAILED}  an unexpected error (e.g. a kernel without pidfd_open)
  {WAIT_USAGE}  bad usage, or none of the PIDs names an existing process
  {WAIT_TIMEOUT}  the --timeout expired first
  Ctrl-C: pidfd says which processes were still running, then dies by SIGINT

examples:
  pidfd wait 1234 5678
  pidfd wait --count 1 --timeout 60 $(pgrep -d' ' rsync)
  pidfd wait --json 1234
"""

INFO_EPILOG = f"""\
Fields the kernel does not report are shown as unknown (null in JSON).
The exit status of a process that is not pidfd's child is known once its
parent has reaped it, and then the process is gone: so for a zombie it
shows as unknown.

exit status:
  {INFO_OK}  the information was printed
  {INFO_FAILED}  no such process, or a kernel without PIDFD_GET_INFO (Linux < 6.13)
  2  bad usage

example:
  pidfd info $$
"""


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Never wrap an option's help at a hyphen, which splits ``--kill-after``."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        text = " ".join(text.split())
        return textwrap.wrap(text, width, break_on_hyphens=False, break_long_words=False)


def build_parser() -> Parser:
    parser = Parser(
        prog=PROG,
        description="Race-free process handles (pidfd) from the shell: run a command and "
        "report how it ended, wait for any process, or inspect one.",
        epilog="Run 'pidfd COMMAND --help' for the options of each command.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def command(name: str, **kwargs: Any) -> Any:
        # Each subcommand's parser, which main() finds again for its usage line.
        sub_parser = sub.add_parser(name, formatter_class=_HelpFormatter, **kwargs)
        sub_parser.set_defaults(sub_parser=sub_parser)
        return sub_parser

    run = command(
        "run",
        help="run a command, forward signals to it, report its exit and resource usage",
        usage="%(prog)s [-h] [--timeout DURATION] [--kill-after DURATION]\n"
        "                 [--kill-tree] [--cgroup] [--die-with-parent]\n"
        "                 [--preserve-status] [--json] [--progress | --no-progress]\n"
        "                 -- CMD [ARG...]",
        description="Start CMD, wait for it on a pidfd and report how it ended (exit\n"
        "code or signal, core dump) and its resource usage (CPU time, max RSS,\n"
        "page faults, context switches), like /usr/bin/time -v.",
        epilog=RUN_EPILOG,
    )
    run.usage_status = RUN_FAILED
    run.add_argument(
        "--timeout",
        type=duration,
        metavar="DURATION",
        help=f"after DURATION (seconds, or with a suffix s, m, h, d) send SIGTERM (then "
        f"SIGKILL, see --kill-after) and exit {RUN_TIMED_OUT}, as timeout(1) does",
    )
    run.add_argument(
        "--kill-after",
        type=duration,
        default=5.0,
        metavar="DURATION",
        help="send SIGKILL to what is still running DURATION after SIGTERM: the command "
        "after --timeout, and with --kill-tree its descendants (default: %(default)gs)",
    )
    run.add_argument(
        "--kill-tree",
        action="store_true",
        help="when the command ends (or on --timeout), terminate every descendant it "
        "left behind, daemons that left its group or session included: SIGTERM, then "
        "SIGKILL after --kill-after; all are reaped before pidfd exits, and the report "
        "says how many there were and how they ended",
    )
    run.add_argument(
        "--cgroup",
        action="store_true",
        help="run the command and everything it starts in a transient cgroup v2 "
        "under pidfd's own; when the command ends (or on --timeout or a signal) "
        "everything still in it is killed at once (cgroup.kill), however it forked, "
        "and the cgroup removed; the report adds the tree's CPU time, peak memory "
        "(where the memory controller is enabled) and how many were killed",
    )
    run.add_argument(
        "--die-with-parent",
        action="store_true",
        help="have the kernel SIGKILL the command if pidfd itself dies, even by SIGKILL "
        "(PR_SET_PDEATHSIG, set in the command before exec; cleared by exec of a "
        "set-user-ID program); it covers the command, not what the command starts: "
        "add --cgroup for those while pidfd lives",
    )
    run.add_argument(
        "--preserve-status",
        action="store_true",
        help=f"on --timeout exit with the command's own status, not {RUN_TIMED_OUT}",
    )
    run.add_argument(
        "--json", action="store_true", help="print one JSON object on stdout instead of the report"
    )
    _add_progress(
        run,
        "draw a live status line on the controlling terminal, only if the command's "
        "stdin, stdout and stderr are all elsewhere (never on a terminal it shares)",
        "never draw it (the default)",
    )
    run.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD [ARG...]", help="the command")

    wait = command(
        "wait",
        help="wait for any processes (children or not) to exit, without reaping them",
        description="Wait for the processes PID... to exit, whoever their parent is,\n"
        "and report each as it exits, like util-linux waitpid(1).",
        epilog=WAIT_EPILOG,
    )
    wait.add_argument(
        "--timeout",
        type=duration,
        metavar="DURATION",
        help=f"give up after DURATION (seconds, or with a suffix s, m, h, d; "
        f"exit status {WAIT_TIMEOUT})",
    )
    wait.add_argument(
        "--count",
        type=_positive_int,
        metavar="N",
        help="return once N of the processes have exited (default: all)",
    )
    wait.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object per line for each process as it exits",
    )
    _add_progress(
        wait,
        "always show the live status line on stderr",
        "never show it (default: only when stderr is a terminal)",
    )
    wait.add_argument("pids", nargs="+", type=_pid, metavar="PID", help="process ids")

    info = command(
        "info",
        help="show what the kernel reports about a process (PIDFD_GET_INFO)",
        description="Show a process's ids, credentials, cgroup and, once it has exited,\n"
        "its exit status, as PIDFD_GET_INFO reports them (Linux >= 6.13).",
        epilog=INFO_EPILOG,
    )
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.add_argument("pid", type=_pid, metavar="PID", help="process id")
    return parser


def _add_progress(parser: argparse.ArgumentParser, on: str, off: str) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--progress", dest="progress", action="store_const", const=True, help=on)
    group.add_argument(
        "--no-progress", dest="progress", action="store_const", const=False, help=off
    )


def thread_advice(pid: int, command: str) -> str | None:
    """What to type instead, if ``pid`` is a thread of another process; else None.

    The kernel refuses a pidfd on a thread that is not its process's leader
    (the Python API's ``thread=True`` opens one, the command line has no
    such option): name the process instead.
    """
    tgid = _procfs.thread_group(pid)
    if tgid is None or tgid == pid:
        return None
    return (
        f"pid {pid} is a thread of process {tgid}, not a process; "
        f"to {command} its process, type: pidfd {command} {tgid}"
    )
