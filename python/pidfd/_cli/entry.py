"""The entry points: main() for Python, console() for the ``pidfd`` script."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import sys
from typing import TYPE_CHECKING, NoReturn

from pidfd._cli import info, run, wait
from pidfd._cli.parser import RUN_FAILED, WAIT_FAILED, Outcome, build_parser
from pidfd._cli.terminal import Output, printable, silence_stdout, wait_line

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["console", "main"]


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


def _main(argv: Sequence[str] | None) -> Outcome:
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:
            # Report it from the subcommand's parser: `run` has its own status.
            culprit = getattr(args, "sub_parser", parser)
            words = " ".join(printable(word) for word in extra)
            culprit.error(f"unrecognized arguments: {words}")
    except SystemExit as exc:  # --help, --version and usage errors
        return Outcome(exc.code if isinstance(exc.code, int) else 1)
    try:
        if args.command == "run":
            return run.run(args)
        if args.command == "wait":
            return Outcome(wait.wait(args, Output(wait_line(args.progress))))
        return Outcome(info.info(args))
    except KeyboardInterrupt:
        # Reported where there is something to say (wait); then die by it.
        return Outcome(128 + signal.SIGINT, signal.SIGINT)
    except BrokenPipeError:
        # The reader went away (e.g. `| head -1`): stop quietly, and keep
        # Python from complaining again when it flushes stdout at exit.
        silence_stdout()
        return Outcome(WAIT_FAILED if args.command != "run" else RUN_FAILED)
