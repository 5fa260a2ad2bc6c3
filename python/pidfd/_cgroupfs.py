"""Where cgroup v2 is, what a path in it is, and what ``cgroup=`` accepts.

The mount table (``/proc/self/mountinfo``) decides whether a path is on
cgroup v2, never the files in it; `pidfd.Cgroup` and the spawns' ``cgroup=``
share these checks and their messages.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Any

from pidfd import _procfs

DELEGATE_HINT = (
    "delegate it to this user: chown the directory and its cgroup.procs, "
    "cgroup.threads and cgroup.subtree_control (systemd: "
    "`systemd-run --user --scope -p Delegate=yes ...`)"
)


class NotCgroupV2Error(OSError, ValueError):
    """A directory that is not on cgroup v2: an ``OSError`` naming it, as for
    any bad cgroup path, and a ``ValueError`` (what ``Cgroup(parent=)``
    raised first), as ``io.UnsupportedOperation`` is both."""


def cgroup2_mounts() -> list[tuple[str, str]]:
    """``(mount point, root)`` of each cgroup v2 mount, from mountinfo."""
    return [(point, root) for point, root, fstype in _procfs.mounts() if fstype == "cgroup2"]


def where_cgroup2() -> str:
    """A phrase saying where cgroup v2 is mounted, for an error message."""
    found = cgroup2_mounts()
    if not found:
        return "cgroup v2 is not mounted on this system"
    return "cgroup v2 is mounted at " + ", ".join(point for point, _ in found)


def own_cgroup_dir() -> str:
    """The directory of this process's own cgroup v2, or ``ValueError`` saying why not."""
    own = _procfs.own_cgroup2()
    if own is None:
        raise ValueError(
            f"this process is in no cgroup v2 (/proc/self/cgroup has no 0:: line); "
            f"{where_cgroup2()}; pass parent= a cgroup v2 directory you can write"
        )
    for point, root in cgroup2_mounts():
        # A mount may show a subtree (its root is not /); our path is
        # relative to the hierarchy's root, so strip the mount's root.
        rel = os.path.relpath(own, root)
        if rel == "." or not rel.startswith(".."):
            path = os.path.normpath(os.path.join(point, rel))
            if os.path.isdir(path):
                return path
    raise ValueError(
        f"this process's cgroup v2 {own!r} is not visible under any cgroup2 mount "
        f"({where_cgroup2()}); pass parent= a cgroup v2 directory you can write"
    )


def check_cgroup2_dir(parent: str, role: str = "the parent cgroup") -> str:
    """``parent`` resolved, checked to be an existing cgroup v2 directory
    (``role`` names it in the messages)."""
    real = os.path.realpath(parent)
    if not os.path.exists(real):
        raise FileNotFoundError(errno.ENOENT, f"{role} does not exist", parent)
    if not os.path.isdir(real):
        raise NotADirectoryError(errno.ENOTDIR, f"{role} is not a directory", parent)
    # The mount holding the path decides, not the files in it: the longest
    # mount point that is a prefix of the resolved path.
    best: tuple[str, str] | None = None
    for point, _root, fstype in _procfs.mounts():
        if (real == point or real.startswith(point.rstrip("/") + "/")) and (
            best is None or len(point) >= len(best[0])
        ):
            best = (point, fstype)
    if best is None or best[1] != "cgroup2":
        on = "" if best is None else f" (it is on {best[1]} mounted at {best[0]})"
        raise NotCgroupV2Error(
            errno.EINVAL, f"not a cgroup v2 directory{on}; {where_cgroup2()}", parent
        )
    return real


def open_target(cgroup: Any) -> tuple[int, bool, str]:
    """``(fd, owned, path)`` for a spawn's ``cgroup=``: a path, an open
    directory fd, or a `pidfd.Cgroup`. ``owned``: the caller closes ``fd``
    after the spawn. Raises what a bad one deserves, before anything starts."""
    if isinstance(cgroup, bool) or not isinstance(cgroup, int | str | bytes | os.PathLike):
        raise TypeError(
            "cgroup= must be a cgroup v2 directory: a path, an open directory fd or a "
            f"pidfd.Cgroup, not {type(cgroup).__name__}"
        )
    if isinstance(cgroup, int):
        try:
            st = os.fstat(cgroup)
        except OSError as e:
            raise OSError(
                e.errno, f"cgroup={cgroup} is not an open file descriptor: {e.strerror}"
            ) from None
        path = os.readlink(f"/proc/self/fd/{cgroup}")
        if not stat.S_ISDIR(st.st_mode):
            raise NotADirectoryError(
                errno.ENOTDIR, f"cgroup={cgroup} is not a directory fd of a cgroup v2", path
            )
        fd, owned = cgroup, False
    elif callable(fileno := getattr(cgroup, "fileno", None)):
        # A pidfd.Cgroup (its fileno() raises ValueError once it is closed).
        fd, owned, path = fileno(), False, os.fsdecode(os.fspath(cgroup))
    else:
        path = os.fsdecode(os.fspath(cgroup))
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise FileNotFoundError(
                errno.ENOENT,
                "the cgroup does not exist; create it first (os.mkdir under a cgroup v2 "
                "directory) or let pidfd.Cgroup() make one",
                path,
            ) from None
        except NotADirectoryError:
            raise NotADirectoryError(
                errno.ENOTDIR, "cgroup= must be a cgroup v2 directory, not a file", path
            ) from None
        owned = True
    try:
        real = check_cgroup2_dir(path, "the cgroup")
        procs = os.path.join(real, "cgroup.procs")
        if not os.access(procs, os.W_OK):
            raise PermissionError(
                errno.EACCES,
                f"cannot start a process in {path}: this user (uid {os.geteuid()}) may "
                f"not write its cgroup.procs; {DELEGATE_HINT}",
                procs,
            )
    except BaseException:
        if owned:
            os.close(fd)
        raise
    return fd, owned, path


_REFUSALS = {
    errno.EBUSY: "it has controllers enabled for its children (cgroup.subtree_control) "
    "and cgroup v2 lets only a leaf hold processes; start the child in a cgroup "
    "below it (pidfd.Cgroup(parent=...))",
    errno.EOPNOTSUPP: "it is a threaded cgroup or otherwise cannot take a new process; "
    "start the child in a domain cgroup",
    errno.ENODEV: "it has been removed",
    errno.ENOENT: "it has been removed",
    errno.EBADF: "it is not a cgroup v2 directory",
    errno.EACCES: "moving a process into it needs write access to cgroup.procs of the "
    "closest common ancestor of this process's cgroup and it; " + DELEGATE_HINT,
}


def refused(e: OSError, path: str) -> OSError | None:
    """The exception for a spawn the kernel would not start in cgroup
    ``path`` (``e`` from ``clone3``); ``None`` for an error that is not the
    cgroup's (``EAGAIN``, ``ENOMEM``: what ``fork()`` would raise)."""
    hint = _REFUSALS.get(e.errno or 0)
    if hint is None:
        return None
    return OSError(e.errno, f"cannot start the child in cgroup {path}: {e.strerror}; {hint}", path)


def join_from_child(fd: int) -> None:
    """Move the calling process into the cgroup of directory ``fd`` (for a
    child that the stock spawn forked, from its ``preexec_fn``)."""
    procs = os.open("cgroup.procs", os.O_WRONLY | os.O_CLOEXEC, dir_fd=fd)
    try:
        os.write(procs, b"0")
    finally:
        os.close(procs)
