"""`pidfd info`: what PIDFD_GET_INFO says about one process."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

from pidfd import PidFd
from pidfd._cli.parser import INFO_FAILED, INFO_OK, thread_advice
from pidfd._cli.report import InfoReport
from pidfd._cli.terminal import PROG

if TYPE_CHECKING:
    import argparse

__all__ = ["info"]


def info(args: argparse.Namespace) -> int:
    try:
        with PidFd.from_pid(args.pid) as handle:
            report = InfoReport(handle.info(), handle.is_alive())
    except ProcessLookupError:
        print(f"{PROG}: pid {args.pid}: no such process", file=sys.stderr)
        return INFO_FAILED
    except OSError as exc:
        # ENOSYS carries the kernel version needed in its message.
        why = thread_advice(args.pid, "info") or f"pid {args.pid}: {exc.strerror or exc}"
        print(f"{PROG}: {why}", file=sys.stderr)
        return INFO_FAILED
    print(json.dumps(report.to_json()) if args.json else report.format())
    return INFO_OK
