"""`pidfd wait`: wait for any processes, children or not, without reaping them."""

from __future__ import annotations

import errno
import json
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pidfd import PidFd, wait_any
from pidfd._cli.parser import (
    REAP_GRACE,
    WAIT_FAILED,
    WAIT_OK,
    WAIT_TIMEOUT,
    WAIT_USAGE,
    thread_advice,
)
from pidfd._cli.report import JSON, Ending, seconds
from pidfd._cli.terminal import PROG, REFRESH, Output, elapsed

if TYPE_CHECKING:
    import argparse

    from pidfd import ExitStatus

__all__ = ["wait"]

# How often `wait` looks whether an exited process's parent has reaped it
# (within REAP_GRACE).
REAP_POLL = 0.01


@dataclass(frozen=True)
class WaitRecord:
    """One process `pidfd wait` saw exit: a line of its output, as text or JSON."""

    pid: int
    ending: Ending
    elapsed: float

    def format(self) -> str:
        return f"pid {self.pid} {self.ending.format()}"

    def to_json(self) -> JSON:
        return {"pid": self.pid, **self.ending.to_json(), "elapsed_s": seconds(self.elapsed)}


def wait(args: argparse.Namespace, out: Output) -> int:
    started = time.monotonic()
    handles: list[PidFd] = []
    seen: set[int] = set()
    me = os.getpid()
    # Whether every pid that could not be waited for names no process.
    missing_only = True
    try:
        for pid in args.pids:
            if pid in seen:
                continue
            seen.add(pid)
            if pid == me:
                out.err(f"pid {pid} is this pidfd process itself; not waiting for it")
                missing_only = False
                continue
            try:
                handles.append(PidFd.from_pid(pid))
            except ProcessLookupError:
                out.err(f"pid {pid}: no such process")
            except OSError as exc:
                if exc.errno == errno.ENOSYS:
                    out.err(str(exc))
                    return WAIT_FAILED
                advice = thread_advice(pid, "wait")
                out.err(advice or f"pid {pid}: {exc}")
                missing_only = False
        if not handles:
            if missing_only:
                out.err("none of the given PIDs names an existing process; nothing to wait for")
            else:
                out.err("nothing to wait for")
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
    handles: list[PidFd], want: int, args: argparse.Namespace, out: Output, started: float
) -> int:
    running = list(handles)
    # Exited, status not settled yet: (handle, when it was seen to exit).
    pending: list[tuple[PidFd, float]] = []
    reported = 0
    deadline = None if args.timeout is None else started + args.timeout

    def report(handle: PidFd, status: ExitStatus | None) -> None:
        record = WaitRecord(handle.pid, Ending(status), time.monotonic() - started)
        out.out(json.dumps(record.to_json()) if args.json else record.format())

    def settle(now: float, force: bool) -> int:
        """Report the exited processes whose status is settled (or overdue)."""
        count = 0
        for entry in list(pending):
            handle, since = entry
            # A child's status, or a non-child's once its parent has reaped
            # it (Linux >= 6.15), is final at once; otherwise give the parent
            # REAP_GRACE to reap, then say "unknown" rather than guess.
            try:
                status = handle.exit_status()
            except TimeoutError:
                if not (force or now - since >= REAP_GRACE):
                    continue
                status = None
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
                    f"{PROG}: {elapsed(now - started)} waiting for {len(running)} "
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
        # Say what was left; then the entry point dies by SIGINT.
        left = " ".join(str(h.pid) for h in running + [h for h, _ in pending])
        out.err(f"interrupted; still running: {left}" if left else "interrupted")
        raise
    out.clear()
    return WAIT_OK
