"""`pidfd info`: what PIDFD_GET_INFO says about one process, as text or JSON."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pidfd import PidFd
from pidfd._cli.parser import INFO_FAILED, INFO_OK, thread_advice
from pidfd._cli.report import JSON, Ending
from pidfd._cli.terminal import PROG

if TYPE_CHECKING:
    import argparse

    from pidfd import ProcessInfo

__all__ = ["info"]

_IDS = ("pid", "tgid", "ppid")
_UIDS = ("ruid", "euid", "suid", "fsuid")
_GIDS = ("rgid", "egid", "sgid", "fsgid")


def _shown(value: object) -> str:
    return "unknown" if value is None else str(value)


@dataclass(frozen=True)
class InfoReport:
    """What `pidfd info` prints: PIDFD_GET_INFO, and whether it still runs."""

    info: ProcessInfo
    alive: bool

    def to_json(self) -> JSON:
        data: JSON = {name: getattr(self.info, name) for name in (*_IDS, *_UIDS, *_GIDS)}
        data["cgroupid"] = self.info.cgroupid
        data["alive"] = self.alive
        status = self.info.exit_status
        data["exit"] = None if status is None else Ending(status).to_json()
        return data

    def format(self) -> str:
        info = self.info
        state = "running" if self.alive else Ending(info.exit_status).format()
        rows = [
            ("pid", _shown(info.pid)),
            ("state", state),
            ("thread group id", _shown(info.tgid)),
            ("parent pid", _shown(info.ppid)),
            ("uid (real/eff/saved/fs)", "/".join(_shown(getattr(info, f)) for f in _UIDS)),
            ("gid (real/eff/saved/fs)", "/".join(_shown(getattr(info, f)) for f in _GIDS)),
            ("cgroup id", _shown(info.cgroupid)),
        ]
        return "\n".join(f"{key + ':':25} {value}" for key, value in rows)


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
