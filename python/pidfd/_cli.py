"""The ``pidfd`` command: run a command or wait for any process, race-free.

Three subcommands, each with ``--help``::

    pidfd run [--timeout DURATION] [--kill-after DURATION] [--kill-tree] [--json] -- CMD [ARG...]
    pidfd wait [--timeout DURATION] [--count N] [--json] PID...
    pidfd info [--json] PID

``run`` is ``/usr/bin/time -v`` on a pidfd: the exit status and resource
usage come from one ``waitid(P_PIDFD)``, and signals are forwarded with
``pidfd_send_signal``, so nothing can hit a recycled pid. ``wait`` waits for
processes that are not our children, like util-linux ``waitpid(1)``, and
reports their exit status where the kernel can tell. The same entry point
runs as ``python -m pidfd``.

Exit statuses follow the wrappers people already script against: ``run``
exits with the command's code, dies by the signal that killed the command
(as ``timeout(1)`` does, so a shell loop stops on the first Ctrl-C), and
exits 124 when ``--timeout`` fired.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import math
import os
import resource
import shlex
import signal
import stat
import sys
import textwrap
import time
from typing import IO, TYPE_CHECKING, Any, NamedTuple, NoReturn

from pidfd import PidFd, Subreaper, __version__, _procfs, wait_any
from pidfd._native import _REAP_GRACE

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from pidfd import ExitInfo, ExitStatus

__all__ = ["main"]

PROG = "pidfd"

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

# Signals `pidfd run` passes on to the command. SIGQUIT too, so that
# Ctrl-\ does not kill the wrapper before it can report.
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)

# si_code of a signal the kernel itself sent: for SIGINT/SIGQUIT that is the
# terminal's line discipline, which signals the whole foreground process
# group, so the command has had it already.
SI_KERNEL = 0x80

# The live status line is redrawn this often (seconds), and for `run` only
# once the command has been running this long, so quick commands never see it.
# `run` draws it only when asked (--progress), and then only on a terminal
# the command cannot write to or read from (see _free_terminal).
REFRESH = 1.0
RUN_STATUS_DELAY = 1.0

# How long `wait` gives an exited process's parent to reap it, so that the
# kernel can report the status (as PidFd.wait_exit() does), and how often it
# looks meanwhile. Many processes exiting at once share one grace period.
REAP_GRACE = _REAP_GRACE
REAP_POLL = 0.01


class _Parser(argparse.ArgumentParser):
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


def _seconds(text: str) -> float:
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


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _pid(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a process id: {text!r}") from None
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

examples:
  pidfd run -- python3 -c "print('hello')"
  pidfd run --timeout 10 --kill-after 2 -- make test
  pidfd run --kill-tree --kill-after 1s -- ./test-with-helper-daemons.sh
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


def _build_parser() -> _Parser:
    parser = _Parser(
        prog=PROG,
        description="Race-free process handles (pidfd) from the shell: run a command and "
        "report how it ended, wait for any process, or inspect one.",
        epilog="Run 'pidfd COMMAND --help' for the options of each command.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    fmt = _HelpFormatter

    run = sub.add_parser(
        "run",
        help="run a command, forward signals to it, report its exit and resource usage",
        usage="%(prog)s [-h] [--timeout DURATION] [--kill-after DURATION]\n"
        "                 [--kill-tree] [--preserve-status] [--json]\n"
        "                 [--progress | --no-progress] -- CMD [ARG...]",
        description="Start CMD, wait for it on a pidfd and report how it ended (exit\n"
        "code or signal, core dump) and its resource usage (CPU time, max RSS,\n"
        "page faults, context switches), like /usr/bin/time -v.",
        epilog=RUN_EPILOG,
        formatter_class=fmt,
    )
    run.usage_status = RUN_FAILED
    run.set_defaults(sub_parser=run)
    run.add_argument(
        "--timeout",
        type=_seconds,
        metavar="DURATION",
        help=f"after DURATION (seconds, or with a suffix s, m, h, d) send SIGTERM (then "
        f"SIGKILL, see --kill-after) and exit {RUN_TIMED_OUT}, as timeout(1) does",
    )
    run.add_argument(
        "--kill-after",
        type=_seconds,
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

    wait = sub.add_parser(
        "wait",
        help="wait for any processes (children or not) to exit, without reaping them",
        description="Wait for the processes PID... to exit, whoever their parent is,\n"
        "and report each as it exits, like util-linux waitpid(1).",
        epilog=WAIT_EPILOG,
        formatter_class=fmt,
    )
    wait.set_defaults(sub_parser=wait)
    wait.add_argument(
        "--timeout",
        type=_seconds,
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

    info = sub.add_parser(
        "info",
        help="show what the kernel reports about a process (PIDFD_GET_INFO)",
        description="Show a process's ids, credentials, cgroup and, once it has exited,\n"
        "its exit status, as PIDFD_GET_INFO reports them (Linux >= 6.13).",
        epilog=INFO_EPILOG,
        formatter_class=fmt,
    )
    info.set_defaults(sub_parser=info)
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.add_argument("pid", type=_pid, metavar="PID", help="process id")
    return parser


def _add_progress(parser: argparse.ArgumentParser, on: str, off: str) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--progress", dest="progress", action="store_const", const=True, help=on)
    group.add_argument(
        "--no-progress", dest="progress", action="store_const", const=False, help=off
    )


class _Outcome(NamedTuple):
    """How the command line ends: an exit status, or death by a signal."""

    status: int
    die_by: int | None = None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``pidfd`` command line with ``argv`` (default ``sys.argv[1:]``).

    Returns the exit status instead of exiting, so it can be called from
    Python; where the ``pidfd`` command would die by a signal (the command
    was killed by it, or Ctrl-C) this returns 128 + that signal, as a shell
    reports it. The report goes to stderr, as from the command line::

        >>> main(["run", "--", "sh", "-c", "exit 3"])
        3
    """
    return _main(argv).status


