"""`pidfd run`: start the command, supervise it, end its tree, report.

The supervisor blocks the signals it forwards (and SIGCHLD) and takes them
with sigtimedwait(), so one wait covers "the command exited, a signal
came, or it is time to act"; every signal goes to the command through its
pidfd, so none can hit a recycled pid.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import shlex
import signal
import time
from typing import TYPE_CHECKING

from pidfd import Cgroup, PidFd, Popen, Subreaper
from pidfd._cli.parser import (
    RUN_FAILED,
    RUN_NOT_EXECUTABLE,
    RUN_NOT_FOUND,
    RUN_TIMED_OUT,
    Outcome,
)
from pidfd._cli.report import (
    CgroupReport,
    RunReport,
    SignalReceived,
    StartFailure,
    Supervision,
    TreeReport,
    emit_run_report,
    shell_status,
)
from pidfd._cli.terminal import PROG, REFRESH, Output, elapsed, free_terminal, printable

if TYPE_CHECKING:
    import argparse
    import types
    from collections.abc import Iterable

    from pidfd import ExitInfo

__all__ = ["run"]

# Signals `pidfd run` passes on to the command. SIGQUIT too, so that
# Ctrl-\ does not kill the wrapper before it can report.
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)

# si_code of a signal the kernel itself sent: for SIGINT/SIGQUIT that is the
# terminal's line discipline, which signals the whole foreground process
# group, so the command has had it already.
SI_KERNEL = 0x80

# The status line shows only once the command has run this long (seconds),
# so quick commands never see it.
RUN_STATUS_DELAY = 1.0


def run(args: argparse.Namespace) -> Outcome:
    cmd: list[str] = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        args.sub_parser.error("no command given: pidfd run [OPTIONS] -- CMD [ARG...]")
    line = free_terminal() if args.progress else None
    out = Output(line)
    try:
        return _run_signals(args, cmd, out)
    finally:
        out.clear()
        if line is not None:
            with contextlib.suppress(OSError):
                line.close()


def _run_signals(args: argparse.Namespace, cmd: list[str], out: Output) -> Outcome:
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
            cg: Cgroup | None = None
            if args.cgroup or args.kill_tree:
                try:
                    cg = Cgroup()
                except (OSError, ValueError) as exc:
                    # Cgroup's messages name the path already.
                    why = (exc.strerror if isinstance(exc, OSError) else None) or str(exc)
                    if args.cgroup:
                        out.err(f"--cgroup: {why}")
                        return Outcome(RUN_FAILED)
                    out.err(f"--kill-tree: no cgroup ({why}); ending the tree by the walk alone")
                else:
                    # On the way out of a failure: kill what is in it, remove it.
                    stack.callback(_drop_cgroup, cg)
            reaper: Subreaper | None = None
            if args.kill_tree:
                try:
                    # --kill-after 0 disables SIGKILL, for the tree as for the command.
                    grace = args.kill_after or math.inf
                    reaper = stack.enter_context(Subreaper(grace=grace))
                except OSError as exc:
                    out.err(f"--kill-tree: cannot become a child subreaper: {exc}")
                    return Outcome(RUN_FAILED)
            return _run_blocked(args, cmd, out, forwarded, watched, old_mask, reaper, cg)
    finally:
        # A signal that came after the command ended was meant for it: drop
        # it rather than let it kill us on unblocking and lose the status.
        while signal.sigtimedwait(watched, 0) is not None:
            pass
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        signal.signal(signal.SIGCHLD, old_sigchld)


def _spawn_failure(cmd: list[str], exc: OSError) -> StartFailure:
    if exc.errno == errno.ENOENT:
        code = RUN_NOT_FOUND
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.ENOEXEC, errno.EISDIR):
        code = RUN_NOT_EXECUTABLE
    else:
        code = RUN_FAILED
    return StartFailure(cmd, exc.strerror or str(exc), exc.errno, code)


def _run_blocked(
    args: argparse.Namespace,
    cmd: list[str],
    out: Output,
    forwarded: set[signal.Signals],
    watched: set[signal.Signals],
    old_mask: Iterable[int],
    reaper: Subreaper | None,
    cg: Cgroup | None,
) -> Outcome:
    started = time.monotonic()

    popen: Popen[bytes] | None = None

    def spawn() -> int:
        nonlocal popen
        if args.die_with_parent:
            # posix_spawn cannot set a parent-death signal: our Popen does,
            # in the child, on this (the only) thread. The child gets our
            # caller's mask back first (the native spawn would keep ours).
            popen = Popen(
                cmd,
                close_fds=False,
                restore_signals=True,
                preexec_fn=lambda: signal.pthread_sigmask(signal.SIG_SETMASK, old_mask),
                die_with_parent=True,
                cgroup=cg,
            )
            return popen.pid
        return os.posix_spawnp(
            cmd[0],
            cmd,
            os.environ,
            # The command starts with our caller's signal mask, not the one
            # blocked here, and with the signals Python ignores for itself
            # back to default, as subprocess does.
            setsigmask=old_mask,
            setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),
        )

    try:
        # posix_spawn cannot be given a cgroup: we step into it for the
        # spawn, so the command is born there and cannot fork outside first.
        # (The Popen above is given the cgroup as cgroup=.)
        pid = spawn() if cg is None or args.die_with_parent else cg._spawn_inside(spawn)
    except OSError as exc:
        failure = _spawn_failure(cmd, exc)
        out.err(failure.format())
        if args.json:
            emit_run_report(failure, as_json=True)
        return Outcome(failure.exit_status)

    # The child is not reaped until we wait for it, so its pid cannot have
    # been reused yet: opening the handle now is race-free.
    try:
        handle = PidFd.from_pid(pid)
    except OSError as exc:
        out.err(f"cannot open a pidfd on the command (pid {pid}): {exc}")
        # Still our unreaped child, so the pid is safe to use here.
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        return Outcome(RUN_FAILED)

    with handle:
        info, sup = _supervise(handle, cmd, args, out, forwarded, watched, started)
    if popen is not None:
        # Reaped through our handle: tell the Popen (which closes its own).
        popen.returncode = info.status.returncode
    took = time.monotonic() - started
    # The command is reaped: everything it left is re-parented to us.
    tree = None if reaper is None else _end_tree(reaper, forwarded)
    # Then whatever is still in the cgroup (all of the tree without
    # --kill-tree, what escaped the walk with it) is killed at once.
    totals = None if cg is None else _end_cgroup(cg, out)
    out.clear()
    status = info.status
    exit_status = shell_status(status)
    if sup.timed_out and not args.preserve_status:
        exit_status = RUN_TIMED_OUT
    report = RunReport(cmd, info, took, exit_status, sup, tree, totals)
    emit_run_report(report, as_json=args.json)
    # Killed by a signal: die by it too (timeout(1) does the same), except
    # after our own --timeout, whose status says "timed out" instead.
    if status.signal is not None and not sup.timed_out:
        return Outcome(exit_status, status.signal)
    return Outcome(exit_status)


def _supervise(
    handle: PidFd,
    cmd: list[str],
    args: argparse.Namespace,
    out: Output,
    forwarded: set[signal.Signals],
    watched: set[signal.Signals],
    started: float,
) -> tuple[ExitInfo, Supervision]:
    """Wait for the command, forwarding signals and enforcing --timeout."""
    sup = Supervision()
    # 0 disables either, as in timeout(1).
    timeout: float | None = args.timeout or None
    kill_after: float = args.kill_after or math.inf
    term_at: float | None = None
    own_pgrp = os.getpgrp()
    label = shlex.join(printable(arg) for arg in cmd)
    while True:
        info = handle.try_wait()
        if info is not None:
            return info, sup
        now = time.monotonic()
        if timeout is not None and term_at is None and now - started >= timeout:
            term_at = now
            sup.timed_out = True
            _send(handle, signal.SIGTERM)
            # A stopped command would never act on SIGTERM: wake it, as timeout(1) does.
            _send(handle, signal.SIGCONT)
        if term_at is not None and not sup.sigkill_sent and now - term_at >= kill_after:
            sup.sigkill_sent = True
            _send(handle, signal.SIGKILL)

        wake: list[float] = []
        if timeout is not None and term_at is None:
            wake.append(started + timeout)
        elif term_at is not None and not sup.sigkill_sent:
            wake.append(term_at + kill_after)
        if out.enabled:
            running = now - started
            if running >= RUN_STATUS_DELAY:
                out.status(_run_status(handle.pid, label, running, timeout, term_at))
            wake.append(now + REFRESH - (running % REFRESH))
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
            sup.received.append(SignalReceived(sig.name, sent=False))
            continue
        _send(handle, sig)
        sup.received.append(SignalReceived(sig.name, sent=True))


class _Interrupted(Exception):
    """A signal to pidfd run while --kill-tree waits for the descendants."""


def _end_tree(reaper: Subreaper, forwarded: set[signal.Signals]) -> TreeReport:
    """Close the Subreaper (SIGTERM, the grace, SIGKILL) and say what it did.

    A forwarded signal to pidfd meanwhile cuts the grace short: close()
    answers the exception with SIGKILL to what is left, and reaps it.
    Without that, ``--kill-after 0`` (no SIGKILL at all) and a descendant
    that ignores SIGTERM would leave pidfd waiting with every signal but
    SIGKILL blocked.
    """
    fired = False

    def interrupt(signum: int, frame: types.FrameType | None) -> None:
        nonlocal fired
        if not fired:  # once: the SIGKILL that follows must not be cut short
            fired = True
            raise _Interrupted(signum)

    previous = {sig: signal.signal(sig, interrupt) for sig in forwarded}
    try:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, forwarded)
        try:
            reaper.close()
        finally:
            signal.pthread_sigmask(signal.SIG_BLOCK, forwarded)
    except _Interrupted:
        # Inside close(), which then killed and reaped what was left; or
        # before it began (a signal pending as we unblocked): no grace now.
        reaper.grace = 0.0
        reaper.close()  # returns at once if it ran
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return TreeReport.of(reaper)


def _end_cgroup(cg: Cgroup, out: Output) -> CgroupReport:
    """SIGKILL all that is left in the cgroup, read its totals, remove it.

    Bounded: the kill is immediate (cgroup.kill), and close() waits a few
    seconds at most for the processes to leave. Signals stay blocked
    meanwhile; one that comes is dropped at the end, as after the command.
    """
    killed = cg.kill()
    with contextlib.suppress(TimeoutError):
        cg.wait_empty(timeout=5.0)
    totals = (cg.cpu_usage_usec, cg.memory_peak, cg.pids_peak)
    try:
        cg.close()
    except OSError as exc:
        out.err(f"cannot remove the cgroup {cg.path}: {exc}")
    return CgroupReport(cg.path, *totals, killed=killed, removed=cg.closed)


def _drop_cgroup(cg: Cgroup) -> None:
    with contextlib.suppress(OSError):
        cg.close()


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
    pid: int, label: str, running: float, timeout: float | None, term_at: float | None
) -> str:
    if term_at is not None:
        return f"{PROG}: {elapsed(running)} timed out, SIGTERM sent to pid {pid}: {label}"
    text = f"{PROG}: {elapsed(running)} running pid {pid}: {label}"
    if timeout is not None:
        text += f" (timeout in {elapsed(max(0.0, timeout - running))})"
    return text
