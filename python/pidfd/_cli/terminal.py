"""What pidfd prints besides its results: the live status line and messages.

Messages go to stderr and results to stdout, either of which may be the
terminal the status line is drawn on: the line is erased before each.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
from typing import IO

from pidfd import _procfs

PROG = "pidfd"

# The live status line is redrawn this often (seconds). `run` draws it only
# when asked (--progress), and then only on a terminal the command cannot
# write to or read from (see free_terminal).
REFRESH = 1.0


def silence_stdout() -> None:
    """Point fd 1 at /dev/null, so that a closed pipe cannot fail a later flush."""
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)


def wait_line(progress: bool | None) -> IO[str] | None:
    """Where `wait` draws its status line: stderr, if it is a terminal (or forced)."""
    if progress is None:
        try:
            progress = sys.stderr.isatty()
        except (AttributeError, ValueError):
            progress = False
    return sys.stderr if progress else None


def free_terminal() -> IO[str] | None:
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
    # Closed by the caller, run().
    return open(fd, "w", encoding="utf-8", errors="replace")


class Output:
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


def elapsed(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s"


def printable(text: str) -> str:
    """``text`` with what is not UTF-8 (an argument's raw bytes) as ``\\xff`` escapes.

    Python decodes a non-UTF-8 argument with lone surrogates (``'\\udcff'``),
    which print as such and are not valid in JSON; the escape shows the
    byte itself.
    """
    try:
        raw = os.fsencode(text)
    except UnicodeEncodeError:  # a surrogate no argument decodes to
        raw = text.encode("utf-8", "backslashreplace")
    return raw.decode("utf-8", "backslashreplace")