def console() -> NoReturn:
    """The ``pidfd`` console script: :func:`main`, then exit or die by the signal.

    Dying by the signal that killed the command (or by Ctrl-C's SIGINT),
    rather than exiting with 128 + N, is what lets the shell that started
    us tell: ``for f in *; do pidfd run -- slow "$f"; done`` stops at the
    first Ctrl-C, as it would without the wrapper.
    """
    outcome = _main(None)
    if outcome.die_by is not None:
        _die_by(outcome.die_by)
    sys.exit(outcome.status)


# Signals whose default action also dumps core (signal(7)): before dying by
# one, pidfd turns its own core dumps off, as timeout(1) does, so that the
# command's crash does not leave a second core file, pidfd's.
_CORE_SIGNALS = frozenset(
    int(getattr(signal, name))
    for name in (
        "SIGQUIT", "SIGILL", "SIGTRAP", "SIGABRT", "SIGBUS", "SIGFPE",
        "SIGSEGV", "SIGXCPU", "SIGXFSZ", "SIGSYS",
    )
    if hasattr(signal, name)
)  # fmt: skip


def _die_by(sig: int) -> NoReturn:
    """Die by ``sig`` (default disposition, unblocked, raised); else exit 128 + sig."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            if stream is not None:
                stream.flush()
    with contextlib.suppress(OSError, ValueError):
        if sig in _CORE_SIGNALS:
            _, hard = resource.getrlimit(resource.RLIMIT_CORE)
            resource.setrlimit(resource.RLIMIT_CORE, (0, hard))
        if sig != signal.SIGKILL:  # its disposition cannot be changed, nor needs to
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {sig})
        signal.raise_signal(sig)
    # Still here: a signal whose default action does not terminate (the
    # command cannot have died of one, but a caller might pass it).
    os._exit(128 + sig)


def _main(argv: Sequence[str] | None) -> _Outcome:
    parser = _build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:
            # Report it from the subcommand's parser: `run` has its own status.
            culprit = getattr(args, "sub_parser", parser)
            culprit.error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as exc:  # --help, --version and usage errors
        return _Outcome(exc.code if isinstance(exc.code, int) else 1)
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "wait":
            return _Outcome(_wait(args, _Output(_wait_line(args.progress))))
        return _Outcome(_info(args))
    except KeyboardInterrupt:
        # Reported where there is something to say (wait); then die by it.
        return _Outcome(128 + signal.SIGINT, signal.SIGINT)
    except BrokenPipeError:
        # The reader went away (e.g. `| head -1`): stop quietly, and keep
        # Python from complaining again when it flushes stdout at exit.
        _silence_stdout()
        return _Outcome(WAIT_FAILED if args.command != "run" else RUN_FAILED)


def _silence_stdout() -> None:
    """Point fd 1 at /dev/null, so that a closed pipe cannot fail a later flush."""
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)


def _wait_line(progress: bool | None) -> IO[str] | None:
    """Where `wait` draws its status line: stderr, if it is a terminal (or forced)."""
    if progress is None:
        try:
            progress = sys.stderr.isatty()
        except (AttributeError, ValueError):
            progress = False
    return sys.stderr if progress else None


def _free_terminal() -> IO[str] | None:
    """The controlling terminal, open for the status line, if the command can't reach it.

    The command inherits our stdin, stdout and stderr; if any of them is
    the controlling terminal, what the command prints (or what the terminal
    echoes of what the user types to it) would land on the same line as
    ours, so there is no line at all. A pipeline stage after us that writes
    to the terminal (``| tee``, ``| less``) cannot be seen from here, which
    is why `run` draws the line only when asked.
    """
    tty = _procfs.controlling_tty()
    if tty is None:
        return None
    for fd in (0, 1, 2):
        try:
            st = os.fstat(fd)
        except OSError:
            continue
        if stat.S_ISCHR(st.st_mode) and (os.major(st.st_rdev), os.minor(st.st_rdev)) == tty:
            return None
    try:
        fd = os.open("/dev/tty", os.O_WRONLY | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return None
    # Closed by _run.
    return open(fd, "w", encoding="utf-8", errors="replace")


class _Output:
    """The live status line, erased before anything else is printed.

    ``line`` is where it is drawn (None: nowhere); messages go to stderr and
    results to stdout, either of which may be the same terminal.
    """

    def __init__(self, line: IO[str] | None) -> None:
        self.line = line
        self.enabled = line is not None
        self.shown = False

    def _drawable(self) -> bool:
        assert self.line is not None
        if self.line is sys.stderr:
            return True
        # Our own terminal: only while we are in its foreground group, so
        # that a job moved to the background (with `stty tostop`) is never
        # stopped by SIGTTOU for the sake of a status line.
        try:
            return os.tcgetpgrp(self.line.fileno()) == os.getpgrp()
        except OSError:
            return False

    def status(self, text: str) -> None:
        if self.line is None or not self._drawable():
            return
        try:
            width = os.get_terminal_size(self.line.fileno()).columns
        except (OSError, ValueError, AttributeError):
            width = 0
        # A terminal of unknown size (a fresh pty) says 0 columns.
        width = width or 80
        if len(text) >= width:
            text = text[: max(width - 2, 1)] + "…"
        # \r and "erase to end of line" rewrite the same line each time.
        with contextlib.suppress(OSError):
            self.line.write(f"\r\x1b[K{text}")
            self.line.flush()
            self.shown = True

    def clear(self) -> None:
        if self.shown and self.line is not None:
            with contextlib.suppress(OSError):
                self.line.write("\r\x1b[K")
                self.line.flush()
            self.shown = False

    def err(self, text: str) -> None:
        """A message on stderr, e.g. a pid that does not exist."""
        self.clear()
        if sys.stderr is None:  # started with 2>&-: nowhere to say it
            return
        with contextlib.suppress(OSError):
            print(f"{PROG}: {text}", file=sys.stderr, flush=True)

    def out(self, text: str) -> None:
        """A result on stdout, which may be the same terminal as stderr."""
        self.clear()
        print(text, flush=True)


def _signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        if signal.SIGRTMIN <= sig <= signal.SIGRTMAX:
            return f"SIGRTMIN+{sig - signal.SIGRTMIN}"
        return f"signal {sig}"


def _describe(status: ExitStatus | None) -> str:
    if status is None:
        return "exited, status unknown"
    if status.code is not None:
        return f"exited with code {status.code}"
    assert status.signal is not None
    core = ", core dumped" if status.core_dumped else ""
    return f"killed by signal {status.signal} ({_signal_name(status.signal)}){core}"


def _status_json(status: ExitStatus | None) -> dict[str, Any]:
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
        "signal_name": None if status.signal is None else _signal_name(status.signal),
        "core_dumped": status.core_dumped,
    }


def _shell_status(status: ExitStatus) -> int:
    """The exit status a shell would report: the code, or 128 + signal."""
    if status.code is not None:
        return int(status.code)
    return 128 + int(status.signal or 0)


def _elapsed(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s"


# --------------------------------------------------------------------- run


def _run(args: argparse.Namespace) -> _Outcome:
    cmd: list[str] = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        args.sub_parser.error("no command given: pidfd run [OPTIONS] -- CMD [ARG...]")
    line = _free_terminal() if args.progress else None
    out = _Output(line)
    try:
        return _run_signals(args, cmd, out)
    finally:
        out.clear()
        if line is not None:
            with contextlib.suppress(OSError):
                line.close()


def _run_signals(args: argparse.Namespace, cmd: list[str], out: _Output) -> _Outcome:
    # Signals we forward, plus SIGCHLD to learn that the command exited, are
    # blocked and taken with sigtimedwait(): one wait for "child exited,
    # a signal came, or it is time to act", with the siginfo that tells a
    # terminal's Ctrl-C (which the command got too) from a kill(1).
    # Signals our own parent set to SIG_IGN (nohup, `&` in a script) stay
    # ignored, here and in the command.
    forwarded = {s for s in FORWARDED if signal.getsignal(s) != signal.SIG_IGN}
    # A SIGCHLD inherited as SIG_IGN would make the kernel discard the
    # command's status; waiting needs the default.
    old_sigchld = signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    watched = forwarded | {signal.SIGCHLD}
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, watched)
    try:
        # With --kill-tree, leaving this block closes the Subreaper: already
        # done by _run_blocked, unless something failed first.
        with contextlib.ExitStack() as stack:
            reaper: Subreaper | None = None
            if args.kill_tree:
                try:
                    reaper = stack.enter_context(Subreaper(grace=args.kill_after))
                except OSError as exc:
                    out.err(f"--kill-tree: cannot become a child subreaper: {exc}")
                    return _Outcome(RUN_FAILED)
            return _run_blocked(args, cmd, out, forwarded, watched, old_mask, reaper)
    finally:
        # A signal that came after the command ended was meant for it: drop
        # it rather than let it kill us on unblocking and lose the status.
        while signal.sigtimedwait(watched, 0) is not None:
            pass
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        signal.signal(signal.SIGCHLD, old_sigchld)


def _run_blocked(
    args: argparse.Namespace,
    cmd: list[str],
    out: _Output,
    forwarded: set[signal.Signals],
    watched: set[signal.Signals],
    old_mask: Iterable[int],
    reaper: Subreaper | None,
) -> _Outcome:
    started = time.monotonic()
    try:
        pid = os.posix_spawnp(
            cmd[0],
            cmd,
            os.environ,
            # The command starts with our caller's signal mask, not the one
            # blocked here, and with the signals Python ignores for itself
            # back to default, as subprocess does.
            setsigmask=old_mask,
            setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),
        )
    except OSError as exc:
        out.err(f"{cmd[0]}: {exc.strerror or exc}")
        if exc.errno == errno.ENOENT:
            code = RUN_NOT_FOUND
        elif exc.errno in (errno.EACCES, errno.EPERM, errno.ENOEXEC, errno.EISDIR):
            code = RUN_NOT_EXECUTABLE
        else:
            code = RUN_FAILED
        if args.json:
            _emit_run_report(
                {
                    "command": cmd,
                    "started": False,
                    "error": exc.strerror or str(exc),
                    "errno": exc.errno,
                    "exit_status": code,
                },
                as_json=True,
            )
        return _Outcome(code)

    # The child is not reaped until we wait for it, so its pid cannot have
    # been reused yet: opening the handle now is race-free.
    try:
        handle = PidFd.from_pid(pid)
    except OSError as exc:
        out.err(f"cannot open a pidfd on the command (pid {pid}): {exc}")
        # Still our unreaped child, so the pid is safe to use here.
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        return _Outcome(RUN_FAILED)

    with handle:
        info, events = _supervise(handle, cmd, args, out, forwarded, watched, started)
    elapsed = time.monotonic() - started
    tree = None
    if reaper is not None:
        # The command is reaped: everything it left is re-parented to us.
        reaper.close()
        tree = _tree_report(reaper)
    out.clear()
    status = info.status
    timed_out = events["timed_out"]
    exit_status = _shell_status(status)
    if timed_out and not args.preserve_status:
        exit_status = RUN_TIMED_OUT
    report = _run_report(cmd, info, elapsed, events, exit_status)
    report["kill_tree"] = tree
    _emit_run_report(report, as_json=args.json)
    # Killed by a signal: die by it too (timeout(1) does the same), except
    # after our own --timeout, whose status says "timed out" instead.
    if status.signal is not None and not timed_out:
        return _Outcome(exit_status, status.signal)
    return _Outcome(exit_status)


def _emit_run_report(report: dict[str, Any], *, as_json: bool) -> None:
    """Print the report; a reader that went away does not change the exit status."""
    try:
        if as_json:
            print(json.dumps(report), flush=True)
        elif sys.stderr is not None:  # None when started with 2>&-
            _print_run_report(report, sys.stderr)
    except OSError:
        # EPIPE (`pidfd run --json -- seq 1 100000 | head -1`) or a closed
        # fd: the command's status is what the caller asked for, and it
        # stands. stdout is pointed at /dev/null so that the flush at exit
        # cannot fail again and print a traceback.
        _silence_stdout()


def _supervise(
    handle: PidFd,
    cmd: list[str],
    args: argparse.Namespace,
    out: _Output,
    forwarded: set[signal.Signals],
    watched: set[signal.Signals],
    started: float,
) -> tuple[ExitInfo, dict[str, Any]]:
    """Wait for the command, forwarding signals and enforcing --timeout."""
    events: dict[str, Any] = {"timed_out": False, "sigkill_sent": False, "forwarded": []}
    # 0 disables either, as in timeout(1).
    timeout: float | None = args.timeout or None
    kill_after: float = args.kill_after or math.inf
    term_at: float | None = None
    own_pgrp = os.getpgrp()
    label = shlex.join(cmd)
    while True:
        info = handle.try_wait()
        if info is not None:
            return info, events
        now = time.monotonic()
        if timeout is not None and term_at is None and now - started >= timeout:
            term_at = now
            events["timed_out"] = True
            _send(handle, signal.SIGTERM)
            # A stopped command would never act on SIGTERM: wake it, as timeout(1) does.
            _send(handle, signal.SIGCONT)
        if term_at is not None and not events["sigkill_sent"] and now - term_at >= kill_after:
            events["sigkill_sent"] = True
            _send(handle, signal.SIGKILL)

        wake: list[float] = []
        if timeout is not None and term_at is None:
            wake.append(started + timeout)
        elif term_at is not None and not events["sigkill_sent"]:
            wake.append(term_at + kill_after)
        if out.enabled:
            elapsed = now - started
            if elapsed >= RUN_STATUS_DELAY:
                out.status(_run_status(handle.pid, label, elapsed, timeout, term_at))
            wake.append(now + REFRESH - (elapsed % REFRESH))
        if wake:
            siginfo = signal.sigtimedwait(watched, max(0.0, min(wake) - now))
        else:
            siginfo = signal.sigwaitinfo(watched)
        if siginfo is None or siginfo.si_signo not in forwarded:
            continue  # time to act, or SIGCHLD: look again
        sig = signal.Signals(siginfo.si_signo)
        from_terminal = siginfo.si_code == SI_KERNEL and sig in (signal.SIGINT, signal.SIGQUIT)
        if from_terminal and _same_pgrp(handle.pid, own_pgrp):
            # The terminal signalled its whole foreground group, command
            # included; sending it again would deliver it twice.
            events["forwarded"].append({"signal": sig.name, "sent": False})
            continue
        _send(handle, sig)
        events["forwarded"].append({"signal": sig.name, "sent": True})


def _tree_report(reaper: Subreaper) -> dict[str, Any]:
    """What --kill-tree found and did, for the report and --json."""
    ended = []
    counts = {"exited": 0, "sigterm": 0, "sigkill": 0, "other_signal": 0, "unknown": 0}
    for pid, status in reaper.reaped.items():
        sent = reaper.signalled.get(pid)
        ended.append(
            {
                "pid": pid,
                **_status_json(status),
                "signal_sent": None if sent is None else _signal_name(sent),
            }
        )
        if status is None:
            counts["unknown"] += 1
        elif status.signal is None:
            counts["exited"] += 1
        elif status.signal == signal.SIGTERM:
            counts["sigterm"] += 1
        elif status.signal == signal.SIGKILL:
            counts["sigkill"] += 1
        else:
            counts["other_signal"] += 1
    return {"left": len(ended), **counts, "ended": ended}


def _tree_summary(tree: dict[str, Any]) -> str:
    if not tree["left"]:
        return "none"
    parts = [
        f"{tree[key]} {label}"
        for key, label in (
            ("sigterm", "ended by SIGTERM"),
            ("sigkill", "killed by SIGKILL"),
            ("exited", "exited on their own"),
            ("other_signal", "died of another signal"),
            ("unknown", "ended, status unknown"),
        )
        if tree[key]
    ]
    return f"{tree['left']} ({', '.join(parts)})"


def _same_pgrp(pid: int, pgrp: int) -> bool:
    try:
        # Safe on a pid number: our child is not reaped yet.
        return os.getpgid(pid) == pgrp
    except ProcessLookupError:
        return True


def _send(handle: PidFd, sig: int) -> None:
    # ProcessLookupError: it exited meanwhile; the next try_wait() reaps it.
    with contextlib.suppress(ProcessLookupError):
        handle.send_signal(sig)


def _run_status(
    pid: int, label: str, elapsed: float, timeout: float | None, term_at: float | None
) -> str:
    if term_at is not None:
        return f"{PROG}: {_elapsed(elapsed)} timed out, SIGTERM sent to pid {pid}: {label}"
    text = f"{PROG}: {_elapsed(elapsed)} running pid {pid}: {label}"
    if timeout is not None:
        text += f" (timeout in {_elapsed(max(0.0, timeout - elapsed))})"
    return text


def _run_report(
    cmd: list[str], info: ExitInfo, elapsed: float, events: dict[str, Any], exit_status: int
) -> dict[str, Any]:
    status = info.status
    ru = info.rusage
    report: dict[str, Any] = {
        "command": cmd,
        "pid": info.pid,
        **_status_json(status),
        "returncode": status.returncode,
        # What `pidfd run` exits with (124 after --timeout), and what the
        # command's own status would make it as a shell reports it.
        "exit_status": exit_status,
        "command_exit_status": _shell_status(status),
        "timed_out": events["timed_out"],
        "sigkill_sent": events["sigkill_sent"],
        "signals_received": events["forwarded"],
        "elapsed_s": round(elapsed, 6),
        "rusage": {
            "user_cpu_s": round(ru.ru_utime, 6),
            "system_cpu_s": round(ru.ru_stime, 6),
            "max_rss_kib": ru.ru_maxrss,
            "minor_faults": ru.ru_minflt,
            "major_faults": ru.ru_majflt,
            "voluntary_context_switches": ru.ru_nvcsw,
            "involuntary_context_switches": ru.ru_nivcsw,
            "block_input_ops": ru.ru_inblock,
            "block_output_ops": ru.ru_oublock,
        },
    }
    del report["status_known"]  # always known for our own child
    return report


def _print_run_report(r: dict[str, Any], stream: IO[str]) -> None:
    ru = r["rusage"]
    if r["exit_code"] is not None:
        how = f"exited with code {r['exit_code']}"
    else:
        core = ", core dumped" if r["core_dumped"] else ""
        how = f"killed by signal {r['signal']} ({r['signal_name']}){core}"
    lines = [f"{PROG}: command {how}"]
    own = ""
    if r["exit_status"] != r["command_exit_status"]:
        own = f" (timed out; the command's own: {r['command_exit_status']})"
    if r["timed_out"]:
        kill = ", then SIGKILL" if r["sigkill_sent"] else ""
        lines.append(f"  timed out:                 SIGTERM sent{kill}")
    for event in r["signals_received"]:
        what = "forwarded" if event["sent"] else "from the terminal, not forwarded"
        lines.append(f"  signal received:           {event['signal']} ({what})")
    tree = r.get("kill_tree")
    if tree is not None:
        lines.append(f"  descendants left behind:   {_tree_summary(tree)}")
    lines += [
        f"  command:                   {shlex.join(r['command'])}",
        f"  pid:                       {r['pid']}",
        f"  elapsed (wall clock):      {r['elapsed_s']:.3f} s",
        f"  user CPU time:             {ru['user_cpu_s']:.3f} s",
        f"  system CPU time:           {ru['system_cpu_s']:.3f} s",
        f"  max resident set size:     {ru['max_rss_kib']} KiB",
        f"  page faults (minor/major): {ru['minor_faults']} / {ru['major_faults']}",
        "  context switches:          "
        f"{ru['voluntary_context_switches']} voluntary / "
        f"{ru['involuntary_context_switches']} involuntary",
        f"  block I/O (in/out):        {ru['block_input_ops']} / {ru['block_output_ops']}",
        f"  exit status:               {r['exit_status']}{own}",
    ]
    stream.write("\n".join(lines) + "\n")
    stream.flush()


# -------------------------------------------------------------------- wait


def _wait(args: argparse.Namespace, out: _Output) -> int:
    started = time.monotonic()
    handles: list[PidFd] = []
    seen: set[int] = set()
    me = os.getpid()
    try:
        for pid in args.pids:
            if pid in seen:
                continue
            seen.add(pid)
            if pid == me:
                out.err(f"pid {pid} is this pidfd process itself; not waiting for it")
                continue
            try:
                handles.append(PidFd.from_pid(pid))
            except ProcessLookupError:
                out.err(f"pid {pid}: no such process")
            except OSError as exc:
                if exc.errno == errno.ENOSYS:
                    out.err(str(exc))
                    return WAIT_FAILED
                out.err(f"pid {pid}: {exc}")
        if not handles:
            out.err("none of the given PIDs names an existing process; nothing to wait for")
            return WAIT_USAGE
        want = len(handles)
        if args.count is not None:
            if args.count > want:
                out.err(f"only {want} of the processes exist; waiting for those, not {args.count}")
            want = min(args.count, want)
        return _wait_loop(handles, want, args, out, started)
    finally:
        for h in handles:
            h.close()


def _wait_loop(
    handles: list[PidFd], want: int, args: argparse.Namespace, out: _Output, started: float
) -> int:
    running = list(handles)
    # Exited, status not settled yet: (handle, when it was seen to exit).
    pending: list[tuple[PidFd, float]] = []
    reported = 0
    deadline = None if args.timeout is None else started + args.timeout

    def report(handle: PidFd, status: ExitStatus | None) -> None:
        elapsed = time.monotonic() - started
        if args.json:
            record = {"pid": handle.pid, **_status_json(status), "elapsed_s": round(elapsed, 6)}
            out.out(json.dumps(record))
        else:
            out.out(f"pid {handle.pid} {_describe(status)}")

    def settle(now: float, force: bool) -> int:
        """Report the exited processes whose status is settled (or overdue)."""
        count = 0
        for entry in list(pending):
            handle, since = entry
            # A child's status, or a non-child's once its parent has reaped
            # it (Linux >= 6.15), is final at once; otherwise give the parent
            # REAP_GRACE to reap, then say "unknown" rather than guess.
            settled, status = handle._exit_status_now()
            if settled or force or now - since >= REAP_GRACE:
                pending.remove(entry)
                report(handle, status)
                count += 1
                if reported + count >= want:
                    break
        return count

    try:
        while True:
            now = time.monotonic()
            reported += settle(now, force=False)
            if reported >= want:
                break
            if deadline is not None and now >= deadline:
                # Those already seen to exit count; the rest timed out.
                reported += settle(now, force=True)
                if reported >= want:
                    break
                pids = " ".join(str(h.pid) for h in running)
                out.err(f"timed out after {args.timeout:g} s; still running: {pids}")
                return WAIT_TIMEOUT
            step = None if deadline is None else deadline - now
            if out.enabled:
                pids = " ".join(str(h.pid) for h in running)
                out.status(
                    f"{PROG}: {_elapsed(now - started)} waiting for {len(running)} "
                    f"of {len(handles)}: {pids}"
                )
                step = REFRESH if step is None else min(REFRESH, step)
            if pending:
                step = REAP_POLL if step is None else min(REAP_POLL, step)
            if not running:
                time.sleep(step or 0.0)
                continue
            try:
                exited = wait_any(running, timeout=step)
            except TimeoutError:
                continue
            seen = time.monotonic()
            for handle in exited:
                running.remove(handle)
                pending.append((handle, seen))
    except KeyboardInterrupt:
        # Say what was left; then _main dies by SIGINT.
        left = " ".join(str(h.pid) for h in running + [h for h, _ in pending])
        out.err(f"interrupted; still running: {left}" if left else "interrupted")
        raise
    out.clear()
    return WAIT_OK


# -------------------------------------------------------------------- info


def _info(args: argparse.Namespace) -> int:
    try:
        with PidFd.from_pid(args.pid) as handle:
            info = handle.info()
            alive = handle.is_alive()
    except ProcessLookupError:
        print(f"{PROG}: pid {args.pid}: no such process", file=sys.stderr)
        return INFO_FAILED
    except OSError as exc:
        # ENOSYS carries the kernel version needed in its message.
        print(f"{PROG}: pid {args.pid}: {exc.strerror or exc}", file=sys.stderr)
        return INFO_FAILED
    ids = ("pid", "tgid", "ppid")
    uids = ("ruid", "euid", "suid", "fsuid")
    gids = ("rgid", "egid", "sgid", "fsgid")
    fields = (*ids, *uids, *gids, "cgroupid")
    data: dict[str, Any] = {name: getattr(info, name) for name in fields}
    data["alive"] = alive
    status = info.exit_status
    data["exit"] = None if status is None else _status_json(status)
    if args.json:
        print(json.dumps(data))
        return INFO_OK

    def show(value: object) -> str:
        return "unknown" if value is None else str(value)

    state = "running" if alive else _describe(status)
    rows = [
        ("pid", show(info.pid)),
        ("state", state),
        ("thread group id", show(info.tgid)),
        ("parent pid", show(info.ppid)),
        ("uid (real/eff/saved/fs)", "/".join(show(getattr(info, f)) for f in uids)),
        ("gid (real/eff/saved/fs)", "/".join(show(getattr(info, f)) for f in gids)),
        ("cgroup id", show(info.cgroupid)),
    ]
    for key, value in rows:
        print(f"{key + ':':25} {value}")
    return INFO_OK
